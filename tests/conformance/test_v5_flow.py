"""MQTT 5.0 conformance: flow control (Receive Maximum), Maximum Packet Size
and Topic Aliases (sections 3.1.2.11.3-5, 3.2.2.3, 3.3.2.3.4, 3.3.4, 4.9 and
the size limits of every acknowledgement)."""
import mqttraw as mr
from mqttraw import (connect, publish, subscribe, unsubscribe, puback, pubrec,
                     pubrel, pubcomp, pingreq, disconnect)
from raw_extra import BrokerTest, RecordingClient, packet_size, skip_on_mosquitto, main


class ReceiveMaximumTest(BrokerTest):

    def test_initial_send_quota(self):
        """With Receive Maximum 2 the Server sends 2 QoS 1 PUBLISHes, then
        waits for acknowledgements [MQTT-3.3.4-9] [MQTT-4.9.0-1]
        [MQTT-4.9.0-2]."""
        t = self.topic()
        s = self.connect(props={mr.RECEIVE_MAXIMUM: 2})
        self.subscribe(s, t, 2)
        p = self.connect(self.cid("p"))
        for i in range(4):
            self.publish_q1(p, t, b"%d" % i, packet_id=i + 1)
        first = [self.recv(s, mr.PUBLISH), self.recv(s, mr.PUBLISH)]
        self.assertEqual([m.payload for m in first], [b"0", b"1"])
        self.expect_nothing(s, 1.0)
        for m in first:
            s.send(puback(m.packet_id))
        got = [self.recv(s, mr.PUBLISH).payload for _ in range(2)]
        self.assertEqual(got, [b"2", b"3"])

    @skip_on_mosquitto("sends two more QoS 1 PUBLISHes per PUBACK once the "
                       "Receive Maximum was reached (3 in flight with Receive Maximum 2)")
    def test_quota_comes_back_one_per_puback(self):
        """Each PUBACK lets exactly one more QoS 1 PUBLISH go: never more than
        Receive Maximum unacknowledged [MQTT-3.3.4-9] [MQTT-4.9.0-2]."""
        t = self.topic()
        s = self.connect(props={mr.RECEIVE_MAXIMUM: 2})
        self.subscribe(s, t, 2)
        p = self.connect(self.cid("p"))
        for i in range(6):
            self.publish_q1(p, t, b"%d" % i, packet_id=i + 1)
        inflight = [self.recv(s, mr.PUBLISH), self.recv(s, mr.PUBLISH)]
        self.expect_nothing(s, 1.0)
        got = [m.payload for m in inflight]
        while len(got) < 6:
            s.send(puback(inflight.pop(0).packet_id))
            n = self.recv(s, mr.PUBLISH)
            inflight.append(n)
            got.append(n.payload)
            if len(got) < 6:
                self.expect_nothing(s, 0.3)
        self.assertEqual(got, [b"%d" % i for i in range(6)])

    def test_qos2_quota_freed_by_pubcomp(self):
        """For QoS 2 the send quota comes back with PUBCOMP, not with PUBREC:
        with Receive Maximum 1 the next PUBLISH waits for PUBCOMP
        [MQTT-3.3.4-9] [MQTT-4.9.0-2]."""
        t = self.topic()
        s = self.connect(props={mr.RECEIVE_MAXIMUM: 1})
        self.subscribe(s, t, 2)
        p = self.connect(self.cid("p"))
        for i in range(3):
            self.publish_q2(p, t, b"%d" % i, packet_id=i + 1)
        got = []
        for i in range(3):
            m = self.recv(s, mr.PUBLISH)
            got.append(m.payload)
            self.expect_nothing(s, 0.5)
            s.send(pubrec(m.packet_id))
            r = self.recv(s, mr.PUBREL)
            self.expect_nothing(s, 0.5)
            s.send(pubcomp(r.packet_id))
        self.assertEqual(got, [b"0", b"1", b"2"])

    def test_other_packets_flow_at_zero_quota(self):
        """With its send quota at zero the Server still answers PINGREQ,
        SUBSCRIBE, UNSUBSCRIBE and PUBLISH [MQTT-3.3.4-10] [MQTT-4.9.0-3]."""
        t = self.topic()
        s = self.connect(props={mr.RECEIVE_MAXIMUM: 1})
        self.subscribe(s, t, 1)
        p = self.connect(self.cid("p"))
        self.publish_q1(p, t, b"a", packet_id=1)
        self.publish_q1(p, t, b"b", packet_id=2)
        first = self.recv(s, mr.PUBLISH)
        s.send(pingreq())
        self.recv(s, mr.PINGRESP)
        s.send(subscribe(5, [(t + "/x", 0)]))
        self.assertEqual(self.recv(s, mr.SUBACK).packet_id, 5)
        s.send(unsubscribe(6, [t + "/x"]))
        self.assertEqual(self.recv(s, mr.UNSUBACK).packet_id, 6)
        s.send(publish(t + "/none", b"x", qos=1, packet_id=7))
        self.assertEqual(self.recv(s, mr.PUBACK).packet_id, 7)
        s.send(puback(first.packet_id))
        self.assertEqual(self.recv(s, mr.PUBLISH).payload, b"b")


