// SPDX-License-Identifier: MIT
/*
 * Exports: starting them, answering reads of their files from the cache,
 * and their .progress lines. Fetching chunks is in fetch.c.
 */
#include <string.h>

#include "common/error.h"
#include "common/util.h"
#include "fs/export-private.h"
#include "fs/formats/format.h"

/* Threads that read local sources into the cache. */
#define CFS_IO_THREADS 8

void cfs_engine_start(CfsEngine *engine)
{
	g_mutex_init(&engine->stop_lock);
	g_cond_init(&engine->stop_cond);
	/* Local sources (files, SMB shares) are read here. A share over a
	 * link with a round trip needs reads in flight on each of its
	 * connections (Hyper-V: smb_connections, 4 by default): 2 threads
	 * held it to a fifth of smbclient's rate at 4 ms. */
	engine->io = g_thread_pool_new(cfs_fetch_local_job, NULL,
				       CFS_IO_THREADS, FALSE, NULL);
}

void cfs_engine_job_begin(CfsEngine *engine)
{
	g_mutex_lock(&engine->stop_lock);
	engine->jobs++;
	g_mutex_unlock(&engine->stop_lock);
}

void cfs_engine_job_end(CfsEngine *engine)
{
	g_mutex_lock(&engine->stop_lock);
	if (--engine->jobs == 0)
		g_cond_broadcast(&engine->stop_cond);
	g_mutex_unlock(&engine->stop_lock);
}

void cfs_engine_stop(CfsEngine *engine)
{
	if (!engine->io)
		return;		/* never started */
	g_mutex_lock(&engine->stop_lock);
	engine->stopping = true;
	g_cond_broadcast(&engine->stop_cond);
	while (engine->jobs)
		g_cond_wait(&engine->stop_cond, &engine->stop_lock);
	g_mutex_unlock(&engine->stop_lock);
	g_thread_pool_free(engine->io, FALSE, TRUE);
	engine->io = NULL;
}

/* What names the cache of an export: the provider, the disk, and the
 * identity of the exported bytes. */
static char *export_key(CfsExport *ex, const char *identity)
{
	return g_strdup_printf("%s\n%s\n%s", ex->prov->ops->name,
			       ex->disk->id ? ex->disk->id : ex->path,
			       identity);
}

static void export_phase(CfsExportReport *report, const char *phase,
			 double percent);
static bool export_wait(CfsExportReport *report, double seconds);

static const CfsExportReportOps export_report_ops = {
	.phase = export_phase,
	.wait = export_wait,
};

CfsExport *cfs_export_new(CfsEngine *engine, CfsProvider *prov,
			  CfsDisk *disk, const char *path)
{
	CfsExport *ex = g_new0(CfsExport, 1);

	ex->report.ops = &export_report_ops;
	ex->stream_size = CFS_SIZE_UNKNOWN;
	ex->engine = engine;
	ex->prov = prov;
	ex->disk = disk;
	ex->path = g_strdup(path);
	if (disk->identity && disk->map) {
		g_autofree char *key = export_key(ex, disk->identity);

		ex->cached = cfs_store_peek(engine->store, key, path, disk->map,
					    engine->chunk_size);
	}
	g_mutex_init(&ex->lock);
	g_mutex_init(&ex->job_lock);
	g_cond_init(&ex->cond);
	ex->parked = g_ptr_array_new();
	ex->reauth = g_ptr_array_new();
	ex->views = g_ptr_array_new_with_free_func(
		(GDestroyNotify)cfs_view_free);
	ex->retired = g_ptr_array_new_with_free_func(
		(GDestroyNotify)cfs_view_free);
	return ex;
}

/* Whether every chunk is in: for a stream of unknown length, every chunk
 * up to its end, once it ended. Export lock held. */
static bool export_complete(CfsExport *ex)
{
	CfsCacheStats st;

	if (ex->source->size == CFS_SIZE_UNKNOWN)
		return ex->stream_size != CFS_SIZE_UNKNOWN &&
		       cfs_cache_present_upto(ex->cache, ex->stream_size);
	cfs_cache_stats(ex->cache, &st);
	return st.present == st.total && st.inflight == 0;
}

