/*
 * mqb-bench: an MQTT load tool in the spirit of emqtt-bench.
 *
 * Worker threads each run their own epoll loop over a share of the
 * connections (non-blocking sockets). Modes:
 *   conn      open N connections at a rate and hold them for -d seconds
 *   pub       N publishers
 *   sub       N subscribers
 *   --scenario fan-in|fan-out|p2p|shared|spread
 *             publishers and subscribers in one process, measured end to end
 *             (sent, received, lost, duplicated, out of order, latency).
 *
 * Every payload (>= 16 bytes) starts with the send timestamp (CLOCK_MONOTONIC
 * ns; the *scheduled* time in open-loop runs), the publisher's sequence
 * number (from 1) and the publisher index.
 *
 * Only loopback targets (127.0.0.0/8) are accepted.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "xport.h"

#define VERSION "0.1.0"

/* ------------------------------------------------------------------ util */

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "mqb-bench: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(2);
}

static void *xcalloc(size_t n, size_t sz)
{
	void *p = calloc(n ? n : 1, sz ? sz : 1);
	if (!p)
		die("out of memory");
	return p;
}

#define LOAD(x)     __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)
/* Single-writer counters that another thread reads: a relaxed store of the
 * incremented value is a plain add on x86. */
#define INC(x, n) STORE(x, (x) + (n))

/* ------------------------------------------------------------- histogram */
/* Log-linear: values < 128 exact, above that 64 sub-buckets per power of two
 * (relative error < 1.6 %). Values in ns. */
#define H_SUB     64
#define H_BUCKETS (128 + 58 * H_SUB)

typedef struct hist {
	uint64_t b[H_BUCKETS];
	uint64_t count, max, min;
	double sum;
} hist;

static inline int h_index(uint64_t v)
{
	if (v < 128)
		return (int)v;
	int msb = 63 - __builtin_clzll(v);
	int shift = msb - 6;
	int idx = 128 + (shift - 1) * H_SUB + (int)((v >> shift) - 64);
	return idx < H_BUCKETS ? idx : H_BUCKETS - 1;
}

static uint64_t h_value(int idx) /* midpoint of a bucket */
{
	if (idx < 128)
		return (uint64_t)idx;
	int shift = (idx - 128) / H_SUB + 1;
	uint64_t m = (uint64_t)((idx - 128) % H_SUB + 64);
	return (m << shift) + ((1ull << shift) >> 1);
}

static inline void h_add(hist *h, uint64_t v)
{
	h->b[h_index(v)]++;
	h->count++;
	h->sum += (double)v;
	if (v > h->max)
		h->max = v;
	if (h->count == 1 || v < h->min)
		h->min = v;
}

static void h_merge(hist *d, const hist *s)
{
	for (int i = 0; i < H_BUCKETS; i++)
		d->b[i] += s->b[i];
	if (s->count && (d->count == 0 || s->min < d->min))
		d->min = s->min;
	d->count += s->count;
	d->sum += s->sum;
	if (s->max > d->max)
		d->max = s->max;
}

static uint64_t h_pct(const hist *h, double p)
{
	if (!h->count)
		return 0;
	uint64_t want = (uint64_t)ceil(p / 100.0 * (double)h->count);
	if (want < 1)
		want = 1;
	uint64_t acc = 0;
	for (int i = 0; i < H_BUCKETS; i++) {
		acc += h->b[i];
		if (acc >= want) {
			uint64_t v = h_value(i);
			return v > h->max ? h->max : v;
		}
	}
	return h->max;
}

/* --------------------------------------------------------------- options */

enum { M_CONN, M_PUB, M_SUB, M_SCEN };
enum { SC_NONE, SC_FANIN, SC_FANOUT, SC_P2P, SC_SHARED, SC_SPREAD };
static const char *sc_names[] = {"none", "fan-in", "fan-out", "p2p", "shared", "spread"};
static const char *mode_names[] = {"conn", "pub", "sub", "scenario"};

static struct opts {
	int mode, scen;
	char host[64];
	struct sockaddr_in addr;
	int port, ver, qos, size;
	int count;   /* conn/pub/sub: connections; scenario: publishers */
	int subs;    /* scenario: subscribers */
	double rate; /* per publisher msg/s; 0 = closed loop */
	double total_rate;
	double conn_rate;
	const char *topic, *filter, *group;
	double duration, warmup, drain;
	int inflight;
	int threads;
	int cpus[256], ncpus;
	bool json, quiet;
	int keepalive;
	const char *ready_file;
	const char *prefix;
	double setup_timeout;
	double tick_us; /* < 0: automatic */
	int extra_subs; /* per subscriber, filters that are never published to */
	int transport;  /* XP_* */
	const char *ws_path;
	long sub_session; /* subscribers' session expiry (s); -1 = clean sessions */
} O = {
        .host = "127.0.0.1",
        .port = 1883,
        .ver = 4,
        .qos = 0,
        .size = 64,
        .count = 1,
        .subs = -1,
        .conn_rate = 1000,
        .duration = 10,
        .warmup = 1,
        .drain = 5,
        .inflight = 64,
        .threads = 1,
        .keepalive = 300,
        .group = "g",
        .prefix = NULL,
        .tick_us = -1,
        .transport = XP_TCP,
        .ws_path = "/mqtt",
        .sub_session = -1,
};

/* --------------------------------------------------------------- conns */

enum { R_PUB = 1, R_SUB = 2, R_IDLE = 3 };
enum { S_NEW, S_CONNECTING, S_HANDSHAKE, S_WAIT_CONNACK, S_WAIT_SUBACK, S_READY, S_CLOSED };

typedef struct conn {
	int fd;
	xport *x; /* TLS / WebSocket; NULL over plain TCP */
	uint8_t role, state;
	bool dirty, want_out, blocked;
	uint32_t idx; /* publisher or subscriber index (global) */
	uint8_t *in;
	uint32_t in_len, in_cap;
	uint8_t *out;
	uint32_t out_len, out_off, out_cap;
	uint64_t t_conn; /* when connect started */
	uint64_t last_tx;
	/* publisher */
	char *topic;
	uint16_t topic_len;
	uint64_t next_sched, interval;
	uint32_t seq;
	uint32_t inflight;
	uint16_t next_pid;
	uint64_t *pid_map; /* 65536 bits, QoS > 0 */
	uint32_t rot;      /* spread: next target */
	/* subscriber */
	uint32_t *last_seq;   /* per publisher */
	uint32_t subacks_due; /* SUBACKs still expected during setup */
} conn;

typedef struct worker {
	int id;
	pthread_t th;
	int ep;
	conn **conns;
	int nconns;
	conn **pubs;
	int npubs;
	conn **dirty;
	int ndirty;
	int next_connect;
	int cpu;
	uint64_t last_pump;
	xport_ctx *xctx;
	/* stats (single writer, relaxed reads by main) */
	uint64_t sent, sent_win, acked, recv, recv_win, dup, ooo, conn_ok, conn_fail, ready, errors,
	        closed, unknown_pub, bad_payload;
	hist lat, conn_lat;
	char errmsg[200];
} worker;

enum { PH_SETUP, PH_RUN, PH_DRAIN, PH_STOP };
static int g_phase;
static uint64_t g_t_start, g_t_win, g_t_end; /* publish start, window start, end */
static worker *W;
static int g_npubs, g_nsubs, g_nconns;
static uint64_t **g_bitmaps; /* per publisher dedup bitmaps (expected-1 scenarios) */
static uint64_t g_bitmap_bits;
static int g_fanout; /* expected deliveries per message; 0 = unknown */
static int g_stop_signal;
static uint64_t g_tick; /* open-loop publishing granularity in ns; 0 = exact */

static void on_signal(int s)
{
	(void)s;
	g_stop_signal = 1;
}

static void werr(worker *w, const char *fmt, ...)
{
	INC(w->errors, 1);
	if (w->errmsg[0])
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(w->errmsg, sizeof w->errmsg, fmt, ap);
	va_end(ap);
}

