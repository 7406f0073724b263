// SPDX-License-Identifier: MIT
/*
 * Unit tests of the OAuth2 helpers: RS256 JWTs (verified with OpenSSL and
 * against a known answer made with `openssl dgst -sha256 -sign`), token
 * answers good and hostile, and the token cache (single flight, renewal
 * within the margin, invalidation, peek that never waits) with a fetch
 * function standing in for the network.
 */
#include <glib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "common/error.h"
#include "common/secret.h"
#include "providers/oauth2.h"

/* A test key made once with `openssl genpkey -algorithm RSA
 * -pkeyopt rsa_keygen_bits:2048`; it protects nothing. */
static const char test_key_pem[] =
	"-----BEGIN PRIVATE KEY-----\n"
	"MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQCpUjcWHBs1//HZ\n"
	"rEMtQXbykGePxRkX0HwdvzRW+cVEX1we3PMSBdhsQhZFk2CZPqpcZinGysUTeFTS\n"
	"bFhbgM5HE4M8e/Bqm/l79bpDFXPUYNRL2W3l9CqWWaD7DbYuRVgLCmcvLXjAjiNY\n"
	"HacnQEC+V8xuQmNzsyyuBDyVXkMNJRyQ4gDCiH5KuQiWc+c+38E+l9UhEa3ND0wz\n"
	"PGrFChUHnMvlgsJo2DMSCiqPXZvzO72r9HFTxB2frXr7b1Si9uqQ8zStA/PEUdPB\n"
	"jjWv0gI/a5R3/kbwg6CvQ2PJrEBc4k+NaG5tABIcH15f4HzdH0FLYoVRJn5filAI\n"
	"nqJZXt9PAgMBAAECggEATtCwR6BpoiczQqmG04gHgD1rl2admZI4U/huupWlF4Bz\n"
	"9wHOO3NxHGNezqAddPfQgRYlGB3GwptekFxSfLVmT3truTnP3TAhX2wweY2AzzkL\n"
	"WQsqtsGDGV07K+FkDgHFS85Z3YIDFU6UcS3MYt7rxC5GQISymmaqw43BTZ4FBBai\n"
	"X/Q0MSY3GPBmhMy+h9rOUOnW5YdOoruwJ/9jMmMeP7zi98XoKGSIrWtiJ4El+xQv\n"
	"1QMnOSIr4mjWNR+dlyH9FRXD8wIPKemAkmffa0IHyJ3eO4/AbZi+riaWPV5uRgBy\n"
	"9Gkp8BHkqkEag3pKlpPE+TZ2OEARJvkNoB18h/K6sQKBgQDWNgslRTnedcXV5Nup\n"
	"E1oQyG4hoU1BLNaTNRMXP8tyFv9euLbZNG6cfB+5vsS4KpAc6oAWv2baue25N3nm\n"
	"6Ab8vV1/t1iD9hB+t0L0K8oPgZfiE9QOJmAbV9H8w2UDDdCRQVbLACN39d6TGWGX\n"
	"Sst0CTaWXPdo8RvNsesNwnQWzQKBgQDKWlBrblDjV655Ss0qx6pcKPUE41Nm/Hps\n"
	"QssX21M1M59M4LnaNuhLmNGfEBy2XZb5++L9Pl7L/2e0fW+BpWQAocOVoo6rEZol\n"
	"mALE413N5WfSVdCqKw3Z1uMKcleW9pA7smW87QoUWXY1sfiTwth/H2aYx+xXJaxR\n"
	"a+gXQSR2iwKBgGBZsq2y85KSWsgYxozIPYyq+o555SvZpTJVfx7H/RR2L6tFXklY\n"
	"giA03HhJzGYiDuxStgaFVRgw5TKYN2abGvl3m6SkrVW9yjGU8LKvN5W97rkrvggX\n"
	"Tsc9ux/8K2UyQ4vyXb21dD6zAsgbdH/+joDE3B7J9ibnvF/LFTT9MAZJAoGBAMbg\n"
	"Sqe7jV5TP9RP8yM3h7T6QA3kyoSuYjfi0a6Jzda8/LTXLXJNgrNB58v4Tu/hPdBF\n"
	"gss4sHy4cZlPqvb1sTp5wjtfv+5b529JXndZq0kATbDIzMNie0N9UjljNbjWbd1u\n"
	"MVWkdsKXRnnxh4jZ+GPAXdqMqzjfeuOvNTUdvhOPAoGBALQiJI83yi0VO9YnibvE\n"
	"euApZBqdHlEaYGitGZmEuufzimGjauF9ThWc4lU3hpvx1aQrmeeHblZaFDdF09Q0\n"
	"sVWOENccADrv2j4644CLu0EWcMVcbYoiBCm1KAbkpBaW2duI0iAuubjZ6WU+ERoG\n"
	"NiMcl/PFwcMTMO2KWTJCc0kU\n"
	"-----END PRIVATE KEY-----\n"
	;

