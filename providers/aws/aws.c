// SPDX-License-Identifier: MIT
/*
 * The aws provider: EC2 instances as folders (MOUNT/aws/<instance-id>/),
 * their EBS volumes as disk files (disk.vmdk for the boot volume, then
 * disk1.vmdk, … in device-name order) and info.json.
 *
 * mode = ebs-direct (default): a temporary snapshot per opened volume,
 * read lazily with the EBS direct APIs (ebs.c); the bytes are the raw
 * volume, shown as a streamOptimized VMDK (other views by mount option).
 * mode = export: an EC2 export to S3 (through a temporary image, or an
 * instance export task), then ranged GETs (s3.c, image.c).
 *
 * Config ([aws]): region, regions, profile, mode, s3_bucket, s3_prefix,
 * export_format (vmdk, vhd, raw), export_method (image, instance),
 * endpoint_url (and endpoint_url_ec2, _ebs, _s3, _sts, _sso),
 * keep_snapshots, keep_exports, poll_interval (seconds). Credentials and
 * endpoints also follow the AWS_* variables and the ~/.aws files: see
 * creds.c and chain.c. Credentials are only needed (and only looked
 * for) when listing: a problem with them shows in MOUNT/aws/.progress.
 */
#include <string.h>

#include "common/error.h"
#include "providers/aws/aws-private.h"

static void aws_free(CfsProvider *base)
{
	AwsProvider *prov = (AwsProvider *)base;

	aws_config_clear(prov);
	cfs_http_settings_unref(prov->settings);
	g_mutex_clear(&prov->lock);
	g_free(prov);
}

static CfsProvider *aws_create(GKeyFile *conf, const char *section,
			       CfsContext *ctx, GError **error)
{
	AwsProvider *prov = g_new0(AwsProvider, 1);

	prov->base.ctx = ctx;
	g_mutex_init(&prov->lock);
	prov->settings = cfs_http_settings_new();
	prov->settings->classify = aws_classify;
	if (!cfs_http_settings_load(prov->settings, conf, section, error) ||
	    !aws_config_load(prov, conf, section, error)) {
		aws_free(&prov->base);
		return NULL;
	}
	return &prov->base;
}


static bool aws_list(CfsProvider *base, GPtrArray *vms, GError **error)
{
	AwsProvider *prov = (AwsProvider *)base;
	g_autoptr(CfsAwsCreds) creds = aws_creds_get(prov, NULL, error);
	g_autoptr(GString) failed = g_string_new(NULL);
	g_autoptr(GError) first = NULL;
	guint ok = 0;

	if (!creds)
		return false;
	for (char **r = prov->regions; *r; r++) {
		g_autoptr(GError) local = NULL;

		if (!aws_ec2_list_region(prov, *r, vms, &local)) {
			g_warning("aws: listing %s: %s", *r, local->message);
			g_string_append_printf(failed, "%s%s",
					       failed->len ? ", " : "", *r);
			if (!first)
				first = g_steal_pointer(&local);
			continue;
		}
		ok++;
	}
	if (ok == 0 && first) {
		g_propagate_error(error, g_steal_pointer(&first));
		return false;
	}
	return true;
}

static CfsSource *aws_export_start(CfsProvider *base, CfsDisk *disk,
				   CfsExportReport *report, GError **error)
{
	AwsProvider *prov = (AwsProvider *)base;

	if (prov->mode == AWS_MODE_EXPORT)
		return aws_s3_export_start(prov, disk, report, error);
	return aws_ebs_export_start(prov, disk, report, error);
}

static void aws_export_end(CfsProvider *base, CfsDisk *disk, CfsSource *src)
{
	AwsProvider *prov = (AwsProvider *)base;

	if (!src)
		return;
	if (prov->mode == AWS_MODE_EXPORT)
		aws_s3_export_end(prov, disk, src);
	else
		aws_ebs_export_end(prov, disk, src);
}

/* Temporary images and snapshots a crashed cloudfs of this machine and
 * cache left, in every region listed. */
static void aws_cleanup(CfsProvider *base, bool at_unmount)
{
	AwsProvider *prov = (AwsProvider *)base;
	g_autoptr(GError) error = NULL;
	g_autoptr(CfsAwsCreds) creds = aws_creds_get(prov, NULL, &error);

	if (!creds) {
		g_debug("aws: no cleanup without credentials: %s",
			error->message);
		return;
	}
	for (char **r = prov->regions; *r; r++)
		aws_ec2_sweep(prov, *r, at_unmount);
}

const CfsProviderOps cfs_aws_provider = {
	.name = "aws",
	.create = aws_create,
	.free = aws_free,
	.list = aws_list,
	.export_start = aws_export_start,
	.export_end = aws_export_end,
	.cleanup = aws_cleanup,
};
