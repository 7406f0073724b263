// SPDX-License-Identifier: MIT
/*
 * The container readers (VHD, VHDX, VMDK) over hostile container bytes:
 * open, then map, deps and reads of the virtual disk must never crash or
 * read outside the container.
 */
#include "fs/formats/reader.h"
#include "tests/fuzz/fuzz-common.h"

/*
 * The input is a sparse container, so that seeds made of real containers
 * stay small: its claimed size (8 bytes, little endian), then pieces of
 * (offset: 8 bytes, length: 2 bytes, bytes). What no piece covers reads
 * as zeros.
 */
typedef struct {
	guint64 size;
	GArray *pieces;	/* Piece */
} Container;

typedef struct {
	guint64 off;
	const uint8_t *data;
	guint len;
} Piece;

#define CONTAINER_MAX (1ULL << 40)

static bool container_read(void *opaque, void *buf, gsize len, guint64 off,
			   GError **error)
{
	const Container *c = opaque;

	if (off > c->size || len > c->size - off)
		abort();	/* a reader must stay inside the container */
	memset(buf, 0, len);
	for (guint i = 0; i < c->pieces->len; i++) {
		const Piece *p = &g_array_index(c->pieces, Piece, i);
		guint64 lo = MAX(p->off, off), hi = MIN(p->off + p->len,
							off + len);

		if (lo < hi)
			memcpy((guint8 *)buf + (lo - off), p->data + (lo - p->off),
			       hi - lo);
	}
	return true;
}

static void container_parse(Container *c, const uint8_t *data, size_t size)
{
	FuzzIn in = { data, size };

	c->size = fuzz_u64(&in) % CONTAINER_MAX;
	c->pieces = g_array_new(FALSE, FALSE, sizeof(Piece));
	while (in.left >= 10) {
		Piece p;

		p.off = fuzz_u64(&in) % CONTAINER_MAX;
		p.len = fuzz_u8(&in);
		p.len |= (guint)fuzz_u8(&in) << 8;
		p.len = (guint)MIN(p.len, in.left);
		p.data = in.p;
		in.p += p.len;
		in.left -= p.len;
		if (p.off < c->size)
			g_array_append_val(c->pieces, p);
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const names[] = { "vhd", "vhdx", "vmdk" };
	Container c;
	g_autoptr(CfsExtentMap) map = NULL;

	container_parse(&c, data, size);
	map = cfs_extent_map_new_full(c.size);
	for (guint i = 0; c.size && i < G_N_ELEMENTS(names); i++) {
		const CfsReaderFormat *rf = cfs_reader_find(names[i]);
		g_autoptr(GError) error = NULL;
		g_autoptr(CfsReader) r = rf->open(c.size, map, container_read,
						  &c, &error);
		guint64 disk;
		FuzzIn in = { data, MIN(size, 64) };

		if (!r)
			continue;
		disk = cfs_reader_disk_size(r);
		(void)cfs_reader_map(r);
		for (guint k = 0; k < 4 && disk; k++) {
			g_autoptr(GArray) ranges = g_array_new(
				FALSE, FALSE, sizeof(CfsExtent));
			g_autoptr(GError) rerr = NULL;
			guint64 off = fuzz_u64(&in) % disk;
			guint64 want = 1 + fuzz_u64(&in) % 65536;
			guint64 len = MIN(disk - off, want);
			g_autofree guint8 *buf = g_malloc(len);

			cfs_reader_deps(r, off, len, ranges);
			for (guint j = 0; j < ranges->len; j++) {
				CfsExtent *e = &g_array_index(ranges, CfsExtent,
							      j);

				if (e->offset > c.size ||
				    e->length > c.size - e->offset)
					abort();	/* past the container */
			}
			cfs_reader_read(r, buf, len, off, container_read, &c,
					&rerr);
		}
	}
	g_array_unref(c.pieces);
	return 0;
}
