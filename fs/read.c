// SPDX-License-Identifier: MIT
/*
 * Answering FUSE reads of a disk's files: the native bytes, or a view
 * (of the raw disk, or of the disk inside a container). A read that
 * misses is parked on its chunks and answered by whichever thread fills
 * the last of them.
 */
#include <string.h>

#include "common/error.h"
#include "fs/export-private.h"
#include "fs/formats/format.h"

/* --- reads --- */

typedef struct {
	CfsExport *ex;
	const CfsFormat *fmt;	/* NULL: the native bytes */
	fuse_req_t req;
	size_t size;
	guint64 off;
	const CfsView *view;	/* resolved once the export is ready */
	bool parked;		/* protected by ex->lock */
	CfsCacheHold *hold;	/* atomic: set once acquired */
} ReadCtx;

static bool read_raw(void *opaque, void *buf, gsize len, guint64 off,
		     GError **error)
{
	CfsExport *ex = opaque;

	return cfs_cache_pread(ex->cache, buf, len, off, error);
}

/* The disk inside a container, from container chunks the read holds. */
static bool read_virtual(void *opaque, void *buf, gsize len, guint64 off,
			 GError **error)
{
	CfsExport *ex = opaque;

	return cfs_reader_read(ex->reader, buf, len, off, read_raw, ex, error);
}

/* The errno a reader sees: one that says why (cp prints it), or EIO
 * for what a reader cannot act on. */
static int read_errno_code(int code)
{
	switch (code) {
	case ENOSPC:	/* the cache's disk is full */
	case EDQUOT:
	case EACCES:	/* the provider refused the grant */
	case ETIMEDOUT:
	case EFBIG:	/* a disk larger than cloudfs takes */
	case ENOMEM:
		return code;
	default:
		return EIO;
	}
}

static int read_errno(const GError *error)
{
	return read_errno_code(cfs_error_errno(error));
}

static void read_reply_err(ReadCtx *ctx, int err)
{
	/* Wait out a running interrupt handler, and stop new ones. */
	fuse_req_interrupt_func(ctx->req, NULL, NULL);
	fuse_reply_err(ctx->req, err);
	g_free(ctx);
}

/* A stream of unknown length may have ended before the end of the read:
 * cut it there. False if nothing is left. */
static bool read_clamp(ReadCtx *ctx)
{
	guint64 size;

	if (!cfs_export_file_size(ctx->ex, NULL, &size))
		return true;	/* still streaming: the chunks were there */
	if (ctx->off >= size)
		return false;
	ctx->size = (size_t)MIN((guint64)ctx->size, size - ctx->off);
	return true;
}

/* Send the bytes of the disk straight from the cache's data file: the
 * kernel splices them into the reply where it can (no copy through a
 * buffer of ours, no buffer to allocate), and libfuse reads them into a
 * buffer where it cannot. It answers the request either way. */
static void read_reply_cache(ReadCtx *ctx)
{
	struct fuse_bufvec bufv = FUSE_BUFVEC_INIT(ctx->size);
	int res;

	bufv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK |
			    FUSE_BUF_FD_RETRY;
	bufv.buf[0].fd = cfs_cache_data_fd(ctx->ex->cache);
	bufv.buf[0].pos = (off_t)ctx->off;
	res = fuse_reply_data(ctx->req, &bufv, 0);
	if (res < 0 && res != -ENOENT)	/* ENOENT: the read was interrupted */
		g_warning("%s: replying to a read at %" G_GUINT64_FORMAT
			  ": %s", ctx->ex->path, ctx->off, g_strerror(-res));
	else
		__atomic_fetch_add(&ctx->ex->served, ctx->size,
				   __ATOMIC_RELAXED);
}

/* Answer the read from chunks it holds. Any thread; no lock held. */
static void read_finish(ReadCtx *ctx, const GError *failed)
{
	g_autoptr(GError) error = NULL;
	g_autofree char *buf = NULL;
	CfsCacheHold *hold = g_atomic_pointer_get(&ctx->hold);
	bool ok;

	if (failed) {
		/* The interrupt handler acts on the hold: stop it first. */
		fuse_req_interrupt_func(ctx->req, NULL, NULL);
		cfs_cache_release(hold);
		read_reply_err(ctx, read_errno(failed));
		return;
	}
	fuse_req_interrupt_func(ctx->req, NULL, NULL);
	if (!ctx->fmt && !read_clamp(ctx)) {
		/* Past the end of a stream that turned out shorter. */
		fuse_reply_buf(ctx->req, NULL, 0);
		cfs_cache_release(hold);
		g_free(ctx);
		return;
	}
	if (!ctx->view) {
		read_reply_cache(ctx);
		cfs_cache_release(hold);
		g_free(ctx);
		return;
	}
	buf = g_malloc(ctx->size);
	ok = cfs_view_read(ctx->view, buf, ctx->size, ctx->off,
			   ctx->ex->reader ? read_virtual : read_raw, ctx->ex,
			   &error);
	if (ok) {
		__atomic_fetch_add(&ctx->ex->served, ctx->size,
				   __ATOMIC_RELAXED);
		fuse_reply_buf(ctx->req, buf, ctx->size);
	} else {
		g_warning("%s: %s", ctx->ex->path, error->message);
		fuse_reply_err(ctx->req, read_errno(error));
	}
	cfs_cache_release(hold);
	g_free(ctx);
}

