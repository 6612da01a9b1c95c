"""MQTT 3.1.1 conformance: CONNECT/CONNACK, sessions, wills, keep alive,
PING, DISCONNECT, flags and UTF-8 handling.

Each test names the normative statements it covers ([MQTT-x.x.x-y]); the
ids and their server/client/none classification are in statements_v311.tsv.
"""
import socket
import time
import unittest

from v311util import (V, T, V311Case, cid, topic, m, connect, publish,
                      subscribe, pingreq, disconnect, raw, utf8, main)


class Connect(V311Case):
    def test_first_packet_must_be_connect(self):
        """[MQTT-3.1.0-1] a first packet other than CONNECT is answered by a close."""
        for data in (publish("a/b", b"x", version=V), pingreq(),
                     subscribe(1, [("a", 0)], version=V)):
            c = self.raw()
            c.send(data + pingreq())
            self.assert_closed(c, "after %r" % data[:1])

    def test_second_connect_is_a_violation(self):
        """[MQTT-3.1.0-2] [MQTT-4.8.0-1] a second CONNECT closes the connection."""
        c = self.client()
        c.send(connect(cid(), version=V))
        c.send(pingreq())
        self.assert_closed(c)

    def test_wrong_protocol_name(self):
        """[MQTT-3.1.2-1] a wrong protocol name is not accepted under 3.1.1."""
        for name in ("MQTX", "mqtt", "MQIsdp"):
            c = self.raw()
            c.send(connect(cid(), version=V, proto_name=name))
            closed = c.expect_closed(T)
            self.assertTrue(closed, name)
            for p in c.received:
                self.assertEqual(p.type, m.CONNACK, name)
                self.assertNotEqual(p.reason, 0, name)

    def test_unsupported_protocol_level(self):
        """[MQTT-3.1.2-2] [MQTT-3.2.2-4] [MQTT-3.2.2-5] CONNACK 0x01 with Session
        Present 0, then the close."""
        # make a session exist for the id first: Session Present must still be 0
        c0 = self.client("plevel", clean=False)
        c0.send(disconnect(version=V))
        self.assert_closed(c0)
        for level in (0, 2, 6, 255):
            c = self.raw()
            c.send(connect("plevel", version=V, proto_level=level, clean=False))
            p = self.recv(c, m.CONNACK)
            self.assertEqual(p.reason, 0x01, "level %d" % level)
            self.assertFalse(p.session_present)
            self.assert_closed(c)

    def test_reserved_connect_flag(self):
        """[MQTT-3.1.2-3] [MQTT-3.1.4-1] [MQTT-3.2.2-6] reserved flag 1: close without CONNACK."""
        c = self.raw()
        c.send(connect(cid(), version=V, flags=0x03))
        self.assert_closed(c)

    def test_will_flags_without_will(self):
        """[MQTT-3.1.2-11] [MQTT-3.1.2-13] [MQTT-3.1.2-15] [MQTT-3.1.4-1] will QoS or
        retain set without the Will Flag: close without CONNACK."""
        for flags in (0x0A, 0x12, 0x1A, 0x22, 0x2A):
            c = self.raw()
            c.send(connect(cid(), version=V, flags=flags))
            self.assert_closed(c, "flags %#x" % flags)

    def test_will_flag_without_will_fields(self):
        """[MQTT-3.1.2-11] [MQTT-3.1.2-9] Will Flag 0 with will fields in the payload
        (trailing bytes), and Will Flag 1 without them: close without CONNACK."""
        body = utf8("MQTT") + bytes([4, 0x02, 0, 60]) + utf8(cid()) + utf8("w/t") + utf8("msg")
        c = self.raw()
        c.send(raw(0x10, body))
        self.assert_closed(c, "will fields without Will Flag")
        c = self.raw()
        c.send(connect(cid(), version=V, flags=0x06))
        self.assert_closed(c, "Will Flag without will fields")

    def test_will_qos_3(self):
        """[MQTT-3.1.2-14] Will QoS 3: close without CONNACK."""
        c = self.raw()
        c.send(connect(cid(), version=V, will={"topic": "w", "qos": 3}))
        self.assert_closed(c)

    def test_user_name_and_password_flags(self):
        """[MQTT-3.1.2-18] [MQTT-3.1.2-19] [MQTT-3.1.2-20] [MQTT-3.1.2-21]
        [MQTT-3.1.2-22] the flags and the fields must agree; otherwise close
        without CONNACK."""
        base = utf8("MQTT") + bytes([4])
        cases = {
            "user name without flag": base + bytes([0x02, 0, 60]) + utf8(cid()) + utf8("user"),
            "flag without user name": base + bytes([0x82, 0, 60]) + utf8(cid()),
            "password without flag": base + bytes([0x82, 0, 60]) + utf8(cid()) + utf8("u")
            + utf8("pw"),
            "flag without password": base + bytes([0xC2, 0, 60]) + utf8(cid()) + utf8("u"),
            "password without user name": base + bytes([0x42, 0, 60]) + utf8(cid())
            + utf8("pw"),
        }
        for name, body in cases.items():
            with self.subTest(name):
                c = self.raw()
                c.send(raw(0x10, body))
                self.assert_closed(c, name)
        # and the well-formed combination is accepted
        self.client(username="u", password=b"pw")

    def test_payload_field_order(self):
        """[MQTT-3.1.3-1] client id, will topic, will message, user name, password
        are read in this order: a CONNECT with all of them works and its will
        is the one published."""
        wt = topic("will")
        s = self.subscriber(wt)
        c = self.client(will={"topic": wt, "payload": b"will-msg", "qos": 1},
                        username="someone", password=b"secret")
        c.close()  # network close without DISCONNECT
        p = self.recv_pub(s)
        self.assertEqual((p.topic, p.payload), (wt, b"will-msg"))

    def test_client_id_must_be_present(self):
        """[MQTT-3.1.3-3] a CONNECT whose payload lacks the client id: close."""
        c = self.raw()
        c.send(raw(0x10, utf8("MQTT") + bytes([4, 0x02, 0, 60])))
        self.assert_closed(c)

    def test_client_id_utf8(self):
        """[MQTT-3.1.3-4] [MQTT-1.5.3-1] [MQTT-1.5.3-2] an ill-formed client id: close
        (a CONNACK 0x02 is tolerated)."""
        for bad in (b"a\xff", b"a\x00b", b"\xed\xa0\x80"):
            c = self.raw()
            c.send(connect(bad, version=V))
            self.assertTrue(c.expect_closed(T), bad)
            for p in c.received:
                self.assertEqual((p.type, p.reason), (m.CONNACK, 0x02), bad)

    def test_client_ids_server_must_allow(self):
        """[MQTT-3.1.3-5] [MQTT-3.1.4-4] [MQTT-3.2.2-1] ids of 1 to 23 characters
        [0-9a-zA-Z] are accepted: CONNACK 0, Session Present 0 (clean)."""
        chars = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
        for i, client_id in enumerate(["a", "Z9", chars[:23], chars[23:46], chars[-23:]]):
            c = self.client(client_id)
            self.assertEqual(c.connack.reason, 0)
            self.assertFalse(c.connack.session_present)
            self.assertEqual(c.connack.flags, 0)

    def test_empty_client_id(self):
        """[MQTT-3.1.3-6] [MQTT-3.1.3-8] [MQTT-3.2.2-4] [MQTT-3.2.2-5] an empty
        client id with CleanSession 1 gets its own session (two such clients
        coexist); with CleanSession 0 it is refused with CONNACK 0x02."""
        a = self.client("")
        b = self.client("")
        t = topic("anon")
        self.sub(a, [(t, 1)])
        self.sub(b, [(t, 1)])
        self.pub(b, t, b"both", qos=1)
        self.assertEqual(self.recv_pub(a).payload, b"both")
        self.assertEqual(self.recv_pub(b).payload, b"both")
        self.assertEqual(self.ping(a), [])
        c = self.raw()
        c.send(connect("", version=V, clean=False))
        p = self.recv(c, m.CONNACK)
        self.assertEqual(p.reason, 0x02)
        self.assertFalse(p.session_present)
        self.assert_closed(c)

    def test_rejected_client_id_mqtt31(self):
        """[MQTT-3.1.3-9] a refused client id is answered by CONNACK 0x02 and a
        close (an MQTT 3.1 client with an empty id, which 3.1 does not allow)."""
        c = self.raw()
        c.send(connect("", version=3))
        p = self.recv(c, m.CONNACK)
        self.assertEqual(p.reason, 0x02)
        self.assertFalse(p.session_present)
        self.assert_closed(c)

    def test_will_topic_and_user_name_utf8(self):
        """[MQTT-3.1.3-10] [MQTT-3.1.3-11] [MQTT-1.5.3-1] ill-formed will topic or
        user name: close without CONNACK."""
        for bad in (b"w\xff", b"w\x00", b"\xed\xbf\xbf"):
            c = self.raw()
            c.send(connect(cid(), version=V, will={"topic": bad}))
            self.assert_closed(c, "will topic %r" % bad)
            c = self.raw()
            c.send(connect(cid(), version=V, username=bad))
            self.assert_closed(c, "user name %r" % bad)

    def test_takeover(self):
        """[MQTT-3.1.4-2] a second connection with the same client id disconnects
        the first."""
        client_id = cid("dup")
        a = self.client(client_id)
        self.client(client_id)
        self.assertTrue(a.expect_closed(T))

    def test_no_processing_after_refused_connect(self):
        """[MQTT-3.1.4-5] data after a refused CONNECT is not processed: a retained
        PUBLISH sent right behind it is not stored."""
        t = topic("refused")
        c = self.raw()
        c.send(connect(cid(), version=V, proto_level=6)
               + publish(t, b"must-not-exist", retain=True, version=V))
        c.expect_closed(T)
        s = self.client()
        self.sub(s, [(t, 0)])
        self.assertEqual(self.ping(s), [], "the retained message was stored")


