// SPDX-License-Identifier: MIT
/*
 * A WinRM (WS-Management, SOAP 1.2) shell client: Create a cmd shell,
 * run one powershell -EncodedCommand per Command, Receive stdout and
 * stderr until the command is done (a w:TimedOut fault only means "ask
 * again"), Signal terminate, Delete. Each call is a synchronous POST on
 * the network thread through cfs_http_perform with the provider's
 * settings (NTLM or Basic over HTTPS). Control pool only.
 */
#include <string.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "common/xml.h"
#include "providers/hyperv/hyperv-private.h"

#define NS_SOAP "http://www.w3.org/2003/05/soap-envelope"
#define NS_ADDR "http://schemas.xmlsoap.org/ws/2004/08/addressing"
#define NS_WSMAN "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"
#define NS_MSWSMAN "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd"
#define NS_SHELL "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
#define NS_FAULT "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault"
#define URI_CMD NS_SHELL "/cmd"
#define ACT_TRANSFER "http://schemas.xmlsoap.org/ws/2004/09/transfer/"
#define ACT_SHELL NS_SHELL "/"
#define STATE_DONE NS_SHELL "/CommandState/Done"

#define ENVELOPE_MAX 153600	/* what we let the service answer */
#define ANSWER_MAX (1024 * 1024)
#define OUTPUT_MAX (16 * 1024 * 1024)	/* per stream of one command */
#define WSMAN_TIMED_OUT "2150858793"

struct HvShell {
	HvProvider *prov;
	char *id;
};

void hv_run_init(HvRun *run)
{
	run->out = g_string_new(NULL);
	run->err = g_string_new(NULL);
	run->exit_code = -1;
}

void hv_run_clear(HvRun *run)
{
	if (run->out)
		g_string_free(run->out, true);
	if (run->err)
		g_string_free(run->err, true);
	run->out = run->err = NULL;
}

/* Collect a bounded answer body. */
static bool wsman_body(CfsHttpRequest *req, const void *data, gsize len)
{
	if (!req->response)
		req->response = g_byte_array_new();
	if (req->response->len + len > ANSWER_MAX)
		return false;
	g_byte_array_append(req->response, data, (guint)len);
	return true;
}

static char *wsman_envelope(HvShell *shell, const char *action,
			    const char *options, const char *body)
{
	HvProvider *prov = shell->prov;
	g_autofree char *mid = g_uuid_string_random();
	g_autoptr(GString) to = g_string_new(NULL);
	g_autofree char *selector = NULL;

	cfs_xml_escape(to, prov->url);
	selector = shell->id ? g_strdup_printf(
		"<w:SelectorSet><w:Selector Name=\"ShellId\">%s</w:Selector>"
		"</w:SelectorSet>", shell->id) : g_strdup("");

	return g_strdup_printf(
		"<s:Envelope xmlns:s=\"" NS_SOAP "\" xmlns:a=\"" NS_ADDR "\" "
		"xmlns:w=\"" NS_WSMAN "\" xmlns:p=\"" NS_MSWSMAN "\" "
		"xmlns:rsp=\"" NS_SHELL "\"><s:Header><a:To>%s</a:To>"
		"<a:ReplyTo><a:Address s:mustUnderstand=\"true\">"
		"http://schemas.xmlsoap.org/ws/2004/08/addressing/role/"
		"anonymous</a:Address></a:ReplyTo>"
		"<a:Action s:mustUnderstand=\"true\">%s</a:Action>"
		"<w:MaxEnvelopeSize s:mustUnderstand=\"true\">%u"
		"</w:MaxEnvelopeSize><a:MessageID>uuid:%s</a:MessageID>"
		"<w:Locale xml:lang=\"en-US\" s:mustUnderstand=\"false\"/>"
		"<p:DataLocale xml:lang=\"en-US\" s:mustUnderstand=\"false\"/>"
		"<w:OperationTimeout>PT%uS</w:OperationTimeout>"
		"<w:ResourceURI s:mustUnderstand=\"true\">" URI_CMD
		"</w:ResourceURI>%s%s</s:Header><s:Body>%s</s:Body>"
		"</s:Envelope>", to->str, action, ENVELOPE_MAX, mid,
		prov->op_timeout_s, selector, options ? options : "", body);
}

