/* The PROXY protocol v1/v2 header parser (net/proxy.h). */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "net/proxy.h"

static long parse(const void *p, size_t len, mqbi_proxy_hdr *h)
{
	const char *why;
	memset(h, 0x5a, sizeof *h);
	long n = mqbi_proxy_parse(p, len, h, &why);
	if (n < 0)
		ck_assert_ptr_nonnull(why);
	return n;
}

/* Every proper prefix of a complete header asks for more bytes. */
static void assert_prefixes_incomplete(const uint8_t *p, size_t len)
{
	mqbi_proxy_hdr h;
	for (size_t k = 0; k < len; k++)
		ck_assert_msg(parse(p, k, &h) == 0, "prefix of %zu bytes", k);
}

START_TEST(v1_tcp4_and_tcp6)
{
	mqbi_proxy_hdr h;
	const char *v4 = "PROXY TCP4 203.0.113.7 127.0.0.1 56324 1883\r\nMQTT...";
	size_t hl = strlen("PROXY TCP4 203.0.113.7 127.0.0.1 56324 1883\r\n");
	ck_assert_int_eq(parse(v4, strlen(v4), &h), (long)hl);
	ck_assert(h.has_addr);
	ck_assert_str_eq(h.src, "203.0.113.7:56324");
	ck_assert(h.dst_loopback);
	assert_prefixes_incomplete((const uint8_t *)v4, hl);

	const char *v6 = "PROXY TCP6 2001:db8::1 2001:db8::2 65535 8883\r\n";
	ck_assert_int_eq(parse(v6, strlen(v6), &h), (long)strlen(v6));
	ck_assert_str_eq(h.src, "2001:db8::1:65535");
	ck_assert(!h.dst_loopback);

	const char *unk = "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n";
	ck_assert_int_eq(parse(unk, strlen(unk), &h), (long)strlen(unk));
	ck_assert(!h.has_addr);
}
END_TEST

START_TEST(v1_malformed)
{
	static const char *bad[] = {
	        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",       /* LF without CR */
	        "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",     /* protocol */
	        "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",       /* address */
	        "PROXY TCP4 ::1 5.6.7.8 1 2\r\n",         /* family mismatch */
	        "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", /* port range */
	        "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",    /* leading zero */
	        "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",       /* missing port */
	        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",   /* extra field */
	        "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",    /* sign */
	        "GET / HTTP/1.1\r\n",                     /* not PROXY at all */
	        "\x10\x0c\x00\x04MQTT",                   /* an MQTT CONNECT */
	};
	mqbi_proxy_hdr h;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		ck_assert_msg(parse(bad[i], strlen(bad[i]), &h) == -1, "accepted: %s", bad[i]);
	/* No line end within 107 bytes. */
	char longline[200] = "PROXY TCP4 ";
	memset(longline + 11, '1', sizeof longline - 12);
	longline[sizeof longline - 1] = '\0';
	ck_assert_int_eq(parse(longline, strlen(longline), &h), -1);
	ck_assert_int_eq(parse(longline, 100, &h), 0);
	/* A wrong first byte is refused at once, without waiting for more. */
	ck_assert_int_eq(parse("X", 1, &h), -1);
	ck_assert_int_eq(parse("PROXx", 5, &h), -1);
}
END_TEST

static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const uint8_t *body, size_t n)
{
	memcpy(out, sig, 12);
	out[12] = ver_cmd;
	out[13] = fam;
	out[14] = (uint8_t)(n >> 8);
	out[15] = (uint8_t)n;
	if (n)
		memcpy(out + 16, body, n);
	return 16 + n;
}

