/*
 * MQTT 3.1 / 3.1.1 / 5.0 codec: pure functions over byte buffers. No I/O, no
 * globals, no allocation. Decoded strings and binaries are views into the
 * caller's input buffer and are valid only as long as it is.
 */
#ifndef MQBI_CODEC_H
#define MQBI_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Protocol levels as they appear in CONNECT. */
enum { MQBI_V31 = 3, MQBI_V311 = 4, MQBI_V5 = 5 };

typedef enum mqbi_ptype {
	MQBI_CONNECT = 1,
	MQBI_CONNACK,
	MQBI_PUBLISH,
	MQBI_PUBACK,
	MQBI_PUBREC,
	MQBI_PUBREL,
	MQBI_PUBCOMP,
	MQBI_SUBSCRIBE,
	MQBI_SUBACK,
	MQBI_UNSUBSCRIBE,
	MQBI_UNSUBACK,
	MQBI_PINGREQ,
	MQBI_PINGRESP,
	MQBI_DISCONNECT,
	MQBI_AUTH
} mqbi_ptype;

/* MQTT 5 reason codes used by the codec and the broker. */
enum {
	MQBI_RC_SUCCESS = 0x00,
	MQBI_RC_GRANTED_QOS1 = 0x01,
	MQBI_RC_GRANTED_QOS2 = 0x02,
	MQBI_RC_DISCONNECT_WITH_WILL = 0x04,
	MQBI_RC_NO_MATCHING_SUBSCRIBERS = 0x10,
	MQBI_RC_NO_SUBSCRIPTION_EXISTED = 0x11,
	MQBI_RC_CONTINUE_AUTH = 0x18,
	MQBI_RC_REAUTHENTICATE = 0x19,
	MQBI_RC_UNSPECIFIED = 0x80,
	MQBI_RC_MALFORMED = 0x81,
	MQBI_RC_PROTOCOL_ERROR = 0x82,
	MQBI_RC_IMPL_SPECIFIC = 0x83,
	MQBI_RC_UNSUPPORTED_VERSION = 0x84,
	MQBI_RC_CLIENT_ID_INVALID = 0x85,
	MQBI_RC_BAD_USER_PASS = 0x86,
	MQBI_RC_NOT_AUTHORIZED = 0x87,
	MQBI_RC_SERVER_UNAVAILABLE = 0x88,
	MQBI_RC_SERVER_BUSY = 0x89,
	MQBI_RC_BANNED = 0x8A,
	MQBI_RC_SERVER_SHUTTING_DOWN = 0x8B,
	MQBI_RC_BAD_AUTH_METHOD = 0x8C,
	MQBI_RC_KEEPALIVE_TIMEOUT = 0x8D,
	MQBI_RC_SESSION_TAKEN_OVER = 0x8E,
	MQBI_RC_TOPIC_FILTER_INVALID = 0x8F,
	MQBI_RC_TOPIC_NAME_INVALID = 0x90,
	MQBI_RC_PACKET_ID_IN_USE = 0x91,
	MQBI_RC_PACKET_ID_NOT_FOUND = 0x92,
	MQBI_RC_RECEIVE_MAX_EXCEEDED = 0x93,
	MQBI_RC_TOPIC_ALIAS_INVALID = 0x94,
	MQBI_RC_PACKET_TOO_LARGE = 0x95,
	MQBI_RC_MESSAGE_RATE_TOO_HIGH = 0x96,
	MQBI_RC_QUOTA_EXCEEDED = 0x97,
	MQBI_RC_ADMIN_ACTION = 0x98,
	MQBI_RC_PAYLOAD_FORMAT_INVALID = 0x99,
	MQBI_RC_RETAIN_NOT_SUPPORTED = 0x9A,
	MQBI_RC_QOS_NOT_SUPPORTED = 0x9B,
	MQBI_RC_USE_ANOTHER_SERVER = 0x9C,
	MQBI_RC_SERVER_MOVED = 0x9D,
	MQBI_RC_SHARED_SUB_NOT_SUPPORTED = 0x9E,
	MQBI_RC_CONNECTION_RATE_EXCEEDED = 0x9F,
	MQBI_RC_MAX_CONNECT_TIME = 0xA0,
	MQBI_RC_SUB_IDS_NOT_SUPPORTED = 0xA1,
	MQBI_RC_WILDCARD_SUB_NOT_SUPPORTED = 0xA2
};

