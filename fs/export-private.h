/* SPDX-License-Identifier: MIT */
/* The export's state, shared by export.c (lifecycle, reads), fetch.c
 * (chunk fetchers) and progress.c. Not for use outside fs/. */
#pragma once

#include "fs/export.h"

typedef enum {
	EXPORT_IDLE,		/* never opened */
	EXPORT_PREPARING,	/* export_start running */
	EXPORT_READY,		/* source and cache open */
	EXPORT_FAILED,		/* export_start failed; the next open retries */
} ExportState;

struct CfsExport {
	CfsEngine *engine;
	CfsProvider *prov;
	CfsDisk *disk;
	char *path;

	GMutex job_lock;	/* held by a control job; before lock */
	GMutex lock;
	GCond cond;		/* state left PREPARING */
	ExportState state;	/* protected by lock */
	CfsSource *source;	/* set once READY, then constant */
	CfsCache *cache;	/* set once READY, then constant */
	GPtrArray *parked;	/* protected by lock: reads before READY */
	GPtrArray *views;	/* protected by lock: CfsView*, made once */
	CfsExportReadyFn ready_hook;
	gpointer ready_data;
	int opens;		/* protected by lock */
	char *phase;		/* protected by lock */
	double phase_percent;	/* protected by lock */
	char *error;		/* protected by lock: the last failure */
	double rate;		/* protected by lock: bytes/s, last sample */
	double rate_time;	/* protected by lock */
	guint64 rate_bytes;	/* protected by lock */

	guint64 fetched;	/* atomic: bytes that landed, the counter */
	guint64 cached;		/* what the cache held at list time */
	bool streaming;		/* protected by lock: a stream runs */
	bool released;		/* protected by lock: export_end was called */
	gint ranges_ignored;	/* atomic: the server answered 200 to Range */
};

/* A job for the control pool: start or end an export. */
typedef struct {
	CfsExport *ex;
	bool end;
} CfsExportJob;

/* export.c */
void cfs_export_job(gpointer data, gpointer unused);
void cfs_export_set_error(CfsExport *ex, const GError *error);
/* Continue a read parked until the export was ready (or failed). */
void cfs_read_go(gpointer ctx, const GError *error);

/* fetch.c: the cache's fetch function, and the I/O pool's job. */
void cfs_fetch_chunk(gpointer owner, guint64 idx, bool demand);
void cfs_fetch_local_job(gpointer data, gpointer unused);
