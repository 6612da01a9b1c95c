/* The per-connection protocol state machine: framing, CONNECT and
 * authentication, keepalive, and dispatch of the other packets. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

#include "core/core.h"
#include "core/topic.h"
#include "net/tls.h"

mqb_err mqbi_client_send_packet(mqbi_client *c, const mqbi_packet *p)
{
	mqbi_packet copy;
	size_t size = mqbi_encoded_size(p, c->level);
	/* Never exceed the client's Maximum Packet Size: the reason string and
	 * user properties are the parts that may be left out [MQTT-3.1.2-25]. */
	if (c->max_packet_out && size > c->max_packet_out && p->type != MQBI_PUBLISH) {
		copy = *p;
		mqbi_props *pr = NULL;
		switch (p->type) {
		case MQBI_CONNACK:
			pr = &copy.u.connack.props;
			break;
		case MQBI_PUBACK:
		case MQBI_PUBREC:
		case MQBI_PUBREL:
		case MQBI_PUBCOMP:
			pr = &copy.u.ack.props;
			break;
		case MQBI_SUBACK:
		case MQBI_UNSUBACK:
			pr = &copy.u.suback.props;
			break;
		case MQBI_DISCONNECT:
		case MQBI_AUTH:
			pr = &copy.u.reason.props;
			break;
		default:
			break;
		}
		if (pr) {
			pr->present &= ~(1ull << MQBI_PROP_REASON_STRING);
			pr->user_raw = NULL;
			pr->user_raw_len = 0;
			p = &copy;
			size = mqbi_encoded_size(p, c->level);
		}
		if (size > c->max_packet_out)
			return MQB_ERR_RANGE;
	}
	uint8_t *out = mqbi_client_out_reserve(c, size);
	if (!out)
		return MQB_ERR_NOMEM;
	size_t n = mqbi_encode(out, size, p, c->level);
	if (n == 0)
		return MQB_ERR_INVAL;
	mqbi_client_out_commit(c, n);
	return MQB_OK;
}

/* v3.x CONNACK return codes for our (v5) reasons. */
static uint8_t v3_return_code(uint8_t reason)
{
	switch (reason) {
	case MQBI_RC_SUCCESS:
		return 0;
	case MQBI_RC_UNSUPPORTED_VERSION:
		return 1;
	case MQBI_RC_CLIENT_ID_INVALID:
		return 2;
	case MQBI_RC_BAD_USER_PASS:
		return 4;
	case MQBI_RC_NOT_AUTHORIZED:
	case MQBI_RC_BANNED:
		return 5;
	default:
		return 3; /* server unavailable */
	}
}

static void send_connack(mqbi_client *c, uint8_t reason, bool session_present, mqbi_props *props)
{
	mqbi_packet p = {.type = MQBI_CONNACK};
	p.u.connack.session_present = session_present;
	p.u.connack.reason = c->level == MQBI_V5 ? reason : v3_return_code(reason);
	if (props && c->level == MQBI_V5)
		p.u.connack.props = *props;
	mqbi_client_send_packet(c, &p);
}

/* Refuses a CONNECT: CONNACK with the reason, then close [MQTT-3.2.2-7]. */
static void refuse(mqbi_client *c, uint8_t reason, const char *why)
{
	mqb_broker *b = c->w->broker;
	mqbi_log(b, MQB_LOG_NOTICE, "session", c, "connection refused: %s (%s)", why,
	         mqbi_reason_name(reason));
	mqbi_props props = {0};
	if (c->level == MQBI_V5 && c->request_problem_info) {
		props.present |= 1ull << MQBI_PROP_REASON_STRING;
		props.reason_string.ptr = (const uint8_t *)why;
		props.reason_string.len = (uint32_t)strlen(why);
	}
	send_connack(c, reason, false, &props);
	mqbi_event(b, MQB_EVENT_CONNACK_REFUSED, c, NULL, reason, NULL, 0, why);
	mqbi_client_close(c, reason);
}

static bool refused(mqbi_client *c, uint8_t reason, const char *why)
{
	refuse(c, reason, why);
	return false;
}

void mqbi_client_timer_fn(mqbi_loop *l, mqbi_timer *t)
{
	mqbi_client *c = (mqbi_client *)((char *)t - offsetof(mqbi_client, timer));
	mqb_broker *b = c->w->broker;
	if (c->state == MQBI_CS_CONNECTING || c->state == MQBI_CS_AUTHENTICATING ||
	    c->state == MQBI_CS_AUTH_PENDING) {
		mqbi_log(b, MQB_LOG_INFO, "session", c, "no CONNECT within idle_timeout; closing");
		mqbi_client_close(c, MQBI_RC_MAX_CONNECT_TIME);
		return;
	}
	if (c->state != MQBI_CS_CONNECTED || c->keepalive == 0)
		return;
	/* [MQTT-3.1.2-22]: one and a half times the keep alive (configurable). */
	uint64_t limit = (uint64_t)c->keepalive * mqbi_lim(b)->keepalive_backoff;
	uint32_t idle = (uint32_t)mqbi_loop_now(l) - c->last_rx; /* wraps: see last_rx */
	if (idle >= limit) {
		mqbi_client_disconnect(c, MQBI_RC_KEEPALIVE_TIMEOUT, "keep alive timeout");
		return;
	}
	mqbi_timer_start(l, t, limit - idle, mqbi_client_timer_fn);
}

