// SPDX-License-Identifier: MIT
/*
 * Sources over an exported file: over SMB with libsmbclient (random
 * access at any offset) or from export_mount, the export folder mounted
 * on this machine.
 *
 * Over SMB a source keeps a small pool of connections, each a
 * libsmbclient context with the file open: one is made when a read finds
 * the others busy (at most smb_connections), and each is used by one
 * thread at a time, so the engine's I/O threads read at once. With the
 * library's thread support (smb-thread.c), calls on separate contexts may
 * run in parallel; making, opening, closing and freeing contexts touch the
 * library's global state (configuration, logging, module set-up) and go
 * one at a time under smb_setup. Without thread support, every call holds
 * smb_setup and a pool has one connection. A connection whose read fails
 * is made again once; a source that is shut waits for the reads in
 * progress and closes its files (the host will not delete an open file).
 *
 * pread runs on the engine's I/O threads and blocks; the rest on the
 * control pool.
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

/* One connection: owned by the pool while idle, else by the one thread
 * that took it. */
typedef struct {
	SMBCCTX *ctx;		/* NULL until opened */
	SMBCFILE *file;
	guint64 pos;		/* the file offset */
} SmbConn;

typedef struct {
	char *url;		/* smb://host[:port]/share/…/file, no secret */
	char *domain;
	char *user;
	char *password;		/* a secret */
	bool over_smb;	/* read over SMB, else from export_mount */
	int fd;			/* protected by lock: export_mount's file */
	guint max_conns;	/* the pool's bound */
	bool parallel;		/* the library has thread support */

	GMutex lock;
	GCond cond;		/* a connection or a reader came back */
	GPtrArray *idle;	/* protected by lock: SmbConns not in use */
	guint conns;		/* protected by lock: idle and in use */
	guint readers;		/* protected by lock: local reads now */
	bool shut;		/* protected by lock: the export ended */
} HvSource;

/* Held while contexts are made, opened, closed and freed; and around
 * every call when the library has no thread support. */
static GMutex smb_setup;
/* Never used and never freed: freeing the last context tears the library
 * down, which leaks the name of its log file and must then be set up
 * again. */
static SMBCCTX *smb_anchor;	/* protected by smb_setup */
static bool smb_parallel;	/* protected by smb_setup: thread support */

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

/* The library asks a context for credentials: its source's. */
static void smb_auth(SMBCCTX *c, const char *srv, const char *shr, char *wg,
		     int wglen, char *un, int unlen, char *pw, int pwlen)
{
	HvSource *hs = smbc_getOptionUserData(c);

	if (!hs)
		return;
	if (hs->domain && wglen > 0)
		g_strlcpy(wg, hs->domain, (gsize)wglen);
	if (unlen > 0)
		g_strlcpy(un, hs->user, (gsize)unlen);
	if (pwlen > 0)
		g_strlcpy(pw, hs->password, (gsize)pwlen);
}

/* A context for @hs (NULL: the anchor), or NULL with errno. smb_setup
 * held. */
static SMBCCTX *smb_context_new(HvSource *hs)
{
	SMBCCTX *ctx = smbc_new_context();
	int errnum;

	if (!ctx)
		return NULL;
	smbc_setDebug(ctx, 0);
	smbc_setOptionUserData(ctx, hs);
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
	return ctx;
}

/* Thread support first, then the anchor. smb_setup held. */
static bool smb_library(void)
{
	if (smb_anchor)
		return true;
	smb_parallel = hv_smb_threads_init();
	smb_anchor = smb_context_new(NULL);
	return smb_anchor != NULL;
}

