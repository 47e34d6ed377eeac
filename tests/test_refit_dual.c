/* The refit's token-space path (analysis/refit.c: slots with few tokens for their width f are solved through
 * lambda (A A^T + lambda I)^-1, with float products in the sweeps), which tests/test_refit.c's shapes (many tokens
 * per slot) never take: converged, it must reach the joint ridge least squares solution that LAPACK's QR computes
 * on the stacked system, alone and beside a slot solved in feature space (double); its results must not depend on
 * the thread count. The sizes are chosen so that the path each slot takes is known (checked from the routing):
 * token space when n_s <= 2 f, feature space when n_s > 4.45 f (docs/design.md, the refit). */
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/par.h"
#include "analysis/refit.h"
#include "tests/refit_fixture.h"
#include "tests/test.h"

/* A block of S slots [d, f] with random weights; router row s adds bias[s] on the constant last coordinate. */
typedef struct {
	int S, d, f;
	float *w, *router;
	int *slot;
	expert_weights *ex;
	float **down;
	blk_config cfg;
} tblock;

static int tblock_make(tblock *b, int S, int d, int f, int top_k, const float *bias, unsigned long long seed)
{
	unsigned long long s = seed;
	*b = (tblock){.S = S, .d = d, .f = f};
	b->w = malloc((size_t)S * 3 * f * d * sizeof *b->w);
	b->router = malloc((size_t)S * d * sizeof *b->router);
	b->slot = malloc((size_t)S * sizeof *b->slot);
	b->ex = malloc((size_t)S * sizeof *b->ex);
	b->down = malloc((size_t)S * sizeof *b->down);
	if (!b->w || !b->router || !b->slot || !b->ex || !b->down)
		return -1;
	ref_fill(b->w, (size_t)S * 3 * f * d, 0.5f, &s);
	ref_fill(b->router, (size_t)S * d, 1.0f, &s);
	for (int e = 0; e < S; e++) {
		float *base = b->w + (size_t)e * 3 * f * d;
		b->ex[e] = (expert_weights){.gate = base, .up = base + (size_t)f * d, .down = base + (size_t)2 * f * d,
					    .d = d, .f = f, .act = MDL_ACT_SILU_GLU};
		b->slot[e] = e;
		b->down[e] = base + (size_t)2 * f * d;
		b->router[(size_t)e * d + d - 1] = bias ? bias[e] : 0.0f;
	}
	b->cfg = (blk_config){.n_router = S, .router = b->router, .slot = b->slot, .n_slots = S, .experts = b->ex,
			      .routing = {.top_k = top_k, .renormalize = 0, .scale = 1.0f}, .d = d};
	return 0;
}

static void tblock_free(tblock *b)
{
	free(b->w);
	free(b->router);
	free(b->slot);
	free(b->ex);
	free(b->down);
}

/* x [n, d], the last coordinate 1 (the router's bias feature). */
static void make_tokens(float *x, int n, int d, unsigned long long seed)
{
	unsigned long long s = seed;
	for (int t = 0; t < n; t++)
		for (int c = 0; c < d; c++)
			x[(size_t)t * d + c] = c == d - 1 ? 1.0f : test_rand_f(&s);
}

/* Tokens routed to each slot (ns [S]). */
static void slot_counts(const tblock *b, const float *x, int n, int *ns)
{
	const int k = b->cfg.routing.top_k;
	int *sel = malloc((size_t)n * k * sizeof *sel);
	memset(ns, 0, (size_t)b->S * sizeof *ns);
	CHECK(sel && blk_route(&b->cfg, x, n, sel, NULL, NULL) == MS_OK);
	for (int i = 0; sel && i < n * k; i++)
		ns[b->slot[sel[i]]]++;
	free(sel);
}

/* The joint ridge problem, stacked for every output dimension at once: rows t (sum_s a_s(t) . w_s = y(t)) and,
 * per slot, sqrt(lambda_s) w_s = sqrt(lambda_s) m_s, lambda_s = rel trace(A_s^T A_s) / f; LAPACKE_dgels (QR).
 * sol [S, d, f]. */
