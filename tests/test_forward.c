/* The forward pass against an independent computation: tests/forward/reference.py (numpy, float64, written from
 * the transformers modeling files) ran on the bundled samples with tests/data/forward/tokens.txt and wrote
 * tests/data/forward/<sample>.json. The C forward must give every per-token NLL within 1e-4 (relative, or
 * absolute below 1), each kept logit row and each kept row of a block's input within 1e-4 of that row's largest
 * magnitude, the input sums within 1e-4 relative, and exactly the reference's expert selection for every token
 * of every block. Then the whole forward, with a merged stream beside the original, is bit-identical on 1, 2 and
 * 3 threads. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "analysis/par.h"
#include "pipeline/forward.h"
#include "samples/samples.h"
#include "tests/test.h"

#define TOKENS "tests/data/forward/tokens.txt"
#define TOL 1e-4

static char dir[256];

static cJSON *read_json(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *buf = malloc((size_t)n + 1);
	size_t got = buf ? fread(buf, 1, (size_t)n, f) : 0;
	fclose(f);
	if (!buf)
		return NULL;
	buf[got] = '\0';
	cJSON *j = cJSON_Parse(buf);
	free(buf);
	return j;
}

/* Every MoE block's input as the forward handed it over. */
typedef struct {
	int n_blocks, d;
	float **x;       /* [n_blocks][T, d] */
	int64_t T;
} kept_inputs;

static ms_status keep_block(void *ctx, int b, const float *x, int64_t T, ms_error *err)
{
	(void)err;
	kept_inputs *k = ctx;
	k->T = T;
	k->x[b] = malloc((size_t)(T * k->d) * sizeof(float));
	if (!k->x[b])
		return MS_ERR_NOMEM;
	memcpy(k->x[b], x, (size_t)(T * k->d) * sizeof(float));
	return MS_OK;
}

static void free_kept(kept_inputs *k)
{
	for (int b = 0; b < k->n_blocks; b++)
		free(k->x[b]);
	free(k->x);
}

static double row_scale(const cJSON *row)
{
	double m = 0.0;
	const cJSON *v;
	cJSON_ArrayForEach(v, row) m = fmax(m, fabs(v->valuedouble));
	return m > 0 ? m : 1.0;
}

/* |c - r| <= TOL * max |r| over the row, for every element. */
static int close_row(const float *c, const cJSON *row, int n, double *worst)
{
	const double scale = row_scale(row);
	int ok = cJSON_GetArraySize(row) == n;
	for (int i = 0; ok && i < n; i++) {
		const double diff = fabs(c[i] - cJSON_GetArrayItem(row, i)->valuedouble) / scale;
		*worst = fmax(*worst, diff);
		ok = diff <= TOL;
	}
	return ok;
}

static int cmp_int(const void *a, const void *b)
{
	return *(const int *)a - *(const int *)b;
}

/* The block's selection on the kept inputs (blk_route: what blk_forward routes with) against the reference. */
static void check_routing(const mdl_model *m, const arch_model *a, int b, const float *x, int64_t T,
			  const cJSON *ref, const char *name)
{
	pipe_block blk;
	ms_error err = {0};
	CHECK(pipe_load_block(m, NULL, b, &blk, &err) == MS_OK, "%s", err.msg);
	blk_config cfg = pipe_block_config(&blk);
	cfg.sparsemixer_eps = a->sparsemixer_eps;
	const int k = blk_top_k(&cfg);
	int *sel = malloc((size_t)(T * k) * sizeof *sel);
	CHECK(blk_route(&cfg, x, T, sel, NULL, &err) == MS_OK, "%s", err.msg);
	int differ = 0;
	for (int64_t t = 0; t < T; t++) {
		qsort(sel + t * k, (size_t)k, sizeof *sel, cmp_int);
		const cJSON *r = cJSON_GetArrayItem(ref, (int)t);
		for (int j = 0; j < k; j++)
			differ += !r || cJSON_GetArrayItem(r, j)->valueint != sel[t * k + j];
	}
	CHECK(differ == 0, "%s block %d: %d selections differ from the reference", name, b, differ);
	free(sel);
	pipe_free_block(&blk);
}

