// SPDX-License-Identifier: MIT
/*
 * Unit tests of the container readers: images made by qemu-img from random
 * raw disks are read back piece by piece through deps and reads that may
 * touch only what deps reported; views of this project are read back; and
 * corrupted containers give errors, not crashes.
 */
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"
#include "common/util.h"
#include "fs/formats/reader.h"
#include "fs/formats/view-private.h"

#define KiB 1024ull
#define MiB (1024ull * KiB)

/* A container to read: in a file or in memory, with its map and the
 * ranges a read may touch (NULL: anything inside). */
typedef struct {
	int fd;
	const guint8 *mem;
	guint64 size;
	CfsExtentMap *map;
	GArray *allowed;
} Box;

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

/* Whether [off, off + len) is all data in @map. */
static bool all_data(const CfsExtentMap *map, guint64 off, guint64 len)
{
	guint64 d = 0, h = 0;

	if (!map)
		return true;
	return cfs_extent_map_next_data(map, off, &d) && d == off &&
	       cfs_extent_map_next_hole(map, off, &h) && h >= off + len;
}

static bool box_read(void *opaque, void *buf, gsize len, guint64 off,
		     GError **error)
{
	Box *b = opaque;

	g_assert_cmpuint(len, >, 0);
	g_assert_cmpuint(off, <=, b->size);
	g_assert_cmpuint(len, <=, b->size - off);
	g_assert_true(all_data(b->map, off, len));
	if (b->allowed)
		g_assert_true(ranges_cover(b->allowed, off, len));
	if (b->mem) {
		memcpy(buf, b->mem + off, len);
		return true;
	}
	return cfs_pread_all(b->fd, buf, len, off, error);
}

/* The allocation map of a file, from SEEK_DATA and SEEK_HOLE. */
static CfsExtentMap *file_map(int fd, guint64 size)
{
	g_autoptr(GArray) ext = g_array_new(FALSE, FALSE, sizeof(CfsExtent));
	off_t pos = 0;

	while ((guint64)pos < size) {
		off_t d = lseek(fd, pos, SEEK_DATA), h;
		CfsExtent e;

		if (d < 0)
			break;
		h = lseek(fd, d, SEEK_HOLE);
		g_assert_cmpint(h, >, d);
		e.offset = d;
		e.length = h - d;
		g_array_append_val(ext, e);
		pos = h;
	}
	return cfs_extent_map_new(size, (CfsExtent *)ext->data, ext->len);
}

static CfsReader *box_open(const char *fmt, Box *b, GError **error)
{
	const CfsReaderFormat *f = cfs_reader_find(fmt);

	g_assert_nonnull(f);
	b->allowed = NULL;
	return f->open(b->size, b->map, box_read, b, error);
}

static CfsReader *mem_open(const char *fmt, const guint8 *data, gsize size,
			   GError **error)
{
	Box b = { .fd = -1, .mem = data, .size = size };

	return box_open(fmt, &b, error);
}

/* Deps are inside the container and never in its holes. */
static void check_deps(const Box *b, GArray *deps)
{
	for (guint i = 0; i < deps->len; i++) {
		CfsExtent *e = &g_array_index(deps, CfsExtent, i);

		g_assert_cmpuint(e->length, >, 0);
		g_assert_cmpuint(e->offset + e->length, <=, b->size);
		g_assert_true(all_data(b->map, e->offset, e->length));
	}
}

/* Read [off, off + len) touching only what deps report. */
static void reader_piece(CfsReader *r, Box *b, guint8 *buf, gsize len,
			 guint64 off)
{
	g_autoptr(GArray) deps = g_array_new(FALSE, FALSE, sizeof(CfsExtent));
	g_autoptr(GError) error = NULL;

	cfs_reader_deps(r, off, len, deps);
	check_deps(b, deps);
	b->allowed = deps;
	g_assert_true(cfs_reader_read(r, buf, len, off, box_read, b, &error));
	g_assert_no_error(error);
	b->allowed = NULL;
}

