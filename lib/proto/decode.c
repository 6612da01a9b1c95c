/*
 * MQTT packet decoder: one pass over a whole packet, no allocation.
 *
 * Reason-code choices (MQTT 5 section 4.13 distinguishes a Malformed Packet,
 * which cannot be parsed, from a Protocol Error, which parses but carries
 * data the protocol forbids):
 *  - 0x81 for anything that does not parse: bad lengths, bad varints, bad
 *    UTF-8, reserved bits, QoS 3 (fixed header and subscription options:
 *    5.0 3.8.3.1 says Protocol Error for the latter, but 3.1.1 and the
 *    conformance suite say malformed), trailing bytes, unknown or misplaced
 *    properties (section 2.2.2.2 calls those malformed).
 *  - 0x82 where the spec text says "It is a Protocol Error": a packet type
 *    travelling the wrong way (a client sending CONNACK...), packet id 0,
 *    duplicated properties, out-of-range property values, empty topic without
 *    alias, empty SUBSCRIBE/UNSUBSCRIBE (v5; 0x81 before), Retain Handling 3,
 *    No Local on a shared subscription, reason codes not allowed for the
 *    packet type.
 *  - 0x90 Topic Name invalid for '+' or '#' in a PUBLISH topic, a Will topic
 *    or a Response Topic (and for an empty Will topic): the name parses, but
 *    it is not a valid Topic Name [MQTT-3.3.2-2]; v5 has a specific code for
 *    that (EMQX and HiveMQ answer the same way).
 *  - 0x84 for a CONNECT level other than 3/4/5, or one that does not go with
 *    the protocol name ("MQIsdp" 3, "MQTT" 4/5); an unknown name is 0x81.
 *  - 0x94 for a topic alias of 0 or above ctx->topic_alias_max, 0x95 for a
 *    packet above ctx->max_packet_size, 0x99 for a Payload Format Indicator 1
 *    PUBLISH or Will payload that is not UTF-8.
 * For levels 3/4 the code only tells the caller why it closes the connection.
 */
#include "codec_internal.h"

#define RC_MAL   MQBI_RC_MALFORMED
#define RC_PROTO MQBI_RC_PROTOCOL_ERROR

static inline bool read_str(const uint8_t **pp, const uint8_t *end, mqbi_bytes *out)
{
	return read_bytes(pp, end, out) && mqbi_utf8_scan(out->ptr, out->len, false) == UTF8_OK;
}

static uint8_t read_props(const uint8_t **pp, const uint8_t *end, int kind, bool multi_sub_id,
                          mqbi_props *out)
{
	const uint8_t *p = *pp;
	uint32_t plen;
	int n = mqbi_varint_decode(p, (size_t)(end - p), &plen);
	if (n <= 0)
		return RC_MAL;
	p += n;
	if ((size_t)(end - p) < plen)
		return RC_MAL;
	uint8_t rc = mqbi_props_decode(p, p + plen, kind, multi_sub_id, out);
	if (rc)
		return rc;
	*pp = p + plen;
	return 0;
}

static bool rc_in(const uint8_t *set, size_t n, uint8_t rc)
{
	for (size_t i = 0; i < n; i++)
		if (set[i] == rc)
			return true;
	return false;
}

#define RC_IN(set, rc) rc_in(set, sizeof(set), rc)

/* Reason codes each packet type may carry (MQTT 5 sections 3.x.2.1). */
static const uint8_t rc_connack[] = {0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86,
                                     0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
                                     0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F};
static const uint8_t rc_puback[] = {0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99};
static const uint8_t rc_pubrel[] = {0x00, 0x92};
static const uint8_t rc_suback5[] = {0x00, 0x01, 0x02, 0x80, 0x83, 0x87,
                                     0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2};
static const uint8_t rc_suback3[] = {0x00, 0x01, 0x02, 0x80};
static const uint8_t rc_unsuback[] = {0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91};
static const uint8_t rc_disconnect[] = {0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D,
                                        0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99,
                                        0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2};
