#include "analysis/similarity.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>

#include "analysis/par.h"
#include "analysis/routing.h"
#include "io/names.h"

/* ---- the table of bases ---- */

const char *const sim_base_names[SIM_BASE_COUNT] = {
#define SIM_X_NAME(value, name, calib, help) [value] = name,
	SIM_BASE_TABLE(SIM_X_NAME)
#undef SIM_X_NAME
};

const char *const sim_base_help[SIM_BASE_COUNT] = {
#define SIM_X_HELP(value, name, calib, help) [value] = help,
	SIM_BASE_TABLE(SIM_X_HELP)
#undef SIM_X_HELP
};

static const unsigned char needs_calibration[SIM_BASE_COUNT] = {
#define SIM_X_CALIB(value, name, calib, help) [value] = calib,
	SIM_BASE_TABLE(SIM_X_CALIB)
#undef SIM_X_CALIB
};

const char *sim_base_name(sim_base b)
{
	return names_at(sim_base_names, SIM_BASE_COUNT, (int)b);
}

int sim_base_parse(const char *name)
{
	return names_index(sim_base_names, SIM_BASE_COUNT, name);
}

int sim_base_needs_calibration(sim_base b)
{
	return (int)b < 0 || b >= SIM_BASE_COUNT || needs_calibration[b];
}

unsigned sim_bases_without_calibration(void)
{
	unsigned mask = 0;
	for (int b = 0; b < SIM_BASE_COUNT; b++)
		if (!needs_calibration[b])
			mask |= 1u << b;
	return mask;
}

/* ---- blockwise Gram accumulation ----
 *
 * The n vectors are visited one block of coordinates at a time. Each vector's block is copied into buf and
 * divided by its own length s (computed in double), so the float SYRK sees entries of magnitude <= 1: it cannot
 * overflow, and its rounding error is relative to |a_block| |b_block|. The block's product, times s_i s_j, is
 * added to a double Gram matrix; by Cauchy-Schwarz the summed error stays relative to |a| |b|, which is what the
 * cosine divides by. Squared lengths are summed in double from the raw values, so they are exact to double
 * rounding and also reveal NaN or infinity. */
typedef struct {
	int n;
	int64_t cap;      /* coordinates per block */
	float *buf;       /* [n, cap] (rows) or [cap, n] (columns): one scaled block */
	float *part;      /* [n, n] upper triangle: SYRK of one block */
	double *sumsq;    /* [n] this block's vector lengths (the scales) */
	double *inv;      /* [n] their inverses */
	double *gram;     /* [n, n] upper triangle: accumulated dot products */
	double *norm2;    /* [n] accumulated squared lengths */
} gram_acc;

static void gram_free(gram_acc *g)
{
	free(g->buf);
	free(g->part);
	free(g->sumsq);
	free(g->inv);
	free(g->gram);
	free(g->norm2);
}

static ms_status gram_init(gram_acc *g, int n)
{
	memset(g, 0, sizeof *g);
	g->n = n;
	g->cap = SIM_BLOCK_FLOATS / n > 64 ? SIM_BLOCK_FLOATS / n : 64;
	const size_t nn = (size_t)n * (size_t)n;
	g->buf = malloc((size_t)g->cap * (size_t)n * sizeof *g->buf);
	g->part = malloc(nn * sizeof *g->part);
	g->sumsq = malloc((size_t)n * sizeof *g->sumsq);
	g->inv = malloc((size_t)n * sizeof *g->inv);
	g->gram = calloc(nn, sizeof *g->gram);
	g->norm2 = calloc((size_t)n, sizeof *g->norm2);
	if (!g->buf || !g->part || !g->sumsq || !g->inv || !g->gram || !g->norm2) {
		gram_free(g);
		return MS_ERR_NOMEM;
	}
	return MS_OK;
}

/* Records vector i's squared length in this block (from the raw values, in double) and returns the factor
 * 1 / length that scales it to unit length (1 for a zero block). MS_ERR_NONFINITE for NaN or infinity. */
static ms_status block_scale(gram_acc *g, int i, double sumsq, double *inv)
{
	if (!isfinite(sumsq))
		return MS_ERR_NONFINITE;
	g->norm2[i] += sumsq;
	g->sumsq[i] = sqrt(sumsq); /* from here on: the block's scale */
	*inv = sumsq > 0.0 ? 1.0 / g->sumsq[i] : 1.0;
	return MS_OK;
}

