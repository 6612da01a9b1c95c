/* The storage thread: group commit of the workers' journal chunks, paging
 * session queues in from disk, recovery at start (see journal.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/core.h"
#include "store/journal.h"

/* Records waiting for the storage thread above which publishers wait for
 * durability in every sync mode (so RAM stays bounded when the disk is
 * slower than the publishers). */
#define BACKLOG_HIGH 200000u
/* Retry period after a failed commit (full disk). */
#define RETRY_MS 1000u

enum { ITEM_CHUNK = 0, ITEM_READ };

/* A page of a session's queue, on its way back to the session's worker. */
typedef struct jpage {
	mqbi_inbox_item item;
	mqb_broker *b;
	mqbi_session *s; /* a reference */
	mqbi_stored_delivery *d;
	uint32_t n, cap;
	uint32_t limit;
	uint64_t *skip; /* deliveries in flight when it was asked for */
	uint32_t nskip;
	bool failed;
} jpage;

typedef struct jitem {
	struct jitem *next;
	uint8_t kind;
	unsigned worker;
	uint64_t no; /* ITEM_CHUNK: the worker's chunk number */
	uint32_t n;
	mqbi_rec *recs;
	jpage *page; /* ITEM_READ: where the rows go */
	uint64_t sid;
} jitem;

struct mqbi_journal {
	mqb_broker *b;
	mqbi_store *st;
	mqbi_sync_mode sync;
	uint64_t flush_interval; /* ms */
	uint64_t max_bytes;      /* 0 = no budget */
	bool refuse;             /* overflow policy: refuse (else drop oldest) */
	uint32_t window;
	pthread_t thread;
	bool thread_started, stopped;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* work for the storage thread */
	pthread_cond_t wake; /* ends a pause between commits: stop, or a long backlog */
	jitem *head, *tail;  /* to the storage thread, in order */
	bool stopping;
	_Atomic uint64_t next_sid, next_mid;
	_Atomic uint64_t backlog; /* records handed over, not yet applied */
	_Atomic uint64_t bytes;   /* stored, after the last commit */
	_Atomic bool over_budget;
	mqbi_counter commits, records, dropped, refused, errors;
	/* Storage thread scratch: the records of one commit group, which of them
	 * survive, and the per-worker highest chunk in the group. */
	mqbi_rec *grp;
	uint32_t grp_n, grp_cap;
	uint32_t grp_taken; /* records taken from the workers for it (the backlog) */
	uint64_t *grp_no;
	jitem *pend_head, *pend_tail; /* taken from the queue, not yet processed */
};

static const mqb_allocator *alloc_of(const mqbi_journal *j)
{
	return &j->b->alloc;
}

static mqbi_journal *journal_of(const mqb_broker *b)
{
	mqbi_journal *j = b->journal;
	return j && !j->stopped ? j : NULL;
}

/* ---- Workers: appending ------------------------------------------------- */

mqbi_rec *mqbi_journal_add(mqbi_worker *w, uint8_t op, uint64_t sid)
{
	mqbi_journal *j = journal_of(w->broker);
	if (!j)
		return NULL;
	mqbi_wjournal *wj = &w->j;
	if (wj->n == wj->cap) {
		uint32_t cap = wj->cap ? wj->cap * 2 : 64;
		mqbi_rec *r = mqbi_realloc(alloc_of(j), wj->recs, sizeof(*r) * cap);
		if (!r) {
			atomic_fetch_add_explicit(&j->errors, 1, memory_order_relaxed);
			mqbi_log(w->broker, MQB_LOG_ERROR, "store", NULL,
			         "out of memory: a change was not persisted");
			return NULL;
		}
		wj->recs = r;
		wj->cap = cap;
	}
	mqbi_rec *r = &wj->recs[wj->n++];
	memset(r, 0, sizeof(*r));
	r->op = op;
	r->sid = sid;
	wj->appended++;
	return r;
}

uint64_t mqbi_journal_msg(mqbi_worker *w, mqbi_msg *m)
{
	mqbi_journal *j = journal_of(w->broker);
	uint64_t mid = atomic_load_explicit(&m->store_id, memory_order_acquire);
	if (!mid) {
		uint64_t fresh = atomic_fetch_add(&j->next_mid, 1);
		if (atomic_compare_exchange_strong(&m->store_id, &mid, fresh))
			mid = fresh;
	}
	/* Every chunk that refers to a message carries it (the storage thread
	 * drops it again when nothing in its commit group keeps it). */
	if (w->j.last_msg != m || w->j.n == 0) {
		mqbi_rec *r = mqbi_journal_add(w, MQBI_REC_MSG_PUT, 0);
		if (r) {
			r->mid = mid;
			r->msg = mqbi_msg_ref(m);
			w->j.last_msg = m;
		}
	}
	return mid;
}

uint64_t mqbi_journal_new_sid(mqb_broker *b)
{
	return atomic_fetch_add(&b->journal->next_sid, 1);
}

void mqbi_journal_lock(mqb_broker *b)
{
	if (journal_of(b))
		pthread_mutex_lock(&b->journal->lock);
}

void mqbi_journal_unlock(mqb_broker *b)
{
	if (journal_of(b))
		pthread_mutex_unlock(&b->journal->lock);
}

static void enqueue_locked(mqbi_journal *j, jitem *it)
{
	it->next = NULL;
	if (j->tail)
		j->tail->next = it;
	else
		j->head = it;
	j->tail = it;
	pthread_cond_signal(&j->cond);
}

