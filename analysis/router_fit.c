#include "analysis/router_fit.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/merge.h"

const char *const rfit_method_names[RFIT_METHOD_COUNT] = { RFIT_METHOD_TABLE(NAMES_X_NAME) };
const char *const rfit_method_help[RFIT_METHOD_COUNT] = { RFIT_METHOD_TABLE(NAMES_X_HELP) };

const char *rfit_method_name(rfit_method m)
{
	return names_at(rfit_method_names, RFIT_METHOD_COUNT, (int)m);
}

int rfit_method_parse(const char *name)
{
	return names_index(rfit_method_names, RFIT_METHOD_COUNT, name);
}

/* ---- checks ---- */

static ms_status check_groups(int E, int G, const int *group, ms_error *err)
{
	int *members = calloc((size_t)G, sizeof *members);
	if (!members)
		return MS_ERR_NOMEM;
	ms_status st = MS_OK;
	for (int e = 0; e < E && st == MS_OK; e++) {
		if (group[e] < -1 || group[e] >= G)
			st = ms_fail(err, MS_ERR_ARG, "router fit: expert %d: group %d outside -1..%d", e, group[e],
				     G - 1);
		else if (group[e] >= 0)
			members[group[e]]++;
	}
	for (int g = 0; g < G && st == MS_OK; g++)
		if (members[g] == 0)
			st = ms_fail(err, MS_ERR_ARG, "router fit: group %d has no member", g);
	free(members);
	return st;
}

static ms_status check_finite_rows(const float *a, int64_t rows, int d, const char *what, ms_error *err)
{
	for (int64_t i = 0; i < rows; i++)
		for (int j = 0; j < d; j++)
			if (!isfinite(a[i * d + j]))
				return ms_fail(err, MS_ERR_NONFINITE, "router fit: %s row %lld is not finite", what,
					       (long long)i);
	return MS_OK;
}

/* ---- per-chunk work: the calibration tokens in double and the targets t_g ---- */

typedef struct {
	int d, E, G;
	const int *group;  /* [E] */
	double *x;         /* [RFIT_CHUNK, d] */
	double *z;         /* [RFIT_CHUNK, E]: router logits */
	double *t;         /* [RFIT_CHUNK, G]: targets logsumexp over each group's members */
	double *router;    /* [E, d] */
	double *peak;      /* [G]: a group's largest logit, for a logsumexp that cannot overflow */
	double *sum;       /* [G] */
} chunk_work;

static void chunk_free(chunk_work *w)
{
	free(w->x);
	free(w->z);
	free(w->t);
	free(w->router);
	free(w->peak);
	free(w->sum);
}

static ms_status chunk_alloc(chunk_work *w, const float *router, int d, int E, const int *group, int G)
{
	*w = (chunk_work){ .d = d, .E = E, .G = G, .group = group };
	w->x = malloc(sizeof(double) * RFIT_CHUNK * (size_t)d);
	w->z = malloc(sizeof(double) * RFIT_CHUNK * (size_t)E);
	w->t = malloc(sizeof(double) * RFIT_CHUNK * (size_t)G);
	w->router = malloc(sizeof(double) * (size_t)E * (size_t)d);
	w->peak = malloc(sizeof(double) * (size_t)G);
	w->sum = malloc(sizeof(double) * (size_t)G);
	if (!w->x || !w->z || !w->t || !w->router || !w->peak || !w->sum) {
		chunk_free(w);
		return MS_ERR_NOMEM;
	}
	for (int64_t i = 0; i < (int64_t)E * d; i++)
		w->router[i] = router[i];
	return MS_OK;
}

/* Tokens [t0, t0 + n) of x into w->x; the index of the first token that is not finite, or -1. */
static int64_t load_chunk(chunk_work *w, const float *x, int64_t t0, int n)
{
	const float *src = x + t0 * w->d;
	for (int64_t i = 0; i < (int64_t)n * w->d; i++) {
		if (!isfinite(src[i]))
			return t0 + i / w->d;
		w->x[i] = src[i];
	}
	return -1;
}

