/* The children of a tree node: see kids.h. */
#include "kids.h"

#include "util/alloc.h"

size_t mqbi_pow2_ceil(size_t n)
{
	size_t c = 1;
	while (c < n)
		c *= 2;
	return c;
}

void *mqbi_array_reserve(const mqb_allocator *a, void *arr, size_t n, size_t elem)
{
	if (!mqbi_is_pow2_or_zero(n))
		return arr;
	return mqbi_realloc(a, arr, (n ? n * 2 : 1) * elem);
}

void *mqbi_array_trim(const mqb_allocator *a, void *arr, size_t n, size_t elem)
{
	if (!n) {
		mqbi_free(a, arr);
		return NULL;
	}
	if (!mqbi_is_pow2_or_zero(n))
		return arr;
	void *p = mqbi_realloc(a, arr, n * elem);
	return p ? p : arr;
}

static mqb_err map_put(mqbi_strmap *m, void *c, mqbi_kid_name_fn name)
{
	size_t len;
	const char *nm = name(c, &len);
	return mqbi_strmap_put(m, nm, len, c);
}

mqb_err mqbi_kids_add(const mqb_allocator *a, mqbi_kids *k, uint32_t *n, void *c,
                      mqbi_kid_name_fn name)
{
	uint32_t count = *n;
	if (count & MQBI_KIDS_MAP) {
		mqb_err err = map_put(k->map, c, name);
		if (err)
			return err;
	} else if (count == 0) {
		k->one = c;
	} else if (count == 1) {
		void **arr = mqbi_malloc(a, 2 * sizeof(*arr));
		if (!arr)
			return MQB_ERR_NOMEM;
		arr[0] = k->one;
		arr[1] = c;
		k->arr = arr;
	} else if (count < MQBI_KIDS_ARRAY_MAX) {
		void **arr = mqbi_array_reserve(a, k->arr, count, sizeof(*arr));
		if (!arr)
			return MQB_ERR_NOMEM;
		arr[count] = c;
		k->arr = arr;
	} else {
		mqbi_strmap *m = mqbi_malloc(a, sizeof(*m));
		if (!m)
			return MQB_ERR_NOMEM;
		mqbi_strmap_init(m, a);
		void **arr = k->arr;
		mqb_err err = map_put(m, c, name);
		for (uint32_t i = 0; i < count && !err; i++)
			err = map_put(m, arr[i], name);
		if (err) {
			mqbi_strmap_fini(m);
			mqbi_free(a, m);
			return err;
		}
		mqbi_free(a, arr);
		k->map = m;
		count |= MQBI_KIDS_MAP;
	}
	*n = count + 1;
	return MQB_OK;
}

void mqbi_kids_del(const mqb_allocator *a, mqbi_kids *k, uint32_t *n, const void *c,
                   mqbi_kid_name_fn name)
{
	uint32_t count = *n;
	if (!(count & MQBI_KIDS_MAP)) {
		if (count == 1) {
			k->one = NULL;
		} else if (count == 2) {
			void **arr = k->arr;
			k->one = arr[0] == c ? arr[1] : arr[0];
			mqbi_free(a, arr);
		} else {
			void **arr = k->arr;
			uint32_t i = 0;
			while (arr[i] != c)
				i++;
			arr[i] = arr[count - 1];
			k->arr = mqbi_array_trim(a, arr, count - 1, sizeof(*arr));
		}
		*n = count - 1;
		return;
	}
	mqbi_strmap *m = k->map;
	size_t len;
	const char *nm = name(c, &len);
	mqbi_strmap_remove(m, nm, len);
	count = mqbi_kids_count(count) - 1;
	if (count > MQBI_KIDS_ARRAY_MIN) {
		*n = count | MQBI_KIDS_MAP;
		mqbi_strmap_shrink(m);
		return;
	}
	void **arr = NULL, *one = NULL;
	size_t pos = 0;
	void *v;
	if (count == 1) {
		mqbi_strmap_next(m, &pos, NULL, NULL, &v);
		one = v;
	} else if (count > 1) {
		arr = mqbi_malloc(a, mqbi_pow2_ceil(count) * sizeof(*arr));
		if (!arr) {
			*n = count | MQBI_KIDS_MAP;
			mqbi_strmap_shrink(m);
			return;
		}
		for (uint32_t i = 0; mqbi_strmap_next(m, &pos, NULL, NULL, &v); i++)
			arr[i] = v;
	}
	mqbi_strmap_fini(m);
	mqbi_free(a, m);
	if (count == 1)
		k->one = one;
	else
		k->arr = arr;
	*n = count;
}

void mqbi_kids_free(const mqb_allocator *a, mqbi_kids *k, uint32_t n)
{
	if (n & MQBI_KIDS_MAP) {
		mqbi_strmap_fini(k->map);
		mqbi_free(a, k->map);
	} else if (n > 1) {
		mqbi_free(a, k->arr);
	}
}
