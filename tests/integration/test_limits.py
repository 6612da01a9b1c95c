"""Configured limits and SUBACK/UNSUBACK reason codes."""
import time
import unittest

from mqtt_util import (CONNACK, MAXIMUM_QOS, PUBACK, PUBLISH, SERVER_KEEPALIVE, SESSION_EXPIRY,
                       SUB_ID_AVAILABLE, SUBSCRIPTION_ID, WILDCARD_SUB_AVAILABLE, BrokerTest,
                       disconnect_packet, skip_mosquitto, uid)


class ReasonCodeTest(BrokerTest):

    @skip_mosquitto("2.0.11 closes the connection on an invalid topic filter instead of "
                    "SUBACK 0x8F Topic Filter invalid")
    def test_invalid_filter_0x8f(self):
        r = self.raw(version=5)
        ack = r.subscribe([("ok/" + uid(), 1), ("bad/#/x", 1), ("bad+/x", 0), ("ok2/+", 2)])
        self.assertEqual(ack.codes, [1, 0x8F, 0x8F, 2])
        r.ping()  # still connected

    def test_invalid_filter_refused(self):
        """Whatever the form (SUBACK failure or closing), an invalid filter is
        never granted, and the connection does not receive on it."""
        for v in (4, 5):
            with self.subTest(version=v):
                r = self.raw(version=v)
                r.subscribe([("bad/#/x", 1)], expect=False)
                try:
                    p = r.read()
                except Exception:
                    continue  # closed: acceptable
                if p.type == 9:
                    self.assertGreaterEqual(p.codes[0], 0x80)

    def test_suback_granted_qos_per_filter(self):
        r = self.raw(version=4)
        base = "rc/" + uid()
        ack = r.subscribe([(base + "/0", 0), (base + "/1", 1), (base + "/2", 2)])
        self.assertEqual(ack.codes, [0, 1, 2])

    def test_unsuback_v5_codes(self):
        r = self.raw(version=5)
        t = "rcu/" + uid()
        r.subscribe([(t, 1)])
        self.assertEqual(r.unsubscribe([t, t + "/none"]).codes, [0x00, 0x11])
        self.assertEqual(r.unsubscribe([t]).codes, [0x11])

    def test_unsuback_v311(self):
        r = self.raw(version=4)
        ack = r.unsubscribe(["none/" + uid()])
        self.assertEqual(ack.body, ack.body[:2])  # 3.1.1 UNSUBACK: packet id only

    def test_puback_no_matching_subscribers(self):
        r = self.raw(version=5)
        ack = r.publish("nobody/" + uid(), b"x", qos=1)
        self.assertIn(ack.rc, (0x00, 0x10))


class WildcardDisabledTest(BrokerTest):
    config = {"mqtt.wildcard_subscription": "false"}

    @skip_mosquitto("no option to disable wildcard subscriptions")
    def test_wildcards_not_supported_0xa2(self):
        r = self.raw(version=5)
        self.assertEqual(r.connack.props.get(WILDCARD_SUB_AVAILABLE), 0)
        ack = r.subscribe([("w/+", 1), ("w/#", 1), ("w/plain", 1)])
        self.assertEqual(ack.codes, [0xA2, 0xA2, 1])


class MaxQosTest(BrokerTest):
    config = {"mqtt.max_qos_allowed": 1}

    def test_connack_maximum_qos(self):
        r = self.raw(version=5)
        self.assertEqual(r.connack.props.get(MAXIMUM_QOS), 1)

    def test_subscription_qos_downgraded(self):
        for v in (4, 5):
            with self.subTest(version=v):
                r = self.raw(version=v)
                t = "mq/" + uid()
                self.assertEqual(r.subscribe([(t, 2)]).codes, [1])
                self.client().publish(t, b"x", qos=1)
                m = r.read_until(PUBLISH)
                self.assertEqual(m.qos, 1)

    def test_publish_above_max_qos_disconnect_0x9b(self):
        r = self.raw(version=5)
        r.publish("mq/" + uid(), b"x", qos=2, complete=False)
        got = r.expect_closed()
        d = disconnect_packet(got)
        self.assertIsNotNone(d, "no DISCONNECT: %r" % got)
        self.assertEqual(d.rc, 0x9B)

    def test_will_qos_above_max_refused(self):
        r = self.raw(version=5, connect=False)
        ack = r.connect(uid(), will={"topic": "w", "payload": b"x", "qos": 2})
        self.assertEqual(ack.rc, 0x9B)


class ClientIdLenTest(BrokerTest):
    config = {"mqtt.max_clientid_len": 30}

    @skip_mosquitto("no client identifier length option")
    def test_client_id_too_long(self):
        for v, rc in ((5, 0x85), (4, 0x02)):
            with self.subTest(version=v):
                r = self.raw(version=v, connect=False)
                ack = r.connect("x" * 31)
                self.assertEqual(ack.type, CONNACK)
                self.assertEqual(ack.rc, rc)
                r.expect_closed()
                ok = self.raw(version=v, client_id="y" * 30)
                self.assertEqual(ok.connack.rc, 0)


class TopicLevelsTest(BrokerTest):
    config = {"mqtt.max_topic_levels": 4}

    @skip_mosquitto("no topic level limit option")
    def test_subscribe_too_deep_refused(self):
        r = self.raw(version=5)
        ack = r.subscribe([("a/b/c/d", 1), ("a/b/c/d/e", 1)])
        self.assertEqual(ack.codes[0], 1)
        self.assertGreaterEqual(ack.codes[1], 0x80)

    @skip_mosquitto("no topic level limit option")
    def test_publish_too_deep_not_delivered(self):
        s = self.client()
        s.subscribe("#", 1)
        r = self.raw(version=5)
        r.publish("l/" + uid() + "/c/d/e", b"deep", qos=1, complete=False)
        try:
            p = r.read()
        except Exception:
            p = None  # closed: acceptable
        if p is not None:
            self.assertIn(p.type, (PUBACK, 14))
            self.assertGreaterEqual(p.rc, 0x80)
        ok = self.client()
        t = "l/" + uid() + "/c"
        ok.publish(t, b"fine", qos=1)
        s.wait_payload(b"fine")
        self.assertNotIn(b"deep", [m.payload for m in s.messages])