static void read_wake(CfsCacheHold *hold, gpointer data, const GError *error)
{
	read_finish(data, error);
}

static void read_interrupt(fuse_req_t req, void *data)
{
	ReadCtx *ctx = data;
	CfsExport *ex = ctx->ex;
	CfsCacheHold *hold;
	bool was_parked;

	g_mutex_lock(&ex->lock);
	was_parked = ctx->parked && g_ptr_array_remove(ex->parked, ctx);
	g_mutex_unlock(&ex->lock);
	if (!was_parked) {
		hold = g_atomic_pointer_get(&ctx->hold);
		if (!hold || !cfs_cache_cancel(hold))
			return;	/* it is being answered */
		cfs_cache_release(hold);
	}
	fuse_reply_err(req, EINTR);
	g_free(ctx);
}

/* The span of raw disk bytes a read needs, for the sequential reader
 * detection; 0 bytes if it needs none. */
static void read_raw_span(GArray *ranges, guint64 *raw_off, guint64 *raw_len)
{
	guint64 lo = G_MAXUINT64, hi = 0;

	for (guint i = 0; i < ranges->len; i++) {
		CfsExtent *e = &g_array_index(ranges, CfsExtent, i);

		lo = MIN(lo, e->offset);
		hi = MAX(hi, e->offset + e->length);
	}
	*raw_off = ranges->len ? lo : 0;
	*raw_len = ranges->len ? hi - lo : 0;
}

/* Virtual disk ranges into the container ranges they are made of. */
static void read_container_deps(const CfsReader *reader, GArray **ranges)
{
	GArray *out = g_array_new(FALSE, FALSE, sizeof(CfsExtent));

	for (guint i = 0; i < (*ranges)->len; i++) {
		CfsExtent *e = &g_array_index(*ranges, CfsExtent, i);

		cfs_reader_deps(reader, e->offset, e->length, out);
	}
	g_array_unref(*ranges);
	*ranges = out;
}

/* The cached ranges a read of [off, off+len) of the native bytes (@view
 * NULL) or of a view needs. */
static void read_deps(CfsExport *ex, const CfsView *view, guint64 off,
		      guint64 len, GArray **ranges)
{
	if (view) {
		cfs_view_deps(view, off, len, *ranges);
		if (ex->reader)
			read_container_deps(ex->reader, ranges);
	} else {
		CfsExtent whole = { off, len };

		g_array_append_val(*ranges, whole);
	}
}

void cfs_read_go(gpointer data, const GError *error)
{
	ReadCtx *ctx = data;
	CfsExport *ex = ctx->ex;
	g_autoptr(GArray) ranges = g_array_new(FALSE, FALSE, sizeof(CfsExtent));
	guint64 file_size = 0, raw_off, raw_len;

	if (!error && ctx->fmt &&
	    cfs_export_park_for_stream(ex, ctx, &ctx->parked))
		return;	/* a view of a stream: once its length is known */
	if (error || !(ctx->fmt ? cfs_export_file_size(ex, ctx->fmt, &file_size)
				: cfs_export_size_bound(ex, &file_size))) {
		read_reply_err(ctx, error ? read_errno(error) : EIO);
		return;
	}
	if (ctx->off >= file_size) {
		fuse_req_interrupt_func(ctx->req, NULL, NULL);
		fuse_reply_buf(ctx->req, NULL, 0);
		g_free(ctx);
		return;
	}
	ctx->size = (size_t)MIN((guint64)ctx->size, file_size - ctx->off);
	ctx->view = cfs_export_view(ex, ctx->fmt);
	read_deps(ex, ctx->view, ctx->off, ctx->size, &ranges);
	read_raw_span(ranges, &raw_off, &raw_len);
	/* The hold is published in ctx before any chunk can land, for
	 * read_wake and read_interrupt (which acts on it only while it is
	 * not woken). Once parked, ctx may be answered and freed at any
	 * time: it is not touched again here. */
	if (cfs_cache_acquire(ex->cache, (CfsExtent *)(void *)ranges->data,
			      ranges->len, read_wake, ctx, &ctx->hold)) {
		__atomic_fetch_add(&ex->hits, 1, __ATOMIC_RELAXED);
		read_finish(ctx, NULL);
	} else {
		__atomic_fetch_add(&ex->misses, 1, __ATOMIC_RELAXED);
	}
	/* After the demand fetches, so that they go first. */
	if (raw_len)
		cfs_cache_note_read(ex->cache, raw_off, raw_len);
}

