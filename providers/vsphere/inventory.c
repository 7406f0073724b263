// SPDX-License-Identifier: MIT
/*
 * The inventory: one ContainerView over the root folder (VMs, folders,
 * datacenters), read with RetrievePropertiesEx and its continuation
 * pages; VMs placed below their datacenter with their folder path, their
 * virtual disks in controller and unit order, info.json, and the OVF and
 * OVA beside the disks.
 */
#include <json-c/json.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "providers/vsphere/vsphere-private.h"

/* Objects per page asked for, and the most pages followed. */
#define VS_PAGE_OBJECTS 500
#define VS_PAGES_MAX 10000
/* Deepest folder nesting followed. */
#define VS_DEPTH_MAX 64

typedef struct {
	char *type;
	char *name;
	char *parent;	/* moref value, or NULL */
	xmlNode *props; /* the ObjectContent (in a kept document) */
} VsObj;

static void obj_free(VsObj *o)
{
	g_free(o->type);
	g_free(o->name);
	g_free(o->parent);
	g_free(o);
}

/* The val of property @name of an ObjectContent, or NULL. */
static xmlNode *prop(const xmlNode *objects, const char *name)
{
	for (xmlNode *p = cfs_xml_child(objects, VS_NS, "propSet"); p;
	     p = cfs_xml_next(p, VS_NS, "propSet")) {
		g_autofree char *n = cfs_xml_path_text(p, VS_NS, "name");

		if (g_strcmp0(n, name) == 0)
			return cfs_xml_child(p, VS_NS, "val");
	}
	return NULL;
}

static char *prop_text(const xmlNode *objects, const char *name)
{
	return cfs_xml_text(prop(objects, name));
}

static int prop_int(const xmlNode *objects, const char *name)
{
	g_autofree char *t = prop_text(objects, name);

	return t && *t ? (int)g_ascii_strtoll(t, NULL, 10) : 0;
}

static void spec_props(GString *s, const char *type, const char *const *paths)
{
	g_string_append(s, "<propSet>");
	vs_add(s, "type", type);
	for (guint i = 0; paths[i]; i++)
		vs_add(s, "pathSet", paths[i]);
	g_string_append(s, "</propSet>");
}

static bool create_view(VsProvider *prov, VsRef *view, GError **error)
{
	g_autoptr(GString) args = g_string_new(NULL);
	g_autoptr(xmlDoc) doc = NULL;
	xmlNode *resp;

	vs_add_ref(args, "container", &prov->content.root_folder);
	vs_add(args, "type", "VirtualMachine");
	vs_add(args, "type", "Folder");
	vs_add(args, "type", "Datacenter");
	vs_add(args, "recursive", "true");
	doc = vs_call(prov, "CreateContainerView", &prov->content.view_manager,
		      args->str, &resp, NULL, error);
	if (!doc)
		return false;
	if (!vs_ref_parse(cfs_xml_child(resp, VS_NS, "returnval"), view)) {
		g_set_error(error, CFS_ERROR, EIO,
			    "CreateContainerView: no "
			    "view in the answer");
		return false;
	}
	return true;
}

static void destroy_view(VsProvider *prov, const VsRef *view)
{
	g_autoptr(GError) error = NULL;
	g_autoptr(xmlDoc) doc = NULL;
	xmlNode *resp;

	doc = vs_call(prov, "DestroyView", view, NULL, &resp, NULL, &error);
	if (!doc)
		g_debug("%s: DestroyView: %s", prov->base.name, error->message);
}

#define VS_VM_PATHS                                                            \
	"name", "parent", "runtime.powerState", "runtime.bootTime",            \
	    "config.template", "config.uuid", "config.guestId",                \
	    "config.guestFullName", "config.hardware.numCPU",                  \
	    "config.hardware.memoryMB", "config.hardware.device",              \
	    "config.changeTrackingEnabled"
static const char *const vm_paths[] = {VS_VM_PATHS, "config.createDate", NULL};
/* A server before vSphere 6.7 has no config.createDate. */
static const char *const vm_paths_undated[] = {VS_VM_PATHS, NULL};
static const char *const named[] = {"name", "parent", NULL};
static const char *const snapshot_paths[] = {"name", "snapshot", NULL};

/* The view's VMs with @vm, and its folders and datacenters with their
 * names and parents when @with_folders. */
