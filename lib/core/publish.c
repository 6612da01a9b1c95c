/* Publishing: a client's PUBLISH and acknowledgements, routing a message to
 * the matching sessions (across workers in batches), and writing PUBLISH
 * packets to clients. */
#include <string.h>

#include "core/core.h"
#include "core/topic.h"

/* ---- Writing a PUBLISH ---------------------------------------------------- */

static size_t put_varint(uint8_t *p, uint32_t v)
{
	return (size_t)mqbi_varint_encode(p, v);
}

/* Returns the alias to send for topic (0 = none) and whether the topic name
 * itself must still be sent (first use of a new alias). */
static uint16_t alias_for(mqbi_client *c, const mqbi_msg *m, bool *send_topic)
{
	*send_topic = true;
	if (c->level != MQBI_V5 || c->topic_alias_max_out == 0)
		return 0;
	mqbi_aliases *al = mqbi_client_aliases(c);
	if (!al)
		return 0;
	void *v = mqbi_strmap_get(&al->out, m->topic, m->topic_len);
	if (v) {
		*send_topic = false;
		return (uint16_t)(uintptr_t)v;
	}
	if (al->out_next >= c->topic_alias_max_out)
		return 0;
	char *key = mqbi_strndup(&c->w->broker->alloc, m->topic, m->topic_len);
	if (!key)
		return 0;
	uint16_t alias = (uint16_t)(al->out_next + 1);
	if (mqbi_strmap_put(&al->out, key, m->topic_len, (void *)(uintptr_t)alias) != MQB_OK) {
		mqbi_free(&c->w->broker->alloc, key);
		return 0;
	}
	al->out_next++;
	return alias;
}

bool mqbi_send_publish(mqbi_client *c, mqbi_delivery *d)
{
	mqbi_worker *w = c->w;
	const mqbi_msg *m = d->msg;
	bool v5 = c->level == MQBI_V5;
	uint64_t now = mqbi_loop_now(w->loop);
	const uint32_t *ids = d->n_sub_ids > 1 ? d->sub_ids : &d->sub_id;
	uint32_t nids = d->n_sub_ids;

	uint32_t props_len = 0;
	uint32_t expiry = 0;
	bool send_topic = true;
	uint16_t alias = 0;
	if (v5) {
		if (m->has_expiry) {
			/* Forward the time left [MQTT-3.3.2-6]. */
			expiry = mqbi_msg_expiry_left(m, now);
			props_len += 5;
		}
		for (uint32_t i = 0; i < nids; i++)
			props_len += 1 + (uint32_t)mqbi_varint_size(ids[i]);
		props_len += m->props_len;
	}
	size_t fixed_rest = 2 + (d->qos ? 2u : 0u) + m->payload_len;
	if (v5) {
		/* Decide on an alias only if the packet fits with the full topic. */
		size_t full = fixed_rest + m->topic_len + props_len + 3 +
		              (size_t)mqbi_varint_size(props_len + 3);
		if (!c->max_packet_out || full + 5 <= c->max_packet_out)
			alias = alias_for(c, m, &send_topic);
		if (alias)
			props_len += 3;
	}
	size_t topic_len = send_topic ? m->topic_len : 0;
	size_t remaining = fixed_rest + topic_len;
	if (v5)
		remaining += (size_t)mqbi_varint_size(props_len) + props_len;
	size_t total = 1 + (size_t)mqbi_varint_size((uint32_t)remaining) + remaining;
	if (c->max_packet_out && total > c->max_packet_out) {
		/* [MQTT-3.1.2-24]: never send more than the client accepts; drop. */
		MQBI_COUNT(w->m.messages_too_large, 1);
		MQBI_COUNT(w->m.messages_dropped, 1);
		mqbi_log(w->broker, MQB_LOG_DEBUG, "session", c,
		         "message on '%s' exceeds the client's maximum packet size; dropped",
		         m->topic);
		return false;
	}
	/* A large payload is not copied: it follows by reference (writev). */
	bool by_ref = m->payload_len >= MQBI_ZEROCOPY_MIN;
	uint8_t *p = mqbi_client_out_reserve(c, by_ref ? total - m->payload_len : total);
	if (!p)
		return false;
	uint8_t *start = p;
	*p++ = (uint8_t)(0x30 | (d->dup && d->qos ? 0x08 : 0) | (d->qos << 1) |
	                 (d->retain ? 1 : 0));
	p += put_varint(p, (uint32_t)remaining);
	*p++ = (uint8_t)(topic_len >> 8);
	*p++ = (uint8_t)topic_len;
	memcpy(p, m->topic, topic_len);
	p += topic_len;
	if (d->qos) {
		*p++ = (uint8_t)(d->packet_id >> 8);
		*p++ = (uint8_t)d->packet_id;
	}
	if (v5) {
		p += put_varint(p, props_len);
		if (m->has_expiry) {
			*p++ = MQBI_PROP_MESSAGE_EXPIRY;
			*p++ = (uint8_t)(expiry >> 24);
			*p++ = (uint8_t)(expiry >> 16);
			*p++ = (uint8_t)(expiry >> 8);
			*p++ = (uint8_t)expiry;
		}
		if (alias) {
			*p++ = MQBI_PROP_TOPIC_ALIAS;
			*p++ = (uint8_t)(alias >> 8);
			*p++ = (uint8_t)alias;
		}
		for (uint32_t i = 0; i < nids; i++) {
			*p++ = MQBI_PROP_SUB_ID;
			p += put_varint(p, ids[i]);
		}
		memcpy(p, m->props, m->props_len);
		p += m->props_len;
	}
	if (by_ref) {
		mqbi_client_out_commit(c, (size_t)(p - start));
		if (!mqbi_client_out_ref(c, (mqbi_msg *)m)) {
			/* The header went out without its payload: the stream is broken. */
			mqbi_client_close(c, MQBI_RC_IMPL_SPECIFIC);
			return false;
		}
	} else {
		memcpy(p, m->payload, m->payload_len);
		p += m->payload_len;
		mqbi_client_out_commit(c, (size_t)(p - start));
	}
	MQBI_COUNT(w->m.messages_sent, 1);
	return true;
}