#define KAT_HEADER "{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"k1\"}"
#define KAT_CLAIMS                                                         \
	"{\"iss\":\"svc@p.iam.gserviceaccount.com\",\"scope\":\"s\","      \
	"\"aud\":\"https://oauth2.googleapis.com/token\","                 \
	"\"iat\":1700000000,\"exp\":1700003600}"
/* printf '%s.%s' B64URL(KAT_HEADER) B64URL(KAT_CLAIMS) |
 * openssl dgst -sha256 -sign key.pem | basenc --base64url, '=' removed */
#define KAT_JWT                                                            \
	"eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImsxIn0."	\
	"eyJpc3MiOiJzdmNAcC5pYW0uZ3NlcnZpY2VhY2NvdW50LmNvbSIsInNjb3BlIjoi"	\
	"cyIsImF1ZCI6Imh0dHBzOi8vb2F1dGgyLmdvb2dsZWFwaXMuY29tL3Rva2VuIiwi"	\
	"aWF0IjoxNzAwMDAwMDAwLCJleHAiOjE3MDAwMDM2MDB9."	\
	"RVZXAZCGvHQ7tEiB-HV8lukcuLTL4Wuxn_3yEb5TUE5W79eyi5aaWg5mkZN7fR7M"	\
	"SMRV2mj4viin2OHy5ZWHfK3b2TPxSgJYI1qY6qZAyFaMS5xNCla3vthDW3hjp4gM"	\
	"jMyd2fK1vDxvPmnxKlTuXuRd_pkfrymKZLTBihhkmWBBGuWjU6lAJdfAXRTXTvv_"	\
	"WFYiZkU3OwN5BRmp6QHtrFjgt1VYOgsiEEJMprzX2r_vVFs9cBjTPLGdKcxoJ7ie"	\
	"Qm-9DjgxWrzvm8HEIrfWLNLJhuTFyOXdBxWzI_QvSyhntPUi0pg2KA7AsoQyUfxD"	\
	"1NeOmDqNV1F7JOfdis7xLA"
/* --- JWT --- */

static char *b64url_decode(const char *s, gsize *len)
{
	g_autoptr(GString) t = g_string_new(s);

	for (gsize i = 0; i < t->len; i++) {
		if (t->str[i] == '-')
			t->str[i] = '+';
		else if (t->str[i] == '_')
			t->str[i] = '/';
	}
	while (t->len % 4)
		g_string_append_c(t, '=');
	return (char *)g_base64_decode(t->str, len);
}

static void check_jwt(EVP_PKEY *key, const char *jwt, const char *header,
		      const char *claims)
{
	g_auto(GStrv) parts = g_strsplit(jwt, ".", -1);
	g_autofree char *h = NULL, *c = NULL, *sig = NULL, *input = NULL;
	gsize hlen, clen, slen;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();

	g_assert_cmpuint(g_strv_length(parts), ==, 3);
	g_assert_null(strpbrk(jwt, "=+/"));
	h = b64url_decode(parts[0], &hlen);
	c = b64url_decode(parts[1], &clen);
	sig = b64url_decode(parts[2], &slen);
	g_assert_cmpmem(h, hlen, header, strlen(header));
	g_assert_cmpmem(c, clen, claims, strlen(claims));
	g_assert_cmpuint(slen, ==, 256);
	input = g_strconcat(parts[0], ".", parts[1], NULL);
	g_assert_cmpint(EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL,
					     key), ==, 1);
	g_assert_cmpint(EVP_DigestVerify(ctx, (unsigned char *)sig, slen,
					 (unsigned char *)input,
					 strlen(input)), ==, 1);
	EVP_MD_CTX_free(ctx);
}

