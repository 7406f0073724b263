// SPDX-License-Identifier: MIT
/*
 * Unit tests of the format views: header fields and checksums, exact sizes
 * from 1 MiB to 2 TiB, determinism, piecewise reads against whole reads,
 * dependencies that never touch holes, and qemu-img reading each view.
 */
#include <glib.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "common/error.h"
#include "fs/formats/format.h"
#include "fs/formats/view-private.h"

#define KiB 1024ull
#define MiB (1024ull * KiB)
#define GiB (1024ull * MiB)
#define TiB (1024ull * GiB)

/* An empty map (a zero-length extent is dropped). */
static const CfsExtent no_data = { 0, 0 };

static const char *const all_formats[] = {
	"raw", "vhd", "vmdk", "vhdx", "qcow2", NULL
};

/* A disk in memory: its map and bytes (random in extents, zero in holes).
 * The reader fails the test on any range not in the current deps. */
typedef struct {
	CfsExtentMap *map;
	guint8 *data;
	GArray *allowed;
	guint64 raw_bytes;
} MemDisk;

static MemDisk *mem_disk_new(guint64 size, const CfsExtent *ext, guint n,
			     guint32 seed)
{
	MemDisk *d = g_new0(MemDisk, 1);
	g_autoptr(GRand) rand = g_rand_new_with_seed(seed);

	d->map = cfs_extent_map_new(size, ext, n);
	d->data = g_malloc0(size);
	for (guint i = 0; i < d->map->n; i++) {
		const CfsExtent *e = &d->map->ext[i];

		for (guint64 o = e->offset; o < e->offset + e->length; o++)
			d->data[o] = g_rand_int(rand);
	}
	d->allowed = g_array_new(FALSE, FALSE, sizeof(CfsExtent));
	return d;
}

static void mem_disk_free(MemDisk *d)
{
	cfs_extent_map_unref(d->map);
	g_free(d->data);
	g_array_unref(d->allowed);
	g_free(d);
}

/* Whether every byte of [off, off + len) is in one of @ranges. */
static bool ranges_cover(GArray *ranges, guint64 off, guint64 len)
{
	guint64 pos = off;
	bool progress = true;

	while (pos < off + len && progress) {
		progress = false;
		for (guint i = 0; i < ranges->len; i++) {
			CfsExtent *r = &g_array_index(ranges, CfsExtent, i);

			if (r->offset <= pos && pos < r->offset + r->length) {
				pos = r->offset + r->length;
				progress = true;
			}
		}
	}
	return pos >= off + len;
}

/* Bytes of a disk too big for memory: a function of the offset. */
static guint8 big_byte(guint64 o)
{
	return (o * 0x9E3779B97F4A7C15ull) >> 56 ^ o >> 9;
}

static bool mem_read(void *opaque, void *buf, gsize len, guint64 off,
		     GError **error)
{
	MemDisk *d = opaque;

	g_assert_cmpuint(len, >, 0);
	g_assert_cmpuint(off + len, <=, d->map->size);
	g_assert_true(ranges_cover(d->allowed, off, len));
	if (d->data) {
		memcpy(buf, d->data + off, len);
	} else {
		for (gsize i = 0; i < len; i++)
			((guint8 *)buf)[i] = big_byte(off + i);
	}
	d->raw_bytes += len;
	return true;
}

static bool no_read(void *opaque, void *buf, gsize len, guint64 off,
		    GError **error)
{
	g_assert_not_reached();
	return false;
}

/* Deps of a read: inside the disk and never in a hole. */
static void check_deps(const CfsExtentMap *map, GArray *ranges)
{
	for (guint i = 0; i < ranges->len; i++) {
		CfsExtent *r = &g_array_index(ranges, CfsExtent, i);
		guint64 d = 0, h = 0;

		g_assert_cmpuint(r->length, >, 0);
		g_assert_cmpuint(r->offset + r->length, <=, map->size);
		g_assert_true(cfs_extent_map_next_data(map, r->offset, &d));
		g_assert_cmpuint(d, ==, r->offset);
		g_assert_true(cfs_extent_map_next_hole(map, r->offset, &h));
		g_assert_cmpuint(h, >=, r->offset + r->length);
	}
}

static void view_read(CfsView *v, MemDisk *d, guint8 *buf, gsize len,
		      guint64 off)
{
	g_autoptr(GError) error = NULL;

	g_array_set_size(d->allowed, 0);
	cfs_view_deps(v, off, len, d->allowed);
	check_deps(d->map, d->allowed);
	cfs_view_read(v, buf, len, off, mem_read, d, &error);
	g_assert_no_error(error);
}

