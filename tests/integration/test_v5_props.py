"""MQTT 5 features: topic aliases, subscription identifiers, No Local,
request/response properties, user properties, message expiry, Receive Maximum,
Maximum Packet Size."""
import time
import unittest

from mqtt_util import (CONTENT_TYPE, MAXIMUM_PACKET_SIZE, PUBACK, PUBLISH, RECEIVE_MAXIMUM,
                       SUBSCRIPTION_ID, TOPIC_ALIAS, TOPIC_ALIAS_MAXIMUM, USER_PROPERTY,
                       MQTTv5, MQTTv311, BrokerTest, PacketTypes, disconnect_packet, props,
                       skip_mosquitto, uid)


class TopicAliasTest(BrokerTest):

    def test_client_to_server_alias(self):
        t = "alias/" + uid()
        s = self.client(version=MQTTv311)
        s.subscribe(t, 1)
        r = self.raw(version=5)
        self.assertGreater(r.connack.props.get(TOPIC_ALIAS_MAXIMUM, 0), 0)
        r.publish(t, b"first", qos=1, props={TOPIC_ALIAS: 1})
        r.publish("", b"second", qos=1, props={TOPIC_ALIAS: 1})
        r.publish("", b"third", qos=0, props={TOPIC_ALIAS: 1})
        msgs = s.wait_messages(3)
        self.assertEqual([(m.topic, m.payload) for m in msgs],
                         [(t, b"first"), (t, b"second"), (t, b"third")])

    def test_alias_remapped(self):
        t1, t2 = "alias/" + uid(), "alias/" + uid()
        s = self.client()
        s.subscribe([(t1, 1), (t2, 1)])
        r = self.raw(version=5)
        r.publish(t1, b"a", qos=1, props={TOPIC_ALIAS: 1})
        r.publish(t2, b"b", qos=1, props={TOPIC_ALIAS: 1})
        r.publish("", b"c", qos=1, props={TOPIC_ALIAS: 1})
        self.assertEqual([(m.topic, m.payload) for m in s.wait_messages(3)],
                         [(t1, b"a"), (t2, b"b"), (t2, b"c")])

    def test_unknown_alias_with_empty_topic_is_protocol_error(self):
        r = self.raw(version=5)
        r.publish("", b"x", qos=1, props={TOPIC_ALIAS: 5}, complete=False)
        d = disconnect_packet(r.expect_closed())
        if d is not None:
            self.assertEqual(d.rc, 0x82)

    def test_server_aliases_only_when_announced(self):
        """Without Topic Alias Maximum the broker must not use aliases; with it,
        it may, and every delivery resolves to the right topic."""
        t = "salias/" + uid()
        p = self.client()
        plain = self.raw(version=5)
        plain.subscribe([(t, 1)])
        al = self.raw(version=5, props={TOPIC_ALIAS_MAXIMUM: 4})
        al.subscribe([(t, 1)])
        pa = self.client(version=MQTTv5,
                         connect_props=props(PacketTypes.CONNECT, TopicAliasMaximum=4))
        pa.subscribe(t, 1)
        for i in range(3):
            p.publish(t, b"%d" % i, qos=1)
        for x in plain.read_publishes(3):
            self.assertNotIn(TOPIC_ALIAS, x.props)
            self.assertEqual(x.topic, t)
            plain.ack_publish(x)
        for i, x in enumerate(al.read_publishes(3)):
            # Raw.read resolves an alias with an empty topic through the
            # mapping set by an earlier PUBLISH on this connection; an unknown
            # alias would resolve to "" and fail here.
            self.assertEqual((x.topic, x.payload), (t, b"%d" % i))
            if TOPIC_ALIAS in x.props:
                a = x.props[TOPIC_ALIAS]
                self.assertTrue(1 <= a <= 4, "alias outside 1..our maximum: %d" % a)
            al.ack_publish(x)
        self.assertEqual([(m.topic, m.payload) for m in pa.wait_messages(3)],
                         [(t, b"0"), (t, b"1"), (t, b"2")])


