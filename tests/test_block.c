/* The MoE block forward pass against a per-token double-precision reference, and the merged-block evaluation on
 * merges whose answer is known by construction. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/block.h"
#include "tests/fixtures.h"
#include "tests/test.h"

#define MAX_ROWS 64

/* ---- the reference: one token at a time, in double, in plain loops ---- */

static void ref_expert(const expert_weights *e, const float *x, double *out)
{
	double *h = malloc((size_t)e->f * sizeof *h);
	for (int i = 0; i < e->f; i++) {
		double u = 0, g = 0;
		for (int c = 0; c < e->d; c++) {
			u += (double)e->up[(int64_t)i * e->d + c] * x[c];
			if (e->gate)
				g += (double)e->gate[(int64_t)i * e->d + c] * x[c];
		}
		h[i] = e->act == MDL_ACT_RELU ? (u > 0 ? u : 0) : u * g / (1.0 + exp(-g));
	}
	for (int c = 0; c < e->d; c++) {
		double s = 0;
		for (int i = 0; i < e->f; i++)
			s += (double)e->down[(int64_t)c * e->f + i] * h[i];
		out[c] = s;
	}
	free(h);
}

/* Top-k over the unmasked rows by repeated strict maximum (so the lower index wins ties), softmax over the
 * unmasked rows, then renormalise and scale as the routing says. */
static int ref_route(const blk_config *c, const float *x, int *sel, double *w)
{
	double z[MAX_ROWS];
	int used[MAX_ROWS] = {0}, active = 0;
	double mx = -INFINITY, sum = 0, sel_sum = 0;
	for (int r = 0; r < c->n_router; r++) {
		z[r] = 0;
		for (int i = 0; i < c->d; i++)
			z[r] += (double)c->router[(int64_t)r * c->d + i] * x[i];
		if (c->slot[r] >= 0) {
			active++;
			mx = fmax(mx, z[r]);
		}
	}
	int k = c->routing.top_k < active ? c->routing.top_k : active;
	for (int r = 0; r < c->n_router; r++)
		sum += c->slot[r] >= 0 ? exp(z[r] - mx) : 0;
	for (int j = 0; j < k; j++) {
		int best = -1;
		for (int r = 0; r < c->n_router; r++)
			if (c->slot[r] >= 0 && !used[r] && (best < 0 || z[r] > z[best]))
				best = r;
		used[best] = 1;
		sel[j] = best;
		w[j] = exp(z[best] - mx) / sum;
		sel_sum += w[j];
	}
	for (int j = 0; j < k; j++)
		w[j] = (c->routing.renormalize ? w[j] / sel_sum : w[j]) * c->routing.scale;
	return k;
}

static void ref_block(const blk_config *c, const float *x, int T, double *y, int *sel, double *w)
{
	double *o = malloc((size_t)c->d * sizeof *o);
	int k = blk_top_k(c);
	for (int t = 0; t < T; t++) {
		ref_route(c, x + (int64_t)t * c->d, sel + t * k, w + t * k);
		double *yt = y + (int64_t)t * c->d;
		memset(yt, 0, (size_t)c->d * sizeof *yt);
		for (int j = 0; j < k; j++) {
			ref_expert(&c->experts[c->slot[sel[t * k + j]]], x + (int64_t)t * c->d, o);
			for (int i = 0; i < c->d; i++)
				yt[i] += w[t * k + j] * o[i];
		}
	}
	free(o);
}

/* Runs blk_forward and the reference on T random tokens; checks the selections exactly, the weights to 1e-5 and
 * every output to 1e-5 of the largest reference output. */
static void check_against_reference(const blk_config *c, int T, unsigned long long seed)
{
	const int d = c->d, k = blk_top_k(c);
	float *x = rand_floats((int64_t)T * d, 1.0f, &seed);
	float *y = malloc((size_t)T * d * sizeof *y), *w = malloc((size_t)T * k * sizeof *w);
	int *sel = malloc((size_t)T * k * sizeof *sel), *rsel = malloc((size_t)T * k * sizeof *rsel);
	double *ry = malloc((size_t)T * d * sizeof *ry), *rw = malloc((size_t)T * k * sizeof *rw);
	ms_error err = {0};
	CHECK(blk_forward(c, x, T, y, sel, w, &err) == MS_OK, "%s", err.msg);
	ref_block(c, x, T, ry, rsel, rw);
	int sel_bad = 0;
	double w_bad = 0, y_max = 0, y_bad = 0;
	for (int i = 0; i < T * k; i++) {
		sel_bad += sel[i] != rsel[i];
		w_bad = fmax(w_bad, fabs(w[i] - rw[i]) / fmax(1.0, fabs(rw[i])));
	}
	for (int64_t i = 0; i < (int64_t)T * d; i++) {
		y_max = fmax(y_max, fabs(ry[i]));
		y_bad = fmax(y_bad, fabs(y[i] - ry[i]));
	}
	CHECK(sel_bad == 0, "%d selections differ from the reference", sel_bad);
	CHECK(w_bad <= 1e-5, "routing weight off by %g", w_bad);
	CHECK(y_max > 0 && y_bad <= 1e-5 * y_max, "output off by %g of max %g", y_bad, y_max);
	free(x);
	free(y);
	free(w);
	free(sel);
	free(rsel);
	free(ry);
	free(rw);
}