static CfsView *view_new(const char *name, CfsExtentMap *map)
{
	const CfsFormat *fmt = cfs_format_find(name);
	g_autoptr(GError) error = NULL;
	CfsView *v;

	g_assert_nonnull(fmt);
	v = fmt->create(map, &error);
	g_assert_no_error(error);
	g_assert_nonnull(v);
	g_assert_true(cfs_view_format(v) == fmt);
	return v;
}

/* Metadata bytes of a view, which need no raw data. */
static guint8 *view_meta(CfsView *v, guint64 off, gsize len)
{
	g_autoptr(GError) error = NULL;
	guint8 *buf = g_malloc(len);
	g_autoptr(GArray) deps = g_array_new(FALSE, FALSE, sizeof(CfsExtent));

	cfs_view_deps(v, off, len, deps);
	g_assert_cmpuint(deps->len, ==, 0);
	g_assert_true(cfs_view_read(v, buf, len, off, no_read, NULL, &error));
	return buf;
}

static guint64 le(const guint8 *p, guint n)
{
	guint64 v = 0;

	for (guint i = 0; i < n; i++)
		v |= (guint64)p[i] << (8 * i);
	return v;
}

static guint64 be(const guint8 *p, guint n)
{
	guint64 v = 0;

	for (guint i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

/* The small scattered disk most tests use; @tail is added to its size. */
static MemDisk *small_disk(guint64 tail)
{
	guint64 size = 7 * MiB + 3 * 512 + tail;
	CfsExtent ext[] = {
		{ 0, 4096 },
		{ 3 * 65536 + 100, 70000 },
		{ 1 * MiB + 12345, 3 * MiB },
		{ 5 * MiB - 1, 2 },
		{ 6 * MiB + 65536, 65536 },
		{ size - 1000, 1000 },
	};

	return mem_disk_new(size, ext, G_N_ELEMENTS(ext), 42);
}

static void test_find(void)
{
	const CfsFormat *const *all = cfs_formats_all();
	guint n = 0;

	for (guint i = 0; all_formats[i]; i++) {
		const CfsFormat *f = cfs_format_find(all_formats[i]);

		g_assert_nonnull(f);
		g_assert_cmpstr(f->name, ==, all_formats[i]);
	}
	g_assert_true(cfs_format_find("img") == cfs_format_find("raw"));
	g_assert_true(cfs_format_find("VMDK") == cfs_format_find("vmdk"));
	g_assert_null(cfs_format_find("vdi"));
	g_assert_null(cfs_format_find(NULL));
	while (all[n])
		n++;
	g_assert_cmpuint(n, ==, 5);
}

/* The vectorised Adler-32 against zlib's, for every length around the
 * 32-byte blocks and the reduction rounds, and for worst-case bytes. */
static void test_adler32(void)
{
	g_autofree guint8 *buf = g_malloc(70000);
	g_autoptr(GRand) rand = g_rand_new_with_seed(42);
	static const gsize lens[] = { 0, 1, 31, 32, 33, 63, 64, 5535, 5536,
				      5537, 5552, 11072, 65536, 69999 };

	g_assert_cmphex(cfs_adler32(1, "Wikipedia", 9), ==, 0x11E60398);
	for (guint fill = 0; fill < 2; fill++) {
		for (gsize i = 0; i < 70000; i++)
			buf[i] = fill ? 0xff : (guint8)g_rand_int(rand);
		for (guint k = 0; k < G_N_ELEMENTS(lens); k++) {
			guint32 want = (guint32)adler32(1, buf, (uInt)lens[k]);

			g_assert_cmphex(cfs_adler32(1, buf, lens[k]), ==, want);
			/* In two parts, from an odd place. */
			g_assert_cmphex(cfs_adler32(cfs_adler32(1, buf, 7),
						    buf + 7, lens[k] > 7 ?
						    lens[k] - 7 : 0), ==,
					lens[k] > 7 ? want :
					(guint32)adler32(1, buf, 7));
		}
	}
}

static void test_crc32c(void)
{
	guint8 zeros[32] = { 0 }, ones[32];

	memset(ones, 0xff, sizeof(ones));
	g_assert_cmphex(cfs_crc32c(0, "123456789", 9), ==, 0xE3069283);
	g_assert_cmphex(cfs_crc32c(0, zeros, 32), ==, 0x8A9136AA);
	g_assert_cmphex(cfs_crc32c(0, ones, 32), ==, 0x62A8AB43);
	/* incremental */
	g_assert_cmphex(cfs_crc32c(cfs_crc32c(0, "1234", 4), "56789", 5), ==,
			0xE3069283);
}

static void test_raw(void)
{
	MemDisk *d = small_disk(0);
	g_autoptr(CfsView) v = view_new("raw", d->map);
	guint64 o = 0;

	g_assert_cmpuint(cfs_view_size(v), ==, d->map->size);
	g_assert_true(cfs_view_next_hole(v, 0, &o));
	g_assert_cmpuint(o, ==, 4096);
	g_assert_true(cfs_view_next_data(v, 4096, &o));
	g_assert_cmpuint(o, ==, 3 * 65536 + 100);
	g_assert_true(cfs_view_next_hole(v, d->map->size - 1, &o));
	g_assert_cmpuint(o, ==, d->map->size);
	g_assert_false(cfs_view_next_data(v, d->map->size, &o));
	mem_disk_free(d);
}

static void test_vhd_footer(void)
{
	static const struct {
		guint64 size;
		guint cyl, heads, spt;
	} geo[] = {
		{ 1 * MiB, 30, 4, 17 },
		{ 127 * GiB, 65278, 16, 255 },
		{ 2 * TiB, 65535, 16, 255 },
		{ 1 * GiB, 2080, 16, 63 },
	};

	for (guint i = 0; i < G_N_ELEMENTS(geo); i++) {
		g_autoptr(CfsExtentMap) map = cfs_extent_map_new(geo[i].size,
								 &no_data, 1);
		g_autoptr(CfsView) v = view_new("vhd", map);
		g_autofree guint8 *f = view_meta(v, geo[i].size, 512);
		guint32 sum = 0;

		g_assert_cmpuint(cfs_view_size(v), ==, geo[i].size + 512);
		g_assert_cmpmem(f, 8, "conectix", 8);
		g_assert_cmpuint(be(f + 8, 4), ==, 2);
		g_assert_cmphex(be(f + 12, 4), ==, 0x00010000);
		g_assert_cmphex(be(f + 16, 8), ==, G_MAXUINT64);
		g_assert_cmpuint(be(f + 40, 8), ==, geo[i].size);
		g_assert_cmpuint(be(f + 48, 8), ==, geo[i].size);
		g_assert_cmpuint(be(f + 56, 2), ==, geo[i].cyl);
		g_assert_cmpuint(f[58], ==, geo[i].heads);
		g_assert_cmpuint(f[59], ==, geo[i].spt);
		g_assert_cmpuint(be(f + 60, 4), ==, 2);
		g_assert_cmpuint(f[84], ==, 0);
		for (guint j = 0; j < 512; j++)
			sum += (j >= 64 && j < 68) ? 0 : f[j];
		g_assert_cmphex(be(f + 64, 4), ==, (guint32)~sum);
	}
}

static void test_vhd_seek(void)
{
	MemDisk *d = small_disk(100);	/* not a whole sector */
	g_autoptr(CfsView) v = view_new("vhd", d->map);
	guint64 disk = (d->map->size + 511) / 512 * 512, o = 0;

	g_assert_cmpuint(cfs_view_size(v), ==, disk + 512);
	g_assert_true(cfs_view_next_hole(v, 0, &o));
	g_assert_cmpuint(o, ==, 4096);
	g_assert_true(cfs_view_next_hole(v, d->map->size - 1, &o));
	g_assert_cmpuint(o, ==, d->map->size);
	g_assert_true(cfs_view_next_data(v, d->map->size, &o));
	g_assert_cmpuint(o, ==, disk);
	g_assert_true(cfs_view_next_hole(v, disk, &o));
	g_assert_cmpuint(o, ==, disk + 512);
	g_assert_false(cfs_view_next_data(v, disk + 512, &o));
	mem_disk_free(d);
}

static void test_qcow2_header(void)
{
	MemDisk *d = small_disk(0);
	g_autoptr(CfsView) v = view_new("qcow2", d->map);
	g_autofree guint8 *h = view_meta(v, 0, 65536);
	g_autofree guint8 *rt = NULL, *rb = NULL;
	guint64 rt_off, rb_off, clusters = cfs_view_size(v) / 65536;

	g_assert_cmpuint(cfs_view_size(v) % 65536, ==, 0);
	g_assert_cmpmem(h, 4, "QFI\xfb", 4);
	g_assert_cmpuint(be(h + 4, 4), ==, 3);
	g_assert_cmpuint(be(h + 20, 4), ==, 16);
	g_assert_cmpuint(be(h + 24, 8), ==, d->map->size);
	g_assert_cmpuint(be(h + 36, 4), ==, 1);
	g_assert_cmpuint(be(h + 72, 8), ==, 0);
	g_assert_cmpuint(be(h + 80, 8), ==, 0);
	g_assert_cmpuint(be(h + 88, 8), ==, 0);
	g_assert_cmpuint(be(h + 96, 4), ==, 4);
	g_assert_cmpuint(be(h + 100, 4), ==, 104);
	rt_off = be(h + 48, 8);
	rt = view_meta(v, rt_off, 8);
	rb_off = be(rt, 8);
	rb = view_meta(v, rb_off, 65536);
	for (guint64 c = 0; c < 32768; c++)
		g_assert_cmpuint(be(rb + 2 * c, 2), ==, c < clusters ? 1 : 0);
	mem_disk_free(d);
}

/* Units of @unit bytes touched by the map: what a view stores. */
static guint64 count_units(const CfsExtentMap *map, guint64 unit)
{
	guint64 n = 0, last = G_MAXUINT64;

	for (guint i = 0; i < map->n; i++) {
		guint64 a = map->ext[i].offset / unit;
		guint64 end = map->ext[i].offset + map->ext[i].length;
		guint64 b = (end - 1) / unit;

		if (a == last)
			a++;
		if (b >= a)
			n += b - a + 1;
		last = b;
	}
	return n;
}

static guint64 up(guint64 a, guint64 b)
{
	return (a + b - 1) / b * b;
}

static guint64 expected_size(const char *fmt, const CfsExtentMap *map)
{
	guint64 size = map->size, v512 = up(size, 512);

	if (g_str_equal(fmt, "raw"))
		return size;
	if (g_str_equal(fmt, "vhd"))
		return v512 + 512;
	if (g_str_equal(fmt, "qcow2")) {
		guint64 l1 = up(v512, 512 * MiB) / (512 * MiB);
		guint64 fixed = 1 + up(l1 * 8, 65536) / 65536 +
				count_units(map, 512 * MiB) +
				count_units(map, 65536);
		guint64 rb = 1, rt = 1;

		while (up(fixed + rb + rt, 32768) / 32768 > rb ||
		       up(rb, 8192) / 8192 > rt) {
			rb = up(fixed + rb + rt, 32768) / 32768;
			rt = up(rb, 8192) / 8192;
		}
		return (fixed + rb + rt) * 65536;
	}
	if (g_str_equal(fmt, "vhdx")) {
		guint64 bs = 2 * MiB, blocks = up(v512, bs) / bs;
		guint64 bat = blocks + (blocks ? (blocks - 1) / 2048 : 0);

		return 3 * MiB + MAX(MiB, up(bat * 8, MiB)) +
		       count_units(map, bs) * bs;
	}
	if (g_str_equal(fmt, "vmdk")) {
		guint64 sectors = up(size, 512) / 512;
		guint64 gd = up(up(sectors, 65536) / 65536 * 4, 512) / 512;

		return 512 * (128 + count_units(map, 65536) * 129 +
			      count_units(map, 32 * MiB) * 5 + 1 + gd + 3);
	}
	g_assert_not_reached();
}

static void test_sizes(void)
{
	static const guint64 sizes[] = {
		1 * MiB, 7 * MiB + 512, 100 * MiB + 3, 1 * GiB, 127 * GiB,
		1 * TiB + 65536, 2 * TiB,
	};

	for (guint i = 0; i < G_N_ELEMENTS(sizes); i++) {
		guint64 size = sizes[i];
		g_autofree CfsExtent *ext = g_new0(CfsExtent, 1000);
		guint n = 0;
		CfsExtentMap *maps[3];

		/* scattered: 1000 extents of uneven sizes and gaps */
		for (guint k = 0; k < 1000; k++) {
			ext[n].offset = size / 1000 * k + (k * 4099) % 7777;
			ext[n].length = 1 + (k * 65537) % (3 * MiB);
			n++;
		}
		maps[0] = cfs_extent_map_new(size, &no_data, 1);
		maps[1] = cfs_extent_map_new_full(size);
		maps[2] = cfs_extent_map_new(size, ext, n);
		for (guint m = 0; m < 3; m++) {
			for (guint f = 0; all_formats[f]; f++) {
				const CfsFormat *fmt =
					cfs_format_find(all_formats[f]);
				g_autoptr(GError) error = NULL;
				g_autoptr(CfsView) v = fmt->create(maps[m],
								  &error);

				if (!v && g_str_equal(fmt->name, "vmdk") &&
				    size == 2 * TiB && m == 1) {
					/* stored grains of a full 2 TiB disk
					 * pass the 2^32-sector limit */
					g_assert_error(error, CFS_ERROR, EFBIG);
					continue;
				}
				g_assert_no_error(error);
				g_assert_cmpuint(cfs_view_size(v), ==,
						 expected_size(fmt->name,
							       maps[m]));
			}
			cfs_extent_map_unref(maps[m]);
		}
	}
}

/* Whole reads equal piecewise reads of odd sizes; two views of the same
 * disk give the same bytes. */
static void check_consistency(MemDisk *d, const char *name)
{
	g_autoptr(CfsView) v = view_new(name, d->map);
	g_autoptr(CfsView) v2 = view_new(name, d->map);
	guint64 size = cfs_view_size(v);
	g_autofree guint8 *whole = g_malloc(size);
	g_autofree guint8 *again = g_malloc(size);
	g_autofree guint8 *piece = g_malloc(1 * MiB);
	static const gsize steps[] = { 1, 511, 4097, 65537, 12345, 3, 131072 };
	guint64 off = 0;
	guint s = 0;

	g_assert_cmpuint(cfs_view_size(v2), ==, size);
	view_read(v, d, whole, size, 0);
	view_read(v2, d, again, size, 0);
	g_assert_true(memcmp(whole, again, size) == 0);
	while (off < size) {
		gsize n = steps[s++ % G_N_ELEMENTS(steps)];

		n = MIN(n, size - off);

		view_read(v, d, piece, n, off);
		g_assert_true(memcmp(piece, whole + off, n) == 0);
		off += n;
	}
	/* single bytes at the edges */
	for (guint64 o = size - 8; o < size; o++) {
		view_read(v, d, piece, 1, o);
		g_assert_cmpuint(piece[0], ==, whole[o]);
	}
	if (g_str_equal(name, "raw"))
		g_assert_true(memcmp(whole, d->data, size) == 0);
}

static void test_consistency(gconstpointer data)
{
	const char *name = data;
	static const guint64 tails[] = { 0, 100, 65536 - 1536 };

	for (guint t = 0; t < G_N_ELEMENTS(tails); t++) {
		MemDisk *d = small_disk(tails[t]);
		guint64 size = d->map->size;
		MemDisk *full, *empty;

		check_consistency(d, name);
		full = mem_disk_new(size, &(CfsExtent){ 0, size }, 1, 7);
		check_consistency(full, name);
		empty = mem_disk_new(size, &no_data, 1, 7);
		check_consistency(empty, name);
		mem_disk_free(d);
		mem_disk_free(full);
		mem_disk_free(empty);
	}
}

static void test_vmdk_header(void)
{
	MemDisk *d = small_disk(100);
	g_autoptr(CfsView) v = view_new("vmdk", d->map);
	guint64 size = cfs_view_size(v), sectors = (d->map->size + 511) / 512;
	g_autofree guint8 *h = view_meta(v, 0, 65536);
	g_autofree guint8 *tail = view_meta(v, size - 1536, 1536);
	g_autofree char *desc = g_strndup((char *)h + 512, 20 * 512);
	g_autofree char *rw = g_strdup_printf("RW %" G_GUINT64_FORMAT
					      " SPARSE \"disk.vmdk\"", sectors);
	g_autofree guint8 *gd = NULL, *gt = NULL, *rec = g_malloc(66048);
	guint64 gd_off, a = 1, b = 0;

	g_assert_cmpmem(h, 4, "KDMV", 4);
	g_assert_cmpuint(le(h + 4, 4), ==, 3);
	g_assert_cmphex(le(h + 8, 4), ==, 0x30001);
	g_assert_cmpuint(le(h + 12, 8), ==, sectors);
	g_assert_cmpuint(le(h + 20, 8), ==, 128);
	g_assert_cmpuint(le(h + 28, 8), ==, 1);
	g_assert_cmpuint(le(h + 44, 4), ==, 512);
	g_assert_cmphex(le(h + 56, 8), ==, G_MAXUINT64);
	g_assert_cmpuint(le(h + 77, 2), ==, 1);
	g_assert_nonnull(strstr(desc, "createType=\"streamOptimized\""));
	g_assert_nonnull(strstr(desc, rw));
	g_assert_nonnull(strstr(desc, "ddb.adapterType"));
	/* footer marker, footer, end of stream */
	g_assert_cmpuint(le(tail, 8), ==, 1);
	g_assert_cmpuint(le(tail + 12, 4), ==, 3);
	g_assert_cmpmem(tail + 512, 4, "KDMV", 4);
	gd_off = le(tail + 512 + 56, 8);
	g_assert_cmpuint(gd_off, <, size / 512);
	for (guint i = 1024; i < 1536; i++)
		g_assert_cmpuint(tail[i], ==, 0);
	/* GD marker, first GT, first grain and its Adler-32 */
	gd = view_meta(v, (gd_off - 1) * 512, 1024);
	g_assert_cmpuint(le(gd + 12, 4), ==, 2);
	gt = view_meta(v, (le(gd + 512, 4) - 1) * 512, 1024);
	g_assert_cmpuint(le(gt, 8), ==, 4);
	g_assert_cmpuint(le(gt + 12, 4), ==, 1);
	g_assert_cmpuint(le(gt + 512, 4), ==, 128);
	view_read(v, d, rec, 66048, 128 * 512);
	g_assert_cmpuint(le(rec, 8), ==, 0);
	g_assert_cmpuint(le(rec + 8, 4), ==, 65552);
	g_assert_cmphex(rec[12], ==, 0x78);
	g_assert_cmphex(rec[13], ==, 0x01);
	g_assert_cmpmem(rec + 19, 65535, d->data, 65535);
	for (guint i = 0; i < 65536; i++) {
		a = (a + d->data[i]) % 65521;
		b = (b + a) % 65521;
	}
	g_assert_cmphex(be(rec + 65560, 4), ==, b << 16 | a);
	mem_disk_free(d);
}

static void test_vhdx_header(void)
{
	MemDisk *d = small_disk(0);
	g_autoptr(CfsView) v = view_new("vhdx", d->map);
	g_autofree guint8 *m = view_meta(v, 0, 4 * MiB);
	guint64 bs = 2 * MiB, stored = 0;

	g_assert_cmpmem(m, 8, "vhdxfile", 8);
	for (guint i = 0; i < 2; i++) {
		guint8 *h = m + (i + 1) * 65536, hdr[4096];
		guint8 *r = m + (i + 3) * 65536;
		g_autofree guint8 *rt = g_memdup2(r, 65536);

		g_assert_cmpmem(h, 4, "head", 4);
		memcpy(hdr, h, 4096);
		memset(hdr + 4, 0, 4);
		g_assert_cmphex(le(h + 4, 4), ==, cfs_crc32c(0, hdr, 4096));
		g_assert_cmpuint(le(h + 8, 8), ==, i + 1);
		g_assert_cmpuint(le(h + 66, 2), ==, 1);
		g_assert_cmpuint(le(h + 68, 4), ==, MiB);
		g_assert_cmpuint(le(h + 72, 8), ==, MiB);
		g_assert_cmpmem(r, 4, "regi", 4);
		memset(rt + 4, 0, 4);
		g_assert_cmphex(le(r + 4, 4), ==, cfs_crc32c(0, rt, 65536));
		g_assert_cmpuint(le(r + 8, 4), ==, 2);
	}
	g_assert_cmpmem(m + 2 * MiB, 8, "metadata", 8);
	g_assert_cmpuint(le(m + 2 * MiB + 10, 2), ==, 5);
	g_assert_cmpuint(le(m + 2 * MiB + 65536, 4), ==, bs);
	g_assert_cmpuint(le(m + 2 * MiB + 65536 + 8, 8), ==, d->map->size);
	/* BAT: blocks with data are fully present, in disk order */
	for (guint64 p = 0; p < 4; p++) {
		guint64 e = le(m + 3 * MiB + 8 * p, 8);
		bool data = cfs_extent_map_any_data(d->map, p * bs, bs);

		g_assert_cmpuint(e & 7, ==, data ? 6 : 0);
		if (data)
			g_assert_cmpuint(e >> 20, ==, 4 + 2 * stored++);
	}
	mem_disk_free(d);
}

static bool run_tool(const char *const *argv, char **out)
{
	g_autoptr(GError) error = NULL;
	g_autofree char *err = NULL, *so = NULL;
	int status = 0;

	if (!out)
		out = &so;

	if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL,
			  NULL, out, &err, &status, &error)) {
		g_test_message("%s: %s", argv[0], error->message);
		return false;
	}
	if (!g_spawn_check_wait_status(status, &error)) {
		g_test_message("%s %s: %s\n%s%s", argv[1], argv[2],
			       error->message, *out ? *out : "", err);
		return false;
	}
	return true;
}

