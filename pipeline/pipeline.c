#include "pipeline/pipeline.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/finite.h"
#include "analysis/par.h"
#include "analysis/routing.h"
#include "analysis/wtw.h"
#include "io/arch.h"
#include "io/pages.h"

/* Floats of one expert: gate and up [f, d] each (no gate for MDL_ACT_RELU) and down [d, f], then with biases
 * gate bias [f], up bias [f] and down bias [d]. Biases sit in the same span as the matrices so that every
 * element-wise pass over an expert (the merge's weighted sum, copies, rounding) treats them alike. */
static int64_t expert_floats(mdl_act act, int bias, int d, int f)
{
	return (int64_t)d * f * (mdl_act_gated(act) ? 3 : 2) + (bias ? 2 * (int64_t)f + d : 0);
}

/* Pointers to the matrices (and biases) of an expert stored at base (gate absent without a gate). */
static void expert_view(const pipe_block *blk, float *base, expert_weights *w)
{
	const int64_t fd = (int64_t)blk->f * blk->d;
	w->d = blk->d;
	w->f = blk->f;
	w->act = blk->act;
	w->gate = mdl_act_gated(blk->act) ? base : NULL;
	w->up = base + (mdl_act_gated(blk->act) ? fd : 0);
	w->down = w->up + fd;
	w->gate_bias = w->up_bias = w->down_bias = NULL;
	if (blk->expert_bias) {
		w->gate_bias = w->down + fd;
		w->up_bias = w->gate_bias + blk->f;
		w->down_bias = w->up_bias + blk->f;
	}
}

static void bind_experts(pipe_block *blk)
{
	for (int e = 0; e < blk->E; e++)
		expert_view(blk, blk->weights + (int64_t)e * blk->per_expert, &blk->experts[e]);
}

/* Loading a block's experts: one task per matrix (conversion of BF16 to float32 is bound by one core's memory
 * traffic, so more cores shorten it; a task per matrix rather than per expert keeps 3 E tasks for the cores, 24
 * for Mixtral's 8 experts). The interleaved layout stores an expert's gate and up in one slab that must be decoded
 * whole (io/model.h), so there the gate's task loads the up matrix too and the up's task has nothing to do: the
 * slab is decoded once, not once per matrix. Each float is written by one task from the same bytes, and par_for
 * reports the lowest failing (expert, matrix), the one a serial load meets first, so neither the result nor the
 * error depends on the thread count. */
typedef struct {
	const mdl_model *m;
	pipe_block *blk;
	int b;
	int fresh;   /* blk->weights is new memory, not the last block's (take_weights) */
} load_job;

static ms_status load_matrix_task(void *ctx, int64_t task, ms_error *err)
{
	const load_job *j = ctx;
	const int e = (int)(task / MDL_NMAT), k = (int)(task % MDL_NMAT);
	const expert_weights *w = &j->blk->experts[e];
	float *mat[MDL_NMAT] = {(float *)w->gate, (float *)w->up, (float *)w->down}, *only[MDL_NMAT] = {NULL};
	const int slab = j->m->layout == MDL_LAYOUT_INTERLEAVED;
	if (!mat[k] || (slab && k == MDL_UP))
		return MS_OK;   /* a matrix the family lacks, or one the gate's task loads */
	only[k] = mat[k];
	if (slab && k == MDL_GATE)
		only[MDL_UP] = mat[MDL_UP];
	for (int i = 0; i < MDL_NMAT && j->fresh; i++)   /* a reused buffer is mapped already: populating it again */
		if (only[i])                                  /* would only walk its page tables */
			pages_populate(only[i], (size_t)w->d * (size_t)w->f * sizeof(float)); /* each is d x f floats */
	ms_status st = mdl_load_expert(j->m, j->b, e, only[MDL_GATE], only[MDL_UP], only[MDL_DOWN], err);
	if (st == MS_OK && k == MDL_DOWN && j->blk->expert_bias)   /* the biases ride with the down matrix's task */
		st = mdl_load_expert_bias(j->m, j->b, e, (float *)w->gate_bias, (float *)w->up_bias, (float *)w->down_bias,
					  err);
	if (st == MS_OK)
		pages_release_tensor(j->m->blocks[j->b].experts[e * MDL_NMAT + k]);
	return st;
}

static ms_status load_experts(const mdl_model *m, int b, pipe_block *blk, int fresh, ms_error *err)
{
	load_job j = {.m = m, .blk = blk, .b = b, .fresh = fresh};
	return par_for((int64_t)blk->E * MDL_NMAT, load_matrix_task, &j, err);
}

/* Element-wise passes over a whole block (gigabytes for Mixtral) run as tasks of PIPE_SPAN elements, because one
 * core moves far less than the memory bandwidth. Every element is computed as a single thread would. */
typedef void (*span_fn)(void *ctx, int64_t begin, int64_t end);

#define PIPE_SPAN (1 << 20)

typedef struct {
	span_fn fn;
	void *ctx;
	int64_t n;
} span_job;

static ms_status span_task(void *ctx, int64_t i, ms_error *err)
{
	(void)err;
	const span_job *j = ctx;
	const int64_t begin = i * PIPE_SPAN, end = begin + PIPE_SPAN < j->n ? begin + PIPE_SPAN : j->n;
	j->fn(j->ctx, begin, end);
	return MS_OK;
}

static void run_split(int64_t n, span_fn fn, void *ctx)
{
	span_job j = {.fn = fn, .ctx = ctx, .n = n};
	(void)par_for((n + PIPE_SPAN - 1) / PIPE_SPAN, span_task, &j, NULL);
}

/* The float32 experts of the last freed block, kept for the next load. Commands stream block after block, and a
 * fresh buffer of gigabytes costs the kernel zeroing every page on first touch (more than the BF16 conversion
 * itself, in a profile of the load); the last block's pages are already there. Each load overwrites every float,
 * so nothing of the previous block can show through. At most one buffer is kept, reachable from here. */
static struct {
	pthread_mutex_t lock;
	float *buf;
	size_t floats;
} spare = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* *fresh is set when the buffer is new memory rather than the kept one. */
static float *take_weights(size_t floats, int *fresh)
{
	pthread_mutex_lock(&spare.lock);
	float *buf = NULL;
	if (spare.buf && spare.floats == floats) {
		buf = spare.buf;
		spare.buf = NULL;
	}
	pthread_mutex_unlock(&spare.lock);
	*fresh = !buf;
	/* Aligned for the stable rank's kernel, which every expert matrix then is when d f is a multiple of 16.
	 * load_matrix_task maps fresh pages in, in parallel. */
	return buf ? buf : wtw_alloc(floats * sizeof(float));
}

static void give_weights(float *buf, size_t floats)
{
	if (!buf)
		return;
	pthread_mutex_lock(&spare.lock);
	float *old = spare.buf;
	spare.buf = buf;
	spare.floats = floats;
	pthread_mutex_unlock(&spare.lock);
	free(old);
}

void pipe_release_spare(void)
{
	pthread_mutex_lock(&spare.lock);
	free(spare.buf);
	spare.buf = NULL;
	pthread_mutex_unlock(&spare.lock);
}

const char *const pipe_split_names[PIPE_SPLIT_COUNT] = { PIPE_SPLIT_TABLE(NAMES_X_NAME) };
const char *const pipe_split_help[PIPE_SPLIT_COUNT] = { PIPE_SPLIT_TABLE(NAMES_X_HELP) };

const char *pipe_split_name(pipe_split s)
{
	return names_at(pipe_split_names, PIPE_SPLIT_COUNT, (int)s);
}

const char *const pipe_refit_names[PIPE_REFIT_COUNT] = { PIPE_REFIT_TABLE(NAMES_X_NAME) };
const char *const pipe_refit_help[PIPE_REFIT_COUNT] = { PIPE_REFIT_TABLE(NAMES_X_HELP) };

const char *pipe_refit_name(pipe_refit r)
{
	return names_at(pipe_refit_names, PIPE_REFIT_COUNT, (int)r);
}

/* Whole sequences are held out, when the ids say which tokens belong together: tokens of one sequence are alike,
 * so holding out tokens from inside the sequences the fits saw would flatter them. */
static int held_by_segment(int32_t id)
{
	return ((id % 4) + 4) % 4 == 3;
}

pipe_split pipe_split_tokens(const int32_t *seg, int64_t T, int64_t *fit_idx, int64_t *n_fit, int64_t *held_idx,
			     int64_t *n_held)
{
	*n_fit = *n_held = 0;
	if (T < PIPE_SPLIT_MIN) {
		for (int64_t t = 0; t < T; t++)
			fit_idx[(*n_fit)++] = held_idx[(*n_held)++] = t;
		return PIPE_SPLIT_NONE;
	}
	if (seg) {
		for (int64_t t = 0; t < T; t++) {
			if (held_by_segment(seg[t]))
				held_idx[(*n_held)++] = t;
			else
				fit_idx[(*n_fit)++] = t;
		}
		if (*n_fit > 0 && *n_held > 0)
			return PIPE_SPLIT_SEGMENTS;
		*n_fit = *n_held = 0;
	}
	const int64_t first_held = T - T / 4;
	for (int64_t t = 0; t < T; t++) {
		if (t >= first_held)
			held_idx[(*n_held)++] = t;
		else
			fit_idx[(*n_fit)++] = t;
	}
	return PIPE_SPLIT_FIXED;
}

/* The block's fit and held-out tokens: a block built without a split (fit_idx NULL) fits and evaluates on all. */
static int64_t fit_count(const pipe_block *blk)
{
	return blk->fit_idx ? blk->n_fit : blk->T;
}

static int64_t fit_token(const pipe_block *blk, int64_t i)
{
	return blk->fit_idx ? blk->fit_idx[i] : i;
}

