// SPDX-License-Identifier: MIT
/*
 * Unit tests of the chunk cache with a fake fetcher: hits, misses and
 * wake-ups, single flight, errors, cancel, the `parallel` cap, prefetch,
 * persistence across reopen, file modes, eviction and peek. The fetcher
 * fills chunks at once, when the test says so, or from a worker thread.
 */
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

typedef enum {
	FILL_SYNC,	/* inside the fetch call */
	FILL_MANUAL,	/* when the test calls fetcher_complete() */
	FILL_THREAD,	/* from a worker thread */
} FillMode;

typedef struct {
	CfsCache *cache;
	CfsExtentMap *map;
	FillMode mode;
	GMutex lock;
	GArray *fetched;	/* protected by lock: guint64, call order */
	GArray *demand;		/* protected by lock: gboolean per call */
	GArray *pending;	/* protected by lock: MANUAL, not done yet */
	GAsyncQueue *queue;	/* THREAD: idx + 1; STOP ends the worker */
	GThread *thread;
} Fetcher;

#define STOP GSIZE_TO_POINTER(G_MAXSIZE)

/* The disk's bytes: a function of the offset in data, zeros in holes. */
static guint8 disk_byte(const CfsExtentMap *map, guint64 off)
{
	if (!cfs_extent_map_any_data(map, off, 1))
		return 0;
	return (guint8)((off * 0x9E3779B97F4A7C15ull) >> 56 ^ off >> 12);
}

static void fetcher_fill(Fetcher *f, guint64 idx, const GError *fail)
{
	guint64 cs = cfs_cache_chunk_size(f->cache);
	guint64 off = idx * cs, len = MIN(cs, f->map->size - off);
	g_autofree guint8 *buf = g_malloc(len);
	g_autoptr(GError) error = NULL;

	g_assert_cmpuint(off, <, f->map->size);
	g_assert_true(cfs_cache_claimed(f->cache, idx));
	if (!fail) {
		for (guint64 i = 0; i < len; i++)
			buf[i] = disk_byte(f->map, off + i);
		g_assert_true(cfs_cache_write(f->cache, off, buf, len, &error));
		g_assert_no_error(error);
	}
	cfs_cache_chunk_done(f->cache, idx, fail);
}

static gpointer fetcher_worker(gpointer data)
{
	Fetcher *f = data;
	gpointer item;

	while ((item = g_async_queue_pop(f->queue)) != STOP)
		fetcher_fill(f, GPOINTER_TO_SIZE(item) - 1, NULL);
	return NULL;
}

/* CfsCacheFetchFn: called without locks, so taking the cache lock here
 * (cfs_cache_claimed) must not deadlock. */
static void fetcher_fetch(gpointer owner, guint64 idx, bool demand)
{
	Fetcher *f = owner;
	gboolean d = demand;

	g_assert_true(cfs_cache_claimed(f->cache, idx));
	g_mutex_lock(&f->lock);
	g_array_append_val(f->fetched, idx);
	g_array_append_val(f->demand, d);
	if (f->mode == FILL_MANUAL)
		g_array_append_val(f->pending, idx);
	g_mutex_unlock(&f->lock);
	if (f->mode == FILL_SYNC)
		fetcher_fill(f, idx, NULL);
	else if (f->mode == FILL_THREAD)
		g_async_queue_push(f->queue, GSIZE_TO_POINTER(idx + 1));
}

static Fetcher *fetcher_new(CfsExtentMap *map, FillMode mode)
{
	Fetcher *f = g_new0(Fetcher, 1);

	f->map = cfs_extent_map_ref(map);
	f->mode = mode;
	g_mutex_init(&f->lock);
	f->fetched = g_array_new(FALSE, FALSE, sizeof(guint64));
	f->demand = g_array_new(FALSE, FALSE, sizeof(gboolean));
	f->pending = g_array_new(FALSE, FALSE, sizeof(guint64));
	f->queue = g_async_queue_new();
	return f;
}

/* Start the worker once the cache is open. */
static void fetcher_start(Fetcher *f, CfsCache *cache)
{
	f->cache = cache;
	if (f->mode == FILL_THREAD && !f->thread)
		f->thread = g_thread_new("fetcher", fetcher_worker, f);
}

static void fetcher_stop(Fetcher *f)
{
	if (f->thread) {
		g_async_queue_push(f->queue, STOP);
		g_thread_join(f->thread);
		f->thread = NULL;
	}
	f->cache = NULL;
}

static void fetcher_free(Fetcher *f)
{
	fetcher_stop(f);
	g_assert_cmpuint(f->pending->len, ==, 0);
	cfs_extent_map_unref(f->map);
	g_array_unref(f->fetched);
	g_array_unref(f->demand);
	g_array_unref(f->pending);
	g_async_queue_unref(f->queue);
	g_mutex_clear(&f->lock);
	g_free(f);
}

static guint fetcher_count(Fetcher *f)
{
	guint n;

	g_mutex_lock(&f->lock);
	n = f->fetched->len;
	g_mutex_unlock(&f->lock);
	return n;
}

/* Times chunk @idx was fetched. */
static guint fetcher_times(Fetcher *f, guint64 idx)
{
	guint n = 0;

	g_mutex_lock(&f->lock);
	for (guint i = 0; i < f->fetched->len; i++)
		n += g_array_index(f->fetched, guint64, i) == idx;
	g_mutex_unlock(&f->lock);
	return n;
}

static guint64 fetcher_nth(Fetcher *f, guint i)
{
	guint64 idx;

	g_mutex_lock(&f->lock);
	g_assert_cmpuint(i, <, f->fetched->len);
	idx = g_array_index(f->fetched, guint64, i);
	g_mutex_unlock(&f->lock);
	return idx;
}

static bool fetcher_nth_demand(Fetcher *f, guint i)
{
	gboolean d;

	g_mutex_lock(&f->lock);
	g_assert_cmpuint(i, <, f->demand->len);
	d = g_array_index(f->demand, gboolean, i);
	g_mutex_unlock(&f->lock);
	return d;
}

static guint fetcher_pending(Fetcher *f)
{
	guint n;

	g_mutex_lock(&f->lock);
	n = f->pending->len;
	g_mutex_unlock(&f->lock);
	return n;
}

