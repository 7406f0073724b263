/* SPDX-License-Identifier: MIT */
/*
 * The AWS provider's private types: the instance made from the [aws]
 * section, credentials and endpoints (creds.c), signed requests and AWS
 * errors (call.c), the credential chain (chain.c, with the processes,
 * STS, SSO and metadata services it asks), the EC2 Query API and its XML
 * (ec2.c), the EBS direct APIs (ebs.c), EC2 images (image.c) and S3
 * exports (s3.c).
 *
 * Threads: list runs with the list lock held; export_start/export_end on
 * the control pool; source operations on any thread. Everything in
 * AwsProvider is immutable after create except what says otherwise.
 */
#pragma once

#include <glib.h>
#include <libxml/tree.h>
#include <stdbool.h>

#include "common/http.h"
#include "common/sigv4.h"
#include "providers/polling.h"
#include "providers/provider.h"

/* Tags on everything cloudfs creates in an account. */
#define AWS_TAG_TEMPORARY "cloudfs:temporary"	/* "true": delete it */
#define AWS_TAG_VOLUME "cloudfs:volume"
#define AWS_TAG_INSTANCE "cloudfs:instance"
#define AWS_TAG_OWNER "cloudfs:owner"	/* cfs_owner_tag(): who made it */

#define AWS_EC2_VERSION "2016-11-15"

typedef enum {
	AWS_EC2,
	AWS_EBS,
	AWS_S3,
	AWS_STS,
	AWS_SSO,		/* the SSO portal: GetRoleCredentials */
	AWS_N_SERVICES,
} AwsService;

typedef enum {
	AWS_MODE_EBS_DIRECT,
	AWS_MODE_EXPORT,
} AwsMode;

typedef enum {
	AWS_EXPORT_IMAGE,	/* CreateImage, then ExportImage (default) */
	AWS_EXPORT_INSTANCE,	/* CreateInstanceExportTask (imported VMs) */
} AwsExportMethod;

typedef struct {
	CfsProvider base;

	AwsMode mode;
	char *profile;		/* the profile used for files: never NULL */
	bool profile_explicit;	/* [aws] profile: environment keys ignored */
	char *region;		/* the default region */
	GStrv regions;		/* the regions listed, at least one */
	char *endpoint[AWS_N_SERVICES];	/* base URL without '/', or NULL */
	char *s3_bucket;
	char *s3_prefix;	/* "" or ends with '/' as given */
	char *export_format;	/* vmdk, vhd, raw */
	AwsExportMethod export_method;
	bool keep_snapshots;
	bool keep_exports;
	CfsHttpSettings *settings;	/* [aws] TLS, and aws_classify */
	double poll_s;		/* first poll interval of long operations */
	double ebs_rate;	/* GetSnapshotBlock a second per snapshot */
	CfsHttpBucket *ebs_account;	/* GetSnapshotBlock of the account */
	CfsHttpBucket *ebs_list;	/* ListSnapshotBlocks of the account */

	GMutex lock;
	CfsAwsCreds *creds;	/* protected by lock; NULL until resolved */
	gint64 creds_at;	/* protected by lock; real µs fetched */
	gint64 creds_expires;	/* protected by lock; real µs, 0: never */
	char *creds_source;	/* protected by lock: "environment", … */

} AwsProvider;

/* What list() found about one volume; the CfsDisk's priv. */
typedef struct {
	char *region;
	char *instance_id;
	char *volume_id;
	char *device;
	guint64 size;		/* bytes */
	bool boot;
} AwsDisk;

void aws_disk_free(AwsDisk *d);

/* --- creds.c: configuration and credentials --- */

/* Read the [aws] section, the AWS_* environment and ~/.aws/config into
 * @prov. Reads local files only. */
bool aws_config_load(AwsProvider *prov, GKeyFile *conf, const char *section,
		     GError **error);
void aws_config_clear(AwsProvider *prov);
/* GetSnapshotBlock a second, per snapshot and per account, unless the
 * section says ebs_rate / ebs_account_rate: under EBS's 1,000. */
#define AWS_EBS_RATE 900.0
/* ListSnapshotBlocks a second for the account, unless the section says
 * ebs_list_rate: under EBS's 50. */
