/* MQTT over WebSocket: the upgrade request, frames, and the transport. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/base64.h>
#include <mbedtls/sha1.h>
#include <mbedtls/version.h>

#include "net/ws.h"

/* ---- The upgrade request ---------------------------------------------------- */

/* Subprotocols we speak, in the order we prefer them. */
static const char *const subprotocols[] = {"mqtt", "mqttv3.1"};

static long reject(int *status, const char **why, int code, const char *text)
{
	*status = code;
	*why = text;
	return -1;
}

/* Whether the comma-separated list `v` (n bytes) has `token`, ignoring case. */
static bool has_token(const char *v, size_t n, const char *token)
{
	size_t tl = strlen(token);
	for (size_t i = 0; i < n;) {
		while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		size_t j = i;
		while (j < n && v[j] != ',')
			j++;
		size_t e = j;
		while (e > i && (v[e - 1] == ' ' || v[e - 1] == '\t'))
			e--;
		if (e - i == tl && strncasecmp(v + i, token, tl) == 0)
			return true;
		i = j;
	}
	return false;
}

static bool name_is(const char *name, size_t n, const char *want)
{
	return strlen(want) == n && strncasecmp(name, want, n) == 0;
}

static bool base64_key_ok(const char *v, size_t n)
{
	if (n != 24 || v[22] != '=' || v[23] != '=')
		return false;
	for (size_t i = 0; i < 22; i++)
		if (!isalnum((unsigned char)v[i]) && v[i] != '+' && v[i] != '/')
			return false;
	return true;
}

/* The first address of an X-Forwarded-For style list, if it is one. */
static void take_forwarded(const char *v, size_t n, char *out, size_t outlen)
{
	size_t e = 0;
	while (e < n && v[e] != ',')
		e++;
	while (e > 0 && (v[e - 1] == ' ' || v[e - 1] == '\t'))
		e--;
	char ip[INET6_ADDRSTRLEN];
	unsigned char bin[16];
	if (e == 0 || e >= sizeof ip)
		return;
	memcpy(ip, v, e);
	ip[e] = '\0';
	if (inet_pton(AF_INET, ip, bin) == 1 || inet_pton(AF_INET6, ip, bin) == 1)
		snprintf(out, outlen, "%s", ip);
}