START_TEST(v2_inet_inet6_local_tlvs)
{
	uint8_t buf[200];
	mqbi_proxy_hdr h;
	/* 198.51.100.9:4000 -> 10.0.0.1:8883, then a TLV (ALPN "mqtt"). */
	const uint8_t b4[] = {198,  51,   100,  9,    10,   0,   0,   1,   0x0f, 0xa0,
	                      0x22, 0xb3, 0x01, 0x00, 0x04, 'm', 'q', 't', 't'};
	size_t n = v2(buf, 0x21, 0x11, b4, sizeof b4);
	buf[n] = 0x10; /* the client's first byte follows */
	ck_assert_int_eq(parse(buf, n + 1, &h), (long)n);
	ck_assert(h.has_addr);
	ck_assert_str_eq(h.src, "198.51.100.9:4000");
	ck_assert(!h.dst_loopback);
	assert_prefixes_incomplete(buf, n);

	uint8_t b6[36] = {0x20, 0x01, 0x0d, 0xb8, [15] = 5, [31] = 1, [32] = 0x30, [33] = 0x39};
	n = v2(buf, 0x21, 0x21, b6, sizeof b6);
	ck_assert_int_eq(parse(buf, n, &h), (long)n);
	ck_assert_str_eq(h.src, "2001:db8::5:12345");
	ck_assert(h.dst_loopback); /* ::1 */

	/* LOCAL (a health check): our own view of the addresses stands. */
	n = v2(buf, 0x20, 0x00, NULL, 0);
	ck_assert_int_eq(parse(buf, n, &h), 16);
	ck_assert(!h.has_addr);
	/* PROXY over UNIX sockets or UNSPEC: likewise. */
	uint8_t unixaddr[216] = {0};
	uint8_t big[300];
	n = v2(big, 0x21, 0x31, unixaddr, sizeof unixaddr);
	ck_assert_int_eq(parse(big, n, &h), (long)n);
	ck_assert(!h.has_addr);
}
END_TEST

START_TEST(v2_malformed)
{
	uint8_t buf[64];
	mqbi_proxy_hdr h;
	const uint8_t b4[12] = {1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2};
	size_t n = v2(buf, 0x11, 0x11, b4, sizeof b4); /* version 1 */
	ck_assert_int_eq(parse(buf, n, &h), -1);
	n = v2(buf, 0x22, 0x11, b4, sizeof b4); /* command 2 */
	ck_assert_int_eq(parse(buf, n, &h), -1);
	n = v2(buf, 0x21, 0x11, b4, 8); /* IPv4 block too short */
	ck_assert_int_eq(parse(buf, n, &h), -1);
	n = v2(buf, 0x21, 0x21, b4, 12); /* IPv6 block too short */
	ck_assert_int_eq(parse(buf, n, &h), -1);
	/* Longer than MQBI_PROXY_MAX: refused from its first 16 bytes. */
	n = v2(buf, 0x21, 0x11, b4, sizeof b4);
	buf[14] = 0xff;
	ck_assert_int_eq(parse(buf, 16, &h), -1);
	/* A damaged signature. */
	n = v2(buf, 0x21, 0x11, b4, sizeof b4);
	buf[5] ^= 1;
	ck_assert_int_eq(parse(buf, n, &h), -1);
}
END_TEST

/* Every truncation and every single-byte change of valid headers: no
 * crash, no over-read (run under ASan), and a consistent answer. */
START_TEST(mutations)
{
	uint8_t buf[128];
	const uint8_t b4[12] = {198, 51, 100, 9, 127, 0, 0, 1, 0x0f, 0xa0, 0x07, 0x5b};
	size_t n = v2(buf, 0x21, 0x11, b4, sizeof b4);
	const char *v1 = "PROXY TCP4 203.0.113.7 127.0.0.1 56324 1883\r\n";
	const uint8_t *inputs[2] = {buf, (const uint8_t *)v1};
	size_t lens[2] = {n, strlen(v1)};
	for (int k = 0; k < 2; k++) {
		for (size_t pos = 0; pos < lens[k]; pos++) {
			for (int v = 0; v < 256; v += 7) {
				uint8_t *m = malloc(lens[k]);
				memcpy(m, inputs[k], lens[k]);
				m[pos] = (uint8_t)v;
				mqbi_proxy_hdr h;
				long r = parse(m, lens[k], &h);
				ck_assert(r >= -1 && r <= (long)lens[k]);
				free(m);
			}
		}
	}
}
END_TEST

static Suite *proxy_suite(void)
{
	Suite *s = suite_create("proxy");
	TCase *tc = tcase_create("parse");
	tcase_add_test(tc, v1_tcp4_and_tcp6);
	tcase_add_test(tc, v1_malformed);
	tcase_add_test(tc, v2_inet_inet6_local_tlvs);
	tcase_add_test(tc, v2_malformed);
	tcase_add_test(tc, mutations);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(proxy_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
