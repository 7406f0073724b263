// SPDX-License-Identifier: MIT
/* The inode tree: providers, VMs, disks, views and virtual files. */
#include <fnmatch.h>
#include <stdio.h>
#include <string.h>

#include "common/error.h"
#include "common/util.h"
#include "fs/metrics.h"
#include "fs/tree.h"

/* Tree lock held for writing. */
static CfsNode *node_new(CfsFs *fs, CfsNode *parent, const char *name,
			 CfsNodeKind kind)
{
	CfsNode *n = g_new0(CfsNode, 1);

	n->name = g_strdup(name);
	n->kind = kind;
	n->parent = parent;
	n->linked = true;
	n->mtime = parent ? parent->mtime : fs->mounted_at;
	if (parent) {
		n->slot = parent->slot;
		n->path = *parent->path ? g_build_filename(parent->path, name,
							   NULL) :
					  g_strdup(name);
		g_ptr_array_add(parent->children, n);
	} else {
		n->path = g_strdup("");
	}
	if (kind == NODE_DIR)
		n->children = g_ptr_array_new();
	g_ptr_array_add(fs->nodes, n);
	n->ino = fs->nodes->len;
	return n;
}

static CfsNode *dir_new(CfsFs *fs, CfsNode *parent, const char *name)
{
	CfsNode *dir = node_new(fs, parent, name, NODE_DIR);
	CfsNode *progress = node_new(fs, dir, ".progress", NODE_PROGRESS);

	progress->target = dir;
	return dir;
}

static CfsNode *child_find(CfsNode *dir, const char *name)
{
	for (guint i = 0; i < dir->children->len; i++) {
		CfsNode *c = dir->children->pdata[i];

		if (g_str_equal(c->name, name))
			return c;
	}
	return NULL;
}

static void child_unlink(CfsNode *dir, CfsNode *child)
{
	child->linked = false;
	g_ptr_array_remove(dir->children, child);
}

void cfs_tree_init(CfsFs *fs)
{
	CfsNode *root;

	g_rw_lock_init(&fs->lock);
	fs->mounted_at = g_get_real_time() / G_USEC_PER_SEC;
	fs->nodes = g_ptr_array_new();
	fs->exports = g_ptr_array_new();
	root = dir_new(fs, NULL, "");
	g_assert(root->ino == FUSE_ROOT_ID);
	node_new(fs, root, ".metrics", NODE_METRICS);
	for (guint i = 0; i < fs->slots->len; i++) {
		CfsProviderSlot *slot = fs->slots->pdata[i];

		slot->fs = fs;
		slot->dir = dir_new(fs, root, slot->prov->name);
		slot->dir->slot = slot;
		for (guint j = 0; j < slot->dir->children->len; j++)
			((CfsNode *)slot->dir->children->pdata[j])->slot = slot;
	}
}

static void node_free(CfsNode *n)
{
	g_free(n->name);
	g_free(n->path);
	g_free(n->error);
	g_free(n->text);
	g_clear_pointer(&n->extra, cfs_extra_unref);
	if (n->children)
		g_ptr_array_unref(n->children);
	g_free(n);
}

void cfs_tree_end_exports(CfsFs *fs)
{
	for (guint i = 0; i < fs->exports->len; i++)
		cfs_export_end(fs->exports->pdata[i]);
}

void cfs_tree_free(CfsFs *fs)
{
	for (guint i = 0; i < fs->exports->len; i++)
		cfs_export_free(fs->exports->pdata[i]);
	g_ptr_array_unref(fs->exports);
	g_ptr_array_set_free_func(fs->nodes, (GDestroyNotify)node_free);
	g_ptr_array_unref(fs->nodes);
	g_rw_lock_clear(&fs->lock);
}

