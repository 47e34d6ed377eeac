/* MXFP4 checkpoints (gpt-oss's released form) on the gptoss-mxfp4 sample, whose weights are gptoss-tiny's (same
 * seed) with the experts stored as openai/gpt-oss-20b stores them: gate_up_proj_blocks U8 [E, 2f, d / 32, 16] with
 * gate_up_proj_scales [E, 2f, d / 32], down_proj_blocks [E, d, f / 32, 16] with down_proj_scales [E, d, f / 32],
 * i.e. [out, in], the transpose of the BF16 [E, in, out].
 *
 * - the experts load as [out, in] float matrices that match the file's bytes decoded here by hand (an E2M1 table
 *   and 2^(scale - 127), indexed [e, row, group, byte]: independent of io/quant.c's reader);
 * - they match the BF16 twin within MXFP4's error, block by block: a 32-value block with largest magnitude A gets
 *   a power-of-two scale s with A / 6 <= s < A / 3 and every value moves by at most s (half the widest E2M1 step,
 *   2 s, between 4 s and 6 s), so |mxfp4 - bf16| <= A (1/3 + 2^-7) allowing for BF16's own rounding;
 * - the biases, stored BF16 in both, are equal;
 * - hostile forms: an mxfp4 config over BF16 experts and the reverse, a missing or misshapen _scales, a
 *   misshapen _blocks: each one error naming the file and the tensor. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "analysis/par.h"
#include "io/model.h"
#include "io/plan.h"
#include "io/quant.h"
#include "io/safetensors.h"
#include "pipeline/merge_run.h"
#include "pipeline/pipeline.h"
#include "samples/samples.h"
#include "tests/load_fixture.h"
#include "tests/test.h"

static char base[256];
static mdl_model *mx, *bf16;
static plan pairs;   /* experts merged in pairs, the even one dominant */

static void setup(void)
{
	ms_error err = {0};
	const char *tmp = getenv("TMPDIR");
	snprintf(base, sizeof base, "%s/moescope-mxfp4-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	CHECK(mkdtemp(base) != NULL);
	CHECK(samples_write(base, "gptoss-mxfp4", &err) == MS_OK, "%s", err.msg);
	CHECK(samples_write(base, "gptoss-tiny", &err) == MS_OK, "%s", err.msg);
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/gptoss-mxfp4", base);
	CHECK(mdl_open(path, &mx, &err) == MS_OK, "%s", err.msg);
	snprintf(path, sizeof path, "%s/gptoss-tiny", base);
	CHECK(mdl_open(path, &bf16, &err) == MS_OK, "%s", err.msg);
	if (!mx)
		return;
	const char **labels = mdl_block_labels(mx);
	CHECK(plan_init(&pairs, mx->n_blocks, mx->n_experts, labels) == 0);
	free(labels);
	for (int b = 0; b < mx->n_blocks; b++)
		for (int e = 0; e < mx->n_experts; e++) {
			pairs.group[b * mx->n_experts + e] = e / 2;
			pairs.dominant[b * mx->n_experts + e] = e % 2 == 0;
		}
}

static void test_opens_as_interleaved_mxfp4(void)
{
	if (!mx || !bf16)
		return;
	EXPECT(mx->quant.scheme == QT_MXFP4 && mx->layout == MDL_LAYOUT_INTERLEAVED && mx->expert_dtype == ST_U8);
	EXPECT(mx->n_blocks == bf16->n_blocks && mx->n_experts == bf16->n_experts && mx->expert_bias);
	const int64_t E = mx->n_experts, d = mx->hidden, f = mx->inter;
	for (int b = 0; b < mx->n_blocks; b++) {
		const mdl_block *blk = &mx->blocks[b];
		CHECK(blk->mx[MDL_FUSED_GATE_UP].rows == E * 2 * f && blk->mx[MDL_FUSED_GATE_UP].cols == d, "block %d", b);
		CHECK(blk->mx[MDL_FUSED_DOWN].rows == E * d && blk->mx[MDL_FUSED_DOWN].cols == f, "block %d", b);
		EXPECT(strstr(blk->fused[MDL_FUSED_GATE_UP]->name, "gate_up_proj_blocks") &&
		       strstr(blk->fused_scales[MDL_FUSED_DOWN]->name, "down_proj_scales"));
		EXPECT(blk->fused_bias[MDL_FUSED_GATE_UP] && blk->fused_bias[MDL_FUSED_DOWN]);
	}
	/* 4.25 bits a weight: half a byte plus a byte per 32 */
	EXPECT(mx->params_experts == bf16->params_experts && mx->params_total == bf16->params_total);
	EXPECT(mx->bytes_experts * 64 == bf16->bytes_experts * 17);
}

/* Element [o, i] of expert e of an [E, out, in / 32, 16] blocks tensor and its scales, decoded by hand. */
static float by_hand(const st_tensor *blocks, const st_tensor *scales, int64_t e, int64_t out, int64_t in, int64_t o,
		     int64_t i)
{
	static const float e2m1[16] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0.0f, -0.5f, -1, -1.5f, -2, -3, -4, -6};
	const int64_t G = in / 32, row = e * out + o;
	const unsigned char byte = ((const unsigned char *)blocks->data)[(row * G + i / 32) * 16 + (i % 32) / 2];
	const unsigned char code = i % 2 ? byte >> 4 : byte & 15;
	const int exp = ((const unsigned char *)scales->data)[row * G + i / 32];
	return ldexpf(e2m1[code], exp - 127);
}