/* MQTT 5 property identifiers. */
enum {
	MQBI_PROP_PAYLOAD_FORMAT = 0x01,
	MQBI_PROP_MESSAGE_EXPIRY = 0x02,
	MQBI_PROP_CONTENT_TYPE = 0x03,
	MQBI_PROP_RESPONSE_TOPIC = 0x08,
	MQBI_PROP_CORRELATION_DATA = 0x09,
	MQBI_PROP_SUB_ID = 0x0B,
	MQBI_PROP_SESSION_EXPIRY = 0x11,
	MQBI_PROP_ASSIGNED_CLIENT_ID = 0x12,
	MQBI_PROP_SERVER_KEEP_ALIVE = 0x13,
	MQBI_PROP_AUTH_METHOD = 0x15,
	MQBI_PROP_AUTH_DATA = 0x16,
	MQBI_PROP_REQUEST_PROBLEM_INFO = 0x17,
	MQBI_PROP_WILL_DELAY = 0x18,
	MQBI_PROP_REQUEST_RESPONSE_INFO = 0x19,
	MQBI_PROP_RESPONSE_INFO = 0x1A,
	MQBI_PROP_SERVER_REFERENCE = 0x1C,
	MQBI_PROP_REASON_STRING = 0x1F,
	MQBI_PROP_RECEIVE_MAX = 0x21,
	MQBI_PROP_TOPIC_ALIAS_MAX = 0x22,
	MQBI_PROP_TOPIC_ALIAS = 0x23,
	MQBI_PROP_MAX_QOS = 0x24,
	MQBI_PROP_RETAIN_AVAILABLE = 0x25,
	MQBI_PROP_USER_PROPERTY = 0x26,
	MQBI_PROP_MAX_PACKET_SIZE = 0x27,
	MQBI_PROP_WILDCARD_SUB_AVAILABLE = 0x28,
	MQBI_PROP_SUB_ID_AVAILABLE = 0x29,
	MQBI_PROP_SHARED_SUB_AVAILABLE = 0x2A
};

/* Pseudo packet kind for the will properties inside CONNECT (property tables). */
#define MQBI_WILL_PROPS 16

/* A view of a string or binary field. `ptr` may be NULL when len == 0. */
typedef struct mqbi_bytes {
	const uint8_t *ptr;
	uint32_t len;
} mqbi_bytes;

/* MQTT 5 properties. `present` has bit (1ull << id) set for each property seen
 * (on encode: to be written). User properties are not expanded: `raw` /
 * `raw_len` is the whole property block as received (iterate with
 * mqbi_props_next_user()); on encode, `user_raw`/`user_raw_len` is a block
 * whose User Property entries (and only those) are copied out in order. */
typedef struct mqbi_props {
	uint64_t present;
	const uint8_t *raw;
	uint32_t raw_len;
	uint32_t user_count;
	const uint8_t *user_raw;
	uint32_t user_raw_len;

	uint8_t payload_format;
	uint8_t request_problem_info;
	uint8_t request_response_info;
	uint8_t max_qos;
	uint8_t retain_available;
	uint8_t wildcard_sub_available;
	uint8_t sub_id_available;
	uint8_t shared_sub_available;
	uint16_t server_keep_alive;
	uint16_t receive_max;
	uint16_t topic_alias_max;
	uint16_t topic_alias;
	uint32_t message_expiry;
	uint32_t session_expiry;
	uint32_t will_delay;
	uint32_t max_packet_size;
	/* Subscription identifiers: decode stores the one allowed (count 0/1);
	 * encode writes `sub_id_count` entries from `sub_ids` (PUBLISH may carry many). */
	uint32_t sub_id;
	const uint32_t *sub_ids;
	uint32_t sub_id_count;
	mqbi_bytes content_type;
	mqbi_bytes response_topic;
	mqbi_bytes correlation_data;
	mqbi_bytes assigned_client_id;
	mqbi_bytes auth_method;
	mqbi_bytes auth_data;
	mqbi_bytes response_info;
	mqbi_bytes server_reference;
	mqbi_bytes reason_string;
} mqbi_props;

