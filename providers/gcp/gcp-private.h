/* SPDX-License-Identifier: MIT */
/*
 * The GCP provider's private types: the instance made from the [gcp]
 * section and its credentials (auth.c), JSON calls to Google's APIs
 * (call.c), the Compute inventory, temporary images and the sweep
 * (compute.c), the Cloud Build export and the GCS source (export.c), and
 * CRC-32C (crc32c.c).
 *
 * Threads: create and free on the main thread; list, export_start,
 * export_end, cleanup and a source's renew on the control pool; a
 * source's plan, authorize and verify on the network thread. Everything
 * in GcpProvider is immutable after create except what says otherwise.
 */
#pragma once

#include <glib.h>
#include <json-c/json.h>
#include <stdbool.h>

#include "common/http.h"
#include "providers/oauth2.h"
#include "providers/polling.h"
#include "providers/provider.h"

#define GCP_LABEL_TEMPORARY "cloudfs-temporary"
#define GCP_SCOPE "https://www.googleapis.com/auth/cloud-platform"
#define GCP_DISK_MAX CFS_DISK_SIZE_MAX

typedef struct {
	CfsProvider base;

	char *credentials;	/* key file path, or NULL: metadata server */
	char *client_email;	/* from the key file */
	char *private_key;	/* from the key file: a secret */
	char *private_key_id;
	char *token_url;
	char *metadata_url;	/* base, ".../computeMetadata/v1" */
	char *compute_url;	/* ".../compute/v1", no trailing '/' */
	char *cloudbuild_url;	/* ".../v1" */
	char *storage_url;	/* ".../storage/v1" */
	GStrv zones;		/* NULL: every zone (aggregated lists) */
	GStrv export_formats;	/* -format of each file of a disk: vmdk
				 * vhdx vpc qcow2 raw (export_formats, else
				 * vmdk and formats=) */
	char *bucket;
	char *prefix;		/* as given, usually ending with '/' */
	bool keep_exports;
	double export_timeout_s;	/* 0: grows with the disk */
	double poll_s;
	CfsHttpSettings *settings;	/* [gcp] TLS, and gcp_classify */

	GMutex lock;
	CfsOAuth2 *oauth;	/* the token cache, made at the first use
				 * (lock to make it; never changes after) */
	char *project;		/* protected by lock once listing began:
				 * NULL until the metadata server says */
} GcpProvider;

/* One disk a file stands for; the CfsDisk's priv. */
typedef struct {
	char *zone;
	char *name;
	char *instance;		/* NULL: attached to no instance */
	char *format;		/* the export tool's -format */
	guint64 size_gb;
	bool in_use;		/* attached: an image needs forceCreate */
} GcpDisk;

void gcp_disk_free(GcpDisk *d);

/* --- auth.c: configuration and tokens --- */

/* Read the [gcp] section, the key file and the environment; @views is
 * the mount's formats= (CfsContext.formats). Local files only. Main
 * thread. */
bool gcp_config_load(GcpProvider *prov, GKeyFile *conf, const char *section,
		     const char *const *views, GError **error);
void gcp_config_clear(GcpProvider *prov);

/* The project to work in, found on the metadata server if nothing named
 * it. Transfer full. Control pool. */
char *gcp_project(GcpProvider *prov, GError **error);

/* The token cache, made at the first call. Borrowed: it lives as long
 * as @prov. Any thread but the network thread (the first call). */
CfsOAuth2 *gcp_oauth(GcpProvider *prov, GError **error);

/* A bearer token (transfer full, a secret). Control pool. */
char *gcp_token(GcpProvider *prov, GError **error);

/* The file extension of an export tool -format ("vpc" gives "vhd"). */
const char *gcp_format_ext(const char *format);

/* --- call.c: Google JSON APIs --- */

/* Run @method @url with the JSON @body (or NULL) and a bearer token; a
 * refused token is renewed once. The parsed answer (an object; an empty
 * body gives an empty object), or NULL with @error carrying Google's
 * message, prefixed with @what. Control pool. Transfer full. */
json_object *gcp_call(GcpProvider *prov, const char *method, const char *url,
		      json_object *body, const char *what, GError **error);

/* How Google's answers are retried. Network thread. */
CfsHttpClass gcp_classify(const CfsHttpRequest *req);

/* Put "Authorization: Bearer @token" in @req's auth_headers. */
void gcp_set_bearer(CfsHttpRequest *req, const char *token);

/* A string member of @o, or NULL. Borrowed. */
const char *gcp_json_str(json_object *o, const char *key);
/* The unsigned number in a string member ("sizeGb": "10"), or false. */
bool gcp_json_u64(json_object *o, const char *key, guint64 *out);
/* Percent-encode everything but unreserved characters ('/' too). */
char *gcp_escape(const char *s);
/* The last '/'-separated part of a URL or path. Borrowed. */
const char *gcp_basename(const char *url);

/* --- compute.c --- */

/* The inventory: append CfsVm* to @vms. */
bool gcp_compute_list(GcpProvider *prov, const char *project, GPtrArray *vms,
		      GError **error);

/* Make the temporary image of @d, labelled with this mount's tag, and
 * wait until it is ready. Its name into @image (transfer full, set even
 * when this fails after creating it). */
bool gcp_image_create(GcpProvider *prov, const char *project,
		      const GcpDisk *d, char **image, CfsExportReport *report,
		      GError **error);
void gcp_image_delete(GcpProvider *prov, const char *project,
		      const char *image);

/* Delete images and export objects whose owner label or folder is stale
 * (see owner.h). Control pool. */
void gcp_sweep(GcpProvider *prov, const char *project, bool self);

/* --- export.c --- */

CfsSource *gcp_export_start(GcpProvider *prov, CfsDisk *disk,
			    CfsExportReport *report, GError **error);
void gcp_export_end(GcpProvider *prov, CfsDisk *disk, CfsSource *src);
/* The object name of an export (under the prefix, in the owner's
 * folder). Transfer full. */
char *gcp_object_name(GcpProvider *prov, const char *image,
		      const char *format);
/* Delete gs://bucket/@name; failures are logged. */
bool gcp_object_delete(GcpProvider *prov, const char *name, GError **error);

/* --- crc32c.c --- */

/* CRC-32C (Castagnoli) of @len bytes, continuing from @crc (0 to start). */
guint32 gcp_crc32c(guint32 crc, const void *data, gsize len);
/* The CRC-32C of A||B from crc(A), crc(B) and B's length. */
guint32 gcp_crc32c_combine(guint32 crc_a, guint32 crc_b, guint64 len_b);
