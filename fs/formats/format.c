// SPDX-License-Identifier: MIT
/*
 * Format views: the registry of formats, the public view calls that walk a
 * view piece by piece, and the helpers the formats share (raw ranges with
 * holes, blobs, digests, runs of allocated units).
 */
#include <string.h>

#include "common/error.h"
#include "fs/formats/view-private.h"

static const CfsFormat *const formats[] = {
	&cfs_format_raw,
	&cfs_format_vhd,
	&cfs_format_vmdk,
	&cfs_format_vhdx,
	&cfs_format_qcow2,
	NULL,
};

const CfsFormat *cfs_format_find(const char *name)
{
	if (!name)
		return NULL;
	if (g_ascii_strcasecmp(name, "img") == 0)
		return &cfs_format_raw;
	for (guint i = 0; formats[i]; i++) {
		if (g_ascii_strcasecmp(name, formats[i]->name) == 0)
			return formats[i];
	}
	return NULL;
}

const CfsFormat *const *cfs_formats_all(void)
{
	return formats;
}

CfsView *cfs_view_alloc(gsize struct_size, const CfsFormat *format,
			const CfsViewOps *ops, CfsExtentMap *map)
{
	CfsView *view = g_malloc0(struct_size);

	view->format = format;
	view->ops = ops;
	view->map = cfs_extent_map_ref(map);
	return view;
}

guint64 cfs_view_size(const CfsView *view)
{
	return view->size;
}

const CfsFormat *cfs_view_format(const CfsView *view)
{
	return view->format;
}

void cfs_view_free(CfsView *view)
{
	if (!view)
		return;
	if (view->ops->destroy)
		view->ops->destroy(view);
	cfs_extent_map_unref(view->map);
	g_free(view);
}

void cfs_view_deps(const CfsView *view, guint64 off, guint64 len,
		   GArray *ranges)
{
	CfsFill f = { .ranges = ranges };

	if (off >= view->size)
		return;
	len = MIN(len, view->size - off);
	while (len > 0) {
		guint64 done = 0;

		if (!view->ops->fill(view, &f, NULL, off, len, &done))
			return;
		g_assert(done > 0 && done <= len);
		off += done;
		len -= done;
	}
}

bool cfs_view_read(const CfsView *view, void *buf, gsize len, guint64 off,
		   CfsRawReadFn raw, void *opaque, GError **error)
{
	CfsFill f = { .raw = raw, .opaque = opaque, .error = error };
	guint8 *dst = buf;

	if (off > view->size || len > view->size - off) {
		g_set_error(error, CFS_ERROR, EINVAL,
			    "%s view: read of %" G_GSIZE_FORMAT " bytes at %"
			    G_GUINT64_FORMAT " is past its end (%"
			    G_GUINT64_FORMAT ")", view->format->name, len, off,
			    view->size);
		return false;
	}
	while (len > 0) {
		guint64 done = 0;

		if (!view->ops->fill(view, &f, dst, off, len, &done))
			return false;
		g_assert(done > 0 && done <= len);
		dst += done;
		off += done;
		len -= done;
	}
	return true;
}

bool cfs_view_next_data(const CfsView *view, guint64 off, guint64 *out)
{
	if (view->ops->next_data)
		return view->ops->next_data(view, off, out);
	if (off >= view->size)
		return false;
	*out = off;
	return true;
}

bool cfs_view_next_hole(const CfsView *view, guint64 off, guint64 *out)
{
	if (view->ops->next_hole)
		return view->ops->next_hole(view, off, out);
	if (off >= view->size)
		return false;
	*out = view->size;
	return true;
}

