/* mqb-bench's transports over a non-blocking socket: TLS with mbedTLS, and
 * the client side of WebSocket (upgrade request, masked binary frames). */
#include "xport.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/ssl.h>

struct xport_ctx {
	int kind;
	char path[256];
	mbedtls_entropy_context entropy;
	mbedtls_ctr_drbg_context drbg;
	mbedtls_ssl_config conf;
};

enum { HS_TLS, HS_WS_SEND, HS_WS_WAIT, HS_DONE };

typedef struct buf {
	uint8_t *p;
	size_t off, len, cap;
} buf;

struct xport {
	xport_ctx *ctx;
	int fd;
	int hs;
	bool tls, ws;
	mbedtls_ssl_context ssl;
	size_t tls_retry; /* length mbedtls_ssl_write must be called again with */
	buf wout;         /* WebSocket frames (or the upgrade request) not yet written */
	buf win;          /* bytes read, not yet unframed */
	uint64_t frame_left;
};

static void buf_room(buf *b, size_t n)
{
	if (b->off == b->len)
		b->off = b->len = 0;
	if (b->len + n <= b->cap)
		return;
	if (b->off) {
		memmove(b->p, b->p + b->off, b->len - b->off);
		b->len -= b->off;
		b->off = 0;
	}
	size_t cap = b->cap ? b->cap : 16384;
	while (cap < b->len + n)
		cap *= 2;
	b->p = realloc(b->p, cap);
	if (!b->p) {
		fprintf(stderr, "mqb-bench: out of memory\n");
		exit(2);
	}
	b->cap = cap;
}

/* ---- the byte stream below WebSocket: TLS or the socket ---- */

static int bio_send(void *fdp, const unsigned char *p, size_t n)
{
	ssize_t k = send(*(int *)fdp, p, n, MSG_NOSIGNAL);
	if (k >= 0)
		return (int)k;
	return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR
	               ? MBEDTLS_ERR_SSL_WANT_WRITE
	               : -1;
}

static int bio_recv(void *fdp, unsigned char *p, size_t n)
{
	ssize_t k = recv(*(int *)fdp, p, n, 0);
	if (k >= 0)
		return (int)k;
	return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? MBEDTLS_ERR_SSL_WANT_READ
	                                                                 : -1;
}

static ssize_t low_send(xport *x, const uint8_t *p, size_t n)
{
	if (!x->tls)
		return send(x->fd, p, n, MSG_NOSIGNAL);
	/* A record mbedTLS could not finish is finished by a call with the
	 * same length; the caller passes the same bytes again. */
	size_t len = x->tls_retry ? x->tls_retry : n;
	if (len > 16384)
		len = 16384;
	int r = mbedtls_ssl_write(&x->ssl, p, len);
	if (r >= 0) {
		x->tls_retry = 0;
		return r;
	}
	if (r == MBEDTLS_ERR_SSL_WANT_WRITE || r == MBEDTLS_ERR_SSL_WANT_READ) {
		x->tls_retry = len;
		errno = EAGAIN;
	} else {
		errno = EPIPE;
	}
	return -1;
}

static ssize_t low_recv(xport *x, uint8_t *p, size_t n)
{
	if (!x->tls)
		return recv(x->fd, p, n, 0);
	int r = mbedtls_ssl_read(&x->ssl, p, n);
	if (r >= 0)
		return r;
	if (r == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY)
		return 0;
	errno = r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE ? EAGAIN
	                                                                          : ECONNRESET;
	return -1;
}

/* Writes wout: 0 all written, 1 pending, -1 error. */
static int wout_flush(xport *x)
{
	while (x->wout.off < x->wout.len) {
		ssize_t k = low_send(x, x->wout.p + x->wout.off, x->wout.len - x->wout.off);
		if (k > 0) {
			x->wout.off += (size_t)k;
			continue;
		}
		if (k < 0 && errno == EINTR)
			continue;
		return k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? 1 : -1;
	}
	x->wout.off = x->wout.len = 0;
	return 0;
}

/* ---- setup ---- */

