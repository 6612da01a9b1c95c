"""MQTT 5.0 conformance: PUBLISH and its acknowledgements, QoS protocol flows,
retained messages, forwarded properties, message expiry and ordering
(sections 2.2.1, 3.3-3.7, 4.3, 4.6)."""
import time

import mqttraw as mr
from mqttraw import (publish, subscribe, puback, pubrec, pubrel, pubcomp,
                     pingreq, disconnect, raw, utf8)
from raw_extra import (BrokerTest, PUBACK_CODES, PUBREC_CODES,
                       PUBREL_CODES, PUBCOMP_CODES, skip_on_mosquitto, opts, main)


class PublishTest(BrokerTest):

    def test_qos0_sent_without_packet_id_and_dup_0(self):
        """A QoS 0 PUBLISH from the Server has no Packet Identifier and DUP 0,
        also when it downgrades a QoS 1 PUBLISH that had DUP 1
        [MQTT-2.2.1-2] [MQTT-3.3.1-2] [MQTT-4.3.1-1]."""
        t = self.topic()
        s = self.subscriber(t, 0)
        p = self.connect(self.cid("p"))
        p.send(publish(t, b"abc", qos=0))
        p.send(publish(t, b"def", qos=1, dup=True, packet_id=0x0102))
        for want in (b"abc", b"def"):
            m = self.recv(s, mr.PUBLISH)
            self.assertIsNone(m.decode_error, m)
            self.assertEqual((m.qos, m.dup, m.payload), (0, False, want), m)
            self.assertEqual(m.body[:len(utf8(t))], utf8(t))
            self.assertEqual(m.body[-3:], want)

    def test_server_assigns_unused_packet_ids(self):
        """Unacknowledged QoS 1 and QoS 2 PUBLISHes from the Server carry
        distinct non-zero Packet Identifiers [MQTT-2.2.1-4] [MQTT-4.3.2-1]
        [MQTT-4.3.3-1]."""
        t = self.topic()
        s = self.subscriber(t, 2)
        p = self.connect(self.cid("p"))
        for i in range(6):
            if i % 2:
                self.publish_q2(p, t, b"%d" % i, packet_id=i + 1)
            else:
                self.publish_q1(p, t, b"%d" % i, packet_id=i + 1)
        got = [self.recv(s, mr.PUBLISH) for _ in range(6)]
        ids = [m.packet_id for m in got]
        self.assertNotIn(0, ids)
        self.assertEqual(len(set(ids)), 6, ids)
        # after completing them, new ones are again not in use
        for m in got:
            s.send(puback(m.packet_id) if m.qos == 1 else pubrec(m.packet_id))
        rels = [self.recv(s, mr.PUBREL) for m in got if m.qos == 2]
        for r in rels:
            s.send(pubcomp(r.packet_id))
        for i in range(4):
            p.send(publish(t, b"n%d" % i, qos=1, packet_id=20 + i))
        more = [self.recv(s, mr.PUBLISH) for _ in range(4)]
        ids2 = [m.packet_id for m in more]
        self.assertNotIn(0, ids2)
        self.assertEqual(len(set(ids2)), 4, ids2)

    def test_acknowledgements_carry_packet_id(self):
        """PUBACK, PUBREC and PUBCOMP carry the Packet Identifier of the
        PUBLISH / PUBREL they answer [MQTT-2.2.1-5] [MQTT-4.3.2-4]
        [MQTT-4.3.3-8] [MQTT-4.3.3-11]."""
        c = self.connect()
        t = self.topic()
        for pid in (1, 0x1234, 0x7FFF, 0xFFFF):
            a = self.publish_q1(c, t, b"x", packet_id=pid)
            self.assertEqual(a.packet_id, pid)
            rec, comp = self.publish_q2(c, t, b"y", packet_id=pid)
            self.assertEqual((rec.packet_id, comp.packet_id), (pid, pid))

    def test_response_depends_on_qos(self):
        """QoS 0 gets no answer, QoS 1 a PUBACK, QoS 2 a PUBREC
        [MQTT-3.3.4-1]."""
        c = self.connect()
        t = self.topic()
        c.send(publish(t, b"0") + pingreq())
        self.recv(c, mr.PINGRESP)
        c.send(publish(t, b"1", qos=1, packet_id=5))
        self.assertEqual(self.recv(c, mr.PUBACK).packet_id, 5)
        c.send(publish(t, b"2", qos=2, packet_id=6))
        self.assertEqual(self.recv(c, mr.PUBREC).packet_id, 6)

    def test_ack_reason_codes(self):
        """PUBACK, PUBREC and PUBCOMP use their own Reason Codes, with and
        without subscribers, and for a PUBREL of an unknown Packet Identifier
        [MQTT-3.4.2-1] [MQTT-3.5.2-1] [MQTT-3.7.2-1]."""
        t = self.topic()
        c = self.connect()
        self.assertIn(self.publish_q1(c, t + "/none", b"x", packet_id=1).reason, {0x00, 0x10})
        rec, comp = self.publish_q2(c, t + "/none", b"x", packet_id=2)
        self.assertIn(rec.reason, {0x00, 0x10})
        self.assertEqual(comp.reason, 0)
        self.subscribe(c, t + "/some", 2)
        a = self.publish_q1(c, t + "/some", b"x", packet_id=3)
        self.assertEqual(a.reason, 0)
        c.send(pubrel(999))
        comp = c.recv_type(mr.PUBCOMP)
        self.assertEqual(comp.packet_id, 999)
        self.assertIn(comp.reason, PUBCOMP_CODES)
        for p in [a, rec] + c.skipped:
            if p.type == mr.PUBACK:
                self.assertIn(p.reason, PUBACK_CODES)
            if p.type == mr.PUBREC:
                self.assertIn(p.reason, PUBREC_CODES)

    def test_qos1_delivery_to_subscriber(self):
        """The Server sends a new QoS 1 message with DUP 0 and a Packet
        Identifier, and does not re-send it on the same connection while it
        is unacknowledged [MQTT-4.3.2-2] [MQTT-4.3.2-3] [MQTT-4.4.0-1]."""
        t = self.topic()
        s = self.subscriber(t, 1)
        p = self.connect(self.cid("p"))
        self.publish_q1(p, t, b"m")
        m = self.recv(s, mr.PUBLISH)
        self.assertEqual((m.qos, m.dup), (1, False))
        self.assertNotEqual(m.packet_id, 0)
        self.expect_nothing(s, 1.5)
        s.send(puback(m.packet_id))
        self.expect_nothing(s, 0.5)

    def test_qos2_delivery_to_subscriber(self):
        """QoS 2 to a subscriber: PUBLISH with DUP 0, after PUBREC a PUBREL
        with the same Packet Identifier and a PUBREL Reason Code, nothing
        re-sent while waiting for PUBCOMP [MQTT-4.3.3-2] [MQTT-4.3.3-3]
        [MQTT-4.3.3-4] [MQTT-4.3.3-5] [MQTT-3.6.2-1] [MQTT-2.2.1-5]."""
        t = self.topic()
        s = self.subscriber(t, 2)
        p = self.connect(self.cid("p"))
        self.publish_q2(p, t, b"m")
        m = self.recv(s, mr.PUBLISH)
        self.assertEqual((m.qos, m.dup), (2, False))
        self.expect_nothing(s, 1.0)
        s.send(pubrec(m.packet_id))
        r = self.recv(s, mr.PUBREL)
        self.assertEqual(r.flags, 0x2)
        self.assertEqual(r.packet_id, m.packet_id)
        self.assertIn(r.reason, PUBREL_CODES)
        self.expect_nothing(s, 1.0)
        s.send(pubcomp(m.packet_id))
        self.expect_nothing(s, 0.5)

    def test_qos1_same_packet_id_is_new_message(self):
        """After PUBACK, a PUBLISH reusing the Packet Identifier is a new
        message, even with DUP 1 [MQTT-4.3.2-5]."""
        t = self.topic()
        s = self.subscriber(t, 1)
        p = self.connect(self.cid("p"))
        self.publish_q1(p, t, b"first", packet_id=9)
        self.publish_q1(p, t, b"second", packet_id=9, dup=True)
        got = [self.recv(s, mr.PUBLISH).payload for _ in range(2)]
        self.assertEqual(got, [b"first", b"second"])

    def test_qos2_duplicate_before_pubrel(self):
        """Until PUBREL, a repeated QoS 2 PUBLISH is answered with PUBREC and
        not delivered twice [MQTT-4.3.3-10]."""
        t = self.topic()
        s = self.subscriber(t, 2)
        p = self.connect(self.cid("p"))
        p.send(publish(t, b"once", qos=2, packet_id=4))
        self.assertEqual(self.recv(p, mr.PUBREC).packet_id, 4)
        p.send(publish(t, b"once", qos=2, packet_id=4, dup=True))
        self.assertEqual(self.recv(p, mr.PUBREC).packet_id, 4)
        p.send(pubrel(4))
        self.assertEqual(self.recv(p, mr.PUBCOMP).packet_id, 4)
        got = self.collect(s)
        for m in got:
            if m.qos == 2:
                s.send(pubrec(m.packet_id))
        self.assertEqual([m.payload for m in got if m.type == mr.PUBLISH], [b"once"])

    def test_qos2_after_pubcomp_is_new_message(self):
        """After PUBCOMP, a QoS 2 PUBLISH reusing the Packet Identifier is a
        new message [MQTT-4.3.3-12]."""
        t = self.topic()
        s = self.subscriber(t, 1)
        p = self.connect(self.cid("p"))
        self.publish_q2(p, t, b"one", packet_id=8)
        self.publish_q2(p, t, b"two", packet_id=8)
        got = []
        for _ in range(2):
            m = self.recv(s, mr.PUBLISH)
            s.send(puback(m.packet_id))
            got.append(m.payload)
        self.assertEqual(got, [b"one", b"two"])

    def test_qos2_after_pubrec_error_is_new_message(self):
        """After a PUBREC >= 0x80, a PUBLISH reusing the Packet Identifier is a
        new message [MQTT-4.3.3-9]."""
        t = self.topic()
        s = self.subscriber(t, 1)
        p = self.connect(self.cid("p"))
        refused = None
        for topic, props, payload in (("$SYS/conformance/" + self.cid(), None, b"x"),
                                      (t + "/pfi", {mr.PAYLOAD_FORMAT_INDICATOR: 1}, b"\xff\xfe")):
            p.send(publish(topic, payload, qos=2, packet_id=11, props=props))
            rec = self.recv(p, mr.PUBREC)
            if rec.reason >= 0x80:
                refused = rec
                break
            p.send(pubrel(11))
            self.recv(p, mr.PUBCOMP)
        if refused is None:
            self.skipTest("the server accepted every PUBLISH this test can make it refuse")
        p.send(publish(t, b"new", qos=2, packet_id=11))
        rec = self.recv(p, mr.PUBREC)
        self.assertLess(rec.reason, 0x80, rec)
        p.send(pubrel(11))
        self.assertEqual(self.recv(p, mr.PUBCOMP).reason, 0)
        self.assertEqual(self.recv(s, mr.PUBLISH).payload, b"new")

    def test_qos2_acknowledged_after_expiry(self):
        """A QoS 2 exchange continues (PUBREL gets PUBCOMP) after the
        message's expiry interval passed [MQTT-4.3.3-13]."""
        p = self.connect()
        p.send(publish(self.topic(), b"x", qos=2, packet_id=3,
                       props={mr.MESSAGE_EXPIRY_INTERVAL: 1}))
        self.recv(p, mr.PUBREC)
        time.sleep(2.2)
        p.send(pubrel(3))
        c = self.recv(p, mr.PUBCOMP)
        self.assertEqual((c.packet_id, c.reason), (3, 0))

    def test_dup_not_propagated(self):
        """The DUP flag of an incoming PUBLISH is not copied to subscribers
        [MQTT-3.3.1-3]."""
        t = self.topic()
        s = self.subscriber(t, 2)
        p = self.connect(self.cid("p"))
        self.publish_q1(p, t, b"a", packet_id=2, dup=True)
        p.send(publish(t, b"b", qos=2, packet_id=3, dup=True))
        self.recv(p, mr.PUBREC)
        p.send(pubrel(3))
        for want in (b"a", b"b"):
            m = self.recv(s, mr.PUBLISH)
            self.assertEqual((m.payload, m.dup), (want, False))
            s.send(puback(m.packet_id) if m.qos == 1 else pubrec(m.packet_id))

    def test_qos_3_is_malformed(self):
        """A PUBLISH with both QoS bits set is a Malformed Packet
        [MQTT-3.3.1-4] [MQTT-4.13.1-1]."""
        c = self.connect()
        c.send(raw(0x36, utf8(self.topic()) + b"\x00\x01\x00x"))
        self.assert_closed(c, reasons={0x81})

    def test_pubrel_reserved_flags(self):
        """A PUBREL whose fixed header flags are not 0010 is malformed: the
        connection is closed [MQTT-3.6.1-1] [MQTT-2.1.3-1]."""
        for first in (0x60, 0x63, 0x6A):
            with self.subTest(first=hex(first)):
                c = self.connect(self.cid("%x" % first))
                c.send(publish(self.topic(), b"x", qos=2, packet_id=1))
                self.recv(c, mr.PUBREC)
                c.send(raw(first, b"\x00\x01"))
                self.assert_closed(c, reasons={0x81})

    def test_wildcard_topic_name_refused(self):
        """A Topic Name with a wildcard is refused: the connection is closed
        [MQTT-3.3.2-2] [MQTT-4.7.0-1] [MQTT-4.13.1-1]."""
        for name in ("+", "a/+", "a/#", "#"):
            with self.subTest(name=name):
                c = self.connect(self.cid(str(len(name))))
                c.send(publish(self.topic() + "/" + name, b"x"))
                self.assert_closed(c, reasons={0x81, 0x82, 0x90})

    def test_empty_topic_without_alias_refused(self):
        """A zero-length Topic Name without a Topic Alias is a Protocol Error
        [MQTT-4.7.3-1] [MQTT-4.13.1-1]."""
        c = self.connect()
        c.send(publish("", b"x"))
        self.assert_closed(c, reasons={0x82, 0x81, 0x90})

    def test_response_topic_must_be_utf8(self):
        """A Response Topic that is not valid UTF-8 is a Malformed Packet
        [MQTT-3.3.2-13]."""
        c = self.connect()
        c.send(publish(self.topic(), b"x", props={mr.RESPONSE_TOPIC: b"r/\xff"}))
        self.assert_closed(c, reasons={0x81, 0x82})

    @skip_on_mosquitto("accepts and forwards a Response Topic containing wildcards")
    def test_response_topic_without_wildcards(self):
        """A Response Topic containing a wildcard is refused [MQTT-3.3.2-14]."""
        for rt in ("r/+", "r/#"):
            with self.subTest(rt=rt):
                c = self.connect(self.cid(str(len(rt)) + rt[-1].replace("+", "p").replace("#", "h")))
                c.send(publish(self.topic(), b"x", qos=1, props={mr.RESPONSE_TOPIC: rt}))
                self.assert_closed(c, reasons={0x82, 0x81, 0x90})

    def test_content_type_must_be_utf8(self):
        """A Content Type that is not valid UTF-8 is a Malformed Packet
        [MQTT-3.3.2-19]."""
        c = self.connect()
        c.send(publish(self.topic(), b"x", props={mr.CONTENT_TYPE: b"text/\xc3"}))
        self.assert_closed(c, reasons={0x81, 0x82})

    def test_properties_forwarded_unaltered(self):
        """Payload Format Indicator, Response Topic, Correlation Data, User
        Properties (all of them, in order) and Content Type reach every
        subscriber unaltered, at every QoS [MQTT-3.3.2-4] [MQTT-3.3.2-15]
        [MQTT-3.3.2-16] [MQTT-3.3.2-17] [MQTT-3.3.2-18] [MQTT-3.3.2-20]."""
        t = self.topic()
        subs = [self.subscriber(t, q, client_id=self.cid("s%d" % q)) for q in (0, 1, 2)]
        p = self.connect(self.cid("p"))
        users = [("z", "1"), ("a", "2"), ("z", "0"), ("m", ""), ("\u00e9t\u00e9", "\u2603")]
        props = [(mr.PAYLOAD_FORMAT_INDICATOR, 1), (mr.RESPONSE_TOPIC, t + "/reply/\u00fc"),
                 (mr.CORRELATION_DATA, b"\x00\x01\xff\x00")] + \
                [(mr.USER_PROPERTY, u) for u in users] + \
                [(mr.CONTENT_TYPE, "application/x-test; charset=utf-8")]
        p.send(publish(t, "\u00fcber".encode(), qos=0, props=props))
        self.publish_q1(p, t, "\u00fcber".encode(), packet_id=1, props=props)
        self.publish_q2(p, t, "\u00fcber".encode(), packet_id=2, props=props)
        for s in subs:
            for _ in range(3):
                m = self.recv(s, mr.PUBLISH)
                if m.qos == 1:
                    s.send(puback(m.packet_id))
                elif m.qos == 2:
                    s.send(pubrec(m.packet_id))
                self.assertEqual(m.props.get(mr.PAYLOAD_FORMAT_INDICATOR), 1, m)
                self.assertEqual(m.props.get(mr.RESPONSE_TOPIC), t + "/reply/\u00fc")
                self.assertEqual(m.props.get(mr.CORRELATION_DATA), b"\x00\x01\xff\x00")
                self.assertEqual(m.props.get(mr.USER_PROPERTY), users)
                self.assertEqual(m.props.get(mr.CONTENT_TYPE), "application/x-test; charset=utf-8")
                self.assertEqual(m.payload, "\u00fcber".encode())

    def test_properties_of_retained_message(self):
        """A retained message keeps its properties, User Properties in order
        [MQTT-3.3.2-4] [MQTT-3.3.2-17] [MQTT-3.3.2-18] [MQTT-3.3.2-20]."""
        t = self.topic()
        p = self.connect(self.cid("p"))
        users = [("b", "1"), ("a", "2"), ("b", "3")]
        self.publish_q1(p, t, b"r", retain=True,
                        props=[(mr.PAYLOAD_FORMAT_INDICATOR, 0), (mr.CONTENT_TYPE, "c/t")] +
                        [(mr.USER_PROPERTY, u) for u in users])
        s = self.subscriber(t, 1)
        m = self.recv(s, mr.PUBLISH)
        self.assertTrue(m.retain)
        self.assertEqual(m.props.get(mr.USER_PROPERTY), users)
        self.assertEqual(m.props.get(mr.CONTENT_TYPE), "c/t")
        self.assertIn(m.props.get(mr.PAYLOAD_FORMAT_INDICATOR, 0), (0,))
        p.send(publish(t, b"", retain=True))

    def test_overlapping_subscriptions_maximum_qos(self):
        """Overlapping subscriptions of one Client: the message is delivered
        at the maximum QoS of the matching subscriptions [MQTT-3.3.4-2]."""
        t = self.topic()
        s = self.connect()
        s.send(subscribe(1, [(t + "/+", 1), (t + "/#", 2), (t + "/x", 0)]))
        granted = self.recv(s, mr.SUBACK).reasons
        self.assertTrue(all(g < 0x80 for g in granted), granted)
        p = self.connect(self.cid("p"))
        self.publish_q2(p, t + "/x", b"m")
        got = self.collect(s)
        qos = [m.qos for m in got if m.type == mr.PUBLISH]
        self.assertTrue(qos, "nothing delivered")
        self.assertEqual(max(qos), max(granted), got)
        for m in got:
            if m.qos == 2:
                s.send(pubrec(m.packet_id))
            elif m.qos == 1:
                s.send(puback(m.packet_id))

    def test_overlapping_subscription_identifiers(self):
        """Overlapping subscriptions with Subscription Identifiers: one copy
        carries all of them, or each copy carries its own [MQTT-3.3.4-3]
        [MQTT-3.3.4-4] [MQTT-3.3.4-5]."""
        t = self.topic()
        s = self.connect()
        self.subscribe(s, t + "/+", 1, packet_id=1, props={mr.SUBSCRIPTION_IDENTIFIER: 11})
        self.subscribe(s, t + "/#", 1, packet_id=2, props={mr.SUBSCRIPTION_IDENTIFIER: 268435455})
        self.subscribe(s, t + "/x", 1, packet_id=3)        # no identifier
        p = self.connect(self.cid("p"))
        self.publish_q1(p, t + "/x", b"m")
        got = self.publishes(s)
        for m in got:
            s.send(puback(m.packet_id))
        self.assertTrue(got)
        ids = [m.props.get(mr.SUBSCRIPTION_IDENTIFIER, []) for m in got]
        if len(got) == 1:
            self.assertEqual(sorted(ids[0]), [11, 268435455])
        else:
            self.assertEqual(len(got), 3, got)
            self.assertEqual(sorted(map(sorted, ids)), [[], [11], [268435455]])

    def test_subscription_identifier_sent(self):
        """A message matching a subscription made with a Subscription
        Identifier carries that identifier [MQTT-3.3.4-3]."""
        t = self.topic()
        s = self.connect()
        self.subscribe(s, t, 0, props={mr.SUBSCRIPTION_IDENTIFIER: 300})
        p = self.connect(self.cid("p"))
        p.send(publish(t, b"m"))
        self.assertEqual(self.recv(s, mr.PUBLISH).props.get(mr.SUBSCRIPTION_IDENTIFIER), [300])

    def test_messages_forwarded_in_order(self):
        """Messages of one publisher on one topic reach a subscriber in
        publication order, per QoS [MQTT-4.6.0-5] [MQTT-4.6.0-6]."""
        t = self.topic()
        s = self.subscriber(t, 2)
        p = self.connect(self.cid("p"))
        n = 30
        batch = b"".join(publish(t, b"q%d-%03d" % (i % 3, i), qos=i % 3,
                                 packet_id=(i + 1) if i % 3 else None) for i in range(n))
        p.send(batch)
        acked = 0
        while acked < len(range(1, n, 3)) + len(range(2, n, 3)):
            a = self.recv(p)
            if a.type == mr.PUBREC:
                p.send(pubrel(a.packet_id))
            elif a.type in (mr.PUBACK, mr.PUBCOMP):
                acked += 1
        got = []
        while len(got) < n:
            m = self.recv(s)
            if m.type == mr.PUBLISH:
                got.append(m)
                if m.qos == 1:
                    s.send(puback(m.packet_id))
                elif m.qos == 2:
                    s.send(pubrec(m.packet_id))
            elif m.type == mr.PUBREL:
                s.send(pubcomp(m.packet_id))
        for q in (0, 1, 2):
            seq = [m.payload for m in got if m.payload.startswith(b"q%d" % q)]
            self.assertEqual(seq, sorted(seq), "QoS %d out of order" % q)
            self.assertEqual(len(seq), len(range(q, n, 3)))