/* The block's fit and held-out tokens, by the calibration set's segment ids when it has them for these T tokens. */
static ms_status load_split(const calib *cal, pipe_block *blk, ms_error *err)
{
	if (blk->T == 0)
		return MS_OK;
	int32_t *seg = NULL;
	blk->fit_idx = malloc((size_t)blk->T * sizeof *blk->fit_idx);
	blk->held_idx = malloc((size_t)blk->T * sizeof *blk->held_idx);
	if (!blk->fit_idx || !blk->held_idx)
		return ms_fail(err, MS_ERR_NOMEM, "out of memory splitting %lld tokens", (long long)blk->T);
	if (calib_has_segments(cal) && (seg = malloc((size_t)blk->T * sizeof *seg)) != NULL &&
	    calib_load_segments(cal, seg, blk->T, NULL) != MS_OK) {
		free(seg);   /* segment ids of another length than this block's tokens: the fixed split */
		seg = NULL;
	}
	blk->split = pipe_split_tokens(seg, blk->T, blk->fit_idx, &blk->n_fit, blk->held_idx, &blk->n_held);
	blk->seg = seg;   /* kept: a capacity counts tokens per sequence */
	return MS_OK;
}

ms_status pipe_set_tokens(pipe_block *blk, float *x, int64_t T, const int32_t *seg, ms_error *err)
{
	free(blk->fit_idx);
	free(blk->held_idx);
	free(blk->seg);
	blk->seg = NULL;
	blk->x = x;
	blk->T = T;
	if (seg && T > 0) {
		blk->seg = malloc((size_t)T * sizeof *blk->seg);
		if (!blk->seg)
			return ms_fail(err, MS_ERR_NOMEM, "out of memory for %lld segment ids", (long long)T);
		memcpy(blk->seg, seg, (size_t)T * sizeof *blk->seg);
	}
	blk->fit_idx = malloc((size_t)(T > 0 ? T : 1) * sizeof *blk->fit_idx);
	blk->held_idx = malloc((size_t)(T > 0 ? T : 1) * sizeof *blk->held_idx);
	if (!blk->fit_idx || !blk->held_idx)
		return ms_fail(err, MS_ERR_NOMEM, "out of memory splitting %lld tokens", (long long)T);
	blk->split = pipe_split_tokens(seg, T, blk->fit_idx, &blk->n_fit, blk->held_idx, &blk->n_held);
	return MS_OK;
}

/* The family's additions to block b: its shared expert and gate (one copy per block, like the experts) and the
 * routing eps. */
static ms_status load_extras(const mdl_model *m, int b, pipe_block *blk, ms_error *err)
{
	arch_moe_extras x;
	ms_status st = arch_moe_extras_read(m, &x, err);
	if (st != MS_OK)
		return st;
	blk->sparsemixer_eps = x.sparsemixer_eps;
	if (x.shared_inter <= 0)
		return MS_OK;
	const int layer = m->blocks[b].layer, d = blk->d, fs = x.shared_inter;
	const int64_t fd = (int64_t)fs * d;
	blk->shared_weights = malloc((size_t)(3 * fd) * sizeof(float));
	if (x.shared_gated)
		blk->shared_gate = malloc((size_t)d * sizeof(float));
	if (!blk->shared_weights || (x.shared_gated && !blk->shared_gate))
		return ms_fail(err, MS_ERR_NOMEM, "block %s: out of memory for the shared expert", m->blocks[b].label);
	blk->shared = (expert_weights){.gate = blk->shared_weights, .up = blk->shared_weights + fd,
				       .down = blk->shared_weights + 2 * fd, .d = d, .f = fs, .act = MDL_ACT_SILU_GLU};
	st = arch_read_block(m, ARCH_T_SHARED_GATE, layer, fs, d, blk->shared_weights, err);
	if (st == MS_OK)
		st = arch_read_block(m, ARCH_T_SHARED_UP, layer, fs, d, blk->shared_weights + fd, err);
	if (st == MS_OK)
		st = arch_read_block(m, ARCH_T_SHARED_DOWN, layer, d, fs, blk->shared_weights + 2 * fd, err);
	if (st == MS_OK && blk->shared_gate)
		st = arch_read_block(m, ARCH_T_SHARED_EXPERT_GATE, layer, 1, d, blk->shared_gate, err);
	return st;
}

ms_status pipe_load_block(const mdl_model *m, const calib *cal, int b, pipe_block *out, ms_error *err)
{
	memset(out, 0, sizeof *out);
	if (!m || b < 0 || b >= m->n_blocks)
		return ms_fail(err, MS_ERR_ARG, "block %d out of range", b);
	out->block = b;
	out->E = m->n_experts;
	out->d = m->hidden;
	out->f = m->inter;
	out->act = m->act;
	out->routing = m->routing;
	out->expert_bias = m->expert_bias;
	out->per_expert = expert_floats(m->act, out->expert_bias, out->d, out->f);
	out->expert_dtype = m->expert_dtype;
	out->router_dtype = m->blocks[b].router->dtype;
	out->quant_block[0] = m->quant.block[0];
	out->quant_block[1] = m->quant.block[1];
	for (int k = 0; k < MDL_NMAT; k++) {
		const st_tensor *s = m->blocks[b].scales[k];   /* expert 0's, as the writer declares them */
		out->quant_scale_dtype[k] = s ? s->dtype : ST_F32;
	}
	out->expert_bias_dtype = m->blocks[b].fused_bias[0] ? m->blocks[b].fused_bias[0]->dtype : m->expert_dtype;
	out->T = cal ? calib_tokens(cal, b) : 0;
	out->router = malloc((size_t)out->E * out->d * sizeof(float));
	int fresh = 0;
	out->weights = take_weights((size_t)(out->E * out->per_expert), &fresh);
	out->experts = calloc((size_t)out->E, sizeof *out->experts);
	out->identity = malloc((size_t)out->E * sizeof *out->identity);
	if (out->T > 0)
		out->x = malloc((size_t)(out->T * out->d) * sizeof(float));
	if (!out->router || !out->weights || !out->experts || !out->identity || (out->T > 0 && !out->x)) {
		pipe_free_block(out);
		return ms_fail(err, MS_ERR_NOMEM, "block %s: out of memory loading %d experts", m->blocks[b].label,
			       m->n_experts);
	}
	bind_experts(out);
	for (int e = 0; e < out->E; e++)
		out->identity[e] = e;
	ms_status st = mdl_load_router(m, b, out->router, err);
	if (st == MS_OK && m->blocks[b].score_bias) {
		out->score_bias = malloc((size_t)out->E * sizeof *out->score_bias);
		out->score_bias_dtype = m->blocks[b].score_bias->dtype;
		st = out->score_bias ? mdl_load_score_bias(m, b, out->score_bias, err)
				     : ms_fail(err, MS_ERR_NOMEM, "block %s: out of memory", m->blocks[b].label);
		out->routing.score_bias = out->score_bias;
	}
	if (st == MS_OK && m->blocks[b].router_bias) {
		out->router_bias = malloc((size_t)out->E * sizeof *out->router_bias);
		out->router_bias_dtype = m->blocks[b].router_bias->dtype;
		st = out->router_bias ? mdl_load_router_bias(m, b, out->router_bias, err)
				      : ms_fail(err, MS_ERR_NOMEM, "block %s: out of memory", m->blocks[b].label);
		out->routing.logit_bias = out->router_bias;
	}
	if (st == MS_OK)
		st = load_experts(m, b, out, fresh, err);
	if (st == MS_OK)
		st = load_extras(m, b, out, err);
	if (st == MS_OK && out->x)
		st = calib_load(cal, b, out->x, err);
	if (st == MS_OK)
		st = load_split(cal, out, err);
	if (st != MS_OK)
		pipe_free_block(out);
	return st;
}

void pipe_free_block(pipe_block *blk)
{
	if (!blk)
		return;
	free(blk->router);
	free(blk->score_bias);
	free(blk->router_bias);
	give_weights(blk->weights, (size_t)(blk->E * blk->per_expert));
	free(blk->experts);
	free(blk->x);
	free(blk->identity);
	free(blk->fit_idx);
	free(blk->held_idx);
	free(blk->shared_weights);
	free(blk->shared_gate);
	free(blk->seg);
	memset(blk, 0, sizeof *blk);
}

static double sim_or_zero(double v)
{
	return v == v ? v : 0.0;
}

/* The group to split in block b (at least two members), or -1. */
static int group_to_split(const plan *p, int b, int G)
{
	const int E = p->n_experts;
	const int *group = p->group + (size_t)b * E;
	int best = -1, best_n = 1;
	double best_coh = 0.0;
	for (int g = 0; g < G; g++) {
		int n = 0;
		double coh = 0.0;
		for (int e = 0; e < E; e++)
			if (group[e] == g) {
				n++;
				coh += sim_or_zero(p->similarity[(size_t)b * E + e]);
			}
		coh = n > 0 ? coh / n : 0.0;
		if (n > best_n || (n == best_n && n > 1 && coh < best_coh)) {
			best = g;
			best_n = n;
			best_coh = coh;
		}
	}
	return best;
}

int pipe_plan_slots(const plan *p)
{
	int slots = 0;
	for (int b = 0; b < p->n_blocks; b++)
		slots = plan_groups(p, b) > slots ? plan_groups(p, b) : slots;
	return slots;
}

ms_status pipe_fill_plan(plan *p, int *slots, ms_error *err)
{
	const int n = pipe_plan_slots(p);
	if (slots)
		*slots = n;
	ms_status st = MS_OK;
	for (int b = 0; st == MS_OK && b < p->n_blocks; b++)
		st = pipe_fill_groups(p, b, n, err);
	return st;
}

ms_status pipe_fill_groups(plan *p, int b, int target, ms_error *err)
{
	const int E = p->n_experts;
	int *group = p->group + (size_t)b * E;
	unsigned char *dominant = p->dominant + (size_t)b * E;
	const double *freq = p->frequency + (size_t)b * E;
	double *sim = p->similarity + (size_t)b * E;
	int G = plan_groups(p, b);
	if (G == 0)
		return MS_OK;   /* a block that keeps nothing is refused by the merge itself */
	if (target > E || target < G)
		return ms_fail(err, MS_ERR_ARG, "block %s: %d groups cannot become %d", p->labels[b], G, target);
	for (; G < target; G++) {
		const int g = group_to_split(p, b, G);
		int pick = -1;
		for (int e = 0; e < E; e++) {
			if (g >= 0 ? group[e] != g || dominant[e] : group[e] >= 0)
				continue;
			const double se = g >= 0 ? sim_or_zero(sim[e]) : 0.0, sp = pick >= 0 && g >= 0 ? sim_or_zero(sim[pick]) : 0.0;
			if (pick < 0 || se < sp || (se == sp && freq[e] > freq[pick]))
				pick = e;
		}
		if (pick < 0)
			return ms_fail(err, MS_ERR_ARG, "block %s: no group to split into %d", p->labels[b], target);
		group[pick] = G;
		dominant[pick] = 1;
		sim[pick] = 1.0;
	}
	return MS_OK;
}

