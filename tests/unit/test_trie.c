/* The subscription trie. */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/topic.h"
#include "core/trie.h"

/* Counts live blocks (thread-safe) and can fail on demand. */
static atomic_long live;
static atomic_long fail_in; /* > 0: the fail_in-th next allocation fails */

static bool should_fail(void)
{
	long f = atomic_load(&fail_in);
	return f > 0 && atomic_fetch_sub(&fail_in, 1) == 1;
}

static void *c_malloc(void *ctx, size_t n)
{
	if (should_fail())
		return NULL;
	void *p = malloc(n ? n : 1);
	if (p)
		atomic_fetch_add(&live, 1);
	return p;
}

static void *c_realloc(void *ctx, void *p, size_t n)
{
	if (should_fail())
		return NULL;
	void *q = realloc(p, n ? n : 1);
	if (q && !p)
		atomic_fetch_add(&live, 1);
	return q;
}

static void c_free(void *ctx, void *p)
{
	if (p)
		atomic_fetch_sub(&live, 1);
	free(p);
}

static const mqb_allocator alloc = {c_malloc, c_realloc, c_free, NULL};

static void setup(void)
{
	atomic_store(&live, 0);
	atomic_store(&fail_in, 0);
}

static void teardown(void)
{
	ck_assert_int_eq(atomic_load(&live), 0);
}

#define OWNER(i) ((void *)(uintptr_t)(i))
#define ID(p)    ((unsigned)(uintptr_t)(p))

/* What a match reported, as sorted text: "3:7" for owner 3 with sub_id 7,
 * "g[1,2]" for group g with members 1 and 2. */
typedef struct result {
	unsigned ids[4096];
	size_t n;
	char groups[65536];
	size_t ngroups;
} result;

static void on_route(void *user, const mqbi_route *r)
{
	result *res = user;
	ck_assert_uint_lt(res->n, 4096);
	res->ids[res->n++] = ID(r->owner) * 1000 + r->sub_id;
}

static int cmp_uint(const void *a, const void *b)
{
	unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
	return x < y ? -1 : x > y;
}

static void on_group(void *user, mqbi_share_group *g)
{
	result *res = user;
	ck_assert_uint_ge(g->count, 1);
	unsigned ids[4096];
	for (uint32_t i = 0; i < g->count; i++)
		ids[i] = ID(g->members[i].owner);
	qsort(ids, g->count, sizeof(*ids), cmp_uint);
	size_t len = strlen(res->groups);
	len += (size_t)snprintf(res->groups + len, sizeof(res->groups) - len, "%s%.*s[",
	                        len ? " " : "", (int)g->name_len, g->name);
	for (uint32_t i = 0; i < g->count; i++)
		len += (size_t)snprintf(res->groups + len, sizeof(res->groups) - len, "%s%u",
		                        i ? "," : "", ids[i]);
	snprintf(res->groups + len, sizeof(res->groups) - len, "]");
	res->ngroups++;
}

static result *match(mqbi_trie *t, const char *topic)
{
	static result res;
	memset(&res, 0, sizeof(res));
	mqbi_trie_visitor v = {on_route, on_group, &res};
	mqbi_trie_match(t, topic, strlen(topic), &v);
	qsort(res.ids, res.n, sizeof(*res.ids), cmp_uint);
	return &res;
}

/* The matched owners as "1 2 3" (sub ids ignored). */
static const char *owners(mqbi_trie *t, const char *topic)
{
	static char buf[8192];
	result *r = match(t, topic);
	size_t len = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < r->n; i++)
		len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%u", i ? " " : "",
		                        r->ids[i] / 1000);
	return buf;
}

static mqb_err add(mqbi_trie *t, const char *filter, unsigned owner, uint32_t sub_id)
{
	mqbi_route r = {OWNER(owner), sub_id, 1};
	return mqbi_trie_add(t, filter, strlen(filter), NULL, 0, &r, NULL);
}

static mqb_err add_shared(mqbi_trie *t, const char *group, const char *filter, unsigned owner)
{
	mqbi_route r = {OWNER(owner), 0, 1};
	return mqbi_trie_add(t, filter, strlen(filter), group, strlen(group), &r, NULL);
}

static mqb_err del(mqbi_trie *t, const char *filter, unsigned owner)
{
	return mqbi_trie_remove(t, filter, strlen(filter), NULL, 0, OWNER(owner));
}

static mqb_err del_shared(mqbi_trie *t, const char *group, const char *filter, unsigned owner)
{
	return mqbi_trie_remove(t, filter, strlen(filter), group, strlen(group), OWNER(owner));
}

static mqbi_trie *new_trie(void)
{
	mqbi_trie *t;
	ck_assert_int_eq(mqbi_trie_create(&alloc, &t), MQB_OK);
	return t;
}