void cfs_export_end(CfsExport *ex)
{
	CfsTimer *glance_timer;
	bool end;

	g_mutex_lock(&ex->lock);
	while (ex->state == EXPORT_PREPARING)
		g_cond_wait(&ex->cond, &ex->lock);
	end = ex->source && !ex->released && ex->prov->ops->export_end;
	if (end)
		ex->source->complete = export_complete(ex);
	ex->released = true;
	glance_timer = g_steal_pointer(&ex->glance_timer);
	g_mutex_unlock(&ex->lock);
	cfs_timer_free(glance_timer);
	cfs_grant_stop(ex);
	if (end)
		ex->prov->ops->export_end(ex->prov, ex->disk, ex->source);
}

void cfs_export_free(CfsExport *ex)
{
	if (!ex)
		return;
	cfs_export_end(ex);
	cfs_reader_free(ex->reader);
	cfs_cache_close(ex->cache);
	cfs_source_free(ex->source);
	cfs_disk_free(ex->disk);
	g_ptr_array_unref(ex->parked);
	g_assert(ex->reauth->len == 0);
	g_ptr_array_unref(ex->reauth);
	g_ptr_array_unref(ex->views);
	g_ptr_array_unref(ex->retired);
	g_clear_pointer(&ex->stream_map, cfs_extent_map_unref);
	g_free(ex->path);
	g_free(ex->phase);
	g_free(ex->error);
	g_mutex_clear(&ex->lock);
	g_mutex_clear(&ex->job_lock);
	g_cond_clear(&ex->cond);
	g_free(ex);
}

CfsDisk *cfs_export_disk(CfsExport *ex)
{
	return ex->disk;
}

CfsProvider *cfs_export_provider(CfsExport *ex)
{
	return ex->prov;
}

const char *cfs_export_path(CfsExport *ex)
{
	return ex->path;
}

static void export_phase(CfsExportReport *report, const char *phase,
			 double percent)
{
	CfsExport *ex = G_STRUCT_MEMBER_P(report, -G_STRUCT_OFFSET(CfsExport,
								   report));

	g_mutex_lock(&ex->lock);
	g_free(ex->phase);
	ex->phase = g_strdup(phase);
	ex->phase_percent = percent;
	g_mutex_unlock(&ex->lock);
}

static bool export_wait(CfsExportReport *report, double seconds)
{
	CfsExport *ex = G_STRUCT_MEMBER_P(report, -G_STRUCT_OFFSET(CfsExport,
								   report));
	CfsEngine *engine = ex->engine;
	gint64 until = g_get_monotonic_time() +
		       (gint64)(seconds * G_USEC_PER_SEC);
	bool go_on;

	g_mutex_lock(&engine->stop_lock);
	while (!engine->stopping && !ex->cancel &&
	       g_cond_wait_until(&engine->stop_cond, &engine->stop_lock,
				 until))
		;
	go_on = !engine->stopping && !ex->cancel;
	g_mutex_unlock(&engine->stop_lock);
	return go_on;
}

void cfs_export_set_error(CfsExport *ex, const GError *error)
{
	g_mutex_lock(&ex->lock);
	if (error) {
		if (g_strcmp0(ex->error, error->message) != 0)
			g_warning("%s: %s", ex->path, error->message);
		g_free(ex->error);
		ex->error = g_strdup(error->message);
		g_cond_broadcast(&ex->cond);	/* read_wait_size() */
	} else if (!ex->bad) {	/* a condemned source stays failed */
		g_clear_pointer(&ex->error, g_free);
	}
	g_mutex_unlock(&ex->lock);
}

/* --- starting --- */

/* The export is complete and nobody has it open: give back what the
 * provider granted (a temporary snapshot, a SAS, a lease). The cache
 * keeps serving reads; an open that needs more starts a new export. */
static void export_end_job(CfsExport *ex)
{
	bool complete;

	cfs_grant_stop(ex);
	g_mutex_lock(&ex->lock);
	complete = export_complete(ex);
	g_mutex_unlock(&ex->lock);
	ex->source->complete = complete;
	ex->prov->ops->export_end(ex->prov, ex->disk, ex->source);
	g_message("%s: %s, export released", ex->path,
		  complete ? "complete" : "closed after a glance");
}

