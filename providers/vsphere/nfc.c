// SPDX-License-Identifier: MIT
/*
 * NFC exports: ExportVm gives an HttpNfcLease; once it is ready, each
 * disk is one deviceUrl whose GET streams a streamOptimized VMDK (maybe
 * without Range or Content-Length). One lease per VM serves all of its
 * disks; a timer keeps it alive with HttpNfcLeaseProgress, and when the
 * last disk's export ends it is completed, or aborted if a download
 * failed or the lease broke.
 */
#include <string.h>

#include "common/error.h"
#include "common/secret.h"
#include "providers/vsphere/vsphere-private.h"

/* The longest a lease waits to be ready. */
#define VS_LEASE_READY_S 600

struct VsLease {
	VsProvider *prov;
	gint ref; /* protected by prov->lock */
	VsRef lease;
	char *vm_name;
	char *vm_key;	  /* the VM's moref value: key in prov->leases */
	xmlDoc *info_doc; /* the lease's info */
	xmlNode *info;
	CfsTimer *timer; /* keep-alive */

	GMutex lock;  /* held only to read or set what follows */
	bool broken;  /* the lease ended or cannot be kept */
	bool given_up; /* an export of its disks ended incomplete */
	char *error;
	guint ended; /* disk exports ended */
	guint disks; /* deviceUrls of disks */
};

typedef struct {
	VsLease *lease;
	char *url;
	bool cookie; /* the server's own host: send the session */
	char *what;
	guint gen;
} NfcSource;

static void lease_break(VsLease *l, const char *why)
{
	g_mutex_lock(&l->lock);
	if (!l->broken) {
		l->broken = true;
		l->error = g_strdup(why);
	}
	g_mutex_unlock(&l->lock);
}

/* Keep-alive: control pool, every interval until the lease ends. */
static void lease_tick(gpointer data)
{
	VsLease *l = data;
	g_autoptr(GError) error = NULL;
	g_autoptr(xmlDoc) doc = NULL;
	g_autofree char *args = NULL;
	xmlNode *resp;
	bool broken;

	g_mutex_lock(&l->lock);
	broken = l->broken;
	args = g_strdup_printf("<percent>%u</percent>",
			       MIN(l->ended * 100 / MAX(l->disks, 1), 99));
	g_mutex_unlock(&l->lock);
	if (broken)
		return;
	doc = vs_call(l->prov, "HttpNfcLeaseProgress", &l->lease, args, &resp,
		      NULL, &error);
	if (!doc) {
		g_warning("%s: lease %s of %s: %s", l->prov->base.name,
			  l->lease.value, l->vm_name, error->message);
		lease_break(l, error->message);
	}
}

static void lease_finish(VsLease *l)
{
	g_autoptr(GError) error = NULL;
	g_autoptr(xmlDoc) doc = NULL;
	const char *method;
	xmlNode *resp;
	bool broken;

	cfs_timer_free(g_steal_pointer(&l->timer));
	g_mutex_lock(&l->lock);
	broken = l->broken || l->given_up;
	g_mutex_unlock(&l->lock);
	method = broken ? "HttpNfcLeaseAbort" : "HttpNfcLeaseComplete";
	doc = vs_call(l->prov, method, &l->lease, NULL, &resp, NULL, &error);
	if (doc)
		g_message("%s: lease %s of %s %s", l->prov->base.name,
			  l->lease.value, l->vm_name,
			  broken ? "aborted" : "completed");
	else
		g_warning("%s: %s of lease %s: %s (the lease times out by "
			  "itself)",
			  l->prov->base.name, method, l->lease.value,
			  error->message);
}

static void lease_free(VsLease *l)
{
	vs_ref_clear(&l->lease);
	g_free(l->vm_name);
	g_free(l->vm_key);
	if (l->info_doc)
		xmlFreeDoc(l->info_doc);
	g_free(l->error);
	g_mutex_clear(&l->lock);
	g_free(l);
}

void vs_lease_unref(VsLease *l)
{
	VsProvider *prov = l->prov;
	bool last;

	g_mutex_lock(&prov->lock);
	last = --l->ref == 0;
	if (last && g_hash_table_lookup(prov->leases, l->vm_key) == l)
		g_hash_table_remove(prov->leases, l->vm_key);
	g_mutex_unlock(&prov->lock);
	if (!last)
		return;
	lease_finish(l);
	lease_free(l);
}

