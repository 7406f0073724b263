// SPDX-License-Identifier: MIT
/*
 * ~/.aws/credentials and ~/.aws/config as a user (or an attacker) may
 * write them: the lenient INI reader and the keys of each profile; and
 * the JSON a credential_process or an STS-like endpoint answers.
 */
#include <sys/mman.h>

#include "providers/aws/chain.c"
#include "tests/fuzz/fuzz-common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet();
	return 0;
}

static void fuzz_json(const uint8_t *data, size_t size)
{
	static const char *const keys[4] = { "AccessKeyId", "SecretAccessKey",
					     "SessionToken", "Expiration" };
	g_autofree char *text = g_strndup((const char *)data, size);
	g_autoptr(json_object) obj = json_tokener_parse(text);
	g_autoptr(GError) error = NULL;
	AwsFound found = { 0 };

	if (obj && aws_found_from_json(obj, keys, "fuzz", &found, &error) &&
	    !found.creds)
		abort();
	aws_found_clear(&found);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int fd = memfd_create("aws-ini", MFD_CLOEXEC);
	g_autofree char *path = g_strdup_printf("/proc/self/fd/%d", fd);
	g_autoptr(GKeyFile) kf = NULL;
	g_autoptr(GError) error = NULL;
	g_auto(GStrv) groups = NULL;

	fuzz_json(data, size);
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
		g_autofree char *group = aws_config_group(kf, *g);
		AwsFound found = { 0 };

		if (static_keys(kf, *g, "fuzz", *g, &found, &gerr) == AWS_HIT &&
		    !found.creds)
			abort();
		aws_found_clear(&found);
	}
	return 0;
}
