/* Listeners of every type (tcp, ssl, ws, wss); a connection's transports are
 * set up in conn.c. Listener i is served by worker i mod N; an accepted
 * connection moves to its session's home worker once its CONNECT is read, so
 * accepting on one worker does not pin the load. */
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
#include "net/tls.h"

bool mqbi_ip_is_loopback(int family, const void *addr)
{
	const uint8_t *a = addr;
	if (family == AF_INET)
		return a[0] == 127;
	if (family != AF_INET6)
		return false;
	static const uint8_t one[16] = {[15] = 1};
	static const uint8_t v4mapped[12] = {[10] = 0xff, [11] = 0xff};
	return memcmp(a, one, 16) == 0 || (memcmp(a, v4mapped, 12) == 0 && a[12] == 127);
}

bool mqbi_sockaddr_is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return mqbi_ip_is_loopback(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr);
	if (sa->sa_family == AF_INET6)
		return mqbi_ip_is_loopback(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr);
	return false;
}

static void on_accept(mqbi_loop *l, int fd, void *user, unsigned events);

static void resume_accept(mqbi_loop *l, mqbi_timer *t)
{
	mqbi_listener *ls = (mqbi_listener *)((char *)t - offsetof(mqbi_listener, pause));
	int fd = ls->fd;
	if (fd >= 0)
		mqbi_loop_watch(l, fd, MQBI_EV_READ, on_accept, ls);
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

static mqb_err open_socket(mqb_broker *b, mqbi_listener *ls)
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
			ls->loopback = mqbi_sockaddr_is_loopback(ai->ai_addr);
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

static void watch_listener(mqbi_worker *w, void *arg)
{
	mqbi_listener *ls = arg;
	if (mqbi_loop_watch(w->loop, ls->fd, MQBI_EV_READ, on_accept, ls) != MQB_OK) {
		close(ls->fd);
		ls->fd = -1;
	}
}

static void close_listener(mqbi_worker *w, void *arg)
{
	mqbi_listener *ls = arg;
	int fd = ls->fd;
	if (fd < 0)
		return;
	mqbi_timer_stop(w->loop, &ls->pause);
	mqbi_loop_unwatch(w->loop, fd);
	ls->fd = -1;
	close(fd);
}

/* A listener by "name" or "type.name" (names may repeat across types, as
 * in EMQX's listener.tcp.external and listener.ssl.external). */
static mqbi_listener *find(mqb_broker *b, const char *name)
{
	for (unsigned i = 0; i < b->nlisteners; i++) {
		mqbi_listener *ls = b->listeners[i];
		size_t tl = strlen(ls->cfg.type);
		if (ls->removed)
			continue;
		if (strcmp(ls->cfg.name, name) == 0 ||
		    (strncmp(name, ls->cfg.type, tl) == 0 && name[tl] == '.' &&
		     strcmp(name + tl + 1, ls->cfg.name) == 0))
			return ls;
	}
	return NULL;
}

static bool exists(mqb_broker *b, const mqbi_listener_cfg *cfg)
{
	for (unsigned i = 0; i < b->nlisteners; i++) {
		const mqbi_listener *ls = b->listeners[i];
		if (!ls->removed && strcmp(ls->cfg.type, cfg->type) == 0 &&
		    strcmp(ls->cfg.name, cfg->name) == 0)
			return true;
	}
	return false;
}

void mqbi_listener_free(mqb_broker *b, mqbi_listener *ls)
{
	mqbi_tls_server_release(ls->tls);
	mqbi_free(&b->alloc, ls);
}

mqb_err mqbi_listener_add(mqb_broker *b, const mqbi_listener_cfg *cfg)
{
	mqbi_listener *ls = mqbi_calloc(&b->alloc, sizeof(*ls));
	if (!ls)
		return MQB_ERR_NOMEM;
	ls->cfg = *cfg;
	ls->broker = b;
	ls->fd = -1;
	if (mqbi_listener_is_ws(cfg) && cfg->mqtt_path[0] != '/') {
		mqbi_log(b, MQB_LOG_ERROR, "net", NULL,
		         "listener %s.%s: mqtt_path '%s' must start with '/'", cfg->type, cfg->name,
		         cfg->mqtt_path);
		mqbi_free(&b->alloc, ls);
		return MQB_ERR_INVAL;
	}
	/* Certificates load before anything opens: a bad file fails the start. */
	if (mqbi_listener_is_tls(cfg)) {
		mqb_err err = mqbi_tls_server_create(b, cfg, &ls->tls);
		if (err) {
			mqbi_free(&b->alloc, ls);
			return err;
		}
	}
	pthread_mutex_lock(&b->state_lock);
	mqb_err err = exists(b, cfg) ? MQB_ERR_EXISTS : MQB_OK;
	if (!err && b->nlisteners == b->listeners_cap) {
		unsigned cap = b->listeners_cap ? b->listeners_cap * 2 : 4;
		mqbi_listener **n = mqbi_realloc(&b->alloc, b->listeners, sizeof(*n) * cap);
		if (n) {
			b->listeners = n;
			b->listeners_cap = cap;
		} else {
			err = MQB_ERR_NOMEM;
		}
	}
	if (!err) {
		ls->w = &b->workers[b->nlisteners % b->nworkers];
		b->listeners[b->nlisteners++] = ls;
	}
	pthread_mutex_unlock(&b->state_lock);
	if (err) {
		mqbi_listener_free(b, ls);
		return err;
	}
	/* From here it is the broker's (freed at destroy), opened or not. */
	err = open_socket(b, ls);
	if (!err) {
		mqbi_worker_call(ls->w, watch_listener, ls);
		if (ls->fd < 0)
			err = MQB_ERR_IO;
	}
	if (err) {
		ls->removed = true;
		return err;
	}
	mqbi_log(b, MQB_LOG_NOTICE, "net", NULL, "listening on %s:%d (listener.%s.%s)",
	         ls->cfg.host, ls->port, ls->cfg.type, ls->cfg.name);
	return MQB_OK;
}

mqb_err mqbi_listeners_open(mqb_broker *b)
{
	size_t n = mqbi_cfg_listener_count(b->cfg);
	for (size_t i = 0; i < n; i++) {
		mqb_err err = mqbi_listener_add(b, mqbi_cfg_listener(b->cfg, i));
		if (err) {
			for (unsigned j = 0; j < b->nlisteners; j++)
				close_listener(b->listeners[j]->w, b->listeners[j]);
			return err;
		}
	}
	return MQB_OK;
}

void mqbi_worker_close_listeners(mqbi_worker *w)
{
	mqb_broker *b = w->broker;
	pthread_mutex_lock(&b->state_lock);
	for (unsigned i = 0; i < b->nlisteners; i++)
		if (b->listeners[i]->w == w)
			close_listener(w, b->listeners[i]);
	pthread_mutex_unlock(&b->state_lock);
}

MQB_API mqb_err mqb_broker_open_listener(mqb_broker *b, const char *type, const char *name,
                                         const char *address, const char *const *settings)
{
	if (!b || !type || !name || !address)
		return MQB_ERR_INVAL;
	int st = atomic_load(&b->state);
	if (st != MQBI_BS_RUNNING)
		return MQB_ERR_STATE;
	if (strlen(type) > 7 || strlen(name) > 63)
		return MQB_ERR_INVAL;
	/* The registry parses and checks the settings like config keys. */
	mqb_config *tmp;
	mqb_err err = mqb_config_create(&tmp, &b->alloc);
	if (err)
		return err;
	char key[160], why[256];
	snprintf(key, sizeof key, "listener.%s.%s", type, name);
	err = mqb_config_set(tmp, key, address, why, sizeof why);
	for (size_t i = 0; !err && settings && settings[i]; i += 2) {
		if (!settings[i + 1] || strlen(settings[i]) > 64) {
			err = MQB_ERR_INVAL;
			break;
		}
		snprintf(key, sizeof key, "listener.%s.%s.%s", type, name, settings[i]);
		err = mqb_config_set(tmp, key, settings[i + 1], why, sizeof why);
	}
	if (err)
		mqbi_log(b, MQB_LOG_ERROR, "net", NULL, "listener %s.%s: %s", type, name, why);
	const mqbi_listener_cfg *cfg = NULL;
	for (size_t i = 0; !err && i < mqbi_cfg_listener_count(tmp); i++) {
		const mqbi_listener_cfg *l = mqbi_cfg_listener(tmp, i);
		if (strcmp(l->type, type) == 0 && strcmp(l->name, name) == 0)
			cfg = l;
	}
	if (!err && !cfg)
		err = MQB_ERR_INVAL; /* "off" */
	if (!err)
		err = mqbi_listener_add(b, cfg);
	mqb_config_destroy(tmp);
	return err == MQB_ERR_PARSE || err == MQB_ERR_RANGE || err == MQB_ERR_NOTFOUND
	               ? MQB_ERR_INVAL
	               : err;
}

MQB_API mqb_err mqb_broker_add_listener(mqb_broker *b, const char *name, const char *address)
{
	return mqb_broker_open_listener(b, "tcp", name, address, NULL);
}

MQB_API mqb_err mqb_broker_remove_listener(mqb_broker *b, const char *name)
{
	if (!b || !name)
		return MQB_ERR_INVAL;
	pthread_mutex_lock(&b->state_lock);
	mqbi_listener *ls = find(b, name);
	if (ls)
		ls->removed = true;
	pthread_mutex_unlock(&b->state_lock);
	if (!ls)
		return MQB_ERR_NOTFOUND;
	mqbi_worker_call(ls->w, close_listener, ls);
	mqbi_log(b, MQB_LOG_NOTICE, "net", NULL, "listener %s closed", name);
	return MQB_OK;
}

MQB_API mqb_err mqb_broker_listener_port(mqb_broker *b, const char *name, int *port)
{
	if (!b || !name || !port)
		return MQB_ERR_INVAL;
	pthread_mutex_lock(&b->state_lock);
	mqbi_listener *ls = find(b, name);
	int p = ls ? ls->port : 0;
	bool open = ls && ls->fd >= 0;
	pthread_mutex_unlock(&b->state_lock);
	if (!ls)
		return atomic_load(&b->state) == MQBI_BS_CREATED ? MQB_ERR_STATE : MQB_ERR_NOTFOUND;
	if (!open)
		return MQB_ERR_STATE;
	*port = p;
	return MQB_OK;
}
