/*
 * The event loop core, after Redis' ae.c: a watcher table indexed by fd, a
 * readiness backend (loop_epoll.c, or loop_poll.c), the timer wheel (timer.c)
 * and the inbox (inbox.c). One iteration: wait, dispatch I/O, fire due
 * timers, run posted items, call the before-sleep hook.
 *
 * Both backends are level-triggered: a handler that leaves data unread is
 * called again next iteration, so no handler has to drain a socket to EAGAIN.
 *
 * The wake fd (an eventfd, or a self-pipe where there is none) is written by
 * mqbi_loop_post() and mqbi_loop_stop() from other threads or signal handlers
 * and read here on the loop thread.
 */
#include "loop_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <time.h>
#include <unistd.h>
#if MQBI_HAVE_EVENTFD
#include <sys/eventfd.h>
#endif

#include "util/alloc.h"

#define INITIAL_SETSIZE 64

uint64_t mqbi_clock_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int64_t mqbi_wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static mqb_err wake_open(mqbi_loop *l)
{
#if MQBI_HAVE_EVENTFD
	l->wake_rd = l->wake_wr = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	return l->wake_rd < 0 ? MQB_ERR_IO : MQB_OK;
#else
	int p[2];
	if (pipe(p) < 0)
		return MQB_ERR_IO;
	for (int i = 0; i < 2; i++) {
		fcntl(p[i], F_SETFL, fcntl(p[i], F_GETFL) | O_NONBLOCK);
		fcntl(p[i], F_SETFD, FD_CLOEXEC);
	}
	l->wake_rd = p[0];
	l->wake_wr = p[1];
	return MQB_OK;
#endif
}

/* Async-signal-safe: a write(2) and nothing else. A full pipe or an eventfd
 * at its limit is already readable, so a failed write loses nothing. */
void mqbi_loop_wake(mqbi_loop *l)
{
	int saved = errno;
	uint64_t one = 1;
	ssize_t r = write(l->wake_wr, &one, sizeof(one));
	(void)r;
	errno = saved;
}

static void wake_drain(mqbi_loop *l)
{
	uint64_t buf[8];
	while (read(l->wake_rd, buf, sizeof(buf)) > 0) {
#if MQBI_HAVE_EVENTFD
		break; /* one read resets an eventfd */
#endif
	}
}

static mqb_err loop_create(const mqb_allocator *a, const mqbi_backend *be, mqbi_loop **out)
{
	mqb_err err = MQB_ERR_NOMEM;
	if (!out)
		return MQB_ERR_INVAL;
	*out = NULL;
	if (!a)
		a = &mqbi_default_allocator;
	mqbi_loop *l = mqbi_calloc(a, sizeof(*l));
	if (!l)
		return MQB_ERR_NOMEM;
	l->alloc = *a;
	l->be = be;
	l->wake_rd = l->wake_wr = -1;
	atomic_init(&l->stopped, false);
	atomic_init(&l->inbox, NULL);
	l->now = mqbi_clock_ms();

	l->setsize = INITIAL_SETSIZE;
	l->watchers = mqbi_calloc(a, sizeof(*l->watchers) * (size_t)l->setsize);
	if (!l->watchers)
		goto fail;
	if ((err = mqbi_wheel_init(l)) != MQB_OK)
		goto fail;
	if ((err = wake_open(l)) != MQB_OK)
		goto fail;
	if ((err = be->init(l)) != MQB_OK)
		goto fail;
	*out = l;
	return MQB_OK;
fail:
	mqbi_loop_destroy(l);
	return err;
}

mqb_err mqbi_loop_create(const mqb_allocator *a, mqbi_loop **out)
{
#if MQBI_HAVE_EPOLL
	return loop_create(a, &mqbi_backend_epoll, out);
#else
	return loop_create(a, &mqbi_backend_poll, out);
#endif
}

mqb_err mqbi_loop_create_poll(const mqb_allocator *a, mqbi_loop **out)
{
	return loop_create(a, &mqbi_backend_poll, out);
}

void mqbi_loop_destroy(mqbi_loop *l)
{
	if (!l)
		return;
	mqbi_inbox_drop_all(l);
	if (l->be_state)
		l->be->fini(l);
	if (l->wake_wr >= 0 && l->wake_wr != l->wake_rd)
		close(l->wake_wr);
	if (l->wake_rd >= 0)
		close(l->wake_rd);
	mqbi_wheel_fini(l);
	mqbi_free(&l->alloc, l->watchers);
	mqbi_free(&l->alloc, l);
}

const char *mqbi_loop_backend(const mqbi_loop *l)
{
	return l->be->name;
}

/* Grows the watcher table (and the backend's tables) so that fd fits. Arrays that grew before a
 * later failure just keep the room. */
static mqb_err grow(mqbi_loop *l, int fd)
{
	int n = l->setsize;
	while (n <= fd) {
		if (n > INT_MAX / 2)
			return MQB_ERR_RANGE;
		n *= 2;
	}
	mqbi_watcher *w = mqbi_realloc(&l->alloc, l->watchers, sizeof(*w) * (size_t)n);
	if (!w)
		return MQB_ERR_NOMEM;
	l->watchers = w;
	mqb_err err = l->be->resize ? l->be->resize(l, n) : MQB_OK;
	if (err != MQB_OK)
		return err;
	memset(w + l->setsize, 0, sizeof(*w) * (size_t)(n - l->setsize));
	l->setsize = n;
	return MQB_OK;
}

