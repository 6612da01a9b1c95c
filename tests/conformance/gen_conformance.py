#!/usr/bin/env python3
"""Generates docs/CONFORMANCE.md from the statement lists and the tests.

Inputs:
  tests/conformance/statements_v311.tsv   MQTT 3.1.1 normative statements
  tests/conformance/statements_v5.tsv     MQTT 5.0 normative statements
    one statement a line: id <TAB> binds <TAB> summary <TAB> reason, where
    binds is server, client or none ('#' lines and blank lines are ignored)
  tests/**/test_*.py, tests/**/test_*.c   tests naming the statements they
    cover as [MQTT-x.x.x-y] (in a docstring or comment inside the test)

A test file belongs to one protocol version when its name says so
(test_v5_* -> 5.0, test_v311_* / test_v31_* / test_v3_* -> 3.1.1), and so
does a test in another file whose class or function name has such a v5 /
v311 part (V5ConnectTest, test_will_v311); the ids it names are then looked
up in that version's list only. Ids named by other tests (unit tests, most
integration tests) count for every version whose list has them.

    gen_conformance.py            rewrite docs/CONFORMANCE.md
    gen_conformance.py --check    exit 1, listing the problems, when a server
                                  statement has no test, a test names an id
                                  that is in no list, or docs/CONFORMANCE.md
                                  is not what would be generated
    gen_conformance.py --stdout   print the document instead of writing it
"""
import argparse
import ast
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
DOC = os.path.join(ROOT, "docs", "CONFORMANCE.md")

# (key, title, tsv file, spec)
VERSIONS = [
    ("3.1.1", "MQTT 3.1.1", "statements_v311.tsv",
     "OASIS Standard mqtt-v3.1.1-os, 29 October 2014"),
    ("5.0", "MQTT 5.0", "statements_v5.tsv",
     "OASIS Standard mqtt-v5.0-os, 7 March 2019"),
]
BINDS = ("server", "client", "none")

ID_RE = re.compile(r"\[(MQTT-\d+(?:\.\d+)*-\d+)\]")
C_FUNC_RE = re.compile(
    r"^(?:START_TEST\s*\(\s*(\w+)\s*\)"            # check.h test
    r"|(?:[A-Za-z_][\w \t\*]*[ \t\*])?(\w+)\s*\([^;=]*$)")


class Statement:
    def __init__(self, sid, binds, summary, reason, version, where):
        self.id = sid
        self.binds = binds
        self.summary = summary
        self.reason = reason
        self.version = version
        self.where = where
        self.tests = set()


def id_key(sid):
    """Sort key: MQTT-3.1.2-10 after MQTT-3.1.2-9."""
    return [int(x) for x in re.findall(r"\d+", sid)]


def read_statements(problems):
    """{version key: [Statement]} in file order; missing files give []."""
    out = {}
    for key, _title, fname, _spec in VERSIONS:
        path = os.path.join(HERE, fname)
        rows = []
        seen = set()
        if not os.path.exists(path):
            problems.append("%s: missing (no %s statements)" % (rel(path), key))
            out[key] = rows
            continue
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                cols = line.split("\t")
                if cols[0] == "id":
                    continue  # a header row
                where = "%s:%d" % (rel(path), n)
                if len(cols) < 3:
                    problems.append("%s: expected id<TAB>binds<TAB>summary<TAB>reason" % where)
                    continue
                sid, binds, summary = (c.strip() for c in cols[:3])
                reason = cols[3].strip() if len(cols) > 3 else ""
                if not re.fullmatch(r"MQTT-\d+(?:\.\d+)*-\d+", sid):
                    problems.append("%s: bad statement id %r" % (where, sid))
                    continue
                if binds not in BINDS:
                    problems.append("%s: %s: binds must be one of %s, not %r"
                                    % (where, sid, "/".join(BINDS), binds))
                    continue
                if sid in seen:
                    problems.append("%s: %s listed twice" % (where, sid))
                    continue
                if binds != "server" and not reason:
                    problems.append("%s: %s binds %s but gives no reason" % (where, sid, binds))
                seen.add(sid)
                rows.append(Statement(sid, binds, summary, reason, key, where))
        out[key] = rows
    return out


def rel(path):
    return os.path.relpath(path, ROOT).replace(os.sep, "/")