/* The whole disk read in odd pieces equals @raw. */
static void check_pieces(CfsReader *r, Box *b, const guint8 *raw)
{
	static const gsize sizes[] = { 1, 511, 4097, 65537, 300001,
				       MiB + 3, 2 * MiB - 1, 7 * MiB + 13 };
	guint64 size = cfs_reader_disk_size(r);
	g_autofree guint8 *buf = g_malloc(8 * MiB);

	for (guint64 off = 0, i = 0; off < size; i++) {
		gsize n = MIN(sizes[i % G_N_ELEMENTS(sizes)], size - off);

		reader_piece(r, b, buf, n, off);
		if (memcmp(buf, raw + off, n) != 0)
			g_test_message("%s: bytes differ in [%" G_GUINT64_FORMAT
				       ", +%" G_GSIZE_FORMAT ")",
				       cfs_reader_format(r)->name, off, n);
		g_assert_true(memcmp(buf, raw + off, n) == 0);
		off += n;
	}
}

/* Holes of the disk's map are zeros in @raw. */
static void check_map(CfsReader *r, const guint8 *raw)
{
	CfsExtentMap *m = cfs_reader_map(r);
	guint64 pos = 0, h, d;

	g_assert_cmpuint(m->size, ==, cfs_reader_disk_size(r));
	while (cfs_extent_map_next_hole(m, pos, &h) && h < m->size) {
		if (!cfs_extent_map_next_data(m, h, &d))
			d = m->size;
		for (guint64 o = h; o < d; o++)
			g_assert_cmpuint(raw[o], ==, 0);
		pos = d;
	}
}

static bool run_tool(const char *const *argv)
{
	g_autoptr(GError) error = NULL;
	g_autofree char *out = NULL, *err = NULL;
	int status = 0;

	if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL,
			  NULL, &out, &err, &status, &error) ||
	    !g_spawn_check_wait_status(status, &error)) {
		g_test_message("%s %s: %s\n%s", argv[0], argv[1],
			       error->message, err ? err : "");
		return false;
	}
	return true;
}

/* A raw disk: random bytes (from @seed) in @ext, holes elsewhere. */
typedef struct {
	const char *name;
	guint64 size;
	CfsExtent ext[6];	/* a zero length ends the list */
	guint32 seed;
	CfsExtent big;		/* a written area the map must show */
} RawDisk;

static const RawDisk raw_disks[] = {
	{ "dense", 3 * MiB + 512, { { 0, 3 * MiB + 512 } }, 7,
	  { 0, 3 * MiB + 512 } },
	{ "sparse", 100 * MiB,
	  { { 0, 4096 }, { 5 * MiB + 123, 3 * MiB }, { 40 * MiB - 7, 100000 },
	    { 77 * MiB, 10 * MiB }, { 100 * MiB - 70000, 70000 } }, 11,
	  { 77 * MiB, 10 * MiB } },
};

/* A qemu-img conversion and the reader that reads its output. */
typedef struct {
	const char *name;
	const char *reader;
	const char *args[5];
	bool dynamic;		/* unwritten blocks are not in the file */
} Conversion;

static const Conversion conversions[] = {
	{ "vhd-fixed", "vhd",
	  { "-O", "vpc", "-o", "subformat=fixed,force_size=on" } },
	{ "vhdx-dynamic", "vhdx", { "-O", "vhdx" }, true },
	{ "vhdx-fixed", "vhdx", { "-O", "vhdx", "-o", "subformat=fixed" } },
	{ "vhdx-1m", "vhdx", { "-O", "vhdx", "-o", "block_size=1M" }, true },
	{ "vmdk-stream", "vmdk",
	  { "-O", "vmdk", "-o", "subformat=streamOptimized" }, true },
	{ "vmdk-sparse", "vmdk", { "-O", "vmdk" }, true },
};

static guint8 *raw_disk_bytes(const RawDisk *rd)
{
	g_autoptr(GRand) rand = g_rand_new_with_seed(rd->seed);
	guint8 *raw = g_malloc0(rd->size);

	for (guint i = 0; i < G_N_ELEMENTS(rd->ext) && rd->ext[i].length;
	     i++) {
		for (guint64 o = 0; o < rd->ext[i].length; o++)
			raw[rd->ext[i].offset + o] = g_rand_int(rand);
	}
	return raw;
}

