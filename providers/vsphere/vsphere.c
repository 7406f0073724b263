// SPDX-License-Identifier: MIT
/*
 * The vsphere provider: the VMs of a vCenter or ESXi host as folders
 * (MOUNT/vsphere/<datacenter>/<folder>/<vm>/), their virtual disks as
 * disk.vmdk, disk1.vmdk, … (controller and unit order), and info.json.
 *
 * Config ([vsphere], or [vsphere lab] for a second server), as govc users
 * set it: url (else GOVC_URL, user:password@ in it works), username (else
 * GOVC_USERNAME), password or password_file (else GOVC_PASSWORD),
 * insecure (else GOVC_INSECURE), ca_file (else GOVC_TLS_CA_CERTS),
 * thumbprint (else the URL's host in GOVC_TLS_KNOWN_HOSTS), datacenters
 * (';'-separated, default all), mode (auto, datastore, nfc).
 */
#include <string.h>

#include "common/error.h"
#include "providers/conf.h"
#include "common/secret.h"
#include "providers/vsphere/vsphere-private.h"

void vs_disk_free(VsDisk *d)
{
	if (!d)
		return;
	vs_ref_clear(&d->vm);
	g_free(d->vm_name);
	g_free(d->dc_path);
	g_free(d->datastore);
	g_free(d->file);
	g_free(d->device);
	g_free(d);
}

static void vs_free(CfsProvider *base)
{
	VsProvider *prov = (VsProvider *)base;

	g_free(prov->sdk_url);
	g_free(prov->base_url);
	g_free(prov->authority);
	g_free(prov->username);
	cfs_secret_free(prov->password);
	g_strfreev(prov->datacenters);
	cfs_http_settings_unref(prov->settings);
	vs_ref_clear(&prov->content.property_collector);
	vs_ref_clear(&prov->content.root_folder);
	vs_ref_clear(&prov->content.view_manager);
	vs_ref_clear(&prov->content.session_manager);
	vs_ref_clear(&prov->content.ovf_manager);
	cfs_secret_free(prov->cookie);
	if (prov->leases)
		g_hash_table_unref(prov->leases);
	g_mutex_clear(&prov->login_lock);
	g_mutex_clear(&prov->lock);
	g_mutex_clear(&prov->lease_lock);
	g_free(prov);
}

/* Split "https://user:pass@host:443/sdk" (a scheme and a path are
 * optional, as in GOVC_URL) into the SDK URL, base, authority and user
 * information (decoded; the password a secret). */
static bool parse_url(VsProvider *prov, const char *section, const char *url,
		      char **user, char **password, GError **error)
{
	g_autofree char *full = strstr(url, "://")
				    ? g_strdup(url)
				    : g_strdup_printf("https://%s", url);
	const char *rest = strstr(full, "://") + 3;
	gsize scheme_len = (gsize)(rest - full);
	const char *slash = rest + strcspn(rest, "/?#");
	g_autofree char *hostpart = g_strndup(rest, (gsize)(slash - rest));
	char *at = strrchr(hostpart, '@');
	const char *host = at ? at + 1 : hostpart;

	if (!g_str_has_prefix(full, "https://") &&
	    !g_str_has_prefix(full, "http://")) {
		g_set_error(error, CFS_ERROR, EINVAL,
			    "[%s] url: %s is not an "
			    "http(s) URL",
			    section, url);
		return false;
	}
	if (!*host || strpbrk(host, " \t\r\n")) {
		g_set_error(error, CFS_ERROR, EINVAL,
			    "[%s] url: no host in the "
			    "URL",
			    section);
		return false;
	}
	if (at) {
		char *colon;

		*at = '\0';
		colon = strchr(hostpart, ':');
		if (colon) {
			*colon = '\0';
			*password = g_uri_unescape_string(colon + 1, NULL);
			cfs_secret_wipe(colon + 1, strlen(colon + 1));
		}
		*user = g_uri_unescape_string(hostpart, NULL);
	}
	prov->authority = g_strdup(host);
	prov->base_url = g_strdup_printf("%.*s%s", (int)scheme_len, full, host);
	prov->sdk_url = g_strdup_printf(
	    "%s%s", prov->base_url, *slash == '/' && slash[1] ? slash : "/sdk");
	cfs_secret_wipe(full, strlen(full));
	return true;
}