CfsNode *cfs_tree_get(CfsFs *fs, fuse_ino_t ino)
{
	CfsNode *n = NULL;

	g_rw_lock_reader_lock(&fs->lock);
	if (ino >= 1 && ino <= fs->nodes->len)
		n = fs->nodes->pdata[ino - 1];
	g_rw_lock_reader_unlock(&fs->lock);
	return n;
}

/* --- which VMs this mount shows --- */

static GStrv slot_globs(GKeyFile *conf, const char *section, const char *key)
{
	g_autofree char *text = g_key_file_get_string(conf, section, key, NULL);
	g_auto(GStrv) parts = text ? g_strsplit_set(text, ";,", -1) : NULL;
	GPtrArray *out;

	if (!parts)
		return NULL;
	out = g_ptr_array_new();
	for (char **p = parts; *p; p++)
		if (*g_strstrip(*p))
			g_ptr_array_add(out, g_strdup(*p));
	g_ptr_array_add(out, NULL);
	return (GStrv)g_ptr_array_free(out, FALSE);
}

bool cfs_slot_load_filters(CfsProviderSlot *slot, GKeyFile *conf,
			   const char *section, GError **error)
{
	g_autofree char *shard = g_key_file_get_string(conf, section, "shard",
						       NULL);
	guint k = 0, n = 0;
	int end = -1;

	slot->include = slot_globs(conf, section, "include");
	slot->exclude = slot_globs(conf, section, "exclude");
	slot->shard = 0;
	slot->shards = 1;
	if (!shard)
		return true;
	if (sscanf(shard, " %u / %u %n", &k, &n, &end) != 2 ||
	    shard[end] || n == 0 || n > 100000 || k >= n) {
		g_set_error(error, CFS_ERROR, EINVAL, "[%s] shard: '%s' is not "
			    "K/N with 0 <= K < N", section, shard);
		return false;
	}
	slot->shard = k;
	slot->shards = n;
	return true;
}

static bool globs_match(const GStrv globs, const char *path)
{
	const char *base = strrchr(path, '/');

	for (char **g = globs; g && *g; g++)
		if (fnmatch(*g, path, 0) == 0 ||
		    (base && fnmatch(*g, base + 1, 0) == 0))
			return true;
	return false;
}

bool cfs_slot_shows(const CfsProviderSlot *slot, const char *path)
{
	guint8 digest[32];
	gsize len = sizeof(digest);
	guint64 h = 0;
	GChecksum *sum;

	if (slot->include && !globs_match(slot->include, path))
		return false;
	if (globs_match(slot->exclude, path))
		return false;
	if (slot->shards <= 1)
		return true;
	/* Stable across hosts and releases: SHA-256 of the path. */
	sum = g_checksum_new(G_CHECKSUM_SHA256);
	g_checksum_update(sum, (const guchar *)path, -1);
	g_checksum_get_digest(sum, digest, &len);
	g_checksum_free(sum);
	for (int i = 0; i < 8; i++)
		h = h << 8 | digest[i];
	return h % slot->shards == slot->shard;
}

/* --- applying an inventory --- */

/* The folder for a VM path "a/b", made as needed. Tree lock held. */
static CfsNode *vm_dir(CfsFs *fs, CfsNode *top, const char *path)
{
	g_auto(GStrv) parts = g_strsplit(path, "/", -1);
	CfsNode *dir = top;

	for (char **p = parts; *p; p++) {
		g_autofree char *name = cfs_name_sanitize(*p);
		CfsNode *next = child_find(dir, name);

		if (!next || next->kind != NODE_DIR)
			next = dir_new(fs, dir, name);
		dir = next;
	}
	return dir;
}

static void file_new(CfsFs *fs, CfsNode *dir, CfsExport *ex,
		     const CfsFormat *format)
{
	CfsDisk *disk = cfs_export_disk(ex);
	g_autofree char *name = g_strdup_printf(
		"%s.%s", disk->name, format ? format->name : disk->format);
	g_autofree char *pname = g_strdup_printf("%s.progress", name);
	CfsNode *file, *progress;

	if (child_find(dir, name))
		return;
	file = node_new(fs, dir, name, NODE_DISK);
	file->ex = ex;
	file->format = format;
	if (format)
		cfs_export_add_view(ex, format);
	progress = node_new(fs, dir, pname, NODE_PROGRESS);
	progress->target = file;
}