long mqbi_ws_parse_request(const uint8_t *p, size_t len, const mqbi_ws_options *o,
                           mqbi_ws_request *out, int *status, const char **why)
{
	const char *s = (const char *)p;
	size_t scan = len < MQBI_WS_MAX_REQUEST ? len : MQBI_WS_MAX_REQUEST;
	const char *end = NULL;
	for (size_t i = 3; i < scan && !end; i++)
		if (s[i] == '\n' && s[i - 1] == '\r' && s[i - 2] == '\n' && s[i - 3] == '\r')
			end = s + i + 1;
	if (!end) {
		/* A request line that cannot be HTTP is refused without waiting. */
		if (len >= 4 && memcmp(s, "GET ", 4) != 0 && memchr(s, ' ', scan) == NULL)
			return reject(status, why, 400, "not an HTTP request");
		return len >= MQBI_WS_MAX_REQUEST
		               ? reject(status, why, 431, "request headers longer than 8 KiB")
		               : 0;
	}
	memset(out, 0, sizeof *out);
	out->forwarded_port = -1;

	/* Request line: GET <path> HTTP/1.1 */
	const char *eol = memchr(s, '\r', (size_t)(end - s));
	const char *sp1 = memchr(s, ' ', (size_t)(eol - s));
	const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
	if (!sp1 || !sp2 || eol - sp2 - 1 != 8 || strncmp(sp2 + 1, "HTTP/1.", 7) != 0 ||
	    !isdigit((unsigned char)sp2[8]) || sp2[8] == '0')
		return reject(status, why, 400, "malformed request line (HTTP/1.1 expected)");
	if (sp1 - s != 3 || memcmp(s, "GET", 3) != 0)
		return reject(status, why, 405, "method is not GET");
	const char *target = sp1 + 1;
	size_t tlen = (size_t)(sp2 - target);
	const char *q = memchr(target, '?', tlen);
	if (q)
		tlen = (size_t)(q - target);
	if (tlen != strlen(o->path) || memcmp(target, o->path, tlen) != 0)
		return reject(status, why, 404, "no WebSocket endpoint at this path");

	bool upgrade = false, connection = false, version = false, key = false;
	bool offered = false;
	for (const char *line = eol + 2; line < end - 2;) {
		const char *le = memchr(line, '\r', (size_t)(end - line));
		if (!le || le[1] != '\n')
			return reject(status, why, 400, "header line not ended by CRLF");
		const char *colon = memchr(line, ':', (size_t)(le - line));
		if (!colon || colon == line)
			return reject(status, why, 400, "malformed header line");
		size_t nlen = (size_t)(colon - line);
		const char *v = colon + 1;
		while (v < le && (*v == ' ' || *v == '\t'))
			v++;
		size_t vlen = (size_t)(le - v);
		while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
			vlen--;
		if (name_is(line, nlen, "Upgrade"))
			upgrade = upgrade || has_token(v, vlen, "websocket");
		else if (name_is(line, nlen, "Connection"))
			connection = connection || has_token(v, vlen, "upgrade");
		else if (name_is(line, nlen, "Sec-WebSocket-Version"))
			version = vlen == 2 && memcmp(v, "13", 2) == 0;
		else if (name_is(line, nlen, "Sec-WebSocket-Key")) {
			if (!base64_key_ok(v, vlen))
				return reject(status, why, 400, "malformed Sec-WebSocket-Key");
			memcpy(out->key, v, 24);
			key = true;
		} else if (name_is(line, nlen, "Sec-WebSocket-Protocol")) {
			offered = true;
			for (size_t i = 0; i < sizeof subprotocols / sizeof *subprotocols; i++)
				if (!out->subprotocol && has_token(v, vlen, subprotocols[i]))
					out->subprotocol = subprotocols[i];
		} else if (o->address_header[0] && name_is(line, nlen, o->address_header)) {
			take_forwarded(v, vlen, out->forwarded_for, sizeof out->forwarded_for);
		} else if (o->port_header[0] && name_is(line, nlen, o->port_header)) {
			char num[8];
			if (vlen && vlen < sizeof num && strspn(v, "0123456789") >= vlen) {
				memcpy(num, v, vlen);
				num[vlen] = '\0';
				long port = strtol(num, NULL, 10);
				out->forwarded_port = port <= 65535 ? (int)port : -1;
			}
		}
		line = le + 2;
	}
	if (!upgrade || !connection)
		return reject(status, why, 426, "not a WebSocket upgrade request");
	if (!version)
		return reject(status, why, 426, "Sec-WebSocket-Version is not 13");
	if (!key)
		return reject(status, why, 400, "no Sec-WebSocket-Key");
	if (offered && !out->subprotocol)
		return reject(status, why, 400,
		              "no supported subprotocol offered (mqtt, mqttv3.1)");
	if (!offered && o->require_subprotocol)
		return reject(status, why, 400, "no subprotocol offered (mqtt expected)");
	return end - s;
}

void mqbi_ws_accept_key(const char *key, char out[29])
{
	static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
	unsigned char text[24 + sizeof guid - 1], digest[20];
	memcpy(text, key, 24);
	memcpy(text + 24, guid, sizeof guid - 1);
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
	mbedtls_sha1(text, sizeof text, digest);
#else
	mbedtls_sha1_ret(text, sizeof text, digest);
#endif
	size_t olen = 0;
	mbedtls_base64_encode((unsigned char *)out, 29, &olen, digest, sizeof digest);
	out[olen] = '\0';
}

/* ---- Frames -------------------------------------------------------------------- */

static int frame_error(uint16_t *code, const char **why, const char *text)
{
	*code = 1002;
	*why = text;
	return -1;
}

int mqbi_ws_parse_frame(const uint8_t *p, size_t len, mqbi_ws_frame *f, uint16_t *code,
                        const char **why)
{
	if (len < 2)
		return 0;
	uint8_t op = p[0] & 0x0f, l7 = p[1] & 0x7f;
	if (p[0] & 0x70)
		return frame_error(code, why, "reserved bits set (no extension was negotiated)");
	if (op > MQBI_WS_BINARY && (op < MQBI_WS_CLOSE || op > MQBI_WS_PONG))
		return frame_error(code, why, "unknown opcode");
	if (!(p[1] & 0x80))
		return frame_error(code, why, "unmasked frame from a client");
	size_t hdr = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + 4;
	if (len < hdr)
		return 0;
	uint64_t n = l7;
	if (l7 == 126) {
		n = (uint64_t)p[2] << 8 | p[3];
	} else if (l7 == 127) {
		n = 0;
		for (int i = 0; i < 8; i++)
			n = n << 8 | p[2 + i];
		if (n >> 63)
			return frame_error(code, why, "payload length with the top bit set");
	}
	f->fin = p[0] & 0x80;
	f->opcode = op;
	f->len = n;
	memcpy(f->mask, p + hdr - 4, 4);
	if (op >= MQBI_WS_CLOSE && (!f->fin || n > 125))
		return frame_error(code, why, "control frame fragmented or longer than 125 bytes");
	return (int)hdr;
}