/* Adds the SYRK of the scaled block in buf, [n, len] or (trans) [len, n], times each vector's scale. */
static void block_accumulate(gram_acc *g, int64_t len, int trans)
{
	const int n = g->n;
	cblas_ssyrk(CblasRowMajor, CblasUpper, trans ? CblasTrans : CblasNoTrans, n, (int)len, 1.0f, g->buf,
		    trans ? n : (int)len, 0.0f, g->part, n);
	for (int i = 0; i < n; i++)
		for (int j = i; j < n; j++)
			g->gram[(size_t)i * n + j] += (double)g->part[(size_t)i * n + j] * g->sumsq[i] * g->sumsq[j];
}

/* Squared length of x [len] in double. dsdot is fast, but OpenBLAS may square in float first, which overflows
 * above 1e19 and loses squares below 1e-19 (each under 1.2e-38, so at most 3e-33 in a block of 2^18); so a result
 * that is not finite, or small enough for that loss to matter, is redone in plain double. */
static double sum_squares(const float *x, int len)
{
	const double fast = cblas_dsdot(len, x, 1, x, 1);
	if (isfinite(fast) && fast > 1e-25)
		return fast;
	double acc = 0.0;
	for (int k = 0; k < len; k++)
		acc += (double)x[k] * x[k];
	return acc;
}

/* dst [len] = x * by. BLAS does it (-O2 leaves a plain loop unvectorised) unless `by` is so extreme that as a
 * float it would be subnormal or overflow, which only lengths near the ends of the float range give. */
static void scaled_copy(const float *x, int len, double by, float *dst)
{
	if (by > 1e-30 && by < 1e30) {
		cblas_scopy(len, x, 1, dst, 1);
		cblas_sscal(len, (float)by, dst, 1);
		return;
	}
	for (int k = 0; k < len; k++)
		dst[k] = (float)(x[k] * by);
}

/* gram_add_rows works in waves of blocks: each block of a wave is a parallel task (lengths, scaled copy, SYRK into
 * a part of its own), then the parts are added to the double Gram matrix in block order, exactly as one thread
 * going block by block would add them. */
typedef struct {
	const gram_acc *g;
	const float *const *src;
	int64_t len, first;   /* coordinates per vector; the wave's first block */
	float *buf;           /* [wave][n, cap] scaled blocks */
	float *part;          /* [wave][n, n] their SYRKs */
	double *raw;          /* [wave][n] squared lengths */
} rows_wave;

static ms_status rows_block_task(void *ctx, int64_t i, ms_error *err)
{
	(void)err;
	const rows_wave *w = ctx;
	const int n = w->g->n;
	const int64_t off = (w->first + i) * w->g->cap;
	const int cb = (int)(w->len - off < w->g->cap ? w->len - off : w->g->cap);
	float *buf = w->buf + (size_t)i * (size_t)n * (size_t)w->g->cap;
	double *raw = w->raw + (size_t)i * (size_t)n;
	for (int v = 0; v < n; v++) {
		const float *x = w->src[v] + off;
		raw[v] = sum_squares(x, cb);
		const double inv = isfinite(raw[v]) && raw[v] > 0.0 ? 1.0 / sqrt(raw[v]) : 1.0;
		scaled_copy(x, cb, inv, buf + (size_t)v * (size_t)cb);
	}
	cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, n, cb, 1.0f, buf, cb, 0.0f,
		    w->part + (size_t)i * (size_t)n * (size_t)n, n);
	return MS_OK;
}

/* Adds block i of the wave to the Gram matrix, as block_scale and block_accumulate do for one block. */
static ms_status rows_block_add(gram_acc *g, const rows_wave *w, int64_t i)
{
	const int n = g->n;
	const double *raw = w->raw + (size_t)i * (size_t)n;
	const float *part = w->part + (size_t)i * (size_t)n * (size_t)n;
	for (int v = 0; v < n; v++) {
		double inv;
		ms_status st = block_scale(g, v, raw[v], &inv);
		if (st != MS_OK)
			return st;
	}
	for (int a = 0; a < n; a++)
		for (int b = a; b < n; b++)
			g->gram[(size_t)a * n + b] += (double)part[(size_t)a * n + b] * g->sumsq[a] * g->sumsq[b];
	return MS_OK;
}

/* Adds coordinates of n contiguous vectors src[i][0 .. len) to the Gram matrix, par_threads() blocks at a time
 * (how many are in flight changes the memory used, never the result). */
