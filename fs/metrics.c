// SPDX-License-Identifier: MIT
/*
 * MOUNT/.metrics: counters in the Prometheus text format (version
 * 0.0.4), for node_exporter's textfile collector or a scrape through a
 * one-line HTTP server. Made fresh at each open, like .progress.
 */
#include "fs/metrics.h"

typedef struct {
	const char *name;
	const char *type;
	const char *help;
} Metric;

static void metric_head(GString *out, const Metric *m)
{
	g_string_append_printf(out, "# HELP %s %s\n# TYPE %s %s\n", m->name,
			       m->help, m->name, m->type);
}

/* A label value: backslash, double quote and newline escaped. */
static void label_value(GString *out, const char *value)
{
	for (const char *p = value; *p; p++) {
		if (*p == '\\' || *p == '"')
			g_string_append_c(out, '\\');
		if (*p == '\n')
			g_string_append(out, "\\n");
		else
			g_string_append_c(out, *p);
	}
}

static void disk_sample(GString *out, const char *name, CfsExport *ex,
			guint64 value)
{
	g_string_append_printf(out, "%s{provider=\"", name);
	label_value(out, cfs_export_provider(ex)->name);
	g_string_append(out, "\",disk=\"");
	label_value(out, cfs_export_path(ex));
	g_string_append_printf(out, "\"} %" G_GUINT64_FORMAT "\n", value);
}

static const Metric disk_metrics[] = {
	{ "cloudfs_fetched_bytes_total", "counter",
	  "Bytes fetched from the provider into the cache." },
	{ "cloudfs_served_bytes_total", "counter",
	  "Bytes answered to readers of the disk's files." },
	{ "cloudfs_cache_hits_total", "counter",
	  "Reads answered from the cache at once." },
	{ "cloudfs_cache_misses_total", "counter",
	  "Reads that waited for chunks to be fetched." },
	{ "cloudfs_disk_cached_bytes", "gauge",
	  "Bytes of the disk's data in the cache." },
	{ "cloudfs_disk_data_bytes", "gauge",
	  "Bytes of the disk's data to transfer (0 while unknown)." },
};

static guint64 disk_value(guint i, const CfsExportNumbers *n)
{
	const guint64 values[] = { n->fetched, n->served, n->hits, n->misses,
				   n->present, n->total };

	return values[i];
}

static const char *const states[] = {
	"idle", "preparing", "transferring", "complete", "failed",
};

/* Exports by provider and state. */
static void exports_by_state(CfsFs *fs, GArray *numbers, GString *out)
{
	static const Metric m = { "cloudfs_exports", "gauge",
				  "Disks by the state of their export." };

	metric_head(out, &m);
	for (guint s = 0; s < fs->slots->len; s++) {
		CfsProvider *prov = ((CfsProviderSlot *)fs->slots->pdata[s])->prov;

		for (guint k = 0; k < G_N_ELEMENTS(states); k++) {
			guint count = 0;

			for (guint i = 0; i < fs->exports->len; i++) {
				CfsExportNumbers *n = &g_array_index(
					numbers, CfsExportNumbers, i);

				count += cfs_export_provider(
						 fs->exports->pdata[i]) == prov &&
					 g_str_equal(n->state, states[k]);
			}
			g_string_append(out, "cloudfs_exports{provider=\"");
			label_value(out, prov->name);
			g_string_append_printf(out, "\",state=\"%s\"} %u\n",
					       states[k], count);
		}
	}
}

static void http_metrics(CfsFs *fs, GString *out)
{
	static const Metric ms[] = {
		{ "cloudfs_http_attempts_total", "counter",
		  "HTTP requests started, retries included." },
		{ "cloudfs_http_retries_total", "counter",
		  "HTTP attempts after a failed one." },
		{ "cloudfs_http_throttled_total", "counter",
		  "Answers that asked to slow down (429, 503, SlowDown…)." },
		{ "cloudfs_http_failures_total", "counter",
		  "HTTP requests that ended in an error." },
	};
	CfsHttpStats st;
	guint64 values[4];

	cfs_http_stats(fs->engine.ctx.http, &st);
	values[0] = st.attempts;
	values[1] = st.retries;
	values[2] = st.throttled;
	values[3] = st.failed;
	for (guint i = 0; i < G_N_ELEMENTS(ms); i++) {
		metric_head(out, &ms[i]);
		g_string_append_printf(out, "%s %" G_GUINT64_FORMAT "\n",
				       ms[i].name, values[i]);
	}
}

static void cache_metrics(CfsFs *fs, GString *out)
{
	static const Metric used = { "cloudfs_cache_used_bytes", "gauge",
				     "Bytes the cache folder holds." };
	static const Metric limit = { "cloudfs_cache_limit_bytes", "gauge",
				      "The cache_size limit (0: none)." };

	metric_head(out, &used);
	g_string_append_printf(out, "cloudfs_cache_used_bytes %" G_GUINT64_FORMAT
			       "\n", cfs_store_usage(fs->engine.store));
	metric_head(out, &limit);
	g_string_append_printf(out, "cloudfs_cache_limit_bytes %"
			       G_GUINT64_FORMAT "\n",
			       cfs_store_limit(fs->engine.store));
}

char *cfs_metrics_text(CfsFs *fs, gsize *len)
{
	GString *out = g_string_new(NULL);
	g_autoptr(GArray) numbers = g_array_new(FALSE, FALSE,
						sizeof(CfsExportNumbers));

	g_rw_lock_reader_lock(&fs->lock);
	g_array_set_size(numbers, fs->exports->len);
	for (guint i = 0; i < fs->exports->len; i++)
		cfs_export_numbers(fs->exports->pdata[i],
				   &g_array_index(numbers, CfsExportNumbers, i));
	for (guint m = 0; m < G_N_ELEMENTS(disk_metrics); m++) {
		metric_head(out, &disk_metrics[m]);
		for (guint i = 0; i < fs->exports->len; i++)
			disk_sample(out, disk_metrics[m].name,
				    fs->exports->pdata[i],
				    disk_value(m, &g_array_index(
						       numbers, CfsExportNumbers,
						       i)));
	}
	exports_by_state(fs, numbers, out);
	g_rw_lock_reader_unlock(&fs->lock);
	if (fs->engine.ctx.http)
		http_metrics(fs, out);
	cache_metrics(fs, out);
	*len = out->len;
	return g_string_free(out, FALSE);
}
