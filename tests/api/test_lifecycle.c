/* Broker lifecycle through the public API: many brokers created, used by real
 * TCP clients and destroyed with a counting allocator (no leak, no fd left);
 * two brokers in one process are isolated; mqb_broker_run() stopped from
 * another thread and from a signal handler; stop/wait/destroy edge cases. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mqttbroker.h>

#include "count_alloc.h"
#include "mqtt_raw.h"
#include "proc_count.h"

static int count_fds(void)
{
	return count_proc_entries("/proc/self/fd");
}

static mqb_config *make_cfg(const mqb_allocator *a)
{
	mqb_config *cfg;
	char err[256] = "";
	ck_assert_int_eq(mqb_config_create(&cfg, a), MQB_OK);
	ck_assert_msg(mqb_config_set(cfg, "listener.tcp.default", "127.0.0.1:0", err, sizeof err) ==
	                      MQB_OK,
	              "%s", err);
	ck_assert_int_eq(mqb_config_set(cfg, "node.loop_threads", "2", err, sizeof err), MQB_OK);
	ck_assert_int_eq(mqb_config_set(cfg, "node.drain_timeout", "2s", err, sizeof err), MQB_OK);
	return cfg;
}

static mqb_broker *make_broker(const mqb_allocator *a)
{
	mqb_config *cfg = make_cfg(a);
	mqb_broker *b = NULL;
	ck_assert_int_eq(mqb_broker_create(&b, cfg), MQB_OK);
	ck_assert_ptr_nonnull(b);
	mqb_config_destroy(cfg);
	return b;
}

static int port_of(mqb_broker *b)
{
	int port = 0;
	ck_assert_int_eq(mqb_broker_listener_port(b, "default", &port), MQB_OK);
	ck_assert_int_gt(port, 0);
	return port;
}

static void send_buf_and_free(int fd, mr_buf *b)
{
	ck_assert_int_eq(mr_send(fd, b), 0);
	mr_buf_free(b);
}

/* Reads until EOF (within timeout); returns the reason of a DISCONNECT seen
 * on the way, -1 if none, -2 if the connection did not close. */
static int drain_until_closed(int fd, int timeout_ms)
{
	int64_t deadline = mr_now_ms() + timeout_ms;
	int reason = -1;
	for (;;) {
		int left = (int)(deadline - mr_now_ms());
		if (left <= 0)
			return -2;
		mr_packet p;
		int r = mr_read(fd, &p, left);
		if (r == 0)
			return -2;
		if (r < 0)
			return reason;
		if (p.type == MR_DISCONNECT)
			mr_parse_disconnect(&p, &reason);
		mr_packet_free(&p);
	}
}

/* (a) ------------------------------------------------------------------- */

static void on_inproc(void *user, const mqb_message *m)
{
	(void)user;
	(void)m;
}

