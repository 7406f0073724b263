// SPDX-License-Identifier: MIT
/*
 * AWS Signature Version 4: canonical request, string to sign, signing key
 * and the headers that carry them. Follows the AWS "Create a signed AWS API
 * request" guide and the aws-sig-v4-test-suite; see tests/unit/test-sigv4.c.
 */
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/error.h"
#include "common/sigv4.h"

#define SIGV4_ALGORITHM "AWS4-HMAC-SHA256"

struct CfsAwsCreds {
	gint refcount;
	char *access_key_id;
	char *secret;		/* wiped on free */
	char *session_token;	/* NULL without one; wiped on free */
};

static void sigv4_wipe_free(char *s)
{
	if (!s)
		return;
	explicit_bzero(s, strlen(s));
	g_free(s);
}

CfsAwsCreds *cfs_aws_creds_new(const char *access_key_id,
			       const char *secret_access_key,
			       const char *session_token, GError **error)
{
	CfsAwsCreds *c;

	if (!access_key_id || !*access_key_id || !secret_access_key ||
	    !*secret_access_key) {
		g_set_error(error, CFS_ERROR, EINVAL,
			    "AWS credentials need an access key id and a secret");
		return NULL;
	}
	c = g_new0(CfsAwsCreds, 1);
	c->refcount = 1;
	c->access_key_id = g_strdup(access_key_id);
	c->secret = g_strdup(secret_access_key);
	if (session_token && *session_token)
		c->session_token = g_strdup(session_token);
	return c;
}

CfsAwsCreds *cfs_aws_creds_ref(CfsAwsCreds *creds)
{
	g_atomic_int_inc(&creds->refcount);
	return creds;
}

void cfs_aws_creds_unref(CfsAwsCreds *creds)
{
	if (!creds || !g_atomic_int_dec_and_test(&creds->refcount))
		return;
	g_free(creds->access_key_id);
	sigv4_wipe_free(creds->secret);
	sigv4_wipe_free(creds->session_token);
	explicit_bzero(creds, sizeof(*creds));
	g_free(creds);
}

const char *cfs_aws_creds_access_key_id(const CfsAwsCreds *creds)
{
	return creds->access_key_id;
}

bool cfs_aws_creds_has_session_token(const CfsAwsCreds *creds)
{
	return creds->session_token != NULL;
}

/* ---- hashing ---------------------------------------------------------- */

static void sigv4_hex(const guchar *bin, gsize len, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (gsize i = 0; i < len; i++) {
		out[2 * i] = digits[bin[i] >> 4];
		out[2 * i + 1] = digits[bin[i] & 0xf];
	}
	out[2 * len] = '\0';
}

void cfs_sigv4_sha256_hex(const void *data, gsize len, char out[65])
{
	guchar md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;

	if (!EVP_Digest(len ? data : "", len, md, &md_len, EVP_sha256(),
			NULL) || md_len != 32)
		g_assert_not_reached();	/* SHA-256 is always available */
	sigv4_hex(md, 32, out);
}

static void sigv4_hmac(const void *key, gsize key_len, const char *msg,
		       guchar out[32])
{
	unsigned int out_len = 0;

	if (!HMAC(EVP_sha256(), key, (int)key_len, (const guchar *)msg,
		  strlen(msg), out, &out_len) || out_len != 32)
		g_assert_not_reached();
}

bool cfs_sigv4_amz_date(time_t t, char out[17])
{
	struct tm tm;

	if (t < 0 || !gmtime_r(&t, &tm) ||
	    strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm) != 16)
		return false;
	return true;
}

/* ---- encoding ---------------------------------------------------------- */

static bool sigv4_unreserved(guchar ch)
{
	return g_ascii_isalnum(ch) || ch == '-' || ch == '.' || ch == '_' ||
	       ch == '~';
}

static void sigv4_encode_append(GString *out, const char *s, gsize len,
				bool keep_slash)
{
	for (gsize i = 0; i < len; i++) {
		guchar ch = (guchar)s[i];

		if (sigv4_unreserved(ch) || (keep_slash && ch == '/'))
			g_string_append_c(out, (char)ch);
		else
			g_string_append_printf(out, "%%%02X", ch);
	}
}

char *cfs_sigv4_uri_encode(const char *s, gsize len, bool keep_slash)
{
	GString *out = g_string_sized_new(len + 16);

	sigv4_encode_append(out, s, len, keep_slash);
	return g_string_free(out, FALSE);
}

