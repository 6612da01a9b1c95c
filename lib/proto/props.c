/* MQTT 5 properties (section 2.2.2): table, decoder, encoder, iterators. */
#include "codec_internal.h"

#define K(t)  (1u << (t))
#define KWILL (1u << MQBI_WILL_PROPS)
#define KACKS (K(MQBI_PUBACK) | K(MQBI_PUBREC) | K(MQBI_PUBREL) | K(MQBI_PUBCOMP))
#define KUSER                                                                                      \
	(K(MQBI_CONNECT) | K(MQBI_CONNACK) | K(MQBI_PUBLISH) | KWILL | KACKS | K(MQBI_SUBSCRIBE) | \
	 K(MQBI_SUBACK) | K(MQBI_UNSUBSCRIBE) | K(MQBI_UNSUBACK) | K(MQBI_DISCONNECT) |            \
	 K(MQBI_AUTH))

/* MQTT 5 table 2-4. */
const mqbi_prop_info mqbi_prop_table[MQBI_PROP_MAX_ID + 1] = {
        [MQBI_PROP_PAYLOAD_FORMAT] = {PT_BYTE, K(MQBI_PUBLISH) | KWILL},
        [MQBI_PROP_MESSAGE_EXPIRY] = {PT_U32, K(MQBI_PUBLISH) | KWILL},
        [MQBI_PROP_CONTENT_TYPE] = {PT_STR, K(MQBI_PUBLISH) | KWILL},
        [MQBI_PROP_RESPONSE_TOPIC] = {PT_STR, K(MQBI_PUBLISH) | KWILL},
        [MQBI_PROP_CORRELATION_DATA] = {PT_BIN, K(MQBI_PUBLISH) | KWILL},
        [MQBI_PROP_SUB_ID] = {PT_VARINT, K(MQBI_PUBLISH) | K(MQBI_SUBSCRIBE)},
        [MQBI_PROP_SESSION_EXPIRY] = {PT_U32,
                                      K(MQBI_CONNECT) | K(MQBI_CONNACK) | K(MQBI_DISCONNECT)},
        [MQBI_PROP_ASSIGNED_CLIENT_ID] = {PT_STR, K(MQBI_CONNACK)},
        [MQBI_PROP_SERVER_KEEP_ALIVE] = {PT_U16, K(MQBI_CONNACK)},
        [MQBI_PROP_AUTH_METHOD] = {PT_STR, K(MQBI_CONNECT) | K(MQBI_CONNACK) | K(MQBI_AUTH)},
        [MQBI_PROP_AUTH_DATA] = {PT_BIN, K(MQBI_CONNECT) | K(MQBI_CONNACK) | K(MQBI_AUTH)},
        [MQBI_PROP_REQUEST_PROBLEM_INFO] = {PT_BYTE, K(MQBI_CONNECT)},
        [MQBI_PROP_WILL_DELAY] = {PT_U32, KWILL},
        [MQBI_PROP_REQUEST_RESPONSE_INFO] = {PT_BYTE, K(MQBI_CONNECT)},
        [MQBI_PROP_RESPONSE_INFO] = {PT_STR, K(MQBI_CONNACK)},
        [MQBI_PROP_SERVER_REFERENCE] = {PT_STR, K(MQBI_CONNACK) | K(MQBI_DISCONNECT)},
        [MQBI_PROP_REASON_STRING] = {PT_STR, K(MQBI_CONNACK) | KACKS | K(MQBI_SUBACK) |
                                                     K(MQBI_UNSUBACK) | K(MQBI_DISCONNECT) |
                                                     K(MQBI_AUTH)},
        [MQBI_PROP_RECEIVE_MAX] = {PT_U16, K(MQBI_CONNECT) | K(MQBI_CONNACK)},
        [MQBI_PROP_TOPIC_ALIAS_MAX] = {PT_U16, K(MQBI_CONNECT) | K(MQBI_CONNACK)},
        [MQBI_PROP_TOPIC_ALIAS] = {PT_U16, K(MQBI_PUBLISH)},
        [MQBI_PROP_MAX_QOS] = {PT_BYTE, K(MQBI_CONNACK)},
        [MQBI_PROP_RETAIN_AVAILABLE] = {PT_BYTE, K(MQBI_CONNACK)},
        [MQBI_PROP_USER_PROPERTY] = {PT_PAIR, KUSER},
        [MQBI_PROP_MAX_PACKET_SIZE] = {PT_U32, K(MQBI_CONNECT) | K(MQBI_CONNACK)},
        [MQBI_PROP_WILDCARD_SUB_AVAILABLE] = {PT_BYTE, K(MQBI_CONNACK)},
        [MQBI_PROP_SUB_ID_AVAILABLE] = {PT_BYTE, K(MQBI_CONNACK)},
        [MQBI_PROP_SHARED_SUB_AVAILABLE] = {PT_BYTE, K(MQBI_CONNACK)},
};

