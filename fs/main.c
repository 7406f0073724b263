// SPDX-License-Identifier: MIT
/*
 * cloudfs: the disks of cloud and hypervisor VMs as files.
 * Parses the command line and the config file (errors fail the mount,
 * before anything starts), mounts, starts the worker threads after
 * daemonizing, runs the FUSE session, and tears down in order.
 */
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "common/control.h"
#include "common/error.h"
#include "common/log.h"
#include "common/secret.h"
#include "common/util.h"
#include "fs/ops.h"

typedef struct {
	char *config;
	char *cache_dir;
	char *cache_size;
	char *min_free;
	char *chunk_size;
	char *formats;
	char *log;
	unsigned parallel;
	unsigned list_ttl;
	unsigned list_wait;
	unsigned stall_timeout;
	int verbose;
	int insecure;
	char *read_ahead;
	int uid;
	int gid;
	char *umask;
} CfsOptions;

#define CFS_OPT(t, p) { t, offsetof(CfsOptions, p), 1 }
static const struct fuse_opt cfs_opts[] = {
	CFS_OPT("config=%s", config),
	CFS_OPT("cache_dir=%s", cache_dir),
	CFS_OPT("cache_size=%s", cache_size),
	CFS_OPT("min_free=%s", min_free),
	CFS_OPT("chunk_size=%s", chunk_size),
	CFS_OPT("parallel=%u", parallel),
	CFS_OPT("formats=%s", formats),
	CFS_OPT("list_ttl=%u", list_ttl),
	CFS_OPT("list_wait=%u", list_wait),
	CFS_OPT("stall_timeout=%u", stall_timeout),
	CFS_OPT("log=%s", log),
	CFS_OPT("verbose", verbose),
	CFS_OPT("insecure", insecure),
	CFS_OPT("read_ahead=%s", read_ahead),
	CFS_OPT("uid=%d", uid),
	CFS_OPT("gid=%d", gid),
	CFS_OPT("umask=%s", umask),
	FUSE_OPT_END
};

/* Root's files live where root's do: a `sudo -E` keeps the user's $HOME
 * and $XDG_*, and root must not follow them into the user's folders. */
static char *default_config(void)
{
	if (geteuid() == 0)
		return g_strdup("/etc/cloudfs/cloudfs.conf");
	return g_build_filename(g_get_user_config_dir(), "cloudfs",
				"cloudfs.conf", NULL);
}

static char *default_cache_dir(void)
{
	if (geteuid() == 0)
		return g_strdup("/var/cache/cloudfs");
	return g_build_filename(g_get_user_cache_dir(), "cloudfs", NULL);
}

static void usage(const char *prog)
{
	g_autofree char *config = default_config();
	g_autofree char *cache_dir = default_cache_dir();

	printf("usage: %s [options] [SOURCE] MOUNTPOINT\n\n"
	       "Presents the disks of cloud and hypervisor VMs as files.\n"
	       "SOURCE is ignored (fstab: cloudfs /mnt/clouds fuse.cloudfs "
	       "OPTIONS 0 0).\n\n"
	       "Configuration:\n"
	       "    -o config=FILE       config file (%s)\n"
	       "\nCache:\n"
	       "    -o cache_dir=DIR     cache folder (%s)\n"
	       "    -o cache_size=SIZE   disk data to keep (8G; 0: no limit)\n"
	       "    -o min_free=SIZE     free space to leave on the cache's "
	       "disk (1G)\n"
	       "    -o chunk_size=SIZE   unit of transfer and caching (4M)\n"
	       "\nTransfers:\n"
	       "    -o parallel=N        most chunks in flight per export; "
	       "fewer while\n"
	       "                         more do not pay (64)\n"
	       "    -o stall_timeout=SECONDS  retry a transfer this long under "
	       "1 KiB/s (30)\n"
	       "    -o read_ahead=SIZE   kernel read-ahead of the mount (1M)\n"
	       "    -o insecure          do not verify TLS certificates, for "
	       "every provider (off)\n"
	       "\nFiles:\n"
	       "    -o formats=LIST      extra views of each disk, e.g. "
	       "raw:vmdk:qcow2\n"
	       "                         (raw, vhd, vmdk, vhdx, qcow2; none)\n"
	       "    -o uid=N,gid=N       owner of every file (the mounting user)\n"
	       "    -o umask=M           taken from 0444 (files) and 0555\n"
	       "                         (folders): 0277 makes them 0400/0500\n"
	       "                         (the default); with allow_other, 0222\n"
	       "                         lets every local user read every disk\n"
	       "\nInventory:\n"
	       "    -o list_ttl=SECONDS  how long an inventory is trusted (60)\n"
	       "    -o list_wait=MS      how long a provider's folder waits "
	       "for its first\n"
	       "                         listing (3000)\n"
	       "\nLogging:\n"
	       "    -o log=FILE          log to FILE (stderr with -f, else "
	       "syslog)\n"
	       "    -o verbose           log debug messages (off)\n\n",
	       prog, config, cache_dir);
}

