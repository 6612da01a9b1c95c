/*
 * The router: a trie of topic filters whose levels have hashed children and
 * separate '+' and '#' children. It holds subscriptions (routes) and shared
 * subscription groups. Thread-safe: add/remove take a write lock, match holds
 * a read lock while it calls the visitor. Empty nodes are freed on remove.
 */
#ifndef MQBI_TRIE_H
#define MQBI_TRIE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mqttbroker.h"

/* One subscription as the router stores it. */
typedef struct mqbi_route {
	void *owner;     /* the subscribing session (opaque here); identity of the route */
	uint32_t sub_id; /* MQTT 5 subscription identifier, 0 = none */
	uint8_t options; /* subscription options byte: qos | nl << 2 | rap << 3 | rh << 4 */
} mqbi_route;

/* A shared-subscription group at one filter. The visitor picks a member;
 * `cursor` is free for the caller's strategy (e.g. round robin; take it modulo
 * count, as removals reorder members and may leave it past the end). */
typedef struct mqbi_share_group {
	const char *name;
	size_t name_len;
	mqbi_route *members;
	uint32_t count;
	_Atomic uint32_t cursor;
} mqbi_share_group;

typedef struct mqbi_trie_visitor {
	/* One call per matching non-shared route. */
	void (*route)(void *user, const mqbi_route *r);
	/* One call per matching shared group (count >= 1). */
	void (*group)(void *user, mqbi_share_group *g);
	void *user;
} mqbi_trie_visitor;

typedef struct mqbi_trie mqbi_trie;

mqb_err mqbi_trie_create(const mqb_allocator *a, mqbi_trie **out);
/* Frees every node. Owners are not touched. */
void mqbi_trie_destroy(mqbi_trie *t);

/* Adds a route for (filter, group, r->owner) or replaces its sub_id/options if
 * one exists; *replaced tells which (may be NULL). glen == 0: not shared.
 * The filter must be valid (mqbi_topic_filter_valid). */
mqb_err mqbi_trie_add(mqbi_trie *t, const char *filter, size_t flen, const char *group, size_t glen,
                      const mqbi_route *r, bool *replaced);

/* Removes the route of `owner` for (filter, group). MQB_ERR_NOTFOUND if none. */
mqb_err mqbi_trie_remove(mqbi_trie *t, const char *filter, size_t flen, const char *group,
                         size_t glen, const void *owner);

/* Calls the visitor for every route and group whose filter matches `topic`.
 * The visitor must not call into the trie. */
void mqbi_trie_match(mqbi_trie *t, const char *topic, size_t tlen, const mqbi_trie_visitor *v);

/* Number of routes (shared members included) and of distinct filters (a
 * filter counts once however many routes and groups it has). */
size_t mqbi_trie_route_count(mqbi_trie *t);
size_t mqbi_trie_filter_count(mqbi_trie *t);

/* One call per route: `filter` is NUL-terminated and valid only during the
 * call; group is NULL (glen 0) for a non-shared route. */
typedef void (*mqbi_trie_walk_fn)(void *user, const char *filter, size_t flen, const char *group,
                                  size_t glen, const mqbi_route *r);

/* Calls fn for every route, shared members included (e.g. to list or persist
 * subscriptions), holding the read lock; fn must not call into the trie.
 * Returns MQB_ERR_NOMEM if the filter buffer cannot grow (the walk stops). */
mqb_err mqbi_trie_walk(mqbi_trie *t, mqbi_trie_walk_fn fn, void *user);

#endif
