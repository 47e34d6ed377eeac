/* MEO analysis against a brute-force reference that builds each token's (and each segment's) mixed expert
 * explicitly in double precision, plus cases whose answer is known by construction. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/meo.h"
#include "tests/fixtures.h"
#include "tests/test.h"

/* ---- the reference ---- */

/* out [d] = the expert with weights mix [per expert] (sum over e of coef[e] W_e, in double) applied to x. */
static void ref_mixed(const bank *b, const double *coef, const float *x, double *out)
{
	const int d = b->d, f = b->f, gated = b->act == MDL_ACT_SILU_GLU;
	const int64_t per = bank_per_expert(b), fd = (int64_t)f * d;
	double *mix = calloc((size_t)per, sizeof *mix), *h = malloc((size_t)f * sizeof *h);
	for (int e = 0; e < b->E; e++)
		for (int64_t i = 0; i < per; i++)
			mix[i] += coef[e] * b->weights[e * per + i];
	const double *gate = mix, *up = mix + (gated ? fd : 0), *down = up + fd;
	for (int i = 0; i < f; i++) {
		double u = 0, g = 0;
		for (int c = 0; c < d; c++) {
			u += up[(int64_t)i * d + c] * x[c];
			g += gated ? gate[(int64_t)i * d + c] * x[c] : 0;
		}
		h[i] = gated ? u * g / (1.0 + exp(-g)) : (u > 0 ? u : 0);
	}
	for (int c = 0; c < d; c++) {
		out[c] = 0;
		for (int i = 0; i < f; i++)
			out[c] += down[(int64_t)c * f + i] * h[i];
	}
	free(mix);
	free(h);
}

/* The routed output y [d] = sum_j g_j E_j(x), one expert at a time. */
static void ref_routed(const bank *b, const int *sel, const float *w, int k, const float *x, double *y)
{
	double *coef = calloc((size_t)b->E, sizeof *coef), *o = malloc((size_t)b->d * sizeof *o);
	memset(y, 0, (size_t)b->d * sizeof *y);
	for (int j = 0; j < k; j++) {
		memset(coef, 0, (size_t)b->E * sizeof *coef);
		coef[sel[j]] = 1.0;
		ref_mixed(b, coef, x, o);
		for (int c = 0; c < b->d; c++)
			y[c] += w[j] * o[c];
	}
	free(coef);
	free(o);
}

static double ref_norm_diff(const double *a, const double *b, int64_t n, double *den)
{
	double num = 0;
	*den = 0;
	for (int64_t i = 0; i < n; i++) {
		num += (a[i] - b[i]) * (a[i] - b[i]);
		*den += b[i] * b[i];
	}
	return num;
}

typedef struct {
	double mean, max, seg_mean;
	int64_t segments;
} ref_result;

/* Token errors with a mixed expert per token; segment errors with a mixed expert per segment (segments listed
 * in ascending id order, all of them: tests keep them under MEO_MAX_SEGMENTS). Routing from blk_route. */
