// SPDX-License-Identifier: MIT
/*
 * FUSE low-level operations. The mount is read-only: every mutation
 * answers EROFS. Disk reads go to the export (answered now or when their
 * chunks land); .progress and info.json are read from a snapshot made at
 * open (direct I/O, so each open sees fresh numbers).
 */
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "common/error.h"
#include "fs/ops.h"

#define DIR_TTL 1.0
#define DISK_TTL 60.0

static CfsFs *ops_fs(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* Bytes of data a disk file holds, from the allocation map where it is
 * known (the raw bytes, or a view of them): what st_blocks says, so that
 * `cp --sparse=auto`, `rsync --sparse` and `du` see the holes. Without a
 * map every byte counts. */
static guint64 node_data_bytes(CfsNode *n, guint64 size)
{
	const CfsView *view;
	CfsExtentMap *map;
	guint64 data = 0, pos = 0, hole;

	if (n->kind != NODE_DISK || size == 0)
		return size;
	view = cfs_export_view(n->ex, n->format);
	map = cfs_export_map(n->ex);
	if (!view && map && !n->format)
		return MIN(map->data_bytes, size);
	if (!view)
		return size;
	while (pos < size && cfs_view_next_data(view, pos, &pos)) {
		if (!cfs_view_next_hole(view, pos, &hole) || hole > size)
			hole = size;
		if (hole <= pos)
			break;
		data += hole - pos;
		pos = hole;
	}
	return data;
}

static void node_stat(CfsFs *fs, CfsNode *n, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = n->ino;
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	if (n->kind == NODE_DIR) {
		st->st_mode = S_IFDIR | (0555 & ~fs->umask);
		st->st_nlink = 2;
	} else {
		guint64 size;

		/* A size not known yet is 0: such files are read with
		 * direct I/O to their real end (see open). */
		cfs_node_size(fs, n, &size);
		st->st_mode = S_IFREG | (0444 & ~fs->umask);
		st->st_nlink = 1;
		st->st_size = (off_t)size;
		st->st_blocks = (blkcnt_t)((node_data_bytes(n, size) + 511) /
					   512);
	}
	st->st_blksize = 1024 * 1024;
	st->st_mtim.tv_sec = (time_t)n->mtime;
	st->st_ctim = st->st_mtim;
	st->st_atim = st->st_mtim;
}

static double node_ttl(const CfsNode *n)
{
	if (n->kind == NODE_DISK || n->kind == NODE_EXTRA)
		return DISK_TTL;
	return n->kind == NODE_DIR ? DIR_TTL : 0.0;
}

static void ops_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	CfsFs *fs = ops_fs(req);
	CfsNode *dir = cfs_tree_get(fs, parent);
	CfsNode *n = dir ? cfs_tree_lookup(fs, dir, name) : NULL;
	struct fuse_entry_param e = { 0 };

	if (!n) {
		e.entry_timeout = DIR_TTL;	/* a negative entry */
		fuse_reply_entry(req, &e);
		return;
	}
	e.ino = n->ino;
	e.generation = 1;
	e.attr_timeout = node_ttl(n);
	e.entry_timeout = node_ttl(n);
	node_stat(fs, n, &e.attr);
	fuse_reply_entry(req, &e);
}

static void ops_getattr(fuse_req_t req, fuse_ino_t ino,
			struct fuse_file_info *fi)
{
	CfsFs *fs = ops_fs(req);
	CfsNode *n = cfs_tree_get(fs, ino);
	struct stat st;

	if (!n) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	node_stat(fs, n, &st);
	fuse_reply_attr(req, &st, node_ttl(n));
}

