// SPDX-License-Identifier: MIT
/*
 * The provider platform's small parts: control-pool timers, the rule that
 * nothing blocks the network thread, per-provider HTTP settings and
 * answer classes, ownership tags and provider sections.
 */
#include <string.h>
#include <unistd.h>

#include "common/control.h"
#include "common/error.h"
#include "common/http.h"
#include "providers/owner.h"
#include "providers/provider.h"

/* --- timers --- */

typedef struct {
	gint runs;
	gint running;
	gint overlaps;
	gint on_pool;
	guint sleep_ms;
} Tick;

static void tick(gpointer data)
{
	Tick *t = data;

	if (g_atomic_int_add(&t->running, 1) > 0)
		g_atomic_int_inc(&t->overlaps);
	if (cfs_control_on_pool())
		g_atomic_int_inc(&t->on_pool);
	g_usleep(t->sleep_ms * 1000);
	g_atomic_int_inc(&t->runs);
	g_atomic_int_add(&t->running, -1);
}

static void wait_runs(Tick *t, gint n)
{
	gint64 until = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;

	while (g_atomic_int_get(&t->runs) < n &&
	       g_get_monotonic_time() < until)
		g_usleep(1000);
	g_assert_cmpint(g_atomic_int_get(&t->runs), >=, n);
}

static void test_timer_repeats_on_pool(void)
{
	CfsControl *ctl = cfs_control_new(4);
	Tick t = { 0 };
	CfsTimer *timer = cfs_timer_new(ctl, 0.01, tick, &t);

	wait_runs(&t, 5);
	cfs_timer_free(timer);
	g_assert_cmpint(t.on_pool, ==, t.runs);
	g_assert_cmpint(t.overlaps, ==, 0);
	cfs_control_free(ctl);
}

/* A callback slower than its interval is never run twice at once, and
 * freeing the timer waits for the run in progress. */
static void test_timer_never_overlaps(void)
{
	CfsControl *ctl = cfs_control_new(8);
	Tick t = { .sleep_ms = 30 };
	CfsTimer *timer = cfs_timer_new(ctl, 0.002, tick, &t);
	gint runs;

	wait_runs(&t, 3);
	cfs_timer_free(timer);
	g_assert_cmpint(g_atomic_int_get(&t.running), ==, 0);
	runs = g_atomic_int_get(&t.runs);
	g_usleep(50 * 1000);
	g_assert_cmpint(g_atomic_int_get(&t.runs), ==, runs);
	g_assert_cmpint(t.overlaps, ==, 0);
	cfs_control_free(ctl);
}

static void test_timer_kick(void)
{
	CfsControl *ctl = cfs_control_new(2);
	Tick t = { 0 };
	CfsTimer *timer = cfs_timer_new(ctl, 3600, tick, &t);

	cfs_timer_kick(timer);
	wait_runs(&t, 1);
	cfs_timer_free(timer);
	g_assert_cmpint(t.runs, ==, 1);
	cfs_control_free(ctl);
}

static void push_job(gpointer data)
{
	g_atomic_int_inc((gint *)data);
}

static void test_control_push(void)
{
	CfsControl *ctl = cfs_control_new(3);
	gint done = 0;

	for (int i = 0; i < 100; i++)
		cfs_control_push(ctl, push_job, &done);
	cfs_control_free(ctl);	/* runs what is queued */
	g_assert_cmpint(done, ==, 100);
	g_assert_false(cfs_control_on_pool());
}

/* --- the network thread never blocks --- */

static GMutex net_lock;
static GCond net_cond;
static bool net_done;
static CfsHttp *net_http;

static void net_blocking_done(CfsHttpRequest *req, const GError *error)
{
	/* On the network thread: a blocking call must abort. */
	g_autoptr(CfsHttpRequest) again = cfs_http_request_new(req->url);

	cfs_http_perform(net_http, again, NULL);
	g_mutex_lock(&net_lock);
	net_done = true;
	g_cond_signal(&net_cond);
	g_mutex_unlock(&net_lock);
	cfs_http_request_free(req);
}