static void test_experts_match_bytes_and_bf16_twin(void)
{
	if (!mx || !bf16)
		return;
	const int64_t d = mx->hidden, f = mx->inter;
	const size_t fd = (size_t)(f * d);
	float *a = malloc(3 * fd * sizeof *a), *b = malloc(3 * fd * sizeof *b);
	float *ab = malloc(2 * (size_t)(2 * f + d) * sizeof *ab);
	ms_error err = {0};
	int64_t hand_bad = 0, twin_bad = 0;
	double d2 = 0, n2 = 0, worst_block = 0;
	for (int blk = 0; blk < mx->n_blocks; blk++) {
		const mdl_block *k = &mx->blocks[blk];
		for (int e = 0; e < mx->n_experts; e++) {
			CHECK(mdl_load_expert(mx, blk, e, a, a + fd, a + 2 * fd, &err) == MS_OK, "%s", err.msg);
			CHECK(mdl_load_expert(bf16, blk, e, b, b + fd, b + 2 * fd, &err) == MS_OK, "%s", err.msg);
			/* the file's bytes: gate row i is stored row 2i, up row i row 2i + 1, down row r row r */
			for (int64_t i = 0; i < f; i++)
				for (int64_t j = 0; j < d; j++) {
					const st_tensor *gb = k->fused[MDL_FUSED_GATE_UP], *gs = k->fused_scales[MDL_FUSED_GATE_UP];
					hand_bad += a[i * d + j] != by_hand(gb, gs, e, 2 * f, d, 2 * i, j);
					hand_bad += a[fd + i * d + j] != by_hand(gb, gs, e, 2 * f, d, 2 * i + 1, j);
				}
			for (int64_t r = 0; r < d; r++)
				for (int64_t i = 0; i < f; i++)
					hand_bad += a[2 * fd + r * f + i] !=
						    by_hand(k->fused[MDL_FUSED_DOWN], k->fused_scales[MDL_FUSED_DOWN], e, d, f, r, i);
			/* the BF16 twin, block of 32 by block of 32 along each row's input axis */
			for (int m = 0; m < 3; m++) {
				const int64_t rows = m == 2 ? d : f, cols = m == 2 ? f : d;
				for (int64_t r = 0; r < rows; r++)
					for (int64_t g = 0; g < cols; g += 32) {
						const float *x = a + m * fd + r * cols + g, *y = b + m * fd + r * cols + g;
						double amax = 0, diff = 0;
						for (int q = 0; q < 32; q++) {
							amax = fmax(amax, fabs(y[q]));
							diff = fmax(diff, fabs((double)x[q] - y[q]));
							d2 += ((double)x[q] - y[q]) * ((double)x[q] - y[q]);
							n2 += (double)y[q] * y[q];
						}
						twin_bad += diff > amax * (1.0 / 3 + 1.0 / 128);
						if (amax > 0)
							worst_block = fmax(worst_block, diff / amax);
					}
			}
			/* biases: BF16 in both */
			CHECK(mdl_load_expert_bias(mx, blk, e, ab, ab + f, ab + 2 * f, &err) == MS_OK, "%s", err.msg);
			CHECK(mdl_load_expert_bias(bf16, blk, e, ab + 2 * f + d, ab + 3 * f + d, ab + 4 * f + d, &err) == MS_OK,
			      "%s", err.msg);
			EXPECT(memcmp(ab, ab + 2 * f + d, (size_t)(2 * f + d) * sizeof *ab) == 0);
		}
	}
	CHECK(hand_bad == 0, "%lld loaded values differ from the bytes decoded by hand", (long long)hand_bad);
	for (int blk = 0; blk < mx->n_blocks; blk++)
		check_block_load(mx, blk);
	CHECK(twin_bad == 0, "%lld blocks of 32 differ from the BF16 twin by more than a third of their largest value",
	      (long long)twin_bad);
	/* E2M1 keeps 1 mantissa bit: the copies differ by MXFP4's error (about 10 % in the mean square on these
	 * weights), not by nothing */
	const double rel = sqrt(d2 / n2);
	CHECK(rel > 0.03 && rel < 0.25, "relative difference %g", rel);
	printf("  MXFP4 against BF16 experts: relative difference %.4f, worst block %.4f of its largest value\n", rel,
	       worst_block);
	free(a);
	free(b);
	free(ab);
}

