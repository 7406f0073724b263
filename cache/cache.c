// SPDX-License-Identifier: MIT
/*
 * One export's chunks: the sparse data file, the persisted bitmap, chunk
 * states, the readers waiting for chunks, prefetch and LRU eviction.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
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

static char *cache_meta_text(const char *key, const CfsExtentMap *map,
			     guint64 chunk_size)
{
	return g_strdup_printf("size=%" G_GUINT64_FORMAT "\nchunk_size=%"
			       G_GUINT64_FORMAT "\nkey=%s\n", map->size,
			       chunk_size, key);
}

char *cfs_cache_read_file(int dir_fd, const char *name)
{
	char buf[4096];
	int fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return NULL;
	n = pread(fd, buf, sizeof(buf) - 1, 0);
	close(fd);
	if (n < 0)
		return NULL;
	return g_strndup(buf, (gsize)n);
}

char *cfs_cache_read_meta(int dir_fd)
{
	return cfs_cache_read_file(dir_fd, "meta");
}

/* A file of the folder, with exactly @size bytes: an existing one only
 * if @resume, else made anew (never through a symlink). */
static int cache_open_file(CfsCache *c, const char *name, guint64 size,
			   bool resume, GError **error)
{
	struct stat st;
	int fd;

	if (resume) {
		fd = openat(c->dir_fd, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0 && errno != ENOENT && errno != ELOOP)
			return cfs_set_errno(error, errno, name), -1;
		if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
		    st.st_uid == geteuid() && (guint64)st.st_size == size)
			return fd;
		if (fd >= 0)
			close(fd);
		/* Cut short or grown: the caller starts over. */
		errno = ESTALE;
		return -1;
	}
	unlinkat(c->dir_fd, name, 0);
	fd = openat(c->dir_fd, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW |
		    O_CLOEXEC, 0600);
	if (fd < 0)
		return cfs_set_errno(error, errno, name), -1;
	if (ftruncate(fd, (off_t)size) < 0) {
		cfs_set_errno(error, errno, name);
		close(fd);
		return -1;
	}
	return fd;
}

/* This boot of the machine: a crash within it lost no written page. */
static char *cache_boot_id(void)
{
	char *id = NULL;

	if (!g_file_get_contents("/proc/sys/kernel/random/boot_id", &id,
				 NULL, NULL))
		return g_strdup("unknown");
	return g_strstrip(id);
}

/* A small file of the folder, replaced whole. */
static bool cache_write_small(int dir_fd, const char *name, const char *text,
			      GError **error)
{
	g_autofree char *tmp = g_strconcat(name, ".tmp", NULL);
	int fd;
	bool ok;

	unlinkat(dir_fd, tmp, 0);
	fd = openat(dir_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
		    O_CLOEXEC, 0600);
	if (fd < 0)
		return cfs_set_errno(error, errno, name);
	ok = cfs_pwrite_all(fd, text, strlen(text), 0, error);
	if (ok && fdatasync(fd) < 0)
		ok = cfs_set_errno(error, errno, name);
	close(fd);
	if (ok && renameat(dir_fd, tmp, dir_fd, name) < 0)
		ok = cfs_set_errno(error, errno, name);
	return ok;
}

/* Which bitmap a crash left trustworthy: the live one if the machine
 * did not restart since it was written, else the durable one. */
static const char *cache_trusted_bitmap(int dir_fd)
{
	g_autofree char *boot = cfs_cache_read_file(dir_fd, "boot");
	g_autofree char *now = cache_boot_id();

	return boot && g_str_equal(g_strstrip(boot), now) ? "bitmap" :
							    "durable";
}