void mqbi_journal_flush_locked(mqbi_worker *w)
{
	mqbi_journal *j = journal_of(w->broker);
	mqbi_wjournal *wj = &w->j;
	if (!j || wj->n == 0)
		return;
	jitem *it = mqbi_calloc(alloc_of(j), sizeof(*it));
	if (!it) {
		/* Keep the records: the next iteration tries again. */
		atomic_fetch_add_explicit(&j->errors, 1, memory_order_relaxed);
		return;
	}
	it->kind = ITEM_CHUNK;
	it->worker = w->index;
	it->no = wj->open_no++;
	it->recs = wj->recs;
	it->n = wj->n;
	wj->recs = NULL;
	wj->n = wj->cap = 0;
	wj->last_msg = NULL;
	if (atomic_fetch_add(&j->backlog, it->n) + it->n > BACKLOG_HIGH)
		pthread_cond_signal(&j->wake);
	enqueue_locked(j, it);
}

/* ---- Workers: waiting for durability ------------------------------------ */

static void notify_run(mqbi_loop *l, mqbi_inbox_item *it);

static bool waiter_push(mqbi_worker *w, const mqbi_waiter *x)
{
	mqbi_wjournal *wj = &w->j;
	/* Durable already (no commit is coming for it): release it soon. */
	if (x->no <= atomic_load_explicit(&wj->durable, memory_order_acquire) &&
	    !atomic_exchange(&wj->notify_posted, true))
		mqbi_loop_post(w->loop, &wj->notify);
	if (wj->w_count == wj->w_cap) {
		uint32_t cap = wj->w_cap ? wj->w_cap * 2 : 64;
		mqbi_waiter *n = mqbi_malloc(&w->broker->alloc, sizeof(*n) * cap);
		if (!n)
			return false;
		for (uint32_t i = 0; i < wj->w_count; i++)
			n[i] = wj->waiters[(wj->w_head + i) & (wj->w_cap - 1)];
		mqbi_free(&w->broker->alloc, wj->waiters);
		wj->waiters = n;
		wj->w_cap = cap;
		wj->w_head = 0;
	}
	wj->waiters[(wj->w_head + wj->w_count++) & (wj->w_cap - 1)] = *x;
	return true;
}

/* The chunk that holds w's latest record: the open one, or the one just
 * handed over (deliveries posted mid-iteration flush it). */
static uint64_t last_no(const mqbi_worker *w)
{
	return w->j.n ? w->j.open_no : w->j.open_no - 1;
}

static bool must_wait(const mqbi_journal *j)
{
	return j->sync == MQBI_SYNC_ALWAYS ||
	       atomic_load_explicit(&j->backlog, memory_order_relaxed) > BACKLOG_HIGH;
}

void mqbi_journal_send(mqbi_client *c, const mqbi_packet *p, uint64_t mark)
{
	mqbi_worker *w = c->w;
	mqbi_journal *j = journal_of(w->broker);
	bool wrote = j && w->j.appended != mark && must_wait(j);
	if (!wrote && c->acks_waiting == 0) {
		mqbi_client_send_packet(c, p);
		return;
	}
	/* Behind the client's earlier acknowledgements, if nothing else. */
	bool sub = p->type == MQBI_SUBACK || p->type == MQBI_UNSUBACK;
	mqbi_waiter x = {.no = wrote ? last_no(w) : 0, .c = c, .type = (uint8_t)p->type};
	if (sub) {
		x.packet_id = p->u.suback.packet_id;
		x.n_reasons = p->u.suback.reasons.len;
		x.reasons = mqbi_malloc(&w->broker->alloc, x.n_reasons ? x.n_reasons : 1);
		if (x.reasons)
			memcpy(x.reasons, p->u.suback.reasons.ptr, x.n_reasons);
	} else {
		x.packet_id = p->u.ack.packet_id;
		x.reason = p->u.ack.reason;
	}
	if ((sub && !x.reasons) || c->acks_waiting == UINT16_MAX || !waiter_push(w, &x)) {
		mqbi_free(&w->broker->alloc, x.reasons);
		mqbi_client_close(c, MQBI_RC_IMPL_SPECIFIC); /* it resends after reconnecting */
		return;
	}
	c->acks_waiting++;
}

bool mqbi_journal_hold(mqbi_session *s, mqbi_delivery *d, uint8_t type)
{
	mqbi_worker *w = s->home;
	mqbi_journal *j = journal_of(w->broker);
	if (!j || j->sync != MQBI_SYNC_ALWAYS)
		return false;
	mqbi_waiter x = {.no = last_no(w), .s = s, .packet_id = d->packet_id, .type = type};
	if (!waiter_push(w, &x))
		return false; /* sent at once: a crash now could repeat it, nothing worse */
	mqbi_session_ref(s);
	d->held = true;
	return true;
}

void mqbi_journal_forget_client(mqbi_client *c)
{
	mqbi_wjournal *wj = &c->w->j;
	for (uint32_t i = 0; i < wj->w_count && c->acks_waiting; i++) {
		mqbi_waiter *x = &wj->waiters[(wj->w_head + i) & (wj->w_cap - 1)];
		if (x->c == c) {
			x->c = NULL;
			c->acks_waiting--;
		}
	}
}

