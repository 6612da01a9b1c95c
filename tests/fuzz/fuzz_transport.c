/*
 * libFuzzer harness for the transport parsers that read bytes from the
 * network before MQTT does: the PROXY protocol header (net/proxy.h), the
 * WebSocket upgrade request and WebSocket frame headers (net/ws.h). The first
 * byte picks the parser. Each must stay within the input, answer within its
 * documented range, and agree with itself on a prefix: a header that parses
 * complete at n bytes parses the same from a copy of exactly n bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/proxy.h"
#include "net/ws.h"

#define CHECK(c)                                                                                   \
	do {                                                                                       \
		if (!(c))                                                                          \
			__builtin_trap();                                                          \
	} while (0)

static void fuzz_proxy(const uint8_t *p, size_t n)
{
	mqbi_proxy_hdr h;
	const char *why;
	long r = mqbi_proxy_parse(p, n, &h, &why);
	CHECK(r >= -1 && r <= (long)n && r <= MQBI_PROXY_MAX);
	CHECK(r >= 0 || why != NULL);
	if (r > 0) {
		uint8_t *copy = malloc((size_t)r);
		memcpy(copy, p, (size_t)r);
		mqbi_proxy_hdr h2;
		CHECK(mqbi_proxy_parse(copy, (size_t)r, &h2, &why) == r);
		CHECK(h2.has_addr == h.has_addr);
		if (h.has_addr)
			CHECK(strcmp(h.src, h2.src) == 0 && memchr(h.src, '\0', sizeof h.src));
		free(copy);
	}
}

static void fuzz_ws_request(const uint8_t *p, size_t n)
{
	static const mqbi_ws_options o = {"/mqtt", true, "X-Forwarded-For", "X-Forwarded-Port"};
	mqbi_ws_request rq;
	int status = 0;
	const char *why = NULL;
	long r = mqbi_ws_parse_request(p, n, &o, &rq, &status, &why);
	CHECK(r >= -1 && r <= (long)n && r <= MQBI_WS_MAX_REQUEST);
	if (r < 0)
		CHECK(why && status >= 400 && status <= 431);
	if (r > 0) {
		CHECK(strlen(rq.key) == 24);
		char accept[29];
		mqbi_ws_accept_key(rq.key, accept);
		CHECK(strlen(accept) == 28);
		CHECK(rq.forwarded_port >= -1 && rq.forwarded_port <= 65535);
	}
}

static void fuzz_ws_frames(const uint8_t *p, size_t n)
{
	/* A stream of frames, as the transport walks it. */
	size_t off = 0;
	while (off < n) {
		mqbi_ws_frame f;
		uint16_t code = 0;
		const char *why = NULL;
		int h = mqbi_ws_parse_frame(p + off, n - off, &f, &code, &why);
		CHECK(h == -1 || h == 0 || (h >= 6 && h <= 14 && (size_t)h <= n - off));
		if (h <= 0) {
			CHECK(h == 0 || (code == 1002 && why));
			break;
		}
		CHECK(f.opcode < 8 || (f.fin && f.len <= 125));
		off += (size_t)h;
		size_t take = f.len < n - off ? (size_t)f.len : n - off;
		uint8_t *buf = malloc(take ? take : 1);
		mqbi_ws_unmask(buf, p + off, take, f.mask, 0);
		mqbi_ws_unmask(buf, buf, take, f.mask, 0);
		CHECK(memcmp(buf, p + off, take) == 0);
		free(buf);
		off += take;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	switch (data[0] % 3) {
	case 0:
		fuzz_proxy(data + 1, size - 1);
		break;
	case 1:
		fuzz_ws_request(data + 1, size - 1);
		break;
	default:
		fuzz_ws_frames(data + 1, size - 1);
		break;
	}
	return 0;
}
