"""MQTT 5.0 conformance: SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK
(sections 3.8-3.11)."""
import mqttraw as mr
from mqttraw import (publish, subscribe, unsubscribe, puback, pubrec, pubcomp,
                     pingreq, raw, utf8)
from raw_extra import (BrokerTest, MOSQUITTO, SUBACK_CODES, UNSUBACK_CODES,
                       PUBREL_CODES, skip_on_mosquitto, opts, main)


class SubscribeTest(BrokerTest):

    def test_suback_answers_subscribe(self):
        """Every SUBSCRIBE is answered by a SUBACK with its Packet Identifier
        [MQTT-3.8.4-1] [MQTT-3.8.4-2] [MQTT-2.2.1-6]."""
        c = self.connect()
        t = self.topic()
        for pid in (1, 0x00FF, 0x1234, 0xFFFF):
            c.send(subscribe(pid, [(t + "/%d" % pid, 1)]))
            p = self.recv(c, mr.SUBACK)
            self.assertEqual(p.packet_id, pid)
            self.assertEqual(p.flags, 0)
            self.assertEqual(len(p.reasons), 1)
            self.assertIn(p.reasons[0], (0, 1))

    def test_reserved_fixed_header_flags(self):
        """A SUBSCRIBE whose fixed header flags are not 0010 is malformed: the
        connection is closed [MQTT-3.8.1-1] [MQTT-2.1.3-1]."""
        for first in (0x80, 0x83, 0x8A):
            with self.subTest(first=hex(first)):
                c = self.connect(self.cid("%x" % first))
                c.send(raw(first, b"\x00\x01\x00" + utf8(self.topic()) + b"\x00"))
                self.assert_closed(c, reasons={0x81})

    def test_topic_filter_must_be_utf8(self):
        """A Topic Filter that is not valid UTF-8 is malformed
        [MQTT-3.8.3-1]."""
        c = self.connect()
        c.send(subscribe(1, [(self.topic().encode() + b"/\xff", 0)]))
        self.assert_closed(c, reasons={0x81, 0x82})

    def test_subscribe_without_filters(self):
        """A SUBSCRIBE without any Topic Filter is a Protocol Error
        [MQTT-3.8.3-2] [MQTT-4.13.1-1]."""
        c = self.connect()
        c.send(raw(0x82, b"\x00\x01\x00"))
        self.assert_closed(c, reasons={0x81, 0x82})

    def test_no_local(self):
        """No Local 1: the Client's own messages are not forwarded to it,
        other Clients' messages are [MQTT-3.8.3-3]."""
        t = self.topic()
        c = self.connect()
        self.subscribe(c, t, opts(1, no_local=True))
        c2 = self.connect(self.cid("o"))
        self.subscribe(c2, t, opts(1))
        self.publish_q1(c, t, b"own", packet_id=1)
        m = self.recv(c2, mr.PUBLISH)
        self.assertEqual(m.payload, b"own")
        c2.send(puback(m.packet_id))
        self.publish_q1(c2, t, b"other", packet_id=2)
        m = self.recv(c, mr.PUBLISH)
        self.assertEqual(m.payload, b"other")
        c.send(puback(m.packet_id))
        self.assertEqual([x for x in c.skipped if x.type == mr.PUBLISH], [])
        self.expect_nothing(c, 0.5)

    @skip_on_mosquitto("accepts No Local on a Shared Subscription")
    def test_no_local_on_shared_subscription(self):
        """No Local 1 on a Shared Subscription is a Protocol Error
        [MQTT-3.8.3-4] [MQTT-4.13.1-1]."""
        c = self.connect()
        c.send(subscribe(1, [("$share/g%d/%s" % (self._n, self.topic()), opts(0, no_local=True))]))
        self.assert_closed(c, reasons={0x82})

    def test_reserved_subscription_option_bits(self):
        """Subscription Options with reserved bits 6-7 set are malformed;
        Retain Handling 3 and QoS 3 are Protocol Errors [MQTT-3.8.3-5]
        [MQTT-4.13.1-1]."""
        for o in (0x40, 0x80, 0xC1, 0x30, 0x03):
            with self.subTest(options=hex(o)):
                c = self.connect(self.cid("%x" % o))
                c.send(subscribe(1, [(self.topic(), o)]))
                self.assert_closed(c, reasons={0x81, 0x82})

    def test_identical_filter_replaces_subscription(self):
        """A SUBSCRIBE with the Topic Filter of an existing subscription
        replaces it: its QoS and Subscription Identifier are the new ones and
        messages are delivered once [MQTT-3.8.4-3]."""
        t = self.topic()
        c = self.connect()
        self.subscribe(c, t, 2, packet_id=1, props={mr.SUBSCRIPTION_IDENTIFIER: 5})
        self.subscribe(c, t, 0, packet_id=2)
        p = self.connect(self.cid("p"))
        self.publish_q1(p, t, b"m")
        m = self.recv(c, mr.PUBLISH)
        self.assertEqual(m.qos, 0)
        self.assertNotIn(mr.SUBSCRIPTION_IDENTIFIER, m.props)
        self.expect_nothing(c, 0.5)
        self.subscribe(c, t, 1, packet_id=3, props={mr.SUBSCRIPTION_IDENTIFIER: 7})
        self.publish_q1(p, t, b"n", packet_id=2)
        m = self.recv(c, mr.PUBLISH)
        self.assertEqual((m.qos, m.props.get(mr.SUBSCRIPTION_IDENTIFIER)), (1, [7]))
        c.send(puback(m.packet_id))
        self.expect_nothing(c, 0.5)

    def test_resubscribe_loses_no_message(self):
        """Replacing a subscription while messages flow loses none of them
        [MQTT-3.8.4-4]."""
        t = self.topic()
        c = self.connect()
        self.subscribe(c, t, 1)
        p = self.connect(self.cid("p"))
        n = 40
        for i in range(n):
            p.send(publish(t, b"%03d" % i, qos=1, packet_id=i + 1))
            if i % 8 == 0:
                c.send(subscribe(100 + i, [(t, opts(1, rh=2))]))
        seen = set()
        subacks = 0
        while len(seen) < n or subacks < len(range(0, n, 8)):
            m = self.recv(c)
            if m.type == mr.PUBLISH:
                seen.add(m.payload)
                c.send(puback(m.packet_id))
            elif m.type == mr.SUBACK:
                subacks += 1
        self.assertEqual(len(seen), n)

    def test_several_filters_in_one_subscribe(self):
        """A SUBSCRIBE with several filters acts as several SUBSCRIBEs, with
        one SUBACK holding a Reason Code per filter, in order, each the
        granted QoS [MQTT-3.8.4-5] [MQTT-3.8.4-6] [MQTT-3.8.4-7]
        [MQTT-3.9.3-1] [MQTT-3.9.3-2]."""
        t = self.topic()
        c = self.connect()
        filters = [(t + "/two", 2), (t + "/zero", 0), (t + "/one", 1), (t + "/+/w", 2)]
        c.send(subscribe(9, filters))
        p = self.recv(c, mr.SUBACK)
        self.assertEqual(p.packet_id, 9)
        self.assertEqual(len(p.reasons), 4)
        for r, (_f, q) in zip(p.reasons, filters):
            self.assertIn(r, SUBACK_CODES)
            self.assertLessEqual(r, q, "granted more than requested")   # the Server may grant less
        self.expect_nothing(c, 0.3)
        pub = self.connect(self.cid("p"))
        for name in ("two", "zero", "one", "x/w"):
            pub.send(publish(t + "/" + name, name.encode()))
        got = sorted(self.recv(c, mr.PUBLISH).payload for _ in range(4))
        self.assertEqual(got, [b"one", b"two", b"x/w", b"zero"])

    def test_delivered_qos_is_minimum(self):
        """Messages are delivered at the minimum of the published QoS and the
        granted QoS [MQTT-3.8.4-8]."""
        t = self.topic()
        c = self.connect()
        c.send(subscribe(1, [(t + "/0", 0), (t + "/1", 1), (t + "/2", 2)]))
        granted = self.recv(c, mr.SUBACK).reasons
        for q, g in enumerate(granted):
            self.assertLessEqual(g, q)
        p = self.connect(self.cid("p"))
        for pq in (0, 1, 2):
            for sq in (0, 1, 2):
                payload = b"%d%d" % (pq, sq)
                if pq == 0:
                    p.send(publish(t + "/%d" % sq, payload))
                elif pq == 1:
                    self.publish_q1(p, t + "/%d" % sq, payload)
                else:
                    self.publish_q2(p, t + "/%d" % sq, payload)
                m = self.recv(c, mr.PUBLISH)
                self.assertEqual(m.payload, payload)
                self.assertEqual(m.qos, min(pq, granted[sq]), m)
                if m.qos == 1:
                    c.send(puback(m.packet_id))
                elif m.qos == 2:
                    c.send(pubrec(m.packet_id))
                    c.send(pubcomp(self.recv(c, mr.PUBREL).packet_id))