static void test_jwt_verify(void)
{
	EVP_PKEY *key = EVP_RSA_gen(2048);
	const char *header = "{\"alg\":\"RS256\",\"typ\":\"JWT\"}";
	g_autoptr(GError) error = NULL;

	g_assert_nonnull(key);
	/* Claims of many lengths, so that padding would show up. */
	for (int n = 0; n < 6; n++) {
		g_autofree char *claims = g_strdup_printf(
			"{\"iss\":\"a%.*s@b\",\"x\":\"?>>\"}", n, "zzzzz");
		g_autoptr(CfsSecret) jwt = cfs_jwt_rs256(key, header, claims,
							 &error);

		g_assert_no_error(error);
		check_jwt(key, jwt, header, claims);
	}
	EVP_PKEY_free(key);
}

static void test_jwt_known_answer(void)
{
	g_autoptr(GError) error = NULL;
	EVP_PKEY *key = cfs_jwt_load_rsa_key(test_key_pem, &error);
	g_autoptr(CfsSecret) jwt = NULL;

	g_assert_no_error(error);
	jwt = cfs_jwt_rs256(key, KAT_HEADER, KAT_CLAIMS, &error);
	g_assert_no_error(error);
	g_assert_cmpstr(jwt, ==, KAT_JWT);
	check_jwt(key, jwt, KAT_HEADER, KAT_CLAIMS);
	EVP_PKEY_free(key);
}

static char *ec_key_pem(EVP_PKEY **out)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	BIO *bio = BIO_new(BIO_s_mem());
	char *data;
	long len;

	g_assert_cmpint(PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0,
						 NULL, NULL), ==, 1);
	len = BIO_get_mem_data(bio, &data);
	data = g_strndup(data, len);
	BIO_free(bio);
	*out = key;
	return data;
}

static void test_jwt_bad_keys(void)
{
	CfsOAuth2Options opts = { 0 };
	g_autoptr(GError) error = NULL;
	EVP_PKEY *ec = NULL;
	g_autofree char *ec_pem = ec_key_pem(&ec);
	g_autofree char *cut = g_strndup(test_key_pem, 300);

	g_assert_null(cfs_oauth2_new_jwt_bearer(&opts, "https://t/token",
						"a@b", "not a key", NULL,
						"s", &error));
	g_assert_error(error, CFS_ERROR, EINVAL);
	g_assert_nonnull(strstr(error->message, "PEM"));
	g_clear_error(&error);

	g_assert_null(cfs_jwt_load_rsa_key(cut, &error));
	g_assert_error(error, CFS_ERROR, EINVAL);
	g_assert_null(strstr(error->message, cut + 40));
	g_clear_error(&error);

	g_assert_null(cfs_jwt_load_rsa_key(ec_pem, &error));
	g_assert_error(error, CFS_ERROR, EINVAL);
	g_assert_nonnull(strstr(error->message, "RSA"));
	g_clear_error(&error);

	g_assert_null(cfs_jwt_rs256(ec, "{}", "{}", &error));
	g_assert_error(error, CFS_ERROR, EINVAL);
	EVP_PKEY_free(ec);
}

static void test_jwt_bearer_new(void)
{
	CfsOAuth2Options opts = { 0 };
	g_autoptr(GError) error = NULL;
	g_autoptr(CfsOAuth2) o = cfs_oauth2_new_jwt_bearer(
		&opts, "https://oauth2.googleapis.com/token", "a@b",
		test_key_pem, "k1", "scope", &error);

	g_assert_no_error(error);
	g_assert_nonnull(o);
	g_assert_cmpint(cfs_oauth2_expires(o), ==, 0);
}

/* --- answers --- */

