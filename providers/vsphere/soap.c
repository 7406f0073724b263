// SPDX-License-Identifier: MIT
/*
 * A small vim25 SOAP client: envelopes built with every value escaped,
 * answers matched by namespace URI, faults turned into errors that name
 * them, and the session: RetrieveServiceContent, Login (its cookie is a
 * secret, kept under the provider's lock) and one new login when the
 * server says a session ended.
 */
#include <string.h>

#include "common/error.h"
#include "common/secret.h"
#include "providers/vsphere/vsphere-private.h"

/* Largest SOAP answer read: an inventory page of many VMs with their
 * devices stays well below it. */
#define VS_SOAP_MAX (64 * 1024 * 1024)
#define VS_FAULT_TEXT_MAX 300
/* Longest wait for a task without an export to stop it. */
#define VS_TASK_TIMEOUT_S 600

void vs_ref_clear(VsRef *ref)
{
	g_clear_pointer(&ref->type, g_free);
	g_clear_pointer(&ref->value, g_free);
}

void vs_ref_copy(VsRef *dst, const VsRef *src)
{
	dst->type = g_strdup(src->type);
	dst->value = g_strdup(src->value);
}

bool vs_ref_parse(const xmlNode *node, VsRef *ref)
{
	xmlChar *type;

	if (!node)
		return false;
	type = xmlGetNoNsProp(node, (const xmlChar *)"type");
	if (!type || !*type) {
		xmlFree(type);
		return false;
	}
	ref->type = g_strdup((const char *)type);
	ref->value = cfs_xml_text(node);
	xmlFree(type);
	if (!ref->value || !*ref->value) {
		vs_ref_clear(ref);
		return false;
	}
	return true;
}

void vs_add(GString *out, const char *tag, const char *text)
{
	g_string_append_printf(out, "<%s>", tag);
	cfs_xml_escape(out, text);
	g_string_append_printf(out, "</%s>", tag);
}

void vs_add_ref(GString *out, const char *tag, const VsRef *ref)
{
	g_string_append_printf(out, "<%s type=\"", tag);
	cfs_xml_escape(out, ref->type);
	g_string_append(out, "\">");
	cfs_xml_escape(out, ref->value);
	g_string_append_printf(out, "</%s>", tag);
}

/* The whole envelope; @args is escaped already. */
static char *envelope(const char *method, const VsRef *this, const char *args)
{
	GString *s = g_string_new(
	    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
	    "<soapenv:Envelope xmlns:soapenv=\"" VS_NS_SOAPENV "\" "
	    "xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" "
	    "xmlns:xsi=\"" CFS_XML_NS_XSI "\"><soapenv:Body>");

	g_string_append_printf(s, "<%s xmlns=\"" VS_NS "\">", method);
	vs_add_ref(s, "_this", this);
	if (args)
		g_string_append(s, args);
	g_string_append_printf(s, "</%s></soapenv:Body></soapenv:Envelope>",
			       method);
	return g_string_free(s, FALSE);
}

/* A GBytes of the string @s (transfer full). */
static GBytes *bytes_take(char *s)
{
	gsize len = strlen(s);

	return g_bytes_new_take(s, len);
}

/* --- classifying answers --- */

static bool body_has(const CfsHttpRequest *req, const char *what)
{
	return req->response && memmem(req->response->data, req->response->len,
				       what, strlen(what));
}

CfsHttpClass vs_classify(const CfsHttpRequest *req)
{
	/* A fault is the server's answer: asking again gives the same. */
	if (req->status == 500 && body_has(req, VS_NS_SOAPENV))
		return CFS_HTTP_FINAL;
	/* A datastore file a running VM holds stays locked. */
	if (req->status == 500 && body_has(req, "locked"))
		return CFS_HTTP_FINAL;
	return cfs_http_classify_default(req);
}

/* --- one request --- */

