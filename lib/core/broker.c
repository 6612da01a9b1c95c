/* The broker instance: workers, lifecycle, and the host's publish call. */
#include <errno.h>
#include <string.h>
#include <stdio.h>
#include <time.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "core/core.h"
#include "core/topic.h"

uint32_t mqbi_random(mqbi_worker *w)
{
	/* xorshift32: shared-subscription picks and assigned ids need spread, not secrecy */
	uint32_t x = w->rand_state;
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	w->rand_state = x;
	return x;
}

mqbi_worker *mqbi_home_worker(mqb_broker *b, const char *client_id, size_t len)
{
	if (b->nworkers == 1)
		return &b->workers[0];
	return &b->workers[mqbi_strmap_hash(client_id, len) % b->nworkers];
}

struct mqbi_limits_version {
	struct mqbi_limits_version *next;
	mqbi_limits lim;
};

/* Publishes a new set of limits read from c (see mqbi_lim()). */
mqb_err mqbi_limits_reload(mqb_broker *b, const mqb_config *c)
{
	struct mqbi_limits_version *v = mqbi_calloc(&b->alloc, sizeof(*v));
	if (!v)
		return MQB_ERR_NOMEM;
	mqbi_limits *l = &v->lim;
	l->max_packet_size = (uint32_t)mqbi_cfg_int(c, MQBI_K_MAX_PACKET_SIZE);
	l->max_clientid_len = (uint32_t)mqbi_cfg_int(c, MQBI_K_MAX_CLIENTID_LEN);
	l->max_topic_levels = (uint32_t)mqbi_cfg_int(c, MQBI_K_MAX_TOPIC_LEVELS);
	l->max_qos = (uint8_t)mqbi_cfg_int(c, MQBI_K_MAX_QOS);
	l->max_topic_alias = (uint16_t)mqbi_cfg_int(c, MQBI_K_MAX_TOPIC_ALIAS);
	l->retain_available = mqbi_cfg_int(c, MQBI_K_RETAIN_AVAILABLE) != 0;
	l->wildcard_sub = mqbi_cfg_int(c, MQBI_K_WILDCARD_SUB) != 0;
	l->shared_sub = mqbi_cfg_int(c, MQBI_K_SHARED_SUB) != 0;
	l->sub_id_available = mqbi_cfg_int(c, MQBI_K_SUB_ID_AVAILABLE) != 0;
	l->share_strategy = (uint8_t)mqbi_cfg_int(c, MQBI_K_SHARED_STRATEGY);
	l->receive_max = (uint16_t)mqbi_cfg_int(c, MQBI_K_RECEIVE_MAX);
	l->max_inflight = (uint16_t)mqbi_cfg_int(c, MQBI_K_MAX_INFLIGHT);
	l->max_awaiting_rel = (uint32_t)mqbi_cfg_int(c, MQBI_K_MAX_AWAITING_REL);
	l->await_rel_timeout = (uint64_t)mqbi_cfg_int(c, MQBI_K_AWAIT_REL_TIMEOUT);
	l->max_mqueue_len = (uint32_t)mqbi_cfg_int(c, MQBI_K_MAX_MQUEUE_LEN);
	l->max_mqueue_bytes = (uint64_t)mqbi_cfg_int(c, MQBI_K_MAX_MQUEUE_BYTES);
	l->backpressure_queue_len = (uint32_t)mqbi_cfg_int(c, MQBI_K_BACKPRESSURE_QUEUE_LEN);
	l->backpressure_max_hold = (uint64_t)mqbi_cfg_int(c, MQBI_K_BACKPRESSURE_MAX_HOLD);
	l->mqueue_store_qos0 = mqbi_cfg_int(c, MQBI_K_MQUEUE_STORE_QOS0) != 0;
	l->session_expiry_v3 = (uint32_t)(mqbi_cfg_int(c, MQBI_K_SESSION_EXPIRY) / 1000);
	l->max_session_expiry = (uint32_t)(mqbi_cfg_int(c, MQBI_K_MAX_SESSION_EXPIRY) / 1000);
	l->max_keepalive = (uint16_t)mqbi_cfg_int(c, MQBI_K_MAX_KEEPALIVE);
	l->server_keepalive = (uint16_t)mqbi_cfg_int(c, MQBI_K_SERVER_KEEPALIVE);
	l->keepalive_backoff = (uint32_t)mqbi_cfg_int(c, MQBI_K_KEEPALIVE_BACKOFF);
	l->idle_timeout = (uint64_t)mqbi_cfg_int(c, MQBI_K_IDLE_TIMEOUT);
	l->max_subscriptions = (uint32_t)mqbi_cfg_int(c, MQBI_K_MAX_SUBSCRIPTIONS);
	l->sys_interval = (uint64_t)mqbi_cfg_int(c, MQBI_K_SYS_INTERVAL);
	l->allow_anonymous = (uint8_t)mqbi_cfg_int(c, MQBI_K_ALLOW_ANONYMOUS);
	if (l->max_qos > 2)
		l->max_qos = 2;
	if (l->receive_max == 0)
		l->receive_max = 1;
	if (l->max_inflight == 0)
		l->max_inflight = 1;
	l->drain_timeout = (uint64_t)mqbi_cfg_int(c, MQBI_K_DRAIN_TIMEOUT);
	v->next = b->limit_versions;
	b->limit_versions = v;
	atomic_store_explicit(&b->limits, &v->lim, memory_order_release);
	return MQB_OK;
}

