"""MQTT 5.0 conformance: DISCONNECT, AUTH and error handling (sections 3.14,
3.15, 4.12, 4.13). The enhanced-authentication exchange itself needs an AUTH
hook in the broker, which broker-cli does not set; see the statement list."""
import mqttraw as mr
from mqttraw import connect, publish, disconnect, auth, raw, utf8
from raw_extra import BrokerTest, SERVER_DISCONNECT_CODES, main


class DisconnectTest(BrokerTest):

    def test_server_disconnect_carries_no_session_expiry(self):
        """A DISCONNECT from the Server uses a DISCONNECT Reason Code and never
        carries Session Expiry Interval (protocol error, takeover)
        [MQTT-3.14.2-2] [MQTT-3.14.2-1]."""
        props = {mr.SESSION_EXPIRY_INTERVAL: 30}
        c = self.connect(props=props)
        c.send(raw(0x36, utf8(self.topic()) + b"\x00\x01\x00x"))     # QoS 3: malformed
        d = self.assert_closed(c)
        cid = self.cid("t")
        old = self.connect(cid, props=props)
        new = self.connect(cid, props=props)
        self.assertTrue(old.expect_closed())
        discs = [p for p in old.received if p.type == mr.DISCONNECT]
        for p in ([d] if d else []) + discs:
            self.assertIn(p.reason, SERVER_DISCONNECT_CODES, p)
            self.assertNotIn(mr.SESSION_EXPIRY_INTERVAL, p.props, p)
        new.send(disconnect(0, props={mr.SESSION_EXPIRY_INTERVAL: 0}))

    def test_nothing_after_server_disconnect(self):
        """After its DISCONNECT the Server sends nothing more and closes the
        connection, even with messages pending for the Client
        [MQTT-3.14.4-1] [MQTT-3.14.4-2] [MQTT-4.13.2-1]."""
        t = self.topic()
        c = self.subscriber(t, 0)
        p = self.connect(self.cid("p"))
        p.send(b"".join(publish(t, b"flood %d" % i) for i in range(200)))
        c.send(raw(0x36, utf8(t) + b"\x00\x01\x00x"))           # QoS 3: malformed
        self.assertTrue(c.expect_closed(), "not closed")
        types = [x.type for x in c.received]
        if mr.DISCONNECT in types:
            self.assertEqual(types.index(mr.DISCONNECT), len(types) - 1, types[-5:])

    def test_no_disconnect_before_connack(self):
        """The Server sends no DISCONNECT before a successful CONNACK: errors
        right behind the CONNECT are reported after it [MQTT-3.14.0-1]."""
        c = self.raw_client()
        c.send(connect(self.cid()) + raw(0x36, utf8(self.topic()) + b"\x00\x01\x00x"))
        first = c.recv_packet()
        if first is not None:
            self.assertEqual((first.type, first.reason), (mr.CONNACK, 0), first)
        self.assert_closed(c)
        c = self.raw_client()
        c.send(connect(self.cid("b"), flags=0x01))               # malformed CONNECT
        self.assertTrue(c.expect_closed())
        self.assertNotIn(mr.DISCONNECT, [p.type for p in c.received])

    def test_session_expiry_set_on_disconnect_after_zero(self):
        """A DISCONNECT setting a non-zero Session Expiry Interval after CONNECT
        had 0 is a Protocol Error: not a valid DISCONNECT, the Will Message
        is published [MQTT-4.13.1-1] [MQTT-3.1.2-8]."""
        t = self.topic()
        s = self.subscriber(t, 0)
        c = self.connect(self.cid("w"), will={"topic": t, "payload": b"will"})
        c.send(disconnect(0, props={mr.SESSION_EXPIRY_INTERVAL: 100}))
        self.assert_closed(c, reasons={0x82})
        self.assertEqual(self.recv(s, mr.PUBLISH).payload, b"will")

    def test_disconnect_reserved_flags(self):
        """A DISCONNECT with non-zero reserved flags is malformed
        (DISCONNECT 0x81 at most, then close) [MQTT-3.14.1-1]."""
        c = self.connect()
        c.send(raw(0xE2, b"\x00"))
        self.assert_closed(c, reasons={0x81})


class AuthTest(BrokerTest):

    def test_auth_without_authentication_method(self):
        """An AUTH from a Client that sent no Authentication Method in CONNECT
        is a Protocol Error: the connection is closed [MQTT-4.12.0-7]
        [MQTT-4.13.1-1]."""
        for reason in (0x19, 0x18, 0x00):
            with self.subTest(reason=hex(reason)):
                c = self.connect(self.cid("%x" % reason))
                c.send(auth(reason, props={mr.AUTHENTICATION_METHOD: "SCRAM-SHA-1"}))
                self.assert_closed(c, reasons={0x82, 0x8C, 0x81})

    def test_auth_reserved_flags(self):
        """An AUTH with non-zero reserved flags is malformed: the connection
        is closed [MQTT-3.15.1-1]."""
        c = self.connect()
        c.send(raw(0xF1, b"\x19\x00"))
        self.assert_closed(c, reasons={0x81, 0x82})

    def test_auth_before_connect_refused(self):
        """An AUTH instead of CONNECT is refused without any answer
        [MQTT-3.1.0-1] [MQTT-3.14.0-1]."""
        c = self.raw_client()
        c.send(auth(0x18, props={mr.AUTHENTICATION_METHOD: "x"}))
        self.assertTrue(c.expect_closed())
        self.assertEqual(c.received, [])


if __name__ == "__main__":
    main()
