// SPDX-License-Identifier: MIT
/* The table of provider types, and the small shared inventory types. */
#include <string.h>

#include "common/error.h"
#include "provider.h"

extern const CfsProviderOps cfs_url_provider;
extern const CfsProviderOps cfs_aws_provider;
extern const CfsProviderOps cfs_azure_provider;
extern const CfsProviderOps cfs_vsphere_provider;
extern const CfsProviderOps cfs_gcp_provider;
extern const CfsProviderOps cfs_hyperv_provider;

static const CfsProviderOps *const providers[] = {
	&cfs_url_provider,
	&cfs_aws_provider,
	&cfs_azure_provider,
	&cfs_vsphere_provider,
	&cfs_gcp_provider,
	&cfs_hyperv_provider,
	NULL,
};

const CfsProviderOps *const *cfs_providers_all(void)
{
	return providers;
}

const CfsProviderOps *cfs_provider_find(const char *name)
{
	for (const CfsProviderOps *const *p = providers; *p; p++)
		if (g_str_equal((*p)->name, name))
			return *p;
	return NULL;
}

const CfsProviderOps *cfs_provider_for_section(const char *section,
					       char **folder, GError **error)
{
	g_autofree char *type = g_strdup(section);
	char *space = strchr(type, ' ');
	const char *instance = NULL;
	const CfsProviderOps *ops;

	if (space) {
		*space = '\0';
		instance = g_strstrip(space + 1);
	}
	ops = cfs_provider_find(type);
	if (!ops) {
		g_set_error(error, CFS_ERROR, EINVAL, "unknown section [%s]",
			    section);
		return NULL;
	}
	if (instance && (!*instance ||
			 instance[strspn(instance, "abcdefghijklmnopqrstuvwxyz"
					 "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
					 "0123456789_.-")])) {
		g_set_error(error, CFS_ERROR, EINVAL, "section [%s]: name the "
			    "instance with letters, digits, '.', '_' and '-'",
			    section);
		return NULL;
	}
	*folder = instance ? g_strdup_printf("%s-%s", type, instance) :
			     g_strdup(type);
	return ops;
}

CfsDisk *cfs_disk_new(const char *name, const char *format, guint64 size)
{
	CfsDisk *disk = g_new0(CfsDisk, 1);

	disk->name = g_strdup(name);
	disk->format = g_strdup(format);
	disk->size = size;
	return disk;
}

void cfs_disk_free(CfsDisk *disk)
{
	if (!disk)
		return;
	if (disk->priv_free)
		disk->priv_free(disk->priv);
	g_clear_pointer(&disk->map, cfs_extent_map_unref);
	g_free(disk->name);
	g_free(disk->format);
	g_free(disk->present);
	g_free(disk->id);
	g_free(disk->identity);
	g_free(disk);
}

static void tar_member_free(CfsTarMember *m)
{
	g_free(m->name);
	g_clear_pointer(&m->data, g_bytes_unref);
	g_free(m->format);
	g_free(m);
}

static void vm_file_free(CfsVmFile *file)
{
	g_free(file->name);
	g_clear_pointer(&file->data, g_bytes_unref);
	g_clear_pointer(&file->tar, g_ptr_array_unref);
	g_free(file);
}

CfsVm *cfs_vm_new(const char *path)
{
	CfsVm *vm = g_new0(CfsVm, 1);

	vm->path = g_strdup(path);
	vm->disks = g_ptr_array_new_with_free_func((GDestroyNotify)cfs_disk_free);
	vm->files = g_ptr_array_new_with_free_func((GDestroyNotify)vm_file_free);
	return vm;
}

void cfs_vm_add_file(CfsVm *vm, const char *name, GBytes *data)
{
	CfsVmFile *file = g_new0(CfsVmFile, 1);

	file->name = g_strdup(name);
	file->data = g_bytes_ref(data);
	g_ptr_array_add(vm->files, file);
}

CfsVmFile *cfs_vm_add_tar(CfsVm *vm, const char *name)
{
	CfsVmFile *file = g_new0(CfsVmFile, 1);

	file->name = g_strdup(name);
	file->tar = g_ptr_array_new_with_free_func((GDestroyNotify)tar_member_free);
	g_ptr_array_add(vm->files, file);
	return file;
}

void cfs_vm_file_add_member(CfsVmFile *file, const char *name, GBytes *data,
			    guint disk, const char *format)
{
	CfsTarMember *m = g_new0(CfsTarMember, 1);

	m->name = g_strdup(name);
	m->data = data ? g_bytes_ref(data) : NULL;
	m->disk = disk;
	m->format = g_strdup(format);
	g_ptr_array_add(file->tar, m);
}

void cfs_vm_free(CfsVm *vm)
{
	if (!vm)
		return;
	g_free(vm->path);
	g_free(vm->info_json);
	g_free(vm->error);
	g_ptr_array_unref(vm->disks);
	g_ptr_array_unref(vm->files);
	g_free(vm);
}

CfsSource *cfs_source_new(const CfsSourceOps *ops, gpointer priv)
{
	CfsSource *src = g_new0(CfsSource, 1);

	src->ops = ops;
	src->priv = priv;
	return src;
}

void cfs_source_set_expiry(CfsSource *src, gint64 real_us)
{
	__atomic_store_n(&src->granted, g_get_real_time(), __ATOMIC_RELAXED);
	__atomic_store_n(&src->expires, real_us, __ATOMIC_RELEASE);
}

gint64 cfs_source_expiry(const CfsSource *src)
{
	return __atomic_load_n(&src->expires, __ATOMIC_ACQUIRE);
}

void cfs_source_free(CfsSource *src)
{
	if (!src)
		return;
	g_clear_pointer(&src->map, cfs_extent_map_unref);
	g_clear_pointer(&src->settings, cfs_http_settings_unref);
	g_free(src->identity);
	if (src->ops && src->ops->free)
		src->ops->free(src);
	g_free(src);
}

void cfs_export_report(CfsExportReport *report, const char *phase,
		       double percent)
{
	report->ops->phase(report, phase, percent);
}

bool cfs_export_wait(CfsExportReport *report, double seconds)
{
	return report->ops->wait(report, seconds);
}
