// SPDX-License-Identifier: MIT
/*
 * Secrets in memory: wiped before they are freed, read from files without
 * leaving copies behind, never shown.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "common/error.h"
#include "common/secret.h"

void cfs_secret_wipe(void *p, gsize len)
{
	if (p && len)
		OPENSSL_cleanse(p, len);
}

void cfs_secret_free(char *s)
{
	if (!s)
		return;
	cfs_secret_wipe(s, strlen(s));
	g_free(s);
}

void cfs_secret_clear(char **s)
{
	cfs_secret_free(*s);
	*s = NULL;
}

char *cfs_secret_dup(const char *s)
{
	return g_strdup(s);
}

void cfs_secret_gstring_free(GString *s)
{
	if (!s)
		return;
	cfs_secret_wipe(s->str, s->allocated_len);
	g_string_free(s, TRUE);
}

static void secret_bytes_free(gpointer data)
{
	cfs_secret_free(data);
}

GBytes *cfs_secret_bytes_take(char *s)
{
	return g_bytes_new_with_free_func(s, strlen(s), secret_bytes_free, s);
}

/* Read all of @fd into @buf (@size bytes); *len is what was read. A file
 * that fills @buf is too large. */
static bool secret_read_fd(int fd, char *buf, gsize size, gsize *len,
			   const char *path, GError **error)
{
	*len = 0;
	while (*len < size) {
		ssize_t n = read(fd, buf + *len, size - *len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int code = errno;

			g_set_error(error, CFS_ERROR, code, "read %s: %s", path,
				    g_strerror(code));
			return false;
		}
		if (n == 0)
			return true;
		*len += n;
	}
	g_set_error(error, CFS_ERROR, EFBIG,
		    "%s: larger than %d KiB, not a secret file", path,
		    CFS_SECRET_FILE_MAX / 1024);
	return false;
}

/* Check the @len bytes read from @path and strip one line end. */
static bool secret_trim(char *buf, gsize *len, const char *path, GError **error)
{
	if (memchr(buf, '\0', *len)) {
		g_set_error(error, CFS_ERROR, EINVAL,
			    "%s: holds a NUL byte, not a secret file", path);
		return false;
	}
	if (*len > 0 && buf[*len - 1] == '\n') {
		(*len)--;
		if (*len > 0 && buf[*len - 1] == '\r')
			(*len)--;
	}
	if (*len == 0) {
		g_set_error(error, CFS_ERROR, EINVAL, "%s: empty secret file",
			    path);
		return false;
	}
	return true;
}

char *cfs_secret_read_file(const char *path, GError **error)
{
	gsize size = CFS_SECRET_FILE_MAX + 1, len = 0;
	char *buf;
	char *out = NULL;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int code = errno;

		g_set_error(error, CFS_ERROR, code, "open %s: %s", path,
			    g_strerror(code));
		return NULL;
	}
	buf = g_malloc(size);
	if (secret_read_fd(fd, buf, size, &len, path, error) &&
	    secret_trim(buf, &len, path, error))
		out = g_strndup(buf, len);
	close(fd);
	cfs_secret_wipe(buf, size);
	g_free(buf);
	return out;
}

void cfs_process_harden(void)
{
	struct rlimit none = { 0, 0 };

	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		g_warning("cannot turn core dumps off: %s", g_strerror(errno));
	setrlimit(RLIMIT_CORE, &none);
}
