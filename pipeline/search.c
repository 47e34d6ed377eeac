/* The per-block budget search (pipeline/search.h). */
#include "pipeline/search.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "analysis/block.h"

/* Held-out tokens of a block the proxy is measured on at most (evenly subsampled). */
#define SRCH_PROXY_TOKENS 1024
/* Random allocations tried per sample wanted before giving up on finding new ones. */
#define SRCH_SAMPLE_TRIES 16

const char *const srch_kind_names[SRCH_KIND_COUNT] = { SRCH_KIND_TABLE(NAMES_X_NAME) };

const char *srch_kind_name(srch_kind k)
{
	return names_at(srch_kind_names, SRCH_KIND_COUNT, (int)k);
}

srch_options srch_defaults(void)
{
	srch_options o = {
		.po = {.method = GRP_MSMOE, .linkage = GRP_LINK_AVERAGE, .base = SIM_ROUTER_LOGITS},
		.mo = pipe_merge_defaults(), .confirm = 4, .samples = 4, .max_candidates = 16, .seed = 1,
	};
	return o;
}

/* ---- the cache ---------------------------------------------------------------------------------------------- */

typedef struct {
	int b, G;
	uint64_t key;            /* the options and the reference allocation of the blocks before b */
	double value;
} proxy_entry;

typedef struct {
	uint64_t key;            /* the options */
	int *groups;             /* [n_blocks] */
	double kl, ppl, top1;
} confirm_entry;

struct srch_cache {
	const arch_model *a;
	const tok_set *tok;
	int n_blocks, E;
	pipe_stats *stats;       /* [n_blocks] */
	unsigned *stats_bases;   /* [n_blocks]: similarity bases computed, bit per base; stats absent when no bit
				  * and no frequency */
	unsigned char *stats_reap;  /* [n_blocks] */
	proxy_entry *px;
	int n_px, cap_px;
	confirm_entry *cf;
	int n_cf, cap_cf;
	int64_t *held;           /* [n_held] held-out token indices */
	int64_t n_held;
	int have_original;
	double ppl_original;     /* held-out perplexity of the original */
	int64_t held_predicted;  /* held-out tokens with a next token: what the figures are means over */
};

ms_status srch_cache_new(const arch_model *a, const tok_set *tok, srch_cache **out, ms_error *err)
{
	*out = NULL;
	if (!a || !tok || tok->T <= 0)
		return ms_fail(err, MS_ERR_ARG, "search: no model or no tokens");
	srch_cache *c = calloc(1, sizeof *c);
	int32_t *seg = malloc((size_t)tok->T * sizeof *seg);   /* [T] each sequence its own segment */
	int64_t *fit = malloc((size_t)tok->T * sizeof *fit);
	if (c) {
		c->a = a;
		c->tok = tok;
		c->n_blocks = a->m->n_blocks;
		c->E = a->m->n_experts;
		c->stats = calloc((size_t)c->n_blocks, sizeof *c->stats);
		c->stats_bases = calloc((size_t)c->n_blocks, sizeof *c->stats_bases);
		c->stats_reap = calloc((size_t)c->n_blocks, 1);
		c->held = malloc((size_t)tok->T * sizeof *c->held);
	}
	if (!c || !seg || !fit || !c->stats || !c->stats_bases || !c->stats_reap || !c->held) {
		free(seg);
		free(fit);
		srch_cache_free(c);
		return ms_fail(err, MS_ERR_NOMEM, "search: out of memory");
	}
	for (int i = 0; i < tok->n_seq; i++)
		for (int64_t t = tok->seq_start[i]; t < tok->seq_start[i + 1]; t++)
			seg[t] = i;
	int64_t n_fit;
	pipe_split_tokens(seg, tok->T, fit, &n_fit, c->held, &c->n_held);
	free(seg);
	free(fit);
	*out = c;
	return MS_OK;
}

void srch_cache_free(srch_cache *c)
{
	if (!c)
		return;
	for (int b = 0; c->stats && b < c->n_blocks; b++)
		pipe_free_stats(&c->stats[b]);
	free(c->stats);
	free(c->stats_bases);
	free(c->stats_reap);
	free(c->px);
	for (int i = 0; i < c->n_cf; i++)
		free(c->cf[i].groups);
	free(c->cf);
	free(c->held);
	free(c);
}

