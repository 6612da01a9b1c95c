"""Shared helpers for the integration tests.

- PahoClient: a paho-mqtt 1.6 client driven by our own network thread (no
  automatic reconnect, so takeover tests do not ping-pong), with blocking
  connect/subscribe/publish/disconnect and a message collector.
- Raw: a minimal raw-socket MQTT client (3.1.1 and 5.0) for what paho cannot
  express: not acknowledging, dropping a connection abruptly, bad packets,
  reading the exact packets (DUP flag, topic aliases, reason codes).

- BrokerTest: unittest base class, one broker per class (class attribute
  `config`), clients closed after each test, sync() round trips.

paho 1.6 does not resolve server-to-client topic aliases itself: PahoClient
does it (Msg.topic is resolved, Msg.raw_topic is what paho delivered).

Every wait has a generous timeout (TIMEOUT, default 10 s, env
MQB_TEST_TIMEOUT) so the tests are deterministic on a loaded machine.
MQB_NO_SKIP=1 runs the tests skipped under MQB_REFERENCE=mosquitto (to check
that a recorded mosquitto deviation is still there).
"""
import itertools
import os
import socket
import struct
import threading
import time
import unittest
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCodes
from paho.mqtt.subscribeoptions import SubscribeOptions

from harness import REFERENCE, Broker  # noqa: F401  (re-exported for tests)

TIMEOUT = float(os.environ.get("MQB_TEST_TIMEOUT", "10"))
# How long to wait when asserting that something does NOT happen and no
# sentinel message can prove it.
QUIET = float(os.environ.get("MQB_TEST_QUIET", "1.0"))

MQTTv31, MQTTv311, MQTTv5 = mqtt.MQTTv31, mqtt.MQTTv311, mqtt.MQTTv5
VERSIONS = (MQTTv31, MQTTv311, MQTTv5)
VNAME = {MQTTv31: "3.1", MQTTv311: "3.1.1", MQTTv5: "5.0"}

_ids = itertools.count(1)


def uid(prefix="c"):
    """A unique client id / topic component (short: 3.1 allows 23 chars)."""
    return "%s%d%s" % (prefix, next(_ids), uuid.uuid4().hex[:6])


def wait_until(cond, timeout=TIMEOUT, interval=0.02, msg="condition"):
    deadline = time.time() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.time() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, msg))
        time.sleep(interval)


def props(ptype, **kw):
    """Properties(ptype) with attributes set, e.g. props(CONNECT, SessionExpiryInterval=10)."""
    p = Properties(ptype)
    for k, v in kw.items():
        setattr(p, k, v)
    return p


class Msg:
    """A received message (topic resolved through topic aliases)."""

    def __init__(self, m, topic):
        self.topic = topic
        self.raw_topic = m.topic
        self.payload = m.payload
        self.qos = m.qos
        self.retain = bool(m.retain)
        self.dup = bool(m.dup)
        self.mid = m.mid
        self.properties = getattr(m, "properties", None)
        self.time = time.time()

    def prop(self, name, default=None):
        if self.properties is None:
            return default
        return getattr(self.properties, name, default)

    def __repr__(self):
        return "Msg(%r, %r, qos=%d, retain=%s)" % (self.topic, self.payload, self.qos, self.retain)


