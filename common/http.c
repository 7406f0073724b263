// SPDX-License-Identifier: MIT
/*
 * The HTTP worker: a network thread driving one libcurl multi handle.
 * Requests arrive through a locked queue and curl_multi_wakeup(); failed
 * attempts wait in a list sorted by the time they may run again.
 */
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "http.h"
#include "secret.h"
#include "util.h"

#define ERROR_BODY_MAX (64 * 1024)
/* What a request without a body callback buffers at most: API answers
 * (a page of a listing, an export's status), never disk bytes. */
#define BODY_MAX (64 * 1024 * 1024)

typedef struct {
	double limit;		/* concurrent requests allowed */
	guint inflight;
} HttpHost;

struct CfsHttpBucket {
	gint ref;
	double rate, burst;
	double tokens;		/* network thread only */
	gint64 at;		/* network thread only: µs tokens were counted */
};

struct CfsHttp {
	CfsHttpConfig config;
	GThread *thread;
	CURLM *multi;

	GMutex lock;
	GQueue incoming;	/* protected by lock */
	bool stopping;		/* protected by lock */

	/* Network thread only. */
	GQueue pending[CFS_HTTP_N_PRIORITIES];
	GList *delayed;		/* sorted by not_before */
	GHashTable *hosts;	/* host -> HttpHost */
	GHashTable *active;	/* requests with an easy handle in multi */
	guint running;
	gint64 bucket_wake;	/* µs a waiting request gets a token; 0 */

	CfsHttpStats stats;	/* atomic: written by the network thread */

};

static GPrivate http_network_thread;

bool cfs_http_on_network_thread(void)
{
	return g_private_get(&http_network_thread) != NULL;
}

void cfs_http_config_init(CfsHttpConfig *config)
{
	*config = (CfsHttpConfig){
		.max_attempts = 6,
		.max_connections = 64,
		.host_connections = 64,
		.connect_timeout_s = 15,
		.stall_timeout_s = 30,
		.backoff_base_s = 0.25,
		.backoff_max_s = 20.0,
	};
}

CfsHttpBucket *cfs_http_bucket_new(double rate, double burst)
{
	CfsHttpBucket *b = g_new0(CfsHttpBucket, 1);

	b->ref = 1;
	b->rate = MAX(rate, 0.001);
	b->burst = MAX(burst, 1.0);
	b->tokens = b->burst;
	return b;
}

CfsHttpBucket *cfs_http_bucket_ref(CfsHttpBucket *b)
{
	g_atomic_int_inc(&b->ref);
	return b;
}

void cfs_http_bucket_unref(CfsHttpBucket *b)
{
	if (b && g_atomic_int_dec_and_test(&b->ref))
		g_free(b);
}

void cfs_http_request_add_bucket(CfsHttpRequest *req, CfsHttpBucket *b)
{
	for (guint i = 0; i < G_N_ELEMENTS(req->buckets); i++) {
		if (!req->buckets[i]) {
			req->buckets[i] = cfs_http_bucket_ref(b);
			return;
		}
	}
	g_return_if_reached();
}

/* Refill @b up to @now. Network thread. */
static void bucket_refill(CfsHttpBucket *b, gint64 now)
{
	if (b->at)
		b->tokens = MIN(b->burst, b->tokens + b->rate *
				(double)(now - b->at) / G_USEC_PER_SEC);
	b->at = now;
}

/* Take a token of each of @req's buckets, or none and note when the
 * emptiest has one. Network thread. */
static bool http_take_tokens(CfsHttp *http, CfsHttpRequest *req, gint64 now)
{
	gint64 wake = 0;

	for (guint i = 0; i < G_N_ELEMENTS(req->buckets); i++) {
		CfsHttpBucket *b = req->buckets[i];

		if (!b)
			continue;
		bucket_refill(b, now);
		if (b->tokens < 1.0)
			wake = MAX(wake, now + (gint64)((1.0 - b->tokens) /
							b->rate *
							G_USEC_PER_SEC) + 1);
	}
	if (wake) {
		if (!http->bucket_wake || wake < http->bucket_wake)
			http->bucket_wake = wake;
		return false;
	}
	for (guint i = 0; i < G_N_ELEMENTS(req->buckets); i++)
		if (req->buckets[i])
			req->buckets[i]->tokens -= 1.0;
	return true;
}

