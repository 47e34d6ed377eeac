/* A factored checkpoint back to a dense one (pipeline/densify.h). */
#include "pipeline/densify.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/compress.h"
#include "io/factors.h"
#include "io/file.h"
#include "io/jsonedit.h"
#include "io/jsonfile.h"
#include "io/model.h"
#include "io/outdir.h"
#include "io/safetensors.h"

#define COPY_CHUNK (64u << 20)

/* What becomes of one input tensor. */
typedef enum { DENS_COPY, DENS_REBUILD, DENS_PART } dens_kind;

typedef struct {
	dens_kind kind;
	const st_tensor *part[FAC_NPARTS];   /* DENS_REBUILD: u, v, and the residual's idx and val (or NULL) */
	char name[600];                      /* DENS_REBUILD: the dense tensor's name */
} dens_item;

typedef struct {
	const dens_request *req;
	st_file *st;
	dens_item *items;      /* [st_count]: by the input's name order */
	jedit *config;
	outdir *od;
	st_writer *w;
	dens_summary *sum;
} dens_ctx;

/* ---- which tensors are factors ------------------------------------------------------------------------------- */

typedef struct {
	const st_tensor *t;
	size_t i;
} by_ptr;

static int cmp_ptr(const void *a, const void *b)
{
	const by_ptr *x = a, *y = b;
	return x->t < y->t ? -1 : x->t > y->t;
}

static size_t index_of(const by_ptr *map, size_t n, const st_tensor *t)
{
	by_ptr key = {.t = t};
	const by_ptr *hit = bsearch(&key, map, n, sizeof *map, cmp_ptr);
	return hit ? hit->i : (size_t)-1;
}

static const st_tensor *part_of(const dens_ctx *c, const char *base, int part)
{
	char name[640];
	snprintf(name, sizeof name, "%s%s", base, fac_suffix[part]);
	return st_find(c->st, name);
}

/* Checks the factors of item it against each other: u [m, r], v [r, n] of one float dtype, and the residual,
 * when there is one, idx I32 [nnz] with val [nnz] in that dtype. */
static ms_status check_parts(const dens_ctx *c, const dens_item *it, ms_error *err)
{
	const st_tensor *u = it->part[FAC_U], *v = it->part[FAC_V], *idx = it->part[FAC_SPARSE_IDX],
			*val = it->part[FAC_SPARSE_VAL];
	if (u->ndim != 2 || v->ndim != 2 || u->shape[1] != v->shape[0] || u->dtype != v->dtype ||
	    !st_dtype_is_float(u->dtype) || u->shape[0] < 1 || v->shape[1] < 1 || u->shape[0] > INT_MAX ||
	    v->shape[1] > INT_MAX || u->shape[1] > INT_MAX)
		return ms_fail(err, MS_ERR_MODEL_SHAPE, "%s: tensors '%s' and '%s' are not factors of one matrix (shapes "
			       "[m, r] and [r, n] of one float dtype)", u->path, u->name, v->name);
	if ((idx == NULL) != (val == NULL))
		return ms_fail(err, MS_ERR_MODEL_TENSOR, "%s: matrix '%s' has only one of %s_sparse_idx and "
			       "%s_sparse_val", u->path, it->name, it->name, it->name);
	if (idx && (idx->ndim != 1 || val->ndim != 1 || idx->dtype != ST_I32 || val->dtype != u->dtype ||
		    idx->shape[0] != val->shape[0]))
		return ms_fail(err, MS_ERR_MODEL_SHAPE, "%s: the residual of '%s' must be %s_sparse_idx I32 [nnz] and "
			       "%s_sparse_val [nnz] in the factors' dtype", u->path, it->name, it->name, it->name);
	if (st_find(c->st, it->name))
		return ms_fail(err, MS_ERR_ST_DUPLICATE, "%s: both '%s' and its factors are stored", u->path, it->name);
	return MS_OK;
}

static ms_status classify(dens_ctx *c, ms_error *err)
{
	const size_t n = st_count(c->st);
	by_ptr *map = malloc((n ? n : 1) * sizeof *map);
	c->items = calloc(n ? n : 1, sizeof *c->items);
	if (!map || !c->items) {
		free(map);
		return ms_fail(err, MS_ERR_NOMEM, "out of memory");
	}
	for (size_t i = 0; i < n; i++)
		map[i] = (by_ptr){.t = st_get(c->st, i), .i = i};
	qsort(map, n, sizeof *map, cmp_ptr);
	ms_status st = MS_OK;
	const size_t ul = strlen(fac_suffix[FAC_U]);
	for (size_t i = 0; st == MS_OK && i < n; i++) {
		const st_tensor *t = st_get(c->st, i);
		const size_t len = strlen(t->name);
		dens_item *it = &c->items[i];
		if (len <= ul || strcmp(t->name + len - ul, fac_suffix[FAC_U]) != 0 || len - ul >= sizeof it->name)
			continue;
		memcpy(it->name, t->name, len - ul);
		it->name[len - ul] = '\0';
		for (int p = 0; p < FAC_NPARTS; p++)
			it->part[p] = part_of(c, it->name, p);
		if (!it->part[FAC_V])   /* a tensor whose name merely ends in _u */
			continue;
		it->kind = DENS_REBUILD;
		st = check_parts(c, it, err);
		for (int p = FAC_V; st == MS_OK && p < FAC_NPARTS; p++)
			if (it->part[p])
				c->items[index_of(map, n, it->part[p])].kind = DENS_PART;
	}
	free(map);
	return st;
}

