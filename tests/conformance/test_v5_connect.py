"""MQTT 5.0 conformance: CONNECT, CONNACK, Keep Alive, PINGREQ and the data
representation rules of chapters 1 and 2 (sections 1.5, 2.1-2.2, 3.1, 3.2,
3.12, 4.12 for a Client without an Authentication Method)."""
import struct
import time

import mqttraw as mr
from mqttraw import (connect, publish, subscribe, unsubscribe, pubrel,
                     pingreq, disconnect, raw, utf8, binary, encode_varint)
from raw_extra import BrokerTest, RecordingClient, skip_on_mosquitto, main


def connect_body(client_id, flags=0x02, props=b"\x00", tail=b""):
    """A v5 CONNECT body built by hand: header, flags, props, client id, tail."""
    return utf8("MQTT") + bytes([5, flags]) + struct.pack("!H", 60) + props + utf8(client_id) + tail


class ConnectTest(BrokerTest):

    def test_first_packet_must_be_connect(self):
        """A connection whose first packet is not CONNECT is closed without
        any answer [MQTT-3.1.0-1] [MQTT-3.14.0-1]."""
        for first in (pingreq(), subscribe(1, [(self.topic(), 0)]), publish(self.topic(), b"x")):
            c = self.raw_client()
            c.send(first)
            self.assertTrue(c.expect_closed(), "server kept the connection open")
            self.assertEqual(c.received, [], "no packet may answer a non-CONNECT first packet")

    def test_second_connect_is_protocol_error(self):
        """A second CONNECT is a Protocol Error: the connection is closed and
        no second CONNACK is sent [MQTT-3.1.0-2] [MQTT-3.2.0-2] [MQTT-4.13.1-1]."""
        c = self.connect()
        c.send(connect(self.cid("b")))
        self.assert_closed(c, reasons={0x82})
        self.assertFalse([p for p in c.received if p.type == mr.CONNACK])

    def test_protocol_name_must_be_mqtt(self):
        """A CONNECT with another Protocol Name is refused: closed, at most a
        CONNACK >= 0x80 first [MQTT-3.1.2-1]."""
        p = self.connect_expect_fail(connect(self.cid(), proto_name="MQTX"))
        if p is not None:
            self.assertEqual(p.reason, mr.RC_UNSUPPORTED_PROTOCOL_VERSION, p)

    def test_unsupported_protocol_version(self):
        """Protocol Version 6 is refused and the connection closed; a CONNACK
        sent first has Reason Code 0x84, or 0x01 (the code MQTT 3.1.1 requires
        of a multi-version server for a level it does not support)
        [MQTT-3.1.2-2] [MQTT-3.14.0-1]."""
        c = self.raw_client()
        c.send(connect(self.cid(), proto_level=6))
        self.assertTrue(c.expect_closed(), "server kept the connection open")
        for p in c.received:
            self.assertEqual(p.type, mr.CONNACK, c.received)
            self.assertIn(p.body[1], (mr.RC_UNSUPPORTED_PROTOCOL_VERSION, 0x01), p)
        self.assertLessEqual(len(c.received), 1)

    def test_reserved_connect_flag(self):
        """The reserved Connect Flag must be 0, else Malformed Packet
        [MQTT-3.1.2-3] [MQTT-3.1.4-1]."""
        self.connect_expect_fail(connect(self.cid(), flags=0x03))

    def test_will_flag_requires_will_fields(self):
        """Will Flag 1 without Will Properties / Topic / Payload is refused
        [MQTT-3.1.2-9] [MQTT-3.1.4-1]."""
        self.connect_expect_fail(raw(0x10, connect_body(self.cid(), flags=0x06)))

    def test_will_qos_needs_will_flag(self):
        """Will QoS must be 0 when the Will Flag is 0 [MQTT-3.1.2-11]."""
        self.connect_expect_fail(connect(self.cid(), flags=0x0A))
        self.connect_expect_fail(connect(self.cid("b"), flags=0x12))

    def test_will_qos_values(self):
        """Will QoS 0, 1 and 2 are accepted; 3 is a Malformed Packet
        [MQTT-3.1.2-12]."""
        for q in (0, 1, 2):
            c = self.connect(self.cid("q%d" % q), will={"topic": self.topic(), "qos": q})
            c.send(disconnect(0))
        self.connect_expect_fail(connect(self.cid("q3"), flags=0x1E,
                                         will={"topic": self.topic()}))

    def test_will_retain_needs_will_flag(self):
        """Will Retain must be 0 when the Will Flag is 0 [MQTT-3.1.2-13]."""
        self.connect_expect_fail(connect(self.cid(), flags=0x22))

    def test_user_name_and_password_flags(self):
        """User Name / Password present exactly when their flags say so:
        trailing fields without a flag and flags without a field are refused
        [MQTT-3.1.2-16] [MQTT-3.1.2-17] [MQTT-3.1.2-18] [MQTT-3.1.2-19]."""
        self.connect_expect_fail(raw(0x10, connect_body(self.cid("a"), tail=utf8("user"))))
        self.connect_expect_fail(raw(0x10, connect_body(self.cid("b"), tail=binary(b"pw"))))
        self.connect_expect_fail(raw(0x10, connect_body(self.cid("c"), flags=0x82)))
        self.connect_expect_fail(raw(0x10, connect_body(self.cid("d"), flags=0xC2, tail=utf8("user"))))
        self.connect_expect_fail(raw(0x10, connect_body(self.cid("e"), flags=0x42)))
        # and well-formed ones are accepted, a Password without User Name too
        self.connect(self.cid("f"), username="user", password=b"pw")
        self.connect(self.cid("g"), password=b"token")

    def test_client_id_must_be_present(self):
        """A CONNECT whose payload lacks the Client Identifier is refused
        [MQTT-3.1.3-3] [MQTT-3.1.4-1]."""
        body = utf8("MQTT") + bytes([5, 0x02]) + struct.pack("!H", 60) + b"\x00"
        self.connect_expect_fail(raw(0x10, body))

    def test_client_id_must_be_utf8(self):
        """A Client Identifier that is not valid UTF-8 is rejected: CONNACK
        0x85 (or another code >= 0x80) at most, then close [MQTT-3.1.3-4]
        [MQTT-3.1.3-8] [MQTT-1.5.4-1]."""
        self.connect_expect_fail(connect(b"ab\xffcd"))
        self.connect_expect_fail(connect(b"ab\xed\xa0\x80cd"))

    def test_client_id_23_alphanumeric_allowed(self):
        """ClientIDs of 1 to 23 bytes of [0-9a-zA-Z] are allowed
        [MQTT-3.1.3-5]."""
        alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
        for cid in (alphabet[:23], alphabet[23:46], alphabet[39:], "Q%d" % (self._n % 10)):
            self.assertLessEqual(len(cid), 23)
            c = self.connect(cid)
            c.send(disconnect(0))
            self.assertTrue(c.expect_closed())

    def test_zero_length_client_id(self):
        """A zero-length ClientID is either refused (CONNACK 0x85, close) or
        the Server assigns a unique one, returns it as Assigned Client
        Identifier and uses it for the Session [MQTT-3.1.3-6] [MQTT-3.1.3-7]
        [MQTT-3.2.2-16] [MQTT-3.1.3-8]."""
        c = self.raw_client()
        c.send(connect("", clean=True, props={mr.SESSION_EXPIRY_INTERVAL: 60}))
        p = self.recv(c, mr.CONNACK)
        if p.reason != 0:
            self.assertEqual(p.reason, mr.RC_CLIENT_ID_NOT_VALID, p)
            self.assertTrue(c.expect_closed())
            return
        assigned = p.props.get(mr.ASSIGNED_CLIENT_IDENTIFIER)
        self.assertTrue(assigned, "no Assigned Client Identifier: %r" % p)
        self.assertIsInstance(assigned, str)
        # a second one gets another id, not in use by any other Session
        c2 = self.raw_client()
        c2.send(connect("", props={mr.SESSION_EXPIRY_INTERVAL: 60}))
        p2 = self.recv(c2, mr.CONNACK)
        self.assertEqual(p2.reason, 0, p2)
        self.assertNotEqual(p2.props.get(mr.ASSIGNED_CLIENT_IDENTIFIER), assigned)
        # the CONNECT was processed as if the Client had sent that ClientID
        self.subscribe(c, self.topic())
        c.send(disconnect(0))
        self.assertTrue(c.expect_closed())
        c3 = self.connect(assigned, clean=False, props={mr.SESSION_EXPIRY_INTERVAL: 60})
        self.assertTrue(c3.connack.session_present, c3.connack)
        c3.send(disconnect(0, props={mr.SESSION_EXPIRY_INTERVAL: 0}))
        c2.send(disconnect(0, props={mr.SESSION_EXPIRY_INTERVAL: 0}))

    def test_will_topic_must_be_utf8(self):
        """A Will Topic that is not valid UTF-8 is refused [MQTT-3.1.3-11]."""
        self.connect_expect_fail(connect(self.cid(), will={"topic": b"w/\xff", "payload": b"x"}))

    def test_user_name_must_be_utf8(self):
        """A User Name that is not valid UTF-8 is refused [MQTT-3.1.3-12]."""
        self.connect_expect_fail(connect(self.cid(), username=b"us\xc3\x28er"))

    def test_malformed_connect_closed(self):
        """CONNECTs that do not match the format are refused: Remaining Length
        shorter than the fields, property length overrunning the packet, a
        string running past the end, an unknown property, a duplicated
        property [MQTT-3.1.4-1] [MQTT-4.13.1-1]."""
        good = connect(self.cid())
        body = good[2:]
        bad = [
            raw(0x10, body[:-3]),                                          # truncated client id
            raw(0x10, connect_body(self.cid("b"), props=b"\x05\x11")),     # props overrun
            raw(0x10, connect_body(self.cid("c"), props=b"\x02\x7f\x00")),  # unknown property
            connect(self.cid("d"), props=[(mr.SESSION_EXPIRY_INTERVAL, 1),
                                          (mr.SESSION_EXPIRY_INTERVAL, 2)]),  # twice
            connect(self.cid("e"), props={mr.RECEIVE_MAXIMUM: 0}),       # Receive Maximum 0
            connect(self.cid("f"), props={mr.MAXIMUM_PACKET_SIZE: 0}),   # Maximum Packet Size 0
            connect(self.cid("g"), props={mr.REQUEST_PROBLEM_INFORMATION: 2}),
        ]
        for pkt in bad:
            with self.subTest(pkt=pkt):
                self.connect_expect_fail(pkt)

    def test_connack_success(self):
        """An accepted CONNECT gets CONNACK 0x00 whose Acknowledge Flags bits
        7-1 are 0 [MQTT-3.1.4-5] [MQTT-3.2.2-1] [MQTT-3.2.2-8]."""
        c = self.connect()
        p = c.connack
        self.assertEqual(p.reason, 0)
        self.assertEqual(p.body[0] & 0xFE, 0, p)
        self.assertEqual(p.flags, 0)
        self.assertIsNone(p.decode_error, p)

    def test_connack_before_any_other_packet(self):
        """Packets sent right behind the CONNECT are answered only after the
        CONNACK, and only one CONNACK comes [MQTT-3.2.0-1] [MQTT-3.2.0-2]."""
        c = self.raw_client()
        t = self.topic()
        c.send(connect(self.cid()) + subscribe(1, [(t, 1)]) + pingreq()
               + publish(t, b"m", qos=1, packet_id=2))
        first = self.recv(c)
        self.assertEqual(first.type, mr.CONNACK, first)
        self.assertEqual(first.reason, 0)
        rest = []
        while {mr.SUBACK, mr.PINGRESP, mr.PUBACK, mr.PUBLISH} - {p.type for p in rest}:
            rest.append(self.recv(c))
        rest += self.drain(c, 0.5)
        types = sorted(p.type for p in rest)
        self.assertNotIn(mr.CONNACK, types)
        for want in (mr.SUBACK, mr.PINGRESP, mr.PUBACK, mr.PUBLISH):
            self.assertIn(want, types, rest)

    def test_rejected_connect_data_not_processed(self):
        """When the Server rejects a CONNECT, a retained PUBLISH sent right
        behind it is not processed [MQTT-3.1.4-6]."""
        t = self.topic()
        c = self.raw_client()
        c.send(connect(self.cid(), props={mr.AUTHENTICATION_METHOD: "x-unsupported"})
               + publish(t, b"must not be stored", qos=0, retain=True)
               + publish(t, b"must not be stored", qos=1, retain=True, packet_id=1))
        self.assertTrue(c.expect_closed())
        self.assertEqual([p.type for p in c.received if p.type != mr.CONNACK], [])
        s = self.connect(self.cid("s"))
        s.send(subscribe(1, [(t, 1)]))
        self.recv(s, mr.SUBACK)
        self.expect_nothing(s, 1.0)

    def test_refused_connect_session_present_0(self):
        """A refused CONNECT for a ClientID with a stored Session gets a
        CONNACK with Session Present 0, then the connection closes
        [MQTT-3.2.2-6] [MQTT-3.2.2-7] [MQTT-4.13.2-1] [MQTT-3.1.4-2]."""
        cid = self.cid()
        c = self.connect(cid, clean=True, props={mr.SESSION_EXPIRY_INTERVAL: 120})
        self.subscribe(c, self.topic())
        c.send(disconnect(0))
        self.assertTrue(c.expect_closed())
        p = self.connect_expect_fail(connect(cid, clean=False,
                                             props={mr.SESSION_EXPIRY_INTERVAL: 120,
                                                    mr.AUTHENTICATION_METHOD: "x-unsupported"}))
        if p is not None:
            self.assertFalse(p.session_present, p)
        c = self.connect(cid, clean=True)
        c.send(disconnect(0))

    def test_unsupported_authentication_method(self):
        """A CONNECT with an Authentication Method the Server does not
        support: CONNACK 0x8C or 0x87 at most, then close [MQTT-4.12.0-1]
        [MQTT-4.12.0-4] [MQTT-3.1.4-2]."""
        p = self.connect_expect_fail(connect(self.cid(), props={
            mr.AUTHENTICATION_METHOD: "x-unsupported", mr.AUTHENTICATION_DATA: b"\x01"}))
        if p is not None:
            self.assertIn(p.reason, (0x8C, 0x87), p)

    def test_no_authentication_method_no_auth(self):
        """Without an Authentication Method in CONNECT, the CONNACK has none
        and the Server sends no AUTH [MQTT-4.12.0-6]."""
        c = self.connect()
        self.assertNotIn(mr.AUTHENTICATION_METHOD, c.connack.props)
        self.assertNotIn(mr.AUTHENTICATION_DATA, c.connack.props)
        t = self.topic()
        self.subscribe(c, t, 1)
        self.publish_q1(c, t, b"x", packet_id=5)
        c.send(pingreq())
        got = self.collect(c, 0.5)
        self.assertNotIn(mr.AUTH, [p.type for p in got])

    def test_request_response_information_0(self):
        """Request Response Information 0 (or absent): no Response Information
        in CONNACK [MQTT-3.1.2-28]."""
        c = self.connect(props={mr.REQUEST_RESPONSE_INFORMATION: 0})
        self.assertNotIn(mr.RESPONSE_INFORMATION, c.connack.props)
        c = self.connect(self.cid("b"))
        self.assertNotIn(mr.RESPONSE_INFORMATION, c.connack.props)

    def test_request_problem_information_0(self):
        """Request Problem Information 0: no Reason String or User Property on
        PUBACK, PUBREC, PUBCOMP, SUBACK or UNSUBACK, successful or not
        [MQTT-3.1.2-29]."""
        c = self.connect(props={mr.REQUEST_PROBLEM_INFORMATION: 0})
        t = self.topic()
        c.send(publish(t + "/none", b"x", qos=1, packet_id=1))
        c.send(publish(t + "/none", b"x", qos=2, packet_id=2))
        c.send(pubrel(2) + pubrel(77))                      # 77: unknown id
        c.send(subscribe(3, [(t, 2), (t + "/a/#", 1)]))
        c.send(unsubscribe(4, [t + "/never", t]))
        c.send(publish("$SYS/conformance", b"x", qos=1, packet_id=5))
        got = []
        while {mr.PUBACK, mr.PUBREC, mr.PUBCOMP, mr.SUBACK, mr.UNSUBACK} - {p.type for p in got}:
            got.append(self.recv(c))
        got += self.drain(c, 0.5)
        for p in got:
            if p.type in (mr.PUBLISH, mr.CONNACK, mr.DISCONNECT):
                continue
            self.assertNotIn(mr.REASON_STRING, p.props, p)
            self.assertNotIn(mr.USER_PROPERTY, p.props, p)

    def test_pingreq_pingresp(self):
        """PINGREQ is answered with PINGRESP [MQTT-3.12.4-1]."""
        c = self.connect()
        for _ in range(3):
            c.send(pingreq())
            p = self.recv(c, mr.PINGRESP)
            self.assertEqual(p.flags, 0)
            self.assertEqual(p.body, b"")


