/* The per-block pipeline the commands and the interactive application share: load one MoE block (router,
 * experts, calibration inputs) as float32, compute its statistics, group its experts into a plan, build the
 * merged block a plan implies and evaluate it. One block is in memory at a time; the caller frees each block
 * before loading the next (docs/design.md §7: peak memory is one block's experts in float32 plus its calibration). */
#ifndef PIPE_PIPELINE_H
#define PIPE_PIPELINE_H

#include <stdint.h>

#include "analysis/align.h"
#include "analysis/block.h"
#include "analysis/compress.h"
#include "analysis/expert.h"
#include "analysis/grouping.h"
#include "analysis/merge.h"
#include "analysis/refit.h"
#include "analysis/router_fit.h"
#include "analysis/similarity.h"
#include "analysis/stable_rank.h"
#include "io/names.h"
#include "io/calib.h"
#include "io/error.h"
#include "io/model.h"
#include "io/plan.h"

/* How the calibration tokens of a block are split between fitting and evaluation: X(value, name, help) rows. */
#define PIPE_SPLIT_TABLE(X) \
	X(PIPE_SPLIT_SEGMENTS, "segments", "held out: the sequences whose segment id is 3 mod 4; fits: the others") \
	X(PIPE_SPLIT_FIXED,    "fixed",    "held out: the last quarter of the tokens; fits: the first three quarters") \
	X(PIPE_SPLIT_NONE,     "none",     "fewer than PIPE_SPLIT_MIN tokens: fits and evaluation both use them all")

typedef enum {
	PIPE_SPLIT_TABLE(NAMES_X_ENUM)
	PIPE_SPLIT_COUNT
} pipe_split;

extern const char *const pipe_split_names[PIPE_SPLIT_COUNT];
extern const char *const pipe_split_help[PIPE_SPLIT_COUNT];
const char *pipe_split_name(pipe_split s);  /* "?" when out of range */

/* Fewest tokens that are split. */
#define PIPE_SPLIT_MIN 8

/* Splits T tokens: by segment ids seg [T] (may be NULL) when both sides get tokens, else the fixed split, or none
 * below PIPE_SPLIT_MIN tokens (then both lists hold every token). fit_idx and held_idx have room for T each. */
pipe_split pipe_split_tokens(const int32_t *seg, int64_t T, int64_t *fit_idx, int64_t *n_fit, int64_t *held_idx,
			     int64_t *n_held);

/* One block's data in float32. */
typedef struct {
	int block;               /* index into mdl_model.blocks */
	int E, d, f;
	int64_t T;               /* calibration tokens (0 when loaded without calibration) */
	mdl_act act;
	mdl_routing routing;
	float *router;           /* [E, d] */
	float *score_bias;       /* [E] e_score_correction_bias (routing.score_bias points here), or NULL */
	st_dtype score_bias_dtype;
	float *router_bias;      /* [E] the router's logit bias (routing.logit_bias points here), or NULL */
	st_dtype router_bias_dtype;
	int expert_bias;         /* experts carry biases, stored after their matrices (expert_weights' *_bias) */
	float *weights;          /* [E, per_expert]: gate [f, d] (absent without a gate), up [f, d], down [d, f],
				  * then with expert_bias gate bias [f], up bias [f], down bias [d] */
	int64_t per_expert;      /* floats per expert in weights */
	expert_weights *experts; /* [E]: views into weights */
	float *x;                /* [T, d] calibration inputs, NULL when T == 0 */
	int *identity;           /* [E]: identity[e] = e, the original block's router-row-to-expert map */
	st_dtype expert_dtype;   /* how the checkpoint stores experts and router: merged weights are rounded to */
	st_dtype router_dtype;   /* these, so a preview computes exactly what a written checkpoint will */
	int quant_block[2];      /* F8_E4M3 experts: the weight_block_size their merged matrices are quantized in, */
	st_dtype quant_scale_dtype[MDL_NMAT]; /* and the dtype of gate, up and down's weight_scale_inv */
	st_dtype expert_bias_dtype; /* U8 (MXFP4) experts: the dtype of their biases, which stay float */
	/* The calibration tokens split in two (pipe_split_tokens): fits (router choice, refit) use the fit tokens,
	 * evaluation the held-out ones, so the reported error is measured on tokens no fit has seen. */
	int64_t n_fit, n_held;
	int64_t *fit_idx;        /* [n_fit] ascending */
	int64_t *held_idx;       /* [n_held] ascending */
	pipe_split split;
	int32_t *seg;            /* [T] the calibration tokens' segment ids (their sequences), NULL without them */
	/* The family's additions (io/arch.h), loaded with the block so that its evaluation and fits see the whole
	 * block output: the shared expert (shared.f = 0 when there is none; never merged, the same before and after),
	 * the gate of its output, and PhiMoE's sparsemixer routing (0: softmax top-k). */
	expert_weights shared;
	float *shared_weights;   /* gate [fs, d], up [fs, d], down [d, fs] that shared views, or NULL */
	float *shared_gate;      /* [d] qwen2_moe's shared_expert_gate, or NULL */
	float sparsemixer_eps;
} pipe_block;

