// SPDX-License-Identifier: MIT
/*
 * An export: a temporary image of the disk (compute.c), a Cloud Build job
 * running Google's image-export step that writes it to
 * gs://<gcs_bucket>/<gcs_prefix><owner>/<image>.<ext> in the file's
 * format, then the object as the source: ranged GETs of the GCS JSON API
 * pinned to the object's generation (a replaced object fails instead of
 * mixing bytes), each piece's CRC-32C folded into the whole object's,
 * which is checked against GCS's when the last piece is in (a mismatch
 * condemns the whole source: CFS_SOURCE_BAD). The image is
 * deleted once the build ends; the object when the export ends, unless
 * keep_exports is set.
 */
#include <string.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/secret.h"
#include "common/util.h"
#include "providers/gcp/gcp-private.h"

#define GCP_EXPORT_STEP "gcr.io/compute-image-tools/gce_vm_image_export:release"
#define GCP_POLL_MAX_S 10.0
#define GCP_BUILD_MAX_S 86400.0	/* Cloud Build's longest timeout */
#define GCP_TOKEN_MIN_VALID_S 5.0	/* authorize wants this much left */

/* The bytes of the whole object seen so far, as runs of pieces that
 * arrived with their CRC-32C. Network thread only. */
typedef struct {
	guint64 off;
	guint64 len;
	guint32 crc;
} CrcRun;

typedef struct {
	GcpProvider *prov;
	CfsOAuth2 *oauth;	/* the provider's */
	char *name;		/* object name */
	char *url;		/* media URL, pinned to the generation */
	guint64 generation;
	bool has_crc;
	guint32 crc;		/* what GCS says, host order */

	GMutex lock;		/* held only to update the runs */
	GTree *runs;		/* protected by lock: off -> CrcRun* */
	bool checked;		/* protected by lock */
	bool bad;		/* protected by lock: the check failed */
} GcsSource;

static gint u64_cmp(gconstpointer a, gconstpointer b, gpointer data)
{
	guint64 x = *(const guint64 *)a, y = *(const guint64 *)b;

	return x < y ? -1 : x > y;
}

static void gcs_source_free(CfsSource *src)
{
	GcsSource *gs = src->priv;

	if (!gs)
		return;
	g_free(gs->name);
	g_free(gs->url);
	g_clear_pointer(&gs->runs, g_tree_unref);
	g_mutex_clear(&gs->lock);
	g_free(gs);
}

static bool gcs_plan(CfsSource *src, guint64 off, guint64 len,
		     GArray *pieces, GError **error)
{
	GcsSource *gs = src->priv;
	CfsSourcePiece piece = { cfs_http_request_new(gs->url), off, len };

	piece.req->has_range = true;
	piece.req->range_start = off;
	piece.req->range_end = off + len - 1;
	g_array_append_val(pieces, piece);
	return true;
}

static bool gcs_authorize(CfsSource *src, CfsHttpRequest *req,
			  GError **error)
{
	GcsSource *gs = src->priv;
	g_autoptr(CfsSecret) token = cfs_oauth2_peek(
		gs->oauth, GCP_TOKEN_MIN_VALID_S, NULL);

	if (!token) {
		/* EACCES: the engine renews, then sends it again. */
		g_set_error(error, CFS_ERROR, EACCES, "the access token "
			    "expired");
		return false;
	}
	gcp_set_bearer(req, token);
	return true;
}

static bool gcs_renew(CfsSource *src, GError **error)
{
	GcsSource *gs = src->priv;
	g_autoptr(CfsSecret) token = NULL;

	/* Renewal comes ahead of expiry or after a refusal: either way the
	 * cached token is not to be used again. */
	cfs_oauth2_invalidate(gs->oauth);
	token = cfs_oauth2_token(gs->oauth, error);
	if (!token)
		return false;
	cfs_source_set_expiry(src, cfs_oauth2_expires(gs->oauth));
	return true;
}

