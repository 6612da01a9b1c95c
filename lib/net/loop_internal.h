/*
 * Private to lib/net/loop*.c, timer.c and inbox.c (and the loop's unit test):
 * the loop structure and the interface between the loop core and its
 * readiness backends (loop_epoll.c, loop_poll.c).
 */
#ifndef MQBI_LOOP_INTERNAL_H
#define MQBI_LOOP_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "net/loop.h"

#if defined(__linux__)
#define MQBI_HAVE_EPOLL   1
#define MQBI_HAVE_EVENTFD 1
#endif

/* Wheel of 4096 one-millisecond slots: one revolution is ~4.1 s; a timer
 * further out stays in its slot and is skipped until its deadline. */
#define MQBI_WHEEL_SLOTS 4096u
#define MQBI_WHEEL_MASK  (MQBI_WHEEL_SLOTS - 1)

/* One per fd. gen changes whenever the fd stops or starts being watched, so
 * an event gathered for an earlier watcher of the same fd number is dropped. */
typedef struct mqbi_watcher {
	mqbi_io_fn fn; /* NULL when the fd is not watched */
	void *user;
	unsigned events;
	uint32_t gen;
} mqbi_watcher;

/* Events handled per wait at most. */
#define MQBI_MAX_FIRED 256

/* An event reported by the backend, stamped with the watcher's gen. */
typedef struct mqbi_fired {
	int fd;
	unsigned events;
	uint32_t gen;
} mqbi_fired;

/* A readiness backend. It registers the wake fd itself at init and reports it
 * like any other fd; all of it runs on the loop thread. */
typedef struct mqbi_backend {
	const char *name;
	mqb_err (*init)(mqbi_loop *l);
	void (*fini)(mqbi_loop *l);
	/* The watcher table is growing to setsize entries (NULL: nothing to do). */
	mqb_err (*resize)(mqbi_loop *l, int setsize);
	/* Adds fd, or changes its events when `watched`. */
	mqb_err (*add)(mqbi_loop *l, int fd, bool watched, unsigned events);
	void (*del)(mqbi_loop *l, int fd);
	/* Waits, then fills l->fired; returns how many (0 on EINTR). */
	int (*poll)(mqbi_loop *l, int timeout_ms);
	int (*fd)(const mqbi_loop *l);
} mqbi_backend;

#if MQBI_HAVE_EPOLL
extern const mqbi_backend mqbi_backend_epoll;
#endif
extern const mqbi_backend mqbi_backend_poll;

struct mqbi_loop {
	mqb_allocator alloc;
	const mqbi_backend *be;
	void *be_state;

	/* Touched by other threads (post, stop): kept off the cache lines of
	 * the loop thread's own fields, whatever the allocation's alignment. */
	char pad_before[64];
	int wake_rd, wake_wr; /* eventfd (both the same) or a self-pipe */
	atomic_bool stopped;
	_Atomic(mqbi_inbox_item *) inbox; /* inbox.c: a Treiber stack, newest first */
	char pad_after[64];

	mqbi_watcher *watchers; /* indexed by fd, setsize entries */
	int setsize;
	/* One wait's events. A fixed batch, not one slot per fd: both backends
	 * are level-triggered, so what does not fit is reported by the next
	 * wait, and memory does not grow with the connection count. */
	mqbi_fired fired[MQBI_MAX_FIRED];

	uint64_t now;

	/* Timer wheel (timer.c). */
	mqbi_timer **wheel;    /* slot = deadline & MQBI_WHEEL_MASK */
	uint64_t last_tick;    /* every timer due at or before it has fired */
	uint64_t timer_bound;  /* no armed timer is due before this */
	size_t ntimers;        /* armed timers */
	mqbi_timer *walk_next; /* expiry cursor, moved on when its timer is unlinked */

	void (*before_sleep)(mqbi_loop *l, void *user);
	void *before_sleep_user;
	void *data;
};

/* timer.c */
mqb_err mqbi_wheel_init(mqbi_loop *l);
void mqbi_wheel_fini(mqbi_loop *l);
/* Fires every timer due at or before now. */
void mqbi_wheel_expire(mqbi_loop *l, uint64_t now);
/* Earliest time a timer may be due (UINT64_MAX if none is armed). */
uint64_t mqbi_wheel_next(mqbi_loop *l);

/* inbox.c */
/* Runs the items posted before the call, in post order. */
void mqbi_inbox_drain(mqbi_loop *l);
/* Hands every queued item to its drop function. */
void mqbi_inbox_drop_all(mqbi_loop *l);

/* loop.c: wakes the loop from any thread or a signal handler. */
void mqbi_loop_wake(mqbi_loop *l);

#endif
