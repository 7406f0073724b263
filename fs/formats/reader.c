// SPDX-License-Identifier: MIT
/*
 * Container readers: the registry, the public calls that walk the virtual
 * disk piece by piece (deps and reads), and the helpers the readers share
 * (container access around holes, runs of mappings, the virtual map).
 */
#include <stdarg.h>
#include <string.h>

#include "fs/formats/reader-private.h"

static const CfsReaderFormat *const readers[] = {
	&cfs_reader_vhd,
	&cfs_reader_vhdx,
	&cfs_reader_vmdk,
	NULL,
};

const CfsReaderFormat *cfs_reader_find(const char *name)
{
	if (!name)
		return NULL;
	for (guint i = 0; readers[i]; i++) {
		if (g_ascii_strcasecmp(name, readers[i]->name) == 0)
			return readers[i];
	}
	return NULL;
}

CfsReader *cfs_reader_alloc(gsize struct_size, const CfsReaderFormat *format,
			    const CfsReaderOps *ops, const CfsContainer *c)
{
	CfsReader *r = g_malloc0(struct_size);

	r->format = format;
	r->ops = ops;
	r->container_size = c->size;
	if (c->map)
		r->container_map = cfs_extent_map_ref(c->map);
	return r;
}

void cfs_reader_free(CfsReader *r)
{
	if (!r)
		return;
	if (r->ops->destroy)
		r->ops->destroy(r);
	if (r->map)
		cfs_extent_map_unref(r->map);
	if (r->container_map)
		cfs_extent_map_unref(r->container_map);
	g_free(r->runs);
	g_free(r);
}

const CfsReaderFormat *cfs_reader_format(const CfsReader *r)
{
	return r->format;
}

guint64 cfs_reader_disk_size(const CfsReader *r)
{
	return r->size;
}

CfsExtentMap *cfs_reader_map(const CfsReader *r)
{
	return r->map;
}

gpointer cfs_reader_bad(GError **error, const char *name, const char *fmt,
			...)
{
	g_autofree char *msg = NULL;
	va_list ap;

	va_start(ap, fmt);
	msg = g_strdup_vprintf(fmt, ap);
	va_end(ap);
	g_set_error(error, CFS_ERROR, EIO, "%s: %s", name, msg);
	return NULL;
}

/* Walk the data parts of container bytes [off, off + len): calls @fn for
 * each; with no map the whole range is data. */
static bool container_walk(const CfsExtentMap *map, guint64 off, guint64 len,
			   bool (*fn)(void *ctx, guint64 off, guint64 len),
			   void *ctx)
{
	guint64 end = off + len, pos = off, d, h;

	if (!map)
		return len == 0 || fn(ctx, off, len);
	while (pos < end && cfs_extent_map_next_data(map, pos, &d) && d < end) {
		if (!cfs_extent_map_next_hole(map, d, &h) || h > end)
			h = end;
		if (!fn(ctx, d, h - d))
			return false;
		pos = h;
	}
	return true;
}

typedef struct {
	const CfsContainer *c;
	guint8 *buf;
	guint64 base;
	GError **error;
} ReadCtx;

static bool container_read_part(void *ctx, guint64 off, guint64 len)
{
	ReadCtx *x = ctx;

	return x->c->read(x->c->opaque, x->buf + (off - x->base), len, off,
			  x->error);
}

bool cfs_container_read(const CfsContainer *c, void *buf, gsize len,
			guint64 off, GError **error)
{
	ReadCtx x = { c, buf, off, error };

	if (off > c->size || len > c->size - off) {
		g_set_error(error, CFS_ERROR, EIO,
			    "container read of %" G_GSIZE_FORMAT " bytes at %"
			    G_GUINT64_FORMAT " is past its end (%"
			    G_GUINT64_FORMAT ")", len, off, c->size);
		return false;
	}
	if (c->map)
		memset(buf, 0, len);
	return container_walk(c->map, off, len, container_read_part, &x);
}

static bool container_dep(void *ctx, guint64 off, guint64 len)
{
	CfsExtent e = { off, len };

	g_array_append_val((GArray *)ctx, e);
	return true;
}

void cfs_container_deps(const CfsExtentMap *map, guint64 off, guint64 len,
			GArray *ranges)
{
	container_walk(map, off, len, container_dep, ranges);
}

static void extents_add(GArray *ext, guint64 off, guint64 len)
{
	CfsExtent e = { off, len };

	if (ext->len > 0) {
		CfsExtent *last = &g_array_index(ext, CfsExtent, ext->len - 1);

		if (last->offset + last->length == off) {
			last->length += len;
			return;
		}
	}
	g_array_append_val(ext, e);
}

typedef struct {
	GArray *ext;
	guint64 delta;		/* virtual minus container offset */
} MapCtx;

