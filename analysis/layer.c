#include "analysis/layer.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/par.h"

/* Output columns per task of lyr_linear: a head's vocabulary chunk or a wide projection splits into tasks even
 * when the token count is small. */
#define LYR_COL_CHUNK 2048
/* Queries per attention task. */
#define LYR_QUERY_CHUNK 64

void lyr_rmsnorm(const float *x, int64_t T, int d, const float *w, float eps, float *y)
{
	for (int64_t t = 0; t < T; t++) {
		const float *xr = x + t * d;
		float *yr = y + t * d;
		double ss = 0.0;
		for (int i = 0; i < d; i++)
			ss += (double)xr[i] * xr[i];
		const float r = (float)(1.0 / sqrt((double)(float)(ss / d) + (double)eps));
		for (int i = 0; i < d; i++)
			yr[i] = w[i] * (xr[i] * r);
	}
}

void lyr_layernorm(const float *x, int64_t T, int d, const float *w, const float *b, float eps, float *y)
{
	for (int64_t t = 0; t < T; t++) {
		const float *xr = x + t * d;
		float *yr = y + t * d;
		double sum = 0.0, ss = 0.0;
		for (int i = 0; i < d; i++)
			sum += xr[i];
		const double mean = sum / d;
		for (int i = 0; i < d; i++)
			ss += ((double)xr[i] - mean) * ((double)xr[i] - mean);
		const double r = 1.0 / sqrt(ss / d + (double)eps);
		for (int i = 0; i < d; i++)
			yr[i] = (float)(((double)xr[i] - mean) * r) * w[i] + b[i];
	}
}

void lyr_clamp(float *x, int64_t n, float c)
{
	for (int64_t i = 0; i < n; i++)
		x[i] = x[i] < -c ? -c : x[i] > c ? c : x[i];
}

/* ---- linear maps ------------------------------------------------------------------------------------------- */

typedef struct {
	const float *x, *W, *b;
	float *y;
	int64_t ldx, ldy, T;
	int in, out;
	int64_t col_tasks;
} linear_job;

static ms_status linear_task(void *ctx, int64_t task, ms_error *err)
{
	(void)err;
	const linear_job *j = ctx;
	const int64_t t0 = task / j->col_tasks * LYR_TOKEN_CHUNK, c0 = task % j->col_tasks * LYR_COL_CHUNK;
	const int m = (int)(j->T - t0 < LYR_TOKEN_CHUNK ? j->T - t0 : LYR_TOKEN_CHUNK);
	const int n = (int)(j->out - c0 < LYR_COL_CHUNK ? j->out - c0 : LYR_COL_CHUNK);
	float *y = j->y + t0 * j->ldy + c0;
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, j->in, 1.0f, j->x + t0 * j->ldx, (int)j->ldx,
		    j->W + c0 * j->in, j->in, 0.0f, y, (int)j->ldy);
	if (j->b)
		for (int r = 0; r < m; r++)
			for (int c = 0; c < n; c++)
				y[r * j->ldy + c] += j->b[c0 + c];
	return MS_OK;
}

ms_status lyr_linear(const float *x, int64_t ldx, int64_t T, int in, const float *W, const float *b, int out,
		     float *y, int64_t ldy, ms_error *err)
{
	if (!x || !W || !y || T < 0 || in <= 0 || out <= 0 || ldx < in || ldy < out || ldx > INT32_MAX ||
	    ldy > INT32_MAX)
		return ms_fail(err, MS_ERR_ARG, "linear map: bad sizes (%lld tokens, %d -> %d)", (long long)T, in, out);
	linear_job j = {.x = x, .W = W, .b = b, .y = y, .ldx = ldx, .ldy = ldy, .T = T, .in = in, .out = out,
			.col_tasks = (out + LYR_COL_CHUNK - 1) / LYR_COL_CHUNK};
	return par_for((T + LYR_TOKEN_CHUNK - 1) / LYR_TOKEN_CHUNK * j.col_tasks, linear_task, &j, err);
}

/* ---- rotary positions -------------------------------------------------------------------------------------- */

/* transformers' get_mscale of yarn. */
static double yarn_mscale(double scale, double m)
{
	return scale <= 1.0 ? 1.0 : 0.1 * m * log(scale) + 1.0;
}

/* The dimension at which a rotation completes num_rotations turns over the original context. */
static double yarn_correction_dim(double num_rotations, int dim, double base, double max_pos)
{
	return dim * log(max_pos / (num_rotations * 2.0 * M_PI)) / (2.0 * log(base));
}

