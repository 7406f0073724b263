// SPDX-License-Identifier: MIT
/*
 * cloudfs-progress: a live view of every export under a path of a
 * cloudfs mount, read from its .progress files. One bar per disk file
 * with percent, bytes, rate, ETA, phase and errors, redrawn in place on a
 * terminal; plain lines when stdout is not one; --json for scripts.
 *
 *     cloudfs-progress [--once] [--json] [--interval SECONDS] [PATH]
 *
 * PATH is the mount, a folder in it, or a disk file (default: the
 * current folder). Exits when nothing is preparing or transferring any
 * more, after having seen something move (or at once with --once).
 */
#include <glib.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

typedef struct {
	char *path;
	GHashTable *kv;		/* key -> value, unquoted */
} Line;

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	stop = 1;
}

static void line_free(Line *l)
{
	g_free(l->path);
	g_hash_table_unref(l->kv);
	g_free(l);
}

static const char *line_get(const Line *l, const char *key)
{
	const char *v = g_hash_table_lookup(l->kv, key);

	return v ? v : "";
}

/* One token: up to a space outside quotes, with "..." and backslash
 * escapes (\\ \" \n \t \e \xHH) undone. */
static char *token_next(const char **p)
{
	GString *out = g_string_new(NULL);
	bool quoted = false;

	while (**p == ' ')
		(*p)++;
	for (; **p && (quoted || **p != ' '); (*p)++) {
		char c = **p;

		if (c == '"') {
			quoted = !quoted;
			continue;
		}
		if (c == '\\' && (*p)[1]) {
			(*p)++;
			c = **p;
			if (c == 'n')
				c = '\n';
			else if (c == 't')
				c = '\t';
			else if (c == 'e')
				c = '\033';
			else if (c == 'x' && g_ascii_isxdigit((*p)[1]) &&
				 g_ascii_isxdigit((*p)[2])) {
				c = (char)(g_ascii_xdigit_value((*p)[1]) * 16 +
					   g_ascii_xdigit_value((*p)[2]));
				*p += 2;
			}
		}
		g_string_append_c(out, c);
	}
	return g_string_free(out, FALSE);
}

static Line *line_parse(const char *text)
{
	Line *l = g_new0(Line, 1);
	const char *p = text;

	l->kv = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
	l->path = token_next(&p);
	while (*p) {
		char *tok = token_next(&p);
		char *eq = strchr(tok, '=');

		if (eq) {
			*eq = '\0';
			g_hash_table_replace(l->kv, g_strdup(tok),
					     g_strdup(eq + 1));
		}
		g_free(tok);
	}
	return l;
}

/* The .progress file that describes @path. */
static char *progress_file(const char *path)
{
	if (g_file_test(path, G_FILE_TEST_IS_DIR))
		return g_build_filename(path, ".progress", NULL);
	if (g_str_has_suffix(path, ".progress"))
		return g_strdup(path);
	return g_strdup_printf("%s.progress", path);
}

static GPtrArray *snapshot(const char *file, GError **error)
{
	g_autofree char *text = NULL;
	g_auto(GStrv) rows = NULL;
	GPtrArray *lines;

	if (!g_file_get_contents(file, &text, NULL, error))
		return NULL;
	lines = g_ptr_array_new_with_free_func((GDestroyNotify)line_free);
	rows = g_strsplit(text, "\n", -1);
	for (char **r = rows; *r; r++)
		if (**r)
			g_ptr_array_add(lines, line_parse(*r));
	return lines;
}

static bool moving(const Line *l)
{
	const char *state = line_get(l, "state");

	return g_str_equal(state, "preparing") ||
	       g_str_equal(state, "transferring") ||
	       g_str_equal(state, "listing");
}

static int terminal_width(void)
{
	struct winsize ws;

	if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 40)
		return ws.ws_col;
	return 80;
}

/* Printable: control characters and ESC from a name never reach the
 * terminal. */
static char *printable(const char *s)
{
	GString *out = g_string_new(NULL);

	for (const char *p = s; *p; p++)
		g_string_append_c(out, g_ascii_iscntrl(*p) ? '?' : *p);
	return g_string_free(out, FALSE);
}

