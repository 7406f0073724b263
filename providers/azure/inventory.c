// SPDX-License-Identifier: MIT
/*
 * The inventory: resource groups, their VMs (with the instance view for
 * the power state) and managed disks, as VM folders
 * <resource-group>/<vm>/ holding disk.vhd (the OS disk) and disk1.vhd, …
 * (data disks in LUN order), and <resource-group>/_disks/<disk>/ for the
 * disks no VM listed here uses. Listing reads ARM only; no byte moves.
 */
#include <string.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/json.h"
#include "providers/azure/azure-private.h"

#define AZ_UNATTACHED "_disks"

void az_disk_free(AzDisk *d)
{
	if (!d)
		return;
	g_free(d->id);
	g_free(d->rg);
	g_free(d->name);
	g_free(d->location);
	g_free(d);
}

/* What one listing found: disks by lower-case id, VMs with their group. */
typedef struct {
	GHashTable *disks;	/* lower id -> json_object (a reference) */
	GHashTable *used;	/* lower ids some VM uses */
	GPtrArray *vms;		/* json_object references */
} AzInventory;

static void inventory_clear(AzInventory *inv)
{
	g_clear_pointer(&inv->disks, g_hash_table_unref);
	g_clear_pointer(&inv->used, g_hash_table_unref);
	g_clear_pointer(&inv->vms, g_ptr_array_unref);
}

static void json_add_str(json_object *o, const char *key, const char *value)
{
	json_object_object_add(o, key, value ? json_object_new_string(value) :
					       NULL);
}

/* --- listing --- */

static bool list_groups(AzProvider *prov, GPtrArray *names, GError **error)
{
	g_autoptr(GPtrArray) items = g_ptr_array_new_with_free_func(
		cfs_json_unref);
	g_autofree char *url = g_strdup_printf(
		"/subscriptions/%s/resourcegroups?api-version=%s",
		prov->subscription, AZ_API_RESOURCES);

	if (prov->resource_groups) {
		for (char **rg = prov->resource_groups; *rg; rg++)
			g_ptr_array_add(names, g_strdup(*rg));
		return true;
	}
	if (!az_arm_list(prov, url, "ARM list resource groups", items, error))
		return false;
	for (guint i = 0; i < items->len; i++) {
		const char *name = cfs_json_string(items->pdata[i], "name");

		if (name && *name)
			g_ptr_array_add(names, g_strdup(name));
	}
	return true;
}

/* The VMs and disks of one resource group into @inv. */
static bool list_group(AzProvider *prov, const char *rg, AzInventory *inv,
		       GError **error)
{
	g_autofree char *e = az_escape(rg);
	g_autofree char *base = g_strdup_printf(
		"/subscriptions/%s/resourceGroups/%s/providers/"
		"Microsoft.Compute", prov->subscription, e);
	g_autofree char *vms = g_strdup_printf(
		"%s/virtualMachines?api-version=%s&$expand=instanceView",
		base, AZ_API_COMPUTE);
	g_autofree char *disks = g_strdup_printf("%s/disks?api-version=%s",
						 base, AZ_API_DISKS);
	g_autofree char *what_vms = g_strdup_printf("ARM list VMs of %s", rg);
	g_autofree char *what_disks = g_strdup_printf("ARM list disks of %s",
						      rg);
	g_autoptr(GPtrArray) items = g_ptr_array_new_with_free_func(
		cfs_json_unref);

	if (!az_arm_list(prov, disks, what_disks, items, error) ||
	    !az_arm_list(prov, vms, what_vms, inv->vms, error))
		return false;
	for (guint i = 0; i < items->len; i++) {
		const char *id = cfs_json_string(items->pdata[i], "id");

		if (id)
			g_hash_table_replace(inv->disks, g_ascii_strdown(id, -1),
					     json_object_get(items->pdata[i]));
	}
	return true;
}

/* A disk a VM names that its group's list did not have (another group,
 * or deleted meanwhile): ask for it. NULL if it cannot be had. */
