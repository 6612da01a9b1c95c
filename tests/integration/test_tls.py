"""MQTT over TLS (listener.ssl.*): real clients (mosquitto_pub/sub with
--cafile, --cert/--key and --psk; Python paho-mqtt; Python's ssl module), and
the refusals: a client certificate from an unknown CA, an expired one, none
where one is required, a plaintext client on the TLS port, a truncated
handshake. Each refusal leaves the other clients connected and working."""
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import unittest

import tls_certs
from harness import Broker, free_port
from mqtt_util import (MQTTv311, MQTTv5, TIMEOUT, BrokerTest, PahoClient, Raw, uid,
                       wait_until)

HAVE_TOOLS = shutil.which("mosquitto_pub") and shutil.which("mosquitto_sub")
CERTS = tls_certs.Certs()


def client_ctx(ca=None, cert=None, key=None, **kw):
    """A client-side SSLContext that trusts `ca` (our test CA by default)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca or CERTS.ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def ssl_config(port, name="tls", **extra):
    cfg = {"listener.ssl.%s" % name: "127.0.0.1:%d" % port,
           "listener.ssl.%s.certfile" % name: CERTS.server_cert,
           "listener.ssl.%s.keyfile" % name: CERTS.server_key}
    for k, v in extra.items():
        cfg["listener.ssl.%s.%s" % (name, k)] = v
    return cfg


def handshake(port, ctx, server_hostname="localhost", timeout=TIMEOUT):
    """A TLS connection (no MQTT yet), or the ssl error raised."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return ctx.wrap_socket(s, server_hostname=server_hostname)
    except Exception:
        s.close()
        raise


def mosquitto(tool, port, *args, timeout=TIMEOUT):
    cmd = [tool, "-h", "localhost", "-p", str(port), "-V", "mqttv311"] + list(args)
    return subprocess.run(cmd, capture_output=True, timeout=timeout + 5)


