/*
 * poll(2) backend: the fallback where epoll is missing, and a second backend
 * to run the loop's tests against. A dense pollfd array (the wake fd first)
 * plus an fd-indexed map into it, so add and remove are O(1); removal moves
 * the last entry into the hole. O(watched fds) per wait.
 */
#include "loop_internal.h"

#include <poll.h>
#include <unistd.h>

#include "util/alloc.h"

typedef struct poll_state {
	struct pollfd *pfds; /* [0] is the wake fd; setsize + 1 entries */
	int *index;          /* fd -> position in pfds, or -1; setsize entries */
	int n;
	int scan_from; /* where the next report starts, so a full batch starves nobody */
} poll_state;

static short to_poll(unsigned events)
{
	return (short)((events & MQBI_EV_READ ? POLLIN : 0) |
	               (events & MQBI_EV_WRITE ? POLLOUT : 0));
}

static mqb_err poll_resize(mqbi_loop *l, int setsize)
{
	poll_state *s = l->be_state;
	struct pollfd *p = mqbi_realloc(&l->alloc, s->pfds, sizeof(*p) * (size_t)(setsize + 1));
	if (!p)
		return MQB_ERR_NOMEM;
	s->pfds = p;
	int *idx = mqbi_realloc(&l->alloc, s->index, sizeof(*idx) * (size_t)setsize);
	if (!idx)
		return MQB_ERR_NOMEM;
	/* Entries below the old size are in use; s->index may be new. */
	int old = l->setsize;
	if (!s->index)
		old = 0;
	for (int i = old; i < setsize; i++)
		idx[i] = -1;
	s->index = idx;
	return MQB_OK;
}

static mqb_err poll_init(mqbi_loop *l)
{
	poll_state *s = mqbi_calloc(&l->alloc, sizeof(*s));
	if (!s)
		return MQB_ERR_NOMEM;
	l->be_state = s;
	if (poll_resize(l, l->setsize) != MQB_OK) {
		mqbi_free(&l->alloc, s->pfds);
		mqbi_free(&l->alloc, s->index);
		mqbi_free(&l->alloc, s);
		l->be_state = NULL;
		return MQB_ERR_NOMEM;
	}
	s->pfds[0] = (struct pollfd){.fd = l->wake_rd, .events = POLLIN};
	s->n = 1;
	return MQB_OK;
}

static void poll_fini(mqbi_loop *l)
{
	poll_state *s = l->be_state;
	mqbi_free(&l->alloc, s->pfds);
	mqbi_free(&l->alloc, s->index);
	mqbi_free(&l->alloc, s);
	l->be_state = NULL;
}

static mqb_err poll_add(mqbi_loop *l, int fd, bool watched, unsigned events)
{
	poll_state *s = l->be_state;
	int i = s->index[fd];
	if (i < 0) {
		i = s->index[fd] = s->n++;
		s->pfds[i] = (struct pollfd){.fd = fd};
	}
	s->pfds[i].events = to_poll(events);
	return MQB_OK;
}

static void poll_del(mqbi_loop *l, int fd)
{
	poll_state *s = l->be_state;
	int i = s->index[fd];
	if (i < 0)
		return;
	s->index[fd] = -1;
	int last = --s->n;
	if (i != last) {
		s->pfds[i] = s->pfds[last];
		s->index[s->pfds[i].fd] = i;
	}
}

static int poll_poll(mqbi_loop *l, int timeout_ms)
{
	poll_state *s = l->be_state;
	int r = poll(s->pfds, (nfds_t)s->n, timeout_ms);
	if (r <= 0)
		return 0; /* timeout, or EINTR: a signal (maybe a stop) came in */
	int n = 0;
	int start = s->scan_from < s->n ? s->scan_from : 0;
	for (int k = 0; k < s->n && n < r; k++) {
		int i = (start + k) % s->n;
		short re = s->pfds[i].revents;
		if (!re)
			continue;
		if (n == MQBI_MAX_FIRED) {
			s->scan_from = i; /* still ready next time: level-triggered */
			return n;
		}
		unsigned ev = 0;
		if (re & POLLIN)
			ev |= MQBI_EV_READ;
		if (re & POLLOUT)
			ev |= MQBI_EV_WRITE;
		if (re & (POLLERR | POLLHUP | POLLNVAL))
			ev |= MQBI_EV_ERROR;
		l->fired[n].fd = s->pfds[i].fd;
		l->fired[n].events = ev;
		n++;
	}
	s->scan_from = 0;
	return n;
}

static int poll_fd(const mqbi_loop *l)
{
	return l->wake_rd;
}

const mqbi_backend mqbi_backend_poll = {
        .name = "poll",
        .init = poll_init,
        .fini = poll_fini,
        .resize = poll_resize,
        .add = poll_add,
        .del = poll_del,
        .poll = poll_poll,
        .fd = poll_fd,
};
