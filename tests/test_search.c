/* The per-block budget search (pipeline/search.h): the k-best allocation against brute-force enumeration, the rank
 * correlation against hand-worked values, and the whole search on a planted model whose best allocation is known
 * by construction (tests/search_fixture.h): it must find that allocation, be no worse in KL than uniform G and
 * the global allocation at the same budget, reuse its cache, and stop when cancelled. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "analysis/par.h"
#include "pipeline/search.h"
#include "tests/search_fixture.h"
#include "tests/test.h"

static char dir[256];
static char model_path[512];   /* the planted model, written once */
static int planted_ok;

/* ---- the allocation -------------------------------------------------------------------------------------------- */

typedef struct {
	double cost;
	int g[4];
} brute_alloc;

static int cmp_brute(const void *a, const void *b)
{
	const brute_alloc *x = a, *y = b;
	return x->cost < y->cost ? -1 : x->cost > y->cost;
}

/* Every allocation of 4 blocks of 5 within keep, enumerated, sorted by cost. */
static int brute_force(const double *cost, int keep, brute_alloc *out)
{
	int n = 0;
	for (int a = 1; a <= 5; a++)
		for (int b = 1; b <= 5; b++)
			for (int c = 1; c <= 5; c++)
				for (int d = 1; d <= 5; d++) {
					const int g[4] = {a, b, c, d};
					if (a + b + c + d > keep)
						continue;
					double s = 0.0;
					int ok = 1;
					for (int i = 0; i < 4; i++) {
						ok &= !isnan(cost[i * 5 + g[i] - 1]);
						s += cost[i * 5 + g[i] - 1];
					}
					if (!ok)
						continue;
					out[n].cost = s;
					memcpy(out[n].g, g, sizeof g);
					n++;
				}
	qsort(out, (size_t)n, sizeof *out, cmp_brute);
	return n;
}

static void test_best_allocations_match_brute_force(void)
{
	unsigned long long seed = 7;
	static brute_alloc all[625];
	for (int trial = 0; trial < 40; trial++) {
		double cost[20];
		for (int i = 0; i < 20; i++)   /* distinct random costs; some counts not allowed */
			cost[i] = trial % 3 == 0 && i % 7 == 3 ? NAN : 1.0 + test_rand_f(&seed);
		const int keep = 4 + trial % 17, k = 6;
		int alloc[6 * 4];
		double costs[6];
		const int found = srch_best_allocations(cost, 4, 5, keep, k, alloc, costs);
		const int n = brute_force(cost, keep, all);
		CHECK(found == (n < k ? n : k), "trial %d: %d found, %d exist", trial, found, n);
		for (int i = 0; i < found && i < n; i++) {
			CHECK_CLOSE(costs[i], all[i].cost, 1e-12);
			double s = 0.0;
			int kept = 0;
			for (int b = 0; b < 4; b++) {
				s += cost[b * 5 + alloc[i * 4 + b] - 1];
				kept += alloc[i * 4 + b];
			}
			CHECK_CLOSE(s, costs[i], 1e-12);
			CHECK(kept <= keep, "trial %d: %d kept over %d", trial, kept, keep);
			for (int j = 0; j < i; j++)
				CHECK(memcmp(alloc + i * 4, alloc + j * 4, 4 * sizeof(int)) != 0, "duplicate allocation");
		}
	}
	int alloc[4];
	double c1;
	const double one[20] = {0};
	CHECK(srch_best_allocations(one, 4, 5, 3, 1, alloc, &c1) == 0, "a budget below one expert per block");
}

static void test_spearman(void)
{
	const double x[5] = {1, 2, 3, 4, 5}, up[5] = {10, 20, 25, 40, 100}, down[5] = {5, 4, 3, 2, 1};
	CHECK_CLOSE(srch_spearman(x, up, 5), 1.0, 1e-12);
	CHECK_CLOSE(srch_spearman(x, down, 5), -1.0, 1e-12);
	/* by hand: ranks of y = {1, 3, 2, 5, 4}: sum d^2 = 4, rho = 1 - 6 * 4 / (5 * 24) = 0.8 */
	const double y[5] = {0.1, 0.3, 0.2, 0.5, 0.4};
	CHECK_CLOSE(srch_spearman(x, y, 5), 0.8, 1e-12);
	/* ties get the average rank: y ranks {1.5, 1.5, 3, 4}; Pearson of the ranks = 0.9486832980505138 */
	const double xt[4] = {1, 2, 3, 4}, yt[4] = {7, 7, 8, 9};
	CHECK_CLOSE(srch_spearman(xt, yt, 4), 0.9486832980505138, 1e-12);
	const double flat[4] = {3, 3, 3, 3};
	CHECK(isnan(srch_spearman(xt, flat, 4)));
}