/* "w:TimedOut: The WS-Management service cannot … (2150858793)" from a
 * fault, with its WSManFault code in @code (transfer full). */
static char *wsman_fault(xmlNode *root, char **code)
{
	xmlNode *fault = cfs_xml_path(root, NS_SOAP, "Body/Fault");
	xmlNode *wf = cfs_xml_path(fault, NS_SOAP, "Detail");
	g_autofree char *sub = NULL, *reason = NULL, *msg = NULL;

	if (!fault)
		return NULL;
	wf = cfs_xml_child(wf, NS_FAULT, "WSManFault");
	sub = cfs_xml_text(cfs_xml_path(fault, NS_SOAP,
					"Code/Subcode/Value"));
	reason = cfs_xml_text(cfs_xml_path(fault, NS_SOAP, "Reason/Text"));
	msg = cfs_xml_text(cfs_xml_child(wf, NS_FAULT, "Message"));
	*code = cfs_xml_attr(wf, "Code");
	return g_strdup_printf("%s%s%s%s%s%s", sub ? sub : "",
			       sub ? ": " : "",
			       msg && *msg ? msg : reason ? reason : "fault",
			       *code ? " (" : "", *code ? *code : "",
			       *code ? ")" : "");
}

/*
 * POST one envelope and parse the answer. A SOAP fault is an error
 * (EIO; ETIMEDOUT for w:TimedOut, so that Receive can tell). Transfer
 * full.
 */
static xmlDoc *wsman_call(HvShell *shell, const char *what,
			  const char *envelope, guint timeout_s,
			  GError **error)
{
	HvProvider *prov = shell->prov;
	g_autoptr(CfsHttpRequest) req = cfs_http_request_new(prov->url);
	g_autoptr(GError) local = NULL;
	g_autofree char *fault = NULL, *code = NULL;
	g_autoptr(xmlDoc) doc = NULL;
	bool ok;

	req->method = g_strdup("POST");
	req->body = g_bytes_new(envelope, strlen(envelope));
	req->on_body = wsman_body;
	req->timeout_s = timeout_s;
	req->max_attempts = 3;
	cfs_http_request_add_header(req, "Content-Type: application/soap+xml;"
				    "charset=UTF-8");
	cfs_http_request_set_settings(req, prov->settings);
	ok = cfs_http_perform(prov->base.ctx->http, req, &local);
	if (req->response && req->response->len &&
	    (ok || req->status == 500))
		doc = cfs_xml_parse(req->response->data, req->response->len,
				    ANSWER_MAX, ok ? &local : NULL);
	if (!doc && ok)
		g_prefix_error(&local, "%s: ", what);
	if (doc)
		fault = wsman_fault(xmlDocGetRootElement(doc), &code);
	if (fault) {
		g_set_error(error, CFS_ERROR,
			    g_strcmp0(code, WSMAN_TIMED_OUT) == 0 ? ETIMEDOUT :
								     EIO,
			    "WinRM %s: %s", what, fault);
		return NULL;
	}
	if (!ok || !doc) {
		int errnum = req->status == 401 ? EACCES :
			     local ? cfs_error_errno(local) : EIO;

		g_set_error(error, CFS_ERROR, errnum, "WinRM %s: %s", what,
			    req->status == 401 ? "logon refused (HTTP 401): "
			    "check username and password" :
			    local ? local->message : "empty answer");
		return NULL;
	}
	return g_steal_pointer(&doc);
}

HvShell *hv_shell_open(HvProvider *prov, GError **error)
{
	g_autoptr(HvShell) shell = g_new0(HvShell, 1);
	g_autofree char *env = NULL;
	g_autoptr(xmlDoc) doc = NULL;
	xmlNode *body;

	cfs_assert_may_block();
	shell->prov = prov;
	env = wsman_envelope(shell, ACT_TRANSFER "Create",
			     "<w:OptionSet><w:Option Name=\"WINRS_NOPROFILE\">"
			     "TRUE</w:Option><w:Option Name=\"WINRS_CODEPAGE\">"
			     "65001</w:Option></w:OptionSet>",
			     "<rsp:Shell><rsp:InputStreams>stdin"
			     "</rsp:InputStreams><rsp:OutputStreams>stdout "
			     "stderr</rsp:OutputStreams></rsp:Shell>");
	doc = wsman_call(shell, "Create", env, prov->op_timeout_s + 30, error);
	if (!doc)
		return NULL;
	body = cfs_xml_child(xmlDocGetRootElement(doc), NS_SOAP, "Body");
	shell->id = cfs_xml_text(cfs_xml_path(body, NS_SHELL, "Shell/ShellId"));
	if (!shell->id || !*shell->id ||
	    shell->id[strspn(shell->id, "0123456789abcdefABCDEF-{}")]) {
		g_set_error(error, CFS_ERROR, EIO,
			    "WinRM Create: no usable ShellId in the answer");
		return NULL;
	}
	return g_steal_pointer(&shell);
}

