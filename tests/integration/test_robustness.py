"""The broker keeps serving other clients while one client misbehaves."""
import socket
import threading
import unittest

from mqtt_util import (MQTTv5, MQTTv311, BrokerTest, Raw, uid)


class MisbehavingClientTest(BrokerTest):

    def test_service_continues_during_misbehaviour(self):
        t = "rob/" + uid()
        sub = self.client(version=MQTTv5)
        sub.subscribe(t, 1)
        pub = self.client(version=MQTTv311)
        stop = threading.Event()
        errors = []

        def misbehave():
            """Garbage, half packets, bad lengths, floods; repeatedly."""
            bad = [
                b"\x00\x00",                                 # reserved type
                b"\x10\xff\xff\xff\xff\x7f",                 # invalid remaining length
                b"\x10\x10\x00\x04MQTT\x05",                  # truncated CONNECT, then silence
                b"\x30\x05\x00\x01a",                        # PUBLISH before CONNECT
                b"\x10\x0c\x00\x04MQTT\x07\x02\x00\x3c\x00\x00",  # bad protocol level
                bytes(range(256)) * 8,                       # noise
            ]
            i = 0
            while not stop.is_set():
                try:
                    s = socket.create_connection(("127.0.0.1", self.port), timeout=2)
                    s.sendall(bad[i % len(bad)])
                    if i % 3 == 0:
                        s.close()  # abrupt
                    else:
                        try:
                            s.settimeout(0.2)
                            s.recv(16)
                        except OSError:
                            pass
                        s.close()
                except OSError as e:
                    errors.append(e)
                i += 1
            # A connected client that stops reading while flooded with publishes.
        slow = Raw(self.port, 5)
        self.addCleanup(slow.close)
        slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(uid("slow"))
        slow.subscribe([(t + "/flood", 1)])
        th = threading.Thread(target=misbehave, daemon=True)
        th.start()
        try:
            big = b"z" * 10000
            for i in range(200):
                pub.publish(t + "/flood", big, qos=0, wait=False)
            for i in range(50):
                pub.publish(t, b"%d" % i, qos=1)
            msgs = sub.wait_messages(50)
            self.assertEqual([m.payload for m in msgs], [b"%d" % i for i in range(50)])
            # New clients can still connect and work.
            fresh = self.client(version=MQTTv311)
            fresh.subscribe(t + "/fresh", 1)
            pub.publish(t + "/fresh", b"still", qos=1)
            fresh.wait_payload(b"still")
        finally:
            stop.set()
            th.join(10)
        self.assertTrue(self.broker.alive())
        self.assertLess(len(errors), 5, "could not even connect: %r" % errors[:3])

    def test_malformed_packet_closes_only_that_client(self):
        t = "rob2/" + uid()
        sub = self.client()
        sub.subscribe(t, 1)
        for v in (4, 5):
            r = self.raw(version=v)
            r.send(b"\x82\x03\x00\x01\x00")  # SUBSCRIBE with no topic filter
            r.expect_closed()
        self.client().publish(t, b"ok", qos=1)
        sub.wait_payload(b"ok")

    def test_many_connections_churn(self):
        t = "rob3/" + uid()
        sub = self.client()
        sub.subscribe(t, 1)
        for i in range(100):
            r = Raw(self.port, 4)
            r.connect(uid("ch"))
            if i % 2:
                r.abort()
            else:
                r.disconnect()
                r.close()
        self.client().publish(t, b"alive", qos=1)
        sub.wait_payload(b"alive")


if __name__ == "__main__":
    unittest.main()
