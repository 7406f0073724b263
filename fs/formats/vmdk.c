// SPDX-License-Identifier: MIT
/*
 * The streamOptimized VMDK view: header, embedded descriptor, then for each
 * grain table that maps data its grains (a marker and a zlib stream of
 * stored deflate blocks each) followed by the table itself, then the grain
 * directory, the footer and the end-of-stream marker. Stored blocks keep
 * every size known in advance; only each grain's Adler-32 needs its data.
 */
#include <string.h>

#include "common/error.h"
#include "fs/formats/view-private.h"

#define VMDK_SECTOR 512ull
#define VMDK_GRAIN_SECTORS 128ull
#define VMDK_GRAIN (VMDK_GRAIN_SECTORS * VMDK_SECTOR)
#define VMDK_GTES 512ull
#define VMDK_GT_SECTORS (VMDK_GTES * 4 / VMDK_SECTOR)
#define VMDK_GT_RECORD (1 + VMDK_GT_SECTORS)	/* marker + table */
#define VMDK_OVERHEAD 128ull			/* sectors before grains */
#define VMDK_DESC_OFFSET 1ull
#define VMDK_DESC_SECTORS 20ull
#define VMDK_GD_AT_END G_MAXUINT64
#define VMDK_FLAGS 0x30001u	/* newline test, compressed, markers */
#define VMDK_MARKER_GT 1
#define VMDK_MARKER_GD 2
#define VMDK_MARKER_FOOTER 3

/* A grain record: marker (lba, size), zlib header, stored blocks of at
 * most 65535 bytes with their 5-byte headers, Adler-32, zero padding. */
#define VMDK_BLOCK_MAX 65535ull
#define VMDK_BLOCKS ((VMDK_GRAIN + VMDK_BLOCK_MAX - 1) / VMDK_BLOCK_MAX)
#define VMDK_ADLER_OFF (12 + 2 + 5 * VMDK_BLOCKS + VMDK_GRAIN)
#define VMDK_ZLIB_LEN (VMDK_ADLER_OFF + 4 - 12)
#define VMDK_RECORD_SECTORS ((VMDK_ADLER_OFF + 4 + 511) / VMDK_SECTOR)
#define VMDK_RECORD (VMDK_RECORD_SECTORS * VMDK_SECTOR)

typedef struct {
	CfsView head;
	guint64 capacity;	/* sectors */
	CfsUnits grains;	/* grains that hold data */
	CfsUnits gts;		/* grain tables that map data */
	guint64 gd_sectors;
	guint64 gd;		/* sector of the grain directory */
	guint64 trailer;	/* sector of the GD marker */
	guint8 header[VMDK_SECTOR];
	guint8 footer[VMDK_SECTOR];
	char *desc;
	struct VmdkHead *head_sum;	/* see vmdk_head_get() */
} VmdkView;

/* The Adler-32 of the first bytes of one grain's data, from the read that
 * ended inside its record: the next read, which holds the checksum, goes
 * on from there instead of reading the whole grain again (a read of the
 * kernel's size ends inside a record more often than not). */
typedef struct VmdkHead {
	GMutex lock;
	guint64 grain;		/* G_MAXUINT64: none */
	guint64 len;		/* bytes of its data from its start */
	guint32 sum;
} VmdkHead;


static void vmdk_put_header(const VmdkView *v, guint8 *p, guint64 gd_offset)
{
	memset(p, 0, VMDK_SECTOR);
	memcpy(p, "KDMV", 4);
	cfs_put_le32(p + 4, 3);				/* version */
	cfs_put_le32(p + 8, VMDK_FLAGS);
	cfs_put_le64(p + 12, v->capacity);
	cfs_put_le64(p + 20, VMDK_GRAIN_SECTORS);
	cfs_put_le64(p + 28, VMDK_DESC_OFFSET);
	cfs_put_le64(p + 36, VMDK_DESC_SECTORS);
	cfs_put_le32(p + 44, VMDK_GTES);
	cfs_put_le64(p + 48, 0);			/* no redundant GD */
	cfs_put_le64(p + 56, gd_offset);
	cfs_put_le64(p + 64, VMDK_OVERHEAD);
	p[72] = 0;					/* clean shutdown */
	p[73] = '\n';
	p[74] = ' ';
	p[75] = '\r';
	p[76] = '\n';
	cfs_put_le16(p + 77, 1);			/* deflate */
}

