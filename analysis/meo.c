#include "analysis/meo.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>

/* Tokens whose mixed pre-activations are held at once at token level: bounds the two [MEO_CHUNK, f] buffers. */
#define MEO_CHUNK 512

/* malloc of n elements, NULL when n is negative or the byte count overflows; never malloc(0). */
static void *alloc_array(int64_t n, size_t size)
{
	if (n < 0 || (uint64_t)n > SIZE_MAX / size)
		return NULL;
	return malloc(n > 0 ? (size_t)n * size : 1);
}

/* Everything one analysis shares: the evaluated tokens, their routed outputs and routing. */
typedef struct {
	const blk_config *cfg;
	int64_t n;        /* evaluated tokens */
	int k;            /* selections per token */
	int d, f;
	float *xs;        /* [n, d] evaluated tokens */
	float *y;         /* [n, d] the block's routed output */
	int *sel;         /* [n, k] selected router rows */
	float *w;         /* [n, k] their routing weights */
} meo_state;

static void state_free(meo_state *s)
{
	free(s->xs);
	free(s->y);
	free(s->sel);
	free(s->w);
}

/* Which biases an expert has, as bits: 1 gate, 2 up, 4 down. */
static int bias_bits(const expert_weights *e)
{
	return (e->gate_bias ? 1 : 0) | (e->up_bias ? 2 : 0) | (e->down_bias ? 4 : 0);
}

/* MEO mixes matrices and biases element by element, so every slot must hold an expert of the same shape,
 * activation and biases. */
static ms_status check_shapes(const blk_config *cfg, ms_error *err)
{
	const expert_weights *e0 = &cfg->experts[0];
	for (int s = 1; s < cfg->n_slots; s++) {
		const expert_weights *e = &cfg->experts[s];
		if (e->f != e0->f || e->act != e0->act)
			return ms_fail(err, MS_ERR_ARG, "MEO: expert slot %d has intermediate size %d and activation %d, "
				       "slot 0 has %d and %d; mixing needs one shape", s, e->f, (int)e->act, e0->f,
				       (int)e0->act);
		if (bias_bits(e) != bias_bits(e0))
			return ms_fail(err, MS_ERR_ARG, "MEO: expert slot %d has other biases than slot 0 (gate %s, up %s, "
				       "down %s); mixing needs the same ones", s, e->gate_bias ? "yes" : "no",
				       e->up_bias ? "yes" : "no", e->down_bias ? "yes" : "no");
	}
	return MS_OK;
}

/* Gathers the evaluated tokens and runs the block on them. */
static ms_status state_init(meo_state *s, const blk_config *cfg, const float *x, int64_t T, int64_t n,
			    ms_error *err)
{
	*s = (meo_state){.cfg = cfg, .n = n, .k = blk_top_k(cfg), .d = cfg->d, .f = cfg->experts[0].f};
	s->xs = alloc_array(n * s->d, sizeof(float));
	s->y = alloc_array(n * s->d, sizeof(float));
	s->sel = alloc_array(n * s->k, sizeof(int));
	s->w = alloc_array(n * s->k, sizeof(float));
	if (!s->xs || !s->y || !s->sel || !s->w)
		return ms_fail(err, MS_ERR_NOMEM, "MEO: out of memory for %lld tokens", (long long)n);
	for (int64_t i = 0; i < n; i++)
		memcpy(s->xs + i * s->d, x + blk_subsample_index(i, T, n) * s->d, (size_t)s->d * sizeof(float));
	/* MEO replaces the routed experts only: a shared expert is the same both ways and stays out */
	blk_config routed = *cfg;
	routed.shared = NULL;
	routed.shared_gate = NULL;
	return blk_forward(&routed, s->xs, n, s->y, s->sel, s->w, err);
}

