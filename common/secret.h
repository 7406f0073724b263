/* SPDX-License-Identifier: MIT */
/*
 * Secrets in memory: passwords, client secrets, private keys, tokens. They
 * are wiped before their memory is given back, and shown as
 * CFS_SECRET_SHOWN wherever a message or a log line would name them.
 * Every function here may be called from any thread.
 */
#pragma once

#include <glib.h>

/* What a message or log line shows instead of a secret. */
#define CFS_SECRET_SHOWN "***"

/* Larger secret files are refused: nobody's password is 64 KiB long. */
#define CFS_SECRET_FILE_MAX (64 * 1024)

/* Overwrite @len bytes at @p with zeroes; never optimised away. @p may be
 * NULL when @len is 0. */
void cfs_secret_wipe(void *p, gsize len);

/* Wipe the string @s (strlen bytes) and g_free it. NULL is fine. */
void cfs_secret_free(char *s);

/* cfs_secret_free(*s), then *s = NULL. */
void cfs_secret_clear(char **s);

/* A copy of @s that the caller frees with cfs_secret_free; NULL for NULL.
 * Transfer full. */
char *cfs_secret_dup(const char *s);

/* Wipe all the memory of @s (allocated_len bytes, not only len) and free
 * it with its contents. NULL is fine. */
void cfs_secret_gstring_free(GString *s);

/*
 * A GBytes that owns the string @s (transfer full) and wipes it when its
 * last reference goes, for request bodies that carry a secret. The bytes
 * are strlen(@s) long, without the NUL.
 */
GBytes *cfs_secret_bytes_take(char *s);

/*
 * The contents of the secret file @path (a password or key file): at most
 * CFS_SECRET_FILE_MAX bytes, not empty, no NUL byte, one trailing "\n" or
 * "\r\n" removed. Every temporary copy is wiped. Errors (CFS_ERROR, errno
 * codes) name the path, never the contents. Transfer full: free with
 * cfs_secret_free. Blocks on file I/O: not on the network thread.
 */
char *cfs_secret_read_file(const char *path, GError **error);

/* g_autoptr(CfsSecret) s = ...: a char * freed with cfs_secret_free. */
typedef char CfsSecret;
G_DEFINE_AUTOPTR_CLEANUP_FUNC(CfsSecret, cfs_secret_free)

/* g_autoptr(CfsSecretString) s = g_string_new(...): a GString freed with
 * cfs_secret_gstring_free. */
typedef GString CfsSecretString;
G_DEFINE_AUTOPTR_CLEANUP_FUNC(CfsSecretString, cfs_secret_gstring_free)

/* Keep secrets in memory out of reach: no core dump of this process,
 * and no ptrace or /proc/PID/mem by anyone but root. Call first in main. */
void cfs_process_harden(void);
