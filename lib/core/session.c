/* Sessions: subscriptions, the queue of waiting deliveries, the in-flight
 * window, expiry and delayed wills. A session is only touched on its home
 * worker; other workers hold references while deliveries are in transit. */
#include <string.h>

#include "core/core.h"

#define container_of(p, type, member) ((type *)((char *)(p)-offsetof(type, member)))

static const mqb_allocator *alloc_of(const mqbi_session *s)
{
	return &s->home->broker->alloc;
}

mqbi_session *mqbi_session_find(mqbi_worker *w, const char *id, size_t len)
{
	return mqbi_strmap_get(&w->sessions, id, len);
}

/* Where a host session keeps its callback: after its (empty) id. */
static size_t host_offset(void)
{
	size_t o = offsetof(mqbi_session, client_id) + 1;
	return (o + _Alignof(mqbi_host_target) - 1) & ~(_Alignof(mqbi_host_target) - 1);
}

mqbi_host_target *mqbi_session_host(mqbi_session *s)
{
	return s->host ? (mqbi_host_target *)((char *)s + host_offset()) : NULL;
}

static mqbi_session *session_new(mqbi_worker *w, const char *id, size_t len, bool listed, bool host)
{
	mqb_broker *b = w->broker;
	if (len > UINT16_MAX)
		return NULL; /* MQTT strings are shorter */
	size_t size =
	        host ? host_offset() + sizeof(mqbi_host_target) : sizeof(mqbi_session) + len + 1;
	mqbi_session *s = mqbi_calloc(&b->alloc, size);
	if (!s)
		return NULL;
	memcpy(s->client_id, id, len);
	if (listed && mqbi_strmap_put(&w->sessions, s->client_id, len, s) != MQB_OK) {
		mqbi_free(&b->alloc, s);
		return NULL;
	}
	atomic_init(&s->refs, 1);
	atomic_init(&s->online, !listed);
	s->listed = listed;
	s->host = host;
	s->home = w;
	s->id_len = (uint16_t)len;
	s->next_packet_id = 1;
	mqbi_strmap_init(&s->subs, &b->alloc);
	if (listed)
		MQBI_COUNT(w->m.sessions, 1);
	return s;
}

mqbi_session *mqbi_session_create(mqbi_worker *w, const char *id, size_t len)
{
	return session_new(w, id, len, true, false);
}

mqbi_session *mqbi_session_create_host(mqbi_worker *w, mqb_message_fn fn, void *user)
{
	mqbi_session *s = session_new(w, "", 0, false, true);
	if (s) {
		*mqbi_session_host(s) = (mqbi_host_target){fn, user};
		s->expiry = UINT32_MAX;
	}
	return s;
}

void mqbi_delivery_release(const mqb_allocator *a, mqbi_delivery *d)
{
	mqbi_msg_unref(a, d->msg);
	mqbi_free(a, d->sub_ids);
	d->msg = NULL;
	d->sub_ids = NULL;
}

/* ---- The queue (a ring) ------------------------------------------------- */

static mqbi_delivery *dq_at(mqbi_dqueue *q, uint32_t i)
{
	return &q->items[(q->head + i) & (q->cap - 1)];
}

static bool dq_push(const mqb_allocator *a, mqbi_dqueue *q, const mqbi_delivery *d)
{
	if (q->count == q->cap) {
		uint32_t cap = q->cap ? q->cap * 2 : 8;
		mqbi_delivery *items = mqbi_malloc(a, sizeof(*items) * cap);
		if (!items)
			return false;
		for (uint32_t i = 0; i < q->count; i++)
			items[i] = *dq_at(q, i);
		mqbi_free(a, q->items);
		q->items = items;
		q->cap = cap;
		q->head = 0;
	}
	*dq_at(q, q->count++) = *d;
	q->bytes += d->msg->payload_len;
	q->qos0 += d->qos == 0;
	return true;
}

static void dq_pop(mqbi_dqueue *q, mqbi_delivery *out)
{
	*out = *dq_at(q, 0);
	q->head = (q->head + 1) & (q->cap - 1);
	q->count--;
	q->bytes -= out->msg->payload_len;
	q->qos0 -= out->qos == 0;
}

/* Removes item i, keeping the order of the rest. */
static void dq_remove(mqbi_dqueue *q, uint32_t i, mqbi_delivery *out)
{
	*out = *dq_at(q, i);
	for (; i + 1 < q->count; i++)
		*dq_at(q, i) = *dq_at(q, i + 1);
	q->count--;
	q->bytes -= out->msg->payload_len;
	q->qos0 -= out->qos == 0;
}

static void dq_free(const mqb_allocator *a, mqbi_dqueue *q)
{
	for (uint32_t i = 0; i < q->count; i++)
		mqbi_delivery_release(a, dq_at(q, i));
	mqbi_free(a, q->items);
	memset(q, 0, sizeof(*q));
}

