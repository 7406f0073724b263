// SPDX-License-Identifier: MIT
/*
 * The cache folder as a hostile place: folders others can change, planted
 * symlinks, files cloudfs did not make, a second daemon, files cut short,
 * power loss in the middle of a copy (fdatasync is wrapped to see what a
 * crash would leave), a daemon killed (same boot: nothing lost), and
 * eviction racing caches that close.
 */
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/cache.h"
#include "common/error.h"
#include "tests/unit/rm-rf.h"

#define KiB 1024ull
#define CHUNK (64 * KiB)

/* --- fdatasync, seen: the bytes of "data" files as of their last sync --- */

int __real_fdatasync(int fd);
int __wrap_fdatasync(int fd);

static GMutex synced_lock;
static GBytes *synced_data;	/* protected by synced_lock */
static gint wrap_on;		/* atomic */

int __wrap_fdatasync(int fd)
{
	char link[64], path[4096];
	ssize_t n;
	struct stat st;
	guint8 *buf;
	int ret = __real_fdatasync(fd);

	if (ret < 0 || !g_atomic_int_get(&wrap_on))
		return ret;
	g_snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, path, sizeof(path) - 1);
	if (n < 5)
		return ret;
	path[n] = '\0';
	if (!g_str_has_suffix(path, "/data") || fstat(fd, &st) < 0)
		return ret;
	/* What the disk holds now: these bytes survive a power loss. */
	buf = g_malloc0(st.st_size + 1);
	g_assert_cmpint(pread(fd, buf, st.st_size, 0), ==, st.st_size);
	g_mutex_lock(&synced_lock);
	g_clear_pointer(&synced_data, g_bytes_unref);
	synced_data = g_bytes_new_take(buf, st.st_size);
	g_mutex_unlock(&synced_lock);
	return ret;
}

/* --- a disk and a fetcher that fills chunks at once --- */

static guint8 disk_byte(guint64 off)
{
	return (guint8)((off * 0x9E3779B97F4A7C15ull) >> 56 ^ off >> 12 ^ 1);
}

typedef struct {
	CfsCache *cache;
	guint64 size;
	gint fetches;	/* atomic */
} Fetcher;

static void fetcher_fetch(gpointer owner, guint64 idx, bool demand)
{
	Fetcher *f = owner;
	guint64 off = idx * CHUNK, len = MIN(CHUNK, f->size - off);
	g_autofree guint8 *buf = g_malloc(len);
	g_autoptr(GError) error = NULL;
	CfsCache *cache = g_atomic_pointer_get(&f->cache);

	for (guint64 i = 0; i < len; i++)
		buf[i] = disk_byte(off + i);
	g_atomic_int_inc(&f->fetches);
	g_assert_true(cfs_cache_write(cache, off, buf, len, &error));
	cfs_cache_chunk_done(cache, idx, NULL);
}

static void wake_flag(CfsCacheHold *hold, gpointer data, const GError *error)
{
	g_assert_null(error);
	g_atomic_int_set((gint *)data, 1);
}

/* Read [off, off+len) through the cache and check it. */
static void read_check(CfsCache *cache, guint64 off, guint64 len)
{
	CfsExtent r = { off, len };
	CfsCacheHold *hold = NULL;
	g_autofree guint8 *buf = g_malloc(len);
	gint woken = 0;

	if (!cfs_cache_acquire(cache, &r, 1, wake_flag, &woken, &hold))
		while (!g_atomic_int_get(&woken))
			g_usleep(100);
	g_assert_true(cfs_cache_pread(cache, buf, len, off, NULL));
	cfs_cache_release(hold);
	for (guint64 i = 0; i < len; i++)
		if (buf[i] != disk_byte(off + i))
			g_error("byte %" G_GUINT64_FORMAT " is wrong", off + i);
}

typedef struct {
	char *tmp;
	char *dir;
	CfsExtentMap *map;
} Env;

