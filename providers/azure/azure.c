// SPDX-License-Identifier: MIT
/*
 * The azure provider: managed disks of Azure VMs as fixed VHD files
 * (MOUNT/azure/<resource-group>/<vm>/disk.vhd, disk1.vhd, … in LUN order;
 * unattached disks under <resource-group>/_disks/<disk>/). Opening a disk
 * snapshots it, asks for a read SAS on the snapshot and reads its page
 * blob lazily (source.c); the snapshot is deleted when the export ends.
 *
 * Config ([azure]), each key also read the way Azure's tools do:
 *   subscription_id  AZURE_SUBSCRIPTION_ID     required
 *   tenant_id        AZURE_TENANT_ID           with a client secret
 *   client_id        AZURE_CLIENT_ID           with a client secret; with
 *                                              a managed identity: the
 *                                              user-assigned one to use
 *   client_secret    AZURE_CLIENT_SECRET       (or client_secret_file)
 *   managed_identity = false   true: tokens from the VM's identity (IMDS)
 *   imds_url         the identity endpoint (setting it implies the above)
 *   authority_host   AZURE_AUTHORITY_HOST      login.microsoftonline.com
 *   management_url   (or resource_manager_url) https://management.azure.com
 *   audience         token audience            https://management.azure.com
 *   resource_groups  rg1;rg2                   default: all of them
 *   keep_snapshots   false
 *   grant_seconds    3600 (durationInSeconds of each SAS grant)
 *   ca_file, insecure, thumbprint, client_cert, client_key
 * Credentials are checked when the mount starts (what can be checked
 * without the network); a refused token shows in MOUNT/azure/.progress.
 */
#include <string.h>

#include "common/error.h"
#include "providers/conf.h"
#include "common/secret.h"
#include "common/util.h"
#include "providers/azure/azure-private.h"

#define AZ_AUTHORITY "https://login.microsoftonline.com"
#define AZ_MANAGEMENT "https://management.azure.com"
#define AZ_IMDS "http://169.254.169.254/metadata/identity/oauth2/token"
#define AZ_GRANT_SECONDS 3600

static void azure_free(CfsProvider *base)
{
	AzProvider *prov = (AzProvider *)base;

	cfs_oauth2_free(prov->oauth);
	g_free(prov->subscription);
	g_free(prov->tenant);
	g_free(prov->client_id);
	cfs_secret_free(prov->client_secret);
	g_free(prov->imds_url);
	g_free(prov->authority);
	g_free(prov->arm);
	g_free(prov->arm_origin);
	g_free(prov->audience);
	g_strfreev(prov->resource_groups);
	cfs_http_settings_unref(prov->settings);
	g_mutex_clear(&prov->lock);
	g_free(prov);
}

/* A base URL without its trailing '/': http or https only. */
static bool conf_url(GKeyFile *conf, const char *section, const char *key,
		     const char *env, const char *fallback, char **out,
		     GError **error)
{
	g_autofree char *v = cfs_conf_or_env(conf, section, key, env);

	if (!v)
		v = g_strdup(fallback);
	if (g_ascii_strncasecmp(v, "https://", 8) != 0 &&
	    g_ascii_strncasecmp(v, "http://", 7) != 0) {
		g_set_error(error, CFS_ERROR, EINVAL, "[%s] %s: an http or "
			    "https URL is needed", section, key);
		return false;
	}
	*out = cfs_url_strip_slash(g_steal_pointer(&v));
	return true;
}

static bool conf_secret(AzProvider *prov, GKeyFile *conf, const char *section,
			GError **error)
{
	g_autofree char *file = cfs_conf_or_env(conf, section, "client_secret_file",
					   NULL);
	char *v = g_key_file_get_string(conf, section, "client_secret", NULL);

	if (v && *v) {
		prov->client_secret = cfs_secret_dup(g_strstrip(v));
		cfs_secret_free(v);
		return true;
	}
	cfs_secret_free(v);
	if (file) {
		prov->client_secret = cfs_secret_read_file(file, error);
		if (!prov->client_secret)
			g_prefix_error(error, "[%s] client_secret_file: ",
				       section);
		return prov->client_secret != NULL;
	}
	prov->client_secret = cfs_secret_dup(g_getenv("AZURE_CLIENT_SECRET"));
	if (prov->client_secret && !*prov->client_secret)
		cfs_secret_clear(&prov->client_secret);
	return true;
}

/* Which credentials: a client secret (tenant and client id needed), or a
 * managed identity that the section asks for. */
static bool conf_credentials(AzProvider *prov, GKeyFile *conf,
			     const char *section, GError **error)
{
	bool managed = false;
	g_autofree char *imds = cfs_conf_or_env(conf, section, "imds_url", NULL);

	prov->tenant = cfs_conf_or_env(conf, section, "tenant_id",
				  "AZURE_TENANT_ID");
	prov->client_id = cfs_conf_or_env(conf, section, "client_id",
				     "AZURE_CLIENT_ID");
	if (!cfs_conf_bool(conf, section, "managed_identity", &managed, error) ||
	    !conf_secret(prov, conf, section, error))
		return false;
	if (prov->client_secret) {
		if (!prov->tenant || !prov->client_id) {
			g_set_error(error, CFS_ERROR, EINVAL, "[%s] %s is "
				    "missing (or set %s)", section,
				    !prov->tenant ? "tenant_id" : "client_id",
				    !prov->tenant ? "AZURE_TENANT_ID" :
						    "AZURE_CLIENT_ID");
			return false;
		}
		return true;
	}
	if (managed || imds)
		return conf_url(conf, section, "imds_url", NULL, AZ_IMDS,
				&prov->imds_url, error);
	g_set_error(error, CFS_ERROR, EINVAL, "[%s] %s is missing (or set %s); "
		    "on an Azure VM, managed_identity = true uses its "
		    "identity instead", section,
		    !prov->tenant ? "tenant_id" :
		    !prov->client_id ? "client_id" : "client_secret",
		    !prov->tenant ? "AZURE_TENANT_ID" :
		    !prov->client_id ? "AZURE_CLIENT_ID" :
				       "AZURE_CLIENT_SECRET");
	return false;
}