class KeepAliveTest(BrokerTest):

    @skip_on_mosquitto("checks Keep Alive only every ~5 s: a Keep Alive 2 client "
                       "is closed after ~5.2 s instead of 3 s")
    def test_keep_alive_timeout(self):
        """A Client silent for 1.5 x Keep Alive is disconnected; without a
        Server Keep Alive the Server uses the Client's Keep Alive
        [MQTT-3.1.2-22] [MQTT-3.2.2-22]."""
        c = self.connect(keepalive=2)
        t0 = time.monotonic()
        ka = c.connack.props.get(mr.SERVER_KEEP_ALIVE, 2)
        if ka == 0 or ka > 10:
            self.skipTest("Server Keep Alive %d" % ka)
        self.assertTrue(c.expect_closed(1.5 * ka + 5), "not closed after Keep Alive expired")
        elapsed = time.monotonic() - t0
        self.assertGreaterEqual(elapsed, ka * 1.0, "closed before Keep Alive elapsed")
        self.assertLessEqual(elapsed, 1.5 * ka + 1.0, "closed %.1fs after CONNACK" % elapsed)

    def test_keep_alive_timeout_eventually(self):
        """A silent Client is eventually disconnected while an active one with
        the same Keep Alive is not [MQTT-3.1.2-22]."""
        silent = self.connect(self.cid("s"), keepalive=1)
        active = self.connect(self.cid("a"), keepalive=1)
        ka = silent.connack.props.get(mr.SERVER_KEEP_ALIVE, 1)
        if ka == 0 or ka > 5:
            self.skipTest("Server Keep Alive %d" % ka)
        deadline = time.monotonic() + 1.5 * ka + 8
        closed = False
        while time.monotonic() < deadline and not closed:
            active.send(pingreq())
            self.recv(active, mr.PINGRESP)
            try:
                closed = silent.recv_packet(0.3) is None
            except TimeoutError:
                pass
        self.assertTrue(closed, "silent client not disconnected")
        active.send(pingreq())
        self.recv(active, mr.PINGRESP)

    def test_pingreq_keeps_connection(self):
        """PINGREQs within the Keep Alive keep the connection open past
        1.5 x Keep Alive, each answered by PINGRESP [MQTT-3.1.2-22]
        [MQTT-3.12.4-1]."""
        c = self.connect(keepalive=1)
        end = time.monotonic() + 3.5
        while time.monotonic() < end:
            c.send(pingreq())
            self.recv(c, mr.PINGRESP)
            time.sleep(0.4)