class RetainTest(BrokerTest):

    def test_retained_message_stored_and_replaced(self):
        """RETAIN 1 replaces the retained message of the topic; new
        subscribers get the last one with RETAIN 1 [MQTT-3.3.1-5]."""
        t = self.topic()
        p = self.connect()
        self.publish_q1(p, t, b"one", retain=True, packet_id=1)
        self.publish_q1(p, t, b"two", retain=True, packet_id=2)
        s = self.subscriber(t, 1, client_id=self.cid("s"))
        m = self.recv(s, mr.PUBLISH)
        self.assertEqual((m.payload, m.retain), (b"two", True))
        s.send(puback(m.packet_id))
        self.expect_nothing(s, 0.5)
        p.send(publish(t, b"", retain=True))

    def test_empty_retained_message_removes(self):
        """An empty retained PUBLISH is delivered normally, removes the
        retained message and is not stored itself [MQTT-3.3.1-6]
        [MQTT-3.3.1-7]."""
        t = self.topic()
        p = self.connect()
        self.publish_q1(p, t, b"keep", retain=True, packet_id=1)
        live = self.subscriber(t, 0, client_id=self.cid("l"))
        self.assertEqual(self.recv(live, mr.PUBLISH).payload, b"keep")
        self.publish_q1(p, t, b"", retain=True, packet_id=2)
        m = self.recv(live, mr.PUBLISH)
        self.assertEqual(m.payload, b"")
        s = self.subscriber(t, 1, client_id=self.cid("s"))
        self.expect_nothing(s, 1.0)
        # an empty retained message on a topic without one stores nothing
        self.publish_q1(p, t + "/e", b"", retain=True, packet_id=3)
        s2 = self.subscriber(t + "/e", 1, client_id=self.cid("s2"))
        self.expect_nothing(s2, 0.5)

    def test_non_retained_does_not_touch_retained(self):
        """RETAIN 0 neither stores the message nor removes or replaces the
        retained one [MQTT-3.3.1-8]."""
        t = self.topic()
        p = self.connect()
        self.publish_q1(p, t, b"retained", retain=True, packet_id=1)
        self.publish_q1(p, t, b"plain", packet_id=2)
        self.publish_q1(p, t + "/n", b"plain", packet_id=3)
        s = self.connect(self.cid("s"))
        s.send(subscribe(1, [(t, 1), (t + "/n", 1)]))
        self.recv(s, mr.SUBACK)
        got = self.collect(s)
        self.assertEqual([m.payload for m in got if m.type == mr.PUBLISH], [b"retained"])
        p.send(publish(t, b"", retain=True))

    def test_retain_handling(self):
        """Retain Handling 0 sends retained messages at every subscribe, 1
        only when the subscription is new, 2 never [MQTT-3.3.1-9]
        [MQTT-3.3.1-10] [MQTT-3.3.1-11] [MQTT-3.8.4-4]."""
        t = self.topic()
        p = self.connect()
        self.publish_q1(p, t + "/a", b"ra", retain=True, packet_id=1)
        self.publish_q1(p, t + "/b", b"rb", retain=True, packet_id=2)
        for rh, first, again in ((0, 2, 2), (1, 2, 0), (2, 0, 0)):
            with self.subTest(rh=rh):
                s = self.connect(self.cid("rh%d" % rh))
                for expect in (first, again):
                    s.send(subscribe(1, [(t + "/+", opts(1, rh=rh))]))
                    self.recv(s, mr.SUBACK)
                    got = self.publishes(s, 0.7, 5.0 if expect else 0.7)
                    for m in got:
                        s.send(puback(m.packet_id))
                        self.assertTrue(m.retain, m)
                    self.assertEqual(sorted(m.payload for m in got), [b"ra", b"rb"][:expect])
        p.send(publish(t + "/a", b"", retain=True) + publish(t + "/b", b"", retain=True))

    def test_retain_as_published(self):
        """Retain As Published 0 forwards with RETAIN 0, 1 keeps the RETAIN
        flag; retained messages sent at subscribe have RETAIN 1 either way
        [MQTT-3.3.1-12] [MQTT-3.3.1-13]."""
        t = self.topic()
        p = self.connect()
        self.publish_q1(p, t, b"old", retain=True, packet_id=1)
        s0 = self.connect(self.cid("r0"))
        s1 = self.connect(self.cid("r1"))
        for s, rap in ((s0, False), (s1, True)):
            s.send(subscribe(1, [(t, opts(0, rap=rap))]))
            self.recv(s, mr.SUBACK)
            m = self.recv(s, mr.PUBLISH)
            self.assertEqual((m.payload, m.retain), (b"old", True))
        self.publish_q1(p, t, b"new", retain=True, packet_id=2)
        self.publish_q1(p, t, b"plain", packet_id=3)
        for s, rap in ((s0, False), (s1, True)):
            a = self.recv(s, mr.PUBLISH)
            b = self.recv(s, mr.PUBLISH)
            self.assertEqual((a.payload, a.retain), (b"new", rap))
            self.assertEqual((b.payload, b.retain), (b"plain", False))
        p.send(publish(t, b"", retain=True))