/* More than BLK_BATCH tokens reach each expert, so the gathered batches split. */
static void test_forward_mixtral(void)
{
	unsigned long long seed = 11;
	bank b;
	bank_init(&b, 8, 32, 48, MDL_ACT_SILU_GLU, &seed);
	blk_config c = bank_config(&b, (mdl_routing){.top_k = 2, .renormalize = 1, .scale = 1.0f});
	check_against_reference(&c, 2200, 12);
	bank_free(&b);
}

static void test_forward_deepseek(void)
{
	unsigned long long seed = 21;
	bank b;
	bank_init(&b, 16, 24, 20, MDL_ACT_SILU_GLU, &seed);
	blk_config c = bank_config(&b, (mdl_routing){.top_k = 6, .renormalize = 0, .scale = 2.5f});
	check_against_reference(&c, 300, 22);
	bank_free(&b);
}

static void test_forward_switch(void)
{
	unsigned long long seed = 31;
	bank b;
	bank_init(&b, 4, 16, 40, MDL_ACT_RELU, &seed);
	blk_config c = bank_config(&b, (mdl_routing){.top_k = 1, .renormalize = 0, .scale = 1.0f});
	check_against_reference(&c, 300, 32);
	bank_free(&b);
}

/* Masked rows: never selected, out of the softmax (the reference skips them), top-k capped at the rows left. */
static void test_forward_masked(void)
{
	unsigned long long seed = 41;
	bank b;
	bank_init(&b, 8, 16, 12, MDL_ACT_SILU_GLU, &seed);
	int slot[8] = {0, -1, 2, 3, -1, 5, 6, -1};
	blk_config c = bank_config(&b, (mdl_routing){.top_k = 3, .renormalize = 0, .scale = 1.0f});
	c.slot = slot;
	check_against_reference(&c, 200, 42);

	enum { T = 200 };
	float *x = rand_floats(T * 16, 1.0f, &seed), *y = malloc(T * 16 * sizeof *y), w[T * 3];
	int sel[T * 3], masked = 0;
	CHECK(blk_forward(&c, x, T, y, sel, w, NULL) == MS_OK, "forward failed");
	for (int i = 0; i < T * 3; i++)
		masked += slot[sel[i]] < 0;
	CHECK(masked == 0, "%d selections of masked rows", masked);

	/* one row left: top-3 becomes top-1, every token gets it with the whole softmax mass */
	int one[8] = {-1, -1, -1, -1, -1, 5, -1, -1};
	c.slot = one;
	CHECK(blk_top_k(&c) == 1, "top-k %d", blk_top_k(&c));
	CHECK(blk_forward(&c, x, T, y, sel, w, NULL) == MS_OK, "forward failed");
	int wrong = 0;
	for (int t = 0; t < T; t++)
		wrong += sel[t] != 5 || fabsf(w[t] - 1.0f) > 1e-6f;
	CHECK(wrong == 0, "%d tokens not routed to row 5 with weight 1", wrong);
	free(x);
	free(y);
	bank_free(&b);
}

