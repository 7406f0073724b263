// SPDX-License-Identifier: MIT
/*
 * Compute Engine v1: the inventory (instances and disks, aggregated over
 * every zone or listed per zone, paged with nextPageToken) turned into
 * folders and disk files, and the temporary images an export is made
 * from (labelled with this mount's owner tag, so that a later mount can
 * delete what a crash left).
 */
#include <string.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "providers/gcp/gcp-private.h"

#define GCP_PAGES_MAX 1000
#define GCP_POLL_MAX_S 10.0

void gcp_disk_free(GcpDisk *d)
{
	if (!d)
		return;
	g_free(d->zone);
	g_free(d->name);
	g_free(d->instance);
	g_free(d->format);
	g_free(d);
}

/* --- paged lists --- */

typedef bool (*GcpPageFn)(json_object *page, gpointer data, GError **error);

/* GET @url (which has a query already) page by page. */
static bool gcp_list_pages(GcpProvider *prov, const char *url,
			   const char *what, GcpPageFn fn, gpointer data,
			   GError **error)
{
	g_autofree char *token = NULL;

	for (guint n = 0; n < GCP_PAGES_MAX; n++) {
		g_autofree char *t = token ? gcp_escape(token) : NULL;
		g_autofree char *page_url = g_strdup_printf(
			"%s%s%s", url, t ? "&pageToken=" : "", t ? t : "");
		g_autoptr(json_object) page = gcp_call(prov, "GET", page_url,
						       NULL, what, error);
		const char *next;

		if (!page || !fn(page, data, error))
			return false;
		next = gcp_json_str(page, "nextPageToken");
		if (!next || !*next)
			return true;
		if (g_strcmp0(next, token) == 0) {
			g_set_error(error, CFS_ERROR, EIO, "%s: the same page "
				    "token twice", what);
			return false;
		}
		g_free(token);
		token = g_strdup(next);
	}
	g_set_error(error, CFS_ERROR, EIO, "%s: more than %d pages", what,
		    GCP_PAGES_MAX);
	return false;
}

/* What the lists found: "zone/name" -> resource, per kind. */
typedef struct {
	const char *kind;	/* "instances" or "disks" */
	const char *zone;	/* a zonal list's zone, or NULL */
	GHashTable *found;	/* char* -> json_object* (owned) */
} GcpInventory;

static void inventory_add(GcpInventory *inv, const char *zone,
			  json_object *res)
{
	const char *name = gcp_json_str(res, "name");

	if (!zone || !name || !*zone || !*name)
		return;
	g_hash_table_replace(inv->found, g_strdup_printf("%s/%s", zone, name),
			     json_object_get(res));
}

static void inventory_add_array(GcpInventory *inv, const char *zone,
				json_object *items)
{
	if (!items || !json_object_is_type(items, json_type_array))
		return;
	for (size_t i = 0; i < json_object_array_length(items); i++)
		inventory_add(inv, zone, json_object_array_get_idx(items, i));
}

static bool inventory_page(json_object *page, gpointer data, GError **error)
{
	GcpInventory *inv = data;
	json_object *items;

	if (!json_object_object_get_ex(page, "items", &items))
		return true;
	if (inv->zone) {
		inventory_add_array(inv, inv->zone, items);
		return true;
	}
	if (!json_object_is_type(items, json_type_object))
		return true;
	json_object_object_foreach(items, scope, list) {
		json_object *arr;

		if (!g_str_has_prefix(scope, "zones/") ||
		    !json_object_object_get_ex(list, inv->kind, &arr))
			continue;
		inventory_add_array(inv, scope + strlen("zones/"), arr);
	}
	return true;
}

static void json_put(gpointer obj)
{
	json_object_put(obj);
}

