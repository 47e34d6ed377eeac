/* MEO analysis against a brute-force reference that builds each token's (and each segment's) mixed expert
 * explicitly in double precision, plus cases whose answer is known by construction. */
#include <math.h>
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
	return test_summary();
}
