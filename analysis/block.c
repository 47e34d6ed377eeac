#include "analysis/block.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/par.h"
#include "analysis/routing.h"

/* Tokens whose router logits are computed at once: bounds the logits buffer to ROUTE_CHUNK * n_router floats. */
#define ROUTE_CHUNK 4096
/* Evaluated tokens per pair of forward passes in blk_eval: its buffers stay a few times EVAL_CHUNK * d floats
 * whatever max_tokens is, and a chunk is long enough to give every expert a tall GEMM. */
#define EVAL_CHUNK 2048

/* malloc of n elements, NULL when n is negative or the byte count overflows; never malloc(0). */
static void *alloc_array(int64_t n, size_t size)
{
	if (n < 0 || (uint64_t)n > SIZE_MAX / size)
		return NULL;
	return malloc(n > 0 ? (size_t)n * size : 1);
}

/* par_scratch (this thread's buffer `slot`, kept across tasks) of n elements, with alloc_array's checks. */
static void *scratch_array(int slot, int64_t n, size_t size)
{
	if (n < 0 || (uint64_t)n > SIZE_MAX / size)
		return NULL;
	return par_scratch(slot, (size_t)n * size);
}

static ms_status check_expert(const expert_weights *w, int d, int s, ms_error *err)
{
	if (w->d != d || w->f <= 0 || !w->up || !w->down)
		return ms_fail(err, MS_ERR_ARG, "expert slot %d: width %d, intermediate size %d, up %s, down %s "
			       "(the block's width is %d)", s, w->d, w->f, w->up ? "present" : "missing",
			       w->down ? "present" : "missing", d);
	if ((int)w->act < 0 || (int)w->act >= MDL_ACT_COUNT)
		return ms_fail(err, MS_ERR_ARG, "expert slot %d: unknown activation %d", s, (int)w->act);
	if (mdl_act_gated(w->act) && !w->gate)
		return ms_fail(err, MS_ERR_ARG, "expert slot %d: gated expert without its gate matrix", s);
	return MS_OK;
}

ms_status blk_check(const blk_config *cfg, ms_error *err)
{
	if (!cfg)
		return ms_fail(err, MS_ERR_ARG, "block: no configuration");
	if (cfg->n_router <= 0 || cfg->n_slots <= 0 || cfg->d <= 0 || !cfg->router || !cfg->slot || !cfg->experts)
		return ms_fail(err, MS_ERR_ARG, "block: %d router rows, %d expert slots, width %d: sizes must be "
			       "positive and the arrays present", cfg->n_router, cfg->n_slots, cfg->d);
	if (cfg->routing.top_k <= 0 || !isfinite(cfg->routing.scale))
		return ms_fail(err, MS_ERR_ARG, "block: top-k %d and routing scale %g: need top-k >= 1 and a finite "
			       "scale", cfg->routing.top_k, (double)cfg->routing.scale);
	int active = 0;
	for (int r = 0; r < cfg->n_router; r++) {
		if (cfg->slot[r] < -1 || cfg->slot[r] >= cfg->n_slots)
			return ms_fail(err, MS_ERR_ARG, "block: router row %d dispatches to slot %d, outside -1..%d", r,
				       cfg->slot[r], cfg->n_slots - 1);
		active += cfg->slot[r] >= 0;
	}
	if (active == 0)
		return ms_fail(err, MS_ERR_ARG, "block: every router row is masked out of routing");
	for (int s = 0; s < cfg->n_slots; s++) {
		ms_status st = check_expert(&cfg->experts[s], cfg->d, s, err);
		if (st != MS_OK)
			return st;
	}
	if (cfg->shared && check_expert(cfg->shared, cfg->d, -1, err) != MS_OK)
		return ms_fail(err, MS_ERR_ARG, "block: the shared expert does not fit the block (width %d)", cfg->d);
	if (cfg->routing.n_group > 0 && cfg->routing.topk_group < cfg->routing.n_group &&
	    (cfg->routing.topk_group < 1 || cfg->n_router % cfg->routing.n_group != 0))
		return ms_fail(err, MS_ERR_ARG, "block: %d router rows in %d groups (%d eligible): the groups must divide "
			       "the rows", cfg->n_router, cfg->routing.n_group, cfg->routing.topk_group);
	if (cfg->sparsemixer_eps > 0 && (cfg->routing.top_k != 2 || active < 2))
		return ms_fail(err, MS_ERR_ARG, "block: sparsemixer routing picks 2 experts (top-k %d, %d rows routed)",
			       cfg->routing.top_k, active);
	return MS_OK;
}

static int count_active(const blk_config *cfg)
{
	int active = 0;
	for (int r = 0; r < cfg->n_router; r++)
		active += cfg->slot[r] >= 0;
	return active;
}

int blk_top_k(const blk_config *cfg)
{
	if (blk_check(cfg, NULL) != MS_OK)
		return 0;
	int active = count_active(cfg);
	return cfg->routing.top_k < active ? cfg->routing.top_k : active;
}

