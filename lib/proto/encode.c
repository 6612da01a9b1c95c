/* MQTT packet encoder: sizes are computed first, then written in one pass. */
#include "codec_internal.h"

#define RL_MAX 268435455u

typedef struct plan {
	uint64_t rl;
	uint32_t props;      /* property block size (v5) */
	uint32_t will_props; /* CONNECT will property block size (v5) */
	mqbi_bytes proto;    /* CONNECT protocol name */
	uint8_t b0;          /* first byte */
	bool with_reason;    /* v5 ack/DISCONNECT/AUTH: write the reason byte */
	bool with_props;     /* ... and the property block */
} plan;

static bool props_plan(const mqbi_props *p, uint32_t *size, uint64_t *rl)
{
	uint32_t s = mqbi_props_size_checked(p);
	if (s == UINT32_MAX)
		return false;
	*size = s;
	*rl += (uint64_t)mqbi_varint_size(s) + s;
	return true;
}

static bool str_ok(mqbi_bytes b)
{
	return b.len <= 65535 && (b.len == 0 || b.ptr);
}

static bool make_plan(const mqbi_packet *pkt, uint8_t level, plan *pl)
{
	bool v5 = level >= MQBI_V5;
	memset(pl, 0, sizeof(*pl));
	pl->b0 = (uint8_t)(pkt->type << 4);
	switch (pkt->type) {
	case MQBI_CONNECT: {
		const mqbi_connect *c = &pkt->u.connect;
		if (level < MQBI_V31 || level > MQBI_V5 || c->will_qos > 2)
			return false;
		pl->proto = c->protocol_name;
		if (!pl->proto.len) {
			const char *name = level == MQBI_V31 ? "MQIsdp" : "MQTT";
			pl->proto.ptr = (const uint8_t *)name;
			pl->proto.len = (uint32_t)strlen(name);
		}
		if (!str_ok(pl->proto) || !str_ok(c->client_id))
			return false;
		pl->rl = 2 + (uint64_t)pl->proto.len + 4 + 2 + c->client_id.len;
		if (v5 && !props_plan(&c->props, &pl->props, &pl->rl))
			return false;
		if (c->will_flag) {
			if (!str_ok(c->will_topic) || !str_ok(c->will_payload))
				return false;
			pl->rl += 4 + (uint64_t)c->will_topic.len + c->will_payload.len;
			if (v5 && !props_plan(&c->will_props, &pl->will_props, &pl->rl))
				return false;
		}
		if (c->has_username) {
			if (!str_ok(c->username))
				return false;
			pl->rl += 2 + (uint64_t)c->username.len;
		}
		if (c->has_password) {
			if (!str_ok(c->password))
				return false;
			pl->rl += 2 + (uint64_t)c->password.len;
		}
		break;
	}
	case MQBI_CONNACK:
		pl->rl = 2;
		if (v5 && !props_plan(&pkt->u.connack.props, &pl->props, &pl->rl))
			return false;
		break;
	case MQBI_PUBLISH: {
		const mqbi_publish *m = &pkt->u.publish;
		if (m->qos > 2 || !str_ok(m->topic) || (m->payload.len && !m->payload.ptr))
			return false;
		pl->b0 |= (uint8_t)((m->dup ? 8 : 0) | (m->qos << 1) | (m->retain ? 1 : 0));
		pl->rl = 2 + (uint64_t)m->topic.len + (m->qos ? 2 : 0) + m->payload.len;
		if (v5 && !props_plan(&m->props, &pl->props, &pl->rl))
			return false;
		break;
	}
	case MQBI_PUBACK:
	case MQBI_PUBREC:
	case MQBI_PUBREL:
	case MQBI_PUBCOMP:
	case MQBI_DISCONNECT:
	case MQBI_AUTH: {
		bool ack = pkt->type <= MQBI_PUBCOMP;
		const mqbi_props *pr = ack ? &pkt->u.ack.props : &pkt->u.reason.props;
		uint8_t reason = ack ? pkt->u.ack.reason : pkt->u.reason.reason;
		if (pkt->type == MQBI_PUBREL)
			pl->b0 |= 2;
		pl->rl = ack ? 2 : 0;
		if (!v5) {
			if (pkt->type == MQBI_AUTH)
				return false;
			break;
		}
		uint64_t tmp = 0;
		if (!props_plan(pr, &pl->props, &tmp))
			return false;
		/* Shortest form: reason and properties omitted when 0/empty. AUTH
		 * keeps the property length with a reason, as its section does
		 * not describe a reason-only form. */
		if (pl->props || (reason && pkt->type == MQBI_AUTH)) {
			pl->with_reason = pl->with_props = true;
			pl->rl += 1 + tmp;
		} else if (reason) {
			pl->with_reason = true;
			pl->rl += 1;
		}
		break;
	}
	case MQBI_SUBSCRIBE:
	case MQBI_UNSUBSCRIBE: {
		const mqbi_subscribe *s = &pkt->u.subscribe;
		if (s->list.len && !s->list.ptr)
			return false;
		pl->b0 |= 2;
		pl->rl = 2 + (uint64_t)s->list.len;
		if (v5 && !props_plan(&s->props, &pl->props, &pl->rl))
			return false;
		break;
	}
	case MQBI_SUBACK:
	case MQBI_UNSUBACK: {
		const mqbi_suback *s = &pkt->u.suback;
		pl->rl = 2;
		if (!v5 && pkt->type == MQBI_UNSUBACK)
			break;
		if (s->reasons.len && !s->reasons.ptr)
			return false;
		pl->rl += s->reasons.len;
		if (v5 && !props_plan(&s->props, &pl->props, &pl->rl))
			return false;
		break;
	}
	case MQBI_PINGREQ:
	case MQBI_PINGRESP:
		break;
	default:
		return false;
	}
	return pl->rl <= RL_MAX;
}

