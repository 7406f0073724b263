// SPDX-License-Identifier: MIT
/*
 * Azure Resource Manager: bearer tokens (client secret or managed
 * identity), calls with a renewed token after a 401, ARM error bodies
 * made into one line, pages that follow nextLink, long-running operations
 * (Azure-AsyncOperation, Location, Retry-After), and how answers are
 * classified for retries. Answers are hostile input: sizes, pages, links
 * and waits are bounded, and tokens only ever go to the management host.
 */
#include <string.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/json.h"
#include "common/secret.h"
#include "common/util.h"
#include "providers/azure/azure-private.h"

#define AZ_ANSWER_MAX (32 * 1024 * 1024)	/* one ARM answer */
#define AZ_ERROR_TEXT_MAX 300
#define AZ_PAGES_MAX 10000
#define AZ_POLL_FIRST_S 0.5	/* without Retry-After */
#define AZ_POLL_MAX_S 30.0
#define AZ_POLL_MIN_S 0.05

void az_reply_clear(AzReply *reply)
{
	g_clear_pointer(&reply->body, json_object_put);
	g_clear_pointer(&reply->async_url, g_free);
	g_clear_pointer(&reply->location, g_free);
	reply->status = 0;
	reply->retry_after = -1;
}

/* --- tokens --- */

static void az_prepare(CfsHttpRequest *req, gpointer data)
{
	AzProvider *prov = data;

	cfs_http_request_set_settings(req, prov->settings);
}

/* The token cache, made at first use (the HTTP worker exists by then). */
static CfsOAuth2 *az_oauth(AzProvider *prov)
{
	CfsOAuth2Options o = {
		.http = prov->base.ctx->http,
		.prepare = az_prepare,
		.prepare_data = prov,
	};
	CfsOAuth2 *oauth;

	g_mutex_lock(&prov->lock);
	if (!prov->oauth && prov->client_secret) {
		g_autofree char *url = g_strdup_printf(
			"%s/%s/oauth2/v2.0/token", prov->authority,
			prov->tenant);
		g_autofree char *scope = g_strdup_printf("%s/.default",
							 prov->audience);

		prov->oauth = cfs_oauth2_new_client_secret(
			&o, url, prov->client_id, prov->client_secret, scope);
	} else if (!prov->oauth) {
		g_autofree char *res = g_uri_escape_string(prov->audience, NULL,
							   FALSE);
		g_autofree char *id = prov->client_id ?
			g_uri_escape_string(prov->client_id, NULL, FALSE) :
			NULL;
		g_autofree char *url = g_strdup_printf(
			"%s?api-version=2018-02-01&resource=%s/%s%s",
			prov->imds_url, res, id ? "&client_id=" : "",
			id ? id : "");

		prov->oauth = cfs_oauth2_new_metadata(&o, url,
						      "Metadata: true");
	}
	oauth = prov->oauth;
	g_mutex_unlock(&prov->lock);
	return oauth;
}

char *az_token(AzProvider *prov, GError **error)
{
	return cfs_oauth2_token(az_oauth(prov), error);
}

/* --- calls --- */

static bool az_attempt(CfsHttpRequest *req, GError **error)
{
	g_autoptr(CfsSecret) header = g_strdup_printf(
		"Authorization: Bearer %s", (const char *)req->attempt_data);

	req->auth_headers = curl_slist_append(NULL, header);
	if (!req->auth_headers) {
		g_set_error(error, CFS_ERROR, ENOMEM, "out of memory");
		return false;
	}
	return true;
}

/* Success bodies, up to AZ_ANSWER_MAX. */
static bool az_body(CfsHttpRequest *req, const void *data, gsize len)
{
	if (!req->response)
		req->response = g_byte_array_new();
	if (req->response->len + len > AZ_ANSWER_MAX)
		return false;
	g_byte_array_append(req->response, data, (guint)len);
	return true;
}

/* Whether @url may carry the token: the management host only. */
static bool az_url_ok(AzProvider *prov, const char *url)
{
	gsize n = strlen(prov->arm_origin);

	return g_ascii_strncasecmp(url, prov->arm_origin, n) == 0 &&
	       (url[n] == '/' || url[n] == '\0');
}

/* "Code: message" from {"error":{"code","message"}}, bounded, on one
 * line; NULL if the body is not of that form. */
