// SPDX-License-Identifier: MIT
/*
 * Running AWS requests: SigV4 signing with the provider's credentials,
 * control-plane calls through the network thread, and AWS error bodies
 * (EC2 and S3 XML, EBS JSON) turned into one readable line that never
 * holds a secret.
 */
#include <libxml/parser.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/secret.h"
#include "providers/aws/aws-private.h"

#define AWS_ERROR_TEXT_MAX 300

/* --- signing --- */

bool aws_sign_with(const CfsAwsCreds *creds, CfsHttpRequest *req,
		   const char *service, const char *region, GError **error)
{
	g_autoptr(GPtrArray) hdrs = g_ptr_array_new();
	g_autoptr(GPtrArray) out = NULL;
	CfsSigV4Request sr = { 0 };
	gsize body_len = 0;

	for (struct curl_slist *h = req->headers; h; h = h->next)
		g_ptr_array_add(hdrs, h->data);
	g_ptr_array_add(hdrs, NULL);
	sr.method = req->method ? req->method : req->nobody ? "HEAD" : "GET";
	sr.url = req->url;
	sr.headers = (const char *const *)hdrs->pdata;
	sr.body = req->body ? g_bytes_get_data(req->body, &body_len) : NULL;
	sr.body_len = body_len;
	sr.region = region;
	sr.service = service;
	sr.now = time(NULL);
	sr.flags = CFS_SIGV4_NO_HOST_HEADER;
	out = cfs_sigv4_sign(creds, &sr, error);
	if (!out) {
		g_prefix_error(error, "signing a %s request: ", service);
		return false;
	}
	g_clear_pointer(&req->auth_headers, curl_slist_free_all);
	for (guint i = 0; i < out->len; i++) {
		req->auth_headers = curl_slist_append(req->auth_headers,
						      out->pdata[i]);
		cfs_secret_wipe(out->pdata[i], strlen(out->pdata[i]));
	}
	/* A signature is for this host only. */
	req->follow_redirects = false;
	return true;
}

/* What a control-plane request is signed with at each attempt. */
typedef struct {
	CfsAwsCreds *creds;
	char *service;
	char *region;
} AwsSignCtx;

static void sign_ctx_free(gpointer data)
{
	AwsSignCtx *ctx = data;

	cfs_aws_creds_unref(ctx->creds);
	g_free(ctx->service);
	g_free(ctx->region);
	g_free(ctx);
}

static bool sign_attempt(CfsHttpRequest *req, GError **error)
{
	AwsSignCtx *ctx = req->attempt_data;

	return aws_sign_with(ctx->creds, req, ctx->service, ctx->region,
			     error);
}

bool aws_sign_creds(CfsAwsCreds *creds, CfsHttpRequest *req,
		    const char *service, const char *region, GError **error)
{
	AwsSignCtx *ctx = g_new0(AwsSignCtx, 1);

	ctx->creds = cfs_aws_creds_ref(creds);
	ctx->service = g_strdup(service);
	ctx->region = g_strdup(region);
	if (req->attempt_data_free)
		req->attempt_data_free(req->attempt_data);
	req->attempt_data = ctx;
	req->attempt_data_free = sign_ctx_free;
	req->on_attempt = sign_attempt;
	/* Sign now too, so that a bad key fails here with its message. */
	return aws_sign_with(creds, req, service, region, error);
}

bool aws_sign(AwsProvider *prov, CfsHttpRequest *req, const char *service,
	      const char *region, GError **error)
{
	g_autoptr(CfsAwsCreds) creds = aws_creds_get(prov, NULL, error);

	return creds && aws_sign_creds(creds, req, service, region, error);
}

/* --- the credentials a source signs with --- */

void aws_grant_init(AwsGrant *grant, CfsAwsCreds *creds, gint64 expires)
{
	g_mutex_init(&grant->lock);
	grant->creds = creds;
	grant->expires = expires;
}

void aws_grant_clear(AwsGrant *grant)
{
	g_clear_pointer(&grant->creds, cfs_aws_creds_unref);
	g_mutex_clear(&grant->lock);
}

bool aws_grant_sign(AwsGrant *grant, CfsHttpRequest *req, const char *service,
		    const char *region, GError **error)
{
	g_autoptr(CfsAwsCreds) creds = NULL;

	g_mutex_lock(&grant->lock);
	creds = cfs_aws_creds_ref(grant->creds);
	g_mutex_unlock(&grant->lock);
	return aws_sign_with(creds, req, service, region, error);
}

bool aws_grant_renew(AwsProvider *prov, AwsGrant *grant, GError **error)
{
	gint64 expires = 0;
	CfsAwsCreds *creds = aws_creds_get(prov, &expires, error);
	CfsAwsCreds *old;

	if (!creds)
		return false;
	grant->expires = expires;
	g_mutex_lock(&grant->lock);
	old = grant->creds;
	grant->creds = creds;
	g_mutex_unlock(&grant->lock);
	cfs_aws_creds_unref(old);
	return true;
}

/* --- errors --- */

static char *xml_error_text(const GByteArray *body)
{
	g_autoptr(xmlDoc) doc = xmlReadMemory((const char *)body->data,
					      (int)body->len, "error.xml",
					      NULL, XML_PARSE_NONET |
					      XML_PARSE_NOERROR |
					      XML_PARSE_NOWARNING);
	xmlNode *root = doc ? xmlDocGetRootElement(doc) : NULL;
	xmlNode *err;
	g_autofree char *code = NULL, *msg = NULL;

	if (!root)
		return NULL;
	err = aws_xml_path(root, "Errors/Error");	/* EC2 */
	if (!err && root->name && !strcmp((const char *)root->name, "Error"))
		err = root;				/* S3 */
	if (!err)
		return NULL;
	code = aws_xml_text(err, "Code");
	msg = aws_xml_text(err, "Message");
	if (!code)
		return NULL;
	return msg ? g_strdup_printf("%s: %s", code, msg) : g_strdup(code);
}

