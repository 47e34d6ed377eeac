/* Calibration set (docs/design.md §2.3): the recorded inputs of every MoE block, checked against the model on
 * open. */
#include "io/calib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct calib {
	char *path;
	st_file *st;
	int n_blocks;
	int hidden;                    /* d */
	const st_tensor **inputs;      /* [n_blocks]: "<prefix>.input", [T, d] */
	const st_tensor *segments;     /* segment_ids [T of block 0] I32, or NULL */
};

/* Block b's input must exist, hold floats and be [T, d] with T > 0. */
static ms_status check_input(calib *c, const mdl_model *m, int b, ms_error *err)
{
	const mdl_block *blk = &m->blocks[b];
	char name[sizeof blk->prefix + 16];
	snprintf(name, sizeof name, "%s.input", blk->prefix);
	const st_tensor *t = st_find(c->st, name);
	if (!t)
		return ms_fail(err, MS_ERR_CALIB_MISSING, "%s: tensor '%s' missing (the inputs of MoE block %s)", c->path,
			       name, blk->label);
	if (t->ndim != 2)
		return ms_fail(err, MS_ERR_CALIB_WIDTH, "%s: tensor '%s': %d dimensions, expected [tokens, %d]", c->path,
			       name, t->ndim, m->hidden);
	if (t->shape[1] != m->hidden)
		return ms_fail(err, MS_ERR_CALIB_WIDTH, "%s: tensor '%s': width %lld, the model's hidden size is %d",
			       c->path, name, (long long)t->shape[1], m->hidden);
	if (t->shape[0] <= 0)
		return ms_fail(err, MS_ERR_CALIB_EMPTY, "%s: tensor '%s': no tokens (shape [0, %d])", c->path, name,
			       m->hidden);
	if (!st_dtype_is_float(t->dtype))
		return ms_fail(err, MS_ERR_ST_DTYPE, "%s: tensor '%s': dtype %s, expected F32, BF16 or F16", c->path, name,
			       st_dtype_name(t->dtype));
	c->inputs[b] = t;
	return MS_OK;
}

/* segment_ids, when present, must be I32 [T] with the T of the first block: it labels those tokens. */
static ms_status check_segments(calib *c, ms_error *err)
{
	const st_tensor *t = st_find(c->st, "segment_ids");
	if (!t)
		return MS_OK;
	if (t->dtype != ST_I32)
		return ms_fail(err, MS_ERR_ST_DTYPE, "%s: tensor 'segment_ids': dtype %s, expected I32", c->path,
			       st_dtype_name(t->dtype));
	int64_t T = c->inputs[0]->shape[0];
	if (t->ndim != 1 || t->shape[0] != T)
		return ms_fail(err, MS_ERR_CALIB_WIDTH, "%s: tensor 'segment_ids': expected shape [%lld], one per token",
			       c->path, (long long)T);
	c->segments = t;
	return MS_OK;
}

ms_status calib_open(const char *path, const mdl_model *m, calib **out, ms_error *err)
{
	if (!path || !m || !out || m->n_blocks <= 0)
		return ms_fail(err, MS_ERR_ARG, "calib_open: no path or no model");
	*out = NULL;
	calib *c = calloc(1, sizeof *c);
	if (c) {
		c->path = strdup(path);
		c->inputs = calloc((size_t)m->n_blocks, sizeof *c->inputs);
	}
	if (!c || !c->path || !c->inputs) {
		calib_close(c);
		return ms_fail(err, MS_ERR_NOMEM, "%s: out of memory", path);
	}
	c->n_blocks = m->n_blocks;
	c->hidden = m->hidden;
	ms_status st = st_open(path, &c->st, err);
	for (int b = 0; st == MS_OK && b < m->n_blocks; b++)
		st = check_input(c, m, b, err);
	if (st == MS_OK)
		st = check_segments(c, err);
	if (st != MS_OK) {
		calib_close(c);
		return st;
	}
	*out = c;
	return MS_OK;
}

void calib_close(calib *c)
{
	if (!c)
		return;
	st_close(c->st);
	free(c->inputs);
	free(c->path);
	free(c);
}

const char *calib_path(const calib *c)
{
	return c ? c->path : NULL;
}

int64_t calib_tokens(const calib *c, int block)
{
	if (!c || block < 0 || block >= c->n_blocks)
		return -1;
	return c->inputs[block]->shape[0];
}

int calib_has_segments(const calib *c)
{
	return c && c->segments;
}

ms_status calib_load(const calib *c, int block, float *x, ms_error *err)
{
	if (!c || !x || block < 0 || block >= c->n_blocks)
		return ms_fail(err, MS_ERR_ARG, "calib_load: block %d out of range", block);
	return st_read_f32(c->inputs[block], x, err);
}

ms_status calib_load_segments(const calib *c, int32_t *seg, int64_t n, ms_error *err)
{
	if (!c || !seg)
		return ms_fail(err, MS_ERR_ARG, "calib_load_segments: no calibration set");
	if (!c->segments)
		return ms_fail(err, MS_ERR_ARG, "%s: no segment_ids tensor", c->path);
	if (n != c->segments->shape[0])
		return ms_fail(err, MS_ERR_ARG, "%s: segment_ids holds %lld values, %lld asked for", c->path,
			       (long long)c->segments->shape[0], (long long)n);
	/* The mapping gives no alignment guarantee for I32 data, so copy bytes (safetensors is little-endian, as is
	 * every machine this builds on). */
	memcpy(seg, c->segments->data, (size_t)n * sizeof *seg);
	return MS_OK;
}

ms_status calib_load_token_ids(const calib *c, int32_t **ids, int64_t *n, ms_error *err)
{
	*ids = NULL;
	*n = 0;
	if (!c)
		return ms_fail(err, MS_ERR_ARG, "calib_load_token_ids: no calibration set");
	const st_tensor *t = st_find(c->st, "token_ids");
	if (!t)
		return ms_fail(err, MS_ERR_ARG, "%s: no token_ids tensor (a set written by `moescope capture` has one)",
			       c->path);
	if ((t->dtype != ST_I32 && t->dtype != ST_I64) || t->ndim != 1 || t->shape[0] < 1)
		return ms_fail(err, MS_ERR_ST_DTYPE, "%s: tensor 'token_ids': expected I32 or I64 of shape [T]", c->path);
	const int64_t T = t->shape[0];
	const int width = t->dtype == ST_I32 ? 4 : 8;
	int32_t *out = malloc((size_t)T * sizeof *out);
	if (!out)
		return ms_fail(err, MS_ERR_NOMEM, "%s: out of memory for %lld token ids", c->path, (long long)T);
	const unsigned char *p = t->data;
	for (int64_t i = 0; i < T; i++) {   /* little-endian bytes: the mapping gives no alignment guarantee */
		uint64_t v = 0;
		for (int k = width - 1; k >= 0; k--)
			v = v << 8 | p[i * width + k];
		const int64_t id = width == 4 ? (int64_t)(int32_t)(uint32_t)v : (int64_t)v;
		if (id < 0 || id > INT32_MAX) {
			free(out);
			return ms_fail(err, MS_ERR_ARG, "%s: token_ids[%lld] = %lld is not a token id", c->path,
				       (long long)i, (long long)id);
		}
		out[i] = (int32_t)id;
	}
	*ids = out;
	*n = T;
	return MS_OK;
}
