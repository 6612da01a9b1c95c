/*
 * libFuzzer harness for topic handling. The input is split at '\n' into
 * pieces. The first two are a filter and a topic for mqbi_topic_matches,
 * checked against a reference matcher written here; every piece is also
 * checked by the validity helpers. Then every piece that is a valid filter
 * (shared or not) becomes a subscription in a trie and every valid topic a
 * retained message, and each topic's trie match and each filter's retained
 * match must equal the reference over all of them. Removing everything must
 * return the allocation count to where it started.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/retain.h"
#include "core/topic.h"
#include "core/trie.h"

#define MAX_PIECES 48

#define CHECK(c)                                                                                   \
	do {                                                                                       \
		if (!(c))                                                                          \
			__builtin_trap();                                                          \
	} while (0)

/* ---- allocation counting ------------------------------------------------- */

static long live_blocks;

static void *c_malloc(void *ctx, size_t n)
{
	void *p = malloc(n ? n : 1);
	live_blocks += p != NULL;
	return p;
}

static void *c_realloc(void *ctx, void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	live_blocks += q && !p;
	return q;
}

static void c_free(void *ctx, void *p)
{
	live_blocks -= p != NULL;
	free(p);
}

static const mqb_allocator alloc = {c_malloc, c_realloc, c_free, NULL};

/* ---- reference implementation ------------------------------------------- */

typedef struct span {
	const char *p;
	size_t n;
} span;

/* Splits at '/'; `out` has room for len + 1 levels. */
static size_t ref_levels(const char *s, size_t len, span *out)
{
	size_t n = 0, start = 0;
	for (size_t i = 0; i <= len; i++) {
		if (i == len || s[i] == '/') {
			out[n++] = (span){s + start, i - start};
			start = i + 1;
		}
	}
	return n;
}

static bool span_is(span s, const char *lit)
{
	return s.n == strlen(lit) && !memcmp(s.p, lit, s.n);
}

static bool ref_name_valid(const char *t, size_t len)
{
	if (!len)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (t[i] == '\0' || t[i] == '+' || t[i] == '#')
			return false;
	}
	return true;
}

static bool ref_filter_valid(const char *f, size_t len)
{
	if (!len || memchr(f, '\0', len))
		return false;
	span *lv = malloc((len + 1) * sizeof(*lv));
	size_t n = ref_levels(f, len, lv);
	bool ok = true;
	for (size_t i = 0; i < n && ok; i++) {
		bool has_plus = memchr(lv[i].p, '+', lv[i].n) != NULL;
		bool has_hash = memchr(lv[i].p, '#', lv[i].n) != NULL;
		if (has_plus && !span_is(lv[i], "+"))
			ok = false;
		if (has_hash && (!span_is(lv[i], "#") || i != n - 1))
			ok = false;
	}
	free(lv);
	return ok;
}

static bool ref_matches(const char *f, size_t flen, const char *t, size_t tlen)
{
	span *fl = malloc((flen + 1) * sizeof(*fl));
	span *tl = malloc((tlen + 1) * sizeof(*tl));
	size_t nf = ref_levels(f, flen, fl), nt = ref_levels(t, tlen, tl);
	bool result = nf == nt;
	if (tlen && t[0] == '$' && (span_is(fl[0], "+") || span_is(fl[0], "#"))) {
		result = false;
		goto out;
	}
	for (size_t i = 0; i < nf; i++) {
		if (span_is(fl[i], "#")) {
			result = true;
			break;
		}
		if (i >= nt) {
			result = false;
			break;
		}
		if (span_is(fl[i], "+"))
			continue;
		if (fl[i].n != tl[i].n || memcmp(fl[i].p, tl[i].p, fl[i].n)) {
			result = false;
			break;
		}
	}
out:
	free(fl);
	free(tl);
	return result;
}

/* ---- the structures against the reference ------------------------------- */

typedef struct piece {
	const char *p;
	size_t n;
	bool is_filter; /* added to the trie */
	const char *group, *filter;
	size_t glen, flen;
	bool is_topic; /* stored in the retain tree (the last copy of a text) */
	int hits;
} piece;

