/* Sessions: in-flight window, queueing and its limits, redelivery with DUP,
 * expiry while queued, session end, merged overlapping subscriptions and
 * delayed wills. A client is one end of a socketpair; what the broker writes
 * is read from the other end and decoded with the codec. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/core.h"

typedef struct fixture {
	mqb_broker *b;
	mqbi_worker *w;
	mqbi_listener ls;
	int peer; /* the test's end of the socketpair */
} fixture;

static fixture fx;

static void setup_with(const char *key, const char *value)
{
	mqb_config *cfg;
	ck_assert_int_eq(mqb_config_create(&cfg, NULL), MQB_OK);
	ck_assert_int_eq(mqb_config_set(cfg, "node.loop_threads", "1", NULL, 0), MQB_OK);
	ck_assert_int_eq(mqb_config_set(cfg, "listener.tcp.default", "off", NULL, 0), MQB_OK);
	if (key)
		ck_assert_int_eq(mqb_config_set(cfg, key, value, NULL, 0), MQB_OK);
	ck_assert_int_eq(mqb_broker_create(&fx.b, cfg), MQB_OK);
	mqb_config_destroy(cfg);
	fx.w = &fx.b->workers[0];
	memset(&fx.ls, 0, sizeof fx.ls);
	snprintf(fx.ls.cfg.name, sizeof fx.ls.cfg.name, "test");
	fx.ls.cfg.max_connections = 100;
	fx.peer = -1;
}

static void setup(void)
{
	setup_with(NULL, NULL);
}

static void teardown(void)
{
	if (fx.peer >= 0)
		close(fx.peer);
	mqb_broker_destroy(fx.b);
}

/* A connected v5 client attached to session `s`. */
static mqbi_client *connect_client(mqbi_session *s, uint16_t receive_max)
{
	int sv[2];
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	mqbi_client_accept(fx.w, &fx.ls, sv[0]);
	mqbi_client *c = fx.w->clients;
	ck_assert_ptr_nonnull(c);
	c->state = MQBI_CS_CONNECTED;
	c->level = MQBI_V5;
	c->receive_max_out = receive_max;
	c->client_id = mqbi_strndup(&fx.b->alloc, s->client_id, s->id_len);
	if (fx.peer >= 0)
		close(fx.peer);
	fx.peer = sv[1];
	mqbi_session_attach(s, c);
	return c;
}

static mqbi_msg *make_msg(const char *topic, const char *payload, uint8_t qos, bool has_expiry,
                          uint32_t expiry)
{
	mqbi_msg *m = mqbi_msg_create(&fx.b->alloc, topic, strlen(topic), NULL, 0, payload,
	                              strlen(payload), qos, false, "pub", 3, NULL, has_expiry,
	                              expiry, mqbi_loop_now(fx.w->loop));
	ck_assert_ptr_nonnull(m);
	return m;
}

static void deliver(mqbi_session *s, const char *topic, const char *payload, uint8_t qos)
{
	mqbi_msg *m = make_msg(topic, payload, qos, false, 0);
	mqbi_session_deliver(s, m, qos, false, NULL, 0, false);
	mqbi_msg_unref(&fx.b->alloc, m);
}

/* Reads every PUBLISH the broker wrote; returns how many, filling out[]. */
typedef struct seen {
	char payload[32];
	uint16_t packet_id;
	uint8_t qos;
	bool dup;
	uint32_t sub_ids[4];
	uint32_t n_sub_ids;
} seen;

