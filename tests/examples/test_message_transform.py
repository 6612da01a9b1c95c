"""Drives examples/message_transform: sensors/<id>/celsius is rewritten in place
to sensors/<id>/fahrenheit; blocked/# is dropped with reason 0x87; a
non-numeric reading is refused with 0x99.

Usage: test_message_transform.py PATH/TO/message_transform
"""
import sys

from exutil import (MQTTv311, MQTTv5, Client, Example, Raw, Runner, check_exit, check_sigterm,
                    uid)

NOT_AUTHORIZED = 0x87
PAYLOAD_FORMAT_INVALID = 0x99


def tests(r, port, ex):
    clients = []

    def client(version):
        c = Client(port, uid("m"), version)
        clients.append(c)
        assert c.connect() == 0
        return c

    sub5 = client(MQTTv5)
    sub3 = client(MQTTv311)
    for s in (sub5, sub3):
        assert s.subscribe("#", 1) == [1]

    def celsius_arrives_as_fahrenheit():
        cases = [("100", b"212.0"), ("21.5", b"70.7"), ("-40", b"-40.0"), ("0", b"32.0")]
        for i, (celsius, fahrenheit) in enumerate(cases):
            pub = client(MQTTv311 if i % 2 else MQTTv5)
            sensor = uid("s")
            pub.publish("sensors/%s/celsius" % sensor, celsius.encode(), 1)
            topic = "sensors/%s/fahrenheit" % sensor
            for s in (sub5, sub3):
                m = s.wait_message(lambda m: m.topic == topic, topic)
                assert m.payload == fahrenheit, "%s C -> %r, expected %r" % (
                    celsius, m.payload, fahrenheit)
            m = sub5.wait_message(lambda m: m.topic == topic, topic)
            assert getattr(m.properties, "PayloadFormatIndicator", None) == 1, \
                "no Payload Format Indicator on the rewritten message"
        assert not sub5.received(lambda m: m.topic.endswith("/celsius")), \
            "a message was delivered on a celsius topic"

    def retained_reading_is_stored_converted():
        pub = client(MQTTv5)
        sensor = uid("r")
        pub.publish("sensors/%s/celsius" % sensor, b"37", 1, retain=True)
        late = client(MQTTv5)
        late.subscribe("sensors/%s/#" % sensor, 1)
        m = late.wait_message(lambda m: m.retain, "the retained message")
        assert (m.topic, m.payload) == ("sensors/%s/fahrenheit" % sensor, b"98.6"), m
        pub.publish("sensors/%s/fahrenheit" % sensor, b"", 1, retain=True)  # clear it

    def non_numeric_reading_is_refused():
        raw = Raw(port, 5)
        try:
            assert raw.connect(uid("b")) == 0
            sensor = uid("n")
            for payload in ("warm", "", "12abc"):
                rc = raw.publish("sensors/%s/celsius" % sensor, payload, 1)
                assert rc == PAYLOAD_FORMAT_INVALID, "%r: reason %#x" % (payload, rc)
            assert raw.publish("sensors/%s/celsius" % sensor, "1", 1) == 0
            sub5.wait_message(lambda m: m.topic == "sensors/%s/fahrenheit" % sensor, "sentinel")
            got = sub5.received(lambda m: m.topic.startswith("sensors/%s/" % sensor))
            assert [m.payload for m in got] == [b"33.8"], got
        finally:
            raw.close()

    def blocked_is_dropped_with_0x87():
        raw = Raw(port, 5)
        try:
            assert raw.connect(uid("b")) == 0
            assert raw.publish("blocked/a", "one", 1) == NOT_AUTHORIZED
            assert raw.publish("blocked/a/b", "two", 2) == NOT_AUTHORIZED
            assert raw.publish("blocked", "three", 1) == NOT_AUTHORIZED
            raw.publish("blocked/q0", "four", 0)
            assert raw.publish("unblocked/x", "sentinel5", 1) == 0
        finally:
            raw.close()
        pub3 = client(MQTTv311)
        pub3.publish("blocked/v3", b"five", 1)
        pub3.publish("unblocked/x", b"sentinel3", 1)
        for s in (sub5, sub3):
            s.wait_message(lambda m: m.payload == b"sentinel5", "sentinel (v5 publisher)")
            s.wait_message(lambda m: m.payload == b"sentinel3", "sentinel (3.1.1 publisher)")
            leaked = s.received(lambda m: m.topic.startswith("blocked"))
            assert not leaked, "blocked messages delivered: %r" % leaked

    def wills_are_transformed_too():
        # A will is a message its client publishes: a will on blocked/# is
        # dropped, one on sensors/<id>/celsius arrives converted. The watcher
        # also gets the $SYS disconnected event, published after the will.
        watch = client(MQTTv5)
        accepted = []
        for topic, payload in (("blocked/will", b"will-leak"), ("sensors/w/celsius", b"10")):
            cid = uid("will")
            assert watch.subscribe("$SYS/brokers/+/clients/%s/disconnected" % cid, 0) == [0]
            assert watch.subscribe(topic.replace("celsius", "+"), 1) == [1]
            a = Client(port, cid, MQTTv311)
            a.c.will_set(topic, payload, 1)
            if a.connect() != 0:
                continue  # refusing such a CONNECT would do as well
            accepted.append(topic)
            a.running = False  # drop the connection without DISCONNECT
            a.thread.join()
            a.c.socket().close()
            watch.wait_message(lambda m: m.topic.endswith("/%s/disconnected" % cid), "event")
        got = [(m.topic, m.payload) for m in watch.received(lambda m: not m.topic.startswith("$"))]
        assert ("blocked/will", b"will-leak") not in got, "a will on blocked/# was delivered"
        assert ("sensors/w/celsius", b"10") not in got, "a celsius will was not converted"
        if "sensors/w/celsius" in accepted:
            assert ("sensors/w/fahrenheit", b"50.0") in got, "no converted will: %r" % got

    def other_topics_pass_unchanged():
        pub = client(MQTTv5)
        pub.publish("sensors/x/humidity", b"40", 1)
        pub.publish("other/celsius", b"100", 1)
        sub5.wait_message(lambda m: (m.topic, m.payload) == ("sensors/x/humidity", b"40"),
                          "humidity")
        sub5.wait_message(lambda m: m.topic == "other/celsius" and m.payload == b"100", "other")

    for t in (celsius_arrives_as_fahrenheit, retained_reading_is_stored_converted,
              non_numeric_reading_is_refused, blocked_is_dropped_with_0x87,
              wills_are_transformed_too, other_topics_pass_unchanged):
        r.run(t)
    for c in clients:
        c.close()

    def exits_0_at_end_of_stdin():
        check_exit(ex)
    r.run(exits_0_at_end_of_stdin)


def main():
    binary = sys.argv[1]
    r = Runner("message_transform")
    ex = Example(binary)
    try:
        tests(r, ex.port, ex)
    finally:
        ex.kill()

    def exits_0_on_sigterm():
        check_sigterm(binary)
    r.run(exits_0_on_sigterm)
    r.finish()


if __name__ == "__main__":
    main()
