// SPDX-License-Identifier: MIT
/*
 * The inventory: Get-VM, Get-VMHardDiskDrive and Get-VMSnapshot in one
 * script, then Get-VHD for the drives' files and, round by round, for
 * the parents of differencing disks. Each VM becomes a folder with its
 * disks in controller order (disk.vhdx, disk1.vhdx, …) and info.json.
 * A VM's CreationTime is selected as a round-trip UTC string, which
 * ConvertTo-Json writes alike in Windows PowerShell 5.1 (which writes a
 * DateTime as "\/Date(ms)\/") and PowerShell 7 (ISO 8601).
 * Control pool.
 */
#include <string.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "providers/hyperv/hyperv-private.h"

#define PARENT_ROUNDS 8		/* differencing chains deeper are cut */
#define SCRIPT_PATHS_MAX 2000	/* bytes of quoted paths per Get-VHD */
#define VMS_MAX 10000
#define TIME_MAX 40		/* "2023-11-14T22:13:20.1234567Z" */

static const char inventory_script[] =
	"$ProgressPreference = 'SilentlyContinue'\n"
	"$ErrorActionPreference = 'Stop'\n"
	"Write-Output '#vms'\n"
	"Get-VM | Select-Object Name,Id,State,Generation,MemoryStartup,"
	"ProcessorCount,@{n='Created';"
	"e={$_.CreationTime.ToUniversalTime().ToString('o')}} | "
	"ConvertTo-Json -Compress\n"
	"Write-Output '#drives'\n"
	"Get-VMHardDiskDrive -VMName * | Select-Object VMName,VMId,"
	"ControllerType,ControllerNumber,ControllerLocation,Path | "
	"ConvertTo-Json -Compress\n"
	"Write-Output '#snapshots'\n"
	"Get-VMSnapshot -VMName * | Select-Object VMName,VMId,Name | "
	"ConvertTo-Json -Compress\n";

void hv_disk_free(HvDisk *d)
{
	if (!d)
		return;
	g_free(d->vm);
	g_free(d->vm_id);
	g_free(d->path);
	g_free(d->leaf);
	g_free(d->name);
	g_free(d);
}

/* Get-VHD for @paths (lower-case path -> NULL, or the entry) that have
 * no entry yet: fills @vhds (lower-case path -> json_object). */
static bool vhds_fill(HvProvider *prov, GHashTable *vhds, GPtrArray *paths,
		      GError **error)
{
	guint i = 0;

	while (i < paths->len) {
		g_autoptr(GString) script = g_string_new(
			"$ProgressPreference = 'SilentlyContinue'\n"
			"Write-Output '#vhds'\nGet-VHD -Path ");
		g_autoptr(json_object) list = NULL;
		g_autofree char *out = NULL;
		gsize start = script->len;

		for (; i < paths->len &&
		       script->len - start < SCRIPT_PATHS_MAX; i++) {
			g_autofree char *q = hv_ps_quote(paths->pdata[i]);

			g_string_append_printf(script, "%s%s",
					       script->len > start ? "," : "",
					       q);
		}
		/* A missing file is not fatal: the last statement decides
		 * the exit code. */
		g_string_append(script, " | Select-Object Path,VhdFormat,"
				"VhdType,Size,FileSize,ParentPath | "
				"ConvertTo-Json -Compress\nWrite-Output '#end'\n");
		out = hv_ps(prov, "Get-VHD", script->str, prov->list_timeout_s,
			    NULL, NULL, error);
		if (!out)
			return false;
		list = hv_ps_section(out, "#vhds", error);
		if (!list)
			return false;
		for (size_t k = 0; k < json_object_array_length(list); k++) {
			json_object *v = json_object_array_get_idx(list, k);
			const char *p = hv_json_str(v, "Path");

			if (p)
				g_hash_table_replace(vhds, g_utf8_strdown(p, -1),
						     json_object_get(v));
		}
	}
	return true;
}

static void json_unref(gpointer o)
{
	json_object_put(o);
}