/* MANUAL: finish chunk @idx (it must be pending), or fail it. */
static void fetcher_complete(Fetcher *f, guint64 idx, const GError *fail)
{
	bool found = false;

	g_mutex_lock(&f->lock);
	for (guint i = 0; i < f->pending->len && !found; i++) {
		if (g_array_index(f->pending, guint64, i) == idx) {
			g_array_remove_index(f->pending, i);
			found = true;
		}
	}
	g_mutex_unlock(&f->lock);
	g_assert_true(found);
	fetcher_fill(f, idx, fail);
}

/* MANUAL: finish every pending chunk, and those their completion starts. */
static void fetcher_complete_all(Fetcher *f)
{
	guint64 idx;

	while (fetcher_pending(f) > 0) {
		g_mutex_lock(&f->lock);
		idx = g_array_index(f->pending, guint64, 0);
		g_mutex_unlock(&f->lock);
		fetcher_complete(f, idx, NULL);
	}
}

/* --- readers --- */

typedef struct {
	GMutex lock;
	GCond cond;
	guint calls;		/* protected by lock */
	GError *error;		/* protected by lock: of the last call */
	CfsCacheHold *hold;	/* set by acquire, atomically */
	CfsCache *cache;
} Waiter;

static void waiter_wake(CfsCacheHold *hold, gpointer data,
			const GError *error)
{
	Waiter *w = data;

	/* @hold_out is set before any chunk can land. */
	g_assert_true(g_atomic_pointer_get(&w->hold) == hold);
	/* No cache lock is held: this takes it. */
	cfs_cache_inflight(w->cache);
	g_mutex_lock(&w->lock);
	w->calls++;
	g_clear_error(&w->error);
	if (error)
		w->error = g_error_copy(error);
	g_cond_broadcast(&w->cond);
	g_mutex_unlock(&w->lock);
}

static void waiter_init(Waiter *w, CfsCache *cache)
{
	memset(w, 0, sizeof(*w));
	g_mutex_init(&w->lock);
	g_cond_init(&w->cond);
	w->cache = cache;
}

static void waiter_clear(Waiter *w)
{
	g_clear_error(&w->error);
	g_mutex_clear(&w->lock);
	g_cond_clear(&w->cond);
}

static guint waiter_calls(Waiter *w)
{
	guint n;

	g_mutex_lock(&w->lock);
	n = w->calls;
	g_mutex_unlock(&w->lock);
	return n;
}

/* Wait (a few seconds at most) until @w was woken @n times. */
static void waiter_wait(Waiter *w, guint n)
{
	gint64 deadline = g_get_monotonic_time() + 10 * G_TIME_SPAN_SECOND;

	g_mutex_lock(&w->lock);
	while (w->calls < n &&
	       g_cond_wait_until(&w->cond, &w->lock, deadline))
		;
	g_assert_cmpuint(w->calls, ==, n);
	g_mutex_unlock(&w->lock);
}

static bool acquire(CfsCache *cache, guint64 off, guint64 len, Waiter *w)
{
	CfsExtent r = { off, len };

	return cfs_cache_acquire(cache, &r, 1, waiter_wake, w, &w->hold);
}

static void release(Waiter *w)
{
	cfs_cache_release(w->hold);
	w->hold = NULL;
}

/* --- the test disk and store --- */

/*
 * 16 chunks of 64 KiB, the last one short. Data: chunks 0-3, a few bytes
 * in chunk 6, chunks 8-15. Holes: chunks 4, 5 and 7.
 */
#define DISK_SIZE (16 * CHUNK - 5000)
static const CfsExtent disk_ext[] = {
	{ 0, 4 * CHUNK },
	{ 6 * CHUNK + 1000, 2000 },
	{ 8 * CHUNK, DISK_SIZE - 8 * CHUNK },
};
static const guint64 hole_chunks[] = { 4, 5, 7 };

static bool is_hole_chunk(guint64 idx)
{
	for (guint i = 0; i < G_N_ELEMENTS(hole_chunks); i++)
		if (hole_chunks[i] == idx)
			return true;
	return false;
}

static guint64 chunk_len(guint64 size, guint64 idx)
{
	return MIN(CHUNK, size - idx * CHUNK);
}

typedef struct {
	char *tmp;
	char *store_dir;
	CfsStore *store;
	CfsExtentMap *map;
	Fetcher *f;
	CfsCache *cache;
} Env;

static void env_open_store(Env *e, guint64 limit)
{
	g_autoptr(GError) error = NULL;

	e->store = cfs_store_new(e->store_dir, limit, 0, &error);
	g_assert_no_error(error);
	g_assert_nonnull(e->store);
	g_assert_cmpuint(cfs_store_limit(e->store), ==, limit);
}

static void env_open_cache(Env *e, const char *key, guint64 chunk_size,
			   guint parallel, FillMode mode)
{
	g_autoptr(GError) error = NULL;

	e->f = fetcher_new(e->map, mode);
	e->cache = cfs_cache_open(e->store, key, "disk one.vhd", e->map,
				  chunk_size, parallel, fetcher_fetch, e->f,
				  &error);
	g_assert_no_error(error);
	g_assert_nonnull(e->cache);
	fetcher_start(e->f, e->cache);
}

static void env_close_cache(Env *e)
{
	CfsCacheStats st;

	fetcher_stop(e->f);
	cfs_cache_stats(e->cache, &st);
	g_assert_cmpuint(st.inflight, ==, 0);
	g_clear_pointer(&e->cache, cfs_cache_close);
	g_clear_pointer(&e->f, fetcher_free);
}

static void env_init(Env *e, guint64 size, const CfsExtent *ext, guint n,
		     guint64 limit)
{
	g_autoptr(GError) error = NULL;

	memset(e, 0, sizeof(*e));
	e->tmp = g_dir_make_tmp("cfs-cache-XXXXXX", &error);
	g_assert_no_error(error);
	e->store_dir = g_build_filename(e->tmp, "store", NULL);
	e->map = cfs_extent_map_new(size, ext, n);
	env_open_store(e, limit);
}

static void env_clear(Env *e)
{
	if (e->cache)
		env_close_cache(e);
	g_clear_pointer(&e->store, cfs_store_free);
	cfs_extent_map_unref(e->map);
	rm_rf(e->tmp);
	g_assert_false(g_file_test(e->tmp, G_FILE_TEST_EXISTS));
	g_free(e->store_dir);
	g_free(e->tmp);
}

