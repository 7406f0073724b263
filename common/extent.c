// SPDX-License-Identifier: MIT
/* Allocation maps: sorted data extents, and lseek-style queries on them. */
#include <stdlib.h>

#include "extent.h"

static int extent_cmp(const void *a, const void *b)
{
	const CfsExtent *x = a, *y = b;

	if (x->offset != y->offset)
		return x->offset < y->offset ? -1 : 1;
	return 0;
}

CfsExtentMap *cfs_extent_map_new(guint64 size, const CfsExtent *ext, guint n)
{
	CfsExtentMap *map = g_new0(CfsExtentMap, 1);
	g_autofree CfsExtent *tmp = n ? g_memdup2(ext, sizeof(*ext) * n) : NULL;
	guint out = 0;

	map->refcount = 1;
	map->size = size;
	map->ext = g_new0(CfsExtent, MAX(n, 1));
	if (n)
		qsort(tmp, n, sizeof(*tmp), extent_cmp);
	for (guint i = 0; i < n; i++) {
		guint64 start = tmp[i].offset;
		guint64 end = start + tmp[i].length;

		if (end > size || end < start)
			end = size;
		if (start >= end)
			continue;
		if (out > 0) {
			CfsExtent *last = &map->ext[out - 1];

			if (start <= last->offset + last->length) {
				guint64 last_end = last->offset + last->length;

				last->length = MAX(last_end, end) - last->offset;
				continue;
			}
		}
		map->ext[out].offset = start;
		map->ext[out].length = end - start;
		out++;
	}
	map->n = out;
	for (guint i = 0; i < out; i++)
		map->data_bytes += map->ext[i].length;
	return map;
}

CfsExtentMap *cfs_extent_map_new_full(guint64 size)
{
	CfsExtent all = { 0, size };

	return cfs_extent_map_new(size, &all, 1);
}

CfsExtentMap *cfs_extent_map_ref(CfsExtentMap *map)
{
	g_atomic_int_inc(&map->refcount);
	return map;
}

void cfs_extent_map_unref(CfsExtentMap *map)
{
	if (map && g_atomic_int_dec_and_test(&map->refcount)) {
		g_free(map->ext);
		g_free(map);
	}
}

/* Index of the first extent that ends after @off (n if none). */
static guint extent_first_ending_after(const CfsExtentMap *map, guint64 off)
{
	guint lo = 0, hi = map->n;

	while (lo < hi) {
		guint mid = lo + (hi - lo) / 2;
		const CfsExtent *e = &map->ext[mid];

		if (e->offset + e->length <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

bool cfs_extent_map_any_data(const CfsExtentMap *map, guint64 off,
			     guint64 len)
{
	guint i = extent_first_ending_after(map, off);

	return len > 0 && i < map->n && map->ext[i].offset < off + len;
}

bool cfs_extent_map_next_data(const CfsExtentMap *map, guint64 off,
			      guint64 *out)
{
	guint i;

	if (off >= map->size)
		return false;
	i = extent_first_ending_after(map, off);
	if (i == map->n)
		return false;
	*out = MAX(off, map->ext[i].offset);
	return true;
}

bool cfs_extent_map_next_hole(const CfsExtentMap *map, guint64 off,
			      guint64 *out)
{
	guint i;

	if (off >= map->size)
		return false;
	i = extent_first_ending_after(map, off);
	if (i == map->n || map->ext[i].offset > off)
		*out = off;
	else
		*out = map->ext[i].offset + map->ext[i].length;
	return true;
}