CfsHttpRequest *cfs_http_request_new(const char *url)
{
	CfsHttpRequest *req = g_new0(CfsHttpRequest, 1);

	req->url = g_strdup(url);
	req->content_length = -1;
	req->priority = CFS_HTTP_DEMAND;
	req->follow_redirects = true;
	req->resp_headers = g_hash_table_new_full(g_str_hash, g_str_equal,
						  g_free, g_free);
	return req;
}

void cfs_http_request_free(CfsHttpRequest *req)
{
	if (!req)
		return;
	g_assert(!req->easy);
	cfs_secret_free(req->url);	/* may hold a SAS or a signature */
	g_free(req->method);
	g_free(req->host);
	g_free(req->content_range);
	g_free(req->etag);
	g_free(req->last_modified);
	g_clear_pointer(&req->settings, cfs_http_settings_unref);
	if (req->attempt_data_free)
		req->attempt_data_free(req->attempt_data);
	curl_slist_free_all(req->auth_headers);
	for (guint i = 0; i < G_N_ELEMENTS(req->buckets); i++)
		cfs_http_bucket_unref(req->buckets[i]);
	g_clear_pointer(&req->body, g_bytes_unref);
	g_clear_pointer(&req->response, g_byte_array_unref);
	g_clear_pointer(&req->resp_headers, g_hash_table_unref);
	curl_slist_free_all(req->headers);
	g_free(req);
}

bool cfs_http_content_range(const CfsHttpRequest *req, guint64 *start,
			    guint64 *last, guint64 *total)
{
	int end = -1;

	return req->content_range &&
	       sscanf(req->content_range, "bytes %" G_GUINT64_FORMAT "-%"
		      G_GUINT64_FORMAT "/%" G_GUINT64_FORMAT "%n", start, last,
		      total, &end) == 3 &&
	       req->content_range[end] == '\0' && *start <= *last &&
	       *last < *total;
}

void cfs_http_request_add_header(CfsHttpRequest *req, const char *header)
{
	req->headers = curl_slist_append(req->headers, header);
}

void cfs_http_request_set_settings(CfsHttpRequest *req,
				   CfsHttpSettings *settings)
{
	g_clear_pointer(&req->settings, cfs_http_settings_unref);
	if (settings)
		req->settings = cfs_http_settings_ref(settings);
}

const char *cfs_http_response_header(const CfsHttpRequest *req,
				     const char *name)
{
	return req->resp_headers ? g_hash_table_lookup(req->resp_headers,
						       name) : NULL;
}

/* --- response parsing (network thread) --- */

static void response_reset(CfsHttpRequest *req)
{
	req->status = 0;
	req->content_length = -1;
	req->abort_ok = false;
	g_clear_pointer(&req->content_range, g_free);
	g_clear_pointer(&req->etag, g_free);
	g_clear_pointer(&req->last_modified, g_free);
	g_hash_table_remove_all(req->resp_headers);
	if (req->response)
		g_byte_array_set_size(req->response, 0);
}

static void set_str(char **field, const char *value)
{
	g_free(*field);
	*field = g_strdup(value);
}

static size_t http_header_cb(char *data, size_t size, size_t n, void *opaque)
{
	CfsHttpRequest *req = opaque;
	size_t len = size * n;
	g_autofree char *line = g_strstrip(g_strndup(data, len));
	char *colon;

	if (g_str_has_prefix(line, "HTTP/")) {
		/* A new response (after a redirect or 100 Continue). */
		response_reset(req);
		return len;
	}
	colon = strchr(line, ':');
	if (!colon)
		return len;
	*colon = '\0';
	{
		char *name = g_ascii_strdown(g_strstrip(line), -1);
		char *value = g_strdup(g_strstrip(colon + 1));

		if (strcmp(name, "content-length") == 0)
			req->content_length = g_ascii_strtoll(value, NULL, 10);
		else if (strcmp(name, "content-range") == 0)
			set_str(&req->content_range, value);
		else if (strcmp(name, "etag") == 0)
			set_str(&req->etag, value);
		else if (strcmp(name, "last-modified") == 0)
			set_str(&req->last_modified, value);
		g_hash_table_replace(req->resp_headers, name, value);
	}
	return len;
}

