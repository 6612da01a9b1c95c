/*
 * Event loop: I/O readiness, unwatch and fd reuse during dispatch, the timer
 * wheel, the inbox, stop and the before-sleep hook. Every loop-level test runs
 * on both backends (the loop index: 0 = default/epoll, 1 = poll) and ends by
 * checking that destroy freed all memory and closed every descriptor.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/loop.h"
#include "net/loop_internal.h"

/* ---- Counting allocator: every test checks nothing is left live. */

typedef struct counting {
	atomic_long live;
	atomic_long fail_after; /* allocations left before failing; -1 = never */
} counting;

static counting actx;

static bool may_alloc(counting *c)
{
	long n = atomic_load(&c->fail_after);
	if (n < 0)
		return true;
	if (n == 0)
		return false;
	atomic_fetch_sub(&c->fail_after, 1);
	return true;
}

static void *c_malloc(void *ctx, size_t n)
{
	counting *c = ctx;
	if (!may_alloc(c))
		return NULL;
	void *p = malloc(n ? n : 1);
	if (p)
		atomic_fetch_add(&c->live, 1);
	return p;
}

static void *c_realloc(void *ctx, void *p, size_t n)
{
	counting *c = ctx;
	if (!may_alloc(c))
		return NULL;
	void *q = realloc(p, n ? n : 1);
	if (q && !p)
		atomic_fetch_add(&c->live, 1);
	return q;
}

static void c_free(void *ctx, void *p)
{
	counting *c = ctx;
	if (p)
		atomic_fetch_sub(&c->live, 1);
	free(p);
}

static const mqb_allocator test_alloc = {c_malloc, c_realloc, c_free, &actx};

static int count_fds(void)
{
	int n = 0;
	for (int fd = 0; fd < 1100; fd++) {
		if (fcntl(fd, F_GETFD) >= 0)
			n++;
	}
	return n;
}

static int fds_before;

static mqbi_loop *open_loop(int backend)
{
	fds_before = count_fds();
	atomic_store(&actx.live, 0);
	atomic_store(&actx.fail_after, -1);
	mqbi_loop *l = NULL;
	mqb_err err = backend ? mqbi_loop_create_poll(&test_alloc, &l)
	                      : mqbi_loop_create(&test_alloc, &l);
	ck_assert_int_eq(err, MQB_OK);
	ck_assert_ptr_nonnull(l);
	ck_assert_str_eq(mqbi_loop_backend(l), backend ? "poll" : "epoll");
	return l;
}

static void close_loop(mqbi_loop *l)
{
	mqbi_loop_destroy(l);
	ck_assert_int_eq(atomic_load(&actx.live), 0);
	ck_assert_int_eq(count_fds(), fds_before);
}

/* Runs iterations until cond holds or max_ms pass. */
#define RUN_UNTIL(l, cond, max_ms)                                                                 \
	do {                                                                                       \
		uint64_t until_ = mqbi_clock_ms() + (max_ms);                                      \
		while (!(cond) && mqbi_clock_ms() < until_)                                        \
			mqbi_loop_run_once((l), 50);                                               \
	} while (0)

static void make_pipe(int p[2])
{
	ck_assert_int_eq(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
}

static void put_byte(int fd)
{
	ck_assert_int_eq(write(fd, "x", 1), 1);
}

/* ---- I/O */

typedef struct io_rec {
	int calls;
	int fd;
	unsigned events;
	void *user;
	int order; /* iteration-local call position, see before_sleep test */
} io_rec;

static void on_io(mqbi_loop *l, int fd, void *user, unsigned events)
{
	io_rec *r = user;
	r->calls++;
	r->fd = fd;
	r->events = events;
	r->user = user;
}

START_TEST(test_read_ready)
{
	mqbi_loop *l = open_loop(_i);
	int p[2];
	make_pipe(p);
	io_rec r = {0};
	ck_assert_int_eq(mqbi_loop_watch(l, p[0], MQBI_EV_READ, on_io, &r), MQB_OK);
	ck_assert_int_eq(mqbi_loop_run_once(l, 0), 0);
	ck_assert_int_eq(r.calls, 0);
	put_byte(p[1]);
	ck_assert_int_eq(mqbi_loop_run_once(l, 1000), 1);
	ck_assert_int_eq(r.calls, 1);
	ck_assert_int_eq(r.fd, p[0]);
	ck_assert_uint_eq(r.events, MQBI_EV_READ);
	ck_assert_ptr_eq(r.user, &r);
	/* Level-triggered: unread data is reported again. */
	ck_assert_int_eq(mqbi_loop_run_once(l, 1000), 1);
	ck_assert_int_eq(r.calls, 2);
	mqbi_loop_unwatch(l, p[0]);
	close(p[0]);
	close(p[1]);
	close_loop(l);
}
END_TEST

START_TEST(test_write_ready)
{
	mqbi_loop *l = open_loop(_i);
	int p[2];
	make_pipe(p);
	io_rec r = {0};
	ck_assert_int_eq(mqbi_loop_watch(l, p[1], MQBI_EV_WRITE, on_io, &r), MQB_OK);
	ck_assert_int_eq(mqbi_loop_run_once(l, 1000), 1);
	ck_assert_int_eq(r.fd, p[1]);
	ck_assert_uint_eq(r.events, MQBI_EV_WRITE);
	/* Dropping WRITE interest silences it. */
	ck_assert_int_eq(mqbi_loop_watch(l, p[1], 0, on_io, &r), MQB_OK);
	ck_assert_int_eq(mqbi_loop_run_once(l, 0), 0);
	ck_assert_int_eq(r.calls, 1);
	mqbi_loop_unwatch(l, p[1]);
	close(p[0]);
	close(p[1]);
	close_loop(l);
}
END_TEST

START_TEST(test_read_write_both)
{
	mqbi_loop *l = open_loop(_i);
	int s[2];
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, s), 0);
	io_rec r = {0};
	ck_assert_int_eq(mqbi_loop_watch(l, s[0], MQBI_EV_READ | MQBI_EV_WRITE, on_io, &r), MQB_OK);
	put_byte(s[1]);
	ck_assert_int_eq(mqbi_loop_run_once(l, 1000), 1);
	ck_assert_uint_eq(r.events, MQBI_EV_READ | MQBI_EV_WRITE);
	ck_assert_int_eq(mqbi_loop_watch(l, s[0], MQBI_EV_READ, on_io, &r), MQB_OK);
	ck_assert_int_eq(mqbi_loop_run_once(l, 1000), 1);
	ck_assert_uint_eq(r.events, MQBI_EV_READ);
	mqbi_loop_unwatch(l, s[0]);
	close(s[0]);
	close(s[1]);
	close_loop(l);
}
END_TEST

