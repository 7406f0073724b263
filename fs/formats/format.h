/* SPDX-License-Identifier: MIT */
/*
 * Disk format views: a file whose every byte is either synthesized
 * metadata (headers, tables, footers, markers) or computed from a range of
 * the raw disk. A view is pure arithmetic over the disk size and its
 * allocation map, so its size is exact before any byte of the disk moves.
 *
 * Reading a view is two steps, so that the engine can park a FUSE read on
 * the raw chunks it needs without blocking a thread:
 *   1. cfs_view_deps() says which raw ranges [off, off+len) of the view
 *      needs;
 *   2. once they are in the cache, cfs_view_read() produces the bytes,
 *      pulling raw data through a callback that cannot miss.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>

#include "common/extent.h"

typedef struct CfsView CfsView;

/* Reads raw disk bytes [off, off+len) into @buf. Only called for ranges
 * that cfs_view_deps() reported, after they are present. Returns false
 * with @error set on an I/O error. */
typedef bool (*CfsRawReadFn)(void *opaque, void *buf, gsize len, guint64 off,
			     GError **error);

typedef struct {
	const char *name;	/* "raw", "vhd", "vmdk", "vhdx", "qcow2" */
	/* Build the view of a disk of map->size bytes whose data is where
	 * @map says. Holds a reference to @map. Transfer full. */
	CfsView *(*create)(CfsExtentMap *map, GError **error);
} CfsFormat;

/* The known formats, by name or file extension ("vmdk"); NULL if none. */
const CfsFormat *cfs_format_find(const char *name);

/* NULL-terminated list of every format, for --help and option checks. */
const CfsFormat *const *cfs_formats_all(void);

/* Exact size of the view in bytes; the same for the same disk and map. */
guint64 cfs_view_size(const CfsView *view);

/* The format this view presents. */
const CfsFormat *cfs_view_format(const CfsView *view);

/*
 * Append to @ranges (a GArray of CfsExtent) the raw disk ranges needed to
 * produce view bytes [off, off+len). Ranges are within the disk and may
 * overlap. Holes of the raw disk are never reported. Any thread.
 */
void cfs_view_deps(const CfsView *view, guint64 off, guint64 len,
		   GArray *ranges);

/*
 * Produce view bytes [off, off+len) into @buf (len bytes; a range past the
 * end of the view is an error, the caller clamps). Calls @raw for the raw
 * data it needs. Any thread; the view itself is immutable.
 */
bool cfs_view_read(const CfsView *view, void *buf, gsize len, guint64 off,
		   CfsRawReadFn raw, void *opaque, GError **error);

/*
 * lseek(SEEK_DATA/SEEK_HOLE) on the view: where the view has holes that
 * read as zeros (raw: the disk's holes; fixed VHD: the same, before the
 * footer). A format without holes answers data everywhere. Returns false
 * for ENXIO.
 */
bool cfs_view_next_data(const CfsView *view, guint64 off, guint64 *out);
bool cfs_view_next_hole(const CfsView *view, guint64 off, guint64 *out);

void cfs_view_free(CfsView *view);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(CfsView, cfs_view_free)