/* ---- Persistence -------------------------------------------------------- */

static uint64_t sid_of(const mqbi_session *s)
{
	return atomic_load_explicit(&s->sid, memory_order_relaxed);
}

/* Whether changes of s are journalled now. */
static bool journalled(const mqbi_session *s)
{
	return sid_of(s) && s->home->broker->journal && !s->home->broker->restoring;
}

bool mqbi_session_journal_delivery(mqbi_worker *w, mqbi_session *s, uint64_t sid, mqbi_msg *msg,
                                   uint8_t qos, bool retain, const uint32_t *sub_ids,
                                   uint16_t n_sub_ids)
{
	uint64_t mid = mqbi_journal_msg(w, msg);
	mqbi_rec *r = mqbi_journal_add(w, MQBI_REC_DLV_PUT, sid);
	if (!r)
		return false;
	r->mid = mid;
	r->qos = qos;
	r->flags = retain;
	r->n_sub_ids = n_sub_ids;
	if (n_sub_ids == 1)
		r->num = sub_ids[0];
	if (n_sub_ids > 1) {
		r->sub_ids = mqbi_malloc(&w->broker->alloc, sizeof(uint32_t) * n_sub_ids);
		if (!r->sub_ids) {
			r->n_sub_ids = 0; /* stored without them rather than not at all */
		} else {
			memcpy(r->sub_ids, sub_ids, sizeof(uint32_t) * n_sub_ids);
		}
	}
	return true;
}

/* The delivery is done (acknowledged, dropped, expired): off the disk. */
static void unstore(mqbi_session *s, mqbi_delivery *d)
{
	if (!d->stored || !journalled(s))
		return;
	mqbi_rec *r = mqbi_journal_add(s->home, MQBI_REC_DLV_DEL, sid_of(s));
	if (r)
		r->mid = atomic_load_explicit(&d->msg->store_id, memory_order_relaxed);
	d->stored = false;
}

/* An in-flight delivery's state (packet id, QoS 2 step) on disk. */
void mqbi_session_store_state(mqbi_session *s, const mqbi_delivery *d)
{
	if (!d->stored || !journalled(s))
		return;
	mqbi_rec *r = mqbi_journal_add(s->home, MQBI_REC_DLV_STATE, sid_of(s));
	if (r) {
		r->mid = atomic_load_explicit(&d->msg->store_id, memory_order_relaxed);
		r->packet_id = d->packet_id;
		r->state = d->state;
	}
}

static void store_delivery(mqbi_session *s, mqbi_delivery *d)
{
	if (d->qos == 0 || d->stored || !d->msg)
		return;
	const uint32_t *ids = d->n_sub_ids > 1 ? d->sub_ids : &d->sub_id;
	d->stored = mqbi_session_journal_delivery(s->home, s, sid_of(s), d->msg, d->qos, d->retain,
	                                          ids, d->n_sub_ids);
}

static void store_will(mqbi_session *s)
{
	struct mqbi_pending_will *pw = s->pending_will;
	if (!pw || !journalled(s))
		return;
	mqbi_rec *r = mqbi_journal_add(s->home, MQBI_REC_WILL_PUT, sid_of(s));
	if (r) {
		r->msg = mqbi_msg_ref(pw->msg);
		uint64_t now = mqbi_loop_now(s->home->loop);
		uint64_t due = pw->timer.deadline;
		r->at = mqbi_wall_ms() + (int64_t)(due > now ? due - now : 0);
	}
}

static void store_sub(mqbi_session *s, const mqbi_sub *sub)
{
	mqbi_rec *r = mqbi_journal_add(s->home, MQBI_REC_SUB_PUT, sid_of(s));
	if (!r)
		return;
	r->text = mqbi_strndup(alloc_of(s), sub->text, sub->text_len);
	r->text_len = sub->text_len;
	r->flags = sub->options;
	r->num = sub->sub_id;
}

void mqbi_session_store_sub(mqbi_session *s, const char *text, size_t len, bool removed)
{
	if (!journalled(s))
		return;
	if (!removed) {
		mqbi_sub *sub = mqbi_strmap_get(&s->subs, text, len);
		if (sub)
			store_sub(s, sub);
		return;
	}
	mqbi_rec *r = mqbi_journal_add(s->home, MQBI_REC_SUB_DEL, sid_of(s));
	if (r) {
		r->text = mqbi_strndup(alloc_of(s), text, len);
		r->text_len = (uint32_t)len;
	}
}