/* The unmasked rows rows [n_active] and, when some are masked, a copy of just their router rows so that masked
 * logits are never computed: softmax and top-k then see the unmasked rows only, as if masked logits were -inf. */
static ms_status active_router(const blk_config *cfg, int *rows, int *n_active, float **owned, ms_error *err)
{
	int n = 0;
	for (int r = 0; r < cfg->n_router; r++)
		if (cfg->slot[r] >= 0)
			rows[n++] = r;
	*n_active = n;
	*owned = NULL;
	if (n == cfg->n_router)
		return MS_OK;
	*owned = alloc_array((int64_t)n * cfg->d, sizeof(float));
	if (!*owned)
		return ms_fail(err, MS_ERR_NOMEM, "block routing: out of memory for %d router rows", n);
	for (int i = 0; i < n; i++)
		memcpy(*owned + (int64_t)i * cfg->d, cfg->router + (int64_t)rows[i] * cfg->d,
		       (size_t)cfg->d * sizeof(float));
	return MS_OK;
}

static ms_status check_logits(const float *z, int64_t n, int E, int64_t t0, const int *rows, ms_error *err)
{
	for (int64_t i = 0; i < n * E; i++)
		if (!isfinite(z[i]))
			return ms_fail(err, MS_ERR_NONFINITE, "block routing: token %lld: router row %d gives a "
				       "logit that is not finite", (long long)(t0 + i / E), rows[i % E]);
	return MS_OK;
}

static ms_status route_chunks(const blk_config *cfg, const float *router, const int *rows, int n_active,
			      const float *x, int64_t T, int *sel, float *w, ms_error *err)
{
	const int d = cfg->d;
	mdl_routing r = cfg->routing;
	r.top_k = r.top_k < n_active ? r.top_k : n_active;
	const int k = r.top_k;
	float *bias = NULL, *logit_bias = NULL;
	if (n_active < cfg->n_router && r.n_group > 1 && r.topk_group < r.n_group)
		return ms_fail(err, MS_ERR_ARG, "block routing: group-limited routing over %d of %d router rows: dropped "
			       "experts would break the groups", n_active, cfg->n_router);
	if (n_active < cfg->n_router && r.score_bias) {   /* the bias of the unmasked rows, like their router rows */
		bias = alloc_array(n_active, sizeof(float));
		for (int i = 0; bias && i < n_active; i++)
			bias[i] = r.score_bias[rows[i]];
		r.score_bias = bias;
	}
	if (n_active < cfg->n_router && r.logit_bias) {   /* likewise the router's logit bias */
		logit_bias = alloc_array(n_active, sizeof(float));
		for (int i = 0; logit_bias && i < n_active; i++)
			logit_bias[i] = r.logit_bias[rows[i]];
		r.logit_bias = logit_bias;
	}
	float *z = alloc_array((int64_t)(T < ROUTE_CHUNK ? T : ROUTE_CHUNK) * n_active, sizeof(float));
	if (!z || (cfg->routing.score_bias && !bias && n_active < cfg->n_router) ||
	    (cfg->routing.logit_bias && !logit_bias && n_active < cfg->n_router)) {
		free(z);
		free(bias);
		free(logit_bias);
		return ms_fail(err, MS_ERR_NOMEM, "block routing: out of memory for the router logits");
	}
	ms_status st = MS_OK;
	for (int64_t t0 = 0; st == MS_OK && t0 < T; t0 += ROUTE_CHUNK) {
		int64_t n = T - t0 < ROUTE_CHUNK ? T - t0 : ROUTE_CHUNK;
		if (route_logits(x + t0 * d, n, d, router, n_active, z) != MS_OK) {
			st = ms_fail(err, MS_ERR_ARG, "block routing: router logits of %d rows failed", n_active);
			break;
		}
		route_add_bias(z, n, n_active, r.logit_bias);
		st = check_logits(z, n, n_active, t0, rows, err);
		if (st != MS_OK)
			break;
		if (cfg->sparsemixer_eps > 0)
			blk_sparsemixer(z, n, n_active, cfg->sparsemixer_eps, sel + t0 * k, w ? w + t0 * k : NULL);
		else if (route_topk(z, n, n_active, &r, sel + t0 * k, w ? w + t0 * k : NULL) != MS_OK) {
			st = ms_fail(err, MS_ERR_ARG, "block routing: top-%d of %d rows failed", k, n_active);
			break;
		}
		/* route_topk numbers the unmasked rows 0..n_active-1; give back the router's own row numbers */
		for (int64_t i = 0; i < n * k; i++)
			sel[t0 * k + i] = rows[sel[t0 * k + i]];
	}
	free(z);
	free(bias);
	free(logit_bias);
	return st;
}