static json_object *disk_lookup(AzProvider *prov, AzInventory *inv,
				const char *id)
{
	g_autofree char *key = g_ascii_strdown(id, -1);
	g_autofree char *rg = NULL, *type = NULL, *name = NULL;
	g_autofree char *url = NULL, *erg = NULL, *ename = NULL;
	g_autoptr(GError) error = NULL;
	json_object *d = g_hash_table_lookup(inv->disks, key);
	AzReply reply = { 0 };

	if (d)
		return d;
	if (!az_id_parse(id, &rg, &type, &name) ||
	    g_ascii_strcasecmp(type, "disks"))
		return NULL;
	erg = az_escape(rg);
	ename = az_escape(name);
	url = g_strdup_printf("/subscriptions/%s/resourceGroups/%s/providers/"
			      "Microsoft.Compute/disks/%s?api-version=%s",
			      prov->subscription, erg, ename, AZ_API_DISKS);
	if (!az_arm(prov, "GET", url, NULL, "ARM get disk", &reply, &error)) {
		g_message("azure: disk %s: %s", name, error->message);
		return NULL;
	}
	d = g_steal_pointer(&reply.body);
	az_reply_clear(&reply);
	if (!d)
		return NULL;
	g_hash_table_replace(inv->disks, g_steal_pointer(&key), d);
	return d;
}

/* --- disks --- */

/* The disk's size (diskSizeBytes, else diskSizeGB), checked. */
static bool disk_size(json_object *disk, guint64 *size)
{
	guint64 gb = 0;

	if (!cfs_json_u64(disk, "properties/diskSizeBytes", size)) {
		if (!cfs_json_u64(disk, "properties/diskSizeGB", &gb) ||
		    gb > (AZ_DISK_MAX >> 30))
			return false;
		*size = gb << 30;
	}
	return *size > 0 && *size % 512 == 0 && *size <= AZ_DISK_MAX;
}

/* The entry of @disk (NULL: not found; @ref_id is what the VM says) in
 * info.json's @list and, if it can be read, its file (@file: "disk",
 * "disk1", …). Transfer full. */
static CfsDisk *disk_entry(json_object *disk, const char *ref_id,
			   const char *file, json_object *lun,
			   json_object *list)
{
	json_object *jd = json_object_new_object();
	const char *id = cfs_json_string(disk, "id");
	const char *name = cfs_json_string(disk, "name");
	g_autofree char *rg = NULL, *type = NULL, *idname = NULL;
	g_autofree char *fname = g_strdup_printf("%s.vhd", file);
	guint64 size = 0, gb = 0;
	bool ok = id && name && disk_size(disk, &size) &&
		  az_id_parse(id, &rg, &type, &idname);
	CfsDisk *cd;
	AzDisk *d;

	json_add_str(jd, "file", ok ? fname : NULL);
	json_add_str(jd, "name", name);
	json_add_str(jd, "id", id ? id : ref_id);
	json_object_object_add(jd, "lun", lun ? json_object_get(lun) : NULL);
	json_object_object_add(jd, "size", ok ?
			       json_object_new_int64((int64_t)size) : NULL);
	if (cfs_json_u64(disk, "properties/diskSizeGB", &gb))
		json_object_object_add(jd, "size_gb",
				       json_object_new_int64((int64_t)gb));
	json_add_str(jd, "sku", cfs_json_string(disk, "sku/name"));
	json_add_str(jd, "disk_state",
		     cfs_json_string(disk, "properties/diskState"));
	json_add_str(jd, "os_type", cfs_json_string(disk, "properties/osType"));
	if (!ok)
		json_add_str(jd, "note", disk ? "ARM did not describe this "
			     "disk's size" : "the disk could not be found");
	json_object_array_add(list, jd);
	if (!ok)
		return NULL;
	d = g_new0(AzDisk, 1);
	d->id = g_strdup(id);
	d->rg = g_steal_pointer(&rg);
	d->name = g_strdup(name);
	d->location = g_strdup(cfs_json_string(disk, "location"));
	d->size = size;
	/* The page blob is the fixed VHD: the disk and its footer. */
	cd = cfs_disk_new(file, "vhd", size + AZ_VHD_FOOTER);
	cd->id = g_ascii_strdown(id, -1);
	cd->priv = d;
	cd->priv_free = (GDestroyNotify)az_disk_free;
	return cd;
}

