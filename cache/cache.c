// SPDX-License-Identifier: MIT
/*
 * One export's chunks: the sparse data file, the persisted bitmap, chunk
 * states, the readers waiting for chunks, prefetch and LRU eviction.
 */
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache-private.h"
#include "common/error.h"
#include "common/util.h"

/* A sequential run from offset 0 this long, in two reads or more, turns on
 * the whole-disk fill. */
#define FILL_AFTER (1024 * 1024)
/* Reads this close to the end of a run still continue it (the kernel's
 * readahead may reorder them). */
#define SEQ_SLACK (512 * 1024)
/* A run is sequential once it spans this much in two reads or more. */
#define SEQ_MIN (256 * 1024)
/* Prefetches in flight to begin with; the window grows from there while
 * the rate grows, up to `parallel`. */
#define WINDOW_START 4

struct CfsCacheHold {
	CfsCache *cache;
	GArray *chunks;		/* guint64, sorted, unique */
	guint missing;		/* protected by cache lock */
	bool woken;		/* protected by cache lock */
	CfsCacheWakeFn wake;
	gpointer data;
};

guint64 cfs_cache_chunk_size(const CfsCache *c)
{
	return c->chunk_size;
}

guint64 cfs_cache_n_chunks(const CfsCache *c)
{
	return c->n_chunks;
}

static bool bitmap_test(const CfsCache *c, guint64 idx)
{
	return c->bitmap[idx / 32] & (1u << (idx % 32));
}

static void bitmap_set(CfsCache *c, guint64 idx, bool on)
{
	if (on)
		c->bitmap[idx / 32] |= 1u << (idx % 32);
	else
		c->bitmap[idx / 32] &= ~(1u << (idx % 32));
}

static guint32 cache_tick(CfsCache *c)
{
	return (guint32)g_atomic_int_add((gint *)&c->store->clock, 1);
}

/* --- opening --- */

static bool cache_write_meta(const char *path, const char *key,
			     const CfsExtentMap *map, guint64 chunk_size,
			     GError **error)
{
	g_autofree char *text = g_strdup_printf(
		"size=%" G_GUINT64_FORMAT "\nchunk_size=%" G_GUINT64_FORMAT
		"\nkey=%s\n", map->size, chunk_size, key);

	return g_file_set_contents_full(path, text, -1,
					G_FILE_SET_CONTENTS_CONSISTENT, 0600,
					error);
}

/* The folder holds chunks of these exact bytes, in this chunk size. */
static bool cache_meta_matches(const char *path, const char *key,
			       const CfsExtentMap *map, guint64 chunk_size)
{
	g_autofree char *want = g_strdup_printf(
		"size=%" G_GUINT64_FORMAT "\nchunk_size=%" G_GUINT64_FORMAT
		"\nkey=%s\n", map->size, chunk_size, key);
	g_autofree char *have = NULL;

	return g_file_get_contents(path, &have, NULL, NULL) &&
	       g_str_equal(have, want);
}

