// SPDX-License-Identifier: MIT
/*
 * The VHDX reader (MS-VHDX), dynamic and fixed: the current of two headers,
 * the region table, the metadata items that size the disk, and the BAT,
 * whose fully present payload blocks become runs of the disk. Differencing
 * disks and files whose log still needs replaying are refused.
 */
#include <string.h>

#include "fs/formats/reader-private.h"
#include "fs/formats/vhdx-guids.h"
#include "fs/formats/view-private.h"	/* cfs_crc32c */

#define KIB 1024ull
#define MIB (1024ull * KIB)
#define VHDX_HEAD_END (320 * KIB)	/* identifier, headers, regions */
#define VHDX_HEADER_SIZE (4 * KIB)
#define VHDX_REGION_SIZE (64 * KIB)
#define VHDX_META_TABLE (64 * KIB)
#define VHDX_MAX_ENTRIES 2047
#define VHDX_META_SPAN_MAX (16 * MIB)
#define VHDX_BAT_PIECE (4 * MIB)	/* BAT bytes per read */
#define VHDX_META_REQUIRED 4
#define VHDX_HAS_PARENT 2

enum {
	VHDX_NOT_PRESENT = 0,
	VHDX_UNDEFINED = 1,
	VHDX_ZERO = 2,
	VHDX_UNMAPPED = 3,
	VHDX_FULLY_PRESENT = 6,
	VHDX_PARTIALLY_PRESENT = 7,
};

/* Known and not needed here: physical sector size, page 83 data, parent
 * locator (refused anyway through the has-parent flag). */
static const VhdxGuid *const vhdx_known_guids[] = {
	&vhdx_physical_guid, &vhdx_disk_id_guid, &vhdx_parent_locator_guid,
};

typedef struct {
	guint64 bat_off, bat_len;
	guint64 meta_off, meta_len;
	guint32 block;		/* payload block size */
	guint32 flags;		/* file parameters */
	guint32 sector;		/* logical sector size */
	guint64 vsize;
	guint64 nblocks;
	guint64 ratio;		/* payload blocks per sector bitmap block */
	guint64 entries;	/* BAT entries */
} VhdxInfo;

static bool vhdx_guid_eq(const guint8 *p, const VhdxGuid *g)
{
	return cfs_get_le32(p) == g->d1 && cfs_get_le16(p + 4) == g->d2 &&
	       cfs_get_le16(p + 6) == g->d3 && memcmp(p + 8, g->d4, 8) == 0;
}

/* Whether the CRC-32C of @len bytes at @p, with its field at +4 as zero,
 * matches that field. Leaves @p as it was. */
static bool vhdx_crc_ok(guint8 *p, gsize len)
{
	guint32 want = cfs_get_le32(p + 4), got;

	memset(p + 4, 0, 4);
	got = cfs_crc32c(0, p, len);
	cfs_put_le32(p + 4, want);
	return got == want;
}

static bool vhdx_header_ok(guint8 *h)
{
	return memcmp(h, "head", 4) == 0 && cfs_get_le16(h + 66) == 1 &&
	       vhdx_crc_ok(h, VHDX_HEADER_SIZE);
}

/* The current header: the valid one with the higher sequence number. */
static const guint8 *vhdx_pick_header(guint8 *head, GError **error)
{
	guint8 *h1 = head + 64 * KIB, *h2 = head + 128 * KIB;
	bool ok1 = vhdx_header_ok(h1), ok2 = vhdx_header_ok(h2);
	static const guint8 zero[16];
	const guint8 *h;

	if (!ok1 && !ok2)
		return cfs_reader_bad(error, "vhdx", "no valid header");
	if (ok1 && ok2)
		h = cfs_get_le64(h2 + 8) > cfs_get_le64(h1 + 8) ? h2 : h1;
	else
		h = ok1 ? h1 : h2;
	if (memcmp(h + 48, zero, 16) != 0) {
		g_set_error(error, CFS_ERROR, ENOTSUP,
			    "vhdx: the log holds changes that need replaying "
			    "(open the disk in Hyper-V once, or run qemu-img "
			    "check -r all on it)");
		return NULL;
	}
	return h;
}