void hv_shell_close(HvShell *shell)
{
	g_autoptr(GError) error = NULL;
	g_autofree char *env = NULL;
	g_autoptr(xmlDoc) doc = NULL;

	if (!shell)
		return;
	if (shell->id) {
		env = wsman_envelope(shell, ACT_TRANSFER "Delete", NULL, "");
		doc = wsman_call(shell, "Delete", env,
				 shell->prov->op_timeout_s + 30, &error);
		if (!doc)
			g_warning("hyperv: %s", error->message);
	}
	g_free(shell->id);
	g_free(shell);
}

static char *wsman_command(HvShell *shell, const char *script,
			   GError **error)
{
	g_autoptr(GError) local = NULL;
	g_autofree gunichar2 *utf16 = NULL;
	g_autofree char *b64 = NULL, *body = NULL, *env = NULL;
	g_autoptr(xmlDoc) doc = NULL;
	glong n = 0;
	xmlNode *b;
	char *id;

	utf16 = g_utf8_to_utf16(script, -1, NULL, &n, &local);
	if (!utf16) {
		g_set_error(error, CFS_ERROR, EINVAL, "script: %s",
			    local->message);
		return NULL;
	}
	/* Little-endian on the wire, whatever this machine is. */
	for (glong i = 0; i < n; i++)
		utf16[i] = GUINT16_TO_LE(utf16[i]);
	b64 = g_base64_encode((const guchar *)utf16, (gsize)n * 2);
	body = g_strdup_printf("<rsp:CommandLine><rsp:Command>powershell"
			       "</rsp:Command><rsp:Arguments>-NoProfile"
			       "</rsp:Arguments><rsp:Arguments>-NonInteractive"
			       "</rsp:Arguments><rsp:Arguments>-EncodedCommand"
			       "</rsp:Arguments><rsp:Arguments>%s"
			       "</rsp:Arguments></rsp:CommandLine>", b64);
	env = wsman_envelope(shell, ACT_SHELL "Command",
			     "<w:OptionSet><w:Option Name=\"WINRS_CONSOLEMODE_"
			     "STDIN\">TRUE</w:Option></w:OptionSet>", body);
	doc = wsman_call(shell, "Command", env, shell->prov->op_timeout_s + 30,
			 error);
	if (!doc)
		return NULL;
	/* Body is in the SOAP namespace, what it holds in the shell's. */
	b = cfs_xml_child(xmlDocGetRootElement(doc), NS_SOAP, "Body");
	id = cfs_xml_text(cfs_xml_path(b, NS_SHELL,
				       "CommandResponse/CommandId"));
	if (!id || !*id || id[strspn(id, "0123456789abcdefABCDEF-{}")]) {
		g_free(id);
		g_set_error(error, CFS_ERROR, EIO,
			    "WinRM Command: no usable CommandId in the answer");
		return NULL;
	}
	return id;
}

static bool wsman_append(GString *to, const char *b64, GError **error)
{
	gsize len = 0;
	g_autofree guchar *data = NULL;

	if (!b64 || !*b64)
		return true;
	data = g_base64_decode(b64, &len);
	if (to->len + len > OUTPUT_MAX) {
		g_set_error(error, CFS_ERROR, EFBIG, "WinRM Receive: more than "
			    "%u bytes of output", OUTPUT_MAX);
		return false;
	}
	g_string_append_len(to, (const char *)data, (gssize)len);
	return true;
}

/* Take the streams and the state of one Receive answer; *done once the
 * command ended. */