uint8_t mqbi_props_decode(const uint8_t *p, const uint8_t *end, int kind, bool multi_sub_id,
                          mqbi_props *out)
{
	out->raw = p;
	out->raw_len = (uint32_t)(end - p);
	/* Lets a decoded packet be re-encoded as is: the encoder copies only the
	 * User Property entries of this block. */
	out->user_raw = p;
	out->user_raw_len = out->raw_len;
	uint64_t present = 0;
	while (p < end) {
		uint8_t id = *p++;
		/* Identifiers are varints, but all defined ones fit one byte: a
		 * continuation bit means an id >= 128, which is unknown. */
		if (id > MQBI_PROP_MAX_ID)
			return MQBI_RC_MALFORMED;
		const mqbi_prop_info *info = &mqbi_prop_table[id];
		/* Section 2.2.2.2: an identifier not valid for the packet type is a
		 * Malformed Packet. */
		if (info->type == PT_NONE || !(info->kinds & (1u << kind)))
			return MQBI_RC_MALFORMED;
		uint64_t bit = 1ull << id;
		/* "It is a Protocol Error to include the X more than once." */
		if ((present & bit) && id != MQBI_PROP_USER_PROPERTY &&
		    !(id == MQBI_PROP_SUB_ID && multi_sub_id))
			return MQBI_RC_PROTOCOL_ERROR;
		present |= bit;

		uint32_t v = 0;
		mqbi_bytes b = {0}, b2;
		switch (info->type) {
		case PT_BYTE:
			if (p >= end)
				return MQBI_RC_MALFORMED;
			v = *p++;
			/* Every one-byte property takes only 0 or 1 (Maximum QoS
			 * 2 is expressed by omitting it); other values are
			 * Protocol Errors. */
			if (v > 1)
				return MQBI_RC_PROTOCOL_ERROR;
			break;
		case PT_U16:
			if (end - p < 2)
				return MQBI_RC_MALFORMED;
			v = rd16(p);
			p += 2;
			break;
		case PT_U32:
			if (end - p < 4)
				return MQBI_RC_MALFORMED;
			v = rd32(p);
			p += 4;
			break;
		case PT_VARINT: {
			int n = mqbi_varint_decode(p, (size_t)(end - p), &v);
			if (n <= 0)
				return MQBI_RC_MALFORMED;
			p += n;
			break;
		}
		case PT_STR: {
			if (!read_bytes(&p, end, &b))
				return MQBI_RC_MALFORMED;
			/* [MQTT-3.3.2-14] a Response Topic is a Topic Name: no
			 * wildcards (0x90, as for the PUBLISH topic). */
			int s = mqbi_utf8_scan(b.ptr, b.len, id == MQBI_PROP_RESPONSE_TOPIC);
			if (s == UTF8_BAD)
				return MQBI_RC_MALFORMED;
			if (s == UTF8_WILDCARD)
				return MQBI_RC_TOPIC_NAME_INVALID;
			break;
		}
		case PT_BIN:
			if (!read_bytes(&p, end, &b))
				return MQBI_RC_MALFORMED;
			break;
		case PT_PAIR:
			if (!read_bytes(&p, end, &b) || mqbi_utf8_scan(b.ptr, b.len, false) ||
			    !read_bytes(&p, end, &b2) || mqbi_utf8_scan(b2.ptr, b2.len, false))
				return MQBI_RC_MALFORMED;
			out->user_count++;
			continue;
		}

		switch (id) {
		case MQBI_PROP_PAYLOAD_FORMAT:
			out->payload_format = (uint8_t)v;
			break;
		case MQBI_PROP_MESSAGE_EXPIRY:
			out->message_expiry = v;
			break;
		case MQBI_PROP_CONTENT_TYPE:
			out->content_type = b;
			break;
		case MQBI_PROP_RESPONSE_TOPIC:
			out->response_topic = b;
			break;
		case MQBI_PROP_CORRELATION_DATA:
			out->correlation_data = b;
			break;
		case MQBI_PROP_SUB_ID:
			if (v == 0) /* section 3.8.2.1.2 */
				return MQBI_RC_PROTOCOL_ERROR;
			/* Further ids of a server->client PUBLISH stay in raw
			 * (mqbi_props_next_sub_id()). */
			if (out->sub_id_count++ == 0)
				out->sub_id = v;
			break;
		case MQBI_PROP_SESSION_EXPIRY:
			out->session_expiry = v;
			break;
		case MQBI_PROP_ASSIGNED_CLIENT_ID:
			out->assigned_client_id = b;
			break;
		case MQBI_PROP_SERVER_KEEP_ALIVE:
			out->server_keep_alive = (uint16_t)v;
			break;
		case MQBI_PROP_AUTH_METHOD:
			out->auth_method = b;
			break;
		case MQBI_PROP_AUTH_DATA:
			out->auth_data = b;
			break;
		case MQBI_PROP_REQUEST_PROBLEM_INFO:
			out->request_problem_info = (uint8_t)v;
			break;
		case MQBI_PROP_WILL_DELAY:
			out->will_delay = v;
			break;
		case MQBI_PROP_REQUEST_RESPONSE_INFO:
			out->request_response_info = (uint8_t)v;
			break;
		case MQBI_PROP_RESPONSE_INFO:
			out->response_info = b;
			break;
		case MQBI_PROP_SERVER_REFERENCE:
			out->server_reference = b;
			break;
		case MQBI_PROP_REASON_STRING:
			out->reason_string = b;
			break;
		case MQBI_PROP_RECEIVE_MAX:
			if (v == 0) /* section 3.1.2.11.3 / 3.2.2.3.3 */
				return MQBI_RC_PROTOCOL_ERROR;
			out->receive_max = (uint16_t)v;
			break;
		case MQBI_PROP_TOPIC_ALIAS_MAX:
			out->topic_alias_max = (uint16_t)v;
			break;
		case MQBI_PROP_TOPIC_ALIAS:
			/* Range (0 and above the negotiated maximum, 0x94) is
			 * checked by the PUBLISH decoder, which knows the limit. */
			out->topic_alias = (uint16_t)v;
			break;
		case MQBI_PROP_MAX_QOS:
			out->max_qos = (uint8_t)v;
			break;
		case MQBI_PROP_RETAIN_AVAILABLE:
			out->retain_available = (uint8_t)v;
			break;
		case MQBI_PROP_MAX_PACKET_SIZE:
			if (v == 0) /* section 3.1.2.11.4 */
				return MQBI_RC_PROTOCOL_ERROR;
			out->max_packet_size = v;
			break;
		case MQBI_PROP_WILDCARD_SUB_AVAILABLE:
			out->wildcard_sub_available = (uint8_t)v;
			break;
		case MQBI_PROP_SUB_ID_AVAILABLE:
			out->sub_id_available = (uint8_t)v;
			break;
		case MQBI_PROP_SHARED_SUB_AVAILABLE:
			out->shared_sub_available = (uint8_t)v;
			break;
		}
	}
	out->present = present;
	/* "It is a Protocol Error to include Authentication Data if there is no
	 * Authentication Method" (3.1.2.11.10, 3.2.2.3.18, 3.15.2.2.4). */
	if ((present & (1ull << MQBI_PROP_AUTH_DATA)) &&
	    !(present & (1ull << MQBI_PROP_AUTH_METHOD)))
		return MQBI_RC_PROTOCOL_ERROR;
	return 0;
}