static void one_round(int round)
{
	count_alloc ca = {0};
	mqb_allocator a = ca_allocator(&ca);
	int fds0 = count_fds();

	mqb_broker *b = make_broker(&a);
	ck_assert_int_gt(atomic_load(&ca.live), 0); /* the allocator is used */
	ck_assert_int_eq(mqb_broker_start(b), MQB_OK);
	int port = port_of(b);

	/* An in-process subscription left open: destroy ends it. */
	mqb_subscription *sub = NULL;
	ck_assert_int_eq(mqb_subscribe(b, "t/#", on_inproc, NULL, &sub), MQB_OK);

	/* c0: persistent 3.1.1 session subscribed to q/#, then offline. */
	mr_connect_opts o0 = {.proto = 4, .client_id = "persist", .clean = 0, .keepalive = 60};
	int rc;
	int c0 = mr_open(port, &o0, &rc);
	ck_assert_msg(c0 >= 0, "round %d: persist CONNACK %d", round, rc);
	ck_assert_int_eq(mr_subscribe_sync(c0, 4, 1, "q/#", 1), 1);
	mr_buf d = {0};
	mr_enc_disconnect(&d, 4, 0);
	send_buf_and_free(c0, &d);
	ck_assert_int_eq(mr_wait_closed(c0, 10000), 1);
	close(c0);

	/* c1: v5 subscriber to t/#, stays connected. */
	int c1 = mr_open_simple(port, 5, "sub5");
	ck_assert_int_ge(c1, 0);
	ck_assert_int_eq(mr_subscribe_sync(c1, 5, 1, "t/#", 1), 1);

	/* c2: publisher: a retained message, one for the offline session, one live. */
	int c2 = mr_open_simple(port, 4, "pub");
	ck_assert_int_ge(c2, 0);
	ck_assert_int_eq(mr_publish_sync(c2, 4, "r/x", "retained", 1, 1, 1, NULL), 0);
	ck_assert_int_eq(mr_publish_sync(c2, 4, "q/1", "queued", 1, 0, 2, NULL), 0);
	ck_assert_int_eq(mr_publish_sync(c2, 4, "t/1", "live", 1, 0, 3, NULL), 0);

	/* c3: subscribes to r/# and gets the retained message. */
	int c3 = mr_open_simple(port, 5, "subret");
	ck_assert_int_ge(c3, 0);
	mr_buf s = {0};
	mr_enc_subscribe(&s, 5, 7, "r/#", 1, 0);
	send_buf_and_free(c3, &s);
	mr_packet p;
	mr_publish pub;
	ck_assert_int_eq(mr_next_publish(c3, 5, &p, &pub, 10000), 1);
	ck_assert_str_eq(pub.topic, "r/x");
	ck_assert_int_eq(pub.retain, 1);
	mr_packet_free(&p);

	/* c4: just connected (3.1.1). */
	int c4 = mr_open_simple(port, 4, "idle");
	ck_assert_int_ge(c4, 0);

	ck_assert_int_eq(mr_next_publish(c1, 5, &p, &pub, 10000), 1);
	ck_assert_str_eq(pub.topic, "t/1");
	ck_assert_int_eq(pub.payload_len, 4);
	ck_assert_int_eq(memcmp(pub.payload, "live", 4), 0);
	mr_packet_free(&p);

	close(c2); /* abrupt close */

	mqb_broker_stop(b);
	ck_assert_int_eq(mqb_broker_wait(b), MQB_OK);
	/* The v5 clients were told the server is shutting down. */
	ck_assert_int_eq(drain_until_closed(c1, 15000), 0x8B);
	ck_assert_int_eq(drain_until_closed(c3, 15000), 0x8B);
	ck_assert_int_eq(drain_until_closed(c4, 15000), -1);
	close(c1);
	close(c3);
	close(c4);
	mqb_broker_destroy(b);

	ck_assert_msg(atomic_load(&ca.live) == 0 && atomic_load(&ca.bytes) == 0,
	              "round %d: %ld allocations (%ld bytes) live after destroy", round,
	              atomic_load(&ca.live), atomic_load(&ca.bytes));
	ck_assert_msg(count_fds() == fds0, "round %d: %d fds open, %d before", round, count_fds(),
	              fds0);
}

START_TEST(test_hundred_brokers)
{
	for (int i = 0; i < 100; i++)
		one_round(i);
}
END_TEST

/* (b) ------------------------------------------------------------------- */

/* Subscribes and pings: returns the number of PUBLISH packets seen between
 * the SUBACK and the PINGRESP (retained messages). */
static int subscribe_count_retained(int fd, const char *filter)
{
	mr_buf b = {0};
	mr_enc_subscribe(&b, 4, 9, filter, 1, 0);
	mr_enc_pingreq(&b);
	send_buf_and_free(fd, &b);
	int n = 0;
	for (;;) {
		mr_packet p;
		ck_assert_int_eq(mr_read(fd, &p, 10000), 1);
		int t = p.type;
		if (t == MR_PUBLISH) {
			mr_publish pub;
			ck_assert_int_eq(mr_parse_publish(&p, 4, &pub), 0);
			if (pub.qos) {
				mr_buf a = {0};
				mr_enc_ack(&a, MR_PUBACK, 4, pub.pid, 0);
				send_buf_and_free(fd, &a);
			}
			n++;
		}
		mr_packet_free(&p);
		if (t == MR_PINGRESP)
			return n;
	}
}

