/* A client's socket: reading into the worker's shared buffer, buffered
 * output flushed once per loop iteration, and the close path. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/core.h"
#include "net/tls.h"
#include "net/ws.h"

static void on_io(mqbi_loop *l, int fd, void *user, unsigned events);

/* ---- The worker's pool of client I/O buffers ------------------------------ */

static const uint32_t iobuf_size[2] = {MQBI_IOBUF_SMALL, MQBI_IOBUF_LARGE};
/* How many free buffers of each class a worker keeps (256 KiB + 1 MiB). */
static const unsigned iobuf_keep[2] = {512, 64};

/* A buffer of at least `need` bytes: a pooled one when a class fits. */
uint8_t *mqbi_iobuf_get(mqbi_worker *w, uint32_t need, uint32_t *cap)
{
	for (int k = 0; k < 2; k++) {
		if (need <= iobuf_size[k]) {
			*cap = iobuf_size[k];
			if (w->n_iobufs[k])
				return w->iobufs[k][--w->n_iobufs[k]];
			return mqbi_malloc(&w->broker->alloc, iobuf_size[k]);
		}
	}
	*cap = need;
	return mqbi_malloc(&w->broker->alloc, need);
}

void mqbi_iobuf_put(mqbi_worker *w, uint8_t *buf, uint32_t cap)
{
	if (!buf)
		return;
	for (int k = 0; k < 2; k++) {
		if (cap != iobuf_size[k] || w->n_iobufs[k] == iobuf_keep[k])
			continue;
		if (!w->iobufs[k]) {
			w->iobufs[k] =
			        mqbi_malloc(&w->broker->alloc, sizeof(uint8_t *) * iobuf_keep[k]);
			if (!w->iobufs[k])
				break;
		}
		w->iobufs[k][w->n_iobufs[k]++] = buf;
		return;
	}
	mqbi_free(&w->broker->alloc, buf);
}

/* Makes *buf hold at least `need` bytes, keeping its first `len`: moves up a
 * class, or beyond the classes by doubling. A connection's buffers hold at
 * most a few packets (output beyond that waits in the session's queue), so
 * their sizes fit 32 bits; a larger need is refused. */
static bool iobuf_ensure(mqbi_worker *w, uint8_t **buf, uint32_t *cap, uint32_t len, size_t need)
{
	if (need > UINT32_MAX)
		return false;
	if (*buf && need <= *cap)
		return true;
	if (!*buf) {
		*buf = mqbi_iobuf_get(w, (uint32_t)need, cap);
		return *buf != NULL;
	}
	uint32_t ncap;
	uint8_t *nb;
	if (need <= MQBI_IOBUF_LARGE) {
		nb = mqbi_iobuf_get(w, (uint32_t)need, &ncap);
		if (!nb)
			return false;
		memcpy(nb, *buf, len);
		mqbi_iobuf_put(w, *buf, *cap);
	} else {
		ncap = *cap <= UINT32_MAX / 2 && *cap * 2u > need ? *cap * 2u : (uint32_t)need;
		nb = mqbi_realloc(&w->broker->alloc, *buf, ncap);
		if (!nb)
			return false;
	}
	*buf = nb;
	*cap = ncap;
	return true;
}

void mqbi_worker_free_iobufs(mqbi_worker *w)
{
	for (int k = 0; k < 2; k++) {
		while (w->n_iobufs[k])
			mqbi_free(&w->broker->alloc, w->iobufs[k][--w->n_iobufs[k]]);
		mqbi_free(&w->broker->alloc, w->iobufs[k]);
		w->iobufs[k] = NULL;
	}
}

/* Gives the client's read buffer back once it holds nothing. */
static void rbuf_release(mqbi_client *c)
{
	mqbi_iobuf_put(c->w, c->rbuf, c->rcap);
	c->rbuf = NULL;
	c->rcap = 0;
	c->rlen = 0;
}

