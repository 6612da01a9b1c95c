"""MQTT 3.1.1 conformance: SUBSCRIBE/SUBACK, UNSUBSCRIBE/UNSUBACK and topic
filter matching.

Each test names the normative statements it covers ([MQTT-x.x.x-y]).
"""
import unittest

from v311util import (V, T, MOSQUITTO, V311Case, topic, m, subscribe,
                      unsubscribe, pubrec, pubcomp, raw, utf8, main)


class Subscribe(V311Case):
    def test_suback_packet_id(self):
        """[MQTT-3.8.4-1] [MQTT-3.8.4-2] [MQTT-2.3.1-7] SUBSCRIBE is answered by a
        SUBACK with its packet identifier."""
        c = self.client()
        for pid in (1, 0x1234, 0xFFFF):
            c.send(subscribe(pid, [(topic(), 1)], version=V))
            p = self.recv(c, m.SUBACK)
            self.assertEqual((p.packet_id, p.reasons), (pid, [1]))

    def test_multiple_filters(self):
        """[MQTT-3.8.4-4] [MQTT-3.8.4-5] [MQTT-3.9.3-1] [MQTT-3.9.3-2] several filters
        in one SUBSCRIBE: one SUBACK with a code per filter, in order, each a
        granted QoS or 0x80, and each subscription works."""
        base = topic("multi")
        c = self.client()
        filters = [(base + "/a", 2), (base + "/b", 0), (base + "/c", 1), (base + "/+/d", 2)]
        p = self.sub(c, filters)
        self.assertEqual(len(p.reasons), 4)
        self.assertTrue(all(r in (0, 1, 2, 0x80) for r in p.reasons), p.reasons)
        self.assertEqual(p.reasons, [2, 0, 1, 2])
        pub = self.client()
        for t in ("/a", "/b", "/c", "/x/d"):
            self.pub(pub, base + t, t.encode(), qos=2)
            r = self.recv_pub(c)
            self.assertEqual(r.payload, t.encode())
        self.assertEqual(self.ping(c), [])

    def test_identical_filter_replaces(self):
        """[MQTT-3.8.4-3] subscribing again to an identical filter replaces the
        subscription (one copy, new QoS) and re-sends retained messages."""
        t = topic("rep")
        pub = self.client()
        self.pub(pub, t, b"ret", qos=1, retain=True)
        c = self.client()
        self.sub(c, [(t, 0)])
        self.assertEqual([(r.payload, r.qos) for r in self.ping(c)], [(b"ret", 0)])
        self.sub(c, [(t, 2)])
        got = self.ping(c)
        self.assertEqual([(r.payload, r.retain) for r in got], [(b"ret", True)])
        for r in got:
            self.ack(c, r)
        self.pub(pub, t, b"live", qos=2)
        r = self.recv_pub(c)
        self.assertEqual((r.payload, r.qos), (b"live", 2), "the new QoS 2 applies")
        self.assertEqual(self.ping(c), [], "duplicate delivery after re-subscribe")

    def test_bad_subscribe_packets(self):
        """[MQTT-3.8.3-1] [MQTT-3.8.3-3] [MQTT-3.8.3-4] [MQTT-2.3.1-1] [MQTT-1.5.3-1]
        [MQTT-4.8.0-1] ill-formed filters, no filters, reserved option bits, QoS 3
        or packet id 0: close."""
        cases = {
            "filter U+0000": subscribe(1, [(b"a\x00", 0)], version=V),
            "filter invalid UTF-8": subscribe(1, [(b"a\xff", 0)], version=V),
            "filter surrogate": subscribe(1, [(b"\xed\xa0\x80", 0)], version=V),
            "no filters": raw(0x82, b"\x00\x01"),
            "QoS 3": subscribe(1, [("a", 3)], version=V),
            "reserved bit 2": subscribe(1, [("a", 0x04)], version=V),
            "reserved bits 6-7": subscribe(1, [("a", 0xC1)], version=V),
            "packet id 0": subscribe(0, [("a", 0)], version=V),
        }
        for name, data in cases.items():
            with self.subTest(name):
                self.assert_refused_or_closed(self.client(), data, name)