class PahoClient:
    """paho client with blocking helpers. version: MQTTv31/MQTTv311/MQTTv5."""

    def __init__(self, port, client_id=None, version=MQTTv5, clean=True, keepalive=60,
                 connect_props=None, will=None, userdata=None, tls=None, transport="tcp",
                 ws_path="/mqtt"):
        self.port = port
        self.version = version
        self.client_id = uid() if client_id is None else client_id
        self.clean = clean
        self.keepalive = keepalive
        self.connect_props = connect_props
        if version == MQTTv5:
            self.c = mqtt.Client(self.client_id, protocol=version, transport=transport)
        else:
            self.c = mqtt.Client(self.client_id, clean_session=clean, protocol=version,
                                 transport=transport)
        if transport == "websockets":
            self.c.ws_set_options(path=ws_path)
        if tls is not None:  # an ssl.SSLContext
            self.c.tls_set_context(tls)
        # paho 1.6 writes from the calling thread and from its loop thread at
        # once, so two packets can leave in the wrong order (and TLS records
        # or WebSocket frames get interleaved). With a write callback, only
        # the loop thread writes.
        self.c.on_socket_register_write = lambda client, userdata, sock: None
        if will:
            self.c.will_set(**will)
        self.lock = threading.Condition()
        self.messages = []
        self.aliases = {}
        self.connack = None  # (rc, flags, properties)
        self.disconnected = None  # rc (int) or ReasonCodes; set once the connection is gone
        self.disconnect_props = None
        self.subacks = {}
        self.unsubacks = {}
        self._thread = None
        self._stop = False
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_unsubscribe = self._on_unsubscribe
        self.c.on_disconnect = self._on_disconnect

    # callbacks -------------------------------------------------------------
    def _on_connect(self, c, ud, flags, rc, properties=None):
        with self.lock:
            self.connack = (rc, flags, properties)
            self.lock.notify_all()

    def _on_message(self, c, ud, m):
        topic = m.topic
        p = getattr(m, "properties", None)
        alias = getattr(p, "TopicAlias", None) if p is not None else None
        with self.lock:
            if alias is not None:
                if topic:
                    self.aliases[alias] = topic
                else:
                    topic = self.aliases.get(alias, "")
            self.messages.append(Msg(m, topic))
            self.lock.notify_all()

    def _on_subscribe(self, c, ud, mid, granted, properties=None):
        with self.lock:
            self.subacks[mid] = granted
            self.lock.notify_all()

    def _on_unsubscribe(self, c, ud, mid, properties=None, reasons=None):
        with self.lock:
            self.unsubacks[mid] = reasons
            self.lock.notify_all()

    def _on_disconnect(self, c, ud, rc, properties=None):
        with self.lock:
            self.disconnected = rc
            self.disconnect_props = properties
            self.lock.notify_all()

    def _wait(self, cond, timeout, what):
        deadline = time.time() + timeout
        with self.lock:
            while not cond():
                left = deadline - time.time()
                if left <= 0:
                    raise AssertionError("%s: timed out after %.1fs waiting for %s"
                                         % (self.client_id, timeout, what))
                self.lock.wait(min(left, 0.1))

    def _run(self):
        while not self._stop:
            rc = self.c.loop(0.05)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                with self.lock:
                    if self.disconnected is None:
                        self.disconnected = rc
                    self.lock.notify_all()
                break

    # API -------------------------------------------------------------------
    def connect(self, timeout=TIMEOUT, expect_ok=True):
        """Connects and returns (rc, flags, properties); rc is 0 / ReasonCodes."""
        kw = {}
        if self.version == MQTTv5:
            kw["clean_start"] = self.clean
            if self.connect_props is not None:
                kw["properties"] = self.connect_props
        self.c.connect("127.0.0.1", self.port, self.keepalive, **kw)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._wait(lambda: self.connack is not None or self.disconnected is not None,
                   timeout, "CONNACK")
        if self.connack is None:
            raise AssertionError("%s: connection closed before CONNACK" % self.client_id)
        if expect_ok:
            rc = self.connack[0]
            if (rc.value if hasattr(rc, "value") else rc) != 0:
                raise AssertionError("%s: CONNACK refused: %s" % (self.client_id, rc))
        return self.connack

    @property
    def session_present(self):
        return bool(self.connack[1].get("session present"))

    @property
    def connack_props(self):
        return self.connack[2]

    def subscribe(self, topic, qos=0, timeout=TIMEOUT, properties=None, **opts):
        """topic: str or list of (str, qos or SubscribeOptions). Returns the
        granted list as ints (v3: QoS or 0x80; v5: reason code values)."""
        if self.version == MQTTv5:
            if isinstance(topic, str):
                topic = [(topic, SubscribeOptions(qos=qos, **opts))]
            else:
                topic = [(t, o if isinstance(o, SubscribeOptions) else SubscribeOptions(qos=o))
                         for t, o in topic]
            rc, mid = self.c.subscribe(topic, properties=properties)
        else:
            rc, mid = self.c.subscribe(topic, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS, "subscribe failed locally: %s" % rc
        self._wait(lambda: mid in self.subacks, timeout, "SUBACK")
        return [g.value if hasattr(g, "value") else g for g in self.subacks[mid]]

    def unsubscribe(self, topic, timeout=TIMEOUT):
        rc, mid = self.c.unsubscribe(topic)
        self._wait(lambda: mid in self.unsubacks, timeout, "UNSUBACK")
        r = self.unsubacks[mid]
        if r is None:
            return None
        if not isinstance(r, list):
            r = [r]
        return [x.value for x in r]

    def publish(self, topic, payload=b"", qos=0, retain=False, properties=None, wait=True,
                timeout=TIMEOUT):
        info = self.c.publish(topic, payload, qos, retain, properties)
        if wait:
            info.wait_for_publish(timeout)
            if not info.is_published():
                raise AssertionError("%s: publish to %s not completed" % (self.client_id, topic))
        return info

    def wait_messages(self, n, timeout=TIMEOUT, topic=None):
        """Waits until at least n messages (matching topic if given) arrived;
        returns all matching messages received so far."""
        def sel():
            return [m for m in self.messages if topic is None or m.topic == topic]
        self._wait(lambda: len(sel()) >= n, timeout, "%d message(s)%s" %
                   (n, "" if topic is None else " on " + topic))
        with self.lock:
            return sel()

    def wait_payload(self, payload, timeout=TIMEOUT):
        """Waits for a message with this payload; returns it."""
        if isinstance(payload, str):
            payload = payload.encode()
        self._wait(lambda: any(m.payload == payload for m in self.messages), timeout,
                   "payload %r" % payload)
        with self.lock:
            return [m for m in self.messages if m.payload == payload][0]

    def take(self):
        with self.lock:
            m, self.messages = self.messages, []
            return m

    def wait_disconnected(self, timeout=TIMEOUT):
        self._wait(lambda: self.disconnected is not None, timeout, "disconnection")
        return self.disconnected

    def disconnect(self, reasoncode=None, properties=None, timeout=TIMEOUT):
        if self.disconnected is None and self.connack is not None:
            kw = {}
            if self.version == MQTTv5:
                if reasoncode is not None:
                    kw["reasoncode"] = ReasonCodes(PacketTypes.DISCONNECT, identifier=reasoncode)
                if properties is not None:
                    kw["properties"] = properties
            self.c.disconnect(**kw)
            try:
                self._wait(lambda: self.disconnected is not None, timeout, "disconnect")
            except AssertionError:
                pass
        self.close()

    def drop(self):
        """Closes the network connection abruptly (no DISCONNECT)."""
        self._stop = True
        if self._thread:
            self._thread.join(TIMEOUT)
        s = self.c.socket()
        if s is not None:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        self._stop = True
        if self._thread and self._thread is not threading.current_thread():
            self._thread.join(TIMEOUT)
        s = self.c.socket()
        if s is not None:
            try:
                s.close()
            except OSError:
                pass


# ---------------------------------------------------------------------------
# Raw client
# ---------------------------------------------------------------------------
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBSCRIBE, SUBACK, \
    UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = range(1, 16)
PTYPE_NAMES = {v: k for k, v in dict(
    CONNECT=1, CONNACK=2, PUBLISH=3, PUBACK=4, PUBREC=5, PUBREL=6, PUBCOMP=7, SUBSCRIBE=8,
    SUBACK=9, UNSUBSCRIBE=10, UNSUBACK=11, PINGREQ=12, PINGRESP=13, DISCONNECT=14,
    AUTH=15).items()}

# property id -> kind
P_BYTE, P_INT2, P_INT4, P_VAR, P_STR, P_BIN, P_PAIR = range(7)
PROP_KIND = {1: P_BYTE, 2: P_INT4, 3: P_STR, 8: P_STR, 9: P_BIN, 11: P_VAR, 17: P_INT4,
             18: P_STR, 19: P_INT2, 21: P_STR, 22: P_BIN, 23: P_BYTE, 24: P_INT4, 25: P_BYTE,
             26: P_STR, 28: P_STR, 31: P_STR, 33: P_INT2, 34: P_INT2, 35: P_INT2, 36: P_BYTE,
             37: P_BYTE, 38: P_PAIR, 39: P_INT4, 40: P_BYTE, 41: P_BYTE, 42: P_BYTE}
# names for readability
PAYLOAD_FORMAT, MESSAGE_EXPIRY, CONTENT_TYPE, RESPONSE_TOPIC, CORRELATION_DATA = 1, 2, 3, 8, 9
SUBSCRIPTION_ID, SESSION_EXPIRY, ASSIGNED_CLIENT_ID, SERVER_KEEPALIVE = 11, 17, 18, 19
REASON_STRING, RECEIVE_MAXIMUM, TOPIC_ALIAS_MAXIMUM, TOPIC_ALIAS = 31, 33, 34, 35
MAXIMUM_QOS, RETAIN_AVAILABLE, USER_PROPERTY, MAXIMUM_PACKET_SIZE = 36, 37, 38, 39
WILDCARD_SUB_AVAILABLE, SUB_ID_AVAILABLE, SHARED_SUB_AVAILABLE, WILL_DELAY = 40, 41, 42, 24


def varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            b |= 0x80
        out.append(b)
        if not n:
            return bytes(out)


def mstr(s):
    if isinstance(s, str):
        s = s.encode()
    return struct.pack("!H", len(s)) + s


def encode_props(p):
    """p: dict id -> value (38: list of (k, v); 11: int or list)."""
    if p is None:
        return b"\x00"
    out = bytearray()
    for pid, v in (p.items() if isinstance(p, dict) else p):
        vals = v if (pid in (38, 11) and isinstance(v, list)) else [v]
        for x in vals:
            out += varint(pid)
            k = PROP_KIND[pid]
            if k == P_BYTE:
                out += bytes([x])
            elif k == P_INT2:
                out += struct.pack("!H", x)
            elif k == P_INT4:
                out += struct.pack("!I", x)
            elif k == P_VAR:
                out += varint(x)
            elif k in (P_STR, P_BIN):
                out += mstr(x)
            else:
                out += mstr(x[0]) + mstr(x[1])
    return varint(len(out)) + bytes(out)


def read_varint(b, i):
    n, mult = 0, 1
    while True:
        c = b[i]
        i += 1
        n += (c & 0x7F) * mult
        mult *= 128
        if not c & 0x80:
            return n, i


def decode_props(b, i):
    """Returns (dict, new index). 38 -> list of (k, v); 11 -> list of ints."""
    ln, i = read_varint(b, i)
    end = i + ln
    out = {}
    while i < end:
        pid, i = read_varint(b, i)
        k = PROP_KIND[pid]
        if k == P_BYTE:
            v = b[i]
            i += 1
        elif k == P_INT2:
            v = struct.unpack_from("!H", b, i)[0]
            i += 2
        elif k == P_INT4:
            v = struct.unpack_from("!I", b, i)[0]
            i += 4
        elif k == P_VAR:
            v, i = read_varint(b, i)
        elif k in (P_STR, P_BIN):
            ln2 = struct.unpack_from("!H", b, i)[0]
            v = bytes(b[i + 2:i + 2 + ln2])
            if k == P_STR:
                v = v.decode()
            i += 2 + ln2
        else:
            l1 = struct.unpack_from("!H", b, i)[0]
            k1 = bytes(b[i + 2:i + 2 + l1]).decode()
            i += 2 + l1
            l2 = struct.unpack_from("!H", b, i)[0]
            v1 = bytes(b[i + 2:i + 2 + l2]).decode()
            i += 2 + l2
            v = (k1, v1)
        if pid in (38, 11):
            out.setdefault(pid, []).append(v)
        else:
            out[pid] = v
    return out, end


def packet(ptype, flags, body):
    return bytes([(ptype << 4) | flags]) + varint(len(body)) + body


# MQTT 3.1.1 packets as bytes, for clients that frame them themselves
# (WebSocket frames, a PROXY header in front).
def connect_bytes(client_id, keepalive=60):
    body = mstr("MQTT") + bytes([4, 2]) + struct.pack("!H", keepalive) + mstr(client_id)
    return packet(CONNECT, 0, body)


def subscribe_bytes(topic, pid=1, qos=1):
    return packet(SUBSCRIBE, 2, struct.pack("!H", pid) + mstr(topic) + bytes([qos]))


def publish_bytes(topic, payload, qos=0, pid=1):
    body = mstr(topic) + (struct.pack("!H", pid) if qos else b"") + payload
    return packet(PUBLISH, qos << 1, body)


class Packet:
    """A packet read from the broker, decoded according to the protocol version."""

    def __init__(self, ptype, flags, body, version):
        self.type, self.flags, self.body = ptype, flags, body
        self.props = {}
        self.rc = 0
        b = body
        if ptype == CONNACK:
            self.session_present = bool(b[0] & 1)
            self.rc = b[1]
            if version == 5 and len(b) > 2:
                self.props, _ = decode_props(b, 2)
        elif ptype == PUBLISH:
            self.qos = (flags >> 1) & 3
            self.dup = bool(flags & 8)
            self.retain = bool(flags & 1)
            tl = struct.unpack_from("!H", b, 0)[0]
            self.topic = bytes(b[2:2 + tl]).decode()
            i = 2 + tl
            self.pid = None
            if self.qos:
                self.pid = struct.unpack_from("!H", b, i)[0]
                i += 2
            if version == 5:
                self.props, i = decode_props(b, i)
            self.payload = bytes(b[i:])
        elif ptype in (PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK, SUBACK):
            self.pid = struct.unpack_from("!H", b, 0)[0]
            i = 2
            if ptype in (SUBACK, UNSUBACK):
                if version == 5:
                    self.props, i = decode_props(b, i)
                self.codes = list(b[i:])
            else:
                self.rc = b[2] if len(b) > 2 else 0
                if version == 5 and len(b) > 3:
                    self.props, _ = decode_props(b, 3)
        elif ptype == DISCONNECT:
            self.rc = b[0] if len(b) > 0 else 0
            if version == 5 and len(b) > 1:
                self.props, _ = decode_props(b, 1)

    def __repr__(self):
        extra = ""
        if self.type == PUBLISH:
            extra = " %s q%d pid=%s dup=%d r=%d %r %s" % (
                self.topic, self.qos, self.pid, self.dup, self.retain, self.payload[:40],
                self.props)
        elif self.type in (CONNACK, DISCONNECT, PUBACK, PUBREC, PUBREL, PUBCOMP):
            extra = " rc=0x%02x %s" % (self.rc, self.props)
        elif self.type in (SUBACK, UNSUBACK):
            extra = " %s" % self.codes
        return "<%s%s>" % (PTYPE_NAMES.get(self.type, self.type), extra)


class Closed(Exception):
    """The broker closed the connection."""


class Raw:
    """Minimal raw MQTT client. version 3 (3.1 'MQIsdp'), 4 (3.1.1) or 5."""

    def __init__(self, port, version=5, timeout=TIMEOUT, tls=None, sock=None):
        """sock: a connected socket to speak on instead of a new one to port."""
        self.version = version
        self.sock = sock or socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls is not None:  # an ssl.SSLContext
            self.sock = tls.wrap_socket(self.sock, server_hostname="localhost")
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.timeout = timeout
        self._pid = 0
        self.aliases = {}
        self.pending = []  # PUBLISH packets read while waiting for something else

    def next_pid(self):
        self._pid = self._pid % 65535 + 1
        return self._pid

    def send(self, data):
        self.sock.sendall(data)

    # builders ---------------------------------------------------------------
    def connect(self, client_id, clean=True, keepalive=60, props=None, will=None,
                username=None, password=None, expect=True):
        """will: dict(topic, payload, qos=0, retain=False, props=None).
        Returns the CONNACK Packet (expect=False: just sends)."""
        if self.version == 3:
            vh = mstr("MQIsdp") + b"\x03"
        else:
            vh = mstr("MQTT") + bytes([self.version])
        flags = 0x02 if clean else 0
        if will:
            flags |= 0x04 | (will.get("qos", 0) << 3) | (0x20 if will.get("retain") else 0)
        if username is not None:
            flags |= 0x80
        if password is not None:
            flags |= 0x40
        vh += bytes([flags]) + struct.pack("!H", keepalive)
        if self.version == 5:
            vh += encode_props(props)
        pl = mstr(client_id)
        if will:
            if self.version == 5:
                pl += encode_props(will.get("props"))
            pl += mstr(will["topic"]) + mstr(will.get("payload", b""))
        if username is not None:
            pl += mstr(username)
        if password is not None:
            pl += mstr(password)
        self.send(packet(CONNECT, 0, vh + pl))
        if expect:
            p = self.read()
            assert p.type == CONNACK, "expected CONNACK, got %r" % p
            return p
        return None

    def subscribe(self, filters, props=None, pid=None, expect=True):
        """filters: list of (filter, options byte) or a single filter str (QoS 0)."""
        if isinstance(filters, str):
            filters = [(filters, 0)]
        pid = pid or self.next_pid()
        body = struct.pack("!H", pid)
        if self.version == 5:
            body += encode_props(props)
        for f, o in filters:
            body += mstr(f) + bytes([o])
        self.send(packet(SUBSCRIBE, 2, body))
        if expect:
            p = self.read_until(SUBACK)
            assert p.pid == pid
            return p
        return None

    def unsubscribe(self, filters, pid=None):
        pid = pid or self.next_pid()
        body = struct.pack("!H", pid)
        if self.version == 5:
            body += b"\x00"
        for f in filters:
            body += mstr(f)
        self.send(packet(UNSUBSCRIBE, 2, body))
        return self.read_until(UNSUBACK)

    def publish_bytes(self, topic, payload=b"", qos=0, retain=False, pid=None, props=None,
                      dup=False):
        if isinstance(payload, str):
            payload = payload.encode()
        body = mstr(topic)
        if qos:
            body += struct.pack("!H", pid)
        if self.version == 5:
            body += encode_props(props)
        body += payload
        flags = (qos << 1) | (1 if retain else 0) | (8 if dup else 0)
        return packet(PUBLISH, flags, body)

    def publish(self, topic, payload=b"", qos=0, retain=False, pid=None, props=None,
                dup=False, complete=True):
        """Sends a PUBLISH; with complete=True runs the QoS 1/2 flow and returns the
        PUBACK/PUBCOMP (the PUBREC is kept in self.last_pubrec)."""
        if qos and pid is None:
            pid = self.next_pid()
        self.send(self.publish_bytes(topic, payload, qos, retain, pid, props, dup))
        if not complete or qos == 0:
            return pid
        if qos == 1:
            return self.read_until(PUBACK)
        self.last_pubrec = self.read_until(PUBREC)
        if self.last_pubrec.rc >= 0x80:
            return self.last_pubrec
        self.ack(PUBREL, pid)
        return self.read_until(PUBCOMP)

    def ack(self, ptype, pid, rc=None):
        body = struct.pack("!H", pid)
        if rc is not None:
            body += bytes([rc])
        self.send(packet(ptype, 2 if ptype == PUBREL else 0, body))

    def ack_publish(self, p):
        """Completes the receiver side of an incoming PUBLISH (QoS 1: PUBACK;
        QoS 2: PUBREC, wait PUBREL, PUBCOMP)."""
        if p.qos == 1:
            self.ack(PUBACK, p.pid)
        elif p.qos == 2:
            self.ack(PUBREC, p.pid)
            rel = self.read_until(PUBREL)
            assert rel.pid == p.pid
            self.ack(PUBCOMP, p.pid)

    def disconnect(self, rc=None, props=None):
        body = b""
        if self.version == 5 and (rc is not None or props is not None):
            body = bytes([rc or 0]) + (encode_props(props) if props is not None else b"")
        self.send(packet(DISCONNECT, 0, body))

    def disconnect_and_wait(self, rc=None, props=None):
        """Sends DISCONNECT, half-closes, and waits until the broker closes: the
        broker has then handled the DISCONNECT (will discarded or not)."""
        self.disconnect(rc, props)
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.expect_closed()

    def ping(self):
        self.send(packet(PINGREQ, 0, b""))
        return self.read_until(PINGRESP)

    # reading ---------------------------------------------------------------
    def _fill(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.time()
            if left <= 0:
                raise socket.timeout("timed out reading from broker")
            self.sock.settimeout(left)
            try:
                d = self.sock.recv(65536)
            except ConnectionResetError:
                d = b""
            if not d:
                raise Closed("connection closed by broker")
            self.buf += d

    def read(self, timeout=None):
        """Next packet; raises Closed on EOF and socket.timeout on timeout."""
        if self.pending:
            return self.pending.pop(0)
        return self._read(timeout)

    def _read(self, timeout=None):
        deadline = time.time() + (self.timeout if timeout is None else timeout)
        self._fill(2, deadline)
        i, n, mult = 1, 0, 1
        while True:
            self._fill(i + 1, deadline)
            c = self.buf[i]
            n += (c & 0x7F) * mult
            mult *= 128
            i += 1
            if not c & 0x80:
                break
        self._fill(i + n, deadline)
        h = self.buf[0]
        body = bytes(self.buf[i:i + n])
        del self.buf[:i + n]
        p = Packet(h >> 4, h & 0x0F, body, self.version)
        if p.type == PUBLISH and self.version == 5 and TOPIC_ALIAS in p.props:
            a = p.props[TOPIC_ALIAS]
            if p.topic:
                self.aliases[a] = p.topic
            else:
                p.topic = self.aliases.get(a, "")
            p.resolved_from_alias = True
        return p

    def read_until(self, ptype, timeout=None, keep=None):
        """Reads until a packet of ptype. Other packets are appended to keep (a
        list) if given; else PUBLISH packets are set aside for later read()s
        and any other packet is an error."""
        deadline = time.time() + (self.timeout if timeout is None else timeout)
        if ptype == PUBLISH and self.pending:
            return self.pending.pop(0)
        aside = []
        try:
            while True:
                p = self._read(max(0.01, deadline - time.time()))
                if p.type == ptype:
                    return p
                if keep is not None:
                    keep.append(p)
                elif p.type == PUBLISH:
                    aside.append(p)
                else:
                    raise AssertionError("expected %s, got %r" % (PTYPE_NAMES[ptype], p))
        finally:
            self.pending.extend(aside)

    def read_publishes(self, n, timeout=None):
        out = []
        deadline = time.time() + (self.timeout if timeout is None else timeout)
        while len(out) < n:
            p = self.read(max(0.01, deadline - time.time()))
            assert p.type == PUBLISH, "expected PUBLISH, got %r" % p
            out.append(p)
        return out

    def expect_nothing(self, timeout=QUIET):
        """Asserts no packet arrives within timeout (and the connection stays open)."""
        if self.pending:
            raise AssertionError("unexpected packet %r" % self.pending[0])
        try:
            p = self.read(timeout)
        except socket.timeout:
            return
        raise AssertionError("unexpected packet %r" % p)

    def expect_closed(self, timeout=None):
        """Reads until the broker closes the connection; returns the packets read
        before (e.g. a DISCONNECT)."""
        got = []
        deadline = time.time() + (self.timeout if timeout is None else timeout)
        while True:
            try:
                got.append(self.read(max(0.01, deadline - time.time())))
            except Closed:
                return got
            except socket.timeout:
                raise AssertionError("broker did not close the connection; got %r" % got)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self):
        """Closes abruptly (RST)."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()


def disconnect_packet(packets):
    """The DISCONNECT among packets, or None."""
    for p in packets:
        if p.type == DISCONNECT:
            return p
    return None


def sub_opts(qos=0, nl=False, rap=False, rh=0):
    return qos | (4 if nl else 0) | (8 if rap else 0) | (rh << 4)


# ---------------------------------------------------------------------------
# unittest base
# ---------------------------------------------------------------------------
MOSQ = REFERENCE == "mosquitto"


def skip_mosquitto(reason):
    """Skips a test under MQB_REFERENCE=mosquitto (a known deviation of
    mosquitto from the spec, or a feature it lacks). MQB_NO_SKIP=1 runs it
    anyway, to check the deviation is still there."""
    return unittest.skipIf(MOSQ and not os.environ.get("MQB_NO_SKIP"), "mosquitto: " + reason)


class BrokerTest(unittest.TestCase):
    """One broker per test class (config in the class attribute `config`);
    clients created through self.client()/self.raw() are closed after each test."""
    config = {}

    @classmethod
    def setUpClass(cls):
        cls.broker = Broker(cls.config)
        cls.broker.start()
        cls.port = cls.broker.port

    @classmethod
    def tearDownClass(cls):
        cls.broker.stop()

    def start_broker(self, config):
        """A separate broker for this test only (stopped at cleanup)."""
        b = Broker(config)
        b.start()
        self.addCleanup(b.stop)
        return b

    def client(self, port=None, connect=True, **kw):
        c = PahoClient(port or self.port, **kw)
        self.addCleanup(c.close)
        if connect:
            c.connect()
        return c

    def raw(self, port=None, client_id=None, version=5, connect=True, tls=None, **kw):
        r = Raw(port or self.port, version, tls=tls)
        self.addCleanup(r.close)
        if connect:
            r.connack = r.connect(uid("r") if client_id is None else client_id, **kw)
            self.assertEqual(r.connack.rc, 0, "CONNACK refused: %r" % r.connack)
        return r

    def offline_session(self, topic, qos=1, version=5, expiry=300, client_id=None, port=None):
        """Creates a persistent session subscribed to topic and leaves it
        offline, waiting until the broker has closed the connection (so later
        publications are queued, not sent to the closing connection). Returns
        the client id."""
        cid = client_id or uid("off")
        kw = {"clean": False}
        if version == 5:
            kw["props"] = {SESSION_EXPIRY: expiry}
        r = self.raw(port=port, client_id=cid, version=version, **kw)
        r.subscribe([(topic, qos)])
        r.disconnect_and_wait()
        return cid

    def sync(self, sub, pub, topic, qos=1):
        """Round trip: pub publishes a unique marker on topic (which sub is
        subscribed to) and waits until sub receives it: messages from pub with
        the same QoS sent before have then arrived (ordered delivery). Returns
        the non-marker messages received so far (Raw: the PUBLISH packets read
        before the marker, acknowledged; paho: all, not consumed)."""
        marker = ("sync-" + uid()).encode()
        pub.publish(topic, marker, qos=qos)
        if isinstance(sub, Raw):
            got = []
            while True:
                p = sub.read_until(PUBLISH)
                if p.qos:
                    sub.ack_publish(p)
                if p.payload == marker:
                    return got
                if not p.payload.startswith(b"sync-"):
                    got.append(p)
        sub.wait_payload(marker)
        with sub.lock:
            return [m for m in sub.messages if not m.payload.startswith(b"sync-")]