static bool vhdx_region(const guint8 *e, guint64 csize, guint64 *off,
			guint64 *len, GError **error)
{
	*off = cfs_get_le64(e + 16);
	*len = cfs_get_le32(e + 24);
	if (*off < MIB || *off % MIB || *len == 0 || *len % MIB ||
	    *off > csize || *len > csize - *off)
		return cfs_reader_bad(error, "vhdx",
				      "region at %" G_GUINT64_FORMAT
				      " of %" G_GUINT64_FORMAT
				      " bytes is not inside the file",
				      *off, *len);
	return true;
}

static bool vhdx_regions(guint8 *t, guint64 csize, VhdxInfo *x,
			 GError **error)
{
	guint32 n = cfs_get_le32(t + 8);

	if (n > VHDX_MAX_ENTRIES)
		return cfs_reader_bad(error, "vhdx", "%u regions", n);
	for (guint32 i = 0; i < n; i++) {
		const guint8 *e = t + 16 + 32 * i;

		if (vhdx_guid_eq(e, &vhdx_bat_guid)) {
			if (!vhdx_region(e, csize, &x->bat_off, &x->bat_len,
					 error))
				return false;
		} else if (vhdx_guid_eq(e, &vhdx_meta_guid)) {
			if (!vhdx_region(e, csize, &x->meta_off, &x->meta_len,
					 error))
				return false;
		} else if (cfs_get_le32(e + 28) & 1) {
			g_set_error(error, CFS_ERROR, ENOTSUP,
				    "vhdx: unknown required region");
			return false;
		}
	}
	if (!x->bat_len || !x->meta_len)
		return cfs_reader_bad(error, "vhdx", "no %s region",
				      x->bat_len ? "metadata" : "BAT");
	return true;
}

/* Identifier, current header, then the first valid region table. */
static bool vhdx_head(const CfsContainer *c, VhdxInfo *x, GError **error)
{
	g_autofree guint8 *head = NULL;
	guint8 *t = NULL;

	if (c->size < VHDX_HEAD_END)
		return cfs_reader_bad(error, "vhdx", "file of %"
				      G_GUINT64_FORMAT " bytes is too short",
				      c->size);
	head = g_malloc(VHDX_HEAD_END);
	if (!cfs_container_read(c, head, VHDX_HEAD_END, 0, error))
		return false;
	if (memcmp(head, "vhdxfile", 8) != 0)
		return cfs_reader_bad(error, "vhdx", "no file identifier");
	if (!vhdx_pick_header(head, error))
		return false;
	for (guint i = 0; i < 2 && !t; i++) {
		guint8 *r = head + (192 + 64 * i) * KIB;

		if (memcmp(r, "regi", 4) == 0 &&
		    vhdx_crc_ok(r, VHDX_REGION_SIZE))
			t = r;
	}
	if (!t)
		return cfs_reader_bad(error, "vhdx", "no valid region table");
	return vhdx_regions(t, c->size, x, error);
}

enum { ITEM_PARAMS, ITEM_SIZE, ITEM_SECTOR, ITEMS };

static const VhdxGuid *const vhdx_items[ITEMS] = {
	&vhdx_file_params_guid, &vhdx_disk_size_guid, &vhdx_logical_guid,
};
static const guint32 vhdx_item_len[ITEMS] = { 8, 8, 4 };

static bool vhdx_known(const guint8 *e)
{
	for (guint k = 0; k < G_N_ELEMENTS(vhdx_known_guids); k++) {
		if (vhdx_guid_eq(e, vhdx_known_guids[k]))
			return true;
	}
	return false;
}

/* Find the items we need in the metadata table: offsets within the
 * region in @off, checked against @x->meta_len. */
