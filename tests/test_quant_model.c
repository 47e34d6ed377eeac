/* FP8 checkpoints end to end on the mixtral-fp8 sample, whose weights are mixtral-tiny's (same seed) quantized
 * into 64 x 32 blocks: its experts read back within FP8's error of mixtral-tiny's BF16 ones; a merge writes the
 * merged experts back as FP8 blocks that read back as the values the pipeline evaluated, copies every other tensor
 * byte for byte, keeps quantization_config, and reports a re-quantization error that FP8 can have. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "io/model.h"
#include "io/plan.h"
#include "io/quant.h"
#include "pipeline/merge_run.h"
#include "pipeline/pipeline.h"
#include "samples/samples.h"
#include "tests/test.h"

static char base[256];
static mdl_model *fp8, *bf16, *fp8_bf16_scales;
static plan pairs;   /* experts merged in pairs, the even one dominant */

/* The FP8 sample with its scales stored BF16, as Qwen's FP8 checkpoints store them: a checkpoint of its own (the
 * scales rounded to BF16 define its values). */
static ms_status copy_with_bf16_scales(const mdl_model *m, const char *dir, ms_error *err)
{
	char cmd[3 * PATH_MAX + 64];
	snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp '%s/config.json' '%s/'", dir, m->dir, dir);
	if (system(cmd) != 0)
		return ms_fail(err, MS_ERR_IO, "%s: cannot copy config.json", dir);
	st_writer *w = NULL;
	ms_status st = st_writer_create(dir, "model", UINT64_MAX / 4, &w, err);
	for (size_t i = 0; st == MS_OK && i < st_count(m->st); i++) {
		const st_tensor *t = st_get(m->st, i);
		st = st_writer_declare(w, t->name, strstr(t->name, "_scale_inv") ? ST_BF16 : t->dtype, t->ndim, t->shape,
				       err);
	}
	for (size_t i = 0; st == MS_OK && i < st_count(m->st); i++) {
		const st_tensor *t = st_get(m->st, i);
		if (!strstr(t->name, "_scale_inv")) {
			st = st_writer_write(w, t->data, t->nbytes, err);
			continue;
		}
		float *x = malloc(t->numel * sizeof *x);
		st = x ? st_read_f32(t, x, err) : ms_fail(err, MS_ERR_NOMEM, "out of memory");
		if (st == MS_OK)
			st = st_writer_write_f32(w, x, t->numel, err);
		free(x);
	}
	if (st == MS_OK)
		st = st_writer_finish(w, err);
	st_writer_free(w);
	return st;
}

