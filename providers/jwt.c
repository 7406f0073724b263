// SPDX-License-Identifier: MIT
/*
 * JSON Web Tokens signed with RS256 (RFC 7515, 7518, 7523), for the OAuth2
 * JWT bearer grant of Google service accounts: base64url, the signature
 * with OpenSSL's EVP interface, and loading the PEM key that signs.
 */
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>

#include "common/error.h"
#include "common/secret.h"
#include "providers/oauth2.h"

/* base64url without padding (RFC 7515 section 2). Transfer full. */
static char *jwt_b64url(const void *data, gsize len)
{
	char *s = g_base64_encode(data, len);
	char *end = s + strlen(s);

	while (end > s && end[-1] == '=')
		*--end = '\0';
	for (char *p = s; *p; p++) {
		if (*p == '+')
			*p = '-';
		else if (*p == '/')
			*p = '_';
	}
	return s;
}

/* The first OpenSSL error as text, and the queue emptied. */
static void jwt_ssl_error(char *buf, gsize size)
{
	unsigned long e = ERR_peek_last_error();

	if (e)
		ERR_error_string_n(e, buf, size);
	else
		g_strlcpy(buf, "unknown error", size);
	ERR_clear_error();
}

/* The RS256 signature of @input: *@sig (transfer full), *@sig_len. */
static bool jwt_rs256_sign(EVP_PKEY *key, const char *input,
			   unsigned char **sig, size_t *sig_len, GError **error)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	const unsigned char *in = (const unsigned char *)input;
	char why[256];

	*sig = g_malloc(EVP_PKEY_get_size(key));
	*sig_len = EVP_PKEY_get_size(key);
	if (ctx &&
	    EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) == 1 &&
	    EVP_DigestSign(ctx, *sig, sig_len, in, strlen(input)) == 1) {
		EVP_MD_CTX_free(ctx);
		return true;
	}
	EVP_MD_CTX_free(ctx);
	g_clear_pointer(sig, g_free);
	jwt_ssl_error(why, sizeof(why));
	g_set_error(error, CFS_ERROR, EINVAL, "RS256 signature: %s", why);
	return false;
}

char *cfs_jwt_rs256(EVP_PKEY *key, const char *header_json,
		    const char *claims_json, GError **error)
{
	g_autofree char *header = NULL, *claims = NULL, *input = NULL;
	g_autoptr(CfsSecret) sig64 = NULL;
	unsigned char *sig = NULL;
	size_t sig_len = 0;

	if (!EVP_PKEY_is_a(key, "RSA")) {
		g_set_error(error, CFS_ERROR, EINVAL,
			    "RS256 needs an RSA key, not %s",
			    EVP_PKEY_get0_type_name(key));
		return NULL;
	}
	header = jwt_b64url(header_json, strlen(header_json));
	claims = jwt_b64url(claims_json, strlen(claims_json));
	input = g_strconcat(header, ".", claims, NULL);
	if (!jwt_rs256_sign(key, input, &sig, &sig_len, error))
		return NULL;
	sig64 = jwt_b64url(sig, sig_len);
	cfs_secret_wipe(sig, sig_len);
	g_free(sig);
	return g_strconcat(input, ".", sig64, NULL);
}

/* The PEM private key, never a passphrase: an encrypted key is an error
 * rather than a prompt on the terminal. */
static int jwt_no_passphrase(char *buf, int size, int rwflag, void *u)
{
	return -1;
}

EVP_PKEY *cfs_jwt_load_rsa_key(const char *pem, GError **error)
{
	BIO *bio = BIO_new_mem_buf(pem, -1);
	EVP_PKEY *key = NULL;
	char why[256];

	if (bio)
		key =
		    PEM_read_bio_PrivateKey(bio, NULL, jwt_no_passphrase, NULL);
	BIO_free(bio);
	if (!key) {
		jwt_ssl_error(why, sizeof(why));
		g_set_error(error, CFS_ERROR, EINVAL,
			    "private key: not an unencrypted PEM private key (%s)",
			    why);
		return NULL;
	}
	if (!EVP_PKEY_is_a(key, "RSA")) {
		g_set_error(error, CFS_ERROR, EINVAL,
			    "private key: %s, but RS256 needs an RSA key",
			    EVP_PKEY_get0_type_name(key));
		EVP_PKEY_free(key);
		return NULL;
	}
	return key;
}