int mqbi_props_next(const uint8_t *raw, uint32_t raw_len, uint32_t *pos, mqbi_bytes *a,
                    mqbi_bytes *b, uint32_t *v)
{
	if (!raw || *pos >= raw_len)
		return -1;
	const uint8_t *p = raw + *pos, *end = raw + raw_len;
	uint8_t id = *p++;
	if (id > MQBI_PROP_MAX_ID || mqbi_prop_table[id].type == PT_NONE)
		return -1;
	switch (mqbi_prop_table[id].type) {
	case PT_BYTE:
		if (p >= end)
			return -1;
		*v = *p++;
		break;
	case PT_U16:
		if (end - p < 2)
			return -1;
		*v = rd16(p);
		p += 2;
		break;
	case PT_U32:
		if (end - p < 4)
			return -1;
		*v = rd32(p);
		p += 4;
		break;
	case PT_VARINT: {
		int n = mqbi_varint_decode(p, (size_t)(end - p), v);
		if (n <= 0)
			return -1;
		p += n;
		break;
	}
	case PT_STR:
	case PT_BIN:
		if (!read_bytes(&p, end, a))
			return -1;
		break;
	case PT_PAIR:
		if (!read_bytes(&p, end, a) || !read_bytes(&p, end, b))
			return -1;
		break;
	}
	*pos = (uint32_t)(p - raw);
	return id;
}