static void setup(void)
{
	ms_error err = {0};
	const char *tmp = getenv("TMPDIR");
	snprintf(base, sizeof base, "%s/moescope-quant-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	CHECK(mkdtemp(base) != NULL);
	CHECK(samples_write(base, "mixtral-fp8", &err) == MS_OK, "%s", err.msg);
	CHECK(samples_write(base, "mixtral-tiny", &err) == MS_OK, "%s", err.msg);
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/mixtral-fp8", base);
	CHECK(mdl_open(path, &fp8, &err) == MS_OK, "%s", err.msg);
	snprintf(path, sizeof path, "%s/mixtral-tiny", base);
	CHECK(mdl_open(path, &bf16, &err) == MS_OK, "%s", err.msg);
	if (!fp8)
		return;
	snprintf(path, sizeof path, "%s/bf16-scales", base);
	CHECK(copy_with_bf16_scales(fp8, path, &err) == MS_OK, "%s", err.msg);
	CHECK(mdl_open(path, &fp8_bf16_scales, &err) == MS_OK, "%s", err.msg);
	const char **labels = mdl_block_labels(fp8);
	CHECK(plan_init(&pairs, fp8->n_blocks, fp8->n_experts, labels) == 0);
	free(labels);
	for (int b = 0; b < fp8->n_blocks; b++)
		for (int e = 0; e < fp8->n_experts; e++) {
			pairs.group[b * fp8->n_experts + e] = e / 2;
			pairs.dominant[b * fp8->n_experts + e] = e % 2 == 0;
		}
}

static double rel_diff(const float *a, const float *b, size_t n)
{
	double d2 = 0, n2 = 0;
	for (size_t i = 0; i < n; i++) {
		d2 += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
		n2 += (double)b[i] * b[i];
	}
	return n2 > 0 ? sqrt(d2 / n2) : 0;
}

static void test_sample_reads_as_bf16_within_fp8_error(void)
{
	if (!fp8 || !bf16)
		return;
	EXPECT(fp8->quant.scheme == QT_FP8 && fp8->quant.block[0] == 64 && fp8->quant.block[1] == 32);
	EXPECT(fp8->expert_dtype == ST_F8_E4M3 && bf16->expert_dtype == ST_BF16);
	const size_t fd = (size_t)fp8->inter * fp8->hidden;
	float *a = malloc(3 * fd * sizeof *a), *b = malloc(3 * fd * sizeof *b);
	double worst = 0, least = 1;
	ms_error err = {0};
	for (int blk = 0; blk < fp8->n_blocks; blk++)
		for (int e = 0; e < fp8->n_experts; e++) {
			CHECK(mdl_load_expert(fp8, blk, e, a, a + fd, a + 2 * fd, &err) == MS_OK, "%s", err.msg);
			CHECK(mdl_load_expert(bf16, blk, e, b, b + fd, b + 2 * fd, &err) == MS_OK, "%s", err.msg);
			EXPECT(fp8->blocks[blk].scales[e * MDL_NMAT + MDL_DOWN] != NULL);
			for (int m = 0; m < 3; m++) {
				double r = rel_diff(a + m * fd, b + m * fd, fd);
				worst = fmax(worst, r);
				least = fmin(least, r);
			}
		}
	/* E4M3 keeps 3 mantissa bits (a value moves by at most 1/16 of itself, about 2 % in the mean square), BF16
	 * 8: the two copies of the same floats differ by FP8's error, not more and not less */
	CHECK(worst < 0.04 && least > 0.005, "relative differences from %g to %g", least, worst);
	printf("  FP8 against BF16 experts: relative difference %.4f to %.4f per matrix\n", least, worst);
	free(a);
	free(b);
}

static const st_tensor *find(const mdl_model *m, const char *name)
{
	return st_find(m->st, name);
}

static void merge_writes_fp8_blocks(mdl_model *m, const char *name, st_dtype scale_dtype)
{
	if (!m)
		return;
	char out[PATH_MAX];
	snprintf(out, sizeof out, "%s/merged-%s", base, name);
	mrun_request req = mrun_request_defaults();
	req.out_dir = out;
	req.plan = &pairs;
	req.opts.router = RFIT_MEAN;
	ms_error err = {0};
	CHECK(mrun_run(m, NULL, &req, NULL, NULL, NULL, NULL, &err) == MS_OK, "%s", err.msg);
	mdl_model *mo = NULL;
	CHECK(mdl_open(out, &mo, &err) == MS_OK, "%s", err.msg);
	if (!mo)
		return;
	/* quantization_config as it was */
	const cJSON *qi = cJSON_GetObjectItem(mdl_config_json(m), "quantization_config");
	const cJSON *qo = cJSON_GetObjectItem(mdl_config_json(mo), "quantization_config");
	EXPECT(qi && qo && cJSON_Compare(qi, qo, 1));
	EXPECT(mo->quant.scheme == QT_FP8 && mo->expert_dtype == ST_F8_E4M3 && mo->n_experts == 4);
	for (int b = 0; b < mo->n_blocks; b++)
		for (int i = 0; i < mo->n_experts * MDL_NMAT; i++)
			CHECK(mo->blocks[b].scales[i] && mo->blocks[b].scales[i]->dtype == scale_dtype, "block %d matrix %d", b,
			      i);
	/* every tensor outside the MoE blocks byte for byte: attention weights in FP8, their scales, norms */
	int copied = 0;
	for (size_t i = 0; i < st_count(m->st); i++) {
		const st_tensor *t = st_get(m->st, i), *u = find(mo, t->name);
		if (strstr(t->name, "block_sparse_moe"))
			continue;
		CHECK(u && u->dtype == t->dtype && u->nbytes == t->nbytes && memcmp(u->data, t->data, t->nbytes) == 0,
		      "%s changed", t->name);
		copied += t->dtype == ST_F8_E4M3;
	}
	EXPECT(copied == 4 * m->n_blocks);   /* q, k, v, o of every layer */
	/* the merged experts read back as the values the pipeline merged and evaluated (to the rounding of the
	 * recomputed scale, a few parts in 10^7) */
	const size_t fd = (size_t)m->inter * m->hidden;
	float *w = malloc(3 * fd * sizeof *w);
	double worst = 0;
	for (int b = 0; b < m->n_blocks; b++) {
		pipe_block blk;
		pipe_merged mg;
		CHECK(pipe_load_block(m, NULL, b, &blk, &err) == MS_OK, "%s", err.msg);
		CHECK(pipe_merge_block(&blk, &pairs, b, &req.opts, &mg, &err) == MS_OK, "%s", err.msg);
		for (int s = 0; err.code == MS_OK && s < mg.n_slots; s++) {
			CHECK(mdl_load_expert(mo, b, s, w, w + fd, w + 2 * fd, &err) == MS_OK, "%s", err.msg);
			const float *mats[3] = {mg.experts[s].gate, mg.experts[s].up, mg.experts[s].down};
			for (int k = 0; k < 3; k++)
				for (size_t i = 0; i < fd; i++)
					worst = fmax(worst, fabs((double)w[k * fd + i] - mats[k][i]) / fmax(fabs(mats[k][i]), 1e-30));
		}
		/* the merge moved the FP8 grid: rounding back to it costs FP8's error, no more */
		double rel = 0;
		qt_error all = {0};
		for (int k = 0; k < MDL_NMAT; k++)
			qt_error_add(&all, &mg.requant[k]);
		rel = qt_error_rel(&all);
		CHECK(rel > 0.002 && rel < 0.04 && all.max_block_rel >= rel && all.max_block_rel < 0.0625,
		      "block %d: requantization error %g, worst block %g", b, rel, all.max_block_rel);
		printf("  %s: block %d: requantization error %.4f, worst block %.4f\n", name, b, rel, all.max_block_rel);
		pipe_free_merged(&mg);
		pipe_free_block(&blk);
	}
	CHECK(worst < 1e-6, "a written value differs from the merged one by %g of itself", worst);
	printf("  %s: written values within %.2g of the merged ones\n", name, worst);
	free(w);
	/* the report says the same per block */
	char path[PATH_MAX + 32];
	snprintf(path, sizeof path, "%s/moescope_report.json", out);
	FILE *f = fopen(path, "rb");
	char *text = calloc(1, 1 << 20);
	size_t n = f ? fread(text, 1, (1 << 20) - 1, f) : 0;
	if (f)
		fclose(f);
	cJSON *rep = cJSON_ParseWithLength(text, n);
	const cJSON *blocks = cJSON_GetObjectItem(rep, "blocks");
	EXPECT(cJSON_GetArraySize(blocks) == m->n_blocks);
	const cJSON *jb;
	cJSON_ArrayForEach(jb, blocks) {
		const cJSON *q = cJSON_GetObjectItem(jb, "requantization");
		double rel = cJSON_GetNumberValue(cJSON_GetObjectItem(q, "rel_error"));
		double mx = cJSON_GetNumberValue(cJSON_GetObjectItem(q, "max_block_rel_error"));
		CHECK(q && rel > 0.002 && rel < 0.04 && mx >= rel && mx < 0.0625, "report: %g, %g", rel, mx);
		EXPECT(strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(q, "scheme")), "fp8") == 0);
	}
	cJSON_Delete(rep);
	free(text);
	mdl_close(mo);
}