static ms_status gram_add_rows(gram_acc *g, const float *const *src, int64_t len)
{
	const int64_t blocks = (len + g->cap - 1) / g->cap, wave = par_threads();
	const size_t n = (size_t)g->n;
	rows_wave w = {.g = g, .src = src, .len = len};
	w.buf = malloc((size_t)wave * n * (size_t)g->cap * sizeof *w.buf);
	w.part = malloc((size_t)wave * n * n * sizeof *w.part);
	w.raw = malloc((size_t)wave * n * sizeof *w.raw);
	ms_status st = w.buf && w.part && w.raw ? MS_OK : MS_ERR_NOMEM;
	for (w.first = 0; st == MS_OK && w.first < blocks; w.first += wave) {
		const int64_t count = blocks - w.first < wave ? blocks - w.first : wave;
		st = par_for(count, rows_block_task, &w, NULL);
		for (int64_t i = 0; st == MS_OK && i < count; i++)
			st = rows_block_add(g, &w, i);
	}
	free(w.buf);
	free(w.part);
	free(w.raw);
	return st;
}

/* Adds the columns of z [T, n] (a block of rows at a time) to the Gram matrix. */
static ms_status gram_add_columns(gram_acc *g, const float *z, int64_t T)
{
	const int n = g->n;
	double *col2 = g->sumsq; /* squared column lengths, each replaced by its square root in block_scale */
	double *inv = g->inv;
	for (int64_t t0 = 0; t0 < T; t0 += g->cap) {
		const int64_t rows = T - t0 < g->cap ? T - t0 : g->cap;
		const float *src = z + (size_t)t0 * (size_t)n;
		memset(col2, 0, (size_t)n * sizeof *col2);
		for (int64_t k = 0; k < rows; k++)
			for (int i = 0; i < n; i++)
				col2[i] += (double)src[(size_t)k * n + i] * src[(size_t)k * n + i];
		for (int i = 0; i < n; i++) {
			ms_status st = block_scale(g, i, col2[i], &inv[i]);
			if (st != MS_OK)
				return st;
		}
		for (int64_t k = 0; k < rows; k++)
			for (int i = 0; i < n; i++)
				g->buf[(size_t)k * n + i] = (float)(src[(size_t)k * n + i] * inv[i]);
		block_accumulate(g, rows, 1);
	}
	return MS_OK;
}

/* out [n, n]: (cos + 1) / 2 with the SIM_NORM_FLOOR on |a| |b|, clamped against rounding, diagonal 1. */
static void gram_to_similarity(const gram_acc *g, double *out)
{
	const int n = g->n;
	for (int i = 0; i < n; i++) {
		out[(size_t)i * n + i] = 1.0;
		for (int j = i + 1; j < n; j++) {
			const double den = fmax(sqrt(g->norm2[i]) * sqrt(g->norm2[j]), SIM_NORM_FLOOR);
			double c = g->gram[(size_t)i * n + j] / den;
			c = c > 1.0 ? 1.0 : c < -1.0 ? -1.0 : c;
			out[(size_t)i * n + j] = out[(size_t)j * n + i] = (c + 1.0) / 2.0;
		}
	}
}

/* ---- cosine bases ---- */

ms_status sim_cosine_rows(const float *a, int n, int64_t m, double *out)
{
	if (!a || !out || n <= 0 || m < 0)
		return MS_ERR_ARG;
	const float **src = malloc((size_t)n * sizeof *src);
	if (!src)
		return MS_ERR_NOMEM;
	for (int i = 0; i < n; i++)
		src[i] = a + (size_t)i * (size_t)m;
	gram_acc g;
	ms_status st = gram_init(&g, n);
	if (st == MS_OK)
		st = gram_add_rows(&g, src, m);
	if (st == MS_OK)
		gram_to_similarity(&g, out);
	gram_free(&g);
	free(src);
	return st;
}

ms_status sim_cosine_columns(const float *z, int64_t T, int E, double *out)
{
	if ((!z && T > 0) || !out || E <= 0 || T < 0)
		return MS_ERR_ARG;
	gram_acc g;
	ms_status st = gram_init(&g, E);
	if (st == MS_OK)
		st = gram_add_columns(&g, z, T);
	if (st == MS_OK)
		gram_to_similarity(&g, out);
	gram_free(&g);
	return st;
}