/* ---- merging ---- */

static ms_status merge_to(const char *name, int threads, mrun_request *req, ms_error *err)
{
	static char out[PATH_MAX];
	snprintf(out, sizeof out, "%s/%s", base, name);
	*req = mrun_request_defaults();
	req->out_dir = out;
	req->plan = &pairs;
	req->opts.router = RFIT_MEAN;
	par_set_threads(threads);
	ms_status st = mrun_run(mx, NULL, req, NULL, NULL, NULL, NULL, err);
	par_set_threads(1);
	return st;
}

/* A merge writes MXFP4 back: _blocks and _scales with E / 2 experts, the values the pipeline evaluated (its
 * rounding to MXFP4 and the writer's quantization agree exactly: power-of-two scales leave nothing to round),
 * quantization_config kept, every tensor outside the MoE blocks byte for byte, the re-quantization error in the
 * report. */
static void test_merge_writes_mxfp4(void)
{
	if (!mx)
		return;
	mrun_request req;
	ms_error err = {0};
	CHECK(merge_to("merged", 1, &req, &err) == MS_OK, "%s", err.msg);
	mdl_model *mo = NULL;
	CHECK(mdl_open(req.out_dir, &mo, &err) == MS_OK, "%s", err.msg);
	if (!mo)
		return;
	const cJSON *qi = cJSON_GetObjectItem(mdl_config_json(mx), "quantization_config");
	const cJSON *qo = cJSON_GetObjectItem(mdl_config_json(mo), "quantization_config");
	EXPECT(qi && qo && cJSON_Compare(qi, qo, 1));
	EXPECT(mo->quant.scheme == QT_MXFP4 && mo->expert_dtype == ST_U8 && mo->n_experts == mx->n_experts / 2);
	EXPECT(mo->blocks[0].fused[MDL_FUSED_GATE_UP]->shape[0] == mo->n_experts &&
	       mo->blocks[0].fused_scales[MDL_FUSED_DOWN]->shape[0] == mo->n_experts);
	int copied = 0;
	for (size_t i = 0; i < st_count(mx->st); i++) {
		const st_tensor *t = st_get(mx->st, i), *u = st_find(mo->st, t->name);
		if (strstr(t->name, ".mlp."))
			continue;
		CHECK(u && u->dtype == t->dtype && u->nbytes == t->nbytes && memcmp(u->data, t->data, t->nbytes) == 0,
		      "%s changed", t->name);
		copied++;
	}
	EXPECT(copied > 4 * mx->n_blocks);
	const int64_t d = mx->hidden, f = mx->inter;
	const size_t fd = (size_t)(f * d);
	float *w = malloc((3 * fd + 2 * (size_t)f + (size_t)d) * sizeof *w);
	int64_t differ = 0;
	for (int b = 0; b < mx->n_blocks; b++) {
		pipe_block blk;
		pipe_merged mg;
		CHECK(pipe_load_block(mx, NULL, b, &blk, &err) == MS_OK, "%s", err.msg);
		CHECK(pipe_merge_block(&blk, &pairs, b, &req.opts, &mg, &err) == MS_OK, "%s", err.msg);
		for (int s = 0; err.code == MS_OK && s < mg.n_slots; s++) {
			CHECK(mdl_load_expert(mo, b, s, w, w + fd, w + 2 * fd, &err) == MS_OK, "%s", err.msg);
			CHECK(mdl_load_expert_bias(mo, b, s, w + 3 * fd, w + 3 * fd + f, w + 3 * fd + 2 * f, &err) == MS_OK, "%s",
			      err.msg);
			const expert_weights *x = &mg.experts[s];
			const float *mats[6] = {x->gate, x->up, x->down, x->gate_bias, x->up_bias, x->down_bias};
			const size_t off[6] = {0, fd, 2 * fd, 3 * fd, 3 * fd + f, 3 * fd + 2 * f};
			const size_t len[6] = {fd, fd, fd, (size_t)f, (size_t)f, (size_t)d};
			for (int k = 0; k < 6; k++)
				for (size_t i = 0; i < len[k]; i++)
					differ += w[off[k] + i] != mats[k][i];
		}
		qt_error all = {0};
		for (int k = 0; k < MDL_NMAT; k++)
			qt_error_add(&all, &mg.requant[k]);
		const double rel = qt_error_rel(&all);
		/* the merge moved values off the grid: rounding back costs MXFP4's error (about 10 % on these weights,
		 * see the BF16 comparison), and no 32-value block by more than a third of its largest value */
		CHECK(rel > 0.01 && rel < 0.25 && all.max_block_rel >= rel && all.max_block_rel < 1.0 / 3,
		      "block %d: requantization error %g, worst block %g", b, rel, all.max_block_rel);
		printf("  block %d: requantization error %.4f, worst block %.4f\n", b, rel, all.max_block_rel);
		pipe_free_merged(&mg);
		pipe_free_block(&blk);
	}
	CHECK(differ == 0, "%lld written values differ from the merged ones", (long long)differ);
	free(w);
	char path[PATH_MAX + 32];
	snprintf(path, sizeof path, "%s/moescope_report.json", req.out_dir);
	FILE *fp = fopen(path, "rb");
	char *text = calloc(1, 1 << 20);
	size_t n = fp ? fread(text, 1, (1 << 20) - 1, fp) : 0;
	if (fp)
		fclose(fp);
	cJSON *rep = cJSON_ParseWithLength(text, n);
	const cJSON *blocks = cJSON_GetObjectItem(rep, "blocks"), *jb;
	EXPECT(cJSON_GetArraySize(blocks) == mx->n_blocks);
	cJSON_ArrayForEach(jb, blocks) {
		const cJSON *q = cJSON_GetObjectItem(jb, "requantization");
		const double rel = cJSON_GetNumberValue(cJSON_GetObjectItem(q, "rel_error"));
		CHECK(q && rel > 0.01 && rel < 0.25, "report: %g", rel);
		EXPECT(q && strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(q, "scheme")), "mxfp4") == 0);
	}
	cJSON_Delete(rep);
	free(text);
	mdl_close(mo);
}