START_TEST(test_basic)
{
	mqbi_trie *t = new_trie();
	ck_assert_str_eq(owners(t, "a/b"), "");
	ck_assert_int_eq(add(t, "a/b", 1, 0), MQB_OK);
	ck_assert_str_eq(owners(t, "a/b"), "1");
	ck_assert_str_eq(owners(t, "a"), "");
	ck_assert_str_eq(owners(t, "a/b/c"), "");
	ck_assert_str_eq(owners(t, "a/c"), "");
	ck_assert_str_eq(owners(t, "/a/b"), "");
	ck_assert_int_eq(add(t, "a/b", 2, 0), MQB_OK);
	ck_assert_str_eq(owners(t, "a/b"), "1 2");
	ck_assert_uint_eq(mqbi_trie_route_count(t), 2);
	ck_assert_uint_eq(mqbi_trie_filter_count(t), 1);
	/* Invalid filters are refused. */
	mqbi_route r = {OWNER(1), 0, 0};
	ck_assert_int_eq(mqbi_trie_add(t, "a/#/b", 5, NULL, 0, &r, NULL), MQB_ERR_INVAL);
	ck_assert_int_eq(mqbi_trie_add(t, "", 0, NULL, 0, &r, NULL), MQB_ERR_INVAL);
	ck_assert_int_eq(mqbi_trie_add(t, "a+", 2, NULL, 0, &r, NULL), MQB_ERR_INVAL);
	/* Empty topics match nothing. */
	mqbi_trie_visitor v = {on_route, on_group, match(t, "x")};
	mqbi_trie_match(t, "", 0, &v);
	ck_assert_uint_eq(((result *)v.user)->n, 0);
	mqbi_trie_destroy(t);
}
END_TEST

START_TEST(test_replace)
{
	mqbi_trie *t = new_trie();
	bool replaced = true;
	mqbi_route r = {OWNER(5), 7, 1};
	ck_assert_int_eq(mqbi_trie_add(t, "x/+", 3, NULL, 0, &r, &replaced), MQB_OK);
	ck_assert(!replaced);
	result *res = match(t, "x/y");
	ck_assert_uint_eq(res->n, 1);
	ck_assert_uint_eq(res->ids[0], 5007);
	r.sub_id = 9;
	r.options = 2;
	ck_assert_int_eq(mqbi_trie_add(t, "x/+", 3, NULL, 0, &r, &replaced), MQB_OK);
	ck_assert(replaced);
	ck_assert_uint_eq(mqbi_trie_route_count(t), 1);
	res = match(t, "x/y");
	ck_assert_uint_eq(res->n, 1);
	ck_assert_uint_eq(res->ids[0], 5009);
	/* The same owner in a shared group at the same filter is another route. */
	ck_assert_int_eq(mqbi_trie_add(t, "x/+", 3, "g", 1, &r, &replaced), MQB_OK);
	ck_assert(!replaced);
	ck_assert_int_eq(mqbi_trie_add(t, "x/+", 3, "g", 1, &r, &replaced), MQB_OK);
	ck_assert(replaced);
	ck_assert_uint_eq(mqbi_trie_route_count(t), 2);
	ck_assert_uint_eq(mqbi_trie_filter_count(t), 1);
	mqbi_trie_destroy(t);
}
END_TEST

START_TEST(test_remove)
{
	mqbi_trie *t = new_trie();
	ck_assert_int_eq(del(t, "a/b", 1), MQB_ERR_NOTFOUND);
	ck_assert_int_eq(add(t, "a/b", 1, 0), MQB_OK);
	ck_assert_int_eq(add(t, "a/b", 2, 0), MQB_OK);
	ck_assert_int_eq(add(t, "a/#", 1, 0), MQB_OK);
	ck_assert_int_eq(del(t, "a/b", 3), MQB_ERR_NOTFOUND);
	ck_assert_int_eq(del(t, "a", 1), MQB_ERR_NOTFOUND);
	ck_assert_int_eq(del(t, "a/b/c", 1), MQB_ERR_NOTFOUND);
	ck_assert_int_eq(del(t, "a/+", 1), MQB_ERR_NOTFOUND);
	ck_assert_int_eq(del_shared(t, "g", "a/b", 1), MQB_ERR_NOTFOUND);
	ck_assert_str_eq(owners(t, "a/b"), "1 1 2");
	ck_assert_int_eq(del(t, "a/b", 1), MQB_OK);
	ck_assert_int_eq(del(t, "a/b", 1), MQB_ERR_NOTFOUND);
	ck_assert_str_eq(owners(t, "a/b"), "1 2");
	ck_assert_int_eq(del(t, "a/#", 1), MQB_OK);
	ck_assert_str_eq(owners(t, "a/b"), "2");
	ck_assert_str_eq(owners(t, "a"), "");
	ck_assert_uint_eq(mqbi_trie_route_count(t), 1);
	ck_assert_uint_eq(mqbi_trie_filter_count(t), 1);
	ck_assert_int_eq(del(t, "a/b", 2), MQB_OK);
	ck_assert_uint_eq(mqbi_trie_route_count(t), 0);
	ck_assert_uint_eq(mqbi_trie_filter_count(t), 0);
	ck_assert_str_eq(owners(t, "a/b"), "");
	mqbi_trie_destroy(t);
}
END_TEST

