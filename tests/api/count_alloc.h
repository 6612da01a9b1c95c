/* A counting mqb_allocator for leak checks through the public API: atomic
 * counters of live allocations and live bytes. Each block carries a header
 * with its size. Header-only; include from one test file. */
#ifndef COUNT_ALLOC_H
#define COUNT_ALLOC_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <mqttbroker.h>

typedef struct count_alloc {
	atomic_long live;  /* allocations not yet freed */
	atomic_long bytes; /* bytes not yet freed */
	atomic_long total; /* allocations ever made */
} count_alloc;

#define CA_HDR 16 /* keeps max_align_t alignment */

static void *ca_malloc(void *ctx, size_t n)
{
	count_alloc *ca = ctx;
	unsigned char *p = malloc(n + CA_HDR);
	if (!p)
		return NULL;
	*(size_t *)p = n;
	atomic_fetch_add(&ca->live, 1);
	atomic_fetch_add(&ca->bytes, (long)n);
	atomic_fetch_add(&ca->total, 1);
	return p + CA_HDR;
}

static void ca_free(void *ctx, void *ptr)
{
	count_alloc *ca = ctx;
	if (!ptr)
		return;
	unsigned char *p = (unsigned char *)ptr - CA_HDR;
	atomic_fetch_sub(&ca->live, 1);
	atomic_fetch_sub(&ca->bytes, (long)*(size_t *)p);
	free(p);
}

static void *ca_realloc(void *ctx, void *ptr, size_t n)
{
	count_alloc *ca = ctx;
	if (!ptr)
		return ca_malloc(ctx, n);
	unsigned char *p = (unsigned char *)ptr - CA_HDR;
	size_t old = *(size_t *)p;
	unsigned char *q = realloc(p, n + CA_HDR);
	if (!q)
		return NULL;
	*(size_t *)q = n;
	atomic_fetch_add(&ca->bytes, (long)n - (long)old);
	return q + CA_HDR;
}

static inline mqb_allocator ca_allocator(count_alloc *ca)
{
	mqb_allocator a = {ca_malloc, ca_realloc, ca_free, ca};
	return a;
}

#endif
