// SPDX-License-Identifier: MIT
/*
 * The fetch window: it grows on a link where more requests in flight pay,
 * stops where they no longer do, and halves on throttling.
 */
#include "cache/window.h"

#define MIB (1024.0 * 1024.0)

/* A link with @delay_us to the first byte and @conn_rate bytes/s per
 * request, and @total bytes/s for all: chunks of @chunk bytes land at
 * the rate the window allows. Runs @seconds; returns the window. */
static guint simulate(CfsWindow *w, double delay_us, double conn_rate,
		      double total, double chunk, double seconds)
{
	gint64 now = 1;

	while (now < seconds * G_USEC_PER_SEC) {
		double per = delay_us + chunk / conn_rate * G_USEC_PER_SEC;
		double rate = MIN(w->size * chunk / per * G_USEC_PER_SEC,
				  total);

		now += (gint64)(chunk / rate * G_USEC_PER_SEC);
		cfs_window_landed(w, (guint64)chunk, now);
	}
	return w->size;
}

static void test_grows_on_delayed_link(void)
{
	CfsWindow w;

	/* 30 ms, 64 MiB/s a connection, 1 GiB/s in all, 4 MiB chunks:
	 * ~11 chunks fill it. */
	cfs_window_init(&w, 4, 64);
	simulate(&w, 30000, 64 * MIB, 1024 * MIB, 4 * MIB, 10);
	g_assert_cmpuint(w.size, >=, 8);
	g_assert_cmpuint(w.size, <=, 32);
	g_assert_true(w.settled);
}

static void test_stays_where_more_does_not_pay(void)
{
	CfsWindow w;

	/* Loopback: one request already fills the link. */
	cfs_window_init(&w, 4, 64);
	simulate(&w, 100, 1600 * MIB, 1600 * MIB, 4 * MIB, 10);
	g_assert_cmpuint(w.size, <=, 16);
	g_assert_true(w.settled);
}

static void test_cap(void)
{
	CfsWindow w;

	cfs_window_init(&w, 4, 6);
	simulate(&w, 30000, 8 * MIB, 100000 * MIB, 512 * 1024.0, 10);
	g_assert_cmpuint(w.size, ==, 6);
	cfs_window_init(&w, 100, 6);
	g_assert_cmpuint(w.size, ==, 6);
}

static void test_backoff(void)
{
	CfsWindow w;
	gint64 t = 5 * G_USEC_PER_SEC;

	cfs_window_init(&w, 32, 64);
	cfs_window_backoff(&w, t);
	g_assert_cmpuint(w.size, ==, 16);
	/* A burst of answers to requests sent together is one signal. */
	cfs_window_backoff(&w, t + 1000);
	g_assert_cmpuint(w.size, ==, 16);
	/* Later ones halve again, down to one. */
	for (int i = 1; i <= 10; i++)
		cfs_window_backoff(&w, t + i * 2 * G_USEC_PER_SEC);
	g_assert_cmpuint(w.size, ==, 1);
	g_assert_true(w.settled);
	/* ... and it grows back, probing, when requests land well. */
	simulate(&w, 30000, 64 * MIB, 1024 * MIB, 4 * MIB, 60);
	g_assert_cmpuint(w.size, >, 1);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/window/grows-on-delayed-link",
			test_grows_on_delayed_link);
	g_test_add_func("/window/stays-where-more-does-not-pay",
			test_stays_where_more_does_not_pay);
	g_test_add_func("/window/cap", test_cap);
	g_test_add_func("/window/backoff", test_backoff);
	return g_test_run();
}
