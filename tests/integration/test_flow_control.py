"""Flow control: a slow QoS 1 subscriber slows its publishers down instead of
letting its queue overflow (mqtt.backpressure_queue_len), within
mqtt.backpressure_max_hold."""
import socket
import time
import unittest

from mqtt_util import PUBACK, PUBLISH, BrokerTest, Closed, skip_mosquitto, uid

N = 300

# A small window and queue, so that without flow control messages are dropped.
# One loop thread: a publisher is then held at the first message that finds the
# queue long (with more loops, at the latest after the rest of its current
# read, see the two-loop test).
BASE = {
    "node.loop_threads": "1",
    "mqtt.max_inflight": "4",
    "mqtt.max_mqueue_len": "100",
    "mqtt.backpressure_queue_len": "20",
    "sys.interval": "1s",
}


def send_burst(pub, topic, n=N, first=0):
    """Sends n QoS 1 PUBLISH packets in one write (payload = sequence number)."""
    data = b"".join(pub.publish_bytes(topic, str(i).encode(), qos=1, pid=i + 1)
                    for i in range(first, first + n))
    pub.send(data)


def read_packets(r, seconds):
    """Every packet r receives within `seconds`."""
    out = []
    end = time.time() + seconds
    while time.time() < end:
        try:
            out.append(r.read(timeout=max(0.01, end - time.time())))
        except (socket.timeout, TimeoutError, Closed):
            break
    return out


def sys_metric(r, seconds=5):
    """The highest value of the $SYS metric r subscribed to, seen within seconds."""
    seen = 0
    end = time.time() + seconds
    while not seen and time.time() < end:
        for p in read_packets(r, 0.5):
            if p.type == PUBLISH:
                seen = max(seen, int(p.payload))
    return seen


def count_acks(pkts):
    return sum(1 for p in pkts if p.type == PUBACK)


def receive_all(sub, n, seconds, ack=True):
    """Reads PUBLISHes, acking each at once, until n arrived or nothing came
    for `seconds`."""
    got = []
    while len(got) < n:
        try:
            p = sub.read(timeout=seconds)
        except (socket.timeout, TimeoutError, Closed):
            break
        if p.type == PUBLISH:
            got.append(int(p.payload))
            if ack:
                sub.ack_publish(p)
    return got


