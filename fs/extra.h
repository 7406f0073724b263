/* SPDX-License-Identifier: MIT */
/*
 * Files beside a VM's disks whose bytes come from metadata and the disks
 * themselves: inline bytes (an OVF descriptor), or a ustar archive whose
 * members are inline bytes and the VM's disk files (an OVA). The archive
 * is laid out here (headers, padding, end blocks) and read lazily: its
 * size is exact once every member's size is known, and a read of a disk
 * member reads that disk's file through the cache. Reads wait on the
 * network, so they run on the control pool.
 */
#pragma once

#include "fs/export.h"

typedef struct CfsExtra CfsExtra;

/* Take @file (transfer full); @exports holds the VM's disks' exports by
 * disk index (borrowed: exports live until unmount). @mtime: seconds
 * since the epoch for the archive's headers. Transfer full. */
CfsExtra *cfs_extra_new(CfsVmFile *file, GPtrArray *exports, gint64 mtime);
CfsExtra *cfs_extra_ref(CfsExtra *x);
void cfs_extra_unref(CfsExtra *x);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(CfsExtra, cfs_extra_unref)

/* The file's name. */
const char *cfs_extra_name(const CfsExtra *x);

/* The exact size, if every member's size is known yet. Any thread. */
bool cfs_extra_size(CfsExtra *x, guint64 *size);

/* Whether the archive holds a file of @ex (its size changes the
 * archive's). */
bool cfs_extra_uses(const CfsExtra *x, const CfsExport *ex);

/* The file was opened or released: its disks' exports are too. FUSE
 * threads; never waits. */
void cfs_extra_open(CfsExtra *x);
void cfs_extra_release(CfsExtra *x);

/* Answer a FUSE read, later, from a control-pool thread (a read of a
 * disk member waits for its chunks). */
void cfs_extra_read(CfsExtra *x, CfsControl *control, fuse_req_t req,
		    size_t size, off_t off);

/* Read up to *len bytes at @off into @buf; *len is set to what was read
 * (less at the end of the file). Waits for disk members: control pool
 * only (or no disk members). */
bool cfs_extra_pread(CfsExtra *x, void *buf, guint64 off, guint64 *len,
		     GError **error);

/* For tests: the 512-byte ustar header of a member. */
bool cfs_tar_header(guint8 header[512], const char *name, guint64 size,
		    gint64 mtime);