static GHashTable *gcp_inventory(GcpProvider *prov, const char *project,
				 const char *kind, GError **error)
{
	g_autoptr(GHashTable) found = g_hash_table_new_full(
		g_str_hash, g_str_equal, g_free, json_put);
	g_autofree char *p = gcp_escape(project);
	GcpInventory inv = { kind, NULL, found };

	if (!prov->zones) {
		g_autofree char *url = g_strdup_printf(
			"%s/projects/%s/aggregated/%s?maxResults=500",
			prov->compute_url, p, kind);
		g_autofree char *what = g_strdup_printf(
			"Compute %s.aggregatedList", kind);

		if (!gcp_list_pages(prov, url, what, inventory_page, &inv,
				    error))
			return NULL;
		return g_steal_pointer(&found);
	}
	for (char **z = prov->zones; *z; z++) {
		g_autofree char *ze = gcp_escape(*z);
		g_autofree char *url = g_strdup_printf(
			"%s/projects/%s/zones/%s/%s?maxResults=500",
			prov->compute_url, p, ze, kind);
		g_autofree char *what = g_strdup_printf(
			"Compute %s.list in %s", kind, *z);

		inv.zone = *z;
		if (!gcp_list_pages(prov, url, what, inventory_page, &inv,
				    error))
			return NULL;
	}
	return g_steal_pointer(&found);
}

/* --- folders and files --- */

/* "zone/name" of a disk URL ".../zones/Z/disks/N". Transfer full. */
static char *disk_key(const char *source)
{
	const char *z = source ? strstr(source, "/zones/") : NULL;
	const char *d = z ? strstr(z + 7, "/disks/") : NULL;

	if (!d || strchr(d + 7, '/') || !d[7] || d == z + 7)
		return NULL;
	return g_strdup_printf("%.*s/%s", (int)(d - z - 7), z + 7, d + 7);
}

static void json_add_str(json_object *o, const char *key, const char *value)
{
	json_object_object_add(o, key, value ? json_object_new_string(value) :
					       NULL);
}

static json_object *json_copy_member(json_object *from, const char *key)
{
	json_object *v = NULL;

	if (!json_object_object_get_ex(from, key, &v))
		return NULL;
	return json_object_get(v);
}

/* Files of one disk, one per export format; info about it into @jd. */
static void add_disk_files(GcpProvider *prov, const char *project,
			   CfsVm *vm, guint n, const char *zone,
			   json_object *res, const char *instance,
			   json_object *jd)
{
	const char *name = gcp_json_str(res, "name");
	const char *id = gcp_json_str(res, "id");
	guint64 gb = 0;
	json_object *files = json_object_new_array();
	g_autofree char *base = n ? g_strdup_printf("disk%u", n) :
				    g_strdup("disk");

	json_add_str(jd, "name", name);
	json_add_str(jd, "id", id);
	if (gcp_json_u64(res, "sizeGb", &gb)) {
		json_object_object_add(jd, "size_gb",
				       json_object_new_int64((int64_t)gb));
		json_object_object_add(jd, "size", json_object_new_int64(
			(int64_t)MIN(gb, G_MAXINT64 >> 30) << 30));
	}
	json_add_str(jd, "type", gcp_basename(gcp_json_str(res, "type")));
	json_add_str(jd, "status", gcp_json_str(res, "status"));
	json_add_str(jd, "source_image",
		     gcp_json_str(res, "sourceImage"));
	json_object_object_add(jd, "files", files);
	if (gb == 0 || gb > (GCP_DISK_MAX >> 30)) {
		json_add_str(jd, "note", gb ? "larger than 64 TiB: not shown" :
				   "no sizeGb: not shown");
		return;
	}
	for (char **f = prov->export_formats; *f; f++) {
		const char *ext = gcp_format_ext(*f);
		g_autofree char *file = g_strdup_printf("%s.%s", base, ext);
		CfsDisk *disk = cfs_disk_new(base, ext, CFS_SIZE_UNKNOWN);
		GcpDisk *d = g_new0(GcpDisk, 1);

		d->zone = g_strdup(zone);
		d->name = g_strdup(name);
		d->instance = g_strdup(instance);
		d->format = g_strdup(*f);
		d->size_gb = gb;
		d->in_use = instance != NULL;
		disk->id = g_strdup_printf("gcp %s %s/%s %s %s", project, zone,
					   name, id ? id : "-", ext);
		disk->priv = d;
		disk->priv_free = (GDestroyNotify)gcp_disk_free;
		g_ptr_array_add(vm->disks, disk);
		json_object_array_add(files, json_object_new_string(file));
	}
}

