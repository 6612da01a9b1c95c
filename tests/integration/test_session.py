"""Sessions: session present, kept subscriptions, offline queue, clean start,
v5 session expiry, session takeover."""
import time
import unittest

from mqtt_util import (MQTTv5, MQTTv31, MQTTv311, PUBLISH, SESSION_EXPIRY, VNAME, BrokerTest,
                       PacketTypes, skip_mosquitto, props, uid, disconnect_packet)


def v5_connect_props(expiry):
    return props(PacketTypes.CONNECT, SessionExpiryInterval=expiry)


class SessionTest(BrokerTest):

    def persistent(self, cid, version, expiry=300, **kw):
        if version == MQTTv5:
            return self.client(client_id=cid, version=version, clean=False,
                               connect_props=v5_connect_props(expiry), **kw)
        return self.client(client_id=cid, version=version, clean=False, **kw)

    def end_session(self, cid, version):
        """Connect with clean start and leave, discarding the session."""
        c = self.client(client_id=cid, version=version, clean=True)
        c.disconnect()

    def test_session_present_and_subscriptions_kept(self):
        for v in (MQTTv31, MQTTv311, MQTTv5):
            with self.subTest(version=VNAME[v]):
                cid, t = uid("s"), "sess/" + uid()
                c = self.persistent(cid, v)
                self.assertFalse(c.session_present)
                c.subscribe(t, 1)
                c.disconnect()
                c = self.persistent(cid, v)
                if v != MQTTv31:  # 3.1 CONNACK has no session present flag
                    self.assertTrue(c.session_present)
                p = self.client(version=MQTTv311)
                p.publish(t, b"kept", qos=1)
                m = c.wait_payload(b"kept")
                self.assertEqual(m.qos, 1)
                c.disconnect()
                self.end_session(cid, v)

    def test_offline_messages_queued_qos1_qos2(self):
        for v in (MQTTv311, MQTTv5):
            with self.subTest(version=VNAME[v]):
                cid, t = uid("s"), "sessq/" + uid()
                c = self.persistent(cid, v)
                c.subscribe(t, 2)
                c.disconnect()
                p = self.client(version=MQTTv5)
                sent = []
                for i in range(10):
                    q = 1 + i % 2
                    p.publish(t, b"m%d" % i, qos=q)
                    sent.append((b"m%d" % i, q))
                c = self.persistent(cid, v)
                self.assertTrue(c.session_present)
                msgs = c.wait_messages(10)
                # Order is guaranteed per QoS level (MQTT 4.6), not across levels.
                for q in (1, 2):
                    self.assertEqual([(m.payload, m.qos) for m in msgs if m.qos == q],
                                     [x for x in sent if x[1] == q])
                self.sync(c, p, t, qos=2)
                self.assertEqual(len([m for m in c.messages if not m.payload.startswith(b"sync")]),
                                 10, "duplicates")
                c.disconnect()
                self.end_session(cid, v)

    def test_clean_start_discards_session(self):
        for v in (MQTTv311, MQTTv5):
            with self.subTest(version=VNAME[v]):
                cid, t = uid("s"), "sessc/" + uid()
                c = self.persistent(cid, v)
                c.subscribe(t, 1)
                c.disconnect()
                p = self.client()
                p.publish(t, b"queued", qos=1)
                c = self.client(client_id=cid, version=v, clean=True)
                self.assertFalse(c.session_present)
                # No queued message and no subscription: a new subscription on
                # another topic gets a marker, nothing else.
                t2 = t + "/marker"
                c.subscribe(t2, 1)
                p.publish(t, b"after", qos=1)
                p.publish(t2, b"marker", qos=1)
                c.wait_payload(b"marker")
                self.assertEqual([m.payload for m in c.messages], [b"marker"])
                c.disconnect()
                # and the next persistent connection starts from scratch
                c = self.persistent(cid, v)
                self.assertFalse(c.session_present)
                c.disconnect()
                self.end_session(cid, v)

    def test_v5_session_expiry_zero_ends_at_disconnect(self):
        cid, t = uid("s"), "sess0/" + uid()
        c = self.client(client_id=cid, version=MQTTv5, clean=False,
                        connect_props=v5_connect_props(0))
        c.subscribe(t, 1)
        c.disconnect()
        c = self.client(client_id=cid, version=MQTTv5, clean=False,
                        connect_props=v5_connect_props(0))
        self.assertFalse(c.session_present)
        c.disconnect()

    def test_v5_session_expiry_zero_ends_at_abrupt_close(self):
        cid = uid("s")
        r = self.raw(client_id=cid, version=5, clean=False)
        r.subscribe([("sess0a/" + uid(), 1)])
        r.abort()
        c = self.client(client_id=cid, version=MQTTv5, clean=False)
        self.assertFalse(c.session_present)

    def test_v5_session_expiry_interval(self):
        cid, t = uid("s"), "sessx/" + uid()
        c = self.persistent(cid, MQTTv5, expiry=2)
        c.subscribe(t, 1)
        c.disconnect()
        # Within the interval: resumed.
        c = self.persistent(cid, MQTTv5, expiry=2)
        self.assertTrue(c.session_present)
        c.disconnect()
        t0 = time.time()
        # Well after the interval: gone.
        time.sleep(3.5)
        c = self.persistent(cid, MQTTv5, expiry=2)
        self.assertGreater(time.time() - t0, 2)
        self.assertFalse(c.session_present)
        c.disconnect(properties=props(PacketTypes.DISCONNECT, SessionExpiryInterval=0))

    def test_v5_session_expiry_set_to_zero_on_disconnect(self):
        cid = uid("s")
        c = self.persistent(cid, MQTTv5, expiry=60)
        c.subscribe("sessd/" + uid(), 1)
        c.disconnect(properties=props(PacketTypes.DISCONNECT, SessionExpiryInterval=0))
        c = self.persistent(cid, MQTTv5, expiry=60)
        self.assertFalse(c.session_present)
        c.disconnect(properties=props(PacketTypes.DISCONNECT, SessionExpiryInterval=0))

    def test_v5_disconnect_cannot_set_expiry_when_connect_had_zero(self):
        """MQTT-3.14.2-2: a non-zero Session Expiry Interval in DISCONNECT after
        zero in CONNECT is a Protocol Error; the session still ends."""
        cid = uid("s")
        r = self.raw(client_id=cid, version=5, clean=False)
        r.subscribe([("sessz/" + uid(), 1)])
        r.disconnect(0, {SESSION_EXPIRY: 60})
        got = r.expect_closed()
        d = disconnect_packet(got)
        if d is not None:
            self.assertEqual(d.rc, 0x82)
        r2 = self.raw(client_id=cid, version=5, clean=False)
        self.assertFalse(r2.connack.session_present)

    def test_v5_offline_messages_dropped_after_expiry(self):
        t = "sessxd/" + uid()
        cid = self.offline_session(t, 1, version=5, expiry=1)
        self.client().publish(t, b"lost", qos=1)
        time.sleep(2.5)
        c = self.persistent(cid, MQTTv5, expiry=60)
        self.assertFalse(c.session_present)
        c.subscribe(t + "/m", 1)
        self.client().publish(t + "/m", b"marker", qos=1)
        c.wait_payload(b"marker")
        self.assertEqual([m.payload for m in c.messages], [b"marker"])
        c.disconnect(properties=props(PacketTypes.DISCONNECT, SessionExpiryInterval=0))