static char *retrieve_spec(const VsRef *view, const char *const *vm,
			   bool with_folders)
{
	GString *s = g_string_new("<specSet>");

	spec_props(s, "VirtualMachine", vm);
	if (with_folders) {
		spec_props(s, "Folder", named);
		spec_props(s, "Datacenter", named);
	}
	g_string_append(s, "<objectSet>");
	vs_add_ref(s, "obj", view);
	g_string_append(s, "<skip>true</skip><selectSet xsi:type=\"Traversal"
			   "Spec\"><name>view</name><type>ContainerView</type>"
			   "<path>view</path><skip>false</skip></selectSet>"
			   "</objectSet></specSet>");
	g_string_append_printf(s,
			       "<options><maxObjects>%d</maxObjects>"
			       "</options>",
			       VS_PAGE_OBJECTS);
	return g_string_free(s, FALSE);
}

/* Add the objects of one page; its continuation token in @token. */
static void take_page(xmlNode *rv, GHashTable *objs, char **token)
{
	for (xmlNode *o = cfs_xml_child(rv, VS_NS, "objects"); o;
	     o = cfs_xml_next(o, VS_NS, "objects")) {
		VsRef ref = {0}, parent = {0};
		VsObj *obj;

		if (!vs_ref_parse(cfs_xml_child(o, VS_NS, "obj"), &ref))
			continue;
		obj = g_new0(VsObj, 1);
		obj->type = g_strdup(ref.type);
		obj->name = prop_text(o, "name");
		if (vs_ref_parse(prop(o, "parent"), &parent))
			obj->parent = g_strdup(parent.value);
		obj->props = o;
		vs_ref_clear(&parent);
		g_hash_table_replace(objs, g_steal_pointer(&ref.value), obj);
		vs_ref_clear(&ref);
	}
	*token = cfs_xml_path_text(rv, VS_NS, "token");
	if (*token && !**token)
		g_clear_pointer(token, g_free);
}

/* Every object of the view: moref value -> VsObj; the answers in @docs. */
static bool retrieve_all(VsProvider *prov, const char *spec, GHashTable *objs,
			 GPtrArray *docs, char **fault, GError **error)
{
	g_autoptr(GHashTable) seen =
	    g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
	const VsRef *pc = &prov->content.property_collector;
	g_autofree char *token = NULL;
	xmlNode *resp;
	xmlDoc *doc;

	doc = vs_call(prov, "RetrievePropertiesEx", pc, spec, &resp, fault,
		      error);
	for (guint pages = 1; doc; pages++) {
		g_autoptr(GString) args = g_string_new(NULL);

		g_ptr_array_add(docs, doc);
		g_free(token);
		take_page(cfs_xml_child(resp, VS_NS, "returnval"), objs,
			  &token);
		if (!token)
			return true;
		if (pages >= VS_PAGES_MAX ||
		    !g_hash_table_add(seen, g_strdup(token))) {
			g_set_error(error, CFS_ERROR, EIO,
				    "RetrievePropertiesEx:"
				    " %s",
				    pages >= VS_PAGES_MAX
					? "too many pages"
					: "a page token came twice");
			return false;
		}
		vs_add(args, "token", token);
		doc = vs_call(prov, "ContinueRetrievePropertiesEx", pc,
			      args->str, &resp, NULL, error);
	}
	return false;
}

/* --- devices --- */

typedef struct {
	int key;
	int controller;
	int unit;
	guint64 capacity;
	char *label;
	char *file; /* "[ds] dir/disk1.vmdk" */
	bool thin;
	bool chained;
} VsDev;

static void dev_free(VsDev *d)
{
	g_free(d->label);
	g_free(d->file);
	g_free(d);
}

static int int_of(const xmlNode *n, const char *path, int fallback)
{
	g_autofree char *t = cfs_xml_path_text(n, VS_NS, path);

	return t && *t ? (int)g_ascii_strtoll(t, NULL, 10) : fallback;
}

static gint dev_cmp(gconstpointer a, gconstpointer b)
{
	const VsDev *x = *(VsDev *const *)a, *y = *(VsDev *const *)b;

	if (x->controller != y->controller)
		return x->controller < y->controller ? -1 : 1;
	return x->unit - y->unit;
}

/* The disks of config.hardware.device, in controller and unit order;
 * controllers (key -> "VirtualLsiLogicController 0") into @ctrls. */
