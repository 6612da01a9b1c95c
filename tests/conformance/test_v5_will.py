"""MQTT 5.0 conformance: Will Messages (sections 3.1.2.5-3.1.2.7, 3.1.3.2,
3.14.4)."""
import time

import mqttraw as mr
from mqttraw import publish, subscribe, disconnect, raw
from raw_extra import BrokerTest, opts, main


class WillTest(BrokerTest):

    def _will_client(self, t, payload=b"gone", cid=None, will_props=None, props=None, **will):
        w = dict(topic=t, payload=payload, props=will_props, **will)
        return self.connect(cid or self.cid("w"), will=w, props=props)

    def test_will_published_on_abnormal_close(self):
        """A Will Message is stored with the Session and published when the
        connection closes without DISCONNECT [MQTT-3.1.2-7] [MQTT-3.1.2-8]."""
        t = self.topic()
        s = self.subscriber(t, 2)
        w = self._will_client(t, b"bye", qos=1)
        self.expect_nothing(s, 0.3)
        w.close()
        m = self.recv(s, mr.PUBLISH)
        self.assertEqual((m.topic, m.payload, m.qos), (t, b"bye", 1))

    def test_will_published_on_server_close(self):
        """A Will Message is published when the Server closes the connection
        because of a Protocol Error [MQTT-3.1.2-8]."""
        t = self.topic()
        s = self.subscriber(t, 0)
        w = self._will_client(t, b"error")
        w.send(publish(self.topic("x") + "/#", b"bad"))
        self.assertTrue(w.expect_closed())
        self.assertEqual(self.recv(s, mr.PUBLISH).payload, b"error")

    def test_will_discarded_on_normal_disconnect(self):
        """DISCONNECT 0x00 discards the Will Message: it is not published,
        now or later [MQTT-3.14.4-3] [MQTT-3.1.2-10]."""
        t = self.topic()
        s = self.subscriber(t, 0)
        w = self._will_client(t, props={mr.SESSION_EXPIRY_INTERVAL: 1})
        w.send(disconnect(0))
        self.assertTrue(w.expect_closed())
        self.expect_nothing(s, 1.8)   # past the end of the Session too

    def test_will_published_on_disconnect_with_will(self):
        """DISCONNECT 0x04 (Disconnect with Will Message) publishes it
        [MQTT-3.1.2-8]."""
        t = self.topic()
        s = self.subscriber(t, 0)
        w = self._will_client(t, b"asked")
        w.send(disconnect(0x04))
        self.assertTrue(w.expect_closed())
        self.assertEqual(self.recv(s, mr.PUBLISH).payload, b"asked")

    def test_will_published_once(self):
        """A published Will Message is removed from the Session: a later
        connection of the Session without a Will publishes nothing
        [MQTT-3.1.2-10]."""
        t = self.topic()
        s = self.subscriber(t, 0)
        cid = self.cid("w")
        w = self._will_client(t, b"once", cid=cid, props={mr.SESSION_EXPIRY_INTERVAL: 60})
        w.close()
        self.assertEqual(self.recv(s, mr.PUBLISH).payload, b"once")
        w = self.connect(cid, clean=False, props={mr.SESSION_EXPIRY_INTERVAL: 60})
        self.assertTrue(w.connack.session_present)
        w.close()
        self.expect_nothing(s, 1.0)
        w = self.connect(cid, clean=True)
        w.send(disconnect(0))

    def test_will_retain_flag(self):
        """Will Retain 0 publishes a non-retained message, Will Retain 1 a
        retained one [MQTT-3.1.2-14] [MQTT-3.1.2-15]."""
        t = self.topic()
        s = self.connect(self.cid("s"))
        self.subscribe(s, t + "/+", opts(0, rap=True))
        self._will_client(t + "/plain", b"p", cid=self.cid("w0"), retain=False).close()
        self._will_client(t + "/kept", b"k", cid=self.cid("w1"), retain=True).close()
        got = {m.topic: m for m in (self.recv(s, mr.PUBLISH), self.recv(s, mr.PUBLISH))}
        self.assertFalse(got[t + "/plain"].retain)
        self.assertTrue(got[t + "/kept"].retain)
        late = self.connect(self.cid("late"))
        late.send(subscribe(1, [(t + "/+", 0)]))
        self.recv(late, mr.SUBACK)
        retained = self.publishes(late, 0.7)
        self.assertEqual([(m.topic, m.payload, m.retain) for m in retained], [(t + "/kept", b"k", True)])
        s.send(publish(t + "/kept", b"", retain=True))

    def test_will_delay_then_published(self):
        """With a Will Delay Interval the Will Message is published once the
        delay has passed [MQTT-3.1.2-8]."""
        t = self.topic()
        s = self.subscriber(t, 0)
        w = self._will_client(t, b"late", will_props={mr.WILL_DELAY_INTERVAL: 2},
                              props={mr.SESSION_EXPIRY_INTERVAL: 60})
        t0 = time.monotonic()
        w.close()
        m = self.recv(s, mr.PUBLISH, timeout=8)
        self.assertEqual(m.payload, b"late")
        self.assertGreaterEqual(time.monotonic() - t0, 1.5, "Will Delay Interval not honoured")
        c = self.connect(self.cid("w"), clean=True)
        c.send(disconnect(0))

    def test_will_at_session_end_before_delay(self):
        """The Will Message is published when the Session ends, even if the
        Will Delay Interval is longer [MQTT-3.1.2-8]."""
        t = self.topic()
        s = self.subscriber(t, 0)
        w = self._will_client(t, b"session over", will_props={mr.WILL_DELAY_INTERVAL: 60},
                              props={mr.SESSION_EXPIRY_INTERVAL: 1})
        w.close()
        m = self.recv(s, mr.PUBLISH, timeout=8)
        self.assertEqual(m.payload, b"session over")

    def test_reconnect_within_will_delay(self):
        """Reconnecting to the Session before the Will Delay Interval passes
        cancels the Will Message [MQTT-3.1.3-9] [MQTT-3.1.2-8]."""
        t = self.topic()
        s = self.subscriber(t, 0)
        cid = self.cid("w")
        w = self._will_client(t, b"never", cid=cid, will_props={mr.WILL_DELAY_INTERVAL: 2},
                              props={mr.SESSION_EXPIRY_INTERVAL: 60})
        w.close()
        time.sleep(0.3)
        w = self.connect(cid, clean=False, props={mr.SESSION_EXPIRY_INTERVAL: 60})
        self.assertTrue(w.connack.session_present)
        self.expect_nothing(s, 3.0)
        w.send(disconnect(0, props={mr.SESSION_EXPIRY_INTERVAL: 0}))

    def test_will_properties_forwarded(self):
        """The Will Message keeps its User Properties in order and its other
        properties [MQTT-3.1.3-10]."""
        t = self.topic()
        s = self.subscriber(t, 1)
        users = [("k", "2"), ("a", "1"), ("k", "1"), ("\u00e4", "\u00f6")]
        wp = [(mr.CONTENT_TYPE, "text/plain"), (mr.RESPONSE_TOPIC, t + "/r"),
              (mr.CORRELATION_DATA, b"\x00c"), (mr.PAYLOAD_FORMAT_INDICATOR, 1)] + \
             [(mr.USER_PROPERTY, u) for u in users]
        w = self._will_client(t, b"props", qos=1, will_props=wp)
        w.close()
        m = self.recv(s, mr.PUBLISH)
        self.assertEqual(m.props.get(mr.USER_PROPERTY), users)
        self.assertEqual(m.props.get(mr.CONTENT_TYPE), "text/plain")
        self.assertEqual(m.props.get(mr.RESPONSE_TOPIC), t + "/r")
        self.assertEqual(m.props.get(mr.CORRELATION_DATA), b"\x00c")
        self.assertEqual(m.props.get(mr.PAYLOAD_FORMAT_INDICATOR), 1)

    def test_will_on_takeover(self):
        """The Will Message (no delay) of a connection taken over by a new
        connection with the same ClientID is published [MQTT-3.1.2-8]."""
        t = self.topic()
        s = self.subscriber(t, 0)
        cid = self.cid("w")
        old = self._will_client(t, b"taken", cid=cid)
        new = self.connect(cid)
        self.assertTrue(old.expect_closed())
        self.assertEqual(self.recv(s, mr.PUBLISH).payload, b"taken")
        new.send(disconnect(0))

    def test_malformed_disconnect_publishes_will(self):
        """A DISCONNECT with reserved flags set is malformed: the connection
        is closed (DISCONNECT 0x81 at most) and, not being a normal
        disconnection, the Will Message is published [MQTT-3.14.1-1]
        [MQTT-3.1.2-8]."""
        t = self.topic()
        s = self.subscriber(t, 0)
        w = self._will_client(t, b"malformed")
        w.send(raw(0xE1, b""))
        self.assert_closed(w, reasons={0x81})
        self.assertEqual(self.recv(s, mr.PUBLISH).payload, b"malformed")


if __name__ == "__main__":
    main()
