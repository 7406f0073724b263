// SPDX-License-Identifier: MIT
/*
 * Credential sources outside the files: a profile's credential_process,
 * the container credentials endpoint (ECS, EKS pod identity), the EC2
 * instance metadata service (IMDSv2) and the SSO portal. Each answer is
 * bounded in size and time, and its secrets are wiped once they are
 * credentials.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/secret.h"
#include "common/util.h"
#include "providers/aws/chain-private.h"

#define AWS_PROCESS_TIMEOUT_S 60
#define AWS_PROCESS_OUTPUT_MAX (64 * 1024)
#define AWS_CONTAINER_HOST "http://169.254.170.2"
#define AWS_IMDS_HOST "http://169.254.169.254"
#define AWS_IMDS_HOST6 "http://[fd00:ec2::254]"
#define AWS_IMDS_TOKEN_TTL "21600"

static const char *const process_keys[4] = {
	"AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration",
};
static const char *const metadata_keys[4] = {
	"AccessKeyId", "SecretAccessKey", "Token", "Expiration",
};

/* --- credential_process --- */

/* Read @fd into @out until EOF, the size limit or the deadline. */
static bool process_read(int fd, GString *out, gint64 deadline,
			 const char *name, GError **error)
{
	char buf[4096];

	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		gint64 left = (deadline - g_get_monotonic_time()) / 1000;
		ssize_t n;

		if (left <= 0) {
			g_set_error(error, CFS_ERROR, ETIMEDOUT, "the "
				    "credential_process of profile '%s' ran "
				    "for over %d s", name,
				    AWS_PROCESS_TIMEOUT_S);
			return false;
		}
		if (poll(&p, 1, (int)MIN(left, 1000)) < 0 && errno != EINTR)
			break;
		if (!p.revents)
			continue;
		n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (out->len + (gsize)n > AWS_PROCESS_OUTPUT_MAX) {
			cfs_secret_wipe(buf, sizeof(buf));
			g_set_error(error, CFS_ERROR, EMSGSIZE, "the "
				    "credential_process of profile '%s' wrote "
				    "over %d bytes", name,
				    AWS_PROCESS_OUTPUT_MAX);
			return false;
		}
		g_string_append_len(out, buf, n);
	}
	cfs_secret_wipe(buf, sizeof(buf));
	return true;
}

/* Run @argv (no shell, stdin and stderr /dev/null) and collect stdout. */
static bool process_run(char **argv, GString *out, const char *name,
			GError **error)
{
	GPid pid;
	int fd = -1, status = 0;
	bool ok;

	if (!g_spawn_async_with_pipes(NULL, argv, NULL, G_SPAWN_SEARCH_PATH |
				      G_SPAWN_DO_NOT_REAP_CHILD |
				      G_SPAWN_STDERR_TO_DEV_NULL, NULL, NULL,
				      &pid, NULL, &fd, NULL, error)) {
		g_prefix_error(error, "the credential_process of profile "
			       "'%s': ", name);
		return false;
	}
	ok = process_read(fd, out, g_get_monotonic_time() +
			  AWS_PROCESS_TIMEOUT_S * G_USEC_PER_SEC, name, error);
	close(fd);
	if (!ok)
		kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	g_spawn_close_pid(pid);
	if (ok && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
		g_set_error(error, CFS_ERROR, EACCES, "the credential_process "
			    "of profile '%s' failed (%s %d)", name,
			    WIFEXITED(status) ? "exit status" : "signal",
			    WIFEXITED(status) ? WEXITSTATUS(status) :
						WTERMSIG(status));
		return false;
	}
	return ok;
}

AwsHit aws_process_creds(const char *name, const char *cmd, AwsFound *out,
			 GError **error)
{
	g_auto(GStrv) argv = NULL;
	g_autoptr(CfsSecretString) text = g_string_sized_new(
		AWS_PROCESS_OUTPUT_MAX + 1);
	g_autoptr(json_object) o = NULL;
	g_autoptr(GByteArray) body = NULL;
	g_autofree char *what = g_strdup_printf("the credential_process of "
						"profile '%s'", name);
	json_object *v = NULL;

	if (!g_shell_parse_argv(cmd, NULL, &argv, error)) {
		g_prefix_error(error, "%s: ", what);
		return AWS_FAIL;
	}
	if (!process_run(argv, text, name, error))
		return AWS_FAIL;
	body = g_byte_array_new_take((guint8 *)g_memdup2(text->str, text->len),
				     text->len);
	o = aws_json_parse_secret(body, what, error);
	if (!o)
		return AWS_FAIL;
	if (!json_object_object_get_ex(o, "Version", &v) ||
	    json_object_get_int(v) != 1) {
		g_set_error(error, CFS_ERROR, EINVAL, "%s: its output is not "
			    "of Version 1", what);
		return AWS_FAIL;
	}
	if (!aws_found_from_json(o, process_keys, what, out, error))
		return AWS_FAIL;
	out->source = g_strdup_printf("the credential_process of profile %s",
				      name);
	return AWS_HIT;
}

