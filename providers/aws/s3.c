// SPDX-License-Identifier: MIT
/*
 * export mode: EC2 writes the instance's boot volume as one image (vmdk,
 * vhd or raw) to s3_bucket/s3_prefix, either through a temporary image
 * (export_method = image: CreateImage, ExportImage, then the image and
 * its snapshots deleted) or directly (export_method = instance:
 * CreateInstanceExportTask, for instances imported into EC2). When the
 * task completes, the object's size and ETag are the source's, and reads
 * are signed ranged GETs with If-Match (a replaced object fails instead of
 * mixing bytes). The object is deleted when the export ends (at unmount)
 * unless keep_exports is set. The bucket is addressed path-style and
 * signed in the instance's region (EC2 exports to a bucket of the
 * instance's region).
 */
#include <string.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "providers/aws/aws-private.h"

typedef struct {
	AwsProvider *prov;
	AwsGrant grant;
	char *region;
	char *url;		/* of the object */
	char *etag;
	char *key;
} S3Source;

static void s3_source_free(CfsSource *src)
{
	S3Source *ss = src->priv;

	if (!ss)
		return;
	aws_grant_clear(&ss->grant);
	g_free(ss->region);
	g_free(ss->url);
	g_free(ss->etag);
	g_free(ss->key);
	g_free(ss);
}

static char *s3_object_url(AwsProvider *prov, const char *region,
			   const char *bucket, const char *key)
{
	g_autofree char *base = aws_endpoint(prov, AWS_S3, region);
	g_autofree char *b = cfs_sigv4_uri_encode(bucket, strlen(bucket),
						  false);
	g_autofree char *k = cfs_sigv4_uri_encode(key, strlen(key), true);

	return g_strdup_printf("%s/%s/%s", base, b, k);
}

static bool s3_plan(CfsSource *src, guint64 off, guint64 len, GArray *pieces,
		    GError **error)
{
	S3Source *ss = src->priv;
	CfsSourcePiece piece = { cfs_http_request_new(ss->url), off, len };
	g_autofree char *match = g_strdup_printf("If-Match: %s", ss->etag);

	piece.req->has_range = true;
	piece.req->range_start = off;
	piece.req->range_end = off + len - 1;
	cfs_http_request_add_header(piece.req, match);
	g_array_append_val(pieces, piece);
	return true;
}

static bool s3_authorize(CfsSource *src, CfsHttpRequest *req, GError **error)
{
	S3Source *ss = src->priv;

	return aws_grant_sign(&ss->grant, req, "s3", ss->region, error);
}

static bool s3_renew(CfsSource *src, GError **error)
{
	S3Source *ss = src->priv;

	if (!aws_grant_renew(ss->prov, &ss->grant, error))
		return false;
	cfs_source_set_expiry(src, ss->grant.expires);
	return true;
}

static const CfsSourceOps s3_source_ops = {
	.plan = s3_plan,
	.authorize = s3_authorize,
	.renew = s3_renew,
	.free = s3_source_free,
};

/* The leading number of "42%" or "42", else -1. */
static double percent_of(const char *s)
{
	char *end = NULL;
	double v;

	if (!s)
		return -1;
	v = g_ascii_strtod(s, &end);
	return end != s ? v : -1;
}

static char *export_task_start(AwsProvider *prov, const AwsDisk *d,
			       char **key, GError **error)
{
	const char *fmt = prov->export_format;
	g_autofree char *iid = aws_form_escape(d->instance_id);
	g_autofree char *bucket = aws_form_escape(prov->s3_bucket);
	g_autofree char *prefix = aws_form_escape(prov->s3_prefix);
	g_autofree char *upper = g_ascii_strup(fmt, -1);
	g_autofree char *desc = aws_form_escape("cloudfs export");
	g_autofree char *params = g_strdup_printf(
		"InstanceId=%s&TargetEnvironment=%s&Description=%s"
		"&ExportToS3.DiskImageFormat=%s&ExportToS3.S3Bucket=%s"
		"%s%s", iid,
		g_str_equal(fmt, "vhd") ? "microsoft" : "vmware", desc, upper,
		bucket, *prefix ? "&ExportToS3.S3Prefix=" : "", prefix);
	g_autoptr(xmlDoc) doc = aws_ec2_call(prov, d->region,
					     "CreateInstanceExportTask",
					     params, error);
	xmlNode *task;
	char *tid;

	if (!doc)
		return NULL;
	task = aws_xml_child(xmlDocGetRootElement(doc), "exportTask");
	tid = aws_xml_text(task, "exportTaskId");
	if (!tid || !*tid) {
		g_free(tid);
		g_set_error(error, CFS_ERROR, EIO, "EC2 CreateInstanceExport"
			    "Task of %s: no exportTaskId", d->instance_id);
		return NULL;
	}
	*key = aws_xml_text(task, "exportToS3/s3Key");
	g_message("aws: export task %s of %s to s3://%s/%s started", tid,
		  d->instance_id, prov->s3_bucket, prov->s3_prefix);
	return tid;
}

