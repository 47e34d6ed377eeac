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

/* One refit: the routing of the fit tokens grouped by slot, and per slot its features and inverse. A slot is
 * solved in feature space (double: a, inv) or in token space (float: af, qf), as choose_dual says; a slot without
 * tokens has neither. */
typedef struct {
	const blk_config *cfg;
	float *const *down;
	const float *x;          /* [n, d] */
	const float *target;     /* [n, d] */
	int64_t n;
	int d, f, sweeps;
	double lambda_rel;
	blk_dispatch dp;
	double **a;              /* [n_slots]: A_s [n_s, f], rows g_s(t) h_s(t) (feature space) */
	double **inv;            /* [n_slots]: (A_s^T A_s + lambda_s I)^-1 [f, f], both triangles (feature space) */
	float **af;              /* [n_slots]: A_s [n_s, f] rounded to float (token space) */
	float **qf;              /* [n_slots]: lambda_s (A_s A_s^T + lambda_s I)^-1 [n_s, n_s], both triangles, in
				  * float (token space): symmetric with eigenvalues in (0, 1] */
	unsigned char *dual;     /* [n_slots]: 1 when slot s is solved in token space */
	double *lambda;          /* [n_slots] */
} refit_job;

static void job_free(refit_job *j)
{
	for (int s = 0; j->a && j->inv && j->af && j->qf && s < j->cfg->n_slots; s++) {
		free(j->a[s]);
		free(j->inv[s]);
		free(j->af[s]);
		free(j->qf[s]);
	}
	free(j->a);
	free(j->inv);
	free(j->af);
	free(j->qf);
	free(j->dual);
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

/* Which slots are solved in token space (dual [n_slots]), decided by the problem alone. Per output dimension and
 * sweep, a slot costs 4 n_s f + 2 f^2 double flops in feature space and 2 n_s^2 float flops in token space (float
 * runs at twice the rate), so token space is faster while n_s^2 <= 4 n_s f + 2 f^2 (n_s <= 4.45 f). Its storage,
 * n_s f + n_s^2 floats, is below feature space's n_s f + f^2 doubles while n_s <= 2 f; above, slots are moved to
 * token space in ascending n_s (then index) while the total stays within what feature space for every slot holds,
 * so the refit never holds more than that. */
static void choose_dual(const blk_dispatch *dp, int S, int64_t f, unsigned char *dual)
{
	double budget = 0.0;   /* in floats */
	for (int s = 0; s < S; s++) {
		const int64_t ns = dp->start[s + 1] - dp->start[s];
		budget += ns > 0 ? 2.0 * ((double)ns * f + (double)f * f) : 0.0;
		dual[s] = 0;
	}
	double used = budget;
	for (int done = 0; done < S; done++) {
		int best = -1;   /* the smallest slot not yet considered, lowest index first */
		for (int s = 0; s < S; s++) {
			const int64_t ns = dp->start[s + 1] - dp->start[s];
			if (dual[s] == 0 && (best < 0 || ns < dp->start[best + 1] - dp->start[best]))
				best = s;
		}
		const double ns = (double)(dp->start[best + 1] - dp->start[best]);
		const double after = used - 2.0 * (ns * f + (double)f * f) + ns * f + ns * ns;
		dual[best] = 2;   /* considered */
		if (ns > 0 && ns * ns <= 4.0 * ns * f + 2.0 * (double)f * f && after <= budget) {
			dual[best] = 3;
			used = after;
		}
	}
	for (int s = 0; s < S; s++)
		dual[s] = dual[s] == 3;
}

/* The inverse (both triangles) of the symmetric g [m, m] (its lower triangle) + lambda I, in place. The row-major
 * lower triangle is the column-major upper one, so LAPACK works on it where it lies (LAPACKE's row-major calls
 * would transpose into an m x m copy). */
static int ridge_inverse(double *g, int m, double lambda)
{
	for (int c = 0; c < m; c++)
		g[(size_t)c * m + c] += lambda;
	if (LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'U', m, g, m) != 0 || LAPACKE_dpotri(LAPACK_COL_MAJOR, 'U', m, g, m) != 0)
		return -1;
	for (int r = 0; r < m; r++)   /* the upper triangle from the lower, so that products are plain gemm */
		for (int c = r + 1; c < m; c++)
			g[(size_t)r * m + c] = g[(size_t)c * m + r];
	return 0;
}

