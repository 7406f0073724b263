/* SPDX-License-Identifier: MIT */
/*
 * The HTTP worker: one network thread that owns a libcurl multi handle.
 * Other threads hand it requests; it runs them with keep-alive, demand
 * requests before prefetch ones, retries failed attempts with exponential
 * backoff and jitter, detects stalls, and lowers the concurrency for a host
 * that throttles (additive increase, multiplicative decrease).
 *
 * Lock order: CfsHttp.lock is a leaf; callbacks run without it.
 */
#pragma once

#include <curl/curl.h>
#include <glib.h>
#include <stdbool.h>

typedef struct CfsHttp CfsHttp;
typedef struct CfsHttpRequest CfsHttpRequest;
/* A token bucket: requests that carry it start at most @rate a second
 * (after a burst of up to @burst), whatever exports and disks they are
 * of. Published limits are kept this way before a server throttles.
 * Reference counted; its tokens are the network thread's. */
typedef struct CfsHttpBucket CfsHttpBucket;

/* What a failed attempt means; a provider may say it for its own
 * answers (error codes in bodies and headers). */
typedef enum {
	CFS_HTTP_OK,		/* a success */
	CFS_HTTP_RETRY,		/* transient: try again after a backoff */
	CFS_HTTP_THROTTLE,	/* too fast: back off harder, fewer at once */
	CFS_HTTP_REAUTH,	/* the grant was refused: it ends with EACCES,
				 * and the caller may renew it and retry */
	CFS_HTTP_FINAL,		/* do not try again */
} CfsHttpClass;

/* Classify a finished attempt that libcurl completed (req->status,
 * resp_headers and the error body are set). Network thread; must not
 * block. */
typedef CfsHttpClass (*CfsHttpClassifyFn)(const CfsHttpRequest *req);

typedef enum {
	CFS_HTTP_AUTH_NONE,
	CFS_HTTP_AUTH_BASIC,
	CFS_HTTP_AUTH_NTLM,
} CfsHttpAuth;

/*
 * A provider section's HTTP settings, shared by its requests (reference
 * counted, immutable once a request holds it). Every field is optional.
 */
typedef struct {
	gint ref;
	bool insecure;		/* do not verify the peer */
	char *ca_file;		/* CA bundle to trust instead of the system's */
	char *thumbprint;	/* SHA-1 of the server certificate, 40 lower-case
				 * hex digits: trusted whatever signed it */
	char *client_cert;	/* PEM client certificate and key */
	char *client_key;
	CfsHttpAuth auth;
	char *username;
	char *password;		/* a secret: wiped when freed */
	CfsHttpClassifyFn classify;	/* NULL: cfs_http_classify_default */
} CfsHttpSettings;

typedef enum {
	CFS_HTTP_DEMAND,	/* a reader waits for it */
	CFS_HTTP_PREFETCH,	/* nobody waits yet */
	CFS_HTTP_N_PRIORITIES,
} CfsHttpPriority;

/*
 * Callbacks, all called on the network thread with no lock held.
 *  on_body:  a piece of the response body; return false to abort the
 *            transfer (it then ends with CFS_ERROR ECANCELED unless
 *            req->abort_ok was set, when it counts as a success).
 *  on_reset: a failed attempt will be retried: forget any partial body.
 *  on_done:  the request is over, @error NULL on success (a 2xx status).
 *            The request belongs to the callback from then on.
 */
typedef bool (*CfsHttpBodyFn)(CfsHttpRequest *req, const void *data,
			      gsize len);
typedef void (*CfsHttpResetFn)(CfsHttpRequest *req);
typedef void (*CfsHttpDoneFn)(CfsHttpRequest *req, const GError *error);
/* Before each attempt: authorise it (sign it again with a fresh date, put
 * the current token or SAS in). Network thread; must not block. Set
 * req->auth_headers (freed after the attempt) or change req->url. */
typedef bool (*CfsHttpAttemptFn)(CfsHttpRequest *req, GError **error);

struct CfsHttpRequest {
	/* Set by the submitter before cfs_http_submit(). */
	char *url;			/* owned; may hold secrets */
	struct curl_slist *headers;	/* owned */
	char *method;			/* owned; NULL: GET */
	GBytes *body;			/* owned; request body, or NULL */
	bool has_range;			/* send Range: bytes=start-end */
	guint64 range_start, range_end;	/* inclusive, as HTTP says */
	bool nobody;			/* HEAD-like: no body expected */
	CfsHttpPriority priority;
	guint max_attempts;		/* 0: the worker's default */
	guint timeout_s;		/* whole attempt; 0: none */
	CfsHttpBodyFn on_body;		/* NULL: collect into @response */
	CfsHttpResetFn on_reset;
	CfsHttpDoneFn on_done;
	CfsHttpAttemptFn on_attempt;
	gpointer attempt_data;		/* for on_attempt, freed with the
					 * request by attempt_data_free */
	GDestroyNotify attempt_data_free;
	gpointer user_data;
	CfsHttpSettings *settings;	/* owned reference, or NULL */
	bool follow_redirects;		/* to the same host, never https
					 * to http; off for signed requests */
	struct curl_slist *auth_headers;	/* this attempt's only */
	CfsHttpBucket *buckets[2];	/* owned references, or NULL: each
					 * attempt waits for a token of each */

	/* Filled by the worker; read them in on_body (status is known by
	 * then) and on_done. */
	long status;
	gint64 content_length;		/* -1 if not given */
	char *content_range;		/* "bytes a-b/total", or NULL */
	char *etag;
	char *last_modified;
	GByteArray *response;		/* body, when on_body is NULL */
	GHashTable *resp_headers;	/* lower-case name -> value */
	bool abort_ok;			/* set by on_body before it aborts */
	guint attempt;			/* 1 for the first */
	CfsHttpClass verdict;		/* of the last attempt */

