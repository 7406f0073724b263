// SPDX-License-Identifier: MIT
/*
 * AWS configuration the way the AWS CLI and SDKs find it: the [aws]
 * section, the AWS_* environment and the ~/.aws files (the credential
 * chain itself is in chain.c).
 *
 * Profile: [aws] profile, AWS_PROFILE, AWS_DEFAULT_PROFILE, "default".
 * Region: [aws] region, AWS_REGION, AWS_DEFAULT_REGION, the profile's
 * region in the config file, us-east-1. [aws] regions = a;b lists several
 * (default: the one region).
 * Endpoints, per service (ec2, ebs, s3, sts, sso): [aws]
 * endpoint_url_<svc>, [aws] endpoint_url, AWS_ENDPOINT_URL_<SVC>,
 * AWS_ENDPOINT_URL, the profile's endpoint_url, then
 * https://<svc>.<region>.amazonaws.com (the SSO portal:
 * https://portal.sso.<region>.amazonaws.com). S3 is always addressed
 * path-style (/bucket/key).
 */
#include <string.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/secret.h"
#include "common/util.h"
#include "providers/aws/aws-private.h"
#include "providers/conf.h"

static const char *const service_names[AWS_N_SERVICES] = {
	[AWS_EC2] = "ec2", [AWS_EBS] = "ebs", [AWS_S3] = "s3",
	[AWS_STS] = "sts", [AWS_SSO] = "sso",
};

/* The first label of each service's default host name. */
static const char *const service_hosts[AWS_N_SERVICES] = {
	[AWS_EC2] = "ec2", [AWS_EBS] = "ebs", [AWS_S3] = "s3",
	[AWS_STS] = "sts", [AWS_SSO] = "portal.sso",
};

/* --- INI files --- */

/*
 * ~/.aws/credentials and ~/.aws/config look like INI files but are read by
 * Python's configparser: ';' comments, indented sub-keys (s3 =\n  x = y),
 * spaces around '=', sections with spaces inside ("[profile x]"). GKeyFile
 * is stricter, so the text is normalised first: comments and indented
 * lines are dropped, keys and values trimmed, anything else that is not a
 * "key = value" or "[section]" line ignored.
 */
GKeyFile *aws_ini_load(const char *path, GError **error)
{
	g_autofree char *text = NULL;
	g_autoptr(GString) clean = g_string_new(NULL);
	g_autoptr(GKeyFile) kf = g_key_file_new();
	g_auto(GStrv) lines = NULL;
	bool in_group = false;

	if (!g_file_get_contents(path, &text, NULL, error))
		return NULL;
	lines = g_strsplit(text, "\n", -1);
	if (text)
		cfs_secret_wipe(text, strlen(text));
	for (char **l = lines; *l; l++) {
		char *line = *l, *eq;

		g_strchomp(line);
		if (!*line || *line == ' ' || *line == '\t')
			continue;	/* blank or a nested sub-key */
		if (*line == '#' || *line == ';')
			continue;
		if (*line == '[') {
			char *end = strchr(line, ']');
			g_auto(GStrv) words = NULL;
			g_autoptr(GString) name = g_string_new(NULL);

			if (!end)
				continue;
			*end = '\0';
			/* "[ profile   x ]" -> "[profile x]" */
			words = g_strsplit_set(line + 1, " \t", -1);
			for (char **w = words; *w; w++) {
				if (!**w)
					continue;
				if (name->len)
					g_string_append_c(name, ' ');
				g_string_append(name, *w);
			}
			in_group = name->len && !strpbrk(name->str, "[]");
			if (in_group)
				g_string_append_printf(clean, "[%s]\n",
						       name->str);
			continue;
		}
		eq = strchr(line, '=');
		if (!eq || !in_group)
			continue;
		*eq = '\0';
		g_strstrip(line);
		if (!*line || strpbrk(line, "[]"))
			continue;
		g_string_append_printf(clean, "%s=%s\n", line,
				       g_strstrip(eq + 1));
	}
	for (char **l = lines; *l; l++)
		cfs_secret_wipe(*l, strlen(*l));
	if (!g_key_file_load_from_data(kf, clean->str, clean->len,
				       G_KEY_FILE_NONE, error)) {
		g_prefix_error(error, "%s: ", path);
		cfs_secret_wipe(clean->str, clean->len);
		return NULL;
	}
	cfs_secret_wipe(clean->str, clean->len);
	return g_steal_pointer(&kf);
}

char *aws_env(const char *name)
{
	const char *v = g_getenv(name);

	return v && *v ? g_strdup(v) : NULL;
}

char *aws_credentials_path(void)
{
	char *p = aws_env("AWS_SHARED_CREDENTIALS_FILE");

	return p ? p : g_build_filename(g_get_home_dir(), ".aws",
					"credentials", NULL);
}