/* Task: slot s's features, its ridge and the inverse of its regularised Gram matrix, in double: A^T A + lambda I
 * (f x f) in feature space, A A^T + lambda I (n_s x n_s) in token space, where it is then kept in float, scaled by
 * lambda, beside A in float. The ridge is the same either way: trace(A A^T) = trace(A^T A) = |A|_F^2. */
static ms_status factor_task(void *ctx, int64_t task, ms_error *err)
{
	refit_job *j = ctx;
	const int s = (int)task, f = j->f;
	const int64_t ns = j->dp.start[s + 1] - j->dp.start[s];
	j->lambda[s] = 1.0;
	if (ns == 0)   /* no tokens: the slot keeps its merge */
		return MS_OK;
	const int dual = j->dual[s], m = dual ? (int)ns : f;
	double *a = alloc_n(ns * f, sizeof(double)), *g = alloc_n((int64_t)m * m, sizeof(double));
	if (dual) {
		j->af[s] = alloc_n(ns * f, sizeof(float));
		j->qf[s] = alloc_n(ns * ns, sizeof(float));
	}
	if (!a || !g || (dual && (!j->af[s] || !j->qf[s]))) {
		free(a);
		free(g);
		return ms_fail(err, MS_ERR_NOMEM, "refit: out of memory for slot %d (%lld tokens)", s, (long long)ns);
	}
	ms_status st = slot_features(j, s, ns, a);
	if (st != MS_OK) {
		free(a);
		free(g);
		return ms_fail(err, st, "refit: slot %d: hidden activations failed", s);
	}
	memset(g, 0, (size_t)m * m * sizeof *g);
	cblas_dsyrk(CblasRowMajor, CblasLower, dual ? CblasNoTrans : CblasTrans, m, dual ? f : (int)ns, 1.0, a, f,
		    0.0, g, m);
	double trace = 0.0;
	for (int c = 0; c < m; c++)
		trace += g[(size_t)c * m + c];
	j->lambda[s] = trace > 0.0 ? j->lambda_rel * trace / f : 1.0;
	if (ridge_inverse(g, m, j->lambda[s]) != 0) {
		free(a);
		free(g);
		return ms_fail(err, MS_ERR_NUMERIC, "refit: slot %d: the normal matrix is not positive definite", s);
	}
	if (!dual) {
		j->a[s] = a;
		j->inv[s] = g;
		return MS_OK;
	}
	for (int64_t i = 0; i < ns * f; i++)
		j->af[s][i] = (float)a[i];
	for (int64_t i = 0; i < ns * ns; i++)
		j->qf[s][i] = (float)(j->lambda[s] * g[i]);
	free(a);
	free(g);
	return MS_OK;
}

/* Work of one strip of output dimensions [i0, i0 + w). */
typedef struct {
	double *p;     /* [n, w] the merged block's current routed output */
	double *c;     /* [routes, w] each route's current contribution (dispatch order) */
	double *c0;    /* [routes, w] each route's contribution under the merge, A_s M_s^T (token space) */
	double *u, *v; /* [max(max n_s, f), w] each */
	float *uf, *vf;
	double *wt;    /* [f, w] one slot's rows, transposed */
	float *mf;
} strip_work;

/* wt [f, w] (double) or mf (float) = the prior's rows i0 .. i0 + w - 1 of slot s, transposed. */
static void prior_rows(const refit_job *j, int s, int64_t i0, int w, double *wt, float *mf)
{
	const int64_t f = j->f;
	const float *m = j->down[s];
	for (int64_t c = 0; c < f; c++)
		for (int k = 0; k < w; k++) {
			if (wt)
				wt[c * w + k] = (double)m[(i0 + k) * f + c];
			else
				mf[c * w + k] = m[(i0 + k) * f + c];
		}
}