static void format_peer(int fd, char *out, size_t outlen, bool *local_loopback)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	char host[INET6_ADDRSTRLEN] = "?";
	int port = 0;
	if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
		if (ss.ss_family == AF_INET) {
			struct sockaddr_in *in = (struct sockaddr_in *)&ss;
			inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
			port = ntohs(in->sin_port);
		} else if (ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
			inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
			port = ntohs(in6->sin6_port);
		}
	}
	snprintf(out, outlen, "%s:%d", host, port);
	/* Anonymous access by default is for connections that arrive through a
	 * loopback interface: judge by our end of the connection. */
	sl = sizeof ss;
	*local_loopback = getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 &&
	                  mqbi_sockaddr_is_loopback((struct sockaddr *)&ss);
}

static void list_insert(mqbi_worker *w, mqbi_client *c)
{
	c->prev = NULL;
	c->next = w->clients;
	if (w->clients)
		w->clients->prev = c;
	w->clients = c;
}

static void list_remove(mqbi_worker *w, mqbi_client *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else if (w->clients == c)
		w->clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
}

void mqbi_client_accept(mqbi_worker *w, mqbi_listener *ls, int fd)
{
	mqb_broker *b = w->broker;
	char peer[MQBI_PEER_MAX];
	bool local_loopback;
	format_peer(fd, peer, sizeof peer, &local_loopback);
	/* Stored inline at its length, or with room for the address a PROXY
	 * header (or a WebSocket X-Forwarded-For) will give. */
	size_t peer_size = ls->cfg.proxy_protocol || ls->cfg.proxy_address_header[0]
	                           ? MQBI_PEER_MAX
	                           : strlen(peer) + 1;
	mqbi_client *c = mqbi_calloc(&b->alloc, offsetof(mqbi_client, peer) + peer_size);
	if (!c) {
		mqbi_log(b, MQB_LOG_ERROR, "net", NULL, "out of memory accepting a connection");
		close(fd);
		return;
	}
	c->w = w;
	c->listener = ls;
	c->fd = fd;
	c->state = MQBI_CS_CONNECTING;
	c->last_rx = (uint32_t)mqbi_loop_now(w->loop);
	memcpy(c->peer, peer, strlen(peer) + 1);
	c->local_loopback = local_loopback;
	atomic_fetch_add(&ls->connections, 1);
	list_insert(w, c);
	mqbi_log(b, MQB_LOG_DEBUG, "net", c, "accepted on listener %s.%s", ls->cfg.type,
	         ls->cfg.name);
	if (ls->cfg.proxy_protocol)
		mqbi_proxy_accept(c);
	else
		mqbi_client_begin(c);
}

void mqbi_client_begin(mqbi_client *c)
{
	mqbi_listener *ls = c->listener;
	if (!ls->tls)
		mqbi_client_start(c);
	else if (!mqbi_tls_accept(c, ls->tls)) {
		mqbi_log(c->w->broker, MQB_LOG_ERROR, "tls", c,
		         "out of memory starting a TLS handshake");
		mqbi_client_close(c, MQBI_RC_UNSPECIFIED);
	}
}

void mqbi_client_start(mqbi_client *c)
{
	mqbi_worker *w = c->w;
	if (mqbi_listener_is_ws(&c->listener->cfg) && !mqbi_ws_attach(c)) {
		mqbi_log(w->broker, MQB_LOG_ERROR, "ws", c, "out of memory starting WebSocket");
		mqbi_client_close(c, MQBI_RC_UNSPECIFIED);
		return;
	}
	if (mqbi_loop_watch(w->loop, c->fd, MQBI_EV_READ, on_io, c) != MQB_OK) {
		mqbi_log(w->broker, MQB_LOG_ERROR, "net", c, "cannot watch the connection");
		mqbi_client_close(c, MQBI_RC_UNSPECIFIED);
		return;
	}
	/* The CONNECT timeout. */
	mqbi_timer_start(w->loop, &c->timer, mqbi_lim(w->broker)->idle_timeout,
	                 mqbi_client_timer_fn);
	/* The transport may already hold the first bytes (read with the
	 * handshake's last record): the socket will not signal them. */
	if (c->xport && c->xport->ops->buffered(c->xport))
		on_io(w->loop, c->fd, c, MQBI_EV_READ);
}

