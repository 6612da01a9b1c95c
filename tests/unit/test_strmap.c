/* The open-addressing string map. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "counting_alloc.h"
#include "util/alloc.h"
#include "util/strmap.h"

static void setup(void)
{
	memset(&cnt, 0, sizeof(cnt));
}

static void teardown(void)
{
	ck_assert_int_eq(cnt.live, 0);
}

START_TEST(test_basic)
{
	mqbi_strmap m;
	mqbi_strmap_init(&m, &alloc);
	ck_assert_ptr_null(mqbi_strmap_get(&m, "a", 1));
	ck_assert_ptr_null(mqbi_strmap_remove(&m, "a", 1));
	int x, y, z;
	ck_assert_int_eq(mqbi_strmap_put(&m, "a", 1, &x), MQB_OK);
	ck_assert_int_eq(mqbi_strmap_put(&m, "ab", 2, &y), MQB_OK);
	ck_assert_int_eq(mqbi_strmap_put(&m, "", 0, &z), MQB_OK);
	ck_assert_uint_eq(mqbi_strmap_count(&m), 3);
	ck_assert_ptr_eq(mqbi_strmap_get(&m, "a", 1), &x);
	ck_assert_ptr_eq(mqbi_strmap_get(&m, "abc", 2), &y); /* length, not NUL */
	ck_assert_ptr_eq(mqbi_strmap_get(&m, "", 0), &z);
	ck_assert_ptr_eq(mqbi_strmap_get(&m, NULL, 0), &z);
	ck_assert_ptr_null(mqbi_strmap_get(&m, "b", 1));
	ck_assert_ptr_null(mqbi_strmap_get(&m, "a\0", 2));
	/* Replace */
	ck_assert_int_eq(mqbi_strmap_put(&m, "a", 1, &z), MQB_OK);
	ck_assert_uint_eq(mqbi_strmap_count(&m), 3);
	ck_assert_ptr_eq(mqbi_strmap_get(&m, "a", 1), &z);
	ck_assert_ptr_eq(mqbi_strmap_remove(&m, "a", 1), &z);
	ck_assert_ptr_null(mqbi_strmap_get(&m, "a", 1));
	ck_assert_ptr_null(mqbi_strmap_remove(&m, "a", 1));
	ck_assert_uint_eq(mqbi_strmap_count(&m), 2);
	ck_assert_ptr_eq(mqbi_strmap_remove(&m, "", 0), &z);
	ck_assert_ptr_eq(mqbi_strmap_remove(&m, "ab", 2), &y);
	ck_assert_uint_eq(mqbi_strmap_count(&m), 0);
	/* The last removal gives the slots back. */
	ck_assert_int_eq(cnt.live, 0);
	mqbi_strmap_fini(&m);
}
END_TEST

START_TEST(test_hash)
{
	ck_assert_uint_eq(mqbi_strmap_hash("abc", 3), mqbi_strmap_hash("abcdef", 3));
	ck_assert_uint_ne(mqbi_strmap_hash("abc", 3), mqbi_strmap_hash("abd", 3));
	ck_assert_uint_ne(mqbi_strmap_hash("", 0), mqbi_strmap_hash("\0", 1));
	ck_assert_uint_ne(mqbi_strmap_hash("0123456789abcdef", 16),
	                  mqbi_strmap_hash("0123456789abcdeg", 16));
	/* Low bits (used for the slot index) spread over sequential keys. */
	unsigned buckets[64] = {0};
	char k[32];
	for (int i = 0; i < 64000; i++) {
		int n = snprintf(k, sizeof(k), "client-%d", i);
		buckets[mqbi_strmap_hash(k, (size_t)n) & 63]++;
	}
	for (int i = 0; i < 64; i++)
		ck_assert_msg(buckets[i] > 800 && buckets[i] < 1200, "bucket %d: %u", i,
		              buckets[i]);
}
END_TEST

#define MANY 100000

static char (*make_keys(void))[16]
{
	char(*keys)[16] = malloc(sizeof(*keys) * MANY);
	ck_assert_ptr_nonnull(keys);
	for (int i = 0; i < MANY; i++)
		snprintf(keys[i], sizeof(keys[i]), "k%d", i);
	return keys;
}

