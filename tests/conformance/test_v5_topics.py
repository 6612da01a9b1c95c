"""MQTT 5.0 conformance: Topic Names, Topic Filters, wildcards, '$' topics
and Shared Subscriptions (sections 3.3.2.1, 4.7, 4.8)."""
import mqttraw as mr
from mqttraw import subscribe, puback, pubrec, pubcomp
from raw_extra import BrokerTest, skip_on_mosquitto, main


class TopicTest(BrokerTest):

    def assert_filter_refused(self, flt, tag):
        """A SUBSCRIBE to flt is refused: SUBACK >= 0x80 for it or the
        connection closed (DISCONNECT >= 0x80 at most)."""
        c = self.connect(self.cid(tag))
        c.send(subscribe(1, [(flt, 0)]))
        p = c.recv_packet(5)
        if p is None or p.type == mr.DISCONNECT:
            if p is not None:
                self.assertIn(p.reason, (0x81, 0x82, 0x8F, 0x9E), p)
            self.assertTrue(p is None or c.expect_closed())
            return
        self.assertEqual(p.type, mr.SUBACK, p)
        self.assertGreaterEqual(p.reasons[0], 0x80, "filter %r accepted: %r" % (flt, p))

    def test_wildcard_matching(self):
        """'#' matches the parent and any number of levels, '+' exactly one
        (possibly empty) level; delivered Topic Names match the filter
        [MQTT-4.7.1-1] [MQTT-4.7.1-2] [MQTT-3.3.2-3]."""
        b = self.topic("m")
        cases = {
            b + "/sport/tennis/player1/#": [b + "/sport/tennis/player1",
                                            b + "/sport/tennis/player1/ranking",
                                            b + "/sport/tennis/player1/score/wimbledon"],
            b + "/sport/#": [b + "/sport"],
            b + "/sport/tennis/+": [b + "/sport/tennis/player2"],
            b + "/sport/+": [b + "/sport/"],
            b + "/+/+": [b + "//finance"],
            b + "/+/tennis/#": [b + "/x/tennis"],
        }
        names = sorted({n for ns in cases.values() for n in ns} |
                       {b + "/sport/tennis/player1/ranking/x", b + "/finance", b + "/sport/tennis"})
        subs = {}
        for i, flt in enumerate(cases):
            subs[flt] = self.subscriber(flt, 0, client_id=self.cid("s%d" % i))
        p = self.connect(self.cid("p"))
        for n in names:
            self.publish_q1(p, n, n.encode())
        for flt, c in subs.items():
            want = sorted(n for n in names if self._matches(flt, n))
            got = sorted(self.recv(c, mr.PUBLISH).topic for _ in want)
            self.expect_nothing(c, 0.3)
            self.assertEqual(got, want, flt)
            for n in cases[flt]:
                self.assertIn(n, got, flt)

    @staticmethod
    def _matches(flt, name):
        f, n = flt.split("/"), name.split("/")
        for i, level in enumerate(f):
            if level == "#":
                return True
            if i >= len(n) or (level != "+" and level != n[i]):
                return False
        return len(n) == len(f)

    def test_invalid_wildcards_refused(self):
        """Filters with '#' not last or not a whole level, or '+' not a whole
        level, are refused [MQTT-4.7.1-1] [MQTT-4.7.1-2]."""
        b = self.topic()
        for i, flt in enumerate((b + "/#/x", b + "#", b + "/x#", b + "/+x", b + "/x+/y",
                                 "+" + b, b + "/##")):
            with self.subTest(filter=flt):
                self.assert_filter_refused(flt, "f%d" % i)

    def test_dollar_topics_not_matched_by_leading_wildcards(self):
        """Filters starting with '#' or '+' do not match Topic Names starting
        with '$'; an explicit '$' filter does [MQTT-4.7.2-1]."""
        wild = self.connect(self.cid("w"))
        wild.send(subscribe(1, [("#", 0), ("+/x", 0), ("+/+", 0), ("+", 0)]))
        self.assertEqual(self.recv(wild, mr.SUBACK).reasons, [0, 0, 0, 0])
        name = "$conf%d/x" % self._n
        explicit = self.subscriber("$conf%d/#" % self._n, 0, client_id=self.cid("e"))
        p = self.connect(self.cid("p"))
        a = self.publish_q1(p, name, b"dollar")
        self.publish_q1(p, "$conf%d" % self._n, b"dollar-top", packet_id=2)
        if a.reason < 0x80:
            self.assertEqual(self.recv(explicit, mr.PUBLISH).topic, name)
        got = [m for m in self.drain(wild, 1.0) if m.type == mr.PUBLISH]
        self.assertEqual([m.topic for m in got if m.topic.startswith("$")], [])

    def test_empty_filter_refused(self):
        """A zero-length Topic Filter is refused [MQTT-4.7.3-1]."""
        self.assert_filter_refused("", "e")

    def test_null_character_in_filter_refused(self):
        """A Topic Filter containing U+0000 is malformed [MQTT-4.7.3-2]."""
        c = self.connect()
        c.send(subscribe(1, [(self.topic().encode() + b"\x00/x", 0)]))
        self.assert_closed(c, reasons={0x81, 0x82, 0x8F})

    def test_no_normalization(self):
        """Matching compares characters exactly: no case folding, no Unicode
        normalization, spaces and empty levels significant [MQTT-4.7.3-4]."""
        b = self.topic()
        nfc, nfd = "caf\u00e9", "cafe\u0301"
        s = self.connect()
        s.send(subscribe(1, [(b + "/Accounts", 0), (b + "/" + nfc, 0), (b + "/x", 0),
                             (b + "/a b", 0)]))
        self.recv(s, mr.SUBACK)
        p = self.connect(self.cid("p"))
        for n in ("/ACCOUNTS", "/accounts", "/Accounts", "/" + nfd, "/" + nfc, "//x", "/x/",
                  "/ab", "/a b", "/a  b", "/x"):
            self.publish_q1(p, b + n, n.encode())
        got = [self.recv(s, mr.PUBLISH).topic for _ in range(4)]
        self.expect_nothing(s, 0.5)
        self.assertEqual(sorted(got), sorted([b + "/Accounts", b + "/" + nfc, b + "/a b", b + "/x"]))


