/* Compression: a planted low-rank matrix is found by the energy threshold; the error of a truncation is the
 * Eckart-Young value computed from LAPACKE_dgesvd's singular values (a different SVD routine from the module's
 * dgesdd); the sparse residual keeps exactly the largest entries and lowers the error as it grows; the factors
 * multiply back to the reconstruction; parameters are counted as documented. */
#include "analysis/compress.h"

#include <lapacke.h>
#include <stdlib.h>

#include "tests/test.h"

static float *random_matrix(int m, int n, unsigned long long seed)
{
	float *w = malloc(sizeof(float) * (size_t)m * n);
	for (int64_t i = 0; i < (int64_t)m * n; i++)
		w[i] = test_rand_f(&seed);
	return w;
}

/* w [m, n] = a [m, r] b [r, n] + noise x uniform(-1, 1) */
static float *planted(int m, int n, int r, double noise, unsigned long long seed)
{
	float *a = random_matrix(m, r, seed), *b = random_matrix(r, n, seed + 1);
	float *w = malloc(sizeof(float) * (size_t)m * n);
	for (int i = 0; i < m; i++)
		for (int j = 0; j < n; j++) {
			double sum = 0;
			for (int t = 0; t < r; t++)
				sum += (double)a[i * r + t] * b[t * n + j];
			w[i * n + j] = (float)(sum + noise * test_rand_f(&seed));
		}
	free(a);
	free(b);
	return w;
}

/* Singular values by LAPACKE_dgesvd (QR iteration), independent of the module's divide and conquer. */
static void reference_singular_values(const float *w, int m, int n, double *s)
{
	double *a = malloc(sizeof(double) * (size_t)m * n), *superb = malloc(sizeof(double) * (size_t)(m + n));
	for (int64_t i = 0; i < (int64_t)m * n; i++)
		a[i] = w[i];
	lapack_int info = LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'N', 'N', m, n, a, n, s, NULL, 1, NULL, 1, superb);
	CHECK(info == 0, "dgesvd info %d", (int)info);
	free(a);
	free(superb);
}

static double frobenius(const float *w, int64_t count)
{
	double s = 0;
	for (int64_t i = 0; i < count; i++)
		s += (double)w[i] * w[i];
	return sqrt(s);
}

static cmp_options rank_options(cmp_rank_mode mode)
{
	cmp_options o = cmp_options_none();
	o.mode = mode;
	return o;
}

static void test_names(void)
{
	for (int k = 0; k < CMP_RANK_MODE_COUNT; k++)
		CHECK(cmp_rank_mode_parse(cmp_rank_mode_name((cmp_rank_mode)k)) == k, "mode %d", k);
	EXPECT(cmp_rank_mode_parse("energy") == CMP_RANK_ENERGY);
	EXPECT(cmp_rank_mode_parse("svd") == -1);
	EXPECT(strcmp(cmp_rank_mode_name(CMP_RANK_MODE_COUNT), "?") == 0);
}

static void test_planted_low_rank(void)
{
	enum { M = 60, N = 40, R = 5 };
	float *w = planted(M, N, R, 1e-5, 7), *approx = malloc(sizeof(float) * M * N);
	cmp_options o = rank_options(CMP_RANK_ENERGY);
	o.energy = 0.999;
	cmp_result res;
	ms_error err = { 0 };
	CHECK(cmp_compress(w, M, N, &o, approx, &res, NULL, &err) == MS_OK, "%s", err.msg);
	CHECK(res.compressed && res.rank == R, "rank %d, want %d", res.rank, R);
	CHECK(res.rel_error < 1e-4, "error %g", res.rel_error);
	CHECK(res.energy_kept >= 0.999 && res.energy_kept <= 1, "energy %g", res.energy_kept);
	/* the figure reported is the error of what was returned */
	double diff = 0;
	for (int i = 0; i < M * N; i++)
		diff += ((double)w[i] - approx[i]) * ((double)w[i] - approx[i]);
	CHECK_CLOSE(res.rel_error, sqrt(diff) / frobenius(w, M * N), 1e-9);
	free(w);
	free(approx);
}