/* ---- Moving a connection to its session's home worker ------------------- */

typedef struct client_move {
	mqbi_inbox_item item;
	mqbi_client *client;
} client_move;

static void client_move_run(mqbi_loop *l, mqbi_inbox_item *it)
{
	client_move *mv = (client_move *)it;
	mqbi_worker *w = mqbi_loop_data(l);
	mqbi_client *c = mv->client;
	mqbi_free(&w->broker->alloc, mv);
	mqbi_client_adopt(w, c);
}

static void client_move_drop(mqbi_inbox_item *it)
{
	/* The loop is being destroyed with the client in transit. */
	client_move *mv = (client_move *)it;
	mqbi_client *c = mv->client;
	const mqb_allocator *a = &c->w->broker->alloc;
	c->state = MQBI_CS_CLOSING;
	close(c->fd);
	atomic_fetch_sub(&c->listener->connections, 1);
	c->fd = -1;
	mqbi_free(a, mv);
	mqbi_client_free(c);
}

static bool move_client(mqbi_client *c, mqbi_worker *home, const uint8_t *from, size_t len)
{
	mqb_broker *b = c->w->broker;
	client_move *mv = mqbi_malloc(&b->alloc, sizeof(*mv));
	if (!mv || !mqbi_client_detach_for_move(c, from, len)) {
		mqbi_free(&b->alloc, mv);
		return false;
	}
	mv->client = c;
	mv->item.run = client_move_run;
	mv->item.drop = client_move_drop;
	c->w = home; /* from here on only the home worker touches it */
	mqbi_loop_post(home->loop, &mv->item);
	return true;
}

/* ---- CONNECT ----------------------------------------------------------------- */

static void assign_client_id(mqbi_client *c)
{
	mqb_broker *b = c->w->broker;
	char id[40];
	uint64_t uid = atomic_fetch_add(&b->next_uid, 1);
	snprintf(id, sizeof id, "mqb-%08x%08x-%llu", mqbi_random(c->w), mqbi_random(c->w),
	         (unsigned long long)uid);
	mqbi_free(&b->alloc, c->client_id);
	c->client_id = mqbi_strndup(&b->alloc, id, strlen(id));
	c->assigned_id = c->client_id != NULL;
}

static bool anonymous_allowed(const mqbi_client *c)
{
	switch (mqbi_lim(c->w->broker)->allow_anonymous) {
	case MQBI_ANON_TRUE:
		return true;
	case MQBI_ANON_FALSE:
		return false;
	default:
		return c->local_loopback;
	}
}

static void finish_connect(mqbi_client *c, const mqbi_connect *cn, const mqbi_bytes *auth_data);

/* ---- The authenticate hook -------------------------------------------------- */

struct mqb_auth_ticket {
	mqbi_inbox_item item;
	mqb_broker *broker;
	mqbi_worker *w;
	mqbi_client *client; /* NULL once the client went away */
	_Atomic bool gone;   /* the worker will not touch the ticket again */
	mqb_verdict verdict;
};

/* Applies the hook's answer to a CONNECT. */
static void apply_auth_verdict(mqbi_client *c, const mqbi_connect *cn, mqb_verdict v)
{
	if (v == MQB_ALLOW)
		return finish_connect(c, cn, NULL);
	if (v == MQB_DENY)
		return refuse(c, MQBI_RC_BAD_USER_PASS, "authentication failed");
	if (!anonymous_allowed(c))
		return refuse(
		        c, MQBI_RC_NOT_AUTHORIZED,
		        mqbi_lim(c->w->broker)->allow_anonymous == MQBI_ANON_FALSE
		                ? "not authenticated and allow_anonymous = false"
		                : "not authenticated; anonymous access is allowed only through "
		                  "loopback interfaces");
	finish_connect(c, cn, NULL);
}

static void ticket_run(mqbi_loop *l, mqbi_inbox_item *it)
{
	mqb_auth_ticket *t = (mqb_auth_ticket *)it;
	mqbi_client *c = t->client;
	const mqb_allocator *a = &t->broker->alloc;
	if (!c) {
		mqbi_free(a, t);
		return;
	}
	mqb_verdict v = t->verdict;
	c->pending->ticket = NULL; /* a ticket is only handed out with a kept CONNECT */
	mqbi_free(a, t);
	mqbi_packet pkt;
	size_t used;
	uint8_t reason;
	mqbi_dec_ctx ctx = {.from_client = true,
	                    .max_packet_size = mqbi_lim(c->w->broker)->max_packet_size};
	c->state = MQBI_CS_CONNECTING;
	if (mqbi_decode(c->pending->raw, c->pending->len, &ctx, &pkt, &used, &reason) !=
	    MQBI_DEC_OK)
		return mqbi_client_close(c, MQBI_RC_UNSPECIFIED);
	apply_auth_verdict(c, &pkt.u.connect, v);
	/* Packets the client sent after its CONNECT waited until now. */
	if (c->state == MQBI_CS_CONNECTED)
		mqbi_client_resume(c);
}

static void ticket_drop(mqbi_inbox_item *it)
{
	mqb_auth_ticket *t = (mqb_auth_ticket *)it;
	if (t->client)
		t->client->pending->ticket = NULL;
	mqbi_free(&t->broker->alloc, t);
}