static const uint8_t rc_auth[] = {0x00, 0x18, 0x19};

enum { FROM_CLIENT = 1, FROM_SERVER = 2, BOTH = 3 };

/* Direction each packet type may travel in (MQTT 5 table 2-1). */
static const uint8_t dir_ok[16] = {
        [MQBI_CONNECT] = FROM_CLIENT,
        [MQBI_CONNACK] = FROM_SERVER,
        [MQBI_PUBLISH] = BOTH,
        [MQBI_PUBACK] = BOTH,
        [MQBI_PUBREC] = BOTH,
        [MQBI_PUBREL] = BOTH,
        [MQBI_PUBCOMP] = BOTH,
        [MQBI_SUBSCRIBE] = FROM_CLIENT,
        [MQBI_SUBACK] = FROM_SERVER,
        [MQBI_UNSUBSCRIBE] = FROM_CLIENT,
        [MQBI_UNSUBACK] = FROM_SERVER,
        [MQBI_PINGREQ] = FROM_CLIENT,
        [MQBI_PINGRESP] = FROM_SERVER,
        [MQBI_DISCONNECT] = BOTH,
        [MQBI_AUTH] = BOTH,
};

/* Fixed-header flag rules (MQTT 5 section 2.1.3), checked before the body
 * arrives so that garbage is refused early. */
static uint8_t check_header(unsigned type, unsigned flags, uint8_t level)
{
	switch (type) {
	case MQBI_PUBLISH: {
		unsigned qos = (flags >> 1) & 3;
		if (qos == 3) /* [MQTT-3.3.1-4] */
			return RC_MAL;
		if (qos == 0 && (flags & 8)) /* [MQTT-3.3.1-2] */
			return RC_MAL;
		return 0;
	}
	case MQBI_PUBREL:
	case MQBI_SUBSCRIBE:
	case MQBI_UNSUBSCRIBE:
		/* Also for 3.1, which let these carry DUP: no client relies on it. */
		return flags == 2 ? 0 : RC_MAL;
	case MQBI_AUTH:
		if (level < MQBI_V5) /* type 15 is reserved before v5 */
			return RC_MAL;
		return flags ? RC_MAL : 0;
	case 0:
		return RC_MAL;
	default:
		return flags ? RC_MAL : 0;
	}
}

mqbi_dec_status mqbi_decode_fixed_header(const uint8_t *buf, size_t len, uint8_t *type_flags,
                                         uint32_t *remaining, size_t *header_len)
{
	if (len < 2)
		return MQBI_DEC_NEED_MORE;
	int n = mqbi_varint_decode(buf + 1, len - 1, remaining);
	if (n < 0)
		return MQBI_DEC_MALFORMED;
	if (n == 0)
		return MQBI_DEC_NEED_MORE;
	*type_flags = buf[0];
	*header_len = 1 + (size_t)n;
	return MQBI_DEC_OK;
}

