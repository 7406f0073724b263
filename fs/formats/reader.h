/* SPDX-License-Identifier: MIT */
/*
 * Container readers, the inverse of the format views: some clouds hand out
 * a disk inside a container file (a fixed VHD page blob, a dynamic VHDX, a
 * streamOptimized VMDK). The engine caches the container's bytes as they
 * are; a reader maps virtual disk offsets to container offsets, so that the
 * raw disk (and every view of it) is computed from the cached container.
 *
 * Reading is two steps, as for views: cfs_reader_deps() says which
 * container ranges a piece of the disk needs, and once they are cached
 * cfs_reader_read() produces the bytes through a callback that cannot miss.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>

#include "common/extent.h"
#include "fs/formats/format.h"	/* CfsRawReadFn */

typedef struct CfsReader CfsReader;

typedef struct {
	const char *name;	/* "vhd", "vhdx", "vmdk" */
	/*
	 * Parse the container's metadata. @container_size is the container's
	 * byte length; @container_map (may be NULL = all data) is the
	 * container's allocation map (holes in it read as zeros and must
	 * never be asked for); the reader keeps a reference to it. @read
	 * reads container bytes (it may BLOCK: open runs on a thread that
	 * may wait). Reads only the metadata (headers, BAT, grain directory
	 * and tables), with few large reads, never the data. The container
	 * is treated as hostile: a malformed one gives an EIO error, an
	 * unsupported variant ENOTSUP. Transfer full.
	 */
	CfsReader *(*open)(guint64 container_size, CfsExtentMap *container_map,
			   CfsRawReadFn read, void *opaque, GError **error);
} CfsReaderFormat;

/* The reader of a container format by name ("vhd", "vhdx", "vmdk", any
 * case); NULL if none. Static, any thread. */
const CfsReaderFormat *cfs_reader_find(const char *name);

/* The format that opened @r. */
const CfsReaderFormat *cfs_reader_format(const CfsReader *r);

/* Size of the virtual disk in bytes, exact. Any thread. */
guint64 cfs_reader_disk_size(const CfsReader *r);

/*
 * Allocation map of the virtual disk: holes are unallocated blocks or
 * grains and the container's holes under allocated ones; they read as
 * zeros. Borrowed (valid while @r lives; take a reference to keep it).
 * Any thread.
 */
CfsExtentMap *cfs_reader_map(const CfsReader *r);

/*
 * Append to @ranges (a GArray of CfsExtent) the container ranges needed to
 * produce virtual bytes [off, off+len) (clamped to the disk). Ranges may
 * overlap; container holes and unallocated parts are never reported. Any
 * thread, never blocks.
 */
void cfs_reader_deps(const CfsReader *r, guint64 off, guint64 len,
		     GArray *ranges);

/*
 * Produce virtual bytes [off, off+len) into @buf (a range past the end of
 * the disk is an EINVAL error; the caller clamps), reading container bytes
 * through @read, only ranges that cfs_reader_deps() reported. Unallocated
 * parts are zeros. A container whose data contradicts its metadata (bad
 * grain marker, corrupt deflate stream) gives EIO. Any thread; the reader
 * is immutable once open.
 */
bool cfs_reader_read(const CfsReader *r, void *buf, gsize len, guint64 off,
		     CfsRawReadFn read, void *opaque, GError **error);

/* Free @r and drop its reference to the container map. NULL is fine. */
void cfs_reader_free(CfsReader *r);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(CfsReader, cfs_reader_free)
