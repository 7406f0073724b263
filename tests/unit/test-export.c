// SPDX-License-Identifier: MIT
/*
 * Exports of a fake provider whose disk is read locally: a view follows
 * the map of the export it is read from. A released export that starts
 * again on a new snapshot with more blocks gives views with them; reads
 * of views and exports released and reopened from many threads hold up.
 */
#include <glib.h>
#include <string.h>

#include "cache/cache.h"
#include "common/control.h"
#include "common/error.h"
#include "fs/export.h"
#include "fs/formats/format.h"

#define MiB (1024ull * 1024)
#define DISK (8 * MiB)

typedef struct {
	CfsProvider base;
	gint generation;	/* atomic: snapshots taken */
	gint ended;		/* atomic: export_end calls */
	guint64 data;		/* stress: every snapshot has this much */
} Fake;

/* Snapshot N has data in its first N MiB. */
static guint8 fake_byte(guint64 off)
{
	return (guint8)(off * 7 >> 9) | 1;
}

static bool fake_pread(CfsSource *src, void *buf, gsize len, guint64 off,
		       GError **error)
{
	guint8 *b = buf;

	for (gsize i = 0; i < len; i++)
		b[i] = cfs_extent_map_any_data(src->map, off + i, 1) ?
			       fake_byte(off + i) : 0;
	return true;
}

static const CfsSourceOps fake_source_ops = {
	.pread = fake_pread,
};

static CfsSource *fake_start(CfsProvider *base, CfsDisk *disk,
			     CfsExportReport *report, GError **error)
{
	Fake *f = (Fake *)base;
	guint gen = (guint)g_atomic_int_add(&f->generation, 1) + 1;
	CfsExtent data = { 0, f->data ? f->data : MIN(gen, 8) * MiB };
	CfsSource *src = cfs_source_new(&fake_source_ops, NULL);

	src->size = DISK;
	src->random = true;
	src->map = cfs_extent_map_new(DISK, &data, 1);
	src->identity = g_strdup_printf("snap-%u", gen);
	return src;
}

static void fake_end(CfsProvider *base, CfsDisk *disk, CfsSource *src)
{
	g_atomic_int_inc(&((Fake *)base)->ended);
}

static const CfsProviderOps fake_ops = {
	.name = "fake",
	.export_start = fake_start,
	.export_end = fake_end,
};

typedef struct {
	char *tmp;
	Fake prov;
	CfsEngine engine;
	CfsExport *ex;
	CfsExport *other;	/* freed once the engine stopped: its jobs
				 * may run until then */
} Env;

static void env_init(Env *e, guint64 cache_limit)
{
	g_autoptr(GError) error = NULL;
	g_autofree char *dir = NULL;
	CfsDisk *disk = cfs_disk_new("disk", "raw", DISK);

	memset(e, 0, sizeof(*e));
	e->tmp = g_dir_make_tmp("cfs-export-XXXXXX", &error);
	dir = g_build_filename(e->tmp, "cache", NULL);
	e->prov.base.ops = &fake_ops;
	e->prov.base.name = (char *)"fake";
	e->engine.store = cfs_store_new(dir, cache_limit, 0, &error);
	g_assert_no_error(error);
	e->engine.chunk_size = 256 * 1024;
	e->engine.parallel = 4;
	e->engine.ctx.control = cfs_control_new(4);
	e->prov.base.ctx = &e->engine.ctx;
	cfs_engine_start(&e->engine);
	disk->id = g_strdup("fake-disk");
	e->ex = cfs_export_new(&e->engine, &e->prov.base, disk, "fake/vm/disk");
}

static void env_clear(Env *e)
{
	g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", e->tmp);

	cfs_engine_stop(&e->engine);
	cfs_export_free(e->ex);
	cfs_export_free(e->other);
	cfs_control_free(e->engine.ctx.control);
	cfs_store_free(e->engine.store);
	g_assert_cmpint(system(cmd), ==, 0);
	g_free(e->tmp);
}

/* Read the whole view @fmt (NULL: native) and check it shows the
 * snapshot whose data ends at @data_end. */
static void check_raw_view(Env *e, const CfsFormat *fmt, guint64 data_end)
{
	g_autoptr(GError) error = NULL;
	g_autofree guint8 *buf = g_malloc(DISK);
	guint64 size = 0;

	g_assert_true(cfs_export_wait_size(e->ex, fmt, &size, &error));
	g_assert_no_error(error);
	g_assert_cmpuint(size, ==, DISK);
	g_assert_true(cfs_export_read_sync(e->ex, fmt, buf, DISK, 0, &error));
	g_assert_no_error(error);
	for (guint64 i = 0; i < DISK; i++) {
		guint8 want = i < data_end ? fake_byte(i) : 0;

		if (buf[i] != want)
			g_error("byte %" G_GUINT64_FORMAT " is %u, not %u "
				"(data to %" G_GUINT64_FORMAT ")", i, buf[i],
				want, data_end);
	}
}

/* Make the export incomplete after its release: another export's reads
 * evict its chunks from a small cache. */
static void evict_by_another(Env *e)
{
	CfsDisk *disk = cfs_disk_new("disk", "raw", DISK);
	g_autofree guint8 *buf = g_malloc(DISK);
	CfsExport *other;

	disk->id = g_strdup("another-disk");
	other = cfs_export_new(&e->engine, &e->prov.base, disk,
			       "fake/other/disk");
	cfs_export_open(other);
	for (guint64 off = 0; off < DISK; off += MiB)
		g_assert_true(cfs_export_read_sync(other, NULL, buf, MiB, off,
						   NULL));
	cfs_export_release(other);
	e->other = other;
}