/* Index of the first extent that ends after @off (n if none). */
static guint fill_first_extent(const CfsExtentMap *map, guint64 off)
{
	guint lo = 0, hi = map->n;

	while (lo < hi) {
		guint mid = lo + (hi - lo) / 2;

		if (map->ext[mid].offset + map->ext[mid].length <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

bool cfs_fill_raw(const CfsView *view, CfsFill *f, guint8 *dst,
		  guint64 disk_off, guint64 len)
{
	const CfsExtentMap *map = view->map;
	guint64 end = MIN(disk_off + len, map->size);
	guint64 pos = disk_off;
	guint i;

	/* Data is read in place; only the holes between are zeroed. */
	for (i = fill_first_extent(map, pos); i < map->n && pos < end; i++) {
		const CfsExtent *e = &map->ext[i];
		guint64 s = MAX(pos, e->offset);
		guint64 t = MIN(end, e->offset + e->length);

		if (s >= t)
			break;
		if (!dst) {
			CfsExtent r = { s, t - s };

			g_array_append_val(f->ranges, r);
		} else {
			memset(dst + (pos - disk_off), 0, s - pos);
			if (!f->raw(f->opaque, dst + (s - disk_off), t - s, s,
				    f->error))
				return false;
		}
		pos = t;
	}
	if (dst && pos < disk_off + len)
		memset(dst + (pos - disk_off), 0, disk_off + len - pos);
	return true;
}

void cfs_fill_blob(guint8 *dst, guint64 off, guint64 len, guint64 blob_off,
		   const void *blob, gsize blob_len)
{
	guint64 s = MAX(off, blob_off);
	guint64 t = MIN(off + len, blob_off + blob_len);

	if (dst && s < t)
		memcpy(dst + (s - off), (const guint8 *)blob + (s - blob_off),
		       t - s);
}

void cfs_view_digest(const CfsExtentMap *map, const char *salt,
		     guint8 out[32])
{
	g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA256);
	guint8 word[8];
	gsize n = 32;

	g_checksum_update(sum, (const guchar *)salt, strlen(salt) + 1);
	cfs_put_le64(word, map->size);
	g_checksum_update(sum, word, sizeof(word));
	for (guint i = 0; i < map->n; i++) {
		cfs_put_le64(word, map->ext[i].offset);
		g_checksum_update(sum, word, sizeof(word));
		cfs_put_le64(word, map->ext[i].length);
		g_checksum_update(sum, word, sizeof(word));
	}
	g_checksum_get_digest(sum, out, &n);
}

/* Append units [first, end) to the runs, merging with the last run. */
static void units_add(CfsUnits *u, guint *cap, guint64 first, guint64 end)
{
	if (u->n > 0) {
		CfsRun *last = &u->runs[u->n - 1];

		if (first <= last->start + last->count) {
			if (end > last->start + last->count) {
				u->total += end - (last->start + last->count);
				last->count = end - last->start;
			}
			return;
		}
	}
	if (u->n == *cap) {
		*cap = MAX(8, *cap * 2);
		u->runs = g_renew(CfsRun, u->runs, *cap);
	}
	u->runs[u->n] = (CfsRun){ first, end - first, u->total };
	u->total += end - first;
	u->n++;
}

void cfs_units_init(CfsUnits *u, const CfsExtentMap *map, guint64 unit)
{
	guint cap = 0;

	memset(u, 0, sizeof(*u));
	u->unit = unit;
	for (guint i = 0; i < map->n; i++) {
		const CfsExtent *e = &map->ext[i];

		units_add(u, &cap, e->offset / unit,
			  (e->offset + e->length - 1) / unit + 1);
	}
}

void cfs_units_group(CfsUnits *out, const CfsUnits *in, guint64 span)
{
	guint cap = 0;

	memset(out, 0, sizeof(*out));
	out->unit = in->unit * span;
	for (guint i = 0; i < in->n; i++) {
		const CfsRun *r = &in->runs[i];

		units_add(out, &cap, r->start / span,
			  (r->start + r->count - 1) / span + 1);
	}
}

void cfs_units_clear(CfsUnits *u)
{
	g_clear_pointer(&u->runs, g_free);
	u->n = 0;
	u->total = 0;
}

/* Index of the last run starting at or before @idx, or -1. */
static gint64 units_find(const CfsUnits *u, guint64 idx)
{
	guint lo = 0, hi = u->n;

	while (lo < hi) {
		guint mid = lo + (hi - lo) / 2;

		if (u->runs[mid].start <= idx)
			lo = mid + 1;
		else
			hi = mid;
	}
	return (gint64)lo - 1;
}

guint64 cfs_units_before(const CfsUnits *u, guint64 idx)
{
	gint64 i = units_find(u, idx);
	const CfsRun *r;

	if (i < 0)
		return 0;
	r = &u->runs[i];
	return r->before + MIN(idx - r->start, r->count);
}

bool cfs_units_rank(const CfsUnits *u, guint64 idx, guint64 *rank)
{
	gint64 i = units_find(u, idx);
	const CfsRun *r;

	if (i < 0)
		return false;
	r = &u->runs[i];
	if (idx - r->start >= r->count)
		return false;
	*rank = r->before + (idx - r->start);
	return true;
}

guint64 cfs_units_select(const CfsUnits *u, guint64 k)
{
	guint lo = 0, hi = u->n;

	g_assert(k < u->total);
	/* last run with before <= k */
	while (lo < hi) {
		guint mid = lo + (hi - lo) / 2;

		if (u->runs[mid].before <= k)
			lo = mid + 1;
		else
			hi = mid;
	}
	return u->runs[lo - 1].start + (k - u->runs[lo - 1].before);
}
