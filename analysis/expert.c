#include "analysis/expert.h"

#include <math.h>
#include <cblas.h>

int64_t expert_work_floats(const expert_weights *w, int64_t T)
{
	/* h [T, f] plus, for gated experts, the gate projection [T, f]. */
	return T * (int64_t)w->f * (w->act == MDL_ACT_SILU_GLU ? 2 : 1);
}

static float silu(float v)
{
	return v / (1.0f + expf(-v));
}

ms_status expert_hidden(const expert_weights *w, const float *x, int64_t T, float *h, float *work)
{
	if (!w || !x || !h || T < 0 || w->d <= 0 || w->f <= 0 || !w->up)
		return MS_ERR_ARG;
	if (T == 0)
		return MS_OK;
	const int d = w->d, f = w->f;
	/* h = x up^T: [T, d] x [d, f] */
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, f, d, 1.0f, x, d, w->up, d, 0.0f, h, f);
	const int64_t n = T * (int64_t)f;
	if (w->act == MDL_ACT_RELU) {
		for (int64_t i = 0; i < n; i++)
			h[i] = h[i] > 0.0f ? h[i] : 0.0f;
		return MS_OK;
	}
	if (!w->gate || !work)
		return MS_ERR_ARG;
	float *g = work; /* [T, f] */
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, f, d, 1.0f, x, d, w->gate, d, 0.0f, g, f);
	for (int64_t i = 0; i < n; i++)
		h[i] *= silu(g[i]);
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
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, w->d, w->f, alpha, h, w->f, w->down, w->f,
		    accumulate ? 1.0f : 0.0f, y, w->d);
	return MS_OK;
}
