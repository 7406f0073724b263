// SPDX-License-Identifier: MIT
/*
 * Fetching chunks for the cache: ranged HTTP pieces on the network thread,
 * one whole-file stream for servers without ranges, and reads of local
 * sources on the I/O pool. Every byte that lands is counted here.
 */
#include <string.h>

#include "common/error.h"
#include "common/util.h"
#include "fs/export-private.h"

/* Bytes gathered before a write to the cache file (small writes are
 * slow; see DESIGN.md). */
#define STAGE_SIZE (256 * 1024)
/* A piece of the body at least this large is written to the cache as it
 * comes, from libcurl's buffer, when nothing is staged before it. */
#define DIRECT_MIN (64 * 1024)

/* One chunk being fetched over HTTP, in one or more pieces. */
typedef struct {
	CfsExport *ex;
	guint64 idx;
	guint pending;		/* pieces not done; network thread only */
	GError *error;		/* the first failure */
} ChunkJob;

/* One HTTP request of a chunk (or the whole stream). */
typedef struct {
	ChunkJob *job;		/* NULL for the stream */
	CfsExport *ex;
	CfsSourcePiece piece;
	guint64 pos;		/* disk offset of the next body byte */
	guint64 flushed;	/* disk offset written up to */
	GByteArray *stage;	/* bytes from flushed to pos */
	bool whole;		/* keep the whole piece (to verify it) */
	bool started;		/* this attempt's body has begun */
	bool reauthed;		/* sent again once after a 401/403 */
	guint gen;		/* grant generation of this attempt */
	GError *error;		/* ours, beats the transfer's */
	/* the stream only */
	guint64 claimed_idx;	/* chunk the stream fills now, or G_MAXUINT64 */
} Piece;

static void piece_free(Piece *p)
{
	if (p->stage)
		g_byte_array_unref(p->stage);
	g_clear_error(&p->error);
	g_free(p);
}

static void chunk_job_end(ChunkJob *job)
{
	CfsExport *ex = job->ex;

	/* Bytes of a source found bad since are not served. */
	if (!job->error)
		job->error = cfs_export_bad_error(ex);
	cfs_export_set_error(ex, job->error);
	cfs_cache_chunk_done(ex->cache, job->idx, job->error);
	g_clear_error(&job->error);
	g_free(job);
}

/* Write what is staged to the cache. */
static bool piece_flush(Piece *p)
{
	if (!p->stage || p->stage->len == 0)
		return true;
	if (!cfs_cache_write(p->ex->cache, p->flushed, p->stage->data,
			     p->stage->len, &p->error))
		return false;
	p->flushed += p->stage->len;
	g_byte_array_set_size(p->stage, 0);
	return true;
}

static void piece_reset(CfsHttpRequest *req)
{
	Piece *p = req->user_data;

	p->pos = p->piece.offset;
	p->flushed = p->piece.offset;
	if (p->stage)
		g_byte_array_set_size(p->stage, 0);
	p->claimed_idx = G_MAXUINT64;
	p->started = false;
	/* Too fast for the source: fewer chunks at once for this export
	 * (the worker also lowers the host's concurrency). */
	if (req->verdict == CFS_HTTP_THROTTLE)
		cfs_cache_throttled(p->ex->cache);
}

/* The staging buffer, made when the first byte comes: a piece queued
 * behind others holds no memory. */
static GByteArray *piece_stage(Piece *p)
{
	if (!p->stage)
		p->stage = g_byte_array_sized_new((guint)MIN(
			p->piece.length, p->whole ? p->piece.length :
						    STAGE_SIZE));
	return p->stage;
}

/* A 206 must be the range asked for, of a file of the size the export
 * knows: anything else would put wrong bytes in the cache. */
static bool piece_check_range(Piece *p, CfsHttpRequest *req)
{
	guint64 start = 0, last = 0, total = 0;

	if (req->status != 206)
		return true;
	if (cfs_http_content_range(req, &start, &last, &total) &&
	    start == req->range_start && last >= MIN(req->range_end,
						      total - 1) &&
	    total == p->ex->source->size)
		return true;
	p->error = g_error_new(CFS_ERROR, EIO, "%s answered range '%s' for "
			       "bytes %" G_GUINT64_FORMAT "-%" G_GUINT64_FORMAT
			       " of %" G_GUINT64_FORMAT " (has the image "
			       "changed?)", req->host,
			       req->content_range ? req->content_range : "",
			       req->range_start, req->range_end,
			       p->ex->source->size);
	return false;
}

/* The body of a ranged piece. A server that ignores Range answers 200
 * with the whole file: skip to the piece, and use a stream from now on. */
