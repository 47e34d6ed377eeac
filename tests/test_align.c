/* Alignment: planted neuron permutations are found again, with and without noise; aligning never changes what an
 * expert computes; the objective is the maximum over all permutations of C computed independently in double. */
#include "analysis/align.h"

#include <stdlib.h>

#include "tests/test.h"

/* CHECK with no message trips -Wformat-zero-length under -Werror; EXPECT passes an empty one. */
typedef struct {
	float *gate, *up, *down; /* [f, d], [f, d], [d, f]; gate NULL for relu */
	expert_weights w;
} test_expert;

static void expert_alloc(test_expert *e, int d, int f, mdl_act act)
{
	e->gate = act == MDL_ACT_SILU_GLU ? malloc(sizeof(float) * (size_t)f * d) : NULL;
	e->up = malloc(sizeof(float) * (size_t)f * d);
	e->down = malloc(sizeof(float) * (size_t)d * f);
	e->w = (expert_weights){ .gate = e->gate, .up = e->up, .down = e->down, .d = d, .f = f, .act = act };
}

static void expert_random(test_expert *e, int d, int f, mdl_act act, unsigned long long *s)
{
	expert_alloc(e, d, f, act);
	for (int k = 0; k < f * d; k++) {
		if (e->gate)
			e->gate[k] = test_rand_f(s);
		e->up[k] = test_rand_f(s);
		e->down[k] = test_rand_f(s);
	}
}

static void expert_free(test_expert *e)
{
	free(e->gate);
	free(e->up);
	free(e->down);
}

static void random_permutation(int *p, int n, unsigned long long *s)
{
	for (int i = 0; i < n; i++)
		p[i] = i;
	for (int i = n - 1; i > 0; i--) {
		int j = (int)(test_rand_u64(s) % (unsigned long long)(i + 1));
		int t = p[i];
		p[i] = p[j];
		p[j] = t;
	}
}

/* dst = src with neuron j of dst being neuron q[j] of src, written with plain loops (independent of align_apply),
 * plus noise * uniform(-1, 1) on every weight. */
static void planted_copy(test_expert *dst, const test_expert *src, const int *q, float noise, unsigned long long *s)
{
	const int d = src->w.d, f = src->w.f;
	expert_alloc(dst, d, f, src->w.act);
	for (int j = 0; j < f; j++)
		for (int c = 0; c < d; c++) {
			if (src->gate)
				dst->gate[j * d + c] = src->gate[q[j] * d + c] + noise * test_rand_f(s);
			dst->up[j * d + c] = src->up[q[j] * d + c] + noise * test_rand_f(s);
			dst->down[c * f + j] = src->down[c * f + q[j]] + noise * test_rand_f(s);
		}
}

/* Recovers the inverse of the planted permutation (weights uniform in [-1, 1): 1% noise is 0.01 absolute). Without
 * noise the planted answer is the unique optimum by Cauchy-Schwarz. */
static void check_planted(mdl_act act, int d, int f, float noise, unsigned long long seed)
{
	unsigned long long s = seed;
	test_expert ref, t;
	int *q = malloc(sizeof(int) * (size_t)f), *perm = malloc(sizeof(int) * (size_t)f);
	expert_random(&ref, d, f, act, &s);
	random_permutation(q, f, &s);
	planted_copy(&t, &ref, q, noise, &s);
	CHECK(align_permutation(&ref.w, &t.w, perm) == MS_OK, "act %d noise %g", act, noise);
	int wrong = 0;
	for (int j = 0; j < f; j++)
		wrong += perm[q[j]] != j;
	CHECK(wrong == 0, "act %d f %d noise %g: %d neurons misplaced", act, f, noise, wrong);
	/* and once applied, the weights are the reference's again (up to the noise) */
	CHECK(align_apply(perm, t.gate, t.up, t.down, d, f) == MS_OK, "apply");
	double maxdiff = 0;
	for (int k = 0; k < f * d; k++) {
		maxdiff = fmax(maxdiff, fabs(t.up[k] - ref.up[k]));
		maxdiff = fmax(maxdiff, fabs(t.down[k] - ref.down[k]));
		if (t.gate)
			maxdiff = fmax(maxdiff, fabs(t.gate[k] - ref.gate[k]));
	}
	CHECK(maxdiff <= noise * 1.0001, "act %d: aligned weights differ from the reference by %g", act, maxdiff);
	expert_free(&ref);
	expert_free(&t);
	free(q);
	free(perm);
}

