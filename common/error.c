// SPDX-License-Identifier: MIT
/* cloudfs error domain: errno values as GError codes. */
#include <stdbool.h>
#include <string.h>

#include "error.h"

G_DEFINE_QUARK(cloudfs-error-quark, cfs_error)

int cfs_error_errno(const GError *error)
{
	if (error && error->domain == CFS_ERROR && error->code > 0)
		return error->code;
	return EIO;
}

bool cfs_set_errno(GError **error, int code, const char *what)
{
	g_set_error(error, CFS_ERROR, code, "%s: %s", what, g_strerror(code));
	return false;
}
