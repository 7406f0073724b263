// SPDX-License-Identifier: MIT
/*
 * The url provider: disk images that already sit behind a URL (http,
 * https: a web server, a presigned S3 URL, an Azure SAS URL) or a path
 * (file://: a local file or a mounted share). Each config key is a VM
 * with one disk; the URL path's extension names the disk's format.
 *
 * The inventory probes each image once (a one-byte ranged GET tells the
 * size and whether ranges work; a file tells its size and holes), and
 * probes again only the ones that failed, after a short while.
 */
#include <fcntl.h>
#include <json-c/json.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/secret.h"
#include "common/util.h"
#include "providers/provider.h"

#define URL_RETRY_FAILED_S 10
/* A stream without Content-Length may be this long at most. */
#define URL_STREAM_MAX (1ULL << 40)

typedef struct {
	char *name;		/* sanitised VM name */
	char *url;		/* as configured: may hold secrets */
	char *format;		/* from the path's extension */
	char *path;		/* file:// only: the local path */

	/* What the last probe found; protected by the list lock. */
	bool probed;
	gint64 probed_at;	/* monotonic µs */
	char *error;
	guint64 size;
	bool random;
	CfsExtentMap *map;
	char *identity;
	char *etag;		/* a strong ETag, or NULL */
	gint64 mtime;		/* Last-Modified or the file's, 0: unknown */
} UrlImage;

typedef struct {
	CfsProvider base;
	GPtrArray *images;	/* UrlImage* */
	CfsHttpSettings *settings;	/* [url] insecure, ca_file, … */
	char *mount_id;	/* this mount: what an image with no validator
			 * is cached under, so no other mount resumes it */
} UrlProvider;

static void url_image_free(UrlImage *img)
{
	g_free(img->name);
	cfs_secret_free(img->url);
	g_free(img->format);
	g_free(img->path);
	g_free(img->error);
	g_clear_pointer(&img->map, cfs_extent_map_unref);
	g_free(img->identity);
	g_free(img->etag);
	g_free(img);
}

/* The format named by the extension of the URL's path. */
static char *url_format(const char *url)
{
	g_autofree char *path = cfs_url_redact(url);
	const char *base = strrchr(path, '/');
	const char *dot;

	base = base ? base + 1 : path;
	dot = strrchr(base, '.');
	if (!dot || !dot[1] || g_ascii_strcasecmp(dot, ".img") == 0 ||
	    g_ascii_strcasecmp(dot, ".raw") == 0)
		return g_strdup("raw");
	return g_ascii_strdown(dot + 1, -1);
}

static bool url_parse_entry(UrlImage *img, GError **error)
{
	if (g_str_has_prefix(img->url, "http://") ||
	    g_str_has_prefix(img->url, "https://"))
		return true;
	if (g_str_has_prefix(img->url, "file://")) {
		g_autofree char *host = NULL;

		img->path = g_filename_from_uri(img->url, &host, NULL);
		if (!img->path || (host && *host &&
				   g_strcmp0(host, "localhost") != 0)) {
			g_set_error(error, CFS_ERROR, EINVAL,
				    "'%s' is not a local file:// URL "
				    "(file:///absolute/path)", img->url);
			return false;
		}
		return true;
	}
	g_set_error(error, CFS_ERROR, EINVAL,
		    "'%s' is not an http://, https:// or file:// URL",
		    img->url);
	return false;
}

/* Keys of the [url] section that are settings, not images: HTTP, and
 * the engine's (which VMs this mount shows). */
static const char *const url_setting_keys[] = {
	"insecure", "ca_file", "thumbprint", "client_cert", "client_key",
	"include", "exclude", "shard", NULL,
};