static bool parse_size_opt(const char *name, const char *text, guint64 dflt,
			   guint64 *out, GError **error)
{
	if (!text) {
		*out = dflt;
		return true;
	}
	if (!cfs_parse_size(text, out, error)) {
		g_prefix_error(error, "option %s: ", name);
		return false;
	}
	return true;
}

static bool load_providers(CfsFs *fs, const char *path, bool given,
			   GError **error)
{
	g_autoptr(GKeyFile) conf = g_key_file_new();
	g_auto(GStrv) groups = NULL;
	g_autoptr(GError) local = NULL;

	fs->slots = g_ptr_array_new();
	if (!g_key_file_load_from_file(conf, path, G_KEY_FILE_NONE, &local)) {
		if (!given && g_error_matches(local, G_FILE_ERROR,
					      G_FILE_ERROR_NOENT)) {
			g_message("no config file %s: nothing to show", path);
			return true;
		}
		g_set_error(error, CFS_ERROR, EINVAL, "config file %s: %s",
			    path, local->message);
		return false;
	}
	groups = g_key_file_get_groups(conf, NULL);
	for (char **g = groups; *g; g++) {
		g_autofree char *folder = NULL;
		const CfsProviderOps *ops;
		CfsProviderSlot *slot;
		CfsProvider *prov;

		ops = cfs_provider_for_section(*g, &folder, &local);
		for (guint i = 0; ops && i < fs->slots->len; i++) {
			CfsProviderSlot *other = fs->slots->pdata[i];

			if (g_str_equal(other->prov->name, folder))
				g_set_error(&local, CFS_ERROR, EINVAL,
					    "sections [%s] and another both "
					    "make the folder %s", *g, folder);
		}
		if (ops && !local)
			prov = ops->create(conf, *g, &fs->engine.ctx, &local);
		else
			prov = NULL;
		if (!prov) {
			g_set_error(error, CFS_ERROR, EINVAL,
				    "config file %s: %s", path, local->message);
			return false;
		}
		prov->ops = ops;
		prov->ctx = &fs->engine.ctx;
		prov->name = g_steal_pointer(&folder);
		slot = g_new0(CfsProviderSlot, 1);
		slot->prov = prov;
		g_mutex_init(&slot->lock);
		g_cond_init(&slot->cond);
		g_ptr_array_add(fs->slots, slot);
		if (!cfs_slot_load_filters(slot, conf, *g, &local)) {
			g_set_error(error, CFS_ERROR, EINVAL,
				    "config file %s: %s", path, local->message);
			return false;
		}
	}
	return true;
}

static bool parse_umask(const char *text, mode_t *out, GError **error)
{
	guint64 value = 0277;
	char *end = NULL;

	if (text) {
		value = g_ascii_strtoull(text, &end, 8);
		if (!*text || *end || value > 0777) {
			g_set_error(error, CFS_ERROR, EINVAL, "option umask: "
				    "an octal mode such as 0277 or 0022");
			return false;
		}
	}
	*out = (mode_t)value;
	return true;
}

/* The names of the formats= views, for the providers (CfsContext):
 * set before their create. The strings are the formats' own. */
static void formats_for_providers(CfsFs *fs)
{
	const char **names = g_new0(const char *, fs->views->len + 1);

	for (guint i = 0; i < fs->views->len; i++)
		names[i] = ((const CfsFormat *)fs->views->pdata[i])->name;
	fs->engine.ctx.formats = names;
}

static bool parse_formats(CfsFs *fs, const char *list, GError **error)
{
	g_auto(GStrv) names = NULL;

	fs->views = g_ptr_array_new();
	if (!list) {
		formats_for_providers(fs);
		return true;
	}
	names = g_strsplit_set(list, ":;", -1);
	for (char **n = names; *n; n++) {
		const CfsFormat *fmt;

		if (!**n)
			continue;
		fmt = cfs_format_find(*n);
		if (!fmt) {
			g_set_error(error, CFS_ERROR, EINVAL,
				    "option formats: unknown format '%s' "
				    "(raw, vhd, vmdk, vhdx, qcow2)", *n);
			return false;
		}
		g_ptr_array_add(fs->views, (gpointer)fmt);
	}
	formats_for_providers(fs);
	return true;
}

/* FUSE reads arrive in pieces of the kernel's read-ahead: 1 MiB pieces
 * read much faster than the default 128 KiB (DESIGN.md). Runs once the
 * session serves, since stat() of the mount point asks it. */