START_TEST(test_two_brokers_isolated)
{
	mqb_broker *A = make_broker(NULL), *B = make_broker(NULL);
	ck_assert_int_eq(mqb_broker_start(A), MQB_OK);
	ck_assert_int_eq(mqb_broker_start(B), MQB_OK);
	int pa = port_of(A), pb = port_of(B);
	ck_assert_int_ne(pa, pb);

	int subA = mr_open_simple(pa, 4, "sub"), subB = mr_open_simple(pb, 4, "sub");
	ck_assert_int_ge(subA, 0);
	ck_assert_int_ge(subB, 0);
	ck_assert_int_eq(mr_subscribe_sync(subA, 4, 1, "iso/#", 1), 1);
	ck_assert_int_eq(mr_subscribe_sync(subB, 4, 1, "iso/#", 1), 1);

	/* The same client id on both brokers: no takeover across brokers. */
	int pubA = mr_open_simple(pa, 4, "pub");
	ck_assert_int_ge(pubA, 0);

	ck_assert_int_eq(mqb_broker_publish(B, "iso/2", "b", 1, 1, 0), MQB_OK);
	ck_assert_int_eq(mr_publish_sync(pubA, 4, "iso/1", "a", 1, 0, 1, NULL), 0);
	ck_assert_int_eq(mr_publish_sync(pubA, 4, "iso/end", "a", 1, 0, 2, NULL), 0);

	mr_packet p;
	mr_publish pub;
	ck_assert_int_eq(mr_next_publish(subA, 4, &p, &pub, 10000), 1);
	ck_assert_str_eq(pub.topic, "iso/1");
	mr_packet_free(&p);
	ck_assert_int_eq(mr_next_publish(subA, 4, &p, &pub, 10000), 1);
	ck_assert_str_eq(pub.topic, "iso/end");
	ck_assert_int_eq(pub.payload_len, 1);
	ck_assert_int_eq(((const char *)pub.payload)[0], 'a');
	mr_packet_free(&p);

	ck_assert_int_eq(mr_next_publish(subB, 4, &p, &pub, 10000), 1);
	ck_assert_str_eq(pub.topic, "iso/2");
	mr_packet_free(&p);
	ck_assert_int_eq(mqb_broker_publish(B, "iso/end", "b", 1, 1, 0), MQB_OK);
	ck_assert_int_eq(mr_next_publish(subB, 4, &p, &pub, 10000), 1);
	ck_assert_str_eq(pub.topic, "iso/end");
	ck_assert_int_eq(((const char *)pub.payload)[0], 'b');
	mr_packet_free(&p);

	/* Retained messages are per broker too. */
	ck_assert_int_eq(mqb_broker_publish(A, "ret/only-a", "x", 1, 1, 1), MQB_OK);
	int ra = mr_open_simple(pa, 4, "ra"), rb = mr_open_simple(pb, 4, "rb");
	ck_assert_int_ge(ra, 0);
	ck_assert_int_ge(rb, 0);
	int64_t deadline = mr_now_ms() + 10000;
	int na;
	/* mqb_broker_publish returns once copied: the retained store may lag. */
	while ((na = subscribe_count_retained(ra, "ret/#")) == 0 && mr_now_ms() < deadline) {
		mr_sleep_ms(50);
		mr_buf u = {0};
		mr_enc_unsubscribe(&u, 4, 10, "ret/#");
		send_buf_and_free(ra, &u);
		ck_assert_int_eq(mr_read(ra, &p, 10000), 1);
		ck_assert_int_eq(p.type, MR_UNSUBACK);
		mr_packet_free(&p);
	}
	ck_assert_int_eq(na, 1);
	ck_assert_int_eq(subscribe_count_retained(rb, "ret/#"), 0);

	close(subA);
	close(subB);
	close(pubA);
	close(ra);
	close(rb);
	mqb_broker_destroy(A);
	mqb_broker_destroy(B);
}
END_TEST

/* (c) ------------------------------------------------------------------- */

static mqb_broker *g_run_broker;
static mqb_err g_run_rc;

static void *run_thread(void *arg)
{
	(void)arg;
	g_run_rc = mqb_broker_run(g_run_broker);
	return NULL;
}

