/* Enhanced authentication (MQTT 5 AUTH packets) through the embedding hook,
 * against a broker running in-process on an ephemeral port. */
#include <arpa/inet.h>
#include <check.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mqttbroker.h"
#include "proto/codec.h"

/* A challenge-response method "TEST": the client must answer "secret" to the
 * challenge "nonce"; the method "ONESHOT" succeeds at once on data "ok". */
static mqb_verdict auth_hook(void *user, const mqb_auth_exchange *ex, uint8_t **out, size_t *outlen)
{
	int *calls = user;
	(*calls)++;
	if (strcmp(ex->method, "ONESHOT") == 0)
		return ex->data_len == 2 && memcmp(ex->data, "ok", 2) == 0 ? MQB_ALLOW : MQB_DENY;
	if (strcmp(ex->method, "TEST") != 0)
		return MQB_IGNORE;
	if (ex->data_len == 6 && memcmp(ex->data, "secret", 6) == 0)
		return MQB_ALLOW;
	if (ex->data_len == 5 && memcmp(ex->data, "hello", 5) == 0) {
		*out = malloc(5);
		memcpy(*out, "nonce", 5);
		*outlen = 5;
		return MQB_PENDING;
	}
	return MQB_DENY;
}

static mqb_broker *broker;
static int port;
static int calls;

static void setup(void)
{
	mqb_config *cfg;
	ck_assert_int_eq(mqb_config_create(&cfg, NULL), MQB_OK);
	ck_assert_int_eq(mqb_config_set(cfg, "listener.tcp.default", "127.0.0.1:0", NULL, 0), 0);
	ck_assert_int_eq(mqb_config_set(cfg, "node.loop_threads", "2", NULL, 0), 0);
	ck_assert_int_eq(mqb_broker_create(&broker, cfg), MQB_OK);
	mqb_config_destroy(cfg);
	calls = 0;
	mqb_hooks hooks = {.user = &calls, .enhanced_auth = auth_hook};
	ck_assert_int_eq(mqb_broker_set_hooks(broker, &hooks), MQB_OK);
	ck_assert_int_eq(mqb_broker_start(broker), MQB_OK);
	ck_assert_int_eq(mqb_broker_listener_port(broker, "default", &port), MQB_OK);
}

static void teardown(void)
{
	mqb_broker_stop(broker);
	mqb_broker_wait(broker);
	mqb_broker_destroy(broker);
}

static int dial(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
	return fd;
}

static void send_packet(int fd, const mqbi_packet *p)
{
	uint8_t buf[512];
	size_t n = mqbi_encode(buf, sizeof buf, p, MQBI_V5);
	ck_assert_uint_gt(n, 0);
	ck_assert_int_eq(write(fd, buf, n), (ssize_t)n);
}

/* Reads one packet (5 s at most); returns its type, 0 when the server closed. */
static int recv_packet(int fd, mqbi_packet *p, uint8_t *buf, size_t cap)
{
	size_t have = 0;
	for (;;) {
		mqbi_dec_ctx ctx = {.level = MQBI_V5, .from_client = false};
		size_t used;
		uint8_t reason;
		if (have && mqbi_decode(buf, have, &ctx, p, &used, &reason) == MQBI_DEC_OK)
			return p->type;
		struct pollfd pfd = {fd, POLLIN, 0};
		ck_assert_int_eq(poll(&pfd, 1, 5000), 1);
		ssize_t n = read(fd, buf + have, cap - have);
		if (n <= 0)
			return 0;
		have += (size_t)n;
	}
}