/* FNV-1a over the bytes of a value (only scalars: no padding is hashed). */
static uint64_t mix(uint64_t h, const void *v, size_t n)
{
	const unsigned char *p = v;
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

#define MIX(h, v) ((h) = mix((h), &(v), sizeof(v)))

/* Everything of the options that changes a plan or a merged block. */
static uint64_t options_key(const srch_options *o)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	const int ints[] = {(int)o->po.method, (int)o->po.linkage, (int)o->po.base, (int)o->mo.layout,
			    (int)o->mo.weighting, (int)o->mo.align, (int)o->mo.router, (int)o->mo.refit,
			    (int)o->mo.compress.mode, o->mo.compress.rank};
	const double dbls[] = {o->mo.compress.energy, o->mo.compress.stable_k, o->mo.compress.stable_rank,
			       o->mo.compress.sparse_ratio};
	for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
		MIX(h, ints[i]);
	for (size_t i = 0; i < sizeof dbls / sizeof dbls[0]; i++)
		MIX(h, dbls[i]);
	return h;
}

static const proxy_entry *proxy_find(const srch_cache *c, int b, int G, uint64_t key)
{
	for (int i = 0; i < c->n_px; i++)
		if (c->px[i].b == b && c->px[i].G == G && c->px[i].key == key)
			return &c->px[i];
	return NULL;
}

static ms_status proxy_add(srch_cache *c, int b, int G, uint64_t key, double value, ms_error *err)
{
	if (c->n_px == c->cap_px) {
		const int cap = c->cap_px ? 2 * c->cap_px : 64;
		proxy_entry *px = realloc(c->px, (size_t)cap * sizeof *px);
		if (!px)
			return ms_fail(err, MS_ERR_NOMEM, "search: out of memory");
		c->px = px;
		c->cap_px = cap;
	}
	c->px[c->n_px++] = (proxy_entry){.b = b, .G = G, .key = key, .value = value};
	return MS_OK;
}

static const confirm_entry *confirm_find(const srch_cache *c, const int *groups, uint64_t key)
{
	for (int i = 0; i < c->n_cf; i++)
		if (c->cf[i].key == key && memcmp(c->cf[i].groups, groups, (size_t)c->n_blocks * sizeof *groups) == 0)
			return &c->cf[i];
	return NULL;
}

static ms_status confirm_add(srch_cache *c, const int *groups, uint64_t key, const srch_candidate *cd,
			     ms_error *err)
{
	if (c->n_cf == c->cap_cf) {
		const int cap = c->cap_cf ? 2 * c->cap_cf : 16;
		confirm_entry *cf = realloc(c->cf, (size_t)cap * sizeof *cf);
		if (!cf)
			return ms_fail(err, MS_ERR_NOMEM, "search: out of memory");
		c->cf = cf;
		c->cap_cf = cap;
	}
	int *g = malloc((size_t)c->n_blocks * sizeof *g);
	if (!g)
		return ms_fail(err, MS_ERR_NOMEM, "search: out of memory");
	memcpy(g, groups, (size_t)c->n_blocks * sizeof *g);
	c->cf[c->n_cf++] = (confirm_entry){.key = key, .groups = g, .kl = cd->kl, .ppl = cd->ppl, .top1 = cd->top1};
	return MS_OK;
}

/* What the grouping method needs of a block's statistics (as `moescope plan` computes them). */
static pipe_analyze_options stats_needed(const srch_options *o)
{
	const int prune = o->po.method == GRP_PRUNE_FREQUENCY || o->po.method == GRP_PRUNE_REAP;
	pipe_analyze_options ao = {.bases = prune ? 0u : 1u << o->po.base, .reap = o->po.method == GRP_PRUNE_REAP,
				   .srank_tol = 1e-4};
	return ao;
}

static int stats_ready(const srch_cache *c, int b, const pipe_analyze_options *ao)
{
	return c->stats[b].frequency && (c->stats_bases[b] & ao->bases) == ao->bases &&
	       (!ao->reap || c->stats_reap[b]);
}

/* Block b's statistics on the tokens blk holds, unless the cache has what ao asks for. */
static ms_status ensure_stats(srch_cache *c, const pipe_block *blk, int b, const pipe_analyze_options *ao,
			      ms_error *err)
{
	if (stats_ready(c, b, ao))
		return MS_OK;
	pipe_analyze_options want = *ao;
	want.bases |= c->stats_bases[b];   /* keep what an earlier search computed */
	want.reap |= c->stats_reap[b];
	pipe_free_stats(&c->stats[b]);
	c->stats_bases[b] = 0;
	c->stats_reap[b] = 0;
	ms_status st = pipe_analyze_block(blk, &want, &c->stats[b], err);
	if (st != MS_OK)
		return st;
	c->stats_bases[b] = want.bases;
	c->stats_reap[b] = (unsigned char)want.reap;
	return MS_OK;
}

