/* SPDX-License-Identifier: MIT */
/*
 * The control plane: a pool of threads for work that may block (exports
 * that poll a cloud, inventories, renewing grants, cleanup) and timers
 * whose callbacks run on that pool. Nothing here runs on the network
 * thread, so what a job does may wait on the network.
 *
 * Lock order: CfsControl.lock, then a timer's lock; callbacks run with no
 * lock held.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>

typedef struct CfsControl CfsControl;
typedef struct CfsTimer CfsTimer;
typedef void (*CfsControlFn)(gpointer data);

/* Start the pool (up to @threads at once) and the timer thread. Main
 * thread, after daemonizing. Transfer full. */
CfsControl *cfs_control_new(guint threads);

/* Run jobs already queued, stop the timers and join the threads. Every
 * timer must have been freed. Main thread. */
void cfs_control_free(CfsControl *ctl);

/* Run @fn(@data) on a pool thread. Any thread. */
void cfs_control_push(CfsControl *ctl, CfsControlFn fn, gpointer data);

/*
 * Call @fn(@data) on the pool every @interval_s seconds, the first time
 * @interval_s from now. A callback that runs late is not run twice to
 * catch up, and two runs of one timer never overlap. Any thread.
 * Transfer full: free with cfs_timer_free().
 */
CfsTimer *cfs_timer_new(CfsControl *ctl, double interval_s, CfsControlFn fn,
			gpointer data);

/* Run the timer's callback as soon as possible (once), then go on at its
 * interval. Any thread. */
void cfs_timer_kick(CfsTimer *timer);

/* Stop and free: once this returns, the callback is not running and will
 * not run again. Any thread but the timer's own callback. NULL is fine. */
void cfs_timer_free(CfsTimer *timer);

/* True on a thread of the pool (work there may block). */
bool cfs_control_on_pool(void);