class TLSBasics(BrokerTest):
    """One broker with a plain TCP listener and a TLS listener."""
    tls_port = free_port()
    config = dict(ssl_config(tls_port, alpn="mqtt,x-test"), **{"sys.interval": "1s"})

    def tls_client(self, **kw):
        return self.client(port=self.tls_port, tls=client_ctx(), **kw)

    def test_paho_every_version_over_tls(self):
        for v in (MQTTv311, MQTTv5):
            with self.subTest(version=v):
                c = self.tls_client(version=v)
                t = "tls/paho/%s" % uid()
                c.subscribe(t, 1)
                c.publish(t, b"secret", qos=1)
                self.assertEqual(c.wait_messages(1)[0].payload, b"secret")

    def test_tls_and_tcp_clients_exchange_messages(self):
        plain = self.client()
        secure = self.tls_client()
        t = "tls/x/%s" % uid()
        plain.subscribe(t, 1)
        secure.subscribe(t, 1)
        secure.publish(t, b"from-tls", qos=1)
        plain.publish(t, b"from-tcp", qos=1)
        for c in (plain, secure):
            got = sorted(m.payload for m in c.wait_messages(2))
            self.assertEqual(got, [b"from-tcp", b"from-tls"])

    @unittest.skipUnless(HAVE_TOOLS, "mosquitto clients not installed")
    def test_mosquitto_clients_with_cafile(self):
        t = "tls/mosq/%s" % uid()
        sub = subprocess.Popen(["mosquitto_sub", "-h", "localhost", "-p", str(self.tls_port),
                                "--cafile", CERTS.ca, "-t", t, "-C", "1", "-W", "10"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(sub.kill)
        wait_until(lambda: "subscribe '%s'" % t in self.broker.log(), msg="subscription")
        r = mosquitto("mosquitto_pub", self.tls_port, "--cafile", CERTS.ca, "-t", t,
                      "-m", "over-tls", "-q", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        out, err = sub.communicate(timeout=TIMEOUT)
        self.assertEqual(out.strip(), b"over-tls", err)

    def test_large_messages_cross_tls_records(self):
        # 100 kB and 1 MB payloads span many 16 KiB records; the small ones
        # share records. (A raw client: paho's TLS writes from two threads.)
        r = self.raw(port=self.tls_port, tls=client_ctx(), version=4)
        t = "tls/big/%s" % uid()
        r.subscribe([(t, 1)])
        payloads = [os.urandom(n) for n in (10, 100_000, 5, 1_000_000, 3000, 1)]
        for p in payloads:
            r.publish(t, p, qos=1)
        got = [p.payload for p in r.read_publishes(len(payloads), timeout=30)]
        self.assertEqual(got, payloads)

    def test_alpn_negotiated(self):
        ctx = client_ctx()
        ctx.set_alpn_protocols(["mqtt"])
        s = handshake(self.tls_port, ctx)
        self.assertEqual(s.selected_alpn_protocol(), "mqtt")
        s.close()

    def test_tls_1_2_is_the_minimum(self):
        ctx = client_ctx()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        try:
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        except ssl.SSLError:
            pass
        with self.assertRaises((ssl.SSLError, ConnectionError, OSError)):
            handshake(self.tls_port, ctx).close()
        # Still serving.
        self.tls_client().disconnect()

    def test_session_resumption(self):
        ctx = client_ctx()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        s1 = handshake(self.tls_port, ctx)
        # Speak MQTT on s1 so that the session ticket has arrived.
        s1.sendall(bytes([0x10, 0x0c, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 60, 0, 0]))
        s1.recv(4)
        sess = s1.session
        s1.close()
        self.assertIsNotNone(sess)
        s = socket.create_connection(("127.0.0.1", self.tls_port), timeout=TIMEOUT)
        s2 = ctx.wrap_socket(s, server_hostname="localhost", session=sess)
        self.assertTrue(s2.session_reused)
        s2.close()

    def test_plaintext_client_on_tls_port_refused(self):
        keep = self.tls_client()
        r = Raw(self.tls_port, version=4)
        r.send(bytes([0x10, 0x0c, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 60, 0, 0]))
        r.expect_closed()
        wait_until(lambda: "TLS handshake failed" in self.broker.log(), msg="log line")
        t = "tls/alive/%s" % uid()
        keep.subscribe(t, 1)
        keep.publish(t, b"still", qos=1)
        keep.wait_payload(b"still")

    def test_client_that_distrusts_the_server_is_counted(self):
        ctx = client_ctx(ca=CERTS.rogue_ca)
        with self.assertRaises(ssl.SSLCertVerificationError):
            handshake(self.tls_port, ctx)
        self.tls_client().disconnect()

    def test_metrics_count_handshakes(self):
        sub = self.client()
        sub.subscribe("$SYS/brokers/+/metrics/tls/#", 0)
        self.tls_client().disconnect()
        with self.assertRaises(Exception):
            handshake(self.tls_port, client_ctx(ca=CERTS.rogue_ca))

        def value(name):
            vals = [int(m.payload) for m in sub.messages if m.topic.endswith(name)]
            return vals[-1] if vals else -1
        wait_until(lambda: value("/handshakes") >= 1 and value("/handshake_errors") >= 1,
                   timeout=15, msg="tls metrics in $SYS")


class TruncatedHandshake(BrokerTest):
    tls_port = free_port()
    config = dict(ssl_config(tls_port, handshake_timeout="1s"))

    def test_stalled_handshake_times_out(self):
        keep = self.client(port=self.tls_port, tls=client_ctx())
        s = socket.create_connection(("127.0.0.1", self.tls_port), timeout=TIMEOUT)
        self.addCleanup(s.close)
        # The first bytes of a ClientHello record, then nothing.
        s.sendall(bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]))
        t0 = time.time()
        s.settimeout(TIMEOUT)
        self.assertEqual(s.recv(100), b"")  # closed by the broker
        self.assertLess(time.time() - t0, TIMEOUT)
        self.assertIn("timed out", self.broker.log())
        t = "tls/trunc/%s" % uid()
        keep.subscribe(t, 1)
        keep.publish(t, b"ok", qos=1)
        keep.wait_payload(b"ok")

    def test_handshake_cut_off_mid_way(self):
        s = socket.create_connection(("127.0.0.1", self.tls_port), timeout=TIMEOUT)
        s.sendall(bytes([0x16, 0x03, 0x01, 0x00, 0x30]) + os.urandom(10))
        s.close()
        wait_until(lambda: "the client closed the connection" in self.broker.log()
                   or "TLS handshake failed" in self.broker.log(), msg="log line")
        self.client(port=self.tls_port, tls=client_ctx()).disconnect()


class ClientCertificates(BrokerTest):
    """verify_peer + fail_if_no_peer_cert; the certificate's CN is the username."""
    tls_port = free_port()
    config = dict(ssl_config(tls_port, cacertfile=CERTS.ca, verify="verify_peer",
                             fail_if_no_peer_cert="true", peer_cert_as_username="cn"))

    def cert_client(self, stem, **kw):
        ctx = client_ctx(cert=getattr(CERTS, stem + "_cert"), key=getattr(CERTS, stem + "_key"))
        return self.client(port=self.tls_port, tls=ctx, **kw)

    def refused(self, stem):
        ctx = client_ctx()
        if stem:
            ctx.load_cert_chain(getattr(CERTS, stem + "_cert"), getattr(CERTS, stem + "_key"))
        # TLS 1.2 reports the refusal during the handshake or at the first read.
        try:
            s = handshake(self.tls_port, ctx)
        except (ssl.SSLError, ConnectionError, OSError):
            return
        try:
            s.sendall(bytes([0x10, 0x0c, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 60, 0, 0]))
            self.assertEqual(s.recv(10), b"")
        except (ssl.SSLError, ConnectionError, OSError):
            pass
        finally:
            s.close()

    def test_valid_certificate_accepted_and_cn_is_username(self):
        sys = self.client()
        sys.subscribe("$SYS/brokers/+/clients/+/connected", 0)
        c = self.cert_client("client")
        m = wait_until(lambda: [x for x in sys.messages
                                if json.loads(x.payload)["clientid"] == c.client_id],
                       msg="connected event")[0]
        self.assertEqual(json.loads(m.payload)["username"], "client-cn-1")

    def test_refusals_leave_others_unaffected(self):
        keep = self.cert_client("client")
        t = "tls/keep/%s" % uid()
        keep.subscribe(t, 1)
        for stem, reason in (("rogue", "client certificate"), ("expired", "client certificate"),
                             (None, "TLS handshake failed")):
            with self.subTest(cert=stem):
                self.refused(stem)
                keep.publish(t, stem.encode() if stem else b"none", qos=1)
                keep.wait_payload(stem.encode() if stem else b"none")
        log = self.broker.log()
        self.assertIn("expired", log)
        self.assertIn("client certificate refused", log)

    @unittest.skipUnless(HAVE_TOOLS, "mosquitto clients not installed")
    def test_mosquitto_pub_with_client_certificate(self):
        t = "tls/mcert/%s" % uid()
        c = self.cert_client("client")
        c.subscribe(t, 1)
        r = mosquitto("mosquitto_pub", self.tls_port, "--cafile", CERTS.ca, "--cert",
                      CERTS.client_cert, "--key", CERTS.client_key, "-t", t, "-m", "certified",
                      "-q", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        c.wait_payload(b"certified")
        r = mosquitto("mosquitto_pub", self.tls_port, "--cafile", CERTS.ca, "-t", t, "-m", "x")
        self.assertNotEqual(r.returncode, 0)


class AuthHookSeesCertificate(unittest.TestCase):
    """peer_cert_as_clientid = dn: the subject DN becomes the client id."""

    def test_dn_as_client_id(self):
        port = free_port()
        b = Broker(ssl_config(port, cacertfile=CERTS.ca, verify="verify_peer",
                              peer_cert_as_clientid="dn"))
        b.start()
        self.addCleanup(b.stop)
        ctx = client_ctx(cert=CERTS.client_cert, key=CERTS.client_key)
        c = PahoClient(port, client_id="ignored", version=MQTTv5, tls=ctx)
        self.addCleanup(c.close)
        c.connect()
        wait_until(lambda: "client=O=libmqttbroker tests, CN=client-cn-1" in b.log()
                   or "client=CN=client-cn-1, O=libmqttbroker tests" in b.log(),
                   msg="client id from the DN:\n" + b.log()[-2000:])
        # verify_peer without fail_if_no_peer_cert: no certificate is fine.
        c2 = PahoClient(port, version=MQTTv5, tls=client_ctx())
        self.addCleanup(c2.close)
        c2.connect()


class CertificateOptions(unittest.TestCase):
    """The first SAN as user name, a CA directory, an explicit cipher list."""

    def test_san_username_cacertdir_and_ciphers(self):
        cadir = os.path.join(CERTS.dir, "cadir")
        os.makedirs(cadir, exist_ok=True)
        shutil.copy(CERTS.ca, os.path.join(cadir, "ca.pem"))
        port = free_port()
        b = Broker(ssl_config(port, cacertdir=cadir, verify="verify_peer",
                              fail_if_no_peer_cert="true", peer_cert_as_username="san",
                              ciphers="TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, "
                                      "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256"))
        b.start()
        self.addCleanup(b.stop)
        ctx = client_ctx(cert=CERTS.client_cert, key=CERTS.client_key)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        s = handshake(port, ctx)
        self.assertEqual(s.cipher()[0], "ECDHE-ECDSA-AES256-GCM-SHA384")  # our first choice
        s.close()
        sys = PahoClient(b.port)
        self.addCleanup(sys.close)
        sys.connect()
        sys.subscribe("$SYS/brokers/+/clients/+/connected", 0)
        c = PahoClient(port, tls=ctx)
        self.addCleanup(c.close)
        c.connect()
        ev = wait_until(lambda: [json.loads(m.payload) for m in sys.messages
                                 if json.loads(m.payload)["clientid"] == c.client_id],
                        msg="connected event")[0]
        self.assertEqual(ev["username"], "client1.example")
        # A client that offers none of the listed suites is refused.
        ctx2 = client_ctx(cert=CERTS.client_cert, key=CERTS.client_key)
        ctx2.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx2.set_ciphers("ECDHE-ECDSA-CHACHA20-POLY1305")
        with self.assertRaises((ssl.SSLError, ConnectionError, OSError)):
            handshake(port, ctx2).close()


class PSKAndKeys(unittest.TestCase):
    """psk_file identities (mosquitto --psk); an encrypted key; bad settings."""

    @unittest.skipUnless(HAVE_TOOLS, "mosquitto clients not installed")
    def test_psk_with_mosquitto_clients(self):
        port = free_port()
        cfg = {"listener.ssl.psk": "127.0.0.1:%d" % port,
               "listener.ssl.psk.psk_file": CERTS.psk_file}
        b = Broker(cfg)
        b.start()
        self.addCleanup(b.stop)
        t = "tls/psk/%s" % uid()
        psk = ["--psk", tls_certs.PSK_HEX, "--psk-identity", tls_certs.PSK_IDENTITY]
        sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-t", t,
                                "-C", "1", "-W", "10"] + psk,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(sub.kill)
        wait_until(lambda: "subscribe '%s'" % t in b.log(), msg="subscription:\n" + b.log())
        r = mosquitto("mosquitto_pub", port, "-t", t, "-m", "psk-ok", "-q", "1", *psk)
        self.assertEqual(r.returncode, 0, r.stderr)
        out, err = sub.communicate(timeout=TIMEOUT)
        self.assertEqual(out.strip(), b"psk-ok", err)
        # A wrong key is refused.
        bad = ["--psk", "00" * 16, "--psk-identity", tls_certs.PSK_IDENTITY]
        r = mosquitto("mosquitto_pub", port, "-t", t, "-m", "x", *bad)
        self.assertNotEqual(r.returncode, 0)

    def test_encrypted_key_with_password(self):
        port = free_port()
        b = Broker({"listener.ssl.enc": "127.0.0.1:%d" % port,
                    "listener.ssl.enc.certfile": CERTS.server_cert,
                    "listener.ssl.enc.keyfile": CERTS.server_enc_key,
                    "listener.ssl.enc.key_password": tls_certs.KEY_PASSWORD})
        b.start()
        self.addCleanup(b.stop)
        c = PahoClient(port, tls=client_ctx())
        self.addCleanup(c.close)
        c.connect()
        # A changed password is reported on SIGHUP, but never written to the log.
        conf = os.path.join(b.dir, "broker.conf")
        with open(conf) as f:
            text = f.read().replace(tls_certs.KEY_PASSWORD, "changed-secret-42")
        with open(conf, "w") as f:
            f.write(text)
        b.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "listener.ssl.enc.key_password: (hidden) -> (hidden)" in b.log(),
                   msg="reload logged")
        self.assertNotIn("changed-secret-42", b.log())
        self.assertNotIn(tls_certs.KEY_PASSWORD, b.log())

    def test_bad_settings_refuse_to_start_with_a_reason(self):
        cli = os.environ["MQB_BROKER_CLI"]
        cases = [
            ({"keyfile": CERTS.server_key}, "certfile and keyfile"),
            ({"certfile": CERTS.server_cert, "keyfile": CERTS.server_enc_key},
             "key is encrypted and key_password is not set"),
            ({"certfile": CERTS.server_cert, "keyfile": CERTS.client_key},
             "the key does not match the certificate"),
            ({"certfile": "/nonexistent/cert.pem", "keyfile": CERTS.server_key},
             "cannot load the certificate chain"),
            ({"certfile": CERTS.server_cert, "keyfile": CERTS.server_key,
              "verify": "verify_peer"}, "verify_peer needs cacertfile"),
            ({"certfile": CERTS.server_cert, "keyfile": CERTS.server_key,
              "ciphers": "TLS_NOT_A_CIPHER"}, "unknown cipher suite"),
        ]
        for sub, expect in cases:
            with self.subTest(expect=expect):
                conf = os.path.join(CERTS.dir, "bad.conf")
                with open(conf, "w") as f:
                    f.write("listener.ssl.bad = 127.0.0.1:%d\n" % free_port())
                    for k, v in sub.items():
                        f.write("listener.ssl.bad.%s = %s\n" % (k, v))
                r = subprocess.run([cli, "-c", conf, "-p", str(free_port())],
                                   capture_output=True, timeout=20)
                self.assertNotEqual(r.returncode, 0)
                self.assertIn(expect, r.stderr.decode() + r.stdout.decode())


