/*
 * Paho C (libpaho-mqtt3c, synchronous MQTTClient API) against the broker under
 * test. Usage: paho_c_tests <port> [subtest...]
 * Prints TAP lines ("ok N - name" / "not ok N - name") and exits nonzero if a
 * subtest failed. Internal: paho_c_tests <port> --will-child <clientid> <topic>
 * connects with a will and exits without DISCONNECT.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <MQTTClient.h>

#define TIMEOUT_MS 10000L

static char uri[64];
static int failed_checks;
static char uniq[32];

#define CHECK(cond, ...)                                                      \
	do {                                                                  \
		if (!(cond)) {                                                \
			printf("#   %s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
			printf(__VA_ARGS__);                                  \
			printf("\n");                                         \
			failed_checks++;                                      \
			return -1;                                            \
		}                                                             \
	} while (0)

static void topic_of(char *buf, size_t n, const char *base)
{
	snprintf(buf, n, "pahoc/%s/%s", uniq, base);
}

static MQTTClient make(const char *cid, int version)
{
	MQTTClient c = NULL;
	int rc;
	if (version == MQTTVERSION_5) {
		MQTTClient_createOptions co = MQTTClient_createOptions_initializer;
		co.MQTTVersion = MQTTVERSION_5;
		rc = MQTTClient_createWithOptions(&c, uri, cid, MQTTCLIENT_PERSISTENCE_NONE, NULL, &co);
	} else {
		rc = MQTTClient_create(&c, uri, cid, MQTTCLIENT_PERSISTENCE_NONE, NULL);
	}
	if (rc != MQTTCLIENT_SUCCESS) {
		printf("#   MQTTClient_create: %d\n", rc);
		return NULL;
	}
	return c;
}

/* Connects (3.x); returns the rc, sets *sp to session present. */
static int connect3(MQTTClient c, int version, int clean, MQTTClient_willOptions *will, int *sp)
{
	MQTTClient_connectOptions o = MQTTClient_connectOptions_initializer;
	o.keepAliveInterval = 60;
	o.cleansession = clean;
	o.MQTTVersion = version;
	o.connectTimeout = 10;
	o.will = will;
	int rc = MQTTClient_connect(c, &o);
	if (sp)
		*sp = o.returned.sessionPresent;
	return rc;
}

/* Receives one message within the timeout; returns 0 and fills the out
 * parameters (caller frees with MQTTClient_freeMessage/MQTTClient_free). */
static int receive(MQTTClient c, char **topic, MQTTClient_message **m)
{
	long waited = 0;
	while (waited < TIMEOUT_MS) {
		int tl = 0;
		*topic = NULL;
		*m = NULL;
		int rc = MQTTClient_receive(c, topic, &tl, m, 500);
		if (rc != MQTTCLIENT_SUCCESS && rc != MQTTCLIENT_TOPICNAME_TRUNCATED)
			return rc;
		if (*m)
			return 0;
		waited += 500;
	}
	return -1;
}

static int expect_msg(MQTTClient c, const char *topic, const char *payload, int qos, int retained)
{
	char *t = NULL;
	MQTTClient_message *m = NULL;
	int rc = receive(c, &t, &m);
	CHECK(rc == 0, "no message received (rc %d), expected %s", rc, payload);
	int ok = strcmp(t, topic) == 0 && m->payloadlen == (int)strlen(payload) &&
		 memcmp(m->payload, payload, m->payloadlen) == 0 && m->qos == qos &&
		 m->retained == retained;
	if (!ok)
		printf("#   got topic %s payload %.*s qos %d retained %d; expected %s %s %d %d\n", t,
		       m->payloadlen, (char *)m->payload, m->qos, m->retained, topic, payload, qos,
		       retained);
	MQTTClient_freeMessage(&m);
	MQTTClient_free(t);
	CHECK(ok, "message mismatch");
	return 0;
}