static void check_blocks(const mdl_model *m, const arch_model *a, const kept_inputs *k, const cJSON *blocks,
			 const char *name)
{
	CHECK(cJSON_GetArraySize(blocks) == m->n_blocks, "%s: %d blocks in the golden file, model has %d", name,
	      cJSON_GetArraySize(blocks), m->n_blocks);
	double worst = 0.0;
	for (int b = 0; b < m->n_blocks && b < cJSON_GetArraySize(blocks); b++) {
		const cJSON *g = cJSON_GetArrayItem(blocks, b);
		CHECK(strcmp(cJSON_GetObjectItem(g, "prefix")->valuestring, m->blocks[b].prefix) == 0, "block %d", b);
		double sum = 0.0, ss = 0.0;
		for (int64_t i = 0; i < k->T * a->d; i++) {
			sum += k->x[b][i];
			ss += (double)k->x[b][i] * k->x[b][i];
		}
		CHECK_CLOSE(sum, cJSON_GetObjectItem(g, "sum")->valuedouble, TOL);
		CHECK(fabs(ss / cJSON_GetObjectItem(g, "sumsq")->valuedouble - 1.0) <= TOL, "%s block %d sum of squares",
		      name, b);
		const cJSON *rows = cJSON_GetObjectItem(g, "rows"), *vals = cJSON_GetObjectItem(g, "values");
		for (int r = 0; r < cJSON_GetArraySize(rows); r++) {
			const int t = cJSON_GetArrayItem(rows, r)->valueint;
			CHECK(close_row(k->x[b] + (int64_t)t * a->d, cJSON_GetArrayItem(vals, r), a->d, &worst),
			      "%s block %d token %d input differs (worst %.3g)", name, b, t, worst);
		}
		check_routing(m, a, b, k->x[b], k->T, cJSON_GetObjectItem(g, "routing"), name);
	}
	printf("  %s: block inputs within %.2g of each row's scale\n", name, worst);
}

static void check_head(const arch_model *a, const fwd_result *r, const float *logits, const cJSON *g,
		       const char *name)
{
	const cJSON *nll = cJSON_GetObjectItem(g, "nll");
	CHECK(cJSON_GetArraySize(nll) == r->T, "%s: %d NLLs in the golden file", name, cJSON_GetArraySize(nll));
	double worst = 0.0;
	for (int64_t t = 0; t < r->T && t < cJSON_GetArraySize(nll); t++) {
		const cJSON *v = cJSON_GetArrayItem(nll, (int)t);
		if (cJSON_IsNull(v)) {
			CHECK(isnan(r->nll[t]), "%s token %lld has no next token", name, (long long)t);
			continue;
		}
		worst = fmax(worst, fabs(r->nll[t] - v->valuedouble) / fmax(1.0, fabs(v->valuedouble)));
		CHECK_CLOSE(r->nll[t], v->valuedouble, TOL);
	}
	CHECK_CLOSE(r->mean_nll, cJSON_GetObjectItem(g, "mean_nll")->valuedouble, TOL);
	const cJSON *rows = cJSON_GetObjectItem(g, "logits");
	double worst_logit = 0.0;
	for (int i = 0; i < cJSON_GetArraySize(rows); i++)
		CHECK(close_row(logits + (int64_t)i * a->vocab, cJSON_GetArrayItem(rows, i), a->vocab, &worst_logit),
		      "%s logit row %d differs (worst %.3g)", name, i, worst_logit);
	printf("  %s: NLL within %.2g, logits within %.2g of each row's scale\n", name, worst, worst_logit);
}