/* Add a piece to the runs, merging it with the runs it touches; false if
 * it overlaps one (then the whole-object check cannot be made). Lock
 * held. */
static bool crc_runs_add(GcsSource *gs, guint64 off, guint64 len,
			 guint32 crc)
{
	GTreeNode *next = g_tree_lower_bound(gs->runs, &off);
	GTreeNode *prev = next ? g_tree_node_previous(next) :
				 g_tree_node_last(gs->runs);
	CrcRun *p = prev ? g_tree_node_value(prev) : NULL;
	CrcRun *n = next ? g_tree_node_value(next) : NULL;
	CrcRun *run;

	if ((p && p->off + p->len > off) || (n && n->off < off + len))
		return false;
	if (p && p->off + p->len == off) {
		p->crc = gcp_crc32c_combine(p->crc, crc, len);
		p->len += len;
		run = p;
	} else {
		run = g_new(CrcRun, 1);
		*run = (CrcRun){ off, len, crc };
		g_tree_insert(gs->runs, &run->off, run);
	}
	if (n && run->off + run->len == n->off) {
		run->crc = gcp_crc32c_combine(run->crc, n->crc, n->len);
		run->len += n->len;
		g_tree_remove(gs->runs, &n->off);
	}
	return true;
}

/* Check the whole object once one run covers it. Lock held. */
static bool crc_check(CfsSource *src, GcsSource *gs, GError **error)
{
	guint64 zero = 0;
	CrcRun *run = g_tree_lookup(gs->runs, &zero);
	guint32 crc;

	if (!run || run->len != src->size)
		return true;
	crc = run->crc;
	gs->checked = true;
	g_clear_pointer(&gs->runs, g_tree_unref);
	if (crc == gs->crc) {
		g_message("gcp: gs://%s/%s: CRC-32C of the whole object "
			  "matches", gs->prov->bucket, gs->name);
		return true;
	}
	/* The whole object is condemned: the engine drops what it cached. */
	g_set_error(error, CFS_ERROR, CFS_SOURCE_BAD, "gs://%s/%s: CRC-32C "
		    "mismatch: the bytes read give %08x, GCS says %08x",
		    gs->prov->bucket, gs->name, crc, gs->crc);
	gs->bad = true;
	return false;
}

static bool gcs_verify(CfsSource *src, const CfsSourcePiece *piece,
		       const void *data, gsize len, GError **error)
{
	GcsSource *gs = src->priv;
	g_autoptr(GMutexLocker) locker = NULL;
	guint32 crc;

	if (len != piece->length) {
		g_set_error(error, CFS_ERROR, EIO,
			    "gs://%s/%s: %" G_GSIZE_FORMAT " bytes for a "
			    "piece of %" G_GUINT64_FORMAT,
			    gs->prov->bucket, gs->name, len, piece->length);
		return false;
	}
	if (!gs->has_crc)
		return true;
	crc = gcp_crc32c(0, data, len);
	locker = g_mutex_locker_new(&gs->lock);
	if (gs->bad) {
		g_set_error(error, CFS_ERROR, CFS_SOURCE_BAD, "gs://%s/%s: "
			    "CRC-32C mismatch of the whole object",
			    gs->prov->bucket, gs->name);
		return false;
	}
	if (gs->checked)
		return true;
	if (!crc_runs_add(gs, piece->offset, len, crc)) {
		/* A piece read again (after eviction): it was counted. */
		return true;
	}
	return crc_check(src, gs, error);
}

static const CfsSourceOps gcs_source_ops = {
	.plan = gcs_plan,
	.authorize = gcs_authorize,
	.renew = gcs_renew,
	.verify = gcs_verify,
	.free = gcs_source_free,
};

/* --- objects --- */

char *gcp_object_name(GcpProvider *prov, const char *image,
		      const char *format)
{
	return g_strdup_printf("%s%s/%s.%s", prov->prefix, cfs_owner_tag(),
			       image, gcp_format_ext(format));
}

