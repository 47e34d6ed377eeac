/* The per-block pipeline sees each family's whole block: the shared expert (DeepSeek-V2's shared_experts, Qwen2-MoE's
 * shared_expert with its sigmoid gate) is loaded with the block and added to its output in evaluation, and PhiMoE
 * routes by sparsemixer. Checked against plain loops over the checkpoint's own tensors (read here by name, not
 * through the pipeline) and against plans whose answer is known by construction. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "analysis/routing.h"
#include "pipeline/pipeline.h"
#include "samples/samples.h"
#include "test.h"

#define MODELS "tests/data/forward/models"
#define T_TOKENS 384

static char dir[256];

/* Tokens at the scale of a normed hidden state: uniform with unit variance per coordinate. */
static float *tokens(int64_t T, int d, unsigned long long seed)
{
	float *x = malloc((size_t)(T * d) * sizeof *x);
	for (int64_t i = 0; x && i < T * d; i++)
		x[i] = 1.7320508f * test_rand_f(&seed);
	return x;
}

static float *read_tensor(const mdl_model *m, const char *name, int64_t n)
{
	const st_tensor *t = st_find(m->st, name);
	CHECK(t != NULL, "tensor %s missing", name);
	if (!t)
		return NULL;
	float *v = malloc((size_t)n * sizeof *v);
	ms_error err = {0};
	CHECK(v && st_read_f32(t, v, &err) == MS_OK, "%s", err.msg);
	return v;
}

/* The shared expert's output on token x by plain loops in double: g(x) down (silu(gate x) * up x), g = sigmoid(w . x)
 * with a gate vector, else 1. */
static void shared_by_loops(const float *gate, const float *up, const float *down, const float *sg, const float *x,
			    int d, int f, double *y)
{
	double *h = malloc((size_t)f * sizeof *h);
	for (int i = 0; i < f; i++) {
		double a = 0, b = 0;
		for (int c = 0; c < d; c++) {
			a += (double)gate[(size_t)i * d + c] * x[c];
			b += (double)up[(size_t)i * d + c] * x[c];
		}
		h[i] = a / (1.0 + exp(-a)) * b;
	}
	double g = 1.0;
	if (sg) {
		double z = 0;
		for (int c = 0; c < d; c++)
			z += (double)sg[c] * x[c];
		g = 1.0 / (1.0 + exp(-z));
	}
	for (int r = 0; r < d; r++) {
		double s = 0;
		for (int i = 0; i < f; i++)
			s += (double)down[(size_t)r * f + i] * h[i];
		y[r] = g * s;
	}
	free(h);
}

/* Block b of the model at path with T synthetic tokens (borrowed by the block; freed by the caller). */
static int open_block(const char *path, int b, mdl_model **m, pipe_block *blk, float **x)
{
	ms_error err = {0};
	*x = NULL;
	CHECK(mdl_open(path, m, &err) == MS_OK, "%s", err.msg);
	if (!*m)
		return 0;
	CHECK(pipe_load_block(*m, NULL, b, blk, &err) == MS_OK, "%s", err.msg);
	*x = tokens(T_TOKENS, blk->d, 0x5eedULL + (unsigned)b);
	CHECK(pipe_set_tokens(blk, *x, T_TOKENS, NULL, &err) == MS_OK, "%s", err.msg);
	return 1;
}

static void close_block(mdl_model *m, pipe_block *blk, float *x)
{
	blk->x = NULL;
	blk->T = 0;
	pipe_free_block(blk);
	free(x);
	mdl_close(m);
}