static void test_answer_good(void)
{
	static const struct {
		const char *body, *token;
		double expires_in;
	} cases[] = {
		{ "{\"access_token\":\"ya29.abc\",\"expires_in\":3599,"
		  "\"token_type\":\"Bearer\"}", "ya29.abc", 3599 },
		{ "{\"token_type\":\"Bearer\",\"expires_in\":\"3600\","
		  "\"ext_expires_in\":\"3600\",\"access_token\":\"eyJ0.x-y_z\"}",
		  "eyJ0.x-y_z", 3600 },
		{ "{\"access_token\":\"t\",\"expires_in\":1.5}", "t", 60 },
		{ "{\"access_token\":\"t\",\"expires_in\":999999}", "t",
		  86400 },
		{ " {\"access_token\":\"t\",\"expires_in\":120} \n", "t",
		  120 },
	};

	for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
		g_autoptr(GError) error = NULL;
		g_autoptr(CfsSecret) token = NULL;
		double exp = 0;

		g_test_message("answer %s", cases[i].body);
		g_assert_true(cfs_oauth2_parse_answer(
			cases[i].body, strlen(cases[i].body), &token, &exp,
			&error));
		g_assert_no_error(error);
		g_assert_cmpstr(token, ==, cases[i].token);
		g_assert_cmpfloat(exp, ==, cases[i].expires_in);
	}
}

/* Azure IMDS: expires_on (epoch seconds) when expires_in is missing. */
static void test_answer_expires_on(void)
{
	gint64 now = g_get_real_time() / G_USEC_PER_SEC;
	g_autofree char *body = g_strdup_printf(
		"{\"access_token\":\"t\",\"expires_on\":\"%" G_GINT64_FORMAT
		"\",\"resource\":\"https://management.azure.com/\"}",
		now + 1000);
	g_autoptr(GError) error = NULL;
	g_autoptr(CfsSecret) token = NULL;
	double exp = 0;

	g_assert_true(cfs_oauth2_parse_answer(body, strlen(body), &token,
					      &exp, &error));
	g_assert_cmpfloat(exp, >, 990);
	g_assert_cmpfloat(exp, <=, 1000);
}

static void test_answer_bad(void)
{
	static const char *const bad[] = {
		"",
		"not json",
		"[1,2]",
		"\"access_token\"",
		"{}",
		"{\"expires_in\":3600}",
		"{\"access_token\":\"\",\"expires_in\":3600}",
		"{\"access_token\":42,\"expires_in\":3600}",
		"{\"access_token\":null,\"expires_in\":3600}",
		"{\"access_token\":\"a b\",\"expires_in\":3600}",
		"{\"access_token\":\"a\\r\\nX-Evil: 1\",\"expires_in\":3600}",
		"{\"access_token\":\"t\"}",
		"{\"access_token\":\"t\",\"expires_in\":0}",
		"{\"access_token\":\"t\",\"expires_in\":-5}",
		"{\"access_token\":\"t\",\"expires_in\":\"soon\"}",
		"{\"access_token\":\"t\",\"expires_in\":\"12x\"}",
		"{\"access_token\":\"t\",\"expires_in\":\"nan\"}",
		"{\"access_token\":\"t\",\"expires_in\":true}",
		"{\"access_token\":\"t\",\"expires_in\":3600",
		"{\"access_token\":\"t\",\"expires_on\":\"1000\"}",
	};

	for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
		g_autoptr(GError) error = NULL;
		char *token = NULL;
		double exp = -1;

		g_test_message("answer %s", bad[i]);
		g_assert_false(cfs_oauth2_parse_answer(bad[i], strlen(bad[i]),
						       &token, &exp, &error));
		g_assert_error(error, CFS_ERROR, EIO);
		g_assert_null(token);
	}
}

static void test_answer_huge(void)
{
	g_autoptr(GString) body = g_string_new("{\"access_token\":\"");
	g_autoptr(GError) error = NULL;
	char *token = NULL;
	double exp;

	while (body->len < 70 * 1024)
		g_string_append(body, "aaaaaaaaaaaaaaaa");
	g_string_append(body, "\",\"expires_in\":3600}");
	g_assert_false(cfs_oauth2_parse_answer(body->str, body->len, &token,
					       &exp, &error));
	g_assert_error(error, CFS_ERROR, EIO);
	g_assert_null(token);
	g_clear_error(&error);
	/* Under the size limit but too long for a token. */
	g_string_truncate(body, 0);
	g_string_append(body, "{\"access_token\":\"");
	while (body->len < 20 * 1024)
		g_string_append(body, "bbbbbbbbbbbbbbbb");
	g_string_append(body, "\",\"expires_in\":3600}");
	g_assert_false(cfs_oauth2_parse_answer(body->str, body->len, &token,
					       &exp, &error));
	g_assert_error(error, CFS_ERROR, EIO);
}