static void before_sleep(mqbi_loop *l, void *user)
{
	mqbi_worker *w = user;
	mqbi_bp_check(w); /* first: released publishers may route and write */
	mqbi_worker_flush_outbox(w);
	mqbi_worker_flush(w);
	if (w->draining && !w->clients) {
		mqbi_timer_stop(l, &w->drain_timer);
		mqbi_loop_stop(l);
	}
}

static mqb_err worker_init(mqb_broker *b, mqbi_worker *w, unsigned index)
{
	w->broker = b;
	w->index = index;
	w->rand_state = 0x9E3779B9u ^ (uint32_t)(index * 2654435761u) ^ (uint32_t)mqbi_clock_ms();
	if (!w->rand_state)
		w->rand_state = 1;
	mqbi_strmap_init(&w->sessions, &b->alloc);
	mqb_err err = mqbi_loop_create(&b->alloc, &w->loop);
	if (err)
		return err;
	mqbi_loop_set_data(w->loop, w);
	mqbi_loop_set_before_sleep(w->loop, before_sleep, w);
	w->outbox = mqbi_calloc(&b->alloc, sizeof(*w->outbox) * b->nworkers);
	w->rbuf_cap = 64 * 1024;
	w->rbuf = mqbi_malloc(&b->alloc, w->rbuf_cap);
	if (!w->outbox || !w->rbuf)
		return MQB_ERR_NOMEM;
	return MQB_OK;
}

static void worker_fini(mqb_broker *b, mqbi_worker *w)
{
	mqbi_journal_worker_fini(w); /* its waiters refer to clients and sessions */
	while (w->clients)
		mqbi_client_free(w->clients);
	while (w->dead) {
		mqbi_client *c = w->dead;
		w->dead = c->next;
		mqbi_client_free(c);
	}
	/* End every session still homed here (sessions with expiry outlive their
	 * clients until the broker goes). */
	size_t pos = 0;
	const char *key;
	size_t klen;
	void *val;
	while (mqbi_strmap_next(&w->sessions, &pos, &key, &klen, &val))
		mqbi_session_end(val, "broker destroyed");
	mqbi_strmap_fini(&w->sessions);
	if (w->outbox) {
		for (unsigned i = 0; i < b->nworkers; i++)
			if (w->outbox[i])
				w->outbox[i]->item.drop(&w->outbox[i]->item);
		mqbi_free(&b->alloc, w->outbox);
	}
	if (w->loop)
		mqbi_worker_close_listeners(w);
	if (w->loop)
		mqbi_loop_destroy(w->loop);
	mqbi_free(&b->alloc, w->rbuf);
	mqbi_worker_free_iobufs(w);
	mqbi_worker_free_xbatches(w);
	mqbi_free(&b->alloc, w->view_props);
	mqbi_free(&b->alloc, w->view_text);
	for (uint32_t i = 0; i < w->ntargets; i++)
		mqbi_free(&b->alloc, w->targets[i].sub_ids);
	mqbi_free(&b->alloc, w->targets);
}

static unsigned default_threads(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : (n > 64 ? 64 : (unsigned)n);
}