class UnavailableFeaturesTest(BrokerTest):
    CONFIG = {"mqtt.wildcard_subscription": "false", "mqtt.subscription_identifiers": "false",
              "mqtt.shared_subscription": "false"}

    def setUp(self):
        super().setUp()
        if MOSQUITTO:
            self.skipTest("mosquitto has no options to turn these features off")

    def test_features_announced(self):
        """CONNACK announces Wildcard Subscription, Subscription Identifier
        and Shared Subscription Available 0 (section 3.2.2.3)."""
        c = self.connect()
        for pid in (mr.WILDCARD_SUBSCRIPTION_AVAILABLE, mr.SUBSCRIPTION_IDENTIFIER_AVAILABLE,
                    mr.SHARED_SUBSCRIPTION_AVAILABLE):
            self.assertEqual(c.connack.props.get(pid), 0, c.connack)

    def test_unavailable_features_refused(self):
        """Using a feature the Server announced as unavailable is refused with
        its Reason Code, 0xA2 (wildcards), 0xA1 (Subscription Identifiers) or
        0x9E (Shared Subscriptions): section 3.2.2.3 calls it a Protocol
        Error answered by DISCONNECT, the SUBACK table also lists these codes,
        so a SUBACK with the code is accepted too [MQTT-4.13.1-1]
        [MQTT-3.9.3-2]."""
        t = self.topic()
        for tag, pkt, code in (
                ("w", subscribe(1, [(t + "/+", 0)]), 0xA2),
                ("h", subscribe(1, [(t + "/#", 0)]), 0xA2),
                ("i", subscribe(1, [(t, 0)], props={mr.SUBSCRIPTION_IDENTIFIER: 3}), 0xA1),
                ("s", subscribe(1, [("$share/g/" + t, 0)]), 0x9E)):
            with self.subTest(code=hex(code), tag=tag):
                c = self.connect(self.cid(tag))
                c.send(pkt)
                p = c.recv_packet()
                if p is not None and p.type == mr.SUBACK:
                    self.assertEqual((p.packet_id, p.reasons), (1, [code]), p)
                    continue
                if p is not None:
                    self.assertEqual((p.type, p.reason), (mr.DISCONNECT, code), p)
                self.assertTrue(p is None or c.expect_closed())