def name_version(name):
    """The version key a file or test name says it is dedicated to, or None:
    test_v5_x.py, V5Test.test_x, test_x_v5 -> 5.0; test_v311_x.py, test_v31,
    test_v3_x -> 3.1.1."""
    name = name.lower()
    if re.search(r"(?:^|[_.])v50?(?!\d)", name):
        return "5.0"
    if re.search(r"(?:^|[_.])v3(?:11|1|_1_1)?(?!\d)", name):
        return "3.1.1"
    return None


def file_version(path):
    """The version key a test file is dedicated to, or None."""
    return name_version(os.path.basename(path))


def test_files():
    out = []
    for top in ("tests",):
        for d, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs[:] = sorted(x for x in dirs if not x.startswith(".") and x != "__pycache__")
            for f in sorted(files):
                if (f.startswith("test_") or f.endswith("_test.py") or f.endswith("_test.c")) \
                        and f.endswith((".py", ".c")):
                    out.append(os.path.join(d, f))
    return out


def py_scopes(src):
    """[(first line, last line, dotted name)] of classes and functions."""
    scopes = []

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                start = min([child.lineno] + [d.lineno for d in child.decorator_list])
                scopes.append((start, child.end_lineno, name))
                walk(child, name + ".")
    walk(ast.parse(src), "")
    return scopes


def py_mentions(path):
    """[(line, id, test name)] for a Python file."""
    with open(path, encoding="utf-8") as f:
        src = f.read()
    try:
        scopes = py_scopes(src)
    except SyntaxError:
        scopes = []
    out = []
    for n, line in enumerate(src.splitlines(), 1):
        for m in ID_RE.finditer(line):
            inner = [s for s in scopes if s[0] <= n <= s[1]]
            # innermost scope; a helper nested in a test reports the test
            name = max(inner, key=lambda s: s[0])[2] if inner else ""
            parts = name.split(".")
            # keep Class.test_method (drop functions nested deeper)
            name = ".".join(parts[:2]) if len(parts) > 2 else name
            out.append((n, m.group(1), name))
    return out


