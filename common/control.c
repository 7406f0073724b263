// SPDX-License-Identifier: MIT
/*
 * The control pool and its timers. One thread keeps the timers in order
 * of their next run and hands each due callback to the pool; a timer that
 * is still running when it falls due again waits for its next turn.
 */
#include <openssl/crypto.h>

#include "control.h"

struct CfsControl {
	GThreadPool *pool;
	GThread *thread;
	GMutex lock;
	GCond cond;		/* timers changed, or a run finished */
	GList *timers;		/* protected by lock: CfsTimer*, by due */
	bool stopping;		/* protected by lock */
};

struct CfsTimer {
	CfsControl *ctl;
	CfsControlFn fn;
	gpointer data;
	gint64 interval_us;
	gint64 due;		/* protected by ctl->lock; monotonic µs */
	bool running;		/* protected by ctl->lock */
	bool freed;		/* protected by ctl->lock */
};

typedef struct {
	CfsControlFn fn;
	gpointer data;
	CfsTimer *timer;	/* a timer's run, or NULL */
} ControlJob;

static GPrivate control_pool_thread;

bool cfs_control_on_pool(void)
{
	return g_private_get(&control_pool_thread) != NULL;
}

static void control_run(gpointer data, gpointer user_data)
{
	ControlJob *job = data;
	CfsTimer *timer = job->timer;

	g_private_set(&control_pool_thread, GINT_TO_POINTER(1));
	job->fn(job->data);
	g_free(job);
	/* Pool threads outlive the pool (GLib keeps idle ones): give back
	 * OpenSSL's per-thread state after each job, or it is never freed. */
	OPENSSL_thread_stop();
	if (!timer)
		return;
	g_mutex_lock(&timer->ctl->lock);
	timer->running = false;
	g_cond_broadcast(&timer->ctl->cond);
	g_mutex_unlock(&timer->ctl->lock);
}

static gint timer_cmp(gconstpointer a, gconstpointer b)
{
	const CfsTimer *x = a, *y = b;

	return x->due < y->due ? -1 : x->due > y->due;
}

/* Hand every due timer that is not running to the pool. Lock held. */
static void control_fire(CfsControl *ctl, gint64 now)
{
	while (ctl->timers && ((CfsTimer *)ctl->timers->data)->due <= now) {
		CfsTimer *timer = ctl->timers->data;
		ControlJob *job;

		ctl->timers = g_list_delete_link(ctl->timers, ctl->timers);
		timer->due = now + timer->interval_us;
		ctl->timers = g_list_insert_sorted(ctl->timers, timer,
						   timer_cmp);
		if (timer->running)
			continue;	/* still busy: skip this turn */
		timer->running = true;
		job = g_new0(ControlJob, 1);
		job->fn = timer->fn;
		job->data = timer->data;
		job->timer = timer;
		g_thread_pool_push(ctl->pool, job, NULL);
	}
}

static gpointer control_thread(gpointer data)
{
	CfsControl *ctl = data;

	g_mutex_lock(&ctl->lock);
	while (!ctl->stopping) {
		gint64 now = g_get_monotonic_time();

		control_fire(ctl, now);
		if (ctl->timers)
			g_cond_wait_until(&ctl->cond, &ctl->lock,
					  ((CfsTimer *)ctl->timers->data)->due);
		else
			g_cond_wait(&ctl->cond, &ctl->lock);
	}
	g_mutex_unlock(&ctl->lock);
	return NULL;
}

CfsControl *cfs_control_new(guint threads)
{
	CfsControl *ctl = g_new0(CfsControl, 1);

	g_mutex_init(&ctl->lock);
	g_cond_init(&ctl->cond);
	ctl->pool = g_thread_pool_new(control_run, NULL, (gint)threads, FALSE,
				      NULL);
	ctl->thread = g_thread_new("cfs-timers", control_thread, ctl);
	return ctl;
}

void cfs_control_free(CfsControl *ctl)
{
	if (!ctl)
		return;
	g_mutex_lock(&ctl->lock);
	g_assert(!ctl->timers);
	ctl->stopping = true;
	g_cond_broadcast(&ctl->cond);
	g_mutex_unlock(&ctl->lock);
	g_thread_join(ctl->thread);
	g_thread_pool_free(ctl->pool, FALSE, TRUE);
	g_mutex_clear(&ctl->lock);
	g_cond_clear(&ctl->cond);
	g_free(ctl);
}

void cfs_control_push(CfsControl *ctl, CfsControlFn fn, gpointer data)
{
	ControlJob *job = g_new0(ControlJob, 1);

	job->fn = fn;
	job->data = data;
	g_thread_pool_push(ctl->pool, job, NULL);
}

CfsTimer *cfs_timer_new(CfsControl *ctl, double interval_s, CfsControlFn fn,
			gpointer data)
{
	CfsTimer *timer = g_new0(CfsTimer, 1);

	timer->ctl = ctl;
	timer->fn = fn;
	timer->data = data;
	timer->interval_us = MAX((gint64)(interval_s * G_USEC_PER_SEC), 1000);
	g_mutex_lock(&ctl->lock);
	timer->due = g_get_monotonic_time() + timer->interval_us;
	ctl->timers = g_list_insert_sorted(ctl->timers, timer, timer_cmp);
	g_cond_broadcast(&ctl->cond);
	g_mutex_unlock(&ctl->lock);
	return timer;
}

void cfs_timer_kick(CfsTimer *timer)
{
	CfsControl *ctl = timer->ctl;

	g_mutex_lock(&ctl->lock);
	if (!timer->freed) {
		ctl->timers = g_list_remove(ctl->timers, timer);
		timer->due = g_get_monotonic_time();
		ctl->timers = g_list_insert_sorted(ctl->timers, timer,
						   timer_cmp);
		g_cond_broadcast(&ctl->cond);
	}
	g_mutex_unlock(&ctl->lock);
}

void cfs_timer_free(CfsTimer *timer)
{
	CfsControl *ctl;

	if (!timer)
		return;
	ctl = timer->ctl;
	g_mutex_lock(&ctl->lock);
	timer->freed = true;
	ctl->timers = g_list_remove(ctl->timers, timer);
	while (timer->running)
		g_cond_wait(&ctl->cond, &ctl->lock);
	g_mutex_unlock(&ctl->lock);
	g_free(timer);
}
