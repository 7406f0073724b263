/* SPDX-License-Identifier: MIT */
/*
 * What the container readers share and do not export: the reader head,
 * the per-format operations, pieces of the virtual disk (holes, direct
 * container ranges, compressed grains), runs of contiguous mappings, and
 * container access that never asks for the container's holes.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>

#include "common/error.h"
#include "fs/formats/reader.h"

#define CFS_READER_MAX_DISK (64ull << 40)	/* 64 TiB */

/* The container during open: its size, map and read callback. */
typedef struct {
	guint64 size;
	CfsExtentMap *map;	/* borrowed, may be NULL: all data */
	CfsRawReadFn read;
	void *opaque;
} CfsContainer;

typedef enum {
	CFS_PIECE_ZERO,		/* reads as zeros */
	CFS_PIECE_DIRECT,	/* container bytes at coff, as they are */
	CFS_PIECE_GRAIN,	/* inside a compressed grain record */
} CfsPieceKind;

/* Virtual bytes [off, off + len) of one kind. */
typedef struct {
	CfsPieceKind kind;
	guint64 len;
	guint64 coff;		/* DIRECT: container offset of off;
				 * GRAIN: offset of the grain record */
	guint64 clen;		/* GRAIN: container bytes that may hold it */
	guint64 index;		/* GRAIN: grain number */
	guint64 skip;		/* GRAIN: offset of off in the grain */
} CfsPiece;

typedef struct {
	/* Describe virtual bytes from @off (< disk size) up to @len (> 0)
	 * bytes: set p->len in 1..len. NULL: use the reader's runs. */
	void (*piece)(const CfsReader *r, guint64 off, guint64 len,
		      CfsPiece *p);
	/* Produce a GRAIN piece into @dst (p->len bytes). */
	bool (*grain)(const CfsReader *r, const CfsPiece *p, guint8 *dst,
		      const CfsContainer *c, GError **error);
	/* Free what the format added past the head; may be NULL. */
	void (*destroy)(CfsReader *r);
} CfsReaderOps;

/* A virtual range mapped to contiguous container bytes. */
typedef struct {
	guint64 voff;
	guint64 len;
	guint64 coff;
} CfsReaderRun;

/* Each format's instance starts with this head. Immutable once open. */
struct CfsReader {
	const CfsReaderFormat *format;
	const CfsReaderOps *ops;
	guint64 size;			/* virtual disk size */
	CfsExtentMap *map;		/* virtual allocation map, owned */
	guint64 container_size;
	CfsExtentMap *container_map;	/* a reference, or NULL */
	CfsReaderRun *runs;		/* by voff; used when no ops->piece */
	guint nruns;
};

/* Allocate a reader of @struct_size bytes with its head filled in from
 * @c (taking a reference to its map). */
CfsReader *cfs_reader_alloc(gsize struct_size, const CfsReaderFormat *format,
			    const CfsReaderOps *ops, const CfsContainer *c);

/* Set @error to EIO "<name>: <message>": a malformed container. Returns
 * NULL, for `return cfs_reader_bad(...)`. */
gpointer cfs_reader_bad(GError **error, const char *name, const char *fmt,
			...) G_GNUC_PRINTF(3, 4);

/*
 * Read container bytes [off, off + len) into @buf: data parts through the
 * callback, holes of the container map as zeros. A range outside the
 * container is an EIO error.
 */
bool cfs_container_read(const CfsContainer *c, void *buf, gsize len,
			guint64 off, GError **error);

/* Append the data parts of container bytes [off, off + len) to @ranges. */
void cfs_container_deps(const CfsExtentMap *map, guint64 off, guint64 len,
			GArray *ranges);

/*
 * Append to @ext (a GArray of CfsExtent, sorted) virtual bytes [voff,
 * voff + len) that sit at container bytes [coff, coff + len), less the
 * container map's holes; merges with the last extent when adjacent.
 */
void cfs_reader_map_add(GArray *ext, const CfsExtentMap *map, guint64 voff,
			guint64 coff, guint64 len);

/* Append a run to @runs (a GArray of CfsReaderRun, in virtual order),
 * merged with the last one when both sides are contiguous. */
void cfs_reader_runs_add(GArray *runs, guint64 voff, guint64 coff,
			 guint64 len);

/* Give @r its runs and its map, built from @runs and @ext. */
void cfs_reader_set_runs(CfsReader *r, GArray *runs);
void cfs_reader_set_map(CfsReader *r, GArray *ext);

static inline guint16 cfs_get_le16(const guint8 *p)
{
	return p[0] | p[1] << 8;
}

static inline guint32 cfs_get_le32(const guint8 *p)
{
	return p[0] | p[1] << 8 | p[2] << 16 | (guint32)p[3] << 24;
}

static inline guint64 cfs_get_le64(const guint8 *p)
{
	return cfs_get_le32(p) | (guint64)cfs_get_le32(p + 4) << 32;
}

static inline guint32 cfs_get_be32(const guint8 *p)
{
	return (guint32)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3];
}

static inline guint64 cfs_get_be64(const guint8 *p)
{
	return (guint64)cfs_get_be32(p) << 32 | cfs_get_be32(p + 4);
}

/* Readers, defined in their own files. */
extern const CfsReaderFormat cfs_reader_vhd;
extern const CfsReaderFormat cfs_reader_vhdx;
extern const CfsReaderFormat cfs_reader_vmdk;