/* Wait for state ready; its info into @l. */
static bool lease_wait(VsProvider *prov, VsLease *l, CfsExportReport *report,
		       GError **error)
{
	gint64 deadline =
	    g_get_monotonic_time() + VS_LEASE_READY_S * G_USEC_PER_SEC;
	double wait = 0.05;

	for (;;) {
		g_autoptr(xmlDoc) doc = NULL;
		xmlNode *v = vs_property(prov, &l->lease, "state", &doc, error);
		g_autofree char *state = cfs_xml_text(v);

		if (!doc)
			return false;
		if (g_strcmp0(state, "ready") == 0)
			break;
		if (g_strcmp0(state, "initializing") != 0) {
			g_autoptr(xmlDoc) edoc = NULL;
			xmlNode *err =
			    vs_property(prov, &l->lease, "error", &edoc, NULL);
			g_autofree char *msg =
			    err ? vs_fault_message(err) : g_strdup(state);

			g_set_error(error, CFS_ERROR, EIO, "lease %s: %s",
				    l->lease.value, msg ? msg : "vanished");
			return false;
		}
		if (g_get_monotonic_time() > deadline) {
			g_set_error(error, CFS_ERROR, ETIMEDOUT,
				    "lease %s not "
				    "ready after %d s",
				    l->lease.value, VS_LEASE_READY_S);
			return false;
		}
		if (!cfs_export_wait(report, wait)) {
			g_set_error(error, CFS_ERROR, ECANCELED,
				    "cancelled: "
				    "the filesystem is unmounted");
			return false;
		}
		wait = MIN(wait * 2, 1.0);
	}
	l->info = vs_property(prov, &l->lease, "info", &l->info_doc, error);
	if (!l->info) {
		if (l->info_doc)
			g_set_error(error, CFS_ERROR, EIO, "lease %s: no info",
				    l->lease.value);
		return false;
	}
	return true;
}

/* ExportVm and a ready lease, kept alive from now on. */
static VsLease *lease_open(VsProvider *prov, const VsDisk *d,
			   CfsExportReport *report, GError **error)
{
	g_autoptr(xmlDoc) doc = NULL;
	g_autofree char *fault = NULL, *timeout = NULL;
	VsLease *l = g_new0(VsLease, 1);
	xmlNode *resp;
	double interval;

	l->prov = prov;
	l->ref = 1;
	l->vm_name = g_strdup(d->vm_name);
	l->vm_key = g_strdup(d->vm.value);
	g_mutex_init(&l->lock);
	cfs_export_report(report, "lease", 0.0);
	doc = vs_call(prov, "ExportVm", &d->vm, NULL, &resp, &fault, error);
	if (!doc) {
		if (g_strcmp0(fault, "InvalidPowerState") == 0)
			g_prefix_error(error,
				       "NFC exports need the VM powered "
				       "off (mode = auto reads a running VM "
				       "through a snapshot): ");
		lease_free(l);
		return NULL;
	}
	if (!vs_ref_parse(cfs_xml_child(resp, VS_NS, "returnval"), &l->lease)) {
		g_set_error(error, CFS_ERROR, EIO,
			    "ExportVm: no lease in the "
			    "answer");
		lease_free(l);
		return NULL;
	}
	if (!lease_wait(prov, l, report, error)) {
		lease_break(l, "not ready");
		lease_finish(l);
		lease_free(l);
		return NULL;
	}
	for (xmlNode *u = cfs_xml_child(l->info, VS_NS, "deviceUrl"); u;
	     u = cfs_xml_next(u, VS_NS, "deviceUrl"))
		l->disks++;
	timeout = cfs_xml_path_text(l->info, VS_NS, "leaseTimeout");
	interval = timeout ? g_ascii_strtod(timeout, NULL) / 3 : 60;
	interval = CLAMP(interval, 0.5, 60.0);
	l->timer =
	    cfs_timer_new(prov->base.ctx->control, interval, lease_tick, l);
	cfs_export_report(report, "lease", 100.0);
	g_message("%s: lease %s of %s ready (progress every %.1f s)",
		  prov->base.name, l->lease.value, d->vm_name, interval);
	return l;
}