static void ref_meo(const bank *b, const blk_config *c, const float *x, int T, const int32_t *seg, ref_result *r)
{
	const int k = blk_top_k(c), d = b->d;
	int *sel = malloc((size_t)T * k * sizeof *sel);
	float *w = malloc((size_t)T * k * sizeof *w);
	double *coef = malloc((size_t)b->E * sizeof *coef), *y = malloc((size_t)T * d * sizeof *y);
	double *ym = malloc((size_t)T * d * sizeof *ym), den;
	CHECK(blk_route(c, x, T, sel, w, NULL) == MS_OK, "routing failed");
	*r = (ref_result){0};
	for (int t = 0; t < T; t++) {
		memset(coef, 0, (size_t)b->E * sizeof *coef);
		for (int j = 0; j < k; j++)
			coef[sel[t * k + j]] += w[t * k + j];
		ref_mixed(b, coef, x + t * d, ym + t * d);
		ref_routed(b, sel + t * k, w + t * k, k, x + t * d, y + t * d);
		double e = sqrt(ref_norm_diff(ym + t * d, y + t * d, d, &den) / den);
		r->mean += e / T;
		r->max = fmax(r->max, e);
	}
	for (int32_t id = 0; seg && id < 1000; id++) {
		int L = 0;
		memset(coef, 0, (size_t)b->E * sizeof *coef);
		for (int t = 0; t < T; t++)
			for (int j = 0; j < k && seg[t] == id; j++)
				coef[sel[t * k + j]] += w[t * k + j];
		for (int t = 0; t < T; t++)
			L += seg[t] == id;
		if (L == 0)
			continue;
		for (int e = 0; e < b->E; e++)
			coef[e] /= L;
		double num = 0, dsum = 0;
		for (int t = 0; t < T; t++) {
			if (seg[t] != id)
				continue;
			ref_mixed(b, coef, x + t * d, ym + t * d);
			num += ref_norm_diff(ym + t * d, y + t * d, d, &den);
			dsum += den;
		}
		r->seg_mean += sqrt(num / dsum);
		r->segments++;
	}
	if (r->segments)
		r->seg_mean /= (double)r->segments;
	free(sel);
	free(w);
	free(coef);
	free(y);
	free(ym);
}

/* meo_analyze against the reference on T random tokens in segments of `seg_len` consecutive tokens. */
static void check_against_reference(int E, int d, int f, mdl_act act, mdl_routing rt, int T, int seg_len,
				    unsigned long long seed)
{
	bank b;
	bank_init(&b, E, d, f, act, &seed);
	blk_config c = bank_config(&b, rt);
	float *x = rand_floats((int64_t)T * d, 1.0f, &seed);
	int32_t *seg = malloc((size_t)T * sizeof *seg);
	for (int t = 0; t < T; t++)
		seg[t] = t / seg_len;
	meo_result m;
	ref_result r;
	ms_error err = {0};
	CHECK(meo_analyze(&c, x, T, seg, 0, &m, &err) == MS_OK, "%s", err.msg);
	ref_meo(&b, &c, x, T, seg, &r);
	CHECK(m.tokens == T && m.segments == r.segments, "%lld tokens, %lld segments (reference %lld)",
	      (long long)m.tokens, (long long)m.segments, (long long)r.segments);
	CHECK(r.mean > 1e-3, "the reference should see an error (%g)", r.mean);
	CHECK_CLOSE(m.token_error_mean, r.mean, 1e-4);
	CHECK_CLOSE(m.token_error_max, r.max, 1e-4);
	CHECK_CLOSE(m.segment_error_mean, r.seg_mean, 1e-4);
	free(x);
	free(seg);
	bank_free(&b);
}

static void test_reference_mixtral(void)
{
	check_against_reference(8, 16, 24, MDL_ACT_SILU_GLU,
				(mdl_routing){.top_k = 2, .renormalize = 1, .scale = 1.0f}, 150, 25, 1);
}

static void test_reference_deepseek(void)
{
	check_against_reference(10, 12, 16, MDL_ACT_SILU_GLU,
				(mdl_routing){.top_k = 4, .renormalize = 0, .scale = 2.5f}, 120, 40, 2);
}

/* Top-1 without renormalising: the mixed expert is g W with g < 1, so even one expert gives an error (the
 * reference builds g W itself), against the routed output g E(x). */
static void test_reference_switch(void)
{
	check_against_reference(4, 12, 20, MDL_ACT_RELU, (mdl_routing){.top_k = 1, .renormalize = 0, .scale = 1.0f},
				120, 30, 3);
}

/* f = 600 takes three MEO_MIX_ROWS passes at segment level, the last one partial. */
static void test_reference_mix_rows(void)
{
	check_against_reference(4, 6, 600, MDL_ACT_SILU_GLU,
				(mdl_routing){.top_k = 2, .renormalize = 1, .scale = 1.0f}, 60, 20, 4);
}

/* A renormalised top-1 gives weight 1, the mixed expert is 1 W: MEO is exact, token by token. Segments mix
 * several experts, so they do see an error. */
