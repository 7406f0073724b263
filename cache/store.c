// SPDX-License-Identifier: MIT
/*
 * The cache folder: its size limit, the free-space floor, folders of
 * exports not open now (dormant: the least recently used of all, removed
 * first), and LRU eviction of chunks across the open exports.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "cache-private.h"
#include "common/error.h"
#include "common/util.h"

#define STORE_TAG "CACHEDIR.TAG"
/* The Cache Directory Tagging convention: backup tools skip the folder. */
#define STORE_TAG_SIGNATURE "Signature: 8a477f597d28d172789f06886806bc55"
static const char store_tag_text[] =
	STORE_TAG_SIGNATURE "\n"
	"# This file is a cache directory tag created by cloudfs.\n"
	"# For information about cache directory tags see "
	"https://bford.info/cachedir/\n";

/* The files an export folder holds; nothing else is ever deleted. */
static const char *const store_export_files[] = {
	"meta", "meta.tmp", "data", "bitmap", "durable", "boot", "boot.tmp",
};

typedef struct {
	char *path;
	char *name;	/* in the store's folder */
	guint64 bytes;
	gint64 mtime;
} StoreDormant;

static void dormant_free(StoreDormant *d)
{
	g_free(d->path);
	g_free(d->name);
	g_free(d);
}

static gint dormant_cmp(gconstpointer a, gconstpointer b)
{
	const StoreDormant *x = a, *y = b;

	return x->mtime < y->mtime ? -1 : x->mtime > y->mtime;
}

bool cfs_store_is_export_dir(int dir_fd, const char *name)
{
	g_autofree char *meta = NULL;
	struct stat st;
	int fd;

	if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
	    !S_ISDIR(st.st_mode) || st.st_uid != geteuid())
		return false;
	fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
		    O_CLOEXEC);
	if (fd < 0)
		return false;
	meta = cfs_cache_read_meta(fd);
	close(fd);
	return meta && g_str_has_prefix(meta, "size=");
}