static void ops_readdir(fuse_req_t req, fuse_ino_t ino, size_t size,
			off_t off, struct fuse_file_info *fi)
{
	CfsFs *fs = ops_fs(req);
	CfsNode *dir = cfs_tree_get(fs, ino);
	g_autofree char *buf = NULL;
	size_t used = 0;

	if (!dir || dir->kind != NODE_DIR) {
		fuse_reply_err(req, dir ? ENOTDIR : ENOENT);
		return;
	}
	cfs_tree_refresh(fs, dir);
	buf = g_malloc(size);
	g_rw_lock_reader_lock(&fs->lock);
	/* Offsets: 0 ".", 1 "..", 2+i the i-th child. */
	for (off_t i = off; i < (off_t)dir->children->len + 2; i++) {
		struct stat st = { 0 };
		const char *name;
		size_t need;

		if (i < 2) {
			name = i == 0 ? "." : "..";
			st.st_ino = i == 0 || !dir->parent ? dir->ino :
							     dir->parent->ino;
			st.st_mode = S_IFDIR;
		} else {
			CfsNode *c = dir->children->pdata[i - 2];

			name = c->name;
			st.st_ino = c->ino;
			st.st_mode = c->kind == NODE_DIR ? S_IFDIR : S_IFREG;
		}
		need = fuse_add_direntry(req, buf + used, size - used, name,
					 &st, i + 1);
		if (need > size - used)
			break;
		used += need;
	}
	g_rw_lock_reader_unlock(&fs->lock);
	fuse_reply_buf(req, buf, used);
}

static void ops_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	CfsFs *fs = ops_fs(req);
	CfsNode *n = cfs_tree_get(fs, ino);

	if (!n) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if ((fi->flags & O_ACCMODE) != O_RDONLY ||
	    (fi->flags & (O_TRUNC | O_CREAT))) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (n->kind == NODE_DIR) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	if (n->kind == NODE_DISK || n->kind == NODE_EXTRA) {
		guint64 size;

		/* The bytes of an export never change while it lives; a
		 * file whose size is not known yet bypasses the page cache,
		 * which would stop at the size the kernel believes. */
		if (cfs_node_size(fs, n, &size))
			fi->keep_cache = 1;
		else
			fi->direct_io = 1;
		fi->fh = 0;
		if (n->kind == NODE_DISK) {
			cfs_export_open(n->ex);
		} else {
			/* The content read is the one opened. */
			CfsExtra *x = cfs_node_extra(fs, n);

			cfs_extra_open(x);
			fi->fh = (uint64_t)(uintptr_t)x;
		}
	} else {
		gsize len;
		GBytes *text;
		char *data = cfs_node_text(fs, n, &len);

		text = g_bytes_new_take(data, len);
		fi->fh = (uint64_t)(uintptr_t)text;
		fi->direct_io = 1;
	}
	fuse_reply_open(req, fi);
}

static void ops_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	CfsFs *fs = ops_fs(req);
	CfsNode *n = cfs_tree_get(fs, ino);
	GBytes *text;
	gsize len;
	const char *data;

	if (!n) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (n->kind == NODE_DISK) {
		cfs_export_read(n->ex, n->format, req, size, off);
		return;
	}
	if (n->kind == NODE_EXTRA) {
		cfs_extra_read((CfsExtra *)(uintptr_t)fi->fh,
			       fs->engine.ctx.control, req, size, off);
		return;
	}
	/* Hold the snapshot over the reply: the reader may close the file,
	 * and release free it, as soon as the reply is written. */
	text = g_bytes_ref((GBytes *)(uintptr_t)fi->fh);
	data = g_bytes_get_data(text, &len);
	if ((gsize)off >= len)
		fuse_reply_buf(req, NULL, 0);
	else
		fuse_reply_buf(req, data + off, MIN(size, len - (gsize)off));
	g_bytes_unref(text);
}

static void ops_release(fuse_req_t req, fuse_ino_t ino,
			struct fuse_file_info *fi)
{
	CfsFs *fs = ops_fs(req);
	CfsNode *n = cfs_tree_get(fs, ino);

