// SPDX-License-Identifier: MIT
/*
 * Temporary snapshots: a tagged copy of a managed disk (incremental where
 * the disk allows it), read-only SAS grants on it (beginGetAccess), and
 * their release (endGetAccess, then delete). The sweep finds what a
 * crashed cloudfs left by its ownership tag and releases only that.
 * The source disk and its VM are never changed.
 */
#include <string.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/json.h"
#include "common/secret.h"
#include "providers/azure/azure-private.h"

#define AZ_SNAPSHOT_TIMEOUT_S (6 * 3600.0)
#define AZ_GRANT_TIMEOUT_S 600.0
#define AZ_RELEASE_TIMEOUT_S 120.0
#define AZ_SAS_MAX 8192

static char *snapshot_url(AzProvider *prov, const char *rg, const char *name,
			  const char *verb)
{
	g_autofree char *erg = az_escape(rg);
	g_autofree char *ename = az_escape(name);

	return g_strdup_printf("/subscriptions/%s/resourceGroups/%s/providers/"
			       "Microsoft.Compute/snapshots/%s%s%s"
			       "?api-version=%s", prov->subscription, erg,
			       ename, verb ? "/" : "", verb ? verb : "",
			       AZ_API_DISKS);
}

/* "cloudfs-<disk>-<8 hex>": unique, within the 80 characters ARM allows,
 * ending with a letter or digit. */
static char *snapshot_name(const AzDisk *d)
{
	g_autofree char *stem = g_strndup(d->name, 50);

	for (char *p = stem; *p; p++)
		if (!g_ascii_isalnum(*p) && *p != '-' && *p != '_' &&
		    *p != '.')
			*p = '_';
	return g_strdup_printf("cloudfs-%s-%08x", stem, g_random_int());
}

static json_object *snapshot_body(AzProvider *prov, const AzDisk *d,
				  bool incremental)
{
	json_object *o = json_object_new_object();
	json_object *tags = json_object_new_object();
	json_object *props = json_object_new_object();
	json_object *cd = json_object_new_object();
	g_autofree char *source = g_strndup(d->id, 256);

	json_object_object_add(o, "location",
			       json_object_new_string(d->location));
	json_object_object_add(tags, CFS_OWNER_KEY,
			       json_object_new_string(cfs_owner_tag()));
	/* Kept snapshots are not temporary: the sweep leaves them. */
	json_object_object_add(tags, AZ_TAG_TEMPORARY, json_object_new_string(
		prov->keep_snapshots ? "false" : "true"));
	json_object_object_add(tags, AZ_TAG_SOURCE,
			       json_object_new_string(source));
	json_object_object_add(o, "tags", tags);
	json_object_object_add(cd, "createOption",
			       json_object_new_string("Copy"));
	json_object_object_add(cd, "sourceResourceId",
			       json_object_new_string(d->id));
	json_object_object_add(props, "creationData", cd);
	json_object_object_add(props, "incremental",
			       json_object_new_boolean(incremental));
	json_object_object_add(o, "properties", props);
	return o;
}

/* PUT the snapshot; a disk that cannot have an incremental one gets a
 * full copy. */
static bool snapshot_put(AzProvider *prov, const AzDisk *d, const char *name,
			 AzReply *reply, GError **error)
{
	g_autofree char *url = snapshot_url(prov, d->rg, name, NULL);
	g_autofree char *what = g_strdup_printf("snapshot of disk %s",
						d->name);

	for (guint i = 0; i < 2; i++) {
		g_autoptr(json_object) body = snapshot_body(prov, d, i == 0);
		g_autoptr(GError) local = NULL;

		if (az_arm(prov, "PUT", url, body, what, reply, &local))
			return true;
		if (i == 1 || reply->status != 400 ||
		    !strstr(local->message, "ncremental")) {
			g_propagate_error(error, g_steal_pointer(&local));
			return false;
		}
		g_message("azure: %s: no incremental snapshot (%s); a full "
			  "one then", d->name, local->message);
	}
	return false;
}

/* GET the snapshot until its copy is complete (incremental snapshots
 * report completionPercent); its size and unique id. */