/* Sizes that were unknown are known now: tell the kernel. */
static void export_ready(CfsExport *ex, gpointer data)
{
	CfsFs *fs = data;
	g_autoptr(GArray) inos = g_array_new(FALSE, FALSE, sizeof(fuse_ino_t));

	g_rw_lock_reader_lock(&fs->lock);
	for (guint i = 0; i < fs->nodes->len; i++) {
		CfsNode *n = fs->nodes->pdata[i];

		if ((n->kind == NODE_DISK && n->ex == ex) ||
		    (n->kind == NODE_EXTRA && cfs_extra_uses(n->extra, ex)))
			g_array_append_val(inos, n->ino);
	}
	g_rw_lock_reader_unlock(&fs->lock);
	for (guint i = 0; fs->se && i < inos->len; i++)
		fuse_lowlevel_notify_inval_inode(
			fs->se, g_array_index(inos, fuse_ino_t, i), 0, 0);
}

/* The name of a disk's main file: "disk.vmdk". Transfer full. */
static char *disk_main_name(const CfsDisk *disk)
{
	return g_strdup_printf("%s.%s", disk->name,
			       disk->present ? disk->present : disk->format);
}

/* The main files of a VM's disks: a provider that lists "disk.vhdx"
 * itself (its cloud exports that format) takes the name from the view
 * formats=vhdx would add. */
static GHashTable *vm_main_names(const CfsVm *vm)
{
	GHashTable *names = g_hash_table_new_full(g_str_hash, g_str_equal,
						  g_free, NULL);

	for (guint d = 0; d < vm->disks->len; d++)
		g_hash_table_add(names, disk_main_name(vm->disks->pdata[d]));
	return names;
}

/* Whether @file is a view whose name a provider file of @names takes. */
static bool view_taken(const CfsNode *file, GHashTable *names)
{
	g_autofree char *own = disk_main_name(cfs_export_disk(file->ex));

	return !g_str_equal(file->name, own) &&
	       g_hash_table_contains(names, file->name);
}

/* The files of a new disk: the main one (its bytes, or the view the
 * provider presents them as), then the views formats= asks for, but for
 * names a provider file of the VM (@names) has. Views are made of raw
 * disks, and of the disk inside a container (VHD, VHDX, VMDK bytes)
 * through its reader. */
static void disk_files(CfsFs *fs, CfsNode *dir, CfsExport *ex,
		       GHashTable *names)
{
	CfsDisk *disk = cfs_export_disk(ex);
	bool raw = g_str_equal(disk->format, "raw");

	file_new(fs, dir, ex, disk->present ? cfs_format_find(disk->present) :
					      NULL);
	for (guint f = 0; cfs_export_viewable(ex) && f < fs->views->len; f++) {
		const CfsFormat *fmt = fs->views->pdata[f];
		g_autofree char *name = g_strdup_printf("%s.%s", disk->name,
							fmt->name);

		/* "raw" of a raw disk is its own bytes, not a view. */
		if (raw && g_str_equal(fmt->name, "raw"))
			fmt = NULL;
		else if (g_hash_table_contains(names, name))
			continue;
		file_new(fs, dir, ex, fmt);
	}
	cfs_export_set_ready_hook(ex, export_ready, fs);
}

/* Find the export of a disk already shown in @dir, if its bytes are the
 * same. Tree lock held. */
static CfsExport *disk_existing(CfsNode *dir, const CfsDisk *disk)
{
	g_autofree char *name = disk_main_name(disk);
	CfsNode *n = child_find(dir, name);

	if (n && n->kind == NODE_DISK &&
	    g_strcmp0(cfs_export_disk(n->ex)->id, disk->id) == 0 &&
	    cfs_export_disk(n->ex)->size == disk->size)
		return n->ex;
	return NULL;
}

