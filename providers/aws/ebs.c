// SPDX-License-Identifier: MIT
/*
 * ebs-direct exports: a temporary, tagged snapshot of the volume, read
 * lazily with the EBS direct APIs. ListSnapshotBlocks says which blocks
 * hold data (everything else is a hole, never fetched); each read becomes
 * one GetSnapshotBlock per listed block, checked against the block's
 * SHA-256. The snapshot is deleted when the export ends (at unmount),
 * unless keep_snapshots is set.
 */
#include <json-c/json.h>
#include <openssl/evp.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "providers/aws/aws-private.h"

/* Blocks per ListSnapshotBlocks page (the API's most). */
#ifndef AWS_EBS_PAGE
#define AWS_EBS_PAGE 10000
/* Bounds on what an endpoint says: block sizes EBS could use (it uses
 * 512 KiB), and pages of a block list (a 64 TiB volume of 512 KiB blocks
 * takes 13,422). */
#define AWS_EBS_BLOCK_MIN (4 * 1024)
#define AWS_EBS_BLOCK_MAX (16 * 1024 * 1024)
#define AWS_EBS_PAGES_MAX 20000
#endif

typedef struct {
	AwsProvider *prov;
	AwsGrant grant;
	char *region;
	char *snapshot_id;
	char *base;		/* EBS endpoint */
	guint64 block_size;
	guint n;		/* listed blocks */
	guint64 *index;		/* sorted block indexes */
	GMutex lock;		/* held only to read or swap tokens */
	char **token;		/* protected by lock: their BlockTokens */
	gint64 expires;		/* real µs the tokens expire; 0: unknown */
	gint64 listed;		/* real µs they were listed */
	CfsHttpBucket *bucket;	/* GetSnapshotBlock of this snapshot */
} EbsSource;

static void ebs_source_free(CfsSource *src)
{
	EbsSource *es = src->priv;

	if (!es)
		return;
	aws_grant_clear(&es->grant);
	cfs_http_bucket_unref(es->bucket);
	g_mutex_clear(&es->lock);
	g_free(es->region);
	g_free(es->snapshot_id);
	g_free(es->base);
	for (guint i = 0; i < es->n; i++)
		g_free(es->token[i]);
	g_free(es->token);
	g_free(es->index);
	g_free(es);
}

typedef struct {
	guint64 index;
	char *token;
} EbsBlock;

static gint block_cmp(gconstpointer a, gconstpointer b)
{
	const EbsBlock *x = a, *y = b;

	return x->index < y->index ? -1 : x->index > y->index;
}

static bool json_u64(json_object *o, const char *key, guint64 *out)
{
	json_object *v = NULL;
	const char *s;
	char *end = NULL;
	guint64 n;

	if (!json_object_object_get_ex(o, key, &v) || !v)
		return false;
	if (json_object_is_type(v, json_type_int)) {
		*out = (guint64)json_object_get_int64(v);
		return true;
	}
	/* moto sends BlockIndex as a string; @out is left alone unless the
	 * whole string is a number */
	s = json_object_get_string(v);
	if (!s || !*s)
		return false;
	n = g_ascii_strtoull(s, &end, 10);
	if (!end || *end)
		return false;
	*out = n;
	return true;
}

/* ExpiryTime of the block tokens (seconds since the epoch, maybe with a
 * fraction): the earliest of all pages counts. */
static void ebs_note_expiry(json_object *obj, gint64 *expires)
{
	json_object *v = NULL;
	double t;

	if (!json_object_object_get_ex(obj, "ExpiryTime", &v) || !v)
		return;
	t = json_object_get_double(v);
	if (t <= 0 || t > 1e11)
		return;
	if (!*expires || (gint64)(t * G_USEC_PER_SEC) < *expires)
		*expires = (gint64)(t * G_USEC_PER_SEC);
}

/* One page of a ListSnapshotBlocks answer: its blocks onto @blocks
 * (EbsBlock), the block size into @es, the volume size into @volume_gib,
 * and the next page's token into *@next (NULL at the end; an error for a
 * token that repeats or pages past AWS_EBS_PAGES_MAX). Everything in it
 * is bounded: the answer is not trusted. */
