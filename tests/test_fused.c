/* The 2026 checkpoint formats: transformers v5's fused experts and DeepSeek-V3's routing.
 *
 * - qwen2moe-fused holds qwen2moe-tiny's weights with the experts fused into 3-D tensors: every statistic, plan,
 *   merged weight and evaluation must be bit-identical between the two.
 * - route_topk's DeepSeek-V3 rule against a brute force written from DeepseekV3TopkRouter (selection by the
 *   biased sigmoid scores among the topk_group best groups, group score = sum of its two best, weights from the
 *   unbiased scores), on random tokens and on tokens built with exact ties between groups at the cut.
 * - A compact merge gives each slot its dominant's selection bias.
 * - Malformed fused and DeepSeek-V3 checkpoints: one message naming the tensor or the field.
 * - gpt_oss (gptoss-tiny): the interleaved [in, out] experts as loaded against the file's values indexed by hand,
 *   the clamped SwiGLU with biases against a scalar evaluation of GptOssExperts' formula, the router's logit bias
 *   against a brute-force GptOssTopKRouter, alignment leaving an expert's function unchanged, merged biases equal
 *   to the members' biases weighted by the merge coefficients, and malformed gpt_oss checkpoints. */
#include "io/calib.h"
#include "io/model.h"
#include "io/plan.h"
#include "io/safetensors.h"
#include "analysis/align.h"
#include "analysis/expert.h"
#include "analysis/merge.h"
#include "analysis/routing.h"
#include "pipeline/pipeline.h"
#include "samples/samples.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/load_fixture.h"
#include "tests/test.h"

static char dir[256];

typedef struct {
	mdl_model *m;
	calib *cal;
} opened;

static int open_sample(const char *name, opened *o)
{
	char path[512];
	ms_error err = {0};
	memset(o, 0, sizeof *o);
	snprintf(path, sizeof path, "%s/%s", dir, name);
	if (mdl_open(path, &o->m, &err) != MS_OK) {
		CHECK(0, "%s: %s", name, err.msg);
		return -1;
	}
	snprintf(path, sizeof path, "%s/%s/calib.safetensors", dir, name);
	if (calib_open(path, o->m, &o->cal, &err) != MS_OK) {
		CHECK(0, "%s: %s", name, err.msg);
		return -1;
	}
	return 0;
}

static void close_sample(opened *o)
{
	calib_close(o->cal);
	mdl_close(o->m);
}

static int same_doubles(const double *a, const double *b, size_t n)
{
	return (!a && !b) || (a && b && memcmp(a, b, n * sizeof *a) == 0);
}

/* ---- fused = per expert --------------------------------------------------------------------------------------- */

static const pipe_analyze_options analysis = {
	.bases = 1u << SIM_ROUTER_LOGITS | 1u << SIM_WEIGHT | 1u << SIM_EXPERT_OUTPUT, .stable_ranks = 1, .reap = 1,
};

static void test_layout_detected(void)
{
	opened a, b;
	if (open_sample("qwen2moe-tiny", &a) || open_sample("qwen2moe-fused", &b))
		return;
	CHECK(a.m->layout == MDL_LAYOUT_PER_EXPERT && b.m->layout == MDL_LAYOUT_FUSED, "layouts %d %d", a.m->layout,
	      b.m->layout);
	CHECK(a.m->params_experts == b.m->params_experts && a.m->bytes_experts == b.m->bytes_experts,
	      "expert totals %llu vs %llu", (unsigned long long)a.m->params_experts,
	      (unsigned long long)b.m->params_experts);
	/* expert e's up matrix is rows [f, 2f) of slab e of gate_up_proj: compare the view with the file's bytes */
	const mdl_block *blk = &b.m->blocks[1];
	const st_tensor *gu = blk->fused[MDL_FUSED_GATE_UP], *up = blk->experts[5 * MDL_NMAT + MDL_UP];
	const size_t es = st_dtype_size(gu->dtype), f = (size_t)b.m->inter, d = (size_t)b.m->hidden;
	CHECK(up->data == (const unsigned char *)gu->data + (5 * 2 * f * d + f * d) * es, "view of expert 5's up");
	CHECK(up->shape[0] == (int64_t)f && up->shape[1] == (int64_t)d && up->nbytes == f * d * es, "view shape");
	CHECK(strstr(up->name, "gate_up_proj[5, 64:]") != NULL, "view name %s", up->name);
	close_sample(&a);
	close_sample(&b);
}

/* Statistics of every block, a plan from them and the merged blocks, for one model. */
typedef struct {
	pipe_stats stats[8];
	plan p;
	float *merged[8], *router[8];
	size_t merged_n[8], router_n[8];
	blk_eval_result eval[8];
} run_result;

static void run_model(const opened *o, run_result *r)
{
	ms_error err = {0};
	memset(r, 0, sizeof *r);
	const mdl_model *m = o->m;
	for (int b = 0; b < m->n_blocks && b < 8; b++) {
		pipe_block blk;
		CHECK(pipe_load_block(m, o->cal, b, &blk, &err) == MS_OK, "%s", err.msg);
		CHECK(pipe_analyze_block(&blk, &analysis, &r->stats[b], &err) == MS_OK, "%s", err.msg);
		pipe_free_block(&blk);
	}
	const char **labels = mdl_block_labels(m);
	CHECK(plan_init(&r->p, m->n_blocks, m->n_experts, labels) == 0);
	free(labels);
	pipe_plan_options po = {.method = GRP_MSMOE, .base = SIM_ROUTER_LOGITS, .groups = 6};
	CHECK(pipe_make_plan(r->stats, m->n_blocks, &po, &r->p, &err) == MS_OK, "%s", err.msg);
	for (int b = 0; b < m->n_blocks && b < 8; b++) {
		pipe_block blk;
		pipe_merged mg;
		pipe_merge_options mo = pipe_merge_defaults();
		CHECK(pipe_load_block(m, o->cal, b, &blk, &err) == MS_OK, "%s", err.msg);
		CHECK(pipe_merge_block(&blk, &r->p, b, &mo, &mg, &err) == MS_OK, "%s", err.msg);
		CHECK(pipe_eval_block(&blk, &mg, &r->p, b, 0, &r->eval[b], &err) == MS_OK, "%s", err.msg);
		r->merged_n[b] = (size_t)mg.n_slots * (size_t)mg.per_expert;
		r->router_n[b] = (size_t)mg.n_router * (size_t)blk.d;
		r->merged[b] = malloc(r->merged_n[b] * sizeof(float));
		r->router[b] = malloc(r->router_n[b] * sizeof(float));
		for (int s = 0; r->merged[b] && s < mg.n_slots; s++) {   /* slots may point into the block's storage */
			const expert_weights *w = &mg.experts[s];
			float *dst = r->merged[b] + (size_t)s * mg.per_expert;
			memcpy(dst, w->gate, (size_t)w->f * w->d * sizeof(float));
			memcpy(dst + (size_t)w->f * w->d, w->up, (size_t)w->f * w->d * sizeof(float));
			memcpy(dst + 2 * (size_t)w->f * w->d, w->down, (size_t)w->f * w->d * sizeof(float));
		}
		if (r->router[b])
			memcpy(r->router[b], mg.router, r->router_n[b] * sizeof(float));
		pipe_free_merged(&mg);
		pipe_free_block(&blk);
	}
}

