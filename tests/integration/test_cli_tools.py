"""mosquitto_pub / mosquitto_sub (MQTT 3.1.1 and 5.0) interoperating with paho."""
import shutil
import signal
import subprocess
import threading
import unittest

from mqtt_util import TIMEOUT, MQTTv5, MQTTv311, BrokerTest, uid, wait_until

HAVE_TOOLS = shutil.which("mosquitto_pub") and shutil.which("mosquitto_sub")
FMT = "MSG|%t|%q|%r|%C|%R|%P|%p"


class Sub:
    """A running mosquitto_sub; lines starting MSG| are messages."""

    def __init__(self, test, port, topic, version, qos=1, extra=()):
        # stdbuf: line-buffered output through the pipe (debug lines signal the SUBACK).
        cmd = (["stdbuf", "-oL"] if shutil.which("stdbuf") else []) + ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-V", version,
               "-t", topic, "-q", str(qos), "-d", "-F", FMT] + list(extra)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        test.addCleanup(self.stop)
        self.lines = []
        self.lock = threading.Lock()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()
        wait_until(lambda: any("received SUBACK" in x for x in self.lines) or
                   self.proc.poll() is not None, msg="mosquitto_sub SUBACK")
        assert self.proc.poll() is None, "mosquitto_sub exited:\n" + "\n".join(self.lines)

    def _read(self):
        for line in self.proc.stdout:
            with self.lock:
                self.lines.append(line.decode("utf-8", "replace").rstrip("\n"))

    def messages(self):
        with self.lock:
            return [x.split("|", 7)[1:] for x in self.lines if x.startswith("MSG|")]

    def wait(self, n):
        wait_until(lambda: len(self.messages()) >= n, msg="%d messages at mosquitto_sub" % n)
        return self.messages()

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()


def pub(port, topic, version, *args, input=None):
    cmd = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-V", version, "-t", topic]
    cmd += list(args)
    r = subprocess.run(cmd, input=input, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=TIMEOUT * 3)
    assert r.returncode == 0, "mosquitto_pub failed: %s" % r.stdout.decode()


