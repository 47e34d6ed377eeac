/* Thread determinism: the whole per-block pipeline (routing statistics, the four similarity bases, stable ranks,
 * REAP saliency, the msmoe plan, the aligned merge with its router chosen among the fits, the refit of its down
 * projections on the fit tokens, the layer evaluation on the held-out ones) run on one, two
 * and three threads must give bit-identical results. moescope splits the work itself (analysis/par.h) and runs
 * OpenBLAS on one thread; to show that an outside setting cannot change that, OpenBLAS is first told to use four
 * threads. The block is large enough (E 8, d 192, f 320, 768 tokens) that every parallel path has several tasks.
 * The budget search (pipeline/search.h) on a sample model, proxies, confirmed figures and plan, the same.
 * tests/cli/threads.sh checks the commands' JSON the same way. */
#include <cblas.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "analysis/par.h"
#include "pipeline/pipeline.h"
#include "pipeline/search.h"
#include "samples/samples.h"
#include "tests/test.h"

enum { E = 8, TOPK = 2, D = 192, F = 320, T = 768, G = 3 };

/* One block with some structure: experts 2i and 2i + 1 share most of their weights, so grouping and alignment
 * have something to find; routers lean the same way. */
typedef struct {
	pipe_block blk;
	float router[E * D];
	int identity[E];
	expert_weights experts[E];
	int64_t fit_idx[T], held_idx[T];
} test_block;

static void fill_block(test_block *tb, float *weights, float *x)
{
	unsigned long long s = 12345;
	const int64_t per = 3LL * F * D;
	for (int64_t i = 0; i < per; i++) {
		for (int e = 0; e < E; e += 2) {
			const float shared = test_rand_f(&s) * 0.05f;
			weights[e * per + i] = shared + 0.02f * test_rand_f(&s);
			weights[(e + 1) * per + i] = shared + 0.02f * test_rand_f(&s);
		}
	}
	for (int i = 0; i < E * D; i++)
		tb->router[i] = 0.1f * test_rand_f(&s) + (i / D % 2 ? tb->router[i - D] * 0.5f : 0.0f);
	for (int64_t i = 0; i < (int64_t)T * D; i++)
		x[i] = test_rand_f(&s) + 0.3f * (float)((i / D) % 3);
	for (int e = 0; e < E; e++) {
		float *base = weights + e * per;
		tb->identity[e] = e;
		tb->experts[e] = (expert_weights){.gate = base, .up = base + F * D, .down = base + 2 * F * D, .d = D,
						  .f = F, .act = MDL_ACT_SILU_GLU};
	}
	pipe_block *b = &tb->blk;
	*b = (pipe_block){.block = 0, .E = E, .d = D, .f = F, .T = T, .act = MDL_ACT_SILU_GLU,
			  .routing = {.top_k = TOPK, .renormalize = 1, .scale = 1.0f}, .router = tb->router,
			  .weights = weights, .per_expert = per, .experts = tb->experts, .x = x,
			  .identity = tb->identity, .fit_idx = tb->fit_idx, .held_idx = tb->held_idx};
	b->split = pipe_split_tokens(NULL, T, tb->fit_idx, &b->n_fit, tb->held_idx, &b->n_held);
}

/* Everything one run produces. */
typedef struct {
	pipe_stats stats;
	plan p;
	pipe_merged mg;
	blk_eval_result eval;
	ms_status st;
} run_result;

static void run_pipeline(const pipe_block *b, int threads, run_result *r)
{
	openblas_set_num_threads(4);
	CHECK(par_set_threads(threads) == threads && par_threads() == threads, "asked for %d threads", threads);
	CHECK(openblas_get_num_threads() == 1, "OpenBLAS runs %d threads", openblas_get_num_threads());
	ms_error err = {0};
	const char *labels[1] = {"0"};
	pipe_analyze_options ao = {.bases = (1u << SIM_BASE_COUNT) - 1, .stable_ranks = 1, .reap = 1};
	pipe_plan_options po = {.method = GRP_MSMOE, .base = SIM_ROUTER_LOGITS, .groups = G};
	pipe_merge_options mo = pipe_merge_defaults();
	r->st = pipe_analyze_block(b, &ao, &r->stats, &err);
	if (r->st == MS_OK)
		r->st = plan_init(&r->p, 1, E, labels) == 0 ? MS_OK : MS_ERR_NOMEM;
	if (r->st == MS_OK)
		r->st = pipe_make_plan(&r->stats, 1, &po, &r->p, &err);
	if (r->st == MS_OK)
		r->st = pipe_merge_block(b, &r->p, 0, &mo, &r->mg, &err);
	if (r->st == MS_OK)
		r->st = pipe_eval_block(b, &r->mg, &r->p, 0, 0, &r->eval, &err);
	CHECK(r->st == MS_OK, "pipeline with %d threads: %s", threads, err.msg);
}