static void free_run(run_result *r, int n_blocks)
{
	for (int b = 0; b < n_blocks && b < 8; b++) {
		pipe_free_stats(&r->stats[b]);
		free(r->merged[b]);
		free(r->router[b]);
	}
	plan_free(&r->p);
}

static void test_fused_matches_per_expert(void)
{
	opened a, b;
	if (open_sample("qwen2moe-tiny", &a) || open_sample("qwen2moe-fused", &b))
		return;
	static run_result ra, rb;
	run_model(&a, &ra);
	run_model(&b, &rb);
	const int E = a.m->n_experts;
	for (int k = 0; k < a.m->n_blocks; k++) {
		const pipe_stats *x = &ra.stats[k], *y = &rb.stats[k];
		CHECK(same_doubles(x->frequency, y->frequency, (size_t)E), "block %d: frequencies differ", k);
		CHECK(same_doubles(x->reap, y->reap, (size_t)E), "block %d: REAP differs", k);
		CHECK(same_doubles(x->stable_rank, y->stable_rank, (size_t)E * MDL_NMAT), "block %d: stable ranks", k);
		for (int s = 0; s < SIM_BASE_COUNT; s++)
			CHECK(same_doubles(x->similarity[s], y->similarity[s], (size_t)E * E), "block %d: base %d", k, s);
		CHECK(x->usage_entropy == y->usage_entropy && x->cv == y->cv, "block %d: entropy or cv", k);
		CHECK(ra.merged_n[k] == rb.merged_n[k] && ra.merged_n[k] > 0 && ra.merged[k] && rb.merged[k] &&
		      memcmp(ra.merged[k], rb.merged[k], ra.merged_n[k] * sizeof(float)) == 0,
		      "block %d: merged experts differ", k);
		CHECK(ra.router_n[k] == rb.router_n[k] && ra.router[k] && rb.router[k] &&
		      memcmp(ra.router[k], rb.router[k], ra.router_n[k] * sizeof(float)) == 0, "block %d: routers", k);
		CHECK(ra.eval[k].rel_error == rb.eval[k].rel_error &&
		      ra.eval[k].routing_agreement == rb.eval[k].routing_agreement, "block %d: evaluation %g vs %g", k,
		      ra.eval[k].rel_error, rb.eval[k].rel_error);
	}
	const size_t n = (size_t)a.m->n_blocks * E;
	CHECK(memcmp(ra.p.group, rb.p.group, n * sizeof *ra.p.group) == 0 &&
	      memcmp(ra.p.dominant, rb.p.dominant, n * sizeof *ra.p.dominant) == 0, "plans differ");
	int merged = 0;   /* the plan merged something, so the comparison above covered real merges */
	for (int k = 0; k < a.m->n_blocks; k++)
		merged += plan_groups(&ra.p, k) < E;
	CHECK(merged == a.m->n_blocks, "%d blocks merged", merged);
	free_run(&ra, a.m->n_blocks);
	free_run(&rb, b.m->n_blocks);
	close_sample(&a);
	close_sample(&b);
}

/* ---- DeepSeek-V3 routing against a brute force --------------------------------------------------------------- */

/* a ranks before b: larger value, or the same value and the lower index */
static int before(double va, int a, double vb, int b)
{
	return va > vb || (va == vb && a < b);
}

/* The subset of n items of size k whose every member ranks before every non-member (by bitmask search). */
static unsigned best_subset(const double *v, int n, int k)
{
	for (unsigned mask = 0; mask < 1u << n; mask++) {
		if (__builtin_popcount(mask) != k)
			continue;
		int ok = 1;
		for (int i = 0; ok && i < n; i++)
			for (int j = 0; ok && j < n; j++)
				if ((mask >> i & 1) && !(mask >> j & 1))
					ok = before(v[i], i, v[j], j);
		if (ok)
			return mask;
	}
	return 0;
}

typedef struct {
	int E, k, n_group, topk_group, renormalize;
	double scale;
	const float *bias;
} brute_rule;

/* DeepseekV3TopkRouter for one token's logits z [E]: sel [k] in rank order, w [k]; *group_tie set when two groups
 * with equal scores straddle the cut. */
static void brute_route(const brute_rule *r, const float *z, int *sel, double *w, int *group_tie)
{
	double s[32], c[32], gs[32];
	for (int e = 0; e < r->E; e++) {
		s[e] = (float)(1.0 / (1.0 + exp(-(double)z[e])));
		c[e] = (float)((float)s[e] + r->bias[e]);
	}
	const int per = r->E / r->n_group;
	for (int g = 0; g < r->n_group; g++) {
		gs[g] = -INFINITY;
		for (int i = 0; i < per; i++)
			for (int j = i + 1; j < per; j++)
				gs[g] = fmax(gs[g], (double)(float)(c[g * per + i] + c[g * per + j]));
	}
	unsigned groups = best_subset(gs, r->n_group, r->topk_group);
	*group_tie = 0;
	for (int g = 0; g < r->n_group; g++)
		for (int h = 0; h < r->n_group; h++)
			*group_tie |= (groups >> g & 1) && !(groups >> h & 1) && gs[g] == gs[h];
	for (int e = 0; e < r->E; e++)
		if (!(groups >> (e / per) & 1))
			c[e] = 0.0;
	unsigned chosen = best_subset(c, r->E, r->k);
	double sum = 0.0;
	for (int j = 0; j < r->k; j++) {   /* rank order: the best remaining member first */
		int best = -1;
		for (int e = 0; e < r->E; e++)
			if ((chosen >> e & 1) && (best < 0 || before(c[e], e, c[best], best)))
				best = e;
		chosen &= ~(1u << best);
		sel[j] = best;
		sum += s[best];
	}
	for (int j = 0; j < r->k; j++)
		w[j] = s[sel[j]] / (r->renormalize ? sum + 1e-20 : 1.0) * r->scale;
}