class Sessions(V311Case):
    def test_session_present_and_resume(self):
        """[MQTT-3.1.2-4] [MQTT-3.1.4-3] [MQTT-3.2.2-2] [MQTT-3.2.2-3] [MQTT-3.1.3-2]
        [MQTT-4.1.0-1] CleanSession 0: Session Present 0 for a new session, 1
        when resuming; the subscription survives the disconnect."""
        client_id = cid("sess")
        t = topic("sess")
        c = self.client(client_id, clean=False)
        self.assertFalse(c.connack.session_present)
        self.sub(c, [(t, 1)])
        c.send(disconnect(version=V))
        self.assert_closed(c)
        c = self.client(client_id, clean=False)
        self.assertTrue(c.connack.session_present)
        p = self.client()
        self.pub(p, t, b"resumed", qos=1)
        self.assertEqual(self.recv_pub(c).payload, b"resumed")
        # another client id does not see that session
        other = self.client(cid("sess"), clean=False)
        self.assertFalse(other.connack.session_present)

    def test_clean_session_discards(self):
        """[MQTT-3.1.2-6] [MQTT-3.2.2-1] [MQTT-3.1.4-3] [MQTT-4.1.0-2] CleanSession 1
        discards the stored session and its state is not reused; the session
        lasts as long as the connection."""
        client_id = cid("clean")
        t = topic("clean")
        c = self.client(client_id, clean=False)
        self.sub(c, [(t, 1)])
        c.send(disconnect(version=V))
        self.assert_closed(c)
        c = self.client(client_id, clean=True)
        self.assertFalse(c.connack.session_present)
        p = self.client()
        self.pub(p, t, b"nobody", qos=1)
        self.sub(c, [(t + "/live", 1)])
        self.pub(p, t + "/live", b"live", qos=1)
        self.assertEqual(self.recv_pub(c).payload, b"live")  # not "nobody"
        c.send(disconnect(version=V))
        self.assert_closed(c)
        c = self.client(client_id, clean=False)
        self.assertFalse(c.connack.session_present, "clean session state was kept")

    def test_offline_messages_and_connack_first(self):
        """[MQTT-3.1.2-5] [MQTT-4.5.0-1] [MQTT-3.2.0-1] QoS 1 and 2 messages
        published while a CleanSession 0 client is away are stored and
        delivered after the CONNACK on reconnect."""
        client_id = cid("off")
        t = topic("off")
        c = self.client(client_id, clean=False)
        self.sub(c, [(t, 2)])
        c.send(disconnect(version=V))
        self.assert_closed(c)
        p = self.client()
        self.pub(p, t, b"q1", qos=1)
        self.pub(p, t, b"q2", qos=2)
        c = self.raw()
        c.send(connect(client_id, version=V, clean=False))
        first = self.recv(c)
        self.assertEqual(first.type, m.CONNACK, "first packet must be CONNACK")
        self.assertTrue(first.session_present)
        got = [self.recv_pub(c) for _ in range(2)]
        self.assertEqual([(g.payload, g.qos) for g in got], [(b"q1", 1), (b"q2", 2)])

    def test_retained_survive_session_end(self):
        """[MQTT-3.1.2-7] retained messages are not part of the session and stay
        after the publisher's session ends."""
        t = topic("ret")
        p = self.client(cid("retpub"), clean=True)
        self.pub(p, t, b"kept", qos=1, retain=True)
        p.send(disconnect(version=V))
        self.assert_closed(p)
        s = self.client()
        self.sub(s, [(t, 1)])
        r = self.recv_pub(s)
        self.assertEqual((r.payload, r.retain), (b"kept", True))


