"""MQTT over WebSocket (listener.ws.*) and over secure WebSocket
(listener.wss.*): Python paho-mqtt with transport="websockets", a frame-level
client for fragmentation, control frames and protocol errors, and all four
listener types of one broker exchanging messages."""
import json
import socket
import ssl
import struct
import unittest

import tls_certs
import ws_client
from ws_client import BINARY, CLOSE, CONT, PING, PONG, TEXT, WS
from harness import free_port
from mqtt_util import (MQTTv311, MQTTv5, TIMEOUT, BrokerTest, connect_bytes, packet,
                       publish_bytes, subscribe_bytes, uid, wait_until)

CERTS = tls_certs.Certs()
CONNACK_OK = bytes([0x20, 2, 0, 0])


def client_ctx():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(CERTS.ca)
    return ctx


class WebSocket(BrokerTest):
    ws_port, wss_port, ssl_port = free_port(), free_port(), free_port()
    config = {
        "listener.ws.web": "127.0.0.1:%d" % ws_port,
        "listener.ws.web.max_frame_size": "64KB",
        "listener.wss.web": "127.0.0.1:%d" % wss_port,
        "listener.wss.web.certfile": CERTS.server_cert,
        "listener.wss.web.keyfile": CERTS.server_key,
        "listener.ssl.web": "127.0.0.1:%d" % ssl_port,
        "listener.ssl.web.certfile": CERTS.server_cert,
        "listener.ssl.web.keyfile": CERTS.server_key,
    }

    def ws(self, **kw):
        w = WS(self.ws_port, **kw)
        self.addCleanup(w.close)
        return w

    def mqtt_ws(self, client_id=None):
        w = self.ws()
        self.assertEqual(w.status, 101)
        self.assertEqual(w.headers.get("sec-websocket-protocol"), "mqtt")
        w.send(connect_bytes(client_id or uid("ws")))
        self.assertEqual(w.read_mqtt(4), CONNACK_OK)
        return w

    # -- real clients ----------------------------------------------------------

    def test_paho_over_ws_and_wss(self):
        for port, tls in ((self.ws_port, None), (self.wss_port, client_ctx())):
            for v in (MQTTv311, MQTTv5):
                with self.subTest(port=port, version=v):
                    c = self.client(port=port, transport="websockets", tls=tls, version=v)
                    t = "ws/paho/%s" % uid()
                    c.subscribe(t, 1)
                    c.publish(t, b"over-websocket", qos=1)
                    self.assertEqual(c.wait_messages(1)[0].payload, b"over-websocket")

    def test_every_listener_type_reaches_every_other(self):
        clients = {
            "tcp": self.client(),
            "ssl": self.client(port=self.ssl_port, tls=client_ctx()),
            "ws": self.client(port=self.ws_port, transport="websockets"),
            "wss": self.client(port=self.wss_port, transport="websockets", tls=client_ctx()),
        }
        t = "ws/all/%s" % uid()
        for c in clients.values():
            c.subscribe(t, 1)
        for name, c in clients.items():
            c.publish(t, name.encode(), qos=1)
        for name, c in clients.items():
            got = sorted(m.payload for m in c.wait_messages(4))
            self.assertEqual(got, sorted(n.encode() for n in clients), name)

    # -- framing ---------------------------------------------------------------

    def test_packets_split_and_joined_across_frames(self):
        w = self.ws()
        t = "ws/frames/%s" % uid()
        # CONNECT cut into a fragmented message of three frames.
        data = connect_bytes(uid("frag"))
        w.send(data[:3], BINARY, fin=False)
        w.send(data[3:10], CONT, fin=False)
        w.send(data[10:], CONT, fin=True)
        self.assertEqual(w.read_mqtt(4), CONNACK_OK)
        # SUBSCRIBE and two PUBLISHes in one frame; a third PUBLISH split
        # over two messages.
        pub3 = publish_bytes(t, b"three")
        w.send(subscribe_bytes(t) + publish_bytes(t, b"one") + publish_bytes(t, b"two") +
               pub3[:4])
        w.send(pub3[4:])
        want = (packet(9, 0, struct.pack("!HB", 1, 1)) + publish_bytes(t, b"one") +
                publish_bytes(t, b"two") + pub3)
        self.assertEqual(w.read_mqtt(len(want)), want)

    def test_large_payload_over_ws(self):
        w = self.mqtt_ws()
        t = "ws/big/%s" % uid()
        w.send(subscribe_bytes(t))
        w.read_mqtt(5)
        payload = bytes(range(256)) * 200  # 51,200 bytes, in 16-bit length frames
        pub = publish_bytes(t, payload)
        w.send(pub)
        self.assertEqual(w.read_mqtt(len(pub)), pub)

    def test_ping_pong_and_close_echo(self):
        w = self.mqtt_ws()
        w.send(b"are you there", PING)
        self.assertEqual(w.read_frame(), (PONG, b"are you there"))
        w.send(struct.pack("!H", 1000) + b"bye", CLOSE)
        self.assertEqual(w.read_close(), 1000)

    def test_protocol_errors_get_close_codes(self):
        keep = self.mqtt_ws()
        t = "ws/keep/%s" % uid()
        keep.send(subscribe_bytes(t))
        keep.read_mqtt(5)
        cases = [
            ("text frame", lambda w: w.send(b"hello", TEXT), 1003),
            ("unmasked frame", lambda w: w.send(b"\x10", BINARY, mask=False), 1002),
            ("reserved bit", lambda w: w.send_raw(ws_client.frame(BINARY, b"x", rsv=4)), 1002),
            ("continuation first", lambda w: w.send(b"x", CONT), 1002),
            ("unknown opcode", lambda w: w.send(b"x", 3), 1002),
            ("long control frame", lambda w: w.send(b"x" * 126, PING), 1002),
            ("frame over max_frame_size", lambda w: w.send(b"\x00" * 70000), 1009),
            ("malformed MQTT", lambda w: w.send(bytes([0x10, 0x00])), 1002),
        ]
        for name, act, code in cases:
            with self.subTest(case=name):
                w = self.ws()
                act(w)
                self.assertEqual(w.read_close(), code)
                with self.assertRaises((ConnectionError, OSError)):
                    w.read_frame()
        # The others carry on.
        keep.send(publish_bytes(t, b"fine"))
        self.assertEqual(keep.read_mqtt(len(publish_bytes(t, b"fine"))),
                         publish_bytes(t, b"fine"))

    def test_upgrade_refusals(self):
        cases = [
            ({"path": "/other"}, 404),
            ({"method": "POST"}, 405),
            ({"version": "8"}, 426),
            ({"protocol": None}, 400),
            ({"protocol": "wamp"}, 400),
            ({"key": "short"}, 400),
            ({"extra": ["X-Big: " + "a" * 9000]}, 431),
        ]
        for req, status in cases:
            with self.subTest(req=req):
                w = self.ws(**req)
                self.assertEqual(w.status, status)
        # A plain HTTP GET (no upgrade) is refused with 426.
        s = socket.create_connection(("127.0.0.1", self.ws_port), timeout=TIMEOUT)
        self.addCleanup(s.close)
        s.sendall(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(s.recv(100).startswith(b"HTTP/1.1 426 "))
        # Raw MQTT on the WebSocket port is not HTTP.
        s2 = socket.create_connection(("127.0.0.1", self.ws_port), timeout=TIMEOUT)
        self.addCleanup(s2.close)
        s2.sendall(connect_bytes(uid("raw")))
        self.assertTrue(s2.recv(100).startswith(b"HTTP/1.1 400 "))

    def test_subprotocol_mqttv31_and_query_string(self):
        w = self.ws(protocol="mqttv3.1, mqtt", path="/mqtt?token=x")
        self.assertEqual(w.status, 101)
        self.assertEqual(w.headers["sec-websocket-protocol"], "mqtt")
        w2 = self.ws(protocol="mqttv3.1")
        self.assertEqual(w2.headers["sec-websocket-protocol"], "mqttv3.1")

    def test_wss_frames_over_tls(self):
        s = socket.create_connection(("127.0.0.1", self.wss_port), timeout=TIMEOUT)
        s = client_ctx().wrap_socket(s, server_hostname="localhost")
        w = WS(None, sock=s)
        self.addCleanup(w.close)
        self.assertEqual(w.status, 101)
        data = connect_bytes(uid("wssf"))
        for b in data:  # one byte per frame
            w.send(bytes([b]), CONT if b is not data[0] else BINARY, fin=False)
        w.send(b"", CONT, fin=True)
        self.assertEqual(w.read_mqtt(4), CONNACK_OK)


class ForwardedFor(BrokerTest):
    ws_port, plain_port = free_port(), free_port()
    config = {
        "listener.ws.behind": "127.0.0.1:%d" % ws_port,
        "listener.ws.behind.proxy_address_header": "X-Forwarded-For",
        "listener.ws.behind.proxy_port_header": "X-Forwarded-Port",
        "listener.ws.direct": "127.0.0.1:%d" % plain_port,
        "allow_anonymous": "true",
    }

    def event_ip(self, port, extra):
        sys = self.client()
        sys.subscribe("$SYS/brokers/+/clients/+/connected", 0)
        cid = uid("xff")
        w = WS(port, extra=extra)
        self.addCleanup(w.close)
        w.send(connect_bytes(cid))
        self.assertEqual(w.read_mqtt(4), CONNACK_OK)
        msgs = wait_until(lambda: [json.loads(m.payload) for m in sys.messages
                                   if json.loads(m.payload)["clientid"] == cid],
                          msg="connected event")
        return msgs[0]["ipaddress"]

    def test_header_honoured_when_configured(self):
        ip = self.event_ip(self.ws_port, ["X-Forwarded-For: 203.0.113.9, 10.0.0.1",
                                          "X-Forwarded-Port: 40000"])
        self.assertEqual(ip, "203.0.113.9")
        self.assertIn("peer=203.0.113.9:40000", self.broker.log())

    def test_header_ignored_when_not_configured(self):
        ip = self.event_ip(self.plain_port, ["X-Forwarded-For: 203.0.113.10"])
        self.assertEqual(ip, "127.0.0.1")

    def test_forwarded_remote_client_is_not_anonymous_by_loopback(self):
        port = free_port()
        b = self.start_broker({"listener.ws.lb": "127.0.0.1:%d" % port,
                               "listener.ws.lb.proxy_address_header": "X-Forwarded-For"})
        w = WS(port, extra=["X-Forwarded-For: 198.51.100.4"])
        self.addCleanup(w.close)
        w.send(connect_bytes(uid("anon")))
        self.assertEqual(w.read_mqtt(4), bytes([0x20, 2, 0, 5]))  # not authorized
        w2 = WS(port, extra=["X-Forwarded-For: 127.0.0.1"])
        self.addCleanup(w2.close)
        w2.send(connect_bytes(uid("anon")))
        self.assertEqual(w2.read_mqtt(4), CONNACK_OK)
        self.assertIn("198.51.100.4", b.log())


if __name__ == "__main__":
    unittest.main()
