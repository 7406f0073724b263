// SPDX-License-Identifier: MIT
/*
 * The cache folder: its size limit, the free-space floor, folders of
 * exports not open now (dormant: the least recently used of all, removed
 * first), and LRU eviction of chunks across the open exports.
 */
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "cache-private.h"
#include "common/error.h"

typedef struct {
	char *path;
	guint64 bytes;
	gint64 mtime;
} StoreDormant;

static void dormant_free(StoreDormant *d)
{
	g_free(d->path);
	g_free(d);
}

static gint dormant_cmp(gconstpointer a, gconstpointer b)
{
	const StoreDormant *x = a, *y = b;

	return x->mtime < y->mtime ? -1 : x->mtime > y->mtime;
}

/* Bytes a folder's files take on disk. */
static guint64 dir_usage(const char *path)
{
	g_autoptr(GDir) dir = g_dir_open(path, 0, NULL);
	const char *name;
	guint64 total = 0;

	while (dir && (name = g_dir_read_name(dir))) {
		g_autofree char *file = g_build_filename(path, name, NULL);
		struct stat st;

		if (lstat(file, &st) == 0 && S_ISREG(st.st_mode))
			total += (guint64)st.st_blocks * 512;
	}
	return total;
}

static void dir_remove(const char *path)
{
	g_autoptr(GDir) dir = g_dir_open(path, 0, NULL);
	const char *name;

	while (dir && (name = g_dir_read_name(dir))) {
		g_autofree char *file = g_build_filename(path, name, NULL);

		unlink(file);
	}
	rmdir(path);
}

CfsStore *cfs_store_new(const char *dir, guint64 limit, guint64 min_free,
			GError **error)
{
	CfsStore *store;
	g_autoptr(GDir) d = NULL;
	const char *name;

	if (g_mkdir_with_parents(dir, 0700) < 0) {
		cfs_set_errno(error, errno, dir);
		g_prefix_error(error, "cache folder: ");
		return NULL;
	}
	if (access(dir, W_OK | X_OK) < 0) {
		cfs_set_errno(error, errno, dir);
		g_prefix_error(error, "cache folder: ");
		return NULL;
	}
	chmod(dir, 0700);
	store = g_new0(CfsStore, 1);
	store->dir = g_strdup(dir);
	store->limit = limit;
	store->min_free = min_free;
	g_mutex_init(&store->lock);
	d = g_dir_open(dir, 0, NULL);
	while (d && (name = g_dir_read_name(d))) {
		StoreDormant *dm;
		struct stat st;
		g_autofree char *path = g_build_filename(dir, name, NULL);

		if (lstat(path, &st) < 0 || !S_ISDIR(st.st_mode))
			continue;
		dm = g_new0(StoreDormant, 1);
		dm->path = g_steal_pointer(&path);
		dm->bytes = dir_usage(dm->path);
		dm->mtime = st.st_mtime;
		store->usage += dm->bytes;
		store->dormant = g_list_insert_sorted(store->dormant, dm,
						      dormant_cmp);
	}
	return store;
}

void cfs_store_free(CfsStore *store)
{
	if (!store)
		return;
	g_assert(!store->caches);
	g_list_free_full(store->dormant, (GDestroyNotify)dormant_free);
	g_mutex_clear(&store->lock);
	g_free(store->dir);
	g_free(store);
}

guint64 cfs_store_limit(CfsStore *store)
{
	return store->limit;
}

guint64 cfs_store_usage(CfsStore *store)
{
	guint64 usage;

	g_mutex_lock(&store->lock);
	usage = store->usage;
	g_mutex_unlock(&store->lock);
	return usage;
}