MQB_API mqb_err mqb_broker_create(mqb_broker **out, const mqb_config *cfg)
{
	if (!out || !cfg)
		return MQB_ERR_INVAL;
	*out = NULL;
	const mqb_allocator *a = mqbi_cfg_allocator(cfg);
	mqb_broker *b = mqbi_calloc(a, sizeof(*b));
	if (!b)
		return MQB_ERR_NOMEM;
	b->alloc = *a;
	a = &b->alloc; /* the caller's config (and its allocator copy) may go away */
	mqb_err err = mqbi_config_clone(cfg, &b->cfg);
	if (err) {
		mqbi_free(a, b);
		return err;
	}
	mqb_log_level log_level;
	mqbi_cfg_log(b->cfg, &b->log_fn, &b->log_user, &log_level);
	atomic_init(&b->log_level_now, (int)log_level);
	if ((err = mqbi_limits_reload(b, b->cfg))) {
		mqb_config_destroy(b->cfg);
		mqbi_free(a, b);
		return err;
	}
	snprintf(b->node, sizeof b->node, "%s", mqbi_cfg_str(b->cfg, MQBI_K_NODE_NAME));
	atomic_init(&b->state, MQBI_BS_CREATED);
	atomic_init(&b->next_uid, 1);
	pthread_mutex_init(&b->state_lock, NULL);
	pthread_mutex_init(&b->host_subs_lock, NULL);
	b->step_fd = -1;

	int64_t threads = mqbi_cfg_int(b->cfg, MQBI_K_LOOP_THREADS);
	b->nworkers = threads > 0 ? (unsigned)threads : default_threads();
	b->workers = mqbi_calloc(a, sizeof(mqbi_worker) * b->nworkers);
	if (!b->workers) {
		err = MQB_ERR_NOMEM;
		goto fail;
	}
	if ((err = mqbi_trie_create(a, &b->trie)) || (err = mqbi_retain_create(a, &b->retain)))
		goto fail;
	for (unsigned i = 0; i < b->nworkers; i++)
		if ((err = worker_init(b, &b->workers[i], i)))
			goto fail;
	*out = b;
	return MQB_OK;
fail:
	mqb_broker_destroy(b);
	return err;
}

MQB_API mqb_err mqb_broker_set_hooks(mqb_broker *b, const mqb_hooks *hooks)
{
	if (!b)
		return MQB_ERR_INVAL;
	if (atomic_load(&b->state) != MQBI_BS_CREATED)
		return MQB_ERR_STATE;
	if (hooks)
		b->hooks = *hooks;
	else
		memset(&b->hooks, 0, sizeof b->hooks);
	return MQB_OK;
}

static void *worker_main(void *arg)
{
	mqbi_worker *w = arg;
	mqbi_loop_run(w->loop);
	return NULL;
}

/* ---- Shutdown: phase 1 publishes every connected client's will (so that
 * subscribers still connected anywhere get them); once every worker is done,
 * phase 2 disconnects everyone and stops the loops. */

static void drain_done(mqbi_loop *l, mqbi_timer *t)
{
	mqbi_worker *w = mqbi_loop_data(l);
	while (w->clients)
		mqbi_client_close(w->clients, MQBI_RC_SERVER_SHUTTING_DOWN);
	mqbi_worker_flush(w);
	mqbi_loop_stop(l);
}

/* Phase 2: every client gets DISCONNECT 0x8B (v5) and is closed once its
 * output is written, or when node.drain_timeout runs out. */
static void shutdown_phase2(mqbi_loop *l, mqbi_inbox_item *it)
{
	mqbi_worker *w = mqbi_loop_data(l);
	w->draining = true;
	for (mqbi_client *c = w->clients, *next; c; c = next) {
		next = c->next;
		if (c->state != MQBI_CS_CONNECTED) {
			mqbi_client_close(c, MQBI_RC_SERVER_SHUTTING_DOWN);
			continue;
		}
		if (c->level == MQBI_V5) {
			mqbi_packet p = {.type = MQBI_DISCONNECT};
			p.u.reason.reason = MQBI_RC_SERVER_SHUTTING_DOWN;
			mqbi_client_send_packet(c, &p);
		}
		c->close_after_flush = true;
		mqbi_client_mark_dirty(c);
		mqbi_client_pause(c); /* nothing more is read */
	}
	mqbi_worker_flush_outbox(w);
	mqbi_worker_flush(w);
	if (!w->clients)
		mqbi_loop_stop(l);
	else
		mqbi_timer_start(l, &w->drain_timer, mqbi_lim(w->broker)->drain_timeout,
		                 drain_done);
}

