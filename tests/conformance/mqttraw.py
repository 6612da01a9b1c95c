"""A small raw MQTT client and packet builder for protocol-level tests.

Versions are MQTT protocol levels: 3 = MQTT 3.1 ("MQIsdp"), 4 = MQTT 3.1.1,
5 = MQTT 5.0. Builders return bytes and never validate anything, so they can
build malformed packets too: strings given as bytes are written as they are
(utf8(b"\\xff") is a 1-byte string with an invalid byte), props given as bytes
are the raw property block (its length prefix is still computed), and raw()
builds any fixed header with any (even wrong) remaining length.

    c = RawClient(port)
    c.send(connect("c1", version=5, props={0x11: 60}))
    p = c.recv_packet()            # Packet; None = the server closed
    assert p.type == CONNACK and p.reason == 0
    c.send(subscribe(1, [("a/#", 1)]))
    ...
    assert c.expect_closed()       # packets read before the close: c.received

RawClient remembers the protocol level of the last CONNECT it sent (parsed
from the bytes, so raw CONNECTs work too) and decodes what it receives with
it; set .version to override.
"""
import select
import socket
import struct
import time

# Packet types.
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK = 8, 9, 10, 11
PINGREQ, PINGRESP, DISCONNECT, AUTH = 12, 13, 14, 15

TYPE_NAMES = {
    0: "RESERVED", 1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK",
    5: "PUBREC", 6: "PUBREL", 7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK",
    10: "UNSUBSCRIBE", 11: "UNSUBACK", 12: "PINGREQ", 13: "PINGRESP",
    14: "DISCONNECT", 15: "AUTH",
}

# Property identifiers (MQTT 5.0 section 2.2.2.2).
PAYLOAD_FORMAT_INDICATOR = 0x01
MESSAGE_EXPIRY_INTERVAL = 0x02
CONTENT_TYPE = 0x03
RESPONSE_TOPIC = 0x08
CORRELATION_DATA = 0x09
SUBSCRIPTION_IDENTIFIER = 0x0B
SESSION_EXPIRY_INTERVAL = 0x11
ASSIGNED_CLIENT_IDENTIFIER = 0x12
SERVER_KEEP_ALIVE = 0x13
AUTHENTICATION_METHOD = 0x15
AUTHENTICATION_DATA = 0x16
REQUEST_PROBLEM_INFORMATION = 0x17
WILL_DELAY_INTERVAL = 0x18
REQUEST_RESPONSE_INFORMATION = 0x19
RESPONSE_INFORMATION = 0x1A
SERVER_REFERENCE = 0x1C
REASON_STRING = 0x1F
RECEIVE_MAXIMUM = 0x21
TOPIC_ALIAS_MAXIMUM = 0x22
TOPIC_ALIAS = 0x23
MAXIMUM_QOS = 0x24
RETAIN_AVAILABLE = 0x25
USER_PROPERTY = 0x26
MAXIMUM_PACKET_SIZE = 0x27
WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
SHARED_SUBSCRIPTION_AVAILABLE = 0x2A

# id -> value type: "byte", "u16", "u32", "varint", "utf8", "binary", "pair".
PROP_TYPES = {
    0x01: "byte", 0x02: "u32", 0x03: "utf8", 0x08: "utf8", 0x09: "binary",
    0x0B: "varint", 0x11: "u32", 0x12: "utf8", 0x13: "u16", 0x15: "utf8",
    0x16: "binary", 0x17: "byte", 0x18: "u32", 0x19: "byte", 0x1A: "utf8",
    0x1C: "utf8", 0x1F: "utf8", 0x21: "u16", 0x22: "u16", 0x23: "u16",
    0x24: "byte", 0x25: "byte", 0x26: "pair", 0x27: "u32", 0x28: "byte",
    0x29: "byte", 0x2A: "byte",
}

