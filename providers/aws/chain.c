// SPDX-License-Identifier: MIT
/*
 * The AWS credential chain, in the AWS CLI's order; the first source
 * that has credentials wins:
 *   1. AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN),
 *      unless [aws] profile is set (like `aws --profile`);
 *   2. the profile's role_arn: STS AssumeRole with the credentials of its
 *      source_profile or credential_source (Environment,
 *      Ec2InstanceMetadata, EcsContainer), or AssumeRoleWithWebIdentity
 *      with its web_identity_token_file;
 *   3. AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN: AssumeRoleWithWebIdentity;
 *   4. the profile's SSO role (sso_session or sso_start_url, sso_account_id,
 *      sso_role_name): the token `aws sso login` cached, then
 *      GetRoleCredentials at the SSO portal;
 *   5. the profile's keys in the shared credentials file;
 *   6. the profile's credential_process (chain-proc.c);
 *   7. the profile's keys in the config file;
 *   8. container credentials (chain-proc.c);
 *   9. the EC2 instance profile through IMDSv2 (chain-proc.c).
 * Temporary credentials carry their expiry; aws_creds_get() caches them
 * and fetches them again ahead of it.
 */
#include <json-c/json.h>
#include <libxml/parser.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/secret.h"
#include "providers/aws/chain-private.h"

/* Keys without an expiry are read again at most this often. */
#define AWS_STATIC_TTL_S 60
/* Temporary ones are fetched again this long before they expire (or half
 * their lifetime, if that is shorter). */
#define AWS_REFRESH_S 300
/* source_profile hops. */
#define AWS_PROFILE_DEPTH 5
#define AWS_STS_VERSION "2011-06-15"

void aws_found_clear(AwsFound *f)
{
	g_clear_pointer(&f->creds, cfs_aws_creds_unref);
	g_clear_pointer(&f->source, g_free);
	f->expires = 0;
}

gint64 aws_parse_time(const char *iso)
{
	g_autoptr(GDateTime) t = iso ? g_date_time_new_from_iso8601(
		iso, g_time_zone_new_utc()) : NULL;

	return t ? g_date_time_to_unix(t) * G_USEC_PER_SEC +
		   g_date_time_get_microsecond(t) : -1;
}

/* A string member of @o, wiped inside the object once copied: the copy
 * is the caller's (cfs_secret_free). NULL if absent or empty. */