static void env_init(Env *e, guint64 size)
{
	e->tmp = g_dir_make_tmp("cfs-store-XXXXXX", NULL);
	g_assert_nonnull(e->tmp);
	e->dir = g_build_filename(e->tmp, "cache", NULL);
	e->map = cfs_extent_map_new_full(size);
}

static void env_clear(Env *e)
{
	rm_rf(e->tmp);
	g_free(e->tmp);
	g_free(e->dir);
	cfs_extent_map_unref(e->map);
}

static CfsStore *store_open(const char *dir, guint64 limit)
{
	g_autoptr(GError) error = NULL;
	CfsStore *store = cfs_store_new(dir, limit, 0, &error);

	g_assert_no_error(error);
	return store;
}

static CfsCache *cache_open(CfsStore *store, const char *key, Env *e,
			    Fetcher *f)
{
	g_autoptr(GError) error = NULL;
	CfsCache *cache;

	f->size = e->map->size;
	cache = cfs_cache_open(store, key, "disk", e->map, CHUNK, 4,
			       fetcher_fetch, f, &error);
	g_assert_no_error(error);
	g_atomic_pointer_set(&f->cache, cache);
	return cache;
}

/* The one export folder in a store folder. */
static char *export_dir(const char *dir)
{
	g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
	const char *name;

	while (d && (name = g_dir_read_name(d)))
		if (!g_str_equal(name, "CACHEDIR.TAG"))
			return g_build_filename(dir, name, NULL);
	g_assert_not_reached();
}

static void expect_refused(const char *dir, const char *words)
{
	g_autoptr(GError) error = NULL;
	CfsStore *store = cfs_store_new(dir, 0, 0, &error);

	g_assert_null(store);
	g_assert_nonnull(error);
	if (!strstr(error->message, words))
		g_error("'%s' does not say '%s'", error->message, words);
}

/* --- tests --- */

static void test_unsafe_folders(void)
{
	Env e;
	g_autofree char *sub = NULL, *file = NULL;

	env_init(&e, 4 * CHUNK);
	g_assert_cmpint(g_mkdir(e.dir, 0700), ==, 0);
	g_assert_cmpint(chmod(e.dir, 0770), ==, 0);
	expect_refused(e.dir, "written by others");
	g_assert_cmpint(chmod(e.dir, 0707), ==, 0);
	expect_refused(e.dir, "written by others");
	/* A sticky world-writable folder is fine as a parent only if root
	 * owns it (like /tmp), never as the cache itself. */
	g_assert_cmpint(chmod(e.dir, 01777), ==, 0);
	expect_refused(e.dir, "written by others");
	/* A parent others can write to. */
	g_assert_cmpint(chmod(e.dir, 0777), ==, 0);
	sub = g_build_filename(e.dir, "sub", NULL);
	expect_refused(sub, "written by others");
	if (geteuid() == 0) {
		g_assert_cmpint(chmod(e.dir, 0700), ==, 0);
		g_assert_cmpint(chown(e.dir, 4242, 4242), ==, 0);
		expect_refused(sub, "belongs to user 4242");
		expect_refused(e.dir, "belongs to user 4242");
		g_assert_cmpint(chown(e.dir, 0, 0), ==, 0);
	}
	/* Someone else's folder: never tagged, never cleaned. */
	g_assert_cmpint(chmod(e.dir, 0755), ==, 0);
	file = g_build_filename(e.dir, "report.txt", NULL);
	g_assert_true(g_file_set_contents(file, "keep", -1, NULL));
	expect_refused(e.dir, "cloudfs did not make");
	{
		struct stat st;
		g_autofree char *tag = g_build_filename(e.dir, "CACHEDIR.TAG",
							NULL);

		g_assert_false(g_file_test(tag, G_FILE_TEST_EXISTS));
		g_assert_cmpint(stat(e.dir, &st), ==, 0);
		g_assert_cmpint(st.st_mode & 07777, ==, 0755);
	}
	env_clear(&e);
}

