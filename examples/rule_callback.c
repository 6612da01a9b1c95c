/* rule_callback: an in-process subscription as a small rule engine. Readings
 * on sensors/<id>/temp (a number) are aggregated per sensor; after every N
 * readings (default 5) the window's count/min/max/avg per sensor is published
 * to summary/temp as JSON with MQTT 5 user properties, and a new window starts:
 *   {"s1":{"count":2,"min":20.00,"max":22.00,"avg":21.00},"s2":{...}}
 *   readings=5  sensors=2  window=1
 * Usage: rule_callback [PORT [N]]  (PORT 0 = any port) */
#define _POSIX_C_SOURCE 200809L
#include <mqttbroker.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static mqb_broker *broker;

typedef struct aggregate {
	pthread_mutex_t lock; /* the callback runs on a broker thread, not main's */
	unsigned every, readings, nsensors, seq; /* seq: number of the window */
	struct {
		char id[32];
		unsigned count;
		double min, max, sum;
	} s[64];
} aggregate;
static aggregate temps = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* Called on a loop thread for each matching message; `m` is valid only during
 * the call. It may publish (mqb_publish() is thread-safe) but must not block. */
static void on_reading(void *user, const mqb_message *m)
{
	aggregate *r = user; /* as passed to mqb_subscribe() */
	char text[32], *end, json[8192], n1[16], n2[16], n3[16];
	const char *id = m->topic + strlen("sensors/");
	size_t idlen = strcspn(id, "/"), len = 0;
	if (m->payload_len == 0 || m->payload_len >= sizeof text || idlen >= sizeof r->s[0].id ||
	    strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.") < idlen)
		return; /* not a reading of ours (the id must need no JSON escaping) */
	memcpy(text, m->payload, m->payload_len);
	text[m->payload_len] = '\0';
	double v = strtod(text, &end);
	if (end == text || *end != '\0')
		return;
	pthread_mutex_lock(&r->lock);
	unsigned i = 0;
	while (i < r->nsensors && (strncmp(r->s[i].id, id, idlen) || r->s[i].id[idlen]))
		i++;
	if (i == sizeof r->s / sizeof r->s[0]) {
		pthread_mutex_unlock(&r->lock);
		return; /* table full */
	}
	if (i == r->nsensors) { /* first reading of this sensor in the window */
		r->nsensors++;
		memcpy(r->s[i].id, id, idlen);
		r->s[i].id[idlen] = '\0';
		r->s[i].count = 0;
		r->s[i].sum = 0;
		r->s[i].min = r->s[i].max = v;
	}
	r->s[i].min = v < r->s[i].min ? v : r->s[i].min;
	r->s[i].max = v > r->s[i].max ? v : r->s[i].max;
	r->s[i].count++;
	r->s[i].sum += v;
	if (++r->readings < r->every) {
		pthread_mutex_unlock(&r->lock);
		return;
	}
	for (i = 0; i < r->nsensors && len < sizeof json - 128; i++)
		len += (size_t)snprintf(
		        json + len, sizeof json - len,
		        "%s\"%s\":{\"count\":%u,\"min\":%.2f,\"max\":%.2f,\"avg\":%.2f}",
		        i ? "," : "{", r->s[i].id, r->s[i].count, r->s[i].min, r->s[i].max,
		        r->s[i].sum / r->s[i].count);
	snprintf(json + len, sizeof json - len, "}");
	snprintf(n1, sizeof n1, "%u", r->readings);
	snprintf(n2, sizeof n2, "%u", r->nsensors);
	snprintf(n3, sizeof n3, "%u", ++r->seq);
	r->readings = r->nsensors = 0; /* a new window */
	pthread_mutex_unlock(&r->lock);

	mqb_user_property props[] = {{"readings", n1}, {"sensors", n2}, {"window", n3}};
	mqb_message summary = {.topic = "summary/temp",
	                       .payload = json,
	                       .payload_len = strlen(json),
	                       .qos = 1,
	                       .payload_utf8 = 1,
	                       .content_type = "application/json",
	                       .user_properties = props,
	                       .user_property_count = 3};
	mqb_err e = mqb_publish(broker, &summary); /* copied before it returns */
	if (e)
		fprintf(stderr, "rule_callback: summary not published: %s\n", mqb_strerror(e));
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
	temps.every = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 10) : 5;
	if (temps.every == 0)
		return 2;
	if ((e = mqb_config_create(&cfg, NULL)))
		return 1;
	mqb_config_set_log(cfg, log_line, NULL, MQB_LOG_NOTICE);
	/* allow_anonymous keeps its default, "loopback": clients on this machine
	 * connect without credentials. */
	if (!(e = mqb_config_set(cfg, "listener.tcp.default", addr, err, sizeof err)))
		e = mqb_broker_create(&broker, cfg);
	mqb_config_destroy(cfg); /* the broker keeps its own copy */
	if (e) {
		fprintf(stderr, "rule_callback: %s %s\n", mqb_strerror(e), err);
		return 1;
	}
	mqb_subscription *sub;
	int port = 0;
	if ((e = mqb_broker_start(broker)) ||
	    (e = mqb_subscribe(broker, "sensors/+/temp", on_reading, &temps, &sub)) ||
	    (e = mqb_broker_listener_port(broker, "default", &port))) {
		fprintf(stderr, "rule_callback: %s\n", mqb_strerror(e));
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
	mqb_broker_destroy(broker); /* ends the subscription too */
	return 0;
}