static void out_reserve(conn *c, uint32_t n)
{
	if (c->out_off && c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	if (c->out_len + n <= c->out_cap)
		return;
	if (c->out_off) {
		memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
		c->out_len -= c->out_off;
		c->out_off = 0;
		if (c->out_len + n <= c->out_cap)
			return;
	}
	uint32_t cap = c->out_cap ? c->out_cap : 1024;
	while (cap < c->out_len + n)
		cap *= 2;
	c->out = realloc(c->out, cap);
	if (!c->out)
		die("out of memory");
	c->out_cap = cap;
}

static inline void mark_dirty(worker *w, conn *c)
{
	if (!c->dirty) {
		c->dirty = true;
		w->dirty[w->ndirty++] = c;
	}
}

static inline uint8_t *put16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = v & 0xff;
	return p + 2;
}

static inline uint8_t *putvar(uint8_t *p, uint32_t v)
{
	do {
		uint8_t b = v & 0x7f;
		v >>= 7;
		if (v)
			b |= 0x80;
		*p++ = b;
	} while (v);
	return p;
}

static inline uint8_t *putstr(uint8_t *p, const char *s, uint16_t n)
{
	p = put16(p, n);
	memcpy(p, s, n);
	return p + n;
}

static void send_connect(worker *w, conn *c)
{
	char id[64];
	int idl = snprintf(id, sizeof id, "%s-%c%u", O.prefix,
	                   c->role == R_PUB   ? 'p'
	                   : c->role == R_SUB ? 's'
	                                      : 'c',
	                   c->idx);
	/* Persistent subscriber sessions (--sub-session): a fresh one each run
	 * (the ids are new), kept by the broker while the run lasts. */
	bool keep = c->role == R_SUB && O.sub_session >= 0;
	uint32_t props = keep && O.ver == 5 ? 5 : 0;
	uint32_t rl = 10 + 2 + idl + (O.ver == 5 ? 1 + props : 0);
	out_reserve(c, rl + 5);
	uint8_t *p = c->out + c->out_len;
	*p++ = 0x10;
	p = putvar(p, rl);
	p = putstr(p, "MQTT", 4);
	*p++ = (uint8_t)O.ver;
	*p++ = keep ? 0x00 : 0x02; /* clean session */
	p = put16(p, (uint16_t)O.keepalive);
	if (O.ver == 5) {
		*p++ = (uint8_t)props;
		if (props) {
			*p++ = 0x11; /* Session Expiry Interval */
			p = put16(p, (uint16_t)((uint32_t)O.sub_session >> 16));
			p = put16(p, (uint16_t)O.sub_session);
		}
	}
	p = putstr(p, id, (uint16_t)idl);
	c->out_len = (uint32_t)(p - c->out);
	mark_dirty(w, c);
}

static void expand(char *dst, size_t cap, const char *tmpl, uint32_t idx)
{
	size_t o = 0;
	for (const char *s = tmpl; *s && o + 12 < cap; s++) {
		if (s[0] == '%' && s[1] == 'i') {
			o += (size_t)snprintf(dst + o, cap - o, "%u", idx);
			s++;
		} else
			dst[o++] = *s;
	}
	dst[o] = 0;
}

/* Ballast for scale runs (--extra-subs): K more filters per subscriber,
 * "ballast/<subscriber>/<k>", EXTRA_PER_PACKET to a SUBSCRIBE, before the
 * real one. Only their SUBACKs come back. */
#define EXTRA_PER_PACKET 500

static void send_extra_subscribes(worker *w, conn *c)
{
	char f[64];
	for (int k0 = 0; k0 < O.extra_subs; k0 += EXTRA_PER_PACKET) {
		int n = O.extra_subs - k0 < EXTRA_PER_PACKET ? O.extra_subs - k0 : EXTRA_PER_PACKET;
		uint32_t rl = 2 + (O.ver == 5 ? 1 : 0);
		for (int k = k0; k < k0 + n; k++)
			rl += 2 + (uint32_t)snprintf(f, sizeof f, "ballast/%u/%d", c->idx, k) + 1;
		out_reserve(c, rl + 5);
		uint8_t *p = c->out + c->out_len;
		*p++ = 0x82;
		p = putvar(p, rl);
		p = put16(p, 2);
		if (O.ver == 5)
			*p++ = 0;
		for (int k = k0; k < k0 + n; k++) {
			int fl = snprintf(f, sizeof f, "ballast/%u/%d", c->idx, k);
			p = putstr(p, f, (uint16_t)fl);
			*p++ = 0;
		}
		c->out_len = (uint32_t)(p - c->out);
		c->subacks_due++;
	}
	mark_dirty(w, c);
}

static void send_subscribe(worker *w, conn *c)
{
	char f[512], f2[600];
	expand(f, sizeof f, O.filter, c->idx);
	if (O.scen == SC_SHARED && strncmp(f, "$share/", 7) != 0) {
		snprintf(f2, sizeof f2, "$share/%s/%s", O.group, f);
		strcpy(f, f2);
	}
	uint16_t fl = (uint16_t)strlen(f);
	uint32_t rl = 2 + (O.ver == 5 ? 1 : 0) + 2 + fl + 1;
	out_reserve(c, rl + 5);
	uint8_t *p = c->out + c->out_len;
	*p++ = 0x82;
	p = putvar(p, rl);
	p = put16(p, 1);
	if (O.ver == 5)
		*p++ = 0;
	p = putstr(p, f, fl);
	*p++ = (uint8_t)O.qos;
	c->out_len = (uint32_t)(p - c->out);
	mark_dirty(w, c);
}

static void send_ack(worker *w, conn *c, uint8_t type, uint16_t pid)
{
	out_reserve(c, 4);
	uint8_t *p = c->out + c->out_len;
	p[0] = type;
	p[1] = 2;
	put16(p + 2, pid);
	c->out_len += 4;
	mark_dirty(w, c);
}

static void send_publish(worker *w, conn *c, uint64_t ts, uint64_t now)
{
	char tbuf[64];
	const char *topic = c->topic;
	uint16_t tl = c->topic_len;
	if (O.scen == SC_SPREAD) {
		/* publisher j serves subscribers j, j+P, j+2P, ... */
		uint32_t target = c->idx + c->rot * (uint32_t)g_npubs;
		if (target >= (uint32_t)g_nsubs) {
			c->rot = 0;
			target = c->idx;
		}
		c->rot++;
		tl = (uint16_t)snprintf(tbuf, sizeof tbuf, "bench/%u", target);
		topic = tbuf;
	}
	uint32_t rl = 2 + tl + (O.qos ? 2 : 0) + (O.ver == 5 ? 1 : 0) + (uint32_t)O.size;
	out_reserve(c, rl + 5);
	uint8_t *p = c->out + c->out_len;
	*p++ = (uint8_t)(0x30 | (O.qos << 1));
	p = putvar(p, rl);
	p = putstr(p, topic, tl);
	if (O.qos) {
		uint16_t pid = c->next_pid;
		/* skip ids still in flight */
		for (int tries = 0; tries < 65536; tries++) {
			if (pid == 0)
				pid = 1;
			if (!(c->pid_map[pid >> 6] & (1ull << (pid & 63))))
				break;
			pid++;
		}
		c->pid_map[pid >> 6] |= 1ull << (pid & 63);
		c->next_pid = (uint16_t)(pid + 1);
		p = put16(p, pid);
		c->inflight++;
	}
	if (O.ver == 5)
		*p++ = 0;
	uint32_t seq = ++c->seq;
	memcpy(p, &ts, 8);
	memcpy(p + 8, &seq, 4);
	memcpy(p + 12, &c->idx, 4);
	if (O.size > 16)
		memset(p + 16, 'x', (size_t)O.size - 16);
	p += O.size;
	c->out_len = (uint32_t)(p - c->out);
	c->last_tx = now;
	mark_dirty(w, c);
	INC(w->sent, 1);
	if (ts >= g_t_win && ts < g_t_end)
		INC(w->sent_win, 1);
}

#define OUT_HWM (256 * 1024)

/* Publishes what is due. Returns the next time this publisher wants to run
 * (UINT64_MAX: waits for an ack or for the socket). */
