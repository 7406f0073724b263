// SPDX-License-Identifier: MIT
/*
 * A snapshot's SAS grant read as a page blob. Get Page Ranges (paged by
 * marker) is the allocation map: unwritten pages are holes, never
 * fetched. Reads are ranged GETs of the written ranges. The blob is a
 * fixed VHD (the disk, then its 512-byte footer) and is served as it is.
 *
 * The SAS URL is a secret: only the source holds it (wiped when replaced
 * or freed); planned requests carry the blob's URL without its query and
 * get the SAS at each attempt (authorize). The grant is renewed with
 * beginGetAccess before durationInSeconds runs out and once after a 403.
 */
#include <libxml/parser.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/secret.h"
#include "common/util.h"
#include "providers/azure/azure-private.h"

#define AZ_PAGELIST_PAGE 10000		/* ranges per Get Page Ranges */
#define AZ_PAGELIST_PAGES 10000		/* pages at most */
#define AZ_PAGELIST_MAX (8 * 1024 * 1024)	/* bytes of one page */
#define AZ_RANGES_MAX (16 * 1024 * 1024)	/* ranges in all */
/* Holes shorter than this between two written ranges are read through:
 * one request costs more than their bytes. */
#define AZ_GAP_READ (128 * 1024)
#define AZ_BLOB_VERSION "x-ms-version: 2021-08-06"

typedef struct {
	AzProvider *prov;
	char *rg;
	char *snapshot;		/* name */
	GMutex lock;		/* held only to copy or swap the grant */
	char *sas;		/* protected by lock; a secret */
	char *base;		/* protected by lock: the SAS without query */
} AzSource;

static void az_source_free(CfsSource *src)
{
	AzSource *as = src->priv;

	if (!as)
		return;
	cfs_secret_free(as->sas);
	g_free(as->base);
	g_free(as->rg);
	g_free(as->snapshot);
	g_mutex_clear(&as->lock);
	g_free(as);
}

/* Take @sas (transfer full) as the current grant. */
static void source_swap(AzSource *as, char *sas)
{
	char *old, *base = cfs_url_redact(sas);

	g_mutex_lock(&as->lock);
	old = as->sas;
	as->sas = sas;
	g_free(as->base);
	as->base = base;
	g_mutex_unlock(&as->lock);
	cfs_secret_free(old);
}

/* --- the page list --- */

static bool xml_u64(xmlNode *node, const char *name, guint64 *out)
{
	for (xmlNode *c = node->children; c; c = c->next) {
		g_autofree char *s = NULL;
		char *end = NULL;

		if (c->type != XML_ELEMENT_NODE ||
		    strcmp((const char *)c->name, name))
			continue;
		s = (char *)xmlNodeGetContent(c);
		if (!s || !g_ascii_isdigit(*s))
			return false;
		errno = 0;
		*out = g_ascii_strtoull(s, &end, 10);
		return !errno && end && !*end;
	}
	return false;
}

/* One page of ranges into @ext; the next marker into *@marker (NULL at
 * the end). */
