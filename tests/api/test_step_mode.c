/* Step mode: the broker runs on the test's own thread, driven by a poll()
 * loop on mqb_broker_fd() with mqb_broker_timeout() and mqb_broker_step().
 * The loop steps the broker only when its fd is readable or its timeout ran
 * out, as a host following the documented contract would. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <check.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <mqttbroker.h>

#include "mqtt_raw.h"
#include "proc_count.h"

static mqb_broker *b;
static int port;
static pthread_t main_thread;
static atomic_int hook_calls, hook_wrong_thread, stop_from_hook;
static atomic_int ev_connected;

static int count_threads(void)
{
	return count_proc_entries("/proc/self/task");
}

static void on_thread_check(void)
{
	atomic_fetch_add(&hook_calls, 1);
	if (!pthread_equal(pthread_self(), main_thread))
		atomic_fetch_add(&hook_wrong_thread, 1);
}

static void on_event(void *user, const mqb_event *ev)
{
	(void)user;
	on_thread_check();
	if (ev->type == MQB_EVENT_CONNECTED) {
		atomic_fetch_add(&ev_connected, 1);
		if (ev->client_id && strcmp(ev->client_id, "stopper") == 0) {
			atomic_fetch_add(&stop_from_hook, 1);
			mqb_broker_stop(b);
		}
	}
}

static mqb_verdict authorize(void *user, const mqb_client *c, mqb_action a, const char *topic,
                             int *qos)
{
	(void)user;
	(void)c;
	(void)a;
	(void)topic;
	(void)qos;
	on_thread_check();
	return MQB_IGNORE;
}

static void setup(void)
{
	main_thread = pthread_self();
	atomic_store(&hook_calls, 0);
	atomic_store(&hook_wrong_thread, 0);
	atomic_store(&ev_connected, 0);
	int threads0 = count_threads();
	mqb_config *cfg;
	ck_assert_int_eq(mqb_config_create(&cfg, NULL), MQB_OK);
	ck_assert_int_eq(mqb_config_set(cfg, "listener.tcp.default", "127.0.0.1:0", NULL, 0), 0);
	ck_assert_int_eq(mqb_config_set(cfg, "sys.interval", "0", NULL, 0), 0);
	ck_assert_int_eq(mqb_config_set(cfg, "node.drain_timeout", "1s", NULL, 0), 0);
	ck_assert_int_eq(mqb_config_set(cfg, "mqtt.idle_timeout", "1s", NULL, 0), 0);
	ck_assert_int_eq(mqb_broker_create(&b, cfg), MQB_OK);
	mqb_config_destroy(cfg);
	mqb_hooks h;
	memset(&h, 0, sizeof h);
	h.on_event = on_event;
	h.authorize = authorize;
	ck_assert_int_eq(mqb_broker_set_hooks(b, &h), MQB_OK);
	ck_assert_int_eq(mqb_broker_start_stepped(b), MQB_OK);
	/* Step mode starts no thread. */
	ck_assert_int_eq(count_threads(), threads0);
	ck_assert_int_ge(mqb_broker_fd(b), 0);
	ck_assert_int_eq(mqb_broker_listener_port(b, "default", &port), MQB_OK);
	ck_assert_int_gt(port, 0);
}

static void teardown(void)
{
	ck_assert_msg(atomic_load(&hook_wrong_thread) == 0,
	              "%d of %d hook calls not on the stepping thread",
	              atomic_load(&hook_wrong_thread), atomic_load(&hook_calls));
	mqb_broker_destroy(b);
	b = NULL;
}

/* One iteration of the host loop: polls the broker fd (and `fd` if >= 0) for
 * at most `max_ms` and the broker's timeout; steps the broker if its fd is
 * readable or its timer is due. Returns 1 if `fd` is readable. */
static int host_iteration(int fd, int max_ms)
{
	struct pollfd p[2] = {{mqb_broker_fd(b), POLLIN, 0}, {fd, POLLIN, 0}};
	int bt = mqb_broker_timeout(b);
	int t = (bt >= 0 && bt < max_ms) ? bt : max_ms;
	int n = poll(p, fd >= 0 ? 2 : 1, t);
	ck_assert_int_ge(n, 0);
	if ((p[0].revents & POLLIN) || (n == 0 && t == bt))
		ck_assert_int_eq(mqb_broker_step(b, 0), MQB_OK);
	return fd >= 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR));
}