START_TEST(test_timeout_without_events)
{
	mqbi_loop *l = open_loop(_i);
	uint64_t t0 = mqbi_clock_ms();
	ck_assert_int_eq(mqbi_loop_run_once(l, 50), 0);
	ck_assert_uint_ge(mqbi_clock_ms() - t0, 50);
	close_loop(l);
}
END_TEST

START_TEST(test_hangup)
{
	mqbi_loop *l = open_loop(_i);
	int p[2];
	make_pipe(p);
	io_rec r = {0};
	ck_assert_int_eq(mqbi_loop_watch(l, p[0], MQBI_EV_READ, on_io, &r), MQB_OK);
	close(p[1]);
	ck_assert_int_eq(mqbi_loop_run_once(l, 1000), 1);
	/* The watched READ bit comes along, so read() sees the EOF. */
	ck_assert_uint_ne(r.events & MQBI_EV_READ, 0);
	char c;
	ck_assert_int_eq(read(p[0], &c, 1), 0);
	mqbi_loop_unwatch(l, p[0]);
	close(p[0]);
	close_loop(l);
}
END_TEST

START_TEST(test_watch_invalid)
{
	mqbi_loop *l = open_loop(_i);
	io_rec r = {0};
	ck_assert_int_eq(mqbi_loop_watch(l, -1, MQBI_EV_READ, on_io, &r), MQB_ERR_INVAL);
	ck_assert_int_eq(mqbi_loop_watch(l, 0, MQBI_EV_READ, NULL, &r), MQB_ERR_INVAL);
	ck_assert_int_eq(mqbi_loop_watch(l, mqbi_loop_fd(l), MQBI_EV_READ, on_io, &r),
	                 MQB_ERR_INVAL);
	mqbi_loop_unwatch(l, -1);   /* no-ops */
	mqbi_loop_unwatch(l, 5000); /* beyond the table */
	close_loop(l);
}
END_TEST

START_TEST(test_high_fd_grows_table)
{
	mqbi_loop *l = open_loop(_i);
	int p[2];
	make_pipe(p);
	int hi = 1000;
	ck_assert_int_eq(dup2(p[0], hi), hi);
	io_rec r = {0};
	ck_assert_int_eq(mqbi_loop_watch(l, hi, MQBI_EV_READ, on_io, &r), MQB_OK);
	put_byte(p[1]);
	ck_assert_int_eq(mqbi_loop_run_once(l, 1000), 1);
	ck_assert_int_eq(r.fd, hi);
	mqbi_loop_unwatch(l, hi);
	close(hi);
	close(p[0]);
	close(p[1]);
	close_loop(l);
}
END_TEST

/* More ready fds than one wait reports: the rest come in the next waits, and
 * on poll the next report starts where the last one stopped (nobody starves
 * behind fds that stay ready). */
#define MANY_READY (MQBI_MAX_FIRED + 44)

static void on_io_drain(mqbi_loop *l, int fd, void *user, unsigned events)
{
	(void)l;
	(void)events;
	char b;
	ck_assert_int_eq(read(fd, &b, 1), 1);
	((io_rec *)user)->calls++;
}

START_TEST(test_more_ready_than_batch)
{
	mqbi_loop *l = open_loop(_i);
	static int p[MANY_READY][2];
	static io_rec r[MANY_READY];
	memset(r, 0, sizeof r);
	for (int i = 0; i < MANY_READY; i++) {
		make_pipe(p[i]);
		ck_assert_int_eq(mqbi_loop_watch(l, p[i][0], MQBI_EV_READ, on_io_drain, &r[i]),
		                 MQB_OK);
		put_byte(p[i][1]);
	}
	ck_assert_int_eq(mqbi_loop_run_once(l, 1000), MQBI_MAX_FIRED);
	ck_assert_int_eq(mqbi_loop_run_once(l, 1000), MANY_READY - MQBI_MAX_FIRED);
	ck_assert_int_eq(mqbi_loop_run_once(l, 0), 0);
	for (int i = 0; i < MANY_READY; i++) {
		ck_assert_int_eq(r[i].calls, 1);
		mqbi_loop_unwatch(l, p[i][0]);
		close(p[i][0]);
		close(p[i][1]);
	}
	close_loop(l);
}
END_TEST