static size_t http_write_cb(char *data, size_t size, size_t n, void *opaque)
{
	CfsHttpRequest *req = opaque;
	size_t len = size * n;

	curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &req->status);
	if (req->status >= 300 || !req->on_body) {
		/* Error bodies are kept (small) for the message; plain
		 * requests collect their whole body. */
		if (!req->response)
			req->response = g_byte_array_new();
		if (req->status >= 300 && req->response->len >= ERROR_BODY_MAX)
			return len;
		if (req->response->len + len > BODY_MAX)
			return 0;	/* ends the transfer: see http_finish() */
		g_byte_array_append(req->response, (const guint8 *)data, len);
		return len;
	}
	return req->on_body(req, data, len) ? len : 0;
}

/* --- hosts and throttling (network thread) --- */

static HttpHost *http_host(CfsHttp *http, const char *name)
{
	HttpHost *host = g_hash_table_lookup(http->hosts, name);

	if (!host) {
		host = g_new0(HttpHost, 1);
		host->limit = http->config.host_connections;
		g_hash_table_insert(http->hosts, g_strdup(name), host);
	}
	return host;
}

static bool http_curl_retryable(CURLcode code)
{
	switch (code) {
	case CURLE_URL_MALFORMAT:
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_LOGIN_DENIED:
	case CURLE_FILE_COULDNT_READ_FILE:
	case CURLE_WRITE_ERROR:
	case CURLE_OUT_OF_MEMORY:
	case CURLE_TOO_MANY_REDIRECTS:
		return false;
	default:
		return true;
	}
}

/* --- starting and finishing attempts (network thread) --- */

/* Trust a server certificate by its SHA-1 fingerprint alone (vSphere
 * thumbprints), whoever signed it. */
static int http_thumbprint_verify(X509_STORE_CTX *store, void *arg)
{
	const CfsHttpSettings *s = arg;
	X509 *cert = X509_STORE_CTX_get0_cert(store);
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	char hex[2 * EVP_MAX_MD_SIZE + 1];

	if (!cert || !X509_digest(cert, EVP_sha1(), md, &len))
		return 0;
	for (unsigned int i = 0; i < len; i++)
		g_snprintf(hex + 2 * i, 3, "%02x", md[i]);
	if (strcmp(hex, s->thumbprint) == 0)
		return 1;
	X509_STORE_CTX_set_error(store, X509_V_ERR_CERT_UNTRUSTED);
	return 0;
}

static CURLcode http_ssl_ctx(CURL *easy, void *ssl_ctx, void *arg)
{
	SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_cert_verify_callback(ssl_ctx, http_thumbprint_verify, arg);
	return CURLE_OK;
}

static void http_apply_settings(CfsHttp *http, CfsHttpRequest *req)
{
	const CfsHttpSettings *s = req->settings;
	CURL *easy = req->easy;

	if (http->config.insecure || (s && s->insecure)) {
		curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	if (!s)
		return;
	if (s->ca_file)
		curl_easy_setopt(easy, CURLOPT_CAINFO, s->ca_file);
	if (s->thumbprint && !s->insecure) {
		/* The fingerprint is the trust: no CA, no host name. */
		curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 0L);
		curl_easy_setopt(easy, CURLOPT_SSL_CTX_FUNCTION, http_ssl_ctx);
		curl_easy_setopt(easy, CURLOPT_SSL_CTX_DATA, (void *)s);
	}
	if (s->client_cert)
		curl_easy_setopt(easy, CURLOPT_SSLCERT, s->client_cert);
	if (s->client_key)
		curl_easy_setopt(easy, CURLOPT_SSLKEY, s->client_key);
	if (s->auth != CFS_HTTP_AUTH_NONE) {
		curl_easy_setopt(easy, CURLOPT_HTTPAUTH,
				 s->auth == CFS_HTTP_AUTH_NTLM ?
					 CURLAUTH_NTLM : CURLAUTH_BASIC);
		curl_easy_setopt(easy, CURLOPT_USERNAME, s->username);
		curl_easy_setopt(easy, CURLOPT_PASSWORD, s->password);
	}
}