class ServerReceiveMaximumTest(BrokerTest):
    CONFIG = {"mqtt.receive_maximum": 3}

    @skip_on_mosquitto("announces Receive Maximum 20 but accepts more unacknowledged "
                       "QoS 2 PUBLISHes without DISCONNECT 0x93")
    def test_client_exceeding_receive_maximum(self):
        """A Client sending more unacknowledged QoS 2 PUBLISHes than the
        Server's Receive Maximum gets DISCONNECT 0x93 [MQTT-3.3.4-7]
        [MQTT-4.13.1-1]."""
        c = self.connect()
        rm = c.connack.props.get(mr.RECEIVE_MAXIMUM, 65535)
        if rm > 1000:
            self.skipTest("Receive Maximum %d" % rm)
        for i in range(rm + 1):
            c.send(publish(self.topic(), b"x", qos=2, packet_id=i + 1))
        self.assert_closed(c, reasons={0x93})
        self.assertLessEqual(len([p for p in c.received if p.type == mr.PUBREC]), rm)


class ClientMaximumPacketSizeTest(BrokerTest):

    def test_oversized_message_not_sent(self):
        """A message too large for the subscriber's Maximum Packet Size is
        discarded for it as if sent: later messages flow, it is not re-sent
        on reconnect, other subscribers get it [MQTT-3.1.2-24]
        [MQTT-3.1.2-25]."""
        t = self.topic()
        cid = self.cid()
        s = self.connect(cid, cls=RecordingClient, props={
            mr.MAXIMUM_PACKET_SIZE: 200, mr.SESSION_EXPIRY_INTERVAL: 60})
        self.subscribe(s, t, 1)
        other = self.subscriber(t, 1, client_id=self.cid("o"))
        p = self.connect(self.cid("p"))
        self.publish_q1(p, t, b"B" * 400, packet_id=1)
        self.publish_q1(p, t, b"small", packet_id=2)
        m = self.recv(s, mr.PUBLISH)
        self.assertEqual(m.payload, b"small")
        self.assertEqual(self.recv(other, mr.PUBLISH).payload, b"B" * 400)
        s.send(puback(m.packet_id))
        self.expect_nothing(s, 0.5)
        for pkt in s.log:
            self.assertLessEqual(packet_size(pkt), 200)
        s.close()
        s = self.connect(cid, clean=False, props={
            mr.MAXIMUM_PACKET_SIZE: 1000, mr.SESSION_EXPIRY_INTERVAL: 0})
        self.assertTrue(s.connack.session_present)
        self.expect_nothing(s, 0.7)

    @skip_on_mosquitto("keeps a discarded oversized QoS 1 message in flight: with "
                       "Receive Maximum 1 nothing more is sent until reconnect")
    def test_oversized_message_counts_as_sent(self):
        """A discarded oversized message does not hold the send quota: with
        Receive Maximum 1 the next message is sent at once [MQTT-3.1.2-25]."""
        t = self.topic()
        s = self.connect(props={mr.MAXIMUM_PACKET_SIZE: 200, mr.RECEIVE_MAXIMUM: 1})
        self.subscribe(s, t, 1)
        p = self.connect(self.cid("p"))
        self.publish_q1(p, t, b"B" * 400, packet_id=1)
        self.publish_q1(p, t, b"small", packet_id=2)
        self.assertEqual(self.recv(s, mr.PUBLISH).payload, b"small")

    def test_acknowledgements_fit_maximum_packet_size(self):
        """With a small Maximum Packet Size the Server leaves out Reason
        Strings and User Properties that would not fit: every CONNACK,
        PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK and DISCONNECT it
        sends fits [MQTT-3.1.2-24] [MQTT-3.2.2-19] [MQTT-3.2.2-20]
        [MQTT-3.4.2-2] [MQTT-3.4.2-3] [MQTT-3.5.2-2] [MQTT-3.5.2-3]
        [MQTT-3.6.2-2] [MQTT-3.6.2-3] [MQTT-3.7.2-2] [MQTT-3.7.2-3]
        [MQTT-3.9.2-1] [MQTT-3.9.2-2] [MQTT-3.11.2-1] [MQTT-3.11.2-2]
        [MQTT-3.14.2-3] [MQTT-3.14.2-4]."""
        limit = 32
        t = "f/%d" % self._n
        c = self.connect(cls=RecordingClient, props={mr.MAXIMUM_PACKET_SIZE: limit})
        c.send(publish(t + "/n", b"", qos=1, packet_id=1))            # PUBACK (no subscriber)
        c.send(publish("$SYS/x%d" % self._n, b"", qos=1, packet_id=2))  # PUBACK (maybe refused)
        c.send(publish(t + "/n", b"", qos=2, packet_id=3))            # PUBREC
        c.send(pubrel(3) + pubrel(40))                                 # PUBCOMP, PUBCOMP 0x92
        c.send(subscribe(4, [(t, 2), ("$share/g/" + t, 1)]))            # SUBACK
        c.send(unsubscribe(5, [t + "/none", t + "/never"]))            # UNSUBACK 0x11
        want = {mr.PUBACK: 2, mr.PUBREC: 1, mr.PUBCOMP: 2, mr.SUBACK: 1, mr.UNSUBACK: 1}
        got = {}
        while sum(got.values()) < sum(want.values()):
            m = self.recv(c)
            got[m.type] = got.get(m.type, 0) + 1
        self.assertEqual(got, want)
        p = self.connect(self.cid("p"))
        self.publish_q2(p, t, b"m")                                     # PUBREL to c
        m = c.recv_type(mr.PUBLISH)
        c.send(pubrec(m.packet_id))
        r = c.recv_type(mr.PUBREL)
        self.assertEqual(r.packet_id, m.packet_id)
        c.send(pubcomp(r.packet_id))
        c.send(publish(t, b"x", props={mr.TOPIC_ALIAS: 0}))             # DISCONNECT
        self.assert_closed(c)
        for pkt in c.log:
            self.assertLessEqual(packet_size(pkt), limit, pkt)

    def test_refused_connack_fits_maximum_packet_size(self):
        """A refusing CONNACK leaves out a Reason String or User Property that
        would exceed the Client's Maximum Packet Size [MQTT-3.2.2-19]
        [MQTT-3.2.2-20] [MQTT-3.1.2-24]."""
        for limit in (8, 16):
            c = self.raw_client(RecordingClient)
            c.send(connect(self.cid(str(limit)), props={
                mr.MAXIMUM_PACKET_SIZE: limit, mr.AUTHENTICATION_METHOD: "x-unsupported"}))
            self.assertTrue(c.expect_closed())
            for pkt in c.log:
                self.assertEqual(pkt.type, mr.CONNACK)
                self.assertLessEqual(packet_size(pkt), limit, pkt)