/* Runs the model at `path` on `tokens` and compares with tests/data/forward/<name>.json. */
static void check_model(const char *name, const char *path, const char *tokens)
{
	ms_error err = {0};
	char golden[256];
	snprintf(golden, sizeof golden, "tests/data/forward/%s.json", name);
	cJSON *g = read_json(golden);
	mdl_model *m = NULL;
	arch_model *a = NULL;
	tok_set tok = {0};
	CHECK(g != NULL, "%s: cannot read", golden);
	CHECK(mdl_open(path, &m, &err) == MS_OK, "%s", err.msg);
	if (!g || !m)
		goto done;
	CHECK(arch_open(m, &a, &err) == MS_OK, "%s", err.msg);
	CHECK(a && tokset_read_ids(tokens, a->vocab, 2048, 0, &tok, &err) == MS_OK, "%s", err.msg);
	if (!a || !tok.T)
		goto done;
	const cJSON *rows = cJSON_GetObjectItem(g, "logit_rows");
	const int n_rows = cJSON_GetArraySize(rows);
	int64_t row_idx[16];
	for (int i = 0; i < n_rows && i < 16; i++)
		row_idx[i] = cJSON_GetArrayItem(rows, i)->valueint;
	float *logits = calloc((size_t)n_rows * a->vocab, sizeof *logits);
	kept_inputs k = {.n_blocks = m->n_blocks, .d = a->d, .x = calloc((size_t)m->n_blocks, sizeof(float *))};
	fwd_options o = {.on_block = keep_block, .block_ctx = &k, .head = 1, .n_logit_rows = n_rows,
			 .logit_rows = row_idx, .logits = logits};
	fwd_result r;
	CHECK(fwd_run(a, &tok, &o, &r, &err) == MS_OK, "%s: %s", name, err.msg);
	if (err.code == MS_OK) {
		CHECK(r.T == cJSON_GetObjectItem(g, "tokens")->valueint, "token count");
		check_head(a, &r, logits, g, name);
		check_blocks(m, a, &k, cJSON_GetObjectItem(g, "blocks"), name);
		fwd_result_free(&r);
	}
	free_kept(&k);
	free(logits);
done:
	tokset_free(&tok);
	arch_close(a);
	mdl_close(m);
	cJSON_Delete(g);
}

/* A bundled sample, written afresh by samples_write. */
static void check_sample(const char *name)
{
	ms_error err = {0};
	char path[512];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	CHECK(samples_write(dir, name, &err) == MS_OK, "%s", err.msg);
	check_model(name, path, TOKENS);
}

/* A tiny checkpoint of tests/data/forward/models (tests/forward/make_tiny.py): full-scale weights, and the
 * variants the samples lack. */
static void check_tiny(const char *name)
{
	char path[256];
	snprintf(path, sizeof path, "tests/data/forward/models/%s", name);
	check_model(name, path, "tests/data/forward/tokens64.txt");
}

/* Mixtral with sliding_window 16 (shorter than two of the sequences) and rope_theta 1e6. */
static void test_mixtral_window_matches_reference(void)
{
	check_tiny("mixtral-window");
}

/* OLMoE with clip_qkv 1.5 after the whole-projection q/k norms, and norm_topk_prob. */
static void test_olmoe_clip_matches_reference(void)
{
	check_tiny("olmoe-clip");
}

/* Qwen3-MoE: per-head q/k RMSNorm, head_dim 16 != hidden / heads, a dense first layer (mlp_only_layers), linear
 * RoPE scaling, tied embeddings, norm_topk_prob. */
static void test_qwen3_matches_reference(void)
{
	check_tiny("qwen3-tiny");
}

/* PhiMoE: LayerNorm with bias, q/k/v/o and lm_head biases, sliding window 8, sparsemixer routing. */
static void test_phimoe_matches_reference(void)
{
	check_tiny("phimoe-tiny");
}

/* DeepSeek-V2: latent attention with q_lora, yarn RoPE (factor 4 over 32 positions, mscale != mscale_all_dim),
 * a dense first layer, a shared expert, routed_scaling_factor 1.5. */
static void test_deepseek_matches_reference(void)
{
	check_tiny("deepseek-tiny");
}

/* DeepSeek-V3: sigmoid routing with a selection bias, 4 groups of 2 experts of which 2 are eligible, top-3,
 * routed_scaling_factor 2.5 on renormalised weights, and yarn's mscale^2 on the latent attention's scale. */
