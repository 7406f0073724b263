// SPDX-License-Identifier: MIT
/*
 * Sources over an exported file: over SMB with libsmbclient (random
 * access at any offset) or from export_mount, the export folder mounted
 * on this machine. A libsmbclient context is not thread-safe, so a source
 * keeps one connection per I/O thread that may read at once, each with
 * its own lock; creating and freeing contexts (which touches the
 * library's global state) is serialised. pread runs on the engine's I/O
 * threads and blocks; the rest on the control pool.
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

#define SMB_CONNS 2		/* the engine reads with two I/O threads */
#define SMB_READ_MAX (1024 * 1024)

typedef struct {
	GMutex lock;
	SMBCCTX *ctx;		/* protected by lock */
	SMBCFILE *file;		/* protected by lock */
	guint64 pos;		/* protected by lock: the file offset */
} SmbConn;

typedef struct {
	char *url;		/* smb://host[:port]/share/…/file, no secret */
	char *domain;
	char *user;
	char *password;		/* a secret */
	int fd;			/* export_mount: the open file, else -1 */
	SmbConn conns[SMB_CONNS];
	gint shut;		/* atomic: the export ended */
} HvSource;

/* Contexts touch libsmbclient's global state when made and freed. */
static GMutex smb_global;

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
	HvSource *hs = smbc_getOptionUserData(c);

	if (hs->domain && wglen > 0)
		g_strlcpy(wg, hs->domain, (gsize)wglen);
	if (unlen > 0)
		g_strlcpy(un, hs->user, (gsize)unlen);
	if (pwlen > 0)
		g_strlcpy(pw, hs->password, (gsize)pwlen);
}

/* Close the connection's file and context. Its lock held. */
static void smb_conn_drop(SmbConn *conn)
{
	if (!conn->ctx)
		return;
	g_mutex_lock(&smb_global);
	smbc_free_context(conn->ctx, 1);
	g_mutex_unlock(&smb_global);
	conn->ctx = NULL;
	conn->file = NULL;
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

/* Open the file on a fresh context. Its lock held. */
static bool smb_conn_open(HvSource *hs, SmbConn *conn, GError **error)
{
	SMBCCTX *ctx;
	int errnum;

	g_mutex_lock(&smb_global);
	ctx = smbc_new_context();
	if (ctx) {
		smbc_setDebug(ctx, 0);
		smbc_setOptionUserData(ctx, hs);
		smbc_setFunctionAuthDataWithContext(ctx, smb_auth);
		smbc_setOptionUseKerberos(ctx, false);
		smbc_setOptionFallbackAfterKerberos(ctx, true);
		smbc_setOptionNoAutoAnonymousLogin(ctx, true);
		if (!smbc_init_context(ctx)) {
			errnum = errno;
			smbc_free_context(ctx, 1);
			ctx = NULL;
			errno = errnum;
		}
	}
	errnum = errno;
	g_mutex_unlock(&smb_global);
	if (!ctx)
		return smb_errno(error, errnum, "client for", hs->url);
	conn->ctx = ctx;
	conn->file = smbc_getFunctionOpen(ctx)(ctx, hs->url, O_RDONLY, 0);
	if (!conn->file) {
		errnum = errno;
		smb_conn_drop(conn);
		return smb_errno(error, errnum, "open", hs->url);
	}
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
	    smbc_getFunctionLseek(conn->ctx)(conn->ctx, conn->file,
					     (off_t)off, SEEK_SET) < 0)
		goto failed;
	conn->pos = off;
	while (len) {
		ssize_t n = smbc_getFunctionRead(conn->ctx)(
			conn->ctx, conn->file, p, MIN(len, SMB_READ_MAX));

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
	SmbConn *conn = NULL;
	bool ok;

	if (g_atomic_int_get(&hs->shut)) {
		g_set_error(error, CFS_ERROR, EIO, "the export was released");
		return false;
	}
	if (hs->fd >= 0)
		return cfs_pread_all(hs->fd, buf, len, off, error);
	for (guint i = 0; i < SMB_CONNS && !conn; i++)
		if (g_mutex_trylock(&hs->conns[i].lock))
			conn = &hs->conns[i];
	if (!conn) {
		conn = &hs->conns[0];
		g_mutex_lock(&conn->lock);
	}
	ok = smb_conn_read(hs, conn, buf, len, off, error);
	g_mutex_unlock(&conn->lock);
	return ok;
}

void hv_source_shut(CfsSource *src)
{
	HvSource *hs = src->priv;

	g_atomic_int_set(&hs->shut, 1);
	for (guint i = 0; i < SMB_CONNS; i++) {
		g_mutex_lock(&hs->conns[i].lock);
		smb_conn_drop(&hs->conns[i]);
		g_mutex_unlock(&hs->conns[i].lock);
	}
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
	for (guint i = 0; i < SMB_CONNS; i++)
		g_mutex_clear(&hs->conns[i].lock);
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
	SmbConn *conn = &hs->conns[0];
	struct stat st;
	bool ok = true;

	g_mutex_lock(&conn->lock);
	if (!smb_conn_open(hs, conn, error))
		ok = false;
	else if (smbc_getFunctionFstat(conn->ctx)(conn->ctx, conn->file,
						  &st) < 0)
		ok = smb_errno(error, errno, "stat", hs->url);
	g_mutex_unlock(&conn->lock);
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
	for (guint i = 0; i < SMB_CONNS; i++)
		g_mutex_init(&hs->conns[i].lock);
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