/* The VM's lease: the one open, or a new one. */
static VsLease *lease_get(VsProvider *prov, const VsDisk *d,
			  CfsExportReport *report, GError **error)
{
	VsLease *l;

	g_mutex_lock(&prov->lease_lock);
	g_mutex_lock(&prov->lock);
	l = g_hash_table_lookup(prov->leases, d->vm.value);
	if (l)
		l->ref++;
	g_mutex_unlock(&prov->lock);
	if (l) {
		bool broken;

		g_mutex_lock(&l->lock);
		broken = l->broken;
		g_mutex_unlock(&l->lock);
		if (!broken) {
			g_mutex_unlock(&prov->lease_lock);
			return l;
		}
		/* Leave a broken lease to the exports that hold it. */
		g_mutex_lock(&prov->lock);
		g_hash_table_remove(prov->leases, d->vm.value);
		g_mutex_unlock(&prov->lock);
		vs_lease_unref(l);
	}
	l = lease_open(prov, d, report, error);
	if (l) {
		g_mutex_lock(&prov->lock);
		g_hash_table_replace(prov->leases, g_strdup(d->vm.value), l);
		g_mutex_unlock(&prov->lock);
	}
	g_mutex_unlock(&prov->lease_lock);
	return l;
}

/* The deviceUrl of disk @d: by its controller and unit, else by its
 * place among the lease's disks. */
static xmlNode *device_url(const VsLease *l, const VsDisk *d)
{
	g_autofree char *suffix = g_strdup_printf("/%s", d->device);
	xmlNode *nth = NULL;
	guint i = 0;

	for (xmlNode *u = cfs_xml_child(l->info, VS_NS, "deviceUrl"); u;
	     u = cfs_xml_next(u, VS_NS, "deviceUrl")) {
		g_autofree char *key = cfs_xml_path_text(u, VS_NS, "key");
		g_autofree char *disk = cfs_xml_path_text(u, VS_NS, "disk");

		if (g_strcmp0(disk, "false") == 0)
			continue;
		if (key && g_str_has_suffix(key, suffix))
			return u;
		if (i++ == d->index)
			nth = u;
	}
	return nth;
}

/* A deviceUrl host of "*" names the host we talk to. */
static char *device_url_text(VsProvider *prov, const char *url, bool *ours)
{
	const char *rest = strstr(url, "://");
	const char *host, *end;

	if (!rest || (!g_str_has_prefix(url, "https://") &&
		      !g_str_has_prefix(url, "http://")))
		return NULL;
	host = rest + 3;
	end = host + strcspn(host, "/?#");
	if (end - host == 1 && host[0] == '*') {
		*ours = true;
		return g_strdup_printf("%.*s%s%s", (int)(host - url), url,
				       prov->authority, end);
	}
	*ours =
	    (gsize)(end - host) == strlen(prov->authority) &&
	    !g_ascii_strncasecmp(host, prov->authority, (gsize)(end - host));
	return g_strdup(url);
}

/* --- the source --- */

static bool nfc_plan(CfsSource *src, guint64 off, guint64 len, GArray *pieces,
		     GError **error)
{
	NfcSource *ns = src->priv;
	CfsSourcePiece piece = {cfs_http_request_new(ns->url), 0, src->size};

	g_array_append_val(pieces, piece);
	return true;
}

static bool nfc_authorize(CfsSource *src, CfsHttpRequest *req, GError **error)
{
	NfcSource *ns = src->priv;
	g_autoptr(CfsSecret) cookie = NULL;
	VsLease *l = ns->lease;
	bool broken;

	if (!l) {
		g_set_error(error, CFS_ERROR, EIO, "%s: export ended",
			    ns->what);
		return false;
	}
	g_mutex_lock(&l->lock);
	broken = l->broken;
	g_mutex_unlock(&l->lock);
	if (broken) {
		g_set_error(error, CFS_ERROR, EIO, "lease %s ended",
			    l->lease.value);
		return false;
	}
	cookie = ns->cookie ? vs_cookie_header(l->prov) : NULL;
	if (cookie)
		req->auth_headers =
		    curl_slist_append(req->auth_headers, cookie);
	return true;
}

static bool nfc_renew(CfsSource *src, GError **error)
{
	NfcSource *ns = src->priv;

	if (!vs_login(ns->lease->prov, true, ns->gen, error))
		return false;
	ns->gen = vs_session_gen(ns->lease->prov);
	cfs_source_set_expiry(src, 0);
	return true;
}

static void nfc_free(CfsSource *src)
{
	NfcSource *ns = src->priv;

	if (!ns)
		return;
	g_free(ns->url);
	g_free(ns->what);
	g_free(ns);
}