void lyr_rope_init(const lyr_rope_params *p, int dim, float *inv_freq, float *attention_scaling)
{
	const int half = dim / 2;
	*attention_scaling = 1.0f;
	for (int i = 0; i < half; i++) {
		/* as torch: the exponent in float32, the power and its inverse rounded to float32 */
		const float expo = (float)(2 * i) / (float)dim;
		const float pos_freq = (float)pow(p->theta, (double)expo);
		inv_freq[i] = 1.0f / pos_freq;
		if (p->kind == 1)
			inv_freq[i] = inv_freq[i] / (float)p->factor;
	}
	if (p->kind != 2)
		return;
	double low = yarn_correction_dim(p->beta_fast, dim, p->theta, p->original_max_position);
	double high = yarn_correction_dim(p->beta_slow, dim, p->theta, p->original_max_position);
	if (p->truncate) {
		low = floor(low);
		high = ceil(high);
	}
	low = low > 0 ? low : 0;
	high = high < dim - 1 ? high : dim - 1;
	if (low == high)
		high += 0.001;   /* keeps the ramp from dividing by zero */
	for (int i = 0; i < half; i++) {
		const float pos_freq = (float)pow(p->theta, (double)((float)(2 * i) / (float)dim));
		const float extra = 1.0f / pos_freq, inter = 1.0f / ((float)p->factor * pos_freq);
		float ramp = (float)(((float)i - low) / (high - low));
		ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
		const float extra_factor = 1.0f - ramp;
		inv_freq[i] = inter * (1.0f - extra_factor) + extra * extra_factor;
	}
	double af = p->attention_factor;
	if (af <= 0)
		af = p->mscale > 0 && p->mscale_all_dim > 0
			     ? yarn_mscale(p->factor, p->mscale) / yarn_mscale(p->factor, p->mscale_all_dim)
			     : yarn_mscale(p->factor, 1.0);
	*attention_scaling = (float)af;
}

void lyr_rope_apply(float *x, int64_t T, int n_heads, int head_stride, int offset, int dim, const int32_t *pos,
		    const float *inv_freq, float scaling, int interleaved)
{
	const int half = dim / 2;
	float *c = malloc((size_t)half * 2 * sizeof *c);   /* [2, half]: cos, sin of one position */
	if (!c)
		return;
	float *s = c + half;
	for (int64_t t = 0; t < T; t++) {
		for (int i = 0; i < half; i++) {
			const float f = inv_freq[i] * (float)pos[t];
			c[i] = (float)cos((double)f) * scaling;
			s[i] = (float)sin((double)f) * scaling;
		}
		for (int h = 0; h < n_heads; h++) {
			float *v = x + (t * n_heads + h) * head_stride + offset;
			for (int i = 0; i < half; i++) {
				const int ia = interleaved ? 2 * i : i, ib = interleaved ? 2 * i + 1 : i + half;
				const float a = v[ia], b = v[ib];
				v[ia] = a * c[i] - b * s[i];
				v[ib] = b * c[i] + a * s[i];
			}
		}
	}
	free(c);
}

/* ---- attention --------------------------------------------------------------------------------------------- */

typedef struct {
	const lyr_attn_shape *s;
	const float *q, *k, *v;
	const int64_t *seq_start;
	int n_seq;
	const int64_t *first_task;   /* [n_seq + 1]: the first task of each sequence */
	float *out;
} attn_job;

/* sink: a logit without a value that joins the maximum and the sum (NULL: none). */
static void softmax_row(float *row, int64_t n_keys, int64_t first_valid, int64_t last_valid, const float *sink)
{
	float mx = sink ? *sink : -INFINITY;
	for (int64_t j = first_valid; j <= last_valid; j++)
		mx = row[j] > mx ? row[j] : mx;
	double sum = sink ? (double)expf(*sink - mx) : 0.0;
	for (int64_t j = 0; j < n_keys; j++) {
		const int valid = j >= first_valid && j <= last_valid;
		row[j] = valid ? expf(row[j] - mx) : 0.0f;
		sum += row[j];
	}
	const float inv = (float)(1.0 / sum);
	for (int64_t j = first_valid; j <= last_valid; j++)
		row[j] *= inv;
}

