// SPDX-License-Identifier: MIT
/*
 * The [gcp] section and Google's credentials, found as Google's tools
 * find them: a service-account key file (credentials, else
 * GOOGLE_APPLICATION_CREDENTIALS) signed into a JWT bearer grant, else
 * the metadata server's token (GCE_METADATA_HOST, else
 * metadata.google.internal). The project comes from the section, the
 * key's project_id, GOOGLE_CLOUD_PROJECT, CLOUDSDK_CORE_PROJECT or the
 * metadata server, in that order. The key is checked when the mount
 * starts; tokens are fetched when first needed and cached (oauth2.h).
 */
#include <string.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "providers/conf.h"
#include "common/secret.h"
#include "providers/gcp/gcp-private.h"

#define GCP_TOKEN_URL "https://oauth2.googleapis.com/token"
#define GCP_COMPUTE_URL "https://compute.googleapis.com/compute/v1"
#define GCP_CLOUDBUILD_URL "https://cloudbuild.googleapis.com/v1"
#define GCP_STORAGE_URL "https://storage.googleapis.com/storage/v1"
#define GCP_METADATA_HOST "metadata.google.internal"
#define GCP_METADATA_HEADER "Metadata-Flavor: Google"
#define GCP_PROJECT_MAX 128

static char *env_string(const char *name)
{
	const char *v = g_getenv(name);

	return v && *v ? g_strdup(v) : NULL;
}

static char *key_member(json_object *obj, const char *name)
{
	const char *v = gcp_json_str(obj, name);

	return v && *v ? g_strdup(v) : NULL;
}

/* Parse the key file at @path into @k. Errors name the file and the
 * field, never a secret. */
static bool gcp_key_load(GcpProvider *prov, const char *path,
			 char **project_id, char **token_uri, GError **error)
{
	g_autoptr(CfsSecret) text = cfs_secret_read_file(path, error);
	g_autoptr(json_object) obj = NULL;
	json_object *pk = NULL;
	const char *type;
	EVP_PKEY *key;

	if (!text)
		return false;
	obj = json_tokener_parse(text);
	if (!obj || !json_object_is_type(obj, json_type_object)) {
		g_set_error(error, CFS_ERROR, EINVAL, "credentials %s: not a "
			    "JSON key file", path);
		return false;
	}
	type = gcp_json_str(obj, "type");
	if (g_strcmp0(type, "service_account") != 0) {
		g_set_error(error, CFS_ERROR, EINVAL, "credentials %s: type "
			    "'%s' is not service_account (a service-account "
			    "key file is needed)", path, type ? type : "");
		return false;
	}
	prov->client_email = key_member(obj, "client_email");
	prov->private_key_id = key_member(obj, "private_key_id");
	*token_uri = key_member(obj, "token_uri");
	*project_id = key_member(obj, "project_id");
	if (json_object_object_get_ex(obj, "private_key", &pk) &&
	    json_object_is_type(pk, json_type_string)) {
		prov->private_key = cfs_secret_dup(json_object_get_string(pk));
		cfs_secret_wipe((char *)json_object_get_string(pk),
				json_object_get_string_len(pk));
	}
	if (!prov->client_email || !prov->private_key) {
		g_set_error(error, CFS_ERROR, EINVAL, "credentials %s: no %s",
			    path, prov->client_email ? "private_key" :
						       "client_email");
		return false;
	}
	key = cfs_jwt_load_rsa_key(prov->private_key, error);
	if (!key) {
		g_prefix_error(error, "credentials %s: ", path);
		return false;
	}
	EVP_PKEY_free(key);
	return true;
}

static bool check_url(const char *section, const char *key,
		      const char *url, GError **error)
{
	if (g_str_has_prefix(url, "http://") ||
	    g_str_has_prefix(url, "https://"))
		return true;
	g_set_error(error, CFS_ERROR, EINVAL, "[%s] %s: '%s' is not an "
		    "http:// or https:// URL", section, key, url);
	return false;
}