# Reason codes most tests look for.
RC_SUCCESS = 0x00
RC_NO_MATCHING_SUBSCRIBERS = 0x10
RC_UNSPECIFIED = 0x80
RC_MALFORMED = 0x81
RC_PROTOCOL_ERROR = 0x82
RC_IMPL_SPECIFIC = 0x83
RC_UNSUPPORTED_PROTOCOL_VERSION = 0x84
RC_CLIENT_ID_NOT_VALID = 0x85
RC_BAD_USER_OR_PASSWORD = 0x86
RC_NOT_AUTHORIZED = 0x87
RC_SESSION_TAKEN_OVER = 0x8E
RC_TOPIC_FILTER_INVALID = 0x8F
RC_TOPIC_NAME_INVALID = 0x90
RC_PACKET_ID_IN_USE = 0x91
RC_PACKET_ID_NOT_FOUND = 0x92
RC_RECEIVE_MAX_EXCEEDED = 0x93
RC_TOPIC_ALIAS_INVALID = 0x94
RC_PACKET_TOO_LARGE = 0x95
RC_QUOTA_EXCEEDED = 0x97
RC_PAYLOAD_FORMAT_INVALID = 0x99
RC_RETAIN_NOT_SUPPORTED = 0x9A
RC_QOS_NOT_SUPPORTED = 0x9B
RC_SHARED_SUB_NOT_SUPPORTED = 0x9E
RC_SUB_IDS_NOT_SUPPORTED = 0xA1
RC_WILDCARD_SUB_NOT_SUPPORTED = 0xA2


# ---------------------------------------------------------------- encoding

def encode_varint(n):
    """Variable Byte Integer (any non-negative n; > 268435455 gives 5+ bytes)."""
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def utf8(s):
    """A UTF-8 string field: 2-byte length + bytes. Bytes are written as given."""
    b = s.encode("utf-8") if isinstance(s, str) else bytes(s)
    return struct.pack("!H", len(b) & 0xFFFF) + b


def binary(b):
    """A Binary Data field: 2-byte length + bytes."""
    if isinstance(b, str):
        b = b.encode("utf-8")
    return struct.pack("!H", len(b) & 0xFFFF) + bytes(b)


def _prop_value(pid, v):
    t = PROP_TYPES.get(pid)
    if t is None or isinstance(v, (bytes, bytearray)) and t not in ("utf8", "binary"):
        # unknown id, or a raw value for a numeric/pair id: written as given
        if not isinstance(v, (bytes, bytearray)):
            raise ValueError("property 0x%02x: unknown id needs a bytes value" % pid)
        return bytes(v)
    if t == "byte":
        return struct.pack("!B", v)
    if t == "u16":
        return struct.pack("!H", v)
    if t == "u32":
        return struct.pack("!I", v)
    if t == "varint":
        return encode_varint(v)
    if t == "utf8":
        return utf8(v)
    if t == "binary":
        return binary(v)
    k, val = v  # pair
    return utf8(k) + utf8(val)


def encode_props(props):
    """Property block content (without its length prefix).

    props: dict id -> value, or a list of (id, value) to control order and
    duplicates. A list value (or a list of pairs for 0x26) is written as
    one property per element, so {0x23: [1, 2]} gives two Topic Alias
    properties. Unknown ids need a bytes value (written raw after the id).
    """
    if props is None:
        return b""
    if isinstance(props, (bytes, bytearray)):
        return bytes(props)
    items = props.items() if isinstance(props, dict) else props
    out = bytearray()
    for pid, v in items:
        if PROP_TYPES.get(pid) == "pair" and isinstance(v, tuple):
            vals = [v]
        elif isinstance(v, list):
            vals = v
        else:
            vals = [v]
        for one in vals:
            out += encode_varint(pid) + _prop_value(pid, one)
    return bytes(out)


def props_block(props):
    """Property Length + properties (what v5 packets carry)."""
    content = encode_props(props)
    return encode_varint(len(content)) + content


