/* A whole MoE block: its forward pass (router, top-k, experts) and the evaluation of a merged block against the
 * original on calibration tokens (docs/design.md §3.8).
 *
 * One configuration describes the original block and every merged layout: each router row dispatches to an
 * expert slot, so several rows may share a slot (the aliased layout: every member of a group routes to the
 * group's merged expert) and a row may be masked out of routing (an expert dropped by pruning).
 *
 *   original:  n_router = E,  slot[e] = e,         experts = the E experts
 *   aliased:   n_router = E,  slot[e] = group[e],  experts = the G merged experts (slot -1: dropped)
 *   compact:   n_router = E', slot[i] = i,         experts = the E' merged experts, router = the new rows
 *
 * Routing over the unmasked rows only: masked logits count as -inf, so they are never selected and take no part
 * in the softmax; top_k is capped at the number of unmasked rows. Ties go to the lower row index. */
#ifndef BLK_BLOCK_H
#define BLK_BLOCK_H

#include <stdint.h>

#include "analysis/expert.h"
#include "io/error.h"
#include "io/model.h"

typedef struct {
	int n_router;
	const float *router;            /* [n_router, d] */
	const int *slot;                /* [n_router]: the expert slot each router row dispatches to, -1 = masked */
	int n_slots;
	const expert_weights *experts;  /* [n_slots], each with width d */
	mdl_routing routing;
	int d;
	/* Family extensions (zero for the plain softmax top-k block the analysis sees): */
	const expert_weights *shared;   /* an expert every token also passes through, added after the routed ones
					 * (qwen2_moe's shared_expert, deepseek_v2's shared_experts), or NULL */
	const float *shared_gate;       /* [d]: the shared output is scaled by sigmoid(x . shared_gate) (qwen2_moe's
					 * shared_expert_gate), or NULL for 1 */
	float sparsemixer_eps;          /* > 0: PhiMoE's sparsemixer routing (eval mode, top-2, jitter eps) in place
					 * of softmax top-k */
	const int32_t *seq;             /* [T] the sequence of each token of the call (a run of equal ids is one
					 * sequence), or NULL: routing.capacity applies only with it */
} blk_config;

/* Tokens per expert_forward call: bounds the gather buffers and the experts' work space (a Mixtral-sized expert
 * needs about 60 MB for 512 tokens) while keeping each GEMM tall enough to run near peak. */
#define BLK_BATCH 512

/* PhiMoE's sparsemixer in eval mode (transformers modeling_phimoe.py), for every row of z [T, E]: the first
 * choice is the largest logit m1; its weight is softmax over the logits z_i with (m1 - z_i) / max(|z_i|, m1) <=
 * 2 eps, taken at the choice. The second is the largest logit m2 of the others, weighted the same way among the
 * others with m2 in place of m1. idx [T, 2], weight [T, 2] (may be NULL). Ties go to the lower index. */
void blk_sparsemixer(const float *z, int64_t T, int E, float eps, int *idx, float *weight);

/* Checks a configuration: sizes positive, pointers present, slots in -1..n_slots-1, at least one unmasked row,
 * every expert of width d with the matrices its activation needs. MS_ERR_ARG with a message naming the row or
 * slot otherwise. err may be NULL (as everywhere below). */
ms_status blk_check(const blk_config *cfg, ms_error *err);

/* The number of experts each token selects: routing.top_k capped at the unmasked rows (0 for a bad config). */
int blk_top_k(const blk_config *cfg);

/* Routing only: the selected router rows sel [T, k] (k = blk_top_k) in descending logit order and their routing
 * weights w [T, k] (may be NULL). Non-finite router logits give MS_ERR_NONFINITE naming the token. With a capacity
 * (routing.capacity > 0) and the tokens' sequences (cfg->seq), Switch's rule (transformers'
 * SwitchTransformersTop1Router): in each sequence, in token order, the first `capacity` selections of a router row
 * are kept and every later one is dropped, its weight set to 0, so the token's routed output is 0. */
ms_status blk_route(const blk_config *cfg, const float *x, int64_t T, int *sel, float *w, ms_error *err);

/* y [T, d] = the block's output on x [T, d]: for each token the sum over its k selected rows of the routing
 * weight times the output of the row's expert slot (rows sharing a slot add their weights), plus the (gated)
 * shared expert's output when the configuration has one. Tokens are taken 2048
 * at a time; in each round every slot runs one expert_forward per batch of up to BLK_BATCH of its gathered tokens
 * (one parallel task each), and each token's outputs are then added in slot order, so the sums do not depend on
 * the thread count. sel [T, k] and w [T, k] (k =
 * blk_top_k) receive the routing when not NULL. */
ms_status blk_forward(const blk_config *cfg, const float *x, int64_t T, float *y, int *sel, float *w,
		      ms_error *err);

/* The tokens of a routing grouped by expert slot: slot s gets token[start[s] .. start[s + 1]) in ascending token
 * order, each once, with weight = the sum of the token's routing weights over its rows that dispatch to s. */
typedef struct {
	int n_slots;
	int64_t *start;   /* [n_slots + 1] */
	int64_t *token;   /* [start[n_slots]] */
	float *weight;    /* [start[n_slots]] */
} blk_dispatch;