	/* Private to the worker. */
	CfsHttp *http;
	CURL *easy;
	struct curl_slist *sent_headers;
	char *host;
	gint64 not_before;		/* monotonic µs, for retries */
	char errbuf[CURL_ERROR_SIZE];
};

typedef struct {
	guint max_attempts;	/* per request, first try included */
	guint max_connections;	/* total in flight */
	guint host_connections;	/* in flight per host, before throttling */
	guint connect_timeout_s;
	guint stall_timeout_s;	/* less than 1 KiB/s for this long: retry */
	double backoff_base_s;	/* first retry waits about this long */
	double backoff_max_s;
	bool insecure;		/* do not verify TLS peers, whatever a
				 * request's settings say */
} CfsHttpConfig;

/* New settings with every field off (reference 1). */
CfsHttpSettings *cfs_http_settings_new(void);
CfsHttpSettings *cfs_http_settings_ref(CfsHttpSettings *settings);
void cfs_http_settings_unref(CfsHttpSettings *settings);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(CfsHttpSettings, cfs_http_settings_unref)

/* Read insecure, ca_file, thumbprint, client_cert and client_key from a
 * config section into @settings, checking that files can be read and the
 * thumbprint is 20 hex bytes. Main thread. */
bool cfs_http_settings_load(CfsHttpSettings *settings, GKeyFile *conf,
			    const char *section, GError **error);

/* The classification without a provider's: 2xx OK; 401, 403 REAUTH;
 * 408, 500, 502, 504 and transport errors RETRY; 429, 503 THROTTLE;
 * the rest FINAL. Any thread. */
CfsHttpClass cfs_http_classify_default(const CfsHttpRequest *req);

/* The errno an HTTP error status stands for: 400 EINVAL, 401 and 403
 * EACCES, 404 ENOENT, 409 @conflict; else @fallback. Any thread. */
int cfs_http_status_errno(long status, int conflict, int fallback);

/* Replace *@error (what the worker said of a failed @req) by "@what:
 * @text (what it said)", or "@what: what it said" without @text, its code
 * the errno of the status (409 is @conflict). @text is the provider's
 * reading of the error body, or NULL. */
void cfs_http_explain(const CfsHttpRequest *req, const char *what,
		      const char *text, int conflict, GError **error);

/* True on the network thread, where nothing may block. */
bool cfs_http_on_network_thread(void);
/* Abort in debug builds when called on the network thread; put at the
 * top of every function that may block. */
#define cfs_assert_may_block() g_assert(!cfs_http_on_network_thread())

/* What the network thread did since it started; counters only grow. */
typedef struct {
	guint64 attempts;	/* requests started, retries included */
	guint64 retries;	/* attempts after a failed one */
	guint64 throttled;	/* answers that said "too fast" */
	guint64 failed;		/* requests that ended in an error */
} CfsHttpStats;

/* A snapshot of the counters. Any thread. */
void cfs_http_stats(CfsHttp *http, CfsHttpStats *stats);

/* A bucket of @rate tokens a second, holding at most @burst (at least
 * 1). Transfer full. Any thread. */
CfsHttpBucket *cfs_http_bucket_new(double rate, double burst);
CfsHttpBucket *cfs_http_bucket_ref(CfsHttpBucket *bucket);
void cfs_http_bucket_unref(CfsHttpBucket *bucket);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(CfsHttpBucket, cfs_http_bucket_unref)
/* Make each attempt of @req take a token of @bucket (a new reference;
 * at most two buckets). Before submitting. */
void cfs_http_request_add_bucket(CfsHttpRequest *req, CfsHttpBucket *bucket);

/* Default configuration; caller owns nothing. */
void cfs_http_config_init(CfsHttpConfig *config);

/* Start the network thread. Call after daemonizing. Transfer full. */
CfsHttp *cfs_http_new(const CfsHttpConfig *config, GError **error);

/* Stop: requests still queued or running end with ECANCELED, and so does
 * every request submitted from now on. Joins the thread. Any thread but
 * the network thread; more than once is fine. */
void cfs_http_stop(CfsHttp *http);
/* Stop if not yet, and free. No other thread may use @http any more. */
void cfs_http_free(CfsHttp *http);

/* A new request for @url (copied). Transfer full. */
CfsHttpRequest *cfs_http_request_new(const char *url);
void cfs_http_request_free(CfsHttpRequest *req);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(CfsHttpRequest, cfs_http_request_free)

/* The range of a 206 answer, from "Content-Range: bytes a-b/total": false
 * if there is none or it is not of that form. */
bool cfs_http_content_range(const CfsHttpRequest *req, guint64 *start,
			    guint64 *last, guint64 *total);

/* Add a "Name: value" header. */
void cfs_http_request_add_header(CfsHttpRequest *req, const char *header);
/* Use @settings (a new reference is taken; NULL: none). */
void cfs_http_request_set_settings(CfsHttpRequest *req,
				   CfsHttpSettings *settings);
/* A response header by lower-case name, or NULL. Borrowed. */
const char *cfs_http_response_header(const CfsHttpRequest *req,
				     const char *name);

/* Hand @req to the network thread (transfer full: on_done gets it back).
 * Any thread. */
void cfs_http_submit(CfsHttp *http, CfsHttpRequest *req);

/*
 * Run @req and wait for it; for control-plane calls (inventory, probes)
 * made from threads that may block, never the network thread (asserted).
 * on_done must be NULL: this sets it.
 * Returns false with @error on failure; @req stays the caller's.
 */
bool cfs_http_perform(CfsHttp *http, CfsHttpRequest *req, GError **error);

