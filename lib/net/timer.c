/*
 * Hashed timer wheel: MQBI_WHEEL_SLOTS slots of 1 ms, each an intrusive
 * doubly-linked list (NULL-terminated, new timers at the head). A timer lives
 * in slot deadline & MQBI_WHEEL_MASK; one due more than a revolution ahead is
 * visited and skipped once per revolution until its deadline comes.
 *
 * Deadlines are taken from the clock when the timer is started (not the
 * iteration's cached time, which may lag), and a timer fires only once the
 * iteration's time has reached its deadline: never early. Every armed timer is
 * due after last_tick, so expiry only has to visit the slots of the ticks that
 * passed since — all of them at most once after a long sleep.
 *
 * Timers fire in deadline order, except that timers due in the same
 * millisecond fire in no set order, and after a sleep of more than a
 * revolution the catch-up walk goes by slot, not by deadline.
 *
 * Callbacks may start or stop any timer, also the one the expiry walk would
 * visit next: unlinking that one moves the walk's cursor along.
 *
 * The wait before the next iteration needs the earliest deadline. It is kept
 * as a lower bound: start lowers it, stop leaves it (a bound that is too early
 * costs one spurious wake-up), and once it has passed, the next revolution of
 * slots is scanned for the first timer due exactly at its slot's tick.
 */
#include "loop_internal.h"
#include "util/alloc.h"

mqb_err mqbi_wheel_init(mqbi_loop *l)
{
	l->wheel = mqbi_calloc(&l->alloc, sizeof(*l->wheel) * MQBI_WHEEL_SLOTS);
	if (!l->wheel)
		return MQB_ERR_NOMEM;
	l->last_tick = l->now;
	l->timer_bound = UINT64_MAX;
	return MQB_OK;
}

/* Armed timers are forgotten: they belong to their owners. */
void mqbi_wheel_fini(mqbi_loop *l)
{
	mqbi_free(&l->alloc, l->wheel);
	l->wheel = NULL;
}

static void wheel_link(mqbi_loop *l, mqbi_timer *t)
{
	mqbi_timer **slot = &l->wheel[t->deadline & MQBI_WHEEL_MASK];
	t->prev = NULL;
	t->next = *slot;
	if (*slot)
		(*slot)->prev = t;
	*slot = t;
}

static void wheel_unlink(mqbi_loop *l, mqbi_timer *t)
{
	if (l->walk_next == t)
		l->walk_next = t->next;
	if (t->prev)
		t->prev->next = t->next;
	else
		l->wheel[t->deadline & MQBI_WHEEL_MASK] = t->next;
	if (t->next)
		t->next->prev = t->prev;
	t->next = t->prev = NULL;
}

void mqbi_timer_start(mqbi_loop *l, mqbi_timer *t, uint64_t delay_ms, mqbi_timer_fn fn)
{
	if (t->fn)
		wheel_unlink(l, t);
	else
		l->ntimers++;
	uint64_t now = mqbi_clock_ms();
	uint64_t deadline = delay_ms > UINT64_MAX - now ? UINT64_MAX : now + delay_ms;
	if (deadline <= l->last_tick)
		deadline = l->last_tick + 1; /* that tick's slot was already walked */
	t->deadline = deadline;
	t->fn = fn;
	wheel_link(l, t);
	if (deadline < l->timer_bound)
		l->timer_bound = deadline;
}

void mqbi_timer_stop(mqbi_loop *l, mqbi_timer *t)
{
	if (!t->fn)
		return;
	wheel_unlink(l, t);
	t->fn = NULL;
	if (--l->ntimers == 0)
		l->timer_bound = UINT64_MAX;
	/* Otherwise the bound stays: too early only costs a spurious wake. */
}

void mqbi_wheel_expire(mqbi_loop *l, uint64_t now)
{
	if (now <= l->last_tick)
		return;
	uint64_t from = l->last_tick + 1;
	if (now - from >= MQBI_WHEEL_SLOTS)
		from = now - MQBI_WHEEL_SLOTS + 1; /* long sleep: every slot once */
	/* Set first, so timers started by callbacks land after now and cannot
	 * fire in this walk. */
	l->last_tick = now;
	for (uint64_t tick = from; tick <= now && l->ntimers; tick++) {
		mqbi_timer *t = l->wheel[tick & MQBI_WHEEL_MASK];
		while (t) {
			l->walk_next = t->next;
			if (t->deadline <= now) {
				mqbi_timer_fn fn = t->fn;
				wheel_unlink(l, t);
				t->fn = NULL;
				l->ntimers--;
				fn(l, t);
			}
			t = l->walk_next;
		}
	}
	l->walk_next = NULL;
	if (l->ntimers == 0)
		l->timer_bound = UINT64_MAX;
}

uint64_t mqbi_wheel_next(mqbi_loop *l)
{
	if (l->ntimers == 0)
		return UINT64_MAX;
	if (l->timer_bound > l->last_tick)
		return l->timer_bound;
	/* The bound has passed: find the earliest deadline within the next
	 * revolution. A timer due at tick T sits in T's slot, so the first tick
	 * whose slot holds a timer due exactly then is the earliest. */
	uint64_t end = l->last_tick + MQBI_WHEEL_SLOTS;
	for (uint64_t tick = l->last_tick + 1; tick <= end; tick++) {
		for (const mqbi_timer *t = l->wheel[tick & MQBI_WHEEL_MASK]; t; t = t->next) {
			if (t->deadline == tick)
				return l->timer_bound = tick;
		}
	}
	return l->timer_bound = end + 1;
}