static void test_config_errors(void)
{
	unsigned long long seed = 51;
	bank b;
	bank_init(&b, 4, 8, 6, MDL_ACT_SILU_GLU, &seed);
	blk_config c = bank_config(&b, (mdl_routing){.top_k = 2, .renormalize = 1, .scale = 1.0f});
	float x[3 * 8] = {0}, y[3 * 8];
	ms_error err = {0};
	int bad[4] = {0, 1, 4, 3};
	c.slot = bad;
	CHECK(blk_forward(&c, x, 3, y, NULL, NULL, &err) == MS_ERR_ARG, "%s", err.msg);
	CHECK(strstr(err.msg, "router row 2") != NULL, "message: %s", err.msg);
	int none[4] = {-1, -1, -1, -1};
	c.slot = none;
	CHECK(blk_forward(&c, x, 3, y, NULL, NULL, &err) == MS_ERR_ARG, "%s", err.msg);
	CHECK(strstr(err.msg, "masked") != NULL, "message: %s", err.msg);
	CHECK(blk_top_k(&c) == 0, "top-k %d of a bad config", blk_top_k(&c));
	c.slot = b.slot;
	x[8 + 3] = NAN;
	CHECK(blk_forward(&c, x, 3, y, NULL, NULL, &err) == MS_ERR_NONFINITE, "%s", err.msg);
	CHECK(strstr(err.msg, "token 1") != NULL, "message: %s", err.msg);
	b.ex[2].gate = NULL;
	CHECK(blk_forward(&c, x, 3, y, NULL, NULL, &err) == MS_ERR_ARG, "%s", err.msg);
	CHECK(strstr(err.msg, "slot 2") != NULL, "message: %s", err.msg);
	bank_bind(&b);
	b.ex[1].d = 9;
	CHECK(blk_check(&c, &err) == MS_ERR_ARG, "a width-9 expert in a width-8 block");
	CHECK(blk_forward(&c, x, 0, y, NULL, NULL, NULL) == MS_ERR_ARG, "bad config with no tokens");
	bank_bind(&b);
	CHECK(blk_forward(&c, x, 0, y, NULL, NULL, NULL) == MS_OK, "no tokens is no work");
	bank_free(&b);
}

/* Aliased with every expert its own group: the same block, so no error and full agreement. */
static void test_eval_identity(void)
{
	unsigned long long seed = 61;
	bank b;
	bank_init(&b, 8, 16, 24, MDL_ACT_SILU_GLU, &seed);
	blk_config c = bank_config(&b, (mdl_routing){.top_k = 2, .renormalize = 1, .scale = 1.0f});
	int group[8] = {0, 1, 2, 3, 4, 5, 6, 7};
	const int T = 400;
	float *x = rand_floats(T * 16, 1.0f, &seed);
	blk_eval_result r;
	ms_error err = {0};
	CHECK(blk_eval(&c, &c, group, NULL, x, T, 0, &r, &err) == MS_OK, "%s", err.msg);
	CHECK(r.tokens == T, "%lld tokens", (long long)r.tokens);
	CHECK(r.rel_error == 0.0, "rel_error %g", r.rel_error);
	CHECK(r.routing_agreement == 1.0, "agreement %g", r.routing_agreement);
	CHECK(r.params_before == r.params_after, "%lld vs %lld", (long long)r.params_before, (long long)r.params_after);
	free(x);
	bank_free(&b);
}

/* Frequency-free average of each group's members, written into slot g of merged [G, per expert]. */
static void average_groups(const bank *b, const int *group, int G, float *merged)
{
	const int64_t per = bank_per_expert(b);
	memset(merged, 0, (size_t)(G * per) * sizeof *merged);
	for (int g = 0; g < G; g++) {
		int n = 0;
		for (int e = 0; e < b->E; e++)
			if (group[e] == g) {
				n++;
				for (int64_t i = 0; i < per; i++)
					merged[g * per + i] += b->weights[e * per + i];
			}
		for (int64_t i = 0; i < per; i++)
			merged[g * per + i] /= (float)n;
	}
}

/* An aliased merge keeps the router, so routing groups never change; the error matches the reference's. */
static void test_eval_aliased(void)
{
	unsigned long long seed = 71;
	bank b, m;
	bank_init(&b, 8, 16, 24, MDL_ACT_SILU_GLU, &seed);
	bank_init(&m, 4, 16, 24, MDL_ACT_SILU_GLU, &seed);
	int group[8] = {0, 1, 0, 2, 3, 1, 2, 3};
	average_groups(&b, group, 4, m.weights);
	mdl_routing rt = {.top_k = 2, .renormalize = 1, .scale = 1.0f};
	blk_config c = bank_config(&b, rt);
	blk_config a = {.n_router = 8, .router = b.router, .slot = group, .n_slots = 4, .experts = m.ex,
			.routing = rt, .d = 16};
	const int T = 300;
	float *x = rand_floats(T * 16, 1.0f, &seed);
	blk_eval_result r;
	ms_error err = {0};
	CHECK(blk_eval(&c, &a, group, NULL, x, T, 0, &r, &err) == MS_OK, "%s", err.msg);
	CHECK(r.routing_agreement == 1.0, "agreement %g", r.routing_agreement);

	double *y = malloc(T * 16 * sizeof *y), *y2 = malloc(T * 16 * sizeof *y2), *w = malloc(T * 2 * sizeof *w);
	int *sel = malloc(T * 2 * sizeof *sel);
	ref_block(&c, x, T, y, sel, w);
	ref_block(&a, x, T, y2, sel, w);
	double num = 0, den = 0;
	for (int i = 0; i < T * 16; i++) {
		num += (y[i] - y2[i]) * (y[i] - y2[i]);
		den += y[i] * y[i];
	}
	double want = sqrt(num / den);
	CHECK(want > 0.05, "the planted merge should change the output (%g)", want);
	CHECK(fabs(r.rel_error - want) <= 1e-4 * want, "rel_error %g, reference %g", r.rel_error, want);
	free(y);
	free(y2);
	free(w);
	free(sel);
	free(x);
	bank_free(&b);
	bank_free(&m);
}