/* The slot's rows i0 .. i0 + w - 1 written back from wt [f, w] (double) or mf (float). */
static void write_rows(const refit_job *j, int s, int64_t i0, int w, const double *wt, const float *mf)
{
	const int64_t f = j->f;
	for (int k = 0; k < w; k++)
		for (int64_t c = 0; c < f; c++)
			j->down[s][(i0 + k) * f + c] = wt ? (float)wt[c * w + k] : mf[c * w + k];
}

/* p += cn - c on slot s's tokens, then c = cn (cn [n_s, w]). */
static void replace_contribution(const refit_job *j, int s, int w, const double *cn, strip_work *sw)
{
	const int64_t b0 = j->dp.start[s], ns = j->dp.start[s + 1] - b0;
	double *c = sw->c + b0 * w;
	for (int64_t r = 0; r < ns; r++) {
		double *pt = sw->p + (int64_t)j->dp.token[b0 + r] * w;
		for (int k = 0; k < w; k++)
			pt[k] -= c[r * w + k];
	}
	memcpy(c, cn, (size_t)(ns * w) * sizeof *c);
	for (int64_t r = 0; r < ns; r++) {
		double *pt = sw->p + (int64_t)j->dp.token[b0 + r] * w;
		for (int k = 0; k < w; k++)
			pt[k] += c[r * w + k];
	}
}

/* One Gauss-Seidel step for slot s on the strip: its rows solved with the others held, p and c updated; on the
 * last sweep the rows are written back. With R = y - p + c_s the slot's target on its tokens:
 *   feature space: W^T = (A^T A + lambda I)^-1 (A^T R + lambda M^T), c_s = A W^T (double);
 *   token space, the same minimiser (by (A^T A + lambda I)^-1 A^T = A^T (A A^T + lambda I)^-1):
 *     alpha = (A A^T + lambda I)^-1 (R - A M^T),  c_s = A W^T = R - lambda alpha,  W^T = M^T + A^T alpha,
 *   so a sweep needs only the n_s x n_s product lambda alpha = qf (R - c0), in float, and A^T alpha is formed
 *   once, on the last sweep. The float rounding stays small in c_s: lambda (A A^T + lambda I)^-1 has norm <= 1,
 *   so its rounding and the rounding of R - c0 move c_s by about float epsilon times |R - c0|, and the next
 *   sweep corrects them as it corrects any start (R, p and c are double). */
static void slot_step(const refit_job *j, int s, int64_t i0, int w, int last, strip_work *sw)
{
	const int64_t b0 = j->dp.start[s], ns = j->dp.start[s + 1] - b0, f = j->f, d = j->d;
	double *v = sw->v, *u = sw->u;
	const double *c = sw->c + b0 * w, *c0 = sw->c0 + b0 * w;
	for (int64_t r = 0; r < ns; r++) {   /* v = R */
		const int64_t t = j->dp.token[b0 + r];
		const float *y = j->target + t * d + i0;
		const double *pt = sw->p + t * w;
		for (int k = 0; k < w; k++)
			v[r * w + k] = (double)y[k] - pt[k] + c[r * w + k];
	}
	if (j->dual[s]) {
		for (int64_t i = 0; i < ns * w; i++)
			sw->vf[i] = (float)(v[i] - c0[i]);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)ns, w, (int)ns, 1.0f, j->qf[s], (int)ns,
			    sw->vf, w, 0.0f, sw->uf, w);   /* lambda alpha */
		if (last) {
			prior_rows(j, s, i0, w, NULL, sw->mf);
			const float inv_lambda = (float)(1.0 / j->lambda[s]);
			cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)f, w, (int)ns, inv_lambda, j->af[s],
				    (int)f, sw->uf, w, 1.0f, sw->mf, w);
			write_rows(j, s, i0, w, NULL, sw->mf);
		}
		for (int64_t i = 0; i < ns * w; i++)   /* the new contribution R - lambda alpha */
			v[i] -= (double)sw->uf[i];
		replace_contribution(j, s, w, v, sw);
		return;
	}
	prior_rows(j, s, i0, w, u, NULL);   /* u = lambda M^T + A^T R */
	for (int64_t i = 0; i < f * w; i++)
		u[i] *= j->lambda[s];
	cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)f, w, (int)ns, 1.0, j->a[s], (int)f, v, w, 1.0, u,
		    w);
	cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)f, w, (int)f, 1.0, j->inv[s], (int)f, u, w, 0.0,
		    sw->wt, w);
	if (last)
		write_rows(j, s, i0, w, sw->wt, NULL);
	cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)ns, w, (int)f, 1.0, j->a[s], (int)f, sw->wt, w,
		    0.0, v, w);
	replace_contribution(j, s, w, v, sw);
}