/* The full block output minus its routed part is the shared expert's output computed by loops from the tensors. */
static void check_shared(const char *path, int b, const char *prefix, int f_want, int gated)
{
	mdl_model *m = NULL;
	pipe_block blk;
	float *x;
	if (!open_block(path, b, &m, &blk, &x))
		return;
	CHECK(blk.shared.f == f_want, "%s: shared width %d, want %d", path, blk.shared.f, f_want);
	CHECK((blk.shared_gate != NULL) == gated, "%s: shared gate %s", path, blk.shared_gate ? "present" : "absent");
	const int d = blk.d, f = f_want;
	char name[256];
	snprintf(name, sizeof name, "%s.gate_proj.weight", prefix);
	float *gate = read_tensor(m, name, (int64_t)f * d);
	snprintf(name, sizeof name, "%s.up_proj.weight", prefix);
	float *up = read_tensor(m, name, (int64_t)f * d);
	snprintf(name, sizeof name, "%s.down_proj.weight", prefix);
	float *down = read_tensor(m, name, (int64_t)f * d);
	float *sg = NULL;
	if (gated) {
		snprintf(name, sizeof name, "model.layers.%d.mlp.shared_expert_gate.weight", m->blocks[b].layer);
		sg = read_tensor(m, name, d);
	}
	blk_config full = pipe_block_config(&blk), routed = full;
	routed.shared = NULL;
	routed.shared_gate = NULL;
	float *yf = malloc((size_t)T_TOKENS * d * sizeof *yf), *yr = malloc((size_t)T_TOKENS * d * sizeof *yr);
	double *ys = malloc((size_t)d * sizeof *ys);
	ms_error err = {0};
	CHECK(blk_forward(&full, x, T_TOKENS, yf, NULL, NULL, &err) == MS_OK, "%s", err.msg);
	CHECK(blk_forward(&routed, x, T_TOKENS, yr, NULL, NULL, &err) == MS_OK, "%s", err.msg);
	double num = 0, den = 0;
	for (int64_t t = 0; gate && up && down && t < T_TOKENS; t++) {
		shared_by_loops(gate, up, down, sg, x + t * d, d, f, ys);
		for (int c = 0; c < d; c++) {
			const double diff = ((double)yf[t * d + c] - yr[t * d + c]) - ys[c];
			num += diff * diff;
			den += ys[c] * ys[c];
		}
	}
	CHECK(den > 0, "%s: the shared expert gives nothing", path);
	/* float32 sums of d and f terms against double ones */
	CHECK(sqrt(num / den) < 1e-4, "%s: shared part off by %g (relative)", path, sqrt(num / den));
	free(yf);
	free(yr);
	free(ys);
	free(gate);
	free(up);
	free(down);
	free(sg);
	close_block(m, &blk, x);
}

