/*
 * The exact children of a tree node keyed by their level names, shared by the
 * subscription trie and the retained-message tree. An only child is stored
 * in the node itself (levels of a unique topic or filter form chains, so this
 * is the common case and saves a block and a cache miss), 2..KIDS_ARRAY_MAX
 * in an array whose capacity is implied by the count (the next power of two),
 * more in a strmap keyed by the child's own name; back to an array at
 * KIDS_ARRAY_MIN (hysteresis).
 *
 * A node holds two fields for this: an mqbi_kids (one pointer) and a 32-bit
 * count word (the number of children, | MQBI_KIDS_MAP while they are in a
 * strmap), kept apart so that the word packs with the node's other 32-bit
 * fields. Children are opaque: the caller passes a function giving a child's
 * name, which the inline lookups below let the compiler inline.
 */
#ifndef MQBI_KIDS_H
#define MQBI_KIDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "mqttbroker.h"
#include "util/strmap.h"

#define MQBI_KIDS_ARRAY_MAX 8          /* more children than this: a strmap */
#define MQBI_KIDS_ARRAY_MIN 4          /* back to an array at this many */
#define MQBI_KIDS_MAP       (1u << 31) /* count word flag: children in a strmap */

typedef union mqbi_kids {
	void *one;        /* count == 1 */
	void **arr;       /* 2 <= count <= MQBI_KIDS_ARRAY_MAX */
	mqbi_strmap *map; /* MQBI_KIDS_MAP */
} mqbi_kids;

/* A child's name (its level) and, in *len, the name's length. */
typedef const char *(*mqbi_kid_name_fn)(const void *kid, size_t *len);

static inline uint32_t mqbi_kids_count(uint32_t n)
{
	return n & ~MQBI_KIDS_MAP;
}

static inline void *const *mqbi_kids_array(const mqbi_kids *k, uint32_t n)
{
	return n == 1 ? &k->one : k->arr;
}

/* The child named s[0..len), or NULL. */
static inline void *mqbi_kids_get(const mqbi_kids *k, uint32_t n, const char *s, size_t len,
                                  mqbi_kid_name_fn name)
{
	if (n & MQBI_KIDS_MAP)
		return mqbi_strmap_get(k->map, s, len);
	void *const *a = mqbi_kids_array(k, n);
	for (uint32_t i = 0; i < n; i++) {
		size_t l;
		const char *nm = name(a[i], &l);
		if (l == len && memcmp(nm, s, len) == 0)
			return a[i];
	}
	return NULL;
}

/* The child at or after iteration position *pos (0 to start; then advanced),
 * or NULL at the end. */
static inline void *mqbi_kids_next(const mqbi_kids *k, uint32_t n, size_t *pos)
{
	if (n & MQBI_KIDS_MAP) {
		void *v;
		return mqbi_strmap_next(k->map, pos, NULL, NULL, &v) ? v : NULL;
	}
	if (*pos >= n)
		return NULL;
	return mqbi_kids_array(k, n)[(*pos)++];
}

/* The iteration position just after child c. */
static inline size_t mqbi_kids_pos_after(const mqbi_kids *k, uint32_t n, const void *c,
                                         mqbi_kid_name_fn name)
{
	size_t pos = 0;
	if (n & MQBI_KIDS_MAP) {
		size_t len;
		const char *nm = name(c, &len);
		mqbi_strmap_locate(k->map, nm, len, &pos);
		return pos;
	}
	void *const *a = mqbi_kids_array(k, n);
	while (a[pos] != c)
		pos++;
	return pos + 1;
}

/* Adds child c, whose name must not be taken. MQB_ERR_NOMEM leaves the set
 * unchanged. */
mqb_err mqbi_kids_add(const mqb_allocator *a, mqbi_kids *k, uint32_t *n, void *c,
                      mqbi_kid_name_fn name);

/* Removes child c, which must be present. Never fails: a shrinking step is
 * skipped without memory. */
void mqbi_kids_del(const mqb_allocator *a, mqbi_kids *k, uint32_t *n, const void *c,
                   mqbi_kid_name_fn name);

/* Frees the set's own memory (not the children). */
void mqbi_kids_free(const mqb_allocator *a, mqbi_kids *k, uint32_t n);

/* ---- arrays whose capacity is implied by their count ---------------------
 * The capacity of an array of n elements is the next power of two of n, so
 * its owner stores no capacity field. */

static inline bool mqbi_is_pow2_or_zero(size_t n)
{
	return (n & (n - 1)) == 0;
}

size_t mqbi_pow2_ceil(size_t n);

/* Makes room for element n + 1 of an array holding n. Returns the (maybe
 * moved) array, or NULL with arr untouched. */
void *mqbi_array_reserve(const mqb_allocator *a, void *arr, size_t n, size_t elem);

/* After a removal left n elements: frees or halves the array when its implied
 * capacity drops. A failed shrink keeps the larger block, which is harmless. */
void *mqbi_array_trim(const mqb_allocator *a, void *arr, size_t n, size_t elem);

#endif