static bool pagelist_parse(const GByteArray *body, guint64 size,
			   GArray *ext, char **marker, GError **error)
{
	g_autoptr(xmlDoc) doc = xmlReadMemory(
		(const char *)body->data, (int)body->len, "pagelist.xml", NULL,
		XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
	xmlNode *root = doc ? xmlDocGetRootElement(doc) : NULL;

	*marker = NULL;
	if (!root || strcmp((const char *)root->name, "PageList")) {
		g_set_error(error, CFS_ERROR, EIO, "Get Page Ranges: the "
			    "answer is not a PageList");
		return false;
	}
	for (xmlNode *c = root->children; c; c = c->next) {
		CfsExtent e;
		guint64 start, end;

		if (c->type != XML_ELEMENT_NODE)
			continue;
		if (!strcmp((const char *)c->name, "NextMarker")) {
			g_autofree char *m = (char *)xmlNodeGetContent(c);

			if (m && *g_strstrip(m))
				*marker = g_strdup(m);
			continue;
		}
		if (strcmp((const char *)c->name, "PageRange"))
			continue;	/* ClearRange: a hole */
		if (!xml_u64(c, "Start", &start) || !xml_u64(c, "End", &end) ||
		    start > end || end >= size || start % 512 ||
		    (end + 1) % 512) {
			g_set_error(error, CFS_ERROR, EIO, "Get Page Ranges: a "
				    "range outside the blob or not of whole "
				    "pages");
			g_clear_pointer(marker, g_free);
			return false;
		}
		if (ext->len >= AZ_RANGES_MAX) {
			g_set_error(error, CFS_ERROR, EIO, "Get Page Ranges: "
				    "more than %d ranges", AZ_RANGES_MAX);
			g_clear_pointer(marker, g_free);
			return false;
		}
		e.offset = start;
		e.length = end - start + 1;
		g_array_append_val(ext, e);
	}
	return true;
}

static bool pagelist_body(CfsHttpRequest *req, const void *data, gsize len)
{
	if (!req->response)
		req->response = g_byte_array_new();
	if (req->response->len + len > AZ_PAGELIST_MAX)
		return false;
	g_byte_array_append(req->response, data, (guint)len);
	return true;
}

/* One Get Page Ranges call: the SAS with &comp=pagelist appended. */
static bool pagelist_page(AzProvider *prov, const char *sas,
			  const char *marker, guint64 *blob_size,
			  CfsHttpRequest **out, GError **error)
{
	g_autofree char *m = marker ? g_uri_escape_string(marker, NULL, FALSE)
				    : NULL;
	g_autoptr(CfsSecret) url = g_strdup_printf(
		"%s&comp=pagelist&maxresults=%d%s%s", sas, AZ_PAGELIST_PAGE,
		m ? "&marker=" : "", m ? m : "");
	CfsHttpRequest *req = cfs_http_request_new(url);
	const char *len;

	cfs_http_request_add_header(req, AZ_BLOB_VERSION);
	cfs_http_request_set_settings(req, prov->settings);
	req->on_body = pagelist_body;
	req->timeout_s = 300;
	*out = req;
	if (!cfs_http_perform(prov->base.ctx->http, req, error)) {
		g_prefix_error(error, "Get Page Ranges: ");
		return false;
	}
	len = cfs_http_response_header(req, "x-ms-blob-content-length");
	if (len)
		*blob_size = g_ascii_strtoull(len, NULL, 10);
	return true;
}

/* The allocation map of the blob of @size bytes. */
static CfsExtentMap *pagelist_map(AzProvider *prov, const char *sas,
				  guint64 size, GError **error)
{
	g_autoptr(GArray) ext = g_array_new(FALSE, FALSE, sizeof(CfsExtent));
	g_autoptr(GHashTable) seen = g_hash_table_new_full(
		g_str_hash, g_str_equal, g_free, NULL);
	g_autofree char *marker = NULL;
	guint pages = 0;

	do {
		g_autoptr(CfsHttpRequest) req = NULL;
		guint64 blob_size = size;
		char *next = NULL;

		if (++pages > AZ_PAGELIST_PAGES) {
			g_set_error(error, CFS_ERROR, EIO, "Get Page Ranges: "
				    "too many pages");
			return NULL;
		}
		if (!pagelist_page(prov, sas, marker, &blob_size, &req, error))
			return NULL;
		if (blob_size != size) {
			g_set_error(error, CFS_ERROR, EIO, "the snapshot's blob "
				    "has %" G_GUINT64_FORMAT " bytes, not %"
				    G_GUINT64_FORMAT, blob_size, size);
			return NULL;
		}
		if (!req->response ||
		    !pagelist_parse(req->response, size, ext, &next, error))
			return NULL;
		g_free(marker);
		marker = next;
		if (marker && !g_hash_table_add(seen, g_strdup(marker))) {
			g_set_error(error, CFS_ERROR, EIO, "Get Page Ranges: a "
				    "marker came twice");
			return NULL;
		}
	} while (marker);
	return cfs_extent_map_new(size, (CfsExtent *)(void *)ext->data,
				  ext->len);
}

/* --- the source --- */

static void plan_add(CfsSource *src, const char *base, guint64 start,
		     guint64 end, GArray *pieces)
{
	CfsSourcePiece piece = { cfs_http_request_new(base), start,
				 end - start };

	(void)src;
	piece.req->has_range = true;
	piece.req->range_start = start;
	piece.req->range_end = end - 1;
	g_array_append_val(pieces, piece);
}

/* One ranged GET per written run of [off, off+len), short holes read
 * through. The URL is the blob's without the SAS: authorize adds it. */
static bool az_plan(CfsSource *src, guint64 off, guint64 len,
		    GArray *pieces, GError **error)
{
	AzSource *as = src->priv;
	g_autofree char *base = NULL;
	guint64 end = off + len, pos = off;
	guint64 run_start = 0, run_end = 0;
	bool run = false;

	(void)error;
	g_mutex_lock(&as->lock);
	base = g_strdup(as->base);
	g_mutex_unlock(&as->lock);
	while (pos < end) {
		guint64 data, hole;

		if (!cfs_extent_map_next_data(src->map, pos, &data) ||
		    data >= end)
			break;
		if (!cfs_extent_map_next_hole(src->map, data, &hole))
			hole = src->size;
		hole = MIN(hole, end);
		if (run && data - run_end < AZ_GAP_READ) {
			run_end = hole;
		} else {
			if (run)
				plan_add(src, base, run_start, run_end, pieces);
			run = true;
			run_start = data;
			run_end = hole;
		}
		pos = hole;
	}
	if (run)
		plan_add(src, base, run_start, run_end, pieces);
	return true;
}

/* Each attempt: the current SAS URL. */
static bool az_authorize(CfsSource *src, CfsHttpRequest *req, GError **error)
{
	AzSource *as = src->priv;
	char *url;

	(void)error;
	g_mutex_lock(&as->lock);
	url = g_strdup(as->sas);
	g_mutex_unlock(&as->lock);
	cfs_secret_free(req->url);
	req->url = url;
	req->follow_redirects = false;
	return true;
}

/* beginGetAccess again; the new SAS replaces the old. */
static bool az_renew(CfsSource *src, GError **error)
{
	AzSource *as = src->priv;
	gint64 now = g_get_real_time();
	char *sas = az_snapshot_grant(as->prov, as->rg, as->snapshot, NULL,
				      error);

	if (!sas) {
		g_prefix_error(error, "snapshot %s: ", as->snapshot);
		return false;
	}
	source_swap(as, sas);
	cfs_source_set_expiry(src, now + (gint64)as->prov->grant_seconds *
					       G_USEC_PER_SEC);
	return true;
}

static const CfsSourceOps az_source_ops = {
	.plan = az_plan,
	.authorize = az_authorize,
	.renew = az_renew,
	.free = az_source_free,
};

CfsSource *az_export_start(AzProvider *prov, CfsDisk *disk,
			   CfsExportReport *report, GError **error)
{
	AzDisk *d = disk->priv;
	g_autofree char *name = NULL, *uid = NULL;
	guint64 size = 0;
	gint64 now;
	AzSource *as;
	CfsSource *src;
	char *sas;

	if (!az_snapshot_create(prov, d, &name, &size, &uid, report, error)) {
		g_prefix_error(error, "%s: ", d->name);
		return NULL;
	}
	now = g_get_real_time();
	sas = az_snapshot_grant(prov, d->rg, name, report, error);
	if (!sas) {
		g_prefix_error(error, "%s: ", d->name);
		az_snapshot_release(prov, d->rg, name, prov->keep_snapshots);
		return NULL;
	}
	as = g_new0(AzSource, 1);
	as->prov = prov;
	as->rg = g_strdup(d->rg);
	as->snapshot = g_strdup(name);
	g_mutex_init(&as->lock);
	source_swap(as, sas);
	src = cfs_source_new(&az_source_ops, as);
	src->settings = cfs_http_settings_ref(prov->settings);
	src->size = size + AZ_VHD_FOOTER;
	src->random = true;
	src->map = pagelist_map(prov, as->sas, src->size, error);
	if (!src->map) {
		g_prefix_error(error, "%s: snapshot %s: ", d->name, name);
		cfs_source_free(src);
		az_snapshot_release(prov, d->rg, name, prov->keep_snapshots);
		return NULL;
	}
	if (size != d->size)
		g_message("azure: %s is now %" G_GUINT64_FORMAT " bytes (was %"
			  G_GUINT64_FORMAT ")", d->name, size, d->size);
	src->identity = g_strdup_printf("snapshot %s", uid);
	cfs_source_set_expiry(src, now + (gint64)prov->grant_seconds *
					       G_USEC_PER_SEC);
	g_message("azure: %s: snapshot %s has %u written ranges (%"
		  G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT " bytes)", d->name,
		  name, src->map->n, src->map->data_bytes, src->size);
	return src;
}

void az_export_end(AzProvider *prov, CfsDisk *disk, CfsSource *src)
{
	AzSource *as = src->priv;

	(void)disk;
	if (!as)
		return;
	az_snapshot_release(prov, as->rg, as->snapshot, prov->keep_snapshots);
}