size_t mqbi_encoded_size(const mqbi_packet *pkt, uint8_t level)
{
	plan pl;
	if (!make_plan(pkt, level, &pl))
		return 0;
	return 1 + (size_t)mqbi_varint_size((uint32_t)pl.rl) + (size_t)pl.rl;
}

/* For 3.1/3.1.1 only the QoS bits of each options byte exist. */
static bool clear_v5_options(uint8_t *list, uint32_t len)
{
	uint32_t i = 0;
	while (i < len) {
		if (len - i < 2)
			return false;
		uint32_t flen = rd16(list + i);
		i += 2;
		if (flen >= len - i)
			return false;
		i += flen;
		list[i++] &= 3;
	}
	return true;
}

size_t mqbi_encode(uint8_t *buf, size_t cap, const mqbi_packet *pkt, uint8_t level)
{
	plan pl;
	if (!make_plan(pkt, level, &pl))
		return 0;
	size_t total = 1 + (size_t)mqbi_varint_size((uint32_t)pl.rl) + (size_t)pl.rl;
	if (total > cap)
		return 0;
	bool v5 = level >= MQBI_V5;
	uint8_t *q = buf;
	*q++ = pl.b0;
	q += mqbi_varint_encode(q, (uint32_t)pl.rl);
	switch (pkt->type) {
	case MQBI_CONNECT: {
		const mqbi_connect *c = &pkt->u.connect;
		q = wrbytes(q, pl.proto);
		*q++ = level;
		*q++ = (uint8_t)((c->has_username ? 0x80 : 0) | (c->has_password ? 0x40 : 0) |
		                 (c->will_flag
		                          ? (c->will_retain ? 0x20 : 0) | (c->will_qos << 3) | 4
		                          : 0) |
		                 (c->clean_start ? 2 : 0));
		q = wr16(q, c->keepalive);
		if (v5)
			q += mqbi_props_write(q, &c->props, pl.props);
		q = wrbytes(q, c->client_id);
		if (c->will_flag) {
			if (v5)
				q += mqbi_props_write(q, &c->will_props, pl.will_props);
			q = wrbytes(q, c->will_topic);
			q = wrbytes(q, c->will_payload);
		}
		if (c->has_username)
			q = wrbytes(q, c->username);
		if (c->has_password)
			q = wrbytes(q, c->password);
		break;
	}
	case MQBI_CONNACK:
		*q++ = pkt->u.connack.session_present ? 1 : 0;
		*q++ = pkt->u.connack.reason;
		if (v5)
			q += mqbi_props_write(q, &pkt->u.connack.props, pl.props);
		break;
	case MQBI_PUBLISH: {
		const mqbi_publish *m = &pkt->u.publish;
		q = wrbytes(q, m->topic);
		if (m->qos)
			q = wr16(q, m->packet_id);
		if (v5)
			q += mqbi_props_write(q, &m->props, pl.props);
		if (m->payload.len)
			memcpy(q, m->payload.ptr, m->payload.len);
		q += m->payload.len;
		break;
	}
	case MQBI_PUBACK:
	case MQBI_PUBREC:
	case MQBI_PUBREL:
	case MQBI_PUBCOMP:
		q = wr16(q, pkt->u.ack.packet_id);
		if (pl.with_reason)
			*q++ = pkt->u.ack.reason;
		if (pl.with_props)
			q += mqbi_props_write(q, &pkt->u.ack.props, pl.props);
		break;
	case MQBI_DISCONNECT:
	case MQBI_AUTH:
		if (pl.with_reason)
			*q++ = pkt->u.reason.reason;
		if (pl.with_props)
			q += mqbi_props_write(q, &pkt->u.reason.props, pl.props);
		break;
	case MQBI_SUBSCRIBE:
	case MQBI_UNSUBSCRIBE: {
		const mqbi_subscribe *s = &pkt->u.subscribe;
		q = wr16(q, s->packet_id);
		if (v5)
			q += mqbi_props_write(q, &s->props, pl.props);
		if (s->list.len)
			memcpy(q, s->list.ptr, s->list.len);
		if (!v5 && pkt->type == MQBI_SUBSCRIBE && !clear_v5_options(q, s->list.len))
			return 0;
		q += s->list.len;
		break;
	}
	case MQBI_SUBACK:
	case MQBI_UNSUBACK: {
		const mqbi_suback *s = &pkt->u.suback;
		q = wr16(q, s->packet_id);
		if (!v5 && pkt->type == MQBI_UNSUBACK)
			break;
		if (v5)
			q += mqbi_props_write(q, &s->props, pl.props);
		if (s->reasons.len)
			memcpy(q, s->reasons.ptr, s->reasons.len);
		q += s->reasons.len;
		break;
	}
	default: /* PINGREQ, PINGRESP */
		break;
	}
	return (size_t)(q - buf);
}
