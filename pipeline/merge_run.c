#include "pipeline/merge_run.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "io/factors.h"
#include "io/jsonfile.h"
#include "io/jsonedit.h"
#include "io/outdir.h"
#include "io/quant.h"
#include "io/safetensors.h"
#include "pipeline/report.h"

const char *const mrun_format_names[MRUN_FORMAT_COUNT] = { MRUN_FORMAT_TABLE(NAMES_X_NAME) };
const char *const mrun_format_help[MRUN_FORMAT_COUNT] = { MRUN_FORMAT_TABLE(NAMES_X_HELP) };

mrun_request mrun_request_defaults(void)
{
	mrun_request r = {
		.opts = pipe_merge_defaults(), .format = MRUN_FORMAT_DENSE, .max_shard_bytes = 5000000000ULL,
		.eval_tokens = 2048,
	};
	return r;
}

/* Everything one merge keeps while it runs. */
typedef struct {
	const mdl_model *m;
	const calib *cal;
	const mrun_request *req;
	mrun_progress_fn progress;
	void *ctx;
	const atomic_int *cancel;
	pipe_merge_options opts;
	int n_out;                   /* experts per block in the output: E' (compact) or E (aliased) */
	const st_tensor **block_tensors; /* sorted pointers of every router and expert tensor, to tell them apart */
	size_t n_block_tensors;
	outdir *od;
	st_writer *w;
	cJSON *report;
	mrun_summary sum;
	cmp_result *shapes;          /* factors: [n_blocks, E, MDL_NMAT] rank and residual of each group's matrices */
	size_t declared;             /* tensors declared, to check the written files against */
} mrun_ctx;

#define COPY_CHUNK (64u << 20)

static int cmp_ptr(const void *a, const void *b)
{
	const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
	return x < y ? -1 : x > y;
}

static ms_status interrupted(const mrun_ctx *c, ms_error *err)
{
	if (c->cancel && atomic_load(c->cancel))
		return ms_fail(err, MS_ERR_INTERRUPTED, "%s: merge interrupted; nothing was written", c->req->out_dir);
	return MS_OK;
}

/* Pointers of the routers and expert matrices of every block, sorted, for is_block_tensor. */
static ms_status collect_block_tensors(mrun_ctx *c, ms_error *err)
{
	const mdl_model *m = c->m;
	size_t n = (size_t)m->n_blocks * (3 + 3 * MDL_NFUSED + 2 * (size_t)m->n_experts * MDL_NMAT), k = 0;
	c->block_tensors = malloc(n * sizeof *c->block_tensors);
	if (!c->block_tensors)
		return ms_fail(err, MS_ERR_NOMEM, "out of memory");
	for (int b = 0; b < m->n_blocks; b++) {
		c->block_tensors[k++] = m->blocks[b].router;
		for (int i = 0; i < m->n_experts * MDL_NMAT; i++) {
			if (m->blocks[b].experts[i])
				c->block_tensors[k++] = m->blocks[b].experts[i];
			if (m->blocks[b].scales[i])   /* an FP8 expert's scales are rewritten with it */
				c->block_tensors[k++] = m->blocks[b].scales[i];
		}
		for (int i = 0; i < MDL_NFUSED; i++) {
			if (m->blocks[b].fused[i])
				c->block_tensors[k++] = m->blocks[b].fused[i];
			if (m->blocks[b].fused_bias[i])
				c->block_tensors[k++] = m->blocks[b].fused_bias[i];
			if (m->blocks[b].fused_scales[i])   /* MXFP4: the scales are rewritten with their blocks */
				c->block_tensors[k++] = m->blocks[b].fused_scales[i];
		}
		if (m->blocks[b].router_bias && c->opts.layout == PIPE_LAYOUT_COMPACT)
			c->block_tensors[k++] = m->blocks[b].router_bias;
		/* the selection bias follows the router: rewritten in the compact layout, copied in the aliased one */
		if (m->blocks[b].score_bias && c->opts.layout == PIPE_LAYOUT_COMPACT)
			c->block_tensors[k++] = m->blocks[b].score_bias;
	}
	c->n_block_tensors = k;
	qsort(c->block_tensors, k, sizeof *c->block_tensors, cmp_ptr);
	return MS_OK;
}

static int is_block_tensor(const mrun_ctx *c, const st_tensor *t)
{
	return bsearch(&t, c->block_tensors, c->n_block_tensors, sizeof *c->block_tensors, cmp_ptr) != NULL;
}

static int factored(const mrun_ctx *c)
{
	return c->req->format == MRUN_FORMAT_FACTORS && c->shapes;
}

/* The plan group whose merge output expert s of block b stores. */
static int output_group(const mrun_ctx *c, int b, int s)
{
	const plan *p = c->req->plan;
	if (c->opts.layout == PIPE_LAYOUT_ALIASED)
		return p->group[(size_t)b * c->m->n_experts + s];
	return s % plan_groups(p, b);
}

static const cmp_result *shape_of(const mrun_ctx *c, int b, int g, int mat)
{
	return &c->shapes[((size_t)b * c->m->n_experts + g) * MDL_NMAT + mat];
}

static ms_status declare(mrun_ctx *c, const char *name, const char *suffix, st_dtype dtype, int ndim,
			 const int64_t *shape, ms_error *err)
{
	char full[600];
	if (snprintf(full, sizeof full, "%s%s", name, suffix) >= (int)sizeof full)
		return ms_fail(err, MS_ERR_ARG, "tensor name too long: %s", name);
	c->declared++;
	return st_writer_declare(c->w, full, dtype, ndim, shape, err);
}

/* A matrix stored as factors: NAME_u [m, r], NAME_v [r, n], and the residual NAME_sparse_idx (I32) and
 * NAME_sparse_val [nnz] when there is one (docs/design.md §4.3). */