START_TEST(test_wildcards)
{
	static const char *const filters[] = {
	        "sport/tennis/player1/#", /* 1 */
	        "sport/#",                /* 2 */
	        "#",                      /* 3 */
	        "sport/tennis/+",         /* 4 */
	        "sport/+",                /* 5 */
	        "+/+",                    /* 6 */
	        "/+",                     /* 7 */
	        "+",                      /* 8 */
	        "+/tennis/#",             /* 9 */
	        "sport/tennis/player1",   /* 10 */
	        "a//b",                   /* 11 */
	        "a/+/b",                  /* 12 */
	        "/",                      /* 13 */
	        "/#",                     /* 14 */
	        "+/#",                    /* 15 */
	        "sport/",                 /* 16 */
	};
	mqbi_trie *t = new_trie();
	for (unsigned i = 0; i < sizeof(filters) / sizeof(*filters); i++)
		ck_assert_int_eq(add(t, filters[i], i + 1, 0), MQB_OK);
	ck_assert_str_eq(owners(t, "sport/tennis/player1"), "1 2 3 4 9 10 15");
	ck_assert_str_eq(owners(t, "sport/tennis/player1/ranking"), "1 2 3 9 15");
	ck_assert_str_eq(owners(t, "sport"), "2 3 8 15");
	ck_assert_str_eq(owners(t, "sport/"), "2 3 5 6 15 16");
	ck_assert_str_eq(owners(t, "sport/tennis"), "2 3 5 6 9 15");
	ck_assert_str_eq(owners(t, "/finance"), "3 6 7 14 15");
	ck_assert_str_eq(owners(t, "/"), "3 6 7 13 14 15");
	ck_assert_str_eq(owners(t, "a//b"), "3 11 12 15");
	ck_assert_str_eq(owners(t, "a/x/b"), "3 12 15");
	ck_assert_str_eq(owners(t, "x/tennis"), "3 6 9 15");
	ck_assert_str_eq(owners(t, "a/b/c/d"), "3 15");
	mqbi_trie_destroy(t);
}
END_TEST

START_TEST(test_dollar)
{
	mqbi_trie *t = new_trie();
	ck_assert_int_eq(add(t, "#", 1, 0), MQB_OK);
	ck_assert_int_eq(add(t, "+/monitor/Clients", 2, 0), MQB_OK);
	ck_assert_int_eq(add(t, "$SYS/#", 3, 0), MQB_OK);
	ck_assert_int_eq(add(t, "$SYS/monitor/+", 4, 0), MQB_OK);
	ck_assert_int_eq(add(t, "+", 5, 0), MQB_OK);
	ck_assert_int_eq(add(t, "+/#", 6, 0), MQB_OK);
	ck_assert_int_eq(add(t, "a/+", 7, 0), MQB_OK);
	ck_assert_int_eq(add(t, "a/#", 8, 0), MQB_OK);
	ck_assert_int_eq(add_shared(t, "g", "#", 9), MQB_OK);
	ck_assert_int_eq(add_shared(t, "g", "$SYS/#", 10), MQB_OK);
	ck_assert_str_eq(owners(t, "$SYS/monitor/Clients"), "3 4");
	ck_assert_str_eq(match(t, "$SYS/monitor/Clients")->groups, "g[10]");
	ck_assert_str_eq(owners(t, "$SYS"), "3");
	ck_assert_str_eq(owners(t, "$other"), "");
	ck_assert_str_eq(match(t, "$other")->groups, "");
	ck_assert_str_eq(owners(t, "x/monitor/Clients"), "1 2 6");
	ck_assert_str_eq(match(t, "x/monitor/Clients")->groups, "g[9]");
	ck_assert_str_eq(owners(t, "a/$b"), "1 6 7 8");
	ck_assert_str_eq(owners(t, "x"), "1 5 6");
	mqbi_trie_destroy(t);
}
END_TEST

START_TEST(test_shared)
{
	mqbi_trie *t = new_trie();
	ck_assert_int_eq(add_shared(t, "g1", "a/+", 1), MQB_OK);
	ck_assert_int_eq(add_shared(t, "g1", "a/+", 2), MQB_OK);
	ck_assert_int_eq(add_shared(t, "g2", "a/+", 3), MQB_OK);
	ck_assert_int_eq(add(t, "a/+", 1, 0), MQB_OK);
	ck_assert_int_eq(add_shared(t, "$queue", "a/b", 4), MQB_OK);
	ck_assert_int_eq(add_shared(t, "g1", "a/b", 5), MQB_OK);
	ck_assert_uint_eq(mqbi_trie_route_count(t), 6);
	ck_assert_uint_eq(mqbi_trie_filter_count(t), 2);
	result *r = match(t, "a/b");
	ck_assert_str_eq(owners(t, "a/b"), "1");
	r = match(t, "a/b");
	ck_assert_uint_eq(r->ngroups, 4);
	ck_assert_ptr_nonnull(strstr(r->groups, "g1[1,2]"));
	ck_assert_ptr_nonnull(strstr(r->groups, "g2[3]"));
	ck_assert_ptr_nonnull(strstr(r->groups, "$queue[4]"));
	ck_assert_ptr_nonnull(strstr(r->groups, "g1[5]"));
	ck_assert_str_eq(match(t, "a/c")->groups, "g1[1,2] g2[3]");
	/* Replace inside a group keeps one member. */
	bool replaced = false;
	mqbi_route rt = {OWNER(2), 42, 2};
	ck_assert_int_eq(mqbi_trie_add(t, "a/+", 3, "g1", 2, &rt, &replaced), MQB_OK);
	ck_assert(replaced);
	ck_assert_str_eq(match(t, "a/c")->groups, "g1[1,2] g2[3]");
	/* Removal: wrong group or owner is NOTFOUND; an emptied group disappears. */
	ck_assert_int_eq(del_shared(t, "g3", "a/+", 1), MQB_ERR_NOTFOUND);
	ck_assert_int_eq(del_shared(t, "g2", "a/+", 1), MQB_ERR_NOTFOUND);
	ck_assert_int_eq(del_shared(t, "g", "a/+", 1), MQB_ERR_NOTFOUND);
	ck_assert_int_eq(del_shared(t, "g1", "a/+", 1), MQB_OK);
	ck_assert_str_eq(match(t, "a/c")->groups, "g1[2] g2[3]");
	ck_assert_int_eq(del_shared(t, "g1", "a/+", 2), MQB_OK);
	ck_assert_str_eq(match(t, "a/c")->groups, "g2[3]");
	ck_assert_str_eq(owners(t, "a/c"), "1");
	ck_assert_int_eq(del(t, "a/+", 1), MQB_OK);
	ck_assert_uint_eq(mqbi_trie_filter_count(t), 2);
	ck_assert_int_eq(del_shared(t, "g2", "a/+", 3), MQB_OK);
	ck_assert_uint_eq(mqbi_trie_filter_count(t), 1);
	ck_assert_str_eq(match(t, "a/c")->groups, "");
	ck_assert_int_eq(del_shared(t, "$queue", "a/b", 4), MQB_OK);
	ck_assert_int_eq(del_shared(t, "g1", "a/b", 5), MQB_OK);
	ck_assert_uint_eq(mqbi_trie_route_count(t), 0);
	ck_assert_uint_eq(mqbi_trie_filter_count(t), 0);
	mqbi_trie_destroy(t);
}
END_TEST