static void joint_solution(const tblock *b, const float *x, int n, const float *y, double rel, float *const *m0,
			   double *sol)
{
	const int S = b->S, d = b->d, f = b->f, k = b->cfg.routing.top_k, rows = n + S * f, cols = S * f;
	int *sel = malloc((size_t)n * k * sizeof *sel);
	float *w = malloc((size_t)n * k * sizeof *w);
	double *a = calloc((size_t)rows * cols, sizeof *a), *rhs = calloc((size_t)rows * d, sizeof *rhs);
	double *trace = calloc((size_t)S, sizeof *trace), *h = malloc((size_t)f * sizeof *h);
	CHECK(sel && w && a && rhs && trace && h);
	if (!sel || !w || !a || !rhs || !trace || !h)
		goto out;
	CHECK(blk_route(&b->cfg, x, n, sel, w, NULL) == MS_OK);
	for (int t = 0; t < n; t++)
		for (int j = 0; j < k; j++) {
			const int s = b->slot[sel[t * k + j]];
			ref_hidden(&b->ex[s], x + (size_t)t * d, h);
			for (int i = 0; i < f; i++) {
				const double v = (double)w[t * k + j] * h[i];
				a[(size_t)t * cols + s * f + i] += v;
				trace[s] += v * v;
			}
		}
	for (int t = 0; t < n; t++)
		for (int c = 0; c < d; c++)
			rhs[(size_t)t * d + c] = y[(size_t)t * d + c];
	for (int s = 0; s < S; s++) {
		const double sq = sqrt(trace[s] > 0 ? rel * trace[s] / f : 1.0);
		for (int i = 0; i < f; i++) {
			a[(size_t)(n + s * f + i) * cols + s * f + i] = sq;
			for (int c = 0; c < d; c++)
				rhs[(size_t)(n + s * f + i) * d + c] = sq * m0[s][(size_t)c * f + i];
		}
	}
	CHECK(LAPACKE_dgels(LAPACK_ROW_MAJOR, 'N', rows, cols, d, a, cols, rhs, d) == 0);
	for (int s = 0; s < S; s++)
		for (int c = 0; c < d; c++)
			for (int i = 0; i < f; i++)
				sol[((size_t)s * d + c) * f + i] = rhs[(size_t)(s * f + i) * d + c];
out:
	free(sel);
	free(w);
	free(a);
	free(rhs);
	free(trace);
	free(h);
}

/* Refits b (its downs as the prior) towards y = another block's output plus noise, with many sweeps, and compares
 * with joint_solution. The tolerance, 1e-4 of the largest entry: the token-space sweeps round their products to
 * float (relative 6e-8 on terms the size of the slot's residual), which moves the fixed point by about that times
 * |A^T (A A^T + lambda I)^-1| <= 1 / (2 sqrt(lambda)) in the weights; measured, the difference is about 1e-6 to 1e-5
 * of the largest entry (the feature-space path alone, in tests/test_refit.c, holds to 1e-5). */
static void check_against_joint(tblock *b, const float *x, int n, unsigned long long seed, const char *what)
{
	const int S = b->S, d = b->d, f = b->f;
	tblock tgt;
	float *y = malloc((size_t)n * d * sizeof *y), *prior = malloc((size_t)S * d * f * sizeof *prior);
	double *sol = malloc((size_t)S * d * f * sizeof *sol);
	float **m0 = malloc((size_t)S * sizeof *m0);
	CHECK(y && prior && sol && m0 && tblock_make(&tgt, S, d, f, b->cfg.routing.top_k, NULL, seed) == 0);
	if (!y || !prior || !sol || !m0)
		goto out;
	/* the target: b's gates, ups and router with other downs, plus noise */
	memcpy(tgt.w, b->w, (size_t)S * 3 * f * d * sizeof *tgt.w);
	memcpy(tgt.router, b->router, (size_t)S * d * sizeof *tgt.router);
	unsigned long long s = seed + 1;
	for (int e = 0; e < S; e++)
		ref_fill(tgt.down[e], (size_t)d * f, 0.5f, &s);
	ms_error err = {0};
	CHECK(blk_forward(&tgt.cfg, x, n, y, NULL, NULL, &err) == MS_OK, "%s", err.msg);
	for (int i = 0; i < n * d; i++)
		y[i] += 0.05f * test_rand_f(&s);
	for (int e = 0; e < S; e++) {
		memcpy(prior + (size_t)e * d * f, b->down[e], (size_t)d * f * sizeof *prior);
		m0[e] = prior + (size_t)e * d * f;
	}
	const double rel = 1e-2;
	joint_solution(b, x, n, y, rel, m0, sol);
	rft_options o = {.lambda = rel, .sweeps = 4000};
	CHECK(rft_down(&b->cfg, b->down, x, n, y, &o, &err) == MS_OK, "%s", err.msg);
	double maxdiff = 0.0, maxabs = 0.0;
	for (int e = 0; e < S; e++)
		for (int i = 0; i < d * f; i++) {
			maxdiff = fmax(maxdiff, fabs(b->down[e][i] - sol[(size_t)e * d * f + i]));
			maxabs = fmax(maxabs, fabs(sol[(size_t)e * d * f + i]));
		}
	CHECK(maxdiff <= 1e-4 * maxabs, "%s: Gauss-Seidel vs LAPACK joint least squares: max difference %.3g "
	      "(max %.3g)", what, maxdiff, maxabs);
	printf("     %s: max difference %.3g of max %.3g\n", what, maxdiff, maxabs);
	tblock_free(&tgt);
out:
	free(y);
	free(prior);
	free(sol);
	free(m0);
}