/* The thumbprint of @host in a govc known_hosts file ("host thumbprint"
 * lines), or NULL. */
static char *known_host(const char *path, const char *host)
{
	g_autofree char *text = NULL;
	g_auto(GStrv) lines = NULL;

	if (!g_file_get_contents(path, &text, NULL, NULL))
		return NULL;
	lines = g_strsplit(text, "\n", -1);
	for (char **l = lines; *l; l++) {
		g_auto(GStrv) f = g_strsplit_set(g_strstrip(*l), " \t", 2);

		if (f[0] && f[1] && g_str_equal(f[0], host))
			return g_strdup(g_strstrip(f[1]));
	}
	return NULL;
}

/* Overlay the GOVC_* TLS variables on a copy of the section, so that
 * cfs_http_settings_load checks them as if they were keys. */
static bool load_tls(VsProvider *prov, GKeyFile *conf, const char *section,
		     GError **error)
{
	g_autoptr(GKeyFile) k = g_key_file_new();
	const char *keys[] = {"insecure", "ca_file", "thumbprint",
			      "client_cert", "client_key"};
	const char *insecure = g_getenv("GOVC_INSECURE");
	const char *ca = g_getenv("GOVC_TLS_CA_CERTS");
	const char *known = g_getenv("GOVC_TLS_KNOWN_HOSTS");

	/* The group exists even when no key is set. */
	g_key_file_set_string(k, "s", "section", section);
	for (guint i = 0; i < G_N_ELEMENTS(keys); i++) {
		g_autofree char *v =
		    g_key_file_get_string(conf, section, keys[i], NULL);

		if (v)
			g_key_file_set_string(k, "s", keys[i], v);
	}
	if (insecure && *insecure &&
	    !g_key_file_has_key(k, "s", "insecure", NULL))
		g_key_file_set_boolean(
		    k, "s", "insecure",
		    g_str_equal(insecure, "1") ||
			!g_ascii_strcasecmp(insecure, "true"));
	if (ca && *ca && !g_key_file_has_key(k, "s", "ca_file", NULL))
		g_key_file_set_string(k, "s", "ca_file", ca);
	if (known && *known &&
	    !g_key_file_has_key(k, "s", "thumbprint", NULL)) {
		g_autofree char *t = known_host(known, prov->authority);

		if (t)
			g_key_file_set_string(k, "s", "thumbprint", t);
	}
	if (cfs_http_settings_load(prov->settings, k, "s", error))
		return true;
	/* Name the real section in the message. */
	if (*error && g_str_has_prefix((*error)->message, "[s]")) {
		g_autofree char *m = g_strdup((*error)->message + 3);

		g_free((*error)->message);
		(*error)->message = g_strdup_printf("[%s]%s", section, m);
	}
	return false;
}

static bool load_mode(VsProvider *prov, GKeyFile *conf, const char *section,
		      GError **error)
{
	g_autofree char *mode =
	    g_key_file_get_string(conf, section, "mode", NULL);

	if (!mode || g_str_equal(g_strstrip(mode), "auto"))
		prov->mode = VS_MODE_AUTO;
	else if (g_str_equal(mode, "datastore"))
		prov->mode = VS_MODE_DATASTORE;
	else if (g_str_equal(mode, "nfc"))
		prov->mode = VS_MODE_NFC;
	else {
		g_set_error(error, CFS_ERROR, EINVAL,
			    "[%s] mode: '%s' is not "
			    "auto, datastore or nfc",
			    section, mode);
		return false;
	}
	return true;
}

