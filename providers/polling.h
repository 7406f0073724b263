/* SPDX-License-Identifier: MIT */
/*
 * Polling a long operation (a snapshot, an export task, a build, an ARM
 * operation): a wait that grows by half each time up to a ceiling, that
 * the server's own hint (Retry-After) can lengthen, that ends at an
 * optional deadline, and that gives up at once when the file system is
 * unmounted or the export is cancelled. Control pool only.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>

#include "providers/provider.h"

typedef struct {
	CfsExportReport *report;	/* NULL: plain sleeps (cleanup) */
	double wait;			/* seconds before the next poll */
	double max;			/* the ceiling of @wait */
	gint64 deadline;		/* monotonic µs; 0: none */
} CfsPoll;

/* Start polling: the first wait @first_s, growing to @max_s; give up
 * after @timeout_s (0: never). */
void cfs_poll_init(CfsPoll *poll, CfsExportReport *report, double first_s,
		   double max_s, double timeout_s);

/* Wait before the next poll: the current wait, or @hint_s when the
 * server asked for longer (0: no hint). False with ECANCELED at unmount
 * or cancellation, ETIMEDOUT past the deadline (@what names the
 * operation in the error). */
bool cfs_poll_next(CfsPoll *poll, double hint_s, const char *what,
		   GError **error);

/* Wait @seconds once: false with ECANCELED at unmount or cancellation.
 * With no @report, a plain sleep. */
bool cfs_poll_wait(CfsExportReport *report, double seconds, GError **error);
