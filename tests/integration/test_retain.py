"""Retained messages."""
import unittest

from mqtt_util import (MQTTv5, MQTTv31, MQTTv311, RETAIN_AVAILABLE, VNAME, BrokerTest,
                       disconnect_packet, sub_opts, uid)


class RetainTest(BrokerTest):

    def test_retained_delivered_to_new_subscriber(self):
        for pv in (MQTTv31, MQTTv311, MQTTv5):
            for sv in (MQTTv31, MQTTv311, MQTTv5):
                with self.subTest(pub=VNAME[pv], sub=VNAME[sv]):
                    t = "ret/" + uid()
                    p = self.client(version=pv)
                    p.publish(t, b"kept", qos=1, retain=True)
                    s = self.client(version=sv)
                    s.subscribe(t, 1)
                    m = s.wait_messages(1)[0]
                    self.assertEqual((m.topic, m.payload, m.qos, m.retain), (t, b"kept", 1, True))
                    p.publish(t, b"", qos=1, retain=True)

    def test_retained_qos_is_min_of_stored_and_subscription(self):
        t = "retq/" + uid()
        p = self.client()
        p.publish(t + "/2", b"q2", qos=2, retain=True)
        p.publish(t + "/0", b"q0", qos=0, retain=True)
        p.publish(t + "/1", b"q1", qos=1, retain=True)
        s = self.client()
        s.subscribe(t + "/#", 1)
        got = {m.payload: m.qos for m in s.wait_messages(3)}
        self.assertEqual(got, {b"q2": 1, b"q1": 1, b"q0": 0})
        for x in "012":
            p.publish(t + "/" + x, b"", qos=1, retain=True)

    def test_retained_replaced(self):
        t = "retr/" + uid()
        p = self.client()
        p.publish(t, b"one", qos=1, retain=True)
        p.publish(t, b"two", qos=1, retain=True)
        s = self.client()
        s.subscribe(t, 1)
        s.wait_messages(1)
        got = self.sync(s, p, t)
        self.assertEqual([(m.payload, m.retain) for m in got], [(b"two", True)])
        p.publish(t, b"", qos=1, retain=True)

    def test_empty_payload_deletes_retained(self):
        for v in (MQTTv311, MQTTv5):
            with self.subTest(version=VNAME[v]):
                t = "retd/" + uid()
                p = self.client(version=v)
                p.publish(t, b"gone", qos=1, retain=True)
                p.publish(t, b"", qos=1, retain=True)
                s = self.client()
                s.subscribe(t, 1)
                # Retained messages are sent on SUBSCRIBE, before the marker.
                self.assertEqual(self.sync(s, p, t), [])

    def test_empty_retained_forwarded_to_existing_subscribers(self):
        t = "rete/" + uid()
        s = self.client(version=MQTTv311)
        s.subscribe(t, 1)
        p = self.client()
        p.publish(t, b"", qos=1, retain=True)
        m = s.wait_messages(1)[0]
        self.assertEqual(m.payload, b"")

    def test_wildcard_subscription_gets_all_matching_retained(self):
        base = "retw/" + uid()
        p = self.client()
        topics = [base + "/a", base + "/b/c", base + "/b/d", base + "/x/y/z"]
        for t in topics:
            p.publish(t, t.encode(), qos=1, retain=True)
        p.publish("retw-other/" + uid(), b"no", qos=1, retain=True)
        for flt, want in (("/#", topics), ("/b/+", topics[1:3]), ("/+/+/z", topics[3:])):
            with self.subTest(filter=flt):
                s = self.client()
                s.subscribe(base + flt, 1)
                msgs = s.wait_messages(len(want))
                got = self.sync(s, p, base + "/a" if flt == "/#" else want[0])
                got = [m for m in got if m.payload != want[0].encode() or m.retain]
                self.assertEqual(sorted(m.topic for m in got if m.retain), sorted(want))
                self.assertTrue(all(m.retain for m in msgs[:len(want)]))
                s.disconnect()
        for t in topics:
            p.publish(t, b"", qos=1, retain=True)

    def test_retain_flag_cleared_for_existing_subscribers_v311(self):
        for v in (MQTTv31, MQTTv311):
            with self.subTest(version=VNAME[v]):
                t = "retf/" + uid()
                s = self.client(version=v)
                s.subscribe(t, 1)
                p = self.client(version=MQTTv5)
                p.publish(t, b"live", qos=1, retain=True)
                m = s.wait_messages(1)[0]
                self.assertFalse(m.retain, "retain flag must be 0 on normal forwarding")
                # A new subscriber sees it as retained.
                s2 = self.client(version=v)
                s2.subscribe(t, 1)
                self.assertTrue(s2.wait_messages(1)[0].retain)
                p.publish(t, b"", qos=1, retain=True)

    def test_v5_retain_as_published(self):
        t = "retrap/" + uid()
        rap = self.client(version=MQTTv5)
        rap.subscribe(t, 1, retainAsPublished=True)
        norap = self.client(version=MQTTv5)
        norap.subscribe(t, 1, retainAsPublished=False)
        p = self.client()
        p.publish(t, b"r", qos=1, retain=True)
        p.publish(t, b"n", qos=1, retain=False)
        self.assertEqual([(m.payload, m.retain) for m in rap.wait_messages(2)],
                         [(b"r", True), (b"n", False)])
        self.assertEqual([(m.payload, m.retain) for m in norap.wait_messages(2)],
                         [(b"r", False), (b"n", False)])
        p.publish(t, b"", qos=1, retain=True)

    def test_v5_retain_handling(self):
        t = "retrh/" + uid()
        p = self.client()
        p.publish(t, b"stored", qos=1, retain=True)
        for rh, first, again in ((0, True, True), (1, True, False), (2, False, False)):
            with self.subTest(retain_handling=rh):
                r = self.raw(version=5)
                r.subscribe([(t, sub_opts(1, rh=rh))])
                got = self.sync(r, p, t)
                self.assertEqual([x.payload for x in got], [b"stored"] if first else [])
                # Subscribing again to an existing subscription.
                r.subscribe([(t, sub_opts(1, rh=rh))])
                got = self.sync(r, p, t)
                self.assertEqual([x.payload for x in got], [b"stored"] if again else [])
        p.publish(t, b"", qos=1, retain=True)

    def test_retained_not_sent_for_non_matching(self):
        t = "retn/" + uid()
        p = self.client()
        p.publish(t + "/a", b"a", qos=1, retain=True)
        s = self.client()
        s.subscribe(t + "/b", 1)
        self.assertEqual(self.sync(s, p, t + "/b"), [])
        p.publish(t + "/a", b"", qos=1, retain=True)


class RetainUnavailableTest(BrokerTest):
    config = {"mqtt.retain_available": "false"}

    def test_connack_retain_available_0(self):
        c = self.client(version=MQTTv5)
        self.assertEqual(c.connack_props.RetainAvailable, 0)

    def test_retained_publish_refused_v5(self):
        t = "retu/" + uid()
        s = self.client()
        s.subscribe(t, 1)
        r = self.raw(version=5)
        self.assertEqual(r.connack.props.get(RETAIN_AVAILABLE), 0)
        r.publish(t, b"x", qos=1, retain=True, complete=False)
        got = r.expect_closed()
        d = disconnect_packet(got)
        self.assertIsNotNone(d, "no DISCONNECT: %r" % got)
        self.assertEqual(d.rc, 0x9A)
        # The message was not retained.
        s2 = self.client()
        s2.subscribe(t, 1)
        p = self.client()
        self.assertEqual([m.payload for m in self.sync(s2, p, t)], [])

    def test_non_retained_still_work(self):
        t = "retu2/" + uid()
        s = self.client()
        s.subscribe(t, 1)
        self.client().publish(t, b"ok", qos=1)
        s.wait_payload(b"ok")


if __name__ == "__main__":
    unittest.main()
