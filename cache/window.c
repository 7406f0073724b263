// SPDX-License-Identifier: MIT
/*
 * The fetch window of an export: grows while the rate grows, halves on
 * throttling. See window.h.
 */
#include "cache/window.h"

/* A round must beat the best rate by this much to count as growth: less
 * is noise, and more requests cost memory and the server's patience. */
#define GROWTH 1.1
/* Rounds without growth before the window stops growing. */
#define FLAT_ROUNDS 3
/* A round lasts at least this long (µs), so that a burst of chunks that
 * landed together does not look like a rate. */
#define ROUND_MIN_US (20 * 1000)
/* Settled windows probe one step larger after this many rounds. */
#define PROBE_ROUNDS 4

void cfs_window_init(CfsWindow *w, guint start, guint cap)
{
	*w = (CfsWindow){ .cap = MAX(cap, 1) };
	w->size = CLAMP(start, 1, w->cap);
	w->best_size = w->size;
}

static void window_round_end(CfsWindow *w, double rate)
{
	guint probe_from = w->probe_from;

	w->probe_from = 0;
	if (rate > w->best * GROWTH) {
		w->best = rate;
		w->best_size = w->size;
		w->flat = 0;
		if (!w->settled)
			w->size = MIN(w->size * 2, w->cap);
		return;
	}
	if (probe_from) {
		/* A larger window did not pay: back to what did. */
		w->size = probe_from;
		w->settled_rounds = 0;
		return;
	}
	w->best = MAX(w->best, rate);
	if (!w->settled && ++w->flat >= FLAT_ROUNDS) {
		/* The last doubling bought nothing: back to the size that
		 * gave the best rate. */
		w->settled = true;
		w->settled_rounds = 0;
		w->size = MAX(w->best_size, 1);
	}
	if (w->settled && ++w->settled_rounds >= PROBE_ROUNDS &&
	    w->size < w->cap) {
		/* A link may have become faster: try a step more, against
		 * what the current size gives now. */
		w->settled_rounds = 0;
		w->best = rate;
		w->probe_from = w->size;
		w->size = MIN(w->size + MAX(w->size / 4, 1), w->cap);
	}
}

void cfs_window_landed(CfsWindow *w, guint64 bytes, gint64 now)
{
	gint64 elapsed;

	if (!w->start) {
		/* The first chunk only starts the clock: the round's rate
		 * is of what lands after it. */
		w->start = now;
		return;
	}
	w->landed++;
	w->bytes += bytes;
	elapsed = now - w->start;
	if (w->landed < MAX(w->size, 2) || elapsed < ROUND_MIN_US)
		return;
	window_round_end(w, (double)w->bytes * G_USEC_PER_SEC /
				    (double)elapsed);
	w->landed = 0;
	w->bytes = 0;
	w->start = now;
}

void cfs_window_backoff(CfsWindow *w, gint64 now)
{
	/* One halving until a round lands (or a second passes): a burst
	 * of throttling answers to requests sent together is one signal. */
	if (w->backoff_at && w->backoff_at == w->start &&
	    now - w->backoff_at < G_USEC_PER_SEC)
		return;
	w->backoff_at = now;
	w->size = MAX(MIN(w->size, w->probe_from ? w->probe_from : w->size) / 2,
		      1);
	w->best_size = w->size;
	w->probe_from = 0;
	w->settled = true;
	w->settled_rounds = 0;
	w->flat = 0;
	w->best = 0;
	w->landed = 0;
	w->bytes = 0;
	w->start = now;
}
