// SPDX-License-Identifier: MIT
/* The table of provider types, and the small shared inventory types. */
#include "provider.h"

extern const CfsProviderOps cfs_url_provider;
extern const CfsProviderOps cfs_aws_provider;

static const CfsProviderOps *const providers[] = {
	&cfs_url_provider,
	&cfs_aws_provider,
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

CfsVm *cfs_vm_new(const char *path)
{
	CfsVm *vm = g_new0(CfsVm, 1);

	vm->path = g_strdup(path);
	vm->disks = g_ptr_array_new_with_free_func((GDestroyNotify)cfs_disk_free);
	return vm;
}

void cfs_vm_free(CfsVm *vm)
{
	if (!vm)
		return;
	g_free(vm->path);
	g_free(vm->info_json);
	g_free(vm->error);
	g_ptr_array_unref(vm->disks);
	g_free(vm);
}

void cfs_source_free(CfsSource *src)
{
	if (!src)
		return;
	g_clear_pointer(&src->map, cfs_extent_map_unref);
	g_free(src->identity);
	if (src->ops && src->ops->free)
		src->ops->free(src);
	g_free(src);
}