/* Write @raw to @path, leaving its zero MiBs as holes. */
static void raw_disk_write(const guint8 *raw, guint64 size, const char *path)
{
	static const guint8 zero[64 * KiB];
	int fd = g_open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	g_assert_cmpint(fd, >=, 0);
	for (guint64 off = 0; off < size; off += sizeof(zero)) {
		gsize n = MIN(sizeof(zero), size - off);

		if (memcmp(raw + off, zero, n) != 0)
			g_assert_true(cfs_pwrite_all(fd, raw + off, n, off,
						     NULL));
	}
	g_assert_cmpint(ftruncate(fd, size), ==, 0);
	close(fd);
}

/* Convert @raw_path with @cv into @img; false if qemu-img failed. */
static bool convert(const char *qemu, const Conversion *cv,
		    const char *raw_path, const char *img)
{
	const char *argv[12] = { qemu, "convert", "-f", "raw" };
	guint n = 4;

	for (guint i = 0; i < G_N_ELEMENTS(cv->args) && cv->args[i]; i++)
		argv[n++] = cv->args[i];
	argv[n++] = raw_path;
	argv[n++] = img;
	return run_tool(argv);
}

static void check_image(const RawDisk *rd, const Conversion *cv,
			const guint8 *raw, const char *img)
{
	g_autoptr(GError) error = NULL;
	g_autoptr(CfsReader) r = NULL;
	g_autoptr(CfsExtentMap) cmap = NULL;
	Box b = { .fd = g_open(img, O_RDONLY, 0) };
	guint64 d = 0, h = 0;

	g_assert_cmpint(b.fd, >=, 0);
	b.size = lseek(b.fd, 0, SEEK_END);
	cmap = file_map(b.fd, b.size);
	b.map = cmap;
	r = box_open(cv->reader, &b, &error);
	g_assert_no_error(error);
	g_assert_cmpuint(cfs_reader_disk_size(r), ==, rd->size);
	g_test_message("%s: %u extents, %" G_GUINT64_FORMAT " data bytes",
		       cv->name, cfs_reader_map(r)->n,
		       cfs_reader_map(r)->data_bytes);
	check_pieces(r, &b, raw);
	check_map(r, raw);
	g_assert_true(cfs_extent_map_next_data(cfs_reader_map(r),
					       rd->big.offset, &d));
	g_assert_cmpuint(d, ==, rd->big.offset);
	g_assert_true(cfs_extent_map_next_hole(cfs_reader_map(r), d, &h));
	g_assert_cmpuint(h, >=, rd->big.offset + rd->big.length);
	if (cv->dynamic && rd->size > 60 * MiB) {
		g_autoptr(GArray) deps = g_array_new(FALSE, FALSE,
						     sizeof(CfsExtent));

		cfs_reader_deps(r, 50 * MiB, 20 * MiB, deps);
		g_assert_cmpuint(deps->len, ==, 0);
	}
	/* without a container map: everything may be read */
	g_clear_pointer(&r, cfs_reader_free);
	b.map = NULL;
	r = box_open(cv->reader, &b, &error);
	g_assert_no_error(error);
	check_pieces(r, &b, raw);
	close(b.fd);
}

typedef struct {
	const RawDisk *rd;
	const Conversion *cv;
} ImageCase;

static void test_image(gconstpointer data)
{
	const ImageCase *ic = data;
	g_autofree char *qemu = g_find_program_in_path("qemu-img");
	g_autofree char *dir = NULL, *raw_path = NULL, *img = NULL;
	g_autofree guint8 *raw = NULL;

	if (!qemu) {
		g_test_skip("qemu-img is not installed");
		return;
	}
	dir = g_dir_make_tmp("cfs-readers-XXXXXX", NULL);
	g_assert_nonnull(dir);
	raw_path = g_build_filename(dir, "disk.raw", NULL);
	img = g_build_filename(dir, "disk.img", NULL);
	raw = raw_disk_bytes(ic->rd);
	raw_disk_write(raw, ic->rd->size, raw_path);
	g_assert_true(convert(qemu, ic->cv, raw_path, img));
	check_image(ic->rd, ic->cv, raw, img);
	g_unlink(raw_path);
	g_unlink(img);
	g_rmdir(dir);
}


static const RawDisk small_disk = {
	"small", 2 * MiB + 512,
	{ { 0, 100000 }, { MiB + 5, 300000 }, { 2 * MiB - 4096, 4608 } }, 23,
	{ 0, 100000 },
};