/* Sends what a durable chunk released. */
static void release_waiter(mqbi_worker *w, mqbi_waiter *x)
{
	if (x->c) {
		x->c->acks_waiting--;
		mqbi_packet p = {.type = x->type};
		if (x->reasons) {
			p.u.suback.packet_id = x->packet_id;
			p.u.suback.reasons.ptr = x->reasons;
			p.u.suback.reasons.len = x->n_reasons;
		} else {
			p.u.ack.packet_id = x->packet_id;
			p.u.ack.reason = x->reason;
		}
		mqbi_client_send_packet(x->c, &p);
	}
	if (x->reasons || x->c) {
		mqbi_free(&w->broker->alloc, x->reasons);
		return;
	}
	mqbi_session *s = x->s;
	if (!s)
		return;
	mqbi_delivery *d = s->ended ? NULL : mqbi_session_inflight_find(s, x->packet_id);
	if (d && d->held) {
		d->held = false;
		mqbi_session_send_held(s, d);
	}
	mqbi_session_unref(s);
}

static void release_waiters(mqbi_worker *w, bool all)
{
	mqbi_wjournal *wj = &w->j;
	uint64_t durable = atomic_load_explicit(&wj->durable, memory_order_acquire);
	while (wj->w_count) {
		mqbi_waiter *x = &wj->waiters[wj->w_head];
		if (!all && x->no > durable)
			break;
		mqbi_waiter copy = *x;
		wj->w_head = (wj->w_head + 1) & (wj->w_cap - 1);
		wj->w_count--;
		if (all) {
			if (copy.c)
				copy.c->acks_waiting--;
			if (copy.s)
				mqbi_session_unref(copy.s);
			mqbi_free(&w->broker->alloc, copy.reasons);
			continue;
		}
		release_waiter(w, &copy);
	}
}

static void notify_run(mqbi_loop *l, mqbi_inbox_item *it)
{
	mqbi_worker *w = mqbi_loop_data(l);
	atomic_store(&w->j.notify_posted, false);
	release_waiters(w, false);
}

void mqbi_journal_worker_fini(mqbi_worker *w)
{
	release_waiters(w, true);
	for (uint32_t i = 0; i < w->j.n; i++)
		mqbi_rec_release(&w->broker->alloc, &w->j.recs[i]);
	mqbi_free(&w->broker->alloc, w->j.recs);
	mqbi_free(&w->broker->alloc, w->j.waiters);
	memset(&w->j, 0, sizeof(w->j));
}

/* ---- Paging a queue in -------------------------------------------------- */

static void page_free(jpage *p)
{
	const mqb_allocator *a = &p->b->alloc;
	for (uint32_t i = 0; i < p->n; i++) {
		mqbi_msg_unref(a, p->d[i].msg);
		mqbi_free(a, (void *)p->d[i].sub_ids);
	}
	mqbi_free(a, p->d);
	mqbi_free(a, p->skip);
	mqbi_session_unref(p->s);
	mqbi_free(a, p);
}

static void page_run(mqbi_loop *l, mqbi_inbox_item *it)
{
	jpage *p = (jpage *)it;
	mqbi_session_page_in(p->s, p->d, p->n, p->skip, p->nskip, !p->failed, p->n < p->limit);
	/* page_in took the messages it kept (and cleared them). */
	page_free(p);
}

static void page_drop(mqbi_inbox_item *it)
{
	page_free((jpage *)it);
}

void mqbi_journal_read_queue(mqbi_session *s, uint32_t limit)
{
	mqb_broker *b = s->home->broker;
	mqbi_journal *j = journal_of(b);
	if (!j)
		return;
	jitem *it = mqbi_calloc(alloc_of(j), sizeof(*it));
	jpage *p = mqbi_calloc(alloc_of(j), sizeof(*p));
	uint64_t *skip = s->inflight_count
	                         ? mqbi_malloc(alloc_of(j), sizeof(uint64_t) * s->inflight_count)
	                         : NULL;
	if (!it || !p || (s->inflight_count && !skip)) {
		mqbi_free(alloc_of(j), it);
		mqbi_free(alloc_of(j), p);
		mqbi_free(alloc_of(j), skip);
		s->paging = false; /* asked again on the next pump */
		return;
	}
	/* The page holds those too: they are in flight now, and when the page
	 * arrives they are still, or acknowledged and gone. */
	for (uint32_t i = 0; i < s->inflight_slots; i++) {
		const mqbi_delivery *f =
		        &s->inflight[(s->inflight_head + i) & (s->inflight_cap - 1)];
		if (f->state != MQBI_DS_DONE && f->stored && p->nskip < s->inflight_count)
			skip[p->nskip++] =
			        atomic_load_explicit(&f->msg->store_id, memory_order_relaxed);
	}
	p->b = b;
	p->s = mqbi_session_ref(s);
	p->limit = limit;
	p->skip = skip;
	p->item.run = page_run;
	p->item.drop = page_drop;
	it->kind = ITEM_READ;
	it->worker = s->home->index;
	it->page = p;
	it->sid = atomic_load(&s->sid);
	/* After the records this worker made so far. */
	pthread_mutex_lock(&j->lock);
	mqbi_journal_flush_locked(s->home);
	enqueue_locked(j, it);
	pthread_mutex_unlock(&j->lock);
}