/* Three slots, f = 40, 90 tokens top-2: about 60 tokens each, all in token space. */
static void test_token_space_matches_joint(void)
{
	enum { S = 3, D = 7, F = 40, N = 90 };
	tblock b;
	static float x[N * D];
	CHECK(tblock_make(&b, S, D, F, 2, NULL, 31) == 0);
	make_tokens(x, N, D, 32);
	int ns[S];
	slot_counts(&b, x, N, ns);
	for (int s = 0; s < S; s++)
		CHECK(ns[s] > 0 && ns[s] <= 2 * F, "slot %d: %d tokens, not in token space", s, ns[s]);
	check_against_joint(&b, x, N, 33, "token space");
	tblock_free(&b);
}

/* Top-1 with slot 0 favoured: it takes more than 4.45 f tokens (feature space, double), slots 1 and 2 at most 2 f
 * (token space, float); the coupled solution must still be the joint one. */
static void test_mixed_spaces_match_joint(void)
{
	enum { S = 3, D = 6, F = 32, N = 260 };
	const float bias[S] = {1.5f, 0.0f, 0.0f};
	tblock b;
	static float x[N * D];
	CHECK(tblock_make(&b, S, D, F, 1, bias, 41) == 0);
	make_tokens(x, N, D, 42);
	int ns[S];
	slot_counts(&b, x, N, ns);
	CHECK(ns[0] * 100 > 445 * F, "slot 0: %d tokens, not in feature space", ns[0]);
	printf("     tokens per slot: %d %d %d\n", ns[0], ns[1], ns[2]);
	for (int s = 1; s < S; s++)
		CHECK(ns[s] > 0 && ns[s] <= 2 * F, "slot %d: %d tokens, not in token space", s, ns[s]);
	check_against_joint(&b, x, N, 43, "mixed");
	tblock_free(&b);
}

/* Token-space slots, several strips (d > 2 RFT_STRIP) and tokens beyond a batch: 1, 2, 3 threads give the same
 * bytes. */
static void test_token_space_threads_agree(void)
{
	enum { S = 4, D = 2 * RFT_STRIP + 37, F = 80, N = 260 };
	tblock b;
	float *x = malloc((size_t)N * D * sizeof *x), *y = malloc((size_t)N * D * sizeof *y);
	float *ref = malloc((size_t)S * D * F * sizeof *ref), *w0 = malloc((size_t)S * 3 * F * D * sizeof *w0);
	CHECK(x && y && ref && w0 && tblock_make(&b, S, D, F, 2, NULL, 51) == 0);
	if (!x || !y || !ref || !w0)
		goto out;
	make_tokens(x, N, D, 52);
	unsigned long long s = 53;
	ref_fill(y, (size_t)N * D, 1.0f, &s);
	int ns[S];
	slot_counts(&b, x, N, ns);
	for (int e = 0; e < S; e++)
		CHECK(ns[e] > 0 && ns[e] <= 2 * F, "slot %d: %d tokens, not in token space", e, ns[e]);
	memcpy(w0, b.w, (size_t)S * 3 * F * D * sizeof *w0);
	for (int threads = 1; threads <= 3; threads++) {
		par_set_threads(threads);
		memcpy(b.w, w0, (size_t)S * 3 * F * D * sizeof *w0);
		rft_options o = rft_defaults();
		ms_error err = {0};
		CHECK(rft_down(&b.cfg, b.down, x, N, y, &o, &err) == MS_OK, "%s", err.msg);
		for (int e = 0; e < S; e++) {
			if (threads == 1)
				memcpy(ref + (size_t)e * D * F, b.down[e], (size_t)D * F * sizeof(float));
			else
				CHECK(memcmp(ref + (size_t)e * D * F, b.down[e], (size_t)D * F * sizeof(float)) == 0,
				      "%d threads: slot %d differs", threads, e);
		}
	}
	CHECK(memcmp(ref, w0 + 2 * F * D, (size_t)D * F * sizeof(float)) != 0, "the refit changed nothing");
	tblock_free(&b);
out:
	free(x);
	free(y);
	free(ref);
	free(w0);
}

int main(void)
{
	RUN(test_token_space_matches_joint);
	RUN(test_mixed_spaces_match_joint);
	RUN(test_token_space_threads_agree);
	par_shutdown();
	return test_summary();
}
