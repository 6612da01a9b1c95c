"""Drives examples/host_loop: the broker in step mode inside the host's poll()
loop, with a host timer publishing host/tick every second and stdin lines
published to host/stdin.

Usage: test_host_loop.py PATH/TO/host_loop
"""
import sys

from exutil import (MQTTv311, MQTTv5, Client, Example, Raw, Runner, check_exit, check_sigterm,
                    uid, wait_until)


def tests(r, ex):
    port = ex.port
    clients = []

    def client(version):
        c = Client(port, uid("h"), version)
        clients.append(c)
        assert c.connect() == 0
        return c

    stayer = client(MQTTv5)  # stays connected until the end

    def ticks_arrive_once_a_second():
        sub = client(MQTTv311)
        assert sub.subscribe("host/tick", 0) == [0]
        ticks = lambda: sub.received(lambda m: m.topic == "host/tick")  # noqa: E731
        wait_until(lambda: len(ticks()) >= 3, what="three host/tick messages")
        values = [int(m.payload) for m in ticks()]
        assert all(b == a + 1 for a, b in zip(values, values[1:])), "tick counter %r" % values
        span = ticks()[2].arrived - ticks()[0].arrived
        assert 1.5 <= span <= 3.5, "3 ticks over %.2fs, not about 2s" % span

    def pub_sub_through_the_stepped_broker():
        for v in (MQTTv311, MQTTv5):
            sub, pub = client(v), client(MQTTv5 if v == MQTTv311 else MQTTv311)
            topic = "t/%s" % uid("x")
            assert sub.subscribe(topic + "/#", 2) == [2]
            for qos in (0, 1, 2):
                pub.publish("%s/q%d" % (topic, qos), b"m%d" % qos, qos)
                m = sub.wait_message(lambda m: m.topic == "%s/q%d" % (topic, qos), "QoS %d" % qos)
                assert m.payload == b"m%d" % qos and m.qos == qos, m
            for i in range(200):  # a burst, in order
                pub.publish(topic + "/burst", b"%d" % i, 1)
            wait_until(lambda: len(sub.received(lambda m: m.topic == topic + "/burst")) == 200,
                       what="200 messages")
            got = [int(m.payload) for m in sub.received(lambda m: m.topic == topic + "/burst")]
            assert got == list(range(200)), "out of order"

    def retained_messages_work():
        pub = client(MQTTv311)
        topic = "r/%s" % uid("x")
        pub.publish(topic, b"kept", 1, retain=True)
        late = client(MQTTv5)
        late.subscribe(topic, 1)
        m = late.wait_message(lambda m: m.topic == topic, "the retained message")
        assert m.payload == b"kept" and m.retain
        pub.publish(topic, b"", 1, retain=True)

    def stdin_lines_are_published():
        sub = client(MQTTv5)
        assert sub.subscribe("host/stdin", 1) == [1]
        ex.write("hello from stdin\n")
        ex.write("part")
        ex.write("ial\nsecond\n")
        wait_until(lambda: len(sub.received(lambda m: m.topic == "host/stdin")) >= 3,
                   what="three host/stdin messages")
        got = [m.payload for m in sub.received(lambda m: m.topic == "host/stdin")]
        assert sorted(got) == [b"hello from stdin", b"partial", b"second"], got

    def host_publishes_keep_their_order():
        # 20 lines in one write: published one after the other by the host
        # thread (mqb_broker_publish, QoS 1, one topic), so received in order.
        sub = client(MQTTv5)
        assert sub.subscribe("host/stdin", 1) == [1]
        ex.write("".join("line %d\n" % i for i in range(20)))
        lines = lambda: [m.payload for m in sub.received(  # noqa: E731
            lambda m: m.topic == "host/stdin" and m.payload.startswith(b"line "))]
        wait_until(lambda: len(lines()) >= 20, what="20 host/stdin messages")
        assert lines() == [b"line %d" % i for i in range(20)], "out of order: %r" % lines()

    def raw_client_works_too():
        raw = Raw(port, 4)
        try:
            assert raw.connect(uid("raw")) == 0
            assert raw.publish("raw/x", "y", 2) == 0
        finally:
            raw.close()

    for t in (ticks_arrive_once_a_second, pub_sub_through_the_stepped_broker,
              retained_messages_work, stdin_lines_are_published, host_publishes_keep_their_order,
              raw_client_works_too):
        r.run(t)

    def exits_0_at_end_of_stdin():
        check_exit(ex)
        stayer.wait_closed()  # (paho 1.6 ignores a short DISCONNECT: check_exit reads it raw)
    r.run(exits_0_at_end_of_stdin)
    for c in clients:
        c.close()


def main():
    binary = sys.argv[1]
    r = Runner("host_loop")
    ex = Example(binary)
    try:
        tests(r, ex)
    finally:
        ex.kill()

    def exits_0_on_sigterm():
        check_sigterm(binary)
    r.run(exits_0_on_sigterm)
    r.finish()


if __name__ == "__main__":
    main()
