/* Topic names, filters, matching and shared-subscription parsing. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "core/topic.h"

static bool name_ok(const char *s)
{
	return mqbi_topic_name_valid(s, strlen(s));
}
static bool filter_ok(const char *s)
{
	return mqbi_topic_filter_valid(s, strlen(s), 0);
}
static bool matches(const char *f, const char *t)
{
	return mqbi_topic_matches(f, strlen(f), t, strlen(t));
}

START_TEST(test_name_valid)
{
	static const char *const valid[] = {
	        "a",          "/",           "//",
	        "a/b",        "/a",          "a/",
	        "a//b",       "$SYS/broker", "sport/tennis/player1",
	        " ",          "ACCOUNTS",    "\xc3\xa9t\xc3\xa9",
	        "$share/g/a", "a b/c d",
	};
	static const char *const invalid[] = {
	        "", "#", "+", "a/#", "a/+", "a+", "+a", "a/#b", "sport/tennis#", "a/+/b",
	};
	for (size_t i = 0; i < sizeof(valid) / sizeof(*valid); i++)
		ck_assert_msg(name_ok(valid[i]), "'%s' should be a valid name", valid[i]);
	for (size_t i = 0; i < sizeof(invalid) / sizeof(*invalid); i++)
		ck_assert_msg(!name_ok(invalid[i]), "'%s' should be an invalid name", invalid[i]);
	/* U+0000 is not allowed anywhere. */
	ck_assert(!mqbi_topic_name_valid("a\0b", 3));
	ck_assert(!mqbi_topic_name_valid(NULL, 0));
	ck_assert(mqbi_topic_name_valid("ab", 1));
}
END_TEST

START_TEST(test_filter_valid)
{
	static const char *const valid[] = {
	        "#",
	        "+",
	        "/",
	        "//",
	        "a",
	        "a/b",
	        "a/#",
	        "a/+",
	        "+/+",
	        "/+",
	        "+/",
	        "a/+/b",
	        "sport/tennis/player1/#",
	        "sport/#",
	        "sport/tennis/+",
	        "+/tennis/#",
	        "$SYS/#",
	        "$SYS/monitor/+",
	        "a//b",
	        "/#",
	        "+/#",
	        "$share/g/a/b",
	        "$share//a",
	        "$queue/a/b",
	};
	static const char *const invalid[] = {
	        "",       "a/#/b", "a+",  "+a",   "a/#b",   "a#",
	        "#a",     "##",    "++",  "a/b+", "a/+b/c", "sport/tennis#",
	        "sport+", "#/",    "#/a", "a/#/", "+#",     "a/++",
	};
	for (size_t i = 0; i < sizeof(valid) / sizeof(*valid); i++)
		ck_assert_msg(filter_ok(valid[i]), "'%s' should be a valid filter", valid[i]);
	for (size_t i = 0; i < sizeof(invalid) / sizeof(*invalid); i++)
		ck_assert_msg(!filter_ok(invalid[i]), "'%s' should be an invalid filter",
		              invalid[i]);
	ck_assert(!mqbi_topic_filter_valid("a\0b", 3, 0));
	ck_assert(!mqbi_topic_filter_valid(NULL, 0, 0));
	/* Only the given length counts. */
	ck_assert(mqbi_topic_filter_valid("a/#/b", 3, 0));
}
END_TEST

START_TEST(test_filter_max_levels)
{
	ck_assert(mqbi_topic_filter_valid("a/b/c", 5, 3));
	ck_assert(!mqbi_topic_filter_valid("a/b/c/d", 7, 3));
	ck_assert(mqbi_topic_filter_valid("a/b/#", 5, 3));
	ck_assert(!mqbi_topic_filter_valid("a/b/c/#", 7, 3));
	ck_assert(mqbi_topic_filter_valid("/", 1, 2));
	ck_assert(!mqbi_topic_filter_valid("//", 2, 2));
	ck_assert(mqbi_topic_filter_valid("#", 1, 1));
	ck_assert(!mqbi_topic_filter_valid("a/b", 3, 1));
	/* 0 = unlimited */
	ck_assert(mqbi_topic_filter_valid("a/b/c/d/e/f/g/h/i/j", 19, 0));
}
END_TEST

START_TEST(test_levels_and_wildcards)
{
	ck_assert_uint_eq(mqbi_topic_levels("a/b", 3), 2);
	ck_assert_uint_eq(mqbi_topic_levels("/", 1), 2);
	ck_assert_uint_eq(mqbi_topic_levels("a", 1), 1);
	ck_assert_uint_eq(mqbi_topic_levels("", 0), 0);
	ck_assert_uint_eq(mqbi_topic_levels("a//b/", 5), 4);
	ck_assert(mqbi_topic_has_wildcard("a/+", 3));
	ck_assert(mqbi_topic_has_wildcard("#", 1));
	ck_assert(!mqbi_topic_has_wildcard("a/b", 3));
	ck_assert(!mqbi_topic_has_wildcard("", 0));
}
END_TEST

