"""Will messages."""
import time
import unittest

from mqtt_util import (CONTENT_TYPE, MESSAGE_EXPIRY, SESSION_EXPIRY, USER_PROPERTY,
                       WILL_DELAY, MQTTv5, BrokerTest, skip_mosquitto, uid)


class WillTest(BrokerTest):

    def watcher(self, topic, qos=2):
        s = self.client(version=MQTTv5)
        s.subscribe(topic, qos)
        return s

    def test_will_on_abrupt_close(self):
        for v in (3, 4, 5):
            for wq in (0, 1, 2):
                with self.subTest(version=v, will_qos=wq):
                    t = "will/" + uid()
                    s = self.watcher(t)
                    r = self.raw(version=v, will={"topic": t, "payload": b"bye", "qos": wq})
                    r.abort()
                    m = s.wait_messages(1)[0]
                    self.assertEqual((m.topic, m.payload, m.qos, m.retain), (t, b"bye", wq, False))

    def test_will_downgraded_to_subscription_qos(self):
        t = "willq/" + uid()
        s = self.watcher(t, qos=1)
        r = self.raw(version=4, will={"topic": t, "payload": b"w", "qos": 2})
        r.close()
        self.assertEqual(s.wait_messages(1)[0].qos, 1)

    def test_no_will_on_normal_disconnect(self):
        for v in (3, 4, 5):
            with self.subTest(version=v):
                t = "willn/" + uid()
                s = self.watcher(t)
                r = self.raw(version=v, will={"topic": t, "payload": b"bad", "qos": 1})
                r.disconnect_and_wait()  # the broker has handled the DISCONNECT
                p = self.client()
                self.assertEqual(self.sync(s, p, t), [])

    def test_will_on_v5_disconnect_with_will_0x04(self):
        t = "will4/" + uid()
        s = self.watcher(t)
        r = self.raw(version=5, will={"topic": t, "payload": b"w4", "qos": 1})
        r.disconnect(0x04)
        self.assertEqual(s.wait_messages(1)[0].payload, b"w4")

    def test_retained_will(self):
        t = "willr/" + uid()
        s = self.watcher(t)
        r = self.raw(version=4, will={"topic": t, "payload": b"rw", "qos": 1, "retain": True})
        r.abort()
        s.wait_payload(b"rw")
        late = self.client()
        late.subscribe(t, 1)
        m = late.wait_messages(1)[0]
        self.assertEqual((m.payload, m.retain), (b"rw", True))
        late.publish(t, b"", qos=1, retain=True)

    def test_will_on_keepalive_timeout(self):
        t = "willk/" + uid()
        s = self.watcher(t)
        self.raw(version=4, keepalive=2, will={"topic": t, "payload": b"ka", "qos": 1})
        t0 = time.time()
        m = s.wait_messages(1, timeout=15)[0]
        self.assertEqual(m.payload, b"ka")
        self.assertGreaterEqual(time.time() - t0, 2.0)

    def test_will_on_protocol_error(self):
        t = "willp/" + uid()
        s = self.watcher(t)
        r = self.raw(version=4, will={"topic": t, "payload": b"pe", "qos": 1})
        r.send(bytes([0x00, 0x00]))  # reserved packet type 0
        r.expect_closed()
        s.wait_payload(b"pe")

    def test_v5_will_properties_forwarded(self):
        t = "willprops/" + uid()
        s = self.watcher(t)
        r = self.raw(version=5, will={"topic": t, "payload": b"{}", "qos": 1, "props": {
            CONTENT_TYPE: "application/json", MESSAGE_EXPIRY: 100,
            USER_PROPERTY: [("k", "v"), ("k", "w")]}})
        r.abort()
        m = s.wait_messages(1)[0]
        self.assertEqual(m.prop("ContentType"), "application/json")
        self.assertEqual(m.prop("UserProperty"), [("k", "v"), ("k", "w")])
        self.assertTrue(0 < m.prop("MessageExpiryInterval") <= 100)

    def test_v5_will_delay(self):
        t = "willd/" + uid()
        s = self.watcher(t)
        r = self.raw(version=5, props={SESSION_EXPIRY: 30},
                     will={"topic": t, "payload": b"late", "qos": 1, "props": {WILL_DELAY: 2}})
        r.abort()
        t0 = time.time()
        s.wait_payload(b"late")
        self.assertGreaterEqual(time.time() - t0, 1.5, "will sent before its delay")

    def test_v5_will_delay_cancelled_by_reconnect(self):
        t = "willdc/" + uid()
        cid = uid("w")
        s = self.watcher(t)
        r = self.raw(client_id=cid, version=5, clean=False, props={SESSION_EXPIRY: 30},
                     will={"topic": t, "payload": b"never", "qos": 1, "props": {WILL_DELAY: 2}})
        r.abort()
        r2 = self.raw(client_id=cid, version=5, clean=False, props={SESSION_EXPIRY: 0})
        self.assertTrue(r2.connack.session_present)
        time.sleep(3)  # the delay is what is tested: wait past it
        p = self.client()
        self.assertEqual([m.payload for m in self.sync(s, p, t)], [])
        r2.disconnect()

    def test_v5_will_sent_at_session_end_before_delay(self):
        t = "willse/" + uid()
        s = self.watcher(t)
        r = self.raw(version=5, props={SESSION_EXPIRY: 1},
                     will={"topic": t, "payload": b"end", "qos": 1, "props": {WILL_DELAY: 30}})
        r.abort()
        t0 = time.time()
        s.wait_payload(b"end", timeout=10)
        self.assertLess(time.time() - t0, 8, "will must be sent when the session ends")

    def test_will_on_takeover_with_clean_start(self):
        t = "willt/" + uid()
        cid = uid("w")
        s = self.watcher(t)
        old = self.raw(client_id=cid, version=5, will={"topic": t, "payload": b"tk", "qos": 1})
        self.raw(client_id=cid, version=5, clean=True)
        old.expect_closed()
        s.wait_payload(b"tk")

    @skip_mosquitto("2.0.11 publishes the old connection's will on takeover only when the "
                    "old session ends (clean start or session expiry 0)")
    def test_will_on_takeover_session_kept(self):
        """v5: the will is published when the old network connection closes
        without a normal DISCONNECT, also when the session continues."""
        t = "willtk/" + uid()
        cid = uid("w")
        s = self.watcher(t)
        old = self.raw(client_id=cid, version=5, clean=False, props={SESSION_EXPIRY: 30},
                       will={"topic": t, "payload": b"tk2", "qos": 1})
        new = self.raw(client_id=cid, version=5, clean=False, props={SESSION_EXPIRY: 0})
        self.assertTrue(new.connack.session_present)
        old.expect_closed()
        s.wait_payload(b"tk2")

    def test_v311_will_on_takeover(self):
        t = "willt3/" + uid()
        cid = uid("w")
        s = self.watcher(t)
        old = self.raw(client_id=cid, version=4, will={"topic": t, "payload": b"t3", "qos": 1})
        self.raw(client_id=cid, version=4, clean=True)
        old.expect_closed()
        s.wait_payload(b"t3")


if __name__ == "__main__":
    unittest.main()