static bool load_credentials(VsProvider *prov, GKeyFile *conf,
			     const char *section, char *url_user,
			     char *url_password, GError **error)
{
	g_autofree char *pwfile =
	    g_key_file_get_string(conf, section, "password_file", NULL);
	g_autofree char *user =
	    cfs_conf_or_env(conf, section, "username", "GOVC_USERNAME");
	char *pw = g_key_file_get_string(conf, section, "password", NULL);

	prov->username = user ? g_steal_pointer(&user) : g_strdup(url_user);
	if (pw && *pw) {
		prov->password = pw;
	} else {
		cfs_secret_free(pw);
		if (pwfile) {
			prov->password = cfs_secret_read_file(pwfile, error);
			if (!prov->password) {
				g_prefix_error(error,
					       "[%s] password_file: ", section);
				return false;
			}
		} else if (g_getenv("GOVC_PASSWORD") &&
			   *g_getenv("GOVC_PASSWORD")) {
			prov->password =
			    cfs_secret_dup(g_getenv("GOVC_PASSWORD"));
		} else {
			prov->password = cfs_secret_dup(url_password);
		}
	}
	if (!prov->username || !*prov->username) {
		g_set_error(error, CFS_ERROR, EINVAL,
			    "[%s] username: not set "
			    "(nor GOVC_USERNAME, nor user@ in the URL)",
			    section);
		return false;
	}
	if (!prov->password || !*prov->password) {
		g_set_error(
		    error, CFS_ERROR, EINVAL,
		    "[%s] password: not set "
		    "(nor password_file, GOVC_PASSWORD or user:password@ "
		    "in the URL)",
		    section);
		return false;
	}
	return true;
}

static bool vs_config(VsProvider *prov, GKeyFile *conf, const char *section,
		      GError **error)
{
	g_autofree char *url = cfs_conf_or_env(conf, section, "url", "GOVC_URL");
	g_autofree char *dcs =
	    g_key_file_get_string(conf, section, "datacenters", NULL);
	g_autofree char *url_user = NULL;
	g_autoptr(CfsSecret) url_password = NULL;

	if (!url) {
		g_set_error(error, CFS_ERROR, EINVAL,
			    "[%s] url: not set (nor "
			    "GOVC_URL)",
			    section);
		return false;
	}
	if (!parse_url(prov, section, url, &url_user, &url_password, error))
		return false;
	cfs_secret_wipe(url, strlen(url));
	if (dcs && *g_strstrip(dcs)) {
		prov->datacenters = g_strsplit(dcs, ";", -1);
		for (char **d = prov->datacenters; *d; d++)
			g_strstrip(*d);
	}
	return load_mode(prov, conf, section, error) &&
	       load_tls(prov, conf, section, error) &&
	       load_credentials(prov, conf, section, url_user, url_password,
				error);
}

static CfsProvider *vs_create(GKeyFile *conf, const char *section,
			      CfsContext *ctx, GError **error)
{
	VsProvider *prov = g_new0(VsProvider, 1);

	prov->base.ctx = ctx;
	g_mutex_init(&prov->login_lock);
	g_mutex_init(&prov->lock);
	g_mutex_init(&prov->lease_lock);
	prov->leases =
	    g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
	prov->settings = cfs_http_settings_new();
	prov->settings->classify = vs_classify;
	if (!vs_config(prov, conf, section, error)) {
		vs_free(&prov->base);
		return NULL;
	}
	return &prov->base;
}

static bool vs_list_op(CfsProvider *base, GPtrArray *vms, GError **error)
{
	return vs_list((VsProvider *)base, vms, error);
}

static CfsSource *vs_export_start(CfsProvider *base, CfsDisk *disk,
				  CfsExportReport *report, GError **error)
{
	VsProvider *prov = (VsProvider *)base;
	VsDisk *d = disk->priv;

	if (d->nfc)
		return vs_nfc_export_start(prov, disk, report, error);
	return vs_datastore_export_start(prov, disk, report, error);
}

static void vs_export_end(CfsProvider *base, CfsDisk *disk, CfsSource *src)
{
	VsProvider *prov = (VsProvider *)base;
	VsDisk *d = disk->priv;

	if (!src)
		return;
	if (d->nfc)
		vs_nfc_export_end(prov, disk, src);
	else
		vs_datastore_export_end(prov, disk, src);
}

/* Temporary snapshots a crashed cloudfs of this machine and cache left.
 * Leases of a dead process time out by themselves. */
static void vs_cleanup(CfsProvider *base, bool at_unmount)
{
	vs_snapshot_sweep((VsProvider *)base, at_unmount);
}

const CfsProviderOps cfs_vsphere_provider = {
    .name = "vsphere",
    .create = vs_create,
    .free = vs_free,
    .list = vs_list_op,
    .export_start = vs_export_start,
    .export_end = vs_export_end,
    .cleanup = vs_cleanup,
};
