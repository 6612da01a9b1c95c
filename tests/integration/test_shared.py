"""Shared subscriptions: $share/<group>/<filter> (MQTT 5) and EMQX's $queue/<filter>."""
import unittest

from mqtt_util import (SHARED_SUB_AVAILABLE, MQTTv5, MQTTv311, BrokerTest, skip_mosquitto, uid)

N = 40


class SharedTest(BrokerTest):

    def members(self, flt, n, version=MQTTv5, qos=1):
        out = []
        for _ in range(n):
            c = self.client(version=version)
            self.assertEqual(c.subscribe(flt, qos), [qos])
            out.append(c)
        return out

    def publish_all(self, t, n=N):
        p = self.client()
        infos = [p.publish(t, b"%d" % i, qos=1, wait=False) for i in range(n)]
        for i in infos:
            i.wait_for_publish(10)
        return p, {b"%d" % i for i in range(n)}

    def assert_each_once(self, members, want):
        """Every message reaches exactly one member of the group."""
        total = []

        def count():
            return sum(len(m.messages) for m in members)
        from mqtt_util import wait_until
        wait_until(lambda: count() >= len(want), msg="%d messages in the group" % len(want))
        for m in members:
            total += [x.payload for x in m.messages]
        self.assertEqual(sorted(total), sorted(want), "each message exactly once in the group")
        return [len(m.messages) for m in members]

    def test_distributed_among_members(self):
        for v in (MQTTv5, MQTTv311):
            with self.subTest(version=v):
                t = "sh/" + uid()
                g = self.members("$share/g1/" + t, 3, version=v)
                p, want = self.publish_all(t)
                counts = self.assert_each_once(g, want)
                self.assertTrue(all(c > 0 for c in counts), "not distributed: %s" % counts)
                # Nothing more arrives later (no duplicates).
                for m in g:
                    m.subscribe(t + "/m", 1)
                p.publish(t + "/m", b"m", qos=1)
                for m in g:
                    m.wait_payload(b"m")
                self.assertEqual(sum(len([x for x in m.messages if x.payload != b"m"]) for m in g),
                                 N)

    def test_two_groups_and_plain_subscriber(self):
        t = "sh2/" + uid()
        g1 = self.members("$share/a/" + t, 2)
        g2 = self.members("$share/b/" + t, 2)
        plain = self.members(t, 1)[0]
        p, want = self.publish_all(t)
        self.assert_each_once(g1, want)
        self.assert_each_once(g2, want)
        self.assertEqual(sorted(m.payload for m in plain.wait_messages(N)), sorted(want))

    def test_shared_wildcard_filter(self):
        base = "sh3/" + uid()
        g = self.members("$share/w/" + base + "/+", 2)
        p = self.client()
        for i in range(10):
            p.publish("%s/%d" % (base, i), b"%d" % i, qos=1)
        self.assert_each_once(g, {b"%d" % i for i in range(10)})

    def test_member_leaving(self):
        t = "sh4/" + uid()
        a, b = self.members("$share/g/" + t, 2)
        a.disconnect()
        p, want = self.publish_all(t, 10)
        self.assertEqual(sorted(x.payload for x in b.wait_messages(10)), sorted(want))

    def test_unsubscribe_shared(self):
        t = "sh5/" + uid()
        a, b = self.members("$share/g/" + t, 2)
        a.unsubscribe("$share/g/" + t)
        p, want = self.publish_all(t, 10)
        self.assertEqual(sorted(x.payload for x in b.wait_messages(10)), sorted(want))
        a.subscribe(t + "/m", 1)
        self.assertEqual([m.payload for m in self.sync(a, p, t + "/m")], [])

    def test_shared_qos_downgrade(self):
        t = "sh6/" + uid()
        (m,) = self.members("$share/g/" + t, 1, qos=0)
        self.client().publish(t, b"x", qos=2)
        self.assertEqual(m.wait_messages(1)[0].qos, 0)

    def test_invalid_share_filters(self):
        r = self.raw(version=5)
        ack = r.subscribe([("$share/g/ok", 1)])
        self.assertEqual(ack.codes, [1])

    @skip_mosquitto("no $queue/ shared subscriptions (EMQX extension)")
    def test_queue_prefix(self):
        t = "q/" + uid()
        g = self.members("$queue/" + t, 2)
        plain = self.members(t, 1)[0]
        p, want = self.publish_all(t)
        counts = self.assert_each_once(g, want)
        self.assertTrue(all(c > 0 for c in counts), counts)
        self.assertEqual(len(plain.wait_messages(N)), N)


class SharedDisabledTest(BrokerTest):
    config = {"mqtt.shared_subscription": "false"}

    @skip_mosquitto("no option to disable shared subscriptions")
    def test_shared_subscription_not_supported_0x9e(self):
        r = self.raw(version=5)
        self.assertEqual(r.connack.props.get(SHARED_SUB_AVAILABLE), 0)
        ack = r.subscribe([("$share/g/x", 1), ("plain/x", 1)])
        self.assertEqual(ack.codes, [0x9E, 1])


if __name__ == "__main__":
    unittest.main()