START_TEST(test_watch_nomem)
{
	mqbi_loop *l = open_loop(_i);
	int p[2];
	make_pipe(p);
	int hi = 1000;
	ck_assert_int_eq(dup2(p[0], hi), hi);
	io_rec r = {0};
	atomic_store(&actx.fail_after, 0);
	ck_assert_int_eq(mqbi_loop_watch(l, hi, MQBI_EV_READ, on_io, &r), MQB_ERR_NOMEM);
	if (_i == 1) {
		/* poll grows its own tables too: fail halfway through */
		atomic_store(&actx.fail_after, 1);
		ck_assert_int_eq(mqbi_loop_watch(l, hi, MQBI_EV_READ, on_io, &r), MQB_ERR_NOMEM);
	}
	atomic_store(&actx.fail_after, -1);
	ck_assert_int_eq(mqbi_loop_watch(l, hi, MQBI_EV_READ, on_io, &r), MQB_OK);
	put_byte(p[1]);
	ck_assert_int_eq(mqbi_loop_run_once(l, 1000), 1);
	mqbi_loop_unwatch(l, hi);
	close(hi);
	close(p[0]);
	close(p[1]);
	close_loop(l);
}
END_TEST

START_TEST(test_create_nomem)
{
	int before = count_fds();
	for (long n = 0;; n++) {
		atomic_store(&actx.live, 0);
		atomic_store(&actx.fail_after, n);
		mqbi_loop *l = (mqbi_loop *)1;
		mqb_err err = _i ? mqbi_loop_create_poll(&test_alloc, &l)
		                 : mqbi_loop_create(&test_alloc, &l);
		if (err == MQB_OK) {
			ck_assert_int_gt(n, 0);
			mqbi_loop_destroy(l);
			ck_assert_int_eq(atomic_load(&actx.live), 0);
			break;
		}
		ck_assert_int_eq(err, MQB_ERR_NOMEM);
		ck_assert_ptr_null(l);
		ck_assert_int_eq(atomic_load(&actx.live), 0);
		ck_assert_int_eq(count_fds(), before);
	}
	ck_assert_int_eq(count_fds(), before);
	/* NULL allocator means the C library's. */
	mqbi_loop *l = NULL;
	ck_assert_int_eq(mqbi_loop_create(NULL, &l), MQB_OK);
	mqbi_loop_destroy(l);
	mqbi_loop_destroy(NULL);
}
END_TEST

/* Two readable pipes; whichever handler runs first acts on the other. */
typedef struct pair {
	mqbi_loop *l;
	int rd[2], wr[2];
	int calls;
	int reuse;  /* also replace the other fd by a fresh, empty pipe */
	int self;   /* unwatch the fd being dispatched instead */
	int new_wr; /* write end of the replacement pipe */
	int new_calls;
} pair;

static void on_new(mqbi_loop *l, int fd, void *user, unsigned events)
{
	((pair *)user)->new_calls++;
}

static void on_pair(mqbi_loop *l, int fd, void *user, unsigned events)
{
	pair *x = user;
	if (x->calls++ > 0)
		return;
	if (x->self) {
		mqbi_loop_unwatch(l, fd);
		return;
	}
	int other = fd == x->rd[0] ? x->rd[1] : x->rd[0];
	mqbi_loop_unwatch(l, other);
	if (!x->reuse)
		return;
	/* Close it and put a new, empty pipe under the same number, as an
	 * accept() reusing the number would. */
	close(other);
	int p[2];
	make_pipe(p);
	if (p[0] != other) {
		ck_assert_int_eq(dup3(p[0], other, O_CLOEXEC), other);
		close(p[0]);
	}
	x->new_wr = p[1];
	ck_assert_int_eq(mqbi_loop_watch(l, other, MQBI_EV_READ, on_new, x), MQB_OK);
}

static void pair_open(mqbi_loop *l, pair *x)
{
	memset(x, 0, sizeof(*x));
	x->l = l;
	x->new_wr = -1;
	for (int i = 0; i < 2; i++) {
		int p[2];
		make_pipe(p);
		x->rd[i] = p[0];
		x->wr[i] = p[1];
		ck_assert_int_eq(mqbi_loop_watch(l, p[0], MQBI_EV_READ, on_pair, x), MQB_OK);
		put_byte(p[1]);
	}
}

static void pair_close(mqbi_loop *l, pair *x)
{
	for (int i = 0; i < 2; i++) {
		mqbi_loop_unwatch(l, x->rd[i]);
		close(x->rd[i]);
		close(x->wr[i]);
	}
	if (x->new_wr >= 0)
		close(x->new_wr);
}

START_TEST(test_unwatch_self)
{
	mqbi_loop *l = open_loop(_i);
	pair x;
	pair_open(l, &x);
	x.self = 1;
	ck_assert_int_eq(mqbi_loop_run_once(l, 1000), 2);
	ck_assert_int_eq(x.calls, 2);
	/* One unwatched itself while still readable: only the other remains. */
	ck_assert_int_eq(mqbi_loop_run_once(l, 1000), 1);
	ck_assert_int_eq(x.calls, 3);
	pair_close(l, &x);
	close_loop(l);
}
END_TEST

START_TEST(test_unwatch_other_pending)
{
	mqbi_loop *l = open_loop(_i);
	pair x;
	pair_open(l, &x);
	ck_assert_int_eq(mqbi_loop_run_once(l, 1000), 1);
	ck_assert_int_eq(x.calls, 1);
	/* The survivor still fires, the unwatched one never. */
	ck_assert_int_eq(mqbi_loop_run_once(l, 1000), 1);
	ck_assert_int_eq(x.calls, 2);
	pair_close(l, &x);
	close_loop(l);
}
END_TEST