void mqbi_session_persist(mqbi_session *s)
{
	mqbi_worker *w = s->home;
	mqb_broker *b = w->broker;
	if (!b->journal || b->restoring || !s->listed || s->ended)
		return;
	uint64_t sid = sid_of(s);
	bool fresh = sid == 0;
	if (fresh && s->expiry == 0)
		return; /* ends with its connection: nothing to keep */
	if (fresh)
		sid = mqbi_journal_new_sid(b);
	mqbi_rec *r = mqbi_journal_add(w, MQBI_REC_SESSION_PUT, sid);
	if (!r)
		return;
	/* Expiry 0 is stored too: such a session does not outlive a crash. */
	r->text = mqbi_strndup(alloc_of(s), s->client_id, s->id_len);
	r->text_len = s->id_len;
	r->num = s->expiry;
	r->flags = s->level;
	r->at = s->client ? 0 : mqbi_wall_ms();
	if (!fresh)
		return;
	/* Newly stored: everything it holds goes too. */
	atomic_store(&s->sid, sid);
	size_t pos = 0;
	const char *key;
	size_t klen;
	void *val;
	while (mqbi_strmap_next(&s->subs, &pos, &key, &klen, &val))
		store_sub(s, val);
	for (uint32_t i = 0; i < s->inflight_slots; i++) {
		mqbi_delivery *d = &s->inflight[(s->inflight_head + i) & (s->inflight_cap - 1)];
		if (d->state == MQBI_DS_DONE)
			continue;
		store_delivery(s, d);
		mqbi_session_store_state(s, d);
	}
	for (uint32_t i = 0; i < s->queue.count; i++) {
		mqbi_delivery *d = &s->queue.items[(s->queue.head + i) & (s->queue.cap - 1)];
		store_delivery(s, d);
		s->queue_stored += d->stored;
	}
	store_will(s);
}

/* ---- Lifetime ----------------------------------------------------------- */

static void session_free(mqbi_session *s)
{
	const mqb_allocator *a = alloc_of(s);
	mqbi_strmap_fini(&s->subs);
	mqbi_free(a, s);
}

void mqbi_session_unref(mqbi_session *s)
{
	if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
		session_free(s);
}

void mqbi_session_remove_all_subs(mqbi_session *s)
{
	const mqb_allocator *a = alloc_of(s);
	mqbi_trie *trie = s->home->broker->trie;
	size_t pos = 0;
	const char *key;
	size_t klen;
	void *val;
	while (mqbi_strmap_next(&s->subs, &pos, &key, &klen, &val)) {
		mqbi_sub *sub = val;
		mqbi_trie_remove(trie, sub->text + sub->filter_off, sub->filter_len,
		                 sub->text + sub->group_off, sub->group_len, s);
		mqbi_strmap_remove(&s->subs, key, klen);
		mqbi_free(a, sub);
	}
}

/* Stops the delayed will's timer and hands its message to the caller. */
static mqbi_msg *take_pending_will(mqbi_session *s)
{
	struct mqbi_pending_will *pw = s->pending_will;
	if (!pw)
		return NULL;
	mqbi_timer_stop(s->home->loop, &pw->timer);
	mqbi_msg *will = pw->msg;
	s->pending_will = NULL;
	mqbi_free(alloc_of(s), pw);
	if (journalled(s))
		mqbi_journal_add(s->home, MQBI_REC_WILL_DEL, sid_of(s));
	return will;
}

static void publish_will_now(mqbi_session *s, mqbi_msg *will)
{
	mqbi_publish_will(s->home, s->client, will);
}

void mqbi_session_end(mqbi_session *s, const char *why)
{
	if (s->ended)
		return;
	mqbi_worker *w = s->home;
	const mqb_allocator *a = alloc_of(s);
	if (s->listed)
		mqbi_log(w->broker, MQB_LOG_INFO, "session", s->client, "session %s ended: %s",
		         s->client_id, why);
	if (s->client) {
		/* The client outlives the session here (broker destroyed, or the
		 * host discarded the session): it needs its own copy of the id. */
		mqbi_client *c = s->client;
		if (c->id_borrowed) {
			c->client_id = mqbi_strndup(a, s->client_id, s->id_len);
			c->id_borrowed = false;
		}
		c->session = NULL;
		s->client = NULL;
	}
	atomic_store(&s->online, false);
	/* Off the disk first (a delayed will it publishes below is not its own). */
	if (journalled(s))
		mqbi_journal_add(w, MQBI_REC_SESSION_DEL, sid_of(s));
	atomic_store(&s->sid, 0);
	s->ended = true;
	mqbi_bp_update(s); /* nobody waits for an ended session */
	if (s->listed)
		mqbi_strmap_remove(&w->sessions, s->client_id, s->id_len);
	mqbi_session_remove_all_subs(s);
	mqbi_timer_stop(w->loop, &s->expiry_timer);
	/* A delayed will goes out when its session ends [MQTT-3.1.3-9]. */
	mqbi_msg *will = take_pending_will(s);
	if (will) {
		if (atomic_load(&w->broker->state) == MQBI_BS_STOPPED)
			mqbi_msg_unref(a, will);
		else
			publish_will_now(s, will);
	}
	dq_free(a, &s->queue);
	for (uint32_t i = 0; i < s->inflight_slots; i++)
		mqbi_delivery_release(a,
		                      &s->inflight[(s->inflight_head + i) & (s->inflight_cap - 1)]);
	mqbi_free(a, s->inflight);
	s->inflight = NULL;
	s->inflight_head = s->inflight_slots = s->inflight_cap = s->inflight_count = 0;
	mqbi_free(a, s->awaiting_rel);
	s->awaiting_rel = NULL;
	s->awaiting_rel_count = s->awaiting_rel_cap = 0;
	if (s->listed)
		MQBI_COUNT(w->m.sessions, (uint64_t)-1);
	mqbi_session_unref(s);
}

