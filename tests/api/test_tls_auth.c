/* TLS through the embedding API: an ssl listener opened at run time with
 * mqb_broker_open_listener(); the authenticate hook receives the client
 * certificate (DER) and the user name taken from its CN. The client is an
 * mbedTLS client on a blocking socket. Certificates: MQB_TEST_CERTS (a
 * directory made by tests/integration/make_test_certs.py). */
#include <check.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include "mqtt_raw.h"
#include <mqttbroker.h>

static char certs[512];
static mqb_broker *b;
static int port;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int auth_calls;
static char seen_user[128];
static unsigned char seen_der[4096];
static size_t seen_der_len;

static mqb_verdict authenticate(void *user, const mqb_auth_request *req, mqb_auth_ticket *t)
{
	pthread_mutex_lock(&mu);
	auth_calls++;
	snprintf(seen_user, sizeof seen_user, "%s", req->username ? req->username : "");
	seen_der_len = 0;
	if (req->peer_cert_der && req->peer_cert_len <= sizeof seen_der) {
		memcpy(seen_der, req->peer_cert_der, req->peer_cert_len);
		seen_der_len = req->peer_cert_len;
	}
	pthread_mutex_unlock(&mu);
	/* Only clients that showed a certificate get in. */
	return req->peer_cert_der ? MQB_ALLOW : MQB_DENY;
}

static const char *path(const char *name)
{
	static char buf[4][640];
	static int k;
	k = (k + 1) % 4;
	snprintf(buf[k], sizeof buf[k], "%s/%s", certs, name);
	return buf[k];
}

static void setup(void)
{
	const char *dir = getenv("MQB_TEST_CERTS");
	ck_assert_msg(dir != NULL, "MQB_TEST_CERTS is not set");
	snprintf(certs, sizeof certs, "%s", dir);
	mqb_config *cfg;
	ck_assert_int_eq(mqb_config_create(&cfg, NULL), MQB_OK);
	ck_assert_int_eq(mqb_config_set(cfg, "listener.tcp.default", "off", NULL, 0), MQB_OK);
	ck_assert_int_eq(mqb_broker_create(&b, cfg), MQB_OK);
	mqb_config_destroy(cfg);
	mqb_hooks h = {.authenticate = authenticate};
	ck_assert_int_eq(mqb_broker_set_hooks(b, &h), MQB_OK);
	ck_assert_int_eq(mqb_broker_start(b), MQB_OK);
	const char *const settings[] = {"certfile",
	                                path("server.pem"),
	                                "keyfile",
	                                path("server.key"),
	                                "cacertfile",
	                                path("ca.pem"),
	                                "verify",
	                                "verify_peer",
	                                "peer_cert_as_username",
	                                "cn",
	                                NULL};
	ck_assert_int_eq(mqb_broker_open_listener(b, "ssl", "devices", "127.0.0.1:0", settings),
	                 MQB_OK);
	ck_assert_int_eq(mqb_broker_listener_port(b, "ssl.devices", &port), MQB_OK);
}

static void teardown(void)
{
	mqb_broker_stop(b);
	mqb_broker_wait(b);
	mqb_broker_destroy(b);
}

typedef struct tls_client {
	mbedtls_net_context net;
	mbedtls_ssl_context ssl;
	mbedtls_ssl_config conf;
	mbedtls_entropy_context entropy;
	mbedtls_ctr_drbg_context drbg;
	mbedtls_x509_crt ca, crt;
	mbedtls_pk_context key;
} tls_client;

/* Connects, handshakes (with the client certificate `stem`, or none), sends
 * CONNECT v3.1.1 and returns the CONNACK return code, or -1. */
