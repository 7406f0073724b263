/* SPDX-License-Identifier: MIT */
/*
 * What the format views share and do not export: the view instance, the
 * table of operations each format fills, the fill context that serves
 * both cfs_view_deps() and cfs_view_read(), and arithmetic helpers over
 * allocation maps (runs of allocated units, ranks and selects).
 */
#pragma once

#include <glib.h>
#include <stdbool.h>

#include "fs/formats/format.h"

/*
 * One pass over a piece of the view. With @dst NULL the pass collects the
 * raw ranges it would read into @ranges (deps mode); otherwise it writes
 * the view bytes into @dst, reading raw data through @raw.
 */
typedef struct {
	GArray *ranges;		/* deps mode: CfsExtents to append to */
	CfsRawReadFn raw;	/* read mode */
	void *opaque;
	GError **error;
} CfsFill;

typedef struct {
	/*
	 * Handle view bytes [off, off + len) up to the end of the piece that
	 * holds @off: set *done (1..len) to the number of bytes handled.
	 * @dst is NULL in deps mode. Returns false with f->error set.
	 */
	bool (*fill)(const CfsView *view, CfsFill *f, guint8 *dst,
		     guint64 off, guint64 len, guint64 *done);
	/* lseek over the view; NULL means data everywhere. */
	bool (*next_data)(const CfsView *view, guint64 off, guint64 *out);
	bool (*next_hole)(const CfsView *view, guint64 off, guint64 *out);
	/* Free what the format added past the CfsView head; may be NULL. */
	void (*destroy)(CfsView *view);
} CfsViewOps;

/* Each format's instance starts with this head. Immutable once built. */
struct CfsView {
	const CfsFormat *format;
	const CfsViewOps *ops;
	CfsExtentMap *map;	/* a reference */
	guint64 size;		/* exact size of the view */
};

/* Allocate a view of @struct_size bytes with its head filled in. */
CfsView *cfs_view_alloc(gsize struct_size, const CfsFormat *format,
			const CfsViewOps *ops, CfsExtentMap *map);

/*
 * Raw disk bytes [disk_off, disk_off + len) in the fill pass: data parts
 * through f->raw (or into f->ranges), holes and bytes past the end of the
 * disk as zeros (never reported, never read).
 */
bool cfs_fill_raw(const CfsView *view, CfsFill *f, guint8 *dst,
		  guint64 disk_off, guint64 len);

/* Copy into @dst (which holds view bytes [off, off + len)) the part of
 * the blob at view offset @blob_off that overlaps. */
void cfs_fill_blob(guint8 *dst, guint64 off, guint64 len, guint64 blob_off,
		   const void *blob, gsize blob_len);

/* 32 bytes that depend only on the disk size, the map and @salt. */
void cfs_view_digest(const CfsExtentMap *map, const char *salt,
		     guint8 out[32]);

/*
 * Units of @unit bytes (grains, clusters, blocks) that hold any data,
 * as sorted runs with the number of allocated units before each run.
 * O(extents) memory.
 */
typedef struct {
	guint64 start;		/* first unit index of the run */
	guint64 count;		/* units in the run */
	guint64 before;		/* allocated units before the run */
} CfsRun;

typedef struct {
	guint64 unit;
	guint n;
	CfsRun *runs;
	guint64 total;		/* allocated units */
} CfsUnits;

void cfs_units_init(CfsUnits *u, const CfsExtentMap *map, guint64 unit);
/* Runs of units of @span lower units each (e.g. tables over clusters). */
void cfs_units_group(CfsUnits *out, const CfsUnits *in, guint64 span);
void cfs_units_clear(CfsUnits *u);
/* Allocated units below @idx. */
guint64 cfs_units_before(const CfsUnits *u, guint64 idx);
/* Whether unit @idx is allocated; if so *rank is its rank. */
bool cfs_units_rank(const CfsUnits *u, guint64 idx, guint64 *rank);
/* Index of the allocated unit of rank @k (k < total). */
guint64 cfs_units_select(const CfsUnits *u, guint64 k);

/* Adler-32 of @data continuing from @adler (1 to start), as zlib ends a
 * stream with it. */
guint32 cfs_adler32(guint32 adler, const void *data, gsize len);

/* CRC-32C (Castagnoli), as VHDX checksums its headers and tables. */
guint32 cfs_crc32c(guint32 crc, const void *data, gsize len);

/* Formats, defined in their own files. */
extern const CfsFormat cfs_format_raw;
extern const CfsFormat cfs_format_vhd;
extern const CfsFormat cfs_format_vmdk;
extern const CfsFormat cfs_format_vhdx;
extern const CfsFormat cfs_format_qcow2;

static inline void cfs_put_le16(guint8 *p, guint16 v)
{
	p[0] = v;
	p[1] = v >> 8;
}

static inline void cfs_put_le32(guint8 *p, guint32 v)
{
	for (int i = 0; i < 4; i++)
		p[i] = v >> (8 * i);
}

static inline void cfs_put_le64(guint8 *p, guint64 v)
{
	for (int i = 0; i < 8; i++)
		p[i] = v >> (8 * i);
}

static inline void cfs_put_be16(guint8 *p, guint16 v)
{
	p[0] = v >> 8;
	p[1] = v;
}

static inline void cfs_put_be32(guint8 *p, guint32 v)
{
	for (int i = 0; i < 4; i++)
		p[i] = v >> (24 - 8 * i);
}

static inline void cfs_put_be64(guint8 *p, guint64 v)
{
	for (int i = 0; i < 8; i++)
		p[i] = v >> (56 - 8 * i);
}

static inline guint64 cfs_div_up(guint64 a, guint64 b)
{
	return a / b + (a % b != 0);
}