char *aws_config_path(void)
{
	char *p = aws_env("AWS_CONFIG_FILE");

	return p ? p : g_build_filename(g_get_home_dir(), ".aws", "config",
					NULL);
}

/* The config file's section for @profile, or NULL. Transfer full. */
char *aws_config_group(GKeyFile *kf, const char *profile)
{
	g_autofree char *named = g_strdup_printf("profile %s", profile);

	if (g_key_file_has_group(kf, named))
		return g_steal_pointer(&named);
	if (g_str_equal(profile, "default") &&
	    g_key_file_has_group(kf, "default"))
		return g_strdup("default");
	return NULL;
}

/* A value of the profile in the config file, or NULL. */
static char *aws_profile_value(const char *profile, const char *key)
{
	g_autofree char *path = aws_config_path();
	g_autoptr(GKeyFile) kf = NULL;
	g_autofree char *group = NULL;
	char *v;

	if (!g_file_test(path, G_FILE_TEST_EXISTS))
		return NULL;
	kf = aws_ini_load(path, NULL);
	group = kf ? aws_config_group(kf, profile) : NULL;
	if (!group)
		return NULL;
	v = g_key_file_get_value(kf, group, key, NULL);
	if (v && !*v)
		g_clear_pointer(&v, g_free);
	return v;
}

/* --- configuration --- */

static bool check_url(const char *section, const char *what, const char *url,
		      GError **error)
{
	if (!url || g_str_has_prefix(url, "http://") ||
	    g_str_has_prefix(url, "https://"))
		return true;
	g_set_error(error, CFS_ERROR, EINVAL,
		    "[%s] %s: '%s' is not an http:// or https:// URL", section,
		    what, url);
	return false;
}

bool aws_config_load(AwsProvider *prov, GKeyFile *conf, const char *section,
		     GError **error)
{
	g_autofree char *mode = cfs_conf_string(conf, section, "mode");
	g_autofree char *regions = cfs_conf_string(conf, section, "regions");
	g_autofree char *common_url = cfs_conf_string(conf, section,
						  "endpoint_url");
	g_autofree char *env_url = aws_env("AWS_ENDPOINT_URL");
	g_autofree char *profile_url = NULL;
	g_autofree char *poll = cfs_conf_string(conf, section, "poll_interval");
	g_autofree char *method = cfs_conf_string(conf, section, "export_method");

	prov->profile = cfs_conf_string(conf, section, "profile");
	prov->profile_explicit = prov->profile != NULL;
	if (!prov->profile)
		prov->profile = aws_env("AWS_PROFILE");
	if (!prov->profile)
		prov->profile = aws_env("AWS_DEFAULT_PROFILE");
	if (!prov->profile)
		prov->profile = g_strdup("default");

	if (!mode || g_str_equal(mode, "ebs-direct")) {
		prov->mode = AWS_MODE_EBS_DIRECT;
	} else if (g_str_equal(mode, "export")) {
		prov->mode = AWS_MODE_EXPORT;
	} else {
		g_set_error(error, CFS_ERROR, EINVAL, "[%s] mode: '%s' is not "
			    "ebs-direct or export", section, mode);
		return false;
	}

	prov->region = cfs_conf_string(conf, section, "region");
	if (!prov->region)
		prov->region = aws_env("AWS_REGION");
	if (!prov->region)
		prov->region = aws_env("AWS_DEFAULT_REGION");
	if (!prov->region)
		prov->region = aws_profile_value(prov->profile, "region");
	if (!prov->region)
		prov->region = g_strdup("us-east-1");
	if (regions) {
		g_auto(GStrv) parts = g_strsplit_set(regions, ";, ", -1);
		g_autoptr(GPtrArray) list = g_ptr_array_new();

		for (char **p = parts; *p; p++)
			if (**p)
				g_ptr_array_add(list, g_strdup(*p));
		g_ptr_array_add(list, NULL);
		prov->regions = (GStrv)g_ptr_array_free(
			g_steal_pointer(&list), FALSE);
	}
	if (!prov->regions || !prov->regions[0]) {
		g_strfreev(prov->regions);
		prov->regions = g_new0(char *, 2);
		prov->regions[0] = g_strdup(prov->region);
	}

	profile_url = aws_profile_value(prov->profile, "endpoint_url");
	for (int s = 0; s < AWS_N_SERVICES; s++) {
		g_autofree char *key = g_strdup_printf("endpoint_url_%s",
						       service_names[s]);
		g_autofree char *svc = g_ascii_strup(service_names[s], -1);
		g_autofree char *env = g_strdup_printf("AWS_ENDPOINT_URL_%s",
						       svc);
		char *url = cfs_conf_string(conf, section, key);

		if (!url)
			url = g_strdup(common_url);
		if (!url)
			url = aws_env(env);
		if (!url)
			url = g_strdup(env_url);
		if (!url)
			url = g_strdup(profile_url);
		prov->endpoint[s] = cfs_url_strip_slash(url);
		if (!check_url(section, key, url, error))
			return false;
	}

	prov->s3_bucket = cfs_conf_string(conf, section, "s3_bucket");
	prov->s3_prefix = cfs_conf_string(conf, section, "s3_prefix");
	if (!prov->s3_prefix)
		prov->s3_prefix = g_strdup("");
	prov->export_format = cfs_conf_string(conf, section, "export_format");
	if (!prov->export_format)
		prov->export_format = g_strdup("vmdk");
	if (!g_str_equal(prov->export_format, "vmdk") &&
	    !g_str_equal(prov->export_format, "vhd") &&
	    !g_str_equal(prov->export_format, "raw")) {
		g_set_error(error, CFS_ERROR, EINVAL, "[%s] export_format: "
			    "'%s' is not vmdk, vhd or raw", section,
			    prov->export_format);
		return false;
	}
	if (!method || g_str_equal(method, "image")) {
		prov->export_method = AWS_EXPORT_IMAGE;
	} else if (g_str_equal(method, "instance")) {
		prov->export_method = AWS_EXPORT_INSTANCE;
	} else {
		g_set_error(error, CFS_ERROR, EINVAL, "[%s] export_method: "
			    "'%s' is not image or instance", section, method);
		return false;
	}
	if (prov->mode == AWS_MODE_EXPORT && !prov->s3_bucket) {
		g_set_error(error, CFS_ERROR, EINVAL, "[%s] mode = export "
			    "needs s3_bucket (the bucket EC2 exports to)",
			    section);
		return false;
	}
	if (!cfs_conf_bool(conf, section, "keep_snapshots", &prov->keep_snapshots,
		       error) ||
	    !cfs_conf_bool(conf, section, "keep_exports", &prov->keep_exports,
		       error))
		return false;
	prov->poll_s = poll ? g_ascii_strtod(poll, NULL) : 1.0;
	if (prov->poll_s <= 0.0 || prov->poll_s > 60.0)
		prov->poll_s = 1.0;
	return aws_config_rates(prov, conf, section, error);
}

