/*
 * epoll backend, level-triggered. The epoll fd doubles as the loop's fd for a
 * host's poll set: it is readable whenever epoll_wait would return something.
 */
#include "loop_internal.h"

#if MQBI_HAVE_EPOLL

#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "util/alloc.h"

typedef struct epoll_state {
	int epfd;
	struct epoll_event events[MQBI_MAX_FIRED];
} epoll_state;

static uint32_t to_epoll(unsigned events)
{
	return (events & MQBI_EV_READ ? EPOLLIN : 0) | (events & MQBI_EV_WRITE ? EPOLLOUT : 0);
}

static mqb_err epoll_init(mqbi_loop *l)
{
	epoll_state *s = mqbi_calloc(&l->alloc, sizeof(*s));
	if (!s)
		return MQB_ERR_NOMEM;
	s->epfd = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = l->wake_rd};
	if (s->epfd < 0 || epoll_ctl(s->epfd, EPOLL_CTL_ADD, l->wake_rd, &ev) < 0) {
		if (s->epfd >= 0)
			close(s->epfd);
		mqbi_free(&l->alloc, s);
		return MQB_ERR_IO;
	}
	l->be_state = s;
	return MQB_OK;
}

static void epoll_fini(mqbi_loop *l)
{
	epoll_state *s = l->be_state;
	close(s->epfd);
	mqbi_free(&l->alloc, s);
	l->be_state = NULL;
}

static mqb_err epoll_add(mqbi_loop *l, int fd, bool watched, unsigned events)
{
	epoll_state *s = l->be_state;
	struct epoll_event ev = {.events = to_epoll(events), .data.fd = fd};
	int r = epoll_ctl(s->epfd, watched ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev);
	/* The kernel drops an fd that was closed while watched; or the fd was
	 * left in the set by a failed earlier call. Either way, retry. */
	if (r < 0 && errno == ENOENT && watched)
		r = epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev);
	else if (r < 0 && errno == EEXIST && !watched)
		r = epoll_ctl(s->epfd, EPOLL_CTL_MOD, fd, &ev);
	if (r < 0)
		return errno == ENOMEM ? MQB_ERR_NOMEM : MQB_ERR_IO;
	return MQB_OK;
}

static void epoll_del(mqbi_loop *l, int fd)
{
	epoll_state *s = l->be_state;
	struct epoll_event ev = {0}; /* kernels before 2.6.9 want one */
	epoll_ctl(s->epfd, EPOLL_CTL_DEL, fd, &ev);
}

static int epoll_poll(mqbi_loop *l, int timeout_ms)
{
	epoll_state *s = l->be_state;
	int n = epoll_wait(s->epfd, s->events, MQBI_MAX_FIRED, timeout_ms);
	if (n < 0)
		return 0; /* EINTR: a signal (maybe a stop) came in */
	for (int i = 0; i < n; i++) {
		uint32_t e = s->events[i].events;
		unsigned ev = 0;
		if (e & EPOLLIN)
			ev |= MQBI_EV_READ;
		if (e & EPOLLOUT)
			ev |= MQBI_EV_WRITE;
		if (e & (EPOLLERR | EPOLLHUP))
			ev |= MQBI_EV_ERROR;
		l->fired[i].fd = s->events[i].data.fd;
		l->fired[i].events = ev;
	}
	return n;
}

static int epoll_fd(const mqbi_loop *l)
{
	const epoll_state *s = l->be_state;
	return s ? s->epfd : -1;
}

const mqbi_backend mqbi_backend_epoll = {
        .name = "epoll",
        .init = epoll_init,
        .fini = epoll_fini,
        .resize = NULL,
        .add = epoll_add,
        .del = epoll_del,
        .poll = epoll_poll,
        .fd = epoll_fd,
};

#else
typedef int mqbi_loop_epoll_unused; /* ISO C wants something in a file */
#endif
