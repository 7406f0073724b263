/* SPDX-License-Identifier: MIT */
/* Shared between the store (folder, limit, eviction) and the per-export
 * chunk cache. Not for use outside cache/. */
#pragma once

#include "cache.h"
#include "cache/window.h"

enum {
	CHUNK_ABSENT = 0,
	CHUNK_INFLIGHT,		/* claimed, being fetched */
	CHUNK_PRESENT,
	CHUNK_HOLE,		/* no data in the map: reads as zeros */
};
#define CHUNK_QUEUED 0x40	/* flag on INFLIGHT: waits for a slot */
#define CHUNK_STATE(s) ((s) & 0x3f)

struct CfsStore {
	char *dir;
	int dir_fd;		/* the folder, flock()ed while the store lives;
				 * every file in it is opened relative to it */
	guint64 limit;
	guint64 min_free;

	GMutex lock;
	GCond cond;		/* walkers fell to 0, or stopping */
	GList *caches;		/* protected by lock */
	guint walkers;		/* protected by lock: threads walking a copy of
				 * caches (eviction, sync); a cache is not
				 * detached while one runs */
	bool stopping;		/* protected by lock: the sync thread ends */
	GThread *syncer;	/* makes completed chunks durable each second;
				 * started with the first cache, under lock */
	guint64 usage;		/* protected by lock: bytes of chunks + dormant */
	GList *dormant;		/* protected by lock: StoreDormant*, oldest first */
	guint32 clock;		/* atomic: LRU ticks */
	gint evicting;		/* atomic: one eviction at a time */
};

struct CfsCache {
	CfsStore *store;
	char *dir;		/* for messages */
	char *name;		/* the folder's name in the store */
	int dir_fd;
	char *label;
	CfsExtentMap *map;
	guint64 chunk_size;
	guint64 n_chunks;
	guint parallel;
	CfsCacheFetchFn fetch;
	gpointer owner;
	int data_fd;
	int bitmap_fd;		/* "bitmap": chunks present now, written at
				 * once; trusted after a crash only in the
				 * same boot (file "boot"), when the page
				 * cache kept every byte written */
	int durable_fd;		/* "durable": trusted after a power loss */
	guint32 *bitmap;	/* protected by lock: chunks present now */
	guint32 *durable;	/* protected by lock: what "durable" says; a
				 * bit is set only once the chunk's data was
				 * synced, and cleared (and synced) before its
				 * data is dropped */
	gsize bitmap_len;
	GMutex sync_lock;	/* one cfs_cache_sync() at a time; before lock */

	GMutex lock;
	guint8 *state;		/* protected by lock */
	guint8 *unsynced;	/* protected by lock: 1 present since the last
				 * sync, 2 in the sync running now, else 0 */
	GArray *unsynced_list;	/* protected by lock: guint64 idx, where
				 * unsynced is 1 (maybe stale) */
	guint16 *pins;		/* protected by lock */
	guint32 *tick;		/* protected by lock: last use, for LRU */
	GHashTable *waiters;	/* protected by lock: idx -> GPtrArray of holds */
	guint64 present;	/* protected by lock */
	guint64 total;		/* constant: bytes of data chunks */
	guint inflight;		/* protected by lock: claimed, not done */
	GQueue queued;		/* protected by lock: demand chunks claimed
				 * while `parallel` fetches ran, oldest first */
	int readers;		/* protected by lock */
	bool fill_all;		/* protected by lock */
	guint64 fill_cursor;	/* protected by lock */
	guint64 absent_gen;	/* protected by lock: counts chunks that
				 * became absent again (failed, evicted) */
	guint64 filled_gen;	/* protected by lock: absent_gen + 1 when a
				 * fill found no chunk left to fetch */
	guint64 fill_scanned;	/* protected by lock: chunks it looked at */
	struct {
		guint64 start, end;
		guint reads;
		guint64 told_end;	/* a reader said it reads up to
					 * here (SEEK_HOLE), or 0 */
	} seq[4];		/* protected by lock: sequential readers */
	guint seq_next;		/* protected by lock */
	CfsWindow window;	/* protected by lock: prefetches in flight */
};

/* Bytes of chunk @idx (the last one may be short). */
static inline guint64 cfs_chunk_len(const CfsCache *c, guint64 idx)
{
	guint64 off = idx * c->chunk_size;

	return MIN(c->chunk_size, c->map->size - off);
}

/* store.c: account for chunks that came or went; may evict. No lock. */
void cfs_store_account(CfsStore *store, gint64 delta);
/* store.c: a cache is about to open the folder @name: it is no longer
 * dormant, so eviction leaves it alone. */
void cfs_store_claim(CfsStore *store, const char *name);
/* store.c: register an open cache (and forget its folder as dormant). */
void cfs_store_attach(CfsStore *store, CfsCache *cache);
/* Waits for eviction and sync walks that may hold @cache. */
void cfs_store_detach(CfsStore *store, CfsCache *cache);
/* store.c: whether @name in the store's folder is an export folder that
 * cloudfs made (it has a meta file of ours). */
bool cfs_store_is_export_dir(int dir_fd, const char *name);
/* cache.c: read a cache folder's meta file (no symlink followed).
 * Transfer full; NULL if none. */
char *cfs_cache_read_meta(int dir_fd);
/* cache.c: a small file of a cache folder. Transfer full; NULL if none. */
char *cfs_cache_read_file(int dir_fd, const char *name);
/* cache.c: drop up to @want bytes of unpinned present chunks older than
 * @before (LRU tick). Cache lock not held. Returns bytes dropped. */
guint64 cfs_cache_evict(CfsCache *cache, guint32 before, guint64 want);
/* cache.c: append the LRU tick of every evictable chunk to @ticks
 * (guint32). Cache lock not held. */
void cfs_cache_collect_ticks(CfsCache *cache, GArray *ticks);
