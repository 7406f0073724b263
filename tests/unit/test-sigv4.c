// SPDX-License-Identifier: MIT
/*
 * SigV4 signer against published vectors: the aws-sig-v4-test-suite
 * (files under sigv4-vectors/), the S3 GET example and the IAM ListUsers
 * example from the AWS docs, plus requests shaped like ours (EC2 form POST,
 * EBS GetSnapshotBlock with a session token, S3 ranged GET) cross-checked
 * with botocore 1.43.
 */
#include <string.h>

#include <glib.h>

#include "common/error.h"
#include "common/sigv4.h"

#define SUITE_AKID "AKIDEXAMPLE"
#define SUITE_SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define SUITE_TIME ((time_t)1440938160)	/* 20150830T123600Z */
#define SUITE_DATE "20150830T123600Z"

static char *vector_read(const char *dir, const char *ext)
{
	g_autofree char *base = g_path_get_basename(dir);
	g_autofree char *file = g_strdup_printf("%s.%s", base, ext);
	g_autofree char *path = g_test_build_filename(G_TEST_DIST,
						      "sigv4-vectors", dir,
						      file, NULL);
	g_autoptr(GError) err = NULL;
	char *text = NULL;

	if (!g_file_get_contents(path, &text, NULL, &err))
		g_error("vector %s: %s", path, err->message);
	return text;
}

/* Turn a .req file into a request: "METHOD target HTTP/1.1", header
 * lines, a blank line and the body. X-Amz-Date must be the suite's date and
 * X-Amz-Security-Token becomes the session token: the signer sets both. */
static void test_suite_vector(gconstpointer data)
{
	const char *dir = data;
	g_autofree char *req_text = vector_read(dir, "req");
	g_autofree char *creq = vector_read(dir, "creq");
	g_autofree char *sts = vector_read(dir, "sts");
	g_autofree char *authz = vector_read(dir, "authz");
	g_autoptr(GPtrArray) hdrs = g_ptr_array_new_with_free_func(g_free);
	g_autoptr(GError) err = NULL;
	g_autoptr(CfsAwsCreds) creds = NULL;
	g_autoptr(CfsSigV4Result) res = NULL;
	g_autofree char *method = NULL, *url = NULL, *token = NULL;
	g_auto(GStrv) lines = NULL;
	const char *body = "";
	char *sep, *sp, *http;
	CfsSigV4Request req = { 0 };

	sep = strstr(req_text, "\n\n");
	if (sep) {
		*sep = '\0';
		body = sep + 2;
	}
	lines = g_strsplit(req_text, "\n", -1);
	sp = strchr(lines[0], ' ');
	http = g_strrstr(lines[0], " HTTP/");
	g_assert_nonnull(sp);
	g_assert_nonnull(http);
	method = g_strndup(lines[0], sp - lines[0]);
	url = g_strdup_printf("https://example.amazonaws.com%.*s",
			      (int)(http - sp - 1), sp + 1);
	for (guint i = 1; lines[i]; i++) {
		if (g_ascii_strncasecmp(lines[i], "X-Amz-Date:", 11) == 0)
			g_assert_cmpstr(lines[i] + 11, ==, SUITE_DATE);
		else if (g_ascii_strncasecmp(lines[i], "X-Amz-Security-Token:",
					     21) == 0)
			token = g_strdup(lines[i] + 21);
		else
			g_ptr_array_add(hdrs, g_strdup(lines[i]));
	}
	g_ptr_array_add(hdrs, NULL);

	creds = cfs_aws_creds_new(SUITE_AKID, SUITE_SECRET, token, &err);
	g_assert_no_error(err);
	req.method = method;
	req.url = url;
	req.headers = (const char *const *)hdrs->pdata;
	req.body = body;
	req.body_len = strlen(body);
	req.region = "us-east-1";
	req.service = "service";
	req.now = SUITE_TIME;
	res = cfs_sigv4_sign_full(creds, &req, &err);
	g_assert_no_error(err);
	g_assert_cmpstr(res->canonical_request, ==, creq);
	g_assert_cmpstr(res->string_to_sign, ==, sts);
	g_assert_cmpstr(res->authorization, ==, authz);
}