static void test_answer_error(void)
{
	static const struct {
		const char *body;
		int code;
		const char *shown;
	} cases[] = {
		{ "{\"error\":\"invalid_client\",\"error_description\":"
		  "\"AADSTS7000215: Invalid client secret provided.\\r\\n"
		  "Trace ID: 1\"}", EACCES,
		  "invalid_client: AADSTS7000215: Invalid client secret "
		  "provided.  Trace ID: 1" },
		{ "{\"error\":\"invalid_grant\",\"error_description\":"
		  "\"Invalid JWT Signature.\"}", EACCES,
		  "invalid_grant: Invalid JWT Signature." },
		{ "{\"error\":\"temporarily_unavailable\"}", EIO,
		  "temporarily_unavailable" },
		{ "{\"error\":\"server_error\",\"error_description\":7}", EIO,
		  "server_error" },
	};

	for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
		g_autoptr(GError) error = NULL;
		char *token = NULL;
		double exp;

		g_assert_false(cfs_oauth2_parse_answer(
			cases[i].body, strlen(cases[i].body), &token, &exp,
			&error));
		g_assert_error(error, CFS_ERROR, cases[i].code);
		g_assert_cmpstr(error->message, ==, cases[i].shown);
	}
}

/* --- the cache, with a fake fetch --- */

typedef struct {
	GMutex lock;
	GCond cond;
	bool hold;		/* a fetch waits while this is set */
	bool fail;
	int fetches;
	int in_fetch;
	double lifetime;
} Fake;

static bool fake_fetch(gpointer data, char **token, double *expires_in,
		       GError **error)
{
	Fake *f = data;
	bool fail;
	int n;

	g_mutex_lock(&f->lock);
	n = ++f->fetches;
	f->in_fetch++;
	g_cond_broadcast(&f->cond);
	while (f->hold)
		g_cond_wait(&f->cond, &f->lock);
	f->in_fetch--;
	fail = f->fail;
	g_mutex_unlock(&f->lock);
	if (fail) {
		g_set_error(error, CFS_ERROR, EACCES, "fake: denied");
		return false;
	}
	*token = g_strdup_printf("tok-%d", n);
	*expires_in = f->lifetime;
	return true;
}

static Fake *fake_new(double lifetime)
{
	Fake *f = g_new0(Fake, 1);

	g_mutex_init(&f->lock);
	g_cond_init(&f->cond);
	f->lifetime = lifetime;
	return f;
}

static void fake_free(gpointer data)
{
	Fake *f = data;

	g_mutex_clear(&f->lock);
	g_cond_clear(&f->cond);
	g_free(f);
}

static CfsOAuth2 *fake_oauth2(Fake *f, double margin_s)
{
	CfsOAuth2Options opts = { .margin_s = margin_s };

	return cfs_oauth2_new_custom(&opts, fake_fetch, f, fake_free);
}

static void fake_set(Fake *f, bool hold, bool fail)
{
	g_mutex_lock(&f->lock);
	f->hold = hold;
	f->fail = fail;
	g_cond_broadcast(&f->cond);
	g_mutex_unlock(&f->lock);
}

/* Wait until a fetch is under way. */
static void fake_wait_fetching(Fake *f)
{
	g_mutex_lock(&f->lock);
	while (!f->in_fetch)
		g_cond_wait(&f->cond, &f->lock);
	g_mutex_unlock(&f->lock);
}

static int fake_fetches(Fake *f)
{
	int n;

	g_mutex_lock(&f->lock);
	n = f->fetches;
	g_mutex_unlock(&f->lock);
	return n;
}

/* A thread's call to cfs_oauth2_token: its token, or its error. */
typedef struct {
	CfsOAuth2 *o;
	char *token;
	GError *error;
} Caller;

static gpointer caller_run(gpointer data)
{
	Caller *c = data;

	c->token = cfs_oauth2_token(c->o, &c->error);
	return NULL;
}

static char *token_ok(CfsOAuth2 *o)
{
	g_autoptr(GError) error = NULL;
	char *t = cfs_oauth2_token(o, &error);

	g_assert_no_error(error);
	return t;
}

#define N_CALLERS 16

