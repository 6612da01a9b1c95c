/*
 * The retained-message tree: one node per topic level; children are an
 * mqbi_kids set (kids.h: an only child in the node, a few in a small array,
 * more in a strmap keyed by the child's name). A node that holds a value also
 * holds its full topic for the callbacks: a node created for the value itself
 * stores the topic inline (its level name is the tail of it), an older inner
 * node that later gets a value copies it aside. Storing every node's full prefix would
 * cost O(levels x length) per topic.
 *
 * Walks use parent pointers instead of recursion, so a 32,000-level topic
 * cannot exhaust the stack and no walk allocates.
 */
#include "retain.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kids.h"
#include "topic.h"
#include "util/alloc.h"

typedef void (*retain_fn)(void *user, const char *topic, size_t tlen, void *value);

struct rnode {
	struct rnode *parent;
	mqbi_kids kids; /* children (struct rnode *) */
	void *value;
	char *topic;    /* full topic (NUL-terminated): inline, or a copy while value is set */
	uint32_t nkids; /* count word of kids */
	uint32_t tlen;
	uint32_t len : 30;
	uint32_t topic_inline : 1;
	char data[]; /* the full topic if topic_inline, else the level name */
};

struct mqbi_retain {
	const mqb_allocator *a;
	pthread_rwlock_t lock;
	struct rnode *root;
	size_t count;
};

static inline const char *rname(const struct rnode *n)
{
	return n->topic_inline ? n->data + n->tlen - n->len : n->data;
}

static size_t level_end(const char *s, size_t pos, size_t len)
{
	const char *p = memchr(s + pos, '/', len - pos);
	return p ? (size_t)(p - s) : len;
}

static size_t level_start(const char *s, size_t end)
{
	while (end > 0 && s[end - 1] != '/')
		end--;
	return end;
}

static inline bool is_level(const char *s, size_t len, char c)
{
	return len == 1 && s[0] == c;
}

/* ---- children ---------------------------------------------------------- */

static inline const char *kid_name(const void *kid, size_t *len)
{
	const struct rnode *c = kid;
	*len = c->len;
	return rname(c);
}

static inline struct rnode *child_get(const struct rnode *n, const char *s, size_t len)
{
	return mqbi_kids_get(&n->kids, n->nkids, s, len, kid_name);
}

static inline struct rnode *kid_next(const struct rnode *n, size_t *pos)
{
	return mqbi_kids_next(&n->kids, n->nkids, pos);
}

/* The next child from *pos on, skipping "$..." levels if asked. */
static struct rnode *kid_next_visible(const struct rnode *n, size_t *pos, bool skip_dollar)
{
	struct rnode *c;
	while ((c = kid_next(n, pos))) {
		if (!skip_dollar || !c->len || rname(c)[0] != '$')
			return c;
	}
	return NULL;
}

static struct rnode *first_kid(const struct rnode *n, bool skip_dollar)
{
	size_t pos = 0;
	return kid_next_visible(n, &pos, skip_dollar);
}

static struct rnode *next_kid(const struct rnode *p, const struct rnode *c, bool skip_dollar)
{
	size_t pos = mqbi_kids_pos_after(&p->kids, p->nkids, c, kid_name);
	return kid_next_visible(p, &pos, skip_dollar);
}

/* ---- nodes ---------------------------------------------------------------- */

/* A node for level `name`; with `full`, the node of that whole topic, which
 * then stores it inline. */
static struct rnode *node_new(const mqb_allocator *a, struct rnode *parent, const char *name,
                              size_t len, const char *full, size_t flen)
{
	size_t size = offsetof(struct rnode, data) + (full ? flen + 1 : len);
	struct rnode *n = mqbi_malloc(a, size);
	if (!n)
		return NULL;
	memset(n, 0, offsetof(struct rnode, data));
	n->parent = parent;
	n->len = (uint32_t)len;
	if (full) {
		memcpy(n->data, full, flen);
		n->data[flen] = '\0';
		n->topic = n->data;
		n->tlen = (uint32_t)flen;
		n->topic_inline = 1;
	} else if (len) {
		memcpy(n->data, name, len);
	}
	return n;
}

