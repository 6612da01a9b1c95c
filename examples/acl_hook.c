/* acl_hook: per-device topic permissions in an `authorize` hook.
 * A device (a client without user name) may publish only under
 * devices/<its client id>/# and subscribe only to commands/<its client id>/#;
 * anything else is refused. The back end (user name "backend", password from
 * $ACL_BACKEND_PASSWORD, default "backend-secret") may do anything. Every
 * subscription is granted at most QoS 1. Usage: acl_hook [PORT]  (0 = any port) */
#define _POSIX_C_SOURCE 200809L
#include <mqttbroker.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static mqb_broker *broker;
static const char *backend_password = "backend-secret";

/* Lets the back end in by password; devices fall through to allow_anonymous. */
static mqb_verdict authenticate(void *user, const mqb_auth_request *req, mqb_auth_ticket *ticket)
{
	(void)user, (void)ticket;
	if (!req->username)
		return MQB_IGNORE;
	size_t len = strlen(backend_password);
	if (strcmp(req->username, "backend") == 0 && req->password && req->password_len == len &&
	    memcmp(req->password, backend_password, len) == 0)
		return MQB_ALLOW;
	return MQB_DENY; /* CONNACK 0x86 (3.x: 0x04) */
}

/* 1 if `topic` is prefix + id, or a topic or filter below it. */
static int under(const char *topic, const char *prefix, const char *id)
{
	size_t p = strlen(prefix), n = strlen(id);
	return strncmp(topic, prefix, p) == 0 && strncmp(topic + p, id, n) == 0 &&
	       (topic[p + n] == '\0' || topic[p + n] == '/');
}

/* Called on the client's loop thread for each PUBLISH and each filter of a
 * SUBSCRIBE. MQB_DENY answers PUBACK/PUBREC 0x87 (a QoS 0 message is dropped)
 * or SUBACK 0x87 (3.x: 0x80). */
static mqb_verdict authorize(void *user, const mqb_client *c, mqb_action action, const char *topic,
                             int *qos)
{
	(void)user;
	if (action == MQB_ACTION_SUBSCRIBE && *qos > 1)
		*qos = 1; /* granted QoS: SUBACK says 1 and deliveries are QoS 1 at most */
	const char *username = mqb_client_username(c);
	if (username && strcmp(username, "backend") == 0)
		return MQB_ALLOW; /* only the back end got past authenticate() with a name */
	const char *id = mqb_client_id(c);
	/* A '/' in the id would reach into another device's tree, a '+' or '#'
	 * would turn commands/<id>/# into a wildcard over every device. */
	if (!*id || strpbrk(id, "/+#"))
		return MQB_DENY;
	if (action == MQB_ACTION_PUBLISH)
		return under(topic, "devices/", id) ? MQB_ALLOW : MQB_DENY;
	return under(topic, "commands/", id) ? MQB_ALLOW : MQB_DENY;
}

static void log_line(void *user, const mqb_log_record *r)
{
	(void)user;
	fprintf(stderr, "%s %s: %s%s%s\n", mqb_log_level_name(r->level), r->module,
	        r->client_id ? r->client_id : "", r->client_id ? ": " : "", r->message);
}

static void on_signal(int sig)
{
	(void)sig;
	mqb_broker_stop(broker); /* async-signal-safe */
}

static void *stdin_watch(void *arg) /* stops the broker at the end of input */
{
	(void)arg;
	char buf[256];
	while (read(0, buf, sizeof buf) > 0)
		;
	mqb_broker_stop(broker);
	return NULL;
}

int main(int argc, char **argv)
{
	char addr[64], err[256] = "";
	mqb_config *cfg;
	mqb_err e;
	if (getenv("ACL_BACKEND_PASSWORD"))
		backend_password = getenv("ACL_BACKEND_PASSWORD");
	snprintf(addr, sizeof addr, "127.0.0.1:%s", argc > 1 ? argv[1] : "1883");
	if ((e = mqb_config_create(&cfg, NULL)))
		return 1;
	mqb_config_set_log(cfg, log_line, NULL, MQB_LOG_NOTICE);
	/* Devices present no credentials: their identity is the client id they
	 * connect with (gateway_auth.c shows how to check them). The default,
	 * "loopback", would admit them only from this machine. */
	if (!(e = mqb_config_set(cfg, "listener.tcp.default", addr, err, sizeof err)) &&
	    !(e = mqb_config_set(cfg, "allow_anonymous", "true", err, sizeof err)))
		e = mqb_broker_create(&broker, cfg);
	mqb_config_destroy(cfg); /* the broker keeps its own copy */
	if (e) {
		fprintf(stderr, "acl_hook: %s %s\n", mqb_strerror(e), err);
		return 1;
	}
	mqb_hooks hooks = {.authenticate = authenticate, .authorize = authorize};
	int port = 0;
	if ((e = mqb_broker_set_hooks(broker, &hooks)) || (e = mqb_broker_start(broker)) ||
	    (e = mqb_broker_listener_port(broker, "default", &port))) {
		fprintf(stderr, "acl_hook: %s\n", mqb_strerror(e));
		mqb_broker_destroy(broker);
		return 1;
	}
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	pthread_t watcher;
	if (pthread_create(&watcher, NULL, stdin_watch, NULL) != 0)
		return 1; /* exiting ends the broker's threads too */
	printf("listening on %d\n", port);
	fflush(stdout);

	mqb_broker_wait(broker); /* returns once mqb_broker_stop() has run its course */
	sa.sa_handler = SIG_IGN; /* the broker is about to go: nothing may stop it now */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	pthread_cancel(watcher); /* blocked in read(), a cancellation point */
	pthread_join(watcher, NULL);
	mqb_broker_destroy(broker);
	return 0;
}