MQB_API mqb_err mqb_auth_complete(mqb_auth_ticket *t, mqb_verdict verdict)
{
	if (!t)
		return MQB_ERR_INVAL;
	if (atomic_load_explicit(&t->gone, memory_order_acquire)) {
		mqbi_free(&t->broker->alloc, t);
		return MQB_ERR_NOTFOUND;
	}
	t->verdict = verdict == MQB_ALLOW || verdict == MQB_DENY ? verdict : MQB_IGNORE;
	mqbi_loop_post(t->w->loop, &t->item);
	return MQB_OK;
}

void mqbi_client_forget_ticket(mqbi_client *c)
{
	mqb_auth_ticket *t = c->pending ? c->pending->ticket : NULL;
	if (!t)
		return;
	c->pending->ticket = NULL;
	t->client = NULL;
	/* From here the host's mqb_auth_complete() frees it, or ticket_run does
	 * if the completion is already on its way. */
	atomic_store_explicit(&t->gone, true, memory_order_release);
}

/* Keeps a copy of the CONNECT while its authentication goes on. */
static bool keep_connect(mqbi_client *c, const uint8_t *raw, size_t rawlen)
{
	const mqb_allocator *a = &c->w->broker->alloc;
	mqbi_free(a, c->pending); /* never holds a ticket here */
	c->pending = mqbi_malloc(a, sizeof(*c->pending) + rawlen);
	if (!c->pending)
		return false;
	c->pending->ticket = NULL;
	c->pending->len = rawlen;
	memcpy(c->pending->raw, raw, rawlen);
	return true;
}

/* Runs the authenticate hook; false when the answer is pending. */
static bool authenticate(mqbi_client *c, const mqbi_connect *cn, const uint8_t *raw, size_t rawlen)
{
	mqb_broker *b = c->w->broker;
	mqb_auth_ticket *t = mqbi_calloc(&b->alloc, sizeof(*t));
	if (!t) {
		refuse(c, MQBI_RC_SERVER_UNAVAILABLE, "out of memory");
		return true;
	}
	t->broker = b;
	t->w = c->w;
	t->client = c;
	t->item.run = ticket_run;
	t->item.drop = ticket_drop;
	atomic_init(&t->gone, false);
	mqb_auth_request req = {
	        .client_id = c->client_id,
	        .username = c->username,
	        .password = cn->has_password ? (const void *)cn->password.ptr : NULL,
	        .password_len = cn->has_password ? cn->password.len : 0,
	        .peer = c->peer,
	        .listener = c->listener ? c->listener->cfg.name : "",
	        .protocol = cn->level,
	};
	mqbi_tls_peer_cert(c, &req.peer_cert_der, &req.peer_cert_len);
	if (cn->has_password && !req.password)
		req.password = ""; /* present but empty */
	mqb_verdict v = b->hooks.authenticate(b->hooks.user, &req, t);
	if (v != MQB_PENDING) {
		mqbi_free(&b->alloc, t);
		apply_auth_verdict(c, cn, v);
		return true;
	}
	if (!keep_connect(c, raw, rawlen)) {
		/* The host still holds the ticket: it becomes a no-op. */
		t->client = NULL;
		atomic_store_explicit(&t->gone, true, memory_order_release);
		refuse(c, MQBI_RC_SERVER_UNAVAILABLE, "out of memory");
		return true;
	}
	c->pending->ticket = t;
	c->state = MQBI_CS_AUTH_PENDING; /* input is buffered, not processed */
	return false;
}

static void enhanced_auth_step(mqbi_client *c, const mqbi_bytes *data, bool reauth,
                               const mqbi_connect *cn)
{
	mqb_broker *b = c->w->broker;
	mqbi_props props = {0};
	props.present |= 1ull << MQBI_PROP_AUTH_METHOD;
	props.auth_method.ptr = (const uint8_t *)c->auth_method;
	props.auth_method.len = (uint32_t)strlen(c->auth_method);
	mqb_verdict v = MQB_IGNORE;
	uint8_t *out = NULL;
	size_t outlen = 0;
	if (b->hooks.enhanced_auth) {
		mqb_auth_exchange ex = {.client_id = c->client_id ? c->client_id : "",
		                        .method = c->auth_method,
		                        .data = data ? data->ptr : NULL,
		                        .data_len = data ? data->len : 0,
		                        .reauth = reauth};
		v = b->hooks.enhanced_auth(b->hooks.user, &ex, &out, &outlen);
	}
	if (v == MQB_PENDING) {
		mqbi_packet p = {.type = MQBI_AUTH};
		p.u.reason.reason = MQBI_RC_CONTINUE_AUTH;
		p.u.reason.props = props;
		if (out) {
			p.u.reason.props.present |= 1ull << MQBI_PROP_AUTH_DATA;
			p.u.reason.props.auth_data.ptr = out;
			p.u.reason.props.auth_data.len = (uint32_t)outlen;
		}
		mqbi_client_send_packet(c, &p);
		free(out);
		if (!reauth)
			c->state = MQBI_CS_AUTHENTICATING;
		return;
	}
	free(out);
	if (v == MQB_ALLOW) {
		if (reauth) {
			mqbi_packet p = {.type = MQBI_AUTH};
			p.u.reason.reason = MQBI_RC_SUCCESS;
			p.u.reason.props = props;
			mqbi_client_send_packet(c, &p);
			return;
		}
		c->state = MQBI_CS_CONNECTING;
		finish_connect(c, cn, NULL);
		return;
	}
	uint8_t reason = v == MQB_DENY ? MQBI_RC_NOT_AUTHORIZED : MQBI_RC_BAD_AUTH_METHOD;
	const char *why =
	        v == MQB_DENY ? "authentication failed" : "authentication method not supported";
	if (reauth)
		mqbi_client_disconnect(c, reason, why);
	else
		refuse(c, reason, why);
}

