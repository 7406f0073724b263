// SPDX-License-Identifier: MIT
/*
 * .progress lines stay parseable whatever a name or an error holds:
 * splitting on spaces gives the fields, splitting a field on its first
 * '=' gives key and value, and no control character reaches a terminal.
 */
#include <glib.h>
#include <string.h>

#include "fs/export.h"

static void test_escaping(void)
{
	g_autoptr(GString) out = g_string_new(NULL);
	g_auto(GStrv) fields = NULL;

	cfs_progress_failed(out, "url/my vm=1/\"x\\\x1b[2J\tdisk.raw",
			    "HTTP 500: \x1b]0;owned\x07 \"quoted\" a=b\nnext");
	g_assert_true(g_str_has_suffix(out->str, "\n"));
	g_string_truncate(out, out->len - 1);
	for (const char *p = out->str; *p; p++)
		g_assert_cmpint((guchar)*p, >=, 0x20);
	g_assert_null(strchr(out->str, '\n'));
	fields = g_strsplit(out->str, " error=", 2);
	g_assert_cmpstr(fields[1], ==, "\"HTTP 500: \\x1b]0;owned\\x07 "
			"\\x22quoted\\x22 a=b\\x0anext\"");
	g_clear_pointer(&fields, g_strfreev);
	fields = g_strsplit(out->str, " ", -1);
	g_assert_cmpstr(fields[0], ==, "url/my\\x20vm\\x3d1/\\x22x\\x5c"
			"\\x1b[2J\\x09disk.raw");
	g_assert_cmpstr(fields[1], ==, "state=failed");
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/progress/escaping", test_escaping);
	return g_test_run();
}