START_TEST(test_fd_reuse_same_iteration)
{
	mqbi_loop *l = open_loop(_i);
	pair x;
	pair_open(l, &x);
	x.reuse = 1;
	ck_assert_int_eq(mqbi_loop_run_once(l, 1000), 1);
	ck_assert_int_eq(x.calls, 1);
	/* The old fd's pending event must not reach the new watcher. */
	ck_assert_int_eq(x.new_calls, 0);
	ck_assert_int_ge(x.new_wr, 0);
	put_byte(x.new_wr);
	RUN_UNTIL(l, x.new_calls > 0, 2000);
	ck_assert_int_eq(x.new_calls, 1);
	pair_close(l, &x);
	close_loop(l);
}
END_TEST

START_TEST(test_step_fd)
{
	mqbi_loop *l = open_loop(_i);
	struct pollfd pfd = {.fd = mqbi_loop_fd(l), .events = POLLIN};
	ck_assert_int_ge(pfd.fd, 0);
	ck_assert_int_eq(poll(&pfd, 1, 0), 0);
	int p[2];
	make_pipe(p);
	io_rec r = {0};
	ck_assert_int_eq(mqbi_loop_watch(l, p[0], MQBI_EV_READ, on_io, &r), MQB_OK);
	put_byte(p[1]);
	if (_i == 0) /* only the epoll fd covers watched fds */
		ck_assert_int_eq(poll(&pfd, 1, 1000), 1);
	ck_assert_int_eq(mqbi_loop_run_once(l, 0), 1);
	char c;
	ck_assert_int_eq(read(p[0], &c, 1), 1);
	ck_assert_int_eq(mqbi_loop_run_once(l, 0), 0);
	ck_assert_int_eq(poll(&pfd, 1, 0), 0);
	mqbi_loop_stop(l);
	ck_assert_int_eq(poll(&pfd, 1, 1000), 1);
	ck_assert_int_eq(mqbi_loop_run_once(l, 0), -1);
	mqbi_loop_restart(l);
	ck_assert_int_eq(poll(&pfd, 1, 0), 0);
	mqbi_loop_unwatch(l, p[0]);
	close(p[0]);
	close(p[1]);
	close_loop(l);
}
END_TEST

/* ---- Timers */

typedef struct ttimer {
	mqbi_timer t;
	uint64_t started; /* clock when started */
	uint64_t delay;
	uint64_t fired_at;
	int fires;
	int early; /* fired before the clock or the loop's time reached the deadline */
	int seq;
	int rearm;             /* re-arm itself this many more times */
	struct ttimer *victim; /* stop (and free, if heap) this one on firing */
	int free_victim;
} ttimer;

static int fire_seq;
static ttimer *killers[64]; /* timers that stopped and freed a peer */
static int nkillers;

static void tt_start(mqbi_loop *l, ttimer *x, uint64_t delay, mqbi_timer_fn fn);

static void tt_fire(mqbi_loop *l, mqbi_timer *t)
{
	ttimer *x = (ttimer *)t;
	x->fired_at = mqbi_clock_ms();
	if (x->fired_at < x->t.deadline || x->fired_at < x->started + x->delay ||
	    mqbi_loop_now(l) < x->t.deadline)
		x->early++;
	x->fires++;
	x->seq = fire_seq++;
	ck_assert(!mqbi_timer_armed(t));
	if (x->victim) {
		mqbi_timer_stop(l, &x->victim->t);
		if (x->free_victim) {
			free(x->victim);
			killers[nkillers++] = x;
		}
		x->victim = NULL;
	}
	if (x->rearm > 0) {
		x->rearm--;
		tt_start(l, x, x->delay, tt_fire);
	}
}

static void tt_start(mqbi_loop *l, ttimer *x, uint64_t delay, mqbi_timer_fn fn)
{
	x->started = mqbi_clock_ms();
	x->delay = delay;
	mqbi_timer_start(l, &x->t, delay, fn);
	ck_assert(mqbi_timer_armed(&x->t));
	ck_assert_uint_ge(x->t.deadline, x->started + delay);
}

START_TEST(test_timer_order)
{
	mqbi_loop *l = open_loop(_i);
	ttimer a = {0}, b = {0}, c = {0};
	fire_seq = 0;
	tt_start(l, &a, 60, tt_fire);
	tt_start(l, &b, 20, tt_fire);
	tt_start(l, &c, 40, tt_fire);
	RUN_UNTIL(l, a.fires && b.fires && c.fires, 5000);
	ck_assert_int_eq(a.fires + b.fires + c.fires, 3);
	ck_assert_int_eq(b.seq, 0);
	ck_assert_int_eq(c.seq, 1);
	ck_assert_int_eq(a.seq, 2);
	ck_assert_int_eq(a.early + b.early + c.early, 0);
	ck_assert_int_eq(mqbi_loop_timeout(l), -1);
	close_loop(l);
}
END_TEST

START_TEST(test_timer_never_early)
{
	mqbi_loop *l = open_loop(_i);
	enum { N = 40 };
	ttimer x[N];
	memset(x, 0, sizeof(x));
	for (int i = 0; i < N; i++)
		tt_start(l, &x[i], (uint64_t)(i % 8) * 7, tt_fire); /* 0..49 ms, some 0 */
	int done = 0;
	uint64_t until = mqbi_clock_ms() + 5000;
	while (done < N && mqbi_clock_ms() < until) {
		mqbi_loop_run_once(l, -1); /* the wait must be cut by the next timer */
		done = 0;
		for (int i = 0; i < N; i++)
			done += x[i].fires;
	}
	for (int i = 0; i < N; i++) {
		ck_assert_int_eq(x[i].fires, 1);
		ck_assert_int_eq(x[i].early, 0);
		ck_assert_uint_lt(x[i].fired_at, x[i].t.deadline + 1000);
	}
	close_loop(l);
}
END_TEST

