"""Crash test of persistence: the broker is killed with SIGKILL at random
points while publishers send QoS 1 and QoS 2 messages to persistent sessions,
one online and one that is offline most of the time. After every restart
the clients carry on (resending what was not acknowledged, as MQTT requires)
and at the end: every message acknowledged to its publisher reached every
subscribing session, QoS 1 at least once and QoS 2 exactly once, and the
retained message is the last one published.

The clients here are small MQTT 3.1.1 state machines over raw sockets, so the
test checks the broker, not a client library's deduplication: a subscriber
hands a QoS 2 message on when its PUBLISH arrives (the spec's method B) and
remembers the packet id until PUBREL, so a PUBLISH the broker repeats after
having released the id counts as a duplicate.

MQB_CRASH_ROUNDS (default 12) and MQB_CRASH_SEED set the run; the seed is
printed so that a failure can be replayed."""
import os
import random
import select
import socket
import struct
import time
import unittest

from harness import Broker
from mqtt_util import mstr, packet

ROUNDS = int(os.environ.get("MQB_CRASH_ROUNDS", "12"))
SEED = int(os.environ.get("MQB_CRASH_SEED", str(random.randrange(1 << 30))))

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK = 8, 9


class Gone(Exception):
    """The connection is closed (the broker died)."""