static char *object_url(GcpProvider *prov, const char *name)
{
	g_autofree char *b = gcp_escape(prov->bucket);
	g_autofree char *o = gcp_escape(name);

	return g_strdup_printf("%s/b/%s/o/%s", prov->storage_url, b, o);
}

bool gcp_object_delete(GcpProvider *prov, const char *name, GError **error)
{
	g_autofree char *url = object_url(prov, name);
	g_autofree char *what = g_strdup_printf("GCS delete gs://%s/%s",
						prov->bucket, name);
	g_autoptr(json_object) ans = gcp_call(prov, "DELETE", url, NULL, what,
					      error);

	if (!ans)
		return false;
	g_message("gcp: gs://%s/%s deleted", prov->bucket, name);
	return true;
}

/* "crc32c" of an object: base64 of four big-endian bytes. */
static bool object_crc(json_object *obj, guint32 *crc)
{
	const char *b64 = gcp_json_str(obj, "crc32c");
	g_autofree guchar *raw = NULL;
	gsize n = 0;

	if (!b64 || strlen(b64) != 8)
		return false;
	raw = g_base64_decode(b64, &n);
	if (n != 4)
		return false;
	*crc = (guint32)raw[0] << 24 | (guint32)raw[1] << 16 |
	       (guint32)raw[2] << 8 | raw[3];
	return true;
}

/* The largest object an export of @d may be: its size plus room for a
 * container's metadata. */
static guint64 object_max(const GcpDisk *d)
{
	guint64 bytes = d->size_gb << 30;

	return bytes + bytes / 16 + (64 << 20);
}

static CfsSource *object_source(GcpProvider *prov, const GcpDisk *d,
				const char *name, GError **error)
{
	g_autofree char *url = object_url(prov, name);
	g_autofree char *what = g_strdup_printf("GCS get gs://%s/%s",
						prov->bucket, name);
	g_autoptr(json_object) obj = gcp_call(prov, "GET", url, NULL, what,
					      error);
	CfsOAuth2 *oauth = gcp_oauth(prov, error);
	guint64 size = 0, gen = 0;
	GcsSource *gs;
	CfsSource *src;

	if (!obj || !oauth)
		return NULL;
	if (!gcp_json_u64(obj, "size", &size) || size == 0 ||
	    size > object_max(d) || !gcp_json_u64(obj, "generation", &gen) ||
	    gen == 0) {
		g_set_error(error, CFS_ERROR, EIO, "%s: no size, a size out "
			    "of bounds, or no generation", what);
		return NULL;
	}
	gs = g_new0(GcsSource, 1);
	gs->prov = prov;
	gs->oauth = oauth;
	gs->name = g_strdup(name);
	gs->generation = gen;
	gs->url = g_strdup_printf("%s?alt=media&generation=%" G_GUINT64_FORMAT
				  "&ifGenerationMatch=%" G_GUINT64_FORMAT,
				  url, gen, gen);
	gs->has_crc = object_crc(obj, &gs->crc);
	gs->runs = g_tree_new_full(u64_cmp, NULL, NULL, g_free);
	g_mutex_init(&gs->lock);
	if (!gs->has_crc)
		g_warning("gcp: gs://%s/%s has no crc32c: only its generation "
			  "is checked", prov->bucket, name);
	src = cfs_source_new(&gcs_source_ops, gs);
	src->size = size;
	src->random = true;
	src->map = cfs_extent_map_new_full(size);
	src->identity = g_strdup_printf("gs://%s/%s#%" G_GUINT64_FORMAT,
					prov->bucket, name, gen);
	src->settings = cfs_http_settings_ref(prov->settings);
	cfs_source_set_expiry(src, cfs_oauth2_expires(oauth));
	return src;
}

/* --- the build --- */

/* Seconds the export step may take: export_timeout, else an hour plus
 * about four hours per TiB (Google's export is slow; the tools' fixed
 * two hours fail large disks). */
static guint export_timeout(GcpProvider *prov, const GcpDisk *d)
{
	double t = prov->export_timeout_s;

	if (t <= 0)
		t = 3600.0 + 15.0 * (double)d->size_gb;
	return (guint)MIN(t, GCP_BUILD_MAX_S - 600);
}

