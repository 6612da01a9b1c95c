/*
 * The retained-message tree: one node per topic level; an only child lives in
 * the node, a few in a small array, more than KIDS_ARRAY_MAX in a strmap
 * keyed by the child's name. A node that holds a value also holds its full
 * topic for the callbacks: a node created for the value itself stores the
 * topic inline (its level name is the tail of it), an older inner node that
 * later gets a value copies it aside. Storing every node's full prefix would
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

#include "topic.h"
#include "util/alloc.h"
#include "util/strmap.h"

#define KIDS_ARRAY_MAX 8
#define KIDS_ARRAY_MIN 4

typedef void (*retain_fn)(void *user, const char *topic, size_t tlen, void *value);

struct rnode {
	struct rnode *parent;
	union {
		struct rnode *one;  /* nkids == 1 */
		struct rnode **arr; /* 2 <= nkids <= KIDS_ARRAY_MAX */
		mqbi_strmap *map;   /* kids_map */
	} kids;
	void *value;
	char *topic; /* full topic (NUL-terminated): inline, or a copy while value is set */
	uint32_t nkids;
	uint32_t tlen;
	uint32_t len : 30;
	uint32_t topic_inline : 1;
	uint32_t kids_map : 1;
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

static inline bool is_pow2_or_zero(size_t n)
{
	return (n & (n - 1)) == 0;
}

static size_t pow2_ceil(size_t n)
{
	size_t c = 1;
	while (c < n)
		c *= 2;
	return c;
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

/* ---- children -----------------------------------------------------------
 * One child is stored in the node itself (topics are mostly chains below
 * some level), 2..KIDS_ARRAY_MAX in an array, more in a strmap. */

static inline struct rnode *const *kid_array(const struct rnode *n)
{
	return n->nkids == 1 ? &n->kids.one : n->kids.arr;
}

static struct rnode *child_get(const struct rnode *n, const char *s, size_t len)
{
	if (n->kids_map)
		return mqbi_strmap_get(n->kids.map, s, len);
	struct rnode *const *k = kid_array(n);
	for (uint32_t i = 0; i < n->nkids; i++) {
		if (k[i]->len == len && memcmp(rname(k[i]), s, len) == 0)
			return k[i];
	}
	return NULL;
}

static mqb_err child_add(const mqb_allocator *a, struct rnode *n, struct rnode *c)
{
	if (n->kids_map) {
		mqb_err err = mqbi_strmap_put(n->kids.map, rname(c), c->len, c);
		if (err)
			return err;
	} else if (n->nkids == 0) {
		n->kids.one = c;
	} else if (n->nkids < KIDS_ARRAY_MAX) {
		/* Capacity is implied: the next power of two of the count. */
		struct rnode **k = n->nkids == 1 ? NULL : n->kids.arr;
		if (is_pow2_or_zero(n->nkids)) {
			k = mqbi_realloc(a, k, n->nkids * 2 * sizeof(*k));
			if (!k)
				return MQB_ERR_NOMEM;
		}
		if (n->nkids == 1)
			k[0] = n->kids.one;
		k[n->nkids] = c;
		n->kids.arr = k;
	} else {
		mqbi_strmap *m = mqbi_malloc(a, sizeof(*m));
		if (!m)
			return MQB_ERR_NOMEM;
		mqbi_strmap_init(m, a);
		struct rnode **k = n->kids.arr;
		mqb_err err = mqbi_strmap_put(m, rname(c), c->len, c);
		for (uint32_t i = 0; i < n->nkids && !err; i++)
			err = mqbi_strmap_put(m, rname(k[i]), k[i]->len, k[i]);
		if (err) {
			mqbi_strmap_fini(m);
			mqbi_free(a, m);
			return err;
		}
		mqbi_free(a, k);
		n->kids.map = m;
		n->kids_map = 1;
	}
	n->nkids++;
	return MQB_OK;
}

/* Never fails: shrinking steps are skipped without memory. */
static void child_del(const mqb_allocator *a, struct rnode *n, struct rnode *c)
{
	if (!n->kids_map) {
		if (n->nkids == 1) {
			n->kids.one = NULL;
		} else if (n->nkids == 2) {
			struct rnode **k = n->kids.arr;
			n->kids.one = k[0] == c ? k[1] : k[0];
			mqbi_free(a, k);
		} else {
			struct rnode **k = n->kids.arr;
			uint32_t i = 0, left = n->nkids - 1;
			while (k[i] != c)
				i++;
			k[i] = k[left];
			if (is_pow2_or_zero(left)) {
				void *p = mqbi_realloc(a, k, left * sizeof(*k));
				if (p)
					n->kids.arr = p;
			}
		}
		n->nkids--;
		return;
	}
	mqbi_strmap *m = n->kids.map;
	mqbi_strmap_remove(m, rname(c), c->len);
	n->nkids--;
	if (n->nkids > KIDS_ARRAY_MIN) {
		mqbi_strmap_shrink(m);
		return;
	}
	struct rnode **k = NULL, *one = NULL;
	size_t pos = 0;
	void *v;
	if (n->nkids == 1) {
		mqbi_strmap_next(m, &pos, NULL, NULL, &v);
		one = v;
	} else if (n->nkids > 1) {
		k = mqbi_malloc(a, pow2_ceil(n->nkids) * sizeof(*k));
		if (!k) {
			mqbi_strmap_shrink(m);
			return;
		}
		for (uint32_t i = 0; mqbi_strmap_next(m, &pos, NULL, NULL, &v); i++)
			k[i] = v;
	}
	mqbi_strmap_fini(m);
	mqbi_free(a, m);
	if (n->nkids == 1)
		n->kids.one = one;
	else
		n->kids.arr = k;
	n->kids_map = 0;
}

static void kids_free(const mqb_allocator *a, struct rnode *n)
{
	if (n->kids_map) {
		mqbi_strmap_fini(n->kids.map);
		mqbi_free(a, n->kids.map);
	} else if (n->nkids > 1) {
		mqbi_free(a, n->kids.arr);
	}
}

static struct rnode *kid_next(const struct rnode *n, size_t *pos)
{
	if (n->kids_map) {
		void *v;
		return mqbi_strmap_next(n->kids.map, pos, NULL, NULL, &v) ? v : NULL;
	}
	if (*pos >= n->nkids)
		return NULL;
	return kid_array(n)[(*pos)++];
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
	size_t pos = 0;
	if (p->kids_map) {
		mqbi_strmap_locate(p->kids.map, rname(c), c->len, &pos);
	} else {
		struct rnode *const *k = kid_array(p);
		while (k[pos] != c)
			pos++;
		pos++;
	}
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
	kids_free(a, n);
	if (!n->topic_inline)
		mqbi_free(a, n->topic);
	mqbi_free(a, n);
}

static void prune(mqbi_retain *r, struct rnode *n)
{
	while (n != r->root && !n->value && !n->nkids) {
		struct rnode *p = n->parent;
		child_del(r->a, p, n);
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
		if (child_add(r->a, n, c) != MQB_OK) {
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
