/* Open addressing with linear probing. A slot is empty when key == NULL and
 * hash == 0, a tombstone when key == NULL and hash == 1, live otherwise. */
#include "strmap.h"

#include <string.h>

#include "alloc.h"

#define MIN_CAP   8
#define TOMBSTONE 1u

/* Stands in for a NULL key of length 0, so that live slots never have a NULL key. */
static const char empty_key[1] = "";

static inline bool slot_live(const mqbi_strmap_slot *s)
{
	return s->key != NULL;
}
static inline bool slot_empty(const mqbi_strmap_slot *s)
{
	return !s->key && s->hash != TOMBSTONE;
}

static inline uint64_t load64(const unsigned char *p)
{
	uint64_t w;
	memcpy(&w, p, sizeof(w));
	return w;
}

/* A multiply-xorshift mixer over 8-byte words (no 128-bit arithmetic, so it
 * stays fast on 32-bit targets), finished with the splitmix64 finalizer. */
uint32_t mqbi_strmap_hash(const char *key, size_t len)
{
	const unsigned char *p = (const unsigned char *)key;
	uint64_t h = 0x9e3779b97f4a7c15ull ^ ((uint64_t)len * 0xff51afd7ed558ccdull);

	while (len >= 8) {
		h = (h ^ load64(p)) * 0xbf58476d1ce4e5b9ull;
		h ^= h >> 29;
		p += 8;
		len -= 8;
	}
	if (len) {
		uint64_t w = 0;
		memcpy(&w, p, len);
		h = (h ^ w) * 0xbf58476d1ce4e5b9ull;
		h ^= h >> 29;
	}
	h ^= h >> 30;
	h *= 0xbf58476d1ce4e5b9ull;
	h ^= h >> 27;
	h *= 0x94d049bb133111ebull;
	h ^= h >> 31;
	return (uint32_t)(h ^ (h >> 32));
}

void mqbi_strmap_init(mqbi_strmap *m, const mqb_allocator *a)
{
	m->alloc = a;
	m->slots = NULL;
	m->cap = 0;
	m->count = 0;
	m->used = 0;
}

void mqbi_strmap_fini(mqbi_strmap *m)
{
	if (m->slots)
		mqbi_free(m->alloc, m->slots);
	m->slots = NULL;
	m->cap = m->count = m->used = 0;
}

/* Returns the slot holding key, or SIZE_MAX. */
static size_t find_slot(const mqbi_strmap *m, const char *key, size_t len, uint32_t h)
{
	if (!m->cap)
		return SIZE_MAX;
	size_t mask = m->cap - 1;
	for (size_t i = h & mask;; i = (i + 1) & mask) {
		const mqbi_strmap_slot *s = &m->slots[i];
		if (slot_empty(s))
			return SIZE_MAX;
		if (s->hash == h && s->key && s->len == len && memcmp(s->key, key, len) == 0)
			return i;
	}
}

void *mqbi_strmap_get(const mqbi_strmap *m, const char *key, size_t len)
{
	if (!key)
		key = empty_key;
	size_t i = find_slot(m, key, len, mqbi_strmap_hash(key, len));
	return i == SIZE_MAX ? NULL : m->slots[i].value;
}

bool mqbi_strmap_locate(const mqbi_strmap *m, const char *key, size_t len, size_t *pos)
{
	if (!key)
		key = empty_key;
	size_t i = find_slot(m, key, len, mqbi_strmap_hash(key, len));
	if (i == SIZE_MAX)
		return false;
	*pos = i + 1;
	return true;
}

/* Rehashes into `cap` slots; tombstones disappear. */
static mqb_err rehash(mqbi_strmap *m, size_t cap)
{
	mqbi_strmap_slot *slots = mqbi_calloc(m->alloc, cap * sizeof(*slots));
	if (!slots)
		return MQB_ERR_NOMEM;
	size_t mask = cap - 1;
	for (size_t i = 0; i < m->cap; i++) {
		const mqbi_strmap_slot *s = &m->slots[i];
		if (!slot_live(s))
			continue;
		size_t j = s->hash & mask;
		while (slots[j].key)
			j = (j + 1) & mask;
		slots[j] = *s;
	}
	if (m->slots)
		mqbi_free(m->alloc, m->slots);
	m->slots = slots;
	m->cap = (uint32_t)cap;
	m->used = m->count;
	return MQB_OK;
}

/* The capacity that holds n entries at no more than half load. */
static size_t cap_for(size_t n)
{
	size_t cap = MIN_CAP;
	while (n * 2 > cap)
		cap *= 2;
	return cap;
}

mqb_err mqbi_strmap_put(mqbi_strmap *m, const char *key, size_t len, void *value)
{
	if (!key)
		key = empty_key;
	if (len > UINT32_MAX)
		return MQB_ERR_INVAL;
	uint32_t h = mqbi_strmap_hash(key, len);
	size_t i = find_slot(m, key, len, h);
	if (i != SIZE_MAX) {
		m->slots[i].key = key;
		m->slots[i].value = value;
		return MQB_OK;
	}
	if (m->count >= UINT32_MAX / 4)
		return MQB_ERR_RANGE;
	/* Grow (or purge tombstones, or shrink) past 70% of slots in use. */
	if (((uint64_t)m->used + 1) * 10 > (uint64_t)m->cap * 7) {
		mqb_err err = rehash(m, cap_for(m->count + 1));
		if (err)
			return err;
	}
	size_t mask = m->cap - 1;
	for (i = h & mask; slot_live(&m->slots[i]); i = (i + 1) & mask)
		;
	if (slot_empty(&m->slots[i]))
		m->used++;
	m->slots[i] = (mqbi_strmap_slot){key, (uint32_t)len, h, value};
	m->count++;
	return MQB_OK;
}

void *mqbi_strmap_remove(mqbi_strmap *m, const char *key, size_t len)
{
	if (!key)
		key = empty_key;
	size_t i = find_slot(m, key, len, mqbi_strmap_hash(key, len));
	if (i == SIZE_MAX)
		return NULL;
	void *value = m->slots[i].value;
	m->count--;
	if (!m->count) {
		/* Iteration stays safe: every position is now past the end. */
		mqbi_strmap_fini(m);
		return value;
	}
	size_t mask = m->cap - 1;
	m->slots[i] = (mqbi_strmap_slot){NULL, 0, TOMBSTONE, NULL};
	/* A tombstone followed by an empty slot ends no probe chain: clear it and
	 * the tombstones before it. Only slots at or before i change, so an
	 * iteration that just returned slot i is not disturbed. */
	if (slot_empty(&m->slots[(i + 1) & mask])) {
		while (m->slots[i].hash == TOMBSTONE && !m->slots[i].key) {
			m->slots[i].hash = 0;
			m->used--;
			i = (i - 1) & mask;
		}
	}
	return value;
}

void mqbi_strmap_shrink(mqbi_strmap *m)
{
	if (m->cap > MIN_CAP && (uint64_t)m->count * 8 < m->cap)
		(void)rehash(m, cap_for(m->count)); /* on failure the map simply stays large */
}

bool mqbi_strmap_next(const mqbi_strmap *m, size_t *pos, const char **key, size_t *len,
                      void **value)
{
	for (size_t i = *pos; i < m->cap; i++) {
		const mqbi_strmap_slot *s = &m->slots[i];
		if (!slot_live(s))
			continue;
		if (key)
			*key = s->key;
		if (len)
			*len = s->len;
		if (value)
			*value = s->value;
		*pos = i + 1;
		return true;
	}
	return false;
}
