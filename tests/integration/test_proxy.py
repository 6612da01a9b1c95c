"""PROXY protocol v1/v2 on TCP and TLS listeners: the address in the header
becomes the client's address (logs, $SYS events, the auth hook's peer), and
connections without a valid header are refused without disturbing others."""
import json
import socket
import ssl
import struct
import time
import unittest

import tls_certs
from harness import free_port
from mqtt_util import CONNACK, TIMEOUT, BrokerTest, Raw, connect_bytes, uid, wait_until

CERTS = tls_certs.Certs()
SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(src, sport, dst="127.0.0.1", dport=1883, fam="TCP4"):
    return ("PROXY %s %s %s %d %d\r\n" % (fam, src, dst, sport, dport)).encode()


def v2(src, sport, dst="127.0.0.1", dport=1883, tlv=b""):
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    body += tlv
    return SIG + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


def v2_local():
    return SIG + bytes([0x20, 0x00, 0, 0])


class ProxyTCP(BrokerTest):
    tls_port = free_port()
    config = {
        "listener.tcp.default.proxy_protocol": "true",
        "listener.tcp.default.proxy_protocol_timeout": "1s",
        "listener.ssl.lb": "127.0.0.1:%d" % tls_port,
        "listener.ssl.lb.certfile": CERTS.server_cert,
        "listener.ssl.lb.keyfile": CERTS.server_key,
        "listener.ssl.lb.proxy_protocol": "true",
        "allow_anonymous": "true",
    }

    def sys_events(self):
        # $SYS needs a connection of its own, through the proxy too.
        s = self.proxied(v1("127.0.0.9", 1000), uid("sys"))
        s.subscribe([("$SYS/brokers/+/clients/+/connected", 0)])
        return s

    def proxied(self, header, client_id, port=None, tls=None):
        sock = socket.create_connection(("127.0.0.1", port or self.port), timeout=TIMEOUT)
        sock.sendall(header)
        r = Raw(None, version=4, sock=sock, tls=tls)
        self.addCleanup(r.close)
        r.connack = r.connect(client_id)
        self.assertEqual(r.connack.rc, 0)
        return r

    def ip_of(self, events, client_id):
        deadline = time.time() + TIMEOUT
        while time.time() < deadline:
            try:
                p = events.read(timeout=1)
            except socket.timeout:
                continue
            if p.type != 3:  # PUBLISH
                continue
            ev = json.loads(p.payload)
            if ev["clientid"] == client_id:
                return ev["ipaddress"]
        raise AssertionError("no connected event for " + client_id)

    def test_v1_and_v2_addresses_reach_events_and_logs(self):
        events = self.sys_events()
        for hdr, ip in ((v1("203.0.113.7", 40001), "203.0.113.7"),
                        (v2("198.51.100.23", 40002, tlv=b"\x01\x00\x04mqtt"), "198.51.100.23"),
                        (v1("2001:db8::7", 40003, dst="::1", fam="TCP6"), "2001:db8::7")):
            with self.subTest(ip=ip):
                cid = uid("px")
                r = self.proxied(hdr, cid)
                self.assertEqual(self.ip_of(events, cid), ip)
                t = "proxy/%s" % uid()
                r.subscribe([(t, 1)])
                r.publish(t, b"through-lb", qos=1)
                self.assertEqual(r.read_publishes(1)[0].payload, b"through-lb")
        self.assertIn("peer=203.0.113.7:40001", self.broker.log())

    def test_local_command_keeps_the_socket_address(self):
        events = self.sys_events()
        cid = uid("local")
        self.proxied(v2_local(), cid)
        self.assertEqual(self.ip_of(events, cid), "127.0.0.1")

    def test_header_split_over_many_writes(self):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT)
        self.addCleanup(sock.close)
        data = v2("192.0.2.1", 5000) + connect_bytes(uid("split"))
        for i in range(len(data)):
            sock.sendall(data[i:i + 1])
            time.sleep(0.002)
        self.assertEqual(sock.recv(4), bytes([CONNACK << 4, 2, 0, 0]))

    def test_header_and_connect_in_one_write(self):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT)
        self.addCleanup(sock.close)
        sock.sendall(v1("192.0.2.2", 5001) + connect_bytes(uid("one")))
        self.assertEqual(sock.recv(4), bytes([CONNACK << 4, 2, 0, 0]))

    def test_refusals_leave_others_connected(self):
        keep = self.proxied(v1("192.0.2.50", 6000), uid("keep"))
        t = "proxy/keep/%s" % uid()
        keep.subscribe([(t, 1)])
        cases = {
            "no header": connect_bytes(uid("nohdr")),
            "garbage": b"HELLO WORLD\r\n",
            "bad v1": b"PROXY TCP4 1.2.3 4.5.6.7 1 2\r\n",
            "bad v2 version": SIG + bytes([0x11, 0x11, 0, 12]) + bytes(12),
        }
        for name, data in cases.items():
            with self.subTest(case=name):
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT)
                sock.sendall(data)
                try:  # closed; unread input makes it a reset
                    self.assertEqual(sock.recv(10), b"")
                except ConnectionResetError:
                    pass
                sock.close()
                keep.publish(t, name.encode(), qos=1)
                self.assertEqual(keep.read_publishes(1)[0].payload, name.encode())

    def test_header_that_never_completes_times_out(self):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT)
        self.addCleanup(sock.close)
        sock.sendall(b"PROXY TCP4 1.2.3.4 ")
        t0 = time.time()
        self.assertEqual(sock.recv(10), b"")
        self.assertLess(time.time() - t0, TIMEOUT)
        wait_until(lambda: "no complete header in time" in self.broker.log(), msg="log")

    def test_proxy_then_tls(self):
        events = self.sys_events()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(CERTS.ca)
        cid = uid("pxtls")
        self.proxied(v2("192.0.2.77", 7000), cid, port=self.tls_port, tls=ctx)
        self.assertEqual(self.ip_of(events, cid), "192.0.2.77")

    def test_non_loopback_destination_is_not_anonymous_by_default(self):
        # Behind a load balancer whose public address the client reached, the
        # loopback-only anonymous default must not apply: broker with the
        # default allow_anonymous.
        b = self.start_broker({"listener.tcp.default.proxy_protocol": "true"})
        sock = socket.create_connection(("127.0.0.1", b.port), timeout=TIMEOUT)
        self.addCleanup(sock.close)
        sock.sendall(v1("203.0.113.1", 1234, dst="198.51.100.1") + connect_bytes(uid("pub")))
        ack = sock.recv(4)
        self.assertEqual(ack[:1], bytes([CONNACK << 4]))
        self.assertEqual(ack[3], 5)  # not authorized
        sock2 = socket.create_connection(("127.0.0.1", b.port), timeout=TIMEOUT)
        self.addCleanup(sock2.close)
        sock2.sendall(v1("203.0.113.1", 1235, dst="127.0.0.1") + connect_bytes(uid("lo")))
        self.assertEqual(sock2.recv(4), bytes([CONNACK << 4, 2, 0, 0]))


if __name__ == "__main__":
    unittest.main()