mqb_err mqbi_loop_watch(mqbi_loop *l, int fd, unsigned events, mqbi_io_fn fn, void *user)
{
	if (fd < 0 || !fn || fd == l->wake_rd || fd == l->wake_wr || fd == l->be->fd(l))
		return MQB_ERR_INVAL;
	if (fd >= l->setsize) {
		mqb_err err = grow(l, fd);
		if (err != MQB_OK)
			return err;
	}
	mqbi_watcher *w = &l->watchers[fd];
	bool watched = w->fn != NULL;
	events &= MQBI_EV_READ | MQBI_EV_WRITE;
	/* Output is flushed once per iteration for every busy connection: an
	 * unchanged watch must not cost a system call. */
	if (watched && w->events == events && w->fn == fn && w->user == user)
		return MQB_OK;
	mqb_err err = l->be->add(l, fd, watched, events);
	if (err != MQB_OK)
		return err;
	if (!watched)
		w->gen++; /* a new watcher: events gathered for the old one are stale */
	w->fn = fn;
	w->user = user;
	w->events = events;
	return MQB_OK;
}

void mqbi_loop_unwatch(mqbi_loop *l, int fd)
{
	if (fd < 0 || fd >= l->setsize || !l->watchers[fd].fn)
		return;
	l->be->del(l, fd);
	mqbi_watcher *w = &l->watchers[fd];
	w->fn = NULL;
	w->user = NULL;
	w->events = 0;
	w->gen++;
}

/* How long the backend may block: the caller's limit, cut short by the next
 * timer; no wait at all once stop was requested. */
static int wait_ms(mqbi_loop *l, int timeout_ms)
{
	if (atomic_load_explicit(&l->stopped, memory_order_relaxed))
		return 0;
	int t = mqbi_loop_timeout(l);
	if (t < 0)
		return timeout_ms;
	return timeout_ms >= 0 && timeout_ms < t ? timeout_ms : t;
}

int mqbi_loop_timeout(mqbi_loop *l)
{
	uint64_t next = mqbi_wheel_next(l);
	if (next == UINT64_MAX)
		return -1;
	uint64_t now = mqbi_clock_ms();
	if (next <= now)
		return 0;
	return next - now > INT_MAX ? INT_MAX : (int)(next - now);
}

int mqbi_loop_run_once(mqbi_loop *l, int timeout_ms)
{
	int n = l->be->poll(l, wait_ms(l, timeout_ms));
	l->now = mqbi_clock_ms();

	/* Stamp every event before any handler runs: a handler may unwatch an
	 * fd, close it and have the number reused by a new watcher. */
	for (int i = 0; i < n; i++) {
		mqbi_fired *f = &l->fired[i];
		if (f->fd >= 0 && f->fd < l->setsize)
			f->gen = l->watchers[f->fd].gen;
	}

	int dispatched = 0;
	for (int i = 0; i < n; i++) {
		const mqbi_fired *f = &l->fired[i];
		if (f->fd == l->wake_rd) {
			wake_drain(l); /* before the inbox is taken below: see inbox.c */
			continue;
		}
		if (f->fd < 0 || f->fd >= l->setsize)
			continue;
		const mqbi_watcher *w = &l->watchers[f->fd];
		if (!w->fn || w->gen != f->gen)
			continue;
		unsigned ev = f->events;
		if (ev & MQBI_EV_ERROR)
			ev |= w->events;
		ev &= w->events | MQBI_EV_ERROR; /* interest may have shrunk meanwhile */
		if (!ev)
			continue;
		w->fn(l, f->fd, w->user, ev);
		dispatched++;
	}

	mqbi_wheel_expire(l, l->now);
	mqbi_inbox_drain(l);
	if (l->before_sleep)
		l->before_sleep(l, l->before_sleep_user);
	return atomic_load(&l->stopped) ? -1 : dispatched;
}

void mqbi_loop_run(mqbi_loop *l)
{
	while (mqbi_loop_run_once(l, -1) >= 0) {
	}
}

void mqbi_loop_stop(mqbi_loop *l)
{
	atomic_store(&l->stopped, true);
	mqbi_loop_wake(l);
}

bool mqbi_loop_stopped(const mqbi_loop *l)
{
	return atomic_load((atomic_bool *)&l->stopped);
}

void mqbi_loop_restart(mqbi_loop *l)
{
	atomic_store(&l->stopped, false);
}

int mqbi_loop_fd(const mqbi_loop *l)
{
	return l->be->fd(l);
}

uint64_t mqbi_loop_now(const mqbi_loop *l)
{
	return l->now;
}

void mqbi_loop_set_before_sleep(mqbi_loop *l, void (*fn)(mqbi_loop *l, void *user), void *user)
{
	l->before_sleep = fn;
	l->before_sleep_user = user;
}

void mqbi_loop_set_data(mqbi_loop *l, void *data)
{
	l->data = data;
}

void *mqbi_loop_data(const mqbi_loop *l)
{
	return l->data;
}