/* Replaces *field with the client certificate's CN, DN or SAN (`which`, a
 * MQBI_CERT_AS_*) when the client sent a certificate that has it. False only
 * when out of memory. */
static bool take_cert_name(mqbi_client *c, int which, char **field)
{
	char name[512];
	if (which == MQBI_CERT_AS_OFF || !mqbi_tls_peer_name(c, which, name, sizeof name))
		return true;
	const mqb_allocator *a = &c->w->broker->alloc;
	char *v = mqbi_strndup(a, name, strlen(name));
	if (!v)
		return false;
	mqbi_free(a, *field); /* the session does not share the id yet */
	*field = v;
	return true;
}

/* Returns true when the client was handed to another worker: the caller must
 * not touch it any more. `raw` is the packet (rawlen bytes) followed by the
 * rest of the input (restlen bytes from raw). */
static bool handle_connect(mqbi_client *c, const mqbi_connect *cn, const uint8_t *raw,
                           size_t rawlen, size_t restlen)
{
	mqb_broker *b = c->w->broker;
	const mqbi_limits *lim = mqbi_lim(b);
	c->level = cn->level;
	c->request_problem_info = true;
	if (cn->level == MQBI_V5) {
		if (mqbi_props_has(&cn->props, MQBI_PROP_REQUEST_PROBLEM_INFO))
			c->request_problem_info = cn->props.request_problem_info != 0;
		if (mqbi_props_has(&cn->props, MQBI_PROP_MAX_PACKET_SIZE))
			c->max_packet_out = cn->props.max_packet_size;
	}
	if (cn->client_id.len > lim->max_clientid_len)
		return refused(c, MQBI_RC_CLIENT_ID_INVALID,
		               "client id longer than max_clientid_len");
	if (cn->client_id.len == 0 && !c->assigned_id) {
		if (cn->level == MQBI_V31 || (cn->level == MQBI_V311 && !cn->clean_start))
			/* [MQTT-3.1.3-8]: a zero-byte id needs clean session in 3.1.1. */
			return refused(c, MQBI_RC_CLIENT_ID_INVALID, "empty client id");
		assign_client_id(c);
		if (!c->client_id)
			return refused(c, MQBI_RC_SERVER_UNAVAILABLE, "out of memory");
	} else if (!c->assigned_id) {
		/* Set again when the CONNECT is re-read on the home worker. */
		mqbi_free(&b->alloc, c->client_id);
		c->client_id = mqbi_strndup(&b->alloc, cn->client_id.ptr, cn->client_id.len);
		if (!c->client_id)
			return refused(c, MQBI_RC_SERVER_UNAVAILABLE, "out of memory");
	}
	if (cn->will_flag) {
		if (!mqbi_topic_name_valid((const char *)cn->will_topic.ptr, cn->will_topic.len))
			return refused(c, MQBI_RC_TOPIC_NAME_INVALID, "invalid will topic");
		if (cn->will_qos > lim->max_qos)
			return refused(c, MQBI_RC_QOS_NOT_SUPPORTED,
			               "will QoS above max_qos_allowed");
		if (cn->will_retain && !lim->retain_available)
			return refused(c, MQBI_RC_RETAIN_NOT_SUPPORTED,
			               "retained will but retain unavailable");
	}
	if (cn->has_username) {
		mqbi_free(&b->alloc, c->username);
		c->username = mqbi_strndup(&b->alloc, cn->username.ptr, cn->username.len);
	}
	/* TLS listeners: the client certificate may name the client. */
	const mqbi_listener_cfg *lc = &c->listener->cfg;
	if (!take_cert_name(c, lc->peer_cert_as_clientid, &c->client_id) ||
	    !take_cert_name(c, lc->peer_cert_as_username, &c->username))
		return refused(c, MQBI_RC_SERVER_UNAVAILABLE, "out of memory");
	/* Home worker: a session is touched by one thread only. */
	mqbi_worker *home = mqbi_home_worker(b, c->client_id, strlen(c->client_id));
	if (home != c->w) {
		if (move_client(c, home, raw, restlen))
			return true;
		refuse(c, MQBI_RC_SERVER_UNAVAILABLE, "out of memory");
		return false;
	}
	if (cn->level == MQBI_V5 && mqbi_props_has(&cn->props, MQBI_PROP_AUTH_METHOD)) {
		mqbi_free(&b->alloc, c->auth_method);
		c->auth_method = mqbi_strndup(&b->alloc, cn->props.auth_method.ptr,
		                              cn->props.auth_method.len);
		if (!c->auth_method)
			return refused(c, MQBI_RC_SERVER_UNAVAILABLE, "out of memory");
		/* Keep the CONNECT: it is finished when the exchange succeeds. */
		if (!keep_connect(c, raw, rawlen))
			return refused(c, MQBI_RC_SERVER_UNAVAILABLE, "out of memory");
		const mqbi_bytes *data = mqbi_props_has(&cn->props, MQBI_PROP_AUTH_DATA)
		                                 ? &cn->props.auth_data
		                                 : NULL;
		enhanced_auth_step(c, data, false, cn);
		return false;
	}
	if (b->hooks.authenticate) {
		authenticate(c, cn, raw, rawlen);
		return false;
	}
	if (!anonymous_allowed(c)) {
		refuse(c, MQBI_RC_NOT_AUTHORIZED,
		       lim->allow_anonymous == MQBI_ANON_FALSE
		               ? "anonymous access is disabled (allow_anonymous = false)"
		               : "anonymous access is allowed only through loopback interfaces");
		return false;
	}
	finish_connect(c, cn, NULL);
	return false;
}

