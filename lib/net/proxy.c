/* PROXY protocol v1/v2: the parser, and the connection phase that reads the
 * header before TLS or MQTT starts. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/core.h"
#include "net/proxy.h"

static const uint8_t v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
#define V1_MAX 107 /* "PROXY TCP6 " + two full IPv6 addresses + ports + CRLF */

static long fail(const char **why, const char *text)
{
	*why = text;
	return -1;
}

/* A decimal port, 0..65535, without sign or leading zeros. */
static bool parse_port(const char *s, unsigned *port)
{
	size_t n = strlen(s);
	if (n == 0 || n > 5 || (n > 1 && s[0] == '0') || strspn(s, "0123456789") != n)
		return false;
	unsigned long v = strtoul(s, NULL, 10);
	*port = (unsigned)v;
	return v <= 65535;
}

static long parse_v1(const uint8_t *p, size_t len, mqbi_proxy_hdr *out, const char **why)
{
	const uint8_t *lf = memchr(p, '\n', len < V1_MAX ? len : V1_MAX);
	if (!lf)
		return len >= V1_MAX ? fail(why, "v1 header longer than 107 bytes") : 0;
	size_t n = (size_t)(lf - p) + 1;
	if (n < 8 || p[n - 2] != '\r')
		return fail(why, "v1 header does not end with CRLF");
	char line[V1_MAX + 1];
	memcpy(line, p, n - 2);
	line[n - 2] = '\0';
	char *f[7], *save = NULL;
	int nf = 0;
	for (char *t = strtok_r(line, " ", &save); t && nf < 7; t = strtok_r(NULL, " ", &save))
		f[nf++] = t;
	if (nf >= 2 && strcmp(f[1], "UNKNOWN") == 0) {
		out->has_addr = false; /* the rest of the line is to be ignored */
		return (long)n;
	}
	int af = nf >= 2 && strcmp(f[1], "TCP4") == 0   ? AF_INET
	         : nf >= 2 && strcmp(f[1], "TCP6") == 0 ? AF_INET6
	                                                : 0;
	if (!af)
		return fail(why, "v1 protocol is not TCP4, TCP6 or UNKNOWN");
	uint8_t src[16], dst[16];
	unsigned sport, dport;
	if (nf != 6 || inet_pton(af, f[2], src) != 1 || inet_pton(af, f[3], dst) != 1 ||
	    !parse_port(f[4], &sport) || !parse_port(f[5], &dport))
		return fail(why, "v1 addresses or ports are malformed");
	out->has_addr = true;
	snprintf(out->src, sizeof out->src, "%s:%u", f[2], sport);
	out->dst_loopback = mqbi_ip_is_loopback(af, dst);
	return (long)n;
}

static long parse_v2(const uint8_t *p, size_t len, mqbi_proxy_hdr *out, const char **why)
{
	if (len < 16)
		return 0;
	if ((p[12] >> 4) != 2)
		return fail(why, "v2 version is not 2");
	unsigned cmd = p[12] & 0x0f, fam = p[13] >> 4, proto = p[13] & 0x0f;
	size_t body = (size_t)p[14] << 8 | p[15];
	if (cmd > 1)
		return fail(why, "v2 command is neither LOCAL nor PROXY");
	if (16 + body > MQBI_PROXY_MAX)
		return fail(why, "v2 header longer than 4096 bytes");
	if (len < 16 + body)
		return 0;
	const uint8_t *a = p + 16;
	char ip[INET6_ADDRSTRLEN];
	out->has_addr = false;
	if (cmd == 0 || proto != 1 /* STREAM */ || (fam != 1 && fam != 2))
		return (long)(16 + body); /* LOCAL, UNSPEC, UNIX or DGRAM: keep our view */
	if (fam == 1) {
		if (body < 12)
			return fail(why, "v2 IPv4 address block too short");
		inet_ntop(AF_INET, a, ip, sizeof ip);
		snprintf(out->src, sizeof out->src, "%s:%u", ip, (unsigned)(a[8] << 8 | a[9]));
		out->dst_loopback = mqbi_ip_is_loopback(AF_INET, a + 4);
	} else {
		if (body < 36)
			return fail(why, "v2 IPv6 address block too short");
		inet_ntop(AF_INET6, a, ip, sizeof ip);
		snprintf(out->src, sizeof out->src, "%s:%u", ip, (unsigned)(a[32] << 8 | a[33]));
		out->dst_loopback = mqbi_ip_is_loopback(AF_INET6, a + 16);
	}
	out->has_addr = true;
	return (long)(16 + body); /* TLVs after the addresses are not used */
}