class ServerKeepAliveTest(BrokerTest):
    CONFIG = {"mqtt.max_keepalive": 10}

    def test_server_keep_alive_announced(self):
        """A Keep Alive above the Server's limit is answered with a Server
        Keep Alive; a Keep Alive within the limit is used as is
        [MQTT-3.2.2-22]."""
        c = self.connect(keepalive=60)
        self.assertEqual(c.connack.props.get(mr.SERVER_KEEP_ALIVE), 10, c.connack)
        c2 = self.connect(self.cid("b"), keepalive=5)
        self.assertEqual(c2.connack.props.get(mr.SERVER_KEEP_ALIVE, 5), 5, c2.connack)


@skip_on_mosquitto("refuses max_keepalive below 10 and checks Keep Alive only every ~5 s")
class ServerKeepAliveTimingTest(BrokerTest):
    CONFIG = {"mqtt.max_keepalive": 2}

    def test_server_keep_alive_applied(self):
        """The Server disconnects a silent Client after 1.5 x the Server Keep
        Alive it announced, not the Client's Keep Alive [MQTT-3.1.2-22]."""
        c = self.connect(keepalive=60)
        ka = c.connack.props.get(mr.SERVER_KEEP_ALIVE)
        self.assertEqual(ka, 2, c.connack)
        t0 = time.monotonic()
        self.assertTrue(c.expect_closed(1.5 * ka + 5))
        self.assertLessEqual(time.monotonic() - t0, 1.5 * ka + 1.0)