/* Get-VHD for every drive, then for parents, a bounded number of rounds. */
static GHashTable *vhds_get(HvProvider *prov, json_object *drives,
			    GError **error)
{
	g_autoptr(GHashTable) vhds = g_hash_table_new_full(
		g_str_hash, g_str_equal, g_free,
		json_unref);
	g_autoptr(GPtrArray) want = g_ptr_array_new_with_free_func(g_free);

	for (size_t k = 0; k < json_object_array_length(drives); k++) {
		const char *p = hv_json_str(json_object_array_get_idx(drives, k),
					    "Path");

		if (p && *p)
			g_ptr_array_add(want, g_strdup(p));
	}
	for (guint round = 0; want->len && round < PARENT_ROUNDS; round++) {
		GHashTableIter it;
		gpointer value;

		if (!vhds_fill(prov, vhds, want, error))
			return NULL;
		g_ptr_array_set_size(want, 0);
		g_hash_table_iter_init(&it, vhds);
		while (g_hash_table_iter_next(&it, NULL, &value)) {
			const char *parent = hv_json_str(value, "ParentPath");
			g_autofree char *low = parent ?
				g_utf8_strdown(parent, -1) : NULL;

			if (low && *low && !g_hash_table_contains(vhds, low))
				g_ptr_array_add(want, g_strdup(parent));
		}
	}
	return g_steal_pointer(&vhds);
}

/* GUIDs compare without case and braces. */
static bool hv_same_id(const char *a, const char *b)
{
	g_autofree char *x = a ? g_strdelimit(g_ascii_strdown(a, -1), "{}",
					      ' ') : NULL;
	g_autofree char *y = b ? g_strdelimit(g_ascii_strdown(b, -1), "{}",
					      ' ') : NULL;

	return x && y && g_str_equal(g_strstrip(x), g_strstrip(y));
}

/* Seconds since the epoch of a VM's "Created" (2023-11-14T22:13:20.1234567Z),
 * 0 when missing, malformed, out of range or before 1980 (a DateTime that
 * was never set). */
static gint64 vm_created(json_object *vmj)
{
	const char *t = hv_json_str(vmj, "Created");
	gint64 secs;

	if (!t || strlen(t) > TIME_MAX || !g_str_has_suffix(t, "Z"))
		return 0;
	secs = cfs_parse_iso8601(t);
	return secs >= 315532800 ? secs : 0;
}

static const char *vm_state_name(gint64 state)
{
	static const char *const names[] = {
		[1] = "Other", [2] = "Running", [3] = "Off", [4] = "Stopping",
		[6] = "Saved", [9] = "Paused", [10] = "Starting",
		[11] = "Reset", [32773] = "Saving", [32776] = "Pausing",
		[32777] = "Resuming",
	};

	if (state >= 0 && state < (gint64)G_N_ELEMENTS(names) && names[state])
		return names[state];
	return "Unknown";
}

static const char *vhd_type_name(gint64 t)
{
	return t == 2 ? "Fixed" : t == 3 ? "Dynamic" : t == 4 ? "Differencing" :
								 "Unknown";
}

static const char *vhd_format_name(gint64 f)
{
	return f == 2 ? "VHD" : f == 3 ? "VHDX" : f == 4 ? "VHDSet" : "Unknown";
}

static const char *win_leaf(const char *path)
{
	const char *slash = strrchr(path, '\\');

	return slash ? slash + 1 : path;
}

/* The name an export gives the disk at the end of @chain: the base
 * disk's file name, as .vhd or .vhdx. Transfer full. */
static char *export_leaf(const char *root, bool vhd)
{
	g_autofree char *leaf = g_strdup(win_leaf(root));
	char *dot = strrchr(leaf, '.');

	if (dot)
		*dot = '\0';
	return g_strdup_printf("%s.%s", leaf, vhd ? "vhd" : "vhdx");
}

static gint drive_cmp(gconstpointer a, gconstpointer b)
{
	json_object *x = *(json_object *const *)a;
	json_object *y = *(json_object *const *)b;
	static const char *const keys[] = {
		"ControllerType", "ControllerNumber", "ControllerLocation",
	};

	for (guint i = 0; i < G_N_ELEMENTS(keys); i++) {
		gint64 u = hv_json_int(x, keys[i], 0);
		gint64 v = hv_json_int(y, keys[i], 0);

		if (u != v)
			return u < v ? -1 : 1;
	}
	return 0;
}

static void json_add_str(json_object *o, const char *key, const char *v)
{
	json_object_object_add(o, key, v ? json_object_new_string(v) : NULL);
}

