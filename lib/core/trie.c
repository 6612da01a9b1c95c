/*
 * The subscription trie. Each node is one filter level. Exact children are an
 * mqbi_kids set (kids.h: an only child inline, a few in a small array, more in
 * a strmap keyed by the child's own name); '+' and '#' children have their own
 * pointers. Routes sit in an array whose capacity is implied by its count
 * (the next power of two), so a node carries no capacity fields; nodes with
 * many routes get an owner index so that add and remove stay O(1). Shared
 * groups and that index live in an optional extension, absent on almost
 * every node.
 *
 * Matching walks the trie without recursion or a stack, using parent pointers
 * and recomputing level offsets on the way up, so it never allocates and a
 * deep filter cannot exhaust the thread's stack.
 */
#include "trie.h"

#include <pthread.h>
#include <stddef.h>
#include <string.h>

#include "kids.h"
#include "topic.h"
#include "util/alloc.h"

#define RIDX_MIN  16 /* routes at which a node gets an owner index */
#define NOT_FOUND UINT32_MAX

struct tnode_ext {
	mqbi_share_group *groups;
	uint32_t ngroups;
	uint32_t ridx_cap; /* power of two; 0 without an index */
	uint32_t *ridx;    /* route index + 1 by owner hash, 0 = empty slot */
};

struct tnode {
	struct tnode *parent;
	struct tnode *plus;
	struct tnode *hash;
	mqbi_kids kids; /* exact children (struct tnode *) */
	/* A filter subscribed once (the common case) keeps its route in the
	 * node; more routes go to an array whose capacity the count implies. */
	union {
		mqbi_route one; /* nroutes == 1 */
		mqbi_route *arr;
	} r;
	struct tnode_ext *ext;
	uint32_t nkids; /* count word of kids */
	uint32_t nroutes;
	uint32_t len;
	char name[];
};

struct mqbi_trie {
	const mqb_allocator *a;
	pthread_rwlock_t lock;
	struct tnode *root;
	size_t routes;
	size_t filters;
};

/* ---- small helpers ------------------------------------------------------ */

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

static inline uint32_t ptr_hash(const void *p)
{
	uint64_t x = (uint64_t)(uintptr_t)p;
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	return (uint32_t)x;
}

/* ---- children ---------------------------------------------------------- */

static inline const char *kid_name(const void *kid, size_t *len)
{
	const struct tnode *c = kid;
	*len = c->len;
	return c->name;
}

static inline struct tnode *child_get(const struct tnode *n, const char *s, size_t len)
{
	return mqbi_kids_get(&n->kids, n->nkids, s, len, kid_name);
}

static inline struct tnode *kid_next(const struct tnode *n, size_t *pos)
{
	return mqbi_kids_next(&n->kids, n->nkids, pos);
}

/* Children in walk order: exact ones, then '+', then '#'. */
static struct tnode *first_child(const struct tnode *n)
{
	size_t pos = 0;
	struct tnode *c = kid_next(n, &pos);
	if (c)
		return c;
	return n->plus ? n->plus : n->hash;
}

static struct tnode *next_sibling(const struct tnode *p, const struct tnode *c)
{
	if (c == p->hash)
		return NULL;
	if (c == p->plus)
		return p->hash;
	size_t pos = mqbi_kids_pos_after(&p->kids, p->nkids, c, kid_name);
	struct tnode *k = kid_next(p, &pos);
	if (k)
		return k;
	return p->plus ? p->plus : p->hash;
}

/* ---- nodes ---------------------------------------------------------------- */

static struct tnode *node_new(const mqb_allocator *a, struct tnode *parent, const char *name,
                              size_t len)
{
	struct tnode *n = mqbi_malloc(a, offsetof(struct tnode, name) + len);
	if (!n)
		return NULL;
	memset(n, 0, offsetof(struct tnode, name));
	n->parent = parent;
	n->len = (uint32_t)len;
	if (len)
		memcpy(n->name, name, len);
	return n;
}

static void ext_free(const mqb_allocator *a, struct tnode_ext *x)
{
	for (uint32_t i = 0; i < x->ngroups; i++) {
		mqbi_free(a, (void *)x->groups[i].name);
		mqbi_free(a, x->groups[i].members);
	}
	mqbi_free(a, x->groups);
	mqbi_free(a, x->ridx);
	mqbi_free(a, x);
}