/* The family's additions, the same for the original block and every merged layout of it. */
static void extend_config(const pipe_block *blk, blk_config *c)
{
	c->shared = blk->shared.f > 0 ? &blk->shared : NULL;
	c->shared_gate = c->shared ? blk->shared_gate : NULL;
	c->sparsemixer_eps = blk->sparsemixer_eps;
}

blk_config pipe_block_config(const pipe_block *blk)
{
	blk_config c = {
		.n_router = blk->E, .router = blk->router, .slot = blk->identity, .n_slots = blk->E,
		.experts = blk->experts, .routing = blk->routing, .d = blk->d,
	};
	extend_config(blk, &c);
	return c;
}

const char *const pipe_layout_names[PIPE_LAYOUT_COUNT] = { PIPE_LAYOUT_TABLE(NAMES_X_NAME) };
const char *const pipe_layout_help[PIPE_LAYOUT_COUNT] = { PIPE_LAYOUT_TABLE(NAMES_X_HELP) };

const char *pipe_layout_name(pipe_layout l)
{
	return names_at(pipe_layout_names, PIPE_LAYOUT_COUNT, (int)l);
}

int pipe_layout_parse(const char *name)
{
	return names_index(pipe_layout_names, PIPE_LAYOUT_COUNT, name);
}

pipe_merge_options pipe_merge_defaults(void)
{
	pipe_merge_options o = {
		.layout = PIPE_LAYOUT_COMPACT, .weighting = MERGE_FREQUENCY, .align = ALIGN_DOMINANT,
		.router = RFIT_AUTO, .refit = PIPE_REFIT_DOWN, .compress = cmp_options_none(), .slots = 0,
	};
	return o;
}

void pipe_free_merged(pipe_merged *mg)
{
	if (!mg)
		return;
	free(mg->weights);
	free(mg->experts);
	free(mg->slot_group);
	free(mg->router);
	free(mg->score_bias);
	free(mg->router_bias);
	free(mg->slot);
	free(mg->router_residual);
	free(mg->compression);
	for (int i = 0; mg->factors && i < mg->groups * MDL_NMAT; i++) {
		free(mg->factors[i].u);
		free(mg->factors[i].v);
		free(mg->factors[i].sparse_idx);
		free(mg->factors[i].sparse_val);
	}
	free(mg->factors);
	memset(mg, 0, sizeof *mg);
}

/* The expert every member of group g is aligned to, or -1 for none: the group's dominant, or expert 0 of the block
 * for ALIGN_FIRST (as the MC-SMoE Switch scripts align every expert to expert 0). */
static int align_reference(const pipe_block *blk, const int *group, const unsigned char *dominant, int g,
			   align_ref ref)
{
	if (ref == ALIGN_FIRST)
		return 0;
	if (ref != ALIGN_DOMINANT)
		return -1;
	for (int e = 0; e < blk->E; e++)
		if (group[e] == g && dominant[e])
			return e;
	return -1;
}

/* How a block is merged. Every alignment is computed first, on the untouched block (perm rows); then each group is
 * summed with its target member's term first (the member holding the alignment reference, else the dominant) and
 * the others in index order, members with a zero coefficient left out. Built in place, the target member's own
 * storage receives the merge and the others are permuted where they lie; built apart, each member is permuted
 * into a scratch copy. Both orders of operations are the same, so both give the same bits. */
typedef struct {
	const pipe_block *blk;
	const plan *p;
	int b;
	const pipe_merge_options *o;
	float *weights;     /* the block's storage when merging in place, else NULL */
	int *perm;          /* [E, f]: row e is expert e's alignment to its reference */
	unsigned char *aligned; /* [E] perm row e is in use */
	float *tmp;         /* [per_expert]: one aligned member (merging apart) */
	int *members;       /* [E] one group's members, target first */
	double *freq;       /* [E] */
	double *coef;       /* [E] */
} merge_work;

static void merge_work_free(merge_work *w)
{
	free(w->perm);
	free(w->aligned);
	free(w->tmp);
	free(w->members);
	free(w->freq);
	free(w->coef);
}

static ms_status merge_work_alloc(merge_work *w, ms_error *err)
{
	const pipe_block *blk = w->blk;
	w->perm = malloc((size_t)blk->E * (size_t)blk->f * sizeof *w->perm);
	w->aligned = calloc((size_t)blk->E, 1);
	w->tmp = w->weights ? NULL : malloc((size_t)blk->per_expert * sizeof *w->tmp);
	w->members = malloc((size_t)blk->E * sizeof *w->members);
	w->freq = malloc((size_t)blk->E * sizeof *w->freq);
	w->coef = malloc((size_t)blk->E * sizeof *w->coef);
	if (w->perm && w->aligned && (w->weights || w->tmp) && w->members && w->freq && w->coef)
		return MS_OK;
	return ms_fail(err, MS_ERR_NOMEM, "out of memory merging block %s", w->p->labels[w->b]);
}

/* Group g's members into w->members with the target first, the others in index order, and their coefficients
 * (computed in index order, as merge_matrices would); returns the count in *n_out, the target expert in *target
 * and the member to copy (merge_copy_member, as an index into members) in *copy. */
static ms_status group_members(merge_work *w, int g, int *n_out, int *target, int *copy, ms_error *err)
{
	const int E = w->blk->E;
	const int *group = w->p->group + (size_t)w->b * E;
	const unsigned char *dominant = w->p->dominant + (size_t)w->b * E;
	const int ref = align_reference(w->blk, group, dominant, g, w->o->align);
	int n = 0, dom = 0;
	for (int e = 0; e < E; e++)
		if (group[e] == g) {
			if (dominant[e])
				dom = n;
			w->freq[n] = w->p->frequency[(size_t)w->b * E + e];
			w->members[n++] = e;
		}
	ms_status st = merge_coefficients(n, w->freq, dom, w->o->weighting, w->coef);
	if (st != MS_OK)
		return ms_fail(err, st, "block %s: group %d: merge weights failed", w->p->labels[w->b], g);
	int t = dom;
	for (int i = 0; i < n; i++)
		if (w->members[i] == ref)
			t = i;
	*copy = merge_copy_member(n, w->o->weighting, dom);
	*target = w->members[t];
	/* the target to the front, the others keeping their order */
	const int e_t = w->members[t];
	const double c_t = w->coef[t];
	for (int i = t; i > 0; i--) {
		w->members[i] = w->members[i - 1];
		w->coef[i] = w->coef[i - 1];
	}
	w->members[0] = e_t;
	w->coef[0] = c_t;
	if (*copy >= 0)
		*copy = *copy == t ? 0 : *copy < t ? *copy + 1 : *copy;
	*n_out = n;
	return MS_OK;
}

/* 1 when member i of a group (coefficient coef, copy as group_members gives it) takes part in the merge. */
static int contributes(int i, int copy, double coef)
{
	return copy >= 0 ? i == copy : (float)coef != 0.0f;
}

/* Every alignment the merge needs, on the untouched block. */
static ms_status align_all(merge_work *w, int G, ms_error *err)
{
	const pipe_block *blk = w->blk;
	const int *group = w->p->group + (size_t)w->b * blk->E;
	const unsigned char *dominant = w->p->dominant + (size_t)w->b * blk->E;
	for (int g = 0; g < G; g++) {
		int n, target, copy;
		ms_status st = group_members(w, g, &n, &target, &copy, err);
		const int ref = align_reference(blk, group, dominant, g, w->o->align);
		for (int i = 0; st == MS_OK && ref >= 0 && i < n; i++) {
			const int e = w->members[i];
			if (e == ref || !contributes(i, copy, w->coef[i]))
				continue;
			st = align_permutation(&blk->experts[ref], &blk->experts[e], w->perm + (size_t)e * blk->f);
			if (st != MS_OK)
				return ms_fail(err, st, "block %s: aligning expert %d to expert %d failed: %s",
					       w->p->labels[w->b], e, ref, ms_status_text(st));
			w->aligned[e] = 1;
		}
		if (st != MS_OK)
			return st;
	}
	return MS_OK;
}

/* Expert e's weights as the merge uses them: aligned when it has a permutation, in place or into tmp. */
static ms_status member_weights(merge_work *w, int e, const float **src)
{
	const pipe_block *blk = w->blk;
	*src = blk->weights + (int64_t)e * blk->per_expert;
	if (!w->aligned[e])
		return MS_OK;
	const int *perm = w->perm + (size_t)e * blk->f;
	if (w->weights) {
		float *at = w->weights + (int64_t)e * blk->per_expert;
		expert_weights v;
		expert_view(blk, at, &v);
		ms_status st = align_apply(perm, (float *)v.gate, (float *)v.up, (float *)v.down, blk->d, blk->f);
		if (st == MS_OK && blk->expert_bias)
			st = align_apply_biases(perm, blk->f, (float *)v.gate_bias, (float *)v.up_bias);
		return st;
	}
	expert_weights dst;
	expert_view(blk, w->tmp, &dst);
	*src = w->tmp;
	ms_status st = align_apply_into(perm, &blk->experts[e], (float *)dst.gate, (float *)dst.up, (float *)dst.down);
	if (st == MS_OK && blk->expert_bias) {   /* the down bias lies on the d axis: it is not permuted */
		memcpy((float *)dst.gate_bias, blk->experts[e].gate_bias, (size_t)(2 * blk->f + blk->d) * sizeof(float));
		st = align_apply_biases(perm, blk->f, (float *)dst.gate_bias, (float *)dst.up_bias);
	}
	return st;
}

typedef struct {
	float *out;
	const float *src;
	float c;
	int first;
} term_job;

static void term_span(void *ctx, int64_t begin, int64_t end)
{
	const term_job *j = ctx;
	if (j->out == j->src)
		merge_scale(j->out + begin, j->c, end - begin);
	else
		merge_term(j->out + begin, j->src + begin, j->c, end - begin, j->first);
}