/* Writes block b's rows of dst (a plan for the whole model) for G groups by o's method. */
static ms_status block_rows(const srch_cache *c, const srch_options *o, int b, int G, plan *dst, ms_error *err)
{
	const char *label = c->a->m->blocks[b].label;
	plan one = {0};
	if (plan_init(&one, 1, c->E, &label) != 0)
		return ms_fail(err, MS_ERR_NOMEM, "search: out of memory");
	pipe_plan_options po = o->po;
	po.groups = G;
	po.global = 0;
	po.merge = NULL;
	po.block_groups = NULL;
	ms_status st = pipe_make_plan(&c->stats[b], 1, &po, &one, err);
	if (st == MS_OK) {
		const size_t E = (size_t)c->E, at = (size_t)b * E;
		memcpy(dst->group + at, one.group, E * sizeof *one.group);
		memcpy(dst->dominant + at, one.dominant, E);
		memcpy(dst->frequency + at, one.frequency, E * sizeof *one.frequency);
		memcpy(dst->similarity + at, one.similarity, E * sizeof *one.similarity);
		memcpy(dst->stable_rank + at * 3, one.stable_rank, E * 3 * sizeof *one.stable_rank);
	}
	plan_free(&one);
	return st;
}

static int plan_for_model(const srch_cache *c, plan *p)
{
	const char **labels = mdl_block_labels(c->a->m);
	const int rc = labels ? plan_init(p, c->n_blocks, c->E, labels) : -1;
	free(labels);
	return rc;
}

ms_status srch_make_plan(srch_cache *c, const srch_options *o, const int *groups, plan *p, ms_error *err)
{
	const pipe_analyze_options ao = stats_needed(o);
	for (int b = 0; b < c->n_blocks; b++)
		if (!stats_ready(c, b, &ao))
			return ms_fail(err, MS_ERR_ARG, "search: block %s has no statistics yet",
				       c->a->m->blocks[b].label);
	pipe_plan_options po = o->po;
	po.global = 0;
	po.merge = NULL;
	po.block_groups = groups;
	return pipe_make_plan(c->stats, c->n_blocks, &po, p, err);
}

/* ---- a run -------------------------------------------------------------------------------------------------- */

typedef struct {
	srch_cache *c;
	const srch_options *o;
	srch_result *out;
	uint64_t opt_key;
	pipe_analyze_options ao;
	int G_ref;                /* the reference allocation's G in every block */
	const int *cands;         /* [n_cands] group counts measured per block, ascending */
	int n_cands;
	plan *ref;                /* the reference plan, filled block by block */
	plan *scratch;            /* block b's rows rewritten for each candidate */
	double deadline;          /* monotonic seconds; 0 for none */
	atomic_int stop;          /* set by the progress hook: the forward pass stops before its next layer */
	int timed_out;
	int block_done;           /* MoE blocks whose proxies are complete */
} run_ctx;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* 1 when the search must stop now (cancelled, or past the time limit, which is then noted). */
static int must_stop(run_ctx *r)
{
	if (r->deadline > 0 && now_s() > r->deadline)
		r->timed_out = 1;
	if (r->timed_out || (r->o->cancel && atomic_load(r->o->cancel))) {
		atomic_store(&r->stop, 1);
		return 1;
	}
	return 0;
}

static ms_status stop_status(run_ctx *r, const char *where, ms_error *err)
{
	if (r->timed_out)
		return ms_fail(err, MS_ERR_INTERRUPTED, "search: the time limit of %g s passed %s", r->o->time_limit,
			       where);
	return ms_fail(err, MS_ERR_INTERRUPTED, "search: cancelled %s", where);
}

static void forward_progress(void *ctx, int layer, int n_layers)
{
	(void)layer;
	(void)n_layers;
	must_stop(ctx);   /* sets the flag the forward looks at next */
}

static uint64_t upstream_key(const run_ctx *r, int b)
{
	uint64_t h = r->opt_key;
	if (b > 0)   /* the blocks before b run the reference allocation: uniform G_ref */
		MIX(h, r->G_ref);
	return h;
}

/* rows xs [n, d] of x [T, d] at the block's held-out tokens (subsampled), and sum |h|^2 over the same rows. */
static void held_rows(const pipe_block *blk, const float *x, const float *h, int64_t n, float *xs, double *h2)
{
	const int d = blk->d;
	double s = 0.0;
	for (int64_t i = 0; i < n; i++) {
		const int64_t t = blk->held_idx[blk_subsample_index(i, blk->n_held, n)];
		memcpy(xs + i * d, x + t * d, (size_t)d * sizeof *xs);
		for (int j = 0; j < d; j++)
			s += (double)h[t * d + j] * h[t * d + j];
	}
	*h2 = s;
}

