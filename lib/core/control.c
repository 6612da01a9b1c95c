/* Introspection and control for the host: sessions and subscriptions,
 * kicking, subscribing on a client's behalf, metrics and run-time
 * reconfiguration. Every call runs on the worker that owns the session. */
#include <string.h>

#include "core/core.h"
#include "core/topic.h"
#include "net/tls.h"

static void fill_status(const mqbi_session *s, mqb_client_status *st)
{
	const mqbi_client *c = s->client;
	memset(st, 0, sizeof(*st));
	st->client_id = s->client_id;
	st->connected = c != NULL;
	st->protocol = s->level;
	st->session_expiry = s->expiry;
	st->subscriptions = mqbi_strmap_count(&s->subs);
	st->inflight = s->inflight_count;
	st->queued = s->queue.count + s->spilled; /* the part on disk too */
	st->queued_bytes = s->queue.bytes;        /* in RAM: the disk part is not counted */
	if (c) {
		st->username = c->username;
		st->peer = c->peer;
		st->listener = c->listener ? c->listener->cfg.name : NULL;
		st->keepalive = c->keepalive;
	}
}

/* ---- One session -------------------------------------------------------- */

typedef struct session_op {
	const char *id;
	size_t len;
	mqb_err err;
	/* mqb_broker_client */
	mqb_client_status_fn status_fn;
	void *user;
	/* kick */
	bool discard;
	/* subscribe / unsubscribe */
	const char *filter;
	int qos;
} session_op;

static mqbi_session *op_session(mqbi_worker *w, session_op *op)
{
	mqbi_session *s = mqbi_session_find(w, op->id, op->len);
	op->err = s ? MQB_OK : MQB_ERR_NOTFOUND;
	return s;
}

static void do_status(mqbi_worker *w, void *arg)
{
	session_op *op = arg;
	mqbi_session *s = op_session(w, op);
	if (!s)
		return;
	mqb_client_status st;
	fill_status(s, &st);
	op->status_fn(op->user, &st);
}

static void do_kick(mqbi_worker *w, void *arg)
{
	session_op *op = arg;
	mqbi_session *s = op_session(w, op);
	if (!s)
		return;
	if (s->client)
		mqbi_client_disconnect(s->client, MQBI_RC_ADMIN_ACTION, "kicked by the host");
	/* Closing may have ended a session with expiry 0 already. */
	s = mqbi_session_find(w, op->id, op->len);
	if (s && op->discard) {
		mqbi_event(w->broker, MQB_EVENT_SESSION_DISCARDED, NULL, s->client_id, 0, NULL, 0,
		           "discarded by the host");
		mqbi_session_end(s, "discarded by the host");
	}
}

static void do_subscribe_client(mqbi_worker *w, void *arg)
{
	session_op *op = arg;
	mqbi_session *s = op_session(w, op);
	if (!s)
		return;
	mqbi_bytes text = {(const uint8_t *)op->filter, (uint32_t)strlen(op->filter)};
	mqbi_subopts o = {.qos = (uint8_t)op->qos};
	bool is_new = false, shared = false;
	size_t before = mqbi_strmap_count(&s->subs);
	uint8_t rc = mqbi_session_subscribe(s, s->level ? s->level : MQBI_V5, text, &o, 0, &is_new,
	                                    &shared);
	if (rc >= 0x80) {
		op->err = rc == MQBI_RC_QUOTA_EXCEEDED ? MQB_ERR_RANGE : MQB_ERR_DENIED;
		return;
	}
	mqbi_session_sync_multi(s, before);
	mqbi_event(w->broker, MQB_EVENT_SUBSCRIBED, s->client, s->client_id, 0, op->filter, rc,
	           "by the host");
	if (!shared)
		mqbi_session_send_retained(s, op->filter, text.len, rc, 0);
}