static void test_planted_exact(void)
{
	check_planted(MDL_ACT_SILU_GLU, 24, 64, 0.0f, 1);
	check_planted(MDL_ACT_RELU, 24, 64, 0.0f, 2);
}

/* f spanning several ALIGN_ROW_CHUNK blocks of C, the last one partial. */
static void test_planted_across_chunks(void)
{
	check_planted(MDL_ACT_SILU_GLU, 8, 2 * ALIGN_ROW_CHUNK + 37, 0.0f, 5);
	check_planted(MDL_ACT_RELU, 8, ALIGN_ROW_CHUNK + 1, 0.0f, 6);
}

static void test_planted_noisy(void)
{
	check_planted(MDL_ACT_SILU_GLU, 24, 64, 0.01f, 3);
	check_planted(MDL_ACT_RELU, 24, 64, 0.01f, 4);
}

/* max over tokens and outputs of |a - b|, relative to max |b| */
static double output_difference(const expert_weights *a, const expert_weights *b, const float *x, int T)
{
	const int d = a->d;
	float *ya = malloc(sizeof(float) * (size_t)T * d), *yb = malloc(sizeof(float) * (size_t)T * d);
	float *work = malloc(sizeof(float) * (size_t)expert_work_floats(a, T));
	double diff = INFINITY, scale = 0;
	if (expert_forward(a, x, T, 1.0f, 0, ya, work) == MS_OK && expert_forward(b, x, T, 1.0f, 0, yb, work) == MS_OK) {
		diff = 0;
		for (int k = 0; k < T * d; k++) {
			diff = fmax(diff, fabs((double)ya[k] - yb[k]));
			scale = fmax(scale, fabs((double)yb[k]));
		}
		diff /= fmax(scale, 1e-30);
	}
	free(ya);
	free(yb);
	free(work);
	return diff;
}

/* Two unrelated experts: aligning one to the other reorders its neurons but leaves its outputs unchanged, both in
 * place and out of place. */
static void check_function_kept(mdl_act act, unsigned long long seed)
{
	enum { D = 32, F = 48, T = 100 };
	unsigned long long s = seed;
	test_expert ref, t, moved, copy;
	int perm[F];
	float x[T * D];
	expert_random(&ref, D, F, act, &s);
	expert_random(&t, D, F, act, &s);
	for (int k = 0; k < T * D; k++)
		x[k] = test_rand_f(&s);
	CHECK(align_permutation(&ref.w, &t.w, perm) == MS_OK, "act %d", act);
	int moved_count = 0;
	for (int i = 0; i < F; i++)
		moved_count += perm[i] != i;
	CHECK(moved_count > F / 2, "unrelated experts should need a real reordering, %d moved", moved_count);
	expert_alloc(&moved, D, F, act);
	CHECK(align_apply_into(perm, &t.w, moved.gate, moved.up, moved.down) == MS_OK, "apply_into");
	double diff = output_difference(&moved.w, &t.w, x, T);
	CHECK(diff <= 1e-5, "act %d: out of place alignment changed outputs by %g relative", act, diff);
	expert_alloc(&copy, D, F, act);
	memcpy(copy.up, t.up, sizeof(float) * F * D);
	memcpy(copy.down, t.down, sizeof(float) * F * D);
	if (copy.gate)
		memcpy(copy.gate, t.gate, sizeof(float) * F * D);
	CHECK(align_apply(perm, copy.gate, copy.up, copy.down, D, F) == MS_OK, "apply");
	CHECK(memcmp(copy.up, moved.up, sizeof(float) * F * D) == 0, "in place and out of place differ (up)");
	CHECK(memcmp(copy.down, moved.down, sizeof(float) * F * D) == 0, "in place and out of place differ (down)");
	if (copy.gate)
		CHECK(memcmp(copy.gate, moved.gate, sizeof(float) * F * D) == 0, "differ (gate)");
	diff = output_difference(&copy.w, &t.w, x, T);
	CHECK(diff <= 1e-5, "act %d: in place alignment changed outputs by %g relative", act, diff);
	expert_free(&ref);
	expert_free(&t);
	expert_free(&moved);
	expert_free(&copy);
}

