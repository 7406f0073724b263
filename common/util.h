/* SPDX-License-Identifier: MIT */
/*
 * Small helpers shared by every layer: sizes, whole-buffer file I/O,
 * names and URLs made safe to show. No FUSE, no provider.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <sys/types.h>

/* Parse "4096", "4K", "1.5G", "2TiB" (powers of 1024) into bytes. */
bool cfs_parse_size(const char *text, guint64 *out, GError **error);

/* Write or read exactly @len bytes at @off, retrying short transfers and
 * EINTR. A read past EOF is an error (EIO). errno-coded GError. */
bool cfs_pwrite_all(int fd, const void *buf, gsize len, guint64 off,
		    GError **error);
bool cfs_pread_all(int fd, void *buf, gsize len, guint64 off,
		   GError **error);

/*
 * A URL as it may be shown: scheme://host[:port]/path, with user
 * information, query string and fragment removed (SAS tokens and presigned
 * signatures live there). Transfer full.
 */
char *cfs_url_redact(const char *url);

/* "host:port" of a URL, for error messages ("HTTP 404 from host:port").
 * Transfer full. */
char *cfs_url_host(const char *url);

/*
 * A provider-given name made safe as one path component: '/' and NUL and
 * control characters become '_', "." and ".." and the empty name become
 * "_". Transfer full.
 */
char *cfs_name_sanitize(const char *name);

/* "187.2MiB/s"-style human sizes for .progress: "512B", "1.5KiB" …
 * Transfer full. */
char *cfs_format_bytes(double bytes);

/* Seconds since the epoch of an ISO 8601 time ("2024-05-01T10:00:00Z",
 * with a fraction or an offset), or 0 for NULL or anything else. */
gint64 cfs_parse_iso8601(const char *text);

/* Monotonic seconds as a double, for rates. */
double cfs_now(void);