/* The largest of z [E] leaving out index `skip` (-1: none), the lower index on ties. */
static int argmax_except(const float *z, int E, int skip)
{
	int best = -1;
	for (int i = 0; i < E; i++)
		if (i != skip && (best < 0 || z[i] > z[best]))
			best = i;
	return best;
}

/* One sparsemixer choice: the softmax weight of `choice` among the logits within 2 eps (relative) of it, `skip`
 * (the first choice, or -1) left out. */
static float sparsemixer_weight(const float *z, int E, int choice, int skip, float eps)
{
	const float m = z[choice];
	double sum = 0.0;
	for (int i = 0; i < E; i++) {
		if (i == skip)
			continue;
		const float a = fabsf(z[i]), factor = a > m ? a : m;
		if ((m - z[i]) / factor > 2.0f * eps)
			continue;   /* masked to -inf: no share of the softmax */
		sum += exp((double)z[i] - (double)m);
	}
	return (float)(1.0 / sum);
}

void blk_sparsemixer(const float *z, int64_t T, int E, float eps, int *idx, float *weight)
{
	for (int64_t t = 0; t < T; t++) {
		const float *zt = z + t * E;
		const int a = argmax_except(zt, E, -1), b = argmax_except(zt, E, a);
		idx[2 * t] = a;
		idx[2 * t + 1] = b;
		if (weight) {
			weight[2 * t] = sparsemixer_weight(zt, E, a, -1, eps);
			weight[2 * t + 1] = sparsemixer_weight(zt, E, b, a, eps);
		}
	}
}

/* Switch's expert capacity: per run of equal sequence ids, in token order, each router row keeps its first
 * `capacity` selections; the weights of the later ones become 0. */
static ms_status apply_capacity(const blk_config *cfg, const int *sel, float *w, int64_t T, int k, ms_error *err)
{
	int64_t *count = calloc((size_t)cfg->n_router, sizeof *count);   /* [n_router] this sequence's tokens */
	if (!count)
		return ms_fail(err, MS_ERR_NOMEM, "block routing: out of memory");
	for (int64_t t = 0; t < T; t++) {
		if (t > 0 && cfg->seq[t] != cfg->seq[t - 1])
			memset(count, 0, (size_t)cfg->n_router * sizeof *count);
		for (int j = 0; j < k; j++)
			if (++count[sel[t * k + j]] > cfg->routing.capacity)
				w[t * k + j] = 0.0f;
	}
	free(count);
	return MS_OK;
}

ms_status blk_route(const blk_config *cfg, const float *x, int64_t T, int *sel, float *w, ms_error *err)
{
	ms_status st = blk_check(cfg, err);
	if (st != MS_OK)
		return st;
	if (!x || !sel || T < 0)
		return ms_fail(err, MS_ERR_ARG, "block routing: no input or no output for %lld tokens", (long long)T);
	if (T == 0)
		return MS_OK;
	int *rows = alloc_array(cfg->n_router, sizeof(int));
	if (!rows)
		return ms_fail(err, MS_ERR_NOMEM, "block routing: out of memory");
	int n_active;
	float *owned;
	st = active_router(cfg, rows, &n_active, &owned, err);
	if (st == MS_OK)
		st = route_chunks(cfg, owned ? owned : cfg->router, rows, n_active, x, T, sel, w, err);
	if (st == MS_OK && w && cfg->seq && cfg->routing.capacity > 0)
		st = apply_capacity(cfg, sel, w, T, blk_top_k(cfg), err);
	free(owned);
	free(rows);
	return st;
}

/* 1 when selection j of a token is the first of its selections (sel_row [k]) to reach its slot: later ones
 * share that slot's single gathered copy of the token. */
static int first_of_slot(const int *slot, const int *sel_row, int j)
{
	for (int i = 0; i < j; i++)
		if (slot[sel_row[i]] == slot[sel_row[j]])
			return 0;
	return 1;
}

static ms_status count_dispatch(const blk_config *cfg, const int *sel, int64_t T, int k, int64_t *start,
				ms_error *err)
{
	for (int64_t t = 0; t < T; t++) {
		const int *row = sel + t * k;
		for (int j = 0; j < k; j++) {
			if (row[j] < 0 || row[j] >= cfg->n_router || cfg->slot[row[j]] < 0)
				return ms_fail(err, MS_ERR_ARG, "block dispatch: token %lld selects router row %d, "
					       "which is out of range or masked", (long long)t, row[j]);
			if (first_of_slot(cfg->slot, row, j))
				start[cfg->slot[row[j]] + 1]++;
		}
	}
	for (int s = 0; s < cfg->n_slots; s++)
		start[s + 1] += start[s];
	return MS_OK;
}