static void setup(void)
{
	ms_error err = {0};
	snprintf(dir, sizeof dir, "%s/moescope-family-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	CHECK(mkdtemp(dir) != NULL);
	CHECK(samples_write(dir, "qwen2moe-tiny", &err) == MS_OK, "%s", err.msg);
}

static void test_deepseek_shared_expert_in_block_output(void)
{
	/* layer 0 is dense (first_k_dense_replace 1): block 0 is layer 1 */
	check_shared(MODELS "/deepseek-tiny", 0, "model.layers.1.mlp.shared_experts", 16, 0);
}

static void test_qwen2_gated_shared_expert_in_block_output(void)
{
	char path[512];
	snprintf(path, sizeof path, "%s/qwen2moe-tiny", dir);
	check_shared(path, 0, "model.layers.1.mlp.shared_expert", 128, 1);
}

/* The identity plan (every expert its own group) merged compact with the default refit must give the original
 * block back: the refit's target is the routed output (the full output minus the unchanged shared expert), so its
 * prior, the original down matrices, already fits it. Were the shared part left in the target, the refit would
 * fold it into the routed experts and the merged block, which adds the shared expert again, would count it twice. */
static void test_identity_merge_keeps_shared_block(void)
{
	mdl_model *m = NULL;
	pipe_block blk;
	float *x;
	if (!open_block(MODELS "/deepseek-tiny", 0, &m, &blk, &x))
		return;
	const int E = blk.E;
	const char *label = m->blocks[0].label;
	plan p;
	CHECK(plan_init(&p, 1, E, &label) == 0);
	for (int e = 0; e < E; e++) {
		p.group[e] = e;
		p.dominant[e] = 1;
		p.frequency[e] = 1.0 / E;
	}
	ms_error err = {0};
	pipe_merge_options o = pipe_merge_defaults();
	pipe_merged mg;
	blk_eval_result r;
	CHECK(pipe_merge_block(&blk, &p, 0, &o, &mg, &err) == MS_OK, "%s", err.msg);
	CHECK(mg.refitted == 1);
	CHECK(mg.cfg.shared == &blk.shared, "the merged block keeps the shared expert");
	CHECK(pipe_eval_block(&blk, &mg, &p, 0, 0, &r, &err) == MS_OK, "%s", err.msg);
	/* the refit's ridge pulls towards the (bf16-rounded) original, which it already is: only rounding remains */
	CHECK(r.rel_error < 1e-2, "identity merge error %g", r.rel_error);
	CHECK(r.routing_agreement > 0.97, "agreement %g", r.routing_agreement);
	pipe_free_merged(&mg);
	plan_free(&p);
	close_block(m, &blk, x);
}

/* PhiMoE routes by sparsemixer: the block's first choice takes weight 1 / (sum of exp(z_i - z_max) over the logits
 * within 2 eps of z_max, relatively), computed here by loops; and a compact merge to one expert is refused (the
 * second choice would have no candidate), while two experts and the aliased layout work. */
static void test_phimoe_sparsemixer_block(void)
{
	mdl_model *m = NULL;
	pipe_block blk;
	float *x;
	if (!open_block(MODELS "/phimoe-tiny", 0, &m, &blk, &x))
		return;
	CHECK(fabsf(blk.sparsemixer_eps - 0.01f) < 1e-9f, "eps %g", (double)blk.sparsemixer_eps);
	blk_config cfg = pipe_block_config(&blk);
	const int E = blk.E, d = blk.d;
	int *sel = malloc((size_t)T_TOKENS * 2 * sizeof *sel);
	float *w = malloc((size_t)T_TOKENS * 2 * sizeof *w);
	ms_error err = {0};
	CHECK(blk_route(&cfg, x, T_TOKENS, sel, w, &err) == MS_OK, "%s", err.msg);
	int loose = 0;   /* tokens whose first weight is not the softmax top-2 renormalised one */
	for (int64_t t = 0; t < T_TOKENS; t++) {
		double z[64];
		int a = 0;
		for (int e = 0; e < E; e++) {
			z[e] = 0;
			for (int c = 0; c < d; c++)
				z[e] += (double)blk.router[e * d + c] * x[t * d + c];
			a = z[e] > z[a] ? e : a;
		}
		double s = 0;
		for (int e = 0; e < E; e++)
			if ((z[a] - z[e]) / fmax(fabs(z[e]), z[a]) <= 0.02)
				s += exp(z[e] - z[a]);
		CHECK(sel[2 * t] == a, "token %lld: first choice %d, loops %d", (long long)t, sel[2 * t], a);
		CHECK(fabs(w[2 * t] - 1.0 / s) < 1e-5, "token %lld: weight %g, loops %g", (long long)t, w[2 * t], 1.0 / s);
		loose += fabs(w[2 * t] + w[2 * t + 1] - 1.0) > 1e-3;
	}
	CHECK(loose > T_TOKENS / 2, "sparsemixer weights are not renormalised top-2 (%d of %d differ)", loose, T_TOKENS);
	const char *label = m->blocks[0].label;
	plan p;
	CHECK(plan_init(&p, 1, E, &label) == 0);
	for (int G = 1; G <= 2; G++) {
		for (int e = 0; e < E; e++) {
			p.group[e] = e % G;
			p.dominant[e] = e < G;
			p.frequency[e] = 1.0 / E;
		}
		pipe_merge_options o = pipe_merge_defaults();
		pipe_merged mg;
		ms_error e2 = {0};
		ms_status st = pipe_merge_block(&blk, &p, 0, &o, &mg, &e2);
		if (G == 1) {
			CHECK(st == MS_ERR_ARG && strstr(e2.msg, "sparsemixer"), "G=1 compact: %s", e2.msg);
			o.layout = PIPE_LAYOUT_ALIASED;
			st = pipe_merge_block(&blk, &p, 0, &o, &mg, &e2);
		}
		CHECK(st == MS_OK, "G=%d: %s", G, e2.msg);
		blk_eval_result r;
		if (st == MS_OK) {
			CHECK(pipe_eval_block(&blk, &mg, &p, 0, 0, &r, &e2) == MS_OK, "%s", e2.msg);
			CHECK(isfinite(r.rel_error), "G=%d error %g", G, r.rel_error);
			pipe_free_merged(&mg);
		}
	}
	plan_free(&p);
	free(sel);
	free(w);
	close_block(m, &blk, x);
}

/* DeepSeek-V2's group_limited_greedy as transformers writes it, by brute force in double: softmax probabilities,
 * each group's best probability, the topk_group best groups by repeated argmax (lower group on ties), every other
 * expert's score set to 0, then the top-k scores by repeated argmax (lower expert on ties), weight = score x
 * scale. */
static void grouped_brute_force(const float *z, int E, int k, int G, int kg, float scale, int *idx, double *w)
{
	double p[64], s[64], best[64], mx = z[0], sum = 0;
	int chosen[64] = {0}, taken[64] = {0};
	for (int e = 1; e < E; e++)
		mx = fmax(mx, z[e]);
	for (int e = 0; e < E; e++)
		sum += p[e] = exp((double)z[e] - mx);
	for (int e = 0; e < E; e++)
		p[e] /= sum;
	for (int g = 0; g < G; g++) {
		best[g] = -1;
		for (int e = g * (E / G); e < (g + 1) * (E / G); e++)
			best[g] = fmax(best[g], p[e]);
	}
	for (int n = 0; n < kg; n++) {
		int b = -1;
		for (int g = 0; g < G; g++)
			if (!chosen[g] && (b < 0 || best[g] > best[b]))
				b = g;
		chosen[b] = 1;
	}
	for (int e = 0; e < E; e++)
		s[e] = chosen[e / (E / G)] ? p[e] : 0.0;
	for (int j = 0; j < k; j++) {
		int b = -1;
		for (int e = 0; e < E; e++)
			if (!taken[e] && (b < 0 || s[e] > s[b]))
				b = e;
		taken[b] = 1;
		idx[j] = b;
		w[j] = s[b] * scale;
	}
}

/* route_topk's group_limited_greedy rule against the brute force on logits drawn from four values, so that groups tie on their best
 * expert and experts tie within groups; and planted ties: with one group left to choose between two whose best
 * logits are equal, the lower group is taken. */
static void test_group_limited_routing_brute_force(void)
{
	static const struct { int E, k, G, kg; } shapes[] = {{8, 2, 4, 1}, {8, 3, 4, 2}, {16, 6, 8, 3}, {12, 4, 3, 2},
							       {64, 6, 8, 3}};
	unsigned long long seed = 0x9e3779b97f4a7c15ULL;
	for (size_t c = 0; c < sizeof shapes / sizeof shapes[0]; c++) {
		const int E = shapes[c].E, k = shapes[c].k, T = 500;
		mdl_routing r = {.top_k = k, .scale = 1.5f, .n_group = shapes[c].G, .topk_group = shapes[c].kg,
				 .group_score = MDL_GROUP_MAX};
		float *z = malloc((size_t)T * E * sizeof *z), *w = malloc((size_t)T * k * sizeof *w);
		int *idx = malloc((size_t)T * k * sizeof *idx), bidx[64];
		double bw[64];
		for (int i = 0; i < T * E; i++)
			z[i] = (float)(test_rand_u64(&seed) % 4) * 0.5f;
		CHECK(route_topk(z, T, E, &r, idx, w) == MS_OK);
		int bad = 0;
		for (int t = 0; t < T; t++) {
			grouped_brute_force(z + t * E, E, k, r.n_group, r.topk_group, r.scale, bidx, bw);
			for (int j = 0; j < k; j++)
				bad += idx[t * k + j] != bidx[j] || fabs(w[t * k + j] - bw[j]) > 1e-6 * fmax(1.0, bw[j]);
		}
		CHECK(bad == 0, "E %d top-%d, %d of %d groups: %d selections differ from the brute force", E, k,
		      r.topk_group, r.n_group, bad);
		free(z);
		free(w);
		free(idx);
	}
	/* groups {0,1} {2,3} {4,5} {6,7}: group 0 is best; groups 1 and 3 tie for the second place at 2.0 */
	const float z[8] = {3.0f, 0.0f, 2.0f, 1.9f, 0.5f, 0.5f, 1.0f, 2.0f};
	mdl_routing r = {.top_k = 3, .scale = 1.0f, .n_group = 4, .topk_group = 2, .group_score = MDL_GROUP_MAX};
	int idx[3];
	float w[3];
	CHECK(route_topk(z, 1, 8, &r, idx, w) == MS_OK);
	CHECK(idx[0] == 0 && idx[1] == 2 && idx[2] == 3, "selected %d %d %d, want 0 2 3 (group 1 wins the tie)", idx[0],
	      idx[1], idx[2]);
	/* plain top-k would take expert 7 (logit 2.0) before expert 3 */
	r.n_group = 1;
	CHECK(route_topk(z, 1, 8, &r, idx, w) == MS_OK);
	CHECK(idx[0] == 0 && idx[1] == 2 && idx[2] == 7, "plain top-3: %d %d %d", idx[0], idx[1], idx[2]);
}

/* config.json of m as mdl_config_set_experts rewrites it for n_out experts, parsed (NULL on failure). */
static cJSON *config_for(const mdl_model *m, int n_out, ms_error *err)
{
	size_t len;
	const char *text = mdl_config_text(m, &len);
	jedit *d = NULL;
	cJSON *c = NULL;
	if (jedit_parse("config.json", text, len, &d, err) == MS_OK && mdl_config_set_experts(m, d, n_out, err) == MS_OK)
		c = cJSON_Parse(jedit_text(d, &len));
	jedit_free(d);
	return c;
}

/* A DeepSeek-V2 config with group_limited_greedy opens with its groups, the block routes by them (an expert of an
 * ineligible group is never chosen), and the config a compact merge writes says greedy; Switch's per-expert
 * capacity is scaled to keep the block's total. */
static void test_group_config_and_capacity(void)
{
	char path[600], cmd[4096];
	snprintf(path, sizeof path, "%s/deepseek-groups", dir);
	snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp " MODELS "/deepseek-tiny/model.safetensors '%s/' && "
		 "sed 's/\"topk_method\": \"greedy\"/\"topk_method\": \"group_limited_greedy\", \"n_group\": 2, "
		 "\"topk_group\": 1/' " MODELS "/deepseek-tiny/config.json > '%s/config.json'", path, path, path);
	CHECK(system(cmd) == 0, "%s", cmd);
	mdl_model *m = NULL;
	pipe_block blk;
	float *x;
	if (!open_block(path, 0, &m, &blk, &x))
		return;
	CHECK(blk.routing.n_group == 2 && blk.routing.topk_group == 1, "groups %d, eligible %d", blk.routing.n_group,
	      blk.routing.topk_group);
	blk_config cfg = pipe_block_config(&blk);
	int *sel = malloc((size_t)T_TOKENS * 2 * sizeof *sel);
	ms_error err = {0};
	CHECK(blk_route(&cfg, x, T_TOKENS, sel, NULL, &err) == MS_OK, "%s", err.msg);
	int split = 0;   /* tokens whose two experts lie in different groups of two */
	for (int t = 0; t < T_TOKENS; t++)
		split += sel[2 * t] / 2 != sel[2 * t + 1] / 2;
	CHECK(split == 0, "%d tokens route across groups", split);
	cJSON *c = config_for(m, 3, &err);
	CHECK(c != NULL, "%s", err.msg);
	if (!c)
		return;
	const cJSON *method = cJSON_GetObjectItemCaseSensitive(c, "topk_method");
	CHECK(cJSON_IsString(method) && strcmp(method->valuestring, "greedy") == 0, "compact config keeps groups");
	CHECK(cJSON_GetObjectItemCaseSensitive(c, "n_routed_experts")->valueint == 3);
	cJSON_Delete(c);
	free(sel);
	close_block(m, &blk, x);

	char sw[600];
	snprintf(sw, sizeof sw, "%s/switch-tiny", dir);
	CHECK(samples_write(dir, "switch-tiny", &err) == MS_OK, "%s", err.msg);
	CHECK(mdl_open(sw, &m, &err) == MS_OK, "%s", err.msg);
	if (!m)
		return;
	const double cap = cJSON_GetObjectItemCaseSensitive((const cJSON *)mdl_config_json(m), "expert_capacity")->valuedouble;
	c = config_for(m, 3, &err);
	CHECK(c != NULL, "%s", err.msg);
	if (!c) {
		mdl_close(m);
		return;
	}
	/* 8 experts of capacity cap hold 8 cap tokens; 3 experts need ceil(8 cap / 3) each */
	CHECK(cJSON_GetObjectItemCaseSensitive(c, "expert_capacity")->valuedouble == ceil(8.0 * cap / 3.0),
	      "capacity %g from %g", cJSON_GetObjectItemCaseSensitive(c, "expert_capacity")->valuedouble, cap);
	cJSON_Delete(c);
	mdl_close(m);
}