size_t mqbi_ws_frame_header(uint8_t *out, uint8_t opcode, uint64_t len)
{
	out[0] = (uint8_t)(0x80 | opcode);
	if (len < 126) {
		out[1] = (uint8_t)len;
		return 2;
	}
	if (len <= 0xffff) {
		out[1] = 126;
		out[2] = (uint8_t)(len >> 8);
		out[3] = (uint8_t)len;
		return 4;
	}
	out[1] = 127;
	for (int i = 0; i < 8; i++)
		out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
	return 10;
}

void mqbi_ws_unmask(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t mask[4], uint64_t pos)
{
	uint8_t m[8];
	for (int i = 0; i < 8; i++)
		m[i] = mask[(pos + (uint64_t)i) & 3];
	uint64_t m64;
	memcpy(&m64, m, 8);
	size_t i = 0;
	for (; i + 8 <= n; i += 8) { /* the mask repeats every 4 bytes, so every 8 */
		uint64_t v;
		memcpy(&v, src + i, 8);
		v ^= m64;
		memcpy(dst + i, &v, 8);
	}
	for (; i < n; i++)
		dst[i] = src[i] ^ m[i & 7];
}

/* ---- The transport ------------------------------------------------------------- */

enum { WS_HANDSHAKE, WS_OPEN, WS_CLOSED /* close frame sent or received */ };

/* Largest data frame we send: one pooled buffer with its header. */
#define WS_OUT_CHUNK (MQBI_IOBUF_LARGE - 10)

typedef struct ws_conn {
	mqbi_transport base;
	/* Bytes read from below, not yet used; a pooled buffer, held only while
	 * it has bytes (an idle connection holds none). */
	uint8_t *in;
	uint32_t in_cap, in_off, in_len;
	/* Frames encoded, not yet taken by the layer below. */
	uint8_t *out;
	uint32_t out_cap, out_off, out_len;
	uint32_t retry; /* MQTT bytes in `out` that send() must be called again for */
	uint64_t left;  /* payload bytes of the current data frame not yet delivered */
	uint64_t pos;   /* bytes of that payload delivered (for the mask) */
	uint8_t mask[4];
	uint8_t state;
	bool in_message; /* a fragmented data message is under way */
	int err;         /* protocol error to report with the next recv */
} ws_conn;

static mqbi_worker *worker_of(ws_conn *ws)
{
	return ws->base.c->w;
}

static const mqbi_listener_cfg *cfg_of(ws_conn *ws)
{
	return &ws->base.c->listener->cfg;
}

static void buf_release(ws_conn *ws, uint8_t **buf, uint32_t *cap)
{
	mqbi_iobuf_put(worker_of(ws), *buf, *cap);
	*buf = NULL;
	*cap = 0;
}

/* Writes what `out` holds: 0, or the errno that stopped it (EAGAIN). */
static int out_flush(ws_conn *ws)
{
	while (ws->out_off < ws->out_len) {
		ssize_t k = mqbi_transport_lower_send(&ws->base, ws->out + ws->out_off,
		                                      ws->out_len - ws->out_off);
		if (k > 0) {
			ws->out_off += (uint32_t)k;
			continue;
		}
		if (k < 0 && errno == EINTR)
			continue;
		return k < 0 ? errno : EPIPE;
	}
	ws->out_off = ws->out_len = 0;
	buf_release(ws, &ws->out, &ws->out_cap);
	return 0;
}

/* Room for n more bytes in `out`. */
static uint8_t *out_room(ws_conn *ws, size_t n)
{
	if (!ws->out && !(ws->out = mqbi_iobuf_get(worker_of(ws), MQBI_IOBUF_LARGE, &ws->out_cap)))
		return NULL;
	if (ws->out_off && ws->out_len + n > ws->out_cap) {
		memmove(ws->out, ws->out + ws->out_off, ws->out_len - ws->out_off);
		ws->out_len -= ws->out_off;
		ws->out_off = 0;
	}
	return ws->out_len + n <= ws->out_cap ? ws->out + ws->out_len : NULL;
}