/* Runs the broker until `fd` is readable; 1 if so within timeout_ms. */
static int pump_until_readable(int fd, int timeout_ms)
{
	int64_t deadline = mr_now_ms() + timeout_ms;
	for (;;) {
		int left = (int)(deadline - mr_now_ms());
		if (left <= 0)
			return 0;
		if (host_iteration(fd, left))
			return 1;
	}
}

/* Runs the broker for about ms milliseconds. */
static void pump_for(int ms)
{
	int64_t deadline = mr_now_ms() + ms;
	for (;;) {
		int left = (int)(deadline - mr_now_ms());
		if (left <= 0)
			return;
		host_iteration(-1, left);
	}
}

/* Reads one packet from fd, running the broker meanwhile. 1, or -1 on EOF. */
static int read_stepped(int fd, mr_packet *p, int timeout_ms)
{
	if (!pump_until_readable(fd, timeout_ms))
		return 0;
	return mr_read(fd, p, 2000);
}

static void send_free(int fd, mr_buf *m)
{
	ck_assert_int_eq(mr_send(fd, m), 0);
	mr_buf_free(m);
}

static int connect_stepped(int proto, const char *id, uint16_t keepalive)
{
	int fd = mr_dial(port); /* completes through the listen backlog */
	ck_assert_int_ge(fd, 0);
	mr_connect_opts o = {.proto = proto, .client_id = id, .clean = 1, .keepalive = keepalive};
	mr_buf m = {0};
	mr_enc_connect(&m, &o);
	send_free(fd, &m);
	mr_packet p;
	ck_assert_int_eq(read_stepped(fd, &p, 10000), 1);
	int rc = -1;
	ck_assert_int_eq(mr_parse_connack(&p, proto, NULL, &rc, NULL), 0);
	ck_assert_int_eq(rc, 0);
	mr_packet_free(&p);
	return fd;
}

static void subscribe_stepped(int fd, int proto, uint16_t pid, const char *filter, int qos)
{
	mr_buf m = {0};
	mr_enc_subscribe(&m, proto, pid, filter, qos, 0);
	send_free(fd, &m);
	mr_packet p;
	ck_assert_int_eq(read_stepped(fd, &p, 10000), 1);
	uint16_t rpid;
	int code;
	ck_assert_int_eq(mr_parse_suback(&p, proto, &rpid, &code, 1), 1);
	ck_assert_int_eq(rpid, pid);
	ck_assert_int_eq(code, qos);
	mr_packet_free(&p);
}

/* Expects a PUBLISH on fd and checks it; acknowledges QoS 1. */
static void expect_publish(int fd, int proto, const char *topic, const char *payload, int qos)
{
	mr_packet p;
	ck_assert_int_eq(read_stepped(fd, &p, 10000), 1);
	mr_publish pub;
	ck_assert_int_eq(mr_parse_publish(&p, proto, &pub), 0);
	ck_assert_str_eq(pub.topic, topic);
	ck_assert_int_eq(pub.payload_len, strlen(payload));
	ck_assert_int_eq(memcmp(pub.payload, payload, pub.payload_len), 0);
	ck_assert_int_eq(pub.qos, qos);
	if (qos == 1) {
		ck_assert_int_ne(pub.pid, 0);
		mr_buf m = {0};
		mr_enc_ack(&m, MR_PUBACK, proto, pub.pid, 0);
		send_free(fd, &m);
	}
	mr_packet_free(&p);
}

static void publish_qos1_stepped(int fd, int proto, const char *topic, const char *payload,
                                 uint16_t pid)
{
	mr_buf m = {0};
	mr_enc_publish(&m, proto, topic, payload, strlen(payload), 1, 0, pid, NULL);
	send_free(fd, &m);
	mr_packet p;
	ck_assert_int_eq(read_stepped(fd, &p, 10000), 1);
	ck_assert_int_eq(p.type, MR_PUBACK);
	uint16_t rpid;
	int reason;
	ck_assert_int_eq(mr_parse_ack(&p, proto, &rpid, &reason), 0);
	ck_assert_int_eq(rpid, pid);
	ck_assert_int_eq(reason, 0);
	mr_packet_free(&p);
}

