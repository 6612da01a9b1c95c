"""Topic names and filters: wildcard matching, $-topics, invalid topics."""
import unittest

from mqtt_util import (PUBLISH, MQTTv5, MQTTv311, BrokerTest, disconnect_packet, uid)

# (filter suffix, topic suffix, matches) -- everything is under a unique prefix
# except where the case is about the first level.
CASES = [
    ("a/b", "a/b", True),
    ("a/b", "a/B", False),              # case sensitive
    ("a/b", "a/b/", False),
    ("a/+", "a/b", True),
    ("a/+", "a", False),
    ("a/+", "a/", True),                # empty level
    ("a/+", "a/b/c", False),
    ("a/+/c", "a/b/c", True),
    ("a/+/c", "a//c", True),
    ("a/#", "a", True),                 # '#' also matches the parent
    ("a/#", "a/b/c/d", True),
    ("a/#", "ab", False),
    ("+/+", "a/b", True),
    ("+/+", "a", False),
    ("a/b/#", "a/b", True),
    ("a/+/#", "a/b", True),
    ("a/+/#", "a", False),
    ("ü/ñ/+", "ü/ñ/日本", True),         # UTF-8
    ("a b/+", "a b/c d", True),         # spaces are ordinary characters
]


class TopicMatchingTest(BrokerTest):

    def test_matching_table(self):
        for v in (MQTTv311, MQTTv5):
            base = "tm/" + uid()
            for i, (flt, topic, match) in enumerate(CASES):
                with self.subTest(version=v, filter=flt, topic=topic):
                    s = self.client(version=v)
                    s.subscribe("%s/%d/%s" % (base, i, flt), 1)
                    s.subscribe("%s/%d/marker" % (base, i), 1)
                    p = self.client(version=MQTTv5)
                    full = "%s/%d/%s" % (base, i, topic)
                    p.publish(full, b"probe", qos=1)
                    p.publish("%s/%d/marker" % (base, i), b"marker", qos=1)
                    s.wait_payload(b"marker")
                    got = [m for m in s.messages if m.payload == b"probe"]
                    if match:
                        self.assertEqual([m.topic for m in got], [full])
                    else:
                        self.assertEqual(got, [])
                    s.disconnect()
                    p.disconnect()

    def test_root_wildcards(self):
        """'#' and '+/...' at the root match ordinary topics (and the tests'
        broker is shared, so only this test's topics are looked at)."""
        u = uid()
        s = self.client()
        s.subscribe([("#", 0), ("+/%s/x" % u, 1)])
        p = self.client()
        p.publish("root%s/%s/x" % (u, u), b"1", qos=1)
        p.publish("/%s/x" % u, b"2", qos=1)  # leading empty level
        s.wait_payload(b"1")
        s.wait_payload(b"2")
        got = {m.payload for m in s.messages if u in m.topic}
        self.assertEqual(got, {b"1", b"2"})

    def test_single_message_for_overlapping_filters_v311(self):
        """3.1.1 allows one copy or one per matching subscription; never lost."""
        base = "tov/" + uid()
        r = self.raw(version=4)
        r.subscribe([(base + "/#", 1), (base + "/+", 1), (base + "/x", 1)])
        p = self.client()
        p.publish(base + "/x", b"o", qos=1)
        got = [x for x in self.sync(r, p, base + "/y") if x.payload == b"o"]
        self.assertIn(len(got), (1, 3))


class InvalidTopicTest(BrokerTest):

    def test_publish_with_wildcard_refused(self):
        for v in (4, 5):
            for topic in ("a/+", "a/#", "#"):
                with self.subTest(version=v, topic=topic):
                    s = self.client()
                    s.subscribe("#", 1)
                    r = self.raw(version=v)
                    r.publish(topic, b"bad", qos=1, complete=False)
                    got = r.expect_closed()
                    if v == 5:
                        d = disconnect_packet(got)
                        if d is not None:
                            self.assertIn(d.rc, (0x90, 0x82, 0x81))
                    self.assertFalse([x for x in got if x.type == 4],
                                     "PUBACK for an invalid topic name")
                    m = "ok/" + uid()
                    self.client().publish(m, b"ok", qos=1)
                    s.wait_payload(b"ok")
                    self.assertNotIn(b"bad", [x.payload for x in s.messages])
                    s.disconnect()

    def test_empty_topic_without_alias_refused(self):
        for v in (4, 5):
            with self.subTest(version=v):
                r = self.raw(version=v)
                r.publish("", b"x", qos=1, complete=False)
                got = r.expect_closed()
                self.assertFalse([x for x in got if x.type == 4])

    def test_topic_alias_not_carried_across_connections(self):
        cid = uid("ta")
        t = "tan/" + uid()
        s = self.client()
        s.subscribe(t, 1)
        r = self.raw(client_id=cid, version=5)
        r.publish(t, b"a", qos=1, props={35: 1})
        s.wait_payload(b"a")
        r.disconnect_and_wait()
        r2 = self.raw(client_id=cid, version=5)
        r2.publish("", b"b", qos=1, props={35: 1}, complete=False)
        got = r2.expect_closed()
        d = disconnect_packet(got)
        if d is not None:
            self.assertEqual(d.rc, 0x82)
        self.assertFalse([x for x in got if x.type == 4])


class FanOutTest(BrokerTest):

    def test_many_subscribers(self):
        t = "fan/" + uid()
        subs = []
        for i in range(40):
            c = self.client(version=(MQTTv311, MQTTv5)[i % 2])
            c.subscribe(t, i % 3)
            subs.append(c)
        p = self.client()
        for i in range(5):
            p.publish(t, b"%d" % i, qos=1)
        for i, c in enumerate(subs):
            self.assertEqual([m.payload for m in c.wait_messages(5)],
                             [b"%d" % k for k in range(5)])

    def test_large_payload(self):
        t = "big/" + uid()
        s = self.client()
        s.subscribe(t, 2)
        r = self.raw(version=4)
        r.subscribe([(t, 1)])
        payload = bytes(range(256)) * 2000  # 512000 bytes
        self.client().publish(t, payload, qos=2)
        self.assertEqual(s.wait_messages(1)[0].payload, payload)
        m = r.read_until(PUBLISH)
        self.assertEqual(m.payload, payload)


if __name__ == "__main__":
    unittest.main()
