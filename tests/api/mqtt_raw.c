/* A minimal raw MQTT client for the embedding-API tests; see mqtt_raw.h. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "mqtt_raw.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

void mr_buf_free(mr_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

static void reserve(mr_buf *b, size_t n)
{
	if (b->len + n <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 64;
	while (cap < b->len + n)
		cap *= 2;
	uint8_t *d = realloc(b->data, cap);
	if (!d)
		abort();
	b->data = d;
	b->cap = cap;
}

void mr_put_bytes(mr_buf *b, const void *p, size_t n)
{
	reserve(b, n);
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
}
void mr_put_u8(mr_buf *b, uint8_t v)
{
	mr_put_bytes(b, &v, 1);
}
void mr_put_u16(mr_buf *b, uint16_t v)
{
	uint8_t x[2] = {(uint8_t)(v >> 8), (uint8_t)v};
	mr_put_bytes(b, x, 2);
}
void mr_put_u32(mr_buf *b, uint32_t v)
{
	uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
	mr_put_bytes(b, x, 4);
}
void mr_put_varint(mr_buf *b, uint32_t v)
{
	do {
		uint8_t d = v % 128;
		v /= 128;
		if (v)
			d |= 0x80;
		mr_put_u8(b, d);
	} while (v);
}
void mr_put_bin(mr_buf *b, const void *p, size_t n)
{
	mr_put_u16(b, (uint16_t)n);
	mr_put_bytes(b, p, n);
}
void mr_put_str(mr_buf *b, const char *s)
{
	mr_put_bin(b, s, strlen(s));
}

void mr_prop_u8(mr_buf *b, uint8_t id, uint8_t v)
{
	mr_put_u8(b, id);
	mr_put_u8(b, v);
}
void mr_prop_u16(mr_buf *b, uint8_t id, uint16_t v)
{
	mr_put_u8(b, id);
	mr_put_u16(b, v);
}
void mr_prop_u32(mr_buf *b, uint8_t id, uint32_t v)
{
	mr_put_u8(b, id);
	mr_put_u32(b, v);
}
void mr_prop_varint(mr_buf *b, uint8_t id, uint32_t v)
{
	mr_put_u8(b, id);
	mr_put_varint(b, v);
}
void mr_prop_str(mr_buf *b, uint8_t id, const char *s)
{
	mr_put_u8(b, id);
	mr_put_str(b, s);
}
void mr_prop_bin(mr_buf *b, uint8_t id, const void *p, size_t n)
{
	mr_put_u8(b, id);
	mr_put_bin(b, p, n);
}
void mr_prop_pair(mr_buf *b, uint8_t id, const char *k, const char *v)
{
	mr_put_u8(b, id);
	mr_put_str(b, k);
	mr_put_str(b, v);
}

/* Appends fixed header + body to out. */
static void finish(mr_buf *out, uint8_t first, const mr_buf *body)
{
	mr_put_u8(out, first);
	mr_put_varint(out, (uint32_t)body->len);
	mr_put_bytes(out, body->data, body->len);
}

static void put_props(mr_buf *b, const mr_buf *props)
{
	if (props && props->len) {
		mr_put_varint(b, (uint32_t)props->len);
		mr_put_bytes(b, props->data, props->len);
	} else {
		mr_put_u8(b, 0);
	}
}

void mr_enc_connect(mr_buf *out, const mr_connect_opts *o)
{
	mr_buf b = {0};
	mr_put_str(&b, "MQTT");
	mr_put_u8(&b, (uint8_t)o->proto);
	uint8_t flags = 0;
	if (o->clean)
		flags |= 0x02;
	if (o->will_topic)
		flags |= 0x04;
	if (o->username)
		flags |= 0x80;
	if (o->password)
		flags |= 0x40;
	mr_put_u8(&b, flags);
	mr_put_u16(&b, o->keepalive);
	if (o->proto == 5) {
		mr_buf p = {0};
		if (o->has_session_expiry)
			mr_prop_u32(&p, 0x11, o->session_expiry);
		put_props(&b, &p);
		mr_buf_free(&p);
	}
	mr_put_str(&b, o->client_id ? o->client_id : "");
	if (o->will_topic) {
		if (o->proto == 5)
			mr_put_u8(&b, 0);
		mr_put_str(&b, o->will_topic);
		mr_put_str(&b, o->will_payload ? o->will_payload : "");
	}
	if (o->username)
		mr_put_str(&b, o->username);
	if (o->password)
		mr_put_str(&b, o->password);
	finish(out, 0x10, &b);
	mr_buf_free(&b);
}