/* |a - b| / |b| over len floats; the absolute |a - b| when b is zero. */
static double rel_diff(const float *a, const float *b, int64_t len)
{
	double num = 0, den = 0;
	for (int64_t i = 0; i < len; i++) {
		double diff = (double)a[i] - b[i];
		num += diff * diff;
		den += (double)b[i] * b[i];
	}
	return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* Buffers of the token-level pass, sized for MEO_CHUNK tokens and BLK_BATCH-token GEMMs. */
typedef struct {
	float *gx, *ux;   /* [MEO_CHUNK, f] mixed gate and up projections, then ux holds the hidden activation */
	float *ym;        /* [MEO_CHUNK, d] the mixed expert's outputs */
	float *xg;        /* [BLK_BATCH, d] a slot's gathered inputs */
	float *tg;        /* [BLK_BATCH, max(d, f)] a slot's projections or gathered activations */
	float *og;        /* [BLK_BATCH, d] a slot's down projections */
} token_bufs;

static void token_bufs_free(token_bufs *b)
{
	free(b->gx);
	free(b->ux);
	free(b->ym);
	free(b->xg);
	free(b->tg);
	free(b->og);
}

static ms_status token_bufs_alloc(token_bufs *b, int64_t d, int64_t f, ms_error *err)
{
	b->gx = alloc_array(MEO_CHUNK * f, sizeof(float));
	b->ux = alloc_array(MEO_CHUNK * f, sizeof(float));
	b->ym = alloc_array(MEO_CHUNK * d, sizeof(float));
	b->xg = alloc_array(BLK_BATCH * d, sizeof(float));
	b->tg = alloc_array(BLK_BATCH * (d > f ? d : f), sizeof(float));
	b->og = alloc_array(BLK_BATCH * d, sizeof(float));
	if (b->gx && b->ux && b->ym && b->xg && b->tg && b->og)
		return MS_OK;
	return ms_fail(err, MS_ERR_NOMEM, "MEO: out of memory for the token-level buffers");
}

/* out [n, rows] += weight * (in [n, cols] mat^T + bias) for a slot's batch, where mat is [rows, cols] and bias
 * [rows] or NULL: the slot's share of a mixed projection, scattered back to its tokens. */
static void project_scatter(const float *in, int64_t n, int cols, const float *mat, const float *bias, int rows,
			    float *tmp, const int64_t *tokens, const float *weight, float *out)
{
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, rows, cols, 1.0f, in, cols, mat, cols, 0.0f, tmp,
		    rows);
	for (int64_t i = 0; bias && i < n; i++)
		for (int r = 0; r < rows; r++)
			tmp[i * rows + r] += bias[r];
	blk_scatter_add(tmp, rows, tokens, weight, n, out);
}

/* gx, ux [nc, f] = sum over a token's slots of g_s (gate_s x + bg_s), g_s (up_s x + bu_s): the mixed expert's
 * projections, its biases included. */
static void mixed_projections(const meo_state *s, const blk_dispatch *dp, const float *xc, int64_t nc,
			      token_bufs *b)
{
	const expert_weights *ex = s->cfg->experts;
	memset(b->gx, 0, (size_t)(nc * s->f) * sizeof(float));
	memset(b->ux, 0, (size_t)(nc * s->f) * sizeof(float));
	for (int slot = 0; slot < dp->n_slots; slot++)
		for (int64_t i = dp->start[slot]; i < dp->start[slot + 1]; i += BLK_BATCH) {
			int64_t n = dp->start[slot + 1] - i < BLK_BATCH ? dp->start[slot + 1] - i : BLK_BATCH;
			blk_gather(xc, s->d, dp->token + i, n, b->xg);
			project_scatter(b->xg, n, s->d, ex[slot].up, ex[slot].up_bias, s->f, b->tg, dp->token + i,
					dp->weight + i, b->ux);
			if (ex[slot].gate)
				project_scatter(b->xg, n, s->d, ex[slot].gate, ex[slot].gate_bias, s->f, b->tg,
						dp->token + i, dp->weight + i, b->gx);
		}
}

/* ym [nc, d] = the mixed down projection of the mixed hidden activations (the expert's own activation, the
 * clamped SwiGLU included), sum over slots of g_s (down_s h + bd_s). */
