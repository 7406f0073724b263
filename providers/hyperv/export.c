// SPDX-License-Identifier: MIT
/*
 * Exports. A running VM gets a checkpoint named cloudfs-<owner tag>,
 * Export-VMSnapshot copies it (differencing chains merged) into
 * <export_path>\cloudfs-<tag>-<vm>-<disk>, and the checkpoint is removed
 * at once; a VM that is off is exported with Export-VM. The export runs
 * in one Command without -AsJob, so its progress records arrive on stderr
 * while it runs (jobs do not outlive the powershell.exe that made them).
 * The exported file is then read over SMB or from export_mount; the
 * folder is removed when the export ends unless keep_exports. The sweep
 * removes checkpoints and folders whose owner tag is stale, nothing else.
 * Control pool.
 */
#include <string.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "providers/hyperv/hyperv-private.h"

#define EXPORT_DIR "Virtual Hard Disks"
#define SWEEP_SCRIPT_MAX 2500

/* A name made safe as part of a folder name of ours. Transfer full. */
static char *folder_part(const char *s)
{
	char *out = g_strdup(s);

	for (char *p = out; *p; p++)
		if (!g_ascii_isalnum(*p) && *p != '.' && *p != '_')
			*p = '_';
	return out;
}

char *hv_export_folder(HvProvider *prov, const HvDisk *d)
{
	g_autofree char *vm = folder_part(d->vm);

	return g_strdup_printf("%s\\" HV_PREFIX "%s-%s-%s", prov->export_path,
			       cfs_owner_tag(), vm, d->name);
}

static char *checkpoint_name(void)
{
	return g_strdup_printf(HV_PREFIX "%s", cfs_owner_tag());
}

/* Run a short script whose failure is only logged. */
static void hv_ps_quiet(HvProvider *prov, const char *what,
			const char *script)
{
	g_autoptr(GError) error = NULL;
	g_autofree char *out = hv_ps(prov, what, script, prov->list_timeout_s,
				     NULL, NULL, &error);

	if (!out)
		g_warning("hyperv: %s", error->message);
}

static void folder_remove(HvProvider *prov, const char *folder)
{
	g_autofree char *q = hv_ps_quote(folder);
	g_autofree char *script = g_strdup_printf(
		"$ProgressPreference = 'SilentlyContinue'\n"
		"Remove-Item -Path %s -Recurse -Force\n", q);

	hv_ps_quiet(prov, "remove the export folder", script);
}

static bool checkpoint_make(HvProvider *prov, const HvDisk *d,
			    GError **error)
{
	g_autofree char *vm = hv_ps_quote(d->vm);
	g_autofree char *snap = checkpoint_name();
	g_autofree char *qs = hv_ps_quote(snap);
	g_autofree char *script = g_strdup_printf(
		"$ProgressPreference = 'SilentlyContinue'\n"
		"$ErrorActionPreference = 'Stop'\n"
		"Checkpoint-VM -Name %s -SnapshotName %s\n", vm, qs);
	g_autofree char *out = hv_ps(prov, "Checkpoint-VM", script,
				     prov->list_timeout_s, NULL, NULL, error);

	return out != NULL;
}

static void checkpoint_remove(HvProvider *prov, const HvDisk *d)
{
	g_autofree char *vm = hv_ps_quote(d->vm);
	g_autofree char *snap = checkpoint_name();
	g_autofree char *qs = hv_ps_quote(snap);
	g_autofree char *script = g_strdup_printf(
		"$ProgressPreference = 'SilentlyContinue'\n"
		"Remove-VMSnapshot -VMName %s -Name %s\n", vm, qs);

	hv_ps_quiet(prov, "Remove-VMSnapshot", script);
}

typedef struct {
	CfsExportReport *report;
	int percent;
	bool cancelled;
} ExportWatch;

/* Progress records as they arrive; stop at unmount. */
static bool export_progress(gpointer data, const HvRun *run)
{
	ExportWatch *w = data;
	int pct = hv_clixml_percent(run->err->str, run->err->len);

	if (pct > w->percent) {
		w->percent = pct;
		cfs_export_report(w->report, "export", pct);
	}
	if (!cfs_export_wait(w->report, 0)) {
		w->cancelled = true;
		return false;
	}
	return true;
}