void mr_enc_publish(mr_buf *out, int proto, const char *topic, const void *payload, size_t len,
                    int qos, int retain, uint16_t pid, const mr_buf *props)
{
	mr_buf b = {0};
	mr_put_str(&b, topic);
	if (qos > 0)
		mr_put_u16(&b, pid);
	if (proto == 5)
		put_props(&b, props);
	mr_put_bytes(&b, payload, len);
	finish(out, (uint8_t)(0x30 | (qos << 1) | (retain ? 1 : 0)), &b);
	mr_buf_free(&b);
}

void mr_enc_subscribe(mr_buf *out, int proto, uint16_t pid, const char *filter, int qos,
                      uint32_t sub_id)
{
	mr_buf b = {0};
	mr_put_u16(&b, pid);
	if (proto == 5) {
		mr_buf p = {0};
		if (sub_id)
			mr_prop_varint(&p, 0x0B, sub_id);
		put_props(&b, &p);
		mr_buf_free(&p);
	}
	mr_put_str(&b, filter);
	mr_put_u8(&b, (uint8_t)qos);
	finish(out, 0x82, &b);
	mr_buf_free(&b);
}

void mr_enc_unsubscribe(mr_buf *out, int proto, uint16_t pid, const char *filter)
{
	mr_buf b = {0};
	mr_put_u16(&b, pid);
	if (proto == 5)
		mr_put_u8(&b, 0);
	mr_put_str(&b, filter);
	finish(out, 0xA2, &b);
	mr_buf_free(&b);
}

void mr_enc_ack(mr_buf *out, int type, int proto, uint16_t pid, uint8_t reason)
{
	mr_buf b = {0};
	mr_put_u16(&b, pid);
	if (proto == 5 && reason)
		mr_put_u8(&b, reason);
	finish(out, (uint8_t)((type << 4) | (type == MR_PUBREL ? 2 : 0)), &b);
	mr_buf_free(&b);
}

void mr_enc_pingreq(mr_buf *out)
{
	mr_put_u8(out, 0xC0);
	mr_put_u8(out, 0);
}

void mr_enc_disconnect(mr_buf *out, int proto, uint8_t reason)
{
	mr_put_u8(out, 0xE0);
	if (proto == 5 && reason) {
		mr_put_u8(out, 1);
		mr_put_u8(out, reason);
	} else {
		mr_put_u8(out, 0);
	}
}

int mr_dial(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct sockaddr_in sa;
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		close(fd);
		return -1;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	return fd;
}