static ms_status declare_factors(mrun_ctx *c, const char *name, const st_tensor *src, const cmp_result *r,
				 ms_error *err)
{
	int64_t u[2] = {src->shape[0], r->rank}, v[2] = {r->rank, src->shape[1]}, nnz[1] = {r->nnz};
	ms_status st = declare(c, name, fac_suffix[FAC_U], src->dtype, 2, u, err);
	if (st == MS_OK)
		st = declare(c, name, fac_suffix[FAC_V], src->dtype, 2, v, err);
	if (st == MS_OK && r->nnz > 0)
		st = declare(c, name, fac_suffix[FAC_SPARSE_IDX], ST_I32, 1, nnz, err);
	if (st == MS_OK && r->nnz > 0)
		st = declare(c, name, fac_suffix[FAC_SPARSE_VAL], src->dtype, 1, nnz, err);
	return st;
}

/* The fused layout keeps its two 3-D tensors, with n_out experts along the first axis; MXFP4 experts their
 * _blocks [n_out, out, in / 32, 16] each followed by its _scales [n_out, out, in / 32]. */
static ms_status declare_fused(mrun_ctx *c, int b, ms_error *err)
{
	const mdl_block *blk = &c->m->blocks[b];
	ms_status st = MS_OK;
	for (int i = 0; st == MS_OK && i < MDL_NFUSED; i++) {
		for (int part = 0; st == MS_OK && part < 2; part++) {
			const st_tensor *src = part ? blk->fused_scales[i] : blk->fused[i];
			if (!src)
				continue;
			int64_t shape[4] = {c->n_out, 0, 0, 0};
			for (int k = 1; k < src->ndim && k < 4; k++)
				shape[k] = src->shape[k];
			st = declare(c, src->name, "", src->dtype, src->ndim, shape, err);
		}
	}
	for (int i = 0; st == MS_OK && i < MDL_NFUSED; i++) {   /* the interleaved layout's biases */
		const st_tensor *src = blk->fused_bias[i];
		int64_t shape[2] = {c->n_out, src ? src->shape[1] : 0};
		if (src)
			st = declare(c, src->name, "", src->dtype, 2, shape, err);
	}
	return st;
}

/* The weight_scale_inv of an FP8 expert matrix: one scale per block, in the dtype of the input's (F32 for
 * DeepSeek-V3, BF16 for Qwen's FP8 checkpoints). */
static ms_status declare_fp8_scales(mrun_ctx *c, const char *name, const st_tensor *src, st_dtype dtype,
				    ms_error *err)
{
	char scale[600];
	if (qt_fp8_scale_name(name, scale, sizeof scale) != 0)
		return ms_fail(err, MS_ERR_ARG, "tensor name too long: %s", name);
	int64_t shape[2];
	qt_fp8_scale_shape(src->shape[0], src->shape[1], c->m->quant.block[0], c->m->quant.block[1], shape);
	return declare(c, scale, "", dtype, 2, shape, err);
}

/* Declares the tensors of block b: its router (and its selection bias), then n_out experts with the input's matrix
 * shapes and dtypes (or their factors). */
static ms_status declare_block(mrun_ctx *c, int b, ms_error *err)
{
	const mdl_block *blk = &c->m->blocks[b];
	int64_t shape[2] = {c->opts.layout == PIPE_LAYOUT_COMPACT ? c->n_out : c->m->n_experts, blk->router->shape[1]};
	ms_status st = declare(c, blk->router->name, "", blk->router->dtype, 2, shape, err);
	if (st == MS_OK && blk->score_bias && c->opts.layout == PIPE_LAYOUT_COMPACT)
		st = declare(c, blk->score_bias->name, "", blk->score_bias->dtype, 1, shape, err);
	if (st == MS_OK && blk->router_bias && c->opts.layout == PIPE_LAYOUT_COMPACT)
		st = declare(c, blk->router_bias->name, "", blk->router_bias->dtype, 1, shape, err);
	if (c->m->layout != MDL_LAYOUT_PER_EXPERT)
		return st == MS_OK ? declare_fused(c, b, err) : st;
	char name[512];
	for (int s = 0; st == MS_OK && s < c->n_out; s++) {
		for (int mat = 0; st == MS_OK && mat < MDL_NMAT; mat++) {
			const st_tensor *src = blk->experts[mat];
			if (!src)
				continue;
			if (mdl_expert_name(c->m, b, s, mat, name, sizeof name) != 0)
				return ms_fail(err, MS_ERR_ARG, "block %s: tensor name too long", blk->label);
			const cmp_result *r = factored(c) ? shape_of(c, b, output_group(c, b, s), mat) : NULL;
			if (r && r->compressed)
				st = declare_factors(c, name, src, r, err);
			else
				st = declare(c, name, "", src->dtype, src->ndim, src->shape, err);
			if (st == MS_OK && blk->scales[mat])
				st = declare_fp8_scales(c, name, src, blk->scales[mat]->dtype, err);
		}
	}
	return st;
}

static ms_status declare_all(mrun_ctx *c, ms_error *err)
{
	const st_file *f = c->m->st;
	ms_status st = MS_OK;
	for (size_t i = 0; st == MS_OK && i < st_count(f); i++) {
		const st_tensor *t = st_get(f, i);
		if (!is_block_tensor(c, t))
			st = declare(c, t->name, "", t->dtype, t->ndim, t->shape, err);
	}
	for (int b = 0; st == MS_OK && b < c->m->n_blocks; b++)
		st = declare_block(c, b, err);
	return st;
}