/* Percent-decode; an escape that is not %XX stays as it is. */
static GString *sigv4_decode(const char *s, gsize len)
{
	GString *out = g_string_sized_new(len);

	for (gsize i = 0; i < len; i++) {
		if (s[i] == '%' && i + 2 < len && g_ascii_isxdigit(s[i + 1]) &&
		    g_ascii_isxdigit(s[i + 2])) {
			g_string_append_c(out,
					  (char)(g_ascii_xdigit_value(s[i + 1]) * 16 +
						 g_ascii_xdigit_value(s[i + 2])));
			i += 2;
		} else {
			g_string_append_c(out, s[i]);
		}
	}
	return out;
}

/* Decode then encode once: the canonical form of an on-the-wire piece. */
static void sigv4_reencode_append(GString *out, const char *s, gsize len)
{
	g_autoptr(GString) raw = sigv4_decode(s, len);

	sigv4_encode_append(out, raw->str, raw->len, false);
}

/* ---- URL --------------------------------------------------------------- */

typedef struct {
	char *host;		/* host[:port] as libcurl sends it */
	const char *path;	/* into the URL; not NUL-terminated */
	gsize path_len;
	const char *query;	/* after '?', not NUL-terminated */
	gsize query_len;
} SigV4Url;

static bool sigv4_parse_url(const char *url, SigV4Url *u, GError **error)
{
	const char *sep = strstr(url, "://");
	const char *auth, *auth_end, *host, *host_end, *port = NULL;
	const char *end;
	g_autofree char *scheme = NULL;

	memset(u, 0, sizeof(*u));
	if (!sep || sep == url)
		goto bad;
	scheme = g_ascii_strdown(url, sep - url);
	auth = sep + 3;
	auth_end = auth + strcspn(auth, "/?#");
	host = auth;
	for (const char *p = auth; p < auth_end; p++)
		if (*p == '@')
			host = p + 1;	/* drop user:password@ */
	if (*host == '[') {
		host_end = memchr(host, ']', auth_end - host);
		if (!host_end)
			goto bad;
		host_end++;
	} else {
		host_end = memchr(host, ':', auth_end - host);
		if (!host_end)
			host_end = auth_end;
	}
	if (host_end == host)
		goto bad;
	if (host_end < auth_end) {
		if (*host_end != ':')
			goto bad;
		port = host_end + 1;
	}
	if (port && (port == auth_end ||
		     (!strcmp(scheme, "http") && auth_end - port == 2 &&
		      !strncmp(port, "80", 2)) ||
		     (!strcmp(scheme, "https") && auth_end - port == 3 &&
		      !strncmp(port, "443", 3))))
		port = NULL;
	u->host = port ? g_strndup(host, auth_end - host)
		       : g_strndup(host, host_end - host);

	end = auth_end + strcspn(auth_end, "#");
	u->path = auth_end;
	u->path_len = strcspn(auth_end, "?#");
	if (u->path[u->path_len] == '?') {
		u->query = u->path + u->path_len + 1;
		u->query_len = end - u->query;
	}
	return true;
bad:
	g_set_error(error, CFS_ERROR, EINVAL, "sigv4: bad URL \"%s\"", url);
	return false;
}

/* ---- canonical request pieces ----------------------------------------- */

static void sigv4_canonical_uri(GString *out, const char *path, gsize len,
				bool s3)
{
	g_auto(GStrv) parts = NULL;
	g_autofree char *copy = NULL;
	g_autoptr(GPtrArray) segs = NULL;
	guint n;
	bool trailing;

	if (len == 0) {
		g_string_append_c(out, '/');
		return;
	}
	if (s3) {
		/* No normalisation: "a//b" and "./" are distinct keys. */
		const char *p = path, *endp = path + len;

		while (p < endp) {
			const char *slash = memchr(p, '/', endp - p);
			const char *seg_end = slash ? slash : endp;

			sigv4_reencode_append(out, p, seg_end - p);
			if (!slash)
				break;
			g_string_append_c(out, '/');
			p = slash + 1;
		}
		return;
	}
	copy = g_strndup(path, len);
	parts = g_strsplit(copy, "/", -1);
	segs = g_ptr_array_new();
	n = g_strv_length(parts);
	for (guint i = 0; i < n; i++) {
		const char *s = parts[i];

		if (!*s || !strcmp(s, "."))
			continue;
		if (!strcmp(s, "..")) {
			if (segs->len)
				g_ptr_array_remove_index(segs, segs->len - 1);
			continue;
		}
		g_ptr_array_add(segs, (gpointer)s);
	}
	trailing = n > 0 && (!*parts[n - 1] || !strcmp(parts[n - 1], ".") ||
			     !strcmp(parts[n - 1], ".."));
	g_string_append_c(out, '/');
	for (guint i = 0; i < segs->len; i++) {
		const char *s = g_ptr_array_index(segs, i);

		if (i)
			g_string_append_c(out, '/');
		/* Encode the on-the-wire form again: '%' becomes "%25". */
		sigv4_encode_append(out, s, strlen(s), false);
	}
	if (trailing && segs->len)
		g_string_append_c(out, '/');
}