static bool cache_open_files(CfsCache *c, const char *key, GError **error)
{
	g_autofree char *want = cache_meta_text(key, c->map, c->chunk_size);
	g_autofree char *have = NULL, *boot = cache_boot_id();
	bool resume;
	struct stat st;
	int err;

	if (mkdirat(c->store->dir_fd, c->name, 0700) < 0 && errno != EEXIST)
		return cfs_set_errno(error, errno, c->dir);
	c->dir_fd = openat(c->store->dir_fd, c->name, O_RDONLY | O_DIRECTORY |
			   O_NOFOLLOW | O_CLOEXEC);
	if (c->dir_fd < 0)
		return cfs_set_errno(error, errno, c->dir);
	if (fstat(c->dir_fd, &st) < 0 || st.st_uid != geteuid()) {
		g_set_error(error, CFS_ERROR, EPERM, "%s is not ours", c->dir);
		return false;
	}
	if ((st.st_mode & 07777) != 0700)
		fchmod(c->dir_fd, 0700);
	have = cfs_cache_read_meta(c->dir_fd);
	resume = have && g_str_equal(have, want);
	c->bitmap_len = MAX((c->n_chunks + 31) / 32 * 4, 4);
	c->bitmap = g_malloc0(c->bitmap_len);
	c->durable = g_malloc0(c->bitmap_len);
	for (int again = 0; again < 2; again++) {
		if (!resume) {
			/* A changed source, or a folder left half made:
			 * start over, and write meta last so a crash leaves
			 * no false match. */
			unlinkat(c->dir_fd, "meta", 0);
		}
		c->data_fd = cache_open_file(c, "data", c->map->size, resume,
					     error);
		if (c->data_fd >= 0)
			c->bitmap_fd = cache_open_file(c, "bitmap",
						       c->bitmap_len, resume,
						       error);
		if (c->bitmap_fd >= 0)
			c->durable_fd = cache_open_file(c, "durable",
							c->bitmap_len, resume,
							error);
		if (c->durable_fd >= 0)
			break;
		if (!resume || errno != ESTALE)
			return false;
		g_message("cache %s: files of the wrong length, starting "
			  "over", c->label);
		if (c->data_fd >= 0)
			close(c->data_fd);
		if (c->bitmap_fd >= 0)
			close(c->bitmap_fd);
		c->data_fd = c->bitmap_fd = -1;
		resume = false;
	}
	if (resume) {
		int from = g_str_equal(cache_trusted_bitmap(c->dir_fd),
				       "bitmap") ? c->bitmap_fd : c->durable_fd;

		if (!cfs_pread_all(from, c->bitmap, c->bitmap_len, 0, error) ||
		    !cfs_pread_all(c->durable_fd, c->durable, c->bitmap_len,
				   0, error))
			return false;
		/* What the durable bitmap does not promise is synced again. */
		for (guint64 w = 0; w < c->bitmap_len / 4; w++)
			c->durable[w] &= c->bitmap[w];
		return cfs_pwrite_all(c->bitmap_fd, c->bitmap, c->bitmap_len,
				      0, error) &&
		       cfs_pwrite_all(c->durable_fd, c->durable,
				      c->bitmap_len, 0, error) &&
		       cache_write_small(c->dir_fd, "boot", boot, error);
	}
	/* Sparse bitmaps could fail to be written on a full disk. */
	err = posix_fallocate(c->bitmap_fd, 0, (off_t)c->bitmap_len);
	if (!err)
		err = posix_fallocate(c->durable_fd, 0, (off_t)c->bitmap_len);
	if (err && err != EOPNOTSUPP)
		return cfs_set_errno(error, err, "bitmap");
	return cache_write_small(c->dir_fd, "boot", boot, error) &&
	       cache_write_small(c->dir_fd, "meta", want, error);
}

static void cache_free(CfsCache *c)
{
	g_free(c->bitmap);
	g_free(c->durable);
	if (c->data_fd >= 0)
		close(c->data_fd);
	if (c->bitmap_fd >= 0)
		close(c->bitmap_fd);
	if (c->durable_fd >= 0)
		close(c->durable_fd);
	if (c->dir_fd >= 0)
		close(c->dir_fd);
	g_clear_pointer(&c->waiters, g_hash_table_unref);
	g_clear_pointer(&c->unsynced_list, g_array_unref);
	g_queue_clear(&c->queued);
	cfs_extent_map_unref(c->map);
	g_free(c->state);
	g_free(c->unsynced);
	g_free(c->pins);
	g_free(c->tick);
	g_free(c->dir);
	g_free(c->name);
	g_free(c->label);
	g_mutex_clear(&c->sync_lock);
	g_mutex_clear(&c->lock);
	g_free(c);
}

/* The folder of an export: a readable label and a hash of the key. */
static char *cache_name_for(const char *key, const char *label)
{
	g_autofree char *hash = g_compute_checksum_for_string(G_CHECKSUM_SHA256,
							      key, -1);
	g_autofree char *name = cfs_name_sanitize(label);

	g_strdelimit(name, "/ ", '_');
	hash[16] = '\0';
	return g_strdup_printf("%s-%s", name, hash);
}