static void json_add_int(json_object *o, const char *key, gint64 v)
{
	json_object_object_add(o, key, json_object_new_int64(v));
}

/* One drive: its info.json entry, and a CfsDisk when it can be read. */
static CfsDisk *drive_disk(HvProvider *prov, json_object *vmj,
			   json_object *drive, GHashTable *vhds, guint n,
			   json_object *jd)
{
	const char *path = hv_json_str(drive, "Path");
	g_autofree char *low = path ? g_utf8_strdown(path, -1) : NULL;
	json_object *vhd = low ? g_hash_table_lookup(vhds, low) : NULL;
	json_object *parents = json_object_new_array();
	const char *root = path;
	gint64 size = hv_json_int(vhd, "Size", -1);
	gint64 fmt = hv_json_int(vhd, "VhdFormat", 0);
	gint64 ctype = hv_json_int(drive, "ControllerType", 0);
	g_autofree char *slot = g_strdup_printf(
		"%s %" G_GINT64_FORMAT ":%" G_GINT64_FORMAT,
		ctype == 0 ? "IDE" : "SCSI",
		hv_json_int(drive, "ControllerNumber", 0),
		hv_json_int(drive, "ControllerLocation", 0));
	g_autofree char *name = n ? g_strdup_printf("disk%u", n) :
				    g_strdup("disk");
	g_autofree char *file = NULL;
	const char *why = NULL;
	CfsDisk *disk;
	HvDisk *d;

	json_add_str(jd, "controller", slot);
	json_add_str(jd, "path", path);
	for (json_object *v = vhd; v && json_object_array_length(parents) <
				       PARENT_ROUNDS;) {
		const char *parent = hv_json_str(v, "ParentPath");
		g_autofree char *pl = parent ? g_utf8_strdown(parent, -1) : NULL;

		if (!parent || !*parent)
			break;
		json_object_array_add(parents, json_object_new_string(parent));
		root = parent;
		v = g_hash_table_lookup(vhds, pl);
	}
	json_object_object_add(jd, "parents", parents);
	if (vhd) {
		json_add_str(jd, "vhd_format", vhd_format_name(fmt));
		json_add_str(jd, "vhd_type",
			     vhd_type_name(hv_json_int(vhd, "VhdType", 0)));
		json_add_int(jd, "size", size);
		json_add_int(jd, "file_size", hv_json_int(vhd, "FileSize", -1));
	}
	if (!path || !*path)
		why = "no virtual hard disk file (a pass-through disk)";
	else if (!vhd)
		why = "Get-VHD did not describe this file";
	else if (size <= 0 || (guint64)size > HV_DISK_MAX)
		why = "size out of range";
	else if (fmt != 2 && fmt != 3)
		why = "not a VHD or VHDX file";
	if (why) {
		json_add_str(jd, "note", why);
		return NULL;
	}
	file = g_strdup_printf("%s.%s", name, fmt == 2 ? "vhd" : "vhdx");
	json_add_str(jd, "file", file);
	json_add_str(jd, "format", fmt == 2 ? "vhd" : "vhdx");
	d = g_new0(HvDisk, 1);
	d->vm = g_strdup(hv_json_str(vmj, "Name"));
	d->vm_id = g_strdup(hv_json_str(vmj, "Id"));
	d->vm_state = (guint)hv_json_int(vmj, "State", 0);
	d->path = g_strdup(path);
	d->leaf = export_leaf(root, fmt == 2);
	d->name = g_strdup(name);
	json_add_str(jd, "export_name", d->leaf);
	/* The file served is the exported container; its size is known
	 * once the export is done. */
	disk = cfs_disk_new(name, fmt == 2 ? "vhd" : "vhdx", CFS_SIZE_UNKNOWN);
	disk->id = g_strdup_printf("hyperv %s %s", d->vm_id, slot);
	disk->priv = d;
	disk->priv_free = (GDestroyNotify)hv_disk_free;
	return disk;
}