static void node_free(const mqb_allocator *a, struct rnode *n)
{
	mqbi_kids_free(a, &n->kids, n->nkids);
	if (!n->topic_inline)
		mqbi_free(a, n->topic);
	mqbi_free(a, n);
}

static void prune(mqbi_retain *r, struct rnode *n)
{
	while (n != r->root && !n->value && !n->nkids) {
		struct rnode *p = n->parent;
		mqbi_kids_del(r->a, &p->kids, &p->nkids, n, kid_name);
		node_free(r->a, n);
		n = p;
	}
}

static struct rnode *path_find(const mqbi_retain *r, const char *t, size_t len)
{
	struct rnode *n = r->root;
	for (size_t pos = 0; n && pos <= len;) {
		size_t end = level_end(t, pos, len);
		n = child_get(n, t + pos, end - pos);
		pos = end + 1;
	}
	return n;
}

/* ---- public API --------------------------------------------------------- */

mqb_err mqbi_retain_create(const mqb_allocator *a, mqbi_retain **out)
{
	*out = NULL;
	if (!a)
		a = &mqbi_default_allocator;
	mqbi_retain *r = mqbi_calloc(a, sizeof(*r));
	if (!r)
		return MQB_ERR_NOMEM;
	r->a = a;
	r->root = node_new(a, NULL, NULL, 0, NULL, 0);
	if (!r->root) {
		mqbi_free(a, r);
		return MQB_ERR_NOMEM;
	}
	pthread_rwlockattr_t attr;
	int rc = pthread_rwlockattr_init(&attr);
	if (!rc) {
#ifdef __GLIBC__
		/* Subscribers read constantly; do not let them starve publishers. */
		pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
#endif
		rc = pthread_rwlock_init(&r->lock, &attr);
		pthread_rwlockattr_destroy(&attr);
	}
	if (rc) {
		mqbi_free(a, r->root);
		mqbi_free(a, r);
		return MQB_ERR_NOMEM;
	}
	*out = r;
	return MQB_OK;
}

void mqbi_retain_destroy(mqbi_retain *r, void (*release)(void *value))
{
	if (!r)
		return;
	/* Breadth first, reusing `parent` as the queue link: no recursion. */
	struct rnode *head = r->root, *tail = head, *c;
	head->parent = NULL;
	while (head) {
		struct rnode *n = head;
		size_t pos = 0;
		while ((c = kid_next(n, &pos))) {
			c->parent = NULL;
			tail->parent = c;
			tail = c;
		}
		head = n->parent;
		if (n->value && release)
			release(n->value);
		node_free(r->a, n);
	}
	pthread_rwlock_destroy(&r->lock);
	mqbi_free(r->a, r);
}

static mqb_err retain_delete(mqbi_retain *r, const char *topic, size_t len, void **old)
{
	struct rnode *n = path_find(r, topic, len);
	if (!n || !n->value)
		return MQB_OK;
	*old = n->value;
	n->value = NULL;
	if (!n->topic_inline) {
		mqbi_free(r->a, n->topic);
		n->topic = NULL;
		n->tlen = 0;
	}
	r->count--;
	prune(r, n);
	return MQB_OK;
}

static mqb_err retain_store(mqbi_retain *r, const char *topic, size_t len, void *value, void **old)
{
	struct rnode *n = r->root;
	for (size_t pos = 0; pos <= len;) {
		size_t end = level_end(topic, pos, len);
		const char *s = topic + pos;
		size_t l = end - pos;
		pos = end + 1;
		struct rnode *c = child_get(n, s, l);
		if (c) {
			n = c;
			continue;
		}
		c = node_new(r->a, n, s, l, pos > len ? topic : NULL, len);
		if (!c)
			goto fail;
		if (mqbi_kids_add(r->a, &n->kids, &n->nkids, c, kid_name) != MQB_OK) {
			mqbi_free(r->a, c);
			goto fail;
		}
		n = c;
	}
	if (!n->topic) {
		n->topic = mqbi_strndup(r->a, topic, len);
		if (!n->topic)
			goto fail;
		n->tlen = (uint32_t)len;
	}
	*old = n->value;
	n->value = value;
	r->count += !*old;
	return MQB_OK;
fail:
	prune(r, n);
	return MQB_ERR_NOMEM;
}

