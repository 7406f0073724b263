/* SPDX-License-Identifier: MIT */
/* Remove a test's temporary folder and everything in it (unit tests
 * only: it follows no symlink, and checks nothing). */
#pragma once

#include <glib.h>
#include <glib/gstdio.h>
#include <sys/stat.h>

static inline void rm_rf(const char *path)
{
	g_autoptr(GDir) dir = g_dir_open(path, 0, NULL);
	const char *name;

	while (dir && (name = g_dir_read_name(dir))) {
		g_autofree char *child = g_build_filename(path, name, NULL);
		struct stat st;

		if (lstat(child, &st) == 0 && S_ISDIR(st.st_mode))
			rm_rf(child);
		else
			g_unlink(child);
	}
	g_rmdir(path);
}
