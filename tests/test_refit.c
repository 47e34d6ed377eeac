/* The down-projection refit (analysis/refit.h): a planted block whose inflation is known by construction, the
 * per-expert Gauss-Seidel solution against the joint least squares solution LAPACK computes from the stacked
 * system (LAPACKE_dgels, an independent factorisation), and bit-identical results on 1, 2 and 3 threads. */
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/par.h"
#include "analysis/refit.h"
#include "tests/refit_fixture.h"
#include "tests/test.h"

enum { D = 6, F = 5, N = 300, S = 3 };

typedef struct {
	float w[S][3 * F * D];
	expert_weights ex[S];
	float router[S * D];
	int slot[S];
	blk_config cfg;
} test_block;

static void make_block(test_block *b, int top_k, int renormalize, unsigned long long seed)
{
	unsigned long long s = seed;
	for (int e = 0; e < S; e++) {
		ref_fill(b->w[e], 3 * F * D, 0.5f, &s);
		b->ex[e] = (expert_weights){.gate = b->w[e], .up = b->w[e] + F * D, .down = b->w[e] + 2 * F * D, .d = D,
					    .f = F, .act = MDL_ACT_SILU_GLU};
		b->slot[e] = e;
	}
	ref_fill(b->router, S * D, 1.0f, &s);
	b->cfg = (blk_config){.n_router = S, .router = b->router, .slot = b->slot, .n_slots = S, .experts = b->ex,
			      .routing = {.top_k = top_k, .renormalize = renormalize, .scale = 1.0f}, .d = D};
}

/* x [N, D], the last coordinate 1 (a constant feature, so a router row can add a constant to a logit). */
static void make_tokens(float *x, unsigned long long seed)
{
	unsigned long long s = seed;
	for (int t = 0; t < N; t++)
		for (int c = 0; c < D; c++)
			x[t * D + c] = c == D - 1 ? 1.0f : test_rand_f(&s);
}

/* Experts A, A' (copies, equal router rows, always ranked first and second) and B, OLMoE-style routing (top-2 of
 * softmax over all three, not renormalised). The original output is 2 p_A A(x); merging A and A' into one slot
 * whose row adds log 2 to their logit (the exact logsumexp) gives 2 p_A A(x) + p_B B(x): the inflation p_B B(x)
 * is known by construction. The refit must find down_A unchanged and down_B = 0. */
static void test_planted_inflation_is_removed(void)
{
	static test_block orig;
	make_block(&orig, 2, 0, 7);
	memcpy(orig.w[1], orig.w[0], sizeof orig.w[0]);
	for (int c = 0; c < D; c++)
		orig.router[D + c] = orig.router[c];
	for (int c = 0; c < D; c++)                               /* B's logit is A's minus 1: A, A' lead */
		orig.router[2 * D + c] = orig.router[c];
	orig.router[D - 1] = orig.router[D + D - 1] = 1.0f;
	orig.router[2 * D + D - 1] = 0.0f;
	static float x[N * D], y[N * D];
	make_tokens(x, 11);
	ms_error err = {0};
	CHECK(blk_forward(&orig.cfg, x, N, y, NULL, NULL, &err) == MS_OK, "%s", err.msg);

	/* merged: slot 0 = A (row + log 2 on the constant feature), slot 1 = B */
	static float wm[2][3 * F * D], rm[2 * D];
	memcpy(wm[0], orig.w[0], sizeof wm[0]);
	memcpy(wm[1], orig.w[2], sizeof wm[1]);
	memcpy(rm, orig.router, D * sizeof(float));
	memcpy(rm + D, orig.router + 2 * D, D * sizeof(float));
	rm[D - 1] += (float)log(2.0);
	expert_weights me[2];
	for (int s = 0; s < 2; s++)
		me[s] = (expert_weights){.gate = wm[s], .up = wm[s] + F * D, .down = wm[s] + 2 * F * D, .d = D, .f = F,
					 .act = MDL_ACT_SILU_GLU};
	int slot[2] = {0, 1};
	blk_config mc = {.n_router = 2, .router = rm, .slot = slot, .n_slots = 2, .experts = me,
			 .routing = orig.cfg.routing, .d = D};

	/* the inflation, computed by hand: |p_B B(x)| / |2 p_A A(x)| */
	double num = 0.0, den = 0.0, h[F];
	for (int t = 0; t < N; t++) {
		const float *xt = x + t * D;
		double z[3];
		for (int e = 0; e < 3; e++) {
			z[e] = 0.0;
			for (int c = 0; c < D; c++)
				z[e] += (double)orig.router[e * D + c] * xt[c];
		}
		const double sum = exp(z[0]) + exp(z[1]) + exp(z[2]), pa = exp(z[0]) / sum, pb = exp(z[2]) / sum;
		double ya[D] = {0}, yb[D] = {0};
		ref_hidden(&orig.ex[0], xt, h);
		for (int c = 0; c < D; c++)
			for (int i = 0; i < F; i++)
				ya[c] += (double)orig.ex[0].down[c * F + i] * h[i];
		ref_hidden(&orig.ex[2], xt, h);
		for (int c = 0; c < D; c++)
			for (int i = 0; i < F; i++)
				yb[c] += (double)orig.ex[2].down[c * F + i] * h[i];
		for (int c = 0; c < D; c++) {
			num += pb * yb[c] * pb * yb[c];
			den += 4.0 * pa * ya[c] * pa * ya[c];
		}
	}
	const double inflation = sqrt(num / den);
	double before, after;
	CHECK(rft_routed_error(&mc, x, N, y, &before, &err) == MS_OK, "%s", err.msg);
	CHECK(fabs(before - inflation) <= 1e-4 * inflation, "error before the refit %.9g, inflation %.9g", before,
	      inflation);
	CHECK(inflation > 0.01, "the planted inflation %.3g is too small to show anything", inflation);

	float *down[2] = {(float *)me[0].down, (float *)me[1].down};
	rft_options o = {.lambda = 1e-9, .sweeps = 100};
	CHECK(rft_down(&mc, down, x, N, y, &o, &err) == MS_OK, "%s", err.msg);
	CHECK(rft_routed_error(&mc, x, N, y, &after, &err) == MS_OK, "%s", err.msg);
	CHECK(after <= 1e-3 * before, "after the refit %.3g, before %.3g", after, before);
	double db = 0.0, da = 0.0, na = 0.0;
	for (int i = 0; i < D * F; i++) {
		db = fmax(db, fabs(me[1].down[i]));
		da = fmax(da, fabs(me[0].down[i] - orig.ex[0].down[i]));
		na = fmax(na, fabs(orig.ex[0].down[i]));
	}
	CHECK(db <= 1e-3 * na, "down_B should vanish: max %.3g", db);
	CHECK(da <= 1e-3 * na, "down_A should be unchanged: max change %.3g", da);
}