/* Experts 0 and 1 identical with identical router rows; x's last feature is a constant 1, so the compact row
 * r0 + log(2) e_last gives the merged expert exp(z0) + exp(z1) of softmax mass: with every expert selected the
 * compact block computes exactly what the original does. */
static void test_eval_compact_duplicates(void)
{
	unsigned long long seed = 81;
	const int d = 12, f = 10, T = 250;
	bank b, m;
	bank_init(&b, 4, d, f, MDL_ACT_SILU_GLU, &seed);
	bank_init(&m, 3, d, f, MDL_ACT_SILU_GLU, &seed);
	const int64_t per = bank_per_expert(&b);
	memcpy(b.weights + per, b.weights, (size_t)per * sizeof(float));
	memcpy(b.router + d, b.router, (size_t)d * sizeof(float));
	memcpy(m.weights, b.weights, (size_t)per * sizeof(float));
	memcpy(m.weights + per, b.weights + 2 * per, (size_t)(2 * per) * sizeof(float));
	memcpy(m.router, b.router, (size_t)d * sizeof(float));
	memcpy(m.router + d, b.router + 2 * d, (size_t)(2 * d) * sizeof(float));
	m.router[d - 1] += (float)log(2.0);
	float *x = rand_floats(T * d, 1.0f, &seed);
	for (int t = 0; t < T; t++)
		x[t * d + d - 1] = 1.0f;
	int group[4] = {0, 0, 1, 2};
	blk_eval_result r;
	for (int renorm = 0; renorm < 2; renorm++) {
		mdl_routing rt = {.top_k = 4, .renormalize = renorm, .scale = 1.0f};
		blk_config c = bank_config(&b, rt), p = bank_config(&m, rt);
		CHECK(blk_top_k(&p) == 3, "top-k %d", blk_top_k(&p));
		CHECK(blk_eval(&c, &p, group, NULL, x, T, 0, &r, NULL) == MS_OK, "eval failed");
		CHECK(r.rel_error < 1e-5, "renormalize %d: rel_error %g", renorm, r.rel_error);
		CHECK(r.routing_agreement == 1.0, "agreement %g", r.routing_agreement);
	}
	free(x);
	bank_free(&b);
	bank_free(&m);
}

/* A layout with a duplicate slot: slot 3 holds group 0 again (sharing its storage) behind a copy of router row 0,
 * and row 0 is masked, so every token of expert 0 now goes through slot 3. With slot_group those tokens still
 * agree; without it slot 3 reads as group 3 and exactly those tokens disagree. */
