/* The retained-message tree. */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/retain.h"
#include "core/topic.h"

/* Counts live blocks and can fail on demand. */
static long live;
static long fail_in; /* > 0: the fail_in-th next allocation fails */

static void *c_malloc(void *ctx, size_t n)
{
	if (fail_in > 0 && --fail_in == 0)
		return NULL;
	void *p = malloc(n ? n : 1);
	live += p != NULL;
	return p;
}

static void *c_realloc(void *ctx, void *p, size_t n)
{
	if (fail_in > 0 && --fail_in == 0)
		return NULL;
	void *q = realloc(p, n ? n : 1);
	live += q && !p;
	return q;
}

static void c_free(void *ctx, void *p)
{
	live -= p != NULL;
	free(p);
}

static const mqb_allocator alloc = {c_malloc, c_realloc, c_free, NULL};

static void setup(void)
{
	live = fail_in = 0;
}

static void teardown(void)
{
	ck_assert_int_eq(live, 0);
}

static mqbi_retain *new_store(void)
{
	mqbi_retain *r;
	ck_assert_int_eq(mqbi_retain_create(&alloc, &r), MQB_OK);
	return r;
}

/* Values are the topics' own text (static strings), which lets the callback
 * check that the topic it gets is the one stored. */
static void *set(mqbi_retain *r, const char *topic, void *value)
{
	void *old = (void *)1;
	ck_assert_int_eq(mqbi_retain_set(r, topic, strlen(topic), value, &old), MQB_OK);
	return old;
}

typedef struct found {
	char *topics[65536];
	size_t n;
} found;

static void on_value(void *user, const char *topic, size_t tlen, void *value)
{
	found *f = user;
	ck_assert_uint_lt(f->n, 65536);
	ck_assert_uint_eq(strlen(topic), tlen); /* NUL-terminated */
	ck_assert_str_eq(topic, value);
	f->topics[f->n++] = value;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The matching topics, sorted and joined by spaces. */
static const char *matched(mqbi_retain *r, const char *filter)
{
	static found f;
	static char buf[65536];
	f.n = 0;
	if (filter)
		mqbi_retain_match(r, filter, strlen(filter), on_value, &f);
	else
		mqbi_retain_foreach(r, on_value, &f);
	qsort(f.topics, f.n, sizeof(*f.topics), cmp_str);
	size_t len = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < f.n; i++)
		len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%s", i ? " " : "",
		                        f.topics[i]);
	return buf;
}

START_TEST(test_set_replace_delete)
{
	mqbi_retain *r = new_store();
	long baseline = live;
	char v1[] = "a/b", v2[] = "a/b";
	ck_assert_ptr_null(set(r, "a/b", v1));
	ck_assert_uint_eq(mqbi_retain_count(r), 1);
	ck_assert_str_eq(matched(r, "a/b"), "a/b");
	ck_assert_ptr_eq(set(r, "a/b", v2), v1);
	ck_assert_uint_eq(mqbi_retain_count(r), 1);
	static found f;
	f.n = 0;
	mqbi_retain_match(r, "a/b", 3, on_value, &f);
	ck_assert_uint_eq(f.n, 1);
	ck_assert_ptr_eq(f.topics[0], v2);
	/* Deleting: the old value comes back; a missing topic is not an error. */
	ck_assert_ptr_null(set(r, "a/c", NULL));
	ck_assert_ptr_null(set(r, "a", NULL));
	ck_assert_ptr_null(set(r, "a/b/c", NULL));
	ck_assert_ptr_eq(set(r, "a/b", NULL), v2);
	ck_assert_ptr_null(set(r, "a/b", NULL));
	ck_assert_uint_eq(mqbi_retain_count(r), 0);
	ck_assert_str_eq(matched(r, "#"), "");
	ck_assert_int_eq(live, baseline);
	/* Invalid topics. */
	void *old = (void *)1;
	ck_assert_int_eq(mqbi_retain_set(r, "", 0, v1, &old), MQB_ERR_INVAL);
	ck_assert_ptr_null(old);
	ck_assert_int_eq(mqbi_retain_set(r, "a/+", 3, v1, NULL), MQB_ERR_INVAL);
	ck_assert_int_eq(mqbi_retain_set(r, "#", 1, v1, NULL), MQB_ERR_INVAL);
	ck_assert_int_eq(mqbi_retain_set(r, "a\0b", 3, v1, NULL), MQB_ERR_INVAL);
	/* Invalid filters match nothing. */
	set(r, "a/b", v1);
	ck_assert_str_eq(matched(r, "a/#/b"), "");
	ck_assert_str_eq(matched(r, "a+"), "");
	ck_assert_str_eq(matched(r, ""), "");
	set(r, "a/b", NULL);
	mqbi_retain_destroy(r, NULL);
}
END_TEST

