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
	gpointer user_data;

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

	/* Private to the worker. */
	CfsHttp *http;
	CURL *easy;
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
	bool insecure;		/* do not verify TLS peers */
	char *ca_file;		/* extra CA bundle, or NULL */
} CfsHttpConfig;

/* Default configuration; caller owns nothing. */
void cfs_http_config_init(CfsHttpConfig *config);

/* Start the network thread. Call after daemonizing. Transfer full. */
CfsHttp *cfs_http_new(const CfsHttpConfig *config, GError **error);

/* Finish: requests still queued or running end with ECANCELED. Joins the
 * thread. Any thread but the network thread. */
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

/* Hand @req to the network thread (transfer full: on_done gets it back).
 * Any thread. */
void cfs_http_submit(CfsHttp *http, CfsHttpRequest *req);

/*
 * Run @req and wait for it; for control-plane calls (inventory, probes)
 * made from threads that may block. on_done must be NULL: this sets it.
 * Returns false with @error on failure; @req stays the caller's.
 */
bool cfs_http_perform(CfsHttp *http, CfsHttpRequest *req, GError **error);