/* Redirects stay on the same scheme and host: a signature or a bearer
 * token is never sent elsewhere, and https never falls back to http. */
static void http_apply_redirects(CfsHttpRequest *req)
{
	bool https = g_ascii_strncasecmp(req->url, "https:", 6) == 0;

	if (!req->follow_redirects)
		return;
	curl_easy_setopt(req->easy, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(req->easy, CURLOPT_MAXREDIRS, 5L);
	curl_easy_setopt(req->easy, CURLOPT_REDIR_PROTOCOLS_STR,
			 https ? "https" : "http,https");
}

static bool http_start(CfsHttp *http, CfsHttpRequest *req, GError **error)
{
	const CfsHttpConfig *c = &http->config;
	CURL *easy;
	char range[64];

	req->attempt++;
	if (req->on_attempt) {
		g_clear_pointer(&req->auth_headers, curl_slist_free_all);
		if (!req->on_attempt(req, error))
			return false;
	}
	easy = curl_easy_init();
	if (!easy) {
		g_set_error(error, CFS_ERROR, ENOMEM, "cannot start a transfer "
			    "to %s", req->host);
		return false;
	}
	req->easy = easy;
	req->errbuf[0] = '\0';
	response_reset(req);
	curl_easy_setopt(easy, CURLOPT_URL, req->url);
	curl_easy_setopt(easy, CURLOPT_PRIVATE, req);
	curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, http_header_cb);
	curl_easy_setopt(easy, CURLOPT_HEADERDATA, req);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, http_write_cb);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, req);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, req->errbuf);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(easy, CURLOPT_BUFFERSIZE, 256L * 1024);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT, (long)c->connect_timeout_s);
	curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, 1024L);
	curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME, (long)c->stall_timeout_s);
	curl_easy_setopt(easy, CURLOPT_USERAGENT, "cloudfs/" CFS_VERSION);
	if (req->timeout_s)
		curl_easy_setopt(easy, CURLOPT_TIMEOUT, (long)req->timeout_s);
	http_apply_settings(http, req);
	http_apply_redirects(req);
	if (req->has_range) {
		g_snprintf(range, sizeof(range),
			   "%" G_GUINT64_FORMAT "-%" G_GUINT64_FORMAT,
			   req->range_start, req->range_end);
		curl_easy_setopt(easy, CURLOPT_RANGE, range);
	}
	if (req->nobody)
		curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
	if (req->method)
		curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, req->method);
	if (req->body) {
		gsize len;
		const void *data = g_bytes_get_data(req->body, &len);

		curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
				 (curl_off_t)len);
		curl_easy_setopt(easy, CURLOPT_POSTFIELDS, data);
	}
	for (struct curl_slist *h = req->headers; h; h = h->next)
		req->sent_headers = curl_slist_append(req->sent_headers, h->data);
	for (struct curl_slist *h = req->auth_headers; h; h = h->next)
		req->sent_headers = curl_slist_append(req->sent_headers, h->data);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, req->sent_headers);
	if (curl_multi_add_handle(http->multi, easy) != CURLM_OK) {
		curl_easy_cleanup(easy);
		req->easy = NULL;
		g_clear_pointer(&req->sent_headers, curl_slist_free_all);
		g_set_error(error, CFS_ERROR, ENOMEM, "cannot start a transfer "
			    "to %s", req->host);
		return false;
	}
	http_host(http, req->host)->inflight++;
	http->running++;
	g_hash_table_add(http->active, req);
	__atomic_fetch_add(&http->stats.attempts, 1, __ATOMIC_RELAXED);
	if (req->attempt > 1)
		__atomic_fetch_add(&http->stats.retries, 1, __ATOMIC_RELAXED);
	return true;
}

static void http_release(CfsHttp *http, CfsHttpRequest *req)
{
	curl_multi_remove_handle(http->multi, req->easy);
	curl_easy_cleanup(req->easy);
	req->easy = NULL;
	g_clear_pointer(&req->sent_headers, curl_slist_free_all);
	http_host(http, req->host)->inflight--;
	http->running--;
	g_hash_table_remove(http->active, req);
}