mqb_err mqbi_retain_set(mqbi_retain *r, const char *topic, size_t len, void *value, void **old)
{
	void *prev = NULL;
	if (old)
		*old = NULL;
	if (!r || len >= (1u << 30) || !mqbi_topic_name_valid(topic, len))
		return MQB_ERR_INVAL;
	pthread_rwlock_wrlock(&r->lock);
	mqb_err err = value ? retain_store(r, topic, len, value, &prev)
	                    : retain_delete(r, topic, len, &prev);
	pthread_rwlock_unlock(&r->lock);
	if (old)
		*old = prev;
	return err;
}

static inline void emit(const struct rnode *n, retain_fn fn, void *user)
{
	if (n->value)
		fn(user, n->topic, n->tlen, n->value);
}

/* Every value in h's subtree, h included; skip_dollar leaves out h's "$..."
 * children (for '#' as the first filter level). */
static void emit_subtree(const struct rnode *h, bool skip_dollar, retain_fn fn, void *user)
{
	const struct rnode *n = h, *c;
	for (;;) {
		emit(n, fn, user);
		c = first_kid(n, skip_dollar && n == h);
		if (c) {
			n = c;
			continue;
		}
		for (;;) {
			if (n == h)
				return;
			const struct rnode *p = n->parent;
			c = next_kid(p, n, skip_dollar && p == h);
			if (c) {
				n = c;
				break;
			}
			n = p;
		}
	}
}

void mqbi_retain_match(mqbi_retain *r, const char *filter, size_t flen, retain_fn fn, void *user)
{
	if (!r || !fn || !mqbi_topic_filter_valid(filter, flen, 0))
		return;
	pthread_rwlock_rdlock(&r->lock);
	const struct rnode *root = r->root, *n = root;
	size_t pos = 0; /* start of the filter level below n; flen + 1 once all are used */
	for (;;) {
		const struct rnode *c = NULL;
		size_t end = 0;
		if (pos > flen) {
			emit(n, fn, user);
		} else {
			end = level_end(filter, pos, flen);
			const char *s = filter + pos;
			size_t l = end - pos;
			if (is_level(s, l, '#'))
				emit_subtree(n, n == root, fn, user); /* "a/#" also matches "a" */
			else if (is_level(s, l, '+'))
				c = first_kid(n, n == root);
			else
				c = child_get(n, s, l);
		}
		if (c) {
			n = c;
			pos = end + 1;
			continue;
		}
		/* Go up until a '+' level has siblings left to walk. */
		for (;;) {
			if (n == root)
				goto done;
			const struct rnode *p = n->parent;
			end = pos - 1;
			pos = level_start(filter, end);
			if (is_level(filter + pos, end - pos, '+')) {
				c = next_kid(p, n, p == root);
				if (c) {
					n = c;
					pos = end + 1;
					break;
				}
			}
			n = p;
		}
	}
done:
	pthread_rwlock_unlock(&r->lock);
}

void mqbi_retain_foreach(mqbi_retain *r, retain_fn fn, void *user)
{
	if (!r || !fn)
		return;
	pthread_rwlock_rdlock(&r->lock);
	emit_subtree(r->root, false, fn, user);
	pthread_rwlock_unlock(&r->lock);
}

size_t mqbi_retain_count(mqbi_retain *r)
{
	pthread_rwlock_rdlock(&r->lock);
	size_t n = r->count;
	pthread_rwlock_unlock(&r->lock);
	return n;
}
