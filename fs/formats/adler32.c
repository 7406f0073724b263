// SPDX-License-Identifier: MIT
/*
 * Adler-32, the checksum that ends every zlib stream of a streamOptimized
 * VMDK grain. It is computed over all the data a vmdk view serves, so it
 * is vectorised: zlib's byte loop cost a third of the CPU of a copy.
 *
 * For bytes x_0 … x_{N-1}: a' = a + Σ x_i and b' = b + N·a + Σ (N - i)·x_i,
 * both mod 65521. Taken 32 bytes at a time, (N - i) = 32·(blocks after
 * this one) + (32 - t) for byte t of its block, so per block we add the
 * byte sum S to s1, the sums of earlier blocks to ps (counted 32 times at
 * the end), and Σ (32 - t)·x_t to s2.
 */
#include <zlib.h>

#include "fs/formats/view-private.h"

#define ADLER_BASE 65521u
/* Bytes per round between reductions, a multiple of 32 under zlib's
 * NMAX (5552), so that no 32-bit sum overflows. */
#define ADLER_ROUND (173 * 32)

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

__attribute__((target("ssse3")))
static guint32 adler32_ssse3(guint32 adler, const guint8 *p, gsize len)
{
	const __m128i w_hi = _mm_setr_epi8(32, 31, 30, 29, 28, 27, 26, 25,
					   24, 23, 22, 21, 20, 19, 18, 17);
	const __m128i w_lo = _mm_setr_epi8(16, 15, 14, 13, 12, 11, 10, 9,
					   8, 7, 6, 5, 4, 3, 2, 1);
	const __m128i ones = _mm_set1_epi16(1), zero = _mm_setzero_si128();
	guint64 a = adler & 0xffff, b = adler >> 16;

	while (len >= 32) {
		gsize n = MIN(len, ADLER_ROUND) / 32 * 32;
		__m128i s1 = zero, ps = zero, s2 = zero;
		guint32 v[4];

		for (gsize k = 0; k < n; k += 32) {
			__m128i x0 = _mm_loadu_si128((const __m128i *)(p + k));
			__m128i x1 = _mm_loadu_si128((const __m128i *)(p + k + 16));

			ps = _mm_add_epi32(ps, s1);
			s1 = _mm_add_epi32(s1, _mm_sad_epu8(x0, zero));
			s1 = _mm_add_epi32(s1, _mm_sad_epu8(x1, zero));
			s2 = _mm_add_epi32(s2, _mm_madd_epi16(
				_mm_maddubs_epi16(x0, w_hi), ones));
			s2 = _mm_add_epi32(s2, _mm_madd_epi16(
				_mm_maddubs_epi16(x1, w_lo), ones));
		}
		b += n * a;
		_mm_storeu_si128((__m128i *)v, ps);
		b += 32 * ((guint64)v[0] + v[1] + v[2] + v[3]);
		_mm_storeu_si128((__m128i *)v, s2);
		b += (guint64)v[0] + v[1] + v[2] + v[3];
		_mm_storeu_si128((__m128i *)v, s1);
		a += (guint64)v[0] + v[1] + v[2] + v[3];
		a %= ADLER_BASE;
		b %= ADLER_BASE;
		p += n;
		len -= n;
	}
	/* The tail, under 32 bytes. */
	return (guint32)adler32((uLong)(b << 16 | a), p, (uInt)len);
}
#endif

guint32 cfs_adler32(guint32 adler, const void *data, gsize len)
{
#if defined(__x86_64__) && defined(__GNUC__)
	if (__builtin_cpu_supports("ssse3"))
		return adler32_ssse3(adler, data, len);
#endif
	while (len > 0) {
		uInt n = (uInt)MIN(len, G_MAXUINT32);

		adler = (guint32)adler32(adler, data, n);
		data = (const guint8 *)data + n;
		len -= n;
	}
	return adler;
}
