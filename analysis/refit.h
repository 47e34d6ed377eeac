/* Recovery of a merged block without training: the down projections of its expert slots are refitted so that the
 * merged block's routed output matches the original block's on calibration tokens, under the merged block's own
 * routing.
 *
 * With the routing of the merged block fixed (the selected slots S(t) and their weights g_s(t), which include the
 * family's top-k renormalisation and scaling) and the gate and up matrices fixed (so the hidden activations
 * h_s(t) [f] are fixed), the routed output sum_{s in S(t)} g_s(t) W_s h_s(t) is linear in the down matrices W_s
 * [d, f]. The refit solves the ridge least squares problem
 *
 *     min over W_0 .. W_{S-1} of  sum_t | y(t) - sum_{s in S(t)} g_s(t) W_s h_s(t) |^2  +  sum_s lambda_s |W_s - M_s|^2
 *
 * with M_s the merged down matrix (the prior: a slot with few tokens stays near its merge) and y(t) the original
 * block's routed output. Because the weights g_s(t) are folded into the features a_s(t) = g_s(t) h_s(t), the fit
 * also removes the inflation a merged router causes when the family does not renormalise its top-k weights (a
 * group's row carries all its members' probability).
 *
 * Each output dimension (row i of every W_s) is its own independent problem. Within one, the slots are coupled
 * through the tokens they share; the joint normal matrix is (S f) x (S f), too large for real models (S f = 86016
 * for Mixtral merged to 6). So the refit solves it per expert, by block coordinate descent (Gauss-Seidel over the
 * slots in index order, a fixed number of sweeps): slot s solves, with the others held, the f x f system
 *     (A_s^T A_s + lambda_s I) W_s^T = A_s^T R_s + lambda_s M_s^T,   R_s = y - (the other slots' outputs),
 * A_s [n_s, f] the rows a_s(t) of the tokens routed to s. Each step minimises the convex objective over one block
 * exactly, so the objective never increases and the sweeps converge to the joint minimiser; the first sweep
 * already removes most of the error.
 *
 * A step is solved in one of two equivalent forms, chosen per slot by its token count (docs/design.md, the refit):
 * in feature space, in double, with the explicit inverse of A_s^T A_s + lambda_s I (f x f), costing 4 n_s f + 2 f^2
 * per output dimension and sweep; or in token space, where the slot's new output on its tokens is
 *     A_s W_s^T = R_s - lambda_s (A_s A_s^T + lambda_s I)^-1 (R_s - A_s M_s^T),
 * one n_s x n_s product (2 n_s^2) done in float (the matrix lambda (A A^T + lambda I)^-1 has eigenvalues in (0, 1],
 * so float rounding moves the output by about float epsilon of the slot's residual; the running outputs stay in
 * double), and W_s^T = M_s^T + A_s^T (A_s A_s^T + lambda_s I)^-1 (R_s - A_s M_s^T) formed once, on the last
 * sweep. The inverses are computed once per slot (LAPACK dpotrf and dpotri, in double) and reused by every sweep.
 *
 * Parallelism (analysis/par.h): the inverses are one task per slot, the sweeps one task per strip of RFT_STRIP
 * output dimensions; every sum runs in a fixed order and the choice of form depends on the routing alone, so the
 * bits do not depend on the thread count. */
#ifndef RFT_REFIT_H
#define RFT_REFIT_H

#include <stdint.h>

#include "analysis/block.h"
#include "io/error.h"

/* Output dimensions per sweep task: wide enough for the products to run near the GEMM peak (a [1536, 1536] x
 * [1536, 32] dgemm ran at 64% of the 128-wide one's rate here), narrow enough to give OLMoE's d = 2048 16 tasks. */
#define RFT_STRIP 128

/* Default relative ridge: lambda_s = RFT_LAMBDA_DEFAULT x trace(A_s^T A_s) / f (scaled to the slot's own
 * activations, as the router fit's ridge is to its inputs), 1 when a slot has no tokens (it keeps its merge). */
#define RFT_LAMBDA_DEFAULT 1e-2
#define RFT_SWEEPS_DEFAULT 4

typedef struct {
	double lambda;   /* relative ridge (> 0) */
	int sweeps;      /* Gauss-Seidel sweeps (>= 1) */
} rft_options;

rft_options rft_defaults(void);

/* Refits the down matrices of cfg's expert slots: down [n_slots] points at each slot's down matrix [d, f], the
 * same arrays cfg->experts[s].down views (the slots must not share storage); they are read as the prior M_s and
 * overwritten with the solution. x [n, d] the fit tokens, target [n, d] the original block's routed output on them
 * (without any shared expert). cfg's shared expert, if any, takes no part (it is the same before and after).
 * A slot's down bias b_s (expert_weights.down_bias) is held: the matrices are fitted to y(t) - sum g_s(t) b_s.
 * MS_ERR_ARG for bad arguments, MS_ERR_NUMERIC when a system is not positive definite, MS_ERR_NOMEM. */
ms_status rft_down(const blk_config *cfg, float *const *down, const float *x, int64_t n, const float *target,
		   const rft_options *o, ms_error *err);

/* |target - routed output of cfg|_F / |target|_F on x [n, d] (no shared expert): what rft_down lowers. */
ms_status rft_routed_error(const blk_config *cfg, const float *x, int64_t n, const float *target, double *rel,
			   ms_error *err);

#endif