static void strip_free(strip_work *sw)
{
	free(sw->p);
	free(sw->c);
	free(sw->c0);
	free(sw->u);
	free(sw->v);
	free(sw->uf);
	free(sw->vf);
	free(sw->wt);
	free(sw->mf);
}

/* Task: every sweep over every slot for output dimensions [task RFT_STRIP, ...), the rows written back on the last.
 * A slot without tokens is skipped: its solution is its merge. */
static ms_status strip_task(void *ctx, int64_t task, ms_error *err)
{
	const refit_job *j = ctx;
	const int S = j->cfg->n_slots;
	const int64_t i0 = task * RFT_STRIP, f = j->f, routes = j->dp.start[S];
	const int w = (int)(j->d - i0 < RFT_STRIP ? j->d - i0 : RFT_STRIP);
	int64_t big = f;
	for (int s = 0; s < S; s++)
		if (j->dp.start[s + 1] - j->dp.start[s] > big)
			big = j->dp.start[s + 1] - j->dp.start[s];
	strip_work sw = {
		.p = calloc((size_t)j->n * w + 1, sizeof(double)), .c = alloc_n(routes * w, sizeof(double)),
		.c0 = alloc_n(routes * w, sizeof(double)), .u = alloc_n(big * w, sizeof(double)),
		.v = alloc_n(big * w, sizeof(double)), .uf = alloc_n(big * w, sizeof(float)),
		.vf = alloc_n(big * w, sizeof(float)), .wt = alloc_n(f * w, sizeof(double)),
		.mf = alloc_n(f * w, sizeof(float)),
	};
	if (!sw.p || !sw.c || !sw.c0 || !sw.u || !sw.v || !sw.uf || !sw.vf || !sw.wt || !sw.mf) {
		strip_free(&sw);
		return ms_fail(err, MS_ERR_NOMEM, "refit: output rows %lld..%lld: out of memory", (long long)i0,
			       (long long)(i0 + w - 1));
	}
	for (int s = 0; s < S; s++) {   /* start from the merge: p = sum of the slots' outputs */
		const int64_t b0 = j->dp.start[s], ns = j->dp.start[s + 1] - b0;
		double *c = sw.c + b0 * w;
		if (ns == 0)
			continue;
		if (j->dual[s]) {
			prior_rows(j, s, i0, w, NULL, sw.mf);
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)ns, w, (int)f, 1.0f, j->af[s],
				    (int)f, sw.mf, w, 0.0f, sw.uf, w);
			for (int64_t i = 0; i < ns * w; i++)
				c[i] = sw.c0[b0 * w + i] = (double)sw.uf[i];
		} else {
			prior_rows(j, s, i0, w, sw.wt, NULL);
			cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)ns, w, (int)f, 1.0, j->a[s], (int)f,
				    sw.wt, w, 0.0, c, w);
		}
		for (int64_t r = 0; r < ns; r++)
			for (int k = 0; k < w; k++)
				sw.p[j->dp.token[b0 + r] * w + k] += c[r * w + k];
	}
	for (int sweep = 0; sweep < j->sweeps; sweep++)
		for (int s = 0; s < S; s++)
			if (j->dp.start[s + 1] > j->dp.start[s])
				slot_step(j, s, i0, w, sweep == j->sweeps - 1, &sw);
	strip_free(&sw);
	return MS_OK;
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
	j.inv = calloc((size_t)S, sizeof *j.inv);
	j.af = calloc((size_t)S, sizeof *j.af);
	j.qf = calloc((size_t)S, sizeof *j.qf);
	j.dual = calloc((size_t)S, sizeof *j.dual);
	j.lambda = calloc((size_t)S, sizeof *j.lambda);
	if (!sel || !w || !j.a || !j.inv || !j.af || !j.qf || !j.dual || !j.lambda)
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
		choose_dual(&j.dp, S, j.f, j.dual);
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