static uint8_t dec_connect(const uint8_t *p, const uint8_t *end, mqbi_connect *c)
{
	zero_struct(c, sizeof(*c));
	if (!read_bytes(&p, end, &c->protocol_name) || end - p < 4)
		return RC_MAL;
	uint8_t level = p[0], flags = p[1];
	c->keepalive = rd16(p + 2);
	p += 4;
	bool mqtt = c->protocol_name.len == 4 && !memcmp(c->protocol_name.ptr, "MQTT", 4);
	bool isdp = c->protocol_name.len == 6 && !memcmp(c->protocol_name.ptr, "MQIsdp", 6);
	if (!mqtt && !isdp)
		return RC_MAL;
	/* Set even on 0x84 so the caller can answer in a form the client reads.
	 * A known name with a level it does not go with ("MQTT" 3, "MQIsdp" 4)
	 * is an unsupported level too [MQTT-3.1.2-2]: the client gets CONNACK
	 * 0x01 / 0x84 rather than a bare close. */
	c->level = level;
	if (level < MQBI_V31 || level > MQBI_V5 || mqtt != (level >= MQBI_V311))
		return MQBI_RC_UNSUPPORTED_VERSION;
	bool v5 = level == MQBI_V5;

	if (flags & 1) /* [MQTT-3.1.2-3] */
		return RC_MAL;
	c->clean_start = flags & 2;
	c->will_flag = flags & 4;
	c->will_qos = (flags >> 3) & 3;
	c->will_retain = flags & 0x20;
	c->has_password = flags & 0x40;
	c->has_username = flags & 0x80;
	if (c->will_qos == 3)
		return RC_MAL;
	if (!c->will_flag && (c->will_qos || c->will_retain)) /* [MQTT-3.1.2-11,13,15] */
		return RC_MAL;
	if (!v5 && c->has_password && !c->has_username) /* [MQTT-3.1.2-22] (3.1.1) */
		return RC_MAL;

	uint8_t rc;
	if (v5 && (rc = read_props(&p, end, MQBI_CONNECT, false, &c->props)))
		return rc;
	/* Length limits on the client id are the broker's business. */
	if (!read_str(&p, end, &c->client_id))
		return RC_MAL;
	if (c->will_flag) {
		if (v5 && (rc = read_props(&p, end, MQBI_WILL_PROPS, false, &c->will_props)))
			return rc;
		if (!read_bytes(&p, end, &c->will_topic))
			return RC_MAL;
		int s = mqbi_utf8_scan(c->will_topic.ptr, c->will_topic.len, true);
		if (s == UTF8_BAD)
			return RC_MAL;
		if (s == UTF8_WILDCARD || c->will_topic.len == 0) /* [MQTT-4.7.3-1] */
			return MQBI_RC_TOPIC_NAME_INVALID;
		if (!read_bytes(&p, end, &c->will_payload))
			return RC_MAL;
		if (v5 && mqbi_props_has(&c->will_props, MQBI_PROP_PAYLOAD_FORMAT) &&
		    c->will_props.payload_format == 1 &&
		    !mqbi_utf8_valid(c->will_payload.ptr, c->will_payload.len))
			return MQBI_RC_PAYLOAD_FORMAT_INVALID;
	}
	if (c->has_username && !read_str(&p, end, &c->username))
		return RC_MAL;
	if (c->has_password && !read_bytes(&p, end, &c->password))
		return RC_MAL;
	return p == end ? 0 : RC_MAL;
}

static uint8_t dec_connack(const uint8_t *p, const uint8_t *end, uint8_t level, mqbi_connack *c)
{
	zero_struct(c, sizeof(*c));
	if (end - p < 2)
		return RC_MAL;
	if (p[0] & 0xFE) /* [MQTT-3.2.2-1] reserved bits */
		return RC_MAL;
	c->session_present = p[0] & 1;
	c->reason = p[1];
	p += 2;
	if (level >= MQBI_V5) {
		if (!RC_IN(rc_connack, c->reason))
			return RC_PROTO;
		uint8_t rc = read_props(&p, end, MQBI_CONNACK, false, &c->props);
		if (rc)
			return rc;
	} else if (c->reason > 5) { /* 3.1.1 return codes 6..255 are reserved */
		return RC_PROTO;
	}
	if (c->session_present && c->reason) /* [MQTT-3.2.2-6] / [MQTT-3.2.2-4] */
		return RC_PROTO;
	return p == end ? 0 : RC_MAL;
}