static void test_full_rank_is_exact(void)
{
	enum { M = 30, N = 20 };
	float *w = random_matrix(M, N, 3), *approx = malloc(sizeof(float) * M * N);
	cmp_result res;
	static const cmp_rank_mode modes[3] = { CMP_RANK_NONE, CMP_RANK_FIXED, CMP_RANK_ENERGY };
	for (int k = 0; k < 3; k++) {
		cmp_options o = rank_options(modes[k]);
		o.rank = N;  /* = min(m, n) */
		o.energy = 1.0;
		o.sparse_ratio = 0.1;  /* nothing to add when nothing is dropped */
		memset(approx, 0, sizeof(float) * M * N);
		CHECK(cmp_compress(w, M, N, &o, approx, &res, NULL, NULL) == MS_OK, "mode %d", k);
		CHECK(!res.compressed && res.rank == N, "mode %d: compressed %d rank %d", k, res.compressed, res.rank);
		CHECK(memcmp(approx, w, sizeof(float) * M * N) == 0, "mode %d: approx differs from W", k);
		CHECK(res.rel_error == 0 && res.params_after == M * N && res.params_before == M * N && res.nnz == 0,
		      "mode %d: error %g params %lld", k, res.rel_error, (long long)res.params_after);
	}
	/* a rank above min(m, n) is no compression either */
	cmp_options o = rank_options(CMP_RANK_FIXED);
	o.rank = 1000;
	CHECK(cmp_compress(w, M, N, &o, approx, &res, NULL, NULL) == MS_OK && !res.compressed, "rank 1000");
	free(w);
	free(approx);
}

/* Eckart-Young: the best rank-r error is sqrt(sum_{i >= r} s_i^2); the module must reach it. */
static void test_eckart_young(void)
{
	enum { M = 50, N = 30 };
	float *w = random_matrix(M, N, 11), *approx = malloc(sizeof(float) * M * N);
	double s[N], mine[N];
	reference_singular_values(w, M, N, s);
	CHECK(cmp_singular_values(w, M, N, mine) == MS_OK, "singular values");
	for (int i = 0; i < N; i++)
		CHECK_CLOSE(mine[i], s[i], 1e-10);
	double total = 0;
	for (int i = 0; i < N; i++)
		total += s[i] * s[i];
	const double norm = frobenius(w, M * N);
	for (int r = 1; r < N; r += 7) {
		double dropped = 0, kept = 0;
		for (int i = 0; i < N; i++)
			*(i < r ? &kept : &dropped) += s[i] * s[i];
		cmp_options o = rank_options(CMP_RANK_FIXED);
		o.rank = r;
		cmp_result res;
		CHECK(cmp_compress(w, M, N, &o, approx, &res, NULL, NULL) == MS_OK, "rank %d", r);
		CHECK(res.rank == r && res.compressed, "rank %d: got %d", r, res.rank);
		/* approx is stored in float: its rounding is ~1e-7 of |W| */
		CHECK(fabs(res.rel_error - sqrt(dropped) / norm) < 1e-6, "rank %d: error %.9f, Eckart-Young %.9f", r,
		      res.rel_error, sqrt(dropped) / norm);
		CHECK_CLOSE(res.energy_kept, kept / total, 1e-10);
		CHECK_CLOSE(res.stable_rank, total / (s[0] * s[0] + 1e-7), 1e-9);
	}
	free(w);
	free(approx);
}

static void test_energy_and_stable_rank_selection(void)
{
	/* s^2 = 16, 9, 4, 1 (total 30): energy 0.8 needs 25/30, i.e. r = 2; 0.84 needs 29/30, r = 3 */
	const double s[4] = { 4, 3, 2, 1 };
	cmp_options o = rank_options(CMP_RANK_ENERGY);
	o.energy = 0.8;
	EXPECT(cmp_select_rank(s, 4, &o) == 2);
	o.energy = 0.84;
	EXPECT(cmp_select_rank(s, 4, &o) == 3);
	o.energy = 1.0;
	EXPECT(cmp_select_rank(s, 4, &o) == 4);
	/* stable rank 30 / 16 = 1.875: k = 1 gives 2, k = 1.7 gives ceil(3.19) = 4 */
	o = rank_options(CMP_RANK_STABLE);
	o.stable_k = 1.0;
	EXPECT(cmp_select_rank(s, 4, &o) == 2);
	o.stable_k = 1.7;
	EXPECT(cmp_select_rank(s, 4, &o) == 4);
	/* a stable rank given by the caller overrides the measured one */
	o.stable_k = 1.0;
	o.stable_rank = 2.5;
	EXPECT(cmp_select_rank(s, 4, &o) == 3);
	o = rank_options(CMP_RANK_FIXED);
	o.rank = 0;
	EXPECT(cmp_select_rank(s, 4, &o) == -1);
	o = rank_options(CMP_RANK_NONE);
	EXPECT(cmp_select_rank(s, 4, &o) == 4);
}