START_TEST(test_timer_idle_wait)
{
	mqbi_loop *l = open_loop(_i);
	ttimer x = {0};
	tt_start(l, &x, 100, tt_fire);
	int t = mqbi_loop_timeout(l);
	ck_assert_int_gt(t, 0);
	ck_assert_int_le(t, 100);
	/* Nothing else happens: -1 waits, but only until the timer. */
	for (int i = 0; i < 20 && !x.fires; i++)
		mqbi_loop_run_once(l, -1);
	ck_assert_int_eq(x.fires, 1);
	ck_assert_int_eq(x.early, 0);
	ck_assert_uint_lt(x.fired_at, x.t.deadline + 1000);
	ck_assert_int_eq(mqbi_loop_timeout(l), -1);
	tt_start(l, &x, 0, tt_fire);
	ck_assert_int_le(mqbi_loop_timeout(l), 1);
	mqbi_timer_stop(l, &x.t);
	ck_assert_int_eq(mqbi_loop_timeout(l), -1);
	close_loop(l);
}
END_TEST

START_TEST(test_timer_rearm_from_callback)
{
	mqbi_loop *l = open_loop(_i);
	ttimer x = {0};
	x.rearm = 4;
	tt_start(l, &x, 3, tt_fire);
	RUN_UNTIL(l, x.fires == 5, 5000);
	ck_assert_int_eq(x.fires, 5);
	ck_assert_int_eq(x.early, 0);
	ck_assert(!mqbi_timer_armed(&x.t));
	/* Zero delay re-armed from the callback fires in a later iteration, not
	 * again within the same walk. */
	x.rearm = 1;
	x.fires = 0;
	tt_start(l, &x, 0, tt_fire);
	RUN_UNTIL(l, x.fires >= 1, 2000);
	ck_assert_int_eq(x.fires, 1);
	ck_assert(mqbi_timer_armed(&x.t));
	RUN_UNTIL(l, x.fires >= 2, 2000);
	ck_assert_int_eq(x.fires, 2);
	close_loop(l);
}
END_TEST

START_TEST(test_timer_stop)
{
	mqbi_loop *l = open_loop(_i);
	ttimer a = {0}, b = {0}, c = {0};
	mqbi_timer_stop(l, &a.t); /* idle: no-op */
	tt_start(l, &a, 10, tt_fire);
	tt_start(l, &b, 20, tt_fire);
	mqbi_timer_stop(l, &a.t);
	ck_assert(!mqbi_timer_armed(&a.t));
	mqbi_timer_stop(l, &a.t);
	/* c stops b from its callback, before b is due. */
	c.victim = &b;
	tt_start(l, &c, 5, tt_fire);
	/* Re-arming moves a timer rather than adding it twice. */
	tt_start(l, &a, 1000, tt_fire);
	tt_start(l, &a, 30, tt_fire);
	RUN_UNTIL(l, a.fires, 5000);
	ck_assert_int_eq(c.fires, 1);
	ck_assert_int_eq(a.fires, 1);
	ck_assert_int_eq(b.fires, 0);
	ck_assert_uint_lt(a.fired_at, a.started + 1000);
	RUN_UNTIL(l, false, 100);
	ck_assert_int_eq(a.fires, 1);
	ck_assert_int_eq(mqbi_loop_timeout(l), -1);
	close_loop(l);
}
END_TEST

/* Timers due in the same tick stop and free each other: exactly one fires
 * (the walk must not touch the freed one). */
START_TEST(test_timer_stop_peer_same_tick)
{
	mqbi_loop *l = open_loop(_i);
	enum { N = 20 };
	ttimer *x[N];
	nkillers = 0;
	for (int i = 0; i < N; i += 2) {
		x[i] = calloc(1, sizeof(ttimer));
		x[i + 1] = calloc(1, sizeof(ttimer));
		x[i]->victim = x[i + 1];
		x[i + 1]->victim = x[i];
		x[i]->free_victim = x[i + 1]->free_victim = 1;
	}
	/* Start them all within one millisecond, so pairs share a slot. */
	for (int i = 0; i < N; i++)
		mqbi_timer_start(l, &x[i]->t, 10, tt_fire);
	RUN_UNTIL(l, mqbi_loop_timeout(l) < 0, 5000);
	/* One survivor per pair, which fired once and freed its peer. */
	ck_assert_int_eq(nkillers, N / 2);
	for (int i = 0; i < nkillers; i++) {
		ck_assert_int_eq(killers[i]->fires, 1);
		ck_assert_int_eq(killers[i]->early, 0);
		free(killers[i]);
	}
	close_loop(l);
}
END_TEST

START_TEST(test_timer_many)
{
	mqbi_loop *l = open_loop(_i);
	enum { N = 10000 };
	ttimer *x = calloc(N, sizeof(*x));
	unsigned seed = 12345;
	for (int i = 0; i < N; i++)
		tt_start(l, &x[i], (uint64_t)(rand_r(&seed) % 300), tt_fire);
	int done = 0;
	uint64_t until = mqbi_clock_ms() + 20000;
	while (done < N && mqbi_clock_ms() < until) {
		mqbi_loop_run_once(l, 50);
		done = 0;
		for (int i = 0; i < N; i++)
			done += x[i].fires;
	}
	RUN_UNTIL(l, false, 100); /* nothing fires twice */
	for (int i = 0; i < N; i++) {
		ck_assert_int_eq(x[i].fires, 1);
		ck_assert_int_eq(x[i].early, 0);
	}
	ck_assert_int_eq(mqbi_loop_timeout(l), -1);
	free(x);
	close_loop(l);
}
END_TEST