/* A base URL from @key, else @fallback (copied). */
static bool conf_url(GKeyFile *conf, const char *section, const char *key,
		     const char *fallback, char **out, GError **error)
{
	char *url = cfs_conf_string(conf, section, key);

	*out = cfs_url_strip_slash(url ? url : g_strdup(fallback));
	return check_url(section, key, *out, error);
}

/* "90", "90s", "30m", "4h" in seconds; false if it is none of those. */
static bool parse_duration(const char *s, double *out)
{
	char *end = NULL;
	double v = g_ascii_strtod(s, &end);

	if (end == s || !(v > 0))
		return false;
	if (g_str_equal(end, "h"))
		v *= 3600;
	else if (g_str_equal(end, "m"))
		v *= 60;
	else if (*end && !g_str_equal(end, "s"))
		return false;
	*out = v;
	return true;
}

static GStrv split_list(const char *text)
{
	g_auto(GStrv) parts = g_strsplit_set(text, ";, ", -1);
	g_autoptr(GPtrArray) list = g_ptr_array_new();

	for (char **p = parts; *p; p++)
		if (**p)
			g_ptr_array_add(list, g_strdup(*p));
	g_ptr_array_add(list, NULL);
	return (GStrv)g_ptr_array_free(g_steal_pointer(&list), FALSE);
}

const char *gcp_format_ext(const char *format)
{
	return g_str_equal(format, "vpc") ? "vhd" : format;
}

/* The export tool's -format for a format name, or NULL if it writes no
 * such format. Borrowed. */
static const char *export_format(const char *name)
{
	static const char *const known[] = {
		"vmdk", "vhdx", "vpc", "qcow2", "raw", NULL,
	};

	if (g_str_equal(name, "vhd"))
		return "vpc";
	return g_strv_contains(known, name) ? name : NULL;
}

/* What formats= asks for, as exports: vmdk first (disk.vmdk), then each
 * format Google's export writes, in the mount's order. The engine shows
 * these files instead of its views of the same names; a format the
 * export cannot write stays a view of disk.vmdk. */
static GStrv mount_export_formats(const char *const *views)
{
	g_autoptr(GPtrArray) list = g_ptr_array_new();

	g_ptr_array_add(list, g_strdup("vmdk"));
	for (const char *const *v = views; v && *v; v++) {
		const char *f = export_format(*v);

		if (f && !g_ptr_array_find_with_equal_func(list, f, g_str_equal,
							   NULL))
			g_ptr_array_add(list, g_strdup(f));
	}
	g_ptr_array_add(list, NULL);
	return (GStrv)g_ptr_array_free(g_steal_pointer(&list), FALSE);
}

/* export_formats, if set, says which formats are exported (one file and
 * one export each); else the mount's formats= does. */
static bool load_formats(GcpProvider *prov, GKeyFile *conf,
			 const char *section, const char *const *views,
			 GError **error)
{
	g_autofree char *text = cfs_conf_string(conf, section, "export_formats");

	if (!text) {
		prov->export_formats = mount_export_formats(views);
		return true;
	}
	prov->export_formats = split_list(text);
	if (!prov->export_formats[0]) {
		g_set_error(error, CFS_ERROR, EINVAL, "[%s] export_formats: "
			    "empty", section);
		return false;
	}
	for (char **f = prov->export_formats; *f; f++) {
		const char *known = export_format(*f);

		if (!known) {
			g_set_error(error, CFS_ERROR, EINVAL, "[%s] "
				    "export_formats: '%s' is not vmdk, vhdx, "
				    "vhd, qcow2 or raw", section, *f);
			return false;
		}
		if (known != *f) {
			g_free(*f);
			*f = g_strdup(known);
		}
	}
	return true;
}

static bool bucket_ok(const char *b)
{
	gsize n = strlen(b);

	if (n < 3 || n > 222 || !g_ascii_isalnum(b[0]))
		return false;
	for (const char *p = b; *p; p++)
		if (!g_ascii_islower(*p) && !g_ascii_isdigit(*p) &&
		    !strchr("-_.", *p))
			return false;
	return true;
}