static uint64_t lcg(uint64_t *x)
{
	*x = *x * 6364136223846793005ULL + 1442695040888963407ULL;
	return *x >> 33;
}

static float uniform(uint64_t *x, float lo, float hi)
{
	return lo + (hi - lo) * (float)(lcg(x) % 1000000) / 1e6f;
}

static void test_deepseek_routing_brute_force(void)
{
	enum { E = 16, T = 96 };
	static const int cases[][4] = {{4, 2, 4, 1}, {4, 1, 2, 0}, {8, 3, 6, 1}, {2, 1, 3, 1}, {1, 1, 4, 1}};
	float bias[E], z[T * E];
	uint64_t seed = 7;
	int ties = 0, checked = 0;
	for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
		const int G = cases[c][0], TG = cases[c][1], k = cases[c][2], per = E / G;
		for (int e = 0; e < E; e++)
			bias[e] = uniform(&seed, -0.2f, 0.2f);
		for (int t = 0; t < T; t++)
			for (int e = 0; e < E; e++)
				z[t * E + e] = uniform(&seed, -3.0f, 3.0f);
		/* every other token: the last group copies the first one's logits and biases, so the two tie exactly;
		 * when the first group is kept and the last would be, the lower index must win */
		if (G > 1)
			for (int t = 0; t < T; t += 2)
				for (int i = 0; i < per; i++)
					z[t * E + (G - 1) * per + i] = z[t * E + i];
		if (G > 1)
			for (int i = 0; i < per; i++)
				bias[(G - 1) * per + i] = bias[i];
		mdl_routing r = {.top_k = k, .renormalize = cases[c][3], .scale = 2.5f, .score = MDL_SCORE_SIGMOID,
				 .n_group = G, .topk_group = TG, .score_bias = bias};
		brute_rule br = {.E = E, .k = k, .n_group = G, .topk_group = TG, .renormalize = cases[c][3],
				 .scale = 2.5, .bias = bias};
		int idx[T * 8];
		float w[T * 8];
		CHECK(route_topk(z, T, E, &r, idx, w) == MS_OK);
		for (int t = 0; t < T; t++) {
			int sel[8], tie;
			double bw[8];
			brute_route(&br, z + t * E, sel, bw, &tie);
			ties += tie;
			for (int j = 0; j < k; j++) {
				CHECK(idx[t * k + j] == sel[j], "case %zu token %d slot %d: %d, brute force %d", c, t, j,
				      idx[t * k + j], sel[j]);
				CHECK(fabs(w[t * k + j] - bw[j]) <= 1e-6 * fmax(1.0, fabs(bw[j])), "case %zu token %d: %g vs %g",
				      c, t, (double)w[t * k + j], bw[j]);
			}
			checked++;
		}
	}
	CHECK(ties >= 20, "only %d tokens with tied groups at the cut", ties);
	CHECK(checked == 5 * T);
}

/* The bias decides the selection but never the weights: with a huge bias on expert 0 and no groups it is always
 * chosen, and its weight is its plain sigmoid share. */
static void test_bias_selects_but_does_not_weigh(void)
{
	const float z[4] = {-4.0f, 1.0f, 0.5f, 0.0f}, bias[4] = {10.0f, 0, 0, 0};
	mdl_routing r = {.top_k = 2, .renormalize = 1, .scale = 1.0f, .score = MDL_SCORE_SIGMOID, .n_group = 1,
			 .topk_group = 1, .score_bias = bias};
	int idx[2];
	float w[2];
	CHECK(route_topk(z, 1, 4, &r, idx, w) == MS_OK);
	const double s0 = 1.0 / (1.0 + exp(4.0)), s1 = 1.0 / (1.0 + exp(-1.0));
	CHECK(idx[0] == 0 && idx[1] == 1, "selected %d %d", idx[0], idx[1]);
	CHECK_CLOSE(w[0], s0 / (s0 + s1), 1e-6);
	CHECK_CLOSE(w[1], s1 / (s0 + s1), 1e-6);
}

/* ---- the merged selection bias ------------------------------------------------------------------------------- */

static void test_merged_bias_is_the_dominants(void)
{
	opened o;
	if (open_sample("deepseek3-tiny", &o))
		return;
	const mdl_model *m = o.m;
	CHECK(m->routing.score == MDL_SCORE_SIGMOID && m->routing.n_group == 4 && m->routing.topk_group == 2);
	static run_result r;
	ms_error err = {0};
	for (int b = 0; b < m->n_blocks; b++) {
		pipe_block blk;
		CHECK(pipe_load_block(m, o.cal, b, &blk, &err) == MS_OK, "%s", err.msg);
		CHECK(blk.score_bias && blk.routing.score_bias == blk.score_bias, "block %d has its bias", b);
		CHECK(pipe_analyze_block(&blk, &analysis, &r.stats[b], &err) == MS_OK, "%s", err.msg);
		pipe_free_block(&blk);
	}
	const char **labels = mdl_block_labels(m);
	CHECK(plan_init(&r.p, m->n_blocks, m->n_experts, labels) == 0);
	free(labels);
	pipe_plan_options po = {.method = GRP_MSMOE, .base = SIM_ROUTER_LOGITS, .groups = 8};
	CHECK(pipe_make_plan(r.stats, m->n_blocks, &po, &r.p, &err) == MS_OK, "%s", err.msg);
	const int E = m->n_experts;
	for (int b = 0; b < m->n_blocks; b++) {
		pipe_block blk;
		pipe_merged mg;
		pipe_merge_options mo = pipe_merge_defaults();
		float bias[64];
		CHECK(mdl_load_score_bias(m, b, bias, &err) == MS_OK, "%s", err.msg);
		CHECK(pipe_load_block(m, o.cal, b, &blk, &err) == MS_OK, "%s", err.msg);
		CHECK(pipe_merge_block(&blk, &r.p, b, &mo, &mg, &err) == MS_OK, "%s", err.msg);
		CHECK(mg.score_bias != NULL && mg.cfg.routing.score_bias == mg.score_bias && mg.cfg.routing.n_group == 1,
		      "block %d: merged routing", b);
		for (int s = 0; mg.score_bias && s < mg.n_router; s++) {
			int dom = -1;
			for (int e = 0; e < E; e++)
				if (r.p.group[b * E + e] == mg.slot_group[s] && r.p.dominant[b * E + e])
					dom = e;
			/* the sample stores BF16: the dominant's value as read is exactly representable */
			CHECK(dom >= 0 && mg.score_bias[s] == bias[dom], "block %d slot %d: %g, dominant %d has %g", b, s,
			      (double)mg.score_bias[s], dom, dom >= 0 ? (double)bias[dom] : 0.0);
		}
		pipe_free_merged(&mg);
		pipe_free_block(&blk);
	}
	free_run(&r, m->n_blocks);
	close_sample(&o);
}

