/*
 * Flow control towards QoS 1/2 publishers.
 *
 * A connected subscriber whose queue reaches mqtt.backpressure_queue_len
 * marks its session congested (an atomic flag, read by every worker while
 * routing). A client whose QoS 1/2 PUBLISH is routed to a congested session
 * is held: the broker stops reading from it, so its next packets wait in the
 * socket and TCP slows it down. It is read again once the session's queue is
 * back to half the threshold or the subscriber goes away. Holding is bounded
 * by mqtt.backpressure_max_hold, so that a subscriber that stopped reading, or
 * clients that publish to each other, cannot hold publishers forever: when a
 * hold runs out the session is marked stalled and holds nobody until its
 * queue is back to half; meanwhile the queue limits decide, and every drop is
 * counted.
 *
 * Held clients are checked before every sleep of their worker, and by a 1 ms
 * timer while any is held (the queue drains on another worker's time).
 */
#include "core/core.h"

#define HOLD_CHECK_MS 1

static void check_timer(mqbi_loop *l, mqbi_timer *t)
{
	mqbi_bp_check(mqbi_loop_data(l));
}

/* Released clients go in hold order, and one held again goes to the back:
 * a round robin, so no publisher waits behind the others every time. */
void mqbi_bp_check(mqbi_worker *w)
{
	if (!w->nheld)
		return;
	uint64_t now = mqbi_loop_now(w->loop);
	uint64_t max_hold = mqbi_lim(w->broker)->backpressure_max_hold;
	uint32_t n = w->nheld, kept = 0;
	/* Resuming a client runs its buffered packets, which may hold it again
	 * (appended after n, the array may move) or close others (their
	 * entries only lose their client): index w->held afresh each time. */
	for (uint32_t i = 0; i < n; i++) {
		mqbi_held h = w->held[i];
		if (!h.c)
			continue; /* forgotten */
		if (mqbi_session_congested(h.s)) {
			if (now - h.since < max_hold) {
				w->held[kept++] = h;
				continue;
			}
			/* Only the home worker changes the flow state otherwise: see
			 * the compare-and-swap in mqbi_bp_update(). */
			atomic_store_explicit(&h.s->flow, MQBI_FLOW_STALLED, memory_order_relaxed);
		}
		w->held[i].c = NULL;
		h.c->held = false;
		mqbi_session_unref(h.s);
		if (h.c->state != MQBI_CS_CLOSING)
			mqbi_client_resume(h.c);
	}
	uint32_t added = 0;
	for (uint32_t i = n; i < w->nheld; i++)
		if (w->held[i].c)
			w->held[kept + added++] = w->held[i];
	w->nheld = kept + added;
	if (w->nheld && !mqbi_timer_armed(&w->held_timer))
		mqbi_timer_start(w->loop, &w->held_timer, HOLD_CHECK_MS, check_timer);
	else if (!w->nheld)
		mqbi_timer_stop(w->loop, &w->held_timer);
}

void mqbi_bp_hold(mqbi_client *c, mqbi_session *s)
{
	mqbi_worker *w = c->w;
	if (w->nheld == w->held_cap) {
		uint32_t cap = w->held_cap ? w->held_cap * 2 : 16;
		mqbi_held *n = mqbi_realloc(&w->broker->alloc, w->held, sizeof(*n) * cap);
		if (!n) {
			mqbi_session_unref(s); /* not held: the queue limits decide */
			return;
		}
		w->held = n;
		w->held_cap = cap;
	}
	w->held[w->nheld++] = (mqbi_held){c, s, mqbi_loop_now(w->loop)};
	c->held = true;
	mqbi_client_pause(c);
	MQBI_COUNT(w->m.publishers_held, 1);
	if (!mqbi_timer_armed(&w->held_timer))
		mqbi_timer_start(w->loop, &w->held_timer, HOLD_CHECK_MS, check_timer);
}

void mqbi_bp_forget(mqbi_client *c)
{
	mqbi_worker *w = c->w;
	for (uint32_t i = 0; i < w->nheld; i++) {
		if (w->held[i].c == c) {
			/* Left in place (a check may be walking the array); dropped
			 * by the next check. */
			mqbi_session_unref(w->held[i].s);
			w->held[i].c = NULL;
			c->held = false;
			return;
		}
	}
}

void mqbi_bp_fini(mqbi_worker *w)
{
	while (w->nheld) {
		mqbi_held *h = &w->held[--w->nheld];
		if (h->c) {
			h->c->held = false;
			mqbi_session_unref(h->s);
		}
	}
	mqbi_free(&w->broker->alloc, w->held);
	w->held = NULL;
	w->held_cap = 0;
}

void mqbi_bp_update(mqbi_session *s)
{
	uint32_t high = mqbi_lim(s->home->broker)->backpressure_queue_len;
	bool active = s->client && !s->ended && high;
	uint8_t old = atomic_load_explicit(&s->flow, memory_order_relaxed), flow;
	do {
		if (!active || s->queue.count <= high / 2)
			flow = 0;
		else if (old & MQBI_FLOW_STALLED)
			flow = MQBI_FLOW_STALLED;
		else if (s->queue.count >= high || (old & MQBI_FLOW_CONGESTED))
			flow = MQBI_FLOW_CONGESTED;
		else
			flow = 0;
	} while (flow != old &&
	         !atomic_compare_exchange_weak_explicit(&s->flow, &old, flow, memory_order_relaxed,
	                                                memory_order_relaxed));
}
