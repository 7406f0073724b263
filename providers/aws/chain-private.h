/* SPDX-License-Identifier: MIT */
/*
 * Between the parts of the credential chain: the profile lookups and
 * STS (chain.c), and the sources that run a process or ask a local
 * service (chain-proc.c). Everything here blocks: control pool only.
 */
#pragma once

#include <json-c/json.h>

#include "providers/aws/aws-private.h"

/* Credentials one source found. */
typedef struct {
	CfsAwsCreds *creds;
	gint64 expires;		/* real µs; 0: never */
	char *source;		/* where from, for the log: never a secret */
} AwsFound;

void aws_found_clear(AwsFound *f);

/* What a source says: nothing there (look further), credentials, or an
 * error that ends the search (@error set). */
typedef enum {
	AWS_MISS,
	AWS_HIT,
	AWS_FAIL,
} AwsHit;

/* The shared credentials and config files, read once per lookup. */
typedef struct {
	GKeyFile *cred;		/* or NULL: no file */
	GKeyFile *conf;		/* or NULL */
	char *cred_path;
	char *conf_path;
} AwsFiles;

void aws_files_clear(AwsFiles *f);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(AwsFiles, aws_files_clear)

/* A profile's value, from the credentials file first, then the config
 * file; NULL if unset or empty. Transfer full. */
char *aws_files_value(AwsFiles *f, const char *name, const char *key);

/* ISO 8601 to real µs; -1 if it is not a time. */
gint64 aws_parse_time(const char *iso);

/* Parse @body as a JSON object, wiping @body. NULL with @error. */
json_object *aws_json_parse_secret(GByteArray *body, const char *what,
				   GError **error);
/* Credentials from the members @keys (id, secret, token, expiration;
 * expiration may be NULL) of @o, wiped in @o. */
bool aws_found_from_json(json_object *o, const char *const keys[4],
			 const char *what, AwsFound *out, GError **error);

/* credential_process of profile @name: @cmd run without a shell. */
AwsHit aws_process_creds(const char *name, const char *cmd, AwsFound *out,
			 GError **error);
/* AWS_CONTAINER_CREDENTIALS_{FULL,RELATIVE}_URI. */
AwsHit aws_container_creds(AwsProvider *prov, AwsFound *out,
			   GError **error);
/* The instance profile, through IMDSv2. */
AwsHit aws_imds_creds(AwsProvider *prov, AwsFound *out, GError **error);
/* The SSO role of profile @name, if it has one. */
AwsHit aws_sso_creds(AwsProvider *prov, AwsFiles *f, const char *name,
		     AwsFound *out, GError **error);
