// SPDX-License-Identifier: MIT
/*
 * ~/.aws/credentials and ~/.aws/config as a user (or an attacker) may
 * write them: the lenient INI reader and the keys of each profile.
 */
#include <sys/mman.h>

#include "providers/aws/creds.c"
#include "tests/fuzz/fuzz-common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int fd = memfd_create("aws-ini", MFD_CLOEXEC);
	g_autofree char *path = g_strdup_printf("/proc/self/fd/%d", fd);
	g_autoptr(GKeyFile) kf = NULL;
	g_autoptr(GError) error = NULL;
	g_auto(GStrv) groups = NULL;

	if (fd < 0)
		return 0;
	if (write(fd, data, size) != (ssize_t)size) {
		close(fd);
		return 0;
	}
	kf = aws_ini_load(path, &error);
	close(fd);
	if (!kf)
		return 0;
	groups = g_key_file_get_groups(kf, NULL);
	for (char **g = groups; *g; g++) {
		g_autoptr(GError) gerr = NULL;
		CfsAwsCreds *creds = creds_from_group(kf, *g, "fuzz", *g,
						      &gerr);

		g_clear_pointer(&creds, cfs_aws_creds_unref);
	}
	return 0;
}