/* --- sources found bad --- */

GError *cfs_export_bad_error(CfsExport *ex)
{
	GError *error = NULL;

	g_mutex_lock(&ex->lock);
	if (ex->bad)	/* no message once an open restarts it */
		error = g_error_new_literal(CFS_ERROR, EIO, ex->error ?
					    ex->error : "the source was "
					    "found bad");
	g_mutex_unlock(&ex->lock);
	return error;
}

/* Give up a condemned source: drop what its cache holds (a read that
 * had pinned a chunk lets go of it in a moment) and give back what the
 * provider granted. Job lock held; once the source is replaced, a
 * no-op. Control pool. */
static void export_drop_bad(CfsExport *ex)
{
	CfsProvider *prov = ex->prov;
	CfsCacheStats st;
	guint64 dropped = 0;
	bool bad, end;

	g_mutex_lock(&ex->lock);
	bad = ex->bad;
	end = bad && !ex->released && prov->ops->export_end;
	if (bad)
		ex->released = true;
	g_mutex_unlock(&ex->lock);
	if (!bad)
		return;
	cfs_grant_stop(ex);
	for (guint i = 0; i < 500; i++) {
		dropped += cfs_cache_forget(ex->cache);
		cfs_cache_stats(ex->cache, &st);
		if (st.present == 0)
			break;
		g_usleep(10 * 1000);
	}
	if (dropped || end)
		g_message("%s: %" G_GUINT64_FORMAT " cached bytes of the bad "
			  "source dropped", ex->path, dropped);
	if (end) {
		ex->source->complete = false;
		prov->ops->export_end(prov, ex->disk, ex->source);
	}
}

static void export_bad_job(gpointer data)
{
	CfsExport *ex = data;
	CfsEngine *engine = ex->engine;

	g_mutex_lock(&ex->job_lock);
	export_drop_bad(ex);
	g_mutex_unlock(&ex->job_lock);
	cfs_engine_job_end(engine);
}

void cfs_export_source_bad(CfsExport *ex, const GError *error)
{
	bool first;

	g_mutex_lock(&ex->lock);
	first = !ex->bad && ex->state == EXPORT_READY;
	if (first) {
		/* Reads fail from now on (EIO); an open starts anew. */
		ex->bad = true;
		ex->state = EXPORT_FAILED;
		g_free(ex->error);
		ex->error = g_strdup(error->message);
		ex->error_errno = EIO;
		g_cond_broadcast(&ex->cond);
	}
	g_mutex_unlock(&ex->lock);
	if (!first)
		return;
	g_warning("%s: %s; the export failed", ex->path, error->message);
	cfs_engine_job_begin(ex->engine);
	cfs_control_push(ex->engine->ctx.control, export_bad_job, ex);
}

/* Before a condemned or released source is replaced: wait until no
 * fetch of its cache runs (each fails, cfs_export_bad_error(), or ends
 * with the grant it had); they write to the export's cache, which is
 * about to be closed. Job lock held. */
static void export_drain(CfsExport *ex)
{
	g_mutex_lock(&ex->lock);
	while ((ex->bad || ex->released) && ex->cache &&
	       cfs_cache_inflight(ex->cache) > 0)
		g_cond_wait_until(&ex->cond, &ex->lock,
				  g_get_monotonic_time() +
				  20 * G_TIME_SPAN_MILLISECOND);
	g_mutex_unlock(&ex->lock);
}

/* --- container disks --- */

/* Read container bytes through the cache, waiting for their chunks: for
 * a reader's metadata, on the control pool only. */
static bool export_read_wait(void *opaque, void *buf, gsize len, guint64 off,
			     GError **error)
{
	CfsCache *cache = opaque;
	CfsExtent range = { off, len };
	CfsCacheHold *hold = NULL;
	bool ok = cfs_cache_read_wait(cache, &range, 1, &hold, error) &&
		  cfs_cache_pread(cache, buf, len, off, error);

	cfs_cache_release(hold);
	return ok;
}