static const Conversion *conversion(const char *name)
{
	for (guint i = 0; i < G_N_ELEMENTS(conversions); i++) {
		if (g_str_equal(conversions[i].name, name))
			return &conversions[i];
	}
	g_assert_not_reached();
}

/* The bytes of the small disk converted by @cv_name, NULL (test skipped)
 * without qemu-img. */
static guint8 *small_image(const char *cv_name, gsize *size)
{
	g_autofree char *qemu = g_find_program_in_path("qemu-img");
	g_autofree char *dir = NULL, *raw_path = NULL, *img = NULL;
	g_autofree guint8 *raw = NULL;
	char *data = NULL;

	if (!qemu) {
		g_test_skip("qemu-img is not installed");
		return NULL;
	}
	dir = g_dir_make_tmp("cfs-readers-XXXXXX", NULL);
	raw_path = g_build_filename(dir, "disk.raw", NULL);
	img = g_build_filename(dir, "disk.img", NULL);
	raw = raw_disk_bytes(&small_disk);
	raw_disk_write(raw, small_disk.size, raw_path);
	g_assert_true(convert(qemu, conversion(cv_name), raw_path, img));
	g_assert_true(g_file_get_contents(img, &data, size, NULL));
	g_unlink(raw_path);
	g_unlink(img);
	g_rmdir(dir);
	return (guint8 *)data;
}

/* Opening @fmt over @data fails with @code and @what in the message. */
static void open_fails(const char *fmt, const guint8 *data, gsize size,
		       int code, const char *what)
{
	g_autoptr(GError) error = NULL;
	g_autoptr(CfsReader) r = mem_open(fmt, data, size, &error);

	g_assert_null(r);
	g_assert_error(error, CFS_ERROR, code);
	if (what && !strstr(error->message, what))
		g_error("\"%s\" not in \"%s\"", what, error->message);
}

static void vhd_fix_checksum(guint8 *f)
{
	guint32 sum = 0;

	memset(f + 64, 0, 4);
	for (guint i = 0; i < 512; i++)
		sum += f[i];
	cfs_put_be32(f + 64, ~sum);
}

static void test_corrupt_vhd(void)
{
	gsize size = 0;
	g_autofree guint8 *img = small_image("vhd-fixed", &size);
	g_autofree guint8 *bad = NULL;
	guint8 *f;

	if (!img)
		return;
	open_fails("vhd", img, size - 1, EIO, "cookie");
	open_fails("vhd", img, 100, EIO, "too short");
	bad = g_memdup2(img, size);
	f = bad + size - 512;
	f[30] ^= 1;
	open_fails("vhd", bad, size, EIO, "checksum");
	cfs_put_be64(f + 48, 1ull << 60);
	vhd_fix_checksum(f);
	open_fails("vhd", bad, size, EIO, "does not fit");
	cfs_put_be64(f + 48, size);
	vhd_fix_checksum(f);
	open_fails("vhd", bad, size, EIO, "does not fit");
	memcpy(bad, img, size);
	cfs_put_be32(f + 60, 3);
	vhd_fix_checksum(f);
	open_fails("vhd", bad, size, ENOTSUP, "dynamic");
}


static guint32 get_le32(const guint8 *p)
{
	return p[0] | p[1] << 8 | p[2] << 16 | (guint32)p[3] << 24;
}

static guint64 get_le64(const guint8 *p)
{
	return get_le32(p) | (guint64)get_le32(p + 4) << 32;
}

/* File offset of the VHDX region whose GUID starts with @d1. */
static guint64 vhdx_region(const guint8 *img, guint32 d1)
{
	const guint8 *t = img + 192 * KiB;

	for (guint i = 0; i < get_le32(t + 8); i++) {
		if (get_le32(t + 16 + 32 * i) == d1)
			return get_le64(t + 32 + 32 * i);
	}
	g_assert_not_reached();
}

/* File offset of the VHDX metadata item whose GUID starts with @d1. */
static guint64 vhdx_item(const guint8 *img, guint32 d1)
{
	guint64 m = vhdx_region(img, 0x8B7CA206);
	const guint8 *t = img + m;

	for (guint i = 0; i < (guint)(t[10] | t[11] << 8); i++) {
		if (get_le32(t + 32 + 32 * i) == d1)
			return m + get_le32(t + 48 + 32 * i);
	}
	g_assert_not_reached();
}