static void test_tag_and_lock(void)
{
	Env e;
	g_autoptr(GError) error = NULL;
	g_autofree char *tag = NULL, *text = NULL;
	CfsStore *store, *again;

	env_init(&e, 4 * CHUNK);
	store = store_open(e.dir, 0);
	tag = g_build_filename(e.dir, "CACHEDIR.TAG", NULL);
	g_assert_true(g_file_get_contents(tag, &text, NULL, NULL));
	g_assert_true(g_str_has_prefix(text, "Signature: "
				       "8a477f597d28d172789f06886806bc55"));
	again = cfs_store_new(e.dir, 0, 0, &error);
	g_assert_null(again);
	g_assert_error(error, CFS_ERROR, EBUSY);
	g_assert_nonnull(strstr(error->message, "another cloudfs"));
	cfs_store_free(store);
	store = store_open(e.dir, 0);	/* free again once closed */
	cfs_store_free(store);
	env_clear(&e);
}

/* A store that is over its limit removes only folders cloudfs made. */
static void test_foreign_kept(void)
{
	Env e;
	Fetcher f = { 0 };
	CfsStore *store;
	CfsCache *cache;
	g_autofree char *other = NULL, *inside = NULL, *old = NULL;

	env_init(&e, 16 * CHUNK);
	store = store_open(e.dir, 0);
	cache = cache_open(store, "old", &e, &f);
	for (guint i = 0; i < 16; i++)
		read_check(cache, i * CHUNK, CHUNK);
	old = export_dir(e.dir);
	cfs_cache_close(cache);
	cfs_store_free(store);
	/* Someone put a folder of their own there. */
	other = g_build_filename(e.dir, "someone-else", NULL);
	g_assert_cmpint(g_mkdir(other, 0700), ==, 0);
	inside = g_build_filename(other, "data", NULL);
	g_assert_true(g_file_set_contents(inside, "precious", -1, NULL));

	store = store_open(e.dir, 4 * CHUNK);
	cache = cache_open(store, "new", &e, &f);
	for (guint i = 0; i < 8; i++)
		read_check(cache, i * CHUNK, CHUNK);
	cfs_cache_close(cache);
	cfs_store_free(store);
	g_assert_false(g_file_test(old, G_FILE_TEST_EXISTS));
	g_assert_true(g_file_test(inside, G_FILE_TEST_EXISTS));
	env_clear(&e);
}

/* Symlinks planted in the cache are never written through. */
static void test_symlinks(void)
{
	Env e;
	Fetcher f = { 0 };
	CfsStore *store;
	CfsCache *cache;
	g_autofree char *dir = NULL, *data = NULL, *bitmap = NULL;
	g_autofree char *victim = NULL, *text = NULL;
	CfsCacheStats st;

	env_init(&e, 4 * CHUNK);
	victim = g_build_filename(e.tmp, "victim", NULL);
	g_assert_true(g_file_set_contents(victim, "untouched", -1, NULL));
	store = store_open(e.dir, 0);
	cache = cache_open(store, "key", &e, &f);
	read_check(cache, 0, CHUNK);
	cfs_cache_close(cache);
	dir = export_dir(e.dir);
	data = g_build_filename(dir, "data", NULL);
	bitmap = g_build_filename(dir, "bitmap", NULL);
	g_assert_cmpint(g_unlink(data), ==, 0);
	g_assert_cmpint(symlink(victim, data), ==, 0);
	g_assert_cmpint(g_unlink(bitmap), ==, 0);
	g_assert_cmpint(symlink(victim, bitmap), ==, 0);

	cache = cache_open(store, "key", &e, &f);
	cfs_cache_stats(cache, &st);
	g_assert_cmpuint(st.present, ==, 0);	/* started over */
	read_check(cache, 0, 4 * CHUNK);
	cfs_cache_close(cache);
	g_assert_true(g_file_get_contents(victim, &text, NULL, NULL));
	g_assert_cmpstr(text, ==, "untouched");

	/* The export folder itself a symlink: refused. */
	rm_rf(dir);
	g_assert_cmpint(symlink(e.tmp, dir), ==, 0);
	{
		g_autoptr(GError) error = NULL;

		g_assert_null(cfs_cache_open(store, "key", "disk", e.map, CHUNK,
					     4, fetcher_fetch, &f, &error));
		g_assert_nonnull(error);
	}
	cfs_store_free(store);
	g_assert_true(g_file_test(victim, G_FILE_TEST_EXISTS));
	env_clear(&e);
}