static void node_free(const mqb_allocator *a, struct tnode *n)
{
	mqbi_kids_free(a, &n->kids, n->nkids);
	if (n->nroutes > 1)
		mqbi_free(a, n->r.arr);
	if (n->ext)
		ext_free(a, n->ext);
	mqbi_free(a, n);
}

static struct tnode_ext *ext_get(const mqb_allocator *a, struct tnode *n)
{
	if (!n->ext)
		n->ext = mqbi_calloc(a, sizeof(*n->ext));
	return n->ext;
}

/* Drops the extension once it holds nothing. */
static void ext_release_if_empty(const mqb_allocator *a, struct tnode *n)
{
	struct tnode_ext *x = n->ext;
	if (x && !x->ngroups && !x->ridx) {
		ext_free(a, x);
		n->ext = NULL;
	}
}

static inline bool node_has_subs(const struct tnode *n)
{
	return n->nroutes || (n->ext && n->ext->ngroups);
}

static inline bool node_empty(const struct tnode *n)
{
	return !n->nroutes && !n->ext && !n->nkids && !n->plus && !n->hash;
}

/* Frees n and its ancestors while they hold nothing. */
static void prune(mqbi_trie *t, struct tnode *n)
{
	while (n != t->root && node_empty(n)) {
		struct tnode *p = n->parent;
		if (p->plus == n)
			p->plus = NULL;
		else if (p->hash == n)
			p->hash = NULL;
		else
			mqbi_kids_del(t->a, &p->kids, &p->nkids, n, kid_name);
		node_free(t->a, n);
		n = p;
	}
}

static struct tnode *step(const struct tnode *n, const char *s, size_t len)
{
	if (is_level(s, len, '+'))
		return n->plus;
	if (is_level(s, len, '#'))
		return n->hash;
	return child_get(n, s, len);
}

static struct tnode *path_find(const mqbi_trie *t, const char *f, size_t flen)
{
	struct tnode *n = t->root;
	for (size_t pos = 0; n && pos <= flen;) {
		size_t end = level_end(f, pos, flen);
		n = step(n, f + pos, end - pos);
		pos = end + 1;
	}
	return n;
}

/* Finds or creates the node of filter f. On failure nothing new remains. */
static mqb_err path_create(mqbi_trie *t, const char *f, size_t flen, struct tnode **out)
{
	struct tnode *n = t->root;
	for (size_t pos = 0; pos <= flen;) {
		size_t end = level_end(f, pos, flen);
		const char *s = f + pos;
		size_t len = end - pos;
		pos = end + 1;
		struct tnode *c = step(n, s, len);
		if (c) {
			n = c;
			continue;
		}
		c = node_new(t->a, n, s, len);
		if (!c)
			goto fail;
		if (is_level(s, len, '+')) {
			n->plus = c;
		} else if (is_level(s, len, '#')) {
			n->hash = c;
		} else if (mqbi_kids_add(t->a, &n->kids, &n->nkids, c, kid_name) != MQB_OK) {
			mqbi_free(t->a, c);
			goto fail;
		}
		n = c;
	}
	*out = n;
	return MQB_OK;
fail:
	prune(t, n);
	return MQB_ERR_NOMEM;
}

/* ---- routes and their owner index --------------------------------------- */

static inline mqbi_route *routes_of(const struct tnode *n)
{
	return n->nroutes == 1 ? (mqbi_route *)&n->r.one : n->r.arr;
}

/* The owner index exists only with many routes, so they are in the array. */

static uint32_t ridx_slot(const struct tnode *n, const void *owner)
{
	const struct tnode_ext *x = n->ext;
	uint32_t mask = x->ridx_cap - 1;
	for (uint32_t i = ptr_hash(owner) & mask;; i = (i + 1) & mask) {
		uint32_t e = x->ridx[i];
		if (!e)
			return NOT_FOUND;
		if (n->r.arr[e - 1].owner == owner)
			return i;
	}
}

static void ridx_put(struct tnode_ext *x, const void *owner, uint32_t idx)
{
	uint32_t mask = x->ridx_cap - 1;
	uint32_t i = ptr_hash(owner) & mask;
	while (x->ridx[i])
		i = (i + 1) & mask;
	x->ridx[i] = idx + 1;
}