static const char *const topics[] = {
        "sport",
        "sport/",
        "sport/tennis",
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
        "sport/tennis/player1/score/wimbledon",
        "sport/tennis/player2",
        "sport/golf",
        "/",
        "/finance",
        "//",
        "a//b",
        "a/x/b",
        "$SYS",
        "$SYS/broker/clients",
        "$SYS/monitor/Clients",
        "x/monitor/Clients",
        "a/$b",
        "$share/g/x",
};

static mqbi_retain *filled(void)
{
	mqbi_retain *r = new_store();
	for (size_t i = 0; i < sizeof(topics) / sizeof(*topics); i++)
		ck_assert_ptr_null(set(r, topics[i], (void *)topics[i]));
	return r;
}

START_TEST(test_match)
{
	mqbi_retain *r = filled();
	ck_assert_str_eq(matched(r, "sport/tennis/player1/#"),
	                 "sport/tennis/player1 sport/tennis/player1/ranking "
	                 "sport/tennis/player1/score/wimbledon");
	ck_assert_str_eq(matched(r, "sport/#"),
	                 "sport sport/ sport/golf sport/tennis sport/tennis/player1 "
	                 "sport/tennis/player1/ranking sport/tennis/player1/score/wimbledon "
	                 "sport/tennis/player2");
	ck_assert_str_eq(matched(r, "sport/tennis/+"), "sport/tennis/player1 sport/tennis/player2");
	ck_assert_str_eq(matched(r, "sport/+"), "sport/ sport/golf sport/tennis");
	ck_assert_str_eq(matched(r, "+"), "sport");
	ck_assert_str_eq(matched(r, "+/+"), "/ /finance a/$b sport/ sport/golf sport/tennis");
	ck_assert_str_eq(matched(r, "/+"), "/ /finance");
	ck_assert_str_eq(matched(r, "+/tennis/#"),
	                 "sport/tennis sport/tennis/player1 sport/tennis/player1/ranking "
	                 "sport/tennis/player1/score/wimbledon sport/tennis/player2");
	ck_assert_str_eq(matched(r, "a/+/b"), "a//b a/x/b");
	ck_assert_str_eq(matched(r, "+/+/+"),
	                 "// a//b a/x/b sport/tennis/player1 sport/tennis/player2 "
	                 "x/monitor/Clients");
	ck_assert_str_eq(matched(r, "sport/tennis/player1"), "sport/tennis/player1");
	ck_assert_str_eq(matched(r, "sport/tennis/player3"), "");
	ck_assert_str_eq(matched(r, "sport/tennis/player1/score"), "");
	ck_assert_str_eq(matched(r, "nothing/#"), "");
	ck_assert_str_eq(matched(r, "/#"), "/ // /finance");
	/* '$' topics */
	ck_assert_str_eq(matched(r, "+/monitor/Clients"), "x/monitor/Clients");
	ck_assert_str_eq(matched(r, "$SYS/#"), "$SYS $SYS/broker/clients $SYS/monitor/Clients");
	ck_assert_str_eq(matched(r, "$SYS/monitor/+"), "$SYS/monitor/Clients");
	ck_assert_str_eq(matched(r, "$SYS"), "$SYS");
	ck_assert_str_eq(matched(r, "a/+"), "a/$b");
	ck_assert_str_eq(matched(r, "a/#"), "a/$b a//b a/x/b");
	ck_assert_str_eq(matched(r, "$share/#"), "$share/g/x");
	const char *all = matched(r, "#");
	ck_assert(all[0] != '$' && !strstr(all, " $"));
	ck_assert_str_eq(all, "/ // /finance a/$b a//b a/x/b sport sport/ sport/golf sport/tennis "
	                      "sport/tennis/player1 sport/tennis/player1/ranking "
	                      "sport/tennis/player1/score/wimbledon sport/tennis/player2 "
	                      "x/monitor/Clients");
	ck_assert_str_eq(matched(r, "+/#"), all);
	/* foreach sees everything, '$' included. */
	ck_assert_str_eq(matched(r, NULL),
	                 "$SYS $SYS/broker/clients $SYS/monitor/Clients $share/g/x / // /finance "
	                 "a/$b a//b a/x/b sport sport/ sport/golf sport/tennis "
	                 "sport/tennis/player1 sport/tennis/player1/ranking "
	                 "sport/tennis/player1/score/wimbledon sport/tennis/player2 "
	                 "x/monitor/Clients");
	ck_assert_uint_eq(mqbi_retain_count(r), sizeof(topics) / sizeof(*topics));
	mqbi_retain_destroy(r, NULL);
}
END_TEST