long mqbi_proxy_parse(const uint8_t *p, size_t len, mqbi_proxy_hdr *out, const char **why)
{
	static const char v1_sig[6] = "PROXY ";
	*why = NULL;
	size_t k = len < 12 ? len : 12;
	if (memcmp(p, v2_sig, k) == 0)
		return len < 12 ? 0 : parse_v2(p, len, out, why);
	k = len < 6 ? len : 6;
	if (memcmp(p, v1_sig, k) == 0)
		return len < 6 ? 0 : parse_v1(p, len, out, why);
	return fail(why, "the connection does not start with a PROXY protocol header");
}

/* ---- The connection phase ---------------------------------------------------
 *
 * The header is peeked at, never read past: bytes are taken off the socket
 * only once they are known to be header bytes (all of an incomplete header,
 * or exactly the complete one), so TLS or MQTT start on the next byte. */

static void proxy_failed(mqbi_client *c, const char *why)
{
	mqbi_log(c->w->broker, MQB_LOG_NOTICE, "net", c,
	         "PROXY protocol on listener %s.%s: %s; closing", c->listener->cfg.type,
	         c->listener->cfg.name, why);
	mqbi_client_close(c, MQBI_RC_UNSPECIFIED);
}

static void proxy_timeout(mqbi_loop *l, mqbi_timer *tm)
{
	mqbi_client *c = (mqbi_client *)((char *)tm - offsetof(mqbi_client, timer));
	proxy_failed(c, "no complete header in time");
}

static void proxy_done(mqbi_client *c, const mqbi_proxy_hdr *h)
{
	mqbi_worker *w = c->w;
	mqbi_iobuf_put(w, c->rbuf, c->rcap);
	c->rbuf = NULL;
	c->rlen = c->rcap = 0;
	mqbi_timer_stop(w->loop, &c->timer);
	mqbi_loop_unwatch(w->loop, c->fd);
	if (h->has_addr) {
		/* The client was allocated with room for any address (mqbi_client_accept). */
		mqbi_log(w->broker, MQB_LOG_DEBUG, "net", c, "PROXY header: client is %s", h->src);
		snprintf(c->peer, sizeof h->src, "%s", h->src);
		c->local_loopback = h->dst_loopback;
	}
	mqbi_client_begin(c);
}

static void on_proxy_io(mqbi_loop *l, int fd, void *user, unsigned events)
{
	mqbi_client *c = user;
	if (!c->rbuf && !(c->rbuf = mqbi_iobuf_get(c->w, MQBI_PROXY_MAX, &c->rcap))) {
		proxy_failed(c, "out of memory");
		return;
	}
	ssize_t n = recv(fd, c->rbuf + c->rlen, MQBI_PROXY_MAX - c->rlen, MSG_PEEK);
	if (n <= 0) {
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return;
		proxy_failed(c, n == 0 ? "closed before the header was complete"
		                       : "read error before the header was complete");
		return;
	}
	mqbi_proxy_hdr h;
	const char *why;
	long total = mqbi_proxy_parse(c->rbuf, c->rlen + (size_t)n, &h, &why);
	if (total < 0) {
		proxy_failed(c, why);
		return;
	}
	/* Take the header bytes (all that was peeked, if the header goes on). */
	size_t take = total ? (size_t)total - c->rlen : (size_t)n;
	if (recv(fd, c->rbuf + c->rlen, take, 0) != (ssize_t)take) {
		proxy_failed(c, "read error");
		return;
	}
	MQBI_COUNT(c->w->m.bytes_received, (uint64_t)take);
	c->rlen += (uint32_t)take;
	if (total)
		proxy_done(c, &h);
	else if (c->rlen >= MQBI_PROXY_MAX)
		proxy_failed(c, "header too long");
}

void mqbi_proxy_accept(mqbi_client *c)
{
	mqbi_loop *l = c->w->loop;
	mqbi_timer_start(l, &c->timer, (uint64_t)c->listener->cfg.proxy_protocol_timeout,
	                 proxy_timeout);
	if (mqbi_loop_watch(l, c->fd, MQBI_EV_READ, on_proxy_io, c) != MQB_OK)
		proxy_failed(c, "cannot watch the connection");
}
