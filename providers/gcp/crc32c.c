// SPDX-License-Identifier: MIT
/*
 * CRC-32C (Castagnoli), the checksum GCS keeps for every object: a
 * table-driven update (slicing by eight), the SSE 4.2 instruction where
 * the CPU has it, and the combination of two CRCs, which lets pieces that
 * arrive in any order be checked against the whole object's CRC.
 */
#include <string.h>

#include "providers/gcp/gcp-private.h"

#define CRC32C_POLY 0x82f63b78u	/* reflected */

static guint32 crc_table[8][256];
static gsize crc_table_ready;

static void crc32c_init_table(void)
{
	for (guint n = 0; n < 256; n++) {
		guint32 c = n;

		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ CRC32C_POLY : c >> 1;
		crc_table[0][n] = c;
	}
	for (guint n = 0; n < 256; n++)
		for (int t = 1; t < 8; t++)
			crc_table[t][n] = (crc_table[t - 1][n] >> 8) ^
				crc_table[0][crc_table[t - 1][n] & 0xff];
}

/* The raw register update, without the initial and final inversion. */
static guint32 crc32c_soft(guint32 c, const guint8 *p, gsize len)
{
	while (len >= 8) {
		guint32 lo, hi;

		memcpy(&lo, p, 4);
		memcpy(&hi, p + 4, 4);
		lo = GUINT32_FROM_LE(lo) ^ c;
		hi = GUINT32_FROM_LE(hi);
		c = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
		    crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^
		    crc_table[3][hi & 0xff] ^ crc_table[2][(hi >> 8) & 0xff] ^
		    crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
		p += 8;
		len -= 8;
	}
	while (len--)
		c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xff];
	return c;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CRC32C_HW 1
__attribute__((target("sse4.2")))
static guint32 crc32c_hw(guint32 c, const guint8 *p, gsize len)
{
	guint64 c64 = c;

	while (len >= 8) {
		guint64 v;

		memcpy(&v, p, 8);
		c64 = __builtin_ia32_crc32di(c64, v);
		p += 8;
		len -= 8;
	}
	c = (guint32)c64;
	while (len--)
		c = __builtin_ia32_crc32qi(c, *p++);
	return c;
}
#endif

guint32 gcp_crc32c(guint32 crc, const void *data, gsize len)
{
	static int hw = -1;

	if (g_once_init_enter(&crc_table_ready)) {
		crc32c_init_table();
#ifdef CRC32C_HW
		__builtin_cpu_init();
		g_atomic_int_set(&hw, __builtin_cpu_supports("sse4.2") ? 1 : 0);
#endif
		g_once_init_leave(&crc_table_ready, 1);
	}
#ifdef CRC32C_HW
	if (g_atomic_int_get(&hw) == 1)
		return ~crc32c_hw(~crc, data, len);
#endif
	return ~crc32c_soft(~crc, data, len);
}

/*
 * Polynomials modulo P in the reflected representation: bit 31 is the
 * coefficient of x^0, bit 0 that of x^31.
 */
static guint32 crc32c_mul(guint32 a, guint32 b)
{
	guint32 p = 0;

	for (guint32 m = 1u << 31; m; m >>= 1) {
		if (a & m)
			p ^= b;
		b = b & 1 ? (b >> 1) ^ CRC32C_POLY : b >> 1;
	}
	return p;
}

/* x^(8 * @bytes) mod P. */
static guint32 crc32c_shift(guint64 bytes)
{
	guint32 p = 1u << 31;		/* x^0 */
	guint32 power = 1u << 30;	/* x^1, then x^2, x^4, … */

	for (int k = 0; k < 3; k++)
		power = crc32c_mul(power, power);	/* x^8 */
	for (; bytes; bytes >>= 1) {
		if (bytes & 1)
			p = crc32c_mul(p, power);
		power = crc32c_mul(power, power);
	}
	return p;
}

guint32 gcp_crc32c_combine(guint32 crc_a, guint32 crc_b, guint64 len_b)
{
	return crc32c_mul(crc_a, crc32c_shift(len_b)) ^ crc_b;
}