/* ---- writing ------------------------------------------------------------------------------------------------- */

static ms_status declare_all(dens_ctx *c, ms_error *err)
{
	ms_status st = MS_OK;
	for (size_t i = 0; st == MS_OK && i < st_count(c->st); i++) {
		const st_tensor *t = st_get(c->st, i);
		const dens_item *it = &c->items[i];
		if (it->kind == DENS_COPY) {
			st = st_writer_declare(c->w, t->name, t->dtype, t->ndim, t->shape, err);
		} else if (it->kind == DENS_REBUILD) {
			const int64_t shape[2] = {t->shape[0], it->part[FAC_V]->shape[1]};
			st = st_writer_declare(c->w, it->name, t->dtype, 2, shape, err);
		}
	}
	return st;
}

static ms_status interrupted(const dens_ctx *c, ms_error *err)
{
	if (c->req->cancel && atomic_load(c->req->cancel))
		return ms_fail(err, MS_ERR_INTERRUPTED, "%s: densify interrupted; nothing was written", c->req->out_dir);
	return MS_OK;
}

static ms_status copy_tensor(dens_ctx *c, const st_tensor *t, ms_error *err)
{
	ms_status st = MS_OK;
	for (uint64_t off = 0; st == MS_OK && off < t->nbytes; off += COPY_CHUNK) {
		const uint64_t n = t->nbytes - off < COPY_CHUNK ? t->nbytes - off : COPY_CHUNK;
		st = interrupted(c, err);
		if (st == MS_OK)
			st = st_writer_write(c->w, (const unsigned char *)t->data + off, n, err);
	}
	return st;
}

/* w [n] must stay finite once rounded to dtype (a product past the BF16 or F16 range would not). */
static ms_status check_finite(const float *w, int64_t n, int64_t cols, st_dtype dtype, const char *name,
			      ms_error *err)
{
	for (int64_t i = 0; i < n; i++) {
		const float x = dtype == ST_F16 ? st_f16_to_f32(st_f32_to_f16(w[i]))
				: dtype == ST_BF16 ? st_bf16_to_f32(st_f32_to_bf16(w[i])) : w[i];
		if (!isfinite(x))
			return ms_fail(err, MS_ERR_NONFINITE, "tensor '%s': row %lld: the rebuilt value is NaN or infinity "
				       "as %s; nothing was written", name, (long long)(i / cols), st_dtype_name(dtype));
	}
	return MS_OK;
}

/* NAME = NAME_u @ NAME_v plus the residual, in NAME_u's dtype. */
static ms_status rebuild(dens_ctx *c, const dens_item *it, ms_error *err)
{
	const st_tensor *u = it->part[FAC_U], *v = it->part[FAC_V], *idx = it->part[FAC_SPARSE_IDX],
			*val = it->part[FAC_SPARSE_VAL];
	const int m = (int)u->shape[0], r = (int)u->shape[1], n = (int)v->shape[1];
	const int64_t nnz = idx ? idx->shape[0] : 0;
	float *uf = malloc(((size_t)m * r + 1) * sizeof *uf), *vf = malloc(((size_t)r * n + 1) * sizeof *vf);
	float *w = malloc((size_t)m * n * sizeof *w), *vals = malloc(((size_t)nnz + 1) * sizeof *vals);
	int32_t *ids = malloc(((size_t)nnz + 1) * sizeof *ids);
	ms_status st = uf && vf && w && vals && ids ? MS_OK
			: ms_fail(err, MS_ERR_NOMEM, "out of memory rebuilding '%s' [%d, %d]", it->name, m, n);
	if (st == MS_OK && r > 0)
		st = st_read_f32(u, uf, err);
	if (st == MS_OK && r > 0)
		st = st_read_f32(v, vf, err);
	if (st == MS_OK && nnz > 0) {
		memcpy(ids, idx->data, (size_t)nnz * sizeof *ids);   /* I32, little-endian as stored */
		st = st_read_f32(val, vals, err);
	}
	if (st == MS_OK) {
		st = cmp_expand(uf, vf, m, r, n, ids, vals, nnz, w, err);
		if (st != MS_OK)
			ms_error_prefix(err, idx ? idx->name : it->name);
	}
	if (st == MS_OK)
		st = check_finite(w, (int64_t)m * n, n, u->dtype, it->name, err);
	if (st == MS_OK)
		st = st_writer_write_f32(c->w, w, (uint64_t)m * (uint64_t)n, err);
	free(uf);
	free(vf);
	free(w);
	free(vals);
	free(ids);
	return st;
}

