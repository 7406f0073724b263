// SPDX-License-Identifier: MIT
/*
 * Keeping a source's grant alive (a SAS URL, a bearer token, temporary
 * credentials, block tokens): a timer renews it ahead of its expiry, and
 * a request refused with 401/403 asks for one renewal and is sent again
 * once. Renewals run on the control pool, one at a time per export;
 * requests go back to the network thread whatever the outcome, so a
 * chunk's pieces are only ever finished there.
 */
#include "common/error.h"
#include "fs/export-private.h"

/* Renew this long before the grant expires: a quarter of its lifetime,
 * at most five minutes. */
#define GRANT_MARGIN_MAX_US (300 * G_USEC_PER_SEC)
#define GRANT_TICK_S 1.0

static gint64 grant_margin(const CfsSource *src)
{
	gint64 expires = cfs_source_expiry(src);
	gint64 granted = __atomic_load_n(&src->granted, __ATOMIC_RELAXED);

	return MIN(GRANT_MARGIN_MAX_US, MAX(expires - granted, 0) / 4);
}

/* Control pool: one renewal, then every refused request is sent again. */
static void grant_renew(CfsExport *ex)
{
	CfsSource *src = ex->source;
	g_autoptr(GError) error = NULL;
	g_autoptr(GPtrArray) again = NULL;

	if (src->ops->renew(src, &error)) {
		__atomic_fetch_add(&src->grant_gen, 1, __ATOMIC_RELEASE);
		g_message("%s: grant renewed", ex->path);
	} else {
		g_prefix_error(&error, "renewing the grant: ");
		cfs_export_set_error(ex, error);
	}
	g_mutex_lock(&ex->lock);
	ex->renewing = false;
	again = g_steal_pointer(&ex->reauth);
	ex->reauth = g_ptr_array_new();
	g_mutex_unlock(&ex->lock);
	for (guint i = 0; i < again->len; i++)
		cfs_http_submit(ex->engine->ctx.http, again->pdata[i]);
}

static void grant_renew_job(gpointer data)
{
	CfsExport *ex = data;
	CfsEngine *engine = ex->engine;

	grant_renew(ex);
	cfs_engine_job_end(engine);
}

/* Start a renewal unless one runs. Export lock held. */
static bool grant_renew_locked(CfsExport *ex)
{
	if (ex->renewing)
		return false;
	ex->renewing = true;
	return true;
}

static void grant_tick(gpointer data)
{
	CfsExport *ex = data;
	CfsSource *src = ex->source;
	gint64 expires = cfs_source_expiry(src);
	bool renew;

	if (!expires ||
	    g_get_real_time() < expires - grant_margin(src))
		return;
	g_mutex_lock(&ex->lock);
	renew = grant_renew_locked(ex);
	g_mutex_unlock(&ex->lock);
	if (renew)
		grant_renew(ex);
}

void cfs_grant_start(CfsExport *ex)
{
	CfsTimer *timer;

	if (!ex->source->ops->renew)
		return;
	timer = cfs_timer_new(ex->engine->ctx.control, GRANT_TICK_S,
			      grant_tick, ex);
	g_mutex_lock(&ex->lock);
	g_assert(!ex->grant_timer);
	ex->grant_timer = timer;
	g_mutex_unlock(&ex->lock);
}

void cfs_grant_stop(CfsExport *ex)
{
	CfsTimer *timer;

	g_mutex_lock(&ex->lock);
	timer = g_steal_pointer(&ex->grant_timer);
	g_mutex_unlock(&ex->lock);
	cfs_timer_free(timer);
}

bool cfs_grant_reauth(CfsExport *ex, CfsHttpRequest *req, guint gen)
{
	CfsSource *src = ex->source;
	bool renew;

	if (!src->ops->renew)
		return false;
	req->attempt = 0;
	if (req->on_reset)
		req->on_reset(req);
	if (gen != __atomic_load_n(&src->grant_gen, __ATOMIC_ACQUIRE)) {
		/* Renewed since this attempt began: just send it again. */
		cfs_http_submit(ex->engine->ctx.http, req);
		return true;
	}
	g_mutex_lock(&ex->lock);
	g_ptr_array_add(ex->reauth, req);
	renew = grant_renew_locked(ex);
	g_mutex_unlock(&ex->lock);
	if (renew) {
		cfs_engine_job_begin(ex->engine);
		cfs_control_push(ex->engine->ctx.control, grant_renew_job, ex);
	}
	return true;
}
