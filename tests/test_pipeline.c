/* The pipeline on a planted sample: alignment recovers every expert's planted neuron permutation relative to its
 * prototype's lead, and a merged block built from a plan that groups each prototype behaves as planned. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cjson/cJSON.h>

#include "pipeline/pipeline.h"
#include "samples/samples.h"
#include "test.h"

static char dir[256];
static mdl_model *model;
static calib *cal;
static cJSON *truth;

static cJSON *read_json(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	static char buf[1 << 22];
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	return cJSON_Parse(buf);
}

static int truth_int(const cJSON *arr, int i)
{
	return cJSON_GetArrayItem(arr, i)->valueint;
}

/* The lead of expert e's prototype, from truth.json's "prototype" and "lead". */
static int lead_of(const cJSON *blk, int e)
{
	int p = truth_int(cJSON_GetObjectItem(blk, "prototype"), e);
	return truth_int(cJSON_GetObjectItem(blk, "lead"), p);
}

static void setup(void)
{
	ms_error err = {0};
	snprintf(dir, sizeof dir, "%s/moescope-pipeline-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	CHECK(mkdtemp(dir) != NULL);
	CHECK(samples_write(dir, "mixtral-tiny", &err) == MS_OK, "%s", err.msg);
	char path[512];
	snprintf(path, sizeof path, "%s/mixtral-tiny", dir);
	CHECK(mdl_open(path, &model, &err) == MS_OK, "%s", err.msg);
	snprintf(path, sizeof path, "%s/mixtral-tiny/calib.safetensors", dir);
	CHECK(calib_open(path, model, &cal, &err) == MS_OK, "%s", err.msg);
	snprintf(path, sizeof path, "%s/mixtral-tiny/truth.json", dir);
	truth = read_json(path);
	CHECK(truth != NULL);
}

/* Row i of expert t's gate is row perm_t[i] of the prototype, so aligning t to reference r must map neuron i of
 * the aligned expert to the neuron of t holding the prototype row that r holds at i: perm_t[perm[i]] ==
 * perm_r[i]. */
static void test_alignment_recovers_planted_permutations(void)
{
	const cJSON *blocks = cJSON_GetObjectItem(truth, "blocks");
	int checked = 0;
	for (int b = 0; b < model->n_blocks; b++) {
		pipe_block blk;
		ms_error err = {0};
		CHECK(pipe_load_block(model, NULL, b, &blk, &err) == MS_OK, "%s", err.msg);
		const cJSON *tb = cJSON_GetArrayItem(blocks, b);
		const cJSON *perms = cJSON_GetObjectItem(tb, "permutation");
		int *perm = malloc((size_t)blk.f * sizeof *perm);
		for (int e = 0; perm && e < blk.E; e++) {
			int r = lead_of(tb, e);
			if (r == e)
				continue;
			CHECK(align_permutation(&blk.experts[r], &blk.experts[e], perm) == MS_OK);
			const cJSON *pt = cJSON_GetArrayItem(perms, e), *pr = cJSON_GetArrayItem(perms, r);
			int wrong = 0;
			for (int i = 0; i < blk.f; i++)
				wrong += truth_int(pt, perm[i]) != truth_int(pr, i);
			CHECK(wrong == 0, "block %d expert %d -> lead %d: %d of %d neurons misplaced", b, e, r, wrong, blk.f);
			checked++;
		}
		free(perm);
		pipe_free_block(&blk);
	}
	CHECK(checked >= 8, "only %d experts checked", checked);
}

/* A plan grouping each prototype (leads dominant): aligned merging must beat unaligned merging in every block,
 * since members differ from their lead mostly by the permutation. */
static void test_alignment_lowers_merge_error(void)
{
	const cJSON *blocks = cJSON_GetObjectItem(truth, "blocks");
	const char *labels[16];
	for (int b = 0; b < model->n_blocks; b++)
		labels[b] = model->blocks[b].label;
	plan p;
	CHECK(plan_init(&p, model->n_blocks, model->n_experts, labels) == 0);
	for (int b = 0; b < model->n_blocks; b++) {
		const cJSON *tb = cJSON_GetArrayItem(blocks, b);
		for (int e = 0; e < model->n_experts; e++) {
			p.group[b * model->n_experts + e] = truth_int(cJSON_GetObjectItem(tb, "prototype"), e);
			p.dominant[b * model->n_experts + e] = lead_of(tb, e) == e;
			p.frequency[b * model->n_experts + e] = 0.125;
		}
	}
	ms_error err = {0};
	CHECK(plan_validate(&p, &err) == MS_OK, "%s", err.msg);
	for (int b = 0; b < model->n_blocks; b++) {
		pipe_block blk;
		CHECK(pipe_load_block(model, cal, b, &blk, &err) == MS_OK, "%s", err.msg);
		double e_none = 0, e_dom = 0;
		for (int a = 0; a < 2; a++) {
			pipe_merge_options o = pipe_merge_defaults();
			o.layout = PIPE_LAYOUT_ALIASED;
			o.align = a ? ALIGN_DOMINANT : ALIGN_NONE;
			pipe_merged mg;
			blk_eval_result r;
			CHECK(pipe_merge_block(&blk, &p, b, &o, &mg, &err) == MS_OK, "%s", err.msg);
			CHECK(pipe_eval_block(&blk, &mg, &p, b, 512, &r, &err) == MS_OK, "%s", err.msg);
			CHECK(r.routing_agreement == 1.0, "aliased layout keeps the router: agreement %g", r.routing_agreement);
			*(a ? &e_dom : &e_none) = r.rel_error;
			pipe_free_merged(&mg);
		}
		CHECK(e_dom < 0.5 * e_none, "block %d: aligned %g, unaligned %g", b, e_dom, e_none);
		pipe_free_block(&blk);
	}
	plan_free(&p);
}

/* The block merge (members added one at a time) and merge_matrices (all members at once, what test_merge checks
 * against the golden case) are one implementation: for every weighting, unaligned, the merged experts are
 * merge_matrices of the members' matrices, rounded to the checkpoint's dtype, bit for bit. */
static void test_block_merge_is_merge_matrices(void)
{
	const int E = model->n_experts;
	const char *labels[16];
	for (int b = 0; b < model->n_blocks; b++)
		labels[b] = model->blocks[b].label;
	plan p;
	CHECK(plan_init(&p, model->n_blocks, E, labels) == 0);
	for (int b = 0; b < model->n_blocks; b++)
		for (int e = 0; e < E; e++) {
			/* groups {0,3,5}, {1,2}, {4}, {6,7} with unequal usage, one of them unused */
			static const int grp[8] = {0, 1, 1, 0, 2, 0, 3, 3};
			p.group[b * E + e] = grp[e % 8];
			p.dominant[b * E + e] = e == 3 || e == 2 || e == 4 || e == 7;
			p.frequency[b * E + e] = e == 6 || e == 7 ? 0.0 : 0.05 * (e + 1);
		}
	ms_error err = {0};
	CHECK(plan_validate(&p, &err) == MS_OK, "%s", err.msg);
	pipe_block blk;
	CHECK(pipe_load_block(model, cal, 1, &blk, &err) == MS_OK, "%s", err.msg);
	float *want = malloc((size_t)blk.per_expert * sizeof *want);
	for (int w = 0; w < MERGE_WEIGHTING_COUNT && want; w++) {
		pipe_merge_options o = pipe_merge_defaults();
		o.layout = PIPE_LAYOUT_ALIASED;
		o.align = ALIGN_NONE;
		o.weighting = (merge_weighting)w;
		pipe_merged mg;
		CHECK(pipe_merge_block(&blk, &p, 1, &o, &mg, &err) == MS_OK, "%s", err.msg);
		for (int g = 0; g < mg.groups; g++) {
			const float *mats[8];
			double freq[8];
			int n = 0, dom = 0;
			for (int e = 0; e < E; e++)
				if (p.group[E + e] == g) {
					dom = p.dominant[E + e] ? n : dom;
					freq[n] = p.frequency[E + e];
					mats[n++] = blk.weights + (int64_t)e * blk.per_expert;
				}
			CHECK(merge_matrices(n, mats, freq, dom, (merge_weighting)w, blk.per_expert, want) == MS_OK);
			for (int64_t i = 0; i < blk.per_expert; i++)
				want[i] = blk.expert_dtype == ST_BF16 ? st_bf16_to_f32(st_f32_to_bf16(want[i])) : want[i];
			CHECK(memcmp(want, mg.weights + (int64_t)g * blk.per_expert, (size_t)blk.per_expert * sizeof *want) == 0,
			      "weighting %s, group %d: the block merge differs from merge_matrices",
			      merge_weighting_name((merge_weighting)w), g);
		}
		pipe_free_merged(&mg);
	}
	free(want);
	pipe_free_block(&blk);
	plan_free(&p);
}

/* Merging in the block's own storage (the commit path: original outputs first, then the merge over the members)
 * gives the merged block and the evaluation that the merge beside the block gives, bit for bit: every alignment,
 * weighting and layout, compact padding and compression included. */
static void test_in_place_merge_is_the_same(void)
{
	const int E = model->n_experts;
	const char *labels[16];
	for (int b = 0; b < model->n_blocks; b++)
		labels[b] = model->blocks[b].label;
	plan p;
	CHECK(plan_init(&p, model->n_blocks, E, labels) == 0);
	for (int b = 0; b < model->n_blocks; b++)
		for (int e = 0; e < E; e++) {
			/* expert 0 is not its group's dominant, so ALIGN_FIRST aligns a dominant too */
			static const int grp[8] = {0, 1, 1, 0, 2, 0, 1, 2};
			p.group[b * E + e] = grp[e % 8];
			p.dominant[b * E + e] = e == 3 || e == 2 || e == 4;
			p.frequency[b * E + e] = 0.02 * (e + 1);
		}
	ms_error err = {0};
	CHECK(plan_validate(&p, &err) == MS_OK, "%s", err.msg);
	const int b = 2;
	pipe_block orig, work;
	CHECK(pipe_load_block(model, cal, b, &orig, &err) == MS_OK, "%s", err.msg);
	int cases = 0, differ = 0;
	for (int layout = 0; layout < PIPE_LAYOUT_COUNT; layout++)
		for (int align = 0; align < ALIGN_COUNT; align++)
			for (int w = 0; w < MERGE_WEIGHTING_COUNT; w++)
				for (int cmp = 0; cmp < 3; cmp++) {
					/* cmp 0: the defaults (auto router, refit); 1: compressed (no refit); 2: lse-fit, no
					 * refit */
					pipe_merge_options o = pipe_merge_defaults();
					if (cmp == 2) {
						o.router = RFIT_LSE_FIT;
						o.refit = PIPE_REFIT_NONE;
					}
					o.layout = (pipe_layout)layout;
					o.align = (align_ref)align;
					o.weighting = (merge_weighting)w;
					o.slots = layout == PIPE_LAYOUT_COMPACT ? 5 : 0; /* 3 groups padded to 5 */
					if (cmp == 1)
						o.compress = (cmp_options){.mode = CMP_RANK_FIXED, .rank = 8};
					pipe_merged a, c;
					blk_eval_result ra, rc;
					blk_eval_ref ref;
					CHECK(pipe_merge_block(&orig, &p, b, &o, &a, &err) == MS_OK, "%s", err.msg);
					CHECK(pipe_eval_block(&orig, &a, &p, b, 300, &ra, &err) == MS_OK, "%s", err.msg);
					CHECK(pipe_load_block(model, cal, b, &work, &err) == MS_OK, "%s", err.msg);
					CHECK(pipe_eval_reference(&work, &p, b, 300, &ref, &err) == MS_OK, "%s", err.msg);
					CHECK(pipe_merge_block_in_place(&work, &p, b, &o, &c, &err) == MS_OK, "%s", err.msg);
					CHECK(pipe_eval_against(&ref, &work, &c, &p, b, &rc, &err) == MS_OK, "%s", err.msg);
					if (layout == PIPE_LAYOUT_COMPACT && cmp == 0)
						CHECK(a.refitted && c.refitted && a.router_used == c.router_used &&
						      a.fit_error_refit == c.fit_error_refit, "the refit ran the same way");
					int same = a.n_slots == c.n_slots && a.n_router == c.n_router &&
						   memcmp(a.router, c.router, (size_t)a.n_router * orig.d * sizeof(float)) == 0 &&
						   memcmp(&ra, &rc, sizeof ra) == 0;
					for (int s = 0; same && s < a.n_slots; s++) {
						const expert_weights *x = &a.experts[s], *y = &c.experts[s];
						same = (!x->gate || memcmp(x->gate, y->gate, (size_t)orig.f * orig.d * 4) == 0) &&
						       memcmp(x->up, y->up, (size_t)orig.f * orig.d * 4) == 0 &&
						       memcmp(x->down, y->down, (size_t)orig.f * orig.d * 4) == 0;
					}
					if (!same && differ++ < 4)
						CHECK(same, "layout %d align %d weighting %d compress %d: in place differs", layout,
						      align, w, cmp);
					cases++;
					blk_eval_ref_free(&ref);
					pipe_free_merged(&a);
					pipe_free_merged(&c);
					pipe_free_block(&work);
				}
	CHECK(differ == 0, "%d of %d cases differ", differ, cases);
	pipe_free_block(&orig);
	plan_free(&p);
}

/* The split: disjoint, covering, ascending, by segment when ids are given, the same on every load; the
 * evaluation's tokens are exactly the held-out ones. */
static void test_held_out_split(void)
{
	enum { NT = 100 };
	int32_t seg[NT];
	int64_t fit[NT], held[NT], fit2[NT], held2[NT], nf, nh, nf2, nh2;
	for (int t = 0; t < NT; t++)
		seg[t] = t / 10;   /* 10 sequences of 10: 3 and 7 held out */
	EXPECT(pipe_split_tokens(seg, NT, fit, &nf, held, &nh) == PIPE_SPLIT_SEGMENTS);
	CHECK(nf == 80 && nh == 20, "%lld fit, %lld held out", (long long)nf, (long long)nh);
	for (int64_t i = 0; i < nh; i++)
		CHECK(seg[held[i]] % 4 == 3 && (i == 0 || held[i] > held[i - 1]), "held-out token %lld", (long long)held[i]);
	EXPECT(pipe_split_tokens(seg, NT, fit2, &nf2, held2, &nh2) == PIPE_SPLIT_SEGMENTS);
	EXPECT(nf2 == nf && nh2 == nh && memcmp(fit, fit2, (size_t)nf * sizeof *fit) == 0 &&
	       memcmp(held, held2, (size_t)nh * sizeof *held) == 0);
	for (int t = 0; t < NT; t++)
		seg[t] = 2;       /* one sequence: nothing to hold out by segment, the fixed split */
	EXPECT(pipe_split_tokens(seg, NT, fit, &nf, held, &nh) == PIPE_SPLIT_FIXED);
	CHECK(nf == 75 && nh == 25 && held[0] == 75 && fit[74] == 74, "%lld fit, %lld held out", (long long)nf,
	      (long long)nh);
	EXPECT(pipe_split_tokens(NULL, NT, fit, &nf, held, &nh) == PIPE_SPLIT_FIXED && nh == 25);
	EXPECT(pipe_split_tokens(NULL, 5, fit, &nf, held, &nh) == PIPE_SPLIT_NONE && nf == 5 && nh == 5);

	/* the sample has segment ids: the loaded block is split by them, twice the same way */
	ms_error err = {0};
	pipe_block a, b;
	CHECK(pipe_load_block(model, cal, 1, &a, &err) == MS_OK, "%s", err.msg);
	CHECK(pipe_load_block(model, cal, 1, &b, &err) == MS_OK, "%s", err.msg);
	EXPECT(a.split == PIPE_SPLIT_SEGMENTS && a.n_fit + a.n_held == a.T && a.n_held > 0 && a.n_fit > 0);
	EXPECT(a.n_held == b.n_held && memcmp(a.held_idx, b.held_idx, (size_t)a.n_held * sizeof *a.held_idx) == 0);
	const char *labels[16];
	for (int i = 0; i < model->n_blocks; i++)
		labels[i] = model->blocks[i].label;
	plan p;
	CHECK(plan_init(&p, model->n_blocks, model->n_experts, labels) == 0);
	blk_eval_ref ref;
	CHECK(pipe_eval_reference(&a, &p, 1, 0, &ref, &err) == MS_OK, "%s", err.msg);
	EXPECT(ref.n == a.n_held);
	for (int64_t i = 0; i < ref.n && i < a.n_held; i++)
		CHECK(memcmp(ref.xs + i * a.d, a.x + a.held_idx[i] * a.d, (size_t)a.d * sizeof(float)) == 0,
		      "evaluated token %lld is not held-out token %lld", (long long)i, (long long)a.held_idx[i]);
	blk_eval_ref_free(&ref);
	plan_free(&p);
	pipe_free_block(&a);
	pipe_free_block(&b);
}

/* Splitting instead of padding: the largest group gives up its member least similar to its dominant; a plan of
 * singletons gets its most used dropped expert back; the result is a valid plan with the asked count. */
static void test_fill_groups_splits(void)
{
	const char *labels[1] = {"0"};
	plan p;
	CHECK(plan_init(&p, 1, 6, labels) == 0);
	static const int grp[6] = {0, 0, 0, 1, 1, -1};
	static const unsigned char dom[6] = {1, 0, 0, 1, 0, 0};
	static const double sim[6] = {1.0, 0.9, 0.6, 1.0, 0.5, NAN}, freq[6] = {0.4, 0.2, 0.1, 0.15, 0.1, 0.05};
	for (int e = 0; e < 6; e++) {
		p.group[e] = grp[e];
		p.dominant[e] = dom[e];
		p.similarity[e] = sim[e];
		p.frequency[e] = freq[e];
	}
	ms_error err = {0};
	CHECK(pipe_fill_groups(&p, 0, 3, &err) == MS_OK, "%s", err.msg);
	CHECK(p.group[2] == 2 && p.dominant[2] == 1, "expert 2 (least similar, largest group) splits off: group %d",
	      p.group[2]);
	CHECK(pipe_fill_groups(&p, 0, 5, &err) == MS_OK, "%s", err.msg);
	EXPECT(plan_groups(&p, 0) == 5 && p.group[4] >= 2 && p.group[1] >= 2);   /* then the two pairs split */
	CHECK(pipe_fill_groups(&p, 0, 6, &err) == MS_OK, "%s", err.msg);
	EXPECT(p.group[5] == 5 && p.dominant[5] == 1);                           /* the dropped expert returns */
	CHECK(plan_validate(&p, &err) == MS_OK, "%s", err.msg);
	EXPECT(pipe_fill_groups(&p, 0, 7, &err) == MS_ERR_ARG);
	plan_free(&p);
}

/* A block whose refit would need more memory than the rule allows (one f x f double matrix per merged expert:
 * 2 x 6000^2 x 8 bytes = 576 MB for a block of 1.2 MB) is merged without it, and says so; the same block with a
 * small f is refitted. */
static void test_refit_skipped_when_too_big(void)
{
	enum { E = 4, D = 8, T = 64 };
	const int fs[2] = {6000, 16};
	for (int k = 0; k < 2; k++) {
		const int F = fs[k];
		const int64_t per = 3LL * F * D;
		float *w = malloc((size_t)(E * per) * sizeof *w), *x = malloc((size_t)T * D * sizeof *x);
		float router[E * D];
		int identity[E];
		expert_weights ex[E];
		unsigned long long s = 99;
		CHECK(w && x);
		if (!w || !x) {
			free(w);
			free(x);
			return;
		}
		for (int64_t i = 0; i < E * per; i++)
			w[i] = 0.1f * test_rand_f(&s);
		for (int i = 0; i < T * D; i++)
			x[i] = test_rand_f(&s);
		for (int i = 0; i < E * D; i++)
			router[i] = test_rand_f(&s);
		for (int e = 0; e < E; e++) {
			identity[e] = e;
			ex[e] = (expert_weights){.gate = w + e * per, .up = w + e * per + (int64_t)F * D,
						 .down = w + e * per + 2LL * F * D, .d = D, .f = F, .act = MDL_ACT_SILU_GLU};
		}
		pipe_block blk = {.E = E, .d = D, .f = F, .T = T, .act = MDL_ACT_SILU_GLU, .router = router, .weights = w,
				  .per_expert = per, .experts = ex, .x = x, .identity = identity,
				  .routing = {.top_k = 2, .renormalize = 1, .scale = 1.0f}};
		const char *labels[1] = {"0"};
		plan p;
		CHECK(plan_init(&p, 1, E, labels) == 0);
		for (int e = 0; e < E; e++) {
			p.group[e] = e / 2;
			p.dominant[e] = e % 2 == 0;
			p.frequency[e] = 0.25;
		}
		pipe_merge_options o = pipe_merge_defaults();
		pipe_merged mg;
		ms_error err = {0};
		CHECK(pipe_merge_block(&blk, &p, 0, &o, &mg, &err) == MS_OK, "%s", err.msg);
		CHECK(k == 0 ? mg.refit_skipped && !mg.refitted : !mg.refit_skipped && mg.refitted,
		      "f %d: refit_skipped %d, refitted %d", F, mg.refit_skipped, mg.refitted);
		pipe_free_merged(&mg);
		plan_free(&p);
		free(w);
		free(x);
	}
}

int main(void)
{
	RUN(setup);
	RUN(test_alignment_recovers_planted_permutations);
	RUN(test_alignment_lowers_merge_error);
	RUN(test_block_merge_is_merge_matrices);
	RUN(test_in_place_merge_is_the_same);
	RUN(test_refit_skipped_when_too_big);
	RUN(test_held_out_split);
	RUN(test_fill_groups_splits);
	cJSON_Delete(truth);
	calib_close(cal);
	mdl_close(model);
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	return test_summary();
}