static void test_merge_writes_fp8_blocks(void)
{
	merge_writes_fp8_blocks(fp8, "f32-scales", ST_F32);
}

static void test_merge_keeps_bf16_scales(void)
{
	merge_writes_fp8_blocks(fp8_bf16_scales, "bf16-scales", ST_BF16);
}

static void test_factors_refused(void)
{
	if (!fp8)
		return;
	char out[PATH_MAX];
	snprintf(out, sizeof out, "%s/factored", base);
	mrun_request req = mrun_request_defaults();
	req.out_dir = out;
	req.plan = &pairs;
	req.opts.router = RFIT_MEAN;
	req.format = MRUN_FORMAT_FACTORS;
	req.opts.compress.mode = CMP_RANK_FIXED;
	req.opts.compress.rank = 4;
	ms_error err = {0};
	CHECK(mrun_run(fp8, NULL, &req, NULL, NULL, NULL, NULL, &err) == MS_ERR_ARG && strstr(err.msg, "FP8"), "%s",
	      err.msg);
}

int main(void)
{
	setup();
	RUN(test_sample_reads_as_bf16_within_fp8_error);
	RUN(test_merge_writes_fp8_blocks);
	RUN(test_merge_keeps_bf16_scales);
	RUN(test_factors_refused);
	mdl_close(fp8);
	mdl_close(bf16);
	mdl_close(fp8_bf16_scales);
	plan_free(&pairs);
	char cmd[PATH_MAX];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", base);
	return test_summary();
}
