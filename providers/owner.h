/* SPDX-License-Identifier: MIT */
/*
 * Ownership tags: what names the cloud objects a mount creates
 * (snapshots, images, exported objects, leases), so that a daemon only
 * ever deletes what it made. One tag per process, of the form
 *
 *     <machine>-<cache>-<pid>-<start>
 *
 * machine: the first 16 hex digits of /etc/machine-id (host names
 * collide; machine ids do not); cache: 8 hex digits of a hash of the
 * cache folder (two daemons on one machine keep apart); pid and the
 * process's start time in clock ticks (a reused pid is another process).
 * Lower-case letters, digits and '-' only, under 64 characters: it fits
 * an AWS or Azure tag and a GCP label value alike.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>

/* Key under which providers store the tag (tag or label name). */
#define CFS_OWNER_KEY "cloudfs-owner"

/* Make this process's tag. Main thread, before any provider runs. */
void cfs_owner_init(const char *cache_dir);

/* This process's tag. Constant after cfs_owner_init(). */
const char *cfs_owner_tag(void);

/*
 * Whether what carries @tag may be deleted by this process: it was made
 * on this machine with this cache folder by a process that has ended
 * (or, when @self is true, by this very process). False for anything
 * else, including tags that do not parse. Any thread.
 */
bool cfs_owner_is_stale(const char *tag, bool self);

/* For tests: the tag of process @pid started at @start (clock ticks). */
char *cfs_owner_tag_for(guint pid, guint64 start);
