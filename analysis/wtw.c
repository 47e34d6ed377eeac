#include "analysis/wtw.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define WTW_X86 1
#endif

#define LANES 8
#define ROWS 4

/* ---- the portable path: the definition in wtw.h, written out ---- */

/* The end of a dot product, both paths: the lanes added left to right, then the tail k = n8..n-1. */
static inline float lanes_and_tail(const float *lane, const float *w, const float *x, int n8, int n)
{
	float s = lane[0];
	for (int l = 1; l < LANES; l++)
		s += lane[l];
	for (int k = n8; k < n; k++)
		s = fmaf(w[k], x[k], s);
	return s;
}

/* s of the definition for row w and vector x. */
static float dot_portable(const float *w, const float *x, int n)
{
	float lane[LANES] = {0};
	const int n8 = n - n % LANES;
	for (int k = 0; k < n8; k += LANES)
		for (int l = 0; l < LANES; l++)
			lane[l] = fmaf(w[k + l], x[k + l], lane[l]);
	return lanes_and_tail(lane, w, x, n8, n);
}

/* y [n] gets the contributions of `rows` consecutive rows of w with coefficients ct, in row order. */
static void axpy_portable(const float *w, int rows, int n, const float *ct, float *y)
{
	for (int k = 0; k < n; k++) {
		float acc = y[k];
		for (int r = 0; r < rows; r++)
			acc = fmaf(ct[r], w[(size_t)r * n + k], acc);
		y[k] = acc;
	}
}

static void apply_portable(const float *w, int m, int n, const float *X, int q, float post, float c, float *Y)
{
	for (int i = 0; i < m;) {
		const int rows = m - i >= ROWS ? ROWS : 1;
		const float *wi = w + (size_t)i * n;
		for (int v = 0; v < q; v++) {
			float ct[ROWS];
			for (int r = 0; r < rows; r++)
				ct[r] = c * (post * dot_portable(wi + (size_t)r * n, X + (size_t)v * n, n));
			axpy_portable(wi, rows, n, ct, Y + (size_t)v * n);
		}
		i += rows;
	}
}

/* ---- WTW_BLAS: two sgemv per vector per tile of rows, while the tile is in cache ---- */

#define TILE 32

static void apply_blas(const float *w, int m, int n, const float *X, int q, float post, float c, float *Y)
{
	float t[TILE];
	for (int r = 0; r < m; r += TILE) {
		const int rows = m - r < TILE ? m - r : TILE;
		const float *tile = w + (size_t)r * n;
		for (int v = 0; v < q; v++) {
			cblas_sgemv(CblasRowMajor, CblasNoTrans, rows, n, post, tile, n, X + (size_t)v * n, 1, 0.0f, t, 1);
			cblas_sgemv(CblasRowMajor, CblasTrans, rows, n, c, tile, n, t, 1, 1.0f, Y + (size_t)v * n, 1);
		}
	}
}

/* ---- the AVX2+FMA path: the same operations, eight lanes to a register ---- */

#if defined(WTW_X86)
#define WTW_TARGET __attribute__((target("avx2,fma")))

/* The lanes of acc summed left to right, then the tail; see the definition. */
WTW_TARGET static inline float finish_dot(__m256 acc, const float *w, const float *x, int n8, int n)
{
	float lane[LANES];
	_mm256_storeu_ps(lane, acc);
	return lanes_and_tail(lane, w, x, n8, n);
}