/* Input bytes of the connection: the socket's, or the transport's. */
static ssize_t conn_recv(mqbi_client *c, uint8_t *buf, size_t len)
{
	return c->xport ? c->xport->ops->recv(c->xport, buf, len) : recv(c->fd, buf, len, 0);
}

static bool conn_buffered(const mqbi_client *c)
{
	return c->xport && c->xport->ops->buffered(c->xport);
}

ssize_t mqbi_transport_lower_recv(mqbi_transport *t, uint8_t *buf, size_t len)
{
	return t->lower ? t->lower->ops->recv(t->lower, buf, len) : recv(t->c->fd, buf, len, 0);
}

ssize_t mqbi_transport_lower_send(mqbi_transport *t, const uint8_t *buf, size_t len)
{
	return t->lower ? t->lower->ops->send(t->lower, buf, len)
	                : send(t->c->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
}

void mqbi_client_pause(mqbi_client *c)
{
	/* Output still waiting for room keeps going. */
	unsigned ev = mqbi_client_out_pending(c) ? MQBI_EV_WRITE : 0;
	mqbi_loop_watch(c->w->loop, c->fd, ev, on_io, c);
}

bool mqbi_client_resume(mqbi_client *c)
{
	mqbi_worker *w = c->w;
	if (c->state == MQBI_CS_CLOSING)
		return false;
	if (mqbi_loop_watch(w->loop, c->fd, MQBI_EV_READ, on_io, c) != MQB_OK) {
		mqbi_client_close(c, MQBI_RC_UNSPECIFIED);
		return false;
	}
	if (c->rlen) {
		long n = mqbi_client_process(c, c->rbuf, c->rlen);
		if (n < 0)
			return false;
		memmove(c->rbuf, c->rbuf + n, c->rlen - (size_t)n);
		c->rlen -= (uint32_t)n;
		if (c->rlen == 0)
			rbuf_release(c);
	}
	if (conn_buffered(c) && c->state != MQBI_CS_CLOSING && !c->held)
		on_io(w->loop, c->fd, c, MQBI_EV_READ);
	return c->state != MQBI_CS_CLOSING;
}

void mqbi_client_adopt(mqbi_worker *w, mqbi_client *c)
{
	c->w = w;
	list_insert(w, c);
	mqbi_timer_start(w->loop, &c->timer, mqbi_lim(w->broker)->idle_timeout,
	                 mqbi_client_timer_fn);
	/* The bytes read on the accepting worker (CONNECT first) are processed here. */
	mqbi_client_resume(c);
}

/* Detaches c from its worker so another worker can adopt it. The unprocessed
 * input (from `from`, `len` bytes) is kept in the client's own buffer. */
bool mqbi_client_detach_for_move(mqbi_client *c, const uint8_t *from, size_t len)
{
	mqb_broker *b = c->w->broker;
	if (from != c->rbuf) {
		if (len > c->rcap) {
			uint8_t *nb = mqbi_realloc(&b->alloc, c->rbuf, len);
			if (!nb)
				return false;
			c->rbuf = nb;
			c->rcap = len;
		}
		memmove(c->rbuf, from, len);
	}
	c->rlen = len;
	mqbi_timer_stop(c->w->loop, &c->timer);
	mqbi_loop_unwatch(c->w->loop, c->fd);
	list_remove(c->w, c);
	if (c->dirty) {
		/* Nothing was answered yet, so there is nothing to flush; unlink. */
		mqbi_client **pp = &c->w->dirty;
		while (*pp && *pp != c)
			pp = &(*pp)->dirty_next;
		if (*pp) {
			*pp = c->dirty_next;
			if (!c->dirty_next)
				c->w->dirty_tail = pp;
		}
		c->dirty = false;
	}
	return true;
}

/* ---- Output: the output buffer, and large payloads by reference ----------
 *
 * Everything a connection is sent is encoded into its output buffer, except
 * the payloads of at least MQBI_ZEROCOPY_MIN bytes: the PUBLISH up to its
 * payload goes into the buffer and the payload is written from the shared
 * message by a gather write (sendmsg). c->refs keeps them in buffer order:
 * refs[k] follows the first `at` bytes of the buffer. Small payloads are
 * cheaper to copy. */

static mqbi_outref *ref_head(const mqbi_client *c)
{
	return c->refs && c->refs->count ? &c->refs->v[c->refs->head] : NULL;
}

static void refs_free(mqbi_client *c)
{
	mqbi_outrefs *r = c->refs;
	if (!r)
		return;
	const mqb_allocator *a = &c->w->broker->alloc;
	for (uint32_t k = 0; k < r->count; k++)
		mqbi_msg_unref(a, r->v[r->head + k].msg);
	mqbi_free(a, r->v);
	mqbi_free(a, r);
	c->refs = NULL;
}

/* Output of the transport's own (WebSocket control frames). */
static size_t xport_pending(const mqbi_client *c)
{
	return c->xport && c->xport->ops->pending ? c->xport->ops->pending(c->xport) : 0;
}

size_t mqbi_client_out_pending(const mqbi_client *c)
{
	return c->wlen - c->woff + (c->refs ? c->refs->bytes - c->refs->sent : 0) +
	       xport_pending(c);
}

/* At most this many pieces per writev. */
#define OUT_IOV 64

/* Hands pieces to the transport in order: how many bytes it took, or -1
 * with errno when it took none. */
static ssize_t xport_sendv(mqbi_client *c, const struct iovec *iov, int n)
{
	size_t total = 0;
	for (int i = 0; i < n; i++) {
		ssize_t k = c->xport->ops->send(c->xport, iov[i].iov_base, iov[i].iov_len);
		if (k < 0)
			return total ? (ssize_t)total : -1;
		total += (size_t)k;
		if ((size_t)k < iov[i].iov_len)
			break;
	}
	return (ssize_t)total;
}

/* Writes once what is pending, in order. */
static ssize_t out_send(mqbi_client *c, int flags)
{
	const mqbi_outrefs *r = c->refs;
	if (!r || !r->count) {
		if (c->xport) {
			struct iovec one = {c->wbuf + c->woff, c->wlen - c->woff};
			return xport_sendv(c, &one, 1);
		}
		return send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL | flags);
	}
	struct iovec iov[OUT_IOV];
	int n = 0;
	uint32_t pos = c->woff;
	uint32_t k;
	for (k = 0; k < r->count && n + 2 <= OUT_IOV; k++) {
		const mqbi_outref *o = &r->v[r->head + k];
		if (o->at > pos)
			iov[n++] = (struct iovec){c->wbuf + pos, o->at - pos};
		pos = o->at;
		uint32_t skip = k == 0 ? r->sent : 0;
		iov[n++] = (struct iovec){(uint8_t *)o->msg->payload + skip,
		                          o->msg->payload_len - skip};
	}
	if (k == r->count && pos < c->wlen)
		iov[n++] =
		        (struct iovec){c->wbuf + pos, c->wlen - pos}; /* room: n <= OUT_IOV - 1 */
	if (c->xport)
		return xport_sendv(c, iov, n);
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
	return sendmsg(c->fd, &mh, MSG_NOSIGNAL | flags);
}