static void finish_connect(mqbi_client *c, const mqbi_connect *cn, const mqbi_bytes *auth_data)
{
	mqbi_worker *w = c->w;
	mqb_broker *b = w->broker;
	const mqbi_limits *lim = mqbi_lim(b);
	uint64_t now = mqbi_loop_now(w->loop);
	mqbi_props ack = {0};

	/* Keep alive: the server's value wins when configured or when the client's
	 * exceeds the maximum [MQTT-3.2.2-21]. */
	uint16_t ka = cn->keepalive;
	bool server_ka = false;
	if (lim->server_keepalive) {
		ka = lim->server_keepalive;
		server_ka = true;
	} else if (lim->max_keepalive && (ka > lim->max_keepalive || ka == 0) &&
	           lim->max_keepalive < 65535) {
		if (cn->level != MQBI_V5 && ka != 0)
			/* 3.x has no Server Keep Alive; refuse as mosquitto does (0x02). */
			return refuse(c, MQBI_RC_CLIENT_ID_INVALID,
			              "keep alive above max_keepalive");
		if (cn->level == MQBI_V5) {
			ka = lim->max_keepalive;
			server_ka = true;
		}
	}
	if (server_ka && cn->level == MQBI_V5 && ka != cn->keepalive) {
		ack.present |= 1ull << MQBI_PROP_SERVER_KEEP_ALIVE;
		ack.server_keep_alive = ka;
	}
	c->keepalive = ka;

	/* Session expiry. */
	uint32_t expiry;
	if (cn->level == MQBI_V5)
		expiry = mqbi_props_has(&cn->props, MQBI_PROP_SESSION_EXPIRY)
		                 ? cn->props.session_expiry
		                 : 0;
	else
		expiry = cn->clean_start ? 0 : lim->session_expiry_v3;
	if (lim->max_session_expiry && expiry > lim->max_session_expiry) {
		expiry = lim->max_session_expiry;
		if (cn->level == MQBI_V5) {
			ack.present |= 1ull << MQBI_PROP_SESSION_EXPIRY;
			ack.session_expiry = expiry;
		}
	}

	/* The will. It is a publish like any other, so the ACL applies; like
	 * mosquitto, a refused will topic refuses the connection rather than
	 * losing the will silently later. */
	mqbi_msg *will = NULL;
	uint8_t wq = cn->will_qos;
	if (cn->will_flag &&
	    !mqbi_hook_authorize(c, MQB_ACTION_PUBLISH, (const char *)cn->will_topic.ptr,
	                         cn->will_topic.len, &wq))
		return refuse(c, MQBI_RC_NOT_AUTHORIZED, "will topic not authorized");
	if (cn->will_flag) {
		const mqbi_props *wp = &cn->will_props;
		bool has_exp = cn->level == MQBI_V5 && mqbi_props_has(wp, MQBI_PROP_MESSAGE_EXPIRY);
		will = mqbi_msg_create(&b->alloc, (const char *)cn->will_topic.ptr,
		                       cn->will_topic.len, cn->level == MQBI_V5 ? wp->raw : NULL,
		                       cn->level == MQBI_V5 ? wp->raw_len : 0, cn->will_payload.ptr,
		                       cn->will_payload.len, cn->will_qos, cn->will_retain,
		                       c->client_id, strlen(c->client_id), c->username, has_exp,
		                       has_exp ? wp->message_expiry : 0, now);
		if (!will)
			return refuse(c, MQBI_RC_SERVER_UNAVAILABLE, "out of memory");
		c->will_delay = cn->level == MQBI_V5 && mqbi_props_has(wp, MQBI_PROP_WILL_DELAY)
		                        ? wp->will_delay
		                        : 0;
	}

	/* Session: take over, discard or resume. */
	size_t idlen = strlen(c->client_id);
	mqbi_session *s = mqbi_session_find(w, c->client_id, idlen);
	if (s && s->client) {
		mqbi_client *old = s->client;
		mqbi_log(b, MQB_LOG_INFO, "session", old, "taken over by a new connection from %s",
		         c->peer);
		mqbi_client_disconnect(old, MQBI_RC_SESSION_TAKEN_OVER, "session taken over");
		/* Closing the old connection ends a session whose expiry is 0. */
		s = mqbi_session_find(w, c->client_id, idlen);
	}
	bool present = false;
	if (s && cn->clean_start) {
		mqbi_event(b, MQB_EVENT_SESSION_DISCARDED, c, NULL, 0, NULL, 0, "clean start");
		mqbi_session_end(s, "clean start");
		s = NULL;
	}
	if (s) {
		present = true;
		mqbi_session_cancel_will(s); /* [MQTT-3.1.3-9] */
		mqbi_event(b, MQB_EVENT_SESSION_RESUMED, c, NULL, 0, NULL, 0, NULL);
	} else {
		s = mqbi_session_create(w, c->client_id, idlen);
		if (!s) {
			mqbi_msg_unref(&b->alloc, will);
			return refuse(c, MQBI_RC_SERVER_UNAVAILABLE, "out of memory");
		}
		mqbi_event(b, MQB_EVENT_SESSION_CREATED, c, NULL, 0, NULL, 0, NULL);
	}
	s->expiry = expiry;
	s->level = cn->level;
	c->will = will;

	/* The client's limits towards us. */
	c->receive_max_out = 65535;
	if (cn->level == MQBI_V5) {
		if (mqbi_props_has(&cn->props, MQBI_PROP_RECEIVE_MAX))
			c->receive_max_out = cn->props.receive_max;
		if (mqbi_props_has(&cn->props, MQBI_PROP_TOPIC_ALIAS_MAX))
			c->topic_alias_max_out = cn->props.topic_alias_max;
		if (lim->receive_max < 65535) {
			ack.present |= 1ull << MQBI_PROP_RECEIVE_MAX;
			ack.receive_max = lim->receive_max;
		}
		if (lim->max_qos < 2) {
			ack.present |= 1ull << MQBI_PROP_MAX_QOS;
			ack.max_qos = lim->max_qos;
		}
		if (!lim->retain_available) {
			ack.present |= 1ull << MQBI_PROP_RETAIN_AVAILABLE;
			ack.retain_available = 0;
		}
		if (lim->max_packet_size < 268435460u) {
			ack.present |= 1ull << MQBI_PROP_MAX_PACKET_SIZE;
			ack.max_packet_size = lim->max_packet_size;
		}
		if (c->assigned_id) {
			ack.present |= 1ull << MQBI_PROP_ASSIGNED_CLIENT_ID;
			ack.assigned_client_id.ptr = (const uint8_t *)c->client_id;
			ack.assigned_client_id.len = (uint32_t)idlen;
		}
		if (lim->max_topic_alias) {
			ack.present |= 1ull << MQBI_PROP_TOPIC_ALIAS_MAX;
			ack.topic_alias_max = lim->max_topic_alias;
		}
		if (!lim->wildcard_sub) {
			ack.present |= 1ull << MQBI_PROP_WILDCARD_SUB_AVAILABLE;
			ack.wildcard_sub_available = 0;
		}
		if (!lim->sub_id_available) {
			ack.present |= 1ull << MQBI_PROP_SUB_ID_AVAILABLE;
			ack.sub_id_available = 0;
		}
		if (!lim->shared_sub) {
			ack.present |= 1ull << MQBI_PROP_SHARED_SUB_AVAILABLE;
			ack.shared_sub_available = 0;
		}
		if (c->auth_method) {
			ack.present |= 1ull << MQBI_PROP_AUTH_METHOD;
			ack.auth_method.ptr = (const uint8_t *)c->auth_method;
			ack.auth_method.len = (uint32_t)strlen(c->auth_method);
			if (auth_data) {
				ack.present |= 1ull << MQBI_PROP_AUTH_DATA;
				ack.auth_data = *auth_data;
			}
		}
	}
	c->state = MQBI_CS_CONNECTED;
	send_connack(c, MQBI_RC_SUCCESS, present, &ack);
	mqbi_free(&b->alloc, c->pending);
	c->pending = NULL;

	MQBI_COUNT(w->m.connections, 1);
	MQBI_COUNT(w->m.connects, 1);
	mqbi_log(b, MQB_LOG_INFO, "session", c,
	         "connected: MQTT %s, keepalive %u, clean start %d, session expiry %u, %s session",
	         cn->level == 5   ? "5.0"
	         : cn->level == 4 ? "3.1.1"
	                          : "3.1",
	         ka, cn->clean_start, expiry, present ? "resumed" : "new");
	mqbi_timer_stop(w->loop, &c->timer);
	if (ka)
		mqbi_timer_start(w->loop, &c->timer, (uint64_t)ka * lim->keepalive_backoff,
		                 mqbi_client_timer_fn);
	mqbi_sys_client_event(c, true);
	/* Resend in-flight messages, then what was queued [MQTT-4.4.0-1]. */
	mqbi_session_attach(s, c);
	/* Last: the host may query or kick the client from this event. */
	mqbi_event(b, MQB_EVENT_CONNECTED, c, NULL, 0, NULL, 0, NULL);
}