/* Each view written to a file passes qemu-img check and compares equal
 * to the raw disk. */
static void test_qemu_img_small(const char *dir, const char *name,
				const char *qemu);

/* Write the view of @d to @path, skipping the view's holes. */
static void write_view(CfsView *v, MemDisk *d, const char *path)
{
	int fd = g_open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	g_autofree guint8 *buf = g_malloc(4 * MiB);
	guint64 off = 0, data, hole;

	g_assert_cmpint(fd, >=, 0);
	while (cfs_view_next_data(v, off, &data)) {
		g_assert_true(cfs_view_next_hole(v, data, &hole));
		g_assert_cmpuint(hole, >, data);
		for (off = data; off < hole;) {
			gsize n = MIN(4 * MiB, hole - off);

			view_read(v, d, buf, n, off);
			g_assert_cmpint(pwrite(fd, buf, n, off), ==, n);
			off += n;
		}
	}
	g_assert_cmpint(ftruncate(fd, cfs_view_size(v)), ==, 0);
	close(fd);
}

/* A sparse 4 GiB disk: several L2 tables, grain tables, a VHDX sector
 * bitmap entry in the BAT, data across their boundaries. */
static void test_qemu_img_large(const char *dir, const char *name,
				const char *qemu)
{
	guint64 size = 4 * GiB + 3 * MiB + 612;
	CfsExtent ext[] = {
		{ 0, 512 },
		{ 32 * MiB - 10, 20 },
		{ 600 * MiB + 5, 100000 },
		{ 2 * GiB + 3 * 65536 + 7, 5 * MiB },
		{ 4 * GiB - 1 * MiB, 2 * MiB },
		{ size - 300000, 300000 },
	};
	MemDisk *d = g_new0(MemDisk, 1);
	g_autoptr(CfsView) v = NULL;
	g_autofree char *raw = g_build_filename(dir, "big.raw", NULL);
	g_autofree char *img = g_strdup_printf("%s/big.%s", dir, name);
	const char *qfmt = g_str_equal(name, "vhd") ? "vpc" : name;
	const char *check[] = { qemu, "check", "-f", qfmt, img, NULL };
	const char *cmp[] = { qemu, "compare", "-f", qfmt, "-F", "raw",
			      img, raw, NULL };
	int fd;

	d->map = cfs_extent_map_new(size, ext, G_N_ELEMENTS(ext));
	d->allowed = g_array_new(FALSE, FALSE, sizeof(CfsExtent));
	fd = g_open(raw, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	g_assert_cmpint(fd, >=, 0);
	for (guint i = 0; i < d->map->n; i++) {
		CfsExtent *e = &d->map->ext[i];
		g_autofree guint8 *buf = g_malloc(e->length);

		g_array_set_size(d->allowed, 1);
		g_array_index(d->allowed, CfsExtent, 0) = *e;
		mem_read(d, buf, e->length, e->offset, NULL);
		g_assert_cmpint(pwrite(fd, buf, e->length, e->offset), ==,
				e->length);
	}
	g_assert_cmpint(ftruncate(fd, size), ==, 0);
	close(fd);
	v = view_new(name, d->map);
	write_view(v, d, img);
	if (!g_str_equal(name, "raw") && !g_str_equal(name, "vhd"))
		g_assert_true(run_tool(check, NULL));
	g_assert_true(run_tool(cmp, NULL));
	g_unlink(raw);
	g_unlink(img);
	mem_disk_free(d);
}

static void test_qemu_img(gconstpointer data)
{
	const char *name = data;
	g_autofree char *qemu = g_find_program_in_path("qemu-img");
	g_autofree char *dir = NULL;

	if (!qemu) {
		g_test_skip("qemu-img is not installed");
		return;
	}
	dir = g_dir_make_tmp("cfs-formats-XXXXXX", NULL);
	g_assert_nonnull(dir);
	test_qemu_img_small(dir, name, qemu);
	test_qemu_img_large(dir, name, qemu);
	g_rmdir(dir);
}

static void test_qemu_img_small(const char *dir, const char *name,
				const char *qemu)
{
	const char *qfmt = g_str_equal(name, "vhd") ? "vpc" : name;
	static const guint64 tails[] = { 0, 65536 - 1536, 1 * MiB + 612 };

	for (guint t = 0; t < G_N_ELEMENTS(tails); t++) {
		MemDisk *d = small_disk(tails[t]);
		g_autoptr(CfsView) v = view_new(name, d->map);
		g_autofree char *raw = g_build_filename(dir, "disk.raw", NULL);
		g_autofree char *img = g_strdup_printf("%s/disk.%s", dir, name);
		g_autofree guint8 *buf = g_malloc(cfs_view_size(v));
		g_autofree char *info = NULL, *vsize = NULL, *fmt = NULL;
		g_autofree char *out = NULL;
		const char *check[] = { qemu, "check", "-f", qfmt, img, NULL };
		const char *cmp[] = { qemu, "compare", "-f", qfmt, "-F",
				      "raw", img, raw, NULL };
		/* qemu probes a fixed VHD as raw: its footer is at the end */
		const char *inf[] = { qemu, "info", "--output=json", img,
				      "-f", qfmt, NULL };

		view_read(v, d, buf, cfs_view_size(v), 0);
		g_assert_true(g_file_set_contents(raw, (char *)d->data,
						  d->map->size, NULL));
		g_assert_true(g_file_set_contents(img, (char *)buf,
						  cfs_view_size(v), NULL));
		if (!g_str_equal(name, "raw") && !g_str_equal(name, "vhd")) {
			g_assert_true(run_tool(check, &out));
			g_test_message("check: %s", out);
			g_clear_pointer(&out, g_free);
		}
		g_assert_true(run_tool(cmp, &out));
		g_test_message("compare: %s", out);
		if (!g_str_equal(name, "vhd"))
			inf[4] = NULL;
		g_assert_true(run_tool(inf, &info));
		fmt = g_strdup_printf("\"format\": \"%s\"", qfmt);
		g_assert_nonnull(strstr(info, fmt));
		/* qemu counts whole sectors, for raw files too */
		vsize = g_strdup_printf("\"virtual-size\": %" G_GUINT64_FORMAT,
					up(d->map->size, 512));
		g_assert_nonnull(strstr(info, vsize));
		if (g_str_equal(name, "vmdk"))
			g_assert_nonnull(strstr(info, "\"create-type\": "
						      "\"streamOptimized\""));
		g_unlink(raw);
		g_unlink(img);
		mem_disk_free(d);
	}
}

/* Every view of an empty disk reads to its end (the VMDK trailer once
 * looped for ever over a grain directory of no entries). */
static void test_empty_disk(void)
{
	g_autoptr(CfsExtentMap) map = cfs_extent_map_new(0, NULL, 0);

	for (const CfsFormat *const *f = cfs_formats_all(); *f; f++) {
		g_autoptr(GError) error = NULL;
		g_autoptr(CfsView) view = (*f)->create(map, &error);
		g_autofree guint8 *buf = NULL;
		guint64 size;

		if (!view)
			continue;
		size = cfs_view_size(view);
		buf = g_malloc(size + 1);
		g_assert_true(cfs_view_read(view, buf, size, 0, NULL, NULL,
					    &error));
		g_assert_no_error(error);
	}
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/formats/find", test_find);
	g_test_add_func("/formats/crc32c", test_crc32c);
	g_test_add_func("/formats/adler32", test_adler32);
	g_test_add_func("/formats/raw", test_raw);
	g_test_add_func("/formats/vhd/footer", test_vhd_footer);
	g_test_add_func("/formats/vhd/seek", test_vhd_seek);
	g_test_add_func("/formats/qcow2/header", test_qcow2_header);
	g_test_add_func("/formats/vmdk/header", test_vmdk_header);
	g_test_add_func("/formats/vhdx/header", test_vhdx_header);
	g_test_add_func("/formats/sizes", test_sizes);
	g_test_add_func("/formats/empty-disk", test_empty_disk);
	for (guint f = 0; all_formats[f]; f++) {
		g_autofree char *p = g_strdup_printf("/formats/consistency/%s",
						     all_formats[f]);
		g_autofree char *q = g_strdup_printf("/formats/qemu-img/%s",
						     all_formats[f]);

		g_test_add_data_func(p, all_formats[f], test_consistency);
		g_test_add_data_func(q, all_formats[f], test_qemu_img);
	}
	return g_test_run();
}