static void test_merge_same_bytes_1_and_3_threads(void)
{
	if (!mx)
		return;
	mrun_request req;
	ms_error err = {0};
	CHECK(merge_to("merged-t1", 1, &req, &err) == MS_OK, "%s", err.msg);
	CHECK(merge_to("merged-t3", 3, &req, &err) == MS_OK, "%s", err.msg);
	char cmd[3 * PATH_MAX];
	snprintf(cmd, sizeof cmd, "cmp -s '%s/merged-t1/model.safetensors' '%s/merged-t3/model.safetensors'", base, base);
	CHECK(system(cmd) == 0, "the merges with 1 and 3 threads differ");
}

/* ---- hostile forms ---- */

static int run(const char *cmd)
{
	return system(cmd) == 0;
}

/* A copy of sample `from` as DIR/name, then `edit` run in it (a shell command); returns the open error. */
static ms_status open_edited(const char *from, const char *name, const char *edit, ms_error *err)
{
	char cmd[6 * PATH_MAX];
	snprintf(cmd, sizeof cmd, "rm -rf '%s/%s' && cp -r '%s/%s' '%s/%s' && cd '%s/%s' && %s", base, name, base, from,
		 base, name, base, name, edit);
	CHECK(run(cmd), "%s", cmd);
	snprintf(cmd, sizeof cmd, "%s/%s", base, name);
	mdl_model *m = NULL;
	ms_status st = mdl_open(cmd, &m, err);
	mdl_close(m);
	return st;
}

