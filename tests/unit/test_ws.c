/* The WebSocket upgrade request and frame parsers (net/ws.h). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/ws.h"

static const mqbi_ws_options opts = {"/mqtt", true, "X-Forwarded-For", "X-Forwarded-Port"};

static const char good[] = "GET /mqtt HTTP/1.1\r\n"
                           "Host: broker.example\r\n"
                           "Upgrade: WebSocket\r\n"
                           "Connection: keep-alive, Upgrade\r\n"
                           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                           "Sec-WebSocket-Protocol: mqttv3.1 , mqtt\r\n"
                           "Sec-WebSocket-Version: 13\r\n"
                           "X-Forwarded-For: 203.0.113.5, 10.1.1.1\r\n"
                           "x-forwarded-port: 4711\r\n"
                           "\r\n";

static long parse(const char *text, size_t len, mqbi_ws_request *rq, int *status)
{
	const char *why = NULL;
	*status = 0;
	long n = mqbi_ws_parse_request((const uint8_t *)text, len, &opts, rq, status, &why);
	if (n < 0)
		ck_assert_ptr_nonnull(why);
	return n;
}

START_TEST(request_accepted)
{
	mqbi_ws_request rq;
	int status;
	size_t len = strlen(good);
	/* Followed by the first frame: only the request is consumed. */
	char more[sizeof good + 4];
	memcpy(more, good, len);
	memcpy(more + len, "\x82\x80", 2);
	ck_assert_int_eq(parse(more, len + 2, &rq, &status), (long)len);
	ck_assert_str_eq(rq.key, "dGhlIHNhbXBsZSBub25jZQ==");
	ck_assert_str_eq(rq.subprotocol, "mqtt"); /* ours in our order of preference */
	ck_assert_str_eq(rq.forwarded_for, "203.0.113.5");
	ck_assert_int_eq(rq.forwarded_port, 4711);
	for (size_t k = 0; k < len; k++)
		ck_assert_msg(parse(good, k, &rq, &status) == 0, "prefix %zu", k);
	char accept[29];
	mqbi_ws_accept_key(rq.key, accept);
	ck_assert_str_eq(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="); /* RFC 6455, 1.3 */
}
END_TEST

/* Replaces the first occurrence of `from` in the good request. */
static const char *edited(const char *from, const char *to)
{
	static char buf[sizeof good + 10000];
	const char *at = strstr(good, from);
	ck_assert_ptr_nonnull(at);
	snprintf(buf, sizeof buf, "%.*s%s%s", (int)(at - good), good, to, at + strlen(from));
	return buf;
}

START_TEST(request_refused)
{
	static const struct {
		const char *from, *to;
		int status;
	} cases[] = {
	        {"GET /mqtt", "GET /other", 404},
	        {"GET /mqtt", "GET /mqttx", 404},
	        {"GET /mqtt", "POST /mqtt", 405},
	        {"HTTP/1.1\r\n", "HTTP/1.0\r\n", 400},
	        {"HTTP/1.1\r\n", "HTTX/1.1\r\n", 400},
	        {"Upgrade: WebSocket", "Upgrade: h2c", 426},
	        {"keep-alive, Upgrade", "keep-alive", 426},
	        {"Version: 13", "Version: 8", 426},
	        {"dGhlIHNhbXBsZSBub25jZQ==", "short", 400},
	        {"dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ!!", 400},
	        {"Sec-WebSocket-Key", "Sec-WebSocket-Kex", 400},
	        {"mqttv3.1 , mqtt", "wamp, stomp", 400},
	        {"Sec-WebSocket-Protocol", "X-Other", 400}, /* none offered, required */
	        {"Host: broker.example\r\n", "no colon here\r\n", 400},
	};
	mqbi_ws_request rq;
	int status;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const char *req = edited(cases[i].from, cases[i].to);
		ck_assert_msg(parse(req, strlen(req), &rq, &status) == -1 &&
		                      status == cases[i].status,
		              "%s -> %s: status %d", cases[i].from, cases[i].to, status);
	}
	/* Headers beyond 8 KiB without an end. */
	char big[MQBI_WS_MAX_REQUEST + 100];
	memset(big, 'a', sizeof big);
	memcpy(big, "GET /mqtt HTTP/1.1\r\nX: ", 23);
	ck_assert_int_eq(parse(big, sizeof big, &rq, &status), -1);
	ck_assert_int_eq(status, 431);
	ck_assert_int_eq(parse(big, 4000, &rq, &status), 0);
	/* Not HTTP at all (an MQTT CONNECT): refused at once. */
	ck_assert_int_eq(parse("\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c", 12, &rq, &status), -1);
	ck_assert_int_eq(status, 400);
}
END_TEST

