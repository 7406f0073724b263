// SPDX-License-Identifier: MIT
/*
 * Unit tests of the small shared helpers: size parsing, URL redaction and
 * host extraction, path-component sanitizing, human sizes and whole-buffer
 * file I/O on a temporary file.
 */
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"
#include "common/util.h"

#define KiB 1024ull
#define MiB (1024ull * KiB)
#define GiB (1024ull * MiB)
#define TiB (1024ull * GiB)

static void test_parse_size(void)
{
	static const struct {
		const char *text;
		guint64 want;
	} good[] = {
		{ "0", 0 },
		{ "4096", 4096 },
		{ "4K", 4 * KiB },
		{ "4k", 4 * KiB },
		{ "4KiB", 4 * KiB },
		{ "4kib", 4 * KiB },
		{ "4KB", 4 * KiB },
		{ "1M", MiB },
		{ "64MiB", 64 * MiB },
		{ "2G", 2 * GiB },
		{ "3T", 3 * TiB },
		{ "2TiB", 2 * TiB },
		{ "1.5G", GiB + GiB / 2 },
		{ "0.5K", 512 },
		{ "2.25M", 2 * MiB + MiB / 4 },
		{ "1.5", 1 },
	};

	for (guint i = 0; i < G_N_ELEMENTS(good); i++) {
		g_autoptr(GError) error = NULL;
		guint64 out = 1;

		g_test_message("size '%s'", good[i].text);
		g_assert_true(cfs_parse_size(good[i].text, &out, &error));
		g_assert_no_error(error);
		g_assert_cmpuint(out, ==, good[i].want);
	}
}

static void test_parse_size_bad(void)
{
	static const char *const bad[] = {
		"", "abc", "-1", "-4K", "4X", "4KiBs", "4 K", "K", "1.5.5",
		"4Kb5", "4iB", "16E", "99999999999999999999", "inf", "1e400",
	};

	for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
		g_autoptr(GError) error = NULL;
		guint64 out = 4242;

		g_test_message("size '%s'", bad[i]);
		g_assert_false(cfs_parse_size(bad[i], &out, &error));
		g_assert_error(error, CFS_ERROR, EINVAL);
		g_assert_nonnull(strstr(error->message, bad[i]));
		g_assert_cmpuint(out, ==, 4242);	/* untouched */
	}
	/* No error wanted: still false. */
	g_assert_false(cfs_parse_size("x", &(guint64){ 0 }, NULL));
}

/* "nan" is not a size. */
static void test_parse_size_nan(void)
{
	g_autoptr(GError) error = NULL;
	guint64 out = 4242;

	g_assert_false(cfs_parse_size("nan", &out, &error));
	g_assert_error(error, CFS_ERROR, EINVAL);
	g_assert_cmpuint(out, ==, 4242);
}

static void test_url_redact(void)
{
	static const struct {
		const char *in, *want;
	} cases[] = {
		{ "https://user:pass@host.example:8443/path/to"
		  "?sig=SECRET&x=1#frag",
		  "https://host.example:8443/path/to" },
		{ "https://acct.blob.core.windows.net/c/disk.vhd"
		  "?sv=2020&sig=abc",
		  "https://acct.blob.core.windows.net/c/disk.vhd" },
		{ "https://user@host/p", "https://host/p" },
		{ "https://host", "https://host" },
		{ "https://host?x=1", "https://host" },
		{ "https://host#f", "https://host" },
		{ "https://host/a#f?x", "https://host/a" },
		{ "https://user:pw@host?sig=1", "https://host" },
		{ "https://user:p@ss@host/d", "https://host/d" },
		{ "https://host/p@q", "https://host/p@q" },
		{ "http://[::1]:8080/x?y", "http://[::1]:8080/x" },
		{ "file:///var/tmp/disk.img", "file:///var/tmp/disk.img" },
		{ "file:///var/tmp/disk.img?x=1#y",
		  "file:///var/tmp/disk.img" },
		{ "/plain/path?x=1", "/plain/path" },
		{ "relative#frag", "relative" },
		{ "", "" },
	};

	for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
		g_autofree char *out = cfs_url_redact(cases[i].in);

		g_assert_cmpstr(out, ==, cases[i].want);
		g_assert_null(strstr(out, "SECRET"));
		g_assert_null(strstr(out, "pass"));
	}
}

static void test_url_host(void)
{
	static const struct {
		const char *in, *want;
	} cases[] = {
		{ "https://user:pw@host.example:8443/p?q#f",
		  "host.example:8443" },
		{ "http://127.0.0.1:9000", "127.0.0.1:9000" },
		{ "http://127.0.0.1:9000?x", "127.0.0.1:9000" },
		{ "https://host/", "host" },
		{ "http://[::1]:80/x", "[::1]:80" },
		{ "file:///var/tmp/x", "" },
		{ "noscheme/path", "" },
	};

	for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
		g_autofree char *out = cfs_url_host(cases[i].in);

		g_assert_cmpstr(out, ==, cases[i].want);
	}
}

