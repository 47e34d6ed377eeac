#include "analysis/stable_rank.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>
#include <lapacke.h>

/* Lanes of srank_frobenius2's accumulators: independent sums let -O2 vectorise the loop and keep it off the
 * latency of one long chain of additions. The order of summation is fixed, so the result is the same on every
 * run and for any thread count. */
#define FRO_LANES 8

double srank_frobenius2(const float *w, int m, int n)
{
	if (!w || m <= 0 || n <= 0)
		return 0.0;
	const size_t count = (size_t)m * (size_t)n;
	double acc[FRO_LANES] = {0};
	size_t k = 0;
	for (; k + FRO_LANES <= count; k += FRO_LANES)
		for (int l = 0; l < FRO_LANES; l++)
			acc[l] += (double)w[k + l] * w[k + l];
	for (int l = 0; k < count; k++, l++)
		acc[l] += (double)w[k] * w[k];
	double sum = 0.0;
	for (int l = 0; l < FRO_LANES; l++)
		sum += acc[l];
	return sum;
}

/* ---- choosing the method ----
 *
 * sigma_max^2 is the largest eigenvalue of the Gram matrix W^T W. Two ways to get it, for W [m, n], k = min(m, n),
 * l = max(m, n), counting multiply-adds:
 *   Gram: form the k x k Gram matrix in double (k^2 l / 2) and take its largest eigenvalue directly
 *         (DSYEVR, about 4/3 k^3 to reduce it to tridiagonal form). Exact to rounding, no iteration.
 *   Lanczos on W^T W: each step applies W^T W to a vector in one pass over W (2 m n = 2 k l), plus
 *         reorthogonalisation against the steps so far. Pure noise, whose top singular values crowd together,
 *         needs about 40-50 steps for 1e-4; matrices with a dominant direction need far fewer.
 * Lanczos never needs more than k steps, and 50 steps cost 100 k l against Gram's k l (k / 2 + 4/3 k^2 / l)
 * (done in double, at about half the float rate). So Gram wins only for small matrices, k up to about 64, where
 * Lanczos would run nearly to k steps anyway; from there up Lanczos wins by a growing factor (k / 100 at worst,
 * and a Gram matrix of real expert shapes costs 10-100 times a whole Lanczos run). Even for small k the automatic
 * choice is Lanczos for now (SRANK_GRAM_MAX 0): LAPACKE_dsyevr's result changes in the last bits with the number
 * of OpenBLAS threads (seen on the golden model's 32 x 48 experts), which would make results depend on the
 * thread count; with BLAS pinned to one thread SRANK_GRAM_MAX can be 64. Both cost little there either way. */
#define SRANK_GRAM_MAX 0

/* ---- Gram matrix and a direct eigenvalue solver (small matrices) ---- */

static ms_status gram_sigma_max(const float *w, int m, int n, double *sigma)
{
	const int k = m < n ? m : n, l = m < n ? n : m;
	double *a = malloc((size_t)m * n * sizeof *a), *g = malloc((size_t)k * k * sizeof *g);
	double *eig = malloc((size_t)k * sizeof *eig);
	lapack_int *support = malloc(2 * (size_t)k * sizeof *support);
	ms_status st = MS_ERR_NOMEM;
	if (a && g && eig && support) {
		for (size_t i = 0; i < (size_t)m * n; i++)
			a[i] = w[i];
		/* G = W W^T when m <= n, else W^T W; upper triangle, k x k, summed in a fixed order by plain loops (at
		 * k <= SRANK_GRAM_MAX this is cheap, and a threaded DSYRK could split the sums differently with the
		 * thread count). Double cannot overflow here: a float squared and summed l times stays below 1e308. */
		const int wide = m <= n;
		for (int i = 0; i < k; i++)
			for (int j = i; j < k; j++) {
				double acc = 0.0;
				for (int r = 0; r < l; r++)
					acc += wide ? a[(size_t)i * n + r] * a[(size_t)j * n + r]
						    : a[(size_t)r * n + i] * a[(size_t)r * n + j];
				g[(size_t)i * k + j] = acc;
			}
		lapack_int found = 0;
		lapack_int info = LAPACKE_dsyevr(LAPACK_ROW_MAJOR, 'N', 'I', 'U', k, g, k, 0.0, 0.0, k, k, 0.0, &found,
						 eig, NULL, 1, support);
		if (info != 0 || found != 1)
			st = MS_ERR_NUMERIC;
		else if (!isfinite(eig[0]))
			st = MS_ERR_NONFINITE;
		else {
			*sigma = eig[0] > 0.0 ? sqrt(eig[0]) : 0.0;
			st = MS_OK;
		}
	}
	free(a);
	free(g);
	free(eig);
	free(support);
	return st;
}