START_TEST(test_many)
{
	char(*keys)[16] = make_keys();
	mqbi_strmap m;
	mqbi_strmap_init(&m, &alloc);
	for (int i = 0; i < MANY; i++) {
		ck_assert_int_eq(mqbi_strmap_put(&m, keys[i], strlen(keys[i]), keys[i]), MQB_OK);
		ck_assert_uint_le(m.used * 10, m.cap * 7); /* load stays under 70% */
	}
	ck_assert_uint_eq(mqbi_strmap_count(&m), MANY);
	for (int i = 0; i < MANY; i++)
		ck_assert_ptr_eq(mqbi_strmap_get(&m, keys[i], strlen(keys[i])), keys[i]);
	ck_assert_ptr_null(mqbi_strmap_get(&m, "k100000", 7));
	/* Remove the odd ones, re-add them, remove all. */
	for (int i = 1; i < MANY; i += 2)
		ck_assert_ptr_eq(mqbi_strmap_remove(&m, keys[i], strlen(keys[i])), keys[i]);
	ck_assert_uint_eq(mqbi_strmap_count(&m), MANY / 2);
	for (int i = 0; i < MANY; i++) {
		void *v = mqbi_strmap_get(&m, keys[i], strlen(keys[i]));
		ck_assert_ptr_eq(v, i % 2 ? NULL : keys[i]);
	}
	for (int i = 1; i < MANY; i += 2)
		ck_assert_int_eq(mqbi_strmap_put(&m, keys[i], strlen(keys[i]), keys[i]), MQB_OK);
	ck_assert_uint_eq(mqbi_strmap_count(&m), MANY);
	for (int i = 0; i < MANY; i++)
		ck_assert_ptr_eq(mqbi_strmap_remove(&m, keys[i], strlen(keys[i])), keys[i]);
	ck_assert_uint_eq(mqbi_strmap_count(&m), 0);
	mqbi_strmap_fini(&m);
	free(keys);
}
END_TEST

START_TEST(test_churn_tombstones)
{
	/* Insert/remove churn at a constant size must not fill the table with
	 * tombstones (every lookup would then probe forever). */
	char(*keys)[16] = make_keys();
	mqbi_strmap m;
	mqbi_strmap_init(&m, &alloc);
	for (int i = 0; i < 100; i++)
		ck_assert_int_eq(mqbi_strmap_put(&m, keys[i], strlen(keys[i]), keys[i]), MQB_OK);
	for (int i = 100; i < MANY; i++) {
		ck_assert_int_eq(mqbi_strmap_put(&m, keys[i], strlen(keys[i]), keys[i]), MQB_OK);
		ck_assert_ptr_eq(mqbi_strmap_remove(&m, keys[i - 100], strlen(keys[i - 100])),
		                 keys[i - 100]);
		ck_assert_uint_lt(m.used, m.cap);
	}
	ck_assert_uint_eq(mqbi_strmap_count(&m), 100);
	ck_assert_uint_le(m.cap, 512);
	for (int i = MANY - 100; i < MANY; i++)
		ck_assert_ptr_eq(mqbi_strmap_get(&m, keys[i], strlen(keys[i])), keys[i]);
	mqbi_strmap_fini(&m);
	free(keys);
}
END_TEST

START_TEST(test_iterate_with_removals)
{
	char(*keys)[16] = make_keys();
	mqbi_strmap m;
	mqbi_strmap_init(&m, &alloc);
	const int n = 5000;
	for (int i = 0; i < n; i++)
		ck_assert_int_eq(mqbi_strmap_put(&m, keys[i], strlen(keys[i]), keys[i]), MQB_OK);
	char *seen = calloc((size_t)n, 1);
	size_t pos = 0, len;
	const char *key;
	void *v;
	int visits = 0;
	while (mqbi_strmap_next(&m, &pos, &key, &len, &v)) {
		int i = atoi((char *)v + 1);
		ck_assert_ptr_eq(key, keys[i]);
		ck_assert_uint_eq(len, strlen(keys[i]));
		ck_assert(!seen[i]);
		seen[i] = 1;
		visits++;
		/* Remove every entry with an even index while iterating. */
		if (i % 2 == 0)
			ck_assert_ptr_eq(mqbi_strmap_remove(&m, key, len), v);
	}
	ck_assert_int_eq(visits, n);
	ck_assert_uint_eq(mqbi_strmap_count(&m), (size_t)n / 2);
	/* Iterating the rest, removing all: ends cleanly even as the map empties. */
	memset(seen, 0, (size_t)n);
	pos = 0;
	visits = 0;
	while (mqbi_strmap_next(&m, &pos, &key, &len, &v)) {
		int i = atoi((char *)v + 1);
		ck_assert_int_eq(i % 2, 1);
		ck_assert(!seen[i]);
		seen[i] = 1;
		visits++;
		ck_assert_ptr_eq(mqbi_strmap_remove(&m, key, len), v);
	}
	ck_assert_int_eq(visits, n / 2);
	ck_assert_uint_eq(mqbi_strmap_count(&m), 0);
	ck_assert(!mqbi_strmap_next(&m, &pos, &key, &len, &v));
	mqbi_strmap_fini(&m);
	free(seen);
	free(keys);
}
END_TEST

