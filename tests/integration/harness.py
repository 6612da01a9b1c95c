"""Starts a broker under test on an ephemeral loopback port.

The broker is broker-cli (path in MQB_BROKER_CLI, set by meson). With
MQB_REFERENCE=mosquitto the same tests run against Debian's mosquitto, which
is how a test's expectations are checked against a reference broker.
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

BROKER_CLI = os.environ.get("MQB_BROKER_CLI", "")
REFERENCE = os.environ.get("MQB_REFERENCE", "")

# Our registry keys -> mosquitto.conf options, for the reference run.
_MOSQUITTO_KEYS = {
    "mqtt.max_packet_size": "max_packet_size",
    "mqtt.max_qos_allowed": "max_qos",
    "mqtt.retain_available": "retain_available",
    "mqtt.max_topic_alias": "max_topic_alias",
    "mqtt.max_inflight": "max_inflight_messages",
    "mqtt.max_mqueue_len": "max_queued_messages",
    "mqtt.max_keepalive": "max_keepalive",
    "mqtt.mqueue_store_qos0": "queue_qos0_messages",
}


# What a sanitizer writes when it finds something.
SANITIZER_MARKS = ("AddressSanitizer", "runtime error:", "LeakSanitizer", "ThreadSanitizer")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A broker process. Use as a context manager or call start()/stop().
    It can be started again after kill() (SIGKILL) or terminate() (SIGTERM,
    checked), on the same port and data directory; the log file accumulates,
    run_log() is the current run's part."""

    mark = 0  # where the current run's log starts

    def __init__(self, config=None, port=None):
        self.config = dict(config or {})
        self.port = port or free_port()
        self.proc = None
        self.killed = False
        self.dir = tempfile.mkdtemp(prefix="mqb-test-")
        self.logpath = os.path.join(self.dir, "broker.log")

    def _command(self):
        conf = os.path.join(self.dir, "broker.conf")
        if REFERENCE == "mosquitto":
            with open(conf, "w") as f:
                f.write("listener %d 127.0.0.1\nallow_anonymous true\n" % self.port)
                for k, v in self.config.items():
                    if k in _MOSQUITTO_KEYS:
                        f.write("%s %s\n" % (_MOSQUITTO_KEYS[k], v))
            return ["mosquitto", "-c", conf]
        if not BROKER_CLI:
            raise RuntimeError("MQB_BROKER_CLI is not set")
        with open(conf, "w") as f:
            for k, v in self.config.items():
                f.write("%s = %s\n" % (k, v))
        # broker-cli persists by default: each broker in its own directory,
        # kept across kill()/terminate() and start() (stop() removes it).
        return [BROKER_CLI, "-c", conf, "-p", str(self.port), "--log-level", "debug",
                "--data-dir", self.data_dir]

    @property
    def data_dir(self):
        return os.path.join(self.dir, "data")

    @property
    def db(self):
        return os.path.join(self.data_dir, "broker.db")

    def start(self, timeout=10.0):
        self.killed = False  # judge this run's exit again
        try:
            self.mark = os.path.getsize(self.logpath)
        except OSError:
            self.mark = 0
        log = open(self.logpath, "ab")
        self.proc = subprocess.Popen(self._command(), stdout=log, stderr=log)
        log.close()  # the child has its own descriptor
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("broker exited at start:\n" + self.run_log())
            # Every listener is open once the start is logged (the default
            # TCP one may be open before a slower TLS one).
            if REFERENCE != "mosquitto" and " started: node " not in self.run_log():
                time.sleep(0.02)
                continue
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("broker did not listen within %.0fs" % timeout)

    def stop(self, timeout=10.0):
        """SIGTERM and wait; returns the exit code. Raises if our broker crashed
        or a sanitizer reported anything (the reference broker is not judged)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError("broker did not stop on SIGTERM:\n" + self.log())
        code = self.proc.returncode
        if REFERENCE != "mosquitto" and not self.killed:
            log = self.log()
            if code != 0 or any(m in log for m in SANITIZER_MARKS):
                # The directory (config, log) stays for a look.
                raise AssertionError("broker exited with %s (files in %s):\n%s"
                                     % (code, self.dir, log[-4000:]))
        shutil.rmtree(self.dir, ignore_errors=True)
        return code

    def terminate(self, timeout=10.0):
        """SIGTERM, wait, and check a clean exit, keeping the directory (to
        start again); returns the seconds the stop took."""
        assert self.proc is not None and self.proc.poll() is None, "broker not running"
        t0 = time.time()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("broker did not stop on SIGTERM within %.0fs:\n%s"
                                 % (timeout, self.run_log()[-4000:]))
        log = self.run_log()
        if self.proc.returncode != 0 or any(m in log for m in SANITIZER_MARKS):
            self.killed = True  # reported here, not again at cleanup
            raise AssertionError("broker exited with %s after SIGTERM (files in %s):\n%s"
                                 % (self.proc.returncode, self.dir, log[-4000:]))
        return time.time() - t0

    def kill(self):
        self.killed = True
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        """Everything the broker logged, over all its runs."""
        return self.run_log(0)

    def run_log(self, start=None):
        """What the current run logged."""
        try:
            with open(self.logpath, "rb") as f:
                f.seek(self.mark if start is None else start)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