static bool ebs_parse_page(const char *text, EbsSource *es, GArray *blocks,
			guint64 *volume_gib, char **next, guint *pages,
			const char *what, GError **error)
{
	g_autoptr(json_object) obj = json_tokener_parse(text);
	json_object *arr = NULL;

	if (!obj || !json_object_object_get_ex(obj, "Blocks", &arr) ||
	    !json_object_is_type(arr, json_type_array) ||
	    !json_u64(obj, "BlockSize", &es->block_size) ||
	    es->block_size < AWS_EBS_BLOCK_MIN ||
	    es->block_size > AWS_EBS_BLOCK_MAX ||
	    (es->block_size & (es->block_size - 1))) {
		g_set_error(error, CFS_ERROR, EIO, "%s: unexpected answer",
			    what);
		return false;
	}
	/* More than cloudfs takes is refused by the engine (EFBIG); capped
	 * here so that it cannot wrap. */
	if (json_u64(obj, "VolumeSize", volume_gib))
		*volume_gib = MIN(*volume_gib, (CFS_DISK_SIZE_MAX >> 30) + 1);
	ebs_note_expiry(obj, &es->expires);
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		json_object *b = json_object_array_get_idx(arr, i);
		json_object *t = NULL;
		EbsBlock blk = { 0 };

		if (!json_u64(b, "BlockIndex", &blk.index) ||
		    !json_object_object_get_ex(b, "BlockToken", &t) ||
		    !json_object_is_type(t, json_type_string)) {
			g_set_error(error, CFS_ERROR, EIO, "%s: a block without "
				    "index or token", what);
			return false;
		}
		if (blk.index >= CFS_DISK_SIZE_MAX / es->block_size ||
		    blocks->len >= CFS_DISK_SIZE_MAX / es->block_size) {
			g_set_error(error, CFS_ERROR, EIO, "%s: block %"
				    G_GUINT64_FORMAT " is past any volume",
				    what, blk.index);
			return false;
		}
		blk.token = g_strdup(json_object_get_string(t));
		g_array_append_val(blocks, blk);
	}
	if (json_object_object_get_ex(obj, "NextToken", &arr) && arr &&
	    json_object_get_string(arr) && *json_object_get_string(arr)) {
		const char *tok_next = json_object_get_string(arr);

		/* A token that repeats, or pages that never end. */
		if (g_strcmp0(tok_next, *next) == 0 ||
		    ++*pages >= AWS_EBS_PAGES_MAX) {
			g_set_error(error, CFS_ERROR, EIO, "%s: the pages do "
				    "not end", what);
			return false;
		}
		g_free(*next);
		*next = g_strdup(tok_next);
	} else {
		g_clear_pointer(next, g_free);
	}
	return true;
}

