/* SPDX-License-Identifier: MIT */
/*
 * The provider interface. A provider is a type (CfsProviderOps, a table of
 * operations, one per cloud) and an instance (CfsProvider, made from one
 * section of the config file: [aws], or [vsphere lab] for a second
 * vCenter). Like an nbdkit plugin it only says where the bytes of a disk
 * are and how to be allowed to read them; chunking, transfers, retries,
 * renewing grants, counting, progress, the cache and the views are the
 * engine's. A provider includes common/ and providers/ headers only.
 *
 * Threads. There are three kinds, and each operation says which it runs
 * on:
 *   - the main thread: create and free;
 *   - the control pool (common/control.h): list, export_start,
 *     export_end, cleanup, a source's renew, and timers. Work here may
 *     block: synchronous HTTP (cfs_http_perform), files, polling;
 *   - the network thread, which drives every transfer: a source's plan,
 *     authorize, verify and the HTTP classify function. These must never
 *     block: no file I/O, no cfs_http_perform (it asserts), no lock that
 *     a control-pool thread may hold across I/O. They work from what the
 *     blocking side prepared (a signed grant, a token, a block list).
 * A source's pread runs on the engine's I/O pool and may block.
 */
#pragma once

#include <errno.h>
#include <glib.h>
#include <stdbool.h>

#include "common/control.h"
#include "common/extent.h"
#include "common/http.h"
#include "providers/owner.h"

#define CFS_SIZE_UNKNOWN G_MAXUINT64
/* The largest disk cloudfs takes (64 TiB): what a source says beyond is
 * an error, never an allocation. */
#define CFS_DISK_SIZE_MAX (64ULL << 40)

typedef struct CfsProvider CfsProvider;
typedef struct CfsSource CfsSource;
typedef struct CfsExportReport CfsExportReport;

/* Shared services a provider may use. http and control are filled before
 * the first list (not yet in create); formats before create. */
