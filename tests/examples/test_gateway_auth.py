"""Drives examples/gateway_auth: CONNECTs are checked against the device table
by a worker thread (MQB_PENDING + mqb_auth_complete()).

Usage: test_gateway_auth.py PATH/TO/gateway_auth
"""
import sys

from exutil import (MQTTv311, MQTTv5, Client, Example, Raw, Runner, check_exit, check_sigterm,
                    uid, wait_until)

DEVICES = [("thermo-1", "hunter2"), ("valve-7", "open-sesame"), ("meter-3", "kWh")]
BAD_USER_PASS_V3 = 0x04   # 3.1.1 CONNACK return code
BAD_USER_PASS_V5 = 0x86   # MQTT 5 reason code


def expect_connack(port, version, username, password, want):
    c = Client(port, uid("g"), version, username, password)
    try:
        rc = c.connect()
        assert rc == want, "%s/%r (v%d): CONNACK %r, expected %#x" % (
            username, password, version, rc, want)
    finally:
        c.close()


def tests(r, port, ex):
    def known_devices_connect():
        for user, password in DEVICES:
            for v in (MQTTv311, MQTTv5):
                expect_connack(port, v, user, password, 0)

    def wrong_password_is_refused():
        expect_connack(port, MQTTv311, "thermo-1", "hunter3", BAD_USER_PASS_V3)
        expect_connack(port, MQTTv5, "thermo-1", "hunter3", BAD_USER_PASS_V5)
        expect_connack(port, MQTTv5, "thermo-1", "", BAD_USER_PASS_V5)

    def unknown_device_is_refused():
        expect_connack(port, MQTTv311, "toaster-9", "hunter2", BAD_USER_PASS_V3)
        expect_connack(port, MQTTv5, "toaster-9", "hunter2", BAD_USER_PASS_V5)

    def no_credentials_are_refused():
        # Answered by the hook at once (MQB_DENY), allow_anonymous = false.
        expect_connack(port, MQTTv311, None, None, BAD_USER_PASS_V3)
        expect_connack(port, MQTTv5, None, None, BAD_USER_PASS_V5)
        raw = Raw(port, 4)
        try:
            assert raw.connect(uid("n"), username="valve-7") == BAD_USER_PASS_V3
        finally:
            raw.close()

    def authenticated_devices_exchange_messages():
        sub = Client(port, uid("s"), MQTTv5, *DEVICES[0])
        pub = Client(port, uid("p"), MQTTv311, *DEVICES[1])
        try:
            assert sub.connect() == 0 and pub.connect() == 0
            assert sub.subscribe("plant/+/state", 1) == [1]
            pub.publish("plant/valve-7/state", b"open", 1)
            m = sub.wait_message(lambda m: m.topic == "plant/valve-7/state", "plant/valve-7/state")
            assert m.payload == b"open"
        finally:
            sub.close()
            pub.close()

    def packets_wait_for_the_verdict():
        # CONNECT and SUBSCRIBE in one write: the SUBSCRIBE is processed only
        # after the worker thread allowed the CONNECT.
        raw = Raw(port, 4)
        try:
            raw.cork()
            raw.send_connect(uid("w"), *DEVICES[2])
            raw.send_subscribe("plant/#", 2)
            raw.uncork()
            assert raw.connack() == 0
            assert raw.suback() == [2]
        finally:
            raw.close()

    def refused_client_publishes_nothing():
        # A PUBLISH pipelined behind a CONNECT that is refused is never routed.
        sub = Client(port, uid("s"), MQTTv311, *DEVICES[0])
        bad = Raw(port, 4)
        try:
            assert sub.connect() == 0
            assert sub.subscribe("leak/#", 0) == [0]
            bad.cork()
            bad.send_connect(uid("b"), "thermo-1", "wrong")
            bad.send_publish("leak/secret", "x", 0)
            bad.uncork()
            assert bad.connack() == BAD_USER_PASS_V3
            assert bad.recv() is None, "the refused connection stayed open"
            sub.publish("leak/sentinel", b"s", 1)
            sub.wait_message(lambda m: m.topic == "leak/sentinel", "leak/sentinel")
            assert not sub.received(lambda m: m.topic == "leak/secret"), \
                "a refused client's message was routed"
        finally:
            sub.close()
            bad.close()

    def fifty_devices_at_once():
        # 50 CONNECTs on the wire before any answer is read: 1 in 3 with a wrong
        # password, v3.1.1 and v5 mixed. Every one gets its own right answer.
        raws, want = [], []
        try:
            for i in range(50):
                version = 5 if i % 2 else 4
                user, password = DEVICES[i % len(DEVICES)]
                good = i % 3 != 0
                raw = Raw(port, version)
                raws.append(raw)
                raw.send_connect(uid("f"), user, password if good else password + "!")
                want.append(0 if good else (BAD_USER_PASS_V5 if version == 5 else BAD_USER_PASS_V3))
            got = [raw.connack() for raw in raws]
            assert got == want, "CONNACK codes %r, expected %r" % (got, want)
        finally:
            for raw in raws:
                raw.close()

    def client_leaving_while_pending():
        # The client goes before its lookup ends: the worker's mqb_auth_complete()
        # returns MQB_ERR_NOTFOUND (the example logs it) and nothing else happens.
        for _ in range(5):
            raw = Raw(port, 4)
            raw.send_connect(uid("l"), *DEVICES[1])
            raw.close()
        wait_until(lambda: "valve-7 went away before its lookup ended" in ex.log(),
                   what="the example to log a ticket of a client that went away")
        expect_connack(port, MQTTv311, *DEVICES[1], 0)

    def exits_0_at_end_of_stdin():
        check_exit(ex, None, *DEVICES[0])

    for t in (known_devices_connect, wrong_password_is_refused, unknown_device_is_refused,
              no_credentials_are_refused, authenticated_devices_exchange_messages,
              packets_wait_for_the_verdict, refused_client_publishes_nothing,
              fifty_devices_at_once, client_leaving_while_pending, exits_0_at_end_of_stdin):
        r.run(t)


def main():
    binary = sys.argv[1]
    r = Runner("gateway_auth")
    ex = Example(binary)
    try:
        tests(r, ex.port, ex)
    finally:
        ex.kill()

    def exits_0_on_sigterm():
        check_sigterm(binary, username=DEVICES[0][0], password=DEVICES[0][1])
    r.run(exits_0_on_sigterm)
    r.finish()


if __name__ == "__main__":
    main()