/* Merges group g into out [per_expert] (the target member's storage when merging in place). */
static ms_status merge_group(merge_work *w, int g, float *out, ms_error *err)
{
	const pipe_block *blk = w->blk;
	int n, target, copy;
	ms_status st = group_members(w, g, &n, &target, &copy, err);
	int first = 1;
	for (int i = 0; st == MS_OK && i < n; i++) {
		if (!contributes(i, copy, w->coef[i]))
			continue;
		const float *src;
		st = member_weights(w, w->members[i], &src);
		if (st != MS_OK)
			return ms_fail(err, st, "block %s: aligning expert %d failed: %s", w->p->labels[w->b],
				       w->members[i], ms_status_text(st));
		if (copy >= 0) {
			if (out != src)
				memcpy(out, src, (size_t)blk->per_expert * sizeof *out);
			return MS_OK;
		}
		/* In place, only the target (member 0) can be out itself, and it comes first: a scaling. */
		term_job job = {.out = out, .src = src, .c = (float)w->coef[i], .first = first};
		run_split(blk->per_expert, term_span, &job);
		first = 0;
	}
	if (st == MS_OK && first)
		memset(out, 0, (size_t)blk->per_expert * sizeof *out);
	return st;
}

/* The storage group g's merge goes to: its target member's when merging in place. */
static float *group_storage(merge_work *w, const pipe_merged *mg, int g, ms_error *err, ms_status *st)
{
	if (!w->weights)
		return mg->weights + (int64_t)g * w->blk->per_expert;
	int n, target, copy;
	*st = group_members(w, g, &n, &target, &copy, err);
	return w->weights + (int64_t)target * w->blk->per_expert;
}

/* Shapes [rows, cols] of matrix `mat` of an expert; 0 rows for an absent gate. */
static void matrix_shape(const pipe_block *blk, int mat, int *rows, int *cols)
{
	*rows = mat == MDL_DOWN ? blk->d : blk->f;
	*cols = mat == MDL_DOWN ? blk->f : blk->d;
	if (mat == MDL_GATE && !mdl_act_gated(blk->act))   /* gpt_oss's clamped SwiGLU has a gate too */
		*rows = 0;
}

/* Room for the factors of a rows x cols matrix at the rank co chooses: the singular values are computed first so
 * the buffers hold exactly rank r (the SVD then runs twice: factored output is the rarer, slower path). */
static ms_status alloc_factors(const float *w, int rows, int cols, const cmp_options *co, cmp_factors *fa,
			       ms_error *err)
{
	int k = rows < cols ? rows : cols;
	double *s = malloc((size_t)k * sizeof *s);
	if (!s)
		return ms_fail(err, MS_ERR_NOMEM, "out of memory");
	ms_status st = cmp_singular_values(w, rows, cols, s);
	int r = st == MS_OK ? cmp_select_rank(s, k, co) : -1;
	free(s);
	if (st != MS_OK || r < 0)
		return ms_fail(err, st != MS_OK ? st : MS_ERR_ARG, "singular values of a %dx%d matrix failed", rows, cols);
	if (r >= k)
		return MS_OK; /* not compressed: stored dense */
	fa->max_rank = r > 0 ? r : 1;
	fa->u = malloc((size_t)rows * fa->max_rank * sizeof(float));
	fa->v = malloc((size_t)fa->max_rank * cols * sizeof(float));
	fa->max_nnz = cmp_sparse_count(rows, cols, co->sparse_ratio);
	if (fa->max_nnz > 0) {
		fa->sparse_idx = malloc((size_t)fa->max_nnz * sizeof(int32_t));
		fa->sparse_val = malloc((size_t)fa->max_nnz * sizeof(float));
	}
	if (!fa->u || !fa->v || (fa->max_nnz > 0 && (!fa->sparse_idx || !fa->sparse_val)))
		return ms_fail(err, MS_ERR_NOMEM, "out of memory for rank-%d factors", r);
	return MS_OK;
}

/* Replaces each matrix of slot s by its low-rank (plus sparse) reconstruction, keeping the factors when asked. */
static ms_status compress_slot(const pipe_block *blk, pipe_merged *mg, int s, const cmp_options *co, ms_error *err)
{
	expert_weights *w = &mg->experts[s];
	float *mats[MDL_NMAT] = {(float *)w->gate, (float *)w->up, (float *)w->down};
	for (int mat = 0; mat < MDL_NMAT; mat++) {
		int rows, cols;
		matrix_shape(blk, mat, &rows, &cols);
		cmp_result *res = &mg->compression[s * MDL_NMAT + mat];
		if (rows == 0 || !mats[mat])
			continue;
		cmp_factors *fa = mg->factors ? &mg->factors[s * MDL_NMAT + mat] : NULL;
		ms_status st = fa ? alloc_factors(mats[mat], rows, cols, co, fa, err) : MS_OK;
		if (st != MS_OK)
			return st;
		float *approx = malloc((size_t)rows * cols * sizeof *approx);
		if (!approx)
			return ms_fail(err, MS_ERR_NOMEM, "out of memory compressing a %dx%d matrix", rows, cols);
		st = cmp_compress(mats[mat], rows, cols, co, approx, res, fa && fa->u ? fa : NULL, err);
		if (st == MS_OK)
			memcpy(mats[mat], approx, (size_t)rows * cols * sizeof *approx);
		free(approx);
		if (st != MS_OK)
			return st;
	}
	return MS_OK;
}

/* The merged block's arrays. Merging in place, weights holds only the padding copies (slots G..n_slots-1) and
 * slots 0..G-1 are pointed at their groups' storage later. */
static ms_status alloc_merged(const pipe_block *blk, int n_slots, int n_router, int G, int compress,
			      int keep_factors, int in_place, pipe_merged *mg, ms_error *err)
{
	mg->n_slots = n_slots;
	mg->per_expert = (int)blk->per_expert;
	mg->n_router = n_router;
	mg->groups = G;
	const int owned = in_place ? n_slots - G : n_slots, first_owned = n_slots - owned;
	mg->weights = malloc((size_t)(owned > 0 ? owned : 1) * blk->per_expert * sizeof(float));
	if (mg->weights)
		pages_populate(mg->weights, (size_t)owned * blk->per_expert * sizeof(float));
	mg->experts = calloc((size_t)n_slots, sizeof *mg->experts);
	mg->slot_group = malloc((size_t)n_slots * sizeof(int));
	mg->router = malloc((size_t)n_router * blk->d * sizeof(float));
	mg->slot = malloc((size_t)n_router * sizeof(int));
	mg->router_residual = malloc((size_t)(G > 0 ? G : 1) * sizeof(double));
	if (compress)
		mg->compression = calloc((size_t)n_slots * MDL_NMAT, sizeof(cmp_result));
	if (compress && keep_factors && !(mg->factors = calloc((size_t)G * MDL_NMAT, sizeof(cmp_factors))))
		return ms_fail(err, MS_ERR_NOMEM, "out of memory for a merged block of %d experts", n_slots);
	if (!mg->weights || !mg->experts || !mg->slot_group || !mg->router || !mg->slot || !mg->router_residual ||
	    (compress && !mg->compression))
		return ms_fail(err, MS_ERR_NOMEM, "out of memory for a merged block of %d experts", n_slots);
	for (int s = first_owned; s < n_slots; s++)
		expert_view(blk, mg->weights + (int64_t)(s - first_owned) * blk->per_expert, &mg->experts[s]);
	for (int g = 0; g < G; g++)
		mg->router_residual[g] = NAN;
	return MS_OK;
}

/* Compact padding: slots G..n_slots-1 repeat the groups in label order (msmoe labels are usage order, so the
 * most-used merged experts are the ones duplicated). */
static void fill_slot_groups(pipe_merged *mg, int G)
{
	for (int s = 0; s < mg->n_slots; s++)
		mg->slot_group[s] = G > 0 ? s % G : -1;
}

/* A group of one expert keeps its router row exactly (the ridge-regularised fit would only approximate it), so a
 * block the plan leaves alone routes as before. */
static void keep_singleton_rows(const pipe_block *blk, const int *group, int G, pipe_merged *mg)
{
	for (int g = 0; g < G; g++) {
		int member = -1, count = 0;
		for (int e = 0; e < blk->E; e++)
			if (group[e] == g) {
				member = e;
				count++;
			}
		if (count == 1) {
			memcpy(mg->router + (size_t)g * blk->d, blk->router + (size_t)member * blk->d,
			       (size_t)blk->d * sizeof(float));
			if (blk->router_bias)
				mg->router_bias[g] = blk->router_bias[member];
			mg->router_residual[g] = 0.0;
		}
	}
}

static void round_to_dtype(st_dtype dtype, float *x, int64_t n);

/* A compact slot routes for its whole group with one bias: the dominant's, the member whose traffic the merged
 * expert mostly carries (docs/design.md §4.3). Rounded to the bias tensor's dtype as it will be written. */
static ms_status merged_score_bias(const pipe_block *blk, const plan *p, int b, pipe_merged *mg, ms_error *err)
{
	if (!blk->score_bias)
		return MS_OK;
	const int E = blk->E;
	if (!mg->score_bias && !(mg->score_bias = malloc((size_t)mg->n_router * sizeof *mg->score_bias)))
		return ms_fail(err, MS_ERR_NOMEM, "block %s: out of memory", p->labels[b]);
	for (int s = 0; s < mg->n_router; s++) {
		const int g = mg->slot_group[mg->slot[s]];
		mg->score_bias[s] = 0.0f;
		for (int e = 0; e < E; e++)
			if (p->group[(size_t)b * E + e] == g && p->dominant[(size_t)b * E + e])
				mg->score_bias[s] = blk->score_bias[e];
	}
	round_to_dtype(blk->score_bias_dtype, mg->score_bias, mg->n_router);
	return MS_OK;
}

/* A router with a logit bias b_e routes on x W_e^T + b_e: the bias is one more router column whose input is always
 * 1. The row method runs on that extended router and inputs [x, 1], so a merged row and its bias come from the
 * same rule (the dominant's pair, the frequency-weighted mean of the pairs, or the lse-fit of both), and the
 * extended rows are split back into rows [G, d] and bias [G]. */