/* The proxy of block b at G: merge it, run it on xs [n, d] beside the original's outputs y0 [n, d]. */
static ms_status measure(run_ctx *r, const pipe_block *blk, const blk_config *orig, int b, int G, const float *xs,
			 int64_t n, const float *y0, double h2, float *y1, double *value, ms_error *err)
{
	ms_status st = block_rows(r->c, r->o, b, G, r->scratch, err);
	pipe_merged mg;
	if (st == MS_OK)
		st = pipe_merge_block(blk, r->scratch, b, &r->o->mo, &mg, err);
	if (st != MS_OK)
		return st;
	blk_config mcfg = mg.cfg;
	mcfg.shared = orig->shared;
	mcfg.shared_gate = orig->shared_gate;
	mcfg.sparsemixer_eps = orig->sparsemixer_eps;
	st = blk_forward(&mcfg, xs, n, y1, NULL, NULL, err);
	pipe_free_merged(&mg);
	if (st != MS_OK)
		return st;
	double e = 0.0;
	for (int64_t i = 0; i < n * blk->d; i++) {
		const double dv = (double)y0[i] - y1[i];
		e += dv * dv;
	}
	*value = h2 > 0 ? e / h2 : e;
	r->out->merges++;
	return MS_OK;
}

/* fwd_merged_block_fn of the proxy pass. */
static ms_status on_merged_block(void *ctx, int b, const pipe_block *blk, const blk_config *orig, const float *xm,
				 const float *hm, int64_t T, ms_error *err)
{
	(void)T;
	run_ctx *r = ctx;
	srch_cache *c = r->c;
	ms_status st = ensure_stats(c, blk, b, &r->ao, err);
	if (st == MS_OK)
		st = block_rows(c, r->o, b, r->G_ref, r->ref, err);
	if (st != MS_OK)
		return st;
	const uint64_t key = upstream_key(r, b);
	const int64_t n = blk_subsample_count(blk->n_held, SRCH_PROXY_TOKENS);
	const int d = blk->d;
	float *xs = NULL, *y0 = NULL, *y1 = NULL;   /* [n, d] each */
	double h2 = 0.0;
	for (int i = 0; st == MS_OK && i < r->n_cands; i++) {
		const int G = r->cands[i];
		const proxy_entry *pe = proxy_find(c, b, G, key);
		double value;
		if (pe) {
			value = pe->value;
		} else {
			if (must_stop(r))
				return stop_status(r, "in the proxy pass", err);
			if (!xs) {
				xs = malloc((size_t)(n * d) * sizeof *xs);
				y0 = malloc((size_t)(n * d) * sizeof *y0);
				y1 = malloc((size_t)(n * d) * sizeof *y1);
				if (!xs || !y0 || !y1) {
					st = ms_fail(err, MS_ERR_NOMEM, "search: out of memory");
					break;
				}
				held_rows(blk, xm, hm, n, xs, &h2);
				st = blk_forward(orig, xs, n, y0, NULL, NULL, err);
				if (st != MS_OK)
					break;
			}
			st = measure(r, blk, orig, b, G, xs, n, y0, h2, y1, &value, err);
			if (st == MS_OK)
				st = proxy_add(c, b, G, key, value, err);
		}
		if (st == MS_OK)
			r->out->proxy[(size_t)b * c->E + G - 1] = value;
	}
	free(xs);
	free(y0);
	free(y1);
	if (st == MS_OK) {
		r->block_done = b + 1;
		if (r->o->progress)
			r->o->progress(r->o->progress_ctx, "proxy", b + 1, c->n_blocks);
	}
	return st;
}

/* The group counts measured per block, ascending: all of 1..E, or max_candidates spread over them with G_ref and
 * G_ref + 1. Returns the count. */
static int candidate_counts(int E, int max_c, int G_ref, int *cands)
{
	if (E <= max_c) {
		for (int G = 1; G <= E; G++)
			cands[G - 1] = G;
		return E;
	}
	unsigned char *on = calloc((size_t)E + 1, 1);
	if (!on)
		return -1;
	for (int i = 0; i < max_c; i++)
		on[1 + (int)((int64_t)i * (E - 1) / (max_c - 1))] = 1;
	on[G_ref] = 1;
	if (G_ref < E)
		on[G_ref + 1] = 1;
	int n = 0;
	for (int G = 1; G <= E; G++)
		if (on[G])
			cands[n++] = G;
	free(on);
	return n;
}

static int proxies_cached(const run_ctx *r)
{
	const pipe_analyze_options *ao = &r->ao;
	for (int b = 0; b < r->c->n_blocks; b++) {
		if (!stats_ready(r->c, b, ao))
			return 0;
		for (int i = 0; i < r->n_cands; i++)
			if (!proxy_find(r->c, b, r->cands[i], upstream_key(r, b)))
				return 0;
	}
	return 1;
}