/* Rewrites model.safetensors through st_writer: tensor `drop` left out, tensor `reshape` given shape `shape`
 * (its bytes cut or zero-padded to fit). */
static ms_status rewrite(const char *dir, const char *drop, const char *reshape, int ndim, const int64_t *shape,
			 ms_error *err)
{
	st_file *in = NULL;
	char src[PATH_MAX];
	snprintf(src, sizeof src, "%s/%s", base, dir);
	ms_status st = st_open(src, &in, err);
	if (st != MS_OK)
		return st;
	char out[PATH_MAX + 8];
	snprintf(out, sizeof out, "%s.new", src);
	char cmd[6 * PATH_MAX];
	snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir '%s' && cp '%s/config.json' '%s/'", out, out, src, out);
	CHECK(run(cmd), "%s", cmd);
	st_writer *w = NULL;
	st = st_writer_create(out, "model", UINT64_MAX / 4, &w, err);
	uint64_t size[4096] = {0};
	for (size_t i = 0; st == MS_OK && i < st_count(in) && i < 4096; i++) {
		const st_tensor *t = st_get(in, i);
		if (strcmp(t->name, drop) == 0)
			continue;
		const int re = strcmp(t->name, reshape) == 0;
		int64_t n = 1;
		for (int k = 0; re && k < ndim; k++)
			n *= shape[k];
		size[i] = re ? (uint64_t)n * st_dtype_size(t->dtype) : t->nbytes;
		st = st_writer_declare(w, t->name, t->dtype, re ? ndim : t->ndim, re ? shape : t->shape, err);
	}
	for (size_t i = 0; st == MS_OK && i < st_count(in) && i < 4096; i++) {
		const st_tensor *t = st_get(in, i);
		if (strcmp(t->name, drop) == 0)
			continue;
		unsigned char *buf = calloc(1, size[i] ? size[i] : 1);
		memcpy(buf, t->data, size[i] < t->nbytes ? size[i] : t->nbytes);
		st = st_writer_write(w, buf, size[i], err);
		free(buf);
	}
	if (st == MS_OK)
		st = st_writer_finish(w, err);
	st_writer_free(w);
	st_close(in);
	snprintf(cmd, sizeof cmd, "rm -rf '%s' && mv '%s' '%s'", src, out, src);
	CHECK(run(cmd), "%s", cmd);
	return st;
}