/* Queues bytes of our own (a handshake answer, control frames) and tries to
 * write them; what stays is written with the connection's next flush. */
static void out_queue(ws_conn *ws, uint8_t opcode, const void *data, size_t n)
{
	uint8_t *p = out_room(ws, n + 10);
	if (!p)
		return; /* control output only: dropping it closes nothing we need */
	size_t h = opcode ? mqbi_ws_frame_header(p, opcode, n) : 0;
	memcpy(p + h, data, n);
	ws->out_len += (uint32_t)(h + n);
	if (!ws->retry && out_flush(ws) == EAGAIN)
		mqbi_client_mark_dirty(ws->base.c);
}

static void send_close(ws_conn *ws, uint16_t code)
{
	if (ws->state != WS_OPEN)
		return;
	uint8_t payload[2] = {(uint8_t)(code >> 8), (uint8_t)code};
	out_queue(ws, MQBI_WS_CLOSE, payload, 2);
	ws->state = WS_CLOSED;
}

static ssize_t fail(ws_conn *ws, size_t got, uint16_t code, const char *why)
{
	mqbi_log(worker_of(ws)->broker, MQB_LOG_NOTICE, "ws", ws->base.c,
	         "WebSocket protocol error: %s; closing with %u", why, code);
	send_close(ws, code);
	ws->err = EPROTO;
	if (got)
		return (ssize_t)got; /* the error is reported with the next call */
	errno = EPROTO;
	return -1;
}

static const char *status_text(int status)
{
	switch (status) {
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 426:
		return "Upgrade Required";
	case 431:
		return "Request Header Fields Too Large";
	default:
		return "Bad Request";
	}
}

/* Answers the upgrade request in `in`: 1 done, 0 more bytes needed, -1 refused. */
static int handshake(ws_conn *ws)
{
	mqbi_client *c = ws->base.c;
	const mqbi_listener_cfg *cfg = cfg_of(ws);
	mqbi_ws_options o = {cfg->mqtt_path, cfg->fail_if_no_subprotocol, cfg->proxy_address_header,
	                     cfg->proxy_port_header};
	mqbi_ws_request rq;
	int status = 0;
	const char *why = NULL;
	long n = mqbi_ws_parse_request(ws->in + ws->in_off, ws->in_len - ws->in_off, &o, &rq,
	                               &status, &why);
	if (n == 0)
		return 0;
	char resp[512];
	int rl;
	if (n < 0) {
		mqbi_log(worker_of(ws)->broker, MQB_LOG_NOTICE, "ws", c,
		         "WebSocket upgrade refused on listener %s.%s: %d %s", cfg->type, cfg->name,
		         status, why);
		rl = snprintf(resp, sizeof resp,
		              "HTTP/1.1 %d %s\r\nConnection: close\r\nContent-Type: text/plain\r\n"
		              "%sContent-Length: %zu\r\n\r\n%s\n",
		              status, status_text(status),
		              status == 426 ? "Sec-WebSocket-Version: 13\r\n" : "", strlen(why) + 1,
		              why);
		out_queue(ws, 0, resp, (size_t)rl);
		return -1;
	}
	ws->in_off += (uint32_t)n;
	char accept[29];
	mqbi_ws_accept_key(rq.key, accept);
	rl = snprintf(resp, sizeof resp,
	              "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
	              "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s%s%s\r\n",
	              accept, rq.subprotocol ? "Sec-WebSocket-Protocol: " : "",
	              rq.subprotocol ? rq.subprotocol : "", rq.subprotocol ? "\r\n" : "");
	out_queue(ws, 0, resp, (size_t)rl);
	ws->state = WS_OPEN;
	if (rq.forwarded_for[0]) {
		/* The client was allocated with room for any address. Anonymous
		 * access by loopback holds only if the real client is local too. */
		char peer[MQBI_PEER_MAX];
		const char *colon = strrchr(c->peer, ':');
		int port = rq.forwarded_port >= 0 ? rq.forwarded_port : colon ? atoi(colon + 1) : 0;
		snprintf(peer, sizeof peer, "%s:%d", rq.forwarded_for, port);
		unsigned char a[16];
		int af = strchr(rq.forwarded_for, ':') ? AF_INET6 : AF_INET;
		bool lo = inet_pton(af, rq.forwarded_for, a) == 1 && mqbi_ip_is_loopback(af, a);
		c->local_loopback = c->local_loopback && lo;
		mqbi_log(worker_of(ws)->broker, MQB_LOG_DEBUG, "ws", c, "%s: client is %s",
		         cfg->proxy_address_header, peer);
		memcpy(c->peer, peer, strlen(peer) + 1);
	}
	mqbi_log(worker_of(ws)->broker, MQB_LOG_DEBUG, "ws", c,
	         "WebSocket upgrade on listener %s.%s, subprotocol %s", cfg->type, cfg->name,
	         rq.subprotocol ? rq.subprotocol : "none");
	return 1;
}