class UnsubscribeTest(BrokerTest):

    def test_reserved_fixed_header_flags(self):
        """An UNSUBSCRIBE whose fixed header flags are not 0010 is malformed:
        the connection is closed [MQTT-3.10.1-1] [MQTT-2.1.3-1]."""
        for first in (0xA0, 0xA3, 0xAA):
            with self.subTest(first=hex(first)):
                c = self.connect(self.cid("%x" % first))
                c.send(raw(first, b"\x00\x01\x00" + utf8(self.topic())))
                self.assert_closed(c, reasons={0x81})

    def test_topic_filter_must_be_utf8(self):
        """An UNSUBSCRIBE Topic Filter that is not valid UTF-8 is malformed
        [MQTT-3.10.3-1]."""
        c = self.connect()
        c.send(unsubscribe(1, [self.topic().encode() + b"\xc3\x28"]))
        self.assert_closed(c, reasons={0x81, 0x82})

    def test_unsubscribe_without_filters(self):
        """An UNSUBSCRIBE without Topic Filters is a Protocol Error
        [MQTT-3.10.3-2] [MQTT-4.13.1-1]."""
        c = self.connect()
        c.send(raw(0xA2, b"\x00\x01\x00"))
        self.assert_closed(c, reasons={0x81, 0x82})

    def test_unsuback_answers_unsubscribe(self):
        """Every UNSUBSCRIBE gets an UNSUBACK with its Packet Identifier, also
        when no subscription was deleted [MQTT-3.10.4-4] [MQTT-3.10.4-5]
        [MQTT-2.2.1-6] [MQTT-3.11.3-2]."""
        t = self.topic()
        c = self.connect()
        self.subscribe(c, t)
        for pid, flt, want in ((0x4321, t, {0x00}), (0xFFFF, t, {0x11}), (1, t + "/none", {0x11})):
            c.send(unsubscribe(pid, [flt]))
            p = self.recv(c, mr.UNSUBACK)
            self.assertEqual(p.packet_id, pid)
            self.assertEqual(len(p.reasons), 1)
            self.assertIn(p.reasons[0], UNSUBACK_CODES)
            self.assertIn(p.reasons[0], want, p)

    def test_filters_compared_character_by_character(self):
        """UNSUBSCRIBE deletes only the subscription whose filter is the same
        string: 'a/#' does not remove 'a/+' or 'a/b' [MQTT-3.10.4-1]."""
        t = self.topic()
        c = self.connect()
        c.send(subscribe(1, [(t + "/+", 1), (t + "/b", 0)]))
        self.recv(c, mr.SUBACK)
        c.send(unsubscribe(2, [t + "/#", t + "/B", t + "/+/"]))
        self.assertEqual(self.recv(c, mr.UNSUBACK).reasons, [0x11, 0x11, 0x11])
        p = self.connect(self.cid("p"))
        p.send(publish(t + "/b", b"1"))
        got = self.publishes(c, 0.7)
        self.assertTrue(got)
        c.send(unsubscribe(3, [t + "/+"]))
        self.assertEqual(self.recv(c, mr.UNSUBACK).reasons, [0])
        p.send(publish(t + "/b", b"2") + publish(t + "/c", b"3"))
        got = self.publishes(c, 0.7)
        self.assertEqual([(m.payload, m.qos) for m in got], [(b"2", 0)])

    def test_unsubscribe_stops_new_messages(self):
        """After UNSUBACK no new matching messages are delivered
        [MQTT-3.10.4-2]."""
        t = self.topic()
        c = self.subscriber(t, 1)
        p = self.connect(self.cid("p"))
        c.send(unsubscribe(2, [t]))
        self.assertEqual(self.recv(c, mr.UNSUBACK).reasons, [0])
        for i in range(3):
            self.publish_q1(p, t, b"x", packet_id=i + 1)
        c.send(pingreq())
        self.recv(c, mr.PINGRESP)
        self.expect_nothing(c, 0.5)

    def test_unsubscribe_completes_started_delivery(self):
        """A QoS 2 delivery started before UNSUBSCRIBE is completed: PUBREC
        still gets PUBREL [MQTT-3.10.4-3]."""
        t = self.topic()
        c = self.subscriber(t, 2)
        p = self.connect(self.cid("p"))
        self.publish_q2(p, t, b"m")
        m = self.recv(c, mr.PUBLISH)
        c.send(unsubscribe(2, [t]))
        self.assertEqual(self.recv(c, mr.UNSUBACK).packet_id, 2)
        c.send(pubrec(m.packet_id))
        r = self.recv(c, mr.PUBREL)
        self.assertEqual(r.packet_id, m.packet_id)
        self.assertIn(r.reason, PUBREL_CODES)
        c.send(pubcomp(m.packet_id))
        self.expect_nothing(c, 0.5)

    def test_several_filters_in_one_unsubscribe(self):
        """An UNSUBSCRIBE with several filters is processed as a sequence and
        answered by one UNSUBACK with a Reason Code per filter, in order
        [MQTT-3.10.4-6] [MQTT-3.11.3-1] [MQTT-3.11.3-2]."""
        t = self.topic()
        c = self.connect()
        c.send(subscribe(1, [(t + "/a", 0), (t + "/c", 0)]))
        self.recv(c, mr.SUBACK)
        c.send(unsubscribe(7, [t + "/a", t + "/b", t + "/c"]))
        p = self.recv(c, mr.UNSUBACK)
        self.assertEqual(p.packet_id, 7)
        self.assertEqual(p.reasons, [0x00, 0x11, 0x00])
        self.expect_nothing(c, 0.3)
        pub = self.connect(self.cid("p"))
        pub.send(publish(t + "/a", b"a") + publish(t + "/c", b"c"))
        self.expect_nothing(c, 0.7)


if __name__ == "__main__":
    main()