static void test_function_unchanged(void)
{
	check_function_kept(MDL_ACT_SILU_GLU, 10);
	check_function_kept(MDL_ACT_RELU, 11);
}

/* C in double by plain loops; the best permutation by Heap's algorithm. */
static double brute_best(const test_expert *r, const test_expert *t, int d, int f)
{
	double c[64];
	for (int i = 0; i < f; i++)
		for (int j = 0; j < f; j++) {
			double s = 0;
			for (int k = 0; k < d; k++) {
				if (r->gate)
					s += (double)r->gate[i * d + k] * t->gate[j * d + k];
				s += (double)r->up[i * d + k] * t->up[j * d + k];
				s += (double)r->down[k * f + i] * t->down[k * f + j];
			}
			c[i * f + j] = s;
		}
	int p[8], cnt[8] = { 0 };
	for (int i = 0; i < f; i++)
		p[i] = i;
	double best = -INFINITY;
	for (int i = 0;;) {
		double s = 0;
		for (int a = 0; a < f; a++)
			s += c[a * f + p[a]];
		best = fmax(best, s);
		while (i < f && cnt[i] >= i)
			cnt[i++] = 0;
		if (i >= f)
			break;
		int a = i % 2 ? cnt[i] : 0, tmp = p[a];
		p[a] = p[i];
		p[i] = tmp;
		cnt[i]++;
		i = 0;
	}
	return best;
}

/* The objective of a permutation, from the weights (independent of align.c's GEMMs). */
static double objective(const test_expert *r, const test_expert *t, int d, int f, const int *perm)
{
	double s = 0;
	for (int i = 0; i < f; i++)
		for (int k = 0; k < d; k++) {
			if (r->gate)
				s += (double)r->gate[i * d + k] * t->gate[perm[i] * d + k];
			s += (double)r->up[i * d + k] * t->up[perm[i] * d + k];
			s += (double)r->down[k * f + i] * t->down[k * f + perm[i]];
		}
	return s;
}

static void test_objective_is_maximal(void)
{
	enum { D = 5, F = 7 };
	unsigned long long s = 77;
	for (int rep = 0; rep < 6; rep++) {
		mdl_act act = rep % 2 ? MDL_ACT_RELU : MDL_ACT_SILU_GLU;
		test_expert r, t;
		int perm[F];
		expert_random(&r, D, F, act, &s);
		expert_random(&t, D, F, act, &s);
		CHECK(align_permutation(&r.w, &t.w, perm) == MS_OK, "rep %d", rep);
		double got = objective(&r, &t, D, F, perm), best = brute_best(&r, &t, D, F);
		CHECK(fabs(got - best) <= 1e-5 * fmax(1.0, fabs(best)), "rep %d: %.9g vs best %.9g", rep, got, best);
		expert_free(&r);
		expert_free(&t);
	}
}

/* gpt-oss experts whose neurons come in pairs with equal gate and up rows and equal down columns, told apart by
 * their gate and up biases only: the bias terms of C (a bias is its matrix's column for a constant input 1) make
 * the planted permutation the unique optimum (the weight terms tie within a pair; the bias terms are maximal
 * only when equal biases meet, by the rearrangement inequality). Without them each of the 8 pairs is a tie. */