/* A rate key (requests a second, more than 0), or @def. */
static bool aws_conf_rate(GKeyFile *conf, const char *section,
			  const char *key, double def, double *out,
			  GError **error)
{
	g_autofree char *text = g_key_file_get_string(conf, section, key,
						      NULL);
	char *end = NULL;

	*out = def;
	if (!text)
		return true;
	*out = g_ascii_strtod(text, &end);
	if (end == text || *end || *out <= 0.0 || *out > 1e6) {
		g_set_error(error, CFS_ERROR, EINVAL, "[%s] %s: '%s' is not a "
			    "rate (requests a second)", section, key, text);
		return false;
	}
	return true;
}

/* EBS allows 1,000 GetSnapshotBlock a second per snapshot and, by
 * default, per account, and 50 ListSnapshotBlocks a second per account:
 * stay under them before it throttles. */
bool aws_config_rates(AwsProvider *prov, GKeyFile *conf, const char *section,
		      GError **error)
{
	double account, list;

	if (!aws_conf_rate(conf, section, "ebs_rate", AWS_EBS_RATE,
			   &prov->ebs_rate, error) ||
	    !aws_conf_rate(conf, section, "ebs_account_rate", AWS_EBS_RATE,
			   &account, error) ||
	    !aws_conf_rate(conf, section, "ebs_list_rate", AWS_EBS_LIST_RATE,
			   &list, error))
		return false;
	cfs_http_bucket_unref(prov->ebs_account);
	cfs_http_bucket_unref(prov->ebs_list);
	/* A burst of a tenth of a second: a window opening at once. */
	prov->ebs_account = cfs_http_bucket_new(account, account / 10);
	prov->ebs_list = cfs_http_bucket_new(list, list / 10);
	return true;
}

void aws_config_clear(AwsProvider *prov)
{
	g_clear_pointer(&prov->ebs_account, cfs_http_bucket_unref);
	g_clear_pointer(&prov->ebs_list, cfs_http_bucket_unref);
	g_free(prov->profile);
	g_free(prov->region);
	g_strfreev(prov->regions);
	for (int s = 0; s < AWS_N_SERVICES; s++)
		g_free(prov->endpoint[s]);
	g_free(prov->s3_bucket);
	g_free(prov->s3_prefix);
	g_free(prov->export_format);
	g_free(prov->creds_source);
	g_clear_pointer(&prov->creds, cfs_aws_creds_unref);
}

char *aws_endpoint(AwsProvider *prov, AwsService svc, const char *region)
{
	if (prov->endpoint[svc])
		return g_strdup(prov->endpoint[svc]);
	return g_strdup_printf("https://%s.%s.amazonaws.com",
			       service_hosts[svc], region);
}