static void do_unsubscribe_client(mqbi_worker *w, void *arg)
{
	session_op *op = arg;
	mqbi_session *s = op_session(w, op);
	if (!s)
		return;
	size_t before = mqbi_strmap_count(&s->subs);
	if (!mqbi_session_unsubscribe(s, op->filter, strlen(op->filter))) {
		op->err = MQB_ERR_NOTFOUND;
		return;
	}
	mqbi_session_sync_multi(s, before);
	mqbi_event(w->broker, MQB_EVENT_UNSUBSCRIBED, s->client, s->client_id, 0, op->filter, 0,
	           "by the host");
}

static mqb_err on_home(mqb_broker *b, session_op *op, void (*fn)(mqbi_worker *, void *))
{
	if (!b || !op->id)
		return MQB_ERR_INVAL;
	op->len = strlen(op->id);
	mqb_err err = mqbi_worker_call(mqbi_home_worker(b, op->id, op->len), fn, op);
	return err ? err : op->err;
}

MQB_API mqb_err mqb_broker_client(mqb_broker *b, const char *client_id, mqb_client_status_fn fn,
                                  void *user)
{
	if (!fn)
		return MQB_ERR_INVAL;
	session_op op = {.id = client_id, .status_fn = fn, .user = user};
	return on_home(b, &op, do_status);
}

MQB_API mqb_err mqb_broker_kick(mqb_broker *b, const char *client_id, int discard_session)
{
	session_op op = {.id = client_id, .discard = discard_session != 0};
	return on_home(b, &op, do_kick);
}

MQB_API mqb_err mqb_broker_subscribe_client(mqb_broker *b, const char *client_id,
                                            const char *filter, int qos)
{
	if (!filter || qos < 0 || qos > 2 || !mqb_filter_valid(filter))
		return MQB_ERR_INVAL;
	session_op op = {.id = client_id, .filter = filter, .qos = qos};
	return on_home(b, &op, do_subscribe_client);
}

MQB_API mqb_err mqb_broker_unsubscribe_client(mqb_broker *b, const char *client_id,
                                              const char *filter)
{
	if (!filter)
		return MQB_ERR_INVAL;
	session_op op = {.id = client_id, .filter = filter};
	return on_home(b, &op, do_unsubscribe_client);
}

/* ---- Listing, page by page across the workers --------------------------- */

typedef struct page {
	size_t offset, limit, index; /* index: position of the next item overall */
	const char *only;            /* subscriptions of this client only */
	size_t only_len;
	mqb_client_status_fn status_fn;
	mqb_subscription_fn sub_fn;
	void *user;
	mqb_err err;
} page;

static bool in_page(page *pg)
{
	bool in = pg->index >= pg->offset && pg->index - pg->offset < pg->limit;
	pg->index++;
	return in;
}

static void do_list_sessions(mqbi_worker *w, void *arg)
{
	page *pg = arg;
	size_t pos = 0;
	const char *key;
	size_t klen;
	void *val;
	while (mqbi_strmap_next(&w->sessions, &pos, &key, &klen, &val)) {
		if (in_page(pg)) {
			mqb_client_status st;
			fill_status(val, &st);
			pg->status_fn(pg->user, &st);
		}
	}
}

static void list_subs_of(page *pg, const mqbi_session *s)
{
	size_t pos = 0;
	const char *key;
	size_t klen;
	void *val;
	while (mqbi_strmap_next(&s->subs, &pos, &key, &klen, &val)) {
		const mqbi_sub *sub = val;
		if (in_page(pg))
			pg->sub_fn(pg->user, s->client_id, sub->text, MQBI_SUBOPT_QOS(sub->options),
			           sub->sub_id);
	}
}

static void do_list_subs(mqbi_worker *w, void *arg)
{
	page *pg = arg;
	if (pg->only) {
		mqbi_session *s = mqbi_session_find(w, pg->only, pg->only_len);
		if (s)
			list_subs_of(pg, s);
		else
			pg->err = MQB_ERR_NOTFOUND;
		return;
	}
	size_t pos = 0;
	const char *key;
	size_t klen;
	void *val;
	while (mqbi_strmap_next(&w->sessions, &pos, &key, &klen, &val))
		list_subs_of(pg, val);
}