/* ---- hostile checkpoints ------------------------------------------------------------------------------------- */

typedef struct {
	const char *name;
	int ndim;
	int64_t shape[3];
} tdesc;

/* Writes config and the tensors (BF16, small values) into a fresh directory under dir. */
static int write_case(const char *sub, const char *config, const tdesc *t, int n, char *out, size_t len)
{
	ms_error err = {0};
	snprintf(out, len, "%s/%s", dir, sub);
	mkdir(out, 0755);
	char path[600];
	snprintf(path, sizeof path, "%s/config.json", out);
	FILE *f = fopen(path, "w");
	if (!f)
		return -1;
	fputs(config, f);
	fclose(f);
	st_writer *w = NULL;
	ms_status st = st_writer_create(out, "model", UINT64_MAX / 4, &w, &err);
	for (int i = 0; st == MS_OK && i < n; i++)
		st = st_writer_declare(w, t[i].name, ST_BF16, t[i].ndim, t[i].shape, &err);
	for (int i = 0; st == MS_OK && i < n; i++) {
		uint64_t count = 1;
		for (int k = 0; k < t[i].ndim; k++)
			count *= (uint64_t)t[i].shape[k];
		float *v = malloc(count * sizeof *v);
		for (uint64_t j = 0; v && j < count; j++)
			v[j] = 0.01f * (float)(j % 17);
		st = v ? st_writer_write_f32(w, v, count, &err) : MS_ERR_NOMEM;
		free(v);
	}
	if (st == MS_OK)
		st = st_writer_finish(w, &err);
	st_writer_free(w);
	CHECK(st == MS_OK, "%s: %s", sub, err.msg);
	return st == MS_OK ? 0 : -1;
}

#define QWEN_CFG(E) \
	"{\"model_type\":\"qwen3_moe\",\"num_experts\":" #E ",\"num_experts_per_tok\":2,\"hidden_size\":8," \
	"\"moe_intermediate_size\":6,\"num_hidden_layers\":1}"
#define V3_CFG(k, groups, eligible) \
	"{\"model_type\":\"deepseek_v3\",\"n_routed_experts\":4,\"num_experts_per_tok\":" #k ",\"hidden_size\":8," \
	"\"moe_intermediate_size\":6,\"num_hidden_layers\":1,\"n_group\":" #groups ",\"topk_group\":" #eligible "}"

typedef struct {
	const char *name, *config;
	tdesc t[6];
	int n;
	ms_status want;
	const char *msg[3];
} bad_case;

#define OSS_CFG \
	"{\"model_type\":\"gpt_oss\",\"num_local_experts\":4,\"num_experts_per_tok\":2,\"hidden_size\":8," \
	"\"intermediate_size\":6,\"num_hidden_layers\":1}"
#define OSS_ROUTER {"model.layers.0.mlp.router.weight", 2, {4, 8}}, {"model.layers.0.mlp.router.bias", 1, {4}}
#define OSS_GU {"model.layers.0.mlp.experts.gate_up_proj", 3, {4, 8, 12}}
#define OSS_GUB {"model.layers.0.mlp.experts.gate_up_proj_bias", 2, {4, 12}}
#define OSS_DN {"model.layers.0.mlp.experts.down_proj", 3, {4, 6, 8}}
#define OSS_DNB {"model.layers.0.mlp.experts.down_proj_bias", 2, {4, 8}}

