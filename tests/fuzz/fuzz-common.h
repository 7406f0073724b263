/* SPDX-License-Identifier: MIT */
/* Helpers shared by the libFuzzer targets: a cursor over the input. */
#pragma once

#include <glib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
	const uint8_t *p;
	size_t left;
} FuzzIn;

static inline guint64 fuzz_u64(FuzzIn *in)
{
	guint64 v = 0;
	size_t n = MIN(in->left, sizeof(v));

	memcpy(&v, in->p, n);
	in->p += n;
	in->left -= n;
	return v;
}

static inline guint8 fuzz_u8(FuzzIn *in)
{
	guint8 v = in->left ? in->p[0] : 0;

	if (in->left) {
		in->p++;
		in->left--;
	}
	return v;
}

static inline GLogWriterOutput fuzz_log(GLogLevelFlags level,
					const GLogField *fields, gsize n,
					gpointer data)
{
	/* A warning about a malformed input is the code doing its job; a
	 * critical is a broken precondition: a finding. */
	if (level & (G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_ERROR)) {
		g_log_writer_standard_streams(level, fields, n, data);
		abort();
	}
	return G_LOG_WRITER_HANDLED;
}

/* Once, from LLVMFuzzerInitialize. */
static inline void fuzz_quiet(void)
{
	g_log_set_writer_func(fuzz_log, NULL, NULL);
}
