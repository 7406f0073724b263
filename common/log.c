// SPDX-License-Identifier: MIT
/* One-line log writer for GLib's structured logging. */
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "error.h"
#include "log.h"

static FILE *log_file;
static bool log_debug;
static bool log_syslog;

static const char *log_level_name(GLogLevelFlags level)
{
	if (level & G_LOG_LEVEL_ERROR)
		return "ERROR";
	if (level & G_LOG_LEVEL_CRITICAL)
		return "CRITICAL";
	if (level & G_LOG_LEVEL_WARNING)
		return "WARNING";
	if (level & G_LOG_LEVEL_MESSAGE)
		return "MESSAGE";
	if (level & G_LOG_LEVEL_INFO)
		return "INFO";
	return "DEBUG";
}

static GLogWriterOutput log_writer(GLogLevelFlags level,
				   const GLogField *fields, gsize n_fields,
				   gpointer user_data)
{
	const char *message = NULL;
	g_autoptr(GDateTime) now = NULL;
	g_autofree char *stamp = NULL;

	if ((level & G_LOG_LEVEL_DEBUG) && !log_debug)
		return G_LOG_WRITER_HANDLED;
	for (gsize i = 0; i < n_fields; i++)
		if (strcmp(fields[i].key, "MESSAGE") == 0)
			message = fields[i].value;
	if (log_syslog) {
		syslog(level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL) ?
			       LOG_ERR :
		       level & G_LOG_LEVEL_WARNING ? LOG_WARNING :
		       level & G_LOG_LEVEL_DEBUG ? LOG_DEBUG : LOG_INFO,
		       "%s", message ? message : "");
		return G_LOG_WRITER_HANDLED;
	}
	now = g_date_time_new_now_local();
	stamp = g_date_time_format(now, "%H:%M:%S.%f");
	stamp[12] = '\0';	/* milliseconds are enough */
	fprintf(log_file ? log_file : stderr, "%s cloudfs[%d] %s: %s\n", stamp,
		(int)getpid(), log_level_name(level), message ? message : "");
	fflush(log_file ? log_file : stderr);
	return G_LOG_WRITER_HANDLED;
}

bool cfs_log_init(const char *path, bool debug, GError **error)
{
	log_debug = debug;
	if (path) {
		log_file = fopen(path, "ae");
		if (!log_file)
			return cfs_set_errno(error, errno, path);
	}
	g_log_set_writer_func(log_writer, NULL, NULL);
	return true;
}

void cfs_log_to_syslog(void)
{
	if (log_file)
		return;		/* a log file was asked for */
	openlog("cloudfs", LOG_PID, LOG_DAEMON);
	log_syslog = true;
}