static char *vmdk_descriptor(const VmdkView *v)
{
	guint8 d[32];
	guint64 cyl = MIN(v->capacity / (255 * 63), 65535);

	cfs_view_digest(v->head.map, "vmdk-cid", d);
	return g_strdup_printf("# Disk DescriptorFile\n"
			       "version=1\n"
			       "CID=%08x\n"
			       "parentCID=ffffffff\n"
			       "createType=\"streamOptimized\"\n"
			       "\n"
			       "# Extent description\n"
			       "RW %" G_GUINT64_FORMAT " SPARSE \"disk.vmdk\"\n"
			       "\n"
			       "# The Disk Data Base\n"
			       "#DDB\n"
			       "\n"
			       "ddb.virtualHWVersion = \"4\"\n"
			       "ddb.geometry.cylinders = \"%" G_GUINT64_FORMAT
			       "\"\n"
			       "ddb.geometry.heads = \"255\"\n"
			       "ddb.geometry.sectors = \"63\"\n"
			       "ddb.adapterType = \"lsilogic\"\n",
			       d[0] | d[1] << 8 | d[2] << 16 |
				       (guint32)d[3] << 24,
			       v->capacity, cyl);
}

/* Fill a metadata marker sector at view sector @sector. */
static void vmdk_fill_marker(guint8 *dst, guint64 off, guint64 len,
			     guint64 sector, guint64 val, guint32 type)
{
	guint8 m[16] = { 0 };

	cfs_put_le64(m, val);
	cfs_put_le32(m + 12, type);
	cfs_fill_blob(dst, off, len, sector * VMDK_SECTOR, m, sizeof(m));
}

/* Sector where the group of grain table rank @r starts. */
static guint64 vmdk_group_start(const VmdkView *v, guint64 r)
{
	guint64 g = cfs_units_select(&v->gts, r);

	return VMDK_OVERHEAD + r * VMDK_GT_RECORD +
	       cfs_units_before(&v->grains, g * VMDK_GTES) *
	       VMDK_RECORD_SECTORS;
}

/* Sector of the grain record of grain @u, 0 if it is not stored. */
static guint64 vmdk_grain_sector(const VmdkView *v, guint64 u)
{
	guint64 k, r;

	if (!cfs_units_rank(&v->grains, u, &k))
		return 0;
	cfs_units_rank(&v->gts, u / VMDK_GTES, &r);
	return VMDK_OVERHEAD + k * VMDK_RECORD_SECTORS + r * VMDK_GT_RECORD;
}

/* Offset in a grain record of the data of stored block @b. */
static guint64 vmdk_block_data(guint64 b)
{
	return 14 + 5 * (b + 1) + b * VMDK_BLOCK_MAX;
}

static guint64 vmdk_block_len(guint64 b)
{
	return MIN(VMDK_BLOCK_MAX, VMDK_GRAIN - b * VMDK_BLOCK_MAX);
}

/* Grain data bytes in record bytes [0, x). */
static guint64 vmdk_data_before(guint64 x)
{
	guint64 n = 0;

	for (guint64 b = 0; b < VMDK_BLOCKS; b++) {
		guint64 ds = vmdk_block_data(b);

		if (x > ds)
			n += MIN(x - ds, vmdk_block_len(b));
	}
	return n;
}

/* Whether the Adler-32 of the first @len data bytes of grain @u is known:
 * into @sum. */
