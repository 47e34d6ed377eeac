/* The per-block budget search (docs/design.md §3.10): given how many experts a model may keep over all its MoE
 * blocks, find the group count of each block whose merged model stays closest to the original, measured by the
 * KL divergence of the next-token distributions on held-out tokens.
 *
 * Two stages. A cheap proxy first: one streaming forward pass (pipeline/forward.h) runs the original model beside
 * a reference merge (uniform G at the budget); at every MoE block each candidate group count G is merged (as
 * `moescope merge` would) and its error is measured on the inputs the merged stream brings to that block, so the
 * error of earlier merged blocks is part of what each block sees. The proxy of (block b, G) is
 * |y_b(x~) - y_b,G(x~)|^2 / |h~|^2 on the block's held-out tokens: the squared perturbation the merged block adds,
 * relative to the residual stream it is added to (x~ the merged stream's block input, h~ its residual). A k-best
 * dynamic programme over blocks then gives the allocations of least summed proxy within the budget. The model
 * second: the best few by proxy, uniform G and MC-SMoE's global allocation at the same average, and a few random
 * allocations (for the rank correlation of proxy and KL) each run the whole model forward; the plan returned is
 * the confirmed allocation of least held-out KL.
 *
 * Everything that can be reused is kept in an srch_cache: every block's statistics (they depend only on the
 * tokens), every proxy by (block, G, options, the reference allocation of the blocks before it), every confirmed
 * allocation's figures by (allocation, options); a later search on the same model and tokens, at another budget,
 * merges only what it has not measured. One layer's weights are resident, plus the block being measured and one
 * candidate merge of it. */
#ifndef SRCH_SEARCH_H
#define SRCH_SEARCH_H

#include <stdatomic.h>
#include <stdint.h>

#include "pipeline/forward.h"
#include "pipeline/pipeline.h"
#include "io/arch.h"
#include "io/error.h"
#include "io/plan.h"
#include "io/tokens.h"

/* Why an allocation was confirmed: X(value, name, help) rows (io/names.h). */
#define SRCH_KIND_TABLE(X) \
	X(SRCH_UNIFORM, "uniform", "the same G in every block, G = floor(budget / blocks)") \
	X(SRCH_GLOBAL,  "global",  "MC-SMoE's global allocation of the same average G by usage frequency") \
	X(SRCH_PROXY,   "proxy",   "among the allocations of least summed proxy within the budget") \
	X(SRCH_SAMPLE,  "sample",  "a random allocation of the whole budget, for the rank correlation")

typedef enum {
	SRCH_KIND_TABLE(NAMES_X_ENUM)
	SRCH_KIND_COUNT
} srch_kind;

extern const char *const srch_kind_names[SRCH_KIND_COUNT];
const char *srch_kind_name(srch_kind k);  /* "?" when out of range */

/* Called as the search goes: stage "proxy" (MoE blocks measured of n_blocks) or "confirm" (allocations run of
 * those planned). */
typedef void (*srch_progress_fn)(void *ctx, const char *stage, int done, int total);

typedef struct {
	pipe_plan_options po;        /* method, linkage, base; groups, global, merge and block_groups are ignored */
	pipe_merge_options mo;       /* every block merged with its own count (slots is ignored) */
	int keep;                    /* experts kept over all MoE blocks: the budget, n_blocks..n_blocks * E */
	int confirm;                 /* allocations of least proxy confirmed by the forward pass (>= 1) */
	int samples;                 /* random allocations also confirmed (>= 0) */
	int max_candidates;          /* group counts measured per block: all of 1..E when E is at most this, else
				      * this many spread over 1..E (the uniform G and G + 1 always among them) */
	uint64_t seed;               /* of the random allocations */
	double time_limit;           /* seconds, 0 for none: the search stops at the first check past it */
	srch_progress_fn progress;
	void *progress_ctx;
	const atomic_int *cancel;    /* NULL, or set by another thread to stop: MS_ERR_INTERRUPTED */
} srch_options;

