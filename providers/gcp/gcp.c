// SPDX-License-Identifier: MIT
/*
 * The gcp provider: Compute Engine instances as folders
 * (MOUNT/gcp/<zone>/<instance>/) with their persistent disks as files
 * (disk.vmdk for the boot disk, then disk1.vmdk, … by index) and
 * info.json; disks attached to no instance under <zone>/_disks/<disk>/.
 * Opening a disk exports an image of it to Cloud Storage through Cloud
 * Build (export.c); the file's extension is the export's format. The
 * mount's formats= adds files that Google exports natively (disk.vhdx,
 * disk.qcow2, disk.vhd, disk.raw), unless export_formats names them.
 *
 * Config ([gcp]): credentials, project, zones, gcs_bucket, gcs_prefix,
 * keep_exports, export_timeout, export_formats (overrides formats=),
 * poll_interval, and the
 * base URLs token_url, compute_url, cloudbuild_url, storage_url,
 * metadata_url; see auth.c for the credentials Google's tools use.
 */
#include "common/error.h"
#include "providers/gcp/gcp-private.h"

static void gcp_free(CfsProvider *base)
{
	GcpProvider *prov = (GcpProvider *)base;

	gcp_config_clear(prov);
	cfs_http_settings_unref(prov->settings);
	g_mutex_clear(&prov->lock);
	g_free(prov);
}

static CfsProvider *gcp_create(GKeyFile *conf, const char *section,
			       CfsContext *ctx, GError **error)
{
	GcpProvider *prov = g_new0(GcpProvider, 1);

	prov->base.ctx = ctx;
	g_mutex_init(&prov->lock);
	prov->settings = cfs_http_settings_new();
	prov->settings->classify = gcp_classify;
	if (!cfs_http_settings_load(prov->settings, conf, section, error) ||
	    !gcp_config_load(prov, conf, section, ctx->formats, error)) {
		gcp_free(&prov->base);
		return NULL;
	}
	return &prov->base;
}

static bool gcp_list(CfsProvider *base, GPtrArray *vms, GError **error)
{
	GcpProvider *prov = (GcpProvider *)base;
	g_autofree char *project = gcp_project(prov, error);

	return project && gcp_compute_list(prov, project, vms, error);
}

static CfsSource *gcp_start(CfsProvider *base, CfsDisk *disk,
			    CfsExportReport *report, GError **error)
{
	return gcp_export_start((GcpProvider *)base, disk, report, error);
}

static void gcp_end(CfsProvider *base, CfsDisk *disk, CfsSource *src)
{
	gcp_export_end((GcpProvider *)base, disk, src);
}

/* Images and objects a crashed cloudfs of this machine and cache left. */
static void gcp_cleanup(CfsProvider *base, bool at_unmount)
{
	GcpProvider *prov = (GcpProvider *)base;
	g_autoptr(GError) error = NULL;
	g_autofree char *project = gcp_project(prov, &error);
	g_autofree char *token = project ? gcp_token(prov, &error) : NULL;

	if (!token) {
		g_debug("gcp: no cleanup without a project and a token: %s",
			error->message);
		return;
	}
	gcp_sweep(prov, project, at_unmount);
}

const CfsProviderOps cfs_gcp_provider = {
	.name = "gcp",
	.create = gcp_create,
	.free = gcp_free,
	.list = gcp_list,
	.export_start = gcp_start,
	.export_end = gcp_end,
	.cleanup = gcp_cleanup,
};
