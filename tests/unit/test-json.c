// SPDX-License-Identifier: MIT
/* common/json.c: bounded parsing and typed look-ups of hostile JSON. */
#include <string.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/json.h"

static json_object *parse(const char *text)
{
	return cfs_json_parse(text, strlen(text), 1 << 20, "test", NULL);
}

static void test_parse_bounds(void)
{
	g_autoptr(GError) error = NULL;
	g_autoptr(GString) deep = g_string_new(NULL);
	json_object *o;

	o = cfs_json_parse("{\"a\":1}", 7, 6, "small", &error);
	g_assert_null(o);
	g_assert_error(error, CFS_ERROR, EIO);
	g_assert_nonnull(strstr(error->message, "small"));
	g_clear_error(&error);

	o = cfs_json_parse("{\"a\":1} x", 9, 100, "t", &error);
	g_assert_null(o);
	g_assert_error(error, CFS_ERROR, EIO);
	g_clear_error(&error);

	o = cfs_json_parse("{\"a\":1}\r\n", 9, 100, "t", &error);
	g_assert_no_error(error);
	json_object_put(o);

	/* Not NUL-terminated: the length is what counts. */
	o = cfs_json_parse("[1,2]]]]", 5, 100, "t", &error);
	g_assert_no_error(error);
	g_assert_cmpint(json_object_array_length(o), ==, 2);
	json_object_put(o);

	for (int i = 0; i < 1000; i++)
		g_string_append_c(deep, '[');
	o = cfs_json_parse(deep->str, deep->len, 1 << 20, "deep", &error);
	g_assert_null(o);
	g_assert_error(error, CFS_ERROR, EIO);
}

static void test_lookups(void)
{
	g_autoptr(json_object) o = parse(
		"{\"properties\": {\"diskSizeBytes\": 1073741824,"
		" \"sizeStr\": \"42\", \"neg\": -1, \"bad\": \"4x\","
		" \"big\": \"99999999999999999999999\", \"flag\": true,"
		" \"list\": [1, 2], \"name\": \"d\"}, \"value\": null}");

	guint64 n = 7;

	g_assert_nonnull(o);
	g_assert_true(cfs_json_u64(o, "properties/diskSizeBytes", &n));
	g_assert_cmpuint(n, ==, 1073741824);
	g_assert_true(cfs_json_u64(o, "properties/sizeStr", &n));
	g_assert_cmpuint(n, ==, 42);
	g_assert_false(cfs_json_u64(o, "properties/neg", &n));
	g_assert_false(cfs_json_u64(o, "properties/bad", &n));
	g_assert_false(cfs_json_u64(o, "properties/big", &n));
	g_assert_false(cfs_json_u64(o, "properties/name", &n));
	g_assert_false(cfs_json_u64(o, "properties/missing", &n));
	g_assert_false(cfs_json_u64(o, "properties/diskSizeBytes/x", &n));
	g_assert_cmpstr(cfs_json_string(o, "properties/name"), ==, "d");
	g_assert_null(cfs_json_string(o, "properties/flag"));
	g_assert_null(cfs_json_string(o, "value"));
	g_assert_null(cfs_json_string(NULL, "a"));
	g_assert_true(cfs_json_bool(o, "properties/flag", false));
	g_assert_false(cfs_json_bool(o, "properties/name", false));
	g_assert_nonnull(cfs_json_array(o, "properties/list"));
	g_assert_null(cfs_json_array(o, "properties"));
	g_assert_null(cfs_json_get(o, "properties/list/0"));
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/json/parse-bounds", test_parse_bounds);
	g_test_add_func("/json/lookups", test_lookups);
	return g_test_run();
}