/* Accounts for n bytes written. */
static void out_advance(mqbi_client *c, size_t n)
{
	MQBI_COUNT(c->w->m.bytes_sent, (uint64_t)n);
	mqbi_outref *o;
	while (n && (o = ref_head(c)) != NULL) {
		if (c->woff < o->at) {
			uint32_t step = o->at - c->woff < n ? o->at - c->woff : (uint32_t)n;
			c->woff += step;
			n -= step;
			continue;
		}
		mqbi_outrefs *r = c->refs;
		uint32_t step = o->msg->payload_len - r->sent < n ? o->msg->payload_len - r->sent
		                                                  : (uint32_t)n;
		r->sent += step;
		n -= step;
		if (r->sent == o->msg->payload_len) {
			r->bytes -= o->msg->payload_len;
			r->sent = 0;
			mqbi_msg_unref(&c->w->broker->alloc, o->msg);
			r->head++;
			if (--r->count == 0)
				r->head = 0;
		}
	}
	c->woff += (uint32_t)n;
}

uint8_t *mqbi_client_out_reserve(mqbi_client *c, size_t n)
{
	if (c->fd < 0)
		return NULL;
	if (c->wlen + n > c->wcap) {
		if (c->woff) {
			memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
			c->wlen -= c->woff;
			for (uint32_t k = 0; c->refs && k < c->refs->count; k++)
				c->refs->v[c->refs->head + k].at -= c->woff;
			c->woff = 0;
		}
		if (!iobuf_ensure(c->w, &c->wbuf, &c->wcap, c->wlen, (size_t)c->wlen + n))
			return NULL;
	}
	return c->wbuf + c->wlen;
}

