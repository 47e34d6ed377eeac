#include "analysis/align.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>

#include "analysis/lap.h"
#include "analysis/par.h"

const char *const align_ref_names[ALIGN_COUNT] = { ALIGN_REF_TABLE(NAMES_X_NAME) };
const char *const align_ref_help[ALIGN_COUNT] = { ALIGN_REF_TABLE(NAMES_X_HELP) };

const char *align_ref_name(align_ref r)
{
	return names_at(align_ref_names, ALIGN_COUNT, (int)r);
}

int align_ref_parse(const char *name)
{
	return names_index(align_ref_names, ALIGN_COUNT, name);
}

static int has_gate(const expert_weights *w)
{
	return mdl_act_gated(w->act);
}

static int expert_ok(const expert_weights *w)
{
	return w && w->d > 0 && w->f > 0 && w->up && w->down && (!has_gate(w) || w->gate);
}

/* Rows r0..r0+m of C [f, f] into part [m, f]: the gate and up terms pair row i of ref's matrix with row j of t's;
 * the down term pairs column i of ref's down [d, f] with column j of t's, i.e. (D_r^T D_t)[i, j]. A gate or up
 * bias is one more column of its matrix (its input is always 1), so it adds b_r[i] b_t[j]; the down bias lies on
 * the d axis, belongs to no neuron and takes no part. */
static void cost_rows(const expert_weights *r, const expert_weights *t, int r0, int m, float *part)
{
	const int d = r->d, f = r->f;
	float beta = 0.0f;
	if (has_gate(r)) {
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, f, d, 1.0f, r->gate + (size_t)r0 * d, d,
			    t->gate, d, 0.0f, part, f);
		beta = 1.0f;
	}
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, f, d, 1.0f, r->up + (size_t)r0 * d, d, t->up, d, beta,
		    part, f);
	cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, f, d, 1.0f, r->down + r0, f, t->down, f, 1.0f, part,
		    f);
	if (has_gate(r) && r->gate_bias && t->gate_bias)
		cblas_sger(CblasRowMajor, m, f, 1.0f, r->gate_bias + r0, 1, t->gate_bias, 1, part, f);
	if (r->up_bias && t->up_bias)
		cblas_sger(CblasRowMajor, m, f, 1.0f, r->up_bias + r0, 1, t->up_bias, 1, part, f);
}

typedef struct {
	const expert_weights *r, *t;
	int chunk;
	float *c;
} cost_job;

/* One strip of ALIGN_ROW_CHUNK rows of C, written straight into the matrix: strips run as parallel tasks. */
static ms_status cost_strip(void *ctx, int64_t strip, ms_error *err)
{
	(void)err;
	const cost_job *j = ctx;
	const int f = j->r->f, r0 = (int)strip * j->chunk;
	const int m = f - r0 < j->chunk ? f - r0 : j->chunk;
	float *part = j->c + (size_t)r0 * (size_t)f; /* [m, f] */
	cost_rows(j->r, j->t, r0, m, part);
	const size_t count = (size_t)m * (size_t)f;
	for (size_t k = 0; k < count; k++)
		if (!isfinite(part[k]))
			return MS_ERR_NONFINITE;
	return MS_OK;
}

/* C [f, f] in float for the solver (f x f floats: 0.8 GB for Mixtral's 14336 neurons), in strips of
 * ALIGN_ROW_CHUNK rows. */
static ms_status cost_matrix(const expert_weights *r, const expert_weights *t, float *c)
{
	const int f = r->f;
	cost_job j = {.r = r, .t = t, .chunk = f < ALIGN_ROW_CHUNK ? f : ALIGN_ROW_CHUNK, .c = c};
	return par_for((f + j.chunk - 1) / j.chunk, cost_strip, &j, NULL);
}

ms_status align_permutation(const expert_weights *ref, const expert_weights *t, int *perm)
{
	if (!expert_ok(ref) || !expert_ok(t) || !perm || ref->d != t->d || ref->f != t->f || ref->act != t->act)
		return MS_ERR_ARG;
	const size_t f = (size_t)ref->f;
	if (f > SIZE_MAX / sizeof(float) / f)
		return MS_ERR_NOMEM;
	float *c = malloc(f * f * sizeof *c); /* [f, f] */
	if (!c)
		return MS_ERR_NOMEM;
	ms_status st = cost_matrix(ref, t, c);
	if (st == MS_OK)
		st = lap_solve_f32(ref->f, c, 1, perm, NULL);
	free(c);
	return st;
}