static mqb_err page_row(void *user, const mqbi_stored_delivery *d)
{
	jpage *p = user;
	const mqb_allocator *a = &p->b->alloc;
	if (p->n == p->cap) {
		uint32_t cap = p->cap ? p->cap * 2 : 64;
		mqbi_stored_delivery *n = mqbi_realloc(a, p->d, sizeof(*n) * cap);
		if (!n) {
			mqbi_msg_unref(a, d->msg);
			return MQB_ERR_NOMEM;
		}
		p->d = n;
		p->cap = cap;
	}
	mqbi_stored_delivery *x = &p->d[p->n];
	*x = *d;
	x->sub_ids = NULL;
	if (d->n_sub_ids == 1)
		x->sub_id = d->sub_ids ? d->sub_ids[0] : d->sub_id;
	if (d->n_sub_ids > 1) {
		uint32_t *ids = mqbi_malloc(a, sizeof(uint32_t) * d->n_sub_ids);
		if (!ids) {
			mqbi_msg_unref(a, d->msg);
			return MQB_ERR_NOMEM;
		}
		memcpy(ids, d->sub_ids, sizeof(uint32_t) * d->n_sub_ids);
		x->sub_ids = ids;
	}
	p->n++;
	return MQB_OK;
}

static void run_read(mqbi_journal *j, jitem *it)
{
	mqb_broker *b = j->b;
	jpage *p = it->page;
	mqb_err err = j->st->ops->read_queue(j->st, it->sid, p->limit, page_row, p);
	if (err) {
		p->failed = true;
		atomic_fetch_add_explicit(&j->errors, 1, memory_order_relaxed);
		mqbi_log(b, MQB_LOG_ERROR, "store", NULL,
		         "cannot read the queue of session %s from the store: %s", p->s->client_id,
		         j->st->ops->errmsg(j->st));
	}
	mqbi_loop_post(b->workers[it->worker].loop, &p->item);
}

/* ---- The storage thread ------------------------------------------------- */

/* A delivery's key, for cancelling a PUT and a DEL that meet in one group. */
typedef struct dkey {
	uint64_t sid, mid;
	uint32_t put; /* index of the PUT in the group */
} dkey;

static uint32_t dkey_hash(uint64_t sid, uint64_t mid)
{
	uint64_t h = (sid * 0x9E3779B97F4A7C15ull) ^ (mid * 0xC2B2AE3D27D4EB4Full);
	return (uint32_t)(h ^ (h >> 32));
}

/* Drops what cancels out within the group: a delivery acknowledged before
 * it was ever written, and the messages no surviving record needs. Returns
 * how many records survive (compacted to the front). */
static uint32_t cancel_out(mqbi_journal *j, mqbi_rec *r, uint32_t n)
{
	const mqb_allocator *a = alloc_of(j);
	uint32_t cap = 64;
	while (cap < n * 2)
		cap *= 2;
	dkey *map = mqbi_calloc(a, sizeof(*map) * cap);
	bool *dead = mqbi_calloc(a, n ? n : 1);
	if (!map || !dead) {
		mqbi_free(a, map);
		mqbi_free(a, dead);
		return n; /* write everything: correct, only slower */
	}
	for (uint32_t i = 0; i < n; i++) {
		if (r[i].op != MQBI_REC_DLV_PUT && r[i].op != MQBI_REC_DLV_DEL &&
		    r[i].op != MQBI_REC_DLV_STATE)
			continue;
		uint32_t h = dkey_hash(r[i].sid, r[i].mid) & (cap - 1);
		while (map[h].sid && (map[h].sid != r[i].sid || map[h].mid != r[i].mid))
			h = (h + 1) & (cap - 1);
		if (r[i].op == MQBI_REC_DLV_PUT) {
			map[h] = (dkey){r[i].sid, r[i].mid, i};
		} else if (map[h].sid) {
			if (r[i].op == MQBI_REC_DLV_DEL) {
				dead[map[h].put] = true;
				dead[i] = true;
				map[h].put = UINT32_MAX; /* a later PUT of the key starts again */
			} else if (map[h].put == UINT32_MAX) {
				dead[i] = true; /* a state change of a cancelled delivery */
			}
		}
	}
	/* Messages: kept when a surviving PUT in the group refers to them. The
	 * group's PUTs of a message follow its MSG_PUT, so one pass from the
	 * end counts them. */
	memset(map, 0, sizeof(*map) * cap);
	for (uint32_t i = n; i-- > 0;) {
		if (dead[i])
			continue;
		if (r[i].op == MQBI_REC_DLV_PUT || r[i].op == MQBI_REC_MSG_PUT) {
			uint32_t h = dkey_hash(0, r[i].mid) & (cap - 1);
			while (map[h].mid && map[h].mid != r[i].mid)
				h = (h + 1) & (cap - 1);
			if (r[i].op == MQBI_REC_DLV_PUT) {
				map[h].mid = r[i].mid;
				map[h].sid = 1; /* wanted */
			} else if (!map[h].mid) {
				dead[i] = true;
			}
		}
	}
	uint32_t k = 0;
	for (uint32_t i = 0; i < n; i++) {
		if (dead[i])
			mqbi_rec_release(a, &r[i]);
		else
			r[k++] = r[i];
	}
	mqbi_free(a, map);
	mqbi_free(a, dead);
	return k;
}

static void sleep_ms(mqbi_journal *j, uint64_t ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += (time_t)(ms / 1000);
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&j->lock);
	if (!j->stopping)
		pthread_cond_timedwait(&j->wake, &j->lock, &ts);
	pthread_mutex_unlock(&j->lock);
}

static void update_stats(mqbi_journal *j)
{
	mqbi_store_stats s;
	j->st->ops->stats(j->st, &s);
	atomic_store(&j->bytes, s.bytes);
	if (!j->max_bytes)
		return;
	if (s.bytes > j->max_bytes && !j->refuse) {
		/* Overflow policy drop_oldest: make room for a tenth of the budget. */
		uint64_t dropped = 0;
		if (j->st->ops->trim(j->st, j->max_bytes - j->max_bytes / 10, &dropped) == MQB_OK) {
			atomic_fetch_add_explicit(&j->dropped, dropped, memory_order_relaxed);
			mqbi_log(j->b, MQB_LOG_WARNING, "store", NULL,
			         "disk budget persistence.max_bytes reached: dropped the %llu "
			         "oldest "
			         "queued messages",
			         (unsigned long long)dropped);
			j->st->ops->stats(j->st, &s);
			atomic_store(&j->bytes, s.bytes);
		}
	}
	atomic_store(&j->over_budget, s.bytes >= j->max_bytes);
}