static int read_publishes(seen *out, int max)
{
	mqbi_worker_flush(fx.w);
	static uint8_t buf[65536];
	ssize_t n = read(fx.peer, buf, sizeof buf);
	if (n <= 0)
		return 0;
	size_t pos = 0;
	int count = 0;
	mqbi_dec_ctx ctx = {.level = MQBI_V5, .from_client = false};
	while (pos < (size_t)n && count < max) {
		mqbi_packet p;
		size_t used;
		uint8_t reason;
		ck_assert_int_eq(mqbi_decode(buf + pos, (size_t)n - pos, &ctx, &p, &used, &reason),
		                 MQBI_DEC_OK);
		pos += used;
		if (p.type != MQBI_PUBLISH)
			continue;
		seen *s = &out[count++];
		memset(s, 0, sizeof *s);
		snprintf(s->payload, sizeof s->payload, "%.*s", (int)p.u.publish.payload.len,
		         (const char *)p.u.publish.payload.ptr);
		s->packet_id = p.u.publish.packet_id;
		s->qos = p.u.publish.qos;
		s->dup = p.u.publish.dup;
		/* Subscription identifiers: walk the raw property block. */
		const uint8_t *pr = p.u.publish.props.raw;
		uint32_t pl = p.u.publish.props.raw_len, i = 0;
		while (i < pl) {
			uint8_t id = pr[i++];
			if (id == MQBI_PROP_SUB_ID) {
				uint32_t v;
				int k = mqbi_varint_decode(pr + i, pl - i, &v);
				ck_assert_int_gt(k, 0);
				if (s->n_sub_ids < 4)
					s->sub_ids[s->n_sub_ids++] = v;
				i += (uint32_t)k;
			} else {
				break; /* the identifiers come after expiry/alias, which these tests
				          do not set */
			}
		}
	}
	return count;
}

START_TEST(inflight_window_then_queue)
{
	mqbi_session *s = mqbi_session_create(fx.w, "c1", 2);
	s->expiry = 60;
	mqbi_client *c = connect_client(s, 2);
	for (int i = 0; i < 5; i++) {
		char p[8];
		snprintf(p, sizeof p, "m%d", i);
		deliver(s, "t", p, 1);
	}
	seen got[8];
	/* Receive Maximum 2: two in flight, three queued [MQTT-3.3.4-9]. */
	ck_assert_int_eq(read_publishes(got, 8), 2);
	ck_assert_str_eq(got[0].payload, "m0");
	ck_assert_str_eq(got[1].payload, "m1");
	ck_assert_uint_eq(s->inflight_count, 2);
	ck_assert_uint_eq(s->queue.count, 3);
	/* Each PUBACK lets exactly one more go, in order. */
	mqbi_ack a = {.packet_id = got[0].packet_id};
	mqbi_handle_ack(c, MQBI_PUBACK, &a);
	ck_assert_int_eq(read_publishes(got, 8), 1);
	ck_assert_str_eq(got[0].payload, "m2");
	ck_assert_uint_eq(s->queue.count, 2);
}
END_TEST

START_TEST(qos0_is_not_held_by_the_window)
{
	mqbi_session *s = mqbi_session_create(fx.w, "c1", 2);
	s->expiry = 60;
	connect_client(s, 1);
	deliver(s, "t", "q1", 1);
	deliver(s, "t", "q2", 1); /* waits: window of 1 */
	deliver(s, "t", "z", 0);  /* QoS 0 needs no slot */
	seen got[8];
	ck_assert_int_eq(read_publishes(got, 8), 2);
	ck_assert_str_eq(got[0].payload, "q1");
	ck_assert_str_eq(got[1].payload, "z");
	ck_assert_uint_eq(got[1].qos, 0);
}
END_TEST

START_TEST(offline_queue_drops_qos0_first)
{
	teardown();
	setup_with("mqtt.max_mqueue_len", "3");
	mqbi_session *s = mqbi_session_create(fx.w, "c1", 2);
	s->expiry = 60;
	deliver(s, "t", "a0", 0);
	deliver(s, "t", "b1", 1);
	deliver(s, "t", "c1", 1);
	uint64_t dropped = MQBI_READ(fx.w->m.messages_dropped);
	deliver(s, "t", "d1", 1); /* full: the QoS 0 message goes */
	ck_assert_uint_eq(MQBI_READ(fx.w->m.messages_dropped), dropped + 1);
	deliver(s, "t", "e1", 1); /* full again, no QoS 0 left: the oldest goes */
	deliver(s, "t", "f0", 0); /* full: a new QoS 0 message is refused */
	ck_assert_uint_eq(MQBI_READ(fx.w->m.messages_dropped), dropped + 3);
	connect_client(s, 10);
	seen got[8];
	ck_assert_int_eq(read_publishes(got, 8), 3);
	ck_assert_str_eq(got[0].payload, "c1");
	ck_assert_str_eq(got[1].payload, "d1");
	ck_assert_str_eq(got[2].payload, "e1");
}
END_TEST