static int sigv4_cmp_param(gconstpointer a, gconstpointer b)
{
	const char *const *pa = *(const char *const *const *)a;
	const char *const *pb = *(const char *const *const *)b;
	int r = strcmp(pa[0], pb[0]);

	return r ? r : strcmp(pa[1], pb[1]);
}

static void sigv4_strv_free(gpointer p)
{
	g_strfreev(p);
}

/* Sorted by encoded name, then encoded value; "k" alone means "k=". */
static void sigv4_canonical_query(GString *out, const char *q, gsize len)
{
	g_autoptr(GPtrArray) params = g_ptr_array_new_with_free_func(
		sigv4_strv_free);
	const char *p = q, *endp = q + len;

	while (q && p < endp) {
		const char *amp = memchr(p, '&', endp - p);
		const char *pend = amp ? amp : endp;
		const char *eq = memchr(p, '=', pend - p);
		const char *kend = eq ? eq : pend;
		GString *k, *v;
		char **pair;

		if (pend > p) {
			k = g_string_new(NULL);
			v = g_string_new(NULL);
			sigv4_reencode_append(k, p, kend - p);
			if (eq)
				sigv4_reencode_append(v, eq + 1, pend - eq - 1);
			pair = g_new0(char *, 3);
			pair[0] = g_string_free(k, FALSE);
			pair[1] = g_string_free(v, FALSE);
			g_ptr_array_add(params, pair);
		}
		p = pend + 1;
	}
	g_ptr_array_sort(params, sigv4_cmp_param);
	for (guint i = 0; i < params->len; i++) {
		char **pair = g_ptr_array_index(params, i);

		if (i)
			g_string_append_c(out, '&');
		g_string_append_printf(out, "%s=%s", pair[0], pair[1]);
	}
}

typedef struct {
	char *name;		/* lowercase */
	GString *value;		/* trimmed, spaces collapsed, repeats joined */
} SigV4Header;

static void sigv4_header_free(gpointer p)
{
	SigV4Header *h = p;

	g_free(h->name);
	g_string_free(h->value, TRUE);
	g_free(h);
}

static int sigv4_cmp_header(gconstpointer a, gconstpointer b)
{
	const SigV4Header *ha = *(const SigV4Header *const *)a;
	const SigV4Header *hb = *(const SigV4Header *const *)b;

	return strcmp(ha->name, hb->name);
}

/* Trim, and turn each run of spaces or tabs into one space. */
static void sigv4_append_trimmed(GString *out, const char *v)
{
	bool space = false;

	while (*v == ' ' || *v == '\t')
		v++;
	for (; *v; v++) {
		if (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n') {
			space = true;
			continue;
		}
		if (space)
			g_string_append_c(out, ' ');
		space = false;
		g_string_append_c(out, *v);
	}
}

static void sigv4_add_header(GPtrArray *hdrs, const char *name,
			     const char *value)
{
	g_autoptr(GString) v = g_string_new(NULL);
	SigV4Header *h;

	sigv4_append_trimmed(v, value);
	for (guint i = 0; i < hdrs->len; i++) {
		h = g_ptr_array_index(hdrs, i);
		if (!strcmp(h->name, name)) {
			g_string_append_printf(h->value, ",%s", v->str);
			return;
		}
	}
	h = g_new0(SigV4Header, 1);
	h->name = g_ascii_strdown(name, -1);
	h->value = g_steal_pointer(&v);
	g_ptr_array_add(hdrs, h);
}

static const char *const sigv4_reserved[] = {
	"authorization", "x-amz-date", "x-amz-security-token",
	"x-amz-content-sha256",
};

