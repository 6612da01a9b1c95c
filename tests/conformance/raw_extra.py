"""Helpers for the MQTT 5.0 conformance tests (test_v5_*.py) on top of mqttraw.

BrokerTest starts one broker per test class (CONFIG: our registry keys, which
the harness maps to mosquitto.conf for MQB_REFERENCE=mosquitto) and gives
each test unique client ids and topics, so the tests of a class share the
broker without seeing each other's messages.
"""
import itertools
import time
import unittest

from harness import Broker, REFERENCE
import mqttraw as mr
from mqttraw import RawClient, connect, publish, subscribe, pubrel, pubcomp, encode_varint

MOSQUITTO = REFERENCE == "mosquitto"


def skip_on_mosquitto(reason):
    """Skips a test whose expectation (the spec's) mosquitto does not meet."""
    return unittest.skipIf(MOSQUITTO, "mosquitto 2.0.11 deviates: " + reason)


# Reason codes each packet may carry (MQTT 5.0 tables 3-1, 3-4 .. 3-11).
CONNACK_CODES = {0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88,
                 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C,
                 0x9D, 0x9F}
PUBACK_CODES = {0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99}
PUBREC_CODES = PUBACK_CODES
PUBREL_CODES = {0x00, 0x92}
PUBCOMP_CODES = {0x00, 0x92}
SUBACK_CODES = {0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E,
                0xA1, 0xA2}
UNSUBACK_CODES = {0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91}
# DISCONNECT codes a Server may send (table 3-10, "Sent by" Server or both).
SERVER_DISCONNECT_CODES = {0x00, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B,
                           0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95, 0x96,
                           0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E,
                           0x9F, 0xA0, 0xA1, 0xA2}

_seq = itertools.count(1)


def packet_size(p):
    """Size on the wire of a received Packet (fixed header + body)."""
    return 1 + len(encode_varint(len(p.body))) + len(p.body)