class TopicAliasLimitTest(BrokerTest):
    config = {"mqtt.max_topic_alias": 2}

    def test_connack_topic_alias_maximum(self):
        r = self.raw(version=5)
        self.assertEqual(r.connack.props.get(TOPIC_ALIAS_MAXIMUM), 2)

    def test_alias_above_maximum_disconnects_0x94(self):
        r = self.raw(version=5)
        r.publish("a/" + uid(), b"x", qos=1, props={TOPIC_ALIAS: 3}, complete=False)
        got = r.expect_closed()
        d = disconnect_packet(got)
        self.assertIsNotNone(d, "no DISCONNECT: %r" % got)
        self.assertEqual(d.rc, 0x94)

    @skip_mosquitto("2.0.11 answers Topic Alias 0 with DISCONNECT 0x81 Malformed Packet "
                    "instead of 0x94 Topic Alias invalid")
    def test_alias_zero_disconnects(self):
        r = self.raw(version=5)
        r.publish("a/" + uid(), b"x", qos=1, props={TOPIC_ALIAS: 0}, complete=False)
        got = r.expect_closed()
        d = disconnect_packet(got)
        self.assertIsNotNone(d, "no DISCONNECT: %r" % got)
        self.assertIn(d.rc, (0x94, 0x82))

    def test_alias_within_maximum(self):
        t = "alim/" + uid()
        s = self.client()
        s.subscribe(t, 1)
        r = self.raw(version=5)
        r.publish(t, b"1", qos=1, props={TOPIC_ALIAS: 2})
        r.publish("", b"2", qos=1, props={TOPIC_ALIAS: 2})
        self.assertEqual([m.topic for m in s.wait_messages(2)], [t, t])


class SubscriptionTest(BrokerTest):

    def test_subscription_identifier(self):
        base = "subid/" + uid()
        r = self.raw(version=5)
        r.subscribe([(base + "/#", 1)], props={SUBSCRIPTION_ID: 5})
        r.subscribe([(base + "/+", 1)], props={SUBSCRIPTION_ID: 700000})
        r.subscribe([(base + "/a/b", 1)])  # no identifier
        p = self.client()
        p.publish(base + "/a", b"two", qos=1)
        got = self.sync(r, p, base + "/x")
        # The marker itself matched /# and /+ (it is acknowledged by sync).
        copies = [x for x in got if x.payload == b"two"]
        self.assertGreaterEqual(len(copies), 1)
        ids = []
        for x in copies:
            self.assertTrue(x.props.get(SUBSCRIPTION_ID), "copy without identifier: %r" % x)
            ids += x.props[SUBSCRIPTION_ID]
        self.assertEqual(sorted(ids), [5, 700000])
        p.publish(base + "/a/b", b"one", qos=1)
        got = self.sync(r, p, base + "/x")
        ids = sorted(i for x in got if x.payload == b"one" for i in x.props.get(SUBSCRIPTION_ID, []))
        self.assertEqual(ids, [5])

    def test_subscription_identifier_paho(self):
        t = "subidp/" + uid()
        s = self.client(version=MQTTv5)
        s.subscribe(t, 1, properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=42))
        self.client().publish(t, b"x", qos=1)
        self.assertEqual(s.wait_messages(1)[0].prop("SubscriptionIdentifier"), [42])

    def test_no_local(self):
        t = "nolocal/" + uid()
        me = self.client(version=MQTTv5)
        me.subscribe(t, 1, noLocal=True)
        other = self.client(version=MQTTv5)
        other.subscribe(t, 1)
        me.publish(t, b"mine", qos=1)
        other.wait_payload(b"mine")
        other.publish(t, b"theirs", qos=1)
        me.wait_payload(b"theirs")
        self.assertEqual([m.payload for m in me.messages], [b"theirs"])

    def test_subscription_option_qos_and_update(self):
        t = "subq/" + uid()
        s = self.client(version=MQTTv5)
        self.assertEqual(s.subscribe(t, 0), [0])
        p = self.client()
        p.publish(t, b"a", qos=2)
        self.assertEqual(s.wait_payload(b"a").qos, 0)
        # Re-subscribing replaces the subscription (one copy, new QoS).
        self.assertEqual(s.subscribe(t, 2), [2])
        p.publish(t, b"b", qos=2)
        self.assertEqual(s.wait_payload(b"b").qos, 2)
        self.sync(s, p, t, qos=2)
        self.assertEqual(len([m for m in s.messages if m.payload == b"b"]), 1)

    def test_unsubscribe(self):
        t = "unsub/" + uid()
        s = self.client(version=MQTTv5)
        s.subscribe([(t, 1), (t + "/m", 1)])
        self.assertEqual(s.unsubscribe(t), [0])
        p = self.client()
        p.publish(t, b"x", qos=1)
        self.assertEqual([m.payload for m in self.sync(s, p, t + "/m")], [])

    def test_unsuback_no_subscription_existed(self):
        r = self.raw(version=5)
        r.subscribe([("uns/a", 0)])
        ack = r.unsubscribe(["uns/a", "uns/none"])
        self.assertEqual(ack.codes, [0x00, 0x11])

    def test_overlapping_subscriptions_v311_max_qos(self):
        """3.1.1: overlapping subscriptions deliver with the maximum QoS (one
        copy or one per subscription)."""
        t = "ovl/" + uid()
        r = self.raw(version=4)
        r.subscribe([(t + "/#", 0), (t + "/+", 1)])
        p = self.client()
        p.publish(t + "/a", b"x", qos=1)
        got = [x for x in self.sync(r, p, t + "/z") if x.payload == b"x"]
        self.assertIn(len(got), (1, 2))
        self.assertEqual(max(x.qos for x in got), 1)


