#include "analysis/refit.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/par.h"

rft_options rft_defaults(void)
{
	rft_options o = {.lambda = RFT_LAMBDA_DEFAULT, .sweeps = RFT_SWEEPS_DEFAULT};
	return o;
}

/* malloc of n elements, NULL when n is negative or overflows; never malloc(0). */
static void *alloc_n(int64_t n, size_t size)
{
	if (n < 0 || (uint64_t)n > SIZE_MAX / size)
		return NULL;
	return malloc(n > 0 ? (size_t)n * size : 1);
}

/* One refit: the routing of the fit tokens grouped by slot, and per slot its features and factor. */
typedef struct {
	const blk_config *cfg;
	float *const *down;
	const float *x;          /* [n, d] */
	const float *target;     /* [n, d] */
	int64_t n;
	int d, f, sweeps;
	double lambda_rel;
	blk_dispatch dp;
	double **a;              /* [n_slots]: A_s [n_s, f], rows g_s(t) h_s(t) */
	double **chol;           /* [n_slots]: Cholesky factor (lower) of A_s^T A_s + lambda_s I [f, f] */
	double *lambda;          /* [n_slots] */
} refit_job;

static void job_free(refit_job *j)
{
	for (int s = 0; j->a && s < j->cfg->n_slots; s++) {
		free(j->a[s]);
		free(j->chol[s]);
	}
	free(j->a);
	free(j->chol);
	free(j->lambda);
	blk_dispatch_free(&j->dp);
}

/* A_s in batches of BLK_BATCH tokens: h from the slot's gate and up, each row scaled by its routing weight. */
static ms_status slot_features(const refit_job *j, int s, int64_t ns, double *a)
{
	const expert_weights *w = &j->cfg->experts[s];
	const int64_t d = j->d, f = j->f, b0 = j->dp.start[s];
	const int64_t cap = ns < BLK_BATCH ? ns : BLK_BATCH;
	float *xs = alloc_n(cap * d, sizeof(float));      /* [cap, d] */
	float *h = alloc_n(cap * f, sizeof(float));       /* [cap, f] */
	float *work = alloc_n(expert_work_floats(w, cap), sizeof(float));
	ms_status st = xs && h && work ? MS_OK : MS_ERR_NOMEM;
	for (int64_t i0 = 0; st == MS_OK && i0 < ns; i0 += BLK_BATCH) {
		const int64_t m = ns - i0 < BLK_BATCH ? ns - i0 : BLK_BATCH;
		blk_gather(j->x, d, j->dp.token + b0 + i0, m, xs);
		st = expert_hidden(w, xs, m, h, work);
		for (int64_t r = 0; st == MS_OK && r < m; r++) {
			const double g = j->dp.weight[b0 + i0 + r];
			for (int64_t c = 0; c < f; c++)
				a[(i0 + r) * f + c] = g * h[r * f + c];
		}
	}
	free(xs);
	free(h);
	free(work);
	return st;
}