static json_object *build_body(GcpProvider *prov, const char *project,
			       const GcpDisk *d, const char *image,
			       const char *object)
{
	guint timeout = export_timeout(prov, d);
	json_object *body = json_object_new_object();
	json_object *steps = json_object_new_array();
	json_object *step = json_object_new_object();
	json_object *args = json_object_new_array();
	json_object *tags = json_object_new_array();
	char *arg[] = {
		g_strdup_printf("-timeout=%us", timeout),
		g_strdup_printf("-source_image=projects/%s/global/images/%s",
				project, image),
		g_strdup_printf("-destination_uri=gs://%s/%s", prov->bucket,
				object),
		g_strdup_printf("-format=%s", d->format),
		g_strdup("-client_id=api"),
	};
	g_autofree char *total = g_strdup_printf("%us", timeout + 600);

	for (guint i = 0; i < G_N_ELEMENTS(arg); i++) {
		json_object_array_add(args, json_object_new_string(arg[i]));
		g_free(arg[i]);
	}
	json_object_object_add(step, "name",
			       json_object_new_string(GCP_EXPORT_STEP));
	json_object_object_add(step, "args", args);
	json_object_array_add(steps, step);
	json_object_array_add(tags, json_object_new_string("gce-daisy"));
	json_object_array_add(tags, json_object_new_string(
		"gce-daisy-image-export"));
	json_object_object_add(body, "steps", steps);
	json_object_object_add(body, "tags", tags);
	json_object_object_add(body, "timeout",
			       json_object_new_string(total));
	return body;
}

/* Start the build; its id. Transfer full. */
static char *build_start(GcpProvider *prov, const char *project,
			 const GcpDisk *d, const char *image,
			 const char *object, GError **error)
{
	g_autofree char *p = gcp_escape(project);
	g_autofree char *url = g_strdup_printf("%s/projects/%s/builds",
					       prov->cloudbuild_url, p);
	g_autoptr(json_object) body = build_body(prov, project, d, image,
						 object);
	g_autoptr(json_object) op = gcp_call(prov, "POST", url, body,
					     "Cloud Build builds.create",
					     error);
	json_object *meta, *build;
	const char *id;

	if (!op)
		return NULL;
	if (!json_object_object_get_ex(op, "metadata", &meta) ||
	    !json_object_object_get_ex(meta, "build", &build) ||
	    !(id = gcp_json_str(build, "id")) || !*id || strchr(id, '/')) {
		g_set_error(error, CFS_ERROR, EIO, "Cloud Build builds.create:"
			    " no build id in the answer");
		return NULL;
	}
	g_message("gcp: build %s exports image %s to gs://%s/%s", id, image,
		  prov->bucket, object);
	return g_strdup(id);
}

static void build_cancel(GcpProvider *prov, const char *project,
			 const char *id)
{
	g_autofree char *p = gcp_escape(project);
	g_autofree char *url = g_strdup_printf(
		"%s/projects/%s/builds/%s:cancel", prov->cloudbuild_url, p, id);
	g_autoptr(GError) error = NULL;
	g_autoptr(json_object) ans = gcp_call(prov, "POST", url, NULL,
					      "Cloud Build builds.cancel",
					      &error);

	if (!ans)
		g_warning("gcp: could not cancel build %s: %s", id,
			  error->message);
}

static bool build_running(const char *status)
{
	return g_strcmp0(status, "QUEUED") == 0 ||
	       g_strcmp0(status, "WORKING") == 0 ||
	       g_strcmp0(status, "PENDING") == 0 ||
	       g_strcmp0(status, "STATUS_UNKNOWN") == 0;
}

