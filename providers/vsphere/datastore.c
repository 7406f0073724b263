// SPDX-License-Identifier: MIT
/*
 * Datastore reads: a disk's flat extent read over HTTPS with ranged GETs
 * (/folder/<path>-flat.vmdk?dcPath=…&dsName=…, the session cookie as the
 * grant), random access with the exact size from the first stat. A
 * powered-on VM's files are locked: a temporary snapshot (no memory, no
 * quiescing) freezes its base disks, which are read instead; the snapshot
 * is removed when the export ends. The VM is never powered off or edited.
 * Where changed block tracking is on, its areas are the allocation map
 * (cbt.c): holes are never fetched.
 */
#include <string.h>

#include "common/error.h"
#include "common/secret.h"
#include "providers/vsphere/vsphere-private.h"

typedef struct {
	VsProvider *prov;
	char *url;	/* of the flat extent */
	VsRef snapshot; /* the temporary snapshot, or none */
	char *what;	/* "VM/disk" for messages */
	guint gen;	/* session generation last renewed to */
} DsSource;

char *vs_flat_name(const char *file)
{
	gsize n = strlen(file);

	if (n > 5 && g_str_has_suffix(file, ".vmdk"))
		n -= 5;
	return g_strdup_printf("%.*s-flat.vmdk", (int)n, file);
}

char *vs_datastore_url(VsProvider *prov, const char *dc_path,
		       const char *datastore, const char *file)
{
	g_autofree char *f = g_uri_escape_string(file, "/", FALSE);
	g_autofree char *dc = g_uri_escape_string(dc_path, NULL, FALSE);
	g_autofree char *ds = g_uri_escape_string(datastore, NULL, FALSE);

	return g_strdup_printf("%s/folder/%s?dcPath=%s&dsName=%s",
			       prov->base_url, f, dc, ds);
}

/* One GET of the first byte, with the current cookie. */
static long probe_once(VsProvider *prov, const char *url, char **validator,
		       guint64 *total, GError **error)
{
	g_autoptr(CfsHttpRequest) req = cfs_http_request_new(url);
	g_autoptr(CfsSecret) cookie = vs_cookie_header(prov);
	guint64 start, last;
	bool ok;

	req->has_range = true;
	req->range_start = 0;
	req->range_end = 0;
	req->max_attempts = 2;
	req->timeout_s = 60;
	if (cookie)
		req->auth_headers = curl_slist_append(NULL, cookie);
	cfs_http_request_set_settings(req, prov->settings);
	ok = cfs_http_perform(prov->base.ctx->http, req, error);
	for (struct curl_slist *h = req->auth_headers; h; h = h->next)
		cfs_secret_wipe(h->data, strlen(h->data));
	if (ok && validator)
		*validator =
		    g_strdup(req->etag ? req->etag : req->last_modified);
	if (ok && total && !cfs_http_content_range(req, &start, &last, total))
		*total =
		    req->content_length > 0 ? (guint64)req->content_length : 0;
	return req->status;
}

long vs_datastore_probe(VsProvider *prov, const char *url, char **validator,
			GError **error)
{
	guint gen = vs_session_gen(prov);
	g_autoptr(GError) local = NULL;
	long status;

	if (!vs_login(prov, false, 0, error))
		return 0;
	status = probe_once(prov, url, validator, NULL, &local);
	if (status == 401 && vs_login(prov, true, gen, NULL)) {
		g_clear_error(&local);
		status = probe_once(prov, url, validator, NULL, &local);
	}
	if (local)
		g_propagate_error(error, g_steal_pointer(&local));
	return status;
}

/* --- the source --- */

/* One ranged GET for each data extent of [off, off+len): holes need none. */
static bool ds_plan(CfsSource *src, guint64 off, guint64 len, GArray *pieces,
		    GError **error)
{
	DsSource *ds = src->priv;
	guint64 end = off + len, pos = off, data, hole;

	while (pos < end && cfs_extent_map_next_data(src->map, pos, &data) &&
	       data < end) {
		CfsSourcePiece piece = {cfs_http_request_new(ds->url), data, 0};

		if (!cfs_extent_map_next_hole(src->map, data, &hole) ||
		    hole > end)
			hole = end;
		piece.length = hole - data;
		piece.req->has_range = true;
		piece.req->range_start = data;
		piece.req->range_end = hole - 1;
		g_array_append_val(pieces, piece);
		pos = hole;
	}
	return true;
}

