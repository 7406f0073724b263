// SPDX-License-Identifier: MIT
/*
 * Unit tests of allocation maps: building (clip, sort, merge), data bytes,
 * any_data, and SEEK_DATA/SEEK_HOLE answers, checked by hand on small maps
 * and against a byte-per-byte model on random ones.
 */
#include <glib.h>
#include <string.h>

#include "common/extent.h"

static void assert_extents(const CfsExtentMap *map, const CfsExtent *want,
			   guint n)
{
	guint64 bytes = 0;

	g_assert_cmpuint(map->n, ==, n);
	for (guint i = 0; i < n; i++) {
		g_assert_cmpuint(map->ext[i].offset, ==, want[i].offset);
		g_assert_cmpuint(map->ext[i].length, ==, want[i].length);
		bytes += want[i].length;
	}
	g_assert_cmpuint(map->data_bytes, ==, bytes);
}

static void test_empty(void)
{
	g_autoptr(CfsExtentMap) map = cfs_extent_map_new(100, NULL, 0);
	g_autoptr(CfsExtentMap) zero = cfs_extent_map_new(0, NULL, 0);
	guint64 out = 12345;

	g_assert_cmpint(map->refcount, ==, 1);
	g_assert_cmpuint(map->size, ==, 100);
	assert_extents(map, NULL, 0);
	g_assert_false(cfs_extent_map_any_data(map, 0, 100));
	g_assert_false(cfs_extent_map_next_data(map, 0, &out));
	g_assert_true(cfs_extent_map_next_hole(map, 0, &out));
	g_assert_cmpuint(out, ==, 0);
	g_assert_true(cfs_extent_map_next_hole(map, 99, &out));
	g_assert_cmpuint(out, ==, 99);
	g_assert_false(cfs_extent_map_next_hole(map, 100, &out));

	/* A disk of size 0: no offset is inside it. */
	assert_extents(zero, NULL, 0);
	g_assert_false(cfs_extent_map_next_data(zero, 0, &out));
	g_assert_false(cfs_extent_map_next_hole(zero, 0, &out));
}

static void test_full(void)
{
	g_autoptr(CfsExtentMap) map = cfs_extent_map_new_full(4096);
	g_autoptr(CfsExtentMap) zero = cfs_extent_map_new_full(0);
	static const CfsExtent want[] = { { 0, 4096 } };
	guint64 out;

	assert_extents(map, want, 1);
	g_assert_true(cfs_extent_map_any_data(map, 4095, 1));
	g_assert_true(cfs_extent_map_next_hole(map, 0, &out));
	g_assert_cmpuint(out, ==, 4096);	/* the end of the disk */
	assert_extents(zero, NULL, 0);
}

static void test_merge(void)
{
	static const CfsExtent overlap[] = { { 0, 10 }, { 5, 10 } };
	static const CfsExtent overlap_want[] = { { 0, 15 } };
	static const CfsExtent inside[] = { { 0, 100 }, { 10, 5 }, { 0, 3 } };
	static const CfsExtent inside_want[] = { { 0, 100 } };
	static const CfsExtent adjacent[] = { { 0, 10 }, { 10, 10 },
					      { 20, 1 } };
	static const CfsExtent adjacent_want[] = { { 0, 21 } };
	static const CfsExtent unsorted[] = { { 50, 10 }, { 0, 10 },
					      { 20, 5 }, { 22, 10 } };
	static const CfsExtent unsorted_want[] = { { 0, 10 }, { 20, 12 },
						   { 50, 10 } };
	static const CfsExtent gap1[] = { { 0, 10 }, { 11, 10 } };
	static const CfsExtent dup[] = { { 30, 5 }, { 30, 5 }, { 30, 8 } };
	static const CfsExtent dup_want[] = { { 30, 8 } };
	struct {
		const CfsExtent *in;
		guint n;
		const CfsExtent *want;
		guint n_want;
	} cases[] = {
		{ overlap, 2, overlap_want, 1 },
		{ inside, 3, inside_want, 1 },
		{ adjacent, 3, adjacent_want, 1 },
		{ unsorted, 4, unsorted_want, 3 },
		{ gap1, 2, gap1, 2 },
		{ dup, 3, dup_want, 1 },
	};

	for (guint c = 0; c < G_N_ELEMENTS(cases); c++) {
		g_autofree CfsExtent *copy = g_memdup2(
			cases[c].in, sizeof(CfsExtent) * cases[c].n);
		g_autoptr(CfsExtentMap) map = cfs_extent_map_new(
			100, copy, cases[c].n);

		assert_extents(map, cases[c].want, cases[c].n_want);
		/* The caller's array is left as it was. */
		g_assert_cmpmem(copy, sizeof(CfsExtent) * cases[c].n,
				cases[c].in, sizeof(CfsExtent) * cases[c].n);
	}
}

