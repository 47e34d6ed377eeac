/* MEO analysis (Merging Experts into One, He et al. 2023, arXiv 2310.09832): how far a block's output moves when
 * the k experts a token selects are replaced by one expert whose weights are their routing-weighted sum.
 *
 * Token level: for token t with selected slots s_1..s_k and routing weights g_1..g_k (rows sharing a slot add
 * their weights), the mixed expert has gate = sum_j g_j gate_{s_j}, and likewise up and down, and
 *     error_t = |E_mixed(x_t) - y_t| / |y_t|,   y_t = sum_j g_j E_{s_j}(x_t)  (the block's routed output).
 * The mixed weights are not normalised: with one selected expert of weight g the mixed expert is g W, which
 * reproduces g E(x) only when g = 1 (a renormalised top-1); otherwise the error shows the scaling passing
 * through the nonlinearity, which is what MEO would compute.
 *
 * Experts with biases (gpt_oss: gate, up and down each have one) mix them with the same coefficients as their
 * matrices, bg = sum_j g_j bg_{s_j} and likewise bu and bd, and the mixed expert is the family's own,
 *     E_mixed(x) = D_mixed act(G_mixed x + bg, U_mixed x + bu) + bd,
 * act the expert's activation (for gpt_oss the clamped SwiGLU of io/model.h, applied to the mixed
 * pre-activations, so the clamp acts on the mixture, as it would in one real expert). A bias is an extra input
 * column of constant 1, so this is the same rule as for the matrices; with identical experts and weights
 * summing to 1 (gpt_oss renormalises its top-k) the mixed expert is the expert itself.
 *
 * Segment level (when segment ids are given): one expert per segment, its weights the mean over the segment's
 * tokens of their routing-weighted sums, i.e. sum_e gbar_e W_e with gbar_e the mean routing weight of slot e over
 * the segment (0 on tokens not selecting it), biases mixed the same way, applied to every token of the segment;
 * its error is |Y_mixed - Y|_F / |Y|_F over the segment's tokens.
 *
 * With Switch's expert capacity (routing.capacity > 0 and cfg->seq), routing is blk_route's: a dropped selection
 * has weight 0, so a token dropped by every selection has routed output 0 and an all-zero mixed expert (output 0
 * for every activation here), i.e. error 0, and it adds nothing to its segment's mean weights but its count.
 *
 * FLOPs per token (multiply-adds count 2; P = parameters of one expert, the router left out as it is the same
 * each way; element-wise work left out):
 *   k experts:       2 k P
 *   token MEO:       2 P  +  (2 k - 1) P      (one expert, plus mixing k matrices: k scales, k - 1 additions)
 *   segment MEO:     2 P  +  sum over segments of (2 n_s - 1) P  /  tokens, n_s = slots the segment uses
 * so token-level MEO never saves work and segment-level MEO saves it once segments are long. All figures are
 * means over the evaluated tokens. */
#ifndef MEO_MEO_H
#define MEO_MEO_H

#include <stdint.h>

#include "analysis/block.h"
#include "io/error.h"

/* Segments evaluated at most: when the evaluated tokens span more, this many are taken, evenly spaced in
 * ascending segment id order. Each segment costs a mixing pass over the weights of the experts it uses. */
#define MEO_MAX_SEGMENTS 64

/* Rows of the intermediate size f mixed per pass at segment level: a segment's expert is mixed and applied
 * MEO_MIX_ROWS rows of gate and up (and columns of down) at a time, which bounds the mixing buffer to
 * 3 * MEO_MIX_ROWS * d floats (12 MB at d = 4096) instead of a whole expert. */
#define MEO_MIX_ROWS 256

typedef struct {
	int64_t tokens;             /* tokens evaluated */
	int64_t segments;           /* segments evaluated; 0 without segment ids */
	double token_error_mean;
	double token_error_max;
	double segment_error_mean;  /* 0 without segment ids */
	double flops_experts;       /* per token, as above */
	double flops_token_meo;
	double flops_segment_meo;   /* 0 without segment ids */
} meo_result;

/* Runs the analysis for the block cfg (the original block, as blk_forward takes it; all experts of one shape and
 * with the same biases) on x [T, d], with segment_ids [T] or NULL. At most max_tokens tokens are used (all when
 * max_tokens <= 0, and always all when a capacity applies through cfg->seq [T], which counts over whole
 * sequences), the evenly spaced tokens floor(i T / max_tokens) as in blk_eval; a segment's mean weights and its error come
 * from its evaluated tokens. Where a routed output is zero, its error is the absolute |E_mixed(x) - y| instead.
 *
 * The token-level figure is computed without materialising a mixed expert per token: since the mixed gate and
 * up act linearly, gate_mixed x + bg = sum_j g_j (gate_{s_j} x + bg_{s_j}), and down_mixed h + bd =
 * sum_j g_j (down_{s_j} h + bd_{s_j}), so each
 * slot runs batched GEMMs over its tokens as in blk_forward. The segment level mixes whole matrices (saxpy) once
 * per segment and runs one expert over the segment's tokens. */
ms_status meo_analyze(const blk_config *cfg, const float *x, int64_t T, const int32_t *segment_ids,
		      int64_t max_tokens, meo_result *out, ms_error *err);

#endif