static gpointer tune_read_ahead(gpointer data)
{
	CfsFs *fs = data;
	g_autofree char *path = NULL, *value = NULL;
	struct stat st;
	int fd;

	if (stat(fs->mountpoint, &st) < 0)
		return NULL;
	path = g_strdup_printf("/sys/class/bdi/%u:%u/read_ahead_kb",
			       major(st.st_dev), minor(st.st_dev));
	value = g_strdup_printf("%u", fs->read_ahead_kb);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, value, strlen(value)) < 0)
		g_debug("cannot set %s: %s", path, g_strerror(errno));
	else
		g_debug("%s = %s", path, value);
	if (fd >= 0)
		close(fd);
	return NULL;
}

static void slots_free(CfsFs *fs)
{
	for (guint i = 0; fs->slots && i < fs->slots->len; i++) {
		CfsProviderSlot *slot = fs->slots->pdata[i];

		g_autofree char *name = slot->prov->name;

		slot->prov->ops->free(slot->prov);
		g_strfreev(slot->include);
		g_strfreev(slot->exclude);
		g_mutex_clear(&slot->lock);
		g_cond_clear(&slot->cond);
		g_free(slot->error);
		g_free(slot);
	}
	g_clear_pointer(&fs->slots, g_ptr_array_unref);
	g_clear_pointer(&fs->views, g_ptr_array_unref);
	g_free((gpointer)fs->engine.ctx.formats);
	fs->engine.ctx.formats = NULL;
}

/*
 * mount(8) runs "cloudfs SOURCE MOUNTPOINT -o …" for an fstab line of
 * type fuse.cloudfs: with two operands, the first is that source (any
 * word; "cloudfs" by convention) and is dropped.
 */