class DataRepresentationTest(BrokerTest):

    def test_surrogate_is_malformed(self):
        """A Topic Name encoding a UTF-16 surrogate is ill-formed UTF-8: the
        connection is closed [MQTT-1.5.4-1] [MQTT-3.3.2-1] [MQTT-4.13.1-1]."""
        c = self.connect()
        c.send(publish(self.topic().encode() + b"\xed\xa0\x80", b"x"))
        self.assert_closed(c, reasons={0x81, 0x82, 0x90})

    def test_overlong_and_invalid_utf8_is_malformed(self):
        """Overlong encodings and stray continuation bytes are ill-formed
        UTF-8 too [MQTT-1.5.4-1] [MQTT-3.3.2-1]."""
        for bad in (b"\xc0\xaf", b"\x80", b"\xf8\x88\x80\x80\x80", b"\xef\xbf"):
            with self.subTest(bad=bad):
                c = self.connect(self.cid(bad.hex()))
                c.send(publish(self.topic().encode() + bad, b"x"))
                self.assert_closed(c, reasons={0x81, 0x82, 0x90})

    def test_null_character_is_malformed(self):
        """U+0000 in a Topic Name is a Malformed Packet [MQTT-1.5.4-2]
        [MQTT-4.7.3-2]."""
        c = self.connect()
        c.send(publish(self.topic().encode() + b"\x00x", b"x"))
        self.assert_closed(c, reasons={0x81, 0x82, 0x90})

    def test_bom_not_stripped(self):
        """0xEF 0xBB 0xBF in a Topic Name is kept: a subscriber to the exact
        name receives the message under that name, a subscriber to the name
        without it does not [MQTT-1.5.4-3]."""
        base = self.topic()
        name = base + "/\ufeffx"
        s = self.subscriber(name, 0)
        s2 = self.connect(self.cid("n"))
        self.subscribe(s2, base + "/x")
        p = self.connect(self.cid("p"))
        p.send(publish(name, b"bom"))
        m = self.recv(s, mr.PUBLISH)
        self.assertEqual(m.topic, name)
        self.assertEqual(m.payload, b"bom")
        self.expect_nothing(s2, 0.5)

    def test_user_property_must_be_utf8(self):
        """A User Property whose name or value is not valid UTF-8 is a
        Malformed Packet [MQTT-1.5.7-1]."""
        for pair in ((b"k\xff", "v"), ("k", b"v\xff")):
            with self.subTest(pair=pair):
                c = self.connect(self.cid(str(len(pair[0]))))
                c.send(publish(self.topic(), b"x", props=[(mr.USER_PROPERTY, pair)]))
                self.assert_closed(c, reasons={0x81, 0x82})

    def test_minimal_variable_byte_integers(self):
        """The Server encodes Remaining Length (and property lengths) with the
        fewest bytes [MQTT-1.5.5-1]."""
        t = self.topic()
        s = self.connect(cls=RecordingClient)
        self.subscribe(s, t, 1)
        p = self.connect(self.cid("p"))
        for size in (0, 100, 126, 127, 200, 16380, 17000):
            p.send(publish(t, b"x" * size, qos=0))
            m = self.recv(s, mr.PUBLISH)
            self.assertEqual(len(m.payload), size)
        s.send(pingreq())
        self.recv(s, mr.PINGRESP)
        for m in s.log:
            self.assertEqual(m.header[1:], encode_varint(len(m.body)), m)

    def test_reserved_flags_connect(self):
        """A CONNECT whose fixed header flags are not 0 is malformed
        [MQTT-2.1.3-1]."""
        pkt = bytearray(connect(self.cid()))
        pkt[0] = 0x11
        self.connect_expect_fail(bytes(pkt))

    @skip_on_mosquitto("ignores the reserved fixed header flags of PINGREQ, "
                       "PUBACK, PUBREC and PUBCOMP")
    def test_reserved_flags_other_packets(self):
        """PINGREQ, PUBACK, PUBREC and PUBCOMP with non-zero reserved flags
        are malformed: the connection is closed [MQTT-2.1.3-1]
        [MQTT-4.13.1-1]."""
        for first in (0xC1, 0xC8, 0x41, 0x52, 0x74):
            with self.subTest(first=hex(first)):
                c = self.connect(self.cid("%x" % first))
                body = b"" if first >> 4 == mr.PINGREQ else b"\x00\x01"
                c.send(raw(first, body))
                self.assert_closed(c, reasons={0x81, 0x82})

    def test_property_length_zero_when_no_properties(self):
        """Packets without properties carry a Property Length of 0 (CONNACK,
        SUBACK, PUBLISH, PUBACK, UNSUBACK) [MQTT-2.2.2-1]."""
        t = self.topic()
        s = self.connect()
        s.send(subscribe(1, [(t, 1)]))
        suback = self.recv(s, mr.SUBACK)
        p = self.connect(self.cid("p"))
        p.send(publish(t, b"pay", qos=0))
        m = self.recv(s, mr.PUBLISH)
        checks = [(suback, 2)]
        if not m.props:
            checks.append((m, len(utf8(t))))
        for pkt, at in checks:
            self.assertEqual(pkt.body[at], 0, pkt)
        c = p.connack
        self.assertEqual(c.body[2], len(c.body) - 3, c)   # property length byte present
        s.send(unsubscribe(2, [t]))
        u = self.recv(s, mr.UNSUBACK)
        if not u.props:
            self.assertEqual(u.body[2], 0, u)