static uint8_t dec_publish(const uint8_t *p, const uint8_t *end, unsigned flags,
                           const mqbi_dec_ctx *ctx, mqbi_publish *m)
{
	zero_struct(m, sizeof(*m));
	m->qos = (flags >> 1) & 3;
	m->dup = flags & 8;
	m->retain = flags & 1;
	if (!read_bytes(&p, end, &m->topic))
		return RC_MAL;
	if (m->qos) {
		if (end - p < 2)
			return RC_MAL;
		m->packet_id = rd16(p);
		p += 2;
		if (!m->packet_id) /* [MQTT-2.2.1-3] */
			return RC_PROTO;
	}
	bool alias = false;
	if (ctx->level >= MQBI_V5) {
		uint8_t rc = read_props(&p, end, MQBI_PUBLISH, !ctx->from_client, &m->props);
		if (rc)
			return rc;
		/* [MQTT-3.3.4-6] clients never send Subscription Identifiers. */
		if (ctx->from_client && mqbi_props_has(&m->props, MQBI_PROP_SUB_ID))
			return RC_PROTO;
		alias = mqbi_props_has(&m->props, MQBI_PROP_TOPIC_ALIAS);
		if (alias &&
		    (m->props.topic_alias == 0 || m->props.topic_alias > ctx->topic_alias_max))
			return MQBI_RC_TOPIC_ALIAS_INVALID;
	}
	if (m->topic.len) {
		int s = mqbi_utf8_scan(m->topic.ptr, m->topic.len, true);
		if (s == UTF8_BAD)
			return RC_MAL;
		if (s == UTF8_WILDCARD)
			return MQBI_RC_TOPIC_NAME_INVALID;
	} else if (!alias) { /* section 3.3.2.1 */
		return RC_PROTO;
	}
	m->payload.ptr = p;
	m->payload.len = (uint32_t)(end - p);
	if (m->props.payload_format == 1 && !mqbi_utf8_valid(m->payload.ptr, m->payload.len))
		return MQBI_RC_PAYLOAD_FORMAT_INVALID;
	return 0;
}

static uint8_t dec_ack(const uint8_t *p, const uint8_t *end, unsigned type, uint8_t level,
                       mqbi_ack *a)
{
	zero_struct(a, sizeof(*a));
	size_t rl = (size_t)(end - p);
	if (rl < 2)
		return RC_MAL;
	a->packet_id = rd16(p);
	p += 2;
	if (!a->packet_id)
		return RC_PROTO;
	if (level < MQBI_V5)
		return rl == 2 ? 0 : RC_MAL;
	/* v5: reason and properties may be omitted (section 3.4.2.1). */
	if (p == end)
		return 0;
	a->reason = *p++;
	bool ok = type == MQBI_PUBACK || type == MQBI_PUBREC ? RC_IN(rc_puback, a->reason)
	                                                     : RC_IN(rc_pubrel, a->reason);
	if (!ok)
		return RC_PROTO;
	if (p == end)
		return 0;
	uint8_t rc = read_props(&p, end, (int)type, false, &a->props);
	if (rc)
		return rc;
	return p == end ? 0 : RC_MAL;
}

static uint8_t check_subopts(uint8_t o, mqbi_bytes filter, uint8_t level)
{
	if (level < MQBI_V5) /* [MQTT-3.8.3-4] (3.1.1): reserved bits, QoS 3 */
		return (o & 0xFC) || (o & 3) == 3 ? RC_MAL : 0;
	/* Reserved bits are malformed [MQTT-3.8.3-5]; QoS 3 is a Protocol Error
	 * (5.0 section 3.8.3.1: "It is a Protocol Error if the Maximum QoS field
	 * has the value 3"). */
	if (o & 0xC0)
		return RC_MAL;
	if ((o & 3) == 3)
		return RC_PROTO;
	/* Section 3.8.3.1: Retain Handling 3 is a Protocol Error. */
	if (((o >> 4) & 3) == 3)
		return RC_PROTO;
	/* [MQTT-3.8.3-4] No Local on a shared subscription. */
	if ((o & 4) && filter.len >= 7 && !memcmp(filter.ptr, "$share/", 7))
		return RC_PROTO;
	return 0;
}

/* SUBSCRIBE (with_options) and UNSUBSCRIBE. Topic-filter syntax is left to the
 * caller, which can refuse one filter (SUBACK 0x8F) without closing. */
