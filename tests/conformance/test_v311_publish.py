"""MQTT 3.1.1 conformance: PUBLISH, QoS flows, packet identifiers, DUP,
retained messages, ordering and re-delivery.

Each test names the normative statements it covers ([MQTT-x.x.x-y]).
"""
from v311util import (V, T, V311Case, cid, topic, m, connect, publish, puback, pubrec,
                      pubrel, pubcomp, raw, utf8, main)


class QoSFlows(V311Case):
    def test_receiver_responses(self):
        """[MQTT-3.3.4-1] [MQTT-2.3.1-6] [MQTT-4.3.2-2] [MQTT-4.3.3-2] the server
        answers QoS 0 with nothing, QoS 1 with PUBACK and QoS 2 with PUBREC /
        PUBCOMP, each with the PUBLISH's packet identifier."""
        c = self.client()
        t = topic("resp")
        c.send(publish(t, b"0", version=V))
        self.assertEqual(self.ping(c), [], "QoS 0 must not be answered")
        c.send(publish(t, b"1", qos=1, packet_id=0x1234, version=V))
        p = self.recv(c, m.PUBACK)
        self.assertEqual(p.packet_id, 0x1234)
        c.send(publish(t, b"2", qos=2, packet_id=0xFFFF, version=V))
        p = self.recv(c, m.PUBREC)
        self.assertEqual(p.packet_id, 0xFFFF)
        c.send(pubrel(0xFFFF, version=V))
        p = self.recv(c, m.PUBCOMP)
        self.assertEqual(p.packet_id, 0xFFFF)

    def test_qos1_same_id_is_new_publication(self):
        """[MQTT-4.3.2-2] after its PUBACK, a PUBLISH with the same packet id (even
        with DUP 1) is a new publication."""
        t = topic("q1new")
        s = self.subscriber([(t, 1)])
        p = self.client()
        self.pub(p, t, b"a", qos=1, pid=7)
        self.pub(p, t, b"b", qos=1, pid=7, dup=True)
        self.assertEqual([self.recv_pub(s).payload for _ in range(2)], [b"a", b"b"])

    def test_qos2_receiver_exactly_once(self):
        """[MQTT-4.3.3-2] [MQTT-2.3.1-6] a QoS 2 PUBLISH re-sent before PUBREL is
        answered by PUBREC again and not delivered twice; PUBREL gets PUBCOMP;
        after PUBCOMP the same id is a new publication."""
        t = topic("q2")
        mt = "marker/" + t
        s = self.subscriber([(t, 2), (mt, 1)])
        p = self.client()
        p.send(publish(t, b"once", qos=2, packet_id=9, version=V))
        self.assertEqual(self.recv(p, m.PUBREC).packet_id, 9)
        p.send(publish(t, b"once", qos=2, packet_id=9, dup=True, version=V))
        self.assertEqual(self.recv(p, m.PUBREC).packet_id, 9)
        p.send(pubrel(9, version=V))
        self.assertEqual(self.recv(p, m.PUBCOMP).packet_id, 9)
        p.send(publish(t, b"again", qos=2, packet_id=9, version=V))
        self.assertEqual(self.recv(p, m.PUBREC).packet_id, 9)
        p.send(pubrel(9, version=V))
        self.assertEqual(self.recv(p, m.PUBCOMP).packet_id, 9)
        got = self.collect_until_marker(s, p, mt)
        self.assertEqual([g.payload for g in got], [b"once", b"again"])

    def test_server_as_qos1_sender(self):
        """[MQTT-4.3.2-1] [MQTT-2.3.1-1] [MQTT-2.3.1-4] [MQTT-4.4.0-1] [MQTT-3.3.1-1]
        [MQTT-4.6.0-1] the server gives in-flight messages distinct non-zero ids
        with DUP 0, keeps them unacknowledged until PUBACK and re-sends them on
        reconnect (CleanSession 0) with the same ids, DUP 1, in order."""
        client_id = cid("q1s")
        t = topic("q1s")
        s = self.client(client_id, clean=False)
        self.sub(s, [(t, 1)])
        p = self.client()
        for i in range(3):
            self.pub(p, t, b"%d" % i, qos=1)
        first = [self.recv(s, m.PUBLISH) for _ in range(3)]
        ids = [f.packet_id for f in first]
        self.assertNotIn(0, ids)
        self.assertEqual(len(set(ids)), 3, "ids of in-flight messages must differ")
        self.assertEqual([f.dup for f in first], [False] * 3)
        self.assertEqual([f.qos for f in first], [1] * 3)
        s.send(puback(ids[0], version=V))  # the first one is acknowledged
        self.ping(s)
        s.close()
        s = self.raw()
        s.send(connect(client_id, version=V, clean=False))
        self.assertTrue(self.recv(s, m.CONNACK).session_present)
        again = [self.recv(s, m.PUBLISH) for _ in range(2)]
        self.assertEqual([(a.packet_id, a.payload, a.dup) for a in again],
                         [(ids[1], b"1", True), (ids[2], b"2", True)])
        for a in again:
            s.send(puback(a.packet_id, version=V))
        self.assertEqual(self.ping(s), [])

    def test_server_as_qos2_sender(self):
        """[MQTT-4.3.3-1] [MQTT-4.4.0-1] [MQTT-2.3.1-4] the server sends PUBREL on
        PUBREC with the same id, keeps it unacknowledged until PUBCOMP, and on
        reconnect re-sends the PUBREL, not the PUBLISH."""
        client_id = cid("q2s")
        t = topic("q2s")
        s = self.client(client_id, clean=False)
        self.sub(s, [(t, 2)])
        p = self.client()
        self.pub(p, t, b"x", qos=2)
        msg = self.recv(s, m.PUBLISH)
        self.assertEqual((msg.qos, msg.dup), (2, False))
        self.assertNotEqual(msg.packet_id, 0)
        s.send(pubrec(msg.packet_id, version=V))
        rel = self.recv(s, m.PUBREL)
        self.assertEqual(rel.packet_id, msg.packet_id)
        s.close()
        s = self.raw()
        s.send(connect(client_id, version=V, clean=False))
        self.assertTrue(self.recv(s, m.CONNACK).session_present)
        rel = self.recv(s)
        self.assertEqual((rel.type, rel.packet_id), (m.PUBREL, msg.packet_id),
                         "expected the PUBREL re-sent, got %r" % rel)
        s.send(pubcomp(msg.packet_id, version=V))
        self.assertEqual(self.ping(s), [])

    def test_qos0_delivery_format(self):
        """[MQTT-2.3.1-5] [MQTT-3.3.1-2] [MQTT-4.3.1-1] a QoS 0 delivery has QoS 0,
        DUP 0 and no packet identifier."""
        t = topic("q0")
        s = self.subscriber([(t, 2)])
        p = self.client()
        self.pub(p, t, b"payload", qos=0)
        r = self.recv_pub(s)
        self.assertEqual((r.qos, r.dup, r.retain), (0, False, False))
        self.assertEqual(r.body, utf8(t) + b"payload")

    def test_dup_not_propagated(self):
        """[MQTT-3.3.1-3] DUP of an incoming PUBLISH is not forwarded."""
        t = topic("dup")
        s = self.subscriber([(t, 1)])
        p = self.client()
        self.pub(p, t, b"d", qos=1, dup=True)
        r = self.recv_pub(s)
        self.assertEqual((r.payload, r.dup), (b"d", False))

    def test_packet_id_zero_refused(self):
        """[MQTT-2.3.1-1] [MQTT-4.8.0-1] a QoS > 0 PUBLISH with packet id 0 closes."""
        for qos in (1, 2):
            with self.subTest(qos=qos):
                self.assert_refused_or_closed(
                    self.client(), publish(topic(), b"x", qos=qos, packet_id=0, version=V))

    def test_qos3_closes(self):
        """[MQTT-3.3.1-4] a PUBLISH with both QoS bits set closes the connection."""
        self.assert_refused_or_closed(self.client(), raw(0x36, utf8("a") + b"\x00\x01x"))

    def test_unauthorized_or_system_topic(self):
        """[MQTT-3.3.5-2] a PUBLISH the server does not authorize ($SYS here) is
        positively acknowledged or the connection is closed."""
        c = self.client()
        c.send(publish("$SYS/conformance", b"x", qos=1, packet_id=5, version=V))
        p = c.recv_packet(T)
        if p is not None:
            self.assertEqual((p.type, p.packet_id), (m.PUBACK, 5))