static void test_clip(void)
{
	static const CfsExtent zero_len[] = { { 5, 0 }, { 0, 0 }, { 99, 0 } };
	static const CfsExtent zero_mid[] = { { 0, 10 }, { 10, 0 },
					      { 20, 10 } };
	static const CfsExtent zero_mid_want[] = { { 0, 10 }, { 20, 10 } };
	static const CfsExtent beyond[] = { { 90, 20 }, { 100, 5 },
					    { 200, 5 }, { 0, 1 } };
	static const CfsExtent beyond_want[] = { { 0, 1 }, { 90, 10 } };
	/* offset + length wraps around: still clipped to the size */
	static const CfsExtent wrap[] = { { 10, G_MAXUINT64 } };
	static const CfsExtent wrap_want[] = { { 10, 90 } };
	static const CfsExtent huge[] = { { G_MAXUINT64 - 1, 1 } };
	g_autoptr(CfsExtentMap) a = cfs_extent_map_new(100, zero_len, 3);
	g_autoptr(CfsExtentMap) b = cfs_extent_map_new(100, zero_mid, 3);
	g_autoptr(CfsExtentMap) c = cfs_extent_map_new(100, beyond, 4);
	g_autoptr(CfsExtentMap) d = cfs_extent_map_new(100, wrap, 1);
	g_autoptr(CfsExtentMap) e = cfs_extent_map_new(100, huge, 1);
	g_autoptr(CfsExtentMap) f = cfs_extent_map_new(0, beyond, 4);

	assert_extents(a, NULL, 0);
	assert_extents(b, zero_mid_want, 2);
	assert_extents(c, beyond_want, 2);
	assert_extents(d, wrap_want, 1);
	assert_extents(e, NULL, 0);
	assert_extents(f, NULL, 0);
}

static void test_refcount(void)
{
	CfsExtentMap *map = cfs_extent_map_new_full(10);

	g_assert_true(cfs_extent_map_ref(map) == map);
	g_assert_cmpint(map->refcount, ==, 2);
	cfs_extent_map_unref(map);
	g_assert_cmpint(map->refcount, ==, 1);
	cfs_extent_map_unref(map);
	cfs_extent_map_unref(NULL);
}

static void test_any_data(void)
{
	static const CfsExtent ext[] = { { 10, 20 }, { 50, 50 } };
	g_autoptr(CfsExtentMap) map = cfs_extent_map_new(100, ext, 2);

	g_assert_false(cfs_extent_map_any_data(map, 0, 10));
	g_assert_true(cfs_extent_map_any_data(map, 0, 11));
	g_assert_true(cfs_extent_map_any_data(map, 29, 1));
	g_assert_false(cfs_extent_map_any_data(map, 30, 20));
	g_assert_true(cfs_extent_map_any_data(map, 30, 21));
	g_assert_true(cfs_extent_map_any_data(map, 0, 100));
	g_assert_true(cfs_extent_map_any_data(map, 99, 1));
	g_assert_false(cfs_extent_map_any_data(map, 100, 10));
	g_assert_false(cfs_extent_map_any_data(map, 1000, 1));
	/* An empty range at a boundary holds no byte. */
	g_assert_false(cfs_extent_map_any_data(map, 10, 0));
	g_assert_false(cfs_extent_map_any_data(map, 30, 0));
}

/* An empty range strictly inside an extent holds no byte either. */
static void test_any_data_empty_range(void)
{
	static const CfsExtent ext[] = { { 10, 20 } };
	g_autoptr(CfsExtentMap) map = cfs_extent_map_new(100, ext, 1);

	g_assert_false(cfs_extent_map_any_data(map, 15, 0));
}