class MqueueTest(BrokerTest):
    config = {"mqtt.max_mqueue_len": 3, "mqtt.max_inflight": 2}

    def offline(self, v=4):
        cid, t = uid("q"), "mql/" + uid()
        kw = {"clean": False}
        if v == 5:
            kw["props"] = {SESSION_EXPIRY: 60}
        r = self.raw(client_id=cid, version=v, **kw)
        r.subscribe([(t, 1)])
        r.disconnect_and_wait()
        return cid, t

    def test_offline_queue_overflow_drops(self):
        cid, t = self.offline()
        p = self.client()
        for i in range(10):
            p.publish(t, b"%d" % i, qos=1)
        r = self.raw(client_id=cid, version=4, clean=False)
        self.assertTrue(r.connack.session_present)
        got = [x.payload for x in self.sync(r, p, t)]
        # Queue of 3 (mosquitto also keeps max_inflight messages besides the queue).
        self.assertGreaterEqual(len(got), 3)
        self.assertLessEqual(len(got), 5)
        self.assertEqual(got, sorted(got, key=int), "order kept")

    @skip_mosquitto("when the queue is full it drops the new message, never a queued "
                    "QoS 0 one (and it does not queue QoS 0 by default)")
    def test_overflow_drops_oldest_qos0_first(self):
        """A queued QoS 0 message is dropped before any QoS 1 message. Six
        messages overflow the queue (3) even if in-flight slots (2) also hold
        offline messages."""
        cid, t = self.offline()
        p = self.client()
        p.publish(t, b"q0-a", qos=0)
        for x in "bcdef":
            p.publish(t, b"q1-" + x.encode(), qos=1)
        r = self.raw(client_id=cid, version=4, clean=False)
        got = [x.payload for x in self.sync(r, p, t)]
        self.assertNotIn(b"q0-a", got, "the QoS 0 message must be dropped first")
        self.assertGreaterEqual(len(got), 3)
        self.assertEqual(got, sorted(got), "order kept")

    def test_max_inflight(self):
        t = "mif/" + uid()
        r = self.raw(version=4)
        r.subscribe([(t, 1)])
        p = self.client()
        for i in range(5):
            p.publish(t, b"%d" % i, qos=1)
        first = r.read_publishes(2)
        r.expect_nothing()
        r.ack(PUBACK, first[0].pid)
        r.ack(PUBACK, first[1].pid)
        rest = []
        while len(rest) < 3:
            x = r.read_until(PUBLISH)
            rest.append(x.payload)
            r.ack(PUBACK, x.pid)
        self.assertEqual([x.payload for x in first] + rest, [b"%d" % i for i in range(5)])


class SubscriptionIdentifiersDisabledTest(BrokerTest):
    config = {"mqtt.subscription_identifiers": "false"}

    @skip_mosquitto("no option to disable subscription identifiers")
    def test_subscription_identifier_not_supported_0xa1(self):
        r = self.raw(version=5)
        self.assertEqual(r.connack.props.get(SUB_ID_AVAILABLE), 0)
        r.subscribe([("sid/x", 1)], props={SUBSCRIPTION_ID: 3}, expect=False)
        got = r.expect_closed()
        d = disconnect_packet(got)
        self.assertIsNotNone(d, "no DISCONNECT: %r" % got)
        self.assertEqual(d.rc, 0xA1)


class SessionConfigTest(BrokerTest):
    config = {"mqtt.max_session_expiry": "10s", "mqtt.server_keepalive": 5,
              "mqtt.session_expiry_interval": "2s", "mqtt.idle_timeout": "2s"}

    @skip_mosquitto("no cap on the v5 Session Expiry Interval")
    def test_session_expiry_capped_and_announced(self):
        r = self.raw(version=5, clean=False, props={SESSION_EXPIRY: 1000})
        self.assertEqual(r.connack.props.get(SESSION_EXPIRY), 10)
        r.disconnect(0, {SESSION_EXPIRY: 0})

    @skip_mosquitto("no server_keepalive option")
    def test_server_keepalive_imposed(self):
        r = self.raw(version=5, keepalive=60)
        self.assertEqual(r.connack.props.get(SERVER_KEEPALIVE), 5)

    @skip_mosquitto("persistent_client_expiration has a granularity of hours")
    def test_v311_persistent_session_expires(self):
        cid = uid("v3x")
        t = "v3x/" + uid()
        self.offline_session(t, 1, version=4, client_id=cid)
        r = self.raw(client_id=cid, version=4, clean=False)
        self.assertTrue(r.connack.session_present)
        r.disconnect_and_wait()
        time.sleep(3.5)  # the expiry (2 s) is what is tested
        r = self.raw(client_id=cid, version=4, clean=False)
        self.assertFalse(r.connack.session_present)
        r.disconnect_and_wait()
        self.raw(client_id=cid, version=4, clean=True).disconnect_and_wait()

    @skip_mosquitto("no idle timeout for connections that never send CONNECT")
    def test_idle_connection_without_connect_closed(self):
        r = self.raw(connect=False)
        t0 = time.time()
        r.expect_closed(timeout=15)
        self.assertGreaterEqual(time.time() - t0, 1.5)


if __name__ == "__main__":
    unittest.main()