static void expect_open_error(const char *dir, const char *want1, const char *want2)
{
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/%s", base, dir);
	mdl_model *m = NULL;
	ms_error err = {0};
	ms_status st = mdl_open(path, &m, &err);
	mdl_close(m);
	CHECK(st != MS_OK && strstr(err.msg, want1) && strstr(err.msg, want2) && !strchr(err.msg, '\n'),
	      "%s: status %d: %s", dir, st, err.msg);
}

static void test_hostile(void)
{
	if (!mx || !bf16)
		return;
	ms_error err = {0};
	const char *L0 = "model.layers.0.mlp.experts.";
	/* an mxfp4 config over BF16 experts */
	ms_status st = open_edited("gptoss-tiny", "says-mxfp4",
				   "sed -i 's/^{/{\"quantization_config\": {\"quant_method\": \"mxfp4\"},/' config.json", &err);
	CHECK(st != MS_OK && strstr(err.msg, "gate_up_proj") && strstr(err.msg, "mxfp4") && strstr(err.msg, "BF16"),
	      "%s", err.msg);
	/* MXFP4 experts under a config without quantization_config */
	st = open_edited("gptoss-mxfp4", "says-nothing",
			 "python3 -c 'import json; c = json.load(open(\"config.json\")); del c[\"quantization_config\"]; "
			 "json.dump(c, open(\"config.json\", \"w\"))'",
			 &err);
	CHECK(st != MS_OK && strstr(err.msg, "gate_up_proj_blocks") && strstr(err.msg, "quant_method") &&
	      strstr(err.msg, "model.safetensors"), "%s", err.msg);
	/* a missing _scales, a _scales of the wrong shape, a _blocks of the wrong shape */
	char name[256], drop[256];
	const int64_t E = mx->n_experts, d = mx->hidden, f = mx->inter;
	snprintf(drop, sizeof drop, "%sdown_proj_scales", L0);
	CHECK(open_edited("gptoss-mxfp4", "no-scales", "true", &err) == MS_OK, "%s", err.msg);
	CHECK(rewrite("no-scales", drop, "", 0, NULL, &err) == MS_OK, "%s", err.msg);
	expect_open_error("no-scales", drop, "missing");
	snprintf(name, sizeof name, "%sgate_up_proj_scales", L0);
	const int64_t short_scales[3] = {E, 2 * f, d / 32 - 1};
	CHECK(open_edited("gptoss-mxfp4", "bad-scales", "true", &err) == MS_OK, "%s", err.msg);
	CHECK(rewrite("bad-scales", "", name, 3, short_scales, &err) == MS_OK, "%s", err.msg);
	expect_open_error("bad-scales", name, "shape");
	snprintf(name, sizeof name, "%sdown_proj_blocks", L0);
	const int64_t flat[3] = {E, d, f / 2};   /* the bytes without the [G, 16] split */
	CHECK(open_edited("gptoss-mxfp4", "bad-blocks", "true", &err) == MS_OK, "%s", err.msg);
	CHECK(rewrite("bad-blocks", "", name, 3, flat, &err) == MS_OK, "%s", err.msg);
	expect_open_error("bad-blocks", name, "shape");
}

int main(void)
{
	setup();
	RUN(test_opens_as_interleaved_mxfp4);
	RUN(test_experts_match_bytes_and_bf16_twin);
	RUN(test_merge_writes_mxfp4);
	RUN(test_merge_same_bytes_1_and_3_threads);
	RUN(test_hostile);
	plan_free(&pairs);
	mdl_close(mx);
	mdl_close(bf16);
	char cmd[PATH_MAX];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", base);
	return test_summary();
}