/* Collect the caller's headers; *host_given says whether Host was one. */
static bool sigv4_collect_headers(GPtrArray *hdrs, const char *const *in,
				  bool *host_given, GError **error)
{
	*host_given = false;
	for (guint i = 0; in && in[i]; i++) {
		const char *line = in[i];
		gsize nlen = strcspn(line, ":;");
		g_autofree char *name = NULL;

		if (!line[nlen] || nlen == 0) {
			g_set_error(error, CFS_ERROR, EINVAL,
				    "sigv4: header \"%s\" has no name or colon",
				    line);
			return false;
		}
		name = g_ascii_strdown(line, nlen);
		g_strchomp(name);
		for (guint r = 0; r < G_N_ELEMENTS(sigv4_reserved); r++) {
			if (!strcmp(name, sigv4_reserved[r])) {
				g_set_error(error, CFS_ERROR, EINVAL,
					    "sigv4: header %s is set by the signer",
					    name);
				return false;
			}
		}
		if (line[nlen] == ';' || !line[nlen + strspn(line + nlen + 1,
							     " \t") + 1])
			continue;	/* libcurl: removed, or sent empty */
		if (!strcmp(name, "host"))
			*host_given = true;
		sigv4_add_header(hdrs, name, line + nlen + 1);
	}
	return true;
}

/* ---- signing ------------------------------------------------------------ */

static bool sigv4_token_ok(const char *s, bool upper_only)
{
	if (!s || !*s)
		return false;
	for (; *s; s++) {
		if (upper_only ? !g_ascii_isupper(*s)
			       : (*s == '/' || g_ascii_isspace(*s) ||
				  !g_ascii_isprint(*s)))
			return false;
	}
	return true;
}

static bool sigv4_payload_hash_ok(const char *h)
{
	if (!strcmp(h, CFS_SIGV4_UNSIGNED_PAYLOAD))
		return true;
	if (strlen(h) != 64)
		return false;
	for (; *h; h++)
		if (!g_ascii_isdigit(*h) && !(*h >= 'a' && *h <= 'f'))
			return false;
	return true;
}

static bool sigv4_check_request(const CfsSigV4Request *req, GError **error)
{
	const char *what = NULL;

	if (!sigv4_token_ok(req->method, true))
		what = "method";
	else if (!req->url)
		what = "URL";
	else if (!sigv4_token_ok(req->region, false))
		what = "region";
	else if (!sigv4_token_ok(req->service, false))
		what = "service";
	else if (req->payload_sha256 &&
		 !sigv4_payload_hash_ok(req->payload_sha256))
		what = "payload hash";
	else if (!req->payload_sha256 && !req->body && req->body_len)
		what = "body";
	if (!what)
		return true;
	g_set_error(error, CFS_ERROR, EINVAL, "sigv4: bad or missing %s", what);
	return false;
}

/* kSigning = HMAC chain over date, region, service, "aws4_request". */
static void sigv4_signing_key(const CfsAwsCreds *creds, const char *date,
			      const char *region, const char *service,
			      guchar key[32])
{
	g_autofree char *ksecret = g_strconcat("AWS4", creds->secret, NULL);
	guchar k1[32], k2[32];

	sigv4_hmac(ksecret, strlen(ksecret), date, k1);
	sigv4_hmac(k1, 32, region, k2);
	sigv4_hmac(k2, 32, service, k1);
	sigv4_hmac(k1, 32, "aws4_request", key);
	explicit_bzero(ksecret, strlen(ksecret));
	explicit_bzero(k1, sizeof(k1));
	explicit_bzero(k2, sizeof(k2));
}

void cfs_sigv4_result_free(CfsSigV4Result *res)
{
	if (!res)
		return;
	if (res->headers)
		g_ptr_array_unref(res->headers);
	g_free(res->canonical_request);
	g_free(res->string_to_sign);
	g_free(res->signed_headers);
	g_free(res->signature);
	g_free(res->authorization);
	g_free(res);
}