static void handle_auth(mqbi_client *c, const mqbi_reason_packet *ap)
{
	mqb_broker *b = c->w->broker;
	if (c->level != MQBI_V5 || !c->auth_method)
		return mqbi_client_disconnect(c, MQBI_RC_PROTOCOL_ERROR,
		                              "AUTH without an authentication method");
	const mqbi_props *pr = &ap->props;
	if (!mqbi_props_has(pr, MQBI_PROP_AUTH_METHOD) ||
	    pr->auth_method.len != strlen(c->auth_method) ||
	    memcmp(pr->auth_method.ptr, c->auth_method, pr->auth_method.len) != 0)
		return mqbi_client_disconnect(c, MQBI_RC_PROTOCOL_ERROR,
		                              "AUTH with a different authentication method");
	const mqbi_bytes *data = mqbi_props_has(pr, MQBI_PROP_AUTH_DATA) ? &pr->auth_data : NULL;
	if (c->state == MQBI_CS_AUTHENTICATING) {
		if (ap->reason != MQBI_RC_CONTINUE_AUTH)
			return mqbi_client_disconnect(c, MQBI_RC_PROTOCOL_ERROR,
			                              "unexpected AUTH reason");
		mqbi_packet pkt;
		size_t used;
		uint8_t reason;
		mqbi_dec_ctx ctx = {.from_client = true,
		                    .max_packet_size = mqbi_lim(b)->max_packet_size};
		if (mqbi_decode(c->pending->raw, c->pending->len, &ctx, &pkt, &used, &reason) !=
		    MQBI_DEC_OK)
			return mqbi_client_close(c, MQBI_RC_UNSPECIFIED);
		/* The stored CONNECT's fields point into c->pending, which lives
		 * until finish_connect() is done with them. */
		enhanced_auth_step(c, data, false, &pkt.u.connect);
		return;
	}
	if (ap->reason != MQBI_RC_REAUTHENTICATE)
		return mqbi_client_disconnect(c, MQBI_RC_PROTOCOL_ERROR, "unexpected AUTH reason");
	enhanced_auth_step(c, data, true, NULL);
}