void mqbi_session_expiry_fn(mqbi_loop *l, mqbi_timer *t)
{
	mqbi_session *s = container_of(t, mqbi_session, expiry_timer);
	mqbi_event(s->home->broker, MQB_EVENT_SESSION_EXPIRED, NULL, s->client_id, 0, NULL, 0,
	           "session expiry interval elapsed");
	mqbi_session_end(s, "session expired");
}

static void will_timer_fn(mqbi_loop *l, mqbi_timer *t)
{
	struct mqbi_pending_will *pw = container_of(t, struct mqbi_pending_will, timer);
	mqbi_session *s = pw->session;
	mqbi_msg *will = take_pending_will(s);
	if (will)
		publish_will_now(s, will);
}

void mqbi_session_schedule_will(mqbi_session *s, mqbi_msg *will, uint32_t delay_s)
{
	mqbi_session_cancel_will(s);
	struct mqbi_pending_will *pw = mqbi_calloc(alloc_of(s), sizeof(*pw));
	if (!pw) {
		publish_will_now(s, will); /* cannot wait: better early than lost */
		return;
	}
	pw->session = s;
	pw->msg = will;
	s->pending_will = pw;
	mqbi_timer_start(s->home->loop, &pw->timer, (uint64_t)delay_s * 1000u, will_timer_fn);
	store_will(s);
}

void mqbi_session_cancel_will(mqbi_session *s)
{
	mqbi_msg_unref(alloc_of(s), take_pending_will(s));
}

void mqbi_session_attach(mqbi_session *s, mqbi_client *c)
{
	s->client = c;
	c->session = s;
	/* One copy of the id per connection: the client borrows the session's. */
	if (!c->id_borrowed) {
		mqbi_free(alloc_of(s), c->client_id);
		c->client_id = s->client_id;
		c->id_borrowed = true;
	}
	atomic_store(&s->online, true);
	mqbi_timer_stop(s->home->loop, &s->expiry_timer);
	mqbi_session_persist(s);
	mqbi_session_resend(s);
	mqbi_session_pump(s);
}

void mqbi_session_detach(mqbi_session *s)
{
	s->client = NULL;
	atomic_store(&s->online, false);
	mqbi_bp_update(s); /* publishers do not wait for an offline session */
	if (s->expiry == 0) {
		mqbi_event(s->home->broker, MQB_EVENT_SESSION_EXPIRED, NULL, s->client_id, 0, NULL,
		           0, "session expiry interval 0");
		mqbi_session_end(s, "session expiry 0");
		return;
	}
	mqbi_session_persist(s); /* offline since now */
	if (s->expiry != UINT32_MAX)
		mqbi_timer_start(s->home->loop, &s->expiry_timer, (uint64_t)s->expiry * 1000u,
		                 mqbi_session_expiry_fn);
}

/* ---- In flight ---------------------------------------------------------- */

static mqbi_delivery *if_at(const mqbi_session *s, uint32_t i)
{
	return &s->inflight[(s->inflight_head + i) & (s->inflight_cap - 1)];
}

/* How many ids after `from` comes `to` (0 is never used). */
static uint32_t id_distance(uint16_t from, uint16_t to)
{
	uint32_t d = (uint16_t)(to - from);
	return to < from ? d - 1 : d;
}

mqbi_delivery *mqbi_session_inflight_find(mqbi_session *s, uint16_t packet_id)
{
	uint32_t n = s->inflight_slots;
	if (n == 0 || packet_id == 0)
		return NULL;
	if (s->any_order)
		goto scan;
	/* Ids are handed out in ring order, 65535 wrapping to 1: an id outside
	 * the span from the oldest to the newest is not in flight, and one inside
	 * sits at its distance from the oldest unless ids in use were skipped. */
	uint16_t first = if_at(s, 0)->packet_id;
	uint32_t off = id_distance(first, packet_id);
	if (off > id_distance(first, if_at(s, n - 1)->packet_id))
		return NULL;
	if (off < n) {
		mqbi_delivery *d = if_at(s, off);
		if (d->packet_id == packet_id)
			return d->state == MQBI_DS_DONE ? NULL : d;
	}
scan:
	for (uint32_t i = 0; i < n; i++) {
		mqbi_delivery *d = if_at(s, i);
		if (d->packet_id == packet_id && d->state != MQBI_DS_DONE)
			return d;
	}
	return NULL;
}