class OfflineQos0Test(BrokerTest):
    """Offline QoS 0: ours queues it by default (mqtt.mqueue_store_qos0 = true);
    mosquitto does not by default (queue_qos0_messages false). The harness maps
    the key, so both settings are tested explicitly on both brokers."""

    def run_case(self, store):
        b = self.start_broker({"mqtt.mqueue_store_qos0": "true" if store else "false"})
        t = "q0off/" + uid()
        cid = self.offline_session(t, 1, version=4, port=b.port)
        p = self.client(port=b.port, version=MQTTv311)
        p.publish(t, b"qos0", qos=0)
        p.publish(t, b"qos1", qos=1)
        c = self.client(port=b.port, client_id=cid, version=MQTTv311, clean=False)
        self.assertTrue(c.session_present)
        c.wait_payload(b"qos1")
        self.sync(c, p, t, qos=0)
        got = sorted(m.payload for m in c.messages if not m.payload.startswith(b"sync"))
        self.assertEqual(got, [b"qos0", b"qos1"] if store else [b"qos1"])

    @skip_mosquitto("queue_qos0_messages defaults to false (ours: mqtt.mqueue_store_qos0 "
                    "defaults to true)")
    def test_offline_qos0_queued_by_default(self):
        t = "q0def/" + uid()
        cid = self.offline_session(t, 1, version=4)
        p = self.client(version=MQTTv311)
        p.publish(t, b"qos0", qos=0)
        c = self.client(client_id=cid, version=MQTTv311, clean=False)
        c.wait_payload(b"qos0")
        c.disconnect()
        self.end_session(cid, MQTTv311)

    def end_session(self, cid, version):
        self.client(client_id=cid, version=version, clean=True).disconnect()

    def test_offline_qos0_queued_when_enabled(self):
        self.run_case(True)

    def test_offline_qos0_not_queued_when_disabled(self):
        self.run_case(False)