static void test_top1_exact(void)
{
	unsigned long long seed = 5;
	bank b;
	bank_init(&b, 6, 16, 20, MDL_ACT_SILU_GLU, &seed);
	blk_config c = bank_config(&b, (mdl_routing){.top_k = 1, .renormalize = 1, .scale = 1.0f});
	enum { T = 200 };
	float *x = rand_floats(T * 16, 1.0f, &seed);
	int32_t seg[T];
	for (int t = 0; t < T; t++)
		seg[t] = t / 50;
	meo_result m;
	CHECK(meo_analyze(&c, x, T, seg, 0, &m, NULL) == MS_OK, "analysis failed");
	CHECK(m.token_error_max < 1e-6, "max token error %g", m.token_error_max);
	CHECK(m.segment_error_mean > 0.05, "segment error %g", m.segment_error_mean);
	free(x);
	bank_free(&b);
}

/* All experts identical with renormalised weights: every mixture sums to one copy of W, token and segment. */
static void test_identical_experts(void)
{
	unsigned long long seed = 6;
	bank b;
	bank_init(&b, 5, 16, 20, MDL_ACT_SILU_GLU, &seed);
	const int64_t per = (int64_t)20 * 16 * 3;
	for (int e = 1; e < 5; e++)
		memcpy(b.weights + e * per, b.weights, (size_t)per * sizeof(float));
	blk_config c = bank_config(&b, (mdl_routing){.top_k = 3, .renormalize = 1, .scale = 1.0f});
	enum { T = 120 };
	float *x = rand_floats(T * 16, 1.0f, &seed);
	int32_t seg[T];
	for (int t = 0; t < T; t++)
		seg[t] = (t * 7) % 4;   /* interleaved segments: ids need not be contiguous runs */
	meo_result m;
	CHECK(meo_analyze(&c, x, T, seg, 0, &m, NULL) == MS_OK, "analysis failed");
	CHECK(m.token_error_max < 1e-5, "token error %g", m.token_error_max);
	CHECK(m.segments == 4 && m.segment_error_mean < 1e-5, "%lld segments, error %g", (long long)m.segments,
	      m.segment_error_mean);
	free(x);
	bank_free(&b);
}

/* One token per segment: the segment's mean is that token's own mixture, computed the other way (mixed
 * weights instead of mixed projections). */
static void test_segment_of_one_token(void)
{
	unsigned long long seed = 7;
	bank b;
	bank_init(&b, 8, 16, 24, MDL_ACT_SILU_GLU, &seed);
	blk_config c = bank_config(&b, (mdl_routing){.top_k = 2, .renormalize = 0, .scale = 1.0f});
	enum { T = MEO_MAX_SEGMENTS };
	float *x = rand_floats(T * 16, 1.0f, &seed);
	int32_t seg[T];
	for (int t = 0; t < T; t++)
		seg[t] = 1000 - 3 * t;
	meo_result m;
	CHECK(meo_analyze(&c, x, T, seg, 0, &m, NULL) == MS_OK, "analysis failed");
	CHECK(m.segments == T, "%lld segments", (long long)m.segments);
	CHECK(m.token_error_mean > 0.01, "token error %g", m.token_error_mean);
	CHECK_CLOSE(m.segment_error_mean, m.token_error_mean, 1e-5);
	CHECK_CLOSE(m.flops_segment_meo, m.flops_token_meo, 1e-12);
	free(x);
	bank_free(&b);
}

/* FLOPs by hand: P = 3 * 8 * 6 = 144, k = 2: experts 2 k P = 576, token MEO 2 P + 3 P = 720; segment MEO
 * 2 P plus (2 n_s - 1) P per segment over its tokens, n_s counted here from the routing. */