static GPtrArray *parse_devices(const xmlNode *devs, GHashTable *ctrls)
{
	GPtrArray *out =
	    g_ptr_array_new_with_free_func((GDestroyNotify)dev_free);

	for (xmlNode *n = cfs_xml_child(devs, VS_NS, "VirtualDevice"); n;
	     n = cfs_xml_next(n, VS_NS, "VirtualDevice")) {
		g_autofree char *type = cfs_xml_xsi_type(n, NULL);
		g_autofree char *kb = NULL, *bytes = NULL, *thin = NULL;
		xmlNode *backing = cfs_xml_child(n, VS_NS, "backing");
		VsDev *d;

		if (type && g_str_has_suffix(type, "Controller") &&
		    cfs_xml_child(n, VS_NS, "busNumber")) {
			g_hash_table_replace(
			    ctrls, GINT_TO_POINTER(int_of(n, "key", -1)),
			    g_strdup_printf("%s%d", type,
					    int_of(n, "busNumber", 0)));
			continue;
		}
		if (g_strcmp0(type, "VirtualDisk") != 0)
			continue;
		d = g_new0(VsDev, 1);
		d->key = int_of(n, "key", -1);
		d->controller = int_of(n, "controllerKey", -1);
		d->unit = int_of(n, "unitNumber", -1);
		bytes = cfs_xml_path_text(n, VS_NS, "capacityInBytes");
		kb = cfs_xml_path_text(n, VS_NS, "capacityInKB");
		d->capacity = bytes && *bytes
				  ? g_ascii_strtoull(bytes, NULL, 10)
			      : kb ? g_ascii_strtoull(kb, NULL, 10) * 1024
				   : 0;
		d->label = cfs_xml_path_text(n, VS_NS, "deviceInfo/label");
		d->file = cfs_xml_path_text(backing, VS_NS, "fileName");
		thin = cfs_xml_path_text(backing, VS_NS, "thinProvisioned");
		d->thin = g_strcmp0(thin, "true") == 0;
		d->chained = cfs_xml_child(backing, VS_NS, "parent") != NULL;
		g_ptr_array_add(out, d);
	}
	g_ptr_array_sort(out, dev_cmp);
	return out;
}

/* "[LocalDS_0] dir/disk1.vmdk" into its datastore and path. */
static bool split_ds_path(const char *file, char **ds, char **path)
{
	const char *close = file ? strchr(file, ']') : NULL;

	if (!file || file[0] != '[' || !close || close == file + 1)
		return false;
	*ds = g_strndup(file + 1, (gsize)(close - file - 1));
	*path = g_strdup(g_strchug((char *)close + 1));
	if (!**path || strstr(*path, "..")) {
		g_clear_pointer(ds, g_free);
		g_clear_pointer(path, g_free);
		return false;
	}
	return true;
}

/* --- VMs --- */

/* A name as one path part: no '/', not "." or "..", not empty. */
static char *sanitize(const char *name)
{
	char *s = g_strdup(name && *name ? name : "_");

	g_strdelimit(s, "/", '_');
	if (g_str_equal(s, ".") || g_str_equal(s, ".."))
		s[0] = '_';
	return s;
}

typedef struct {
	char *dc;      /* datacenter name */
	char *dc_path; /* its inventory path, for dcPath */
	char *folders; /* "Prod/Web" below its VM folder, or "" */
} VsPlace;

static void place_clear(VsPlace *p)
{
	g_free(p->dc);
	g_free(p->dc_path);
	g_free(p->folders);
}

/* Where a VM is: its datacenter and folders, by its parents. */
static bool locate(GHashTable *objs, const VsObj *vm, VsPlace *place)
{
	g_autoptr(GPtrArray) names = g_ptr_array_new();
	g_autoptr(GString) dcp = g_string_new(NULL);
	const VsObj *o = vm, *dc = NULL;
	guint depth = 0;

	for (o = o->parent ? g_hash_table_lookup(objs, o->parent) : NULL;
	     o && depth < VS_DEPTH_MAX; depth++) {
		if (g_str_equal(o->type, "Datacenter")) {
			dc = o;
			break;
		}
		g_ptr_array_add(names, o->name);
		o = o->parent ? g_hash_table_lookup(objs, o->parent) : NULL;
	}
	if (!dc || names->len == 0)
		return false;
	/* The last name is the datacenter's VM folder ("vm"): left out. */
	g_ptr_array_set_size(names, names->len - 1);
	GString *f = g_string_new(NULL);

	for (guint i = names->len; i-- > 0;) {
		g_autofree char *s = sanitize(names->pdata[i]);

		g_string_append_printf(f, "%s%s", f->len ? "/" : "", s);
	}
	place->folders = g_string_free(f, FALSE);
	/* Folders above the datacenter (not the root folder) name it. */
	g_string_append(dcp, dc->name ? dc->name : "");
	o = dc->parent ? g_hash_table_lookup(objs, dc->parent) : NULL;
	for (depth = 0; o && o->parent && depth < VS_DEPTH_MAX; depth++) {
		g_string_prepend(dcp, "/");
		g_string_prepend(dcp, o->name ? o->name : "");
		o = g_hash_table_lookup(objs, o->parent);
	}
	place->dc = g_strdup(dc->name);
	place->dc_path = g_strdup(dcp->str);
	return place->dc != NULL;
}