/* A data file or bitmap of the wrong length starts that export over. */
static void test_lengths(void)
{
	static const char *const files[] = { "data", "bitmap" };
	Env e;
	Fetcher f = { 0 };
	CfsStore *store;
	CfsCacheStats st;

	env_init(&e, 40 * CHUNK);
	store = store_open(e.dir, 0);
	for (guint i = 0; i < G_N_ELEMENTS(files); i++) {
		g_autofree char *dir = NULL, *path = NULL;
		CfsCache *cache = cache_open(store, "key", &e, &f);

		read_check(cache, 0, 40 * CHUNK);
		cfs_cache_close(cache);
		dir = export_dir(e.dir);
		path = g_build_filename(dir, files[i], NULL);
		g_assert_cmpint(truncate(path, 2), ==, 0);
		g_atomic_int_set(&f.fetches, 0);
		cache = cache_open(store, "key", &e, &f);
		cfs_cache_stats(cache, &st);
		g_assert_cmpuint(st.present, ==, 0);
		read_check(cache, 0, 40 * CHUNK);
		g_assert_cmpint(g_atomic_int_get(&f.fetches), ==, 40);
		cfs_cache_close(cache);
	}
	cfs_store_free(store);
	env_clear(&e);
}

/* --- power loss --- */

typedef struct {
	CfsCache *cache;
	guint64 n;
	gint stop;	/* atomic */
} Copier;

