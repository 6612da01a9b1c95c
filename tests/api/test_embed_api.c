/* The embedding API seen from a host: in-process subscriptions and publishes
 * with MQTT 5 properties, topic helpers, the authorize / on_publish /
 * on_deliver / on_event hooks, introspection and control, run-time listeners,
 * reconfiguration and metrics. Everything a client sees is checked on the
 * wire with a raw MQTT client. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mqttbroker.h>

#include "mqtt_raw.h"

#define WAIT_MS 10000

/* Copies of messages handed to the host ------------------------------------ */

typedef struct msg_copy {
	char topic[256];
	char payload[256];
	size_t payload_len;
	int qos, retain;
	int has_expiry;
	uint32_t expiry;
	int utf8;
	int has_ctype, has_rtopic, has_corr;
	char ctype[64], rtopic[64];
	uint8_t corr[64];
	size_t corr_len;
	int nup;
	char upk[8][32], upv[8][32];
	int has_client_id, has_username;
	char client_id[64], username[64];
} msg_copy;

#define MQ_CAP 512
typedef struct msg_queue {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int n;
	msg_copy m[MQ_CAP];
} msg_queue;

static void copy_str(char *dst, size_t cap, const char *s)
{
	snprintf(dst, cap, "%s", s ? s : "");
}

static void mq_init(msg_queue *q)
{
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->cv, NULL);
	q->n = 0;
}

static void mq_push(msg_queue *q, const mqb_message *m)
{
	pthread_mutex_lock(&q->mu);
	if (q->n < MQ_CAP) {
		msg_copy *c = &q->m[q->n];
		memset(c, 0, sizeof *c);
		copy_str(c->topic, sizeof c->topic, m->topic);
		c->payload_len = m->payload_len;
		memcpy(c->payload, m->payload,
		       m->payload_len < sizeof c->payload ? m->payload_len : sizeof c->payload);
		c->qos = m->qos;
		c->retain = m->retain;
		c->has_expiry = m->has_message_expiry;
		c->expiry = m->message_expiry;
		c->utf8 = m->payload_utf8;
		if ((c->has_ctype = m->content_type != NULL))
			copy_str(c->ctype, sizeof c->ctype, m->content_type);
		if ((c->has_rtopic = m->response_topic != NULL))
			copy_str(c->rtopic, sizeof c->rtopic, m->response_topic);
		if ((c->has_corr = m->correlation_data != NULL)) {
			c->corr_len = m->correlation_len < 64 ? m->correlation_len : 64;
			memcpy(c->corr, m->correlation_data, c->corr_len);
		}
		for (size_t i = 0; i < m->user_property_count && i < 8; i++) {
			copy_str(c->upk[i], 32, m->user_properties[i].key);
			copy_str(c->upv[i], 32, m->user_properties[i].value);
			c->nup++;
		}
		if ((c->has_client_id = m->client_id != NULL))
			copy_str(c->client_id, sizeof c->client_id, m->client_id);
		if ((c->has_username = m->username != NULL))
			copy_str(c->username, sizeof c->username, m->username);
		q->n++;
	}
	pthread_cond_broadcast(&q->cv);
	pthread_mutex_unlock(&q->mu);
}

static int mq_count(msg_queue *q)
{
	pthread_mutex_lock(&q->mu);
	int n = q->n;
	pthread_mutex_unlock(&q->mu);
	return n;
}

/* Waits until the queue holds at least n messages. */
static int mq_wait(msg_queue *q, int n, int ms)
{
	int64_t deadline = mr_now_ms() + ms;
	while (mq_count(q) < n && mr_now_ms() < deadline)
		mr_sleep_ms(5);
	return mq_count(q) >= n;
}

static void on_message(void *user, const mqb_message *m)
{
	mq_push(user, m);
}

/* Events ------------------------------------------------------------------ */

typedef struct ev_copy {
	mqb_event_type type;
	char client_id[64], username[64], topic[128], text[128];
	int has_client_id, has_username, has_peer, has_topic, has_text;
	int reason, qos;
} ev_copy;

#define EV_CAP 4096
static pthread_mutex_t ev_mu = PTHREAD_MUTEX_INITIALIZER;
static ev_copy evs[EV_CAP];
static int n_evs;

static mqb_broker *b;
static int port;
static void hook_actions(const mqb_event *ev);

static void on_event(void *user, const mqb_event *ev)
{
	(void)user;
	pthread_mutex_lock(&ev_mu);
	if (n_evs < EV_CAP) {
		ev_copy *e = &evs[n_evs++];
		memset(e, 0, sizeof *e);
		e->type = ev->type;
		if ((e->has_client_id = ev->client_id != NULL))
			copy_str(e->client_id, sizeof e->client_id, ev->client_id);
		if ((e->has_username = ev->username != NULL))
			copy_str(e->username, sizeof e->username, ev->username);
		e->has_peer = ev->peer != NULL;
		if ((e->has_topic = ev->topic != NULL))
			copy_str(e->topic, sizeof e->topic, ev->topic);
		if ((e->has_text = ev->text != NULL))
			copy_str(e->text, sizeof e->text, ev->text);
		e->reason = ev->reason;
		e->qos = ev->qos;
	}
	pthread_mutex_unlock(&ev_mu);
	hook_actions(ev);
}

/* Number of events of `type` for `client_id` (NULL: any). */
static int ev_count(mqb_event_type type, const char *client_id)
{
	int n = 0;
	pthread_mutex_lock(&ev_mu);
	for (int i = 0; i < n_evs; i++)
		if (evs[i].type == type && (!client_id || strcmp(evs[i].client_id, client_id) == 0))
			n++;
	pthread_mutex_unlock(&ev_mu);
	return n;
}

/* Waits for the n-th (1-based) event of `type` for `client_id`; copies it. */
static int ev_wait(mqb_event_type type, const char *client_id, int nth, ev_copy *out, int ms)
{
	int64_t deadline = mr_now_ms() + ms;
	for (;;) {
		int k = 0;
		pthread_mutex_lock(&ev_mu);
		for (int i = 0; i < n_evs; i++)
			if (evs[i].type == type &&
			    (!client_id || strcmp(evs[i].client_id, client_id) == 0) &&
			    ++k == nth) {
				if (out)
					*out = evs[i];
				pthread_mutex_unlock(&ev_mu);
				return 1;
			}
		pthread_mutex_unlock(&ev_mu);
		if (mr_now_ms() >= deadline)
			return 0;
		mr_sleep_ms(5);
	}
}

/* Hooks ------------------------------------------------------------------- */

static pthread_mutex_t rec_mu = PTHREAD_MUTEX_INITIALIZER;
static char rec_pub_client[64], rec_pub_peer[64], rec_pub_listener[64];
static int rec_pub_proto, rec_pub_has_user, rec_host_pub_null = -1;
static char rec_authz_client[64], rec_authz_topic[128];
static int rec_authz_action = -1;
static char rec_auth_listener[64];

static mqb_verdict authenticate(void *user, const mqb_auth_request *req, mqb_auth_ticket *t)
{
	(void)user;
	(void)t;
	if (req->client_id && strcmp(req->client_id, "lx") == 0) {
		pthread_mutex_lock(&rec_mu);
		copy_str(rec_auth_listener, sizeof rec_auth_listener, req->listener);
		pthread_mutex_unlock(&rec_mu);
	}
	if (req->username && strcmp(req->username, "bad") == 0)
		return MQB_DENY;
	return MQB_ALLOW;
}

static mqb_verdict authorize(void *user, const mqb_client *c, mqb_action action, const char *topic,
                             int *qos)
{
	(void)user;
	if (strncmp(topic, "authz/", 6) == 0) {
		pthread_mutex_lock(&rec_mu);
		copy_str(rec_authz_client, sizeof rec_authz_client, mqb_client_id(c));
		copy_str(rec_authz_topic, sizeof rec_authz_topic, topic);
		rec_authz_action = (int)action;
		pthread_mutex_unlock(&rec_mu);
	}
	if (strncmp(topic, "deny/", 5) == 0)
		return MQB_DENY;
	if (action == MQB_ACTION_SUBSCRIBE && strcmp(topic, "lower/#") == 0) {
		*qos = 0;
		return MQB_ALLOW;
	}
	return MQB_IGNORE;
}

static __thread mqb_user_property tl_props[9];

static mqb_verdict on_publish(void *user, const mqb_client *c, mqb_message *m, int *reason)
{
	(void)user;
	if (strcmp(m->topic, "rewrite/in") == 0) {
		pthread_mutex_lock(&rec_mu);
		copy_str(rec_pub_client, sizeof rec_pub_client, c ? mqb_client_id(c) : "(null)");
		copy_str(rec_pub_peer, sizeof rec_pub_peer, c ? mqb_client_peer(c) : "(null)");
		copy_str(rec_pub_listener, sizeof rec_pub_listener,
		         c ? mqb_client_listener(c) : "");
		rec_pub_proto = c ? mqb_client_protocol(c) : -1;
		rec_pub_has_user = c ? mqb_client_username(c) != NULL : -1;
		pthread_mutex_unlock(&rec_mu);
		size_t n = m->user_property_count < 8 ? m->user_property_count : 8;
		for (size_t i = 0; i < n; i++)
			tl_props[i] = m->user_properties[i];
		tl_props[n].key = "added";
		tl_props[n].value = "yes";
		m->user_properties = tl_props;
		m->user_property_count = n + 1;
		m->topic = "rewrite/out";
		m->payload = "REWRITTEN";
		m->payload_len = 9;
		return MQB_ALLOW;
	}
	if (strcmp(m->topic, "rewrite/host") == 0) {
		pthread_mutex_lock(&rec_mu);
		rec_host_pub_null = c == NULL;
		pthread_mutex_unlock(&rec_mu);
	}
	if (strncmp(m->topic, "drop/", 5) == 0) {
		*reason = 0x99;
		return MQB_DENY;
	}
	if (strncmp(m->topic, "dropdef/", 8) == 0)
		return MQB_DENY;
	return MQB_IGNORE;
}

static mqb_verdict on_deliver(void *user, const mqb_client *to, const mqb_message *m)
{
	(void)user;
	if (strcmp(mqb_client_id(to), "skipme") == 0 && strncmp(m->topic, "dl/", 3) == 0)
		return MQB_DENY;
	return MQB_ALLOW;
}

/* Fixture ----------------------------------------------------------------- */

static mqb_config *make_cfg(void)
{
	mqb_config *cfg;
	char err[256] = "";
	ck_assert_int_eq(mqb_config_create(&cfg, NULL), MQB_OK);
	const char *kv[][2] = {{"listener.tcp.default", "127.0.0.1:0"},
	                       {"node.loop_threads", "2"},
	                       {"node.drain_timeout", "1s"},
	                       {"mqtt.max_mqueue_len", "5"},
	                       {"sys.interval", "0"}};
	for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++)
		ck_assert_msg(mqb_config_set(cfg, kv[i][0], kv[i][1], err, sizeof err) == MQB_OK,
		              "%s: %s", kv[i][0], err);
	return cfg;
}