static char *json_secret(json_object *o, const char *key)
{
	json_object *v = NULL;
	const char *s;
	char *out;

	if (!json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	s = json_object_get_string(v);
	out = s && *s ? cfs_secret_dup(s) : NULL;
	if (s)
		cfs_secret_wipe((char *)s, strlen(s));
	return out;
}

bool aws_found_from_json(json_object *o, const char *const keys[4],
			 const char *what, AwsFound *out, GError **error)
{
	g_autoptr(CfsSecret) id = json_secret(o, keys[0]);
	g_autoptr(CfsSecret) secret = json_secret(o, keys[1]);
	g_autoptr(CfsSecret) token = json_secret(o, keys[2]);
	json_object *exp = NULL;

	if (!id || !secret) {
		g_set_error(error, CFS_ERROR, EIO, "%s: no %s or %s in the "
			    "answer", what, keys[0], keys[1]);
		return false;
	}
	out->expires = 0;
	if (keys[3] && json_object_object_get_ex(o, keys[3], &exp) && exp) {
		if (json_object_is_type(exp, json_type_int))	/* SSO: ms */
			out->expires = json_object_get_int64(exp) * 1000;
		else
			out->expires = aws_parse_time(
				json_object_get_string(exp));
		if (out->expires <= 0) {
			g_set_error(error, CFS_ERROR, EIO, "%s: %s is not a "
				    "time", what, keys[3]);
			return false;
		}
	}
	out->creds = cfs_aws_creds_new(id, secret, token, error);
	return out->creds != NULL;
}

json_object *aws_json_parse_secret(GByteArray *body, const char *what,
				   GError **error)
{
	g_autoptr(CfsSecret) text = body ?
		g_strndup((const char *)body->data, body->len) : NULL;
	json_object *o = text ? json_tokener_parse(text) : NULL;

	if (body)
		cfs_secret_wipe(body->data, body->len);
	if (!o || !json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		g_set_error(error, CFS_ERROR, EIO, "%s: the answer is not a "
			    "JSON object", what);
		return NULL;
	}
	return o;
}

/* --- STS --- */

/* The text of @node's child @name, wiped in the document. Transfer full:
 * cfs_secret_free. */
static char *xml_secret(xmlNode *node, const char *name)
{
	xmlNode *n = aws_xml_child(node, name);
	g_autoptr(CfsSecretString) s = g_string_new(NULL);

	for (xmlNode *c = n ? n->children : NULL; c; c = c->next) {
		if (!c->content)
			continue;
		g_string_append(s, (const char *)c->content);
		cfs_secret_wipe(c->content, strlen((const char *)c->content));
	}
	return s->len ? cfs_secret_dup(g_strstrip(s->str)) : NULL;
}

/*
 * One STS call (@body: "Action=...&..." without Version, a secret), signed
 * with @signer or, for web identity, not signed. The credentials in
 * <Action>Result/Credentials into @out.
 */
static bool sts_call(AwsProvider *prov, const char *action, char *body,
		     CfsAwsCreds *signer, AwsFound *out, GError **error)
{
	g_autofree char *base = aws_endpoint(prov, AWS_STS, prov->region);
	g_autofree char *url = g_strdup_printf("%s/", base);
	g_autofree char *what = g_strdup_printf("STS %s at %s", action, base);
	g_autofree char *result = g_strdup_printf("%sResult", action);
	g_autoptr(CfsHttpRequest) req = cfs_http_request_new(url);
	g_autoptr(xmlDoc) doc = NULL;
	g_autoptr(CfsSecret) id = NULL, secret = NULL, token = NULL;
	g_autofree char *exp = NULL;
	xmlNode *c;

	req->method = g_strdup("POST");
	cfs_http_request_add_header(req, "Content-Type: application/"
				    "x-www-form-urlencoded; charset=utf-8");
	req->body = cfs_secret_bytes_take(g_strdup_printf(
		"Action=%s&Version=%s&%s", action, AWS_STS_VERSION, body));
	req->timeout_s = 30;
	if (signer && !aws_sign_creds(signer, req, "sts", prov->region, error))
		return false;
	if (!aws_perform_small(prov, req, what, error))
		return false;
	doc = xmlReadMemory((const char *)req->response->data,
			    (int)req->response->len, "sts.xml", NULL,
			    XML_PARSE_NONET | XML_PARSE_NOERROR |
			    XML_PARSE_NOWARNING);
	cfs_secret_wipe(req->response->data, req->response->len);
	c = doc ? aws_xml_path(xmlDocGetRootElement(doc), result) : NULL;
	c = aws_xml_child(c, "Credentials");
	id = xml_secret(c, "AccessKeyId");
	secret = xml_secret(c, "SecretAccessKey");
	token = xml_secret(c, "SessionToken");
	exp = aws_xml_text(c, "Expiration");
	if (!id || !secret || !token || aws_parse_time(exp) <= 0) {
		g_set_error(error, CFS_ERROR, EIO, "%s: no credentials in the "
			    "answer", what);
		return false;
	}
	out->creds = cfs_aws_creds_new(id, secret, token, error);
	out->expires = aws_parse_time(exp);
	return out->creds != NULL;
}

static char *session_name(const char *configured)
{
	return configured ? aws_form_escape(configured) :
		g_strdup_printf("cloudfs-%" G_GINT64_FORMAT,
				g_get_real_time() / G_USEC_PER_SEC);
}

static AwsHit assume_role(AwsProvider *prov, AwsFiles *f, const char *name,
			  const char *role_arn, AwsFound *src, AwsFound *out,
			  GError **error)
{
	g_autofree char *arn = aws_form_escape(role_arn);
	g_autofree char *sess_v = aws_files_value(f, name, "role_session_name");
	g_autofree char *ext_v = aws_files_value(f, name, "external_id");
	g_autofree char *dur_v = aws_files_value(f, name, "duration_seconds");
	g_autofree char *sess = session_name(sess_v);
	g_autoptr(GString) body = g_string_new(NULL);

	g_string_append_printf(body, "RoleArn=%s&RoleSessionName=%s", arn,
			       sess);
	if (ext_v) {
		g_autofree char *e = aws_form_escape(ext_v);

		g_string_append_printf(body, "&ExternalId=%s", e);
	}
	if (dur_v) {
		g_autofree char *d = aws_form_escape(dur_v);

		g_string_append_printf(body, "&DurationSeconds=%s", d);
	}
	if (!sts_call(prov, "AssumeRole", body->str, src->creds, out, error)) {
		g_prefix_error(error, "profile '%s': ", name);
		return AWS_FAIL;
	}
	out->source = g_strdup_printf("AssumeRole %s with %s", role_arn,
				      src->source);
	return AWS_HIT;
}

static AwsHit web_identity(AwsProvider *prov, const char *role_arn,
			   const char *token_file, const char *session,
			   AwsFound *out, GError **error)
{
	g_autoptr(CfsSecret) token = cfs_secret_read_file(token_file, error);
	g_autoptr(CfsSecret) tok = NULL;
	g_autofree char *arn = aws_form_escape(role_arn);
	g_autofree char *sess = session_name(session);
	g_autoptr(CfsSecret) body = NULL;

	if (!token) {
		g_prefix_error(error, "web identity token: ");
		return AWS_FAIL;
	}
	tok = aws_form_escape(token);
	body = g_strdup_printf("RoleArn=%s&RoleSessionName=%s"
			       "&WebIdentityToken=%s", arn, sess, tok);
	if (!sts_call(prov, "AssumeRoleWithWebIdentity", body, NULL, out,
		      error))
		return AWS_FAIL;
	out->source = g_strdup_printf("AssumeRoleWithWebIdentity %s (token "
				      "%s)", role_arn, token_file);
	return AWS_HIT;
}

/* --- profiles --- */

void aws_files_clear(AwsFiles *f)
{
	g_clear_pointer(&f->cred, g_key_file_unref);
	g_clear_pointer(&f->conf, g_key_file_unref);
	g_clear_pointer(&f->cred_path, g_free);
	g_clear_pointer(&f->conf_path, g_free);
}

static bool files_load(AwsFiles *f, GError **error)
{
	f->cred_path = aws_credentials_path();
	f->conf_path = aws_config_path();
	if (g_file_test(f->cred_path, G_FILE_TEST_EXISTS)) {
		f->cred = aws_ini_load(f->cred_path, error);
		if (!f->cred)
			return false;
	}
	if (g_file_test(f->conf_path, G_FILE_TEST_EXISTS)) {
		f->conf = aws_ini_load(f->conf_path, error);
		if (!f->conf)
			return false;
	}
	return true;
}

static char *kf_value(GKeyFile *kf, const char *group, const char *key)
{
	char *v = kf && group ? g_key_file_get_value(kf, group, key, NULL) :
				NULL;

	if (v && !*v)
		g_clear_pointer(&v, g_free);
	return v;
}

static char *conf_value(AwsFiles *f, const char *name, const char *key)
{
	g_autofree char *group = f->conf ? aws_config_group(f->conf, name) :
					   NULL;

	return kf_value(f->conf, group, key);
}

char *aws_files_value(AwsFiles *f, const char *name, const char *key)
{
	char *v = kf_value(f->cred, name, key);

	return v ? v : conf_value(f, name, key);
}

static bool profile_exists(AwsFiles *f, const char *name)
{
	g_autofree char *group = f->conf ? aws_config_group(f->conf, name) :
					   NULL;

	return group || (f->cred && g_key_file_has_group(f->cred, name));
}

/* Keys in one file's section. */
static AwsHit static_keys(GKeyFile *kf, const char *group, const char *path,
			  const char *name, AwsFound *out, GError **error)
{
	g_autoptr(CfsSecret) id = kf_value(kf, group, "aws_access_key_id");
	g_autoptr(CfsSecret) secret = kf_value(kf, group,
					       "aws_secret_access_key");
	g_autoptr(CfsSecret) token = kf_value(kf, group, "aws_session_token");

	if (!token)
		token = kf_value(kf, group, "aws_security_token");
	if (!id && !secret)
		return AWS_MISS;
	if (!id || !secret) {
		g_set_error(error, CFS_ERROR, EINVAL,
			    "profile '%s' in %s has %s but not %s", name, path,
			    id ? "aws_access_key_id" : "aws_secret_access_key",
			    id ? "aws_secret_access_key" :
				 "aws_access_key_id");
		return AWS_FAIL;
	}
	out->creds = cfs_aws_creds_new(id, secret, token, error);
	if (!out->creds)
		return AWS_FAIL;
	out->source = g_strdup_printf("profile %s in %s", name, path);
	return AWS_HIT;
}

static AwsHit env_keys(AwsFound *out, GError **error)
{
	g_autoptr(CfsSecret) id = aws_env("AWS_ACCESS_KEY_ID");
	g_autoptr(CfsSecret) secret = aws_env("AWS_SECRET_ACCESS_KEY");
	g_autoptr(CfsSecret) token = aws_env("AWS_SESSION_TOKEN");

	if (!id && !secret)
		return AWS_MISS;
	if (!id || !secret) {
		g_set_error(error, CFS_ERROR, EINVAL, "%s is set but %s is not",
			    id ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
			    id ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
		return AWS_FAIL;
	}
	out->creds = cfs_aws_creds_new(id, secret, token, error);
	if (!out->creds)
		return AWS_FAIL;
	out->source = g_strdup("environment");
	return AWS_HIT;
}

static AwsHit profile_creds(AwsProvider *prov, AwsFiles *f, const char *name,
			    guint depth, bool top, AwsFound *out,
			    GError **error);

/* What a role profile assumes the role with. */
static AwsHit role_source(AwsProvider *prov, AwsFiles *f, const char *name,
			  guint depth, AwsFound *src, GError **error)
{
	g_autofree char *sp = aws_files_value(f, name, "source_profile");
	g_autofree char *cs = aws_files_value(f, name, "credential_source");
	AwsHit hit = AWS_MISS;

	if (sp && g_str_equal(sp, name)) {
		hit = static_keys(f->cred, name, f->cred_path, name, src,
				  error);
		if (hit == AWS_MISS) {
			g_autofree char *g = f->conf ?
				aws_config_group(f->conf, name) : NULL;

			hit = static_keys(f->conf, g, f->conf_path, name, src,
					  error);
		}
	} else if (sp) {
		if (!profile_exists(f, sp)) {
			g_set_error(error, CFS_ERROR, EINVAL, "profile '%s': "
				    "source_profile '%s' does not exist", name,
				    sp);
			return AWS_FAIL;
		}
		hit = profile_creds(prov, f, sp, depth + 1, false, src, error);
	} else if (g_strcmp0(cs, "Environment") == 0) {
		hit = env_keys(src, error);
	} else if (g_strcmp0(cs, "Ec2InstanceMetadata") == 0) {
		hit = aws_imds_creds(prov, src, error);
	} else if (g_strcmp0(cs, "EcsContainer") == 0) {
		hit = aws_container_creds(prov, src, error);
	} else if (cs) {
		g_set_error(error, CFS_ERROR, EINVAL, "profile '%s': "
			    "credential_source '%s' is not Environment, "
			    "Ec2InstanceMetadata or EcsContainer", name, cs);
		return AWS_FAIL;
	} else {
		g_set_error(error, CFS_ERROR, EINVAL, "profile '%s' has "
			    "role_arn but no source_profile, credential_source "
			    "or web_identity_token_file", name);
		return AWS_FAIL;
	}
	if (hit == AWS_MISS && error && !*error)
		g_set_error(error, CFS_ERROR, EACCES, "profile '%s': no "
			    "credentials to assume its role with (%s)", name,
			    sp ? sp : cs);
	return hit == AWS_MISS ? AWS_FAIL : hit;
}

static AwsHit role_profile(AwsProvider *prov, AwsFiles *f, const char *name,
			   const char *arn, guint depth, AwsFound *out,
			   GError **error)
{
	g_autofree char *wif = aws_files_value(f, name,
					       "web_identity_token_file");
	g_autofree char *mfa = aws_files_value(f, name, "mfa_serial");
	g_autofree char *sess = aws_files_value(f, name, "role_session_name");
	AwsFound src = { 0 };
	AwsHit hit;

	if (depth > AWS_PROFILE_DEPTH) {
		g_set_error(error, CFS_ERROR, ELOOP, "profile '%s': more than "
			    "%d source_profile hops (a loop?)", name,
			    AWS_PROFILE_DEPTH);
		return AWS_FAIL;
	}
	if (wif)
		return web_identity(prov, arn, wif, sess, out, error);
	if (mfa) {
		g_set_error(error, CFS_ERROR, ENOTSUP, "profile '%s' asks for "
			    "an MFA code (mfa_serial), which a filesystem "
			    "cannot type", name);
		return AWS_FAIL;
	}
	hit = role_source(prov, f, name, depth, &src, error);
	if (hit == AWS_HIT)
		hit = assume_role(prov, f, name, arn, &src, out, error);
	aws_found_clear(&src);
	return hit;
}

/* A profile: role, web identity from the environment (@top only), SSO,
 * keys in the credentials file, credential_process, keys in the config
 * file. */
static AwsHit profile_creds(AwsProvider *prov, AwsFiles *f, const char *name,
			    guint depth, bool top, AwsFound *out,
			    GError **error)
{
	g_autofree char *arn = aws_files_value(f, name, "role_arn");
	g_autofree char *proc = aws_files_value(f, name, "credential_process");
	g_autofree char *group = f->conf ? aws_config_group(f->conf, name) :
					   NULL;
	g_autofree char *env_file = aws_env("AWS_WEB_IDENTITY_TOKEN_FILE");
	g_autofree char *env_arn = aws_env("AWS_ROLE_ARN");
	AwsHit hit;

	if (arn)
		return role_profile(prov, f, name, arn, depth, out, error);
	if (top && env_file && env_arn) {
		g_autofree char *s = aws_env("AWS_ROLE_SESSION_NAME");

		return web_identity(prov, env_arn, env_file, s, out, error);
	}
	hit = aws_sso_creds(prov, f, name, out, error);
	if (hit != AWS_MISS)
		return hit;
	hit = static_keys(f->cred, name, f->cred_path, name, out, error);
	if (hit != AWS_MISS)
		return hit;
	if (proc)
		return aws_process_creds(name, proc, out, error);
	return static_keys(f->conf, group, f->conf_path, name, out, error);
}

/* --- the chain --- */

static AwsHit chain_resolve(AwsProvider *prov, AwsFound *out, GError **error)
{
	g_auto(AwsFiles) f = { 0 };
	g_autoptr(GError) imds = NULL;
	AwsHit hit;

	if (!prov->profile_explicit) {
		hit = env_keys(out, error);
		if (hit != AWS_MISS)
			return hit;
	}
	if (!files_load(&f, error))
		return AWS_FAIL;
	if (!profile_exists(&f, prov->profile) &&
	    (prov->profile_explicit || !g_str_equal(prov->profile,
						    "default"))) {
		g_set_error(error, CFS_ERROR, EINVAL, "no AWS credentials: "
			    "profile '%s' is in neither %s nor %s",
			    prov->profile, f.cred_path, f.conf_path);
		return AWS_FAIL;
	}
	hit = profile_creds(prov, &f, prov->profile, 0, true, out, error);
	if (hit != AWS_MISS)
		return hit;
	hit = aws_container_creds(prov, out, error);
	if (hit != AWS_MISS)
		return hit;
	hit = aws_imds_creds(prov, out, &imds);
	if (hit == AWS_HIT)
		return hit;
	g_set_error(error, CFS_ERROR, EACCES, "no AWS credentials: no "
		    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, no "
		    "credentials for profile '%s' in %s or %s, no container "
		    "credentials, and no instance profile (%s)", prov->profile,
		    f.cred_path, f.conf_path,
		    imds ? imds->message : "the metadata service is off");
	return AWS_FAIL;
}

/* Whether the cached credentials still serve. prov->lock held. */
static bool cache_fresh(AwsProvider *prov, gint64 now)
{
	gint64 life, margin;

	if (!prov->creds)
		return false;
	if (!prov->creds_expires)
		return now - prov->creds_at < AWS_STATIC_TTL_S * G_USEC_PER_SEC;
	life = prov->creds_expires - prov->creds_at;
	margin = MIN(AWS_REFRESH_S * G_USEC_PER_SEC, life / 2);
	return now < prov->creds_expires - margin;
}

CfsAwsCreds *aws_creds_get(AwsProvider *prov, gint64 *expires,
			   GError **error)
{
	g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&prov->lock);
	gint64 now = g_get_real_time();
	AwsFound found = { 0 };
	CfsAwsCreds *creds;

	cfs_assert_may_block();
	if (!cache_fresh(prov, now)) {
		if (chain_resolve(prov, &found, error) != AWS_HIT) {
			aws_found_clear(&found);
			return NULL;
		}
		if (!prov->creds ||
		    g_strcmp0(found.source, prov->creds_source) != 0 ||
		    g_strcmp0(cfs_aws_creds_access_key_id(found.creds),
			      cfs_aws_creds_access_key_id(prov->creds)) != 0)
			g_message("aws: credentials from %s (key id %s%s)",
				  found.source,
				  cfs_aws_creds_access_key_id(found.creds),
				  found.expires ? ", temporary" : "");
		g_clear_pointer(&prov->creds, cfs_aws_creds_unref);
		prov->creds = g_steal_pointer(&found.creds);
		prov->creds_at = now;
		prov->creds_expires = found.expires;
		g_free(prov->creds_source);
		prov->creds_source = g_steal_pointer(&found.source);
	}
	creds = cfs_aws_creds_ref(prov->creds);
	if (expires)
		*expires = prov->creds_expires;
	return creds;
}