static ms_status biased_rows(const pipe_block *blk, const plan *p, int b, rfit_method method, float *out,
			     float *bias, double *residual, ms_error *err)
{
	const int E = blk->E, d = blk->d, G = plan_groups(p, b), d1 = d + 1;
	const int64_t T = blk->T;
	float *router = malloc((size_t)E * d1 * sizeof *router);
	float *rows = malloc((size_t)(G > 0 ? G : 1) * d1 * sizeof *rows);
	float *x = T > 0 ? malloc((size_t)(T * d1) * sizeof *x) : NULL;
	ms_status st = router && rows && (T == 0 || x) ? MS_OK
		: ms_fail(err, MS_ERR_NOMEM, "block %s: out of memory for the router's bias column", p->labels[b]);
	for (int e = 0; st == MS_OK && e < E; e++) {
		memcpy(router + (size_t)e * d1, blk->router + (size_t)e * d, (size_t)d * sizeof *router);
		router[(size_t)e * d1 + d] = blk->router_bias[e];
	}
	for (int64_t t = 0; st == MS_OK && t < T; t++) {
		memcpy(x + t * d1, blk->x + t * d, (size_t)d * sizeof *x);
		x[t * d1 + d] = 1.0f;
	}
	if (st == MS_OK)
		st = rfit_rows(method, x, T, d1, router, E, p->group + (size_t)b * E, p->dominant + (size_t)b * E,
			       p->frequency + (size_t)b * E, G, RFIT_LAMBDA_DEFAULT, rows, residual, err);
	for (int g = 0; st == MS_OK && g < G; g++) {
		memcpy(out + (size_t)g * d, rows + (size_t)g * d1, (size_t)d * sizeof *rows);
		bias[g] = rows[(size_t)g * d1 + d];
	}
	free(router);
	free(rows);
	free(x);
	return st;
}

ms_status pipe_router_fit(const pipe_block *blk, const plan *p, int b, rfit_method method, float *rows,
			  float *bias, double *residual, ms_error *err)
{
	const int E = blk->E;
	if (blk->router_bias)
		return bias ? biased_rows(blk, p, b, method, rows, bias, residual, err)
			    : ms_fail(err, MS_ERR_ARG, "block %s: the router has a bias: its merged bias needs room",
				      p->labels[b]);
	return rfit_rows(method, blk->x, blk->T, blk->d, blk->router, E, p->group + (size_t)b * E,
			 p->dominant + (size_t)b * E, p->frequency + (size_t)b * E, plan_groups(p, b),
			 RFIT_LAMBDA_DEFAULT, rows, residual, err);
}

/* The compact router rows of one method into mg->router (padding slots repeat their group's row), rounded to the
 * router's dtype as they will be written. */
static ms_status router_rows(const pipe_block *blk, const plan *p, int b, rfit_method method, pipe_merged *mg,
			     ms_error *err)
{
	const int E = blk->E, d = blk->d, G = mg->groups;
	const int *group = p->group + (size_t)b * E;
	if (method == RFIT_LSE_FIT && blk->T == 0)
		return ms_fail(err, MS_ERR_ARG, "block %s: --router lse-fit needs the calibration set (--calib)",
			       p->labels[b]);
	for (int g = 0; g < G; g++)
		mg->router_residual[g] = NAN;
	if (blk->router_bias && !mg->router_bias &&
	    !(mg->router_bias = malloc((size_t)mg->n_router * sizeof *mg->router_bias)))
		return ms_fail(err, MS_ERR_NOMEM, "block %s: out of memory", p->labels[b]);
	ms_status st = pipe_router_fit(blk, p, b, method, mg->router, mg->router_bias,
				       blk->T > 0 ? mg->router_residual : NULL, err);
	if (st != MS_OK)
		return st;
	keep_singleton_rows(blk, group, G, mg);
	if (blk->router_bias) {
		for (int s = G; s < mg->n_slots; s++)
			mg->router_bias[s] = mg->router_bias[mg->slot_group[s]];
		round_to_dtype(blk->router_bias_dtype, mg->router_bias, mg->n_router);
	}
	for (int s = G; s < mg->n_slots; s++)
		memcpy(mg->router + (size_t)s * d, mg->router + (size_t)mg->slot_group[s] * d, (size_t)d * sizeof(float));
	for (int s = 0; s < mg->n_slots; s++)
		mg->slot[s] = s;
	mg->router_used = method;
	round_to_dtype(blk->router_dtype, mg->router, (int64_t)mg->n_router * d);
	return merged_score_bias(blk, p, b, mg, err);
}

/* The original block's routed output on (at most PIPE_FIT_TOKENS of) its fit tokens: what the router choice and
 * the refit match. Taken before merging, because merging in place consumes the original experts. With a capacity
 * (Switch) and the tokens' sequences, every fit token is taken (the split keeps whole sequences) with its
 * sequence, so the original and every merged block drop the tokens they drop in evaluation (blk_route): a dropped
 * token's target is 0 and its features are 0, so it takes no part in the fits. */
typedef struct {
	int64_t n;
	float *x;       /* [n, d] */
	float *y;       /* [n, d] */
	int32_t *seq;   /* [n] the tokens' sequences when a capacity applies, else NULL */
} fit_ref;

static void fit_ref_free(fit_ref *fr)
{
	free(fr->x);
	free(fr->y);
	free(fr->seq);
	memset(fr, 0, sizeof *fr);
}

static ms_status fit_reference(const pipe_block *blk, fit_ref *fr, ms_error *err)
{
	const int capacity = blk->seg && blk->routing.capacity > 0;
	const int64_t n_fit = fit_count(blk), n = blk_subsample_count(n_fit, capacity ? 0 : PIPE_FIT_TOKENS);
	const int64_t d = blk->d;
	fr->n = n;
	fr->x = malloc((size_t)(n * d) * sizeof *fr->x);
	fr->y = malloc((size_t)(n * d) * sizeof *fr->y);
	fr->seq = capacity ? malloc((size_t)(n > 0 ? n : 1) * sizeof *fr->seq) : NULL;
	if (!fr->x || !fr->y || (capacity && !fr->seq))
		return ms_fail(err, MS_ERR_NOMEM, "out of memory for %lld fit tokens", (long long)n);
	for (int64_t i = 0; i < n; i++) {
		const int64_t t = fit_token(blk, blk_subsample_index(i, n_fit, n));
		memcpy(fr->x + i * d, blk->x + t * d, (size_t)d * sizeof *fr->x);
		if (capacity)
			fr->seq[i] = blk->seg[t];
	}
	/* the routed part only: the shared expert is the same in the merged block, so what the routed experts must
	 * give is the original's full output minus the shared one, i.e. the original's routed output */
	blk_config orig = pipe_block_config(blk);
	orig.shared = NULL;
	orig.shared_gate = NULL;
	orig.seq = fr->seq;
	return blk_forward(&orig, fr->x, n, fr->y, NULL, NULL, err);
}

/* The merged block as analysis/block.h sees it. */
static blk_config merged_config(const pipe_block *blk, const pipe_merged *mg, int compact)
{
	blk_config c = {
		.n_router = mg->n_router, .router = mg->router, .slot = mg->slot, .n_slots = mg->n_slots,
		.experts = mg->experts, .routing = blk->routing, .d = blk->d,
	};
	if (compact && c.routing.top_k > mg->n_slots)
		c.routing.top_k = mg->n_slots;
	if (compact) {   /* merged slots belong to no original group: the written config drops the limit */
		c.routing.score_bias = mg->score_bias;
		c.routing.logit_bias = mg->router_bias;
		c.routing.n_group = c.routing.topk_group = 1;
	}
	if (compact && c.routing.capacity > 0)   /* the block's total capacity kept (mdl_config_set_experts) */
		c.routing.capacity = (int)ceil((double)c.routing.capacity * blk->E / mg->n_slots);
	extend_config(blk, &c);
	return c;
}

/* auto: every row method is tried and the one whose merged block's routed output is closest to the original's on
 * the fit tokens is kept (a method that cannot fit, e.g. lse-fit on dependent tokens, is left out). */
static ms_status choose_router(const pipe_block *blk, const plan *p, int b, const fit_ref *fr, pipe_merged *mg,
			       ms_error *err)
{
	int best = -1;
	for (int m = 0; m < RFIT_ROW_METHODS; m++) {
		mg->router_error[m] = NAN;
		ms_error e2 = {0};
		if (router_rows(blk, p, b, (rfit_method)m, mg, &e2) != MS_OK)
			continue;
		blk_config c = merged_config(blk, mg, 1);
		c.seq = fr->seq;
		ms_status st = rft_routed_error(&c, fr->x, fr->n, fr->y, &mg->router_error[m], err);
		if (st != MS_OK)
			return st;
		if (best < 0 || mg->router_error[m] < mg->router_error[best])
			best = m;
	}
	if (best < 0)
		return ms_fail(err, MS_ERR_NUMERIC, "block %s: no router method could make rows", p->labels[b]);
	return router_rows(blk, p, b, (rfit_method)best, mg, err);
}

static ms_status build_router(const pipe_block *blk, const plan *p, int b, const pipe_merge_options *o,
			      const fit_ref *fr, pipe_merged *mg, ms_error *err)
{
	const int E = blk->E, d = blk->d;
	const int *group = p->group + (size_t)b * E;
	for (int m = 0; m < RFIT_ROW_METHODS; m++)
		mg->router_error[m] = NAN;
	if (o->layout == PIPE_LAYOUT_ALIASED) {
		memcpy(mg->router, blk->router, (size_t)E * d * sizeof(float));
		memcpy(mg->slot, group, (size_t)E * sizeof(int));
		round_to_dtype(blk->router_dtype, mg->router, (int64_t)mg->n_router * d);
		return MS_OK;
	}
	if (o->router != RFIT_AUTO)
		return router_rows(blk, p, b, o->router, mg, err);
	if (fr->n == 0)   /* nothing to measure on: the mean rows need no tokens */
		return router_rows(blk, p, b, RFIT_MEAN, mg, err);
	return choose_router(blk, p, b, fr, mg, err);
}

typedef struct {
	st_dtype dtype;
	float *x;
} round_job;

static void round_span(void *ctx, int64_t begin, int64_t end)
{
	const round_job *j = ctx;
	float *x = j->x;
	if (j->dtype == ST_BF16)
		for (int64_t i = begin; i < end; i++)
			x[i] = st_bf16_to_f32(st_f32_to_bf16(x[i]));
	else if (j->dtype == ST_F16)
		for (int64_t i = begin; i < end; i++)
			x[i] = st_f16_to_f32(st_f32_to_f16(x[i]));
}