static void test_perform_on_network_thread_aborts(void)
{
	if (g_test_subprocess()) {
		CfsHttpConfig config;
		CfsHttpRequest *req;

		cfs_http_config_init(&config);
		net_http = cfs_http_new(&config, NULL);
		req = cfs_http_request_new("http://127.0.0.1:1/");
		req->max_attempts = 1;
		req->on_done = net_blocking_done;
		cfs_http_submit(net_http, req);
		g_mutex_lock(&net_lock);
		while (!net_done)
			g_cond_wait(&net_cond, &net_lock);
		g_mutex_unlock(&net_lock);
		return;
	}
	g_test_trap_subprocess(NULL, 20 * G_USEC_PER_SEC, 0);
	g_test_trap_assert_failed();
	g_test_trap_assert_stderr("*cfs_http_on_network_thread*");
	g_assert_false(cfs_http_on_network_thread());
}

/* Each attempt is authorised again: the hook runs before every try. */
static gint attempts_seen;

static bool count_attempt(CfsHttpRequest *req, GError **error)
{
	g_assert_true(cfs_http_on_network_thread());
	g_atomic_int_inc(&attempts_seen);
	req->auth_headers = curl_slist_append(req->auth_headers,
					      "X-Attempt: 1");
	return true;
}

static void test_attempt_hook_runs_per_attempt(void)
{
	CfsHttpConfig config;
	CfsHttp *http;
	g_autoptr(CfsHttpRequest) req = NULL;
	g_autoptr(GError) error = NULL;

	cfs_http_config_init(&config);
	config.backoff_base_s = 0.001;
	config.backoff_max_s = 0.002;
	http = cfs_http_new(&config, &error);
	g_assert_no_error(error);
	req = cfs_http_request_new("http://127.0.0.1:1/");
	req->max_attempts = 3;
	req->on_attempt = count_attempt;
	g_assert_false(cfs_http_perform(http, req, &error));
	g_assert_nonnull(error);
	g_assert_cmpint(attempts_seen, ==, 3);
	cfs_http_free(http);
}

/* --- settings and classes --- */

static GKeyFile *keyfile(const char *text)
{
	GKeyFile *kf = g_key_file_new();

	g_assert_true(g_key_file_load_from_data(kf, text, -1, 0, NULL));
	return kf;
}

static void test_settings_load(void)
{
	g_autoptr(GKeyFile) good = keyfile(
		"[p]\ninsecure = true\n"
		"thumbprint = AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:"
		"AB:CD:EF:01\n");
	g_autoptr(GKeyFile) bad_thumb = keyfile("[p]\nthumbprint = AB:CD\n");
	g_autoptr(GKeyFile) bad_bool = keyfile("[p]\ninsecure = maybe\n");
	g_autoptr(GKeyFile) no_ca = keyfile("[p]\nca_file = /nonexistent/ca\n");
	g_autoptr(CfsHttpSettings) s = cfs_http_settings_new();
	g_autoptr(GError) error = NULL;

	g_assert_true(cfs_http_settings_load(s, good, "p", &error));
	g_assert_no_error(error);
	g_assert_true(s->insecure);
	g_assert_cmpstr(s->thumbprint, ==,
			"abcdef0123456789abcdef0123456789abcdef01");
	g_assert_false(cfs_http_settings_load(s, bad_thumb, "p", &error));
	g_assert_nonnull(strstr(error->message, "thumbprint"));
	g_clear_error(&error);
	g_assert_false(cfs_http_settings_load(s, bad_bool, "p", &error));
	g_assert_nonnull(strstr(error->message, "insecure"));
	g_clear_error(&error);
	g_assert_false(cfs_http_settings_load(s, no_ca, "p", &error));
	g_assert_nonnull(strstr(error->message, "/nonexistent/ca"));
}