void cfs_export_read(CfsExport *ex, const CfsFormat *fmt, fuse_req_t req,
		     size_t size, off_t off)
{
	ReadCtx *ctx;
	bool ready = false;
	int failed = 0;

	if (off < 0 || size == 0) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	cfs_export_count_read(ex, size);
	ctx = g_new0(ReadCtx, 1);
	ctx->ex = ex;
	ctx->fmt = fmt;
	ctx->req = req;
	ctx->off = (guint64)off;
	ctx->size = size;
	fuse_req_interrupt_func(req, read_interrupt, ctx);

	g_mutex_lock(&ex->lock);
	switch (ex->state) {
	case EXPORT_READY:
		ready = true;
		break;
	case EXPORT_FAILED:
		failed = read_errno_code(ex->error_errno);
		break;
	default:
		ctx->parked = true;
		g_ptr_array_add(ex->parked, ctx);
		break;
	}
	g_mutex_unlock(&ex->lock);
	if (failed)
		read_reply_err(ctx, failed);
	else if (ready)
		cfs_read_go(ctx, NULL);
}

/* --- reads that may wait (for files made of disks, on the control pool) --- */

typedef struct {
	GMutex lock;
	GCond cond;
	bool woken;
	GError *error;
} SyncRead;

static void sync_read_wake(CfsCacheHold *hold, gpointer data,
			   const GError *error)
{
	SyncRead *sync = data;

	g_mutex_lock(&sync->lock);
	sync->error = error ? g_error_copy(error) : NULL;
	sync->woken = true;
	g_cond_signal(&sync->cond);
	g_mutex_unlock(&sync->lock);
}

bool cfs_cache_read_wait(CfsCache *cache, const CfsExtent *ranges, guint n,
			 CfsCacheHold **hold, GError **error)
{
	SyncRead sync = { 0 };

	g_mutex_init(&sync.lock);
	g_cond_init(&sync.cond);
	if (cfs_cache_acquire(cache, ranges, n, sync_read_wake, &sync, hold))
		sync.woken = true;
	g_mutex_lock(&sync.lock);
	while (!sync.woken)
		g_cond_wait(&sync.cond, &sync.lock);
	g_mutex_unlock(&sync.lock);
	g_mutex_clear(&sync.lock);
	g_cond_clear(&sync.cond);
	if (sync.error) {
		g_propagate_error(error, sync.error);
		return false;
	}
	return true;
}

bool cfs_export_wait_size(CfsExport *ex, const CfsFormat *fmt,
			  guint64 *size, GError **error)
{
	for (;;) {
		bool stream;

		g_mutex_lock(&ex->lock);
		while (ex->state == EXPORT_PREPARING)
			g_cond_wait(&ex->cond, &ex->lock);
		if (ex->state != EXPORT_READY) {
			g_set_error(error, CFS_ERROR, EIO, "%s: %s", ex->path,
				    ex->error ? ex->error : "not exported");
			g_mutex_unlock(&ex->lock);
			return false;
		}
		stream = ex->source->size == CFS_SIZE_UNKNOWN &&
			 ex->stream_size == CFS_SIZE_UNKNOWN;
		g_mutex_unlock(&ex->lock);
		if (!stream)
			break;
		cfs_fetch_chunk(ex, 0, true);	/* make sure it runs */
		g_mutex_lock(&ex->lock);
		if (ex->stream_size == CFS_SIZE_UNKNOWN && !ex->error)
			g_cond_wait(&ex->cond, &ex->lock);
		if (ex->stream_size == CFS_SIZE_UNKNOWN && ex->error) {
			g_set_error(error, CFS_ERROR, EIO, "%s: %s", ex->path,
				    ex->error);
			g_mutex_unlock(&ex->lock);
			return false;
		}
		g_mutex_unlock(&ex->lock);
	}
	if (!cfs_export_file_size(ex, fmt, size)) {
		g_set_error(error, CFS_ERROR, EIO, "%s: no %s view", ex->path,
			    fmt ? fmt->name : "native");
		return false;
	}
	return true;
}

bool cfs_export_read_sync(CfsExport *ex, const CfsFormat *fmt, void *buf,
			  gsize len, guint64 off, GError **error)
{
	g_autoptr(GArray) ranges = g_array_new(FALSE, FALSE, sizeof(CfsExtent));
	CfsCacheHold *hold = NULL;
	const CfsView *view;
	guint64 size;
	bool ok;

	cfs_export_count_read(ex, len);
	if (!cfs_export_wait_size(ex, fmt, &size, error))
		return false;
	if (off > size || len > size - off) {
		g_set_error(error, CFS_ERROR, EIO, "%s: read past the end",
			    ex->path);
		return false;
	}
	view = cfs_export_view(ex, fmt);
	read_deps(ex, view, off, len, &ranges);
	ok = cfs_cache_read_wait(ex->cache, (CfsExtent *)(void *)ranges->data,
				 ranges->len, &hold, error);
	if (ok && view)
		ok = cfs_view_read(view, buf, len, off,
				   ex->reader ? read_virtual : read_raw, ex,
				   error);
	else if (ok)
		ok = cfs_cache_pread(ex->cache, buf, len, off, error);
	cfs_cache_release(hold);
	return ok;
}