static void test_flops(void)
{
	unsigned long long seed = 8;
	bank b;
	bank_init(&b, 4, 8, 6, MDL_ACT_SILU_GLU, &seed);
	blk_config c = bank_config(&b, (mdl_routing){.top_k = 2, .renormalize = 1, .scale = 1.0f});
	enum { T = 40, L = 10 };
	float *x = rand_floats(T * 8, 1.0f, &seed);
	int32_t seg[T];
	int sel[T * 2];
	for (int t = 0; t < T; t++)
		seg[t] = t / L;
	CHECK(blk_route(&c, x, T, sel, NULL, NULL) == MS_OK, "routing failed");
	double mix = 0;
	for (int s = 0; s < T / L; s++) {
		int used[4] = {0}, n = 0;
		for (int i = 2 * s * L; i < 2 * (s + 1) * L; i++)
			used[sel[i]] = 1;
		for (int e = 0; e < 4; e++)
			n += used[e];
		mix += (2.0 * n - 1.0) * 144;
	}
	meo_result m;
	CHECK(meo_analyze(&c, x, T, seg, 0, &m, NULL) == MS_OK, "analysis failed");
	CHECK(m.flops_experts == 576.0 && m.flops_token_meo == 720.0, "%g, %g", m.flops_experts, m.flops_token_meo);
	CHECK_CLOSE(m.flops_segment_meo, 288.0 + mix / T, 1e-12);
	CHECK(meo_analyze(&c, x, T, NULL, 0, &m, NULL) == MS_OK, "analysis failed");
	CHECK(m.segments == 0 && m.flops_segment_meo == 0 && m.segment_error_mean == 0, "no segments given");
	free(x);
	bank_free(&b);
}

/* max_tokens: the same as analysing the evenly spaced tokens gathered by hand; the segment cap picks evenly. */
static void test_subsample_and_cap(void)
{
	unsigned long long seed = 9;
	bank b;
	bank_init(&b, 6, 8, 10, MDL_ACT_SILU_GLU, &seed);
	blk_config c = bank_config(&b, (mdl_routing){.top_k = 2, .renormalize = 1, .scale = 1.0f});
	enum { T = 301, n = 100 };
	float *x = rand_floats(T * 8, 1.0f, &seed), xs[n * 8];
	int32_t seg[T], segs[n];
	for (int t = 0; t < T; t++)
		seg[t] = t;
	for (int i = 0; i < n; i++) {
		memcpy(xs + i * 8, x + (i * T / n) * 8, 8 * sizeof(float));
		segs[i] = seg[i * T / n];
	}
	meo_result m1, m2;
	CHECK(meo_analyze(&c, x, T, seg, n, &m1, NULL) == MS_OK, "analysis failed");
	CHECK(meo_analyze(&c, xs, n, segs, 0, &m2, NULL) == MS_OK, "analysis failed");
	CHECK(m1.tokens == n && m1.segments == MEO_MAX_SEGMENTS, "%lld tokens, %lld segments", (long long)m1.tokens,
	      (long long)m1.segments);
	CHECK(m1.token_error_mean == m2.token_error_mean && m1.token_error_max == m2.token_error_max,
	      "%g vs %g", m1.token_error_mean, m2.token_error_mean);
	CHECK(m1.segment_error_mean == m2.segment_error_mean, "%g vs %g", m1.segment_error_mean,
	      m2.segment_error_mean);
	free(x);
	bank_free(&b);
}

/* ---- a reference over any experts: matrices and biases mixed explicitly, in double ---- */

/* transformers' GptOssExperts activation, written from its code: the gate clamped from above at the limit, up
 * clamped both ways, then (up + 1) * gate * sigmoid(alpha gate). *clamped counts the clamps that acted. */
static double ref_clamped_swiglu(double g, double u, int64_t *clamped)
{
	const double L = MDL_SWIGLU_LIMIT;
	*clamped += (g > L) + (u > L || u < -L);
	g = g > L ? L : g;
	u = u > L ? L : u < -L ? -L : u;
	return (u + 1.0) * g / (1.0 + exp(-(double)MDL_SWIGLU_ALPHA * g));
}