static char *az_error_text(const CfsHttpRequest *req)
{
	g_autoptr(json_object) obj = NULL;
	const char *code, *msg;
	char *text;

	if (!req->response || !req->response->len)
		return NULL;
	obj = cfs_json_parse(req->response->data, req->response->len,
			     AZ_ANSWER_MAX, "error", NULL);
	code = cfs_json_string(obj, "error/code");
	msg = cfs_json_string(obj, "error/message");
	if (!code)
		return NULL;
	text = msg ? g_strdup_printf("%s: %s", code, msg) : g_strdup(code);
	if (strlen(text) > AZ_ERROR_TEXT_MAX)
		strcpy(text + AZ_ERROR_TEXT_MAX - 3, "...");
	for (char *p = text; *p; p++)
		if (*p == '\n' || *p == '\r' || *p == '\t' || *p == '"')
			*p = *p == '"' ? '\'' : ' ';
	return text;
}

static void az_explain(const CfsHttpRequest *req, const char *what,
		       GError **error)
{
	g_autofree char *text = az_error_text(req);
	int code = (*error)->domain == CFS_ERROR ? (*error)->code : EIO;
	g_autofree char *was = g_strdup((*error)->message);

	if (req->status >= 400)
		code = cfs_http_status_errno(req->status, EBUSY, code);
	else if (code == ECANCELED && req->response &&
		 req->response->len + 65536 > AZ_ANSWER_MAX)
		was = g_strdup_printf("answer larger than %d MiB",
				      AZ_ANSWER_MAX >> 20);
	g_clear_error(error);
	if (text)
		g_set_error(error, CFS_ERROR, code, "%s: %s (HTTP %ld)", what,
			    text, req->status);
	else
		g_set_error(error, CFS_ERROR, code, "%s: %s", what, was);
}

static double az_retry_after(const CfsHttpRequest *req)
{
	const char *v = cfs_http_response_header(req, "retry-after");
	char *end = NULL;
	double s;

	if (!v)
		return -1;
	s = g_ascii_strtod(v, &end);
	if (end == v || s < 0)
		return -1;
	return MIN(s, 60.0);
}

/* One try with @token. */
static CfsHttpRequest *az_try(AzProvider *prov, const char *method,
			      const char *url, GBytes *body,
			      const char *token, GError **error)
{
	CfsHttpRequest *req = cfs_http_request_new(url);

	if (g_strcmp0(method, "GET") != 0)
		req->method = g_strdup(method);
	if (body) {
		req->body = g_bytes_ref(body);
		cfs_http_request_add_header(req, "Content-Type: "
					    "application/json");
	} else if (g_strcmp0(method, "POST") == 0) {
		/* curl sends no Content-Length for a bodiless POST */
		req->body = g_bytes_new_static("", 0);
	}
	cfs_http_request_add_header(req, "Accept: application/json");
	cfs_http_request_set_settings(req, prov->settings);
	req->attempt_data = cfs_secret_dup(token);
	req->attempt_data_free = (GDestroyNotify)cfs_secret_free;
	req->on_attempt = az_attempt;
	req->on_body = az_body;
	req->max_attempts = 6;
	req->timeout_s = 120;
	cfs_http_perform(prov->base.ctx->http, req, error);
	return req;
}

bool az_arm(AzProvider *prov, const char *method, const char *url,
	    json_object *body, const char *what, AzReply *reply,
	    GError **error)
{
	g_autofree char *full = url[0] == '/' ?
		g_strdup_printf("%s%s", prov->arm, url) : g_strdup(url);
	g_autoptr(GBytes) data = body ? g_bytes_new(
		json_object_to_json_string(body),
		strlen(json_object_to_json_string(body))) : NULL;
	g_autoptr(CfsHttpRequest) req = NULL;
	g_autoptr(GError) local = NULL;

	az_reply_clear(reply);
	if (!az_url_ok(prov, full)) {
		g_set_error(error, CFS_ERROR, EIO, "%s: ARM sent a link to "
			    "another host than %s", what, prov->arm_origin);
		return false;
	}
	for (guint i = 0; i < 2; i++) {
		g_autoptr(CfsSecret) token = az_token(prov, error);

		if (!token)
			return false;
		g_clear_pointer(&req, cfs_http_request_free);
		g_clear_error(&local);
		req = az_try(prov, method, full, data, token, &local);
		if (!local || req->status != 401)
			break;
		/* An expired or revoked token: a new one, once. */
		g_message("azure: %s: token refused, asking for a new one",
			  what);
		cfs_oauth2_invalidate(az_oauth(prov));
	}
	reply->status = req->status;
	reply->retry_after = az_retry_after(req);
	if (local) {
		g_propagate_error(error, g_steal_pointer(&local));
		az_explain(req, what, error);
		return false;
	}
	reply->async_url = g_strdup(cfs_http_response_header(
		req, "azure-asyncoperation"));
	reply->location = g_strdup(cfs_http_response_header(req, "location"));
	if (req->response && req->response->len) {
		reply->body = cfs_json_parse(req->response->data,
					     req->response->len, AZ_ANSWER_MAX,
					     what, error);
		if (!reply->body)
			return false;
	}
	return true;
}