/* The reader of a container disk whose views are asked for, opened
 * over the cache (its metadata is fetched now, on demand). */
static bool export_open_reader(CfsExport *ex, CfsSource *src,
			       CfsCache *cache, CfsReader **out,
			       GError **error)
{
	const CfsReaderFormat *rf = cfs_reader_find(ex->disk->format);
	bool views;

	g_mutex_lock(&ex->lock);
	views = ex->has_views;
	g_mutex_unlock(&ex->lock);
	if (!rf || !views)
		return true;
	if (src->size == CFS_SIZE_UNKNOWN)
		return true;	/* opened when the stream has ended */
	*out = rf->open(src->size, src->map, export_read_wait, cache, error);
	if (!*out) {
		g_prefix_error(error, "reading the %s container: ", rf->name);
		return false;
	}
	return true;
}

/* What a provider says of a source is bounded before the cache is
 * sized by it. A stream of unknown length gets a map of all data up to
 * its bound. */
static bool export_check_source(CfsExport *ex, CfsSource *src,
				GError **error)
{
	guint64 size = src->size != CFS_SIZE_UNKNOWN ? src->size :
						       src->size_max;

	if (size > CFS_DISK_SIZE_MAX) {
		g_set_error(error, CFS_ERROR, EFBIG, "the disk says it has %"
			    G_GUINT64_FORMAT " bytes, more than cloudfs takes "
			    "(%" G_GUINT64_FORMAT ")", size,
			    (guint64)CFS_DISK_SIZE_MAX);
		return false;
	}
	if (src->size != CFS_SIZE_UNKNOWN)
		return true;
	if (src->random || src->ops->pread || !src->size_max) {
		g_set_error(error, CFS_ERROR, EINVAL, "a source of unknown "
			    "length must be a stream with a bound");
		return false;
	}
	if (!src->map)
		src->map = cfs_extent_map_new_full(src->size_max);
	return true;
}

/* Closed after a glance while it was prepared, and not opened again:
 * give back what was made and be idle. Control pool. */
static bool export_cancelled(CfsExport *ex, CfsSource **src)
{
	bool cancel;

	g_mutex_lock(&ex->engine->stop_lock);
	cancel = ex->cancel;
	g_mutex_unlock(&ex->engine->stop_lock);
	g_mutex_lock(&ex->lock);
	cancel = cancel && ex->opens == 0 && ex->parked->len == 0;
	if (cancel) {
		ex->state = EXPORT_IDLE;
		g_clear_pointer(&ex->phase, g_free);
		g_cond_broadcast(&ex->cond);
	}
	g_mutex_unlock(&ex->lock);
	if (!cancel)
		return false;
	if (*src && ex->prov->ops->export_end)
		ex->prov->ops->export_end(ex->prov, ex->disk, *src);
	g_clear_pointer(src, cfs_source_free);
	g_message("%s: closed after a glance, export cancelled", ex->path);
	return true;
}