xport_ctx *xport_ctx_new(int kind, const char *ws_path, const char **why)
{
	xport_ctx *c = calloc(1, sizeof *c);
	if (!c) {
		*why = "out of memory";
		return NULL;
	}
	c->kind = kind;
	snprintf(c->path, sizeof c->path, "%s", ws_path ? ws_path : "/mqtt");
	if (kind == XP_TLS || kind == XP_WSS) {
		mbedtls_entropy_init(&c->entropy);
		mbedtls_ctr_drbg_init(&c->drbg);
		mbedtls_ssl_config_init(&c->conf);
		if (mbedtls_ctr_drbg_seed(&c->drbg, mbedtls_entropy_func, &c->entropy,
		                          (const unsigned char *)"mqb-bench", 9) ||
		    mbedtls_ssl_config_defaults(&c->conf, MBEDTLS_SSL_IS_CLIENT,
		                                MBEDTLS_SSL_TRANSPORT_STREAM,
		                                MBEDTLS_SSL_PRESET_DEFAULT)) {
			*why = "mbedTLS setup failed";
			free(c);
			return NULL;
		}
		mbedtls_ssl_conf_rng(&c->conf, mbedtls_ctr_drbg_random, &c->drbg);
		mbedtls_ssl_conf_authmode(&c->conf, MBEDTLS_SSL_VERIFY_NONE);
	}
	return c;
}

void xport_ctx_free(xport_ctx *c)
{
	if (!c)
		return;
	if (c->kind == XP_TLS || c->kind == XP_WSS) {
		mbedtls_ssl_config_free(&c->conf);
		mbedtls_ctr_drbg_free(&c->drbg);
		mbedtls_entropy_free(&c->entropy);
	}
	free(c);
}

xport *xport_new(xport_ctx *ctx, int fd)
{
	if (!ctx || ctx->kind == XP_TCP)
		return NULL;
	xport *x = calloc(1, sizeof *x);
	if (!x)
		return NULL;
	x->ctx = ctx;
	x->fd = fd;
	x->tls = ctx->kind == XP_TLS || ctx->kind == XP_WSS;
	x->ws = ctx->kind == XP_WS || ctx->kind == XP_WSS;
	x->hs = x->tls ? HS_TLS : HS_WS_SEND;
	if (x->tls) {
		mbedtls_ssl_init(&x->ssl);
		mbedtls_ssl_setup(&x->ssl, &ctx->conf);
		mbedtls_ssl_set_hostname(&x->ssl, "localhost");
		mbedtls_ssl_set_bio(&x->ssl, &x->fd, bio_send, bio_recv, NULL);
	}
	return x;
}

void xport_free(xport *x)
{
	if (!x)
		return;
	if (x->tls)
		mbedtls_ssl_free(&x->ssl);
	free(x->wout.p);
	free(x->win.p);
	free(x);
}

int xport_handshake(xport *x, bool *want_out, const char **why)
{
	*want_out = false;
	if (x->hs == HS_TLS) {
		int r = mbedtls_ssl_handshake(&x->ssl);
		if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE) {
			*want_out = r == MBEDTLS_ERR_SSL_WANT_WRITE;
			return 0;
		}
		if (r) {
			*why = "TLS handshake failed";
			return -1;
		}
		x->hs = x->ws ? HS_WS_SEND : HS_DONE;
	}
	if (x->hs == HS_WS_SEND) {
		/* The key is fixed: the tool trusts the broker, and the broker
		 * checks only its form. */
		char req[512];
		int n = snprintf(
		        req, sizeof req,
		        "GET %s HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
		        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
		        "Sec-WebSocket-Protocol: mqtt\r\nSec-WebSocket-Version: 13\r\n\r\n",
		        x->ctx->path);
		buf_room(&x->wout, (size_t)n);
		memcpy(x->wout.p + x->wout.len, req, (size_t)n);
		x->wout.len += (size_t)n;
		x->hs = HS_WS_WAIT;
	}
	if (x->hs == HS_WS_WAIT) {
		int f = wout_flush(x);
		if (f < 0) {
			*why = "sending the WebSocket upgrade failed";
			return -1;
		}
		*want_out = f == 1;
		for (;;) {
			buf_room(&x->win, 4096);
			ssize_t k = low_recv(x, x->win.p + x->win.len, x->win.cap - x->win.len);
			if (k > 0) {
				x->win.len += (size_t)k;
				continue;
			}
			if (k == 0 || errno != EAGAIN) {
				*why = "connection closed during the WebSocket upgrade";
				return -1;
			}
			break;
		}
		uint8_t *end =
		        memmem(x->win.p + x->win.off, x->win.len - x->win.off, "\r\n\r\n", 4);
		if (!end)
			return 0;
		if (x->win.len - x->win.off < 12 || memcmp(x->win.p + x->win.off + 9, "101", 3)) {
			*why = "WebSocket upgrade refused";
			return -1;
		}
		x->win.off = (size_t)(end + 4 - x->win.p); /* frames may follow */
		x->hs = HS_DONE;
	}
	return 1;
}