@skip_mosquitto("flow control towards publishers is this broker's (mosquitto drops)")
class FlowControlTest(BrokerTest):
    config = dict(BASE, **{"mqtt.backpressure_max_hold": "30s"})

    def test_slow_subscriber_holds_publisher_nothing_lost(self):
        topic = "fc/" + uid()
        sub = self.raw(version=4)
        sub.subscribe([(topic, 1)])
        held = self.raw(version=4)
        held.subscribe([("$SYS/brokers/+/metrics/publishers/held", 0)])
        pub = self.raw(version=4)
        send_burst(pub, topic)
        # The subscriber reads nothing yet: its window (4) and then its queue
        # fill, and the publisher is no longer read.
        acked = count_acks(read_packets(pub, 1.0))
        self.assertLess(acked, N // 2, "the publisher was not held back")
        # Now it reads and acknowledges: everything arrives, in order.
        got = receive_all(sub, N, 20)
        self.assertEqual(got, list(range(N)))
        acked += count_acks(read_packets(pub, 1.0))
        self.assertEqual(acked, N)
        # Counted in the metrics ($SYS every second).
        self.assertGreaterEqual(sys_metric(held), 1)

    def test_own_session_never_holds(self):
        """A client that receives its own messages and does not ack them is
        not held by its own queue (it could never ack then)."""
        topic = "fc/" + uid()
        c = self.raw(version=4)
        c.subscribe([(topic, 1)])
        send_burst(c, topic)
        acks = 0
        end = time.time() + 10
        while acks < N and time.time() < end:
            acks += count_acks(read_packets(c, 0.2))
        self.assertEqual(acks, N)

    def test_subscriber_leaving_releases_publisher(self):
        topic = "fc/" + uid()
        sub = self.raw(version=4)
        sub.subscribe([(topic, 1)])
        pub = self.raw(version=4)
        send_burst(pub, topic)
        acked = count_acks(read_packets(pub, 0.5))
        self.assertLess(acked, N // 2)
        sub.close()  # clean session: gone with its queue
        acked += count_acks(read_packets(pub, 3.0))
        self.assertEqual(acked, N)

    def test_other_publishers_unaffected(self):
        """Only publishers sending to the congested session are held."""
        slow_topic, fast_topic = "fc/" + uid(), "fc/" + uid()
        slow = self.raw(version=4)
        slow.subscribe([(slow_topic, 1)])
        fast = self.raw(version=4)
        fast.subscribe([(fast_topic, 1)])
        pub1 = self.raw(version=4)
        send_burst(pub1, slow_topic)
        pub2 = self.raw(version=4)
        send_burst(pub2, fast_topic)
        got = receive_all(fast, N, 10)
        self.assertEqual(got, list(range(N)))
        self.assertEqual(count_acks(read_packets(pub2, 1.0)), N)
        receive_all(slow, N, 20)


@skip_mosquitto("flow control towards publishers is this broker's")
class FlowControlTwoLoopsTest(BrokerTest):
    """The subscriber's session may live on another loop: its queue length is
    seen there, after the publisher's current read was routed."""
    config = dict(BASE, **{"node.loop_threads": "2", "mqtt.max_mqueue_len": "1000",
                           "mqtt.backpressure_max_hold": "30s"})

    def test_held_within_a_read_nothing_lost(self):
        for attempt in range(4):  # sessions land on either loop: try several pairs
            topic = "fc/" + uid()
            sub = self.raw(version=4)
            sub.subscribe([(topic, 1)])
            pub = self.raw(version=4)
            acked = 0
            for k in range(N // 50):
                send_burst(pub, topic, 50, first=50 * k)
                acked += count_acks(read_packets(pub, 0.1))
            acked += count_acks(read_packets(pub, 0.5))
            self.assertLessEqual(acked, 150, "the publisher was not held back")
            self.assertEqual(receive_all(sub, N, 20), list(range(N)))
            acked += count_acks(read_packets(pub, 1.0))
            self.assertEqual(acked, N)


@skip_mosquitto("flow control towards publishers is this broker's")
class FlowControlLimitsTest(BrokerTest):

    def test_off_drops_and_counts(self):
        """With flow control off the same burst overflows the queue: the test
        above would fail without it."""
        b = self.start_broker(dict(BASE, **{"mqtt.backpressure_queue_len": "0"}))
        topic = "fc/" + uid()
        sub = self.raw(port=b.port, version=4)
        sub.subscribe([(topic, 1)])
        dropped = self.raw(port=b.port, version=4)
        dropped.subscribe([("$SYS/brokers/+/metrics/messages/dropped", 0)])
        pub = self.raw(port=b.port, version=4)
        send_burst(pub, topic)
        self.assertEqual(count_acks(read_packets(pub, 2.0)), N)
        got = receive_all(sub, N, 1)
        self.assertLess(len(got), N)
        self.assertGreaterEqual(sys_metric(dropped), N - len(got))

    def test_hold_is_bounded(self):
        """A subscriber that never acks holds its publishers at most
        backpressure_max_hold; then the queue limit decides (drops counted)."""
        b = self.start_broker(dict(BASE, **{"mqtt.backpressure_max_hold": "300ms"}))
        topic = "fc/" + uid()
        sub = self.raw(port=b.port, version=4)
        sub.subscribe([(topic, 1)])
        pub = self.raw(port=b.port, version=4)
        t0 = time.time()
        send_burst(pub, topic)
        acks = 0
        while acks < N and time.time() < t0 + 10:
            acks += count_acks(read_packets(pub, 0.2))
        elapsed = time.time() - t0
        self.assertEqual(acks, N)
        self.assertGreaterEqual(elapsed, 0.25)
        self.assertLess(elapsed, 5)
        self.assertEqual(len(receive_all(sub, N, 1, ack=False)), 4)  # its window


if __name__ == "__main__":
    unittest.main()