static void send_connect_max(int fd, const char *method, const char *data, uint32_t max_packet)
{
	mqbi_packet p = {.type = MQBI_CONNECT};
	mqbi_connect *c = &p.u.connect;
	c->level = MQBI_V5;
	c->clean_start = true;
	c->keepalive = 30;
	c->client_id = (mqbi_bytes){(const uint8_t *)"authc", 5};
	c->props.present = 1ull << MQBI_PROP_AUTH_METHOD;
	c->props.auth_method = (mqbi_bytes){(const uint8_t *)method, (uint32_t)strlen(method)};
	if (data) {
		c->props.present |= 1ull << MQBI_PROP_AUTH_DATA;
		c->props.auth_data = (mqbi_bytes){(const uint8_t *)data, (uint32_t)strlen(data)};
	}
	if (max_packet) {
		c->props.present |= 1ull << MQBI_PROP_MAX_PACKET_SIZE;
		c->props.max_packet_size = max_packet;
	}
	send_packet(fd, &p);
}

static void send_connect(int fd, const char *method, const char *data)
{
	send_connect_max(fd, method, data, 0);
}

static void send_auth(int fd, uint8_t reason, const char *method, const char *data)
{
	mqbi_packet p = {.type = MQBI_AUTH};
	p.u.reason.reason = reason;
	p.u.reason.props.present = (1ull << MQBI_PROP_AUTH_METHOD) | (1ull << MQBI_PROP_AUTH_DATA);
	p.u.reason.props.auth_method =
	        (mqbi_bytes){(const uint8_t *)method, (uint32_t)strlen(method)};
	p.u.reason.props.auth_data = (mqbi_bytes){(const uint8_t *)data, (uint32_t)strlen(data)};
	send_packet(fd, &p);
}

START_TEST(challenge_response_then_connack)
{
	/* [MQTT-4.12.0-2] [MQTT-3.15.2-1] the server's AUTH continues the exchange
	 * with 0x18; [MQTT-4.12.0-5] the CONNACK carries the same method. */
	int fd = dial();
	uint8_t buf[512];
	mqbi_packet p;
	send_connect(fd, "TEST", "hello");
	ck_assert_int_eq(recv_packet(fd, &p, buf, sizeof buf), MQBI_AUTH);
	ck_assert_uint_eq(p.u.reason.reason, MQBI_RC_CONTINUE_AUTH);
	ck_assert_uint_eq(p.u.reason.props.auth_data.len, 5);
	ck_assert(memcmp(p.u.reason.props.auth_data.ptr, "nonce", 5) == 0);
	send_auth(fd, MQBI_RC_CONTINUE_AUTH, "TEST", "secret");
	ck_assert_int_eq(recv_packet(fd, &p, buf, sizeof buf), MQBI_CONNACK);
	ck_assert_uint_eq(p.u.connack.reason, 0);
	ck_assert_uint_eq(p.u.connack.props.auth_method.len, 4);
	ck_assert(memcmp(p.u.connack.props.auth_method.ptr, "TEST", 4) == 0);
	ck_assert_int_eq(calls, 2);

	/* Re-authentication on the live connection (MQTT 5.0 section 4.12.1). */
	send_auth(fd, MQBI_RC_REAUTHENTICATE, "TEST", "secret");
	ck_assert_int_eq(recv_packet(fd, &p, buf, sizeof buf), MQBI_AUTH);
	ck_assert_uint_eq(p.u.reason.reason, MQBI_RC_SUCCESS);

	/* A different method during re-authentication is a protocol error. */
	send_auth(fd, MQBI_RC_REAUTHENTICATE, "OTHER", "x");
	ck_assert_int_eq(recv_packet(fd, &p, buf, sizeof buf), MQBI_DISCONNECT);
	ck_assert_uint_eq(p.u.reason.reason, MQBI_RC_PROTOCOL_ERROR);
	close(fd);
}
END_TEST