/* Four rows and q vectors: 4 q accumulators, each load of W serving all q vectors. */
WTW_TARGET static inline void rows4_avx(const float *w, int n, const float *X, int q, float post, float c, float *Y)
{
	const int n8 = n - n % LANES;
	const float *w0 = w, *w1 = w + n, *w2 = w + 2 * (size_t)n, *w3 = w + 3 * (size_t)n;
	const float *x0 = X, *x1 = X + (size_t)(q > 1) * n;
	__m256 a00 = _mm256_setzero_ps(), a10 = a00, a20 = a00, a30 = a00;
	__m256 a01 = a00, a11 = a00, a21 = a00, a31 = a00;
	if (q > 1) {
		for (int k = 0; k < n8; k += LANES) {
			const __m256 u = _mm256_loadu_ps(x0 + k), v = _mm256_loadu_ps(x1 + k);
			const __m256 r0 = _mm256_loadu_ps(w0 + k), r1 = _mm256_loadu_ps(w1 + k);
			const __m256 r2 = _mm256_loadu_ps(w2 + k), r3 = _mm256_loadu_ps(w3 + k);
			a00 = _mm256_fmadd_ps(r0, u, a00), a01 = _mm256_fmadd_ps(r0, v, a01);
			a10 = _mm256_fmadd_ps(r1, u, a10), a11 = _mm256_fmadd_ps(r1, v, a11);
			a20 = _mm256_fmadd_ps(r2, u, a20), a21 = _mm256_fmadd_ps(r2, v, a21);
			a30 = _mm256_fmadd_ps(r3, u, a30), a31 = _mm256_fmadd_ps(r3, v, a31);
		}
	} else {
		for (int k = 0; k < n8; k += LANES) {
			const __m256 u = _mm256_loadu_ps(x0 + k);
			a00 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + k), u, a00);
			a10 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + k), u, a10);
			a20 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + k), u, a20);
			a30 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + k), u, a30);
		}
	}
	const __m256 acc[WTW_MAX_Q][ROWS] = {{a00, a10, a20, a30}, {a01, a11, a21, a31}};
	float ct[WTW_MAX_Q][ROWS] = {{0}};
	for (int v = 0; v < q; v++)
		for (int r = 0; r < ROWS; r++)
			ct[v][r] = c * (post * finish_dot(acc[v][r], w + (size_t)r * n, X + (size_t)v * n, n8, n));
	/* Both vectors in one sweep, so each row chunk is loaded once for both. */
	float *y0 = Y, *y1 = Y + (size_t)(q > 1) * n;
	const __m256 c00 = _mm256_set1_ps(ct[0][0]), c01 = _mm256_set1_ps(ct[0][1]);
	const __m256 c02 = _mm256_set1_ps(ct[0][2]), c03 = _mm256_set1_ps(ct[0][3]);
	if (q > 1) {
		const __m256 c10 = _mm256_set1_ps(ct[1][0]), c11 = _mm256_set1_ps(ct[1][1]);
		const __m256 c12 = _mm256_set1_ps(ct[1][2]), c13 = _mm256_set1_ps(ct[1][3]);
		for (int k = 0; k < n8; k += LANES) {
			const __m256 r0 = _mm256_loadu_ps(w0 + k), r1 = _mm256_loadu_ps(w1 + k);
			const __m256 r2 = _mm256_loadu_ps(w2 + k), r3 = _mm256_loadu_ps(w3 + k);
			__m256 a = _mm256_loadu_ps(y0 + k), b = _mm256_loadu_ps(y1 + k);
			a = _mm256_fmadd_ps(c00, r0, a), b = _mm256_fmadd_ps(c10, r0, b);
			a = _mm256_fmadd_ps(c01, r1, a), b = _mm256_fmadd_ps(c11, r1, b);
			a = _mm256_fmadd_ps(c02, r2, a), b = _mm256_fmadd_ps(c12, r2, b);
			a = _mm256_fmadd_ps(c03, r3, a), b = _mm256_fmadd_ps(c13, r3, b);
			_mm256_storeu_ps(y0 + k, a);
			_mm256_storeu_ps(y1 + k, b);
		}
	} else {
		for (int k = 0; k < n8; k += LANES) {
			__m256 a = _mm256_loadu_ps(y0 + k);
			a = _mm256_fmadd_ps(c00, _mm256_loadu_ps(w0 + k), a);
			a = _mm256_fmadd_ps(c01, _mm256_loadu_ps(w1 + k), a);
			a = _mm256_fmadd_ps(c02, _mm256_loadu_ps(w2 + k), a);
			a = _mm256_fmadd_ps(c03, _mm256_loadu_ps(w3 + k), a);
			_mm256_storeu_ps(y0 + k, a);
		}
	}
	for (int v = 0; v < q; v++) {
		float *y = Y + (size_t)v * n;
		for (int k = n8; k < n; k++) {
			float a = y[k];
			a = fmaf(ct[v][0], w0[k], a);
			a = fmaf(ct[v][1], w1[k], a);
			a = fmaf(ct[v][2], w2[k], a);
			a = fmaf(ct[v][3], w3[k], a);
			y[k] = a;
		}
	}
}

/* One row (the last m % 4). */
WTW_TARGET static inline void row1_avx(const float *w, int n, const float *X, int q, float post, float c, float *Y)
{
	const int n8 = n - n % LANES;
	for (int v = 0; v < q; v++) {
		const float *x = X + (size_t)v * n;
		__m256 acc = _mm256_setzero_ps();
		for (int k = 0; k < n8; k += LANES)
			acc = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(x + k), acc);
		const float ct = c * (post * finish_dot(acc, w, x, n8, n));
		const __m256 cv = _mm256_set1_ps(ct);
		float *y = Y + (size_t)v * n;
		for (int k = 0; k < n8; k += LANES)
			_mm256_storeu_ps(y + k, _mm256_fmadd_ps(cv, _mm256_loadu_ps(w + k), _mm256_loadu_ps(y + k)));
		for (int k = n8; k < n; k++)
			y[k] = fmaf(ct, w[k], y[k]);
	}
}

WTW_TARGET static void apply_avx(const float *w, int m, int n, const float *X, int q, float post, float c, float *Y)
{
	int i = 0;
	for (; i + ROWS <= m; i += ROWS)
		rows4_avx(w + (size_t)i * n, n, X, q, post, c, Y);
	for (; i < m; i++)
		row1_avx(w + (size_t)i * n, n, X, q, post, c, Y);
}

static int have_avx2_fma(void)
{
	static int known = -1; /* benign: every thread computes the same value */
	int k = __atomic_load_n(&known, __ATOMIC_RELAXED);
	if (k < 0) {
		__builtin_cpu_init();
		k = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
		__atomic_store_n(&known, k, __ATOMIC_RELAXED);
	}
	return k;
}
#endif

void *wtw_alloc(size_t bytes)
{
	return aligned_alloc(64, (bytes + 63) / 64 * 64);
}

const char *wtw_auto_path(void)
{
#if defined(WTW_X86)
	if (have_avx2_fma())
		return "avx2+fma";
#endif
	return "sgemv";
}

void wtw_apply(const float *w, int m, int n, const float *X, int q, float post, float c, float *Y, wtw_path path)
{
	memset(Y, 0, (size_t)q * n * sizeof *Y);
	if (path == WTW_PORTABLE) {
		apply_portable(w, m, n, X, q, post, c, Y);
		return;
	}
#if defined(WTW_X86)
	if (path == WTW_AUTO && have_avx2_fma()) {
		apply_avx(w, m, n, X, q, post, c, Y);
		return;
	}
#endif
	apply_blas(w, m, n, X, q, post, c, Y);
}