static bool piece_body(CfsHttpRequest *req, const void *data, gsize len)
{
	Piece *p = req->user_data;
	const guint8 *bytes = data;
	guint64 end = p->piece.offset + p->piece.length;

	if (!p->started) {
		p->started = true;
		if (req->has_range && !piece_check_range(p, req))
			return false;
		if (req->status == 200 && req->has_range) {
			/* The server ignores Range: the body is the whole
			 * file; use one stream from now on. */
			g_atomic_int_set(&p->ex->ranges_ignored, 1);
			p->pos = 0;
		}
	}
	__atomic_fetch_add(&p->ex->fetched, len, __ATOMIC_RELAXED);
	if (p->pos < p->piece.offset) {
		guint64 skip = MIN(len, p->piece.offset - p->pos);

		p->pos += skip;
		bytes += skip;
		len -= skip;
	}
	len = (gsize)MIN((guint64)len, end - p->pos);
	if (!p->whole && (!p->stage || p->stage->len == 0) &&
	    len >= DIRECT_MIN) {
		/* Large enough to write as it is: no copy into the stage. */
		if (!cfs_cache_write(p->ex->cache, p->pos, bytes, len,
				     &p->error))
			return false;
		p->pos += len;
		p->flushed = p->pos;
		goto written;
	}
	g_byte_array_append(piece_stage(p), bytes, (guint)len);
	p->pos += len;
	if (!p->whole && p->stage->len >= STAGE_SIZE && !piece_flush(p))
		return false;
written:
	if (p->pos >= end && req->status == 200) {
		req->abort_ok = true;	/* all we need; stop the rest */
		return false;
	}
	return true;
}

/* Before each attempt: the source's current grant. */
static bool piece_attempt(CfsHttpRequest *req, GError **error)
{
	Piece *p = req->user_data;
	CfsSource *src = p->ex->source;

	p->gen = __atomic_load_n(&src->grant_gen, __ATOMIC_ACQUIRE);
	return !src->ops->authorize || src->ops->authorize(src, req, error);
}

/* A refused grant: renew it and send the request again, once. True if
 * the request was taken for that. */
static bool piece_reauth(Piece *p, CfsHttpRequest *req, const GError *error)
{
	if (!error || !g_error_matches(error, CFS_ERROR, EACCES) ||
	    p->reauthed || p->error)
		return false;
	p->reauthed = true;
	return cfs_grant_reauth(p->ex, req, p->gen);
}

/* The source's settings and grant for a request it planned. */
static void piece_prepare(CfsExport *ex, CfsHttpRequest *req, Piece *p)
{
	if (!req->settings)
		cfs_http_request_set_settings(req, ex->source->settings);
	req->on_attempt = piece_attempt;
	req->user_data = p;
}

static void piece_done(CfsHttpRequest *req, const GError *error)
{
	Piece *p = req->user_data;
	ChunkJob *job = p->job;
	CfsSource *src = p->ex->source;

	if (piece_reauth(p, req, error))
		return;
	if (!error && !p->error && p->pos < p->piece.offset + p->piece.length)
		p->error = g_error_new(CFS_ERROR, EIO, "short answer from %s",
				       req->host);
	if (!error && !p->error && src->ops->verify &&
	    piece_stage(p) &&
	    !src->ops->verify(src, &p->piece, p->stage->data, p->stage->len,
			      &p->error)) {
		g_prefix_error(&p->error, "%s: ", req->host);
		if (g_error_matches(p->error, CFS_ERROR, CFS_SOURCE_BAD))
			cfs_export_source_bad(p->ex, p->error);
	}
	if (!error && !p->error)
		piece_flush(p);
	if (!job->error && (p->error || error))
		job->error = g_error_copy(p->error ? p->error : error);
	cfs_http_request_free(req);
	piece_free(p);
	if (--job->pending == 0)
		chunk_job_end(job);
}

static Piece *piece_new(CfsExport *ex, const CfsSourcePiece *sp, bool whole)
{
	Piece *p = g_new0(Piece, 1);

	p->ex = ex;
	p->piece = *sp;
	p->whole = whole;
	p->pos = p->flushed = sp->offset;
	p->claimed_idx = G_MAXUINT64;
	return p;
}

