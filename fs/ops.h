/* SPDX-License-Identifier: MIT */
/* The FUSE low-level operations of cloudfs; userdata is the CfsFs. */
#pragma once

#include "fs/tree.h"

extern const struct fuse_lowlevel_ops cfs_fuse_ops;
