// SPDX-License-Identifier: MIT
/*
 * .progress lines: one per export file, `key=value` pairs for awk:
 *   url/web01/disk.raw state=transferring phase=- bytes=… total=…
 *   percent=12.5 rate=187.2MiB/s eta=40s [error="…"]
 * bytes: data present in the cache; total: data to transfer (the disk
 * less its holes; 0 while a stream's length is unknown); rate: bytes
 * landing per second since the last look.
 */
#include "common/util.h"
#include "fs/export-private.h"

/* Refresh the rate when a second has passed since the last sample (a
 * fifth of one for the first, so that short transfers show one too).
 * Export lock held. */
static double progress_rate(CfsExport *ex)
{
	double now = cfs_now();
	guint64 fetched = __atomic_load_n(&ex->fetched, __ATOMIC_RELAXED);

	if (ex->rate_time == 0) {
		ex->rate_time = now;
		ex->rate_bytes = fetched;
	} else if (now - ex->rate_time >= (ex->rate > 0 ? 1.0 : 0.2)) {
		ex->rate = (double)(fetched - ex->rate_bytes) /
			   (now - ex->rate_time);
		ex->rate_time = now;
		ex->rate_bytes = fetched;
	}
	return ex->rate;
}

/* What the cache will count as total: the bytes of every chunk that holds
 * some data (chunks are fetched whole). */
static guint64 progress_total(const CfsExtentMap *map, guint64 chunk)
{
	guint64 total = 0, next = 0;	/* first chunk not counted yet */

	for (guint i = 0; map && i < map->n; i++) {
		guint64 first = MAX(map->ext[i].offset / chunk, next);
		guint64 last = (map->ext[i].offset + map->ext[i].length - 1) /
			       chunk;

		for (guint64 c = first; c <= last; c++)
			total += MIN(chunk, map->size - c * chunk);
		next = MAX(next, last + 1);
	}
	return total;
}

static void progress_quote(GString *out, const char *text)
{
	g_string_append_c(out, '"');
	for (const char *p = text; *p; p++) {
		if (*p == '"' || *p == '\\')
			g_string_append_c(out, '\\');
		g_string_append_c(out, *p == '\n' ? ' ' : *p);
	}
	g_string_append_c(out, '"');
}

void cfs_progress_failed(GString *out, const char *path, const char *error)
{
	g_string_append_printf(out, "%s state=failed phase=- bytes=0 total=0 "
			       "percent=0.0 rate=0B/s eta=- error=", path);
	progress_quote(out, error);
	g_string_append_c(out, '\n');
}

void cfs_export_progress(CfsExport *ex, const char *path, GString *out)
{
	CfsCacheStats st = { 0 };
	const char *state;
	g_autofree char *phase = NULL, *error = NULL, *rate_text = NULL;
	g_autofree char *eta = NULL;
	double rate, percent;
	CfsCache *cache = NULL;
	ExportState es;
	bool unknown = false;
	guint64 stream_size = CFS_SIZE_UNKNOWN;

	g_mutex_lock(&ex->lock);
	es = ex->state;
	cache = es == EXPORT_READY ? ex->cache : NULL;
	unknown = cache && ex->source->size == CFS_SIZE_UNKNOWN;
	stream_size = ex->stream_size;
	phase = ex->phase ? g_strdup_printf("%s:%.0f%%", ex->phase,
					    ex->phase_percent) :
			    g_strdup("-");
	error = g_strdup(ex->error);
	rate = progress_rate(ex);
	g_mutex_unlock(&ex->lock);

	if (cache) {
		cfs_cache_stats(cache, &st);
		/* A stream of unknown length: no total until it ended. */
		st.total = unknown ? (stream_size == CFS_SIZE_UNKNOWN ? 0 :
				      stream_size) : st.total;
		st.present = unknown ? MIN(st.present, st.total ? st.total :
					   (guint64)__atomic_load_n(
						   &ex->fetched,
						   __ATOMIC_RELAXED)) :
				       st.present;
	} else {
		st.total = progress_total(ex->disk->map, ex->engine->chunk_size);
		st.present = MIN(ex->cached, st.total);
	}
	if (error)
		state = "failed";
	else if (es == EXPORT_PREPARING)
		state = "preparing";
	else if (unknown && stream_size == CFS_SIZE_UNKNOWN)
		state = "transferring";
	else if (st.present == st.total && (st.total || cache))
		state = "complete";	/* an all-hole disk once opened */
	else if (cache && st.inflight > 0)
		state = "transferring";
	else
		state = "idle";
	percent = st.total ? 100.0 * (double)st.present / (double)st.total :
			     (cache && !unknown ? 100.0 : 0.0);
	if (g_str_equal(state, "transferring") && rate > 0 &&
	    st.total > st.present)
		eta = g_strdup_printf("%.0fs", (double)(st.total - st.present) /
					       rate);
	else
		eta = g_strdup(g_str_equal(state, "complete") ? "0s" : "-");
	rate_text = cfs_format_bytes(g_str_equal(state, "transferring") ?
					     rate : 0);
	g_string_append_printf(out, "%s state=%s phase=%s bytes=%" G_GUINT64_FORMAT
			       " total=%" G_GUINT64_FORMAT " percent=%.1f "
			       "rate=%s/s eta=%s", path, state, phase,
			       st.present, st.total, percent, rate_text, eta);
	if (error) {
		g_string_append(out, " error=");
		progress_quote(out, error);
	}
	g_string_append_c(out, '\n');
}