/* Loads block b; cal may be NULL (then x is NULL and T is 0). */
ms_status pipe_load_block(const mdl_model *m, const calib *cal, int b, pipe_block *out, ms_error *err);
/* Frees a block. Its float32 experts are kept for the next pipe_load_block of the same size (one buffer at most),
 * which then skips the kernel's zeroing of fresh pages; pipe_release_spare gives that buffer back. */
void pipe_free_block(pipe_block *blk);
void pipe_release_spare(void);

/* Gives a block loaded without calibration the tokens x [T, d] (borrowed: set blk->x back to NULL and T to 0
 * before freeing) and splits them as a calibration set with segment ids seg [T] (may be NULL) would be, so that a
 * merge in memory equals the merge of a set captured from the same tokens. */
ms_status pipe_set_tokens(pipe_block *blk, float *x, int64_t T, const int32_t *seg, ms_error *err);

/* What pipe_analyze_block computes. */
typedef struct {
	unsigned bases;         /* bit (1u << sim_base) for each similarity base wanted */
	int stable_ranks;       /* compute the stable rank of every expert matrix */
	int reap;               /* compute REAP saliency (needs an expert forward on every routed token) */
	double srank_tol;       /* relative accuracy of sigma_max; 0 for 1e-4 */
} pipe_analyze_options;

/* One block's statistics. Arrays the options did not ask for are NULL. */
typedef struct {
	int E;
	int64_t T;
	double *frequency;                     /* [E] usage frequency (top-k selections / k T) */
	double *coact;                         /* [E, E] co-activation counts */
	double usage_entropy;                  /* bits */
	double cv;                             /* coefficient of variation of frequency */
	double *similarity[SIM_BASE_COUNT];    /* [E, E] per base */
	double *distance[SIM_BASE_COUNT];      /* [E, E] clustering distance per base */
	double *stable_rank;                   /* [E, MDL_NMAT]: gate, up, down (NAN without a gate) */
	double *reap;                          /* [E] */
} pipe_stats;

/* Statistics of a loaded block. Without calibration tokens (T == 0) only what weights alone give is computed:
 * the router-weight and weight similarities and the stable ranks (frequency, coact stay NULL); asking for more is
 * MS_ERR_ARG. */
ms_status pipe_analyze_block(const pipe_block *blk, const pipe_analyze_options *o, pipe_stats *out, ms_error *err);
void pipe_free_stats(pipe_stats *s);

/* Stable ranks of every matrix of n experts into sr [n, MDL_NMAT] (NAN where the family has no gate), sigma_max to
 * relative accuracy tol. */
ms_status pipe_stable_ranks(const expert_weights *experts, int n, double tol, double *sr, ms_error *err);

/* How a plan is made from every block's statistics. */
typedef struct {
	grp_method method;
	grp_linkage linkage;
	sim_base base;
	int groups;                    /* G per block, or the average with global */
	int global;                    /* MC-SMoE global allocation of the average G */
	const unsigned char *merge;    /* [n_blocks]: 1 for the blocks to merge; NULL merges all */
	const int *block_groups;       /* [n_blocks]: G of each block, overriding groups/global; NULL for none */
} pipe_plan_options;

/* Fills p (already plan_init'ed for the model) from stats [n_blocks]. Blocks not merged keep every expert as its
 * own group. The similarity and stable rank columns come from the stats when present. */
ms_status pipe_make_plan(const pipe_stats *stats, int n_blocks, const pipe_plan_options *o, plan *p,
			 ms_error *err);