START_TEST(test_locate)
{
	char(*keys)[16] = make_keys();
	mqbi_strmap m;
	mqbi_strmap_init(&m, &alloc);
	for (int i = 0; i < 100; i++)
		ck_assert_int_eq(mqbi_strmap_put(&m, keys[i], strlen(keys[i]), keys[i]), MQB_OK);
	size_t pos;
	ck_assert(!mqbi_strmap_locate(&m, "nope", 4, &pos));
	/* Resuming after any entry yields exactly the entries after it. */
	size_t p1 = 0;
	const char *key;
	size_t len;
	int idx = 0;
	while (mqbi_strmap_next(&m, &p1, &key, &len, NULL)) {
		ck_assert(mqbi_strmap_locate(&m, key, len, &pos));
		ck_assert_uint_eq(pos, p1);
		idx++;
	}
	ck_assert_int_eq(idx, 100);
	mqbi_strmap_fini(&m);
	free(keys);
}
END_TEST

START_TEST(test_shrink)
{
	char(*keys)[16] = make_keys();
	mqbi_strmap m;
	mqbi_strmap_init(&m, &alloc);
	for (int i = 0; i < 10000; i++)
		ck_assert_int_eq(mqbi_strmap_put(&m, keys[i], strlen(keys[i]), keys[i]), MQB_OK);
	size_t big = m.cap;
	for (int i = 10; i < 10000; i++)
		mqbi_strmap_remove(&m, keys[i], strlen(keys[i]));
	mqbi_strmap_shrink(&m);
	ck_assert_uint_lt(m.cap, big / 100);
	for (int i = 0; i < 10; i++)
		ck_assert_ptr_eq(mqbi_strmap_get(&m, keys[i], strlen(keys[i])), keys[i]);
	/* A failed shrink changes nothing. */
	for (int i = 10; i < 1000; i++)
		mqbi_strmap_put(&m, keys[i], strlen(keys[i]), keys[i]);
	for (int i = 10; i < 1000; i++)
		mqbi_strmap_remove(&m, keys[i], strlen(keys[i]));
	size_t cap = m.cap;
	cnt.fail_in = 1;
	mqbi_strmap_shrink(&m);
	cnt.fail_in = 0;
	ck_assert_uint_eq(m.cap, cap);
	for (int i = 0; i < 10; i++)
		ck_assert_ptr_eq(mqbi_strmap_get(&m, keys[i], strlen(keys[i])), keys[i]);
	mqbi_strmap_fini(&m);
	free(keys);
}
END_TEST

START_TEST(test_nomem)
{
	char(*keys)[16] = make_keys();
	mqbi_strmap m;
	mqbi_strmap_init(&m, &alloc);
	int failures = 0;
	for (int i = 0; i < 1000; i++) {
		size_t len = strlen(keys[i]);
		cnt.fail_in = 1;
		mqb_err err = mqbi_strmap_put(&m, keys[i], len, keys[i]);
		cnt.fail_in = 0;
		if (err) {
			/* Growth failed: unchanged, and a retry works. */
			ck_assert_int_eq(err, MQB_ERR_NOMEM);
			failures++;
			ck_assert_uint_eq(mqbi_strmap_count(&m), (size_t)i);
			ck_assert_ptr_null(mqbi_strmap_get(&m, keys[i], len));
			ck_assert_int_eq(mqbi_strmap_put(&m, keys[i], len, keys[i]), MQB_OK);
		}
		ck_assert_ptr_eq(mqbi_strmap_get(&m, keys[i], len), keys[i]);
	}
	ck_assert_int_gt(failures, 5);
	/* Replacing never allocates, so it cannot fail. */
	cnt.fail_in = 1;
	ck_assert_int_eq(mqbi_strmap_put(&m, keys[3], strlen(keys[3]), keys[4]), MQB_OK);
	cnt.fail_in = 0;
	for (int i = 0; i < 1000; i++)
		ck_assert_ptr_eq(mqbi_strmap_get(&m, keys[i], strlen(keys[i])),
		                 i == 3 ? keys[4] : keys[i]);
	mqbi_strmap_fini(&m);
	free(keys);
}
END_TEST

static Suite *strmap_suite(void)
{
	Suite *s = suite_create("strmap");
	TCase *tc = tcase_create("core");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_basic);
	tcase_add_test(tc, test_hash);
	tcase_add_test(tc, test_many);
	tcase_add_test(tc, test_churn_tombstones);
	tcase_add_test(tc, test_iterate_with_removals);
	tcase_add_test(tc, test_locate);
	tcase_add_test(tc, test_shrink);
	tcase_add_test(tc, test_nomem);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(strmap_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