static int is_permutation(const int *perm, int f, unsigned char *seen)
{
	memset(seen, 0, (size_t)f);
	for (int i = 0; i < f; i++) {
		if (perm[i] < 0 || perm[i] >= f || seen[perm[i]])
			return 0;
		seen[perm[i]] = 1;
	}
	return 1;
}

/* Row i of m [f, width] becomes old row perm[i], following each cycle of perm with one row of scratch. done [f]
 * marks rows already in place. */
static void permute_rows(const int *perm, float *m, int f, int width, float *scratch, unsigned char *done)
{
	const size_t bytes = (size_t)width * sizeof *m;
	memset(done, 0, (size_t)f);
	for (int s = 0; s < f; s++) {
		if (done[s])
			continue;
		memcpy(scratch, m + (size_t)s * width, bytes);
		int i = s;
		while (perm[i] != s) {
			memcpy(m + (size_t)i * width, m + (size_t)perm[i] * width, bytes);
			done[i] = 1;
			i = perm[i];
		}
		memcpy(m + (size_t)i * width, scratch, bytes);
		done[i] = 1;
	}
}

/* Column i of m [rows, f] becomes old column perm[i], one row at a time through scratch [f]. */
static void permute_columns(const int *perm, float *m, int rows, int f, float *scratch)
{
	for (int r = 0; r < rows; r++) {
		float *row = m + (size_t)r * f;
		for (int i = 0; i < f; i++)
			scratch[i] = row[perm[i]];
		memcpy(row, scratch, (size_t)f * sizeof *row);
	}
}

ms_status align_apply(const int *perm, float *gate, float *up, float *down, int d, int f)
{
	if (!perm || !up || !down || d <= 0 || f <= 0)
		return MS_ERR_ARG;
	float *scratch = malloc((size_t)(d > f ? d : f) * sizeof *scratch);
	unsigned char *seen = malloc((size_t)f);
	ms_status st = MS_ERR_NOMEM;
	if (scratch && seen) {
		st = MS_ERR_ARG;
		if (is_permutation(perm, f, seen)) {
			if (gate)
				permute_rows(perm, gate, f, d, scratch, seen);
			permute_rows(perm, up, f, d, scratch, seen);
			permute_columns(perm, down, d, f, scratch);
			st = MS_OK;
		}
	}
	free(scratch);
	free(seen);
	return st;
}

ms_status align_apply_into(const int *perm, const expert_weights *src, float *gate, float *up, float *down)
{
	if (!perm || !expert_ok(src) || !up || !down || (has_gate(src) && !gate))
		return MS_ERR_ARG;
	const int d = src->d, f = src->f;
	unsigned char *seen = malloc((size_t)f);
	if (!seen)
		return MS_ERR_NOMEM;
	const int ok = is_permutation(perm, f, seen);
	free(seen);
	if (!ok)
		return MS_ERR_ARG;
	const size_t row = (size_t)d * sizeof(float);
	for (int i = 0; i < f; i++) {
		const size_t from = (size_t)perm[i] * d, to = (size_t)i * d;
		if (has_gate(src))
			memcpy(gate + to, src->gate + from, row);
		memcpy(up + to, src->up + from, row);
	}
	for (int r = 0; r < d; r++) {
		const float *in = src->down + (size_t)r * f;
		float *out = down + (size_t)r * f;
		for (int i = 0; i < f; i++)
			out[i] = in[perm[i]];
	}
	return MS_OK;
}

ms_status align_apply_biases(const int *perm, int f, float *gate_bias, float *up_bias)
{
	if (!perm || f <= 0)
		return MS_ERR_ARG;
	float *scratch = malloc((size_t)f * sizeof *scratch);
	unsigned char *seen = malloc((size_t)f);
	ms_status st = scratch && seen ? MS_OK : MS_ERR_NOMEM;
	if (st == MS_OK && !is_permutation(perm, f, seen))
		st = MS_ERR_ARG;
	float *const vec[2] = {gate_bias, up_bias};
	for (int k = 0; st == MS_OK && k < 2; k++) {
		if (!vec[k])
			continue;
		for (int i = 0; i < f; i++)
			scratch[i] = vec[k][perm[i]];
		memcpy(vec[k], scratch, (size_t)f * sizeof *scratch);
	}
	free(scratch);
	free(seen);
	return st;
}