static uint64_t pump(worker *w, conn *c, uint64_t now)
{
	if (c->state != S_READY || c->role != R_PUB || c->blocked)
		return UINT64_MAX;
	uint32_t win = O.qos ? (uint32_t)O.inflight : UINT32_MAX;
	if (c->interval) {
		int budget = 4096;
		while (c->next_sched <= now && c->next_sched < g_t_end && c->inflight < win &&
		       c->out_len - c->out_off < OUT_HWM && budget-- > 0) {
			send_publish(w, c, c->next_sched, now);
			c->next_sched += c->interval;
		}
		if (c->next_sched >= g_t_end)
			return UINT64_MAX;
		if (c->inflight >= win || c->out_len - c->out_off >= OUT_HWM)
			return UINT64_MAX;
		return c->next_sched;
	}
	if (now >= g_t_end)
		return UINT64_MAX;
	int budget = 1024;
	while (c->inflight < win && c->out_len - c->out_off < OUT_HWM && budget-- > 0)
		send_publish(w, c, now, now);
	if (c->inflight < win && c->out_len - c->out_off < OUT_HWM)
		return now; /* more to do right away */
	return UINT64_MAX;
}

static void conn_fail(worker *w, conn *c, const char *why)
{
	if (c->state == S_CLOSED)
		return;
	int ph = LOAD(g_phase);
	if (c->state != S_READY)
		INC(w->conn_fail, 1);
	else
		INC(w->closed, 1);
	if (ph < PH_STOP)
		werr(w, "connection %c%u: %s",
		     c->role == R_PUB   ? 'p'
		     : c->role == R_SUB ? 's'
		                        : 'c',
		     c->idx, why);
	if (c->fd >= 0) {
		epoll_ctl(w->ep, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
		c->fd = -1;
	}
	xport_free(c->x);
	c->x = NULL;
	c->state = S_CLOSED;
}

static void flush_conn(worker *w, conn *c)
{
	c->dirty = false;
	if (c->fd < 0 || c->state == S_CONNECTING || c->state == S_HANDSHAKE)
		return;
	while (c->out_off < c->out_len) {
		ssize_t n = c->x ? xport_send(c->x, c->out + c->out_off, c->out_len - c->out_off)
		                 : send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
		                        MSG_NOSIGNAL);
		if (n > 0) {
			c->out_off += (uint32_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		conn_fail(w, c, n < 0 ? strerror(errno) : "send returned 0");
		return;
	}
	if (c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	int held = c->x ? xport_flush(c->x) : 0; /* frames the transport still holds */
	if (held < 0) {
		conn_fail(w, c, "send failed");
		return;
	}
	bool want = c->out_off < c->out_len || held;
	c->blocked = want;
	if (want != c->want_out) {
		struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
		epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev);
		c->want_out = want;
	}
}

static void flush_dirty(worker *w)
{
	for (int i = 0; i < w->ndirty; i++)
		flush_conn(w, w->dirty[i]);
	w->ndirty = 0;
}

static void on_delivery(worker *w, conn *c, const uint8_t *pl, uint32_t len, uint64_t now)
{
	if (len < 16) {
		INC(w->bad_payload, 1);
		INC(w->recv, 1);
		return;
	}
	uint64_t ts;
	uint32_t seq, pub;
	memcpy(&ts, pl, 8);
	memcpy(&seq, pl + 8, 4);
	memcpy(&pub, pl + 12, 4);
	INC(w->recv, 1);
	if (now >= g_t_win && now < g_t_end)
		INC(w->recv_win, 1);
	if (O.mode == M_SCEN && (pub >= (uint32_t)g_npubs || seq == 0)) {
		INC(w->unknown_pub, 1);
		return;
	}
	bool dup = false;
	if (g_bitmaps && seq < g_bitmap_bits) {
		uint64_t bit = 1ull << (seq & 63);
		uint64_t old = __atomic_fetch_or(&g_bitmaps[pub][seq >> 6], bit, __ATOMIC_RELAXED);
		if (old & bit)
			dup = true;
	}
	if (c->last_seq) {
		uint32_t slot = O.mode == M_SCEN ? pub : (pub % 65536);
		uint32_t last = c->last_seq[slot];
		if (seq == last && !g_bitmaps)
			dup = true;
		else if (seq < last && !dup)
			INC(w->ooo, 1);
		if (seq > last)
			c->last_seq[slot] = seq;
	}
	if (dup) {
		INC(w->dup, 1);
		return;
	}
	if (ts >= g_t_win && ts < g_t_end && now >= ts)
		h_add(&w->lat, now - ts);
}

/* Parses whole packets from c->in. Returns false if the connection failed. */
static bool handle_input(worker *w, conn *c, uint64_t now)
{
	uint32_t pos = 0;
	while (pos + 2 <= c->in_len) {
		const uint8_t *p = c->in + pos;
		uint32_t avail = c->in_len - pos;
		uint32_t rl = 0, mul = 1, h = 1;
		for (;;) {
			if (h >= avail)
				goto more;
			uint8_t b = p[h++];
			rl += (uint32_t)(b & 0x7f) * mul;
			if (!(b & 0x80))
				break;
			mul *= 128;
			if (h > 4) {
				conn_fail(w, c, "malformed remaining length");
				return false;
			}
		}
		if (avail < h + rl) {
			if (h + rl > c->in_cap) {
				uint32_t cap = c->in_cap;
				while (cap < h + rl)
					cap *= 2;
				if (pos) {
					memmove(c->in, c->in + pos, c->in_len - pos);
					c->in_len -= pos;
					pos = 0;
				}
				c->in = realloc(c->in, cap);
				if (!c->in)
					die("out of memory");
				c->in_cap = cap;
			}
			goto more;
		}
		uint8_t type = p[0] >> 4;
		const uint8_t *b = p + h;
		switch (type) {
		case 2: /* CONNACK */
			if (rl < 2 || b[1] != 0) {
				char m[64];
				snprintf(m, sizeof m, "CONNACK refused (code 0x%02x)",
				         rl >= 2 ? b[1] : 0xff);
				conn_fail(w, c, m);
				return false;
			}
			if (c->state == S_WAIT_CONNACK) {
				INC(w->conn_ok, 1);
				h_add(&w->conn_lat, now - c->t_conn);
				if (c->role == R_SUB) {
					c->state = S_WAIT_SUBACK;
					send_extra_subscribes(w, c);
					send_subscribe(w, c);
					c->subacks_due++;
				} else {
					c->state = S_READY;
					INC(w->ready, 1);
				}
			}
			break;
		case 9: { /* SUBACK */
			uint32_t off = 2;
			if (O.ver == 5) {
				uint32_t pl = 0, m2 = 1;
				while (off < rl) {
					uint8_t x = b[off++];
					pl += (uint32_t)(x & 0x7f) * m2;
					m2 *= 128;
					if (!(x & 0x80))
						break;
				}
				off += pl;
			}
			if (off >= rl || b[off] >= 0x80) {
				char m[64];
				snprintf(m, sizeof m, "SUBACK refused (code 0x%02x)",
				         off < rl ? b[off] : 0xff);
				conn_fail(w, c, m);
				return false;
			}
			if (c->state == S_WAIT_SUBACK && --c->subacks_due == 0) {
				c->state = S_READY;
				INC(w->ready, 1);
			}
			break;
		}
		case 3: { /* PUBLISH */
			uint8_t qos = (p[0] >> 1) & 3;
			if (rl < 2)
				goto malformed;
			uint32_t tl = (uint32_t)b[0] << 8 | b[1];
			uint32_t off = 2 + tl;
			uint16_t pid = 0;
			if (qos) {
				if (off + 2 > rl)
					goto malformed;
				pid = (uint16_t)(b[off] << 8 | b[off + 1]);
				off += 2;
			}
			if (O.ver == 5) {
				uint32_t pl = 0, m2 = 1;
				while (off < rl) {
					uint8_t x = b[off++];
					pl += (uint32_t)(x & 0x7f) * m2;
					m2 *= 128;
					if (!(x & 0x80))
						break;
				}
				off += pl;
			}
			if (off > rl)
				goto malformed;
			on_delivery(w, c, b + off, rl - off, now);
			if (qos == 1)
				send_ack(w, c, 0x40, pid);
			else if (qos == 2)
				send_ack(w, c, 0x50, pid);
			break;
		}
		case 4: /* PUBACK */
		case 7: /* PUBCOMP */
		case 5: /* PUBREC */ {
			if (rl < 2)
				goto malformed;
			uint16_t pid = (uint16_t)(b[0] << 8 | b[1]);
			if (type == 5) {
				if (rl >= 3 && b[2] >= 0x80) {
					werr(w, "PUBREC with reason 0x%02x", b[2]);
					break;
				}
				send_ack(w, c, 0x62, pid);
				break;
			}
			if (rl >= 3 && b[2] >= 0x80)
				werr(w, "%s with reason 0x%02x", type == 4 ? "PUBACK" : "PUBCOMP",
				     b[2]);
			if (c->pid_map && (c->pid_map[pid >> 6] & (1ull << (pid & 63)))) {
				c->pid_map[pid >> 6] &= ~(1ull << (pid & 63));
				c->inflight--;
				INC(w->acked, 1);
			} else
				werr(w, "unexpected ack for packet id %u", pid);
			break;
		}
		case 6: /* PUBREL */
			if (rl < 2)
				goto malformed;
			send_ack(w, c, 0x70, (uint16_t)(b[0] << 8 | b[1]));
			break;
		case 13: /* PINGRESP */
			break;
		case 14: /* DISCONNECT */
			conn_fail(w, c, "DISCONNECT from broker");
			return false;
		default:
			goto malformed;
		}
		pos += h + rl;
		continue;
	malformed:
		conn_fail(w, c, "malformed packet from broker");
		return false;
	}
more:
	if (pos) {
		memmove(c->in, c->in + pos, c->in_len - pos);
		c->in_len -= pos;
	}
	return true;
}

static void on_readable(worker *w, conn *c, uint64_t now)
{
	for (int rounds = 0; rounds < 8; rounds++) {
		if (c->in_len == c->in_cap) {
			c->in_cap *= 2;
			c->in = realloc(c->in, c->in_cap);
			if (!c->in)
				die("out of memory");
		}
		ssize_t n = c->x ? xport_recv(c->x, c->in + c->in_len, c->in_cap - c->in_len)
		                 : recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
		if (n > 0) {
			c->in_len += (uint32_t)n;
			if (!handle_input(w, c, now))
				return;
			/* A transport may hold decoded input the socket will not
			 * signal: read it until EAGAIN. */
			if (c->x)
				rounds = 0;
			else if ((size_t)n < c->in_cap - c->in_len + (size_t)n)
				break; /* short read: socket drained */
			continue;
		}
		if (n == 0) {
			conn_fail(w, c, "connection closed by broker");
			return;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return;
		conn_fail(w, c, strerror(errno));
		return;
	}
}

static void start_connect(worker *w, conn *c, uint64_t now)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		c->state = S_CLOSED;
		INC(w->conn_fail, 1);
		werr(w, "socket: %s (raise the fd limit: ulimit -n)", strerror(errno));
		return;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	c->fd = fd;
	c->t_conn = now;
	c->in_cap = 16384;
	c->in = malloc(c->in_cap);
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
	int r = connect(fd, (struct sockaddr *)&O.addr, sizeof O.addr);
	if (r < 0 && errno != EINPROGRESS) {
		c->state = S_CONNECTING;
		conn_fail(w, c, strerror(errno));
		return;
	}
	epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev);
	c->want_out = true;
	c->state = S_CONNECTING;
}

/* TLS handshake and WebSocket upgrade, then CONNECT. */
static void step_handshake(worker *w, conn *c)
{
	bool want_out;
	const char *why = NULL;
	int r = xport_handshake(c->x, &want_out, &why);
	if (r < 0) {
		conn_fail(w, c, why);
		return;
	}
	if (r == 0) {
		if (want_out != c->want_out) {
			struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0),
			                         .data.ptr = c};
			epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev);
			c->want_out = want_out;
		}
		return;
	}
	c->state = S_WAIT_CONNACK;
	send_connect(w, c);
}