static void vhdx_fix_header(guint8 *h)
{
	memset(h + 4, 0, 4);
	cfs_put_le32(h + 4, cfs_crc32c(0, h, 4 * KiB));
}

/* Index of the first fully present entry of the BAT at @bat. */
static guint vhdx_first_present(const guint8 *bat)
{
	for (guint i = 0;; i++) {
		if ((get_le64(bat + 8 * i) & 7) == 6)
			return i;
	}
}

static void test_corrupt_vhdx(void)
{
	gsize size = 0;
	g_autofree guint8 *img = small_image("vhdx-dynamic", &size);
	g_autofree guint8 *bad = NULL;
	g_autoptr(CfsReader) r = NULL;
	guint64 params, vsize, bat;
	guint e;

	if (!img)
		return;
	bad = g_memdup2(img, size);
	params = vhdx_item(img, 0xCAA16737);
	vsize = vhdx_item(img, 0x2FA54224);
	bat = vhdx_region(img, 0x2DC27766);
	e = vhdx_first_present(img + bat);
	open_fails("vhdx", img, 300 * KiB, EIO, "too short");
	open_fails("vhdx", img, bat + 4096, EIO, "region");
	bad[64 * KiB + 100] ^= 1;	/* the other header still serves */
	r = mem_open("vhdx", bad, size, NULL);
	g_assert_nonnull(r);
	bad[128 * KiB + 100] ^= 1;
	open_fails("vhdx", bad, size, EIO, "no valid header");
	memcpy(bad, img, size);
	for (guint h = 1; h <= 2; h++) {
		bad[h * 64 * KiB + 48] = 1;	/* a log to replay */
		vhdx_fix_header(bad + h * 64 * KiB);
	}
	open_fails("vhdx", bad, size, ENOTSUP, "replay");
	memcpy(bad, img, size);
	bad[params + 4] |= 2;
	open_fails("vhdx", bad, size, ENOTSUP, "differencing");
	memcpy(bad, img, size);
	cfs_put_le64(bad + vsize, 1ull << 62);
	open_fails("vhdx", bad, size, EIO, "disk size");
	cfs_put_le64(bad + vsize, 1000);
	open_fails("vhdx", bad, size, EIO, "disk size");
	memcpy(bad, img, size);
	cfs_put_le32(bad + params, 3 * MiB);
	open_fails("vhdx", bad, size, EIO, "block size");
	memcpy(bad, img, size);
	cfs_put_le64(bad + bat + 8 * e, (1ull << 40) << 20 | 6);
	open_fails("vhdx", bad, size, EIO, "past the end");
	cfs_put_le64(bad + bat + 8 * e, get_le64(img + bat + 8 * e) | 7);
	open_fails("vhdx", bad, size, EIO, "state 7");
	cfs_put_le64(bad + bat + 8 * e, 0);
	g_clear_pointer(&r, cfs_reader_free);
	r = mem_open("vhdx", bad, size, NULL);
	g_assert_nonnull(r);
	g_assert_cmpuint(cfs_reader_map(r)->data_bytes, <,
			 cfs_reader_disk_size(r));
}

/* Byte offset of the grain that holds disk sector 0 in a VMDK. */
static guint64 vmdk_grain0(const guint8 *img, guint64 *gte)
{
	guint64 gd = get_le64(img + 56) * 512;
	guint64 gt = get_le32(img + gd) * 512ull;

	*gte = gt;
	return get_le32(img + gt) * 512ull;
}