/* Rounds x [n] to the values dtype can hold (F16 and BF16 round to nearest even; F32 is left alone). */
static void round_to_dtype(st_dtype dtype, float *x, int64_t n)
{
	round_job job = {.dtype = dtype, .x = x};
	if (dtype == ST_BF16 || dtype == ST_F16)
		run_split(n, round_span, &job);
}

/* FP8 and MXFP4 experts: a merged matrix goes through the checkpoint's quantization and back (io/quant.h), so that
 * evaluation sees what the written checkpoint holds. The matrix is cut into strips of whole rows of quantization
 * blocks, one task a strip; the strips' errors are added afterwards in strip order. */
typedef struct {
	float *x;                /* [rows, cols], rounded in place */
	int64_t rows, cols;
	int strip;               /* rows per strip */
	int bc;                  /* FP8: columns per scale block */
	st_dtype scale_dtype;    /* FP8: dtype of the stored scales */
	const char *format;      /* "FP8" or "MXFP4", for messages */
	qt_error *errs;          /* [strips] */
} strip_job;

/* Rows r0 .. r0 + *n - 1 of strip i. */
static int64_t strip_rows(const strip_job *j, int64_t i, int64_t *n)
{
	const int64_t r0 = i * j->strip;
	*n = j->rows - r0 < j->strip ? j->rows - r0 : j->strip;
	return r0;
}

/* FP8: a strip is one row of [br, bc] scale blocks. */
static ms_status fp8_strip(void *ctx, int64_t i, ms_error *err)
{
	const strip_job *j = ctx;
	int64_t n;
	const int64_t r0 = strip_rows(j, i, &n), sc = (j->cols + j->bc - 1) / j->bc;
	uint8_t *codes = malloc((size_t)(n * j->cols));
	float *inv = malloc((size_t)sc * sizeof *inv);
	ms_status st = MS_OK;
	if (codes && inv)
		qt_fp8_quantize(j->x + r0 * j->cols, n, j->cols, j->strip, j->bc, j->scale_dtype, codes, inv,
				j->x + r0 * j->cols, &j->errs[i]);
	else
		st = ms_fail(err, MS_ERR_NOMEM, "out of memory quantizing a merged matrix to %s", j->format);
	free(codes);
	free(inv);
	return st;
}

/* MXFP4: each row of a merged [out, in] matrix is quantized in blocks of 32 values along `in`, as the checkpoint
 * stores it (gate and up rows interleaved into one tensor keep their own blocks); a strip is MX_STRIP rows. */
#define MX_STRIP 64
static ms_status mx_strip(void *ctx, int64_t i, ms_error *err)
{
	const strip_job *j = ctx;
	int64_t n;
	const int64_t r0 = strip_rows(j, i, &n);
	uint8_t *blocks = malloc((size_t)(n * j->cols / 2)), *scales = malloc((size_t)(n * j->cols / QT_MX_BLOCK));
	ms_status st = MS_OK;
	if (!blocks || !scales)
		st = ms_fail(err, MS_ERR_NOMEM, "out of memory quantizing a merged matrix to %s", j->format);
	else if (qt_mxfp4_quantize(j->x + r0 * j->cols, n, j->cols, blocks, scales, j->x + r0 * j->cols, &j->errs[i]))
		st = ms_fail(err, MS_ERR_NONFINITE, "a merged matrix holds NaN or infinity in rows %lld to %lld, which "
			     "MXFP4 cannot store", (long long)r0, (long long)(r0 + n - 1));
	free(blocks);
	free(scales);
	return st;
}

/* Rounds matrix `mat` of a merged FP8 or MXFP4 expert, x [rows, cols], in place, adding its error to acc. */
static ms_status round_matrix_quant(const pipe_block *blk, int mat, float *x, int rows, int cols, qt_error *acc,
				   ms_error *err)
{
	const int mx = blk->expert_dtype == ST_U8;
	strip_job j = {.x = x, .rows = rows, .cols = cols, .strip = mx ? MX_STRIP : blk->quant_block[0],
		       .bc = blk->quant_block[1], .scale_dtype = blk->quant_scale_dtype[mat],
		       .format = mx ? "MXFP4" : "FP8"};
	const int64_t strips = (rows + j.strip - 1) / j.strip;
	if (strips == 0)
		return MS_OK;
	j.errs = calloc((size_t)strips, sizeof *j.errs);
	if (!j.errs)
		return ms_fail(err, MS_ERR_NOMEM, "out of memory quantizing a merged matrix to %s", j.format);
	ms_status st = par_for(strips, mx ? mx_strip : fp8_strip, &j, err);
	for (int64_t i = 0; st == MS_OK && i < strips; i++)
		qt_error_add(acc, &j.errs[i]);
	free(j.errs);
	return st;
}

/* Rounds one merged expert to the checkpoint's storage: F16 or BF16 value by value, FP8 block by block, MXFP4
 * row block by row block with its biases to their float dtype (the error going into acc [MDL_NMAT]). */
static ms_status round_expert(const pipe_block *blk, const expert_weights *w, qt_error *acc, ms_error *err)
{
	if (blk->expert_dtype != ST_U8 && blk->expert_dtype != ST_F8_E4M3) {
		round_to_dtype(blk->expert_dtype, (float *)(w->gate ? w->gate : w->up), blk->per_expert);
		return MS_OK;
	}
	const float *mats[MDL_NMAT] = {w->gate, w->up, w->down};
	ms_status st = MS_OK;
	for (int mat = 0; st == MS_OK && mat < MDL_NMAT; mat++) {
		int rows, cols;
		matrix_shape(blk, mat, &rows, &cols);
		if (rows && mats[mat])
			st = round_matrix_quant(blk, mat, (float *)mats[mat], rows, cols, &acc[mat], err);
	}
	if (blk->expert_dtype == ST_U8 && w->gate_bias)
		round_to_dtype(blk->expert_bias_dtype, (float *)w->gate_bias, 2 * (int64_t)blk->f + blk->d);
	return st;
}

/* Merged weights must be finite once rounded to the checkpoint's dtype: finite inputs can still give infinity
 * when a low-rank reconstruction overshoots the largest F16 value, and a merge must not write or evaluate that. */
static ms_status check_merged_experts(const pipe_block *blk, const pipe_merged *mg, int G, const char *label,
				      ms_error *err)
{
	static const char *const names[MDL_NMAT] = {"gate", "up", "down"};
	for (int g = 0; g < G; g++) {
		const expert_weights *w = &mg->experts[g];
		const float *mats[MDL_NMAT] = {w->gate, w->up, w->down};
		for (int mat = 0; mat < MDL_NMAT; mat++) {
			int rows, cols;
			matrix_shape(blk, mat, &rows, &cols);
			int64_t bad = rows && mats[mat] ? fin_first_nonfinite(mats[mat], (int64_t)rows * cols) : -1;
			if (bad >= 0)
				return ms_fail(err, MS_ERR_NONFINITE, "block %s: merged group %d: %s matrix: row %lld: NaN "
					       "or infinity after merging%s and rounding to %s", label, g,
					       names[mat], (long long)(bad / cols), mg->compression ? ", compressing" : "",
					       st_dtype_name(blk->expert_dtype));
		}
	}
	return MS_OK;
}

static ms_status check_merged_router(const pipe_block *blk, const pipe_merged *mg, const char *label,
				     ms_error *err)
{
	int64_t bad = fin_first_nonfinite(mg->router, (int64_t)mg->n_router * blk->d);
	if (bad < 0)
		return MS_OK;
	return ms_fail(err, MS_ERR_NONFINITE, "block %s: merged router: row %lld: NaN or infinity after fitting and "
		       "rounding to %s", label, (long long)(bad / blk->d), st_dtype_name(blk->router_dtype));
}

/* Merges every group, rounds the merged experts to the checkpoint's dtype and checks them. */
static ms_status merge_groups(merge_work *w, pipe_merged *out, int G, int compress, ms_error *err)
{
	const pipe_block *blk = w->blk;
	ms_status st = merge_work_alloc(w, err);
	if (st == MS_OK)
		st = align_all(w, G, err);
	for (int g = 0; st == MS_OK && g < G; g++) {
		float *dst = group_storage(w, out, g, err, &st);
		if (st == MS_OK) {
			expert_view(blk, dst, &out->experts[g]);
			st = merge_group(w, g, dst, err);
		}
	}
	for (int g = 0; st == MS_OK && compress && g < G; g++)
		st = compress_slot(blk, out, g, &w->o->compress, err);
	memset(out->requant, 0, sizeof out->requant);
	for (int g = 0; st == MS_OK && g < G; g++)
		st = round_expert(blk, &out->experts[g], out->requant, err);
	if (st == MS_OK)
		st = check_merged_experts(blk, out, G, w->p->labels[w->b], err);
	return st;
}

/* The refit of the down projections (analysis/refit.h) on the fit tokens, the result rounded to the checkpoint's
 * dtype; the routed output error on the fit tokens before and after is kept for the report. */
static ms_status refit_block(const pipe_block *blk, const fit_ref *fr, pipe_merged *mg, const char *label,
			     ms_error *err)
{
	blk_config c = merged_config(blk, mg, 1);
	c.seq = fr->seq;   /* the refit routes (blk_route) with the capacity, as evaluation does */
	float **down = malloc((size_t)mg->n_slots * sizeof *down);
	if (!down)
		return ms_fail(err, MS_ERR_NOMEM, "out of memory");
	for (int s = 0; s < mg->n_slots; s++)
		down[s] = (float *)mg->experts[s].down;
	const rft_options ro = rft_defaults();
	ms_status st = rft_routed_error(&c, fr->x, fr->n, fr->y, &mg->fit_error_merged, err);
	if (st == MS_OK)
		st = rft_down(&c, down, fr->x, fr->n, fr->y, &ro, err);
	if (st == MS_OK && (blk->expert_dtype == ST_F8_E4M3 || blk->expert_dtype == ST_U8))
		memset(&mg->requant[MDL_DOWN], 0, sizeof mg->requant[MDL_DOWN]);   /* measured again on the refit */
	for (int s = 0; st == MS_OK && s < mg->n_slots; s++) {
		if (blk->expert_dtype == ST_U8 || blk->expert_dtype == ST_F8_E4M3)
			st = round_matrix_quant(blk, MDL_DOWN, down[s], blk->d, blk->f, &mg->requant[MDL_DOWN], err);
		else
			round_to_dtype(blk->expert_dtype, down[s], (int64_t)blk->d * blk->f);
	}
	free(down);
	if (st == MS_OK)
		st = check_merged_experts(blk, mg, mg->n_slots, label, err);
	if (st == MS_OK)
		st = rft_routed_error(&c, fr->x, fr->n, fr->y, &mg->fit_error_refit, err);
	mg->refitted = st == MS_OK;
	return st;
}