static int released;
static void release(void *value)
{
	released++;
}

START_TEST(test_destroy_releases)
{
	mqbi_retain *r = filled();
	released = 0;
	mqbi_retain_destroy(r, release);
	ck_assert_int_eq(released, (int)(sizeof(topics) / sizeof(*topics)));
}
END_TEST

START_TEST(test_branch_freeing)
{
	mqbi_retain *r = new_store();
	long baseline = live;
	/* Values on inner nodes and on leaves, in both creation orders. */
	ck_assert_ptr_null(set(r, "a/b/c", "a/b/c"));
	ck_assert_ptr_null(set(r, "a/b", "a/b")); /* inner node: topic copied aside */
	ck_assert_ptr_null(set(r, "a/b/c/d", "a/b/c/d"));
	ck_assert_str_eq(matched(r, "a/#"), "a/b a/b/c a/b/c/d");
	ck_assert_ptr_nonnull(set(r, "a/b/c", NULL));
	ck_assert_str_eq(matched(r, "a/#"), "a/b a/b/c/d");
	ck_assert_str_eq(matched(r, "a/b/c"), "");
	ck_assert_ptr_null(set(r, "a/b/c", "a/b/c")); /* the kept node is reused */
	ck_assert_str_eq(matched(r, "a/b/+"), "a/b/c");
	ck_assert_ptr_nonnull(set(r, "a/b", NULL));
	ck_assert_ptr_nonnull(set(r, "a/b/c/d", NULL));
	ck_assert_ptr_nonnull(set(r, "a/b/c", NULL));
	ck_assert_int_eq(live, baseline);

	/* Many topics, wide and deep, deleted in another order. */
	enum { N = 20000 };
	static char names[N][40];
	for (int i = 0; i < N; i++) {
		if (i % 2)
			snprintf(names[i], sizeof(names[i]), "wide/%d", i);
		else
			snprintf(names[i], sizeof(names[i]), "deep/%d/%d/%d/x", i % 7, i % 101, i);
		ck_assert_ptr_null(set(r, names[i], names[i]));
	}
	ck_assert_uint_eq(mqbi_retain_count(r), N);
	for (int i = 0; i < N; i += 3)
		ck_assert_ptr_eq(set(r, names[i], NULL), names[i]);
	for (int i = 0; i < N; i++) {
		if (i % 3)
			ck_assert_ptr_eq(set(r, names[i], NULL), names[i]);
	}
	ck_assert_uint_eq(mqbi_retain_count(r), 0);
	ck_assert_int_eq(live, baseline);
	mqbi_retain_destroy(r, NULL);
}
END_TEST

