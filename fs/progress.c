// SPDX-License-Identifier: MIT
/*
 * .progress lines: one per export file, `key=value` pairs for awk:
 *   url/web01/disk.raw state=transferring phase=- bytes=… total=…
 *   percent=12.5 rate=187.2MiB/s eta=40s [error="…"]
 * bytes: data present in the cache; total: data to transfer (the disk
 * less its holes; 0 while a stream's length is unknown); rate: bytes
 * landing per second since the last look. The path and the error never
 * hold a byte that would split a field: see progress_escape().
 */
#include <string.h>

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

/* A byte that would split a field or move a terminal: \xHH instead. */
static bool progress_plain(guchar ch, bool quoted)
{
	if (ch < 0x20 || ch == 0x7f || ch == '\\' || ch == '"')
		return false;
	return quoted || (ch != ' ' && ch != '=');
}

static void progress_escape(GString *out, const char *text, bool quoted)
{
	for (const guchar *p = (const guchar *)text; *p; p++) {
		if (progress_plain(*p, quoted))
			g_string_append_c(out, (char)*p);
		else
			g_string_append_printf(out, "\\x%02x", *p);
	}
}

/* The path field: never a space, '=', quote, backslash or control
 * character, so that splitting on spaces and '=' always works. */
static void progress_path(GString *out, const char *path)
{
	progress_escape(out, path, false);
}

/* The error field: in double quotes, with quotes, backslashes and
 * control characters (newline, ESC) as \xHH. */
static void progress_quote(GString *out, const char *text)
{
	g_string_append_c(out, '"');
	progress_escape(out, text, true);
	g_string_append_c(out, '"');
}

void cfs_progress_failed(GString *out, const char *path, const char *error)
{
	progress_path(out, path);
	g_string_append(out, " state=failed phase=- bytes=0 total=0 "
			"percent=0.0 rate=0B/s eta=- error=");
	progress_quote(out, error);
	g_string_append_c(out, '\n');
}

/* Where an export stands, as .progress and .metrics tell it. */
typedef struct {
	const char *state;
	char *phase;
	char *error;
	double rate;
	CfsCacheStats st;
	bool unknown;		/* a stream whose length is not known yet */
} ProgressState;

static void progress_state(CfsExport *ex, ProgressState *p)
{
	CfsCache *cache = NULL;
	ExportState es;
	guint64 stream_size;

	memset(p, 0, sizeof(*p));
	g_mutex_lock(&ex->lock);
	es = ex->state;
	cache = es == EXPORT_READY ? ex->cache : NULL;
	stream_size = ex->stream_size;
	p->unknown = cache && ex->source->size == CFS_SIZE_UNKNOWN &&
		     stream_size == CFS_SIZE_UNKNOWN;
	p->phase = ex->phase ? g_strdup_printf("%s:%.0f%%", ex->phase,
					       ex->phase_percent) :
			       g_strdup("-");
	p->error = g_strdup(ex->error);
	p->rate = progress_rate(ex);
	g_mutex_unlock(&ex->lock);

	if (cache) {
		cfs_cache_stats(cache, &p->st);
		if (ex->source->size == CFS_SIZE_UNKNOWN) {
			/* A stream: no total until it ended. */
			p->st.total = p->unknown ? 0 : stream_size;
			p->st.present = p->unknown ?
				__atomic_load_n(&ex->fetched, __ATOMIC_RELAXED) :
				MIN(p->st.present, p->st.total);
		}
	} else {
		p->st.total = progress_total(ex->disk->map,
					     ex->engine->chunk_size);
		p->st.present = MIN(ex->cached, p->st.total);
	}
	if (p->error)
		p->state = "failed";
	else if (es == EXPORT_PREPARING)
		p->state = "preparing";
	else if (p->unknown)
		p->state = "transferring";
	else if (p->st.present == p->st.total && (p->st.total || cache))
		p->state = "complete";	/* an all-hole disk once opened */
	else if (cache && p->st.inflight > 0)
		p->state = "transferring";
	else
		p->state = "idle";
}

void cfs_export_numbers(CfsExport *ex, CfsExportNumbers *n)
{
	ProgressState p;

	progress_state(ex, &p);
	n->state = p.state;
	n->present = p.st.present;
	n->total = p.st.total;
	n->fetched = __atomic_load_n(&ex->fetched, __ATOMIC_RELAXED);
	n->served = __atomic_load_n(&ex->served, __ATOMIC_RELAXED);
	n->hits = __atomic_load_n(&ex->hits, __ATOMIC_RELAXED);
	n->misses = __atomic_load_n(&ex->misses, __ATOMIC_RELAXED);
	g_free(p.phase);
	g_free(p.error);
}

void cfs_export_progress(CfsExport *ex, const char *path, GString *out)
{
	ProgressState p;
	g_autofree char *rate_text = NULL, *eta = NULL;
	bool moving;
	double percent;

	progress_state(ex, &p);
	moving = g_str_equal(p.state, "transferring");
	percent = p.st.total ? 100.0 * (double)p.st.present /
				       (double)p.st.total :
			       (g_str_equal(p.state, "complete") ? 100.0 : 0.0);
	if (moving && p.rate > 0 && p.st.total > p.st.present)
		eta = g_strdup_printf("%.0fs", (double)(p.st.total -
							p.st.present) / p.rate);
	else
		eta = g_strdup(g_str_equal(p.state, "complete") ? "0s" : "-");
	rate_text = cfs_format_bytes(moving ? p.rate : 0);
	progress_path(out, path);
	g_string_append_printf(out, " state=%s phase=%s bytes=%" G_GUINT64_FORMAT
			       " total=%" G_GUINT64_FORMAT " percent=%.1f "
			       "rate=%s/s eta=%s", p.state, p.phase,
			       p.st.present, p.st.total, percent, rate_text,
			       eta);
	if (p.error) {
		g_string_append(out, " error=");
		progress_quote(out, p.error);
	}
	g_string_append_c(out, '\n');
	g_free(p.phase);
	g_free(p.error);
}