START_TEST(test_qos1_exchange)
{
	setup();
	int s = connect_stepped(5, "s1", 60);
	int p = connect_stepped(4, "p1", 60);
	ck_assert_int_eq(atomic_load(&ev_connected), 2);
	subscribe_stepped(s, 5, 1, "st/#", 1);
	subscribe_stepped(p, 4, 1, "back/+", 1);
	for (int i = 0; i < 5; i++) {
		char payload[16];
		snprintf(payload, sizeof payload, "m%d", i);
		publish_qos1_stepped(p, 4, "st/a", payload, (uint16_t)(10 + i));
		expect_publish(s, 5, "st/a", payload, 1);
		publish_qos1_stepped(s, 5, "back/x", payload, (uint16_t)(20 + i));
		expect_publish(p, 4, "back/x", payload, 1);
	}
	/* Both connections are healthy after the acknowledgements. */
	mr_buf m = {0};
	mr_enc_pingreq(&m);
	send_free(s, &m);
	mr_packet pk;
	ck_assert_int_eq(read_stepped(s, &pk, 10000), 1);
	ck_assert_int_eq(pk.type, MR_PINGRESP);
	mr_packet_free(&pk);
	ck_assert_int_gt(atomic_load(&hook_calls), 0);
	close(s);
	close(p);
	pump_for(200);
	teardown();
}
END_TEST

START_TEST(test_timers_run)
{
	setup();
	int ka = connect_stepped(5, "ka", 1);
	int64_t t0 = mr_now_ms();
	/* A timer is pending for the keepalive. */
	int bt = mqb_broker_timeout(b);
	ck_assert_msg(bt >= 0 && bt <= 2000, "mqb_broker_timeout() = %d with a 1 s keepalive", bt);

	/* A connection that never sends CONNECT hits mqtt.idle_timeout (1 s). */
	int idle = mr_dial(port);
	ck_assert_int_ge(idle, 0);

	/* Nothing is sent: the keepalive (1 s * 1.5) expires. */
	int reason = -1, closed = 0;
	while (!closed) {
		ck_assert_msg(mr_now_ms() - t0 < 15000, "keepalive did not fire");
		if (!pump_until_readable(ka, 15000))
			continue;
		mr_packet p;
		int r = mr_read(ka, &p, 2000);
		if (r == 1) {
			ck_assert_int_eq(p.type, MR_DISCONNECT);
			ck_assert_int_eq(mr_parse_disconnect(&p, &reason), 0);
			mr_packet_free(&p);
		} else {
			ck_assert_int_eq(r, -1);
			closed = 1;
		}
	}
	int64_t elapsed = mr_now_ms() - t0;
	ck_assert_msg(elapsed >= 1000, "closed after %lld ms with a 1 s keepalive",
	              (long long)elapsed);
	ck_assert_msg(reason == -1 || reason == 0x8D, "DISCONNECT reason 0x%x, expected 0x8D",
	              reason);
	close(ka);

	ck_assert_int_eq(pump_until_readable(idle, 15000), 1);
	ck_assert_int_eq(mr_wait_closed(idle, 2000), 1);
	close(idle);
	teardown();
}
END_TEST

static void *publisher_thread(void *arg)
{
	(void)arg;
	mr_sleep_ms(100);
	mqb_broker_publish(b, "xt/1", "from-thread", 11, 1, 0);
	mqb_user_property up = {"origin", "thread"};
	mqb_message m;
	memset(&m, 0, sizeof m);
	m.topic = "xt/2";
	m.payload = "second";
	m.payload_len = 6;
	m.qos = 1;
	m.user_properties = &up;
	m.user_property_count = 1;
	mqb_publish(b, &m);
	return NULL;
}