static void on_connected(worker *w, conn *c)
{
	int err = 0;
	socklen_t l = sizeof err;
	getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
	if (err) {
		conn_fail(w, c, strerror(err));
		return;
	}
	if (O.transport != XP_TCP) {
		if (!(c->x = xport_new(w->xctx, c->fd))) {
			conn_fail(w, c, "out of memory");
			return;
		}
		c->state = S_HANDSHAKE;
		step_handshake(w, c);
		return;
	}
	c->state = S_WAIT_CONNACK;
	send_connect(w, c);
}

static void set_affinity(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (pthread_setaffinity_np(pthread_self(), sizeof set, &set) != 0)
		fprintf(stderr, "mqb-bench: cannot pin to CPU %d\n", cpu);
}

static void *worker_main(void *arg)
{
	worker *w = arg;
	if (w->cpu >= 0)
		set_affinity(w->cpu);
	/* open-loop sends are due at exact times and latency counts from them:
	 * the default 50 us timer slack would add itself to every figure */
	prctl(PR_SET_TIMERSLACK, 1UL);
	const char *why = NULL;
	if (O.transport != XP_TCP && !(w->xctx = xport_ctx_new(O.transport, O.ws_path, &why))) {
		werr(w, "%s", why);
		return NULL;
	}
	struct epoll_event evs[512];
	uint64_t t0 = now_ns();
	double per_thread_rate = O.conn_rate / O.threads;
	uint64_t conn_gap = per_thread_rate > 0 ? (uint64_t)(1e9 / per_thread_rate) : 0;
	uint64_t last_ping_check = t0;
	for (;;) {
		int ph = LOAD(g_phase);
		if (ph == PH_STOP)
			break;
		uint64_t now = now_ns();
		uint64_t wake = now + 50000000ull; /* at most 50 ms asleep */
		/* connection pacing */
		while (w->next_connect < w->nconns) {
			uint64_t due = t0 + conn_gap * (uint64_t)w->next_connect;
			if (due > now) {
				if (due < wake)
					wake = due;
				break;
			}
			start_connect(w, w->conns[w->next_connect++], now);
		}
		/* keepalive */
		if (O.keepalive > 0 && now - last_ping_check > 1000000000ull) {
			last_ping_check = now;
			uint64_t lim = (uint64_t)O.keepalive * 500000000ull;
			for (int i = 0; i < w->nconns; i++) {
				conn *c = w->conns[i];
				if (c->state == S_READY && now - c->last_tx > lim) {
					out_reserve(c, 2);
					c->out[c->out_len++] = 0xC0;
					c->out[c->out_len++] = 0;
					c->last_tx = now;
					mark_dirty(w, c);
				}
			}
		}
		if (ph == PH_RUN && now >= g_t_start) {
			if (g_tick && now < w->last_pump + g_tick) {
				/* open loop, high rate: publish in ticks so that several
				 * messages share a send(); the delay counts in the latency */
				if (w->last_pump + g_tick < wake)
					wake = w->last_pump + g_tick;
			} else {
				uint64_t first = UINT64_MAX;
				for (int i = 0; i < w->npubs; i++) {
					uint64_t nx = pump(w, w->pubs[i], now);
					if (nx < first)
						first = nx;
				}
				w->last_pump = now;
				if (g_tick && first != UINT64_MAX && first < now + g_tick)
					first = now + g_tick;
				if (first < wake)
					wake = first;
			}
		}
		flush_dirty(w);
		int timeout_ns = 0;
		now = now_ns();
		if (wake > now)
			timeout_ns = (int)(wake - now);
		struct timespec ts = {.tv_sec = timeout_ns / 1000000000,
		                      .tv_nsec = timeout_ns % 1000000000};
		int n = epoll_pwait2(w->ep, evs, 512, &ts, NULL);
		if (n < 0 && errno != EINTR) {
			werr(w, "epoll_pwait2: %s", strerror(errno));
			break;
		}
		now = now_ns();
		for (int i = 0; i < n; i++) {
			conn *c = evs[i].data.ptr;
			if (c->state == S_CLOSED)
				continue;
			if (c->state == S_CONNECTING) {
				if (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
					on_connected(w, c);
				continue;
			}
			if (c->state == S_HANDSHAKE) {
				step_handshake(w, c);
				continue;
			}
			if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
				on_readable(w, c, now);
			if (c->state == S_CLOSED)
				continue;
			if (evs[i].events & EPOLLOUT)
				mark_dirty(w, c);
		}
		/* publishers freed by acks or writable sockets publish again */
		flush_dirty(w);
	}
	return NULL;
}

/* --------------------------------------------------------------- main */

static void usage(void)
{
	printf("Usage: mqb-bench MODE [OPTIONS]\n"
	       "MODE: conn | pub | sub | jitter | --scenario fan-in|fan-out|p2p|shared|spread\n\n"
	       "  -H, --host ADDR        broker address, 127.0.0.0/8 only (default 127.0.0.1)\n"
	       "  -p, --port PORT        broker port (1883)\n"
	       "  -V, --version 4|5      MQTT 3.1.1 or 5 (4)\n"
	       "  -q, --qos 0|1|2        QoS of publishes and subscriptions (0)\n"
	       "  -s, --size BYTES       payload size, >= 16 (64)\n"
	       "  -c, --count N          connections (conn/pub/sub) or publishers (scenario) (1)\n"
	       "  -n, --subs N           subscribers in a scenario (fan-in 1, fan-out 1, p2p = "
	       "-c,\n"
	       "                         shared 10, spread 100)\n"
	       "  -r, --rate R           msg/s per publisher, open loop; 0 = closed loop (0)\n"
	       "      --total-rate R     msg/s over all publishers, open loop\n"
	       "  -R, --conn-rate R      new connections per second (1000)\n"
	       "  -t, --topic T          publish topic, %%i = publisher index (bench/%%i)\n"
	       "  -T, --filter F         subscription filter, %%i = subscriber index\n"
	       "      --group G          shared subscription group (g)\n"
	       "  -d, --duration S       measured window in seconds (10); conn mode: hold time\n"
	       "      --warmup S         warm-up before the window (1)\n"
	       "      --drain S          longest wait for outstanding messages at the end (5)\n"
	       "      --inflight N       QoS>0 in-flight window per publisher (64)\n"
	       "      --threads N        tool threads (1)\n"
	       "      --cpu LIST         pin the threads to CPUs, e.g. 1 or 0-1,3\n"
	       "  -k, --keepalive S      MQTT keepalive (300)\n"
	       "      --ready-file F     create F once every connection is set up\n"
	       "      --setup-timeout S  give up if setup takes longer (default from -c/-R)\n"
	       "      --json             print the results as one JSON object on stdout\n"
	       "      --quiet            no progress lines on stderr\n"
	       "      --id-prefix P      client id prefix (mqb-PID)\n"
	       "      --tick US          open-loop pacing granularity; default exact up to 50k "
	       "msg/s\n"
	       "                         per thread, else 2000 us\n"
	       "      --sub-session S    subscribers keep their sessions: clean session 0 (3.1.1)\n"
	       "                         or Session Expiry Interval S (5); persistence runs\n"
	       "      --extra-subs K     scale runs: every subscriber also subscribes K filters\n"
	       "                         that nothing is published to (ballast/<sub>/<k>)\n"
	       "      --transport T      tcp, tls, ws or wss (tcp); TLS does not verify the\n"
	       "                         broker's certificate\n"
	       "      --ws-path P        WebSocket path (/mqtt)\n");
}

static void parse_cpus(const char *s)
{
	char *dup = strdup(s), *save = NULL;
	for (char *tok = strtok_r(dup, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		int a, b;
		if (sscanf(tok, "%d-%d", &a, &b) == 2) {
		} else if (sscanf(tok, "%d", &a) == 1)
			b = a;
		else
			die("bad --cpu list '%s'", s);
		for (int i = a; i <= b && O.ncpus < 256; i++)
			O.cpus[O.ncpus++] = i;
	}
	free(dup);
}

typedef struct totals {
	uint64_t sent, sent_win, acked, recv, recv_win, dup, ooo, conn_ok, conn_fail, ready, errors,
	        closed, unknown_pub, bad_payload;
} totals;

static void sum_totals(totals *t)
{
	memset(t, 0, sizeof *t);
	for (int i = 0; i < O.threads; i++) {
		worker *w = &W[i];
		t->sent += LOAD(w->sent);
		t->sent_win += LOAD(w->sent_win);
		t->acked += LOAD(w->acked);
		t->recv += LOAD(w->recv);
		t->recv_win += LOAD(w->recv_win);
		t->dup += LOAD(w->dup);
		t->ooo += LOAD(w->ooo);
		t->conn_ok += LOAD(w->conn_ok);
		t->conn_fail += LOAD(w->conn_fail);
		t->ready += LOAD(w->ready);
		t->errors += LOAD(w->errors);
		t->closed += LOAD(w->closed);
		t->unknown_pub += LOAD(w->unknown_pub);
		t->bad_payload += LOAD(w->bad_payload);
	}
}

static double cpu_s(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	       ru.ru_stime.tv_usec / 1e6;
}

static void sleep_until(uint64_t t)
{
	struct timespec ts = {.tv_sec = (time_t)(t / 1000000000ull),
	                      .tv_nsec = (long)(t % 1000000000ull)};
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		if (g_stop_signal)
			return;
}

static const char *phase_name(int ph, uint64_t now)
{
	if (ph == PH_SETUP)
		return "setup";
	if (ph == PH_RUN)
		return now < g_t_win ? "warmup" : "run";
	if (ph == PH_DRAIN)
		return "drain";
	return "stop";
}

static int first_error(char *buf, size_t cap)
{
	for (int i = 0; i < O.threads; i++)
		if (W[i].errmsg[0]) {
			snprintf(buf, cap, "%s", W[i].errmsg);
			return 1;
		}
	buf[0] = 0;
	return 0;
}

static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", *s);
		else
			putchar(*s);
	}
	putchar('"');
}