static void setup(void)
{
	n_evs = 0;
	mqb_config *cfg = make_cfg();
	ck_assert_int_eq(mqb_broker_create(&b, cfg), MQB_OK);
	mqb_config_destroy(cfg);
	mqb_hooks h;
	memset(&h, 0, sizeof h);
	h.authenticate = authenticate;
	h.authorize = authorize;
	h.on_publish = on_publish;
	h.on_deliver = on_deliver;
	h.on_event = on_event;
	ck_assert_int_eq(mqb_broker_set_hooks(b, &h), MQB_OK);
	ck_assert_int_eq(mqb_broker_start(b), MQB_OK);
	ck_assert_int_eq(mqb_broker_listener_port(b, "default", &port), MQB_OK);
}

static void teardown(void)
{
	mqb_broker_stop(b);
	mqb_broker_wait(b);
	mqb_broker_destroy(b);
	b = NULL;
}

/* Client helpers ---------------------------------------------------------- */

static void send_free(int fd, mr_buf *m)
{
	ck_assert_int_eq(mr_send(fd, m), 0);
	mr_buf_free(m);
}

static int open_client(int proto, const char *id)
{
	int fd = mr_open_simple(port, proto, id);
	ck_assert_msg(fd >= 0, "client %s could not connect", id);
	return fd;
}

static int open_persistent(int proto, const char *id, uint32_t expiry, const char *user)
{
	mr_connect_opts o = {.proto = proto,
	                     .client_id = id,
	                     .clean = 0,
	                     .keepalive = 30,
	                     .username = user,
	                     .has_session_expiry = proto == 5,
	                     .session_expiry = expiry};
	int rc;
	int fd = mr_open(port, &o, &rc);
	ck_assert_msg(fd >= 0, "client %s: CONNACK %d", id, rc);
	return fd;
}

static void disconnect_client(int fd, int proto, uint8_t reason)
{
	mr_buf m = {0};
	mr_enc_disconnect(&m, proto, reason);
	send_free(fd, &m);
	ck_assert_int_eq(mr_wait_closed(fd, WAIT_MS), 1);
	close(fd);
}

static void expect_pub(int fd, int proto, const char *topic, const char *payload, mr_publish *out,
                       mr_packet *pkt)
{
	mr_packet p;
	mr_publish pub;
	ck_assert_msg(mr_next_publish(fd, proto, &p, &pub, WAIT_MS) == 1, "no PUBLISH for %s",
	              topic);
	ck_assert_str_eq(pub.topic, topic);
	if (payload) {
		ck_assert_int_eq(pub.payload_len, strlen(payload));
		ck_assert_int_eq(memcmp(pub.payload, payload, pub.payload_len), 0);
	}
	if (out) {
		*out = pub;
		*pkt = p; /* caller frees */
	} else {
		mr_packet_free(&p);
	}
}

/* Status copies ----------------------------------------------------------- */

typedef struct st_copy {
	int calls;
	char client_id[64], username[64], peer[64], listener[64];
	int has_username, has_peer, has_listener;
	int connected, protocol, keepalive;
	uint32_t session_expiry;
	size_t subscriptions, inflight, queued;
	uint64_t queued_bytes;
} st_copy;

static void on_status(void *user, const mqb_client_status *st)
{
	st_copy *c = user;
	c->calls++;
	copy_str(c->client_id, sizeof c->client_id, st->client_id);
	if ((c->has_username = st->username != NULL))
		copy_str(c->username, sizeof c->username, st->username);
	if ((c->has_peer = st->peer != NULL))
		copy_str(c->peer, sizeof c->peer, st->peer);
	if ((c->has_listener = st->listener != NULL))
		copy_str(c->listener, sizeof c->listener, st->listener);
	c->connected = st->connected;
	c->protocol = st->protocol;
	c->keepalive = st->keepalive;
	c->session_expiry = st->session_expiry;
	c->subscriptions = st->subscriptions;
	c->inflight = st->inflight;
	c->queued = st->queued;
	c->queued_bytes = st->queued_bytes;
}

static mqb_err get_status(const char *id, st_copy *out)
{
	memset(out, 0, sizeof *out);
	return mqb_broker_client(b, id, on_status, out);
}

/* Broker calls made from within a hook: publish and metrics are allowed there
 * (docs/EMBEDDING.md, "Threads"). */
static pthread_mutex_t ha_mu = PTHREAD_MUTEX_INITIALIZER;
static int ha_done, ha_publish_rc = -1, ha_publish2_rc = -1;
static uint64_t ha_connects, ha_connections;

static void hook_actions(const mqb_event *ev)
{
	if (ev->type != MQB_EVENT_CONNECTED || !ev->client_id || strcmp(ev->client_id, "hq") != 0)
		return;
	mqb_metrics m;
	mqb_broker_metrics(b, &m);
	int prc = (int)mqb_broker_publish(b, "hook/announce", "hq", 2, 1, 0);
	mqb_user_property up = {"from", "hook"};
	mqb_message msg;
	memset(&msg, 0, sizeof msg);
	msg.topic = "hook/props";
	msg.payload = "p";
	msg.payload_len = 1;
	msg.qos = 1;
	msg.user_properties = &up;
	msg.user_property_count = 1;
	int prc2 = (int)mqb_publish(b, &msg);
	pthread_mutex_lock(&ha_mu);
	ha_connects = m.connects;
	ha_connections = m.connections;
	ha_publish_rc = prc;
	ha_publish2_rc = prc2;
	ha_done = 1;
	pthread_mutex_unlock(&ha_mu);
}

/* ------------------------------------------------------------------------ */

START_TEST(test_topic_tables)
{
	static const struct {
		const char *filter, *topic;
		int match;
	} m[] = {
	        {"a/b", "a/b", 1},       {"a/b", "a/c", 0},     {"a/+", "a/b", 1},
	        {"a/+", "a/b/c", 0},     {"a/+", "a", 0},       {"a/+", "a/", 1},
	        {"a/#", "a", 1},         {"a/#", "a/b/c", 1},   {"a/#", "ab", 0},
	        {"#", "a/b", 1},         {"#", "/", 1},         {"+", "a", 1},
	        {"+", "/a", 0},          {"+/+", "/a", 1},      {"/+", "/a", 1},
	        {"a/+/c", "a//c", 1},    {"a/+/c", "a/b/d", 0}, {"+/b/#", "x/b", 1},
	        {"#", "$SYS/x", 0},      {"+/x", "$SYS/x", 0},  {"$SYS/#", "$SYS/x", 1},
	        {"$SYS/+", "$SYS/x", 1}, {"A", "a", 0},         {"a/b", "a/b/", 0},
	        {"a/b/", "a/b/", 1},     {"a//b", "a//b", 1},   {"sport/#", "sport", 1},
	};
	for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
		ck_assert_msg(mqb_topic_matches(m[i].filter, m[i].topic) == m[i].match,
		              "mqb_topic_matches(\"%s\", \"%s\") != %d", m[i].filter, m[i].topic,
		              m[i].match);

	static const struct {
		const char *s;
		int valid;
	} t[] = {{"a/b", 1},      {"a", 1},      {"/", 1},
	         {"a//b", 1},     {"$SYS/x", 1}, {"", 0},
	         {"a/+", 0},      {"a/#", 0},    {"+", 0},
	         {"#", 0},        {"a+b", 0},    {"\xC3\xA9t\xC3\xA9", 1},
	         {"\xC0\xAF", 0}, {"\xFF", 0},   {"a\xED\xA0\x80", 0}};
	for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
		ck_assert_msg(mqb_topic_valid(t[i].s) == t[i].valid,
		              "mqb_topic_valid(\"%s\") != %d", t[i].s, t[i].valid);

	static const struct {
		const char *s;
		int valid;
	} f[] = {{"a/b", 1},
	         {"#", 1},
	         {"+", 1},
	         {"a/#", 1},
	         {"a/+/b", 1},
	         {"+/+/#", 1},
	         {"/", 1},
	         {"", 0},
	         {"a/#/b", 0},
	         {"a#", 0},
	         {"a/b#", 0},
	         {"a+", 0},
	         {"a/+b", 0},
	         {"#/a", 0},
	         {"$share/g/a/#", 1},
	         {"$share/g/+", 1},
	         {"$share/g", 0},
	         {"$share/g/", 0},
	         {"$share//a", 0},
	         {"$share/g+/a", 0},
	         {"$share/g#/a", 0},
	         {"$queue/a/b", 1},
	         {"$queue/", 0},
	         {"\xC0\xAF", 0}};
	for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
		ck_assert_msg(mqb_filter_valid(f[i].s) == f[i].valid,
		              "mqb_filter_valid(\"%s\") != %d", f[i].s, f[i].valid);
}
END_TEST