/* ListSnapshotBlocks, every page, into @es; @volume_gib from the answer. */
static bool ebs_list_blocks(AwsProvider *prov, EbsSource *es,
			    guint64 *volume_gib, GError **error)
{
	g_autoptr(GArray) blocks = g_array_new(FALSE, FALSE, sizeof(EbsBlock));
	g_autofree char *next = NULL;
	g_autofree char *what = g_strdup_printf("EBS ListSnapshotBlocks of %s",
						es->snapshot_id);
	bool ok = false;
	guint pages = 0;

	es->listed = g_get_real_time();
	do {
		g_autofree char *url = NULL, *tok = NULL;
		g_autoptr(CfsHttpRequest) req = NULL;
		g_autofree char *text = NULL;

		if (next) {
			tok = cfs_sigv4_uri_encode(next, strlen(next), false);
			url = g_strdup_printf("%s/snapshots/%s/blocks?"
					      "maxResults=%d&pageToken=%s",
					      es->base, es->snapshot_id,
					      AWS_EBS_PAGE, tok);
		} else {
			url = g_strdup_printf("%s/snapshots/%s/blocks?"
					      "maxResults=%d", es->base,
					      es->snapshot_id, AWS_EBS_PAGE);
		}
		req = cfs_http_request_new(url);
		if (prov->ebs_list)
			cfs_http_request_add_bucket(req, prov->ebs_list);
		if (!aws_sign(prov, req, "ebs", es->region, error) ||
		    !aws_perform(prov, req, what, error))
			goto out;
		text = req->response ?
			g_strndup((const char *)req->response->data,
				  req->response->len) : g_strdup("");
		if (!ebs_parse_page(text, es, blocks, volume_gib, &next,
				    &pages, what, error))
			goto out;
	} while (next);
	g_array_sort(blocks, block_cmp);
	es->index = g_new(guint64, blocks->len + 1);
	es->token = g_new0(char *, blocks->len + 1);
	for (guint i = 0; i < blocks->len; i++) {
		EbsBlock *b = &g_array_index(blocks, EbsBlock, i);

		/* a repeated index (pages overlapping) counts once */
		if (es->n && es->index[es->n - 1] == b->index) {
			g_free(b->token);
			continue;
		}
		es->index[es->n] = b->index;
		es->token[es->n++] = b->token;
	}
	g_array_set_size(blocks, 0);
	ok = true;
out:
	for (guint i = 0; i < blocks->len; i++)
		g_free(g_array_index(blocks, EbsBlock, i).token);
	return ok;
}

/* --- the source --- */

/* One GetSnapshotBlock per listed block in [off, off+len). The block token
 * and the signature are added at each attempt (ebs_authorize): tokens are
 * renewed on long copies. A block is fetched whole (its checksum covers
 * all of it), even when it is larger than the engine's chunk. */