/* Backward-shift deletion keeps probe chains intact without tombstones. */
static void ridx_del(struct tnode *n, uint32_t i)
{
	struct tnode_ext *x = n->ext;
	uint32_t mask = x->ridx_cap - 1;
	for (uint32_t j = i;;) {
		j = (j + 1) & mask;
		uint32_t e = x->ridx[j];
		if (!e)
			break;
		uint32_t home = ptr_hash(n->r.arr[e - 1].owner) & mask;
		bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
		if (stays)
			continue;
		x->ridx[i] = e;
		i = j;
	}
	x->ridx[i] = 0;
}

/* Indexes routes[0..count) at no more than half load. */
static mqb_err ridx_build(const mqb_allocator *a, struct tnode *n, uint32_t count)
{
	size_t cap = 32;
	while (cap < (size_t)count * 2)
		cap *= 2;
	if (cap > UINT32_MAX)
		return MQB_ERR_NOMEM;
	uint32_t *tab = mqbi_calloc(a, cap * sizeof(*tab));
	if (!tab)
		return MQB_ERR_NOMEM;
	struct tnode_ext *x = n->ext;
	mqbi_free(a, x->ridx);
	x->ridx = tab;
	x->ridx_cap = (uint32_t)cap;
	for (uint32_t i = 0; i < count; i++)
		ridx_put(x, n->r.arr[i].owner, i);
	return MQB_OK;
}

static uint32_t route_find(const struct tnode *n, const void *owner)
{
	if (n->ext && n->ext->ridx) {
		uint32_t s = ridx_slot(n, owner);
		return s == NOT_FOUND ? NOT_FOUND : n->ext->ridx[s] - 1;
	}
	const mqbi_route *rt = routes_of(n);
	for (uint32_t i = 0; i < n->nroutes; i++) {
		if (rt[i].owner == owner)
			return i;
	}
	return NOT_FOUND;
}

static mqb_err route_add(mqbi_trie *t, struct tnode *n, const mqbi_route *r, bool *replaced)
{
	uint32_t i = route_find(n, r->owner);
	if (i != NOT_FOUND) {
		mqbi_route *rt = routes_of(n);
		rt[i].sub_id = r->sub_id;
		rt[i].options = r->options;
		*replaced = true;
		return MQB_OK;
	}
	if (n->nroutes == UINT32_MAX - 1)
		return MQB_ERR_NOMEM;
	uint32_t count = n->nroutes + 1;
	if (count == 1) {
		n->r.one = *r;
	} else {
		mqbi_route *arr =
		        count == 2 ? mqbi_malloc(t->a, 2 * sizeof(*arr))
		                   : mqbi_array_reserve(t->a, n->r.arr, n->nroutes, sizeof(*arr));
		if (!arr)
			return MQB_ERR_NOMEM;
		if (count == 2)
			arr[0] = n->r.one;
		arr[count - 1] = *r;
		n->r.arr = arr;
	}
	struct tnode_ext *x = n->ext;
	if (count >= RIDX_MIN || (x && x->ridx)) {
		x = ext_get(t->a, n);
		if (!x)
			return MQB_ERR_NOMEM;
		if (!x->ridx || (size_t)count * 2 > x->ridx_cap) {
			if (ridx_build(t->a, n, count) != MQB_OK) {
				ext_release_if_empty(t->a, n);
				return MQB_ERR_NOMEM;
			}
		} else {
			ridx_put(x, r->owner, count - 1);
		}
	}
	n->nroutes = count;
	return MQB_OK;
}