static void shutdown_phase1(mqbi_loop *l, mqbi_inbox_item *it)
{
	mqbi_worker *w = mqbi_loop_data(l);
	mqb_broker *b = w->broker;
	mqbi_worker_close_listeners(w);
	for (mqbi_client *c = w->clients; c; c = c->next) {
		if (c->will) {
			mqbi_msg *will = c->will;
			c->will = NULL;
			mqbi_publish_will(w, c, will);
		}
	}
	mqbi_worker_flush_outbox(w);
	if (atomic_fetch_sub(&b->stop_pending, 1) == 1)
		for (unsigned i = 0; i < b->nworkers; i++)
			mqbi_loop_post(b->workers[i].loop, &b->workers[i].stop2);
}

/* Opens the listeners and prepares the workers; threads are started by the caller. */
static mqb_err start_common(mqb_broker *b)
{
	int expected = MQBI_BS_CREATED;
	if (!atomic_compare_exchange_strong(&b->state, &expected, MQBI_BS_RUNNING))
		return MQB_ERR_STATE;
	b->started_at = mqbi_clock_ms();
	for (unsigned i = 0; i < b->nworkers; i++) {
		b->workers[i].stop1.run = shutdown_phase1;
		b->workers[i].stop2.run = shutdown_phase2;
	}
	/* What was stored comes back before any client can connect. */
	b->restoring = true;
	mqb_err err = mqbi_journal_start(b);
	b->restoring = false;
	if (!err)
		err = mqbi_listeners_open(b);
	if (err) {
		mqbi_journal_free(b);
		atomic_store(&b->state, MQBI_BS_STOPPED);
		return err;
	}
	for (unsigned i = 0; i < b->nworkers; i++)
		mqbi_sys_start(&b->workers[i]);
	return MQB_OK;
}

MQB_API mqb_err mqb_broker_start_stepped(mqb_broker *b)
{
	if (!b)
		return MQB_ERR_INVAL;
	if (atomic_load(&b->state) != MQBI_BS_CREATED)
		return MQB_ERR_STATE;
	/* One descriptor for the host: an epoll set of the workers' loops. */
	b->step_fd = epoll_create1(EPOLL_CLOEXEC);
	if (b->step_fd < 0)
		return MQB_ERR_IO;
	for (unsigned i = 0; i < b->nworkers; i++) {
		struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
		if (epoll_ctl(b->step_fd, EPOLL_CTL_ADD, mqbi_loop_fd(b->workers[i].loop), &ev) !=
		    0)
			return MQB_ERR_IO;
	}
	b->stepped = true;
	b->step_thread = pthread_self();
	mqb_err err = start_common(b);
	if (!err)
		mqbi_log(b, MQB_LOG_NOTICE, "broker", NULL,
		         "libmqttbroker %s started in step mode: node %s, %u worker(s)",
		         MQB_VERSION_STRING, b->node, b->nworkers);
	return err;
}

MQB_API int mqb_broker_fd(const mqb_broker *b)
{
	return b ? b->step_fd : -1;
}

MQB_API int mqb_broker_timeout(const mqb_broker *b)
{
	if (!b || !b->stepped)
		return -1;
	int best = -1;
	for (unsigned i = 0; i < b->nworkers; i++) {
		int t = mqbi_loop_timeout(b->workers[i].loop);
		if (t >= 0 && (best < 0 || t < best))
			best = t;
	}
	return best;
}

MQB_API mqb_err mqb_broker_step(mqb_broker *b, int timeout_ms)
{
	if (!b || !b->stepped)
		return MQB_ERR_INVAL;
	if (atomic_load(&b->state) == MQBI_BS_STOPPED)
		return MQB_ERR_STATE;
	b->step_thread = pthread_self();
	int t = mqb_broker_timeout(b);
	if (timeout_ms >= 0 && (t < 0 || timeout_ms < t))
		t = timeout_ms;
	struct epoll_event evs[8];
	if (epoll_wait(b->step_fd, evs, 8, t) < 0 && errno != EINTR)
		return MQB_ERR_IO;
	unsigned stopped = 0;
	for (unsigned i = 0; i < b->nworkers; i++)
		if (mqbi_loop_run_once(b->workers[i].loop, 0) < 0)
			stopped++;
	if (stopped == b->nworkers) {
		atomic_store(&b->state, MQBI_BS_STOPPED);
		return MQB_ERR_STATE;
	}
	return MQB_OK;
}