static void test_views_follow_reexport(void)
{
	const CfsFormat *raw = cfs_format_find("raw");
	const CfsFormat *vmdk = cfs_format_find("vmdk");
	g_autoptr(GError) error = NULL;
	guint64 size1 = 0, size2 = 0;
	gint ended;
	Env e;

	env_init(&e, 1 * MiB);
	cfs_export_add_view(e.ex, raw);
	cfs_export_add_view(e.ex, vmdk);
	cfs_export_open(e.ex);
	check_raw_view(&e, raw, 1 * MiB);	/* snapshot 1 */
	check_raw_view(&e, NULL, 1 * MiB);
	g_assert_true(cfs_export_wait_size(e.ex, vmdk, &size1, &error));
	ended = g_atomic_int_get(&e.prov.ended);
	cfs_export_release(e.ex);	/* complete: released */
	while (g_atomic_int_get(&e.prov.ended) == ended)
		g_usleep(1000);
	evict_by_another(&e);		/* snapshot 2 */

	cfs_export_open(e.ex);		/* incomplete: snapshot 3 */
	check_raw_view(&e, raw, 3 * MiB);
	check_raw_view(&e, NULL, 3 * MiB);
	g_assert_true(cfs_export_wait_size(e.ex, vmdk, &size2, &error));
	g_assert_no_error(error);
	/* The VMDK holds the new blocks: it grew by their grains. */
	g_assert_cmpuint(size2, >, size1 + 1 * MiB);
	g_assert_cmpint(g_atomic_int_get(&e.prov.generation), ==, 3);
	cfs_export_release(e.ex);
	env_clear(&e);
}

/* --- stress: readers of views while the export is released and
 * reopened, with a cache small enough that eviction runs all the time */

typedef struct {
	Env *e;
	CfsExport *ex;
	const CfsFormat *fmt;
	gint stop;	/* atomic */
	guint seed;
	guint reads;	/* reads that gave bytes */
} Reader;

static gpointer reader_run(gpointer data)
{
	Reader *r = data;
	g_autoptr(GRand) rand = g_rand_new_with_seed(r->seed);
	g_autofree guint8 *buf = g_malloc(512 * 1024);

	while (!g_atomic_int_get(&r->stop)) {
		g_autoptr(GError) error = NULL;
		guint64 size = 0, off, len;

		cfs_export_open(r->ex);
		if (cfs_export_wait_size(r->ex, r->fmt, &size, &error) &&
		    size) {
			off = (guint64)g_rand_double_range(rand, 0, size);
			len = MIN(size - off,
				  (guint64)g_rand_int_range(rand, 1, 512 * 1024));
			/* An export may be released under a reader: that
			 * read fails, and the next open starts it again. */
			if (cfs_export_read_sync(r->ex, r->fmt, buf, len, off,
						 NULL)) {
				r->reads++;
				for (guint64 i = 0; !r->fmt && i < len; i++)
					g_assert_cmpuint(buf[i], ==,
						off + i < r->e->prov.data ?
						fake_byte(off + i) : 0);
			}
		}
		cfs_export_release(r->ex);
		g_usleep(g_rand_int_range(rand, 0, 2000));
	}
	return NULL;
}

/* Readers of two exports and all their views, opening and closing
 * (exports complete, are released, lose chunks to the other's and start
 * again) through a cache that evicts all the time. */
static void test_stress_reopen(void)
{
	const char *names[] = { NULL, "raw", "vmdk", "vhd", "qcow2", "vhdx" };
	Reader readers[G_N_ELEMENTS(names) * 2];
	GThread *threads[G_N_ELEMENTS(readers)];
	CfsDisk *disk = cfs_disk_new("disk", "raw", DISK);
	guint64 reads = 0;
	CfsExport *other;
	Env e;


	env_init(&e, 1 * MiB);	/* four chunks: eviction all the time */
	e.prov.data = 768 * 1024;
	disk->id = g_strdup("another-disk");
	other = cfs_export_new(&e.engine, &e.prov.base, disk,
			       "fake/other/disk");
	e.other = other;
	for (guint i = 1; i < G_N_ELEMENTS(names); i++) {
		cfs_export_add_view(e.ex, cfs_format_find(names[i]));
		cfs_export_add_view(other, cfs_format_find(names[i]));
	}
	for (guint i = 0; i < G_N_ELEMENTS(readers); i++) {
		const char *name = names[i % G_N_ELEMENTS(names)];

		readers[i] = (Reader){ .e = &e, .seed = i,
				       .ex = i % 2 ? other : e.ex,
				       .fmt = name ? cfs_format_find(name) :
						     NULL };
		threads[i] = g_thread_new("reader", reader_run, &readers[i]);
	}
	g_usleep(3 * G_USEC_PER_SEC);
	for (guint i = 0; i < G_N_ELEMENTS(readers); i++)
		g_atomic_int_set(&readers[i].stop, 1);
	for (guint i = 0; i < G_N_ELEMENTS(readers); i++) {
		g_thread_join(threads[i]);
		reads += readers[i].reads;
	}
	g_test_message("%" G_GUINT64_FORMAT " reads, %d exports started, "
		       "%d ended", reads, g_atomic_int_get(&e.prov.generation),
		       g_atomic_int_get(&e.prov.ended));
	g_assert_cmpuint(reads, >, 0);
	g_assert_cmpint(g_atomic_int_get(&e.prov.generation), >=, 2);
	env_clear(&e);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/export/views-follow-reexport",
			test_views_follow_reexport);
	g_test_add_func("/export/stress-reopen", test_stress_reopen);
	return g_test_run();
}
