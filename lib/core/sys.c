/* $SYS topics (EMQX layout): $SYS/brokers/<node>/version, uptime, datetime,
 * stats and metrics every sys.interval, and client connected/disconnected
 * events. Published by worker 0 (events by the client's worker). */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/core.h"
#include "core/topic.h"

void mqbi_sys_publish(mqbi_worker *w, const char *subtopic, const char *payload, bool retain)
{
	mqb_broker *b = w->broker;
	char topic[512];
	int n = snprintf(topic, sizeof topic, "$SYS/brokers/%s/%s", b->node, subtopic);
	if (n < 0 || (size_t)n >= sizeof topic || !mqbi_topic_name_valid(topic, (size_t)n))
		return;
	mqbi_msg *m =
	        mqbi_msg_create(&b->alloc, topic, (size_t)n, NULL, 0, payload, strlen(payload), 0,
	                        retain, "", 0, NULL, false, 0, mqbi_loop_now(w->loop));
	if (!m)
		return;
	if (retain)
		mqbi_retain_store(b, m);
	mqbi_route_message(w, m);
	mqbi_msg_unref(&b->alloc, m);
}

static void format_uptime(uint64_t s, char *out, size_t len)
{
	unsigned d = (unsigned)(s / 86400), h = (unsigned)(s / 3600 % 24),
	         m = (unsigned)(s / 60 % 60);
	unsigned sec = (unsigned)(s % 60);
	if (d)
		snprintf(out, len, "%u days, %u hours, %u minutes, %u seconds", d, h, m, sec);
	else if (h)
		snprintf(out, len, "%u hours, %u minutes, %u seconds", h, m, sec);
	else if (m)
		snprintf(out, len, "%u minutes, %u seconds", m, sec);
	else
		snprintf(out, len, "%u seconds", sec);
}

static void publish_u64(mqbi_worker *w, const char *sub, uint64_t v)
{
	char buf[32];
	snprintf(buf, sizeof buf, "%llu", (unsigned long long)v);
	mqbi_sys_publish(w, sub, buf, false);
}

static void sys_tick(mqbi_loop *l, mqbi_timer *t)
{
	mqbi_worker *w = mqbi_loop_data(l);
	mqb_broker *b = w->broker;
	char buf[128];
	format_uptime((mqbi_loop_now(l) - b->started_at) / 1000, buf, sizeof buf);
	mqbi_sys_publish(w, "uptime", buf, false);
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
	mqbi_sys_publish(w, "datetime", buf, false);

	mqb_metrics m;
	mqb_broker_metrics(b, &m);
	publish_u64(w, "stats/connections/count", m.connections);
	publish_u64(w, "stats/sessions/count", m.sessions);
	publish_u64(w, "stats/subscriptions/count", m.subscriptions);
	publish_u64(w, "stats/topics/count", mqbi_trie_filter_count(b->trie));
	publish_u64(w, "stats/routes/count", mqbi_trie_filter_count(b->trie));
	publish_u64(w, "stats/retained/count", m.retained);
	publish_u64(w, "metrics/messages/received", m.messages_received);
	publish_u64(w, "metrics/messages/sent", m.messages_sent);
	publish_u64(w, "metrics/messages/dropped", m.messages_dropped);
	publish_u64(w, "metrics/messages/expired", m.messages_expired);
	publish_u64(w, "metrics/publishers/held", m.publishers_held);
	publish_u64(w, "metrics/tls/handshakes", m.tls_handshakes);
	publish_u64(w, "metrics/tls/handshake_errors", m.tls_handshake_errors);
	if (b->journal) {
		publish_u64(w, "metrics/store/commits", m.store_commits);
		publish_u64(w, "metrics/store/records", m.store_records);
		publish_u64(w, "metrics/store/bytes", m.store_bytes);
		publish_u64(w, "metrics/store/dropped", m.store_dropped);
		publish_u64(w, "metrics/store/refused", m.store_refused);
		publish_u64(w, "metrics/store/errors", m.store_errors);
		publish_u64(w, "metrics/store/backlog", m.store_backlog);
	}
	publish_u64(w, "metrics/packets/received", m.packets_received);
	publish_u64(w, "metrics/packets/sent", m.packets_sent);
	publish_u64(w, "metrics/bytes/received", m.bytes_received);
	publish_u64(w, "metrics/bytes/sent", m.bytes_sent);
	mqbi_timer_start(l, t, mqbi_lim(b)->sys_interval, sys_tick);
}

void mqbi_sys_start(mqbi_worker *w)
{
	mqb_broker *b = w->broker;
	if (w->index != 0)
		return;
	mqbi_sys_publish(w, "version", MQB_VERSION_STRING, true);
	mqbi_sys_publish(w, "sysdescr", "libmqttbroker", true);
	if (mqbi_lim(b)->sys_interval)
		mqbi_timer_start(w->loop, &w->sys_timer, mqbi_lim(b)->sys_interval, sys_tick);
}

/* Appends s as a JSON string. */
static size_t json_str(char *out, size_t cap, const char *s)
{
	size_t n = 0;
	if (n < cap)
		out[n++] = '"';
	for (; s && *s && n + 7 < cap; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\') {
			out[n++] = '\\';
			out[n++] = (char)ch;
		} else if (ch < 0x20) {
			n += (size_t)snprintf(out + n, cap - n, "\\u%04x", ch);
		} else {
			out[n++] = (char)ch;
		}
	}
	if (n < cap)
		out[n++] = '"';
	return n;
}

void mqbi_sys_client_event(mqbi_client *c, bool connected)
{
	mqbi_worker *w = c->w;
	mqb_broker *b = w->broker;
	int st = atomic_load(&b->state);
	if (st == MQBI_BS_STOPPED || st == MQBI_BS_CREATED || !c->client_id)
		return;
	unsigned long long ms = (unsigned long long)mqbi_wall_ms();
	char json[1024];
	size_t n = 0;
	n += (size_t)snprintf(json + n, sizeof json - n, "{\"clientid\":");
	n += json_str(json + n, sizeof json - n, c->client_id);
	n += (size_t)snprintf(json + n, sizeof json - n, ",\"username\":");
	if (c->username)
		n += json_str(json + n, sizeof json - n, c->username);
	else
		n += (size_t)snprintf(json + n, sizeof json - n, "null");
	if (n >= sizeof json - 200)
		return;
	if (connected) {
		char ip[64];
		snprintf(ip, sizeof ip, "%s", c->peer);
		char *colon = strrchr(ip, ':');
		if (colon)
			*colon = '\0';
		n += (size_t)snprintf(json + n, sizeof json - n,
		                      ",\"ipaddress\":\"%s\",\"proto_ver\":%u,\"keepalive\":%u,"
		                      "\"connack\":0,\"ts\":%llu}",
		                      ip, c->level, c->keepalive, ms);
	} else {
		n += (size_t)snprintf(json + n, sizeof json - n, ",\"reason\":\"%s\",\"ts\":%llu}",
		                      mqbi_reason_name(c->disconnect_reason), ms);
	}
	char sub[384];
	int k = snprintf(sub, sizeof sub, "clients/%s/%s", c->client_id,
	                 connected ? "connected" : "disconnected");
	if (k < 0 || (size_t)k >= sizeof sub)
		return;
	mqbi_sys_publish(w, sub, json, false);
}