/* The one cache folder in the store. */
static char *env_cache_dir(Env *e)
{
	g_autoptr(GDir) dir = g_dir_open(e->store_dir, 0, NULL);
	const char *name;
	char *found = NULL;

	g_assert_nonnull(dir);
	while ((name = g_dir_read_name(dir))) {
		if (g_str_equal(name, "CACHEDIR.TAG"))
			continue;
		g_assert_null(found);
		found = g_build_filename(e->store_dir, name, NULL);
	}
	g_assert_nonnull(found);
	return found;
}

/* Bytes allocated to the data files of every cache folder. */
static guint64 env_data_blocks(Env *e)
{
	g_autoptr(GDir) dir = g_dir_open(e->store_dir, 0, NULL);
	const char *name;
	guint64 total = 0;

	while (dir && (name = g_dir_read_name(dir))) {
		g_autofree char *data = g_build_filename(e->store_dir, name,
							 "data", NULL);
		struct stat st;

		if (stat(data, &st) == 0)
			total += (guint64)st.st_blocks * 512;
	}
	return total;
}

/* Acquire a range, wait for it (finishing MANUAL fetches), check its
 * bytes, release. */
static void read_and_check(Env *e, guint64 off, guint64 len)
{
	CfsCache *cache = e->cache;
	const CfsExtentMap *map = e->map;
	g_autofree guint8 *buf = g_malloc(len);
	g_autoptr(GError) error = NULL;
	Waiter w;

	waiter_init(&w, cache);
	if (!acquire(cache, off, len, &w)) {
		if (e->f->mode == FILL_MANUAL)
			fetcher_complete_all(e->f);
		waiter_wait(&w, 1);
	}
	g_assert_null(w.error);
	g_assert_true(cfs_cache_pread(cache, buf, len, off, &error));
	g_assert_no_error(error);
	for (guint64 i = 0; i < len; i++)
		if (buf[i] != disk_byte(map, off + i))
			g_error("byte %" G_GUINT64_FORMAT " is %u, not %u",
				off + i, buf[i], disk_byte(map, off + i));
	release(&w);
	waiter_clear(&w);
}

/* --- tests --- */

static void test_open(void)
{
	Env e;
	CfsCacheStats st;
	guint64 total = 0;

	env_init(&e, DISK_SIZE, disk_ext, G_N_ELEMENTS(disk_ext), 0);
	env_open_cache(&e, "key", CHUNK, 4, FILL_MANUAL);
	g_assert_cmpuint(cfs_cache_chunk_size(e.cache), ==, CHUNK);
	g_assert_cmpuint(cfs_cache_n_chunks(e.cache), ==, 16);
	for (guint64 i = 0; i < 16; i++)
		if (!is_hole_chunk(i))
			total += chunk_len(DISK_SIZE, i);
	cfs_cache_stats(e.cache, &st);
	g_assert_cmpuint(st.total, ==, total);
	g_assert_cmpuint(st.present, ==, 0);
	g_assert_cmpuint(st.inflight, ==, 0);
	g_assert_cmpint(st.readers, ==, 0);
	g_assert_cmpuint(cfs_cache_inflight(e.cache), ==, 0);
	env_clear(&e);
}

/* Hole chunks are present from the start and read as zeros. */
static void test_holes(void)
{
	Env e;
	Waiter w;
	CfsExtent r[] = { { 4 * CHUNK, 2 * CHUNK }, { 7 * CHUNK + 5, 100 },
			  { DISK_SIZE, 100 }, { 5 * CHUNK, 0 } };
	g_autofree guint8 *buf = g_malloc(2 * CHUNK);
	g_autoptr(GError) error = NULL;

	env_init(&e, DISK_SIZE, disk_ext, G_N_ELEMENTS(disk_ext), 0);
	env_open_cache(&e, "key", CHUNK, 4, FILL_MANUAL);
	waiter_init(&w, e.cache);
	g_assert_true(cfs_cache_acquire(e.cache, r, G_N_ELEMENTS(r),
					waiter_wake, &w, &w.hold));
	g_assert_nonnull(w.hold);
	g_assert_cmpuint(fetcher_count(e.f), ==, 0);
	g_assert_true(cfs_cache_pread(e.cache, buf, 2 * CHUNK, 4 * CHUNK,
				      &error));
	g_assert_no_error(error);
	for (guint i = 0; i < 2 * CHUNK; i++)
		g_assert_cmpuint(buf[i], ==, 0);
	/* Nothing to cancel: the hold never waited. */
	g_assert_false(cfs_cache_cancel(w.hold));
	release(&w);
	g_assert_cmpuint(waiter_calls(&w), ==, 0);

	/* No ranges at all: ready. */
	g_assert_true(cfs_cache_acquire(e.cache, NULL, 0, waiter_wake, &w,
					&w.hold));
	release(&w);

	/* A whole-disk read fetches the data chunks only, once each. */
	g_assert_false(acquire(e.cache, 0, DISK_SIZE, &w));
	fetcher_complete_all(e.f);
	waiter_wait(&w, 1);
	g_assert_null(w.error);
	release(&w);
	g_assert_cmpuint(fetcher_count(e.f), ==, 16 - 3);
	for (guint64 i = 0; i < 16; i++)
		g_assert_cmpuint(fetcher_times(e.f, i), ==,
				 is_hole_chunk(i) ? 0 : 1);
	read_and_check(&e, 0, DISK_SIZE);
	g_assert_cmpuint(fetcher_count(e.f), ==, 16 - 3);
	waiter_clear(&w);
	env_clear(&e);
}