START_TEST(oneshot_and_refusals)
{
	uint8_t buf[512];
	mqbi_packet p;
	int fd = dial();
	send_connect(fd, "ONESHOT", "ok");
	ck_assert_int_eq(recv_packet(fd, &p, buf, sizeof buf), MQBI_CONNACK);
	ck_assert_uint_eq(p.u.connack.reason, 0);
	close(fd);

	/* [MQTT-4.12.0-4]: a rejected authentication gets CONNACK >= 0x80, then close. */
	fd = dial();
	send_connect(fd, "ONESHOT", "no");
	ck_assert_int_eq(recv_packet(fd, &p, buf, sizeof buf), MQBI_CONNACK);
	ck_assert_uint_eq(p.u.connack.reason, MQBI_RC_NOT_AUTHORIZED);
	ck_assert_int_eq(recv_packet(fd, &p, buf, sizeof buf), 0);
	close(fd);

	/* [MQTT-4.12.0-1]: an unsupported method gets 0x8C and the connection closes. */
	fd = dial();
	send_connect(fd, "KERBEROS", NULL);
	ck_assert_int_eq(recv_packet(fd, &p, buf, sizeof buf), MQBI_CONNACK);
	ck_assert_uint_eq(p.u.connack.reason, MQBI_RC_BAD_AUTH_METHOD);
	ck_assert_int_eq(recv_packet(fd, &p, buf, sizeof buf), 0);
	close(fd);
}
END_TEST

START_TEST(auth_respects_maximum_packet_size)
{
	/* [MQTT-3.15.2-2] [MQTT-3.15.2-3]: no Reason String or User Property that
	 * would make the AUTH exceed the client's Maximum Packet Size. */
	uint8_t buf[512];
	mqbi_packet p;
	int fd = dial();
	send_connect_max(fd, "TEST", "hello", 24);
	ck_assert_int_eq(recv_packet(fd, &p, buf, sizeof buf), MQBI_AUTH);
	ck_assert(!mqbi_props_has(&p.u.reason.props, MQBI_PROP_REASON_STRING));
	ck_assert_uint_eq(p.u.reason.props.user_count, 0);
	ck_assert_uint_le(mqbi_encoded_size(&p, MQBI_V5), 24);
	close(fd);
}
END_TEST

START_TEST(failed_reauthentication_closes)
{
	/* [MQTT-4.12.1-2]: if re-authentication fails the connection is closed. */
	uint8_t buf[512];
	mqbi_packet p;
	int fd = dial();
	send_connect(fd, "ONESHOT", "ok");
	ck_assert_int_eq(recv_packet(fd, &p, buf, sizeof buf), MQBI_CONNACK);
	send_auth(fd, MQBI_RC_REAUTHENTICATE, "ONESHOT", "bad");
	ck_assert_int_eq(recv_packet(fd, &p, buf, sizeof buf), MQBI_DISCONNECT);
	ck_assert_uint_eq(p.u.reason.reason, MQBI_RC_NOT_AUTHORIZED);
	ck_assert_int_eq(recv_packet(fd, &p, buf, sizeof buf), 0);
	close(fd);
}
END_TEST

START_TEST(packets_other_than_auth_during_the_exchange)
{
	/* Until the CONNACK only AUTH (or DISCONNECT) may be sent (section 4.12). */
	uint8_t buf[512];
	mqbi_packet p;
	int fd = dial();
	send_connect(fd, "TEST", "hello");
	ck_assert_int_eq(recv_packet(fd, &p, buf, sizeof buf), MQBI_AUTH);
	mqbi_packet ping = {.type = MQBI_PINGREQ};
	send_packet(fd, &ping);
	ck_assert_int_eq(recv_packet(fd, &p, buf, sizeof buf), MQBI_DISCONNECT);
	ck_assert_uint_eq(p.u.reason.reason, MQBI_RC_PROTOCOL_ERROR);
	close(fd);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("auth");
	TCase *tc = tcase_create("enhanced");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, challenge_response_then_connack);
	tcase_add_test(tc, oneshot_and_refusals);
	tcase_add_test(tc, auth_respects_maximum_packet_size);
	tcase_add_test(tc, failed_reauthentication_closes);
	tcase_add_test(tc, packets_other_than_auth_during_the_exchange);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