/* The loop does not run for a while: timers due meanwhile fire at once. */
START_TEST(test_timer_catch_up)
{
	mqbi_loop *l = open_loop(_i);
	ttimer a = {0}, b = {0}, c = {0};
	tt_start(l, &a, 10, tt_fire);
	tt_start(l, &b, 100, tt_fire);
	tt_start(l, &c, 2000, tt_fire);
	usleep(300 * 1000);
	ck_assert_int_eq(mqbi_loop_timeout(l), 0);
	mqbi_loop_run_once(l, 0);
	ck_assert_int_eq(a.fires, 1);
	ck_assert_int_eq(b.fires, 1);
	ck_assert_int_eq(c.fires, 0);
	ck_assert_int_eq(a.early + b.early, 0);
	mqbi_timer_stop(l, &c.t);
	close_loop(l);
}
END_TEST

/* Beyond one revolution of the wheel (default backend only: it is wheel
 * logic, and slow). */
START_TEST(test_timer_beyond_revolution)
{
	mqbi_loop *l = open_loop(0);
	ttimer near = {0}, far = {0}, a = {0}, b = {0}, c = {0};
	/* Same slot, one revolution apart: far is skipped when near fires. */
	tt_start(l, &near, 50, tt_fire);
	tt_start(l, &far, MQBI_WHEEL_SLOTS + 50, tt_fire);
	RUN_UNTIL(l, near.fires, 5000);
	ck_assert_int_eq(near.fires, 1);
	ck_assert_int_eq(far.fires, 0);
	ck_assert(mqbi_timer_armed(&far.t));
	/* Sleep past a whole revolution without running the loop: the walk is
	 * capped at one revolution and still finds everything due. */
	tt_start(l, &a, 10, tt_fire);
	tt_start(l, &b, MQBI_WHEEL_SLOTS - 100, tt_fire);
	tt_start(l, &c, MQBI_WHEEL_SLOTS + 1000, tt_fire);
	usleep((MQBI_WHEEL_SLOTS + 300) * 1000);
	mqbi_loop_run_once(l, 0);
	ck_assert_int_eq(far.fires, 1);
	ck_assert_int_eq(a.fires, 1);
	ck_assert_int_eq(b.fires, 1);
	ck_assert_int_eq(c.fires, 0);
	RUN_UNTIL(l, c.fires, 5000);
	ck_assert_int_eq(c.fires, 1);
	ck_assert_int_eq(near.early + far.early + a.early + b.early + c.early, 0);
	close_loop(l);
}
END_TEST

/* ---- Inbox */

enum { PRODUCERS = 4, POSTS = 100000 };

typedef struct pitem {
	mqbi_inbox_item it; /* first: the item pointer is the pitem pointer */
	int producer;
	int seq;
} pitem;

static int next_seq[PRODUCERS];
static long ran, dropped, out_of_order;

static void pitem_run(mqbi_loop *l, mqbi_inbox_item *it)
{
	pitem *p = (pitem *)it;
	if (p->seq != next_seq[p->producer])
		out_of_order++;
	next_seq[p->producer] = p->seq + 1;
	ran++;
	free(p);
}

static void pitem_drop(mqbi_inbox_item *it)
{
	dropped++;
	free(it);
}

static pitem *pitem_new(int producer, int seq)
{
	pitem *p = calloc(1, sizeof(*p));
	p->it.run = pitem_run;
	p->it.drop = pitem_drop;
	p->producer = producer;
	p->seq = seq;
	return p;
}

typedef struct producer {
	mqbi_loop *l;
	int id;
	pthread_barrier_t *go;
} producer;

static void *produce(void *arg)
{
	producer *p = arg;
	pthread_barrier_wait(p->go);
	for (int i = 0; i < POSTS; i++)
		mqbi_loop_post(p->l, &pitem_new(p->id, i)->it);
	return NULL;
}

START_TEST(test_inbox_producers)
{
	mqbi_loop *l = open_loop(_i);
	ran = out_of_order = 0;
	memset(next_seq, 0, sizeof(next_seq));
	pthread_barrier_t go;
	pthread_barrier_init(&go, NULL, PRODUCERS);
	pthread_t th[PRODUCERS];
	producer pr[PRODUCERS];
	for (int i = 0; i < PRODUCERS; i++) {
		pr[i] = (producer){l, i, &go};
		ck_assert_int_eq(pthread_create(&th[i], NULL, produce, &pr[i]), 0);
	}
	uint64_t until = mqbi_clock_ms() + 60000;
	/* Blocks until woken: a lost wake-up hangs here (and times out). */
	while (ran < (long)PRODUCERS * POSTS && mqbi_clock_ms() < until)
		mqbi_loop_run_once(l, -1);
	for (int i = 0; i < PRODUCERS; i++)
		pthread_join(th[i], NULL);
	pthread_barrier_destroy(&go);
	ck_assert_int_eq(ran, (long)PRODUCERS * POSTS);
	ck_assert_int_eq(out_of_order, 0);
	for (int i = 0; i < PRODUCERS; i++)
		ck_assert_int_eq(next_seq[i], POSTS);
	close_loop(l);
}
END_TEST

