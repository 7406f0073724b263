/* SPDX-License-Identifier: MIT */
/*
 * AWS Signature Version 4 (AWS4-HMAC-SHA256) for requests sent in headers:
 * one signer for EC2 (Query API), S3 and the EBS direct APIs. It turns a
 * request (method, URL as it will be sent, headers, payload hash) into the
 * headers to add: Host, X-Amz-Date, x-amz-content-sha256,
 * X-Amz-Security-Token and Authorization. No I/O, no global state.
 */
#pragma once

#include <stdbool.h>
#include <time.h>
#include <glib.h>

/* SHA-256 of the empty string, in hex: the payload hash of a bodiless GET. */
#define CFS_SIGV4_EMPTY_SHA256 \
	"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
/* Payload "hash" that tells S3 the body is not signed. */
#define CFS_SIGV4_UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"

/*
 * Credentials: access key id, secret access key, optional session token.
 * Immutable once made and refcounted (atomically), so a provider can swap
 * in renewed session credentials while requests signed with the old ones
 * are still queued: each request holds the reference it was signed with.
 * The secret and the token are wiped (explicit_bzero) when the last
 * reference goes. Never log them; nothing in this module does.
 */
typedef struct CfsAwsCreds CfsAwsCreds;

/* Copy the three strings; @session_token may be NULL or "". Returns NULL
 * and sets EINVAL when the key id or the secret is NULL or empty. Transfer
 * full. Any thread. */
CfsAwsCreds *cfs_aws_creds_new(const char *access_key_id,
			       const char *secret_access_key,
			       const char *session_token, GError **error);
CfsAwsCreds *cfs_aws_creds_ref(CfsAwsCreds *creds);
void cfs_aws_creds_unref(CfsAwsCreds *creds);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(CfsAwsCreds, cfs_aws_creds_unref)

/* The access key id (not secret: it appears in every Authorization
 * header). Owned by @creds. */
const char *cfs_aws_creds_access_key_id(const CfsAwsCreds *creds);
/* Whether the credentials carry a session token. */
bool cfs_aws_creds_has_session_token(const CfsAwsCreds *creds);

enum {
	/* Add and sign x-amz-content-sha256 for a service other than S3
	 * (S3 always gets it: real S3 and moto's strict mode want it). */
	CFS_SIGV4_CONTENT_SHA256 = 1 << 0,
	/* Leave the Host header out of the returned list; it is still signed,
	 * with the value libcurl derives from the URL. */
	CFS_SIGV4_NO_HOST_HEADER = 1 << 1,
};

/*
 * One request to sign. Every pointer is borrowed for the call only.
 *
 * @url is the URL exactly as libcurl will send it:
 * scheme://host[:port]/path?query (a #fragment is ignored). The path and
 * query must already be percent-encoded as they go on the wire; spaces in
 * a query must be %20 ('+' is signed as a literal plus). Host is signed as
 * host[:port] with the scheme's default port (80, 443) left out, which is
 * what libcurl sends; a "Host: ..." entry in @headers overrides that.
 *
 * @headers: NULL-terminated "Name: value" strings, all of which are signed
 * (a NULL @headers means none). Repeated names are joined with ',' in
 * order; an entry with an empty value ("Name:" or "Name;", which libcurl
 * treats as "remove" or "send empty") is not signed. The headers the signer
 * sets itself (Authorization, X-Amz-Date, X-Amz-Security-Token,
 * x-amz-content-sha256) must not be in the list: EINVAL.
 *
 * Payload: @payload_sha256 (64 lowercase hex digits, or
 * CFS_SIGV4_UNSIGNED_PAYLOAD) if the caller has it; otherwise, when it is
 * NULL, the signer hashes @body/@body_len (NULL/0 means an empty body).
 *
 * Canonical URI: for S3 (@service "s3") the path is used as given, each
 * segment decoded and re-encoded once, no dot-segment removal. For every
 * other service (ec2, ebs, ...) the path has empty and dot segments
 * removed, then each segment of the on-the-wire path is URI-encoded again:
 * the "double encoding" the SigV4 spec asks of non-S3 services.
 */
typedef struct {
	const char *method;		/* "GET", "POST", "PUT", ... */
	const char *url;
	const char *const *headers;
	const char *payload_sha256;	/* or NULL: hash the body */
	const void *body;
	gsize body_len;
	const char *region;		/* "us-east-1" */
	const char *service;		/* "ec2", "s3", "ebs" */
	time_t now;			/* signing time, seconds since the epoch */
	unsigned flags;			/* CFS_SIGV4_* */
} CfsSigV4Request;

/*
 * Sign @req with @creds. On success returns a new array (transfer full,
 * element free function g_free) of "Name: value" strings to append to the
 * request's headers, in this order: Host (unless CFS_SIGV4_NO_HOST_HEADER
 * or given in @req->headers), X-Amz-Date, x-amz-content-sha256 (S3 or
 * CFS_SIGV4_CONTENT_SHA256), X-Amz-Security-Token (with a session token),
 * Authorization. The array holds the session token: do not log it.
 * Returns NULL with EINVAL in @error for a malformed request.
 * Any thread, no lock; @creds may be shared by threads.
 */
GPtrArray *cfs_sigv4_sign(const CfsAwsCreds *creds,
			  const CfsSigV4Request *req, GError **error);

/* Everything a signature is made of, for tests and debug logs (none of it
 * is secret, except that headers may hold the session token). */
typedef struct {
	GPtrArray *headers;		/* as cfs_sigv4_sign() returns */
	char *canonical_request;
	char *string_to_sign;
	char *signed_headers;		/* "host;x-amz-date" */
	char *signature;		/* 64 hex digits */
	char *authorization;		/* value of the Authorization header */
} CfsSigV4Result;

/* As cfs_sigv4_sign(), keeping the intermediate strings. Transfer full;
 * free with cfs_sigv4_result_free(). Any thread. */
CfsSigV4Result *cfs_sigv4_sign_full(const CfsAwsCreds *creds,
				    const CfsSigV4Request *req,
				    GError **error);
void cfs_sigv4_result_free(CfsSigV4Result *res);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(CfsSigV4Result, cfs_sigv4_result_free)

/* Lowercase hex SHA-256 of @data (NULL allowed when @len is 0) into @out
 * (65 bytes with the NUL). Any thread. */
void cfs_sigv4_sha256_hex(const void *data, gsize len, char out[65]);

/* "20150830T123600Z" for @t, in UTC, into @out (17 bytes with the NUL).
 * Returns false if @t cannot be represented. Any thread. */
bool cfs_sigv4_amz_date(time_t t, char out[17]);

/*
 * Percent-encode @len bytes of @s the SigV4 way: RFC 3986 unreserved
 * characters (A-Z a-z 0-9 - . _ ~) kept, every other byte as %XX with
 * uppercase hex; '/' kept too when @keep_slash. Use it to build EC2 form
 * bodies, query strings and S3 keys in URLs. Transfer full.
 */
char *cfs_sigv4_uri_encode(const char *s, gsize len, bool keep_slash);