bool az_arm_list(AzProvider *prov, const char *url, const char *what,
		 GPtrArray *items, GError **error)
{
	g_autoptr(GHashTable) seen = g_hash_table_new_full(
		g_str_hash, g_str_equal, g_free, NULL);
	g_autofree char *next = g_strdup(url);

	for (guint page = 0; next; page++) {
		AzReply reply = { 0 };
		json_object *value;
		const char *link;

		if (page == AZ_PAGES_MAX || !g_hash_table_add(seen,
							     g_strdup(next))) {
			g_set_error(error, CFS_ERROR, EIO, "%s: %s", what,
				    page == AZ_PAGES_MAX ? "too many pages" :
				    "a page links back to an earlier one");
			return false;
		}
		if (!az_arm(prov, "GET", next, NULL, what, &reply, error))
			return false;
		value = cfs_json_array(reply.body, "value");
		if (!value) {
			az_reply_clear(&reply);
			g_set_error(error, CFS_ERROR, EIO, "%s: no \"value\" "
				    "list in the answer", what);
			return false;
		}
		for (size_t i = 0; i < json_object_array_length(value); i++)
			g_ptr_array_add(items, json_object_get(
				json_object_array_get_idx(value, i)));
		link = cfs_json_string(reply.body, "nextLink");
		g_free(next);
		next = link && *link ? g_strdup(link) : NULL;
		az_reply_clear(&reply);
	}
	return true;
}

/* --- long-running operations --- */

static double az_next_wait(const AzReply *reply, double *backoff)
{
	double w;

	if (reply->retry_after >= 0)
		return MAX(reply->retry_after, AZ_POLL_MIN_S);
	w = *backoff;
	*backoff = MIN(*backoff * 1.5, AZ_POLL_MAX_S);
	return w;
}

/* The async operation's status: 1 done, 0 running, -1 failed. */
static int az_async_status(const AzReply *reply, const char *what,
			   GError **error)
{
	const char *status = cfs_json_string(reply->body, "status");

	if (!status) {
		g_set_error(error, CFS_ERROR, EIO, "%s: the operation has no "
			    "status", what);
		return -1;
	}
	if (!g_ascii_strcasecmp(status, "Succeeded"))
		return 1;
	if (!g_ascii_strcasecmp(status, "Failed") ||
	    !g_ascii_strcasecmp(status, "Canceled")) {
		const char *code = cfs_json_string(reply->body, "error/code");
		const char *msg = cfs_json_string(reply->body,
						  "error/message");
		g_autofree char *text = g_strdup_printf(
			"%s: %s", code ? code : status, msg ? msg : "");

		if (strlen(text) > AZ_ERROR_TEXT_MAX)
			strcpy(text + AZ_ERROR_TEXT_MAX - 3, "...");
		g_strdelimit(text, "\"\r\n\t", '\'');
		g_set_error(error, CFS_ERROR, EIO, "%s: %s", what, text);
		return -1;
	}
	return 0;
}