static inline bool mqbi_props_has(const mqbi_props *p, int id)
{
	return (p->present >> id) & 1u;
}

typedef struct mqbi_connect {
	mqbi_bytes protocol_name;
	uint8_t level; /* 3, 4 or 5 */
	bool clean_start;
	uint16_t keepalive;
	mqbi_props props;
	mqbi_bytes client_id;
	bool will_flag;
	uint8_t will_qos;
	bool will_retain;
	mqbi_props will_props;
	mqbi_bytes will_topic;
	mqbi_bytes will_payload;
	bool has_username;
	bool has_password;
	mqbi_bytes username;
	mqbi_bytes password;
} mqbi_connect;

typedef struct mqbi_connack {
	bool session_present;
	uint8_t reason; /* v5 reason code, or v3 return code */
	mqbi_props props;
} mqbi_connack;

typedef struct mqbi_publish {
	uint8_t qos;
	bool dup;
	bool retain;
	mqbi_bytes topic;   /* may be empty in v5 when a topic alias is present */
	uint16_t packet_id; /* 0 for QoS 0 */
	mqbi_props props;
	mqbi_bytes payload;
} mqbi_publish;

/* PUBACK, PUBREC, PUBREL, PUBCOMP. */
typedef struct mqbi_ack {
	uint16_t packet_id;
	uint8_t reason;
	mqbi_props props;
} mqbi_ack;

/* Subscription options byte, decoded. */
typedef struct mqbi_subopts {
	uint8_t qos;
	bool no_local;
	bool retain_as_published;
	uint8_t retain_handling; /* 0, 1 or 2 */
} mqbi_subopts;

/* SUBSCRIBE and UNSUBSCRIBE: the topic-filter list is validated on decode and
 * kept as a view; walk it with mqbi_sublist_next(). */
typedef struct mqbi_subscribe {
	uint16_t packet_id;
	mqbi_props props;
	mqbi_bytes list;
	uint32_t count;
} mqbi_subscribe;

/* SUBACK and UNSUBACK: one reason code per filter. */
typedef struct mqbi_suback {
	uint16_t packet_id;
	mqbi_props props;
	mqbi_bytes reasons;
} mqbi_suback;

/* DISCONNECT and AUTH. */
typedef struct mqbi_reason_packet {
	uint8_t reason;
	mqbi_props props;
} mqbi_reason_packet;

typedef struct mqbi_packet {
	mqbi_ptype type;
	uint8_t flags; /* low nibble of the fixed header */
	union {
		mqbi_connect connect;
		mqbi_connack connack;
		mqbi_publish publish;
		mqbi_ack ack;
		mqbi_subscribe subscribe;  /* also UNSUBSCRIBE */
		mqbi_suback suback;        /* also UNSUBACK */
		mqbi_reason_packet reason; /* DISCONNECT, AUTH */
	} u;
} mqbi_packet;

typedef enum mqbi_dec_status {
	MQBI_DEC_OK = 0,
	MQBI_DEC_NEED_MORE,
	MQBI_DEC_MALFORMED
} mqbi_dec_status;

/* What the decoder must know of the connection. */
typedef struct mqbi_dec_ctx {
	uint8_t level;            /* negotiated protocol level (ignored for CONNECT) */
	bool from_client;         /* the packet was sent by a client (server-side decode) */
	uint32_t max_packet_size; /* 0 = the protocol maximum */
	uint16_t topic_alias_max; /* aliases above this in PUBLISH are invalid (0x94) */
} mqbi_dec_ctx;

/* Variable byte integer (1..4 bytes). decode returns bytes used, 0 when more
 * input is needed, -1 when malformed (a fifth byte would be needed). encode
 * returns bytes written (buf needs 4 bytes), 0 if value > 268435455. */
int mqbi_varint_decode(const uint8_t *buf, size_t len, uint32_t *value);
int mqbi_varint_encode(uint8_t *buf, uint32_t value);
int mqbi_varint_size(uint32_t value);

/* True if buf is well-formed UTF-8 as MQTT requires: no U+0000, no surrogates
 * (U+D800..U+DFFF), no overlong forms, nothing above U+10FFFF. */