START_TEST(test_inproc_subscribe_props)
{
	static msg_queue q;
	mq_init(&q);
	mqb_subscription *sub = NULL;
	ck_assert_int_eq(mqb_subscribe(b, "emb/+/x/#", on_message, &q, &sub), MQB_OK);
	ck_assert_ptr_nonnull(sub);

	mr_connect_opts o = {.proto = 5,
	                     .client_id = "pubber",
	                     .clean = 1,
	                     .keepalive = 30,
	                     .username = "alice",
	                     .password = "pw"};
	int rc;
	int fd = mr_open(port, &o, &rc);
	ck_assert_msg(fd >= 0, "CONNACK %d", rc);
	mr_buf props = {0};
	mr_prop_u8(&props, 0x01, 1);
	mr_prop_u32(&props, 0x02, 100);
	mr_prop_str(&props, 0x03, "text/plain");
	mr_prop_str(&props, 0x08, "resp/t");
	mr_prop_bin(&props, 0x09, "c\0rr", 4);
	mr_prop_pair(&props, 0x26, "k1", "v1");
	mr_prop_pair(&props, 0x26, "k2", "v2");
	mr_prop_pair(&props, 0x26, "k1", "v3");
	ck_assert_int_eq(mr_publish_sync(fd, 5, "emb/a/x/y", "hello", 1, 0, 1, &props), 0);
	mr_buf_free(&props);
	/* No subscriber: 0x10 No matching subscribers (or plain success). */
	int r = mr_publish_sync(fd, 5, "emb/a/y", "nomatch", 1, 0, 2, NULL);
	ck_assert_msg(r == 0 || r == 0x10, "PUBACK reason 0x%x", r);
	ck_assert_int_eq(mr_publish_sync(fd, 5, "emb/b/x", "parent", 0, 0, 0, NULL), 0);
	ck_assert(mq_wait(&q, 2, WAIT_MS));
	ck_assert_int_eq(mqb_broker_publish(b, "emb/h/x/z", "host", 4, 0, 0), MQB_OK);

	ck_assert(mq_wait(&q, 3, WAIT_MS));
	mr_sleep_ms(300);
	ck_assert_int_eq(mq_count(&q), 3);
	msg_copy *m = &q.m[0];
	ck_assert_str_eq(m->topic, "emb/a/x/y");
	ck_assert_int_eq(m->payload_len, 5);
	ck_assert_int_eq(memcmp(m->payload, "hello", 5), 0);
	ck_assert_int_eq(m->qos, 1);
	ck_assert_int_eq(m->retain, 0);
	ck_assert_int_eq(m->has_expiry, 1);
	ck_assert_msg(m->expiry <= 100 && m->expiry >= 90, "message expiry %u", m->expiry);
	ck_assert_int_eq(m->utf8, 1);
	ck_assert_int_eq(m->has_ctype, 1);
	ck_assert_str_eq(m->ctype, "text/plain");
	ck_assert_int_eq(m->has_rtopic, 1);
	ck_assert_str_eq(m->rtopic, "resp/t");
	ck_assert_int_eq(m->has_corr, 1);
	ck_assert_int_eq(m->corr_len, 4);
	ck_assert_int_eq(memcmp(m->corr, "c\0rr", 4), 0);
	ck_assert_int_eq(m->nup, 3);
	ck_assert_str_eq(m->upk[0], "k1");
	ck_assert_str_eq(m->upv[0], "v1");
	ck_assert_str_eq(m->upk[1], "k2");
	ck_assert_str_eq(m->upv[1], "v2");
	ck_assert_str_eq(m->upk[2], "k1");
	ck_assert_str_eq(m->upv[2], "v3");
	ck_assert_int_eq(m->has_client_id, 1);
	ck_assert_str_eq(m->client_id, "pubber");
	ck_assert_int_eq(m->has_username, 1);
	ck_assert_str_eq(m->username, "alice");

	m = &q.m[1];
	ck_assert_str_eq(m->topic, "emb/b/x");
	ck_assert_int_eq(m->qos, 0);
	ck_assert_int_eq(m->has_expiry, 0);
	ck_assert_int_eq(m->utf8, 0);
	ck_assert_int_eq(m->has_ctype, 0);
	ck_assert_int_eq(m->has_rtopic, 0);
	ck_assert_int_eq(m->has_corr, 0);
	ck_assert_int_eq(m->nup, 0);

	m = &q.m[2];
	ck_assert_str_eq(m->topic, "emb/h/x/z");
	ck_assert_int_eq(m->payload_len, 4);
	ck_assert_int_eq(m->has_client_id, 1);
	ck_assert_str_eq(m->client_id, ""); /* the host's own message */
	ck_assert_int_eq(m->has_username, 0);

	/* Invalid arguments. */
	mqb_subscription *bad = NULL;
	ck_assert_int_eq(mqb_subscribe(b, "a/#/b", on_message, &q, &bad), MQB_ERR_INVAL);
	ck_assert_int_eq(mqb_unsubscribe(b, sub), MQB_OK);
	close(fd);
}
END_TEST

START_TEST(test_inproc_retained_and_dollar)
{
	static msg_queue q, all, dollar;
	mq_init(&q);
	mq_init(&all);
	mq_init(&dollar);
	mqb_metrics mt0;
	mqb_broker_metrics(b, &mt0); /* the broker may hold retained $SYS topics */
	int fd = open_client(5, "retpub");
	int r = mr_publish_sync(fd, 5, "ret/a", "A", 1, 1, 1, NULL);
	ck_assert_msg(r == 0 || r == 0x10, "PUBACK reason 0x%x", r);
	r = mr_publish_sync(fd, 5, "ret/b", "B", 1, 1, 2, NULL);
	ck_assert_msg(r == 0 || r == 0x10, "PUBACK reason 0x%x", r);
	/* Wait until the broker counts both retained messages. */
	int64_t deadline = mr_now_ms() + WAIT_MS;
	mqb_metrics mt;
	do {
		mqb_broker_metrics(b, &mt);
	} while (mt.retained < mt0.retained + 2 && mr_now_ms() < deadline && (mr_sleep_ms(10), 1));
	ck_assert_int_eq(mt.retained, mt0.retained + 2);

	mqb_subscription *sub;
	ck_assert_int_eq(mqb_subscribe(b, "ret/#", on_message, &q, &sub), MQB_OK);
	ck_assert_int_eq(mqb_broker_publish(b, "ret/c", "C", 1, 0, 0), MQB_OK);
	ck_assert(mq_wait(&q, 3, WAIT_MS));
	/* The retained ones first (in any order), flagged retain. */
	int seen_a = 0, seen_b = 0;
	for (int i = 0; i < 2; i++) {
		ck_assert_int_eq(q.m[i].retain, 1);
		ck_assert_str_eq(q.m[i].client_id, "retpub");
		if (strcmp(q.m[i].topic, "ret/a") == 0 && q.m[i].payload[0] == 'A')
			seen_a++;
		else if (strcmp(q.m[i].topic, "ret/b") == 0 && q.m[i].payload[0] == 'B')
			seen_b++;
	}
	ck_assert(seen_a == 1 && seen_b == 1);
	ck_assert_str_eq(q.m[2].topic, "ret/c");
	ck_assert_int_eq(q.m[2].retain, 0);

	/* $-topics: "#" does not match them, "$app/#" does. */
	mqb_subscription *s_all, *s_dollar;
	ck_assert_int_eq(mqb_subscribe(b, "#", on_message, &all, &s_all), MQB_OK);
	ck_assert_int_eq(mqb_subscribe(b, "$app/#", on_message, &dollar, &s_dollar), MQB_OK);
	ck_assert_int_eq(mq_wait(&all, 2, WAIT_MS), 1); /* the retained ret/a, ret/b */
	int before = mq_count(&all);
	ck_assert_int_eq(mqb_broker_publish(b, "$app/x", "D", 1, 0, 0), MQB_OK);
	ck_assert_int_eq(mqb_broker_publish(b, "app/x", "E", 1, 0, 0), MQB_OK);
	ck_assert(mq_wait(&dollar, 1, WAIT_MS));
	ck_assert(mq_wait(&all, before + 1, WAIT_MS));
	mr_sleep_ms(300);
	ck_assert_int_eq(mq_count(&dollar), 1);
	ck_assert_str_eq(dollar.m[0].topic, "$app/x");
	ck_assert_int_eq(mq_count(&all), before + 1);
	ck_assert_str_eq(all.m[before].topic, "app/x");

	ck_assert_int_eq(mqb_unsubscribe(b, sub), MQB_OK);
	ck_assert_int_eq(mqb_unsubscribe(b, s_all), MQB_OK);
	ck_assert_int_eq(mqb_unsubscribe(b, s_dollar), MQB_OK);
	close(fd);
}
END_TEST

/* mqb_unsubscribe: no call once it has returned ------------------------------ */

static atomic_int flood_calls, flood_late, flood_unsubscribed, flood_run;
static void on_flood(void *user, const mqb_message *m)
{
	(void)user;
	(void)m;
	atomic_fetch_add(&flood_calls, 1);
	struct timespec ts = {0, 200 * 1000}; /* widen the window for a late call */
	nanosleep(&ts, NULL);
	if (atomic_load(&flood_unsubscribed))
		atomic_fetch_add(&flood_late, 1);
}

static void *flood_thread(void *arg)
{
	(void)arg;
	/* About 2,000 messages a second from two threads: well below what the
	 * subscription drains, so the loops keep up. */
	while (atomic_load(&flood_run)) {
		mqb_broker_publish(b, "flood/x", "f", 1, 0, 0);
		mr_sleep_ms(1);
	}
	return NULL;
}

static atomic_int self_calls;
static mqb_subscription *self_sub;
static void on_self_unsub(void *user, const mqb_message *m)
{
	(void)m;
	if (atomic_fetch_add(&self_calls, 1) == 0)
		atomic_store((atomic_int *)user, (int)mqb_unsubscribe(b, self_sub));
}

START_TEST(test_unsubscribe)
{
	mqb_subscription *sub;
	ck_assert_int_eq(mqb_subscribe(b, "flood/#", on_flood, NULL, &sub), MQB_OK);
	atomic_store(&flood_run, 1);
	pthread_t t[2];
	for (int i = 0; i < 2; i++)
		ck_assert_int_eq(pthread_create(&t[i], NULL, flood_thread, NULL), 0);
	int64_t deadline = mr_now_ms() + WAIT_MS;
	while (atomic_load(&flood_calls) < 50 && mr_now_ms() < deadline)
		mr_sleep_ms(5);
	ck_assert_int_ge(atomic_load(&flood_calls), 50);
	ck_assert_int_eq(mqb_unsubscribe(b, sub), MQB_OK);
	atomic_store(&flood_unsubscribed, 1);
	int calls = atomic_load(&flood_calls);
	mr_sleep_ms(500);
	atomic_store(&flood_run, 0);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	ck_assert_int_eq(atomic_load(&flood_late), 0);
	ck_assert_int_eq(atomic_load(&flood_calls), calls);

	/* Unsubscribing from within the callback: that call is the last one. */
	static msg_queue q;
	mq_init(&q);
	atomic_int self_rc = -1;
	mqb_subscription *witness;
	ck_assert_int_eq(mqb_subscribe(b, "self/#", on_self_unsub, &self_rc, &self_sub), MQB_OK);
	ck_assert_int_eq(mqb_subscribe(b, "self/#", on_message, &q, &witness), MQB_OK);
	for (int i = 0; i < 20; i++)
		ck_assert_int_eq(mqb_broker_publish(b, "self/x", "s", 1, 0, 0), MQB_OK);
	ck_assert(mq_wait(&q, 20, WAIT_MS));
	mr_sleep_ms(300);
	ck_assert_int_eq(atomic_load(&self_calls), 1);
	ck_assert_int_eq(atomic_load(&self_rc), MQB_OK);
	ck_assert_int_eq(mqb_unsubscribe(b, witness), MQB_OK);
}
END_TEST

