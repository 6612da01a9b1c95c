/* A counting allocator for the unit tests: counts live blocks and can make
 * the n-th next allocation fail. Include from one test file. */
#ifndef COUNTING_ALLOC_H
#define COUNTING_ALLOC_H

#include <stdlib.h>

#include "mqttbroker.h"

typedef struct counting {
	long live;
	long fail_in; /* > 0: the fail_in-th next allocation fails */
} counting;

static void *c_malloc(void *ctx, size_t n)
{
	counting *c = ctx;
	if (c->fail_in > 0 && --c->fail_in == 0)
		return NULL;
	void *p = malloc(n ? n : 1);
	if (p)
		c->live++;
	return p;
}

static void *c_realloc(void *ctx, void *p, size_t n)
{
	counting *c = ctx;
	if (c->fail_in > 0 && --c->fail_in == 0)
		return NULL;
	void *q = realloc(p, n ? n : 1);
	if (q && !p)
		c->live++;
	return q;
}

static void c_free(void *ctx, void *p)
{
	counting *c = ctx;
	if (p)
		c->live--;
	free(p);
}

static counting cnt;
static const mqb_allocator alloc = {c_malloc, c_realloc, c_free, &cnt};

#endif
