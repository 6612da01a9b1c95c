#include <stdlib.h>

#include "alloc.h"

static void *default_malloc(void *ctx, size_t n)
{
	(void)ctx;
	return malloc(n ? n : 1);
}

static void *default_realloc(void *ctx, void *p, size_t n)
{
	(void)ctx;
	return realloc(p, n ? n : 1);
}

static void default_free(void *ctx, void *p)
{
	(void)ctx;
	free(p);
}

const mqb_allocator mqbi_default_allocator = {default_malloc, default_realloc, default_free, NULL};