/* ---- Lanczos on W^T W ----
 *
 * Lanczos tridiagonalisation (Golub & Van Loan, Matrix Computations, 10.1) of A = c^2 W^T W, the operator that
 * Golub-Kahan-Lanczos bidiagonalisation of W implicitly works on (same Krylov space from the same start), with
 * full reorthogonalisation. After step j, A V = V T + beta v_next e_j^T with V = v_0..v_j [n] orthonormal and T
 * symmetric tridiagonal (diagonal alpha, off-diagonal beta); the eigenvalues of T (Ritz values) approach those
 * of A, the largest from below. Working on A rather than on W costs one pass over W per step instead of GKL's
 * two: A v is computed a tile of rows at a time, and the tile's second use finds it in cache. c is a power of two
 * near 1 / |W|_F, so A's eigenvalues lie in (0, 1] and nothing overflows or underflows in float whatever W's
 * magnitude. */

/* Rows of W per tile of the product: 32 rows of 4096 floats are 512 KiB, well inside a core's L2 cache. */
#define LZ_TILE 32

typedef struct {
	const float *w;   /* [m, n] */
	int m, n;
	float c;          /* power-of-two scale: A = c^2 W^T W */
	int cap;          /* steps the arrays hold now */
	int kmax;         /* min(m, n): A's rank at most, the most steps that can be useful */
	float *V;         /* [cap + 1, n] Lanczos vectors */
	float *x;         /* [n] scaled copy of the vector being multiplied */
	float *t;         /* [max(m, LZ_TILE)] W v for one tile; also the start vector's random weights */
	float *coef;      /* [cap + 1] projections during reorthogonalisation */
	double *alpha;    /* [cap] diagonal of T */
	double *beta;     /* [cap + 1] beta[j] couples v_j and v_{j-1}; beta[0] unused */
	double *d, *e;    /* [cap] copies of T for dstevr, which overwrites them */
	double *z;        /* [2 cap] eigenvectors of T from dstevr */
	lapack_int *support; /* [4 cap] */
	double *ritz;     /* [cap] eigenvalues from dstebz */
	double *work;     /* [20 cap] workspace of dstevr (dstebz needs 4 cap) */
	lapack_int *iwork; /* [10 cap] (dstebz: 3 cap) */
	lapack_int *block; /* [2 cap] dstebz's iblock and isplit */
} lanczos;

static void lz_free(lanczos *g)
{
	free(g->V);
	free(g->x);
	free(g->t);
	free(g->coef);
	free(g->alpha);
	free(g->beta);
	free(g->d);
	free(g->e);
	free(g->z);
	free(g->support);
	free(g->ritz);
	free(g->work);
	free(g->iwork);
	free(g->block);
}

/* Grows every per-step array to hold `cap` steps, keeping what they hold. */
static ms_status lz_reserve(lanczos *g, int cap)
{
	void *p;
#define GROW(field, count) \
	do { \
		p = realloc(g->field, (size_t)(count) * sizeof *g->field); \
		if (!p) \
			return MS_ERR_NOMEM; \
		g->field = p; \
	} while (0)
	GROW(V, ((size_t)cap + 1) * (size_t)g->n);
	GROW(coef, (size_t)cap + 1);
	GROW(alpha, cap);
	GROW(beta, (size_t)cap + 1);
	GROW(d, cap);
	GROW(e, cap);
	GROW(z, 2 * (size_t)cap);
	GROW(support, 4 * (size_t)cap);
	GROW(ritz, cap);
	GROW(work, 20 * (size_t)cap);
	GROW(iwork, 10 * (size_t)cap);
	GROW(block, 2 * (size_t)cap);
#undef GROW
	g->cap = cap;
	return MS_OK;
}