/* Whether reads on separate contexts may run at once. */
static bool smb_threads_ok(void)
{
	bool ok;

	g_mutex_lock(&smb_setup);
	ok = smb_library() && smb_parallel;
	g_mutex_unlock(&smb_setup);
	return ok;
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

/* Close @conn's file and free its context. */
static void smb_conn_close(SmbConn *conn)
{
	if (!conn->ctx)
		return;
	g_mutex_lock(&smb_setup);
	if (conn->file)
		smbc_getFunctionClose(conn->ctx)(conn->ctx, conn->file);
	smbc_free_context(conn->ctx, 1);
	g_mutex_unlock(&smb_setup);
	conn->ctx = NULL;
	conn->file = NULL;
}

/* Make @conn's context and open the file. */
static bool smb_conn_open(HvSource *hs, SmbConn *conn, GError **error)
{
	int errnum = 0;

	conn->pos = 0;
	g_mutex_lock(&smb_setup);
	if (smb_library())
		conn->ctx = smb_context_new(hs);
	if (conn->ctx)
		conn->file = smbc_getFunctionOpen(conn->ctx)(
			conn->ctx, hs->url, O_RDONLY, 0);
	if (!conn->file)
		errnum = errno;
	g_mutex_unlock(&smb_setup);
	if (!conn->file) {
		smb_conn_close(conn);
		return smb_errno(error, errnum, "open", hs->url);
	}
	return true;
}

/* Read on an open @conn; false with errno. */
static bool smb_conn_read(SmbConn *conn, guint8 *p, gsize len, guint64 off)
{
	SMBCCTX *ctx = conn->ctx;

	if (conn->pos != off &&
	    smbc_getFunctionLseek(ctx)(ctx, conn->file, (off_t)off,
				       SEEK_SET) < 0)
		return false;
	conn->pos = off;
	while (len) {
		ssize_t n = smbc_getFunctionRead(ctx)(ctx, conn->file, p,
						      MIN(len, SMB_READ_MAX));

		if (n <= 0) {
			if (n == 0)
				errno = EIO;	/* shorter than it said */
			conn->pos = G_MAXUINT64;
			return false;
		}
		p += n;
		len -= (gsize)n;
		conn->pos += (guint64)n;
	}
	return true;
}

/* A read that fails is tried once more on a new connection. */
static bool smb_read(HvSource *hs, SmbConn *conn, void *buf, gsize len,
		     guint64 off, GError **error)
{
	int errnum;
	bool ok;

	for (int attempt = 0;; attempt++) {
		if (!conn->ctx && !smb_conn_open(hs, conn, error))
			return false;
		if (!hs->parallel)
			g_mutex_lock(&smb_setup);
		ok = smb_conn_read(conn, buf, len, off);
		errnum = errno;
		if (!hs->parallel)
			g_mutex_unlock(&smb_setup);
		if (ok)
			return true;
		smb_conn_close(conn);
		if (attempt > 0)
			return smb_errno(error, errnum, "read", hs->url);
		g_debug("hyperv: SMB read failed (%s), connecting again",
			g_strerror(errnum));
	}
}

/* An idle connection, a new one (not open yet) if none is idle and the
 * pool may grow; else wait. NULL once the source is shut. */
static SmbConn *smb_take(HvSource *hs, GError **error)
{
	SmbConn *conn = NULL;

	g_mutex_lock(&hs->lock);
	while (!hs->shut && !hs->idle->len && hs->conns >= hs->max_conns)
		g_cond_wait(&hs->cond, &hs->lock);
	if (hs->shut) {
		/* nothing */
	} else if (hs->idle->len) {
		conn = g_ptr_array_steal_index_fast(hs->idle,
						    hs->idle->len - 1);
	} else {
		conn = g_new0(SmbConn, 1);
		hs->conns++;
	}
	g_mutex_unlock(&hs->lock);
	if (!conn)
		g_set_error(error, CFS_ERROR, EIO, "the export was released");
	return conn;
}

/* Give @conn back; one that is not open, or of a source that was shut,
 * is closed and freed. */
static void smb_give(HvSource *hs, SmbConn *conn)
{
	bool keep;

	g_mutex_lock(&hs->lock);
	keep = conn->ctx && !hs->shut;
	if (keep)
		g_ptr_array_add(hs->idle, conn);
	g_mutex_unlock(&hs->lock);
	if (keep) {
		g_cond_broadcast(&hs->cond);
		return;
	}
	smb_conn_close(conn);
	g_free(conn);
	g_mutex_lock(&hs->lock);
	hs->conns--;
	g_cond_broadcast(&hs->cond);
	g_mutex_unlock(&hs->lock);
}

static bool local_pread(HvSource *hs, void *buf, gsize len, guint64 off,
			GError **error)
{
	int fd;
	bool ok;

	g_mutex_lock(&hs->lock);
	fd = hs->shut ? -1 : hs->fd;
	if (fd >= 0)
		hs->readers++;
	g_mutex_unlock(&hs->lock);
	if (fd < 0) {
		g_set_error(error, CFS_ERROR, EIO, "the export was released");
		return false;
	}
	ok = cfs_pread_all(fd, buf, len, off, error);
	g_mutex_lock(&hs->lock);
	hs->readers--;
	g_cond_broadcast(&hs->cond);
	g_mutex_unlock(&hs->lock);
	return ok;
}

static bool hv_source_pread(CfsSource *src, void *buf, gsize len,
			    guint64 off, GError **error)
{
	HvSource *hs = src->priv;
	SmbConn *conn;
	bool ok;

	if (!hs->over_smb)
		return local_pread(hs, buf, len, off, error);
	conn = smb_take(hs, error);
	if (!conn)
		return false;
	ok = smb_read(hs, conn, buf, len, off, error);
	smb_give(hs, conn);
	return ok;
}

void hv_source_shut(CfsSource *src)
{
	HvSource *hs = src->priv;
	g_autoptr(GPtrArray) idle = NULL;
	int fd;

	g_mutex_lock(&hs->lock);
	hs->shut = true;
	g_cond_broadcast(&hs->cond);
	while (hs->readers || hs->conns > hs->idle->len)
		g_cond_wait(&hs->cond, &hs->lock);
	idle = g_steal_pointer(&hs->idle);
	hs->idle = g_ptr_array_new();
	hs->conns = 0;
	fd = hs->fd;
	hs->fd = -1;
	g_mutex_unlock(&hs->lock);
	for (guint i = 0; i < idle->len; i++) {
		smb_conn_close(idle->pdata[i]);
		g_free(idle->pdata[i]);
	}
	if (fd >= 0)
		close(fd);
}

static void hv_source_free(CfsSource *src)
{
	HvSource *hs = src->priv;

	if (!hs)
		return;
	hv_source_shut(src);
	g_ptr_array_unref(hs->idle);
	g_mutex_clear(&hs->lock);
	g_cond_clear(&hs->cond);
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

/* Size and time of the file, from the pool's first connection (which
 * stays open for the reads). */
static bool smb_stat(HvSource *hs, guint64 *size, gint64 *mtime,
		     GError **error)
{
	SmbConn *conn = smb_take(hs, error);
	struct stat st;
	bool ok;

	if (!conn)
		return false;
	ok = smb_conn_open(hs, conn, error);
	if (ok) {
		g_mutex_lock(&smb_setup);
		if (smbc_getFunctionFstat(conn->ctx)(conn->ctx, conn->file,
						     &st) < 0)
			ok = smb_errno(error, errno, "stat", hs->url);
		g_mutex_unlock(&smb_setup);
	}
	if (ok) {
		*size = (guint64)st.st_size;
		*mtime = (gint64)st.st_mtime;
	} else {
		smb_conn_close(conn);
	}
	smb_give(hs, conn);
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
	g_mutex_init(&hs->lock);
	g_cond_init(&hs->cond);
	hs->idle = g_ptr_array_new();
	if (prov->export_mount) {
		ok = local_open(prov, hs, rel, &size, &mtime, error);
	} else {
		hs->url = smb_file_url(prov->smb_url, rel);
		hs->over_smb = true;
		hs->domain = sep ? g_strndup(prov->smb_user,
					     (gsize)(sep - prov->smb_user)) :
				   NULL;
		hs->user = g_strdup(sep ? sep + 1 : prov->smb_user);
		hs->password = cfs_secret_dup(prov->smb_password);
		hs->parallel = smb_threads_ok();
		hs->max_conns = hs->parallel ? prov->smb_connections : 1;
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