START_TEST(request_options)
{
	mqbi_ws_request rq;
	int status;
	const char *why;
	/* A query string is not part of the path. */
	const char *q = edited("GET /mqtt ", "GET /mqtt?x=1 ");
	ck_assert_int_gt(parse(q, strlen(q), &rq, &status), 0);
	/* Without the headers configured, nothing is taken from them. */
	mqbi_ws_options plain = {"/mqtt", false, "", ""};
	ck_assert_int_gt(mqbi_ws_parse_request((const uint8_t *)good, strlen(good), &plain, &rq,
	                                       &status, &why),
	                 0);
	ck_assert_str_eq(rq.forwarded_for, "");
	ck_assert_int_eq(rq.forwarded_port, -1);
	/* No subprotocol offered, and none required. */
	const char *none = edited("Sec-WebSocket-Protocol: mqttv3.1 , mqtt\r\n", "");
	ck_assert_int_gt(mqbi_ws_parse_request((const uint8_t *)none, strlen(none), &plain, &rq,
	                                       &status, &why),
	                 0);
	ck_assert_ptr_null(rq.subprotocol);
	/* A forwarded address that is not one is ignored. */
	const char *junk = edited("203.0.113.5, 10.1.1.1", "unknown");
	ck_assert_int_gt(parse(junk, strlen(junk), &rq, &status), 0);
	ck_assert_str_eq(rq.forwarded_for, "");
	const char *v6 = edited("203.0.113.5, 10.1.1.1", "2001:db8::9");
	ck_assert_int_gt(parse(v6, strlen(v6), &rq, &status), 0);
	ck_assert_str_eq(rq.forwarded_for, "2001:db8::9");
}
END_TEST

START_TEST(frames)
{
	mqbi_ws_frame f;
	uint16_t code;
	const char *why;
	/* 7-bit, 16-bit and 64-bit lengths, masked. */
	const uint8_t f7[] = {0x82, 0x85, 1, 2, 3, 4};
	ck_assert_int_eq(mqbi_ws_parse_frame(f7, sizeof f7, &f, &code, &why), 6);
	ck_assert(f.fin);
	ck_assert_int_eq(f.opcode, MQBI_WS_BINARY);
	ck_assert_int_eq(f.len, 5);
	ck_assert_int_eq(f.mask[3], 4);
	const uint8_t f16[] = {0x02, 0xfe, 0x12, 0x34, 9, 9, 9, 9};
	ck_assert_int_eq(mqbi_ws_parse_frame(f16, sizeof f16, &f, &code, &why), 8);
	ck_assert(!f.fin);
	ck_assert_int_eq(f.len, 0x1234);
	const uint8_t f64[] = {0x80, 0xff, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4};
	ck_assert_int_eq(mqbi_ws_parse_frame(f64, sizeof f64, &f, &code, &why), 14);
	ck_assert_int_eq(f.opcode, MQBI_WS_CONT);
	ck_assert_uint_eq(f.len, 1ull << 32);
	for (size_t k = 0; k < sizeof f64; k++)
		ck_assert_int_eq(mqbi_ws_parse_frame(f64, k, &f, &code, &why), 0);

	static const struct {
		uint8_t b[14];
		size_t n;
	} bad[] = {
	        {{0x82, 0x05}, 2},                                         /* unmasked */
	        {{0xc2, 0x81, 0, 0, 0, 0}, 6},                             /* RSV1 */
	        {{0x83, 0x81, 0, 0, 0, 0}, 6},                             /* opcode 3 */
	        {{0x8b, 0x81, 0, 0, 0, 0}, 6},                             /* opcode 11 */
	        {{0x09, 0x81, 0, 0, 0, 0}, 6},                             /* fragmented ping */
	        {{0x88, 0xfe, 0, 126, 0, 0, 0, 0}, 8},                     /* close of 126 bytes */
	        {{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}, 14}, /* top bit */
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		code = 0;
		ck_assert_msg(mqbi_ws_parse_frame(bad[i].b, bad[i].n, &f, &code, &why) == -1,
		              "case %zu", i);
		ck_assert_int_eq(code, 1002);
	}
}
END_TEST

