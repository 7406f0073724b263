/* SPDX-License-Identifier: MIT */
/*
 * The filesystem's tree: folders per provider and VM, disk files, views,
 * info.json and .progress files, with inode numbers that never change
 * while mounted. Provider folders fill from the provider's inventory on
 * first use and again after the listing TTL.
 *
 * Inventories are listed on the control pool, every provider at once;
 * a FUSE thread only waits a little for a provider's first listing.
 *
 * Lock order: the tree lock, then export locks; a slot's lock is a leaf
 * (never held while listing). Nodes are never freed while
 * mounted, so a node pointer taken under the tree lock stays valid; its
 * children array needs the lock.
 */
#pragma once

#include "fs/export.h"
#include "fs/extra.h"

typedef enum {
	NODE_DIR,
	NODE_DISK,
	NODE_PROGRESS,
	NODE_INFO,
	NODE_EXTRA,	/* an OVF, an OVA: made of metadata and disks */
	NODE_METRICS,	/* MOUNT/.metrics */
} CfsNodeKind;

typedef struct CfsProviderSlot CfsProviderSlot;
typedef struct CfsFs CfsFs;
typedef struct CfsNode CfsNode;

struct CfsNode {
	fuse_ino_t ino;
	char *name;
	char *path;		/* relative to the mount: "url/web01/disk.raw" */
	CfsNode *parent;
	CfsNodeKind kind;
	gint64 mtime;		/* seconds since the epoch: what the provider
				 * says of the VM, else the mount's time */
	CfsProviderSlot *slot;	/* the provider folder it is in, or NULL */
	bool linked;		/* protected by tree lock: still in its parent */
	GPtrArray *children;	/* protected by tree lock (DIR) */
	char *error;		/* protected by tree lock (DIR of a VM) */
	char *text;		/* protected by tree lock (INFO) */
	CfsExport *ex;		/* DISK: its export */
	const CfsFormat *format; /* DISK: the view's, or NULL: native bytes */
	CfsNode *target;	/* PROGRESS: the file or folder it describes */
	CfsExtra *extra;	/* protected by tree lock (EXTRA); readers
				 * take a reference */
};

struct CfsProviderSlot {
	CfsProvider *prov;
	CfsFs *fs;
	CfsNode *dir;
	GStrv include;		/* globs on VM paths: shown if any matches */
	GStrv exclude;		/* … and none of these */
	guint shard, shards;	/* shard K of N: a hash of the VM's path */
	GMutex lock;
	GCond cond;		/* a listing finished */
	gint64 listed_at;	/* protected by lock; 0: never */
	bool listing;		/* protected by lock: a list job runs */
	char *error;		/* protected by tree lock */
};

struct CfsFs {
	CfsEngine engine;
	GPtrArray *slots;		/* CfsProviderSlot* */
	GPtrArray *views;		/* const CfsFormat*: formats= */
	guint list_ttl_s;
	guint list_wait_ms;		/* a first listing is waited for */
	gint64 mounted_at;		/* seconds since the epoch */
	uid_t uid;
	gid_t gid;
	mode_t umask;	/* taken from 0444 (files) and 0555 (folders) */
	char *mountpoint;
	guint read_ahead_kb;
	struct fuse_session *se;	/* for size invalidations */

	GRWLock lock;
	GPtrArray *nodes;		/* protected by lock: ino - 1 -> node */
	GPtrArray *exports;		/* protected by lock: all, for the end */
};

/* Read include, exclude and shard from a provider's section. Main
 * thread; an error names the key. */
bool cfs_slot_load_filters(CfsProviderSlot *slot, GKeyFile *conf,
			   const char *section, GError **error);
/* Whether this mount shows the VM at @path (its include, exclude and
 * shard). Any thread. */
bool cfs_slot_shows(const CfsProviderSlot *slot, const char *path);

/* Build the root, its .progress and a folder per provider. */
void cfs_tree_init(CfsFs *fs);
/* Start listing every provider, and their cleanup of what a crashed
 * daemon left. Once the control pool runs. */
void cfs_tree_start(CfsFs *fs);
/* At unmount, after every export ended: each provider's cleanup of its
 * own leftovers, and wait for list jobs. Blocks. */
void cfs_tree_stop(CfsFs *fs);
/* Give back what every export was granted. After the session loop. */
void cfs_tree_end_exports(CfsFs *fs);
/* Free every export and node. */
void cfs_tree_free(CfsFs *fs);

/* The node for @ino, or NULL. Takes the tree lock briefly. */
CfsNode *cfs_tree_get(CfsFs *fs, fuse_ino_t ino);
/* The child @name of @dir, or NULL; a provider's listing is started if
 * due, and a first one waited for up to list_wait_ms. FUSE threads. */
CfsNode *cfs_tree_lookup(CfsFs *fs, CfsNode *dir, const char *name);
/* Start listing @node's provider (for the root, every provider) if it is
 * due; wait up to list_wait_ms for a first listing. FUSE threads. */
void cfs_tree_refresh(CfsFs *fs, CfsNode *node);

/* The size of a file node; false if not known yet (a disk whose export
 * has not said). */
bool cfs_node_size(CfsFs *fs, CfsNode *node, guint64 *size);
/* A reference to what an EXTRA node holds now. Any thread. */
CfsExtra *cfs_node_extra(CfsFs *fs, CfsNode *node);
/* The text of a .progress or info.json node, freshly made. */
char *cfs_node_text(CfsFs *fs, CfsNode *node, gsize *len);