static void export_start_job(CfsExport *ex)
{
	CfsEngine *engine = ex->engine;
	g_autoptr(GError) error = NULL;
	g_autoptr(GPtrArray) parked = NULL;
	CfsSource *src;
	CfsCache *cache = NULL;
	CfsReader *reader = NULL, *old_reader;
	CfsCache *old_cache;
	CfsSource *old_source;
	bool bad;
	int opens;

	/* A released export starting again: its old bytes may be gone. */
	cfs_grant_stop(ex);
	export_drop_bad(ex);
	export_drain(ex);
	/* Views of the old map are kept to the end (a stat may hold one);
	 * new ones are made of the new map. */
	g_mutex_lock(&ex->lock);
	while (ex->views->len)
		g_ptr_array_add(ex->retired,
				g_ptr_array_steal_index(ex->views, 0));
	old_reader = g_steal_pointer(&ex->reader);
	ex->stream_size = CFS_SIZE_UNKNOWN;
	g_clear_pointer(&ex->stream_map, cfs_extent_map_unref);
	/* An open or release may still count readers of the old cache. */
	while (ex->cache_users)
		g_cond_wait(&ex->cond, &ex->lock);
	old_cache = g_steal_pointer(&ex->cache);
	old_source = g_steal_pointer(&ex->source);
	bad = ex->bad;
	ex->bad = false;
	if (bad)	/* what its last fetches said */
		g_clear_pointer(&ex->error, g_free);
	g_mutex_unlock(&ex->lock);
	cfs_reader_free(old_reader);
	if (bad)	/* what reads had pinned then */
		cfs_cache_forget(old_cache);
	cfs_cache_close(old_cache);
	cfs_source_free(old_source);
	ex->released = false;
	g_mutex_lock(&engine->stop_lock);
	ex->cancel = false;
	g_mutex_unlock(&engine->stop_lock);
	src = ex->prov->ops->export_start(ex->prov, ex->disk,
					  &ex->report, &error);
	if (export_cancelled(ex, &src)) {
		g_clear_error(&error);
		return;
	}
	if (src && !export_check_source(ex, src, &error)) {
		if (ex->prov->ops->export_end)
			ex->prov->ops->export_end(ex->prov, ex->disk, src);
		g_clear_pointer(&src, cfs_source_free);
	}
	if (src) {
		g_autofree char *key = export_key(ex, src->identity);

		cache = cfs_cache_open(engine->store, key, ex->path, src->map,
				       engine->chunk_size, engine->parallel,
				       cfs_fetch_chunk, ex, &error);
		if (!cache) {
			if (ex->prov->ops->export_end)
				ex->prov->ops->export_end(ex->prov, ex->disk,
							  src);
			g_clear_pointer(&src, cfs_source_free);
		}
	}
	/* The fetchers need the source and cache from here on; reads stay
	 * parked until the state says READY. */
	g_mutex_lock(&ex->lock);
	ex->source = src;
	ex->cache = cache;
	g_mutex_unlock(&ex->lock);
	if (cache && !export_open_reader(ex, src, cache, &reader, &error)) {
		if (ex->prov->ops->export_end)
			ex->prov->ops->export_end(ex->prov, ex->disk, src);
		g_clear_pointer(&cache, cfs_cache_close);
		g_clear_pointer(&src, cfs_source_free);
	}
	if (error)
		g_prefix_error(&error, "export: ");
	g_mutex_lock(&ex->lock);
	ex->source = src;
	ex->cache = cache;
	ex->reader = reader;
	ex->state = cache ? EXPORT_READY : EXPORT_FAILED;
	if (error) {
		g_free(ex->error);
		ex->error = g_strdup(error->message);
		ex->error_errno = cfs_error_errno(error);
	}
	opens = ex->opens;
	parked = g_steal_pointer(&ex->parked);
	ex->parked = g_ptr_array_new();
	g_cond_broadcast(&ex->cond);
	g_mutex_unlock(&ex->lock);

	if (error)
		g_warning("%s: %s", ex->path, error->message);
	else
		g_message("%s: ready, %" G_GUINT64_FORMAT " bytes, %s", ex->path,
			  src->size, src->random ? "random access" : "stream");
	if (cache)
		cfs_grant_start(ex);
	if (cache && opens)
		cfs_cache_add_readers(cache, opens);
	for (guint i = 0; i < parked->len; i++)
		cfs_read_go(parked->pdata[i], error);
	if (cache && ex->ready_hook)
		ex->ready_hook(ex, ex->ready_data);
}

/* A job for the control pool: start or end an export. */
typedef struct {
	CfsExport *ex;
	bool end;
} ExportJob;

static void export_job(gpointer data)
{
	ExportJob *job = data;
	CfsEngine *engine = job->ex->engine;

	/* One job of an export at a time: an end and a new start may be
	 * queued back to back. */
	g_mutex_lock(&job->ex->job_lock);
	if (job->end)
		export_end_job(job->ex);
	else
		export_start_job(job->ex);
	g_mutex_unlock(&job->ex->job_lock);
	g_free(job);
	cfs_engine_job_end(engine);
}

static void export_push_job(CfsExport *ex, bool end)
{
	ExportJob *job = g_new0(ExportJob, 1);

	job->ex = ex;
	job->end = end;
	cfs_engine_job_begin(ex->engine);
	cfs_control_push(ex->engine->ctx.control, export_job, job);
}