static void fill_dispatch(const blk_config *cfg, const int *sel, const float *w, int64_t T, int k,
			  blk_dispatch *dp, int64_t *cursor)
{
	memcpy(cursor, dp->start, (size_t)cfg->n_slots * sizeof *cursor);
	for (int64_t t = 0; t < T; t++) {
		const int *row = sel + t * k;
		for (int j = 0; j < k; j++) {
			if (!first_of_slot(cfg->slot, row, j))
				continue;
			const int s = cfg->slot[row[j]];
			float g = 0.0f;
			for (int i = j; i < k; i++)
				if (cfg->slot[row[i]] == s)
					g += w[t * k + i];
			dp->token[cursor[s]] = t;
			dp->weight[cursor[s]++] = g;
		}
	}
}

ms_status blk_dispatch_build(const blk_config *cfg, const int *sel, const float *w, int64_t T, int k,
			     blk_dispatch *out, ms_error *err)
{
	if (!out)
		return ms_fail(err, MS_ERR_ARG, "block dispatch: no output");
	memset(out, 0, sizeof *out);
	ms_status st = blk_check(cfg, err);
	if (st != MS_OK)
		return st;
	if (!sel || !w || T < 0 || k <= 0)
		return ms_fail(err, MS_ERR_ARG, "block dispatch: no routing for %lld tokens, top-k %d", (long long)T, k);
	out->n_slots = cfg->n_slots;
	out->start = calloc((size_t)cfg->n_slots + 1, sizeof *out->start);
	int64_t *cursor = alloc_array(cfg->n_slots, sizeof *cursor);
	if (!out->start || !cursor)
		st = ms_fail(err, MS_ERR_NOMEM, "block dispatch: out of memory");
	if (st == MS_OK)
		st = count_dispatch(cfg, sel, T, k, out->start, err);
	if (st == MS_OK) {
		out->token = alloc_array(out->start[cfg->n_slots], sizeof *out->token);
		out->weight = alloc_array(out->start[cfg->n_slots], sizeof *out->weight);
		if (!out->token || !out->weight)
			st = ms_fail(err, MS_ERR_NOMEM, "block dispatch: out of memory for %lld token routes",
				     (long long)out->start[cfg->n_slots]);
	}
	if (st == MS_OK)
		fill_dispatch(cfg, sel, w, T, k, out, cursor);
	free(cursor);
	if (st != MS_OK)
		blk_dispatch_free(out);
	return st;
}

void blk_dispatch_free(blk_dispatch *dp)
{
	if (!dp)
		return;
	free(dp->start);
	free(dp->token);
	free(dp->weight);
	memset(dp, 0, sizeof *dp);
}

void blk_gather(const float *src, int64_t width, const int64_t *rows, int64_t n, float *dst)
{
	for (int64_t i = 0; i < n; i++)
		memcpy(dst + i * width, src + rows[i] * width, (size_t)width * sizeof(float));
}

void blk_scatter_add(const float *src, int64_t width, const int64_t *rows, const float *weight, int64_t n,
		     float *dst)
{
	for (int64_t i = 0; i < n; i++) {
		const float g = weight[i];
		const float *s = src + i * width;
		float *o = dst + rows[i] * width;
		for (int64_t c = 0; c < width; c++)
			o[c] += g * s[c];
	}
}

/* Tokens one round of blk_forward dispatches at once: the expert outputs of a round, [routes, d] with up to
 * FORWARD_CHUNK * k routes, are held until they are added up. Fixed, so the batches (and so the bits) depend on the
 * tokens alone. */
#define FORWARD_CHUNK 2048

/* One round of run_experts: every (slot, batch of up to BLK_BATCH of its tokens) is a task writing the outputs of
 * its routes into yr; then each token's routes are added in slot order, as a serial slot-by-slot pass would. */
typedef struct {
	const blk_config *cfg;
	const blk_dispatch *dp;
	const float *x;          /* [T, d] this round's tokens */
	float *y;                /* [T, d] */
	int64_t T;
	float *yr;               /* [routes, d] each route's expert output, in dispatch order */
	int *task_slot;          /* [n_tasks] */
	int64_t *task_begin;     /* [n_tasks] first route of the task */
	int64_t *tok_start;      /* [T + 1] CSR of each token's routes */
	int64_t *tok_route;      /* [routes] in slot order within each token */
	int64_t *cursor;         /* [T] scratch */
} experts_round;

static ms_status expert_batch_task(void *ctx, int64_t task, ms_error *err)
{
	const experts_round *r = ctx;
	const int s = r->task_slot[task];
	const int64_t b = r->task_begin[task], d = r->cfg->d;
	const int64_t n = r->dp->start[s + 1] - b < BLK_BATCH ? r->dp->start[s + 1] - b : BLK_BATCH;
	const expert_weights *ew = &r->cfg->experts[s];
	/* this thread's buffers, kept from task to task (tens of MB at Mixtral's size: fresh ones fault in) */
	float *xg = scratch_array(0, n * d, sizeof(float));                    /* [n, d] gathered inputs */
	float *work = scratch_array(1, expert_work_floats(ew, n), sizeof(float));
	ms_status st = xg && work ? MS_OK : ms_fail(err, MS_ERR_NOMEM, "block forward: out of memory");
	if (st == MS_OK) {
		blk_gather(r->x, d, r->dp->token + b, n, xg);
		st = expert_forward(ew, xg, n, 1.0f, 0, r->yr + b * d, work);
		if (st != MS_OK)
			ms_fail(err, st, "block forward: expert slot %d failed", s);
	}
	return st;
}

