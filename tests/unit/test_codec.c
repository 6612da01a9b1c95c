/* Unit tests of the MQTT codec (lib/proto). */
#include "proto/codec.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- helpers ---------------------------------------------------------- */

#define BIT(id) (1ull << (id))

/* Returns a pointer p such that p[len] is the first byte of a PROT_NONE page,
 * so any read past len faults (the picohttpparser habit). */
static uint8_t *guard_buf(size_t len, void **map, size_t *map_len)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t pages = (len + page - 1) / page + 1;
	uint8_t *m = mmap(NULL, pages * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
	                  -1, 0);
	ck_assert_ptr_ne(m, MAP_FAILED);
	ck_assert_int_eq(mprotect(m + (pages - 1) * page, page, PROT_NONE), 0);
	*map = m;
	*map_len = pages * page;
	return m + (pages - 1) * page - len;
}

static mqbi_dec_ctx mkctx(uint8_t level, bool from_client)
{
	mqbi_dec_ctx c = {.level = level, .from_client = from_client, .topic_alias_max = 10};
	return c;
}

static mqbi_dec_status dec(const uint8_t *b, size_t len, uint8_t level, bool from_client,
                           mqbi_packet *pkt, size_t *consumed, uint8_t *reason)
{
	mqbi_dec_ctx c = mkctx(level, from_client);
	return mqbi_decode(b, len, &c, pkt, consumed, reason);
}

/* Parses "30 0a ff" style hex into out; returns its length. */
static size_t hex(const char *s, uint8_t *out)
{
	size_t n = 0;
	while (*s) {
		if (*s == ' ') {
			s++;
			continue;
		}
		unsigned v;
		ck_assert_int_eq(sscanf(s, "%2x", &v), 1);
		out[n++] = (uint8_t)v;
		s += 2;
	}
	return n;
}

/* Builds a packet from a first byte and a hex body (remaining length computed). */
static size_t mkpkt(uint8_t b0, const char *body, uint8_t *out)
{
	uint8_t tmp[1024];
	size_t n = hex(body, tmp);
	out[0] = b0;
	int v = mqbi_varint_encode(out + 1, (uint32_t)n);
	memcpy(out + 1 + v, tmp, n);
	return 1 + (size_t)v + n;
}

static bool bytes_eq(mqbi_bytes a, mqbi_bytes b)
{
	return a.len == b.len && (a.len == 0 || !memcmp(a.ptr, b.ptr, a.len));
}

static mqbi_bytes S(const char *s)
{
	mqbi_bytes b = {(const uint8_t *)s, (uint32_t)strlen(s)};
	return b;
}

/* ---- varint ----------------------------------------------------------- */

START_TEST(varint_boundaries)
{
	static const struct {
		uint32_t v;
		int n;
	} cases[] = {{0, 1},     {127, 1},     {128, 2},     {16383, 2},
	             {16384, 3}, {2097151, 3}, {2097152, 4}, {268435455, 4}};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint8_t b[4];
		uint32_t v = 12345;
		ck_assert_int_eq(mqbi_varint_size(cases[i].v), cases[i].n);
		ck_assert_int_eq(mqbi_varint_encode(b, cases[i].v), cases[i].n);
		ck_assert_int_eq(mqbi_varint_decode(b, (size_t)cases[i].n, &v), cases[i].n);
		ck_assert_uint_eq(v, cases[i].v);
		/* Every truncation asks for more. */
		for (int k = 0; k < cases[i].n; k++)
			ck_assert_int_eq(mqbi_varint_decode(b, (size_t)k, &v), 0);
		/* Extra bytes after it are not consumed. */
		uint8_t ext[8] = {0};
		memcpy(ext, b, (size_t)cases[i].n);
		ext[cases[i].n] = 0xFF;
		ck_assert_int_eq(mqbi_varint_decode(ext, 8, &v), cases[i].n);
	}
	uint8_t b[4];
	ck_assert_int_eq(mqbi_varint_encode(b, 268435456u), 0);
	ck_assert_int_eq(mqbi_varint_size(268435456u), 0);
	/* Spec examples. */
	ck_assert_int_eq(mqbi_varint_encode(b, 321), 2);
	ck_assert_uint_eq(b[0], 0xC1);
	ck_assert_uint_eq(b[1], 0x02);
	ck_assert_int_eq(mqbi_varint_encode(b, 268435455), 4);
	ck_assert_mem_eq(b, "\xff\xff\xff\x7f", 4);
}
END_TEST

START_TEST(varint_malformed)
{
	uint32_t v;
	/* A fifth byte would be needed. */
	ck_assert_int_eq(mqbi_varint_decode((const uint8_t *)"\xff\xff\xff\xff\x7f", 5, &v), -1);
	ck_assert_int_eq(mqbi_varint_decode((const uint8_t *)"\x80\x80\x80\x80", 4, &v), -1);
	/* Overlong (non-minimal) forms. */
	ck_assert_int_eq(mqbi_varint_decode((const uint8_t *)"\x80\x00", 2, &v), -1);
	ck_assert_int_eq(mqbi_varint_decode((const uint8_t *)"\xff\x00", 2, &v), -1);
	ck_assert_int_eq(mqbi_varint_decode((const uint8_t *)"\x80\x80\x00", 3, &v), -1);
	ck_assert_int_eq(mqbi_varint_decode((const uint8_t *)"\xff\xff\xff\x00", 4, &v), -1);
	/* Incomplete. */
	ck_assert_int_eq(mqbi_varint_decode((const uint8_t *)"\xff\xff\xff", 3, &v), 0);
	ck_assert_int_eq(mqbi_varint_decode(NULL, 0, &v), 0);
}
END_TEST

/* ---- UTF-8 ------------------------------------------------------------ */