static void fetch_http(CfsExport *ex, guint64 idx, bool demand)
{
	CfsSource *src = ex->source;
	guint64 chunk = cfs_cache_chunk_size(ex->cache);
	guint64 off = idx * chunk, len = MIN(chunk, src->size - off);
	g_autoptr(GArray) pieces = g_array_new(FALSE, FALSE,
					       sizeof(CfsSourcePiece));
	g_autoptr(GError) error = NULL;
	ChunkJob *job = g_new0(ChunkJob, 1);

	job->ex = ex;
	job->idx = idx;
	if (!src->ops->plan(src, off, len, pieces, &error) ||
	    pieces->len == 0) {
		/* Nothing to fetch: the chunk is all holes. */
		if (error)
			job->error = g_steal_pointer(&error);
		chunk_job_end(job);
		return;
	}
	/* The job ends when the last piece is done, on the network thread;
	 * count them all before the first can finish. */
	job->pending = pieces->len;
	for (guint i = 0; i < pieces->len; i++) {
		CfsSourcePiece *sp = &g_array_index(pieces, CfsSourcePiece, i);
		Piece *p = piece_new(ex, sp, src->ops->verify != NULL);
		CfsHttpRequest *req = sp->req;

		p->job = job;
		piece_prepare(ex, req, p);
		req->priority = demand ? CFS_HTTP_DEMAND : CFS_HTTP_PREFETCH;
		req->on_body = piece_body;
		req->on_reset = piece_reset;
		req->on_done = piece_done;
		req->timeout_s = MAX(req->timeout_s, 300);
		cfs_http_submit(ex->engine->ctx.http, req);
	}
}

/* --- one stream for the whole file --- */

static void stream_start(CfsExport *ex);

/* Where a stream must end: its size, or the bound of one whose length
 * shows at its end. */
static guint64 stream_bound(const CfsSource *src)
{
	return src->size != CFS_SIZE_UNKNOWN ? src->size : src->size_max;
}

/* A stream of unknown length ended: its last chunk is as full as it
 * gets. */
static bool stream_end_unknown(Piece *p)
{
	CfsExport *ex = p->ex;
	guint64 last = p->claimed_idx;

	if (last != G_MAXUINT64 && !piece_flush(p))
		return false;
	p->claimed_idx = G_MAXUINT64;
	/* The size is known before the last chunk wakes its readers, so
	 * they stop at the end. */
	cfs_export_stream_ended(ex, p->pos, last);
	return true;
}

/* The stream passes over the disk: it fills every chunk it can claim. */
static bool stream_body(CfsHttpRequest *req, const void *data, gsize len)
{
	Piece *p = req->user_data;
	CfsExport *ex = p->ex;
	guint64 chunk = cfs_cache_chunk_size(ex->cache);
	const guint8 *bytes = data;

	guint64 bound = stream_bound(ex->source);

	__atomic_fetch_add(&ex->fetched, len, __ATOMIC_RELAXED);
	if (bound != ex->source->size && p->pos + len > bound) {
		p->error = g_error_new(CFS_ERROR, EIO, "the stream from %s is "
				       "longer than %" G_GUINT64_FORMAT " bytes",
				       req->host, bound);
		return false;
	}
	while (len > 0 && p->pos < bound) {
		guint64 idx = p->pos / chunk;
		guint64 chunk_end = MIN((idx + 1) * chunk, bound);
		gsize n = (gsize)MIN((guint64)len, chunk_end - p->pos);

		if (p->pos == idx * chunk) {
			p->claimed_idx = cfs_cache_claim(ex->cache, idx) ?
						 idx : G_MAXUINT64;
			p->flushed = p->pos;
			g_byte_array_set_size(piece_stage(p), 0);
		}
		if (p->claimed_idx == idx) {
			g_byte_array_append(piece_stage(p), bytes, (guint)n);
			if (p->stage->len >= STAGE_SIZE && !piece_flush(p))
				return false;
		}
		p->pos += n;
		bytes += n;
		len -= n;
		if (p->pos == chunk_end && p->claimed_idx == idx) {
			if (!piece_flush(p))
				return false;
			p->claimed_idx = G_MAXUINT64;
			cfs_cache_chunk_done(ex->cache, idx, NULL);
		}
	}
	return true;
}

/* Fail every chunk still claimed: only the stream claims them. */
static void stream_fail_claims(CfsExport *ex, const GError *error)
{
	guint64 n = cfs_cache_n_chunks(ex->cache);

	for (guint64 idx = 0; idx < n; idx++)
		if (cfs_cache_claimed(ex->cache, idx))
			cfs_cache_chunk_done(ex->cache, idx, error);
}

static void stream_done(CfsHttpRequest *req, const GError *error)
{
	Piece *p = req->user_data;
	CfsExport *ex = p->ex;
	g_autoptr(GError) failure = NULL;
	bool again;

	if (piece_reauth(p, req, error))
		return;
	if (!error && !p->error && ex->source->size == CFS_SIZE_UNKNOWN)
		stream_end_unknown(p);
	if (error || p->error)
		failure = g_error_copy(p->error ? p->error : error);
	else if (ex->source->size != CFS_SIZE_UNKNOWN &&
		 p->pos < ex->source->size)
		failure = g_error_new(CFS_ERROR, EIO, "stream from %s ended "
				      "after %" G_GUINT64_FORMAT " of %"
				      G_GUINT64_FORMAT " bytes", req->host,
				      p->pos, ex->source->size);
	cfs_http_request_free(req);
	piece_free(p);
	cfs_export_set_error(ex, failure);
	if (failure)
		stream_fail_claims(ex, failure);
	g_mutex_lock(&ex->lock);
	ex->streaming = false;
	/* Chunks asked for after the stream had passed them. */
	again = !failure && cfs_cache_inflight(ex->cache) > 0;
	g_mutex_unlock(&ex->lock);
	if (again)
		stream_start(ex);
}