class Topics(V311Case):
    def test_topic_name_forwarded(self):
        """[MQTT-3.3.2-3] the topic name sent to a subscriber is the published
        name, which matches the subscription's filter."""
        base = topic("fw")
        s = self.subscriber([(base + "/+/x", 1)])
        p = self.client()
        self.pub(p, base + "/abc/x", b"1", qos=1)
        self.assertEqual(self.recv_pub(s).topic, base + "/abc/x")

    def test_wildcards_in_topic_name(self):
        """[MQTT-3.3.2-2] [MQTT-4.7.1-1] a topic name with wildcards closes."""
        for t in ("a/#", "#", "+", "a/+/b", "a+"):
            with self.subTest(t):
                self.assert_refused_or_closed(self.client(), publish(t, b"x", version=V))

    def test_empty_topic_name(self):
        """[MQTT-4.7.3-1] [MQTT-3.3.2-1] an empty topic name closes."""
        self.assert_refused_or_closed(self.client(), publish("", b"x", version=V))

    def test_max_topic_length(self):
        """[MQTT-4.7.3-3] a 65535-byte topic name (the most a string can encode)
        is matched and forwarded."""
        t = "L" * 65535
        s = self.subscriber([(t, 1)])
        p = self.client()
        self.pub(p, t, b"long", qos=1)
        r = self.recv_pub(s)
        self.assertEqual((len(r.topic), r.payload), (65535, b"long"))

    def test_maximum_qos_of_overlapping_subscriptions(self):
        """[MQTT-3.3.5-1] with overlapping subscriptions the message is delivered
        at the maximum granted QoS of the matching ones."""
        base = topic("ov")
        s = self.subscriber([(base + "/+", 0), (base + "/x", 2)])
        p = self.client()
        mt = "marker/" + base
        self.sub(s, [(mt, 1)])
        self.pub(p, base + "/x", b"ov", qos=2)
        got = self.collect_until_marker(s, p, mt)
        self.assertTrue(got)
        self.assertEqual(max(g.qos for g in got), 2)

    def test_qos_downgrade(self):
        """[MQTT-3.8.4-6] delivered QoS is min(published QoS, granted QoS)."""
        base = topic("dg")
        subs = {q: self.subscriber([(base, q)]) for q in (0, 1, 2)}
        p = self.client()
        for pq in (0, 1, 2):
            self.pub(p, base, b"%d" % pq, qos=pq)
            for sq, s in subs.items():
                r = self.recv_pub(s)
                self.assertEqual((r.payload, r.qos), (b"%d" % pq, min(pq, sq)))