/* The joint problem for output dimension i, stacked: rows t (sum_s a_s(t) . w_s = y_i(t)) and, per slot, the
 * ridge rows sqrt(lambda_s) w_s = sqrt(lambda_s) m_s; solved by LAPACKE_dgels (QR) for every i at once. The
 * lambda_s are the refit's: rel x trace(A_s^T A_s) / F. */
static void joint_solution(const test_block *b, const float *x, const float *y, double rel, float *m0[S],
			   double *sol /* [S, D, F] */, double *lambda /* [S] */)
{
	const int k = b->cfg.routing.top_k, rows = N + S * F, cols = S * F;
	int *sel = malloc((size_t)N * k * sizeof *sel);
	float *w = malloc((size_t)N * k * sizeof *w);
	double *a = calloc((size_t)rows * cols, sizeof *a), *rhs = calloc((size_t)rows * D, sizeof *rhs);
	double trace[S] = {0}, h[F];
	CHECK(blk_route(&b->cfg, x, N, sel, w, NULL) == MS_OK);
	for (int t = 0; t < N; t++)
		for (int j = 0; j < k; j++) {
			const int s = b->slot[sel[t * k + j]];
			ref_hidden(&b->ex[s], x + t * D, h);
			for (int i = 0; i < F; i++) {
				a[(size_t)t * cols + s * F + i] += (double)w[t * k + j] * h[i];
				trace[s] += ((double)w[t * k + j] * h[i]) * ((double)w[t * k + j] * h[i]);
			}
		}
	for (int t = 0; t < N; t++)
		for (int c = 0; c < D; c++)
			rhs[(size_t)t * D + c] = y[t * D + c];
	for (int s = 0; s < S; s++) {
		lambda[s] = trace[s] > 0 ? rel * trace[s] / F : 1.0;
		const double sq = sqrt(lambda[s]);
		for (int i = 0; i < F; i++) {
			a[(size_t)(N + s * F + i) * cols + s * F + i] = sq;
			for (int c = 0; c < D; c++)
				rhs[(size_t)(N + s * F + i) * D + c] = sq * m0[s][c * F + i];
		}
	}
	CHECK(LAPACKE_dgels(LAPACK_ROW_MAJOR, 'N', rows, cols, D, a, cols, rhs, D) == 0);
	for (int s = 0; s < S; s++)
		for (int c = 0; c < D; c++)
			for (int i = 0; i < F; i++)
				sol[((size_t)s * D + c) * F + i] = rhs[(size_t)(s * F + i) * D + c];
	free(sel);
	free(w);
	free(a);
	free(rhs);
}