static bool snapshot_ready(AzProvider *prov, const AzDisk *d,
			   const char *name, guint64 *size, char **unique_id,
			   CfsExportReport *report, GError **error)
{
	g_autofree char *url = snapshot_url(prov, d->rg, name, NULL);
	CfsPoll poll;

	cfs_poll_init(&poll, report, 1.0, 15.0, AZ_SNAPSHOT_TIMEOUT_S);
	for (;;) {
		AzReply r = { 0 };
		json_object *pct = NULL;
		const char *state;
		double percent = 100.0;

		if (!az_arm(prov, "GET", url, NULL, "ARM get snapshot", &r,
			    error))
			return false;
		state = cfs_json_string(r.body, "properties/provisioningState");
		pct = cfs_json_get(r.body, "properties/completionPercent");
		if (pct)
			percent = json_object_get_double(pct);
		if (g_strcmp0(state, "Succeeded") == 0 && percent >= 100.0) {
			bool ok = cfs_json_u64(r.body,
					       "properties/diskSizeBytes",
					       size) &&
				  *size > 0 && *size % 512 == 0 &&
				  *size <= AZ_DISK_MAX;
			const char *uid = cfs_json_string(
				r.body, "properties/uniqueId");

			*unique_id = g_strdup(uid ? uid : name);
			az_reply_clear(&r);
			if (!ok)
				g_set_error(error, CFS_ERROR, EIO, "snapshot %s: "
					    "no valid diskSizeBytes", name);
			return ok;
		}
		az_reply_clear(&r);
		if (g_strcmp0(state, "Failed") == 0) {
			g_set_error(error, CFS_ERROR, EIO, "snapshot %s of %s "
				    "failed", name, d->name);
			return false;
		}
		cfs_export_report(report, "snapshot", MIN(percent, 99.0));
		if (!cfs_poll_next(&poll, 0, "snapshot copy", error))
			return false;
	}
}

bool az_snapshot_create(AzProvider *prov, const AzDisk *d, char **name,
			guint64 *size, char **unique_id,
			CfsExportReport *report, GError **error)
{
	g_autofree char *n = snapshot_name(d);
	g_autofree char *what = g_strdup_printf("snapshot %s of disk %s", n,
						d->name);
	g_autoptr(json_object) result = NULL;
	AzReply reply = { 0 };
	bool ok;

	cfs_export_report(report, "snapshot", 0.0);
	if (!snapshot_put(prov, d, n, &reply, error)) {
		az_reply_clear(&reply);
		/* An answer lost on the way may have made it all the same. */
		if (!prov->keep_snapshots)
			az_snapshot_release(prov, d->rg, n, false);
		return false;
	}
	g_message("azure: snapshot %s of disk %s requested", n, d->name);
	ok = az_lro_wait(prov, &reply, what, report, "snapshot",
			 AZ_SNAPSHOT_TIMEOUT_S, &result, error) &&
	     snapshot_ready(prov, d, n, size, unique_id, report, error);
	az_reply_clear(&reply);
	if (!ok) {
		if (!prov->keep_snapshots)
			az_snapshot_release(prov, d->rg, n, false);
		return false;
	}
	cfs_export_report(report, "snapshot", 100.0);
	*name = g_steal_pointer(&n);
	return true;
}

char *az_snapshot_grant(AzProvider *prov, const char *rg, const char *name,
			CfsExportReport *report, GError **error)
{
	g_autofree char *url = snapshot_url(prov, rg, name, "beginGetAccess");
	g_autofree char *what = g_strdup_printf("beginGetAccess on snapshot "
						"%s", name);
	g_autoptr(json_object) body = json_object_new_object();
	g_autoptr(json_object) result = NULL;
	AzReply reply = { 0 };
	const char *sas;
	bool ok;

	json_object_object_add(body, "access", json_object_new_string("Read"));
	json_object_object_add(body, "durationInSeconds",
			       json_object_new_int64(prov->grant_seconds));
	if (report)
		cfs_export_report(report, "grant", 0.0);
	ok = az_arm(prov, "POST", url, body, what, &reply, error) &&
	     az_lro_wait(prov, &reply, what, report, "grant",
			 AZ_GRANT_TIMEOUT_S, &result, error);
	az_reply_clear(&reply);
	if (!ok)
		return NULL;
	sas = cfs_json_string(result, "accessSAS");
	if (!sas || strlen(sas) > AZ_SAS_MAX ||
	    (g_ascii_strncasecmp(sas, "https://", 8) &&
	     g_ascii_strncasecmp(sas, "http://", 7)) || !strchr(sas, '?')) {
		g_set_error(error, CFS_ERROR, EIO, "%s: no usable accessSAS "
			    "in the answer", what);
		return NULL;
	}
	if (report)
		cfs_export_report(report, "grant", 100.0);
	return cfs_secret_dup(sas);
}