static void test_deepseek3_matches_reference(void)
{
	check_tiny("deepseek3-tiny");
}

/* GLM-4.5 style: q/k/v biases (no o_proj bias), per-head q/k RMSNorm (use_qk_norm), RoPE on the first half of
 * each head (partial_rotary_factor 0.5), DeepSeek-V3 routing over 2 groups of which 1 is eligible. */
static void test_glm4_matches_reference(void)
{
	check_tiny("glm4-tiny");
}

/* gpt-oss: q/k/v/o biases, attention sinks, a sliding layer (window 8, shorter than the sequences) then a full one,
 * yarn RoPE with truncate false, a router bias, interleaved [in, out] experts with biases and the clamped SwiGLU
 * with both clamps active. */
static void test_gptoss_matches_reference(void)
{
	check_tiny("gptoss-tiny");
}

/* qwen2moe-fused holds qwen2moe-tiny's weights in transformers v5's fused tensors: the same golden values. */
static void test_fused_sample_matches_reference(void)
{
	ms_error err = {0};
	char path[512];
	snprintf(path, sizeof path, "%s/qwen2moe-fused", dir);
	CHECK(samples_write(dir, "qwen2moe-fused", &err) == MS_OK, "%s", err.msg);
	check_model("qwen2moe-tiny", path, TOKENS);
}

/* Qwen2-MoE as transformers 5 writes its config: rope_parameters (linear, its own rope_theta over the top-level
 * one), layer_types with the window (12) on layer 0 only, q/k/v biases, the gated shared expert. */
static void test_qwen2moe_window_matches_reference(void)
{
	check_tiny("qwen2moe-window");
}

/* DeepSeek-V2 with attention_bias (q_a_proj, kv_a_proj_with_mqa and o_proj biases) and yarn in rope_parameters
 * with an explicit factor 2 where max / original positions is 4 (transformers 5 keeps the explicit one). */
static void test_deepseek_bias_matches_reference(void)
{
	check_tiny("deepseek-bias");
}

/* DeepSeek-V2 with group_limited_greedy (8 experts in 4 groups of 2, the best 2 eligible, top-3): the selections
 * and the logits against tests/forward/reference.py's transcription of modeling_deepseek_v2 (on these tokens the
 * group limit changes 72 of the 119 tokens' top-3). */
static void test_deepseek_groups_matches_reference(void)
{
	check_tiny("deepseek-groups");
}

static void test_mixtral_matches_reference(void)
{
	check_sample("mixtral-tiny");
}

/* mixtral-tiny's weights stored FP8 E4M3 in 64 x 32 blocks: the attention and expert projections go through
 * io/quant's decoder, the reference dequantizes them by its own (tests/forward/reference.py). */
static void test_mixtral_fp8_matches_reference(void)
{
	check_sample("mixtral-fp8");
}

static void test_olmoe_matches_reference(void)
{
	check_sample("olmoe-mini");
}

static void test_qwen2moe_matches_reference(void)
{
	check_sample("qwen2moe-tiny");
}

/* One forward with a merged stream (every block's experts in 3 groups) on `threads` threads. */
typedef struct {
	fwd_result r;
	kept_inputs k;
} thread_run;

static void run_threads(const arch_model *a, const tok_set *tok, const plan *p, int threads, thread_run *out)
{
	ms_error err = {0};
	par_set_threads(threads);
	pipe_merge_options mo = pipe_merge_defaults();
	mo.slots = 3;
	out->k = (kept_inputs){.n_blocks = a->m->n_blocks, .d = a->d,
			       .x = calloc((size_t)a->m->n_blocks, sizeof(float *))};
	fwd_options o = {.on_block = keep_block, .block_ctx = &out->k, .plan = p, .merge = &mo, .head = 1};
	CHECK(fwd_run(a, tok, &o, &out->r, &err) == MS_OK, "%d threads: %s", threads, err.msg);
}