/* The proxy pass: fills out->proxy and the cache's statistics. */
static ms_status proxy_pass(run_ctx *r, ms_error *err)
{
	srch_cache *c = r->c;
	if (proxies_cached(r)) {
		for (int b = 0; b < c->n_blocks; b++)
			for (int i = 0; i < r->n_cands; i++)
				r->out->proxy[(size_t)b * c->E + r->cands[i] - 1] =
					proxy_find(c, b, r->cands[i], upstream_key(r, b))->value;
		return MS_OK;
	}
	plan ref = {0}, scratch = {0};
	if (plan_for_model(c, &ref) != 0 || plan_for_model(c, &scratch) != 0) {
		plan_free(&ref);
		return ms_fail(err, MS_ERR_NOMEM, "search: out of memory");
	}
	r->ref = &ref;
	r->scratch = &scratch;
	pipe_merge_options mo = r->o->mo;
	mo.slots = 0;
	fwd_options fo = {.plan = &ref, .merge = &mo, .head = 0, .on_merged_block = on_merged_block, .block_ctx = r,
			  .progress = forward_progress, .progress_ctx = r, .cancel = &r->stop};
	ms_status st = fwd_run(c->a, c->tok, &fo, NULL, err);
	r->out->forwards++;
	if (st != MS_OK && (r->timed_out || atomic_load(&r->stop)))
		st = stop_status(r, "in the proxy pass", err);
	r->ref = r->scratch = NULL;
	plan_free(&ref);
	plan_free(&scratch);
	return st;
}

/* ---- allocations -------------------------------------------------------------------------------------------- */

typedef struct {
	double cost;
	int prev_n, prev_r, G;   /* where it came from in the previous block's row, and this block's G */
} dp_entry;

/* Inserts e into list [*len] of at most k kept ascending by cost (a tie goes after the entries already there). */
static void dp_insert(dp_entry *list, int *len, int k, dp_entry e)
{
	int at = *len;
	while (at > 0 && list[at - 1].cost > e.cost)
		at--;
	if (at >= k)
		return;
	const int last = *len < k ? *len : k - 1;
	memmove(list + at + 1, list + at, (size_t)(last - at) * sizeof *list);
	list[at] = e;
	if (*len < k)
		(*len)++;
}

int srch_best_allocations(const double *cost, int n_blocks, int n_experts, int keep, int k, int *alloc,
			  double *costs)
{
	if (n_blocks <= 0 || keep < 0 || k <= 0)
		return 0;
	const size_t row = (size_t)keep + 1;
	dp_entry *dp = malloc((size_t)(n_blocks + 1) * row * (size_t)k * sizeof *dp);  /* [blocks + 1, keep + 1, k] */
	int *len = calloc((size_t)(n_blocks + 1) * row, sizeof *len);
	if (!dp || !len) {
		free(dp);
		free(len);
		return -1;
	}
	len[0] = 1;
	dp[0] = (dp_entry){.cost = 0.0, .prev_n = -1, .prev_r = -1, .G = 0};
	for (int b = 0; b < n_blocks; b++)
		for (int n = 0; n <= keep; n++)
			for (int G = 1; G <= n_experts && n + G <= keep; G++) {
				const double cg = cost[(size_t)b * n_experts + G - 1];
				if (isnan(cg))
					continue;
				const size_t from = (size_t)b * row + (size_t)n, to = (size_t)(b + 1) * row + (size_t)(n + G);
				for (int r = 0; r < len[from]; r++)
					dp_insert(dp + to * (size_t)k, &len[to], k,
						  (dp_entry){.cost = dp[from * (size_t)k + (size_t)r].cost + cg, .prev_n = n,
							     .prev_r = r, .G = G});
			}
	/* the best k over every total within the budget, larger totals first on ties */
	dp_entry *best = malloc((size_t)k * sizeof *best);
	int found = 0;
	if (best) {
		for (int n = keep; n >= 0; n--) {
			const size_t at = (size_t)n_blocks * row + (size_t)n;
			for (int r = 0; r < len[at]; r++) {
				dp_entry e = dp[at * (size_t)k + (size_t)r];
				e.prev_r = r;      /* reused: which entry of the final row */
				e.prev_n = n;
				dp_insert(best, &found, k, e);
			}
		}
		for (int i = 0; i < found; i++) {
			int n = best[i].prev_n, r = best[i].prev_r;
			costs[i] = best[i].cost;
			for (int b = n_blocks; b > 0; b--) {
				const dp_entry *e = &dp[((size_t)b * row + (size_t)n) * (size_t)k + (size_t)r];
				alloc[(size_t)i * n_blocks + b - 1] = e->G;
				n = e->prev_n;
				r = e->prev_r;
			}
		}
	} else {
		found = -1;
	}
	free(best);
	free(dp);
	free(len);
	return found;
}

/* Average ranks of v [n] into rank [n]. */
static void ranks(const double *v, int n, double *rank)
{
	for (int i = 0; i < n; i++) {
		int less = 0, same = 0;
		for (int j = 0; j < n; j++) {
			less += v[j] < v[i];
			same += v[j] == v[i];
		}
		rank[i] = less + (same + 1) / 2.0;
	}
}