/* The files made of metadata and disks: new content replaces the old
 * (readers hold a reference), files the VM no longer has leave. Tree
 * lock held. */
static void vm_extra_files(CfsFs *fs, CfsNode *dir, CfsVm *vm,
			   GPtrArray *exports)
{
	gint64 mtime = vm->mtime ? vm->mtime : g_get_real_time() / G_USEC_PER_SEC;

	for (guint i = dir->children->len; i-- > 0;) {
		CfsNode *c = dir->children->pdata[i];
		bool keep = false;

		for (guint f = 0; c->kind == NODE_EXTRA && f < vm->files->len;
		     f++)
			keep = keep || g_str_equal(c->name, ((CfsVmFile *)
					vm->files->pdata[f])->name);
		if (c->kind == NODE_EXTRA && !keep)
			child_unlink(dir, c);
	}
	while (vm->files->len) {
		CfsVmFile *file = g_ptr_array_steal_index(vm->files, 0);
		g_autofree char *name = cfs_name_sanitize(file->name);
		CfsNode *n = child_find(dir, name);

		if (n && n->kind != NODE_EXTRA) {
			g_warning("%s: a file named %s is there already",
				  dir->path, name);
			g_ptr_array_add(vm->files, file);	/* freed there */
			break;
		}
		if (!n)
			n = node_new(fs, dir, name, NODE_EXTRA);
		g_clear_pointer(&n->extra, cfs_extra_unref);
		n->extra = cfs_extra_new(file, exports, mtime);
	}
}

static void vm_apply(CfsFs *fs, CfsProviderSlot *slot, CfsVm *vm,
		     GHashTable *seen)
{
	CfsNode *dir = vm_dir(fs, slot->dir, vm->path);
	CfsNode *info = child_find(dir, "info.json");
	g_autoptr(GPtrArray) exports = g_ptr_array_new();
	g_autoptr(GHashTable) names = vm_main_names(vm);

	g_hash_table_add(seen, dir);
	for (CfsNode *up = dir->parent; up && up != slot->dir; up = up->parent)
		g_hash_table_add(seen, up);
	g_free(dir->error);
	dir->error = g_strdup(vm->error);
	/* The VM's time (launch, last change) for its folder and files. */
	dir->mtime = vm->mtime ? vm->mtime : fs->mounted_at;
	for (guint i = 0; i < dir->children->len; i++)
		((CfsNode *)dir->children->pdata[i])->mtime = dir->mtime;
	if (!info)
		info = node_new(fs, dir, "info.json", NODE_INFO);
	g_free(info->text);
	info->text = g_strdup(vm->info_json ? vm->info_json : "{}\n");

	/* Disks that are gone or changed leave, and views whose name a
	 * provider file takes now; new ones come. */
	for (guint i = dir->children->len; i-- > 0;) {
		CfsNode *c = dir->children->pdata[i];
		CfsNode *file = c->kind == NODE_DISK ? c : c->target;
		bool keep = false;

		if (c->kind != NODE_DISK &&
		    !(c->kind == NODE_PROGRESS && c->target->kind == NODE_DISK))
			continue;
		for (guint d = 0; d < vm->disks->len && !keep; d++)
			keep = disk_existing(dir, vm->disks->pdata[d]) ==
			       file->ex;
		if (!keep || view_taken(file, names))
			child_unlink(dir, c);
	}
	while (vm->disks->len) {
		CfsDisk *disk = g_ptr_array_steal_index(vm->disks, 0);
		g_autofree char *label = NULL;
		CfsExport *ex = disk_existing(dir, disk);

		g_ptr_array_add(exports, ex);
		if (ex) {
			cfs_disk_free(disk);
			continue;
		}
		label = g_strdup_printf("%s/%s", dir->path, disk->name);
		ex = cfs_export_new(&fs->engine, slot->prov, disk, label);
		exports->pdata[exports->len - 1] = ex;
		g_ptr_array_add(fs->exports, ex);
		disk_files(fs, dir, ex, names);
	}
	vm_extra_files(fs, dir, vm, exports);
}

