// SPDX-License-Identifier: MIT
/*
 * The fixed VHD reader: the disk is the container's first current-size
 * bytes, followed by a 512-byte big-endian footer ("conectix", disk type
 * 2, one's-complement checksum). The disk's holes are the container's.
 */
#include <string.h>

#include "fs/formats/reader-private.h"

#define VHD_FOOTER 512
#define VHD_TYPE_FIXED 2
#define VHD_TYPE_DYNAMIC 3
#define VHD_TYPE_DIFF 4

static guint32 vhd_sum(const guint8 *footer)
{
	guint32 sum = 0;

	for (guint i = 0; i < VHD_FOOTER; i++) {
		if (i < 64 || i >= 68)	/* the checksum field counts as 0 */
			sum += footer[i];
	}
	return ~sum;
}

static bool vhd_check(const guint8 *f, guint64 container_size,
		      GError **error)
{
	guint32 type = cfs_get_be32(f + 60);
	guint64 size = cfs_get_be64(f + 48);

	if (memcmp(f, "conectix", 8) != 0)
		return cfs_reader_bad(error, "vhd", "no footer (cookie)");
	if (cfs_get_be32(f + 64) != vhd_sum(f))
		return cfs_reader_bad(error, "vhd", "footer checksum mismatch");
	if (type == VHD_TYPE_DYNAMIC || type == VHD_TYPE_DIFF) {
		g_set_error(error, CFS_ERROR, ENOTSUP,
			    "vhd: %s VHD is not supported, only fixed",
			    type == VHD_TYPE_DYNAMIC ? "a dynamic" :
						       "a differencing");
		return false;
	}
	if (type != VHD_TYPE_FIXED)
		return cfs_reader_bad(error, "vhd", "unknown disk type %u",
				      type);
	if (size > CFS_READER_MAX_DISK || size > container_size - VHD_FOOTER)
		return cfs_reader_bad(error, "vhd",
				      "disk size %" G_GUINT64_FORMAT
				      " does not fit a container of %"
				      G_GUINT64_FORMAT " bytes",
				      size, container_size);
	return true;
}

static const CfsReaderOps vhd_ops = { 0 };

static CfsReader *vhd_open(guint64 container_size, CfsExtentMap *map,
			   CfsRawReadFn read, void *opaque, GError **error)
{
	CfsContainer c = { container_size, map, read, opaque };
	g_autoptr(CfsReader) r = NULL;
	g_autoptr(GArray) runs = g_array_new(FALSE, FALSE,
					     sizeof(CfsReaderRun));
	g_autoptr(GArray) ext = g_array_new(FALSE, FALSE, sizeof(CfsExtent));
	guint8 f[VHD_FOOTER];

	if (container_size < VHD_FOOTER)
		return cfs_reader_bad(error, "vhd", "container of %"
				      G_GUINT64_FORMAT " bytes is too short",
				      container_size);
	if (!cfs_container_read(&c, f, VHD_FOOTER,
				container_size - VHD_FOOTER, error)) {
		g_prefix_error(error, "vhd footer: ");
		return NULL;
	}
	if (!vhd_check(f, container_size, error))
		return NULL;
	r = cfs_reader_alloc(sizeof(CfsReader), &cfs_reader_vhd, &vhd_ops, &c);
	r->size = cfs_get_be64(f + 48);
	if (r->size > 0)
		cfs_reader_runs_add(runs, 0, 0, r->size);
	cfs_reader_map_add(ext, map, 0, 0, r->size);
	cfs_reader_set_runs(r, runs);
	cfs_reader_set_map(r, ext);
	return g_steal_pointer(&r);
}

const CfsReaderFormat cfs_reader_vhd = {
	.name = "vhd",
	.open = vhd_open,
};
