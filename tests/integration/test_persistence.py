"""Persistence (SQLite store): what survives a graceful restart (SIGTERM) and a
crash (SIGKILL) of broker-cli: sessions with their subscriptions, offline
queues and in-flight QoS 1/2 state, retained messages, delayed wills; session
and message expiry counted across the downtime; queues longer than the RAM
window; corrupt databases; a full disk (persistence.max_file_size);
persistence.enable = false; persistence.sync = batch / off.

Every test runs its own broker (the harness Broker, restarted on the same
port and data directory)."""
import glob
import os
import re
import socket
import sqlite3
import time
import unittest

from harness import SANITIZER_MARKS, Broker
from mqtt_util import (Closed, MQTTv5, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, REFERENCE,
                       SESSION_EXPIRY, SUBSCRIPTION_ID, USER_PROPERTY, MESSAGE_EXPIRY,
                       TIMEOUT, BrokerTest, PacketTypes, props, sub_opts, uid)

# Short waits: these tests restart brokers many times.
SHORT = min(TIMEOUT, 6.0)


def seq(p):
    """The sequence number in a payload "<tag>:<n>[:<padding>]"."""
    return int(p.payload.split(b":")[1])


def seq_diff(got, expected):
    """A short description of how the list got differs from expected ('' if
    equal): assertEqual's diff of thousands of numbers is unreadable (and
    slow)."""
    if got == expected:
        return ""
    i = next((k for k, (a, b) in enumerate(zip(got, expected)) if a != b),
             min(len(got), len(expected)))
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    dups = len(got) - len(set(got))
    return ("got %d, expected %d; first difference at index %d: got %r, expected %r; "
            "missing %d %r; unexpected %d %r; duplicates %d"
            % (len(got), len(expected), i, got[max(0, i - 2):i + 5],
               expected[max(0, i - 2):i + 5], len(missing), missing[:10], len(extra),
               extra[:10], dups))


def by_qos(msgs):
    """{qos: [(payload, retain)...]}: MQTT orders messages per topic and QoS
    (MQTT 4.6), not across QoS levels (the broker holds a stored QoS 2
    delivery until its state is durable, so a QoS 1 one may pass it)."""
    out = {}
    for payload, qos, retain in msgs:
        out.setdefault(qos, []).append((payload, retain))
    return out