class PassThroughTest(BrokerTest):

    def test_request_response_properties(self):
        t = "req/" + uid()
        s = self.client(version=MQTTv5)
        s.subscribe(t, 1)
        p = self.client(version=MQTTv5)
        pr = props(PacketTypes.PUBLISH, ResponseTopic="resp/" + uid(),
                   CorrelationData=b"\x00\x01corr\xff")
        p.publish(t, b"ask", qos=1, properties=pr)
        m = s.wait_messages(1)[0]
        self.assertEqual(m.prop("ResponseTopic"), pr.ResponseTopic)
        self.assertEqual(m.prop("CorrelationData"), b"\x00\x01corr\xff")
        # Respond, with the correlation data echoed.
        p.subscribe(pr.ResponseTopic, 1)
        s.publish(m.prop("ResponseTopic"), b"answer", qos=1,
                  properties=props(PacketTypes.PUBLISH, CorrelationData=m.prop("CorrelationData")))
        a = p.wait_payload(b"answer")
        self.assertEqual(a.prop("CorrelationData"), b"\x00\x01corr\xff")

    def test_user_properties_in_order(self):
        t = "up/" + uid()
        s = self.raw(version=5)
        s.subscribe([(t, 1)])
        ups = [("b", "1"), ("a", "2"), ("b", "3"), ("ünï", "cödé"), ("a", "2")]
        r = self.raw(version=5)
        r.publish(t, b"x", qos=1, props={USER_PROPERTY: ups})
        m = s.read_until(PUBLISH)
        self.assertEqual(m.props.get(USER_PROPERTY), ups)

    def test_payload_format_and_content_type(self):
        t = "pf/" + uid()
        s = self.client(version=MQTTv5)
        s.subscribe(t, 1)
        p = self.client(version=MQTTv5)
        p.publish(t, "{\"k\": 1}".encode(), qos=1, properties=props(
            PacketTypes.PUBLISH, PayloadFormatIndicator=1, ContentType="application/json"))
        p.publish(t, b"\xff\x00", qos=1, properties=props(PacketTypes.PUBLISH,
                                                           PayloadFormatIndicator=0))
        a, b = s.wait_messages(2)
        self.assertEqual(a.prop("PayloadFormatIndicator"), 1)
        self.assertEqual(a.prop("ContentType"), "application/json")
        self.assertIn(b.prop("PayloadFormatIndicator"), (0, None))
        self.assertEqual(b.payload, b"\xff\x00")

    def test_properties_dropped_for_v311_subscriber(self):
        t = "pf3/" + uid()
        s = self.raw(version=4)
        s.subscribe([(t, 1)])
        r = self.raw(version=5)
        r.publish(t, b"body", qos=1, props={USER_PROPERTY: [("k", "v")], CONTENT_TYPE: "x/y"})
        m = s.read_until(PUBLISH)
        self.assertEqual((m.topic, m.payload), (t, b"body"))