@unittest.skipUnless(HAVE_TOOLS, "mosquitto clients not installed")
class CliToolsTest(BrokerTest):

    def test_mosquitto_sub_receives_from_paho(self):
        for ver in ("mqttv311", "mqttv5"):
            for q in (0, 1, 2):
                with self.subTest(version=ver, qos=q):
                    t = "cli/" + uid()
                    s = Sub(self, self.port, t, ver, qos=2)
                    p = self.client(version=MQTTv311 if ver == "mqttv5" else MQTTv5)
                    p.publish(t, b"hello %d" % q, qos=q)
                    m = s.wait(1)[0]
                    self.assertEqual((m[0], m[1], m[2], m[-1]), (t, str(q), "0", "hello %d" % q))
                    s.stop()

    def test_mosquitto_pub_to_paho_qos_and_retain(self):
        for ver in ("mqttv311", "mqttv5"):
            for q in (1, 2):
                with self.subTest(version=ver, qos=q):
                    t = "clip/" + uid()
                    live = self.client(version=MQTTv5)
                    live.subscribe(t, 2)
                    pub(self.port, t, ver, "-q", str(q), "-r", "-m", "retained-%d" % q)
                    m = live.wait_messages(1)[0]
                    self.assertEqual((m.payload, m.qos, m.retain),
                                     (b"retained-%d" % q, q, False))
                    late = self.client(version=MQTTv311)
                    late.subscribe(t, 2)
                    m = late.wait_messages(1)[0]
                    self.assertEqual((m.payload, m.qos, m.retain),
                                     (b"retained-%d" % q, q, True))
                    pub(self.port, t, ver, "-q", "1", "-r", "-n")  # delete

    def test_mosquitto_pub_v5_properties(self):
        t = "cliprop/" + uid()
        s = self.client(version=MQTTv5)
        s.subscribe(t, 1)
        pub(self.port, t, "mqttv5", "-q", "1", "-m", "{}",
            "-D", "publish", "user-property", "k1", "v1",
            "-D", "publish", "user-property", "k2", "v2",
            "-D", "publish", "content-type", "application/json",
            "-D", "publish", "response-topic", "cli/resp",
            "-D", "publish", "correlation-data", "c0rr",
            "-D", "publish", "message-expiry-interval", "120",
            "-D", "publish", "payload-format-indicator", "1")
        m = s.wait_messages(1)[0]
        self.assertEqual(m.prop("UserProperty"), [("k1", "v1"), ("k2", "v2")])
        self.assertEqual(m.prop("ContentType"), "application/json")
        self.assertEqual(m.prop("ResponseTopic"), "cli/resp")
        self.assertEqual(m.prop("CorrelationData"), b"c0rr")
        self.assertEqual(m.prop("PayloadFormatIndicator"), 1)
        self.assertTrue(0 < m.prop("MessageExpiryInterval") <= 120)

    def test_mosquitto_sub_v5_shows_properties(self):
        from mqtt_util import props, PacketTypes
        t = "clisp/" + uid()
        s = Sub(self, self.port, t, "mqttv5")
        p = self.client(version=MQTTv5)
        pr = props(PacketTypes.PUBLISH, ContentType="text/plain", ResponseTopic="r/1")
        pr.UserProperty = ("a", "b")
        p.publish(t, b"body", qos=1, properties=pr)
        m = s.wait(1)[0]
        self.assertEqual(m[3], "text/plain")
        self.assertEqual(m[4], "r/1")
        self.assertIn("a:b", m[5])
        self.assertEqual(m[6], "body")

    def test_mosquitto_pub_lines(self):
        t = "clil/" + uid()
        s = self.client(version=MQTTv311)
        s.subscribe(t, 2)
        pub(self.port, t, "mqttv311", "-q", "2", "-l", input=b"a\nb\nc\n")
        self.assertEqual([m.payload for m in s.wait_messages(3)], [b"a", b"b", b"c"])

    def test_mosquitto_sub_will(self):
        for ver in ("mqttv311", "mqttv5"):
            with self.subTest(version=ver):
                t, wt = "cliw/" + uid(), "cliw/will/" + uid()
                w = self.client(version=MQTTv5)
                w.subscribe(wt, 1)
                s = Sub(self, self.port, t, ver, extra=["--will-topic", wt, "--will-payload",
                                                        "gone", "--will-qos", "1",
                                                        "--will-retain"])
                s.stop(signal.SIGKILL)
                m = w.wait_messages(1)[0]
                self.assertEqual((m.payload, m.qos), (b"gone", 1))
                late = self.client()
                late.subscribe(wt, 1)
                self.assertTrue(late.wait_messages(1)[0].retain)
                late.publish(wt, b"", qos=1, retain=True)

    def test_mosquitto_sub_clean_exit_no_will(self):
        t, wt = "cliw2/" + uid(), "cliw2/will/" + uid()
        w = self.client()
        w.subscribe(wt, 1)
        s = Sub(self, self.port, t, "mqttv5", extra=["--will-topic", wt, "--will-payload", "x",
                                                     "-C", "1"])
        p = self.client()
        p.publish(t, b"one", qos=1)
        s.proc.wait(TIMEOUT)  # exits after 1 message with a DISCONNECT
        self.assertEqual(s.proc.returncode, 0)
        self.assertEqual(self.sync(w, p, wt), [])

    def test_mosquitto_sub_persistent_session(self):
        cid = uid("cs")
        t = "clis/" + uid()
        s = Sub(self, self.port, t, "mqttv311", extra=["-c", "-i", cid])
        s.stop()
        p = self.client()
        p.publish(t, b"offline", qos=1)
        s = Sub(self, self.port, t, "mqttv311", extra=["-c", "-i", cid])
        self.assertEqual(s.wait(1)[0][-1], "offline")
        s.stop()
        self.client(client_id=cid, version=MQTTv311).disconnect()  # clean up the session

    def test_mosquitto_pub_v5_to_mosquitto_sub_v311(self):
        t = "clix/" + uid()
        s = Sub(self, self.port, t, "mqttv311", qos=1)
        pub(self.port, t, "mqttv5", "-q", "1", "-m", "cross",
            "-D", "publish", "user-property", "k", "v")
        m = s.wait(1)[0]
        self.assertEqual((m[1], m[-1]), ("1", "cross"))
        self.assertEqual(m[5], "")  # no properties in 3.1.1


if __name__ == "__main__":
    unittest.main()