class MaximumQosTest(BrokerTest):
    CONFIG = {"mqtt.max_qos_allowed": 1}

    def test_maximum_qos_in_connack(self):
        """A Server without QoS 2 sends Maximum QoS in CONNACK
        [MQTT-3.2.2-9]."""
        c = self.connect()
        self.assertEqual(c.connack.props.get(mr.MAXIMUM_QOS), 1, c.connack)

    def test_subscribe_any_qos_accepted(self):
        """SUBSCRIBE with Requested QoS 0, 1 or 2 is accepted, granting at
        most the Maximum QoS [MQTT-3.2.2-10] [MQTT-3.8.4-7]."""
        c = self.connect()
        t = self.topic()
        c.send(subscribe(1, [(t + "/0", 0), (t + "/1", 1), (t + "/2", 2)]))
        p = self.recv(c, mr.SUBACK)
        self.assertEqual(len(p.reasons), 3)
        for requested, granted in zip((0, 1, 2), p.reasons):
            self.assertLessEqual(granted, min(requested, 1), p)

    def test_will_qos_above_maximum_refused(self):
        """A Will QoS above the Server's capability is refused (CONNACK 0x9B
        at most) and the connection closed [MQTT-3.2.2-12]."""
        p = self.connect_expect_fail(connect(self.cid(), will={"topic": self.topic(), "qos": 2}))
        if p is not None:
            self.assertEqual(p.reason, mr.RC_QOS_NOT_SUPPORTED, p)

    def test_publish_above_maximum_qos(self):
        """A PUBLISH above the Maximum QoS is a Protocol Error: DISCONNECT
        0x9B at most, then close [MQTT-3.2.2-11] [MQTT-4.13.1-1]."""
        c = self.connect()
        c.send(publish(self.topic(), b"x", qos=2, packet_id=1))
        self.assert_closed(c, reasons={0x9B, 0x82})


class RetainUnavailableTest(BrokerTest):
    CONFIG = {"mqtt.retain_available": "false"}

    def test_will_retain_refused(self):
        """Will Retain 1 on a Server without retained messages is refused
        (CONNACK 0x9A at most) and the connection closed [MQTT-3.2.2-13]."""
        p = self.connect_expect_fail(connect(self.cid(), will={"topic": self.topic(), "retain": True}))
        if p is not None:
            self.assertEqual(p.reason, mr.RC_RETAIN_NOT_SUPPORTED, p)

    def test_publish_retain_refused(self):
        """Retain Available 0 is announced and a retained PUBLISH is then a
        Protocol Error (DISCONNECT 0x9A) [MQTT-3.2.2-14] [MQTT-4.13.1-1]."""
        c = self.connect()
        self.assertEqual(c.connack.props.get(mr.RETAIN_AVAILABLE), 0, c.connack)
        c.send(publish(self.topic(), b"x", retain=True))
        self.assert_closed(c, reasons={0x9A, 0x82})


if __name__ == "__main__":
    main()