static CfsVm *vm_make(HvProvider *prov, json_object *vmj, GPtrArray *drives,
		      json_object *snaps, GHashTable *vhds, GHashTable *names)
{
	const char *vname = hv_json_str(vmj, "Name");
	const char *id = hv_json_str(vmj, "Id");
	g_autofree char *folder = cfs_name_sanitize(vname);
	g_autoptr(json_object) o = json_object_new_object();
	json_object *jdisks = json_object_new_array();
	json_object *jsnaps = json_object_new_array();
	gint64 state = hv_json_int(vmj, "State", 0);
	gint64 created = vm_created(vmj);
	CfsVm *vm;
	guint n = 0;

	if (g_hash_table_contains(names, folder)) {
		/* Hyper-V names need not be unique: the id tells them apart. */
		g_autofree char *alt = g_strdup_printf("%s-%s", folder, id);

		g_free(folder);
		folder = cfs_name_sanitize(alt);
	}
	g_hash_table_add(names, g_strdup(folder));
	vm = cfs_vm_new(folder);
	vm->mtime = created;
	json_add_str(o, "provider", "hyperv");
	json_add_str(o, "name", vname);
	json_add_str(o, "id", id);
	json_add_str(o, "state", vm_state_name(state));
	if (created) {
		g_autoptr(GDateTime) t = g_date_time_new_from_unix_utc(created);
		g_autofree char *iso = g_date_time_format_iso8601(t);

		json_add_str(o, "created", iso);
	} else {
		json_add_str(o, "created", NULL);
	}
	json_add_int(o, "generation", hv_json_int(vmj, "Generation", 0));
	json_add_int(o, "memory_startup", hv_json_int(vmj, "MemoryStartup", 0));
	json_add_int(o, "processor_count",
		     hv_json_int(vmj, "ProcessorCount", 0));
	for (size_t k = 0; k < json_object_array_length(snaps); k++) {
		json_object *s = json_object_array_get_idx(snaps, k);

		if (hv_same_id(hv_json_str(s, "VMId"), id) &&
		    hv_json_str(s, "Name"))
			json_object_array_add(jsnaps, json_object_new_string(
				hv_json_str(s, "Name")));
	}
	json_object_object_add(o, "checkpoints", jsnaps);
	g_ptr_array_sort(drives, drive_cmp);
	for (guint i = 0; i < drives->len; i++) {
		json_object *jd = json_object_new_object();
		CfsDisk *disk = drive_disk(prov, vmj, drives->pdata[i], vhds, n,
					   jd);

		json_object_array_add(jdisks, jd);
		if (disk) {
			g_ptr_array_add(vm->disks, disk);
			n++;
		}
	}
	json_object_object_add(o, "disks", jdisks);
	json_add_str(o, "source", "checkpoint and Export-VMSnapshot (Export-VM "
		     "of a VM that is off) into export_path, then the exported "
		     "file read at any offset over SMB or from export_mount");
	vm->info_json = g_strdup_printf("%s\n", json_object_to_json_string_ext(
		o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
	return vm;
}

bool hv_list(HvProvider *prov, GPtrArray *vms, GError **error)
{
	g_autofree char *out = hv_ps(prov, "inventory", inventory_script,
				     prov->list_timeout_s, NULL, NULL, error);
	g_autoptr(json_object) jvms = NULL, drives = NULL, snaps = NULL;
	g_autoptr(GHashTable) vhds = NULL, names = NULL;

	if (!out)
		return false;
	jvms = hv_ps_section(out, "#vms", error);
	drives = jvms ? hv_ps_section(out, "#drives", error) : NULL;
	snaps = drives ? hv_ps_section(out, "#snapshots", error) : NULL;
	if (!snaps)
		return false;
	if (json_object_array_length(jvms) > VMS_MAX) {
		g_set_error(error, CFS_ERROR, EIO, "inventory: more than %u VMs",
			    VMS_MAX);
		return false;
	}
	vhds = vhds_get(prov, drives, error);
	if (!vhds)
		return false;
	names = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
	for (size_t i = 0; i < json_object_array_length(jvms); i++) {
		json_object *vmj = json_object_array_get_idx(jvms, i);
		const char *id = hv_json_str(vmj, "Id");
		g_autoptr(GPtrArray) mine = g_ptr_array_new();

		if (!id || !hv_json_str(vmj, "Name"))
			continue;
		for (size_t k = 0; k < json_object_array_length(drives); k++) {
			json_object *dj = json_object_array_get_idx(drives, k);

			if (hv_same_id(hv_json_str(dj, "VMId"), id))
				g_ptr_array_add(mine, dj);
		}
		g_ptr_array_add(vms, vm_make(prov, vmj, mine, snaps, vhds,
					     names));
	}
	return true;
}