bool mqbi_props_next_user(const uint8_t *raw, uint32_t raw_len, uint32_t *pos, mqbi_bytes *key,
                          mqbi_bytes *value)
{
	mqbi_bytes a, b;
	uint32_t v;
	int id;
	while ((id = mqbi_props_next(raw, raw_len, pos, &a, &b, &v)) >= 0) {
		if (id == MQBI_PROP_USER_PROPERTY) {
			*key = a;
			*value = b;
			return true;
		}
	}
	return false;
}

bool mqbi_props_next_sub_id(const uint8_t *raw, uint32_t raw_len, uint32_t *pos, uint32_t *id)
{
	mqbi_bytes a, b;
	uint32_t v;
	int pid;
	while ((pid = mqbi_props_next(raw, raw_len, pos, &a, &b, &v)) >= 0) {
		if (pid == MQBI_PROP_SUB_ID) {
			*id = v;
			return true;
		}
	}
	return false;
}

/* Bytes of the User Property entries of user_raw, or UINT32_MAX when the
 * block is malformed. */
static uint32_t user_props_size(const mqbi_props *p)
{
	uint32_t pos = 0, total = 0, start;
	mqbi_bytes a, b;
	uint32_t v;
	int id;
	while (start = pos,
	       (id = mqbi_props_next(p->user_raw, p->user_raw_len, &pos, &a, &b, &v)) >= 0) {
		if (id == MQBI_PROP_USER_PROPERTY)
			total += pos - start;
	}
	return pos == p->user_raw_len || !p->user_raw ? total : UINT32_MAX;
}

/* Several subscription identifiers come from the array, one from sub_id. */
static bool sub_ids_from_array(const mqbi_props *p)
{
	return p->sub_ids && p->sub_id_count;
}