ssize_t xport_send(xport *x, const uint8_t *p, size_t n)
{
	if (!x->ws)
		return low_send(x, p, n);
	int f = wout_flush(x);
	if (f) {
		errno = f > 0 ? EAGAIN : EPIPE;
		return -1;
	}
	/* One binary frame with a zero mask: masking is required, its key is
	 * ours to choose, and XOR with zero keeps the tool out of the way of
	 * the measurement (the broker unmasks all the same). */
	buf_room(&x->wout, n + 14);
	uint8_t *h = x->wout.p + x->wout.len;
	size_t hl;
	h[0] = 0x82;
	if (n < 126) {
		h[1] = (uint8_t)(0x80 | n);
		hl = 2;
	} else if (n <= 0xffff) {
		h[1] = 0x80 | 126;
		h[2] = (uint8_t)(n >> 8);
		h[3] = (uint8_t)n;
		hl = 4;
	} else {
		h[1] = 0x80 | 127;
		for (int i = 0; i < 8; i++)
			h[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
		hl = 10;
	}
	memset(h + hl, 0, 4);
	memcpy(h + hl + 4, p, n);
	x->wout.len += hl + 4 + n;
	if (wout_flush(x) < 0) {
		errno = EPIPE;
		return -1;
	}
	return (ssize_t)n;
}

int xport_flush(xport *x)
{
	return x->ws ? wout_flush(x) : 0;
}

ssize_t xport_recv(xport *x, uint8_t *out, size_t n)
{
	if (!x->ws)
		return low_recv(x, out, n);
	size_t got = 0;
	for (;;) {
		buf *b = &x->win;
		size_t avail = b->len - b->off;
		if (x->frame_left && avail) {
			size_t k = x->frame_left < avail ? (size_t)x->frame_left : avail;
			if (k > n - got)
				k = n - got;
			memcpy(out + got, b->p + b->off, k); /* server frames are not masked */
			b->off += k;
			x->frame_left -= k;
			got += k;
			if (got == n)
				return (ssize_t)got;
			continue;
		}
		if (!x->frame_left && avail >= 2) {
			const uint8_t *h = b->p + b->off;
			size_t hl = (h[1] & 0x7f) == 126 ? 4 : (h[1] & 0x7f) == 127 ? 10 : 2;
			if (avail >= hl) {
				uint64_t len = h[1] & 0x7f;
				if (hl == 4)
					len = (uint64_t)h[2] << 8 | h[3];
				else if (hl == 10)
					for (int i = 0; i < 8; i++)
						len = (i ? len << 8 : 0) | h[2 + i];
				uint8_t op = h[0] & 0x0f;
				if (op == 8) { /* close */
					if (got)
						return (ssize_t)got;
					return 0;
				}
				if (op >= 9) { /* ping/pong: the broker sends none */
					if (avail < hl + len)
						goto more;
					b->off += hl + len;
					continue;
				}
				b->off += hl;
				x->frame_left = len;
				continue;
			}
		}
	more:
		if (got)
			return (ssize_t)got;
		buf_room(b, 16384);
		ssize_t k = low_recv(x, b->p + b->len, b->cap - b->len);
		if (k <= 0)
			return k;
		b->len += (size_t)k;
	}
}
