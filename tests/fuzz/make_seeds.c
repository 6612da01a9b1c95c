/*
 * Writes the seed corpus of fuzz_decode: valid packets of every type for
 * protocol levels 3, 4 and 5, built with the codec's encoder.
 *
 *   cc -Iinclude -Ilib lib/proto/[a-z]*.c tests/fuzz/make_seeds.c -o make_seeds
 *   ./make_seeds tests/fuzz/seeds/decode
 */
#include "proto/codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BIT(id) (1ull << (id))

static const char *dir;
static uint8_t stream[65536];
static size_t stream_len;

static mqbi_bytes S(const char *s)
{
	mqbi_bytes b = {(const uint8_t *)s, (uint32_t)strlen(s)};
	return b;
}

static void emit(const char *name, const mqbi_packet *p, uint8_t level)
{
	uint8_t buf[4096];
	size_t n = mqbi_encode(buf, sizeof(buf), p, level);
	if (!n) {
		fprintf(stderr, "cannot encode %s\n", name);
		exit(1);
	}
	char path[512];
	snprintf(path, sizeof(path), "%s/v%u_%s", dir, level, name);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(buf, 1, n, f) != n || fclose(f)) {
		perror(path);
		exit(1);
	}
	/* Level 5 packets are also concatenated into one stream seed (all of
	 * them valid from a client, so not the one with subscription ids). */
	if (level == 5 && !strstr(name, "subids") && stream_len + n <= sizeof(stream)) {
		memcpy(stream + stream_len, buf, n);
		stream_len += n;
	}
}

static const uint8_t user_block[] = {0x26, 0,    4,    'u', 'n', 'i', 't', 0, 2,
                                     0xc2, 0xb0, 0x26, 0,   1,   'k', 0,   0};

