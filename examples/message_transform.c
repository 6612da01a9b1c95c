/* message_transform: an `on_publish` hook that edits messages on their way in.
 * - sensors/<id>/celsius: the message is rewritten in place: it goes on as
 *   sensors/<id>/fahrenheit with the converted value ("100" -> "212.0"), so
 *   nothing is delivered on the celsius topic. A payload that is not a number
 *   is refused with reason 0x99 (Payload format invalid).
 * - blocked/#: dropped; an MQTT 5 publisher of QoS 1/2 gets reason 0x87.
 * Usage: message_transform [PORT]  (0 = any port) */
#define _POSIX_C_SOURCE 200809L
#include <mqttbroker.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static mqb_broker *broker;

/* Runs on the publisher's loop thread (for mqb_publish(): c == NULL), before the
 * message is stored or routed. Fields may be pointed at the hook's own memory;
 * the broker copies it right after the hook returns, so it must outlive the
 * call: thread-local buffers, not locals (hooks run on several threads). */
static _Thread_local char topic[256], payload[32];

static mqb_verdict on_publish(void *user, const mqb_client *c, mqb_message *m, int *reason)
{
	(void)user, (void)c;
	static const char prefix[] = "sensors/";
	char text[32], *end;
	if (mqb_topic_matches("blocked/#", m->topic)) {
		*reason = 0x87; /* Not authorized; a QoS 0 message is dropped silently */
		return MQB_DENY;
	}
	if (!mqb_topic_matches("sensors/+/celsius", m->topic))
		return MQB_ALLOW; /* unchanged */
	if (m->payload_len == 0 || m->payload_len >= sizeof text)
		goto invalid;
	memcpy(text, m->payload, m->payload_len);
	text[m->payload_len] = '\0';
	double celsius = strtod(text, &end);
	if (end == text || *end != '\0')
		goto invalid;
	const char *id = m->topic + sizeof prefix - 1;
	int idlen = (int)(strchr(id, '/') - id);
	if (snprintf(topic, sizeof topic, "sensors/%.*s/fahrenheit", idlen, id) >=
	    (int)sizeof topic)
		goto invalid; /* an id this long is not one of ours */
	snprintf(payload, sizeof payload, "%.1f", celsius * 9 / 5 + 32);
	m->topic = topic;
	m->payload = payload;
	m->payload_len = strlen(payload);
	m->payload_utf8 = 1; /* MQTT 5 receivers see Payload Format Indicator 1 */
	return MQB_ALLOW;
invalid:
	*reason = 0x99; /* Payload format invalid */
	return MQB_DENY;
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
	/* allow_anonymous keeps its default, "loopback": clients on this machine
	 * connect without credentials. */
	if (!(e = mqb_config_set(cfg, "listener.tcp.default", addr, err, sizeof err)))
		e = mqb_broker_create(&broker, cfg);
	mqb_config_destroy(cfg); /* the broker keeps its own copy */
	if (e) {
		fprintf(stderr, "message_transform: %s %s\n", mqb_strerror(e), err);
		return 1;
	}
	mqb_hooks hooks = {.on_publish = on_publish};
	int port = 0;
	if ((e = mqb_broker_set_hooks(broker, &hooks)) || (e = mqb_broker_start(broker)) ||
	    (e = mqb_broker_listener_port(broker, "default", &port))) {
		fprintf(stderr, "message_transform: %s\n", mqb_strerror(e));
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