MQB_API mqb_err mqb_broker_clients(mqb_broker *b, size_t offset, size_t limit,
                                   mqb_client_status_fn fn, void *user, size_t *total)
{
	if (!b || !fn)
		return MQB_ERR_INVAL;
	page pg = {.offset = offset, .limit = limit, .status_fn = fn, .user = user};
	for (unsigned i = 0; i < b->nworkers; i++) {
		mqb_err err = mqbi_worker_call(&b->workers[i], do_list_sessions, &pg);
		if (err)
			return err;
	}
	if (total)
		*total = pg.index;
	return MQB_OK;
}

MQB_API mqb_err mqb_broker_subscriptions(mqb_broker *b, const char *client_id, size_t offset,
                                         size_t limit, mqb_subscription_fn fn, void *user,
                                         size_t *total)
{
	if (!b || !fn)
		return MQB_ERR_INVAL;
	page pg = {.offset = offset, .limit = limit, .sub_fn = fn, .user = user, .only = client_id};
	mqb_err err = MQB_OK;
	if (client_id) {
		pg.only_len = strlen(client_id);
		err = mqbi_worker_call(mqbi_home_worker(b, client_id, pg.only_len), do_list_subs,
		                       &pg);
		if (!err)
			err = pg.err;
	} else {
		for (unsigned i = 0; i < b->nworkers && !err; i++)
			err = mqbi_worker_call(&b->workers[i], do_list_subs, &pg);
	}
	if (!err && total)
		*total = pg.index;
	return err;
}

/* ---- Metrics -------------------------------------------------------------- */

static uint64_t sum(mqb_broker *b, size_t offset)
{
	uint64_t total = 0;
	for (unsigned i = 0; i < b->nworkers; i++)
		total += MQBI_READ(*(mqbi_counter *)((char *)&b->workers[i].m + offset));
	return total;
}
#define SUM(b, field) sum((b), offsetof(mqbi_metrics, field))

MQB_API void mqb_broker_metrics(mqb_broker *b, mqb_metrics *out)
{
	if (!b || !out)
		return;
	memset(out, 0, sizeof(*out));
	out->connections = SUM(b, connections);
	out->sessions = SUM(b, sessions);
	out->subscriptions = mqbi_trie_route_count(b->trie);
	out->retained = mqbi_retain_count(b->retain);
	out->connects = SUM(b, connects);
	out->disconnects = SUM(b, disconnects);
	out->packets_received = SUM(b, packets_received);
	out->packets_sent = SUM(b, packets_sent);
	out->bytes_received = SUM(b, bytes_received);
	out->bytes_sent = SUM(b, bytes_sent);
	out->messages_received = SUM(b, messages_received);
	out->messages_sent = SUM(b, messages_sent);
	out->messages_dropped = SUM(b, messages_dropped);
	out->messages_expired = SUM(b, messages_expired);
	out->malformed_packets = SUM(b, malformed);
	out->publishers_held = SUM(b, publishers_held);
	out->tls_handshakes = SUM(b, tls_handshakes);
	out->tls_handshake_errors = SUM(b, tls_handshake_errors);
	mqbi_journal_metrics jm;
	mqbi_journal_metrics_get(b, &jm);
	out->store_commits = jm.commits;
	out->store_records = jm.records;
	out->store_bytes = jm.bytes;
	out->store_dropped = jm.dropped;
	out->store_refused = jm.refused;
	out->store_errors = jm.errors;
	out->store_backlog = jm.backlog;
}

/* ---- Reconfiguration ---------------------------------------------------- */

typedef struct key_value {
	char *key, *value;
} key_value;

typedef struct snapshot {
	const mqb_allocator *a;
	key_value *kv;
	size_t n, cap;
	bool oom;
} snapshot;