void mqbi_client_mark_dirty(mqbi_client *c)
{
	if (!c->dirty) {
		/* First dirtied, first flushed: a delivery written before the
		 * PUBACK to its publisher also reaches the socket before it. */
		mqbi_worker *w = c->w;
		mqbi_client **tail = w->dirty ? w->dirty_tail : &w->dirty;
		c->dirty = true;
		c->dirty_next = NULL;
		*tail = c;
		w->dirty_tail = &c->dirty_next;
	}
}

/* Output beyond this is handed to the kernel at once instead of at the end
 * of the loop iteration, so that one busy iteration (many publishers' input)
 * does not pile up a subscriber's output. */
#define MQBI_EAGER_FLUSH (64u * 1024u)

/* Writes what the socket takes now. Returns 0 once everything is written,
 * else the errno that stopped it (EAGAIN: the socket is full). Never closes:
 * that is left to client_flush(), where closing is safe. */
static int write_pending(mqbi_client *c)
{
	while (c->wlen > c->woff || (c->refs && c->refs->count)) {
		ssize_t n = out_send(c, MSG_DONTWAIT);
		if (n > 0) {
			out_advance(c, (size_t)n);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		return n < 0 ? errno : EPIPE;
	}
	c->woff = c->wlen = 0;
	return xport_pending(c) ? c->xport->ops->flush(c->xport) : 0;
}

void mqbi_client_out_commit(mqbi_client *c, size_t n)
{
	c->wlen += (uint32_t)n; /* n <= what out_reserve made room for */
	MQBI_COUNT(c->w->m.packets_sent, 1);
	mqbi_client_mark_dirty(c);
	if (mqbi_client_out_pending(c) >= MQBI_EAGER_FLUSH)
		(void)write_pending(c);
}

bool mqbi_client_out_ref(mqbi_client *c, mqbi_msg *m)
{
	const mqb_allocator *a = &c->w->broker->alloc;
	mqbi_outrefs *r = c->refs;
	if (!r) {
		r = c->refs = mqbi_calloc(a, sizeof(*r));
		if (!r)
			return false;
	}
	if (r->head + r->count == r->cap) {
		if (r->head) {
			memmove(r->v, r->v + r->head, sizeof(*r->v) * r->count);
			r->head = 0;
		} else {
			uint32_t cap = r->cap ? r->cap * 2 : 8;
			mqbi_outref *v = mqbi_realloc(a, r->v, sizeof(*v) * cap);
			if (!v)
				return false;
			r->v = v;
			r->cap = cap;
		}
	}
	r->v[r->head + r->count++] = (mqbi_outref){c->wlen, mqbi_msg_ref(m)};
	r->bytes += m->payload_len;
	if (mqbi_client_out_pending(c) >= MQBI_EAGER_FLUSH)
		(void)write_pending(c);
	return true;
}

/* A held publisher (flow control) is not read. */
static unsigned read_interest(const mqbi_client *c)
{
	return c->held ? 0 : MQBI_EV_READ;
}

/* Writes pending output; returns false if the connection failed (closed). */
static bool client_flush(mqbi_client *c)
{
	mqbi_worker *w = c->w;
	int err = write_pending(c);
	if (err == EAGAIN || err == EWOULDBLOCK) {
		mqbi_loop_watch(w->loop, c->fd, read_interest(c) | MQBI_EV_WRITE, on_io, c);
		return true;
	}
	if (err) {
		mqbi_log(w->broker, MQB_LOG_DEBUG, "net", c, "write failed: %s", strerror(err));
		mqbi_client_close(c, MQBI_RC_UNSPECIFIED);
		return false;
	}
	if (c->close_after_flush) {
		mqbi_client_close(c, MQBI_RC_SERVER_SHUTTING_DOWN);
		return false;
	}
	/* All written: an idle connection keeps no output buffer. */
	mqbi_iobuf_put(w, c->wbuf, c->wcap);
	c->wbuf = NULL;
	c->wlen = c->wcap = c->woff = 0;
	refs_free(c);
	mqbi_loop_watch(w->loop, c->fd, read_interest(c), on_io, c);
	/* Deliveries that waited for room go out now. */
	if (c->session && c->session->queue.count && c->state == MQBI_CS_CONNECTED)
		mqbi_session_pump(c->session);
	return true;
}

void mqbi_worker_flush(mqbi_worker *w)
{
	/* Pumping sessions may dirty more clients; loop until the list is empty. */
	while (w->dirty) {
		mqbi_client *list = w->dirty;
		w->dirty = NULL;
		w->dirty_tail = &w->dirty;
		while (list) {
			mqbi_client *c = list;
			list = c->dirty_next;
			c->dirty = false;
			c->dirty_next = NULL;
			if (c->fd >= 0)
				client_flush(c);
		}
	}
	while (w->dead) {
		mqbi_client *c = w->dead;
		w->dead = c->next;
		c->next = NULL;
		mqbi_client_free(c);
	}
}

/* While the authenticate hook decides, input is only buffered (so that a
 * client that goes away is noticed); reading pauses when the buffer is full. */
#define MQBI_PENDING_INPUT_MAX (64u * 1024u)

static void read_while_pending(mqbi_client *c)
{
	mqbi_worker *w = c->w;
	if (c->rcap < MQBI_PENDING_INPUT_MAX) {
		uint8_t *nb = mqbi_realloc(&w->broker->alloc, c->rbuf, MQBI_PENDING_INPUT_MAX);
		if (!nb) {
			mqbi_client_close(c, MQBI_RC_IMPL_SPECIFIC);
			return;
		}
		c->rbuf = nb;
		c->rcap = MQBI_PENDING_INPUT_MAX;
	}
	if (c->rlen == c->rcap) {
		mqbi_client_pause(c);
		return;
	}
	ssize_t n = conn_recv(c, c->rbuf + c->rlen, c->rcap - c->rlen);
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
		mqbi_log(w->broker, MQB_LOG_DEBUG, "net", c,
		         "connection closed while its authentication was pending");
		mqbi_client_close(c, MQBI_RC_UNSPECIFIED);
		return;
	}
	if (n > 0) {
		c->rlen += (uint32_t)n;
		MQBI_COUNT(w->m.bytes_received, (uint64_t)n);
	}
}