/* A complete control frame (header h bytes, then f->len) at in_off. */
static void control_frame(ws_conn *ws, const mqbi_ws_frame *f, int h)
{
	uint8_t payload[125];
	mqbi_ws_unmask(payload, ws->in + ws->in_off + h, (size_t)f->len, f->mask, 0);
	ws->in_off += (uint32_t)(h + f->len);
	if (f->opcode == MQBI_WS_PING && ws->state == WS_OPEN)
		out_queue(ws, MQBI_WS_PONG, payload, (size_t)f->len);
	else if (f->opcode == MQBI_WS_CLOSE && ws->state == WS_OPEN) {
		/* Echo the status code, as RFC 6455 5.5.1 asks. */
		out_queue(ws, MQBI_WS_CLOSE, payload, f->len >= 2 ? 2 : 0);
		ws->state = WS_CLOSED;
	}
}

/* Returns got, giving the input buffer back once everything in it is used:
 * an idle connection holds none. */
static ssize_t delivered(ws_conn *ws, size_t got)
{
	if (ws->in && ws->in_off == ws->in_len) {
		ws->in_off = ws->in_len = 0;
		buf_release(ws, &ws->in, &ws->in_cap);
	}
	return (ssize_t)got;
}

static ssize_t ws_recv(mqbi_transport *t, uint8_t *buf, size_t len)
{
	ws_conn *ws = (ws_conn *)t;
	size_t got = 0;
	if (ws->err) {
		errno = ws->err;
		return -1;
	}
	for (;;) {
		size_t avail = ws->in_len - ws->in_off;
		if (ws->state == WS_CLOSED) {
			return delivered(ws, got); /* the stream ends with the close frame */
		} else if (ws->state == WS_HANDSHAKE) {
			int r = avail ? handshake(ws) : 0;
			if (r < 0) {
				ws->err = EPROTO;
				errno = EPROTO;
				return -1;
			}
			if (r > 0)
				continue;
		} else if (ws->left && avail) {
			size_t k = ws->left < avail ? (size_t)ws->left : avail;
			if (k > len - got)
				k = len - got;
			mqbi_ws_unmask(buf + got, ws->in + ws->in_off, k, ws->mask, ws->pos);
			ws->in_off += (uint32_t)k;
			ws->left -= k;
			ws->pos += k;
			got += k;
			if (got == len)
				return delivered(ws, got);
			continue;
		} else if (!ws->left && avail) {
			mqbi_ws_frame f;
			uint16_t code = 0;
			const char *why = NULL;
			int h = mqbi_ws_parse_frame(ws->in + ws->in_off, avail, &f, &code, &why);
			if (h < 0)
				return fail(ws, got, code, why);
			if (h > 0 && f.opcode >= MQBI_WS_CLOSE) {
				if (avail < h + f.len)
					goto more; /* the whole control frame first */
				control_frame(ws, &f, h);
				continue;
			}
			if (h > 0) {
				/* [MQTT-6.0.0-1]: MQTT travels in binary frames only. */
				if (f.opcode == MQBI_WS_TEXT)
					return fail(ws, got, 1003,
					            "text frame (MQTT needs binary frames)");
				if ((f.opcode == MQBI_WS_CONT) != ws->in_message)
					return fail(ws, got, 1002,
					            ws->in_message
					                    ? "new message inside a fragmented one"
					                    : "continuation without a message");
				int64_t max = cfg_of(ws)->max_frame_size;
				if (max > 0 && f.len > (uint64_t)max)
					return fail(ws, got, 1009,
					            "frame larger than max_frame_size");
				ws->in_message = !f.fin;
				ws->in_off += (uint32_t)h;
				ws->left = f.len;
				ws->pos = 0;
				memcpy(ws->mask, f.mask, 4);
				continue;
			}
		}
	more:
		if (got)
			return delivered(ws,
			                 got); /* more is signalled by the socket or buffered() */
		/* Read from below, keeping what is not used yet. */
		if (ws->in_off == ws->in_len) {
			ws->in_off = ws->in_len = 0;
		} else if (ws->in_off) {
			memmove(ws->in, ws->in + ws->in_off, ws->in_len - ws->in_off);
			ws->in_len -= ws->in_off;
			ws->in_off = 0;
		}
		if (!ws->in &&
		    !(ws->in = mqbi_iobuf_get(worker_of(ws), MQBI_IOBUF_LARGE, &ws->in_cap))) {
			errno = ENOMEM;
			return -1;
		}
		ssize_t n =
		        mqbi_transport_lower_recv(t, ws->in + ws->in_len, ws->in_cap - ws->in_len);
		if (n <= 0) {
			if (ws->in_len == 0)
				buf_release(ws, &ws->in, &ws->in_cap);
			return n;
		}
		ws->in_len += (uint32_t)n;
	}
}