/* ---- the planted model ----------------------------------------------------------------------------------------- */

enum { N_SEQ = 8, SEQ_LEN = 40 };

typedef struct {
	mdl_model *m;
	arch_model *a;
	int32_t ids[N_SEQ * SEQ_LEN];
	int64_t starts[N_SEQ + 1];
	tok_set tok;
} planted;

static int planted_open(planted *p)
{
	memset(p, 0, sizeof *p);
	ms_error err = {0};
	if (!planted_ok)
		return -1;
	CHECK(mdl_open(model_path, &p->m, &err) == MS_OK, "%s", err.msg);
	CHECK(p->m && arch_open(p->m, &p->a, &err) == MS_OK, "%s", err.msg);
	if (!p->a)
		return -1;
	p->tok = planted_tokens(N_SEQ, SEQ_LEN, p->a->vocab, p->ids, p->starts);
	return 0;
}

static void planted_close(planted *p)
{
	arch_close(p->a);
	mdl_close(p->m);
}

/* The planted model and a search cache over its tokens: 0, or -1 after a failed check with everything closed. */
static int planted_start(planted *p, srch_cache **c)
{
	ms_error err = {0};
	*c = NULL;
	if (planted_open(p) != 0) {
		CHECK(0, "cannot build the planted model");
		planted_close(p);
		return -1;
	}
	CHECK(srch_cache_new(p->a, &p->tok, c, &err) == MS_OK, "%s", err.msg);
	if (!*c) {
		planted_close(p);
		return -1;
	}
	return 0;
}

static void planted_stop(planted *p, srch_cache *c)
{
	srch_cache_free(c);
	planted_close(p);
}

/* Small settings that keep the test quick: every count of 1..8 measured, 3 by proxy and 3 samples confirmed; the
 * aliased layout, in which the planted twins merge losslessly (tests/search_fixture.h). */
static srch_options quick(int keep)
{
	srch_options o = srch_defaults();
	o.keep = keep;
	o.mo.layout = PIPE_LAYOUT_ALIASED;
	o.confirm = 3;
	o.samples = 3;
	return o;
}

static const srch_candidate *kind(const srch_result *r, srch_kind k)
{
	for (int i = 0; i < r->n_cand; i++)
		if (r->cand[i].kind == k)
			return &r->cand[i];
	return NULL;
}

static void test_planted_allocation_found(void)
{
	planted p;
	srch_cache *c;
	if (planted_start(&p, &c) != 0)
		return;
	ms_error err = {0};
	const int nb = p.m->n_blocks, E = p.m->n_experts;
	srch_options o = quick(nb * E - 2);
	srch_result r;
	CHECK(srch_run(c, &o, &r, &err) == MS_OK, "%s", err.msg);
	if (err.code == MS_OK) {
		const int *g = r.cand[r.best].groups;
		for (int b = 0; b < nb; b++)
			CHECK(g[b] == (planted_is_twin(b) ? E - 1 : E), "block %d: %d groups", b, g[b]);
		/* the plan merges exactly the twins */
		for (int b = 0; b < nb; b++)
			if (planted_is_twin(b))
				CHECK(r.plan.group[b * E + 0] == r.plan.group[b * E + 1], "block %d: twins apart", b);
		/* by proxy alone the planted allocation is the best too: the twins' merge is nearly free */
		const srch_candidate *best_proxy = kind(&r, SRCH_PROXY);
		CHECK(best_proxy && memcmp(best_proxy->groups, g, (size_t)nb * sizeof *g) == 0,
		      "the proxy's favourite differs");
		const srch_candidate *u = &r.cand[r.uniform];
		CHECK(r.cand[r.best].kl < u->kl, "searched KL %g, uniform %g", r.cand[r.best].kl, u->kl);
		CHECK(r.cand[r.best].kl < 0.1 * u->kl, "the twin merge should cost far less: %g against %g",
		      r.cand[r.best].kl, u->kl);
		for (int i = 0; i < r.n_cand; i++)
			CHECK(!r.cand[i].confirmed || r.cand[i].kl >= r.cand[r.best].kl, "allocation %d beats the best", i);
		CHECK(r.n_ranked >= 3 && r.spearman > 0.0, "proxy and KL should agree: %g over %d", r.spearman,
		      r.n_ranked);
		CHECK(r.held_tokens == 2 * (SEQ_LEN - 1), "held-out tokens %lld", (long long)r.held_tokens);
		srch_result_free(&r);
	}
	planted_stop(&p, c);
}