double srch_spearman(const double *x, const double *y, int n)
{
	if (n < 2)
		return NAN;
	double *rx = malloc((size_t)n * sizeof *rx), *ry = malloc((size_t)n * sizeof *ry);
	if (!rx || !ry) {
		free(rx);
		free(ry);
		return NAN;
	}
	ranks(x, n, rx);
	ranks(y, n, ry);
	double mx = 0, my = 0;
	for (int i = 0; i < n; i++) {
		mx += rx[i];
		my += ry[i];
	}
	mx /= n;
	my /= n;
	double sxy = 0, sxx = 0, syy = 0;
	for (int i = 0; i < n; i++) {
		sxy += (rx[i] - mx) * (ry[i] - my);
		sxx += (rx[i] - mx) * (rx[i] - mx);
		syy += (ry[i] - my) * (ry[i] - my);
	}
	free(rx);
	free(ry);
	return sxx > 0 && syy > 0 ? sxy / sqrt(sxx * syy) : NAN;
}

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static int below(uint64_t *rng, int n)
{
	return (int)(splitmix64(rng) % (uint64_t)n);
}

/* Index of G in cands [n] (ascending), or -1. */
static int cand_index(const int *cands, int n, int G)
{
	for (int i = 0; i < n; i++)
		if (cands[i] == G)
			return i;
	return -1;
}

/* A random allocation of measured counts within the budget: from the uniform one, random moves of one step down
 * in one block and one step up in another, then steps up while the budget allows. */
static void random_allocation(const run_ctx *r, uint64_t *rng, int *g)
{
	const int nb = r->c->n_blocks, nc = r->n_cands;
	int *at = malloc((size_t)nb * sizeof *at);   /* [nb] index into cands */
	if (!at)
		return;
	int sum = 0;
	for (int b = 0; b < nb; b++) {
		at[b] = cand_index(r->cands, nc, r->G_ref);
		sum += r->G_ref;
	}
	for (int m = 0; m < 4 * nb && nb > 1; m++) {
		const int i = below(rng, nb), j = below(rng, nb);
		if (i == j || at[i] == 0 || at[j] == nc - 1)
			continue;
		const int s2 = sum - (r->cands[at[i]] - r->cands[at[i] - 1]) + (r->cands[at[j] + 1] - r->cands[at[j]]);
		if (s2 > r->o->keep)
			continue;
		at[i]--;
		at[j]++;
		sum = s2;
	}
	for (int m = 0; m < 4 * nb; m++) {
		const int j = below(rng, nb);
		if (at[j] < nc - 1 && sum + r->cands[at[j] + 1] - r->cands[at[j]] <= r->o->keep) {
			sum += r->cands[at[j] + 1] - r->cands[at[j]];
			at[j]++;
		}
	}
	for (int b = 0; b < nb; b++)
		g[b] = r->cands[at[b]];
	free(at);
}

static int same_allocation(const srch_result *out, const int *g)
{
	for (int i = 0; i < out->n_cand; i++)
		if (memcmp(out->cand[i].groups, g, (size_t)out->n_blocks * sizeof *g) == 0)
			return 1;
	return 0;
}

/* Appends an allocation (a copy of g) unless it is already there. */
static ms_status add_candidate(srch_result *out, srch_kind kind, const int *g, ms_error *err)
{
	if (same_allocation(out, g))
		return MS_OK;
	srch_candidate *cd = &out->cand[out->n_cand];
	*cd = (srch_candidate){.kind = kind, .proxy = 0.0, .kl = NAN, .ppl = NAN, .top1 = NAN};
	cd->groups = malloc((size_t)out->n_blocks * sizeof *cd->groups);
	if (!cd->groups)
		return ms_fail(err, MS_ERR_NOMEM, "search: out of memory");
	memcpy(cd->groups, g, (size_t)out->n_blocks * sizeof *g);
	for (int b = 0; b < out->n_blocks; b++) {
		cd->kept += g[b];
		cd->proxy += out->proxy[(size_t)b * out->n_experts + g[b] - 1];   /* NAN stays NAN */
	}
	out->n_cand++;
	return MS_OK;
}

/* MC-SMoE's global allocation of the average G_ref into g [n_blocks]; 0 when it is undefined here. */
static int global_allocation(run_ctx *r, int *g)
{
	plan p = {0};
	if (plan_for_model(r->c, &p) != 0)
		return 0;
	pipe_plan_options po = r->o->po;
	po.groups = r->G_ref;
	po.global = 1;
	po.merge = NULL;
	po.block_groups = NULL;
	ms_error e = {0};
	const int ok = pipe_make_plan(r->c->stats, r->c->n_blocks, &po, &p, &e) == MS_OK;
	for (int b = 0; ok && b < r->c->n_blocks; b++)
		g[b] = plan_groups(&p, b);
	plan_free(&p);
	return ok;
}

