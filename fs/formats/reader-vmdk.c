// SPDX-License-Identifier: MIT
/*
 * The sparse VMDK reader: streamOptimized (deflate-compressed grains, each
 * a 12-byte marker and a zlib stream; the grain directory maybe only in
 * the footer) and monolithicSparse (plain grains). Only the header, the
 * grain directory and the grain tables are read at open.
 */
#include <string.h>
#include <zlib.h>

#include "fs/formats/reader-private.h"
#include "fs/formats/view-private.h"	/* cfs_div_up */

#define VMDK_SECTOR 512ull
#define VMDK_GTES 512ull
#define VMDK_GT_BYTES (VMDK_GTES * 4)
#define VMDK_GT_SECTORS (VMDK_GT_BYTES / VMDK_SECTOR)
#define VMDK_GD_AT_END G_MAXUINT64
#define VMDK_ZEROED_GTE (1u << 2)
#define VMDK_COMPRESSED (1u << 16)
#define VMDK_MARKERS (1u << 17)
#define VMDK_DEFLATE 1
#define VMDK_MARKER_FOOTER 3
#define VMDK_GT_READ (4ull << 20)	/* most bytes of tables per read */
#define VMDK_MAX_BOUNDS (G_MAXUINT32 / 2)

typedef struct {
	guint32 flags;
	guint64 capacity;	/* sectors */
	guint64 grain;		/* sectors */
	guint64 gd;		/* sector of the grain directory */
	guint16 algo;
	bool at_end;		/* the directory came from the footer */
} VmdkHeader;

typedef struct {
	CfsReader head;
	VmdkHeader h;
	guint64 grain;		/* bytes */
	guint64 ngd;		/* grain directory entries */
	guint32 *gd_slot;	/* per GD entry: 1 + its table in gt, or 0 */
	guint32 *gt;		/* the grain tables, VMDK_GTES entries each */
	guint32 *bounds;	/* sorted sectors where records may start */
	guint nbounds;
	guint64 record_max;	/* most bytes a compressed grain record has */
} VmdkReader;

static bool vmdk_header(const guint8 *p, VmdkHeader *h, GError **error)
{
	guint32 version = cfs_get_le32(p + 4);

	if (memcmp(p, "# Disk DescriptorFile", 21) == 0) {
		g_set_error(error, CFS_ERROR, ENOTSUP,
			    "vmdk: a descriptor file holds no data; read its "
			    "extent (the -flat.vmdk) as a raw disk");
		return false;
	}
	if (memcmp(p, "KDMV", 4) != 0)
		return cfs_reader_bad(error, "vmdk", "no sparse header");
	if (version < 1 || version > 3)
		return cfs_reader_bad(error, "vmdk", "version %u", version);
	h->flags = cfs_get_le32(p + 8);
	h->capacity = cfs_get_le64(p + 12);
	h->grain = cfs_get_le64(p + 20);
	h->gd = cfs_get_le64(p + 56);
	h->algo = cfs_get_le16(p + 77);
	h->at_end = false;
	if (h->capacity == 0 ||
	    h->capacity > CFS_READER_MAX_DISK / VMDK_SECTOR)
		return cfs_reader_bad(error, "vmdk", "capacity of %"
				      G_GUINT64_FORMAT " sectors",
				      h->capacity);
	if (h->grain < 8 || h->grain > 2048 || (h->grain & (h->grain - 1)))
		return cfs_reader_bad(error, "vmdk", "grain of %"
				      G_GUINT64_FORMAT " sectors", h->grain);
	if (cfs_get_le32(p + 44) != VMDK_GTES)
		return cfs_reader_bad(error, "vmdk", "%u entries per table",
				      cfs_get_le32(p + 44));
	if ((h->flags & VMDK_COMPRESSED) && h->algo != VMDK_DEFLATE) {
		g_set_error(error, CFS_ERROR, ENOTSUP,
			    "vmdk: compression %u is not supported", h->algo);
		return false;
	}
	return true;
}