static void free_result(run_result *r)
{
	pipe_free_stats(&r->stats);
	plan_free(&r->p);
	pipe_free_merged(&r->mg);
}

static int same_doubles(const double *a, const double *b, size_t n)
{
	return (!a && !b) || (a && b && memcmp(a, b, n * sizeof *a) == 0);
}

static void compare_stats(const pipe_stats *a, const pipe_stats *b)
{
	CHECK(same_doubles(a->frequency, b->frequency, E), "frequencies differ");
	CHECK(same_doubles(a->coact, b->coact, (size_t)E * E), "co-activation differs");
	CHECK(a->usage_entropy == b->usage_entropy && a->cv == b->cv, "entropy or cv differs");
	for (int base = 0; base < SIM_BASE_COUNT; base++) {
		CHECK(a->similarity[base] != NULL, "%s similarity missing", sim_base_name((sim_base)base));
		CHECK(same_doubles(a->similarity[base], b->similarity[base], (size_t)E * E), "%s similarity differs",
		      sim_base_name((sim_base)base));
		CHECK(same_doubles(a->distance[base], b->distance[base], (size_t)E * E), "%s distance differs",
		      sim_base_name((sim_base)base));
	}
	CHECK(same_doubles(a->stable_rank, b->stable_rank, (size_t)E * MDL_NMAT), "stable ranks differ");
	CHECK(same_doubles(a->reap, b->reap, E), "REAP saliency differs");
}

static void compare_merge(const run_result *a, const run_result *b)
{
	CHECK(memcmp(a->p.group, b->p.group, E * sizeof(int)) == 0, "plans group differently");
	CHECK(memcmp(a->p.dominant, b->p.dominant, E) == 0, "plans pick different dominants");
	CHECK(a->mg.n_slots == b->mg.n_slots && a->mg.n_router == b->mg.n_router, "merged layouts differ");
	if (a->mg.n_slots != b->mg.n_slots || a->mg.n_router != b->mg.n_router)
		return;
	CHECK(memcmp(a->mg.weights, b->mg.weights, (size_t)a->mg.n_slots * a->mg.per_expert * sizeof(float)) == 0,
	      "merged weights differ");
	CHECK(memcmp(a->mg.router, b->mg.router, (size_t)a->mg.n_router * D * sizeof(float)) == 0,
	      "fitted router rows differ");
	CHECK(a->mg.refitted && b->mg.refitted, "the default merge refits");
	CHECK(a->mg.router_used == b->mg.router_used, "auto chose different routers");
	CHECK(memcmp(a->mg.router_error, b->mg.router_error, sizeof a->mg.router_error) == 0,
	      "router candidates' errors differ");
	CHECK(a->mg.fit_error_refit == b->mg.fit_error_refit, "refit errors differ");
	CHECK(a->eval.rel_error == b->eval.rel_error, "layer error %.17g vs %.17g", a->eval.rel_error,
	      b->eval.rel_error);
	CHECK(a->eval.routing_agreement == b->eval.routing_agreement, "routing agreement differs");
	CHECK(a->eval.flops_after == b->eval.flops_after, "FLOPs differ");
}

/* The pipeline gives the same bits on one, two and three threads. */
static void test_thread_counts_agree(void)
{
	static test_block tb;
	float *weights = malloc((size_t)E * 3 * F * D * sizeof *weights); /* [E, 3 F D] */
	float *x = malloc((size_t)T * D * sizeof *x);                    /* [T, D] */
	CHECK(weights && x);
	if (!weights || !x) {
		free(weights);
		free(x);
		return;
	}
	fill_block(&tb, weights, x);
	run_result one = {0};
	run_pipeline(&tb.blk, 1, &one);
	for (int threads = 2; threads <= 3; threads++) {
		run_result other = {0};
		run_pipeline(&tb.blk, threads, &other);
		if (one.st == MS_OK && other.st == MS_OK) {
			compare_stats(&one.stats, &other.stats);
			compare_merge(&one, &other);
		}
		free_result(&other);
	}
	/* The data is not degenerate: some experts merged, and the merge changed the output. */
	CHECK(one.st != MS_OK || (plan_groups(&one.p, 0) == G && one.eval.rel_error > 0.0), "G %d, error %g",
	      plan_groups(&one.p, 0), one.eval.rel_error);
	free_result(&one);
	free(weights);
	free(x);
}