static CfsSigV4Result *sign_ok(const char *akid, const char *secret,
			       const char *token, const CfsSigV4Request *req)
{
	g_autoptr(GError) err = NULL;
	g_autoptr(CfsAwsCreds) creds = cfs_aws_creds_new(akid, secret, token,
							 &err);
	CfsSigV4Result *res;

	g_assert_no_error(err);
	res = cfs_sigv4_sign_full(creds, req, &err);
	g_assert_no_error(err);
	g_assert_nonnull(res);
	return res;
}

static bool has_header(const GPtrArray *h, const char *line)
{
	for (guint i = 0; i < h->len; i++)
		if (!strcmp(g_ptr_array_index(h, i), line))
			return true;
	return false;
}

/* "Signature Calculations for the Authorization Header": GET Object. */
static void test_s3_get_object(void)
{
	const char *hdrs[] = { "Range: bytes=0-9", NULL };
	CfsSigV4Request req = {
		.method = "GET",
		.url = "https://examplebucket.s3.amazonaws.com/test.txt",
		.headers = hdrs,
		.region = "us-east-1",
		.service = "s3",
		.now = 1369353600,	/* 20130524T000000Z */
	};
	g_autoptr(CfsSigV4Result) res = sign_ok(
		"AKIAIOSFODNN7EXAMPLE",
		"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", NULL, &req);

	g_assert_cmpstr(res->canonical_request, ==,
			"GET\n/test.txt\n\n"
			"host:examplebucket.s3.amazonaws.com\n"
			"range:bytes=0-9\n"
			"x-amz-content-sha256:" CFS_SIGV4_EMPTY_SHA256 "\n"
			"x-amz-date:20130524T000000Z\n\n"
			"host;range;x-amz-content-sha256;x-amz-date\n"
			CFS_SIGV4_EMPTY_SHA256);
	g_assert_cmpstr(res->string_to_sign, ==,
			"AWS4-HMAC-SHA256\n20130524T000000Z\n"
			"20130524/us-east-1/s3/aws4_request\n"
			"7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
	g_assert_cmpstr(res->signature, ==,
			"f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
	g_assert_cmpstr(res->authorization, ==,
			"AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/"
			"20130524/us-east-1/s3/aws4_request, SignedHeaders="
			"host;range;x-amz-content-sha256;x-amz-date, Signature="
			"f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
	g_assert_true(has_header(res->headers,
				 "Host: examplebucket.s3.amazonaws.com"));
	g_assert_true(has_header(res->headers,
				 "x-amz-content-sha256: " CFS_SIGV4_EMPTY_SHA256));
	g_assert_true(has_header(res->headers, "X-Amz-Date: 20130524T000000Z"));
}

/* The Query API example of the SigV4 guide (IAM ListUsers), the same
 * shape as an EC2 call. */
static void test_iam_list_users(void)
{
	const char *hdrs[] = {
		"Content-Type: application/x-www-form-urlencoded; charset=utf-8",
		NULL
	};
	CfsSigV4Request req = {
		.method = "GET",
		.url = "https://iam.amazonaws.com/?Version=2010-05-08&Action=ListUsers",
		.headers = hdrs,
		.region = "us-east-1",
		.service = "iam",
		.now = SUITE_TIME,
	};
	g_autoptr(CfsSigV4Result) res = sign_ok(SUITE_AKID, SUITE_SECRET,
						NULL, &req);

	g_assert_cmpstr(res->canonical_request, ==,
			"GET\n/\nAction=ListUsers&Version=2010-05-08\n"
			"content-type:application/x-www-form-urlencoded; charset=utf-8\n"
			"host:iam.amazonaws.com\n"
			"x-amz-date:20150830T123600Z\n\n"
			"content-type;host;x-amz-date\n" CFS_SIGV4_EMPTY_SHA256);
	g_assert_cmpstr(res->string_to_sign, ==,
			"AWS4-HMAC-SHA256\n20150830T123600Z\n"
			"20150830/us-east-1/iam/aws4_request\n"
			"f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59");
	g_assert_cmpstr(res->signature, ==,
			"5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7");
}

/* aws-c-auth's get-vanilla-query-order-encoded: sorting is by encoded key. */
static void test_query_order_encoded(void)
{
	CfsSigV4Request req = {
		.method = "GET",
		.url = "https://example.amazonaws.com/?Param-3=Value3&Param=Value2&%E1%88%B4=Value1",
		.region = "us-east-1",
		.service = "service",
		.now = SUITE_TIME,
	};
	g_autoptr(CfsSigV4Result) res = sign_ok(SUITE_AKID, SUITE_SECRET,
						NULL, &req);

	g_assert_nonnull(strstr(res->canonical_request,
				"\n%E1%88%B4=Value1&Param=Value2&Param-3=Value3\n"));
	g_assert_cmpstr(res->signature, ==,
			"371d3713e185cc334048618a97f809c9ffe339c62934c032af5a0e595648fcac");
}

/* Requests shaped like cloudfs's, signed with botocore for reference. */
#define BOTO_TIME ((time_t)1767323045)	/* 20260102T030405Z */

static void test_botocore_ec2_post(void)
{
	static const char body[] = "Action=DescribeInstances&Version=2016-11-15";
	const char *hdrs[] = {
		"Content-Type: application/x-www-form-urlencoded; charset=utf-8",
		NULL
	};
	CfsSigV4Request req = {
		.method = "POST", .url = "http://127.0.0.1:5000/",
		.headers = hdrs, .body = body, .body_len = sizeof(body) - 1,
		.region = "eu-west-1", .service = "ec2", .now = BOTO_TIME,
	};
	g_autoptr(CfsSigV4Result) res = sign_ok(SUITE_AKID, SUITE_SECRET,
						NULL, &req);

	g_assert_cmpstr(res->signature, ==,
			"3791e6576e414c1d2bbed011056b0678556b183c33de72680b400f038ba637b5");
	g_assert_true(has_header(res->headers, "Host: 127.0.0.1:5000"));
	/* Only S3 gets x-amz-content-sha256 unless asked. */
	g_assert_null(strstr(res->canonical_request, "x-amz-content-sha256"));
}

static void test_botocore_ebs_token(void)
{
	CfsSigV4Request req = {
		.method = "GET",
		.url = "http://127.0.0.1:5000/snapshots/snap-0123/blocks/7?blockToken=abc%2Fdef%3D%3D",
		.payload_sha256 = CFS_SIGV4_EMPTY_SHA256,
		.region = "eu-west-1", .service = "ebs", .now = BOTO_TIME,
	};
	g_autoptr(CfsSigV4Result) res = sign_ok(SUITE_AKID, SUITE_SECRET,
						"TOKEN/xyz==", &req);

	g_assert_cmpstr(res->signed_headers, ==,
			"host;x-amz-date;x-amz-security-token");
	g_assert_cmpstr(res->signature, ==,
			"027841d77e7ab509669b2d9f527b16f12de2c4f41076bea6c4d9599971ba2538");
	g_assert_true(has_header(res->headers,
				 "X-Amz-Security-Token: TOKEN/xyz=="));
	g_assert_cmpstr(g_ptr_array_index(res->headers, res->headers->len - 1),
			==, "Authorization: AWS4-HMAC-SHA256 Credential="
			"AKIDEXAMPLE/20260102/eu-west-1/ebs/aws4_request, "
			"SignedHeaders=host;x-amz-date;x-amz-security-token, "
			"Signature=027841d77e7ab509669b2d9f527b16f12de2c4f41076bea6c4d9599971ba2538");
}

static void test_botocore_s3_key(void)
{
	const char *hdrs[] = { "Range: bytes=0-1048575", NULL };
	CfsSigV4Request req = {
		.method = "GET",
		.url = "https://127.0.0.1:443/bucket/dir/a%20b%2Bc/%E1%88%B4.vmdk?partNumber=1",
		.headers = hdrs,
		.region = "eu-west-1", .service = "s3", .now = BOTO_TIME,
	};
	g_autoptr(CfsSigV4Result) res = sign_ok(SUITE_AKID, SUITE_SECRET,
						NULL, &req);

	g_assert_true(g_str_has_prefix(res->canonical_request,
				       "GET\n/bucket/dir/a%20b%2Bc/%E1%88%B4.vmdk\n"
				       "partNumber=1\nhost:127.0.0.1\n"));
	g_assert_cmpstr(res->signature, ==,
			"fdaa41816ae2e29c274008a928bdff9fd25b3559aa58e71d9390a031e80e6a09");
}

/* The path rules that differ between S3 and the other services. */
static void test_path_rules(void)
{
	CfsSigV4Request req = {
		.method = "GET", .url = "http://h/a%20b//./c",
		.region = "r", .service = "s3", .now = BOTO_TIME,
	};
	g_autoptr(CfsSigV4Result) s3 = sign_ok("k", "s", NULL, &req);
	g_autoptr(CfsSigV4Result) other = NULL;

	g_assert_true(g_str_has_prefix(s3->canonical_request,
				       "GET\n/a%20b//./c\n"));
	req.service = "ebs";
	other = sign_ok("k", "s", NULL, &req);
	g_assert_true(g_str_has_prefix(other->canonical_request,
				       "GET\n/a%2520b/c\n"));
}

static const char *host_of(const char *url, unsigned flags)
{
	static char buf[128];
	CfsSigV4Request req = {
		.method = "GET", .url = url, .region = "r", .service = "ec2",
		.now = BOTO_TIME, .flags = flags,
	};
	g_autoptr(CfsSigV4Result) res = sign_ok("k", "s", NULL, &req);
	const char *p = strstr(res->canonical_request, "\nhost:");

	g_assert_nonnull(p);
	p += 6;
	g_strlcpy(buf, p, MIN(sizeof(buf), (gsize)(strchr(p, '\n') - p + 1)));
	if (flags & CFS_SIGV4_NO_HOST_HEADER)
		g_assert_false(g_str_has_prefix(g_ptr_array_index(res->headers, 0),
						"Host:"));
	else
		g_assert_true(g_str_has_prefix(g_ptr_array_index(res->headers, 0),
					       "Host: "));
	return buf;
}

static void test_host(void)
{
	g_assert_cmpstr(host_of("https://ec2.eu-west-1.amazonaws.com/", 0), ==,
			"ec2.eu-west-1.amazonaws.com");
	g_assert_cmpstr(host_of("https://h.example:443/", 0), ==, "h.example");
	g_assert_cmpstr(host_of("http://h.example:80", 0), ==, "h.example");
	g_assert_cmpstr(host_of("http://h.example:443/", 0), ==,
			"h.example:443");
	g_assert_cmpstr(host_of("HTTPS://u:p@h.example:8443/x?y", 0), ==,
			"h.example:8443");
	g_assert_cmpstr(host_of("http://[::1]:5000/", CFS_SIGV4_NO_HOST_HEADER),
			==, "[::1]:5000");
	g_assert_cmpstr(host_of("http://[::1]/", 0), ==, "[::1]");
}

static void test_payload(void)
{
	static const char body[] = "Param1=value1";
	CfsSigV4Request req = {
		.method = "PUT", .url = "http://h/k", .body = body,
		.body_len = sizeof(body) - 1, .region = "r", .service = "ec2",
		.now = BOTO_TIME, .flags = CFS_SIGV4_CONTENT_SHA256,
	};
	g_autoptr(CfsSigV4Result) a = sign_ok("k", "s", NULL, &req);
	g_autoptr(CfsSigV4Result) b = NULL;
	g_autoptr(CfsSigV4Result) c = NULL;
	char hex[65];

	cfs_sigv4_sha256_hex(body, sizeof(body) - 1, hex);
	g_assert_cmpstr(hex, ==,
			"9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e");
	req.body = NULL;
	req.body_len = 0;
	req.payload_sha256 = hex;
	b = sign_ok("k", "s", NULL, &req);
	g_assert_cmpstr(a->signature, ==, b->signature);
	g_assert_true(has_header(b->headers, "x-amz-content-sha256: 9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"));
	req.payload_sha256 = CFS_SIGV4_UNSIGNED_PAYLOAD;
	c = sign_ok("k", "s", NULL, &req);
	g_assert_true(g_str_has_suffix(c->canonical_request,
				       "\nUNSIGNED-PAYLOAD"));
}

static void expect_einval(const CfsAwsCreds *creds, const CfsSigV4Request *req)
{
	g_autoptr(GError) err = NULL;
	GPtrArray *h = cfs_sigv4_sign(creds, req, &err);

	g_assert_null(h);
	g_assert_error(err, CFS_ERROR, EINVAL);
	g_assert_null(strstr(err->message, "SECRETVALUE"));
}

static void test_errors(void)
{
	g_autoptr(GError) err = NULL;
	g_autoptr(CfsAwsCreds) creds = cfs_aws_creds_new("k", "SECRETVALUE",
							 NULL, NULL);
	const char *reserved[] = { "Host: h", "authorization: x", NULL };
	const char *noname[] = { ": v", NULL };
	CfsSigV4Request ok = {
		.method = "GET", .url = "http://h/", .region = "r",
		.service = "ec2", .now = BOTO_TIME,
	};
	CfsSigV4Request req;
	GPtrArray *h;

	g_assert_null(cfs_aws_creds_new("k", "", NULL, &err));
	g_assert_error(err, CFS_ERROR, EINVAL);
	g_assert_null(cfs_sigv4_sign(NULL, &ok, NULL));
	req = ok, req.url = "h/no-scheme", expect_einval(creds, &req);
	req = ok, req.url = "http:///path", expect_einval(creds, &req);
	req = ok, req.url = "http://h:/", h = cfs_sigv4_sign(creds, &req, NULL);
	g_assert_nonnull(h);
	g_ptr_array_unref(h);
	req = ok, req.method = "get", expect_einval(creds, &req);
	req = ok, req.region = "us east", expect_einval(creds, &req);
	req = ok, req.service = NULL, expect_einval(creds, &req);
	req = ok, req.payload_sha256 = "abc", expect_einval(creds, &req);
	req = ok, req.headers = reserved, expect_einval(creds, &req);
	req = ok, req.headers = noname, expect_einval(creds, &req);
	req = ok, req.now = -1, expect_einval(creds, &req);
}

static void test_headers(void)
{
	const char *hdrs[] = {
		"Content-Type: text/plain",
		"X-Empty:",		/* libcurl: remove this header */
		"X-Blank;",		/* libcurl: send it empty */
		"x-amz-meta-a:  one\t two  ",
		"X-Amz-Meta-A: three",
		NULL
	};
	CfsSigV4Request req = {
		.method = "GET", .url = "http://h", .headers = hdrs,
		.region = "r", .service = "s3", .now = BOTO_TIME,
	};
	g_autoptr(CfsSigV4Result) res = sign_ok("k", "s", "tok", &req);
	g_autofree char *enc = cfs_sigv4_uri_encode("a b/ሴ~", strlen("a b/ሴ~"),
						    true);

	g_assert_true(g_str_has_prefix(res->canonical_request,
				       "GET\n/\n\ncontent-type:text/plain\n"
				       "host:h\nx-amz-content-sha256:"));
	g_assert_nonnull(strstr(res->canonical_request,
				"\nx-amz-meta-a:one two,three\n"));
	g_assert_cmpstr(res->signed_headers, ==,
			"content-type;host;x-amz-content-sha256;x-amz-date;"
			"x-amz-meta-a;x-amz-security-token");
	g_assert_cmpstr(enc, ==, "a%20b/%E1%88%B4~");
}

static void test_amz_date(void)
{
	char d[17];

	g_assert_true(cfs_sigv4_amz_date(0, d));
	g_assert_cmpstr(d, ==, "19700101T000000Z");
	g_assert_true(cfs_sigv4_amz_date(SUITE_TIME, d));
	g_assert_cmpstr(d, ==, SUITE_DATE);
}

int main(int argc, char **argv)
{
	g_autofree char *index_path = NULL;
	g_autofree char *index = NULL;
	g_auto(GStrv) names = NULL;

	g_test_init(&argc, &argv, NULL);
	index_path = g_test_build_filename(G_TEST_DIST, "sigv4-vectors",
					   "INDEX", NULL);
	if (!g_file_get_contents(index_path, &index, NULL, NULL))
		g_error("no %s (set G_TEST_SRCDIR to tests/unit)", index_path);
	names = g_strsplit(index, "\n", -1);
	for (guint i = 0; names[i]; i++) {
		g_autofree char *tpath = NULL;

		if (!*names[i] || names[i][0] == '#')
			continue;
		tpath = g_strdup_printf("/sigv4/suite/%s", names[i]);
		g_test_add_data_func(tpath, names[i], test_suite_vector);
	}
	g_test_add_func("/sigv4/s3-get-object", test_s3_get_object);
	g_test_add_func("/sigv4/iam-list-users", test_iam_list_users);
	g_test_add_func("/sigv4/query-order-encoded", test_query_order_encoded);
	g_test_add_func("/sigv4/botocore/ec2-post", test_botocore_ec2_post);
	g_test_add_func("/sigv4/botocore/ebs-token", test_botocore_ebs_token);
	g_test_add_func("/sigv4/botocore/s3-key", test_botocore_s3_key);
	g_test_add_func("/sigv4/path-rules", test_path_rules);
	g_test_add_func("/sigv4/host", test_host);
	g_test_add_func("/sigv4/payload", test_payload);
	g_test_add_func("/sigv4/headers", test_headers);
	g_test_add_func("/sigv4/errors", test_errors);
	g_test_add_func("/sigv4/amz-date", test_amz_date);
	return g_test_run();
}
