#include "analysis/stable_rank.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>
#include <lapacke.h>

double srank_frobenius2(const float *w, int m, int n)
{
	if (!w || m <= 0 || n <= 0)
		return 0.0;
	const size_t count = (size_t)m * (size_t)n;
	double acc = 0.0;
	for (size_t k = 0; k < count; k++)
		acc += (double)w[k] * w[k];
	return acc;
}

/* Golub-Kahan-Lanczos state. After step j, W V = U B with V = v_0..v_j [n], U = u_0..u_j [m] orthonormal and B
 * upper bidiagonal: diagonal alpha_0..alpha_j, superdiagonal beta_1..beta_j. The singular values of B (Ritz
 * values) interlace towards those of W, the largest from below. */
typedef struct {
	const float *w;   /* [m, n] */
	int m, n;
	int cap;          /* steps the arrays hold now */
	int kmax;         /* min(m, n): the most steps that can be taken */
	float *U;         /* [cap, m] left Lanczos vectors */
	float *V;         /* [cap + 1, n] right Lanczos vectors */
	float *coef;      /* [cap + 1] projections during reorthogonalisation */
	double *alpha;    /* [cap] diagonal of B */
	double *beta;     /* [cap + 1] beta[j] couples v_j to u_{j-1}; beta[0] unused */
	double *d, *e;    /* [cap] copies of B for dbdsqr, which overwrites them */
	double *row;      /* [cap] e_last^T, turned by dbdsqr into the last row of B's left singular vectors */
} gkl;

static void gkl_free(gkl *g)
{
	free(g->U);
	free(g->V);
	free(g->coef);
	free(g->alpha);
	free(g->beta);
	free(g->d);
	free(g->e);
	free(g->row);
}

/* Grows every array to hold `cap` steps, keeping what they hold. */
static ms_status gkl_reserve(gkl *g, int cap)
{
	void *p;
#define GROW(field, count) \
	do { \
		p = realloc(g->field, (size_t)(count) * sizeof *g->field); \
		if (!p) \
			return MS_ERR_NOMEM; \
		g->field = p; \
	} while (0)
	GROW(U, (size_t)cap * (size_t)g->m);
	GROW(V, ((size_t)cap + 1) * (size_t)g->n);
	GROW(coef, (size_t)cap + 1);
	GROW(alpha, cap);
	GROW(beta, (size_t)cap + 1);
	GROW(d, cap);
	GROW(e, cap);
	GROW(row, cap);
#undef GROW
	g->cap = cap;
	return MS_OK;
}

/* Removes from x [len] its components along the k orthonormal rows of basis [k, len]. Classical Gram-Schmidt
 * done twice ("twice is enough", Giraud et al. 2005) keeps float bases orthogonal to working precision. */
static void reorthogonalise(const float *basis, int k, int len, float *x, float *coef)
{
	if (k == 0)
		return;
	for (int pass = 0; pass < 2; pass++) {
		cblas_sgemv(CblasRowMajor, CblasNoTrans, k, len, 1.0f, basis, len, x, 1, 0.0f, coef, 1);
		cblas_sgemv(CblasRowMajor, CblasTrans, k, len, -1.0f, basis, len, coef, 1, 1.0f, x, 1);
	}
}

static double norm2(const float *x, int len)
{
	double acc = 0.0;
	for (int k = 0; k < len; k++)
		acc += (double)x[k] * x[k];
	return sqrt(acc);
}

static void scale(float *x, int len, double by)
{
	for (int k = 0; k < len; k++)
		x[k] = (float)(x[k] * by);
}

/* The first right vector: W^T r for a fixed pseudo-random r (xorshift64*), normalised. Being in W's row space, it
 * cannot lie in its null space, so the first step never breaks down; being pseudo-random, it is not orthogonal
 * to the top singular vector, as a constant vector would be for a matrix whose columns sum to zero. Should W^T r
 * vanish anyway, the largest row of W (nonzero: the caller checked |W| > 0) serves. */
static void start_vector(const gkl *g, float *v, float *r)
{
	unsigned long long s = 0x9E3779B97F4A7C15ULL;
	for (int k = 0; k < g->m; k++) {
		s ^= s >> 12;
		s ^= s << 25;
		s ^= s >> 27;
		r[k] = (float)((double)((s * 2685821657736338717ULL) >> 11) / 9007199254740992.0 - 0.5);
	}
	cblas_sgemv(CblasRowMajor, CblasTrans, g->m, g->n, 1.0f, g->w, g->n, r, 1, 0.0f, v, 1);
	double len = norm2(v, g->n);
	if (!(len > 0.0) || !isfinite(len)) {
		int best = 0;
		double best_len = -1.0;
		for (int i = 0; i < g->m; i++) {
			const double l = norm2(g->w + (size_t)i * g->n, g->n);
			if (l > best_len)
				best = i, best_len = l;
		}
		memcpy(v, g->w + (size_t)best * g->n, (size_t)g->n * sizeof *v);
		len = best_len;
	}
	scale(v, g->n, 1.0 / len);
}

/* The largest singular value s1 of the (steps x steps) upper bidiagonal B, the next one s2, and the last
 * component of s1's left singular vector (dbdsqr applies its rotations to the row e_last^T). */
static ms_status ritz_top(gkl *g, int steps, double *s1, double *s2, double *last)
{
	memcpy(g->d, g->alpha, (size_t)steps * sizeof *g->d);
	for (int k = 0; k + 1 < steps; k++)
		g->e[k] = g->beta[k + 1];
	memset(g->row, 0, (size_t)steps * sizeof *g->row);
	g->row[steps - 1] = 1.0;
	lapack_int info =
		LAPACKE_dbdsqr(LAPACK_COL_MAJOR, 'U', steps, 0, 1, 0, g->d, g->e, NULL, 1, g->row, 1, NULL, 1);
	if (info != 0)
		return MS_ERR_NUMERIC;
	*s1 = g->d[0];
	*s2 = steps > 1 ? g->d[1] : 0.0;
	*last = fabs(g->row[0]);
	return MS_OK;
}