static bool group_add(mqbi_journal *j, jitem *it)
{
	if (j->grp_n + it->n > j->grp_cap) {
		uint32_t cap = j->grp_cap ? j->grp_cap : 1024;
		while (cap < j->grp_n + it->n)
			cap *= 2;
		mqbi_rec *g = mqbi_realloc(alloc_of(j), j->grp, sizeof(*g) * cap);
		if (!g)
			return false;
		j->grp = g;
		j->grp_cap = cap;
	}
	memcpy(j->grp + j->grp_n, it->recs, sizeof(mqbi_rec) * it->n);
	j->grp_n += it->n;
	j->grp_taken += it->n;
	if (it->no > j->grp_no[it->worker])
		j->grp_no[it->worker] = it->no;
	return true;
}

/* Moves what the workers handed over since to the end of the thread's own
 * list (the storage thread only). */
static void take_queue(mqbi_journal *j)
{
	pthread_mutex_lock(&j->lock);
	if (j->head) {
		if (j->pend_tail)
			j->pend_tail->next = j->head;
		else
			j->pend_head = j->head;
		j->pend_tail = j->tail;
		j->head = j->tail = NULL;
	}
	pthread_mutex_unlock(&j->lock);
}

static jitem *pending_pop(mqbi_journal *j)
{
	jitem *it = j->pend_head;
	if (it && !(j->pend_head = it->next))
		j->pend_tail = NULL;
	return it;
}

static void chunk_free(mqbi_journal *j, jitem *it, bool records_too)
{
	if (records_too)
		for (uint32_t i = 0; i < it->n; i++)
			mqbi_rec_release(alloc_of(j), &it->recs[i]);
	mqbi_free(alloc_of(j), it->recs);
	mqbi_free(alloc_of(j), it);
}

/* While the disk is full: the chunks that came since join the group, so
 * acknowledgements that arrived meanwhile cancel out what they can, and the
 * deliveries they end are deleted first, in a transaction of their own
 * (after cancel_out no record of the group puts their keys again, so they
 * commute with it), to make room for the rest. Returns the group's size. */
static uint32_t make_room(mqbi_journal *j, uint32_t n)
{
	take_queue(j);
	j->grp_n = n;
	while (j->pend_head && j->pend_head->kind == ITEM_CHUNK) {
		if (!group_add(j, j->pend_head))
			break;
		chunk_free(j, pending_pop(j), false);
	}
	n = cancel_out(j, j->grp, j->grp_n);
	mqbi_rec *dels = mqbi_malloc(alloc_of(j), sizeof(*dels) * (n ? n : 1));
	if (!dels)
		return n;
	uint32_t k = 0;
	for (uint32_t i = 0; i < n; i++)
		if (j->grp[i].op == MQBI_REC_DLV_DEL)
			dels[k++] = j->grp[i];
	if (k && k < n && j->st->ops->apply(j->st, dels, k) == MQB_OK) {
		uint32_t kept = 0;
		for (uint32_t i = 0; i < n; i++) {
			if (j->grp[i].op == MQBI_REC_DLV_DEL)
				mqbi_rec_release(alloc_of(j), &j->grp[i]);
			else
				j->grp[kept++] = j->grp[i];
		}
		atomic_fetch_add_explicit(&j->records, k, memory_order_relaxed);
		n = kept;
	}
	mqbi_free(alloc_of(j), dels);
	return n;
}

/* Applies the group, retrying while the disk is full (acknowledgements that
 * wait for it keep waiting; nothing is dropped). */
static void commit_group(mqbi_journal *j)
{
	uint32_t n = cancel_out(j, j->grp, j->grp_n);
	bool failing = false;
	for (;;) {
		mqb_err err = n ? j->st->ops->apply(j->st, j->grp, n) : MQB_OK;
		if (!err)
			break;
		atomic_fetch_add_explicit(&j->errors, 1, memory_order_relaxed);
		if (!failing)
			mqbi_log(j->b, MQB_LOG_ERROR, "store", NULL,
			         "cannot write to the store%s: %s; retrying every %u ms, "
			         "acknowledgements wait",
			         err == MQB_ERR_RANGE ? " (disk full or size limit reached)" : "",
			         j->st->ops->errmsg(j->st), RETRY_MS);
		failing = true;
		bool stopping;
		pthread_mutex_lock(&j->lock);
		stopping = j->stopping;
		pthread_mutex_unlock(&j->lock);
		if (stopping) {
			mqbi_log(j->b, MQB_LOG_ERROR, "store", NULL,
			         "stopping with %u changes not written to the store", n);
			break;
		}
		sleep_ms(j, RETRY_MS);
		if (err == MQB_ERR_RANGE)
			n = make_room(j, n);
	}
	if (failing)
		mqbi_log(j->b, MQB_LOG_NOTICE, "store", NULL, "writing to the store again");
	for (uint32_t i = 0; i < n; i++)
		mqbi_rec_release(alloc_of(j), &j->grp[i]);
	atomic_fetch_sub(&j->backlog, j->grp_taken);
	j->grp_n = j->grp_taken = 0;
	if (n) {
		atomic_fetch_add_explicit(&j->commits, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&j->records, n, memory_order_relaxed);
		update_stats(j);
	}
	/* Tell the workers how far they are durable. */
	mqb_broker *b = j->b;
	for (unsigned i = 0; i < b->nworkers; i++) {
		if (!j->grp_no[i])
			continue;
		mqbi_worker *w = &b->workers[i];
		atomic_store_explicit(&w->j.durable, j->grp_no[i], memory_order_release);
		j->grp_no[i] = 0;
		if (!atomic_exchange(&w->j.notify_posted, true))
			mqbi_loop_post(w->loop, &w->j.notify);
	}
}

