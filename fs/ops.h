/* SPDX-License-Identifier: MIT */
/* The FUSE low-level operations of cloudfs; userdata is the CfsFs. */
#pragma once

#include "fs/tree.h"

extern const struct fuse_lowlevel_ops cfs_fuse_ops;

/* The largest read the kernel sends. Replies from the cache are spliced
 * from its data file through a pipe, which must hold the whole reply; a
 * pipe grows to 1 MiB without privileges (fs.pipe-max-size), which holds
 * 512 KiB and libfuse's margin, but not 1 MiB. */
#define CFS_MAX_READ (512 * 1024)