static bool dc_wanted(VsProvider *prov, const char *dc)
{
	if (!prov->datacenters)
		return true;
	for (char **d = prov->datacenters; *d; d++)
		if (g_str_equal(*d, dc))
			return true;
	return false;
}

static void json_str(json_object *o, const char *key, const char *value)
{
	json_object_object_add(o, key,
			       value ? json_object_new_string(value) : NULL);
}

static void json_take(json_object *o, const char *key, char *value)
{
	json_str(o, key, value);
	g_free(value);
}

/* Whether the datastore can be read over /folder: one ranged GET of one
 * of its files per listing (a 401 or 403 says no). */
static bool datastore_readable(VsProvider *prov, GHashTable *probed,
			       const VsPlace *place, const char *ds,
			       const char *path)
{
	g_autofree char *flat = NULL, *url = NULL;
	g_autoptr(GError) error = NULL;
	gpointer known;
	long status;

	if (g_hash_table_lookup_extended(probed, ds, NULL, &known))
		return GPOINTER_TO_INT(known);
	flat = vs_flat_name(path);
	url = vs_datastore_url(prov, place->dc_path, ds, flat);
	status = vs_datastore_probe(prov, url, NULL, &error);
	known = GINT_TO_POINTER(status != 401 && status != 403);
	if (!known)
		g_message("%s: datastore %s refuses file reads (HTTP %ld): its "
			  "disks are read through NFC exports",
			  prov->base.name, ds, status);
	g_hash_table_replace(probed, g_strdup(ds), known);
	return GPOINTER_TO_INT(known);
}

typedef struct {
	VsProvider *prov;
	GHashTable *objs;
	GHashTable *probed; /* datastore -> readable */
} VsListCtx;

/* A CfsDisk for @dev, or NULL with a note. */
static CfsDisk *make_disk(VsListCtx *lc, const VsObj *vm, const VsRef *ref,
			  const VsPlace *place, bool on, const VsDev *dev,
			  const char *ctrl, guint n, json_object *jd)
{
	VsProvider *prov = lc->prov;
	g_autofree char *ds = NULL, *path = NULL, *name = NULL;
	VsDisk *d;
	CfsDisk *disk;
	bool nfc = prov->mode == VS_MODE_NFC;

	if (!split_ds_path(dev->file, &ds, &path) || !dev->capacity ||
	    dev->capacity > VS_DISK_MAX) {
		json_str(jd, "note",
			 !dev->capacity || dev->capacity > VS_DISK_MAX
			     ? "size is 0 or over 64 TiB"
			     : "not a file on a datastore");
		return NULL;
	}
	if (prov->mode == VS_MODE_AUTO)
		nfc = (dev->chained && !on) ||
		      !datastore_readable(prov, lc->probed, place, ds, path);
	name = n ? g_strdup_printf("disk%u", n) : g_strdup("disk");
	d = g_new0(VsDisk, 1);
	vs_ref_copy(&d->vm, ref);
	d->vm_name = g_strdup(vm->name);
	d->dc_path = g_strdup(place->dc_path);
	d->datastore = g_steal_pointer(&ds);
	d->file = g_steal_pointer(&path);
	d->key = dev->key;
	d->capacity = dev->capacity;
	d->powered_on = on;
	d->nfc = nfc;
	d->chained = dev->chained;
	d->device = g_strdup_printf("%s:%d", ctrl ? ctrl : "", dev->unit);
	d->index = n;
	if (nfc) {
		/* The lease's stream: a streamOptimized VMDK, as it is. */
		disk = cfs_disk_new(name, "vmdk", CFS_SIZE_UNKNOWN);
		disk->id = g_strdup_printf("nfc %s %s %d", prov->authority,
					   ref->value, dev->key);
	} else {
		disk = cfs_disk_new(name, "raw", dev->capacity);
		disk->present = g_strdup("vmdk");
		disk->map = cfs_extent_map_new_full(dev->capacity);
		disk->id =
		    g_strdup_printf("datastore %s [%s] %s", prov->authority,
				    d->datastore, d->file);
	}
	json_str(jd, "source", nfc ? "nfc" : "datastore");
	json_str(
	    jd, "mode",
	    nfc	 ? "NFC export lease (ExportVm): a "
		   "streamOptimized VMDK stream"
	    : on ? "temporary snapshot, then ranged reads of the base disk's "
		   "flat file"
		 : "ranged reads of the flat file");
	disk->priv = d;
	disk->priv_free = (GDestroyNotify)vs_disk_free;
	return disk;
}

