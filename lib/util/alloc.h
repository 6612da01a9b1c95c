/* Allocation through the host's allocator hooks (mqb_allocator). */
#ifndef MQBI_ALLOC_H
#define MQBI_ALLOC_H

#include <stddef.h>
#include <string.h>

#include "mqttbroker.h"

/* The C library's allocator, used when the host sets none. */
extern const mqb_allocator mqbi_default_allocator;

static inline void *mqbi_malloc(const mqb_allocator *a, size_t n)
{
	return a->malloc_fn(a->ctx, n);
}

static inline void *mqbi_calloc(const mqb_allocator *a, size_t n)
{
	void *p = a->malloc_fn(a->ctx, n);
	if (p)
		memset(p, 0, n);
	return p;
}

static inline void *mqbi_realloc(const mqb_allocator *a, void *p, size_t n)
{
	return a->realloc_fn(a->ctx, p, n);
}

static inline void mqbi_free(const mqb_allocator *a, void *p)
{
	a->free_fn(a->ctx, p);
}

/* Copies len bytes and appends a NUL. */
static inline char *mqbi_strndup(const mqb_allocator *a, const void *s, size_t len)
{
	char *p = a->malloc_fn(a->ctx, len + 1);
	if (p) {
		if (len)
			memcpy(p, s, len);
		p[len] = '\0';
	}
	return p;
}

#endif