START_TEST(test_publish_props_to_client)
{
	int fd = open_client(5, "rx");
	ck_assert_int_eq(mr_subscribe_sync(fd, 5, 1, "host/#", 1), 1);
	static msg_queue q;
	mq_init(&q);
	mqb_subscription *sub;
	ck_assert_int_eq(mqb_subscribe(b, "host/#", on_message, &q, &sub), MQB_OK);

	mqb_user_property ups[] = {{"a", "1"}, {"b", "2"}, {"a", "3"}};
	mqb_message m;
	memset(&m, 0, sizeof m);
	m.topic = "host/p";
	m.payload = "payload";
	m.payload_len = 7;
	m.qos = 1;
	m.has_message_expiry = 1;
	m.message_expiry = 60;
	m.payload_utf8 = 1;
	m.content_type = "application/json";
	m.response_topic = "host/reply";
	m.correlation_data = "\x01\x02\x00\x03";
	m.correlation_len = 4;
	m.user_properties = ups;
	m.user_property_count = 3;
	m.client_id = "spoofed"; /* ignored on publish */
	m.username = "spoofed";
	ck_assert_int_eq(mqb_publish(b, &m), MQB_OK);

	mr_packet pk;
	mr_publish pub;
	expect_pub(fd, 5, "host/p", "payload", &pub, &pk);
	ck_assert_int_eq(pub.qos, 1);
	ck_assert_int_eq(pub.retain, 0);
	ck_assert_int_eq(pub.props.has_payload_format, 1);
	ck_assert_int_eq(pub.props.payload_format, 1);
	ck_assert_int_eq(pub.props.has_message_expiry, 1);
	ck_assert_msg(pub.props.message_expiry <= 60 && pub.props.message_expiry >= 50, "expiry %u",
	              pub.props.message_expiry);
	ck_assert_int_eq(pub.props.has_content_type, 1);
	ck_assert_str_eq(pub.props.content_type, "application/json");
	ck_assert_int_eq(pub.props.has_response_topic, 1);
	ck_assert_str_eq(pub.props.response_topic, "host/reply");
	ck_assert_int_eq(pub.props.has_correlation, 1);
	ck_assert_int_eq(pub.props.correlation_len, 4);
	ck_assert_int_eq(memcmp(pub.props.correlation, "\x01\x02\x00\x03", 4), 0);
	ck_assert_int_eq(pub.props.user_count, 3);
	ck_assert_str_eq(pub.props.user_key[0], "a");
	ck_assert_str_eq(pub.props.user_value[0], "1");
	ck_assert_str_eq(pub.props.user_key[1], "b");
	ck_assert_str_eq(pub.props.user_value[1], "2");
	ck_assert_str_eq(pub.props.user_key[2], "a");
	ck_assert_str_eq(pub.props.user_value[2], "3");
	mr_packet_free(&pk);

	ck_assert(mq_wait(&q, 1, WAIT_MS));
	ck_assert_str_eq(q.m[0].client_id, "");
	ck_assert_int_eq(q.m[0].has_username, 0);
	ck_assert_int_eq(q.m[0].nup, 3);

	/* QoS 0 without properties: none on the wire. */
	ck_assert_int_eq(mqb_broker_publish(b, "host/q", "plain", 5, 0, 0), MQB_OK);
	expect_pub(fd, 5, "host/q", "plain", &pub, &pk);
	ck_assert_int_eq(pub.qos, 0);
	ck_assert_int_eq(pub.props.has_payload_format, 0);
	ck_assert_int_eq(pub.props.has_message_expiry, 0);
	ck_assert_int_eq(pub.props.user_count, 0);
	mr_packet_free(&pk);

	/* Retained host message reaches a later subscriber with retain set. */
	ck_assert_int_eq(mqb_broker_publish(b, "host/ret", "kept", 4, 1, 1), MQB_OK);
	expect_pub(fd, 5, "host/ret", "kept", &pub, &pk);
	ck_assert_int_eq(pub.retain, 0); /* live delivery: retain cleared (no RAP) */
	mr_packet_free(&pk);
	int fd2 = open_client(4, "rx2");
	mr_buf s = {0};
	mr_enc_subscribe(&s, 4, 1, "host/ret", 1, 0);
	send_free(fd2, &s);
	expect_pub(fd2, 4, "host/ret", "kept", &pub, &pk);
	ck_assert_int_eq(pub.retain, 1);
	mr_packet_free(&pk);

	/* Invalid host publishes. */
	memset(&m, 0, sizeof m);
	m.topic = "a/+";
	ck_assert_int_eq(mqb_publish(b, &m), MQB_ERR_INVAL);
	ck_assert_int_eq(mqb_broker_publish(b, "x", "y", 1, 3, 0), MQB_ERR_INVAL);
	ck_assert_int_eq(mqb_unsubscribe(b, sub), MQB_OK);
	close(fd);
	close(fd2);
}
END_TEST

/* Host publishes from one thread are delivered in order, like a client's
 * (MQTT 4.6 ordered topics), and the retained store keeps the last one. */
START_TEST(test_host_publish_order)
{
	/* Retained: the last of many quick updates wins. */
	for (int i = 0; i < 100; i++) {
		char p[16];
		int n = snprintf(p, sizeof p, "%d", i);
		ck_assert_int_eq(mqb_broker_publish(b, "ordret/x", p, (size_t)n, 0, 1), MQB_OK);
	}
	mr_sleep_ms(500);
	int fd2 = open_client(4, "ord2");
	mr_buf s = {0};
	mr_enc_subscribe(&s, 4, 1, "ordret/x", 0, 0);
	send_free(fd2, &s);
	mr_packet pk;
	mr_publish pub;
	ck_assert_int_eq(mr_next_publish(fd2, 4, &pk, &pub, WAIT_MS), 1);
	ck_assert_str_eq(pub.topic, "ordret/x");
	ck_assert_msg(pub.payload_len == 2 && memcmp(pub.payload, "99", 2) == 0,
	              "retained value is '%.*s' after host publishes of 0..99",
	              (int)pub.payload_len, (const char *)pub.payload);
	mr_packet_free(&pk);
	close(fd2);
	int fd = open_client(4, "ord");
	ck_assert_int_eq(mr_subscribe_sync(fd, 4, 1, "ord/#", 1), 1);
	static msg_queue q;
	mq_init(&q);
	mqb_subscription *sub;
	ck_assert_int_eq(mqb_subscribe(b, "ord/#", on_message, &q, &sub), MQB_OK);
	/* Rounds of 30 QoS 1 messages: within mqtt.max_inflight (32), so none
	 * waits in the (5 deep) queue. */
	enum { R = 6, K = 30, N = R * K };
	int out_of_order = 0, first_bad = -1;
	for (int r = 0; r < R; r++) {
		/* The previous round's PUBACKs are processed: the window is free. */
		st_copy st;
		int64_t deadline = mr_now_ms() + WAIT_MS;
		while (get_status("ord", &st) == MQB_OK && st.inflight > 0 &&
		       mr_now_ms() < deadline)
			mr_sleep_ms(5);
		ck_assert_int_eq(st.inflight, 0);
		for (int i = r * K; i < (r + 1) * K; i++) {
			char p[16];
			int n = snprintf(p, sizeof p, "%d", i);
			ck_assert_int_eq(mqb_broker_publish(b, "ord/x", p, (size_t)n, 1, 0),
			                 MQB_OK);
		}
		for (int i = r * K; i < (r + 1) * K; i++) {
			ck_assert_int_eq(mr_next_publish(fd, 4, &pk, &pub, WAIT_MS), 1);
			char p[16];
			snprintf(p, sizeof p, "%.*s", (int)pub.payload_len,
			         (const char *)pub.payload);
			if (atoi(p) != i && out_of_order++ == 0)
				first_bad = i;
			mr_packet_free(&pk);
		}
	}
	ck_assert(mq_wait(&q, N, WAIT_MS));
	ck_assert_msg(out_of_order == 0,
	              "client: %d of %d host messages out of order (first at #%d)", out_of_order, N,
	              first_bad);
	for (int i = 0; i < N; i++)
		ck_assert_msg(atoi(q.m[i].payload) == i, "in-process: message #%d is '%s'", i,
		              q.m[i].payload);
	ck_assert_int_eq(mqb_unsubscribe(b, sub), MQB_OK);

	close(fd);
}
END_TEST

START_TEST(test_authorize)
{
	int w = open_client(5, "watch");
	ck_assert_int_eq(mr_subscribe_sync(w, 5, 1, "+/x", 1), 1);
	int az = open_client(5, "az");
	int az4 = open_client(4, "az4");
	/* Publish denied: PUBACK 0x87 (v5); the message is not routed. */
	ck_assert_int_eq(mr_publish_sync(az, 5, "deny/x", "no", 1, 0, 1, NULL), 0x87);
	ck_assert_int_eq(mr_publish_sync(az, 5, "deny/x", "no", 0, 0, 0, NULL), 0);
	ck_assert_int_eq(mr_publish_sync(az4, 4, "deny/x", "no", 0, 0, 0, NULL), 0);
	/* Subscribe denied: 0x87 (v5), 0x80 (3.1.1). */
	ck_assert_int_eq(mr_subscribe_sync(az, 5, 2, "deny/#", 1), 0x87);
	ck_assert_int_eq(mr_subscribe_sync(az4, 4, 2, "deny/#", 1), 0x80);
	/* QoS lowered by the hook. */
	ck_assert_int_eq(mr_subscribe_sync(az, 5, 3, "lower/#", 2), 0);
	ck_assert_int_eq(mqb_broker_publish(b, "lower/a", "low", 3, 1, 0), MQB_OK);
	mr_packet pk;
	mr_publish pub;
	expect_pub(az, 5, "lower/a", "low", &pub, &pk);
	ck_assert_int_eq(pub.qos, 0);
	mr_packet_free(&pk);
	/* Allowed traffic passes; the watcher saw none of the denied ones. */
	ck_assert_int_eq(mr_publish_sync(az, 5, "ok/x", "yes", 1, 0, 4, NULL), 0);
	expect_pub(w, 5, "ok/x", "yes", NULL, NULL);
	/* The hook saw the client and the topic. */
	ck_assert_int_eq(mr_publish_sync(az4, 4, "authz/t", "x", 1, 0, 5, NULL), 0);
	pthread_mutex_lock(&rec_mu);
	ck_assert_str_eq(rec_authz_client, "az4");
	ck_assert_str_eq(rec_authz_topic, "authz/t");
	ck_assert_int_eq(rec_authz_action, MQB_ACTION_PUBLISH);
	pthread_mutex_unlock(&rec_mu);
	ck_assert_int_eq(mr_subscribe_sync(az, 5, 6, "authz/#", 1), 1);
	pthread_mutex_lock(&rec_mu);
	ck_assert_str_eq(rec_authz_client, "az");
	ck_assert_str_eq(rec_authz_topic, "authz/#");
	ck_assert_int_eq(rec_authz_action, MQB_ACTION_SUBSCRIBE);
	pthread_mutex_unlock(&rec_mu);
	close(w);
	close(az);
	close(az4);
}
END_TEST