static int tls_connect(tls_client *c, const char *stem)
{
	memset(c, 0, sizeof *c);
	mbedtls_net_init(&c->net);
	mbedtls_ssl_init(&c->ssl);
	mbedtls_ssl_config_init(&c->conf);
	mbedtls_entropy_init(&c->entropy);
	mbedtls_ctr_drbg_init(&c->drbg);
	mbedtls_x509_crt_init(&c->ca);
	mbedtls_x509_crt_init(&c->crt);
	mbedtls_pk_init(&c->key);
	ck_assert_int_eq(
	        mbedtls_ctr_drbg_seed(&c->drbg, mbedtls_entropy_func, &c->entropy, NULL, 0), 0);
	ck_assert_int_eq(mbedtls_x509_crt_parse_file(&c->ca, path("ca.pem")), 0);
	ck_assert_int_eq(mbedtls_ssl_config_defaults(&c->conf, MBEDTLS_SSL_IS_CLIENT,
	                                             MBEDTLS_SSL_TRANSPORT_STREAM,
	                                             MBEDTLS_SSL_PRESET_DEFAULT),
	                 0);
	mbedtls_ssl_conf_rng(&c->conf, mbedtls_ctr_drbg_random, &c->drbg);
	mbedtls_ssl_conf_ca_chain(&c->conf, &c->ca, NULL);
	mbedtls_ssl_conf_authmode(&c->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
	if (stem) {
		char pem[64], key[64];
		snprintf(pem, sizeof pem, "%s.pem", stem);
		snprintf(key, sizeof key, "%s.key", stem);
		ck_assert_int_eq(mbedtls_x509_crt_parse_file(&c->crt, path(pem)), 0);
		ck_assert_int_eq(mbedtls_pk_parse_keyfile(&c->key, path(key), NULL), 0);
		ck_assert_int_eq(mbedtls_ssl_conf_own_cert(&c->conf, &c->crt, &c->key), 0);
	}
	ck_assert_int_eq(mbedtls_ssl_setup(&c->ssl, &c->conf), 0);
	ck_assert_int_eq(mbedtls_ssl_set_hostname(&c->ssl, "localhost"), 0);
	char p[16];
	snprintf(p, sizeof p, "%d", port);
	ck_assert_int_eq(mbedtls_net_connect(&c->net, "127.0.0.1", p, MBEDTLS_NET_PROTO_TCP), 0);
	mbedtls_ssl_set_bio(&c->ssl, &c->net, mbedtls_net_send, mbedtls_net_recv, NULL);
	if (mbedtls_ssl_handshake(&c->ssl) != 0)
		return -1;
	mr_connect_opts o = {.proto = 4, .client_id = "tls-dev", .clean = 1, .keepalive = 30};
	mr_buf out = {0};
	mr_enc_connect(&out, &o);
	int w = mbedtls_ssl_write(&c->ssl, out.data, out.len);
	bool sent = w == (int)out.len;
	mr_buf_free(&out);
	if (!sent)
		return -1;
	unsigned char ack[4];
	size_t got = 0;
	while (got < 4) {
		int r = mbedtls_ssl_read(&c->ssl, ack + got, 4 - got);
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return ack[0] == 0x20 ? ack[3] : -1;
}

static void tls_close(tls_client *c)
{
	mbedtls_ssl_close_notify(&c->ssl);
	mbedtls_net_free(&c->net);
	mbedtls_ssl_free(&c->ssl);
	mbedtls_ssl_config_free(&c->conf);
	mbedtls_x509_crt_free(&c->ca);
	mbedtls_x509_crt_free(&c->crt);
	mbedtls_pk_free(&c->key);
	mbedtls_ctr_drbg_free(&c->drbg);
	mbedtls_entropy_free(&c->entropy);
}

START_TEST(hook_sees_the_certificate)
{
	tls_client c;
	ck_assert_int_eq(tls_connect(&c, "client"), 0);
	pthread_mutex_lock(&mu);
	ck_assert_int_eq(auth_calls, 1);
	ck_assert_str_eq(seen_user, "client-cn-1");
	/* Exactly the certificate the client presented. */
	ck_assert_uint_eq(seen_der_len, c.crt.raw.len);
	ck_assert_int_eq(memcmp(seen_der, c.crt.raw.p, seen_der_len), 0);
	pthread_mutex_unlock(&mu);
	tls_close(&c);

	/* Without a certificate (verify_peer allows it) the hook gets NULL
	 * and refuses: CONNACK 0x04 in 3.1.1. */
	ck_assert_int_eq(tls_connect(&c, NULL), 4);
	pthread_mutex_lock(&mu);
	ck_assert_int_eq(auth_calls, 2);
	ck_assert_uint_eq(seen_der_len, 0);
	pthread_mutex_unlock(&mu);
	tls_close(&c);

	/* A certificate from an unknown CA never reaches the hook. */
	ck_assert_int_eq(tls_connect(&c, "rogue"), -1);
	tls_close(&c);
	pthread_mutex_lock(&mu);
	ck_assert_int_eq(auth_calls, 2);
	pthread_mutex_unlock(&mu);
	mqb_metrics m;
	mqb_broker_metrics(b, &m);
	ck_assert_uint_eq(m.tls_handshakes, 2);
	ck_assert_uint_eq(m.tls_handshake_errors, 1);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("tls_auth");
	TCase *tc = tcase_create("api");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, hook_sees_the_certificate);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