/* A failed build as an error: its status, why, and where its log is. */
static void build_failed(json_object *build, const char *id, GError **error)
{
	const char *status = gcp_json_str(build, "status");
	const char *detail = gcp_json_str(build, "statusDetail");
	const char *log = gcp_json_str(build, "logUrl");
	g_autofree char *text = g_strdup_printf(
		"image export build %s ended %s%s%s%s%s", id,
		status ? status : "without a status", detail ? ": " : "",
		detail ? detail : "", log ? "; log " : "", log ? log : "");

	for (char *c = text; *c; c++)
		if (g_ascii_iscntrl(*c))
			*c = ' ';
	g_set_error_literal(error, CFS_ERROR, EIO, text);
}

/* Poll the build until it ends; the phase is export:<status>. */
static bool build_wait(GcpProvider *prov, const char *project,
		       const char *id, CfsExportReport *report,
		       GError **error)
{
	g_autofree char *p = gcp_escape(project);
	g_autofree char *url = g_strdup_printf("%s/projects/%s/builds/%s",
					       prov->cloudbuild_url, p, id);
	CfsPoll poll;
	guint failures = 0;

	/* The build's own timeout ends it; this is a bound past that. */
	cfs_poll_init(&poll, report, prov->poll_s, GCP_POLL_MAX_S, 0);
	for (;;) {
		g_autoptr(GError) local = NULL;
		g_autoptr(json_object) build = gcp_call(
			prov, "GET", url, NULL, "Cloud Build builds.get",
			&local);
		const char *status = gcp_json_str(build, "status");
		g_autofree char *phase = NULL;

		if (!build && ++failures == 5) {
			g_propagate_error(error, g_steal_pointer(&local));
			return false;
		}
		if (build && g_strcmp0(status, "SUCCESS") == 0) {
			cfs_export_report(report, "export:SUCCESS", 100.0);
			return true;
		}
		if (build && !build_running(status)) {
			build_failed(build, id, error);
			return false;
		}
		if (build) {
			failures = 0;
			phase = g_strdup_printf("export:%s", status);
			cfs_export_report(report, phase, 0.0);
		}
		if (!cfs_poll_next(&poll, 0, "Cloud Build", error))
			return false;
	}
}

/* Image, build, then the object's metadata. The image is gone when
 * this returns; the object too unless it is the source. */
CfsSource *gcp_export_start(GcpProvider *prov, CfsDisk *disk,
			    CfsExportReport *report, GError **error)
{
	GcpDisk *d = disk->priv;
	g_autofree char *project = gcp_project(prov, error);
	g_autofree char *image = NULL, *object = NULL, *build = NULL;
	CfsSource *src = NULL;
	bool built;

	if (!project)
		return NULL;
	cfs_export_report(report, "image", 0.0);
	if (!gcp_image_create(prov, project, d, &image, report, error)) {
		if (image)
			gcp_image_delete(prov, project, image);
		return NULL;
	}
	object = gcp_object_name(prov, image, d->format);
	cfs_export_report(report, "export:QUEUED", 0.0);
	build = build_start(prov, project, d, image, object, error);
	built = build && build_wait(prov, project, build, report, error);
	if (build && !built && g_error_matches(*error, CFS_ERROR, ECANCELED))
		build_cancel(prov, project, build);
	gcp_image_delete(prov, project, image);
	if (built)
		src = object_source(prov, d, object, error);
	if (!src && built && !prov->keep_exports) {
		g_autoptr(GError) local = NULL;

		if (!gcp_object_delete(prov, object, &local))
			g_warning("gcp: %s", local->message);
	}
	if (src)
		g_message("gcp: %s: gs://%s/%s is ready, %" G_GUINT64_FORMAT
			  " bytes", disk->name, prov->bucket, object,
			  src->size);
	return src;
}

void gcp_export_end(GcpProvider *prov, CfsDisk *disk, CfsSource *src)
{
	GcsSource *gs = src ? src->priv : NULL;
	g_autoptr(GError) error = NULL;

	if (!gs || prov->keep_exports)
		return;
	if (!gcp_object_delete(prov, gs->name, &error))
		g_warning("gcp: could not delete the export (the next mount "
			  "tries again): %s", error->message);
}