/* The cache, if ready, for a call made after the export lock is dropped:
 * a restart does not close it until the call is over. Lock held. */
static CfsCache *export_cache_use(CfsExport *ex)
{
	if (ex->state != EXPORT_READY)
		return NULL;
	ex->cache_users++;
	return ex->cache;
}

/* Count readers of a cache taken with export_cache_use(), and let it go.
 * No lock held. */
static void export_cache_readers(CfsExport *ex, CfsCache *cache, int delta)
{
	cfs_cache_add_readers(cache, delta);
	g_mutex_lock(&ex->lock);
	if (--ex->cache_users == 0)
		g_cond_broadcast(&ex->cond);
	g_mutex_unlock(&ex->lock);
}

void cfs_export_open(CfsExport *ex)
{
	bool start = false;
	CfsCache *cache;

	g_mutex_lock(&ex->lock);
	ex->opens++;
	ex->glance_at = 0;	/* opened again: no glance */
	if (ex->state == EXPORT_IDLE || ex->state == EXPORT_FAILED ||
	    (ex->state == EXPORT_READY && ex->released && ex->opens == 1 &&
	     !export_complete(ex))) {
		ex->state = EXPORT_PREPARING;
		g_clear_pointer(&ex->error, g_free);
		start = true;
		/* A new export: what counts as a glance starts again. */
		__atomic_store_n(&ex->read_bytes, 0, __ATOMIC_RELAXED);
		ex->run_opens = 0;
	}
	ex->run_opens++;
	cache = export_cache_use(ex);
	g_mutex_unlock(&ex->lock);
	if (start)
		export_push_job(ex, false);
	if (cache)
		export_cache_readers(ex, cache, 1);
}

/* Files closed after a glance (a file manager sniffing types, `file`
 * reading 7 MiB at each end, a thumbnailer; the kernel's read-ahead adds
 * to it): at most this much was read per open since the export
 * started. */
#define GLANCE_BYTES (32ULL << 20)
/* … and not opened again for this long. */
#define GLANCE_DELAY_US (5 * G_USEC_PER_SEC)

/* Browsing must not cost money: an export whose files were all closed
 * after a glance, and not opened again for a few seconds, is given back
 * (a snapshot, a grant, an export task released at once); the next real
 * read starts a new one. Export lock held. */
static bool export_glanced(CfsExport *ex)
{
	return ex->prov->ops->export_end &&
	       __atomic_load_n(&ex->read_bytes, __ATOMIC_RELAXED) <=
		       GLANCE_BYTES * MAX(ex->run_opens, 1) &&
	       (ex->state == EXPORT_PREPARING ||
		(ex->state == EXPORT_READY && !ex->released &&
		 !export_complete(ex)));
}

/* Control pool: give back an export closed after a glance, once it has
 * stayed closed a while. */
static void export_glance_tick(gpointer data)
{
	CfsExport *ex = data;
	bool cancel = false, end = false;

	g_mutex_lock(&ex->job_lock);
	g_mutex_lock(&ex->lock);
	if (ex->glance_at && ex->opens == 0 &&
	    g_get_monotonic_time() - ex->glance_at >= GLANCE_DELAY_US) {
		ex->glance_at = 0;
		cancel = ex->state == EXPORT_PREPARING;
		end = export_glanced(ex) && ex->state == EXPORT_READY;
		if (end)
			ex->released = true;
	}
	g_mutex_unlock(&ex->lock);
	if (cancel) {
		g_mutex_lock(&ex->engine->stop_lock);
		ex->cancel = true;
		g_cond_broadcast(&ex->engine->stop_cond);	/* export_wait() */
		g_mutex_unlock(&ex->engine->stop_lock);
	}
	if (end)
		export_end_job(ex);
	g_mutex_unlock(&ex->job_lock);
}

