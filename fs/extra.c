// SPDX-License-Identifier: MIT
/*
 * Files made of metadata and disks: inline bytes, or a ustar archive
 * (POSIX.1-1988 headers; sizes of 8 GiB and more in the base-256 form
 * that GNU tar and bsdtar read). Archive layout:
 *
 *     header(512) data pad-to-512 ... header data pad, zeros(1024)
 */
#include <stdio.h>
#include <string.h>

#include "common/error.h"
#include "fs/extra.h"

#define TAR_BLOCK 512
#define TAR_END (2 * TAR_BLOCK)
#define TAR_NAME_MAX 100

struct CfsExtra {
	gint ref;
	CfsVmFile *file;
	GPtrArray *exports;	/* CfsExport* of member i, or NULL: inline */
	GPtrArray *formats;	/* const CfsFormat* of member i, or NULL */
	gint64 mtime;
};

/* Where a member lies in the archive. */
typedef struct {
	guint64 header;		/* offset of its header */
	guint64 size;		/* bytes of data, after the header */
} TarPlace;

static void vm_file_free(CfsVmFile *file)
{
	g_free(file->name);
	g_clear_pointer(&file->data, g_bytes_unref);
	g_clear_pointer(&file->tar, g_ptr_array_unref);
	g_free(file);
}

/* The view a member names: NULL for the disk's own bytes. */
static const CfsFormat *member_format(CfsExport *ex, const char *name)
{
	CfsDisk *disk = cfs_export_disk(ex);

	if (!name || g_ascii_strcasecmp(name, disk->format) == 0)
		return NULL;
	return cfs_format_find(name);
}

CfsExtra *cfs_extra_new(CfsVmFile *file, GPtrArray *exports, gint64 mtime)
{
	CfsExtra *x = g_new0(CfsExtra, 1);

	x->ref = 1;
	x->file = file;
	x->mtime = mtime;
	x->exports = g_ptr_array_new();
	x->formats = g_ptr_array_new();
	for (guint i = 0; file->tar && i < file->tar->len; i++) {
		CfsTarMember *m = file->tar->pdata[i];
		CfsExport *ex = !m->data && m->disk < exports->len ?
					exports->pdata[m->disk] : NULL;

		g_ptr_array_add(x->exports, ex);
		g_ptr_array_add(x->formats,
				ex ? (gpointer)member_format(ex, m->format) :
				     NULL);
	}
	return x;
}

CfsExtra *cfs_extra_ref(CfsExtra *x)
{
	g_atomic_int_inc(&x->ref);
	return x;
}

void cfs_extra_unref(CfsExtra *x)
{
	if (!x || !g_atomic_int_dec_and_test(&x->ref))
		return;
	vm_file_free(x->file);
	g_ptr_array_unref(x->exports);
	g_ptr_array_unref(x->formats);
	g_free(x);
}

const char *cfs_extra_name(const CfsExtra *x)
{
	return x->file->name;
}

bool cfs_extra_uses(const CfsExtra *x, const CfsExport *ex)
{
	for (guint i = 0; i < x->exports->len; i++)
		if (x->exports->pdata[i] == ex)
			return true;
	return false;
}

/* --- the archive --- */

static void tar_octal(guint8 *field, gsize width, guint64 value)
{
	g_snprintf((char *)field, width, "%0*" G_GINT64_MODIFIER "o",
		   (int)width - 1, value);
}

bool cfs_tar_header(guint8 h[TAR_BLOCK], const char *name, guint64 size,
		    gint64 mtime)
{
	guint sum = 0;

	if (!*name || strlen(name) > TAR_NAME_MAX)
		return false;
	memset(h, 0, TAR_BLOCK);
	memcpy(h, name, strlen(name));
	tar_octal(h + 100, 8, 0644);
	tar_octal(h + 108, 8, 0);
	tar_octal(h + 116, 8, 0);
	if (size < (1ULL << 33)) {
		tar_octal(h + 124, 12, size);
	} else {
		/* base-256: a set high bit, then the size big-endian */
		h[124] = 0x80;
		for (int i = 0; i < 8; i++)
			h[135 - i] = (guint8)(size >> (8 * i));
	}
	tar_octal(h + 136, 12, (guint64)MAX(mtime, 0));
	memset(h + 148, ' ', 8);
	h[156] = '0';
	memcpy(h + 257, "ustar", 6);
	memcpy(h + 263, "00", 2);
	memcpy(h + 265, "root", 4);
	memcpy(h + 297, "root", 4);
	for (int i = 0; i < TAR_BLOCK; i++)
		sum += h[i];
	g_snprintf((char *)h + 148, 7, "%06o", sum);
	h[155] = ' ';
	return true;
}

static guint64 tar_round(guint64 n)
{
	return (n + TAR_BLOCK - 1) / TAR_BLOCK * TAR_BLOCK;
}

/* Each member's place, if every size is known (@wait: waiting for the
 * disks' exports, on the control pool). */
static bool tar_layout(CfsExtra *x, GArray *places, guint64 *total,
		       bool wait, GError **error)
{
	guint64 pos = 0;

	for (guint i = 0; i < x->file->tar->len; i++) {
		CfsTarMember *m = x->file->tar->pdata[i];
		CfsExport *ex = x->exports->pdata[i];
		TarPlace place = { pos, 0 };

		if (m->data) {
			place.size = g_bytes_get_size(m->data);
		} else if (!ex) {
			g_set_error(error, CFS_ERROR, EIO, "%s: member %s "
				    "names no disk", x->file->name, m->name);
			return false;
		} else if (wait ? !cfs_export_wait_size(ex,
					x->formats->pdata[i], &place.size,
					error) :
				  !cfs_export_file_size(ex, x->formats->pdata[i],
							&place.size)) {
			return false;
		}
		g_array_append_val(places, place);
		pos += TAR_BLOCK + tar_round(place.size);
	}
	*total = pos + TAR_END;
	return true;
}