static bool ebs_plan(CfsSource *src, guint64 off, guint64 len,
		     GArray *pieces, GError **error)
{
	EbsSource *es = src->priv;
	guint64 first = off / es->block_size;
	guint lo = 0, hi = es->n;

	while (lo < hi) {	/* the first listed index >= first */
		guint mid = lo + (hi - lo) / 2;

		if (es->index[mid] < first)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (guint i = lo; i < es->n; i++) {
		guint64 start = es->index[i] * es->block_size;
		g_autofree char *url = NULL;
		CfsSourcePiece piece;

		if (start >= off + len || start >= src->size)
			break;
		url = g_strdup_printf("%s/snapshots/%s/blocks/%" G_GUINT64_FORMAT,
				      es->base, es->snapshot_id, es->index[i]);
		piece.req = cfs_http_request_new(url);
		/* Under the published limits, shared by every export of the
		 * snapshot and of the account. */
		cfs_http_request_add_bucket(piece.req, es->bucket);
		if (es->prov->ebs_account)
			cfs_http_request_add_bucket(piece.req,
						    es->prov->ebs_account);
		piece.offset = start;
		piece.length = MIN(es->block_size, src->size - start);
		g_array_append_val(pieces, piece);
	}
	return true;
}

/* The block's index, from the URL plan made. */
static bool ebs_url_index(EbsSource *es, const char *url, guint *pos)
{
	const char *slash = strrchr(url, '/');
	guint64 index;
	char *end = NULL;
	guint lo = 0, hi = es->n;

	if (!slash)
		return false;
	index = g_ascii_strtoull(slash + 1, &end, 10);
	if (end == slash + 1 || (*end && *end != '?'))
		return false;
	while (lo < hi) {
		guint mid = lo + (hi - lo) / 2;

		if (es->index[mid] < index)
			lo = mid + 1;
		else
			hi = mid;
	}
	*pos = lo;
	return lo < es->n && es->index[lo] == index;
}

/* Each attempt: the block's current token in the query, then SigV4. */
static bool ebs_authorize(CfsSource *src, CfsHttpRequest *req, GError **error)
{
	EbsSource *es = src->priv;
	g_autofree char *base = g_strndup(req->url, strcspn(req->url, "?"));
	g_autofree char *tok = NULL;
	guint pos;

	if (!ebs_url_index(es, base, &pos)) {
		g_set_error(error, CFS_ERROR, EIO, "no block for %s", base);
		return false;
	}
	g_mutex_lock(&es->lock);
	tok = cfs_sigv4_uri_encode(es->token[pos], strlen(es->token[pos]),
				   false);
	g_mutex_unlock(&es->lock);
	g_free(req->url);
	req->url = g_strdup_printf("%s?blockToken=%s", base, tok);
	return aws_grant_sign(&es->grant, req, "ebs", es->region, error);
}

/* The earlier of two expiries (0: never). */
static gint64 earlier(gint64 a, gint64 b)
{
	return !a ? b : !b ? a : MIN(a, b);
}

/* Whether the block tokens expire within ten minutes, or within half
 * their lifetime if that is shorter: then they are listed again. */
static bool ebs_tokens_stale(const EbsSource *es)
{
	gint64 margin = MIN(10 * 60 * G_USEC_PER_SEC,
			    (es->expires - es->listed) / 2);

	return es->expires && g_get_real_time() >= es->expires - margin;
}

/* Credentials again, and the block list again when its tokens are about
 * to expire (long copies): same blocks, new tokens. */
static bool ebs_renew(CfsSource *src, GError **error)
{
	EbsSource *es = src->priv;
	EbsSource fresh = { .prov = es->prov, .region = es->region,
			    .snapshot_id = es->snapshot_id, .base = es->base };
	guint64 volume_gib = 0;
	bool same;

	if (!aws_grant_renew(es->prov, &es->grant, error))
		return false;
	if (!ebs_tokens_stale(es)) {
		cfs_source_set_expiry(src, earlier(es->expires,
						   es->grant.expires));
		return true;
	}
	if (!ebs_list_blocks(es->prov, &fresh, &volume_gib, error))
		return false;
	same = fresh.n == es->n && fresh.block_size == es->block_size &&
	       memcmp(fresh.index, es->index, es->n * sizeof(guint64)) == 0;
	if (same) {
		g_mutex_lock(&es->lock);
		for (guint i = 0; i < es->n; i++) {
			char *old = es->token[i];

			es->token[i] = fresh.token[i];
			fresh.token[i] = old;
		}
		g_mutex_unlock(&es->lock);
		es->expires = fresh.expires;
		es->listed = fresh.listed;
		g_message("aws: %s: block tokens listed again", es->snapshot_id);
		cfs_source_set_expiry(src, earlier(es->expires,
						   es->grant.expires));
	} else {
		g_set_error(error, CFS_ERROR, EIO, "snapshot %s lists other "
			    "blocks than before", es->snapshot_id);
	}
	for (guint i = 0; i < fresh.n; i++)
		g_free(fresh.token[i]);
	g_free(fresh.token);
	g_free(fresh.index);
	return same;
}

/* The block's SHA-256, base64, from x-amz-Checksum. */
static bool ebs_verify(CfsSource *src, const CfsSourcePiece *piece,
		       const void *data, gsize len, GError **error)
{
	EbsSource *es = src->priv;
	GHashTable *h = piece->req->resp_headers;
	const char *want = h ? g_hash_table_lookup(h, "x-amz-checksum") : NULL;
	const char *algo = h ? g_hash_table_lookup(
		h, "x-amz-checksum-algorithm") : NULL;
	guint8 digest[EVP_MAX_MD_SIZE];
	unsigned int dlen = 0;
	g_autofree char *got = NULL;

	if (!want || (algo && g_ascii_strcasecmp(algo, "SHA256") != 0) ||
	    len != es->block_size)
		return true;	/* nothing we can check */
	/* OpenSSL's SHA-256 uses the CPU's SHA instructions: five times
	 * GLib's speed, and every byte of a volume goes through it. */
	if (!EVP_Digest(data, len, digest, &dlen, EVP_sha256(), NULL)) {
		g_set_error(error, CFS_ERROR, EIO, "SHA-256 failed");
		return false;
	}
	got = g_base64_encode(digest, dlen);
	if (strcmp(got, want) == 0)
		return true;
	g_set_error(error, CFS_ERROR, EIO, "block %" G_GUINT64_FORMAT " of %s: "
		    "SHA-256 %s, expected %s", piece->offset / es->block_size,
		    es->snapshot_id, got, want);
	return false;
}

static const CfsSourceOps ebs_source_ops = {
	.plan = ebs_plan,
	.authorize = ebs_authorize,
	.renew = ebs_renew,
	.verify = ebs_verify,
	.free = ebs_source_free,
};

CfsSource *aws_ebs_export_start(AwsProvider *prov, CfsDisk *disk,
				CfsExportReport *report, GError **error)
{
	AwsDisk *d = disk->priv;
	g_autofree char *sid = NULL;
	EbsSource *es;
	CfsSource *src;
	g_autofree CfsExtent *ext = NULL;
	guint64 volume_gib = 0;
	gint64 creds_expire = 0;
	CfsAwsCreds *creds = aws_creds_get(prov, &creds_expire, error);

	if (!creds)
		return NULL;
	cfs_export_report(report, "snapshot", 0.0);
	sid = aws_snapshot_create(prov, d, error);
	if (!sid) {
		cfs_aws_creds_unref(creds);
		return NULL;
	}
	es = g_new0(EbsSource, 1);
	es->prov = prov;
	es->bucket = cfs_http_bucket_new(prov->ebs_rate, prov->ebs_rate / 10);
	aws_grant_init(&es->grant, creds, creds_expire);
	g_mutex_init(&es->lock);
	es->region = g_strdup(d->region);
	es->snapshot_id = g_strdup(sid);
	es->base = aws_endpoint(prov, AWS_EBS, d->region);
	src = cfs_source_new(&ebs_source_ops, es);
	src->settings = cfs_http_settings_ref(prov->settings);
	if (!aws_snapshot_wait(prov, d->region, sid, report, error) ||
	    !ebs_list_blocks(prov, es, &volume_gib, error)) {
		g_prefix_error(error, "%s: ", d->volume_id);
		cfs_source_free(src);
		if (!prov->keep_snapshots)
			aws_snapshot_delete(prov, d->region, sid);
		return NULL;
	}
	src->size = volume_gib ? volume_gib << 30 : d->size;
	if (es->n && (es->index[es->n - 1] >= G_MAXUINT64 / es->block_size ||
		      es->index[es->n - 1] * es->block_size >= src->size)) {
		g_set_error(error, CFS_ERROR, EIO, "%s: snapshot %s lists block "
			    "%" G_GUINT64_FORMAT " past the end of the volume",
			    d->volume_id, sid, es->index[es->n - 1]);
		aws_ebs_export_end(prov, disk, src);
		cfs_source_free(src);
		return NULL;
	}
	if (src->size != d->size)
		g_message("aws: %s is now %" G_GUINT64_FORMAT " bytes (was %"
			  G_GUINT64_FORMAT ")", d->volume_id, src->size,
			  d->size);
	ext = g_new(CfsExtent, es->n + 1);
	for (guint i = 0; i < es->n; i++) {
		ext[i].offset = es->index[i] * es->block_size;
		ext[i].length = es->block_size;
	}
	src->map = cfs_extent_map_new(src->size, ext, es->n);
	src->random = true;
	src->identity = g_strdup(sid);
	cfs_source_set_expiry(src, earlier(es->expires, es->grant.expires));
	g_message("aws: %s: snapshot %s has %u blocks of %" G_GUINT64_FORMAT
		  " bytes with data (%" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT
		  " bytes)", d->volume_id, sid, es->n, es->block_size,
		  src->map->data_bytes, src->size);
	return src;
}

void aws_ebs_export_end(AwsProvider *prov, CfsDisk *disk, CfsSource *src)
{
	EbsSource *es = src ? src->priv : NULL;

	if (!es || prov->keep_snapshots)
		return;
	aws_snapshot_delete(prov, es->region, es->snapshot_id);
}
