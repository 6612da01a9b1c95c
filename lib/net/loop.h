/*
 * One event loop: readiness events on file descriptors (epoll, or poll where
 * epoll is missing), a timer wheel, and an inbox other threads post work to.
 * Everything but mqbi_loop_post() and mqbi_loop_stop() is called on the
 * loop's own thread.
 */
#ifndef MQBI_LOOP_H
#define MQBI_LOOP_H

#include <stdbool.h>
#include <stdint.h>

#include "mqttbroker.h"

enum { MQBI_EV_READ = 1, MQBI_EV_WRITE = 2, MQBI_EV_ERROR = 4 /* HUP or error */ };

typedef struct mqbi_loop mqbi_loop;

/* Called with the events that fired (MQBI_EV_*). ERROR always comes together
 * with the READ/WRITE bits the fd is watched for, so a handler that only reads
 * still sees the EOF or error from read(). Watching is level-triggered. */
typedef void (*mqbi_io_fn)(mqbi_loop *l, int fd, void *user, unsigned events);

/* Creates a loop on the best backend (epoll, else poll). `a` may be NULL for
 * the C library's allocator; it is copied. Returns MQB_ERR_NOMEM or
 * MQB_ERR_IO (no descriptors left) on failure. */
mqb_err mqbi_loop_create(const mqb_allocator *a, mqbi_loop **out);
/* Same, on the poll(2) backend (for tests and hosts that need it). */
mqb_err mqbi_loop_create_poll(const mqb_allocator *a, mqbi_loop **out);
/* "epoll" or "poll". */
const char *mqbi_loop_backend(const mqbi_loop *l);
/* Frees the loop. Items still in the inbox are handed to their `drop` function
 * (see mqbi_inbox_item); armed timers are simply forgotten. */
void mqbi_loop_destroy(mqbi_loop *l);

/* Starts watching fd for `events` (READ and/or WRITE, or 0 to pause), or
 * changes the events, fn and user of a watched fd. One watcher per fd.
 * Returns MQB_ERR_INVAL (bad fd, NULL fn), MQB_ERR_NOMEM or MQB_ERR_IO. */
mqb_err mqbi_loop_watch(mqbi_loop *l, int fd, unsigned events, mqbi_io_fn fn, void *user);
/* Stops watching fd (before it is closed). Safe to call from an I/O callback,
 * also for another fd whose event is pending in the same iteration. */
void mqbi_loop_unwatch(mqbi_loop *l, int fd);

/* One iteration: wait up to timeout_ms (-1 = until something happens; the
 * wait is cut short by the next timer), dispatch I/O, expired timers, inbox
 * items, then the before-sleep hook. Returns the number of I/O events
 * dispatched, or -1 if the loop was stopped (a loop already stopped does not
 * wait, but still dispatches what is ready). */
int mqbi_loop_run_once(mqbi_loop *l, int timeout_ms);
/* Runs iterations until mqbi_loop_stop(). */
void mqbi_loop_run(mqbi_loop *l);
/* Makes run() return after the current iteration. Thread-safe and
 * async-signal-safe. mqbi_loop_stopped() tells whether it was called. */
void mqbi_loop_stop(mqbi_loop *l);
bool mqbi_loop_stopped(const mqbi_loop *l);
/* Clears the stop flag so the loop can run again. */
void mqbi_loop_restart(mqbi_loop *l);

/* A descriptor that becomes readable when the loop has work (for a host's own
 * poll set in step mode). With epoll it is the epoll fd (readable when a
 * watched fd is ready, an item is posted or stop is called). With the poll
 * backend it only covers posts and stop: the host must also call
 * mqbi_loop_run_once(l, 0) regularly for fds. Timers never make it readable:
 * wait at most mqbi_loop_timeout() before stepping. */
int mqbi_loop_fd(const mqbi_loop *l);
/* Milliseconds until the next timer may be due (0 if one is), or -1 if no
 * timer is armed. */
int mqbi_loop_timeout(mqbi_loop *l);

/* Monotonic milliseconds, cached at the start of each iteration. */
uint64_t mqbi_loop_now(const mqbi_loop *l);
/* Monotonic milliseconds, read from the clock now. */
uint64_t mqbi_clock_ms(void);
/* Wall-clock milliseconds since 1970 (for what must outlive the process:
 * stored deadlines, event timestamps). */
int64_t mqbi_wall_ms(void);

/* Called once per iteration after all dispatching, before the loop waits:
 * where batched output is flushed. */
void mqbi_loop_set_before_sleep(mqbi_loop *l, void (*fn)(mqbi_loop *l, void *user), void *user);

/* Opaque pointer for the loop's owner (the broker's per-loop state). */
void mqbi_loop_set_data(mqbi_loop *l, void *data);
void *mqbi_loop_data(const mqbi_loop *l);

/* ---- Timers: a hashed timer wheel (1 ms ticks, O(1) start/stop). The timer
 * struct is embedded in its owner; it must not be freed while armed. */
typedef struct mqbi_timer mqbi_timer;
typedef void (*mqbi_timer_fn)(mqbi_loop *l, mqbi_timer *t);
struct mqbi_timer {
	mqbi_timer *next, *prev; /* wheel slot links; NULL when idle */
	uint64_t deadline;       /* loop time (ms) when it fires */
	mqbi_timer_fn fn;        /* NULL when idle: being set is being armed */
};

/* Arms (or re-arms) t to fire once after delay_ms. */
void mqbi_timer_start(mqbi_loop *l, mqbi_timer *t, uint64_t delay_ms, mqbi_timer_fn fn);
/* Disarms t; no-op if idle. */
void mqbi_timer_stop(mqbi_loop *l, mqbi_timer *t);
static inline bool mqbi_timer_armed(const mqbi_timer *t)
{
	return t->fn != NULL;
}

/* ---- Inbox: a multi-producer queue drained by the loop, woken by an eventfd.
 * The item is embedded in the poster's allocation; `run` executes on the loop
 * thread in post order and owns the item from then on; `drop` (may be NULL)
 * is called instead of run for items still queued when the loop is destroyed. */
typedef struct mqbi_inbox_item mqbi_inbox_item;
struct mqbi_inbox_item {
	mqbi_inbox_item *next;
	void (*run)(mqbi_loop *l, mqbi_inbox_item *it);
	void (*drop)(mqbi_inbox_item *it);
};

/* Thread-safe; wakes the loop only when the inbox was empty. */
void mqbi_loop_post(mqbi_loop *l, mqbi_inbox_item *it);

#endif
