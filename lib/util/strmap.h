/* A hash map from byte-string keys to pointers (open addressing). The map
 * does not copy keys: a key must stay valid while its entry is present, which
 * is natural when the key lives inside the value. Not thread-safe. */
#ifndef MQBI_STRMAP_H
#define MQBI_STRMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mqttbroker.h"

typedef struct mqbi_strmap_slot {
	const char *key;
	uint32_t len;
	uint32_t hash;
	void *value;
} mqbi_strmap_slot;

typedef struct mqbi_strmap {
	const mqb_allocator *alloc;
	mqbi_strmap_slot *slots;
	uint32_t cap;   /* a power of two, or 0 */
	uint32_t count; /* live entries */
	uint32_t used;  /* live entries + tombstones */
} mqbi_strmap;

void mqbi_strmap_init(mqbi_strmap *m, const mqb_allocator *a);
void mqbi_strmap_fini(mqbi_strmap *m);
uint32_t mqbi_strmap_hash(const char *key, size_t len);
void *mqbi_strmap_get(const mqbi_strmap *m, const char *key, size_t len);
/* Inserts or replaces. MQB_ERR_NOMEM leaves the map unchanged. */
mqb_err mqbi_strmap_put(mqbi_strmap *m, const char *key, size_t len, void *value);
/* Removes and returns the value, or NULL if absent. */
void *mqbi_strmap_remove(mqbi_strmap *m, const char *key, size_t len);
static inline size_t mqbi_strmap_count(const mqbi_strmap *m)
{
	return m->count;
}
/* Iteration: *pos starts at 0; returns false at the end. Removing the entry
 * just returned is allowed during iteration; inserting is not. */
bool mqbi_strmap_next(const mqbi_strmap *m, size_t *pos, const char **key, size_t *len,
                      void **value);
/* Sets *pos to the iteration position just after key's entry, so that
 * mqbi_strmap_next() continues with the entries that follow it. Returns false
 * if key is absent. */
bool mqbi_strmap_locate(const mqbi_strmap *m, const char *key, size_t len, size_t *pos);
/* Gives memory back after many removals (rehashes when under 1/8 full). Never
 * fails; must not be called during an iteration. */
void mqbi_strmap_shrink(mqbi_strmap *m);

#endif