/* `jitter`: what the machine itself adds to latency figures. Sleeps 100 us at
 * a time for the duration (on --cpu if given) and reports how late it woke:
 * the floor under any open-loop latency measured on these CPUs. */
static int jitter_probe(void)
{
	if (O.ncpus)
		set_affinity(O.cpus[0]);
	prctl(PR_SET_TIMERSLACK, 1UL);
	hist h;
	memset(&h, 0, sizeof h);
	uint64_t t0 = now_ns(), end = t0 + (uint64_t)(O.duration * 1e9);
	uint64_t stalls = 0, n = 0;
	for (uint64_t t = t0; t < end; n++) {
		struct timespec ts = {0, 100000};
		nanosleep(&ts, NULL);
		uint64_t t2 = now_ns();
		uint64_t late = t2 - t > 100000 ? t2 - t - 100000 : 0;
		h_add(&h, late);
		if (late > 1000000)
			stalls++;
		t = t2;
	}
	double secs = (now_ns() - t0) / 1e9;
	if (O.json)
		printf("{\"jitter_us\":{\"count\":%" PRIu64 ",\"p50\":%.1f,\"p99\":%.1f,"
		       "\"p999\":%.1f,\"max\":%.1f},\"stalls_over_1ms_per_s\":%.2f}\n",
		       n, h_pct(&h, 50) / 1e3, h_pct(&h, 99) / 1e3, h_pct(&h, 99.9) / 1e3,
		       h.max / 1e3, stalls / secs);
	else
		printf("wake-up lateness over %.1f s (%" PRIu64 " sleeps of 100 us): p50 %.1f us "
		       "p99 %.1f us p99.9 %.1f us max %.1f us; stalls > 1 ms: %.2f/s\n",
		       secs, n, h_pct(&h, 50) / 1e3, h_pct(&h, 99) / 1e3, h_pct(&h, 99.9) / 1e3,
		       h.max / 1e3, stalls / secs);
	return 0;
}