/* sum_e coef[e] v_e[i] over E experts, v_e = the array `field` of ex[e] (NULL: the experts have none: 0). */
#define MIX(ex, E, coef, field, i) mix_at(ex, E, coef, offsetof(expert_weights, field), i)
static double mix_at(const expert_weights *ex, int E, const double *coef, size_t field, int64_t i)
{
	double v = 0;
	for (int e = 0; e < E; e++) {
		const float *a = *(const float *const *)((const char *)&ex[e] + field);
		v += a ? coef[e] * a[i] : 0.0;
	}
	return v;
}

/* out [d] = the expert whose every matrix and bias is sum_e coef[e] of expert e's (ex [E], one shape), on x. */
static void ref_mixed_ex(const expert_weights *ex, int E, const double *coef, const float *x, double *out,
			 int64_t *clamped)
{
	const int d = ex[0].d, f = ex[0].f;
	double *h = malloc((size_t)f * sizeof *h);
	for (int i = 0; i < f; i++) {
		double u = MIX(ex, E, coef, up_bias, i), g = MIX(ex, E, coef, gate_bias, i);
		for (int c = 0; c < d; c++) {
			u += MIX(ex, E, coef, up, (int64_t)i * d + c) * x[c];
			g += ex[0].gate ? MIX(ex, E, coef, gate, (int64_t)i * d + c) * x[c] : 0.0;
		}
		if (ex[0].act == MDL_ACT_CLAMPED_SWIGLU)
			h[i] = ref_clamped_swiglu(g, u, clamped);
		else
			h[i] = ex[0].act == MDL_ACT_SILU_GLU ? u * g / (1.0 + exp(-g)) : (u > 0 ? u : 0);
	}
	for (int c = 0; c < d; c++) {
		out[c] = MIX(ex, E, coef, down_bias, c);
		for (int i = 0; i < f; i++)
			out[c] += MIX(ex, E, coef, down, (int64_t)c * f + i) * h[i];
	}
	free(h);
}