static void mixed_output(const meo_state *s, const blk_dispatch *dp, int64_t nc, token_bufs *b)
{
	expert_activate(s->cfg->experts[0].act, b->gx, b->ux, nc * s->f);
	memset(b->ym, 0, (size_t)(nc * s->d) * sizeof(float));
	for (int slot = 0; slot < dp->n_slots; slot++)
		for (int64_t i = dp->start[slot]; i < dp->start[slot + 1]; i += BLK_BATCH) {
			int64_t n = dp->start[slot + 1] - i < BLK_BATCH ? dp->start[slot + 1] - i : BLK_BATCH;
			blk_gather(b->ux, s->f, dp->token + i, n, b->tg);
			project_scatter(b->tg, n, s->f, s->cfg->experts[slot].down, s->cfg->experts[slot].down_bias,
					s->d, b->og, dp->token + i, dp->weight + i, b->ym);
		}
}

/* Distinct slots among a token's selections sel_row [k]. */
static int distinct_slots(const int *slot, const int *sel_row, int k)
{
	int n = 0;
	for (int j = 0; j < k; j++) {
		int seen = 0;
		for (int i = 0; i < j; i++)
			seen |= slot[sel_row[i]] == slot[sel_row[j]];
		n += !seen;
	}
	return n;
}

/* Token level, MEO_CHUNK tokens at a time: per-token errors and FLOPs into out. */
static ms_status token_level(const meo_state *s, meo_result *out, ms_error *err)
{
	token_bufs b = {0};
	ms_status st = token_bufs_alloc(&b, s->d, s->f, err);
	const double P = (double)blk_expert_params(&s->cfg->experts[0]);
	double sum = 0, mx = 0, fl_exp = 0, fl_meo = 0;
	for (int64_t c0 = 0; st == MS_OK && c0 < s->n; c0 += MEO_CHUNK) {
		const int64_t nc = s->n - c0 < MEO_CHUNK ? s->n - c0 : MEO_CHUNK;
		blk_dispatch dp;
		st = blk_dispatch_build(s->cfg, s->sel + c0 * s->k, s->w + c0 * s->k, nc, s->k, &dp, err);
		if (st != MS_OK)
			break;
		mixed_projections(s, &dp, s->xs + c0 * s->d, nc, &b);
		mixed_output(s, &dp, nc, &b);
		blk_dispatch_free(&dp);
		for (int64_t t = 0; t < nc; t++) {
			double e = rel_diff(b.ym + t * s->d, s->y + (c0 + t) * s->d, s->d);
			int kt = distinct_slots(s->cfg->slot, s->sel + (c0 + t) * s->k, s->k);
			sum += e;
			mx = e > mx || isnan(e) ? e : mx;
			fl_exp += 2.0 * kt * P;
			fl_meo += 2.0 * P + (2.0 * kt - 1.0) * P;
		}
	}
	token_bufs_free(&b);
	if (st != MS_OK)
		return st;
	out->token_error_mean = sum / (double)s->n;
	out->token_error_max = mx;
	out->flops_experts = fl_exp / (double)s->n;
	out->flops_token_meo = fl_meo / (double)s->n;
	return MS_OK;
}

/* ---- segment level ---- */

typedef struct {
	int32_t seg;
	int64_t pos;   /* index among the evaluated tokens */
} seg_token;

static int seg_token_cmp(const void *pa, const void *pb)
{
	const seg_token *a = pa, *b = pb;
	if (a->seg != b->seg)
		return a->seg < b->seg ? -1 : 1;
	return (a->pos > b->pos) - (a->pos < b->pos);
}

