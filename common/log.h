/* SPDX-License-Identifier: MIT */
/*
 * Logging: GLib's structured log, written as one line per message to
 * stderr (foreground) or a file, with a timestamp and level. Debug
 * messages only when asked for.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>

/* Install the writer. @path NULL: stderr. @debug: show debug messages.
 * Call once at start-up, before any thread. */
bool cfs_log_init(const char *path, bool debug, GError **error);

/* A daemon in the background has no stderr: log to syslog instead,
 * unless a log file was given. Before any thread. */
void cfs_log_to_syslog(void);