static void *post_later(void *arg)
{
	usleep(100 * 1000);
	mqbi_loop_post(arg, &pitem_new(0, 0)->it);
	return NULL;
}

START_TEST(test_inbox_wakes_blocked_loop)
{
	mqbi_loop *l = open_loop(_i);
	ran = out_of_order = 0;
	memset(next_seq, 0, sizeof(next_seq));
	pthread_t th;
	ck_assert_int_eq(pthread_create(&th, NULL, post_later, l), 0);
	while (ran == 0)
		mqbi_loop_run_once(l, -1); /* nothing else could end the wait */
	pthread_join(th, NULL);
	ck_assert_int_eq(ran, 1);
	close_loop(l);
}
END_TEST

START_TEST(test_inbox_burst_one_wake)
{
	mqbi_loop *l = open_loop(_i);
	ran = out_of_order = 0;
	memset(next_seq, 0, sizeof(next_seq));
	for (int i = 0; i < 1000; i++)
		mqbi_loop_post(l, &pitem_new(0, i)->it);
	/* Read the wake counter ourselves: one post found the inbox empty. */
	uint64_t count = 0;
	ck_assert_int_eq(read(l->wake_rd, &count, sizeof(count)), (ssize_t)sizeof(count));
	ck_assert_uint_eq(count, 1);
	/* The loop still drains without the wake. */
	mqbi_loop_run_once(l, 0);
	ck_assert_int_eq(ran, 1000);
	ck_assert_int_eq(out_of_order, 0);
	close_loop(l);
}
END_TEST

typedef struct chain {
	mqbi_inbox_item it;
	int left;
	int runs;
} chain;

static void chain_run(mqbi_loop *l, mqbi_inbox_item *it)
{
	chain *c = (chain *)it;
	c->runs++;
	if (c->left-- > 0)
		mqbi_loop_post(l, it); /* runs next iteration, without a long wait */
}

START_TEST(test_inbox_post_from_item)
{
	mqbi_loop *l = open_loop(_i);
	chain c = {.it.run = chain_run, .left = 3};
	mqbi_loop_post(l, &c.it);
	uint64_t t0 = mqbi_clock_ms();
	for (int i = 1; i <= 4; i++) {
		mqbi_loop_run_once(l, 10000);
		ck_assert_int_eq(c.runs, i);
	}
	ck_assert_uint_lt(mqbi_clock_ms() - t0, 5000);
	close_loop(l);
}
END_TEST

START_TEST(test_destroy_drops_queued)
{
	mqbi_loop *l = open_loop(_i);
	ran = dropped = 0;
	for (int i = 0; i < 5; i++)
		mqbi_loop_post(l, &pitem_new(0, i)->it);
	mqbi_inbox_item no_drop = {.run = pitem_run, .drop = NULL};
	mqbi_loop_post(l, &no_drop);
	close_loop(l);
	ck_assert_int_eq(dropped, 5);
	ck_assert_int_eq(ran, 0);
}
END_TEST

/* ---- Stop, hooks, time */

static void *stop_later(void *arg)
{
	usleep(100 * 1000);
	mqbi_loop_stop(arg);
	return NULL;
}

START_TEST(test_stop_from_thread)
{
	mqbi_loop *l = open_loop(_i);
	pthread_t th;
	ck_assert(!mqbi_loop_stopped(l));
	ck_assert_int_eq(pthread_create(&th, NULL, stop_later, l), 0);
	mqbi_loop_run(l); /* blocks with no timers or fds until stopped */
	pthread_join(th, NULL);
	ck_assert(mqbi_loop_stopped(l));
	/* A stopped loop does not wait. */
	uint64_t t0 = mqbi_clock_ms();
	ck_assert_int_eq(mqbi_loop_run_once(l, 10000), -1);
	ck_assert_uint_lt(mqbi_clock_ms() - t0, 5000);
	mqbi_loop_restart(l);
	ck_assert(!mqbi_loop_stopped(l));
	ck_assert_int_eq(mqbi_loop_run_once(l, 0), 0);
	close_loop(l);
}
END_TEST

static mqbi_loop *signal_loop;

static void on_signal(int sig)
{
	mqbi_loop_stop(signal_loop);
}

typedef struct killer {
	pthread_t target;
} killer;

static void *signal_later(void *arg)
{
	usleep(100 * 1000);
	pthread_kill(((killer *)arg)->target, SIGUSR1);
	return NULL;
}

START_TEST(test_stop_from_signal)
{
	mqbi_loop *l = open_loop(_i);
	signal_loop = l;
	struct sigaction sa = {.sa_handler = on_signal};
	sigemptyset(&sa.sa_mask);
	ck_assert_int_eq(sigaction(SIGUSR1, &sa, NULL), 0);
	killer k = {pthread_self()};
	pthread_t th;
	ck_assert_int_eq(pthread_create(&th, NULL, signal_later, &k), 0);
	mqbi_loop_run(l);
	pthread_join(th, NULL);
	ck_assert(mqbi_loop_stopped(l));
	signal(SIGUSR1, SIG_DFL);
	close_loop(l);
}
END_TEST

typedef struct hook_rec {
	int calls;
	int io_before; /* the I/O handler had run when the hook was called */
	io_rec io;
} hook_rec;

static void on_hook(mqbi_loop *l, void *user)
{
	hook_rec *h = user;
	h->calls++;
	if (h->io.calls)
		h->io_before++;
}