static bool vmdk_head_get(const VmdkView *v, guint64 u, guint64 len,
			  guint32 *sum)
{
	VmdkHead *h = v->head_sum;
	bool known;

	g_mutex_lock(&h->lock);
	known = h->grain == u && h->len == len;
	*sum = h->sum;
	g_mutex_unlock(&h->lock);
	return known;
}

static void vmdk_head_put(const VmdkView *v, guint64 u, guint64 len,
			  guint32 sum)
{
	VmdkHead *h = v->head_sum;

	g_mutex_lock(&h->lock);
	h->grain = u;
	h->len = len;
	h->sum = sum;
	g_mutex_unlock(&h->lock);
}

/* The stored-block headers, the marker and the zlib header of grain @u's
 * record: bytes [roff, roff + n) of them into @dst. */
static void vmdk_fill_frame(guint8 *dst, guint64 u, guint64 roff, guint64 n)
{
	guint8 b[16];

	cfs_put_le64(b, u * VMDK_GRAIN_SECTORS);
	cfs_put_le32(b + 8, VMDK_ZLIB_LEN);
	b[12] = 0x78;		/* deflate, 32 KiB window */
	b[13] = 0x01;		/* no dictionary, fastest; check bits */
	cfs_fill_blob(dst, roff, n, 0, b, 14);
	for (guint64 k = 0; k < VMDK_BLOCKS; k++) {
		guint64 bl = vmdk_block_len(k);

		b[0] = k + 1 == VMDK_BLOCKS;	/* BFINAL, BTYPE 00 */
		cfs_put_le16(b + 1, bl);
		cfs_put_le16(b + 3, ~bl);
		cfs_fill_blob(dst, roff, n, vmdk_block_data(k) - 5, b, 5);
	}
	/* After the Adler-32, the record's padding is zeros. */
	if (roff + n > VMDK_ADLER_OFF + 4) {
		guint64 z = MAX(roff, VMDK_ADLER_OFF + 4);

		memset(dst + (z - roff), 0, roff + n - z);
	}
}

/* Record bytes [roff, roff + n) of the grain record of grain @u. The
 * grain's data is read in place, block by block. The Adler-32 after it
 * needs all of the data: summed here when the piece holds it all, else
 * carried on from the piece before (vmdk_head_get), else the whole grain
 * is read apart. */
static bool vmdk_fill_grain(const VmdkView *v, CfsFill *f, guint8 *dst,
			    guint64 u, guint64 roff, guint64 n)
{
	g_autofree guint8 *tmp = NULL;
	bool adler = roff < VMDK_ADLER_OFF + 4 && roff + n > VMDK_ADLER_OFF;
	guint64 q = vmdk_data_before(roff);
	guint32 sum = 1;
	bool summing = q == 0 || (dst && vmdk_head_get(v, u, q, &sum));
	guint8 b[4];

	if (adler && !summing) {
		if (dst)
			tmp = g_malloc(VMDK_GRAIN);
		if (!cfs_fill_raw(&v->head, f, tmp, u * VMDK_GRAIN,
				  VMDK_GRAIN))
			return false;
		if (dst)
			sum = cfs_adler32(1, tmp, VMDK_GRAIN);
	}
	for (guint64 k = 0; k < VMDK_BLOCKS; k++) {
		guint64 ds = vmdk_block_data(k), bl = vmdk_block_len(k);
		guint64 s = MAX(ds, roff), t = MIN(ds + bl, roff + n);
		guint64 at = u * VMDK_GRAIN + k * VMDK_BLOCK_MAX + (s - ds);

		if (s >= t)
			continue;
		if (tmp)
			memcpy(dst + (s - roff), tmp + (at - u * VMDK_GRAIN),
			       t - s);
		else if (!cfs_fill_raw(&v->head, f,
				       dst ? dst + (s - roff) : NULL, at, t - s))
			return false;
		if (dst && summing)
			sum = cfs_adler32(sum, dst + (s - roff), t - s);
	}
	if (!dst)
		return true;
	vmdk_fill_frame(dst, u, roff, n);
	if (adler) {
		cfs_put_be32(b, sum);
		cfs_fill_blob(dst, roff, n, VMDK_ADLER_OFF, b, 4);
	} else if (summing && q < vmdk_data_before(roff + n)) {
		vmdk_head_put(v, u, vmdk_data_before(roff + n), sum);
	}
	return true;
}