typedef struct ctx {
	piece *pc;
	size_t n;
} ctx;

static void on_route(void *user, const mqbi_route *r)
{
	ctx *c = user;
	size_t i = (size_t)(uintptr_t)r->owner - 1;
	CHECK(i < c->n && c->pc[i].is_filter && !c->pc[i].glen);
	c->pc[i].hits++;
}

static void on_group(void *user, mqbi_share_group *g)
{
	ctx *c = user;
	CHECK(g->count >= 1);
	for (uint32_t m = 0; m < g->count; m++) {
		size_t i = (size_t)(uintptr_t)g->members[m].owner - 1;
		CHECK(i < c->n && c->pc[i].is_filter && c->pc[i].glen == g->name_len);
		CHECK(!memcmp(c->pc[i].group, g->name, g->name_len));
		c->pc[i].hits++;
	}
}

static void on_retained(void *user, const char *topic, size_t tlen, void *value)
{
	ctx *c = user;
	size_t i = (size_t)(uintptr_t)value - 1;
	CHECK(i < c->n && c->pc[i].is_topic);
	CHECK(tlen == c->pc[i].n && !memcmp(topic, c->pc[i].p, tlen) && topic[tlen] == '\0');
	c->pc[i].hits++;
}

static void check_helpers(const char *p, size_t n)
{
	bool fv = mqbi_topic_filter_valid(p, n, 0);
	CHECK(fv == ref_filter_valid(p, n));
	CHECK(mqbi_topic_name_valid(p, n) == ref_name_valid(p, n));
	if (n) {
		unsigned levels = mqbi_topic_levels(p, n);
		CHECK(fv ? mqbi_topic_filter_valid(p, n, levels) : true);
		CHECK(!fv || levels < 2 || !mqbi_topic_filter_valid(p, n, levels - 1));
	}
	CHECK(mqbi_topic_has_wildcard(p, n) == (memchr(p, '+', n) || memchr(p, '#', n)));
	const char *g, *f;
	size_t gl, fl;
	int rc = mqbi_topic_split_shared(p, n, &g, &gl, &f, &fl);
	bool prefixed = n >= 7 && (!memcmp(p, "$share/", 7) || !memcmp(p, "$queue/", 7));
	CHECK(prefixed ? rc != 0 : rc == 0);
	if (rc == 0)
		CHECK(f == p && fl == n && gl == 0);
	if (rc == 1) {
		CHECK(gl > 0 && !memchr(g, '/', gl) && !memchr(g, '+', gl) && !memchr(g, '#', gl));
		CHECK(ref_filter_valid(f, fl));
		CHECK(f + fl == p + n);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data;
	piece pc[MAX_PIECES];
	size_t n = 0, start = 0;
	for (size_t i = 0; i <= size && n < MAX_PIECES; i++) {
		if (i == size || s[i] == '\n') {
			pc[n++] = (piece){.p = s + start, .n = i - start};
			start = i + 1;
		}
	}

	/* The pure helpers. */
	for (size_t i = 0; i < n; i++)
		check_helpers(pc[i].p, pc[i].n);
	if (n >= 2 && ref_filter_valid(pc[0].p, pc[0].n) && ref_name_valid(pc[1].p, pc[1].n))
		CHECK(mqbi_topic_matches(pc[0].p, pc[0].n, pc[1].p, pc[1].n) ==
		      ref_matches(pc[0].p, pc[0].n, pc[1].p, pc[1].n));

	mqbi_trie *t;
	mqbi_retain *r;
	long before = live_blocks;
	if (mqbi_trie_create(&alloc, &t) != MQB_OK)
		return 0;
	if (mqbi_retain_create(&alloc, &r) != MQB_OK) {
		mqbi_trie_destroy(t);
		return 0;
	}
	long baseline = live_blocks;

	/* Fill both structures. */
	size_t nroutes = 0, nretained = 0;
	for (size_t i = 0; i < n; i++) {
		piece *x = &pc[i];
		int rc = mqbi_topic_split_shared(x->p, x->n, &x->group, &x->glen, &x->filter,
		                                 &x->flen);
		if (rc >= 0 && mqbi_topic_filter_valid(x->filter, x->flen, 0)) {
			mqbi_route rt = {(void *)(uintptr_t)(i + 1), (uint32_t)i, 0};
			bool rep = true;
			CHECK(mqbi_trie_add(t, x->filter, x->flen, x->group, x->glen, &rt, &rep) ==
			      MQB_OK);
			CHECK(!rep);
			x->is_filter = true;
			nroutes++;
		}
		if (mqbi_topic_name_valid(x->p, x->n)) {
			void *old = NULL;
			CHECK(mqbi_retain_set(r, x->p, x->n, (void *)(uintptr_t)(i + 1), &old) ==
			      MQB_OK);
			if (old) {
				size_t j = (size_t)(uintptr_t)old - 1;
				CHECK(j < i && pc[j].is_topic && pc[j].n == x->n &&
				      !memcmp(pc[j].p, x->p, x->n));
				pc[j].is_topic = false;
			} else {
				nretained++;
			}
			x->is_topic = true;
		}
	}
	CHECK(mqbi_trie_route_count(t) == nroutes);
	CHECK(mqbi_retain_count(r) == nretained);

	ctx c = {pc, n};
	/* Each topic against the trie. */
	for (size_t k = 0; k < n; k++) {
		if (!mqbi_topic_name_valid(pc[k].p, pc[k].n))
			continue;
		for (size_t i = 0; i < n; i++)
			pc[i].hits = 0;
		mqbi_trie_visitor v = {on_route, on_group, &c};
		mqbi_trie_match(t, pc[k].p, pc[k].n, &v);
		for (size_t i = 0; i < n; i++) {
			bool want = pc[i].is_filter &&
			            ref_matches(pc[i].filter, pc[i].flen, pc[k].p, pc[k].n);
			CHECK(pc[i].hits == (want ? 1 : 0));
		}
	}
	/* Each filter against the retained topics. */
	for (size_t k = 0; k < n; k++) {
		if (!mqbi_topic_filter_valid(pc[k].p, pc[k].n, 0))
			continue;
		for (size_t i = 0; i < n; i++)
			pc[i].hits = 0;
		mqbi_retain_match(r, pc[k].p, pc[k].n, on_retained, &c);
		for (size_t i = 0; i < n; i++) {
			bool want =
			        pc[i].is_topic && ref_matches(pc[k].p, pc[k].n, pc[i].p, pc[i].n);
			CHECK(pc[i].hits == (want ? 1 : 0));
		}
	}
	for (size_t i = 0; i < n; i++)
		pc[i].hits = 0;
	mqbi_retain_foreach(r, on_retained, &c);
	for (size_t i = 0; i < n; i++)
		CHECK(pc[i].hits == (pc[i].is_topic ? 1 : 0));

	/* Remove everything: the allocation count returns to the baseline. */
	for (size_t i = 0; i < n; i++) {
		piece *x = &pc[i];
		if (x->is_filter) {
			void *owner = (void *)(uintptr_t)(i + 1);
			CHECK(mqbi_trie_remove(t, x->filter, x->flen, x->group, x->glen, owner) ==
			      MQB_OK);
			CHECK(mqbi_trie_remove(t, x->filter, x->flen, x->group, x->glen, owner) ==
			      MQB_ERR_NOTFOUND);
		}
		if (x->is_topic) {
			void *old = NULL;
			CHECK(mqbi_retain_set(r, x->p, x->n, NULL, &old) == MQB_OK);
			CHECK(old == (void *)(uintptr_t)(i + 1));
		}
	}
	CHECK(mqbi_trie_route_count(t) == 0 && mqbi_trie_filter_count(t) == 0);
	CHECK(mqbi_retain_count(r) == 0);
	CHECK(live_blocks == baseline);
	mqbi_retain_destroy(r, NULL);
	mqbi_trie_destroy(t);
	CHECK(live_blocks == before);
	return 0;
}