static void print_bar(const Line *l, int width, bool tty)
{
	g_autofree char *path = printable(l->path);
	g_autofree char *err = printable(line_get(l, "error"));
	const char *state = line_get(l, "state");
	const char *phase = line_get(l, "phase");
	double pct = g_ascii_strtod(line_get(l, "percent"), NULL);
	int bar = MAX(10, width - 60), filled;
	g_autofree char *fill = NULL, *empty = NULL;

	pct = CLAMP(pct, 0.0, 100.0);
	filled = (int)(bar * pct / 100.0);
	fill = g_strnfill(filled, '#');
	empty = g_strnfill(bar - filled, '-');
	if (tty)
		printf("\033[2K");
	printf("%s\n  [%s%s] %5.1f%% %-12s %s/%s %s eta %s%s%s\n", path,
	       fill, empty, pct, state, line_get(l, "bytes"),
	       line_get(l, "total"), line_get(l, "rate"), line_get(l, "eta"),
	       g_str_equal(phase, "-") ? "" : " phase ",
	       g_str_equal(phase, "-") ? "" : phase);
	if (*err)
		printf("  error: %s\n", err);
}

static void print_json(const Line *l)
{
	json_object *o = json_object_new_object();
	GHashTableIter it;
	gpointer k, v;

	json_object_object_add(o, "path", json_object_new_string(l->path));
	g_hash_table_iter_init(&it, l->kv);
	while (g_hash_table_iter_next(&it, &k, &v))
		json_object_object_add(o, k, json_object_new_string(v));
	printf("%s\n", json_object_to_json_string_ext(o,
	       JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

/* Draw one snapshot; returns the number of screen lines used. */
static int draw(GPtrArray *lines, bool tty, bool json, bool all)
{
	int used = 0, width = terminal_width();

	for (guint i = 0; i < lines->len; i++) {
		Line *l = lines->pdata[i];

		if (!all && g_str_equal(line_get(l, "state"), "idle"))
			continue;
		if (json) {
			print_json(l);
			continue;
		}
		print_bar(l, width, tty);
		used += *line_get(l, "error") ? 3 : 2;
	}
	if (!json && used == 0) {
		printf("%sno export is moving\n", tty ? "\033[2K" : "");
		used = 1;
	}
	fflush(stdout);
	return used;
}

int main(int argc, char *argv[])
{
	gboolean once = FALSE, json = FALSE, all = FALSE;
	double interval = 1.0;
	GOptionEntry entries[] = {
		{ "once", '1', 0, G_OPTION_ARG_NONE, &once,
		  "print one snapshot and exit", NULL },
		{ "json", 'j', 0, G_OPTION_ARG_NONE, &json,
		  "one JSON object per export and snapshot", NULL },
		{ "all", 'a', 0, G_OPTION_ARG_NONE, &all,
		  "show idle files too", NULL },
		{ "interval", 'i', 0, G_OPTION_ARG_DOUBLE, &interval,
		  "seconds between snapshots (1)", "SECONDS" },
		{ NULL },
	};
	g_autoptr(GOptionContext) ctx = g_option_context_new(
		"[PATH] - watch the exports of a cloudfs mount");
	g_autoptr(GError) error = NULL;
	g_autofree char *file = NULL;
	bool tty = isatty(STDOUT_FILENO), seen = false;
	int drawn = 0;

	g_option_context_add_main_entries(ctx, entries, NULL);
	if (!g_option_context_parse(ctx, &argc, &argv, &error) || argc > 2 ||
	    interval < 0.05) {
		fprintf(stderr, "cloudfs-progress: %s\n",
			error ? error->message : "bad arguments (see --help)");
		return 2;
	}
	file = progress_file(argc == 2 ? argv[1] : ".");
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	tty = tty && !json;
	while (!stop) {
		g_autoptr(GPtrArray) lines = snapshot(file, &error);
		bool any = false;

		if (!lines) {
			fprintf(stderr, "cloudfs-progress: %s\n", error->message);
			return 1;
		}
		for (guint i = 0; i < lines->len; i++)
			any = any || moving(lines->pdata[i]);
		if (tty && drawn)
			printf("\033[%dA", drawn);	/* back to the top */
		drawn = draw(lines, tty, json, all || once || !any);
		seen = seen || any;
		if (once || (seen && !any))
			break;
		g_usleep((gulong)(interval * G_USEC_PER_SEC));
	}
	return 0;
}