/* The allocations to confirm, in order: uniform, global, least proxy first, random samples. */
static ms_status plan_candidates(run_ctx *r, ms_error *err)
{
	srch_result *out = r->out;
	const int nb = out->n_blocks, k = r->o->confirm;
	const int cap = 2 + k + r->o->samples;
	int *g = malloc((size_t)nb * (size_t)(k > 1 ? k : 1) * sizeof *g);
	double *costs = malloc((size_t)k * sizeof *costs);
	out->cand = calloc((size_t)cap, sizeof *out->cand);
	if (!g || !costs || !out->cand) {
		free(g);
		free(costs);
		return ms_fail(err, MS_ERR_NOMEM, "search: out of memory");
	}
	ms_status st = MS_OK;
	for (int b = 0; b < nb; b++)
		g[b] = r->G_ref;
	out->uniform = 0;
	st = add_candidate(out, SRCH_UNIFORM, g, err);
	out->global = -1;
	if (st == MS_OK && global_allocation(r, g)) {
		const int before = out->n_cand;
		st = add_candidate(out, SRCH_GLOBAL, g, err);
		out->global = out->n_cand > before ? before : 0;   /* the same as uniform: that one */
	}
	const int found = st == MS_OK ? srch_best_allocations(out->proxy, nb, out->n_experts, r->o->keep, k, g, costs)
				      : 0;
	if (found < 0)
		st = ms_fail(err, MS_ERR_NOMEM, "search: out of memory");
	for (int i = 0; st == MS_OK && i < found; i++)
		st = add_candidate(out, SRCH_PROXY, g + (size_t)i * nb, err);
	uint64_t rng = r->o->seed;
	for (int s = 0, tries = 0; st == MS_OK && s < r->o->samples && tries < SRCH_SAMPLE_TRIES * r->o->samples;
	     tries++) {
		random_allocation(r, &rng, g);
		if (same_allocation(out, g))
			continue;
		st = add_candidate(out, SRCH_SAMPLE, g, err);
		s++;
	}
	free(g);
	free(costs);
	return st;
}

/* Runs the model with candidate cd's plan; fills its held-out figures. */
static ms_status confirm(run_ctx *r, srch_candidate *cd, ms_error *err)
{
	srch_cache *c = r->c;
	const confirm_entry *ce = confirm_find(c, cd->groups, r->opt_key);
	if (ce && c->have_original) {
		cd->kl = ce->kl;
		cd->ppl = ce->ppl;
		cd->top1 = ce->top1;
		cd->confirmed = 1;
		return MS_OK;
	}
	plan p = {0};
	if (plan_for_model(c, &p) != 0)
		return ms_fail(err, MS_ERR_NOMEM, "search: out of memory");
	pipe_merge_options mo = r->o->mo;
	mo.slots = 0;
	ms_status st = srch_make_plan(c, r->o, cd->groups, &p, err);
	fwd_options fo = {.plan = &p, .merge = &mo, .head = 1, .progress = forward_progress, .progress_ctx = r,
			  .cancel = &r->stop};
	fwd_result fr;
	if (st == MS_OK) {
		st = fwd_run(c->a, c->tok, &fo, &fr, err);
		r->out->forwards++;
	}
	if (st == MS_OK) {
		double kl = 0, nll_m = 0, nll_o = 0, top1 = 0;
		int64_t n = 0;
		for (int64_t i = 0; i < c->n_held; i++) {
			const int64_t t = c->held[i];
			if (isnan(fr.kl[t]))
				continue;
			kl += fr.kl[t];
			nll_m += fr.nll_merged[t];
			nll_o += fr.nll[t];
			top1 += fr.top1_same[t];
			n++;
		}
		if (n == 0) {
			st = ms_fail(err, MS_ERR_ARG, "search: no held-out token has a next token in its sequence");
		} else {
			cd->kl = kl / (double)n;
			cd->ppl = exp(nll_m / (double)n);
			cd->top1 = top1 / (double)n;
			cd->confirmed = 1;
			c->ppl_original = exp(nll_o / (double)n);
			c->have_original = 1;
			c->held_predicted = n;
			st = confirm_add(c, cd->groups, r->opt_key, cd, err);
		}
		fwd_result_free(&fr);
	}
	plan_free(&p);
	return st;
}

static ms_status check_options(const srch_cache *c, const srch_options *o, ms_error *err)
{
	const int nb = c->n_blocks, E = c->E;
	if (o->keep < nb || o->keep > nb * E)
		return ms_fail(err, MS_ERR_ARG, "search: a budget of %d experts is outside %d..%d (%d blocks of %d)",
			       o->keep, nb, nb * E, nb, E);
	if (o->confirm < 1 || o->samples < 0 || o->max_candidates < 2 || o->time_limit < 0)
		return ms_fail(err, MS_ERR_ARG, "search: bad options");
	return MS_OK;
}