/* Tokens per combining task. */
#define COMBINE_SPAN 64

static ms_status combine_task(void *ctx, int64_t task, ms_error *err)
{
	(void)err;
	const experts_round *r = ctx;
	const int64_t d = r->cfg->d, t1 = (task + 1) * COMBINE_SPAN < r->T ? (task + 1) * COMBINE_SPAN : r->T;
	for (int64_t t = task * COMBINE_SPAN; t < t1; t++) {
		float *o = r->y + t * d;
		memset(o, 0, (size_t)d * sizeof *o);
		for (int64_t i = r->tok_start[t]; i < r->tok_start[t + 1]; i++) {
			const int64_t route = r->tok_route[i];
			const float g = r->dp->weight[route];
			const float *src = r->yr + route * d;
			for (int64_t c = 0; c < d; c++)
				o[c] += g * src[c];
		}
	}
	return MS_OK;
}

/* The (slot, batch) tasks and each token's routes in slot order. */
static void plan_round(experts_round *r, int64_t routes)
{
	int64_t n = 0;
	for (int s = 0; s < r->cfg->n_slots; s++)
		for (int64_t b = r->dp->start[s]; b < r->dp->start[s + 1]; b += BLK_BATCH) {
			r->task_slot[n] = s;
			r->task_begin[n++] = b;
		}
	memset(r->tok_start, 0, (size_t)(r->T + 1) * sizeof *r->tok_start);
	for (int64_t i = 0; i < routes; i++)
		r->tok_start[r->dp->token[i] + 1]++;
	for (int64_t t = 0; t < r->T; t++)
		r->tok_start[t + 1] += r->tok_start[t];
	memcpy(r->cursor, r->tok_start, (size_t)r->T * sizeof *r->cursor);
	for (int64_t i = 0; i < routes; i++)
		r->tok_route[r->cursor[r->dp->token[i]]++] = i;
}

/* y [T, d] = for each token, the sum over its slots (in slot order) of weight x expert output. */
static ms_status run_experts(const blk_config *cfg, const blk_dispatch *dp, const float *x, int64_t T, float *y,
			     ms_error *err)
{
	const int64_t d = cfg->d, routes = dp->start[cfg->n_slots];
	const int64_t max_tasks = routes / BLK_BATCH + cfg->n_slots;
	experts_round r = {.cfg = cfg, .dp = dp, .x = x, .y = y, .T = T};
	r.yr = alloc_array(routes * d, sizeof(float));
	r.task_slot = alloc_array(max_tasks, sizeof(int));
	r.task_begin = alloc_array(max_tasks, sizeof(int64_t));
	r.tok_start = alloc_array(T + 1, sizeof(int64_t));
	r.tok_route = alloc_array(routes, sizeof(int64_t));
	r.cursor = alloc_array(T, sizeof(int64_t));
	ms_status st = r.yr && r.task_slot && r.task_begin && r.tok_start && r.tok_route && r.cursor
			       ? MS_OK : ms_fail(err, MS_ERR_NOMEM, "block forward: out of memory for %lld routes",
						 (long long)routes);
	if (st == MS_OK) {
		plan_round(&r, routes);
		int64_t n_tasks = 0;
		for (int s = 0; s < cfg->n_slots; s++)
			n_tasks += (dp->start[s + 1] - dp->start[s] + BLK_BATCH - 1) / BLK_BATCH;
		st = par_for(n_tasks, expert_batch_task, &r, err);
	}
	if (st == MS_OK)
		st = par_for((T + COMBINE_SPAN - 1) / COMBINE_SPAN, combine_task, &r, err);
	free(r.yr);
	free(r.task_slot);
	free(r.task_begin);
	free(r.tok_start);
	free(r.tok_route);
	free(r.cursor);
	return st;
}

/* The shared expert of a block: y [T, d] += g_t * shared(x_t), g_t = sigmoid(x_t . shared_gate) or 1; one task
 * per BLK_BATCH tokens. */
typedef struct {
	const blk_config *cfg;
	const float *x;
	float *y;
	int64_t T;
} shared_job;

