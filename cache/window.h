/* SPDX-License-Identifier: MIT */
/*
 * How many chunks of one export are fetched at once: a window that finds
 * the link's capacity by itself. It starts small and doubles each round
 * (a round is one window of chunks landing) while the rate of a round
 * beats the best one by a margin, and stops growing when it no longer
 * does, as TCP's slow start does. A throttling answer halves it. Once
 * settled it probes again, one step, now and then: a link may get faster.
 *
 * Pure arithmetic on the times it is given; the caller serialises calls
 * (the cache calls it under its lock).
 */
#pragma once

#include <glib.h>
#include <stdbool.h>

typedef struct {
	guint cap;		/* at most this many (parallel=N) */
	guint size;		/* allowed in flight now, 1..cap */
	guint landed;		/* chunks landed this round */
	guint64 bytes;		/* their bytes */
	gint64 start;		/* monotonic µs the round began; 0: not yet */
	double best;		/* best rate of a round at this size, B/s */
	guint flat;		/* rounds in a row that did not beat best */
	guint settled_rounds;	/* rounds since growth stopped */
	bool settled;		/* growth stopped */
	guint best_size;	/* size of the round that set best */
	guint probe_from;	/* size before a probe, 0: not probing */
	gint64 backoff_at;	/* µs of the last halving */
} CfsWindow;

/* Start at @start chunks in flight (at most @cap). */
void cfs_window_init(CfsWindow *w, guint start, guint cap);
/* A chunk of @bytes landed at @now (monotonic µs). May change size. */
void cfs_window_landed(CfsWindow *w, guint64 bytes, gint64 now);
/* The source said "too fast" (or a fetch failed) at @now: halve, at most
 * once per round, and stop growing. */
void cfs_window_backoff(CfsWindow *w, gint64 now);
