// SPDX-License-Identifier: MIT
/* The gcp provider's CRC-32C: known answers, and combining pieces. */
#include <glib.h>
#include <string.h>

#include "providers/gcp/gcp-private.h"

static void test_known_answers(void)
{
	static const guint8 zeros[32] = { 0 };
	guint8 ones[32];

	memset(ones, 0xff, sizeof(ones));
	/* The check value of CRC-32C, and RFC 3720's vectors. */
	g_assert_cmphex(gcp_crc32c(0, "123456789", 9), ==, 0xe3069283);
	g_assert_cmphex(gcp_crc32c(0, zeros, 32), ==, 0x8a9136aa);
	g_assert_cmphex(gcp_crc32c(0, ones, 32), ==, 0x62a8ab43);
	g_assert_cmphex(gcp_crc32c(0, "", 0), ==, 0);
	/* Continuing a CRC is the CRC of the whole. */
	g_assert_cmphex(gcp_crc32c(gcp_crc32c(0, "12345", 5), "6789", 4), ==,
			0xe3069283);
}

static void test_combine(void)
{
	g_autofree guint8 *buf = g_malloc(1 << 20);
	guint32 whole;

	for (guint i = 0; i < 1 << 20; i++)
		buf[i] = (guint8)(g_random_int() & 0xff);
	whole = gcp_crc32c(0, buf, 1 << 20);
	for (guint cut = 0; cut <= 1 << 20; cut += 77777) {
		guint32 a = gcp_crc32c(0, buf, cut);
		guint32 b = gcp_crc32c(0, buf + cut, (1 << 20) - cut);

		g_assert_cmphex(gcp_crc32c_combine(a, b, (1 << 20) - cut), ==,
				whole);
	}
	/* Unaligned starts and tails take the byte path. */
	g_assert_cmphex(gcp_crc32c_combine(gcp_crc32c(0, buf, 3),
					   gcp_crc32c(0, buf + 3, 13), 13),
			==, gcp_crc32c(0, buf, 16));
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/gcp/crc32c/known", test_known_answers);
	g_test_add_func("/gcp/crc32c/combine", test_combine);
	return g_test_run();
}