static void test_miss(void)
{
	Env e;
	Waiter w;
	CfsCacheStats st;

	env_init(&e, DISK_SIZE, disk_ext, G_N_ELEMENTS(disk_ext), 0);
	env_open_cache(&e, "key", CHUNK, 4, FILL_MANUAL);
	waiter_init(&w, e.cache);

	g_assert_false(acquire(e.cache, CHUNK + 10, 100, &w));
	g_assert_nonnull(w.hold);
	g_assert_cmpuint(fetcher_count(e.f), ==, 1);
	g_assert_cmpuint(fetcher_nth(e.f, 0), ==, 1);
	g_assert_true(fetcher_nth_demand(e.f, 0));
	g_assert_true(cfs_cache_claimed(e.cache, 1));
	g_assert_cmpuint(cfs_cache_inflight(e.cache), ==, 1);
	g_assert_cmpuint(waiter_calls(&w), ==, 0);
	fetcher_complete(e.f, 1, NULL);
	g_assert_cmpuint(waiter_calls(&w), ==, 1);
	g_assert_null(w.error);
	g_assert_false(cfs_cache_claimed(e.cache, 1));
	/* Woken: too late to cancel. */
	g_assert_false(cfs_cache_cancel(w.hold));
	release(&w);
	read_and_check(&e, CHUNK, CHUNK);
	g_assert_cmpuint(fetcher_count(e.f), ==, 1);
	cfs_cache_stats(e.cache, &st);
	g_assert_cmpuint(st.present, ==, CHUNK);
	g_assert_cmpuint(st.inflight, ==, 0);

	/* Chunks 3 to 6: 4 and 5 are holes; woken once, after both of 3
	 * and 6 landed. */
	w.calls = 0;
	g_assert_false(acquire(e.cache, 3 * CHUNK + 1, 3 * CHUNK + 1100, &w));
	g_assert_cmpuint(fetcher_count(e.f), ==, 3);
	g_assert_cmpuint(fetcher_times(e.f, 3), ==, 1);
	g_assert_cmpuint(fetcher_times(e.f, 6), ==, 1);
	fetcher_complete(e.f, 6, NULL);
	g_assert_cmpuint(waiter_calls(&w), ==, 0);
	fetcher_complete(e.f, 3, NULL);
	g_assert_cmpuint(waiter_calls(&w), ==, 1);
	g_assert_null(w.error);
	release(&w);
	read_and_check(&e, 3 * CHUNK, 4 * CHUNK);
	g_assert_cmpuint(fetcher_count(e.f), ==, 3);
	waiter_clear(&w);
	env_clear(&e);
}

/* The fetcher fills the chunk before the fetch call returns, so the wake
 * may come before acquire returns. */
static void test_sync(void)
{
	Env e;
	Waiter w;

	env_init(&e, DISK_SIZE, disk_ext, G_N_ELEMENTS(disk_ext), 0);
	env_open_cache(&e, "key", CHUNK, 2, FILL_SYNC);
	waiter_init(&w, e.cache);
	if (acquire(e.cache, 0, 3 * CHUNK, &w))
		g_assert_cmpuint(waiter_calls(&w), ==, 0);
	else
		g_assert_cmpuint(waiter_calls(&w), ==, 1);
	g_assert_null(w.error);
	release(&w);
	g_assert_cmpuint(fetcher_count(e.f), ==, 3);
	read_and_check(&e, 0, DISK_SIZE);
	g_assert_cmpuint(fetcher_count(e.f), ==, 16 - 3);
	waiter_clear(&w);
	env_clear(&e);
}

/* Chunks land from another thread while readers acquire: each round a
 * new cache (a new key), eight readers over it at once. */
static void test_thread(void)
{
	Env e;
	Waiter w[8];

	env_init(&e, DISK_SIZE, disk_ext, G_N_ELEMENTS(disk_ext), 0);
	for (guint round = 0; round < 10; round++) {
		g_autofree char *key = g_strdup_printf("key %u", round);

		env_open_cache(&e, key, CHUNK, 3, FILL_THREAD);
		for (guint i = 0; i < G_N_ELEMENTS(w); i++) {
			guint64 off = (i * 5 + round * 3) % 16 * CHUNK +
				      i * 100;

			waiter_init(&w[i], e.cache);
			if (acquire(e.cache, off,
				    MIN(3 * CHUNK, DISK_SIZE - off), &w[i]))
				w[i].calls = 1;	/* no wake will come */
		}
		for (guint i = 0; i < G_N_ELEMENTS(w); i++) {
			waiter_wait(&w[i], 1);
			g_assert_null(w[i].error);
			release(&w[i]);
			waiter_clear(&w[i]);
		}
		read_and_check(&e, 0, DISK_SIZE);
		for (guint64 i = 0; i < 16; i++)
			g_assert_cmpuint(fetcher_times(e.f, i), ==,
					 is_hole_chunk(i) ? 0 : 1);
		env_close_cache(&e);
	}
	env_clear(&e);
}

static void test_single_flight(void)
{
	Env e;
	Waiter a, b, c;

	env_init(&e, DISK_SIZE, disk_ext, G_N_ELEMENTS(disk_ext), 0);
	env_open_cache(&e, "key", CHUNK, 4, FILL_MANUAL);
	waiter_init(&a, e.cache);
	waiter_init(&b, e.cache);
	waiter_init(&c, e.cache);
	g_assert_false(acquire(e.cache, 2 * CHUNK, 10, &a));
	g_assert_false(acquire(e.cache, 2 * CHUNK + 500, 10, &b));
	/* Chunk 2 again and chunk 3, new. */
	g_assert_false(acquire(e.cache, 2 * CHUNK + 900, CHUNK, &c));
	g_assert_cmpuint(fetcher_count(e.f), ==, 2);
	g_assert_cmpuint(fetcher_times(e.f, 2), ==, 1);
	g_assert_cmpuint(fetcher_times(e.f, 3), ==, 1);
	g_assert_cmpuint(cfs_cache_inflight(e.cache), ==, 2);

	fetcher_complete(e.f, 2, NULL);
	g_assert_cmpuint(waiter_calls(&a), ==, 1);
	g_assert_cmpuint(waiter_calls(&b), ==, 1);
	g_assert_cmpuint(waiter_calls(&c), ==, 0);
	fetcher_complete(e.f, 3, NULL);
	g_assert_cmpuint(waiter_calls(&a), ==, 1);
	g_assert_cmpuint(waiter_calls(&b), ==, 1);
	g_assert_cmpuint(waiter_calls(&c), ==, 1);
	release(&a);
	release(&b);
	release(&c);
	read_and_check(&e, 2 * CHUNK, 2 * CHUNK);
	g_assert_cmpuint(fetcher_count(e.f), ==, 2);
	waiter_clear(&a);
	waiter_clear(&b);
	waiter_clear(&c);
	env_clear(&e);
}

