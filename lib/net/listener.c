/* TCP listeners. Each listener is served by one worker (listener i on worker
 * i mod N); an accepted connection moves to its session's home worker once
 * its CONNECT is read, so accepting on one worker does not pin the load. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/core.h"

static bool addr_is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
			return true;
		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
			return in6->sin6_addr.s6_addr[12] == 127;
	}
	return false;
}

static void on_accept(mqbi_loop *l, int fd, void *user, unsigned events);

static void resume_accept(mqbi_loop *l, mqbi_timer *t)
{
	mqbi_listener *ls = (mqbi_listener *)((char *)t - offsetof(mqbi_listener, pause));
	if (ls->fd >= 0)
		mqbi_loop_watch(l, ls->fd, MQBI_EV_READ, on_accept, ls);
}

static void on_accept(mqbi_loop *l, int lfd, void *user, unsigned events)
{
	mqbi_listener *ls = user;
	mqb_broker *b = ls->broker;
	mqbi_worker *w = mqbi_loop_data(l);
	for (int i = 0; i < 64; i++) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
			    errno == ECONNABORTED)
				return;
			/* Out of descriptors or memory: level-triggered readiness would
			 * spin, so pause accepting briefly. */
			mqbi_log(b, MQB_LOG_ERROR, "net", NULL,
			         "listener %s: accept: %s; pausing 100ms", ls->cfg.name,
			         strerror(errno));
			mqbi_loop_unwatch(l, lfd);
			mqbi_timer_start(l, &ls->pause, 100, resume_accept);
			return;
		}
		if (atomic_load(&ls->connections) >= ls->cfg.max_connections) {
			mqbi_log(b, MQB_LOG_WARNING, "net", NULL,
			         "listener %s: max_connections (%lld) reached, refusing",
			         ls->cfg.name, (long long)ls->cfg.max_connections);
			close(fd);
			continue;
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		mqbi_client_accept(w, ls, fd);
	}
}

static mqb_err open_one(mqb_broker *b, mqbi_listener *ls)
{
	const mqbi_listener_cfg *cfg = &ls->cfg;
	char port[16];
	snprintf(port, sizeof port, "%d", cfg->port);
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
	                         .ai_socktype = SOCK_STREAM,
	                         .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	const char *host = cfg->host[0] ? cfg->host : NULL;
	int rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0) {
		mqbi_log(b, MQB_LOG_ERROR, "net", NULL, "listener %s: cannot resolve '%s': %s",
		         cfg->name, cfg->host, gai_strerror(rc));
		return MQB_ERR_INVAL;
	}
	mqb_err err = MQB_ERR_IO;
	int fd = -1;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0)
			continue;
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 1024) == 0) {
			ls->loopback = addr_is_loopback(ai->ai_addr);
			err = MQB_OK;
			break;
		}
		err = errno == EADDRINUSE ? MQB_ERR_ADDRINUSE : MQB_ERR_IO;
		mqbi_log(b, MQB_LOG_ERROR, "net", NULL, "listener %s: cannot listen on %s:%d: %s",
		         cfg->name, cfg->host, cfg->port, strerror(errno));
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (err)
		return err;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
		ls->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
		                                          : ((struct sockaddr_in *)&ss)->sin_port);
	ls->fd = fd;
	return MQB_OK;
}

mqb_err mqbi_listeners_open(mqb_broker *b)
{
	for (unsigned i = 0; i < b->nlisteners; i++) {
		mqbi_listener *ls = &b->listeners[i];
		ls->broker = b;
		ls->w = &b->workers[i % b->nworkers];
		ls->fd = -1;
		mqb_err err = open_one(b, ls);
		if (!err)
			err = mqbi_loop_watch(ls->w->loop, ls->fd, MQBI_EV_READ, on_accept, ls);
		if (err) {
			for (unsigned j = 0; j <= i; j++) {
				if (b->listeners[j].fd >= 0) {
					mqbi_loop_unwatch(b->listeners[j].w->loop,
					                  b->listeners[j].fd);
					close(b->listeners[j].fd);
					b->listeners[j].fd = -1;
				}
			}
			return err;
		}
		ls->w->listen_fds[i] = ls->fd;
		mqbi_log(b, MQB_LOG_NOTICE, "net", NULL, "listening on %s:%d (listener.%s.%s)",
		         ls->cfg.host, ls->port, ls->cfg.type, ls->cfg.name);
	}
	return MQB_OK;
}

void mqbi_worker_close_listeners(mqbi_worker *w)
{
	mqb_broker *b = w->broker;
	for (unsigned i = 0; i < b->nlisteners; i++) {
		int fd = w->listen_fds[i];
		if (fd < 0)
			continue;
		mqbi_listener *ls = &b->listeners[i];
		mqbi_timer_stop(w->loop, &ls->pause);
		mqbi_loop_unwatch(w->loop, fd);
		close(fd);
		w->listen_fds[i] = -1;
		ls->fd = -1;
	}
}