/* Switch's capacity, by construction: top-1 routing of two sequences; within each, in token order, the first
 * `capacity` tokens of an expert keep their output and the later ones give 0, the rest of the output unchanged.
 * Without the sequences (seq NULL) nothing is dropped. And the evaluation of the aliased layout, which keeps the
 * router rows and so drops the same tokens, stays exact. */
static void test_switch_capacity(void)
{
	char sw[600];
	snprintf(sw, sizeof sw, "%s/switch-tiny", dir);
	mdl_model *m = NULL;
	pipe_block blk;
	float *x;
	if (!open_block(sw, 0, &m, &blk, &x))
		return;
	CHECK(blk.routing.capacity == 64, "capacity %d read from config.json", blk.routing.capacity);
	const int d = blk.d, cap = 5, T = T_TOKENS;
	int32_t *seq = malloc((size_t)T * sizeof *seq);
	for (int t = 0; t < T; t++)
		seq[t] = t < 150 ? 7 : 2;   /* two sequences: 150 and 234 tokens */
	blk_config plain = pipe_block_config(&blk), capped = plain;
	capped.routing.capacity = cap;
	capped.seq = seq;
	float *y0 = malloc((size_t)T * d * sizeof *y0), *y1 = malloc((size_t)T * d * sizeof *y1);
	int *sel = malloc((size_t)T * sizeof *sel);
	ms_error err = {0};
	CHECK(blk_forward(&plain, x, T, y0, sel, NULL, &err) == MS_OK, "%s", err.msg);
	CHECK(blk_forward(&capped, x, T, y1, NULL, NULL, &err) == MS_OK, "%s", err.msg);
	int count[2][64] = {{0}}, dropped = 0, bad = 0;
	for (int t = 0; t < T; t++) {
		const int keep = ++count[t >= 150][sel[t]] <= cap;
		dropped += !keep;
		for (int c = 0; c < d; c++)
			bad += y1[t * d + c] != (keep ? y0[t * d + c] : 0.0f);
	}
	CHECK(dropped > 0 && dropped < T, "%d of %d tokens dropped: the case tests nothing", dropped, T);
	CHECK(bad == 0, "%d outputs differ from the rule", bad);
	capped.seq = NULL;
	CHECK(blk_forward(&capped, x, T, y1, NULL, NULL, &err) == MS_OK, "%s", err.msg);
	CHECK(memcmp(y0, y1, (size_t)T * d * sizeof *y0) == 0, "without sequences nothing is dropped");
	/* identity plan, aliased: same rows, same drops, same outputs */
	const int E = blk.E;
	const char *label = m->blocks[0].label;
	plan p;
	CHECK(plan_init(&p, 1, E, &label) == 0);
	for (int e = 0; e < E; e++) {
		p.group[e] = e;
		p.dominant[e] = 1;
		p.frequency[e] = 1.0 / E;
	}
	CHECK(pipe_set_tokens(&blk, x, T, seq, &err) == MS_OK, "%s", err.msg);
	blk.routing.capacity = cap;
	pipe_merge_options o = pipe_merge_defaults();
	o.layout = PIPE_LAYOUT_ALIASED;
	pipe_merged mg;
	blk_eval_result r;
	CHECK(pipe_merge_block(&blk, &p, 0, &o, &mg, &err) == MS_OK, "%s", err.msg);
	CHECK(pipe_eval_block(&blk, &mg, &p, 0, 64, &r, &err) == MS_OK, "%s", err.msg);
	CHECK(r.rel_error == 0.0 && r.tokens == blk.n_held, "aliased identity: error %g on %lld tokens (%lld held out: "
	      "a capacity evaluates them all)", r.rel_error, (long long)r.tokens, (long long)blk.n_held);
	pipe_free_merged(&mg);
	plan_free(&p);
	free(seq);
	free(y0);
	free(y1);
	free(sel);
	close_block(m, &blk, x);
}