/* The footer of a stream whose header leaves the grain directory to the
 * end: footer marker, footer (a header), end-of-stream marker. */
static bool vmdk_footer(const CfsContainer *c, VmdkHeader *h, GError **error)
{
	guint8 t[3 * VMDK_SECTOR];

	if (c->size < 4 * VMDK_SECTOR)
		return cfs_reader_bad(error, "vmdk", "no room for a footer");
	if (!cfs_container_read(c, t, sizeof(t), c->size - sizeof(t), error))
		return false;
	if (cfs_get_le32(t + 12) != VMDK_MARKER_FOOTER ||
	    cfs_get_le32(t + 8) != 0)
		return cfs_reader_bad(error, "vmdk", "no footer marker");
	if (!vmdk_header(t + VMDK_SECTOR, h, error)) {
		g_prefix_error(error, "footer: ");
		return false;
	}
	if (h->gd == VMDK_GD_AT_END)
		return cfs_reader_bad(error, "vmdk", "footer has no directory");
	return true;
}

static bool vmdk_read_header(const CfsContainer *c, VmdkHeader *h,
			     GError **error)
{
	guint8 p[VMDK_SECTOR];

	if (c->size < VMDK_SECTOR)
		return cfs_reader_bad(error, "vmdk", "file too short");
	if (!cfs_container_read(c, p, VMDK_SECTOR, 0, error) ||
	    !vmdk_header(p, h, error))
		return false;
	if (h->gd != VMDK_GD_AT_END)
		return true;
	if (!vmdk_footer(c, h, error))
		return false;
	h->at_end = true;
	return true;
}

/* The grain table entry of grain @g: a sector, 0 if unallocated. */
static guint32 vmdk_entry(const VmdkReader *v, guint64 g)
{
	guint32 slot = v->gd_slot[g / VMDK_GTES];

	if (!slot)
		return 0;
	return v->gt[(slot - 1) * VMDK_GTES + g % VMDK_GTES];
}

static bool vmdk_is_zero(const VmdkReader *v, guint32 e)
{
	return e == 0 || (e == 1 && (v->h.flags & VMDK_ZEROED_GTE));
}

typedef struct {
	guint32 sector;
	guint32 gdi;
} VmdkGtRef;

static int vmdk_ref_cmp(gconstpointer a, gconstpointer b)
{
	const VmdkGtRef *x = a, *y = b;

	return x->sector < y->sector ? -1 : x->sector > y->sector;
}

static int vmdk_u32_cmp(gconstpointer a, gconstpointer b)
{
	guint32 x = *(const guint32 *)a, y = *(const guint32 *)b;

	return x < y ? -1 : x > y;
}

/* The grain directory's tables, sorted by sector, inside the file and
 * apart from each other. */
static GArray *vmdk_gd(const CfsContainer *c, VmdkReader *v, GError **error)
{
	g_autoptr(GArray) refs = g_array_new(FALSE, FALSE, sizeof(VmdkGtRef));
	g_autofree guint8 *gd = NULL;
	guint64 bytes = v->ngd * 4;

	if (v->h.gd == 0 || v->h.gd > c->size / VMDK_SECTOR ||
	    bytes > c->size - v->h.gd * VMDK_SECTOR)
		return cfs_reader_bad(error, "vmdk", "grain directory at "
				      "sector %" G_GUINT64_FORMAT
				      " is past the end", v->h.gd);
	gd = g_malloc(bytes);
	if (!cfs_container_read(c, gd, bytes, v->h.gd * VMDK_SECTOR, error))
		return NULL;
	for (guint32 i = 0; i < v->ngd; i++) {
		VmdkGtRef ref = { cfs_get_le32(gd + 4 * i), i };

		if (!ref.sector)
			continue;
		if (ref.sector * VMDK_SECTOR + VMDK_GT_BYTES > c->size)
			return cfs_reader_bad(error, "vmdk", "grain table at "
					      "sector %u is past the end",
					      ref.sector);
		g_array_append_val(refs, ref);
	}
	g_array_sort(refs, vmdk_ref_cmp);
	for (guint i = 1; i < refs->len; i++) {
		VmdkGtRef *a = &g_array_index(refs, VmdkGtRef, i - 1);

		if (a[1].sector - a[0].sector < VMDK_GT_SECTORS)
			return cfs_reader_bad(error, "vmdk",
					      "grain tables overlap");
	}
	return g_steal_pointer(&refs);
}