class Client:
    """An MQTT 3.1.1 client with a persistent session whose state outlives
    its connections: unacknowledged messages are resent after reconnecting."""

    WINDOW = 20

    def __init__(self, name, port):
        self.name, self.port = name, port
        self.sock = None
        self.buf = b""
        self.next_pid = 1
        self.out = {}            # pid -> [topic, payload, qos, retain, "pub" | "rel"]
        self.backlog = []        # (topic, payload, qos, retain) not yet sent
        self.acked = []          # payloads acknowledged (PUBACK / PUBREC)
        self.received = {}       # payload -> times handed on
        self.rel_wait = set()    # QoS 2 packet ids received, PUBREL not yet
        self.subscribed = False
        self.last_rx = time.time()
        self.trace = {}          # payload -> [(connection, packet id, dup)] (debugging)
        self.conns = 0

    # ---- connection ----
    def connect(self, subscribe=None):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.buf = s, b""
        self.conns += 1
        body = mstr("MQTT") + bytes([4, 0x00, 0, 60]) + mstr(self.name)  # clean session 0
        s.sendall(packet(CONNECT, 0, body))
        ptype, flags, body = self.read_packet(5)
        if ptype != CONNACK or body[1] != 0:
            raise AssertionError("%s: CONNACK %r" % (self.name, body))
        present = body[0] & 1
        if self.subscribed and not present:
            raise AssertionError("%s: the broker lost the session" % self.name)
        if subscribe and not self.subscribed:
            # Until the SUBACK, the subscription may not have survived a crash.
            pid = self.new_pid()
            s.sendall(packet(SUBSCRIBE, 2, struct.pack(">H", pid) + mstr(subscribe) + b"\x02"))
        # As MQTT requires of a client: resend what was not acknowledged, in order.
        for pid, m in sorted(self.out.items(), key=lambda kv: kv[1][5]):
            if m[4] == "pub":
                self.send_publish(pid, m, dup=True)
            else:
                s.sendall(packet(PUBREL, 2, struct.pack(">H", pid)))
        self.handle_buffered()  # what came with the CONNACK
        return present

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None

    def new_pid(self):
        while True:
            pid = self.next_pid
            self.next_pid = self.next_pid % 65535 + 1
            if pid not in self.out:
                return pid

    # ---- I/O ----
    def read_packet(self, timeout):
        deadline = time.time() + timeout
        while True:
            p = self.parse()
            if p:
                return p
            left = deadline - time.time()
            if left <= 0:
                raise AssertionError("%s: no packet within %ss" % (self.name, timeout))
            r, _, _ = select.select([self.sock], [], [], left)
            if r:
                self.recv()

    def recv(self):
        try:
            data = self.sock.recv(65536)
        except (ConnectionError, OSError):
            data = b""
        if not data:
            self.close()
            raise Gone()
        self.buf += data

    def parse(self):
        b = self.buf
        if len(b) < 2:
            return None
        n, mult, i = 0, 1, 1
        while True:
            if i >= len(b):
                return None
            n += (b[i] & 127) * mult
            mult *= 128
            i += 1
            if not b[i - 1] & 128:
                break
        if len(b) < i + n:
            return None
        self.buf = b[i + n:]
        return b[0] >> 4, b[0] & 15, b[i:i + n]

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            self.close()
            raise Gone()

    def send_publish(self, pid, m, dup=False):
        topic, payload, qos, retain = m[0], m[1], m[2], m[3]
        flags = (8 if dup else 0) | (qos << 1) | (1 if retain else 0)
        self.send(packet(PUBLISH, flags, mstr(topic) + struct.pack(">H", pid) + payload))

    # ---- behaviour ----
    def fill(self):
        """Publishes from the backlog within the window."""
        while self.sock and self.backlog and len(self.out) < self.WINDOW:
            topic, payload, qos, retain = self.backlog.pop(0)
            pid = self.new_pid()
            m = [topic, payload, qos, retain, "pub", time.monotonic_ns()]
            self.out[pid] = m
            self.send_publish(pid, m)

    def handle(self, ptype, flags, body):
        self.last_rx = time.time()
        if ptype == PUBLISH:
            qos = (flags >> 1) & 3
            tlen = struct.unpack(">H", body[:2])[0]
            at = 2 + tlen
            pid = struct.unpack(">H", body[at:at + 2])[0] if qos else 0
            payload = body[at + (2 if qos else 0):]
            if os.environ.get("MQB_CRASH_DEBUG"):
                self.trace.setdefault(payload, []).append((self.conns, pid, flags & 8))
            if qos == 2:
                if pid not in self.rel_wait:
                    self.rel_wait.add(pid)
                    self.received[payload] = self.received.get(payload, 0) + 1
                self.send(packet(PUBREC, 0, struct.pack(">H", pid)))
            else:
                self.received[payload] = self.received.get(payload, 0) + 1
                if qos == 1:
                    self.send(packet(PUBACK, 0, struct.pack(">H", pid)))
        elif ptype == SUBACK:
            self.subscribed = True
        elif ptype == PUBREL:
            pid = struct.unpack(">H", body[:2])[0]
            self.rel_wait.discard(pid)
            self.send(packet(PUBCOMP, 0, struct.pack(">H", pid)))
        elif ptype == PUBACK:
            pid = struct.unpack(">H", body[:2])[0]
            m = self.out.pop(pid, None)
            if m and m[4] == "pub" and m[2] == 1:
                self.acked.append(m[1])
        elif ptype == PUBREC:
            pid = struct.unpack(">H", body[:2])[0]
            m = self.out.get(pid)
            if m and m[4] == "pub":
                m[4] = "rel"
                self.acked.append(m[1])
            self.send(packet(PUBREL, 2, struct.pack(">H", pid)))
        elif ptype == PUBCOMP:
            pid = struct.unpack(">H", body[:2])[0]
            m = self.out.get(pid)
            if m and m[4] == "rel":
                del self.out[pid]

    def handle_buffered(self):
        while True:
            p = self.parse()
            if not p:
                break
            self.handle(*p)

    def pump(self):
        """Handles what has arrived; raises Gone when the connection is lost."""
        if not self.sock:
            return
        self.recv()
        self.handle_buffered()
        self.fill()


def pump_all(clients, seconds):
    """Runs the clients for a while; returns False once the broker is gone."""
    deadline = time.time() + seconds
    alive = True
    while time.time() < deadline:
        socks = {c.sock: c for c in clients if c.sock}
        if not socks:
            return False
        r, _, _ = select.select(list(socks), [], [], max(0, min(0.05, deadline - time.time())))
        for s in r:
            c = socks[s]
            try:
                c.pump()
            except Gone:
                alive = False
    return alive