static bool conf_grant_seconds(AzProvider *prov, GKeyFile *conf,
			       const char *section, GError **error)
{
	g_autoptr(GError) local = NULL;
	gint64 v;

	prov->grant_seconds = AZ_GRANT_SECONDS;
	if (!g_key_file_has_key(conf, section, "grant_seconds", NULL))
		return true;
	v = g_key_file_get_int64(conf, section, "grant_seconds", &local);
	if (local || v < 1 || v > 7 * 86400) {
		g_set_error(error, CFS_ERROR, EINVAL, "[%s] grant_seconds: a "
			    "number of seconds from 1 to 604800", section);
		return false;
	}
	prov->grant_seconds = (guint)v;
	return true;
}

static bool conf_load(AzProvider *prov, GKeyFile *conf, const char *section,
		      GError **error)
{
	const char *mgmt_key = g_key_file_has_key(conf, section,
						  "management_url", NULL) ?
		"management_url" : "resource_manager_url";
	g_autofree char *groups = cfs_conf_or_env(conf, section, "resource_groups",
					     NULL);
	g_autofree char *host = NULL;

	prov->subscription = cfs_conf_or_env(conf, section, "subscription_id",
					"AZURE_SUBSCRIPTION_ID");
	if (!prov->subscription) {
		g_set_error(error, CFS_ERROR, EINVAL, "[%s] subscription_id is "
			    "missing (or set AZURE_SUBSCRIPTION_ID)", section);
		return false;
	}
	if (!conf_credentials(prov, conf, section, error) ||
	    !conf_url(conf, section, "authority_host", "AZURE_AUTHORITY_HOST",
		      AZ_AUTHORITY, &prov->authority, error) ||
	    !conf_url(conf, section, mgmt_key, NULL, AZ_MANAGEMENT,
		      &prov->arm, error) ||
	    !conf_url(conf, section, "audience", NULL, AZ_MANAGEMENT,
		      &prov->audience, error) ||
	    !cfs_conf_bool(conf, section, "keep_snapshots", &prov->keep_snapshots,
		       error) ||
	    !conf_grant_seconds(prov, conf, section, error))
		return false;
	host = cfs_url_host(prov->arm);
	prov->arm_origin = g_ascii_strdown(prov->arm, (gssize)(
		strstr(prov->arm, "://") + 3 - prov->arm + strlen(host)));
	if (groups) {
		g_auto(GStrv) parts = g_strsplit_set(groups, ";,", -1);
		g_autoptr(GPtrArray) rgs = g_ptr_array_new();

		for (char **p = parts; *p; p++)
			if (*g_strstrip(*p))
				g_ptr_array_add(rgs, g_strdup(*p));
		g_ptr_array_add(rgs, NULL);
		prov->resource_groups = (GStrv)g_ptr_array_free(
			g_steal_pointer(&rgs), FALSE);
	}
	return true;
}

static CfsProvider *azure_create(GKeyFile *conf, const char *section,
				 CfsContext *ctx, GError **error)
{
	AzProvider *prov = g_new0(AzProvider, 1);

	prov->base.ctx = ctx;
	g_mutex_init(&prov->lock);
	prov->settings = cfs_http_settings_new();
	prov->settings->classify = azure_classify;
	if (!cfs_http_settings_load(prov->settings, conf, section, error) ||
	    !conf_load(prov, conf, section, error)) {
		azure_free(&prov->base);
		return NULL;
	}
	if (prov->client_secret)
		g_message("azure: subscription %s, client %s with a secret",
			  prov->subscription, prov->client_id);
	else
		g_message("azure: subscription %s, managed identity%s%s",
			  prov->subscription, prov->client_id ? " " : "",
			  prov->client_id ? prov->client_id : "");
	return &prov->base;
}

static bool azure_list(CfsProvider *base, GPtrArray *vms, GError **error)
{
	return az_list((AzProvider *)base, vms, error);
}

static CfsSource *azure_export_start(CfsProvider *base, CfsDisk *disk,
				     CfsExportReport *report, GError **error)
{
	return az_export_start((AzProvider *)base, disk, report, error);
}

static void azure_export_end(CfsProvider *base, CfsDisk *disk, CfsSource *src)
{
	if (src)
		az_export_end((AzProvider *)base, disk, src);
}

static void azure_cleanup(CfsProvider *base, bool at_unmount)
{
	az_sweep((AzProvider *)base, at_unmount);
}

const CfsProviderOps cfs_azure_provider = {
	.name = "azure",
	.create = azure_create,
	.free = azure_free,
	.list = azure_list,
	.export_start = azure_export_start,
	.export_end = azure_export_end,
	.cleanup = azure_cleanup,
};