/* The session cookie, as renew or a login left it. Never blocks. */
static bool ds_authorize(CfsSource *src, CfsHttpRequest *req, GError **error)
{
	DsSource *ds = src->priv;
	g_autoptr(CfsSecret) cookie = vs_cookie_header(ds->prov);

	if (!cookie) {
		g_set_error(error, CFS_ERROR, EACCES, "no vSphere session");
		return false;
	}
	req->auth_headers = curl_slist_append(req->auth_headers, cookie);
	return true;
}

/* A 401: the session ended; log in again (unless another caller just
 * did). */
static bool ds_renew(CfsSource *src, GError **error)
{
	DsSource *ds = src->priv;

	if (!vs_login(ds->prov, true, ds->gen, error))
		return false;
	ds->gen = vs_session_gen(ds->prov);
	cfs_source_set_expiry(src, 0);
	return true;
}

static void ds_free(CfsSource *src)
{
	DsSource *ds = src->priv;

	if (!ds)
		return;
	g_free(ds->url);
	vs_ref_clear(&ds->snapshot);
	g_free(ds->what);
	g_free(ds);
}

static const CfsSourceOps ds_source_ops = {
    .plan = ds_plan,
    .authorize = ds_authorize,
    .renew = ds_renew,
    .free = ds_free,
};

/* --- snapshots --- */

static bool snapshot_create(VsProvider *prov, const VsDisk *d, VsRef *snap,
			    CfsExportReport *report, GError **error)
{
	g_autoptr(GString) args = g_string_new(NULL);
	g_autofree char *name =
	    g_strdup_printf(VS_SNAPSHOT_PREFIX "%s", cfs_owner_tag());
	g_autofree char *desc = g_strdup_printf(
	    "cloudfs: temporary snapshot to read the disks of %s; removed "
	    "when read (" CFS_OWNER_KEY "=%s)",
	    d->vm_name, cfs_owner_tag());
	g_autoptr(xmlDoc) doc = NULL;
	xmlNode *resp, *result = NULL;
	VsRef task = {0};
	bool ok;

	vs_add(args, "name", name);
	vs_add(args, "description", desc);
	vs_add(args, "memory", "false");
	vs_add(args, "quiesce", "false");
	cfs_export_report(report, "snapshot", 0.0);
	doc = vs_call(prov, "CreateSnapshot_Task", &d->vm, args->str, &resp,
		      NULL, error);
	if (!doc ||
	    !vs_ref_parse(cfs_xml_child(resp, VS_NS, "returnval"), &task)) {
		if (doc)
			g_set_error(error, CFS_ERROR, EIO,
				    "CreateSnapshot_Task:"
				    " no task in the answer");
		return false;
	}
	ok = vs_task_wait(prov, &task, "snapshot", report, "snapshot", &result,
			  error) &&
	     vs_ref_parse(result, snap);
	if (ok)
		g_message("%s: temporary snapshot %s (%s) of %s created",
			  prov->base.name, snap->value, name, d->vm_name);
	else if (result)
		g_set_error(error, CFS_ERROR, EIO,
			    "snapshot: no snapshot in "
			    "the task's result");
	if (result)
		xmlFreeNode(result);
	vs_ref_clear(&task);
	return ok;
}

void vs_snapshot_remove(VsProvider *prov, const VsRef *snap, const char *vm)
{
	g_autoptr(GError) error = NULL;
	g_autoptr(xmlDoc) doc = NULL;
	xmlNode *resp;
	VsRef task = {0};

	doc = vs_call(prov, "RemoveSnapshot_Task", snap,
		      "<removeChildren>false</removeChildren>", &resp, NULL,
		      &error);
	if (doc &&
	    !vs_ref_parse(cfs_xml_child(resp, VS_NS, "returnval"), &task))
		g_set_error(&error, CFS_ERROR, EIO, "no task in the answer");
	if (doc && task.value &&
	    vs_task_wait(prov, &task, "remove snapshot", NULL, NULL, NULL,
			 &error))
		g_message("%s: temporary snapshot %s of %s removed",
			  prov->base.name, snap->value, vm);
	else
		g_warning("%s: could not remove temporary snapshot %s of %s "
			  "(it is retried at the next mount): %s",
			  prov->base.name, snap->value, vm,
			  error ? error->message : "unknown error");
	vs_ref_clear(&task);
}