class MessageExpiryTest(BrokerTest):

    def offline_sub(self, t):
        return self.offline_session(t, 1, version=5, expiry=60)

    def resume(self, cid):
        return self.client(client_id=cid, version=MQTTv5, clean=False,
                           connect_props=props(PacketTypes.CONNECT, SessionExpiryInterval=0))

    def test_expired_message_not_delivered(self):
        t = "mexp/" + uid()
        cid = self.offline_sub(t)
        p = self.client(version=MQTTv5)
        p.publish(t, b"short", qos=1,
                  properties=props(PacketTypes.PUBLISH, MessageExpiryInterval=1))
        p.publish(t, b"long", qos=1,
                  properties=props(PacketTypes.PUBLISH, MessageExpiryInterval=100))
        p.publish(t, b"forever", qos=1)
        time.sleep(2.5)  # expiry is what is tested
        c = self.resume(cid)
        self.assertTrue(c.session_present)
        c.wait_payload(b"forever")
        got = [m.payload for m in self.sync(c, p, t)]
        self.assertEqual(got, [b"long", b"forever"])

    def test_expiry_interval_decremented(self):
        t = "mexpd/" + uid()
        cid = self.offline_sub(t)
        p = self.client(version=MQTTv5)
        p.publish(t, b"x", qos=1, properties=props(PacketTypes.PUBLISH, MessageExpiryInterval=10))
        time.sleep(2.2)
        c = self.resume(cid)
        m = c.wait_messages(1)[0]
        left = m.prop("MessageExpiryInterval")
        self.assertIsNotNone(left)
        self.assertTrue(1 <= left <= 8, "expected the interval minus ~2 s, got %s" % left)

    def test_expiry_forwarded_live(self):
        t = "mexpl/" + uid()
        s = self.client(version=MQTTv5)
        s.subscribe(t, 1)
        self.client().publish(t, b"x", qos=1,
                              properties=props(PacketTypes.PUBLISH, MessageExpiryInterval=60))
        left = s.wait_messages(1)[0].prop("MessageExpiryInterval")
        self.assertTrue(58 <= left <= 60, left)

    def test_retained_message_expires(self):
        t = "mexpr/" + uid()
        p = self.client(version=MQTTv5)
        p.publish(t, b"r", qos=1, retain=True,
                  properties=props(PacketTypes.PUBLISH, MessageExpiryInterval=1))
        time.sleep(2.2)
        s = self.client(version=MQTTv5)
        s.subscribe(t, 1)
        self.assertEqual([m.payload for m in self.sync(s, p, t)], [])


