// SPDX-License-Identifier: MIT
/*
 * Calls to Google's JSON APIs (Compute, Cloud Build, Cloud Storage): a
 * bearer token per attempt, answers bounded in size and parsed as hostile
 * input, Google's error bodies turned into one line, and how answers are
 * retried (429 and 5xx back off, rate-limit 403s too, 401 renews).
 */
#include <string.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/secret.h"
#include "common/util.h"
#include "providers/gcp/gcp-private.h"

#define GCP_BODY_MAX (32 << 20)		/* an API answer, in bytes */
#define GCP_ERROR_TEXT_MAX 300
#define GCP_CALL_TIMEOUT_S 120

/* --- small JSON and URL helpers --- */

const char *gcp_json_str(json_object *o, const char *key)
{
	json_object *v;

	if (!o || !json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

bool gcp_json_u64(json_object *o, const char *key, guint64 *out)
{
	json_object *v;
	const char *s;
	guint64 n;

	if (!o || !json_object_object_get_ex(o, key, &v))
		return false;
	if (json_object_is_type(v, json_type_int)) {
		gint64 i = json_object_get_int64(v);

		*out = (guint64)i;
		return i >= 0;
	}
	if (!json_object_is_type(v, json_type_string))
		return false;
	s = json_object_get_string(v);
	if (!g_ascii_string_to_unsigned(s, 10, 0, G_MAXUINT64, &n, NULL))
		return false;
	*out = n;
	return true;
}

char *gcp_escape(const char *s)
{
	return g_uri_escape_string(s, NULL, FALSE);
}

const char *gcp_basename(const char *url)
{
	const char *slash = url ? strrchr(url, '/') : NULL;

	return slash ? slash + 1 : url;
}

/* --- bearer tokens --- */

void gcp_set_bearer(CfsHttpRequest *req, const char *token)
{
	g_autoptr(CfsSecret) h = g_strdup_printf("Authorization: Bearer %s",
						 token);

	g_clear_pointer(&req->auth_headers, curl_slist_free_all);
	req->auth_headers = curl_slist_append(NULL, h);
	/* A token is for the host it was given to. */
	req->follow_redirects = false;
}

static bool bearer_attempt(CfsHttpRequest *req, GError **error)
{
	gcp_set_bearer(req, req->attempt_data);
	return true;
}

/* --- errors --- */

/* "reason: message" from {"error": {"message", "errors": [{"reason"}]}}
 * (Compute, Storage) or {"error": {"message", "status"}} (Cloud Build),
 * or NULL. Transfer full. */
static char *google_error_text(const GByteArray *body)
{
	g_autoptr(json_object) obj = NULL;
	g_autofree char *text = NULL;
	json_object *err, *errors;
	const char *msg, *reason = NULL;

	if (!body || !body->len)
		return NULL;
	text = g_strndup((const char *)body->data, body->len);
	obj = json_tokener_parse(text);
	if (!obj || !json_object_object_get_ex(obj, "error", &err))
		return NULL;
	if (json_object_is_type(err, json_type_string))
		return g_strdup(json_object_get_string(err));
	msg = gcp_json_str(err, "message");
	if (json_object_object_get_ex(err, "errors", &errors) &&
	    json_object_is_type(errors, json_type_array) &&
	    json_object_array_length(errors) > 0)
		reason = gcp_json_str(json_object_array_get_idx(errors, 0),
				      "reason");
	if (!reason)
		reason = gcp_json_str(err, "status");
	if (!msg && !reason)
		return NULL;
	return g_strdup_printf("%s%s%s", reason ? reason : "",
			       reason && msg ? ": " : "", msg ? msg : "");
}

static char *printable(char *text)
{
	if (strlen(text) > GCP_ERROR_TEXT_MAX)
		strcpy(text + GCP_ERROR_TEXT_MAX - 3, "...");
	for (char *p = text; *p; p++)
		if (g_ascii_iscntrl(*p))
			*p = ' ';
	return text;
}

/* Replace *@error by "@what: Google's message (what the worker said)". */
static void gcp_explain(const CfsHttpRequest *req, const char *what,
			GError **error)
{
	g_autofree char *text = google_error_text(req->response);

	cfs_http_explain(req, what, text ? printable(text) : NULL, EEXIST,
			 error);
}

/* --- classifying answers --- */

static bool body_names(const CfsHttpRequest *req, const char *word)
{
	return req->response &&
	       memmem(req->response->data, req->response->len, word,
		      strlen(word));
}

CfsHttpClass gcp_classify(const CfsHttpRequest *req)
{
	switch (req->status) {
	case 401:
		return CFS_HTTP_REAUTH;
	case 403:
		/* Compute and Storage say "slow down" with a 403 too. */
		if (body_names(req, "ateLimitExceeded"))
			return CFS_HTTP_THROTTLE;
		return CFS_HTTP_FINAL;
	default:
		return cfs_http_classify_default(req);
	}
}

/* --- calls --- */

static bool call_on_body(CfsHttpRequest *req, const void *data, gsize len)
{
	if (req->response->len + len > GCP_BODY_MAX)
		return false;
	g_byte_array_append(req->response, data, len);
	return true;
}

static void call_on_reset(CfsHttpRequest *req)
{
	g_byte_array_set_size(req->response, 0);
}

static CfsHttpRequest *call_request(GcpProvider *prov, const char *method,
				    const char *url, const char *body,
				    char *token)
{
	CfsHttpRequest *req = cfs_http_request_new(url);

	req->method = g_strdup(method);
	req->response = g_byte_array_new();
	req->on_body = call_on_body;
	req->on_reset = call_on_reset;
	req->on_attempt = bearer_attempt;
	req->attempt_data = token;
	req->attempt_data_free = (GDestroyNotify)cfs_secret_free;
	req->max_attempts = 5;
	req->timeout_s = GCP_CALL_TIMEOUT_S;
	req->priority = CFS_HTTP_DEMAND;
	cfs_http_request_add_header(req, "Accept: application/json");
	if (body) {
		req->body = g_bytes_new(body, strlen(body));
		cfs_http_request_add_header(req, "Content-Type: "
					    "application/json");
	}
	cfs_http_request_set_settings(req, prov->settings);
	return req;
}

static json_object *call_parse(CfsHttpRequest *req, const char *what,
			       GError **error)
{
	json_tokener *tok;
	json_object *obj;
	bool ok;

	if (req->response->len == 0)
		return json_object_new_object();
	tok = json_tokener_new();
	obj = json_tokener_parse_ex(tok, (const char *)req->response->data,
				    (int)req->response->len);
	ok = json_tokener_get_error(tok) == json_tokener_success &&
	     json_object_is_type(obj, json_type_object);
	json_tokener_free(tok);
	if (ok)
		return obj;
	json_object_put(obj);
	g_set_error(error, CFS_ERROR, EIO, "%s: the answer is not a JSON "
		    "object", what);
	return NULL;
}

json_object *gcp_call(GcpProvider *prov, const char *method, const char *url,
		      json_object *body, const char *what, GError **error)
{
	const char *text = body ? json_object_to_json_string_ext(
		body, JSON_C_TO_STRING_PLAIN) : NULL;

	cfs_assert_may_block();
	for (guint round = 0;; round++) {
		g_autoptr(CfsHttpRequest) req = NULL;
		g_autoptr(GError) local = NULL;
		char *token = gcp_token(prov, error);

		if (!token)
			return NULL;
		req = call_request(prov, method, url, text, token);
		if (cfs_http_perform(prov->base.ctx->http, req, &local))
			return call_parse(req, what, error);
		if (req->status == 401 && round == 0) {
			/* The cached token was refused: a new one, once. */
			cfs_oauth2_invalidate(gcp_oauth(prov, NULL));
			continue;
		}
		if (local->code == ECANCELED && req->status < 300) {
			g_clear_error(&local);
			g_set_error(&local, CFS_ERROR, EIO, "answer larger "
				    "than %d MiB", GCP_BODY_MAX >> 20);
		}
		g_propagate_error(error, g_steal_pointer(&local));
		gcp_explain(req, what, error);
		return NULL;
	}
}