static char *json_error_text(const CfsHttpRequest *req)
{
	const char *type = req->resp_headers ?
		g_hash_table_lookup(req->resp_headers, "x-amzn-errortype") :
		NULL;
	g_autofree char *code = type ? g_strndup(type, strcspn(type, ":")) :
				       NULL;
	g_autoptr(json_object) obj = NULL;
	json_object *m = NULL;

	if (req->response && req->response->len) {
		g_autofree char *text = g_strndup(
			(const char *)req->response->data,
			req->response->len);

		obj = json_tokener_parse(text);
	}
	if (obj && !json_object_object_get_ex(obj, "Message", &m))
		json_object_object_get_ex(obj, "message", &m);
	if (!code && obj) {
		json_object *t = NULL;

		if (json_object_object_get_ex(obj, "__type", &t))
			code = g_strdup(json_object_get_string(t));
	}
	if (!code)
		return NULL;
	if (m && json_object_get_string(m))
		return g_strdup_printf("%s: %s", code,
				       json_object_get_string(m));
	return g_steal_pointer(&code);
}

char *aws_error_text(const CfsHttpRequest *req)
{
	char *text = NULL;

	if (req->response && req->response->len &&
	    req->response->data[0] == '<')
		text = xml_error_text(req->response);
	if (!text)
		text = json_error_text(req);
	if (text) {
		if (strlen(text) > AWS_ERROR_TEXT_MAX)
			strcpy(text + AWS_ERROR_TEXT_MAX - 3, "...");
		for (char *p = text; *p; p++)
			if (*p == '\n' || *p == '\r' || *p == '\t')
				*p = ' ';
	}
	return text;
}

/* Replace *@error by "@what: AWS's code and message (what the worker
 * said)". */
static void aws_explain(const CfsHttpRequest *req, const char *what,
			GError **error)
{
	g_autofree char *text = aws_error_text(req);

	cfs_http_explain(req, what, text, EBUSY, error);
}

bool aws_perform(AwsProvider *prov, CfsHttpRequest *req, const char *what,
		 GError **error)
{
	cfs_http_request_set_settings(req, prov->settings);
	if (!req->max_attempts)
		req->max_attempts = 4;
	if (!req->timeout_s)
		req->timeout_s = 60;
	if (cfs_http_perform(prov->base.ctx->http, req, error))
		return true;
	aws_explain(req, what, error);
	return false;
}

/* The answers of credential services hold secrets: collected into a
 * buffer that is never reallocated (no stray copy), at most
 * AWS_SMALL_ANSWER_MAX bytes. */
static bool small_body(CfsHttpRequest *req, const void *data, gsize len)
{
	if (!req->response)
		req->response = g_byte_array_sized_new(AWS_SMALL_ANSWER_MAX);
	if (req->response->len + len > AWS_SMALL_ANSWER_MAX)
		return false;
	g_byte_array_append(req->response, data, len);
	return true;
}

bool aws_perform_small(AwsProvider *prov, CfsHttpRequest *req,
		       const char *what, GError **error)
{
	req->on_body = small_body;
	if (aws_perform(prov, req, what, error))
		return true;
	if (req->status / 100 == 2)
		g_prefix_error(error, "the answer is over %d bytes, or ",
			       AWS_SMALL_ANSWER_MAX);
	if (req->response)
		cfs_secret_wipe(req->response->data, req->response->len);
	return false;
}

/* --- classifying answers --- */

/*
 * Throttling that is not a 429 or 503: the EBS direct APIs answer 400
 * RequestThrottledException, EC2 400 RequestLimitExceeded, S3 503
 * SlowDown. Expired or rotated credentials and clock skew ask for a new
 * signature: ExpiredToken, RequestExpired, InvalidToken.
 */
static bool aws_answer_names(const CfsHttpRequest *req,
			     const char *const *codes)
{
	const char *type = cfs_http_response_header(req, "x-amzn-errortype");

	for (guint i = 0; codes[i]; i++) {
		if ((type && g_str_has_prefix(type, codes[i])) ||
		    (req->response &&
		     memmem(req->response->data, req->response->len, codes[i],
			    strlen(codes[i]))))
			return true;
	}
	return false;
}

CfsHttpClass aws_classify(const CfsHttpRequest *req)
{
	static const char *const throttling[] = {
		"Throttling", "RequestThrottled", "ConcurrentLimitExceeded",
		"RequestLimitExceeded", "SlowDown", "TooManyRequests", NULL,
	};
	/* INVALID_BLOCK_TOKEN: an EBS block token that expired; renewing
	 * lists the blocks again. */
	static const char *const expired[] = {
		"ExpiredToken", "RequestExpired", "InvalidToken",
		"TokenRefreshRequired", "INVALID_BLOCK_TOKEN", NULL,
	};

	if ((req->status == 400 || req->status == 403) &&
	    aws_answer_names(req, throttling))
		return CFS_HTTP_THROTTLE;
	if ((req->status == 400 || req->status == 403) &&
	    aws_answer_names(req, expired))
		return CFS_HTTP_REAUTH;
	if (req->status == 403 || req->status == 400)
		return CFS_HTTP_FINAL;
	return cfs_http_classify_default(req);
}