#define AWS_EBS_LIST_RATE 45.0
/* Read ebs_rate, ebs_account_rate and ebs_list_rate (part of
 * aws_config_load). */
bool aws_config_rates(AwsProvider *prov, GKeyFile *conf, const char *section,
		      GError **error);

/* The INI files of the AWS CLI, read the way it reads them (creds.c). */
GKeyFile *aws_ini_load(const char *path, GError **error);
char *aws_credentials_path(void);	/* transfer full */
char *aws_config_path(void);		/* transfer full */
/* The config file's section of @profile ("profile x", "default"), or
 * NULL. Transfer full. */
char *aws_config_group(GKeyFile *kf, const char *profile);
/* A non-empty environment variable, or NULL. Transfer full. */
char *aws_env(const char *name);

/* --- chain.c: the credential chain --- */

/*
 * The credentials to sign with (transfer full) and, in @expires when not
 * NULL, when they expire (real µs, 0: never). Cached: temporary
 * credentials are fetched again when they expire within five minutes (or
 * half their lifetime, if shorter), others at most every minute (rotated
 * keys in the files are picked up). The error says where they were looked
 * for, never a secret. Blocks (files, processes, STS, SSO, metadata
 * services): control pool only. Takes prov->lock.
 */
CfsAwsCreds *aws_creds_get(AwsProvider *prov, gint64 *expires,
			   GError **error);

/* Base URL of @svc in @region, without a trailing '/'. Transfer full. */
char *aws_endpoint(AwsProvider *prov, AwsService svc, const char *region);

/* --- call.c: signing and running requests --- */

/* Sign @req (url, method, headers and body already set) for @service in
 * @region with the provider's credentials, now and again at each attempt
 * (a retry gets a fresh date). Blocks (finds the credentials): control
 * pool only. */
bool aws_sign(AwsProvider *prov, CfsHttpRequest *req, const char *service,
	      const char *region, GError **error);
/* Sign @req with @creds (a new reference is taken), now and at each
 * attempt. Never blocks. */
bool aws_sign_creds(CfsAwsCreds *creds, CfsHttpRequest *req,
		    const char *service, const char *region, GError **error);
/* Sign this attempt of @req with @creds into req->auth_headers. Never
 * blocks: for a source's authorize on the network thread. */
bool aws_sign_with(const CfsAwsCreds *creds, CfsHttpRequest *req,
		   const char *service, const char *region, GError **error);
/* How AWS's answers are retried (the provider's HTTP settings). Network
 * thread. */
CfsHttpClass aws_classify(const CfsHttpRequest *req);

/* "AuthFailure: AWS was not able to validate …" from an AWS error body
 * (EC2 and S3 XML, EBS JSON with x-amzn-ErrorType), or NULL. Transfer
 * full. */
char *aws_error_text(const CfsHttpRequest *req);

/* Run a control-plane request on the network thread and wait; on failure
 * the error carries AWS's code and message. @what names the call. */
bool aws_perform(AwsProvider *prov, CfsHttpRequest *req, const char *what,
		 GError **error);

/* The most a credential service (STS, SSO, metadata) may answer. */
#define AWS_SMALL_ANSWER_MAX (64 * 1024)
/* aws_perform() for answers that carry secrets: at most
 * AWS_SMALL_ANSWER_MAX bytes in req->response, which the caller wipes
 * (cfs_secret_wipe) once it has read it. Control pool. */
bool aws_perform_small(AwsProvider *prov, CfsHttpRequest *req,
		       const char *what, GError **error);

/* The credentials a source signs its requests with: found on the control
 * pool, used on the network thread. */
typedef struct {
	GMutex lock;		/* held only to take or swap creds */
	CfsAwsCreds *creds;	/* protected by lock */
	gint64 expires;		/* real µs, 0: never; control pool only */
} AwsGrant;

/* Take @creds (transfer full), which expire at @expires. */
void aws_grant_init(AwsGrant *grant, CfsAwsCreds *creds, gint64 expires);
void aws_grant_clear(AwsGrant *grant);
/* Sign this attempt of @req. Never blocks. */
bool aws_grant_sign(AwsGrant *grant, CfsHttpRequest *req, const char *service,
		    const char *region, GError **error);