/* --- metadata services --- */

/* Wipe the request headers that carried a token. */
static void headers_wipe(CfsHttpRequest *req)
{
	for (struct curl_slist *h = req->headers; h; h = h->next)
		cfs_secret_wipe(h->data, strlen(h->data));
}

/* GET @url with @header (a secret, or NULL); the answer as JSON. */
static json_object *metadata_get(AwsProvider *prov, const char *url,
				 const char *header, guint timeout_s,
				 const char *what, GError **error)
{
	g_autoptr(CfsHttpRequest) req = cfs_http_request_new(url);
	bool ok;

	if (header)
		cfs_http_request_add_header(req, header);
	req->timeout_s = timeout_s;
	req->max_attempts = 2;
	ok = aws_perform_small(prov, req, what, error);
	headers_wipe(req);
	return ok ? aws_json_parse_secret(req->response, what, error) : NULL;
}

/* Whether the container endpoint @url may be sent a token: https, or
 * http to this host or the ECS and EKS link-local addresses. */
static bool container_url_ok(const char *url)
{
	g_autoptr(GUri) uri = g_uri_parse(url, G_URI_FLAGS_NONE, NULL);
	const char *host = uri ? g_uri_get_host(uri) : NULL;
	static const char *const local[] = {
		"localhost", "::1", "169.254.170.2", "169.254.170.23",
		"fd00:ec2::23", NULL,
	};

	if (!host)
		return false;
	if (g_str_equal(g_uri_get_scheme(uri), "https"))
		return true;
	if (!g_str_equal(g_uri_get_scheme(uri), "http"))
		return false;
	return g_str_has_prefix(host, "127.") ||
	       g_strv_contains(local, host);
}

/* "Authorization: <token>" from the _FILE or the variable; NULL with
 * nothing set (no error) or on error. */
