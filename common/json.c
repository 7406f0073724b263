// SPDX-License-Identifier: MIT
/*
 * JSON from servers, read defensively: bounded parsing and typed look-ups
 * by key paths. See json.h.
 */
#include <string.h>

#include "common/error.h"
#include "common/json.h"

json_object *cfs_json_parse(const void *data, gsize len, gsize max,
			    const char *what, GError **error)
{
	json_tokener *tok;
	json_object *obj;
	enum json_tokener_error jerr;
	gsize used;

	if (len > max || len > G_MAXINT) {
		g_set_error(error, CFS_ERROR, EIO, "%s: answer of %" G_GSIZE_FORMAT
			    " bytes is too large", what, len);
		return NULL;
	}
	tok = json_tokener_new_ex(CFS_JSON_DEPTH);
	if (!tok) {
		g_set_error(error, CFS_ERROR, ENOMEM, "%s: out of memory", what);
		return NULL;
	}
	obj = json_tokener_parse_ex(tok, data, (int)len);
	jerr = json_tokener_get_error(tok);
	used = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	if (obj && jerr == json_tokener_success) {
		const char *rest = (const char *)data + used;

		while (used < len && strchr(" \t\r\n", *rest)) {
			used++;
			rest++;
		}
		if (used == len)
			return obj;
	}
	json_object_put(obj);
	g_set_error(error, CFS_ERROR, EIO, "%s: the answer is not JSON (%s)",
		    what, jerr == json_tokener_success ? "trailing bytes" :
		    json_tokener_error_desc(jerr));
	return NULL;
}

json_object *cfs_json_get(json_object *obj, const char *path)
{
	const char *p = path;

	while (obj && *p) {
		const char *slash = strchr(p, '/');
		gsize n = slash ? (gsize)(slash - p) : strlen(p);
		char key[128];
		json_object *next = NULL;

		if (!json_object_is_type(obj, json_type_object) ||
		    n >= sizeof(key))
			return NULL;
		memcpy(key, p, n);
		key[n] = '\0';
		if (!json_object_object_get_ex(obj, key, &next))
			return NULL;
		obj = next;
		p += n + (slash ? 1 : 0);
	}
	return obj;
}

const char *cfs_json_string(json_object *obj, const char *path)
{
	json_object *v = cfs_json_get(obj, path);

	return v && json_object_is_type(v, json_type_string) ?
		json_object_get_string(v) : NULL;
}

bool cfs_json_u64(json_object *obj, const char *path, guint64 *out)
{
	json_object *v = cfs_json_get(obj, path);
	const char *s;
	char *end = NULL;
	guint64 n;

	if (!v)
		return false;
	if (json_object_is_type(v, json_type_int)) {
		int64_t i = json_object_get_int64(v);

		if (i < 0)
			return false;
		*out = (guint64)i;
		return true;
	}
	if (!json_object_is_type(v, json_type_string))
		return false;
	s = json_object_get_string(v);
	if (!s || !g_ascii_isdigit(*s))
		return false;
	errno = 0;
	n = g_ascii_strtoull(s, &end, 10);
	if (errno || !end || *end)
		return false;
	*out = n;
	return true;
}

bool cfs_json_bool(json_object *obj, const char *path, bool fallback)
{
	json_object *v = cfs_json_get(obj, path);

	return v && json_object_is_type(v, json_type_boolean) ?
		json_object_get_boolean(v) : fallback;
}

json_object *cfs_json_array(json_object *obj, const char *path)
{
	json_object *v = cfs_json_get(obj, path);

	return v && json_object_is_type(v, json_type_array) ? v : NULL;
}

void cfs_json_unref(gpointer obj)
{
	json_object_put(obj);
}