/* A datastore disk of a VM with changed block tracking: its map comes
 * with the export (QueryChangedDiskAreas), so its VMDK's size is known
 * then. */
static void disk_track(CfsDisk *disk, json_object *jd)
{
	VsDisk *d = disk->priv;

	if (d->nfc)
		return;
	d->cbt = true;
	g_clear_pointer(&disk->map, cfs_extent_map_unref);
	json_str(jd, "allocation", "changed block tracking");
}

static json_object *disk_json(const VsDev *dev, GHashTable *ctrls)
{
	json_object *jd = json_object_new_object();

	json_str(jd, "label", dev->label);
	json_object_object_add(jd, "key", json_object_new_int(dev->key));
	json_str(jd, "controller",
		 g_hash_table_lookup(ctrls, GINT_TO_POINTER(dev->controller)));
	json_object_object_add(jd, "controller_key",
			       json_object_new_int(dev->controller));
	json_object_object_add(jd, "unit", json_object_new_int(dev->unit));
	json_str(jd, "datastore_path", dev->file);
	json_object_object_add(jd, "capacity",
			       json_object_new_int64((int64_t)dev->capacity));
	json_object_object_add(jd, "thin", json_object_new_boolean(dev->thin));
	json_object_object_add(jd, "snapshot_chain",
			       json_object_new_boolean(dev->chained));
	return jd;
}

/* The VM's time: when it was created where the server says (vSphere 6.7
 * and later), else when it was last powered on; both in info.json. */
static void vm_times(CfsVm *vm, json_object *j, const xmlNode *props)
{
	g_autofree char *created = prop_text(props, "config.createDate");
	g_autofree char *booted = prop_text(props, "runtime.bootTime");

	vm->mtime = cfs_parse_iso8601(created);
	if (!vm->mtime)
		vm->mtime = cfs_parse_iso8601(booted);
	json_str(j, "create_date", created);
	json_str(j, "boot_time", booted);
}

/* The OVF and the OVA of @vm, whose disks are listed. */
static void add_ovf_ova(CfsVm *vm, const char *name, const xmlNode *props)
{
	g_autoptr(GPtrArray) files = g_ptr_array_new_with_free_func(g_free);
	g_autofree char *guest = prop_text(props, "config.guestId");
	g_autofree char *ovf_name = g_strdup_printf("%s.ovf", name);
	g_autofree char *ova_name = g_strdup_printf("%s.ova", name);
	g_autoptr(GBytes) ovf = NULL;
	VsOvfVm ov = {
	    .name = name,
	    .guest = guest,
	    .cpus = (guint)MAX(prop_int(props, "config.hardware.numCPU"), 1),
	    .memory_mb =
		(guint)MAX(prop_int(props, "config.hardware.memoryMB"), 0),
	    .disks = vm->disks,
	    .files = files,
	};
	CfsVmFile *ova;

	for (guint i = 0; i < vm->disks->len; i++)
		g_ptr_array_add(files,
				g_strdup_printf("%s-disk%u.vmdk", name, i + 1));
	ovf = vs_ovf_build(&ov);
	cfs_vm_add_file(vm, ovf_name, ovf);
	ova = cfs_vm_add_tar(vm, ova_name);
	/* The descriptor first, then the disks, as OVA readers expect. */
	cfs_vm_file_add_member(ova, ovf_name, ovf, 0, NULL);
	for (guint i = 0; i < vm->disks->len; i++) {
		CfsDisk *disk = vm->disks->pdata[i];

		cfs_vm_file_add_member(ova, files->pdata[i], NULL, i,
				       disk->present);
	}
}