/* w->t [n, G] = for each token and group, logsumexp of the members' logits (dropped experts take no part). */
static void chunk_targets(chunk_work *w, int n)
{
	const int E = w->E, G = w->G;
	cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, E, w->d, 1.0, w->x, w->d, w->router, w->d, 0.0, w->z,
		    E);
	for (int i = 0; i < n; i++) {
		const double *z = w->z + (int64_t)i * E;
		for (int g = 0; g < G; g++) {
			w->peak[g] = -INFINITY;
			w->sum[g] = 0;
		}
		for (int e = 0; e < E; e++)
			if (w->group[e] >= 0 && z[e] > w->peak[w->group[e]])
				w->peak[w->group[e]] = z[e];
		for (int e = 0; e < E; e++)
			if (w->group[e] >= 0)
				w->sum[w->group[e]] += exp(z[e] - w->peak[w->group[e]]);
		for (int g = 0; g < G; g++)
			w->t[(int64_t)i * G + g] = w->peak[g] + log(w->sum[g]);
	}
}

static ms_status nonfinite_token(int64_t token, ms_error *err)
{
	return ms_fail(err, MS_ERR_NONFINITE, "router fit: calibration token %lld is not finite", (long long)token);
}

/* ---- lse-fit ---- */

/* normal [d, d] (upper triangle, row-major) += X^T X and rhs [G, d] += T^T X over all tokens. */
static ms_status accumulate_normal(chunk_work *w, const float *x, int64_t T, double *normal, double *rhs,
				   ms_error *err)
{
	const int d = w->d;
	for (int64_t t0 = 0; t0 < T; t0 += RFIT_CHUNK) {
		const int n = (int)(T - t0 < RFIT_CHUNK ? T - t0 : RFIT_CHUNK);
		const int64_t bad = load_chunk(w, x, t0, n);
		if (bad >= 0)
			return nonfinite_token(bad, err);
		chunk_targets(w, n);
		cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, d, n, 1.0, w->x, d, 1.0, normal, d);
		cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, w->G, d, n, 1.0, w->t, w->G, w->x, d, 1.0, rhs, d);
	}
	return MS_OK;
}

/* Solves (normal + lambda I) R^T = rhs^T for all G rows at once. The row-major upper triangle is LAPACK's
 * column-major lower triangle, and rhs [G, d] row-major is the column-major [d, G] right-hand side, so dposv
 * works in place without transposed copies. */
static ms_status solve_ridge(double *normal, double *rhs, int d, int G, double lambda, ms_error *err)
{
	double trace = 0;
	for (int i = 0; i < d; i++)
		trace += normal[(int64_t)i * d + i];
	if (lambda == RFIT_LAMBDA_DEFAULT)
		lambda = trace > 0 ? 1e-3 * trace / d : 1.0;
	for (int i = 0; i < d; i++)
		normal[(int64_t)i * d + i] += lambda;
	lapack_int info = LAPACKE_dposv(LAPACK_COL_MAJOR, 'L', d, G, normal, d, rhs, d);
	if (info > 0)
		return ms_fail(err, MS_ERR_NUMERIC,
			       "router fit: X^T X + %g I is not positive definite (too few calibration tokens for "
			       "width %d; use a positive lambda)", lambda, d);
	return info < 0 ? ms_fail(err, MS_ERR_ARG, "router fit: dposv argument %d", (int)-info) : MS_OK;
}