/* y [n] = c^2 W^T W v, one pass over W in tiles of rows. Small W (c >= 1) scales v up before the first product,
 * large W (c < 1) scales that product down, so that W^T sees a vector of size about 1 either way. */
static void apply_gram(const lanczos *g, const float *v, float *y)
{
	const float c = g->c, pre = c >= 1.0f ? c : 1.0f, post = c >= 1.0f ? 1.0f : c;
	for (int k = 0; k < g->n; k++)
		g->x[k] = v[k] * pre;
	memset(y, 0, (size_t)g->n * sizeof *y);
	for (int r = 0; r < g->m; r += LZ_TILE) {
		const int rows = g->m - r < LZ_TILE ? g->m - r : LZ_TILE;
		const float *tile = g->w + (size_t)r * g->n; /* [rows, n] */
		cblas_sgemv(CblasRowMajor, CblasNoTrans, rows, g->n, post, tile, g->n, g->x, 1, 0.0f, g->t, 1);
		cblas_sgemv(CblasRowMajor, CblasTrans, rows, g->n, c, tile, g->n, g->t, 1, 1.0f, y, 1);
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

/* The first vector: W^T r for a fixed pseudo-random r (xorshift64*), normalised. Being in W's row space, it
 * cannot lie in the null space of A, so the first step never breaks down; being pseudo-random, it is not
 * orthogonal to the top singular vector, as a constant vector would be for a matrix whose columns sum to zero.
 * Should W^T r vanish anyway, the largest row of W (nonzero: the caller checked |W| > 0) serves. */
static void start_vector(const lanczos *g, float *v)
{
	float *r = malloc((size_t)g->m * sizeof *r);
	double len = 0.0;
	if (r) {
		unsigned long long s = 0x9E3779B97F4A7C15ULL;
		for (int k = 0; k < g->m; k++) {
			s ^= s >> 12;
			s ^= s << 25;
			s ^= s >> 27;
			r[k] = (float)((double)((s * 2685821657736338717ULL) >> 11) / 9007199254740992.0 - 0.5);
		}
		cblas_sgemv(CblasRowMajor, CblasTrans, g->m, g->n, g->c, g->w, g->n, r, 1, 0.0f, v, 1);
		len = norm2(v, g->n);
		free(r);
	}
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

/* Removes from x [n] its components along v_0..v_j (rows of V), adding the component along v_j to alpha_j.
 * Classical Gram-Schmidt done twice ("twice is enough", Giraud et al. 2005) keeps a float basis orthogonal to
 * working precision; with every earlier vector removed, the three-term recurrence's own subtraction of
 * beta_j v_{j-1} is part of the first pass. */
static void reorthogonalise(lanczos *g, int j, float *x)
{
	g->alpha[j] = 0.0;
	for (int pass = 0; pass < 2; pass++) {
		cblas_sgemv(CblasRowMajor, CblasNoTrans, j + 1, g->n, 1.0f, g->V, g->n, x, 1, 0.0f, g->coef, 1);
		g->alpha[j] += g->coef[j];
		cblas_sgemv(CblasRowMajor, CblasTrans, j + 1, g->n, -1.0f, g->V, g->n, g->coef, 1, 1.0f, x, 1);
	}
}

/* The largest eigenvalue of the (steps x steps) tridiagonal T alone, by bisection (LAPACKE_dstebz_work on T's
 * diagonal alpha and off-diagonal beta + 1, which it does not modify; workspace held in g, so no allocation per
 * step). Every step needs it for the settling test; the eigenvector only once t1 has stopped moving. */
static ms_status ritz_largest(lanczos *g, int steps, double *t1)
{
	lapack_int found = 0, nsplit = 0;
	lapack_int info = LAPACKE_dstebz_work('I', 'E', steps, 0.0, 0.0, steps, steps, 0.0, g->alpha, g->beta + 1,
					      &found, &nsplit, g->ritz, g->block, g->block + steps, g->work, g->iwork);
	if (info != 0 || found < 1)
		return MS_ERR_NUMERIC;
	*t1 = g->ritz[found - 1];
	return MS_OK;
}

/* The largest eigenvalue t1 of the (steps x steps) tridiagonal T, the next one t2 (0 for one step), and the
 * last component of t1's unit eigenvector, by LAPACKE_dstevr_work (bisection and inverse iteration: O(steps) for
 * the two wanted eigenpairs, where a full solve would cost O(steps^2) every step; the workspace of 20 and 10
 * entries per step that dstevr documents is held in g, so LAPACKE neither queries nor allocates). */
static ms_status ritz_top(lanczos *g, int steps, double *t1, double *t2, double *last)
{
	memcpy(g->d, g->alpha, (size_t)steps * sizeof *g->d);
	for (int k = 0; k + 1 < steps; k++)
		g->e[k] = g->beta[k + 1];
	const lapack_int il = steps > 1 ? steps - 1 : 1;
	lapack_int found = 0;
	double eig[2];
	lapack_int info = LAPACKE_dstevr_work(LAPACK_COL_MAJOR, 'V', 'I', steps, g->d, g->e, 0.0, 0.0, il, steps, 0.0,
					      &found, eig, g->z, steps, g->support, g->work, 20 * steps, g->iwork,
					      10 * steps);
	if (info != 0 || found < 1)
		return MS_ERR_NUMERIC;
	*t1 = eig[found - 1];
	*t2 = found > 1 ? eig[0] : 0.0;
	*last = fabs(g->z[(size_t)(found - 1) * steps + (steps - 1)]);
	return MS_OK;
}

/* Steps over which the top Ritz value must have moved by less than the tolerance allows (see settled). */
#define SETTLE_WINDOW 3

/* Has t1 stopped moving: grown by less than rel_tol / 10 (in sigma) over the last SETTLE_WINDOW steps? */
static int still(const double *history, int j, double t1, double rel_tol)
{
	return j >= SETTLE_WINDOW && (t1 - history[j - SETTLE_WINDOW]) / (2.0 * t1) < 0.1 * rel_tol;
}

/* Has the top Ritz value t1 settled? Errors are in sigma = sqrt(t1) / c, relative: an error of e in t1 is one of
 * e / (2 t1) in sigma. Two tests, both required, as a change test alone can be fooled:
 *   - t1 grew by less than rel_tol / 10 (in sigma) over the last SETTLE_WINDOW steps, not just the last one:
 *     when the top of the spectrum is crowded, t1 can creep for a few steps near a lower eigenvalue before the
 *     top one takes over (a Gaussian 1024 x 2048 matrix shows such plateaus near 1e-4 to 1e-3 error);
 *   - the residual of its Ritz vector y, |A y - t1 y| = beta_next |last|, puts an eigenvalue of A within r of t1,
 *     and within r^2 / gap when the nearest other one is gap away (Parlett, The Symmetric Eigenvalue Problem,
 *     11.7; gap estimated by t1 - t2); that error must be below the tolerance. */
static int settled(const double *history, int j, double t1, double t2, double r, double rel_tol)
{
	if (!still(history, j, t1, rel_tol))
		return 0;
	const double gap = t1 - t2 > 0.0 ? t1 - t2 : 0.0;
	double est = r;
	if (gap > 0.0 && r * r / gap < est)
		est = r * r / gap;
	return est / (2.0 * t1) <= rel_tol;
}

/* Runs Lanczos steps until the largest Ritz value settles. history [kmax]: t1 after each step. */
static ms_status lz_run(lanczos *g, double rel_tol, double *history, double *sigma, int *iterations)
{
	start_vector(g, g->V);
	for (int j = 0; j < g->kmax; j++) {
		if (j == g->cap) {
			ms_status st = lz_reserve(g, g->cap * 2 < g->kmax ? g->cap * 2 : g->kmax);
			if (st != MS_OK)
				return st;
		}
		const float *v = g->V + (size_t)j * g->n;
		float *next = g->V + (size_t)(j + 1) * g->n;
		apply_gram(g, v, next);
		reorthogonalise(g, j, next);
		const double b = norm2(next, g->n);
		if (!isfinite(b) || !isfinite(g->alpha[j]))
			return MS_ERR_NONFINITE;
		g->beta[j + 1] = b;
		double t1, t2, last;
		ms_status st = ritz_largest(g, j + 1, &t1);
		if (st != MS_OK)
			return st;
		history[j] = t1;
		*iterations = j + 1;
		*sigma = sqrt(t1 > 0.0 ? t1 : 0.0) / g->c;
		/* A length far below the tolerance means the Krylov space is (numerically) invariant: T's eigenvalues
		 * are then A's own, up to that length. Otherwise the residual test needs t1's eigenvector, worth
		 * computing only once t1 has stopped moving (settled requires both). */
		if (b <= 1e-3 * rel_tol * t1)
			return MS_OK;
		if (still(history, j, t1, rel_tol)) {
			if ((st = ritz_top(g, j + 1, &t1, &t2, &last)) != MS_OK)
				return st;
			if (settled(history, j, t1, t2, b * last, rel_tol))
				return MS_OK;
		}
		scale(next, g->n, 1.0 / b);
	}
	return MS_OK;
}

static ms_status lanczos_sigma_max(const float *w, int m, int n, double fro2, double rel_tol, double *sigma,
				   int *iterations)
{
	/* c = 2^-e with 2^e near |W|_F: exact to apply, and c |W|_F in [0.5, 1). */
	int e = 0;
	(void)frexp(sqrt(fro2), &e);
	e = e > 120 ? 120 : e < -120 ? -120 : e;
	lanczos g = {.w = w, .m = m, .n = n, .c = ldexpf(1.0f, -e), .kmax = m < n ? m : n};
	double *history = malloc((size_t)g.kmax * sizeof *history);
	g.x = malloc((size_t)n * sizeof *g.x);
	g.t = malloc((size_t)(m > LZ_TILE ? m : LZ_TILE) * sizeof *g.t);
	ms_status st = history && g.x && g.t ? lz_reserve(&g, g.kmax < 32 ? g.kmax : 32) : MS_ERR_NOMEM;
	if (st == MS_OK)
		st = lz_run(&g, rel_tol, history, sigma, iterations);
	free(history);
	lz_free(&g);
	return st;
}

/* ---- the public functions ---- */

static ms_status sigma_max_of(const float *w, int m, int n, double rel_tol, srank_method how, double fro2,
			      double *sigma, int *iterations)
{
	*sigma = 0.0;
	*iterations = 0;
	if (!isfinite(fro2))
		return MS_ERR_NONFINITE;
	if (fro2 == 0.0)
		return MS_OK;
	const int k = m < n ? m : n;
	if (how == SRANK_GRAM || (how == SRANK_AUTO && k <= SRANK_GRAM_MAX))
		return gram_sigma_max(w, m, n, sigma);
	return lanczos_sigma_max(w, m, n, fro2, rel_tol, sigma, iterations);
}

static int valid(const float *w, int m, int n, double rel_tol, srank_method how)
{
	return w && m > 0 && n > 0 && rel_tol > 0.0 && (how == SRANK_AUTO || how == SRANK_LANCZOS || how == SRANK_GRAM);
}

ms_status srank_sigma_max_by(const float *w, int m, int n, double rel_tol, srank_method how, double *sigma,
			     int *iterations)
{
	int steps_local;
	if (!iterations)
		iterations = &steps_local;
	if (!sigma || !valid(w, m, n, rel_tol, how))
		return MS_ERR_ARG;
	return sigma_max_of(w, m, n, rel_tol, how, srank_frobenius2(w, m, n), sigma, iterations);
}

ms_status srank_sigma_max(const float *w, int m, int n, double rel_tol, double *sigma, int *iterations)
{
	return srank_sigma_max_by(w, m, n, rel_tol, SRANK_AUTO, sigma, iterations);
}

ms_status srank_stable_rank(const float *w, int m, int n, double rel_tol, double *sr)
{
	if (!sr || !valid(w, m, n, rel_tol, SRANK_AUTO))
		return MS_ERR_ARG;
	const double fro2 = srank_frobenius2(w, m, n);
	double sigma;
	int steps;
	ms_status st = sigma_max_of(w, m, n, rel_tol, SRANK_AUTO, fro2, &sigma, &steps);
	if (st != MS_OK)
		return st;
	*sr = fro2 / (sigma * sigma + SRANK_FLOOR);
	return MS_OK;
}
