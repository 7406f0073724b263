/* SPDX-License-Identifier: MIT */
/*
 * The Azure provider's private types: the instance made from the [azure]
 * section (azure.c), tokens and ARM calls with their long-running
 * operations (arm.c), the inventory (inventory.c), snapshots and grants
 * (snapshot.c) and the SAS source read as a page blob (source.c).
 *
 * Threads: create and free on the main thread; everything else that may
 * block on the control pool; the source's plan and authorize on the
 * network thread. AzProvider is immutable after create except what says
 * otherwise.
 */
#pragma once

#include <glib.h>
#include <json-c/json.h>
#include <stdbool.h>

#include "common/http.h"
#include "providers/oauth2.h"
#include "providers/polling.h"
#include "providers/provider.h"

/* API versions of the resource providers used. */
#define AZ_API_RESOURCES "2021-04-01"
#define AZ_API_COMPUTE "2024-03-01"
#define AZ_API_DISKS "2023-04-02"

/* Tags on snapshots cloudfs makes (CFS_OWNER_KEY too). */
#define AZ_TAG_TEMPORARY "cloudfs-temporary"	/* "true": delete it */
#define AZ_TAG_SOURCE "cloudfs-source"

/* Disks larger than this are refused (Azure's largest is 64 TiB). */
#define AZ_DISK_MAX CFS_DISK_SIZE_MAX
/* A fixed VHD ends with this footer; the page blob holds it. */
#define AZ_VHD_FOOTER 512

typedef struct {
	CfsProvider base;

	char *subscription;
	char *tenant;
	char *client_id;	/* NULL: the VM's system-assigned identity */
	char *client_secret;	/* a secret; NULL: managed identity */
	char *imds_url;		/* managed identity token endpoint */
	char *authority;	/* no trailing '/' */
	char *arm;		/* management_url, no trailing '/' */
	char *arm_origin;	/* scheme://host[:port] of arm, lower case */
	char *audience;		/* token scope without /.default */
	GStrv resource_groups;	/* NULL: every resource group */
	bool keep_snapshots;
	guint grant_seconds;
	CfsHttpSettings *settings;	/* TLS, and azure_classify */

	GMutex lock;
	CfsOAuth2 *oauth;	/* protected by lock: made at first use */
} AzProvider;

/* What list() found about one managed disk; the CfsDisk's priv. */
typedef struct {
	char *id;		/* ARM id, as the disk resource spells it */
	char *rg;		/* its resource group */
	char *name;
	char *location;
	guint64 size;		/* diskSizeBytes: the VHD without its footer */
} AzDisk;

void az_disk_free(AzDisk *d);

/* --- arm.c: tokens, ARM calls, long-running operations --- */

/* An ARM answer. */
typedef struct {
	long status;
	json_object *body;	/* parsed, or NULL (no body, 204) */
	char *async_url;	/* Azure-AsyncOperation, or NULL */
	char *location;		/* Location, or NULL */
	double retry_after;	/* seconds; < 0: not given */
} AzReply;

void az_reply_clear(AzReply *reply);

/* An access token for ARM (transfer full, a secret). Blocks. */
char *az_token(AzProvider *prov, GError **error);

/*
 * One ARM call: @method on @url (a path below management_url, or an
 * absolute URL on its host) with the JSON @body (or NULL). A 401 renews
 * the token and tries once more. On failure @error carries ARM's code
 * and message and an errno for the status; @what names the call.
 * Control pool.
 */
bool az_arm(AzProvider *prov, const char *method, const char *url,
	    json_object *body, const char *what, AzReply *reply,
	    GError **error);

/* GET @url and every page after it (nextLink), appending the items of
 * "value" (new references) to @items. Control pool. */
bool az_arm_list(AzProvider *prov, const char *url, const char *what,
		 GPtrArray *items, GError **error);

/*
 * Follow the long-running operation that @first started (202 with
 * Azure-AsyncOperation or Location, honouring Retry-After) until it ends;
 * its result into *@result (transfer full; may be NULL): the async
 * operation's properties/output, or the Location's final body. @report
 * (may be NULL) shows @phase and is how waits end at unmount. At most
 * @timeout_s seconds. Control pool.
 */
bool az_lro_wait(AzProvider *prov, AzReply *first, const char *what,
		 CfsExportReport *report, const char *phase, double timeout_s,
		 json_object **result, GError **error);

/* "/subscriptions/<s>/resourceGroups/<rg>/providers/Microsoft.Compute/"
 * "<type>/<name>" split into its parts (transfer full); false if @id is
 * not of that form. Case-insensitive, as ARM is. */
bool az_id_parse(const char *id, char **rg, char **type, char **name);

/* A path component escaped for a URL. Transfer full. */
char *az_escape(const char *s);

/* How Azure's answers are retried (the provider's HTTP settings).
 * Network thread. */
CfsHttpClass azure_classify(const CfsHttpRequest *req);

/* --- inventory.c --- */

bool az_list(AzProvider *prov, GPtrArray *vms, GError **error);

/* --- snapshot.c --- */

/* Create the tagged snapshot of @d and wait until it is ready. Its name
 * into *@name (transfer full); on failure what was made is deleted. */
bool az_snapshot_create(AzProvider *prov, const AzDisk *d, char **name,
			guint64 *size, char **unique_id,
			CfsExportReport *report, GError **error);

/* beginGetAccess on snapshot @name of @rg: the SAS URL (transfer full, a
 * secret). */
char *az_snapshot_grant(AzProvider *prov, const char *rg, const char *name,
			CfsExportReport *report, GError **error);

/* endGetAccess, waited for; then delete unless @keep. Failures are
 * logged. */
void az_snapshot_release(AzProvider *prov, const char *rg, const char *name,
			 bool keep);

/* Snapshots a crashed cloudfs of this machine and cache left (stale
 * owner tag; with @self, this process's too): end access, delete. */
void az_sweep(AzProvider *prov, bool self);

/* --- source.c --- */

CfsSource *az_export_start(AzProvider *prov, CfsDisk *disk,
			   CfsExportReport *report, GError **error);
void az_export_end(AzProvider *prov, CfsDisk *disk, CfsSource *src);