void cfs_store_attach(CfsStore *store, CfsCache *cache)
{
	g_mutex_lock(&store->lock);
	for (GList *l = store->dormant; l; l = l->next) {
		StoreDormant *d = l->data;

		if (g_str_equal(d->path, cache->dir)) {
			store->usage -= d->bytes;
			dormant_free(d);
			store->dormant = g_list_delete_link(store->dormant, l);
			break;
		}
	}
	store->usage += cache->present;
	store->caches = g_list_prepend(store->caches, cache);
	g_mutex_unlock(&store->lock);
	cfs_store_account(store, 0);
}

void cfs_store_detach(CfsStore *store, CfsCache *cache)
{
	StoreDormant *d = g_new0(StoreDormant, 1);

	/* Its folder stays, counted and evictable as a whole, the newest
	 * of the dormant ones. */
	d->path = g_strdup(cache->dir);
	d->bytes = cache->present;
	d->mtime = g_get_real_time() / G_USEC_PER_SEC;
	g_mutex_lock(&store->lock);
	store->caches = g_list_remove(store->caches, cache);
	store->dormant = g_list_append(store->dormant, d);
	g_mutex_unlock(&store->lock);
}

/* Bytes to free: over the limit (down to 90% of it), or under the
 * free-space floor. Store lock held. */
static guint64 store_excess(CfsStore *store)
{
	guint64 excess = 0;
	struct statvfs vfs;

	if (store->limit && store->usage > store->limit)
		excess = store->usage - store->limit / 10 * 9;
	if (store->min_free && statvfs(store->dir, &vfs) == 0) {
		guint64 avail = (guint64)vfs.f_bavail * vfs.f_frsize;

		if (avail < store->min_free)
			excess = MAX(excess, store->min_free - avail);
	}
	return excess;
}

static gint tick_cmp(gconstpointer a, gconstpointer b)
{
	guint32 x = *(const guint32 *)a, y = *(const guint32 *)b;

	return x < y ? -1 : x > y;
}

static void store_evict(CfsStore *store)
{
	g_autoptr(GArray) ticks = g_array_new(FALSE, FALSE, sizeof(guint32));
	g_autoptr(GList) caches = NULL;
	guint64 excess, dropped = 0, chunk = 0;
	guint32 before;
	guint n;

	g_mutex_lock(&store->lock);
	/* Folders of exports not open now go first, oldest first. */
	while ((excess = store_excess(store)) > 0 && store->dormant) {
		StoreDormant *d = store->dormant->data;

		g_message("cache: removing %s to make room", d->path);
		dir_remove(d->path);
		store->usage -= d->bytes;
		store->dormant = g_list_delete_link(store->dormant,
						    store->dormant);
		dormant_free(d);
	}
	caches = g_list_copy(store->caches);
	g_mutex_unlock(&store->lock);
	if (excess == 0)
		return;

	/* The tick below which enough chunks are old to cover the excess. */
	for (GList *l = caches; l; l = l->next) {
		CfsCache *c = l->data;

		cfs_cache_collect_ticks(c, ticks);
		chunk = MAX(chunk, c->chunk_size);
	}
	if (ticks->len == 0 || chunk == 0)
		return;
	g_array_sort(ticks, tick_cmp);
	n = (guint)MIN((excess + chunk - 1) / chunk, ticks->len);
	before = g_array_index(ticks, guint32, MAX(n, 1) - 1) + 1;
	for (GList *l = caches; l && dropped < excess; l = l->next)
		dropped += cfs_cache_evict(l->data, before, excess - dropped);

	g_mutex_lock(&store->lock);
	store->usage -= MIN(dropped, store->usage);
	g_mutex_unlock(&store->lock);
	g_debug("cache: evicted %" G_GUINT64_FORMAT " bytes", dropped);
}

void cfs_store_account(CfsStore *store, gint64 delta)
{
	bool over;

	g_mutex_lock(&store->lock);
	store->usage += delta;
	over = store_excess(store) > 0;
	g_mutex_unlock(&store->lock);
	if (over && g_atomic_int_compare_and_exchange(&store->evicting, 0, 1)) {
		store_evict(store);
		g_atomic_int_set(&store->evicting, 0);
	}
}