static const struct {
	const char *filter, *topic;
	bool match;
} match_table[] = {
        /* MQTT 5.0 §4.7.1.2 multi-level wildcard */
        {"sport/tennis/player1/#", "sport/tennis/player1", true},
        {"sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
        {"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
        {"sport/tennis/player1/#", "sport/tennis/player2", false},
        {"sport/tennis/player1/#", "sport/tennis", false},
        {"sport/#", "sport", true},
        {"sport/#", "sport/", true},
        {"sport/#", "sports", false},
        {"#", "sport", true},
        {"#", "/", true},
        {"#", "a/b/c/d", true},
        {"#", "/finance", true},
        /* §4.7.1.3 single-level wildcard */
        {"sport/tennis/+", "sport/tennis/player1", true},
        {"sport/tennis/+", "sport/tennis/player2", true},
        {"sport/tennis/+", "sport/tennis/player1/ranking", false},
        {"sport/tennis/+", "sport/tennis/", true},
        {"sport/+", "sport", false},
        {"sport/+", "sport/", true},
        {"+", "sport", true},
        {"+", "/finance", false},
        {"+/+", "/finance", true},
        {"/+", "/finance", true},
        {"+/+", "a/b/c", false},
        {"+/tennis/#", "sport/tennis/player1", true},
        {"+/tennis/#", "sport/tennis", true},
        {"+/tennis/#", "sport/golf", false},
        {"+/+/+", "a//c", true},
        {"a/+/c", "a//c", true},
        {"a/+/c", "a/b/c/d", false},
        /* §4.7.2 topics beginning with '$' */
        {"#", "$SYS/broker/clients", false},
        {"#", "$SYS", false},
        {"+/monitor/Clients", "$SYS/monitor/Clients", false},
        {"$SYS/#", "$SYS/monitor/Clients", true},
        {"$SYS/#", "$SYS", true},
        {"$SYS/monitor/+", "$SYS/monitor/Clients", true},
        {"+", "$SYS", false},
        {"+/#", "$foo/bar", false},
        {"$SYS/+/Clients", "$SYS/monitor/Clients", true},
        {"a/$b", "a/$b", true},
        {"a/+", "a/$b", true},
        {"a/#", "a/$b/c", true},
        {"$share/#", "$share/g/x", true},
        /* exact levels, case and empty levels */
        {"ACCOUNTS", "Accounts", false},
        {"accounts", "accounts", true},
        {"a/b", "a/b/", false},
        {"a/b/", "a/b", false},
        {"a/b/", "a/b/", true},
        {"a//b", "a//b", true},
        {"a//b", "a/b", false},
        {"/", "/", true},
        {"/", "a", false},
        {"/#", "/", true},
        {"/#", "a", false},
        {"+", "", false},
        {"a/b/c", "a/b/c", true},
        {"a/b/c", "a/b", false},
        {"a/b", "a/b/c", false},
        {"a/b/#", "a/b", true},
        {"a/b/#", "a/bc", false},
        {"ab/#", "a", false},
        {" ", " ", true},
        {"+/+", "/", true},
        {"+", "/", false},
        {"#", "+", true},
};

START_TEST(test_match_table)
{
	size_t n = sizeof(match_table) / sizeof(*match_table);
	ck_assert_uint_ge(n, 40);
	for (size_t i = 0; i < n; i++) {
		bool got = matches(match_table[i].filter, match_table[i].topic);
		ck_assert_msg(got == match_table[i].match, "'%s' vs '%s': expected %d",
		              match_table[i].filter, match_table[i].topic, match_table[i].match);
	}
}
END_TEST

START_TEST(test_match_lengths)
{
	/* Only the given lengths are read. */
	ck_assert(mqbi_topic_matches("a/bXX", 3, "a/bYY", 3));
	ck_assert(!mqbi_topic_matches("a/b", 3, "a/bc", 4));
	ck_assert(!mqbi_topic_matches("", 0, "a", 1));
}
END_TEST

static int split(const char *s, char *group, char *filter)
{
	const char *g, *f;
	size_t gl, fl;
	int rc = mqbi_topic_split_shared(s, strlen(s), &g, &gl, &f, &fl);
	if (group) {
		memcpy(group, g ? g : "", gl);
		group[gl] = '\0';
	}
	if (filter && rc >= 0) {
		memcpy(filter, f, fl);
		filter[fl] = '\0';
	}
	return rc;
}

START_TEST(test_split_shared)
{
	char g[64], f[64];
	ck_assert_int_eq(split("$share/g/a/b", g, f), 1);
	ck_assert_str_eq(g, "g");
	ck_assert_str_eq(f, "a/b");
	ck_assert_int_eq(split("$share/group1/#", g, f), 1);
	ck_assert_str_eq(g, "group1");
	ck_assert_str_eq(f, "#");
	ck_assert_int_eq(split("$share/g/+/x", g, f), 1);
	ck_assert_str_eq(f, "+/x");
	ck_assert_int_eq(split("$share/g//", g, f), 1);
	ck_assert_str_eq(f, "/");
	ck_assert_int_eq(split("$share/g/$SYS/#", g, f), 1);
	ck_assert_str_eq(f, "$SYS/#");
	ck_assert_int_eq(split("$queue/a/b", g, f), 1);
	ck_assert_str_eq(g, "$queue");
	ck_assert_str_eq(f, "a/b");
	ck_assert_int_eq(split("$queue/#", g, f), 1);
	ck_assert_str_eq(f, "#");

	/* Not shared: the filter is the input. */
	ck_assert_int_eq(split("a/b", g, f), 0);
	ck_assert_str_eq(g, "");
	ck_assert_str_eq(f, "a/b");
	ck_assert_int_eq(split("$share", g, f), 0);
	ck_assert_int_eq(split("$queue", g, f), 0);
	ck_assert_int_eq(split("$sharex/g/a", g, f), 0);
	ck_assert_int_eq(split("$SYS/a", g, f), 0);
	ck_assert_int_eq(split("share/g/a", g, f), 0);

	/* Malformed shares. */
	static const char *const bad[] = {
	        "$share/",    "$share/g",     "$share/g/", "$share//a",      "$share/+/a",
	        "$share/#/a", "$share/g+/a",  "$share/#",  "$share/g/a/#/b", "$share/g/a+",
	        "$queue/",    "$queue/a/#/b", "$share//",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
		ck_assert_msg(split(bad[i], NULL, NULL) == -1, "'%s' should be malformed", bad[i]);
}
END_TEST

/* A second opinion written independently: recursion over NUL-free strings. */
static bool ref_match(const char *f, const char *t, bool first)
{
	if (first && *t == '$' && (*f == '+' || *f == '#'))
		return false;
	if (f[0] == '#' && f[1] == '\0')
		return true;
	if (f[0] == '+' && (f[1] == '/' || f[1] == '\0')) {
		while (*t && *t != '/')
			t++;
		f++;
	} else {
		while (*f && *f != '/' && *f == *t && *t != '/') {
			f++;
			t++;
		}
		if ((*f && *f != '/') || (*t && *t != '/'))
			return false;
	}
	if (!*f)
		return !*t;
	/* f is at '/' */
	if (!*t)
		return strcmp(f, "/#") == 0;
	return ref_match(f + 1, t + 1, false);
}

START_TEST(test_match_random)
{
	static const char *const lv[] = {"a", "b", "", "$x", "ab"};
	unsigned seed = 12345;
	char f[64], t[64];
	for (int it = 0; it < 200000; it++) {
		size_t fl = 0, tl = 0;
		int nf = 1 + (int)(rand_r(&seed) % 4), nt = 1 + (int)(rand_r(&seed) % 4);
		for (int i = 0; i < nf; i++) {
			if (i)
				f[fl++] = '/';
			int r = (int)(rand_r(&seed) % 7);
			const char *s = r == 5 ? "+" : (r == 6 && i == nf - 1) ? "#" : lv[r % 5];
			memcpy(f + fl, s, strlen(s));
			fl += strlen(s);
		}
		for (int i = 0; i < nt; i++) {
			if (i)
				t[tl++] = '/';
			const char *s = lv[rand_r(&seed) % 5];
			memcpy(t + tl, s, strlen(s));
			tl += strlen(s);
		}
		f[fl] = t[tl] = '\0';
		if (!fl || !tl)
			continue; /* a lone empty level: not a valid filter or name */
		ck_assert_msg(mqbi_topic_filter_valid(f, fl, 0), "%s", f);
		ck_assert_msg(mqbi_topic_matches(f, fl, t, tl) == ref_match(f, t, true),
		              "'%s' vs '%s'", f, t);
	}
}
END_TEST

static Suite *topic_suite(void)
{
	Suite *s = suite_create("topic");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_name_valid);
	tcase_add_test(tc, test_filter_valid);
	tcase_add_test(tc, test_filter_max_levels);
	tcase_add_test(tc, test_levels_and_wildcards);
	tcase_add_test(tc, test_match_table);
	tcase_add_test(tc, test_match_lengths);
	tcase_add_test(tc, test_split_shared);
	tcase_add_test(tc, test_match_random);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(topic_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