/* Bytes an export folder's files take on disk. */
static guint64 dir_usage(int dir_fd, const char *name)
{
	guint64 total = 0;
	int fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
			O_CLOEXEC);

	for (guint i = 0; fd >= 0 && i < G_N_ELEMENTS(store_export_files);
	     i++) {
		struct stat st;

		if (fstatat(fd, store_export_files[i], &st,
			    AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
			total += (guint64)st.st_blocks * 512;
	}
	if (fd >= 0)
		close(fd);
	return total;
}

/* Remove an export folder: only the files cloudfs makes in one, and the
 * folder if that left it empty. */
static void dir_remove(int dir_fd, const char *name)
{
	int fd;

	if (!cfs_store_is_export_dir(dir_fd, name))
		return;
	fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
		    O_CLOEXEC);
	if (fd < 0)
		return;
	/* meta first: a half-removed folder is never taken for a cache. */
	for (guint i = 0; i < G_N_ELEMENTS(store_export_files); i++)
		unlinkat(fd, store_export_files[i], 0);
	close(fd);
	if (unlinkat(dir_fd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		g_message("cache: left %s: %s", name, g_strerror(errno));
}

/* Whether the folder or a parent of it can be changed by someone else:
 * then a planted file or symlink could make root write through it. */
static bool store_check_path(const char *dir, GError **error)
{
	g_autofree char *path = realpath(dir, NULL);
	uid_t me = geteuid();

	bool leaf = true;

	if (!path)
		return cfs_set_errno(error, errno, dir);
	for (;; leaf = false) {
		struct stat st;
		char *slash;

		if (lstat(path, &st) < 0)
			return cfs_set_errno(error, errno, path);
		if (st.st_uid != 0 && st.st_uid != me) {
			g_set_error(error, CFS_ERROR, EPERM, "%s belongs to "
				    "user %u: the cache must be in folders only "
				    "you (or root) own", path,
				    (unsigned)st.st_uid);
			return false;
		}
		if ((st.st_mode & 022) &&
		    !((st.st_mode & S_ISVTX) && st.st_uid == 0 && !leaf)) {
			g_set_error(error, CFS_ERROR, EPERM, "%s can be "
				    "written by others (mode %04o): the cache "
				    "must be in folders only you can change",
				    path, (unsigned)(st.st_mode & 07777));
			return false;
		}
		if (g_str_equal(path, "/"))
			return true;
		slash = strrchr(path, '/');
		if (slash == path)
			slash[1] = '\0';
		else
			*slash = '\0';
	}
}

static bool store_tagged(int dir_fd)
{
	char buf[sizeof(STORE_TAG_SIGNATURE)] = { 0 };
	int fd = openat(dir_fd, STORE_TAG, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	return n == (ssize_t)sizeof(buf) - 1 &&
	       memcmp(buf, STORE_TAG_SIGNATURE, sizeof(buf) - 1) == 0;
}

/* A folder without our tag is ours to take only if it is empty or holds
 * nothing but export folders (a cache of an older cloudfs); then tag it. */
static bool store_adopt(const char *dir, int dir_fd, GError **error)
{
	g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
	const char *name;
	int fd;

	while (d && (name = g_dir_read_name(d))) {
		if (!cfs_store_is_export_dir(dir_fd, name)) {
			g_set_error(error, CFS_ERROR, EEXIST, "%s holds %s, "
				    "which cloudfs did not make: give an empty "
				    "or new folder", dir, name);
			return false;
		}
	}
	fd = openat(dir_fd, STORE_TAG, O_WRONLY | O_CREAT | O_EXCL |
		    O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0 || !cfs_pwrite_all(fd, store_tag_text,
				      sizeof(store_tag_text) - 1, 0, error)) {
		if (fd < 0)
			cfs_set_errno(error, errno, STORE_TAG);
		else
			close(fd);
		g_prefix_error(error, "%s: ", dir);
		return false;
	}
	close(fd);
	return true;
}

static gpointer store_sync_thread(gpointer data);

CfsStore *cfs_store_new(const char *dir, guint64 limit, guint64 min_free,
			GError **error)
{
	CfsStore *store;
	g_autoptr(GDir) d = NULL;
	const char *name;
	int fd;
	struct stat st;

	if (g_mkdir_with_parents(dir, 0700) < 0) {
		cfs_set_errno(error, errno, dir);
		g_prefix_error(error, "cache folder: ");
		return NULL;
	}
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0 || !store_check_path(dir, error) ||
	    (!store_tagged(fd) && !store_adopt(dir, fd, error))) {
		if (fd < 0 || (error && !*error))
			cfs_set_errno(error, errno, dir);
		if (fd >= 0)
			close(fd);
		g_prefix_error(error, "cache folder: ");
		return NULL;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int err = errno;

		close(fd);
		if (err == EWOULDBLOCK)
			g_set_error(error, CFS_ERROR, EBUSY, "cache folder %s "
				    "is in use by another cloudfs (give each "
				    "mount its own cache_dir)", dir);
		else
			cfs_set_errno(error, err, dir);
		return NULL;
	}
	if ((st.st_mode & 07777) != 0700)
		fchmod(fd, 0700);	/* ours: tagged */
	store = g_new0(CfsStore, 1);
	store->dir = g_strdup(dir);
	store->dir_fd = fd;
	store->limit = limit;
	store->min_free = min_free;
	g_mutex_init(&store->lock);
	g_cond_init(&store->cond);
	d = g_dir_open(dir, 0, NULL);
	while (d && (name = g_dir_read_name(d))) {
		StoreDormant *dm;

		if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !cfs_store_is_export_dir(fd, name))
			continue;
		dm = g_new0(StoreDormant, 1);
		dm->path = g_build_filename(dir, name, NULL);
		dm->name = g_strdup(name);
		dm->bytes = dir_usage(fd, name);
		dm->mtime = st.st_mtime;
		store->usage += dm->bytes;
		store->dormant = g_list_insert_sorted(store->dormant, dm,
						      dormant_cmp);
	}
	/* The syncer starts with the first cache: a daemon forks after the
	 * store is made, and a fork keeps no thread but its caller. */
	return store;
}

void cfs_store_free(CfsStore *store)
{
	if (!store)
		return;
	g_assert(!store->caches);
	g_mutex_lock(&store->lock);
	store->stopping = true;
	g_cond_broadcast(&store->cond);
	g_mutex_unlock(&store->lock);
	if (store->syncer)
		g_thread_join(store->syncer);
	g_list_free_full(store->dormant, (GDestroyNotify)dormant_free);
	close(store->dir_fd);	/* and the lock with it */
	g_cond_clear(&store->cond);
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

/* Store lock held. */
static void store_forget_dormant(CfsStore *store, const char *name)
{
	for (GList *l = store->dormant; l; l = l->next) {
		StoreDormant *d = l->data;

		if (g_str_equal(d->name, name)) {
			store->usage -= d->bytes;
			dormant_free(d);
			store->dormant = g_list_delete_link(store->dormant, l);
			break;
		}
	}
}

void cfs_store_claim(CfsStore *store, const char *name)
{
	g_mutex_lock(&store->lock);
	store_forget_dormant(store, name);
	g_mutex_unlock(&store->lock);
}

void cfs_store_attach(CfsStore *store, CfsCache *cache)
{
	g_mutex_lock(&store->lock);
	store_forget_dormant(store, cache->name);
	store->usage += cache->present;
	store->caches = g_list_prepend(store->caches, cache);
	if (!store->syncer)
		store->syncer = g_thread_new("cfs-sync", store_sync_thread,
					     store);
	g_mutex_unlock(&store->lock);
	cfs_store_account(store, 0);
}

void cfs_store_detach(CfsStore *store, CfsCache *cache)
{
	StoreDormant *d = g_new0(StoreDormant, 1);

	/* Its folder stays, counted and evictable as a whole, the newest
	 * of the dormant ones. */
	d->path = g_strdup(cache->dir);
	d->name = g_strdup(cache->name);
	d->mtime = g_get_real_time() / G_USEC_PER_SEC;
	g_mutex_lock(&store->lock);
	store->caches = g_list_remove(store->caches, cache);
	/* An eviction or sync may walk a copy of the list holding it. */
	while (store->walkers)
		g_cond_wait(&store->cond, &store->lock);
	g_mutex_lock(&cache->lock);
	d->bytes = cache->present;
	g_mutex_unlock(&cache->lock);
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

static void store_walk_end(CfsStore *store)
{
	g_mutex_lock(&store->lock);
	if (--store->walkers == 0)
		g_cond_broadcast(&store->cond);
	g_mutex_unlock(&store->lock);
}

static void store_evict_caches(CfsStore *store, GList *caches,
			       guint64 excess);

static void store_evict(CfsStore *store)
{
	g_autoptr(GList) caches = NULL;
	guint64 excess;

	g_mutex_lock(&store->lock);
	/* Folders of exports not open now go first, oldest first. */
	while ((excess = store_excess(store)) > 0 && store->dormant) {
		StoreDormant *d = store->dormant->data;

		g_message("cache: removing %s to make room", d->path);
		dir_remove(store->dir_fd, d->name);
		store->usage -= d->bytes;
		store->dormant = g_list_delete_link(store->dormant,
						    store->dormant);
		dormant_free(d);
	}
	caches = g_list_copy(store->caches);
	store->walkers++;
	g_mutex_unlock(&store->lock);
	if (excess > 0)
		store_evict_caches(store, caches, excess);
	store_walk_end(store);
}

/* Evict the least recently used chunks of @caches (held by a walk). */
static void store_evict_caches(CfsStore *store, GList *caches, guint64 excess)
{
	g_autoptr(GArray) ticks = g_array_new(FALSE, FALSE, sizeof(guint32));
	guint64 dropped = 0, chunk = 0;
	guint32 before;
	guint n;

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

/* Each second, make what landed durable (cfs_cache_sync()). */
static gpointer store_sync_thread(gpointer data)
{
	CfsStore *store = data;

	g_mutex_lock(&store->lock);
	while (!store->stopping) {
		g_autoptr(GList) caches = NULL;
		gint64 until = g_get_monotonic_time() + G_USEC_PER_SEC;

		while (!store->stopping &&
		       g_cond_wait_until(&store->cond, &store->lock, until))
			;
		if (store->stopping)
			break;
		caches = g_list_copy(store->caches);
		store->walkers++;
		g_mutex_unlock(&store->lock);
		for (GList *l = caches; l; l = l->next) {
			g_autoptr(GError) error = NULL;

			if (!cfs_cache_sync(l->data, &error))
				g_warning("%s", error->message);
		}
		store_walk_end(store);
		g_mutex_lock(&store->lock);
	}
	g_mutex_unlock(&store->lock);
	return NULL;
}