static CfsProvider *url_create(GKeyFile *conf, const char *section,
			       CfsContext *ctx, GError **error)
{
	g_autoptr(CfsHttpSettings) settings = cfs_http_settings_new();
	g_autoptr(GPtrArray) images =
		g_ptr_array_new_with_free_func((GDestroyNotify)url_image_free);
	g_auto(GStrv) keys = g_key_file_get_keys(conf, section, NULL, error);
	UrlProvider *prov;

	if (!keys || !cfs_http_settings_load(settings, conf, section, error))
		return NULL;
	for (char **k = keys; *k; k++) {
		UrlImage *img;

		if (g_strv_contains(url_setting_keys, *k))
			continue;
		img = g_new0(UrlImage, 1);
		g_ptr_array_add(images, img);
		img->name = cfs_name_sanitize(*k);
		img->url = g_key_file_get_string(conf, section, *k, error);
		if (!img->url)
			return NULL;
		g_strstrip(img->url);
		if (!url_parse_entry(img, error)) {
			g_prefix_error(error, "[%s] %s: ", section, *k);
			return NULL;
		}
		img->format = url_format(img->url);
		for (guint i = 0; i + 1 < images->len; i++) {
			UrlImage *other = images->pdata[i];

			if (g_str_equal(other->name, img->name)) {
				g_set_error(error, CFS_ERROR, EINVAL,
					    "[%s] %s: two images named '%s'",
					    section, *k, img->name);
				return NULL;
			}
		}
	}
	prov = g_new0(UrlProvider, 1);
	prov->base.ctx = ctx;
	prov->images = g_steal_pointer(&images);
	prov->settings = g_steal_pointer(&settings);
	prov->mount_id = g_uuid_string_random();
	return &prov->base;
}

static void url_free(CfsProvider *base)
{
	UrlProvider *prov = (UrlProvider *)base;

	g_ptr_array_unref(prov->images);
	cfs_http_settings_unref(prov->settings);
	g_free(prov->mount_id);
	g_free(prov);
}

/* --- probes --- */

static bool url_probe_abort(CfsHttpRequest *req, const void *data, gsize len)
{
	req->abort_ok = true;	/* headers are all we wanted */
	return false;
}

static bool url_probe_http(CfsProvider *base, UrlImage *img, GError **error)
{
	g_autoptr(CfsHttpRequest) req = cfs_http_request_new(img->url);
	g_autoptr(CfsExtentMap) map = NULL;
	guint64 start, last;

	req->has_range = true;
	req->range_start = 0;
	req->range_end = 0;
	req->on_body = url_probe_abort;
	req->max_attempts = 3;
	req->timeout_s = 60;
	cfs_http_request_set_settings(req, ((UrlProvider *)base)->settings);
	if (!cfs_http_perform(base->ctx->http, req, error))
		return false;
	if (req->status == 206 &&
	    cfs_http_content_range(req, &start, &last, &img->size)) {
		img->random = true;
	} else if (req->status == 200 && req->content_length >= 0) {
		img->size = (guint64)req->content_length;
		img->random = false;
	} else if (req->status == 200) {
		/* A stream whose length shows at its end. */
		img->size = CFS_SIZE_UNKNOWN;
		img->random = false;
	} else {
		g_set_error(error, CFS_ERROR, EIO,
			    "%s did not say the size of the image",
			    req->host);
		return false;
	}
	g_free(img->identity);
	img->identity = g_strdup_printf("size=%" G_GUINT64_FORMAT " etag=%s "
					"modified=%s", img->size,
					req->etag ? req->etag : "",
					req->last_modified ?
						req->last_modified : "");
	/* Without a validator, the bytes of another day may differ at the
	 * same size: what this mount cached is not resumed by another. */
	if (!req->etag && !req->last_modified) {
		char *weak = g_strdup_printf("%s mount=%s", img->identity,
					     ((UrlProvider *)base)->mount_id);

		g_free(img->identity);
		img->identity = weak;
	}
	img->mtime = req->last_modified ?
			     MAX(curl_getdate(req->last_modified, NULL), 0) : 0;
	g_free(img->etag);
	/* Weak ETags cannot be used with If-Match. */
	img->etag = req->etag && !g_str_has_prefix(req->etag, "W/") ?
			    g_strdup(req->etag) : NULL;
	if (img->size != CFS_SIZE_UNKNOWN)
		map = cfs_extent_map_new_full(img->size);
	g_clear_pointer(&img->map, cfs_extent_map_unref);
	img->map = g_steal_pointer(&map);
	return true;
}