/* Task: slot s's features, its ridge and the Cholesky factor of its normal matrix. */
static ms_status factor_task(void *ctx, int64_t task, ms_error *err)
{
	refit_job *j = ctx;
	const int s = (int)task, f = j->f;
	const int64_t ns = j->dp.start[s + 1] - j->dp.start[s];
	j->a[s] = alloc_n(ns * f, sizeof(double));
	j->chol[s] = alloc_n((int64_t)f * f, sizeof(double));
	if (!j->a[s] || !j->chol[s])
		return ms_fail(err, MS_ERR_NOMEM, "refit: out of memory for slot %d (%lld tokens)", s, (long long)ns);
	ms_status st = slot_features(j, s, ns, j->a[s]);
	if (st != MS_OK)
		return ms_fail(err, st, "refit: slot %d: hidden activations failed", s);
	double *g = j->chol[s];
	memset(g, 0, (size_t)f * f * sizeof *g);
	if (ns > 0)
		cblas_dsyrk(CblasRowMajor, CblasLower, CblasTrans, f, (int)ns, 1.0, j->a[s], f, 0.0, g, f);
	double trace = 0.0;
	for (int c = 0; c < f; c++)
		trace += g[(size_t)c * f + c];
	j->lambda[s] = trace > 0.0 ? j->lambda_rel * trace / f : 1.0;
	for (int c = 0; c < f; c++)
		g[(size_t)c * f + c] += j->lambda[s];
	if (LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', f, g, f) != 0)
		return ms_fail(err, MS_ERR_NUMERIC, "refit: slot %d: the normal matrix is not positive definite", s);
	return MS_OK;
}

/* Work of one strip of output dimensions [i0, i0 + w). */
typedef struct {
	double *p;     /* [n, w] the merged block's current routed output */
	double *c;     /* [routes, w] each route's current contribution (dispatch order) */
	double *wt;    /* [n_slots, f, w] each slot's current rows, transposed */
	double *r;     /* [max n_s, w] */
	double *rhs;   /* [f, w] */
} strip_work;

/* Slot s's contribution on its tokens, c_s = A_s W_s^T, into c (its routes' rows). */
static void slot_contribution(const refit_job *j, int s, const double *wt, int w, double *c)
{
	const int64_t ns = j->dp.start[s + 1] - j->dp.start[s];
	if (ns > 0)
		cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)ns, w, j->f, 1.0, j->a[s], j->f, wt, w, 0.0,
			    c + j->dp.start[s] * w, w);
}

/* One Gauss-Seidel step for slot s on the strip: solve for its rows with the others held, update p and c. */
static ms_status slot_step(const refit_job *j, int s, int64_t i0, int w, strip_work *sw)
{
	const int64_t b0 = j->dp.start[s], ns = j->dp.start[s + 1] - b0, f = j->f, d = j->d;
	double *wt = sw->wt + (size_t)s * f * w;
	const float *m = j->down[s];
	/* rhs = lambda M^T (rows i0.. of M, transposed) + A^T (y - p + c_s) */
	for (int64_t c = 0; c < f; c++)
		for (int k = 0; k < w; k++)
			sw->rhs[c * w + k] = j->lambda[s] * (double)m[(i0 + k) * f + c];
	for (int64_t r = 0; r < ns; r++) {
		const int64_t t = j->dp.token[b0 + r];
		for (int k = 0; k < w; k++)
			sw->r[r * w + k] = (double)j->target[t * d + i0 + k] - sw->p[t * w + k] + sw->c[(b0 + r) * w + k];
	}
	if (ns > 0)
		cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)f, w, (int)ns, 1.0, j->a[s], (int)f, sw->r, w,
			    1.0, sw->rhs, w);
	if (LAPACKE_dpotrs(LAPACK_ROW_MAJOR, 'L', (int)f, w, j->chol[s], (int)f, sw->rhs, w) != 0)
		return MS_ERR_NUMERIC;
	memcpy(wt, sw->rhs, (size_t)f * w * sizeof *wt);
	/* p += new contribution - old, token by token */
	for (int64_t r = 0; r < ns; r++)
		for (int k = 0; k < w; k++)
			sw->p[j->dp.token[b0 + r] * w + k] -= sw->c[(b0 + r) * w + k];
	slot_contribution(j, s, wt, w, sw->c);
	for (int64_t r = 0; r < ns; r++)
		for (int k = 0; k < w; k++)
			sw->p[j->dp.token[b0 + r] * w + k] += sw->c[(b0 + r) * w + k];
	return MS_OK;
}

static void strip_free(strip_work *sw)
{
	free(sw->p);
	free(sw->c);
	free(sw->wt);
	free(sw->r);
	free(sw->rhs);
}