int main(int argc, char **argv)
{
	static struct option lo[] = {{"host", 1, 0, 'H'},
	                             {"port", 1, 0, 'p'},
	                             {"version", 1, 0, 'V'},
	                             {"qos", 1, 0, 'q'},
	                             {"size", 1, 0, 's'},
	                             {"count", 1, 0, 'c'},
	                             {"subs", 1, 0, 'n'},
	                             {"rate", 1, 0, 'r'},
	                             {"total-rate", 1, 0, 1001},
	                             {"conn-rate", 1, 0, 'R'},
	                             {"topic", 1, 0, 't'},
	                             {"filter", 1, 0, 'T'},
	                             {"group", 1, 0, 1002},
	                             {"duration", 1, 0, 'd'},
	                             {"warmup", 1, 0, 1003},
	                             {"drain", 1, 0, 1004},
	                             {"inflight", 1, 0, 1005},
	                             {"threads", 1, 0, 1006},
	                             {"cpu", 1, 0, 1007},
	                             {"json", 0, 0, 1008},
	                             {"quiet", 0, 0, 1009},
	                             {"keepalive", 1, 0, 'k'},
	                             {"ready-file", 1, 0, 1010},
	                             {"scenario", 1, 0, 1011},
	                             {"id-prefix", 1, 0, 1012},
	                             {"setup-timeout", 1, 0, 1013},
	                             {"help", 0, 0, 'h'},
	                             {"tick", 1, 0, 1014},
	                             {"extra-subs", 1, 0, 1015},
	                             {"transport", 1, 0, 1016},
	                             {"ws-path", 1, 0, 1017},
	                             {"sub-session", 1, 0, 1018},
	                             {0, 0, 0, 0}};
	O.mode = -1;
	int ch;
	while ((ch = getopt_long(argc, argv, "H:p:V:q:s:c:n:r:R:t:T:d:k:h", lo, NULL)) != -1) {
		switch (ch) {
		case 'H':
			snprintf(O.host, sizeof O.host, "%s", optarg);
			break;
		case 'p':
			O.port = atoi(optarg);
			break;
		case 'V':
			O.ver = atoi(optarg);
			break;
		case 'q':
			O.qos = atoi(optarg);
			break;
		case 's':
			O.size = atoi(optarg);
			break;
		case 'c':
			O.count = atoi(optarg);
			break;
		case 'n':
			O.subs = atoi(optarg);
			break;
		case 'r':
			O.rate = atof(optarg);
			break;
		case 1001:
			O.total_rate = atof(optarg);
			break;
		case 'R':
			O.conn_rate = atof(optarg);
			break;
		case 't':
			O.topic = optarg;
			break;
		case 'T':
			O.filter = optarg;
			break;
		case 1002:
			O.group = optarg;
			break;
		case 'd':
			O.duration = atof(optarg);
			break;
		case 1003:
			O.warmup = atof(optarg);
			break;
		case 1004:
			O.drain = atof(optarg);
			break;
		case 1005:
			O.inflight = atoi(optarg);
			break;
		case 1006:
			O.threads = atoi(optarg);
			break;
		case 1007:
			parse_cpus(optarg);
			break;
		case 1008:
			O.json = true;
			break;
		case 1009:
			O.quiet = true;
			break;
		case 'k':
			O.keepalive = atoi(optarg);
			break;
		case 1010:
			O.ready_file = optarg;
			break;
		case 1011:
			O.mode = M_SCEN;
			for (int i = 1; i <= SC_SPREAD; i++)
				if (!strcmp(optarg, sc_names[i]))
					O.scen = i;
			if (!O.scen)
				die("unknown scenario '%s' (fan-in, fan-out, p2p, shared, spread)",
				    optarg);
			break;
		case 1012:
			O.prefix = optarg;
			break;
		case 1013:
			O.setup_timeout = atof(optarg);
			break;
		case 1014:
			O.tick_us = atof(optarg);
			break;
		case 1015:
			O.extra_subs = atoi(optarg);
			if (O.extra_subs < 0)
				die("--extra-subs must be >= 0");
			break;
		case 1016: {
			static const char *const names[] = {"tcp", "tls", "ws", "wss"};
			O.transport = -1;
			for (int i = 0; i < 4; i++)
				if (strcmp(optarg, names[i]) == 0)
					O.transport = i;
			if (O.transport < 0)
				die("--transport: tcp, tls, ws or wss");
			break;
		}
		case 1017:
			O.ws_path = optarg;
			break;
		case 1018:
			O.sub_session = atol(optarg);
			if (O.sub_session < 0 || O.sub_session > 4294967295L)
				die("--sub-session: 0..4294967295 seconds");
			break;
		case 'h':
			usage();
			return 0;
		default:
			usage();
			return 2;
		}
	}
	for (int i = optind; i < argc; i++) {
		if (!strcmp(argv[i], "conn"))
			O.mode = M_CONN;
		else if (!strcmp(argv[i], "pub"))
			O.mode = M_PUB;
		else if (!strcmp(argv[i], "sub"))
			O.mode = M_SUB;
		else if (!strcmp(argv[i], "jitter"))
			return jitter_probe();
		else
			die("unknown argument '%s' (try --help)", argv[i]);
	}
	if (O.mode < 0) {
		usage();
		return 2;
	}
	/* validation */
	if (!strcmp(O.host, "localhost"))
		strcpy(O.host, "127.0.0.1");
	memset(&O.addr, 0, sizeof O.addr);
	O.addr.sin_family = AF_INET;
	if (inet_pton(AF_INET, O.host, &O.addr.sin_addr) != 1)
		die("host '%s' is not a numeric IPv4 address (only 127.0.0.0/8 is allowed)",
		    O.host);
	if ((ntohl(O.addr.sin_addr.s_addr) >> 24) != 127)
		die("refusing target %s: only loopback addresses (127.0.0.0/8) are allowed",
		    O.host);
	if (O.port <= 0 || O.port > 65535)
		die("bad port %d", O.port);
	O.addr.sin_port = htons((uint16_t)O.port);
	if (O.ver != 4 && O.ver != 5)
		die("-V must be 4 (MQTT 3.1.1) or 5");
	if (O.qos < 0 || O.qos > 2)
		die("-q must be 0, 1 or 2");
	if (O.size < 16 || O.size > 1 << 20)
		die("-s must be between 16 and 1048576");
	if (O.count < 0 || O.threads < 1 || O.threads > 256 || O.inflight < 1 || O.inflight > 65535)
		die("bad -c, --threads or --inflight");
	if (O.duration <= 0 || O.warmup < 0 || O.drain < 0 || O.duration > 86400)
		die("bad -d, --warmup or --drain");
	if (O.conn_rate <= 0)
		die("-R must be positive");
	char pfx[32];
	if (!O.prefix) {
		snprintf(pfx, sizeof pfx, "mqb-%d", (int)getpid());
		O.prefix = pfx;
	}

	/* roles */
	int npub = 0, nsub = 0, nidle = 0;
	switch (O.mode) {
	case M_CONN:
		nidle = O.count;
		break;
	case M_PUB:
		npub = O.count;
		break;
	case M_SUB:
		nsub = O.count;
		break;
	case M_SCEN:
		npub = O.count;
		switch (O.scen) {
		case SC_FANIN:
			nsub = O.subs < 0 ? 1 : O.subs;
			if (!O.topic)
				O.topic = "bench/%i";
			if (!O.filter)
				O.filter = "bench/#";
			g_fanout = nsub;
			break;
		case SC_FANOUT:
			nsub = O.subs < 0 ? 1 : O.subs;
			if (!O.topic)
				O.topic = "bench/t";
			if (!O.filter)
				O.filter = "bench/t";
			g_fanout = nsub;
			break;
		case SC_P2P:
			nsub = O.subs < 0 ? npub : O.subs;
			if (nsub != npub)
				die("p2p needs as many subscribers as publishers");
			if (!O.topic)
				O.topic = "bench/%i";
			if (!O.filter)
				O.filter = "bench/%i";
			g_fanout = 1;
			break;
		case SC_SHARED:
			nsub = O.subs < 0 ? 10 : O.subs;
			if (!O.topic)
				O.topic = "bench/%i";
			if (!O.filter)
				O.filter = "bench/#";
			g_fanout = nsub > 0 ? 1 : 0;
			break;
		case SC_SPREAD:
			nsub = O.subs < 0 ? 100 : O.subs;
			if (npub > nsub)
				die("spread needs at least as many subscribers as publishers");
			O.topic = "bench/(spread)";
			O.filter = "bench/%i";
			g_fanout = 1;
			break;
		}
		break;
	}
	if (!O.topic)
		O.topic = "bench/%i";
	if (!O.filter)
		O.filter = "bench/#";
	if (O.total_rate > 0) {
		if (npub == 0)
			die("--total-rate needs publishers");
		O.rate = O.total_rate / npub;
	}
	if (O.scen == SC_SPREAD && O.rate <= 0)
		die("spread needs --rate or --total-rate");
	/* Open-loop pacing: exact (one wake-up per due message) up to 50k msg/s
	 * per thread; above, ticks of 2 ms, so that a send() carries all that a
	 * publisher owes for the tick — the tool would otherwise spend a syscall
	 * on every few messages and saturate before the broker. The tick counts
	 * in the latency (messages are stamped with their scheduled time). */
	if (O.rate > 0) {
		double per_thread = O.rate * npub / O.threads;
		if (O.tick_us >= 0)
			g_tick = (uint64_t)(O.tick_us * 1000);
		else if (per_thread > 50000)
			g_tick = 2000000;
	}
	g_npubs = npub;
	g_nsubs = nsub;
	g_nconns = npub + nsub + nidle;
	if (g_nconns == 0)
		die("no connections");
	if (O.setup_timeout <= 0)
		O.setup_timeout = g_nconns / O.conn_rate * 2 + 15;

	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur < (rlim_t)g_nconns + 64) {
		rlim_t want = (rlim_t)g_nconns + 64;
		if (want > rl.rlim_max)
			want = rl.rlim_max;
		rl.rlim_cur = want;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
		if (rl.rlim_cur < (rlim_t)g_nconns + 16)
			die("%d connections need more file descriptors than the limit %llu (ulimit "
			    "-n)",
			    g_nconns, (unsigned long long)rl.rlim_cur);
	}

	signal(SIGPIPE, SIG_IGN);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);

	/* dedup bitmaps for scenarios where each message is delivered once */
	if (O.mode == M_SCEN && g_fanout == 1 && npub > 0) {
		g_bitmap_bits = 1ull << 27;
		g_bitmaps = xcalloc((size_t)npub, sizeof *g_bitmaps);
		for (int i = 0; i < npub; i++) {
			void *m = mmap(NULL, g_bitmap_bits / 8, PROT_READ | PROT_WRITE,
			               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
			if (m == MAP_FAILED)
				die("mmap: %s", strerror(errno));
			g_bitmaps[i] = m;
		}
	}

	/* workers and connections */
	W = xcalloc((size_t)O.threads, sizeof *W);
	for (int i = 0; i < O.threads; i++) {
		W[i].id = i;
		W[i].ep = epoll_create1(EPOLL_CLOEXEC);
		if (W[i].ep < 0)
			die("epoll_create1: %s", strerror(errno));
		W[i].conns = xcalloc((size_t)g_nconns / O.threads + 2, sizeof(conn *));
		W[i].pubs = xcalloc((size_t)npub / O.threads + 2, sizeof(conn *));
		W[i].dirty = xcalloc((size_t)g_nconns / O.threads + 2, sizeof(conn *));
		W[i].cpu = O.ncpus ? O.cpus[i % O.ncpus] : -1;
	}
	conn *all = xcalloc((size_t)g_nconns, sizeof *all);
	int k = 0;
	/* subscribers first so they are subscribed before publishers connect */
	for (int i = 0; i < nsub; i++, k++) {
		conn *c = &all[k];
		c->role = R_SUB;
		c->idx = (uint32_t)i;
		c->last_seq = xcalloc(O.mode == M_SCEN ? (size_t)(npub ? npub : 1) : 65536,
		                      sizeof(uint32_t));
	}
	for (int i = 0; i < nidle; i++, k++) {
		all[k].role = R_IDLE;
		all[k].idx = (uint32_t)i;
	}
	for (int i = 0; i < npub; i++, k++) {
		conn *c = &all[k];
		c->role = R_PUB;
		c->idx = (uint32_t)i;
		char t[512];
		expand(t, sizeof t, O.topic, (uint32_t)i);
		c->topic = strdup(t);
		c->topic_len = (uint16_t)strlen(t);
		if (O.qos)
			c->pid_map = xcalloc(1024, sizeof(uint64_t));
		c->next_pid = 1;
		if (O.rate > 0)
			c->interval = (uint64_t)(1e9 / O.rate);
	}
	for (int i = 0; i < g_nconns; i++) {
		worker *w = &W[i % O.threads];
		all[i].fd = -1;
		w->conns[w->nconns++] = &all[i];
		if (all[i].role == R_PUB)
			w->pubs[w->npubs++] = &all[i];
	}

	uint64_t t_begin = now_ns();
	for (int i = 0; i < O.threads; i++)
		if (pthread_create(&W[i].th, NULL, worker_main, &W[i]) != 0)
			die("pthread_create failed");

	/* setup: wait until every connection is ready */
	totals t;
	char err[256];
	int rc = 0;
	uint64_t next_prog = t_begin + 1000000000ull;
	uint64_t setup_deadline = t_begin + (uint64_t)(O.setup_timeout * 1e9);
	for (;;) {
		sum_totals(&t);
		uint64_t now = now_ns();
		if (t.ready == (uint64_t)g_nconns)
			break;
		if (t.conn_fail || t.closed || g_stop_signal || now > setup_deadline) {
			first_error(err, sizeof err);
			fprintf(stderr,
			        "mqb-bench: setup failed: %" PRIu64
			        "/%d connections ready, %" PRIu64 " failed%s%s\n",
			        t.ready, g_nconns, t.conn_fail,
			        err[0] ? ": " : (now > setup_deadline ? ": timeout" : ""), err);
			rc = 1;
			break;
		}
		if (now >= next_prog) {
			if (!O.quiet)
				fprintf(stderr,
				        "[%5.1fs] setup   conns %" PRIu64 "/%d ready, %" PRIu64
				        " connected\n",
				        (now - t_begin) / 1e9, t.ready, g_nconns, t.conn_ok);
			next_prog += 1000000000ull;
		}
		usleep(2000);
	}
	uint64_t t_ready = now_ns();
	double setup_s = (t_ready - t_begin) / 1e9;
	if (!rc && O.ready_file) {
		FILE *f = fopen(O.ready_file, "w");
		if (f) {
			fprintf(f, "%d\n", g_nconns);
			fclose(f);
		}
	}
	double cpu0 = 0, cpu1 = 0;
	uint64_t tw0 = 0, tw1 = 0;
	uint64_t drain_ns = 0;
	bool drain_stalled = false;
	totals tw_start;
	memset(&tw_start, 0, sizeof tw_start);
	if (!rc) {
		uint64_t start = now_ns() + 1000000ull;
		/* spread the publishers' first sends over one interval */
		if (O.rate > 0)
			for (int i = 0; i < npub; i++) {
				conn *c = &all[nsub + nidle + i];
				c->next_sched = start + c->interval * (uint64_t)i /
				                                (uint64_t)(npub ? npub : 1);
			}
		g_t_start = start;
		g_t_win = O.mode == M_CONN ? start : start + (uint64_t)(O.warmup * 1e9);
		g_t_end = g_t_win + (uint64_t)(O.duration * 1e9);
		__atomic_store_n(&g_phase, PH_RUN, __ATOMIC_SEQ_CST);
		bool in_win = false;
		uint64_t last_sent = 0, last_recv = 0, last_t = start;
		next_prog = start + 1000000000ull;
		for (;;) {
			uint64_t now = now_ns();
			if (!in_win && now >= g_t_win) {
				cpu0 = cpu_s();
				tw0 = now;
				in_win = true;
			}
			if (now >= g_t_end) {
				cpu1 = cpu_s();
				tw1 = now;
				break;
			}
			if (g_stop_signal) {
				rc = 1;
				cpu1 = cpu_s();
				tw1 = now;
				break;
			}
			if (now >= next_prog) {
				sum_totals(&t);
				double dt = (now - last_t) / 1e9;
				if (!O.quiet)
					fprintf(stderr,
					        "[%5.1fs] %-7s sent %" PRIu64
					        " (%.0f/s) recv %" PRIu64 " (%.0f/s) conns %" PRIu64
					        " errors %" PRIu64 " cpu %.0f%%\n",
					        (now - t_begin) / 1e9, phase_name(PH_RUN, now),
					        t.sent, (t.sent - last_sent) / dt, t.recv,
					        (t.recv - last_recv) / dt, t.ready - t.closed,
					        t.errors,
					        in_win ? 100.0 * (cpu_s() - cpu0) /
					                         ((now - tw0) / 1e9)
					               : 0.0);
				last_sent = t.sent;
				last_recv = t.recv;
				last_t = now;
				next_prog += 1000000000ull;
			}
			uint64_t nx = next_prog;
			if (!in_win && g_t_win < nx)
				nx = g_t_win;
			if (g_t_end < nx)
				nx = g_t_end;
			sleep_until(nx);
		}
		/* drain */
		__atomic_store_n(&g_phase, PH_DRAIN, __ATOMIC_SEQ_CST);
		uint64_t d0 = now_ns(), dl = d0 + (uint64_t)(O.drain * 1e9);
		uint64_t last_change = d0, last_progress = ~0ull;
		for (;;) {
			sum_totals(&t);
			if (t.recv + t.acked != last_progress) {
				last_progress = t.recv + t.acked;
				last_change = now_ns();
			}
			bool done = true;
			if (O.qos && npub && t.acked < t.sent)
				done = false;
			if (g_fanout && t.recv - t.dup < t.sent * (uint64_t)g_fanout)
				done = false;
			if (t.ready - t.closed == 0)
				done = true;
			uint64_t now = now_ns();
			/* nothing arrived for 3 s: the rest is not coming */
			if (!done && now - last_change > 3000000000ull)
				drain_stalled = true;
			if (done || drain_stalled || now >= dl || g_stop_signal) {
				drain_ns = now - d0;
				break;
			}
			usleep(1000);
		}
	}
	__atomic_store_n(&g_phase, PH_STOP, __ATOMIC_SEQ_CST);
	for (int i = 0; i < O.threads; i++)
		pthread_join(W[i].th, NULL);
	/* close: abortive, to leave no TIME_WAIT behind */
	for (int i = 0; i < g_nconns; i++)
		if (all[i].fd >= 0) {
			struct linger lg = {1, 0};
			setsockopt(all[i].fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
			close(all[i].fd);
		}

	sum_totals(&t);
	hist lat, clat;
	memset(&lat, 0, sizeof lat);
	memset(&clat, 0, sizeof clat);
	for (int i = 0; i < O.threads; i++) {
		h_merge(&lat, &W[i].lat);
		h_merge(&clat, &W[i].conn_lat);
	}
	double win_s = tw1 > tw0 ? (tw1 - tw0) / 1e9 : O.duration;
	uint64_t expected = g_fanout ? t.sent * (uint64_t)g_fanout : 0;
	uint64_t uniq = t.recv - t.dup;
	uint64_t lost = 0, extra = 0;
	if (g_fanout) {
		if (uniq < expected)
			lost = expected - uniq;
		else
			extra = uniq - expected;
	}
	double cpu_pct = win_s > 0 ? 100.0 * (cpu1 - cpu0) / win_s : 0;
	uint64_t unacked = O.qos && npub ? t.sent - t.acked : 0;
	first_error(err, sizeof err);
	if (t.conn_fail || t.closed || t.errors)
		rc = rc ? rc : 1;
	double rate_in = t.sent_win / win_s, rate_out = t.recv_win / win_s;

	if (O.json) {
		printf("{\"tool\":\"mqb-bench\",\"version\":\"" VERSION
		       "\",\"mode\":\"%s\",\"scenario\":\"%s\","
		       "\"mqtt\":%d,\"qos\":%d,\"size\":%d,\"publishers\":%d,\"subscribers\":%d,"
		       "\"idle\":%d,"
		       "\"threads\":%d,\"tick_us\":%.1f,\"rate_per_pub\":%.3f,\"inflight\":%d,"
		       "\"duration_s\":%.3f,\"warmup_s\":%.3f,"
		       "\"window_s\":%.3f,\"setup_s\":%.3f,\"drain_s\":%.3f,\"drain_stalled\":%s,",
		       mode_names[O.mode], sc_names[O.scen], O.ver == 4 ? 311 : 5, O.qos, O.size,
		       npub, nsub, nidle, O.threads, g_tick / 1e3, O.rate, O.inflight, O.duration,
		       O.warmup, win_s, setup_s, drain_ns / 1e9, drain_stalled ? "true" : "false");
		printf("\"connections\":{\"total\":%d,\"ok\":%" PRIu64 ",\"failed\":%" PRIu64
		       ",\"closed\":%" PRIu64
		       ",\"connack_us\":{\"p50\":%.1f,\"p99\":%.1f,\"max\":%.1f}},",
		       g_nconns, t.conn_ok, t.conn_fail, t.closed, h_pct(&clat, 50) / 1e3,
		       h_pct(&clat, 99) / 1e3, clat.max / 1e3);
		printf("\"sent\":%" PRIu64 ",\"sent_window\":%" PRIu64 ",\"acked\":%" PRIu64
		       ",\"unacked\":%" PRIu64 ",\"fanout\":%d,\"expected\":%" PRIu64
		       ",\"received\":%" PRIu64 ",\"received_window\":%" PRIu64 ",\"lost\":%" PRIu64
		       ",\"duplicated\":%" PRIu64 ",\"extra\":%" PRIu64 ",\"out_of_order\":%" PRIu64
		       ",\"unknown\":%" PRIu64 ",",
		       t.sent, t.sent_win, t.acked, unacked, g_fanout, expected, t.recv, t.recv_win,
		       lost, t.dup, extra, t.ooo, t.unknown_pub + t.bad_payload);
		printf("\"rate_in\":%.1f,\"rate_out\":%.1f,", rate_in, rate_out);
		printf("\"latency_us\":{\"count\":%" PRIu64
		       ",\"min\":%.1f,\"mean\":%.1f,\"p50\":%.1f,\"p90\":%.1f,"
		       "\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f},",
		       lat.count, lat.min / 1e3, lat.count ? lat.sum / lat.count / 1e3 : 0.0,
		       h_pct(&lat, 50) / 1e3, h_pct(&lat, 90) / 1e3, h_pct(&lat, 99) / 1e3,
		       h_pct(&lat, 99.9) / 1e3, lat.max / 1e3);
		printf("\"tool_cpu\":{\"seconds\":%.3f,\"pct\":%.1f,\"saturated\":%s},",
		       cpu1 - cpu0, cpu_pct, cpu_pct > 90.0 * O.threads ? "true" : "false");
		printf("\"errors\":%" PRIu64 ",\"error\":", t.errors);
		json_str(err);
		printf(",\"ok\":%s}\n", rc == 0 ? "true" : "false");
	} else {
		printf("mqb-bench %s%s%s: %d pubs, %d subs, %d idle, QoS %d, %d B, MQTT %s, %d "
		       "thread(s)\n",
		       mode_names[O.mode], O.scen ? " " : "", O.scen ? sc_names[O.scen] : "", npub,
		       nsub, nidle, O.qos, O.size, O.ver == 4 ? "3.1.1" : "5", O.threads);
		printf("  connections: %" PRIu64 " ok, %" PRIu64 " failed, %" PRIu64
		       " closed; setup %.2f s; CONNACK p50 %.0f us p99 %.0f us\n",
		       t.conn_ok, t.conn_fail, t.closed, setup_s, h_pct(&clat, 50) / 1e3,
		       h_pct(&clat, 99) / 1e3);
		if (npub || nsub) {
			printf("  window %.2f s: in %.0f msg/s, out %.0f msg/s\n", win_s, rate_in,
			       rate_out);
			printf("  sent %" PRIu64 " (acked %" PRIu64 "), received %" PRIu64
			       ", expected %" PRIu64 ", lost %" PRIu64 ", dup %" PRIu64
			       ", out-of-order %" PRIu64 ", extra %" PRIu64 "\n",
			       t.sent, t.acked, t.recv, expected, lost, t.dup, t.ooo, extra);
			printf("  latency us: p50 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  (%" PRIu64
			       " samples)\n",
			       h_pct(&lat, 50) / 1e3, h_pct(&lat, 99) / 1e3,
			       h_pct(&lat, 99.9) / 1e3, lat.max / 1e3, lat.count);
			printf("  drain %.2f s%s\n", drain_ns / 1e9,
			       drain_stalled ? " (stalled: nothing arrived for 3 s)" : "");
		}
		printf("  tool cpu: %.1f%% over the window (%d thread(s))%s\n", cpu_pct, O.threads,
		       cpu_pct > 90.0 * O.threads ? "  SATURATED: results may be tool-bound" : "");
		if (err[0])
			printf("  first error: %s (%" PRIu64 " errors)\n", err, t.errors);
	}
	return rc;
}
