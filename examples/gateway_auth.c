/* gateway_auth: checks each CONNECT's user name and password against a device
 * table on a worker thread, as a gateway would after a database or HTTP lookup.
 * The hook answers MQB_PENDING and queues the request; the worker completes the
 * ticket with mqb_auth_complete(). Usage: gateway_auth [PORT]  (0 = any port) */
#define _POSIX_C_SOURCE 200809L
#include <mqttbroker.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const struct {
	const char *username, *password;
} devices[] = {{"thermo-1", "hunter2"}, {"valve-7", "open-sesame"}, {"meter-3", "kWh"}};

typedef struct job { /* one pending CONNECT: the hook's request is copied */
	struct job *next;
	mqb_auth_ticket *ticket;
	char username[64], password[64];
	size_t password_len;
} job;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static job *head, **tail = &head;
static int quitting;
static mqb_broker *broker;

/* Runs on a loop thread: must not block, so it only queues the work. */
static mqb_verdict authenticate(void *user, const mqb_auth_request *req, mqb_auth_ticket *ticket)
{
	(void)user;
	job *j;
	if (!req->username || !req->password || strlen(req->username) >= sizeof j->username ||
	    req->password_len > sizeof j->password || !(j = calloc(1, sizeof *j)))
		return MQB_DENY; /* answered at once: CONNACK 0x86 (3.x: 0x04) */
	strcpy(j->username, req->username);
	memcpy(j->password, req->password, req->password_len);
	j->password_len = req->password_len;
	j->ticket = ticket;
	pthread_mutex_lock(&lock);
	*tail = j;
	tail = &j->next;
	pthread_cond_signal(&cond);
	pthread_mutex_unlock(&lock);
	return MQB_PENDING; /* the client's packets wait until the ticket is completed */
}

static int lookup(const char *username, const char *password, size_t len)
{
	struct timespec delay = {0, 20 * 1000 * 1000}; /* stands in for the database */
	nanosleep(&delay, NULL);
	for (size_t i = 0; i < sizeof devices / sizeof devices[0]; i++)
		if (strcmp(devices[i].username, username) == 0)
			return strlen(devices[i].password) == len &&
			       memcmp(devices[i].password, password, len) == 0;
	return 0;
}

/* Completes every ticket exactly once; at shutdown it denies what is left. */
static void *auth_worker(void *arg)
{
	(void)arg;
	for (;;) {
		pthread_mutex_lock(&lock);
		while (!head && !quitting)
			pthread_cond_wait(&cond, &lock);
		job *j = head;
		int stop = quitting;
		if (j && !(head = j->next))
			tail = &head;
		pthread_mutex_unlock(&lock);
		if (!j)
			return NULL; /* quitting and the queue is empty */
		int ok = !stop && lookup(j->username, j->password, j->password_len);
		if (mqb_auth_complete(j->ticket, ok ? MQB_ALLOW : MQB_DENY) == MQB_ERR_NOTFOUND)
			fprintf(stderr, "gateway: %s went away before its lookup ended\n",
			        j->username);
		free(j);
	}
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
	snprintf(addr, sizeof addr, "127.0.0.1:%s", argc > 1 ? argv[1] : "1883");
	if ((e = mqb_config_create(&cfg, NULL)))
		return 1;
	mqb_config_set_log(cfg, log_line, NULL, MQB_LOG_NOTICE);
	/* Every client must be in the device table; should the hook ever answer
	 * MQB_IGNORE, the client is refused rather than let in anonymously. */
	if (!(e = mqb_config_set(cfg, "listener.tcp.default", addr, err, sizeof err)) &&
	    !(e = mqb_config_set(cfg, "allow_anonymous", "false", err, sizeof err)))
		e = mqb_broker_create(&broker, cfg);
	mqb_config_destroy(cfg); /* the broker keeps its own copy */
	if (e) {
		fprintf(stderr, "gateway: %s %s\n", mqb_strerror(e), err);
		return 1;
	}
	mqb_hooks hooks = {.authenticate = authenticate};
	int port = 0;
	if ((e = mqb_broker_set_hooks(broker, &hooks)) || (e = mqb_broker_start(broker)) ||
	    (e = mqb_broker_listener_port(broker, "default", &port))) {
		fprintf(stderr, "gateway: %s\n", mqb_strerror(e));
		mqb_broker_destroy(broker);
		return 1;
	}
	pthread_t worker, watcher;
	if (pthread_create(&worker, NULL, auth_worker, NULL) != 0)
		return 1;
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
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
	pthread_mutex_lock(&lock); /* every ticket is completed before the broker goes */
	quitting = 1;
	pthread_cond_signal(&cond);
	pthread_mutex_unlock(&lock);
	pthread_join(worker, NULL);
	mqb_broker_destroy(broker);
	return 0;
}
