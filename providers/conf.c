// SPDX-License-Identifier: MIT
/* Reading a provider's config section (see conf.h). */
#include <string.h>

#include "common/error.h"
#include "common/secret.h"
#include "providers/conf.h"

char *cfs_conf_string(GKeyFile *conf, const char *section, const char *key)
{
	char *v = g_key_file_get_string(conf, section, key, NULL);

	if (v && !*g_strstrip(v))
		g_clear_pointer(&v, g_free);
	return v;
}

char *cfs_conf_or_env(GKeyFile *conf, const char *section, const char *key,
		      const char *env)
{
	char *v = cfs_conf_string(conf, section, key);
	const char *e;

	if (v)
		return v;
	e = env ? g_getenv(env) : NULL;
	return e && *e ? g_strdup(e) : NULL;
}

bool cfs_conf_bool(GKeyFile *conf, const char *section, const char *key,
		   bool *out, GError **error)
{
	g_autofree char *v = cfs_conf_string(conf, section, key);

	*out = false;
	if (!v || !g_ascii_strcasecmp(v, "false") ||
	    !g_ascii_strcasecmp(v, "no") || g_str_equal(v, "0"))
		return true;
	if (!g_ascii_strcasecmp(v, "true") || !g_ascii_strcasecmp(v, "yes") ||
	    g_str_equal(v, "1")) {
		*out = true;
		return true;
	}
	g_set_error(error, CFS_ERROR, EINVAL,
		    "[%s] %s: '%s' is not true or false", section, key, v);
	return false;
}

char *cfs_conf_secret(GKeyFile *conf, const char *section, const char *key,
		      const char *key_file, GError **error)
{
	g_autofree char *file = cfs_conf_string(conf, section, key_file);
	char *v = g_key_file_get_string(conf, section, key, NULL);

	if (v && file) {
		cfs_secret_free(v);
		g_set_error(error, CFS_ERROR, EINVAL, "[%s]: set %s or %s, not "
			    "both", section, key, key_file);
		return NULL;
	}
	if (!file)
		return v;
	v = cfs_secret_read_file(file, error);
	if (!v)
		g_prefix_error(error, "[%s] %s: ", section, key_file);
	return v;
}

char *cfs_url_strip_slash(char *url)
{
	gsize n = url ? strlen(url) : 0;

	while (n > 0 && url[n - 1] == '/')
		url[--n] = '\0';
	return url;
}