uint32_t mqbi_props_size_checked(const mqbi_props *p)
{
	uint64_t size = 0;
	uint64_t bits =
	        p->present & ~((1ull << MQBI_PROP_USER_PROPERTY) | (1ull << MQBI_PROP_SUB_ID));
	while (bits) {
		int id = __builtin_ctzll(bits);
		bits &= bits - 1;
		if (id > MQBI_PROP_MAX_ID)
			return UINT32_MAX;
		const mqbi_prop_info *info = &mqbi_prop_table[id];
		switch (info->type) {
		case PT_BYTE:
			size += 2;
			break;
		case PT_U16:
			size += 3;
			break;
		case PT_U32:
			size += 5;
			break;
		case PT_STR:
		case PT_BIN: {
			const mqbi_bytes *b = NULL;
			switch (id) {
			case MQBI_PROP_CONTENT_TYPE:
				b = &p->content_type;
				break;
			case MQBI_PROP_RESPONSE_TOPIC:
				b = &p->response_topic;
				break;
			case MQBI_PROP_CORRELATION_DATA:
				b = &p->correlation_data;
				break;
			case MQBI_PROP_ASSIGNED_CLIENT_ID:
				b = &p->assigned_client_id;
				break;
			case MQBI_PROP_AUTH_METHOD:
				b = &p->auth_method;
				break;
			case MQBI_PROP_AUTH_DATA:
				b = &p->auth_data;
				break;
			case MQBI_PROP_RESPONSE_INFO:
				b = &p->response_info;
				break;
			case MQBI_PROP_SERVER_REFERENCE:
				b = &p->server_reference;
				break;
			default:
				b = &p->reason_string;
				break;
			}
			if (b->len > 65535)
				return UINT32_MAX;
			size += 3 + (uint64_t)b->len;
			break;
		}
		default:
			return UINT32_MAX;
		}
	}
	if (sub_ids_from_array(p)) {
		for (uint32_t i = 0; i < p->sub_id_count; i++) {
			int n = mqbi_varint_size(p->sub_ids[i]);
			if (!n || !p->sub_ids[i])
				return UINT32_MAX;
			size += 1 + (uint64_t)n;
		}
	} else if (p->present & (1ull << MQBI_PROP_SUB_ID)) {
		int n = mqbi_varint_size(p->sub_id);
		if (!n || !p->sub_id)
			return UINT32_MAX;
		size += 1 + (uint64_t)n;
	}
	if (p->user_raw_len) {
		uint32_t u = user_props_size(p);
		if (u == UINT32_MAX)
			return UINT32_MAX;
		size += u;
	}
	return size > 268435455u ? UINT32_MAX : (uint32_t)size;
}

uint32_t mqbi_props_size(const mqbi_props *p)
{
	return mqbi_props_size_checked(p);
}

static uint8_t *write_str(uint8_t *q, int id, mqbi_bytes b)
{
	*q++ = (uint8_t)id;
	return wrbytes(q, b);
}