static CfsVm *make_vm(VsListCtx *lc, const char *moref, const VsObj *o,
		      const VsPlace *place)
{
	VsProvider *prov = lc->prov;
	g_autofree char *name = sanitize(o->name);
	g_autofree char *safe_dc = sanitize(place->dc);
	g_autofree char *path =
	    g_strdup_printf("%s/%s%s%s", safe_dc, place->folders,
			    *place->folders ? "/" : "", name);
	g_autofree char *power = prop_text(o->props, "runtime.powerState");
	g_autofree char *tmpl = prop_text(o->props, "config.template");
	g_autoptr(GHashTable) ctrls =
	    g_hash_table_new_full(NULL, NULL, NULL, g_free);
	g_autoptr(GPtrArray) devs =
	    parse_devices(prop(o->props, "config.hardware.device"), ctrls);
	g_autoptr(json_object) j = json_object_new_object();
	json_object *jdisks = json_object_new_array();
	VsRef ref = {(char *)"VirtualMachine", (char *)moref};
	bool on = g_strcmp0(power, "poweredOn") == 0;
	g_autofree char *tracked =
	    prop_text(o->props, "config.changeTrackingEnabled");
	bool cbt = g_strcmp0(tracked, "true") == 0;
	CfsVm *vm;

	vm = cfs_vm_new(path);
	json_str(j, "provider", "vsphere");
	json_str(j, "name", o->name);
	json_str(j, "moref", moref);
	json_take(j, "uuid", prop_text(o->props, "config.uuid"));
	json_str(j, "power_state", power);
	json_object_object_add(
	    j, "template",
	    json_object_new_boolean(g_strcmp0(tmpl, "true") == 0));
	json_take(j, "guest_id", prop_text(o->props, "config.guestId"));
	json_take(j, "guest", prop_text(o->props, "config.guestFullName"));
	json_object_object_add(
	    j, "cpus",
	    json_object_new_int(prop_int(o->props, "config.hardware.numCPU")));
	json_object_object_add(j, "memory_mb",
			       json_object_new_int(prop_int(
				   o->props, "config.hardware.memoryMB")));
	json_object_object_add(j, "change_tracking",
			       json_object_new_boolean(cbt));
	vm_times(vm, j, o->props);
	json_str(j, "datacenter", place->dc);
	json_str(j, "folder", place->folders);
	json_str(j, "server", prov->authority);
	for (guint i = 0; i < devs->len; i++) {
		VsDev *dev = devs->pdata[i];
		json_object *jd = disk_json(dev, ctrls);
		CfsDisk *disk =
		    make_disk(lc, o, &ref, place, on, dev,
			      g_hash_table_lookup(
				  ctrls, GINT_TO_POINTER(dev->controller)),
			      vm->disks->len, jd);

		if (disk) {
			g_autofree char *file =
			    g_strdup_printf("%s.%s", disk->name, "vmdk");

			if (cbt)
				disk_track(disk, jd);

			json_str(jd, "file", file);
			g_ptr_array_add(vm->disks, disk);
		}
		json_object_array_add(jdisks, jd);
	}
	json_object_object_add(j, "disks", jdisks);
	vm->info_json =
	    g_strdup_printf("%s\n", json_object_to_json_string_ext(
					j, JSON_C_TO_STRING_PRETTY |
					       JSON_C_TO_STRING_NOSLASHESCAPE));
	if (vm->disks->len)
		add_ovf_ova(vm, name, o->props);
	return vm;
}

