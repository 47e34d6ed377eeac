/* The Lanczos product kernel (analysis/wtw.c): its AVX2+FMA path against its portable path, bit for bit, on
 * shapes with every remainder of rows (mod 4) and columns (mod 8), one- and two-vector blocks, at aligned and
 * unaligned addresses; and every path (the sgemv one too) against a double-precision product within the rigorous
 * bound of float rounding. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/wtw.h"
#include "tests/test.h"

static float rnd(unsigned long long *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return (float)((double)((*s * 2685821657736338717ULL) >> 11) / 9007199254740992.0 - 0.5);
}

static const int shapes[][2] = {{1, 1}, {1, 9}, {3, 7}, {4, 8}, {5, 9}, {7, 16}, {8, 15}, {13, 31}, {64, 128},
				{37, 1000}, {130, 2051}, {2, 4099}};
#define N_SHAPES (int)(sizeof shapes / sizeof shapes[0])

/* Runs the kernel on copies of w and X placed `shift` floats past a 64-byte boundary. */
static void apply_at(const float *w, int m, int n, const float *X, int q, float post, float c, float *Y, wtw_path path,
		     int shift)
{
	float *wa = aligned_alloc(64, ((size_t)m * n + 16) * sizeof(float) / 64 * 64 + 64);
	float *xa = aligned_alloc(64, ((size_t)q * n + 16) * sizeof(float) / 64 * 64 + 64);
	float *ya = aligned_alloc(64, ((size_t)q * n + 16) * sizeof(float) / 64 * 64 + 64);
	memcpy(wa + shift, w, (size_t)m * n * sizeof *w);
	memcpy(xa + shift, X, (size_t)q * n * sizeof *X);
	wtw_apply(wa + shift, m, n, xa + shift, q, post, c, ya + shift, path);
	memcpy(Y, ya + shift, (size_t)q * n * sizeof *Y);
	free(wa);
	free(xa);
	free(ya);
}

/* The processor this runs on takes the vector path when it can; otherwise the comparisons below would compare the
 * portable path with itself. */
static void test_path_chosen(void)
{
	const char *path = wtw_auto_path();
	printf("     kernel path: %s\n", path);
#if defined(__x86_64__)
	__builtin_cpu_init();
	const int vec = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
	CHECK(!strcmp(path, vec ? "avx2+fma" : "sgemv"), "path %s on a processor %s AVX2+FMA", path,
	      vec ? "with" : "without");
#endif
}

static void test_paths_agree_bitwise(void)
{
	if (strcmp(wtw_auto_path(), "avx2+fma") != 0) {   /* WTW_AUTO is sgemv there: other sums by design */
		printf("     no AVX2+FMA on this processor: the vector path cannot be compared here\n");
		return;
	}
	unsigned long long s = 0x5DEECE66DULL;
	for (int h = 0; h < N_SHAPES; h++)
		for (int q = 1; q <= WTW_MAX_Q; q++) {
			const int m = shapes[h][0], n = shapes[h][1];
			float *w = malloc((size_t)m * n * sizeof *w), *X = malloc((size_t)q * n * sizeof *X);
			float *ref = malloc((size_t)q * n * sizeof *ref), *got = malloc((size_t)q * n * sizeof *got);
			for (size_t k = 0; k < (size_t)m * n; k++)
				w[k] = rnd(&s);
			for (size_t k = 0; k < (size_t)q * n; k++)
				X[k] = rnd(&s);
			const float post = 0.25f, c = 0.5f;
			apply_at(w, m, n, X, q, post, c, ref, WTW_PORTABLE, 0);
			for (int shift = 0; shift < 8; shift += 3) {
				apply_at(w, m, n, X, q, post, c, got, WTW_AUTO, shift);
				CHECK(!memcmp(ref, got, (size_t)q * n * sizeof *ref), "%dx%d q %d shift %d: paths differ", m,
				      n, q, shift);
				apply_at(w, m, n, X, q, post, c, got, WTW_PORTABLE, shift);
				CHECK(!memcmp(ref, got, (size_t)q * n * sizeof *ref), "%dx%d q %d shift %d: portable moved", m,
				      n, q, shift);
			}
			free(w);
			free(X);
			free(ref);
			free(got);
		}
}

