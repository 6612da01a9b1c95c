"""Drives examples/acl_hook: devices publish only under devices/<id>/# and
subscribe only to commands/<id>/#; the back end may do anything; every
subscription is granted QoS 1 at most.

Usage: test_acl_hook.py PATH/TO/acl_hook
"""
import sys

from exutil import (MQTTv311, MQTTv5, Client, Example, Raw, Runner, check_exit, check_sigterm,
                    uid)

BACKEND = ("backend", "backend-secret")
NOT_AUTHORIZED = 0x87
SUBACK_FAILURE_V3 = 0x80


def tests(r, port, ex):
    clients = []

    def client(client_id, version, username=None, password=None):
        c = Client(port, client_id, version, username, password)
        clients.append(c)
        assert c.connect() == 0, "%s could not connect" % client_id
        return c

    backend = client(uid("backend"), MQTTv5, *BACKEND)

    def backend_subscription_downgraded_to_qos1():
        assert backend.subscribe("devices/#", 2) == [1]

    def backend_needs_its_password():
        for v, code in ((MQTTv311, 0x04), (MQTTv5, 0x86)):
            c = Client(port, uid("x"), v, "backend", "guess")
            try:
                assert c.connect() == code
            finally:
                c.close()

    def device_publishes_under_its_own_tree():
        for v in (MQTTv311, MQTTv5):
            dev = uid("dev")
            d = client(dev, v)
            for qos in (0, 1, 2):
                topic = "devices/%s/temp/q%d" % (dev, qos)
                d.publish(topic, b"21.5", qos)
                m = backend.wait_message(lambda m: m.topic == topic, topic)
                assert m.payload == b"21.5"
                assert m.qos == min(qos, 1), "delivered at QoS %d" % m.qos

    def device_cannot_publish_elsewhere():
        dev, other = uid("dev"), uid("dev")
        raw = Raw(port, 5)
        try:
            assert raw.connect(dev) == 0
            assert raw.publish("devices/%s/temp" % other, "spoof", 1) == NOT_AUTHORIZED
            assert raw.publish("devices/%s/temp" % other, "spoof", 2) == NOT_AUTHORIZED
            raw.publish("devices/%s/temp" % other, "spoof", 0)
            assert raw.publish("devices/%sx/temp" % dev, "prefix", 1) == NOT_AUTHORIZED
            assert raw.publish("commands/%s/x" % dev, "cmd", 1) == NOT_AUTHORIZED
            # The sentinel comes after the refused ones on the same connection.
            assert raw.publish("devices/%s/sentinel" % dev, "s", 1) == 0
            backend.wait_message(lambda m: m.topic == "devices/%s/sentinel" % dev, "sentinel")
            leaked = backend.received(lambda m: m.payload in (b"spoof", b"prefix", b"cmd"))
            assert not leaked, "refused messages were delivered: %r" % leaked
        finally:
            raw.close()
        # 3.1.1 has no reason code: the message must simply not arrive.
        dev = uid("dev")
        d = client(dev, MQTTv311)
        d.c.publish("devices/%s/temp" % other, b"spoof311", 1)
        d.publish("devices/%s/sentinel" % dev, b"s311", 1)
        backend.wait_message(lambda m: m.payload == b"s311", "3.1.1 sentinel")
        assert not backend.received(lambda m: m.payload == b"spoof311")

    def device_subscribes_to_its_commands_at_qos1():
        for v in (MQTTv311, MQTTv5):
            dev = uid("dev")
            d = client(dev, v)
            assert d.subscribe("commands/%s/#" % dev, 2) == [1]
            backend.publish("commands/%s/reboot" % dev, b"now", 2)
            m = d.wait_message(lambda m: m.topic == "commands/%s/reboot" % dev, "command")
            assert m.payload == b"now" and m.qos == 1, m

    def device_cannot_subscribe_elsewhere():
        for v, code in ((MQTTv311, SUBACK_FAILURE_V3), (MQTTv5, NOT_AUTHORIZED)):
            dev = uid("dev")
            d = client(dev, v)
            for f in ("commands/%s/#" % uid("dev"), "devices/#", "#", "commands/+/reboot",
                      "$SYS/#", "commands/%sx/#" % dev, "$share/g/commands/%s/#" % dev):
                assert d.subscribe(f, 1) == [code], "%s (v%d) was allowed %s" % (dev, v, f)

    def wildcard_characters_in_client_id_are_refused():
        # A device named "+" must not get commands/+/# (every device's commands).
        d = client("+", MQTTv5)
        assert d.subscribe("commands/+/#", 1) == [NOT_AUTHORIZED]
        d = client("#", MQTTv311)
        assert d.subscribe("commands/#", 1) == [SUBACK_FAILURE_V3]
        raw = Raw(port, 5)
        try:
            assert raw.connect("a/b") == 0
            assert raw.publish("devices/a/b/temp", "x", 1) == NOT_AUTHORIZED
        finally:
            raw.close()

    def will_cannot_bypass_the_acl():
        # A will is a publish too: one on another device's command topic must
        # not be delivered when the connection drops. The back end watches both
        # the command topic and the $SYS disconnected event, which the broker
        # publishes after the will, so the event proves the will's fate.
        victim, attacker = uid("dev"), uid("dev")
        watch = client(uid("backend"), MQTTv5, *BACKEND)
        assert watch.subscribe("commands/%s/#" % victim, 1) == [1]
        assert watch.subscribe("$SYS/brokers/+/clients/%s/disconnected" % attacker, 0) == [0]
        a = Client(port, attacker, MQTTv311)
        a.c.will_set("commands/%s/reboot" % victim, b"will-spoof", 1)
        if a.connect() == 0:  # refusing the CONNECT would do as well
            a.running = False  # then drop the connection without DISCONNECT
            a.thread.join()
            a.c.socket().close()
            watch.wait_message(lambda m: m.topic.endswith("/disconnected"), "disconnected event")
        assert not watch.received(lambda m: m.payload == b"will-spoof"), "the will bypassed the ACL"

    for t in (backend_subscription_downgraded_to_qos1, backend_needs_its_password,
              device_publishes_under_its_own_tree, device_cannot_publish_elsewhere,
              device_subscribes_to_its_commands_at_qos1, device_cannot_subscribe_elsewhere,
              wildcard_characters_in_client_id_are_refused, will_cannot_bypass_the_acl):
        r.run(t)
    for c in clients:
        c.close()

    def exits_0_at_end_of_stdin():
        check_exit(ex)
    r.run(exits_0_at_end_of_stdin)


def main():
    binary = sys.argv[1]
    r = Runner("acl_hook")
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