static gint delayed_cmp(gconstpointer a, gconstpointer b)
{
	const CfsHttpRequest *x = a, *y = b;

	return x->not_before < y->not_before ? -1 :
	       x->not_before > y->not_before ? 1 : 0;
}

/* Retry-After in seconds (a date is not worth the parsing here), at most
 * @max; 0 when absent. */
static double http_retry_after(const CfsHttpRequest *req, double max)
{
	const char *v = cfs_http_response_header(req, "retry-after");
	char *end = NULL;
	double s;

	if (!v)
		return 0;
	s = g_ascii_strtod(v, &end);
	if (end == v || *end || s < 0)
		return 0;
	return MIN(s, max);
}

static void http_retry_later(CfsHttp *http, CfsHttpRequest *req,
			     bool throttled)
{
	const CfsHttpConfig *c = &http->config;
	double delay = c->backoff_base_s * (double)(1u << MIN(req->attempt - 1, 16));

	if (throttled)
		delay *= 4;
	delay = MIN(delay, c->backoff_max_s);
	delay *= 0.5 + g_random_double();	/* jitter */
	if (throttled)	/* the server says when: no sooner */
		delay = MAX(delay, http_retry_after(req, c->backoff_max_s));
	req->not_before = g_get_monotonic_time() +
			  (gint64)(delay * G_USEC_PER_SEC);
	if (req->on_reset)
		req->on_reset(req);
	http->delayed = g_list_insert_sorted(http->delayed, req, delayed_cmp);
}

static void http_done(CfsHttpRequest *req, GError *error)
{
	CfsHttpDoneFn done = req->on_done;

	done(req, error);
	if (error)
		g_error_free(error);
}

static CfsHttpClass http_classify(const CfsHttpRequest *req)
{
	const CfsHttpSettings *s = req->settings;

	return s && s->classify ? s->classify(req) :
				  cfs_http_classify_default(req);
}

static void http_finish(CfsHttp *http, CfsHttpRequest *req, CURLcode code)
{
	guint max = req->max_attempts ? req->max_attempts :
					http->config.max_attempts;
	HttpHost *host;
	GError *error = NULL;
	CfsHttpClass verdict = CFS_HTTP_FINAL;

	curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &req->status);
	http_release(http, req);
	host = http_host(http, req->host);
	if (code == CURLE_WRITE_ERROR && req->abort_ok)
		code = CURLE_OK;
	if (code == CURLE_OK)
		verdict = http_classify(req);
	req->verdict = verdict;
	if (verdict == CFS_HTTP_OK) {
		host->limit = MIN(host->limit + 0.25,
				  (double)http->config.host_connections);
		http_done(req, NULL);
		return;
	}
	if (code == CURLE_OK) {
		error = g_error_new(CFS_ERROR, verdict == CFS_HTTP_REAUTH ?
					EACCES : EIO, "HTTP %ld from %s",
				    req->status, req->host);
	} else if (code == CURLE_WRITE_ERROR && req->response &&
		   req->status < 300 && !req->on_body &&
		   req->response->len + CURL_MAX_WRITE_SIZE > BODY_MAX) {
		req->verdict = CFS_HTTP_FINAL;
		error = g_error_new(CFS_ERROR, EIO, "the answer from %s is "
				    "larger than %d MiB", req->host,
				    BODY_MAX >> 20);
	} else if (code == CURLE_WRITE_ERROR) {
		error = g_error_new(CFS_ERROR, ECANCELED, "transfer from %s "
				    "cancelled", req->host);
	} else {
		verdict = http_curl_retryable(code) ? CFS_HTTP_RETRY :
						      CFS_HTTP_FINAL;
		req->verdict = verdict;
		error = g_error_new(CFS_ERROR,
				    code == CURLE_OPERATION_TIMEDOUT ?
					    ETIMEDOUT : EIO,
				    "%s from %s", req->errbuf[0] ? req->errbuf :
				    curl_easy_strerror(code), req->host);
	}
	if (verdict == CFS_HTTP_THROTTLE) {
		host->limit = MAX(1.0, host->limit / 2);
		__atomic_fetch_add(&http->stats.throttled, 1, __ATOMIC_RELAXED);
	}
	if ((verdict == CFS_HTTP_RETRY || verdict == CFS_HTTP_THROTTLE) &&
	    req->attempt < max) {
		g_debug("%s (attempt %u of %u), retrying", error->message,
			req->attempt, max);
		g_error_free(error);
		http_retry_later(http, req, verdict == CFS_HTTP_THROTTLE);
		return;
	}
	__atomic_fetch_add(&http->stats.failed, 1, __ATOMIC_RELAXED);
	http_done(req, error);
}