/* --- VMs --- */

/* "running" from the instance view's "PowerState/running". */
static const char *vm_power(json_object *vm)
{
	json_object *st = cfs_json_array(vm, "properties/instanceView/"
					 "statuses");

	for (size_t i = 0; st && i < json_object_array_length(st); i++) {
		const char *code = cfs_json_string(
			json_object_array_get_idx(st, i), "code");

		if (code && g_str_has_prefix(code, "PowerState/"))
			return code + strlen("PowerState/");
	}
	return NULL;
}

static gint lun_cmp(gconstpointer a, gconstpointer b)
{
	json_object *x = *(json_object *const *)a, *y = *(json_object *const *)b;
	guint64 lx = G_MAXUINT64, ly = G_MAXUINT64;

	cfs_json_u64(x, "lun", &lx);
	cfs_json_u64(y, "lun", &ly);
	return lx < ly ? -1 : lx > ly;
}

/* One disk of a VM: its info.json entry and file. */
static void vm_disk(AzProvider *prov, AzInventory *inv, CfsVm *vm,
		    json_object *ref, const char *file, json_object *list)
{
	const char *id = cfs_json_string(ref, "managedDisk/id");
	json_object *lun = cfs_json_get(ref, "lun");
	json_object *disk;
	CfsDisk *cd;

	if (!id) {
		json_object *jd = json_object_new_object();

		json_add_str(jd, "name", cfs_json_string(ref, "name"));
		json_add_str(jd, "note", "not a managed disk: not shown");
		json_object_array_add(list, jd);
		return;
	}
	g_hash_table_add(inv->used, g_ascii_strdown(id, -1));
	disk = disk_lookup(prov, inv, id);
	cd = disk_entry(disk, id, file, lun, list);
	if (cd)
		g_ptr_array_add(vm->disks, cd);
}

