/* A minimal raw MQTT 3.1.1 / 5.0 client for the embedding-API tests: encodes
 * the few packets the tests send and decodes what the broker answers. It uses
 * nothing of the library but talks plain TCP, so the tests see exactly what
 * is on the wire. Every function is blocking with an explicit deadline. */
#ifndef MQTT_RAW_H
#define MQTT_RAW_H

#include <stddef.h>
#include <stdint.h>

/* Packet types (high nibble of the fixed header). */
enum {
	MR_CONNECT = 1,
	MR_CONNACK = 2,
	MR_PUBLISH = 3,
	MR_PUBACK = 4,
	MR_PUBREC = 5,
	MR_PUBREL = 6,
	MR_PUBCOMP = 7,
	MR_SUBSCRIBE = 8,
	MR_SUBACK = 9,
	MR_UNSUBSCRIBE = 10,
	MR_UNSUBACK = 11,
	MR_PINGREQ = 12,
	MR_PINGRESP = 13,
	MR_DISCONNECT = 14,
	MR_AUTH = 15
};

/* A growable byte buffer used to build packets and property blocks. */
typedef struct mr_buf {
	uint8_t *data;
	size_t len, cap;
} mr_buf;
void mr_buf_free(mr_buf *b);
void mr_put_u8(mr_buf *b, uint8_t v);
void mr_put_u16(mr_buf *b, uint16_t v);
void mr_put_u32(mr_buf *b, uint32_t v);
void mr_put_varint(mr_buf *b, uint32_t v);
void mr_put_bytes(mr_buf *b, const void *p, size_t n);
void mr_put_bin(mr_buf *b, const void *p, size_t n); /* u16 length + bytes */
void mr_put_str(mr_buf *b, const char *s);           /* u16 length + bytes */

/* MQTT 5 property block builders (append one property to b). */
void mr_prop_u8(mr_buf *b, uint8_t id, uint8_t v);
void mr_prop_u16(mr_buf *b, uint8_t id, uint16_t v);
void mr_prop_u32(mr_buf *b, uint8_t id, uint32_t v);
void mr_prop_varint(mr_buf *b, uint8_t id, uint32_t v);
void mr_prop_str(mr_buf *b, uint8_t id, const char *s);
void mr_prop_bin(mr_buf *b, uint8_t id, const void *p, size_t n);
void mr_prop_pair(mr_buf *b, uint8_t id, const char *k, const char *v);

/* Options for CONNECT. proto is 4 (3.1.1) or 5. */
typedef struct mr_connect_opts {
	int proto;
	const char *client_id;
	int clean;            /* clean session / clean start */
	uint16_t keepalive;   /* seconds */
	const char *username; /* or NULL */
	const char *password; /* or NULL */
	int has_session_expiry;
	uint32_t session_expiry; /* MQTT 5 */
	const char *will_topic;  /* or NULL */
	const char *will_payload;
} mr_connect_opts;

/* Encoders: append the complete packet to `out`. */
void mr_enc_connect(mr_buf *out, const mr_connect_opts *o);
/* props may be NULL (v5: empty block); ignored for proto 4. */
void mr_enc_publish(mr_buf *out, int proto, const char *topic, const void *payload, size_t len,
                    int qos, int retain, uint16_t pid, const mr_buf *props);
void mr_enc_subscribe(mr_buf *out, int proto, uint16_t pid, const char *filter, int qos,
                      uint32_t sub_id);
void mr_enc_unsubscribe(mr_buf *out, int proto, uint16_t pid, const char *filter);
void mr_enc_ack(mr_buf *out, int type, int proto, uint16_t pid, uint8_t reason);
void mr_enc_pingreq(mr_buf *out);
void mr_enc_disconnect(mr_buf *out, int proto, uint8_t reason);

/* Networking. mr_dial returns a connected blocking socket or -1. */
int mr_dial(int port);
/* Writes the whole buffer; 0 on success, -1 on error. */
int mr_send(int fd, const mr_buf *b);

/* A received packet. */
typedef struct mr_packet {
	int type;  /* high nibble */
	int flags; /* low nibble */
	uint8_t *body;
	size_t len;
} mr_packet;
void mr_packet_free(mr_packet *p);