class Will(V311Case):
    def test_will_published_on_network_close(self):
        """[MQTT-3.1.2-8] [MQTT-3.1.2-16] [MQTT-3.1.2-9] the will is published
        when the connection closes without DISCONNECT; Will Retain 0 gives a
        non-retained message, with the will QoS."""
        wt = topic("will")
        s = self.subscriber([(wt, 2)])
        c = self.client(will={"topic": wt, "payload": b"gone", "qos": 1, "retain": False})
        c.sock.shutdown(socket.SHUT_RDWR)
        c.close()
        p = self.recv_pub(s)
        self.assertEqual((p.topic, p.payload, p.qos, p.retain), (wt, b"gone", 1, False))
        s2 = self.client()
        self.sub(s2, [(wt, 0)])
        self.assertEqual(self.ping(s2), [], "a Will Retain 0 will was retained")

    def test_will_retained(self):
        """[MQTT-3.1.2-17] Will Retain 1: the will is published as retained."""
        wt = topic("willret")
        live = self.subscriber([(wt, 0)])
        c = self.client(will={"topic": wt, "payload": b"last", "qos": 0, "retain": True})
        c.close()
        self.assertEqual(self.recv_pub(live).payload, b"last")  # published now
        s = self.client()
        self.sub(s, [(wt, 0)])
        got = self.ping(s)
        self.assertEqual([(g.payload, g.retain) for g in got], [(b"last", True)])

    def test_will_discarded_on_disconnect(self):
        """[MQTT-3.14.4-3] [MQTT-3.1.2-10] DISCONNECT discards the will."""
        wt = topic("nowill")
        s = self.subscriber([(wt, 1), ("marker/" + wt, 1)])
        c = self.client(will={"topic": wt, "payload": b"no"})
        c.send(disconnect(version=V))
        self.assert_closed(c)
        p = self.client()
        self.assertEqual(self.collect_until_marker(s, p, "marker/" + wt), [])

    def test_will_published_once(self):
        """[MQTT-3.1.2-10] a published will is removed: it is published once, and
        a later clean reconnect with the same id does not publish it again."""
        wt = topic("once")
        s = self.subscriber([(wt, 1), ("marker/" + wt, 1)])
        client_id = cid("once")
        c = self.client(client_id, will={"topic": wt, "payload": b"w1", "qos": 1})
        c.close()
        self.assertEqual(self.recv_pub(s).payload, b"w1")
        c = self.client(client_id)
        c.send(disconnect(version=V))
        self.assert_closed(c)
        p = self.client()
        self.assertEqual(self.collect_until_marker(s, p, "marker/" + wt), [])

    def test_no_will_flag_no_will(self):
        """[MQTT-3.1.2-12] without Will Flag nothing is published on close."""
        s = self.subscriber([("#", 0)])
        self.ping(s)  # retained messages of earlier tests arrive before the PINGRESP
        c = self.client()
        c.close()
        p = self.client()
        mt = topic("marker")
        got = self.collect_until_marker(s, p, mt)
        self.assertEqual([g for g in got if not g.topic.startswith("marker/")], [])

    def test_disconnect_reserved_flags(self):
        """[MQTT-3.14.1-1] [MQTT-2.2.2-2] a DISCONNECT with reserved bits set is a
        violation: the server disconnects and, as it is not a normal
        DISCONNECT, publishes the will."""
        wt = topic("baddisc")
        s = self.subscriber([(wt, 1)])
        c = self.client(will={"topic": wt, "payload": b"violation", "qos": 1})
        c.send(raw(0xE1, b""))
        self.assert_closed(c)
        self.assertEqual(self.recv_pub(s).payload, b"violation")