static mqb_err route_del(mqbi_trie *t, struct tnode *n, const void *owner)
{
	uint32_t i = route_find(n, owner);
	if (i == NOT_FOUND)
		return MQB_ERR_NOTFOUND;
	uint32_t last = n->nroutes - 1;
	struct tnode_ext *x = n->ext;
	mqbi_route *rt = routes_of(n);
	if (x && x->ridx) {
		ridx_del(n, ridx_slot(n, owner));
		if (i != last)
			x->ridx[ridx_slot(n, rt[last].owner)] = i + 1;
	}
	rt[i] = rt[last];
	n->nroutes = last;
	if (x && x->ridx && last < RIDX_MIN / 2) {
		mqbi_free(t->a, x->ridx);
		x->ridx = NULL;
		x->ridx_cap = 0;
		ext_release_if_empty(t->a, n);
	}
	if (last == 1) {
		mqbi_route keep = rt[0];
		mqbi_free(t->a, rt);
		n->r.one = keep;
	} else if (last > 1) {
		n->r.arr = mqbi_array_trim(t->a, rt, last, sizeof(*rt));
	}
	return MQB_OK;
}

/* ---- shared groups ------------------------------------------------------ */

static mqbi_share_group *group_find(const struct tnode *n, const char *name, size_t len)
{
	if (!n->ext)
		return NULL;
	for (uint32_t i = 0; i < n->ext->ngroups; i++) {
		mqbi_share_group *g = &n->ext->groups[i];
		if (g->name_len == len && memcmp(g->name, name, len) == 0)
			return g;
	}
	return NULL;
}

static uint32_t member_find(const mqbi_share_group *g, const void *owner)
{
	for (uint32_t i = 0; i < g->count; i++) {
		if (g->members[i].owner == owner)
			return i;
	}
	return NOT_FOUND;
}

static mqb_err group_add(mqbi_trie *t, struct tnode *n, const char *gname, size_t glen,
                         const mqbi_route *r, bool *replaced)
{
	const mqb_allocator *a = t->a;
	mqbi_share_group *g = group_find(n, gname, glen);
	if (g) {
		uint32_t i = member_find(g, r->owner);
		if (i != NOT_FOUND) {
			g->members[i].sub_id = r->sub_id;
			g->members[i].options = r->options;
			*replaced = true;
			return MQB_OK;
		}
		mqbi_route *m = mqbi_array_reserve(a, g->members, g->count, sizeof(*m));
		if (!m)
			return MQB_ERR_NOMEM;
		g->members = m;
		m[g->count++] = *r;
		return MQB_OK;
	}
	struct tnode_ext *x = ext_get(a, n);
	if (!x)
		return MQB_ERR_NOMEM;
	mqbi_share_group *gs = mqbi_array_reserve(a, x->groups, x->ngroups, sizeof(*gs));
	if (!gs) {
		ext_release_if_empty(a, n);
		return MQB_ERR_NOMEM;
	}
	x->groups = gs;
	char *name = mqbi_strndup(a, gname, glen);
	mqbi_route *m = mqbi_malloc(a, sizeof(*m));
	if (!name || !m) {
		mqbi_free(a, name);
		mqbi_free(a, m);
		ext_release_if_empty(a, n);
		return MQB_ERR_NOMEM;
	}
	g = &gs[x->ngroups++];
	g->name = name;
	g->name_len = glen;
	g->members = m;
	g->count = 1;
	atomic_init(&g->cursor, 0);
	m[0] = *r;
	return MQB_OK;
}

static mqb_err group_del(mqbi_trie *t, struct tnode *n, const char *gname, size_t glen,
                         const void *owner)
{
	const mqb_allocator *a = t->a;
	mqbi_share_group *g = group_find(n, gname, glen);
	if (!g)
		return MQB_ERR_NOTFOUND;
	uint32_t i = member_find(g, owner);
	if (i == NOT_FOUND)
		return MQB_ERR_NOTFOUND;
	g->members[i] = g->members[--g->count];
	if (g->count) {
		g->members = mqbi_array_trim(a, g->members, g->count, sizeof(*g->members));
		return MQB_OK;
	}
	mqbi_free(a, (void *)g->name);
	mqbi_free(a, g->members);
	struct tnode_ext *x = n->ext;
	uint32_t last = --x->ngroups;
	if (g != &x->groups[last])
		memcpy(g, &x->groups[last], sizeof(*g));
	x->groups = mqbi_array_trim(a, x->groups, last, sizeof(*x->groups));
	ext_release_if_empty(a, n);
	return MQB_OK;
}

/* ---- public API --------------------------------------------------------- */