/* |a - b| / |b|, the absolute |a - b| where b is 0 (as meo_analyze). */
static double ref_rel(double num, double den)
{
	return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* ref_meo for c's experts (identity slots) with their biases and activation, routing from blk_route (so with
 * c->seq, the capacity's drops: weight 0). Every segment id in 0..999 present is evaluated. */
static void ref_meo_ex(const blk_config *c, const float *x, int T, const int32_t *seg, ref_result *r,
		       int64_t *clamped)
{
	const int k = blk_top_k(c), d = c->d, E = c->n_slots;
	int *sel = malloc((size_t)T * k * sizeof *sel);
	float *w = malloc((size_t)T * k * sizeof *w);
	double *coef = malloc((size_t)E * sizeof *coef), *y = calloc((size_t)T * d, sizeof *y);
	double *ym = malloc((size_t)T * d * sizeof *ym), *o = malloc((size_t)d * sizeof *o), den;
	CHECK(blk_route(c, x, T, sel, w, NULL) == MS_OK, "routing failed");
	*r = (ref_result){0};
	for (int t = 0; t < T; t++) {
		memset(coef, 0, (size_t)E * sizeof *coef);
		for (int j = 0; j < k; j++) {   /* the routed output, one whole expert at a time */
			double one[64] = {0};
			one[sel[t * k + j]] = 1.0;
			ref_mixed_ex(c->experts, E, one, x + t * d, o, clamped);
			for (int i = 0; i < d; i++)
				y[t * d + i] += w[t * k + j] * o[i];
			coef[sel[t * k + j]] += w[t * k + j];
		}
		ref_mixed_ex(c->experts, E, coef, x + t * d, ym + t * d, clamped);
		double num = ref_norm_diff(ym + t * d, y + t * d, d, &den), e = ref_rel(num, den);
		r->mean += e / T;
		r->max = fmax(r->max, e);
	}
	for (int32_t id = 0; seg && id < 1000; id++) {
		int L = 0;
		memset(coef, 0, (size_t)E * sizeof *coef);
		for (int t = 0; t < T; t++)
			for (int j = 0; j < k && seg[t] == id; j++)
				coef[sel[t * k + j]] += w[t * k + j];
		for (int t = 0; t < T; t++)
			L += seg[t] == id;
		if (L == 0)
			continue;
		for (int e = 0; e < E; e++)
			coef[e] /= L;
		double num = 0, dsum = 0;
		for (int t = 0; t < T; t++) {
			if (seg[t] != id)
				continue;
			ref_mixed_ex(c->experts, E, coef, x + t * d, ym + t * d, clamped);
			num += ref_norm_diff(ym + t * d, y + t * d, d, &den);
			dsum += den;
		}
		r->seg_mean += ref_rel(num, dsum);
		r->segments++;
	}
	if (r->segments)
		r->seg_mean /= (double)r->segments;
	free(sel);
	free(w);
	free(coef);
	free(y);
	free(ym);
	free(o);
}

/* gpt_oss-shaped experts: gate, up, down and their three biases, the clamped SwiGLU. Weights large enough that
 * the clamp acts on some pre-activations (the tests check that it does). */
typedef struct {
	int E, d, f;
	float *w;             /* [E, per]: gate [f, d], up [f, d], down [d, f], gate bias [f], up bias [f], down bias [d] */
	float *router;        /* [E, d] */
	expert_weights *ex;   /* [E] */
	int *slot;            /* [E] */
} biased_bank;

static int64_t biased_per(int d, int f)
{
	return 3 * (int64_t)f * d + 2 * f + d;
}

static void biased_init(biased_bank *b, int E, int d, int f, unsigned long long *seed)
{
	const int64_t fd = (int64_t)f * d, per = biased_per(d, f);
	*b = (biased_bank){.E = E, .d = d, .f = f};
	b->w = malloc((size_t)(E * per) * sizeof *b->w);
	b->router = rand_floats((int64_t)E * d, 1.0f, seed);
	b->ex = malloc((size_t)E * sizeof *b->ex);
	b->slot = malloc((size_t)E * sizeof *b->slot);
	for (int e = 0; e < E; e++) {
		float *p = b->w + e * per;
		for (int64_t i = 0; i < per; i++)   /* matrices +-2.5 (so |gate x| passes 7 at times), biases +-3 */
			p[i] = (i < 2 * fd ? 2.5f : i < 3 * fd ? 0.3f : 3.0f) * test_rand_f(seed);
		b->ex[e] = (expert_weights){.gate = p, .up = p + fd, .down = p + 2 * fd, .gate_bias = p + 3 * fd,
					    .up_bias = p + 3 * fd + f, .down_bias = p + 3 * fd + 2 * f, .d = d, .f = f,
					    .act = MDL_ACT_CLAMPED_SWIGLU};
		b->slot[e] = e;
	}
}

static void biased_free(biased_bank *b)
{
	free(b->w);
	free(b->router);
	free(b->ex);
	free(b->slot);
}

static blk_config biased_config(const biased_bank *b)
{
	/* gpt_oss: softmax over the top-k logits, i.e. top-k of the softmax renormalised */
	return (blk_config){.n_router = b->E, .router = b->router, .slot = b->slot, .n_slots = b->E, .experts = b->ex,
			    .routing = {.top_k = 2, .renormalize = 1, .scale = 1.0f}, .d = b->d};
}

/* Biased, clamped experts against the reference that mixes every matrix and bias itself. f = 300 takes two
 * MEO_MIX_ROWS passes at segment level, so a down bias added per pass instead of once would show. */
static void test_reference_gptoss(void)
{
	unsigned long long seed = 11;
	biased_bank b;
	biased_init(&b, 6, 8, 300, &seed);
	blk_config c = biased_config(&b);
	enum { T = 90 };
	float *x = rand_floats(T * 8, 1.0f, &seed);
	int32_t seg[T];
	for (int t = 0; t < T; t++)
		seg[t] = t / 30;
	meo_result m;
	ref_result r;
	int64_t clamped = 0;
	ms_error err = {0};
	CHECK(meo_analyze(&c, x, T, seg, 0, &m, &err) == MS_OK, "%s", err.msg);
	ref_meo_ex(&c, x, T, seg, &r, &clamped);
	CHECK(clamped > 0, "the clamp never acted: the case does not test it");
	CHECK(m.tokens == T && m.segments == 3 && r.segments == 3, "%lld tokens, %lld segments", (long long)m.tokens,
	      (long long)m.segments);
	CHECK(r.mean > 1e-3, "the reference should see an error (%g)", r.mean);
	CHECK_CLOSE(m.token_error_mean, r.mean, 1e-4);
	CHECK_CLOSE(m.token_error_max, r.max, 1e-4);
	CHECK_CLOSE(m.segment_error_mean, r.seg_mean, 1e-4);
	/* the biases matter: the same matrices without them give another figure */
	for (int e = 0; e < b.E; e++)
		b.ex[e].gate_bias = b.ex[e].up_bias = b.ex[e].down_bias = NULL;
	meo_result m0;
	CHECK(meo_analyze(&c, x, T, seg, 0, &m0, &err) == MS_OK, "%s", err.msg);
	CHECK(fabs(m0.token_error_mean - m.token_error_mean) > 1e-3, "biases changed nothing (%g vs %g)",
	      m0.token_error_mean, m.token_error_mean);
	free(x);
	biased_free(&b);
}

/* Identical experts with identical biases and renormalised weights: every mixture, per token and per segment, is
 * the expert itself (up to float rounding of the coefficients, which sum to 1), so MEO gives the block's output. */
static void test_identical_biased_experts(void)
{
	unsigned long long seed = 12;
	biased_bank b;
	biased_init(&b, 5, 8, 40, &seed);
	const int64_t per = biased_per(8, 40);
	for (int e = 1; e < 5; e++)
		memcpy(b.w + e * per, b.w, (size_t)per * sizeof(float));
	blk_config c = biased_config(&b);
	c.routing.top_k = 3;
	enum { T = 120 };
	float *x = rand_floats(T * 8, 1.0f, &seed);
	int32_t seg[T];
	for (int t = 0; t < T; t++)
		seg[t] = (t * 5) % 3;
	meo_result m;
	ref_result r;
	int64_t clamped = 0;
	CHECK(meo_analyze(&c, x, T, seg, 0, &m, NULL) == MS_OK, "analysis failed");
	ref_meo_ex(&c, x, T, seg, &r, &clamped);
	CHECK(clamped > 0, "the clamp never acted: the case does not test it");
	CHECK(m.token_error_max < 1e-5, "token error %g", m.token_error_max);
	CHECK(m.segments == 3 && m.segment_error_mean < 1e-5, "%lld segments, error %g", (long long)m.segments,
	      m.segment_error_mean);
	CHECK(r.max < 1e-6, "the reference's own error %g (float weights sum to 1 within rounding)", r.max);
	free(x);
	biased_free(&b);
}

/* Experts whose slots differ in biases cannot be mixed element by element. */
static void test_bias_mismatch(void)
{
	unsigned long long seed = 13;
	biased_bank b;
	biased_init(&b, 3, 8, 6, &seed);
	blk_config c = biased_config(&b);
	float *x = rand_floats(20 * 8, 1.0f, &seed);
	meo_result m;
	ms_error err = {0};
	b.ex[1].up_bias = NULL;
	CHECK(meo_analyze(&c, x, 20, NULL, 0, &m, &err) == MS_ERR_ARG, "%s", err.msg);
	CHECK(strstr(err.msg, "slot 1") != NULL, "message: %s", err.msg);
	free(x);
	biased_free(&b);
}

/* Switch's capacity (top-1, not renormalised, ReLU): with the sequences, every token is analysed whatever
 * max_tokens says, and a token the capacity drops has routed output 0 and mixed expert 0 (error 0), as the
 * reference computes from blk_route's zeroed weights; without them nothing is dropped. */
static void test_capacity(void)
{
	unsigned long long seed = 14;
	bank b;
	bank_init(&b, 4, 12, 20, MDL_ACT_RELU, &seed);
	blk_config c = bank_config(&b, (mdl_routing){.top_k = 1, .renormalize = 0, .scale = 1.0f, .capacity = 3});
	enum { T = 96 };
	float *x = rand_floats(T * 12, 1.0f, &seed);
	int32_t seq[T], seg[T];
	for (int t = 0; t < T; t++)
		seq[t] = seg[t] = t / 24;   /* four sequences of 24 tokens: 4 experts x 3 keep at most 12 of each */
	c.seq = seq;
	meo_result m, m0;
	ref_result r, r0;
	int64_t clamped = 0;
	ms_error err = {0};
	CHECK(meo_analyze(&c, x, T, seg, 10, &m, &err) == MS_OK, "%s", err.msg);
	ref_meo_ex(&c, x, T, seg, &r, &clamped);
	CHECK(m.tokens == T, "%lld tokens analysed: a capacity needs every token", (long long)m.tokens);
	CHECK_CLOSE(m.token_error_mean, r.mean, 1e-4);
	CHECK_CLOSE(m.token_error_max, r.max, 1e-4);
	CHECK_CLOSE(m.segment_error_mean, r.seg_mean, 1e-4);
	c.seq = NULL;
	CHECK(meo_analyze(&c, x, T, seg, 0, &m0, &err) == MS_OK, "%s", err.msg);
	ref_meo_ex(&c, x, T, seg, &r0, &clamped);
	CHECK_CLOSE(m0.token_error_mean, r0.mean, 1e-4);
	/* at least 12 of every 24 tokens are dropped, each adding 0 in place of its error */
	CHECK(m.token_error_mean < 0.75 * m0.token_error_mean, "with drops %g, without %g", m.token_error_mean,
	      m0.token_error_mean);
	free(x);
	bank_free(&b);
}

static void test_errors(void)
{
	unsigned long long seed = 10;
	bank b;
	bank_init(&b, 3, 8, 6, MDL_ACT_SILU_GLU, &seed);
	blk_config c = bank_config(&b, (mdl_routing){.top_k = 2, .renormalize = 1, .scale = 1.0f});
	float *x = rand_floats(20 * 8, 1.0f, &seed);
	meo_result m;
	ms_error err = {0};
	b.ex[2].f = 5;
	CHECK(meo_analyze(&c, x, 20, NULL, 0, &m, &err) == MS_ERR_ARG, "%s", err.msg);
	CHECK(strstr(err.msg, "slot 2") != NULL, "message: %s", err.msg);
	b.ex[2].f = 6;
	CHECK(meo_analyze(&c, x, 0, NULL, 0, &m, &err) == MS_ERR_ARG, "no tokens: %s", err.msg);
	CHECK(meo_analyze(&c, NULL, 20, NULL, 0, &m, &err) == MS_ERR_ARG, "no input: %s", err.msg);
	b.weights[5] = INFINITY;
	CHECK(meo_analyze(&c, x, 20, NULL, 0, &m, &err) == MS_ERR_NONFINITE, "infinite weight: %s", err.msg);
	b.weights[5] = 0;
	x[17] = NAN;
	CHECK(meo_analyze(&c, x, 20, NULL, 0, &m, &err) == MS_ERR_NONFINITE, "NaN input: %s", err.msg);
	CHECK(strstr(err.msg, "token 2") != NULL, "message: %s", err.msg);
	free(x);
	bank_free(&b);
}

int main(void)
{
	RUN(test_reference_mixtral);
	RUN(test_reference_deepseek);
	RUN(test_reference_switch);
	RUN(test_reference_mix_rows);
	RUN(test_top1_exact);
	RUN(test_identical_experts);
	RUN(test_segment_of_one_token);
	RUN(test_flops);
	RUN(test_subsample_and_cap);
	RUN(test_errors);
	RUN(test_reference_gptoss);
	RUN(test_identical_biased_experts);
	RUN(test_bias_mismatch);
	RUN(test_capacity);
	return test_summary();
}