void cfs_export_release(CfsExport *ex)
{
	CfsCache *cache;
	CfsTimer *timer = NULL;
	bool end = false, glance = false;

	g_mutex_lock(&ex->lock);
	ex->opens--;
	cache = export_cache_use(ex);
	if (cache && ex->opens == 0 && !ex->released &&
	    ex->prov->ops->export_end && export_complete(ex)) {
		ex->released = true;
		end = true;
	} else if (ex->opens == 0 && export_glanced(ex)) {
		ex->glance_at = g_get_monotonic_time();
		glance = !ex->glance_timer;
	}
	g_mutex_unlock(&ex->lock);
	if (cache)
		export_cache_readers(ex, cache, -1);
	if (glance)
		timer = cfs_timer_new(ex->engine->ctx.control,
				      GLANCE_DELAY_US / 2.0 / G_USEC_PER_SEC,
				      export_glance_tick, ex);
	if (timer) {
		g_mutex_lock(&ex->lock);
		if (ex->glance_timer)
			glance = false;
		else
			ex->glance_timer = timer;
		g_mutex_unlock(&ex->lock);
		if (!glance)
			cfs_timer_free(timer);
	}
	if (end)
		export_push_job(ex, true);
}

void cfs_export_note_extent(CfsExport *ex, guint64 off, guint64 len)
{
	CfsCache *cache;

	g_mutex_lock(&ex->lock);
	cache = export_cache_use(ex);
	g_mutex_unlock(&ex->lock);
	if (!cache)
		return;
	cfs_cache_note_extent(cache, off, len);
	export_cache_readers(ex, cache, 0);
}

void cfs_export_count_read(CfsExport *ex, guint64 bytes)
{
	__atomic_fetch_add(&ex->read_bytes, bytes, __ATOMIC_RELAXED);
}

/* --- files: the native bytes and views of them --- */

/* The allocation map: the list's, or the source's once ready. Export
 * lock held. */
static CfsExtentMap *export_map(CfsExport *ex)
{
	if (ex->disk->map)
		return ex->disk->map;
	if (ex->state != EXPORT_READY)
		return NULL;
	if (ex->source->size == CFS_SIZE_UNKNOWN)
		return ex->stream_map;	/* known once the stream ended */
	return ex->source->map;
}

/* The map views are made of: the virtual disk's inside a container.
 * Export lock held. */
static CfsExtentMap *export_view_map(CfsExport *ex)
{
	if (!cfs_reader_find(ex->disk->format))
		return export_map(ex);
	return ex->state == EXPORT_READY && ex->reader ?
		       cfs_reader_map(ex->reader) : NULL;
}

void cfs_export_add_view(CfsExport *ex, const CfsFormat *fmt)
{
	g_mutex_lock(&ex->lock);
	ex->has_views = true;
	g_mutex_unlock(&ex->lock);
}

bool cfs_export_viewable(CfsExport *ex)
{
	return g_str_equal(ex->disk->format, "raw") ||
	       cfs_reader_find(ex->disk->format) != NULL;
}

CfsExtentMap *cfs_export_map(CfsExport *ex)
{
	CfsExtentMap *map;

	g_mutex_lock(&ex->lock);
	map = export_map(ex);
	g_mutex_unlock(&ex->lock);
	return map;
}

const CfsView *cfs_export_view(CfsExport *ex, const CfsFormat *fmt)
{
	CfsView *view = NULL;
	CfsExtentMap *map;

	if (!fmt)
		return NULL;
	g_mutex_lock(&ex->lock);
	for (guint i = 0; i < ex->views->len && !view; i++)
		if (cfs_view_format(ex->views->pdata[i]) == fmt)
			view = ex->views->pdata[i];
	map = view ? NULL : export_view_map(ex);
	if (map) {
		g_autoptr(GError) error = NULL;

		view = fmt->create(map, &error);
		if (view)
			g_ptr_array_add(ex->views, view);
		else
			g_warning("%s.%s: %s", ex->path, fmt->name,
				  error->message);
	}
	g_mutex_unlock(&ex->lock);
	return view;
}