class ServerMaximumPacketSizeTest(BrokerTest):
    CONFIG = {"mqtt.max_packet_size": 300}

    def test_packet_above_server_maximum(self):
        """The Server announces its Maximum Packet Size; a larger packet is a
        Protocol Error (DISCONNECT 0x95) [MQTT-3.2.2-15] [MQTT-4.13.1-1]."""
        c = self.connect()
        self.assertEqual(c.connack.props.get(mr.MAXIMUM_PACKET_SIZE), 300, c.connack)
        self.publish_q1(c, self.topic(), b"x" * 200)
        c.send(publish(self.topic(), b"x" * 400, qos=1, packet_id=2))
        self.assert_closed(c, reasons={0x95})

    @skip_on_mosquitto("applies max_packet_size to the Remaining Length: accepts "
                       "packets up to 2 bytes larger than announced")
    def test_packet_size_limit_exact(self):
        """A packet of exactly the Maximum Packet Size is accepted, one byte
        more is refused with DISCONNECT 0x95 [MQTT-3.2.2-15]."""
        c = self.connect()
        limit = c.connack.props.get(mr.MAXIMUM_PACKET_SIZE)
        t = self.topic()
        n = limit - len(publish(t, b"", qos=1, packet_id=1))
        while len(publish(t, b"x" * n, qos=1, packet_id=1)) > limit:
            n -= 1
        fit = publish(t, b"x" * n, qos=1, packet_id=1)
        self.assertEqual(len(fit), limit)
        c.send(fit)
        self.assertEqual(self.recv(c, mr.PUBACK).packet_id, 1)
        big = publish(t, b"x" * (n + 1), qos=1, packet_id=2)
        self.assertEqual(len(big), limit + 1)
        c.send(big)
        self.assert_closed(c, reasons={0x95})