/* Drops the holes that reached the head of the ring. */
static void inflight_trim(mqbi_session *s)
{
	while (s->inflight_slots && if_at(s, 0)->state == MQBI_DS_DONE) {
		s->inflight_head = (s->inflight_head + 1) & (s->inflight_cap - 1);
		s->inflight_slots--;
	}
	if (s->inflight_slots == 0) {
		s->inflight_head = 0;
		s->any_order = false;
	}
}

/* Releases an entry, leaving a hole. */
static void inflight_release(mqbi_session *s, mqbi_delivery *d)
{
	mqbi_delivery_release(alloc_of(s), d);
	d->state = MQBI_DS_DONE;
	s->inflight_count--;
}

void mqbi_session_inflight_remove(mqbi_session *s, mqbi_delivery *d)
{
	inflight_release(s, d);
	inflight_trim(s);
}

/* Appends to the ring, growing it, or squeezing out holes when they are
 * more than half of it. */
static mqbi_delivery *inflight_push(mqbi_session *s, const mqbi_delivery *d)
{
	if (s->inflight_slots == s->inflight_cap) {
		bool squeeze = s->inflight_count < s->inflight_slots / 2;
		uint32_t cap =
		        squeeze ? s->inflight_cap : (s->inflight_cap ? s->inflight_cap * 2 : 4);
		mqbi_delivery *n = mqbi_malloc(alloc_of(s), sizeof(*n) * cap);
		if (!n)
			return NULL;
		uint32_t k = 0;
		for (uint32_t i = 0; i < s->inflight_slots; i++) {
			mqbi_delivery *e = if_at(s, i);
			if (!squeeze || e->state != MQBI_DS_DONE)
				n[k++] = *e;
		}
		mqbi_free(alloc_of(s), s->inflight);
		s->inflight = n;
		s->inflight_cap = cap;
		s->inflight_head = 0;
		s->inflight_slots = k;
	}
	mqbi_delivery *slot = if_at(s, s->inflight_slots);
	*slot = *d;
	s->inflight_slots++;
	s->inflight_count++;
	return slot;
}

static uint16_t next_packet_id(mqbi_session *s)
{
	for (;;) {
		uint16_t id = s->next_packet_id++;
		if (s->next_packet_id == 0)
			s->next_packet_id = 1;
		if (id && !mqbi_session_inflight_find(s, id))
			return id;
	}
}

static uint32_t window(const mqbi_session *s)
{
	uint32_t w = mqbi_lim(s->home->broker)->max_inflight;
	if (s->client && s->client->receive_max_out < w)
		w = s->client->receive_max_out;
	return w;
}

static bool can_write(const mqbi_client *c)
{
	return c && c->state == MQBI_CS_CONNECTED &&
	       mqbi_client_out_pending(c) < MQBI_OUT_HIGH_WATER;
}

/* Puts a QoS > 0 delivery in flight and sends it. */
static bool start_flight(mqbi_session *s, mqbi_delivery *d)
{
	d->packet_id = next_packet_id(s);
	d->state = d->qos == 1 ? MQBI_DS_WAIT_PUBACK : MQBI_DS_WAIT_PUBREC;
	mqbi_delivery *slot = inflight_push(s, d);
	if (!slot)
		return false;
	if (slot->stored) {
		/* After a crash it is resent with this packet id [MQTT-4.4.0-1].
		 * QoS 2, exactly once: the client may keep this packet id only once
		 * we will remember having sent it. */
		mqbi_session_store_state(s, slot);
		if (slot->qos == 2 && mqbi_journal_hold(s, slot, MQBI_PUBLISH))
			return true;
	}
	if (!mqbi_send_publish(s->client, slot)) {
		/* Too large for the client: dropped [MQTT-3.1.2-25]. */
		unstore(s, slot);
		mqbi_session_inflight_remove(s, slot);
	}
	return true;
}

void mqbi_session_send_held(mqbi_session *s, mqbi_delivery *d)
{
	mqbi_client *c = s->client;
	if (!c || c->state != MQBI_CS_CONNECTED)
		return; /* sent with the others when the client is back */
	if (d->state == MQBI_DS_WAIT_PUBCOMP) {
		mqbi_packet p = {.type = MQBI_PUBREL};
		p.u.ack.packet_id = d->packet_id;
		mqbi_client_send_packet(c, &p);
	} else if (!mqbi_send_publish(c, d)) {
		unstore(s, d);
		mqbi_session_inflight_remove(s, d);
		mqbi_session_pump(s);
	}
}