static void *storage_main(void *arg)
{
	mqbi_journal *j = arg;
	for (;;) {
		pthread_mutex_lock(&j->lock);
		while (!j->head && !j->stopping)
			pthread_cond_wait(&j->cond, &j->lock);
		bool stopping = j->stopping;
		pthread_mutex_unlock(&j->lock);
		take_queue(j);
		if (!j->pend_head && stopping)
			break;
		jitem *it;
		while ((it = pending_pop(j))) {
			if (it->kind == ITEM_READ) {
				/* The read sees exactly what came before it. */
				commit_group(j);
				run_read(j, it);
				mqbi_free(alloc_of(j), it);
				continue;
			}
			if (!group_add(j, it)) {
				commit_group(j); /* no room to gather: write what we have */
				if (!group_add(j, it)) {
					atomic_fetch_add_explicit(&j->errors, 1,
					                          memory_order_relaxed);
					mqbi_log(j->b, MQB_LOG_ERROR, "store", NULL,
					         "out of memory: %u changes not written", it->n);
					chunk_free(j, it, true);
					continue;
				}
			}
			chunk_free(j, it, false);
		}
		commit_group(j);
		if (j->sync != MQBI_SYNC_ALWAYS && !stopping &&
		    atomic_load(&j->backlog) < BACKLOG_HIGH)
			sleep_ms(j, j->flush_interval);
	}
	return NULL;
}

/* ---- Recovery ----------------------------------------------------------- */

typedef struct sid_entry {
	uint64_t sid;
	mqbi_session *s;
} sid_entry;

typedef struct load_ctx {
	mqb_broker *b;
	sid_entry *v;
	size_t n, cap;
	bool sorted;
	int64_t now_wall;
	uint64_t sessions, subs, inflight, queued, retained, wills, expired;
} load_ctx;

static int sid_cmp(const void *x, const void *y)
{
	uint64_t a = ((const sid_entry *)x)->sid, b = ((const sid_entry *)y)->sid;
	return a < b ? -1 : a > b;
}

static mqbi_session *find_sid(load_ctx *lc, uint64_t sid)
{
	if (!lc->sorted) {
		qsort(lc->v, lc->n, sizeof(*lc->v), sid_cmp);
		lc->sorted = true;
	}
	sid_entry key = {sid, NULL};
	sid_entry *e = bsearch(&key, lc->v, lc->n, sizeof(*lc->v), sid_cmp);
	return e ? e->s : NULL;
}

static mqb_err load_session(void *user, uint64_t sid, const char *id, size_t len, uint32_t expiry,
                            uint8_t level, int64_t offline_at, uint64_t queued)
{
	load_ctx *lc = user;
	mqb_broker *b = lc->b;
	/* A session that was online at the crash went offline then. */
	int64_t since = offline_at ? offline_at : lc->now_wall;
	int64_t left_ms =
	        expiry == UINT32_MAX ? INT64_MAX : since + (int64_t)expiry * 1000 - lc->now_wall;
	mqbi_worker *w = mqbi_home_worker(b, id, len);
	if (left_ms <= 0 || mqbi_session_find(w, id, len)) {
		mqbi_rec *r = mqbi_journal_add(w, MQBI_REC_SESSION_DEL, sid);
		(void)r;
		lc->expired++;
		return MQB_OK;
	}
	mqbi_session *s = mqbi_session_create(w, id, len);
	if (!s)
		return MQB_ERR_NOMEM;
	s->expiry = expiry;
	s->level = level;
	atomic_store(&s->sid, sid);
	s->spilled = queued > UINT32_MAX ? UINT32_MAX : (uint32_t)queued;
	s->spill = queued > 0;
	if (expiry != UINT32_MAX)
		mqbi_timer_start(w->loop, &s->expiry_timer, (uint64_t)left_ms,
		                 mqbi_session_expiry_fn);
	if (lc->n == lc->cap) {
		size_t cap = lc->cap ? lc->cap * 2 : 256;
		sid_entry *v = mqbi_realloc(&b->alloc, lc->v, sizeof(*v) * cap);
		if (!v)
			return MQB_ERR_NOMEM;
		lc->v = v;
		lc->cap = cap;
	}
	lc->v[lc->n++] = (sid_entry){sid, s};
	lc->sessions++;
	lc->queued += queued;
	return MQB_OK;
}