/* The residual entries are the largest |W - low rank|, the error falls as the ratio grows, kept entries are W's. */
static void test_sparse_residual(void)
{
	enum { M = 40, N = 36, R = 4 };
	float *w = random_matrix(M, N, 5), *low = malloc(sizeof(float) * M * N);
	float *approx = malloc(sizeof(float) * M * N);
	cmp_options o = rank_options(CMP_RANK_FIXED);
	o.rank = R;
	cmp_result res;
	CHECK(cmp_compress(w, M, N, &o, low, &res, NULL, NULL) == MS_OK, "low rank only");
	double previous = res.rel_error;
	static const double ratios[4] = { 0.01, 0.05, 0.2, 0.5 };
	int32_t idx[M * N];
	float val[M * N];
	for (int t = 0; t < 4; t++) {
		o.sparse_ratio = ratios[t];
		cmp_factors f = { .sparse_idx = idx, .sparse_val = val, .max_nnz = M * N };
		CHECK(cmp_compress(w, M, N, &o, approx, &res, &f, NULL) == MS_OK, "ratio %g", ratios[t]);
		const int64_t nnz = cmp_sparse_count(M, N, ratios[t]);
		CHECK(res.nnz == nnz && nnz == llround(ratios[t] * M * N), "nnz %lld", (long long)res.nnz);
		CHECK(res.rel_error < previous, "ratio %g: error %g not below %g", ratios[t], res.rel_error, previous);
		previous = res.rel_error;
		/* kept: exact, ascending; every kept residual >= every dropped one */
		unsigned char kept[M * N] = { 0 };
		double min_kept = INFINITY, max_dropped = 0;
		for (int64_t k = 0; k < nnz; k++) {
			CHECK(k == 0 || idx[k] > idx[k - 1], "indices not ascending at %lld", (long long)k);
			kept[idx[k]] = 1;
			CHECK(approx[idx[k]] == w[idx[k]], "kept entry %d differs from W", idx[k]);
			CHECK_CLOSE(val[k], (double)w[idx[k]] - low[idx[k]], 1e-5);
		}
		int64_t exact = 0;  /* entries of approx equal to W: the kept ones (random data hit no others) */
		for (int i = 0; i < M * N; i++) {
			exact += approx[i] == w[i];
			const double r = fabs((double)w[i] - low[i]);
			if (kept[i])
				min_kept = fmin(min_kept, r);
			else
				max_dropped = fmax(max_dropped, r);
		}
		CHECK(exact == nnz, "ratio %g: %lld entries kept, want %lld", ratios[t], (long long)exact,
		      (long long)nnz);
		CHECK(min_kept >= max_dropped - 1e-6, "ratio %g: kept %g < dropped %g", ratios[t], min_kept,
		      max_dropped);
	}
	free(w);
	free(low);
	free(approx);
}

/* A zero matrix: rank 0, every residual ties at 0, so the lowest flat indices are kept. */
static void test_sparse_ties_go_to_lower_index(void)
{
	enum { M = 6, N = 5 };
	float w[M * N] = { 0 }, approx[M * N];
	int32_t idx[8];
	float val[8];
	cmp_options o = rank_options(CMP_RANK_ENERGY);
	o.energy = 0.9;
	o.sparse_ratio = 0.2;  /* 6 entries */
	cmp_factors f = { .sparse_idx = idx, .sparse_val = val, .max_nnz = 8 };
	cmp_result res;
	CHECK(cmp_compress(w, M, N, &o, approx, &res, &f, NULL) == MS_OK, "zero matrix");
	CHECK(res.rank == 0 && res.nnz == 6 && res.rel_error == 0, "rank %d nnz %lld", res.rank, (long long)res.nnz);
	for (int k = 0; k < 6; k++)
		CHECK(idx[k] == k, "idx[%d] = %d", k, idx[k]);
}