static void test_biases_decide(void)
{
	enum { D = 5, F = 16 };
	unsigned long long s = 31;
	static float w[2][3 * F * D + 2 * F];   /* gate, up, down, gate bias, up bias of ref and t */
	float *r = w[0], *t = w[1];
	for (int j = 0; j < F; j += 2)
		for (int c = 0; c < D; c++) {
			r[j * D + c] = r[(j + 1) * D + c] = test_rand_f(&s);                        /* gate */
			r[F * D + j * D + c] = r[F * D + (j + 1) * D + c] = test_rand_f(&s);        /* up */
			r[2 * F * D + c * F + j] = r[2 * F * D + c * F + j + 1] = test_rand_f(&s);  /* down */
		}
	for (int j = 0; j < 2 * F; j++)
		r[3 * F * D + j] = test_rand_f(&s);
	int q[F], perm[F];
	random_permutation(q, F, &s);
	for (int j = 0; j < F; j++) {   /* neuron j of t is neuron q[j] of ref */
		for (int c = 0; c < D; c++) {
			t[j * D + c] = r[q[j] * D + c];
			t[F * D + j * D + c] = r[F * D + q[j] * D + c];
			t[2 * F * D + c * F + j] = r[2 * F * D + c * F + q[j]];
		}
		t[3 * F * D + j] = r[3 * F * D + q[j]];
		t[3 * F * D + F + j] = r[3 * F * D + F + q[j]];
	}
	expert_weights e[2];
	for (int k = 0; k < 2; k++)
		e[k] = (expert_weights){.gate = w[k], .up = w[k] + F * D, .down = w[k] + 2 * F * D,
					.gate_bias = w[k] + 3 * F * D, .up_bias = w[k] + 3 * F * D + F, .d = D, .f = F,
					.act = MDL_ACT_CLAMPED_SWIGLU};
	CHECK(align_permutation(&e[0], &e[1], perm) == MS_OK, "%s", "align");
	int wrong = 0;
	for (int j = 0; j < F; j++)
		wrong += perm[q[j]] != j;
	CHECK(wrong == 0, "%d neurons misplaced", wrong);
	/* the gate bias alone decides too */
	e[0].up_bias = e[1].up_bias = NULL;
	CHECK(align_permutation(&e[0], &e[1], perm) == MS_OK, "%s", "align");
	wrong = 0;
	for (int j = 0; j < F; j++)
		wrong += perm[q[j]] != j;
	CHECK(wrong == 0, "gate bias only: %d neurons misplaced", wrong);
}

static void test_bad_input(void)
{
	enum { D = 4, F = 3 };
	unsigned long long s = 5;
	test_expert a, b, c;
	int perm[F];
	expert_random(&a, D, F, MDL_ACT_SILU_GLU, &s);
	expert_random(&b, D, F, MDL_ACT_SILU_GLU, &s);
	expert_random(&c, D, F, MDL_ACT_RELU, &s);
	EXPECT(align_permutation(&a.w, &c.w, perm) == MS_ERR_ARG);
	EXPECT(align_permutation(&a.w, &b.w, NULL) == MS_ERR_ARG);
	expert_weights wide = b.w;
	wide.d = D - 1;
	EXPECT(align_permutation(&a.w, &wide, perm) == MS_ERR_ARG);
	expert_weights nogate = b.w;
	nogate.gate = NULL;
	EXPECT(align_permutation(&a.w, &nogate, perm) == MS_ERR_ARG);
	b.up[2] = NAN;
	EXPECT(align_permutation(&a.w, &b.w, perm) == MS_ERR_NONFINITE);
	b.up[2] = 0.5f;
	int bad[3][F] = { { 0, 0, 1 }, { 0, 1, 3 }, { -1, 1, 2 } };
	for (int k = 0; k < 3; k++) {
		EXPECT(align_apply(bad[k], b.gate, b.up, b.down, D, F) == MS_ERR_ARG);
		EXPECT(align_apply_into(bad[k], &b.w, a.gate, a.up, a.down) == MS_ERR_ARG);
	}
	EXPECT(align_apply((int[F]){ 2, 0, 1 }, NULL, c.up, c.down, D, F) == MS_OK);
	EXPECT(align_apply_into((int[F]){ 2, 0, 1 }, &b.w, NULL, a.up, a.down) == MS_ERR_ARG);
	expert_free(&a);
	expert_free(&b);
	expert_free(&c);
}

static void test_names(void)
{
	EXPECT(align_ref_parse("none") == ALIGN_NONE);
	EXPECT(align_ref_parse("dominant") == ALIGN_DOMINANT);
	EXPECT(align_ref_parse("first") == ALIGN_FIRST);
	EXPECT(align_ref_parse("First") == -1);
	EXPECT(align_ref_parse("") == -1);
	EXPECT(align_ref_parse(NULL) == -1);
	for (int r = 0; r < ALIGN_COUNT; r++)
		CHECK(align_ref_parse(align_ref_name((align_ref)r)) == r, "name %d does not parse back", r);
	EXPECT(strcmp(align_ref_name((align_ref)ALIGN_COUNT), "?") == 0);
}

int main(void)
{
	RUN(test_names);
	RUN(test_planted_exact);
	RUN(test_planted_noisy);
	RUN(test_planted_across_chunks);
	RUN(test_function_unchanged);
	RUN(test_objective_is_maximal);
	RUN(test_biases_decide);
	RUN(test_bad_input);
	return test_summary();
}