static bool vhdx_meta_table(const guint8 *t, const VhdxInfo *x,
			    guint64 off[ITEMS], GError **error)
{
	guint16 n = cfs_get_le16(t + 10);

	if (memcmp(t, "metadata", 8) != 0 || n > VHDX_MAX_ENTRIES)
		return cfs_reader_bad(error, "vhdx", "bad metadata table");
	for (guint i = 0; i < n; i++) {
		const guint8 *e = t + 32 + 32 * i;
		guint64 o = cfs_get_le32(e + 16), l = cfs_get_le32(e + 20);
		guint k;

		for (k = 0; k < ITEMS; k++) {
			if (vhdx_guid_eq(e, vhdx_items[k]))
				break;
		}
		if (k == ITEMS) {
			if ((cfs_get_le32(e + 24) & VHDX_META_REQUIRED) &&
			    !vhdx_known(e)) {
				g_set_error(error, CFS_ERROR, ENOTSUP,
					    "vhdx: unknown required metadata");
				return false;
			}
			continue;
		}
		if (l != vhdx_item_len[k] || o < VHDX_META_TABLE ||
		    o + l > x->meta_len)
			return cfs_reader_bad(error, "vhdx",
					      "bad metadata item %u", k);
		off[k] = o;
	}
	for (guint k = 0; k < ITEMS; k++) {
		if (!off[k])
			return cfs_reader_bad(error, "vhdx",
					      "metadata item %u missing", k);
	}
	return true;
}

/* Check the disk's geometry and derive block counts. */
static bool vhdx_geometry(VhdxInfo *x, GError **error)
{
	if (x->flags & VHDX_HAS_PARENT) {
		g_set_error(error, CFS_ERROR, ENOTSUP,
			    "vhdx: a differencing disk (with a parent) is not "
			    "supported");
		return false;
	}
	if (x->block < MIB || x->block > 256 * MIB ||
	    (x->block & (x->block - 1)))
		return cfs_reader_bad(error, "vhdx", "block size %u",
				      x->block);
	if (x->sector != 512 && x->sector != 4096)
		return cfs_reader_bad(error, "vhdx", "logical sector size %u",
				      x->sector);
	if (x->vsize == 0 || x->vsize > CFS_READER_MAX_DISK ||
	    x->vsize % x->sector)
		return cfs_reader_bad(error, "vhdx", "disk size %"
				      G_GUINT64_FORMAT, x->vsize);
	x->nblocks = cfs_div_up(x->vsize, x->block);
	x->ratio = (1ull << 23) * x->sector / x->block;
	x->entries = x->nblocks + (x->nblocks - 1) / x->ratio;
	if (x->entries > x->bat_len / 8)
		return cfs_reader_bad(error, "vhdx", "BAT region of %"
				      G_GUINT64_FORMAT " bytes is too short "
				      "for %" G_GUINT64_FORMAT " entries",
				      x->bat_len, x->entries);
	return true;
}

static bool vhdx_metadata(const CfsContainer *c, VhdxInfo *x, GError **error)
{
	g_autofree guint8 *t = NULL, *span = NULL;
	guint64 off[ITEMS] = { 0 }, lo = G_MAXUINT64, hi = 0;

	if (x->meta_len < VHDX_META_TABLE)
		return cfs_reader_bad(error, "vhdx", "short metadata region");
	t = g_malloc(VHDX_META_TABLE);
	if (!cfs_container_read(c, t, VHDX_META_TABLE, x->meta_off, error))
		return false;
	if (!vhdx_meta_table(t, x, off, error))
		return false;
	for (guint k = 0; k < ITEMS; k++) {
		lo = MIN(lo, off[k]);
		hi = MAX(hi, off[k] + vhdx_item_len[k]);
	}
	if (hi - lo > VHDX_META_SPAN_MAX)
		return cfs_reader_bad(error, "vhdx", "metadata items spread");
	span = g_malloc(hi - lo);
	if (!cfs_container_read(c, span, hi - lo, x->meta_off + lo, error))
		return false;
	x->block = cfs_get_le32(span + off[ITEM_PARAMS] - lo);
	x->flags = cfs_get_le32(span + off[ITEM_PARAMS] - lo + 4);
	x->vsize = cfs_get_le64(span + off[ITEM_SIZE] - lo);
	x->sector = cfs_get_le32(span + off[ITEM_SECTOR] - lo);
	return vhdx_geometry(x, error);
}

