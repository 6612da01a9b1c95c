/* No allocation per delivery: during a steady fan-out the broker allocates
 * the message it stores (one per publish) and nothing per subscriber. Counted
 * with a counting mqb_allocator, with one loop thread and with two (deliveries
 * crossing between loops). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "count_alloc.h"
#include "mqtt_raw.h"

#define SUBS_QOS0 20
#define SUBS_QOS1 5
#define SUBS      (SUBS_QOS0 + SUBS_QOS1)
#define BURST     50

static void burst(int pub, int *subs, int n)
{
	char payload[64];
	memset(payload, 'x', sizeof payload);
	mr_buf b = {0};
	for (int i = 0; i < n; i++)
		mr_enc_publish(&b, 4, "fan/t", payload, sizeof payload, 0, 0, 0, NULL);
	ck_assert_int_eq(mr_send(pub, &b), 0);
	mr_buf_free(&b);
	for (int s = 0; s < SUBS; s++) {
		for (int i = 0; i < n; i++) {
			mr_packet pk;
			mr_publish p;
			ck_assert_int_eq(mr_next_publish(subs[s], 4, &pk, &p, 10000), 1);
			mr_packet_free(&pk);
		}
	}
}

static void run(const char *threads)
{
	count_alloc ca = {0};
	mqb_allocator a = ca_allocator(&ca);
	mqb_config *cfg;
	ck_assert_int_eq(mqb_config_create(&cfg, &a), MQB_OK);
	ck_assert_int_eq(mqb_config_set(cfg, "listener.tcp.default", "127.0.0.1:0", NULL, 0), 0);
	ck_assert_int_eq(mqb_config_set(cfg, "node.loop_threads", threads, NULL, 0), 0);
	ck_assert_int_eq(mqb_config_set(cfg, "sys.interval", "0", NULL, 0), 0);
	mqb_broker *b;
	ck_assert_int_eq(mqb_broker_create(&b, cfg), MQB_OK);
	mqb_config_destroy(cfg);
	ck_assert_int_eq(mqb_broker_start(b), MQB_OK);
	int port;
	ck_assert_int_eq(mqb_broker_listener_port(b, "default", &port), MQB_OK);

	int subs[SUBS];
	for (int s = 0; s < SUBS; s++) {
		char id[32];
		snprintf(id, sizeof id, "sub%d", s);
		subs[s] = mr_open_simple(port, 4, id);
		ck_assert_int_ge(subs[s], 0);
		int qos = s < SUBS_QOS0 ? 0 : 1;
		ck_assert_int_eq(mr_subscribe_sync(subs[s], 4, 1, "fan/#", qos), qos);
	}
	int pub = mr_open_simple(port, 4, "pub");
	ck_assert_int_ge(pub, 0);

	/* Warm up: buffers, routes and queues reach their steady size. */
	for (int i = 0; i < 4; i++)
		burst(pub, subs, BURST);

	long before = atomic_load(&ca.total);
	const int bursts = 10;
	for (int i = 0; i < bursts; i++)
		burst(pub, subs, BURST);
	long allocs = atomic_load(&ca.total) - before;
	long published = (long)bursts * BURST, deliveries = published * SUBS;
	printf("%s loop thread(s): %ld allocations for %ld messages published and %ld deliveries\n",
	       threads, allocs, published, deliveries);
	/* One per published message (the stored message itself), none per
	 * delivery; a little slack for pool growth on a busy machine. */
	ck_assert_msg(allocs <= published + SUBS,
	              "%ld allocations for %ld publishes / %ld deliveries", allocs, published,
	              deliveries);

	for (int s = 0; s < SUBS; s++)
		close(subs[s]);
	close(pub);
	mqb_broker_stop(b);
	mqb_broker_wait(b);
	mqb_broker_destroy(b);
	ck_assert_int_eq(atomic_load(&ca.live), 0);
}

START_TEST(fan_out_one_loop)
{
	run("1");
}
END_TEST

START_TEST(fan_out_two_loops)
{
	run("2");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("no_alloc");
	TCase *tc = tcase_create("fan_out");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, fan_out_one_loop);
	tcase_add_test(tc, fan_out_two_loops);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