static void test_corrupt_vmdk(void)
{
	gsize size = 0;
	g_autofree guint8 *img = small_image("vmdk-stream", &size);
	g_autofree guint8 *bad = NULL;
	g_autoptr(CfsReader) r = NULL;
	g_autoptr(GError) error = NULL;
	guint8 buf[512];
	guint64 gte, g0;

	if (!img)
		return;
	bad = g_memdup2(img, size);
	g0 = vmdk_grain0(img, &gte);
	open_fails("vmdk", img, 300, EIO, "too short");
	open_fails("vmdk", img, g0 + 100, EIO, "past the end");
	cfs_put_le64(bad + 12, 1ull << 40);
	open_fails("vmdk", bad, size, EIO, "capacity");
	memcpy(bad, img, size);
	cfs_put_le64(bad + 20, 3);
	open_fails("vmdk", bad, size, EIO, "grain of");
	cfs_put_le64(bad + 20, 4096);
	open_fails("vmdk", bad, size, EIO, "grain of");
	memcpy(bad, img, size);
	cfs_put_le32(bad + 44, 1);
	open_fails("vmdk", bad, size, EIO, "per table");
	memcpy(bad, img, size);
	cfs_put_le64(bad + 56, 1ull << 50);
	open_fails("vmdk", bad, size, EIO, "directory");
	memcpy(bad, img, size);
	cfs_put_le32(bad + gte, 0xffffff00);
	open_fails("vmdk", bad, size, EIO, "past the end");
	memcpy(bad, img, size);
	memcpy(bad, "# Disk DescriptorFile\n", 22);
	open_fails("vmdk", bad, size, ENOTSUP, "descriptor");

	/* bad data opens, then fails to read */
	memcpy(bad, img, size);
	cfs_put_le64(bad + g0, 12345);
	r = mem_open("vmdk", bad, size, NULL);
	g_assert_nonnull(r);
	g_assert_false(cfs_reader_read(r, buf, 512, 0, box_read,
				       &(Box){ .mem = bad, .size = size },
				       &error));
	g_assert_error(error, CFS_ERROR, EIO);
	g_assert_nonnull(strstr(error->message, "marker"));
	g_clear_error(&error);
	memcpy(bad, img, size);
	bad[g0 + 12] = 0;	/* not a zlib header */
	g_assert_false(cfs_reader_read(r, buf, 512, 0, box_read,
				       &(Box){ .mem = bad, .size = size },
				       &error));
	g_assert_error(error, CFS_ERROR, EIO);
	g_clear_error(&error);
	cfs_put_le32(bad + g0 + 8, 0x7fffffff);
	g_assert_false(cfs_reader_read(r, buf, 512, 0, box_read,
				       &(Box){ .mem = bad, .size = size },
				       &error));
	g_assert_error(error, CFS_ERROR, EIO);
}

/* A stream whose header leaves the directory to a footer, as VMware and
 * this project's own view write it, reads the same. */
static void test_vmdk_footer(void)
{
	gsize size = 0;
	g_autofree guint8 *img = small_image("vmdk-stream", &size);
	g_autofree guint8 *raw = raw_disk_bytes(&small_disk);
	g_autofree guint8 *s = NULL;
	g_autoptr(CfsReader) r = NULL;
	g_autoptr(GError) error = NULL;
	Box b = { .fd = -1 };

	if (!img)
		return;
	s = g_malloc0(size + 3 * 512);
	memcpy(s, img, size);
	cfs_put_le32(s + size + 12, 3);			/* footer marker */
	memcpy(s + size + 512, img, 512);		/* footer */
	cfs_put_le64(s + 56, G_MAXUINT64);		/* GD at end */
	b.mem = s;
	b.size = size + 3 * 512;
	r = box_open("vmdk", &b, &error);
	g_assert_no_error(error);
	check_pieces(r, &b, raw);
	cfs_put_le32(s + size + 12, 2);
	open_fails("vmdk", s, b.size, EIO, "footer");
}


static bool raw_mem_read(void *opaque, void *buf, gsize len, guint64 off,
			 GError **error)
{
	memcpy(buf, (const guint8 *)opaque + off, len);
	return true;
}

/* This project's views of a disk read back through the readers. */
static void test_views(gconstpointer data)
{
	const char *name = data;
	g_autofree guint8 *raw = raw_disk_bytes(&small_disk);
	g_autoptr(CfsExtentMap) map = NULL;
	g_autoptr(CfsView) v = NULL;
	g_autoptr(CfsReader) r = NULL;
	g_autoptr(GError) error = NULL;
	g_autofree guint8 *img = NULL;
	Box b = { .fd = -1 };

	map = cfs_extent_map_new(small_disk.size, small_disk.ext, 3);
	v = cfs_format_find(name)->create(map, &error);
	g_assert_no_error(error);
	b.size = cfs_view_size(v);
	img = g_malloc(b.size);
	g_assert_true(cfs_view_read(v, img, b.size, 0, raw_mem_read, raw,
				    &error));
	b.mem = img;
	r = box_open(name, &b, &error);
	g_assert_no_error(error);
	g_assert_cmpuint(cfs_reader_disk_size(r), ==, small_disk.size);
	check_pieces(r, &b, raw);
	check_map(r, raw);
}