/* End of the group of adjacent tables from @i that one read takes. */
static guint vmdk_gt_group(const VmdkGtRef *r, guint n, guint i)
{
	guint j = i + 1;

	while (j < n && r[j].sector == r[j - 1].sector + VMDK_GT_SECTORS &&
	       (j - i + 1) * VMDK_GT_BYTES <= VMDK_GT_READ)
		j++;
	return j;
}

/* Read the tables @refs names, adjacent ones in one read. */
static bool vmdk_gts(const CfsContainer *c, VmdkReader *v, GArray *refs,
		     GError **error)
{
	const VmdkGtRef *r = (const VmdkGtRef *)refs->data;

	v->gd_slot = g_new0(guint32, v->ngd);
	v->gt = g_new(guint32, MAX(refs->len, 1) * VMDK_GTES);
	for (guint i = 0, j; i < refs->len; i = j) {
		guint32 *dst = v->gt + (gsize)i * VMDK_GTES;

		j = vmdk_gt_group(r, refs->len, i);
		if (!cfs_container_read(c, dst, (j - i) * VMDK_GT_BYTES,
					r[i].sector * VMDK_SECTOR, error))
			return false;
		for (guint k = i; k < j; k++)
			v->gd_slot[r[k].gdi] = k + 1;
	}
	for (gsize k = 0; k < (gsize)refs->len * VMDK_GTES; k++)
		v->gt[k] = GUINT32_FROM_LE(v->gt[k]);
	return true;
}

/* Check grain @g at sector @e and add it to the map and the bounds. */
static bool vmdk_grain_add(const CfsContainer *c, VmdkReader *v, guint64 g,
			   guint32 e, GArray *ext, GArray *bounds,
			   GError **error)
{
	guint64 voff = g * v->grain, coff = e * VMDK_SECTOR;
	guint64 vlen = MIN(v->grain, v->head.size - voff);
	guint64 need = (v->h.flags & VMDK_COMPRESSED) ? 12 : vlen;

	if (coff > c->size || need > c->size - coff)
		return cfs_reader_bad(error, "vmdk", "grain %" G_GUINT64_FORMAT
				      " at sector %u is past the end", g, e);
	if (!(v->h.flags & VMDK_COMPRESSED)) {
		cfs_reader_map_add(ext, c->map, voff, coff, vlen);
		return true;
	}
	if (bounds->len >= VMDK_MAX_BOUNDS)
		return cfs_reader_bad(error, "vmdk", "too many grains");
	cfs_reader_map_add(ext, NULL, voff, voff, vlen);
	g_array_append_val(bounds, e);
	return true;
}

static bool vmdk_scan(const CfsContainer *c, VmdkReader *v, GArray *ext,
		      GArray *bounds, GError **error)
{
	guint64 ngrains = cfs_div_up(v->h.capacity, v->h.grain);

	for (guint64 gdi = 0; gdi < v->ngd; gdi++) {
		if (!v->gd_slot[gdi])
			continue;
		for (guint64 k = 0; k < VMDK_GTES; k++) {
			guint64 g = gdi * VMDK_GTES + k;
			guint32 e;

			if (g >= ngrains)
				break;
			e = vmdk_entry(v, g);
			if (!vmdk_is_zero(v, e) &&
			    !vmdk_grain_add(c, v, g, e, ext, bounds, error))
				return false;
		}
	}
	return true;
}

/* Where compressed records end at the latest: the next record, table,
 * directory or footer, and the end of the file. */
