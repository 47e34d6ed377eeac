#include "analysis/expert.h"

#include <limits.h>
#include <math.h>
#include <cblas.h>

int64_t expert_work_floats(const expert_weights *w, int64_t T)
{
	/* h [T, f] plus, for gated experts, the gate projection [T, f]. */
	return T * (int64_t)w->f * (mdl_act_gated(w->act) ? 2 : 1);
}

/* c [T, n] = alpha a [T, k] b^T + beta c, with b [n, k]. BLAS takes int sizes, so a batch of more than INT_MAX
 * rows goes through in slices rather than through a narrowing cast. */
static void gemm_rows(int64_t T, int n, int k, float alpha, const float *a, const float *b, float beta, float *c)
{
	for (int64_t t0 = 0; t0 < T; t0 += INT_MAX) {
		const int m = (int)(T - t0 < INT_MAX ? T - t0 : INT_MAX);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, alpha, a + t0 * k, k, b, k, beta,
			    c + t0 * n, n);
	}
}

static float silu(float v)
{
	return v / (1.0f + expf(-v));
}

/* GptOssExperts: the gate clamped from above, up clamped both ways and shifted by one. */
static float clamped_swiglu(float gate, float up)
{
	const float g = gate < MDL_SWIGLU_LIMIT ? gate : MDL_SWIGLU_LIMIT;
	const float u = up < -MDL_SWIGLU_LIMIT ? -MDL_SWIGLU_LIMIT : up > MDL_SWIGLU_LIMIT ? MDL_SWIGLU_LIMIT : up;
	return (u + 1.0f) * (g / (1.0f + expf(-MDL_SWIGLU_ALPHA * g)));
}

/* Adds bias [n] to every row of a [T, n]. */
static void add_rows(float *a, int64_t T, int n, const float *bias)
{
	if (!bias)
		return;
	for (int64_t t = 0; t < T; t++)
		for (int i = 0; i < n; i++)
			a[t * n + i] += bias[i];
}

void expert_activate(mdl_act act, const float *g, float *h, int64_t n)
{
	if (act == MDL_ACT_RELU) {
		for (int64_t i = 0; i < n; i++)
			h[i] = h[i] > 0.0f ? h[i] : 0.0f;
	} else if (act == MDL_ACT_CLAMPED_SWIGLU) {
		for (int64_t i = 0; i < n; i++)
			h[i] = clamped_swiglu(g[i], h[i]);
	} else {
		for (int64_t i = 0; i < n; i++)
			h[i] *= silu(g[i]);
	}
}

ms_status expert_hidden(const expert_weights *w, const float *x, int64_t T, float *h, float *work)
{
	if (!w || !x || !h || T < 0 || w->d <= 0 || w->f <= 0 || !w->up)
		return MS_ERR_ARG;
	if (T == 0)
		return MS_OK;
	const int d = w->d, f = w->f;
	/* h = x up^T: [T, d] x [d, f] */
	gemm_rows(T, f, d, 1.0f, x, w->up, 0.0f, h);
	add_rows(h, T, f, w->up_bias);
	const int64_t n = T * (int64_t)f;
	if (w->act == MDL_ACT_RELU) {
		expert_activate(w->act, NULL, h, n);
		return MS_OK;
	}
	if (!w->gate || !work)
		return MS_ERR_ARG;
	float *g = work; /* [T, f] */
	gemm_rows(T, f, d, 1.0f, x, w->gate, 0.0f, g);
	add_rows(g, T, f, w->gate_bias);
	expert_activate(w->act, g, h, n);
	return MS_OK;
}

ms_status expert_forward(const expert_weights *w, const float *x, int64_t T, float alpha, int accumulate,
			 float *y, float *work)
{
	if (!w || !y || !work || !w->down)
		return MS_ERR_ARG;
	if (T == 0)
		return MS_OK;
	float *h = work;                       /* [T, f] */
	float *rest = work + T * (int64_t)w->f; /* gate projection, when gated */
	ms_status st = expert_hidden(w, x, T, h, rest);
	if (st != MS_OK)
		return st;
	/* y = alpha h down^T (+ y): [T, f] x [f, d] */
	gemm_rows(T, w->d, w->f, alpha, h, w->down, accumulate ? 1.0f : 0.0f, y);
	if (w->down_bias)
		for (int64_t t = 0; t < T; t++)
			for (int i = 0; i < w->d; i++)
				y[t * w->d + i] += alpha * w->down_bias[i];
	return MS_OK;
}