mqb_err mqbi_trie_create(const mqb_allocator *a, mqbi_trie **out)
{
	*out = NULL;
	if (!a)
		a = &mqbi_default_allocator;
	mqbi_trie *t = mqbi_calloc(a, sizeof(*t));
	if (!t)
		return MQB_ERR_NOMEM;
	t->a = a;
	t->root = node_new(a, NULL, NULL, 0);
	if (!t->root) {
		mqbi_free(a, t);
		return MQB_ERR_NOMEM;
	}
	pthread_rwlockattr_t attr;
	int rc = pthread_rwlockattr_init(&attr);
	if (!rc) {
#ifdef __GLIBC__
		/* Publishers match constantly; do not let them starve (un)subscribes. */
		pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
#endif
		rc = pthread_rwlock_init(&t->lock, &attr);
		pthread_rwlockattr_destroy(&attr);
	}
	if (rc) {
		mqbi_free(a, t->root);
		mqbi_free(a, t);
		return MQB_ERR_NOMEM;
	}
	*out = t;
	return MQB_OK;
}

void mqbi_trie_destroy(mqbi_trie *t)
{
	if (!t)
		return;
	/* Breadth first, reusing `parent` as the queue link: no recursion. */
	struct tnode *head = t->root, *tail = head;
	head->parent = NULL;
	while (head) {
		struct tnode *n = head, *c;
		size_t pos = 0;
		while ((c = kid_next(n, &pos))) {
			c->parent = NULL;
			tail->parent = c;
			tail = c;
		}
		struct tnode *wild[2] = {n->plus, n->hash};
		for (int i = 0; i < 2; i++) {
			if (!wild[i])
				continue;
			wild[i]->parent = NULL;
			tail->parent = wild[i];
			tail = wild[i];
		}
		head = n->parent;
		node_free(t->a, n);
	}
	pthread_rwlock_destroy(&t->lock);
	mqbi_free(t->a, t);
}

mqb_err mqbi_trie_add(mqbi_trie *t, const char *filter, size_t flen, const char *group, size_t glen,
                      const mqbi_route *r, bool *replaced)
{
	if (replaced)
		*replaced = false;
	if (!t || !filter || !r || flen > INT32_MAX || (glen && !group))
		return MQB_ERR_INVAL;
	if (!mqbi_topic_filter_valid(filter, flen, 0))
		return MQB_ERR_INVAL;
	bool rep = false;
	struct tnode *n;
	pthread_rwlock_wrlock(&t->lock);
	mqb_err err = path_create(t, filter, flen, &n);
	if (!err) {
		bool had = node_has_subs(n);
		err = glen ? group_add(t, n, group, glen, r, &rep) : route_add(t, n, r, &rep);
		if (err) {
			prune(t, n);
		} else {
			t->routes += !rep;
			t->filters += !had;
		}
	}
	pthread_rwlock_unlock(&t->lock);
	if (replaced)
		*replaced = rep;
	return err;
}

mqb_err mqbi_trie_remove(mqbi_trie *t, const char *filter, size_t flen, const char *group,
                         size_t glen, const void *owner)
{
	if (!t || !filter || !flen || (glen && !group))
		return MQB_ERR_INVAL;
	pthread_rwlock_wrlock(&t->lock);
	struct tnode *n = path_find(t, filter, flen);
	mqb_err err = MQB_ERR_NOTFOUND;
	if (n)
		err = glen ? group_del(t, n, group, glen, owner) : route_del(t, n, owner);
	if (!err) {
		t->routes--;
		t->filters -= !node_has_subs(n);
		prune(t, n);
	}
	pthread_rwlock_unlock(&t->lock);
	return err;
}

static void visit(const struct tnode *n, const mqbi_trie_visitor *v)
{
	if (v->route) {
		const mqbi_route *rt = routes_of(n);
		for (uint32_t i = 0; i < n->nroutes; i++)
			v->route(v->user, &rt[i]);
	}
	if (n->ext && v->group) {
		for (uint32_t i = 0; i < n->ext->ngroups; i++)
			v->group(v->user, &n->ext->groups[i]);
	}
}

