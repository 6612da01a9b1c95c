/* Private helpers shared by the codec source files. */
#ifndef MQBI_CODEC_INTERNAL_H
#define MQBI_CODEC_INTERNAL_H

#include "codec.h"

#include <string.h>

/* Property value types (MQTT 5 section 2.2.2.2). */
enum {
	PT_NONE = 0,
	PT_BYTE,
	PT_U16,
	PT_U32,
	PT_VARINT,
	PT_STR,
	PT_BIN,
	PT_PAIR,
};

#define MQBI_PROP_MAX_ID 0x2A

/* One entry per property id: its value type and the packet kinds (bit = ptype,
 * bit MQBI_WILL_PROPS = will properties) it may appear in. */
typedef struct mqbi_prop_info {
	uint8_t type;
	uint32_t kinds;
} mqbi_prop_info;

extern const mqbi_prop_info mqbi_prop_table[MQBI_PROP_MAX_ID + 1];

/* Result of mqbi_utf8_scan(). */
enum { UTF8_OK = 0, UTF8_BAD, UTF8_WILDCARD };

/* Validates UTF-8 like mqbi_utf8_valid(); when `topic_name` is set, also
 * reports '+' or '#' (UTF8_WILDCARD) in the same pass. */
int mqbi_utf8_scan(const uint8_t *buf, size_t len, bool topic_name);

/* Decodes a property block body (without its length prefix) occupying
 * [p, end) for packet kind `kind` into *out. Returns 0 or a reason code.
 * `multi_sub_id` allows repeated Subscription Identifiers (server->client
 * PUBLISH). */
uint8_t mqbi_props_decode(const uint8_t *p, const uint8_t *end, int kind, bool multi_sub_id,
                          mqbi_props *out);

/* Size of the property block of `p` (without length prefix), or UINT32_MAX
 * when a field cannot be encoded. */
uint32_t mqbi_props_size_checked(const mqbi_props *p);

/* Writes the property block (length prefix included) into buf, which has room
 * for varint(size) + size bytes; returns bytes written. */
size_t mqbi_props_write(uint8_t *buf, const mqbi_props *p, uint32_t size);

/* Zeroes a struct about to be filled by the decoder. Done in 64-byte pieces:
 * GCC expands one large memset into `rep stos`, whose startup cost was a
 * third of the time to decode a small PUBLISH. */
static inline void zero_struct(void *p, size_t n)
{
	uint8_t *b = p;
	for (; n >= 64; n -= 64, b += 64)
		memset(b, 0, 64);
	memset(b, 0, n);
}

static inline uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

static inline uint32_t rd32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline uint8_t *wr16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
	return p + 2;
}

static inline uint8_t *wr32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
	return p + 4;
}

/* Reads a length-prefixed string/binary at *pp bounded by end. */
static inline bool read_bytes(const uint8_t **pp, const uint8_t *end, mqbi_bytes *out)
{
	const uint8_t *p = *pp;
	if (end - p < 2)
		return false;
	uint32_t n = rd16(p);
	p += 2;
	if ((size_t)(end - p) < n)
		return false;
	out->ptr = p;
	out->len = n;
	*pp = p + n;
	return true;
}

/* Writes a length-prefixed string or binary (caller checked len <= 65535). */
static inline uint8_t *wrbytes(uint8_t *p, mqbi_bytes b)
{
	p = wr16(p, (uint16_t)b.len);
	if (b.len)
		memcpy(p, b.ptr, b.len);
	return p + b.len;
}

#endif
