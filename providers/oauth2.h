/* SPDX-License-Identifier: MIT */
/*
 * OAuth2 access tokens for the providers that need them (Azure AD, Google):
 * how a token is fetched (client secret, signed JWT, a metadata service),
 * and a cache that renews it ahead of its expiry, one fetch at a time.
 *
 * Lock order: CfsOAuth2.lock is a leaf, never held across a fetch.
 */
#pragma once

#include <glib.h>
#include <openssl/evp.h>
#include <stdbool.h>

#include "common/http.h"

typedef struct CfsOAuth2 CfsOAuth2;

/* Called on each request before it is performed, on the thread that asked
 * for the token: the provider adds its HTTP settings (CA, proxy, ...). */
typedef void (*CfsOAuth2PrepareFn)(CfsHttpRequest *req, gpointer data);

typedef struct {
	CfsHttp *http;		    /* borrowed; must outlive the cache */
	CfsOAuth2PrepareFn prepare; /* may be NULL */
	gpointer prepare_data;
	double margin_s; /* renew this long before expiry; 0: the
			  * smaller of 300 s and a fifth of the
			  * token's lifetime */
} CfsOAuth2Options;

/*
 * How to fetch a token: set *@token (transfer full, freed with
 * cfs_secret_free) and *@expires_in (seconds, > 0), or return false with
 * @error. Called with no lock held, on a thread that asked for a token.
 */
typedef bool (*CfsOAuth2FetchFn)(gpointer data, char **token,
				 double *expires_in, GError **error);

/*
 * The constructors copy their strings (secrets into wiped memory) and
 * keep @o's fields; transfer full. Any thread; no I/O.
 */

/* client_credentials grant (Azure AD v2): POST @token_url with the form
 * grant_type=client_credentials&client_id=..&client_secret=..&scope=.. */
CfsOAuth2 *cfs_oauth2_new_client_secret(const CfsOAuth2Options *o,
					const char *token_url,
					const char *client_id,
					const char *client_secret,
					const char *scope);

/*
 * JWT bearer grant (Google service accounts, RFC 7523): POST @token_url
 * with grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=
 * an RS256 JWT, header {"alg":"RS256","typ":"JWT","kid":@key_id} (no kid
 * if @key_id is NULL), claims iss=@client_email, scope, aud=@token_url,
 * iat=now, exp=iat+3600. @private_key_pem is parsed here (not kept as
 * text): NULL with @error if it is not an unencrypted PEM RSA key.
 */
CfsOAuth2 *cfs_oauth2_new_jwt_bearer(const CfsOAuth2Options *o,
				     const char *token_url,
				     const char *client_email,
				     const char *private_key_pem,
				     const char *key_id, const char *scope,
				     GError **error);

/*
 * A metadata service: GET @url with the header @header ("Metadata: true"
 * for Azure IMDS, "Metadata-Flavor: Google" for GCE). The answer is
 * {access_token, expires_in, ...}; expires_on (epoch seconds) is used when
 * expires_in is missing.
 */
CfsOAuth2 *cfs_oauth2_new_metadata(const CfsOAuth2Options *o, const char *url,
				   const char *header);

/* Any other way to get a token (and tests): @fetch(@data, ...) does the
 * fetching; @destroy(@data) runs in cfs_oauth2_free. @o->http unused. */
CfsOAuth2 *cfs_oauth2_new_custom(const CfsOAuth2Options *o,
				 CfsOAuth2FetchFn fetch, gpointer data,
				 GDestroyNotify destroy);

/*
 * The current access token, fetched when none is cached or it expires
 * within the margin. One fetch at a time: other callers wait for it and
 * share its result, except that while a renewal is under way a cached
 * token still valid for half the margin is returned at once. If a renewal
 * fails while the cached token has not expired yet, that token is
 * returned (and the failure logged; the next try is 5 s later). Transfer full, a secret: free with cfs_secret_free.
 * BLOCKS on the network: any thread but the network thread.
 */
char *cfs_oauth2_token(CfsOAuth2 *o, GError **error);

/*
 * The cached token if it stays valid for at least @min_valid_s seconds,
 * else NULL; never fetches nor waits for a fetch (the lock is only held
 * for a copy), so the network thread may call it. *@expires_at (real
 * time, µs) if non-NULL, 0 with NULL. Transfer full (a secret).
 */
char *cfs_oauth2_peek(CfsOAuth2 *o, double min_valid_s, gint64 *expires_at);

/* When the cached token expires (g_get_real_time µs), 0 if none. Any
 * thread. */
gint64 cfs_oauth2_expires(CfsOAuth2 *o);

/* Forget the cached token (after a 401): the next cfs_oauth2_token
 * fetches a new one. A fetch under way still stores its token. Any
 * thread. */
void cfs_oauth2_invalidate(CfsOAuth2 *o);

/* Free @o and wipe its secrets. No call on @o may be running. NULL ok. */
void cfs_oauth2_free(CfsOAuth2 *o);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(CfsOAuth2, cfs_oauth2_free)

/* Exposed for unit tests (cfs_jwt_* are in providers/jwt.c). */

/* The RSA private key in @pem (PKCS#8 or PKCS#1, unencrypted): NULL with
 * @error (EINVAL) naming the problem, never the key. Transfer full. Any
 * thread. */
EVP_PKEY *cfs_jwt_load_rsa_key(const char *pem, GError **error);

/* "b64url(header).b64url(claims).b64url(RS256 signature)" with base64url
 * without padding; @key must be RSA. Transfer full, a secret (a signed
 * assertion is a credential): free with cfs_secret_free. Any thread. */
char *cfs_jwt_rs256(EVP_PKEY *key, const char *header_json,
		    const char *claims_json, GError **error);

/*
 * A token endpoint's answer @body (@len bytes, hostile): *@token (transfer
 * full, a secret) and *@expires_in (seconds, clamped to [60, 86400]). An
 * OAuth2 error answer {"error":..., "error_description":...} becomes
 * @error (EACCES for invalid_grant, invalid_client, unauthorized_client;
 * EIO otherwise), as does anything malformed. Any thread.
 */
bool cfs_oauth2_parse_answer(const char *body, gsize len, char **token,
			     double *expires_in, GError **error);