class RecordingClient(RawClient):
    """A RawClient that keeps the raw fixed header of each packet it parses
    (as .header on the Packet) and every packet in .log."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.log = []

    def _parse(self):
        head = None
        if len(self.buf) >= 2:
            i = 1
            while i < len(self.buf) and i <= 4 and self.buf[i] & 0x80:
                i += 1
            head = bytes(self.buf[:i + 1])
        p = super()._parse()
        if p is not None:
            p.header = head
            self.log.append(p)
        return p


class BrokerTest(unittest.TestCase):
    CONFIG = {}
    broker = None

    @classmethod
    def setUpClass(cls):
        cls.broker = Broker(cls.CONFIG)
        cls.broker.start()
        cls.port = cls.broker.port

    @classmethod
    def tearDownClass(cls):
        if cls.broker is not None:
            cls.broker.stop()

    def setUp(self):
        self._clients = []
        self._n = next(_seq)

    def tearDown(self):
        for c in self._clients:
            c.close()

    # ------------------------------------------------------------- naming

    def cid(self, tag=""):
        """A client id unique to this test (only [0-9a-zA-Z])."""
        return "c%d%s%s" % (self._n, self._testMethodName[-12:].replace("_", ""), tag)

    def topic(self, tail="t"):
        """A topic unique to this test."""
        return "v5/%d/%s/%s" % (self._n, self._testMethodName, tail)

    # ------------------------------------------------------------ clients

    def raw_client(self, cls=RawClient):
        c = cls(self.port)
        self._clients.append(c)
        return c

    def connect(self, client_id=None, cls=RawClient, **kw):
        """A connected client (CONNACK 0x00 asserted; it is in .connack)."""
        if client_id is None:
            client_id = self.cid()
        c = self.raw_client(cls)
        c.send(connect(client_id, **kw))
        p = c.recv_packet()
        self.assertIsNotNone(p, "server closed instead of answering CONNECT")
        self.assertEqual(p.type, mr.CONNACK, p)
        self.assertEqual(p.reason, 0, p)
        c.connack = p
        c.client_id = client_id
        return c

    def connect_expect_fail(self, pkt, timeout=5):
        """Sends a CONNECT (bytes) on a new connection, asserts that the
        server closes it and, if it sent a CONNACK first, that its Reason
        Code is >= 0x80. Returns the CONNACK or None."""
        c = self.raw_client()
        c.send(pkt)
        self.assertTrue(c.expect_closed(timeout), "server kept the connection open: %r" % c.received)
        connacks = [p for p in c.received if p.type == mr.CONNACK]
        others = [p for p in c.received if p.type != mr.CONNACK]
        self.assertEqual(others, [], "only a CONNACK may precede the close")
        self.assertLessEqual(len(connacks), 1)
        if connacks:
            self.assertGreaterEqual(connacks[0].reason, 0x80, connacks[0])
            self.assertIn(connacks[0].reason, CONNACK_CODES, connacks[0])
            self.assertFalse(connacks[0].session_present, connacks[0])
            return connacks[0]
        return None

    def subscribe(self, c, flt, opts=0, packet_id=None, props=None):
        """Subscribes c to one filter; asserts a SUBACK granting it."""
        pid = packet_id or 1
        c.send(subscribe(pid, [(flt, opts)], props=props))
        p = self.recv(c, mr.SUBACK)
        self.assertEqual(p.packet_id, pid)
        self.assertEqual(len(p.reasons), 1, p)
        self.assertLess(p.reasons[0], 0x80, "subscription to %r refused: %r" % (flt, p))
        self.assertLessEqual(p.reasons[0], opts & 3, "granted more than requested: %r" % p)
        c.suback = p
        return p

    def subscriber(self, flt, opts=0, sub_props=None, **kw):
        """A connected client (kw go to connect()) subscribed to flt."""
        c = self.connect(**kw)
        self.subscribe(c, flt, opts, props=sub_props)
        return c

    def recv(self, c, ptype=None, timeout=5):
        """The next packet (of ptype if given, nothing else may come first)."""
        p = c.recv_packet(timeout)
        self.assertIsNotNone(p, "server closed the connection")
        if ptype is not None:
            self.assertEqual(p.type, ptype, "expected %s, got %r" % (mr.TYPE_NAMES[ptype], p))
        return p

    def expect_nothing(self, c, wait=1.0):
        """Asserts that no packet arrives within wait seconds (and the
        connection stays open)."""
        try:
            p = c.recv_packet(wait)
        except TimeoutError:
            return
        self.fail("unexpected %r" % (p,) if p is not None else "connection closed")

    def drain(self, c, wait=1.0):
        """Packets arriving until wait seconds pass without one."""
        out = []
        while True:
            try:
                p = c.recv_packet(wait)
            except TimeoutError:
                return out
            if p is None:
                return out
            out.append(p)

    def collect(self, c, quiet=1.0, first=5.0):
        """Packets arriving on c: waits up to first seconds for one, then
        until quiet seconds pass without another (for checks that expect at
        least one packet, so a slow server does not fail them)."""
        try:
            p = c.recv_packet(first)
        except TimeoutError:
            return []
        if p is None:
            return []
        return [p] + self.drain(c, quiet)

    def publishes(self, c, quiet=1.0, first=5.0):
        """The PUBLISH packets collect() gets."""
        return [p for p in self.collect(c, quiet, first) if p.type == mr.PUBLISH]

    def gather(self, clients, n, timeout=5.0, on_publish=None):
        """Reads the clients until n PUBLISHes in total arrived (fails after
        timeout seconds without progress); returns [(client index, PUBLISH)].
        on_publish(client, packet) may acknowledge; PUBRELs get PUBCOMP."""
        out = []
        last = time.monotonic()
        while len(out) < n:
            if time.monotonic() - last > timeout:
                self.fail("got %d of %d messages: %r" % (len(out), n, out))
            for i, c in enumerate(clients):
                try:
                    p = c.recv_packet(0.05)
                except TimeoutError:
                    continue
                self.assertIsNotNone(p, "server closed the connection")
                last = time.monotonic()
                if p.type == mr.PUBREL:
                    c.send(pubcomp(p.packet_id))
                    continue
                self.assertEqual(p.type, mr.PUBLISH, p)
                out.append((i, p))
                if on_publish is not None:
                    on_publish(c, p)
        return out

    def assert_closed(self, c, reasons=None, timeout=5):
        """Asserts the server closes c. A DISCONNECT sent first must carry a
        Reason Code >= 0x80 (one of reasons, if given); it must be the last
        packet. Returns the DISCONNECT or None."""
        self.assertTrue(c.expect_closed(timeout), "server kept the connection open: %r" % c.received)
        discs = [p for p in c.received if p.type == mr.DISCONNECT]
        if not discs:
            return None
        self.assertEqual(len(discs), 1, c.received)
        self.assertIs(c.received[-1], discs[0], "packets after DISCONNECT: %r" % c.received)
        d = discs[0]
        self.assertGreaterEqual(d.reason, 0x80, d)
        self.assertIn(d.reason, SERVER_DISCONNECT_CODES, d)
        if reasons is not None:
            self.assertIn(d.reason, reasons, d)
        return d

    def publish_q1(self, c, topic, payload=b"", packet_id=1, **kw):
        """QoS 1 PUBLISH from c; returns the PUBACK."""
        c.send(publish(topic, payload, qos=1, packet_id=packet_id, **kw))
        p = c.recv_type(mr.PUBACK)   # other packets (own messages) go to c.skipped
        self.assertIsNotNone(p, "server closed the connection")
        self.assertEqual(p.packet_id, packet_id)
        return p

    def publish_q2(self, c, topic, payload=b"", packet_id=1, **kw):
        """Complete QoS 2 PUBLISH exchange from c; returns (PUBREC, PUBCOMP)."""
        c.send(publish(topic, payload, qos=2, packet_id=packet_id, **kw))
        rec = c.recv_type(mr.PUBREC)
        self.assertIsNotNone(rec, "server closed the connection")
        self.assertEqual(rec.packet_id, packet_id)
        c.send(pubrel(packet_id))
        comp = c.recv_type(mr.PUBCOMP)
        self.assertIsNotNone(comp, "server closed the connection")
        self.assertEqual(comp.packet_id, packet_id)
        return rec, comp

    def wait_for(self, cond, timeout=5, what="condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            time.sleep(0.02)
        self.fail("timed out waiting for " + what)


def main():
    unittest.main(verbosity=2)


def opts(qos=0, no_local=False, rap=False, rh=0):
    """A Subscription Options byte."""
    return (qos & 3) | (0x04 if no_local else 0) | (0x08 if rap else 0) | ((rh & 3) << 4)