static int drop_source_operand(int argc, char *argv[])
{
	int operands[2], n = 0;

	for (int i = 1; i < argc && n <= 2; i++) {
		if (g_str_equal(argv[i], "-o")) {
			i++;	/* its value */
			continue;
		}
		if (argv[i][0] == '-')
			continue;
		if (n < 2)
			operands[n] = i;
		n++;
	}
	if (n != 2)
		return argc;
	memmove(&argv[operands[0]], &argv[operands[0] + 1],
		(size_t)(argc - operands[0]) * sizeof(char *));
	return argc - 1;
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_cmdline_opts cmd = { 0 };
	struct fuse_loop_config loop = { .clone_fd = 0,
					 .max_idle_threads = 16 };
	CfsOptions opts = { .parallel = 64, .list_ttl = 60,
			    .list_wait = 3000, .stall_timeout = 30,
			    .uid = -1, .gid = -1 };
	CfsFs fs = { 0 };
	struct fuse_session *se = NULL;
	g_autoptr(GError) error = NULL;
	g_autofree char *config = NULL, *cache_dir = NULL;
	guint64 cache_size, min_free, chunk_size, read_ahead;
	CfsHttpConfig http_config;
	GThread *tuner = NULL;
	int ret = 1;
	char max_read[32];

	/* Memory holds secrets: no core dumps, no ptrace by other users. */
	cfs_process_harden();
	argc = drop_source_operand(argc, argv);
	args.argc = argc;
	args.argv = argv;
	if (fuse_opt_parse(&args, &opts, cfs_opts, NULL) != 0 ||
	    fuse_parse_cmdline(&args, &cmd) != 0)
		return 1;
	if (cmd.show_version) {
		printf("cloudfs %s\nlibfuse %s\n%s\n%s\n", CFS_VERSION,
		       fuse_pkgversion(), curl_version(),
		       OpenSSL_version(OPENSSL_VERSION));
		ret = 0;
		goto out_args;
	}
	if (cmd.show_help) {
		usage(argv[0]);
		fuse_cmdline_help();
		fuse_lowlevel_help();
		ret = 0;
		goto out_args;
	}
	if (!cmd.mountpoint) {
		fprintf(stderr, "%s: no mount point (see --help)\n", argv[0]);
		goto out_args;
	}
	if (!cfs_log_init(opts.log, opts.verbose, &error))
		goto fail;

	config = opts.config ? g_strdup(opts.config) : default_config();
	cache_dir = opts.cache_dir ? g_strdup(opts.cache_dir) :
				     default_cache_dir();
	if (!parse_size_opt("cache_size", opts.cache_size, 8ULL << 30,
			    &cache_size, &error) ||
	    !parse_size_opt("min_free", opts.min_free, 1ULL << 30, &min_free,
			    &error) ||
	    !parse_size_opt("chunk_size", opts.chunk_size, 4 << 20,
			    &chunk_size, &error) ||
	    !parse_size_opt("read_ahead", opts.read_ahead, 1 << 20,
			    &read_ahead, &error))
		goto fail;
	if (chunk_size < 64 * 1024 || chunk_size > 256 << 20 ||
	    (chunk_size & (chunk_size - 1))) {
		g_set_error(&error, CFS_ERROR, EINVAL, "option chunk_size: "
			    "a power of two from 64K to 256M");
		goto fail;
	}
	if (!parse_umask(opts.umask, &fs.umask, &error))
		goto fail;
	if (opts.stall_timeout < 1) {
		g_set_error(&error, CFS_ERROR, EINVAL,
			    "option stall_timeout: at least 1 second");
		goto fail;
	}
	if (opts.parallel < 1 || opts.parallel > 64) {
		g_set_error(&error, CFS_ERROR, EINVAL,
			    "option parallel: from 1 to 64");
		goto fail;
	}
	cfs_owner_init(cache_dir);
	if (!parse_formats(&fs, opts.formats, &error) ||
	    !load_providers(&fs, config, opts.config != NULL, &error))
		goto fail;
	fs.engine.store = cfs_store_new(cache_dir, cache_size, min_free,
					&error);
	if (!fs.engine.store)
		goto fail;
	fs.engine.chunk_size = chunk_size;
	fs.engine.parallel = opts.parallel;
	fs.list_ttl_s = opts.list_ttl;
	fs.list_wait_ms = opts.list_wait;
	fs.uid = opts.uid >= 0 ? (uid_t)opts.uid : getuid();
	fs.gid = opts.gid >= 0 ? (gid_t)opts.gid : getgid();

	fs.read_ahead_kb = (guint)(read_ahead / 1024);
	g_snprintf(max_read, sizeof(max_read), "-omax_read=%u", CFS_MAX_READ);
	fs.mountpoint = cmd.mountpoint;
	cfs_tree_init(&fs);

	/* The kernel checks modes and owners (uid, gid, umask): with
	 * allow_other, other users get only what the modes give them. */
	fuse_opt_add_arg(&args, "-oro,fsname=cloudfs,subtype=cloudfs,"
			 "default_permissions");
	fuse_opt_add_arg(&args, max_read);
	se = fuse_session_new(&args, &cfs_fuse_ops, sizeof(cfs_fuse_ops), &fs);
	if (!se)
		goto out_tree;	/* libfuse said which option it did not know */
	fs.se = se;
	if (fuse_set_signal_handlers(se) != 0)
		goto out_session;
	if (fuse_session_mount(se, cmd.mountpoint) != 0)
		goto out_signals;
	fuse_daemonize(cmd.foreground);
	if (!cmd.foreground)
		cfs_log_to_syslog();

	/* Threads only after daemonizing. */
	curl_global_init(CURL_GLOBAL_DEFAULT);
	cfs_http_config_init(&http_config);
	http_config.insecure = opts.insecure;
	http_config.stall_timeout_s = opts.stall_timeout;
	fs.engine.ctx.http = cfs_http_new(&http_config, &error);
	if (!fs.engine.ctx.http)
		goto out_unmount;
	fs.engine.ctx.control = cfs_control_new(32);
	cfs_engine_start(&fs.engine);
	cfs_tree_start(&fs);
	g_message("mounted on %s (cache %s)", cmd.mountpoint, cache_dir);
	tuner = g_thread_new("cfs-tune", tune_read_ahead, &fs);
	/* Negative: a failure; positive: the signal that ended the loop
	 * (SIGTERM, SIGINT), a clean exit like an unmount. */
	ret = fuse_session_loop_mt(se, &loop) < 0;
	g_thread_join(tuner);

	/* Exports still preparing give up; what providers granted is given
	 * back while the network thread runs; then reads still parked end
	 * with it, and the exports go. */
	cfs_engine_stop(&fs.engine);
	cfs_tree_end_exports(&fs);
	cfs_tree_stop(&fs);
	/* A listing still running fails fast once the network stops. */
	cfs_http_stop(fs.engine.ctx.http);
	cfs_control_free(fs.engine.ctx.control);
	cfs_http_free(fs.engine.ctx.http);
	curl_global_cleanup();
out_unmount:
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_session:
	fuse_session_destroy(se);
out_tree:
	cfs_tree_free(&fs);
	cfs_store_free(fs.engine.store);
fail:
	slots_free(&fs);
	if (error) {
		fprintf(stderr, "cloudfs: %s\n", error->message);
		ret = 1;
	}
out_args:
	free(cmd.mountpoint);
	fuse_opt_free_args(&args);
	g_free(opts.config);
	g_free(opts.cache_dir);
	g_free(opts.cache_size);
	g_free(opts.min_free);
	g_free(opts.chunk_size);
	g_free(opts.formats);
	g_free(opts.log);
	g_free(opts.read_ahead);
	g_free(opts.umask);
	return ret;
}