class KeepAlive(V311Case):
    def test_keepalive_timeout(self):
        """[MQTT-3.1.2-24] no packet within 1.5 x Keep Alive: the server closes
        the connection as on a network failure (the will is published)."""
        wt = topic("ka")
        s = self.subscriber([(wt, 1)])
        start = time.monotonic()
        c = self.client(keepalive=1, will={"topic": wt, "payload": b"timeout", "qos": 1})
        self.assertTrue(c.expect_closed(T), "not closed after 1.5 x keepalive")
        elapsed = time.monotonic() - start
        self.assertGreaterEqual(elapsed, 1.0)
        self.assertLess(elapsed, 1.5 + 2.0)
        self.assertEqual(self.recv_pub(s).payload, b"timeout")

    def test_keepalive_kept_by_pings(self):
        """[MQTT-3.1.2-24] [MQTT-3.12.4-1] PINGREQ keeps the connection and is
        answered by PINGRESP."""
        c = self.client(keepalive=1)
        end = time.monotonic() + 2.5
        while time.monotonic() < end:
            self.assertEqual(self.ping(c), [])
            time.sleep(0.4)  # within the keep alive, well below 1.5 s


class Framing(V311Case):
    def test_server_packet_flags(self):
        """[MQTT-2.2.2-1] the packets the server sends carry the fixed-header
        flags of Table 2.2."""
        t = topic("flags")
        s = self.client()
        self.assertEqual(s.connack.flags, 0)
        s.send(subscribe(1, [(t, 2)], version=V))
        self.assertEqual(self.recv(s, m.SUBACK).flags, 0)
        p = self.client()
        p.send(publish(t, b"1", qos=1, packet_id=1, version=V))
        self.assertEqual(self.recv(p, m.PUBACK).flags, 0)
        p.send(publish(t, b"2", qos=2, packet_id=2, version=V))
        self.assertEqual(self.recv(p, m.PUBREC).flags, 0)
        p.send(m.pubrel(2, version=V))
        self.assertEqual(self.recv(p, m.PUBCOMP).flags, 0)
        got = {}
        for _ in range(2):
            g = self.recv(s, m.PUBLISH)
            self.assertIn(g.flags, (0x2, 0x4), "QoS 1/2, DUP 0, RETAIN 0")
            got[g.qos] = g
        s.send(m.puback(got[1].packet_id, version=V))
        s.send(m.pubrec(got[2].packet_id, version=V))
        self.assertEqual(self.recv(s, m.PUBREL).flags, 0x02)
        s.send(m.pubcomp(got[2].packet_id, version=V))
        s.send(m.unsubscribe(3, [t], version=V))
        self.assertEqual(self.recv(s, m.UNSUBACK).flags, 0)
        s.send(pingreq())
        self.assertEqual(self.recv(s, m.PINGRESP).flags, 0)

    def test_invalid_flags_close(self):
        """[MQTT-2.2.2-2] [MQTT-3.6.1-1] [MQTT-3.8.1-1] [MQTT-3.10.1-1] [MQTT-4.8.0-1]
        invalid fixed-header flags close the connection."""
        cases = {
            "PUBREL 0x60": raw(0x60, b"\x00\x01"),
            "PUBREL 0x63": raw(0x63, b"\x00\x01"),
            "SUBSCRIBE 0x80": raw(0x80, b"\x00\x01" + utf8("a") + b"\x00"),
            "SUBSCRIBE 0x8A": raw(0x8A, b"\x00\x01" + utf8("a") + b"\x00"),
            "UNSUBSCRIBE 0xA0": raw(0xA0, b"\x00\x01" + utf8("a")),
            "UNSUBSCRIBE 0xA3": raw(0xA3, b"\x00\x01" + utf8("a")),
            "reserved type 0": raw(0x00, b""),
            "reserved type 15": raw(0xF0, b""),
        }
        for name, data in cases.items():
            with self.subTest(name):
                self.assert_refused_or_closed(self.client(), data, name)

    def test_segmentation(self):
        """[MQTT-7.1.1-1] MQTT over TCP as an ordered byte stream: a CONNECT and
        SUBSCRIBE sent byte by byte, and several packets in one segment, work."""
        t = topic("seg")
        c = self.raw()
        data = connect(cid(), version=V) + subscribe(1, [(t, 1)], version=V)
        for b in data:
            c.sock.sendall(bytes([b]))
        self.assertEqual(self.recv(c, m.CONNACK).reason, 0)
        self.recv(c, m.SUBACK)
        p = self.client()
        p.send(b"".join(publish(t, b"%d" % i, qos=1, packet_id=i + 1, version=V)
                        for i in range(10)) + pingreq())
        acks = [self.recv(p) for _ in range(11)]
        self.assertEqual([a.packet_id for a in acks[:10]], list(range(1, 11)))
        self.assertEqual(acks[10].type, m.PINGRESP)
        self.assertEqual([self.recv_pub(c).payload for _ in range(10)],
                         [b"%d" % i for i in range(10)])