START_TEST(test_on_publish)
{
	int rs = open_client(5, "rs");
	ck_assert_int_eq(mr_subscribe_sync(rs, 5, 1, "rewrite/#", 1), 1);
	ck_assert_int_eq(mr_subscribe_sync(rs, 5, 2, "drop/#", 1), 1);
	ck_assert_int_eq(mr_subscribe_sync(rs, 5, 3, "dropdef/#", 1), 1);
	int pp = open_client(5, "pp");
	mr_buf props = {0};
	mr_prop_pair(&props, 0x26, "orig", "1");
	ck_assert_int_eq(mr_publish_sync(pp, 5, "rewrite/in", "original", 1, 0, 1, &props), 0);
	mr_buf_free(&props);
	/* Dropped with the hook's reason, or 0x87 by default. */
	ck_assert_int_eq(mr_publish_sync(pp, 5, "drop/x", "d", 1, 0, 2, NULL), 0x99);
	ck_assert_int_eq(mr_publish_sync(pp, 5, "dropdef/x", "d", 1, 0, 3, NULL), 0x87);
	mqb_broker_publish(b, "drop/host", "d", 1, 1, 0); /* dropped by the hook */
	ck_assert_int_eq(mqb_broker_publish(b, "rewrite/host", "h", 1, 1, 0), MQB_OK);

	mr_packet pk;
	mr_publish pub;
	expect_pub(rs, 5, "rewrite/out", "REWRITTEN", &pub, &pk);
	ck_assert_int_eq(pub.props.user_count, 2);
	ck_assert_str_eq(pub.props.user_key[0], "orig");
	ck_assert_str_eq(pub.props.user_value[0], "1");
	ck_assert_str_eq(pub.props.user_key[1], "added");
	ck_assert_str_eq(pub.props.user_value[1], "yes");
	mr_packet_free(&pk);
	/* Nothing of the dropped ones: the next message is the host's. */
	expect_pub(rs, 5, "rewrite/host", "h", NULL, NULL);

	pthread_mutex_lock(&rec_mu);
	ck_assert_str_eq(rec_pub_client, "pp");
	ck_assert_int_eq(strncmp(rec_pub_peer, "127.0.0.1:", 10), 0);
	ck_assert_str_eq(rec_pub_listener, "default");
	ck_assert_int_eq(rec_pub_proto, 5);
	ck_assert_int_eq(rec_pub_has_user, 0);
	ck_assert_int_eq(rec_host_pub_null, 1);
	pthread_mutex_unlock(&rec_mu);
	close(rs);
	close(pp);
}
END_TEST

START_TEST(test_on_deliver)
{
	int skip = open_client(4, "skipme");
	int get = open_client(4, "getme");
	for (int i = 0; i < 2; i++) {
		int fd = i ? get : skip;
		ck_assert_int_eq(mr_subscribe_sync(fd, 4, 1, "dl/#", 1), 1);
		ck_assert_int_eq(mr_subscribe_sync(fd, 4, 2, "sync/#", 1), 1);
	}
	/* One client publishes both, so their order is kept. */
	int pub = open_client(4, "dlpub");
	ck_assert_int_eq(mr_publish_sync(pub, 4, "dl/1", "one", 1, 0, 1, NULL), 0);
	ck_assert_int_eq(mr_publish_sync(pub, 4, "sync/1", "s", 1, 0, 2, NULL), 0);
	close(pub);
	expect_pub(get, 4, "dl/1", "one", NULL, NULL);
	expect_pub(get, 4, "sync/1", "s", NULL, NULL);
	expect_pub(skip, 4, "sync/1", "s", NULL, NULL);
	close(skip);
	close(get);
}
END_TEST

START_TEST(test_events)
{
	ev_copy e;
	/* Created, connected (with username), subscribed, unsubscribed, disconnected
	 * with the client's reason. */
	mr_connect_opts o = {.proto = 5,
	                     .client_id = "ev1",
	                     .clean = 1,
	                     .keepalive = 30,
	                     .username = "evuser",
	                     .has_session_expiry = 1,
	                     .session_expiry = 60};
	int rc;
	int fd = mr_open(port, &o, &rc);
	ck_assert_int_ge(fd, 0);
	ck_assert(ev_wait(MQB_EVENT_CONNECTED, "ev1", 1, &e, WAIT_MS));
	ck_assert_int_eq(e.has_username, 1);
	ck_assert_str_eq(e.username, "evuser");
	ck_assert_int_eq(e.has_peer, 1);
	ck_assert(ev_wait(MQB_EVENT_SESSION_CREATED, "ev1", 1, NULL, WAIT_MS));
	ck_assert_int_eq(mr_subscribe_sync(fd, 5, 1, "ev/#", 1), 1);
	ck_assert(ev_wait(MQB_EVENT_SUBSCRIBED, "ev1", 1, &e, WAIT_MS));
	ck_assert_str_eq(e.topic, "ev/#");
	ck_assert_int_eq(e.qos, 1);
	mr_buf m = {0};
	mr_enc_unsubscribe(&m, 5, 2, "ev/#");
	send_free(fd, &m);
	mr_packet pk;
	ck_assert_int_eq(mr_read(fd, &pk, WAIT_MS), 1);
	ck_assert_int_eq(pk.type, MR_UNSUBACK);
	mr_packet_free(&pk);
	ck_assert(ev_wait(MQB_EVENT_UNSUBSCRIBED, "ev1", 1, &e, WAIT_MS));
	ck_assert_str_eq(e.topic, "ev/#");
	disconnect_client(fd, 5, 0x04);
	ck_assert(ev_wait(MQB_EVENT_DISCONNECTED, "ev1", 1, &e, WAIT_MS));
	ck_assert_int_eq(e.reason, 0x04);

	/* Resumed. */
	o.clean = 0;
	fd = mr_open(port, &o, &rc);
	ck_assert_int_ge(fd, 0);
	ck_assert(ev_wait(MQB_EVENT_SESSION_RESUMED, "ev1", 1, NULL, WAIT_MS));
	ck_assert_int_eq(ev_count(MQB_EVENT_SESSION_CREATED, "ev1"), 1);
	disconnect_client(fd, 5, 0);
	ck_assert(ev_wait(MQB_EVENT_DISCONNECTED, "ev1", 2, &e, WAIT_MS));
	ck_assert_int_eq(e.reason, 0);

	/* Clean start over an existing session: discarded, then created. */
	o.clean = 1;
	fd = mr_open(port, &o, &rc);
	ck_assert_int_ge(fd, 0);
	ck_assert(ev_wait(MQB_EVENT_SESSION_DISCARDED, "ev1", 1, NULL, WAIT_MS));
	ck_assert(ev_wait(MQB_EVENT_SESSION_CREATED, "ev1", 2, NULL, WAIT_MS));
	close(fd);

	/* Refused CONNECT: CONNACK_REFUSED 0x86, no CONNECTED. */
	mr_connect_opts bad = {
	        .proto = 5, .client_id = "evbad", .clean = 1, .keepalive = 30, .username = "bad"};
	ck_assert_int_lt(mr_open(port, &bad, &rc), 0);
	ck_assert_int_eq(rc, 0x86);
	ck_assert(ev_wait(MQB_EVENT_CONNACK_REFUSED, "evbad", 1, &e, WAIT_MS));
	ck_assert_int_eq(e.reason, 0x86);
	ck_assert_int_eq(ev_count(MQB_EVENT_CONNECTED, "evbad"), 0);

	/* Expired. */
	mr_connect_opts ex = {.proto = 5,
	                      .client_id = "evexp",
	                      .clean = 1,
	                      .keepalive = 30,
	                      .has_session_expiry = 1,
	                      .session_expiry = 1};
	fd = mr_open(port, &ex, &rc);
	ck_assert_int_ge(fd, 0);
	disconnect_client(fd, 5, 0);
	ck_assert(ev_wait(MQB_EVENT_SESSION_EXPIRED, "evexp", 1, NULL, 15000));
	st_copy st;
	ck_assert_int_eq(get_status("evexp", &st), MQB_ERR_NOTFOUND);
	ck_assert_int_eq(st.calls, 0);

	/* Dropped: the offline session's queue holds mqtt.max_mqueue_len = 5. */
	fd = open_persistent(4, "evq", 0, NULL);
	ck_assert_int_eq(mr_subscribe_sync(fd, 4, 1, "q/#", 1), 1);
	disconnect_client(fd, 4, 0);
	for (int i = 0; i < 7; i++)
		ck_assert_int_eq(mqb_broker_publish(b, "q/1", "m", 1, 1, 0), MQB_OK);
	ck_assert(ev_wait(MQB_EVENT_MESSAGE_DROPPED, NULL, 2, &e, WAIT_MS));
	ck_assert_str_eq(e.topic, "q/1");
	ck_assert_int_eq(e.qos, 1);
	ck_assert_int_eq(e.has_text, 1);
	mr_sleep_ms(300);
	ck_assert_int_eq(ev_count(MQB_EVENT_MESSAGE_DROPPED, NULL), 2);
}
END_TEST

/* Introspection ------------------------------------------------------------ */

typedef struct id_list {
	int n;
	char ids[16][64];
	size_t last_total;
} id_list;

static void on_status_list(void *user, const mqb_client_status *st)
{
	id_list *l = user;
	if (l->n < 16)
		copy_str(l->ids[l->n], 64, st->client_id);
	l->n++;
}

typedef struct sub_list {
	int n;
	char client[16][64], filter[16][64];
	int qos[16];
	uint32_t id[16];
} sub_list;

static void on_sub_list(void *user, const char *client_id, const char *filter, int qos,
                        uint32_t subscription_id)
{
	sub_list *l = user;
	if (l->n < 16) {
		copy_str(l->client[l->n], 64, client_id);
		copy_str(l->filter[l->n], 64, filter);
		l->qos[l->n] = qos;
		l->id[l->n] = subscription_id;
	}
	l->n++;
}

static int find_sub(const sub_list *l, const char *client, const char *filter)
{
	for (int i = 0; i < l->n && i < 16; i++)
		if (strcmp(l->client[i], client) == 0 && strcmp(l->filter[i], filter) == 0)
			return i;
	return -1;
}