static bool wsman_take(xmlDoc *doc, HvRun *run, bool *done, GError **error)
{
	xmlNode *b = cfs_xml_child(xmlDocGetRootElement(doc), NS_SOAP, "Body");
	xmlNode *resp = cfs_xml_child(b, NS_SHELL, "ReceiveResponse");
	xmlNode *st = cfs_xml_child(resp, NS_SHELL, "CommandState");
	g_autofree char *state = cfs_xml_attr(st, "State");

	for (xmlNode *s = cfs_xml_child(resp, NS_SHELL, "Stream"); s;
	     s = cfs_xml_next(s, NS_SHELL, "Stream")) {
		g_autofree char *name = cfs_xml_attr(s, "Name");
		g_autofree char *text = cfs_xml_text(s);
		GString *to = g_strcmp0(name, "stdout") == 0 ? run->out :
			      g_strcmp0(name, "stderr") == 0 ? run->err : NULL;

		if (to && !wsman_append(to, text, error))
			return false;
	}
	if (!resp) {
		g_set_error(error, CFS_ERROR, EIO,
			    "WinRM Receive: no ReceiveResponse");
		return false;
	}
	*done = g_strcmp0(state, STATE_DONE) == 0;
	if (*done) {
		g_autofree char *code = cfs_xml_text(
			cfs_xml_child(st, NS_SHELL, "ExitCode"));
		gint64 v = code ? g_ascii_strtoll(code, NULL, 10) : -1;

		run->exit_code = (int)CLAMP(v, G_MININT, G_MAXINT);
	}
	return true;
}

static void wsman_signal(HvShell *shell, const char *cid)
{
	g_autofree char *body = g_strdup_printf(
		"<rsp:Signal CommandId=\"%s\"><rsp:Code>" NS_SHELL
		"/signal/terminate</rsp:Code></rsp:Signal>", cid);
	g_autofree char *env = wsman_envelope(shell, ACT_SHELL "Signal", NULL,
					      body);
	g_autoptr(GError) error = NULL;
	g_autoptr(xmlDoc) doc = wsman_call(shell, "Signal", env,
					   shell->prov->op_timeout_s + 30,
					   &error);

	if (!doc)
		g_debug("hyperv: %s", error->message);
}

bool hv_shell_run(HvShell *shell, const char *script, guint timeout_s,
		  HvReceiveFn on_receive, gpointer data, HvRun *run,
		  GError **error)
{
	g_autofree char *cid = wsman_command(shell, script, error);
	g_autofree char *body = NULL, *env = NULL;
	double deadline = cfs_now() + timeout_s;
	bool done = false;

	if (!cid)
		return false;
	body = g_strdup_printf("<rsp:Receive><rsp:DesiredStream "
			       "CommandId=\"%s\">stdout stderr"
			       "</rsp:DesiredStream></rsp:Receive>", cid);
	env = wsman_envelope(shell, ACT_SHELL "Receive", NULL, body);
	while (!done) {
		g_autoptr(GError) local = NULL;
		g_autoptr(xmlDoc) doc = NULL;
		gsize had = run->out->len + run->err->len;

		if (timeout_s && cfs_now() > deadline) {
			g_set_error(error, CFS_ERROR, ETIMEDOUT, "the script "
				    "ran for more than %us", timeout_s);
			break;
		}
		doc = wsman_call(shell, "Receive", env,
				 shell->prov->op_timeout_s + 30, &local);
		if (!doc && g_error_matches(local, CFS_ERROR, ETIMEDOUT) &&
		    strstr(local->message, WSMAN_TIMED_OUT)) {
			g_debug("hyperv: Receive timed out; asking again");
			if (on_receive && !on_receive(data, run))
				goto stopped;
			continue;
		}
		if (!doc) {
			g_propagate_error(error, g_steal_pointer(&local));
			break;
		}
		if (!wsman_take(doc, run, &done, error))
			break;
		if (on_receive && run->out->len + run->err->len > had &&
		    !on_receive(data, run))
			goto stopped;
	}
	/* Done or not, the service may forget the command now. */
	wsman_signal(shell, cid);
	return done;
stopped:
	wsman_signal(shell, cid);
	g_set_error(error, CFS_ERROR, ECANCELED, "stopped");
	return false;
}