START_TEST(test_group_members_many)
{
	/* Many groups at one node and many members in one group. */
	mqbi_trie *t = new_trie();
	char g[16];
	for (unsigned i = 0; i < 50; i++) {
		snprintf(g, sizeof(g), "grp%u", i);
		for (unsigned m = 1; m <= 20; m++)
			ck_assert_int_eq(add_shared(t, g, "s/#", i * 100 + m), MQB_OK);
	}
	ck_assert_uint_eq(mqbi_trie_route_count(t), 1000);
	ck_assert_uint_eq(match(t, "s/x")->ngroups, 50);
	for (unsigned i = 0; i < 50; i += 2) {
		snprintf(g, sizeof(g), "grp%u", i);
		for (unsigned m = 1; m <= 20; m++)
			ck_assert_int_eq(del_shared(t, g, "s/#", i * 100 + m), MQB_OK);
	}
	ck_assert_uint_eq(match(t, "s/x")->ngroups, 25);
	ck_assert_uint_eq(mqbi_trie_route_count(t), 500);
	mqbi_trie_destroy(t);
}
END_TEST

START_TEST(test_same_owner_many_filters)
{
	mqbi_trie *t = new_trie();
	ck_assert_int_eq(add(t, "a/b", 1, 1), MQB_OK);
	ck_assert_int_eq(add(t, "a/+", 1, 2), MQB_OK);
	ck_assert_int_eq(add(t, "a/#", 1, 3), MQB_OK);
	ck_assert_int_eq(add(t, "#", 1, 4), MQB_OK);
	ck_assert_int_eq(add(t, "+/b", 1, 5), MQB_OK);
	result *r = match(t, "a/b");
	ck_assert_uint_eq(r->n, 5);
	for (unsigned i = 0; i < 5; i++)
		ck_assert_uint_eq(r->ids[i], 1000 + i + 1);
	ck_assert_uint_eq(mqbi_trie_route_count(t), 5);
	ck_assert_uint_eq(mqbi_trie_filter_count(t), 5);
	ck_assert_int_eq(del(t, "a/+", 1), MQB_OK);
	r = match(t, "a/b");
	ck_assert_uint_eq(r->n, 4);
	ck_assert_uint_eq(r->ids[1], 1003);
	mqbi_trie_destroy(t);
}
END_TEST

/* A filter from a small alphabet, so that filters overlap a lot. */
static size_t rand_filter(unsigned *seed, char *buf, bool wild)
{
	static const char *const lv[] = {"a", "b", "c", "", "$s", "dd"};
	int n = 1 + (int)(rand_r(seed) % 5);
	size_t len = 0;
	for (int i = 0; i < n; i++) {
		if (i)
			buf[len++] = '/';
		int r = (int)(rand_r(seed) % 9);
		const char *s = lv[r % 6];
		if (wild && r == 6)
			s = "+";
		else if (wild && r == 7 && i == n - 1)
			s = "#";
		memcpy(buf + len, s, strlen(s));
		len += strlen(s);
	}
	buf[len] = '\0';
	if (!len) { /* a lone empty level is not valid */
		buf[0] = '/';
		buf[1] = '\0';
		len = 1;
	}
	return len;
}

