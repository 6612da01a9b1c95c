#!/bin/sh
# Builds with -Werror and runs the whole test suite (unit, integration,
# conformance). Extra arguments go to `meson test` (e.g. --suite unit).
set -e
cd "$(dirname "$0")/.."
[ "${SKIP_DEPS:-0}" = 1 ] || ./tools/install-deps.sh
BUILD=${BUILD:-build}
[ -f "$BUILD/build.ninja" ] || meson setup "$BUILD" -Dwerror=true
ninja -C "$BUILD"
status=0
meson test -C "$BUILD" --print-errorlogs --num-processes 4 "$@" || status=$?
# One plain closing line that any CI reader understands.
python3 - "$BUILD/meson-logs/testlog.json" <<'PY'
import json, sys
ok = bad = skip = 0
for line in open(sys.argv[1]):
    r = json.loads(line)["result"]
    if r in ("OK", "EXPECTEDFAIL"): ok += 1
    elif r == "SKIP": skip += 1
    else: bad += 1
print("%d passed, %d failed, %d skipped" % (ok, bad, skip))
PY
exit $status