static uint8_t dec_subscribe(const uint8_t *p, const uint8_t *end, bool with_options, uint8_t level,
                             mqbi_subscribe *s)
{
	zero_struct(s, sizeof(*s));
	if (end - p < 2)
		return RC_MAL;
	s->packet_id = rd16(p);
	p += 2;
	if (!s->packet_id)
		return RC_PROTO;
	if (level >= MQBI_V5) {
		uint8_t rc = read_props(&p, end, with_options ? MQBI_SUBSCRIBE : MQBI_UNSUBSCRIBE,
		                        false, &s->props);
		if (rc)
			return rc;
	}
	s->list.ptr = p;
	s->list.len = (uint32_t)(end - p);
	while (p < end) {
		mqbi_bytes f;
		if (!read_str(&p, end, &f))
			return RC_MAL;
		if (with_options) {
			if (p == end)
				return RC_MAL;
			uint8_t rc = check_subopts(*p++, f, level);
			if (rc)
				return rc;
		}
		s->count++;
	}
	/* [MQTT-3.8.3-2] / [MQTT-3.10.3-2]: at least one filter. */
	if (!s->count)
		return level >= MQBI_V5 ? RC_PROTO : RC_MAL;
	return 0;
}

static uint8_t dec_suback(const uint8_t *p, const uint8_t *end, unsigned type, uint8_t level,
                          mqbi_suback *s)
{
	zero_struct(s, sizeof(*s));
	if (end - p < 2)
		return RC_MAL;
	s->packet_id = rd16(p);
	p += 2;
	if (!s->packet_id)
		return RC_PROTO;
	bool v5 = level >= MQBI_V5;
	if (!v5 && type == MQBI_UNSUBACK) /* no payload before v5 */
		return p == end ? 0 : RC_MAL;
	if (v5) {
		uint8_t rc = read_props(&p, end, (int)type, false, &s->props);
		if (rc)
			return rc;
	}
	s->reasons.ptr = p;
	s->reasons.len = (uint32_t)(end - p);
	if (p == end)
		return v5 ? RC_PROTO : RC_MAL;
	for (; p < end; p++) {
		bool ok = type == MQBI_UNSUBACK ? RC_IN(rc_unsuback, *p)
		          : v5                  ? RC_IN(rc_suback5, *p)
		                                : RC_IN(rc_suback3, *p);
		if (!ok)
			return RC_PROTO;
	}
	return 0;
}

/* DISCONNECT and AUTH (v5 bodies may be empty or reason-only). */
static uint8_t dec_reason(const uint8_t *p, const uint8_t *end, unsigned type,
                          const mqbi_dec_ctx *ctx, mqbi_reason_packet *r)
{
	zero_struct(r, sizeof(*r));
	if (ctx->level < MQBI_V5)
		return p == end ? 0 : RC_MAL;
	if (p == end)
		return 0;
	r->reason = *p++;
	bool ok = type == MQBI_AUTH ? RC_IN(rc_auth, r->reason) : RC_IN(rc_disconnect, r->reason);
	if (!ok)
		return RC_PROTO;
	if (p == end)
		return 0;
	uint8_t rc = read_props(&p, end, (int)type, false, &r->props);
	if (rc)
		return rc;
	/* [MQTT-3.14.2-2] a server never sends Session Expiry in DISCONNECT. */
	if (type == MQBI_DISCONNECT && !ctx->from_client &&
	    mqbi_props_has(&r->props, MQBI_PROP_SESSION_EXPIRY))
		return RC_PROTO;
	return p == end ? 0 : RC_MAL;
}

