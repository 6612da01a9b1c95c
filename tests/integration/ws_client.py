"""A minimal WebSocket client (RFC 6455) for tests that need control over
every frame: fragmentation, masking, opcodes, close codes."""
import base64
import hashlib
import os
import socket
import struct

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0, 1, 2, 8, 9, 10


def request(path="/mqtt", key=None, protocol="mqtt", extra=(), version="13", method="GET"):
    key = key or base64.b64encode(os.urandom(16)).decode()
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: localhost", "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Key: " + key,
             "Sec-WebSocket-Version: " + version]
    if protocol:
        lines.append("Sec-WebSocket-Protocol: " + protocol)
    lines += list(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), key


def frame(opcode, payload, fin=True, mask=True, rsv=0):
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    n = len(payload)
    m = 0x80 if mask else 0
    if n < 126:
        head += bytes([m | n])
    elif n < 65536:
        head += bytes([m | 126]) + struct.pack("!H", n)
    else:
        head += bytes([m | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class WS:
    """A connected, upgraded WebSocket; raises on a refused upgrade."""

    def __init__(self, port, sock=None, timeout=10, **req):
        self.sock = sock or socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        data, key = request(**req)
        self.sock.sendall(data)
        self.status, self.headers = self._response()
        if self.status == 101:
            want = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
            assert self.headers.get("sec-websocket-accept") == want, self.headers

    def _recv(self):
        d = self.sock.recv(65536)
        if not d:
            raise ConnectionError("closed")
        self.buf += d

    def _response(self):
        while b"\r\n\r\n" not in self.buf:
            self._recv()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        return status, headers

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, payload, opcode=BINARY, fin=True, mask=True):
        self.sock.sendall(frame(opcode, payload, fin, mask))

    def read_frame(self):
        """(opcode, payload); raises ConnectionError at the end of the stream."""
        while len(self.buf) < 2:
            self._recv()
        b0, b1 = self.buf[0], self.buf[1]
        assert not b1 & 0x80, "server frames are not masked"
        n, i = b1 & 0x7f, 2
        if n == 126:
            while len(self.buf) < 4:
                self._recv()
            n, i = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            while len(self.buf) < 10:
                self._recv()
            n, i = struct.unpack("!Q", self.buf[2:10])[0], 10
        while len(self.buf) < i + n:
            self._recv()
        payload, self.buf = self.buf[i:i + n], self.buf[i + n:]
        return b0 & 0x0f, payload

    def read_mqtt(self, nbytes):
        """At least nbytes of the MQTT stream, from binary frames."""
        out = b""
        while len(out) < nbytes:
            op, p = self.read_frame()
            assert op in (BINARY, CONT), "unexpected opcode %d" % op
            out += p
        return out

    def read_close(self):
        """The close code the server sent (it may send data frames first)."""
        while True:
            op, p = self.read_frame()
            if op == CLOSE:
                return struct.unpack("!H", p[:2])[0] if len(p) >= 2 else None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
