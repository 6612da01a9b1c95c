/* The children set of a tree node (core/kids.h). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kids.h"
#include "counting_alloc.h"
#include "util/alloc.h"

static void setup(void)
{
	memset(&cnt, 0, sizeof(cnt));
}

static void teardown(void)
{
	ck_assert_int_eq(cnt.live, 0);
}

/* A stand-in for a tree node: the set only sees it through its name. */
typedef struct kid {
	char name[16];
	size_t len;
} kid;

static const char *kid_name(const void *k, size_t *len)
{
	const kid *c = k;
	*len = c->len;
	return c->name;
}

#define NKIDS 40
static kid kids[NKIDS];

static void make_kids(void)
{
	for (int i = 0; i < NKIDS; i++)
		kids[i].len = (size_t)snprintf(kids[i].name, sizeof(kids[i].name), "lvl%d", i);
}

static kid *get(const mqbi_kids *k, uint32_t n, const char *s)
{
	return mqbi_kids_get(k, n, s, strlen(s), kid_name);
}

/* Iterates the whole set: every child once, none else. */
static void check_members(const mqbi_kids *k, uint32_t n, const bool *in)
{
	int seen[NKIDS] = {0};
	uint32_t total = 0;
	size_t pos = 0;
	kid *c;
	while ((c = mqbi_kids_next(k, n, &pos))) {
		ptrdiff_t i = c - kids;
		ck_assert(i >= 0 && i < NKIDS);
		ck_assert(in[i]);
		seen[i]++;
		total++;
	}
	ck_assert_uint_eq(total, mqbi_kids_count(n));
	for (int i = 0; i < NKIDS; i++) {
		ck_assert_int_eq(seen[i], in[i] ? 1 : 0);
		ck_assert_ptr_eq(get(k, n, kids[i].name), in[i] ? &kids[i] : NULL);
	}
}

/* Adds kids[0..count) to an empty set, marking them in `in` if given. */
static void add_first(mqbi_kids *k, uint32_t *n, bool *in, int count)
{
	*k = (mqbi_kids){0};
	*n = 0;
	for (int i = 0; i < count; i++) {
		ck_assert_int_eq(mqbi_kids_add(&alloc, k, n, &kids[i], kid_name), MQB_OK);
		if (in)
			in[i] = true;
	}
}

START_TEST(test_empty)
{
	mqbi_kids k = {0};
	uint32_t n = 0;
	size_t pos = 0;
	ck_assert_ptr_null(get(&k, n, "a"));
	ck_assert_ptr_null(get(&k, n, ""));
	ck_assert_ptr_null(mqbi_kids_next(&k, n, &pos));
	mqbi_kids_free(&alloc, &k, n);
}
END_TEST

START_TEST(test_grow_and_shrink)
{
	make_kids();
	mqbi_kids k = {0};
	uint32_t n = 0;
	bool in[NKIDS] = {0};
	for (int i = 0; i < NKIDS; i++) {
		ck_assert_int_eq(mqbi_kids_add(&alloc, &k, &n, &kids[i], kid_name), MQB_OK);
		in[i] = true;
		ck_assert_uint_eq(mqbi_kids_count(n), (uint32_t)i + 1);
		/* Inline, then an array, then a map past the array maximum. */
		ck_assert_int_eq(!!(n & MQBI_KIDS_MAP), i + 1 > MQBI_KIDS_ARRAY_MAX);
		if (i == 0)
			ck_assert_ptr_eq(k.one, &kids[0]);
		check_members(&k, n, in);
	}
	/* Remove from the middle and the ends; back to an array only at the
	 * minimum (hysteresis). */
	for (int i = NKIDS - 1; i >= 0; i--) {
		int j = (i * 7) % NKIDS;
		while (!in[j])
			j = (j + 1) % NKIDS;
		mqbi_kids_del(&alloc, &k, &n, &kids[j], kid_name);
		in[j] = false;
		ck_assert_uint_eq(mqbi_kids_count(n), (uint32_t)i);
		ck_assert_int_eq(!!(n & MQBI_KIDS_MAP), i > MQBI_KIDS_ARRAY_MIN);
		check_members(&k, n, in);
	}
	ck_assert_uint_eq(n, 0);
	ck_assert_ptr_null(k.one);
	mqbi_kids_free(&alloc, &k, n);
}
END_TEST

START_TEST(test_hysteresis)
{
	make_kids();
	mqbi_kids k;
	uint32_t n;
	bool in[NKIDS] = {0};
	add_first(&k, &n, in, MQBI_KIDS_ARRAY_MAX + 1);
	ck_assert(n & MQBI_KIDS_MAP);
	/* Between the minimum and the maximum the set stays a map... */
	mqbi_kids_del(&alloc, &k, &n, &kids[0], kid_name);
	in[0] = false;
	ck_assert(n & MQBI_KIDS_MAP);
	ck_assert_uint_eq(mqbi_kids_count(n), MQBI_KIDS_ARRAY_MAX);
	/* ...and adding goes on into it. */
	ck_assert_int_eq(mqbi_kids_add(&alloc, &k, &n, &kids[20], kid_name), MQB_OK);
	in[20] = true;
	ck_assert(n & MQBI_KIDS_MAP);
	check_members(&k, n, in);
	mqbi_kids_free(&alloc, &k, n);
}
END_TEST