static const bad_case bad_cases[] = {
	{"gpt_oss router bias missing", OSS_CFG,
	 {{"model.layers.0.mlp.router.weight", 2, {4, 8}}, OSS_GU, OSS_GUB, OSS_DN, OSS_DNB}, 5, MS_ERR_MODEL_TENSOR,
	 {"'model.layers.0.mlp.router.bias' missing", "router of layer 0"}},
	{"gpt_oss gate_up_proj_bias missing", OSS_CFG, {OSS_ROUTER, OSS_GU, OSS_DN, OSS_DNB}, 5, MS_ERR_MODEL_TENSOR,
	 {"'model.layers.0.mlp.experts.gate_up_proj_bias' missing", "experts of layer 0"}},
	{"gpt_oss down_proj_bias missing", OSS_CFG, {OSS_ROUTER, OSS_GU, OSS_GUB, OSS_DN}, 5, MS_ERR_MODEL_TENSOR,
	 {"'model.layers.0.mlp.experts.down_proj_bias' missing"}},
	{"gpt_oss gate_up_proj in the [E, 2f, d] orientation", OSS_CFG,
	 {OSS_ROUTER, {"model.layers.0.mlp.experts.gate_up_proj", 3, {4, 12, 8}}, OSS_GUB, OSS_DN, OSS_DNB}, 6,
	 MS_ERR_MODEL_SHAPE, {"gate_up_proj", "shape [4, 12, 8], expected [4, 8, 12]",
			      "num_local_experts x hidden_size x 2 x intermediate_size"}},
	{"gpt_oss down_proj in the [E, d, f] orientation", OSS_CFG,
	 {OSS_ROUTER, OSS_GU, OSS_GUB, {"model.layers.0.mlp.experts.down_proj", 3, {4, 8, 6}}, OSS_DNB}, 6,
	 MS_ERR_MODEL_SHAPE, {"down_proj", "shape [4, 8, 6], expected [4, 6, 8]"}},
	{"gpt_oss gate_up_proj_bias of f, not 2f", OSS_CFG,
	 {OSS_ROUTER, OSS_GU, {"model.layers.0.mlp.experts.gate_up_proj_bias", 2, {4, 6}}, OSS_DN, OSS_DNB}, 6,
	 MS_ERR_MODEL_SHAPE, {"gate_up_proj_bias", "shape [4, 6], expected [4, 12]"}},
	{"gpt_oss router bias of the wrong length", OSS_CFG,
	 {{"model.layers.0.mlp.router.weight", 2, {4, 8}}, {"model.layers.0.mlp.router.bias", 1, {5}}, OSS_GU, OSS_GUB,
	  OSS_DN, OSS_DNB}, 6, MS_ERR_MODEL_SHAPE, {"router.bias", "shape [5], expected [4]"}},
	{"gate_up without the up half", QWEN_CFG(4),
	 {{"model.layers.0.mlp.gate.weight", 2, {4, 8}}, {"model.layers.0.mlp.experts.gate_up_proj", 3, {4, 6, 8}},
	  {"model.layers.0.mlp.experts.down_proj", 3, {4, 8, 6}}}, 3, MS_ERR_MODEL_SHAPE,
	 {"'model.layers.0.mlp.experts.gate_up_proj' (experts of layer 0)", "shape [4, 6, 8], expected [4, 12, 8]",
	  "2 x moe_intermediate_size"}},
	{"fused E disagrees with config", QWEN_CFG(4),
	 {{"model.layers.0.mlp.gate.weight", 2, {4, 8}}, {"model.layers.0.mlp.experts.gate_up_proj", 3, {3, 12, 8}},
	  {"model.layers.0.mlp.experts.down_proj", 3, {3, 8, 6}}}, 3, MS_ERR_MODEL_SHAPE,
	 {"gate_up_proj", "shape [3, 12, 8], expected [4, 12, 8]", "num_experts x"}},
	{"down_proj transposed", QWEN_CFG(4),
	 {{"model.layers.0.mlp.gate.weight", 2, {4, 8}}, {"model.layers.0.mlp.experts.gate_up_proj", 3, {4, 12, 8}},
	  {"model.layers.0.mlp.experts.down_proj", 3, {4, 6, 8}}}, 3, MS_ERR_MODEL_SHAPE,
	 {"down_proj", "shape [4, 6, 8], expected [4, 8, 6]"}},
	{"down_proj missing", QWEN_CFG(4),
	 {{"model.layers.0.mlp.gate.weight", 2, {4, 8}}, {"model.layers.0.mlp.experts.gate_up_proj", 3, {4, 12, 8}}},
	 2, MS_ERR_MODEL_TENSOR, {"'model.layers.0.mlp.experts.down_proj' missing"}},
	{"fused tensor flattened", QWEN_CFG(4),
	 {{"model.layers.0.mlp.gate.weight", 2, {4, 8}}, {"model.layers.0.mlp.experts.gate_up_proj", 2, {48, 8}},
	  {"model.layers.0.mlp.experts.down_proj", 3, {4, 8, 6}}}, 3, MS_ERR_MODEL_SHAPE,
	 {"gate_up_proj", "shape [48, 8]"}},
	{"selection bias missing", V3_CFG(2, 2, 1),
	 {{"model.layers.0.mlp.gate.weight", 2, {4, 8}}, {"model.layers.0.mlp.experts.gate_up_proj", 3, {4, 12, 8}},
	  {"model.layers.0.mlp.experts.down_proj", 3, {4, 8, 6}}}, 3, MS_ERR_MODEL_TENSOR,
	 {"'model.layers.0.mlp.gate.e_score_correction_bias' missing", "routing bias of layer 0"}},
	{"selection bias of the wrong length", V3_CFG(2, 2, 1),
	 {{"model.layers.0.mlp.gate.weight", 2, {4, 8}}, {"model.layers.0.mlp.gate.e_score_correction_bias", 1, {3}},
	  {"model.layers.0.mlp.experts.gate_up_proj", 3, {4, 12, 8}},
	  {"model.layers.0.mlp.experts.down_proj", 3, {4, 8, 6}}}, 4, MS_ERR_MODEL_SHAPE,
	 {"e_score_correction_bias", "shape [3], expected [4]"}},
	{"n_group does not divide E", V3_CFG(2, 3, 1), {{"x", 1, {1}}}, 1, MS_ERR_CFG_FIELD,
	 {"config.json", "'n_group' is 3", "4 experts"}},
	{"topk_group above n_group", V3_CFG(2, 2, 3), {{"x", 1, {1}}}, 1, MS_ERR_CFG_FIELD,
	 {"'topk_group' is 3"}},
	{"top-k beyond the eligible groups", V3_CFG(3, 2, 1), {{"x", 1, {1}}}, 1,
	 MS_ERR_CFG_FIELD, {"'num_experts_per_tok' is 3", "2 experts of 1 eligible groups"}},
};

static void test_bad_checkpoints(void)
{
	for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
		const bad_case *bc = &bad_cases[i];
		char sub[32], path[512];
		snprintf(sub, sizeof sub, "bad%zu", i);
		if (write_case(sub, bc->config, bc->t, bc->n, path, sizeof path))
			continue;
		mdl_model *m = NULL;
		ms_error err = {0};
		ms_status st = mdl_open(path, &m, &err);
		CHECK(st == bc->want && !m, "%s: %s, expected %s (%s)", bc->name, ms_status_name(st),
		      ms_status_name(bc->want), err.msg);
		CHECK(strchr(err.msg, '\n') == NULL && strstr(err.msg, path), "%s: '%s'", bc->name, err.msg);
		for (int k = 0; k < 3 && bc->msg[k]; k++)
			CHECK(strstr(err.msg, bc->msg[k]), "%s: message '%s' lacks '%s'", bc->name, err.msg, bc->msg[k]);
		mdl_close(m);
	}
}

/* A fused checkpoint that is well formed opens, with mixtral's fused block under "mlp" (transformers v5 renames
 * block_sparse_moe). */