static mqbi_props props(uint64_t present)
{
	mqbi_props p = {0};
	p.present = present;
	p.user_raw = user_block;
	p.user_raw_len = sizeof(user_block);
	p.payload_format = 1;
	p.request_problem_info = 1;
	p.request_response_info = 1;
	p.max_qos = 1;
	p.retain_available = 1;
	p.wildcard_sub_available = 1;
	p.sub_id_available = 1;
	p.shared_sub_available = 1;
	p.server_keep_alive = 120;
	p.receive_max = 100;
	p.topic_alias_max = 10;
	p.topic_alias = 1;
	p.message_expiry = 3600;
	p.session_expiry = 86400;
	p.will_delay = 30;
	p.max_packet_size = 1 << 20;
	p.sub_id = 7;
	p.content_type = S("application/json");
	p.response_topic = S("resp/1");
	p.correlation_data = S("corr");
	p.assigned_client_id = S("auto-abc");
	p.auth_method = S("PLAIN");
	p.auth_data = S("\x01\x02");
	p.response_info = S("info");
	p.server_reference = S("srv:1883");
	p.reason_string = S("why");
	return p;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	dir = argv[1];
	static const uint32_t ids[] = {1, 200, 268435455};
	static const uint8_t sub5[] = {0, 3,   'a', '/', '+', 0x01, 0,   1,   '#', 0x2E, 0,
	                               9, '$', 's', 'h', 'a', 'r',  'e', '/', 'g', '/',  0x12};
	static const uint8_t sub3[] = {0, 3, 'a', '/', '+', 0x01, 0, 1, '#', 0x02};
	static const uint8_t unsub[] = {0, 3, 'a', '/', '+', 0, 1, '#'};

	for (uint8_t level = 3; level <= 5; level++) {
		bool v5 = level == 5;
		mqbi_packet p;

		p = (mqbi_packet){.type = MQBI_CONNECT};
		p.u.connect.clean_start = true;
		p.u.connect.keepalive = 60;
		p.u.connect.client_id = S("seed-client");
		emit("connect_min", &p, level);
		p.u.connect.will_flag = true;
		p.u.connect.will_qos = 1;
		p.u.connect.will_retain = true;
		p.u.connect.will_topic = S("will/topic");
		p.u.connect.will_payload = S("bye");
		p.u.connect.has_username = true;
		p.u.connect.username = S("user");
		p.u.connect.has_password = true;
		p.u.connect.password = S("pass");
		p.u.connect.props = props(BIT(0x11) | BIT(0x15) | BIT(0x16) | BIT(0x17) |
		                          BIT(0x19) | BIT(0x21) | BIT(0x22) | BIT(0x27));
		p.u.connect.will_props = props(BIT(0x01) | BIT(0x02) | BIT(0x03) | BIT(0x08) |
		                               BIT(0x09) | BIT(0x18));
		emit("connect_full", &p, level);

		p = (mqbi_packet){.type = MQBI_CONNACK};
		emit("connack", &p, level);
		p.u.connack.session_present = false;
		p.u.connack.reason = v5 ? 0x86 : 4;
		p.u.connack.props = props(BIT(0x11) | BIT(0x12) | BIT(0x13) | BIT(0x15) |
		                          BIT(0x16) | BIT(0x1A) | BIT(0x1C) | BIT(0x1F) |
		                          BIT(0x21) | BIT(0x22) | BIT(0x24) | BIT(0x25) |
		                          BIT(0x27) | BIT(0x28) | BIT(0x29) | BIT(0x2A));
		emit("connack_full", &p, level);

		for (uint8_t qos = 0; qos < 3; qos++) {
			char name[32];
			p = (mqbi_packet){.type = MQBI_PUBLISH};
			p.u.publish.qos = qos;
			p.u.publish.retain = qos == 1;
			p.u.publish.dup = qos == 2;
			p.u.publish.packet_id = qos ? 42 : 0;
			p.u.publish.topic = S("sensors/kitchen/temp");
			p.u.publish.payload = S("{\"t\":21.5}");
			snprintf(name, sizeof(name), "publish_qos%u", qos);
			emit(name, &p, level);
			p.u.publish.props = props(BIT(0x01) | BIT(0x02) | BIT(0x03) | BIT(0x08) |
			                          BIT(0x09) | BIT(0x23));
			snprintf(name, sizeof(name), "publish_qos%u_props", qos);
			emit(name, &p, level);
		}
		if (v5) {
			/* Server to client: alias only, several subscription ids. */
			p.u.publish.props.sub_ids = ids;
			p.u.publish.props.sub_id_count = 3;
			p.u.publish.topic = S("");
			emit("publish_alias_subids", &p, level);
		}

		static const mqbi_ptype acks[] = {MQBI_PUBACK, MQBI_PUBREC, MQBI_PUBREL,
		                                  MQBI_PUBCOMP};
		static const char *ack_names[] = {"puback", "pubrec", "pubrel", "pubcomp"};
		for (int i = 0; i < 4; i++) {
			char name[32];
			p = (mqbi_packet){.type = acks[i]};
			p.u.ack.packet_id = 42;
			emit(ack_names[i], &p, level);
			if (!v5)
				continue;
			p.u.ack.reason = i < 2 ? 0x10 : 0x92;
			snprintf(name, sizeof(name), "%s_reason", ack_names[i]);
			emit(name, &p, level);
			p.u.ack.props = props(BIT(0x1F));
			snprintf(name, sizeof(name), "%s_props", ack_names[i]);
			emit(name, &p, level);
		}

		p = (mqbi_packet){.type = MQBI_SUBSCRIBE};
		p.u.subscribe.packet_id = 7;
		p.u.subscribe.list.ptr = v5 ? sub5 : sub3;
		p.u.subscribe.list.len = v5 ? sizeof(sub5) : sizeof(sub3);
		p.u.subscribe.props = props(BIT(0x0B));
		emit("subscribe", &p, level);

		p = (mqbi_packet){.type = MQBI_UNSUBSCRIBE};
		p.u.subscribe.packet_id = 8;
		p.u.subscribe.list.ptr = unsub;
		p.u.subscribe.list.len = sizeof(unsub);
		p.u.subscribe.props = props(0);
		emit("unsubscribe", &p, level);

		p = (mqbi_packet){.type = MQBI_SUBACK};
		p.u.suback.packet_id = 7;
		p.u.suback.reasons = v5 ? S("\x01\x02\x87") : S("\x01\x02\x80");
		p.u.suback.props = props(BIT(0x1F));
		emit("suback", &p, level);

		p = (mqbi_packet){.type = MQBI_UNSUBACK};
		p.u.suback.packet_id = 8;
		p.u.suback.reasons = S("\x11\x80");
		p.u.suback.props = props(BIT(0x1F));
		emit("unsuback", &p, level);

		p = (mqbi_packet){.type = MQBI_PINGREQ};
		emit("pingreq", &p, level);
		p.type = MQBI_PINGRESP;
		emit("pingresp", &p, level);

		p = (mqbi_packet){.type = MQBI_DISCONNECT};
		emit("disconnect", &p, level);
		if (v5) {
			p.u.reason.reason = 0x04;
			emit("disconnect_reason", &p, level);
			p.u.reason.props = props(BIT(0x11) | BIT(0x1C) | BIT(0x1F));
			emit("disconnect_props", &p, level);

			p = (mqbi_packet){.type = MQBI_AUTH};
			emit("auth", &p, level);
			p.u.reason.reason = 0x18;
			p.u.reason.props = props(BIT(0x15) | BIT(0x16) | BIT(0x1F));
			emit("auth_props", &p, level);
		}
	}
	char path[512];
	snprintf(path, sizeof(path), "%s/v5_stream", dir);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(stream, 1, stream_len, f) != stream_len || fclose(f)) {
		perror(path);
		return 1;
	}
	return 0;
}
