// SPDX-License-Identifier: MIT
/*
 * PowerShell over WinRM: quoting, running a script in a shell of its
 * own, the CLIXML that PowerShell writes on stderr (error records become
 * the message, progress records a percentage) and the JSON that Windows
 * PowerShell 5.1's ConvertTo-Json prints (one object is not an array,
 * nothing is printed for no result). Control pool.
 */
#include <string.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "providers/hyperv/hyperv-private.h"

#define MESSAGE_MAX 1000
#define CLIXML_HEAD "#< CLIXML"

char *hv_ps_quote(const char *s)
{
	GString *out = g_string_new("'");

	for (const char *p = s; *p; p++) {
		if (*p == '\'')
			g_string_append_c(out, '\'');
		g_string_append_c(out, *p);
	}
	g_string_append_c(out, '\'');
	return g_string_free(out, false);
}

/* Append the text of one CLIXML string: XML entities, then _xHHHH_
 * (PowerShell's escape for control characters and for '_' itself). */
static void clixml_decode(GString *out, const char *s, gsize len)
{
	for (gsize i = 0; i < len;) {
		static const char *const ent[][2] = {
			{ "&lt;", "<" }, { "&gt;", ">" }, { "&amp;", "&" },
			{ "&quot;", "\"" }, { "&apos;", "'" },
		};
		bool done = false;

		for (guint e = 0; e < G_N_ELEMENTS(ent) && !done; e++) {
			gsize n = strlen(ent[e][0]);

			if (len - i >= n && memcmp(s + i, ent[e][0], n) == 0) {
				g_string_append(out, ent[e][1]);
				i += n;
				done = true;
			}
		}
		if (!done && len - i >= 7 && s[i] == '_' && s[i + 1] == 'x' &&
		    s[i + 6] == '_' && g_ascii_isxdigit(s[i + 2]) &&
		    g_ascii_isxdigit(s[i + 3]) && g_ascii_isxdigit(s[i + 4]) &&
		    g_ascii_isxdigit(s[i + 5])) {
			char hex[5] = { s[i + 2], s[i + 3], s[i + 4], s[i + 5] };
			gunichar c = (gunichar)g_ascii_strtoull(hex, NULL, 16);

			g_string_append_unichar(out, c ? c : ' ');
			i += 7;
			done = true;
		}
		if (!done)
			g_string_append_c(out, s[i++]);
	}
}

/* The first line of @text, blanks trimmed and bounded. Transfer full. */
static char *first_line(const char *text)
{
	g_autofree char *line = g_strndup(text, strcspn(text, "\r\n"));

	g_strstrip(line);
	if (!*line)
		return NULL;
	if (strlen(line) > MESSAGE_MAX)
		line[MESSAGE_MAX] = '\0';
	return g_utf8_make_valid(line, -1);
}

char *hv_clixml_error(const char *err, gsize len)
{
	static const char open[] = "<S S=\"Error\">";
	g_autofree char *text = g_strndup(err, len);
	g_autoptr(GString) msg = g_string_new(NULL);
	const char *p = text;

	if (!g_str_has_prefix(text, CLIXML_HEAD))
		return first_line(text);
	while ((p = strstr(p, open)) && msg->len < 64 * 1024) {
		const char *end;

		p += strlen(open);
		end = strstr(p, "</S>");
		if (!end)
			break;
		clixml_decode(msg, p, (gsize)(end - p));
		p = end;
	}
	return first_line(msg->str);
}

int hv_clixml_percent(const char *err, gsize len)
{
	const char *p = err, *end = err + len;
	int last = -1;

	while ((p = g_strstr_len(p, end - p, "<PC>"))) {
		char *stop = NULL;
		gint64 v;

		p += 4;
		v = g_ascii_strtoll(p, &stop, 10);
		if (stop != p && stop < end && *stop == '<')
			last = (int)CLAMP(v, 0, 100);
	}
	return last;
}

char *hv_ps(HvProvider *prov, const char *what, const char *script,
	    guint timeout_s, HvReceiveFn on_receive, gpointer data,
	    GError **error)
{
	g_autoptr(HvShell) shell = NULL;
	g_autofree char *msg = NULL;
	HvRun run;

	hv_run_init(&run);
	shell = hv_shell_open(prov, error);
	if (!shell ||
	    !hv_shell_run(shell, script, timeout_s, on_receive, data, &run,
			  error)) {
		hv_run_clear(&run);
		if (error && *error)
			g_prefix_error(error, "%s: ", what);
		return NULL;
	}
	if (run.exit_code != 0) {
		msg = hv_clixml_error(run.err->str, run.err->len);
		g_set_error(error, CFS_ERROR, EIO, "%s: %s", what,
			    msg ? msg : "the script failed");
		hv_run_clear(&run);
		return NULL;
	}
	g_string_free(run.err, true);
	run.err = NULL;
	return g_string_free(g_steal_pointer(&run.out), false);
}

json_object *hv_json_list(const char *text, const char *what, GError **error)
{
	g_autoptr(json_object) arr = NULL;
	json_object *o;
	const char *p = text ? text : "";
	json_tokener *tok;
	enum json_tokener_error jerr;

	/* A byte order mark and blank lines may come first. */
	if (g_str_has_prefix(p, "\xef\xbb\xbf"))
		p += 3;
	while (g_ascii_isspace(*p))
		p++;
	if (!*p)
		return json_object_new_array();
	tok = json_tokener_new_ex(32);
	o = json_tokener_parse_ex(tok, p, (int)MIN(strlen(p), G_MAXINT));
	jerr = json_tokener_get_error(tok);
	json_tokener_free(tok);
	if (!o || jerr != json_tokener_success) {
		json_object_put(o);
		g_set_error(error, CFS_ERROR, EIO, "%s: the answer is not JSON",
			    what);
		return NULL;
	}
	if (json_object_is_type(o, json_type_array))
		return o;
	arr = json_object_new_array();
	if (!json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		g_set_error(error, CFS_ERROR, EIO, "%s: the answer is not a "
			    "JSON object", what);
		return NULL;
	}
	json_object_array_add(arr, o);
	return g_steal_pointer(&arr);
}

json_object *hv_ps_section(const char *out, const char *marker,
			   GError **error)
{
	g_auto(GStrv) lines = g_strsplit(out ? out : "", "\n", -1);
	g_autoptr(GString) text = g_string_new(NULL);
	bool in = false;

	for (char **l = lines; *l; l++) {
		g_strstrip(*l);
		if (**l == '#') {
			in = g_str_equal(*l, marker);
			continue;
		}
		if (in)
			g_string_append(text, *l);
	}
	return hv_json_list(text->str, marker + 1, error);
}

const char *hv_json_str(json_object *o, const char *key)
{
	json_object *v = NULL;

	if (!o || !json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

gint64 hv_json_int(json_object *o, const char *key, gint64 fallback)
{
	json_object *v = NULL;

	if (!o || !json_object_object_get_ex(o, key, &v) ||
	    !(json_object_is_type(v, json_type_int) ||
	      json_object_is_type(v, json_type_double)))
		return fallback;
	return json_object_get_int64(v);
}