/* Collect the answer, up to VS_SOAP_MAX. */
static bool soap_body(CfsHttpRequest *req, const void *data, gsize len)
{
	if (!req->response)
		req->response = g_byte_array_new();
	if (req->response->len + len > VS_SOAP_MAX)
		return false;
	g_byte_array_append(req->response, data, (guint)len);
	return true;
}

static void soap_reset(CfsHttpRequest *req)
{
	if (req->response)
		g_byte_array_set_size(req->response, 0);
}

/* Wipe the headers that carry the cookie, then free @req. */
static void request_free_wiped(CfsHttpRequest *req)
{
	for (struct curl_slist *h = req->headers; h; h = h->next)
		cfs_secret_wipe(h->data, strlen(h->data));
	cfs_http_request_free(req);
}

/* Fault type from detail's first element: its xsi:type, else its name;
 * without a "Fault" suffix. Transfer full. */
static char *fault_name(const xmlNode *fault)
{
	xmlNode *detail = cfs_xml_child(fault, NULL, "detail");
	xmlNode *d = NULL;
	char *name;
	gsize n;

	for (xmlNode *c = detail ? detail->children : NULL; c && !d;
	     c = c->next)
		if (c->type == XML_ELEMENT_NODE)
			d = c;
	if (!d)
		return g_strdup("Fault");
	name = cfs_xml_xsi_type(d, NULL);
	if (!name)
		name = g_strdup((const char *)d->name);
	n = strlen(name);
	if (n > 5 && g_str_has_suffix(name, "Fault"))
		name[n - 5] = '\0';
	return name;
}

static int fault_errno(const char *name)
{
	static const struct {
		const char *name;
		int code;
	} map[] = {
	    {"InvalidLogin", EACCES}, {"NotAuthenticated", EACCES},
	    {"NoPermission", EACCES}, {"ManagedObjectNotFound", ENOENT},
	    {"FileNotFound", ENOENT}, {"InvalidPowerState", EBUSY},
	    {"InvalidState", EBUSY},  {"TaskInProgress", EBUSY},
	    {"Timedout", ETIMEDOUT},
	};

	for (guint i = 0; i < G_N_ELEMENTS(map); i++)
		if (g_str_equal(map[i].name, name))
			return map[i].code;
	return EIO;
}

static void one_line(char *text)
{
	if (strlen(text) > VS_FAULT_TEXT_MAX)
		strcpy(text + VS_FAULT_TEXT_MAX - 3, "...");
	for (char *p = text; *p; p++)
		if (*p == '\n' || *p == '\r' || *p == '\t')
			*p = ' ';
}

/*
 * POST one envelope. Returns the answer's Body element's first child in
 * @resp; a fault becomes an error (and its type in @fault). The body
 * may hold a password: it is taken (transfer full) and wiped.
 */