/* Random bytes changed in small images: errors, never a crash, and deps
 * always inside the container. */
static void fuzz_one(const char *fmt, guint8 *img, gsize size, GRand *rand)
{
	g_autoptr(GArray) deps = g_array_new(FALSE, FALSE, sizeof(CfsExtent));
	g_autoptr(CfsReader) r = NULL;
	g_autoptr(GError) error = NULL;
	Box b = { .fd = -1, .mem = img, .size = size };
	guint64 n;

	r = box_open(fmt, &b, &error);
	if (!r)
		return;
	n = MIN(cfs_reader_disk_size(r), 4 * MiB);
	cfs_reader_deps(r, 0, G_MAXUINT64, deps);
	check_deps(&b, deps);
	g_array_set_size(deps, 0);
	cfs_reader_deps(r, 0, n, deps);
	check_deps(&b, deps);
	if (n) {
		g_autofree guint8 *buf = g_malloc(n);

		b.allowed = deps;
		cfs_reader_read(r, buf, n, 0, box_read, &b, NULL);
	}
}

static void test_fuzz(gconstpointer data)
{
	const char *cv_name = data;
	gsize size = 0;
	g_autofree guint8 *img = small_image(cv_name, &size);
	g_autofree guint8 *bad = NULL;
	g_autoptr(GRand) rand = g_rand_new_with_seed(42);
	const char *fmt = conversion(cv_name)->reader;

	if (!img)
		return;
	bad = g_malloc(size);
	for (guint i = 0; i < 300; i++) {
		guint k = g_rand_int_range(rand, 1, 5);

		memcpy(bad, img, size);
		for (guint j = 0; j < k; j++) {
			guint64 span = MIN(size, 4 * MiB), pos;

			if (g_rand_boolean(rand))
				pos = g_rand_double(rand) * span;
			else
				pos = size - 1 - g_rand_int_range(rand, 0,
								  4096);
			bad[pos] = g_rand_boolean(rand) ? 0xff :
							  g_rand_int(rand);
		}
		fuzz_one(fmt, bad, size, rand);
	}
}

int main(int argc, char **argv)
{
	static ImageCase cases[G_N_ELEMENTS(raw_disks) *
			       G_N_ELEMENTS(conversions)];
	guint n = 0;

	g_test_init(&argc, &argv, NULL);
	for (guint d = 0; d < G_N_ELEMENTS(raw_disks); d++) {
		for (guint c = 0; c < G_N_ELEMENTS(conversions); c++) {
			g_autofree char *p = NULL;

			cases[n].rd = &raw_disks[d];
			cases[n].cv = &conversions[c];
			p = g_strdup_printf("/readers/qemu-img/%s/%s",
					    conversions[c].name,
					    raw_disks[d].name);
			g_test_add_data_func(p, &cases[n++], test_image);
		}
	}
	g_test_add_func("/readers/corrupt/vhd", test_corrupt_vhd);
	g_test_add_func("/readers/corrupt/vhdx", test_corrupt_vhdx);
	g_test_add_func("/readers/corrupt/vmdk", test_corrupt_vmdk);
	g_test_add_func("/readers/vmdk/footer", test_vmdk_footer);
	g_test_add_data_func("/readers/views/vhd", "vhd", test_views);
	g_test_add_data_func("/readers/views/vhdx", "vhdx", test_views);
	g_test_add_data_func("/readers/views/vmdk", "vmdk", test_views);
	for (guint c = 0; c < G_N_ELEMENTS(conversions); c++) {
		g_autofree char *p = g_strdup_printf("/readers/fuzz/%s",
						     conversions[c].name);

		g_test_add_data_func(p, conversions[c].name, test_fuzz);
	}
	return g_test_run();
}