static void test_error(void)
{
	Env e;
	Waiter a, b;
	g_autoptr(GError) fail = g_error_new(CFS_ERROR, EIO, "HTTP 500");

	env_init(&e, DISK_SIZE, disk_ext, G_N_ELEMENTS(disk_ext), 0);
	env_open_cache(&e, "key", CHUNK, 4, FILL_MANUAL);
	waiter_init(&a, e.cache);
	waiter_init(&b, e.cache);

	/* Both waiters of a failed chunk get the error. */
	g_assert_false(acquire(e.cache, 2 * CHUNK, 10, &a));
	g_assert_false(acquire(e.cache, 2 * CHUNK + 10, 10, &b));
	fetcher_complete(e.f, 2, fail);
	g_assert_cmpuint(waiter_calls(&a), ==, 1);
	g_assert_cmpuint(waiter_calls(&b), ==, 1);
	g_assert_error(a.error, CFS_ERROR, EIO);
	g_assert_error(b.error, CFS_ERROR, EIO);
	g_assert_cmpstr(a.error->message, ==, "HTTP 500");
	g_assert_cmpuint(cfs_cache_inflight(e.cache), ==, 0);
	g_assert_false(cfs_cache_claimed(e.cache, 2));
	release(&a);
	release(&b);

	/* The next acquire fetches it again. */
	a.calls = 0;
	g_clear_error(&a.error);
	g_assert_false(acquire(e.cache, 2 * CHUNK, 10, &a));
	g_assert_cmpuint(fetcher_times(e.f, 2), ==, 2);
	fetcher_complete(e.f, 2, NULL);
	g_assert_cmpuint(waiter_calls(&a), ==, 1);
	g_assert_null(a.error);
	release(&a);
	read_and_check(&e, 2 * CHUNK, CHUNK);

	/* A hold on two chunks: the first failure wakes it, once; the
	 * other chunk still lands for the next reader. */
	a.calls = 0;
	g_assert_false(acquire(e.cache, 8 * CHUNK, 2 * CHUNK, &a));
	fetcher_complete(e.f, 9, fail);
	g_assert_cmpuint(waiter_calls(&a), ==, 1);
	g_assert_error(a.error, CFS_ERROR, EIO);
	fetcher_complete(e.f, 8, NULL);
	g_assert_cmpuint(waiter_calls(&a), ==, 1);
	release(&a);
	read_and_check(&e, 8 * CHUNK, 2 * CHUNK);
	g_assert_cmpuint(fetcher_times(e.f, 8), ==, 1);
	g_assert_cmpuint(fetcher_times(e.f, 9), ==, 2);
	waiter_clear(&a);
	waiter_clear(&b);
	env_clear(&e);
}

static void test_cancel(void)
{
	Env e;
	Waiter a, b;

	env_init(&e, DISK_SIZE, disk_ext, G_N_ELEMENTS(disk_ext), 0);
	env_open_cache(&e, "key", CHUNK, 4, FILL_MANUAL);
	waiter_init(&a, e.cache);
	waiter_init(&b, e.cache);

	g_assert_false(acquire(e.cache, 0, 10, &a));
	g_assert_false(acquire(e.cache, 5, 10, &b));
	g_assert_true(cfs_cache_cancel(a.hold));
	g_assert_false(cfs_cache_cancel(a.hold));	/* once */
	fetcher_complete(e.f, 0, NULL);
	g_assert_cmpuint(waiter_calls(&a), ==, 0);
	g_assert_cmpuint(waiter_calls(&b), ==, 1);
	release(&a);
	release(&b);

	/* Cancelled before a failure: no wake with the error either. */
	g_assert_false(acquire(e.cache, CHUNK, 10, &a));
	g_assert_true(cfs_cache_cancel(a.hold));
	release(&a);
	{
		g_autoptr(GError) fail = g_error_new(CFS_ERROR, EIO, "cut");

		fetcher_complete(e.f, 1, fail);
	}
	g_assert_cmpuint(waiter_calls(&a), ==, 0);
	g_assert_cmpuint(cfs_cache_inflight(e.cache), ==, 0);
	read_and_check(&e, 0, 2 * CHUNK);
	waiter_clear(&a);
	waiter_clear(&b);
	env_clear(&e);
}

/* At most `parallel` fetches run; the others start as chunks land. */
static void test_parallel(void)
{
	static const guint64 chunks[] = { 0, 2, 8, 10, 12 };
	Env e;
	Waiter w[G_N_ELEMENTS(chunks)];

	env_init(&e, DISK_SIZE, disk_ext, G_N_ELEMENTS(disk_ext), 0);
	env_open_cache(&e, "key", CHUNK, 2, FILL_MANUAL);
	for (guint i = 0; i < G_N_ELEMENTS(chunks); i++) {
		waiter_init(&w[i], e.cache);
		g_assert_false(acquire(e.cache, chunks[i] * CHUNK + 3, 10,
				       &w[i]));
	}
	g_assert_cmpuint(fetcher_count(e.f), ==, 2);
	g_assert_cmpuint(cfs_cache_inflight(e.cache), ==, 5);
	for (guint done = 0; done < G_N_ELEMENTS(chunks); done++) {
		guint64 idx = fetcher_nth(e.f, done);

		g_assert_cmpuint(fetcher_count(e.f), ==,
				 MIN(done + 2, G_N_ELEMENTS(chunks)));
		g_assert_cmpuint(fetcher_pending(e.f), <=, 2);
		fetcher_complete(e.f, idx, NULL);
	}
	g_assert_cmpuint(fetcher_count(e.f), ==, G_N_ELEMENTS(chunks));
	for (guint i = 0; i < G_N_ELEMENTS(chunks); i++) {
		g_assert_cmpuint(fetcher_times(e.f, chunks[i]), ==, 1);
		g_assert_true(fetcher_nth_demand(e.f, i));
		g_assert_cmpuint(waiter_calls(&w[i]), ==, 1);
		g_assert_null(w[i].error);
		release(&w[i]);
		waiter_clear(&w[i]);
	}
	g_assert_cmpuint(cfs_cache_inflight(e.cache), ==, 0);
	env_clear(&e);
}

