// SPDX-License-Identifier: MIT
/*
 * The fixed VHD view: the raw disk, padded with zeros to a whole sector,
 * followed by the 512-byte footer of the VHD specification. The footer is
 * a function of the size and the map alone, so its bytes never change.
 */
#include <string.h>

#include "fs/formats/view-private.h"

#define VHD_SECTOR 512
#define VHD_FOOTER 512
/* 2024-01-01T00:00:00Z in seconds since 2000-01-01T00:00:00Z. */
#define VHD_TIMESTAMP 757382400u

typedef struct {
	CfsView head;
	guint64 disk;		/* raw part: size rounded up to a sector */
	guint8 footer[VHD_FOOTER];
} VhdView;

/* CHS geometry, as the algorithm in the VHD specification computes it. */
static void vhd_geometry(guint64 size, guint16 *cyls, guint8 *heads,
			 guint8 *spt)
{
	guint64 total = size / VHD_SECTOR;
	guint64 cth, h, s;

	if (total > 65535ull * 16 * 255)
		total = 65535ull * 16 * 255;
	if (total >= 65535ull * 16 * 63) {
		s = 255;
		h = 16;
		cth = total / s;
	} else {
		s = 17;
		cth = total / s;
		h = (cth + 1023) / 1024;
		if (h < 4)
			h = 4;
		if (cth >= h * 1024 || h > 16) {
			s = 31;
			h = 16;
			cth = total / s;
		}
		if (cth >= h * 1024) {
			s = 63;
			h = 16;
			cth = total / s;
		}
	}
	*cyls = cth / h;
	*heads = h;
	*spt = s;
}

static guint32 vhd_checksum(const guint8 *footer)
{
	guint32 sum = 0;

	for (guint i = 0; i < VHD_FOOTER; i++)
		sum += footer[i];
	return ~sum;
}

static void vhd_footer(VhdView *v)
{
	guint8 *p = v->footer;
	guint8 digest[32];
	guint16 cyls;
	guint8 heads, spt;

	memset(p, 0, VHD_FOOTER);
	memcpy(p, "conectix", 8);
	cfs_put_be32(p + 8, 2);			/* features: reserved */
	cfs_put_be32(p + 12, 0x00010000);	/* file format version */
	cfs_put_be64(p + 16, G_MAXUINT64);	/* data offset: fixed disk */
	cfs_put_be32(p + 24, VHD_TIMESTAMP);
	/* Hyper-V's creator fields: readers then take the size from the
	 * footer rather than from the CHS geometry. */
	memcpy(p + 28, "win ", 4);
	cfs_put_be32(p + 32, 0x000a0000);
	memcpy(p + 36, "Wi2k", 4);
	cfs_put_be64(p + 40, v->disk);		/* original size */
	cfs_put_be64(p + 48, v->disk);		/* current size */
	vhd_geometry(v->disk, &cyls, &heads, &spt);
	cfs_put_be16(p + 56, cyls);
	p[58] = heads;
	p[59] = spt;
	cfs_put_be32(p + 60, 2);		/* disk type: fixed */
	cfs_view_digest(v->head.map, "vhd", digest);
	memcpy(p + 68, digest, 16);
	p[68 + 6] = (p[68 + 6] & 0x0f) | 0x40;	/* RFC 4122 version 4 */
	p[68 + 8] = (p[68 + 8] & 0x3f) | 0x80;	/* RFC 4122 variant */
	p[84] = 0;				/* saved state */
	cfs_put_be32(p + 64, vhd_checksum(p));
}

static bool vhd_fill(const CfsView *view, CfsFill *f, guint8 *dst,
		     guint64 off, guint64 len, guint64 *done)
{
	const VhdView *v = (const VhdView *)view;

	if (off < v->disk) {
		*done = MIN(len, v->disk - off);
		return cfs_fill_raw(view, f, dst, off, *done);
	}
	*done = len;
	cfs_fill_blob(dst, off, len, v->disk, v->footer, VHD_FOOTER);
	return true;
}

static bool vhd_next_data(const CfsView *view, guint64 off, guint64 *out)
{
	const VhdView *v = (const VhdView *)view;

	if (off >= view->size)
		return false;
	if (off < view->map->size &&
	    cfs_extent_map_next_data(view->map, off, out))
		return true;
	*out = MAX(off, v->disk);
	return true;
}

static bool vhd_next_hole(const CfsView *view, guint64 off, guint64 *out)
{
	const VhdView *v = (const VhdView *)view;
	guint64 disk_size = view->map->size;

	if (off >= view->size)
		return false;
	if (off < disk_size) {
		guint64 h = disk_size;

		cfs_extent_map_next_hole(view->map, off, &h);
		if (h < disk_size || disk_size < v->disk) {
			*out = h;
			return true;
		}
		*out = view->size;
		return true;
	}
	*out = off < v->disk ? off : view->size;
	return true;
}

static const CfsViewOps vhd_ops = {
	.fill = vhd_fill,
	.next_data = vhd_next_data,
	.next_hole = vhd_next_hole,
};

static CfsView *vhd_create(CfsExtentMap *map, GError **error)
{
	VhdView *v = (VhdView *)cfs_view_alloc(sizeof(VhdView),
					       &cfs_format_vhd, &vhd_ops, map);

	v->disk = cfs_div_up(map->size, VHD_SECTOR) * VHD_SECTOR;
	v->head.size = v->disk + VHD_FOOTER;
	vhd_footer(v);
	return &v->head;
}

const CfsFormat cfs_format_vhd = {
	.name = "vhd",
	.create = vhd_create,
};