@unittest.skipIf(MOSQUITTO, "mosquitto cannot turn wildcard subscriptions off")
class NoWildcards(V311Case):
    config = {"mqtt.wildcard_subscription": "false"}

    def test_wildcards_refused_when_unsupported(self):
        """[MQTT-3.8.3-2] [MQTT-3.8.4-5] a server without wildcard support refuses
        filters containing wildcards (0x80), and grants others."""
        c = self.client()
        p = self.sub(c, [("a/#", 1), ("a/b", 1), ("+/b", 1)])
        self.assertEqual(p.reasons, [0x80, 1, 0x80])


@unittest.skipIf(MOSQUITTO, "mosquitto's client id limit is not configurable here")
class ShortClientIds(V311Case):
    config = {"mqtt.max_clientid_len": "23"}

    def test_rejected_client_id(self):
        """[MQTT-3.1.3-9] a client id the server refuses (over its configured
        length) gets CONNACK 0x02 and a close."""
        c = self.raw()
        c.send(m.connect("x" * 24, version=V))
        p = self.recv(c, m.CONNACK)
        self.assertEqual((p.reason, p.session_present), (0x02, False))
        self.assert_closed(c)


class Unsubscribe(V311Case):
    def test_unsuback(self):
        """[MQTT-3.10.4-4] [MQTT-3.10.4-5] [MQTT-2.3.1-7] UNSUBACK with the packet id,
        also when nothing was subscribed."""
        c = self.client()
        c.send(unsubscribe(0x4321, ["never/subscribed"], version=V))
        p = self.recv(c, m.UNSUBACK)
        self.assertEqual(p.packet_id, 0x4321)
        self.assertEqual(p.body, b"\x43\x21")

    def test_unsubscribe_stops_delivery(self):
        """[MQTT-3.10.4-2] [MQTT-3.10.4-6] after UNSUBSCRIBE (several filters, one
        UNSUBACK) no new message is delivered for them."""
        base = topic("un")
        mt = "marker/" + base
        c = self.subscriber([(base + "/a", 1), (base + "/b", 1), (mt, 1)])
        c.send(unsubscribe(7, [base + "/a", base + "/b"], version=V))
        p = self.recv(c, m.UNSUBACK)
        self.assertEqual(p.packet_id, 7)
        pub = self.client()
        self.pub(pub, base + "/a", b"x", qos=1)
        self.pub(pub, base + "/b", b"x", qos=1)
        self.assertEqual(self.collect_until_marker(c, pub, mt), [])
        self.assertEqual(self.ping(c), [], "a second UNSUBACK or message")

    def test_exact_filter_comparison(self):
        """[MQTT-3.10.4-1] UNSUBSCRIBE compares filters character by character: a
        wildcard filter does not remove a specific one and vice versa."""
        base = topic("ex")
        mt = "marker/" + base
        c = self.subscriber([(base + "/x", 1), (base + "/+", 1), (mt, 1)])
        c.send(unsubscribe(3, [base + "/#", base + "/X"], version=V))
        self.recv(c, m.UNSUBACK)
        pub = self.client()
        self.pub(pub, base + "/x", b"1", qos=1)
        got = self.collect_until_marker(c, pub, mt)
        self.assertGreaterEqual(len(got), 1, "both subscriptions must remain")
        c.send(unsubscribe(4, [base + "/+"], version=V))
        self.recv(c, m.UNSUBACK)
        self.pub(pub, base + "/y", b"2", qos=1)
        self.pub(pub, base + "/x", b"3", qos=1)
        got = self.collect_until_marker(c, pub, mt)
        self.assertEqual([g.payload for g in got], [b"3"])

    def test_inflight_completed_after_unsubscribe(self):
        """[MQTT-3.10.4-3] a QoS 2 delivery started before UNSUBSCRIBE is completed."""
        t = topic("inf")
        c = self.subscriber([(t, 2)])
        pub = self.client()
        self.pub(pub, t, b"inflight", qos=2)
        msg = self.recv(c, m.PUBLISH)
        c.send(unsubscribe(5, [t], version=V))
        self.recv(c, m.UNSUBACK)
        c.send(pubrec(msg.packet_id, version=V))
        rel = self.recv(c, m.PUBREL)
        self.assertEqual(rel.packet_id, msg.packet_id)
        c.send(pubcomp(msg.packet_id, version=V))
        self.assertEqual(self.ping(c), [])

    def test_bad_unsubscribe_packets(self):
        """[MQTT-3.10.3-1] [MQTT-3.10.3-2] [MQTT-3.10.1-1] [MQTT-1.5.3-1] [MQTT-1.5.3-2]
        ill-formed filters, no filters or bad flags: close."""
        cases = {
            "filter invalid UTF-8": unsubscribe(1, [b"a\xff"], version=V),
            "filter U+0000": unsubscribe(1, [b"a\x00"], version=V),
            "no filters": raw(0xA2, b"\x00\x01"),
            "flags 0": raw(0xA0, b"\x00\x01" + utf8("a")),
        }
        for name, data in cases.items():
            with self.subTest(name):
                self.assert_refused_or_closed(self.client(), data, name)