/* Reads one packet within timeout_ms. Returns 1 on success, 0 on timeout
 * (nothing or part of a packet read: the stream is then out of sync), -1 on
 * EOF or error, -2 on a malformed fixed header. */
int mr_read(int fd, mr_packet *p, int timeout_ms);
/* 1 if the peer closed the connection within timeout_ms (any packets read
 * meanwhile are skipped), 0 otherwise. */
int mr_wait_closed(int fd, int timeout_ms);

/* Parsed MQTT 5 properties (only those the tests look at). */
#define MR_MAX_USER_PROPS 16
typedef struct mr_props {
	int has_payload_format;
	uint8_t payload_format;
	int has_message_expiry;
	uint32_t message_expiry;
	char content_type[256];
	int has_content_type;
	char response_topic[256];
	int has_response_topic;
	uint8_t correlation[256];
	size_t correlation_len;
	int has_correlation;
	uint32_t subscription_ids[8];
	int subscription_id_count;
	int has_session_expiry;
	uint32_t session_expiry;
	int has_maximum_qos;
	uint8_t maximum_qos;
	char reason_string[256];
	int has_reason_string;
	int has_server_keepalive;
	uint16_t server_keepalive;
	int user_count;
	char user_key[MR_MAX_USER_PROPS][128];
	char user_value[MR_MAX_USER_PROPS][128];
} mr_props;
/* Parses a property block (varint length + properties) at data[0..]; returns
 * the number of bytes consumed or -1 if malformed. */
int mr_parse_props(const uint8_t *data, size_t len, mr_props *out);

/* Decoded PUBLISH. topic/payload point into the packet (topic is copied). */
typedef struct mr_publish {
	char topic[512];
	int qos, retain, dup;
	uint16_t pid;
	const uint8_t *payload;
	size_t payload_len;
	mr_props props;
} mr_publish;
int mr_parse_publish(const mr_packet *p, int proto, mr_publish *out); /* 0 ok, -1 bad */

/* CONNACK: session_present and return/reason code; props for v5. */
int mr_parse_connack(const mr_packet *p, int proto, int *session_present, int *rc, mr_props *props);
/* PUBACK/PUBREC/PUBREL/PUBCOMP/UNSUBACK head: pid and (v5) reason (0 if absent). */
int mr_parse_ack(const mr_packet *p, int proto, uint16_t *pid, int *reason);
/* SUBACK: pid and up to max codes; returns the number of codes or -1. */
int mr_parse_suback(const mr_packet *p, int proto, uint16_t *pid, int *codes, int max);
/* DISCONNECT (v5): reason (0 if absent). */
int mr_parse_disconnect(const mr_packet *p, int *reason);

/* Convenience: dial, CONNECT with the options and read CONNACK. Returns the
 * fd (rc 0) or -1; *rc gets the CONNACK code (or -1 when none came). */
int mr_open(int port, const mr_connect_opts *o, int *rc);
/* Simple v3.1.1/v5 clean client: returns fd or -1. */
int mr_open_simple(int port, int proto, const char *client_id);
/* Sends SUBSCRIBE and reads the SUBACK; returns the granted code or -1. */
int mr_subscribe_sync(int fd, int proto, uint16_t pid, const char *filter, int qos);
/* Sends a PUBLISH; for QoS 1 waits for the PUBACK and returns its reason code
 * (0 for 3.1.1); QoS 0 returns 0; -1 on error. */
int mr_publish_sync(int fd, int proto, const char *topic, const char *payload, int qos, int retain,
                    uint16_t pid, const mr_buf *props);
/* Reads packets until a PUBLISH arrives (PUBACKs it when QoS 1, and answers
 * nothing else); returns 1, 0 on timeout, -1 on close. The packet is kept in
 * *pkt (caller frees) and decoded into *pub. */
int mr_next_publish(int fd, int proto, mr_packet *pkt, mr_publish *pub, int timeout_ms);
/* PINGREQ and wait for PINGRESP, skipping (and counting into *skipped, may be
 * NULL) other packets. Returns 1 on PINGRESP. */
int mr_ping(int fd, int timeout_ms, int *skipped);

/* Monotonic milliseconds. */
int64_t mr_now_ms(void);
void mr_sleep_ms(int ms);

#endif
