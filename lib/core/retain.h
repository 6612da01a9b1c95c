/*
 * Retained messages: a tree of topic names, so that a wildcard filter walks
 * only the matching branches. Values are opaque (the broker's refcounted
 * messages). Thread-safe: set takes a write lock, match a read lock held
 * while the callback runs.
 */
#ifndef MQBI_RETAIN_H
#define MQBI_RETAIN_H

#include <stddef.h>

#include "mqttbroker.h"

typedef struct mqbi_retain mqbi_retain;

mqb_err mqbi_retain_create(const mqb_allocator *a, mqbi_retain **out);
/* Frees the tree; `release` (may be NULL) is called for every stored value. */
void mqbi_retain_destroy(mqbi_retain *r, void (*release)(void *value));

/* Stores `value` under `topic` (value == NULL deletes). The value it replaces
 * is returned in *old (NULL if none) for the caller to release. Empty
 * branches are freed on delete. */
mqb_err mqbi_retain_set(mqbi_retain *r, const char *topic, size_t len, void *value, void **old);

/* Calls fn for every stored value whose topic matches `filter` (same '$' rule
 * as mqbi_topic_matches). The topic passed to fn is NUL-terminated and owned
 * by the store. fn must not call into the store. */
void mqbi_retain_match(mqbi_retain *r, const char *filter, size_t flen,
                       void (*fn)(void *user, const char *topic, size_t tlen, void *value),
                       void *user);

/* Calls fn for every stored value (e.g. to expire or persist). */
void mqbi_retain_foreach(mqbi_retain *r,
                         void (*fn)(void *user, const char *topic, size_t tlen, void *value),
                         void *user);

size_t mqbi_retain_count(mqbi_retain *r);

#endif