/* The data extents of an open file, from SEEK_DATA/SEEK_HOLE. */
static CfsExtentMap *url_file_map(int fd, guint64 size)
{
	g_autoptr(GArray) ext = g_array_new(FALSE, FALSE, sizeof(CfsExtent));
	off_t pos = 0;

	while ((guint64)pos < size) {
		off_t data = lseek(fd, pos, SEEK_DATA);
		off_t hole;
		CfsExtent e;

		if (data < 0 && errno == ENXIO)
			break;
		if (data < 0)	/* no SEEK_DATA here: all data */
			return cfs_extent_map_new_full(size);
		hole = lseek(fd, data, SEEK_HOLE);
		if (hole < 0)
			hole = (off_t)size;
		e.offset = (guint64)data;
		e.length = (guint64)(hole - data);
		g_array_append_val(ext, e);
		pos = hole;
	}
	return cfs_extent_map_new(size, (CfsExtent *)(void *)ext->data,
				  ext->len);
}

static bool url_probe_file(UrlImage *img, GError **error)
{
	struct stat st;
	int fd = open(img->path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return cfs_set_errno(error, errno, img->path);
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		g_set_error(error, CFS_ERROR, EINVAL, "%s: not a regular file",
			    img->path);
		return false;
	}
	img->size = (guint64)st.st_size;
	img->random = true;
	img->mtime = st.st_mtim.tv_sec;
	g_clear_pointer(&img->map, cfs_extent_map_unref);
	img->map = url_file_map(fd, img->size);
	close(fd);
	g_free(img->identity);
	img->identity = g_strdup_printf("size=%" G_GUINT64_FORMAT " ino=%lu "
					"mtime=%ld.%09ld", img->size,
					(unsigned long)st.st_ino,
					(long)st.st_mtim.tv_sec,
					(long)st.st_mtim.tv_nsec);
	return true;
}

static void url_probe(CfsProvider *base, UrlImage *img)
{
	g_autoptr(GError) error = NULL;
	bool ok;

	if (img->probed && (!img->error ||
			    g_get_monotonic_time() - img->probed_at <
				    URL_RETRY_FAILED_S * G_USEC_PER_SEC))
		return;
	ok = img->path ? url_probe_file(img, &error) :
			 url_probe_http(base, img, &error);
	img->probed = true;
	img->probed_at = g_get_monotonic_time();
	g_clear_pointer(&img->error, g_free);
	if (!ok) {
		img->error = g_strdup(error->message);
		g_warning("url/%s: %s", img->name, error->message);
	}
}

static char *url_info_json(const UrlImage *img)
{
	g_autoptr(json_object) o = json_object_new_object();
	g_autofree char *shown = cfs_url_redact(img->url);

	json_object_object_add(o, "provider", json_object_new_string("url"));
	json_object_object_add(o, "name", json_object_new_string(img->name));
	json_object_object_add(o, "url", json_object_new_string(shown));
	json_object_object_add(o, "format",
			       json_object_new_string(img->format));
	if (img->error) {
		json_object_object_add(o, "error",
				       json_object_new_string(img->error));
	} else if (img->size == CFS_SIZE_UNKNOWN) {
		/* A stream without a length: known when it has ended. */
		json_object_object_add(o, "size", NULL);
		json_object_object_add(o, "source",
				       json_object_new_string("stream"));
	} else {
		json_object_object_add(o, "size",
				       json_object_new_int64((int64_t)img->size));
		json_object_object_add(o, "source", json_object_new_string(
			img->random ? "random" : "stream"));
		json_object_object_add(o, "data_bytes", json_object_new_int64(
			(int64_t)img->map->data_bytes));
	}
	return g_strdup_printf("%s\n", json_object_to_json_string_ext(o,
			       JSON_C_TO_STRING_PRETTY |
			       JSON_C_TO_STRING_NOSLASHESCAPE));
}