/* The file of disk @key in the snapshot's configuration: the base disk
 * it froze. NULL if the snapshot does not say. */
static char *snapshot_disk_file(VsProvider *prov, const VsRef *snap, int key)
{
	g_autoptr(xmlDoc) doc = NULL;
	g_autoptr(GError) error = NULL;
	xmlNode *devs =
	    vs_property(prov, snap, "config.hardware.device", &doc, &error);

	for (xmlNode *n = cfs_xml_child(devs, VS_NS, "VirtualDevice"); n;
	     n = cfs_xml_next(n, VS_NS, "VirtualDevice")) {
		g_autofree char *k = cfs_xml_path_text(n, VS_NS, "key");

		if (k && g_ascii_strtoll(k, NULL, 10) == key)
			return cfs_xml_path_text(n, VS_NS, "backing/fileName");
	}
	if (error)
		g_debug("%s: snapshot devices: %s", prov->base.name,
			error->message);
	return NULL;
}

/* The VM's power state now (it may have changed since the listing). */
static char *power_state(VsProvider *prov, const VsDisk *d, GError **error)
{
	g_autoptr(xmlDoc) doc = NULL;
	xmlNode *v =
	    vs_property(prov, &d->vm, "runtime.powerState", &doc, error);

	if (!doc) {
		g_prefix_error(error, "%s: ", d->vm_name);
		return NULL;
	}
	if (!v) {
		g_set_error(error, CFS_ERROR, ENOENT, "%s: the VM is gone",
			    d->vm_name);
		return NULL;
	}
	return cfs_xml_text(v);
}

/* The flat file to read: the listed one, or the base disk a snapshot
 * froze ("[ds] dir/disk1.vmdk"). */
static char *flat_url(VsProvider *prov, const VsDisk *d, const char *frozen)
{
	g_autofree char *flat = NULL;
	const char *close = frozen ? strchr(frozen, ']') : NULL;

	if (frozen && frozen[0] == '[' && close) {
		g_autofree char *ds =
		    g_strndup(frozen + 1, (gsize)(close - frozen - 1));
		g_autofree char *file = g_strdup(g_strchug((char *)close + 1));

		flat = vs_flat_name(file);
		return vs_datastore_url(prov, d->dc_path, ds, flat);
	}
	flat = vs_flat_name(d->file);
	return vs_datastore_url(prov, d->dc_path, d->datastore, flat);
}

static bool check_flat(VsProvider *prov, DsSource *ds, const VsDisk *d,
		       char **validator, GError **error)
{
	g_autoptr(GError) local = NULL;
	guint gen = vs_session_gen(prov);
	guint64 total = 0;
	long status = probe_once(prov, ds->url, validator, &total, &local);

	if (status == 401 && vs_login(prov, true, gen, NULL)) {
		g_clear_error(&local);
		status = probe_once(prov, ds->url, validator, &total, &local);
	}
	if (!local && total && total < d->capacity)
		g_set_error(&local, CFS_ERROR, EIO,
			    "the flat file holds %" G_GUINT64_FORMAT
			    " bytes, the disk %" G_GUINT64_FORMAT,
			    total, d->capacity);
	if (!local)
		return true;
	if (status == 403 || status == 401)
		g_set_error(error, CFS_ERROR, EACCES,
			    "datastore %s refuses file "
			    "reads (HTTP %ld); mode = nfc exports instead",
			    d->datastore, status);
	else if (status == 404)
		g_set_error(error, CFS_ERROR, ENOENT,
			    "%s: no flat file on "
			    "datastore %s (HTTP 404)",
			    d->file, d->datastore);
	else
		g_propagate_error(error, g_steal_pointer(&local));
	return false;
}