bool mqbi_utf8_valid(const uint8_t *buf, size_t len);

/* Parses the fixed header. On MQBI_DEC_OK sets *type_flags (first byte),
 * *remaining (remaining length) and *header_len (1 + varint bytes).
 * MALFORMED for an overlong varint; NEED_MORE when incomplete. */
mqbi_dec_status mqbi_decode_fixed_header(const uint8_t *buf, size_t len, uint8_t *type_flags,
                                         uint32_t *remaining, size_t *header_len);

/* Decodes one whole packet at the start of buf. On OK *consumed is its size.
 * On MALFORMED *reason is the v5 reason code to answer with (0x81 Malformed,
 * 0x82 Protocol Error, 0x84 Unsupported Protocol Version for CONNECT,
 * 0x94 Topic Alias invalid, 0x95 Packet too large, ...). A packet type that
 * cannot travel in the ctx->from_client direction is refused with 0x82.
 * On MALFORMED, *consumed is the packet's size if the whole packet was in buf
 * (0 if it was refused from its fixed header), and the fields decoded so far
 * are set: after 0x99 (PUBLISH payload not UTF-8 despite Payload Format 1)
 * pkt->u.publish is complete, so the caller may answer PUBACK/PUBREC 0x99 and
 * skip the packet instead of disconnecting. */
mqbi_dec_status mqbi_decode(const uint8_t *buf, size_t len, const mqbi_dec_ctx *ctx,
                            mqbi_packet *pkt, size_t *consumed, uint8_t *reason);

/* Walks a decoded SUBSCRIBE (with opts) or UNSUBSCRIBE (opts == NULL) list.
 * *pos starts at 0. Returns false at the end. */
bool mqbi_sublist_next(const mqbi_subscribe *s, bool with_options, uint32_t *pos,
                       mqbi_bytes *filter, mqbi_subopts *opts);

/* Reads the property at *pos of a raw property block (without its length
 * prefix) and advances past it; returns its id, or -1 at the end, on an
 * unknown id or on a malformed entry. Strings and binary data go to a (User
 * Property pairs to a and b), numbers to v. *pos starts at 0. */
int mqbi_props_next(const uint8_t *raw, uint32_t raw_len, uint32_t *pos, mqbi_bytes *a,
                    mqbi_bytes *b, uint32_t *v);

/* Walks the User Property entries of a raw property block. *pos starts at 0. */
bool mqbi_props_next_user(const uint8_t *raw, uint32_t raw_len, uint32_t *pos, mqbi_bytes *key,
                          mqbi_bytes *value);

/* Walks the Subscription Identifier entries of a raw property block (a
 * server->client PUBLISH may carry several; decode keeps only the first in
 * props.sub_id and their number in props.sub_id_count). *pos starts at 0. */
bool mqbi_props_next_sub_id(const uint8_t *raw, uint32_t raw_len, uint32_t *pos, uint32_t *id);

/* Encoding. mqbi_encoded_size() returns the full packet size (fixed header
 * included) of `pkt` for protocol `level`; mqbi_encode() writes it into buf and
 * returns the bytes written, or 0 if cap is too small or a field cannot be
 * encoded. Properties are written only for level 5, in ascending id order, then
 * the user properties copied from props.user_raw, then the subscription
 * identifiers (props.sub_ids[0..sub_id_count) if sub_ids is set, else
 * props.sub_id when its present bit is set). A decoded packet sets user_raw to
 * its whole property block, so it re-encodes as is. mqbi_encoded_size()
 * returns 0 when the packet cannot be encoded. */
size_t mqbi_encoded_size(const mqbi_packet *pkt, uint8_t level);
size_t mqbi_encode(uint8_t *buf, size_t cap, const mqbi_packet *pkt, uint8_t level);

/* Size of the encoded property block (without its length prefix), or
 * UINT32_MAX when it cannot be encoded. */
uint32_t mqbi_props_size(const mqbi_props *p);

/* Human-readable name of a packet type ("PUBLISH") and of a v5 reason code. */
const char *mqbi_ptype_name(int type);
const char *mqbi_reason_name(uint8_t reason);

#endif