static void on_sigusr1(int sig)
{
	(void)sig;
	mqb_broker_stop(g_run_broker);
}

/* Waits until the broker run by run_thread accepts a client; returns port. */
static int wait_running(void)
{
	int64_t deadline = mr_now_ms() + 10000;
	while (mr_now_ms() < deadline) {
		int port = 0;
		if (mqb_broker_listener_port(g_run_broker, "default", &port) == MQB_OK && port > 0)
			return port;
		mr_sleep_ms(10);
	}
	ck_abort_msg("broker run in a thread did not open its listener");
	return -1;
}

static void join_within(pthread_t t, int ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ck_assert_msg(pthread_timedjoin_np(t, NULL, &ts) == 0,
	              "mqb_broker_run() did not return after mqb_broker_stop()");
}

/* how: 0 = stop from the main thread, 1 = SIGUSR1 to the process, 2 = SIGUSR1
 * to the thread blocked in mqb_broker_run(). */
static void run_and_stop(int how)
{
	count_alloc ca = {0};
	mqb_allocator a = ca_allocator(&ca);
	int fds0 = count_fds();
	g_run_broker = make_broker(&a);
	g_run_rc = (mqb_err)-1;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_sigusr1;
	sigemptyset(&sa.sa_mask);
	ck_assert_int_eq(sigaction(SIGUSR1, &sa, NULL), 0);

	pthread_t t;
	ck_assert_int_eq(pthread_create(&t, NULL, run_thread, NULL), 0);
	int port = wait_running();

	/* A subscriber to wills and a client with a will: at stop the will is
	 * published before the clients are disconnected (0x8B for v5). */
	int sub = mr_open_simple(port, 5, "willsub");
	ck_assert_int_ge(sub, 0);
	ck_assert_int_eq(mr_subscribe_sync(sub, 5, 1, "will/#", 1), 1);
	mr_connect_opts wo = {.proto = 4,
	                      .client_id = "willer",
	                      .clean = 1,
	                      .keepalive = 60,
	                      .will_topic = "will/x",
	                      .will_payload = "gone"};
	int rc;
	int willer = mr_open(port, &wo, &rc);
	ck_assert_int_ge(willer, 0);

	if (how == 0)
		mqb_broker_stop(g_run_broker);
	else if (how == 1)
		ck_assert_int_eq(kill(getpid(), SIGUSR1), 0);
	else
		ck_assert_int_eq(pthread_kill(t, SIGUSR1), 0);
	join_within(t, 20000);
	ck_assert_int_eq(g_run_rc, MQB_OK);

	mr_packet p;
	mr_publish pub;
	ck_assert_int_eq(mr_next_publish(sub, 5, &p, &pub, 10000), 1);
	ck_assert_str_eq(pub.topic, "will/x");
	mr_packet_free(&p);
	ck_assert_int_eq(drain_until_closed(sub, 10000), 0x8B);
	ck_assert_int_eq(drain_until_closed(willer, 10000), -1);
	close(sub);
	close(willer);
	/* Stopped: nothing listens any more. */
	int fd = mr_dial(port);
	if (fd >= 0) {
		ck_assert_int_eq(mr_wait_closed(fd, 5000), 1);
		close(fd);
	}
	mqb_broker_destroy(g_run_broker);
	signal(SIGUSR1, SIG_DFL);
	ck_assert_int_eq(atomic_load(&ca.live), 0);
	ck_assert_int_eq(count_fds(), fds0);
}

START_TEST(test_run_stop_from_thread)
{
	run_and_stop(0);
}
END_TEST

START_TEST(test_run_stop_from_signal)
{
	run_and_stop(1);
}
END_TEST

START_TEST(test_run_stop_from_signal_on_run_thread)
{
	run_and_stop(2);
}
END_TEST

/* (d) ------------------------------------------------------------------- */