class ReceiveMaximumTest(BrokerTest):

    def start_window(self, n):
        t = "rmax/" + uid()
        r = self.raw(version=5, props={RECEIVE_MAXIMUM: 2})
        r.subscribe([(t, 1)])
        p = self.client()
        for i in range(n):
            p.publish(t, b"%d" % i, qos=1)
        first = r.read_publishes(2)
        self.assertEqual([x.payload for x in first], [b"0", b"1"])
        r.expect_nothing()  # a third would exceed the Receive Maximum
        return r, first

    def test_receive_maximum_initial_window(self):
        r, first = self.start_window(6)
        for x in first:
            r.ack(PUBACK, x.pid)
        # Acknowledged: the rest flows (never more than 2 unacknowledged).
        got = []
        while len(got) < 4:
            batch = r.read_publishes(1)
            got += batch
            r.ack(PUBACK, batch[0].pid)
        self.assertEqual([x.payload for x in got], [b"2", b"3", b"4", b"5"])

    @skip_mosquitto("2.0.11 sends two more PUBLISH after a single PUBACK, so three are "
                    "unacknowledged with Receive Maximum 2 (MQTT-3.3.4-9)")
    def test_receive_maximum_sliding_window(self):
        r, first = self.start_window(6)
        r.ack(PUBACK, first[0].pid)
        third = r.read_until(PUBLISH)
        self.assertEqual(third.payload, b"2")
        r.expect_nothing()
        r.ack(PUBACK, first[1].pid)
        r.ack(PUBACK, third.pid)
        rest = r.read_publishes(2)
        self.assertEqual([x.payload for x in rest], [b"3", b"4"])
        r.expect_nothing()

    def test_qos0_not_limited_by_receive_maximum(self):
        t = "rmax0/" + uid()
        r = self.raw(version=5, props={RECEIVE_MAXIMUM: 1})
        r.subscribe([(t, 0)])
        p = self.client()
        for i in range(5):
            p.publish(t, b"%d" % i, qos=1)
        self.assertEqual([x.payload for x in r.read_publishes(5)], [b"%d" % i for i in range(5)])


class ServerReceiveMaximumTest(BrokerTest):
    config = {"mqtt.receive_maximum": 2}

    @skip_mosquitto("no receive_maximum option; it answers an excess PUBLISH with "
                    "PUBREC 0x97 instead of DISCONNECT 0x93")
    def test_client_exceeding_receive_maximum_disconnected_0x93(self):
        r = self.raw(version=5)
        self.assertEqual(r.connack.props.get(RECEIVE_MAXIMUM), 2)
        t = "srmax/" + uid()
        for pid in (1, 2):
            r.send(r.publish_bytes(t, b"x", qos=2, pid=pid))
            r.read_until(5)  # PUBREC; no PUBREL so both stay in flight
        r.send(r.publish_bytes(t, b"x", qos=2, pid=3))
        d = disconnect_packet(r.expect_closed())
        self.assertIsNotNone(d)
        self.assertEqual(d.rc, 0x93)


class MaximumPacketSizeTest(BrokerTest):
    config = {"mqtt.max_packet_size": 1024}

    def test_not_sent_larger_than_client_maximum(self):
        t = "mps/" + uid()
        small = self.raw(version=5, props={MAXIMUM_PACKET_SIZE: 100})
        small.subscribe([(t, 1)])
        big = self.client(version=MQTTv5)
        big.subscribe(t, 1)
        p = self.client()
        p.publish(t, b"L" * 200, qos=1)
        p.publish(t, b"small", qos=1)
        self.assertEqual([m.payload for m in big.wait_messages(2)], [b"L" * 200, b"small"])
        m = small.read_until(PUBLISH)
        self.assertEqual(m.payload, b"small")
        small.ack_publish(m)

    def test_client_packet_too_large_v5(self):
        r = self.raw(version=5)
        self.assertEqual(r.connack.props.get(MAXIMUM_PACKET_SIZE), 1024)
        r.publish("mps/" + uid(), b"x" * 2000, qos=1, complete=False)
        got = r.expect_closed()
        d = disconnect_packet(got)
        self.assertIsNotNone(d, "no DISCONNECT: %r" % got)
        self.assertEqual(d.rc, 0x95)

    def test_client_packet_too_large_v311(self):
        r = self.raw(version=4)
        r.publish("mps/" + uid(), b"x" * 2000, qos=1, complete=False)
        got = r.expect_closed()
        self.assertFalse([x for x in got if x.type == PUBACK])

    def test_packet_within_limit(self):
        t = "mpsok/" + uid()
        s = self.client()
        s.subscribe(t, 1)
        self.client().publish(t, b"y" * 900, qos=1)
        self.assertEqual(len(s.wait_messages(1)[0].payload), 900)


if __name__ == "__main__":
    unittest.main()