START_TEST(test_calls_from_hooks)
{
	int w = open_client(5, "hw");
	ck_assert_int_eq(mr_subscribe_sync(w, 5, 1, "hook/#", 1), 1);
	/* on_event(CONNECTED "hq") reads the metrics and publishes twice. */
	int hq = open_client(4, "hq");
	/* Two topics: either may come first (docs/EMBEDDING.md). */
	int got_announce = 0, got_props = 0;
	for (int i = 0; i < 2; i++) {
		mr_packet pk;
		mr_publish pub;
		ck_assert_int_eq(mr_next_publish(w, 5, &pk, &pub, WAIT_MS), 1);
		if (strcmp(pub.topic, "hook/announce") == 0) {
			ck_assert_int_eq(pub.payload_len, 2);
			ck_assert_int_eq(memcmp(pub.payload, "hq", 2), 0);
			got_announce++;
		} else {
			ck_assert_str_eq(pub.topic, "hook/props");
			ck_assert_int_eq(pub.props.user_count, 1);
			ck_assert_str_eq(pub.props.user_key[0], "from");
			ck_assert_str_eq(pub.props.user_value[0], "hook");
			got_props++;
		}
		mr_packet_free(&pk);
	}
	ck_assert(got_announce == 1 && got_props == 1);
	pthread_mutex_lock(&ha_mu);
	ck_assert_int_eq(ha_done, 1);
	ck_assert_int_ge(ha_connects, 2);
	ck_assert_int_ge(ha_connections, 1);
	ck_assert_int_eq(ha_publish_rc, MQB_OK);
	ck_assert_int_eq(ha_publish2_rc, MQB_OK);
	pthread_mutex_unlock(&ha_mu);
	close(hq);
	close(w);
}
END_TEST

START_TEST(test_inproc_shared)
{
	/* Two in-process members of one share group: each message reaches
	 * exactly one of them; a plain subscription gets every message. */
	static msg_queue q1, q2, all;
	mq_init(&q1);
	mq_init(&q2);
	mq_init(&all);
	mqb_subscription *s1, *s2, *sa;
	ck_assert_int_eq(mqb_subscribe(b, "$share/g/sh/#", on_message, &q1, &s1), MQB_OK);
	ck_assert_int_eq(mqb_subscribe(b, "$share/g/sh/#", on_message, &q2, &s2), MQB_OK);
	ck_assert_int_eq(mqb_subscribe(b, "sh/#", on_message, &all, &sa), MQB_OK);
	for (int i = 0; i < 20; i++) {
		char p[8];
		int n = snprintf(p, sizeof p, "%d", i);
		ck_assert_int_eq(mqb_broker_publish(b, "sh/x", p, (size_t)n, 1, 0), MQB_OK);
	}
	ck_assert(mq_wait(&all, 20, WAIT_MS));
	int64_t deadline = mr_now_ms() + WAIT_MS;
	while (mq_count(&q1) + mq_count(&q2) < 20 && mr_now_ms() < deadline)
		mr_sleep_ms(10);
	mr_sleep_ms(300);
	ck_assert_int_eq(mq_count(&q1) + mq_count(&q2), 20);
	int seen[20] = {0};
	for (int i = 0; i < mq_count(&q1); i++)
		seen[atoi(q1.m[i].payload)]++;
	for (int i = 0; i < mq_count(&q2); i++)
		seen[atoi(q2.m[i].payload)]++;
	for (int i = 0; i < 20; i++)
		ck_assert_msg(seen[i] == 1, "message %d reached the group %d times", i, seen[i]);
	ck_assert_int_eq(mqb_unsubscribe(b, s1), MQB_OK);
	ck_assert_int_eq(mqb_unsubscribe(b, s2), MQB_OK);
	ck_assert_int_eq(mqb_unsubscribe(b, sa), MQB_OK);
}
END_TEST

START_TEST(test_introspection)
{
	/* Online v5 session with two subscriptions (one with an identifier). */
	int on1 = open_persistent(5, "on1", 120, "alice");
	ck_assert_int_eq(mr_subscribe_sync(on1, 5, 1, "a/#", 1), 1);
	mr_buf m = {0};
	mr_enc_subscribe(&m, 5, 2, "b/+", 0, 7);
	send_free(on1, &m);
	mr_packet pk;
	ck_assert_int_eq(mr_read(on1, &pk, WAIT_MS), 1);
	ck_assert_int_eq(pk.type, MR_SUBACK);
	mr_packet_free(&pk);
	/* Offline 3.1.1 session with three queued messages. */
	int off1 = open_persistent(4, "off1", 0, NULL);
	ck_assert_int_eq(mr_subscribe_sync(off1, 4, 1, "q/#", 1), 1);
	disconnect_client(off1, 4, 0);
	ck_assert_int_eq(mqb_broker_publish(b, "q/1", "x", 1, 1, 0), MQB_OK);
	ck_assert_int_eq(mqb_broker_publish(b, "q/1", "yy", 2, 1, 0), MQB_OK);
	ck_assert_int_eq(mqb_broker_publish(b, "q/1", "zzz", 3, 1, 0), MQB_OK);

	st_copy st;
	ck_assert_int_eq(get_status("on1", &st), MQB_OK);
	ck_assert_int_eq(st.calls, 1);
	ck_assert_str_eq(st.client_id, "on1");
	ck_assert_int_eq(st.connected, 1);
	ck_assert_int_eq(st.protocol, 5);
	ck_assert_int_eq(st.keepalive, 30);
	ck_assert_int_eq(st.session_expiry, 120);
	ck_assert_int_eq(st.subscriptions, 2);
	ck_assert_int_eq(st.inflight, 0);
	ck_assert_int_eq(st.queued, 0);
	ck_assert_int_eq(st.has_username, 1);
	ck_assert_str_eq(st.username, "alice");
	ck_assert_int_eq(st.has_peer, 1);
	ck_assert_int_eq(strncmp(st.peer, "127.0.0.1:", 10), 0);
	ck_assert_int_eq(st.has_listener, 1);
	ck_assert_str_eq(st.listener, "default");

	int64_t deadline = mr_now_ms() + WAIT_MS;
	do {
		ck_assert_int_eq(get_status("off1", &st), MQB_OK);
	} while (st.queued < 3 && mr_now_ms() < deadline && (mr_sleep_ms(10), 1));
	ck_assert_int_eq(st.calls, 1);
	ck_assert_int_eq(st.connected, 0);
	ck_assert_int_eq(st.protocol, 4);
	ck_assert_int_eq(st.has_peer, 0);
	ck_assert_int_eq(st.has_listener, 0);
	ck_assert_int_eq(st.has_username, 0);
	ck_assert_int_eq(st.session_expiry, 7200); /* mqtt.session_expiry_interval = 2h */
	ck_assert_int_eq(st.subscriptions, 1);
	ck_assert_int_eq(st.inflight, 0);
	ck_assert_int_eq(st.queued, 3);
	ck_assert_int_ge(st.queued_bytes, 6);

	ck_assert_int_eq(get_status("nobody", &st), MQB_ERR_NOTFOUND);
	ck_assert_int_eq(st.calls, 0);

	/* Paging through five sessions. */
	int p1 = open_client(4, "p1"), p2 = open_client(4, "p2"), p3 = open_client(5, "p3");
	id_list all = {0};
	size_t total = 0;
	for (size_t off = 0; off < 6; off += 2) {
		id_list page = {0};
		total = 0;
		ck_assert_int_eq(mqb_broker_clients(b, off, 2, on_status_list, &page, &total),
		                 MQB_OK);
		ck_assert_int_eq(total, 5);
		ck_assert_int_eq(page.n, off < 4 ? 2 : 1);
		for (int i = 0; i < page.n; i++)
			memcpy(all.ids[all.n++], page.ids[i], 64);
	}
	const char *want[] = {"on1", "off1", "p1", "p2", "p3"};
	for (int w = 0; w < 5; w++) {
		int found = 0;
		for (int i = 0; i < all.n; i++)
			found += strcmp(all.ids[i], want[w]) == 0;
		ck_assert_msg(found == 1, "session %s listed %d times", want[w], found);
	}
	id_list none = {0};
	ck_assert_int_eq(mqb_broker_clients(b, 5, 2, on_status_list, &none, NULL), MQB_OK);
	ck_assert_int_eq(none.n, 0);

	/* Subscriptions of one session, paged, and of all. */
	sub_list sl = {0};
	total = 0;
	ck_assert_int_eq(mqb_broker_subscriptions(b, "on1", 0, 10, on_sub_list, &sl, &total),
	                 MQB_OK);
	ck_assert_int_eq(total, 2);
	ck_assert_int_eq(sl.n, 2);
	int i1 = find_sub(&sl, "on1", "a/#"), i2 = find_sub(&sl, "on1", "b/+");
	ck_assert(i1 >= 0 && i2 >= 0);
	ck_assert_int_eq(sl.qos[i1], 1);
	ck_assert_int_eq(sl.id[i1], 0);
	ck_assert_int_eq(sl.qos[i2], 0);
	ck_assert_int_eq(sl.id[i2], 7);
	sub_list one = {0};
	ck_assert_int_eq(mqb_broker_subscriptions(b, "on1", 1, 1, on_sub_list, &one, &total),
	                 MQB_OK);
	ck_assert_int_eq(one.n, 1);
	ck_assert_int_eq(total, 2);
	sub_list every = {0};
	ck_assert_int_eq(mqb_broker_subscriptions(b, NULL, 0, 10, on_sub_list, &every, &total),
	                 MQB_OK);
	ck_assert_int_eq(total, 3);
	ck_assert_int_eq(every.n, 3);
	ck_assert_int_ge(find_sub(&every, "off1", "q/#"), 0);
	sub_list nf = {0};
	ck_assert_int_eq(mqb_broker_subscriptions(b, "nobody", 0, 10, on_sub_list, &nf, &total),
	                 MQB_ERR_NOTFOUND);
	ck_assert_int_eq(nf.n, 0);
	close(on1);
	close(p1);
	close(p2);
	close(p3);
}
END_TEST