/* Unlink VM folders the inventory no longer has. Tree lock held. */
static void prune(CfsNode *dir, GHashTable *seen)
{
	for (guint i = dir->children->len; i-- > 0;) {
		CfsNode *c = dir->children->pdata[i];

		if (c->kind != NODE_DIR)
			continue;
		if (!g_hash_table_contains(seen, c))
			child_unlink(dir, c);
		else
			prune(c, seen);
	}
}

/* Control pool: one listing of a provider, applied to the tree. */
static void slot_list_job(gpointer data)
{
	CfsProviderSlot *slot = data;
	CfsFs *fs = slot->fs;
	g_autoptr(GPtrArray) vms = g_ptr_array_new_with_free_func(
		(GDestroyNotify)cfs_vm_free);
	g_autoptr(GHashTable) seen = g_hash_table_new(NULL, NULL);
	g_autoptr(GError) error = NULL;

	if (!slot->prov->ops->list(slot->prov, vms, &error))
		g_warning("%s: listing failed: %s", slot->prov->name,
			  error->message);
	g_rw_lock_writer_lock(&fs->lock);
	g_free(slot->error);
	slot->error = error ? g_strdup(error->message) : NULL;
	if (!error) {
		for (guint i = 0; i < vms->len; i++) {
			CfsVm *vm = vms->pdata[i];

			if (cfs_slot_shows(slot, vm->path))
				vm_apply(fs, slot, vm, seen);
		}
		prune(slot->dir, seen);
	}
	g_rw_lock_writer_unlock(&fs->lock);
	g_mutex_lock(&slot->lock);
	slot->listed_at = g_get_monotonic_time();
	slot->listing = false;
	g_cond_broadcast(&slot->cond);
	g_mutex_unlock(&slot->lock);
}

/* Start a listing if the last one is older than the TTL; wait up to
 * @wait_ms for a first one. Never waits for a refresh: the folder shows
 * what is known meanwhile. */
static void slot_refresh(CfsFs *fs, CfsProviderSlot *slot, guint wait_ms)
{
	gint64 now = g_get_monotonic_time();
	gint64 until = now + (gint64)wait_ms * 1000;
	bool start = false;

	g_mutex_lock(&slot->lock);
	if (!slot->listing &&
	    (!slot->listed_at ||
	     now - slot->listed_at >= (gint64)fs->list_ttl_s * G_USEC_PER_SEC)) {
		slot->listing = true;
		start = true;
	}
	g_mutex_unlock(&slot->lock);
	if (start)
		cfs_control_push(fs->engine.ctx.control, slot_list_job, slot);
	g_mutex_lock(&slot->lock);
	while (!slot->listed_at &&
	       g_cond_wait_until(&slot->cond, &slot->lock, until))
		;
	g_mutex_unlock(&slot->lock);
}

/* Control pool: a provider's cleanup of what crashed daemons left. */
static void slot_cleanup_job(gpointer data)
{
	CfsProviderSlot *slot = data;

	slot->prov->ops->cleanup(slot->prov, false);
}

void cfs_tree_start(CfsFs *fs)
{
	for (guint i = 0; i < fs->slots->len; i++) {
		CfsProviderSlot *slot = fs->slots->pdata[i];

		slot_refresh(fs, slot, 0);
		if (slot->prov->ops->cleanup)
			cfs_control_push(fs->engine.ctx.control,
					 slot_cleanup_job, slot);
	}
}

void cfs_tree_stop(CfsFs *fs)
{
	for (guint i = 0; i < fs->slots->len; i++) {
		CfsProviderSlot *slot = fs->slots->pdata[i];

		if (slot->prov->ops->cleanup)
			slot->prov->ops->cleanup(slot->prov, true);
	}
}

