// SPDX-License-Identifier: MIT
/*
 * The HTTP worker: a network thread driving one libcurl multi handle.
 * Requests arrive through a locked queue and curl_multi_wakeup(); failed
 * attempts wait in a list sorted by the time they may run again.
 */
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "http.h"
#include "util.h"

#define ERROR_BODY_MAX (64 * 1024)

typedef struct {
	double limit;		/* concurrent requests allowed */
	guint inflight;
} HttpHost;

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

};

void cfs_http_config_init(CfsHttpConfig *config)
{
	*config = (CfsHttpConfig){
		.max_attempts = 6,
		.max_connections = 64,
		.host_connections = 16,
		.connect_timeout_s = 15,
		.stall_timeout_s = 30,
		.backoff_base_s = 0.25,
		.backoff_max_s = 20.0,
	};
}

CfsHttpRequest *cfs_http_request_new(const char *url)
{
	CfsHttpRequest *req = g_new0(CfsHttpRequest, 1);

	req->url = g_strdup(url);
	req->content_length = -1;
	req->priority = CFS_HTTP_DEMAND;
	req->resp_headers = g_hash_table_new_full(g_str_hash, g_str_equal,
						  g_free, g_free);
	return req;
}

void cfs_http_request_free(CfsHttpRequest *req)
{
	if (!req)
		return;
	g_assert(!req->easy);
	g_free(req->url);
	g_free(req->method);
	g_free(req->host);
	g_free(req->content_range);
	g_free(req->etag);
	g_free(req->last_modified);
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

static bool http_status_retryable(long status)
{
	return status == 408 || status == 429 || status == 500 ||
	       status == 502 || status == 503 || status == 504;
}

/*
 * Throttling that is not a 429 or 503: the EBS direct APIs answer 400
 * RequestThrottledException, EC2 400 RequestLimitExceeded, S3 503
 * SlowDown, Azure 503 ServerBusy. Named in a header or the error body.
 */
static bool http_throttling_answer(const CfsHttpRequest *req)
{
	static const char *const codes[] = {
		"Throttling", "RequestThrottled", "ConcurrentLimitExceeded",
		"RequestLimitExceeded", "SlowDown", "ServerBusy",
		"TooManyRequests",
	};
	const char *type = g_hash_table_lookup(req->resp_headers,
					       "x-amzn-errortype");
	const char *code = g_hash_table_lookup(req->resp_headers,
					       "x-ms-error-code");

	if (req->status != 400 && req->status != 403)
		return false;
	for (guint i = 0; i < G_N_ELEMENTS(codes); i++) {
		if ((type && g_str_has_prefix(type, codes[i])) ||
		    (code && g_str_has_prefix(code, codes[i])) ||
		    (req->response &&
		     memmem(req->response->data, req->response->len, codes[i],
			    strlen(codes[i]))))
			return true;
	}
	return false;
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

static bool http_start(CfsHttp *http, CfsHttpRequest *req)
{
	const CfsHttpConfig *c = &http->config;
	CURL *easy = curl_easy_init();
	char range[64];

	if (!easy)
		return false;
	req->easy = easy;
	req->attempt++;
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
	curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(easy, CURLOPT_MAXREDIRS, 5L);
	curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(easy, CURLOPT_BUFFERSIZE, 256L * 1024);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT, (long)c->connect_timeout_s);
	curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, 1024L);
	curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME, (long)c->stall_timeout_s);
	curl_easy_setopt(easy, CURLOPT_USERAGENT, "cloudfs/" CFS_VERSION);
	if (req->timeout_s)
		curl_easy_setopt(easy, CURLOPT_TIMEOUT, (long)req->timeout_s);
	if (c->insecure) {
		curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	if (c->ca_file)
		curl_easy_setopt(easy, CURLOPT_CAINFO, c->ca_file);
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
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, req->headers);
	if (curl_multi_add_handle(http->multi, easy) != CURLM_OK) {
		curl_easy_cleanup(easy);
		req->easy = NULL;
		return false;
	}
	http_host(http, req->host)->inflight++;
	http->running++;
	g_hash_table_add(http->active, req);
	return true;
}