START_TEST(frame_headers_and_unmask)
{
	uint8_t h[10];
	ck_assert_int_eq(mqbi_ws_frame_header(h, MQBI_WS_BINARY, 125), 2);
	ck_assert_int_eq(h[0], 0x82);
	ck_assert_int_eq(h[1], 125);
	ck_assert_int_eq(mqbi_ws_frame_header(h, MQBI_WS_BINARY, 126), 4);
	ck_assert_int_eq(h[1], 126);
	ck_assert_int_eq(h[2] << 8 | h[3], 126);
	ck_assert_int_eq(mqbi_ws_frame_header(h, MQBI_WS_CLOSE, 70000), 10);
	ck_assert_int_eq(h[0], 0x88);
	ck_assert_int_eq(h[1], 127);
	ck_assert_int_eq(h[7] << 16 | h[8] << 8 | h[9], 70000);

	/* The word-at-a-time unmask equals the byte-at-a-time definition for
	 * every start offset and length. */
	const uint8_t mask[4] = {0x12, 0x34, 0x56, 0x78};
	uint8_t src[64], dst[64];
	for (int i = 0; i < 64; i++)
		src[i] = (uint8_t)(i * 7 + 1);
	for (unsigned pos = 0; pos < 8; pos++) {
		for (size_t n = 0; n <= 64; n++) {
			mqbi_ws_unmask(dst, src, n, mask, pos);
			for (size_t i = 0; i < n; i++)
				ck_assert_int_eq(dst[i], src[i] ^ mask[(pos + i) % 4]);
		}
	}
	memcpy(dst, src, 64);
	mqbi_ws_unmask(dst, dst, 64, mask, 3); /* in place */
	for (size_t i = 0; i < 64; i++)
		ck_assert_int_eq(dst[i], src[i] ^ mask[(3 + i) % 4]);
}
END_TEST

/* Single-byte changes of a valid request at every position: never a crash
 * or an over-read (ASan), always a consistent answer. */
START_TEST(request_mutations)
{
	size_t len = strlen(good);
	for (size_t pos = 0; pos < len; pos++) {
		for (int v = 0; v < 256; v += 5) {
			char *m = malloc(len);
			memcpy(m, good, len);
			m[pos] = (char)v;
			mqbi_ws_request rq;
			int status;
			long r = parse(m, len, &rq, &status);
			ck_assert(r >= -1 && r <= (long)len);
			if (r < 0)
				ck_assert(status >= 400 && status <= 431);
			free(m);
		}
	}
}
END_TEST

static Suite *ws_suite(void)
{
	Suite *s = suite_create("ws");
	TCase *tc = tcase_create("parse");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, request_accepted);
	tcase_add_test(tc, request_refused);
	tcase_add_test(tc, request_options);
	tcase_add_test(tc, frames);
	tcase_add_test(tc, frame_headers_and_unmask);
	tcase_add_test(tc, request_mutations);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(ws_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