static void test_fused_mixtral_prefix(void)
{
	static const tdesc t[] = {{"model.layers.0.mlp.gate.weight", 2, {4, 8}},
				  {"model.layers.0.mlp.experts.gate_up_proj", 3, {4, 12, 8}},
				  {"model.layers.0.mlp.experts.down_proj", 3, {4, 8, 6}}};
	char path[512];
	if (write_case("mixtral5", "{\"model_type\":\"mixtral\",\"num_local_experts\":4,\"num_experts_per_tok\":2,"
		       "\"hidden_size\":8,\"intermediate_size\":6,\"num_hidden_layers\":1}", t, 3, path, sizeof path))
		return;
	mdl_model *m = NULL;
	ms_error err = {0};
	CHECK(mdl_open(path, &m, &err) == MS_OK, "%s", err.msg);
	if (!m)
		return;
	CHECK(m->layout == MDL_LAYOUT_FUSED && strcmp(m->blocks[0].prefix, "model.layers.0.mlp") == 0, "%s",
	      m->blocks[0].prefix);
	float gate[48], up[48], down[48];
	CHECK(mdl_load_expert(m, 0, 3, gate, up, down, &err) == MS_OK, "%s", err.msg);
	/* write_case fills element j of a tensor with 0.01 (j % 17): expert 3's up starts at element 3*96 + 48 */
	const float want_up = st_bf16_to_f32(st_f32_to_bf16(0.01f * (float)((3 * 96 + 48) % 17)));
	const float want_down = st_bf16_to_f32(st_f32_to_bf16(0.01f * (float)((3 * 48 + 1) % 17)));
	CHECK(up[0] == want_up && down[1] == want_down, "up[0] %g (want %g), down[1] %g (want %g)", (double)up[0],
	      (double)want_up, (double)down[1], (double)want_down);
	mdl_close(m);
}

/* ---- gpt_oss ------------------------------------------------------------------------------------------------- */

/* Every expert's matrices and biases as loaded equal the file's values picked out by hand: gate_up_proj [E, d, 2f]
 * has gate[i, j] at [e, j, 2i] and up[i, j] at [e, j, 2i + 1]; down_proj [E, f, d] has down[r, i] at [e, i, r]. */
static void test_gptoss_loader(void)
{
	opened o;
	if (open_sample("gptoss-tiny", &o))
		return;
	const mdl_model *m = o.m;
	const int E = m->n_experts, d = m->hidden, f = m->inter;
	CHECK(m->layout == MDL_LAYOUT_INTERLEAVED && m->expert_bias && m->act == MDL_ACT_CLAMPED_SWIGLU &&
	      m->routing.renormalize && m->routing.score == MDL_SCORE_SOFTMAX, "layout %d bias %d act %d", m->layout,
	      m->expert_bias, m->act);
	CHECK(m->params_experts == (uint64_t)m->n_blocks * E * 3 * d * f, "expert params %llu",
	      (unsigned long long)m->params_experts);
	const mdl_block *blk = &m->blocks[2];
	CHECK(blk->router_bias && blk->fused_bias[MDL_FUSED_GATE_UP] && blk->fused_bias[MDL_FUSED_DOWN]);
	float *gu = malloc((size_t)E * d * 2 * f * sizeof *gu), *dn = malloc((size_t)E * f * d * sizeof *dn);
	float *gub = malloc((size_t)E * 2 * f * sizeof *gub), *dnb = malloc((size_t)E * d * sizeof *dnb);
	float *gate = malloc((size_t)f * d * sizeof *gate), *up = malloc((size_t)f * d * sizeof *up);
	float *down = malloc((size_t)d * f * sizeof *down), *bias = malloc((size_t)(2 * f + d) * sizeof *bias);
	ms_error err = {0};
	if (!gu || !dn || !gub || !dnb || !gate || !up || !down || !bias ||
	    st_read_f32(blk->fused[MDL_FUSED_GATE_UP], gu, &err) != MS_OK ||
	    st_read_f32(blk->fused[MDL_FUSED_DOWN], dn, &err) != MS_OK ||
	    st_read_f32(blk->fused_bias[MDL_FUSED_GATE_UP], gub, &err) != MS_OK ||
	    st_read_f32(blk->fused_bias[MDL_FUSED_DOWN], dnb, &err) != MS_OK) {
		CHECK(0, "reading the fused tensors: %s", err.msg);
		goto out;
	}
	int bad = 0;
	for (int e = 0; e < E; e++) {
		CHECK(mdl_load_expert(m, 2, e, gate, up, down, &err) == MS_OK, "%s", err.msg);
		CHECK(mdl_load_expert_bias(m, 2, e, bias, bias + f, bias + 2 * f, &err) == MS_OK, "%s", err.msg);
		const float *slab = gu + (size_t)e * d * 2 * f;
		for (int i = 0; i < f; i++)
			for (int j = 0; j < d; j++)
				bad += gate[i * d + j] != slab[j * 2 * f + 2 * i] || up[i * d + j] != slab[j * 2 * f + 2 * i + 1];
		for (int r = 0; r < d; r++)
			for (int i = 0; i < f; i++)
				bad += down[r * f + i] != dn[(size_t)e * f * d + (size_t)i * d + r];
		for (int i = 0; i < f; i++)
			bad += bias[i] != gub[e * 2 * f + 2 * i] || bias[f + i] != gub[e * 2 * f + 2 * i + 1];
		for (int r = 0; r < d; r++)
			bad += bias[2 * f + r] != dnb[e * d + r];
	}
	CHECK(bad == 0, "%d values differ from the file's", bad);
	check_block_load(m, 2);
out:
	free(gu);
	free(dn);
	free(gub);
	free(dnb);
	free(gate);
	free(up);
	free(down);
	free(bias);
	close_sample(&o);
}

/* GptOssExperts.forward, one scalar at a time in double: gate_up = x W + b, gate = min(gate, 7), up = clamp(up, -7,
 * 7), out = ((up + 1) * gate * sigmoid(1.702 gate)) down + b_down. Weights are scaled so both clamps act. */