/* A compact checkpoint has one expert count for every block (stock configs know one), so a block planned with
 * fewer groups than that count would be padded with copies. Instead its groups are split until it has `target`:
 * repeatedly, the group with the most members (the least coherent on ties: lowest mean similarity of its members
 * to their dominant, NaN counted as 0) gives up its member least similar to the dominant (the more used on ties)
 * as a new group of its own, labelled next; when every group is a single expert, the most used dropped expert
 * comes back instead. Same bytes as the copies, no wasted top-k slots. A block that keeps no expert is left as
 * it is (the merge refuses it). MS_ERR_ARG when target is outside
 * plan_groups(p, b)..the experts kept and droppable. */
ms_status pipe_fill_groups(plan *p, int b, int target, ms_error *err);

/* The compact layout's expert count for plan p (E'): the largest group count of its blocks. */
int pipe_plan_slots(const plan *p);
/* Every block of p split up to pipe_plan_slots(p) groups: the plan a compact checkpoint is written with (merge_run,
 * `eval --plan`, `perplexity --plan` and the application's model line all use it). *slots (may be NULL) gets E'. */
ms_status pipe_fill_plan(plan *p, int *slots, ms_error *err);

/* The compact router rows [G, d] of one row method for block b of plan p (rfit_rows), and with a router logit bias
 * (gpt_oss) each group's bias [G] by the same rule (docs/design.md §4.3; bias may be NULL only without one);
 * residual [G] may be NULL (needs calibration tokens). */
ms_status pipe_router_fit(const pipe_block *blk, const plan *p, int b, rfit_method method, float *rows,
			  float *bias, double *residual, ms_error *err);

/* The block as analysis/block.h sees it: every router row dispatching to its own expert, with the family's shared
 * expert and routing. */
blk_config pipe_block_config(const pipe_block *blk);

/* How the merged block is laid out (docs/design.md §4.3). */
/* X(value, name, help) rows (io/names.h). */
#define PIPE_LAYOUT_TABLE(X) \
	X(PIPE_LAYOUT_COMPACT, "compact", "E' experts per block, router rows rewritten (the default)") \
	X(PIPE_LAYOUT_ALIASED, "aliased", "every member stores its group's merge, router unchanged (MC-SMoE)")

typedef enum {
	PIPE_LAYOUT_TABLE(NAMES_X_ENUM)
	PIPE_LAYOUT_COUNT
} pipe_layout;

/* The table's names and help lines, indexed by pipe_layout. */
extern const char *const pipe_layout_names[PIPE_LAYOUT_COUNT];
extern const char *const pipe_layout_help[PIPE_LAYOUT_COUNT];
const char *pipe_layout_name(pipe_layout l); /* "?" when out of range */
int pipe_layout_parse(const char *name);   /* the pipe_layout called name, or -1 */

/* Recovery after merging (analysis/refit.h): X(value, name, help) rows. */
#define PIPE_REFIT_TABLE(X) \
	X(PIPE_REFIT_DOWN, "down", "refit each merged expert's down projection to the original block's output on the " \
				   "fit tokens (the default; compact layout with calibration, no compression)") \
	X(PIPE_REFIT_NONE, "none", "keep the merged down projections")

typedef enum {
	PIPE_REFIT_TABLE(NAMES_X_ENUM)
	PIPE_REFIT_COUNT
} pipe_refit;

extern const char *const pipe_refit_names[PIPE_REFIT_COUNT];
extern const char *const pipe_refit_help[PIPE_REFIT_COUNT];
const char *pipe_refit_name(pipe_refit r);  /* "?" when out of range */

/* Fit tokens used at most (evenly subsampled from the block's fit tokens; all of them when a capacity counts over
 * their sequences). */
#define PIPE_FIT_TOKENS 4096

typedef struct {
	pipe_layout layout;
	merge_weighting weighting;
	align_ref align;
	rfit_method router;     /* RFIT_AUTO: chosen per block by the routed output error on the fit tokens */
	pipe_refit refit;
	cmp_options compress;   /* applied to every matrix of every merged expert of a block that merges */
	int slots;              /* compact: E' >= the block's group count (0: the block's own count) */
	int keep_factors;       /* keep the low-rank factors and sparse residual of every compressed matrix */
} pipe_merge_options;

/* The defaults of `moescope merge`: compact, frequency weighting, dominant alignment, lse-fit, no compression. */
pipe_merge_options pipe_merge_defaults(void);