/* The refit holds one f x f double normal matrix per merged expert (analysis/refit.h). It runs while that stays
 * within a quarter of the block's float32 experts, or under REFIT_SMALL_BYTES whatever the block, so a merge
 * keeps to about the one-block memory bound: OLMoE-sized experts (f 1024) always fit; Mixtral's (f 14336, 1.6 GB
 * per expert) do not, and those blocks are merged without it (the report's "refit_skipped" says so). */
#define REFIT_SMALL_BYTES (256.0 * 1024 * 1024)

static int refit_fits(const pipe_block *blk, int n_slots)
{
	const double need = (double)n_slots * (double)blk->f * (double)blk->f * sizeof(double);
	const double block = (double)blk->E * (double)blk->per_expert * sizeof(float);
	return need <= block / 4.0 || need <= REFIT_SMALL_BYTES;
}

static ms_status merge_block(const pipe_block *blk, float *in_place, const plan *p, int b,
			     const pipe_merge_options *o, pipe_merged *out, ms_error *err)
{
	memset(out, 0, sizeof *out);
	const int G = plan_groups(p, b);
	if (G <= 0)
		return ms_fail(err, MS_ERR_ARG, "block %s: the plan keeps no expert", p->labels[b]);
	const int compact = o->layout == PIPE_LAYOUT_COMPACT;
	const int n_slots = compact && o->slots > G ? o->slots : G;
	if (compact && blk->sparsemixer_eps > 0 && n_slots < 2)
		return ms_fail(err, MS_ERR_ARG, "block %s: sparsemixer routing (phimoe) picks 2 experts, and a compact "
			       "block with %d would leave its second choice without a candidate (transformers computes "
			       "NaN): plan at least 2 groups, or use --layout aliased", p->labels[b], n_slots);
	const int compress = o->compress.mode != CMP_RANK_NONE || o->compress.sparse_ratio > 0;
	const int refit_asked = compact && !compress && o->refit == PIPE_REFIT_DOWN && blk->T > 0;
	const int refit = refit_asked && refit_fits(blk, n_slots);
	fit_ref fr = {0};
	ms_status st = compact && blk->T > 0 && (refit || o->router == RFIT_AUTO) ? fit_reference(blk, &fr, err)
										  : MS_OK;
	if (st == MS_OK)
		st = alloc_merged(blk, n_slots, compact ? n_slots : blk->E, G, compress, o->keep_factors,
				  in_place != NULL, out, err);
	out->fit_tokens = fr.n;
	out->refit_skipped = refit_asked && !refit;
	out->layout = o->layout;
	out->fit_error_merged = out->fit_error_refit = NAN;
	merge_work w = {.blk = blk, .p = p, .b = b, .o = o, .weights = in_place};
	if (st == MS_OK)
		st = merge_groups(&w, out, G, compress, err);
	merge_work_free(&w);
	if (st == MS_OK) {
		fill_slot_groups(out, G);
		for (int s = G; s < n_slots; s++) {
			const expert_weights *from = &out->experts[out->slot_group[s]];
			memcpy((float *)(out->experts[s].gate ? out->experts[s].gate : out->experts[s].up),
			       from->gate ? from->gate : from->up, (size_t)blk->per_expert * sizeof(float));
		}
		st = build_router(blk, p, b, o, &fr, out, err);
	}
	if (st == MS_OK)
		st = check_merged_router(blk, out, p->labels[b], err);
	if (st == MS_OK && refit)
		st = refit_block(blk, &fr, out, p->labels[b], err);
	fit_ref_free(&fr);
	if (st != MS_OK) {
		pipe_free_merged(out);
		return st;
	}
	out->cfg = merged_config(blk, out, compact);
	return MS_OK;
}

ms_status pipe_merge_block(const pipe_block *blk, const plan *p, int b, const pipe_merge_options *o,
			   pipe_merged *out, ms_error *err)
{
	return merge_block(blk, NULL, p, b, o, out, err);
}

ms_status pipe_merge_block_in_place(pipe_block *blk, const plan *p, int b, const pipe_merge_options *o,
				    pipe_merged *out, ms_error *err)
{
	return merge_block(blk, blk->weights, p, b, o, out, err);
}

void pipe_compressed_params(const pipe_merged *mg, int64_t *before, int64_t *after)
{
	*before = *after = 0;
	for (int i = 0; mg->compression && i < mg->groups * MDL_NMAT; i++) {
		*before += mg->compression[i].params_before;
		*after += mg->compression[i].params_after;
	}
}

ms_status pipe_eval_block(const pipe_block *blk, const pipe_merged *mg, const plan *p, int b, int64_t max_tokens,
			  blk_eval_result *out, ms_error *err)
{
	blk_eval_ref ref;
	ms_status st = pipe_eval_reference(blk, p, b, max_tokens, &ref, err);
	if (st == MS_OK)
		st = pipe_eval_against(&ref, blk, mg, p, b, out, err);
	blk_eval_ref_free(&ref);
	return st;
}

ms_status pipe_eval_reference(const pipe_block *blk, const plan *p, int b, int64_t max_tokens, blk_eval_ref *ref,
			      ms_error *err)
{
	memset(ref, 0, sizeof *ref);
	if (blk->T == 0)
		return ms_fail(err, MS_ERR_ARG, "block %s: evaluation needs the calibration set", p->labels[b]);
	blk_config orig = pipe_block_config(blk);
	if (!blk->held_idx) {
		orig.seq = blk->routing.capacity > 0 ? blk->seg : NULL;
		return blk_eval_reference(&orig, blk->x, blk->T, max_tokens, ref, err);
	}
	float *xh = malloc((size_t)(blk->n_held * blk->d) * sizeof *xh);   /* [n_held, d] */
	if (!xh)
		return ms_fail(err, MS_ERR_NOMEM, "block %s: out of memory for %lld held-out tokens", p->labels[b],
			       (long long)blk->n_held);
	blk_gather(blk->x, blk->d, blk->held_idx, blk->n_held, xh);
	int32_t *sh = NULL;   /* [n_held] their sequences, for a capacity */
	if (blk->seg && blk->routing.capacity > 0 && (sh = malloc((size_t)blk->n_held * sizeof *sh)) == NULL) {
		free(xh);
		return ms_fail(err, MS_ERR_NOMEM, "block %s: out of memory", p->labels[b]);
	}
	for (int64_t i = 0; sh && i < blk->n_held; i++)
		sh[i] = blk->seg[blk->held_idx[i]];
	orig.seq = sh;
	ms_status st = blk_eval_reference(&orig, xh, blk->n_held, max_tokens, ref, err);
	free(xh);
	free(sh);
	return st;
}

ms_status pipe_eval_against(const blk_eval_ref *ref, const pipe_block *blk, const pipe_merged *mg, const plan *p,
			    int b, blk_eval_result *out, ms_error *err)
{
	return blk_eval_against(ref, &mg->cfg, p->group + (size_t)b * blk->E, mg->slot_group, out, err);
}

void pipe_free_stats(pipe_stats *s)
{
	if (!s)
		return;
	free(s->frequency);
	free(s->coact);
	for (int i = 0; i < SIM_BASE_COUNT; i++) {
		free(s->similarity[i]);
		free(s->distance[i]);
	}
	free(s->stable_rank);
	free(s->reap);
	memset(s, 0, sizeof *s);
}

typedef struct {
	const expert_weights *experts;
	double tol;
	double *sr;
} srank_job;

/* Stable rank of matrix (task % MDL_NMAT) of expert (task / MDL_NMAT). */
static ms_status srank_task(void *ctx, int64_t task, ms_error *err)
{
	const srank_job *j = ctx;
	const int e = (int)(task / MDL_NMAT), mat = (int)(task % MDL_NMAT);
	const expert_weights *w = &j->experts[e];
	const float *mats[MDL_NMAT] = {w->gate, w->up, w->down};
	const int rows = mat == MDL_DOWN ? w->d : w->f, cols = mat == MDL_DOWN ? w->f : w->d;
	double *dst = &j->sr[task];
	*dst = NAN;
	if (!mats[mat])
		return MS_OK;
	ms_status st = srank_stable_rank(mats[mat], rows, cols, j->tol, dst);
	return st == MS_OK ? MS_OK : ms_fail(err, st, "expert %d: stable rank failed: %s", e, ms_status_text(st));
}

ms_status pipe_stable_ranks(const expert_weights *experts, int n, double tol, double *sr, ms_error *err)
{
	srank_job j = {.experts = experts, .tol = tol, .sr = sr};
	return par_for((int64_t)n * MDL_NMAT, srank_task, &j, err);
}

/* Routing of the calibration tokens: logits z [T, E] (kept for router-logits), selections and weights. */
static ms_status block_routing(const pipe_block *blk, pipe_stats *out, float **z, int **idx, float **w,
			       ms_error *err)
{
	const int64_t T = blk->T;
	const int k = blk->routing.top_k;
	*z = malloc((size_t)(T * blk->E) * sizeof **z);
	*idx = malloc((size_t)(T * k) * sizeof **idx);
	*w = malloc((size_t)(T * k) * sizeof **w);
	out->frequency = calloc((size_t)blk->E, sizeof *out->frequency);
	out->coact = calloc((size_t)blk->E * blk->E, sizeof *out->coact);
	if (!*z || !*idx || !*w || !out->frequency || !out->coact)
		return ms_fail(err, MS_ERR_NOMEM, "out of memory routing %lld tokens", (long long)T);
	ms_status st = route_logits(blk->x, T, blk->d, blk->router, blk->E, *z);
	if (st == MS_OK && blk->sparsemixer_eps > 0 && (k != 2 || blk->E < 2))
		st = MS_ERR_ARG;   /* the model reader refuses these: sparsemixer picks 2 of at least 2 experts */
	if (st == MS_OK)
		route_add_bias(*z, T, blk->E, blk->routing.logit_bias);
	if (st == MS_OK && blk->sparsemixer_eps > 0)   /* usage as the family routes: PhiMoE's sparsemixer */
		blk_sparsemixer(*z, T, blk->E, blk->sparsemixer_eps, *idx, *w);
	else if (st == MS_OK)
		st = route_topk(*z, T, blk->E, &blk->routing, *idx, *w);
	if (st == MS_OK)
		st = route_stats(*idx, T, blk->E, k, out->frequency, out->coact, &out->usage_entropy, &out->cv);
	return st == MS_OK ? MS_OK : ms_fail(err, st, "routing failed: %s", ms_status_text(st));
}

