// SPDX-License-Identifier: MIT
/*
 * The dynamic VHDX view (MS-VHDX): file type identifier, two headers, two
 * region tables, an empty 1 MiB log, the metadata region, the BAT, then one
 * payload block per block of the disk that holds data, in disk order. All
 * GUIDs derive from the size and the map, so the bytes never change.
 */
#include <string.h>

#include "fs/formats/vhdx-guids.h"
#include "fs/formats/view-private.h"

#define VHDX_BLOCK (2 * MIB)
#define MIB (1024ull * 1024)
#define KIB 1024ull
#define VHDX_CHUNK_RATIO ((1ull << 23) * 512 / VHDX_BLOCK)
#define VHDX_HEADER_SIZE (4 * KIB)
#define VHDX_LOG_OFF (1 * MIB)
#define VHDX_LOG_LEN (1 * MIB)
#define VHDX_META_OFF (2 * MIB)
#define VHDX_META_LEN (1 * MIB)
#define VHDX_BAT_OFF (3 * MIB)
#define VHDX_PAYLOAD_FULLY_PRESENT 6
#define VHDX_META_ITEMS 5
#define VHDX_META_TABLE (32 + 32 * VHDX_META_ITEMS)
#define VHDX_META_DATA 40
#define VHDX_REGION_TABLE (16 + 32 * 2)

typedef struct {
	CfsView head;
	guint64 vsize;		/* virtual size: disk size to a sector */
	CfsUnits blocks;	/* payload blocks that hold data */
	guint64 nblocks;	/* payload blocks of the disk */
	guint64 bat_len;	/* BAT region length, whole MiB */
	guint64 data_start;
	guint8 fti[8 + 2 * 8];
	guint8 header[2][VHDX_HEADER_SIZE];
	guint8 region[VHDX_REGION_TABLE];
	guint8 meta_table[VHDX_META_TABLE];
	guint8 meta_data[VHDX_META_DATA];
} VhdxView;

static guint32 crc32c_table[256];

static gpointer crc32c_init(gpointer unused)
{
	for (guint32 i = 0; i < 256; i++) {
		guint32 c = i;

		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ 0x82F63B78 : c >> 1;
		crc32c_table[i] = c;
	}
	return NULL;
}

