// SPDX-License-Identifier: MIT
/*
 * OAuth2 access tokens: the three ways Azure and Google hand them out
 * (client secret, signed JWT, metadata service) and a cache that renews
 * them before they expire, one fetch at a time. Token answers are hostile
 * input; secrets are wiped when freed and never reach a message.
 */
#include <math.h>
#include <string.h>

#include <json-c/json.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/secret.h"
#include "common/util.h"
#include "providers/oauth2.h"

#define OAUTH2_ANSWER_MAX (64 * 1024) /* a token answer, in bytes */
#define OAUTH2_TOKEN_MAX (16 * 1024)  /* an access token */
#define OAUTH2_LIFETIME_MIN 60.0      /* seconds */
#define OAUTH2_LIFETIME_MAX 86400.0
#define OAUTH2_MARGIN_MAX 300.0	   /* default margin, at most */
#define OAUTH2_RETRY_S 5	   /* after a failed renewal */
#define OAUTH2_TIMEOUT_S 60	   /* one attempt */
#define OAUTH2_JWT_LIFETIME 3600   /* what Google accepts, at most */
#define OAUTH2_DESCRIPTION_MAX 400 /* of an error answer, shown */

struct CfsOAuth2 {
	/* Set at creation, read-only after: no lock. */
	CfsOAuth2Options options;
	CfsOAuth2FetchFn fetch;
	gpointer fetch_data;
	GDestroyNotify fetch_destroy;
	char *url;	     /* token endpoint or metadata URL */
	char *host;	     /* of @url, for messages */
	char *header;	     /* metadata: the header to send */
	char *client_id;     /* or client_email */
	char *client_secret; /* secret */
	char *scope;
	char *key_id;
	EVP_PKEY *key; /* secret */

	GMutex lock;
	GCond cond; /* a fetch ended */
	/* protected by lock: */
	char *token;	    /* secret; NULL if none */
	gint64 expires_at;  /* real time, µs; 0 if no token */
	gint64 lifetime;    /* of the token, µs */
	gint64 retry_after; /* real time: no renewal before */
	bool fetching;
	guint64 flights;      /* fetches ended */
	GError *flight_error; /* of the last one, or NULL */
};

/* --- answers --- */

/* A JSON number or numeric string; false for anything else. */
static bool oauth2_json_number(json_object *v, double *out)
{
	const char *s;
	char *end = NULL;

	if (json_object_is_type(v, json_type_int) ||
	    json_object_is_type(v, json_type_double)) {
		*out = json_object_get_double(v);
		return isfinite(*out);
	}
	if (!json_object_is_type(v, json_type_string))
		return false;
	s = json_object_get_string(v);
	*out = g_ascii_strtod(s, &end);
	return end != s && !*end && isfinite(*out);
}

/* @s as it may be shown: at most OAUTH2_DESCRIPTION_MAX bytes, control
 * characters (Azure's descriptions hold line breaks) as spaces. */
static char *oauth2_printable(const char *s)
{
	char *out = g_strndup(s, OAUTH2_DESCRIPTION_MAX);

	for (char *p = out; *p; p++)
		if (g_ascii_iscntrl(*p))
			*p = ' ';
	return g_strchomp(out);
}

/* An OAuth2 error answer ({"error": "...", "error_description": ...}) as
 * @error; false if @obj is not one. */
static bool oauth2_answer_error(json_object *obj, GError **error)
{
	static const char *const denied[] = {
	    "invalid_grant",
	    "invalid_client",
	    "unauthorized_client",
	};
	json_object *v, *d;
	g_autofree char *code = NULL, *desc = NULL;
	int errnum = EIO;

	if (!json_object_object_get_ex(obj, "error", &v) ||
	    !json_object_is_type(v, json_type_string))
		return false;
	code = oauth2_printable(json_object_get_string(v));
	if (json_object_object_get_ex(obj, "error_description", &d) &&
	    json_object_is_type(d, json_type_string))
		desc = oauth2_printable(json_object_get_string(d));
	for (guint i = 0; i < G_N_ELEMENTS(denied); i++)
		if (g_str_equal(code, denied[i]))
			errnum = EACCES;
	g_set_error(error, CFS_ERROR, errnum, "%s%s%s", code, desc ? ": " : "",
		    desc ? desc : "");
	return true;
}