void cfs_http_stats(CfsHttp *http, CfsHttpStats *stats)
{
	stats->attempts = __atomic_load_n(&http->stats.attempts,
					  __ATOMIC_RELAXED);
	stats->retries = __atomic_load_n(&http->stats.retries,
					 __ATOMIC_RELAXED);
	stats->throttled = __atomic_load_n(&http->stats.throttled,
					   __ATOMIC_RELAXED);
	stats->failed = __atomic_load_n(&http->stats.failed, __ATOMIC_RELAXED);
}

/* Start what the limits allow, demand first. */
static void http_start_pending(CfsHttp *http)
{
	gint64 now = g_get_monotonic_time();

	while (http->delayed &&
	       ((CfsHttpRequest *)http->delayed->data)->not_before <= now) {
		CfsHttpRequest *req = http->delayed->data;

		http->delayed = g_list_delete_link(http->delayed, http->delayed);
		g_queue_push_head(&http->pending[req->priority], req);
	}
	http->bucket_wake = 0;
	for (int p = 0; p < CFS_HTTP_N_PRIORITIES; p++) {
		GList *l = http->pending[p].head;

		while (l && http->running < http->config.max_connections) {
			CfsHttpRequest *req = l->data;
			GList *next = l->next;
			HttpHost *host = http_host(http, req->host);

			if (host->inflight < (guint)host->limit &&
			    http_take_tokens(http, req, now)) {
				GError *error = NULL;

				g_queue_delete_link(&http->pending[p], l);
				if (!http_start(http, req, &error))
					http_done(req, error);
			}
			l = next;
		}
	}
}

static int http_poll_timeout(CfsHttp *http)
{
	long curl_ms = -1;
	int ms = 1000;

	curl_multi_timeout(http->multi, &curl_ms);
	if (curl_ms >= 0 && curl_ms < ms)
		ms = (int)curl_ms;
	if (http->delayed) {
		CfsHttpRequest *req = http->delayed->data;
		gint64 wait = (req->not_before - g_get_monotonic_time()) / 1000;

		ms = (int)CLAMP(wait, 0, ms);
	}
	if (http->bucket_wake) {
		gint64 wait = (http->bucket_wake - g_get_monotonic_time() +
			       999) / 1000;

		ms = (int)CLAMP(wait, 0, ms);
	}
	return ms;
}

static void http_cancel(CfsHttpRequest *req)
{
	http_done(req, g_error_new(CFS_ERROR, ECANCELED,
				   "transfer from %s cancelled at shutdown",
				   req->host));
}

static gpointer http_thread(gpointer opaque)
{
	CfsHttp *http = opaque;

	g_private_set(&http_network_thread, GINT_TO_POINTER(1));
	for (;;) {
		CURLMsg *msg;
		int still, left;
		bool stopping;

		g_mutex_lock(&http->lock);
		while (!g_queue_is_empty(&http->incoming)) {
			CfsHttpRequest *req = g_queue_pop_head(&http->incoming);

			g_queue_push_tail(&http->pending[req->priority], req);
		}
		stopping = http->stopping;
		g_mutex_unlock(&http->lock);
		if (stopping)
			break;

		http_start_pending(http);
		curl_multi_perform(http->multi, &still);
		while ((msg = curl_multi_info_read(http->multi, &left))) {
			CfsHttpRequest *req = NULL;

			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE,
					  (char **)&req);
			http_finish(http, req, msg->data.result);
		}
		curl_multi_poll(http->multi, NULL, 0, http_poll_timeout(http),
				NULL);
	}

	/* Shutdown: everything still queued, waiting or running ends. */
	for (int p = 0; p < CFS_HTTP_N_PRIORITIES; p++) {
		CfsHttpRequest *req;

		while ((req = g_queue_pop_head(&http->pending[p])))
			http_cancel(req);
	}
	while (http->delayed) {
		CfsHttpRequest *req = http->delayed->data;

		http->delayed = g_list_delete_link(http->delayed, http->delayed);
		http_cancel(req);
	}
	{
		g_autoptr(GList) running = g_hash_table_get_keys(http->active);

		for (GList *l = running; l; l = l->next) {
			http_release(http, l->data);
			http_cancel(l->data);
		}
	}
	return NULL;
}

