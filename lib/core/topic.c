#include "topic.h"

#include <string.h>

bool mqbi_topic_name_valid(const char *t, size_t len)
{
	if (!t || !len)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = t[i];
		if (c == '+' || c == '#' || c == '\0')
			return false;
	}
	return true;
}

bool mqbi_topic_filter_valid(const char *f, size_t len, unsigned max_levels)
{
	if (!f || !len)
		return false;
	size_t levels = 1;
	size_t start = 0; /* start of the current level */
	for (size_t i = 0; i < len; i++) {
		char c = f[i];
		if (c == '/') {
			levels++;
			start = i + 1;
			continue;
		}
		if (c == '\0')
			return false;
		if (c != '+' && c != '#')
			continue;
		/* A wildcard must be the whole level; '#' must also be the last one. */
		if (i != start || (i + 1 < len && f[i + 1] != '/'))
			return false;
		if (c == '#' && i + 1 != len)
			return false;
	}
	return !max_levels || levels <= max_levels;
}

unsigned mqbi_topic_levels(const char *t, size_t len)
{
	if (!len)
		return 0;
	unsigned n = 1;
	for (size_t i = 0; i < len; i++)
		n += t[i] == '/';
	return n;
}

bool mqbi_topic_has_wildcard(const char *f, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (f[i] == '+' || f[i] == '#')
			return true;
	}
	return false;
}

/* End of the level that starts at pos: the next '/' or len. */
static size_t level_end(const char *s, size_t pos, size_t len)
{
	const char *p = memchr(s + pos, '/', len - pos);
	return p ? (size_t)(p - s) : len;
}

bool mqbi_topic_matches(const char *filter, size_t flen, const char *topic, size_t tlen)
{
	if (!flen || !tlen)
		return false;
	if (topic[0] == '$' && (filter[0] == '+' || filter[0] == '#'))
		return false;
	/* fp / tp: start of the current level, or len + 1 once all are consumed. */
	size_t fp = 0, tp = 0;
	while (fp <= flen) {
		size_t fe = level_end(filter, fp, flen);
		if (fe - fp == 1 && filter[fp] == '#')
			return true; /* also matches the parent level: "a/#" matches "a" */
		if (tp > tlen)
			return false;
		size_t te = level_end(topic, tp, tlen);
		if (!(fe - fp == 1 && filter[fp] == '+') &&
		    (fe - fp != te - tp || memcmp(filter + fp, topic + tp, fe - fp) != 0))
			return false;
		fp = fe + 1;
		tp = te + 1;
	}
	return tp > tlen;
}

int mqbi_topic_split_shared(const char *f, size_t len, const char **group, size_t *glen,
                            const char **filter, size_t *flen)
{
	*group = NULL;
	*glen = 0;
	*filter = f;
	*flen = len;
	if (len >= 7 && memcmp(f, "$queue/", 7) == 0) {
		/* EMQX: every "$queue/" subscriber shares the one group "$queue". */
		*group = f;
		*glen = 6;
		*filter = f + 7;
		*flen = len - 7;
	} else if (len >= 7 && memcmp(f, "$share/", 7) == 0) {
		const char *g = f + 7;
		size_t rest = len - 7;
		const char *slash = memchr(g, '/', rest);
		if (!slash || slash == g)
			return -1;
		size_t n = (size_t)(slash - g);
		for (size_t i = 0; i < n; i++) {
			if (g[i] == '+' || g[i] == '#' || g[i] == '\0')
				return -1;
		}
		*group = g;
		*glen = n;
		*filter = slash + 1;
		*flen = rest - n - 1;
	} else {
		return 0;
	}
	if (!mqbi_topic_filter_valid(*filter, *flen, 0))
		return -1;
	return 1;
}