static void test_eval_padded_slot_group(void)
{
	unsigned long long seed = 91;
	const int d = 10, T = 300;
	bank b;
	bank_init(&b, 3, d, 8, MDL_ACT_SILU_GLU, &seed);
	float *router = malloc(4 * d * sizeof *router);
	memcpy(router, b.router, 3 * d * sizeof *router);
	memcpy(router + 3 * d, b.router, d * sizeof *router);
	expert_weights ex[4] = {b.ex[0], b.ex[1], b.ex[2], b.ex[0]};
	int slot[4] = {-1, 1, 2, 3}, slot_group[4] = {0, 1, 2, 0}, group[3] = {0, 1, 2};
	mdl_routing rt = {.top_k = 1, .renormalize = 1, .scale = 1.0f};
	blk_config c = bank_config(&b, rt);
	blk_config p = {.n_router = 4, .router = router, .slot = slot, .n_slots = 4, .experts = ex, .routing = rt,
			.d = d};
	float *x = rand_floats(T * d, 1.0f, &seed);
	int *sel = malloc(T * sizeof *sel), to_zero = 0;
	CHECK(blk_route(&c, x, T, sel, NULL, NULL) == MS_OK, "route failed");
	for (int t = 0; t < T; t++)
		to_zero += sel[t] == 0;
	CHECK(to_zero > 20 && to_zero < T - 20, "expert 0 takes %d of %d tokens", to_zero, T);
	blk_eval_result r;
	CHECK(blk_eval(&c, &p, group, slot_group, x, T, 0, &r, NULL) == MS_OK, "eval failed");
	CHECK(r.routing_agreement == 1.0, "agreement %g", r.routing_agreement);
	CHECK(r.rel_error < 1e-6, "rel_error %g", r.rel_error);
	CHECK(r.params_after == 4 * d + 3 * blk_expert_params(&b.ex[0]), "shared storage counts once: %lld",
	      (long long)r.params_after);
	CHECK(blk_eval(&c, &p, group, NULL, x, T, 0, &r, NULL) == MS_OK, "eval failed");
	CHECK_CLOSE(r.routing_agreement, 1.0 - (double)to_zero / T, 1e-12);
	free(sel);
	free(x);
	free(router);
	bank_free(&b);
}

/* Expert 1 = expert 0 + eps D, merged into their mean: the more distinct the pair, the larger the error. */
static void test_eval_monotone(void)
{
	unsigned long long seed = 101;
	const int d = 16, f = 20, T = 300;
	bank b, m, dir;
	bank_init(&b, 4, d, f, MDL_ACT_SILU_GLU, &seed);
	bank_init(&m, 3, d, f, MDL_ACT_SILU_GLU, &seed);
	bank_init(&dir, 1, d, f, MDL_ACT_SILU_GLU, &seed);
	const int64_t per = bank_per_expert(&b);
	int group[4] = {0, 0, 1, 2};
	mdl_routing rt = {.top_k = 2, .renormalize = 1, .scale = 1.0f};
	blk_config c = bank_config(&b, rt);
	blk_config a = {.n_router = 4, .router = b.router, .slot = group, .n_slots = 3, .experts = m.ex, .routing = rt,
			.d = d};
	float *x = rand_floats(T * d, 1.0f, &seed);
	const double eps[5] = {0.0, 0.05, 0.2, 0.5, 1.0};
	double last = -1;
	for (int i = 0; i < 5; i++) {
		for (int64_t j = 0; j < per; j++)
			b.weights[per + j] = b.weights[j] + (float)eps[i] * dir.weights[j];
		average_groups(&b, group, 3, m.weights);
		blk_eval_result r;
		CHECK(blk_eval(&c, &a, group, NULL, x, T, 0, &r, NULL) == MS_OK, "eval failed");
		if (i == 0)
			CHECK(r.rel_error < 1e-6, "identical pair: rel_error %g", r.rel_error);
		else
			CHECK(r.rel_error > last * 1.2, "eps %g: rel_error %g after %g", eps[i], r.rel_error, last);
		last = r.rel_error;
	}
	free(x);
	bank_free(&b);
	bank_free(&m);
	bank_free(&dir);
}

/* Hand counts: E = 4, d = 8, f = 6, gated: an expert has 3 * 8 * 6 = 144 parameters, the router 4 * 8 = 32. */
static void test_params_flops(void)
{
	unsigned long long seed = 111;
	bank b;
	bank_init(&b, 4, 8, 6, MDL_ACT_SILU_GLU, &seed);
	mdl_routing rt = {.top_k = 2, .renormalize = 1, .scale = 1.0f};
	blk_config c = bank_config(&b, rt);
	CHECK(blk_expert_params(&b.ex[0]) == 144, "%lld", (long long)blk_expert_params(&b.ex[0]));
	CHECK(blk_params(&c) == 32 + 4 * 144, "%lld", (long long)blk_params(&c));
	int group[4] = {0, 1, 1, 0};
	blk_config a = {.n_router = 4, .router = b.router, .slot = group, .n_slots = 2, .experts = b.ex, .routing = rt,
			.d = 8};
	CHECK(blk_params(&a) == 32 + 2 * 144, "%lld", (long long)blk_params(&a));
	int one[1] = {0};
	blk_config p = {.n_router = 1, .router = b.router, .slot = one, .n_slots = 1, .experts = b.ex, .routing = rt,
			.d = 8};
	CHECK(blk_params(&p) == 8 + 144, "%lld", (long long)blk_params(&p));

	const int T = 50;
	float *x = rand_floats(T * 8, 1.0f, &seed);
	blk_eval_result r;
	CHECK(blk_eval(&c, &a, group, NULL, x, T, 0, &r, NULL) == MS_OK, "eval failed");
	CHECK(r.flops_before == 2.0 * 32 + 2 * 2.0 * 144, "before %g", r.flops_before);  /* 640 */
	CHECK(r.flops_after == 640.0, "aliased keeps the router and k: %g", r.flops_after);
	CHECK(blk_eval(&c, &p, group, NULL, x, T, 0, &r, NULL) == MS_OK, "eval failed");
	CHECK(r.flops_after == 2.0 * 8 + 2.0 * 144, "compact to one expert, top-k capped at 1: %g", r.flops_after);
	CHECK(r.params_before == 608 && r.params_after == 152, "%lld, %lld", (long long)r.params_before,
	      (long long)r.params_after);

	bank s;
	bank_init(&s, 3, 8, 6, MDL_ACT_RELU, &seed);
	CHECK(blk_expert_params(&s.ex[0]) == 2 * 8 * 6, "no gate: up and down only");
	free(x);
	bank_free(&s);
	bank_free(&b);
}