/* |target - y|_F / |target|_F of cfg's routed output y on x [n, d] against the original block's on the same
 * tokens, both routed by blk_route with seq [n] (NULL: no capacity). */
static double routed_error(const blk_config *orig, const blk_config *merged, const float *x, int64_t n,
			   const int32_t *seq)
{
	const int d = orig->d;
	blk_config a = *orig, b = *merged;
	a.seq = b.seq = seq;
	float *ya = malloc((size_t)(n * d) * sizeof *ya), *yb = malloc((size_t)(n * d) * sizeof *yb);
	ms_error err = {0};
	CHECK(blk_forward(&a, x, n, ya, NULL, NULL, &err) == MS_OK, "%s", err.msg);
	CHECK(blk_forward(&b, x, n, yb, NULL, NULL, &err) == MS_OK, "%s", err.msg);
	double num = 0, den = 0;
	for (int64_t i = 0; i < n * d; i++) {
		num += ((double)ya[i] - yb[i]) * ((double)ya[i] - yb[i]);
		den += (double)ya[i] * ya[i];
	}
	free(ya);
	free(yb);
	return sqrt(num / den);
}

/* The fits see the capacity as evaluation does: a compact merge of switch-tiny to 4 experts with a capacity of 5
 * per sequence (48-token sequences: tokens are dropped) measures its router candidates on every fit token, with
 * the capacity; the figure it reports for its router is recomputed here from the fit tokens, and differs from
 * the figure without the capacity, so a fit that left the capacity out would fail. */