bool cfs_export_file_size(CfsExport *ex, const CfsFormat *fmt, guint64 *size)
{
	const CfsView *view;
	bool ready;

	if (fmt) {
		view = cfs_export_view(ex, fmt);
		if (view)
			*size = cfs_view_size(view);
		return view != NULL;
	}
	if (ex->disk->size != CFS_SIZE_UNKNOWN) {
		*size = ex->disk->size;
		return true;
	}
	g_mutex_lock(&ex->lock);
	ready = ex->state == EXPORT_READY;
	if (ready)
		*size = ex->source->size != CFS_SIZE_UNKNOWN ?
				ex->source->size : ex->stream_size;
	g_mutex_unlock(&ex->lock);
	return ready && *size != CFS_SIZE_UNKNOWN;
}

bool cfs_export_size_bound(CfsExport *ex, guint64 *size)
{
	bool ready;

	if (cfs_export_file_size(ex, NULL, size))
		return true;
	g_mutex_lock(&ex->lock);
	ready = ex->state == EXPORT_READY;
	if (ready)
		*size = ex->source->size_max;
	g_mutex_unlock(&ex->lock);
	return ready;
}

/* --- streams of unknown length --- */

/* Control pool: what waited for the stream's end goes on. */
static void stream_end_job(gpointer data)
{
	CfsExport *ex = data;
	CfsEngine *engine = ex->engine;
	g_autoptr(GError) error = NULL;
	g_autoptr(GPtrArray) parked = NULL;
	CfsReader *reader = NULL;
	CfsSource src = *ex->source;

	g_mutex_lock(&ex->job_lock);
	src.size = ex->stream_size;
	src.map = ex->stream_map;
	if (!export_open_reader(ex, &src, ex->cache, &reader, &error)) {
		g_warning("%s: %s", ex->path, error->message);
		cfs_export_set_error(ex, error);
	}
	g_mutex_lock(&ex->lock);
	ex->reader = reader;
	parked = g_steal_pointer(&ex->parked);
	ex->parked = g_ptr_array_new();
	g_cond_broadcast(&ex->cond);	/* cfs_export_read_sync() waits */
	g_mutex_unlock(&ex->lock);
	g_mutex_unlock(&ex->job_lock);
	for (guint i = 0; i < parked->len; i++)
		cfs_read_go(parked->pdata[i], error);
	if (ex->ready_hook)
		ex->ready_hook(ex, ex->ready_data);
	cfs_engine_job_end(engine);
}

void cfs_export_stream_ended(CfsExport *ex, guint64 size, guint64 last)
{
	guint64 chunk = cfs_cache_chunk_size(ex->cache);
	guint64 n = cfs_cache_n_chunks(ex->cache);

	g_mutex_lock(&ex->lock);
	ex->stream_size = size;
	ex->stream_map = size ? cfs_extent_map_new_full(size) :
				cfs_extent_map_new(0, NULL, 0);
	g_mutex_unlock(&ex->lock);
	g_message("%s: the stream ended after %" G_GUINT64_FORMAT " bytes",
		  ex->path, size);
	if (last != G_MAXUINT64)
		cfs_cache_chunk_done(ex->cache, last, NULL);
	/* Chunks past the end hold nothing: complete, so their readers
	 * wake (and read the end of the file). */
	for (guint64 idx = (size + chunk - 1) / chunk; idx < n; idx++)
		if (cfs_cache_claimed(ex->cache, idx))
			cfs_cache_chunk_done(ex->cache, idx, NULL);
	cfs_engine_job_begin(ex->engine);
	cfs_control_push(ex->engine->ctx.control, stream_end_job, ex);
}

bool cfs_export_park_for_stream(CfsExport *ex, gpointer read_ctx,
				bool *parked_flag)
{
	bool park;

	g_mutex_lock(&ex->lock);
	park = ex->state == EXPORT_READY &&
	       ex->source->size == CFS_SIZE_UNKNOWN &&
	       ex->stream_size == CFS_SIZE_UNKNOWN;
	if (park) {
		*parked_flag = true;
		g_ptr_array_add(ex->parked, read_ctx);
	}
	g_mutex_unlock(&ex->lock);
	if (park)	/* the whole stream is needed: make sure it runs */
		cfs_fetch_chunk(ex, 0, true);
	return park;
}

void cfs_export_set_ready_hook(CfsExport *ex, CfsExportReadyFn fn,
			       gpointer data)
{
	ex->ready_hook = fn;
	ex->ready_data = data;
}