static void test_clamped_swiglu_brute_force(void)
{
	enum { d = 5, f = 7, T = 9 };
	float gate[f * d], up[f * d], down[d * f], gb[f], ub[f], db[d], x[T * d], y[T * d];
	uint64_t state = 12345;
	for (int i = 0; i < f * d; i++) {
		state = state * 6364136223846793005ULL + 1442695040888963407ULL;
		gate[i] = (float)((int)(state >> 40) % 2001 - 1000) / 250.0f;
		state = state * 6364136223846793005ULL + 1442695040888963407ULL;
		up[i] = (float)((int)(state >> 40) % 2001 - 1000) / 250.0f;
		state = state * 6364136223846793005ULL + 1442695040888963407ULL;
		down[i] = (float)((int)(state >> 40) % 2001 - 1000) / 1000.0f;
	}
	for (int i = 0; i < T * d; i++) {
		state = state * 6364136223846793005ULL + 1442695040888963407ULL;
		x[i] = (float)((int)(state >> 40) % 2001 - 1000) / 500.0f;
	}
	for (int i = 0; i < f; i++) {
		gb[i] = 0.3f * (float)(i - 3);
		ub[i] = -0.2f * (float)(i - 2);
	}
	for (int i = 0; i < d; i++)
		db[i] = 0.1f * (float)(i + 1);
	const expert_weights w = {.gate = gate, .up = up, .down = down, .gate_bias = gb, .up_bias = ub, .down_bias = db,
				  .d = d, .f = f, .act = MDL_ACT_CLAMPED_SWIGLU};
	float work[2 * T * f];
	CHECK(expert_work_floats(&w, T) <= 2 * T * f);
	CHECK(expert_forward(&w, x, T, 0.5f, 0, y, work) == MS_OK);
	int gate_clamped = 0, up_low = 0, up_high = 0;
	double worst = 0.0;
	for (int t = 0; t < T; t++) {
		double h[f];
		for (int i = 0; i < f; i++) {
			double g = gb[i], u = ub[i];
			for (int j = 0; j < d; j++) {
				g += (double)gate[i * d + j] * x[t * d + j];
				u += (double)up[i * d + j] * x[t * d + j];
			}
			gate_clamped += g > 7.0;
			up_low += u < -7.0;
			up_high += u > 7.0;
			g = g < 7.0 ? g : 7.0;
			u = u < -7.0 ? -7.0 : u > 7.0 ? 7.0 : u;
			h[i] = (u + 1.0) * g / (1.0 + exp(-1.702 * g));
		}
		for (int r = 0; r < d; r++) {
			double v = db[r];
			for (int i = 0; i < f; i++)
				v += (double)down[r * f + i] * h[i];
			const double diff = fabs(0.5 * v - (double)y[t * d + r]) / fmax(1.0, fabs(0.5 * v));
			worst = diff > worst ? diff : worst;
		}
	}
	CHECK(gate_clamped > 0 && up_low > 0 && up_high > 0, "clamps exercised: gate %d, up low %d, up high %d",
	      gate_clamped, up_low, up_high);
	CHECK(worst <= 1e-5, "worst relative difference %g", worst);
}

/* GptOssTopKRouter: logits x W^T + b, top-k of the logits, softmax over the k selected. blk_route on a gptoss-tiny
 * block against that, written out per token. */
static void test_gptoss_router_brute_force(void)
{
	opened o;
	if (open_sample("gptoss-tiny", &o))
		return;
	pipe_block blk;
	ms_error err = {0};
	if (pipe_load_block(o.m, o.cal, 1, &blk, &err) != MS_OK) {
		CHECK(0, "%s", err.msg);
		close_sample(&o);
		return;
	}
	CHECK(blk.router_bias && blk.routing.logit_bias == blk.router_bias);
	const int E = blk.E, d = blk.d, k = blk.routing.top_k;
	const int64_t T = blk.T;
	int *sel = malloc((size_t)(T * k) * sizeof *sel);
	float *w = malloc((size_t)(T * k) * sizeof *w);
	blk_config cfg = pipe_block_config(&blk);
	CHECK(sel && w && blk_route(&cfg, blk.x, T, sel, w, &err) == MS_OK, "%s", err.msg);
	int wrong = 0, moved = 0;
	double worst = 0.0;
	for (int64_t t = 0; sel && w && t < T; t++) {
		double z[64], plain[64];
		for (int e = 0; e < E; e++) {
			plain[e] = 0.0;
			for (int j = 0; j < d; j++)
				plain[e] += (double)blk.router[e * d + j] * blk.x[t * d + j];
			z[e] = plain[e] + blk.router_bias[e];
		}
		int top[8];
		for (int i = 0; i < k; i++) {   /* selection sort: the largest, the lower index on ties */
			int best = -1;
			for (int e = 0; e < E; e++) {
				int taken = 0;
				for (int q = 0; q < i; q++)
					taken |= top[q] == e;
				if (!taken && (best < 0 || z[e] > z[best]))
					best = e;
			}
			top[i] = best;
		}
		double sum = 0.0;
		for (int i = 0; i < k; i++)
			sum += exp(z[top[i]] - z[top[0]]);
		for (int i = 0; i < k; i++) {
			wrong += sel[t * k + i] != top[i];
			const double want = exp(z[top[i]] - z[top[0]]) / sum;
			worst = fmax(worst, fabs(want - (double)w[t * k + i]));
		}
		/* does the bias matter here: would the unbiased logits pick a different set? */
		int best = 0;
		for (int e = 1; e < E; e++)
			best = plain[e] > plain[best] ? e : best;
		moved += best != top[0];
	}
	CHECK(wrong == 0, "%d of %lld selections differ", wrong, (long long)(T * k));
	CHECK(worst <= 1e-5, "worst weight difference %g", worst);
	CHECK(moved > 0, "the router bias changes some token's first choice (%d)", moved);
	free(sel);
	free(w);
	pipe_free_block(&blk);
	close_sample(&o);
}

/* Permuting an expert's intermediate axis (gate and up rows, their biases, down columns) leaves its function
 * unchanged; the down bias is not permuted. */
