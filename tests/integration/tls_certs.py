"""Test certificates, made fresh in a temporary directory for each run.

A CA signs the server's certificate (SAN localhost and 127.0.0.1), a second
server certificate for SNI, and client certificates; a rogue CA that the
broker does not trust signs one more client certificate; one client
certificate has expired. Nothing here is of real use: keys live only in the
run's directory.
"""
import datetime
import os
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
import ipaddress

KEY_PASSWORD = "test-key-password"
PSK_IDENTITY = "sensor-7"
PSK_HEX = "1a2b3c4d5e6f708192a3b4c5d6e7f801"


def _name(cn, org="libmqttbroker tests"):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject, key, issuer, issuer_key, ca=False, sans=(), days=(-1, 30), serial=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder()
         .subject_name(subject).issuer_name(issuer).public_key(key.public_key())
         .serial_number(serial or x509.random_serial_number())
         .not_valid_before(now + datetime.timedelta(days=days[0]))
         .not_valid_after(now + datetime.timedelta(days=days[1]))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


class Certs:
    """Paths of the generated files, as attributes (ca, server_cert, ...)."""

    def __init__(self, directory=None):
        self.dir = directory or tempfile.mkdtemp(prefix="mqb-certs-")
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _cert(_name("mqb test CA"), ca_key, _name("mqb test CA"), ca_key, ca=True,
                   days=(-1, 3650))
        rogue_key = ec.generate_private_key(ec.SECP256R1())
        rogue = _cert(_name("rogue CA", "elsewhere"), rogue_key, _name("rogue CA", "elsewhere"),
                      rogue_key, ca=True, days=(-1, 3650))
        self.ca = self._write("ca.pem", ca)
        self.rogue_ca = self._write("rogue-ca.pem", rogue)
        self.make_server("server", ca, ca_key)
        self.make_server("server-other", ca, ca_key, host="other.example")
        self.make_client("client", ca, ca_key, "client-cn-1",
                         [x509.DNSName("client1.example")])
        self.make_client("expired", ca, ca_key, "expired-client", days=(-30, -1))
        self.make_client("rogue", rogue, rogue_key, "rogue-client")
        self.psk_file = os.path.join(self.dir, "psk.txt")
        with open(self.psk_file, "w") as f:
            f.write("# identity:hexkey\n%s:%s\n" % (PSK_IDENTITY, PSK_HEX))
        self._ca, self._ca_key = ca, ca_key

    def _write(self, name, cert=None, key=None, password=None, fmt=None):
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            if cert is not None:
                f.write(cert.public_bytes(serialization.Encoding.PEM))
            if key is not None:
                enc = (serialization.BestAvailableEncryption(password.encode())
                       if password else serialization.NoEncryption())
                f.write(key.private_bytes(serialization.Encoding.PEM,
                                          fmt or serialization.PrivateFormat.PKCS8, enc))
        return path

    def make_server(self, stem, ca=None, ca_key=None, host="localhost", serial=None):
        """Writes <stem>.pem, <stem>.key and <stem>-enc.key (PEM encrypted with
        AES-256-CBC, password KEY_PASSWORD)."""
        ca, ca_key = ca or self._ca, ca_key or self._ca_key
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(_name(host), key, ca.subject, ca_key, serial=serial,
                     sans=[x509.DNSName(host), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        setattr(self, stem.replace("-", "_") + "_cert", self._write(stem + ".pem", cert))
        setattr(self, stem.replace("-", "_") + "_key", self._write(stem + ".key", key=key))
        setattr(self, stem.replace("-", "_") + "_enc_key",
                self._write(stem + "-enc.key", key=key, password=KEY_PASSWORD,
                            fmt=serialization.PrivateFormat.TraditionalOpenSSL))
        return cert

    def make_client(self, stem, ca, ca_key, cn, sans=(), days=(-1, 30)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(_name(cn), key, ca.subject, ca_key, sans=sans, days=days)
        setattr(self, stem + "_cert", self._write(stem + ".pem", cert))
        setattr(self, stem + "_key", self._write(stem + ".key", key=key))