static int publish(MQTTClient c, const char *topic, const char *payload, int qos, int retained)
{
	MQTTClient_deliveryToken tok;
	int rc = MQTTClient_publish(c, topic, (int)strlen(payload), payload, qos, retained, &tok);
	CHECK(rc == MQTTCLIENT_SUCCESS, "publish rc %d", rc);
	if (qos > 0) {
		rc = MQTTClient_waitForCompletion(c, tok, TIMEOUT_MS);
		CHECK(rc == MQTTCLIENT_SUCCESS, "waitForCompletion rc %d", rc);
	}
	return 0;
}

static void finish(MQTTClient *c)
{
	if (*c) {
		if (MQTTClient_isConnected(*c))
			MQTTClient_disconnect(*c, 1000);
		MQTTClient_destroy(c);
	}
}

/* ---- subtests ---------------------------------------------------------- */

static int t_pubsub_versions(void)
{
	int versions[] = {MQTTVERSION_3_1, MQTTVERSION_3_1_1};
	for (int vi = 0; vi < 2; vi++) {
		char t[128], cid[64];
		snprintf(cid, sizeof cid, "pcs%d%s", vi, uniq);
		MQTTClient s = make(cid, versions[vi]);
		snprintf(cid, sizeof cid, "pcp%d%s", vi, uniq);
		MQTTClient p = make(cid, versions[vi]);
		CHECK(s && p, "create");
		CHECK(connect3(s, versions[vi], 1, NULL, NULL) == 0, "connect sub");
		CHECK(connect3(p, versions[vi], 1, NULL, NULL) == 0, "connect pub");
		for (int sq = 0; sq <= 2; sq++) {
			snprintf(t, sizeof t, "pahoc/%s/v%d/s%d", uniq, versions[vi], sq);
			int rc = MQTTClient_subscribe(s, t, sq);
			CHECK(rc == MQTTCLIENT_SUCCESS, "subscribe rc %d", rc);
			for (int pq = 0; pq <= 2; pq++) {
				char payload[32];
				snprintf(payload, sizeof payload, "p%d-s%d", pq, sq);
				if (publish(p, t, payload, pq, 0))
					return -1;
				if (expect_msg(s, t, payload, pq < sq ? pq : sq, 0))
					return -1;
			}
		}
		finish(&s);
		finish(&p);
	}
	return 0;
}

static int t_retained(void)
{
	char t[128], cid[64];
	topic_of(t, sizeof t, "retained");
	snprintf(cid, sizeof cid, "pcrp%s", uniq);
	MQTTClient p = make(cid, MQTTVERSION_3_1_1);
	CHECK(p && connect3(p, MQTTVERSION_3_1_1, 1, NULL, NULL) == 0, "connect");
	if (publish(p, t, "kept", 1, 1))
		return -1;
	snprintf(cid, sizeof cid, "pcrs%s", uniq);
	MQTTClient s = make(cid, MQTTVERSION_3_1_1);
	CHECK(s && connect3(s, MQTTVERSION_3_1_1, 1, NULL, NULL) == 0, "connect");
	CHECK(MQTTClient_subscribe(s, t, 2) == 0, "subscribe");
	if (expect_msg(s, t, "kept", 1, 1))
		return -1;
	/* live forwarding: retain flag cleared (3.1.1) */
	if (publish(p, t, "live", 1, 1) || expect_msg(s, t, "live", 1, 0))
		return -1;
	/* delete */
	if (publish(p, t, "", 1, 1))
		return -1;
	finish(&s);
	finish(&p);
	return 0;
}

static int t_will(const char *self)
{
	char t[128], cid[64];
	topic_of(t, sizeof t, "will");
	snprintf(cid, sizeof cid, "pcws%s", uniq);
	MQTTClient s = make(cid, MQTTVERSION_3_1_1);
	CHECK(s && connect3(s, MQTTVERSION_3_1_1, 1, NULL, NULL) == 0, "connect");
	CHECK(MQTTClient_subscribe(s, t, 2) == 0, "subscribe");
	snprintf(cid, sizeof cid, "pcwc%s", uniq);
	pid_t pid = fork();
	if (pid == 0) {
		execl(self, self, uri + strlen("tcp://127.0.0.1:"), "--will-child", cid, t, (char *)NULL);
		_exit(127);
	}
	int st = 0;
	waitpid(pid, &st, 0);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "will child failed (status %d)", st);
	if (expect_msg(s, t, "will-payload", 1, 0))
		return -1;
	finish(&s);
	return 0;
}