/* The allocation map: changed block tracking's where it is on, and the
 * whole disk where the server refuses (a fault: tracking was turned off,
 * the disk was never tracked). Answers that do not hold together fail the
 * export. */
static CfsExtentMap *ds_map(VsProvider *prov, const VsDisk *d,
			    const DsSource *ds, GError **error)
{
	g_autoptr(GError) local = NULL;
	g_autofree char *fault = NULL;
	CfsExtentMap *map;
	guint answers = 0;

	if (!d->cbt)
		return cfs_extent_map_new_full(d->capacity);
	map = vs_cbt_map(prov, d, &ds->snapshot, &fault, &answers, &local);
	if (map) {
		g_message("%s: %s: changed block tracking: %" G_GUINT64_FORMAT
			  " of %" G_GUINT64_FORMAT " bytes hold data, in %u "
			  "areas (%u answers)",
			  prov->base.name, ds->what, map->data_bytes, map->size,
			  map->n, answers);
		return map;
	}
	if (!fault) {
		g_propagate_error(error, g_steal_pointer(&local));
		return NULL;
	}
	g_message("%s: %s: no allocation map from changed block tracking "
		  "(%s); every byte of the disk is read",
		  prov->base.name, ds->what, local->message);
	return cfs_extent_map_new_full(d->capacity);
}

CfsSource *vs_datastore_export_start(VsProvider *prov, CfsDisk *disk,
				     CfsExportReport *report, GError **error)
{
	VsDisk *d = disk->priv;
	g_autofree char *power = NULL, *frozen = NULL, *validator = NULL;
	DsSource *ds;
	CfsSource *src;

	if (d->chained) {
		g_set_error(error, CFS_ERROR, EIO,
			    "%s: the VM has snapshots: "
			    "its disk is a chain, which only an NFC export of "
			    "the powered-off VM reads",
			    d->vm_name);
		return NULL;
	}
	power = power_state(prov, d, error);
	if (!power)
		return NULL;
	ds = g_new0(DsSource, 1);
	ds->prov = prov;
	ds->what = g_strdup_printf("%s/%s", d->vm_name, disk->name);
	src = cfs_source_new(&ds_source_ops, ds);
	if (!g_str_equal(power, "poweredOff")) {
		if (!snapshot_create(prov, d, &ds->snapshot, report, error)) {
			g_prefix_error(error, "%s: ", d->vm_name);
			cfs_source_free(src);
			return NULL;
		}
		frozen = snapshot_disk_file(prov, &ds->snapshot, d->key);
	}
	ds->url = flat_url(prov, d, frozen);
	ds->gen = vs_session_gen(prov);
	if (!check_flat(prov, ds, d, &validator, error)) {
		g_prefix_error(error, "%s: ", ds->what);
		vs_datastore_export_end(prov, disk, src);
		cfs_source_free(src);
		return NULL;
	}
	src->map = ds_map(prov, d, ds, error);
	if (!src->map) {
		g_prefix_error(error, "%s: ", ds->what);
		vs_datastore_export_end(prov, disk, src);
		cfs_source_free(src);
		return NULL;
	}
	src->size = d->capacity;
	src->random = true;
	src->settings = cfs_http_settings_ref(prov->settings);
	/* A snapshot is new bytes each time; a powered-off VM's file is the
	 * same while its validator is. */
	if (ds->snapshot.value)
		src->identity =
		    g_strdup_printf("snapshot %s", ds->snapshot.value);
	else if (validator)
		src->identity = g_strdup_printf("file %s", validator);
	else
		src->identity = g_strdup_printf("read %" G_GINT64_FORMAT,
						g_get_real_time());
	cfs_source_set_expiry(src, 0);
	return src;
}

void vs_datastore_export_end(VsProvider *prov, CfsDisk *disk, CfsSource *src)
{
	DsSource *ds = src->priv;

	if (ds->snapshot.value)
		vs_snapshot_remove(prov, &ds->snapshot, ds->what);
	vs_ref_clear(&ds->snapshot);
}