guint64 cfs_store_peek(CfsStore *store, const char *key, const char *label,
		       CfsExtentMap *map, guint64 chunk_size)
{
	g_autofree char *name = cache_name_for(key, label);
	g_autofree char *want = cache_meta_text(key, map, chunk_size);
	g_autofree char *have = NULL;
	g_autofree guint32 *bits = NULL;
	guint64 n_chunks = (map->size + chunk_size - 1) / chunk_size;
	gsize len = MAX((n_chunks + 31) / 32 * 4, 4);
	guint64 present = 0;
	int dir_fd, fd = -1;
	bool ok;

	dir_fd = openat(store->dir_fd, name, O_RDONLY | O_DIRECTORY |
			O_NOFOLLOW | O_CLOEXEC);
	if (dir_fd < 0)
		return 0;
	have = cfs_cache_read_meta(dir_fd);
	if (have && g_str_equal(have, want))
		fd = openat(dir_fd, cache_trusted_bitmap(dir_fd),
			    O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	close(dir_fd);
	if (fd < 0)
		return 0;
	bits = g_malloc0(len);
	ok = cfs_pread_all(fd, bits, len, 0, NULL);
	close(fd);
	if (!ok)
		return 0;
	for (guint64 i = 0; i < n_chunks; i++) {
		guint64 off = i * chunk_size, clen = MIN(chunk_size,
							 map->size - off);

		/* The bitmap is words of 32 bits, in host order. */
		if ((bits[i / 32] & (1u << (i % 32))) &&
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
	c->name = cache_name_for(key, label);
	c->dir = g_build_filename(store->dir, c->name, NULL);
	c->label = g_strdup(label);
	c->map = cfs_extent_map_ref(map);
	c->chunk_size = chunk_size;
	c->n_chunks = (map->size + chunk_size - 1) / chunk_size;
	c->parallel = MAX(parallel, 1);
	cfs_window_init(&c->window, WINDOW_START, c->parallel);
	c->fetch = fetch;
	c->owner = owner;
	c->dir_fd = c->data_fd = c->bitmap_fd = c->durable_fd = -1;
	g_mutex_init(&c->lock);
	g_mutex_init(&c->sync_lock);
	c->waiters = g_hash_table_new_full(g_int64_hash, g_int64_equal,
					   g_free,
					   (GDestroyNotify)g_ptr_array_unref);
	c->unsynced_list = g_array_new(FALSE, FALSE, sizeof(guint64));
	cfs_store_claim(store, c->name);
	if (!cache_open_files(c, key, error)) {
		g_prefix_error(error, "cache %s: ", label);
		cache_free(c);
		return NULL;
	}
	c->state = g_new0(guint8, MAX(c->n_chunks, 1));
	c->unsynced = g_new0(guint8, MAX(c->n_chunks, 1));
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
	/* Once attached, eviction may change present: say it before. */
	g_debug("cache %s: %s, %" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT
		" bytes present", label, c->dir, c->present, c->total);
	cfs_store_attach(store, c);
	return c;
}

void cfs_cache_close(CfsCache *c)
{
	g_autoptr(GError) error = NULL;

	if (!c)
		return;
	cfs_store_detach(c->store, c);
	if (!cfs_cache_sync(c, &error))
		g_warning("%s", error->message);
	cache_free(c);
}

/* Write the words covering chunks @idx (sorted) of the bitmap @bits to
 * @fd. Cache lock held: a file never goes back to an older value of a
 * word. */
static bool cache_write_bits(CfsCache *c, int fd, const guint32 *bits,
			     GArray *idx, GError **error)
{
	guint64 last = G_MAXUINT64;

	for (guint i = 0; i < idx->len; i++) {
		guint64 w = g_array_index(idx, guint64, i) / 32;

		if (w == last)
			continue;
		last = w;
		if (!cfs_pwrite_all(fd, &bits[w], 4, w * 4, error))
			return false;
	}
	return true;
}

bool cfs_cache_sync(CfsCache *c, GError **error)
{
	g_autoptr(GArray) batch = NULL;
	g_autoptr(GArray) done = g_array_new(FALSE, FALSE, sizeof(guint64));
	bool ok = true;

	g_mutex_lock(&c->sync_lock);
	g_mutex_lock(&c->lock);
	batch = c->unsynced_list;
	c->unsynced_list = g_array_new(FALSE, FALSE, sizeof(guint64));
	for (guint i = 0; i < batch->len; i++) {
		guint64 idx = g_array_index(batch, guint64, i);

		if (c->unsynced[idx] == 1)
			c->unsynced[idx] = 2;
	}
	g_mutex_unlock(&c->lock);
	if (batch->len == 0) {
		g_mutex_unlock(&c->sync_lock);
		return true;
	}
	/* The data first: a bit on the disk promises its chunk's bytes. */
	if (fdatasync(c->data_fd) < 0)
		ok = cfs_set_errno(error, errno, "data");
	g_mutex_lock(&c->lock);
	for (guint i = 0; i < batch->len; i++) {
		guint64 idx = g_array_index(batch, guint64, i);

		if (c->unsynced[idx] != 2)
			continue;	/* dropped, or landed again since */
		if (!ok) {
			/* Try again next time. */
			c->unsynced[idx] = 1;
			g_array_append_val(c->unsynced_list, idx);
			continue;
		}
		c->unsynced[idx] = 0;
		if (CHUNK_STATE(c->state[idx]) != CHUNK_PRESENT)
			continue;
		c->durable[idx / 32] |= 1u << (idx % 32);
		g_array_append_val(done, idx);
	}
	if (ok)
		ok = cache_write_bits(c, c->durable_fd, c->durable, done,
				      error);
	g_mutex_unlock(&c->lock);
	if (ok && done->len && fdatasync(c->durable_fd) < 0)
		ok = cfs_set_errno(error, errno, "durable");
	g_mutex_unlock(&c->sync_lock);
	if (!ok)
		g_prefix_error(error, "cache %s: sync: ", c->label);
	return ok;
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
		guint claimed = 0;

		/* Every chunk was present, in flight or a hole at the last
		 * scan, and none has gone since: nothing to scan for (a
		 * sparse disk of 2 TiB has half a million chunks). */
		if (c->filled_gen == c->absent_gen + 1)
			return;
		while (claimed < budget && scanned < c->n_chunks) {
			guint64 idx = c->fill_cursor;

			c->fill_cursor = (c->fill_cursor + 1) % c->n_chunks;
			scanned++;
			if (cache_claim_locked(c, idx)) {
				g_array_append_val(out, idx);
				claimed++;
			}
		}
		c->fill_scanned += scanned;
		if (claimed == 0)
			c->filled_gen = c->absent_gen + 1;
		return;
	}
	for (guint s = 0; s < G_N_ELEMENTS(c->seq) && budget > 0; s++) {
		guint64 first, last;

		/* One read is not a sequence, nor two pages of one
		 * unaligned read: a random reader gets only the chunks it
		 * asks for. */
		if (!c->seq[s].told_end && (c->seq[s].reads < 2 ||
		    c->seq[s].end - c->seq[s].start < SEQ_MIN))
			continue;
		first = c->seq[s].end / c->chunk_size;
		g_debug("cache %s: sequential reader %" G_GUINT64_FORMAT "-%"
			G_GUINT64_FORMAT " (%u reads): prefetch from chunk %"
			G_GUINT64_FORMAT, c->label, c->seq[s].start,
			c->seq[s].end, c->seq[s].reads, first);
		last = MIN(first + c->window.size, c->n_chunks - 1);
		if (c->seq[s].told_end > c->seq[s].end)
			last = MIN(last, (c->seq[s].told_end - 1) /
					 c->chunk_size);
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

/* The sequential run that a read at @off continues, or a new one (the
 * oldest is forgotten). Lock held. */
static guint cache_seq_at(CfsCache *c, guint64 off)
{
	guint s;

	for (s = 0; s < G_N_ELEMENTS(c->seq); s++) {
		if ((c->seq[s].end != c->seq[s].start ||
		     c->seq[s].told_end) &&
		    off + SEQ_SLACK >= c->seq[s].end &&
		    off <= c->seq[s].end + SEQ_SLACK)
			return s;
	}
	s = c->seq_next;
	c->seq_next = (c->seq_next + 1) % G_N_ELEMENTS(c->seq);
	c->seq[s].start = off;
	c->seq[s].end = off;
	c->seq[s].reads = 0;
	c->seq[s].told_end = 0;
	return s;
}

void cfs_cache_note_extent(CfsCache *c, guint64 off, guint64 len)
{
	g_autoptr(GArray) fetch = g_array_new(FALSE, FALSE, sizeof(guint64));
	guint s;

	if (c->n_chunks == 0 || len == 0)
		return;
	g_mutex_lock(&c->lock);
	s = cache_seq_at(c, off);
	c->seq[s].told_end = MAX(c->seq[s].told_end, off + len);
	cache_pump(c, fetch);
	g_mutex_unlock(&c->lock);
	cache_fetch_all(c, fetch, false);
}

void cfs_cache_note_read(CfsCache *c, guint64 off, guint64 len)
{
	g_autoptr(GArray) fetch = g_array_new(FALSE, FALSE, sizeof(guint64));
	guint s;

	if (c->n_chunks == 0)
		return;
	g_mutex_lock(&c->lock);
	s = cache_seq_at(c, off);
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
	/* Published once registered, under the lock: before, an interrupt
	 * could cancel and free a hold this loop still used; after, no
	 * chunk can land before the owner sees it. */
	g_atomic_pointer_set(hold_out, hold);
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

int cfs_cache_data_fd(const CfsCache *c)
{
	return c->data_fd;
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
		c->absent_gen++;
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
		/* Survives the daemon at once, a power loss once its data
		 * is on the disk (cfs_cache_sync()). */
		if (pwrite(c->bitmap_fd, &c->bitmap[idx / 32], 4,
			   (off_t)(idx / 32 * 4)) != 4)
			g_warning("cache %s: bitmap: %s", c->label,
				  g_strerror(errno));
		c->unsynced[idx] = 1;
		g_array_append_val(c->unsynced_list, idx);
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
	stats->scanned = c->fill_scanned;
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
	g_autoptr(GArray) drop = g_array_new(FALSE, FALSE, sizeof(guint64));
	g_autoptr(GError) error = NULL;
	guint64 dropped = 0;
	bool durable = false;

	g_mutex_lock(&c->lock);
	for (guint64 i = 0; i < c->n_chunks && dropped < want; i++) {
		guint64 len = cfs_chunk_len(c, i);

		if (c->state[i] != CHUNK_PRESENT || c->pins[i] ||
		    c->tick[i] >= before)
			continue;
		/* Forget the chunk before its bytes go, under the lock, so
		 * no reader or fetch sees it half gone. */
		c->state[i] = CHUNK_ABSENT;
		c->absent_gen++;
		c->unsynced[i] = 0;
		bitmap_set(c, i, false);
		if (c->durable[i / 32] & (1u << (i % 32))) {
			c->durable[i / 32] &= ~(1u << (i % 32));
			durable = true;
		}
		c->present -= len;
		g_array_append_val(drop, i);
		dropped += len;
	}
	/* The bitmap on the disk must not promise a chunk whose bytes are
	 * gone: it is synced before the holes are punched. Should that
	 * fail, the bytes stay (the space is not freed). */
	if (!cache_write_bits(c, c->bitmap_fd, c->bitmap, drop, &error) ||
	    (durable && (!cache_write_bits(c, c->durable_fd, c->durable, drop,
					   &error) ||
			 fdatasync(c->durable_fd) < 0))) {
		g_warning("cache %s: cannot drop chunks: %s", c->label,
			  error ? error->message : g_strerror(errno));
		drop->len = 0;
	}
	for (guint k = 0; k < drop->len; k++) {
		guint64 i = g_array_index(drop, guint64, k);

		if (fallocate(c->data_fd, FALLOC_FL_PUNCH_HOLE |
			      FALLOC_FL_KEEP_SIZE, (off_t)(i * c->chunk_size),
			      (off_t)cfs_chunk_len(c, i)) < 0)
			g_warning("cache %s: cannot free chunk %" G_GUINT64_FORMAT
				  ": %s", c->label, i, g_strerror(errno));
	}
	g_mutex_unlock(&c->lock);
	return dropped;
}

guint64 cfs_cache_forget(CfsCache *c)
{
	guint64 dropped;

	/* Every chunk the oldest of all, then evicted as the least
	 * recently used are (tick 0 is below 1). */
	g_mutex_lock(&c->lock);
	memset(c->tick, 0, MAX(c->n_chunks, 1) * sizeof(*c->tick));
	g_mutex_unlock(&c->lock);
	dropped = cfs_cache_evict(c, 1, G_MAXUINT64);
	if (dropped)
		cfs_store_account(c->store, -(gint64)dropped);
	return dropped;
}