/* A merged block: n_slots experts and the router that dispatches to them. */
typedef struct {
	int n_slots;
	int per_expert;           /* floats per expert, as pipe_block */
	float *weights;           /* [n_slots, per_expert] */
	expert_weights *experts;  /* [n_slots]: views into weights */
	int *slot_group;          /* [n_slots]: the plan group each slot holds */
	int n_router;
	float *router;            /* [n_router, d]: compact: fitted rows; aliased: the original router */
	float *score_bias;        /* [n_router] compact layout of a block with a score bias: each slot's group's
				   * dominant's bias (docs/design.md §4.3); NULL otherwise (aliased keeps the block's) */
	float *router_bias;       /* [n_router] compact layout of a block with a router bias: each slot's bias, made by
				   * the row method as if it were one more router column fed a constant 1 (docs/design.md
				   * §4.3); NULL otherwise (aliased keeps the block's) */
	int *slot;                /* [n_router]: slot each router row dispatches to, -1 for a dropped expert */
	int groups;               /* G of the block */
	double *router_residual;  /* [groups]: compact router fit residual on the calibration tokens (NAN if none) */
	pipe_layout layout;
	rfit_method router_used;  /* compact: the row method the router was made with (auto's choice) */
	double router_error[RFIT_ROW_METHODS]; /* compact with auto: each method's routed output error on the fit
						* tokens before any refit; NAN where not measured */
	int refitted;             /* 1 when the down projections were refitted */
	int refit_skipped;        /* 1 when a refit was asked for but its normal matrices would not fit in memory */
	double fit_error_merged;  /* routed output error on the fit tokens before and after the refit (NAN if none) */
	double fit_error_refit;
	int64_t fit_tokens;       /* fit tokens used (0: none) */
	cmp_result *compression;  /* [n_slots * MDL_NMAT] when compressing, else NULL */
	cmp_factors *factors;     /* [groups * MDL_NMAT] with keep_factors: buffers owned here, sized to the rank and
				   * residual chosen; u and v NULL where a matrix was not compressed */
	blk_config cfg;           /* ready for blk_forward / blk_eval */
	qt_error requant[MDL_NMAT]; /* F8_E4M3 and MXFP4 (U8) experts: how far rounding the merged gate, up and down matrices to
				     * FP8 blocks moved them (over the groups, and the slots for a refitted down) */
} pipe_merged;

/* Builds block b's merged experts and router from plan p (groups, dominants and frequencies of the block).
 * lse-fit needs blk's calibration inputs. */
ms_status pipe_merge_block(const pipe_block *blk, const plan *p, int b, const pipe_merge_options *o,
			   pipe_merged *out, ms_error *err);
void pipe_free_merged(pipe_merged *mg);

/* The same merged block, bit for bit, built in the block's own storage: every member is aligned where it lies and
 * each group's merge is written over its target member (the one holding the alignment reference, else the
 * dominant), so the merged experts take no memory beside the block (a compact layout's padding copies aside).
 * This consumes blk's experts: afterwards blk is only good for its router, its calibration inputs, and freeing
 * (after the merged block, whose experts point into it). Evaluate against a blk_eval_reference taken before. */
ms_status pipe_merge_block_in_place(pipe_block *blk, const plan *p, int b, const pipe_merge_options *o,
				    pipe_merged *out, ms_error *err);

/* Parameters of the merged experts' matrices before and after compression, counting each group once (the
 * convention of cmp_result: a residual entry counts as an index and a value). 0 and 0 without compression. */
void pipe_compressed_params(const pipe_merged *mg, int64_t *before, int64_t *after);

/* Evaluates a merged block against the original on at most max_tokens calibration tokens. */
ms_status pipe_eval_block(const pipe_block *blk, const pipe_merged *mg, const plan *p, int b, int64_t max_tokens,
			  blk_eval_result *out, ms_error *err);
/* The same in two halves: the original's side first (before an in-place merge), then the merged block's. */
ms_status pipe_eval_reference(const pipe_block *blk, const plan *p, int b, int64_t max_tokens, blk_eval_ref *ref,
			      ms_error *err);
ms_status pipe_eval_against(const blk_eval_ref *ref, const pipe_block *blk, const pipe_merged *mg, const plan *p,
			    int b, blk_eval_result *out, ms_error *err);

/* |y|_F of a block configuration's output on the same deterministic subsample blk_eval uses (at most max_tokens
 * of x [T, d]): lets a merged checkpoint opened as a model be compared with the merge previewed on the original.
 * With a capacity and cfg->seq (the sequence of each of the T tokens), every token goes through, with the drops. */
ms_status pipe_output_norm(const blk_config *cfg, const float *x, int64_t T, int64_t max_tokens, double *norm,
			   ms_error *err);

#endif