static char *info_text(json_object *o)
{
	return g_strdup_printf("%s\n", json_object_to_json_string_ext(
		o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
}

static json_object *info_new(const char *project, const char *zone)
{
	json_object *o = json_object_new_object();

	json_add_str(o, "provider", "gcp");
	json_add_str(o, "project", project);
	json_add_str(o, "zone", zone);
	json_add_str(o, "source", "an image of the disk exported to Cloud "
		     "Storage by Cloud Build, then ranged GETs (size known "
		     "when the export ends)");
	return o;
}

/* Boot disk first, then by index. */
static gint attached_cmp(gconstpointer a, gconstpointer b)
{
	json_object *x = *(json_object *const *)a;
	json_object *y = *(json_object *const *)b;
	json_object *v;
	bool bx = json_object_object_get_ex(x, "boot", &v) &&
		  json_object_get_boolean(v);
	bool by = json_object_object_get_ex(y, "boot", &v) &&
		  json_object_get_boolean(v);
	guint64 ix = G_MAXUINT64, iy = G_MAXUINT64;

	if (bx != by)
		return bx ? -1 : 1;
	gcp_json_u64(x, "index", &ix);
	gcp_json_u64(y, "index", &iy);
	return ix < iy ? -1 : ix > iy;
}

static CfsVm *instance_vm(GcpProvider *prov, const char *project,
			  const char *zone, json_object *inst,
			  GHashTable *disks)
{
	const char *name = gcp_json_str(inst, "name");
	g_autofree char *z = cfs_name_sanitize(zone);
	g_autofree char *n = cfs_name_sanitize(name);
	g_autofree char *path = g_strdup_printf("%s/%s", z, n);
	CfsVm *vm = cfs_vm_new(path);
	g_autoptr(json_object) o = info_new(project, zone);
	g_autoptr(GPtrArray) attached = g_ptr_array_new();
	json_object *jdisks = json_object_new_array();
	json_object *arr = NULL;
	guint shown = 0;

	vm->mtime = cfs_parse_iso8601(gcp_json_str(inst, "creationTimestamp"));
	json_add_str(o, "name", name);
	json_add_str(o, "id", gcp_json_str(inst, "id"));
	json_add_str(o, "machine_type",
		     gcp_basename(gcp_json_str(inst, "machineType")));
	json_add_str(o, "status", gcp_json_str(inst, "status"));
	json_object_object_add(o, "labels", json_copy_member(inst, "labels"));
	if (json_object_object_get_ex(inst, "disks", &arr) &&
	    json_object_is_type(arr, json_type_array))
		for (size_t i = 0; i < json_object_array_length(arr); i++)
			g_ptr_array_add(attached,
					json_object_array_get_idx(arr, i));
	g_ptr_array_sort(attached, attached_cmp);
	for (guint i = 0; i < attached->len; i++) {
		json_object *ad = attached->pdata[i], *v;
		g_autofree char *key = disk_key(gcp_json_str(ad, "source"));
		json_object *res = key ? g_hash_table_lookup(disks, key) :
					 NULL;
		json_object *jd = json_object_new_object();
		guint before = vm->disks->len;

		json_add_str(jd, "device_name", gcp_json_str(ad, "deviceName"));
		json_object_object_add(jd, "index", json_copy_member(ad,
								     "index"));
		json_object_object_add(jd, "boot",
			json_object_new_boolean(
				json_object_object_get_ex(ad, "boot", &v) &&
				json_object_get_boolean(v)));
		json_add_str(jd, "mode", gcp_json_str(ad, "mode"));
		if (res && key)
			add_disk_files(prov, project, vm, shown, zone, res,
				       name, jd);
		else
			json_add_str(jd, "note", g_strcmp0(gcp_json_str(
				ad, "type"), "SCRATCH") == 0 ?
				"a local SSD cannot be exported" :
				"the disk list did not describe this disk");
		if (vm->disks->len > before)
			shown++;
		json_object_array_add(jdisks, jd);
	}
	json_object_object_add(o, "disks", jdisks);
	vm->info_json = info_text(o);
	return vm;
}

/* A disk attached to no instance: <zone>/_disks/<disk>/. */
static CfsVm *lone_disk_vm(GcpProvider *prov, const char *project,
			   const char *zone, json_object *res)
{
	const char *name = gcp_json_str(res, "name");
	g_autofree char *z = cfs_name_sanitize(zone);
	g_autofree char *n = cfs_name_sanitize(name);
	g_autofree char *path = g_strdup_printf("%s/_disks/%s", z, n);
	CfsVm *vm = cfs_vm_new(path);
	g_autoptr(json_object) o = info_new(project, zone);
	json_object *jdisks = json_object_new_array();
	json_object *jd = json_object_new_object();

	vm->mtime = cfs_parse_iso8601(gcp_json_str(res, "creationTimestamp"));
	json_add_str(o, "name", name);
	json_object_object_add(o, "attached", json_object_new_boolean(false));
	json_object_object_add(o, "labels", json_copy_member(res, "labels"));
	add_disk_files(prov, project, vm, 0, zone, res, NULL, jd);
	json_object_array_add(jdisks, jd);
	json_object_object_add(o, "disks", jdisks);
	vm->info_json = info_text(o);
	return vm;
}

static bool disk_attached(json_object *res)
{
	json_object *users;

	return json_object_object_get_ex(res, "users", &users) &&
	       json_object_is_type(users, json_type_array) &&
	       json_object_array_length(users) > 0;
}

static gint key_cmp(gconstpointer a, gconstpointer b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The keys of @table, sorted: a stable order of folders. */
static GPtrArray *sorted_keys(GHashTable *table)
{
	GPtrArray *keys = g_ptr_array_new();
	GHashTableIter it;
	gpointer key;

	g_hash_table_iter_init(&it, table);
	while (g_hash_table_iter_next(&it, &key, NULL))
		g_ptr_array_add(keys, key);
	g_ptr_array_sort(keys, key_cmp);
	return keys;
}

bool gcp_compute_list(GcpProvider *prov, const char *project, GPtrArray *vms,
		      GError **error)
{
	g_autoptr(GHashTable) instances = NULL, disks = NULL;
	g_autoptr(GPtrArray) keys = NULL;

	instances = gcp_inventory(prov, project, "instances", error);
	if (!instances)
		return false;
	disks = gcp_inventory(prov, project, "disks", error);
	if (!disks)
		return false;
	keys = sorted_keys(instances);
	for (guint i = 0; i < keys->len; i++) {
		const char *key = keys->pdata[i];
		g_autofree char *zone = g_strndup(key, strcspn(key, "/"));

		g_ptr_array_add(vms, instance_vm(prov, project, zone,
			g_hash_table_lookup(instances, key), disks));
	}
	g_clear_pointer(&keys, g_ptr_array_unref);
	keys = sorted_keys(disks);
	for (guint i = 0; i < keys->len; i++) {
		const char *key = keys->pdata[i];
		json_object *res = g_hash_table_lookup(disks, key);
		g_autofree char *zone = g_strndup(key, strcspn(key, "/"));

		if (!disk_attached(res))
			g_ptr_array_add(vms, lone_disk_vm(prov, project, zone,
							  res));
	}
	return true;
}

/* --- temporary images --- */

static json_object *image_body(const char *project, const GcpDisk *d,
			       const char *image)
{
	json_object *body = json_object_new_object();
	json_object *labels = json_object_new_object();
	g_autofree char *source = g_strdup_printf(
		"projects/%s/zones/%s/disks/%s", project, d->zone, d->name);
	g_autofree char *desc = g_strdup_printf(
		"cloudfs: temporary image of %s/%s, deleted once exported",
		d->zone, d->name);

	json_add_str(labels, CFS_OWNER_KEY, cfs_owner_tag());
	json_add_str(labels, GCP_LABEL_TEMPORARY, "true");
	json_add_str(body, "name", image);
	json_add_str(body, "sourceDisk", source);
	json_add_str(body, "description", desc);
	json_object_object_add(body, "labels", labels);
	return body;
}

/* The error of a finished operation, or NULL. Transfer full. */
static char *operation_error(json_object *op)
{
	json_object *err, *errors, *first;
	const char *code, *msg;

	if (!json_object_object_get_ex(op, "error", &err))
		return NULL;
	if (!json_object_object_get_ex(err, "errors", &errors) ||
	    !json_object_is_type(errors, json_type_array) ||
	    json_object_array_length(errors) == 0)
		return g_strdup("failed");
	first = json_object_array_get_idx(errors, 0);
	code = gcp_json_str(first, "code");
	msg = gcp_json_str(first, "message");
	return g_strdup_printf("%s%s%s", code ? code : "error",
			       msg ? ": " : "", msg ? msg : "");
}

/* Poll the global operation @name until it is DONE. */
static bool operation_wait(GcpProvider *prov, const char *project,
			   const char *name, const char *what,
			   CfsExportReport *report, GError **error)
{
	g_autofree char *p = gcp_escape(project);
	g_autofree char *o = gcp_escape(name);
	g_autofree char *url = g_strdup_printf(
		"%s/projects/%s/global/operations/%s", prov->compute_url, p, o);
	CfsPoll poll;

	cfs_poll_init(&poll, report, prov->poll_s, GCP_POLL_MAX_S, 0);
	for (;;) {
		g_autoptr(json_object) op = gcp_call(prov, "GET", url, NULL,
						     what, error);
		g_autofree char *failed = NULL;
		guint64 progress = 0;

		if (!op)
			return false;
		if (g_strcmp0(gcp_json_str(op, "status"), "DONE") == 0) {
			failed = operation_error(op);
			if (!failed)
				return true;
			g_set_error(error, CFS_ERROR, EIO, "%s: %s", what,
				    failed);
			return false;
		}
		gcp_json_u64(op, "progress", &progress);
		cfs_export_report(report, "image", MIN(progress, 99));
		if (!cfs_poll_next(&poll, 0, what, error))
			return false;
	}
}

bool gcp_image_create(GcpProvider *prov, const char *project,
		      const GcpDisk *d, char **image, CfsExportReport *report,
		      GError **error)
{
	g_autofree char *p = gcp_escape(project);
	g_autofree char *url = g_strdup_printf(
		"%s/projects/%s/global/images%s", prov->compute_url, p,
		d->in_use ? "?forceCreate=true" : "");
	g_autofree char *what = NULL;
	g_autoptr(json_object) body = NULL, op = NULL;
	const char *op_name;

	*image = g_strdup_printf("cloudfs-%08x%08x", g_random_int(),
				 g_random_int());
	what = g_strdup_printf("Compute images.insert %s of %s/%s", *image,
			       d->zone, d->name);
	body = image_body(project, d, *image);
	op = gcp_call(prov, "POST", url, body, what, error);
	if (!op) {
		g_clear_pointer(image, g_free);
		return false;
	}
	op_name = gcp_json_str(op, "name");
	if (!op_name || !*op_name) {
		g_set_error(error, CFS_ERROR, EIO, "%s: no operation name",
			    what);
		return false;
	}
	g_message("gcp: image %s of %s/%s: creating", *image, d->zone,
		  d->name);
	if (!operation_wait(prov, project, op_name, what, report, error))
		return false;
	cfs_export_report(report, "image", 100.0);
	return true;
}

void gcp_image_delete(GcpProvider *prov, const char *project,
		      const char *image)
{
	g_autofree char *p = gcp_escape(project);
	g_autofree char *i = gcp_escape(image);
	g_autofree char *url = g_strdup_printf(
		"%s/projects/%s/global/images/%s", prov->compute_url, p, i);
	g_autofree char *what = g_strdup_printf("Compute images.delete %s",
						image);
	g_autoptr(GError) error = NULL;
	g_autoptr(json_object) op = gcp_call(prov, "DELETE", url, NULL, what,
					     &error);

	if (op)
		g_message("gcp: temporary image %s deleted", image);
	else if (error->code == ENOENT)
		g_debug("gcp: image %s is gone already", image);
	else
		g_warning("gcp: could not delete temporary image %s (the next "
			  "mount tries again): %s", image, error->message);
}

/* --- leftovers --- */

typedef struct {
	GcpProvider *prov;
	const char *project;
	bool self;
} GcpSweep;

static bool sweep_images_page(json_object *page, gpointer data,
			      GError **error)
{
	GcpSweep *sw = data;
	json_object *items, *labels;

	if (!json_object_object_get_ex(page, "items", &items) ||
	    !json_object_is_type(items, json_type_array))
		return true;
	for (size_t i = 0; i < json_object_array_length(items); i++) {
		json_object *img = json_object_array_get_idx(items, i);
		const char *name = gcp_json_str(img, "name");
		const char *owner = NULL;

		if (json_object_object_get_ex(img, "labels", &labels))
			owner = gcp_json_str(labels, CFS_OWNER_KEY);
		if (!name || !owner || !cfs_owner_is_stale(owner, sw->self))
			continue;
		g_message("gcp: deleting image %s left behind by an earlier "
			  "cloudfs (%s)", name, owner);
		gcp_image_delete(sw->prov, sw->project, name);
	}
	return true;
}

static bool sweep_objects_page(json_object *page, gpointer data,
			       GError **error)
{
	GcpSweep *sw = data;
	gsize plen = strlen(sw->prov->prefix);
	json_object *items;

	if (!json_object_object_get_ex(page, "items", &items) ||
	    !json_object_is_type(items, json_type_array))
		return true;
	for (size_t i = 0; i < json_object_array_length(items); i++) {
		const char *name = gcp_json_str(
			json_object_array_get_idx(items, i), "name");
		g_autofree char *owner = NULL;
		g_autoptr(GError) local = NULL;

		if (!name || !g_str_has_prefix(name, sw->prov->prefix) ||
		    !strchr(name + plen, '/'))
			continue;
		owner = g_strndup(name + plen, strcspn(name + plen, "/"));
		if (!cfs_owner_is_stale(owner, sw->self))
			continue;
		g_message("gcp: deleting gs://%s/%s left behind by an earlier "
			  "cloudfs", sw->prov->bucket, name);
		if (!gcp_object_delete(sw->prov, name, &local))
			g_warning("gcp: %s", local->message);
	}
	return true;
}

void gcp_sweep(GcpProvider *prov, const char *project, bool self)
{
	GcpSweep sw = { prov, project, self };
	g_autofree char *p = gcp_escape(project);
	g_autofree char *filter = gcp_escape("labels." CFS_OWNER_KEY ":*");
	g_autofree char *images = g_strdup_printf(
		"%s/projects/%s/global/images?maxResults=500&filter=%s",
		prov->compute_url, p, filter);
	g_autofree char *b = gcp_escape(prov->bucket);
	g_autofree char *pre = gcp_escape(prov->prefix);
	g_autofree char *objects = g_strdup_printf("%s/b/%s/o?prefix=%s",
						   prov->storage_url, b, pre);
	g_autoptr(GError) error = NULL;

	if (!gcp_list_pages(prov, images, "Compute images.list",
			    sweep_images_page, &sw, &error)) {
		g_warning("gcp: looking for images left behind: %s",
			  error->message);
		g_clear_error(&error);
	}
	if (prov->keep_exports)
		return;
	if (!gcp_list_pages(prov, objects, "GCS objects.list",
			    sweep_objects_page, &sw, &error))
		g_warning("gcp: looking for exports left behind in gs://%s: "
			  "%s", prov->bucket, error->message);
}