def c_mentions(path):
    """[(line, id, function)] for a C file: the function whose body (or the
    comment just above it) names the id."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    # function start lines
    starts = []
    for i, line in enumerate(lines):
        m = C_FUNC_RE.match(line)
        if m and not line.startswith((" ", "\t", "#", "/", "*", "}")):
            name = m.group(1) or m.group(2)
            if name not in ("if", "for", "while", "switch", "return", "sizeof"):
                starts.append((i + 1, name))
    out = []
    for n, line in enumerate(lines, 1):
        for m in ID_RE.finditer(line):
            before = [s for s in starts if s[0] <= n]
            after = [s for s in starts if s[0] > n]
            name = ""
            if before:
                # inside that function unless a closing brace at column 0
                # ended it before this line
                s0 = before[-1][0]
                closed = any(lines[k].startswith("}") for k in range(s0 - 1, n - 1))
                if not closed:
                    name = before[-1][1]
            if not name and after:
                name = after[0][1]  # a comment above the function
            out.append((n, m.group(1), name))
    return out


def collect_tests(statements, problems):
    by_version = {k: {s.id: s for s in rows} for k, rows in statements.items()}
    for path in test_files():
        mentions = py_mentions(path) if path.endswith(".py") else c_mentions(path)
        fver = file_version(path)
        for line, sid, name in mentions:
            ref = rel(path) + ("::" + name if name else "")
            ver = fver or name_version(name.replace(".", "_"))
            targets = [ver] if ver else [k for k, _t, _f, _s in VERSIONS]
            hit = False
            for k in targets:
                st = by_version.get(k, {}).get(sid)
                if st is not None:
                    st.tests.add(ref)
                    hit = True
            if not hit:
                problems.append("%s:%d: names [%s], which is not in %s"
                                % (rel(path), line, sid,
                                   "the %s statements" % ver if ver else "any statement list"))


def md(text):
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def render(statements):
    out = []
    w = out.append
    w("# MQTT conformance")
    w("")
    w("<!-- Generated by tests/conformance/gen_conformance.py: do not edit. -->")
    w("")
    w("Every normative statement (`[MQTT-x.x.x-y]`) of the MQTT 3.1.1 and MQTT 5.0")
    w("OASIS standards, whether it binds the server, and the tests that check it.")
    w("The statement lists are `tests/conformance/statements_v311.tsv` and")
    w("`tests/conformance/statements_v5.tsv`; a test covers a statement by naming")
    w("its id in brackets, e.g. `[MQTT-3.1.2-4]`, in its docstring or in a")
    w("comment inside it (Python tests under `tests/**/test_*.py`, C tests under")
    w("`tests/**/test_*.c`). Tests in `test_v5_*` files (or named `*_v5_*`,")
    w("`V5*Test`) count for MQTT 5.0 only, tests in `test_v311_*` files (or")
    w("named `*_v311_*`, `V311*Test`) for MQTT 3.1.1 only, other tests for")
    w("every version whose list has the id.")
    w("")
    w("Regenerate this file after changing a statement list or a test:")
    w("")
    w("    python3 tests/conformance/gen_conformance.py")
    w("")
    w("`gen_conformance.py --check` (meson test `conformance_doc`) fails when a")
    w("server statement has no test, when a test names an id that is in no list,")
    w("or when this file is out of date.")
    w("")
    w("Columns:")
    w("")
    w("- **id**: the statement's number in the standard.")
    w("- **binds**: `server`, a server behaviour, which must have a test;")
    w("  `client`, a statement binding only clients; `none`, not observable or")
    w("  not applicable (the reason says why).")
    w("- **summary**: what the statement requires, paraphrased.")
    w("- **tests or reason**: the tests naming the statement")
    w("  (`file::Class.test` for Python, `file::function` for C), or why it has")
    w("  none. Tests of a `client` statement check the server's reaction to a")
    w("  client breaking it.")
    w("")
    w("## Totals")
    w("")
    w("| version | statements | server: tested / total | client only | none |")
    w("|---|---|---|---|---|")
    for key, title, _f, _spec in VERSIONS:
        rows = statements.get(key, [])
        srv = [s for s in rows if s.binds == "server"]
        tested = [s for s in srv if s.tests]
        w("| %s | %d | %d / %d | %d | %d |" % (
            title, len(rows), len(tested), len(srv),
            sum(1 for s in rows if s.binds == "client"),
            sum(1 for s in rows if s.binds == "none")))
    for key, title, fname, spec in VERSIONS:
        rows = statements.get(key, [])
        w("")
        w("## %s" % title)
        w("")
        w("%s; statements from `tests/conformance/%s`." % (spec, fname))
        w("")
        untested = [s.id for s in rows if s.binds == "server" and not s.tests]
        if untested:
            w("Server statements without a test: %s." % ", ".join(untested))
            w("")
        if not rows:
            w("(no statements listed)")
            continue
        w("| id | binds | summary | tests or reason |")
        w("|---|---|---|---|")
        for s in rows:
            tests = "<br>".join("`%s`" % t for t in sorted(s.tests))
            if s.binds == "server":
                if tests:
                    cell = tests
                else:
                    cell = "**no test**" + (": " + md(s.reason) if s.reason else "")
            else:
                cell = md(s.reason)
                if tests:
                    cell += "; tested: " + tests
            w("| %s | %s | %s | %s |" % (s.id, s.binds, md(s.summary), cell))
    w("")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="verify instead of writing; exit 1 listing problems")
    ap.add_argument("--stdout", action="store_true", help="print the document")
    args = ap.parse_args(argv)

    problems = []
    statements = read_statements(problems)
    collect_tests(statements, problems)
    doc = render(statements)

    if args.stdout:
        sys.stdout.write(doc)
        return 0
    if not args.check:
        os.makedirs(os.path.dirname(DOC), exist_ok=True)
        with open(DOC, "w", encoding="utf-8") as f:
            f.write(doc)
        for p in problems:
            print("warning: " + p, file=sys.stderr)
        print("wrote %s" % rel(DOC))
        return 0

    for key, _t, _f, _s in VERSIONS:
        for s in statements.get(key, []):
            if s.binds == "server" and not s.tests:
                problems.append("%s: MQTT %s server statement %s has no test"
                                % (s.where, key, s.id))
    try:
        with open(DOC, encoding="utf-8") as f:
            current = f.read()
    except OSError:
        current = None
    if current != doc:
        problems.append("%s is %s: run python3 tests/conformance/gen_conformance.py"
                        % (rel(DOC), "missing" if current is None else "out of date"))
    for p in problems:
        print(p)
    if problems:
        print("%d problem(s)" % len(problems))
        return 1
    print("conformance doc OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