START_TEST(test_publish_from_other_thread)
{
	setup();
	int s = connect_stepped(5, "xs", 0);
	subscribe_stepped(s, 5, 1, "xt/#", 1);
	pthread_t t;
	ck_assert_int_eq(pthread_create(&t, NULL, publisher_thread, NULL), 0);
	ck_assert_int_eq(pthread_join(t, NULL), 0);
	/* The broker has work now: its fd becomes readable (no step in between). */
	struct pollfd pf = {mqb_broker_fd(b), POLLIN, 0};
	ck_assert_msg(poll(&pf, 1, 5000) == 1 && (pf.revents & POLLIN),
	              "broker fd not readable after mqb_publish() from another thread");

	/* Two topics: either may come first (docs/EMBEDDING.md). */
	int got1 = 0, got2 = 0;
	for (int i = 0; i < 2; i++) {
		mr_packet p;
		ck_assert_int_eq(read_stepped(s, &p, 10000), 1);
		mr_publish pub;
		ck_assert_int_eq(mr_parse_publish(&p, 5, &pub), 0);
		ck_assert_int_eq(pub.qos, 1);
		if (strcmp(pub.topic, "xt/1") == 0) {
			ck_assert_int_eq(pub.payload_len, 11);
			ck_assert_int_eq(memcmp(pub.payload, "from-thread", 11), 0);
			got1++;
		} else {
			ck_assert_str_eq(pub.topic, "xt/2");
			ck_assert_int_eq(pub.props.user_count, 1);
			ck_assert_str_eq(pub.props.user_key[0], "origin");
			ck_assert_str_eq(pub.props.user_value[0], "thread");
			got2++;
		}
		mr_buf m = {0};
		mr_enc_ack(&m, MR_PUBACK, 5, pub.pid, 0);
		send_free(s, &m);
		mr_packet_free(&p);
	}
	ck_assert(got1 == 1 && got2 == 1);
	close(s);
	pump_for(100);
	teardown();
}
END_TEST

/* Calls that need a loop thread, made from another thread, wait for the
 * host's next step (docs/EMBEDDING.md). */
static atomic_int other_done, other_sub_rc = -1, other_clients_rc = -1, other_unsub_rc = -1;
static size_t other_total;
static int other_listed;
static mqb_subscription *other_sub;
static atomic_int inproc_calls, inproc_wrong_thread;

static void on_inproc(void *user, const mqb_message *m)
{
	(void)user;
	(void)m;
	atomic_fetch_add(&inproc_calls, 1);
	if (!pthread_equal(pthread_self(), main_thread))
		atomic_fetch_add(&inproc_wrong_thread, 1);
}

static void on_listed(void *user, const mqb_client_status *st)
{
	(void)st;
	(*(int *)user)++;
}

static void *subscriber_thread(void *arg)
{
	(void)arg;
	atomic_store(&other_sub_rc, (int)mqb_subscribe(b, "ins/#", on_inproc, NULL, &other_sub));
	atomic_store(&other_clients_rc,
	             (int)mqb_broker_clients(b, 0, 10, on_listed, &other_listed, &other_total));
	atomic_store(&other_done, 1);
	return NULL;
}

static void *unsubscriber_thread(void *arg)
{
	(void)arg;
	atomic_store(&other_unsub_rc, (int)mqb_unsubscribe(b, other_sub));
	atomic_store(&other_done, 2);
	return NULL;
}

START_TEST(test_loop_calls_from_other_thread)
{
	setup();
	int c = connect_stepped(4, "only", 0);
	pthread_t t;
	ck_assert_int_eq(pthread_create(&t, NULL, subscriber_thread, NULL), 0);
	int64_t deadline = mr_now_ms() + 10000;
	while (atomic_load(&other_done) != 1 && mr_now_ms() < deadline)
		host_iteration(-1, 50);
	ck_assert_int_eq(pthread_join(t, NULL), 0);
	ck_assert_int_eq(atomic_load(&other_sub_rc), MQB_OK);
	ck_assert_int_eq(atomic_load(&other_clients_rc), MQB_OK);
	ck_assert_int_eq(other_total, 1);
	ck_assert_int_eq(other_listed, 1);

	ck_assert_int_eq(mqb_broker_publish(b, "ins/x", "v", 1, 0, 0), MQB_OK);
	deadline = mr_now_ms() + 10000;
	while (atomic_load(&inproc_calls) < 1 && mr_now_ms() < deadline)
		host_iteration(-1, 50);
	ck_assert_int_eq(atomic_load(&inproc_calls), 1);
	ck_assert_int_eq(atomic_load(&inproc_wrong_thread), 0);

	ck_assert_int_eq(pthread_create(&t, NULL, unsubscriber_thread, NULL), 0);
	deadline = mr_now_ms() + 10000;
	while (atomic_load(&other_done) != 2 && mr_now_ms() < deadline)
		host_iteration(-1, 50);
	ck_assert_int_eq(pthread_join(t, NULL), 0);
	ck_assert_int_eq(atomic_load(&other_unsub_rc), MQB_OK);
	close(c);
	pump_for(100);
	teardown();
}
END_TEST

