/* SPDX-License-Identifier: MIT */
/*
 * Exports: one per disk. An export starts when one of the disk's files is
 * first opened (the provider's export_start runs on the control pool),
 * owns the source and the chunk cache once ready, fetches the chunks the
 * cache asks for (HTTP pieces on the network thread, local sources on the
 * I/O pool), counts every byte that lands, and answers FUSE reads of the
 * disk's files (the native file, or a format view) when their chunks are
 * in.
 *
 * Lock order: export lock, then cache locks. Nothing is called out of
 * this module with the export lock held.
 */
#pragma once

#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>
#include <glib.h>

#include "cache/cache.h"
#include "fs/formats/format.h"
#include "providers/provider.h"

typedef struct CfsExport CfsExport;

/* What every export shares. Filled by main before the first open. */
typedef struct {
	CfsContext ctx;		/* the network thread, for providers too */
	CfsStore *store;
	guint64 chunk_size;
	guint parallel;
	GThreadPool *io;	/* reads of local sources */
	GMutex stop_lock;
	GCond stop_cond;	/* stopping set, or jobs fell to 0 */
	bool stopping;		/* protected by stop_lock */
	guint jobs;		/* protected by stop_lock: control jobs of
				 * exports (start, end, renew) running */
} CfsEngine;

/* The engine's I/O pool; ctx.control must be set. Main thread. */
void cfs_engine_start(CfsEngine *engine);
/* At unmount: exports still preparing give up (cfs_export_wait() says
 * so), and the engine's jobs finish. The network thread must still run:
 * a provider may clean up what it made. */
void cfs_engine_stop(CfsEngine *engine);

/* A new export of @disk (transfer full), shown as @path ("url/web01/disk"
 * without extension). */
CfsExport *cfs_export_new(CfsEngine *engine, CfsProvider *prov,
			  CfsDisk *disk, const char *path);
/* Release what the provider granted, if not yet. At unmount, after
 * cfs_engine_stop() and before the network thread stops. */
void cfs_export_end(CfsExport *ex);
/* Free; ends it first if cfs_export_end() was not called. */
void cfs_export_free(CfsExport *ex);

CfsDisk *cfs_export_disk(CfsExport *ex);
CfsProvider *cfs_export_provider(CfsExport *ex);
/* "url/web01/disk": the disk's files without their extension. */
const char *cfs_export_path(CfsExport *ex);

/* A disk file was opened or released: starts the export on the first
 * open. Never waits. Any FUSE thread. */
void cfs_export_open(CfsExport *ex);
void cfs_export_release(CfsExport *ex);
/* A reader of the disk's bytes asked where the data at @off ends: it is
 * about to read [off, off+len). Prefetch it if the export is ready. */
void cfs_export_note_extent(CfsExport *ex, guint64 off, guint64 len);

/* A reader asked for @bytes of the disk's files. Any thread. */
void cfs_export_count_read(CfsExport *ex, guint64 bytes);

/* Answer a FUSE read of the native bytes (@fmt NULL) or of a view in
 * format @fmt. Replies now, or later from another thread (after the
 * export is ready and the chunks are in). */
void cfs_export_read(CfsExport *ex, const CfsFormat *fmt, fuse_req_t req,
		     size_t size, off_t off);

/* Wait until the export is ready and the size of its file in @fmt is
 * known (a stream of unknown length has ended); the caller holds the
 * export open. Blocks: control pool only. */
bool cfs_export_wait_size(CfsExport *ex, const CfsFormat *fmt,
			  guint64 *size, GError **error);

/* Read @len bytes at @off of the disk's file in @fmt (NULL: its native
 * bytes), waiting for the export and the chunks; the caller holds the
 * export open. Blocks: control pool only. */
bool cfs_export_read_sync(CfsExport *ex, const CfsFormat *fmt, void *buf,
			  gsize len, guint64 off, GError **error);

/* The view of the export's raw bytes in @fmt, made once the allocation
 * map is known (at list time, or when the export is ready); NULL before,
 * or for @fmt NULL. Owned by the export. Any thread. */
const CfsView *cfs_export_view(CfsExport *ex, const CfsFormat *fmt);

/* A file of the disk in view @fmt exists: for a container disk (VHD,
 * VHDX, VMDK bytes), the export then opens the container's reader when
 * it is ready, and the views are of the disk inside. Any thread, before
 * the first open. */
void cfs_export_add_view(CfsExport *ex, const CfsFormat *fmt);

/* Whether views of this disk are possible: raw bytes, or a container
 * format a reader decodes. */
bool cfs_export_viewable(CfsExport *ex);

/* The allocation map, if known yet (the export owns it). */
CfsExtentMap *cfs_export_map(CfsExport *ex);

/* The size of the file in @fmt (NULL: native), if known yet. */
bool cfs_export_file_size(CfsExport *ex, const CfsFormat *fmt,
			  guint64 *size);

/* Called once on the control pool when the export becomes ready, so that
 * sizes that were unknown can be made known to the kernel. */
typedef void (*CfsExportReadyFn)(CfsExport *ex, gpointer data);
void cfs_export_set_ready_hook(CfsExport *ex, CfsExportReadyFn fn,
			       gpointer data);

/* The numbers .metrics shows of an export. Any thread. */
typedef struct {
	const char *state;	/* as .progress says it */
	guint64 fetched, served, hits, misses;
	guint64 present, total;	/* bytes in the cache, bytes to have */
} CfsExportNumbers;
void cfs_export_numbers(CfsExport *ex, CfsExportNumbers *n);

/* Append the .progress line of the file @path (relative to the mount). */
void cfs_export_progress(CfsExport *ex, const char *path, GString *out);

/* Append a failed line for @path that is no export (a VM or provider that
 * could not be listed), quoting @error as export lines do. */
void cfs_progress_failed(GString *out, const char *path, const char *error);
