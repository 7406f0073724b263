// SPDX-License-Identifier: MIT
/* Wiping secrets before their memory goes back to the allocator. */
#include <openssl/crypto.h>
#include <string.h>

#include "secret.h"

void cfs_secret_wipe(void *p, gsize len)
{
	if (p && len)
		OPENSSL_cleanse(p, len);
}

void cfs_secret_free(char *s)
{
	if (!s)
		return;
	cfs_secret_wipe(s, strlen(s));
	g_free(s);
}

void cfs_secret_clear(char **s)
{
	cfs_secret_free(*s);
	*s = NULL;
}

char *cfs_secret_dup(const char *s)
{
	return g_strdup(s);
}

void cfs_secret_gstring_free(GString *s)
{
	if (!s)
		return;
	cfs_secret_wipe(s->str, s->allocated_len);
	g_string_free(s, TRUE);
}