/* Task: every sweep over every slot for output dimensions [task RFT_STRIP, ...), then the rows written back. */
static ms_status strip_task(void *ctx, int64_t task, ms_error *err)
{
	const refit_job *j = ctx;
	const int S = j->cfg->n_slots;
	const int64_t i0 = task * RFT_STRIP, f = j->f, routes = j->dp.start[S];
	const int w = (int)(j->d - i0 < RFT_STRIP ? j->d - i0 : RFT_STRIP);
	int64_t max_ns = 0;
	for (int s = 0; s < S; s++)
		if (j->dp.start[s + 1] - j->dp.start[s] > max_ns)
			max_ns = j->dp.start[s + 1] - j->dp.start[s];
	strip_work sw = {
		.p = calloc((size_t)j->n * w + 1, sizeof(double)), .c = alloc_n(routes * w, sizeof(double)),
		.wt = alloc_n((int64_t)S * f * w, sizeof(double)), .r = alloc_n(max_ns * w, sizeof(double)),
		.rhs = alloc_n(f * w, sizeof(double)),
	};
	ms_status st = sw.p && sw.c && sw.wt && sw.r && sw.rhs ? MS_OK : MS_ERR_NOMEM;
	for (int s = 0; st == MS_OK && s < S; s++) {   /* start from the merge: p = sum of the slots' outputs */
		double *wt = sw.wt + (size_t)s * f * w;
		for (int64_t c = 0; c < f; c++)
			for (int k = 0; k < w; k++)
				wt[c * w + k] = (double)j->down[s][(i0 + k) * f + c];
		slot_contribution(j, s, wt, w, sw.c);
		for (int64_t r = j->dp.start[s]; r < j->dp.start[s + 1]; r++)
			for (int k = 0; k < w; k++)
				sw.p[j->dp.token[r] * w + k] += sw.c[r * w + k];
	}
	for (int sweep = 0; st == MS_OK && sweep < j->sweeps; sweep++)
		for (int s = 0; st == MS_OK && s < S; s++)
			st = slot_step(j, s, i0, w, &sw);
	for (int s = 0; st == MS_OK && s < S; s++) {
		const double *wt = sw.wt + (size_t)s * f * w;
		for (int k = 0; k < w; k++)
			for (int64_t c = 0; c < f; c++)
				j->down[s][(i0 + k) * f + c] = (float)wt[c * w + k];
	}
	strip_free(&sw);
	return st == MS_OK ? MS_OK : ms_fail(err, st, "refit: output rows %lld..%lld: %s", (long long)i0,
					     (long long)(i0 + w - 1), ms_status_text(st));
}

static ms_status check_args(const blk_config *cfg, float *const *down, const float *x, int64_t n,
			    const float *target, const rft_options *o, ms_error *err)
{
	ms_status st = blk_check(cfg, err);
	if (st != MS_OK)
		return st;
	if (!down || !x || !target || !o || n < 1 || o->sweeps < 1 || !(o->lambda > 0.0))
		return ms_fail(err, MS_ERR_ARG, "refit: needs tokens, targets, down matrices, sweeps >= 1 and a "
			       "positive ridge (%lld tokens)", (long long)n);
	for (int s = 0; s < cfg->n_slots; s++) {
		if (cfg->experts[s].down != down[s] || cfg->experts[s].f != cfg->experts[0].f)
			return ms_fail(err, MS_ERR_ARG, "refit: slot %d: its down matrix is not the one given, or its "
				       "intermediate size differs", s);
		for (int r = 0; r < s; r++)
			if (down[r] == down[s])
				return ms_fail(err, MS_ERR_ARG, "refit: slots %d and %d share storage", r, s);
	}
	return MS_OK;
}

/* The target less the held down biases, y(t) - sum_{s in S(t)} g_s(t) b_s, for slots with a down bias (the
 * refit fits the matrices only; the bias stays the merge's). Summed in dispatch order. NULL when no slot has one. */
