// SPDX-License-Identifier: MIT
/*
 * The hyperv provider: the VMs of one Hyper-V host as folders
 * (MOUNT/hyperv/<vm>/), their virtual hard disks as disk.vhdx, disk1.vhdx,
 * … in controller order, and info.json. Control goes over WinRM
 * (wsman.c, ps.c); a disk is exported from a checkpoint into a folder of
 * the host (export.c) and the exported file is read over SMB or from a
 * local mount of that folder (smb.c). No disk byte travels over WinRM.
 *
 * Config ([hyperv]): url, username, password or password_file, auth (ntlm
 * or basic), export_path, smb_url or export_mount, smb_username,
 * smb_password or smb_password_file, smb_connections, keep_exports,
 * operation_timeout, and the TLS keys of cfs_http_settings_load().
 */
#include <openssl/provider.h>
#include <string.h>

#include "common/error.h"
#include "providers/conf.h"
#include "common/secret.h"
#include "providers/hyperv/hyperv-private.h"

typedef struct {
	GMutex mutex;
	guint refs;		/* protected by HvProvider.lock */
} HvVmLock;

static void hv_vm_lock_free(HvVmLock *l)
{
	g_mutex_clear(&l->mutex);
	g_free(l);
}

void hv_vm_lock(HvProvider *prov, const char *vm)
{
	HvVmLock *l;

	g_mutex_lock(&prov->lock);
	l = g_hash_table_lookup(prov->vm_locks, vm);
	if (!l) {
		l = g_new0(HvVmLock, 1);
		g_mutex_init(&l->mutex);
		g_hash_table_insert(prov->vm_locks, g_strdup(vm), l);
	}
	l->refs++;
	g_mutex_unlock(&prov->lock);
	g_mutex_lock(&l->mutex);
}

void hv_vm_unlock(HvProvider *prov, const char *vm)
{
	HvVmLock *l;

	g_mutex_lock(&prov->lock);
	l = g_hash_table_lookup(prov->vm_locks, vm);
	g_mutex_unlock(&l->mutex);
	if (--l->refs == 0)
		g_hash_table_remove(prov->vm_locks, vm);
	g_mutex_unlock(&prov->lock);
}

CfsHttpClass hv_classify(const CfsHttpRequest *req)
{
	/* A 500 carries a SOAP fault: the caller reads it. */
	if (req->status == 500)
		return CFS_HTTP_FINAL;
	if (req->status == 401)
		return CFS_HTTP_REAUTH;
	return cfs_http_classify_default(req);
}

/*
 * libcurl's NTLM needs MD4, which OpenSSL 3 keeps in its legacy provider.
 * Loaded with the default provider (loading one explicitly stops the
 * default from loading by itself) while an NTLM instance exists.
 */
static GMutex md4_lock;
static guint md4_users;			/* protected by md4_lock */
static OSSL_PROVIDER *md4_legacy;	/* protected by md4_lock */
static OSSL_PROVIDER *md4_default;	/* protected by md4_lock */

static void hv_unload_md4(void)
{
	g_mutex_lock(&md4_lock);
	if (md4_users && --md4_users == 0) {
		OSSL_PROVIDER_unload(md4_legacy);
		OSSL_PROVIDER_unload(md4_default);
		md4_legacy = md4_default = NULL;
	}
	g_mutex_unlock(&md4_lock);
}

static bool hv_load_md4(GError **error)
{
	bool ok = true;

	g_mutex_lock(&md4_lock);
	if (md4_users == 0) {
		md4_default = OSSL_PROVIDER_load(NULL, "default");
		md4_legacy = OSSL_PROVIDER_load(NULL, "legacy");
		ok = md4_default && md4_legacy;
		if (!ok) {
			if (md4_legacy)
				OSSL_PROVIDER_unload(md4_legacy);
			if (md4_default)
				OSSL_PROVIDER_unload(md4_default);
			md4_legacy = md4_default = NULL;
		}
	}
	if (ok)
		md4_users++;
	g_mutex_unlock(&md4_lock);
	if (!ok)
		g_set_error(error, CFS_ERROR, ENOTSUP, "auth = ntlm needs MD4 "
			    "from OpenSSL's legacy provider, which could not "
			    "be loaded (install it, or use auth = basic)");
	return ok;
}