static bool load_export(GcpProvider *prov, GKeyFile *conf,
			const char *section, const char *const *views,
			GError **error)
{
	g_autofree char *timeout = cfs_conf_string(conf, section,
					       "export_timeout");
	g_autofree char *poll = cfs_conf_string(conf, section, "poll_interval");

	prov->bucket = cfs_conf_string(conf, section, "gcs_bucket");
	if (!prov->bucket || !bucket_ok(prov->bucket)) {
		g_set_error(error, CFS_ERROR, EINVAL, "[%s] gcs_bucket: %s",
			    section, prov->bucket ? "not a bucket name" :
			    "missing (the bucket disks are exported to)");
		return false;
	}
	prov->prefix = g_key_file_get_string(conf, section, "gcs_prefix",
					     NULL);
	if (!prov->prefix)
		prov->prefix = g_strdup("cloudfs/");
	g_strstrip(prov->prefix);
	if (timeout && !parse_duration(timeout, &prov->export_timeout_s)) {
		g_set_error(error, CFS_ERROR, EINVAL, "[%s] export_timeout: "
			    "'%s' is not a duration (90s, 30m, 4h)", section,
			    timeout);
		return false;
	}
	prov->poll_s = poll ? g_ascii_strtod(poll, NULL) : 2.0;
	if (!(prov->poll_s > 0.0) || prov->poll_s > 60.0)
		prov->poll_s = 2.0;
	return cfs_conf_bool(conf, section, "keep_exports", &prov->keep_exports,
			 error) &&
	       load_formats(prov, conf, section, views, error);
}

static char *metadata_base(void)
{
	g_autofree char *host = env_string("GCE_METADATA_HOST");

	return g_strdup_printf("http://%s/computeMetadata/v1",
			       host ? host : GCP_METADATA_HOST);
}

static bool load_credentials(GcpProvider *prov, GKeyFile *conf,
			     const char *section, GError **error)
{
	g_autofree char *project_id = NULL, *token_uri = NULL;

	prov->credentials = cfs_conf_string(conf, section, "credentials");
	if (!prov->credentials)
		prov->credentials =
			env_string("GOOGLE_APPLICATION_CREDENTIALS");
	if (prov->credentials &&
	    !gcp_key_load(prov, prov->credentials, &project_id, &token_uri,
			  error))
		return false;
	if (!conf_url(conf, section, "token_url",
		      token_uri ? token_uri : GCP_TOKEN_URL, &prov->token_url,
		      error))
		return false;
	prov->metadata_url = cfs_conf_string(conf, section, "metadata_url");
	if (!prov->metadata_url)
		prov->metadata_url = metadata_base();
	cfs_url_strip_slash(prov->metadata_url);
	prov->project = cfs_conf_string(conf, section, "project");
	if (!prov->project)
		prov->project = g_steal_pointer(&project_id);
	if (!prov->project)
		prov->project = env_string("GOOGLE_CLOUD_PROJECT");
	if (!prov->project)
		prov->project = env_string("CLOUDSDK_CORE_PROJECT");
	if (!prov->project && prov->credentials) {
		g_set_error(error, CFS_ERROR, EINVAL, "[%s] project: missing "
			    "(not in the section, the key file, "
			    "GOOGLE_CLOUD_PROJECT or CLOUDSDK_CORE_PROJECT)",
			    section);
		return false;
	}
	return check_url(section, "metadata_url", prov->metadata_url, error);
}

bool gcp_config_load(GcpProvider *prov, GKeyFile *conf, const char *section,
		     const char *const *views, GError **error)
{
	g_autofree char *zones = cfs_conf_string(conf, section, "zones");

	if (zones)
		prov->zones = split_list(zones);
	if (prov->zones && !prov->zones[0])
		g_clear_pointer(&prov->zones, g_strfreev);
	if (!load_credentials(prov, conf, section, error) ||
	    !load_export(prov, conf, section, views, error))
		return false;
	return conf_url(conf, section, "compute_url", GCP_COMPUTE_URL,
			&prov->compute_url, error) &&
	       conf_url(conf, section, "cloudbuild_url", GCP_CLOUDBUILD_URL,
			&prov->cloudbuild_url, error) &&
	       conf_url(conf, section, "storage_url", GCP_STORAGE_URL,
			&prov->storage_url, error);
}