class Utf8(V311Case):
    def test_ill_formed_utf8_topic(self):
        """[MQTT-1.5.3-1] [MQTT-1.5.3-2] [MQTT-3.3.2-1] [MQTT-4.7.3-2] ill-formed UTF-8
        or U+0000 in a topic name closes the connection."""
        for bad in (b"a\x00", b"a\xff", b"\xed\xa0\x80", b"\xc0\xaf", b"\xe2\x82"):
            with self.subTest(bad):
                self.assert_refused_or_closed(self.client(), publish(bad, b"x", version=V))

    def test_bom_not_stripped(self):
        """[MQTT-1.5.3-3] [MQTT-4.7.3-4] U+FEFF is kept: a topic with it is
        distinct from the topic without it and is forwarded unchanged."""
        base = topic("bom")
        with_bom = base + "/\ufeffx"
        s = self.subscriber([(with_bom, 1), (base + "/x", 1)])
        p = self.client()
        self.pub(p, with_bom, b"bom", qos=1)
        r = self.recv_pub(s)
        self.assertEqual((r.topic, r.payload), (with_bom, b"bom"))
        self.assertIn(b"\xef\xbb\xbfx", r.body)
        self.assertEqual(self.ping(s), [])


class Coverage(unittest.TestCase):
    def test_every_server_statement_has_a_test(self):
        """Every `server` statement of statements_v311.tsv is named in a
        test_v311*.py docstring, and every named id exists."""
        import glob
        import os
        import re
        here = os.path.dirname(os.path.abspath(__file__))
        rows = [line.rstrip("\n").split("\t")
                for line in open(os.path.join(here, "statements_v311.tsv"))]
        self.assertTrue(all(len(r) == 4 and r[1] in ("server", "client", "none") for r in rows))
        ids = {r[0] for r in rows}
        server = {r[0] for r in rows if r[1] == "server"}
        named = set()
        for f in glob.glob(os.path.join(here, "test_v311*.py")):
            named |= set(re.findall(r"\[(MQTT-[0-9.]+-[0-9]+)\]", open(f).read()))
        self.assertEqual(sorted(server - named), [], "server statements without a test")
        self.assertEqual(sorted(named - ids), [], "unknown statement ids")


if __name__ == "__main__":
    main()
