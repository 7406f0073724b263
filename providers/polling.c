// SPDX-License-Identifier: MIT
/* Polling long operations with a growing wait and a deadline (polling.h). */
#include "common/error.h"
#include "providers/polling.h"

void cfs_poll_init(CfsPoll *poll, CfsExportReport *report, double first_s,
		   double max_s, double timeout_s)
{
	poll->report = report;
	poll->wait = first_s;
	poll->max = MAX(max_s, first_s);
	poll->deadline = timeout_s > 0 ?
		g_get_monotonic_time() + (gint64)(timeout_s * G_USEC_PER_SEC) :
		0;
}

bool cfs_poll_wait(CfsExportReport *report, double seconds, GError **error)
{
	if (!report) {
		g_usleep((gulong)(seconds * G_USEC_PER_SEC));
		return true;
	}
	if (cfs_export_wait(report, seconds))
		return true;
	g_set_error(error, CFS_ERROR, ECANCELED,
		    "cancelled: the export was given up or the file system "
		    "unmounted");
	return false;
}

bool cfs_poll_next(CfsPoll *poll, double hint_s, const char *what,
		   GError **error)
{
	double wait = MAX(poll->wait, MIN(hint_s, 600.0));

	if (poll->deadline) {
		gint64 left = poll->deadline - g_get_monotonic_time();

		if (left <= 0) {
			g_set_error(error, CFS_ERROR, ETIMEDOUT,
				    "%s: gave up waiting", what);
			return false;
		}
		wait = MIN(wait, (double)left / G_USEC_PER_SEC);
	}
	if (!cfs_poll_wait(poll->report, wait, error))
		return false;
	poll->wait = MIN(poll->wait * 1.5, poll->max);
	return true;
}