/* max_tokens picks floor(i T / n): the same result as evaluating those tokens gathered by hand. */
static void test_eval_subsample(void)
{
	unsigned long long seed = 121;
	enum { d = 8, T = 103, n = 10 };
	bank b, m;
	bank_init(&b, 4, d, 6, MDL_ACT_SILU_GLU, &seed);
	bank_init(&m, 2, d, 6, MDL_ACT_SILU_GLU, &seed);
	int group[4] = {0, 1, 1, 0};
	average_groups(&b, group, 2, m.weights);
	mdl_routing rt = {.top_k = 2, .renormalize = 1, .scale = 1.0f};
	blk_config c = bank_config(&b, rt);
	blk_config a = {.n_router = 4, .router = b.router, .slot = group, .n_slots = 2, .experts = m.ex, .routing = rt,
			.d = d};
	float *x = rand_floats(T * d, 1.0f, &seed), xs[n * d];
	for (int i = 0; i < n; i++)
		memcpy(xs + i * d, x + (i * T / n) * d, d * sizeof(float));
	CHECK(blk_subsample_count(T, n) == n && blk_subsample_count(T, 0) == T && blk_subsample_count(T, 500) == T,
	      "subsample counts");
	CHECK(blk_subsample_index(9, T, n) == 92 && blk_subsample_index(5, T, T) == 5, "floor(9 * 103 / 10) = 92");
	blk_eval_result r1, r2;
	CHECK(blk_eval(&c, &a, group, NULL, x, T, n, &r1, NULL) == MS_OK, "subsampled eval failed");
	CHECK(blk_eval(&c, &a, group, NULL, xs, n, 0, &r2, NULL) == MS_OK, "eval of the gathered tokens failed");
	CHECK(r1.tokens == n && r2.tokens == n, "%lld, %lld", (long long)r1.tokens, (long long)r2.tokens);
	CHECK(r1.rel_error == r2.rel_error && r1.rel_error > 0, "%g vs %g", r1.rel_error, r2.rel_error);
	ms_error err = {0};
	a.d = 9;
	CHECK(blk_eval(&c, &a, group, NULL, x, T, n, &r1, &err) == MS_ERR_ARG, "%s", err.msg);
	CHECK(strncmp(err.msg, "merged: ", 8) == 0, "message: %s", err.msg);
	a.d = d;
	CHECK(blk_eval(&c, &a, NULL, NULL, x, T, n, &r1, &err) == MS_ERR_ARG, "no groups: %s", err.msg);
	m.weights[3] = NAN;
	CHECK(blk_eval(&c, &a, group, NULL, x, T, n, &r1, &err) == MS_ERR_NONFINITE, "NaN weight: %s", err.msg);
	free(x);
	bank_free(&b);
	bank_free(&m);
}

int main(void)
{
	RUN(test_forward_mixtral);
	RUN(test_forward_deepseek);
	RUN(test_forward_switch);
	RUN(test_forward_masked);
	RUN(test_config_errors);
	RUN(test_eval_identity);
	RUN(test_eval_aliased);
	RUN(test_eval_compact_duplicates);
	RUN(test_eval_padded_slot_group);
	RUN(test_eval_monotone);
	RUN(test_params_flops);
	RUN(test_eval_subsample);
	return test_summary();
}