/* Many threads ask at once: one fetch, and all get its token or error. */
static void single_flight(bool fail)
{
	Fake *f = fake_new(3600);
	g_autoptr(CfsOAuth2) o = fake_oauth2(f, 0);
	Caller callers[N_CALLERS] = { 0 };
	GThread *threads[N_CALLERS];

	fake_set(f, true, fail);
	for (int i = 0; i < N_CALLERS; i++) {
		callers[i].o = o;
		threads[i] = g_thread_new("caller", caller_run, &callers[i]);
	}
	fake_wait_fetching(f);
	g_usleep(50 * 1000);	/* let the others pile up */
	fake_set(f, false, fail);
	for (int i = 0; i < N_CALLERS; i++) {
		g_thread_join(threads[i]);
		if (fail) {
			g_assert_error(callers[i].error, CFS_ERROR, EACCES);
			g_assert_null(callers[i].token);
		} else {
			g_assert_no_error(callers[i].error);
			g_assert_cmpstr(callers[i].token, ==, "tok-1");
		}
		cfs_secret_free(callers[i].token);
		g_clear_error(&callers[i].error);
	}
	g_assert_cmpint(fake_fetches(f), ==, 1);
}

static void test_single_flight(void)
{
	single_flight(false);
}

static void test_single_flight_error(void)
{
	single_flight(true);
}

static void test_renew_within_margin(void)
{
	Fake *f = fake_new(0.5);
	g_autoptr(CfsOAuth2) o = fake_oauth2(f, 0.2);
	g_autoptr(CfsSecret) t1 = token_ok(o);
	g_autoptr(CfsSecret) t2 = token_ok(o);
	g_autoptr(CfsSecret) t3 = NULL;
	gint64 now = g_get_real_time();

	g_assert_cmpstr(t1, ==, "tok-1");
	g_assert_cmpstr(t2, ==, "tok-1");
	g_assert_cmpint(cfs_oauth2_expires(o), >, now);
	g_assert_cmpint(cfs_oauth2_expires(o), <=, now + G_USEC_PER_SEC / 2);
	g_usleep(350 * 1000);	/* 0.15 s left: within the margin */
	t3 = token_ok(o);
	g_assert_cmpstr(t3, ==, "tok-2");
	g_assert_cmpint(fake_fetches(f), ==, 2);
}

/* margin 0: min(300 s, a fifth of the lifetime). */
static void test_default_margin(void)
{
	Fake *f = fake_new(100);
	g_autoptr(CfsOAuth2) o = fake_oauth2(f, 0);
	g_autoptr(CfsSecret) t1 = token_ok(o);
	g_autoptr(CfsSecret) t2 = token_ok(o);
	g_autoptr(CfsSecret) peek = NULL;

	g_assert_cmpstr(t2, ==, "tok-1");
	g_assert_cmpint(fake_fetches(f), ==, 1);
	peek = cfs_oauth2_peek(o, 95, NULL);
	g_assert_cmpstr(peek, ==, "tok-1");
	g_assert_null(cfs_oauth2_peek(o, 101, NULL));
}

static void test_invalidate(void)
{
	Fake *f = fake_new(3600);
	g_autoptr(CfsOAuth2) o = fake_oauth2(f, 0);
	g_autoptr(CfsSecret) t1 = token_ok(o);
	g_autoptr(CfsSecret) t2 = NULL;
	gint64 exp = 1;

	g_assert_cmpint(cfs_oauth2_expires(o), >, 0);
	cfs_oauth2_invalidate(o);
	g_assert_null(cfs_oauth2_peek(o, 0, &exp));
	g_assert_cmpint(exp, ==, 0);
	g_assert_cmpint(cfs_oauth2_expires(o), ==, 0);
	t2 = token_ok(o);
	g_assert_cmpstr(t2, ==, "tok-2");
}