/* Export the checkpoint (or the VM that is off) and list what it wrote
 * to "Virtual Hard Disks": the JSON of Get-ChildItem. Transfer full. */
static char *export_run(HvProvider *prov, const HvDisk *d, bool snapshot,
			const char *folder, CfsExportReport *report,
			GError **error)
{
	g_autofree char *vm = hv_ps_quote(d->vm);
	g_autofree char *snap = checkpoint_name();
	g_autofree char *qs = hv_ps_quote(snap);
	g_autofree char *qf = hv_ps_quote(folder);
	g_autofree char *disks = g_strdup_printf("%s\\%s\\" EXPORT_DIR, folder,
						 d->vm);
	g_autofree char *qd = hv_ps_quote(disks);
	g_autofree char *export = snapshot ?
		g_strdup_printf("Export-VMSnapshot -VMName %s -Name %s -Path %s",
				vm, qs, qf) :
		g_strdup_printf("Export-VM -Name %s -Path %s", vm, qf);
	g_autofree char *script = g_strdup_printf(
		"$ErrorActionPreference = 'Stop'\n%s\n"
		"Write-Output '#files'\n"
		"Get-ChildItem -Path %s -File | Select-Object Name,Length | "
		"ConvertTo-Json -Compress\n", export, qd);
	ExportWatch w = { report, -1, false };
	char *out;

	out = hv_ps(prov, snapshot ? "Export-VMSnapshot" : "Export-VM", script,
		    0, export_progress, &w, error);
	if (!out && w.cancelled) {
		g_clear_error(error);
		g_set_error(error, CFS_ERROR, ECANCELED, "export of %s "
			    "cancelled at unmount", d->vm);
	}
	return out;
}

/* The exported file of @d among the files listed in @out. Transfer full. */
static char *export_pick(const HvDisk *d, const char *out, GError **error)
{
	g_autoptr(json_object) files = hv_ps_section(out, "#files", error);
	const char *only = NULL;
	size_t n;

	if (!files)
		return NULL;
	n = json_object_array_length(files);
	for (size_t i = 0; i < n; i++) {
		const char *name = hv_json_str(
			json_object_array_get_idx(files, i), "Name");

		if (name && g_ascii_strcasecmp(name, d->leaf) == 0)
			return g_strdup(name);
		if (name && (g_str_has_suffix(name, ".vhdx") ||
			     g_str_has_suffix(name, ".vhd")))
			only = only ? "" : name;
	}
	/* A single disk file can only be this one. */
	if (only && *only)
		return g_strdup(only);
	g_set_error(error, CFS_ERROR, ENOENT, "the export of %s holds no %s",
		    d->vm, d->leaf);
	return NULL;
}

CfsSource *hv_export_start(HvProvider *prov, CfsDisk *disk,
			   CfsExportReport *report, GError **error)
{
	HvDisk *d = disk->priv;
	g_autofree char *folder = hv_export_folder(prov, d);
	g_autofree char *out = NULL, *file = NULL, *rel = NULL;
	bool snapshot = d->vm_state != 3;	/* not Off */
	CfsSource *src;

	if (prov->keep_exports)
		folder_remove(prov, folder);	/* a kept one of ours */
	hv_vm_lock(prov, d->vm);
	if (snapshot) {
		cfs_export_report(report, "checkpoint", 0);
		if (!checkpoint_make(prov, d, error)) {
			hv_vm_unlock(prov, d->vm);
			return NULL;
		}
	}
	cfs_export_report(report, "export", 0);
	out = export_run(prov, d, snapshot, folder, report, error);
	if (snapshot)
		checkpoint_remove(prov, d);
	hv_vm_unlock(prov, d->vm);
	file = out ? export_pick(d, out, error) : NULL;
	if (!file) {
		folder_remove(prov, folder);
		return NULL;
	}
	cfs_export_report(report, "export", 100);
	rel = g_strdup_printf("%s\\%s\\" EXPORT_DIR "\\%s",
			      folder + strlen(prov->export_path) + 1, d->vm,
			      file);
	src = hv_source_open(prov, rel, error);
	if (!src) {
		if (!prov->keep_exports)
			folder_remove(prov, folder);
		return NULL;
	}
	g_message("hyperv: %s/%s: exported to %s, %" G_GUINT64_FORMAT " bytes",
		  d->vm, disk->name, folder, src->size);
	return src;
}