/* Buffers of one segment's mixing and forward pass. */
typedef struct {
	double *gbar;     /* [n_slots] mean routing weight of each slot over the segment */
	float *mix;       /* [3, MEO_MIX_ROWS, d]: mixed gate rows, up rows, down columns ([d, rows]) */
	float *mixb;      /* [2 MEO_MIX_ROWS + d]: mixed gate and up biases of those rows, then the down bias */
	float *xseg;      /* [L_max, d] the segment's tokens */
	float *yseg;      /* [L_max, d] their routed outputs */
	float *ymix;      /* [L_max, d] the mixed expert's outputs */
	float *work;      /* expert_work_floats of a MEO_MIX_ROWS expert on L_max tokens */
} seg_bufs;

static void seg_bufs_free(seg_bufs *b)
{
	free(b->gbar);
	free(b->mix);
	free(b->mixb);
	free(b->xseg);
	free(b->yseg);
	free(b->ymix);
	free(b->work);
}

static ms_status seg_bufs_alloc(seg_bufs *b, const meo_state *s, int64_t L_max, ms_error *err)
{
	const int64_t d = s->d;
	b->gbar = alloc_array(s->cfg->n_slots, sizeof(double));
	b->mix = alloc_array(3 * MEO_MIX_ROWS * d, sizeof(float));
	b->mixb = alloc_array(2 * MEO_MIX_ROWS + d, sizeof(float));
	b->xseg = alloc_array(L_max * d, sizeof(float));
	b->yseg = alloc_array(L_max * d, sizeof(float));
	b->ymix = alloc_array(L_max * d, sizeof(float));
	b->work = alloc_array(L_max * MEO_MIX_ROWS * 2, sizeof(float));
	if (b->gbar && b->mix && b->mixb && b->xseg && b->yseg && b->ymix && b->work)
		return MS_OK;
	return ms_fail(err, MS_ERR_NOMEM, "MEO: out of memory for segments of %lld tokens", (long long)L_max);
}

/* gbar [n_slots] = mean over the segment's tokens of the routing weight each slot gets; returns the slots used. */
static int segment_weights(const meo_state *s, const seg_token *tok, int64_t L, double *gbar)
{
	const int *slot = s->cfg->slot;
	int used = 0;
	memset(gbar, 0, (size_t)s->cfg->n_slots * sizeof *gbar);
	for (int64_t i = 0; i < L; i++)
		for (int j = 0; j < s->k; j++) {
			const int64_t at = tok[i].pos * s->k + j;
			gbar[slot[s->sel[at]]] += s->w[at];
		}
	for (int e = 0; e < s->cfg->n_slots; e++) {
		gbar[e] /= (double)L;
		used += gbar[e] != 0.0;
	}
	return used;
}

/* Mixes rows f0 .. f0 + fc of gate and up with their biases, and those columns of down, into b->mix and b->mixb
 * as one small expert. The down bias lies on the d axis, not on the rows: it is mixed once (mix_down_bias). */
static expert_weights mix_rows(const meo_state *s, const double *gbar, int f0, int fc, seg_bufs *b)
{
	const int d = s->d, f = s->f;
	const expert_weights *e0 = &s->cfg->experts[0];
	const int gated = e0->gate != NULL;
	float *mg = b->mix, *mu = b->mix + (int64_t)fc * d, *md = b->mix + 2 * (int64_t)fc * d;
	float *mgb = b->mixb, *mub = b->mixb + fc;
	memset(b->mix, 0, (size_t)(3 * (int64_t)fc * d) * sizeof(float));
	memset(b->mixb, 0, (size_t)(2 * fc) * sizeof(float));
	for (int e = 0; e < s->cfg->n_slots; e++) {
		if (gbar[e] == 0.0)
			continue;
		const expert_weights *ex = &s->cfg->experts[e];
		const float g = (float)gbar[e];
		if (gated)
			cblas_saxpy(fc * d, g, ex->gate + (int64_t)f0 * d, 1, mg, 1);
		cblas_saxpy(fc * d, g, ex->up + (int64_t)f0 * d, 1, mu, 1);
		for (int r = 0; r < d; r++)
			cblas_saxpy(fc, g, ex->down + (int64_t)r * f + f0, 1, md + (int64_t)r * fc, 1);
		if (ex->gate_bias)
			cblas_saxpy(fc, g, ex->gate_bias + f0, 1, mgb, 1);
		if (ex->up_bias)
			cblas_saxpy(fc, g, ex->up_bias + f0, 1, mub, 1);
	}
	return (expert_weights){.gate = gated ? mg : NULL, .up = mu, .down = md,
				.gate_bias = e0->gate_bias ? mgb : NULL, .up_bias = e0->up_bias ? mub : NULL,
				.d = d, .f = fc, .act = e0->act};
}