static xmlDoc *soap_post(VsProvider *prov, const char *method, GBytes *body,
			 bool with_cookie, char **set_cookie, xmlNode **resp,
			 char **fault, GError **error)
{
	CfsHttpRequest *req = cfs_http_request_new(prov->sdk_url);
	g_autoptr(GError) local = NULL;
	g_autoptr(xmlDoc) doc = NULL;
	xmlNode *env, *bd, *first = NULL;
	bool ok;

	req->method = g_strdup("POST");
	req->body = body;
	cfs_http_request_add_header(req, "Content-Type: text/xml; "
					 "charset=utf-8");
	cfs_http_request_add_header(req, "SOAPAction: \"urn:vim25/6.5\"");
	if (with_cookie) {
		g_autoptr(CfsSecret) cookie = vs_cookie_header(prov);

		if (cookie)
			cfs_http_request_add_header(req, cookie);
	}
	cfs_http_request_set_settings(req, prov->settings);
	req->on_body = soap_body;
	req->on_reset = soap_reset;
	req->max_attempts = 4;
	req->timeout_s = 120;
	ok = cfs_http_perform(prov->base.ctx->http, req, &local);
	if (req->response && req->response->len)
		doc = cfs_xml_parse(req->response->data, req->response->len,
				    VS_SOAP_MAX, NULL);
	env = doc ? xmlDocGetRootElement(doc) : NULL;
	bd = cfs_xml_child(env, VS_NS_SOAPENV, "Body");
	for (xmlNode *c = bd ? bd->children : NULL; c && !first; c = c->next)
		if (c->type == XML_ELEMENT_NODE)
			first = c;
	if (cfs_xml_is(first, VS_NS_SOAPENV, "Fault")) {
		g_autofree char *name = fault_name(first);
		g_autofree char *text =
		    cfs_xml_path_text(first, NULL, "faultstring");

		if (!text || !*text) {
			g_free(text);
			text = g_strdup("no message");
		}
		one_line(text);
		g_set_error(error, CFS_ERROR, fault_errno(name), "%s: %s: %s",
			    method, name, text);
		if (fault)
			*fault = g_steal_pointer(&name);
		request_free_wiped(req);
		return NULL;
	}
	if (!ok || !first) {
		if (local)
			g_set_error(error, CFS_ERROR, local->code, "%s: %s",
				    method, local->message);
		else
			g_set_error(error, CFS_ERROR, EIO,
				    "%s: the answer from "
				    "%s is not a SOAP answer",
				    method, prov->sdk_url);
		request_free_wiped(req);
		return NULL;
	}
	if (set_cookie) {
		const char *sc = cfs_http_response_header(req, "set-cookie");

		*set_cookie = sc ? cfs_secret_dup(sc) : NULL;
	}
	request_free_wiped(req);
	*resp = first;
	return g_steal_pointer(&doc);
}

/* --- the session --- */

guint vs_session_gen(VsProvider *prov)
{
	guint gen;

	g_mutex_lock(&prov->lock);
	gen = prov->session_gen;
	g_mutex_unlock(&prov->lock);
	return gen;
}

char *vs_cookie_header(VsProvider *prov)
{
	char *out = NULL;

	g_mutex_lock(&prov->lock);
	if (prov->cookie)
		out = g_strdup_printf("Cookie: " VS_COOKIE "=%s", prov->cookie);
	g_mutex_unlock(&prov->lock);
	return out;
}

/* The value of vmware_soap_session in a Set-Cookie line, without quotes.
 * Transfer full (a secret). */
static char *cookie_value(const char *set_cookie)
{
	const char *p = set_cookie ? strstr(set_cookie, VS_COOKIE "=") : NULL;
	gsize n;

	if (!p)
		return NULL;
	p += strlen(VS_COOKIE "=");
	n = strcspn(p, ";");
	if (n >= 2 && p[0] == '"' && p[n - 1] == '"') {
		p++;
		n -= 2;
	}
	/* Header-safe only: no CR, LF or NUL can reach a request. */
	if (n == 0 || p[strcspn(p, "\r\n")] != '\0' || strcspn(p, "\r\n") < n)
		return NULL;
	return g_strndup(p, n);
}

static bool content_ref(VsProvider *prov, xmlNode *rv, const char *name,
			VsRef *ref, bool required, GError **error)
{
	if (vs_ref_parse(cfs_xml_child(rv, VS_NS, name), ref) || !required)
		return true;
	g_set_error(error, CFS_ERROR, EIO,
		    "RetrieveServiceContent: no %s in "
		    "the answer (is %s a vSphere SDK URL?)",
		    name, prov->sdk_url);
	return false;
}

