"""Helpers for the MQTT 3.1.1 conformance tests (test_v311*.py)."""
import itertools
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import Broker, REFERENCE  # noqa: E402,F401
import mqttraw as m  # noqa: E402
from mqttraw import RawClient, connect, publish, subscribe, unsubscribe, puback, pubrec, \
    pubrel, pubcomp, pingreq, disconnect, raw, utf8, connect_ok  # noqa: E402,F401

V = 4  # MQTT 3.1.1
T = 5.0
MOSQUITTO = REFERENCE == "mosquitto"
_ids = itertools.count(1)


def cid(prefix="c"):
    """A client id unique in this process (tests may run concurrently)."""
    return "%s%d" % (prefix, next(_ids))


def topic(prefix="t"):
    return "%s/%d" % (prefix, next(_ids))


class V311Case(unittest.TestCase):
    """Starts one broker per test class."""
    config = {}

    @classmethod
    def setUpClass(cls):
        cls.broker = Broker(cls.config).start()
        cls.port = cls.broker.port

    @classmethod
    def tearDownClass(cls):
        cls.broker.stop()

    def setUp(self):
        self.clients = []

    def tearDown(self):
        for c in self.clients:
            c.close()
        self.assertTrue(self.broker.alive(), "broker died:\n" + self.broker.log()[-2000:])

    # -- connections

    def raw(self):
        c = RawClient(self.port, timeout=T, version=V)
        self.clients.append(c)
        return c

    def client(self, client_id=None, **kw):
        """A connected 3.1.1 client (CONNACK 0 checked, in .connack)."""
        c = connect_ok(self.port, client_id or cid(), version=V, **kw)
        self.clients.append(c)
        return c

    def subscriber(self, filters, client_id=None, **kw):
        """A client subscribed to [(filter, qos)] (or one filter string at QoS 2)."""
        if isinstance(filters, str):
            filters = [(filters, 2)]
        c = self.client(client_id, **kw)
        self.sub(c, filters)
        return c

    # -- packets

    def recv(self, c, ptype=None, timeout=T):
        stash = getattr(c, "stash", None)
        if stash and ptype in (None, m.PUBLISH):
            return stash.pop(0)
        p = c.recv_packet(timeout)
        self.assertIsNotNone(p, "connection closed, expected %s" % (m.TYPE_NAMES.get(ptype),))
        if ptype is not None:
            self.assertEqual(p.type, ptype, "expected %s, got %r" % (m.TYPE_NAMES[ptype], p))
        return p

    def sub(self, c, filters, pid=None):
        pid = pid or (next(_ids) % 65535) + 1
        c.send(subscribe(pid, filters, version=V))
        p = self.recv(c, m.SUBACK)
        self.assertEqual(p.packet_id, pid)
        return p

    def recv_ack(self, c, ptype):
        """The next packet of ptype; PUBLISHes arriving first (a client
        subscribed to its own topic) are kept for recv_pub."""
        while True:
            p = c.recv_packet(T)
            self.assertIsNotNone(p, "connection closed, expected %s" % m.TYPE_NAMES[ptype])
            if p.type == m.PUBLISH and ptype != m.PUBLISH:
                c.stash = getattr(c, "stash", [])
                c.stash.append(p)
                continue
            self.assertEqual(p.type, ptype, "expected %s, got %r" % (m.TYPE_NAMES[ptype], p))
            return p

    def pub(self, c, t, payload=b"x", qos=0, retain=False, pid=None, dup=False):
        """Publishes and completes the QoS flow from the publisher's side."""
        pid = pid or (next(_ids) % 65535) + 1 if qos else None
        c.send(publish(t, payload, qos=qos, retain=retain, dup=dup, packet_id=pid, version=V))
        if qos == 1:
            p = self.recv_ack(c, m.PUBACK)
            self.assertEqual(p.packet_id, pid)
        elif qos == 2:
            p = self.recv_ack(c, m.PUBREC)
            self.assertEqual(p.packet_id, pid)
            c.send(pubrel(pid, version=V))
            p = self.recv_ack(c, m.PUBCOMP)
            self.assertEqual(p.packet_id, pid)
        return pid

    def ack(self, c, p):
        """Acknowledges a received PUBLISH (QoS 2: the whole flow)."""
        if p.qos == 1:
            c.send(puback(p.packet_id, version=V))
        elif p.qos == 2:
            c.send(pubrec(p.packet_id, version=V))
            r = self.recv_ack(c, m.PUBREL)
            self.assertEqual(r.packet_id, p.packet_id)
            c.send(pubcomp(p.packet_id, version=V))

    def recv_pub(self, c, ack=True, timeout=T):
        p = self.recv(c, m.PUBLISH, timeout)
        if ack:
            self.ack(c, p)
        return p

    def ping(self, c):
        """PINGREQ; returns the packets received before the PINGRESP."""
        c.send(pingreq())
        got = []
        while True:
            p = c.recv_packet(T)
            self.assertIsNotNone(p, "connection closed, expected PINGRESP")
            if p.type == m.PINGRESP:
                stash, c.stash = getattr(c, "stash", []), []
                return stash + got
            got.append(p)

    def collect_until_marker(self, sub, pub, marker_topic, ack=True):
        """Publishes a marker from pub (QoS 1) to a topic sub is subscribed to
        and returns the PUBLISHes sub received before the marker. Messages
        from one publisher to one subscriber keep their order, so anything
        published before the marker has arrived by then."""
        self.pub(pub, marker_topic, b"__marker__", qos=1)
        got = []
        while True:
            p = self.recv(sub, m.PUBLISH)
            if ack:
                self.ack(sub, p)
            if p.topic == marker_topic and p.payload == b"__marker__":
                return got
            got.append(p)

    def assert_closed(self, c, msg="", allow_packets=False):
        closed = c.expect_closed(T)
        self.assertTrue(closed, "connection not closed %s; received %r" % (msg, c.received))
        if not allow_packets:
            self.assertEqual(c.received, [], "expected a close without packets %s" % msg)
        return c.received

    def assert_refused_or_closed(self, c, data, msg=""):
        """Sends data (after CONNECT), then a PINGREQ: the server must close
        without answering either."""
        c.send(data)
        c.send(pingreq())
        self.assert_closed(c, msg)


def main():
    unittest.main()