class MessageExpiryTest(BrokerTest):

    def _offline_subscriber(self, t, qos=1):
        cid = self.cid("s")
        s = self.connect(cid, props={mr.SESSION_EXPIRY_INTERVAL: 60})
        self.subscribe(s, t, qos)
        s.send(disconnect(0))
        self.assertTrue(s.expect_closed())
        return cid

    def _reconnect(self, cid):
        s = self.connect(cid, clean=False, props={mr.SESSION_EXPIRY_INTERVAL: 0})
        self.assertTrue(s.connack.session_present)
        return s

    def test_expired_message_not_delivered(self):
        """A message whose Message Expiry Interval passes while the
        subscriber is away is not delivered; one without expiry is
        [MQTT-3.3.2-5]."""
        t = self.topic()
        cid = self._offline_subscriber(t)
        p = self.connect(self.cid("p"))
        self.publish_q1(p, t, b"short", packet_id=1, props={mr.MESSAGE_EXPIRY_INTERVAL: 1})
        self.publish_q1(p, t, b"forever", packet_id=2)
        time.sleep(2.2)
        s = self._reconnect(cid)
        got = [m.payload for m in self.publishes(s)]
        self.assertEqual(got, [b"forever"])

    def test_expiry_interval_decremented(self):
        """The forwarded Message Expiry Interval is the received one minus the
        time the message waited in the Server, for queued and retained
        messages [MQTT-3.3.2-6] [MQTT-3.3.2-5]."""
        t = self.topic()
        cid = self._offline_subscriber(t + "/q")
        p = self.connect(self.cid("p"))
        self.publish_q1(p, t + "/q", b"q", packet_id=1, props={mr.MESSAGE_EXPIRY_INTERVAL: 30})
        self.publish_q1(p, t + "/r", b"r", packet_id=2, retain=True,
                        props={mr.MESSAGE_EXPIRY_INTERVAL: 30})
        self.publish_q1(p, t + "/gone", b"g", packet_id=3, retain=True,
                        props={mr.MESSAGE_EXPIRY_INTERVAL: 1})
        time.sleep(2.5)
        s = self._reconnect(cid)
        m = self.recv(s, mr.PUBLISH)
        self.assertEqual(m.payload, b"q")
        self.assertLessEqual(m.props.get(mr.MESSAGE_EXPIRY_INTERVAL), 28, m)
        self.assertGreater(m.props.get(mr.MESSAGE_EXPIRY_INTERVAL), 0, m)
        s.send(puback(m.packet_id))
        r = self.subscriber(t + "/+", 1, client_id=self.cid("r"))
        got = self.publishes(r)
        self.assertEqual([x.payload for x in got], [b"r"], "expired retained message sent")
        self.assertLessEqual(got[0].props.get(mr.MESSAGE_EXPIRY_INTERVAL), 28)
        p.send(publish(t + "/r", b"", retain=True))

    def test_live_message_keeps_expiry(self):
        """A message forwarded at once carries a Message Expiry Interval not
        above the received one; without one, none [MQTT-3.3.2-6]."""
        t = self.topic()
        s = self.subscriber(t, 0)
        p = self.connect(self.cid("p"))
        p.send(publish(t, b"e", props={mr.MESSAGE_EXPIRY_INTERVAL: 100}))
        p.send(publish(t, b"n"))
        m = self.recv(s, mr.PUBLISH)
        self.assertIn(m.props.get(mr.MESSAGE_EXPIRY_INTERVAL), (99, 100))
        self.assertNotIn(mr.MESSAGE_EXPIRY_INTERVAL, self.recv(s, mr.PUBLISH).props)


if __name__ == "__main__":
    main()
