/* SPDX-License-Identifier: MIT */
/*
 * Reading a provider's config section: trimmed strings, booleans, a key
 * or its environment variable, a secret from a key or a file, base URLs.
 * Main thread (create); the errors name the section and the key.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>

/* The value of @key, trimmed; NULL when missing or empty. Transfer full. */
char *cfs_conf_string(GKeyFile *conf, const char *section, const char *key);

/* @key, else the environment variable @env (NULL: none), else NULL.
 * Transfer full. */
char *cfs_conf_or_env(GKeyFile *conf, const char *section, const char *key,
		      const char *env);

/* true/yes/1 or false/no/0 (any case); false when missing; EINVAL for
 * anything else. */
bool cfs_conf_bool(GKeyFile *conf, const char *section, const char *key,
		   bool *out, GError **error);

/* A secret from @key, or from the file @key_file names (not both: EINVAL).
 * NULL without an error when neither is set. Transfer full: free with
 * cfs_secret_free(). */
char *cfs_conf_secret(GKeyFile *conf, const char *section, const char *key,
		      const char *key_file, GError **error);

/* Drop trailing '/' from a base URL, in place; returns @url. */
char *cfs_url_strip_slash(char *url);