typedef struct {
	CfsHttp *http;		/* the network thread */
	CfsControl *control;	/* the control pool and timers */
	/* The mount's formats= option: a NULL-terminated list of format
	 * names as it was parsed ("raw", "vhd", "vmdk", "vhdx", "qcow2"),
	 * never NULL (empty without the option). The engine adds a view of
	 * each disk in each of these formats unless the provider lists a
	 * file of that name itself ("disk.vhdx"): a provider that can have
	 * its cloud write a format natively may do so. Constant while
	 * mounted. */
	const char *const *formats;
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

/*
 * A member of a tar file beside a VM's disks (an OVA): inline bytes, or
 * the bytes of one of the VM's disk files (the disk @disk in the view
 * @format, or its native bytes for NULL). The engine lays the archive out
 * (ustar headers, padding, end blocks) once every member's size is known.
 */
typedef struct {
	char *name;		/* name inside the archive */
	GBytes *data;		/* inline bytes, or NULL */
	guint disk;		/* index in CfsVm.disks, when data is NULL */
	char *format;		/* view of that disk, or NULL: native */
} CfsTarMember;

/* A file beside a VM's disks whose bytes come from metadata and the disks:
 * inline bytes (an OVF descriptor), or a tar of members (an OVA). */
typedef struct {
	char *name;		/* "web01.ovf" */
	GBytes *data;		/* the whole file, or NULL for a tar */
	GPtrArray *tar;		/* CfsTarMember*, owned, or NULL */
} CfsVmFile;

/* One VM. */
typedef struct {
	char *path;		/* "web01" or "zone/instance", sanitised parts */
	char *info_json;	/* what the provider said, for info.json */
	char *error;		/* why it could not be described, or NULL */
	GPtrArray *disks;	/* CfsDisk*, owned */
	GPtrArray *files;	/* CfsVmFile*, owned: extra files */
	gint64 mtime;		/* seconds since the epoch, 0: unknown */
} CfsVm;

CfsDisk *cfs_disk_new(const char *name, const char *format, guint64 size);
void cfs_disk_free(CfsDisk *disk);
CfsVm *cfs_vm_new(const char *path);
void cfs_vm_free(CfsVm *vm);
/* Add a file of @data (a new reference) beside the disks of @vm. */
void cfs_vm_add_file(CfsVm *vm, const char *name, GBytes *data);
/* Add a tar file; append members with cfs_vm_file_add_member(). */
CfsVmFile *cfs_vm_add_tar(CfsVm *vm, const char *name);
/* A member of inline @data (a new reference), or of disk @disk in
 * @format (NULL: native) when @data is NULL. */
void cfs_vm_file_add_member(CfsVmFile *file, const char *name, GBytes *data,
			    guint disk, const char *format);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(CfsVm, cfs_vm_free)

/* A piece of a chunk to fetch over HTTP: the request (transfer full) and
 * where its body lands on the disk. */
typedef struct {
	CfsHttpRequest *req;
	guint64 offset;
	guint64 length;
} CfsSourcePiece;

typedef struct {
	/* HTTP sources: the requests that fetch the data of [off, off+len),
	 * not yet authorised (authorize runs before each attempt). Parts of
	 * the range that are holes need none. For a source that is not
	 * random, off is 0 and len the whole size: one request. Network
	 * thread or any other; must not block. */
	bool (*plan)(CfsSource *src, guint64 off, guint64 len,
		     GArray *pieces, GError **error);
	/* Optional: before each attempt of a planned request, apply the
	 * current grant: sign it again with a fresh date (SigV4), set the
	 * bearer token, put the SAS URL in. Network thread; must not block:
	 * it only reads what renew stored (under a lock of the source's
	 * that is held only to swap the grant). */
	bool (*authorize)(CfsSource *src, CfsHttpRequest *req,
			  GError **error);
	/* Optional: obtain a new grant and swap it in, then say when it
	 * expires with cfs_source_set_expiry(). The engine calls it ahead of
	 * expiry and once after a 401/403 answer; requests in flight finish
	 * with the grant they had. Control pool; may block. */
	bool (*renew)(CfsSource *src, GError **error);
	/* Optional: check a whole piece once it arrived (checksums). Network
	 * thread. An error fails the piece (it is fetched again when read);
	 * an error of code CFS_SOURCE_BAD says the whole source is wrong. */
	bool (*verify)(CfsSource *src, const CfsSourcePiece *piece,
		       const void *data, gsize len, GError **error);
	/* Local sources (files, shares): read @len bytes at @off. Blocks;
	 * called from the engine's I/O threads, never the network thread. */
	bool (*pread)(CfsSource *src, void *buf, gsize len, guint64 off,
		      GError **error);
	void (*free)(CfsSource *src);
} CfsSourceOps;

/*
 * The code (domain CFS_ERROR) of a verify error that condemns the whole
 * source, not just the piece (a checksum of the whole object that does
 * not match once every byte is in): the engine fails the export
 * (state=failed with the message in .progress), drops every chunk of it
 * from the cache so that no byte of it is served again, gives back what
 * export_start obtained (export_end), and answers EIO to its readers;
 * the next open starts a new export.
 */
#define CFS_SOURCE_BAD EBADMSG

/* Where the bytes of an export can be read. */
struct CfsSource {
	const CfsSourceOps *ops;
	guint64 size;		/* exact, or CFS_SIZE_UNKNOWN for a stream
				 * whose length shows at its end */
	guint64 size_max;	/* with CFS_SIZE_UNKNOWN: a bound the stream
				 * never passes (it fails if it does) */
	bool random;		/* ranged reads work; else one stream from 0 */
	CfsExtentMap *map;	/* owned reference; for an unknown size, all
				 * data up to size_max */
	char *identity;		/* what changes when the bytes change; never
				 * a secret */
	CfsHttpSettings *settings;	/* applied to every planned request
					 * that has none (TLS, auth, how to
					 * classify answers); owned, or NULL */
	gpointer priv;

	/* The engine's. */
	bool complete;		/* set before export_end: every chunk was
				 * fetched (else the export is given up:
				 * abort a lease rather than complete it) */
	gint64 expires;		/* atomic: real µs the grant ends; 0 never */
	gint64 granted;		/* atomic: real µs it was obtained */
	guint grant_gen;	/* atomic: renewals so far */
};

/* A new source of @ops and @priv (the provider fills the rest). Transfer
 * full. */
CfsSource *cfs_source_new(const CfsSourceOps *ops, gpointer priv);

/* The grant of @src expires at @real_us (g_get_real_time(); 0: never).
 * Call from export_start and renew. Any thread. */
void cfs_source_set_expiry(CfsSource *src, gint64 real_us);
gint64 cfs_source_expiry(const CfsSource *src);

/* Free a source through its ops (NULL is fine). */
void cfs_source_free(CfsSource *src);

typedef struct {
	const char *name;	/* the section and folder: "url", "aws" */
	/* Make an instance from the config section @section ("aws", or
	 * "aws prod"): read and check every key, credentials included where
	 * that needs no network. An error fails the mount with a message
	 * that names the problem. Main thread; must not touch the network
	 * (prov->ctx is not set yet). */
	CfsProvider *(*create)(GKeyFile *conf, const char *section,
			       CfsContext *ctx, GError **error);
	/* Main thread, after every other op has returned. */
	void (*free)(CfsProvider *prov);
	/* The inventory: append CfsVm* to @vms. An error here shows in the
	 * provider's .progress; the mount goes on. Control pool, one list
	 * of a provider at a time; may block. */
	bool (*list)(CfsProvider *prov, GPtrArray *vms, GError **error);
	/* Whatever must happen before the bytes of @disk can be read;
	 * report phases with cfs_export_report(), wait between polls with
	 * cfs_export_wait(). Control pool; may block. Transfer full. */
	CfsSource *(*export_start)(CfsProvider *prov, CfsDisk *disk,
				   CfsExportReport *report, GError **error);
	/* Release what export_start obtained (a snapshot, a grant, a
	 * lease). Control pool; may block. NULL when nothing is granted:
	 * the engine then keeps the source for as long as it is mounted.
	 * When it is set, the engine calls it once an export is complete
	 * and closed; a chunk evicted after that fails its reads until the
	 * next open starts a new export. */
	void (*export_end)(CfsProvider *prov, CfsDisk *disk, CfsSource *src);
	/* Optional: delete what a crashed daemon left (snapshots, images,
	 * exported objects, leases) that carries an ownership tag for which
	 * cfs_owner_is_stale(tag, @at_unmount) is true, and nothing else.
	 * Called once the mount is up and again at unmount, after every
	 * export_end. Control pool; may block; logs its failures. */
	void (*cleanup)(CfsProvider *prov, bool at_unmount);
} CfsProviderOps;

struct CfsProvider {
	const CfsProviderOps *ops;
	CfsContext *ctx;
	char *name;		/* the folder: "aws", "vsphere-lab" */
};

/* How an export's progress reaches the engine: it embeds one of these
 * in each export and hands it to export_start. */
typedef struct {
	void (*phase)(CfsExportReport *report, const char *phase,
		      double percent);
	bool (*wait)(CfsExportReport *report, double seconds);
} CfsExportReportOps;

struct CfsExportReport {
	const CfsExportReportOps *ops;
};

/* Say how far the preparing phase has come ("snapshot", 42.0). Any
 * thread. */
void cfs_export_report(CfsExportReport *report, const char *phase,
		       double percent);

/* Wait @seconds between two polls of a long export. Returns false at
 * once when the filesystem is being unmounted: export_start should then
 * release what it made and fail (ECANCELED). */
bool cfs_export_wait(CfsExportReport *report, double seconds);

/* The provider types, in the order their folders are listed. */
const CfsProviderOps *const *cfs_providers_all(void);
const CfsProviderOps *cfs_provider_find(const char *name);

/*
 * The type and folder of a config section: "aws" gives aws and "aws";
 * "vsphere lab" gives vsphere and "vsphere-lab" (a second instance of a
 * provider). NULL with EINVAL for an unknown type or a bad name. Main
 * thread. @folder is transfer full.
 */
const CfsProviderOps *cfs_provider_for_section(const char *section,
					       char **folder,
					       GError **error);