def raw(first_byte, body, remaining_length=None):
    """Any packet: first byte, remaining length (raw varint bytes if given,
    else the correct one) and body."""
    if remaining_length is None:
        remaining_length = encode_varint(len(body))
    elif isinstance(remaining_length, int):
        remaining_length = encode_varint(remaining_length)
    return bytes([first_byte & 0xFF]) + bytes(remaining_length) + bytes(body)


def connect(client_id="", version=5, clean=True, keepalive=60, props=None,
            will=None, username=None, password=None, flags=None,
            proto_name=None, proto_level=None):
    """CONNECT. will: dict(topic, payload=b"", qos=0, retain=False, props=None).

    flags / proto_name / proto_level override the computed values (for
    malformed CONNECTs); username/password may be bytes (written as given).
    """
    if proto_name is None:
        proto_name = "MQIsdp" if version == 3 else "MQTT"
    if proto_level is None:
        proto_level = version
    f = 0
    if clean:
        f |= 0x02
    if will is not None:
        f |= 0x04 | ((will.get("qos", 0) & 3) << 3)
        if will.get("retain"):
            f |= 0x20
    if password is not None:
        f |= 0x40
    if username is not None:
        f |= 0x80
    if flags is not None:
        f = flags
    body = utf8(proto_name) + bytes([proto_level & 0xFF, f & 0xFF]) + struct.pack("!H", keepalive)
    if version == 5:
        body += props_block(props)
    body += utf8(client_id)
    if will is not None:
        if version == 5:
            body += props_block(will.get("props"))
        body += utf8(will["topic"]) + binary(will.get("payload", b""))
    if username is not None:
        body += utf8(username)
    if password is not None:
        body += binary(password)
    return raw(0x10, body)