/* What differs between the two kinds of EC2 export task. */
typedef struct {
	const char *action;	/* the Describe call */
	const char *param;	/* its id parameter */
	const char *set;	/* where the task is in the answer */
	const char *state;	/* the task's state field */
	const char *percent;	/* the field whose leading number is the
				 * progress */
	const char *key;	/* the object's key, or NULL */
} ExportTaskKind;

static const ExportTaskKind instance_task = {
	"DescribeExportTasks", "ExportTaskId.1", "exportTaskSet/item", "state",
	"statusMessage", "exportToS3/s3Key",
};

static const ExportTaskKind image_task = {
	"DescribeExportImageTasks", "ExportImageTaskId.1",
	"exportImageTaskSet/item", "status", "progress", NULL,
};

/* Poll an export task until completed; the object's key into @key when
 * the answer gives one. */
static bool export_task_poll(AwsProvider *prov, const AwsDisk *d,
			     const ExportTaskKind *kind, const char *tid,
			     char **key, CfsExportReport *report,
			     GError **error)
{
	g_autofree char *t = aws_form_escape(tid);
	g_autofree char *params = g_strdup_printf("%s=%s", kind->param, t);
	CfsPoll poll;

	cfs_poll_init(&poll, report, prov->poll_s, 10.0, 0);
	for (;;) {
		g_autoptr(xmlDoc) doc = aws_ec2_poll(prov, d->region,
						     kind->action, params,
						     report, poll.wait, error);
		g_autofree char *state = NULL, *msg = NULL, *pct = NULL;
		xmlNode *item;

		if (!doc)
			return false;
		item = aws_xml_path(xmlDocGetRootElement(doc), kind->set);
		state = aws_xml_text(item, kind->state);
		msg = aws_xml_text(item, "statusMessage");
		pct = aws_xml_text(item, kind->percent);
		if (g_strcmp0(state, "completed") == 0) {
			g_autofree char *k = kind->key ?
				aws_xml_text(item, kind->key) : NULL;

			if (k && *k) {
				g_free(*key);
				*key = g_steal_pointer(&k);
			}
			cfs_export_report(report, "export", 100.0);
			return true;
		}
		if (!item || g_strcmp0(state, "active") != 0) {
			g_set_error(error, CFS_ERROR, EIO, "export task %s %s%s%s",
				    tid, state ? state : "vanished",
				    msg && *msg ? ": " : "", msg ? msg : "");
			return false;
		}
		cfs_export_report(report, "export", MAX(percent_of(pct), 0.0));
		if (!cfs_poll_next(&poll, 0, "export task", error))
			return false;
	}
}

static void export_task_cancel(AwsProvider *prov, const AwsDisk *d,
			       const char *tid)
{
	g_autofree char *t = aws_form_escape(tid);
	g_autofree char *params = g_strdup_printf("ExportTaskId=%s", t);
	g_autoptr(GError) error = NULL;
	g_autoptr(xmlDoc) doc = aws_ec2_call(prov, d->region,
					     "CancelExportTask", params, &error);

	if (!doc)
		g_warning("aws: could not cancel export task %s: %s", tid,
			  error->message);
}

/* ExportImage of @image_id; the task id. */
static char *image_task_start(AwsProvider *prov, const AwsDisk *d,
			      const char *image_id, GError **error)
{
	g_autofree char *img = aws_form_escape(image_id);
	g_autofree char *bucket = aws_form_escape(prov->s3_bucket);
	g_autofree char *prefix = aws_form_escape(prov->s3_prefix);
	g_autofree char *upper = g_ascii_strup(prov->export_format, -1);
	g_autofree char *desc = aws_form_escape("cloudfs export");
	g_autofree char *params = g_strdup_printf(
		"ImageId=%s&DiskImageFormat=%s&Description=%s"
		"&S3ExportLocation.S3Bucket=%s%s%s", img, upper, desc, bucket,
		*prefix ? "&S3ExportLocation.S3Prefix=" : "", prefix);
	g_autoptr(xmlDoc) doc = aws_ec2_call(prov, d->region, "ExportImage",
					     params, error);
	char *tid;

	if (!doc)
		return NULL;
	tid = aws_xml_text(xmlDocGetRootElement(doc), "exportImageTaskId");
	if (!tid || !*tid) {
		g_free(tid);
		g_set_error(error, CFS_ERROR, EIO, "EC2 ExportImage of %s: no "
			    "exportImageTaskId", image_id);
		return NULL;
	}
	g_message("aws: export task %s of %s (%s) to s3://%s/%s started", tid,
		  image_id, d->instance_id, prov->s3_bucket, prov->s3_prefix);
	return tid;
}

/* export_method = image: the object's key. The image goes once the
 * export is over, whatever its outcome. */
