/* MQTT Variable Byte Integer (MQTT 5 section 1.5.5). */
#include "codec_internal.h"

#define VARINT_MAX 268435455u

int mqbi_varint_decode(const uint8_t *buf, size_t len, uint32_t *value)
{
	if (len == 0)
		return 0;
	if (buf[0] < 0x80) {
		*value = buf[0];
		return 1;
	}
	uint32_t v = buf[0] & 0x7F;
	size_t max = len < 4 ? len : 4;
	for (size_t i = 1; i < max; i++) {
		uint8_t b = buf[i];
		v |= (uint32_t)(b & 0x7F) << (7 * i);
		if (b < 0x80) {
			/* [MQTT-1.5.5-1] the minimum number of bytes: a zero last
			 * byte means a shorter encoding existed. */
			if (b == 0)
				return -1;
			*value = v;
			return (int)i + 1;
		}
	}
	return len < 4 ? 0 : -1;
}

int mqbi_varint_encode(uint8_t *buf, uint32_t value)
{
	if (value > VARINT_MAX)
		return 0;
	int n = 0;
	do {
		uint8_t b = value & 0x7F;
		value >>= 7;
		if (value)
			b |= 0x80;
		buf[n++] = b;
	} while (value);
	return n;
}

int mqbi_varint_size(uint32_t value)
{
	if (value < 128u)
		return 1;
	if (value < 16384u)
		return 2;
	if (value < 2097152u)
		return 3;
	if (value <= VARINT_MAX)
		return 4;
	return 0;
}