static ms_status write_all(dens_ctx *c, ms_error *err)
{
	ms_status st = MS_OK;
	for (size_t i = 0; st == MS_OK && i < st_count(c->st); i++) {
		const dens_item *it = &c->items[i];
		if (it->kind == DENS_COPY)
			st = copy_tensor(c, st_get(c->st, i), err);
		else if (it->kind == DENS_REBUILD && (st = interrupted(c, err)) == MS_OK) {
			st = rebuild(c, it, err);
			c->sum->matrices++;
		}
	}
	return st;
}

/* Everything beside the weights and config.json (tokenizer, generation config, the merge's plan and report),
 * copied as it is. */
static ms_status read_config(dens_ctx *c, ms_error *err)
{
	char path[PATH_MAX], *text = NULL;
	size_t len = 0;
	if (snprintf(path, sizeof path, "%s/config.json", c->req->in_dir) >= (int)sizeof path)
		return ms_fail(err, MS_ERR_ARG, "%s: path too long", c->req->in_dir);
	ms_status st = file_read_all(path, &text, &len, err);
	if (st == MS_OK && len > FAC_CONFIG_LIMIT)
		st = ms_fail(err, MS_ERR_CFG_JSON, "%s: %zu bytes, over the %u MiB limit for a config", path, len,
			     FAC_CONFIG_LIMIT >> 20);
	if (st == MS_OK)
		st = jedit_parse(path, text, len, &c->config, err);
	free(text);
	if (st == MS_OK) {
		st = fac_unmark_config(c->config, err);
		if (st != MS_OK)
			ms_error_prefix(err, c->req->in_dir);
	}
	return st;
}

static ms_status write_config(dens_ctx *c, ms_error *err)
{
	char path[PATH_MAX];
	size_t len;
	if (outdir_file(c->od, "config.json", path, sizeof path) != 0)
		return ms_fail(err, MS_ERR_ARG, "output path too long");
	const char *text = jedit_text(c->config, &len);
	return jsonf_write_bytes(path, text, len, err);
}

/* The output must open as a stock model of the family. */
static ms_status validate(dens_ctx *c, ms_error *err)
{
	mdl_model *m;
	ms_status st = mdl_open(outdir_tmp_path(c->od), &m, err);
	if (st != MS_OK) {
		ms_error_prefix(err, "validating the densified checkpoint");
		return st;
	}
	snprintf(c->sum->model_type, sizeof c->sum->model_type, "%s", m->model_type);
	c->sum->bytes_after = m->bytes_total;
	mdl_close(m);
	return MS_OK;
}

static ms_status run(dens_ctx *c, ms_error *err)
{
	fac_info info;
	int probe = fac_probe(c->req->in_dir, &info, err);
	if (probe < 0)
		return MS_ERR_CFG_FIELD;
	if (probe == 0)
		return ms_fail(err, MS_ERR_ARG, "%s: not a factored checkpoint (config.json's model_type is not \"%s\")",
			       c->req->in_dir, MDL_FACTORS_MODEL_TYPE);
	ms_status st = read_config(c, err);
	if (st == MS_OK)
		st = st_open(c->req->in_dir, &c->st, err);
	for (size_t i = 0; st == MS_OK && i < st_count(c->st); i++)
		c->sum->bytes_before += st_get(c->st, i)->nbytes;
	if (st == MS_OK)
		st = classify(c, err);
	if (st == MS_OK)
		st = outdir_begin(c->req->out_dir, c->req->in_dir, c->req->force, &c->od, err);
	if (st == MS_OK)
		st = st_writer_create(outdir_tmp_path(c->od), "model", c->req->max_shard_bytes, &c->w, err);
	if (st == MS_OK)
		st = declare_all(c, err);
	if (st == MS_OK)
		st = write_all(c, err);
	if (st == MS_OK)
		st = st_writer_finish(c->w, err);
	if (st == MS_OK)
		st = write_config(c, err);
	if (st == MS_OK)
		st = outdir_copy_aux(c->od, c->req->in_dir, 0, err);
	if (st == MS_OK)
		st = validate(c, err);
	if (st == MS_OK)
		st = interrupted(c, err);
	return st;
}

ms_status dens_run(const dens_request *req, dens_summary *sum, ms_error *err)
{
	dens_summary local = {0};
	dens_ctx c = {.req = req, .sum = &local};
	ms_status st = run(&c, err);
	st_writer_free(c.w);
	if (c.od && st == MS_OK)
		st = outdir_commit(c.od, err);
	else if (c.od)
		outdir_abort(c.od);
	st_close(c.st);
	jedit_free(c.config);
	free(c.items);
	if (st == MS_OK && sum)
		*sum = local;
	return st;
}