START_TEST(reconnect_resends_inflight_with_dup)
{
	mqbi_session *s = mqbi_session_create(fx.w, "c1", 2);
	s->expiry = 60;
	mqbi_client *c = connect_client(s, 10);
	deliver(s, "t", "one", 1);
	deliver(s, "t", "two", 2);
	seen got[8];
	ck_assert_int_eq(read_publishes(got, 8), 2);
	ck_assert(!got[0].dup);
	uint16_t id1 = got[0].packet_id, id2 = got[1].packet_id;
	mqbi_client_close(c, MQBI_RC_UNSPECIFIED); /* connection lost, session kept */
	mqbi_worker_flush(fx.w);
	ck_assert_ptr_eq(mqbi_session_find(fx.w, "c1", 2), s);
	connect_client(s, 10);
	/* [MQTT-4.4.0-1]: resent with their packet ids and DUP = 1. */
	ck_assert_int_eq(read_publishes(got, 8), 2);
	ck_assert_str_eq(got[0].payload, "one");
	ck_assert_uint_eq(got[0].packet_id, id1);
	ck_assert(got[0].dup);
	ck_assert_str_eq(got[1].payload, "two");
	ck_assert_uint_eq(got[1].packet_id, id2);
	ck_assert(got[1].dup);
}
END_TEST

START_TEST(qos2_after_pubrec_resends_pubrel_only)
{
	mqbi_session *s = mqbi_session_create(fx.w, "c1", 2);
	s->expiry = 60;
	mqbi_client *c = connect_client(s, 10);
	deliver(s, "t", "x", 2);
	seen got[2];
	ck_assert_int_eq(read_publishes(got, 2), 1);
	mqbi_ack a = {.packet_id = got[0].packet_id};
	mqbi_handle_ack(c, MQBI_PUBREC, &a);
	ck_assert_int_eq(mqbi_session_inflight_find(s, got[0].packet_id)->state,
	                 MQBI_DS_WAIT_PUBCOMP);
	mqbi_worker_flush(fx.w);
	uint8_t junk[64];
	(void)!read(fx.peer, junk, sizeof junk); /* the PUBREL */
	mqbi_client_close(c, MQBI_RC_UNSPECIFIED);
	mqbi_worker_flush(fx.w);
	c = connect_client(s, 10);
	mqbi_worker_flush(fx.w);
	uint8_t buf[16];
	ssize_t n = read(fx.peer, buf, sizeof buf);
	ck_assert_int_eq(n, 4); /* PUBREL, short form */
	ck_assert_uint_eq(buf[0], 0x62);
	ck_assert_uint_eq((buf[2] << 8) | buf[3], got[0].packet_id);
	mqbi_handle_ack(c, MQBI_PUBCOMP, &a);
	ck_assert_uint_eq(s->inflight_count, 0);
}
END_TEST

START_TEST(expired_messages_are_not_delivered)
{
	mqbi_session *s = mqbi_session_create(fx.w, "c1", 2);
	s->expiry = 60;
	mqbi_msg *m = make_msg("t", "old", 1, true, 0); /* expires at once */
	mqbi_session_deliver(s, m, 1, false, NULL, 0, false);
	mqbi_msg_unref(&fx.b->alloc, m);
	deliver(s, "t", "fresh", 1);
	uint64_t expired = MQBI_READ(fx.w->m.messages_expired);
	connect_client(s, 10);
	seen got[4];
	ck_assert_int_eq(read_publishes(got, 4), 1);
	ck_assert_str_eq(got[0].payload, "fresh");
	ck_assert_uint_eq(MQBI_READ(fx.w->m.messages_expired), expired + 1);
}
END_TEST

START_TEST(session_expiry_zero_ends_at_disconnect)
{
	mqbi_session *s = mqbi_session_create(fx.w, "c1", 2);
	s->expiry = 0;
	mqbi_client *c = connect_client(s, 10);
	mqbi_client_close(c, MQBI_RC_SUCCESS);
	mqbi_worker_flush(fx.w);
	ck_assert_ptr_null(mqbi_session_find(fx.w, "c1", 2));
	ck_assert_uint_eq(MQBI_READ(fx.w->m.sessions), 0);
}
END_TEST

