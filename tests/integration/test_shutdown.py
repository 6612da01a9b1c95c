"""Graceful stop: SIGTERM to the broker."""
import unittest

from mqtt_util import Broker, BrokerTest, Raw, disconnect_packet, skip_mosquitto, uid


class ShutdownTest(BrokerTest):

    def stop_with_clients(self):
        b = Broker({})
        b.start()
        self.addCleanup(b.kill)
        v5 = Raw(b.port, 5)
        self.addCleanup(v5.close)
        v5.connect(uid("sd5"), will={"topic": "sd/will", "payload": b"w"})
        v5.subscribe([("sd/x", 1)])
        v3 = Raw(b.port, 4)
        self.addCleanup(v3.close)
        v3.connect(uid("sd3"))
        rc = b.stop()
        return rc, v5, v3

    def test_sigterm_exits_cleanly_and_closes_connections(self):
        rc, v5, v3 = self.stop_with_clients()
        self.assertEqual(rc, 0)
        v5.expect_closed()
        got = v3.expect_closed()
        self.assertFalse(got, "3.1.1 clients get no packet, just the close: %r" % got)

    @skip_mosquitto("2.0.11 closes v5 connections at shutdown without DISCONNECT 0x8B")
    def test_sigterm_sends_server_shutting_down_to_v5(self):
        rc, v5, v3 = self.stop_with_clients()
        got = v5.expect_closed()
        d = disconnect_packet(got)
        self.assertIsNotNone(d, "no DISCONNECT before close: %r" % got)
        self.assertEqual(d.rc, 0x8B)


if __name__ == "__main__":
    unittest.main()
