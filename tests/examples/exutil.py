"""Shared helpers for the example drivers (tests/examples/test_*.py).

- Example: runs an example binary with port 0, reads its `listening on PORT`
  line, keeps its stderr (the broker's log) and stops it by closing stdin or
  with a signal.
- Client: a paho-mqtt 1.6 client (3.1.1 or 5.0) on its own network thread
  (no automatic reconnect) with blocking connect/subscribe/publish and a
  message collector.
- Raw: a minimal raw-socket client for what paho 1.6 does not show: the
  reason code of an MQTT 5 PUBACK/PUBREC, and many CONNECTs on the wire at once.
- Runner: runs test functions, prints PASS/FAIL lines and "N passed, N failed".

Every wait is bounded by TIMEOUT (5 s, env MQB_TEST_TIMEOUT); nothing sleeps
for a fixed time where a condition can be awaited.
"""
import itertools
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback

import paho.mqtt.client as mqtt

TIMEOUT = float(os.environ.get("MQB_TEST_TIMEOUT", "5"))
EXIT_TIMEOUT = 10.0
MQTTv311, MQTTv5 = mqtt.MQTTv311, mqtt.MQTTv5
_ids = itertools.count(1)


def uid(prefix="c"):
    return "%s%d-%d" % (prefix, os.getpid() % 10000, next(_ids))