START_TEST(overlapping_subscriptions_merge)
{
	mqbi_session *s = mqbi_session_create(fx.w, "c1", 2);
	s->expiry = 60;
	connect_client(s, 10);
	/* Two routes of one session (marked multi) and one of another. */
	mqbi_route r1 = {s, 7, 1 | MQBI_ROUTE_MULTI};
	mqbi_route r2 = {s, 9, 2 | MQBI_ROUTE_MULTI};
	ck_assert_int_eq(mqbi_trie_add(fx.b->trie, "a/+", 3, "", 0, &r1, NULL), MQB_OK);
	ck_assert_int_eq(mqbi_trie_add(fx.b->trie, "a/#", 3, "", 0, &r2, NULL), MQB_OK);
	mqbi_session *other = mqbi_session_create(fx.w, "c2", 2);
	mqbi_route r3 = {other, 0, 0};
	ck_assert_int_eq(mqbi_trie_add(fx.b->trie, "a/b", 3, "", 0, &r3, NULL), MQB_OK);
	mqbi_msg *m = make_msg("a/b", "hi", 2, false, 0);
	ck_assert_uint_eq(mqbi_route_message(fx.w, m), 2);
	mqbi_msg_unref(&fx.b->alloc, m);
	seen got[4];
	/* One delivery, the higher QoS, both identifiers [MQTT-3.3.4-3..5]. */
	ck_assert_int_eq(read_publishes(got, 4), 1);
	ck_assert_uint_eq(got[0].qos, 2);
	ck_assert_uint_eq(got[0].n_sub_ids, 2);
	ck_assert(got[0].sub_ids[0] + got[0].sub_ids[1] == 16);
	mqbi_trie_remove(fx.b->trie, "a/+", 3, "", 0, s);
	mqbi_trie_remove(fx.b->trie, "a/#", 3, "", 0, s);
	mqbi_trie_remove(fx.b->trie, "a/b", 3, "", 0, other);
}
END_TEST

START_TEST(delayed_will_cancelled_and_sent_at_session_end)
{
	mqbi_session *s = mqbi_session_create(fx.w, "c1", 2);
	s->expiry = 60;
	mqbi_session *sub = mqbi_session_create(fx.w, "watcher", 7);
	sub->expiry = 60;
	connect_client(sub, 10);
	mqbi_route r = {sub, 0, 1};
	ck_assert_int_eq(mqbi_trie_add(fx.b->trie, "will", 4, "", 0, &r, NULL), MQB_OK);

	/* Cancelled by a reconnect within the delay [MQTT-3.1.3-9]. */
	mqbi_session_schedule_will(s, make_msg("will", "w1", 1, false, 0), 3600);
	mqbi_session_cancel_will(s);
	ck_assert_ptr_null(s->pending_will);
	/* Sent when the session ends before the delay. */
	mqbi_session_schedule_will(s, make_msg("will", "w2", 1, false, 0), 3600);
	mqbi_session_end(s, "test");
	seen got[4];
	ck_assert_int_eq(read_publishes(got, 4), 1);
	ck_assert_str_eq(got[0].payload, "w2");
	mqbi_trie_remove(fx.b->trie, "will", 4, "", 0, sub);
}
END_TEST

static Suite *session_suite(void)
{
	Suite *s = suite_create("session");
	TCase *tc = tcase_create("session");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, inflight_window_then_queue);
	tcase_add_test(tc, qos0_is_not_held_by_the_window);
	tcase_add_test(tc, offline_queue_drops_qos0_first);
	tcase_add_test(tc, reconnect_resends_inflight_with_dup);
	tcase_add_test(tc, qos2_after_pubrec_resends_pubrel_only);
	tcase_add_test(tc, expired_messages_are_not_delivered);
	tcase_add_test(tc, session_expiry_zero_ends_at_disconnect);
	tcase_add_test(tc, overlapping_subscriptions_merge);
	tcase_add_test(tc, delayed_will_cancelled_and_sent_at_session_end);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(session_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