CfsSigV4Result *cfs_sigv4_sign_full(const CfsAwsCreds *creds,
				    const CfsSigV4Request *req,
				    GError **error)
{
	g_autoptr(CfsSigV4Result) res = NULL;
	g_autoptr(GPtrArray) hdrs = NULL;
	g_autoptr(GString) creq = NULL;
	g_autoptr(GString) sh = NULL;
	g_autofree char *scope = NULL;
	SigV4Url url;
	char amz_date[17], date[9], payload[65], creq_hash[65], sig[65];
	const char *payload_hash;
	guchar key[32], mac[32];
	bool s3, content_sha, host_given;

	if (!creds) {
		g_set_error(error, CFS_ERROR, EINVAL, "sigv4: no credentials");
		return NULL;
	}
	if (!sigv4_check_request(req, error))
		return NULL;
	if (!cfs_sigv4_amz_date(req->now, amz_date)) {
		g_set_error(error, CFS_ERROR, EINVAL, "sigv4: bad time");
		return NULL;
	}
	memcpy(date, amz_date, 8);
	date[8] = '\0';
	if (!sigv4_parse_url(req->url, &url, error))
		return NULL;
	s3 = !strcmp(req->service, "s3");
	content_sha = s3 || (req->flags & CFS_SIGV4_CONTENT_SHA256);

	if (req->payload_sha256) {
		payload_hash = req->payload_sha256;
	} else {
		cfs_sigv4_sha256_hex(req->body, req->body_len, payload);
		payload_hash = payload;
	}

	hdrs = g_ptr_array_new_with_free_func(sigv4_header_free);
	if (!sigv4_collect_headers(hdrs, req->headers, &host_given, error)) {
		g_free(url.host);
		return NULL;
	}
	if (!host_given)
		sigv4_add_header(hdrs, "host", url.host);
	sigv4_add_header(hdrs, "x-amz-date", amz_date);
	if (content_sha)
		sigv4_add_header(hdrs, "x-amz-content-sha256", payload_hash);
	if (creds->session_token)
		sigv4_add_header(hdrs, "x-amz-security-token",
				 creds->session_token);
	g_ptr_array_sort(hdrs, sigv4_cmp_header);

	/* Canonical request. */
	creq = g_string_sized_new(512);
	sh = g_string_new(NULL);
	g_string_append_printf(creq, "%s\n", req->method);
	sigv4_canonical_uri(creq, url.path, url.path_len, s3);
	g_string_append_c(creq, '\n');
	sigv4_canonical_query(creq, url.query, url.query_len);
	g_string_append_c(creq, '\n');
	for (guint i = 0; i < hdrs->len; i++) {
		const SigV4Header *h = g_ptr_array_index(hdrs, i);

		g_string_append_printf(creq, "%s:%s\n", h->name, h->value->str);
		g_string_append_printf(sh, "%s%s", i ? ";" : "", h->name);
	}
	g_string_append_printf(creq, "\n%s\n%s", sh->str, payload_hash);

	/* String to sign and signature. */
	res = g_new0(CfsSigV4Result, 1);
	scope = g_strdup_printf("%s/%s/%s/aws4_request", date, req->region,
				req->service);
	cfs_sigv4_sha256_hex(creq->str, creq->len, creq_hash);
	res->string_to_sign = g_strdup_printf(SIGV4_ALGORITHM "\n%s\n%s\n%s",
					      amz_date, scope, creq_hash);
	sigv4_signing_key(creds, date, req->region, req->service, key);
	sigv4_hmac(key, sizeof(key), res->string_to_sign, mac);
	explicit_bzero(key, sizeof(key));
	sigv4_hex(mac, sizeof(mac), sig);

	res->signature = g_strdup(sig);
	res->signed_headers = g_strdup(sh->str);
	res->canonical_request = g_string_free(g_steal_pointer(&creq), FALSE);
	res->authorization = g_strdup_printf(
		SIGV4_ALGORITHM " Credential=%s/%s, SignedHeaders=%s, Signature=%s",
		creds->access_key_id, scope, sh->str, sig);

	res->headers = g_ptr_array_new_with_free_func(g_free);
	if (!host_given && !(req->flags & CFS_SIGV4_NO_HOST_HEADER))
		g_ptr_array_add(res->headers,
				g_strdup_printf("Host: %s", url.host));
	g_ptr_array_add(res->headers,
			g_strdup_printf("X-Amz-Date: %s", amz_date));
	if (content_sha)
		g_ptr_array_add(res->headers,
				g_strdup_printf("x-amz-content-sha256: %s",
						payload_hash));
	if (creds->session_token)
		g_ptr_array_add(res->headers,
				g_strdup_printf("X-Amz-Security-Token: %s",
						creds->session_token));
	g_ptr_array_add(res->headers, g_strdup_printf("Authorization: %s",
						      res->authorization));
	g_free(url.host);
	return g_steal_pointer(&res);
}

GPtrArray *cfs_sigv4_sign(const CfsAwsCreds *creds,
			  const CfsSigV4Request *req, GError **error)
{
	g_autoptr(CfsSigV4Result) res = cfs_sigv4_sign_full(creds, req, error);

	if (!res)
		return NULL;
	return g_steal_pointer(&res->headers);
}