bool vs_list(VsProvider *prov, GPtrArray *vms, GError **error)
{
	g_autoptr(GHashTable) objs = g_hash_table_new_full(
	    g_str_hash, g_str_equal, g_free, (GDestroyNotify)obj_free);
	g_autoptr(GHashTable) probed =
	    g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
	g_autoptr(GPtrArray) docs =
	    g_ptr_array_new_with_free_func((GDestroyNotify)xmlFreeDoc);
	VsListCtx lc = {prov, objs, probed};
	g_autofree char *spec = NULL, *fault = NULL;
	g_autoptr(GError) local = NULL;
	VsRef view = {0};
	GHashTableIter it;
	gpointer key, value;
	bool ok;

	if (!vs_login(prov, false, 0, error) ||
	    !create_view(prov, &view, error))
		return false;
	spec = retrieve_spec(&view, vm_paths, true);
	ok = retrieve_all(prov, spec, objs, docs, &fault, &local);
	if (!ok && g_strcmp0(fault, "InvalidProperty") == 0) {
		g_debug("%s: %s; listing without config.createDate",
			prov->base.name, local->message);
		g_clear_error(&local);
		g_hash_table_remove_all(objs);
		g_free(spec);
		spec = retrieve_spec(&view, vm_paths_undated, true);
		ok = retrieve_all(prov, spec, objs, docs, NULL, &local);
	}
	if (!ok)
		g_propagate_error(error, g_steal_pointer(&local));
	destroy_view(prov, &view);
	vs_ref_clear(&view);
	if (!ok)
		return false;
	g_hash_table_iter_init(&it, objs);
	while (g_hash_table_iter_next(&it, &key, &value)) {
		VsObj *o = value;
		VsPlace place = {0};

		if (!g_str_equal(o->type, "VirtualMachine") || !o->name)
			continue;
		if (!locate(objs, o, &place)) {
			g_debug("%s: %s is in no datacenter folder (a vApp?)",
				prov->base.name, o->name);
			place_clear(&place);
			continue;
		}
		if (dc_wanted(prov, place.dc))
			g_ptr_array_add(vms, make_vm(&lc, key, o, &place));
		place_clear(&place);
	}
	return true;
}

/* --- the sweep of temporary snapshots --- */

/* Remove the snapshots of one tree named for a stale owner. */
static void sweep_tree(VsProvider *prov, const xmlNode *list, const char *vm,
		       bool at_unmount, guint depth)
{
	for (xmlNode *t = (xmlNode *)list; t && depth < VS_DEPTH_MAX;
	     t = cfs_xml_next(t, VS_NS, (const char *)t->name)) {
		g_autofree char *name = cfs_xml_path_text(t, VS_NS, "name");
		const char *tag =
		    name && g_str_has_prefix(name, VS_SNAPSHOT_PREFIX)
			? name + strlen(VS_SNAPSHOT_PREFIX)
			: NULL;
		VsRef snap = {0};

		sweep_tree(prov, cfs_xml_child(t, VS_NS, "childSnapshotList"),
			   vm, at_unmount, depth + 1);
		if (!tag || !cfs_owner_is_stale(tag, at_unmount) ||
		    !vs_ref_parse(cfs_xml_child(t, VS_NS, "snapshot"), &snap))
			continue;
		g_message("%s: removing snapshot %s of %s left by an earlier "
			  "cloudfs (%s)",
			  prov->base.name, snap.value, vm, tag);
		vs_snapshot_remove(prov, &snap, vm);
		vs_ref_clear(&snap);
	}
}

void vs_snapshot_sweep(VsProvider *prov, bool at_unmount)
{
	g_autoptr(GHashTable) objs = g_hash_table_new_full(
	    g_str_hash, g_str_equal, g_free, (GDestroyNotify)obj_free);
	g_autoptr(GPtrArray) docs =
	    g_ptr_array_new_with_free_func((GDestroyNotify)xmlFreeDoc);
	g_autoptr(GError) error = NULL;
	g_autofree char *spec = NULL;
	VsRef view = {0};
	GHashTableIter it;
	gpointer value;
	bool ok;

	/* The view names the root folder: ServiceContent first. */
	if (!vs_login(prov, false, 0, &error) ||
	    !create_view(prov, &view, &error)) {
		g_warning("%s: looking for snapshots left behind: %s",
			  prov->base.name, error->message);
		return;
	}
	spec = retrieve_spec(&view, snapshot_paths, false);
	ok = retrieve_all(prov, spec, objs, docs, NULL, &error);
	destroy_view(prov, &view);
	vs_ref_clear(&view);
	if (!ok) {
		g_warning("%s: looking for snapshots left behind: %s",
			  prov->base.name, error->message);
		return;
	}
	g_hash_table_iter_init(&it, objs);
	while (g_hash_table_iter_next(&it, NULL, &value)) {
		VsObj *o = value;
		xmlNode *info = prop(o->props, "snapshot");

		sweep_tree(prov, cfs_xml_child(info, VS_NS, "rootSnapshotList"),
			   o->name ? o->name : "?", at_unmount, 0);
	}
}
