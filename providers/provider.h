/* SPDX-License-Identifier: MIT */
/*
 * The provider interface. A provider is a type (CfsProviderOps, a table of
 * operations, one per cloud) and an instance (CfsProvider, made from the
 * provider's section of the config file). Like an nbdkit plugin it only
 * says where the bytes of a disk are; chunking, transfers, retries,
 * counting, progress, the cache and the views are the engine's.
 *
 * Thread model: create/free run on the main thread; list runs on a FUSE
 * thread with the provider's list lock held (one list at a time);
 * export_start and export_end run on the control thread pool and may
 * block; source operations may be called from any thread at once.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>

#include "common/extent.h"
#include "common/http.h"

#define CFS_SIZE_UNKNOWN G_MAXUINT64

typedef struct CfsProvider CfsProvider;
typedef struct CfsSource CfsSource;
typedef struct CfsExportReport CfsExportReport;

/* Shared services a provider may use. Filled before the first list. */
typedef struct {
	CfsHttp *http;		/* the network thread */
} CfsContext;

/* One disk of a VM, as the inventory describes it. */
typedef struct {
	char *name;		/* file name without extension: "disk", "disk1" */
	char *format;		/* format of the source's bytes: raw, vmdk, … */
	char *present;		/* the format of the main file, a view of the
				 * raw bytes ("vmdk" for disk.vmdk), or NULL
				 * to present the bytes as they are */
	guint64 size;		/* bytes of the source, or CFS_SIZE_UNKNOWN
				 * until the export says */
	CfsExtentMap *map;	/* allocation map if known at list time; else
				 * the source's, once the export is ready */
	char *id;		/* stable identity of the disk (cache key) */
	char *identity;		/* the identity its source will have, if known
				 * at list time (lets .progress count what the
				 * cache holds before the first open) */
	gpointer priv;		/* the provider's */
	GDestroyNotify priv_free;
} CfsDisk;

/* One VM. */
typedef struct {
	char *path;		/* "web01" or "zone/instance", sanitised parts */
	char *info_json;	/* what the provider said, for info.json */
	char *error;		/* why it could not be described, or NULL */
	GPtrArray *disks;	/* CfsDisk*, owned */
} CfsVm;

CfsDisk *cfs_disk_new(const char *name, const char *format, guint64 size);
void cfs_disk_free(CfsDisk *disk);
CfsVm *cfs_vm_new(const char *path);
void cfs_vm_free(CfsVm *vm);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(CfsVm, cfs_vm_free)

/* A piece of a chunk to fetch over HTTP: the request (transfer full) and
 * where its body lands on the disk. */
typedef struct {
	CfsHttpRequest *req;
	guint64 offset;
	guint64 length;
} CfsSourcePiece;

typedef struct {
	/* HTTP sources: the requests that fetch the data of [off, off+len).
	 * Parts of the range that are holes need none. For a source that
	 * is not random, off is 0 and len the whole size: one request. */
	bool (*plan)(CfsSource *src, guint64 off, guint64 len,
		     GArray *pieces, GError **error);
	/* Optional: check a whole piece once it arrived (checksums). */
	bool (*verify)(CfsSource *src, const CfsSourcePiece *piece,
		       const void *data, gsize len, GError **error);
	/* Local sources (files, shares): read @len bytes at @off. Blocks;
	 * called from the engine's I/O threads, never the network thread. */
	bool (*pread)(CfsSource *src, void *buf, gsize len, guint64 off,
		      GError **error);
	void (*free)(CfsSource *src);
} CfsSourceOps;

/* Where the bytes of an export can be read. */
struct CfsSource {
	const CfsSourceOps *ops;
	guint64 size;		/* exact */
	bool random;		/* ranged reads work; else one stream from 0 */
	CfsExtentMap *map;	/* owned reference */
	char *identity;		/* what changes when the bytes change */
	gpointer priv;
};

/* Free a source through its ops (NULL is fine). */
void cfs_source_free(CfsSource *src);

typedef struct {
	const char *name;	/* the folder under the mount: "url", "aws" */
	/* Make an instance from the config section @section. Must not touch
	 * the network. An error fails the mount. */
	CfsProvider *(*create)(GKeyFile *conf, const char *section,
			       CfsContext *ctx, GError **error);
	void (*free)(CfsProvider *prov);
	/* The inventory: append CfsVm* to @vms. An error here shows in the
	 * provider's .progress; the mount goes on. */
	bool (*list)(CfsProvider *prov, GPtrArray *vms, GError **error);
	/* Whatever must happen before the bytes of @disk can be read;
	 * report phases with cfs_export_report(). Transfer full. */
	CfsSource *(*export_start)(CfsProvider *prov, CfsDisk *disk,
				   CfsExportReport *report, GError **error);
	/* Release what export_start obtained (a snapshot, a grant, a
	 * lease). May block. NULL when nothing is granted: the engine then
	 * keeps the source for as long as it is mounted. When it is set, the
	 * engine calls it once an export is complete and closed; a chunk
	 * evicted after that fails its reads until the next open starts a
	 * new export. */
	void (*export_end)(CfsProvider *prov, CfsDisk *disk, CfsSource *src);
} CfsProviderOps;

struct CfsProvider {
	const CfsProviderOps *ops;
	CfsContext *ctx;
};

/* Say how far the preparing phase has come ("snapshot", 42.0). Any
 * thread. Implemented by the engine. */
void cfs_export_report(CfsExportReport *report, const char *phase,
		       double percent);

/* Wait @seconds between two polls of a long export. Returns false at
 * once when the filesystem is being unmounted: export_start should then
 * release what it made and fail (ECANCELED). */
bool cfs_export_wait(CfsExportReport *report, double seconds);

/* The provider types, in the order their folders are listed. */
const CfsProviderOps *const *cfs_providers_all(void);
const CfsProviderOps *cfs_provider_find(const char *name);