/* A token fit for an Authorization header: visible ASCII, sane length. */
static bool oauth2_token_ok(const char *t, gsize len)
{
	if (len == 0 || len > OAUTH2_TOKEN_MAX)
		return false;
	for (gsize i = 0; i < len; i++)
		if (t[i] <= ' ' || t[i] > '~')
			return false;
	return true;
}

/* expires_in, or what is left until expires_on (Azure IMDS). */
static bool oauth2_answer_lifetime(json_object *obj, double *expires_in)
{
	json_object *v;
	double on;

	if (json_object_object_get_ex(obj, "expires_in", &v))
		return oauth2_json_number(v, expires_in) && *expires_in > 0;
	if (!json_object_object_get_ex(obj, "expires_on", &v) ||
	    !oauth2_json_number(v, &on))
		return false;
	*expires_in = on - g_get_real_time() / (double)G_USEC_PER_SEC;
	return *expires_in > 0;
}

static json_object *oauth2_json_parse(const char *body, gsize len,
				      GError **error)
{
	json_tokener *tok = json_tokener_new();
	json_object *obj = json_tokener_parse_ex(tok, body, (int)len);
	bool ok = json_tokener_get_error(tok) == json_tokener_success &&
		  json_object_is_type(obj, json_type_object);

	json_tokener_free(tok);
	if (ok)
		return obj;
	json_object_put(obj);
	g_set_error(error, CFS_ERROR, EIO, "token answer is not a JSON object");
	return NULL;
}

bool cfs_oauth2_parse_answer(const char *body, gsize len, char **token,
			     double *expires_in, GError **error)
{
	g_autoptr(json_object) obj = NULL;
	json_object *t;
	char *text;
	gsize tlen;

	if (len > OAUTH2_ANSWER_MAX) {
		g_set_error(error, CFS_ERROR, EIO,
			    "token answer larger than %d KiB",
			    OAUTH2_ANSWER_MAX / 1024);
		return false;
	}
	obj = oauth2_json_parse(body, len, error);
	if (!obj)
		return false;
	if (!json_object_object_get_ex(obj, "access_token", &t)) {
		if (!oauth2_answer_error(obj, error))
			g_set_error(error, CFS_ERROR, EIO,
				    "token answer without access_token");
		return false;
	}
	text = (char *)json_object_get_string(t);
	tlen = json_object_get_string_len(t);
	if (!json_object_is_type(t, json_type_string) ||
	    !oauth2_token_ok(text, tlen)) {
		g_set_error(error, CFS_ERROR, EIO,
			    "token answer: access_token is not a token");
		return false;
	}
	if (!oauth2_answer_lifetime(obj, expires_in)) {
		g_set_error(error, CFS_ERROR, EIO,
			    "token answer: no positive expires_in");
		return false;
	}
	*expires_in =
	    CLAMP(*expires_in, OAUTH2_LIFETIME_MIN, OAUTH2_LIFETIME_MAX);
	*token = g_strndup(text, tlen);
	cfs_secret_wipe(text, tlen); /* json-c's copy */
	return true;
}