START_TEST(test_node_freeing)
{
	mqbi_trie *t = new_trie();
	long baseline = atomic_load(&live);
	unsigned seed = 7;
	enum { N = 3000 };
	static char filters[N][64];
	static unsigned owner[N];
	static char group[N][8];
	size_t added = 0;
	for (int i = 0; i < N; i++) {
		/* Wide levels too, so children move from arrays to hash maps. */
		if (i % 3 == 0)
			snprintf(filters[i], sizeof(filters[i]), "w/%d/x%d", i % 97, i);
		else
			rand_filter(&seed, filters[i], true);
		owner[i] = 1 + (unsigned)(rand_r(&seed) % 40); /* many routes per filter */
		group[i][0] = '\0';
		if (i % 5 == 0)
			snprintf(group[i], sizeof(group[i]), "g%u", (unsigned)i % 3);
		bool rep;
		mqbi_route r = {OWNER(owner[i]), 0, 0};
		ck_assert_int_eq(mqbi_trie_add(t, filters[i], strlen(filters[i]), group[i],
		                               strlen(group[i]), &r, &rep),
		                 MQB_OK);
		added += !rep;
		if (rep)
			filters[i][0] = '\0'; /* a duplicate: removed with the first */
	}
	ck_assert_uint_eq(mqbi_trie_route_count(t), added);
	ck_assert_int_gt(atomic_load(&live), baseline + 1000);
	/* Remove in a different order than added. */
	for (int k = 0; k < 2; k++) {
		for (int i = k; i < N; i += 2) {
			if (!filters[i][0])
				continue;
			ck_assert_int_eq(mqbi_trie_remove(t, filters[i], strlen(filters[i]),
			                                  group[i], strlen(group[i]),
			                                  OWNER(owner[i])),
			                 MQB_OK);
		}
	}
	ck_assert_uint_eq(mqbi_trie_route_count(t), 0);
	ck_assert_uint_eq(mqbi_trie_filter_count(t), 0);
	/* Every node, array, map, index and group is gone. */
	ck_assert_int_eq(atomic_load(&live), baseline);
	mqbi_trie_destroy(t);
}
END_TEST

START_TEST(test_many_routes_one_filter)
{
	/* Past RIDX_MIN routes the owner index takes over: exercise it hard. */
	enum { N = 100000 };
	mqbi_trie *t = new_trie();
	long baseline = atomic_load(&live);
	for (unsigned i = 1; i <= N; i++)
		ck_assert_int_eq(add(t, "bcast/all", i, 1), MQB_OK);
	ck_assert_uint_eq(match(t, "x")->n, 0);
	bool rep = false;
	mqbi_route r = {OWNER(N / 2), 5, 0};
	ck_assert_int_eq(mqbi_trie_add(t, "bcast/all", 9, NULL, 0, &r, &rep), MQB_OK);
	ck_assert(rep);
	ck_assert_uint_eq(mqbi_trie_route_count(t), N);
	/* Remove in a scattered order, checking membership as we go. */
	unsigned seed = 3;
	static unsigned order[N];
	for (unsigned i = 0; i < N; i++)
		order[i] = i + 1;
	for (unsigned i = N - 1; i > 0; i--) {
		unsigned j = (unsigned)rand_r(&seed) % (i + 1), x = order[i];
		order[i] = order[j];
		order[j] = x;
	}
	for (unsigned i = 0; i < N; i++) {
		ck_assert_int_eq(del(t, "bcast/all", order[i]), MQB_OK);
		ck_assert_int_eq(del(t, "bcast/all", order[i]), MQB_ERR_NOTFOUND);
		if (i % 9973 == 0 && i + 1 < N) {
			/* A removed owner can come back, others stay replaceable. */
			ck_assert_int_eq(add(t, "bcast/all", order[i], 0), MQB_OK);
			r.owner = OWNER(order[i + 1]);
			ck_assert_int_eq(mqbi_trie_add(t, "bcast/all", 9, NULL, 0, &r, &rep),
			                 MQB_OK);
			ck_assert(rep);
			ck_assert_int_eq(del(t, "bcast/all", order[i]), MQB_OK);
		}
	}
	ck_assert_uint_eq(mqbi_trie_route_count(t), 0);
	ck_assert_int_eq(atomic_load(&live), baseline);
	mqbi_trie_destroy(t);
}
END_TEST

START_TEST(test_route_index_thresholds)
{
	/* Grow and shrink across the owner-index thresholds in every pattern. */
	mqbi_trie *t = new_trie();
	long baseline = atomic_load(&live);
	bool in[200] = {false};
	unsigned seed = 11;
	for (int step = 0; step < 20000; step++) {
		unsigned o = (unsigned)rand_r(&seed) % 40 + (step / 5000) * 40;
		if (in[o]) {
			ck_assert_int_eq(del(t, "th/x", o + 1), MQB_OK);
			ck_assert_int_eq(del(t, "th/x", o + 1), MQB_ERR_NOTFOUND);
		} else {
			ck_assert_int_eq(add(t, "th/x", o + 1, 0), MQB_OK);
		}
		in[o] = !in[o];
		if (step % 97 == 0) {
			result *r = match(t, "th/x");
			size_t n = 0;
			for (unsigned i = 0; i < 200; i++)
				n += in[i];
			ck_assert_uint_eq(r->n, n);
			for (size_t i = 0; i < r->n; i++)
				ck_assert(in[r->ids[i] / 1000 - 1]);
		}
	}
	for (unsigned o = 0; o < 200; o++) {
		bool rep = false;
		mqbi_route r = {OWNER(o + 1), 0, 0};
		if (in[o]) {
			ck_assert_int_eq(mqbi_trie_add(t, "th/x", 4, NULL, 0, &r, &rep), MQB_OK);
			ck_assert(rep);
			ck_assert_int_eq(del(t, "th/x", o + 1), MQB_OK);
		} else {
			ck_assert_int_eq(del(t, "th/x", o + 1), MQB_ERR_NOTFOUND);
		}
	}
	ck_assert_int_eq(atomic_load(&live), baseline);
	mqbi_trie_destroy(t);
}
END_TEST