void hv_export_end(HvProvider *prov, CfsDisk *disk, CfsSource *src)
{
	HvDisk *d = disk->priv;
	g_autofree char *folder = NULL;

	if (!src)
		return;
	/* The host will not delete a file that is still open. */
	hv_source_shut(src);
	if (prov->keep_exports)
		return;
	folder = hv_export_folder(prov, d);
	folder_remove(prov, folder);
	g_message("hyperv: %s/%s: export folder removed", d->vm, disk->name);
}

/* The owner tag in "cloudfs-<tag>" or "cloudfs-<tag>-<vm>-<disk>": the
 * four parts machine-cache-pid-start. Transfer full, or NULL. */
static char *tag_of(const char *name)
{
	g_auto(GStrv) parts = NULL;

	if (!name || !g_str_has_prefix(name, HV_PREFIX))
		return NULL;
	parts = g_strsplit(name + strlen(HV_PREFIX), "-", 5);
	if (g_strv_length(parts) < 4)
		return NULL;
	return g_strdup_printf("%s-%s-%s-%s", parts[0], parts[1], parts[2],
			       parts[3]);
}

static void sweep_flush(HvProvider *prov, GString *script)
{
	if (script->len == 0)
		return;
	g_string_prepend(script, "$ProgressPreference = 'SilentlyContinue'\n");
	g_string_append(script, "Write-Output '#end'\n");
	hv_ps_quiet(prov, "sweep", script->str);
	g_string_truncate(script, 0);
}

static void sweep_add(HvProvider *prov, GString *script, const char *line)
{
	if (script->len + strlen(line) > SWEEP_SCRIPT_MAX)
		sweep_flush(prov, script);
	g_string_append_printf(script, "%s\n", line);
}

void hv_sweep(HvProvider *prov, bool self)
{
	g_autofree char *qp = hv_ps_quote(prov->export_path);
	g_autofree char *script = g_strdup_printf(
		"$ProgressPreference = 'SilentlyContinue'\n"
		"Write-Output '#snapshots'\n"
		"Get-VMSnapshot -VMName * -Name '" HV_PREFIX "*' | "
		"Select-Object VMName,Name | ConvertTo-Json -Compress\n"
		"Write-Output '#folders'\n"
		"Get-ChildItem -Path %s -Filter '" HV_PREFIX "*' | "
		"Select-Object Name | ConvertTo-Json -Compress\n"
		"Write-Output '#end'\n", qp);
	g_autoptr(GError) error = NULL;
	g_autofree char *out = hv_ps(prov, "sweep", script,
				     prov->list_timeout_s, NULL, NULL, &error);
	g_autoptr(GString) todo = g_string_new(NULL);
	static const char *const markers[] = { "#snapshots", "#folders" };

	if (!out) {
		g_warning("hyperv: %s", error->message);
		return;
	}
	for (guint s = 0; s < G_N_ELEMENTS(markers); s++) {
		g_autoptr(json_object) list = hv_ps_section(out, markers[s],
							    NULL);

		for (size_t i = 0; list && i < json_object_array_length(list);
		     i++) {
			json_object *o = json_object_array_get_idx(list, i);
			const char *name = hv_json_str(o, "Name");
			g_autofree char *tag = tag_of(name);
			g_autofree char *qn = NULL, *line = NULL, *qv = NULL;

			if (!tag || !cfs_owner_is_stale(tag, self))
				continue;
			if (s == 1 && prov->keep_exports)
				continue;
			qn = hv_ps_quote(name);
			if (s == 0) {
				qv = hv_ps_quote(hv_json_str(o, "VMName") ?
						 hv_json_str(o, "VMName") : "");
				line = g_strdup_printf("Remove-VMSnapshot "
						       "-VMName %s -Name %s",
						       qv, qn);
			} else {
				g_autofree char *full = g_strdup_printf(
					"%s\\%s", prov->export_path, name);

				g_free(qn);
				qn = hv_ps_quote(full);
				line = g_strdup_printf("Remove-Item -Path %s "
						       "-Recurse -Force", qn);
			}
			g_message("hyperv: removing %s %s left by cloudfs "
				  "(%s)", s == 0 ? "checkpoint" : "folder",
				  name, tag);
			sweep_add(prov, todo, line);
		}
	}
	sweep_flush(prov, todo);
}