void mqbi_session_delivery_done(mqbi_session *s, mqbi_delivery *d)
{
	unstore(s, d);
	mqbi_session_inflight_remove(s, d);
}

mqb_err mqbi_session_restore_inflight(mqbi_session *s, const mqbi_stored_delivery *sd)
{
	mqbi_delivery d = {.msg = sd->msg,
	                   .qos = sd->qos,
	                   .retain = sd->retain,
	                   .packet_id = sd->packet_id,
	                   .state = sd->state,
	                   .n_sub_ids = sd->n_sub_ids,
	                   .stored = true};
	if (sd->n_sub_ids == 1)
		d.sub_id = sd->sub_ids ? sd->sub_ids[0] : sd->sub_id;
	if (sd->n_sub_ids > 1) {
		d.sub_ids = mqbi_malloc(alloc_of(s), sizeof(uint32_t) * sd->n_sub_ids);
		if (!d.sub_ids) {
			mqbi_msg_unref(alloc_of(s), sd->msg);
			return MQB_ERR_NOMEM;
		}
		memcpy(d.sub_ids, sd->sub_ids, sizeof(uint32_t) * sd->n_sub_ids);
	}
	/* Stored deliveries refer to their rows by the message's store id. */
	atomic_store_explicit(&sd->msg->store_id, sd->mid, memory_order_relaxed);
	if (d.state < MQBI_DS_WAIT_PUBACK || d.state > MQBI_DS_WAIT_PUBCOMP)
		d.state = d.qos == 1 ? MQBI_DS_WAIT_PUBACK : MQBI_DS_WAIT_PUBREC;
	if (!inflight_push(s, &d)) {
		mqbi_delivery_release(alloc_of(s), &d);
		return MQB_ERR_NOMEM;
	}
	s->any_order = true; /* restored in queue order, not in send order */
	s->next_packet_id = (uint16_t)(sd->packet_id + 1);
	if (s->next_packet_id == 0)
		s->next_packet_id = 1;
	return MQB_OK;
}

static void drop_event(mqbi_session *s, const mqbi_msg *m, uint8_t qos, const char *why)
{
	mqbi_worker *w = s->home;
	MQBI_COUNT(w->m.messages_dropped, 1);
	if (qos == 0)
		MQBI_COUNT(w->m.messages_dropped_qos0, 1);
	mqbi_event(w->broker, MQB_EVENT_MESSAGE_DROPPED, s->client, s->client_id, 0, m->topic, qos,
	           why);
}

static void drop(mqbi_session *s, mqbi_delivery *d, const char *why)
{
	mqbi_worker *w = s->home;
	drop_event(s, d->msg, d->qos, why);
	mqbi_log(w->broker, MQB_LOG_DEBUG, "session", s->client,
	         "dropped a message on '%s' for %s: %s", d->msg->topic, s->client_id, why);
	unstore(s, d);
	mqbi_delivery_release(&w->broker->alloc, d);
}

void mqbi_session_pump(mqbi_session *s)
{
	mqbi_client *c = s->client;
	uint64_t now = mqbi_loop_now(s->home->loop);
	while (s->queue.count && can_write(c)) {
		mqbi_delivery *head = dq_at(&s->queue, 0);
		if (head->qos > 0 && s->inflight_count >= window(s))
			break;
		mqbi_delivery d;
		dq_pop(&s->queue, &d);
		s->queue_stored -= d.stored;
		if (mqbi_msg_expired(d.msg, now)) {
			MQBI_COUNT(s->home->m.messages_expired, 1);
			drop(s, &d, "expired");
			continue;
		}
		if (c->w->broker->hooks.on_deliver &&
		    !mqbi_hook_on_deliver(c, d.msg, d.qos, d.retain)) {
			unstore(s, &d);
			mqbi_delivery_release(alloc_of(s), &d);
			continue;
		}
		if (d.qos == 0) {
			mqbi_send_publish(c, &d);
			mqbi_delivery_release(alloc_of(s), &d);
		} else if (!start_flight(s, &d)) {
			drop(s, &d, "out of memory");
		}
	}
	/* The RAM part of a spilled queue is used up: read the next page. */
	if (s->spill && !s->paging && s->queue_stored == 0 && can_write(c)) {
		s->paging = true;
		s->paging_missed = false;
		mqbi_journal_read_queue(s,
		                        mqbi_journal_window(s->home->broker) + s->inflight_count);
	}
	if (atomic_load_explicit(&s->flow, memory_order_relaxed))
		mqbi_bp_update(s);
}