static ms_status block_similarities(const pipe_block *blk, unsigned bases, const float *z, pipe_stats *out,
				    ms_error *err)
{
	const size_t EE = (size_t)blk->E * blk->E;
	sim_inputs in = {
		.E = blk->E, .d = blk->d, .T = blk->T, .z = z, .x = blk->x, .router = blk->router,
		.router_bias = blk->router_bias, .experts = blk->experts, .chunk = 0,
	};
	for (int base = 0; base < SIM_BASE_COUNT; base++) {
		if (!(bases & (1u << base)))
			continue;
		out->similarity[base] = malloc(EE * sizeof(double));
		out->distance[base] = malloc(EE * sizeof(double));
		if (!out->similarity[base] || !out->distance[base])
			return ms_fail(err, MS_ERR_NOMEM, "out of memory for %dx%d similarities", blk->E, blk->E);
		ms_status st = sim_compute((sim_base)base, &in, out->similarity[base], out->distance[base]);
		if (st != MS_OK)
			return ms_fail(err, st, "%s similarity failed: %s", sim_base_name((sim_base)base),
				       ms_status_text(st));
	}
	return MS_OK;
}

/* The statistics that need no calibration tokens. */
static ms_status weight_statistics(const pipe_block *blk, const pipe_analyze_options *o, pipe_stats *out,
				   ms_error *err)
{
	if (!o->stable_ranks)
		return MS_OK;
	out->stable_rank = malloc((size_t)blk->E * MDL_NMAT * sizeof(double));
	if (!out->stable_rank)
		return ms_fail(err, MS_ERR_NOMEM, "out of memory");
	return pipe_stable_ranks(blk->experts, blk->E, o->srank_tol > 0 ? o->srank_tol : SRANK_DEFAULT_TOL,
				 out->stable_rank, err);
}

ms_status pipe_analyze_block(const pipe_block *blk, const pipe_analyze_options *o, pipe_stats *out, ms_error *err)
{
	memset(out, 0, sizeof *out);
	out->E = blk->E;
	out->T = blk->T;
	const int tokens = blk->T > 0 && blk->x;
	if (!tokens && ((o->bases & ~sim_bases_without_calibration()) || o->reap))
		return ms_fail(err, MS_ERR_ARG, "usage, router-logits, expert-output and REAP need the calibration set");
	float *z = NULL, *w = NULL;
	int *idx = NULL;
	ms_status st = tokens ? block_routing(blk, out, &z, &idx, &w, err) : MS_OK;
	if (st == MS_OK)
		st = block_similarities(blk, o->bases, z, out, err);
	if (st == MS_OK)
		st = weight_statistics(blk, o, out, err);
	if (st == MS_OK && o->reap) {
		out->reap = malloc((size_t)blk->E * sizeof *out->reap);
		st = out->reap ? grp_reap_saliency(blk->experts, blk->E, blk->x, blk->T, idx, w, blk->routing.top_k,
						   out->reap)
			       : MS_ERR_NOMEM;
		if (st != MS_OK)
			ms_fail(err, st, "REAP saliency failed: %s", ms_status_text(st));
	}
	free(z);
	free(idx);
	free(w);
	if (st != MS_OK)
		pipe_free_stats(out);
	return st;
}

/* Group counts per block: the override, the global allocation, or G everywhere merged (E elsewhere). */
static ms_status plan_counts(const pipe_stats *stats, int n_blocks, const pipe_plan_options *o, int *counts,
			     ms_error *err)
{
	const int E = stats[0].E;
	for (int b = 0; b < n_blocks; b++) {
		int merged = !o->merge || o->merge[b];
		counts[b] = o->block_groups ? o->block_groups[b] : merged ? o->groups : E;
		if (counts[b] < 1 || counts[b] > E)
			return ms_fail(err, MS_ERR_ARG, "block %d: %d groups is outside 1..%d", b, counts[b], E);
	}
	if (o->block_groups || !o->global)
		return MS_OK;
	double *freq = malloc((size_t)n_blocks * E * sizeof *freq);
	unsigned char *merged = malloc((size_t)n_blocks);
	if (!freq || !merged) {
		free(freq);
		free(merged);
		return ms_fail(err, MS_ERR_NOMEM, "out of memory");
	}
	for (int b = 0; b < n_blocks; b++) {
		memcpy(freq + (size_t)b * E, stats[b].frequency, (size_t)E * sizeof *freq);
		merged[b] = !o->merge || o->merge[b];
	}
	ms_status st = grp_global_counts(n_blocks, E, freq, merged, o->groups, counts, err);
	free(freq);
	free(merged);
	return st;
}

/* Groups block b's experts into G groups by the chosen method. */
static ms_status group_block(const pipe_stats *s, int G, const pipe_plan_options *o, int *group,
			     unsigned char *dominant, ms_error *err)
{
	const double *sim = s->similarity[o->base], *dist = s->distance[o->base];
	switch (o->method) {
	case GRP_MSMOE:
		if (!sim)
			return ms_fail(err, MS_ERR_ARG, "msmoe needs the %s similarity", sim_base_name(o->base));
		return grp_msmoe(s->E, G, s->frequency, sim, group, dominant);
	case GRP_HC:
		if (!dist)
			return ms_fail(err, MS_ERR_ARG, "hc needs the %s distance", sim_base_name(o->base));
		return grp_hc(s->E, G, dist, o->linkage, s->frequency, group, dominant);
	case GRP_PRUNE_FREQUENCY:
		return grp_prune(s->E, G, s->frequency, group, dominant);
	case GRP_PRUNE_REAP:
		if (!s->reap)
			return ms_fail(err, MS_ERR_ARG, "prune-reap needs REAP saliency");
		return grp_prune(s->E, G, s->reap, group, dominant);
	default:
		return ms_fail(err, MS_ERR_ARG, "unknown grouping method");
	}
}

/* The people-facing columns: frequency, similarity to the dominant, stable ranks. */
static void plan_columns(const pipe_stats *s, sim_base base, int b, plan *p)
{
	const int E = s->E;
	const int *group = p->group + (size_t)b * E;
	const unsigned char *dominant = p->dominant + (size_t)b * E;
	for (int e = 0; e < E; e++) {
		size_t i = (size_t)b * E + e;
		p->frequency[i] = s->frequency[e];
		p->similarity[i] = NAN;
		for (int m = 0; m < MDL_NMAT; m++)
			p->stable_rank[i * MDL_NMAT + m] = s->stable_rank ? s->stable_rank[(size_t)e * MDL_NMAT + m] : NAN;
		if (group[e] < 0 || !s->similarity[base])
			continue;
		for (int j = 0; j < E; j++)
			if (group[j] == group[e] && dominant[j])
				p->similarity[i] = s->similarity[base][(size_t)e * E + j];
	}
}

ms_status pipe_make_plan(const pipe_stats *stats, int n_blocks, const pipe_plan_options *o, plan *p,
			 ms_error *err)
{
	if (n_blocks <= 0 || p->n_blocks != n_blocks || p->n_experts != stats[0].E)
		return ms_fail(err, MS_ERR_ARG, "plan does not match the model");
	int *counts = malloc((size_t)n_blocks * sizeof *counts);
	if (!counts)
		return ms_fail(err, MS_ERR_NOMEM, "out of memory");
	ms_status st = plan_counts(stats, n_blocks, o, counts, err);
	for (int b = 0; st == MS_OK && b < n_blocks; b++) {
		const int E = stats[b].E;
		int *group = p->group + (size_t)b * E;
		unsigned char *dominant = p->dominant + (size_t)b * E;
		if (o->merge && !o->merge[b] && !o->block_groups) {
			for (int e = 0; e < E; e++) {
				group[e] = e;
				dominant[e] = 1;
			}
		} else {
			st = group_block(&stats[b], counts[b], o, group, dominant, err);
			if (st != MS_OK && err && err->code != st)
				ms_fail(err, st, "%s", ms_status_text(st));
			if (st != MS_OK) {
				char where[64];
				snprintf(where, sizeof where, "block %s", p->labels[b]);
				ms_error_prefix(err, where);
			}
		}
		if (st == MS_OK)
			plan_columns(&stats[b], o->base, b, p);
	}
	free(counts);
	return st;
}

ms_status pipe_output_norm(const blk_config *cfg, const float *x, int64_t T, int64_t max_tokens, double *norm,
			   ms_error *err)
{
	/* a capacity counts over whole sequences: then every token goes through, as in MEO and blk_eval_reference;
	 * otherwise the subsample, whose tokens the sequences no longer describe */
	const int capacity = cfg->seq && cfg->routing.capacity > 0;
	const int64_t n = blk_subsample_count(T, capacity ? 0 : max_tokens);
	const int d = cfg->d;
	blk_config c = *cfg;
	if (!capacity)
		c.seq = NULL;
	float *xs = malloc((size_t)(n * d) * sizeof *xs);
	float *y = malloc((size_t)(n * d) * sizeof *y);
	ms_status st = MS_OK;
	if (!xs || !y)
		st = ms_fail(err, MS_ERR_NOMEM, "out of memory for %lld tokens", (long long)n);
	for (int64_t i = 0; st == MS_OK && i < n; i++)
		memcpy(xs + i * d, x + blk_subsample_index(i, T, n) * d, (size_t)d * sizeof *xs);
	if (st == MS_OK)
		st = blk_forward(&c, xs, n, y, NULL, NULL, err);
	double sum = 0.0;
	for (int64_t i = 0; st == MS_OK && i < n * d; i++)
		sum += (double)y[i] * y[i];
	*norm = sqrt(sum);
	free(xs);
	free(y);
	return st;
}