static void test_gptoss_alignment_keeps_function(void)
{
	opened o;
	if (open_sample("gptoss-tiny", &o))
		return;
	pipe_block blk;
	ms_error err = {0};
	if (pipe_load_block(o.m, o.cal, 0, &blk, &err) != MS_OK) {
		CHECK(0, "%s", err.msg);
		close_sample(&o);
		return;
	}
	const int d = blk.d, f = blk.f;
	const int64_t T = 64;
	const expert_weights *src = &blk.experts[3];
	float *copy = malloc((size_t)blk.per_expert * sizeof *copy);
	int *perm = malloc((size_t)f * sizeof *perm);
	float *y0 = malloc((size_t)(T * d) * sizeof *y0), *y1 = malloc((size_t)(T * d) * sizeof *y1);
	float *work = malloc((size_t)expert_work_floats(src, T) * sizeof *work);
	if (!copy || !perm || !y0 || !y1 || !work) {
		CHECK(0, "out of memory");
		goto out;
	}
	memcpy(copy, src->gate, (size_t)blk.per_expert * sizeof *copy);
	expert_weights w = *src;
	w.gate = copy;
	w.up = copy + (size_t)f * d;
	w.down = w.up + (size_t)f * d;
	w.gate_bias = w.down + (size_t)f * d;
	w.up_bias = w.gate_bias + f;
	w.down_bias = w.up_bias + f;
	for (int i = 0; i < f; i++)
		perm[i] = (i * 5 + 3) % f;   /* f = 64: 5 is odd, so i -> 5i + 3 is a bijection */
	CHECK(align_apply(perm, (float *)w.gate, (float *)w.up, (float *)w.down, d, f) == MS_OK);
	CHECK(align_apply_biases(perm, f, (float *)w.gate_bias, (float *)w.up_bias) == MS_OK);
	CHECK(w.gate_bias[1] == src->gate_bias[perm[1]] && w.up_bias[2] == src->up_bias[perm[2]] &&
	      memcmp(w.down_bias, src->down_bias, (size_t)d * sizeof(float)) == 0);
	CHECK(expert_forward(src, blk.x, T, 1.0f, 0, y0, work) == MS_OK);
	CHECK(expert_forward(&w, blk.x, T, 1.0f, 0, y1, work) == MS_OK);
	double worst = 0.0;
	for (int64_t i = 0; i < T * d; i++)
		worst = fmax(worst, fabs((double)y0[i] - y1[i]) / fmax(1.0, fabs((double)y0[i])));
	CHECK(worst <= 1e-4, "permuted expert differs by %g", worst);
	int bad_perm[4] = {0, 0, 1, 2};
	CHECK(align_apply_biases(bad_perm, 4, (float *)w.gate_bias, NULL) == MS_ERR_ARG);
out:
	free(copy);
	free(perm);
	free(y0);
	free(y1);
	free(work);
	pipe_free_block(&blk);
	close_sample(&o);
}

/* A merge without alignment and with the mean router: each slot's expert biases are its members' weighted by the
 * merge coefficients (rounded to BF16 like the matrices), its router bias the frequency-weighted mean of theirs, and
 * a group of one keeps its expert's router bias exactly. */
static void test_gptoss_merged_biases(void)
{
	opened o;
	if (open_sample("gptoss-tiny", &o))
		return;
	const mdl_model *m = o.m;
	static run_result r;
	ms_error err = {0};
	for (int b = 0; b < m->n_blocks; b++) {
		pipe_block blk;
		CHECK(pipe_load_block(m, o.cal, b, &blk, &err) == MS_OK, "%s", err.msg);
		CHECK(pipe_analyze_block(&blk, &analysis, &r.stats[b], &err) == MS_OK, "%s", err.msg);
		pipe_free_block(&blk);
	}
	const char **labels = mdl_block_labels(m);
	CHECK(plan_init(&r.p, m->n_blocks, m->n_experts, labels) == 0);
	free(labels);
	pipe_plan_options po = {.method = GRP_MSMOE, .base = SIM_ROUTER_LOGITS, .groups = 6};
	CHECK(pipe_make_plan(r.stats, m->n_blocks, &po, &r.p, &err) == MS_OK, "%s", err.msg);
	const int E = m->n_experts, b = 1;
	pipe_block blk;
	pipe_merged mg;
	pipe_merge_options mo = pipe_merge_defaults();
	mo.align = ALIGN_NONE;
	mo.router = RFIT_MEAN;
	mo.refit = PIPE_REFIT_NONE;
	CHECK(pipe_load_block(m, o.cal, b, &blk, &err) == MS_OK, "%s", err.msg);
	CHECK(pipe_merge_block(&blk, &r.p, b, &mo, &mg, &err) == MS_OK, "%s", err.msg);
	CHECK(mg.router_bias && mg.cfg.routing.logit_bias == mg.router_bias);
	int checked = 0, multi = 0;
	double worst = 0.0, worst_router = 0.0;
	for (int s = 0; mg.router_bias && s < mg.groups; s++) {
		int members[64], n = 0;
		double freq[64], coef[64];
		for (int e = 0; e < E; e++)
			if (r.p.group[b * E + e] == mg.slot_group[s]) {
				members[n] = e;
				freq[n++] = r.p.frequency[b * E + e];
			}
		CHECK(merge_coefficients(n, freq, 0, MERGE_FREQUENCY, coef) == MS_OK);
		const expert_weights *w = &mg.experts[s];
		for (int i = 0; i < 2 * blk.f + blk.d; i++) {
			double want = 0.0;
			for (int q = 0; q < n; q++)
				want += coef[q] * blk.experts[members[q]].gate_bias[i];
			/* BF16 rounding of the merge: 2^-8 relative, plus float sums */
			worst = fmax(worst, fabs(want - w->gate_bias[i]) / fmax(fabs(want), 1e-2));
		}
		double want = 0.0;
		for (int q = 0; q < n; q++)
			want += coef[q] * blk.router_bias[members[q]];
		if (n == 1)
			CHECK(mg.router_bias[s] == blk.router_bias[members[0]], "slot %d: a group of one keeps its bias", s);
		worst_router = fmax(worst_router, fabs(want - mg.router_bias[s]) / fmax(fabs(want), 1e-2));
		multi += n > 1;
		checked++;
	}
	CHECK(checked == mg.groups && multi > 0, "%d groups checked, %d of several members", checked, multi);
	CHECK(worst <= 8e-3, "expert biases: worst relative difference %g", worst);
	CHECK(worst_router <= 8e-3, "router bias: worst relative difference %g", worst_router);
	pipe_free_merged(&mg);
	pipe_free_block(&blk);
	free_run(&r, m->n_blocks);
	close_sample(&o);
}

int main(void)
{
	snprintf(dir, sizeof dir, "%s/moescope-fused-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(dir))
		return 1;
	ms_error err = {0};
	static const char *const needed[] = {"qwen2moe-tiny", "qwen2moe-fused", "deepseek3-tiny", "gptoss-tiny"};
	for (int i = 0; i < 4; i++)
		if (samples_write(dir, needed[i], &err) != MS_OK) {
			fprintf(stderr, "samples: %s\n", err.msg);
			return 1;
		}
	RUN(test_layout_detected);
	RUN(test_fused_matches_per_expert);
	RUN(test_deepseek_routing_brute_force);
	RUN(test_bias_selects_but_does_not_weigh);
	RUN(test_merged_bias_is_the_dominants);
	RUN(test_bad_checkpoints);
	RUN(test_fused_mixtral_prefix);
	RUN(test_gptoss_loader);
	RUN(test_clamped_swiglu_brute_force);
	RUN(test_gptoss_router_brute_force);
	RUN(test_gptoss_alignment_keeps_function);
	RUN(test_gptoss_merged_biases);
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	return test_summary();
}