static int will_child(const char *cid, const char *topic)
{
	MQTTClient c = make(cid, MQTTVERSION_3_1_1);
	MQTTClient_willOptions w = MQTTClient_willOptions_initializer;
	w.topicName = topic;
	w.message = "will-payload";
	w.qos = 1;
	w.retained = 0;
	if (!c || connect3(c, MQTTVERSION_3_1_1, 1, &w, NULL) != 0)
		return 1;
	_exit(0); /* no DISCONNECT: the kernel closes the socket */
}

static int t_session(void)
{
	char t[128], cid[64], pcid[64];
	topic_of(t, sizeof t, "session");
	snprintf(cid, sizeof cid, "pcss%s", uniq);
	snprintf(pcid, sizeof pcid, "pcsp%s", uniq);
	int sp = -1;
	MQTTClient s = make(cid, MQTTVERSION_3_1_1);
	CHECK(s && connect3(s, MQTTVERSION_3_1_1, 0, NULL, &sp) == 0, "connect");
	CHECK(MQTTClient_subscribe(s, t, 2) == 0, "subscribe");
	MQTTClient_disconnect(s, 1000);
	MQTTClient p = make(pcid, MQTTVERSION_3_1_1);
	CHECK(p && connect3(p, MQTTVERSION_3_1_1, 1, NULL, NULL) == 0, "connect");
	if (publish(p, t, "offline-1", 1, 0) || publish(p, t, "offline-2", 2, 0))
		return -1;
	CHECK(connect3(s, MQTTVERSION_3_1_1, 0, NULL, &sp) == 0, "reconnect");
	CHECK(sp == 1, "session present %d", sp);
	/* order is per QoS level; one message of each */
	int seen1 = 0, seen2 = 0;
	for (int i = 0; i < 2; i++) {
		char *tn = NULL;
		MQTTClient_message *m = NULL;
		CHECK(receive(s, &tn, &m) == 0, "queued message %d not received", i);
		if (m->payloadlen == 9 && memcmp(m->payload, "offline-1", 9) == 0 && m->qos == 1)
			seen1++;
		if (m->payloadlen == 9 && memcmp(m->payload, "offline-2", 9) == 0 && m->qos == 2)
			seen2++;
		MQTTClient_freeMessage(&m);
		MQTTClient_free(tn);
	}
	CHECK(seen1 == 1 && seen2 == 1, "queued messages %d %d", seen1, seen2);
	MQTTClient_disconnect(s, 1000);
	/* clean session discards */
	CHECK(connect3(s, MQTTVERSION_3_1_1, 1, NULL, &sp) == 0, "reconnect clean");
	CHECK(sp == 0, "session present after clean %d", sp);
	finish(&s);
	finish(&p);
	return 0;
}

static int connect5(MQTTClient c, int clean_start, int expiry, MQTTClient_willOptions *will,
		    MQTTProperties *willprops, int *sp)
{
	MQTTClient_connectOptions o = MQTTClient_connectOptions_initializer5;
	MQTTProperties props = MQTTProperties_initializer;
	MQTTProperty p;
	p.identifier = MQTTPROPERTY_CODE_SESSION_EXPIRY_INTERVAL;
	p.value.integer4 = expiry;
	MQTTProperties_add(&props, &p);
	o.keepAliveInterval = 60;
	o.cleanstart = clean_start;
	o.connectTimeout = 10;
	o.will = will;
	MQTTResponse r = MQTTClient_connect5(c, &o, &props, willprops);
	MQTTProperties_free(&props);
	if (sp)
		*sp = o.returned.sessionPresent;
	int rc = r.reasonCode;
	MQTTResponse_free(r);
	return rc;
}