static void vmdk_bounds(const CfsContainer *c, VmdkReader *v, GArray *refs,
			GArray *bounds, bool footer)
{
	guint32 m = (v->h.flags & VMDK_MARKERS) ? 1 : 0;
	guint64 end = c->size / VMDK_SECTOR;
	guint32 s;

	for (guint i = 0; i < refs->len; i++) {
		s = g_array_index(refs, VmdkGtRef, i).sector - m;
		g_array_append_val(bounds, s);
	}
	s = MIN(v->h.gd - m, G_MAXUINT32);
	g_array_append_val(bounds, s);
	s = MIN(end, G_MAXUINT32);
	g_array_append_val(bounds, s);
	if (footer) {
		s = MIN(end - 3, G_MAXUINT32);
		g_array_append_val(bounds, s);
	}
	g_array_sort(bounds, vmdk_u32_cmp);
	v->nbounds = 0;
	for (guint i = 0; i < bounds->len; i++) {
		s = g_array_index(bounds, guint32, i);
		if (v->nbounds == 0 ||
		    g_array_index(bounds, guint32, v->nbounds - 1) != s)
			g_array_index(bounds, guint32, v->nbounds++) = s;
	}
	g_array_set_size(bounds, v->nbounds);
	v->bounds = (guint32 *)g_array_steal(bounds, NULL);
}

/* Container bytes that may hold the compressed record at sector @e. */
static guint64 vmdk_record_len(const VmdkReader *v, guint32 e)
{
	guint lo = 0, hi = v->nbounds;
	guint64 start = e * VMDK_SECTOR, end;

	while (lo < hi) {	/* first bound after e */
		guint mid = lo + (hi - lo) / 2;

		if (v->bounds[mid] <= e)
			lo = mid + 1;
		else
			hi = mid;
	}
	end = start + v->record_max;
	if (lo < v->nbounds)
		end = MIN(end, v->bounds[lo] * VMDK_SECTOR);
	return MIN(end, v->head.container_size) - start;
}

static void vmdk_piece(const CfsReader *r, guint64 off, guint64 len,
		       CfsPiece *p)
{
	const VmdkReader *v = (const VmdkReader *)r;
	guint64 g = off / v->grain, skip = off % v->grain;
	guint32 e;

	memset(p, 0, sizeof(*p));
	if (!v->gd_slot[g / VMDK_GTES]) {	/* a whole table of zeros */
		guint64 span = v->grain * VMDK_GTES;

		p->len = MIN(len, span - off % span);
		return;
	}
	e = vmdk_entry(v, g);
	p->len = MIN(len, v->grain - skip);
	if (vmdk_is_zero(v, e))
		return;
	if (!(v->h.flags & VMDK_COMPRESSED)) {
		p->kind = CFS_PIECE_DIRECT;
		p->coff = e * VMDK_SECTOR + skip;
		return;
	}
	p->kind = CFS_PIECE_GRAIN;
	p->coff = e * VMDK_SECTOR;
	p->clen = vmdk_record_len(v, e);
	p->index = g;
	p->skip = skip;
}

/* Inflate @in into @out (v->grain bytes); the stream must end there and
 * cover at least the part of the grain inside the disk. */
static bool vmdk_inflate(const VmdkReader *v, const CfsPiece *p,
			 const guint8 *in, guint32 in_len, guint8 *out,
			 GError **error)
{
	guint64 need = MIN(v->grain, v->head.size - p->index * v->grain);
	z_stream z = { 0 };
	int ret;

	if (inflateInit(&z) != Z_OK) {
		g_set_error(error, CFS_ERROR, ENOMEM, "vmdk: inflateInit");
		return false;
	}
	z.next_in = (Bytef *)in;
	z.avail_in = in_len;
	z.next_out = out;
	z.avail_out = v->grain;
	ret = inflate(&z, Z_FINISH);
	inflateEnd(&z);
	if (ret != Z_STREAM_END || z.total_out < need)
		return cfs_reader_bad(error, "vmdk", "grain %" G_GUINT64_FORMAT
				      " does not inflate to its size (zlib %d,"
				      " %lu bytes)", p->index, ret,
				      z.total_out);
	memset(out + z.total_out, 0, v->grain - z.total_out);
	return true;
}