static ms_status shared_task(void *ctx, int64_t task, ms_error *err)
{
	const shared_job *j = ctx;
	const int64_t d = j->cfg->d, t0 = task * BLK_BATCH, n = j->T - t0 < BLK_BATCH ? j->T - t0 : BLK_BATCH;
	const expert_weights *ew = j->cfg->shared;
	float *out = scratch_array(0, n * d, sizeof(float));   /* [n, d] */
	float *work = scratch_array(1, expert_work_floats(ew, n), sizeof(float));
	ms_status st = out && work ? MS_OK : ms_fail(err, MS_ERR_NOMEM, "block forward: out of memory");
	if (st == MS_OK && expert_forward(ew, j->x + t0 * d, n, 1.0f, 0, out, work) != MS_OK)
		st = ms_fail(err, MS_ERR_ARG, "block forward: the shared expert failed");
	for (int64_t t = 0; st == MS_OK && t < n; t++) {
		const float *xt = j->x + (t0 + t) * d, *o = out + t * d;
		float g = 1.0f;
		if (j->cfg->shared_gate) {
			float dot = 0.0f;
			for (int64_t c = 0; c < d; c++)
				dot += xt[c] * j->cfg->shared_gate[c];
			g = 1.0f / (1.0f + expf(-dot));
		}
		float *yt = j->y + (t0 + t) * d;
		for (int64_t c = 0; c < d; c++)
			yt[c] += g * o[c];
	}
	return st;
}

ms_status blk_forward(const blk_config *cfg, const float *x, int64_t T, float *y, int *sel, float *w,
		      ms_error *err)
{
	ms_status st = blk_check(cfg, err);
	if (st != MS_OK)
		return st;
	if (!x || !y || T < 0 || T > INT64_MAX / cfg->d)
		return ms_fail(err, MS_ERR_ARG, "block forward: no input or output for %lld tokens", (long long)T);
	const int k = blk_top_k(cfg);
	if (T > INT64_MAX / k)
		return ms_fail(err, MS_ERR_ARG, "block forward: %lld tokens is too many", (long long)T);
	int *s_buf = sel ? sel : alloc_array(T * k, sizeof(int));       /* [T, k] */
	float *w_buf = w ? w : alloc_array(T * k, sizeof(float));       /* [T, k] */
	if (!s_buf || !w_buf)
		st = ms_fail(err, MS_ERR_NOMEM, "block forward: out of memory for the routing of %lld tokens",
			     (long long)T);
	if (st == MS_OK)
		st = blk_route(cfg, x, T, s_buf, w_buf, err);
	for (int64_t t0 = 0; st == MS_OK && t0 < T; t0 += FORWARD_CHUNK) {
		const int64_t n = T - t0 < FORWARD_CHUNK ? T - t0 : FORWARD_CHUNK;
		blk_dispatch dp = {0};
		st = blk_dispatch_build(cfg, s_buf + t0 * k, w_buf + t0 * k, n, k, &dp, err);
		if (st == MS_OK)
			st = run_experts(cfg, &dp, x + t0 * cfg->d, n, y + t0 * cfg->d, err);
		blk_dispatch_free(&dp);
	}
	if (st == MS_OK && cfg->shared) {
		shared_job j = {.cfg = cfg, .x = x, .y = y, .T = T};
		st = par_for((T + BLK_BATCH - 1) / BLK_BATCH, shared_task, &j, err);
	}
	if (s_buf != sel)
		free(s_buf);
	if (w_buf != w)
		free(w_buf);
	return st;
}

int64_t blk_expert_params(const expert_weights *w)
{
	if (!w || w->d <= 0 || w->f <= 0)
		return 0;
	return (int64_t)w->d * w->f * (mdl_act_gated(w->act) ? 3 : 2) +
	       (w->down_bias ? w->d : 0) + (w->gate_bias ? w->f : 0) + (w->up_bias ? w->f : 0);
}

/* 1 when slot s uses the same weight arrays as an earlier slot. */
static int shares_storage(const blk_config *cfg, int s)
{
	const expert_weights *a = &cfg->experts[s];
	for (int i = 0; i < s; i++) {
		const expert_weights *b = &cfg->experts[i];
		if (a->gate == b->gate && a->up == b->up && a->down == b->down && a->f == b->f)
			return 1;
	}
	return 0;
}

int64_t blk_params(const blk_config *cfg)
{
	if (blk_check(cfg, NULL) != MS_OK)
		return 0;
	int64_t n = (int64_t)cfg->n_router * cfg->d;
	for (int s = 0; s < cfg->n_slots; s++)
		if (!shares_storage(cfg, s))
			n += blk_expert_params(&cfg->experts[s]);
	return n;
}

int64_t blk_subsample_count(int64_t T, int64_t max_tokens)
{
	if (T < 0)
		return -1;
	int64_t n = max_tokens <= 0 || T <= max_tokens ? T : max_tokens;
	return n > INT32_MAX ? -1 : n;
}

int64_t blk_subsample_index(int64_t i, int64_t T, int64_t n)
{
	if (n <= 0 || n >= T)
		return i;
	/* floor(i T / n) without forming i T: T = q n + r, and i r < n^2 fits as n <= INT32_MAX */
	const int64_t q = T / n, r = T % n;
	return i * q + i * r / n;
}