/* Sum of squared residuals of the routed output plus the ridge terms: what the refit minimises. */
static double objective(const test_block *b, const float *x, const float *y, float (*prior)[D * F],
			const double *lambda)
{
	static float out[N * D];
	CHECK(blk_forward(&b->cfg, x, N, out, NULL, NULL, NULL) == MS_OK);
	double sum = 0.0;
	for (int i = 0; i < N * D; i++)
		sum += ((double)y[i] - out[i]) * ((double)y[i] - out[i]);
	for (int e = 0; e < S; e++)
		for (int i = 0; i < D * F; i++)
			sum += lambda[e] * ((double)b->ex[e].down[i] - prior[e][i]) * ((double)b->ex[e].down[i] - prior[e][i]);
	return sum;
}

/* Gauss-Seidel over the slots converges to the joint minimiser LAPACK finds; the objective never rises from one sweep count to the next. */
static void test_matches_joint_least_squares(void)
{
	static test_block b, target;
	static float x[N * D], y[N * D], prior[S][D * F];
	make_block(&target, 2, 0, 21);
	make_block(&b, 2, 0, 21);
	make_tokens(x, 5);
	ms_error err = {0};
	CHECK(blk_forward(&target.cfg, x, N, y, NULL, NULL, &err) == MS_OK, "%s", err.msg);
	unsigned long long s = 99;
	for (int e = 0; e < S; e++) {      /* the block to refit: the same gates and ups, other downs, plus noise in y */
		ref_fill((float *)b.ex[e].down, D * F, 0.5f, &s);
		memcpy(prior[e], b.ex[e].down, sizeof prior[e]);
	}
	for (int i = 0; i < N * D; i++)
		y[i] += 0.05f * test_rand_f(&s);
	const double rel = 1e-2;
	float *m0[S] = {prior[0], prior[1], prior[2]};
	static double sol[S * D * F];
	double lambda[S];
	joint_solution(&b, x, y, rel, m0, sol, lambda);

	float *down[S] = {(float *)b.ex[0].down, (float *)b.ex[1].down, (float *)b.ex[2].down};
	double last = objective(&b, x, y, prior, lambda);
	for (int sweeps = 1; sweeps <= 4; sweeps++) {   /* error after 1, 2, 3, 4 sweeps from the prior */
		for (int e = 0; e < S; e++)
			memcpy(down[e], prior[e], sizeof prior[e]);
		rft_options o = {.lambda = rel, .sweeps = sweeps};
		CHECK(rft_down(&b.cfg, down, x, N, y, &o, &err) == MS_OK, "%s", err.msg);
		const double obj = objective(&b, x, y, prior, lambda);
		CHECK(obj <= last * (1 + 1e-6), "%d sweeps: objective %.9g after %.9g", sweeps, obj, last);
		last = obj;
	}
	for (int e = 0; e < S; e++)
		memcpy(down[e], prior[e], sizeof prior[e]);
	rft_options o = {.lambda = rel, .sweeps = 300};
	CHECK(rft_down(&b.cfg, down, x, N, y, &o, &err) == MS_OK, "%s", err.msg);
	double maxdiff = 0.0, maxabs = 0.0;
	for (int e = 0; e < S; e++)
		for (int i = 0; i < D * F; i++) {
			maxdiff = fmax(maxdiff, fabs(down[e][i] - sol[(size_t)e * D * F + i]));
			maxabs = fmax(maxabs, fabs(sol[(size_t)e * D * F + i]));
		}
	/* float storage of the result: 1e-5 relative to the largest entry */
	CHECK(maxdiff <= 1e-5 * maxabs, "Gauss-Seidel vs LAPACK joint least squares: max difference %.3g (max %.3g)",
	      maxdiff, maxabs);
}

