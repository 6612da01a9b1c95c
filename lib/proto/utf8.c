/* UTF-8 validation as MQTT requires (MQTT 5 section 1.5.4). */
#include "codec_internal.h"

#define ONES  0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

/* Nonzero if some byte of v is zero. */
static inline uint64_t has_zero(uint64_t v)
{
	return (v - ONES) & ~v & HIGHS;
}

/* Validates one multi-byte sequence starting at s[i] (s[i] >= 0x80);
 * returns its length or 0 when invalid. */
static inline size_t seq_len(const uint8_t *s, size_t i, size_t len)
{
	uint8_t c = s[i];
	size_t left = len - i;
	if (c < 0xC2) /* stray continuation byte, or overlong C0/C1 lead */
		return 0;
	if (c < 0xE0) {
		if (left < 2 || (s[i + 1] & 0xC0) != 0x80)
			return 0;
		return 2;
	}
	if (c < 0xF0) {
		if (left < 3 || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80)
			return 0;
		if (c == 0xE0 && s[i + 1] < 0xA0) /* overlong */
			return 0;
		if (c == 0xED && s[i + 1] >= 0xA0) /* U+D800..U+DFFF */
			return 0;
		return 3;
	}
	if (c < 0xF5) {
		if (left < 4 || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80 ||
		    (s[i + 3] & 0xC0) != 0x80)
			return 0;
		if (c == 0xF0 && s[i + 1] < 0x90) /* overlong */
			return 0;
		if (c == 0xF4 && s[i + 1] >= 0x90) /* above U+10FFFF */
			return 0;
		return 4;
	}
	return 0;
}

int mqbi_utf8_scan(const uint8_t *s, size_t len, bool topic_name)
{
	size_t i = 0;
	while (i < len) {
		/* Fast path: 8 ASCII bytes with no NUL (and no wildcard). */
		if (len - i >= 8) {
			uint64_t w;
			memcpy(&w, s + i, 8);
			uint64_t bad = (w & HIGHS) | has_zero(w);
			if (topic_name)
				bad |= has_zero(w ^ (0x23 * ONES)) | has_zero(w ^ (0x2B * ONES));
			if (!bad) {
				i += 8;
				continue;
			}
		}
		uint8_t c = s[i];
		if (c < 0x80) {
			if (c == 0)
				return UTF8_BAD;
			if (topic_name && (c == '+' || c == '#'))
				return UTF8_WILDCARD;
			i++;
			continue;
		}
		size_t n = seq_len(s, i, len);
		if (!n)
			return UTF8_BAD;
		i += n;
	}
	return UTF8_OK;
}

bool mqbi_utf8_valid(const uint8_t *buf, size_t len)
{
	return mqbi_utf8_scan(buf, len, false) == UTF8_OK;
}