static ms_status lse_fit(const float *x, int64_t T, int d, const float *router, int E, const int *group, int G,
			 double lambda, float *out, ms_error *err)
{
	if (T < 1 || !x)
		return ms_fail(err, MS_ERR_ARG, "router fit: lse-fit needs calibration tokens");
	chunk_work w;
	if (chunk_alloc(&w, router, d, E, group, G) != MS_OK)
		return ms_fail(err, MS_ERR_NOMEM, NULL);
	double *normal = calloc((size_t)d * (size_t)d, sizeof(double));
	double *rhs = calloc((size_t)G * (size_t)d, sizeof(double));
	ms_status st = normal && rhs ? MS_OK : ms_fail(err, MS_ERR_NOMEM, NULL);
	if (st == MS_OK)
		st = accumulate_normal(&w, x, T, normal, rhs, err);
	if (st == MS_OK)
		st = solve_ridge(normal, rhs, d, G, lambda, err);
	if (st == MS_OK)
		for (int64_t i = 0; i < (int64_t)G * d; i++)
			out[i] = (float)rhs[i];
	free(normal);
	free(rhs);
	chunk_free(&w);
	return st;
}

/* ---- mean and dominant ---- */

static ms_status mean_rows(const float *router, int E, int d, const int *group, const double *frequency, int G,
			   float *out, ms_error *err)
{
	const float **rows = malloc(sizeof *rows * (size_t)E);
	double *f = malloc(sizeof *f * (size_t)E);
	ms_status st = rows && f ? MS_OK : ms_fail(err, MS_ERR_NOMEM, NULL);
	for (int g = 0; g < G && st == MS_OK; g++) {
		int n = 0;
		for (int e = 0; e < E; e++)
			if (group[e] == g) {
				rows[n] = router + (int64_t)e * d;
				f[n++] = frequency[e];
			}
		st = merge_matrices(n, rows, f, 0, MERGE_FREQUENCY, d, out + (int64_t)g * d);
		if (st != MS_OK)
			st = ms_fail(err, st, "router fit: group %d: frequencies must be finite and non-negative", g);
	}
	free(rows);
	free(f);
	return st;
}

static ms_status dominant_rows(const float *router, int E, int d, const int *group, const unsigned char *dominant,
			       int G, float *out, ms_error *err)
{
	int *which = malloc(sizeof *which * (size_t)G);
	if (!which)
		return ms_fail(err, MS_ERR_NOMEM, NULL);
	for (int g = 0; g < G; g++)
		which[g] = -1;
	ms_status st = MS_OK;
	for (int e = 0; e < E && st == MS_OK; e++) {
		if (group[e] < 0 || !dominant[e])
			continue;
		if (which[group[e]] >= 0)
			st = ms_fail(err, MS_ERR_ARG, "router fit: group %d has two dominant experts (%d and %d)",
				     group[e], which[group[e]], e);
		which[group[e]] = e;
	}
	for (int g = 0; g < G && st == MS_OK; g++) {
		if (which[g] < 0)
			st = ms_fail(err, MS_ERR_ARG, "router fit: group %d has no dominant expert", g);
		else
			memcpy(out + (int64_t)g * d, router + (int64_t)which[g] * d, sizeof *out * (size_t)d);
	}
	free(which);
	return st;
}

/* ---- public ---- */

static ms_status check_common(const float *x, int64_t T, int d, const float *router, int E, const int *group,
			      int G, ms_error *err)
{
	if (d < 1 || E < 1 || G < 1 || T < 0 || !router || !group || (T > 0 && !x))
		return ms_fail(err, MS_ERR_ARG, "router fit: bad sizes (T %lld, d %d, E %d, G %d) or missing array",
			       (long long)T, d, E, G);
	ms_status st = check_groups(E, G, group, err);
	if (st == MS_OK)
		st = check_finite_rows(router, E, d, "router", err);
	return st;
}

