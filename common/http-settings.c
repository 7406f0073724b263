// SPDX-License-Identifier: MIT
/*
 * A provider section's HTTP settings (TLS trust, a pinned thumbprint, a
 * client certificate, Basic or NTLM auth) and the default reading of
 * answers into retry, throttle, re-authorise or final.
 */
#include <glib/gstdio.h>
#include <string.h>

#include "error.h"
#include "http.h"
#include "secret.h"

CfsHttpSettings *cfs_http_settings_new(void)
{
	CfsHttpSettings *s = g_new0(CfsHttpSettings, 1);

	s->ref = 1;
	return s;
}

CfsHttpSettings *cfs_http_settings_ref(CfsHttpSettings *settings)
{
	g_atomic_int_inc(&settings->ref);
	return settings;
}

void cfs_http_settings_unref(CfsHttpSettings *s)
{
	if (!s || !g_atomic_int_dec_and_test(&s->ref))
		return;
	g_free(s->ca_file);
	g_free(s->thumbprint);
	g_free(s->client_cert);
	g_free(s->client_key);
	g_free(s->username);
	cfs_secret_free(s->password);
	g_free(s);
}

/* "AB:CD:…" or "abcd…" into 40 lower-case hex digits. */
static char *thumbprint_normalize(const char *text)
{
	GString *out = g_string_new(NULL);

	for (const char *p = text; *p; p++) {
		if (*p == ':' || *p == ' ')
			continue;
		if (!g_ascii_isxdigit(*p))
			break;
		g_string_append_c(out, g_ascii_tolower(*p));
	}
	if (out->len != 40 || text[strspn(text, "0123456789abcdefABCDEF: ")]) {
		g_string_free(out, TRUE);
		return NULL;
	}
	return g_string_free(out, FALSE);
}

static bool settings_file(GKeyFile *conf, const char *section,
			  const char *key, char **out, GError **error)
{
	g_autofree char *path = g_key_file_get_string(conf, section, key,
						      NULL);

	if (!path)
		return true;
	if (g_access(path, R_OK) != 0) {
		g_set_error(error, CFS_ERROR, errno, "[%s] %s: cannot read %s: "
			    "%s", section, key, path, g_strerror(errno));
		return false;
	}
	g_free(*out);
	*out = g_steal_pointer(&path);
	return true;
}

bool cfs_http_settings_load(CfsHttpSettings *s, GKeyFile *conf,
			    const char *section, GError **error)
{
	g_autofree char *thumb = g_key_file_get_string(conf, section,
						       "thumbprint", NULL);
	g_autoptr(GError) local = NULL;
	bool insecure = g_key_file_get_boolean(conf, section, "insecure",
					       &local);

	if (local && !g_error_matches(local, G_KEY_FILE_ERROR,
				      G_KEY_FILE_ERROR_KEY_NOT_FOUND)) {
		g_set_error(error, CFS_ERROR, EINVAL, "[%s] insecure: %s",
			    section, local->message);
		return false;
	}
	if (!local)
		s->insecure = insecure;
	if (thumb) {
		g_free(s->thumbprint);
		s->thumbprint = thumbprint_normalize(thumb);
		if (!s->thumbprint) {
			g_set_error(error, CFS_ERROR, EINVAL, "[%s] thumbprint: "
				    "not a SHA-1 fingerprint (20 hex bytes, "
				    "as AB:CD:…)", section);
			return false;
		}
	}
	return settings_file(conf, section, "ca_file", &s->ca_file, error) &&
	       settings_file(conf, section, "client_cert", &s->client_cert,
			     error) &&
	       settings_file(conf, section, "client_key", &s->client_key,
			     error);
}


CfsHttpClass cfs_http_classify_default(const CfsHttpRequest *req)
{
	switch (req->status) {
	case 200 ... 299:
		return CFS_HTTP_OK;
	case 401:
	case 403:
		return CFS_HTTP_REAUTH;
	case 408:
	case 500:
	case 502:
	case 504:
		return CFS_HTTP_RETRY;
	case 429:
	case 503:
		return CFS_HTTP_THROTTLE;
	default:
		return CFS_HTTP_FINAL;
	}
}

int cfs_http_status_errno(long status, int conflict, int fallback)
{
	switch (status) {
	case 400:
		return EINVAL;
	case 401:
	case 403:
		return EACCES;
	case 404:
		return ENOENT;
	case 409:
		return conflict;
	default:
		return fallback;
	}
}

void cfs_http_explain(const CfsHttpRequest *req, const char *what,
		      const char *text, int conflict, GError **error)
{
	int code = (*error)->domain == CFS_ERROR ? (*error)->code : EIO;
	g_autofree char *was = g_strdup((*error)->message);

	if (req->status >= 400)
		code = cfs_http_status_errno(req->status, conflict, code);
	g_clear_error(error);
	if (text)
		g_set_error(error, CFS_ERROR, code, "%s: %s (%s)", what, text,
			    was);
	else
		g_set_error(error, CFS_ERROR, code, "%s: %s", what, was);
}