void cfs_tree_refresh(CfsFs *fs, CfsNode *node)
{
	if (node->slot) {
		slot_refresh(fs, node->slot, fs->list_wait_ms);
		return;
	}
	if (node->ino != FUSE_ROOT_ID && !(node->kind == NODE_PROGRESS &&
					   node->target->ino == FUSE_ROOT_ID))
		return;
	/* Every provider at once; the root itself never waits. */
	for (guint i = 0; i < fs->slots->len; i++)
		slot_refresh(fs, fs->slots->pdata[i], 0);
}

CfsNode *cfs_tree_lookup(CfsFs *fs, CfsNode *dir, const char *name)
{
	CfsNode *n;

	if (dir->kind != NODE_DIR)
		return NULL;
	if (dir->slot)
		slot_refresh(fs, dir->slot, fs->list_wait_ms);
	g_rw_lock_reader_lock(&fs->lock);
	n = child_find(dir, name);
	g_rw_lock_reader_unlock(&fs->lock);
	return n;
}

/* --- file contents --- */

bool cfs_node_size(CfsFs *fs, CfsNode *node, guint64 *size)
{
	*size = 0;
	switch (node->kind) {
	case NODE_DISK:
		return cfs_export_file_size(node->ex, node->format, size);
	case NODE_INFO:
		g_rw_lock_reader_lock(&fs->lock);
		*size = strlen(node->text);
		g_rw_lock_reader_unlock(&fs->lock);
		return true;
	case NODE_EXTRA: {
		g_autoptr(CfsExtra) x = cfs_node_extra(fs, node);

		return cfs_extra_size(x, size);
	}
	default:
		return true;
	}
}

/* The provider's own line: still listing for the first time, or why its
 * listing failed. Tree lock held (read). */
static void slot_progress(CfsProviderSlot *slot, GString *out)
{
	bool first;

	g_mutex_lock(&slot->lock);
	first = slot->listing && !slot->listed_at;
	g_mutex_unlock(&slot->lock);
	if (first)
		g_string_append_printf(out, "%s state=listing\n",
				       slot->dir->path);
	else if (slot->error)
		cfs_progress_failed(out, slot->dir->path, slot->error);
}

CfsExtra *cfs_node_extra(CfsFs *fs, CfsNode *node)
{
	CfsExtra *x;

	g_rw_lock_reader_lock(&fs->lock);
	x = cfs_extra_ref(node->extra);
	g_rw_lock_reader_unlock(&fs->lock);
	return x;
}

/* Lines for every file below @n. Tree lock held (read). */
static void progress_collect(CfsNode *n, GString *out)
{
	if (n->kind == NODE_DISK) {
		cfs_export_progress(n->ex, n->path, out);
		return;
	}
	if (n->kind != NODE_DIR)
		return;
	if (n->slot && n == n->slot->dir)
		slot_progress(n->slot, out);
	if (n->error)
		cfs_progress_failed(out, n->path, n->error);
	for (guint i = 0; i < n->children->len; i++)
		progress_collect(n->children->pdata[i], out);
}

char *cfs_node_text(CfsFs *fs, CfsNode *node, gsize *len)
{
	GString *out;

	if (node->kind == NODE_METRICS) {
		cfs_tree_refresh(fs, node->parent);	/* never waits */
		return cfs_metrics_text(fs, len);
	}
	out = g_string_new(NULL);
	if (node->kind == NODE_PROGRESS)
		cfs_tree_refresh(fs, node->target);
	g_rw_lock_reader_lock(&fs->lock);
	if (node->kind == NODE_INFO)
		g_string_append(out, node->text);
	else if (node->kind == NODE_PROGRESS)
		progress_collect(node->target, out);
	g_rw_lock_reader_unlock(&fs->lock);
	*len = out->len;
	return g_string_free(out, FALSE);
}