static void test_classify_default(void)
{
	static const struct {
		long status;
		CfsHttpClass want;
	} cases[] = {
		{ 200, CFS_HTTP_OK },	    { 206, CFS_HTTP_OK },
		{ 401, CFS_HTTP_REAUTH },   { 403, CFS_HTTP_REAUTH },
		{ 404, CFS_HTTP_FINAL },    { 400, CFS_HTTP_FINAL },
		{ 408, CFS_HTTP_RETRY },    { 500, CFS_HTTP_RETRY },
		{ 502, CFS_HTTP_RETRY },    { 429, CFS_HTTP_THROTTLE },
		{ 503, CFS_HTTP_THROTTLE },
	};
	g_autoptr(CfsHttpRequest) req = cfs_http_request_new("http://x/");

	for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
		req->status = cases[i].status;
		g_assert_cmpint(cfs_http_classify_default(req), ==,
				cases[i].want);
	}
}

/* --- ownership tags --- */

static void test_owner_tag(void)
{
	const char *tag;
	g_autofree char *dead = NULL, *other_cache = NULL;
	g_autofree char *other_machine = NULL;

	cfs_owner_init("/var/cache/cloudfs-test");
	tag = cfs_owner_tag();
	g_assert_nonnull(tag);
	g_assert_cmpuint(strlen(tag), <, 64);
	g_assert_cmpuint(strspn(tag, "abcdefghijklmnopqrstuvwxyz0123456789-"),
			 ==, strlen(tag));
	/* Ours: only at unmount. */
	g_assert_false(cfs_owner_is_stale(tag, false));
	g_assert_true(cfs_owner_is_stale(tag, true));
	/* Our pid with another start time: a process that is gone. */
	dead = cfs_owner_tag_for((guint)getpid(), 1);
	g_assert_true(cfs_owner_is_stale(dead, false));
	/* The same pid in another cache folder: not ours. */
	cfs_owner_init("/var/cache/other");
	other_cache = g_strdup(cfs_owner_tag());
	cfs_owner_init("/var/cache/cloudfs-test");
	g_assert_false(cfs_owner_is_stale(other_cache, true));
	/* Another machine, garbage, nothing. */
	other_machine = g_strdup_printf("0000000000000000%s", tag + 16);
	g_assert_false(cfs_owner_is_stale(other_machine, true));
	g_assert_false(cfs_owner_is_stale("", true));
	g_assert_false(cfs_owner_is_stale("cloudfs", true));
	g_assert_false(cfs_owner_is_stale(NULL, true));
	g_assert_false(cfs_owner_is_stale("a-b-c-d-e", true));
}

/* --- sections --- */

static void test_provider_sections(void)
{
	g_autofree char *folder = NULL;
	g_autoptr(GError) error = NULL;
	const CfsProviderOps *ops;

	ops = cfs_provider_for_section("aws", &folder, &error);
	g_assert_nonnull(ops);
	g_assert_cmpstr(folder, ==, "aws");
	g_clear_pointer(&folder, g_free);
	ops = cfs_provider_for_section("aws prod", &folder, &error);
	g_assert_nonnull(ops);
	g_assert_cmpstr(ops->name, ==, "aws");
	g_assert_cmpstr(folder, ==, "aws-prod");
	g_assert_null(cfs_provider_for_section("aws a/b", &folder, &error));
	g_assert_error(error, CFS_ERROR, EINVAL);
	g_clear_error(&error);
	g_assert_null(cfs_provider_for_section("bogus", &folder, &error));
	g_assert_error(error, CFS_ERROR, EINVAL);
}

int main(int argc, char *argv[])
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/control/timer-repeats-on-pool",
			test_timer_repeats_on_pool);
	g_test_add_func("/control/timer-never-overlaps",
			test_timer_never_overlaps);
	g_test_add_func("/control/timer-kick", test_timer_kick);
	g_test_add_func("/control/push", test_control_push);
	g_test_add_func("/http/perform-on-network-thread-aborts",
			test_perform_on_network_thread_aborts);
	g_test_add_func("/http/attempt-hook-per-attempt",
			test_attempt_hook_runs_per_attempt);
	g_test_add_func("/http/settings-load", test_settings_load);
	g_test_add_func("/http/classify-default", test_classify_default);
	g_test_add_func("/owner/tag", test_owner_tag);
	g_test_add_func("/providers/sections", test_provider_sections);
	return g_test_run();
}
