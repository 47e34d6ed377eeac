/* Stable rank (docs/design.md §3.3): |W|_F^2 / (sigma_max^2 + 1e-7), the MC-SMoE measure of how compressible a
 * matrix is.
 *
 * sigma_max comes from Golub-Kahan-Lanczos bidiagonalisation (Golub & Van Loan, Matrix Computations, 10.4) with
 * full reorthogonalisation, not from a full SVD: each step costs two matrix-vector products, and the largest
 * singular value of the small bidiagonal (LAPACKE_dbdsqr) converges to sigma_max in a few dozen steps, far
 * faster than power iteration when the top singular values are close. The start vector is fixed, so results
 * are reproducible. Work space is allocated and freed inside. */
#ifndef SRANK_STABLE_RANK_H
#define SRANK_STABLE_RANK_H

#include "io/error.h"

#define SRANK_FLOOR 1e-7

/* Relative accuracy of sigma_max unless the caller asks for another (docs/design.md §3.3). */
#define SRANK_DEFAULT_TOL 1e-4

/* sum of w [m, n]^2, accumulated in double. */
double srank_frobenius2(const float *w, int m, int n);

/* *sigma = the largest singular value of w [m, n]. Iterates until the largest Ritz value changes by less than
 * rel_tol / 10 relative to itself and, since a change test alone stalls on plateaus when the top singular values
 * crowd together, the residual of its Ritz vector also bounds the error below rel_tol (see stable_rank.c); or
 * until the Krylov space is exhausted; or for min(m, n) steps, where the result is exact up to rounding.
 * *iterations (may be NULL) = bidiagonalisation steps taken, each two matrix-vector products. A zero matrix
 * gives 0 in zero steps. MS_ERR_ARG on bad sizes or rel_tol <= 0, MS_ERR_NONFINITE when w holds NaN or infinity
 * (or values whose products overflow float), MS_ERR_NUMERIC when LAPACK fails, MS_ERR_NOMEM. */
ms_status srank_sigma_max(const float *w, int m, int n, double rel_tol, double *sigma, int *iterations);

/* *sr = |w|_F^2 / (sigma_max^2 + SRANK_FLOOR), sigma_max as above (same errors). */
ms_status srank_stable_rank(const float *w, int m, int n, double rel_tol, double *sr);

#endif