/* Two reads that span 256 KiB make a sequential reader: prefetch. */
static void test_prefetch(void)
{
	Env e;
	Waiter w;
	CfsCacheStats st;

	env_init(&e, 16 * CHUNK, NULL, 0, 0);
	cfs_extent_map_unref(e.map);
	e.map = cfs_extent_map_new_full(16 * CHUNK);
	env_open_cache(&e, "key", CHUNK, 2, FILL_MANUAL);
	waiter_init(&w, e.cache);
	cfs_cache_add_readers(e.cache, +1);
	cfs_cache_stats(e.cache, &st);
	g_assert_cmpint(st.readers, ==, 1);
	g_assert_cmpuint(fetcher_count(e.f), ==, 0);

	cfs_cache_note_read(e.cache, 8 * CHUNK, 2 * CHUNK);
	g_assert_cmpuint(fetcher_count(e.f), ==, 0);	/* one read */
	cfs_cache_note_read(e.cache, 10 * CHUNK, 2 * CHUNK);
	g_assert_cmpuint(fetcher_count(e.f), ==, 2);
	g_assert_cmpuint(fetcher_nth(e.f, 0), ==, 12);
	g_assert_cmpuint(fetcher_nth(e.f, 1), ==, 13);
	g_assert_false(fetcher_nth_demand(e.f, 0));
	g_assert_false(fetcher_nth_demand(e.f, 1));

	/* A reader of a chunk being prefetched waits for it. */
	g_assert_false(acquire(e.cache, 13 * CHUNK, 10, &w));
	g_assert_cmpuint(fetcher_count(e.f), ==, 2);

	/* A slot frees: the window goes on. */
	fetcher_complete(e.f, 12, NULL);
	g_assert_cmpuint(fetcher_count(e.f), ==, 3);
	g_assert_cmpuint(fetcher_nth(e.f, 2), ==, 14);
	g_assert_false(fetcher_nth_demand(e.f, 2));
	fetcher_complete(e.f, 13, NULL);
	g_assert_cmpuint(waiter_calls(&w), ==, 1);
	g_assert_null(w.error);
	release(&w);
	fetcher_complete_all(e.f);
	read_and_check(&e, 12 * CHUNK, 3 * CHUNK);
	g_assert_cmpuint(fetcher_times(e.f, 12), ==, 1);
	g_assert_cmpuint(fetcher_times(e.f, 13), ==, 1);
	g_assert_cmpuint(fetcher_times(e.f, 14), ==, 1);
	cfs_cache_add_readers(e.cache, -1);
	waiter_clear(&w);
	env_close_cache(&e);

	/* Random readers: one small read, a second one next to it, one
	 * big read far away; none is a sequential run of 256 KiB. */
	env_open_cache(&e, "other key", CHUNK, 2, FILL_MANUAL);
	cfs_cache_add_readers(e.cache, +1);
	cfs_cache_note_read(e.cache, 0, 4096);
	g_assert_cmpuint(fetcher_count(e.f), ==, 0);
	cfs_cache_note_read(e.cache, 4096, 4096);
	g_assert_cmpuint(fetcher_count(e.f), ==, 0);
	cfs_cache_note_read(e.cache, 12 * CHUNK, 3 * CHUNK);
	g_assert_cmpuint(fetcher_count(e.f), ==, 0);
	/* Nobody has the export open: a sequential run fetches nothing. */
	cfs_cache_add_readers(e.cache, -1);
	cfs_cache_note_read(e.cache, 0, 2 * CHUNK);
	cfs_cache_note_read(e.cache, 2 * CHUNK, 2 * CHUNK);
	g_assert_cmpuint(fetcher_count(e.f), ==, 0);
	env_clear(&e);
}

/* The whole-disk fill of a sparse disk: once every data chunk is in,
 * more reads do not scan the chunk list again (a 2 TiB disk has half a
 * million chunks, and cp reads it 128 KiB at a time); a chunk that goes
 * makes the fill look again. */
static void test_fill_sparse(void)
{
	const guint64 n = 4096;
	CfsExtent data[] = { { 0, 20 * CHUNK }, { 3000 * CHUNK, CHUNK } };
	Env e;
	CfsCacheStats st;
	guint64 scanned;

	env_init(&e, n * CHUNK, data, G_N_ELEMENTS(data), 0);
	env_open_cache(&e, "key", CHUNK, 4, FILL_SYNC);
	cfs_cache_add_readers(e.cache, +1);
	cfs_cache_note_read(e.cache, 0, 1024 * KiB);
	cfs_cache_note_read(e.cache, 1024 * KiB, 128 * KiB);
	cfs_cache_stats(e.cache, &st);
	g_assert_cmpuint(st.present, ==, st.total);
	g_assert_cmpuint(fetcher_times(e.f, 3000), ==, 1);
	scanned = st.scanned;
	for (guint i = 0; i < 1000; i++)
		cfs_cache_note_read(e.cache, (1152 + 128 * i) * KiB,
				    128 * KiB);
	cfs_cache_stats(e.cache, &st);
	g_assert_cmpuint(st.scanned - scanned, <=, n);
	g_assert_cmpuint(fetcher_count(e.f), ==, 21);
	read_and_check(&e, 3000 * CHUNK, CHUNK);
	cfs_cache_add_readers(e.cache, -1);
	env_clear(&e);
}

/* A reader that asked where an extent ends (SEEK_HOLE) gets that extent
 * prefetched before its first read, and nothing past its end. */
static void test_note_extent(void)
{
	Env e;

	env_init(&e, 16 * CHUNK, NULL, 0, 0);
	cfs_extent_map_unref(e.map);
	e.map = cfs_extent_map_new_full(16 * CHUNK);
	env_open_cache(&e, "key", CHUNK, 2, FILL_MANUAL);
	cfs_cache_add_readers(e.cache, +1);
	cfs_cache_note_extent(e.cache, 4 * CHUNK, 3 * CHUNK);
	g_assert_cmpuint(fetcher_count(e.f), ==, 2);
	g_assert_cmpuint(fetcher_nth(e.f, 0), ==, 4);
	g_assert_cmpuint(fetcher_nth(e.f, 1), ==, 5);
	g_assert_false(fetcher_nth_demand(e.f, 0));
	fetcher_complete(e.f, 4, NULL);
	g_assert_cmpuint(fetcher_count(e.f), ==, 3);
	g_assert_cmpuint(fetcher_nth(e.f, 2), ==, 6);
	fetcher_complete_all(e.f);
	g_assert_cmpuint(fetcher_count(e.f), ==, 3);	/* not chunk 7 */
	read_and_check(&e, 4 * CHUNK, 3 * CHUNK);
	g_assert_cmpuint(fetcher_count(e.f), ==, 3);
	cfs_cache_add_readers(e.cache, -1);
	env_clear(&e);
}