static bool vmdk_grain(const CfsReader *r, const CfsPiece *p, guint8 *dst,
		       const CfsContainer *c, GError **error)
{
	const VmdkReader *v = (const VmdkReader *)r;
	g_autofree guint8 *rec = g_malloc(p->clen);
	g_autofree guint8 *out = NULL;
	guint64 lba;
	guint32 size;

	if (!cfs_container_read(c, rec, p->clen, p->coff, error))
		return false;
	lba = cfs_get_le64(rec);
	size = cfs_get_le32(rec + 8);
	if (lba != p->index * v->h.grain)
		return cfs_reader_bad(error, "vmdk", "grain marker at %"
				      G_GUINT64_FORMAT " says sector %"
				      G_GUINT64_FORMAT ", its table %"
				      G_GUINT64_FORMAT, p->coff, lba,
				      p->index * v->h.grain);
	if (size == 0 || size > p->clen - 12)
		return cfs_reader_bad(error, "vmdk", "grain at %"
				      G_GUINT64_FORMAT " has %u compressed "
				      "bytes, at most %" G_GUINT64_FORMAT
				      " fit", p->coff, size, p->clen - 12);
	out = g_malloc(v->grain);
	if (!vmdk_inflate(v, p, rec + 12, size, out, error))
		return false;
	memcpy(dst, out + p->skip, p->len);
	return true;
}

static void vmdk_destroy(CfsReader *r)
{
	VmdkReader *v = (VmdkReader *)r;

	g_free(v->gd_slot);
	g_free(v->gt);
	g_free(v->bounds);
}

static const CfsReaderOps vmdk_ops = {
	.piece = vmdk_piece,
	.grain = vmdk_grain,
	.destroy = vmdk_destroy,
};

static bool vmdk_load(const CfsContainer *c, VmdkReader *v, GError **error)
{
	g_autoptr(GArray) refs = NULL;
	g_autoptr(GArray) ext = g_array_new(FALSE, FALSE, sizeof(CfsExtent));
	g_autoptr(GArray) bounds = g_array_new(FALSE, FALSE, sizeof(guint32));

	v->head.size = v->h.capacity * VMDK_SECTOR;
	v->grain = v->h.grain * VMDK_SECTOR;
	v->ngd = cfs_div_up(v->h.capacity, v->h.grain * VMDK_GTES);
	v->record_max = cfs_div_up(12 + compressBound(v->grain), VMDK_SECTOR) *
			VMDK_SECTOR;
	refs = vmdk_gd(c, v, error);
	if (!refs || !vmdk_gts(c, v, refs, error) ||
	    !vmdk_scan(c, v, ext, bounds, error))
		return false;
	if (v->h.flags & VMDK_COMPRESSED)
		vmdk_bounds(c, v, refs, bounds, v->h.at_end);
	cfs_reader_set_map(&v->head, ext);
	return true;
}

static CfsReader *vmdk_open(guint64 container_size, CfsExtentMap *map,
			    CfsRawReadFn read, void *opaque, GError **error)
{
	CfsContainer c = { container_size, map, read, opaque };
	g_autoptr(CfsReader) r = NULL;
	VmdkHeader h;

	if (!vmdk_read_header(&c, &h, error))
		return NULL;
	r = cfs_reader_alloc(sizeof(VmdkReader), &cfs_reader_vmdk, &vmdk_ops,
			     &c);
	((VmdkReader *)r)->h = h;
	if (!vmdk_load(&c, (VmdkReader *)r, error))
		return NULL;
	return g_steal_pointer(&r);
}

const CfsReaderFormat cfs_reader_vmdk = {
	.name = "vmdk",
	.open = vmdk_open,
};