/* A reader copying the disk in a random order, as cp would in pieces. */
static gpointer copier_run(gpointer data)
{
	Copier *c = data;
	g_autoptr(GRand) rand = g_rand_new_with_seed(7);
	guint64 *order = g_new(guint64, c->n);

	for (guint64 i = 0; i < c->n; i++)
		order[i] = i;
	for (guint64 i = c->n - 1; i > 0; i--) {
		guint64 j = g_rand_int_range(rand, 0, (gint32)i + 1), t;

		t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
	for (guint64 i = 0; i < c->n; i++) {
		read_check(c->cache, order[i] * CHUNK, CHUNK);
		if (i % 8 == 0)
			g_usleep(500);
	}
	g_free(order);
	g_atomic_int_set(&c->stop, 1);
	return NULL;
}

static gpointer syncer_run(gpointer data)
{
	Copier *c = data;

	while (!g_atomic_int_get(&c->stop)) {
		g_assert_true(cfs_cache_sync(c->cache, NULL));
		g_usleep(3000);
	}
	return NULL;
}

static void copy_file(const char *from, const char *to)
{
	g_autofree char *text = NULL;
	gsize len;

	g_assert_true(g_file_get_contents(from, &text, &len, NULL));
	g_assert_true(g_file_set_contents_full(to, text, len,
					       G_FILE_SET_CONTENTS_NONE, 0600,
					       NULL));
}

/* What a power loss at this moment would leave: the bitmap as it is (its
 * pages may have been written back at any time), the data as of its last
 * sync. Remount a store on it: every byte read must be right. */
static guint crash_and_check(Env *e, const char *live, guint round)
{
	g_autofree char *root = g_strdup_printf("%s/crash%u", e->tmp, round);
	g_autofree char *name = g_path_get_basename(live);
	g_autofree char *dir = g_build_filename(root, name, NULL);
	g_autofree char *from = NULL, *to = NULL;
	g_autoptr(GBytes) synced = NULL;
	Fetcher f = { 0 };
	CfsStore *store;
	CfsCache *cache;
	CfsCacheStats st;

	g_assert_cmpint(g_mkdir_with_parents(dir, 0700), ==, 0);
	g_mutex_lock(&synced_lock);
	synced = synced_data ? g_bytes_ref(synced_data) : NULL;
	g_mutex_unlock(&synced_lock);
	/* The bitmaps after the data: they may only say less than newer
	 * ones. The machine restarted: the boot differs. */
	for (guint i = 0; i < 2; i++) {
		const char *file = i ? "bitmap" : "durable";

		from = g_build_filename(live, file, NULL);
		to = g_build_filename(dir, file, NULL);
		copy_file(from, to);
		g_free(from);
		g_free(to);
	}
	to = g_build_filename(dir, "boot", NULL);
	g_assert_true(g_file_set_contents(to, "another boot", -1, NULL));
	g_free(to);
	from = g_build_filename(live, "meta", NULL);
	to = g_build_filename(dir, "meta", NULL);
	copy_file(from, to);
	g_free(to);
	to = g_build_filename(dir, "data", NULL);
	{
		int fd = open(to, O_WRONLY | O_CREAT | O_EXCL, 0600);

		g_assert_cmpint(fd, >=, 0);
		g_assert_cmpint(ftruncate(fd, e->map->size), ==, 0);
		if (synced)
			g_assert_cmpint(pwrite(fd, g_bytes_get_data(synced, NULL),
					       g_bytes_get_size(synced), 0), ==,
					(gssize)g_bytes_get_size(synced));
		close(fd);
	}
	store = store_open(root, 0);
	cache = cache_open(store, "key", e, &f);
	cfs_cache_stats(cache, &st);
	read_check(cache, 0, e->map->size);
	cfs_cache_close(cache);
	cfs_store_free(store);
	rm_rf(root);
	return (guint)(st.present / CHUNK);
}

static void test_power_loss(void)
{
	const guint64 n = 256;
	Env e;
	Fetcher f = { 0 };
	Copier c = { 0 };
	CfsStore *store;
	GThread *copier, *syncer;
	g_autoptr(GRand) rand = g_rand_new_with_seed(11);
	g_autofree char *live = NULL;
	guint round = 0, resumed = 0;

	env_init(&e, n * CHUNK);
	g_mutex_lock(&synced_lock);
	g_clear_pointer(&synced_data, g_bytes_unref);
	g_mutex_unlock(&synced_lock);
	g_atomic_int_set(&wrap_on, 1);
	store = store_open(e.dir, 0);
	c.cache = cache_open(store, "key", &e, &f);
	c.n = n;
	live = export_dir(e.dir);
	copier = g_thread_new("copier", copier_run, &c);
	syncer = g_thread_new("syncer", syncer_run, &c);
	while (!g_atomic_int_get(&c.stop)) {
		g_usleep(g_rand_int_range(rand, 1000, 20000));
		resumed = MAX(resumed, crash_and_check(&e, live, round++));
	}
	g_thread_join(copier);
	g_thread_join(syncer);
	cfs_cache_close(c.cache);
	resumed = MAX(resumed, crash_and_check(&e, live, round++));
	g_test_message("%u crashes, up to %u chunks resumed", round, resumed);
	g_assert_cmpuint(resumed, ==, n);	/* all of it, once closed */
	g_atomic_int_set(&wrap_on, 0);
	cfs_store_free(store);
	env_clear(&e);
}

/* --- eviction while caches close and open again --- */

typedef struct {
	Env *e;
	CfsStore *store;
	gint stop;	/* atomic */
	guint id;
} Churn;

static gpointer churn_run(gpointer data)
{
	Churn *ch = data;
	g_autofree char *key = g_strdup_printf("key %u", ch->id);
	guint64 n = ch->e->map->size / CHUNK;
	guint round = 0;

	while (!g_atomic_int_get(&ch->stop)) {
		Fetcher f = { 0 };
		CfsCache *cache = cache_open(ch->store, key, ch->e, &f);

		for (guint64 i = 0; i < n; i += 1 + round % 3)
			read_check(cache, i * CHUNK, CHUNK);
		cfs_cache_close(cache);
		round++;
	}
	return NULL;
}

static void test_evict_close_race(void)
{
	Env e;
	Churn ch[4];
	GThread *threads[G_N_ELEMENTS(ch)];
	CfsStore *store;

	env_init(&e, 12 * CHUNK);
	store = store_open(e.dir, 3 * CHUNK);
	for (guint i = 0; i < G_N_ELEMENTS(ch); i++) {
		ch[i] = (Churn){ .e = &e, .store = store, .id = i };
		threads[i] = g_thread_new("churn", churn_run, &ch[i]);
	}
	g_usleep(1500 * 1000);
	for (guint i = 0; i < G_N_ELEMENTS(ch); i++)
		g_atomic_int_set(&ch[i].stop, 1);
	for (guint i = 0; i < G_N_ELEMENTS(ch); i++)
		g_thread_join(threads[i]);
	cfs_store_free(store);
	env_clear(&e);
}

/* --- an interrupt that cancels a hold while it is being acquired --- */

static void noop_fetch(gpointer owner, guint64 idx, bool demand)
{
	/* never completes: every hold waits until cancelled */
}

static void wake_never(CfsCacheHold *hold, gpointer data, const GError *error)
{
	g_assert_not_reached();
}

typedef struct {
	CfsCacheHold *hold;	/* atomic: published by acquire */
	gint stop;		/* atomic */
	guint cancelled;
} Race;

/* Cancel and release every hold as soon as it is published, as FUSE's
 * interrupt handler does from its own thread. */
static gpointer canceller_run(gpointer data)
{
	Race *r = data;

	while (!g_atomic_int_get(&r->stop)) {
		CfsCacheHold *h = g_atomic_pointer_get(&r->hold);

		if (h && g_atomic_pointer_compare_and_exchange(&r->hold, h,
							       NULL)) {
			g_assert_true(cfs_cache_cancel(h));
			cfs_cache_release(h);
			r->cancelled++;
		}
	}
	return NULL;
}

static void test_cancel_during_acquire(void)
{
	Env e;
	Race r = { 0 };
	CfsStore *store;
	CfsCache *cache;
	GThread *thread;
	guint mine = 0;

	env_init(&e, 64 * CHUNK);
	store = store_open(e.dir, 0);
	cache = cfs_cache_open(store, "key", "disk", e.map, CHUNK, 4,
			       noop_fetch, NULL, NULL);
	g_assert_nonnull(cache);
	thread = g_thread_new("canceller", canceller_run, &r);
	for (guint i = 0; i < 20000; i++) {
		/* Many chunks, so that registering takes a while. */
		CfsExtent range = { (i % 8) * CHUNK, 48 * CHUNK };
		CfsCacheHold *h;

		while (g_atomic_pointer_get(&r.hold))
			;	/* the canceller has not taken the last one */
		g_assert_false(cfs_cache_acquire(cache, &range, 1, wake_never,
						 NULL, &r.hold));
		h = g_atomic_pointer_get(&r.hold);
		if (h && g_atomic_pointer_compare_and_exchange(&r.hold, h,
							       NULL)) {
			g_assert_true(cfs_cache_cancel(h));
			cfs_cache_release(h);
			mine++;
		}
	}
	while (g_atomic_pointer_get(&r.hold))
		;
	g_atomic_int_set(&r.stop, 1);
	g_thread_join(thread);
	g_test_message("%u cancelled by the other thread, %u here",
		       r.cancelled, mine);
	cfs_cache_close(cache);
	cfs_store_free(store);
	env_clear(&e);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/store/unsafe-folders", test_unsafe_folders);
	g_test_add_func("/store/tag-and-lock", test_tag_and_lock);
	g_test_add_func("/store/foreign-kept", test_foreign_kept);
	g_test_add_func("/store/symlinks", test_symlinks);
	g_test_add_func("/store/lengths", test_lengths);
	g_test_add_func("/store/power-loss", test_power_loss);
	g_test_add_func("/store/evict-close-race", test_evict_close_race);
	g_test_add_func("/store/cancel-during-acquire",
			test_cancel_during_acquire);
	return g_test_run();
}