static CfsVm *vm_build(AzProvider *prov, AzInventory *inv, json_object *vmj,
		       const char *rg)
{
	const char *name = cfs_json_string(vmj, "name");
	g_autofree char *path = g_strdup_printf("%s/%s", rg, name);
	CfsVm *vm = cfs_vm_new(path);
	g_autoptr(json_object) o = json_object_new_object();
	json_object *list = json_object_new_array();
	json_object *data = cfs_json_array(vmj, "properties/storageProfile/"
					   "dataDisks");
	g_autoptr(GPtrArray) sorted = g_ptr_array_new();
	json_object *os = cfs_json_get(vmj, "properties/storageProfile/"
				       "osDisk");

	json_add_str(o, "provider", "azure");
	json_add_str(o, "subscription_id", prov->subscription);
	json_add_str(o, "resource_group", rg);
	json_add_str(o, "name", name);
	json_add_str(o, "id", cfs_json_string(vmj, "id"));
	json_add_str(o, "vm_id", cfs_json_string(vmj, "properties/vmId"));
	json_add_str(o, "size", cfs_json_string(vmj, "properties/"
						"hardwareProfile/vmSize"));
	json_add_str(o, "location", cfs_json_string(vmj, "location"));
	json_add_str(o, "power_state", vm_power(vmj));
	json_add_str(o, "os_type", cfs_json_string(os, "osType"));
	json_add_str(o, "source", "a temporary snapshot of each disk, read "
		     "through a read-only SAS as a page blob (random "
		     "access; unwritten pages are holes)");
	if (os)
		vm_disk(prov, inv, vm, os, "disk", list);
	for (size_t i = 0; data && i < json_object_array_length(data); i++)
		g_ptr_array_add(sorted, json_object_array_get_idx(data, i));
	g_ptr_array_sort(sorted, lun_cmp);
	for (guint i = 0; i < sorted->len; i++) {
		g_autofree char *file = g_strdup_printf("disk%u", i + 1);

		vm_disk(prov, inv, vm, sorted->pdata[i], file, list);
	}
	json_object_object_add(o, "disks", list);
	vm->info_json = g_strdup_printf("%s\n", json_object_to_json_string_ext(
		o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
	return vm;
}

/* A disk no VM listed here uses: <rg>/_disks/<name>/disk.vhd. */
static CfsVm *unattached_build(AzProvider *prov, json_object *disk)
{
	const char *name = cfs_json_string(disk, "name");
	const char *id = cfs_json_string(disk, "id");
	g_autofree char *rg = NULL, *type = NULL, *idname = NULL;
	g_autofree char *path = NULL;
	g_autoptr(json_object) o = json_object_new_object();
	json_object *list = json_object_new_array();
	CfsVm *vm;
	CfsDisk *cd;

	if (!name || !az_id_parse(id, &rg, &type, &idname))
		return NULL;
	path = g_strdup_printf("%s/%s/%s", rg, AZ_UNATTACHED, name);
	vm = cfs_vm_new(path);
	json_add_str(o, "provider", "azure");
	json_add_str(o, "subscription_id", prov->subscription);
	json_add_str(o, "resource_group", rg);
	json_add_str(o, "name", name);
	json_add_str(o, "id", id);
	json_add_str(o, "managed_by", cfs_json_string(disk, "managedBy"));
	json_add_str(o, "location", cfs_json_string(disk, "location"));
	json_add_str(o, "source", "a temporary snapshot of the disk, read "
		     "through a read-only SAS as a page blob");
	cd = disk_entry(disk, id, "disk", NULL, list);
	if (cd)
		g_ptr_array_add(vm->disks, cd);
	json_object_object_add(o, "disks", list);
	vm->info_json = g_strdup_printf("%s\n", json_object_to_json_string_ext(
		o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
	return vm;
}

static gint disk_cmp(gconstpointer a, gconstpointer b)
{
	const char *x = cfs_json_string(*(json_object *const *)a, "id");
	const char *y = cfs_json_string(*(json_object *const *)b, "id");

	return g_ascii_strcasecmp(x ? x : "", y ? y : "");
}

/* A group that could not be listed: its folder, with the reason. */
static CfsVm *group_failed(const char *rg, const GError *error)
{
	CfsVm *vm = cfs_vm_new(rg);

	vm->error = g_strdup(error->message);
	vm->info_json = g_strdup("{}\n");
	return vm;
}

bool az_list(AzProvider *prov, GPtrArray *vms, GError **error)
{
	g_autoptr(GPtrArray) groups = g_ptr_array_new_with_free_func(g_free);
	g_autoptr(GPtrArray) unused = g_ptr_array_new();
	g_autoptr(GError) first = NULL;
	AzInventory inv = {
		g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
				      cfs_json_unref),
		g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL),
		g_ptr_array_new_with_free_func(cfs_json_unref),
	};
	guint ok = 0;
	GHashTableIter it;
	gpointer key, value;

	if (!list_groups(prov, groups, error)) {
		inventory_clear(&inv);
		return false;
	}
	for (guint g = 0; g < groups->len; g++) {
		const char *rg = groups->pdata[g];
		g_autoptr(GError) local = NULL;
		guint before = inv.vms->len;

		if (!list_group(prov, rg, &inv, &local)) {
			g_warning("azure: listing %s: %s", rg, local->message);
			g_ptr_array_add(vms, group_failed(rg, local));
			if (!first)
				first = g_steal_pointer(&local);
			continue;
		}
		ok++;
		for (guint i = before; i < inv.vms->len; i++) {
			if (cfs_json_string(inv.vms->pdata[i], "name"))
				g_ptr_array_add(vms, vm_build(
					prov, &inv, inv.vms->pdata[i], rg));
		}
	}
	if (ok == 0 && first) {
		g_propagate_error(error, g_steal_pointer(&first));
		inventory_clear(&inv);
		return false;
	}
	g_hash_table_iter_init(&it, inv.disks);
	while (g_hash_table_iter_next(&it, &key, &value))
		if (!g_hash_table_contains(inv.used, key))
			g_ptr_array_add(unused, value);
	g_ptr_array_sort(unused, disk_cmp);
	for (guint i = 0; i < unused->len; i++) {
		CfsVm *vm = unattached_build(prov, unused->pdata[i]);

		if (vm)
			g_ptr_array_add(vms, vm);
	}
	inventory_clear(&inv);
	return true;
}