START_TEST(test_match_fanout_count)
{
	mqbi_trie *t = new_trie();
	for (unsigned i = 1; i <= 3000; i++)
		ck_assert_int_eq(add(t, i % 2 ? "f/+" : "f/#", i, 0), MQB_OK);
	result *r = match(t, "f/x");
	ck_assert_uint_eq(r->n, 3000);
	for (unsigned i = 0; i < r->n; i++)
		ck_assert_uint_eq(r->ids[i] / 1000, i + 1);
	mqbi_trie_destroy(t);
}
END_TEST

typedef struct sub {
	char filter[64];
	char group[4];
	unsigned owner;
	bool live;
} sub;

static bool sub_matches(const sub *s, const char *topic)
{
	return s->live && mqbi_topic_matches(s->filter, strlen(s->filter), topic, strlen(topic));
}

START_TEST(test_random_crosscheck)
{
	enum { N = 4000, TOPICS = 400 };
	static sub subs[N];
	unsigned seed = (unsigned)_i * 7919 + 1;
	mqbi_trie *t = new_trie();
	size_t routes = 0;
	for (int i = 0; i < N; i++) {
		sub *s = &subs[i];
		rand_filter(&seed, s->filter, true);
		s->owner = (unsigned)i + 1;
		s->group[0] = '\0';
		if (rand_r(&seed) % 8 == 0)
			snprintf(s->group, sizeof(s->group), "g%u", (unsigned)rand_r(&seed) % 3);
		mqbi_route r = {OWNER(s->owner), 0, 0};
		ck_assert_int_eq(mqbi_trie_add(t, s->filter, strlen(s->filter), s->group,
		                               strlen(s->group), &r, NULL),
		                 MQB_OK);
		s->live = true;
		routes++;
	}
	for (int round = 0; round < 2; round++) {
		for (int k = 0; k < TOPICS; k++) {
			char topic[64];
			rand_filter(&seed, topic, false);
			result *res = match(t, topic);
			/* Non-shared routes: exactly the brute-force set. */
			size_t j = 0;
			size_t expect_groups = 0;
			for (int i = 0; i < N; i++) {
				if (!sub_matches(&subs[i], topic))
					continue;
				if (subs[i].group[0]) {
					expect_groups++;
					continue;
				}
				ck_assert_uint_lt(j, res->n);
				ck_assert_uint_eq(res->ids[j] / 1000, subs[i].owner);
				j++;
			}
			ck_assert_msg(j == res->n, "topic '%s': %zu routes, expected %zu", topic,
			              res->n, j);
			/* Shared: the members of all groups reported add up. */
			size_t members = 0;
			for (const char *p = res->groups; *p; p++)
				members += *p == ',' || *p == '[';
			ck_assert_uint_eq(members, expect_groups);
		}
		/* Remove half, then a quarter more, checking each time. */
		for (int i = round; i < N; i += 2 + round * 2) {
			sub *s = &subs[i];
			ck_assert_int_eq(mqbi_trie_remove(t, s->filter, strlen(s->filter), s->group,
			                                  strlen(s->group), OWNER(s->owner)),
			                 MQB_OK);
			s->live = false;
			routes--;
		}
		ck_assert_uint_eq(mqbi_trie_route_count(t), routes);
	}
	mqbi_trie_destroy(t);
}
END_TEST

typedef struct walked {
	char lines[64][96];
	int n;
} walked;

static void on_walk(void *user, const char *filter, size_t flen, const char *group, size_t glen,
                    const mqbi_route *r)
{
	walked *w = user;
	ck_assert_int_lt(w->n, 64);
	ck_assert_uint_eq(strlen(filter), flen);
	snprintf(w->lines[w->n++], sizeof(w->lines[0]), "%.*s|%s|%u", (int)glen, group ? group : "",
	         filter, ID(r->owner));
}

static int cmp_line(const void *a, const void *b)
{
	return strcmp(a, b);
}