static void handle_disconnect(mqbi_client *c, const mqbi_reason_packet *d)
{
	mqb_broker *b = c->w->broker;
	uint8_t reason = c->level == MQBI_V5 ? d->reason : MQBI_RC_SUCCESS;
	if (c->level == MQBI_V5 && mqbi_props_has(&d->props, MQBI_PROP_SESSION_EXPIRY) &&
	    c->session) {
		/* [MQTT-3.14.2-2]: a session that expired at disconnect cannot be revived. */
		if (c->session->expiry == 0 && d->props.session_expiry != 0)
			return mqbi_client_disconnect(
			        c, MQBI_RC_PROTOCOL_ERROR,
			        "session expiry set on DISCONNECT after 0 in CONNECT");
		uint32_t e = d->props.session_expiry;
		if (mqbi_lim(b)->max_session_expiry && e > mqbi_lim(b)->max_session_expiry)
			e = mqbi_lim(b)->max_session_expiry;
		c->session->expiry = e;
	}
	/* A normal disconnect discards the will [MQTT-3.14.4-3]; 0x04 keeps it. */
	if (reason != MQBI_RC_DISCONNECT_WITH_WILL && c->will) {
		mqbi_msg_unref(&b->alloc, c->will);
		c->will = NULL;
	}
	mqbi_client_close(c, reason);
}

static void dispatch_connected(mqbi_client *c, mqbi_packet *p)
{
	if (c->state == MQBI_CS_AUTHENTICATING && p->type != MQBI_AUTH &&
	    p->type != MQBI_DISCONNECT)
		return mqbi_client_disconnect(c, MQBI_RC_PROTOCOL_ERROR,
		                              "packet other than AUTH during authentication");
	switch (p->type) {
	case MQBI_PUBLISH:
		return mqbi_handle_publish(c, &p->u.publish);
	case MQBI_PUBACK:
	case MQBI_PUBREC:
	case MQBI_PUBREL:
	case MQBI_PUBCOMP:
		return mqbi_handle_ack(c, p->type, &p->u.ack);
	case MQBI_SUBSCRIBE:
		return mqbi_handle_subscribe(c, &p->u.subscribe);
	case MQBI_UNSUBSCRIBE:
		return mqbi_handle_unsubscribe(c, &p->u.subscribe);
	case MQBI_PINGREQ: {
		mqbi_packet r = {.type = MQBI_PINGRESP};
		mqbi_client_send_packet(c, &r);
		return;
	}
	case MQBI_DISCONNECT:
		return handle_disconnect(c, &p->u.reason);
	case MQBI_AUTH:
		return handle_auth(c, &p->u.reason);
	case MQBI_CONNECT:
		/* [MQTT-3.1.0-2]: a second CONNECT is a protocol error. */
		return mqbi_client_disconnect(c, MQBI_RC_PROTOCOL_ERROR, "second CONNECT");
	default:
		return mqbi_client_disconnect(c, MQBI_RC_PROTOCOL_ERROR,
		                              "packet type not sent by clients");
	}
}

/* Returns true when the client moved to another worker (see handle_connect). */
static bool dispatch(mqbi_client *c, mqbi_packet *p, const uint8_t *raw, size_t rawlen,
                     size_t restlen)
{
	if (c->state == MQBI_CS_CONNECTING) {
		if (p->type != MQBI_CONNECT) {
			/* [MQTT-3.1.0-1]: the first packet must be CONNECT. */
			mqbi_log(c->w->broker, MQB_LOG_NOTICE, "session", c,
			         "first packet is %s, not CONNECT; closing",
			         mqbi_ptype_name(p->type));
			mqbi_client_close(c, MQBI_RC_PROTOCOL_ERROR);
			return false;
		}
		return handle_connect(c, &p->u.connect, raw, rawlen, restlen);
	}
	dispatch_connected(c, p);
	return false;
}
/* Answers a CONNECT that failed to decode: CONNACK with the reason when the
 * protocol level is readable [MQTT-3.1.2-2], else just close. */