/* Sorts a short list of group labels in place and drops repeats; returns the count left. */
static int sorted_set(int *v, int n)
{
	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
			int tmp = v[j];
			v[j] = v[j - 1];
			v[j - 1] = tmp;
		}
	int m = 0;
	for (int i = 0; i < n; i++)
		if (m == 0 || v[m - 1] != v[i])
			v[m++] = v[i];
	return m;
}

/* The router and the selected experts of one token, counting a multiply-add as 2 FLOPs. */
static double token_flops(const blk_config *cfg, const int *sel, int k)
{
	double f = 2.0 * cfg->n_router * cfg->d;
	for (int j = 0; j < k; j++)
		f += 2.0 * (double)blk_expert_params(&cfg->experts[cfg->slot[sel[j]]]);
	return f;
}

ms_status blk_eval_reference(const blk_config *orig, const float *x, int64_t T, int64_t max_tokens,
			     blk_eval_ref *ref, ms_error *err)
{
	if (!ref)
		return ms_fail(err, MS_ERR_ARG, "block evaluation: no output");
	memset(ref, 0, sizeof *ref);
	ms_status st = blk_check(orig, err);
	if (st != MS_OK) {
		ms_error_prefix(err, "original");
		return st;
	}
	if (!x || T <= 0)
		return ms_fail(err, MS_ERR_ARG, "block evaluation: no tokens (T = %lld)", (long long)T);
	const int capacity = orig->seq && orig->routing.capacity > 0;
	const int64_t n = blk_subsample_count(T, capacity ? 0 : max_tokens), d = orig->d;
	if (n <= 0)
		return ms_fail(err, MS_ERR_ARG, "block evaluation: %lld tokens is too many to evaluate",
			       (long long)max_tokens);
	ref->n = n;
	ref->d = orig->d;
	ref->ko = blk_top_k(orig);
	ref->n_router = orig->n_router;
	ref->params = blk_params(orig);
	ref->xs = alloc_array(n * d, sizeof(float));
	ref->y = alloc_array(n * d, sizeof(float));
	ref->so = alloc_array(n * ref->ko, sizeof(int));
	ref->slot = alloc_array(orig->n_router, sizeof(int));
	ref->chunk = capacity ? n : EVAL_CHUNK;
	if (capacity && (ref->seq = alloc_array(n, sizeof(int32_t))) != NULL)
		memcpy(ref->seq, orig->seq, (size_t)n * sizeof *ref->seq);
	float *wo = alloc_array(n * ref->ko, sizeof(float));
	if (!ref->xs || !ref->y || !ref->so || !ref->slot || !wo || (capacity && !ref->seq))
		st = ms_fail(err, MS_ERR_NOMEM, "block evaluation: out of memory for %lld tokens", (long long)n);
	if (st == MS_OK) {
		memcpy(ref->slot, orig->slot, (size_t)orig->n_router * sizeof *ref->slot);
		for (int64_t i = 0; i < n; i++)
			memcpy(ref->xs + i * d, x + blk_subsample_index(i, T, n) * d, (size_t)d * sizeof(float));
	}
	/* The chunks are the ones blk_eval_against runs the merged block in, so both see the same batches. */
	for (int64_t i0 = 0; st == MS_OK && i0 < n; i0 += ref->chunk) {
		const int64_t nc = n - i0 < ref->chunk ? n - i0 : ref->chunk;
		st = blk_forward(orig, ref->xs + i0 * d, nc, ref->y + i0 * d, ref->so + i0 * ref->ko, wo, err);
		if (st != MS_OK)
			ms_error_prefix(err, "original");
	}
	for (int64_t t = 0; st == MS_OK && t < n; t++)
		ref->flops += token_flops(orig, ref->so + t * ref->ko, ref->ko);
	free(wo);
	if (st != MS_OK)
		blk_eval_ref_free(ref);
	return st;
}

void blk_eval_ref_free(blk_eval_ref *ref)
{
	if (!ref)
		return;
	free(ref->xs);
	free(ref->y);
	free(ref->so);
	free(ref->slot);
	free(ref->seq);
	memset(ref, 0, sizeof *ref);
}

/* Work and buffers of one blk_eval_against run, sized for one chunk of evaluated tokens. */
typedef struct {
	const blk_eval_ref *ref;
	const blk_config *merged;
	const int *group_of_orig, *slot_group;
	int km;
	float *y2;        /* [EVAL_CHUNK, d] merged outputs */
	int *sm;          /* [EVAL_CHUNK, km] selected rows */
	float *wm;        /* [EVAL_CHUNK, km] routing weights */
	int *ga, *gb;     /* [ko], [km] one token's groups */
	double sum_y, sum_diff, agree, flops_m;
} eval_state;

static void eval_free(eval_state *e)
{
	free(e->y2);
	free(e->sm);
	free(e->wm);
	free(e->ga);
	free(e->gb);
}