void mqbi_trie_match(mqbi_trie *t, const char *topic, size_t tlen, const mqbi_trie_visitor *v)
{
	if (!t || !topic || !tlen || !v)
		return;
	pthread_rwlock_rdlock(&t->lock);
	const struct tnode *root = t->root, *n = root;
	/* No '+' or '#' at the first level for "$SYS/..." and the like. */
	const bool dollar = topic[0] == '$';
	size_t pos = 0; /* start of the level below n; tlen + 1 once all are consumed */
	for (;;) {
		bool wild_ok = n != root || !dollar;
		if (n->hash && wild_ok)
			visit(n->hash, v); /* "a/#" also matches "a" */
		if (pos > tlen) {
			visit(n, v);
		} else {
			size_t end = level_end(topic, pos, tlen);
			const struct tnode *c = child_get(n, topic + pos, end - pos);
			if (!c && wild_ok)
				c = n->plus;
			if (c) {
				n = c;
				pos = end + 1;
				continue;
			}
		}
		/* Go up until an ancestor's '+' branch is still to be walked. */
		for (;;) {
			if (n == root)
				goto done;
			const struct tnode *p = n->parent;
			size_t end = pos - 1;
			pos = level_start(topic, end);
			bool from_exact = n != p->plus;
			n = p;
			if (from_exact && p->plus && (p != root || !dollar)) {
				n = p->plus;
				pos = end + 1;
				break;
			}
		}
	}
done:
	pthread_rwlock_unlock(&t->lock);
}

size_t mqbi_trie_route_count(mqbi_trie *t)
{
	pthread_rwlock_rdlock(&t->lock);
	size_t n = t->routes;
	pthread_rwlock_unlock(&t->lock);
	return n;
}

size_t mqbi_trie_filter_count(mqbi_trie *t)
{
	pthread_rwlock_rdlock(&t->lock);
	size_t n = t->filters;
	pthread_rwlock_unlock(&t->lock);
	return n;
}

static void walk_node(const struct tnode *n, const char *f, size_t flen, mqbi_trie_walk_fn fn,
                      void *user)
{
	const mqbi_route *rt = routes_of(n);
	for (uint32_t i = 0; i < n->nroutes; i++)
		fn(user, f, flen, NULL, 0, &rt[i]);
	if (!n->ext)
		return;
	for (uint32_t i = 0; i < n->ext->ngroups; i++) {
		const mqbi_share_group *g = &n->ext->groups[i];
		for (uint32_t j = 0; j < g->count; j++)
			fn(user, f, flen, g->name, g->name_len, &g->members[j]);
	}
}

/* Appends "/name" (or "name" below the root) to the filter being built. */
static mqb_err path_push(const mqb_allocator *a, char **buf, size_t *cap, size_t *len,
                         const struct tnode *c, bool top)
{
	size_t need = *len + !top + c->len + 1;
	if (need > *cap) {
		size_t ncap = *cap ? *cap : 64;
		while (ncap < need)
			ncap *= 2;
		char *b = mqbi_realloc(a, *buf, ncap);
		if (!b)
			return MQB_ERR_NOMEM;
		*buf = b;
		*cap = ncap;
	}
	if (!top)
		(*buf)[(*len)++] = '/';
	memcpy(*buf + *len, c->name, c->len);
	*len += c->len;
	(*buf)[*len] = '\0';
	return MQB_OK;
}

mqb_err mqbi_trie_walk(mqbi_trie *t, mqbi_trie_walk_fn fn, void *user)
{
	if (!t || !fn)
		return MQB_ERR_INVAL;
	mqb_err err = MQB_OK;
	char *buf = NULL;
	size_t cap = 0, len = 0;
	pthread_rwlock_rdlock(&t->lock);
	const struct tnode *root = t->root, *n = root;
	for (;;) {
		if (n != root)
			walk_node(n, buf, len, fn, user);
		const struct tnode *c = first_child(n);
		if (c) {
			err = path_push(t->a, &buf, &cap, &len, c, n == root);
			if (err)
				break;
			n = c;
			continue;
		}
		for (;;) {
			if (n == root)
				goto done;
			const struct tnode *p = n->parent;
			len -= n->len + (p != root);
			c = next_sibling(p, n);
			if (c) {
				err = path_push(t->a, &buf, &cap, &len, c, p == root);
				if (err)
					goto done;
				n = c;
				break;
			}
			n = p;
		}
	}
done:
	pthread_rwlock_unlock(&t->lock);
	mqbi_free(t->a, buf);
	return err;
}