static char *export_by_image(AwsProvider *prov, const AwsDisk *d,
			     CfsExportReport *report, GError **error)
{
	g_autofree char *image = aws_image_create(prov, d, report, error);
	g_autofree char *tid = NULL;
	char *key = NULL;

	if (!image)
		return NULL;
	if (!aws_image_wait(prov, d->region, image, report, error))
		goto out;
	cfs_export_report(report, "export", 0.0);
	tid = image_task_start(prov, d, image, error);
	if (!tid)
		goto out;
	if (!export_task_poll(prov, d, &image_task, tid, &key, report,
			      error)) {
		export_task_cancel(prov, d, tid);
		goto out;
	}
	key = g_strdup_printf("%s%s.%s", prov->s3_prefix, tid,
			      prov->export_format);
out:
	aws_image_delete(prov, d->region, image);
	return key;
}

/* export_method = instance: the object's key. */
static char *export_by_instance(AwsProvider *prov, const AwsDisk *d,
				CfsExportReport *report, GError **error)
{
	g_autofree char *tid = NULL;
	char *key = NULL;

	cfs_export_report(report, "export", 0.0);
	tid = export_task_start(prov, d, &key, error);
	if (!tid)
		return NULL;
	if (!export_task_poll(prov, d, &instance_task, tid, &key, report,
			      error)) {
		export_task_cancel(prov, d, tid);
		g_free(key);
		return NULL;
	}
	if (!key || !*key) {
		g_free(key);
		key = g_strdup_printf("%s%s.%s", prov->s3_prefix, tid,
				      prov->export_format);
	}
	return key;
}

CfsSource *aws_s3_export_start(AwsProvider *prov, CfsDisk *disk,
			       CfsExportReport *report, GError **error)
{
	AwsDisk *d = disk->priv;
	g_autofree char *key = NULL, *what = NULL;
	g_autoptr(CfsHttpRequest) head = NULL;
	CfsAwsCreds *creds;
	gint64 expires = 0;
	S3Source *ss;
	CfsSource *src;

	key = prov->export_method == AWS_EXPORT_IMAGE ?
		export_by_image(prov, d, report, error) :
		export_by_instance(prov, d, report, error);
	if (!key)
		return NULL;
	/* The object is deleted afterwards: only one under our prefix. */
	if (!g_str_has_prefix(key, prov->s3_prefix) || strstr(key, "..")) {
		g_set_error(error, CFS_ERROR, EIO, "the export answered the "
			    "object %s, outside s3_prefix '%s'", key,
			    prov->s3_prefix);
		return NULL;
	}
	creds = aws_creds_get(prov, &expires, error);
	if (!creds)
		return NULL;
	ss = g_new0(S3Source, 1);
	ss->prov = prov;
	aws_grant_init(&ss->grant, creds, expires);
	ss->region = g_strdup(d->region);
	ss->key = g_strdup(key);
	ss->url = s3_object_url(prov, d->region, prov->s3_bucket, key);
	src = cfs_source_new(&s3_source_ops, ss);
	src->settings = cfs_http_settings_ref(prov->settings);
	what = g_strdup_printf("S3 HEAD s3://%s/%s", prov->s3_bucket, key);
	head = cfs_http_request_new(ss->url);
	head->nobody = true;
	if (!aws_sign(prov, head, "s3", d->region, error) ||
	    !aws_perform(prov, head, what, error)) {
		aws_s3_export_end(prov, disk, src);
		cfs_source_free(src);
		return NULL;
	}
	if (head->content_length < 0 || !head->etag) {
		g_set_error(error, CFS_ERROR, EIO, "%s: no size or ETag", what);
		aws_s3_export_end(prov, disk, src);
		cfs_source_free(src);
		return NULL;
	}
	ss->etag = g_strdup(head->etag);
	src->size = (guint64)head->content_length;
	src->random = true;
	src->map = cfs_extent_map_new_full(src->size);
	src->identity = g_strdup_printf("s3://%s/%s %s", prov->s3_bucket, key,
					ss->etag);
	cfs_source_set_expiry(src, expires);
	g_message("aws: %s: s3://%s/%s is ready, %" G_GUINT64_FORMAT " bytes",
		  disk->name, prov->s3_bucket, key, src->size);
	return src;
}

void aws_s3_export_end(AwsProvider *prov, CfsDisk *disk, CfsSource *src)
{
	S3Source *ss = src ? src->priv : NULL;
	g_autoptr(CfsHttpRequest) req = NULL;
	g_autoptr(GError) error = NULL;
	g_autofree char *what = NULL;

	if (!ss || prov->keep_exports)
		return;
	what = g_strdup_printf("S3 DELETE s3://%s/%s", prov->s3_bucket,
			       ss->key);
	req = cfs_http_request_new(ss->url);
	req->method = g_strdup("DELETE");
	if (!aws_sign(prov, req, "s3", ss->region, &error) ||
	    !aws_perform(prov, req, what, &error))
		g_warning("aws: could not delete the export: %s",
			  error->message);
	else
		g_message("aws: export s3://%s/%s deleted", prov->s3_bucket,
			  ss->key);
}
