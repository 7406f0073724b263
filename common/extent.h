/* SPDX-License-Identifier: MIT */
/*
 * Allocation maps: which byte ranges of a disk hold data. Everything
 * outside the listed extents is a hole that reads as zeros and is never
 * fetched. Used by providers (to describe a source), the cache (to skip
 * hole chunks), SEEK_DATA/SEEK_HOLE and the format views.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>

typedef struct {
	guint64 offset;
	guint64 length;
} CfsExtent;

/*
 * An immutable, sorted list of non-overlapping, non-adjacent data extents
 * inside [0, size). Refcounted; once built it may be read from any thread
 * without a lock.
 */
typedef struct {
	gint refcount;
	guint64 size;		/* the disk's size in bytes */
	guint n;		/* number of extents */
	CfsExtent *ext;		/* sorted by offset */
	guint64 data_bytes;	/* sum of extent lengths */
} CfsExtentMap;

/* A map with one extent covering the whole disk (everything is data).
 * Transfer full. */
CfsExtentMap *cfs_extent_map_new_full(guint64 size);

/* Build a map from unsorted, possibly overlapping or adjacent extents; they
 * are clipped to [0, size), sorted and merged. Transfer full. */
CfsExtentMap *cfs_extent_map_new(guint64 size, const CfsExtent *ext, guint n);

CfsExtentMap *cfs_extent_map_ref(CfsExtentMap *map);
void cfs_extent_map_unref(CfsExtentMap *map);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(CfsExtentMap, cfs_extent_map_unref)

/* Whether any byte of [off, off+len) is data. */
bool cfs_extent_map_any_data(const CfsExtentMap *map, guint64 off,
			     guint64 len);

/*
 * lseek semantics over the map: the first data (or hole) offset at or after
 * @off. Returns false when there is none before the end (SEEK_DATA past the
 * last extent, or @off >= size): the caller answers ENXIO. The end of the
 * disk counts as a hole, as lseek(2) says.
 */
bool cfs_extent_map_next_data(const CfsExtentMap *map, guint64 off,
			      guint64 *out);
bool cfs_extent_map_next_hole(const CfsExtentMap *map, guint64 off,
			      guint64 *out);