/* The mixed down bias sum_e gbar_e bd_e into b->mixb + 2 MEO_MIX_ROWS [d]; NULL when the experts have none. */
static const float *mix_down_bias(const meo_state *s, const double *gbar, seg_bufs *b)
{
	if (!s->cfg->experts[0].down_bias)
		return NULL;
	float *mdb = b->mixb + 2 * MEO_MIX_ROWS;
	memset(mdb, 0, (size_t)s->d * sizeof(float));
	for (int e = 0; e < s->cfg->n_slots; e++)
		if (gbar[e] != 0.0)
			cblas_saxpy(s->d, (float)gbar[e], s->cfg->experts[e].down_bias, 1, mdb, 1);
	return mdb;
}

/* One segment's error: its mixed expert applied to its tokens, MEO_MIX_ROWS intermediate rows at a time (the
 * output is a sum over intermediate rows, so the passes add up), then its mixed down bias added once. */
static ms_status segment_error(const meo_state *s, const seg_token *tok, int64_t L, seg_bufs *b, double *error,
			       int *used)
{
	const int d = s->d;
	*used = segment_weights(s, tok, L, b->gbar);
	for (int64_t i = 0; i < L; i++) {
		memcpy(b->xseg + i * d, s->xs + tok[i].pos * d, (size_t)d * sizeof(float));
		memcpy(b->yseg + i * d, s->y + tok[i].pos * d, (size_t)d * sizeof(float));
	}
	memset(b->ymix, 0, (size_t)(L * d) * sizeof(float));
	for (int f0 = 0; f0 < s->f; f0 += MEO_MIX_ROWS) {
		const int fc = s->f - f0 < MEO_MIX_ROWS ? s->f - f0 : MEO_MIX_ROWS;
		expert_weights ew = mix_rows(s, b->gbar, f0, fc, b);
		ms_status st = expert_forward(&ew, b->xseg, L, 1.0f, 1, b->ymix, b->work);
		if (st != MS_OK)
			return st;
	}
	const float *mdb = mix_down_bias(s, b->gbar, b);
	for (int64_t i = 0; mdb && i < L; i++)
		for (int c = 0; c < d; c++)
			b->ymix[i * d + c] += mdb[c];
	*error = rel_diff(b->ymix, b->yseg, L * d);
	return MS_OK;
}

/* The evaluated tokens sorted by (segment, position); *n_seg distinct segments start at first [n_seg + 1]. */
static ms_status sort_segments(const meo_state *s, const int32_t *segment_ids, int64_t T, seg_token **tok,
			       int64_t **first, int64_t *n_seg, ms_error *err)
{
	*tok = alloc_array(s->n, sizeof **tok);
	*first = alloc_array(s->n + 1, sizeof **first);
	if (!*tok || !*first)
		return ms_fail(err, MS_ERR_NOMEM, "MEO: out of memory sorting %lld tokens by segment", (long long)s->n);
	for (int64_t i = 0; i < s->n; i++)
		(*tok)[i] = (seg_token){.seg = segment_ids[blk_subsample_index(i, T, s->n)], .pos = i};
	qsort(*tok, (size_t)s->n, sizeof **tok, seg_token_cmp);
	int64_t m = 0;
	for (int64_t i = 0; i < s->n; i++)
		if (i == 0 || (*tok)[i].seg != (*tok)[i - 1].seg)
			(*first)[m++] = i;
	(*first)[m] = s->n;
	*n_seg = m;
	return MS_OK;
}