/* Reads once and processes what came; false when the client is gone (closed
 * or moved to another worker) or reading stops for now. */
static bool read_input(mqbi_client *c)
{
	mqbi_worker *w = c->w;
	/* A partly read packet continues in the client's own buffer; otherwise read
	 * into the worker's buffer and keep only the unprocessed tail. */
	uint8_t *buf;
	size_t have, room;
	if (c->rlen) {
		/* Room for the rest of the packet, read in reasonable pieces. */
		if (c->rcap - c->rlen < 4096 &&
		    !iobuf_ensure(w, &c->rbuf, &c->rcap, c->rlen, (size_t)c->rlen + 4096)) {
			mqbi_client_close(c, MQBI_RC_IMPL_SPECIFIC);
			return false;
		}
		buf = c->rbuf;
		have = c->rlen;
		room = c->rcap - c->rlen;
	} else {
		buf = w->rbuf;
		have = 0;
		room = w->rbuf_cap;
	}
	ssize_t n = conn_recv(c, buf + have, room);
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
		mqbi_log(w->broker, MQB_LOG_DEBUG, "net", c, "connection closed by peer%s%s",
		         n < 0 ? ": " : "", n < 0 ? strerror(errno) : "");
		mqbi_client_close(c, MQBI_RC_UNSPECIFIED);
		return false;
	}
	if (n < 0)
		return false;
	MQBI_COUNT(w->m.bytes_received, (uint64_t)n);
	size_t len = have + (size_t)n;
	long used = mqbi_client_process(c, buf, len);
	if (used < 0)
		return false; /* closed or moved to another worker */
	size_t rest = len - (size_t)used;
	if (buf == c->rbuf) {
		memmove(c->rbuf, c->rbuf + used, rest);
		c->rlen = (uint32_t)rest;
		if (rest == 0)
			rbuf_release(c);
	} else if (rest) {
		/* A packet continues in the next read: keep its start. */
		if (!iobuf_ensure(w, &c->rbuf, &c->rcap, 0, rest)) {
			mqbi_client_close(c, MQBI_RC_IMPL_SPECIFIC);
			return false;
		}
		memcpy(c->rbuf, buf + used, rest);
		c->rlen = (uint32_t)rest;
	}
	return c->state != MQBI_CS_CLOSING && c->state != MQBI_CS_AUTH_PENDING && !c->held;
}