	if (n && n->kind == NODE_DISK) {
		cfs_export_release(n->ex);
	} else if (n && n->kind == NODE_EXTRA) {
		cfs_extra_release((CfsExtra *)(uintptr_t)fi->fh);
		cfs_extra_unref((CfsExtra *)(uintptr_t)fi->fh);
	} else if (fi->fh)
		g_bytes_unref((GBytes *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

static void ops_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		      struct fuse_file_info *fi)
{
	CfsFs *fs = ops_fs(req);
	CfsNode *n = cfs_tree_get(fs, ino);
	const CfsView *view;
	CfsExtentMap *map;
	guint64 out = 0, size = 0;
	bool found;

	if (!n || n->kind != NODE_DISK ||
	    (whence != SEEK_DATA && whence != SEEK_HOLE)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (off < 0) {
		fuse_reply_err(req, ENXIO);
		return;
	}
	view = cfs_export_view(n->ex, n->format);
	map = cfs_export_map(n->ex);
	if (view)
		found = whence == SEEK_DATA ?
				cfs_view_next_data(view, (guint64)off, &out) :
				cfs_view_next_hole(view, (guint64)off, &out);
	else if (map && !n->format)
		found = whence == SEEK_DATA ?
				cfs_extent_map_next_data(map, (guint64)off, &out) :
				cfs_extent_map_next_hole(map, (guint64)off, &out);
	else if (cfs_node_size(fs, n, &size))	/* no map: all data */
		found = (guint64)off < size &&
			(out = whence == SEEK_DATA ? (guint64)off : size, true);
	else	/* not known yet: no holes to tell of */
		found = (out = (guint64)off, whence == SEEK_DATA);
	if (!found) {
		fuse_reply_err(req, ENXIO);
		return;
	}
	/* cp and other sparse-aware copies ask where each extent ends, then
	 * read it: fetch it now. */
	if (whence == SEEK_HOLE && map && !view && !n->format &&
	    out > (guint64)off)
		cfs_export_note_extent(n->ex, (guint64)off, out - (guint64)off);
	fuse_reply_lseek(req, (off_t)out);
}

static void ops_statfs(fuse_req_t req, fuse_ino_t ino)
{
	CfsFs *fs = ops_fs(req);
	struct statvfs st = {
		.f_bsize = 1024 * 1024,
		.f_frsize = 1024 * 1024,
		.f_namemax = 255,
		.f_flag = ST_RDONLY,
	};

	g_rw_lock_reader_lock(&fs->lock);
	st.f_files = fs->nodes->len;
	g_rw_lock_reader_unlock(&fs->lock);
	fuse_reply_statfs(req, &st);
}

static void ops_init(void *userdata, struct fuse_conn_info *conn)
{
	/* Readers may run in parallel; the kernel may send reads at once. */
	if (conn->capable & FUSE_CAP_ASYNC_READ)
		conn->want |= FUSE_CAP_ASYNC_READ;
	/* Direct reads (O_DIRECT, files of unknown size) sent as one
	 * synchronous request can be interrupted; asynchronous ones cannot. */
	conn->want &= ~FUSE_CAP_ASYNC_DIO;
	/* Replies from the cache file are spliced, not copied. */
	if (conn->capable & FUSE_CAP_SPLICE_WRITE)
		conn->want |= FUSE_CAP_SPLICE_WRITE;
	conn->max_read = CFS_MAX_READ;
}

/* --- the mount is read-only --- */

static void ops_erofs(fuse_req_t req)
{
	fuse_reply_err(req, EROFS);
}

static void ops_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
			int to_set, struct fuse_file_info *fi)
{
	ops_erofs(req);
}

static void ops_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, dev_t rdev)
{
	ops_erofs(req);
}

static void ops_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode)
{
	ops_erofs(req);
}

static void ops_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	ops_erofs(req);
}

static void ops_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
			const char *name)
{
	ops_erofs(req);
}

static void ops_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		       fuse_ino_t newparent, const char *newname,
		       unsigned int flags)
{
	ops_erofs(req);
}

static void ops_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
		     const char *newname)
{
	ops_erofs(req);
}

static void ops_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		      size_t size, off_t off, struct fuse_file_info *fi)
{
	ops_erofs(req);
}

static void ops_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		       mode_t mode, struct fuse_file_info *fi)
{
	ops_erofs(req);
}

static void ops_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			 const char *value, size_t size, int flags)
{
	ops_erofs(req);
}

static void ops_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	ops_erofs(req);
}

const struct fuse_lowlevel_ops cfs_fuse_ops = {
	.init = ops_init,
	.lookup = ops_lookup,
	.getattr = ops_getattr,
	.readdir = ops_readdir,
	.open = ops_open,
	.read = ops_read,
	.release = ops_release,
	.lseek = ops_lseek,
	.statfs = ops_statfs,
	.setattr = ops_setattr,
	.mknod = ops_mknod,
	.mkdir = ops_mkdir,
	.unlink = ops_unlink,
	.rmdir = ops_unlink,
	.symlink = ops_symlink,
	.rename = ops_rename,
	.link = ops_link,
	.write = ops_write,
	.create = ops_create,
	.setxattr = ops_setxattr,
	.removexattr = ops_removexattr,
};