/* Control characters in err's message as '?': it may echo a tensor name from a file's header, and stays one line. */
static ms_status one_line(ms_error *err, ms_status st)
{
	for (char *p = err ? err->msg : NULL; p && *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	return st;
}

/* Non-expert tensors byte for byte, in chunks so an interrupt is seen promptly. A NaN or infinity in one is
 * refused like one in an expert: a merged checkpoint never holds one. */
static ms_status copy_plain_tensors(mrun_ctx *c, ms_error *err)
{
	const st_file *f = c->m->st;
	ms_status st = MS_OK;
	for (size_t i = 0; st == MS_OK && i < st_count(f); i++) {
		const st_tensor *t = st_get(f, i);
		if (is_block_tensor(c, t))
			continue;
		const size_t es = st_dtype_size(t->dtype);
		const uint64_t row_len = t->ndim && t->numel ? t->numel / (uint64_t)t->shape[0] : 1;
		for (uint64_t off = 0; st == MS_OK && off < t->nbytes; off += COPY_CHUNK) {
			uint64_t n = t->nbytes - off < COPY_CHUNK ? t->nbytes - off : COPY_CHUNK;
			const unsigned char *p = (const unsigned char *)t->data + off;
			int64_t bad = st_first_nonfinite_raw(t->dtype, p, n / es);
			st = interrupted(c, err);
			if (st == MS_OK && bad >= 0)
				st = one_line(err, ms_fail(err, MS_ERR_NONFINITE, "%s: tensor '%s': row %llu: NaN or infinity; "
							   "nothing was written", t->path, t->name,
							   (unsigned long long)((off / es + (uint64_t)bad) / row_len)));
			if (st == MS_OK)
				st = st_writer_write(c->w, p, n, err);
		}
	}
	return st;
}

/* v [n] as stored in dtype must be finite: a value past the F16 or BF16 range becomes infinity only when it is
 * converted, so the check rounds first. `name` and `row_len` say where, for the message. */
static ms_status check_finite(const float *v, int64_t n, st_dtype dtype, const char *name, int64_t row_len,
			      const char *label, ms_error *err)
{
	for (int64_t i = 0; i < n; i++) {
		float x = dtype == ST_F16 ? st_f16_to_f32(st_f32_to_f16(v[i]))
			  : dtype == ST_BF16 ? st_bf16_to_f32(st_f32_to_bf16(v[i])) : v[i];
		if (!isfinite(x))
			return ms_fail(err, MS_ERR_NONFINITE, "block %s: tensor '%s': row %lld: the merged value is NaN or "
				       "infinity as %s; nothing was written", label, name, (long long)(i / row_len),
				       st_dtype_name(dtype));
	}
	return MS_OK;
}

/* Where the values of one output tensor go, for write_floats' check and message. */
typedef struct {
	const char *label;   /* the block */
	char name[600];      /* the output tensor */
	st_dtype dtype;
} mrun_dest;

/* float32 values [rows, row_len] of the tensor `suffix` names after dest->name, checked, then converted. */
static ms_status write_floats(mrun_ctx *c, const float *v, int64_t n, int64_t row_len, const mrun_dest *dest,
			      const char *suffix, ms_error *err)
{
	char name[sizeof dest->name + 16];
	snprintf(name, sizeof name, "%s%s", dest->name, suffix);
	ms_status st = check_finite(v, n, dest->dtype, name, row_len > 0 ? row_len : 1, dest->label, err);
	return st == MS_OK ? st_writer_write_f32(c->w, v, (uint64_t)n, err) : st;
}

/* An FP8 matrix: codes, then its scales in the input's scale dtype. The merged values are already on their blocks'
 * FP8 grid (the pipeline rounds them so, with scales of that dtype), so quantizing again gives back those values. */
static ms_status write_fp8(mrun_ctx *c, const float *v, int rows, int cols, st_dtype scale_dtype, ms_error *err)
{
	const int br = c->m->quant.block[0], bc = c->m->quant.block[1];
	int64_t shape[2];
	qt_fp8_scale_shape(rows, cols, br, bc, shape);
	const int64_t n_scales = shape[0] * shape[1];
	uint8_t *codes = malloc((size_t)rows * (size_t)cols);
	float *inv = malloc((size_t)n_scales * sizeof *inv);
	ms_status st = MS_OK;
	if (!codes || !inv)
		st = ms_fail(err, MS_ERR_NOMEM, "out of memory quantizing a merged matrix to FP8");
	if (st == MS_OK) {
		qt_fp8_quantize(v, rows, cols, br, bc, scale_dtype, codes, inv, NULL, NULL);
		st = st_writer_write(c->w, codes, (uint64_t)rows * (uint64_t)cols, err);
	}
	if (st == MS_OK)
		st = st_writer_write_f32(c->w, inv, (uint64_t)n_scales, err);
	free(codes);
	free(inv);
	return st;
}

static ms_status write_factors(mrun_ctx *c, const cmp_factors *fa, const cmp_result *r, int rows, int cols,
			       const mrun_dest *dest, ms_error *err)
{
	ms_status st = write_floats(c, fa->u, (int64_t)rows * r->rank, r->rank, dest, fac_suffix[FAC_U], err);
	if (st == MS_OK)
		st = write_floats(c, fa->v, (int64_t)r->rank * cols, cols, dest, fac_suffix[FAC_V], err);
	if (st == MS_OK && r->nnz > 0)
		st = st_writer_write(c->w, fa->sparse_idx, (uint64_t)r->nnz * sizeof(int32_t), err);
	if (st == MS_OK && r->nnz > 0)
		st = write_floats(c, fa->sparse_val, r->nnz, r->nnz, dest, fac_suffix[FAC_SPARSE_VAL], err);
	return st;
}

/* The matrices of merged slot s, written as output expert e of block b, in gate, up, down order, skipping an
 * absent gate; factored ones as factors. */
static ms_status write_slot(mrun_ctx *c, int b, const pipe_merged *mg, int s, int e, ms_error *err)
{
	const mdl_block *blk = &c->m->blocks[b];
	const expert_weights *w = &mg->experts[s];
	const float *mats[MDL_NMAT] = {w->gate, w->up, w->down};
	const int g = mg->slot_group[s];
	ms_status st = MS_OK;
	for (int mat = 0; st == MS_OK && mat < MDL_NMAT; mat++) {
		if (!mats[mat])
			continue;
		mrun_dest dest = {.label = blk->label, .dtype = blk->experts[mat]->dtype};
		if (mdl_expert_name(c->m, b, e, mat, dest.name, sizeof dest.name) != 0)
			return ms_fail(err, MS_ERR_ARG, "block %s: tensor name too long", blk->label);
		const int rows = mat == MDL_DOWN ? w->d : w->f, cols = mat == MDL_DOWN ? w->f : w->d;
		const cmp_factors *fa = mg->factors ? &mg->factors[g * MDL_NMAT + mat] : NULL;
		const cmp_result *r = mg->compression ? &mg->compression[g * MDL_NMAT + mat] : NULL;
		if (fa && fa->u && r && r->compressed)
			st = write_factors(c, fa, r, rows, cols, &dest, err);
		else if (blk->scales[mat])
			st = write_fp8(c, mats[mat], rows, cols, blk->scales[mat]->dtype, err);
		else
			st = write_floats(c, mats[mat], (int64_t)rows * cols, cols, &dest, "", err);
	}
	return st;
}

/* One matrix of merged slot s as output expert e, named after the fused tensor's slice. */
static ms_status write_fused_mat(mrun_ctx *c, int b, const pipe_merged *mg, int s, int e, int mat, ms_error *err)
{
	const mdl_block *blk = &c->m->blocks[b];
	const expert_weights *w = &mg->experts[s];
	const float *v = mat == MDL_GATE ? w->gate : mat == MDL_UP ? w->up : w->down;
	const st_tensor *t = blk->fused[mat == MDL_DOWN ? MDL_FUSED_DOWN : MDL_FUSED_GATE_UP];
	mrun_dest dest = {.label = blk->label, .dtype = t->dtype};
	snprintf(dest.name, sizeof dest.name, "%s[%d]", t->name, e);
	const int rows = mat == MDL_DOWN ? w->d : w->f, cols = mat == MDL_DOWN ? w->f : w->d;
	return write_floats(c, v, (int64_t)rows * cols, cols, &dest, "", err);
}

/* The fused tensors in file order: gate_up_proj (each output expert's gate rows, then its up rows), then
 * down_proj. Output expert e holds slot e, or slot slot_of[e] (the aliased layout: the member's group). */
static ms_status write_fused(mrun_ctx *c, int b, const pipe_merged *mg, const int *slot_of, ms_error *err)
{
	ms_status st = MS_OK;
	for (int e = 0; st == MS_OK && e < c->n_out; e++) {
		st = write_fused_mat(c, b, mg, slot_of ? slot_of[e] : e, e, MDL_GATE, err);
		if (st == MS_OK)
			st = write_fused_mat(c, b, mg, slot_of ? slot_of[e] : e, e, MDL_UP, err);
	}
	for (int e = 0; st == MS_OK && e < c->n_out; e++)
		st = write_fused_mat(c, b, mg, slot_of ? slot_of[e] : e, e, MDL_DOWN, err);
	return st;
}

/* Fills one expert's slab of an output tensor from its merged weights. */
typedef void (*slab_fn)(const expert_weights *w, float *buf);

/* Writes each output expert's slab of tensor t (n floats, rows of row_len), through one buffer. */

static ms_status write_slabs(mrun_ctx *c, int b, const pipe_merged *mg, const int *slot_of, const st_tensor *t,
			     int64_t n, int64_t row_len, slab_fn fill, ms_error *err)
{
	const mdl_block *blk = &c->m->blocks[b];
	float *buf = malloc((size_t)n * sizeof *buf);
	ms_status st = buf ? MS_OK : ms_fail(err, MS_ERR_NOMEM, "block %s: out of memory", blk->label);
	for (int e = 0; st == MS_OK && e < c->n_out; e++) {
		mrun_dest dest = {.label = blk->label, .dtype = t->dtype};
		snprintf(dest.name, sizeof dest.name, "%s[%d]", t->name, e);
		fill(&mg->experts[slot_of ? slot_of[e] : e], buf);
		st = write_floats(c, buf, n, row_len, &dest, "", err);
	}
	free(buf);
	return st;
}

/* gate_up_proj's slab [d, 2f]: column 2i is gate row i, column 2i + 1 up row i. */
static void fill_gate_up(const expert_weights *w, float *buf)
{
	const int64_t d = w->d, f = w->f;
	for (int64_t j = 0; j < d; j++)
		for (int64_t i = 0; i < f; i++) {
			buf[j * 2 * f + 2 * i] = w->gate[i * d + j];
			buf[j * 2 * f + 2 * i + 1] = w->up[i * d + j];
		}
}

/* down_proj's slab [f, d]: down [d, f] transposed. */
static void fill_down(const expert_weights *w, float *buf)
{
	const int64_t d = w->d, f = w->f;
	for (int64_t i = 0; i < f; i++)
		for (int64_t r = 0; r < d; r++)
			buf[i * d + r] = w->down[r * f + i];
}

static void fill_gate_up_bias(const expert_weights *w, float *buf)
{
	for (int i = 0; i < w->f; i++) {
		buf[2 * i] = w->gate_bias[i];
		buf[2 * i + 1] = w->up_bias[i];
	}
}

static void fill_down_bias(const expert_weights *w, float *buf)
{
	memcpy(buf, w->down_bias, (size_t)w->d * sizeof *buf);
}

/* MXFP4 experts: each output expert's [out, in] matrix (fill: gate and up rows interleaved, or down as it is)
 * quantized in blocks of 32 along `in`, its blocks written as they come and its scales kept until every expert's
 * blocks are out (the _scales tensor follows the _blocks one). The merged values are already on their blocks' grid
 * (the pipeline rounded them so), so quantizing them again gives those values back. */
static ms_status write_mx(mrun_ctx *c, int b, const pipe_merged *mg, const int *slot_of, int which, slab_fn fill,
			  ms_error *err)
{
	const mdl_block *blk = &c->m->blocks[b];
	const int64_t rows = blk->mx[which].rows / c->m->n_experts, cols = blk->mx[which].cols;
	const int64_t n = rows * cols, ns = n / QT_MX_BLOCK;
	float *buf = malloc((size_t)n * sizeof *buf);
	uint8_t *blocks = malloc((size_t)(n / 2)), *scales = malloc((size_t)(ns * c->n_out));
	ms_status st = buf && blocks && scales ? MS_OK : ms_fail(err, MS_ERR_NOMEM, "block %s: out of memory", blk->label);
	for (int e = 0; st == MS_OK && e < c->n_out; e++) {
		fill(&mg->experts[slot_of ? slot_of[e] : e], buf);
		if (qt_mxfp4_quantize(buf, rows, cols, blocks, scales + ns * e, NULL, NULL) != 0)
			st = ms_fail(err, MS_ERR_NONFINITE, "block %s: tensor '%s[%d]': NaN or infinity", blk->label,
				     blk->fused[which]->name, e);
		if (st == MS_OK)
			st = st_writer_write(c->w, blocks, (uint64_t)(n / 2), err);
	}
	if (st == MS_OK)
		st = st_writer_write(c->w, scales, (uint64_t)(ns * c->n_out), err);
	free(buf);
	free(blocks);
	free(scales);
	return st;
}

/* gate_up_proj's MXFP4 rows [2f, d]: row 2i is gate row i, row 2i + 1 up row i. */
static void fill_gate_up_rows(const expert_weights *w, float *buf)
{
	const int64_t d = w->d;
	for (int64_t i = 0; i < w->f; i++) {
		memcpy(buf + 2 * i * d, w->gate + i * d, (size_t)d * sizeof *buf);
		memcpy(buf + (2 * i + 1) * d, w->up + i * d, (size_t)d * sizeof *buf);
	}
}

/* down_proj's MXFP4 rows [d, f]: down itself. */
static void fill_down_rows(const expert_weights *w, float *buf)
{
	memcpy(buf, w->down, (size_t)w->d * (size_t)w->f * sizeof *buf);
}

/* The interleaved layout's four tensors in file order (as declare_fused declared them), each with n_out experts
 * along its first axis: output expert e holds slot e, or slot slot_of[e] (aliased). */
static ms_status write_interleaved(mrun_ctx *c, int b, const pipe_merged *mg, const int *slot_of, ms_error *err)
{
	const mdl_block *blk = &c->m->blocks[b];
	const int64_t d = c->m->hidden, f = c->m->inter;
	if (!mg->experts[0].gate_bias)
		return ms_fail(err, MS_ERR_ARG, "block %s: the merged experts have no biases", blk->label);
	ms_status st;
	if (blk->mx[0].codes) {
		st = write_mx(c, b, mg, slot_of, MDL_FUSED_GATE_UP, fill_gate_up_rows, err);
		if (st == MS_OK)
			st = write_mx(c, b, mg, slot_of, MDL_FUSED_DOWN, fill_down_rows, err);
	} else {
		st = write_slabs(c, b, mg, slot_of, blk->fused[MDL_FUSED_GATE_UP], d * 2 * f, 2 * f, fill_gate_up, err);
		if (st == MS_OK)
			st = write_slabs(c, b, mg, slot_of, blk->fused[MDL_FUSED_DOWN], f * d, d, fill_down, err);
	}
	if (st == MS_OK)
		st = write_slabs(c, b, mg, slot_of, blk->fused_bias[MDL_FUSED_GATE_UP], 2 * f, 2 * f, fill_gate_up_bias,
				 err);
	if (st == MS_OK)
		st = write_slabs(c, b, mg, slot_of, blk->fused_bias[MDL_FUSED_DOWN], d, d, fill_down_bias, err);
	return st;
}

static ms_status write_block(mrun_ctx *c, int b, const pipe_merged *mg, ms_error *err)
{
	const mdl_block *blk = &c->m->blocks[b];
	const plan *p = c->req->plan;
	ms_status st;
	if (c->opts.layout == PIPE_LAYOUT_ALIASED) {
		/* the router is unchanged: its bytes are copied */
		st = st_writer_write(c->w, blk->router->data, blk->router->nbytes, err);
		if (c->m->layout == MDL_LAYOUT_FUSED)
			return st == MS_OK ? write_fused(c, b, mg, p->group + (size_t)b * c->m->n_experts, err) : st;
		if (c->m->layout == MDL_LAYOUT_INTERLEAVED)
			return st == MS_OK ? write_interleaved(c, b, mg, p->group + (size_t)b * c->m->n_experts, err) : st;
		for (int e = 0; st == MS_OK && e < c->m->n_experts; e++)
			st = write_slot(c, b, mg, p->group[(size_t)b * c->m->n_experts + e], e, err);
		return st;
	}
	mrun_dest dest = {.label = blk->label, .dtype = blk->router->dtype};
	snprintf(dest.name, sizeof dest.name, "%s", blk->router->name);
	st = write_floats(c, mg->router, (int64_t)mg->n_router * c->m->hidden, c->m->hidden, &dest, "", err);
	if (st == MS_OK && blk->score_bias) {
		mrun_dest bias = {.label = blk->label, .dtype = blk->score_bias->dtype};
		snprintf(bias.name, sizeof bias.name, "%s", blk->score_bias->name);
		st = mg->score_bias ? write_floats(c, mg->score_bias, mg->n_router, mg->n_router, &bias, "", err)
				    : ms_fail(err, MS_ERR_ARG, "block %s: no merged routing bias", blk->label);
	}
	if (st == MS_OK && blk->router_bias) {
		mrun_dest bias = {.label = blk->label, .dtype = blk->router_bias->dtype};
		snprintf(bias.name, sizeof bias.name, "%s", blk->router_bias->name);
		st = mg->router_bias ? write_floats(c, mg->router_bias, mg->n_router, mg->n_router, &bias, "", err)
				     : ms_fail(err, MS_ERR_ARG, "block %s: no merged router bias", blk->label);
	}
	if (c->m->layout == MDL_LAYOUT_FUSED)
		return st == MS_OK ? write_fused(c, b, mg, NULL, err) : st;
	if (c->m->layout == MDL_LAYOUT_INTERLEAVED)
		return st == MS_OK ? write_interleaved(c, b, mg, NULL, err) : st;
	for (int s = 0; st == MS_OK && s < mg->n_slots; s++)
		st = write_slot(c, b, mg, s, s, err);
	return st;
}

/* Mean residual of each router method on the calibration tokens, so the report shows which fits best. */
static void report_router_fit(cJSON *jb, const pipe_block *blk, const plan *p, int b)
{
	const int G = plan_groups(p, b);
	float *rows = malloc((size_t)G * blk->d * sizeof *rows);
	float *bias = malloc((size_t)G * sizeof *bias);
	double *res = malloc((size_t)G * sizeof *res);
	cJSON *o = cJSON_AddObjectToObject(jb, "router_fit_residual");
	const char *best = NULL;
	double best_v = INFINITY;
	for (int meth = 0; rows && bias && res && meth < RFIT_ROW_METHODS; meth++) {
		ms_error e2 = {0};
		if (pipe_router_fit(blk, p, b, (rfit_method)meth, rows, bias, res, &e2) != MS_OK)
			continue;
		double mean = 0.0;
		for (int g = 0; g < G; g++)
			mean += res[g] / G;
		cJSON_AddNumberToObject(o, rfit_method_name((rfit_method)meth), mean);
		if (mean < best_v) {
			best_v = mean;
			best = rfit_method_name((rfit_method)meth);
		}
	}
	if (best)
		cJSON_AddStringToObject(o, "best", best);
	free(rows);
	free(bias);
	free(res);
}

/* Bytes of a block's tensors (router and its vectors, experts with their scales and biases) before and after. */
static void block_bytes(const mrun_ctx *c, int b, const pipe_merged *mg, uint64_t *before, uint64_t *after)
{
	const mdl_block *blk = &c->m->blocks[b];
	uint64_t expert = 0;
	*before = blk->router->nbytes;
	for (int i = 0; i < c->m->n_experts * MDL_NMAT; i++) {
		if (blk->experts[i])
			*before += blk->experts[i]->nbytes;
		if (blk->scales[i])
			*before += blk->scales[i]->nbytes;
	}
	for (int mat = 0; mat < MDL_NMAT; mat++) {
		if (blk->experts[mat])
			expert += blk->experts[mat]->nbytes;
		if (blk->scales[mat])
			expert += blk->scales[mat]->nbytes;
	}
	const uint64_t E = (uint64_t)c->m->n_experts;
	for (int i = 0; i < MDL_NFUSED; i++) {   /* MXFP4's scales and gpt-oss's biases: each expert's share */
		const st_tensor *per_expert[2] = {blk->fused_scales[i], blk->fused_bias[i]};
		for (int k = 0; k < 2; k++)
			if (per_expert[k]) {
				*before += per_expert[k]->nbytes;
				expert += per_expert[k]->nbytes / E;
			}
	}
	uint64_t row = blk->router->nbytes / E;   /* a router row with its entries of the router's vectors */
	const st_tensor *row_bias[2] = {blk->score_bias, blk->router_bias};
	for (int k = 0; k < 2; k++)
		if (row_bias[k]) {
			*before += row_bias[k]->nbytes;
			row += row_bias[k]->nbytes / E;
		}
	*after = (uint64_t)c->n_out * expert + (uint64_t)mg->n_router * row;
}

/* How far rounding the merged experts to FP8 or MXFP4 blocks moved them: the relative Frobenius error of each
 * kind of matrix and of all of them, and the worst single block. */
static void report_requant(cJSON *jb, const pipe_merged *mg, const char *scheme)
{
	static const char *const names[MDL_NMAT] = {"gate", "up", "down"};
	cJSON *o = cJSON_AddObjectToObject(jb, "requantization");
	cJSON_AddStringToObject(o, "scheme", scheme);
	qt_error all = {0};
	for (int mat = 0; mat < MDL_NMAT; mat++) {
		if (mg->requant[mat].norm2 == 0 && mg->requant[mat].err2 == 0)
			continue;
		cJSON_AddNumberToObject(o, names[mat], qt_error_rel(&mg->requant[mat]));
		qt_error_add(&all, &mg->requant[mat]);
	}
	cJSON_AddNumberToObject(o, "rel_error", qt_error_rel(&all));
	cJSON_AddNumberToObject(o, "max_block_rel_error", all.max_block_rel);
}

static ms_status report_block_merge(mrun_ctx *c, int b, const pipe_block *blk, const blk_eval_ref *ref,
				    const pipe_merged *mg, ms_error *err)
{
	cJSON *jb = report_block(c->report, c->m, b);
	uint64_t before, after;
	block_bytes(c, b, mg, &before, &after);
	cJSON_AddNumberToObject(jb, "groups", mg->groups);
	cJSON_AddNumberToObject(jb, "experts_out", c->n_out);
	cJSON_AddNumberToObject(jb, "bytes_before", (double)before);
	cJSON_AddNumberToObject(jb, "bytes_after", (double)after);
	if (blk->expert_dtype == ST_F8_E4M3 || blk->expert_dtype == ST_U8)
		report_requant(jb, mg, blk->expert_dtype == ST_U8 ? "mxfp4" : "fp8");
	int64_t cmp_before, cmp_after;
	pipe_compressed_params(mg, &cmp_before, &cmp_after);
	if (cmp_before > 0) {
		cJSON_AddNumberToObject(jb, "compressed_params_before", (double)cmp_before);
		cJSON_AddNumberToObject(jb, "compressed_params_after", (double)cmp_after);
	}
	if (blk->T == 0)
		return MS_OK;
	blk_eval_result r;
	ms_status st = pipe_eval_against(ref, blk, mg, c->req->plan, b, &r, err);
	if (st != MS_OK)
		return st;
	report_add_eval(jb, &r);
	report_add_fit(jb, blk, mg);
	c->sum.mean_rel_error += r.rel_error / c->m->n_blocks;
	if (c->opts.layout == PIPE_LAYOUT_COMPACT)
		report_router_fit(jb, blk, c->req->plan, b);
	return MS_OK;
}

/* "block L: " in front of an analysis error that does not already say which block it is about. */
static void name_block(ms_error *err, const char *label)
{
	char prefix[48];
	int n = snprintf(prefix, sizeof prefix, "block %s", label);
	if (n > 0 && (size_t)n < sizeof prefix && (strncmp(err->msg, prefix, (size_t)n) != 0 || err->msg[n] != ':'))
		ms_error_prefix(err, prefix);
}

/* Factored output declares every tensor before writing any, so the rank and residual size of each group's
 * matrices are found first by merging every block once (the write pass merges again). */
static ms_status measure_factors(mrun_ctx *c, ms_error *err)
{
	const mdl_model *m = c->m;
	c->shapes = calloc((size_t)m->n_blocks * m->n_experts * MDL_NMAT, sizeof *c->shapes);
	if (!c->shapes)
		return ms_fail(err, MS_ERR_NOMEM, "out of memory");
	pipe_merge_options o = c->opts;
	o.keep_factors = 0;
	ms_status st = MS_OK;
	for (int b = 0; st == MS_OK && b < m->n_blocks; b++) {
		if (c->progress)
			c->progress(c->ctx, "measure", b, m->n_blocks);
		pipe_block blk;
		pipe_merged mg;
		st = interrupted(c, err);
		if (st == MS_OK)
			st = pipe_load_block(m, c->cal, b, &blk, err);
		if (st != MS_OK)
			break;
		st = pipe_merge_block(&blk, c->req->plan, b, &o, &mg, err);
		if (st != MS_OK)
			name_block(err, m->blocks[b].label);
		if (st == MS_OK && mg.compression)
			memcpy(&c->shapes[(size_t)b * m->n_experts * MDL_NMAT], mg.compression,
			       (size_t)mg.groups * MDL_NMAT * sizeof *c->shapes);
		if (st == MS_OK)
			pipe_free_merged(&mg);
		pipe_free_block(&blk);
	}
	return st;
}

static ms_status merge_blocks(mrun_ctx *c, ms_error *err)
{
	ms_status st = MS_OK;
	for (int b = 0; st == MS_OK && b < c->m->n_blocks; b++) {
		if (c->progress)
			c->progress(c->ctx, "merge", b, c->m->n_blocks);
		pipe_block blk;
		pipe_merged mg;
		blk_eval_ref ref = {0};
		st = interrupted(c, err);
		if (st == MS_OK)
			st = pipe_load_block(c->m, c->cal, b, &blk, err);
		if (st != MS_OK)
			break;
		/* The original's outputs first, then the merge in the block's own storage: the original block is the
		 * only copy of the experts in memory. */
		if (blk.T > 0)
			st = pipe_eval_reference(&blk, c->req->plan, b, c->req->eval_tokens, &ref, err);
		if (st == MS_OK)
			st = pipe_merge_block_in_place(&blk, c->req->plan, b, &c->opts, &mg, err);
		if (st != MS_OK)
			name_block(err, c->m->blocks[b].label);
		if (st == MS_OK) {
			st = report_block_merge(c, b, &blk, &ref, &mg, err);
			if (st != MS_OK)
				name_block(err, c->m->blocks[b].label);
			if (st == MS_OK)
				st = write_block(c, b, &mg, err);
			pipe_free_merged(&mg);
		}
		blk_eval_ref_free(&ref);
		pipe_free_block(&blk);
	}
	if (st == MS_OK && c->progress)
		c->progress(c->ctx, "merge", c->m->n_blocks, c->m->n_blocks);
	return st;
}

/* config.json as the input spelled it, with the expert count, top-k, routing method and capacity of the output
 * (compact layout: mdl_config_set_experts) and, for factors, the marks of io/factors.h: every other byte is the
 * input's (io/jsonedit.h). */
static ms_status write_config(mrun_ctx *c, ms_error *err)
{
	size_t len;
	const char *text = mdl_config_text(c->m, &len);
	char where[PATH_MAX + 16];
	snprintf(where, sizeof where, "%s/config.json", c->m->dir);
	jedit *d;
	ms_status st = jedit_parse(where, text, len, &d, err);
	if (st != MS_OK)
		return st;
	if (c->opts.layout == PIPE_LAYOUT_COMPACT)
		st = mdl_config_set_experts(c->m, d, c->n_out, err);
	if (st == MS_OK && factored(c))
		st = fac_mark_config(d, cmp_rank_mode_name(c->opts.compress.mode), c->opts.compress.sparse_ratio, err);
	char path[PATH_MAX];
	if (st == MS_OK && outdir_file(c->od, "config.json", path, sizeof path) != 0)
		st = ms_fail(err, MS_ERR_ARG, "output path too long");
	if (st == MS_OK) {
		text = jedit_text(d, &len);
		st = jsonf_write_bytes(path, text, len, err);
	}
	jedit_free(d);
	return st;
}

/* Re-opens the output as a model: every shard's header and offsets, and every block's shapes against the new
 * config.json. */
static ms_status validate_factored(mrun_ctx *c, ms_error *err)
{
	st_file *f;
	ms_status st = st_open(outdir_tmp_path(c->od), &f, err);
	if (st != MS_OK) {
		ms_error_prefix(err, "validating the written checkpoint");
		return st;
	}
	if (st_count(f) != c->declared)
		st = ms_fail(err, MS_ERR_IO, "validating the written checkpoint: %zu tensors, %zu declared", st_count(f),
			     c->declared);
	for (size_t i = 0; i < st_count(f); i++)
		c->sum.bytes_after += st_get(f, i)->nbytes;
	st_close(f);
	return st;
}

static ms_status validate_output(mrun_ctx *c, ms_error *err)
{
	if (factored(c))
		return validate_factored(c, err);
	mdl_model *out;
	ms_status st = mdl_open(outdir_tmp_path(c->od), &out, err);
	if (st != MS_OK) {
		ms_error_prefix(err, "validating the written checkpoint");
		return st;
	}
	if (out->n_experts != (c->opts.layout == PIPE_LAYOUT_COMPACT ? c->n_out : c->m->n_experts) ||
	    out->n_blocks != c->m->n_blocks)
		st = ms_fail(err, MS_ERR_IO, "validating the written checkpoint: %d experts in %d blocks, expected %d in %d",
			     out->n_experts, out->n_blocks, c->n_out, c->m->n_blocks);
	c->sum.bytes_after = out->bytes_total;
	mdl_close(out);
	return st;
}

static ms_status write_sidecars(mrun_ctx *c, ms_error *err)
{
	char path[PATH_MAX];
	if (outdir_file(c->od, "moescope_plan.csv", path, sizeof path) != 0)
		return ms_fail(err, MS_ERR_ARG, "output path too long");
	ms_status st = plan_write_csv(path, c->req->plan, err);
	if (st == MS_OK && outdir_file(c->od, "moescope_report.json", path, sizeof path) != 0)
		st = ms_fail(err, MS_ERR_ARG, "output path too long");
	if (st == MS_OK)
		st = jsonf_write(path, c->report, err);
	return st;
}

static ms_status check_request(mrun_ctx *c, ms_error *err)
{
	const plan *p = c->req->plan;
	if (!p || p->n_blocks != c->m->n_blocks || p->n_experts != c->m->n_experts)
		return ms_fail(err, MS_ERR_ARG, "the plan does not fit the model (%d blocks of %d experts)",
			       c->m->n_blocks, c->m->n_experts);
	ms_status st = plan_validate(p, err);
	if (st != MS_OK)
		return st;
	if (c->req->format == MRUN_FORMAT_FACTORS && c->m->layout != MDL_LAYOUT_PER_EXPERT)
		return ms_fail(err, MS_ERR_ARG, "%s: the experts are fused 3-D tensors; --compress-format factors stores "
			       "per-expert matrices, use --compress-format dense", c->m->dir);
	if (c->req->format == MRUN_FORMAT_FACTORS && c->m->expert_dtype == ST_F8_E4M3)
		return ms_fail(err, MS_ERR_ARG, "--compress-format factors cannot store FP8 experts (their factors would "
			       "need scales of their own); use --compress-format dense");
	/* config.json is rewritten last, in place (io/jsonedit.h): a file it cannot edit is refused before the work */
	size_t len;
	const char *text = mdl_config_text(c->m, &len);
	char where[PATH_MAX + 16];
	snprintf(where, sizeof where, "%s/config.json", c->m->dir);
	jedit *d;
	st = jedit_parse(where, text, len, &d, err);
	if (st == MS_OK && c->req->format == MRUN_FORMAT_FACTORS)   /* e.g. a key the marks need is taken */
		st = fac_mark_config(d, cmp_rank_mode_name(c->opts.compress.mode), c->opts.compress.sparse_ratio, err);
	jedit_free(d);
	if (st != MS_OK)
		return st;
	if (c->req->format == MRUN_FORMAT_FACTORS && c->opts.compress.mode == CMP_RANK_NONE)
		return ms_fail(err, MS_ERR_ARG, "--compress-format factors needs a rank (--rank, --rank-energy or "
			       "--rank-stable)");
	if (c->opts.layout == PIPE_LAYOUT_ALIASED) {
		for (size_t i = 0; i < (size_t)p->n_blocks * p->n_experts; i++)
			if (p->group[i] < 0)
				return ms_fail(err, MS_ERR_ARG, "the plan drops experts (pruning): the aliased layout "
					       "keeps every expert, use --layout compact");
	}
	if (c->opts.router == RFIT_LSE_FIT && c->opts.layout == PIPE_LAYOUT_COMPACT && !c->cal)
		return ms_fail(err, MS_ERR_ARG, "--router lse-fit needs the calibration set (--calib), or use "
			       "--router mean or dominant");
	return MS_OK;
}

static ms_status run(mrun_ctx *c, ms_error *err)
{
	ms_status st = check_request(c, err);
	if (st == MS_OK)
		st = collect_block_tensors(c, err);
	if (st == MS_OK)
		st = outdir_begin(c->req->out_dir, c->m->dir, c->req->force, &c->od, err);
	if (st == MS_OK && c->req->format == MRUN_FORMAT_FACTORS)
		st = measure_factors(c, err);
	if (st == MS_OK)
		st = st_writer_create(outdir_tmp_path(c->od), "model", c->req->max_shard_bytes, &c->w, err);
	if (st == MS_OK)
		st = declare_all(c, err);
	if (st == MS_OK)
		st = copy_plain_tensors(c, err);
	if (st == MS_OK)
		st = merge_blocks(c, err);
	if (st == MS_OK)
		st = st_writer_finish(c->w, err);
	if (st == MS_OK)
		st = write_config(c, err);
	if (st == MS_OK)
		st = write_sidecars(c, err);
	if (st == MS_OK)
		st = outdir_copy_aux(c->od, c->m->dir, 1, err);
	if (st == MS_OK && c->progress)
		c->progress(c->ctx, "validate", 0, 1);
	if (st == MS_OK)
		st = validate_output(c, err);
	if (st == MS_OK)
		st = interrupted(c, err);
	return st;
}

ms_status mrun_run(const mdl_model *m, const calib *cal, const mrun_request *req, mrun_progress_fn progress,
		    void *ctx, const atomic_int *cancel, mrun_summary *summary, ms_error *err)
{
	mrun_ctx c = {.m = m, .cal = cal, .req = req, .progress = progress, .ctx = ctx, .cancel = cancel};
	c.opts = req->opts;
	c.opts.keep_factors = req->format == MRUN_FORMAT_FACTORS;
	c.n_out = m->n_experts;
	mrun_request filled_req;
	plan filled = {0};
	if (req->plan && c.opts.layout == PIPE_LAYOUT_COMPACT) {
		/* blocks with fewer groups split groups up to the common count rather than pad with copies; the plan
		 * written beside the weights is this one */
		if (plan_copy(&filled, req->plan) != 0)
			return ms_fail(err, MS_ERR_NOMEM, "out of memory copying the plan");
		ms_status fst = pipe_fill_plan(&filled, &c.n_out, err);
		if (fst != MS_OK) {
			plan_free(&filled);
			return fst;
		}
		c.opts.slots = c.n_out;
		filled_req = *req;
		filled_req.plan = &filled;
		c.req = &filled_req;
	}
	c.report = report_new(m, cal);
	cJSON *o = report_options(c.report);
	cJSON_AddStringToObject(o, "layout", pipe_layout_names[c.opts.layout]);
	cJSON_AddStringToObject(o, "router", rfit_method_name(c.opts.router));
	cJSON_AddStringToObject(o, "refit", pipe_refit_name(c.opts.refit));
	cJSON_AddStringToObject(o, "align", align_ref_name(c.opts.align));
	cJSON_AddStringToObject(o, "weighting", merge_weighting_name(c.opts.weighting));
	cJSON_AddStringToObject(o, "rank_mode", cmp_rank_mode_name(c.opts.compress.mode));
	c.sum.blocks = m->n_blocks;
	c.sum.experts_before = m->n_experts;
	c.sum.experts_after = c.n_out;
	c.sum.bytes_before = m->bytes_total;
	ms_status st = run(&c, err);
	st_writer_free(c.w);
	if (st == MS_OK)
		st = outdir_commit(c.od, err);
	else
		outdir_abort(c.od);
	cJSON_Delete(c.report);
	free(c.block_tensors);
	free(c.shapes);
	plan_free(&filled);
	if (st == MS_OK && summary)
		*summary = c.sum;
	return st;
}