static char *oauth2_json_text(json_object *obj)
{
	return g_strdup(json_object_to_json_string_ext(
	    obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
}

/* The signed assertion for the JWT bearer grant. Transfer full (secret). */
static char *oauth2_assertion(CfsOAuth2 *o, GError **error)
{
	g_autoptr(json_object) header = json_object_new_object();
	g_autoptr(json_object) claims = json_object_new_object();
	g_autofree char *h = NULL, *c = NULL;
	gint64 now = g_get_real_time() / G_USEC_PER_SEC;

	json_object_object_add(header, "alg", json_object_new_string("RS256"));
	json_object_object_add(header, "typ", json_object_new_string("JWT"));
	if (o->key_id)
		json_object_object_add(header, "kid",
				       json_object_new_string(o->key_id));
	json_object_object_add(claims, "iss",
			       json_object_new_string(o->client_id));
	if (o->scope)
		json_object_object_add(claims, "scope",
				       json_object_new_string(o->scope));
	json_object_object_add(claims, "aud", json_object_new_string(o->url));
	json_object_object_add(claims, "iat", json_object_new_int64(now));
	json_object_object_add(
	    claims, "exp", json_object_new_int64(now + OAUTH2_JWT_LIFETIME));
	h = oauth2_json_text(header);
	c = oauth2_json_text(claims);
	return cfs_jwt_rs256(o->key, h, c, error);
}

/* --- fetching over HTTP --- */

static bool oauth2_unreserved(char c)
{
	return g_ascii_isalnum(c) || c == '-' || c == '.' || c == '_' ||
	       c == '~';
}

/* "name=value" pairs (NULL-terminated, NULL values skipped), form-encoded
 * into one exact allocation so that no copy of a secret is left behind in
 * freed memory. Transfer full (a secret). */
static char *oauth2_form(const char *const *pairs)
{
	gsize n = 1;
	char *out, *p;

	for (guint i = 0; pairs[i]; i += 2)
		for (const char *s = pairs[i + 1]; s && *s; s++)
			n += oauth2_unreserved(*s) ? 1 : 3;
	for (guint i = 0; pairs[i]; i += 2)
		n += pairs[i + 1] ? strlen(pairs[i]) + 2 : 0;
	out = g_malloc(n);
	p = out;
	for (guint i = 0; pairs[i]; i += 2) {
		if (!pairs[i + 1])
			continue;
		if (p != out)
			*p++ = '&';
		p = g_stpcpy(p, pairs[i]);
		*p++ = '=';
		for (const char *s = pairs[i + 1]; *s; s++) {
			if (oauth2_unreserved(*s))
				*p++ = *s;
			else
				p += g_snprintf(p, 4, "%%%02X",
						(unsigned char)*s);
		}
	}
	*p = '\0';
	return out;
}

/* Collect a 2xx body into the pre-sized req->response: never more than
 * OAUTH2_ANSWER_MAX bytes, never reallocated (no stray copy of a token). */
static bool oauth2_on_body(CfsHttpRequest *req, const void *data, gsize len)
{
	if (req->response->len + len > OAUTH2_ANSWER_MAX)
		return false;
	g_byte_array_append(req->response, data, len);
	return true;
}

static void oauth2_on_reset(CfsHttpRequest *req)
{
	cfs_secret_wipe(req->response->data, req->response->len);
	g_byte_array_set_size(req->response, 0);
}

static void oauth2_request_free(CfsHttpRequest *req)
{
	if (req && req->response)
		cfs_secret_wipe(req->response->data, req->response->len);
	cfs_http_request_free(req);
}

typedef CfsHttpRequest OAuth2Request;
G_DEFINE_AUTOPTR_CLEANUP_FUNC(OAuth2Request, oauth2_request_free)

static OAuth2Request *oauth2_request(CfsOAuth2 *o, char *form)
{
	OAuth2Request *req = cfs_http_request_new(o->url);

	req->response = g_byte_array_sized_new(OAUTH2_ANSWER_MAX);
	req->on_body = oauth2_on_body;
	req->on_reset = oauth2_on_reset;
	req->timeout_s = OAUTH2_TIMEOUT_S;
	req->priority = CFS_HTTP_DEMAND;
	cfs_http_request_add_header(req, "Accept: application/json");
	if (form) {
		req->method = g_strdup("POST");
		req->body = cfs_secret_bytes_take(form);
		cfs_http_request_add_header(req, "Content-Type: application/"
						 "x-www-form-urlencoded");
	}
	if (o->header)
		cfs_http_request_add_header(req, o->header);
	if (o->options.prepare)
		o->options.prepare(req, o->options.prepare_data);
	return req;
}

/* The error of a failed token request: the endpoint's OAuth2 error if it
 * gave one, else what the worker said. */
static void oauth2_http_error(CfsHttpRequest *req, GError *cause,
			      GError **error)
{
	g_autoptr(json_object) obj = NULL;
	int errnum = req->status == 401 || req->status == 403 ? EACCES : EIO;

	if (req->status >= 300 && req->response && req->response->len)
		obj = oauth2_json_parse((const char *)req->response->data,
					req->response->len, NULL);
	if (obj && oauth2_answer_error(obj, error)) {
		if (errnum == EACCES)
			(*error)->code = EACCES;
		g_prefix_error(error, "HTTP %ld: ", req->status);
	} else if (req->status >= 300) {
		g_set_error(error, CFS_ERROR, errnum, "HTTP %ld", req->status);
	} else if (cause->code == ECANCELED) {
		g_set_error(error, CFS_ERROR, EIO, "answer larger than %d KiB",
			    OAUTH2_ANSWER_MAX / 1024);
	} else {
		g_propagate_error(error, g_error_copy(cause));
	}
}

/* Run @req; the answer's token and lifetime, or @error naming the host. */
static bool oauth2_perform(CfsOAuth2 *o, CfsHttpRequest *req, char **token,
			   double *expires_in, GError **error)
{
	g_autoptr(GError) cause = NULL;
	GError *local = NULL;

	if (!cfs_http_perform(o->options.http, req, &cause))
		oauth2_http_error(req, cause, &local);
	else
		cfs_oauth2_parse_answer((const char *)req->response->data,
					req->response->len, token, expires_in,
					&local);
	if (!local)
		return true;
	g_propagate_prefixed_error(error, local,
				   "OAuth2 token from %s: ", o->host);
	return false;
}

/* Replace @secret in @e's message by CFS_SECRET_SHOWN: error descriptions
 * come from the endpoint, which might echo what it was sent. */
static void oauth2_scrub(GError *e, const char *secret)
{
	g_auto(GStrv) parts = NULL;

	if (!e || !secret || !*secret || !strstr(e->message, secret))
		return;
	parts = g_strsplit(e->message, secret, -1);
	cfs_secret_free(e->message);
	e->message = g_strjoinv(CFS_SECRET_SHOWN, parts);
}

static bool oauth2_fetch_client_secret(gpointer data, char **token,
				       double *expires_in, GError **error)
{
	CfsOAuth2 *o = data;
	const char *const pairs[] = {
	    "grant_type",
	    "client_credentials",
	    "client_id",
	    o->client_id,
	    "client_secret",
	    o->client_secret,
	    "scope",
	    o->scope,
	    NULL,
	};
	g_autoptr(OAuth2Request) req = oauth2_request(o, oauth2_form(pairs));
	GError *local = NULL;

	if (oauth2_perform(o, req, token, expires_in, &local))
		return true;
	oauth2_scrub(local, o->client_secret);
	g_propagate_error(error, local);
	return false;
}

static bool oauth2_fetch_jwt_bearer(gpointer data, char **token,
				    double *expires_in, GError **error)
{
	CfsOAuth2 *o = data;
	g_autoptr(CfsSecret) assertion = oauth2_assertion(o, error);
	g_autoptr(OAuth2Request) req = NULL;
	GError *local = NULL;

	if (!assertion)
		return false;
	{
		const char *const pairs[] = {
		    "grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer",
		    "assertion",  assertion,
		    NULL,
		};

		req = oauth2_request(o, oauth2_form(pairs));
	}
	if (oauth2_perform(o, req, token, expires_in, &local))
		return true;
	oauth2_scrub(local, assertion);
	g_propagate_error(error, local);
	return false;
}

static bool oauth2_fetch_metadata(gpointer data, char **token,
				  double *expires_in, GError **error)
{
	CfsOAuth2 *o = data;
	g_autoptr(OAuth2Request) req = oauth2_request(o, NULL);

	return oauth2_perform(o, req, token, expires_in, error);
}

/* --- creation --- */

static CfsOAuth2 *oauth2_new(const CfsOAuth2Options *options,
			     CfsOAuth2FetchFn fetch, const char *url)
{
	CfsOAuth2 *o = g_new0(CfsOAuth2, 1);

	o->options = *options;
	o->fetch = fetch;
	o->fetch_data = o;
	o->url = g_strdup(url);
	o->host = url ? cfs_url_host(url) : g_strdup("a custom source");
	g_mutex_init(&o->lock);
	g_cond_init(&o->cond);
	return o;
}

CfsOAuth2 *cfs_oauth2_new_client_secret(const CfsOAuth2Options *options,
					const char *token_url,
					const char *client_id,
					const char *client_secret,
					const char *scope)
{
	CfsOAuth2 *o =
	    oauth2_new(options, oauth2_fetch_client_secret, token_url);

	o->client_id = g_strdup(client_id);
	o->client_secret = cfs_secret_dup(client_secret);
	o->scope = g_strdup(scope);
	return o;
}

CfsOAuth2 *cfs_oauth2_new_jwt_bearer(const CfsOAuth2Options *options,
				     const char *token_url,
				     const char *client_email,
				     const char *private_key_pem,
				     const char *key_id, const char *scope,
				     GError **error)
{
	EVP_PKEY *key = cfs_jwt_load_rsa_key(private_key_pem, error);
	CfsOAuth2 *o;

	if (!key)
		return NULL;
	o = oauth2_new(options, oauth2_fetch_jwt_bearer, token_url);
	o->key = key;
	o->client_id = g_strdup(client_email);
	o->key_id = g_strdup(key_id);
	o->scope = g_strdup(scope);
	return o;
}

CfsOAuth2 *cfs_oauth2_new_metadata(const CfsOAuth2Options *options,
				   const char *url, const char *header)
{
	CfsOAuth2 *o = oauth2_new(options, oauth2_fetch_metadata, url);

	o->header = g_strdup(header);
	return o;
}

CfsOAuth2 *cfs_oauth2_new_custom(const CfsOAuth2Options *options,
				 CfsOAuth2FetchFn fetch, gpointer data,
				 GDestroyNotify destroy)
{
	CfsOAuth2 *o = oauth2_new(options, fetch, NULL);

	o->fetch_data = data;
	o->fetch_destroy = destroy;
	return o;
}

void cfs_oauth2_free(CfsOAuth2 *o)
{
	if (!o)
		return;
	if (o->fetch_destroy)
		o->fetch_destroy(o->fetch_data);
	g_free(o->url);
	g_free(o->host);
	g_free(o->header);
	g_free(o->client_id);
	cfs_secret_free(o->client_secret);
	g_free(o->scope);
	g_free(o->key_id);
	EVP_PKEY_free(o->key);
	cfs_secret_free(o->token);
	g_clear_error(&o->flight_error);
	g_mutex_clear(&o->lock);
	g_cond_clear(&o->cond);
	g_free(o);
}

/* --- the cache --- */

/* How long before expiry the cached token is renewed, µs. Lock held. */
static gint64 oauth2_margin(CfsOAuth2 *o)
{
	double m = o->options.margin_s;

	if (m > 0)
		return (gint64)(m * G_USEC_PER_SEC);
	return MIN((gint64)(OAUTH2_MARGIN_MAX * G_USEC_PER_SEC),
		   o->lifetime / 5);
}

/* The cached token, valid @need µs from @now: a copy, or NULL. Lock
 * held. */
static char *oauth2_cached(CfsOAuth2 *o, gint64 now, gint64 need)
{
	if (!o->token || o->expires_at - now <= need)
		return NULL;
	return cfs_secret_dup(o->token);
}

/* Store what the fetch that just ended brought. Lock held. */
static void oauth2_store(CfsOAuth2 *o, char *token, double expires_in,
			 GError *error)
{
	gint64 now = g_get_real_time();

	o->fetching = false;
	o->flights++;
	g_clear_error(&o->flight_error);
	o->flight_error = error;
	if (token) {
		cfs_secret_free(o->token);
		o->token = token;
		o->lifetime = (gint64)(expires_in * G_USEC_PER_SEC);
		o->expires_at = now + o->lifetime;
		o->retry_after = 0;
	} else if (o->token) {
		o->retry_after = now + OAUTH2_RETRY_S * G_USEC_PER_SEC;
	}
	g_cond_broadcast(&o->cond);
}

/* Fetch a token without the lock; called and returns with it held. */
static void oauth2_fly(CfsOAuth2 *o)
{
	char *token = NULL;
	double expires_in = 0;
	GError *error = NULL;
	bool ok;

	o->fetching = true;
	g_mutex_unlock(&o->lock);
	ok = o->fetch(o->fetch_data, &token, &expires_in, &error);
	if (ok && (!token || !(expires_in > 0))) {
		cfs_secret_clear(&token);
		g_set_error(&error, CFS_ERROR, EIO,
			    "OAuth2 token from %s: no token or no lifetime",
			    o->host);
	}
	if (!ok && !error)
		g_set_error(&error, CFS_ERROR, EIO,
			    "OAuth2 token from %s: failed", o->host);
	g_mutex_lock(&o->lock);
	oauth2_store(o, token, expires_in, token ? NULL : error);
	if (token)
		g_clear_error(&error);
}

/* Wait for the fetch under way to end. Lock held. */
static void oauth2_join(CfsOAuth2 *o)
{
	guint64 flight = o->flights;

	while (o->flights == flight)
		g_cond_wait(&o->cond, &o->lock);
}

char *cfs_oauth2_token(CfsOAuth2 *o, GError **error)
{
	g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&o->lock);

	for (;;) {
		gint64 now = g_get_real_time();
		gint64 margin = oauth2_margin(o);
		char *token = oauth2_cached(o, now, margin);
		bool fetched = !o->fetching;

		if (!token && (o->fetching || now < o->retry_after))
			token =
			    oauth2_cached(o, now, o->fetching ? margin / 2 : 0);
		if (token)
			return token;
		if (fetched)
			oauth2_fly(o);
		else
			oauth2_join(o);
		token = oauth2_cached(o, g_get_real_time(), 0);
		if (token && o->flight_error && fetched)
			g_warning("%s; using the current token, valid "
				  "%" G_GINT64_FORMAT " s more",
				  o->flight_error->message,
				  (o->expires_at - g_get_real_time()) /
				      G_USEC_PER_SEC);
		if (token)
			return token;
		if (o->flight_error) {
			g_propagate_error(error, g_error_copy(o->flight_error));
			return NULL;
		}
		/* Invalidated as the fetch ended: once more. */
	}
}

char *cfs_oauth2_peek(CfsOAuth2 *o, double min_valid_s, gint64 *expires_at)
{
	g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&o->lock);
	char *token = oauth2_cached(o, g_get_real_time(),
				    (gint64)(min_valid_s * G_USEC_PER_SEC));

	if (expires_at)
		*expires_at = token ? o->expires_at : 0;
	return token;
}

gint64 cfs_oauth2_expires(CfsOAuth2 *o)
{
	g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&o->lock);

	return o->token ? o->expires_at : 0;
}

void cfs_oauth2_invalidate(CfsOAuth2 *o)
{
	g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&o->lock);

	cfs_secret_clear(&o->token);
	o->expires_at = 0;
	o->lifetime = 0;
	o->retry_after = 0;
}
