// SPDX-License-Identifier: MIT
/*
 * Sources over an exported file: over SMB with libsmbclient (random
 * access at any offset) or from export_mount, the export folder mounted
 * on this machine. libsmbclient keeps state shared between its contexts
 * (connection setup on one thread corrupts a read on another, even with
 * one context per thread), so every call into it holds one process-wide
 * lock, and the process has one context (each new context also leaks
 * a string in the library's logging setup); a source keeps one open
 * file, and the credentials of the source that makes a call are the ones
 * the context asks for. pread runs on the engine's I/O threads and
 * blocks; the rest on the control pool.
 */
#include <fcntl.h>
#include <libsmbclient.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error.h"
#include "common/secret.h"
#include "common/util.h"
#include "providers/hyperv/hyperv-private.h"

#define SMB_READ_MAX (1024 * 1024)

typedef struct {
	SMBCFILE *file;		/* protected by smb_lock */
	guint64 pos;		/* protected by smb_lock: the file offset */
} SmbConn;

typedef struct {
	char *url;		/* smb://host[:port]/share/…/file, no secret */
	char *domain;
	char *user;
	char *password;		/* a secret */
	int fd;			/* export_mount: the open file, else -1 */
	SmbConn conn;
	gint shut;		/* atomic: the export ended */
} HvSource;

/* Every call into libsmbclient holds this. */
static GMutex smb_lock;
/* Made on first use; lives until the process ends (freeing the last
 * context makes the library drop, unfreed, the name of its log file). */
static SMBCCTX *smb_ctx;	/* protected by smb_lock */
static HvSource *smb_caller;	/* protected by smb_lock: whose call runs */

bool hv_smb_check(HvProvider *prov, GError **error)
{
	const char *u = prov->smb_url;
	const char *host = u + strlen("smb://");
	const char *slash = strchr(host, '/');

	if (!g_str_has_prefix(u, "smb://") || !slash || slash == host ||
	    !slash[1] || strchr(host, '@') || strchr(host, '?')) {
		g_set_error(error, CFS_ERROR, EINVAL, "smb_url must be "
			    "smb://host[:port]/share[/folder], without "
			    "credentials");
		return false;
	}
	return true;
}

static void smb_auth(SMBCCTX *c, const char *srv, const char *shr, char *wg,
		     int wglen, char *un, int unlen, char *pw, int pwlen)
{
	HvSource *hs = smb_caller;

	if (!hs)
		return;
	if (hs->domain && wglen > 0)
		g_strlcpy(wg, hs->domain, (gsize)wglen);
	if (unlen > 0)
		g_strlcpy(un, hs->user, (gsize)unlen);
	if (pwlen > 0)
		g_strlcpy(pw, hs->password, (gsize)pwlen);
}

/* Close the source's file. smb_lock held. */
static void smb_conn_drop(SmbConn *conn)
{
	if (!conn->file)
		return;
	smbc_getFunctionClose(smb_ctx)(smb_ctx, conn->file);
	conn->file = NULL;
}

/* The process's context. smb_lock held. */
static SMBCCTX *smb_context(void)
{
	SMBCCTX *ctx;
	int errnum;

	if (smb_ctx)
		return smb_ctx;
	ctx = smbc_new_context();
	if (!ctx)
		return NULL;
	smbc_setDebug(ctx, 0);
	smbc_setFunctionAuthDataWithContext(ctx, smb_auth);
	smbc_setOptionUseKerberos(ctx, false);
	smbc_setOptionFallbackAfterKerberos(ctx, true);
	smbc_setOptionNoAutoAnonymousLogin(ctx, true);
	if (!smbc_init_context(ctx)) {
		errnum = errno;
		smbc_free_context(ctx, 1);
		errno = errnum;
		return NULL;
	}
	smb_ctx = ctx;
	return ctx;
}

static bool smb_errno(GError **error, int errnum, const char *what,
		      const char *url)
{
	g_autofree char *shown = cfs_url_redact(url);

	if (errnum == EPERM)
		errnum = EACCES;
	g_set_error(error, CFS_ERROR, errnum ? errnum : EIO, "SMB %s %s: %s%s",
		    what, shown, g_strerror(errnum ? errnum : EIO),
		    errnum == EACCES ? " (check smb_username and the "
				       "password)" : "");
	return false;
}

/* Open the source's file. smb_lock held. */
static bool smb_conn_open(HvSource *hs, SmbConn *conn, GError **error)
{
	SMBCCTX *ctx = smb_context();

	if (!ctx)
		return smb_errno(error, errno, "client for", hs->url);
	smb_caller = hs;
	conn->file = smbc_getFunctionOpen(ctx)(ctx, hs->url, O_RDONLY, 0);
	smb_caller = NULL;
	if (!conn->file)
		return smb_errno(error, errno, "open", hs->url);
	conn->pos = 0;
	return true;
}

static bool smb_conn_read(HvSource *hs, SmbConn *conn, void *buf, gsize len,
			  guint64 off, GError **error)
{
	guint8 *p = buf;

	if (!conn->file && !smb_conn_open(hs, conn, error))
		return false;
	if (conn->pos != off &&
	    smbc_getFunctionLseek(smb_ctx)(smb_ctx, conn->file, (off_t)off,
					   SEEK_SET) < 0)
		goto failed;
	conn->pos = off;
	while (len) {
		ssize_t n = smbc_getFunctionRead(smb_ctx)(
			smb_ctx, conn->file, p, MIN(len, SMB_READ_MAX));

		if (n < 0)
			goto failed;
		if (n == 0) {
			errno = EIO;	/* the file is shorter than it said */
			goto failed;
		}
		p += n;
		len -= (gsize)n;
		conn->pos += (guint64)n;
	}
	return true;
failed:
	{
		int errnum = errno;

		smb_conn_drop(conn);
		return smb_errno(error, errnum, "read", hs->url);
	}
}