static ms_status attn_task(void *ctx, int64_t task, ms_error *err)
{
	const attn_job *j = ctx;
	const lyr_attn_shape *s = j->s;
	int sq = 0;
	while (task >= j->first_task[sq + 1])
		sq++;
	const int64_t local = task - j->first_task[sq], base = j->seq_start[sq];
	const int64_t len = j->seq_start[sq + 1] - base, chunks = (len + LYR_QUERY_CHUNK - 1) / LYR_QUERY_CHUNK;
	const int h = (int)(local / chunks), kvh = h / (s->H / s->Hkv);
	const int64_t i0 = local % chunks * LYR_QUERY_CHUNK, i1 = i0 + LYR_QUERY_CHUNK < len ? i0 + LYR_QUERY_CHUNK : len;
	const int64_t klo = s->window > 0 && i0 - s->window + 1 > 0 ? i0 - s->window + 1 : 0, nk = i1 - klo;
	float *sc = par_scratch(0, (size_t)((i1 - i0) * nk) * sizeof *sc); /* [i1 - i0, nk] scores, then probabilities */
	if (!sc)
		return ms_fail(err, MS_ERR_NOMEM, "attention: out of memory for %lld scores", (long long)(nk * (i1 - i0)));
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(i1 - i0), (int)nk, s->dqk, s->scale,
		    j->q + (base + i0) * s->ldq + (int64_t)h * s->dqk, (int)s->ldq,
		    j->k + (base + klo) * s->ldk + (int64_t)kvh * s->dqk, (int)s->ldk, 0.0f, sc, (int)nk);
	for (int64_t i = i0; i < i1; i++) {
		const int64_t first = s->window > 0 && i - s->window + 1 > klo ? i - s->window + 1 : klo;
		softmax_row(sc + (i - i0) * nk, nk, first - klo, i - klo, s->sinks ? s->sinks + h : NULL);
	}
	const int64_t ldo = (int64_t)s->H * s->dv;
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(i1 - i0), s->dv, (int)nk, 1.0f, sc, (int)nk,
		    j->v + (base + klo) * s->ldv + (int64_t)kvh * s->dv, (int)s->ldv, 0.0f,
		    j->out + (base + i0) * ldo + (int64_t)h * s->dv, (int)ldo);
	return MS_OK;
}

ms_status lyr_attention(const lyr_attn_shape *s, const float *q, const float *k, const float *v,
			const int64_t *seq_start, int n_seq, float *out, ms_error *err)
{
	if (!s || s->H <= 0 || s->Hkv <= 0 || s->H % s->Hkv || s->dqk <= 0 || s->dv <= 0 || n_seq < 0)
		return ms_fail(err, MS_ERR_ARG, "attention: bad shape");
	int64_t *first = malloc(((size_t)n_seq + 1) * sizeof *first);
	if (!first)
		return ms_fail(err, MS_ERR_NOMEM, "attention: out of memory");
	first[0] = 0;
	for (int i = 0; i < n_seq; i++) {
		const int64_t len = seq_start[i + 1] - seq_start[i];
		first[i + 1] = first[i] + (int64_t)s->H * ((len + LYR_QUERY_CHUNK - 1) / LYR_QUERY_CHUNK);
	}
	attn_job j = {.s = s, .q = q, .k = k, .v = v, .seq_start = seq_start, .n_seq = n_seq, .first_task = first,
		      .out = out};
	ms_status st = par_for(first[n_seq], attn_task, &j, err);
	free(first);
	return st;
}

/* ---- dense MLP --------------------------------------------------------------------------------------------- */

typedef struct {
	const expert_weights *w;
	const float *x;
	float *y;
	int64_t T;
} mlp_job;

static ms_status mlp_task(void *ctx, int64_t task, ms_error *err)
{
	const mlp_job *j = ctx;
	const int64_t t0 = task * LYR_TOKEN_CHUNK, n = j->T - t0 < LYR_TOKEN_CHUNK ? j->T - t0 : LYR_TOKEN_CHUNK;
	float *work = par_scratch(0, (size_t)expert_work_floats(j->w, n) * sizeof *work); /* kept across tasks */
	if (!work)
		return ms_fail(err, MS_ERR_NOMEM, "MLP: out of memory");
	ms_status st = expert_forward(j->w, j->x + t0 * j->w->d, n, 1.0f, 0, j->y + t0 * j->w->d, work);
	return st == MS_OK ? MS_OK : ms_fail(err, st, "MLP: %s", ms_status_text(st));
}

ms_status lyr_mlp(const expert_weights *w, const float *x, int64_t T, float *y, ms_error *err)
{
	mlp_job j = {.w = w, .x = x, .y = y, .T = T};
	return par_for((T + LYR_TOKEN_CHUNK - 1) / LYR_TOKEN_CHUNK, mlp_task, &j, err);
}