static bool cache_open_files(CfsCache *c, const char *key, GError **error)
{
	g_autofree char *meta = g_build_filename(c->dir, "meta", NULL);
	g_autofree char *data = g_build_filename(c->dir, "data", NULL);
	g_autofree char *bitmap = g_build_filename(c->dir, "bitmap", NULL);
	bool resume = cache_meta_matches(meta, key, c->map, c->chunk_size);
	int fd;

	if (g_mkdir_with_parents(c->dir, 0700) < 0)
		return cfs_set_errno(error, errno, c->dir);
	if (!resume) {
		/* A changed source, or a folder left half made: start over,
		 * and write meta last so a crash leaves no false match. */
		unlink(meta);
		unlink(data);
		unlink(bitmap);
	}
	c->data_fd = open(data, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (c->data_fd < 0)
		return cfs_set_errno(error, errno, data);
	if (ftruncate(c->data_fd, (off_t)c->map->size) < 0)
		return cfs_set_errno(error, errno, data);
	c->bitmap_len = MAX((c->n_chunks + 31) / 32 * 4, 4);
	fd = open(bitmap, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return cfs_set_errno(error, errno, bitmap);
	if (ftruncate(fd, (off_t)c->bitmap_len) < 0) {
		close(fd);
		return cfs_set_errno(error, errno, bitmap);
	}
	c->bitmap = mmap(NULL, c->bitmap_len, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	close(fd);
	if (c->bitmap == MAP_FAILED) {
		c->bitmap = NULL;
		return cfs_set_errno(error, errno, bitmap);
	}
	if (!resume && !cache_write_meta(meta, key, c->map, c->chunk_size,
					 error))
		return false;
	return true;
}

static void cache_free(CfsCache *c)
{
	if (c->bitmap)
		munmap(c->bitmap, c->bitmap_len);
	if (c->data_fd >= 0)
		close(c->data_fd);
	g_clear_pointer(&c->waiters, g_hash_table_unref);
	g_queue_clear(&c->queued);
	cfs_extent_map_unref(c->map);
	g_free(c->state);
	g_free(c->pins);
	g_free(c->tick);
	g_free(c->dir);
	g_free(c->label);
	g_mutex_clear(&c->lock);
	g_free(c);
}

/* The folder of an export: a readable label and a hash of the key. */
static char *cache_dir_for(CfsStore *store, const char *key,
			   const char *label)
{
	g_autofree char *hash = g_compute_checksum_for_string(G_CHECKSUM_SHA256,
							      key, -1);
	g_autofree char *name = cfs_name_sanitize(label);

	g_strdelimit(name, "/ ", '_');
	hash[16] = '\0';
	return g_strdup_printf("%s/%s-%s", store->dir, name, hash);
}

guint64 cfs_store_peek(CfsStore *store, const char *key, const char *label,
		       CfsExtentMap *map, guint64 chunk_size)
{
	g_autofree char *dir = cache_dir_for(store, key, label);
	g_autofree char *meta = g_build_filename(dir, "meta", NULL);
	g_autofree char *path = g_build_filename(dir, "bitmap", NULL);
	g_autofree guint8 *bits = NULL;
	guint64 n_chunks = (map->size + chunk_size - 1) / chunk_size;
	guint64 present = 0;
	gsize len = 0;

	if (!cache_meta_matches(meta, key, map, chunk_size) ||
	    !g_file_get_contents(path, (char **)&bits, &len, NULL))
		return 0;
	for (guint64 i = 0; i < n_chunks && i / 8 < len; i++) {
		guint64 off = i * chunk_size, clen = MIN(chunk_size,
							 map->size - off);

		/* The bitmap is words of 32 bits, in host order. */
		if ((((guint32 *)(void *)bits)[i / 32] & (1u << (i % 32))) &&
		    cfs_extent_map_any_data(map, off, clen))
			present += clen;
	}
	return present;
}

CfsCache *cfs_cache_open(CfsStore *store, const char *key, const char *label,
			 CfsExtentMap *map, guint64 chunk_size, guint parallel,
			 CfsCacheFetchFn fetch, gpointer owner, GError **error)
{
	CfsCache *c = g_new0(CfsCache, 1);

	c->store = store;
	c->dir = cache_dir_for(store, key, label);
	c->label = g_strdup(label);
	c->map = cfs_extent_map_ref(map);
	c->chunk_size = chunk_size;
	c->n_chunks = (map->size + chunk_size - 1) / chunk_size;
	c->parallel = MAX(parallel, 1);
	cfs_window_init(&c->window, WINDOW_START, c->parallel);
	c->fetch = fetch;
	c->owner = owner;
	c->data_fd = -1;
	g_mutex_init(&c->lock);
	c->waiters = g_hash_table_new_full(g_int64_hash, g_int64_equal,
					   g_free,
					   (GDestroyNotify)g_ptr_array_unref);
	if (!cache_open_files(c, key, error)) {
		g_prefix_error(error, "cache %s: ", label);
		cache_free(c);
		return NULL;
	}
	c->state = g_new0(guint8, MAX(c->n_chunks, 1));
	c->pins = g_new0(guint16, MAX(c->n_chunks, 1));
	c->tick = g_new0(guint32, MAX(c->n_chunks, 1));
	for (guint64 i = 0; i < c->n_chunks; i++) {
		guint64 len = cfs_chunk_len(c, i);

		if (!cfs_extent_map_any_data(map, i * chunk_size, len)) {
			c->state[i] = CHUNK_HOLE;
			continue;
		}
		c->total += len;
		if (bitmap_test(c, i)) {
			c->state[i] = CHUNK_PRESENT;
			c->present += len;
		}
	}
	cfs_store_attach(store, c);
	g_debug("cache %s: %s, %" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT
		" bytes present", label, c->dir, c->present, c->total);
	return c;
}

void cfs_cache_close(CfsCache *c)
{
	if (!c)
		return;
	cfs_store_detach(c->store, c);
	if (c->bitmap)
		msync(c->bitmap, c->bitmap_len, MS_ASYNC);
	cache_free(c);
}

/* --- prefetch (cache lock held) --- */

typedef GArray IdxList;	/* of guint64 */

/* Fetches running: claimed chunks not waiting for a slot. Lock held. */
static guint cache_running(const CfsCache *c)
{
	return c->inflight - c->queued.length;
}

static bool cache_claim_locked(CfsCache *c, guint64 idx)
{
	if (c->state[idx] != CHUNK_ABSENT)
		return false;
	c->state[idx] = CHUNK_INFLIGHT;
	c->inflight++;
	return true;
}

/* Whether the whole disk fits in the cache without evicting itself. */
static bool cache_fits(const CfsCache *c)
{
	guint64 limit = cfs_store_limit(c->store);

	return limit == 0 || c->total <= limit / 10 * 9;
}

/* Claim the next chunks worth prefetching, up to the parallel budget. */
static void cache_pump(CfsCache *c, IdxList *out)
{
	guint budget;

	/* Demand fetches count too: at most the window in flight in all,
	 * though a reader's own misses are never held back. */
	if (c->readers <= 0 || c->inflight >= c->window.size)
		return;
	budget = c->window.size - c->inflight;
	if (c->fill_all) {
		guint64 scanned = 0;

		while (budget > 0 && scanned < c->n_chunks) {
			guint64 idx = c->fill_cursor;

			c->fill_cursor = (c->fill_cursor + 1) % c->n_chunks;
			scanned++;
			if (cache_claim_locked(c, idx)) {
				g_array_append_val(out, idx);
				budget--;
			}
		}
		return;
	}
	for (guint s = 0; s < G_N_ELEMENTS(c->seq) && budget > 0; s++) {
		guint64 first, last;

		/* One read is not a sequence, nor two pages of one
		 * unaligned read: a random reader gets only the chunks it
		 * asks for. */
		if (c->seq[s].reads < 2 ||
		    c->seq[s].end - c->seq[s].start < SEQ_MIN)
			continue;
		first = c->seq[s].end / c->chunk_size;
		g_debug("cache %s: sequential reader %" G_GUINT64_FORMAT "-%"
			G_GUINT64_FORMAT " (%u reads): prefetch from chunk %"
			G_GUINT64_FORMAT, c->label, c->seq[s].start,
			c->seq[s].end, c->seq[s].reads, first);
		last = MIN(first + c->window.size, c->n_chunks - 1);
		for (guint64 idx = first; idx <= last && budget > 0; idx++) {
			if (cache_claim_locked(c, idx)) {
				g_array_append_val(out, idx);
				budget--;
			}
		}
	}
}

static void cache_fetch_all(CfsCache *c, IdxList *list, bool demand)
{
	for (guint i = 0; i < list->len; i++)
		c->fetch(c->owner, g_array_index(list, guint64, i), demand);
}

void cfs_cache_note_read(CfsCache *c, guint64 off, guint64 len)
{
	g_autoptr(GArray) fetch = g_array_new(FALSE, FALSE, sizeof(guint64));
	guint s;

	if (c->n_chunks == 0)
		return;
	g_mutex_lock(&c->lock);
	for (s = 0; s < G_N_ELEMENTS(c->seq); s++) {
		if (c->seq[s].end != c->seq[s].start &&
		    off + SEQ_SLACK >= c->seq[s].end &&
		    off <= c->seq[s].end + SEQ_SLACK)
			break;
	}
	if (s == G_N_ELEMENTS(c->seq)) {
		s = c->seq_next;
		c->seq_next = (c->seq_next + 1) % G_N_ELEMENTS(c->seq);
		c->seq[s].start = off;
		c->seq[s].end = off;
		c->seq[s].reads = 0;
	}
	c->seq[s].end = MAX(c->seq[s].end, off + len);
	c->seq[s].reads++;
	if (!c->fill_all && c->seq[s].start == 0 && c->seq[s].reads >= 2 &&
	    c->seq[s].end >= FILL_AFTER && cache_fits(c)) {
		c->fill_all = true;
		c->fill_cursor = c->seq[s].end / c->chunk_size % c->n_chunks;
	}
	cache_pump(c, fetch);
	g_mutex_unlock(&c->lock);
	cache_fetch_all(c, fetch, false);
}

void cfs_cache_add_readers(CfsCache *c, int delta)
{
	g_autoptr(GArray) fetch = g_array_new(FALSE, FALSE, sizeof(guint64));

	g_mutex_lock(&c->lock);
	c->readers += delta;
	if (c->readers <= 0) {
		/* Nobody reads: the next reader decides again. */
		c->fill_all = false;
		memset(c->seq, 0, sizeof(c->seq));
	}
	cache_pump(c, fetch);
	g_mutex_unlock(&c->lock);
	cache_fetch_all(c, fetch, false);
}

/* --- readers --- */

static gint idx_cmp(gconstpointer a, gconstpointer b)
{
	guint64 x = *(const guint64 *)a, y = *(const guint64 *)b;

	return x < y ? -1 : x > y;
}

static GArray *cache_chunks_of(const CfsCache *c, const CfsExtent *ranges,
			       guint n)
{
	GArray *chunks = g_array_new(FALSE, FALSE, sizeof(guint64));
	guint out = 0;

	for (guint r = 0; r < n; r++) {
		guint64 end = MIN(ranges[r].offset + ranges[r].length,
				  c->map->size);

		if (ranges[r].length == 0 || ranges[r].offset >= end)
			continue;
		for (guint64 i = ranges[r].offset / c->chunk_size;
		     i <= (end - 1) / c->chunk_size; i++)
			g_array_append_val(chunks, i);
	}
	g_array_sort(chunks, idx_cmp);
	for (guint i = 0; i < chunks->len; i++) {
		guint64 v = g_array_index(chunks, guint64, i);

		if (out == 0 || g_array_index(chunks, guint64, out - 1) != v)
			g_array_index(chunks, guint64, out++) = v;
	}
	g_array_set_size(chunks, out);
	return chunks;
}

static void cache_add_waiter(CfsCache *c, guint64 idx, CfsCacheHold *hold)
{
	GPtrArray *list = g_hash_table_lookup(c->waiters, &idx);

	if (!list) {
		list = g_ptr_array_new();
		g_hash_table_insert(c->waiters, g_memdup2(&idx, sizeof(idx)),
				    list);
	}
	g_ptr_array_add(list, hold);
}

/* Take @hold off every chunk it waits for. Cache lock held. */
static void cache_detach(CfsCache *c, CfsCacheHold *hold)
{
	for (guint i = 0; i < hold->chunks->len; i++) {
		guint64 idx = g_array_index(hold->chunks, guint64, i);
		GPtrArray *list = g_hash_table_lookup(c->waiters, &idx);

		if (list && g_ptr_array_remove_fast(list, hold) &&
		    list->len == 0)
			g_hash_table_remove(c->waiters, &idx);
	}
}

bool cfs_cache_acquire(CfsCache *c, const CfsExtent *ranges, guint n,
		       CfsCacheWakeFn wake, gpointer data,
		       CfsCacheHold **hold_out)
{
	CfsCacheHold *hold = g_new0(CfsCacheHold, 1);
	g_autoptr(GArray) fetch = g_array_new(FALSE, FALSE, sizeof(guint64));
	guint32 now = cache_tick(c);
	bool ready;

	hold->cache = c;
	hold->chunks = cache_chunks_of(c, ranges, n);
	hold->wake = wake;
	hold->data = data;
	g_atomic_pointer_set(hold_out, hold);
	g_mutex_lock(&c->lock);
	for (guint i = 0; i < hold->chunks->len; i++) {
		guint64 idx = g_array_index(hold->chunks, guint64, i);

		c->pins[idx]++;
		c->tick[idx] = now;
		switch (CHUNK_STATE(c->state[idx])) {
		case CHUNK_ABSENT:
			cache_claim_locked(c, idx);
			if (cache_running(c) > c->parallel) {
				/* At most `parallel` fetches run; demand
				 * ones go first when a slot frees. */
				c->state[idx] |= CHUNK_QUEUED;
				g_queue_push_tail(&c->queued,
						  GSIZE_TO_POINTER(idx));
			} else {
				g_array_append_val(fetch, idx);
			}
			/* fall through */
		case CHUNK_INFLIGHT:
			hold->missing++;
			cache_add_waiter(c, idx, hold);
			break;
		default:
			break;
		}
	}
	ready = hold->missing == 0;
	hold->woken = ready;
	g_mutex_unlock(&c->lock);
	/* From here a waiting hold may be woken, and freed, at any time. */
	cache_fetch_all(c, fetch, true);
	return ready;
}

bool cfs_cache_cancel(CfsCacheHold *hold)
{
	CfsCache *c = hold->cache;
	bool cancelled = false;

	g_mutex_lock(&c->lock);
	if (!hold->woken) {
		cache_detach(c, hold);
		hold->woken = true;
		cancelled = true;
	}
	g_mutex_unlock(&c->lock);
	return cancelled;
}

void cfs_cache_release(CfsCacheHold *hold)
{
	CfsCache *c;

	if (!hold)
		return;
	c = hold->cache;
	g_mutex_lock(&c->lock);
	for (guint i = 0; i < hold->chunks->len; i++)
		c->pins[g_array_index(hold->chunks, guint64, i)]--;
	g_mutex_unlock(&c->lock);
	g_array_unref(hold->chunks);
	g_free(hold);
}

bool cfs_cache_pread(CfsCache *c, void *buf, gsize len, guint64 off,
		     GError **error)
{
	if (!cfs_pread_all(c->data_fd, buf, len, off, error)) {
		g_prefix_error(error, "cache %s: ", c->label);
		return false;
	}
	return true;
}

/* --- fetchers --- */

bool cfs_cache_write(CfsCache *c, guint64 off, const void *data, gsize len,
		     GError **error)
{
	if (!cfs_pwrite_all(c->data_fd, data, len, off, error)) {
		g_prefix_error(error, "cache %s: ", c->label);
		return false;
	}
	return true;
}

bool cfs_cache_claim(CfsCache *c, guint64 idx)
{
	bool mine;

	g_mutex_lock(&c->lock);
	mine = CHUNK_STATE(c->state[idx]) == CHUNK_INFLIGHT ||
	       cache_claim_locked(c, idx);
	g_mutex_unlock(&c->lock);
	return mine;
}

bool cfs_cache_claimed(CfsCache *c, guint64 idx)
{
	bool claimed;

	g_mutex_lock(&c->lock);
	claimed = CHUNK_STATE(c->state[idx]) == CHUNK_INFLIGHT;
	g_mutex_unlock(&c->lock);
	return claimed;
}

guint cfs_cache_inflight(CfsCache *c)
{
	guint n;

	g_mutex_lock(&c->lock);
	n = c->inflight;
	g_mutex_unlock(&c->lock);
	return n;
}

void cfs_cache_chunk_done(CfsCache *c, guint64 idx, const GError *error)
{
	g_autoptr(GPtrArray) waiters = NULL;
	g_autoptr(GPtrArray) wake = g_ptr_array_new();
	g_autoptr(GArray) fetch = g_array_new(FALSE, FALSE, sizeof(guint64));
	g_autoptr(GArray) demand = g_array_new(FALSE, FALSE, sizeof(guint64));
	guint64 len = cfs_chunk_len(c, idx);
	gpointer key = NULL;

	g_mutex_lock(&c->lock);
	if (CHUNK_STATE(c->state[idx]) != CHUNK_INFLIGHT) {
		/* Two fetchers of one chunk (a server that stopped honouring
		 * ranges mid-export, so a stream and a ranged piece both had
		 * it): the first one to finish counted; a daemon must not
		 * abort over the second. */
		g_mutex_unlock(&c->lock);
		g_warning("cache %s: chunk %" G_GUINT64_FORMAT " finished "
			  "twice", c->label, idx);
		return;
	}
	if (c->state[idx] & CHUNK_QUEUED)	/* a stream got to it first */
		g_queue_remove(&c->queued, GSIZE_TO_POINTER(idx));
	c->inflight--;
	if (error) {
		c->state[idx] = CHUNK_ABSENT;
		c->fill_all = false;	/* no hammering a failing source */
		cfs_window_backoff(&c->window, g_get_monotonic_time());
	} else {
		guint was = c->window.size;

		cfs_window_landed(&c->window, len, g_get_monotonic_time());
		if (c->window.size != was)
			g_debug("cache %s: %u chunks in flight at most (%.0f "
				"MiB/s)", c->label, c->window.size,
				c->window.best / (1 << 20));
		c->state[idx] = CHUNK_PRESENT;
		c->tick[idx] = cache_tick(c);
		bitmap_set(c, idx, true);
		c->present += len;
	}
	if (g_hash_table_steal_extended(c->waiters, &idx, &key,
					(gpointer *)&waiters))
		g_free(key);
	for (guint i = 0; waiters && i < waiters->len; i++) {
		CfsCacheHold *hold = waiters->pdata[i];

		if (error) {
			cache_detach(c, hold);
			hold->woken = true;
		} else if (--hold->missing == 0) {
			hold->woken = true;
		}
		if (hold->woken)
			g_ptr_array_add(wake, hold);
	}
	while (!g_queue_is_empty(&c->queued) && cache_running(c) < c->parallel) {
		guint64 next = GPOINTER_TO_SIZE(g_queue_pop_head(&c->queued));

		c->state[next] &= ~CHUNK_QUEUED;
		g_array_append_val(demand, next);
	}
	if (!error)
		cache_pump(c, fetch);
	g_mutex_unlock(&c->lock);
	if (!error)
		cfs_store_account(c->store, (gint64)len);
	for (guint i = 0; i < wake->len; i++) {
		CfsCacheHold *hold = wake->pdata[i];

		hold->wake(hold, hold->data, error);
	}
	cache_fetch_all(c, demand, true);
	cache_fetch_all(c, fetch, false);
}

void cfs_cache_stats(CfsCache *c, CfsCacheStats *stats)
{
	g_mutex_lock(&c->lock);
	stats->present = c->present;
	stats->total = c->total;
	stats->inflight = c->inflight;
	stats->readers = c->readers;
	stats->window = c->window.size;
	g_mutex_unlock(&c->lock);
}

void cfs_cache_throttled(CfsCache *c)
{
	g_mutex_lock(&c->lock);
	cfs_window_backoff(&c->window, g_get_monotonic_time());
	g_mutex_unlock(&c->lock);
}

bool cfs_cache_present_upto(CfsCache *c, guint64 end)
{
	guint64 n = MIN((end + c->chunk_size - 1) / c->chunk_size, c->n_chunks);
	bool all = true;

	g_mutex_lock(&c->lock);
	for (guint64 i = 0; i < n && all; i++)
		all = CHUNK_STATE(c->state[i]) == CHUNK_PRESENT;
	g_mutex_unlock(&c->lock);
	return all;
}

/* --- eviction (called by the store, no lock held) --- */

void cfs_cache_collect_ticks(CfsCache *c, GArray *ticks)
{
	g_mutex_lock(&c->lock);
	for (guint64 i = 0; i < c->n_chunks; i++)
		if (c->state[i] == CHUNK_PRESENT && c->pins[i] == 0)
			g_array_append_val(ticks, c->tick[i]);
	g_mutex_unlock(&c->lock);
}

guint64 cfs_cache_evict(CfsCache *c, guint32 before, guint64 want)
{
	guint64 dropped = 0;

	g_mutex_lock(&c->lock);
	for (guint64 i = 0; i < c->n_chunks && dropped < want; i++) {
		guint64 len = cfs_chunk_len(c, i);

		if (c->state[i] != CHUNK_PRESENT || c->pins[i] ||
		    c->tick[i] >= before)
			continue;
		/* Forget the chunk before its bytes go, under the lock, so
		 * no reader or fetch sees it half gone. */
		c->state[i] = CHUNK_ABSENT;
		bitmap_set(c, i, false);
		c->present -= len;
		if (fallocate(c->data_fd, FALLOC_FL_PUNCH_HOLE |
			      FALLOC_FL_KEEP_SIZE, (off_t)(i * c->chunk_size),
			      (off_t)len) < 0)
			g_warning("cache %s: cannot free chunk %" G_GUINT64_FORMAT
				  ": %s", c->label, i, g_strerror(errno));
		dropped += len;
	}
	g_mutex_unlock(&c->lock);
	return dropped;
}