class Matching(V311Case):
    def deliveries(self, filters, topics):
        """Subscribes a client to filters, publishes each topic and returns the
        set of topics it received."""
        c = self.subscriber([(f, 0) for f in filters])
        mt = topic("marker")
        self.sub(c, [(mt, 1)])
        pub = self.client()
        for t in topics:
            self.pub(pub, t, b"x", qos=0)
        return [g.topic for g in self.collect_until_marker(c, pub, mt)]

    def test_multi_level_wildcard(self):
        """[MQTT-4.7.1-2] '#' alone or after '/', last: matches the parent level and
        everything below."""
        b = topic("ml")
        got = self.deliveries([b + "/#"], [b, b + "/x", b + "/x/y", b + "x"])
        self.assertEqual(sorted(got), sorted([b, b + "/x", b + "/x/y"]))

    def test_single_level_wildcard(self):
        """[MQTT-4.7.1-3] '+' matches exactly one (possibly empty) level, at any
        position."""
        b = topic("sl")
        got = self.deliveries(["+/" + b + "/+", b + "/+/c"],
                              [b + "/a/c", b + "//c", b + "/a/b/c", "x/" + b + "/y",
                               "x/" + b + "/y/z"])
        self.assertEqual(sorted(got), sorted([b + "/a/c", b + "//c", "x/" + b + "/y"]))

    def test_invalid_filters(self):
        """[MQTT-4.7.1-2] [MQTT-4.7.1-3] [MQTT-4.7.3-1] misplaced wildcards or an
        empty filter: the subscription fails (SUBACK 0x80) or the connection
        is closed."""
        for flt in ("a/#/b", "a#", "#/a", "a+", "a/+b", "++", ""):
            with self.subTest(flt):
                c = self.client()
                c.send(subscribe(1, [(flt, 0)], version=V))
                c.send(m.pingreq())
                p = c.recv_packet(T)
                if p is not None:
                    self.assertEqual((p.type, p.reasons), (m.SUBACK, [0x80]), flt)

    def test_dollar_topics(self):
        """[MQTT-4.7.2-1] filters starting with a wildcard do not match topic names
        starting with '$'."""
        b = topic("dollar")
        t = "$" + b
        explicit = self.subscriber([(t, 0)])
        c = self.subscriber([("#", 0), ("+/" + b.split("/")[1], 0)])
        pub = self.client()
        self.pub(pub, t, b"x", qos=1)
        r = self.recv_pub(explicit)  # it was published...
        self.assertEqual(r.topic, t)
        mt = topic("marker")
        got = self.collect_until_marker(c, pub, mt)  # ...but not to wildcards
        self.assertEqual([g.topic for g in got if g.topic.startswith("$")], [])

    def test_no_normalization(self):
        """[MQTT-4.7.3-4] matching is exact: case, spaces and Unicode
        normalization forms are not folded."""
        b = topic("norm")
        nfc, nfd = b + "/caf\u00e9", b + "/cafe\u0301"
        got = self.deliveries([b + "/Acc", b + "/a b", nfc],
                              [b + "/ACC", b + "/acc", b + "/Acc", b + "/ab", b + "/a b",
                               nfd, nfc])
        self.assertEqual(sorted(got), sorted([b + "/Acc", b + "/a b", nfc]))

    def test_nul_in_filter(self):
        """[MQTT-4.7.3-2] U+0000 in a topic filter closes the connection."""
        self.assert_refused_or_closed(self.client(), subscribe(1, [(b"a/\x00", 0)], version=V))


if __name__ == "__main__":
    main()
