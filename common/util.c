// SPDX-License-Identifier: MIT
/* Small shared helpers: sizes, whole-buffer I/O, safe names and URLs. */
#include <errno.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "util.h"

bool cfs_parse_size(const char *text, guint64 *out, GError **error)
{
	static const char units[] = "KMGTPE";
	char *end = NULL;
	double value;
	guint64 mult = 1;

	errno = 0;
	value = g_ascii_strtod(text, &end);
	if (errno || end == text || !(value >= 0) || isinf(value))
		goto bad;	/* !(>= 0) also catches NaN */
	if (*end) {
		const char *u = strchr(units, g_ascii_toupper(*end));

		if (!u)
			goto bad;
		for (int i = 0; i <= u - units; i++)
			mult *= 1024;
		end++;
		if (g_ascii_strcasecmp(end, "iB") == 0 ||
		    g_ascii_strcasecmp(end, "B") == 0)
			end += strlen(end);
		if (*end)
			goto bad;
	}
	if (value * (double)mult >= 18446744073709551615.0)
		goto bad;
	*out = (guint64)(value * (double)mult);
	return true;
bad:
	g_set_error(error, CFS_ERROR, EINVAL,
		    "'%s' is not a size (use bytes or K, M, G, T)", text);
	return false;
}

bool cfs_pwrite_all(int fd, const void *buf, gsize len, guint64 off,
		    GError **error)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return cfs_set_errno(error, errno, "write");
		p += n;
		off += (guint64)n;
		len -= (gsize)n;
	}
	return true;
}

bool cfs_pread_all(int fd, void *buf, gsize len, guint64 off, GError **error)
{
	char *p = buf;

	while (len > 0) {
		ssize_t n = pread(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return cfs_set_errno(error, errno, "read");
		if (n == 0)
			return cfs_set_errno(error, EIO, "read past end of file");
		p += n;
		off += (guint64)n;
		len -= (gsize)n;
	}
	return true;
}

/* Split scheme://[userinfo@]authority/path?query#frag into its parts. */
static void url_split(const char *url, char **scheme, char **authority,
		      char **path)
{
	const char *sep = strstr(url, "://");
	const char *auth, *auth_end, *path_end, *at;

	if (!sep) {
		*scheme = g_strdup("");
		*authority = g_strdup("");
		*path = g_strndup(url, strcspn(url, "?#"));
		return;
	}
	*scheme = g_strndup(url, sep - url);
	auth = sep + 3;
	auth_end = auth + strcspn(auth, "/?#");
	/* The last '@': a password may hold one (unescaped, though it
	 * should not). */
	at = g_strrstr_len(auth, auth_end - auth, "@");
	if (at)
		auth = at + 1;
	*authority = g_strndup(auth, auth_end - auth);
	path_end = auth_end + strcspn(auth_end, "?#");
	*path = g_strndup(auth_end, path_end - auth_end);
}

char *cfs_url_redact(const char *url)
{
	g_autofree char *scheme = NULL, *authority = NULL, *path = NULL;

	url_split(url, &scheme, &authority, &path);
	if (!*scheme)
		return g_steal_pointer(&path);
	return g_strdup_printf("%s://%s%s", scheme, authority, path);
}

char *cfs_url_host(const char *url)
{
	g_autofree char *scheme = NULL, *path = NULL;
	char *authority = NULL;

	url_split(url, &scheme, &authority, &path);
	return authority;
}

char *cfs_name_sanitize(const char *name)
{
	char *out;

	if (!name || !*name || strcmp(name, ".") == 0 ||
	    strcmp(name, "..") == 0)
		return g_strdup("_");
	out = g_strdup(name);
	for (char *p = out; *p; p++)
		if (*p == '/' || (unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '_';
	return out;
}

char *cfs_format_bytes(double bytes)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	guint u = 0;

	while (bytes >= 1024.0 && u + 1 < G_N_ELEMENTS(units)) {
		bytes /= 1024.0;
		u++;
	}
	if (u == 0)
		return g_strdup_printf("%.0f%s", bytes, units[u]);
	return g_strdup_printf("%.1f%s", bytes, units[u]);
}

double cfs_now(void)
{
	return (double)g_get_monotonic_time() / G_USEC_PER_SEC;
}

gint64 cfs_parse_iso8601(const char *text)
{
	g_autoptr(GTimeZone) utc = g_time_zone_new_utc();
	g_autoptr(GDateTime) dt = text ? g_date_time_new_from_iso8601(text, utc)
				       : NULL;

	return dt ? MAX(g_date_time_to_unix(dt), 0) : 0;
}