START_TEST(test_walk)
{
	static const char *const subs[][3] = {
	        {"a/b", "", "1"}, {"a/+", "", "1"},    {"a/#", "", "2"},  {"#", "", "3"},
	        {"/", "", "4"},   {"//", "", "4"},     {"+/x", "g", "5"}, {"+/x", "g", "6"},
	        {"+/x", "", "7"}, {"$SYS/#", "", "8"},
	};
	mqbi_trie *t = new_trie();
	static walked w;
	w.n = 0;
	ck_assert_int_eq(mqbi_trie_walk(t, on_walk, &w), MQB_OK);
	ck_assert_int_eq(w.n, 0);
	char wide[16];
	for (unsigned i = 0; i < 12; i++) {
		snprintf(wide, sizeof(wide), "w/%u", i);
		ck_assert_int_eq(add(t, wide, 100 + i, 0), MQB_OK);
	}
	for (size_t i = 0; i < sizeof(subs) / sizeof(*subs); i++)
		ck_assert_int_eq(subs[i][1][0] ? add_shared(t, subs[i][1], subs[i][0],
		                                            (unsigned)atoi(subs[i][2]))
		                               : add(t, subs[i][0], (unsigned)atoi(subs[i][2]), 0),
		                 MQB_OK);
	ck_assert_int_eq(mqbi_trie_walk(t, on_walk, &w), MQB_OK);
	ck_assert_int_eq(w.n, 22);
	qsort(w.lines, (size_t)w.n, sizeof(w.lines[0]), cmp_line);
	static const char *const expect[] = {
	        "g|+/x|5",   "g|+/x|6",  "|#|3",     "|$SYS/#|8", "|+/x|7",   "|//|4",
	        "|/|4",      "|a/#|2",   "|a/+|1",   "|a/b|1",    "|w/0|100", "|w/10|110",
	        "|w/11|111", "|w/1|101", "|w/2|102", "|w/3|103",  "|w/4|104", "|w/5|105",
	        "|w/6|106",  "|w/7|107", "|w/8|108", "|w/9|109",
	};
	for (int i = 0; i < w.n; i++)
		ck_assert_str_eq(w.lines[i], expect[i]);
	/* A walk that cannot get its buffer reports it. */
	w.n = 0;
	atomic_store(&fail_in, 1);
	ck_assert_int_eq(mqbi_trie_walk(t, on_walk, &w), MQB_ERR_NOMEM);
	atomic_store(&fail_in, 0);
	mqbi_trie_destroy(t);
}
END_TEST

/* Every allocation of an add in turn fails: the add reports NOMEM and the
 * trie is as before (same routes, same matches), then it succeeds. */
static void add_under_failures(mqbi_trie *t, const char *filter, const char *group, unsigned owner,
                               const char *probe)
{
	for (long k = 1;; k++) {
		long before = atomic_load(&live);
		size_t routes = mqbi_trie_route_count(t), filters = mqbi_trie_filter_count(t);
		char expect[8192];
		snprintf(expect, sizeof(expect), "%s", owners(t, probe));
		size_t ngroups = match(t, probe)->ngroups;
		mqbi_route r = {OWNER(owner), 0, 0};
		atomic_store(&fail_in, k);
		mqb_err err =
		        mqbi_trie_add(t, filter, strlen(filter), group, strlen(group), &r, NULL);
		bool failed = atomic_load(&fail_in) == 0;
		atomic_store(&fail_in, 0);
		if (!failed) {
			ck_assert_int_eq(err, MQB_OK);
			return;
		}
		if (err == MQB_OK)
			return; /* a failed shrink or optional step: tolerated */
		ck_assert_int_eq(err, MQB_ERR_NOMEM);
		/* A parent may keep the hash map it switched to (map + slots instead of
		 * an array); nothing else may remain. The final count proves no leak. */
		ck_assert_int_le(atomic_load(&live), before + 1);
		ck_assert_uint_eq(mqbi_trie_route_count(t), routes);
		ck_assert_uint_eq(mqbi_trie_filter_count(t), filters);
		ck_assert_str_eq(owners(t, probe), expect);
		ck_assert_uint_eq(match(t, probe)->ngroups, ngroups);
	}
}

START_TEST(test_nomem)
{
	mqbi_trie *t = new_trie();
	long baseline = atomic_load(&live);
	add_under_failures(t, "a/b/c/d", "", 1, "a/b/c/d");
	add_under_failures(t, "a/+/c/#", "", 2, "a/b/c/d");
	add_under_failures(t, "a/b/c/d", "", 3, "a/b/c/d");
	add_under_failures(t, "a/b/c/d", "g", 4, "a/b/c/d");
	add_under_failures(t, "a/b/c/d", "g", 5, "a/b/c/d");
	add_under_failures(t, "a/b/c/d", "h", 6, "a/b/c/d");
	/* Children beyond the array limit: the conversion to a map. */
	char f[32];
	for (unsigned i = 0; i < 20; i++) {
		snprintf(f, sizeof(f), "a/k%u/x", i);
		add_under_failures(t, f, "", 10 + i, f);
	}
	/* Routes past the owner-index threshold. */
	for (unsigned i = 0; i < 40; i++)
		add_under_failures(t, "a/b/c/d", "", 100 + i, "a/b/c/d");
	ck_assert_uint_eq(mqbi_trie_route_count(t), 66);
	/* Removal never allocates, so it cannot fail; everything goes away. */
	atomic_store(&fail_in, 1);
	for (unsigned i = 0; i < 40; i++)
		ck_assert_int_eq(del(t, "a/b/c/d", 100 + i), MQB_OK);
	for (unsigned i = 0; i < 20; i++) {
		snprintf(f, sizeof(f), "a/k%u/x", i);
		ck_assert_int_eq(del(t, f, 10 + i), MQB_OK);
	}
	atomic_store(&fail_in, 0);
	ck_assert_int_eq(del(t, "a/b/c/d", 1), MQB_OK);
	ck_assert_int_eq(del(t, "a/+/c/#", 2), MQB_OK);
	ck_assert_int_eq(del(t, "a/b/c/d", 3), MQB_OK);
	ck_assert_int_eq(del_shared(t, "g", "a/b/c/d", 4), MQB_OK);
	ck_assert_int_eq(del_shared(t, "g", "a/b/c/d", 5), MQB_OK);
	ck_assert_int_eq(del_shared(t, "h", "a/b/c/d", 6), MQB_OK);
	ck_assert_int_eq(atomic_load(&live), baseline);
	mqbi_trie_destroy(t);
	/* Creation itself. */
	for (long k = 1; k <= 3; k++) {
		mqbi_trie *t2 = NULL;
		atomic_store(&fail_in, k);
		mqb_err err = mqbi_trie_create(&alloc, &t2);
		atomic_store(&fail_in, 0);
		if (err) {
			ck_assert_int_eq(err, MQB_ERR_NOMEM);
			ck_assert_ptr_null(t2);
			ck_assert_int_eq(atomic_load(&live), 0);
		} else {
			mqbi_trie_destroy(t2);
		}
	}
}
END_TEST