START_TEST(test_destroy_without_start)
{
	count_alloc ca = {0};
	mqb_allocator a = ca_allocator(&ca);
	int fds0 = count_fds();
	mqb_broker *b = make_broker(&a);
	mqb_broker_destroy(b);
	ck_assert_int_eq(atomic_load(&ca.live), 0);
	ck_assert_int_eq(atomic_load(&ca.bytes), 0);
	ck_assert_int_eq(count_fds(), fds0);

	/* A stop request before start is harmless. */
	b = make_broker(&a);
	mqb_broker_stop(b);
	mqb_broker_destroy(b);
	ck_assert_int_eq(atomic_load(&ca.live), 0);
	ck_assert_int_eq(count_fds(), fds0);
}
END_TEST

START_TEST(test_stop_twice)
{
	count_alloc ca = {0};
	mqb_allocator a = ca_allocator(&ca);
	int fds0 = count_fds();
	mqb_broker *b = make_broker(&a);
	/* Not running yet: host publishes are refused. */
	ck_assert_int_eq(mqb_broker_publish(b, "t", "x", 1, 0, 0), MQB_ERR_STATE);
	ck_assert_int_eq(mqb_broker_start(b), MQB_OK);
	/* Starting again, or installing hooks once started, is a state error. */
	ck_assert_int_eq(mqb_broker_start(b), MQB_ERR_STATE);
	mqb_hooks h;
	memset(&h, 0, sizeof h);
	ck_assert_int_eq(mqb_broker_set_hooks(b, &h), MQB_ERR_STATE);
	int port = port_of(b);
	int c = mr_open_simple(port, 5, "c");
	ck_assert_int_ge(c, 0);
	mqb_broker_stop(b);
	mqb_broker_stop(b);
	ck_assert_int_eq(mqb_broker_wait(b), MQB_OK);
	mqb_broker_stop(b); /* after it has stopped: still harmless */
	/* A broker runs once; a stopped one takes no publishes. */
	ck_assert_int_eq(mqb_broker_start(b), MQB_ERR_STATE);
	ck_assert_int_eq(mqb_broker_publish(b, "t", "x", 1, 0, 0), MQB_ERR_STATE);
	ck_assert_int_eq(drain_until_closed(c, 10000), 0x8B);
	close(c);
	mqb_broker_destroy(b);
	ck_assert_int_eq(atomic_load(&ca.live), 0);
	ck_assert_int_eq(count_fds(), fds0);
}
END_TEST

START_TEST(test_destroy_while_running)
{
	count_alloc ca = {0};
	mqb_allocator a = ca_allocator(&ca);
	int fds0 = count_fds();
	mqb_broker *b = make_broker(&a);
	ck_assert_int_eq(mqb_broker_start(b), MQB_OK);
	int port = port_of(b);
	int c5 = mr_open_simple(port, 5, "v5");
	int c4 = mr_open_simple(port, 4, "v4");
	ck_assert_int_ge(c5, 0);
	ck_assert_int_ge(c4, 0);
	ck_assert_int_eq(mr_subscribe_sync(c5, 5, 1, "#", 1), 1);
	ck_assert_int_eq(mqb_broker_publish(b, "x/y", "z", 1, 1, 1), MQB_OK);
	mqb_broker_destroy(b); /* stops it first */
	ck_assert_int_eq(drain_until_closed(c4, 15000), -1);
	int r = drain_until_closed(c5, 15000);
	ck_assert_msg(r == 0x8B, "v5 client: DISCONNECT reason %d, expected 0x8B", r);
	close(c5);
	close(c4);
	ck_assert_int_eq(atomic_load(&ca.live), 0);
	ck_assert_int_eq(atomic_load(&ca.bytes), 0);
	ck_assert_int_eq(count_fds(), fds0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("api_lifecycle");
	TCase *tc = tcase_create("lifecycle");
	tcase_set_timeout(tc, 110);
	tcase_add_test(tc, test_hundred_brokers);
	tcase_add_test(tc, test_two_brokers_isolated);
	tcase_add_test(tc, test_run_stop_from_thread);
	tcase_add_test(tc, test_run_stop_from_signal);
	tcase_add_test(tc, test_run_stop_from_signal_on_run_thread);
	tcase_add_test(tc, test_destroy_without_start);
	tcase_add_test(tc, test_stop_twice);
	tcase_add_test(tc, test_destroy_while_running);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_ENV);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