@unittest.skipIf(REFERENCE, "persistence of broker-cli (--data-dir)")
class PersistenceTest(BrokerTest):
    """No shared broker: each test starts its own (new_broker)."""

    @classmethod
    def setUpClass(cls):
        pass

    @classmethod
    def tearDownClass(cls):
        pass

    # helpers ----------------------------------------------------------------
    def new_broker(self, config=None, start=True):
        b = Broker(config or {})
        self.addCleanup(b.stop)
        self.port = b.port
        if start:
            b.start()
        return b

    def restart(self, b, crash=False, down=0.0):
        if crash:
            b.kill()
        else:
            b.terminate()
        if down:
            time.sleep(down)
        b.start()

    def sess(self, cid, version=5, expiry=300, **kw):
        """A raw connection resuming (or creating) a persistent session."""
        if version == 5:
            kw.setdefault("props", {SESSION_EXPIRY: expiry})
        return self.raw(client_id=cid, version=version, clean=False, **kw)

    def recv(self, r, n, timeout=SHORT):
        """n PUBLISH packets, each acknowledged as it arrives."""
        out = []
        deadline = time.time() + timeout
        while len(out) < n:
            try:
                p = r.read(max(0.01, deadline - time.time()))
            except Exception as e:
                raise AssertionError("got %d of %d messages (%s); last: %r"
                                     % (len(out), n, e, out[-3:]))
            self.assertEqual(p.type, PUBLISH, "expected PUBLISH, got %r" % p)
            if p.qos:
                r.ack_publish(p)
            out.append(p)
        return out

    def collect(self, r, need, timeout=SHORT):
        """Receives (and acknowledges) PUBLISH packets until every payload
        sequence number in need has been seen or timeout; returns the
        sequence numbers received, in order."""
        need = set(need)
        got = []
        deadline = time.time() + timeout
        while not need <= set(got):
            left = deadline - time.time()
            if left <= 0:
                break
            try:
                p = r.read(left)
            except Exception:
                break
            self.assertEqual(p.type, PUBLISH, "expected PUBLISH, got %r" % p)
            if p.qos:
                r.ack_publish(p)
            got.append(seq(p))
        return got

    def restored_line(self, b):
        m = re.search(r"store (\S+) \(sync = (\w+)\): restored (\d+) sessions, (\d+) "
                      r"subscriptions, (\d+) messages in flight, (\d+) queued, (\d+) "
                      r"retained, (\d+) wills", b.run_log())
        self.assertIsNotNone(m, "no 'store ... restored' line in the log:\n" + b.run_log())
        return m

    # 1. graceful restart ----------------------------------------------------
    def test_graceful_restart_keeps_v5_session_queue_and_retained(self):
        b = self.new_broker()
        base, cid = "pg/" + uid(), uid("s")
        r = self.sess(cid)
        self.assertFalse(r.connack.session_present)
        self.assertEqual(r.subscribe([(base + "/nl", sub_opts(1, nl=True))],
                                     props={SUBSCRIPTION_ID: 3}).codes, [1])
        self.assertEqual(r.subscribe([(base + "/rap/#", sub_opts(2, rap=True))],
                                     props={SUBSCRIPTION_ID: 7}).codes, [2])
        self.assertEqual(r.subscribe([("$share/g/" + base + "/sh", sub_opts(1))]).codes, [1])
        r.disconnect_and_wait()

        p = self.client()
        sent = []  # (payload, qos, retain)
        for i in range(10):
            q = 1 + i % 2
            p.publish(base + "/rap/q", b"m:%d" % i, qos=q,
                      properties=props(PacketTypes.PUBLISH, UserProperty=[("n", str(i))]))
            sent.append((b"m:%d" % i, q, False))
        p.publish(base + "/rap/r", b"m:10", qos=1, retain=True)  # RAP: queued with retain=1
        sent.append((b"m:10", 1, True))
        p.publish(base + "/ret", b"keep", qos=1, retain=True,
                  properties=props(PacketTypes.PUBLISH, ContentType="text/keep"))
        p.publish(base + "/del", b"gone", qos=1, retain=True)
        p.publish(base + "/del", b"", qos=1, retain=True)  # deletes it
        p.disconnect()

        self.restart(b)
        line = self.restored_line(b)
        self.assertGreaterEqual(int(line.group(3)), 1, line.group(0))

        r = self.sess(cid)
        self.assertTrue(r.connack.session_present, "v5 session lost by a graceful restart")
        got = self.recv(r, len(sent))
        self.assertEqual(by_qos((m.payload, m.qos, m.retain) for m in got), by_qos(sent),
                         "queued messages lost, reordered or altered by the restart")
        got.sort(key=seq)
        for i, m in enumerate(got):
            self.assertEqual(m.props.get(SUBSCRIPTION_ID), [7],
                             "subscription identifier of queued %r" % m)
            if i < 10:
                self.assertEqual(m.props.get(USER_PROPERTY), [("n", str(i))],
                                 "user property of queued %r" % m)

        p = self.client()
        # Retain As Published kept: a live retained message keeps its flag.
        p.publish(base + "/rap/live", b"live-ret", qos=1, retain=True)
        m = r.read_until(PUBLISH)
        r.ack_publish(m)
        self.assertEqual((m.payload, m.retain, m.props.get(SUBSCRIPTION_ID)),
                         (b"live-ret", True, [7]))
        # No Local kept: our own message is not sent back; another client's is,
        # with subscription identifier 3.
        ack = r.publish(base + "/nl", b"self", qos=1)
        self.assertEqual(ack.type, PUBACK)
        p.publish(base + "/nl", b"other", qos=1)
        m = r.read_until(PUBLISH)
        r.ack_publish(m)
        self.assertEqual(m.payload, b"other", "No Local lost by the restart: got %r" % m)
        self.assertEqual(m.props.get(SUBSCRIPTION_ID), [3])
        # The shared subscription is back too.
        p.publish(base + "/sh", b"shared", qos=1)
        m = r.read_until(PUBLISH)
        r.ack_publish(m)
        self.assertEqual(m.payload, b"shared")

        # Retained: kept with its properties; the deleted one stays deleted.
        c = self.client()
        c.subscribe([(base + "/ret", 1), (base + "/del", 1)])
        m = c.wait_payload(b"keep")
        self.assertTrue(m.retain)
        self.assertEqual(m.prop("ContentType"), "text/keep")
        self.assertEqual([x.payload for x in self.sync(c, p, base + "/del")], [b"keep"],
                         "a deleted retained message came back after the restart")

    def test_graceful_restart_keeps_v311_session(self):
        b = self.new_broker()
        t = "p311/" + uid()
        cid = self.offline_session(t, qos=2, version=4)
        p = self.client()
        sent = []
        for i in range(6):
            q = 1 + i % 2
            p.publish(t, b"v3:%d" % i, qos=q)
            sent.append((b"v3:%d" % i, q))
        p.disconnect()
        self.restart(b)
        r = self.raw(client_id=cid, version=4, clean=False)
        self.assertTrue(r.connack.session_present,
                        "3.1.1 clean session = 0 session lost by a graceful restart")
        got = self.recv(r, len(sent))
        self.assertEqual(by_qos((m.payload, m.qos, False) for m in got),
                         by_qos((x, q, False) for x, q in sent),
                         "queued messages lost, reordered or altered by the restart")
        # The subscription works after the restart.
        p = self.client()
        self.assertEqual([x.payload for x in self.sync(r, p, t)], [])
        p.publish(t, b"after", qos=1)
        self.assertEqual(r.read_until(PUBLISH).payload, b"after")

    def test_clean_sessions_not_restored(self):
        b = self.new_broker()
        c5 = uid("c")
        c3 = uid("c")
        # v5 clean start, expiry 0: offline, and one still connected at the stop.
        r = self.raw(client_id=c5, version=5, clean=True)
        r.subscribe([("pc/" + uid(), 1)])
        r.disconnect_and_wait()
        online = uid("c")
        o = self.raw(client_id=online, version=5, clean=True)
        o.subscribe([("pc/" + uid(), 1)])
        r = self.raw(client_id=c3, version=4, clean=True)
        r.subscribe([("pc/" + uid(), 1)])
        r.disconnect_and_wait()
        self.restart(b)
        for cid, v in ((c5, 5), (online, 5), (c3, 4)):
            with self.subTest(client=cid, version=v):
                kw = {"props": {SESSION_EXPIRY: 60}} if v == 5 else {}
                r = self.raw(client_id=cid, version=v, clean=False, **kw)
                self.assertFalse(r.connack.session_present,
                                 "a session with expiry 0 was restored")
                r.disconnect_and_wait()

    def test_connected_session_restored_after_crash(self):
        """A persistent session whose client is connected when the broker
        dies is restored (offline) with its subscriptions, and a QoS 1
        message acknowledged to its publisher just before the crash (sent to
        the subscriber, not acknowledged by it) is delivered again."""
        b = self.new_broker()
        t, cid = "pon/" + uid(), uid("s")
        r = self.sess(cid)
        r.subscribe([(t, 1)])
        p = self.client()
        p.publish(t, b"c:0", qos=1)  # PUBACK received
        b.kill()
        try:  # sent to it (or not, if the crash came first), never acknowledged
            r.read_until(PUBLISH, timeout=1)
        except (Closed, socket.timeout):
            pass
        b.start()
        r = self.sess(cid)
        self.assertTrue(r.connack.session_present,
                        "the session of a connected client was lost by a crash")
        m = r.read_until(PUBLISH, timeout=SHORT)
        r.ack_publish(m)
        self.assertEqual(m.payload, b"c:0", "acknowledged message not delivered again")
        p = self.client()
        p.publish(t, b"c:1", qos=1)
        m = r.read_until(PUBLISH)
        r.ack_publish(m)
        self.assertEqual(m.payload, b"c:1", "subscription lost")

    # 2. crash after acknowledgements -----------------------------------------
    def test_crash_keeps_acknowledged_qos1_messages(self):
        b = self.new_broker()
        t = "pk/" + uid()
        cid = self.offline_session(t, qos=1)
        p = self.client()
        p.c.max_inflight_messages_set(100)
        infos, rinfos = [], {}
        for i in range(400):
            infos.append(p.publish(t, b"k:%d" % i, qos=1, wait=False))
            if i % 10 == 0:
                rinfos[i] = p.publish("%s/r/%d" % (t, i), b"r:%d" % i, qos=1, retain=True,
                                      wait=False)
        # Kill as soon as a good part is acknowledged, with more in flight.
        wait_until_count = 150
        deadline = time.time() + SHORT
        while sum(1 for x in infos if x.is_published()) < wait_until_count:
            self.assertLess(time.time(), deadline, "PUBACKs do not come")
            time.sleep(0.002)
        b.kill()
        time.sleep(0.2)  # acknowledgements already in our socket are read
        acked = [i for i, x in enumerate(infos) if x.is_published()]
        racked = [i for i, x in rinfos.items() if x.is_published()]
        p.close()
        b.start()
        r = self.sess(cid)
        self.assertTrue(r.connack.session_present)
        got = self.collect(r, acked)
        missing = sorted(set(acked) - set(got))
        self.assertEqual(missing, [], "%d acknowledged message(s) lost by the crash (of %d "
                         "acknowledged): %s" % (len(missing), len(acked), missing[:20]))
        self.assertEqual(seq_diff(got, sorted(got)), "", "order")
        # Retained messages acknowledged before the crash are there.
        c = self.client()
        c.subscribe(t + "/r/#", 1)
        if racked:
            c.wait_messages(len(racked), timeout=SHORT)
        p = self.client()
        have = {int(m.payload.split(b":")[1]) for m in self.sync(c, p, t + "/r/x")}
        self.assertEqual(sorted(set(racked) - have), [],
                         "acknowledged retained messages lost by the crash")

    # 3. QoS 2 awaiting PUBREL across a crash ----------------------------------
    def test_crash_keeps_incoming_qos2_awaiting_pubrel(self):
        b = self.new_broker()
        t = "pq2/" + uid()
        sub = self.offline_session(t, qos=2)
        pc = uid("p")
        r = self.sess(pc)
        # pid 11: PUBREC to be lost (the PUBLISH is resent with DUP);
        # pid 12: PUBREC received (only PUBREL follows).
        for pid, payload in ((11, b"q2:1"), (12, b"q2:2")):
            r.publish(t, payload, qos=2, pid=pid, complete=False)
            rec = r.read_until(PUBREC)
            self.assertEqual((rec.pid, rec.rc), (pid, 0))
        self.restart(b, crash=True)
        r = self.sess(pc)
        self.assertTrue(r.connack.session_present)
        r.publish(t, b"q2:1", qos=2, pid=11, dup=True, complete=False)
        rec = r.read_until(PUBREC)
        self.assertEqual(rec.pid, 11)
        self.assertLess(rec.rc, 0x80, "resent PUBLISH refused: %r" % rec)
        for pid in (11, 12):
            r.ack(PUBREL, pid)
            comp = r.read_until(PUBCOMP)
            self.assertEqual((comp.pid, comp.rc), (pid, 0),
                             "PUBCOMP for %d: %r (0x92: the packet id was forgotten)"
                             % (pid, comp))
        s = self.sess(sub)
        self.assertTrue(s.connack.session_present)
        p = self.client()
        got = [m.payload for m in self.sync(s, p, t, qos=2)]
        self.assertEqual(sorted(got), [b"q2:1", b"q2:2"],
                         "each QoS 2 message exactly once across the crash")

    def test_crash_keeps_outgoing_qos2_state(self):
        """QoS 2 deliveries in flight to a subscriber when the broker crashes:
        one not acknowledged is resent with DUP and its packet id, one
        PUBRECed gets its PUBREL [MQTT-4.4.0-1]; each is received once."""
        b = self.new_broker()
        t, cid = "pout2/" + uid(), uid("s")
        r = self.sess(cid)
        r.subscribe([(t, 2)])
        p = self.client()
        p.publish(t, b"o:2", qos=2)
        p.publish(t, b"o:3", qos=2)
        m2, m3 = r.read_publishes(2)
        self.assertEqual([m.payload for m in (m2, m3)], [b"o:2", b"o:3"])
        r.ack(PUBREC, m2.pid)
        self.assertEqual(r.read_until(PUBREL).pid, m2.pid)
        time.sleep(0.3)  # let the PUBREC state reach the store
        self.restart(b, crash=True)
        r = self.sess(cid)
        self.assertTrue(r.connack.session_present)
        got = [r.read(SHORT) for _ in range(2)]
        summary = [(x.type, x.pid, getattr(x, "payload", None), getattr(x, "dup", None))
                   for x in got]
        self.assertEqual(summary, [(PUBREL, m2.pid, None, None), (PUBLISH, m3.pid, b"o:3", True)],
                         "resent in-flight state: %r" % got)
        r.ack(PUBCOMP, m2.pid)
        r.ack(PUBREC, m3.pid)
        self.assertEqual(r.read_until(PUBREL).pid, m3.pid)
        r.ack(PUBCOMP, m3.pid)
        p = self.client()
        self.assertEqual([x.payload for x in self.sync(r, p, t)], [], "duplicates")

    def test_crash_resends_outgoing_qos1_with_original_packet_id(self):
        """A QoS 1 delivery in flight (sent, no PUBACK) when the broker
        crashes is resent at reconnection with DUP = 1 and its original
        packet id [MQTT-4.4.0-1, MQTT-3.3.1-1], before newer messages."""
        b = self.new_broker()
        t, cid = "pout1/" + uid(), uid("s")
        r = self.sess(cid)
        r.subscribe([(t, 1)])
        p = self.client()
        for i in range(3):  # acknowledged: o:1 gets another packet id than 1
            p.publish(t, b"a:%d" % i, qos=1)
            r.ack_publish(r.read_until(PUBLISH))
        p.publish(t, b"o:1", qos=1)
        m1 = r.read_until(PUBLISH)
        self.assertEqual(m1.payload, b"o:1")
        self.assertNotEqual(m1.pid, 1)
        time.sleep(0.3)
        self.restart(b, crash=True)
        r = self.sess(cid)
        self.assertTrue(r.connack.session_present)
        p = self.client()
        p.publish(t, b"o:4", qos=1)
        got = r.read_publishes(2)
        for m in got:
            r.ack_publish(m)
        self.assertEqual([(m.payload, m.pid, m.dup) for m in got[:1]], [(b"o:1", m1.pid, True)],
                         "in-flight QoS 1 message not resent as such: %r" % got)
        self.assertEqual(got[1].payload, b"o:4")

    # 4. expiry across a restart ------------------------------------------------
    def test_session_and_message_expiry_count_while_stopped(self):
        b = self.new_broker()
        t = "px/" + uid()
        short = self.offline_session(t, qos=1, expiry=2)
        long_ = self.offline_session(t, qos=1, expiry=300)
        p = self.client()
        p.publish(t, b"x:0", qos=1,
                  properties=props(PacketTypes.PUBLISH, MessageExpiryInterval=2))
        p.publish(t, b"x:1", qos=1,
                  properties=props(PacketTypes.PUBLISH, MessageExpiryInterval=100))
        p.publish(t, b"x:2", qos=1)
        p.disconnect()
        b.terminate()
        t0 = time.time()
        time.sleep(3)
        b.start()
        r = self.sess(short, expiry=300)
        self.assertFalse(r.connack.session_present,
                         "a session with expiry 2 s is back after 3 s of downtime")
        r.disconnect_and_wait()
        r = self.sess(long_)
        self.assertTrue(r.connack.session_present, "a session with expiry 300 s is lost")
        p = self.client()
        got = self.sync(r, p, t)
        self.assertEqual([m.payload for m in got], [b"x:1", b"x:2"],
                         "expired message delivered, or a message lost")
        left = got[0].props.get(MESSAGE_EXPIRY)
        self.assertIsNotNone(left, "message expiry interval dropped")
        self.assertLessEqual(left, 100 - int(time.time() - t0) + 1,
                             "message expiry did not count the downtime")

    # 5. delayed will across a crash ------------------------------------------------
    def will_client(self, t, cid):
        return self.client(client_id=cid, version=MQTTv5, clean=True,
                           connect_props=props(PacketTypes.CONNECT, SessionExpiryInterval=60),
                           will=dict(topic=t, payload=b"will", qos=1,
                                     properties=props(PacketTypes.WILLMESSAGE,
                                                      WillDelayInterval=2)))

    def test_delayed_will_survives_crash(self):
        b = self.new_broker()
        t = "pw/" + uid()
        watcher = self.offline_session(t, qos=1)
        w = self.will_client(t, uid("w"))
        w.drop()
        t0 = time.time()
        time.sleep(0.25)
        b.kill()
        b.start()
        line = self.restored_line(b)
        s = self.sess(watcher)
        m = s.read_until(PUBLISH, timeout=6)
        dt = time.time() - t0
        s.ack_publish(m)
        self.assertEqual(m.payload, b"will")
        self.assertGreaterEqual(dt, 1.5, "will sent %.2fs after the drop, before its delay; "
                                "restore: %s" % (dt, line.group(0)))
        self.assertLessEqual(dt, 5.0, "will sent %.2fs after the drop" % dt)
        p = self.client()
        self.assertEqual([x.payload for x in self.sync(s, p, t)], [], "will sent twice")

    def test_delayed_will_cancelled_by_reconnect_after_crash(self):
        b = self.new_broker()
        t, wid = "pwc/" + uid(), uid("w")
        watcher = self.offline_session(t, qos=1)
        w = self.will_client(t, wid)
        w.drop()
        t0 = time.time()
        time.sleep(0.25)
        b.kill()
        b.start()
        w = self.client(client_id=wid, version=MQTTv5, clean=False,
                        connect_props=props(PacketTypes.CONNECT, SessionExpiryInterval=60))
        self.assertLess(time.time() - t0, 1.8, "too slow to test the cancel")
        self.assertTrue(w.session_present)
        time.sleep(max(0.0, t0 + 3.0 - time.time()))  # past the delay
        s = self.sess(watcher)
        p = self.client()
        self.assertEqual([x.payload for x in self.sync(s, p, t)], [],
                         "will sent although its client reconnected within the delay "
                         "(MQTT-3.1.3-9)")
        w.disconnect()

    # 6. queue larger than the RAM window ----------------------------------------------
    def test_queue_beyond_ram_window(self):
        b = self.new_broker({"persistence.queue_window": 16, "mqtt.max_mqueue_len": 0})
        t = "pwin/" + uid()
        cid = self.offline_session(t, qos=1)
        n = 3000
        p = self.client()
        p.c.max_inflight_messages_set(200)

        def batch(first):
            infos = [p.publish(t, b"w:%d" % i, qos=1, wait=False)
                     for i in range(first, first + n)]
            for x in infos:
                x.wait_for_publish(TIMEOUT)
                self.assertTrue(x.is_published(), "publish not acknowledged")

        batch(0)
        r = self.sess(cid)
        self.assertTrue(r.connack.session_present)
        got = [seq(m) for m in self.recv(r, n, timeout=30)]
        self.assertEqual(seq_diff(got, list(range(n))), "",
                         "queue beyond the RAM window lost or reordered messages")
        # Only this queue was sent: nothing more.
        self.assertEqual([x.payload for x in self.sync(r, p, t)], [])
        r.disconnect_and_wait()

        batch(n)
        r = self.sess(cid)
        before = [seq(m) for m in self.recv(r, 700, timeout=30)]
        self.assertEqual(seq_diff(before, list(range(n, n + 700))), "")
        self.restart(b)
        line = self.restored_line(b)
        r = self.sess(cid)
        self.assertTrue(r.connack.session_present)
        after = self.collect(r, range(n + 700, 2 * n), timeout=30)
        missing = sorted(set(range(n, 2 * n)) - set(before) - set(after))
        self.assertEqual(missing[:20], [], "%d queued message(s) lost by the restart (%s)"
                         % (len(missing), line.group(0)))
        self.assertEqual(seq_diff(after, sorted(set(after))), "",
                         "after the restart: out of order or duplicated within the resumed "
                         "queue")

    # 7. corrupt database ----------------------------------------------------------
    def expect_refused(self, b, *texts):
        with self.assertRaises(RuntimeError) as cm:
            b.start()
        self.assertIn("broker exited at start", str(cm.exception))
        b.killed = True  # the exit status is checked here, not at cleanup
        log = b.run_log()
        for mark in SANITIZER_MARKS:
            self.assertNotIn(mark, log)
        for text in texts:
            self.assertIn(text, log)
        self.assertEqual(b.proc.returncode, 1, "exit status %s (negative: killed by that "
                         "signal, a crash) after:\n%s" % (b.proc.returncode, log[-2000:]))
        return log

    def broker_with_file(self, content, config=None):
        b = self.new_broker(config, start=False)
        os.makedirs(b.data_dir, mode=0o700)
        with open(b.db, "wb") as f:
            f.write(content)
        return b

    CORRUPT = {
        "random": os.urandom(64 * 1024),
        "text": b"this is not a database\n" * 100,
    }

    def test_corrupt_file_refused(self):
        for name, content in self.CORRUPT.items():
            with self.subTest(file=name):
                b = self.broker_with_file(content)
                self.expect_refused(b, "cannot open the store", b.db, "move_aside")
                with open(b.db, "rb") as f:
                    self.assertEqual(f.read(), content, "refused file was changed")

    def test_foreign_sqlite_database_refused(self):
        b = self.new_broker(start=False)
        os.makedirs(b.data_dir, mode=0o700)
        db = sqlite3.connect(b.db)
        db.execute("CREATE TABLE users(name TEXT)")
        db.execute("INSERT INTO users VALUES ('alice')")
        db.commit()
        db.close()
        self.expect_refused(b, "cannot open the store", "not a libmqttbroker database")
        db = sqlite3.connect(b.db)
        self.assertEqual(db.execute("SELECT name FROM users").fetchall(), [("alice",)])
        db.close()

    def test_corrupt_file_moved_aside(self):
        for name, content in self.CORRUPT.items():
            with self.subTest(file=name):
                b = self.broker_with_file(content, {"persistence.on_corrupt": "move_aside"})
                self.check_moved_aside(b, content)

    def check_moved_aside(self, b, content):
        b.start()
        aside = glob.glob(b.db + ".corrupt-*")
        self.assertEqual(len(aside), 1, "files: %s" % os.listdir(b.data_dir))
        self.assertIn("moved %s aside" % b.db, b.run_log())
        with open(aside[0], "rb") as f:
            self.assertEqual(f.read(), content, "the moved file is not the original")
        self.assertTrue(os.path.exists(b.db), "no new database")
        # Works, and persists, with the new database.
        t = "pca/" + uid()
        self.client().publish(t, b"fresh", qos=1, retain=True)
        self.restart(b)
        c = self.client()
        c.subscribe(t, 1)
        self.assertEqual(c.wait_messages(1, timeout=SHORT)[0].payload, b"fresh")

    def truncated_database(self, b):
        """Fills b's database, stops b, and truncates the file to half (WAL
        removed); returns (the client id of a stored session, the content)."""
        t = "ptr/" + uid()
        cid = self.offline_session(t, qos=1)
        p = self.client()
        for i in range(200):
            p.publish(t, b"t:%d:" % i + b"x" * 2000, qos=1, wait=False)
        for i in range(20):
            p.publish("%s/r/%d" % (t, i), b"r" * 3000, qos=1, retain=True)
        p.publish(t + "/end", b"", qos=1)
        p.disconnect()
        b.terminate()
        for ext in ("-wal", "-shm"):
            if os.path.exists(b.db + ext):
                os.remove(b.db + ext)
        size = os.path.getsize(b.db)
        self.assertGreater(size, 200 * 1024, "database unexpectedly small")
        with open(b.db, "r+b") as f:
            f.truncate(size // 2)
        with open(b.db, "rb") as f:
            return cid, f.read()

    def test_truncated_database_refused(self):
        b = self.new_broker()
        _, content = self.truncated_database(b)
        self.expect_refused(b, "cannot open the store", "move_aside")
        with open(b.db, "rb") as f:
            self.assertEqual(f.read(), content, "refused file was changed")

    def test_check_on_start_off(self):
        """persistence.check_on_start = false: a healthy store restores as
        usual, a file that is not ours is still refused (its header is always
        read), and a truncated one gives an error, never a crash."""
        off = {"persistence.check_on_start": "false"}
        b = self.new_broker(off)
        t = "pco/" + uid()
        self.client().publish(t, b"kept", qos=1, retain=True)
        self.restart(b)
        c = self.client()
        c.subscribe(t, 1)
        self.assertEqual(c.wait_messages(1, timeout=SHORT)[0].payload, b"kept")
        b = self.broker_with_file(list(self.CORRUPT.values())[0], off)
        self.expect_refused(b, "cannot open the store", b.db)
        b = self.new_broker(off)
        self.truncated_database(b)
        try:
            b.start()
        except RuntimeError:
            pass  # refused at start: what open or load read was damaged
        b.killed = True  # the exit status is checked here
        log = b.run_log()
        for mark in SANITIZER_MARKS:
            self.assertNotIn(mark, log)
        if b.proc.poll() is None:
            b.kill()  # started: the damage is in what load does not read
        self.assertNotEqual(b.proc.wait(), -11, "crashed:\n" + log[-2000:])

    def test_truncated_database_moved_aside(self):
        b = self.new_broker({"persistence.on_corrupt": "move_aside"})
        cid, content = self.truncated_database(b)
        self.check_moved_aside(b, content)
        r = self.sess(cid)
        self.assertFalse(r.connack.session_present, "started empty")

    # 8. full "disk" ------------------------------------------------------------------
    def run_full_disk(self, crash):
        b = self.new_broker({"persistence.max_file_size": "300KB"})
        t = "pfull/" + uid()
        cid = self.offline_session(t, qos=1)
        p = self.client()
        n = 20
        payload = b"y" * (64 * 1024)
        # The first one fits and is acknowledged; then a burst. (A burst alone
        # is sometimes committed as one transaction that does not fit: then
        # not even its first message is acknowledged; see
        # test_full_disk_recovers_when_queue_is_drained.)
        infos = [p.publish(t, b"f:0:" + payload, qos=1)]
        infos += [p.publish(t, b"f:%d:" % i + payload, qos=1, wait=False) for i in range(1, n)]
        deadline = time.time() + SHORT
        while "disk full or size limit reached" not in b.run_log():
            self.assertLess(time.time(), deadline, "no 'disk full or size limit reached' in "
                            "the log:\n" + b.run_log()[-3000:])
            time.sleep(0.05)
        time.sleep(1.0)
        acked = [i for i, x in enumerate(infos) if x.is_published()]
        self.assertLess(len(acked), n, "all acknowledged although they cannot be stored")
        self.assertGreater(len(acked), 0, "no message acknowledged at all: those that fit "
                           "were not committed apart from those that do not")
        # Other clients are served meanwhile.
        s = self.client()
        s.subscribe(t + "/q0", 0)
        q = self.client()
        q.publish(t + "/q0", b"still-serving", qos=0)
        s.wait_payload(b"still-serving", timeout=SHORT)
        self.assertTrue(b.alive())
        if crash:
            b.kill()
        else:
            took = b.terminate()
            self.assertLess(took, 8.0)
        time.sleep(0.1)
        acked = [i for i, x in enumerate(infos) if x.is_published()]
        p.close()
        b.config["persistence.max_file_size"] = "0"
        b.start()
        r = self.sess(cid)
        self.assertTrue(r.connack.session_present)
        got = self.collect(r, acked)
        missing = sorted(set(acked) - set(got))
        self.assertEqual(missing, [], "acknowledged message(s) lost (acked %s, got %s)"
                         % (acked, got))

    def test_full_disk_graceful_stop(self):
        self.run_full_disk(crash=False)

    def test_full_disk_crash(self):
        self.run_full_disk(crash=True)

    def test_full_disk_recovers_when_queue_is_drained(self):
        """Delivering stored messages frees room in the database: a message
        that waited for room is then stored and acknowledged."""
        b = self.new_broker({"persistence.max_file_size": "300KB"})
        t = "pfree/" + uid()
        cid = self.offline_session(t, qos=1)
        r = self.raw()
        payload = b"y" * (64 * 1024)
        for i in range(1, 30):  # one at a time: each fits or waits alone
            r.publish(t, b"f:%d:" % i + payload, qos=1, pid=i, complete=False)
            try:
                self.assertEqual(r.read_until(PUBACK, timeout=1.5).pid, i)
            except socket.timeout:
                break
        else:
            self.fail("30 messages of 64 KB stored within 300 KB")
        self.assertGreater(i, 1, "not even one message stored")
        self.assertIn("disk full or size limit reached", b.run_log())
        s = self.sess(cid)
        got = [seq(m) for m in self.recv(s, i - 1)]  # acknowledged: deleted from the store
        self.assertEqual(got, list(range(1, i)))
        try:
            ack = r.read_until(PUBACK, timeout=SHORT)
        except socket.timeout:
            ack = None
        self.assertIsNotNone(ack, "message %d not acknowledged within %.0fs although the %d "
                             "stored before it were delivered and deleted; log:\n%s"
                             % (i, SHORT, i - 1, b.run_log()[-1500:]))
        self.assertEqual(ack.pid, i)
        m = s.read_until(PUBLISH)
        s.ack_publish(m)
        self.assertEqual(seq(m), i)

    # disk budget (persistence.max_bytes) -------------------------------------------------
    def test_disk_budget_refuse(self):
        """overflow = refuse: once the stored bytes reach persistence.max_bytes,
        QoS 1 publishes are refused with 0x97 (MQTT 5) and nothing stored is
        lost; once the queue drains, publishes are accepted again."""
        self.new_broker({"persistence.max_bytes": "200KB", "persistence.overflow": "refuse",
                         "mqtt.max_mqueue_len": "0"})
        t = "pbudget/" + uid()
        cid = self.offline_session(t, qos=1)
        r = self.raw()
        payload = b"z" * 8192
        refused = None
        for i in range(1, 80):
            r.publish(t, b"b:%d:" % i + payload, qos=1, pid=i, complete=False)
            ack = r.read_until(PUBACK, timeout=SHORT)
            self.assertEqual(ack.pid, i)
            if ack.rc == 0x97:
                refused = i
                break
            self.assertEqual(ack.rc, 0, "PUBACK reason 0x%02x" % ack.rc)
        self.assertIsNotNone(refused, "80 messages of 8 KB within a budget of 200 KB")
        self.assertGreater(refused, 10)
        s = self.sess(cid)
        got = [seq(m) for m in self.recv(s, refused - 1)]
        self.assertEqual(got, list(range(1, refused)), "an accepted message was lost")
        time.sleep(0.3)  # the deletions are committed: the budget has room again
        r.publish(t, b"b:999:", qos=1, pid=999, complete=False)
        self.assertEqual(r.read_until(PUBACK, timeout=SHORT).rc, 0)
        self.assertIn(b"b:999:", [m.payload for m in self.recv(s, 1)])

    def test_disk_budget_drop_oldest(self):
        """overflow = drop_oldest: past persistence.max_bytes the oldest queued
        messages are dropped (and logged); every publish is accepted and the
        newest messages arrive."""
        b = self.new_broker({"persistence.max_bytes": "200KB", "mqtt.max_mqueue_len": "0",
                             "persistence.queue_window": "16"})
        t = "pdrop/" + uid()
        cid = self.offline_session(t, qos=1)
        r = self.raw()
        payload = b"z" * 8192
        n = 60
        for i in range(1, n + 1):
            r.publish(t, b"d:%d:" % i + payload, qos=1, pid=i, complete=False)
            self.assertEqual(r.read_until(PUBACK, timeout=SHORT).rc, 0)
        self.assertIn("disk budget persistence.max_bytes reached: dropped the", b.run_log())
        self.restart(b)  # what is left is what the store kept
        s = self.sess(cid)
        got = self.collect(s, [n], timeout=SHORT)
        self.assertIn(n, got, "the newest message did not arrive")
        self.assertLess(len(got), n, "nothing was dropped")
        self.assertEqual(got, sorted(got), "out of order")
        self.assertNotIn(1, got, "the oldest message was kept")

    # 9. persistence off ----------------------------------------------------------------
    def test_persistence_disabled(self):
        b = self.new_broker({"persistence.enable": "false"})
        t = "poff/" + uid()
        cid = self.offline_session(t, qos=1)
        p = self.client()
        p.publish(t, b"lost", qos=1)
        p.publish(t + "/r", b"ret", qos=1, retain=True)
        p.disconnect()
        self.restart(b)
        self.assertEqual(glob.glob(os.path.join(b.dir, "**", "broker.db*"), recursive=True), [],
                         "database file with persistence.enable = false")
        r = self.sess(cid)
        self.assertFalse(r.connack.session_present)
        c = self.client()
        c.subscribe(t + "/r", 1)
        p = self.client()
        self.assertEqual([x.payload for x in self.sync(c, p, t + "/r")], [],
                         "retained message survived with persistence off")

    # 10. sync modes ----------------------------------------------------------------------
    def test_sync_batch_and_off_survive_graceful_restart(self):
        for mode in ("batch", "off"):
            with self.subTest(sync=mode):
                b = self.new_broker({"persistence.sync": mode,
                                     "persistence.flush_interval": "200ms"})
                t = "psync/" + uid()
                cid = self.offline_session(t, qos=1)
                p = self.client()
                for i in range(5):
                    p.publish(t, b"s:%d" % i, qos=1)
                p.publish(t + "/r", b"ret", qos=1, retain=True)
                p.disconnect()
                self.restart(b)
                self.assertEqual(self.restored_line(b).group(2), mode)
                r = self.sess(cid)
                self.assertTrue(r.connack.session_present)
                self.assertEqual([seq(m) for m in self.recv(r, 5)], list(range(5)))
                c = self.client()
                c.subscribe(t + "/r", 1)
                self.assertEqual(c.wait_messages(1, timeout=SHORT)[0].payload, b"ret")
                b.terminate()


if __name__ == "__main__":
    unittest.main()
