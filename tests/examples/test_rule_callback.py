"""Drives examples/rule_callback: an in-process subscription to sensors/+/temp
aggregates readings and publishes a JSON summary with user properties to
summary/temp every N readings.

Usage: test_rule_callback.py PATH/TO/rule_callback
"""
import json
import sys

from exutil import (MQTTv311, MQTTv5, Client, Example, Runner, check_exit, check_sigterm, uid,
                    wait_until)


def summary_of(m):
    return json.loads(m.payload.decode()), dict(m.user_properties())


def tests(r, ex, every):
    port = ex.port
    clients = []

    def client(version):
        c = Client(port, uid("r"), version)
        clients.append(c)
        assert c.connect() == 0
        return c

    sub5 = client(MQTTv5)
    sub3 = client(MQTTv311)
    for s in (sub5, sub3):
        assert s.subscribe("summary/temp", 1) == [1]
    pub3 = client(MQTTv311)
    pub5 = client(MQTTv5)

    def summaries(s):
        return s.received(lambda m: m.topic == "summary/temp")

    def nth_summary(s, n):
        wait_until(lambda: len(summaries(s)) >= n, what="summary #%d" % n)
        return summaries(s)[n - 1]

    def first_window():
        # Ignored: not a number, not a temp topic, an id with characters that
        # would need escaping in JSON.
        pub3.publish("sensors/s1/temp", b"warm", 1)
        pub3.publish("sensors/s1/humidity", b"55", 1)
        pub3.publish('sensors/a"b/temp', b"1", 1)
        readings = [("s1", "20"), ("s2", "10"), ("s1", "22"), ("s2", "11"), ("s2", "12")]
        readings = (readings * 2)[:every] if every != 5 else readings
        for sensor, value in readings:
            pub = pub3 if sensor == "s1" else pub5
            pub.publish("sensors/%s/temp" % sensor, value.encode(), 1)
        m = nth_summary(sub5, 1)
        body, props = summary_of(m)
        expect = {}
        for sensor, value in readings:
            expect.setdefault(sensor, []).append(float(value))
        want = {s: {"count": len(v), "min": min(v), "max": max(v), "avg": round(sum(v) / len(v), 2)}
                for s, v in expect.items()}
        assert body == want, "summary %r, expected %r" % (body, want)
        assert props == {"readings": str(every), "sensors": str(len(want)), "window": "1"}, props
        assert m.properties.ContentType == "application/json", m.properties.ContentType
        assert m.properties.PayloadFormatIndicator == 1
        assert m.qos == 1
        m3 = nth_summary(sub3, 1)
        assert json.loads(m3.payload.decode()) == want, "3.1.1 subscriber got %r" % m3.payload

    def next_window_starts_afresh():
        values = ["1.5", "2.5", "-1", "4", "3", "0.5", "7"][:every]
        sensor = uid("w")
        for v in values:
            pub5.publish("sensors/%s/temp" % sensor, v.encode(), 1)
        m = nth_summary(sub5, 2)
        body, props = summary_of(m)
        nums = [float(v) for v in values]
        want = {sensor: {"count": len(nums), "min": min(nums), "max": max(nums),
                         "avg": round(sum(nums) / len(nums), 2)}}
        assert body == want, "summary %r, expected %r" % (body, want)
        assert props == {"readings": str(every), "sensors": "1", "window": "2"}, props
        assert len(summaries(sub5)) == 2, summaries(sub5)

    for t in (first_window, next_window_starts_afresh):
        r.run(t)
    for c in clients:
        c.close()


def main():
    binary = sys.argv[1]
    r = Runner("rule_callback")
    for every in (5, 3):
        args = () if every == 5 else (every,)
        ex = Example(binary, *args)
        try:
            tests(r, ex, every)

            def exits_0_at_end_of_stdin():
                check_exit(ex)
            r.run(exits_0_at_end_of_stdin)
        finally:
            ex.kill()

    def summaries_arrive_in_window_order():
        # N = 1: every reading makes a summary, published by the callback with
        # mqb_publish() one after the other, so they must arrive in order.
        ex = Example(binary, 1)
        try:
            sub = Client(ex.port, uid("o"), MQTTv5)
            pub = Client(ex.port, uid("o"), MQTTv311)
            assert sub.connect() == 0 and pub.connect() == 0
            assert sub.subscribe("summary/temp", 1) == [1]
            for i in range(30):
                pub.publish("sensors/o/temp", b"%d" % i, 0)
            pub.publish("sensors/o/temp", b"30", 1)
            got = lambda: sub.received(lambda m: m.topic == "summary/temp")  # noqa: E731
            wait_until(lambda: len(got()) >= 31, what="31 summaries")
            windows = [dict(m.user_properties())["window"] for m in got()]
            values = [summary_of(m)[0]["o"]["min"] for m in got()]
            assert windows == [str(i) for i in range(1, 32)], "window order %r" % windows
            assert values == [float(i) for i in range(31)], "reading order %r" % values
            sub.close()
            pub.close()
            check_exit(ex)
        finally:
            ex.kill()
    r.run(summaries_arrive_in_window_order)

    def exits_0_on_sigterm():
        check_sigterm(binary)
    r.run(exits_0_on_sigterm)
    r.finish()


if __name__ == "__main__":
    main()