CfsHttp *cfs_http_new(const CfsHttpConfig *config, GError **error)
{
	CfsHttp *http = g_new0(CfsHttp, 1);

	http->config = *config;
	http->multi = curl_multi_init();
	if (!http->multi) {
		g_free(http);
		g_set_error(error, CFS_ERROR, ENOMEM, "cannot start libcurl");
		return NULL;
	}
	curl_multi_setopt(http->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
			  (long)config->host_connections);
	curl_multi_setopt(http->multi, CURLMOPT_MAXCONNECTS,
			  (long)config->max_connections);
	g_mutex_init(&http->lock);
	http->hosts = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
					    g_free);
	http->active = g_hash_table_new(NULL, NULL);
	http->thread = g_thread_new("cfs-net", http_thread, http);
	return http;
}

void cfs_http_stop(CfsHttp *http)
{
	bool joined;

	g_mutex_lock(&http->lock);
	joined = http->stopping;
	http->stopping = true;
	g_mutex_unlock(&http->lock);
	if (joined)
		return;
	curl_multi_wakeup(http->multi);
	g_thread_join(http->thread);
	/* Requests submitted before the thread saw it stop. */
	g_mutex_lock(&http->lock);
	while (!g_queue_is_empty(&http->incoming)) {
		CfsHttpRequest *req = g_queue_pop_head(&http->incoming);

		g_mutex_unlock(&http->lock);
		http_cancel(req);
		g_mutex_lock(&http->lock);
	}
	g_mutex_unlock(&http->lock);
}

void cfs_http_free(CfsHttp *http)
{
	if (!http)
		return;
	cfs_http_stop(http);
	curl_multi_cleanup(http->multi);
	g_hash_table_unref(http->hosts);
	g_hash_table_unref(http->active);
	g_mutex_clear(&http->lock);
	g_free(http);
}

void cfs_http_submit(CfsHttp *http, CfsHttpRequest *req)
{
	bool stopping;

	g_assert(req->on_done);
	req->http = http;
	g_free(req->host);
	req->host = cfs_url_host(req->url);
	g_mutex_lock(&http->lock);
	stopping = http->stopping;
	if (!stopping)
		g_queue_push_tail(&http->incoming, req);
	g_mutex_unlock(&http->lock);
	if (stopping)
		http_cancel(req);
	else
		curl_multi_wakeup(http->multi);
}

typedef struct {
	GMutex lock;
	GCond cond;
	bool done;
	GError *error;
} HttpSync;

static void http_sync_done(CfsHttpRequest *req, const GError *error)
{
	HttpSync *sync = req->user_data;

	g_mutex_lock(&sync->lock);
	sync->error = error ? g_error_copy(error) : NULL;
	sync->done = true;
	g_cond_signal(&sync->cond);
	g_mutex_unlock(&sync->lock);
}

bool cfs_http_perform(CfsHttp *http, CfsHttpRequest *req, GError **error)
{
	HttpSync sync = { 0 };

	cfs_assert_may_block();
	g_assert(!req->on_done);
	g_mutex_init(&sync.lock);
	g_cond_init(&sync.cond);
	req->on_done = http_sync_done;
	req->user_data = &sync;
	req->attempt = 0;
	cfs_http_submit(http, req);
	g_mutex_lock(&sync.lock);
	while (!sync.done)
		g_cond_wait(&sync.cond, &sync.lock);
	g_mutex_unlock(&sync.lock);
	g_mutex_clear(&sync.lock);
	g_cond_clear(&sync.cond);
	req->on_done = NULL;
	req->user_data = NULL;
	if (sync.error) {
		g_propagate_error(error, sync.error);
		return false;
	}
	return true;
}