static void http_release(CfsHttp *http, CfsHttpRequest *req)
{
	curl_multi_remove_handle(http->multi, req->easy);
	curl_easy_cleanup(req->easy);
	req->easy = NULL;
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

static void http_retry_later(CfsHttp *http, CfsHttpRequest *req,
			     bool throttled)
{
	const CfsHttpConfig *c = &http->config;
	double delay = c->backoff_base_s * (double)(1u << MIN(req->attempt - 1, 16));

	if (throttled)
		delay *= 4;
	delay = MIN(delay, c->backoff_max_s);
	delay *= 0.5 + g_random_double();	/* jitter */
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

static void http_finish(CfsHttp *http, CfsHttpRequest *req, CURLcode code)
{
	guint max = req->max_attempts ? req->max_attempts :
					http->config.max_attempts;
	HttpHost *host;
	GError *error = NULL;
	bool retry = false, throttled = false;

	curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &req->status);
	http_release(http, req);
	host = http_host(http, req->host);
	if (code == CURLE_WRITE_ERROR && req->abort_ok)
		code = CURLE_OK;
	if (code == CURLE_OK && req->status >= 200 && req->status < 300) {
		host->limit = MIN(host->limit + 0.25,
				  (double)http->config.host_connections);
		http_done(req, NULL);
		return;
	}
	if (code == CURLE_OK) {
		throttled = req->status == 429 || req->status == 503 ||
			    http_throttling_answer(req);
		retry = throttled || http_status_retryable(req->status);
		error = g_error_new(CFS_ERROR, EIO, "HTTP %ld from %s",
				    req->status, req->host);
	} else if (code == CURLE_WRITE_ERROR) {
		error = g_error_new(CFS_ERROR, ECANCELED, "transfer from %s "
				    "cancelled", req->host);
	} else {
		retry = http_curl_retryable(code);
		error = g_error_new(CFS_ERROR,
				    code == CURLE_OPERATION_TIMEDOUT ?
					    ETIMEDOUT : EIO,
				    "%s from %s", req->errbuf[0] ? req->errbuf :
				    curl_easy_strerror(code), req->host);
	}
	if (throttled)
		host->limit = MAX(1.0, host->limit / 2);
	if (retry && req->attempt < max) {
		g_debug("%s (attempt %u of %u), retrying", error->message,
			req->attempt, max);
		g_error_free(error);
		http_retry_later(http, req, throttled);
		return;
	}
	http_done(req, error);
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
	for (int p = 0; p < CFS_HTTP_N_PRIORITIES; p++) {
		GList *l = http->pending[p].head;

		while (l && http->running < http->config.max_connections) {
			CfsHttpRequest *req = l->data;
			GList *next = l->next;
			HttpHost *host = http_host(http, req->host);

			if (host->inflight < (guint)host->limit) {
				g_queue_delete_link(&http->pending[p], l);
				if (!http_start(http, req))
					http_done(req, g_error_new(CFS_ERROR,
						ENOMEM, "cannot start a "
						"transfer to %s", req->host));
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
	http->config.ca_file = g_strdup(config->ca_file);
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

void cfs_http_free(CfsHttp *http)
{
	if (!http)
		return;
	g_mutex_lock(&http->lock);
	http->stopping = true;
	g_mutex_unlock(&http->lock);
	curl_multi_wakeup(http->multi);
	g_thread_join(http->thread);
	/* Requests submitted after the thread stopped. */
	while (!g_queue_is_empty(&http->incoming)) {
		CfsHttpRequest *req = g_queue_pop_head(&http->incoming);

		http_cancel(req);
	}
	curl_multi_cleanup(http->multi);
	g_hash_table_unref(http->hosts);
	g_hash_table_unref(http->active);
	g_mutex_clear(&http->lock);
	g_free(http->config.ca_file);
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
