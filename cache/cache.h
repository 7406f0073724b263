/* SPDX-License-Identifier: MIT */
/*
 * The chunk cache. A CfsStore is the cache folder with its size limit; a
 * CfsCache is one export's chunks in it: a sparse data file and a
 * persisted bitmap of the chunks that are complete, so that a restarted
 * daemon resumes and never serves a chunk it did not finish.
 *
 * Readers acquire the chunks a read needs: present ones are pinned, absent
 * ones are fetched once (single flight) and the reader is woken when the
 * last of them lands. The cache also decides what to prefetch (a window
 * ahead of sequential readers, or the whole disk once a reader starts at
 * offset 0 and the disk fits in the cache) and evicts the least recently
 * used chunks that nobody holds when the store is over its limit.
 *
 * Fetching itself is the owner's: the cache calls its fetch function for
 * each chunk it claimed, and the owner writes the bytes with
 * cfs_cache_write() and ends with cfs_cache_chunk_done().
 *
 * Lock order: store lock, then cache lock. No callback is called with a
 * lock held.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>

#include "common/extent.h"

typedef struct CfsStore CfsStore;
typedef struct CfsCache CfsCache;
typedef struct CfsCacheHold CfsCacheHold;

/* Fetch chunk @idx. Called without locks from the thread that claimed it
 * (a FUSE thread or whoever completed the previous chunk). */
typedef void (*CfsCacheFetchFn)(gpointer owner, guint64 idx, bool demand);

/* The chunks a hold waits for are present (@error NULL) or one of them
 * failed. Called once, without locks, from any thread. */
typedef void (*CfsCacheWakeFn)(CfsCacheHold *hold, gpointer data,
			       const GError *error);

/* Open the cache folder @dir (created 0700). @limit: bytes of chunk data
 * to keep at most (0: no limit); @min_free: free space to leave on the
 * file system. Main thread. Transfer full.
 *
 * The folder is trusted only if nobody but this user (and root) can
 * change it or a parent: one owned by another user, or group- or
 * world-writable, is refused (a parent may be world-writable with the
 * sticky bit, like /tmp, if root owns it). A folder cloudfs did not make
 * (no CACHEDIR.TAG of ours, and files that are not export folders) is
 * refused too: cloudfs deletes only what it made. The folder stays locked
 * (flock) until cfs_store_free(): a second daemon on it fails (EBUSY). */
CfsStore *cfs_store_new(const char *dir, guint64 limit, guint64 min_free,
			GError **error);
/* All caches must be closed first. */
void cfs_store_free(CfsStore *store);
guint64 cfs_store_limit(CfsStore *store);
/* Bytes the cache folder holds (chunks of open and closed exports). Any
 * thread. */
guint64 cfs_store_usage(CfsStore *store);

/*
 * Open (or resume) the cache of one export. @key identifies the exported
 * bytes (provider, disk, and the identity of the source: snapshot id,
 * ETag, …); @label is a readable name for the folder. Chunks with no data
 * in @map are holes: never fetched, always present. @parallel: at most
 * this many chunks fetched at once; prefetch starts with fewer and grows
 * while the rate grows (window.h). Any thread.
 */
CfsCache *cfs_cache_open(CfsStore *store, const char *key, const char *label,
			 CfsExtentMap *map, guint64 chunk_size, guint parallel,
			 CfsCacheFetchFn fetch, gpointer owner,
			 GError **error);
/* No fetch may be running and no hold held. Makes what is present
 * durable first. */
void cfs_cache_close(CfsCache *cache);

/* Make the chunks completed so far durable: their data is synced to the
 * disk, then their bits in the bitmap file. The store does this each
 * second; a crash loses at most the chunks since, never serves a chunk
 * whose bytes did not reach the disk. Any thread; blocks on the disk. */
bool cfs_cache_sync(CfsCache *cache, GError **error);

/* Bytes of data chunks a cache left in the store holds for these exact
 * bytes, without opening it (for .progress before the first open). */