def publish(topic, payload=b"", qos=0, retain=False, dup=False, packet_id=None,
            props=None, version=5):
    """PUBLISH; packet_id defaults to 1 for QoS > 0 (give it explicitly for
    QoS 0 to put one in anyway)."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    first = 0x30 | ((qos & 3) << 1) | (0x01 if retain else 0) | (0x08 if dup else 0)
    body = utf8(topic)
    if qos > 0 and packet_id is None:
        packet_id = 1
    if packet_id is not None:
        body += struct.pack("!H", packet_id)
    if version == 5:
        body += props_block(props)
    return raw(first, body + payload)


def subscribe(packet_id, subs, props=None, version=5):
    """SUBSCRIBE; subs: [(filter, options byte or QoS)]."""
    body = struct.pack("!H", packet_id)
    if version == 5:
        body += props_block(props)
    for flt, opts in subs:
        body += utf8(flt) + bytes([opts & 0xFF])
    return raw(0x82, body)


def unsubscribe(packet_id, filters, props=None, version=5):
    body = struct.pack("!H", packet_id)
    if version == 5:
        body += props_block(props)
    for flt in filters:
        body += utf8(flt)
    return raw(0xA2, body)


def _ack(first, packet_id, reason, props, version):
    body = struct.pack("!H", packet_id)
    if version == 5 and (reason is not None or props is not None):
        body += bytes([reason or 0])
        if props is not None:
            body += props_block(props)
    return raw(first, body)


def puback(packet_id, reason=None, props=None, version=5):
    return _ack(0x40, packet_id, reason, props, version)


def pubrec(packet_id, reason=None, props=None, version=5):
    return _ack(0x50, packet_id, reason, props, version)


def pubrel(packet_id, reason=None, props=None, version=5):
    return _ack(0x62, packet_id, reason, props, version)


def pubcomp(packet_id, reason=None, props=None, version=5):
    return _ack(0x70, packet_id, reason, props, version)


def pingreq():
    return b"\xc0\x00"


def disconnect(reason=None, props=None, version=5):
    body = b""
    if version == 5 and (reason is not None or props is not None):
        body = bytes([reason or 0])
        if props is not None:
            body += props_block(props)
    return raw(0xE0, body)


def auth(reason=0, props=None):
    return raw(0xF0, bytes([reason]) + props_block(props))


# ---------------------------------------------------------------- decoding

class MalformedResponse(Exception):
    pass


class _Reader:
    def __init__(self, data):
        self.d = data
        self.i = 0

    def left(self):
        return len(self.d) - self.i

    def take(self, n):
        if self.i + n > len(self.d):
            raise MalformedResponse("truncated")
        b = self.d[self.i:self.i + n]
        self.i += n
        return b

    def byte(self):
        return self.take(1)[0]

    def u16(self):
        return struct.unpack("!H", self.take(2))[0]

    def u32(self):
        return struct.unpack("!I", self.take(4))[0]

    def varint(self):
        n, mult = 0, 1
        for _ in range(4):
            b = self.byte()
            n += (b & 0x7F) * mult
            if not b & 0x80:
                return n
            mult *= 128
        raise MalformedResponse("varint longer than 4 bytes")

    def utf8(self):
        b = self.take(self.u16())
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            return b

    def binary(self):
        return self.take(self.u16())

    def rest(self):
        b = self.d[self.i:]
        self.i = len(self.d)
        return b


def decode_props(r):
    """Reads Property Length + properties from a _Reader into a dict."""
    end = r.varint()
    end += r.i
    if end > len(r.d):
        raise MalformedResponse("property length overrun")
    props = {}
    while r.i < end:
        pid = r.varint()
        t = PROP_TYPES.get(pid)
        if t is None:
            raise MalformedResponse("unknown property 0x%02x" % pid)
        v = {"byte": r.byte, "u16": r.u16, "u32": r.u32, "varint": r.varint,
             "utf8": r.utf8, "binary": r.binary,
             "pair": lambda: (r.utf8(), r.utf8())}[t]()
        if pid in (USER_PROPERTY, SUBSCRIPTION_IDENTIFIER):
            props.setdefault(pid, []).append(v)
        else:
            props[pid] = v
    return props


class Packet:
    """A received packet. Fields not present in the packet stay None."""

    def __init__(self, first_byte, body, version=5):
        self.type = first_byte >> 4
        self.flags = first_byte & 0x0F
        self.body = bytes(body)
        self.version = version
        self.reason = None
        self.session_present = None
        self.props = {}
        self.packet_id = None
        self.topic = None
        self.payload = None
        self.qos = None
        self.retain = None
        self.dup = None
        self.reasons = None
        self.decode_error = None
        try:
            self._decode()
        except MalformedResponse as e:
            self.decode_error = str(e)

    @property
    def name(self):
        return TYPE_NAMES.get(self.type, str(self.type))

    def _decode(self):
        r = _Reader(self.body)
        t, v5 = self.type, self.version == 5
        if t == CONNACK:
            self.session_present = bool(r.byte() & 1)
            self.reason = r.byte()
            if v5 and r.left():
                self.props = decode_props(r)
        elif t == PUBLISH:
            self.qos = (self.flags >> 1) & 3
            self.retain = bool(self.flags & 1)
            self.dup = bool(self.flags & 8)
            self.topic = r.utf8()
            if self.qos:
                self.packet_id = r.u16()
            if v5:
                self.props = decode_props(r)
            self.payload = r.rest()
        elif t in (PUBACK, PUBREC, PUBREL, PUBCOMP):
            self.packet_id = r.u16()
            if v5:
                self.reason = r.byte() if r.left() else 0
                if r.left():
                    self.props = decode_props(r)
        elif t in (SUBACK, UNSUBACK):
            self.packet_id = r.u16()
            if v5:
                self.props = decode_props(r)
            self.reasons = list(r.rest())
        elif t in (DISCONNECT, AUTH):
            if v5:
                self.reason = r.byte() if r.left() else 0
                if r.left():
                    self.props = decode_props(r)
        if r.left() and t not in (SUBACK, UNSUBACK, PUBLISH):
            raise MalformedResponse("%d trailing bytes" % r.left())

    def __repr__(self):
        parts = [self.name]
        if self.flags and self.type != PUBLISH:
            parts.append("flags=%#x" % self.flags)
        for k in ("reason", "session_present", "packet_id", "topic", "payload",
                  "qos", "retain", "dup", "reasons", "decode_error"):
            v = getattr(self, k)
            if v is not None and v is not False:
                parts.append("%s=%s" % (k, "%#04x" % v if k == "reason" else repr(v)))
        if self.props:
            parts.append("props=%r" % (self.props,))
        return "<%s>" % " ".join(parts)


def _connect_version(data):
    """The protocol level of a CONNECT in data (bytes), or None."""
    try:
        if not data or data[0] >> 4 != CONNECT:
            return None
        i = 1
        for _ in range(4):
            b = data[i]
            i += 1
            if not b & 0x80:
                break
        n = struct.unpack("!H", data[i:i + 2])[0]
        level = data[i + 2 + n]
        return level if level in (3, 4, 5) else None
    except (IndexError, struct.error):
        return None


class RawClient:
    def __init__(self, port, host="127.0.0.1", timeout=5, version=5):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.version = version
        self.buf = bytearray()
        self.eof = False
        self.received = []
        self.send_failed = False
        self.connack = None

    def send(self, data):
        """Sends bytes; returns False if the server already closed (reset or
        broken pipe) instead of raising."""
        v = _connect_version(data)
        if v is not None:
            self.version = v
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.send_failed = True
            return False

    def _parse(self):
        """One complete packet from the buffer, or None."""
        if len(self.buf) < 2:
            return None
        n, mult, i = 0, 1, 1
        while True:
            if i >= len(self.buf):
                return None
            b = self.buf[i]
            n += (b & 0x7F) * mult
            mult *= 128
            i += 1
            if not b & 0x80:
                break
            if i > 4:
                raise MalformedResponse("server sent a bad remaining length")
        if len(self.buf) < i + n:
            return None
        first = self.buf[0]
        body = bytes(self.buf[i:i + n])
        del self.buf[:i + n]
        return Packet(first, body, self.version)

    def recv_packet(self, timeout=5):
        """The next packet; None when the server closed the connection.
        Raises TimeoutError when nothing complete arrives in time."""
        deadline = time.monotonic() + timeout
        while True:
            p = self._parse()
            if p is not None:
                return p
            if self.eof:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no packet within %.1fs" % timeout)
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                continue
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, ConnectionAbortedError, OSError):
                data = b""
            if not data:
                self.eof = True
            else:
                self.buf += data

    def recv_type(self, ptype, timeout=5):
        """Skips packets until one of type ptype (others are appended to
        .skipped); None when the connection closed first."""
        deadline = time.monotonic() + timeout
        self.skipped = getattr(self, "skipped", [])
        while True:
            p = self.recv_packet(max(0.0, deadline - time.monotonic()))
            if p is None or p.type == ptype:
                return p
            self.skipped.append(p)

    def expect_closed(self, timeout=5):
        """True when the server closes within timeout. Packets read before
        (e.g. a DISCONNECT) are in .received (reset by each call)."""
        self.received = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                p = self.recv_packet(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return False
            if p is None:
                return True
            self.received.append(p)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def connect_ok(port, client_id, version=5, host="127.0.0.1", timeout=5, **kw):
    """Connects with connect(client_id, version, **kw) and asserts a CONNACK
    with reason 0; the CONNACK is in the client's .connack."""
    c = RawClient(port, host=host, timeout=timeout)
    c.send(connect(client_id, version=version, **kw))
    p = c.recv_packet(timeout)
    if p is None or p.type != CONNACK or p.reason != 0:
        c.close()
        raise AssertionError("CONNECT %r (v%d) not accepted: %r" % (client_id, version, p))
    c.connack = p
    return c