static int t_mqtt5(void)
{
	char t[128], cid[64], pcid[64];
	topic_of(t, sizeof t, "v5");
	snprintf(cid, sizeof cid, "pc5s%s", uniq);
	snprintf(pcid, sizeof pcid, "pc5p%s", uniq);
	MQTTClient s = make(cid, MQTTVERSION_5);
	MQTTClient p = make(pcid, MQTTVERSION_5);
	int sp = -1;
	CHECK(s && p, "create");
	CHECK(connect5(s, 1, 60, NULL, NULL, &sp) == 0, "connect5");
	CHECK(connect5(p, 1, 0, NULL, NULL, NULL) == 0, "connect5");

	MQTTSubscribe_options so = MQTTSubscribe_options_initializer;
	so.noLocal = 1;
	MQTTProperties sprops = MQTTProperties_initializer;
	MQTTProperty sid;
	sid.identifier = MQTTPROPERTY_CODE_SUBSCRIPTION_IDENTIFIER;
	sid.value.integer4 = 9;
	MQTTProperties_add(&sprops, &sid);
	MQTTResponse r = MQTTClient_subscribe5(s, t, 2, &so, &sprops);
	MQTTProperties_free(&sprops);
	CHECK(r.reasonCode == 2, "granted %d", r.reasonCode);
	MQTTResponse_free(r);

	/* publish with user property + content type */
	MQTTProperties pp = MQTTProperties_initializer;
	MQTTProperty up;
	up.identifier = MQTTPROPERTY_CODE_USER_PROPERTY;
	up.value.data.data = "key";
	up.value.data.len = 3;
	up.value.value.data = "value";
	up.value.value.len = 5;
	MQTTProperties_add(&pp, &up);
	MQTTProperty ct;
	ct.identifier = MQTTPROPERTY_CODE_CONTENT_TYPE;
	ct.value.data.data = "text/plain";
	ct.value.data.len = 10;
	MQTTProperties_add(&pp, &ct);
	MQTTClient_message m = MQTTClient_message_initializer;
	m.payload = "five";
	m.payloadlen = 4;
	m.qos = 2;
	m.properties = pp;
	MQTTClient_deliveryToken tok;
	r = MQTTClient_publishMessage5(p, t, &m, &tok);
	MQTTProperties_free(&pp);
	CHECK(r.reasonCode < 0x80, "publish5 rc %d", r.reasonCode);
	MQTTResponse_free(r);
	CHECK(MQTTClient_waitForCompletion(p, tok, TIMEOUT_MS) == 0, "completion");

	char *tn = NULL;
	MQTTClient_message *got = NULL;
	CHECK(receive(s, &tn, &got) == 0, "v5 message not received");
	CHECK(strcmp(tn, t) == 0 && got->payloadlen == 4 && memcmp(got->payload, "five", 4) == 0 &&
		      got->qos == 2,
	      "v5 message mismatch");
	MQTTProperty *gp = MQTTProperties_getProperty(&got->properties, MQTTPROPERTY_CODE_USER_PROPERTY);
	CHECK(gp && gp->value.data.len == 3 && memcmp(gp->value.data.data, "key", 3) == 0 &&
		      gp->value.value.len == 5 && memcmp(gp->value.value.data, "value", 5) == 0,
	      "user property");
	gp = MQTTProperties_getProperty(&got->properties, MQTTPROPERTY_CODE_CONTENT_TYPE);
	CHECK(gp && gp->value.data.len == 10, "content type");
	CHECK(MQTTProperties_getNumericValue(&got->properties,
					     MQTTPROPERTY_CODE_SUBSCRIPTION_IDENTIFIER) == 9,
	      "subscription identifier");
	MQTTClient_freeMessage(&got);
	MQTTClient_free(tn);

	/* no local: own publish is not received; session resumption with expiry */
	MQTTClient_message own = MQTTClient_message_initializer;
	own.payload = "own";
	own.payloadlen = 3;
	own.qos = 1;
	r = MQTTClient_publishMessage5(s, t, &own, &tok);
	MQTTResponse_free(r);
	CHECK(MQTTClient_waitForCompletion(s, tok, TIMEOUT_MS) == 0, "completion");
	MQTTClient_disconnect5(s, 1000, MQTTREASONCODE_NORMAL_DISCONNECTION, NULL);
	m.properties = (MQTTProperties)MQTTProperties_initializer;
	m.payload = "queued";
	m.payloadlen = 6;
	m.qos = 1;
	r = MQTTClient_publishMessage5(p, t, &m, &tok);
	MQTTResponse_free(r);
	CHECK(MQTTClient_waitForCompletion(p, tok, TIMEOUT_MS) == 0, "completion");
	CHECK(connect5(s, 0, 0, NULL, NULL, &sp) == 0, "reconnect5");
	/* (paho C fills returned.sessionPresent for 3.1.1 only: the queued
	 * message below proves the session was resumed) */
	CHECK(receive(s, &tn, &got) == 0, "queued v5 message not received");
	CHECK(got->payloadlen == 6 && memcmp(got->payload, "queued", 6) == 0,
	      "expected 'queued' (own message must not be delivered), got %.*s", got->payloadlen,
	      (char *)got->payload);
	MQTTClient_freeMessage(&got);
	MQTTClient_free(tn);
	finish(&s);
	finish(&p);
	return 0;
}