void mqbi_session_page_in(mqbi_session *s, mqbi_stored_delivery *sd, uint32_t n,
                          const uint64_t *skip, uint32_t nskip, bool ok, bool end)
{
	s->paging = false;
	if (s->ended)
		return;
	if (!ok) {
		/* Logged by the journal; the rest stays on disk until a restart. */
		s->spill = false;
		s->spilled = 0;
		return;
	}
	for (uint32_t i = 0; i < n; i++) {
		uint64_t mid = sd[i].mid;
		bool flying = false;
		for (uint32_t k = 0; k < nskip && !flying; k++)
			flying = skip[k] == mid;
		if (flying)
			continue;
		mqbi_delivery d = {.msg = sd[i].msg,
		                   .qos = sd[i].qos,
		                   .retain = sd[i].retain,
		                   .n_sub_ids = sd[i].n_sub_ids,
		                   .sub_id = sd[i].sub_id,
		                   .sub_ids = (uint32_t *)sd[i].sub_ids,
		                   .stored = true};
		atomic_store_explicit(&d.msg->store_id, mid, memory_order_relaxed);
		if (!dq_push(alloc_of(s), &s->queue, &d))
			break;    /* out of memory: the rest is read again later */
		sd[i].msg = NULL; /* the queue owns them now */
		sd[i].sub_ids = NULL;
		s->queue_stored++;
		if (s->spilled)
			s->spilled--;
	}
	/* The disk part is read to its end, and nothing arrived meanwhile. */
	if (end && !s->paging_missed) {
		s->spill = false;
		s->spilled = 0;
	}
	mqbi_session_pump(s);
}

void mqbi_session_resend(mqbi_session *s)
{
	mqbi_client *c = s->client;
	for (uint32_t i = 0; i < s->inflight_slots; i++) {
		mqbi_delivery *d = if_at(s, i);
		if (d->state == MQBI_DS_DONE || d->held)
			continue; /* held: sent once its state is durable */
		if (d->state == MQBI_DS_WAIT_PUBCOMP) {
			mqbi_packet p = {.type = MQBI_PUBREL};
			p.u.ack.packet_id = d->packet_id;
			mqbi_client_send_packet(c, &p);
		} else {
			d->dup = true; /* [MQTT-3.3.1-1] */
			if (!mqbi_send_publish(c, d)) {
				unstore(s, d);
				inflight_release(s, d); /* too large now: dropped */
			}
		}
	}
	inflight_trim(s);
}

/* Makes d own what it refers to: a message reference and, for several
 * subscription identifiers, a copy of them. False when out of memory. */
static bool keep(const mqb_allocator *a, mqbi_delivery *d, mqbi_msg *msg, const uint32_t *sub_ids)
{
	if (d->n_sub_ids > 1) {
		d->sub_ids = mqbi_malloc(a, sizeof(uint32_t) * d->n_sub_ids);
		if (!d->sub_ids)
			return false;
		memcpy(d->sub_ids, sub_ids, sizeof(uint32_t) * d->n_sub_ids);
	}
	d->msg = mqbi_msg_ref(msg);
	return true;
}