/* Present chunks survive a close; another key or chunk size starts over. */
static void test_persist(void)
{
	Env e;
	Waiter w;
	guint64 want = chunk_len(DISK_SIZE, 0) + chunk_len(DISK_SIZE, 6) +
		       chunk_len(DISK_SIZE, 15);
	CfsCacheStats st;

	env_init(&e, DISK_SIZE, disk_ext, G_N_ELEMENTS(disk_ext), 0);
	g_assert_cmpuint(cfs_store_peek(e.store, "key", "disk one.vhd", e.map,
					CHUNK), ==, 0);
	env_open_cache(&e, "key", CHUNK, 4, FILL_SYNC);
	read_and_check(&e, 10, 10);
	read_and_check(&e, 6 * CHUNK + 1500, 10);
	read_and_check(&e, DISK_SIZE - 10, 10);
	g_assert_cmpuint(fetcher_count(e.f), ==, 3);
	env_close_cache(&e);

	g_assert_cmpuint(want, ==, 2 * CHUNK + CHUNK - 5000);
	g_assert_cmpuint(cfs_store_peek(e.store, "key", "disk one.vhd", e.map,
					CHUNK), ==, want);
	g_assert_cmpuint(cfs_store_peek(e.store, "other", "disk one.vhd",
					e.map, CHUNK), ==, 0);
	g_assert_cmpuint(cfs_store_peek(e.store, "key", "disk one.vhd", e.map,
					CHUNK / 2), ==, 0);

	/* Same key, in a store opened again: nothing fetched. */
	g_clear_pointer(&e.store, cfs_store_free);
	env_open_store(&e, 0);
	env_open_cache(&e, "key", CHUNK, 4, FILL_MANUAL);
	cfs_cache_stats(e.cache, &st);
	g_assert_cmpuint(st.present, ==, want);
	waiter_init(&w, e.cache);
	g_assert_true(acquire(e.cache, 0, 10, &w));
	release(&w);
	g_assert_true(acquire(e.cache, 6 * CHUNK, CHUNK, &w));
	release(&w);
	g_assert_true(acquire(e.cache, 15 * CHUNK, 100, &w));
	release(&w);
	g_assert_cmpuint(fetcher_count(e.f), ==, 0);
	read_and_check(&e, 0, CHUNK);
	read_and_check(&e, 6 * CHUNK, CHUNK);
	read_and_check(&e, 15 * CHUNK, DISK_SIZE - 15 * CHUNK);
	/* A chunk not fetched before is fetched now. */
	g_assert_false(acquire(e.cache, CHUNK, 10, &w));
	fetcher_complete(e.f, 1, NULL);
	release(&w);
	env_close_cache(&e);

	/* Another key: everything is fetched again. */
	env_open_cache(&e, "key of a new snapshot", CHUNK, 4, FILL_SYNC);
	cfs_cache_stats(e.cache, &st);
	g_assert_cmpuint(st.present, ==, 0);
	read_and_check(&e, 0, 10);
	g_assert_cmpuint(fetcher_count(e.f), ==, 1);
	env_close_cache(&e);

	/* Same key, another chunk size: the folder starts over... */
	env_open_cache(&e, "key", CHUNK / 2, 4, FILL_SYNC);
	cfs_cache_stats(e.cache, &st);
	g_assert_cmpuint(st.present, ==, 0);
	read_and_check(&e, 0, 10);
	g_assert_cmpuint(fetcher_times(e.f, 0), ==, 1);
	env_close_cache(&e);

	/* ...so going back to the first size finds nothing either. */
	g_assert_cmpuint(cfs_store_peek(e.store, "key", "disk one.vhd", e.map,
					CHUNK), ==, 0);
	env_open_cache(&e, "key", CHUNK, 4, FILL_SYNC);
	read_and_check(&e, 0, 10);
	g_assert_cmpuint(fetcher_count(e.f), ==, 1);
	waiter_clear(&w);
	env_clear(&e);
}

static void assert_mode(const char *path, mode_t want)
{
	struct stat st;

	g_assert_cmpint(stat(path, &st), ==, 0);
	if ((st.st_mode & 07777) != want)
		g_error("%s: mode %04o, not %04o", path, st.st_mode & 07777,
			want);
}

/* The cache holds disk bytes: nobody else may read them, whatever the
 * umask. */
static void test_modes(void)
{
	static const char *const files[] = { "data", "bitmap", "meta" };
	mode_t old = umask(0);
	Env e;
	g_autofree char *dir = NULL;

	env_init(&e, DISK_SIZE, disk_ext, G_N_ELEMENTS(disk_ext), 0);
	assert_mode(e.store_dir, 0700);
	env_open_cache(&e, "key", CHUNK, 4, FILL_SYNC);
	read_and_check(&e, 0, 10);
	dir = env_cache_dir(&e);
	assert_mode(dir, 0700);
	for (guint i = 0; i < G_N_ELEMENTS(files); i++) {
		g_autofree char *path = g_build_filename(dir, files[i], NULL);

		assert_mode(path, 0600);
	}
	env_close_cache(&e);

	/* A store folder made by someone else is closed up. */
	g_clear_pointer(&e.store, cfs_store_free);
	g_assert_cmpint(chmod(e.store_dir, 0755), ==, 0);
	env_open_store(&e, 0);
	assert_mode(e.store_dir, 0700);
	env_clear(&e);
	umask(old);
}

