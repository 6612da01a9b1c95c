"""Command-line behaviour of broker-cli: options, exit codes, config checking,
precedence (defaults < file < environment < flags), start and stop.

Usage: test_cli_usage.py PATH/TO/broker-cli
"""
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

CLI = None


def clean_env(**extra):
    """The caller's environment without MQB_* variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQB_")}
    env.update(extra)
    return env


def run(*args, env=None, timeout=20):
    return subprocess.run([CLI, *args], capture_output=True, text=True,
                          env=env if env is not None else clean_env(), timeout=timeout)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CliTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory(prefix="mqb-cli-")

    def tearDown(self):
        self.dir.cleanup()

    def write(self, name, text):
        path = os.path.join(self.dir.name, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    # ---- informational options ----

    def test_version(self):
        r = run("--version")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"^broker-cli \(libmqttbroker\) \d+\.\d+\.\d+\n$")

    def test_help_lists_every_option(self):
        for flag in ("-h", "--help"):
            r = run(flag)
            self.assertEqual(r.returncode, 0, r.stderr)
            for opt in ("-c, --config FILE", "-p, --port PORT", "-l, --log-level LEVEL",
                        "-v", "--print-config", "--check-config FILE", "--config-docs",
                        "--version", "-h, --help"):
                self.assertIn(opt, r.stdout)

    def test_config_docs(self):
        r = run("--config-docs")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.startswith("# Configuration reference\n"))
        self.assertIn("| Key | Type | Default | Description |", r.stdout)
        self.assertIn("| `mqtt.max_packet_size` | size (16..256MB), reloadable | `1MB` |", r.stdout)
        self.assertIn("| `listener.tcp.default` | listener | `127.0.0.1:1883` |", r.stdout)

    # ---- bad usage ----

    def test_bad_usage_exits_2(self):
        for args, text in ((["--bogus"], "unknown option '--bogus'"),
                           (["-x"], "unknown option '-x'"),
                           (["-p"], "needs an argument"),
                           (["-p", "abc"], "invalid port 'abc'"),
                           (["-p", "70000"], "invalid port '70000'"),
                           (["-l", "loud"], "invalid log level 'loud'"),
                           (["--check-config"], "needs an argument"),
                           (["stray"], "unexpected argument 'stray'")):
            r = run(*args)
            self.assertEqual(r.returncode, 2, args)
            self.assertIn(text, r.stderr)
            self.assertIn("Try 'broker-cli --help'", r.stderr)
            self.assertEqual(r.stdout, "")

    # ---- config checking ----

    def test_check_config_good(self):
        path = self.write("good.conf", "# ok\nmqtt.max_inflight = 10\n"
                                       "listener.tcp.default = [::1]:1883\n")
        r = run("--check-config", path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, path + ": OK\n")

    def test_check_config_bad_names_file_line_key(self):
        path = self.write("bad.conf", "mqtt.max_inflight = 10\n\nmqtt.max_qos_allowed = 5\n")
        r = run("--check-config", path)
        self.assertEqual(r.returncode, 1)
        self.assertIn(path + ":3: key 'mqtt.max_qos_allowed': 5 is out of range (0..2)",
                      r.stderr)
        path = self.write("typo.conf", "mqtt.max_pakcet_size = 1MB\n")
        r = run("--check-config", path)
        self.assertEqual(r.returncode, 1)
        self.assertIn(path + ":1: key 'mqtt.max_pakcet_size': unknown key; did you mean "
                      "'mqtt.max_packet_size'?", r.stderr)
        r = run("--check-config", os.path.join(self.dir.name, "missing.conf"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot open", r.stderr)

    def test_config_errors_exit_1(self):
        r = run("-c", os.path.join(self.dir.name, "missing.conf"), "--print-config")
        self.assertEqual(r.returncode, 1)
        self.assertIn("missing.conf: cannot open", r.stderr)
        r = run("--print-config", env=clean_env(MQB_MQTT__MAX_INFLIGHT="lots"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("MQB_MQTT__MAX_INFLIGHT: key 'mqtt.max_inflight': 'lots'", r.stderr)

    # ---- precedence ----

    def print_config(self, *args, env=None):
        r = run(*args, "--print-config", env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        return dict(line.split(" = ", 1) for line in lines), r.stdout

    def test_print_config_precedence(self):
        conf = self.write("p.conf", "mqtt.max_inflight = 10\n"
                                    "mqtt.max_awaiting_rel = 7\n"
                                    "log.level = warning\n"
                                    "listener.tcp.default = 127.0.0.3:1700\n")
        values, _ = self.print_config()
        self.assertEqual(values["mqtt.max_inflight"], "32")
        self.assertEqual(values["listener.tcp.default"], "127.0.0.1:1883")
        # file over defaults
        values, _ = self.print_config("-c", conf)
        self.assertEqual(values["mqtt.max_inflight"], "10")
        self.assertEqual(values["listener.tcp.default"], "127.0.0.3:1700")
        # environment over the file
        env = clean_env(MQB_MQTT__MAX_INFLIGHT="20", MQB_LOG__LEVEL="error",
                        MQB_LISTENER__TCP__DEFAULT="127.0.0.2:1884")
        values, _ = self.print_config("-c", conf, env=env)
        self.assertEqual(values["mqtt.max_inflight"], "20")
        self.assertEqual(values["mqtt.max_awaiting_rel"], "7")
        self.assertEqual(values["log.level"], "error")
        self.assertEqual(values["listener.tcp.default"], "127.0.0.2:1884")
        # flags over the environment; -p keeps the host
        values, _ = self.print_config("-c", conf, "-p", "1999", "-v", env=env)
        self.assertEqual(values["listener.tcp.default"], "127.0.0.2:1999")
        self.assertEqual(values["log.level"], "info")
        values, _ = self.print_config("-vv", env=env)
        self.assertEqual(values["log.level"], "debug")
        values, _ = self.print_config("-v", "-l", "notice", env=env)
        self.assertEqual(values["log.level"], "notice")

    def test_print_config_reads_back(self):
        conf = self.write("rt.conf", "node.name = \"a node\"\n"
                                     "listener.tcp.default = off\n"
                                     "listener.tcp.v6 = [::1]:0\n"
                                     "mqtt.keepalive_backoff = 2.5\n")
        values, text = self.print_config("-c", conf)
        self.assertEqual(values["listener.tcp.default"], "off")
        self.assertEqual(values["listener.tcp.v6"], "[::1]:0")
        printed = self.write("printed.conf", text)
        r = run("--check-config", printed)
        self.assertEqual(r.returncode, 0, r.stderr)
        _, again = self.print_config("-c", printed)
        self.assertEqual(again, text)
        # -p brings back a switched-off default listener on loopback
        values, _ = self.print_config("-c", conf, "-p", "1234")
        self.assertEqual(values["listener.tcp.default"], "127.0.0.1:1234")

    # ---- running ----

    def start(self, *args):
        port = free_port()
        proc = subprocess.Popen([CLI, "-p", str(port), *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=clean_env())
        deadline = time.time() + 10
        while time.time() < deadline:
            if proc.poll() is not None:
                self.fail("broker-cli exited at start: " + proc.stderr.read())
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return proc
            except OSError:
                time.sleep(0.05)
        proc.kill()
        self.fail("broker-cli did not listen on port %d" % port)

    def test_signals_stop_cleanly(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            proc = self.start("-v")
            proc.send_signal(sig)
            try:
                _, err = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                self.fail("broker-cli did not stop on signal %d" % sig)
            self.assertEqual(proc.returncode, 0, err)
            for line in err.splitlines():
                self.assertRegex(line, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z "
                                       r"(error|warning|notice|info|debug) ")

    def test_port_in_use(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            port = s.getsockname()[1]
            r = run("-p", str(port))
        self.assertEqual(r.returncode, 1)
        self.assertIn("broker-cli: cannot start: ", r.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: test_cli_usage.py PATH/TO/broker-cli")
    CLI = os.path.abspath(sys.argv[1])
    unittest.main(argv=[sys.argv[0], "-v"])