void mqbi_session_deliver(mqbi_session *s, mqbi_msg *msg, uint8_t qos, bool retain,
                          const uint32_t *sub_ids, uint16_t n_sub_ids, bool stored)
{
	if (s->ended)
		return;
	if (s->host) {
		const mqbi_host_target *h = mqbi_session_host(s);
		mqb_message view;
		mqbi_msg_view(s->home, msg, qos, retain, &view);
		h->fn(h->user, &view);
		return;
	}
	mqb_broker *b = s->home->broker;
	const mqb_allocator *a = &b->alloc;
	mqbi_client *c = s->client;
	/* A stored session keeps its QoS 1/2 deliveries on disk too; the routing
	 * worker journalled those for other workers' sessions already. */
	if (qos > 0 && !stored && journalled(s))
		stored = mqbi_session_journal_delivery(s->home, s, sid_of(s), msg, qos, retain,
		                                       sub_ids, n_sub_ids);
	mqbi_delivery d = {
	        .msg = msg, .qos = qos, .retain = retain, .n_sub_ids = n_sub_ids, .stored = stored};
	if (n_sub_ids == 1)
		d.sub_id = sub_ids[0];

	/* The fast path: straight to the client. QoS 0 needs no slot in flight.
	 * on_deliver is asked when a delivery is written (here or in pump). */
	/* MQTT orders deliveries per topic and QoS [MQTT-4.6.0-6]: QoS 0 may
	 * pass QoS 1/2 held by the in-flight window, but not queued QoS 0. */
	bool direct = can_write(c) && (qos == 0 ? s->queue.qos0 == 0
	                                        : s->queue.count == 0 && !s->spill &&
	                                                  s->inflight_count < window(s));
	if (direct && b->hooks.on_deliver && !mqbi_hook_on_deliver(c, msg, qos, retain)) {
		unstore(s, &d); /* d refers to msg without a reference: fine here */
		return;
	}
	if (qos == 0 && direct) {
		if (n_sub_ids > 1)
			d.sub_ids = (uint32_t *)sub_ids; /* borrowed for the write only */
		mqbi_send_publish(c, &d);
		return;
	}
	if (qos > 0 && direct) {
		if (!keep(a, &d, msg, sub_ids)) {
			unstore(s, &d);
			return;
		}
		if (!start_flight(s, &d))
			drop(s, &d, "out of memory");
		return;
	}
	/* QoS 0 waits in the queue too (keeping the order), unless the session
	 * is offline and mqtt.mqueue_store_qos0 = false. */
	if (qos == 0 && !c && !mqbi_lim(b)->mqueue_store_qos0) {
		drop_event(s, msg, 0, "offline (mqueue_store_qos0 = false)");
		return;
	}
	/* Queue it, within the limits (the part on disk counts); QoS 0 goes
	 * first when full, then the oldest, unless the policy is to refuse. */
	const mqbi_limits *lim = mqbi_lim(b);
	bool full = (lim->max_mqueue_len && s->queue.count + s->spilled >= lim->max_mqueue_len) ||
	            (lim->max_mqueue_bytes &&
	             s->queue.bytes + msg->payload_len > lim->max_mqueue_bytes);
	if (full) {
		if (qos == 0 || (stored && mqbi_journal_refusing_queue(b))) {
			drop_event(s, msg, qos, "queue full");
			unstore(s, &d); /* d refers to msg without a reference: fine here */
			return;
		}
		if (s->queue.count) {
			uint32_t victim = 0;
			for (uint32_t i = 0; s->queue.qos0 && i < s->queue.count; i++) {
				if (dq_at(&s->queue, i)->qos == 0) {
					victim = i;
					break;
				}
			}
			mqbi_delivery old;
			dq_remove(&s->queue, victim, &old);
			s->queue_stored -= old.stored;
			drop(s, &old, "queue full (max_mqueue_len / max_mqueue_bytes)");
		} else if (s->spilled && journalled(s)) {
			/* The oldest is on disk only. */
			mqbi_rec *r =
			        mqbi_journal_add(s->home, MQBI_REC_DLV_DROP_OLDEST, sid_of(s));
			if (r)
				r->num = 1;
			s->spilled--;
			drop_event(s, msg, qos, "queue full (max_mqueue_len / max_mqueue_bytes)");
		}
	}
	/* Past the RAM window a stored queue goes on on disk only. */
	if (stored && (s->spill || s->queue_stored >= mqbi_journal_window(b))) {
		s->spill = true;
		s->spilled++;
		s->paging_missed |= s->paging;
		mqbi_bp_update(s);
		return;
	}
	if (!keep(a, &d, msg, sub_ids)) {
		unstore(s, &d);
		return;
	}
	if (!dq_push(a, &s->queue, &d)) {
		drop(s, &d, "out of memory");
		return;
	}
	s->queue_stored += d.stored;
	mqbi_bp_update(s);
}

/* ---- QoS 2 from the client: packet ids awaiting PUBREL ------------------- */

bool mqbi_session_awaiting_rel(mqbi_session *s, uint16_t packet_id)
{
	for (uint32_t i = 0; i < s->awaiting_rel_count; i++)
		if (s->awaiting_rel[i].id == packet_id)
			return true;
	return false;
}

bool mqbi_session_awaiting_rel_remove(mqbi_session *s, uint16_t packet_id)
{
	for (uint32_t i = 0; i < s->awaiting_rel_count; i++) {
		if (s->awaiting_rel[i].id == packet_id) {
			s->awaiting_rel[i] = s->awaiting_rel[--s->awaiting_rel_count];
			return true;
		}
	}
	return false;
}

mqb_err mqbi_session_awaiting_rel_add(mqbi_session *s, uint16_t packet_id, uint64_t now)
{
	const mqbi_limits *lim = mqbi_lim(s->home->broker);
	/* Forget exchanges whose PUBREL never came (await_rel_timeout). */
	for (uint32_t i = 0; i < s->awaiting_rel_count;) {
		if (lim->await_rel_timeout && now - s->awaiting_rel[i].at >= lim->await_rel_timeout)
			mqbi_session_awaiting_rel_remove(s, s->awaiting_rel[i].id);
		else
			i++;
	}
	if (lim->max_awaiting_rel && s->awaiting_rel_count >= lim->max_awaiting_rel)
		return MQB_ERR_RANGE;
	if (s->awaiting_rel_count == s->awaiting_rel_cap) {
		uint32_t cap = s->awaiting_rel_cap ? s->awaiting_rel_cap * 2 : 4;
		mqbi_awaiting_rel *n = mqbi_realloc(alloc_of(s), s->awaiting_rel, sizeof(*n) * cap);
		if (!n)
			return MQB_ERR_NOMEM;
		s->awaiting_rel = n;
		s->awaiting_rel_cap = cap;
	}
	s->awaiting_rel[s->awaiting_rel_count++] = (mqbi_awaiting_rel){.at = now, .id = packet_id};
	return MQB_OK;
}