/* Run one release step (endGetAccess or DELETE) and wait for it. */
static bool release_step(AzProvider *prov, const char *method,
			 const char *url, const char *what, GError **error)
{
	g_autoptr(json_object) result = NULL;
	AzReply reply = { 0 };
	bool ok = az_arm(prov, method, url, NULL, what, &reply, error) &&
		  az_lro_wait(prov, &reply, what, NULL, NULL,
			      AZ_RELEASE_TIMEOUT_S, &result, error);

	az_reply_clear(&reply);
	return ok;
}

void az_snapshot_release(AzProvider *prov, const char *rg, const char *name,
			 bool keep)
{
	g_autofree char *end = snapshot_url(prov, rg, name, "endGetAccess");
	g_autofree char *del = snapshot_url(prov, rg, name, NULL);
	g_autofree char *what_end = g_strdup_printf("endGetAccess on snapshot "
						    "%s", name);
	g_autofree char *what_del = g_strdup_printf("delete snapshot %s",
						    name);
	g_autoptr(GError) error = NULL;

	/* The snapshot cannot go while a SAS is live: end access first,
	 * and wait for that to finish. */
	if (!release_step(prov, "POST", end, what_end, &error)) {
		if (g_error_matches(error, CFS_ERROR, ENOENT))
			return;		/* never made, or gone already */
		g_warning("azure: %s (deleting it is tried again at the "
			  "next mount)", error->message);
		return;
	}
	g_message("azure: access to snapshot %s ended", name);
	if (keep)
		return;
	if (!release_step(prov, "DELETE", del, what_del, &error)) {
		g_warning("azure: %s (tried again at the next mount)",
			  error->message);
		return;
	}
	g_message("azure: temporary snapshot %s deleted", name);
}

/* --- leftovers of a crash --- */

static void sweep_list(AzProvider *prov, const char *url, bool self)
{
	g_autoptr(GPtrArray) items = g_ptr_array_new_with_free_func(
		cfs_json_unref);
	g_autoptr(GError) error = NULL;

	if (!az_arm_list(prov, url, "ARM list snapshots", items, &error)) {
		g_warning("azure: looking for snapshots left behind: %s",
			  error->message);
		return;
	}
	for (guint i = 0; i < items->len; i++) {
		json_object *s = items->pdata[i];
		const char *id = cfs_json_string(s, "id");
		const char *owner = cfs_json_string(s, "tags/" CFS_OWNER_KEY);
		const char *tmp = cfs_json_string(s, "tags/" AZ_TAG_TEMPORARY);
		g_autofree char *rg = NULL, *type = NULL, *name = NULL;

		if (!owner || g_strcmp0(tmp, "true") != 0 ||
		    !az_id_parse(id, &rg, &type, &name) ||
		    g_ascii_strcasecmp(type, "snapshots"))
			continue;
		/* Only what this machine and cache made, in a process that
		 * is gone: another cloudfs may still be reading it. */
		if (!cfs_owner_is_stale(owner, self)) {
			g_debug("azure: snapshot %s is not ours to delete "
				"(owner %s)", name, owner);
			continue;
		}
		g_message("azure: deleting snapshot %s left behind by an "
			  "earlier cloudfs (%s)", name, owner);
		az_snapshot_release(prov, rg, name, false);
	}
}

void az_sweep(AzProvider *prov, bool self)
{
	g_autoptr(GError) error = NULL;
	g_autoptr(CfsSecret) token = az_token(prov, &error);

	if (!token) {
		g_debug("azure: no cleanup without a token: %s",
			error->message);
		return;
	}
	if (!prov->resource_groups) {
		g_autofree char *url = g_strdup_printf(
			"/subscriptions/%s/providers/Microsoft.Compute/"
			"snapshots?api-version=%s", prov->subscription,
			AZ_API_DISKS);

		sweep_list(prov, url, self);
		return;
	}
	for (char **rg = prov->resource_groups; *rg; rg++) {
		g_autofree char *e = az_escape(*rg);
		g_autofree char *url = g_strdup_printf(
			"/subscriptions/%s/resourceGroups/%s/providers/"
			"Microsoft.Compute/snapshots?api-version=%s",
			prov->subscription, e, AZ_API_DISKS);

		sweep_list(prov, url, self);
	}
}