typedef struct {
	const VhdxInfo *x;
	guint64 csize;
	const CfsExtentMap *cmap;
	GArray *runs, *ext;
	guint64 present;	/* fully present blocks so far */
} BatCtx;

static bool vhdx_payload(BatCtx *b, guint64 blk, guint64 e, GError **error)
{
	guint64 state = e & 7, mb = e >> 20, voff = blk * b->x->block;
	guint64 vlen = MIN(b->x->block, b->x->vsize - voff), coff = mb * MIB;

	if (state <= VHDX_UNMAPPED)
		return true;	/* reads as zeros */
	if (state != VHDX_FULLY_PRESENT)
		return cfs_reader_bad(error, "vhdx", "block %" G_GUINT64_FORMAT
				      " in state %u", blk, (guint)state);
	if (mb == 0 || mb > b->csize / MIB || vlen > b->csize - coff)
		return cfs_reader_bad(error, "vhdx", "block %" G_GUINT64_FORMAT
				      " at %" G_GUINT64_FORMAT
				      " MiB is past the end of the file",
				      blk, mb);
	if (++b->present > b->csize / MIB + 1)
		return cfs_reader_bad(error, "vhdx",
				      "more blocks than the file can hold");
	cfs_reader_runs_add(b->runs, voff, coff, vlen);
	cfs_reader_map_add(b->ext, b->cmap, voff, coff, vlen);
	return true;
}

/* BAT entries [first, first + n) from @p. */
static bool vhdx_entries(BatCtx *b, const guint8 *p, guint64 first,
			 guint64 n, GError **error)
{
	guint64 ratio = b->x->ratio;

	for (guint64 i = first; i < first + n; i++) {
		guint64 e = cfs_get_le64(p + 8 * (i - first));
		guint64 pos = i % (ratio + 1);

		if (pos == ratio) {	/* sector bitmap block */
			if ((e & 7) != 0 && (e & 7) != 6)
				return cfs_reader_bad(error, "vhdx",
						      "bad sector bitmap");
			continue;
		}
		if (!vhdx_payload(b, i / (ratio + 1) * ratio + pos, e, error))
			return false;
	}
	return true;
}

static bool vhdx_bat(const CfsContainer *c, const VhdxInfo *x, GArray *runs,
		     GArray *ext, GError **error)
{
	BatCtx b = { x, c->size, c->map, runs, ext, 0 };
	g_autofree guint8 *buf = g_malloc(MIN(x->entries * 8, VHDX_BAT_PIECE));

	for (guint64 i = 0; i < x->entries;) {
		guint64 n = MIN(x->entries - i, VHDX_BAT_PIECE / 8);

		if (!cfs_container_read(c, buf, n * 8, x->bat_off + i * 8,
					error))
			return false;
		if (!vhdx_entries(&b, buf, i, n, error))
			return false;
		i += n;
	}
	return true;
}

static const CfsReaderOps vhdx_ops = { 0 };

static CfsReader *vhdx_open(guint64 container_size, CfsExtentMap *map,
			    CfsRawReadFn read, void *opaque, GError **error)
{
	CfsContainer c = { container_size, map, read, opaque };
	g_autoptr(CfsReader) r = NULL;
	g_autoptr(GArray) runs = g_array_new(FALSE, FALSE,
					     sizeof(CfsReaderRun));
	g_autoptr(GArray) ext = g_array_new(FALSE, FALSE, sizeof(CfsExtent));
	VhdxInfo x = { 0 };

	if (!vhdx_head(&c, &x, error) || !vhdx_metadata(&c, &x, error) ||
	    !vhdx_bat(&c, &x, runs, ext, error))
		return NULL;
	r = cfs_reader_alloc(sizeof(CfsReader), &cfs_reader_vhdx, &vhdx_ops,
			     &c);
	r->size = x.vsize;
	cfs_reader_set_runs(r, runs);
	cfs_reader_set_map(r, ext);
	return g_steal_pointer(&r);
}

const CfsReaderFormat cfs_reader_vhdx = {
	.name = "vhdx",
	.open = vhdx_open,
};
