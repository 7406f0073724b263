/* SPDX-License-Identifier: MIT */
/* The export's state, shared by export.c (lifecycle, reads), fetch.c
 * (chunk fetchers) and progress.c. Not for use outside fs/. */
#pragma once

#include "fs/export.h"
#include "fs/formats/reader.h"

typedef enum {
	EXPORT_IDLE,		/* never opened */
	EXPORT_PREPARING,	/* export_start running */
	EXPORT_READY,		/* source and cache open */
	EXPORT_FAILED,		/* export_start failed; the next open retries */
} ExportState;

struct CfsExport {
	CfsExportReport report;	/* what export_start reports through */
	CfsEngine *engine;
	CfsProvider *prov;
	CfsDisk *disk;
	char *path;

	GMutex job_lock;	/* held by a control job; before lock */
	GMutex lock;
	GCond cond;		/* state left PREPARING, a stream of
				 * unknown length ended, or cache_users
				 * fell to 0 */
	ExportState state;	/* protected by lock */
	CfsSource *source;	/* set once READY, then constant */
	CfsCache *cache;	/* set once READY, then constant */
	CfsReader *reader;	/* set once READY for a container disk that
				 * has views, then constant: the views read
				 * the virtual disk through it */
	bool has_views;		/* protected by lock: a view file exists */
	guint64 stream_size;	/* protected by lock: for a stream of unknown
				 * length, its size once it ended; before,
				 * CFS_SIZE_UNKNOWN */
	CfsExtentMap *stream_map;	/* protected by lock: all data up to
					 * stream_size, once known */
	GPtrArray *parked;	/* protected by lock: reads before READY, and
				 * view reads of a stream of unknown length
				 * until it ended */
	GPtrArray *views;	/* protected by lock: CfsView*, made once per
				 * export of the disk */
	GPtrArray *retired;	/* protected by lock: views of earlier
				 * exports, freed with the export */
	CfsExportReadyFn ready_hook;
	gpointer ready_data;
	int opens;		/* protected by lock */
	int cache_users;	/* protected by lock: opens and releases that
				 * count readers of the cache unlocked; a
				 * restart waits for them (cond) */
	char *phase;		/* protected by lock */
	double phase_percent;	/* protected by lock */
	char *error;		/* protected by lock: the last failure */
	int error_errno;	/* protected by lock: what reads of a failed
				 * export answer (EACCES, ETIMEDOUT, …) */
	double rate;		/* protected by lock: bytes/s, last sample */
	double rate_time;	/* protected by lock */
	guint64 rate_bytes;	/* protected by lock */

	guint64 fetched;	/* atomic: bytes that landed, the counter */
	guint64 served;		/* atomic: bytes answered to readers */
	guint64 read_bytes;	/* atomic: bytes asked for since the export
				 * started (a glance, or a real read?) */
	bool cancel;		/* protected by engine->stop_lock: closed
				 * after a glance while preparing */
	guint run_opens;	/* protected by lock: opens since it started */
	gint64 glance_at;	/* protected by lock: when the last file was
				 * closed after a glance; 0: none pending */
	CfsTimer *glance_timer;	/* protected by lock: gives it back */
	guint64 hits;		/* atomic: reads answered from the cache */
	guint64 misses;		/* atomic: reads that waited for chunks */
	guint64 cached;		/* what the cache held at list time */
	bool streaming;		/* protected by lock: a stream runs */
	bool released;		/* protected by lock: export_end was called */
	bool bad;		/* protected by lock: the source's verify
				 * condemned it (CFS_SOURCE_BAD): the state
				 * is FAILED, nothing of it is fetched or
				 * served, and the next start drops it */
	gint ranges_ignored;	/* atomic: the server answered 200 to Range */

	/* Renewing the source's grant (grant.c). */
	CfsTimer *grant_timer;	/* protected by lock: ahead of expiry */
	bool renewing;		/* protected by lock: a renew job runs */
	GPtrArray *reauth;	/* protected by lock: requests refused with
				 * the old grant, sent again after renew */
};

/* read.c: acquire @ranges and wait until they are in (or one failed);
 * release *hold after reading, in both cases. Blocks: control pool. */
bool cfs_cache_read_wait(CfsCache *cache, const CfsExtent *ranges, guint n,
			 CfsCacheHold **hold, GError **error);

/* export.c */
/* The size the native bytes have or may have: the exact size if known,
 * else the stream's bound. False before the export is ready. */
bool cfs_export_size_bound(CfsExport *ex, guint64 *size);
/* A stream of unknown length ended after @size bytes: the size is known,
 * then its last chunk @last (G_MAXUINT64: none) and the chunks past the
 * end are complete, and the views and the kernel learn of it on the
 * control pool. Network thread. */
void cfs_export_stream_ended(CfsExport *ex, guint64 size, guint64 last);
/* Whether the read of a view must wait for the end of a stream of
 * unknown length; if so it was parked (and the stream started). */
bool cfs_export_park_for_stream(CfsExport *ex, gpointer read_ctx,
				bool *parked_flag);
void cfs_export_set_error(CfsExport *ex, const GError *error);
/* The source's verify said its bytes are wrong (CFS_SOURCE_BAD, in
 * @error): fail the export, and drop its chunks on the control pool.
 * Network thread; once per source. */
void cfs_export_source_bad(CfsExport *ex, const GError *error);
/* Why a chunk of a condemned source must fail (transfer full), or NULL
 * if the source is not. Any thread. */
GError *cfs_export_bad_error(CfsExport *ex);
/* Continue a read parked until the export was ready (or failed). */
void cfs_read_go(gpointer ctx, const GError *error);

/* Count a control-pool job of the engine's (cfs_engine_stop() waits for
 * them), and its end. */
void cfs_engine_job_begin(CfsEngine *engine);
void cfs_engine_job_end(CfsEngine *engine);

/* grant.c: keep the source's grant alive while the export is ready.
 * start/stop: export lock not held; stop waits for a running tick. */
void cfs_grant_start(CfsExport *ex);
void cfs_grant_stop(CfsExport *ex);
/* A request of the source was refused (401/403) with grant generation
 * @gen: renew the grant (once for all such requests) and send it again.
 * False if the source cannot renew, or the request was already sent
 * again once: the caller then fails it. Network thread. */
bool cfs_grant_reauth(CfsExport *ex, CfsHttpRequest *req, guint gen);

/* fetch.c: the cache's fetch function, and the I/O pool's job. */
void cfs_fetch_chunk(gpointer owner, guint64 idx, bool demand);
void cfs_fetch_local_job(gpointer data, gpointer unused);
