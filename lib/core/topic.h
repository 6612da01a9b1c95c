/* Pure topic-name and topic-filter helpers (no allocation). */
#ifndef MQBI_TOPIC_H
#define MQBI_TOPIC_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

/* A PUBLISH topic name: non-empty, no '+' or '#', no U+0000 (UTF-8 validity
 * is checked by the codec). */
bool mqbi_topic_name_valid(const char *t, size_t len);

/* A topic filter: non-empty; '#' only as the whole last level; '+' only as a
 * whole level. `max_levels` > 0 also limits the number of levels. */
bool mqbi_topic_filter_valid(const char *f, size_t len, unsigned max_levels);

/* Number of levels ("a/b" = 2, "/" = 2, "a" = 1, "" = 0). */
unsigned mqbi_topic_levels(const char *t, size_t len);

/* True for the broker's own topics, "$SYS/...". */
static inline bool mqbi_topic_is_sys(const char *t, size_t len)
{
	return len >= 5 && memcmp(t, "$SYS/", 5) == 0;
}

/* True if filter contains '+' or '#'. */
bool mqbi_topic_has_wildcard(const char *f, size_t len);

/* True if the topic name matches the filter. Topics starting with '$' are not
 * matched by a filter whose first level is '+' or '#' [MQTT-4.7.2-1]. The
 * filter should be valid; an invalid one gives a safe but unspecified result. */
bool mqbi_topic_matches(const char *filter, size_t flen, const char *topic, size_t tlen);

/* Splits a shared subscription. "$share/{group}/{filter}" and EMQX's
 * "$queue/{filter}" (group "$queue") return 1 with group and filter set;
 * a filter that is not shared returns 0 (filter = input, group len 0);
 * a malformed share ("$share/", "$share/g", group with '+', '#' or '/',
 * empty or invalid filter) returns -1. max_levels is left to the caller. */
int mqbi_topic_split_shared(const char *f, size_t len, const char **group, size_t *glen,
                            const char **filter, size_t *flen);

#endif