/* A second run with the same thread count repeats itself exactly (no state carried between runs). */
static void test_repeatable(void)
{
	static test_block tb;
	float *weights = malloc((size_t)E * 3 * F * D * sizeof *weights);
	float *x = malloc((size_t)T * D * sizeof *x);
	CHECK(weights && x);
	if (!weights || !x) {
		free(weights);
		free(x);
		return;
	}
	fill_block(&tb, weights, x);
	run_result a = {0}, b = {0};
	run_pipeline(&tb.blk, 2, &a);
	run_pipeline(&tb.blk, 2, &b);
	if (a.st == MS_OK && b.st == MS_OK) {
		compare_stats(&a.stats, &b.stats);
		compare_merge(&a, &b);
	}
	free_result(&a);
	free_result(&b);
	free(weights);
	free(x);
}

/* One search on mixtral-tiny at 3 of its 4 blocks' experts with `threads` threads (a fresh cache each time). */
static ms_status run_search(const arch_model *a, const tok_set *tok, int threads, srch_result *r, ms_error *err)
{
	par_set_threads(threads);
	srch_cache *c = NULL;
	srch_options o = srch_defaults();
	o.keep = 3 * a->m->n_experts;
	o.confirm = 2;
	o.samples = 2;
	o.max_candidates = 4;
	ms_status st = srch_cache_new(a, tok, &c, err);
	if (st == MS_OK)
		st = srch_run(c, &o, r, err);
	srch_cache_free(c);
	return st;
}

static void test_search_thread_counts_agree(void)
{
	char dir[256], path[300];
	snprintf(dir, sizeof dir, "%s/moescope-threads-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	CHECK(mkdtemp(dir) != NULL);
	ms_error err = {0};
	mdl_model *m = NULL;
	arch_model *a = NULL;
	snprintf(path, sizeof path, "%s/mixtral-tiny", dir);
	CHECK(samples_write(dir, "mixtral-tiny", &err) == MS_OK, "%s", err.msg);
	CHECK(mdl_open(path, &m, &err) == MS_OK, "%s", err.msg);
	CHECK(m && arch_open(m, &a, &err) == MS_OK, "%s", err.msg);
	enum { NS = 4, LEN = 48 };
	int32_t ids[NS * LEN];
	int64_t starts[NS + 1];
	unsigned long long seed = 31;
	for (int i = 0; i < NS * LEN; i++)
		ids[i] = (int32_t)(test_rand_u64(&seed) % 256u);
	for (int i = 0; i <= NS; i++)
		starts[i] = (int64_t)i * LEN;
	const tok_set tok = {.T = NS * LEN, .ids = ids, .n_seq = NS, .seq_start = starts};
	srch_result r[3];
	int ok = a != NULL;
	for (int t = 0; ok && t < 3; t++) {
		ok = run_search(a, &tok, t + 1, &r[t], &err) == MS_OK;
		CHECK(ok, "%d threads: %s", t + 1, err.msg);
		if (!ok)
			for (int u = 0; u < t; u++)
				srch_result_free(&r[u]);
	}
	for (int t = 1; ok && t < 3; t++) {
		const size_t nb = (size_t)r[0].n_blocks, ne = (size_t)r[0].n_experts;
		CHECK(memcmp(r[0].proxy, r[t].proxy, nb * ne * sizeof(double)) == 0, "%d threads: proxies differ", t + 1);
		CHECK(r[0].n_cand == r[t].n_cand && r[0].best == r[t].best, "%d threads: other allocations", t + 1);
		for (int i = 0; i < r[0].n_cand && i < r[t].n_cand; i++) {
			const srch_candidate *x = &r[0].cand[i], *y = &r[t].cand[i];
			CHECK(memcmp(x->groups, y->groups, nb * sizeof(int)) == 0, "allocation %d", i);
			CHECK(memcmp(&x->kl, &y->kl, sizeof x->kl) == 0 && memcmp(&x->ppl, &y->ppl, sizeof x->ppl) == 0 &&
			      memcmp(&x->top1, &y->top1, sizeof x->top1) == 0, "%d threads: allocation %d's figures",
			      t + 1, i);
		}
		CHECK(memcmp(r[0].plan.group, r[t].plan.group, nb * ne * sizeof(int)) == 0, "%d threads: plan", t + 1);
	}
	if (ok) {
		CHECK(r[0].cand[r[0].best].kl > 0.0, "the search merged something");
		for (int t = 0; t < 3; t++)
			srch_result_free(&r[t]);
	}
	par_set_threads(0);
	arch_close(a);
	mdl_close(m);
	char cmd[400];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	CHECK(system(cmd) == 0);
}

int main(void)
{
	RUN(test_thread_counts_agree);
	RUN(test_repeatable);
	RUN(test_search_thread_counts_agree);
	par_shutdown();
	return test_summary();
}