/* ---- Routing ---------------------------------------------------------- */

typedef struct route_ctx {
	mqbi_worker *w;
	mqbi_msg *msg;
} route_ctx;

static mqbi_target *add_target(mqbi_worker *w)
{
	if (w->ntargets == w->targets_cap) {
		uint32_t cap = w->targets_cap ? w->targets_cap * 2 : 64;
		mqbi_target *t = mqbi_realloc(&w->broker->alloc, w->targets, sizeof(*t) * cap);
		if (!t)
			return NULL;
		w->targets = t;
		w->targets_cap = cap;
	}
	mqbi_target *t = &w->targets[w->ntargets++];
	memset(t, 0, sizeof(*t));
	return t;
}

static void take(route_ctx *rc, mqbi_session *s, const mqbi_route *r, bool multi)
{
	mqbi_target *t = add_target(rc->w);
	if (!t)
		return;
	uint8_t sq = MQBI_SUBOPT_QOS(r->options);
	t->session = s;
	t->qos = rc->msg->qos < sq ? rc->msg->qos : sq;
	t->retain = (r->options & MQBI_SUBOPT_RAP) ? rc->msg->retain : false;
	t->sub_id = r->sub_id;
	t->n_sub_ids = r->sub_id ? 1 : 0;
	t->multi = multi;
	/* A session of another worker may end once the trie lock is released. */
	if (s->home != rc->w)
		atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

static void visit_route(void *user, const mqbi_route *r)
{
	route_ctx *rc = user;
	mqbi_session *s = r->owner;
	if ((r->options & MQBI_SUBOPT_NL) && s->id_len == rc->msg->publisher_len &&
	    memcmp(s->client_id, rc->msg->publisher, s->id_len) == 0)
		return; /* No Local [MQTT-3.8.3-3] */
	take(rc, s, r, (r->options & MQBI_ROUTE_MULTI) != 0);
}

static void visit_group(void *user, mqbi_share_group *g)
{
	route_ctx *rc = user;
	mqb_broker *b = rc->w->broker;
	uint32_t start;
	switch (mqbi_lim(b)->share_strategy) {
	case MQBI_SHARE_RANDOM:
		start = mqbi_random(rc->w) % g->count;
		break;
	case MQBI_SHARE_HASH_TOPIC:
		start = mqbi_strmap_hash(rc->msg->topic, rc->msg->topic_len) % g->count;
		break;
	case MQBI_SHARE_HASH_CLIENTID:
		start = mqbi_strmap_hash(rc->msg->publisher, rc->msg->publisher_len) % g->count;
		break;
	case MQBI_SHARE_STICKY:
		/* Stay with the member picked last while it is online. */
		start = atomic_load_explicit(&g->cursor, memory_order_relaxed) % g->count;
		break;
	default:
		start = atomic_fetch_add_explicit(&g->cursor, 1, memory_order_relaxed) % g->count;
		break;
	}
	/* Prefer a member whose client is connected. */
	uint32_t pick = start;
	for (uint32_t i = 0; i < g->count; i++) {
		uint32_t k = (start + i) % g->count;
		mqbi_session *s = g->members[k].owner;
		if (atomic_load_explicit(&s->online, memory_order_relaxed)) {
			pick = k;
			break;
		}
	}
	if (mqbi_lim(b)->share_strategy == MQBI_SHARE_STICKY)
		atomic_store_explicit(&g->cursor, pick, memory_order_relaxed);
	take(rc, g->members[pick].owner, &g->members[pick], false);
}

/* Merges the matches of one session with several overlapping subscriptions
 * into one delivery: the highest QoS and every subscription identifier. */
static void merge_multi(mqbi_worker *w)
{
	const mqb_allocator *a = &w->broker->alloc;
	for (uint32_t i = 0; i < w->ntargets; i++) {
		mqbi_target *t = &w->targets[i];
		if (!t->multi || !t->session)
			continue;
		for (uint32_t j = i + 1; j < w->ntargets; j++) {
			mqbi_target *u = &w->targets[j];
			if (!u->multi || u->session != t->session)
				continue;
			if (u->qos > t->qos)
				t->qos = u->qos;
			t->retain = t->retain || u->retain;
			if (u->n_sub_ids) {
				uint32_t *ids =
				        mqbi_malloc(a, sizeof(uint32_t) * (t->n_sub_ids + 1u));
				if (ids) {
					if (t->n_sub_ids == 1)
						ids[0] = t->sub_id;
					else if (t->n_sub_ids > 1)
						memcpy(ids, t->sub_ids,
						       sizeof(uint32_t) * t->n_sub_ids);
					ids[t->n_sub_ids] = u->sub_id;
					mqbi_free(a, t->sub_ids);
					t->sub_ids = ids;
					t->n_sub_ids++;
				}
			}
			if (u->session->home != w)
				mqbi_session_unref(u->session); /* the extra reference */
			u->session = NULL;
		}
	}
}

#define XBATCH_CAP 256

/* A batch for deliveries from w: a spent one when there is one, so steady
 * traffic between workers allocates nothing. */
static mqbi_xbatch *xbatch_get(mqbi_worker *w)
{
	if (!w->xfree)
		w->xfree = atomic_exchange_explicit(&w->xreturned, NULL, memory_order_acquire);
	mqbi_xbatch *xb = w->xfree;
	if (xb) {
		w->xfree = xb->free_next;
		return xb;
	}
	xb = mqbi_malloc(&w->broker->alloc, sizeof(*xb) + sizeof(mqbi_xdelivery) * XBATCH_CAP);
	if (xb) {
		xb->broker = w->broker;
		xb->origin = w;
		xb->cap = XBATCH_CAP;
	}
	return xb;
}

/* Hands a spent batch back to the worker that made it (any thread). */
static void xbatch_return(mqbi_xbatch *xb)
{
	mqbi_worker *o = xb->origin;
	mqbi_xbatch *head = atomic_load_explicit(&o->xreturned, memory_order_relaxed);
	do
		xb->free_next = head;
	while (!atomic_compare_exchange_weak_explicit(&o->xreturned, &head, xb,
	                                              memory_order_release, memory_order_relaxed));
}

void mqbi_worker_free_xbatches(mqbi_worker *w)
{
	mqbi_xbatch *xb = atomic_exchange(&w->xreturned, NULL);
	while (xb) {
		mqbi_xbatch *next = xb->free_next;
		mqbi_free(&w->broker->alloc, xb);
		xb = next;
	}
	while (w->xfree) {
		xb = w->xfree;
		w->xfree = xb->free_next;
		mqbi_free(&w->broker->alloc, xb);
	}
}

static void xbatch_run(mqbi_loop *l, mqbi_inbox_item *it)
{
	mqbi_xbatch *xb = (mqbi_xbatch *)it;
	const mqb_allocator *a = &xb->broker->alloc;
	for (uint32_t i = 0; i < xb->count; i++) {
		mqbi_xdelivery *d = &xb->d[i];
		const uint32_t *ids = d->n_sub_ids > 1 ? d->sub_ids : &d->sub_id;
		mqbi_session_deliver(d->session, d->msg, d->qos, d->retain, ids, d->n_sub_ids,
		                     d->stored);
		mqbi_session_unref(d->session);
		mqbi_msg_unref(a, d->msg);
		mqbi_free(a, d->sub_ids);
	}
	xbatch_return(xb);
}

static void xbatch_drop(mqbi_inbox_item *it)
{
	mqbi_xbatch *xb = (mqbi_xbatch *)it;
	const mqb_allocator *a = &xb->broker->alloc;
	for (uint32_t i = 0; i < xb->count; i++) {
		mqbi_session_unref(xb->d[i].session);
		mqbi_msg_unref(a, xb->d[i].msg);
		mqbi_free(a, xb->d[i].sub_ids);
	}
	mqbi_free(a, xb);
}

/* Posts a batch to its worker. The journal goes first: what the receiver
 * journals about these deliveries must follow their own records. */
static void post_xbatch(mqbi_worker *w, unsigned to, mqbi_xbatch *xb)
{
	mqb_broker *b = w->broker;
	mqbi_journal_lock(b);
	mqbi_journal_flush_locked(w);
	mqbi_loop_post(b->workers[to].loop, &xb->item);
	mqbi_journal_unlock(b);
}

void mqbi_worker_flush_outbox(mqbi_worker *w)
{
	mqb_broker *b = w->broker;
	/* Every loop iteration ends here: take the shared lock only for work. */
	bool any = w->j.n > 0;
	for (unsigned i = 0; i < b->nworkers && !any; i++)
		any = w->outbox[i] != NULL;
	if (!any)
		return;
	mqbi_journal_lock(b);
	mqbi_journal_flush_locked(w);
	for (unsigned i = 0; i < b->nworkers; i++) {
		mqbi_xbatch *xb = w->outbox[i];
		if (!xb)
			continue;
		w->outbox[i] = NULL;
		mqbi_loop_post(b->workers[i].loop, &xb->item);
	}
	mqbi_journal_unlock(b);
}

static void send_remote(mqbi_worker *w, mqbi_target *t, mqbi_msg *msg, bool stored)
{
	unsigned home = t->session->home->index;
	mqbi_xbatch *xb = w->outbox[home];
	if (!xb || xb->count == xb->cap) {
		if (xb) {
			/* Full: post it now and start another. */
			w->outbox[home] = NULL;
			post_xbatch(w, home, xb);
		}
		xb = xbatch_get(w);
		if (!xb) {
			mqbi_session_unref(t->session);
			MQBI_COUNT(w->m.messages_dropped, 1);
			return;
		}
		xb->item.run = xbatch_run;
		xb->item.drop = xbatch_drop;
		xb->count = 0;
		w->outbox[home] = xb;
	}
	mqbi_xdelivery *d = &xb->d[xb->count++];
	d->session = t->session; /* the reference taken while matching */
	d->msg = mqbi_msg_ref(msg);
	d->qos = t->qos;
	d->retain = t->retain;
	d->stored = stored;
	d->n_sub_ids = t->n_sub_ids;
	d->sub_id = t->sub_id;
	d->sub_ids = t->sub_ids; /* ownership moves to the batch */
	t->sub_ids = NULL;
}

size_t mqbi_route_message(mqbi_worker *w, mqbi_msg *msg)
{
	mqb_broker *b = w->broker;
	route_ctx rc = {w, msg};
	mqbi_trie_visitor v = {visit_route, visit_group, &rc};
	w->ntargets = 0;
	mqbi_trie_match(b->trie, msg->topic, msg->topic_len, &v);
	uint32_t n = w->ntargets;
	bool any_multi = false;
	for (uint32_t i = 0; i < n && !any_multi; i++)
		any_multi = w->targets[i].multi;
	if (any_multi)
		merge_multi(w);
	size_t matched = 0;
	for (uint32_t i = 0; i < n; i++) {
		mqbi_target *t = &w->targets[i];
		if (!t->session)
			continue;
		matched++;
		if (w->bp_want && !w->bp_hit && mqbi_session_congested(t->session))
			w->bp_hit = mqbi_session_ref(t->session);
		const uint32_t *ids = t->n_sub_ids > 1 ? t->sub_ids : &t->sub_id;
		if (t->session->home == w) {
			mqbi_session_deliver(t->session, msg, t->qos, t->retain, ids, t->n_sub_ids,
			                     false);
		} else {
			/* Journalled here, so the publisher's acknowledgement can wait
			 * for it (the session's worker would write it later). */
			uint64_t sid = atomic_load_explicit(&t->session->sid, memory_order_relaxed);
			bool stored = t->qos > 0 && sid && b->journal && !b->restoring &&
			              mqbi_session_journal_delivery(w, t->session, sid, msg, t->qos,
			                                            t->retain, ids, t->n_sub_ids);
			send_remote(w, t, msg, stored);
		}
		mqbi_free(&b->alloc, t->sub_ids);
		t->sub_ids = NULL;
	}
	w->ntargets = 0;
	if (!matched) {
		MQBI_COUNT(w->m.messages_dropped, 1); /* no subscribers */
		if (mqbi_events_on(b) && msg->topic[0] != '$')
			mqbi_event(b, MQB_EVENT_MESSAGE_DROPPED, NULL, msg->publisher, 0,
			           msg->topic, msg->qos, "no subscribers");
	}
	return matched;
}

/* The retained message on msg's topic, on disk ($SYS ones are made anew). */
static void journal_retained(mqbi_worker *w, mqbi_msg *msg)
{
	if (mqbi_topic_is_sys(msg->topic, msg->topic_len))
		return;
	mqbi_rec *r = mqbi_journal_add(
	        w, msg->payload_len ? MQBI_REC_RETAIN_PUT : MQBI_REC_RETAIN_DEL, 0);
	if (!r)
		return;
	if (msg->payload_len) {
		r->msg = mqbi_msg_ref(msg);
	} else {
		r->text = mqbi_strndup(&w->broker->alloc, msg->topic, msg->topic_len);
		r->text_len = msg->topic_len;
	}
}

size_t mqbi_publish_message(mqbi_worker *w, mqbi_msg *msg)
{
	if (msg->retain) {
		mqbi_retain_store(w->broker, msg);
		journal_retained(w, msg);
	}
	return mqbi_route_message(w, msg);
}

void mqbi_publish_will(mqbi_worker *w, mqbi_client *c, mqbi_msg *will)
{
	uint8_t reason;
	mqbi_msg *msg = mqbi_hook_on_publish(w, c, will, &reason);
	if (!msg)
		return;
	mqbi_publish_message(w, msg);
	mqbi_msg_unref(&w->broker->alloc, msg);
}

void mqbi_retain_store(mqb_broker *b, mqbi_msg *msg)
{
	void *old = NULL;
	/* An empty payload deletes the retained message [MQTT-3.3.1-6]. */
	mqbi_msg *value = msg->payload_len ? mqbi_msg_ref(msg) : NULL;
	if (mqbi_retain_set(b->retain, msg->topic, msg->topic_len, value, &old) != MQB_OK) {
		mqbi_msg_unref(&b->alloc, value);
		mqbi_log(b, MQB_LOG_ERROR, "retain", NULL,
		         "cannot store the retained message on '%s'", msg->topic);
		return;
	}
	mqbi_msg_unref(&b->alloc, old);
}

/* ---- A client's PUBLISH and acknowledgements ----------------------------- */

static mqbi_packet ack_packet(const mqbi_client *c, mqbi_ptype type, uint16_t id, uint8_t reason)
{
	mqbi_packet p = {.type = type};
	p.u.ack.packet_id = id;
	p.u.ack.reason = c->level == MQBI_V5 ? reason : 0;
	return p;
}

static void send_ack(mqbi_client *c, mqbi_ptype type, uint16_t id, uint8_t reason)
{
	mqbi_packet p = ack_packet(c, type, id, reason);
	mqbi_client_send_packet(c, &p);
}

/* Acknowledges a publish, in order with the earlier ones, once what it
 * journalled since `mark` is durable (journal.h). */
static void ack_publish(mqbi_client *c, mqbi_ptype type, uint16_t id, uint8_t reason, uint64_t mark)
{
	mqbi_packet p = ack_packet(c, type, id, reason);
	mqbi_journal_send(c, &p, mark);
}

static void ack_now(mqbi_client *c, mqbi_ptype type, uint16_t id, uint8_t reason)
{
	ack_publish(c, type, id, reason, mqbi_journal_mark(&c->w->j));
}

/* Refuses a QoS > 0 publish with a reason (v5) or closes (v3); QoS 0 is dropped. */
static void refuse_publish(mqbi_client *c, const mqbi_publish *p, uint8_t reason, const char *why)
{
	mqbi_log(c->w->broker, MQB_LOG_NOTICE, "session", c, "publish refused: %s", why);
	MQBI_COUNT(c->w->m.messages_dropped, 1);
	if (p->qos == 0)
		return;
	if (c->level != MQBI_V5) {
		mqbi_client_close(c, reason);
		return;
	}
	ack_now(c, p->qos == 1 ? MQBI_PUBACK : MQBI_PUBREC, p->packet_id, reason);
}

void mqbi_handle_publish(mqbi_client *c, const mqbi_publish *p)
{
	mqbi_worker *w = c->w;
	mqb_broker *b = w->broker;
	const mqbi_limits *lim = mqbi_lim(b);
	mqbi_session *s = c->session;
	MQBI_COUNT(w->m.messages_received, 1);

	if (p->qos > lim->max_qos)
		return mqbi_client_disconnect(c, MQBI_RC_QOS_NOT_SUPPORTED,
		                              "QoS above max_qos_allowed"); /* [MQTT-3.3.1-4] */
	if (p->retain && !lim->retain_available)
		return mqbi_client_disconnect(c, MQBI_RC_RETAIN_NOT_SUPPORTED,
		                              "retain is not available"); /* [MQTT-3.3.1-10] */

	/* Topic aliases from the client [MQTT-3.3.2-7..12]. */
	const char *topic = (const char *)p->topic.ptr;
	size_t tlen = p->topic.len;
	if (c->level == MQBI_V5 && mqbi_props_has(&p->props, MQBI_PROP_TOPIC_ALIAS)) {
		uint16_t alias = p->props.topic_alias;
		if (alias == 0 || alias > lim->max_topic_alias)
			return mqbi_client_disconnect(c, MQBI_RC_TOPIC_ALIAS_INVALID,
			                              "topic alias invalid");
		mqbi_aliases *al = c->aliases;
		if (tlen) {
			al = mqbi_client_aliases(c);
			if (!al)
				return mqbi_client_disconnect(c, MQBI_RC_IMPL_SPECIFIC,
				                              "out of memory");
			if (alias > al->in_cap) {
				uint16_t cap = alias < 16 ? 16 : alias;
				if (cap < al->in_cap * 2u &&
				    al->in_cap * 2u <= lim->max_topic_alias)
					cap = (uint16_t)(al->in_cap * 2u);
				char **n = mqbi_realloc(&b->alloc, al->in, sizeof(char *) * cap);
				if (!n)
					return mqbi_client_disconnect(c, MQBI_RC_IMPL_SPECIFIC,
					                              "out of memory");
				memset(n + al->in_cap, 0, sizeof(char *) * (cap - al->in_cap));
				al->in = n;
				al->in_cap = cap;
			}
			char *copy = mqbi_strndup(&b->alloc, topic, tlen);
			if (!copy)
				return mqbi_client_disconnect(c, MQBI_RC_IMPL_SPECIFIC,
				                              "out of memory");
			mqbi_free(&b->alloc, al->in[alias - 1]);
			al->in[alias - 1] = copy;
		} else {
			if (!al || alias > al->in_cap || !al->in[alias - 1])
				return mqbi_client_disconnect(
				        c, MQBI_RC_PROTOCOL_ERROR,
				        "unknown topic alias"); /* [MQTT-3.3.4-?] */
			topic = al->in[alias - 1];
			tlen = strlen(topic);
		}
	}
	/* The decoder refused wildcards and NUL in the topic (and an alias maps to
	 * a topic it checked before): only an empty one is left to refuse. */
	if (tlen == 0)
		return mqbi_client_disconnect(c, MQBI_RC_TOPIC_NAME_INVALID, "invalid topic name");
	if (lim->max_topic_levels && mqbi_topic_levels(topic, tlen) > lim->max_topic_levels)
		return refuse_publish(c, p, MQBI_RC_TOPIC_NAME_INVALID, "too many topic levels");
	if (mqbi_topic_is_sys(topic, tlen))
		return refuse_publish(c, p, MQBI_RC_NOT_AUTHORIZED,
		                      "clients may not publish to $SYS");

	uint8_t granted = p->qos;
	if (!mqbi_hook_authorize(c, MQB_ACTION_PUBLISH, topic, tlen, &granted)) {
		mqbi_event(b, MQB_EVENT_MESSAGE_DROPPED, c, NULL, MQBI_RC_NOT_AUTHORIZED, NULL,
		           p->qos, "publish not authorized");
		MQBI_COUNT(w->m.messages_dropped, 1);
		/* 3.x clients cannot be told: acknowledge and drop (EMQX's
		 * acl_deny_action = ignore). */
		if (p->qos == 1)
			ack_now(c, MQBI_PUBACK, p->packet_id, MQBI_RC_NOT_AUTHORIZED);
		else if (p->qos == 2)
			ack_now(c, MQBI_PUBREC, p->packet_id, MQBI_RC_NOT_AUTHORIZED);
		return;
	}
	if (p->qos > 0 && mqbi_journal_refusing(b) &&
	    !(p->qos == 2 && mqbi_session_awaiting_rel(s, p->packet_id))) {
		mqbi_journal_count_refused(b);
		return refuse_publish(c, p, MQBI_RC_QUOTA_EXCEEDED,
		                      "disk budget persistence.max_bytes reached");
	}

	uint64_t mark = mqbi_journal_mark(&w->j);
	uint64_t sid = atomic_load_explicit(&s->sid, memory_order_relaxed);
	if (p->qos == 2) {
		/* Exactly once: a retransmitted PUBLISH is acknowledged, not routed. */
		if (mqbi_session_awaiting_rel(s, p->packet_id)) {
			ack_publish(c, MQBI_PUBREC, p->packet_id, MQBI_RC_SUCCESS, mark);
			return;
		}
		if (c->level == MQBI_V5 && s->awaiting_rel_count >= lim->receive_max)
			return mqbi_client_disconnect(
			        c, MQBI_RC_RECEIVE_MAX_EXCEEDED,
			        "receive maximum exceeded"); /* [MQTT-3.3.4-7] */
		mqb_err err =
		        mqbi_session_awaiting_rel_add(s, p->packet_id, mqbi_loop_now(w->loop));
		if (err == MQB_ERR_RANGE) {
			if (c->level == MQBI_V5)
				return ack_publish(c, MQBI_PUBREC, p->packet_id,
				                   MQBI_RC_QUOTA_EXCEEDED, mark);
			return mqbi_client_disconnect(c, MQBI_RC_QUOTA_EXCEEDED,
			                              "max_awaiting_rel reached");
		}
		if (err)
			return mqbi_client_disconnect(c, MQBI_RC_IMPL_SPECIFIC, "out of memory");
		/* A crash must not make a retransmission look new. */
		mqbi_rec *r = sid ? mqbi_journal_add(w, MQBI_REC_AWREL_PUT, sid) : NULL;
		if (r)
			r->packet_id = p->packet_id;
	}

	bool v5 = c->level == MQBI_V5;
	bool has_exp = v5 && mqbi_props_has(&p->props, MQBI_PROP_MESSAGE_EXPIRY);
	mqbi_msg *msg =
	        mqbi_msg_create(&b->alloc, topic, tlen, v5 ? p->props.raw : NULL,
	                        v5 ? p->props.raw_len : 0, p->payload.ptr, p->payload.len, p->qos,
	                        p->retain, c->client_id, s->id_len, c->username, has_exp,
	                        has_exp ? p->props.message_expiry : 0, mqbi_loop_now(w->loop));
	if (!msg) {
		if (p->qos == 2)
			mqbi_session_awaiting_rel_remove(s, p->packet_id);
		return refuse_publish(c, p, MQBI_RC_IMPL_SPECIFIC, "out of memory");
	}
	uint8_t rc = MQBI_RC_SUCCESS;
	msg = mqbi_hook_on_publish(w, c, msg, &rc);
	if (!msg) {
		MQBI_COUNT(w->m.messages_dropped, 1);
		if (p->qos == 2 && c->level == MQBI_V5 &&
		    mqbi_session_awaiting_rel_remove(s, p->packet_id)) { /* the exchange ends */
			mqbi_rec *r = sid ? mqbi_journal_add(w, MQBI_REC_AWREL_DEL, sid) : NULL;
			if (r)
				r->packet_id = p->packet_id;
		}
	} else {
		w->bp_want = p->qos > 0;
		size_t matched = mqbi_publish_message(w, msg);
		w->bp_want = false;
		mqbi_msg_unref(&b->alloc, msg);
		rc = matched ? MQBI_RC_SUCCESS : MQBI_RC_NO_MATCHING_SUBSCRIBERS;
	}
	if (w->bp_hit) {
		/* A receiver is congested: read no more from this publisher until
		 * it catches up (not for its own session: it could not ack then). */
		mqbi_session *hit = w->bp_hit;
		w->bp_hit = NULL;
		if (hit != s)
			mqbi_bp_hold(c, hit);
		else
			mqbi_session_unref(hit);
	}
	if (p->qos == 1)
		ack_publish(c, MQBI_PUBACK, p->packet_id, rc, mark);
	else if (p->qos == 2)
		ack_publish(c, MQBI_PUBREC, p->packet_id, rc, mark);
}

void mqbi_handle_ack(mqbi_client *c, mqbi_ptype type, const mqbi_ack *a)
{
	mqbi_session *s = c->session;
	mqbi_delivery *d;
	switch (type) {
	case MQBI_PUBACK:
		d = mqbi_session_inflight_find(s, a->packet_id);
		if (d && d->state == MQBI_DS_WAIT_PUBACK) {
			mqbi_session_delivery_done(s, d);
			mqbi_session_pump(s);
		}
		return;
	case MQBI_PUBREC:
		d = mqbi_session_inflight_find(s, a->packet_id);
		if (!d || d->state != MQBI_DS_WAIT_PUBREC) {
			if (!d)
				send_ack(c, MQBI_PUBREL, a->packet_id, MQBI_RC_PACKET_ID_NOT_FOUND);
			return;
		}
		if (a->reason >= 0x80) {
			/* The client refused the message: the exchange ends here. */
			mqbi_session_delivery_done(s, d);
			mqbi_session_pump(s);
			return;
		}
		d->state = MQBI_DS_WAIT_PUBCOMP;
		if (d->stored) {
			/* PUBREL tells the client to forget the packet id: only once a
			 * crash could not make us send the PUBLISH again. */
			mqbi_session_store_state(s, d);
			if (mqbi_journal_hold(s, d, MQBI_PUBREL))
				return;
		} else {
			mqbi_msg_unref(&c->w->broker->alloc,
			               d->msg); /* only the id is needed now */
			d->msg = NULL;
		}
		send_ack(c, MQBI_PUBREL, a->packet_id, MQBI_RC_SUCCESS);
		return;
	case MQBI_PUBREL: {
		uint64_t mark = mqbi_journal_mark(&c->w->j);
		bool known = mqbi_session_awaiting_rel_remove(s, a->packet_id);
		uint64_t sid = atomic_load_explicit(&s->sid, memory_order_relaxed);
		mqbi_rec *r = known && sid ? mqbi_journal_add(c->w, MQBI_REC_AWREL_DEL, sid) : NULL;
		if (r)
			r->packet_id = a->packet_id;
		/* PUBCOMP frees the packet id for a new message: not before we
		 * forgot it for good. */
		ack_publish(c, MQBI_PUBCOMP, a->packet_id,
		            known ? MQBI_RC_SUCCESS : MQBI_RC_PACKET_ID_NOT_FOUND, mark);
		return;
	}
	case MQBI_PUBCOMP:
		d = mqbi_session_inflight_find(s, a->packet_id);
		if (d && d->state == MQBI_DS_WAIT_PUBCOMP && !d->held) {
			mqbi_session_delivery_done(s, d);
			mqbi_session_pump(s);
		}
		return;
	default:
		return;
	}
}