static float *bias_free_target(const refit_job *j, int *failed)
{
	int any = 0;
	*failed = 0;
	for (int s = 0; s < j->cfg->n_slots; s++)
		any |= j->cfg->experts[s].down_bias != NULL;
	if (!any)
		return NULL;
	const int64_t d = j->d;
	float *t = alloc_n(j->n * d, sizeof(float));
	if (!t) {
		*failed = 1;
		return NULL;
	}
	memcpy(t, j->target, (size_t)(j->n * d) * sizeof *t);
	for (int s = 0; s < j->cfg->n_slots; s++) {
		const float *bias = j->cfg->experts[s].down_bias;
		for (int64_t r = j->dp.start[s]; bias && r < j->dp.start[s + 1]; r++) {
			float *row = t + (int64_t)j->dp.token[r] * d;
			const float g = (float)j->dp.weight[r];
			for (int64_t i = 0; i < d; i++)
				row[i] -= g * bias[i];
		}
	}
	return t;
}

ms_status rft_down(const blk_config *cfg, float *const *down, const float *x, int64_t n, const float *target,
		   const rft_options *o, ms_error *err)
{
	ms_status st = check_args(cfg, down, x, n, target, o, err);
	if (st != MS_OK)
		return st;
	blk_config routed = *cfg;
	routed.shared = NULL;
	routed.shared_gate = NULL;
	const int k = blk_top_k(&routed), S = cfg->n_slots;
	refit_job j = {.cfg = &routed, .down = down, .x = x, .target = target, .n = n, .d = cfg->d,
		       .f = cfg->experts[0].f, .sweeps = o->sweeps, .lambda_rel = o->lambda};
	int *sel = alloc_n(n * k, sizeof(int));        /* [n, k] */
	float *w = alloc_n(n * k, sizeof(float));      /* [n, k] */
	j.a = calloc((size_t)S, sizeof *j.a);
	j.chol = calloc((size_t)S, sizeof *j.chol);
	j.lambda = calloc((size_t)S, sizeof *j.lambda);
	if (!sel || !w || !j.a || !j.chol || !j.lambda)
		st = ms_fail(err, MS_ERR_NOMEM, "refit: out of memory for %lld tokens", (long long)n);
	if (st == MS_OK)
		st = blk_route(&routed, x, n, sel, w, err);
	if (st == MS_OK)
		st = blk_dispatch_build(&routed, sel, w, n, k, &j.dp, err);
	free(sel);
	free(w);
	int failed = 0;
	float *held = st == MS_OK ? bias_free_target(&j, &failed) : NULL;
	if (failed)
		st = ms_fail(err, MS_ERR_NOMEM, "refit: out of memory for %lld tokens", (long long)n);
	if (held)
		j.target = held;
	if (st == MS_OK)
		st = par_for(S, factor_task, &j, err);
	if (st == MS_OK)
		st = par_for((cfg->d + RFT_STRIP - 1) / RFT_STRIP, strip_task, &j, err);
	free(held);
	job_free(&j);
	return st;
}

ms_status rft_routed_error(const blk_config *cfg, const float *x, int64_t n, const float *target, double *rel,
			   ms_error *err)
{
	if (!cfg || !x || !target || !rel || n < 1)
		return ms_fail(err, MS_ERR_ARG, "refit error: needs tokens and targets");
	blk_config routed = *cfg;
	routed.shared = NULL;
	routed.shared_gate = NULL;
	float *y = alloc_n(n * cfg->d, sizeof(float));   /* [n, d] */
	if (!y)
		return ms_fail(err, MS_ERR_NOMEM, "refit error: out of memory for %lld tokens", (long long)n);
	ms_status st = blk_forward(&routed, x, n, y, NULL, NULL, err);
	double num = 0.0, den = 0.0;
	for (int64_t i = 0; st == MS_OK && i < n * cfg->d; i++) {
		const double a = target[i], diff = a - (double)y[i];
		num += diff * diff;
		den += a * a;
	}
	free(y);
	if (st == MS_OK)
		*rel = den > 0.0 ? sqrt(num / den) : sqrt(num);
	return st;
}