START_TEST(test_kick)
{
	ev_copy e;
	int k1 = open_persistent(5, "k1", 300, NULL);
	ck_assert_int_eq(mqb_broker_kick(b, "k1", 0), MQB_OK);
	mr_packet pk;
	ck_assert_int_eq(mr_read(k1, &pk, WAIT_MS), 1);
	int reason = -1;
	ck_assert_int_eq(mr_parse_disconnect(&pk, &reason), 0);
	ck_assert_int_eq(reason, 0x98);
	mr_packet_free(&pk);
	ck_assert_int_eq(mr_wait_closed(k1, WAIT_MS), 1);
	close(k1);
	ck_assert(ev_wait(MQB_EVENT_DISCONNECTED, "k1", 1, &e, WAIT_MS));
	ck_assert_int_eq(e.reason, 0x98);
	/* The session stays (expiry 300 s), offline. */
	st_copy st;
	int64_t deadline = mr_now_ms() + WAIT_MS;
	do {
		ck_assert_int_eq(get_status("k1", &st), MQB_OK);
	} while (st.connected && mr_now_ms() < deadline && (mr_sleep_ms(10), 1));
	ck_assert_int_eq(st.connected, 0);
	ck_assert_int_eq(st.session_expiry, 300);

	/* With discard_session the session is gone too. */
	int k2 = open_persistent(5, "k2", 300, NULL);
	ck_assert_int_eq(mqb_broker_kick(b, "k2", 1), MQB_OK);
	ck_assert_int_eq(mr_read(k2, &pk, WAIT_MS), 1);
	ck_assert_int_eq(mr_parse_disconnect(&pk, &reason), 0);
	ck_assert_int_eq(reason, 0x98);
	mr_packet_free(&pk);
	ck_assert_int_eq(mr_wait_closed(k2, WAIT_MS), 1);
	close(k2);
	deadline = mr_now_ms() + WAIT_MS;
	mqb_err rc;
	while ((rc = get_status("k2", &st)) == MQB_OK && mr_now_ms() < deadline)
		mr_sleep_ms(10);
	ck_assert_int_eq(rc, MQB_ERR_NOTFOUND);
	/* Reconnecting finds no session. */
	mr_connect_opts o = {.proto = 5,
	                     .client_id = "k2",
	                     .clean = 0,
	                     .keepalive = 30,
	                     .has_session_expiry = 1,
	                     .session_expiry = 300};
	k2 = mr_dial(port);
	ck_assert_int_ge(k2, 0);
	mr_buf m = {0};
	mr_enc_connect(&m, &o);
	send_free(k2, &m);
	ck_assert_int_eq(mr_read(k2, &pk, WAIT_MS), 1);
	int sp = -1, code = -1;
	ck_assert_int_eq(mr_parse_connack(&pk, 5, &sp, &code, NULL), 0);
	ck_assert_int_eq(code, 0);
	ck_assert_int_eq(sp, 0);
	mr_packet_free(&pk);
	close(k2);

	/* 3.1.1: just closed. Unknown client: NOTFOUND. */
	int k3 = open_client(4, "k3");
	ck_assert_int_eq(mqb_broker_kick(b, "k3", 0), MQB_OK);
	ck_assert_int_eq(mr_read(k3, &pk, WAIT_MS), -1);
	close(k3);
	ck_assert_int_eq(mqb_broker_kick(b, "nobody", 0), MQB_ERR_NOTFOUND);
}
END_TEST

START_TEST(test_subscribe_client)
{
	/* The broker holds retained $SYS messages already: count from here. */
	mqb_metrics mt;
	mqb_broker_metrics(b, &mt);
	uint64_t retained_before = mt.retained;
	ck_assert_int_eq(mqb_broker_publish(b, "sc/ret", "R", 1, 1, 1), MQB_OK);
	int fd = open_client(5, "sc1");
	ck_assert_int_eq(mr_subscribe_sync(fd, 5, 1, "sync/#", 0), 0);
	/* mqb_broker_publish returns once copied; the retained store may lag. */
	int64_t deadline = mr_now_ms() + WAIT_MS;
	do {
		mqb_broker_metrics(b, &mt);
	} while (mt.retained <= retained_before && mr_now_ms() < deadline && (mr_sleep_ms(10), 1));
	ck_assert_uint_gt(mt.retained, retained_before);

	ck_assert_int_eq(mqb_broker_subscribe_client(b, "sc1", "sc/#", 1), MQB_OK);
	mr_packet pk;
	mr_publish pub;
	expect_pub(fd, 5, "sc/ret", "R", &pub, &pk);
	ck_assert_int_eq(pub.retain, 1);
	mr_packet_free(&pk);
	ck_assert(ev_wait(MQB_EVENT_SUBSCRIBED, "sc1", 2, NULL, WAIT_MS));
	sub_list sl = {0};
	size_t total = 0;
	ck_assert_int_eq(mqb_broker_subscriptions(b, "sc1", 0, 10, on_sub_list, &sl, &total),
	                 MQB_OK);
	ck_assert_int_eq(total, 2);
	int i = find_sub(&sl, "sc1", "sc/#");
	ck_assert_int_ge(i, 0);
	ck_assert_int_eq(sl.qos[i], 1);

	ck_assert_int_eq(mqb_broker_publish(b, "sc/1", "live", 4, 1, 0), MQB_OK);
	expect_pub(fd, 5, "sc/1", "live", &pub, &pk);
	ck_assert_int_eq(pub.qos, 1);
	mr_packet_free(&pk);

	ck_assert_int_eq(mqb_broker_unsubscribe_client(b, "sc1", "sc/#"), MQB_OK);
	ck_assert(ev_wait(MQB_EVENT_UNSUBSCRIBED, "sc1", 1, NULL, WAIT_MS));
	ck_assert_int_eq(mqb_broker_publish(b, "sc/2", "gone", 4, 1, 0), MQB_OK);
	ck_assert_int_eq(mqb_broker_publish(b, "sync/1", "s", 1, 0, 0), MQB_OK);
	expect_pub(fd, 5, "sync/1", "s", NULL, NULL);

	/* An offline session: messages queue for it. */
	int off = open_persistent(4, "scoff", 0, NULL);
	disconnect_client(off, 4, 0);
	ck_assert_int_eq(mqb_broker_subscribe_client(b, "scoff", "sc/#", 1), MQB_OK);
	ck_assert_int_eq(mqb_broker_publish(b, "sc/3", "q", 1, 1, 0), MQB_OK);
	st_copy st;
	deadline = mr_now_ms() + WAIT_MS;
	do {
		ck_assert_int_eq(get_status("scoff", &st), MQB_OK);
	} while (st.queued < 2 && mr_now_ms() < deadline && (mr_sleep_ms(10), 1));
	/* The retained sc/ret on subscribe, then sc/3. */
	ck_assert_int_eq(st.queued, 2);
	ck_assert_int_eq(st.subscriptions, 1);

	ck_assert_int_eq(mqb_broker_subscribe_client(b, "nobody", "sc/#", 1), MQB_ERR_NOTFOUND);
	ck_assert_int_eq(mqb_broker_unsubscribe_client(b, "nobody", "sc/#"), MQB_ERR_NOTFOUND);
	ck_assert_int_eq(mqb_broker_subscribe_client(b, "sc1", "a/#/b", 1), MQB_ERR_INVAL);
	close(fd);
}
END_TEST

START_TEST(test_runtime_listeners)
{
	ck_assert_int_eq(mqb_broker_add_listener(b, "extra", "127.0.0.1:0"), MQB_OK);
	int xport = 0;
	ck_assert_int_eq(mqb_broker_listener_port(b, "extra", &xport), MQB_OK);
	ck_assert_int_gt(xport, 0);
	ck_assert_int_ne(xport, port);
	ck_assert_int_eq(mqb_broker_add_listener(b, "extra", "127.0.0.1:0"), MQB_ERR_EXISTS);
	char addr[32];
	snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
	ck_assert_int_eq(mqb_broker_add_listener(b, "taken", addr), MQB_ERR_ADDRINUSE);
	ck_assert_int_ne(mqb_broker_add_listener(b, "bad", "not an address"), MQB_OK);

	/* The new port accepts MQTT clients. */
	int lx = -1;
	{
		int save = port;
		port = xport;
		lx = open_client(5, "lx");
		port = save;
	}
	st_copy st;
	ck_assert_int_eq(get_status("lx", &st), MQB_OK);
	ck_assert_str_eq(st.listener, "extra");
	pthread_mutex_lock(&rec_mu);
	ck_assert_str_eq(rec_auth_listener, "extra");
	pthread_mutex_unlock(&rec_mu);
	ck_assert_int_eq(mr_subscribe_sync(lx, 5, 1, "lx/#", 1), 1);

	/* After removal the port refuses; the connection made through it stays. */
	ck_assert_int_eq(mqb_broker_remove_listener(b, "extra"), MQB_OK);
	int refused = 0;
	int64_t deadline = mr_now_ms() + WAIT_MS;
	while (!refused && mr_now_ms() < deadline) {
		int fd = mr_dial(xport);
		if (fd < 0) {
			refused = 1;
		} else {
			close(fd);
			mr_sleep_ms(20);
		}
	}
	ck_assert_msg(refused, "port %d still accepts after mqb_broker_remove_listener", xport);
	ck_assert_int_eq(mr_ping(lx, WAIT_MS, NULL), 1);
	ck_assert_int_eq(mqb_broker_publish(b, "lx/1", "still", 5, 1, 0), MQB_OK);
	expect_pub(lx, 5, "lx/1", "still", NULL, NULL);
	ck_assert_int_eq(mqb_broker_remove_listener(b, "extra"), MQB_ERR_NOTFOUND);
	ck_assert_int_eq(mqb_broker_listener_port(b, "extra", &xport), MQB_ERR_NOTFOUND);
	/* The default listener is untouched. */
	int d = open_client(4, "dflt");
	close(d);
	close(lx);
}
END_TEST

/* Listeners of any type with their settings; names are per type. */
START_TEST(test_open_listener_settings)
{
	const char *const proxied[] = {"proxy_protocol", "true", "max_connections", "10", NULL};
	ck_assert_int_eq(mqb_broker_open_listener(b, "tcp", "lb", "127.0.0.1:0", proxied), MQB_OK);
	int lbport = 0;
	ck_assert_int_eq(mqb_broker_listener_port(b, "tcp.lb", &lbport), MQB_OK);
	ck_assert_int_gt(lbport, 0);
	/* A PROXY v1 header, then MQTT: the client gets the header's address. */
	int fd = mr_dial(lbport);
	ck_assert_int_ge(fd, 0);
	const char hdr[] = "PROXY TCP4 192.0.2.44 127.0.0.1 4444 1883\r\n";
	ck_assert_int_eq(write(fd, hdr, sizeof hdr - 1), (ssize_t)(sizeof hdr - 1));
	mr_connect_opts o = {.proto = 5, .client_id = "viaproxy", .clean = 1, .keepalive = 30};
	mr_buf cb = {0};
	mr_enc_connect(&cb, &o);
	ck_assert_int_eq(mr_send(fd, &cb), 0);
	mr_buf_free(&cb);
	mr_packet ack;
	int sp = -1, rc = -1;
	ck_assert_int_eq(mr_read(fd, &ack, WAIT_MS), 1);
	ck_assert_int_eq(mr_parse_connack(&ack, 5, &sp, &rc, NULL), 0);
	ck_assert_int_eq(rc, 0);
	mr_packet_free(&ack);
	st_copy st;
	ck_assert_int_eq(get_status("viaproxy", &st), MQB_OK);
	ck_assert_str_eq(st.listener, "lb");
	ck_assert_str_eq(st.peer, "192.0.2.44:4444");
	close(fd);

	/* The same name with another type is another listener; a TLS one needs
	 * its certificate, and bad settings are refused. */
	const char *const nocert[] = {"verify", "verify_none", NULL};
	ck_assert_int_eq(mqb_broker_open_listener(b, "ssl", "lb", "127.0.0.1:0", nocert),
	                 MQB_ERR_INVAL);
	const char *const missing[] = {"certfile", "/nonexistent.pem", "keyfile", "/x.key", NULL};
	ck_assert_int_eq(mqb_broker_open_listener(b, "ssl", "lb", "127.0.0.1:0", missing),
	                 MQB_ERR_INVAL);
	const char *const unknown[] = {"no_such_setting", "1", NULL};
	ck_assert_int_eq(mqb_broker_open_listener(b, "tcp", "x2", "127.0.0.1:0", unknown),
	                 MQB_ERR_INVAL);
	const char *const odd[] = {"proxy_protocol", NULL};
	ck_assert_int_eq(mqb_broker_open_listener(b, "tcp", "x3", "127.0.0.1:0", odd),
	                 MQB_ERR_INVAL);
	ck_assert_int_eq(mqb_broker_open_listener(b, "udp", "x4", "127.0.0.1:0", NULL),
	                 MQB_ERR_INVAL);
	ck_assert_int_eq(mqb_broker_open_listener(b, "tcp", "lb", "127.0.0.1:0", NULL),
	                 MQB_ERR_EXISTS);
	ck_assert_int_eq(mqb_broker_remove_listener(b, "tcp.lb"), MQB_OK);
	ck_assert_int_eq(mqb_broker_listener_port(b, "lb", &lbport), MQB_ERR_NOTFOUND);
}
END_TEST

