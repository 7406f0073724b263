// SPDX-License-Identifier: MIT
/*
 * The INI config file: every section handed to its provider's create, as
 * main() does at mount (create must refuse what it cannot use with an
 * error, and never touch the network).
 */
#include "providers/provider.h"
#include "tests/fuzz/fuzz-common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet();
	/* No credentials or endpoints from the machine running the fuzzer. */
	g_setenv("HOME", "/nonexistent", TRUE);
	g_setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent", TRUE);
	g_setenv("AWS_CONFIG_FILE", "/nonexistent", TRUE);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	g_autoptr(GKeyFile) conf = g_key_file_new();
	g_auto(GStrv) groups = NULL;
	CfsContext ctx = { 0 };

	if (!g_key_file_load_from_data(conf, (const char *)data, size,
				       G_KEY_FILE_NONE, NULL))
		return 0;
	groups = g_key_file_get_groups(conf, NULL);
	for (char **g = groups; *g; g++) {
		g_autoptr(GError) error = NULL;
		g_autofree char *folder = NULL;
		const CfsProviderOps *ops = cfs_provider_for_section(*g, &folder,
								     &error);
		CfsProvider *prov;

		if (!ops)
			continue;
		prov = ops->create(conf, *g, &ctx, &error);
		if (!prov) {
			if (!error)
				abort();	/* a refusal must say why */
			continue;
		}
		prov->ops = ops;
		ops->free(prov);
	}
	return 0;
}