static ms_status result_alloc(const srch_cache *c, srch_result *out, ms_error *err)
{
	memset(out, 0, sizeof *out);
	out->n_blocks = c->n_blocks;
	out->n_experts = c->E;
	out->best = out->uniform = out->global = -1;
	out->spearman = NAN;
	out->proxy = malloc((size_t)c->n_blocks * (size_t)c->E * sizeof *out->proxy);
	if (!out->proxy)
		return ms_fail(err, MS_ERR_NOMEM, "search: out of memory");
	for (size_t i = 0; i < (size_t)c->n_blocks * (size_t)c->E; i++)
		out->proxy[i] = NAN;
	return MS_OK;
}

/* Confirms the candidates in order until done or stopped; then the best, the rank correlation and the plan. */
static ms_status confirm_all(run_ctx *r, ms_error *err)
{
	srch_result *out = r->out;
	ms_status st = MS_OK;
	for (int i = 0; st == MS_OK && i < out->n_cand; i++) {
		if (r->o->progress)
			r->o->progress(r->o->progress_ctx, "confirm", i, out->n_cand);
		if (must_stop(r))
			break;
		st = confirm(r, &out->cand[i], err);
		if (st != MS_OK && (r->timed_out || atomic_load(&r->stop)))
			st = MS_OK;   /* stopped inside the pass: keep what is confirmed */
		if (r->timed_out || atomic_load(&r->stop))
			break;
	}
	if (st != MS_OK)
		return st;
	if (r->o->progress)
		r->o->progress(r->o->progress_ctx, "confirm", out->n_cand, out->n_cand);
	if (r->o->cancel && atomic_load(r->o->cancel))
		return stop_status(r, "while confirming", err);
	out->timed_out = r->timed_out;
	double *px = malloc((size_t)out->n_cand * sizeof *px), *kl = malloc((size_t)out->n_cand * sizeof *kl);
	if (!px || !kl) {
		free(px);
		free(kl);
		return ms_fail(err, MS_ERR_NOMEM, "search: out of memory");
	}
	for (int i = 0; i < out->n_cand; i++) {
		const srch_candidate *cd = &out->cand[i];
		if (!cd->confirmed)
			continue;
		if (out->best < 0 || cd->kl < out->cand[out->best].kl)
			out->best = i;
		if (!isnan(cd->proxy)) {
			px[out->n_ranked] = cd->proxy;
			kl[out->n_ranked++] = cd->kl;
		}
	}
	out->spearman = out->n_ranked >= 3 ? srch_spearman(px, kl, out->n_ranked) : NAN;
	free(px);
	free(kl);
	if (out->best < 0)
		return stop_status(r, "before any allocation was confirmed", err);
	out->ppl_original = r->c->ppl_original;
	out->held_tokens = r->c->held_predicted;
	if (plan_for_model(r->c, &out->plan) != 0)
		return ms_fail(err, MS_ERR_NOMEM, "search: out of memory");
	return srch_make_plan(r->c, r->o, out->cand[out->best].groups, &out->plan, err);
}

ms_status srch_run(srch_cache *c, const srch_options *o, srch_result *out, ms_error *err)
{
	if (!c || !o || !out)
		return ms_fail(err, MS_ERR_ARG, "search: no cache, options or result");
	ms_status st = result_alloc(c, out, err);
	if (st == MS_OK)
		st = check_options(c, o, err);
	int *cands = st == MS_OK ? malloc((size_t)c->E * sizeof *cands) : NULL;
	if (st == MS_OK && !cands)
		st = ms_fail(err, MS_ERR_NOMEM, "search: out of memory");
	run_ctx r = {.c = c, .o = o, .out = out, .opt_key = options_key(o), .ao = stats_needed(o)};
	atomic_init(&r.stop, 0);
	if (st == MS_OK) {
		out->keep = o->keep;
		r.G_ref = o->keep / c->n_blocks;
		r.cands = cands;
		r.n_cands = candidate_counts(c->E, o->max_candidates, r.G_ref, cands);
		r.deadline = o->time_limit > 0 ? now_s() + o->time_limit : 0;
		out->n_candidates = r.n_cands;
		if (r.n_cands < 0)
			st = ms_fail(err, MS_ERR_NOMEM, "search: out of memory");
	}
	if (st == MS_OK)
		st = proxy_pass(&r, err);
	if (st == MS_OK)
		st = plan_candidates(&r, err);
	if (st == MS_OK)
		st = confirm_all(&r, err);
	free(cands);
	if (st != MS_OK)
		srch_result_free(out);
	return st;
}

void srch_result_free(srch_result *r)
{
	if (!r)
		return;
	for (int i = 0; r->cand && i < r->n_cand; i++)
		free(r->cand[i].groups);
	free(r->cand);
	free(r->proxy);
	plan_free(&r->plan);
	memset(r, 0, sizeof *r);
}