static int experts_agree(const expert_weights *x, int E)
{
	for (int e = 0; e < E; e++) {
		const expert_weights *w = &x[e];
		if (w->d != x[0].d || w->f != x[0].f || w->act != x[0].act || w->d <= 0 || w->f <= 0 || !w->up ||
		    !w->down || (mdl_act_gated(w->act) && !w->gate))
			return 0;
		if (!w->gate_bias != !x[0].gate_bias || !w->up_bias != !x[0].up_bias || !w->down_bias != !x[0].down_bias)
			return 0;
	}
	return 1;
}

/* The weight basis streams gate, then up, then down of every expert through the Gram accumulator: the dot
 * product of two concatenations is the sum of the three per-matrix dot products, so nothing is concatenated
 * and each weight is read once, in blocks that stay in cache between the copy and the SYRK. The biases, when the
 * experts have them, follow as three more short vectors (a bias is its matrix's column for a constant input 1). */
ms_status sim_weight(const expert_weights *experts, int E, double *out)
{
	if (!experts || !out || E <= 0 || !experts_agree(experts, E))
		return MS_ERR_ARG;
	const int64_t len = (int64_t)experts[0].f * experts[0].d;
	const float **src = malloc((size_t)E * sizeof *src);
	if (!src)
		return MS_ERR_NOMEM;
	gram_acc g;
	ms_status st = gram_init(&g, E);
	for (int mat = 0; mat < MDL_NMAT && st == MS_OK; mat++) {
		if (mat == MDL_GATE && !mdl_act_gated(experts[0].act))
			continue;
		for (int e = 0; e < E; e++)
			src[e] = mat == MDL_GATE ? experts[e].gate : mat == MDL_UP ? experts[e].up : experts[e].down;
		st = gram_add_rows(&g, src, len);
	}
	for (int bias = 0; bias < 3 && st == MS_OK; bias++) {
		const expert_weights *e0 = &experts[0];
		const float *first = bias == 0 ? e0->gate_bias : bias == 1 ? e0->up_bias : e0->down_bias;
		if (!first)
			continue;
		for (int e = 0; e < E; e++)
			src[e] = bias == 0 ? experts[e].gate_bias : bias == 1 ? experts[e].up_bias : experts[e].down_bias;
		st = gram_add_rows(&g, src, bias == 2 ? e0->d : e0->f);
	}
	if (st == MS_OK)
		gram_to_similarity(&g, out);
	gram_free(&g);
	free(src);
	return st;
}

/* ---- expert-output ---- */

/* hsum [f] += column sums of h [rows, f], in double. */
static ms_status add_column_sums(const float *h, int64_t rows, int f, double *hsum)
{
	for (int64_t t = 0; t < rows; t++) {
		const float *r = h + (size_t)t * (size_t)f;
		for (int k = 0; k < f; k++)
			hsum[k] += r[k];
	}
	for (int k = 0; k < f; k++)
		if (!isfinite(hsum[k]))
			return MS_ERR_NONFINITE;
	return MS_OK;
}

/* o [d] = down [d, f] hsum / T, in double: one matrix-vector product per expert instead of a GEMM per chunk. */
static ms_status project_mean(const expert_weights *w, const double *hsum, int64_t T, float *o)
{
	for (int r = 0; r < w->d; r++) {
		const float *row = w->down + (size_t)r * (size_t)w->f;
		double acc = 0.0;
		for (int k = 0; k < w->f; k++)
			acc += row[k] * hsum[k];
		o[r] = (float)(acc / (double)T);
		if (!isfinite(o[r]))
			return MS_ERR_NONFINITE;
	}
	return MS_OK;
}

static ms_status expert_mean(const expert_weights *w, const float *x, int64_t T, int64_t chunk, float *h,
			     double *hsum, float *o)
{
	float *work = h + (size_t)chunk * (size_t)w->f; /* gate projection [chunk, f] */
	memset(hsum, 0, (size_t)w->f * sizeof *hsum);
	for (int64_t t0 = 0; t0 < T; t0 += chunk) {
		const int64_t rows = T - t0 < chunk ? T - t0 : chunk;
		ms_status st = expert_hidden(w, x + (size_t)t0 * (size_t)w->d, rows, h, work);
		if (st == MS_OK)
			st = add_column_sums(h, rows, w->f, hsum);
		if (st != MS_OK)
			return st;
	}
	return project_mean(w, hsum, T, o);
}

typedef struct {
	const expert_weights *experts;
	const float *x;
	int64_t T, chunk;
	float *out;
} mean_job;

