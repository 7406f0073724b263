/* SPDX-License-Identifier: MIT */
/*
 * Secrets: the one way to wipe them. Keys, passwords, tokens, SAS URLs and
 * signed bodies are wiped before their memory is freed, and shown as
 * CFS_SECRET_SHOWN wherever a message would hold them.
 */
#pragma once

#include <glib.h>

#define CFS_SECRET_SHOWN "***"

/* Zero @len bytes at @p in a way the compiler cannot drop. Any thread. */
void cfs_secret_wipe(void *p, gsize len);
/* Wipe a NUL-terminated secret and free it. NULL is fine. */
void cfs_secret_free(char *s);
/* cfs_secret_free(*s) and set *s to NULL. */
void cfs_secret_clear(char **s);
/* A copy of @s (NULL for NULL). Transfer full: free with
 * cfs_secret_free(). */
char *cfs_secret_dup(const char *s);
/* Wipe every allocated byte of @s and free it. */
void cfs_secret_gstring_free(GString *s);

typedef char CfsSecret;
G_DEFINE_AUTOPTR_CLEANUP_FUNC(CfsSecret, cfs_secret_free)