static bool url_list(CfsProvider *base, GPtrArray *vms, GError **error)
{
	UrlProvider *prov = (UrlProvider *)base;

	for (guint i = 0; i < prov->images->len; i++) {
		UrlImage *img = prov->images->pdata[i];
		CfsVm *vm = cfs_vm_new(img->name);

		url_probe(base, img);
		vm->info_json = url_info_json(img);
		vm->mtime = img->mtime;
		if (img->error) {
			vm->error = g_strdup(img->error);
		} else {
			CfsDisk *disk = cfs_disk_new("disk", img->format,
						     img->size);

			disk->map = img->map ? cfs_extent_map_ref(img->map) :
					       NULL;
			g_autofree char *shown = cfs_url_redact(img->url);

			/* Not the query string: a presigned or SAS URL that
			 * is rotated keeps its cache, and no signature
			 * reaches the cache folder. */
			disk->id = g_strdup_printf("%s %s", shown,
						   img->identity);
			disk->identity = g_strdup(disk->id);
			disk->priv = img;
			g_ptr_array_add(vm->disks, disk);
		}
		g_ptr_array_add(vms, vm);
	}
	return true;
}

/* --- sources --- */

typedef struct {
	char *url;
	char *path;
	char *etag;		/* sent as If-Match: a changed image fails */
	int fd;
} UrlSource;

static bool url_plan(CfsSource *src, guint64 off, guint64 len,
		     GArray *pieces, GError **error)
{
	UrlSource *us = src->priv;
	CfsSourcePiece piece = { cfs_http_request_new(us->url), off, len };

	if (src->random) {
		piece.req->has_range = true;
		piece.req->range_start = off;
		piece.req->range_end = off + len - 1;
	}
	if (us->etag) {
		g_autofree char *h = g_strdup_printf("If-Match: %s", us->etag);

		cfs_http_request_add_header(piece.req, h);
	}
	g_array_append_val(pieces, piece);
	return true;
}

static bool url_pread(CfsSource *src, void *buf, gsize len, guint64 off,
		      GError **error)
{
	UrlSource *us = src->priv;

	if (!cfs_pread_all(us->fd, buf, len, off, error)) {
		g_prefix_error(error, "%s: ", us->path);
		return false;
	}
	return true;
}

static void url_source_free(CfsSource *src)
{
	UrlSource *us = src->priv;

	if (us->fd >= 0)
		close(us->fd);
	cfs_secret_free(us->url);
	g_free(us->path);
	g_free(us->etag);
	g_free(us);
}

static const CfsSourceOps url_http_source_ops = {
	.plan = url_plan,
	.free = url_source_free,
};

static const CfsSourceOps url_file_source_ops = {
	.pread = url_pread,
	.free = url_source_free,
};

static CfsSource *url_export_start(CfsProvider *base, CfsDisk *disk,
				   CfsExportReport *report, GError **error)
{
	const UrlImage *img = disk->priv;
	UrlSource *us = g_new0(UrlSource, 1);
	CfsSource *src = cfs_source_new(NULL, us);

	us->fd = -1;
	us->url = g_strdup(img->url);
	us->etag = g_strdup(img->etag);
	src->settings = cfs_http_settings_ref(((UrlProvider *)base)->settings);
	src->size = disk->size;
	src->size_max = URL_STREAM_MAX;
	src->random = img->random;
	src->map = disk->map ? cfs_extent_map_ref(disk->map) : NULL;
	src->identity = g_strdup(disk->id);
	if (img->path) {
		us->path = g_strdup(img->path);
		src->ops = &url_file_source_ops;
		us->fd = open(img->path, O_RDONLY | O_CLOEXEC);
		if (us->fd < 0) {
			cfs_set_errno(error, errno, img->path);
			cfs_source_free(src);
			return NULL;
		}
	} else {
		src->ops = &url_http_source_ops;
	}
	cfs_export_report(report, NULL, 100.0);
	return src;
}

const CfsProviderOps cfs_url_provider = {
	.name = "url",
	.create = url_create,
	.free = url_free,
	.list = url_list,
	.export_start = url_export_start,
	/* No export_end: nothing is granted, the image is not ours. */
};