START_TEST(test_destroy_full)
{
	/* Destroy with everything still in place (leaks show in teardown). */
	mqbi_trie *t = new_trie();
	char f[64];
	for (unsigned i = 0; i < 2000; i++) {
		snprintf(f, sizeof(f), "d/%u/+/%u/#", i % 50, i);
		ck_assert_int_eq(add(t, f, i + 1, 0), MQB_OK);
		ck_assert_int_eq(add_shared(t, "g", f, i + 1), MQB_OK);
	}
	for (unsigned i = 1; i <= 40; i++)
		ck_assert_int_eq(add(t, "d/0", i, 0), MQB_OK);
	/* A very deep filter does not need a deep stack. */
	size_t len = 60001;
	char *deep = malloc(len + 1);
	for (size_t i = 0; i < len; i++)
		deep[i] = i % 2 ? '/' : 'x';
	deep[len] = '\0';
	mqbi_route r = {OWNER(1), 0, 0};
	ck_assert_int_eq(mqbi_trie_add(t, deep, len, NULL, 0, &r, NULL), MQB_OK);
	deep[len - 1] = '+';
	ck_assert_int_eq(mqbi_trie_add(t, deep, len, NULL, 0, &r, NULL), MQB_OK);
	deep[len - 1] = 'x';
	result *res = match(t, deep);
	ck_assert_uint_eq(res->n, 2);
	mqbi_trie_destroy(t);
	free(deep);
}
END_TEST

typedef struct race {
	mqbi_trie *t;
	int id;
	atomic_int *stop;
	unsigned matched;
} race;

static void count_route(void *user, const mqbi_route *r)
{
	(*(unsigned *)user)++;
}

static void *reader(void *arg)
{
	race *rc = arg;
	unsigned n = 0;
	mqbi_trie_visitor v = {count_route, NULL, &n};
	while (!atomic_load(rc->stop)) {
		mqbi_trie_match(rc->t, "r/1/x", 5, &v);
		mqbi_trie_match(rc->t, "r/2/y/z", 7, &v);
	}
	rc->matched = n;
	return NULL;
}

static void *writer(void *arg)
{
	race *rc = arg;
	char f[32];
	for (int round = 0; round < 200; round++) {
		for (int i = 0; i < 50; i++) {
			snprintf(f, sizeof(f), "r/%d/%s", i % 4, i % 3 ? "+" : "#");
			mqbi_route r = {OWNER(rc->id * 1000 + i), 0, 0};
			ck_assert_int_eq(mqbi_trie_add(rc->t, f, strlen(f), NULL, 0, &r, NULL),
			                 MQB_OK);
		}
		for (int i = 0; i < 50; i++) {
			snprintf(f, sizeof(f), "r/%d/%s", i % 4, i % 3 ? "+" : "#");
			ck_assert_int_eq(mqbi_trie_remove(rc->t, f, strlen(f), NULL, 0,
			                                  OWNER(rc->id * 1000 + i)),
			                 MQB_OK);
		}
	}
	return NULL;
}

START_TEST(test_threads)
{
	mqbi_trie *t = new_trie();
	long baseline = atomic_load(&live);
	atomic_int stop = 0;
	race rs[6];
	pthread_t th[6];
	for (int i = 0; i < 6; i++) {
		rs[i] = (race){t, i + 1, &stop, 0};
		ck_assert_int_eq(pthread_create(&th[i], NULL, i < 4 ? reader : writer, &rs[i]), 0);
	}
	for (int i = 4; i < 6; i++)
		pthread_join(th[i], NULL);
	atomic_store(&stop, 1);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	ck_assert_uint_eq(mqbi_trie_route_count(t), 0);
	ck_assert_int_eq(atomic_load(&live), baseline);
	mqbi_trie_destroy(t);
}
END_TEST

static Suite *trie_suite(void)
{
	Suite *s = suite_create("trie");
	TCase *tc = tcase_create("core");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_basic);
	tcase_add_test(tc, test_replace);
	tcase_add_test(tc, test_remove);
	tcase_add_test(tc, test_wildcards);
	tcase_add_test(tc, test_dollar);
	tcase_add_test(tc, test_shared);
	tcase_add_test(tc, test_group_members_many);
	tcase_add_test(tc, test_same_owner_many_filters);
	tcase_add_test(tc, test_node_freeing);
	tcase_add_test(tc, test_many_routes_one_filter);
	tcase_add_test(tc, test_route_index_thresholds);
	tcase_add_test(tc, test_match_fanout_count);
	tcase_add_loop_test(tc, test_random_crosscheck, 0, 3);
	tcase_add_test(tc, test_walk);
	tcase_add_test(tc, test_nomem);
	tcase_add_test(tc, test_destroy_full);
	tcase_add_test(tc, test_threads);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(trie_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