/* One expert's mean output, with buffers of its own: experts run as parallel tasks. */
static ms_status mean_task(void *ctx, int64_t e, ms_error *err)
{
	(void)err;
	const mean_job *j = ctx;
	const int d = j->experts[0].d, f = j->experts[0].f;
	float *h = malloc((size_t)j->chunk * (size_t)f * 2 * sizeof *h); /* [chunk, f] hidden + [chunk, f] gate */
	double *hsum = malloc((size_t)f * sizeof *hsum);                  /* [f] */
	ms_status st = h && hsum ? MS_OK : MS_ERR_NOMEM;
	if (st == MS_OK)
		st = expert_mean(&j->experts[e], j->x, j->T, j->chunk, h, hsum, j->out + (size_t)e * (size_t)d);
	free(h);
	free(hsum);
	return st;
}

ms_status sim_expert_mean_outputs(const expert_weights *experts, int E, const float *x, int64_t T, int64_t chunk,
				  float *out)
{
	if (!experts || !x || !out || E <= 0 || T < 0 || !experts_agree(experts, E))
		return MS_ERR_ARG;
	if (T == 0)
		return MS_ERR_CALIB_EMPTY;
	if (chunk <= 0)
		chunk = SIM_TOKEN_CHUNK;
	if (chunk > T)
		chunk = T;
	if (chunk > INT_MAX / experts[0].f)
		chunk = INT_MAX / experts[0].f;
	mean_job j = {.experts = experts, .x = x, .T = T, .chunk = chunk, .out = out};
	return par_for(E, mean_task, &j, NULL);
}

/* ---- Euclidean distance ---- */

/* Distances need more than float products give: |a - b|^2 = |a|^2 + |b|^2 - 2 a.b cancels when a and b are
 * close. So the rows, centred, go through DSYRK in double blocks; o is only E x d, so double costs little. */
static ms_status euclid_gram(const float *o, int n, int64_t m, const double *mean, double *gram)
{
	int64_t cap = SIM_BLOCK_FLOATS / n > 64 ? SIM_BLOCK_FLOATS / n : 64;
	if (cap > m)
		cap = m;
	double *buf = malloc((size_t)n * (size_t)cap * sizeof *buf); /* [n, cap] */
	if (!buf)
		return MS_ERR_NOMEM;
	memset(gram, 0, (size_t)n * (size_t)n * sizeof *gram);
	for (int64_t off = 0; off < m; off += cap) {
		const int64_t cb = m - off < cap ? m - off : cap;
		for (int i = 0; i < n; i++)
			for (int64_t k = 0; k < cb; k++)
				buf[(size_t)i * cb + k] = (double)o[(size_t)i * m + off + k] - mean[off + k];
		cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, n, (int)cb, 1.0, buf, (int)cb, 1.0, gram, n);
	}
	free(buf);
	return MS_OK;
}

ms_status sim_euclidean_rows(const float *o, int n, int64_t m, double *out)
{
	if (!o || !out || n <= 0 || m < 0)
		return MS_ERR_ARG;
	double *mean = calloc(m > 0 ? (size_t)m : 1, sizeof *mean); /* [m] */
	if (!mean)
		return MS_ERR_NOMEM;
	for (int i = 0; i < n; i++)
		for (int64_t k = 0; k < m; k++)
			mean[k] += o[(size_t)i * m + k];
	for (int64_t k = 0; k < m; k++) {
		mean[k] /= n;
		if (!isfinite(mean[k])) {
			free(mean);
			return MS_ERR_NONFINITE;
		}
	}
	ms_status st = m > 0 ? euclid_gram(o, n, m, mean, out) : MS_OK;
	if (m == 0)
		memset(out, 0, (size_t)n * (size_t)n * sizeof *out);
	free(mean);
	if (st != MS_OK)
		return st;
	/* out holds the Gram's upper triangle; read the diagonal before overwriting it. */
	for (int i = 0; i < n; i++)
		for (int j = i + 1; j < n; j++) {
			const double d2 = out[(size_t)i * n + i] + out[(size_t)j * n + j] - 2.0 * out[(size_t)i * n + j];
			out[(size_t)i * n + j] = sqrt(d2 > 0.0 ? d2 : 0.0);
		}
	for (int i = 0; i < n; i++) {
		out[(size_t)i * n + i] = 0.0;
		for (int j = 0; j < i; j++)
			out[(size_t)i * n + j] = out[(size_t)j * n + i];
	}
	return MS_OK;
}