START_TEST(test_pos_after)
{
	make_kids();
	for (int total = 1; total <= 20; total++) {
		mqbi_kids k;
		uint32_t n;
		add_first(&k, &n, NULL, total);
		/* Resuming after each child gives the rest of the order. */
		kid *order[NKIDS];
		size_t pos = 0;
		int cnt_ = 0;
		kid *c;
		while ((c = mqbi_kids_next(&k, n, &pos)))
			order[cnt_++] = c;
		ck_assert_int_eq(cnt_, total);
		for (int i = 0; i < total; i++) {
			pos = mqbi_kids_pos_after(&k, n, order[i], kid_name);
			c = mqbi_kids_next(&k, n, &pos);
			ck_assert_ptr_eq(c, i + 1 < total ? order[i + 1] : NULL);
		}
		mqbi_kids_free(&alloc, &k, n);
	}
}
END_TEST

START_TEST(test_names)
{
	kid a = {"ab", 2}, b = {"a", 1}, e = {"", 0}, z = {"a\0b", 3};
	mqbi_kids k = {0};
	uint32_t n = 0;
	kid *all[] = {&a, &b, &e, &z};
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(mqbi_kids_add(&alloc, &k, &n, all[i], kid_name), MQB_OK);
	ck_assert_ptr_eq(mqbi_kids_get(&k, n, "ab", 2, kid_name), &a);
	ck_assert_ptr_eq(mqbi_kids_get(&k, n, "a", 1, kid_name), &b);
	ck_assert_ptr_eq(mqbi_kids_get(&k, n, "", 0, kid_name), &e);
	ck_assert_ptr_eq(mqbi_kids_get(&k, n, "a\0b", 3, kid_name), &z);
	ck_assert_ptr_null(mqbi_kids_get(&k, n, "abc", 3, kid_name));
	ck_assert_ptr_null(mqbi_kids_get(&k, n, "b", 1, kid_name));
	mqbi_kids_free(&alloc, &k, n);
}
END_TEST

/* Every failed allocation while adding leaves the set as it was. */
START_TEST(test_add_nomem)
{
	make_kids();
	bool in[NKIDS] = {0};
	for (int target = 1; target <= 12; target++) {
		mqbi_kids k;
		uint32_t n;
		memset(in, 0, sizeof(in));
		add_first(&k, &n, in, target - 1);
		for (long f = 1;; f++) {
			cnt.fail_in = f;
			mqb_err err = mqbi_kids_add(&alloc, &k, &n, &kids[target - 1], kid_name);
			cnt.fail_in = 0;
			if (err == MQB_OK)
				break;
			ck_assert_int_eq(err, MQB_ERR_NOMEM);
			check_members(&k, n, in);
		}
		in[target - 1] = true;
		check_members(&k, n, in);
		mqbi_kids_free(&alloc, &k, n);
	}
}
END_TEST

/* Removing never fails; without memory the set stays a map or keeps a larger
 * array, and stays correct. */
START_TEST(test_del_nomem)
{
	make_kids();
	mqbi_kids k;
	uint32_t n;
	bool in[NKIDS] = {0};
	add_first(&k, &n, in, NKIDS);
	for (int i = 0; i < NKIDS; i++) {
		cnt.fail_in = 1;
		mqbi_kids_del(&alloc, &k, &n, &kids[i], kid_name);
		cnt.fail_in = 0;
		in[i] = false;
		check_members(&k, n, in);
	}
	ck_assert_uint_eq(mqbi_kids_count(n), 0);
	mqbi_kids_free(&alloc, &k, n);
}
END_TEST

START_TEST(test_arrays)
{
	ck_assert_uint_eq(mqbi_pow2_ceil(0), 1);
	ck_assert_uint_eq(mqbi_pow2_ceil(1), 1);
	ck_assert_uint_eq(mqbi_pow2_ceil(5), 8);
	ck_assert_uint_eq(mqbi_pow2_ceil(8), 8);
	ck_assert(mqbi_is_pow2_or_zero(0));
	ck_assert(mqbi_is_pow2_or_zero(4));
	ck_assert(!mqbi_is_pow2_or_zero(6));
	int *arr = NULL;
	size_t n = 0;
	for (; n < 100; n++) {
		int *p = mqbi_array_reserve(&alloc, arr, n, sizeof(*arr));
		ck_assert_ptr_nonnull(p);
		arr = p;
		arr[n] = (int)n;
	}
	/* A failed growth leaves the array untouched. */
	cnt.fail_in = 1;
	ck_assert_ptr_null(mqbi_array_reserve(&alloc, arr, 128, sizeof(*arr)));
	cnt.fail_in = 0;
	while (n > 0) {
		n--;
		if (n == 50)
			cnt.fail_in = 1; /* not a power of two: no allocation */
		arr = mqbi_array_trim(&alloc, arr, n, sizeof(*arr));
		cnt.fail_in = 0;
		for (size_t i = 0; i < n; i++)
			ck_assert_int_eq(arr[i], (int)i);
	}
	ck_assert_ptr_null(arr);
}
END_TEST

static Suite *kids_suite(void)
{
	Suite *s = suite_create("kids");
	TCase *tc = tcase_create("core");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_empty);
	tcase_add_test(tc, test_grow_and_shrink);
	tcase_add_test(tc, test_hysteresis);
	tcase_add_test(tc, test_pos_after);
	tcase_add_test(tc, test_names);
	tcase_add_test(tc, test_add_nomem);
	tcase_add_test(tc, test_del_nomem);
	tcase_add_test(tc, test_arrays);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(kids_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