START_TEST(test_before_sleep)
{
	mqbi_loop *l = open_loop(_i);
	hook_rec h = {0};
	mqbi_loop_set_before_sleep(l, on_hook, &h);
	for (int i = 0; i < 5; i++)
		mqbi_loop_run_once(l, 0);
	ck_assert_int_eq(h.calls, 5);
	int p[2];
	make_pipe(p);
	ck_assert_int_eq(mqbi_loop_watch(l, p[0], MQBI_EV_READ, on_io, &h.io), MQB_OK);
	put_byte(p[1]);
	ck_assert_int_eq(mqbi_loop_run_once(l, 1000), 1);
	ck_assert_int_eq(h.calls, 6);
	ck_assert_int_eq(h.io_before, 1);
	mqbi_loop_set_before_sleep(l, NULL, NULL);
	mqbi_loop_run_once(l, 0);
	ck_assert_int_eq(h.calls, 6);
	mqbi_loop_unwatch(l, p[0]);
	close(p[0]);
	close(p[1]);
	close_loop(l);
}
END_TEST

static void on_io_now(mqbi_loop *l, int fd, void *user, unsigned events)
{
	uint64_t *seen = user;
	seen[0] = mqbi_loop_now(l);
	usleep(20 * 1000);
	seen[1] = mqbi_loop_now(l); /* cached: unchanged within the iteration */
}

START_TEST(test_now_cached)
{
	mqbi_loop *l = open_loop(_i);
	int data = 42;
	mqbi_loop_set_data(l, &data);
	ck_assert_ptr_eq(mqbi_loop_data(l), &data);
	uint64_t t0 = mqbi_clock_ms();
	ck_assert_uint_le(mqbi_loop_now(l), t0);
	usleep(20 * 1000);
	mqbi_loop_run_once(l, 0);
	ck_assert_uint_ge(mqbi_loop_now(l), t0 + 20);
	ck_assert_uint_le(mqbi_loop_now(l), mqbi_clock_ms());
	int p[2];
	make_pipe(p);
	uint64_t seen[2] = {0};
	ck_assert_int_eq(mqbi_loop_watch(l, p[0], MQBI_EV_READ, on_io_now, seen), MQB_OK);
	put_byte(p[1]);
	ck_assert_int_eq(mqbi_loop_run_once(l, 1000), 1);
	ck_assert_uint_eq(seen[0], seen[1]);
	mqbi_loop_unwatch(l, p[0]);
	close(p[0]);
	close(p[1]);
	close_loop(l);
}
END_TEST

/* ---- Suite */

static Suite *loop_suite(void)
{
	Suite *s = suite_create("loop");
	TCase *io = tcase_create("io");
	tcase_add_loop_test(io, test_read_ready, 0, 2);
	tcase_add_loop_test(io, test_write_ready, 0, 2);
	tcase_add_loop_test(io, test_read_write_both, 0, 2);
	tcase_add_loop_test(io, test_timeout_without_events, 0, 2);
	tcase_add_loop_test(io, test_hangup, 0, 2);
	tcase_add_loop_test(io, test_watch_invalid, 0, 2);
	tcase_add_loop_test(io, test_high_fd_grows_table, 0, 2);
	tcase_add_loop_test(io, test_more_ready_than_batch, 0, 2);
	tcase_add_loop_test(io, test_watch_nomem, 0, 2);
	tcase_add_loop_test(io, test_create_nomem, 0, 2);
	tcase_add_loop_test(io, test_unwatch_self, 0, 2);
	tcase_add_loop_test(io, test_unwatch_other_pending, 0, 2);
	tcase_add_loop_test(io, test_fd_reuse_same_iteration, 0, 2);
	tcase_add_loop_test(io, test_step_fd, 0, 2);
	tcase_set_timeout(io, 30);
	suite_add_tcase(s, io);

	TCase *tm = tcase_create("timer");
	tcase_add_loop_test(tm, test_timer_order, 0, 2);
	tcase_add_loop_test(tm, test_timer_never_early, 0, 2);
	tcase_add_loop_test(tm, test_timer_idle_wait, 0, 2);
	tcase_add_loop_test(tm, test_timer_rearm_from_callback, 0, 2);
	tcase_add_loop_test(tm, test_timer_stop, 0, 2);
	tcase_add_loop_test(tm, test_timer_stop_peer_same_tick, 0, 2);
	tcase_add_loop_test(tm, test_timer_many, 0, 2);
	tcase_add_loop_test(tm, test_timer_catch_up, 0, 2);
	tcase_add_test(tm, test_timer_beyond_revolution);
	tcase_set_timeout(tm, 60);
	suite_add_tcase(s, tm);

	TCase *ib = tcase_create("inbox");
	tcase_add_loop_test(ib, test_inbox_producers, 0, 2);
	tcase_add_loop_test(ib, test_inbox_wakes_blocked_loop, 0, 2);
	tcase_add_loop_test(ib, test_inbox_burst_one_wake, 0, 2);
	tcase_add_loop_test(ib, test_inbox_post_from_item, 0, 2);
	tcase_add_loop_test(ib, test_destroy_drops_queued, 0, 2);
	tcase_set_timeout(ib, 120);
	suite_add_tcase(s, ib);

	TCase *ctl = tcase_create("control");
	tcase_add_loop_test(ctl, test_stop_from_thread, 0, 2);
	tcase_add_loop_test(ctl, test_stop_from_signal, 0, 2);
	tcase_add_loop_test(ctl, test_before_sleep, 0, 2);
	tcase_add_loop_test(ctl, test_now_cached, 0, 2);
	tcase_set_timeout(ctl, 30);
	suite_add_tcase(s, ctl);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(loop_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
