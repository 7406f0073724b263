/* SPDX-License-Identifier: MIT */
/*
 * Reading JSON that a server sent: parsing with a size and depth bound,
 * and typed look-ups by a path of object keys ("properties/diskSizeBytes")
 * that answer NULL or false for anything missing or of another type. No
 * answer may crash a caller. Any thread; no I/O.
 */
#pragma once

#include <glib.h>
#include <json-c/json.h>
#include <stdbool.h>

/* Nesting deeper than this is refused. */
#define CFS_JSON_DEPTH 64

/*
 * Parse @len bytes at @data (not NUL-terminated) as one JSON value; more
 * than @max bytes, trailing garbage or a parse error give NULL and @error
 * (CFS_ERROR, EIO) naming @what. Transfer full.
 */
json_object *cfs_json_parse(const void *data, gsize len, gsize max,
			    const char *what, GError **error);

/* The value at @path ("a/b/c", object keys) below @obj, or NULL.
 * Borrowed. */
json_object *cfs_json_get(json_object *obj, const char *path);

/* The string at @path, or NULL if missing or not a string. Borrowed. */
const char *cfs_json_string(json_object *obj, const char *path);

/* The non-negative integer at @path, a JSON number or a string of digits
 * (some services send numbers as strings). False if missing or not so. */
bool cfs_json_u64(json_object *obj, const char *path, guint64 *out);

/* The boolean at @path, or @fallback if missing or not a boolean. */
bool cfs_json_bool(json_object *obj, const char *path, bool fallback);

/* The array at @path, or NULL. Borrowed. */
json_object *cfs_json_array(json_object *obj, const char *path);

/* json_object_put for GDestroyNotify slots (GPtrArray, GHashTable). */
void cfs_json_unref(gpointer obj);