/* Reconfigure -------------------------------------------------------------- */

typedef struct change {
	char key[64], old_value[64], new_value[64];
	int applied;
} change;
static change changes[16];
static int n_changes;

static void on_change(void *user, const char *key, const char *old_value, const char *new_value,
                      int applied)
{
	ck_assert_ptr_eq(user, &n_changes);
	if (n_changes < 16) {
		copy_str(changes[n_changes].key, 64, key);
		copy_str(changes[n_changes].old_value, 64, old_value);
		copy_str(changes[n_changes].new_value, 64, new_value);
		changes[n_changes].applied = applied;
	}
	n_changes++;
}

static const change *find_change(const char *key)
{
	for (int i = 0; i < n_changes && i < 16; i++)
		if (strcmp(changes[i].key, key) == 0)
			return &changes[i];
	return NULL;
}

START_TEST(test_reconfigure)
{
	int before = open_client(5, "before");
	/* The same configuration: nothing differs. */
	mqb_config *cfg = make_cfg();
	n_changes = 0;
	ck_assert_int_eq(mqb_broker_reconfigure(b, cfg, on_change, &n_changes), MQB_OK);
	ck_assert_int_eq(n_changes, 0);

	char old_name[64];
	const change *c;
	ck_assert_int_eq(mqb_config_get(cfg, "node.name", old_name, sizeof old_name), MQB_OK);
	ck_assert_int_eq(mqb_config_set(cfg, "mqtt.max_qos_allowed", "1", NULL, 0), MQB_OK);
	ck_assert_int_eq(mqb_config_set(cfg, "node.name", "other@host", NULL, 0), MQB_OK);
	/* Listeners change only through mqb_broker_add_listener(). */
	ck_assert_int_eq(mqb_config_set(cfg, "listener.tcp.newone", "127.0.0.1:0", NULL, 0),
	                 MQB_OK);
	ck_assert_int_eq(mqb_broker_reconfigure(b, cfg, on_change, &n_changes), MQB_OK);
	mqb_config_destroy(cfg);
	ck_assert_int_ge(n_changes, 3);
	ck_assert_int_le(n_changes, 16);
	for (int i = 0; i < n_changes; i++)
		ck_assert_msg(strcmp(changes[i].key, "mqtt.max_qos_allowed") == 0 ||
		                      strcmp(changes[i].key, "node.name") == 0 ||
		                      strncmp(changes[i].key, "listener.tcp.newone", 19) == 0,
		              "unexpected change reported: %s", changes[i].key);
	c = find_change("listener.tcp.newone");
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(c->applied, 0);
	int np = 0;
	ck_assert_int_eq(mqb_broker_listener_port(b, "newone", &np), MQB_ERR_NOTFOUND);
	c = find_change("mqtt.max_qos_allowed");
	ck_assert_ptr_nonnull(c);
	ck_assert_str_eq(c->old_value, "2");
	ck_assert_str_eq(c->new_value, "1");
	ck_assert_int_eq(c->applied, 1);
	c = find_change("node.name");
	ck_assert_ptr_nonnull(c);
	ck_assert_str_eq(c->old_value, old_name);
	ck_assert_str_eq(c->new_value, "other@host");
	ck_assert_int_eq(c->applied, 0);

	/* A new v5 connection is told Maximum QoS 1 and granted at most 1. */
	int fd = mr_dial(port);
	ck_assert_int_ge(fd, 0);
	mr_connect_opts o = {.proto = 5, .client_id = "after", .clean = 1, .keepalive = 30};
	mr_buf m = {0};
	mr_enc_connect(&m, &o);
	send_free(fd, &m);
	mr_packet pk;
	ck_assert_int_eq(mr_read(fd, &pk, WAIT_MS), 1);
	int rc = -1;
	mr_props props;
	ck_assert_int_eq(mr_parse_connack(&pk, 5, NULL, &rc, &props), 0);
	ck_assert_int_eq(rc, 0);
	ck_assert_int_eq(props.has_maximum_qos, 1);
	ck_assert_int_eq(props.maximum_qos, 1);
	mr_packet_free(&pk);
	ck_assert_int_eq(mr_subscribe_sync(fd, 5, 1, "rq/#", 2), 1);
	ck_assert_int_eq(mqb_broker_reconfigure(b, NULL, NULL, NULL), MQB_ERR_INVAL);
	close(fd);
	close(before);
}
END_TEST

/* Metrics ------------------------------------------------------------------ */

static void wait_metrics(mqb_metrics *out, int (*ok)(const mqb_metrics *m, const mqb_metrics *m0),
                         const mqb_metrics *m0)
{
	int64_t deadline = mr_now_ms() + WAIT_MS;
	do {
		mqb_broker_metrics(b, out);
		if (ok(out, m0))
			return;
		mr_sleep_ms(10);
	} while (mr_now_ms() < deadline);
}

static int traffic_done(const mqb_metrics *m, const mqb_metrics *m0)
{
	return m->messages_received >= m0->messages_received + 4 &&
	       m->messages_sent >= m0->messages_sent + 4 &&
	       m->packets_received >= m0->packets_received + 11 &&
	       m->packets_sent >= m0->packets_sent + 11;
}

static int malformed_done(const mqb_metrics *m, const mqb_metrics *m0)
{
	return m->malformed_packets >= m0->malformed_packets + 1 &&
	       m->disconnects >= m0->disconnects + 1;
}

static int dropped_done(const mqb_metrics *m, const mqb_metrics *m0)
{
	return m->messages_dropped >= m0->messages_dropped + 2;
}

START_TEST(test_metrics)
{
	mqb_metrics m0, m1;
	mqb_broker_metrics(b, &m0);
	int s = open_client(5, "ms");
	int p = open_client(4, "mp");
	ck_assert_int_eq(mr_subscribe_sync(s, 5, 1, "m/#", 1), 1);
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(mr_publish_sync(p, 4, "m/x", "v", 1, 0, (uint16_t)(i + 1), NULL),
		                 0);
	ck_assert_int_eq(mr_publish_sync(p, 4, "m/ret", "r", 1, 1, 9, NULL), 0);
	for (int i = 0; i < 4; i++)
		expect_pub(s, 5, i < 3 ? "m/x" : "m/ret", NULL, NULL, NULL);
	wait_metrics(&m1, traffic_done, &m0);
	/* 2 CONNECT + SUBSCRIBE + 4 PUBLISH + 4 PUBACK in; 2 CONNACK + SUBACK + 4
	 * PUBACK + 4 PUBLISH out. */
	ck_assert(traffic_done(&m1, &m0));
	ck_assert_int_eq(m1.connections, m0.connections + 2);
	ck_assert_int_ge(m1.sessions, m0.sessions + 2);
	ck_assert_int_ge(m1.connects, m0.connects + 2);
	ck_assert_int_ge(m1.subscriptions, m0.subscriptions + 1);
	ck_assert_int_eq(m1.retained, m0.retained + 1);
	ck_assert_int_gt(m1.bytes_received, m0.bytes_received);
	ck_assert_int_gt(m1.bytes_sent, m0.bytes_sent);

	/* A malformed packet (PUBLISH with QoS 3) closes its connection. */
	int bad = open_client(4, "mbad");
	uint8_t junk[] = {0x36, 0x05, 0x00, 0x01, 'a', 0x00, 0x01};
	mr_buf jb = {0};
	mr_put_bytes(&jb, junk, sizeof junk);
	send_free(bad, &jb);
	ck_assert_int_eq(mr_wait_closed(bad, WAIT_MS), 1);
	close(bad);
	mqb_metrics m2;
	wait_metrics(&m2, malformed_done, &m1);
	ck_assert(malformed_done(&m2, &m1));
	ck_assert_int_eq(m2.connections, m0.connections + 2);

	/* Queue overflow of an offline session counts as dropped. */
	int q = open_persistent(4, "mq", 0, NULL);
	ck_assert_int_eq(mr_subscribe_sync(q, 4, 1, "mq/#", 1), 1);
	disconnect_client(q, 4, 0);
	mqb_metrics m3, m4;
	mqb_broker_metrics(b, &m3);
	for (int i = 0; i < 7; i++)
		ck_assert_int_eq(mqb_broker_publish(b, "mq/1", "m", 1, 1, 0), MQB_OK);
	wait_metrics(&m4, dropped_done, &m3);
	/* (>=: messages without subscribers count as dropped too.) */
	ck_assert_int_ge(m4.messages_dropped, m3.messages_dropped + 2);
	close(s);
	close(p);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("api_embed");
	TCase *pure = tcase_create("topics");
	tcase_add_test(pure, test_topic_tables);
	suite_add_tcase(s, pure);
	TCase *tc = tcase_create("broker");
	tcase_set_timeout(tc, 60);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_inproc_subscribe_props);
	tcase_add_test(tc, test_inproc_retained_and_dollar);
	tcase_add_test(tc, test_unsubscribe);
	tcase_add_test(tc, test_publish_props_to_client);
	tcase_add_test(tc, test_host_publish_order);
	tcase_add_test(tc, test_authorize);
	tcase_add_test(tc, test_on_publish);
	tcase_add_test(tc, test_on_deliver);
	tcase_add_test(tc, test_events);
	tcase_add_test(tc, test_calls_from_hooks);
	tcase_add_test(tc, test_inproc_shared);
	tcase_add_test(tc, test_introspection);
	tcase_add_test(tc, test_kick);
	tcase_add_test(tc, test_subscribe_client);
	tcase_add_test(tc, test_runtime_listeners);
	tcase_add_test(tc, test_open_listener_settings);
	tcase_add_test(tc, test_reconfigure);
	tcase_add_test(tc, test_metrics);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_ENV);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