/* A store limit of 4 chunks, 16 chunks read one after another. */
static void test_evict(void)
{
	const guint64 limit = 4 * CHUNK;
	Env e;
	Waiter w;
	CfsCacheStats st;

	env_init(&e, 16 * CHUNK, NULL, 0, limit);
	cfs_extent_map_unref(e.map);
	e.map = cfs_extent_map_new_full(16 * CHUNK);
	env_open_cache(&e, "key", CHUNK, 1, FILL_SYNC);
	waiter_init(&w, e.cache);
	for (guint64 i = 0; i < 16; i++) {
		read_and_check(&e, i * CHUNK, CHUNK);
		cfs_cache_stats(e.cache, &st);
		g_assert_cmpuint(st.present, <=, limit);
		g_assert_cmpuint(env_data_blocks(&e), <=, limit + CHUNK);
	}
	g_assert_cmpuint(fetcher_count(e.f), ==, 16);
	/* The newest chunk stayed; the oldest went and comes back. */
	g_assert_true(acquire(e.cache, 15 * CHUNK, 10, &w));
	release(&w);
	g_assert_cmpuint(fetcher_count(e.f), ==, 16);
	read_and_check(&e, 0, CHUNK);
	g_assert_cmpuint(fetcher_times(e.f, 0), ==, 2);
	g_assert_cmpuint(env_data_blocks(&e), <=, limit + CHUNK);

	/* A pinned chunk is never evicted. */
	g_assert_true(acquire(e.cache, 0, 10, &w));
	for (guint64 i = 1; i < 8; i++)
		read_and_check(&e, i * CHUNK, CHUNK);
	release(&w);
	g_assert_true(acquire(e.cache, 0, 10, &w));
	release(&w);
	g_assert_cmpuint(fetcher_times(e.f, 0), ==, 2);
	waiter_clear(&w);

	/* Evicted chunks are gone from the bitmap too. */
	env_close_cache(&e);
	g_assert_cmpuint(cfs_store_peek(e.store, "key", "disk one.vhd", e.map,
					CHUNK), <=, limit);
	g_assert_cmpuint(cfs_store_peek(e.store, "key", "disk one.vhd", e.map,
					CHUNK), >=, CHUNK);
	env_clear(&e);
}

/* The limit covers the folders of caches closed since the store opened
 * (a released export that starts again under a new key) as well. */
static void test_evict_closed(void)
{
	const guint64 limit = 4 * CHUNK;
	Env e;
	guint64 blocks;

	env_init(&e, 16 * CHUNK, NULL, 0, limit);
	cfs_extent_map_unref(e.map);
	e.map = cfs_extent_map_new_full(16 * CHUNK);
	env_open_cache(&e, "old snapshot", CHUNK, 1, FILL_SYNC);
	for (guint64 i = 0; i < 3; i++)
		read_and_check(&e, i * CHUNK, CHUNK);
	env_close_cache(&e);
	env_open_cache(&e, "new snapshot", CHUNK, 1, FILL_SYNC);
	for (guint64 i = 0; i < 3; i++)
		read_and_check(&e, i * CHUNK, CHUNK);
	blocks = env_data_blocks(&e);
	g_assert_cmpuint(blocks, <=, limit + CHUNK);
	env_clear(&e);
}

/* Bytes proved wrong are forgotten: every chunk no hold pins leaves the
 * bitmap and the data file, a pinned one once it is let go, and nothing
 * of them survives a reopen. */
static void test_forget(void)
{
	Env e;
	Waiter w;
	CfsCacheStats st;

	env_init(&e, 8 * CHUNK, NULL, 0, 0);
	cfs_extent_map_unref(e.map);
	e.map = cfs_extent_map_new_full(8 * CHUNK);
	env_open_cache(&e, "key", CHUNK, 4, FILL_SYNC);
	for (guint64 i = 0; i < 8; i++)
		read_and_check(&e, i * CHUNK, CHUNK);
	waiter_init(&w, e.cache);
	g_assert_true(acquire(e.cache, 2 * CHUNK, 10, &w));
	g_assert_cmpuint(cfs_cache_forget(e.cache), ==, 7 * CHUNK);
	cfs_cache_stats(e.cache, &st);
	g_assert_cmpuint(st.present, ==, CHUNK);
	release(&w);
	waiter_clear(&w);
	g_assert_cmpuint(cfs_cache_forget(e.cache), ==, CHUNK);
	g_assert_cmpuint(cfs_cache_forget(e.cache), ==, 0);
	g_assert_cmpuint(env_data_blocks(&e), ==, 0);
	g_assert_cmpuint(cfs_store_usage(e.store), ==, 0);
	/* Read again: fetched again. */
	read_and_check(&e, 5 * CHUNK, CHUNK);
	g_assert_cmpuint(fetcher_times(e.f, 5), ==, 2);
	g_assert_cmpuint(cfs_cache_forget(e.cache), ==, CHUNK);
	env_close_cache(&e);
	g_assert_cmpuint(cfs_store_peek(e.store, "key", "disk one.vhd", e.map,
					CHUNK), ==, 0);
	env_clear(&e);
}

/* Stream sources claim chunks themselves. */
static void test_claim(void)
{
	Env e;
	CfsCacheStats st;

	env_init(&e, DISK_SIZE, disk_ext, G_N_ELEMENTS(disk_ext), 0);
	env_open_cache(&e, "key", CHUNK, 4, FILL_MANUAL);
	g_assert_false(cfs_cache_claim(e.cache, 4));	/* a hole */
	g_assert_false(cfs_cache_claimed(e.cache, 4));
	g_assert_true(cfs_cache_claim(e.cache, 9));
	g_assert_true(cfs_cache_claimed(e.cache, 9));
	g_assert_cmpuint(cfs_cache_inflight(e.cache), ==, 1);
	fetcher_fill(e.f, 9, NULL);
	g_assert_false(cfs_cache_claimed(e.cache, 9));
	g_assert_false(cfs_cache_claim(e.cache, 9));	/* present */
	cfs_cache_stats(e.cache, &st);
	g_assert_cmpuint(st.present, ==, CHUNK);
	g_assert_cmpuint(st.inflight, ==, 0);
	g_assert_cmpuint(fetcher_count(e.f), ==, 0);
	read_and_check(&e, 9 * CHUNK, CHUNK);
	env_clear(&e);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/cache/open", test_open);
	g_test_add_func("/cache/holes", test_holes);
	g_test_add_func("/cache/miss", test_miss);
	g_test_add_func("/cache/sync", test_sync);
	g_test_add_func("/cache/thread", test_thread);
	g_test_add_func("/cache/single-flight", test_single_flight);
	g_test_add_func("/cache/error", test_error);
	g_test_add_func("/cache/cancel", test_cancel);
	g_test_add_func("/cache/parallel", test_parallel);
	g_test_add_func("/cache/prefetch", test_prefetch);
	g_test_add_func("/cache/fill-sparse", test_fill_sparse);
	g_test_add_func("/cache/note-extent", test_note_extent);
	g_test_add_func("/cache/persist", test_persist);
	g_test_add_func("/cache/modes", test_modes);
	g_test_add_func("/cache/evict", test_evict);
	g_test_add_func("/cache/evict-closed", test_evict_closed);
	g_test_add_func("/cache/forget", test_forget);
	g_test_add_func("/cache/claim", test_claim);
	return g_test_run();
}