static void hv_free(CfsProvider *base)
{
	HvProvider *prov = (HvProvider *)base;

	if (prov->settings && prov->settings->auth == CFS_HTTP_AUTH_NTLM)
		hv_unload_md4();
	g_free(prov->url);
	g_free(prov->export_path);
	g_free(prov->smb_url);
	g_free(prov->smb_user);
	cfs_secret_free(prov->smb_password);
	g_free(prov->export_mount);
	cfs_http_settings_unref(prov->settings);
	g_clear_pointer(&prov->vm_locks, g_hash_table_unref);
	g_mutex_clear(&prov->lock);
	g_free(prov);
}

static bool hv_load_auth(HvProvider *prov, GKeyFile *conf,
			 const char *section, GError **error)
{
	CfsHttpSettings *s = prov->settings;
	g_autofree char *auth = cfs_conf_string(conf, section, "auth");

	s->username = cfs_conf_string(conf, section, "username");
	if (!s->username) {
		g_set_error(error, CFS_ERROR, EINVAL, "[%s]: username is "
			    "missing", section);
		return false;
	}
	s->password = cfs_conf_secret(conf, section, "password", "password_file",
				  error);
	if (!s->password) {
		if (error && !*error)
			g_set_error(error, CFS_ERROR, EINVAL, "[%s]: password "
				    "or password_file is missing", section);
		return false;
	}
	if (!auth || g_ascii_strcasecmp(auth, "ntlm") == 0) {
		if (!hv_load_md4(error))
			return false;
		s->auth = CFS_HTTP_AUTH_NTLM;
		return true;
	}
	if (g_ascii_strcasecmp(auth, "basic") == 0) {
		s->auth = CFS_HTTP_AUTH_BASIC;
		return true;
	}
	g_set_error(error, CFS_ERROR, EINVAL, "[%s] auth = %s: use ntlm or "
		    "basic", section, auth);
	return false;
}

/* A local folder of the host: "D:\x", never a UNC path. */
static bool hv_local_path(const char *p)
{
	return g_ascii_isalpha(p[0]) && p[1] == ':' && p[2] == '\\' &&
	       !strchr(p, '\'') && !strstr(p, "..");
}

static bool hv_load_bytes(HvProvider *prov, GKeyFile *conf,
			  const char *section, GError **error)
{
	g_autofree char *ep = cfs_conf_string(conf, section, "export_path");

	if (!ep || !hv_local_path(ep)) {
		g_set_error(error, CFS_ERROR, EINVAL, "[%s]: export_path must be"
			    " a folder of the host such as D:\\cloudfs-exports "
			    "(not a UNC path)", section);
		return false;
	}
	while (strlen(ep) > 3 && g_str_has_suffix(ep, "\\"))
		ep[strlen(ep) - 1] = '\0';
	prov->export_path = g_steal_pointer(&ep);
	prov->smb_url = cfs_conf_string(conf, section, "smb_url");
	prov->export_mount = cfs_conf_string(conf, section, "export_mount");
	if (!prov->smb_url == !prov->export_mount) {
		g_set_error(error, CFS_ERROR, EINVAL, "[%s]: set smb_url or "
			    "export_mount (one of them)", section);
		return false;
	}
	if (prov->export_mount) {
		if (!g_file_test(prov->export_mount, G_FILE_TEST_IS_DIR)) {
			g_set_error(error, CFS_ERROR, ENOENT, "[%s] export_mount "
				    "%s is not a folder", section,
				    prov->export_mount);
			return false;
		}
		return true;
	}
	prov->smb_user = cfs_conf_string(conf, section, "smb_username");
	prov->smb_password = cfs_conf_secret(conf, section, "smb_password",
					 "smb_password_file", error);
	if (error && *error)
		return false;
	if (!prov->smb_user != !prov->smb_password) {
		g_set_error(error, CFS_ERROR, EINVAL, "[%s]: smb_username needs "
			    "smb_password or smb_password_file, and the other "
			    "way round", section);
		return false;
	}
	if (!prov->smb_user) {
		prov->smb_user = g_strdup(prov->settings->username);
		prov->smb_password = cfs_secret_dup(prov->settings->password);
	}
	return hv_smb_check(prov, error);
}