MQB_API mqb_err mqb_broker_start(mqb_broker *b)
{
	if (!b)
		return MQB_ERR_INVAL;
	mqb_err err = start_common(b);
	if (err)
		return err;
	for (unsigned i = 0; i < b->nworkers; i++) {
		mqbi_worker *w = &b->workers[i];
		if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
			mqbi_log(b, MQB_LOG_ERROR, "broker", NULL, "cannot start worker thread: %s",
			         strerror(errno));
			for (unsigned j = 0; j < i; j++)
				mqbi_loop_stop(b->workers[j].loop);
			for (unsigned j = 0; j < i; j++) {
				pthread_join(b->workers[j].thread, NULL);
				b->workers[j].thread_started = false;
			}
			atomic_store(&b->state, MQBI_BS_STOPPED);
			return MQB_ERR_IO;
		}
		w->thread_started = true;
	}
	mqbi_log(b, MQB_LOG_NOTICE, "broker", NULL,
	         "libmqttbroker %s started: node %s, %u worker(s)", MQB_VERSION_STRING, b->node,
	         b->nworkers);
	return MQB_OK;
}

MQB_API void mqb_broker_stop(mqb_broker *b)
{
	if (!b)
		return;
	int expected = MQBI_BS_RUNNING;
	if (!atomic_compare_exchange_strong(&b->state, &expected, MQBI_BS_STOPPING))
		return;
	atomic_store(&b->stop_pending, b->nworkers);
	for (unsigned i = 0; i < b->nworkers; i++)
		mqbi_loop_post(b->workers[i].loop, &b->workers[i].stop1);
}

MQB_API mqb_err mqb_broker_wait(mqb_broker *b)
{
	if (!b)
		return MQB_ERR_INVAL;
	int st = atomic_load(&b->state);
	if (st == MQBI_BS_CREATED || b->stepped)
		return MQB_ERR_STATE;
	for (unsigned i = 0; i < b->nworkers; i++) {
		mqbi_worker *w = &b->workers[i];
		if (w->thread_started) {
			pthread_join(w->thread, NULL);
			w->thread_started = false;
		}
	}
	mqbi_journal_stop(b); /* what the last iterations changed goes to disk */
	atomic_store(&b->state, MQBI_BS_STOPPED);
	return MQB_OK;
}

MQB_API mqb_err mqb_broker_run(mqb_broker *b)
{
	mqb_err err = mqb_broker_start(b);
	if (err)
		return err;
	return mqb_broker_wait(b);
}

typedef struct retain_drop_ctx {
	const mqb_allocator *a;
} retain_drop_ctx;

static void drop_retained(void *user, const char *topic, size_t tlen, void *value)
{
	retain_drop_ctx *ctx = user;
	mqbi_msg_unref(ctx->a, value);
}

MQB_API void mqb_broker_destroy(mqb_broker *b)
{
	if (!b)
		return;
	int st = atomic_load(&b->state);
	if (st == MQBI_BS_RUNNING || st == MQBI_BS_STOPPING) {
		mqb_broker_stop(b);
		mqb_broker_wait(b);
	}
	const mqb_allocator a = b->alloc;
	/* Sessions that end below stay in the store. */
	mqbi_journal_free(b);
	if (b->workers)
		mqbi_host_subs_release(b);
	if (b->workers) {
		/* Held publishers reference sessions of any worker: first. */
		for (unsigned i = 0; i < b->nworkers; i++)
			mqbi_bp_fini(&b->workers[i]);
		for (unsigned i = 0; i < b->nworkers; i++)
			worker_fini(b, &b->workers[i]);
		mqbi_free(&a, b->workers);
	}
	if (b->retain) {
		retain_drop_ctx ctx = {&a};
		mqbi_retain_foreach(b->retain, drop_retained, &ctx);
		mqbi_retain_destroy(b->retain, NULL);
	}
	mqbi_trie_destroy(b->trie);
	for (unsigned i = 0; i < b->nlisteners; i++)
		mqbi_listener_free(b, b->listeners[i]);
	mqbi_free(&a, b->listeners);
	mqb_config_destroy(b->cfg);
	while (b->limit_versions) {
		struct mqbi_limits_version *v = b->limit_versions;
		b->limit_versions = v->next;
		mqbi_free(&a, v);
	}
	pthread_mutex_destroy(&b->state_lock);
	pthread_mutex_destroy(&b->host_subs_lock);
	if (b->step_fd >= 0)
		close(b->step_fd);
	mqbi_free(&a, b);
}