static void test_switch_capacity_fits(void)
{
	char sw[600];
	snprintf(sw, sizeof sw, "%s/switch-tiny", dir);
	mdl_model *m = NULL;
	pipe_block blk;
	float *x;
	if (!open_block(sw, 0, &m, &blk, &x))
		return;
	const int E = blk.E, T = T_TOKENS, d = blk.d;
	int32_t *seq = malloc((size_t)T * sizeof *seq);
	for (int t = 0; t < T; t++)
		seq[t] = t / 48;
	ms_error err = {0};
	CHECK(pipe_set_tokens(&blk, x, T, seq, &err) == MS_OK, "%s", err.msg);
	blk.routing.capacity = 5;
	const char *label = m->blocks[0].label;
	plan p;
	CHECK(plan_init(&p, 1, E, &label) == 0);
	for (int e = 0; e < E; e++) {
		p.group[e] = e % 4;
		p.dominant[e] = e < 4;
		p.frequency[e] = 1.0 / E;
	}
	pipe_merge_options o = pipe_merge_defaults();
	o.refit = PIPE_REFIT_NONE;   /* the experts stay as the router candidates were measured with */
	pipe_merged mg;
	CHECK(pipe_merge_block(&blk, &p, 0, &o, &mg, &err) == MS_OK, "%s", err.msg);
	CHECK(mg.fit_tokens == blk.n_fit, "%lld fit tokens of %lld: a capacity needs whole sequences",
	      (long long)mg.fit_tokens, (long long)blk.n_fit);
	float *xf = malloc((size_t)(blk.n_fit * d) * sizeof *xf);
	int32_t *sf = malloc((size_t)blk.n_fit * sizeof *sf);
	for (int64_t i = 0; i < blk.n_fit; i++) {
		memcpy(xf + i * d, x + blk.fit_idx[i] * d, (size_t)d * sizeof *xf);
		sf[i] = seq[blk.fit_idx[i]];
	}
	blk_config orig = pipe_block_config(&blk);
	const double with = routed_error(&orig, &mg.cfg, xf, blk.n_fit, sf);
	const double without = routed_error(&orig, &mg.cfg, xf, blk.n_fit, NULL);
	CHECK_CLOSE(mg.router_error[mg.router_used], with, 1e-6);
	CHECK(fabs(with - without) > 1e-3, "the capacity changes nothing here (%g, %g): the case tests nothing", with,
	      without);
	pipe_free_merged(&mg);
	plan_free(&p);
	free(xf);
	free(sf);
	free(seq);
	close_block(m, &blk, x);
}

int main(void)
{
	RUN(setup);
	RUN(test_deepseek_shared_expert_in_block_output);
	RUN(test_qwen2_gated_shared_expert_in_block_output);
	RUN(test_identity_merge_keeps_shared_block);
	RUN(test_phimoe_sparsemixer_block);
	RUN(test_group_limited_routing_brute_force);
	RUN(test_group_config_and_capacity);
	RUN(test_switch_capacity);
	RUN(test_switch_capacity_fits);
	char cmd[600];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	return test_summary();
}