/* An integer key from @min to @max; @value keeps its default when the
 * key is missing. */
static bool hv_load_uint(GKeyFile *conf, const char *section,
			 const char *key, guint min, guint max, guint *value,
			 GError **error)
{
	g_autoptr(GError) local = NULL;
	gint v = g_key_file_get_integer(conf, section, key, &local);

	if (g_error_matches(local, G_KEY_FILE_ERROR,
			    G_KEY_FILE_ERROR_KEY_NOT_FOUND))
		return true;
	if (local || v < (gint)min || v > (gint)max) {
		g_set_error(error, CFS_ERROR, EINVAL, "[%s] %s: a number from "
			    "%u to %u", section, key, min, max);
		return false;
	}
	*value = (guint)v;
	return true;
}

static bool hv_load(HvProvider *prov, GKeyFile *conf, const char *section,
		    GError **error)
{
	prov->url = cfs_conf_string(conf, section, "url");
	if (!prov->url || !g_str_has_prefix(prov->url, "https://")) {
		g_set_error(error, CFS_ERROR, EINVAL, "[%s]: url must be the "
			    "https://host:5986/wsman address of the host",
			    section);
		return false;
	}
	if (!hv_load_auth(prov, conf, section, error) ||
	    !hv_load_bytes(prov, conf, section, error))
		return false;
	prov->keep_exports = g_key_file_get_boolean(conf, section,
						    "keep_exports", NULL);
	prov->op_timeout_s = 20;
	prov->list_timeout_s = 300;
	prov->smb_connections = HV_SMB_CONNECTIONS;
	return hv_load_uint(conf, section, "operation_timeout", 1, 3600,
			    &prov->op_timeout_s, error) &&
	       hv_load_uint(conf, section, "smb_connections", 1,
			    HV_SMB_CONNECTIONS_MAX, &prov->smb_connections,
			    error);
}

static CfsProvider *hv_create(GKeyFile *conf, const char *section,
			      CfsContext *ctx, GError **error)
{
	HvProvider *prov = g_new0(HvProvider, 1);

	prov->base.ctx = ctx;
	g_mutex_init(&prov->lock);
	prov->vm_locks = g_hash_table_new_full(
		g_str_hash, g_str_equal, g_free,
		(GDestroyNotify)hv_vm_lock_free);
	prov->settings = cfs_http_settings_new();
	prov->settings->classify = hv_classify;
	if (!cfs_http_settings_load(prov->settings, conf, section, error) ||
	    !hv_load(prov, conf, section, error)) {
		hv_free(&prov->base);
		return NULL;
	}
	return &prov->base;
}

static bool hv_list_op(CfsProvider *base, GPtrArray *vms, GError **error)
{
	return hv_list((HvProvider *)base, vms, error);
}

static CfsSource *hv_export_start_op(CfsProvider *base, CfsDisk *disk,
				     CfsExportReport *report, GError **error)
{
	return hv_export_start((HvProvider *)base, disk, report, error);
}

static void hv_export_end_op(CfsProvider *base, CfsDisk *disk,
			     CfsSource *src)
{
	hv_export_end((HvProvider *)base, disk, src);
}

static void hv_cleanup(CfsProvider *base, bool at_unmount)
{
	hv_sweep((HvProvider *)base, at_unmount);
}

const CfsProviderOps cfs_hyperv_provider = {
	.name = "hyperv",
	.create = hv_create,
	.free = hv_free,
	.list = hv_list_op,
	.export_start = hv_export_start_op,
	.export_end = hv_export_end_op,
	.cleanup = hv_cleanup,
};