static bool hv_source_pread(CfsSource *src, void *buf, gsize len,
			    guint64 off, GError **error)
{
	HvSource *hs = src->priv;
	bool ok;

	if (g_atomic_int_get(&hs->shut)) {
		g_set_error(error, CFS_ERROR, EIO, "the export was released");
		return false;
	}
	if (hs->fd >= 0)
		return cfs_pread_all(hs->fd, buf, len, off, error);
	g_mutex_lock(&smb_lock);
	ok = smb_conn_read(hs, &hs->conn, buf, len, off, error);
	g_mutex_unlock(&smb_lock);
	return ok;
}

void hv_source_shut(CfsSource *src)
{
	HvSource *hs = src->priv;

	g_atomic_int_set(&hs->shut, 1);
	g_mutex_lock(&smb_lock);
	smb_conn_drop(&hs->conn);
	g_mutex_unlock(&smb_lock);
	if (hs->fd >= 0) {
		close(hs->fd);
		hs->fd = -1;
	}
}

static void hv_source_free(CfsSource *src)
{
	HvSource *hs = src->priv;

	if (!hs)
		return;
	hv_source_shut(src);
	g_free(hs->url);
	g_free(hs->domain);
	g_free(hs->user);
	cfs_secret_free(hs->password);
	g_free(hs);
}

static const CfsSourceOps hv_source_ops = {
	.pread = hv_source_pread,
	.free = hv_source_free,
};

/* smb_url + '/' + @rel with '\' as '/', each part percent-encoded.
 * Transfer full. */
static char *smb_file_url(const char *base, const char *rel)
{
	g_auto(GStrv) parts = g_strsplit(rel, "\\", -1);
	GString *url = g_string_new(base);

	while (url->len && url->str[url->len - 1] == '/')
		g_string_truncate(url, url->len - 1);
	for (char **p = parts; *p; p++) {
		g_autofree char *e = g_uri_escape_string(*p, NULL, false);

		g_string_append_printf(url, "/%s", e);
	}
	return g_string_free(url, false);
}

static bool smb_stat(HvSource *hs, guint64 *size, gint64 *mtime,
		     GError **error)
{
	SmbConn *conn = &hs->conn;
	struct stat st;
	bool ok = true;

	g_mutex_lock(&smb_lock);
	if (!smb_conn_open(hs, conn, error))
		ok = false;
	else if (smbc_getFunctionFstat(smb_ctx)(smb_ctx, conn->file, &st) < 0)
		ok = smb_errno(error, errno, "stat", hs->url);
	g_mutex_unlock(&smb_lock);
	if (ok) {
		*size = (guint64)st.st_size;
		*mtime = (gint64)st.st_mtime;
	}
	return ok;
}

static bool local_open(HvProvider *prov, HvSource *hs, const char *rel,
		       guint64 *size, gint64 *mtime, GError **error)
{
	g_autofree char *unix_rel = g_strdelimit(g_strdup(rel), "\\", '/');
	g_autofree char *path = g_build_filename(prov->export_mount, unix_rel,
						 NULL);
	struct stat st;

	hs->url = g_strdup(path);
	hs->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (hs->fd < 0 || fstat(hs->fd, &st) < 0) {
		int errnum = errno;

		g_set_error(error, CFS_ERROR, errnum, "open %s: %s", path,
			    g_strerror(errnum));
		return false;
	}
	*size = (guint64)st.st_size;
	*mtime = (gint64)st.st_mtime;
	return true;
}

CfsSource *hv_source_open(HvProvider *prov, const char *rel, GError **error)
{
	HvSource *hs = g_new0(HvSource, 1);
	CfsSource *src = cfs_source_new(&hv_source_ops, hs);
	const char *sep = prov->smb_user ? strchr(prov->smb_user, '\\') : NULL;
	guint64 size = 0;
	gint64 mtime = 0;
	bool ok;

	cfs_assert_may_block();
	hs->fd = -1;
	if (prov->export_mount) {
		ok = local_open(prov, hs, rel, &size, &mtime, error);
	} else {
		hs->url = smb_file_url(prov->smb_url, rel);
		hs->domain = sep ? g_strndup(prov->smb_user,
					     (gsize)(sep - prov->smb_user)) :
				   NULL;
		hs->user = g_strdup(sep ? sep + 1 : prov->smb_user);
		hs->password = cfs_secret_dup(prov->smb_password);
		ok = smb_stat(hs, &size, &mtime, error);
	}
	if (ok && (size == 0 || size > HV_DISK_MAX + (1ULL << 30))) {
		g_set_error(error, CFS_ERROR, EIO, "%s: a size of %"
			    G_GUINT64_FORMAT " bytes is out of range",
			    rel, size);
		ok = false;
	}
	if (!ok) {
		cfs_source_free(src);
		return NULL;
	}
	src->size = size;
	src->random = true;
	/* The container's own bytes are all data: the engine reads the
	 * VHDX's block table for the views. */
	src->map = cfs_extent_map_new_full(size);
	src->identity = g_strdup_printf("hyperv %s %" G_GUINT64_FORMAT " %"
					G_GINT64_FORMAT, rel, size, mtime);
	return src;
}