static mqb_err load_sub(void *user, uint64_t sid, const char *text, size_t len, uint8_t options,
                        uint32_t sub_id)
{
	load_ctx *lc = user;
	mqbi_session *s = find_sid(lc, sid);
	if (!s)
		return MQB_OK;
	mqbi_subopts o = {.qos = MQBI_SUBOPT_QOS(options),
	                  .no_local = (options & MQBI_SUBOPT_NL) != 0,
	                  .retain_as_published = (options & MQBI_SUBOPT_RAP) != 0,
	                  .retain_handling = MQBI_SUBOPT_RH(options)};
	bool is_new, shared;
	size_t before = mqbi_strmap_count(&s->subs);
	uint8_t rc = mqbi_session_subscribe(s, MQBI_V5,
	                                    (mqbi_bytes){(const uint8_t *)text, (uint32_t)len}, &o,
	                                    sub_id, &is_new, &shared);
	if (rc >= 0x80)
		mqbi_log(lc->b, MQB_LOG_WARNING, "store", NULL,
		         "stored subscription '%.*s' of %s not restored (reason 0x%02x)", (int)len,
		         text, s->client_id, rc);
	else
		lc->subs++;
	mqbi_session_sync_multi(s, before); /* overlapping ones merge, as before */
	return MQB_OK;
}

static mqb_err load_inflight(void *user, uint64_t sid, const mqbi_stored_delivery *d)
{
	load_ctx *lc = user;
	mqbi_session *s = find_sid(lc, sid);
	if (!s) {
		mqbi_msg_unref(&lc->b->alloc, d->msg);
		return MQB_OK;
	}
	lc->inflight++;
	return mqbi_session_restore_inflight(s, d);
}

static mqb_err load_awrel(void *user, uint64_t sid, uint16_t packet_id)
{
	load_ctx *lc = user;
	mqbi_session *s = find_sid(lc, sid);
	if (!s)
		return MQB_OK;
	return mqbi_session_awaiting_rel_add(s, packet_id, mqbi_clock_ms());
}

static mqb_err load_retained(void *user, mqbi_msg *msg)
{
	load_ctx *lc = user;
	mqbi_retain_store(lc->b, msg);
	mqbi_msg_unref(&lc->b->alloc, msg);
	lc->retained++;
	return MQB_OK;
}

static mqb_err load_will(void *user, uint64_t sid, mqbi_msg *msg, int64_t due_at)
{
	load_ctx *lc = user;
	mqbi_session *s = find_sid(lc, sid);
	if (!s) {
		mqbi_msg_unref(&lc->b->alloc, msg);
		return MQB_OK;
	}
	int64_t left = due_at - lc->now_wall;
	mqbi_session_schedule_will(s, msg, left > 0 ? (uint32_t)((left + 999) / 1000) : 0);
	lc->wills++;
	return MQB_OK;
}

static void store_log(void *user, mqb_log_level lvl, const char *text)
{
	mqbi_log(user, lvl, "store", NULL, "%s", text);
}

mqb_err mqbi_journal_start(mqb_broker *b)
{
	const mqb_config *cfg = b->cfg;
	if (!mqbi_cfg_int(cfg, MQBI_K_PERSIST_ENABLE))
		return MQB_OK;
	const char *path = mqbi_cfg_str(cfg, MQBI_K_PERSIST_PATH);
	if (!path || !*path) {
		mqbi_log(b, MQB_LOG_ERROR, "store", NULL,
		         "persistence.enable = true needs persistence.path (the database file)");
		return MQB_ERR_INVAL;
	}
	mqbi_journal *j = mqbi_calloc(&b->alloc, sizeof(*j));
	if (!j)
		return MQB_ERR_NOMEM;
	j->b = b;
	j->sync = (mqbi_sync_mode)mqbi_cfg_int(cfg, MQBI_K_PERSIST_SYNC);
	j->flush_interval = (uint64_t)mqbi_cfg_int(cfg, MQBI_K_PERSIST_FLUSH_INTERVAL);
	j->max_bytes = (uint64_t)mqbi_cfg_int(cfg, MQBI_K_PERSIST_MAX_BYTES);
	j->refuse = mqbi_cfg_int(cfg, MQBI_K_PERSIST_OVERFLOW) == 1;
	j->window = (uint32_t)mqbi_cfg_int(cfg, MQBI_K_PERSIST_QUEUE_WINDOW);
	j->grp_no = mqbi_calloc(&b->alloc, sizeof(uint64_t) * b->nworkers);
	pthread_mutex_init(&j->lock, NULL);
	pthread_cond_init(&j->cond, NULL);
	pthread_cond_init(&j->wake, NULL);
	b->journal = j;
	if (!j->grp_no) {
		mqbi_journal_free(b);
		return MQB_ERR_NOMEM;
	}
	mqbi_store_options o = {
	        .path = path,
	        .sync = j->sync,
	        .on_corrupt = (mqbi_corrupt_mode)mqbi_cfg_int(cfg, MQBI_K_PERSIST_ON_CORRUPT),
	        .checkpoint_pages = (uint32_t)mqbi_cfg_int(cfg, MQBI_K_PERSIST_CHECKPOINT_PAGES),
	        .max_file_bytes = (uint64_t)mqbi_cfg_int(cfg, MQBI_K_PERSIST_MAX_FILE_SIZE),
	        .skip_check = !mqbi_cfg_int(cfg, MQBI_K_PERSIST_CHECK_ON_START),
	        .alloc = &b->alloc,
	        .log = store_log,
	        .log_user = b,
	};
	char why[512] = "";
	uint64_t t0 = mqbi_clock_ms();
	mqb_err err = mqbi_store_sqlite_open(&o, &j->st, why, sizeof why);
	if (err) {
		mqbi_log(b, MQB_LOG_ERROR, "store", NULL, "cannot open the store: %s", why);
		if (err == MQB_ERR_PARSE)
			mqbi_log(b, MQB_LOG_ERROR, "store", NULL,
			         "set persistence.on_corrupt = move_aside to keep the file aside "
			         "and start with an empty store");
		mqbi_journal_free(b);
		return err;
	}
	for (unsigned i = 0; i < b->nworkers; i++) {
		mqbi_worker *w = &b->workers[i];
		w->j.open_no = 1;
		w->j.notify.run = notify_run;
		w->j.notify.drop = NULL; /* nothing to free: it lives in the worker */
	}
	load_ctx lc = {.b = b, .now_wall = mqbi_wall_ms()};
	mqbi_store_loader l = {&lc,        load_session,  load_sub, load_inflight,
	                       load_awrel, load_retained, load_will};
	uint64_t max_sid = 0, max_mid = 0;
	err = j->st->ops->load(j->st, &l, &max_sid, &max_mid);
	mqbi_free(&b->alloc, lc.v);
	if (err) {
		mqbi_log(b, MQB_LOG_ERROR, "store", NULL, "cannot restore from %s: %s", path,
		         j->st->ops->errmsg(j->st));
		mqbi_journal_free(b);
		return err;
	}
	atomic_store(&j->next_sid, max_sid + 1);
	atomic_store(&j->next_mid, max_mid + 1);
	update_stats(j);
	if (pthread_create(&j->thread, NULL, storage_main, j) != 0) {
		mqbi_log(b, MQB_LOG_ERROR, "store", NULL, "cannot start the storage thread: %s",
		         strerror(errno));
		mqbi_journal_free(b);
		return MQB_ERR_IO;
	}
	j->thread_started = true;
	mqbi_log(b, MQB_LOG_NOTICE, "store", NULL,
	         "store %s (sync = %s): restored %llu sessions, %llu subscriptions, %llu "
	         "messages in flight, %llu queued, %llu retained, %llu wills in %llu ms%s",
	         path,
	         j->sync == MQBI_SYNC_ALWAYS  ? "always"
	         : j->sync == MQBI_SYNC_BATCH ? "batch"
	                                      : "off",
	         (unsigned long long)lc.sessions, (unsigned long long)lc.subs,
	         (unsigned long long)lc.inflight, (unsigned long long)lc.queued,
	         (unsigned long long)lc.retained, (unsigned long long)lc.wills,
	         (unsigned long long)(mqbi_clock_ms() - t0),
	         lc.expired ? " (expired ones dropped)" : "");
	return MQB_OK;
}