/* Segment level over at most MEO_MAX_SEGMENTS segments, evenly spaced among those present. */
static ms_status segment_level(const meo_state *s, const int32_t *segment_ids, int64_t T, meo_result *out,
			       ms_error *err)
{
	seg_token *tok = NULL;
	int64_t *first = NULL, n_seg = 0, L_max = 0;
	seg_bufs b = {0};
	ms_status st = sort_segments(s, segment_ids, T, &tok, &first, &n_seg, err);
	const int64_t n_eval = n_seg < MEO_MAX_SEGMENTS ? n_seg : MEO_MAX_SEGMENTS;
	for (int64_t j = 0; st == MS_OK && j < n_eval; j++) {
		int64_t q = j * n_seg / n_eval;
		L_max = first[q + 1] - first[q] > L_max ? first[q + 1] - first[q] : L_max;
	}
	if (st == MS_OK)
		st = seg_bufs_alloc(&b, s, L_max, err);
	const double P = (double)blk_expert_params(&s->cfg->experts[0]);
	double sum = 0, mix_flops = 0, tokens = 0;
	for (int64_t j = 0; st == MS_OK && j < n_eval; j++) {
		const int64_t q = j * n_seg / n_eval, L = first[q + 1] - first[q];
		double e = 0;
		int used = 0;
		st = segment_error(s, tok + first[q], L, &b, &e, &used);
		if (st != MS_OK) {
			ms_fail(err, st, "MEO: segment %d: the mixed expert failed", (int)tok[first[q]].seg);
			break;
		}
		sum += e;
		mix_flops += (2.0 * used - 1.0) * P;
		tokens += (double)L;
	}
	if (st == MS_OK) {
		out->segments = n_eval;
		out->segment_error_mean = sum / (double)n_eval;
		out->flops_segment_meo = 2.0 * P + mix_flops / tokens;
	}
	seg_bufs_free(&b);
	free(tok);
	free(first);
	return st;
}

static ms_status check_args(const blk_config *cfg, const float *x, int64_t T, const meo_result *out,
			    ms_error *err)
{
	ms_status st = blk_check(cfg, err);
	if (st == MS_OK)
		st = check_shapes(cfg, err);
	if (st != MS_OK) {
		ms_error_prefix(err, "MEO");
		return st;
	}
	if (!x || !out || T <= 0)
		return ms_fail(err, MS_ERR_ARG, "MEO: no input, no output or no tokens (T = %lld)", (long long)T);
	if (cfg->d > INT32_MAX / MEO_MIX_ROWS)
		return ms_fail(err, MS_ERR_ARG, "MEO: width %d too large to mix", cfg->d);
	return MS_OK;
}

ms_status meo_analyze(const blk_config *cfg, const float *x, int64_t T, const int32_t *segment_ids,
		      int64_t max_tokens, meo_result *out, ms_error *err)
{
	if (out)
		memset(out, 0, sizeof *out);
	ms_status st = check_args(cfg, x, T, out, err);
	if (st != MS_OK)
		return st;
	/* a capacity counts over whole sequences: then every token is evaluated, as blk_eval_reference does */
	const int capacity = cfg->seq && cfg->routing.capacity > 0;
	const int64_t n = blk_subsample_count(T, capacity ? 0 : max_tokens);
	if (n <= 0)
		return ms_fail(err, MS_ERR_ARG, "MEO: %lld tokens is too many to evaluate", (long long)max_tokens);
	meo_state s;
	st = state_init(&s, cfg, x, T, n, err);
	if (st == MS_OK)
		st = token_level(&s, out, err);
	if (st == MS_OK && segment_ids)
		st = segment_level(&s, segment_ids, T, out, err);
	state_free(&s);
	if (st != MS_OK)
		return st;
	out->tokens = n;
	if (!isfinite(out->token_error_mean) || !isfinite(out->token_error_max) ||
	    !isfinite(out->segment_error_mean))
		return ms_fail(err, MS_ERR_NONFINITE, "MEO: the errors are not finite (NaN or infinite weights)");
	return MS_OK;
}
