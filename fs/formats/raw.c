// SPDX-License-Identifier: MIT
/*
 * The raw view: the disk itself, byte for byte. Its holes are the holes of
 * the allocation map, for SEEK_DATA and SEEK_HOLE.
 */
#include "fs/formats/view-private.h"

static bool raw_fill(const CfsView *view, CfsFill *f, guint8 *dst,
		     guint64 off, guint64 len, guint64 *done)
{
	*done = len;
	return cfs_fill_raw(view, f, dst, off, len);
}

static bool raw_next_data(const CfsView *view, guint64 off, guint64 *out)
{
	return cfs_extent_map_next_data(view->map, off, out);
}

static bool raw_next_hole(const CfsView *view, guint64 off, guint64 *out)
{
	return cfs_extent_map_next_hole(view->map, off, out);
}

static const CfsViewOps raw_ops = {
	.fill = raw_fill,
	.next_data = raw_next_data,
	.next_hole = raw_next_hole,
};

static CfsView *raw_create(CfsExtentMap *map, GError **error)
{
	CfsView *view = cfs_view_alloc(sizeof(CfsView), &cfs_format_raw,
				       &raw_ops, map);

	view->size = map->size;
	return view;
}

const CfsFormat cfs_format_raw = {
	.name = "raw",
	.create = raw_create,
};