class SNIAndReload(unittest.TestCase):

    def test_sni_picks_the_certificate(self):
        port = free_port()
        b = Broker(ssl_config(port, sni_certs="other.example=%s,%s"
                              % (CERTS.server_other_cert, CERTS.server_other_key)))
        b.start()
        self.addCleanup(b.stop)
        s = handshake(port, client_ctx(), server_hostname="other.example")
        cn = dict(x[0] for x in s.getpeercert()["subject"])["commonName"]
        s.close()
        self.assertEqual(cn, "other.example")
        s = handshake(port, client_ctx(), server_hostname="localhost")
        self.assertEqual(dict(x[0] for x in s.getpeercert()["subject"])["commonName"],
                         "localhost")
        s.close()

    def test_sighup_reloads_certificates_without_dropping_connections(self):
        d = CERTS.dir
        cert, key = os.path.join(d, "rot.pem"), os.path.join(d, "rot.key")
        shutil.copy(CERTS.server_cert, cert)
        shutil.copy(CERTS.server_key, key)
        port = free_port()
        b = Broker({"listener.ssl.rot": "127.0.0.1:%d" % port,
                    "listener.ssl.rot.certfile": cert, "listener.ssl.rot.keyfile": key})
        b.start()
        self.addCleanup(b.stop)
        old = PahoClient(port, tls=client_ctx())
        self.addCleanup(old.close)
        old.connect()
        s = handshake(port, client_ctx())
        serial_before = s.getpeercert()["serialNumber"]
        s.close()
        # Rotate: a new certificate with a known serial, in place.
        CERTS.make_server("rotated", serial=4242)
        shutil.copy(CERTS.rotated_cert, cert)
        shutil.copy(CERTS.rotated_key, key)
        b.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "certificates reloaded" in b.log(), msg="reload")
        s = handshake(port, client_ctx())
        self.assertEqual(int(s.getpeercert()["serialNumber"], 16), 4242)
        self.assertNotEqual(serial_before, s.getpeercert()["serialNumber"])
        s.close()
        # The connection made before the reload still works.
        t = "tls/rot/%s" % uid()
        old.subscribe(t, 1)
        old.publish(t, b"after-reload", qos=1)
        old.wait_payload(b"after-reload")
        # A broken file on reload keeps the working certificates.
        with open(key, "w") as f:
            f.write("garbage")
        b.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "certificates not reloaded" in b.log(), msg="failed reload")
        handshake(port, client_ctx()).close()


if __name__ == "__main__":
    unittest.main()