static ms_status eval_alloc(eval_state *e, int64_t d, ms_error *err)
{
	const int64_t chunk = e->ref->n < e->ref->chunk ? e->ref->n : e->ref->chunk;
	e->y2 = alloc_array(chunk * d, sizeof(float));
	e->sm = alloc_array(chunk * e->km, sizeof(int));
	e->wm = alloc_array(chunk * e->km, sizeof(float));
	e->ga = alloc_array(e->ref->ko, sizeof(int));
	e->gb = alloc_array(e->km, sizeof(int));
	if (e->y2 && e->sm && e->wm && e->ga && e->gb)
		return MS_OK;
	return ms_fail(err, MS_ERR_NOMEM, "block evaluation: out of memory for %lld tokens", (long long)chunk);
}

/* 1 when the token's original and merged selections reach the same set of groups. */
static int same_groups(eval_state *e, const int *so, const int *sm)
{
	for (int j = 0; j < e->ref->ko; j++)
		e->ga[j] = e->group_of_orig[e->ref->slot[so[j]]];
	for (int j = 0; j < e->km; j++) {
		int s = e->merged->slot[sm[j]];
		e->gb[j] = e->slot_group ? e->slot_group[s] : s;
	}
	int na = sorted_set(e->ga, e->ref->ko), nb = sorted_set(e->gb, e->km);
	return na == nb && memcmp(e->ga, e->gb, (size_t)na * sizeof(int)) == 0;
}

/* Adds chunk [i0, i0 + n) to the sums, element by element and token by token in order. */
static void eval_tally(eval_state *e, int64_t i0, int64_t n, int64_t d)
{
	const float *y = e->ref->y + i0 * d;
	for (int64_t i = 0; i < n * d; i++) {
		double a = y[i], diff = (double)y[i] - e->y2[i];
		e->sum_y += a * a;
		e->sum_diff += diff * diff;
	}
	for (int64_t t = 0; t < n; t++) {
		e->agree += same_groups(e, e->ref->so + (i0 + t) * e->ref->ko, e->sm + t * e->km);
		e->flops_m += token_flops(e->merged, e->sm + t * e->km, e->km);
	}
}

ms_status blk_eval_against(const blk_eval_ref *ref, const blk_config *merged, const int *group_of_orig,
			   const int *slot_group, blk_eval_result *out, ms_error *err)
{
	if (out)
		memset(out, 0, sizeof *out);
	if (!ref || !ref->y || !group_of_orig || !out)
		return ms_fail(err, MS_ERR_ARG, "block evaluation: no reference, no groups or no output");
	ms_status st = blk_check(merged, err);
	if (st != MS_OK) {
		ms_error_prefix(err, "merged");
		return st;
	}
	if (ref->d != merged->d)
		return ms_fail(err, MS_ERR_ARG, "block evaluation: original width %d, merged width %d", ref->d,
			       merged->d);
	const int64_t n = ref->n, d = ref->d;
	blk_config mc = *merged;   /* measured on the reference's sequences (NULL: no capacity applies) */
	mc.seq = ref->seq;
	eval_state e = {.ref = ref, .merged = &mc, .group_of_orig = group_of_orig, .slot_group = slot_group,
			.km = blk_top_k(merged)};
	st = eval_alloc(&e, d, err);
	for (int64_t i0 = 0; st == MS_OK && i0 < n; i0 += ref->chunk) {
		const int64_t nc = n - i0 < ref->chunk ? n - i0 : ref->chunk;
		st = blk_forward(&mc, ref->xs + i0 * d, nc, e.y2, e.sm, e.wm, err);
		if (st != MS_OK)
			ms_error_prefix(err, "merged");
		else
			eval_tally(&e, i0, nc, d);
	}
	eval_free(&e);
	if (st != MS_OK)
		return st;
	if (!isfinite(e.sum_y) || !isfinite(e.sum_diff))
		return ms_fail(err, MS_ERR_NONFINITE, "block evaluation: the outputs are not finite (NaN or infinite "
			       "weights or inputs)");
	out->tokens = n;
	out->rel_error = e.sum_y > 0 ? sqrt(e.sum_diff / e.sum_y) : sqrt(e.sum_diff);
	out->routing_agreement = e.agree / (double)n;
	out->params_before = ref->params;
	out->params_after = blk_params(merged);
	out->flops_before = ref->flops / (double)n;
	out->flops_after = e.flops_m / (double)n;
	return MS_OK;
}

ms_status blk_eval(const blk_config *orig, const blk_config *merged, const int *group_of_orig,
		   const int *slot_group, const float *x, int64_t T, int64_t max_tokens, blk_eval_result *out,
		   ms_error *err)
{
	if (out)
		memset(out, 0, sizeof *out);
	if (!group_of_orig || !out)
		return ms_fail(err, MS_ERR_ARG, "block evaluation: no groups or no output");
	blk_eval_ref ref;
	ms_status st = blk_eval_reference(orig, x, T, max_tokens, &ref, err);
	if (st == MS_OK)
		st = blk_eval_against(&ref, merged, group_of_orig, slot_group, out, err);
	blk_eval_ref_free(&ref);
	return st;
}