class Retained(V311Case):
    def first_retained(self, t, qos=2):
        """Subscribes a new client to t and returns what it receives at once."""
        s = self.client()
        self.sub(s, [(t, qos)])
        return s, [p for p in self.ping(s)]

    def test_retained_stored_with_qos(self):
        """[MQTT-3.3.1-5] [MQTT-3.3.1-6] [MQTT-3.3.1-8] a retained message is stored
        with its QoS and sent with RETAIN 1 to new subscriptions (QoS = min of
        stored and granted)."""
        t = topic("rq")
        p = self.client()
        self.pub(p, t, b"r1", qos=1, retain=True)
        for sq, want in ((2, 1), (0, 0)):
            s, got = self.first_retained(t, sq)
            self.assertEqual([(g.payload, g.qos, g.retain) for g in got], [(b"r1", want, True)])
            for g in got:
                self.ack(s, g)

    def test_retained_on_wildcard_subscription(self):
        """[MQTT-3.3.1-6] a new wildcard subscription gets the retained message
        of every matching topic."""
        base = topic("rw")
        p = self.client()
        for i in range(3):
            self.pub(p, "%s/%d" % (base, i), b"%d" % i, qos=1, retain=True)
        s, got = self.first_retained(base + "/#", 0)
        self.assertEqual(sorted(g.payload for g in got), [b"0", b"1", b"2"])
        self.assertTrue(all(g.retain for g in got))

    def test_qos0_retained_replaces(self):
        """[MQTT-3.3.1-7] a QoS 0 retained message replaces the earlier one."""
        t = topic("r0")
        p = self.client()
        self.pub(p, t, b"old", qos=1, retain=True)
        self.pub(p, t, b"new", qos=0, retain=True)
        self.ping(p)  # the QoS 0 PUBLISH before it has been processed
        s, got = self.first_retained(t, 1)
        self.assertIn([g.payload for g in got], ([b"new"], []))  # MAY discard QoS 0
        self.assertNotIn(b"old", [g.payload for g in got])

    def test_retain_flag_on_established_subscription(self):
        """[MQTT-3.3.1-9] a retained PUBLISH matching an established subscription
        is forwarded with RETAIN 0."""
        t = topic("rl")
        s = self.subscriber([(t, 1)])
        p = self.client()
        self.pub(p, t, b"live", qos=1, retain=True)
        r = self.recv_pub(s)
        self.assertEqual((r.payload, r.retain), (b"live", False))

    def test_empty_retained_clears(self):
        """[MQTT-3.3.1-10] [MQTT-3.3.1-11] a zero-byte retained PUBLISH is forwarded
        to current subscribers, removes the retained message and is not stored."""
        t = topic("rc")
        p = self.client()
        self.pub(p, t, b"value", qos=1, retain=True)
        s = self.subscriber([(t, 1)])
        self.assertEqual(self.recv_pub(s).payload, b"value")
        self.pub(p, t, b"", qos=1, retain=True)
        r = self.recv_pub(s)
        self.assertEqual((r.payload, r.retain), (b"", False))
        s2, got = self.first_retained(t, 1)
        self.assertEqual(got, [])

    def test_non_retained_leaves_retained(self):
        """[MQTT-3.3.1-12] RETAIN 0 neither stores the message nor replaces the
        retained one."""
        t = topic("rn")
        p = self.client()
        self.pub(p, t, b"kept", qos=1, retain=True)
        self.pub(p, t, b"transient", qos=1, retain=False)
        self.pub(p, t + "/other", b"transient", qos=1, retain=False)
        s, got = self.first_retained(t + "/#", 1)
        self.assertEqual([g.payload for g in got], [b"kept"])


class Ordering(V311Case):
    def test_ordered_topic(self):
        """[MQTT-4.6.0-5] [MQTT-4.6.0-6] messages of one topic and QoS from one
        client arrive in the order they were published."""
        t = topic("ord")
        s = self.subscriber([(t, 2)])
        p = self.client()
        n = 50
        data = b""
        for i in range(n):
            data += publish(t, b"0-%d" % i, qos=0, version=V)
            data += publish(t, b"1-%d" % i, qos=1, packet_id=i + 1, version=V)
        p.send(data)
        for _ in range(n):
            self.recv(p, m.PUBACK)
        got = {0: [], 1: []}
        while len(got[0]) + len(got[1]) < 2 * n:
            r = self.recv_pub(s)
            got[r.qos].append(r.payload)
        self.assertEqual(got[0], [b"0-%d" % i for i in range(n)])
        self.assertEqual(got[1], [b"1-%d" % i for i in range(n)])


if __name__ == "__main__":
    main()