def wait_until(cond, timeout=TIMEOUT, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(0.01)


class Example:
    """One running example: Example(binary, *extra_args)."""

    def __init__(self, binary, *args, env=None):
        self.binary = binary
        self.name = os.path.basename(binary)
        self.proc = subprocess.Popen([binary, "0"] + [str(a) for a in args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
        self.stdout = []
        self.stderr = []
        self._lock = threading.Lock()
        threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout, False),
                         daemon=True).start()
        self._err_thread = threading.Thread(target=self._read,
                                            args=(self.proc.stderr, self.stderr, True),
                                            daemon=True)
        self._err_thread.start()
        wait_until(lambda: self.stdout[:1] or self.proc.poll() is not None,
                   what="'listening on PORT' from " + self.name)
        if not self.stdout:
            raise AssertionError("%s exited with %s before listening"
                                 % (self.name, self.proc.returncode))
        words = self.stdout[0].split()
        if len(words) != 3 or words[:2] != ["listening", "on"] or not words[2].isdigit():
            raise AssertionError("first line is %r, not 'listening on PORT'" % self.stdout[0])
        self.port = int(words[2])
        assert self.port > 0, "port 0 reported"

    def _read(self, pipe, into, echo):
        for raw in iter(pipe.readline, b""):
            text = raw.decode("utf-8", "replace").rstrip("\n")
            with self._lock:
                into.append(text)
            if echo:
                sys.stderr.write("[%s] %s\n" % (self.name, text))

    def log(self):
        with self._lock:
            return "\n".join(self.stderr)

    def write(self, text):
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def finish(self, sig=None):
        """Ends the example (stdin EOF, or the signal) and returns its exit code."""
        if sig is None:
            self.proc.stdin.close()
        else:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("%s did not exit within %.0fs" % (self.name, EXIT_TIMEOUT))
        self._err_thread.join(TIMEOUT)
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


SERVER_SHUTTING_DOWN = 0x8B


def check_exit(ex, sig=None, username=None, password=None):
    """Asserts that the example exits 0 within 10 s after stdin EOF (or `sig`), that
    it printed one line, and that a connected MQTT 5 client was sent DISCONNECT
    0x8B (Server shutting down) on the way."""
    watcher = Raw(ex.port, 5)
    try:
        assert watcher.connect(uid("w"), username, password) == 0, "watcher refused"
        rc = ex.finish(sig)
        assert rc == 0, "%s exited with %s" % (ex.name, rc)
        assert len(ex.stdout) == 1, "stdout has %d lines, not 1: %r" % (len(ex.stdout), ex.stdout)
        reason = watcher.disconnect_reason()
        assert reason == SERVER_SHUTTING_DOWN, "connected client got DISCONNECT %r" % reason
    finally:
        watcher.close()


def check_sigterm(binary, *args, username=None, password=None):
    ex = Example(binary, *args)
    try:
        check_exit(ex, signal.SIGTERM, username, password)
    finally:
        ex.kill()


class Msg:
    def __init__(self, m):
        self.topic = m.topic
        self.payload = m.payload
        self.qos = m.qos
        self.retain = m.retain
        self.properties = getattr(m, "properties", None)
        self.arrived = time.monotonic()

    def user_properties(self):
        p = self.properties
        return list(getattr(p, "UserProperty", []) or []) if p is not None else []

    def __repr__(self):
        return "Msg(%r, %r, qos=%d)" % (self.topic, self.payload, self.qos)


class Client:
    """A paho client on its own network thread; connect() returns the CONNACK code."""

    def __init__(self, port, client_id, version=MQTTv311, username=None, password=None):
        self.port = port
        self.version = version
        if version == MQTTv5:
            self.c = mqtt.Client(client_id=client_id, protocol=version)
        else:
            self.c = mqtt.Client(client_id=client_id, protocol=version, clean_session=True)
        if username is not None:
            self.c.username_pw_set(username, password)
        self.cond = threading.Condition()
        self.connack = None
        self.closed = False
        self.disconnect_rc = None
        self.messages = []
        self.subacks = {}
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.thread = None
        self.running = False

    @staticmethod
    def _code(rc):
        return rc.value if hasattr(rc, "value") else int(rc)

    def _on_connect(self, client, userdata, flags, rc, properties=None):
        with self.cond:
            self.connack = self._code(rc)
            self.cond.notify_all()

    def _on_disconnect(self, client, userdata, rc, properties=None):
        with self.cond:
            if self.disconnect_rc is None:
                self.disconnect_rc = self._code(rc)
            self.closed = True
            self.cond.notify_all()

    def _on_message(self, client, userdata, m):
        with self.cond:
            self.messages.append(Msg(m))
            self.cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, granted, properties=None):
        with self.cond:
            self.subacks[mid] = [self._code(g) for g in granted]
            self.cond.notify_all()

    def _loop(self):
        while self.running:
            if self.c.loop(0.02) != mqtt.MQTT_ERR_SUCCESS:
                break
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def _wait(self, cond, what):
        with self.cond:
            if not self.cond.wait_for(cond, TIMEOUT):
                raise AssertionError("timed out after %.1fs waiting for %s" % (TIMEOUT, what))

    def connect(self):
        """Connects and returns the CONNACK return code / reason code (None if closed)."""
        if self.version == MQTTv5:
            self.c.connect("127.0.0.1", self.port, keepalive=30, clean_start=True)
        else:
            self.c.connect("127.0.0.1", self.port, keepalive=30)
        self.running = True
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        self._wait(lambda: self.connack is not None or self.closed, "CONNACK")
        return self.connack

    def subscribe(self, topic, qos):
        """Subscribes and returns the SUBACK codes (granted QoS or reason codes)."""
        rc, mid = self.c.subscribe(topic, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS, "subscribe: %s" % mqtt.error_string(rc)
        self._wait(lambda: mid in self.subacks, "SUBACK for " + topic)
        return self.subacks[mid]

    def publish(self, topic, payload, qos=0, retain=False, properties=None):
        """Publishes and, for QoS 1/2, waits for the end of the exchange."""
        info = self.c.publish(topic, payload, qos, retain, properties)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, "publish: %s" % mqtt.error_string(info.rc)
        if qos:
            info.wait_for_publish(TIMEOUT)
            assert info.is_published(), "no acknowledgement for %s within %.1fs" % (topic, TIMEOUT)

    def wait_message(self, pred, what="a message"):
        """Waits for a message matching pred(Msg) and returns the first one."""
        found = []

        def match():
            found[:] = [m for m in self.messages if pred(m)]
            return bool(found)
        self._wait(match, what)
        return found[0]

    def wait_closed(self):
        """Waits until the broker closed the connection; returns the DISCONNECT reason
        (MQTT 5) or paho's error code."""
        self._wait(lambda: self.closed, "the connection to close")
        return self.disconnect_rc

    def received(self, pred):
        with self.cond:
            return [m for m in self.messages if pred(m)]

    def close(self):
        if self.running:
            try:
                self.c.disconnect()
            except Exception:
                pass
            self.running = False
            if self.thread:
                self.thread.join(TIMEOUT)
        try:
            self.c.socket() and self.c.socket().close()
        except Exception:
            pass


# ---- raw MQTT ---------------------------------------------------------------

def _varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


class Raw:
    """A minimal MQTT 3.1.1 / 5.0 client on a plain socket."""

    CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK = 2, 3, 4, 5, 6, 7, 9

    def __init__(self, port, version=5):
        self.version = version
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.buf = b""
        self.next_id = 1
        self.corked = None

    def send(self, ptype, flags, body):
        data = bytes([ptype << 4 | flags]) + _varint(len(body)) + body
        if self.corked is not None:
            self.corked.append(data)
        else:
            self.sock.sendall(data)

    def cork(self):
        """Holds the packets sent from now on until uncork() writes them in one go."""
        self.corked = []

    def uncork(self):
        data, self.corked = b"".join(self.corked), None
        self.sock.sendall(data)

    def send_connect(self, client_id, username=None, password=None):
        flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
        body = _str("MQTT") + bytes([self.version, flags]) + struct.pack("!H", 30)
        if self.version == 5:
            body += b"\x00"
        body += _str(client_id)
        if username is not None:
            body += _str(username)
        if password is not None:
            body += _str(password)
        self.send(1, 0, body)

    def recv(self):
        """Returns (type, flags, body) of the next packet, or None when the broker closed."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            if len(self.buf) >= 2:
                n, mult, i = 0, 1, 1
                while i < len(self.buf):
                    n += (self.buf[i] & 0x7F) * mult
                    mult *= 128
                    i += 1
                    if not self.buf[i - 1] & 0x80:
                        break
                else:
                    i = None
                if i is not None and len(self.buf) >= i + n:
                    first, body, self.buf = self.buf[0], self.buf[i:i + n], self.buf[i + n:]
                    return first >> 4, first & 0xF, body
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no packet from the broker within %.1fs" % TIMEOUT)
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                return None
            self.buf += data

    def connack(self):
        """Reads the CONNACK and returns its return / reason code (None if closed)."""
        p = self.recv()
        if p is None:
            return None
        assert p[0] == self.CONNACK, "expected CONNACK, got packet type %d" % p[0]
        return p[2][1]

    def connect(self, client_id, username=None, password=None):
        self.send_connect(client_id, username, password)
        return self.connack()

    def packet_id(self):
        pid = self.next_id
        self.next_id += 1
        return pid

    def send_subscribe(self, topic_filter, qos):
        body = struct.pack("!H", self.packet_id()) + (b"\x00" if self.version == 5 else b"")
        self.send(8, 2, body + _str(topic_filter) + bytes([qos]))

    def suback(self):
        """Reads a SUBACK and returns its codes."""
        p = self.recv()
        assert p is not None, "connection closed instead of SUBACK"
        assert p[0] == self.SUBACK, "expected SUBACK, got packet type %d" % p[0]
        body = p[2][2:]
        if self.version == 5:
            n, i, mult = 0, 0, 1
            while True:
                n += (body[i] & 0x7F) * mult
                mult *= 128
                i += 1
                if not body[i - 1] & 0x80:
                    break
            body = body[i + n:]
        return list(body)

    def send_publish(self, topic, payload, qos):
        """Sends a PUBLISH without waiting for anything; returns its packet id."""
        if isinstance(payload, str):
            payload = payload.encode()
        pid = self.packet_id() if qos else 0
        body = _str(topic) + (struct.pack("!H", pid) if qos else b"")
        if self.version == 5:
            body += b"\x00"
        self.send(3, qos << 1, body + payload)
        return pid

    def publish(self, topic, payload, qos):
        """Publishes; returns the PUBACK / PUBREC reason code (0 for QoS 0)."""
        pid = self.send_publish(topic, payload, qos)
        if not qos:
            return 0
        p = self.recv()
        assert p is not None, "connection closed instead of PUBACK/PUBREC"
        want = self.PUBACK if qos == 1 else self.PUBREC
        assert p[0] == want, "expected packet type %d, got %d" % (want, p[0])
        assert struct.unpack("!H", p[2][:2])[0] == pid, "acknowledgement for another packet id"
        reason = p[2][2] if len(p[2]) > 2 else 0
        if qos == 2 and reason < 0x80:
            self.send(6, 2, struct.pack("!H", pid))
            q = self.recv()
            assert q is not None and q[0] == self.PUBCOMP, "expected PUBCOMP, got %r" % (q,)
        return reason

    def disconnect_reason(self):
        """Reads up to the broker's DISCONNECT and returns its reason code (0 when it
        has none); None if the connection closed without one."""
        while True:
            p = self.recv()
            if p is None:
                return None
            if p[0] == 14:
                return p[2][0] if p[2] else 0

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Runner:
    def __init__(self, name):
        self.name = name
        self.passed = 0
        self.failed = 0

    def run(self, fn, *args):
        title = fn.__name__
        try:
            fn(*args)
        except Exception:
            self.failed += 1
            print("FAIL %s" % title)
            traceback.print_exc(file=sys.stdout)
        else:
            self.passed += 1
            print("PASS %s" % title)
        sys.stdout.flush()

    def finish(self):
        print("%d passed, %d failed" % (self.passed, self.failed))
        sys.exit(1 if self.failed else 0)