START_TEST(test_wide_level)
{
	/* Thousands of children under one level ('+' iterates a hash map), with
	 * '$' children at the top level skipped by wildcards. */
	enum { N = 5000 };
	static char names[N][24], dollars[N][24];
	mqbi_retain *r = new_store();
	for (int i = 0; i < N; i++) {
		snprintf(names[i], sizeof(names[i]), "w/%d", i);
		snprintf(dollars[i], sizeof(dollars[i]), "$d%d", i);
		set(r, names[i], names[i]);
		set(r, dollars[i], dollars[i]);
	}
	set(r, "w", "w");
	static found f;
	f.n = 0;
	mqbi_retain_match(r, "w/+", 3, on_value, &f);
	ck_assert_uint_eq(f.n, N);
	f.n = 0;
	mqbi_retain_match(r, "w/#", 3, on_value, &f);
	ck_assert_uint_eq(f.n, N + 1);
	f.n = 0;
	mqbi_retain_match(r, "+", 1, on_value, &f);
	ck_assert_uint_eq(f.n, 1);
	f.n = 0;
	mqbi_retain_match(r, "#", 1, on_value, &f);
	ck_assert_uint_eq(f.n, N + 1);
	f.n = 0;
	mqbi_retain_foreach(r, on_value, &f);
	ck_assert_uint_eq(f.n, 2 * N + 1);
	ck_assert_str_eq(matched(r, "w/4321"), "w/4321");
	ck_assert_str_eq(matched(r, "$d17"), "$d17");
	mqbi_retain_destroy(r, NULL);
}
END_TEST

static size_t rand_topic(unsigned *seed, char *buf, bool wild)
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
	if (!len) {
		buf[0] = '/';
		buf[1] = '\0';
		len = 1;
	}
	return len;
}

START_TEST(test_random_crosscheck)
{
	enum { N = 3000 };
	static char names[N][64];
	static bool stored[N];
	unsigned seed = (unsigned)_i * 31 + 5;
	mqbi_retain *r = new_store();
	long baseline = live;
	for (int i = 0; i < N; i++) {
		rand_topic(&seed, names[i], false);
		/* Duplicates keep the first copy as the value. */
		stored[i] = true;
		for (int j = 0; j < i && stored[i]; j++)
			stored[i] = !(stored[j] && strcmp(names[j], names[i]) == 0);
		if (stored[i])
			ck_assert_ptr_null(set(r, names[i], names[i]));
	}
	for (int round = 0; round < 3; round++) {
		for (int k = 0; k < 300; k++) {
			char filter[64];
			rand_topic(&seed, filter, true);
			static found f;
			f.n = 0;
			mqbi_retain_match(r, filter, strlen(filter), on_value, &f);
			size_t expect = 0;
			for (int i = 0; i < N; i++) {
				if (!stored[i] || !mqbi_topic_matches(filter, strlen(filter),
				                                      names[i], strlen(names[i])))
					continue;
				expect++;
				bool seen = false;
				for (size_t j = 0; j < f.n && !seen; j++)
					seen = f.topics[j] == names[i];
				ck_assert_msg(seen, "'%s' should match '%s'", filter, names[i]);
			}
			ck_assert_msg(f.n == expect, "'%s': %zu values, expected %zu", filter, f.n,
			              expect);
		}
		for (int i = round; i < N; i += 3) {
			if (stored[i]) {
				ck_assert_ptr_eq(set(r, names[i], NULL), names[i]);
				stored[i] = false;
			}
		}
	}
	ck_assert_uint_eq(mqbi_retain_count(r), 0);
	ck_assert_int_eq(live, baseline);
	mqbi_retain_destroy(r, NULL);
}
END_TEST