static ssize_t ws_send(mqbi_transport *t, const uint8_t *buf, size_t len)
{
	ws_conn *ws = (ws_conn *)t;
	int e = out_flush(ws);
	if (ws->retry) {
		/* The frame of the last call is in `out`: done once written. */
		if (e) {
			errno = e;
			return -1;
		}
		size_t n = ws->retry;
		ws->retry = 0;
		return (ssize_t)n;
	}
	if (e || ws->state != WS_OPEN) {
		errno = e ? e : EPIPE;
		return -1;
	}
	size_t n = len < WS_OUT_CHUNK ? len : WS_OUT_CHUNK;
	uint8_t *p = out_room(ws, n + 10);
	if (!p) {
		errno = ENOMEM;
		return -1;
	}
	size_t h = mqbi_ws_frame_header(p, MQBI_WS_BINARY, n);
	memcpy(p + h, buf, n);
	ws->out_len += (uint32_t)(h + n);
	e = out_flush(ws);
	if (!e)
		return (ssize_t)n;
	if (e == EAGAIN || e == EWOULDBLOCK)
		ws->retry = (uint32_t)n;
	errno = e;
	return -1;
}

static bool ws_buffered(const mqbi_transport *t)
{
	const ws_conn *ws = (const ws_conn *)t;
	return ws->in_off < ws->in_len || (t->lower && t->lower->ops->buffered(t->lower));
}

static size_t ws_pending(const mqbi_transport *t)
{
	const ws_conn *ws = (const ws_conn *)t;
	return ws->retry ? 0 : ws->out_len - ws->out_off;
}

static int ws_flush(mqbi_transport *t)
{
	return out_flush((ws_conn *)t);
}

/* The close code for why the connection ends (an MQTT reason code). */
static uint16_t close_code(uint8_t reason)
{
	switch (reason) {
	case MQBI_RC_SERVER_SHUTTING_DOWN:
		return 1001;
	case MQBI_RC_MALFORMED:
	case MQBI_RC_PROTOCOL_ERROR:
		return 1002;
	case MQBI_RC_PACKET_TOO_LARGE:
		return 1009;
	default:
		return 1000;
	}
}

static void ws_close(mqbi_transport *t)
{
	ws_conn *ws = (ws_conn *)t;
	send_close(ws, close_code(t->c->disconnect_reason));
	(void)out_flush(ws);
	buf_release(ws, &ws->in, &ws->in_cap);
	buf_release(ws, &ws->out, &ws->out_cap);
	if (t->lower)
		t->lower->ops->close(t->lower);
	mqbi_free(&worker_of(ws)->broker->alloc, ws);
}

static const mqbi_transport_ops ws_ops = {.recv = ws_recv,
                                          .send = ws_send,
                                          .buffered = ws_buffered,
                                          .pending = ws_pending,
                                          .flush = ws_flush,
                                          .close = ws_close};

bool mqbi_ws_attach(mqbi_client *c)
{
	ws_conn *ws = mqbi_calloc(&c->w->broker->alloc, sizeof *ws);
	if (!ws)
		return false;
	ws->base.ops = &ws_ops;
	ws->base.c = c;
	ws->base.lower = c->xport;
	ws->state = WS_HANDSHAKE;
	c->xport = &ws->base;
	return true;
}