static char *container_auth(GError **error)
{
	g_autofree char *file = aws_env(
		"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
	g_autoptr(CfsSecret) token = NULL;

	if (file)
		token = cfs_secret_read_file(file, error);
	else
		token = aws_env("AWS_CONTAINER_AUTHORIZATION_TOKEN");
	if (!token)
		return NULL;
	if (strpbrk(token, "\r\n")) {
		g_set_error(error, CFS_ERROR, EINVAL, "the container "
			    "authorization token holds a line break");
		return NULL;
	}
	return g_strdup_printf("Authorization: %s", token);
}

AwsHit aws_container_creds(AwsProvider *prov, AwsFound *out, GError **error)
{
	g_autofree char *rel = aws_env(
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
	g_autofree char *full = aws_env("AWS_CONTAINER_CREDENTIALS_FULL_URI");
	g_autofree char *url = NULL, *shown = NULL, *what = NULL;
	g_autoptr(CfsSecret) auth = NULL;
	g_autoptr(json_object) o = NULL;
	g_autoptr(GError) local = NULL;

	if (!rel && !full)
		return AWS_MISS;
	url = rel ? g_strconcat(AWS_CONTAINER_HOST, rel, NULL) :
		    g_strdup(full);
	shown = cfs_url_redact(url);
	if (!rel && !container_url_ok(url)) {
		g_set_error(error, CFS_ERROR, EINVAL, "AWS_CONTAINER_"
			    "CREDENTIALS_FULL_URI %s is neither https nor "
			    "a loopback address", shown);
		return AWS_FAIL;
	}
	auth = container_auth(&local);
	if (local) {
		g_propagate_error(error, g_steal_pointer(&local));
		return AWS_FAIL;
	}
	what = g_strdup_printf("container credentials at %s", shown);
	o = metadata_get(prov, url, auth, 5, what, error);
	if (!o || !aws_found_from_json(o, metadata_keys, what, out, error))
		return AWS_FAIL;
	out->source = g_steal_pointer(&what);
	return AWS_HIT;
}

static char *imds_base(void)
{
	char *base = aws_env("AWS_EC2_METADATA_SERVICE_ENDPOINT");
	g_autofree char *mode = aws_env(
		"AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE");
	gsize n;

	if (!base)
		base = g_strdup(mode && !g_ascii_strcasecmp(mode, "IPv6") ?
				AWS_IMDS_HOST6 : AWS_IMDS_HOST);
	n = strlen(base);
	while (n > 0 && base[n - 1] == '/')
		base[--n] = '\0';
	return base;
}

static guint imds_timeout(void)
{
	g_autofree char *t = aws_env("AWS_METADATA_SERVICE_TIMEOUT");
	guint64 v = t ? g_ascii_strtoull(t, NULL, 10) : 0;

	return v >= 1 && v <= 60 ? (guint)v : 1;
}

/* PUT /latest/api/token: the session token (a secret). */
static char *imds_token(AwsProvider *prov, const char *base, guint timeout,
			GError **error)
{
	g_autofree char *url = g_strdup_printf("%s/latest/api/token", base);
	g_autoptr(CfsHttpRequest) req = cfs_http_request_new(url);
	char *token;

	req->method = g_strdup("PUT");
	cfs_http_request_add_header(req, "X-aws-ec2-metadata-token-ttl-"
				    "seconds: " AWS_IMDS_TOKEN_TTL);
	req->timeout_s = timeout;
	req->max_attempts = 1;
	if (!aws_perform_small(prov, req, "the instance metadata service",
			       error))
		return NULL;
	token = g_strstrip(g_strndup((const char *)req->response->data,
				     req->response->len));
	cfs_secret_wipe(req->response->data, req->response->len);
	if (!*token || strpbrk(token, "\r\n")) {
		cfs_secret_free(token);
		g_set_error(error, CFS_ERROR, EIO, "the instance metadata "
			    "service gave no session token");
		return NULL;
	}
	return token;
}

/* The first role listed under iam/security-credentials/. */
static char *imds_role(AwsProvider *prov, const char *base,
		       const char *header, guint timeout, GError **error)
{
	g_autofree char *url = g_strdup_printf(
		"%s/latest/meta-data/iam/security-credentials/", base);
	g_autoptr(CfsHttpRequest) req = cfs_http_request_new(url);
	g_autofree char *text = NULL;
	char *role;

	cfs_http_request_add_header(req, header);
	req->timeout_s = timeout;
	req->max_attempts = 2;
	if (!aws_perform_small(prov, req, "the instance metadata service",
			       error)) {
		headers_wipe(req);
		return NULL;
	}
	headers_wipe(req);
	text = g_strndup((const char *)req->response->data,
			 req->response->len);
	role = g_strstrip(g_strndup(text, strcspn(text, "\r\n")));
	if (!*role || strchr(role, '/') || g_str_equal(role, "..")) {
		g_free(role);
		g_set_error(error, CFS_ERROR, EACCES, "the instance has no "
			    "instance profile (no IAM role)");
		return NULL;
	}
	return role;
}

AwsHit aws_imds_creds(AwsProvider *prov, AwsFound *out, GError **error)
{
	g_autofree char *off = aws_env("AWS_EC2_METADATA_DISABLED");
	g_autofree char *base = NULL, *role = NULL, *url = NULL;
	g_autofree char *what = NULL;
	g_autoptr(CfsSecret) token = NULL, header = NULL;
	g_autoptr(json_object) o = NULL;
	json_object *code = NULL;
	guint timeout = imds_timeout();

	if (off && !g_ascii_strcasecmp(off, "true"))
		return AWS_MISS;
	base = imds_base();
	token = imds_token(prov, base, timeout, error);
	if (!token)
		return AWS_MISS;
	header = g_strdup_printf("X-aws-ec2-metadata-token: %s", token);
	role = imds_role(prov, base, header, timeout, error);
	if (!role)
		return AWS_MISS;
	url = g_strdup_printf("%s/latest/meta-data/iam/security-credentials/"
			      "%s", base, role);
	what = g_strdup_printf("the instance profile %s (IMDSv2)", role);
	o = metadata_get(prov, url, header, timeout, what, error);
	if (!o)
		return AWS_FAIL;
	if (json_object_object_get_ex(o, "Code", &code) &&
	    g_strcmp0(json_object_get_string(code), "Success") != 0) {
		g_set_error(error, CFS_ERROR, EACCES, "%s: %s", what,
			    json_object_get_string(code));
		return AWS_FAIL;
	}
	if (!aws_found_from_json(o, metadata_keys, what, out, error))
		return AWS_FAIL;
	out->source = g_steal_pointer(&what);
	return AWS_HIT;
}

/* --- SSO --- */

/* The token `aws sso login` cached for @key (session name or start URL):
 * ~/.aws/sso/cache/<sha1 of key>.json. */
static char *sso_token(const char *key, const char *name, GError **error)
{
	g_autofree char *sum = g_compute_checksum_for_string(G_CHECKSUM_SHA1,
							     key, -1);
	g_autofree char *file = g_strdup_printf("%s.json", sum);
	g_autofree char *path = g_build_filename(g_get_home_dir(), ".aws",
						 "sso", "cache", file, NULL);
	g_autoptr(CfsSecret) text = cfs_secret_read_file(path, error);
	g_autoptr(GByteArray) body = NULL;
	g_autoptr(json_object) o = NULL;
	json_object *exp = NULL, *tok = NULL;
	const char *t;
	char *out;

	if (!text) {
		g_prefix_error(error, "profile '%s' uses SSO, and `aws sso "
			       "login` has not been run: ", name);
		return NULL;
	}
	body = g_byte_array_new_take((guint8 *)g_strdup(text), strlen(text));
	o = aws_json_parse_secret(body, path, error);
	if (!o)
		return NULL;
	json_object_object_get_ex(o, "expiresAt", &exp);
	if (aws_parse_time(json_object_get_string(exp)) <= g_get_real_time()) {
		g_set_error(error, CFS_ERROR, EACCES, "profile '%s': the SSO "
			    "token in %s has expired: run `aws sso login`",
			    name, path);
		return NULL;
	}
	if (!json_object_object_get_ex(o, "accessToken", &tok) ||
	    !(t = json_object_get_string(tok)) || !*t || strpbrk(t, "\r\n")) {
		g_set_error(error, CFS_ERROR, EIO, "%s: no accessToken", path);
		return NULL;
	}
	out = cfs_secret_dup(t);
	cfs_secret_wipe((char *)t, strlen(t));
	return out;
}

/* The start URL's cache key and the SSO region of profile @name. */
static bool sso_where(AwsFiles *f, const char *name, char **key,
		      char **region, GError **error)
{
	g_autofree char *session = aws_files_value(f, name, "sso_session");
	g_autofree char *group = NULL;

	if (!session) {
		*key = aws_files_value(f, name, "sso_start_url");
		*region = aws_files_value(f, name, "sso_region");
	} else {
		group = g_strdup_printf("sso-session %s", session);
		*key = g_strdup(session);
		*region = f->conf ? g_key_file_get_value(f->conf, group,
							  "sso_region", NULL) :
				    NULL;
	}
	if (*key && *region && **region)
		return true;
	g_set_error(error, CFS_ERROR, EINVAL, "profile '%s': %s", name,
		    session ? "its sso-session has no sso_region" :
			      "SSO needs sso_start_url and sso_region, or "
			      "sso_session");
	return false;
}

AwsHit aws_sso_creds(AwsProvider *prov, AwsFiles *f, const char *name,
		     AwsFound *out, GError **error)
{
	g_autofree char *account = aws_files_value(f, name, "sso_account_id");
	g_autofree char *role = aws_files_value(f, name, "sso_role_name");
	g_autofree char *key = NULL, *region = NULL, *base = NULL;
	g_autofree char *a = NULL, *r = NULL, *url = NULL, *what = NULL;
	g_autoptr(CfsSecret) token = NULL, header = NULL;
	g_autoptr(json_object) o = NULL;
	json_object *rc = NULL;
	static const char *const keys[4] = {
		"accessKeyId", "secretAccessKey", "sessionToken", "expiration",
	};

	if (!account || !role)
		return AWS_MISS;
	if (!sso_where(f, name, &key, &region, error))
		return AWS_FAIL;
	token = sso_token(key, name, error);
	if (!token)
		return AWS_FAIL;
	base = aws_endpoint(prov, AWS_SSO, region);
	a = cfs_sigv4_uri_encode(account, strlen(account), false);
	r = cfs_sigv4_uri_encode(role, strlen(role), false);
	url = g_strdup_printf("%s/federation/credentials?account_id=%s"
			      "&role_name=%s", base, a, r);
	header = g_strdup_printf("x-amz-sso_bearer_token: %s", token);
	what = g_strdup_printf("SSO GetRoleCredentials of %s in %s", role,
			       account);
	o = metadata_get(prov, url, header, 30, what, error);
	if (!o)
		return AWS_FAIL;
	if (!json_object_object_get_ex(o, "roleCredentials", &rc) ||
	    !aws_found_from_json(rc, keys, what, out, error)) {
		if (error && !*error)
			g_set_error(error, CFS_ERROR, EIO, "%s: no "
				    "roleCredentials", what);
		return AWS_FAIL;
	}
	out->source = g_strdup_printf("SSO role %s of account %s (profile "
				      "%s)", role, account, name);
	return AWS_HIT;
}