class TopicAliasTest(BrokerTest):
    CONFIG = {"mqtt.max_topic_alias": 5}

    def test_server_accepts_aliases_up_to_maximum(self):
        """The Server announces Topic Alias Maximum 5 and accepts aliases 1 to
        5: setting, using and remapping them [MQTT-3.3.2-12]."""
        t = self.topic()
        s = self.subscriber(t + "/#", 0)
        p = self.connect(self.cid("p"))
        self.assertEqual(p.connack.props.get(mr.TOPIC_ALIAS_MAXIMUM), 5, p.connack)
        for a in range(1, 6):
            p.send(publish("%s/%d" % (t, a), b"set", props={mr.TOPIC_ALIAS: a}))
            p.send(publish("", b"use", props={mr.TOPIC_ALIAS: a}))
        p.send(publish(t + "/new", b"remap", props={mr.TOPIC_ALIAS: 3}))
        p.send(publish("", b"use3", props={mr.TOPIC_ALIAS: 3}))
        self.publish_q1(p, "", b"q1", props={mr.TOPIC_ALIAS: 5})
        got = [(m.topic, m.payload) for m in (self.recv(s, mr.PUBLISH) for _ in range(13))]
        want = []
        for a in range(1, 6):
            want += [("%s/%d" % (t, a), b"set"), ("%s/%d" % (t, a), b"use")]
        want += [(t + "/new", b"remap"), (t + "/new", b"use3"), (t + "/5", b"q1")]
        self.assertEqual(got, want)

    def test_alias_above_maximum(self):
        """A Topic Alias above the Server's Topic Alias Maximum is a Protocol
        Error: DISCONNECT 0x94 [MQTT-3.2.2-17] [MQTT-3.3.2-9]
        [MQTT-4.13.1-1]."""
        c = self.connect()
        c.send(publish(self.topic(), b"x", props={mr.TOPIC_ALIAS: 6}))
        self.assert_closed(c, reasons={0x94})

    def test_alias_zero_closes(self):
        """A Topic Alias of 0 is refused: the connection is closed
        [MQTT-3.3.2-8] [MQTT-4.13.1-1]."""
        c = self.connect()
        c.send(publish(self.topic(), b"x", props={mr.TOPIC_ALIAS: 0}))
        self.assert_closed(c, reasons={0x94, 0x81, 0x82})

    @skip_on_mosquitto("answers Topic Alias 0 with DISCONNECT 0x81 instead of 0x94")
    def test_alias_zero_reason_code(self):
        """A Topic Alias of 0 gets DISCONNECT 0x94 (Topic Alias invalid)
        [MQTT-3.3.2-8]."""
        c = self.connect()
        c.send(publish(self.topic(), b"x", props={mr.TOPIC_ALIAS: 0}))
        d = self.assert_closed(c, reasons={0x94})
        self.assertIsNotNone(d, "no DISCONNECT sent")

    def test_unmapped_alias_with_empty_topic(self):
        """An empty Topic Name with an alias that has no mapping is a
        Protocol Error [MQTT-4.13.1-1] [MQTT-4.7.3-1]."""
        c = self.connect()
        c.send(publish("", b"x", props={mr.TOPIC_ALIAS: 2}))
        self.assert_closed(c, reasons={0x82, 0x94})

    def test_aliases_not_carried_to_next_connection(self):
        """Topic Alias mappings end with the connection: using one on the next
        connection of the same Session is a Protocol Error [MQTT-3.3.2-7]."""
        cid, t = self.cid(), self.topic()
        s = self.subscriber(t, 0, client_id=self.cid("s"))
        c = self.connect(cid, props={mr.SESSION_EXPIRY_INTERVAL: 60})
        c.send(publish(t, b"set", props={mr.TOPIC_ALIAS: 1}))
        self.assertEqual(self.recv(s, mr.PUBLISH).payload, b"set")
        c.send(disconnect(0))
        self.assertTrue(c.expect_closed())
        c = self.connect(cid, clean=False, props={mr.SESSION_EXPIRY_INTERVAL: 0})
        self.assertTrue(c.connack.session_present)
        c.send(publish("", b"stale", props={mr.TOPIC_ALIAS: 1}))
        self.assert_closed(c, reasons={0x82, 0x94})
        self.expect_nothing(s, 0.5)

    def test_no_alias_to_client_without_maximum(self):
        """A Client without Topic Alias Maximum (or with 0) never gets a
        Topic Alias [MQTT-3.1.2-27] [MQTT-3.3.2-11]."""
        t = self.topic() + "/a-rather-long-topic-name-worth-an-alias"
        s0 = self.subscriber(t, 1, client_id=self.cid("a"))
        s1 = self.subscriber(t, 1, client_id=self.cid("b"), props={mr.TOPIC_ALIAS_MAXIMUM: 0})
        p = self.connect(self.cid("p"))
        for i in range(5):
            self.publish_q1(p, t, b"%d" % i, packet_id=i + 1)
        for s in (s0, s1):
            for i in range(5):
                m = self.recv(s, mr.PUBLISH)
                s.send(puback(m.packet_id))
                self.assertNotIn(mr.TOPIC_ALIAS, m.props)
                self.assertEqual(m.topic, t)

    def test_aliases_within_client_maximum(self):
        """Topic Aliases sent by the Server stay within 1..the Client's Topic
        Alias Maximum and resolve to the right Topic Names [MQTT-3.1.2-26]
        [MQTT-3.3.2-11] [MQTT-3.3.2-8] [MQTT-3.3.2-3]."""
        t = self.topic()
        s = self.subscriber(t + "/#", 0, props={mr.TOPIC_ALIAS_MAXIMUM: 2})
        p = self.connect(self.cid("p"))
        names = ["%s/topic-%d-with-some-length" % (t, i) for i in range(5)]
        for rnd in range(3):
            for n in names:
                p.send(publish(n, b"%d" % rnd))
        mapping = {}
        for rnd in range(3):
            for n in names:
                m = self.recv(s, mr.PUBLISH)
                alias = m.props.get(mr.TOPIC_ALIAS)
                topic = m.topic
                if alias is not None:
                    self.assertTrue(1 <= alias <= 2, m)
                    if topic:
                        mapping[alias] = topic
                    else:
                        self.assertIn(alias, mapping, "alias used before being set")
                        topic = mapping[alias]
                self.assertEqual((topic, m.payload), (n, b"%d" % rnd))


class TopicAliasDisabledTest(BrokerTest):
    CONFIG = {"mqtt.max_topic_alias": 0}

    def test_alias_when_server_allows_none(self):
        """With Topic Alias Maximum absent or 0 any Topic Alias is a Protocol
        Error: DISCONNECT 0x94 [MQTT-3.2.2-18] [MQTT-4.13.1-1]."""
        c = self.connect()
        self.assertIn(c.connack.props.get(mr.TOPIC_ALIAS_MAXIMUM, 0), (0,))
        c.send(publish(self.topic(), b"x", props={mr.TOPIC_ALIAS: 1}))
        self.assert_closed(c, reasons={0x94})


if __name__ == "__main__":
    main()