static void snap(void *user, const char *key, const char *value, const char *def, const char *type,
                 const char *doc)
{
	snapshot *sn = user;
	if (sn->oom)
		return;
	if (sn->n == sn->cap) {
		size_t cap = sn->cap ? sn->cap * 2 : 64;
		key_value *n = mqbi_realloc(sn->a, sn->kv, sizeof(*n) * cap);
		if (!n) {
			sn->oom = true;
			return;
		}
		sn->kv = n;
		sn->cap = cap;
	}
	sn->kv[sn->n].key = mqbi_strndup(sn->a, key, strlen(key));
	sn->kv[sn->n].value = mqbi_strndup(sn->a, value, strlen(value));
	if (!sn->kv[sn->n].key || !sn->kv[sn->n].value)
		sn->oom = true;
	sn->n++;
}

static void snap_free(snapshot *sn)
{
	for (size_t i = 0; i < sn->n; i++) {
		mqbi_free(sn->a, sn->kv[i].key);
		mqbi_free(sn->a, sn->kv[i].value);
	}
	mqbi_free(sn->a, sn->kv);
}

static const char *snap_get(const snapshot *sn, const char *key)
{
	for (size_t i = 0; i < sn->n; i++)
		if (strcmp(sn->kv[i].key, key) == 0)
			return sn->kv[i].value;
	return NULL;
}

/* Secrets (key_password) are not written to the log. */
static const char *loggable(const char *key, const char *value)
{
	return strstr(key, "password") ? "(hidden)" : value;
}

MQB_API mqb_err mqb_broker_reconfigure(mqb_broker *b, const mqb_config *cfg,
                                       mqb_config_change_fn changed, void *user)
{
	if (!b || !cfg)
		return MQB_ERR_INVAL;
	snapshot now = {.a = &b->alloc}, next = {.a = &b->alloc};
	mqb_config *merged = NULL;
	pthread_mutex_lock(&b->state_lock);
	mqb_config_visit(b->cfg, snap, &now);
	mqb_config_visit(cfg, snap, &next);
	mqb_err err = now.oom || next.oom ? MQB_ERR_NOMEM : mqbi_config_clone(b->cfg, &merged);
	for (size_t i = 0; !err && i < next.n; i++) {
		const char *key = next.kv[i].key, *nv = next.kv[i].value;
		const char *ov = snap_get(&now, key);
		if (ov && strcmp(ov, nv) == 0)
			continue;
		bool applied = mqbi_cfg_key_runtime(key);
		if (applied)
			err = mqb_config_set(merged, key, nv, NULL, 0);
		if (!err && changed)
			changed(user, key, ov ? ov : "off", nv, applied);
		if (!err)
			mqbi_log(b, MQB_LOG_NOTICE, "config", NULL, "%s: %s -> %s%s", key,
			         loggable(key, ov ? ov : "off"), loggable(key, nv),
			         applied ? "" : " (takes effect at the next start)");
	}
	/* Listeners present before but not now are reported too (not applied). */
	for (size_t i = 0; !err && i < now.n; i++)
		if (!snap_get(&next, now.kv[i].key) && changed)
			changed(user, now.kv[i].key, now.kv[i].value, "off", 0);
	if (!err) {
		err = mqbi_limits_reload(b, merged);
		if (!err) {
			/* The broker's config is read by host calls only, under this lock;
			 * the old one goes now. */
			mqb_config *old = b->cfg;
			b->cfg = merged;
			merged = old;
			int64_t lvl = mqbi_cfg_int(b->cfg, MQBI_K_LOG_LEVEL);
			atomic_store(&b->log_level_now, (int)lvl);
		}
	}
	pthread_mutex_unlock(&b->state_lock);
	if (!err)
		mqbi_tls_reload(b); /* rotated certificate files, for new connections */
	mqb_config_destroy(merged);
	snap_free(&now);
	snap_free(&next);
	return err;
}
