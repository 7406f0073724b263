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

int main(int argc, char **argv)
{
	static ImageCase cases[G_N_ELEMENTS(raw_disks) *
			       G_N_ELEMENTS(conversions)];
	guint n = 0;

	g_test_init(&argc, &argv, NULL);
	for (guint d = 0; d < G_N_ELEMENTS(raw_disks); d++) {
		for (guint c = 0; c < G_N_ELEMENTS(conversions); c++) {
			g_autofree char *p = NULL;

			cases[n] = (ImageCase){ &raw_disks[d], &conversions[c] };
			p = g_strdup_printf("/readers/qemu-img/%s/%s",
					    conversions[c].name,
					    raw_disks[d].name);
			g_test_add_data_func(p, &cases[n++], test_image);
		}
	}
	return g_test_run();
}
