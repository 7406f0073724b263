// SPDX-License-Identifier: MIT
/*
 * Unit tests of the secret primitive: wiping, copies, scoped cleanup and
 * reading secret files (line ends, limits, errors that name the path but
 * never the contents).
 */
#include <glib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <glib/gstdio.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"
#include "common/secret.h"

static void test_wipe(void)
{
	char buf[64];

	memset(buf, 'x', sizeof(buf));
	cfs_secret_wipe(buf, sizeof(buf) - 8);
	for (gsize i = 0; i < sizeof(buf) - 8; i++)
		g_assert_cmpint(buf[i], ==, 0);
	for (gsize i = sizeof(buf) - 8; i < sizeof(buf); i++)
		g_assert_cmpint(buf[i], ==, 'x');
	cfs_secret_wipe(NULL, 0);
}

static void test_dup_free(void)
{
	char *s = cfs_secret_dup("hunter2");
	GString *gs = g_string_new("password=");

	g_assert_cmpstr(s, ==, "hunter2");
	cfs_secret_clear(&s);
	g_assert_null(s);
	cfs_secret_clear(&s);
	g_assert_null(cfs_secret_dup(NULL));
	cfs_secret_free(NULL);
	g_string_append(gs, "hunter2");
	cfs_secret_gstring_free(gs);
	cfs_secret_gstring_free(NULL);
	{
		g_autoptr(CfsSecret) a = cfs_secret_dup("scoped");
		g_autoptr(CfsSecretString) b = g_string_new("scoped");

		g_assert_cmpstr(a, ==, b->str);
	}
}

static void test_bytes(void)
{
	GBytes *b = cfs_secret_bytes_take(g_strdup("a=1&secret=2"));
	gsize len;
	const char *data = g_bytes_get_data(b, &len);

	g_assert_cmpuint(len, ==, strlen("a=1&secret=2"));
	g_assert_cmpmem(data, len, "a=1&secret=2", len);
	g_bytes_unref(b);
}

static char *write_temp(const char *data, gsize len)
{
	g_autoptr(GError) error = NULL;
	char *path = NULL;
	int fd = g_file_open_tmp("cfs-secret-XXXXXX", &path, &error);

	g_assert_no_error(error);
	close(fd);
	g_assert_true(g_file_set_contents(path, data, len, &error));
	g_assert_no_error(error);
	return path;
}

static void test_read_file(void)
{
	static const struct {
		const char *data, *want;
	} cases[] = {
		{ "hunter2", "hunter2" },
		{ "hunter2\n", "hunter2" },
		{ "hunter2\r\n", "hunter2" },
		{ "hunter2\n\n", "hunter2\n" },
		{ "hunter2\r", "hunter2\r" },
		{ " spaced \n", " spaced " },
		{ "two\nlines\n", "two\nlines" },
	};

	for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
		g_autofree char *path = write_temp(cases[i].data,
						   strlen(cases[i].data));
		g_autoptr(GError) error = NULL;
		g_autoptr(CfsSecret) s = cfs_secret_read_file(path, &error);

		g_assert_no_error(error);
		g_assert_cmpstr(s, ==, cases[i].want);
		g_unlink(path);
	}
}

static void read_fails(const char *data, gsize len, int code)
{
	g_autofree char *path = write_temp(data, len);
	g_autoptr(GError) error = NULL;
	char *s = cfs_secret_read_file(path, &error);

	g_assert_null(s);
	g_assert_error(error, CFS_ERROR, code);
	g_assert_nonnull(strstr(error->message, path));
	g_assert_null(strstr(error->message, "hunter2"));
	g_unlink(path);
}

static void test_read_file_bad(void)
{
	g_autofree char *big = g_malloc(CFS_SECRET_FILE_MAX + 1);
	g_autoptr(GError) error = NULL;
	g_autofree char *missing = NULL;

	read_fails("", 0, EINVAL);
	read_fails("\n", 1, EINVAL);
	read_fails("\r\n", 2, EINVAL);
	read_fails("hunter2\0tail", 12, EINVAL);
	memset(big, 'a', CFS_SECRET_FILE_MAX + 1);
	memcpy(big, "hunter2", 7);
	read_fails(big, CFS_SECRET_FILE_MAX + 1, EFBIG);

	missing = g_build_filename(g_get_tmp_dir(), "cfs-no-such-secret",
				   NULL);
	g_assert_null(cfs_secret_read_file(missing, &error));
	g_assert_error(error, CFS_ERROR, ENOENT);
	g_assert_nonnull(strstr(error->message, missing));
}

/* Exactly the limit is still a secret. */
static void test_read_file_limit(void)
{
	g_autofree char *big = g_malloc(CFS_SECRET_FILE_MAX);
	g_autofree char *path = NULL;
	g_autoptr(GError) error = NULL;
	g_autoptr(CfsSecret) s = NULL;

	memset(big, 'k', CFS_SECRET_FILE_MAX);
	big[CFS_SECRET_FILE_MAX - 1] = '\n';
	path = write_temp(big, CFS_SECRET_FILE_MAX);
	s = cfs_secret_read_file(path, &error);
	g_assert_no_error(error);
	g_assert_cmpuint(strlen(s), ==, CFS_SECRET_FILE_MAX - 1);
	g_unlink(path);
}

/* No core dump may carry a secret to the disk. */
static void test_harden(void)
{
	struct rlimit lim;

	cfs_process_harden();
	g_assert_cmpint(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), ==, 0);
	g_assert_cmpint(getrlimit(RLIMIT_CORE, &lim), ==, 0);
	g_assert_cmpuint(lim.rlim_cur, ==, 0);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/secret/wipe", test_wipe);
	g_test_add_func("/secret/dup-free", test_dup_free);
	g_test_add_func("/secret/bytes", test_bytes);
	g_test_add_func("/secret/harden", test_harden);
	g_test_add_func("/secret/read-file", test_read_file);
	g_test_add_func("/secret/read-file-bad", test_read_file_bad);
	g_test_add_func("/secret/read-file-limit", test_read_file_limit);
	return g_test_run();
}