/* One half-step: x = W v - coupling u_prev (or W^T u - coupling v_prev), made orthogonal to the k basis vectors
 * so far; returns its length and normalises it (unless it is 0: the Krylov space is then invariant). */
static double lanczos_vector(gkl *g, int trans, const float *from, const float *prev, double coupling,
			     const float *basis, int k, float *x)
{
	const int len = trans ? g->n : g->m;
	cblas_sgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, g->m, g->n, 1.0f, g->w, g->n, from, 1, 0.0f,
		    x, 1);
	if (prev)
		cblas_saxpy(len, (float)-coupling, prev, 1, x, 1);
	reorthogonalise(basis, k, len, x, g->coef);
	const double r = norm2(x, len);
	if (r > 0.0 && isfinite(r))
		scale(x, len, 1.0 / r);
	return r;
}

/* Has the top Ritz value s1 (s2 the next, prev the last step's) settled? The header's test, that it changed by
 * less than rel_tol / 10, can be fooled by a plateau when the top of the spectrum is crowded (a Gaussian 1024 x
 * 2048 matrix stalls near 1e-4 error for a dozen steps). So the error is also estimated from the residual: W v =
 * s1 u holds exactly and W^T u = s1 v + r v_next, r = beta_next |last|, so some singular value lies within
 * r / sqrt 2 of s1, and within r^2 / (2 gap) when the nearest other one is gap away (Parlett, The Symmetric
 * Eigenvalue Problem, 11.7; gap estimated by s1 - s2). Both must fall below the tolerance. */
static int settled(double s1, double s2, double prev, double r, double rel_tol)
{
	const double gap = s1 - s2 > 0.0 ? s1 - s2 : 0.0;
	double est = r / sqrt(2.0);
	if (gap > 0.0 && r * r / (2.0 * gap) < est)
		est = r * r / (2.0 * gap);
	return fabs(s1 - prev) < 0.1 * rel_tol * s1 && est <= rel_tol * s1;
}

/* Runs bidiagonalisation steps until the largest Ritz value settles. */
static ms_status gkl_run(gkl *g, double rel_tol, double *sigma, int *iterations)
{
	double prev = 0.0;
	start_vector(g, g->V, g->U); /* U's first row is scratch until step 0 overwrites it */
	for (int j = 0; j < g->kmax; j++) {
		if (j == g->cap) {
			ms_status st = gkl_reserve(g, g->cap * 2 < g->kmax ? g->cap * 2 : g->kmax);
			if (st != MS_OK)
				return st;
		}
		float *u = g->U + (size_t)j * g->m, *v = g->V + (size_t)j * g->n;
		g->alpha[j] = lanczos_vector(g, 0, v, j ? u - g->m : NULL, g->beta[j], g->U, j, u);
		/* A length far below the tolerance means the Krylov space is (numerically) invariant: B's singular
		 * values are then W's own, up to that length, and the residual is that small too. */
		const double tiny = 1e-3 * rel_tol * (j ? prev : g->alpha[0]);
		const int broke_u = g->alpha[j] <= tiny;
		g->beta[j + 1] = broke_u ? 0.0 : lanczos_vector(g, 1, u, v, g->alpha[j], g->V, j + 1, v + g->n);
		if (!isfinite(g->alpha[j]) || !isfinite(g->beta[j + 1]))
			return MS_ERR_NONFINITE;
		if (broke_u)
			g->alpha[j] = 0.0;
		double s1, s2, last;
		ms_status st = ritz_top(g, j + 1, &s1, &s2, &last);
		if (st != MS_OK)
			return st;
		*iterations = j + 1;
		*sigma = s1;
		if (broke_u || g->beta[j + 1] <= 1e-3 * rel_tol * s1 ||
		    (j > 0 && settled(s1, s2, prev, g->beta[j + 1] * last, rel_tol)))
			return MS_OK;
		prev = s1;
	}
	return MS_OK;
}

ms_status srank_sigma_max(const float *w, int m, int n, double rel_tol, double *sigma, int *iterations)
{
	int steps_local;
	if (!iterations)
		iterations = &steps_local;
	if (!w || !sigma || m <= 0 || n <= 0 || !(rel_tol > 0.0))
		return MS_ERR_ARG;
	*sigma = 0.0;
	*iterations = 0;
	const double fro2 = srank_frobenius2(w, m, n);
	if (!isfinite(fro2))
		return MS_ERR_NONFINITE;
	if (fro2 == 0.0)
		return MS_OK;
	gkl g = { .w = w, .m = m, .n = n, .kmax = m < n ? m : n };
	/* U needs at least m floats for the start vector's scratch: a cap of 1 or more gives that. */
	ms_status st = gkl_reserve(&g, g.kmax < 32 ? g.kmax : 32);
	if (st == MS_OK)
		st = gkl_run(&g, rel_tol, sigma, iterations);
	gkl_free(&g);
	return st;
}

ms_status srank_stable_rank(const float *w, int m, int n, double rel_tol, double *sr)
{
	if (!sr)
		return MS_ERR_ARG;
	double sigma;
	ms_status st = srank_sigma_max(w, m, n, rel_tol, &sigma, NULL);
	if (st != MS_OK)
		return st;
	*sr = srank_frobenius2(w, m, n) / (sigma * sigma + SRANK_FLOOR);
	return MS_OK;
}
