/* Stable rank (docs/design.md §3.3): |W|_F^2 / (sigma_max^2 + 1e-7), the MC-SMoE measure of how compressible a
 * matrix is.
 *
 * sigma_max^2 is the largest eigenvalue of W^T W, found by block Lanczos on W^T W (a block of 2 vectors, full
 * reorthogonalisation, one pass over W per step by the kernel of analysis/wtw.h, whose sums are fixed so that its
 * vector and portable paths give the same bits; no Gram matrix formed). The block is what keeps the answer right
 * when the top singular values crowd together, as on pure noise, where a single start vector can miss the top
 * singular vector and settle on the second. A second method, exact to rounding, forms the Gram
 * matrix in double and takes its top eigenvalue with LAPACKE_dsyevr (the better choice for tiny matrices);
 * stable_rank.c states the cost model and why the automatic choice is Lanczos for now. The start block is fixed
 * and nothing runs in parallel inside, so Lanczos results are reproducible and independent of thread count. Work
 * space is allocated and freed inside. */
#ifndef SRANK_STABLE_RANK_H
#define SRANK_STABLE_RANK_H

#include "io/error.h"

#define SRANK_FLOOR 1e-7

/* Relative accuracy of sigma_max unless the caller asks for another (docs/design.md §3.3). */
#define SRANK_DEFAULT_TOL 1e-4

/* sum of w [m, n]^2, accumulated in double. */
double srank_frobenius2(const float *w, int m, int n);

typedef enum { SRANK_AUTO, SRANK_LANCZOS, SRANK_GRAM } srank_method;

/* *sigma = the largest singular value of w [m, n]. Block Lanczos iterates until the largest Ritz value has
 * changed by less than rel_tol / 10 relative to itself over the last block step and the residual of its Ritz
 * vector bounds the error below rel_tol, with the sharper residual^2 / gap bound only where the second Ritz
 * value has itself converged (see stable_rank.c); or until the Krylov space is invariant or holds min(m, n)
 * vectors, where the result is exact up to rounding. The Gram method is exact up to rounding whatever rel_tol.
 * *iterations (may be NULL) = block Lanczos steps taken, each one pass over w (0 for the Gram method). A zero matrix
 * gives 0 in zero steps. MS_ERR_ARG on bad sizes or rel_tol <= 0, MS_ERR_NONFINITE when w holds NaN or infinity
 * (or values whose products overflow), MS_ERR_NUMERIC when LAPACK fails, MS_ERR_NOMEM. */
ms_status srank_sigma_max(const float *w, int m, int n, double rel_tol, double *sigma, int *iterations);

/* The same with the method chosen by the caller (SRANK_AUTO: as srank_sigma_max); for tests and benchmarks. */
ms_status srank_sigma_max_by(const float *w, int m, int n, double rel_tol, srank_method how, double *sigma,
			     int *iterations);

/* *sr = |w|_F^2 / (sigma_max^2 + SRANK_FLOOR), sigma_max as above (same errors). */
ms_status srank_stable_rank(const float *w, int m, int n, double rel_tol, double *sr);

#endif