/* Grain table of index @g (rank @r): bytes [off, off + len) of the view,
 * where the table's marker starts at view sector @sector. */
static void vmdk_fill_gt(const VmdkView *v, guint8 *dst, guint64 off,
			 guint64 len, guint64 sector, guint64 g)
{
	guint64 t = (sector + 1) * VMDK_SECTOR;
	guint64 e0, e1;

	vmdk_fill_marker(dst, off, len, sector, VMDK_GT_SECTORS,
			 VMDK_MARKER_GT);
	if (off + len <= t)
		return;
	e0 = (MAX(off, t) - t) / 4;
	e1 = (off + len - 1 - t) / 4;
	for (guint64 e = e0; e <= e1; e++) {
		guint8 b[4];

		cfs_put_le32(b, vmdk_grain_sector(v, g * VMDK_GTES + e));
		cfs_fill_blob(dst, off, len, t + e * 4, b, 4);
	}
}

static void vmdk_fill_trailer(const VmdkView *v, guint8 *dst, guint64 off,
			      guint64 len)
{
	guint64 gd = v->gd * VMDK_SECTOR;
	guint64 end = gd + v->gd_sectors * VMDK_SECTOR;

	vmdk_fill_marker(dst, off, len, v->trailer, v->gd_sectors,
			 VMDK_MARKER_GD);
	/* An empty disk has no grain directory: end == gd. */
	if (end > gd && off + len > gd && off < end) {
		guint64 e0 = (MAX(off, gd) - gd) / 4;
		guint64 e1 = (MIN(off + len, end) - 1 - gd) / 4;

		for (guint64 e = e0; e <= e1; e++) {
			guint8 b[4];
			guint64 r = 0;

			if (!cfs_units_rank(&v->gts, e, &r))
				cfs_put_le32(b, 0);
			else
				cfs_put_le32(b, vmdk_group_start(v, r) + 1 +
					     (cfs_units_before(&v->grains,
							(e + 1) * VMDK_GTES) -
					      cfs_units_before(&v->grains,
							e * VMDK_GTES)) *
					     VMDK_RECORD_SECTORS);
			cfs_fill_blob(dst, off, len, gd + e * 4, b, 4);
		}
	}
	vmdk_fill_marker(dst, off, len, v->gd + v->gd_sectors, 1,
			 VMDK_MARKER_FOOTER);
	cfs_fill_blob(dst, off, len, end + VMDK_SECTOR, v->footer,
		      VMDK_SECTOR);
	/* the end-of-stream marker is a sector of zeros */
}