static void stream_start(CfsExport *ex)
{
	CfsSource *src = ex->source;
	g_autoptr(GArray) pieces = g_array_new(FALSE, FALSE,
					       sizeof(CfsSourcePiece));
	g_autoptr(GError) error = NULL;
	CfsSourcePiece *sp;
	CfsHttpRequest *req;
	Piece *p;

	g_mutex_lock(&ex->lock);
	if (ex->streaming) {
		g_mutex_unlock(&ex->lock);
		return;
	}
	ex->streaming = true;
	g_mutex_unlock(&ex->lock);

	if (!src->ops->plan(src, 0, src->size, pieces, &error) ||
	    pieces->len != 1) {
		if (!error)
			error = g_error_new(CFS_ERROR, EIO, "no stream for %s",
					    ex->path);
		cfs_export_set_error(ex, error);
		stream_fail_claims(ex, error);
		g_mutex_lock(&ex->lock);
		ex->streaming = false;
		g_mutex_unlock(&ex->lock);
		return;
	}
	sp = &g_array_index(pieces, CfsSourcePiece, 0);
	req = sp->req;
	req->has_range = false;
	p = piece_new(ex, sp, false);
	p->piece.offset = 0;
	p->pos = p->flushed = 0;
	piece_prepare(ex, req, p);
	req->priority = CFS_HTTP_DEMAND;
	req->on_body = stream_body;
	req->on_reset = piece_reset;
	req->on_done = stream_done;
	cfs_http_submit(ex->engine->ctx.http, req);
}

/* --- local sources --- */

typedef struct {
	CfsExport *ex;
	guint64 idx;
} LocalJob;

void cfs_fetch_local_job(gpointer data, gpointer unused)
{
	LocalJob *job = data;
	CfsExport *ex = job->ex;
	CfsSource *src = ex->source;
	guint64 chunk = cfs_cache_chunk_size(ex->cache);
	guint64 off = job->idx * chunk, end = MIN(off + chunk, src->size);
	g_autofree guint8 *buf = g_malloc(STAGE_SIZE);
	g_autoptr(GError) error = NULL;
	guint64 pos = off;

	while (pos < end && !error) {
		guint64 data_at, hole_at, n;

		/* Copy only the data extents: holes stay holes. */
		if (!cfs_extent_map_next_data(src->map, pos, &data_at) ||
		    data_at >= end)
			break;
		cfs_extent_map_next_hole(src->map, data_at, &hole_at);
		n = MIN(MIN(hole_at, end) - data_at, STAGE_SIZE);
		if (src->ops->pread(src, buf, n, data_at, &error) &&
		    cfs_cache_write(ex->cache, data_at, buf, n, &error))
			__atomic_fetch_add(&ex->fetched, n, __ATOMIC_RELAXED);
		pos = data_at + n;
	}
	cfs_export_set_error(ex, error);
	cfs_cache_chunk_done(ex->cache, job->idx, error);
	g_free(job);
}

/* --- the cache's fetch function --- */

void cfs_fetch_chunk(gpointer owner, guint64 idx, bool demand)
{
	CfsExport *ex = owner;
	CfsSource *src = ex->source;
	guint64 size;
	bool released;

	g_mutex_lock(&ex->lock);
	released = ex->released || ex->bad;
	g_mutex_unlock(&ex->lock);
	if (released) {
		/* Evicted after the export was given back, or condemned by
		 * its verify: the next open starts a new one. */
		g_autoptr(GError) error = cfs_export_bad_error(ex);

		if (!error)
			error = g_error_new(CFS_ERROR, EIO, "export released; "
					    "open the file again");

		cfs_cache_chunk_done(ex->cache, idx, error);
		return;
	}
	if (src->size == CFS_SIZE_UNKNOWN &&
	    cfs_export_file_size(ex, NULL, &size) &&
	    idx * cfs_cache_chunk_size(ex->cache) >= size) {
		cfs_cache_chunk_done(ex->cache, idx, NULL);	/* past the end */
		return;
	}
	if (src->ops->pread) {
		LocalJob *job = g_new0(LocalJob, 1);

		job->ex = ex;
		job->idx = idx;
		g_thread_pool_push(ex->engine->io, job, NULL);
	} else if (!src->random ||
		   g_atomic_int_get(&ex->ranges_ignored)) {
		stream_start(ex);
	} else {
		fetch_http(ex, idx, demand);
	}
}