ms_status rfit_rows(rfit_method method, const float *x, int64_t T, int d, const float *router, int E,
		    const int *group, const unsigned char *dominant, const double *frequency, int G, double lambda,
		    float *out, double *residual, ms_error *err)
{
	ms_status st = check_common(x, T, d, router, E, group, G, err);
	if (st != MS_OK)
		return st;
	if (!out || (int)method < 0 || method >= RFIT_ROW_METHODS)
		return ms_fail(err, MS_ERR_ARG, "router fit: unknown method or missing output");
	if (method == RFIT_LSE_FIT && !(lambda >= 0 || lambda == RFIT_LAMBDA_DEFAULT))
		return ms_fail(err, MS_ERR_ARG, "router fit: lambda %g is neither >= 0 nor the default", lambda);
	if ((method == RFIT_MEAN && !frequency) || (method == RFIT_DOMINANT && !dominant))
		return ms_fail(err, MS_ERR_ARG, "router fit: %s needs %s", rfit_method_name(method),
			       method == RFIT_MEAN ? "frequencies" : "the dominant experts");
	if (residual && T < 1)
		return ms_fail(err, MS_ERR_ARG, "router fit: the residual needs calibration tokens");
	if (method == RFIT_LSE_FIT)
		st = lse_fit(x, T, d, router, E, group, G, lambda, out, err);
	else if (method == RFIT_MEAN)
		st = mean_rows(router, E, d, group, frequency, G, out, err);
	else
		st = dominant_rows(router, E, d, group, dominant, G, out, err);
	if (st == MS_OK && residual)
		st = rfit_residual(x, T, d, router, E, group, G, out, residual, err);
	return st;
}

/* Adds |X r_g - t_g|^2 into miss [G] and |t_g|^2 into norm [G] over all tokens; rows [G, d] in double. */
static ms_status residual_sums(chunk_work *w, const float *x, int64_t T, const double *rows, double *fit,
			       double *miss, double *norm, ms_error *err)
{
	const int d = w->d, G = w->G;
	for (int64_t t0 = 0; t0 < T; t0 += RFIT_CHUNK) {
		const int n = (int)(T - t0 < RFIT_CHUNK ? T - t0 : RFIT_CHUNK);
		const int64_t bad = load_chunk(w, x, t0, n);
		if (bad >= 0)
			return nonfinite_token(bad, err);
		chunk_targets(w, n);
		cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, G, d, 1.0, w->x, d, rows, d, 0.0, fit, G);
		for (int64_t i = 0; i < (int64_t)n * G; i++) {
			const double diff = fit[i] - w->t[i];
			miss[i % G] += diff * diff;
			norm[i % G] += w->t[i] * w->t[i];
		}
	}
	return MS_OK;
}

ms_status rfit_residual(const float *x, int64_t T, int d, const float *router, int E, const int *group, int G,
			const float *rows, double *residual, ms_error *err)
{
	ms_status st = check_common(x, T, d, router, E, group, G, err);
	if (st != MS_OK)
		return st;
	if (T < 1 || !rows || !residual)
		return ms_fail(err, MS_ERR_ARG, "router fit: the residual needs calibration tokens, rows and output");
	if ((st = check_finite_rows(rows, G, d, "fitted", err)) != MS_OK)
		return st;
	chunk_work w;
	if (chunk_alloc(&w, router, d, E, group, G) != MS_OK)
		return ms_fail(err, MS_ERR_NOMEM, NULL);
	double *rows_d = malloc(sizeof(double) * (size_t)G * (size_t)d);
	double *fit = malloc(sizeof(double) * RFIT_CHUNK * (size_t)G);
	double *sums = calloc(2 * (size_t)G, sizeof(double));  /* miss [G], then norm [G] */
	st = rows_d && fit && sums ? MS_OK : ms_fail(err, MS_ERR_NOMEM, NULL);
	if (st == MS_OK) {
		for (int64_t i = 0; i < (int64_t)G * d; i++)
			rows_d[i] = rows[i];
		st = residual_sums(&w, x, T, rows_d, fit, sums, sums + G, err);
	}
	for (int g = 0; g < G && st == MS_OK; g++)
		residual[g] = sums[G + g] > 0 ? sqrt(sums[g] / sums[G + g]) : sqrt(sums[g]);
	free(rows_d);
	free(fit);
	free(sums);
	chunk_free(&w);
	return st;
}
