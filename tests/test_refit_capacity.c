/* The refit under Switch's expert capacity (analysis/refit.h with blk_config.seq): the capacity is applied where
 * the routing is built (blk_route), so a token the merged block drops has routing weight 0, features 0, and takes
 * no part in the fit. Planted: a target that is wrong only on the dropped tokens gives the same fit; without the
 * sequences (nothing dropped) the same wrong target does change it, so the case can fail. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/refit.h"
#include "pipeline/pipeline.h"
#include "tests/refit_fixture.h"
#include "tests/test.h"

enum { D = 6, F = 5, N = 120, S = 3, SEQ = 20, CAP = 4 };

typedef struct {
	float w[S][2 * F * D];
	expert_weights ex[S];
	float router[S * D];
	int slot[S];
	int32_t seq[N];
	blk_config cfg;
} switch_block;

/* Switch-shaped: ReLU experts, top-1 of the softmax, not renormalised, CAP tokens per expert and sequence. */
static void make_block(switch_block *b, unsigned long long seed)
{
	unsigned long long s = seed;
	for (int e = 0; e < S; e++) {
		ref_fill(b->w[e], 2 * F * D, 0.5f, &s);
		b->ex[e] = (expert_weights){.up = b->w[e], .down = b->w[e] + F * D, .d = D, .f = F, .act = MDL_ACT_RELU};
		b->slot[e] = e;
	}
	ref_fill(b->router, S * D, 1.0f, &s);
	for (int t = 0; t < N; t++)
		b->seq[t] = t / SEQ;
	b->cfg = (blk_config){.n_router = S, .router = b->router, .slot = b->slot, .n_slots = S, .experts = b->ex,
			      .routing = {.top_k = 1, .renormalize = 0, .scale = 1.0f, .capacity = CAP}, .d = D,
			      .seq = b->seq};
}

/* Refits a copy of b's down matrices to target; the result into out [S][D * F]. */
static void refit(const switch_block *b, const float *x, const float *target, int with_seq, float out[S][D * F])
{
	static switch_block c;
	memcpy(&c, b, sizeof c);
	for (int e = 0; e < S; e++) {   /* the copy's own storage */
		c.ex[e].up = c.w[e];
		c.ex[e].down = c.w[e] + F * D;
	}
	c.cfg.experts = c.ex;
	c.cfg.router = c.router;
	c.cfg.slot = c.slot;
	c.cfg.seq = with_seq ? c.seq : NULL;
	float *down[S];
	for (int e = 0; e < S; e++)
		down[e] = c.w[e] + F * D;
	rft_options o = rft_defaults();
	ms_error err = {0};
	CHECK(rft_down(&c.cfg, down, x, N, target, &o, &err) == MS_OK, "%s", err.msg);
	for (int e = 0; e < S; e++)
		memcpy(out[e], down[e], sizeof out[e]);
}

static double max_diff(float a[S][D * F], float b[S][D * F])
{
	double m = 0;
	for (int e = 0; e < S; e++)
		for (int i = 0; i < D * F; i++)
			m = fmax(m, fabs((double)a[e][i] - b[e][i]));
	return m;
}

static void test_dropped_tokens_take_no_part(void)
{
	static switch_block b;
	static float x[N * D], y[N * D], wrong[N * D];
	static float fit[S][D * F], fit_wrong[S][D * F], free_fit[S][D * F], free_wrong[S][D * F];
	make_block(&b, 21);
	unsigned long long s = 22;
	ref_fill(x, N * D, 1.0f, &s);
	ref_fill(y, N * D, 1.0f, &s);   /* any target: the fit need not be exact for the property to hold */
	int sel[N];
	float w[N];
	ms_error err = {0};
	CHECK(blk_route(&b.cfg, x, N, sel, w, &err) == MS_OK, "%s", err.msg);
	int dropped = 0;
	memcpy(wrong, y, sizeof wrong);
	for (int t = 0; t < N; t++)
		if (w[t] == 0.0f) {
			dropped++;
			for (int c = 0; c < D; c++)
				wrong[t * D + c] = 50.0f * test_rand_f(&s);
		}
	/* 3 experts x CAP = 12 of every 20 tokens kept at most */
	CHECK(dropped >= (N / SEQ) * (SEQ - S * CAP), "%d tokens dropped", dropped);
	refit(&b, x, y, 1, fit);
	refit(&b, x, wrong, 1, fit_wrong);
	CHECK(max_diff(fit, fit_wrong) == 0.0, "a target changed on dropped tokens only moved the fit by %g",
	      max_diff(fit, fit_wrong));
	refit(&b, x, y, 0, free_fit);
	refit(&b, x, wrong, 0, free_wrong);
	CHECK(max_diff(free_fit, free_wrong) > 1e-2, "without the capacity the wrong target should move the fit (%g)",
	      max_diff(free_fit, free_wrong));
	CHECK(max_diff(fit, free_fit) > 1e-3, "the capacity should change the fit (%g)", max_diff(fit, free_fit));
}

/* |y| of the block's own forward pass over all N tokens, with their sequences (NULL: no capacity). */
static double forward_norm(const switch_block *b, const float *x, const int32_t *seq)
{
	static float y[N * D];
	blk_config c = b->cfg;
	c.seq = seq;
	ms_error err = {0};
	CHECK(blk_forward(&c, x, N, y, NULL, NULL, &err) == MS_OK, "%s", err.msg);
	double sum = 0.0;
	for (int i = 0; i < N * D; i++)
		sum += (double)y[i] * y[i];
	return sqrt(sum);
}

/* eval's output norm under a capacity: every token goes through with the drops, whatever the token limit (a
 * subsample's tokens are not the sequences' tokens); the same norm as the forward pass over all of them, and not
 * the norm without drops, so the case can fail. */
static void test_output_norm_keeps_capacity(void)
{
	static switch_block b;
	make_block(&b, 0xC0FFEEULL);
	static float x[N * D];
	unsigned long long s = 77;
	ref_fill(x, N * D, 1.0f, &s);
	const double want = forward_norm(&b, x, b.seq), plain = forward_norm(&b, x, NULL);
	CHECK(fabs(want - plain) > 1e-3 * plain, "drops change the norm: %g against %g", want, plain);
	ms_error err = {0};
	for (int64_t limit = 0; limit <= N; limit += 30) {
		double got = -1.0;
		CHECK(pipe_output_norm(&b.cfg, x, N, limit, &got, &err) == MS_OK, "%s", err.msg);
		CHECK(got == want, "limit %lld: norm %.17g, forward with drops %.17g", (long long)limit, got, want);
	}
}

int main(void)
{
	RUN(test_dropped_tokens_take_no_part);
	RUN(test_output_norm_keeps_capacity);
	return test_summary();
}