mqbi_dec_status mqbi_decode(const uint8_t *buf, size_t len, const mqbi_dec_ctx *ctx,
                            mqbi_packet *pkt, size_t *consumed, uint8_t *reason)
{
	*consumed = 0;
	*reason = 0;
	if (len == 0)
		return MQBI_DEC_NEED_MORE;
	unsigned type = buf[0] >> 4, flags = buf[0] & 15;
	pkt->type = (mqbi_ptype)type;
	pkt->flags = (uint8_t)flags;
	uint8_t rc = check_header(type, flags, type == MQBI_CONNECT ? 0 : ctx->level);
	if (rc) {
		*reason = rc;
		return MQBI_DEC_MALFORMED;
	}
	/* Packets that only travel the other way ([MQTT-3.x] "sent from
	 * Server to Client" etc.): a Protocol Error. */
	if (!(dir_ok[type] & (ctx->from_client ? FROM_CLIENT : FROM_SERVER))) {
		*reason = RC_PROTO;
		return MQBI_DEC_MALFORMED;
	}
	uint32_t rl;
	int n = mqbi_varint_decode(buf + 1, len - 1, &rl);
	if (n < 0) {
		*reason = RC_MAL;
		return MQBI_DEC_MALFORMED;
	}
	if (n == 0)
		return MQBI_DEC_NEED_MORE;
	size_t total = 1 + (size_t)n + rl;
	/* Refused before it is buffered whole: the caller must not grow for it. */
	if (ctx->max_packet_size && total > ctx->max_packet_size) {
		*reason = MQBI_RC_PACKET_TOO_LARGE;
		return MQBI_DEC_MALFORMED;
	}
	if (len < total)
		return MQBI_DEC_NEED_MORE;

	const uint8_t *p = buf + 1 + n, *end = p + rl;
	switch (type) {
	case MQBI_CONNECT:
		rc = dec_connect(p, end, &pkt->u.connect);
		break;
	case MQBI_CONNACK:
		rc = dec_connack(p, end, ctx->level, &pkt->u.connack);
		break;
	case MQBI_PUBLISH:
		rc = dec_publish(p, end, flags, ctx, &pkt->u.publish);
		break;
	case MQBI_PUBACK:
	case MQBI_PUBREC:
	case MQBI_PUBREL:
	case MQBI_PUBCOMP:
		rc = dec_ack(p, end, type, ctx->level, &pkt->u.ack);
		break;
	case MQBI_SUBSCRIBE:
	case MQBI_UNSUBSCRIBE:
		rc = dec_subscribe(p, end, type == MQBI_SUBSCRIBE, ctx->level, &pkt->u.subscribe);
		break;
	case MQBI_SUBACK:
	case MQBI_UNSUBACK:
		rc = dec_suback(p, end, type, ctx->level, &pkt->u.suback);
		break;
	case MQBI_PINGREQ:
	case MQBI_PINGRESP:
		rc = rl ? RC_MAL : 0;
		break;
	default: /* DISCONNECT, AUTH */
		rc = dec_reason(p, end, type, ctx, &pkt->u.reason);
		break;
	}
	/* The size is reported on errors too, so that a caller may skip a
	 * packet it chooses to tolerate (e.g. PUBACK 0x99 and go on). */
	*consumed = total;
	if (rc) {
		*reason = rc;
		return MQBI_DEC_MALFORMED;
	}
	return MQBI_DEC_OK;
}

bool mqbi_sublist_next(const mqbi_subscribe *s, bool with_options, uint32_t *pos,
                       mqbi_bytes *filter, mqbi_subopts *opts)
{
	uint32_t i = *pos, n = s->list.len;
	const uint8_t *l = s->list.ptr;
	if (!l || i >= n || n - i < 2)
		return false;
	uint32_t flen = rd16(l + i);
	i += 2;
	if (flen > n - i)
		return false;
	filter->ptr = l + i;
	filter->len = flen;
	i += flen;
	if (with_options) {
		if (i >= n)
			return false;
		uint8_t o = l[i++];
		if (opts) {
			opts->qos = o & 3;
			opts->no_local = o & 4;
			opts->retain_as_published = o & 8;
			opts->retain_handling = (o >> 4) & 3;
		}
	}
	*pos = i;
	return true;
}