/* Steps until the broker reports MQB_ERR_STATE; returns the steps taken. */
static int step_until_stopped(void)
{
	int64_t deadline = mr_now_ms() + 20000;
	int steps = 0;
	for (;;) {
		ck_assert_msg(mr_now_ms() < deadline, "still running 20 s after mqb_broker_stop()");
		struct pollfd pf = {mqb_broker_fd(b), POLLIN, 0};
		int bt = mqb_broker_timeout(b);
		poll(&pf, 1, bt >= 0 && bt < 200 ? bt : 200);
		mqb_err rc = mqb_broker_step(b, 0);
		steps++;
		if (rc == MQB_ERR_STATE)
			return steps;
		ck_assert_int_eq(rc, MQB_OK);
	}
}

static void check_stopped(int c5, int c4)
{
	/* v5: DISCONNECT 0x8B Server shutting down, then close; 3.1.1: close. */
	mr_packet p;
	ck_assert_int_eq(mr_read(c5, &p, 5000), 1);
	int reason = -1;
	ck_assert_int_eq(mr_parse_disconnect(&p, &reason), 0);
	ck_assert_int_eq(reason, 0x8B);
	mr_packet_free(&p);
	ck_assert_int_eq(mr_wait_closed(c5, 5000), 1);
	ck_assert_int_eq(mr_wait_closed(c4, 5000), 1);
	/* Still stopped, and the listener is closed. */
	ck_assert_int_eq(mqb_broker_step(b, 0), MQB_ERR_STATE);
	ck_assert_int_eq(mqb_broker_step(b, 10), MQB_ERR_STATE);
	int fd = mr_dial(port);
	if (fd >= 0) {
		ck_assert_int_eq(mr_wait_closed(fd, 2000), 1);
		close(fd);
	}
}

START_TEST(test_stop_then_step)
{
	setup();
	int c5 = connect_stepped(5, "c5", 60);
	int c4 = connect_stepped(4, "c4", 60);
	mqb_broker_stop(b);
	ck_assert_int_ge(step_until_stopped(), 1);
	check_stopped(c5, c4);
	close(c5);
	close(c4);
	teardown();
}
END_TEST

START_TEST(test_stop_from_hook_then_step)
{
	setup();
	int c5 = connect_stepped(5, "c5", 60);
	int c4 = connect_stepped(4, "c4", 60);
	/* The on_event hook stops the broker when "stopper" connects. */
	int st = mr_dial(port);
	ck_assert_int_ge(st, 0);
	mr_connect_opts o = {.proto = 4, .client_id = "stopper", .clean = 1, .keepalive = 60};
	mr_buf m = {0};
	mr_enc_connect(&m, &o);
	send_free(st, &m);
	ck_assert_int_ge(step_until_stopped(), 1);
	ck_assert_int_eq(atomic_load(&stop_from_hook), 1);
	check_stopped(c5, c4);
	close(st);
	close(c5);
	close(c4);
	teardown();
}
END_TEST

int main(void)
{
	Suite *s = suite_create("api_step_mode");
	TCase *tc = tcase_create("step_mode");
	tcase_set_timeout(tc, 110);
	tcase_add_test(tc, test_qos1_exchange);
	tcase_add_test(tc, test_timers_run);
	tcase_add_test(tc, test_publish_from_other_thread);
	tcase_add_test(tc, test_loop_calls_from_other_thread);
	tcase_add_test(tc, test_stop_then_step);
	tcase_add_test(tc, test_stop_from_hook_then_step);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_ENV);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