size_t mqbi_props_write(uint8_t *buf, const mqbi_props *p, uint32_t size)
{
	uint8_t *q = buf + mqbi_varint_encode(buf, size);
	uint64_t bits =
	        p->present & ~((1ull << MQBI_PROP_USER_PROPERTY) | (1ull << MQBI_PROP_SUB_ID));
	while (bits) {
		int id = __builtin_ctzll(bits);
		bits &= bits - 1;
		switch (id) {
		case MQBI_PROP_PAYLOAD_FORMAT:
		case MQBI_PROP_REQUEST_PROBLEM_INFO:
		case MQBI_PROP_REQUEST_RESPONSE_INFO:
		case MQBI_PROP_MAX_QOS:
		case MQBI_PROP_RETAIN_AVAILABLE:
		case MQBI_PROP_WILDCARD_SUB_AVAILABLE:
		case MQBI_PROP_SUB_ID_AVAILABLE:
		case MQBI_PROP_SHARED_SUB_AVAILABLE: {
			uint8_t v =
			        id == MQBI_PROP_PAYLOAD_FORMAT           ? p->payload_format
			        : id == MQBI_PROP_REQUEST_PROBLEM_INFO   ? p->request_problem_info
			        : id == MQBI_PROP_REQUEST_RESPONSE_INFO  ? p->request_response_info
			        : id == MQBI_PROP_MAX_QOS                ? p->max_qos
			        : id == MQBI_PROP_RETAIN_AVAILABLE       ? p->retain_available
			        : id == MQBI_PROP_WILDCARD_SUB_AVAILABLE ? p->wildcard_sub_available
			        : id == MQBI_PROP_SUB_ID_AVAILABLE       ? p->sub_id_available
			                                                 : p->shared_sub_available;
			*q++ = (uint8_t)id;
			*q++ = v;
			break;
		}
		case MQBI_PROP_SERVER_KEEP_ALIVE:
		case MQBI_PROP_RECEIVE_MAX:
		case MQBI_PROP_TOPIC_ALIAS_MAX:
		case MQBI_PROP_TOPIC_ALIAS: {
			uint16_t v = id == MQBI_PROP_SERVER_KEEP_ALIVE ? p->server_keep_alive
			             : id == MQBI_PROP_RECEIVE_MAX     ? p->receive_max
			             : id == MQBI_PROP_TOPIC_ALIAS_MAX ? p->topic_alias_max
			                                               : p->topic_alias;
			*q++ = (uint8_t)id;
			q = wr16(q, v);
			break;
		}
		case MQBI_PROP_MESSAGE_EXPIRY:
		case MQBI_PROP_SESSION_EXPIRY:
		case MQBI_PROP_WILL_DELAY:
		case MQBI_PROP_MAX_PACKET_SIZE: {
			uint32_t v = id == MQBI_PROP_MESSAGE_EXPIRY   ? p->message_expiry
			             : id == MQBI_PROP_SESSION_EXPIRY ? p->session_expiry
			             : id == MQBI_PROP_WILL_DELAY     ? p->will_delay
			                                              : p->max_packet_size;
			*q++ = (uint8_t)id;
			q = wr32(q, v);
			break;
		}
		case MQBI_PROP_CONTENT_TYPE:
			q = write_str(q, id, p->content_type);
			break;
		case MQBI_PROP_RESPONSE_TOPIC:
			q = write_str(q, id, p->response_topic);
			break;
		case MQBI_PROP_CORRELATION_DATA:
			q = write_str(q, id, p->correlation_data);
			break;
		case MQBI_PROP_ASSIGNED_CLIENT_ID:
			q = write_str(q, id, p->assigned_client_id);
			break;
		case MQBI_PROP_AUTH_METHOD:
			q = write_str(q, id, p->auth_method);
			break;
		case MQBI_PROP_AUTH_DATA:
			q = write_str(q, id, p->auth_data);
			break;
		case MQBI_PROP_RESPONSE_INFO:
			q = write_str(q, id, p->response_info);
			break;
		case MQBI_PROP_SERVER_REFERENCE:
			q = write_str(q, id, p->server_reference);
			break;
		case MQBI_PROP_REASON_STRING:
			q = write_str(q, id, p->reason_string);
			break;
		}
	}
	/* User properties keep their original order. */
	if (p->user_raw_len) {
		uint32_t pos = 0, start;
		mqbi_bytes a, b;
		uint32_t v;
		int id;
		while (start = pos, (id = mqbi_props_next(p->user_raw, p->user_raw_len, &pos, &a,
		                                          &b, &v)) >= 0) {
			if (id == MQBI_PROP_USER_PROPERTY) {
				memcpy(q, p->user_raw + start, pos - start);
				q += pos - start;
			}
		}
	}
	/* Subscription identifiers last: they are per subscriber. */
	if (sub_ids_from_array(p)) {
		for (uint32_t i = 0; i < p->sub_id_count; i++) {
			*q++ = MQBI_PROP_SUB_ID;
			q += mqbi_varint_encode(q, p->sub_ids[i]);
		}
	} else if (p->present & (1ull << MQBI_PROP_SUB_ID)) {
		*q++ = MQBI_PROP_SUB_ID;
		q += mqbi_varint_encode(q, p->sub_id);
	}
	return (size_t)(q - buf);
}