guint32 cfs_crc32c(guint32 crc, const void *data, gsize len)
{
	static GOnce once = G_ONCE_INIT;
	const guint8 *p = data;

	g_once(&once, crc32c_init, NULL);
	crc = ~crc;
	while (len--)
		crc = crc32c_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

/* CRC-32C of @len bytes whose first @n are @data and the rest zeros. */
static guint32 vhdx_crc_padded(const guint8 *data, gsize n, gsize len)
{
	static const guint8 zeros[4096];
	guint32 crc = cfs_crc32c(0, data, n);

	for (gsize done = n; done < len;) {
		gsize k = MIN(sizeof(zeros), len - done);

		crc = cfs_crc32c(crc, zeros, k);
		done += k;
	}
	return crc;
}

static void vhdx_put_guid(guint8 *p, const VhdxGuid *g)
{
	cfs_put_le32(p, g->d1);
	cfs_put_le16(p + 4, g->d2);
	cfs_put_le16(p + 6, g->d3);
	memcpy(p + 8, g->d4, 8);
}

/* A GUID from the digest of the disk, salted by its use. */
static void vhdx_put_digest_guid(guint8 *p, const CfsExtentMap *map,
				 const char *salt)
{
	guint8 d[32];

	cfs_view_digest(map, salt, d);
	memcpy(p, d, 16);
	p[7] = (p[7] & 0x0f) | 0x40;	/* version 4, in the LE d3 field */
	p[8] = (p[8] & 0x3f) | 0x80;
}

static void vhdx_build(VhdxView *x)
{
	static const char creator[] = "cloudfs";
	guint8 *p;

	memcpy(x->fti, "vhdxfile", 8);
	for (guint i = 0; i < sizeof(creator) - 1; i++)
		cfs_put_le16(x->fti + 8 + 2 * i, creator[i]);

	for (guint h = 0; h < 2; h++) {
		p = x->header[h];
		memcpy(p, "head", 4);
		cfs_put_le64(p + 8, h + 1);		/* sequence number */
		vhdx_put_digest_guid(p + 16, x->head.map, "vhdx-file-write");
		vhdx_put_digest_guid(p + 32, x->head.map, "vhdx-data-write");
		/* LogGuid zero: no log to replay; LogVersion 0 */
		cfs_put_le16(p + 66, 1);		/* version */
		cfs_put_le32(p + 68, VHDX_LOG_LEN);
		cfs_put_le64(p + 72, VHDX_LOG_OFF);
		cfs_put_le32(p + 4, cfs_crc32c(0, p, VHDX_HEADER_SIZE));
	}

	p = x->region;
	memcpy(p, "regi", 4);
	cfs_put_le32(p + 8, 2);				/* entry count */
	vhdx_put_guid(p + 16, &vhdx_bat_guid);
	cfs_put_le64(p + 32, VHDX_BAT_OFF);
	cfs_put_le32(p + 40, x->bat_len);
	cfs_put_le32(p + 44, 1);			/* required */
	vhdx_put_guid(p + 48, &vhdx_meta_guid);
	cfs_put_le64(p + 64, VHDX_META_OFF);
	cfs_put_le32(p + 72, VHDX_META_LEN);
	cfs_put_le32(p + 76, 1);
	cfs_put_le32(p + 4, vhdx_crc_padded(p, VHDX_REGION_TABLE, 64 * KIB));

	p = x->meta_table;
	memcpy(p, "metadata", 8);
	cfs_put_le16(p + 10, VHDX_META_ITEMS);
	{
		static const struct {
			const VhdxGuid *guid;
			guint32 off, len, flags;
		} items[VHDX_META_ITEMS] = {
			{ &vhdx_file_params_guid, 0, 8, 4 }, /* required */
			{ &vhdx_disk_size_guid, 8, 8, 6 },	/* + vdisk */
			{ &vhdx_disk_id_guid, 16, 16, 6 },
			{ &vhdx_logical_guid, 32, 4, 6 },
			{ &vhdx_physical_guid, 36, 4, 6 },
		};

		for (guint i = 0; i < VHDX_META_ITEMS; i++) {
			guint8 *e = p + 32 + 32 * i;

			vhdx_put_guid(e, items[i].guid);
			cfs_put_le32(e + 16, 64 * KIB + items[i].off);
			cfs_put_le32(e + 20, items[i].len);
			cfs_put_le32(e + 24, items[i].flags);
		}
	}
	p = x->meta_data;
	cfs_put_le32(p, VHDX_BLOCK);	/* flags 0: no parent, may trim */
	cfs_put_le64(p + 8, x->vsize);
	vhdx_put_digest_guid(p + 16, x->head.map, "vhdx-virtual-disk-id");
	cfs_put_le32(p + 32, 512);
	cfs_put_le32(p + 36, 4096);
}

static guint64 vhdx_bat_entry(const VhdxView *x, guint64 i)
{
	guint64 p, r;

	if (i % (VHDX_CHUNK_RATIO + 1) == VHDX_CHUNK_RATIO)
		return 0;		/* sector bitmap: not present */
	p = i - i / (VHDX_CHUNK_RATIO + 1);
	if (p >= x->nblocks || !cfs_units_rank(&x->blocks, p, &r))
		return 0;			/* not present */
	return (x->data_start + r * VHDX_BLOCK) | VHDX_PAYLOAD_FULLY_PRESENT;
}

static bool vhdx_fill(const CfsView *view, CfsFill *f, guint8 *dst,
		      guint64 off, guint64 len, guint64 *done)
{
	const VhdxView *x = (const VhdxView *)view;
	guint64 n;

	if (off >= x->data_start) {
		guint64 b = (off - x->data_start) / VHDX_BLOCK;
		guint64 boff = (off - x->data_start) % VHDX_BLOCK;
		guint64 p = cfs_units_select(&x->blocks, b);

		*done = MIN(len, VHDX_BLOCK - boff);
		return cfs_fill_raw(view, f, dst, p * VHDX_BLOCK + boff, *done);
	}
	n = off < VHDX_BAT_OFF ? MIN(len, MIB - off % MIB) :
				 MIN(len, x->data_start - off);
	*done = n;
	if (!dst)
		return true;
	memset(dst, 0, n);
	if (off < VHDX_LOG_OFF) {
		cfs_fill_blob(dst, off, n, 0, x->fti, sizeof(x->fti));
		cfs_fill_blob(dst, off, n, 64 * KIB, x->header[0],
			      VHDX_HEADER_SIZE);
		cfs_fill_blob(dst, off, n, 128 * KIB, x->header[1],
			      VHDX_HEADER_SIZE);
		cfs_fill_blob(dst, off, n, 192 * KIB, x->region,
			      sizeof(x->region));
		cfs_fill_blob(dst, off, n, 256 * KIB, x->region,
			      sizeof(x->region));
	} else if (off >= VHDX_META_OFF && off < VHDX_BAT_OFF) {
		cfs_fill_blob(dst, off, n, VHDX_META_OFF, x->meta_table,
			      sizeof(x->meta_table));
		cfs_fill_blob(dst, off, n, VHDX_META_OFF + 64 * KIB,
			      x->meta_data, sizeof(x->meta_data));
	} else if (off >= VHDX_BAT_OFF) {
		guint64 e0 = (off - VHDX_BAT_OFF) / 8;
		guint64 e1 = (off + n - 1 - VHDX_BAT_OFF) / 8;

		for (guint64 e = e0; e <= e1; e++) {
			guint8 b[8];

			cfs_put_le64(b, vhdx_bat_entry(x, e));
			cfs_fill_blob(dst, off, n, VHDX_BAT_OFF + e * 8, b, 8);
		}
	}
	return true;
}

static void vhdx_destroy(CfsView *view)
{
	cfs_units_clear(&((VhdxView *)view)->blocks);
}

static const CfsViewOps vhdx_ops = {
	.fill = vhdx_fill,
	.destroy = vhdx_destroy,
};

static CfsView *vhdx_create(CfsExtentMap *map, GError **error)
{
	VhdxView *x = (VhdxView *)cfs_view_alloc(sizeof(VhdxView),
						 &cfs_format_vhdx, &vhdx_ops,
						 map);
	guint64 entries;

	x->vsize = cfs_div_up(map->size, 512) * 512;
	x->nblocks = cfs_div_up(x->vsize, VHDX_BLOCK);
	entries = x->nblocks ?
		  x->nblocks + (x->nblocks - 1) / VHDX_CHUNK_RATIO : 0;
	x->bat_len = MAX(1, cfs_div_up(entries * 8, MIB)) * MIB;
	x->data_start = VHDX_BAT_OFF + x->bat_len;
	cfs_units_init(&x->blocks, map, VHDX_BLOCK);
	x->head.size = x->data_start + x->blocks.total * VHDX_BLOCK;
	vhdx_build(x);
	return &x->head;
}

const CfsFormat cfs_format_vhdx = {
	.name = "vhdx",
	.create = vhdx_create,
};