bool az_lro_wait(AzProvider *prov, AzReply *first, const char *what,
		 CfsExportReport *report, const char *phase, double timeout_s,
		 json_object **result, GError **error)
{
	g_autofree char *async = g_strdup(first->async_url);
	g_autofree char *loc = g_strdup(first->location);
	gint64 deadline = g_get_monotonic_time() +
			  (gint64)(timeout_s * G_USEC_PER_SEC);
	double backoff = AZ_POLL_FIRST_S;
	double wait = az_next_wait(first, &backoff);

	*result = NULL;
	if (first->status != 202 && first->status != 201) {
		*result = first->body ? json_object_get(first->body) : NULL;
		return true;
	}
	if (!async && !loc) {	/* accepted, with nothing to follow */
		*result = first->body ? json_object_get(first->body) : NULL;
		return true;
	}
	for (;;) {
		AzReply r = { 0 };
		int st;

		if (g_get_monotonic_time() > deadline) {
			g_set_error(error, CFS_ERROR, ETIMEDOUT, "%s: not done "
				    "after %.0f s", what, timeout_s);
			return false;
		}
		if (!cfs_poll_wait(report, wait, error) ||
		    !az_arm(prov, "GET", async ? async : loc, NULL, what, &r,
			    error))
			return false;
		wait = az_next_wait(&r, &backoff);
		if (!async) {	/* Location: 202 until done */
			if (r.status != 202) {
				*result = g_steal_pointer(&r.body);
				az_reply_clear(&r);
				return true;
			}
			az_reply_clear(&r);
			continue;
		}
		st = az_async_status(&r, what, error);
		if (st == 1) {
			json_object *out = cfs_json_get(r.body,
							"properties/output");

			*result = out ? json_object_get(out) : NULL;
		} else if (st == 0 && report && phase) {
			guint64 pct = 0;

			if (cfs_json_u64(r.body, "percentComplete", &pct))
				cfs_export_report(report, phase,
						  MIN((double)pct, 99.0));
		}
		az_reply_clear(&r);
		if (st != 0)
			return st == 1;
	}
}

/* --- ids, names --- */

bool az_id_parse(const char *id, char **rg, char **type, char **name)
{
	g_auto(GStrv) p = id && *id == '/' ? g_strsplit(id + 1, "/", -1) :
					     NULL;

	if (!p || g_strv_length(p) != 8 ||
	    g_ascii_strcasecmp(p[0], "subscriptions") ||
	    g_ascii_strcasecmp(p[2], "resourceGroups") ||
	    g_ascii_strcasecmp(p[4], "providers") ||
	    g_ascii_strcasecmp(p[5], "Microsoft.Compute") || !*p[3] ||
	    !*p[7] || !strcmp(p[7], ".") || !strcmp(p[7], ".."))
		return false;
	*rg = g_strdup(p[3]);
	if (type)
		*type = g_strdup(p[6]);
	*name = g_strdup(p[7]);
	return true;
}

char *az_escape(const char *s)
{
	return g_uri_escape_string(s, "()", FALSE);
}

/* --- classifying answers --- */

/* A blob service refusal of the SAS: renew it and try once more. */
static bool az_sas_refused(const CfsHttpRequest *req)
{
	static const char *const codes[] = {
		"AuthorizationFailure", "AuthenticationFailed",
		"AuthorizationPermissionMismatch", NULL,
	};
	const char *code = cfs_http_response_header(req, "x-ms-error-code");

	for (guint i = 0; codes[i]; i++) {
		if (code && !strcmp(code, codes[i]))
			return true;
		if (!code && req->response &&
		    memmem(req->response->data, req->response->len, codes[i],
			   strlen(codes[i])))
			return true;
	}
	return false;
}

CfsHttpClass azure_classify(const CfsHttpRequest *req)
{
	const char *code = cfs_http_response_header(req, "x-ms-error-code");
	bool busy = (code && (!strcmp(code, "ServerBusy") ||
			      !strcmp(code, "OperationNotAllowed"))) ||
		    (req->response &&
		     (memmem(req->response->data, req->response->len,
			     "ServerBusy", 10) ||
		      memmem(req->response->data, req->response->len,
			     "OperationNotAllowed", 19)));

	if (req->status == 429 || req->status == 503)
		return CFS_HTTP_THROTTLE;
	/* The disk resource provider's "try later": a conflict that says
	 * when to come back. */
	if (req->status == 409 && busy &&
	    cfs_http_response_header(req, "retry-after"))
		return CFS_HTTP_THROTTLE;
	if (req->status == 401)
		return CFS_HTTP_REAUTH;
	if (req->status == 403)
		return az_sas_refused(req) ? CFS_HTTP_REAUTH : CFS_HTTP_FINAL;
	return cfs_http_classify_default(req);
}