/* ---- dispatch ---- */

static ms_status base_router_logits(const sim_inputs *in, double *sim, double *dist)
{
	(void)dist;
	if (in->z)
		return sim_cosine_columns(in->z, in->T, in->E, sim);
	if ((!in->x && in->T > 0) || !in->router || in->d <= 0 || in->T < 0)
		return MS_ERR_ARG;
	float *z = malloc((in->T > 0 ? (size_t)in->T : 1) * (size_t)in->E * sizeof *z); /* [T, E] */
	if (!z)
		return MS_ERR_NOMEM;
	ms_status st = in->T > 0 ? route_logits(in->x, in->T, in->d, in->router, in->E, z) : MS_OK;
	if (st == MS_OK)
		route_add_bias(z, in->T, in->E, in->router_bias);
	if (st == MS_OK)
		st = sim_cosine_columns(z, in->T, in->E, sim);
	free(z);
	return st;
}

static ms_status base_router_weight(const sim_inputs *in, double *sim, double *dist)
{
	(void)dist;
	if (!in->router || in->d <= 0 || in->E <= 0)
		return MS_ERR_ARG;
	if (!in->router_bias)
		return sim_cosine_rows(in->router, in->E, in->d, sim);
	const int64_t d1 = (int64_t)in->d + 1;
	float *rows = malloc((size_t)in->E * (size_t)d1 * sizeof *rows);   /* [E, d + 1]: [R | b] */
	if (!rows)
		return MS_ERR_NOMEM;
	for (int e = 0; e < in->E; e++) {
		memcpy(rows + e * d1, in->router + (int64_t)e * in->d, (size_t)in->d * sizeof *rows);
		rows[e * d1 + in->d] = in->router_bias[e];
	}
	ms_status st = sim_cosine_rows(rows, in->E, d1, sim);
	free(rows);
	return st;
}

static ms_status base_weight(const sim_inputs *in, double *sim, double *dist)
{
	(void)dist;
	return sim_weight(in->experts, in->E, sim);
}

/* Writes the similarity, and, when asked, the Euclidean distance in place of 1 - similarity. */
static ms_status base_expert_output(const sim_inputs *in, double *sim, double *dist)
{
	if (!in->experts || in->d <= 0 || in->experts[0].d != in->d)
		return MS_ERR_ARG;
	float *o = malloc((size_t)in->E * (size_t)in->d * sizeof *o); /* [E, d] */
	if (!o)
		return MS_ERR_NOMEM;
	ms_status st = sim_expert_mean_outputs(in->experts, in->E, in->x, in->T, in->chunk, o);
	if (st == MS_OK)
		st = sim_cosine_rows(o, in->E, in->d, sim);
	if (st == MS_OK && dist)
		st = sim_euclidean_rows(o, in->E, in->d, dist);
	free(o);
	return st;
}

/* One row per base, indexed by sim_base. A base whose row is euclidean writes the distance itself; the others
 * leave it to sim_compute as 1 - similarity. */
static const struct {
	ms_status (*compute)(const sim_inputs *in, double *sim, double *dist);
	int euclidean;
} bases[SIM_BASE_COUNT] = {
	[SIM_ROUTER_LOGITS] = { base_router_logits, 0 },
	[SIM_ROUTER_WEIGHT] = { base_router_weight, 0 },
	[SIM_WEIGHT] = { base_weight, 0 },
	[SIM_EXPERT_OUTPUT] = { base_expert_output, 1 },
};

int sim_base_euclidean(sim_base b)
{
	return (int)b >= 0 && b < SIM_BASE_COUNT && bases[b].euclidean;
}

ms_status sim_compute(sim_base base, const sim_inputs *in, double *similarity, double *distance)
{
	if (!in || in->E <= 0 || (int)base < 0 || base >= SIM_BASE_COUNT)
		return MS_ERR_ARG;
	if (!similarity && !distance)
		return MS_OK;
	const size_t nn = (size_t)in->E * (size_t)in->E;
	double *sim = similarity ? similarity : malloc(nn * sizeof *sim); /* [E, E] */
	if (!sim)
		return MS_ERR_NOMEM;
	ms_status st = bases[base].compute(in, sim, distance);
	if (st == MS_OK && distance && !bases[base].euclidean)
		for (size_t k = 0; k < nn; k++)
			distance[k] = 1.0 - sim[k];
	if (sim != similarity)
		free(sim);
	return st;
}