static void test_threads_bit_identical(void)
{
	ms_error err = {0};
	char path[512];
	snprintf(path, sizeof path, "%s/mixtral-tiny", dir);
	mdl_model *m = NULL;
	arch_model *a = NULL;
	tok_set tok = {0};
	CHECK(samples_write(dir, "mixtral-tiny", &err) == MS_OK, "%s", err.msg);
	CHECK(mdl_open(path, &m, &err) == MS_OK, "%s", err.msg);
	CHECK(m && arch_open(m, &a, &err) == MS_OK, "%s", err.msg);
	if (!a)
		goto done;
	/* two sequences of 300 tokens: several tasks in every parallel loop (linear maps, attention chunks, the
	 * experts, the head) */
	int64_t starts[3] = {0, 300, 600};
	int32_t ids[600];
	unsigned long long seed = 99;
	for (int i = 0; i < 600; i++)
		ids[i] = (int32_t)(test_rand_u64(&seed) % (unsigned)a->vocab);
	tok_set many = {.T = 600, .ids = ids, .n_seq = 2, .seq_start = starts};
	const char **labels = malloc((size_t)m->n_blocks * sizeof *labels);
	for (int b = 0; b < m->n_blocks; b++)
		labels[b] = m->blocks[b].label;
	plan p;
	CHECK(plan_init(&p, m->n_blocks, m->n_experts, labels) == 0);
	for (int b = 0; b < m->n_blocks; b++)
		for (int e = 0; e < m->n_experts; e++) {
			p.group[b * m->n_experts + e] = e % 3;
			p.dominant[b * m->n_experts + e] = e < 3;
			p.frequency[b * m->n_experts + e] = 1.0 / m->n_experts;
		}
	thread_run runs[3];
	for (int t = 0; t < 3; t++)
		run_threads(a, &many, &p, t + 1, &runs[t]);
	for (int t = 1; t < 3; t++) {
		const size_t T = (size_t)many.T;
		CHECK(memcmp(runs[0].r.nll, runs[t].r.nll, T * sizeof(double)) == 0, "%d threads: NLL differs", t + 1);
		CHECK(memcmp(runs[0].r.nll_merged, runs[t].r.nll_merged, T * sizeof(double)) == 0, "merged NLL");
		CHECK(memcmp(runs[0].r.kl, runs[t].r.kl, T * sizeof(double)) == 0, "%d threads: KL differs", t + 1);
		for (int b = 0; b < m->n_blocks; b++)
			CHECK(memcmp(runs[0].k.x[b], runs[t].k.x[b], T * (size_t)a->d * sizeof(float)) == 0,
			      "%d threads: block %d inputs differ", t + 1, b);
	}
	CHECK(runs[0].r.kl_mean > 0 && runs[0].r.predicted == 598, "the merge changes the model: KL %g",
	      runs[0].r.kl_mean);
	for (int t = 0; t < 3; t++) {
		fwd_result_free(&runs[t].r);
		free_kept(&runs[t].k);
	}
	plan_free(&p);
	free(labels);
done:
	par_set_threads(0);
	tokset_free(&tok);
	arch_close(a);
	mdl_close(m);
}

int main(void)
{
	snprintf(dir, sizeof dir, "%s/moescope-forward-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	RUN(test_mixtral_matches_reference);
	RUN(test_olmoe_matches_reference);
	RUN(test_qwen2moe_matches_reference);
	RUN(test_mixtral_fp8_matches_reference);
	RUN(test_mixtral_window_matches_reference);
	RUN(test_olmoe_clip_matches_reference);
	RUN(test_qwen3_matches_reference);
	RUN(test_phimoe_matches_reference);
	RUN(test_deepseek_matches_reference);
	RUN(test_deepseek3_matches_reference);
	RUN(test_glm4_matches_reference);
	RUN(test_gptoss_matches_reference);
	RUN(test_fused_sample_matches_reference);
	RUN(test_qwen2moe_window_matches_reference);
	RUN(test_deepseek_bias_matches_reference);
	RUN(test_deepseek_groups_matches_reference);
	RUN(test_threads_bit_identical);
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	return test_summary();
}