/* peek answers at once while a fetch is held, with or without a token. */
static void test_peek_never_blocks(void)
{
	Fake *f = fake_new(10);
	g_autoptr(CfsOAuth2) o = fake_oauth2(f, 9.9);
	Caller c = { .o = o };
	GThread *t;
	gint64 start, exp = 0;
	g_autoptr(CfsSecret) peek = NULL;
	g_autoptr(CfsSecret) during = NULL;

	fake_set(f, true, false);
	t = g_thread_new("caller", caller_run, &c);
	fake_wait_fetching(f);
	start = g_get_monotonic_time();
	g_assert_null(cfs_oauth2_peek(o, 0, &exp));
	g_assert_cmpint(g_get_monotonic_time() - start, <, G_USEC_PER_SEC);
	fake_set(f, false, false);
	g_thread_join(t);
	g_assert_cmpstr(c.token, ==, "tok-1");
	cfs_secret_clear(&c.token);

	/* Renewal under way: peek and token use the still valid token. */
	g_usleep(150 * 1000);
	fake_set(f, true, false);
	t = g_thread_new("caller", caller_run, &c);
	fake_wait_fetching(f);
	start = g_get_monotonic_time();
	peek = cfs_oauth2_peek(o, 1, &exp);
	during = token_ok(o);
	g_assert_cmpint(g_get_monotonic_time() - start, <, G_USEC_PER_SEC);
	g_assert_cmpstr(peek, ==, "tok-1");
	g_assert_cmpstr(during, ==, "tok-1");
	g_assert_cmpint(exp, >, g_get_real_time());
	fake_set(f, false, false);
	g_thread_join(t);
	g_assert_no_error(c.error);
	g_assert_cmpstr(c.token, ==, "tok-2");
	cfs_secret_free(c.token);
}

/* Log lines seen, for checking what a failure says. */
static GMutex logged_lock;
static GString *logged;

static GLogWriterOutput test_log_writer(GLogLevelFlags level,
					const GLogField *fields,
					gsize n_fields, gpointer data)
{
	if (level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL))
		return g_log_writer_default(level, fields, n_fields, data);
	g_mutex_lock(&logged_lock);
	for (gsize i = 0; i < n_fields; i++)
		if (g_str_equal(fields[i].key, "MESSAGE"))
			g_string_append_printf(logged, "%s\n",
					       (const char *)fields[i].value);
	g_mutex_unlock(&logged_lock);
	return G_LOG_WRITER_HANDLED;
}

/* A renewal that fails while the token is still valid: that token, a
 * warning without it, and no new try for a few seconds. */
static void test_renew_fails(void)
{
	Fake *f = fake_new(10);
	g_autoptr(CfsOAuth2) o = fake_oauth2(f, 9.9);
	g_autoptr(CfsSecret) t1 = token_ok(o);
	g_autoptr(CfsSecret) t2 = NULL;
	g_autoptr(CfsSecret) t3 = NULL;
	g_autoptr(GError) error = NULL;

	g_usleep(150 * 1000);
	fake_set(f, false, true);
	g_string_truncate(logged, 0);
	t2 = token_ok(o);
	g_assert_cmpstr(t2, ==, "tok-1");
	g_assert_nonnull(strstr(logged->str, "fake: denied"));
	g_assert_null(strstr(logged->str, "tok-"));
	t3 = token_ok(o);
	g_assert_cmpstr(t3, ==, "tok-1");
	g_assert_cmpint(fake_fetches(f), ==, 2);
	/* Once invalidated, the failure is the answer. */
	cfs_oauth2_invalidate(o);
	g_assert_null(cfs_oauth2_token(o, &error));
	g_assert_error(error, CFS_ERROR, EACCES);
}

int main(int argc, char **argv)
{
	logged = g_string_new(NULL);
	g_log_set_writer_func(test_log_writer, NULL, NULL);
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/jwt/verify", test_jwt_verify);
	g_test_add_func("/jwt/known-answer", test_jwt_known_answer);
	g_test_add_func("/jwt/bad-keys", test_jwt_bad_keys);
	g_test_add_func("/jwt/bearer-new", test_jwt_bearer_new);
	g_test_add_func("/oauth2/answer-good", test_answer_good);
	g_test_add_func("/oauth2/answer-expires-on", test_answer_expires_on);
	g_test_add_func("/oauth2/answer-bad", test_answer_bad);
	g_test_add_func("/oauth2/answer-huge", test_answer_huge);
	g_test_add_func("/oauth2/answer-error", test_answer_error);
	g_test_add_func("/oauth2/single-flight", test_single_flight);
	g_test_add_func("/oauth2/single-flight-error",
			test_single_flight_error);
	g_test_add_func("/oauth2/renew-within-margin",
			test_renew_within_margin);
	g_test_add_func("/oauth2/default-margin", test_default_margin);
	g_test_add_func("/oauth2/invalidate", test_invalidate);
	g_test_add_func("/oauth2/peek-never-blocks", test_peek_never_blocks);
	g_test_add_func("/oauth2/renew-fails", test_renew_fails);
	return g_test_run();
}