bool cfs_extra_size(CfsExtra *x, guint64 *size)
{
	g_autoptr(GArray) places = NULL;

	if (x->file->data) {
		*size = g_bytes_get_size(x->file->data);
		return true;
	}
	places = g_array_new(FALSE, FALSE, sizeof(TarPlace));
	return tar_layout(x, places, size, false, NULL);
}

/* Copy into @dst (view bytes [off, off+len)) what of @src, at archive
 * offset @at, overlaps. */
static void tar_copy(guint8 *dst, guint64 off, guint64 len, guint64 at,
		     const void *src, guint64 src_len)
{
	guint64 lo = MAX(off, at), hi = MIN(off + len, at + src_len);

	if (lo < hi)
		memcpy(dst + (lo - off), (const guint8 *)src + (lo - at), hi - lo);
}

/* Member @i's part of [off, off+len) into @dst. */
static bool tar_member(CfsExtra *x, guint i, const TarPlace *p, guint8 *dst,
		       guint64 off, guint64 len, GError **error)
{
	CfsTarMember *m = x->file->tar->pdata[i];
	guint8 header[TAR_BLOCK];
	guint64 data = p->header + TAR_BLOCK, lo, hi;

	if (!cfs_tar_header(header, m->name, p->size, x->mtime)) {
		g_set_error(error, CFS_ERROR, EIO, "%s: member name '%s' does "
			    "not fit a tar header", x->file->name, m->name);
		return false;
	}
	tar_copy(dst, off, len, p->header, header, TAR_BLOCK);
	if (m->data) {
		tar_copy(dst, off, len, data, g_bytes_get_data(m->data, NULL),
			 p->size);
		return true;
	}
	lo = MAX(off, data);
	hi = MIN(off + len, data + p->size);
	if (lo >= hi)
		return true;
	return cfs_export_read_sync(x->exports->pdata[i], x->formats->pdata[i],
				    dst + (lo - off), hi - lo, lo - data, error);
}

bool cfs_extra_pread(CfsExtra *x, void *buf, guint64 off, guint64 *len,
		     GError **error)
{
	guint8 *dst = buf;
	g_autoptr(GArray) places = g_array_new(FALSE, FALSE, sizeof(TarPlace));
	guint64 total;

	if (x->file->data) {
		gsize size;
		const void *data = g_bytes_get_data(x->file->data, &size);

		*len = off < size ? MIN(*len, size - off) : 0;
		memcpy(dst, (const guint8 *)data + off, *len);
		return true;
	}
	if (!tar_layout(x, places, &total, true, error))
		return false;
	*len = off < total ? MIN(*len, total - off) : 0;
	memset(dst, 0, *len);	/* padding and end blocks */
	for (guint i = 0; i < places->len && *len; i++) {
		TarPlace *p = &g_array_index(places, TarPlace, i);
		guint64 end = p->header + TAR_BLOCK + tar_round(p->size);

		if (end <= off || p->header >= off + *len)
			continue;
		if (!tar_member(x, i, p, dst, off, *len, error))
			return false;
	}
	return true;
}

/* --- opening and reading --- */

void cfs_extra_open(CfsExtra *x)
{
	for (guint i = 0; i < x->exports->len; i++)
		if (x->exports->pdata[i])
			cfs_export_open(x->exports->pdata[i]);
}

void cfs_extra_release(CfsExtra *x)
{
	for (guint i = 0; i < x->exports->len; i++)
		if (x->exports->pdata[i])
			cfs_export_release(x->exports->pdata[i]);
}

typedef struct {
	CfsExtra *x;
	fuse_req_t req;
	guint64 size;
	guint64 off;
} ExtraRead;

static void extra_read_job(gpointer data)
{
	ExtraRead *r = data;
	g_autoptr(GError) error = NULL;
	g_autofree guint8 *buf = g_malloc(r->size);
	guint64 len = r->size;

	if (cfs_extra_pread(r->x, buf, r->off, &len, &error)) {
		fuse_reply_buf(r->req, (const char *)buf, len);
	} else {
		g_warning("%s: %s", cfs_extra_name(r->x), error->message);
		fuse_reply_err(r->req, error->domain == CFS_ERROR ?
					       error->code : EIO);
	}
	cfs_extra_unref(r->x);
	g_free(r);
}

void cfs_extra_read(CfsExtra *x, CfsControl *control, fuse_req_t req,
		    size_t size, off_t off)
{
	ExtraRead *r;

	if (x->file->data) {
		gsize len;
		const char *data = g_bytes_get_data(x->file->data, &len);

		if (off < 0 || (gsize)off >= len)
			fuse_reply_buf(req, NULL, 0);
		else
			fuse_reply_buf(req, data + off,
				       MIN(size, len - (gsize)off));
		return;
	}
	if (size == 0) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	r = g_new0(ExtraRead, 1);
	r->x = cfs_extra_ref(x);
	r->req = req;
	r->size = size;
	r->off = (guint64)MAX(off, 0);
	cfs_control_push(control, extra_read_job, r);
}