class SharedSubscriptionTest(BrokerTest):

    def share(self, group="g"):
        return "$share/%s%d/%s" % (group, self._n, self.topic())

    def assert_filter_refused(self, flt, tag):
        TopicTest.assert_filter_refused(self, flt, tag)

    def test_each_message_to_one_member(self):
        """A message matching a Shared Subscription goes to exactly one of its
        Sessions; other groups and non-shared subscribers get their own copy
        [MQTT-4.8.2-1]."""
        t = self.topic()
        g1 = [self.subscriber(self.share("a"), 1, client_id=self.cid("a%d" % i)) for i in range(3)]
        g2 = [self.subscriber(self.share("b"), 1, client_id=self.cid("b%d" % i)) for i in range(2)]
        plain = self.subscriber(t, 1, client_id=self.cid("n"))
        p = self.connect(self.cid("p"))
        n = 12
        for i in range(n):
            self.publish_q1(p, t, b"%02d" % i, packet_id=i + 1)
        for group in (g1, g2, [plain]):
            got = self.gather(group, n, on_publish=lambda c, m: c.send(puback(m.packet_id)))
            for _, m in got:
                self.assertEqual(m.topic, t)
            self.assertEqual(sorted(m.payload for _, m in got), [b"%02d" % i for i in range(n)])
            for c in group:
                self.expect_nothing(c, 0.2)

    @skip_on_mosquitto("accepts a Shared Subscription with an empty ShareName")
    def test_empty_share_name_refused(self):
        """'$share//filter' (empty ShareName) is refused [MQTT-4.8.2-1]."""
        self.assert_filter_refused("$share//" + self.topic(), "e")

    def test_share_name_with_wildcards_refused(self):
        """A ShareName containing '+' or '#' is refused [MQTT-4.8.2-2]."""
        self.assert_filter_refused("$share/a+b/" + self.topic(), "p")
        self.assert_filter_refused("$share/a#b/" + self.topic(), "h")

    @skip_on_mosquitto("accepts '$share/group' without a Topic Filter")
    def test_share_name_without_filter_refused(self):
        """A ShareName must be followed by '/' and a Topic Filter
        [MQTT-4.8.2-2]."""
        self.assert_filter_refused("$share/g%d" % self._n, "n")
        self.assert_filter_refused("$share/g%d/" % self._n, "s")

    def test_granted_qos_respected(self):
        """Members of one Shared Subscription get messages at their own
        granted QoS [MQTT-4.8.2-3]."""
        t = self.topic()
        low = self.subscriber(self.share(), 0, client_id=self.cid("l"))
        high = self.subscriber(self.share(), 2, client_id=self.cid("h"))
        p = self.connect(self.cid("p"))
        for i in range(8):
            self.publish_q2(p, t, b"%d" % i, packet_id=i + 1)
        def check(c, m):
            self.assertEqual(m.qos, c.suback.reasons[0], m)
            if m.qos == 2:
                c.send(pubrec(m.packet_id))
        got = self.gather([low, high], 8, on_publish=check)
        self.assertEqual(sorted(m.payload for _, m in got), [b"%d" % i for i in range(8)])
        self.assertEqual({i for i, _ in got}, {0, 1}, "one member got nothing")

    def _until_member(self, p, members, target, qos, start_pid=1):
        """Publishes numbered messages until members[target] receives one;
        returns (that PUBLISH, payloads delivered to the others)."""
        t = self.topic()
        others = []
        for i in range(12):
            if qos == 2:
                self.publish_q2(p, t, b"m%d" % i, packet_id=start_pid + i)
            else:
                self.publish_q1(p, t, b"m%d" % i, packet_id=start_pid + i)
            for j, c in enumerate(members):
                try:
                    m = c.recv_packet(0.4)
                except TimeoutError:
                    continue
                self.assertEqual(m.type, mr.PUBLISH, m)
                if j == target:
                    return m, others
                others.append(m.payload)
                c.send(puback(m.packet_id) if m.qos == 1 else pubrec(m.packet_id))
                if m.qos == 2:
                    c.send(pubcomp(self.recv(c, mr.PUBREL).packet_id))
        self.fail("member %d never chosen" % target)

    def test_qos2_completed_to_same_member(self):
        """A QoS 2 delivery to a member interrupted by a disconnection is
        completed to that member when it reconnects, not sent to another
        [MQTT-4.8.2-4]."""
        acid = self.cid("a")
        a = self.subscriber(self.share(), 2, client_id=acid, props={mr.SESSION_EXPIRY_INTERVAL: 60})
        b = self.subscriber(self.share(), 2, client_id=self.cid("b"))
        p = self.connect(self.cid("p"))
        m, _ = self._until_member(p, [a, b], 0, 2)
        a.close()
        for x in self.drain(b, 1.0):
            self.assertNotEqual(x.payload, m.payload, "message re-sent to another member")
            if x.type == mr.PUBLISH:
                b.send(pubrec(x.packet_id))
        a = self.connect(acid, clean=False, props={mr.SESSION_EXPIRY_INTERVAL: 0})
        self.assertTrue(a.connack.session_present)
        r = self.recv(a, mr.PUBLISH)
        self.assertEqual((r.payload, r.packet_id, r.dup), (m.payload, m.packet_id, True))
        a.send(pubrec(r.packet_id))
        a.send(pubcomp(self.recv(a, mr.PUBREL).packet_id))

    def test_qos2_not_sent_elsewhere_after_session_end(self):
        """If the member's Session ends before it completes a QoS 2 delivery,
        the message is not sent to another member [MQTT-4.8.2-5]."""
        a = self.subscriber(self.share(), 2, client_id=self.cid("a"))
        b = self.subscriber(self.share(), 2, client_id=self.cid("b"))
        p = self.connect(self.cid("p"))
        m, _ = self._until_member(p, [a, b], 0, 2)
        a.close()                      # Session Expiry 0: the Session ends
        for x in self.drain(b, 1.5):
            self.assertNotEqual(x.payload, m.payload, "message sent to another member")

    def test_refused_message_not_resent(self):
        """A member answering PUBACK or PUBREC >= 0x80 makes the Server
        discard the message, not send it to another member [MQTT-4.8.2-6]."""
        a = self.subscriber(self.share(), 2, client_id=self.cid("a"))
        b = self.subscriber(self.share(), 2, client_id=self.cid("b"))
        p = self.connect(self.cid("p"))
        m1, _ = self._until_member(p, [a, b], 0, 1)
        a.send(puback(m1.packet_id, reason=0x80))
        m2, _ = self._until_member(p, [a, b], 0, 2, start_pid=100)
        a.send(pubrec(m2.packet_id, reason=0x80))
        for x in self.drain(b, 1.0) + self.drain(a, 0.2):
            self.assertNotIn(x.payload, (m1.payload, m2.payload), "refused message re-sent")


if __name__ == "__main__":
    main()