static void refuse_bad_connect(mqbi_client *c, const uint8_t *p, size_t len, size_t hl,
                               uint8_t reason)
{
	/* Protocol name "MQTT" (level 4/5) or "MQIsdp" (level 3), then the level. */
	const uint8_t *v = p + hl;
	size_t vl = len - hl;
	uint8_t level = 0;
	bool named = false;
	if (vl >= 7 && v[0] == 0 && v[1] == 4 && memcmp(v + 2, "MQTT", 4) == 0) {
		level = v[6];
		named = true;
	} else if (vl >= 9 && v[0] == 0 && v[1] == 6 && memcmp(v + 2, "MQIsdp", 6) == 0) {
		level = v[8];
		named = true;
	}
	if (reason == MQBI_RC_UNSUPPORTED_VERSION && named) {
		/* [MQTT-3.1.2-2]: CONNACK 0x01 in the 3.1.1 form, which any version of
		 * client can read (5.0 only says it MAY answer 0x84). */
		c->level = MQBI_V311;
		return refuse(c, reason, "unsupported protocol version");
	}
	if (level == MQBI_V5 && reason != MQBI_RC_MALFORMED) {
		c->level = MQBI_V5;
		return refuse(c, reason, "invalid CONNECT");
	}
	mqbi_log(c->w->broker, MQB_LOG_NOTICE, "session", c, "malformed CONNECT (%s); closing",
	         mqbi_reason_name(reason));
	mqbi_client_close(c, reason);
}

long mqbi_client_process(mqbi_client *c, const uint8_t *buf, size_t len)
{
	mqbi_worker *w = c->w;
	mqb_broker *b = w->broker;
	size_t pos = 0;
	while (pos < len && !c->held) {
		if (c->state == MQBI_CS_CLOSING || c->w != w)
			return -1;
		uint8_t tf;
		uint32_t rem;
		size_t hl;
		mqbi_dec_status st = mqbi_decode_fixed_header(buf + pos, len - pos, &tf, &rem, &hl);
		if (st == MQBI_DEC_NEED_MORE)
			break;
		if (st == MQBI_DEC_MALFORMED) {
			MQBI_COUNT(w->m.malformed, 1);
			mqbi_client_disconnect(c, MQBI_RC_MALFORMED, "malformed remaining length");
			return -1;
		}
		size_t total = hl + rem;
		if (total > mqbi_lim(b)->max_packet_size) {
			/* [MQTT-3.2.2-?]/[MQTT-4.13]: refuse before buffering it. */
			MQBI_COUNT(w->m.malformed, 1);
			if (c->state == MQBI_CS_CONNECTING) {
				mqbi_log(b, MQB_LOG_NOTICE, "session", c,
				         "CONNECT larger than max_packet_size");
				if ((tf >> 4) == MQBI_CONNECT && len - pos >= hl + 7 &&
				    buf[pos + hl + 6] == 5) {
					c->level = MQBI_V5;
					refuse(c, MQBI_RC_PACKET_TOO_LARGE, "packet too large");
				} else
					mqbi_client_close(c, MQBI_RC_PACKET_TOO_LARGE);
			} else
				mqbi_client_disconnect(c, MQBI_RC_PACKET_TOO_LARGE,
				                       "packet larger than max_packet_size");
			return -1;
		}
		if (len - pos < total)
			break;
		mqbi_dec_ctx ctx = {.level = c->level ? c->level : MQBI_V311,
		                    .from_client = true,
		                    .max_packet_size = mqbi_lim(b)->max_packet_size,
		                    .topic_alias_max = mqbi_lim(b)->max_topic_alias};
		mqbi_packet pkt;
		size_t used = 0;
		uint8_t reason = MQBI_RC_MALFORMED;
		st = mqbi_decode(buf + pos, total, &ctx, &pkt, &used, &reason);
		if (st != MQBI_DEC_OK) {
			MQBI_COUNT(w->m.malformed, 1);
			if (c->state == MQBI_CS_CONNECTING) {
				if ((tf >> 4) == MQBI_CONNECT)
					refuse_bad_connect(c, buf + pos, total, hl, reason);
				else
					mqbi_client_close(c, MQBI_RC_PROTOCOL_ERROR);
			} else {
				char why[64];
				snprintf(why, sizeof why, "invalid %s packet",
				         mqbi_ptype_name(tf >> 4));
				mqbi_client_disconnect(c, reason, why);
			}
			return -1;
		}
		c->last_rx = (uint32_t)mqbi_loop_now(w->loop);
		MQBI_COUNT(w->m.packets_received, 1);
		if (dispatch(c, &pkt, buf + pos, used, len - pos))
			return -1; /* moved: another worker owns it now */
		pos += used;
		if (c->state == MQBI_CS_AUTH_PENDING)
			break; /* the rest waits for the authenticate hook */
	}
	if (c->state == MQBI_CS_CLOSING || c->w != w)
		return -1;
	return (long)pos;
}