static void on_io(mqbi_loop *l, int fd, void *user, unsigned events)
{
	mqbi_client *c = user;
	if ((events & MQBI_EV_WRITE) && !client_flush(c))
		return;
	if (!(events & (MQBI_EV_READ | MQBI_EV_ERROR)) || c->held)
		return;
	if (c->state == MQBI_CS_AUTH_PENDING) {
		read_while_pending(c);
		return;
	}
	/* Input a transport decoded ahead (TLS records) is not signalled by the
	 * socket: read until it is used up. */
	while (read_input(c) && conn_buffered(c))
		;
}

void mqbi_client_close(mqbi_client *c, uint8_t reason)
{
	if (c->state == MQBI_CS_CLOSING)
		return;
	mqbi_worker *w = c->w;
	mqb_broker *b = w->broker;
	bool was_connected = c->state == MQBI_CS_CONNECTED;
	c->state = MQBI_CS_CLOSING;
	c->disconnect_reason = reason;
	/* Best effort: hand what is pending (e.g. a DISCONNECT) to the kernel;
	 * the transport's close sends its own goodbye. */
	if (c->wlen > c->woff || (c->refs && c->refs->count))
		(void)!out_send(c, MSG_DONTWAIT);
	if (c->xport) {
		c->xport->ops->close(c->xport);
		c->xport = NULL;
	}
	mqbi_timer_stop(w->loop, &c->timer);
	mqbi_client_forget_ticket(c);
	if (c->held)
		mqbi_bp_forget(c);
	if (c->acks_waiting)
		mqbi_journal_forget_client(c);
	mqbi_loop_unwatch(w->loop, c->fd);
	close(c->fd);
	c->fd = -1;
	atomic_fetch_sub(&c->listener->connections, 1);

	mqbi_session *s = c->session;
	if (c->will) {
		mqbi_msg *will = c->will;
		c->will = NULL;
		/* A delayed will waits in the session unless the session ends first. */
		if (s && c->will_delay > 0 && s->expiry > 0)
			mqbi_session_schedule_will(s, will, c->will_delay);
		else
			mqbi_publish_will(w, c, will);
	}
	if (was_connected) {
		MQBI_COUNT(w->m.connections, (uint64_t)-1);
		MQBI_COUNT(w->m.disconnects, 1);
		mqbi_log(b, MQB_LOG_INFO, "session", c, "disconnected (%s)",
		         mqbi_reason_name(reason));
		mqbi_sys_client_event(c, false);
		mqbi_event(b, MQB_EVENT_DISCONNECTED, c, NULL, reason, NULL, 0,
		           mqbi_reason_name(reason));
	}
	if (s) {
		/* The session may end right here; the closed client needs no id. */
		if (c->id_borrowed) {
			c->client_id = NULL;
			c->id_borrowed = false;
		}
		c->session = NULL;
		mqbi_session_detach(s);
	}
	list_remove(w, c);
	c->next = w->dead;
	w->dead = c;
}