class TakeoverTest(BrokerTest):

    def test_v5_takeover_closes_old(self):
        cid = uid("t")
        old = self.raw(client_id=cid, version=5)
        new = self.client(client_id=cid, version=MQTTv5)
        got = old.expect_closed()
        self.assertFalse([p for p in got if p.type == PUBLISH])
        self.assertIsNone(new.disconnected)
        new.subscribe("to/" + uid(), 0)

    @skip_mosquitto("2.0.11 closes the old connection without DISCONNECT 0x8E (MQTT-3.1.4-3)")
    def test_v5_takeover_disconnects_old_with_0x8e(self):
        cid = uid("t")
        old = self.raw(client_id=cid, version=5)
        new = self.client(client_id=cid, version=MQTTv5)
        got = old.expect_closed()
        d = disconnect_packet(got)
        self.assertIsNotNone(d, "old connection got no DISCONNECT: %r" % got)
        self.assertEqual(d.rc, 0x8E)
        self.assertIsNone(new.disconnected)
        new.subscribe("to/" + uid(), 0)  # the new connection works

    def test_v311_takeover_closes_old(self):
        cid = uid("t")
        old = self.raw(client_id=cid, version=4)
        new = self.raw(client_id=cid, version=4)
        got = old.expect_closed()
        self.assertFalse([p for p in got if p.type == PUBLISH])
        new.ping()

    def test_takeover_keeps_session_when_clean_start_0(self):
        for v in (4, 5):
            with self.subTest(version=v):
                cid, t = uid("t"), "tos/" + uid()
                kw = {"clean": False, "props": {SESSION_EXPIRY: 60}} if v == 5 else {"clean": False}
                old = self.raw(client_id=cid, version=v, **kw)
                old.subscribe([(t, 1)])
                new = self.raw(client_id=cid, version=v, **kw)
                self.assertTrue(new.connack.session_present)
                old.expect_closed()
                self.client().publish(t, b"to-new", qos=1)
                m = new.read_until(PUBLISH)
                self.assertEqual(m.payload, b"to-new")
                new.ack_publish(m)
                new.disconnect(0, {SESSION_EXPIRY: 0} if v == 5 else None)

    def test_takeover_with_clean_start_discards_session(self):
        cid, t = uid("t"), "toc/" + uid()
        old = self.raw(client_id=cid, version=5, clean=False, props={SESSION_EXPIRY: 60})
        old.subscribe([(t, 1)])
        new = self.raw(client_id=cid, version=5, clean=True)
        self.assertFalse(new.connack.session_present)
        old.expect_closed()

    def test_takeover_loop_stable(self):
        """Repeated takeovers leave exactly one working connection."""
        cid, t = uid("t"), "tol/" + uid()
        conns = [self.raw(client_id=cid, version=5) for _ in range(5)]
        for c in conns[:-1]:
            c.expect_closed()
        last = conns[-1]
        last.subscribe([(t, 1)])
        self.client().publish(t, b"x", qos=1)
        self.assertEqual(last.read_until(PUBLISH).payload, b"x")


if __name__ == "__main__":
    unittest.main()