class CrashTest(unittest.TestCase):

    def test_sigkill_loop(self):
        rnd = random.Random(SEED)
        print("\ncrash test: MQB_CRASH_SEED=%d MQB_CRASH_ROUNDS=%d" % (SEED, ROUNDS))
        # The default sync = always: a message is acknowledged once on disk.
        broker = Broker({"persistence.sync": "always", "mqtt.max_mqueue_len": "0",
                         "persistence.queue_window": "64", "mqtt.max_inflight": "16",
                         "log.level": "notice"})
        self.addCleanup(broker.kill)
        port = broker.port
        online = Client("crash-online", port)
        offline = Client("crash-offline", port)
        pub1 = Client("crash-pub-q1", port)
        pub2 = Client("crash-pub-q2", port)
        pubr = Client("crash-pub-retain", port)
        subs = (online, offline)
        seq = 0
        for rnd_no in range(ROUNDS):
            broker.start()
            online.connect("crash/#")
            if rnd_no % 3 == 2 or rnd_no == 0:
                offline.connect("crash/#")  # drains now and then; subscribes first
            for p in (pub1, pub2, pubr):
                p.connect()
            for _ in range(rnd.randrange(200, 1500)):
                seq += 1
                pub1.backlog.append(("crash/q1", b"q1-%d" % seq, 1, False))
                pub2.backlog.append(("crash/q2", b"q2-%d" % seq, 2, False))
            pubr.backlog.append(("crash/retained", b"r-%d" % rnd_no, 1, True))
            for p in (pub1, pub2, pubr):
                p.fill()
            clients = [c for c in (online, offline, pub1, pub2, pubr) if c.sock]
            alive = pump_all(clients, rnd.uniform(0.05, 0.8))
            self.assertTrue(alive, "the broker went away by itself:\n" + broker.log()[-3000:])
            broker.kill()  # SIGKILL at a random point
            broker.proc.wait()
            for c in (online, offline, pub1, pub2, pubr):
                c.close()
        # Last start: everyone back until the publishers are done and
        # nothing has arrived for a while.
        broker.start()
        for c in (online, offline):
            c.connect("crash/#")
        for p in (pub1, pub2, pubr):
            p.connect()
            p.fill()
        clients = [online, offline, pub1, pub2, pubr]
        deadline = time.time() + 60
        while time.time() < deadline:
            self.assertTrue(pump_all(clients, 0.2), broker.log()[-3000:])
            busy = any(p.backlog or p.out for p in (pub1, pub2, pubr))
            quiet = all(time.time() - c.last_rx > 1.5 for c in subs)
            if not busy and quiet and not any(c.rel_wait for c in subs):
                break
        for p in (pub1, pub2, pubr):
            self.assertFalse(p.backlog or p.out, "%s did not finish" % p.name)
        log = broker.log()
        if os.environ.get("MQB_CRASH_DEBUG"):
            print(log[-6000:])
            for c in (online, offline, pub1, pub2, pubr):
                print(c.name, "acked", len(c.acked), "out", len(c.out), "backlog",
                      len(c.backlog), "received", len(c.received), "rel_wait", len(c.rel_wait))
            for c in (online, offline):
                d = [m for m in c.received if c.received[m] > 1 and m.startswith(b"q2")]
                for m in d[:3]:
                    print(c.name, m, c.trace.get(m))
        # Every acknowledged message reached every subscribing session.
        for s in subs:
            missing1 = [m for m in pub1.acked if s.received.get(m, 0) < 1]
            missing2 = [m for m in pub2.acked if s.received.get(m, 0) < 1]
            dup2 = [m for m in pub2.acked if s.received.get(m, 0) > 1]
            self.assertEqual(missing1, [], "%s lost QoS 1 messages (seed %d)" % (s.name, SEED))
            self.assertEqual(missing2, [], "%s lost QoS 2 messages (seed %d)" % (s.name, SEED))
            self.assertEqual(dup2, [], "%s got QoS 2 messages twice (seed %d)" % (s.name, SEED))
        self.assertEqual(len(pub2.acked), seq)
        self.assertEqual(len(pub1.acked), seq)
        # The retained message is the last one published.
        probe = Client("crash-probe", port)
        probe.connect("crash/retained")
        pump_all([probe], 1.0)
        self.assertEqual(set(probe.received), {b"r-%d" % (ROUNDS - 1)})
        probe.close()
        for c in clients:
            c.close()
        self.assertEqual(broker.stop(), 0)
        self.assertNotIn("AddressSanitizer", log)
        self.assertNotIn("runtime error:", log)
        print("crash test: %d rounds, %d QoS 1 + %d QoS 2 messages, all delivered; "
              "QoS 1 duplicates at the subscribers: %d"
              % (ROUNDS, seq, seq, sum(max(0, s.received.get(m, 0) - 1)
                                       for s in subs for m in pub1.acked)))


if __name__ == "__main__":
    unittest.main()