/* One slot alone: one sweep is the exact solve; compared with dgels on that slot's stacked system. */
static void test_single_slot_is_exact(void)
{
	static test_block b;
	static float x[N * D], y[N * D];
	make_block(&b, 1, 0, 3);
	b.cfg.n_slots = 1;
	b.cfg.n_router = 1;
	make_tokens(x, 8);
	unsigned long long s = 4;
	ref_fill(y, N * D, 1.0f, &s);
	static float prior[D * F];
	memcpy(prior, b.ex[0].down, sizeof prior);
	/* dgels on [A; sqrt(l) I] w = [y; sqrt(l) m] with A rows g(t) h(t) */
	const int rows = N + F;
	static double a[(N + F) * F], rhs[(N + F) * D];
	double h[F], trace = 0.0;
	memset(a, 0, sizeof a);
	for (int t = 0; t < N; t++) {
		ref_hidden(&b.ex[0], x + t * D, h);
		for (int i = 0; i < F; i++) {
			a[t * F + i] = h[i];      /* one row, softmax over one: weight 1 */
			trace += h[i] * h[i];
		}
		for (int c = 0; c < D; c++)
			rhs[t * D + c] = y[t * D + c];
	}
	const double lam = 0.1 * trace / F, sq = sqrt(lam);
	for (int i = 0; i < F; i++) {
		a[(N + i) * F + i] = sq;
		for (int c = 0; c < D; c++)
			rhs[(N + i) * D + c] = sq * prior[c * F + i];
	}
	CHECK(LAPACKE_dgels(LAPACK_ROW_MAJOR, 'N', rows, F, D, a, F, rhs, D) == 0);
	float *down[1] = {(float *)b.ex[0].down};
	rft_options o = {.lambda = 0.1, .sweeps = 1};
	ms_error err = {0};
	CHECK(rft_down(&b.cfg, down, x, N, y, &o, &err) == MS_OK, "%s", err.msg);
	double maxdiff = 0.0, maxabs = 0.0;
	for (int c = 0; c < D; c++)
		for (int i = 0; i < F; i++) {
			maxdiff = fmax(maxdiff, fabs(down[0][c * F + i] - rhs[i * D + c]));
			maxabs = fmax(maxabs, fabs(rhs[i * D + c]));
		}
	CHECK(maxdiff <= 1e-5 * maxabs, "normal equations vs QR: max difference %.3g (max %.3g)", maxdiff, maxabs);
}

/* Slots beyond the strip width and tokens beyond a batch, so that several tasks run; 1, 2, 3 threads agree. */
static void test_threads_agree(void)
{
	enum { TD = 70, TF = 24, TS = 4, TN = 1100 };
	float *w = malloc((size_t)TS * 3 * TF * TD * sizeof *w), *x = malloc((size_t)TN * TD * sizeof *x);
	float *y = malloc((size_t)TN * TD * sizeof *y), *ref = malloc((size_t)TS * TF * TD * sizeof *ref);
	float *router = malloc((size_t)TS * TD * sizeof *router);
	CHECK(w && x && y && ref && router);
	if (!w || !x || !y || !ref || !router)
		goto out;
	unsigned long long s = 17;
	ref_fill(x, TN * TD, 1.0f, &s);
	ref_fill(y, TN * TD, 1.0f, &s);
	ref_fill(router, TS * TD, 1.0f, &s);
	expert_weights ex[TS];
	int slot[TS];
	float *down[TS];
	for (int e = 0; e < TS; e++) {
		float *base = w + (size_t)e * 3 * TF * TD;
		ex[e] = (expert_weights){.gate = base, .up = base + TF * TD, .down = base + 2 * TF * TD, .d = TD, .f = TF,
					 .act = MDL_ACT_SILU_GLU};
		slot[e] = e;
		down[e] = base + 2 * TF * TD;
	}
	blk_config c = {.n_router = TS, .router = router, .slot = slot, .n_slots = TS, .experts = ex,
			.routing = {.top_k = 2, .renormalize = 1, .scale = 1.0f}, .d = TD};
	unsigned long long s0 = s;
	for (int threads = 1; threads <= 3; threads++) {
		par_set_threads(threads);
		s = s0;
		ref_fill(w, TS * 3 * TF * TD, 0.3f, &s);
		rft_options o = rft_defaults();
		ms_error err = {0};
		CHECK(rft_down(&c, down, x, TN, y, &o, &err) == MS_OK, "%s", err.msg);
		for (int e = 0; e < TS; e++) {
			if (threads == 1)
				memcpy(ref + (size_t)e * TF * TD, down[e], (size_t)TF * TD * sizeof(float));
			else
				CHECK(memcmp(ref + (size_t)e * TF * TD, down[e], (size_t)TF * TD * sizeof(float)) == 0,
				      "%d threads: slot %d differs", threads, e);
		}
	}
out:
	free(w);
	free(x);
	free(y);
	free(ref);
	free(router);
}

static void test_bad_arguments(void)
{
	static test_block b;
	static float x[N * D], y[N * D];
	make_block(&b, 2, 1, 1);
	float *down[S] = {(float *)b.ex[0].down, (float *)b.ex[1].down, (float *)b.ex[2].down};
	rft_options o = rft_defaults();
	ms_error err = {0};
	EXPECT(rft_down(&b.cfg, down, x, 0, y, &o, &err) == MS_ERR_ARG);
	o.sweeps = 0;
	EXPECT(rft_down(&b.cfg, down, x, N, y, &o, &err) == MS_ERR_ARG);
	o = rft_defaults();
	down[1] = down[0];
	EXPECT(rft_down(&b.cfg, down, x, N, y, &o, &err) == MS_ERR_ARG);
}

int main(void)
{
	RUN(test_planted_inflation_is_removed);
	RUN(test_matches_joint_least_squares);
	RUN(test_single_slot_is_exact);
	RUN(test_threads_agree);
	RUN(test_bad_arguments);
	par_shutdown();
	return test_summary();
}
