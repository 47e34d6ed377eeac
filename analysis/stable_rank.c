#include "analysis/stable_rank.h"
#include "analysis/wtw.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>
#include <lapacke.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* Lanes of srank_frobenius2's accumulators: independent sums keep the loop off the latency of one long chain of
 * additions. The order of summation is fixed (lane l takes the elements k with k % FRO_LANES == l, the lanes are
 * added in order at the end), so the result is the same on every run and for any thread count. With SSE2 the
 * lanes are four pairs of doubles: the same products and sums as the plain loop, bit for bit, which gcc -O2
 * does not vectorise by itself (measured 1.2 ms against 0.58 ms for a 1024 x 2048 matrix on one core; this pass
 * was a quarter of the time of a stable rank on a matrix with a dominant direction). */
#define FRO_LANES 8

double srank_frobenius2(const float *w, int m, int n)
{
	if (!w || m <= 0 || n <= 0)
		return 0.0;
	const size_t count = (size_t)m * (size_t)n;
	double acc[FRO_LANES] = {0};
	size_t k = 0;
#if defined(__SSE2__)
	__m128d a0 = _mm_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
	for (; k + FRO_LANES <= count; k += FRO_LANES) {
		const __m128 lo = _mm_loadu_ps(w + k), hi = _mm_loadu_ps(w + k + 4);
		const __m128d d0 = _mm_cvtps_pd(lo), d1 = _mm_cvtps_pd(_mm_movehl_ps(lo, lo));
		const __m128d d2 = _mm_cvtps_pd(hi), d3 = _mm_cvtps_pd(_mm_movehl_ps(hi, hi));
		a0 = _mm_add_pd(a0, _mm_mul_pd(d0, d0));
		a1 = _mm_add_pd(a1, _mm_mul_pd(d1, d1));
		a2 = _mm_add_pd(a2, _mm_mul_pd(d2, d2));
		a3 = _mm_add_pd(a3, _mm_mul_pd(d3, d3));
	}
	_mm_storeu_pd(acc, a0);
	_mm_storeu_pd(acc + 2, a1);
	_mm_storeu_pd(acc + 4, a2);
	_mm_storeu_pd(acc + 6, a3);
#endif
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

/* ---- block Lanczos on W^T W ----
 *
 * Block Lanczos (Golub & Van Loan, Matrix Computations, 4th ed., 10.3.6; Bai et al., Templates for the Solution
 * of Algebraic Eigenvalue Problems, 4.6) on A = c^2 W^T W with full reorthogonalisation. A block of up to
 * LZ_BLOCK orthonormal vectors Q_j [n] advances per step; after step j, A [Q_0..Q_j] = [Q_0..Q_j] T +
 * Q_{j+1} B_{j+1} E_j^T with T block tridiagonal (diagonal blocks A_j = Q_j^T A Q_j, off-diagonal blocks B_j),
 * and the eigenvalues of T (Ritz values) approach A's from below.
 *
 * Why a block: when the top singular values crowd together, as on pure noise, single-vector Lanczos converges
 * to whichever of the top eigenvectors its start vector happens to favour, and can sit on lambda_2 with a tiny
 * residual for many steps while lambda_1 is still unresolved; no test on the Krylov space alone can see the
 * missing eigenvalue (seen: 1.05e-3 error on a 1024 x 2048 noise matrix). A random start block of p vectors
 * makes a small component along the top eigenvector as unlikely as p independent draws all being small, and
 * the convergence of the top Ritz value is governed by the gap from lambda_1 to lambda_{p+1} rather than to
 * lambda_2 (Musco & Musco, "Randomized block Krylov methods for stronger and faster approximate singular value
 * decomposition", NeurIPS 2015; Golub & Van Loan 10.3.6). Each step reads W once: A is applied to the whole
 * block a tile of rows at a time. The arithmetic is p times that of a single vector, so a block step costs
 * about p single-vector steps on this hardware; what the block buys is a right answer, not speed.
 *
 * c is a power of two near 1 / |W|_F, so A's eigenvalues lie in (0, 1] and nothing overflows or underflows in
 * float whatever W's magnitude. */

/* Vectors per block: WTW_MAX_Q, 2. Measured on one core (CPU time, old single-vector code alongside, products by
 * sgemv then): on 1024 x 2048 noise, blocks of 2, 3, 4 and 6 all reached the answer, in 46-70, 57-84, 72-100 and
 * 108-126 vector-passes (block steps x p), and a block step cost about p single-vector steps (the pass is bound
 * by arithmetic while W fits in the L3 cache). On matrices with a dominant direction a block of 2 took 4 steps
 * where the single vector took 6; 4 took twice the time. So 2: the top vector is missed only when both start
 * vectors are unlucky (no miss in 80 small and 28 large noise matrices, where the single vector missed one), at
 * the least cost. With analysis/wtw.c's kernel a two-vector pass costs 1.4-1.5 one-vector passes while W is in
 * cache (0.36-0.40 ms against 0.25-0.27 ms on 1024 x 2048) and 1.1 on 14336 x 4096 (18.8 ms against 16.8 ms). */
#define LZ_BLOCK WTW_MAX_Q

/* Rows of W per tile of the start block's product: 32 rows of 4096 floats are 512 KiB, inside a core's L2. */
#define LZ_TILE 32

typedef struct {
	const float *w;   /* [m, n] */
	int m, n;
	float c;          /* power-of-two scale: A = c^2 W^T W */
	int kmax;         /* min(m, n): A's rank at most, the most basis vectors that can be useful */
	int p;            /* block size: min(LZ_BLOCK, kmax) */
	int cap;          /* basis vectors V and T can hold now */
	int dim;          /* basis vectors so far */
	float *V;         /* [cap, n] orthonormal basis, one vector per row, block after block */
	float *Y;         /* [p, n] A times the current block, then the next block */
	float *X;         /* [p, n] scaled copy of the block being multiplied; the next block while it is built */
	float *t;         /* [max(m, LZ_TILE) * p] W q for one tile; also the start block's random weights */
	float *coef;      /* [cap, p] projections during reorthogonalisation */
	float *small;     /* [p, p] a float copy of a small factor */
	double *T;        /* [cap, cap] the projected matrix, leading dimension cap */
	double *Tw;       /* [cap, cap] copy of T for dsyevr, which overwrites it */
	double *z;        /* [cap, 2] eigenvectors of the top two Ritz values */
	lapack_int *support; /* [4] */
	double *diag;     /* [p, p] A_j accumulated over the two reorthogonalisation passes */
	double *B;        /* [p, p] the coupling B_{j+1}, row-major [new block size, old block size] */
} blanczos;

static void blz_free(blanczos *g)
{
	free(g->V);
	free(g->Y);
	free(g->X);
	free(g->t);
	free(g->coef);
	free(g->small);
	free(g->T);
	free(g->Tw);
	free(g->z);
	free(g->support);
	free(g->diag);
	free(g->B);
}

/* Grows the basis and T to hold `cap` vectors, keeping what they hold (T is moved to its new leading
 * dimension). */
static ms_status blz_reserve(blanczos *g, int cap)
{
	float *V = wtw_alloc((size_t)cap * g->n * sizeof *V);
	if (!V)
		return MS_ERR_NOMEM;
	if (g->V)
		memcpy(V, g->V, (size_t)g->dim * g->n * sizeof *V);
	free(g->V);
	g->V = V;
	float *coef = realloc(g->coef, (size_t)cap * g->p * sizeof *coef);
	if (!coef)
		return MS_ERR_NOMEM;
	g->coef = coef;
	double *T = calloc((size_t)cap * cap, sizeof *T), *Tw = malloc((size_t)cap * cap * sizeof *Tw);
	double *z = malloc((size_t)cap * 2 * sizeof *z);
	if (!T || !Tw || !z) {
		free(T);
		free(Tw);
		free(z);
		return MS_ERR_NOMEM;
	}
	for (int i = 0; i < g->dim; i++)
		memcpy(T + (size_t)i * cap, g->T + (size_t)i * g->cap, (size_t)g->dim * sizeof *T);
	free(g->T);
	free(g->Tw);
	free(g->z);
	g->T = T;
	g->Tw = Tw;
	g->z = z;
	g->cap = cap;
	return MS_OK;
}

/* Y [q, n] = c^2 (W^T W Q^T)^T for the q rows of Q, one pass over W by analysis/wtw.c's kernel: four rows at a
 * time, their products with every vector of the block and then, from cache, their contributions. It replaced two
 * sgemv per vector per tile of 32 rows, which read each element of W once per product and per vector (measured
 * on one core, 1024 x 2048 noise, 29 block steps: see the README's performance section). Small W (c >= 1) scales
 * Q up before the first product, large W (c < 1) scales that product down, so that W^T sees vectors of size about
 * 1 either way. */
static void apply_gram_block(const blanczos *g, const float *Q, int q, float *Y)
{
	const float c = g->c, pre = c >= 1.0f ? c : 1.0f, post = c >= 1.0f ? 1.0f : c;
	const size_t len = (size_t)q * g->n;
	for (size_t k = 0; k < len; k++)
		g->X[k] = Q[k] * pre;
	wtw_apply(g->w, g->m, g->n, g->X, q, post, c, Y, WTW_AUTO);
}

/* Removes from the q rows of Y their components along the basis V [dim, n] by classical Gram-Schmidt, two sgemv
 * per row (V is small and stays in cache; two skinny sgemm measured no faster, as in apply_gram_block). With diag, the projections onto the last q_prev basis vectors (the block Y came from) are added to it
 * [q_prev, q]: that is the diagonal block A_j of T. */
static void project_out(blanczos *g, float *Y, int q, int q_prev, double *diag)
{
	const int dim = g->dim;
	for (int b = 0; b < q; b++) {
		float *y = Y + (size_t)b * g->n;
		cblas_sgemv(CblasRowMajor, CblasNoTrans, dim, g->n, 1.0f, g->V, g->n, y, 1, 0.0f, g->coef + b, q);
		cblas_sgemv(CblasRowMajor, CblasTrans, dim, g->n, -1.0f, g->V, g->n, g->coef + b, q, 1.0f, y, 1);
	}
	if (diag)
		for (int a = 0; a < q_prev; a++)
			for (int b = 0; b < q; b++)
				diag[a * q + b] += g->coef[(size_t)(dim - q_prev + a) * q + b];
}

/* G [q, q] = Y Y^T for the q rows of Y, accumulated in double. */
static void gram_rows(const float *Y, int q, int n, double *G)
{
	for (int a = 0; a < q; a++)
		for (int b = 0; b <= a; b++) {
			const float *ya = Y + (size_t)a * n, *yb = Y + (size_t)b * n;
			double acc[4] = {0};
			int k = 0;
			for (; k + 4 <= n; k += 4)
				for (int l = 0; l < 4; l++)
					acc[l] += (double)ya[k + l] * yb[k + l];
			for (; k < n; k++)
				acc[0] += (double)ya[k] * yb[k];
			G[a * q + b] = G[b * q + a] = acc[0] + acc[1] + acc[2] + acc[3];
		}
}

/* Orthonormalises the q rows of Y against each other and against the basis: Y = B^T Z with Z [q', n] orthonormal
 * rows, orthogonal to the basis, written to X. The directions of Y whose singular value is at most thr (and any
 * beyond `limit`) are dropped: their total size goes to *dropped (0 if none), so the caller can count them in the
 * residual. B [q', q] row-major goes to g->B. Gram eigenvectors in double find the directions (a plain QR would
 * pick an arbitrary one where Y is rank deficient); the rows of Z, formed in float, are projected against the
 * basis once more and made orthonormal by a Cholesky QR of their (now well-conditioned) Gram matrix
 * ("CholeskyQR2", Fukaya et al. 2014). */
static ms_status orthonormalise(blanczos *g, int q, double thr, int limit, int *q_out, double *dropped)
{
	const int n = g->n;
	double G[LZ_BLOCK * LZ_BLOCK], lam[LZ_BLOCK], L[LZ_BLOCK * LZ_BLOCK];
	int keep[LZ_BLOCK];
	gram_rows(g->Y, q, n, G);
	if (LAPACKE_dsyev(LAPACK_ROW_MAJOR, 'V', 'L', q, G, q, lam) != 0)
		return MS_ERR_NUMERIC;
	/* lam ascending; G's column i is the eigenvector of lam[i]. Keep from the largest down. */
	int kept = 0;
	double drop2 = 0.0;
	for (int i = q - 1; i >= 0; i--) {
		const double s = lam[i] > 0.0 ? sqrt(lam[i]) : 0.0;
		if (s > thr && kept < limit)
			keep[kept++] = i;
		else
			drop2 += s * s;
	}
	*dropped = sqrt(drop2);
	*q_out = kept;
	if (!kept)
		return MS_OK;
	/* Z = S^-1 U^T Y into X; U S (the kept columns) into the first factor of B. */
	double US[LZ_BLOCK * LZ_BLOCK]; /* [q, kept] */
	for (int i = 0; i < kept; i++) {
		const double s = sqrt(lam[keep[i]]);
		for (int a = 0; a < q; a++) {
			g->small[i * q + a] = (float)(G[a * q + keep[i]] / s);
			US[a * kept + i] = G[a * q + keep[i]] * s;
		}
	}
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, kept, n, q, 1.0f, g->small, q, g->Y, n, 0.0f, g->X, n);
	project_out(g, g->X, kept, 0, NULL);
	/* Z = L Z2 with L L^T = Z Z^T; Z2 = L^-1 Z. */
	gram_rows(g->X, kept, n, L);
	if (LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', kept, L, kept) != 0)
		return MS_ERR_NUMERIC;
	for (int i = 0; i < kept; i++)
		for (int k = 0; k < kept; k++)
			g->small[i * kept + k] = k <= i ? (float)L[i * kept + k] : 0.0f;
	cblas_strsm(CblasRowMajor, CblasLeft, CblasLower, CblasNoTrans, CblasNonUnit, kept, n, 1.0f, g->small, kept,
		    g->X, n);
	/* Y = U S Z = U S L Z2, so B^T = U S L: B [kept, q] = L^T (U S)^T. */
	for (int i = 0; i < kept; i++)
		for (int b = 0; b < q; b++) {
			double acc = 0.0;
			for (int k = i; k < kept; k++)
				acc += L[k * kept + i] * US[b * kept + k];
			g->B[i * q + b] = acc;
		}
	return MS_OK;
}

/* The start block: c W^T R for a fixed pseudo-random R [m, p] (xorshift64*), orthonormalised. Being in W's row
 * space, it cannot lie in the null space of A, and being pseudo-random it is not orthogonal to the top singular
 * vectors (as a constant vector would be for a matrix whose columns sum to zero). Should c W^T R vanish anyway,
 * the largest row of W (nonzero: the caller checked |W| > 0) serves. Leaves the block in V and its size in
 * g->dim. */
static ms_status start_block(blanczos *g, double thr_rel)
{
	const int m = g->m, n = g->n, p = g->p;
	float *r = g->t; /* [m * p] */
	unsigned long long s = 0x9E3779B97F4A7C15ULL;
	for (size_t k = 0; k < (size_t)m * p; k++) {
		s ^= s >> 12;
		s ^= s << 25;
		s ^= s >> 27;
		r[k] = (float)((double)((s * 2685821657736338717ULL) >> 11) / 9007199254740992.0 - 0.5);
	}
	/* Row a of Y = c W^T r_a (r_a = column a of R), by sgemv on tiles of rows so that each tile is read from
	 * memory once for all p rows (see apply_gram_block for why not sgemm). */
	memset(g->Y, 0, (size_t)p * n * sizeof *g->Y);
	for (int i = 0; i < m; i += LZ_TILE) {
		const int rows = m - i < LZ_TILE ? m - i : LZ_TILE;
		for (int a = 0; a < p; a++)
			cblas_sgemv(CblasRowMajor, CblasTrans, rows, n, g->c, g->w + (size_t)i * n, n, r + (size_t)i * p + a,
				    p, 1.0f, g->Y + (size_t)a * n, 1);
	}
	double G[LZ_BLOCK * LZ_BLOCK], largest = 0.0;
	gram_rows(g->Y, p, n, G);
	for (int a = 0; a < p; a++)
		largest = G[a * p + a] > largest ? G[a * p + a] : largest;
	int kept = 0;
	double dropped;
	g->dim = 0;
	if (isfinite(largest) && largest > 0.0) {
		ms_status st = orthonormalise(g, p, thr_rel * sqrt(largest), p, &kept, &dropped);
		if (st != MS_OK)
			return st;
	}
	if (!kept) {
		int best = 0;
		double best_len = -1.0;
		for (int i = 0; i < m; i++) {
			const double l = sqrt(srank_frobenius2(g->w + (size_t)i * n, 1, n));
			if (l > best_len)
				best = i, best_len = l;
		}
		for (int k = 0; k < n; k++)
			g->X[k] = (float)(g->w[(size_t)best * n + k] / best_len);
		kept = 1;
	}
	memcpy(g->V, g->X, (size_t)kept * n * sizeof *g->V);
	g->dim = kept;
	return MS_OK;
}

/* The top two eigenpairs of T [dim, dim] (one if dim is 1) by LAPACKE_dsyevr on a copy: t1 >= t2, and the last
 * q components of each unit eigenvector, y1 and y2 (the part that meets the residual block). T is small (a few
 * dozen rows), so a dense solver costs nothing next to a pass over W. */
static ms_status ritz_top(blanczos *g, int q, double *t1, double *t2, double *y1, double *y2)
{
	const int dim = g->dim, ld = g->cap;
	for (int i = 0; i < dim; i++)
		memcpy(g->Tw + (size_t)i * dim, g->T + (size_t)i * ld, (size_t)dim * sizeof *g->Tw);
	const lapack_int il = dim > 1 ? dim - 1 : 1;
	lapack_int found = 0;
	double eig[2];
	lapack_int info = LAPACKE_dsyevr(LAPACK_COL_MAJOR, 'V', 'I', 'U', dim, g->Tw, dim, 0.0, 0.0, il, dim, 0.0,
					 &found, eig, g->z, dim, g->support);
	if (info != 0 || found < 1)
		return MS_ERR_NUMERIC;
	const double *v1 = g->z + (size_t)(found - 1) * dim, *v2 = g->z;
	*t1 = eig[found - 1];
	*t2 = found > 1 ? eig[0] : 0.0;
	for (int k = 0; k < q; k++) {
		y1[k] = v1[dim - q + k];
		y2[k] = found > 1 ? v2[dim - q + k] : 0.0;
	}
	return MS_OK;
}

/* |A y - t y| for the Ritz vector whose last block of components is yl [q]: |B yl| for the coupling B [q', q]
 * kept, plus the dropped directions' total size times |yl| (a bound: they were at most that large). */
static double ritz_residual(const blanczos *g, int q, int q_next, const double *yl, double dropped)
{
	double acc = 0.0, len = 0.0;
	for (int i = 0; i < q_next; i++) {
		double row = 0.0;
		for (int b = 0; b < q; b++)
			row += g->B[i * q + b] * yl[b];
		acc += row * row;
	}
	for (int b = 0; b < q; b++)
		len += yl[b] * yl[b];
	return sqrt(acc) + dropped * sqrt(len);
}

/* Block steps over which the top Ritz value must have moved by less than the tolerance allows (see settled). */
#define SETTLE_WINDOW 1

/* Has the top Ritz value t1 settled? Errors are in sigma = sqrt(t1) / c, relative: an error of e in t1 is one of
 * e / (2 t1) in sigma. Both must hold:
 *   - t1 grew by less than rel_tol / 10 (in sigma) over the last SETTLE_WINDOW block steps;
 *   - the residual r1 = |A y1 - t1 y1| of its Ritz vector puts an eigenvalue of A within r1 of t1 (Parlett, The
 *     Symmetric Eigenvalue Problem, 4.5), and within r1^2 / gap when every other eigenvalue is at least gap away
 *     (11.7, the Kato-Temple bound). The gap is taken from the second Ritz value t2 only when t2 has itself
 *     converged, i.e. its residual r2 is smaller than the distance t1 - t2 minus r1: then an eigenvalue lies within
 *     r2 of t2 and gap = t1 - t2 - r2 is the distance to it. An unconverged t2 says nothing about where A's
 *     second eigenvalue is (the old single-vector test used the raw Ritz gap, which on a crowded top could be
 *     far larger than the true one); then the plain bound r1 must meet the tolerance on its own.
 * What no test on a Krylov space can see is an eigenvalue above t1 that the space has missed entirely; the
 * random start block is what makes that improbable (see the section comment). */
static int settled(const double *history, int j, double t1, double t2, double r1, double r2, double rel_tol)
{
	if (j < SETTLE_WINDOW || (t1 - history[j - SETTLE_WINDOW]) / (2.0 * t1) >= 0.1 * rel_tol)
		return 0;
	double est = r1;
	const double gap = t1 - t2 - r2;
	if (r2 < t1 - t2 - r1 && gap > 0.0 && r1 * r1 / gap < est)
		est = r1 * r1 / gap;
	return est / (2.0 * t1) <= rel_tol;
}

/* Runs block steps until the top Ritz value settles, the Krylov space is invariant, or it holds kmax vectors. */
static ms_status blz_run(blanczos *g, double rel_tol, double *history, double *sigma, int *iterations)
{
	/* Directions of a new block smaller than this, relative to A's norm, are dropped: they are rounding, or
	 * (at a looser tolerance) too small to move the top Ritz value by what the tolerance allows. */
	const double thr_rel = 1e-3 * rel_tol > 1e-7 ? 1e-3 * rel_tol : 1e-7;
	ms_status st = start_block(g, thr_rel);
	if (st != MS_OK)
		return st;
	int q = g->dim;
	double y1[LZ_BLOCK], y2[LZ_BLOCK];
	for (int j = 0;; j++) {
		const int off = g->dim - q; /* the current block is V[off, off + q) */
		apply_gram_block(g, g->V + (size_t)off * g->n, q, g->Y);
		memset(g->diag, 0, (size_t)q * q * sizeof *g->diag);
		for (int pass = 0; pass < 2; pass++)
			project_out(g, g->Y, q, q, g->diag);
		for (int a = 0; a < q; a++)
			for (int b = 0; b < q; b++) {
				const double v = 0.5 * (g->diag[a * q + b] + g->diag[b * q + a]);
				if (!isfinite(v))
					return MS_ERR_NONFINITE;
				g->T[(size_t)(off + a) * g->cap + off + b] = v;
			}
		double t1, t2;
		if ((st = ritz_top(g, q, &t1, &t2, y1, y2)) != MS_OK)
			return st;
		history[j] = t1;
		*iterations = j + 1;
		*sigma = sqrt(t1 > 0.0 ? t1 : 0.0) / g->c;
		if (g->dim >= g->kmax) /* the space holds A's whole range: T's eigenvalues are A's */
			return MS_OK;
		int q_next;
		double dropped;
		const double scale = t1 > 0.0 ? t1 : 1.0;
		if ((st = orthonormalise(g, q, thr_rel * scale, g->kmax - g->dim, &q_next, &dropped)) != MS_OK)
			return st;
		if (!isfinite(dropped))
			return MS_ERR_NONFINITE;
		if (q_next == 0) /* invariant: every Ritz value is within `dropped` of an eigenvalue of A */
			return MS_OK;
		const double r1 = ritz_residual(g, q, q_next, y1, dropped), r2 = ritz_residual(g, q, q_next, y2, dropped);
		if (settled(history, j, t1, t2, r1, r2, rel_tol))
			return MS_OK;
		if (g->dim + q_next > g->cap) {
			const int want = g->cap * 2 < g->kmax ? g->cap * 2 : g->kmax;
			if ((st = blz_reserve(g, want)) != MS_OK)
				return st;
		}
		const int next = g->dim; /* B into T below and right of the current block */
		for (int i = 0; i < q_next; i++)
			for (int b = 0; b < q; b++) {
				g->T[(size_t)(next + i) * g->cap + off + b] = g->B[i * q + b];
				g->T[(size_t)(off + b) * g->cap + next + i] = g->B[i * q + b];
			}
		memcpy(g->V + (size_t)next * g->n, g->X, (size_t)q_next * g->n * sizeof *g->V);
		g->dim += q_next;
		q = q_next;
	}
}

static ms_status lanczos_sigma_max(const float *w, int m, int n, double fro2, double rel_tol, double *sigma,
				   int *iterations)
{
	/* c = 2^-e with 2^e near |W|_F: exact to apply, and c |W|_F in [0.5, 1). */
	int e = 0;
	(void)frexp(sqrt(fro2), &e);
	e = e > 120 ? 120 : e < -120 ? -120 : e;
	const int kmax = m < n ? m : n;
	blanczos g = {.w = w, .m = m, .n = n, .c = ldexpf(1.0f, -e), .kmax = kmax,
		      .p = kmax < LZ_BLOCK ? kmax : LZ_BLOCK};
	const int p = g.p;
	double *history = malloc((size_t)kmax * sizeof *history);
	g.Y = wtw_alloc((size_t)p * n * sizeof *g.Y);
	g.X = wtw_alloc((size_t)p * n * sizeof *g.X);
	g.t = malloc((size_t)(m > LZ_TILE ? m : LZ_TILE) * p * sizeof *g.t);
	g.small = malloc((size_t)p * p * sizeof *g.small);
	g.support = malloc(4 * sizeof *g.support);
	g.diag = malloc((size_t)p * p * sizeof *g.diag);
	g.B = malloc((size_t)p * p * sizeof *g.B);
	ms_status st = MS_ERR_NOMEM;
	if (history && g.Y && g.X && g.t && g.small && g.support && g.diag && g.B)
		st = blz_reserve(&g, kmax < 64 ? kmax : 64);
	if (st == MS_OK)
		st = blz_run(&g, rel_tol, history, sigma, iterations);
	free(history);
	blz_free(&g);
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