void mqbi_journal_stop(mqb_broker *b)
{
	mqbi_journal *j = journal_of(b);
	if (!j)
		return;
	pthread_mutex_lock(&j->lock);
	for (unsigned i = 0; i < b->nworkers; i++)
		mqbi_journal_flush_locked(&b->workers[i]);
	j->stopping = true;
	pthread_cond_broadcast(&j->cond);
	pthread_cond_broadcast(&j->wake);
	pthread_mutex_unlock(&j->lock);
	if (j->thread_started) {
		pthread_join(j->thread, NULL);
		j->thread_started = false;
	}
	/* No more records from here on: ending sessions at destroy keeps them. */
	j->stopped = true;
	if (j->st && j->st->ops->checkpoint(j->st) != MQB_OK)
		mqbi_log(b, MQB_LOG_WARNING, "store", NULL, "checkpoint at stop failed: %s",
		         j->st->ops->errmsg(j->st));
}

void mqbi_journal_free(mqb_broker *b)
{
	mqbi_journal *j = b->journal;
	if (!j)
		return;
	mqbi_journal_stop(b);
	j->stopped = true;
	if (j->st)
		j->st->ops->close(j->st);
	take_queue(j);
	for (jitem *it = j->pend_head, *next; it; it = next) {
		next = it->next;
		for (uint32_t i = 0; i < it->n; i++)
			mqbi_rec_release(&b->alloc, &it->recs[i]);
		mqbi_free(&b->alloc, it->recs);
		if (it->page)
			page_free(it->page);
		mqbi_free(&b->alloc, it);
	}
	mqbi_free(&b->alloc, j->grp);
	mqbi_free(&b->alloc, j->grp_no);
	pthread_mutex_destroy(&j->lock);
	pthread_cond_destroy(&j->cond);
	pthread_cond_destroy(&j->wake);
	mqbi_free(&b->alloc, j);
	b->journal = NULL;
}

/* ---- Policies and metrics ----------------------------------------------- */

bool mqbi_journal_refusing_queue(const mqb_broker *b)
{
	mqbi_journal *j = journal_of(b);
	return j && j->refuse;
}

void mqbi_journal_count_refused(mqb_broker *b)
{
	if (b->journal)
		atomic_fetch_add_explicit(&b->journal->refused, 1, memory_order_relaxed);
}

bool mqbi_journal_refusing(const mqb_broker *b)
{
	mqbi_journal *j = journal_of(b);
	return j && j->refuse && atomic_load_explicit(&j->over_budget, memory_order_relaxed);
}

uint32_t mqbi_journal_window(const mqb_broker *b)
{
	mqbi_journal *j = journal_of(b);
	return j ? j->window : UINT32_MAX;
}

void mqbi_journal_metrics_get(const mqb_broker *b, mqbi_journal_metrics *out)
{
	memset(out, 0, sizeof(*out));
	mqbi_journal *j = b->journal;
	if (!j)
		return;
	out->commits = MQBI_READ(j->commits);
	out->records = MQBI_READ(j->records);
	out->bytes = atomic_load(&j->bytes);
	out->dropped = MQBI_READ(j->dropped);
	out->refused = MQBI_READ(j->refused);
	out->errors = MQBI_READ(j->errors);
	out->backlog = atomic_load(&j->backlog);
}