void mqbi_client_disconnect(mqbi_client *c, uint8_t reason, const char *why)
{
	if (c->state == MQBI_CS_CLOSING)
		return;
	if (c->level == MQBI_V5 && c->state != MQBI_CS_CONNECTING) {
		mqbi_packet p = {.type = MQBI_DISCONNECT};
		p.u.reason.reason = reason;
		if (why && c->request_problem_info) {
			p.u.reason.props.present |= 1ull << MQBI_PROP_REASON_STRING;
			p.u.reason.props.reason_string.ptr = (const uint8_t *)why;
			p.u.reason.props.reason_string.len = (uint32_t)strlen(why);
		}
		mqbi_client_send_packet(c, &p);
	}
	if (why)
		mqbi_log(c->w->broker, reason >= 0x80 ? MQB_LOG_NOTICE : MQB_LOG_INFO, "session", c,
		         "disconnecting: %s (%s)", why, mqbi_reason_name(reason));
	mqbi_client_close(c, reason);
}

mqbi_aliases *mqbi_client_aliases(mqbi_client *c)
{
	if (!c->aliases) {
		const mqb_allocator *a = &c->w->broker->alloc;
		c->aliases = mqbi_calloc(a, sizeof(*c->aliases));
		if (c->aliases)
			mqbi_strmap_init(&c->aliases->out, a);
	}
	return c->aliases;
}

void mqbi_client_free(mqbi_client *c)
{
	mqbi_worker *w = c->w;
	const mqb_allocator *a = &w->broker->alloc;
	if (c->state != MQBI_CS_CLOSING) {
		/* Only at broker destruction: no will, no events. */
		mqbi_msg_unref(a, c->will);
		c->will = NULL;
		mqbi_client_close(c, MQBI_RC_SERVER_SHUTTING_DOWN);
		/* close() put it on the dead list; take it off again. */
		w->dead = c->next;
		c->next = NULL;
	}
	mqbi_aliases *al = c->aliases;
	if (al) {
		for (uint16_t i = 0; i < al->in_cap; i++)
			mqbi_free(a, al->in[i]);
		mqbi_free(a, al->in);
		size_t pos = 0;
		const char *key;
		size_t klen;
		void *val;
		while (mqbi_strmap_next(&al->out, &pos, &key, &klen, &val))
			mqbi_free(a, (void *)key);
		mqbi_strmap_fini(&al->out);
		mqbi_free(a, al);
	}
	mqbi_iobuf_put(w, c->rbuf, c->rcap);
	mqbi_iobuf_put(w, c->wbuf, c->wcap);
	refs_free(c);
	if (!c->id_borrowed)
		mqbi_free(a, c->client_id);
	mqbi_free(a, c->username);
	mqbi_free(a, c->auth_method);
	mqbi_free(a, c->pending);
	mqbi_free(a, c);
}