/* ServiceContent: the morefs every later call names. login_lock held. */
static bool service_content(VsProvider *prov, GError **error)
{
	static const VsRef si = {"ServiceInstance", "ServiceInstance"};
	g_autofree char *env = envelope("RetrieveServiceContent", &si, NULL);
	g_autoptr(xmlDoc) doc = NULL;
	VsContent *c = &prov->content;
	xmlNode *resp, *rv;

	doc = soap_post(prov, "RetrieveServiceContent",
			bytes_take(g_steal_pointer(&env)), false, NULL, &resp,
			NULL, error);
	if (!doc)
		return false;
	rv = cfs_xml_child(resp, VS_NS, "returnval");
	if (!content_ref(prov, rv, "propertyCollector", &c->property_collector,
			 true, error) ||
	    !content_ref(prov, rv, "rootFolder", &c->root_folder, true,
			 error) ||
	    !content_ref(prov, rv, "viewManager", &c->view_manager, true,
			 error) ||
	    !content_ref(prov, rv, "sessionManager", &c->session_manager, true,
			 error) ||
	    !content_ref(prov, rv, "ovfManager", &c->ovf_manager, false,
			 error)) {
		vs_ref_clear(&c->property_collector);
		vs_ref_clear(&c->root_folder);
		vs_ref_clear(&c->view_manager);
		vs_ref_clear(&c->session_manager);
		vs_ref_clear(&c->ovf_manager);
		return false;
	}
	prov->have_content = true;
	return true;
}

/* Login; the new cookie swapped in. login_lock held. */
static bool session_login(VsProvider *prov, GError **error)
{
	g_autoptr(CfsSecretString) args = g_string_new(NULL);
	g_autoptr(CfsSecret) set_cookie = NULL;
	g_autoptr(xmlDoc) doc = NULL;
	char *env, *cookie, *old;
	xmlNode *resp;

	vs_add(args, "userName", prov->username);
	vs_add(args, "password", prov->password);
	env = envelope("Login", &prov->content.session_manager, args->str);
	doc = soap_post(prov, "Login", cfs_secret_bytes_take(env), false,
			&set_cookie, &resp, NULL, error);
	if (!doc) {
		g_prefix_error(error, "log in to %s as %s: ", prov->sdk_url,
			       prov->username);
		return false;
	}
	cookie = cookie_value(set_cookie);
	if (!cookie) {
		g_set_error(error, CFS_ERROR, EACCES,
			    "log in to %s: no %s "
			    "cookie in the answer",
			    prov->sdk_url, VS_COOKIE);
		return false;
	}
	g_mutex_lock(&prov->lock);
	old = prov->cookie;
	prov->cookie = cookie;
	prov->session_gen++;
	g_mutex_unlock(&prov->lock);
	cfs_secret_free(old);
	g_message("%s: logged in to %s as %s", prov->base.name, prov->sdk_url,
		  prov->username);
	return true;
}

bool vs_login(VsProvider *prov, bool force, guint gen, GError **error)
{
	bool ok = true;
	bool have;

	g_mutex_lock(&prov->login_lock);
	g_mutex_lock(&prov->lock);
	have = prov->cookie && (!force || prov->session_gen != gen);
	g_mutex_unlock(&prov->lock);
	if (!have) {
		ok = (prov->have_content || service_content(prov, error)) &&
		     session_login(prov, error);
	}
	g_mutex_unlock(&prov->login_lock);
	return ok;
}

xmlDoc *vs_call(VsProvider *prov, const char *method, const VsRef *this,
		const char *args, xmlNode **resp, char **fault, GError **error)
{
	for (guint attempt = 0;; attempt++) {
		g_autofree char *name = NULL;
		g_autoptr(GError) local = NULL;
		g_autofree char *env = NULL;
		guint gen = vs_session_gen(prov);
		xmlDoc *doc;

		if (!vs_login(prov, false, 0, error))
			return NULL;
		env = envelope(method, this, args);
		doc = soap_post(prov, method, bytes_take(g_steal_pointer(&env)),
				true, NULL, resp, &name, &local);
		if (doc)
			return doc;
		if (attempt == 0 && g_strcmp0(name, "NotAuthenticated") == 0) {
			/* The session ended (idle, restarted server): log in
			 * once more and ask again. */
			g_message("%s: session ended; logging in again",
				  prov->base.name);
			if (!vs_login(prov, true, gen, error))
				return NULL;
			continue;
		}
		if (fault)
			*fault = g_steal_pointer(&name);
		g_propagate_error(error, g_steal_pointer(&local));
		return NULL;
	}
}

/* --- properties and tasks --- */