int mr_send(int fd, const mr_buf *b)
{
	size_t off = 0;
	while (off < b->len) {
		ssize_t n = send(fd, b->data + off, b->len - off, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		off += (size_t)n;
	}
	return 0;
}

int64_t mr_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void mr_sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* Reads exactly n bytes before the deadline: 1 ok, 0 timeout, -1 EOF/error. */
static int read_full(int fd, uint8_t *buf, size_t n, int64_t deadline)
{
	size_t off = 0;
	while (off < n) {
		int64_t left = deadline - mr_now_ms();
		if (left < 0)
			left = 0;
		struct pollfd pfd = {fd, POLLIN, 0};
		int r = poll(&pfd, 1, (int)left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			return 0;
		ssize_t k = recv(fd, buf + off, n - off, 0);
		if (k < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (k <= 0)
			return -1;
		off += (size_t)k;
	}
	return 1;
}

void mr_packet_free(mr_packet *p)
{
	free(p->body);
	p->body = NULL;
	p->len = 0;
}

int mr_read(int fd, mr_packet *p, int timeout_ms)
{
	int64_t deadline = mr_now_ms() + timeout_ms;
	memset(p, 0, sizeof *p);
	uint8_t h;
	int r = read_full(fd, &h, 1, deadline);
	if (r <= 0)
		return r;
	uint32_t len = 0, mult = 1;
	for (int i = 0;; i++) {
		uint8_t d;
		r = read_full(fd, &d, 1, deadline + 2000);
		if (r <= 0)
			return r;
		len += (d & 0x7Fu) * mult;
		mult *= 128;
		if (!(d & 0x80))
			break;
		if (i == 3)
			return -2;
	}
	p->type = h >> 4;
	p->flags = h & 0x0F;
	p->len = len;
	p->body = malloc(len ? len : 1);
	if (!p->body)
		return -1;
	r = read_full(fd, p->body, len, deadline + 2000);
	if (r <= 0) {
		mr_packet_free(p);
		return r;
	}
	return 1;
}

int mr_wait_closed(int fd, int timeout_ms)
{
	int64_t deadline = mr_now_ms() + timeout_ms;
	uint8_t buf[4096];
	for (;;) {
		int64_t left = deadline - mr_now_ms();
		if (left < 0)
			return 0;
		struct pollfd pfd = {fd, POLLIN, 0};
		int r = poll(&pfd, 1, (int)left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return 0;
		ssize_t k = recv(fd, buf, sizeof buf, 0);
		if (k == 0 || (k < 0 && errno != EINTR && errno != EAGAIN))
			return 1;
	}
}

/* Property decoding ------------------------------------------------------ */

static int get_varint(const uint8_t *d, size_t len, size_t *off, uint32_t *v)
{
	uint32_t val = 0, mult = 1;
	for (int i = 0; i < 4; i++) {
		if (*off >= len)
			return -1;
		uint8_t b = d[(*off)++];
		val += (b & 0x7Fu) * mult;
		mult *= 128;
		if (!(b & 0x80)) {
			*v = val;
			return 0;
		}
	}
	return -1;
}

static int get_u16(const uint8_t *d, size_t len, size_t *off, uint16_t *v)
{
	if (*off + 2 > len)
		return -1;
	*v = (uint16_t)(d[*off] << 8 | d[*off + 1]);
	*off += 2;
	return 0;
}

static int get_u32(const uint8_t *d, size_t len, size_t *off, uint32_t *v)
{
	if (*off + 4 > len)
		return -1;
	*v = (uint32_t)d[*off] << 24 | (uint32_t)d[*off + 1] << 16 | (uint32_t)d[*off + 2] << 8 |
	     d[*off + 3];
	*off += 4;
	return 0;
}

/* Reads a u16-length string into dst (NUL-terminated, truncated). */
static int get_str(const uint8_t *d, size_t len, size_t *off, char *dst, size_t cap)
{
	uint16_t n;
	if (get_u16(d, len, off, &n) || *off + n > len)
		return -1;
	size_t c = n < cap - 1 ? n : cap - 1;
	memcpy(dst, d + *off, c);
	dst[c] = 0;
	*off += n;
	return 0;
}

int mr_parse_props(const uint8_t *data, size_t len, mr_props *out)
{
	memset(out, 0, sizeof *out);
	size_t off = 0;
	uint32_t plen;
	if (get_varint(data, len, &off, &plen) || off + plen > len)
		return -1;
	size_t end = off + plen;
	while (off < end) {
		uint32_t id;
		if (get_varint(data, end, &off, &id))
			return -1;
		uint16_t u16;
		uint32_t u32;
		switch (id) {
		case 0x01:
			if (off >= end)
				return -1;
			out->has_payload_format = 1;
			out->payload_format = data[off++];
			break;
		case 0x02:
			if (get_u32(data, end, &off, &out->message_expiry))
				return -1;
			out->has_message_expiry = 1;
			break;
		case 0x03:
			if (get_str(data, end, &off, out->content_type, sizeof out->content_type))
				return -1;
			out->has_content_type = 1;
			break;
		case 0x08:
			if (get_str(data, end, &off, out->response_topic,
			            sizeof out->response_topic))
				return -1;
			out->has_response_topic = 1;
			break;
		case 0x09:
			if (get_u16(data, end, &off, &u16) || off + u16 > end)
				return -1;
			out->correlation_len =
			        u16 < sizeof out->correlation ? u16 : sizeof out->correlation;
			memcpy(out->correlation, data + off, out->correlation_len);
			out->has_correlation = 1;
			off += u16;
			break;
		case 0x0B:
			if (get_varint(data, end, &off, &u32))
				return -1;
			if (out->subscription_id_count < 8)
				out->subscription_ids[out->subscription_id_count++] = u32;
			break;
		case 0x11:
			if (get_u32(data, end, &off, &out->session_expiry))
				return -1;
			out->has_session_expiry = 1;
			break;
		case 0x13:
			if (get_u16(data, end, &off, &out->server_keepalive))
				return -1;
			out->has_server_keepalive = 1;
			break;
		case 0x1F:
			if (get_str(data, end, &off, out->reason_string, sizeof out->reason_string))
				return -1;
			out->has_reason_string = 1;
			break;
		case 0x24:
			if (off >= end)
				return -1;
			out->has_maximum_qos = 1;
			out->maximum_qos = data[off++];
			break;
		case 0x26: {
			char k[128], v[128];
			if (get_str(data, end, &off, k, sizeof k) ||
			    get_str(data, end, &off, v, sizeof v))
				return -1;
			if (out->user_count < MR_MAX_USER_PROPS) {
				strcpy(out->user_key[out->user_count], k);
				strcpy(out->user_value[out->user_count], v);
				out->user_count++;
			}
			break;
		}
		/* single-byte properties we skip */
		case 0x17:
		case 0x19:
		case 0x25:
		case 0x28:
		case 0x29:
		case 0x2A:
			if (off >= end)
				return -1;
			off++;
			break;
		/* two-byte integers */
		case 0x21:
		case 0x22:
		case 0x23:
			if (get_u16(data, end, &off, &u16))
				return -1;
			break;
		/* four-byte integers */
		case 0x18:
		case 0x27:
			if (get_u32(data, end, &off, &u32))
				return -1;
			break;
		/* strings / binary */
		case 0x12:
		case 0x15:
		case 0x16:
		case 0x1A:
		case 0x1C: {
			char tmp[1024];
			if (get_str(data, end, &off, tmp, sizeof tmp))
				return -1;
			break;
		}
		default:
			return -1;
		}
	}
	return (int)end;
}

int mr_parse_publish(const mr_packet *p, int proto, mr_publish *out)
{
	memset(out, 0, sizeof *out);
	if (p->type != MR_PUBLISH)
		return -1;
	out->qos = (p->flags >> 1) & 3;
	out->retain = p->flags & 1;
	out->dup = (p->flags >> 3) & 1;
	size_t off = 0;
	if (get_str(p->body, p->len, &off, out->topic, sizeof out->topic))
		return -1;
	if (out->qos && get_u16(p->body, p->len, &off, &out->pid))
		return -1;
	if (proto == 5) {
		int n = mr_parse_props(p->body + off, p->len - off, &out->props);
		if (n < 0)
			return -1;
		off += (size_t)n;
	}
	out->payload = p->body + off;
	out->payload_len = p->len - off;
	return 0;
}

int mr_parse_connack(const mr_packet *p, int proto, int *session_present, int *rc, mr_props *props)
{
	if (p->type != MR_CONNACK || p->len < 2)
		return -1;
	if (session_present)
		*session_present = p->body[0] & 1;
	if (rc)
		*rc = p->body[1];
	if (props) {
		memset(props, 0, sizeof *props);
		if (proto == 5 && p->len > 2 && mr_parse_props(p->body + 2, p->len - 2, props) < 0)
			return -1;
	}
	return 0;
}

int mr_parse_ack(const mr_packet *p, int proto, uint16_t *pid, int *reason)
{
	size_t off = 0;
	uint16_t v;
	if (get_u16(p->body, p->len, &off, &v))
		return -1;
	if (pid)
		*pid = v;
	if (reason)
		*reason = (proto == 5 && p->type != MR_UNSUBACK && p->len > 2) ? p->body[2] : 0;
	return 0;
}

int mr_parse_suback(const mr_packet *p, int proto, uint16_t *pid, int *codes, int max)
{
	if (p->type != MR_SUBACK)
		return -1;
	size_t off = 0;
	uint16_t v;
	if (get_u16(p->body, p->len, &off, &v))
		return -1;
	if (pid)
		*pid = v;
	if (proto == 5) {
		mr_props props;
		int n = mr_parse_props(p->body + off, p->len - off, &props);
		if (n < 0)
			return -1;
		off += (size_t)n;
	}
	int k = 0;
	while (off < p->len && k < max)
		codes[k++] = p->body[off++];
	return k;
}

int mr_parse_disconnect(const mr_packet *p, int *reason)
{
	if (p->type != MR_DISCONNECT)
		return -1;
	*reason = p->len >= 1 ? p->body[0] : 0;
	return 0;
}

int mr_open(int port, const mr_connect_opts *o, int *rc)
{
	if (rc)
		*rc = -1;
	int fd = mr_dial(port);
	if (fd < 0)
		return -1;
	mr_buf b = {0};
	mr_enc_connect(&b, o);
	int ok = mr_send(fd, &b) == 0;
	mr_buf_free(&b);
	mr_packet p;
	if (!ok || mr_read(fd, &p, 10000) != 1) {
		close(fd);
		return -1;
	}
	int code = -1;
	if (mr_parse_connack(&p, o->proto, NULL, &code, NULL) != 0)
		code = -1;
	mr_packet_free(&p);
	if (rc)
		*rc = code;
	if (code != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

int mr_open_simple(int port, int proto, const char *client_id)
{
	mr_connect_opts o = {.proto = proto, .client_id = client_id, .clean = 1, .keepalive = 60};
	return mr_open(port, &o, NULL);
}

int mr_subscribe_sync(int fd, int proto, uint16_t pid, const char *filter, int qos)
{
	mr_buf b = {0};
	mr_enc_subscribe(&b, proto, pid, filter, qos, 0);
	int ok = mr_send(fd, &b) == 0;
	mr_buf_free(&b);
	if (!ok)
		return -1;
	int64_t deadline = mr_now_ms() + 10000;
	for (;;) {
		mr_packet p;
		int left = (int)(deadline - mr_now_ms());
		if (left < 0 || mr_read(fd, &p, left) != 1)
			return -1;
		if (p.type == MR_SUBACK) {
			uint16_t rpid;
			int code = -1;
			int n = mr_parse_suback(&p, proto, &rpid, &code, 1);
			mr_packet_free(&p);
			return n == 1 && rpid == pid ? code : -1;
		}
		mr_packet_free(&p); /* e.g. retained PUBLISH before SUBACK: skip */
	}
}

int mr_publish_sync(int fd, int proto, const char *topic, const char *payload, int qos, int retain,
                    uint16_t pid, const mr_buf *props)
{
	mr_buf b = {0};
	mr_enc_publish(&b, proto, topic, payload, strlen(payload), qos, retain, pid, props);
	int ok = mr_send(fd, &b) == 0;
	mr_buf_free(&b);
	if (!ok)
		return -1;
	if (qos == 0)
		return 0;
	int64_t deadline = mr_now_ms() + 10000;
	for (;;) {
		mr_packet p;
		int left = (int)(deadline - mr_now_ms());
		if (left < 0 || mr_read(fd, &p, left) != 1)
			return -1;
		int want = qos == 1 ? MR_PUBACK : MR_PUBREC;
		if (p.type == want) {
			uint16_t rpid;
			int reason = 0;
			int r = mr_parse_ack(&p, proto, &rpid, &reason);
			mr_packet_free(&p);
			if (r || rpid != pid)
				return -1;
			if (qos == 2 && reason < 0x80) {
				mr_buf rel = {0};
				mr_enc_ack(&rel, MR_PUBREL, proto, pid, 0);
				mr_send(fd, &rel);
				mr_buf_free(&rel);
				if (mr_read(fd, &p, 10000) != 1)
					return -1;
				int t = p.type;
				mr_packet_free(&p);
				if (t != MR_PUBCOMP)
					return -1;
			}
			return reason;
		}
		mr_packet_free(&p);
	}
}

int mr_next_publish(int fd, int proto, mr_packet *pkt, mr_publish *pub, int timeout_ms)
{
	int64_t deadline = mr_now_ms() + timeout_ms;
	for (;;) {
		int left = (int)(deadline - mr_now_ms());
		if (left < 0)
			return 0;
		int r = mr_read(fd, pkt, left);
		if (r != 1)
			return r == 0 ? 0 : -1;
		if (pkt->type == MR_PUBLISH) {
			if (mr_parse_publish(pkt, proto, pub) != 0) {
				mr_packet_free(pkt);
				return -1;
			}
			if (pub->qos == 1) {
				mr_buf b = {0};
				mr_enc_ack(&b, MR_PUBACK, proto, pub->pid, 0);
				mr_send(fd, &b);
				mr_buf_free(&b);
			} else if (pub->qos == 2) {
				mr_buf b = {0};
				mr_enc_ack(&b, MR_PUBREC, proto, pub->pid, 0);
				mr_send(fd, &b);
				mr_buf_free(&b);
			}
			return 1;
		}
		if (pkt->type == MR_PUBREL) {
			uint16_t pid = 0;
			mr_parse_ack(pkt, proto, &pid, NULL);
			mr_buf b = {0};
			mr_enc_ack(&b, MR_PUBCOMP, proto, pid, 0);
			mr_send(fd, &b);
			mr_buf_free(&b);
		}
		if (pkt->type == MR_DISCONNECT) {
			mr_packet_free(pkt);
			return -1;
		}
		mr_packet_free(pkt);
	}
}

int mr_ping(int fd, int timeout_ms, int *skipped)
{
	mr_buf b = {0};
	mr_enc_pingreq(&b);
	int ok = mr_send(fd, &b) == 0;
	mr_buf_free(&b);
	if (!ok)
		return 0;
	int64_t deadline = mr_now_ms() + timeout_ms;
	for (;;) {
		int left = (int)(deadline - mr_now_ms());
		if (left < 0)
			return 0;
		mr_packet p;
		if (mr_read(fd, &p, left) != 1)
			return 0;
		int t = p.type;
		mr_packet_free(&p);
		if (t == MR_PINGRESP)
			return 1;
		if (skipped)
			(*skipped)++;
	}
}