/* Find the credentials again (rotated keys, new session tokens) and swap
 * them in; grant->expires says until when they hold. Control pool. */
bool aws_grant_renew(AwsProvider *prov, AwsGrant *grant, GError **error);

/* --- ec2.c --- */

/* One EC2 Query API call: Action=@action&Version=…&@params (params
 * already form-encoded, may be NULL). Returns the parsed response. */
xmlDoc *aws_ec2_call(AwsProvider *prov, const char *region,
		     const char *action, const char *params, GError **error);

/* Poll a Describe call while an export is prepared: a failed call is
 * tried again (what was just made may not be visible yet) up to five
 * times in a row, @wait seconds apart. NULL with @error on failure or
 * at unmount. */
xmlDoc *aws_ec2_poll(AwsProvider *prov, const char *region,
		     const char *action, const char *params,
		     CfsExportReport *report, double wait, GError **error);

/* XML helpers matching local names, any namespace. Borrowed results. */
xmlNode *aws_xml_child(xmlNode *node, const char *name);
xmlNode *aws_xml_path(xmlNode *node, const char *path);	/* "a/b/c" */
xmlNode *aws_xml_next(xmlNode *node, const char *name);	/* next sibling */
char *aws_xml_text(xmlNode *node, const char *path);	/* transfer full */

/* Form-encode @s (spaces as '+'). Transfer full. */
char *aws_form_escape(const char *s);

/* The inventory of one region: append CfsVm* to @vms. */
bool aws_ec2_list_region(AwsProvider *prov, const char *region,
			 GPtrArray *vms, GError **error);

/* Delete temporary images and snapshots whose owner tag is stale (see
 * owner.h; with @self, this process's too). Failures are logged. Control
 * pool. */
void aws_ec2_sweep(AwsProvider *prov, const char *region, bool self);

/* The tag @key in an item's tagSet, or NULL. Transfer full. */
char *aws_xml_tag(xmlNode *item, const char *key);
/* Append "&<prefix>.Tag.N.Key=...&<prefix>.Tag.N.Value=..." for the tags
 * of a temporary resource (temporary, volume, instance, owner, Name). */
void aws_tag_params(GString *s, const char *prefix, bool temporary,
		    const char *volume_id, const char *instance_id);

/* Snapshot lifecycle for ebs-direct: create (tagged), wait until
 * completed reporting progress, delete. */
char *aws_snapshot_create(AwsProvider *prov, const AwsDisk *d,
			  GError **error);
bool aws_snapshot_wait(AwsProvider *prov, const char *region,
		       const char *snapshot_id, CfsExportReport *report,
		       GError **error);
void aws_snapshot_delete(AwsProvider *prov, const char *region,
			 const char *snapshot_id);

/* --- ebs.c --- */

CfsSource *aws_ebs_export_start(AwsProvider *prov, CfsDisk *disk,
				CfsExportReport *report, GError **error);
void aws_ebs_export_end(AwsProvider *prov, CfsDisk *disk, CfsSource *src);

/* --- image.c: temporary images for ExportImage --- */

/* CreateImage of @d's instance (NoReboot; it and its snapshots tagged).
 * Transfer full: the image id. */
char *aws_image_create(AwsProvider *prov, const AwsDisk *d,
		       CfsExportReport *report, GError **error);
/* Wait until the image is available (phase "image"). */
bool aws_image_wait(AwsProvider *prov, const char *region,
		    const char *image_id, CfsExportReport *report,
		    GError **error);
/* Deregister @image_id and delete the snapshots behind it. */
void aws_image_delete(AwsProvider *prov, const char *region,
		      const char *image_id);
/* Deregister temporary images whose owner tag is stale. */
void aws_image_sweep(AwsProvider *prov, const char *region, bool self);

/* --- s3.c --- */

CfsSource *aws_s3_export_start(AwsProvider *prov, CfsDisk *disk,
			       CfsExportReport *report, GError **error);
void aws_s3_export_end(AwsProvider *prov, CfsDisk *disk, CfsSource *src);