START_TEST(utf8_valid_forms)
{
	static const char *ok[] = {
	        "",
	        "a/b/c",
	        "caf\xc3\xa9",
	        "\xe2\x82\xac",         /* U+20AC */
	        "\xed\x9f\xbf",         /* U+D7FF, just below the surrogates */
	        "\xee\x80\x80",         /* U+E000, just above */
	        "\xef\xbf\xbf",         /* U+FFFF (non-character, allowed) */
	        "\xf0\x9f\x98\x80",     /* U+1F600 */
	        "\xf4\x8f\xbf\xbf",     /* U+10FFFF */
	        "\x01\x1f\x7f\xc2\x80", /* control characters: SHOULD NOT, not MUST NOT */
	        "a fairly long ASCII string that runs through the 8-byte fast path",
	        ("0123456\xc3\xa9"
	         "0123456789abcdef\xf0\x9f\x98\x80xyz"),
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		ck_assert_msg(mqbi_utf8_valid((const uint8_t *)ok[i], strlen(ok[i])), "case %zu",
		              i);
}
END_TEST

START_TEST(utf8_invalid_forms)
{
	static const struct {
		const char *s;
		size_t len;
	} bad[] = {
	        {"\x00", 1},
	        {"abc\x00", 4},
	        {"0123456789\x00xyzxyzxyz", 20}, /* NUL in the fast path */
	        {"\xc0\x80", 2},                 /* overlong NUL */
	        {"\xc1\xbf", 2},                 /* overlong */
	        {"\xe0\x80\x80", 3},             /* overlong */
	        {"\xe0\x9f\xbf", 3},             /* overlong */
	        {"\xf0\x80\x80\x80", 4},         /* overlong */
	        {"\xf0\x8f\xbf\xbf", 4},         /* overlong */
	        {"\xed\xa0\x80", 3},             /* U+D800 */
	        {"\xed\xbf\xbf", 3},             /* U+DFFF */
	        {"\xf4\x90\x80\x80", 4},         /* U+110000 */
	        {"\xf5\x80\x80\x80", 4},
	        {"\xf8\x88\x80\x80\x80", 5},
	        {"\xfe", 1},
	        {"\xff", 1},
	        {"\x80", 1}, /* lone continuation */
	        {"a\xbf", 2},
	        {"\xc3", 1}, /* truncated */
	        {"\xe2\x82", 2},
	        {"\xf0\x9f\x98", 3},
	        {"\xc3\x28", 2}, /* bad continuation */
	        {"\xe2\x28\xa1", 3},
	        {"\xf0\x9f\x28\x80", 4},
	        {"abcdefgh\xe2\x82", 10},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(!mqbi_utf8_valid((const uint8_t *)bad[i].s, bad[i].len), "case %zu",
		              i);
}
END_TEST

START_TEST(utf8_no_overread)
{
	void *map;
	size_t ml;
	/* A truncated sequence right before the guard page. */
	static const char *tails[] = {"\xc3", "\xe2\x82", "\xf0\x9f\x98", "abcdefg\xf0"};
	for (size_t i = 0; i < 4; i++) {
		size_t n = strlen(tails[i]);
		uint8_t *g = guard_buf(n, &map, &ml);
		memcpy(g, tails[i], n);
		ck_assert(!mqbi_utf8_valid(g, n));
		munmap(map, ml);
	}
}
END_TEST

/* ---- comparison of decoded packets ------------------------------------ */

static void check_props_eq(const mqbi_props *a, const mqbi_props *b)
{
	uint64_t mask = ~(BIT(MQBI_PROP_USER_PROPERTY) | BIT(MQBI_PROP_SUB_ID));
	ck_assert_uint_eq(a->present & mask, b->present & mask);
	uint64_t p = a->present;
#define F(id, f)                                                                                   \
	if (p & BIT(id))                                                                           \
		ck_assert_uint_eq(a->f, b->f);
#define FB(id, f)                                                                                  \
	if (p & BIT(id))                                                                           \
		ck_assert(bytes_eq(a->f, b->f));
	F(MQBI_PROP_PAYLOAD_FORMAT, payload_format);
	F(MQBI_PROP_MESSAGE_EXPIRY, message_expiry);
	FB(MQBI_PROP_CONTENT_TYPE, content_type);
	FB(MQBI_PROP_RESPONSE_TOPIC, response_topic);
	FB(MQBI_PROP_CORRELATION_DATA, correlation_data);
	F(MQBI_PROP_SESSION_EXPIRY, session_expiry);
	FB(MQBI_PROP_ASSIGNED_CLIENT_ID, assigned_client_id);
	F(MQBI_PROP_SERVER_KEEP_ALIVE, server_keep_alive);
	FB(MQBI_PROP_AUTH_METHOD, auth_method);
	FB(MQBI_PROP_AUTH_DATA, auth_data);
	F(MQBI_PROP_REQUEST_PROBLEM_INFO, request_problem_info);
	F(MQBI_PROP_WILL_DELAY, will_delay);
	F(MQBI_PROP_REQUEST_RESPONSE_INFO, request_response_info);
	FB(MQBI_PROP_RESPONSE_INFO, response_info);
	FB(MQBI_PROP_SERVER_REFERENCE, server_reference);
	FB(MQBI_PROP_REASON_STRING, reason_string);
	F(MQBI_PROP_RECEIVE_MAX, receive_max);
	F(MQBI_PROP_TOPIC_ALIAS_MAX, topic_alias_max);
	F(MQBI_PROP_TOPIC_ALIAS, topic_alias);
	F(MQBI_PROP_MAX_QOS, max_qos);
	F(MQBI_PROP_RETAIN_AVAILABLE, retain_available);
	F(MQBI_PROP_MAX_PACKET_SIZE, max_packet_size);
	F(MQBI_PROP_WILDCARD_SUB_AVAILABLE, wildcard_sub_available);
	F(MQBI_PROP_SUB_ID_AVAILABLE, sub_id_available);
	F(MQBI_PROP_SHARED_SUB_AVAILABLE, shared_sub_available);
#undef F
#undef FB
}

/* `want` was encoded, `got` decoded from it. */
static void check_user_props(const mqbi_props *want, const mqbi_props *got)
{
	uint32_t pa = 0, pb = 0, n = 0;
	mqbi_bytes ka, va, kb, vb;
	while (mqbi_props_next_user(want->user_raw, want->user_raw_len, &pa, &ka, &va)) {
		ck_assert(mqbi_props_next_user(got->raw, got->raw_len, &pb, &kb, &vb));
		ck_assert(bytes_eq(ka, kb));
		ck_assert(bytes_eq(va, vb));
		n++;
	}
	ck_assert(!mqbi_props_next_user(got->raw, got->raw_len, &pb, &kb, &vb));
	ck_assert_uint_eq(got->user_count, n);
	ck_assert_uint_eq(!!(got->present & BIT(MQBI_PROP_USER_PROPERTY)), n > 0);
}

static void check_sub_ids(const mqbi_props *want, const mqbi_props *got)
{
	uint32_t pos = 0, id, n = 0;
	if (want->sub_ids && want->sub_id_count) {
		while (mqbi_props_next_sub_id(got->raw, got->raw_len, &pos, &id)) {
			ck_assert_uint_lt(n, want->sub_id_count);
			ck_assert_uint_eq(id, want->sub_ids[n]);
			n++;
		}
		ck_assert_uint_eq(n, want->sub_id_count);
		ck_assert_uint_eq(got->sub_id_count, n);
		ck_assert_uint_eq(got->sub_id, want->sub_ids[0]);
	} else if (want->present & BIT(MQBI_PROP_SUB_ID)) {
		ck_assert_uint_eq(got->sub_id_count, 1);
		ck_assert_uint_eq(got->sub_id, want->sub_id);
	} else {
		ck_assert_uint_eq(got->sub_id_count, 0);
	}
}

static void check_props(const mqbi_props *want, const mqbi_props *got, uint8_t level)
{
	if (level < MQBI_V5) {
		ck_assert_uint_eq(got->present, 0);
		return;
	}
	check_props_eq(want, got);
	check_user_props(want, got);
	check_sub_ids(want, got);
}

static void check_pkt_eq(const mqbi_packet *w, const mqbi_packet *g, uint8_t level)
{
	bool v5 = level >= MQBI_V5;
	ck_assert_int_eq(w->type, g->type);
	switch (w->type) {
	case MQBI_CONNECT: {
		const mqbi_connect *a = &w->u.connect, *b = &g->u.connect;
		ck_assert_uint_eq(b->level, level);
		ck_assert(bytes_eq(b->protocol_name, S(level == 3 ? "MQIsdp" : "MQTT")));
		ck_assert_int_eq(a->clean_start, b->clean_start);
		ck_assert_uint_eq(a->keepalive, b->keepalive);
		ck_assert(bytes_eq(a->client_id, b->client_id));
		ck_assert_int_eq(a->will_flag, b->will_flag);
		ck_assert_uint_eq(a->will_qos, b->will_qos);
		ck_assert_int_eq(a->will_retain, b->will_retain);
		ck_assert(bytes_eq(a->will_topic, b->will_topic));
		ck_assert(bytes_eq(a->will_payload, b->will_payload));
		ck_assert_int_eq(a->has_username, b->has_username);
		ck_assert_int_eq(a->has_password, b->has_password);
		ck_assert(bytes_eq(a->username, b->username));
		ck_assert(bytes_eq(a->password, b->password));
		check_props(&a->props, &b->props, level);
		if (a->will_flag)
			check_props(&a->will_props, &b->will_props, level);
		break;
	}
	case MQBI_CONNACK:
		ck_assert_int_eq(w->u.connack.session_present, g->u.connack.session_present);
		ck_assert_uint_eq(w->u.connack.reason, g->u.connack.reason);
		check_props(&w->u.connack.props, &g->u.connack.props, level);
		break;
	case MQBI_PUBLISH: {
		const mqbi_publish *a = &w->u.publish, *b = &g->u.publish;
		ck_assert_uint_eq(a->qos, b->qos);
		ck_assert_int_eq(a->dup, b->dup);
		ck_assert_int_eq(a->retain, b->retain);
		ck_assert(bytes_eq(a->topic, b->topic));
		ck_assert_uint_eq(a->packet_id, b->packet_id);
		ck_assert(bytes_eq(a->payload, b->payload));
		check_props(&a->props, &b->props, level);
		break;
	}
	case MQBI_PUBACK:
	case MQBI_PUBREC:
	case MQBI_PUBREL:
	case MQBI_PUBCOMP:
		ck_assert_uint_eq(w->u.ack.packet_id, g->u.ack.packet_id);
		ck_assert_uint_eq(v5 ? w->u.ack.reason : 0, g->u.ack.reason);
		check_props(&w->u.ack.props, &g->u.ack.props, level);
		break;
	case MQBI_SUBSCRIBE:
	case MQBI_UNSUBSCRIBE: {
		const mqbi_subscribe *a = &w->u.subscribe, *b = &g->u.subscribe;
		ck_assert_uint_eq(a->packet_id, b->packet_id);
		ck_assert(bytes_eq(a->list, b->list));
		ck_assert_uint_eq(a->count, b->count);
		check_props(&a->props, &b->props, level);
		break;
	}
	case MQBI_SUBACK:
	case MQBI_UNSUBACK:
		ck_assert_uint_eq(w->u.suback.packet_id, g->u.suback.packet_id);
		if (v5 || w->type == MQBI_SUBACK)
			ck_assert(bytes_eq(w->u.suback.reasons, g->u.suback.reasons));
		else
			ck_assert_uint_eq(g->u.suback.reasons.len, 0);
		check_props(&w->u.suback.props, &g->u.suback.props, level);
		break;
	case MQBI_DISCONNECT:
	case MQBI_AUTH:
		ck_assert_uint_eq(v5 ? w->u.reason.reason : 0, g->u.reason.reason);
		check_props(&w->u.reason.props, &g->u.reason.props, level);
		break;
	default:
		break;
	}
}

/* Encodes `in`, decodes it back and compares; then checks that every proper
 * prefix, placed just before a guard page, is NEED_MORE. Returns the size. */
static size_t round_trip(const mqbi_packet *in, uint8_t level, bool from_client)
{
	uint8_t buf[4096];
	size_t size = mqbi_encoded_size(in, level);
	ck_assert_uint_gt(size, 0);
	ck_assert_uint_le(size, sizeof(buf));
	ck_assert_uint_eq(mqbi_encode(buf, sizeof(buf), in, level), size);
	ck_assert_uint_eq(mqbi_encode(buf, size - 1, in, level), 0);
	ck_assert_uint_eq(mqbi_encode(buf, size, in, level), size);

	mqbi_packet out;
	size_t used;
	uint8_t reason;
	mqbi_dec_status st = dec(buf, size, level, from_client, &out, &used, &reason);
	ck_assert_msg(st == MQBI_DEC_OK, "%s level %u: status %d reason 0x%02x",
	              mqbi_ptype_name(in->type), level, st, reason);
	ck_assert_uint_eq(used, size);
	check_pkt_eq(in, &out, level);

	void *map;
	size_t ml;
	for (size_t k = 0; k <= size; k++) {
		uint8_t *g = guard_buf(k, &map, &ml);
		memcpy(g, buf, k);
		st = dec(g, k, level, from_client, &out, &used, &reason);
		ck_assert_int_eq(st, k == size ? MQBI_DEC_OK : MQBI_DEC_NEED_MORE);
		munmap(map, ml);
	}
	/* A second packet behind it is left alone. */
	uint8_t two[8192];
	memcpy(two, buf, size);
	memcpy(two + size, buf, size);
	ck_assert_int_eq(dec(two, 2 * size, level, from_client, &out, &used, &reason), MQBI_DEC_OK);
	ck_assert_uint_eq(used, size);
	return size;
}

/* ---- property fixtures ------------------------------------------------ */

/* Allowed properties per packet kind, restated here from MQTT 5 table 2-4 so
 * the library table is checked against an independent copy. */
static uint64_t allowed_props(int kind)
{
	uint64_t user = BIT(0x26);
	switch (kind) {
	case MQBI_CONNECT:
		return user | BIT(0x11) | BIT(0x15) | BIT(0x16) | BIT(0x17) | BIT(0x19) |
		       BIT(0x21) | BIT(0x22) | BIT(0x27);
	case MQBI_CONNACK:
		return user | BIT(0x11) | BIT(0x12) | BIT(0x13) | BIT(0x15) | BIT(0x16) |
		       BIT(0x1A) | BIT(0x1C) | BIT(0x1F) | BIT(0x21) | BIT(0x22) | BIT(0x24) |
		       BIT(0x25) | BIT(0x27) | BIT(0x28) | BIT(0x29) | BIT(0x2A);
	case MQBI_PUBLISH:
		return user | BIT(0x01) | BIT(0x02) | BIT(0x03) | BIT(0x08) | BIT(0x09) |
		       BIT(0x0B) | BIT(0x23);
	case MQBI_WILL_PROPS:
		return user | BIT(0x01) | BIT(0x02) | BIT(0x03) | BIT(0x08) | BIT(0x09) | BIT(0x18);
	case MQBI_PUBACK:
	case MQBI_PUBREC:
	case MQBI_PUBREL:
	case MQBI_PUBCOMP:
	case MQBI_SUBACK:
	case MQBI_UNSUBACK:
		return user | BIT(0x1F);
	case MQBI_SUBSCRIBE:
		return user | BIT(0x0B);
	case MQBI_UNSUBSCRIBE:
		return user;
	case MQBI_DISCONNECT:
		return user | BIT(0x11) | BIT(0x1C) | BIT(0x1F);
	case MQBI_AUTH:
		return user | BIT(0x15) | BIT(0x16) | BIT(0x1F);
	}
	return 0;
}

/* A block holding two user properties around a Content Type that the encoder
 * must not copy. */
static const uint8_t user_block[] = {0x26, 0,   1,    'k', 0, 1,   'v', 0x03, 0,
                                     1,    'x', 0x26, 0,   2, 'k', '2', 0,    0};

/* Every property allowed on `kind`, with non-default values. */
static mqbi_props full_props(int kind)
{
	mqbi_props p = {0};
	p.present = allowed_props(kind) & ~BIT(MQBI_PROP_USER_PROPERTY);
	p.user_raw = user_block;
	p.user_raw_len = sizeof(user_block);
	p.payload_format = 1;
	p.request_problem_info = 0;
	p.request_response_info = 1;
	p.max_qos = 1;
	p.retain_available = 0;
	p.wildcard_sub_available = 1;
	p.sub_id_available = 0;
	p.shared_sub_available = 1;
	p.server_keep_alive = 0x1234;
	p.receive_max = 0xFFFF;
	p.topic_alias_max = 7;
	p.topic_alias = 3;
	p.message_expiry = 0xDEADBEEF;
	p.session_expiry = 0xFFFFFFFF;
	p.will_delay = 99;
	p.max_packet_size = 268435460;
	p.sub_id = 268435455;
	p.content_type = S("text/plain");
	p.response_topic = S("reply/here");
	p.correlation_data = S("\x01\x02\x03");
	p.assigned_client_id = S("auto-1");
	p.auth_method = S("SCRAM-SHA-1");
	p.auth_data = S("\xff\x00\xfe");
	p.response_info = S("resp");
	p.server_reference = S("other:1883");
	p.reason_string = S("because \xe2\x82\xac");
	return p;
}

/* ---- round trips ------------------------------------------------------ */

START_TEST(rt_connect)
{
	uint8_t level = (uint8_t)(3 + _i % 3);
	int variant = _i / 3;
	mqbi_packet p = {.type = MQBI_CONNECT};
	mqbi_connect *c = &p.u.connect;
	c->clean_start = variant & 1;
	c->keepalive = 60;
	c->client_id = variant == 2 ? S("") : S("client-\xc3\xa9");
	if (variant >= 1) {
		c->will_flag = true;
		c->will_qos = (uint8_t)(variant == 1 ? 2 : 1);
		c->will_retain = variant == 1;
		c->will_topic = S("last/will");
		c->will_payload = S("gone");
		c->has_username = true;
		c->username = S("user");
		c->has_password = true;
		c->password = S("\x00\x01secret");
		c->password.len = 8;
	}
	if (variant == 3 && level == 5) {
		/* v5 allows a password without a user name. */
		c->has_username = false;
		c->username = S("");
	}
	c->props = full_props(MQBI_CONNECT);
	c->will_props = full_props(MQBI_WILL_PROPS);
	round_trip(&p, level, true);
}
END_TEST

START_TEST(rt_connack)
{
	uint8_t level = (uint8_t)(3 + _i % 3);
	mqbi_packet p = {.type = MQBI_CONNACK};
	p.u.connack.session_present = _i >= 3;
	p.u.connack.reason = _i >= 3 ? 0 : (level == 5 ? 0x86 : 4);
	p.u.connack.props = full_props(MQBI_CONNACK);
	size_t n = round_trip(&p, level, false);
	if (level < 5)
		ck_assert_uint_eq(n, 4);
}
END_TEST

START_TEST(rt_publish)
{
	uint8_t level = (uint8_t)(3 + _i % 3);
	int v = _i / 3;
	static const uint32_t ids[] = {1, 127, 128, 268435455};
	mqbi_packet p = {.type = MQBI_PUBLISH};
	mqbi_publish *m = &p.u.publish;
	m->qos = (uint8_t)(v % 3);
	m->dup = m->qos && (v & 1);
	m->retain = v >= 3;
	m->topic = S("sensors/\xe2\x82\xac/temp");
	m->packet_id = m->qos ? (uint16_t)(0xFFFF - v) : 0;
	m->payload = v == 4 ? S("") : S("21.5 degrees");
	m->props = full_props(MQBI_PUBLISH);
	bool from_client = true;
	if (v >= 3) {
		/* Server to client: several subscription identifiers. */
		m->props.sub_ids = ids;
		m->props.sub_id_count = 4;
		from_client = false;
	} else {
		m->props.present &= ~BIT(MQBI_PROP_SUB_ID);
	}
	if (v == 5 && level == 5) {
		/* Topic alias with an empty topic. */
		m->topic = S("");
	}
	round_trip(&p, level, from_client);
}
END_TEST

START_TEST(rt_acks)
{
	uint8_t level = (uint8_t)(3 + _i % 3);
	int v = _i / 3;
	static const mqbi_ptype types[] = {MQBI_PUBACK, MQBI_PUBREC, MQBI_PUBREL, MQBI_PUBCOMP};
	for (size_t t = 0; t < 4; t++) {
		mqbi_packet p = {.type = types[t]};
		p.u.ack.packet_id = (uint16_t)(1 + v * 1000);
		bool rel = types[t] >= MQBI_PUBREL;
		if (v == 0) {
			/* Success, no properties: the 2-byte form even in v5. */
			ck_assert_uint_eq(round_trip(&p, level, true), 4);
			continue;
		}
		p.u.ack.reason = rel ? 0x92 : 0x97;
		if (v == 2)
			p.u.ack.props = full_props(types[t]);
		size_t n = round_trip(&p, level, true);
		if (level < 5)
			ck_assert_uint_eq(n, 4);
		else if (v == 1)
			ck_assert_uint_eq(n, 5);
	}
}
END_TEST

static const uint8_t sub_list5[] = {0, 3,   'a', '/', '+', 0x01, 0,   1,   '#', 0x2E, 0,
                                    9, '$', 's', 'h', 'a', 'r',  'e', '/', 'g', '/',  0x02};
static const uint8_t sub_list3[] = {0, 3, 'a', '/', '+', 0x01, 0, 1, '#', 0x02, 0, 1, 'x', 0x00};
static const uint8_t unsub_list[] = {0, 3, 'a', '/', '+', 0, 1, '#'};

START_TEST(rt_subscribe)
{
	uint8_t level = (uint8_t)(3 + _i % 3);
	static const uint32_t one = 42;
	mqbi_packet p = {.type = MQBI_SUBSCRIBE};
	mqbi_subscribe *s = &p.u.subscribe;
	s->packet_id = 7;
	if (level == 5) {
		s->list.ptr = sub_list5;
		s->list.len = sizeof(sub_list5);
	} else {
		s->list.ptr = sub_list3;
		s->list.len = sizeof(sub_list3);
	}
	s->count = 3;
	s->props = full_props(MQBI_SUBSCRIBE);
	if (_i >= 3) {
		s->props.sub_ids = &one;
		s->props.sub_id_count = 1;
	}
	round_trip(&p, level, true);

	p.type = MQBI_UNSUBSCRIBE;
	s->list.ptr = unsub_list;
	s->list.len = sizeof(unsub_list);
	s->count = 2;
	s->props = full_props(MQBI_UNSUBSCRIBE);
	round_trip(&p, level, true);
}
END_TEST

START_TEST(rt_suback)
{
	uint8_t level = (uint8_t)(3 + _i % 3);
	mqbi_packet p = {.type = MQBI_SUBACK};
	p.u.suback.packet_id = 0xFFFF;
	p.u.suback.reasons = level == 5 ? S("\x00\x01\x02\x80\x87\xa2") : S("\x00\x01\x02\x80");
	p.u.suback.reasons.len = level == 5 ? 6 : 4;
	p.u.suback.props = full_props(MQBI_SUBACK);
	round_trip(&p, level, false);

	p.type = MQBI_UNSUBACK;
	p.u.suback.reasons = S("\x00\x11\x87");
	p.u.suback.reasons.len = 3;
	p.u.suback.props = full_props(MQBI_UNSUBACK);
	size_t n = round_trip(&p, level, false);
	if (level < 5)
		ck_assert_uint_eq(n, 4);
}
END_TEST

START_TEST(rt_simple)
{
	uint8_t level = (uint8_t)(3 + _i % 3);
	mqbi_packet p = {.type = MQBI_PINGREQ};
	ck_assert_uint_eq(round_trip(&p, level, true), 2);
	p.type = MQBI_PINGRESP;
	ck_assert_uint_eq(round_trip(&p, level, false), 2);

	p.type = MQBI_DISCONNECT;
	ck_assert_uint_eq(round_trip(&p, level, true), 2);
	p.u.reason.reason = 0x04;
	ck_assert_uint_eq(round_trip(&p, level, true), level == 5 ? 3 : 2);
	p.u.reason.props = full_props(MQBI_DISCONNECT);
	round_trip(&p, level, true);
	/* Server->client: no Session Expiry. */
	p.u.reason.reason = 0x8B;
	p.u.reason.props.present &= ~BIT(MQBI_PROP_SESSION_EXPIRY);
	round_trip(&p, level, false);

	if (level == 5) {
		p.type = MQBI_AUTH;
		memset(&p.u.reason, 0, sizeof(p.u.reason));
		ck_assert_uint_eq(round_trip(&p, level, true), 2);
		p.u.reason.reason = 0x18;
		ck_assert_uint_eq(round_trip(&p, level, true), 4);
		p.u.reason.props = full_props(MQBI_AUTH);
		round_trip(&p, level, false);
	} else {
		p.type = MQBI_AUTH;
		ck_assert_uint_eq(mqbi_encoded_size(&p, level), 0);
	}
}
END_TEST

/* ---- malformed and edge cases, data driven ---------------------------- */

typedef struct mcase {
	const char *name;
	uint8_t b0;
	const char *body;
	uint8_t level;
	bool from_client;
	uint8_t reason; /* 0 = must decode OK */
} mcase;

#define MQTT4 "00 04 4d 51 54 54 04"
#define MQTT5 "00 04 4d 51 54 54 05"
#define ISDP  "00 06 4d 51 49 73 64 70 03"

static const mcase mcases[] = {
        /* CONNECT */
        {"connect v4 ok", 0x10, MQTT4 " 02 00 3c 00 01 63", 4, true, 0},
        {"connect v3 ok", 0x10, ISDP " 02 00 3c 00 01 63", 4, true, 0},
        {"connect v5 ok", 0x10, MQTT5 " 02 00 3c 00 00 01 63", 0, true, 0},
        {"connect 3.1 long client id ok", 0x10,
         ISDP " 02 00 3c 00 20 61 61 61 61 61 61 61 61 61 61 61 61 61 61 61 61 61 61 61 61 61 61 "
              "61 61 61 61 61 61 61 61 61 61",
         0, true, 0},
        {"connect empty client id ok", 0x10, MQTT4 " 02 00 3c 00 00", 4, true, 0},
        {"connect fixed flags", 0x11, MQTT4 " 02 00 3c 00 01 63", 4, true, 0x81},
        {"connect bad protocol name", 0x10, "00 04 4d 51 54 58 04 02 00 3c 00 01 63", 4, true,
         0x81},
        {"connect lower-case name", 0x10, "00 04 6d 71 74 74 04 02 00 3c 00 01 63", 4, true, 0x81},
        {"connect level 6", 0x10, "00 04 4d 51 54 54 06 02 00 3c 00 01 63", 4, true, 0x84},
        {"connect level 2", 0x10, "00 06 4d 51 49 73 64 70 02 02 00 3c 00 01 63", 4, true, 0x84},
        {"connect MQTT level 3", 0x10, "00 04 4d 51 54 54 03 02 00 3c 00 01 63", 4, true, 0x84},
        {"connect MQIsdp level 4", 0x10, "00 06 4d 51 49 73 64 70 04 02 00 3c 00 01 63", 4, true,
         0x84},
        {"connect reserved flag", 0x10, MQTT4 " 03 00 3c 00 01 63", 4, true, 0x81},
        {"connect will qos no will", 0x10, MQTT4 " 0a 00 3c 00 01 63", 4, true, 0x81},
        {"connect will retain no will", 0x10, MQTT4 " 22 00 3c 00 01 63", 4, true, 0x81},
        {"connect will qos 3", 0x10, MQTT4 " 1e 00 3c 00 01 63 00 01 74 00 00", 4, true, 0x81},
        {"connect password no user v4", 0x10, MQTT4 " 42 00 3c 00 01 63 00 01 70", 4, true, 0x81},
        {"connect password no user v3", 0x10, ISDP " 42 00 3c 00 01 63 00 01 70", 4, true, 0x81},
        {"connect password no user v5 ok", 0x10, MQTT5 " 42 00 3c 00 00 01 63 00 01 70", 4, true,
         0},
        {"connect client id bad utf8", 0x10, MQTT4 " 02 00 3c 00 01 ff", 4, true, 0x81},
        {"connect client id nul", 0x10, MQTT4 " 02 00 3c 00 02 61 00", 4, true, 0x81},
        {"connect client id surrogate", 0x10, MQTT4 " 02 00 3c 00 03 ed a0 80", 4, true, 0x81},
        {"connect trailing byte", 0x10, MQTT4 " 02 00 3c 00 01 63 00", 4, true, 0x81},
        {"connect short client id", 0x10, MQTT4 " 02 00 3c 00 02 63", 4, true, 0x81},
        {"connect short header", 0x10, MQTT4 " 02 00", 4, true, 0x81},
        {"connect missing username", 0x10, MQTT4 " 82 00 3c 00 01 63", 4, true, 0x81},
        {"connect username bad utf8", 0x10, MQTT4 " 82 00 3c 00 01 63 00 02 c0 80", 4, true, 0x81},
        {"connect will ok", 0x10, MQTT4 " 06 00 3c 00 01 63 00 03 61 2f 62 00 00", 4, true, 0},
        {"connect will topic wildcard +", 0x10, MQTT4 " 06 00 3c 00 01 63 00 03 61 2f 2b 00 00", 4,
         true, 0x90},
        {"connect will topic wildcard #", 0x10, MQTT4 " 06 00 3c 00 01 63 00 03 61 2f 23 00 00", 4,
         true, 0x90},
        {"connect will topic empty", 0x10, MQTT4 " 06 00 3c 00 01 63 00 00 00 00", 4, true, 0x90},
        {"connect will topic bad utf8", 0x10, MQTT4 " 06 00 3c 00 01 63 00 01 80 00 00", 4, true,
         0x81},
        {"connect will payload missing", 0x10, MQTT4 " 06 00 3c 00 01 63 00 01 74", 4, true, 0x81},
        {"connect v5 unknown property", 0x10, MQTT5 " 02 00 3c 02 05 00 00 01 63", 4, true, 0x81},
        {"connect v5 two-byte property id", 0x10, MQTT5 " 02 00 3c 03 80 01 00 00 01 63", 4, true,
         0x81},
        {"connect v5 topic alias not allowed", 0x10, MQTT5 " 02 00 3c 03 23 00 01 00 01 63", 4,
         true, 0x81},
        {"connect v5 sub id not allowed", 0x10, MQTT5 " 02 00 3c 02 0b 01 00 01 63", 4, true, 0x81},
        {"connect v5 will delay not allowed", 0x10, MQTT5 " 02 00 3c 05 18 00 00 00 01 00 01 63", 4,
         true, 0x81},
        {"connect v5 duplicate session expiry", 0x10,
         MQTT5 " 02 00 3c 0a 11 00 00 00 01 11 00 00 00 02 00 01 63", 4, true, 0x82},
        {"connect v5 receive max 0", 0x10, MQTT5 " 02 00 3c 03 21 00 00 00 01 63", 4, true, 0x82},
        {"connect v5 max packet size 0", 0x10, MQTT5 " 02 00 3c 05 27 00 00 00 00 00 01 63", 4,
         true, 0x82},
        {"connect v5 request problem info 2", 0x10, MQTT5 " 02 00 3c 02 17 02 00 01 63", 4, true,
         0x82},
        {"connect v5 request response info 2", 0x10, MQTT5 " 02 00 3c 02 19 02 00 01 63", 4, true,
         0x82},
        {"connect v5 auth data without method", 0x10, MQTT5 " 02 00 3c 04 16 00 01 78 00 01 63", 4,
         true, 0x82},
        {"connect v5 auth method and data ok", 0x10,
         MQTT5 " 02 00 3c 08 15 00 01 6d 16 00 01 78 00 01 63", 4, true, 0},
        {"connect v5 user prop ok", 0x10, MQTT5 " 02 00 3c 07 26 00 01 6b 00 01 76 00 01 63", 4,
         true, 0},
        {"connect v5 user prop repeated ok", 0x10,
         MQTT5 " 02 00 3c 0e 26 00 01 6b 00 01 76 26 00 01 6b 00 01 76 00 01 63", 4, true, 0},
        {"connect v5 user key bad utf8", 0x10, MQTT5 " 02 00 3c 07 26 00 01 ff 00 01 76 00 01 63",
         4, true, 0x81},
        {"connect v5 user value bad utf8", 0x10, MQTT5 " 02 00 3c 07 26 00 01 6b 00 01 00 00 01 63",
         4, true, 0x81},
        {"connect v5 user value truncated", 0x10, MQTT5 " 02 00 3c 06 26 00 01 6b 00 01 00 01 63",
         4, true, 0x81},
        {"connect v5 property past block", 0x10, MQTT5 " 02 00 3c 02 11 00 00 00 00 01 63", 4, true,
         0x81},
        {"connect v5 property block past packet", 0x10, MQTT5 " 02 00 3c 7f 00 01 63", 4, true,
         0x81},
        {"connect v5 property length overlong", 0x10, MQTT5 " 02 00 3c 80 00 00 01 63", 4, true,
         0x81},
        {"connect v5 auth method bad utf8", 0x10, MQTT5 " 02 00 3c 04 15 00 01 c1 00 01 63", 4,
         true, 0x81},
        {"connect v5 will props ok", 0x10,
         MQTT5 " 06 00 3c 00 00 01 63 07 18 00 00 00 05 01 01 00 01 74 00 02 68 69", 4, true, 0},
        {"connect v5 will payload format invalid", 0x10,
         MQTT5 " 06 00 3c 00 00 01 63 02 01 01 00 01 74 00 02 ff ff", 4, true, 0x99},
        {"connect v5 will payload format 2", 0x10,
         MQTT5 " 06 00 3c 00 00 01 63 02 01 02 00 01 74 00 00", 4, true, 0x82},
        {"connect v5 will session expiry not allowed", 0x10,
         MQTT5 " 06 00 3c 00 00 01 63 05 11 00 00 00 01 00 01 74 00 00", 4, true, 0x81},
        {"connect v5 will content type bad utf8", 0x10,
         MQTT5 " 06 00 3c 00 00 01 63 04 03 00 01 80 00 01 74 00 00", 4, true, 0x81},
        /* CONNACK */
        {"connack v4 ok", 0x20, "01 00", 4, false, 0},
        {"connack v4 refused ok", 0x20, "00 05", 4, false, 0},
        {"connack fixed flags", 0x21, "00 00", 4, false, 0x81},
        {"connack reserved ack flags", 0x20, "02 00", 4, false, 0x81},
        {"connack v4 return code 6", 0x20, "00 06", 4, false, 0x82},
        {"connack session present with error", 0x20, "01 01", 4, false, 0x82},
        {"connack v4 too long", 0x20, "00 00 00", 4, false, 0x81},
        {"connack too short", 0x20, "00", 4, false, 0x81},
        {"connack v5 ok", 0x20, "00 00 00", 5, false, 0},
        {"connack v5 missing props", 0x20, "00 00", 5, false, 0x81},
        {"connack v5 reason 0x01", 0x20, "00 01 00", 5, false, 0x82},
        {"connack v5 max qos 2", 0x20, "00 00 02 24 02", 5, false, 0x82},
        {"connack v5 max qos 1 ok", 0x20, "00 00 02 24 01", 5, false, 0},
        {"connack v5 retain available 2", 0x20, "00 00 02 25 02", 5, false, 0x82},
        {"connack v5 wildcard available 2", 0x20, "00 00 02 28 02", 5, false, 0x82},
        {"connack v5 sub id available 2", 0x20, "00 00 02 29 02", 5, false, 0x82},
        {"connack v5 shared available 2", 0x20, "00 00 02 2a 02", 5, false, 0x82},
        {"connack v5 receive max 0", 0x20, "00 00 03 21 00 00", 5, false, 0x82},
        {"connack v5 duplicate max qos", 0x20, "00 00 04 24 01 24 00", 5, false, 0x82},
        {"connack v5 request problem not allowed", 0x20, "00 00 02 17 01", 5, false, 0x81},
        {"connack v5 auth data without method", 0x20, "00 00 04 16 00 01 78", 5, false, 0x82},
        {"connack v5 trailing", 0x20, "00 00 00 00", 5, false, 0x81},
        /* PUBLISH */
        {"publish qos0 ok", 0x30, "00 03 61 2f 62 68 69", 4, true, 0},
        {"publish qos3", 0x36, "00 03 61 2f 62 00 01", 4, true, 0x81},
        {"publish dup on qos0", 0x38, "00 03 61 2f 62", 4, true, 0x81},
        {"publish dup on qos1 ok", 0x3a, "00 03 61 2f 62 00 01", 4, true, 0},
        {"publish topic +", 0x30, "00 03 61 2f 2b", 4, true, 0x90},
        {"publish topic #", 0x31, "00 01 23", 4, true, 0x90},
        {"publish long topic with + past fast path", 0x30,
         "00 0c 61 61 61 61 61 61 61 61 61 61 61 2b", 4, true, 0x90},
        {"publish topic bad utf8", 0x30, "00 02 61 ff", 4, true, 0x81},
        {"publish topic nul", 0x30, "00 02 61 00", 4, true, 0x81},
        {"publish topic overlong", 0x30, "00 02 c0 af", 4, true, 0x81},
        {"publish packet id 0", 0x32, "00 01 61 00 00", 4, true, 0x82},
        {"publish qos2 packet id 0", 0x34, "00 01 61 00 00 78", 4, true, 0x82},
        {"publish missing packet id", 0x32, "00 01 61 00", 4, true, 0x81},
        {"publish empty topic v4", 0x30, "00 00 68 69", 4, true, 0x82},
        {"publish topic past end", 0x30, "00 05 61", 4, true, 0x81},
        {"publish v5 ok", 0x30, "00 01 61 00 68 69", 5, true, 0},
        {"publish v5 missing props", 0x30, "00 01 61", 5, true, 0x81},
        {"publish v5 empty topic no alias", 0x30, "00 00 00", 5, true, 0x82},
        {"publish v5 empty topic with alias ok", 0x30, "00 00 03 23 00 01", 5, true, 0},
        {"publish v5 alias 0", 0x30, "00 01 61 03 23 00 00", 5, true, 0x94},
        {"publish v5 alias above max", 0x30, "00 01 61 03 23 00 0b", 5, true, 0x94},
        {"publish v5 alias at max ok", 0x30, "00 01 61 03 23 00 0a", 5, true, 0},
        {"publish v5 duplicate alias", 0x30, "00 01 61 06 23 00 01 23 00 01", 5, true, 0x82},
        {"publish v5 sub id from client", 0x30, "00 01 61 02 0b 01", 5, true, 0x82},
        {"publish v5 sub id from server ok", 0x30, "00 01 61 02 0b 01", 5, false, 0},
        {"publish v5 two sub ids from server ok", 0x30, "00 01 61 05 0b 01 0b ff 7f", 5, false, 0},
        {"publish v5 sub id 0", 0x30, "00 01 61 02 0b 00", 5, false, 0x82},
        {"publish v5 sub id 5-byte", 0x30, "00 01 61 06 0b ff ff ff ff 7f", 5, false, 0x81},
        {"publish v5 sub id overlong", 0x30, "00 01 61 03 0b 81 00", 5, false, 0x81},
        {"publish v5 payload format 2", 0x30, "00 01 61 02 01 02", 5, true, 0x82},
        {"publish v5 payload format 1 bad payload", 0x30, "00 01 61 02 01 01 68 ff", 5, true, 0x99},
        {"publish v5 payload format 1 ok", 0x30, "00 01 61 02 01 01 c3 a9", 5, true, 0},
        {"publish v5 payload format 0 binary ok", 0x30, "00 01 61 02 01 00 ff 00", 5, true, 0},
        {"publish v5 duplicate expiry", 0x30, "00 01 61 0a 02 00 00 00 01 02 00 00 00 01", 5, true,
         0x82},
        {"publish v5 session expiry not allowed", 0x30, "00 01 61 05 11 00 00 00 01", 5, true,
         0x81},
        {"publish v5 reason string not allowed", 0x30, "00 01 61 03 1f 00 00", 5, true, 0x81},
        {"publish v5 response topic wildcard", 0x30, "00 01 61 06 08 00 03 72 2f 23", 5, true,
         0x90},
        {"publish v5 response topic ok", 0x30, "00 01 61 06 08 00 03 72 2f 31", 5, true, 0},
        {"connect v5 will response topic wildcard", 0x10,
         MQTT5 " 06 00 3c 00 00 01 63 04 08 00 01 2b 00 01 74 00 00", 4, true, 0x90},
        {"publish v5 response topic bad utf8", 0x30, "00 01 61 04 08 00 01 ff", 5, true, 0x81},
        {"publish v5 content type with nul", 0x30, "00 01 61 04 03 00 01 00", 5, true, 0x81},
        {"publish v5 correlation binary ok", 0x30, "00 01 61 04 09 00 01 ff", 5, true, 0},
        {"publish v5 truncated u32", 0x30, "00 01 61 03 02 00 00", 5, true, 0x81},
        {"publish v5 truncated u16", 0x30, "00 01 61 02 23 00", 5, true, 0x81},
        {"publish v5 truncated byte", 0x30, "00 01 61 01 01", 5, true, 0x81},
        /* PUBACK / PUBREC / PUBREL / PUBCOMP */
        {"puback v4 ok", 0x40, "00 01", 4, true, 0},
        {"puback fixed flags", 0x42, "00 01", 4, true, 0x81},
        {"pubrec fixed flags", 0x51, "00 01", 4, true, 0x81},
        {"pubrel flags 0", 0x60, "00 01", 4, true, 0x81},
        {"pubrel flags dup v4", 0x6a, "00 01", 4, true, 0x81},
        {"pubrel flags dup v3", 0x6a, "00 01", 3, true, 0x81},
        {"pubcomp fixed flags", 0x78, "00 01", 4, true, 0x81},
        {"puback packet id 0", 0x40, "00 00", 4, true, 0x82},
        {"pubrel packet id 0", 0x62, "00 00", 5, true, 0x82},
        {"puback v4 too long", 0x40, "00 01 00", 4, true, 0x81},
        {"puback too short", 0x40, "00", 4, true, 0x81},
        {"puback empty", 0x40, "", 5, true, 0x81},
        {"puback v5 reason only ok", 0x40, "00 01 10", 5, true, 0},
        {"puback v5 reason 0x92", 0x40, "00 01 92", 5, true, 0x82},
        {"pubrec v5 reason 0x99 ok", 0x50, "00 01 99 00", 5, true, 0},
        {"pubrel v5 reason 0x10", 0x62, "00 01 10", 5, true, 0x82},
        {"pubrel v5 reason 0x92 ok", 0x62, "00 01 92", 5, true, 0},
        {"pubcomp v5 reason 0x80", 0x70, "00 01 80", 5, true, 0x82},
        {"puback v5 reason string ok", 0x40, "00 01 80 04 1f 00 01 78", 5, true, 0},
        {"puback v5 topic alias not allowed", 0x40, "00 01 80 03 23 00 01", 5, true, 0x81},
        {"puback v5 duplicate reason string", 0x40, "00 01 80 06 1f 00 00 1f 00 00", 5, true, 0x82},
        {"puback v5 props past end", 0x40, "00 01 80 05 1f 00 00", 5, true, 0x81},
        {"puback v5 trailing", 0x40, "00 01 00 00 ff", 5, true, 0x81},
        /* SUBSCRIBE */
        {"subscribe v4 ok", 0x82, "00 01 00 03 61 2f 23 02", 4, true, 0},
        {"subscribe v3 dup", 0x8a, "00 01 00 03 61 2f 23 02", 3, true, 0x81},
        {"subscribe flags 0", 0x80, "00 01 00 01 61 00", 4, true, 0x81},
        {"subscribe flags 3", 0x83, "00 01 00 01 61 00", 4, true, 0x81},
        {"subscribe packet id 0", 0x82, "00 00 00 01 61 00", 4, true, 0x82},
        {"subscribe no filters v4", 0x82, "00 01", 4, true, 0x81},
        {"subscribe no filters v5", 0x82, "00 01 00", 5, true, 0x82},
        {"subscribe v4 options no local", 0x82, "00 01 00 01 61 04", 4, true, 0x81},
        {"subscribe v4 options high bits", 0x82, "00 01 00 01 61 c0", 4, true, 0x81},
        {"subscribe v4 qos 3", 0x82, "00 01 00 01 61 03", 4, true, 0x81},
        {"subscribe missing options", 0x82, "00 01 00 01 61", 4, true, 0x81},
        {"subscribe filter bad utf8", 0x82, "00 01 00 01 ff 00", 4, true, 0x81},
        {"subscribe filter past end", 0x82, "00 01 00 04 61 00", 4, true, 0x81},
        {"subscribe second filter truncated", 0x82, "00 01 00 01 61 00 00", 4, true, 0x81},
        {"subscribe v5 all options ok", 0x82, "00 01 00 00 01 61 2e", 5, true, 0},
        {"subscribe v5 reserved bits", 0x82, "00 01 00 00 01 61 40", 5, true, 0x81},
        {"subscribe v5 reserved bit 7", 0x82, "00 01 00 00 01 61 80", 5, true, 0x81},
        {"subscribe v5 qos 3", 0x82, "00 01 00 00 01 61 03", 5, true, 0x82},
        {"subscribe v5 retain handling 3", 0x82, "00 01 00 00 01 61 30", 5, true, 0x82},
        {"subscribe v5 no local on shared", 0x82, "00 01 00 00 09 24 73 68 61 72 65 2f 67 2f 04", 5,
         true, 0x82},
        {"subscribe v5 shared ok", 0x82, "00 01 00 00 09 24 73 68 61 72 65 2f 67 2f 01", 5, true,
         0},
        {"subscribe v5 sub id ok", 0x82, "00 01 02 0b 05 00 01 61 00", 5, true, 0},
        {"subscribe v5 sub id 0", 0x82, "00 01 02 0b 00 00 01 61 00", 5, true, 0x82},
        {"subscribe v5 two sub ids", 0x82, "00 01 04 0b 01 0b 02 00 01 61 00", 5, true, 0x82},
        {"subscribe v5 topic alias not allowed", 0x82, "00 01 03 23 00 01 00 01 61 00", 5, true,
         0x81},
        {"subscribe v5 missing props", 0x82, "00 01", 5, true, 0x81},
        /* UNSUBSCRIBE */
        {"unsubscribe v4 ok", 0xa2, "00 01 00 01 61", 4, true, 0},
        {"unsubscribe flags 0", 0xa0, "00 01 00 01 61", 4, true, 0x81},
        {"unsubscribe packet id 0", 0xa2, "00 00 00 01 61", 4, true, 0x82},
        {"unsubscribe no filters v4", 0xa2, "00 01", 4, true, 0x81},
        {"unsubscribe no filters v5", 0xa2, "00 01 00", 5, true, 0x82},
        {"unsubscribe filter bad utf8", 0xa2, "00 01 00 02 ed b0", 4, true, 0x81},
        {"unsubscribe filter past end", 0xa2, "00 01 00 02 61", 4, true, 0x81},
        {"unsubscribe v5 sub id not allowed", 0xa2, "00 01 02 0b 01 00 01 61", 5, true, 0x81},
        {"unsubscribe v5 user prop ok", 0xa2, "00 01 05 26 00 00 00 00 00 01 61", 5, true, 0},
        /* SUBACK / UNSUBACK */
        {"suback v4 ok", 0x90, "00 01 00 01 02 80", 4, false, 0},
        {"suback flags", 0x92, "00 01 00", 4, false, 0x81},
        {"suback packet id 0", 0x90, "00 00 00", 4, false, 0x82},
        {"suback v4 empty", 0x90, "00 01", 4, false, 0x81},
        {"suback v4 reason 0x87", 0x90, "00 01 87", 4, false, 0x82},
        {"suback v4 reason 3", 0x90, "00 01 03", 4, false, 0x82},
        {"suback v5 ok", 0x90, "00 01 00 00 87 a2 9e", 5, false, 0},
        {"suback v5 reason 0x11", 0x90, "00 01 00 11", 5, false, 0x82},
        {"suback v5 empty", 0x90, "00 01 00", 5, false, 0x82},
        {"unsuback v4 ok", 0xb0, "00 01", 4, false, 0},
        {"unsuback v4 payload", 0xb0, "00 01 00", 4, false, 0x81},
        {"unsuback v5 ok", 0xb0, "00 01 00 00 11 8f", 5, false, 0},
        {"unsuback v5 reason 0x02", 0xb0, "00 01 00 02", 5, false, 0x82},
        {"unsuback v5 session expiry not allowed", 0xb0, "00 01 05 11 00 00 00 00 00", 5, false,
         0x81},
        /* PINGREQ / PINGRESP */
        {"pingreq ok", 0xc0, "", 4, true, 0},
        {"pingreq body", 0xc0, "00", 5, true, 0x81},
        {"pingreq flags", 0xc1, "", 4, true, 0x81},
        {"pingresp body", 0xd0, "00", 4, false, 0x81},
        /* DISCONNECT */
        {"disconnect v4 ok", 0xe0, "", 4, true, 0},
        {"disconnect v4 body", 0xe0, "00", 4, true, 0x81},
        {"disconnect flags", 0xe2, "", 5, true, 0x81},
        {"disconnect v5 empty ok", 0xe0, "", 5, true, 0},
        {"disconnect v5 reason only ok", 0xe0, "04", 5, true, 0},
        {"disconnect v5 reason 0x05", 0xe0, "05", 5, true, 0x82},
        {"disconnect v5 reason 0x18", 0xe0, "18", 5, true, 0x82},
        {"disconnect v5 session expiry from client ok", 0xe0, "00 05 11 00 00 00 01", 5, true, 0},
        {"disconnect v5 session expiry from server", 0xe0, "00 05 11 00 00 00 01", 5, false, 0x82},
        {"disconnect v5 server reference ok", 0xe0, "9c 04 1c 00 01 78", 5, false, 0},
        {"disconnect v5 auth method not allowed", 0xe0, "00 04 15 00 01 78", 5, true, 0x81},
        {"disconnect v5 trailing", 0xe0, "00 00 00", 5, true, 0x81},
        /* AUTH */
        {"auth v4", 0xf0, "", 4, true, 0x81},
        {"auth v5 empty ok", 0xf0, "", 5, true, 0},
        {"auth v5 ok", 0xf0, "18 04 15 00 01 6d", 5, true, 0},
        {"auth flags", 0xf1, "", 5, true, 0x81},
        {"auth v5 reason 0x01", 0xf0, "01 00", 5, true, 0x82},
        {"auth v5 data without method", 0xf0, "18 04 16 00 01 78", 5, true, 0x82},
        {"auth v5 session expiry not allowed", 0xf0, "18 05 11 00 00 00 00", 5, true, 0x81},
        /* direction */
        {"connect from server", 0x10, MQTT4 " 02 00 3c 00 01 63", 4, false, 0x82},
        {"connack from client", 0x20, "00 00", 4, true, 0x82},
        {"subscribe from server", 0x82, "00 01 00 01 61 00", 4, false, 0x82},
        {"suback from client", 0x90, "00 01 00", 4, true, 0x82},
        {"unsubscribe from server", 0xa2, "00 01 00 01 61", 4, false, 0x82},
        {"unsuback from client", 0xb0, "00 01", 4, true, 0x82},
        {"pingreq from server", 0xc0, "", 4, false, 0x82},
        {"pingresp from client", 0xd0, "", 4, true, 0x82},
        {"pingresp ok", 0xd0, "", 4, false, 0},
        {"publish from server ok", 0x30, "00 01 61", 4, false, 0},
        {"puback from server ok", 0x40, "00 01", 4, false, 0},
        {"disconnect from server ok", 0xe0, "", 4, false, 0},
        {"auth from server ok", 0xf0, "", 5, false, 0},
        /* reserved type 0 */
        {"type 0", 0x00, "", 4, true, 0x81},
};

START_TEST(malformed_table)
{
	const mcase *c = &mcases[_i];
	uint8_t buf[1200];
	size_t n = mkpkt(c->b0, c->body, buf);
	mqbi_packet pkt;
	size_t used = 99;
	uint8_t reason = 0xEE;
	mqbi_dec_status st = dec(buf, n, c->level, c->from_client, &pkt, &used, &reason);
	if (c->reason == 0) {
		ck_assert_msg(st == MQBI_DEC_OK, "%s: status %d reason 0x%02x", c->name, st,
		              reason);
		ck_assert_uint_eq(used, n);
	} else {
		ck_assert_msg(st == MQBI_DEC_MALFORMED && reason == c->reason,
		              "%s: status %d reason 0x%02x, want 0x%02x", c->name, st, reason,
		              c->reason);
		/* The size is known once the packet is whole, except when it was
		 * refused from its first bytes. */
		ck_assert(used == 0 || used == n);
	}
	/* Whatever the outcome, the packet and every prefix of it decode without
	 * reading past their end; a prefix is NEED_MORE or the same early refusal. */
	void *map;
	size_t ml;
	for (size_t k = 0; k <= n; k++) {
		uint8_t *g = guard_buf(k, &map, &ml);
		memcpy(g, buf, k);
		uint8_t r2;
		mqbi_dec_status s2 = dec(g, k, c->level, c->from_client, &pkt, &used, &r2);
		if (k == n)
			ck_assert(s2 == st && r2 == reason);
		else
			ck_assert(s2 == MQBI_DEC_NEED_MORE ||
			          (s2 == MQBI_DEC_MALFORMED && st == s2));
		munmap(map, ml);
	}
}
END_TEST

START_TEST(fixed_header)
{
	uint8_t tf, reason;
	uint32_t rl;
	size_t hl, used;
	mqbi_packet pkt;
	const uint8_t ok[] = {0x30, 0xC1, 0x02};
	ck_assert_int_eq(mqbi_decode_fixed_header(ok, 3, &tf, &rl, &hl), MQBI_DEC_OK);
	ck_assert_uint_eq(tf, 0x30);
	ck_assert_uint_eq(rl, 321);
	ck_assert_uint_eq(hl, 3);
	for (size_t k = 0; k < 3; k++)
		ck_assert_int_eq(mqbi_decode_fixed_header(ok, k, &tf, &rl, &hl),
		                 MQBI_DEC_NEED_MORE);
	const uint8_t five[] = {0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F};
	ck_assert_int_eq(mqbi_decode_fixed_header(five, 6, &tf, &rl, &hl), MQBI_DEC_MALFORMED);
	ck_assert_int_eq(dec(five, 6, 4, true, &pkt, &used, &reason), MQBI_DEC_MALFORMED);
	ck_assert_uint_eq(reason, 0x81);
	const uint8_t overlong[] = {0x30, 0x80, 0x00};
	ck_assert_int_eq(mqbi_decode_fixed_header(overlong, 3, &tf, &rl, &hl), MQBI_DEC_MALFORMED);
	ck_assert_int_eq(dec(overlong, 3, 4, true, &pkt, &used, &reason), MQBI_DEC_MALFORMED);
	ck_assert_uint_eq(reason, 0x81);
	/* A bad first byte is refused before the rest arrives. */
	const uint8_t q3[] = {0x36};
	ck_assert_int_eq(dec(q3, 1, 4, true, &pkt, &used, &reason), MQBI_DEC_MALFORMED);
	ck_assert_int_eq(dec(q3, 0, 4, true, &pkt, &used, &reason), MQBI_DEC_NEED_MORE);
}
END_TEST

START_TEST(max_packet_size)
{
	uint8_t buf[64];
	size_t n = mkpkt(0x30, "00 03 61 2f 62 30 31 32 33 34", buf); /* 12 bytes */
	ck_assert_uint_eq(n, 12);
	mqbi_packet pkt;
	size_t used;
	uint8_t reason;
	mqbi_dec_ctx c = mkctx(4, true);
	c.max_packet_size = 12;
	ck_assert_int_eq(mqbi_decode(buf, n, &c, &pkt, &used, &reason), MQBI_DEC_OK);
	c.max_packet_size = 11;
	ck_assert_int_eq(mqbi_decode(buf, n, &c, &pkt, &used, &reason), MQBI_DEC_MALFORMED);
	ck_assert_uint_eq(reason, MQBI_RC_PACKET_TOO_LARGE);
	/* Known from the fixed header alone: no need to buffer it. */
	ck_assert_int_eq(mqbi_decode(buf, 2, &c, &pkt, &used, &reason), MQBI_DEC_MALFORMED);
	ck_assert_uint_eq(reason, MQBI_RC_PACKET_TOO_LARGE);
	/* A huge announced length with a small limit. */
	const uint8_t huge[] = {0x30, 0xFF, 0xFF, 0xFF, 0x7F};
	c.max_packet_size = 1024;
	ck_assert_int_eq(mqbi_decode(huge, 5, &c, &pkt, &used, &reason), MQBI_DEC_MALFORMED);
	ck_assert_uint_eq(reason, MQBI_RC_PACKET_TOO_LARGE);
	c.max_packet_size = 0;
	ck_assert_int_eq(mqbi_decode(huge, 5, &c, &pkt, &used, &reason), MQBI_DEC_NEED_MORE);
}
END_TEST

START_TEST(payload_format_tolerated)
{
	uint8_t buf[64];
	/* QoS 1, Payload Format 1, payload not UTF-8, then a PINGREQ. */
	size_t n = mkpkt(0x32, "00 01 74 00 07 02 01 01 ff fe", buf);
	buf[n] = 0xC0;
	buf[n + 1] = 0;
	mqbi_packet pkt;
	size_t used;
	uint8_t reason;
	ck_assert_int_eq(dec(buf, n + 2, 5, true, &pkt, &used, &reason), MQBI_DEC_MALFORMED);
	ck_assert_uint_eq(reason, MQBI_RC_PAYLOAD_FORMAT_INVALID);
	/* Everything needed to answer PUBACK 0x99 and carry on. */
	ck_assert_uint_eq(used, n);
	ck_assert_int_eq(pkt.type, MQBI_PUBLISH);
	ck_assert_uint_eq(pkt.u.publish.packet_id, 7);
	ck_assert(bytes_eq(pkt.u.publish.topic, S("t")));
	ck_assert_uint_eq(pkt.u.publish.payload.len, 2);
	ck_assert_int_eq(dec(buf + used, 2, 5, true, &pkt, &used, &reason), MQBI_DEC_OK);
	ck_assert_int_eq(pkt.type, MQBI_PINGREQ);
}
END_TEST

START_TEST(connect_fields)
{
	uint8_t buf[256];
	size_t n =
	        mkpkt(0x10,
	              MQTT5 " ee 01 2c 05 11 00 00 0e 10 00 02 69 64 05 18 00 00 00 00 00 01 74 00 "
	                    "02 77 70 00 01 75 00 03 01 02 03",
	              buf);
	mqbi_packet pkt;
	size_t used;
	uint8_t reason;
	ck_assert_int_eq(dec(buf, n, 0, true, &pkt, &used, &reason), MQBI_DEC_OK);
	const mqbi_connect *c = &pkt.u.connect;
	ck_assert_int_eq(pkt.type, MQBI_CONNECT);
	ck_assert_uint_eq(c->level, 5);
	ck_assert(c->clean_start && c->will_flag && c->will_retain);
	ck_assert_uint_eq(c->will_qos, 1);
	ck_assert(c->has_username && c->has_password);
	ck_assert_uint_eq(c->keepalive, 300);
	ck_assert(mqbi_props_has(&c->props, MQBI_PROP_SESSION_EXPIRY));
	ck_assert_uint_eq(c->props.session_expiry, 3600);
	ck_assert(bytes_eq(c->client_id, S("id")));
	ck_assert(mqbi_props_has(&c->will_props, MQBI_PROP_WILL_DELAY));
	ck_assert_uint_eq(c->will_props.will_delay, 0);
	ck_assert(bytes_eq(c->will_topic, S("t")));
	ck_assert(bytes_eq(c->will_payload, S("wp")));
	ck_assert(bytes_eq(c->username, S("u")));
	ck_assert_uint_eq(c->password.len, 3);
	/* Unsupported level: 0x84 with the level reported. */
	n = mkpkt(0x10, "00 04 4d 51 54 54 07 02 00 3c 00 01 63", buf);
	ck_assert_int_eq(dec(buf, n, 0, true, &pkt, &used, &reason), MQBI_DEC_MALFORMED);
	ck_assert_uint_eq(reason, MQBI_RC_UNSUPPORTED_VERSION);
	ck_assert_int_eq(pkt.type, MQBI_CONNECT);
	ck_assert_uint_eq(pkt.u.connect.level, 7);
}
END_TEST

START_TEST(user_property_iteration)
{
	uint8_t buf[256];
	/* PUBLISH v5 with: user(a=1), content type, user(b=""), user(""=c). */
	size_t n = mkpkt(0x30,
	                 "00 01 74 17 26 00 01 61 00 01 31 03 00 01 78 26 00 01 62 00 00 26 00 00 "
	                 "00 01 63 70",
	                 buf);
	mqbi_packet pkt;
	size_t used;
	uint8_t reason;
	ck_assert_int_eq(dec(buf, n, 5, true, &pkt, &used, &reason), MQBI_DEC_OK);
	const mqbi_props *p = &pkt.u.publish.props;
	ck_assert_uint_eq(p->user_count, 3);
	ck_assert(mqbi_props_has(p, MQBI_PROP_USER_PROPERTY));
	ck_assert(bytes_eq(p->content_type, S("x")));
	ck_assert(bytes_eq(pkt.u.publish.payload, S("p")));
	static const char *want[][2] = {{"a", "1"}, {"b", ""}, {"", "c"}};
	uint32_t pos = 0;
	mqbi_bytes k, v;
	for (int i = 0; i < 3; i++) {
		ck_assert(mqbi_props_next_user(p->raw, p->raw_len, &pos, &k, &v));
		ck_assert(bytes_eq(k, S(want[i][0])));
		ck_assert(bytes_eq(v, S(want[i][1])));
	}
	ck_assert(!mqbi_props_next_user(p->raw, p->raw_len, &pos, &k, &v));
	/* Empty and absent blocks. */
	pos = 0;
	ck_assert(!mqbi_props_next_user(NULL, 0, &pos, &k, &v));
	/* Re-encoding copies the user properties in order and drops nothing else. */
	uint8_t out[256];
	size_t m = mqbi_encode(out, sizeof(out), &pkt, 5);
	ck_assert_uint_eq(m, n);
	mqbi_packet again;
	ck_assert_int_eq(dec(out, m, 5, true, &again, &used, &reason), MQBI_DEC_OK);
	ck_assert_uint_eq(again.u.publish.props.user_count, 3);
	pos = 0;
	for (int i = 0; i < 3; i++) {
		ck_assert(mqbi_props_next_user(again.u.publish.props.raw,
		                               again.u.publish.props.raw_len, &pos, &k, &v));
		ck_assert(bytes_eq(k, S(want[i][0])));
		ck_assert(bytes_eq(v, S(want[i][1])));
	}
}
END_TEST

START_TEST(sublist_iteration)
{
	uint8_t buf[256];
	size_t n = mkpkt(0x82, "12 34 00 00 03 61 2f 2b 01 00 01 23 2e 00 00 00", buf);
	mqbi_packet pkt;
	size_t used;
	uint8_t reason;
	/* An empty filter parses (its validity is the broker's call). */
	ck_assert_int_eq(dec(buf, n, 5, true, &pkt, &used, &reason), MQBI_DEC_OK);
	const mqbi_subscribe *s = &pkt.u.subscribe;
	ck_assert_uint_eq(s->packet_id, 0x1234);
	ck_assert_uint_eq(s->count, 3);
	uint32_t pos = 0;
	mqbi_bytes f;
	mqbi_subopts o;
	ck_assert(mqbi_sublist_next(s, true, &pos, &f, &o));
	ck_assert(bytes_eq(f, S("a/+")));
	ck_assert_uint_eq(o.qos, 1);
	ck_assert(!o.no_local && !o.retain_as_published);
	ck_assert_uint_eq(o.retain_handling, 0);
	ck_assert(mqbi_sublist_next(s, true, &pos, &f, &o));
	ck_assert(bytes_eq(f, S("#")));
	ck_assert_uint_eq(o.qos, 2);
	ck_assert(o.no_local && o.retain_as_published);
	ck_assert_uint_eq(o.retain_handling, 2);
	ck_assert(mqbi_sublist_next(s, true, &pos, &f, &o));
	ck_assert_uint_eq(f.len, 0);
	ck_assert(!mqbi_sublist_next(s, true, &pos, &f, &o));

	n = mkpkt(0xa2, "00 09 00 01 61 00 02 62 63", buf);
	ck_assert_int_eq(dec(buf, n, 4, true, &pkt, &used, &reason), MQBI_DEC_OK);
	ck_assert_uint_eq(pkt.u.subscribe.count, 2);
	pos = 0;
	ck_assert(mqbi_sublist_next(&pkt.u.subscribe, false, &pos, &f, NULL));
	ck_assert(bytes_eq(f, S("a")));
	ck_assert(mqbi_sublist_next(&pkt.u.subscribe, false, &pos, &f, NULL));
	ck_assert(bytes_eq(f, S("bc")));
	ck_assert(!mqbi_sublist_next(&pkt.u.subscribe, false, &pos, &f, NULL));
}
END_TEST

START_TEST(encode_specifics)
{
	uint8_t buf[128];
	mqbi_packet p = {.type = MQBI_PUBACK};
	p.u.ack.packet_id = 0x0102;
	ck_assert_uint_eq(mqbi_encode(buf, sizeof(buf), &p, 5), 4);
	ck_assert_mem_eq(buf, "\x40\x02\x01\x02", 4);
	p.type = MQBI_PUBREL;
	ck_assert_uint_eq(mqbi_encode(buf, sizeof(buf), &p, 4), 4);
	ck_assert_mem_eq(buf, "\x62\x02\x01\x02", 4);

	/* v5 SUBSCRIBE options are reduced to QoS for 3.1.1. */
	static const uint8_t list[] = {0, 1, 'a', 0x2E};
	p.type = MQBI_SUBSCRIBE;
	p.u.subscribe = (mqbi_subscribe){.packet_id = 1, .list = {list, 4}, .count = 1};
	ck_assert_uint_eq(mqbi_encode(buf, sizeof(buf), &p, 4), 8);
	ck_assert_mem_eq(buf, "\x82\x06\x00\x01\x00\x01\x61\x02", 8);

	/* Properties in ascending id order, then user properties, then sub ids. */
	static const uint32_t ids[] = {5, 300};
	static const uint8_t ub[] = {0x26, 0, 1, 'k', 0, 0};
	p.type = MQBI_PUBLISH;
	p.u.publish = (mqbi_publish){.topic = S("t"), .payload = S("")};
	p.u.publish.props.present =
	        BIT(MQBI_PROP_TOPIC_ALIAS) | BIT(MQBI_PROP_MESSAGE_EXPIRY) | BIT(MQBI_PROP_SUB_ID);
	p.u.publish.props.topic_alias = 1;
	p.u.publish.props.message_expiry = 2;
	p.u.publish.props.user_raw = ub;
	p.u.publish.props.user_raw_len = sizeof(ub);
	p.u.publish.props.sub_ids = ids;
	p.u.publish.props.sub_id_count = 2;
	static const uint8_t want[] = {0x30, 0x17, 0,    1, 't',  0x13, 0x02, 0, 0,
	                               0,    2,    0x23, 0, 1,    0x26, 0,    1, 'k',
	                               0,    0,    0x0b, 5, 0x0b, 0xAC, 0x02};
	ck_assert_uint_eq(mqbi_encoded_size(&p, 5), sizeof(want));
	ck_assert_uint_eq(mqbi_encode(buf, sizeof(buf), &p, 5), sizeof(want));
	ck_assert_mem_eq(buf, want, sizeof(want));
	ck_assert_uint_eq(mqbi_props_size(&p.u.publish.props), 0x13);

	/* Fields that cannot be encoded. */
	p.u.publish.props.sub_ids = NULL;
	p.u.publish.props.sub_id = 0;
	ck_assert_uint_eq(mqbi_encoded_size(&p, 5), 0);
	ck_assert_uint_eq(mqbi_encode(buf, sizeof(buf), &p, 5), 0);
	p.u.publish.props.sub_id = 268435456u;
	ck_assert_uint_eq(mqbi_props_size(&p.u.publish.props), UINT32_MAX);
	p.u.publish.props = (mqbi_props){0};
	p.u.publish.qos = 3;
	ck_assert_uint_eq(mqbi_encoded_size(&p, 4), 0);
	p.u.publish.qos = 0;
	p.u.publish.topic.len = 65536;
	ck_assert_uint_eq(mqbi_encoded_size(&p, 4), 0);
	p.u.publish.topic = S("t");
	p.u.publish.payload.len = 268435455u;
	ck_assert_uint_eq(mqbi_encoded_size(&p, 4), 0);
	p.type = (mqbi_ptype)0;
	ck_assert_uint_eq(mqbi_encoded_size(&p, 4), 0);

	/* Default protocol names. */
	p.type = MQBI_CONNECT;
	p.u.connect = (mqbi_connect){.client_id = S("c")};
	size_t n = mqbi_encode(buf, sizeof(buf), &p, 3);
	ck_assert_uint_eq(n, 2 + 8 + 4 + 3);
	ck_assert_mem_eq(buf + 2, "\x00\x06MQIsdp\x03", 9);
	ck_assert_uint_eq(mqbi_encode(buf, sizeof(buf), &p, 6), 0);
}
END_TEST

START_TEST(names)
{
	ck_assert_str_eq(mqbi_ptype_name(MQBI_PUBLISH), "PUBLISH");
	ck_assert_str_eq(mqbi_ptype_name(MQBI_AUTH), "AUTH");
	ck_assert_str_eq(mqbi_ptype_name(0), "RESERVED");
	ck_assert_str_eq(mqbi_ptype_name(16), "UNKNOWN");
	ck_assert_str_eq(mqbi_ptype_name(-1), "UNKNOWN");
	ck_assert_str_eq(mqbi_reason_name(0x81), "Malformed Packet");
	ck_assert_str_eq(mqbi_reason_name(0x00), "Success");
	ck_assert_str_eq(mqbi_reason_name(0xA2), "Wildcard Subscriptions not supported");
	ck_assert_str_eq(mqbi_reason_name(0x03), "Unknown reason code");
	for (int i = 0; i < 256; i++)
		ck_assert_ptr_nonnull(mqbi_reason_name((uint8_t)i));
}
END_TEST

static Suite *codec_suite(void)
{
	Suite *s = suite_create("codec");
	TCase *tc = tcase_create("primitives");
	tcase_add_test(tc, varint_boundaries);
	tcase_add_test(tc, varint_malformed);
	tcase_add_test(tc, utf8_valid_forms);
	tcase_add_test(tc, utf8_invalid_forms);
	tcase_add_test(tc, utf8_no_overread);
	tcase_add_test(tc, fixed_header);
	tcase_add_test(tc, names);
	suite_add_tcase(s, tc);

	tc = tcase_create("round_trip");
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, rt_connect, 0, 12);
	tcase_add_loop_test(tc, rt_connack, 0, 6);
	tcase_add_loop_test(tc, rt_publish, 0, 18);
	tcase_add_loop_test(tc, rt_acks, 0, 9);
	tcase_add_loop_test(tc, rt_subscribe, 0, 6);
	tcase_add_loop_test(tc, rt_suback, 0, 3);
	tcase_add_loop_test(tc, rt_simple, 0, 3);
	tcase_add_test(tc, encode_specifics);
	suite_add_tcase(s, tc);

	tc = tcase_create("decode");
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, malformed_table, 0, (int)(sizeof(mcases) / sizeof(mcases[0])));
	tcase_add_test(tc, max_packet_size);
	tcase_add_test(tc, connect_fields);
	tcase_add_test(tc, payload_format_tolerated);
	tcase_add_test(tc, user_property_iteration);
	tcase_add_test(tc, sublist_iteration);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(codec_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
