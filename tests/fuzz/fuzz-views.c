// SPDX-License-Identifier: MIT
/*
 * The view arithmetic over random allocation maps: every format's view of
 * a disk must have a size, answer deps within the disk and never on a
 * hole, read any range it covers, and keep SEEK_DATA/SEEK_HOLE sane.
 */
#include <stdio.h>

#include "fs/formats/format.h"
#include "tests/fuzz/fuzz-common.h"

/* The disk's bytes: a function of the offset; the view may ask only for
 * data the map has. */
static bool raw_read(void *opaque, void *buf, gsize len, guint64 off,
		     GError **error)
{
	const CfsExtentMap *map = opaque;
	guint8 *b = buf;

	if (off > map->size || len > map->size - off)
		abort();
	for (gsize i = 0; i < len; i++)
		b[i] = (guint8)((off + i) * 131 >> 3);
	return true;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	FuzzIn in = { data, size };
	/* Up to 4 TiB, in sectors, so the formats' arithmetic is exercised
	 * at sizes that matter, not only tiny ones. */
	guint64 disk = (fuzz_u64(&in) % (4ULL << 31)) * 512 + fuzz_u8(&in);
	guint n = fuzz_u8(&in) % 64;
	g_autofree CfsExtent *ext = g_new0(CfsExtent, n + 1);
	g_autoptr(CfsExtentMap) map = NULL;

	for (guint i = 0; i < n; i++) {
		ext[i].offset = disk ? fuzz_u64(&in) % disk : 0;
		ext[i].length = fuzz_u64(&in) % (disk / 8 + 4096);
	}
	map = cfs_extent_map_new(disk, ext, n);
	for (const CfsFormat *const *f = cfs_formats_all(); *f; f++) {
		g_autoptr(GError) error = NULL;
		g_autoptr(CfsView) view = (*f)->create(map, &error);
		guint64 vsize, out;

		if (!view)
			continue;
		vsize = cfs_view_size(view);
		for (guint k = 0; k < 4 && vsize; k++) {
			g_autoptr(GArray) ranges = g_array_new(
				FALSE, FALSE, sizeof(CfsExtent));
			g_autoptr(GError) rerr = NULL;
			guint64 off = fuzz_u64(&in) % vsize;
			guint64 want = 1 + fuzz_u64(&in) % 65536;
			guint64 len = MIN(vsize - off, want);
			g_autofree guint8 *buf = g_malloc(len);

			cfs_view_deps(view, off, len, ranges);
			for (guint j = 0; j < ranges->len; j++) {
				CfsExtent *e = &g_array_index(ranges, CfsExtent,
							      j);

				if (e->offset > disk || e->length > disk - e->offset ||
				    (e->length &&
				     !cfs_extent_map_any_data(map, e->offset,
							      e->length)))
					abort();	/* off the disk, a hole */
			}
			if (!cfs_view_read(view, buf, len, off, raw_read, map,
					   &rerr)) {
				/* the raw reads cannot fail */
				fprintf(stderr, "%s of %" G_GUINT64_FORMAT
					": read %" G_GUINT64_FORMAT "+%"
					G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT
					": %s\n", (*f)->name, disk, off, len,
					vsize, rerr->message);
				abort();
			}
			if (cfs_view_next_data(view, off, &out) &&
			    (out < off || out >= vsize))
				abort();
			if (cfs_view_next_hole(view, off, &out) &&
			    (out < off || out > vsize))
				abort();
		}
	}
	return 0;
}