guint64 cfs_store_peek(CfsStore *store, const char *key, const char *label,
		       CfsExtentMap *map, guint64 chunk_size);

guint64 cfs_cache_chunk_size(const CfsCache *cache);
guint64 cfs_cache_n_chunks(const CfsCache *cache);

/*
 * Make sure the chunks covering @ranges are present, pinned until
 * cfs_cache_release(). Returns true if they all are now: read them with
 * cfs_cache_pread() and release. Otherwise @wake is called once they are
 * (or one failed), maybe before this returns; @hold_out is set
 * (atomically) before any chunk can land, in both cases, and only once
 * the hold is registered: a cfs_cache_cancel() of it from another thread
 * (an interrupt) is safe from then on. Any thread.
 */
bool cfs_cache_acquire(CfsCache *cache, const CfsExtent *ranges, guint n,
		       CfsCacheWakeFn wake, gpointer data,
		       CfsCacheHold **hold_out);
/* Stop waiting (an interrupted read). True if the hold was not woken and
 * will not be: the caller answers the reader and releases. */
bool cfs_cache_cancel(CfsCacheHold *hold);
/* Unpin and free. */
void cfs_cache_release(CfsCacheHold *hold);

/* Read bytes of the disk from chunks the caller holds. */
bool cfs_cache_pread(CfsCache *cache, void *buf, gsize len, guint64 off,
		     GError **error);
/* The data file, to send bytes the caller holds without copying them
 * through a buffer (splice). Valid while the caller holds a hold. */
int cfs_cache_data_fd(const CfsCache *cache);

/* A reader read [off, off+len): follow sequential readers. Any thread. */
void cfs_cache_note_read(CfsCache *cache, guint64 off, guint64 len);
/* A reader asked where the data at @off ends (SEEK_HOLE): it is about to
 * read [off, off+len) in order, as cp does with each extent of a sparse
 * file. Prefetch that extent now, as for a sequential reader, instead of
 * after its first reads. Any thread. */
void cfs_cache_note_extent(CfsCache *cache, guint64 off, guint64 len);
/* Open handles on the export went up or down; prefetch stops at zero. */
void cfs_cache_add_readers(CfsCache *cache, int delta);

/* Fetcher side: write bytes of a chunk it is fetching (any thread). */
bool cfs_cache_write(CfsCache *cache, guint64 off, const void *data,
		     gsize len, GError **error);
/* The chunk is complete (error NULL) or failed; wakes its waiters. */
void cfs_cache_chunk_done(CfsCache *cache, guint64 idx,
			  const GError *error);
/* For stream sources passing over a chunk: claim it unless it is present.
 * Returns true if the caller must now fill it. */
bool cfs_cache_claim(CfsCache *cache, guint64 idx);
/* Whether chunk @idx is claimed and not done. */
bool cfs_cache_claimed(CfsCache *cache, guint64 idx);
/* Chunks claimed but not done (stream sources restart for them). */
guint cfs_cache_inflight(CfsCache *cache);

typedef struct {
	guint64 present;	/* bytes of data chunks present */
	guint64 total;		/* bytes of data chunks */
	guint inflight;		/* chunks being fetched */
	int readers;
	guint window;		/* prefetches allowed in flight now */
	guint64 scanned;	/* chunks the whole-disk fill looked at */
} CfsCacheStats;

void cfs_cache_stats(CfsCache *cache, CfsCacheStats *stats);

/* The source answered "too fast": fetch fewer chunks at once. Any
 * thread, no lock held. */
void cfs_cache_throttled(CfsCache *cache);

/* Whether every chunk holding bytes below @end is present. Any thread. */
bool cfs_cache_present_upto(CfsCache *cache, guint64 end);

/* Drop every present chunk that no hold pins, from the bitmaps and the
 * data file: the bytes of the source proved wrong and must never be
 * served, now or after a restart. Returns the bytes dropped. Any thread
 * but the network thread (it writes and syncs the bitmaps). */
guint64 cfs_cache_forget(CfsCache *cache);