static int t_v5_will(void)
{
	char t[128], cid[64], wcid[64];
	topic_of(t, sizeof t, "v5will");
	snprintf(cid, sizeof cid, "pc5ws%s", uniq);
	snprintf(wcid, sizeof wcid, "pc5wc%s", uniq);
	MQTTClient s = make(cid, MQTTVERSION_5);
	CHECK(s && connect5(s, 1, 0, NULL, NULL, NULL) == 0, "connect");
	MQTTSubscribe_options so = MQTTSubscribe_options_initializer;
	MQTTResponse r = MQTTClient_subscribe5(s, t, 1, &so, NULL);
	MQTTResponse_free(r);
	MQTTClient w = make(wcid, MQTTVERSION_5);
	MQTTClient_willOptions wo = MQTTClient_willOptions_initializer;
	wo.topicName = t;
	wo.message = "v5-will";
	wo.qos = 1;
	CHECK(w && connect5(w, 1, 0, &wo, NULL, NULL) == 0, "connect with will");
	/* DISCONNECT with reason 0x04: disconnect with will message */
	MQTTClient_disconnect5(w, 1000, MQTTREASONCODE_DISCONNECT_WITH_WILL_MESSAGE, NULL);
	if (expect_msg(s, t, "v5-will", 1, 0))
		return -1;
	finish(&w);
	finish(&s);
	return 0;
}

struct subtest {
	const char *name;
	int (*fn)(void);
};

static const char *self_path;
static int t_will_wrap(void) { return t_will(self_path); }

static const struct subtest tests[] = {
	{"pubsub_qos_v31_v311", t_pubsub_versions},
	{"retained", t_retained},
	{"will_on_abrupt_close", t_will_wrap},
	{"session_resumption", t_session},
	{"mqtt5_properties_noLocal_session", t_mqtt5},
	{"mqtt5_disconnect_with_will", t_v5_will},
};

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s <port> [subtest...]\n", argv[0]);
		return 2;
	}
	snprintf(uri, sizeof uri, "tcp://127.0.0.1:%s", argv[1]);
	if (argc == 5 && strcmp(argv[2], "--will-child") == 0)
		return will_child(argv[3], argv[4]);
	self_path = argv[0];
	if (strchr(self_path, '/') == NULL)
		self_path = "/proc/self/exe";
	snprintf(uniq, sizeof uniq, "%ld%d", (long)time(NULL) % 100000, (int)getpid());
	size_t n = sizeof tests / sizeof tests[0];
	int ran = 0, fails = 0;
	printf("1..%zu\n", argc > 2 ? (size_t)(argc - 2) : n);
	for (size_t i = 0; i < n; i++) {
		int selected = argc == 2;
		for (int a = 2; a < argc; a++)
			selected |= strcmp(argv[a], tests[i].name) == 0;
		if (!selected)
			continue;
		ran++;
		fflush(stdout);
		int rc = tests[i].fn();
		printf("%sok %d - %s\n", rc == 0 ? "" : "not ", ran, tests[i].name);
		fflush(stdout);
		fails += rc != 0;
	}
	return fails ? 1 : 0;
}