/* |Y - Y_exact| <= gamma (c |W|^T (post |W| |X|)) elementwise, gamma = (n + m + 2) 2^-24 / (1 - ...): each dot
 * is n fused multiply-adds and adds (at most n + 1 roundings of relative size 2^-24), two exact power-of-two
 * scalings, then m fused multiply-adds into y (Higham, Accuracy and Stability of Numerical Algorithms, 3.1). */
static void test_against_double(void)
{
	unsigned long long s = 0x9E3779B97F4A7C15ULL;
	for (int h = 0; h < N_SHAPES; h++)
		for (int path = 0; path < 3; path++) {
			const int m = shapes[h][0], n = shapes[h][1], q = 2;
			float *w = malloc((size_t)m * n * sizeof *w), *X = malloc((size_t)q * n * sizeof *X);
			float *Y = malloc((size_t)q * n * sizeof *Y);
			double *t = malloc((size_t)m * sizeof *t), *ta = malloc((size_t)m * sizeof *ta);
			for (size_t k = 0; k < (size_t)m * n; k++)
				w[k] = rnd(&s) * 8.0f;
			for (size_t k = 0; k < (size_t)q * n; k++)
				X[k] = rnd(&s);
			const float post = 0.125f, c = 2.0f;
			static const wtw_path paths[3] = {WTW_AUTO, WTW_PORTABLE, WTW_BLAS};
			wtw_apply(w, m, n, X, q, post, c, Y, paths[path]);
			const double u = ldexp(1.0, -24), gamma = (n + m + 2) * u / (1.0 - (n + m + 2) * u);
			double worst = 0.0;
			for (int v = 0; v < q; v++) {
				for (int i = 0; i < m; i++) {
					double acc = 0.0, abs_acc = 0.0;
					for (int k = 0; k < n; k++) {
						acc += (double)w[(size_t)i * n + k] * X[(size_t)v * n + k];
						abs_acc += fabs((double)w[(size_t)i * n + k] * X[(size_t)v * n + k]);
					}
					t[i] = post * acc;
					ta[i] = post * abs_acc;
				}
				for (int k = 0; k < n; k++) {
					double exact = 0.0, bound = 0.0;
					for (int i = 0; i < m; i++) {
						exact += c * t[i] * w[(size_t)i * n + k];
						bound += c * ta[i] * fabs((double)w[(size_t)i * n + k]);
					}
					const double err = fabs(Y[(size_t)v * n + k] - exact);
					CHECK(err <= gamma * bound, "%dx%d path %d: y[%d][%d] = %.9g, exact %.9g, bound %.3g", m, n,
					      path, v, k, Y[(size_t)v * n + k], exact, gamma * bound);
					worst = bound > 0.0 && err / bound > worst ? err / bound : worst;
				}
			}
			CHECK(worst < gamma, "%dx%d: worst relative error %.3g", m, n, worst);
			free(w);
			free(X);
			free(Y);
			free(t);
			free(ta);
		}
}

/* The planted answer: W with orthogonal rows of known lengths, so W^T W x is known in closed form. W's rows are
 * the standard basis vectors e_0..e_{m-1} scaled by r_i; then Y = c post r_i^2 x_i at k = i < m, 0 elsewhere. */
static void test_planted(void)
{
	const int m = 6, n = 21;
	float w[6 * 21] = {0}, X[2 * 21], Y[2 * 21];
	for (int i = 0; i < m; i++)
		w[i * n + i] = (float)(i + 1);
	for (int k = 0; k < 2 * n; k++)
		X[k] = (float)(k % 5) - 2.0f;
	for (int path = 0; path < 2; path++) {
		wtw_apply(w, m, n, X, 2, 0.5f, 4.0f, Y, path ? WTW_PORTABLE : WTW_AUTO);
		for (int v = 0; v < 2; v++)
			for (int k = 0; k < n; k++) {
				const float want = k < m ? 2.0f * (float)((k + 1) * (k + 1)) * X[v * n + k] : 0.0f;
				CHECK(Y[v * n + k] == want, "path %d y[%d][%d] = %g, want %g", path, v, k, Y[v * n + k], want);
			}
	}
}

int main(void)
{
	RUN(test_path_chosen);
	RUN(test_paths_agree_bitwise);
	RUN(test_against_double);
	RUN(test_planted);
	return test_summary();
}