void gcp_config_clear(GcpProvider *prov)
{
	cfs_oauth2_free(prov->oauth);
	g_free(prov->credentials);
	g_free(prov->client_email);
	cfs_secret_free(prov->private_key);
	g_free(prov->private_key_id);
	g_free(prov->token_url);
	g_free(prov->metadata_url);
	g_free(prov->compute_url);
	g_free(prov->cloudbuild_url);
	g_free(prov->storage_url);
	g_strfreev(prov->zones);
	g_strfreev(prov->export_formats);
	g_free(prov->bucket);
	g_free(prov->prefix);
	g_free(prov->project);
}

/* --- tokens and the project --- */

static void gcp_oauth_prepare(CfsHttpRequest *req, gpointer data)
{
	GcpProvider *prov = data;

	cfs_http_request_set_settings(req, prov->settings);
}

/* The token cache, made at the first use (ctx->http is set by then). */
CfsOAuth2 *gcp_oauth(GcpProvider *prov, GError **error)
{
	g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&prov->lock);
	CfsOAuth2Options o = {
		.http = prov->base.ctx->http,
		.prepare = gcp_oauth_prepare,
		.prepare_data = prov,
	};
	g_autofree char *url = NULL;

	if (prov->oauth)
		return prov->oauth;
	if (prov->credentials) {
		prov->oauth = cfs_oauth2_new_jwt_bearer(
			&o, prov->token_url, prov->client_email,
			prov->private_key, prov->private_key_id, GCP_SCOPE,
			error);
		return prov->oauth;
	}
	url = g_strdup_printf("%s/instance/service-accounts/default/token",
			      prov->metadata_url);
	prov->oauth = cfs_oauth2_new_metadata(&o, url, GCP_METADATA_HEADER);
	return prov->oauth;
}

char *gcp_token(GcpProvider *prov, GError **error)
{
	CfsOAuth2 *o = gcp_oauth(prov, error);

	return o ? cfs_oauth2_token(o, error) : NULL;
}

static bool project_ok(const char *p, gsize len)
{
	if (len == 0 || len > GCP_PROJECT_MAX)
		return false;
	for (gsize i = 0; i < len; i++)
		if (!g_ascii_isalnum(p[i]) && !strchr("-.:", p[i]))
			return false;
	return true;
}

/* Ask the metadata server which project this machine is in. */
static char *metadata_project(GcpProvider *prov, GError **error)
{
	g_autofree char *url = g_strdup_printf("%s/project/project-id",
					       prov->metadata_url);
	g_autoptr(CfsHttpRequest) req = cfs_http_request_new(url);

	cfs_http_request_add_header(req, GCP_METADATA_HEADER);
	cfs_http_request_set_settings(req, prov->settings);
	req->timeout_s = 30;
	req->max_attempts = 3;
	if (!cfs_http_perform(prov->base.ctx->http, req, error)) {
		g_prefix_error(error, "no project named, and the metadata "
			       "server did not say one: ");
		return NULL;
	}
	if (!req->response ||
	    !project_ok((const char *)req->response->data,
			req->response->len)) {
		g_set_error(error, CFS_ERROR, EIO, "the metadata server's "
			    "project id is not a project id");
		return NULL;
	}
	return g_strndup((const char *)req->response->data,
			 req->response->len);
}

char *gcp_project(GcpProvider *prov, GError **error)
{
	char *found;

	g_mutex_lock(&prov->lock);
	found = g_strdup(prov->project);
	g_mutex_unlock(&prov->lock);
	if (found)
		return found;
	found = metadata_project(prov, error);
	if (!found)
		return NULL;
	g_mutex_lock(&prov->lock);
	if (!prov->project)
		prov->project = g_strdup(found);
	g_mutex_unlock(&prov->lock);
	return found;
}