/* Builds the dispatch of sel [T, k] and w [T, k] (as from blk_route) for cfg; free with blk_dispatch_free.
 * MS_ERR_ARG for a selected row that is out of range or masked. */
ms_status blk_dispatch_build(const blk_config *cfg, const int *sel, const float *w, int64_t T, int k,
			     blk_dispatch *out, ms_error *err);
void blk_dispatch_free(blk_dispatch *dp);

/* Rows gathered and scattered by token index: dst [n, width] = the rows rows[0..n) of src [*, width]; and
 * dst [*, width] rows[i] += weight[i] * src [n, width] row i, in order of i. */
void blk_gather(const float *src, int64_t width, const int64_t *rows, int64_t n, float *dst);
void blk_scatter_add(const float *src, int64_t width, const int64_t *rows, const float *weight, int64_t n,
		     float *dst);

/* The deterministic subsample shared by blk_eval and meo_analyze: blk_subsample_count gives the tokens kept, n =
 * T when max_tokens <= 0 or T <= max_tokens, else max_tokens (at most INT32_MAX; -1 beyond); the i-th kept token
 * is floor(i T / n), evenly spaced from token 0. */
int64_t blk_subsample_count(int64_t T, int64_t max_tokens);
int64_t blk_subsample_index(int64_t i, int64_t T, int64_t n);

/* Parameters of one expert: its gate (when present), up and down matrices. */
int64_t blk_expert_params(const expert_weights *w);

/* Parameters of a block: the router, n_router * d, plus each distinct expert once; slots whose weights are the
 * same arrays (a compact layout padded with duplicates that share storage) count once. */
int64_t blk_params(const blk_config *cfg);

typedef struct {
	int64_t tokens;            /* tokens evaluated after subsampling */
	double rel_error;          /* |y - y'|_F / |y|_F (the absolute |y - y'|_F when y is 0) */
	double routing_agreement;  /* fraction of tokens whose set of selected groups is unchanged */
	int64_t params_before;     /* blk_params(orig) */
	int64_t params_after;      /* blk_params(merged) */
	/* Multiply-adds counted as 2 FLOPs, per token, mean over the evaluated tokens:
	 *   2 * n_router * d  (the router's logits)  +  sum over the k selected rows of 2 * blk_expert_params(slot).
	 * Element-wise work (softmax, activation, weighting) is left out: it is O(k f) against O(k f d). */
	double flops_before;
	double flops_after;
} blk_eval_result;

/* Evaluates merged against orig on x [T, d]: at most max_tokens tokens (all when max_tokens <= 0 or T <=
 * max_tokens; otherwise the evenly spaced tokens floor(i T / max_tokens)), y = orig's output, y' = merged's.
 *
 * Routing agreement compares, per token, the set of groups the original selection reaches with the set the
 * merged selection reaches: an original row r reaches group_of_orig[orig->slot[r]] (group_of_orig [orig->n_slots]:
 * the plan's groups, -1 for a dropped expert, which the merged block can never reach); a merged row r reaches
 * slot_group[merged->slot[r]], where slot_group [merged->n_slots] says which group each slot holds, or, when
 * NULL, slot s holds group s (the aliased layout, and a compact layout without padding). */
ms_status blk_eval(const blk_config *orig, const blk_config *merged, const int *group_of_orig,
		   const int *slot_group, const float *x, int64_t T, int64_t max_tokens, blk_eval_result *out,
		   ms_error *err);

/* blk_eval in two halves, so that the original block's outputs can be computed before it is merged in place and
 * its experts are gone: the reference holds the evaluated tokens, the original's outputs and selections (n = the
 * subsample, [n, d] floats twice), and blk_eval_against measures a merged block against it. blk_eval is exactly
 * the two in a row. */
typedef struct {
	int64_t n;          /* evaluated tokens */
	int d, ko;          /* width; the original's top-k */
	int n_router;
	float *xs;          /* [n, d] the evaluated tokens */
	float *y;           /* [n, d] the original's outputs */
	int *so;            /* [n, ko] the original's selected rows */
	int *slot;          /* [n_router] the original's row-to-slot map */
	int32_t *seq;       /* [n] the tokens' sequences when a capacity applies (then every token is evaluated, in one
			     * pass, as the capacity counts over whole sequences), else NULL */
	int64_t chunk;      /* tokens per forward pass */
	double flops;       /* summed over the tokens, as blk_eval_result counts them */
	int64_t params;     /* blk_params of the original */
} blk_eval_ref;

/* With a capacity and orig->seq (the sequences of x), every token is evaluated, in one pass, and the merged block
 * is measured with the same sequences. */
ms_status blk_eval_reference(const blk_config *orig, const float *x, int64_t T, int64_t max_tokens,
			     blk_eval_ref *ref, ms_error *err);
ms_status blk_eval_against(const blk_eval_ref *ref, const blk_config *merged, const int *group_of_orig,
			   const int *slot_group, blk_eval_result *out, ms_error *err);
void blk_eval_ref_free(blk_eval_ref *ref);

#endif
