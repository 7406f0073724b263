// SPDX-License-Identifier: MIT
/* Ownership tags for what a mount creates in a cloud (see owner.h). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "providers/owner.h"

static char owner_machine[17];
static char owner_cache[9];
static char *owner_tag;

/* Field 22 of /proc/<pid>/stat: when the process started. */
static bool owner_start_time(guint pid, guint64 *start)
{
	g_autofree char *path = g_strdup_printf("/proc/%u/stat", pid);
	g_autofree char *text = NULL;
	const char *p;
	int field = 2;

	if (!g_file_get_contents(path, &text, NULL, NULL))
		return false;
	p = strrchr(text, ')');	/* the name may hold spaces */
	if (!p)
		return false;
	for (p++; *p && field < 22; p++)
		if (*p == ' ')
			field++;
	return sscanf(p, "%" G_GUINT64_FORMAT, start) == 1;
}

char *cfs_owner_tag_for(guint pid, guint64 start)
{
	return g_strdup_printf("%s-%s-%u-%" G_GUINT64_FORMAT, owner_machine,
			       owner_cache, pid, start);
}

void cfs_owner_init(const char *cache_dir)
{
	g_autofree char *id = NULL;
	g_autofree char *hash = g_compute_checksum_for_string(
		G_CHECKSUM_SHA256, cache_dir, -1);
	guint64 start = 0;
	gsize n = 0;

	if (g_file_get_contents("/etc/machine-id", &id, NULL, NULL))
		g_strstrip(id);
	for (const char *p = id; p && *p && n < 16; p++)
		if (g_ascii_isxdigit(*p))
			owner_machine[n++] = g_ascii_tolower(*p);
	if (n < 16) {
		/* No machine id: the host name's hash, which is worse. */
		g_autofree char *h = g_compute_checksum_for_string(
			G_CHECKSUM_SHA256, g_get_host_name(), -1);

		memcpy(owner_machine, h, 16);
	}
	owner_machine[16] = '\0';
	memcpy(owner_cache, hash, 8);
	owner_cache[8] = '\0';
	owner_start_time((guint)getpid(), &start);
	g_free(owner_tag);
	owner_tag = cfs_owner_tag_for((guint)getpid(), start);
}

const char *cfs_owner_tag(void)
{
	return owner_tag;
}

bool cfs_owner_is_stale(const char *tag, bool self)
{
	g_auto(GStrv) parts = NULL;
	guint64 pid, start, now = 0;
	char *end = NULL;

	if (!tag || !owner_tag)
		return false;
	if (strcmp(tag, owner_tag) == 0)
		return self;
	parts = g_strsplit(tag, "-", -1);
	if (g_strv_length(parts) != 4 || strcmp(parts[0], owner_machine) ||
	    strcmp(parts[1], owner_cache))
		return false;
	pid = g_ascii_strtoull(parts[2], &end, 10);
	if (*end || pid == 0 || pid > G_MAXINT)
		return false;
	start = g_ascii_strtoull(parts[3], &end, 10);
	if (*end)
		return false;
	/* Alive only if that pid runs and started at that time. */
	return !owner_start_time((guint)pid, &now) || now != start;
}