static const CfsSourceOps nfc_source_ops = {
    .plan = nfc_plan,
    .authorize = nfc_authorize,
    .renew = nfc_renew,
    .free = nfc_free,
};

/* The most bytes a streamOptimized VMDK of @capacity bytes takes: every
 * grain stored uncompressed with its marker, the grain tables and
 * directory, and the header and footer. */
static guint64 stream_bound(guint64 capacity)
{
	return capacity + capacity / 64 + (4 << 20);
}

/* The stream's length when the lease says 0: a HEAD's Content-Length,
 * or 0 when it gives none. */
static guint64 stream_length(VsProvider *prov, NfcSource *ns)
{
	g_autoptr(CfsHttpRequest) head = cfs_http_request_new(ns->url);
	g_autoptr(CfsSecret) cookie =
	    ns->cookie ? vs_cookie_header(prov) : NULL;

	head->nobody = true;
	head->max_attempts = 2;
	head->timeout_s = 60;
	if (cookie)
		cfs_http_request_add_header(head, cookie);
	cfs_http_request_set_settings(head, prov->settings);
	if (cfs_http_perform(prov->base.ctx->http, head, NULL) &&
	    head->content_length > 0)
		return (guint64)head->content_length;
	return 0;
}

CfsSource *vs_nfc_export_start(VsProvider *prov, CfsDisk *disk,
			       CfsExportReport *report, GError **error)
{
	VsDisk *d = disk->priv;
	VsLease *l = lease_get(prov, d, report, error);
	g_autofree char *url = NULL, *size = NULL, *key = NULL;
	NfcSource *ns;
	CfsSource *src;
	xmlNode *du;
	guint64 len;

	if (!l) {
		g_prefix_error(error, "%s: ", d->vm_name);
		return NULL;
	}
	du = device_url(l, d);
	url = cfs_xml_path_text(du, VS_NS, "url");
	size = cfs_xml_path_text(du, VS_NS, "fileSize");
	key = cfs_xml_path_text(du, VS_NS, "key");
	ns = g_new0(NfcSource, 1);
	ns->lease = l;
	ns->what = g_strdup_printf("%s/%s", d->vm_name, disk->name);
	ns->gen = vs_session_gen(prov);
	ns->url = url ? device_url_text(prov, url, &ns->cookie) : NULL;
	src = cfs_source_new(&nfc_source_ops, ns);
	if (!ns->url) {
		g_set_error(error, CFS_ERROR, EIO,
			    "%s: lease %s has no usable "
			    "URL for this disk",
			    ns->what, l->lease.value);
		vs_nfc_export_end(prov, disk, src);
		cfs_source_free(src);
		return NULL;
	}
	len = size ? g_ascii_strtoull(size, NULL, 10) : 0;
	if (!len)
		len = stream_length(prov, ns);
	if (len > stream_bound(d->capacity)) {
		g_set_error(error, CFS_ERROR, EIO,
			    "%s: the NFC stream says it has %" G_GUINT64_FORMAT
			    " bytes, more than a VMDK of %" G_GUINT64_FORMAT
			    " bytes can",
			    ns->what, len, d->capacity);
		lease_break(l, "absurd length");
		vs_nfc_export_end(prov, disk, src);
		cfs_source_free(src);
		return NULL;
	}
	/* No length anywhere: a stream that shows its length at its end,
	 * never longer than a VMDK of the disk can be. */
	src->size = len ? len : CFS_SIZE_UNKNOWN;
	src->size_max = len ? len : stream_bound(d->capacity);
	src->map = cfs_extent_map_new_full(src->size_max);
	src->random = false;
	src->identity =
	    g_strdup_printf("lease %s %s", l->lease.value, key ? key : "");
	src->settings = cfs_http_settings_ref(prov->settings);
	cfs_source_set_expiry(src, 0);
	return src;
}

void vs_nfc_export_end(VsProvider *prov, CfsDisk *disk, CfsSource *src)
{
	NfcSource *ns = src->priv;
	VsLease *l = ns ? g_steal_pointer(&ns->lease) : NULL;

	if (!l)
		return;
	g_mutex_lock(&l->lock);
	l->ended++;
	/* A disk not read to its end: the lease is aborted, not completed,
	 * when the last disk's export ends. */
	if (!src->complete)
		l->given_up = true;
	g_mutex_unlock(&l->lock);
	vs_lease_unref(l);
}