/* Defaults: msmoe on router-logits, `moescope merge`'s merge options, 4 confirmed, 4 samples, 16 candidates. */
srch_options srch_defaults(void);

/* One allocation and what was measured of it. */
typedef struct {
	srch_kind kind;
	int *groups;          /* [n_blocks] */
	int kept;             /* sum of groups */
	double proxy;         /* summed proxy; NAN when a count of it was not measured */
	int confirmed;        /* 1 when the forward pass ran (the figures below are set) */
	double kl;            /* held-out tokens: mean KL(original || merged) */
	double ppl;           /* perplexity of the merged model */
	double top1;          /* top-1 agreement with the original */
} srch_candidate;

typedef struct {
	int n_blocks, n_experts;
	int keep;
	int n_cand;
	srch_candidate *cand;       /* [n_cand]: uniform, global (when it exists), proxy order, samples */
	int best;                   /* index of the returned allocation: least KL among the confirmed */
	int uniform, global;        /* indices, or -1 (global: when MC-SMoE's allocation is undefined here) */
	int n_candidates;           /* group counts measured per block */
	double *proxy;              /* [n_blocks, n_experts]: proxy of (b, G) at b * n_experts + G - 1, NAN if not
				     * measured */
	double spearman;            /* rank correlation of proxy and KL over the confirmed allocations with a proxy;
				     * NAN below 3 of them */
	int n_ranked;               /* allocations it was computed over */
	double ppl_original;        /* held-out perplexity of the original model */
	int64_t held_tokens;        /* held-out tokens the figures are means over */
	int merges;                 /* candidate blocks merged by this search (the rest came from the cache) */
	int forwards;               /* forward passes run by this search */
	int timed_out;              /* 1 when the time limit cut the confirmation short */
	plan plan;                  /* the best allocation's plan (every block its own count, not filled) */
} srch_result;

typedef struct srch_cache srch_cache;

/* A cache for searches on one model and one token set (both must outlive it). */
ms_status srch_cache_new(const arch_model *a, const tok_set *tok, srch_cache **out, ms_error *err);
void srch_cache_free(srch_cache *c);

/* Runs a search. The held-out tokens are those pipe_split_tokens holds out with each sequence its own segment.
 * MS_ERR_ARG for a budget outside n_blocks..n_blocks * E or bad options; MS_ERR_INTERRUPTED when cancelled, or
 * when the time limit passes before the proxy pass and one confirmation are done. */
ms_status srch_run(srch_cache *c, const srch_options *o, srch_result *out, ms_error *err);
void srch_result_free(srch_result *r);

/* The plan of an allocation: every block grouped by o's method into groups [n_blocks] (statistics from the
 * cache; call after a srch_run on it). p is plan_init'ed for the model. */
ms_status srch_make_plan(srch_cache *c, const srch_options *o, const int *groups, plan *p, ms_error *err);

/* The figure of a search: held-out KL against experts kept for every confirmed allocation, one marker colour per
 * kind, the returned one ringed (pipeline/search_svg.c). Reads keep, n_blocks, n_experts, best and each candidate's
 * kind, kept, confirmed and kl. Returns malloc'd SVG text, or NULL when out of memory. */
char *srch_chart_svg(const srch_result *r);

/* Spearman's rank correlation of x and y [n] (average ranks for ties); NAN when n < 2 or a side is constant. */
double srch_spearman(const double *x, const double *y, int n);

/* The k allocations of least summed cost within the budget (exact, by dynamic programming over blocks):
 * cost [n_blocks, n_experts] (cost of G in block b at b * n_experts + G - 1; NAN for a count not allowed),
 * sum of G at most keep. alloc [k, n_blocks] receives them best first, costs [k] their sums (ties: the
 * allocation found first, scanning G upwards block by block). Returns how many exist (<= k), or -1 when out of
 * memory. */
int srch_best_allocations(const double *cost, int n_blocks, int n_experts, int keep, int k, int *alloc,
			  double *costs);

#endif