START_TEST(test_nomem)
{
	mqbi_retain *r = new_store();
	long baseline = live;
	static char names[40][32];
	for (int i = 0; i < 40; i++) {
		/* New deep paths, new leaves under a widening level, inner values. */
		if (i < 20)
			snprintf(names[i], sizeof(names[i]), "n/%d/x/y", i);
		else
			snprintf(names[i], sizeof(names[i]), "n/%d", i - 20);
		for (long k = 1;; k++) {
			size_t count = mqbi_retain_count(r);
			long before = live;
			fail_in = k;
			void *old = (void *)1;
			mqb_err err =
			        mqbi_retain_set(r, names[i], strlen(names[i]), names[i], &old);
			bool failed = fail_in == 0;
			fail_in = 0;
			if (!failed) {
				ck_assert_int_eq(err, MQB_OK);
				break;
			}
			ck_assert_int_eq(err, MQB_ERR_NOMEM);
			ck_assert_ptr_null(old);
			ck_assert_uint_eq(mqbi_retain_count(r), count);
			ck_assert_int_le(live, before + 1); /* a parent may keep its map */
			ck_assert_str_eq(matched(r, names[i]), "");
		}
		ck_assert_str_eq(matched(r, names[i]), names[i]);
	}
	ck_assert_uint_eq(mqbi_retain_count(r), 40);
	/* Deleting never needs memory. */
	fail_in = 1;
	for (int i = 0; i < 40; i++)
		ck_assert_ptr_eq(set(r, names[i], NULL), names[i]);
	fail_in = 0;
	ck_assert_int_eq(live, baseline);
	mqbi_retain_destroy(r, NULL);
	for (long k = 1; k <= 3; k++) {
		mqbi_retain *r2 = NULL;
		fail_in = k;
		mqb_err err = mqbi_retain_create(&alloc, &r2);
		fail_in = 0;
		if (err)
			ck_assert_ptr_null(r2);
		else
			mqbi_retain_destroy(r2, NULL);
		ck_assert_int_eq(live, 0);
	}
}
END_TEST

START_TEST(test_deep_topic)
{
	/* 30,000 levels: walks and destruction do not recurse. */
	size_t len = 60001;
	char *d1 = malloc(len + 1), *d2 = malloc(len + 1), *f = malloc(len + 1);
	for (size_t i = 0; i < len; i++)
		d1[i] = i % 2 ? '/' : 'x';
	d1[len] = '\0';
	memcpy(d2, d1, len + 1);
	d2[len - 1] = 'y';
	memcpy(f, d1, len + 1);
	mqbi_retain *r = new_store();
	ck_assert_ptr_null(set(r, d1, d1));
	ck_assert_ptr_null(set(r, d2, d2));
	static found fd;
	fd.n = 0;
	mqbi_retain_match(r, "x/x/x/#", 7, on_value, &fd);
	ck_assert_uint_eq(fd.n, 2);
	f[len - 1] = '#';
	fd.n = 0;
	mqbi_retain_match(r, f, len, on_value, &fd);
	ck_assert_uint_eq(fd.n, 2);
	f[len - 1] = '+';
	fd.n = 0;
	mqbi_retain_match(r, f, len, on_value, &fd);
	ck_assert_uint_eq(fd.n, 2);
	f[len - 3] = '+';
	f[len - 1] = 'y';
	fd.n = 0;
	mqbi_retain_match(r, f, len, on_value, &fd);
	ck_assert_uint_eq(fd.n, 1);
	ck_assert_ptr_eq(fd.topics[0], d2);
	mqbi_retain_destroy(r, NULL);
	free(d1);
	free(d2);
	free(f);
}
END_TEST

static Suite *retain_suite(void)
{
	Suite *s = suite_create("retain");
	TCase *tc = tcase_create("core");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_set_replace_delete);
	tcase_add_test(tc, test_match);
	tcase_add_test(tc, test_destroy_releases);
	tcase_add_test(tc, test_branch_freeing);
	tcase_add_test(tc, test_wide_level);
	tcase_add_loop_test(tc, test_random_crosscheck, 0, 3);
	tcase_add_test(tc, test_nomem);
	tcase_add_test(tc, test_deep_topic);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(retain_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
