/* SPDX-License-Identifier: MIT */
/*
 * cloudfs error domain. Codes are errno values, so that any GError that
 * reaches fs/ turns into a FUSE reply with cfs_error_errno().
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <glib.h>

#define CFS_ERROR (cfs_error_quark())

GQuark cfs_error_quark(void);

/* The errno carried by @error: its code in CFS_ERROR, EIO for any other
 * domain or a NULL error. Any thread. */
int cfs_error_errno(const GError *error);

/* Set @error in CFS_ERROR with @code (an errno value) from errno-style
 * failures: "<what>: <strerror>". Returns false, for `return cfs_...`. */
bool cfs_set_errno(GError **error, int code, const char *what);