xmlNode *vs_property(VsProvider *prov, const VsRef *obj, const char *name,
		     xmlDoc **doc, GError **error)
{
	g_autoptr(GString) args = g_string_new("<specSet><propSet>");
	xmlNode *resp, *objects;

	vs_add(args, "type", obj->type);
	vs_add(args, "pathSet", name);
	g_string_append(args, "</propSet><objectSet>");
	vs_add_ref(args, "obj", obj);
	g_string_append(args, "</objectSet></specSet><options/>");
	*doc = vs_call(prov, "RetrievePropertiesEx",
		       &prov->content.property_collector, args->str, &resp,
		       NULL, error);
	if (!*doc)
		return NULL;
	objects = cfs_xml_path(resp, VS_NS, "returnval/objects");
	for (xmlNode *p = cfs_xml_child(objects, VS_NS, "propSet"); p;
	     p = cfs_xml_next(p, VS_NS, "propSet")) {
		g_autofree char *n = cfs_xml_path_text(p, VS_NS, "name");

		if (g_strcmp0(n, name) == 0)
			return cfs_xml_child(p, VS_NS, "val");
	}
	return NULL;
}

/* The message of a task's or lease's error (LocalizedMethodFault). */
static char *fault_message(const xmlNode *err)
{
	g_autofree char *msg =
	    cfs_xml_path_text(err, VS_NS, "localizedMessage");
	g_autofree char *type =
	    cfs_xml_xsi_type(cfs_xml_child(err, VS_NS, "fault"), NULL);
	char *out;

	out = g_strdup_printf("%s%s%s", type ? type : "error",
			      msg && *msg ? ": " : "", msg ? msg : "");
	one_line(out);
	return out;
}

bool vs_task_wait(VsProvider *prov, const VsRef *task, const char *what,
		  CfsExportReport *report, const char *phase, xmlNode **result,
		  GError **error)
{
	gint64 deadline =
	    g_get_monotonic_time() + VS_TASK_TIMEOUT_S * G_USEC_PER_SEC;
	double wait = 0.05;

	for (;;) {
		g_autoptr(xmlDoc) doc = NULL;
		xmlNode *info = vs_property(prov, task, "info", &doc, error);
		g_autofree char *state =
		    cfs_xml_path_text(info, VS_NS, "state");
		g_autofree char *progress =
		    cfs_xml_path_text(info, VS_NS, "progress");

		if (!doc) {
			g_prefix_error(error, "%s: ", what);
			return false;
		}
		if (g_strcmp0(state, "success") == 0) {
			xmlNode *res = cfs_xml_child(info, VS_NS, "result");

			if (report)
				cfs_export_report(report, phase, 100.0);
			if (result)
				*result = res ? xmlCopyNode(res, 1) : NULL;
			return true;
		}
		if (g_strcmp0(state, "error") == 0 || !info) {
			g_autofree char *msg =
			    info ? fault_message(
				       cfs_xml_child(info, VS_NS, "error"))
				 : g_strdup("the task vanished");

			g_set_error(error, CFS_ERROR, EIO, "%s: %s", what, msg);
			return false;
		}
		if (report && progress)
			cfs_export_report(report, phase,
					  g_ascii_strtod(progress, NULL));
		if (report && !cfs_export_wait(report, wait)) {
			g_set_error(error, CFS_ERROR, ECANCELED,
				    "%s: "
				    "cancelled: the filesystem is unmounted",
				    what);
			return false;
		}
		if (!report) {
			if (g_get_monotonic_time() > deadline) {
				g_set_error(error, CFS_ERROR, ETIMEDOUT,
					    "%s: still %s after %d s", what,
					    state ? state : "running",
					    VS_TASK_TIMEOUT_S);
				return false;
			}
			g_usleep((gulong)(wait * G_USEC_PER_SEC));
		}
		wait = MIN(wait * 2, 2.0);
	}
}

char *vs_fault_message(const xmlNode *err)
{
	return fault_message(err);
}
