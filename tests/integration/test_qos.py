"""QoS 0/1/2 in both directions, all protocol version mixes, downgrade,
exactly-once and redelivery after a dropped connection."""
import socket
import time
import unittest

from mqtt_util import (PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, SESSION_EXPIRY, VERSIONS,
                       VNAME, BrokerTest, uid)


class QosTest(BrokerTest):

    def test_version_mix_and_downgrade(self):
        """Every publisher version x subscriber version x publish QoS x
        subscription QoS: delivered once with QoS min(pub, sub)."""
        base = "qmix/" + uid()
        subs = {}
        for sv in VERSIONS:
            s = self.client(version=sv)
            granted = s.subscribe([("%s/%d/%d/#" % (base, sv, sq), sq) for sq in range(3)])
            self.assertEqual(granted, [0, 1, 2])
            subs[sv] = s
        pubs = {pv: self.client(version=pv) for pv in VERSIONS}
        expected = {}
        for sv in VERSIONS:
            for sq in range(3):
                for pv in VERSIONS:
                    for pq in range(3):
                        t = "%s/%d/%d/%d/%d" % (base, sv, sq, pv, pq)
                        pubs[pv].publish(t, t.encode(), qos=pq, wait=(pq > 0))
                        expected.setdefault(sv, {})[t] = min(pq, sq)
        for sv in VERSIONS:
            msgs = subs[sv].wait_messages(len(expected[sv]))
            got = {}
            for m in msgs:
                with self.subTest(sub=VNAME[sv], topic=m.topic):
                    self.assertNotIn(m.topic, got, "duplicate delivery")
                    self.assertEqual(m.payload, m.topic.encode())
                    got[m.topic] = m.qos
            self.assertEqual(got, expected[sv], "subscriber %s" % VNAME[sv])

    def test_qos2_exactly_once_in_order(self):
        t = "q2/" + uid()
        s = self.client(version=5)
        s.subscribe(t, 2)
        p = self.client(version=4)
        n = 100
        infos = [p.publish(t, b"%d" % i, qos=2, wait=False) for i in range(n)]
        for i in infos:
            i.wait_for_publish(10)
        msgs = s.wait_messages(n)
        self.sync(s, p, t, qos=2)
        msgs = [m for m in s.messages if not m.payload.startswith(b"sync-")]
        self.assertEqual([m.payload for m in msgs], [b"%d" % i for i in range(n)])
        self.assertTrue(all(m.qos == 2 for m in msgs))

    def test_qos1_in_order(self):
        t = "q1/" + uid()
        s = self.client(version=4)
        s.subscribe(t, 1)
        p = self.client(version=5)
        infos = [p.publish(t, b"%d" % i, qos=1, wait=False) for i in range(200)]
        for i in infos:
            i.wait_for_publish(10)
        msgs = s.wait_messages(200)
        self.assertEqual([m.payload for m in msgs], [b"%d" % i for i in range(200)])

    def test_large_and_small_payloads_interleaved(self):
        """Large payloads are written by reference and small ones copied: every
        subscriber (each version, each QoS) gets every payload byte-exact and in
        order, also around the 1 KiB switch and with v5 properties."""
        t = "big/" + uid()
        sizes = [0, 10, 1023, 1024, 1025, 4000, 70000, 5, 300000, 1024, 2, 900000, 64]
        payloads = [bytes((i * 7 + j) % 251 for j in range(n)) for i, n in enumerate(sizes)]
        subs = []
        for v in VERSIONS:
            for q in range(3):
                c = self.client(version=v)
                c.subscribe(t, q)
                subs.append(c)
        p = self.client(version=5)
        for q in range(3):
            for pl in payloads:
                p.publish(t, pl, qos=q, wait=(q > 0))
        for c in subs:
            msgs = c.wait_messages(3 * len(payloads), timeout=30)
            self.assertEqual([m.payload for m in msgs], payloads * 3)

    def test_large_payloads_to_a_slow_reader(self):
        """Writes of large payloads by reference resume where the socket
        stopped taking them: a reader that takes small bites gets it all."""
        t = "bigslow/" + uid()
        r = self.raw(version=4)
        r.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        r.subscribe([(t, 1)])
        p = self.client(version=4)
        payloads = [bytes([i]) * (200000 + i) for i in range(8)] + [b"end"]
        for pl in payloads:
            p.publish(t, pl, qos=1, wait=False)
        got = []
        while len(got) < len(payloads):
            time.sleep(0.002)
            pk = r.read(timeout=20)
            if pk.type == PUBLISH:
                got.append(pk.payload)
                r.ack_publish(pk)
        self.assertEqual(got, payloads)

    def test_inbound_qos2_duplicate_publish_delivered_once(self):
        """A publisher resending its QoS 2 PUBLISH (DUP) before PUBREL must not
        cause a second delivery."""
        for v in (4, 5):
            with self.subTest(version=v):
                t = "q2dup/" + uid()
                s = self.client(version=5)
                s.subscribe(t, 2)
                r = self.raw(version=v)
                r.send(r.publish_bytes(t, b"once", qos=2, pid=7))
                self.assertEqual(r.read_until(PUBREC).pid, 7)
                r.send(r.publish_bytes(t, b"once", qos=2, pid=7, dup=True))
                self.assertEqual(r.read_until(PUBREC).pid, 7)
                r.ack(PUBREL, 7)
                self.assertEqual(r.read_until(PUBCOMP).pid, 7)
                s.wait_payload(b"once")
                extra = self.sync(s, r, t, qos=2)
                self.assertEqual([m.payload for m in extra], [b"once"])

    def test_inbound_qos2_pubrel_after_reconnect(self):
        """Publisher drops after PUBREC; on resuming the session it sends PUBREL
        and gets PUBCOMP; the message is delivered exactly once."""
        for v in (4, 5):
            with self.subTest(version=v):
                t = "q2rel/" + uid()
                cid = uid("pub")
                s = self.client(version=5)
                s.subscribe(t, 2)
                kw = {"clean": False}
                if v == 5:
                    kw["props"] = {SESSION_EXPIRY: 60}
                r = self.raw(version=v, client_id=cid, **kw)
                r.send(r.publish_bytes(t, b"m", qos=2, pid=3))
                self.assertEqual(r.read_until(PUBREC).pid, 3)
                r.abort()
                r2 = self.raw(version=v, client_id=cid, **kw)
                self.assertTrue(r2.connack.session_present)
                r2.ack(PUBREL, 3)
                self.assertEqual(r2.read_until(PUBCOMP).pid, 3)
                s.wait_payload(b"m")
                extra = self.sync(s, r2, t, qos=2)
                self.assertEqual([m.payload for m in extra], [b"m"])
                r2.disconnect(0, {SESSION_EXPIRY: 0} if v == 5 else None)

    def _persistent(self, v, cid):
        kw = {"clean": False}
        if v == 5:
            kw["props"] = {SESSION_EXPIRY: 60}
        return self.raw(version=v, client_id=cid, **kw)

    def test_qos1_redelivered_with_dup_after_drop(self):
        for v in (4, 5):
            with self.subTest(version=v):
                t = "q1re/" + uid()
                cid = uid("sub")
                r = self._persistent(v, cid)
                r.subscribe([(t, 1)])
                p = self.client(version=4)
                for i in range(3):
                    p.publish(t, b"%d" % i, qos=1)
                first = r.read_publishes(3)
                self.assertEqual([x.payload for x in first], [b"0", b"1", b"2"])
                self.assertFalse(any(x.dup for x in first))
                r.abort()  # no PUBACK
                r2 = self._persistent(v, cid)
                self.assertTrue(r2.connack.session_present)
                again = r2.read_publishes(3)
                self.assertEqual([x.payload for x in again], [b"0", b"1", b"2"])
                for x in again:
                    self.assertTrue(x.dup, "resent PUBLISH must have DUP set: %r" % x)
                    self.assertEqual(x.qos, 1)
                    r2.ack(PUBACK, x.pid)
                # Acknowledged: nothing more is resent, later messages flow.
                p.publish(t, b"after", qos=1)
                nxt = r2.read_until(PUBLISH)
                self.assertEqual(nxt.payload, b"after")
                r2.ack(PUBACK, nxt.pid)
                r2.disconnect(0, {SESSION_EXPIRY: 0} if v == 5 else None)

    def test_qos2_redelivery_publish_then_pubrel(self):
        for v in (4, 5):
            with self.subTest(version=v):
                t = "q2re/" + uid()
                cid = uid("sub")
                r = self._persistent(v, cid)
                r.subscribe([(t, 2)])
                p = self.client(version=5)
                p.publish(t, b"x", qos=2)
                p1 = r.read_until(PUBLISH)
                self.assertEqual((p1.qos, p1.dup, p1.payload), (2, False, b"x"))
                r.abort()  # neither PUBREC
                # Reconnect: PUBLISH resent with DUP.
                r2 = self._persistent(v, cid)
                self.assertTrue(r2.connack.session_present)
                p2 = r2.read_until(PUBLISH)
                self.assertEqual((p2.qos, p2.dup, p2.payload, p2.pid), (2, True, b"x", p1.pid))
                r2.ack(PUBREC, p2.pid)
                rel = r2.read_until(PUBREL)
                self.assertEqual(rel.pid, p2.pid)
                r2.abort()  # no PUBCOMP
                # Reconnect: PUBREL resent, not the PUBLISH.
                r3 = self._persistent(v, cid)
                self.assertTrue(r3.connack.session_present)
                rel2 = r3.read()
                self.assertEqual(rel2.type, PUBREL, "expected PUBREL, got %r" % rel2)
                self.assertEqual(rel2.pid, p2.pid)
                r3.ack(PUBCOMP, rel2.pid)
                # Nothing else is pending: the next message is new.
                p.publish(t, b"y", qos=2)
                p3 = r3.read_until(PUBLISH)
                self.assertEqual((p3.payload, p3.dup), (b"y", False))
                r3.ack_publish(p3)
                r3.disconnect(0, {SESSION_EXPIRY: 0} if v == 5 else None)

    def test_qos_ack_packets_v5(self):
        """PUBACK / PUBREC / PUBCOMP reason codes: 0x00, or 0x10 No matching
        subscribers when nobody is subscribed."""
        r = self.raw(version=5)
        t = "q5ack/" + uid()
        a = r.publish(t, b"x", qos=1)
        self.assertIn(a.rc, (0x00, 0x10))
        c = r.publish(t, b"x", qos=2)
        self.assertIn(r.last_pubrec.rc, (0x00, 0x10))
        self.assertEqual(c.rc, 0)
        r.subscribe([(t, 0)])
        a = r.publish(t, b"x", qos=1, complete=False)
        got = []
        ack = r.read_until(PUBACK, keep=got)
        self.assertEqual(ack.rc, 0x00)


if __name__ == "__main__":
    unittest.main()
