/* Router rows for the compact layout: lse-fit against a brute-force ridge solve of the normal equations written
 * here (targets by direct loops, Gaussian elimination), lse-fit beating mean and dominant on planted groups of
 * near-identical rows, a group of one reproducing its row, mean and dominant by hand, and bad input. */
#include "analysis/router_fit.h"

#include <stdint.h>
#include <stdlib.h>

#include "tests/test.h"

static double gaussian(unsigned long long *s)
{
	const double u1 = ((test_rand_u64(s) >> 11) + 1.0) * (1.0 / 9007199254740993.0);
	const double u2 = (test_rand_u64(s) >> 11) * (1.0 / 9007199254740992.0);
	return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static float *gaussian_matrix(int64_t rows, int cols, double scale, unsigned long long seed)
{
	float *a = malloc(sizeof(float) * (size_t)(rows * cols));
	for (int64_t i = 0; i < rows * cols; i++)
		a[i] = (float)(scale * gaussian(&seed));
	return a;
}

/* Router rows in groups: row e = base of its group + spread x Gaussian. */
static float *grouped_router(int E, int d, const int *group, int G, double spread, unsigned long long seed)
{
	float *base = gaussian_matrix(G, d, 1.0, seed), *r = malloc(sizeof(float) * (size_t)(E * d));
	for (int e = 0; e < E; e++)
		for (int j = 0; j < d; j++)
			r[e * d + j] = base[(group[e] < 0 ? 0 : group[e]) * d + j] + (float)(spread * gaussian(&seed));
	free(base);
	return r;
}

/* t [T, G]: logsumexp of each group's members' logits, by direct loops. */
static void brute_targets(const float *x, int64_t T, int d, const float *router, int E, const int *group, int G,
			  double *t)
{
	for (int64_t i = 0; i < T; i++)
		for (int g = 0; g < G; g++) {
			double sum = 0;
			for (int e = 0; e < E; e++) {
				if (group[e] != g)
					continue;
				double z = 0;
				for (int j = 0; j < d; j++)
					z += (double)x[i * d + j] * router[e * d + j];
				sum += exp(z);  /* the test data keep logits small: no max shift needed */
			}
			t[i * G + g] = log(sum);
		}
}

/* Solves a [n, n] y = b [n] by Gaussian elimination with partial pivoting (a and b destroyed). */
static void gauss_solve(double *a, double *b, int n)
{
	for (int c = 0; c < n; c++) {
		int p = c;
		for (int r = c + 1; r < n; r++)
			if (fabs(a[r * n + c]) > fabs(a[p * n + c]))
				p = r;
		for (int j = 0; j < n; j++) {
			double tmp = a[c * n + j];
			a[c * n + j] = a[p * n + j];
			a[p * n + j] = tmp;
		}
		double tmp = b[c];
		b[c] = b[p];
		b[p] = tmp;
		for (int r = c + 1; r < n; r++) {
			const double f = a[r * n + c] / a[c * n + c];
			for (int j = c; j < n; j++)
				a[r * n + j] -= f * a[c * n + j];
			b[r] -= f * b[c];
		}
	}
	for (int c = n - 1; c >= 0; c--) {
		for (int j = c + 1; j < n; j++)
			b[c] -= a[c * n + j] * b[j];
		b[c] /= a[c * n + c];
	}
}

/* rows [G, d] = argmin |X r - t_g|^2 + lambda |r|^2 via the normal equations, each group separately;
 * lambda < 0 means 1e-3 trace(X^T X) / d. */
static void brute_fit(const float *x, int64_t T, int d, const float *router, int E, const int *group, int G,
		      double lambda, double *rows)
{
	double *t = malloc(sizeof(double) * (size_t)(T * G)), *a = malloc(sizeof(double) * (size_t)(d * d));
	brute_targets(x, T, d, router, E, group, G, t);
	double trace = 0;
	for (int64_t i = 0; i < T * d; i++)
		trace += (double)x[i] * x[i];
	if (lambda < 0)
		lambda = 1e-3 * trace / d;
	for (int g = 0; g < G; g++) {
		double *b = rows + g * d;
		for (int p = 0; p < d; p++) {
			b[p] = 0;
			for (int64_t i = 0; i < T; i++)
				b[p] += (double)x[i * d + p] * t[i * G + g];
			for (int q = 0; q < d; q++) {
				double s = p == q ? lambda : 0;
				for (int64_t i = 0; i < T; i++)
					s += (double)x[i * d + p] * x[i * d + q];
				a[p * d + q] = s;
			}
		}
		gauss_solve(a, b, d);
	}
	free(t);
	free(a);
}

/* The same residual as rfit_residual, by loops. */
static void brute_residual(const float *x, int64_t T, int d, const float *router, int E, const int *group, int G,
			   const float *rows, double *residual)
{
	double *t = malloc(sizeof(double) * (size_t)(T * G));
	brute_targets(x, T, d, router, E, group, G, t);
	for (int g = 0; g < G; g++) {
		double miss = 0, norm = 0;
		for (int64_t i = 0; i < T; i++) {
			double p = 0;
			for (int j = 0; j < d; j++)
				p += (double)x[i * d + j] * rows[g * d + j];
			miss += (p - t[i * G + g]) * (p - t[i * G + g]);
			norm += t[i * G + g] * t[i * G + g];
		}
		residual[g] = sqrt(miss / norm);
	}
	free(t);
}

static void test_names(void)
{
	for (int k = 0; k < RFIT_METHOD_COUNT; k++)
		CHECK(rfit_method_parse(rfit_method_name((rfit_method)k)) == k, "method %d", k);
	EXPECT(rfit_method_parse("lse-fit") == RFIT_LSE_FIT);
	EXPECT(rfit_method_parse("lse") == -1);
	EXPECT(strcmp(rfit_method_name(RFIT_METHOD_COUNT), "?") == 0);
}

/* T spans two chunks; one expert is dropped and must take no part. */
enum { BT = RFIT_CHUNK + 188, BD = 12, BE = 7, BG = 3 };
static const int brute_group[BE] = { 0, 1, 0, 2, -1, 1, 0 };

static void test_lse_fit_matches_normal_equations(void)
{
	float *x = gaussian_matrix(BT, BD, 0.4, 21);
	float *router = gaussian_matrix(BE, BD, 0.5, 22);
	float out[BG * BD];
	double want[BG * BD], residual[BG], brute_res[BG];
	static const double lambdas[2] = { 0.5, RFIT_LAMBDA_DEFAULT };
	ms_error err = { 0 };
	for (int k = 0; k < 2; k++) {
		CHECK(rfit_rows(RFIT_LSE_FIT, x, BT, BD, router, BE, brute_group, NULL, NULL, BG, lambdas[k], out,
				residual, &err) == MS_OK, "%s", err.msg);
		brute_fit(x, BT, BD, router, BE, brute_group, BG, lambdas[k], want);
		double worst = 0, scale = 0;
		for (int i = 0; i < BG * BD; i++) {
			worst = fmax(worst, fabs(out[i] - want[i]));
			scale = fmax(scale, fabs(want[i]));
		}
		CHECK(worst <= 1e-5 * scale, "lambda %g: rows differ by %g (scale %g)", lambdas[k], worst, scale);
		brute_residual(x, BT, BD, router, BE, brute_group, BG, out, brute_res);
		for (int g = 0; g < BG; g++)
			CHECK_CLOSE(residual[g], brute_res[g], 1e-9);
	}
	free(x);
	free(router);
}

/* Groups of near-identical rows: lse-fit's residual is no worse than mean's or dominant's in any group. */
static void test_lse_fit_beats_mean_and_dominant(void)
{
	enum { T = 400, D = 16, E = 8, G = 3 };
	static const int group[E] = { 0, 0, 0, 1, 1, 2, 2, -1 };
	static const unsigned char dominant[E] = { 0, 1, 0, 1, 0, 0, 1, 0 };
	static const double frequency[E] = { 0.1, 0.3, 0.05, 0.2, 0.1, 0.05, 0.15, 0.05 };
	float *x = gaussian_matrix(T, D, 0.3, 31), *router = grouped_router(E, D, group, G, 0.05, 32);
	float rows[G * D];
	double res[RFIT_ROW_METHODS][G];
	ms_error err = { 0 };
	for (int m = 0; m < RFIT_ROW_METHODS; m++)
		CHECK(rfit_rows((rfit_method)m, x, T, D, router, E, group, dominant, frequency, G, RFIT_LAMBDA_DEFAULT,
				rows, res[m], &err) == MS_OK, "%s: %s", rfit_method_name(m), err.msg);
	for (int g = 0; g < G; g++) {
		CHECK(res[RFIT_LSE_FIT][g] <= res[RFIT_MEAN][g], "group %d: lse %g > mean %g", g,
		      res[RFIT_LSE_FIT][g], res[RFIT_MEAN][g]);
		CHECK(res[RFIT_LSE_FIT][g] <= res[RFIT_DOMINANT][g], "group %d: lse %g > dominant %g", g,
		      res[RFIT_LSE_FIT][g], res[RFIT_DOMINANT][g]);
	}
	free(x);
	free(router);
}

static void test_group_of_one_reproduces_its_row(void)
{
	enum { T = 200, D = 10, E = 4 };
	static const int group[E] = { 2, 0, 3, 1 };
	float *x = gaussian_matrix(T, D, 1.0, 41), *router = gaussian_matrix(E, D, 0.5, 42);
	float rows[E * D];
	double residual[E];
	ms_error err = { 0 };
	CHECK(rfit_rows(RFIT_LSE_FIT, x, T, D, router, E, group, NULL, NULL, E, 1e-9, rows, residual, &err) == MS_OK,
	      "%s", err.msg);
	for (int e = 0; e < E; e++) {
		for (int j = 0; j < D; j++)
			CHECK_CLOSE(rows[group[e] * D + j], router[e * D + j], 1e-5);
		CHECK(residual[group[e]] < 1e-5, "expert %d: residual %g", e, residual[group[e]]);
	}
	free(x);
	free(router);
}

static void test_mean_and_dominant_by_hand(void)
{
	enum { D = 3, E = 4, G = 2 };
	static const float router[E * D] = { 1, 2, 3, -1, 0, 4, 5, 5, 5, 2, -2, 0 };
	static const int group[E] = { 0, 1, 0, -1 };
	static const unsigned char dominant[E] = { 0, 1, 1, 0 };
	const double frequency[E] = { 0.25, 0.5, 0.75, 0.1 };
	float out[G * D];
	CHECK(rfit_rows(RFIT_MEAN, NULL, 0, D, router, E, group, NULL, frequency, G, 0, out, NULL, NULL) == MS_OK,
	      "mean");
	for (int j = 0; j < D; j++) {
		CHECK_CLOSE(out[j], (0.25 * router[j] + 0.75 * router[2 * D + j]) / (1.0 + 1e-7), 1e-6);
		CHECK(out[D + j] == router[D + j], "a group of one keeps its row exactly");
	}
	const double zero[E] = { 0, 0, 0, 0 };
	CHECK(rfit_rows(RFIT_MEAN, NULL, 0, D, router, E, group, NULL, zero, G, 0, out, NULL, NULL) == MS_OK, "mean");
	for (int j = 0; j < D; j++)
		CHECK_CLOSE(out[j], 0.5 * (router[j] + router[2 * D + j]), 1e-6);
	CHECK(rfit_rows(RFIT_DOMINANT, NULL, 0, D, router, E, group, dominant, NULL, G, 0, out, NULL, NULL) == MS_OK,
	      "dominant");
	CHECK(memcmp(out, router + 2 * D, sizeof(float) * D) == 0, "group 0 should hold expert 2's row");
	CHECK(memcmp(out + D, router + D, sizeof(float) * D) == 0, "group 1 should hold expert 1's row");
}

static void test_bad_input(void)
{
	enum { T = 6, D = 4, E = 3 };
	float x[T * D], router[E * D], out[E * D];
	for (int i = 0; i < T * D; i++)
		x[i] = (float)((i * 7) % 5) - 2.0f;
	for (int i = 0; i < E * D; i++)
		router[i] = (float)(i % 3) * 0.5f;
	const int ok_group[E] = { 0, 1, 0 }, holes[E] = { 0, 2, 0 }, outside[E] = { 0, 1, 3 };
	const unsigned char two[E] = { 1, 1, 1 };
	ms_error err = { 0 };
	CHECK(rfit_rows(RFIT_LSE_FIT, x, T, D, router, E, holes, NULL, NULL, 3, 0.1, out, NULL, &err) == MS_ERR_ARG &&
	      strstr(err.msg, "group 1") != NULL, "empty group: %s", err.msg);
	EXPECT(rfit_rows(RFIT_MEAN, NULL, 0, D, router, E, outside, NULL, NULL, 3, 0, out, NULL, NULL) == MS_ERR_ARG);
	CHECK(rfit_rows(RFIT_DOMINANT, NULL, 0, D, router, E, ok_group, two, NULL, 2, 0, out, NULL, &err) ==
	      MS_ERR_ARG && strstr(err.msg, "two dominant") != NULL, "%s", err.msg);
	EXPECT(rfit_rows(RFIT_LSE_FIT, NULL, 0, D, router, E, ok_group, NULL, NULL, 2, 0.1, out, NULL, NULL) ==
	       MS_ERR_ARG);
	EXPECT(rfit_rows(RFIT_LSE_FIT, x, T, D, router, E, ok_group, NULL, NULL, 2, -5, out, NULL, NULL) ==
	       MS_ERR_ARG);
	EXPECT(rfit_rows(RFIT_MEAN, x, T, D, router, E, ok_group, NULL, NULL, 2, 0, out, NULL, NULL) == MS_ERR_ARG);
	/* two tokens for width 4 and no ridge: singular */
	EXPECT(rfit_rows(RFIT_LSE_FIT, x, 2, D, router, E, ok_group, NULL, NULL, 2, 0, out, NULL, NULL) ==
	       MS_ERR_NUMERIC);
	x[3 * D + 1] = NAN;
	CHECK(rfit_rows(RFIT_LSE_FIT, x, T, D, router, E, ok_group, NULL, NULL, 2, 0.1, out, NULL, &err) ==
	      MS_ERR_NONFINITE && strstr(err.msg, "token 3") != NULL, "%s", err.msg);
	x[3 * D + 1] = 0;
	router[5] = INFINITY;
	EXPECT(rfit_rows(RFIT_LSE_FIT, x, T, D, router, E, ok_group, NULL, NULL, 2, 0.1, out, NULL, NULL) ==
	       MS_ERR_NONFINITE);
	router[5] = 0;
	/* all-zero calibration: nothing to fit, zero rows rather than a failure */
	memset(x, 0, sizeof x);
	CHECK(rfit_rows(RFIT_LSE_FIT, x, T, D, router, E, ok_group, NULL, NULL, 2, RFIT_LAMBDA_DEFAULT, out, NULL,
			&err) == MS_OK, "%s", err.msg);
	EXPECT(out[0] == 0 && out[2 * D - 1] == 0);
}

int main(void)
{
	RUN(test_names);
	RUN(test_lse_fit_matches_normal_equations);
	RUN(test_lse_fit_beats_mean_and_dominant);
	RUN(test_group_of_one_reproduces_its_row);
	RUN(test_mean_and_dominant_by_hand);
	RUN(test_bad_input);
	return test_summary();
}