static void test_name_sanitize(void)
{
	static const struct {
		const char *in, *want;
	} cases[] = {
		{ "disk.vhd", "disk.vhd" },
		{ "a/b/c", "a_b_c" },
		{ "/", "_" },
		{ "/etc/passwd", "_etc_passwd" },
		{ "../x", ".._x" },
		{ ".", "_" },
		{ "..", "_" },
		{ "...", "..." },
		{ ".hidden", ".hidden" },
		{ "", "_" },
		{ "a\tb\nc\x7f" "d\x01", "a_b_c_d_" },
		{ "disque \xc3\xa9t\xc3\xa9", "disque \xc3\xa9t\xc3\xa9" },
	};
	g_autofree char *null_name = cfs_name_sanitize(NULL);

	for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
		g_autofree char *out = cfs_name_sanitize(cases[i].in);

		g_assert_cmpstr(out, ==, cases[i].want);
		g_assert_null(strchr(out, '/'));
	}
	g_assert_cmpstr(null_name, ==, "_");
}

static void test_format_bytes(void)
{
	static const struct {
		double in;
		const char *want;
	} cases[] = {
		{ 0, "0B" },
		{ 512, "512B" },
		{ 1023, "1023B" },
		{ 1024, "1.0KiB" },
		{ 1536, "1.5KiB" },
		{ 187.2 * MiB, "187.2MiB" },
		{ GiB, "1.0GiB" },
		{ 2.5 * TiB, "2.5TiB" },
		{ 5120.0 * TiB, "5120.0TiB" },	/* no unit past TiB */
	};

	for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
		g_autofree char *out = cfs_format_bytes(cases[i].in);

		g_assert_cmpstr(out, ==, cases[i].want);
	}
}

static void test_io(void)
{
	g_autoptr(GError) error = NULL;
	g_autofree char *path = NULL;
	g_autofree guint8 *buf = g_malloc(300 * KiB);
	g_autofree guint8 *back = g_malloc0(300 * KiB);
	int fd = g_file_open_tmp("cfs-util-XXXXXX", &path, &error);

	g_assert_no_error(error);
	g_assert_cmpint(fd, >=, 0);
	for (gsize i = 0; i < 300 * KiB; i++)
		buf[i] = (guint8)(i * 7 + (i >> 10));

	/* Whole buffers at an offset; the gap before reads as zeros. */
	g_assert_true(cfs_pwrite_all(fd, buf, 300 * KiB, 10, &error));
	g_assert_no_error(error);
	g_assert_true(cfs_pread_all(fd, back, 300 * KiB, 10, &error));
	g_assert_no_error(error);
	g_assert_cmpmem(back, 300 * KiB, buf, 300 * KiB);
	g_assert_true(cfs_pread_all(fd, back, 10, 0, &error));
	g_assert_no_error(error);
	for (guint i = 0; i < 10; i++)
		g_assert_cmpuint(back[i], ==, 0);
	g_assert_true(cfs_pread_all(fd, back, 0, 1 * GiB, &error));
	g_assert_true(cfs_pwrite_all(fd, buf, 0, 0, &error));
	g_assert_no_error(error);

	/* A read that runs past the end of the file is an error. */
	g_assert_false(cfs_pread_all(fd, back, 100, 300 * KiB - 50, &error));
	g_assert_error(error, CFS_ERROR, EIO);
	g_clear_error(&error);
	g_assert_false(cfs_pread_all(fd, back, 1, 300 * KiB + 10, &error));
	g_assert_error(error, CFS_ERROR, EIO);
	g_clear_error(&error);
	close(fd);

	/* A bad descriptor: errno-coded errors. */
	g_assert_false(cfs_pread_all(fd, back, 1, 0, &error));
	g_assert_error(error, CFS_ERROR, EBADF);
	g_clear_error(&error);
	g_assert_false(cfs_pwrite_all(fd, buf, 1, 0, &error));
	g_assert_error(error, CFS_ERROR, EBADF);
	g_clear_error(&error);
	g_unlink(path);
}

static void test_now(void)
{
	double a = cfs_now(), b = cfs_now();

	g_assert_cmpfloat(a, >, 0);
	g_assert_cmpfloat(b, >=, a);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/util/parse-size", test_parse_size);
	g_test_add_func("/util/parse-size/bad", test_parse_size_bad);
	g_test_add_func("/util/parse-size/nan", test_parse_size_nan);
	g_test_add_func("/util/url-redact", test_url_redact);
	g_test_add_func("/util/url-host", test_url_host);
	g_test_add_func("/util/name-sanitize", test_name_sanitize);
	g_test_add_func("/util/format-bytes", test_format_bytes);
	g_test_add_func("/util/io", test_io);
	g_test_add_func("/util/now", test_now);
	return g_test_run();
}