static bool map_add_part(void *ctx, guint64 off, guint64 len)
{
	MapCtx *x = ctx;

	extents_add(x->ext, off + x->delta, len);
	return true;
}

void cfs_reader_map_add(GArray *ext, const CfsExtentMap *map, guint64 voff,
			guint64 coff, guint64 len)
{
	MapCtx x = { ext, voff - coff };	/* wraps back in map_add_part */

	container_walk(map, coff, len, map_add_part, &x);
}

void cfs_reader_runs_add(GArray *runs, guint64 voff, guint64 coff,
			 guint64 len)
{
	CfsReaderRun run = { voff, len, coff };

	if (runs->len > 0) {
		CfsReaderRun *last =
			&g_array_index(runs, CfsReaderRun, runs->len - 1);

		if (last->voff + last->len == voff &&
		    last->coff + last->len == coff) {
			last->len += len;
			return;
		}
	}
	g_array_append_val(runs, run);
}

void cfs_reader_set_runs(CfsReader *r, GArray *runs)
{
	gsize n = 0;

	r->runs = g_array_steal(runs, &n);
	r->nruns = n;
}

void cfs_reader_set_map(CfsReader *r, GArray *ext)
{
	r->map = cfs_extent_map_new(r->size, (CfsExtent *)ext->data,
				    ext->len);
}

/* The piece at @off from the runs: the run holding it, or the hole up to
 * the next run. */
static void runs_piece(const CfsReader *r, guint64 off, guint64 len,
		       CfsPiece *p)
{
	guint lo = 0, hi = r->nruns;

	while (lo < hi) {	/* first run that ends after off */
		guint mid = lo + (hi - lo) / 2;

		if (r->runs[mid].voff + r->runs[mid].len <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	memset(p, 0, sizeof(*p));
	if (lo == r->nruns || r->runs[lo].voff > off) {
		p->kind = CFS_PIECE_ZERO;
		p->len = lo == r->nruns ? len :
					  MIN(len, r->runs[lo].voff - off);
		return;
	}
	p->kind = CFS_PIECE_DIRECT;
	p->coff = r->runs[lo].coff + (off - r->runs[lo].voff);
	p->len = MIN(len, r->runs[lo].voff + r->runs[lo].len - off);
}

static void reader_piece(const CfsReader *r, guint64 off, guint64 len,
			 CfsPiece *p)
{
	if (r->ops->piece)
		r->ops->piece(r, off, len, p);
	else
		runs_piece(r, off, len, p);
	g_assert(p->len > 0 && p->len <= len);
}

void cfs_reader_deps(const CfsReader *r, guint64 off, guint64 len,
		     GArray *ranges)
{
	if (off >= r->size)
		return;
	len = MIN(len, r->size - off);
	while (len > 0) {
		CfsPiece p;

		reader_piece(r, off, len, &p);
		if (p.kind == CFS_PIECE_DIRECT)
			cfs_container_deps(r->container_map, p.coff, p.len,
					   ranges);
		else if (p.kind == CFS_PIECE_GRAIN)
			cfs_container_deps(r->container_map, p.coff, p.clen,
					   ranges);
		off += p.len;
		len -= p.len;
	}
}

static bool reader_read_piece(const CfsReader *r, const CfsPiece *p,
			      guint8 *dst, const CfsContainer *c,
			      GError **error)
{
	switch (p->kind) {
	case CFS_PIECE_DIRECT:
		return cfs_container_read(c, dst, p->len, p->coff, error);
	case CFS_PIECE_GRAIN:
		return r->ops->grain(r, p, dst, c, error);
	default:
		memset(dst, 0, p->len);
		return true;
	}
}

bool cfs_reader_read(const CfsReader *r, void *buf, gsize len, guint64 off,
		     CfsRawReadFn read, void *opaque, GError **error)
{
	CfsContainer c = { r->container_size, r->container_map, read, opaque };
	guint8 *dst = buf;

	if (off > r->size || len > r->size - off) {
		g_set_error(error, CFS_ERROR, EINVAL,
			    "%s reader: read of %" G_GSIZE_FORMAT " bytes at %"
			    G_GUINT64_FORMAT " is past the disk's end (%"
			    G_GUINT64_FORMAT ")", r->format->name, len, off,
			    r->size);
		return false;
	}
	while (len > 0) {
		CfsPiece p;

		reader_piece(r, off, len, &p);
		if (!reader_read_piece(r, &p, dst, &c, error)) {
			g_prefix_error(error, "%s disk offset %"
				       G_GUINT64_FORMAT ": ", r->format->name,
				       off);
			return false;
		}
		dst += p.len;
		off += p.len;
		len -= p.len;
	}
	return true;
}
