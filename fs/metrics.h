/* SPDX-License-Identifier: MIT */
/* MOUNT/.metrics: the mount's counters in the Prometheus text format. */
#pragma once

#include "fs/tree.h"

/* The whole text, made now. Any thread; takes the tree lock (read).
 * Transfer full. */
char *cfs_metrics_text(CfsFs *fs, gsize *len);