static void test_params_and_factors(void)
{
	enum { M = 60, N = 40, R = 5 };
	float *w = random_matrix(M, N, 9), *approx = malloc(sizeof(float) * M * N);
	float *u = malloc(sizeof(float) * M * R), *v = malloc(sizeof(float) * R * N);
	int32_t idx[24];
	float val[24];
	cmp_options o = rank_options(CMP_RANK_FIXED);
	o.rank = R;
	o.sparse_ratio = 0.01;  /* 24 of 2400 */
	cmp_factors f = { .u = u, .v = v, .max_rank = R, .sparse_idx = idx, .sparse_val = val, .max_nnz = 24 };
	cmp_result res;
	ms_error err = { 0 };
	CHECK(cmp_compress(w, M, N, &o, approx, &res, &f, &err) == MS_OK, "%s", err.msg);
	CHECK(res.params_before == 2400, "before %lld", (long long)res.params_before);
	CHECK(res.params_after == R * (M + N) + 2 * 24, "after %lld, want 548", (long long)res.params_after);
	/* u v plus the residual entries give approx back */
	float *back = malloc(sizeof(float) * M * N);
	for (int i = 0; i < M; i++)
		for (int j = 0; j < N; j++) {
			double sum = 0;
			for (int t = 0; t < R; t++)
				sum += (double)u[i * R + t] * v[t * N + j];
			back[i * N + j] = (float)sum;
		}
	for (int k = 0; k < 24; k++)
		back[idx[k]] += val[k];
	double worst = 0;
	for (int i = 0; i < M * N; i++)
		worst = fmax(worst, fabs((double)back[i] - approx[i]));
	CHECK(worst < 1e-5, "factors differ from approx by %g", worst);
	/* cmp_expand (what densify runs) gives the same matrix as the sum above, and refuses an index outside it */
	float *expanded = malloc(sizeof(float) * M * N);
	CHECK(cmp_expand(u, v, M, R, N, idx, val, 24, expanded, &err) == MS_OK, "%s", err.msg);
	double worst_expand = 0;
	for (int i = 0; i < M * N; i++)
		worst_expand = fmax(worst_expand, fabs((double)expanded[i] - back[i]));
	CHECK(worst_expand < 1e-5, "cmp_expand differs from the double sum by %g", worst_expand);
	int32_t bad_idx[1] = {M * N};
	EXPECT(cmp_expand(u, v, M, R, N, bad_idx, val, 1, expanded, &err) == MS_ERR_ARG && strstr(err.msg, "index 2400"));
	free(expanded);
	/* room too small: refused before anything is written */
	f.max_rank = R - 1;
	EXPECT(cmp_compress(w, M, N, &o, approx, &res, &f, &err) == MS_ERR_ARG);
	f.max_rank = R;
	f.max_nnz = 23;
	EXPECT(cmp_compress(w, M, N, &o, approx, &res, &f, &err) == MS_ERR_ARG);
	free(back);
	free(w);
	free(approx);
	free(u);
	free(v);
}

static void test_bad_input(void)
{
	float w[12] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 }, approx[12];
	ms_error err = { 0 };
	cmp_options o = rank_options(CMP_RANK_FIXED);
	o.rank = 1;
	w[7] = NAN;
	CHECK(cmp_compress(w, 3, 4, &o, approx, NULL, NULL, &err) == MS_ERR_NONFINITE, "NaN");
	CHECK(strstr(err.msg, "(1, 3)") != NULL, "message '%s' should name the entry", err.msg);
	w[7] = 8;
	o.rank = 0;
	EXPECT(cmp_compress(w, 3, 4, &o, approx, NULL, NULL, NULL) == MS_ERR_ARG);
	o = rank_options(CMP_RANK_ENERGY);
	o.energy = 0;
	EXPECT(cmp_compress(w, 3, 4, &o, approx, NULL, NULL, NULL) == MS_ERR_ARG);
	o.energy = 1.5;
	EXPECT(cmp_compress(w, 3, 4, &o, approx, NULL, NULL, NULL) == MS_ERR_ARG);
	o = rank_options(CMP_RANK_STABLE);
	o.stable_k = -1;
	EXPECT(cmp_compress(w, 3, 4, &o, approx, NULL, NULL, NULL) == MS_ERR_ARG);
	o.stable_k = 1;
	o.sparse_ratio = 2;
	EXPECT(cmp_compress(w, 3, 4, &o, approx, NULL, NULL, NULL) == MS_ERR_ARG);
	o.sparse_ratio = NAN;
	EXPECT(cmp_compress(w, 3, 4, &o, approx, NULL, NULL, NULL) == MS_ERR_ARG);
	o.sparse_ratio = 0;
	EXPECT(cmp_compress(w, 0, 4, &o, approx, NULL, NULL, NULL) == MS_ERR_ARG);
	EXPECT(cmp_compress(w, 3, 4, NULL, approx, NULL, NULL, NULL) == MS_ERR_ARG);
	EXPECT(cmp_compress(w, 3, 4, &o, approx, NULL, NULL, NULL) == MS_OK);
}

int main(void)
{
	RUN(test_names);
	RUN(test_planted_low_rank);
	RUN(test_full_rank_is_exact);
	RUN(test_eckart_young);
	RUN(test_energy_and_stable_rank_selection);
	RUN(test_sparse_residual);
	RUN(test_sparse_ties_go_to_lower_index);
	RUN(test_params_and_factors);
	RUN(test_bad_input);
	return test_summary();
}