static bool vmdk_fill(const CfsView *view, CfsFill *f, guint8 *dst,
		      guint64 off, guint64 len, guint64 *done)
{
	const VmdkView *v = (const VmdkView *)view;
	guint64 lo = 0, hi = v->gts.total, r, g, start, grains, rel;

	if (off < VMDK_OVERHEAD * VMDK_SECTOR) {
		*done = MIN(len, VMDK_OVERHEAD * VMDK_SECTOR - off);
		if (dst) {
			memset(dst, 0, *done);
			cfs_fill_blob(dst, off, *done, 0, v->header,
				      VMDK_SECTOR);
			cfs_fill_blob(dst, off, *done,
				      VMDK_DESC_OFFSET * VMDK_SECTOR, v->desc,
				      strlen(v->desc));
		}
		return true;
	}
	if (off >= v->trailer * VMDK_SECTOR) {
		*done = len;
		if (dst) {
			memset(dst, 0, len);
			vmdk_fill_trailer(v, dst, off, len);
		}
		return true;
	}
	/* the last group starting at or before @off */
	while (hi - lo > 1) {
		guint64 mid = lo + (hi - lo) / 2;

		if (vmdk_group_start(v, mid) * VMDK_SECTOR <= off)
			lo = mid;
		else
			hi = mid;
	}
	r = lo;
	g = cfs_units_select(&v->gts, r);
	start = vmdk_group_start(v, r) * VMDK_SECTOR;
	grains = cfs_units_before(&v->grains, (g + 1) * VMDK_GTES) -
		 cfs_units_before(&v->grains, g * VMDK_GTES);
	rel = off - start;
	if (rel < grains * VMDK_RECORD) {
		guint64 k = cfs_units_before(&v->grains, g * VMDK_GTES) +
			    rel / VMDK_RECORD;
		guint64 roff = rel % VMDK_RECORD;

		*done = MIN(len, VMDK_RECORD - roff);
		return vmdk_fill_grain(v, f, dst,
				       cfs_units_select(&v->grains, k), roff,
				       *done);
	}
	*done = MIN(len, start + grains * VMDK_RECORD +
			 VMDK_GT_RECORD * VMDK_SECTOR - off);
	if (dst) {
		memset(dst, 0, *done);
		vmdk_fill_gt(v, dst, off, *done,
			     start / VMDK_SECTOR + grains * VMDK_RECORD_SECTORS,
			     g);
	}
	return true;
}

static void vmdk_destroy(CfsView *view)
{
	VmdkView *v = (VmdkView *)view;

	cfs_units_clear(&v->grains);
	cfs_units_clear(&v->gts);
	g_free(v->desc);
	if (v->head_sum) {
		g_mutex_clear(&v->head_sum->lock);
		g_free(v->head_sum);
	}
}

static const CfsViewOps vmdk_ops = {
	.fill = vmdk_fill,
	.destroy = vmdk_destroy,
};

static CfsView *vmdk_create(CfsExtentMap *map, GError **error)
{
	g_autoptr(CfsView) view = cfs_view_alloc(sizeof(VmdkView),
						 &cfs_format_vmdk, &vmdk_ops,
						 map);
	VmdkView *v = (VmdkView *)view;
	guint64 gds;

	v->head_sum = g_new0(VmdkHead, 1);
	g_mutex_init(&v->head_sum->lock);
	v->head_sum->grain = G_MAXUINT64;
	v->capacity = cfs_div_up(map->size, VMDK_SECTOR);
	cfs_units_init(&v->grains, map, VMDK_GRAIN);
	cfs_units_group(&v->gts, &v->grains, VMDK_GTES);
	gds = cfs_div_up(v->capacity, VMDK_GRAIN_SECTORS * VMDK_GTES);
	v->gd_sectors = cfs_div_up(gds * 4, VMDK_SECTOR);
	v->trailer = VMDK_OVERHEAD + v->grains.total * VMDK_RECORD_SECTORS +
		     v->gts.total * VMDK_GT_RECORD;
	v->gd = v->trailer + 1;
	/* grain and table offsets are 32-bit sector numbers */
	if (v->trailer > G_MAXUINT32) {
		g_set_error(error, CFS_ERROR, EFBIG,
			    "vmdk view of a %" G_GUINT64_FORMAT "-byte disk "
			    "with %" G_GUINT64_FORMAT " bytes of data would "
			    "pass 2 TiB", map->size, map->data_bytes);
		return NULL;
	}
	v->head.size = (v->gd + v->gd_sectors + 3) * VMDK_SECTOR;
	vmdk_put_header(v, v->header, VMDK_GD_AT_END);
	vmdk_put_header(v, v->footer, v->gd);
	v->desc = vmdk_descriptor(v);
	g_assert(strlen(v->desc) <= VMDK_DESC_SECTORS * VMDK_SECTOR);
	return g_steal_pointer(&view);
}

const CfsFormat cfs_format_vmdk = {
	.name = "vmdk",
	.create = vmdk_create,
};