static void test_seek(void)
{
	static const CfsExtent ext[] = { { 10, 20 }, { 50, 50 } };
	static const CfsExtent mid[] = { { 10, 20 } };
	g_autoptr(CfsExtentMap) map = cfs_extent_map_new(100, ext, 2);
	g_autoptr(CfsExtentMap) m2 = cfs_extent_map_new(100, mid, 1);
	static const struct {
		guint64 off;
		bool ok;
		guint64 want;
	} data[] = {
		{ 0, true, 10 },   { 9, true, 10 },   { 10, true, 10 },
		{ 15, true, 15 },  { 29, true, 29 },  { 30, true, 50 },
		{ 49, true, 50 },  { 99, true, 99 },  { 100, false, 0 },
		{ 1000, false, 0 }, { G_MAXUINT64, false, 0 },
	}, hole[] = {
		{ 0, true, 0 },     { 9, true, 9 },    { 10, true, 30 },
		{ 29, true, 30 },   { 30, true, 30 },  { 49, true, 49 },
		{ 50, true, 100 },  { 99, true, 100 }, { 100, false, 0 },
		{ G_MAXUINT64, false, 0 },
	};
	guint64 out;

	for (guint i = 0; i < G_N_ELEMENTS(data); i++) {
		out = 777;
		g_assert_cmpint(cfs_extent_map_next_data(map, data[i].off,
							 &out), ==,
				data[i].ok);
		if (data[i].ok)
			g_assert_cmpuint(out, ==, data[i].want);
	}
	for (guint i = 0; i < G_N_ELEMENTS(hole); i++) {
		out = 777;
		g_assert_cmpint(cfs_extent_map_next_hole(map, hole[i].off,
							 &out), ==,
				hole[i].ok);
		if (hole[i].ok)
			g_assert_cmpuint(out, ==, hole[i].want);
	}

	/* Past the last extent there is no more data: ENXIO, though the
	 * offset is inside the disk; holes go on to the end. */
	g_assert_false(cfs_extent_map_next_data(m2, 30, &out));
	g_assert_false(cfs_extent_map_next_data(m2, 99, &out));
	g_assert_true(cfs_extent_map_next_hole(m2, 99, &out));
	g_assert_cmpuint(out, ==, 99);
	g_assert_true(cfs_extent_map_next_hole(m2, 12, &out));
	g_assert_cmpuint(out, ==, 30);
}

/* The model: one bool per byte. */
static void check_against_model(const CfsExtentMap *map, const bool *bytes,
				guint64 size)
{
	guint64 count = 0;

	for (guint64 i = 0; i < size; i++)
		count += bytes[i];
	g_assert_cmpuint(map->data_bytes, ==, count);
	g_assert_cmpuint(map->size, ==, size);

	/* Extents are sorted, not touching, inside the disk and exact. */
	for (guint i = 0; i < map->n; i++) {
		const CfsExtent *e = &map->ext[i];

		g_assert_cmpuint(e->length, >, 0);
		g_assert_cmpuint(e->offset + e->length, <=, size);
		if (i > 0)
			g_assert_cmpuint(map->ext[i - 1].offset +
						 map->ext[i - 1].length,
					 <, e->offset);
		for (guint64 o = e->offset; o < e->offset + e->length; o++)
			g_assert_true(bytes[o]);
	}

	for (guint64 off = 0; off <= size + 2; off++) {
		guint64 want_data = off, want_hole = off, out;
		bool has_data;

		while (want_data < size && !bytes[want_data])
			want_data++;
		while (want_hole < size && bytes[want_hole])
			want_hole++;
		has_data = off < size && want_data < size;

		out = G_MAXUINT64;
		g_assert_cmpint(cfs_extent_map_next_data(map, off, &out), ==,
				has_data);
		if (has_data)
			g_assert_cmpuint(out, ==, want_data);
		out = G_MAXUINT64;
		g_assert_cmpint(cfs_extent_map_next_hole(map, off, &out), ==,
				off < size);
		if (off < size)
			g_assert_cmpuint(out, ==, want_hole);

		for (guint64 len = 1; off + len <= size + 2; len++) {
			bool any = false;

			for (guint64 o = off; o < off + len && o < size; o++)
				any = any || bytes[o];
			g_assert_cmpint(cfs_extent_map_any_data(map, off, len),
					==, any);
		}
	}
}

static void test_random(void)
{
	g_autoptr(GRand) rand = g_rand_new_with_seed(20240611);

	for (guint round = 0; round < 2000; round++) {
		guint64 size = g_rand_int_range(rand, 0, 48);
		guint n = g_rand_int_range(rand, 0, 7);
		g_autofree CfsExtent *ext = g_new0(CfsExtent, MAX(n, 1));
		g_autofree bool *bytes = g_new0(bool, size + 1);
		g_autoptr(CfsExtentMap) map = NULL;

		for (guint i = 0; i < n; i++) {
			/* Some extents start or end past the disk. */
			ext[i].offset = g_rand_int_range(rand, 0, size + 8);
			ext[i].length = g_rand_int_range(rand, 0, 16);
			for (guint64 o = ext[i].offset;
			     o < ext[i].offset + ext[i].length && o < size; o++)
				bytes[o] = true;
		}
		map = cfs_extent_map_new(size, ext, n);
		check_against_model(map, bytes, size);
	}
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/extent/empty", test_empty);
	g_test_add_func("/extent/full", test_full);
	g_test_add_func("/extent/merge", test_merge);
	g_test_add_func("/extent/clip", test_clip);
	g_test_add_func("/extent/refcount", test_refcount);
	g_test_add_func("/extent/any-data", test_any_data);
	g_test_add_func("/extent/any-data-empty-range",
			test_any_data_empty_range);
	g_test_add_func("/extent/seek", test_seek);
	g_test_add_func("/extent/random", test_random);
	return g_test_run();
}
