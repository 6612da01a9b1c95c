#include "core/core.h"

/* Properties that belong to one hop and are recomputed (or dropped) when a
 * message is forwarded: Topic Alias, Subscription Identifier, Message Expiry
 * Interval (sent as the remaining time) and Will Delay Interval. */
static bool per_hop(uint8_t id)
{
	return id == MQBI_PROP_TOPIC_ALIAS || id == MQBI_PROP_SUB_ID ||
	       id == MQBI_PROP_MESSAGE_EXPIRY || id == MQBI_PROP_WILL_DELAY;
}

/* Copies the properties that travel with the message; returns bytes written. */
static size_t copy_forwarded_props(uint8_t *dst, const uint8_t *src, size_t len)
{
	uint32_t pos = 0, start, v;
	mqbi_bytes a, b;
	size_t out = 0;
	int id;
	while (start = pos, (id = mqbi_props_next(src, (uint32_t)len, &pos, &a, &b, &v)) >= 0) {
		if (!per_hop((uint8_t)id)) {
			memcpy(dst + out, src + start, pos - start);
			out += pos - start;
		}
	}
	return out;
}

mqbi_msg *mqbi_msg_create(const mqb_allocator *a, const char *topic, size_t topic_len,
                          const uint8_t *props, size_t props_len, const void *payload,
                          size_t payload_len, uint8_t qos, bool retain, const char *publisher,
                          size_t publisher_len, const char *username, bool has_expiry,
                          uint32_t expiry_s, uint64_t now)
{
	size_t ulen = username ? strlen(username) : 0;
	if (topic_len > UINT16_MAX || publisher_len > UINT16_MAX || payload_len > UINT32_MAX)
		return NULL;
	size_t size = sizeof(mqbi_msg) + topic_len + 1 + props_len + payload_len + publisher_len +
	              1 + (username ? ulen + 1 : 0);
	mqbi_msg *m = mqbi_malloc(a, size);
	if (!m)
		return NULL;
	atomic_init(&m->refs, 1);
	atomic_init(&m->store_id, 0);
	m->qos = qos;
	m->retain = retain;
	m->has_expiry = has_expiry;
	m->expire_at = has_expiry ? now + (uint64_t)expiry_s * 1000u : 0;
	m->expiry_interval = has_expiry ? expiry_s : 0;
	uint8_t *p = m->data;
	memcpy(p, topic, topic_len);
	p[topic_len] = '\0';
	m->topic = (const char *)p;
	m->topic_len = (uint16_t)topic_len;
	p += topic_len + 1;
	m->props = p;
	m->props_len = props_len ? (uint32_t)copy_forwarded_props(p, props, props_len) : 0;
	p += m->props_len;
	if (payload_len)
		memcpy(p, payload, payload_len);
	m->payload = p;
	m->payload_len = (uint32_t)payload_len;
	p += payload_len;
	if (publisher_len)
		memcpy(p, publisher, publisher_len);
	p[publisher_len] = '\0';
	m->publisher = (const char *)p;
	m->publisher_len = (uint16_t)publisher_len;
	p += publisher_len + 1;
	m->username = NULL;
	if (username) {
		memcpy(p, username, ulen + 1);
		m->username = (const char *)p;
	}
	return m;
}

void mqbi_msg_unref(const mqb_allocator *a, mqbi_msg *m)
{
	if (m && atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1)
		mqbi_free(a, m);
}