/* At budgets where uniform G is defined, the searched plan's KL is no worse than uniform's and global's, each
 * confirmed by the forward pass; a repeated search reuses everything; another budget re-measures only blocks
 * whose reference upstream changed. */
static void test_planted_budgets_and_cache(void)
{
	planted p;
	srch_cache *c;
	if (planted_start(&p, &c) != 0)
		return;
	ms_error err = {0};
	const int nb = p.m->n_blocks;
	const int budgets[2] = {6 * nb, 4 * nb};
	for (int i = 0; c && i < 2; i++) {
		srch_options o = quick(budgets[i]);
		srch_result r;
		CHECK(srch_run(c, &o, &r, &err) == MS_OK, "%s", err.msg);
		if (err.code != MS_OK)
			break;
		const srch_candidate *best = &r.cand[r.best];
		CHECK(best->kept <= budgets[i]);
		CHECK(r.uniform >= 0 && r.cand[r.uniform].confirmed && best->kl <= r.cand[r.uniform].kl);
		CHECK(r.global >= 0 && r.cand[r.global].confirmed && best->kl <= r.cand[r.global].kl);
		for (int b = 0; b < nb; b++)
			CHECK(plan_groups(&r.plan, b) == best->groups[b]);
		if (i == 0) {
			CHECK(r.merges == nb * p.m->n_experts, "%d merges", r.merges);
			srch_result again;
			CHECK(srch_run(c, &o, &again, &err) == MS_OK, "%s", err.msg);
			if (err.code == MS_OK) {
				CHECK(again.merges == 0 && again.forwards == 0, "%d merges, %d passes on a repeat",
				      again.merges, again.forwards);
				CHECK(again.best == r.best && again.cand[again.best].kl == best->kl);
				srch_result_free(&again);
			}
		} else {
			/* block 0 sees no merged block before it: its counts come from the cache */
			CHECK(r.merges == (nb - 1) * p.m->n_experts, "%d merges", r.merges);
		}
		srch_result_free(&r);
	}
	planted_stop(&p, c);
}

static void progress_cancel(void *ctx, const char *stage, int done, int total)
{
	(void)stage;
	(void)total;
	if (done >= 1)
		atomic_store((atomic_int *)ctx, 1);
}

static void test_bad_budget_and_cancel(void)
{
	planted p;
	srch_cache *c;
	if (planted_start(&p, &c) != 0)
		return;
	ms_error err = {0};
	srch_result r;
	const int nb = p.m->n_blocks, E = p.m->n_experts;
	srch_options o = quick(nb - 1);
	CHECK(srch_run(c, &o, &r, &err) == MS_ERR_ARG && strstr(err.msg, "outside"), "%s", err.msg);
	o.keep = nb * E + 1;
	CHECK(srch_run(c, &o, &r, &err) == MS_ERR_ARG, "%s", err.msg);
	atomic_int cancel;
	atomic_init(&cancel, 0);
	o = quick(nb * 6);
	o.cancel = &cancel;
	o.progress = progress_cancel;
	o.progress_ctx = &cancel;
	CHECK(srch_run(c, &o, &r, &err) == MS_ERR_INTERRUPTED, "%s", err.msg);
	/* a time limit too short for the proxy pass */
	o = quick(nb * 5);
	o.time_limit = 1e-9;
	CHECK(srch_run(c, &o, &r, &err) == MS_ERR_INTERRUPTED && strstr(err.msg, "time limit"), "%s", err.msg);
	planted_stop(&p, c);
}

int main(void)
{
	snprintf(dir, sizeof dir, "%s/moescope-search-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	planted_ok = planted_write(dir, model_path, sizeof model_path) == 0;
	RUN(test_best_allocations_match_brute_force);
	RUN(test_spearman);
	RUN(test_planted_allocation_found);
	RUN(test_planted_budgets_and_cache);
	RUN(test_bad_budget_and_cancel);
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (getenv("KEEP_SEARCH_DIR"))
		fprintf(stderr, "kept %s\n", dir);
	else if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	par_shutdown();
	return test_summary();
}
