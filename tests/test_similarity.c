/* Similarity: every base against a brute-force double-precision loop (with several Gram blocks and extreme
 * scales), planted clusters, the 1e-7 floor and zero vectors, expert mean outputs against expert_forward, and the
 * golden router-logits similarities of the M-SMoE test model. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/expert.h"
#include "analysis/routing.h"
#include "analysis/similarity.h"
#include "io/safetensors.h"
#include "tests/fixtures.h"
#include "tests/test.h"

#define GOLDEN "tests/data/golden/msmoe-mixtral/"

/* A check whose condition says it all. */
/* ---- brute force ---- */

/* (cos + 1) / 2 of two vectors given by a getter, all in double, with the 1e-7 floor. */
static double mapped_cos(double dot, double na2, double nb2)
{
	double c = dot / fmax(sqrt(na2) * sqrt(nb2), 1e-7);
	c = c > 1.0 ? 1.0 : c < -1.0 ? -1.0 : c;
	return (c + 1.0) / 2.0;
}

/* Element k of vector i: rows (stride m, step 1) or columns (stride 1, step n). */
static void brute_cos(const float *a, int n, int64_t len, int64_t stride, int64_t step, double *out)
{
	for (int i = 0; i < n; i++)
		for (int j = 0; j < n; j++) {
			double dot = 0.0, ni = 0.0, nj = 0.0;
			for (int64_t k = 0; k < len; k++) {
				const double x = a[i * stride + k * step], y = a[j * stride + k * step];
				dot += x * y;
				ni += x * x;
				nj += y * y;
			}
			out[(size_t)i * n + j] = i == j ? 1.0 : mapped_cos(dot, ni, nj);
		}
}

/* Largest |got - want| over n x n, and whether got is exactly symmetric with a unit diagonal. */
static double max_diff(const double *got, const double *want, int n, int *symmetric)
{
	double worst = 0.0;
	*symmetric = 1;
	for (int i = 0; i < n; i++)
		for (int j = 0; j < n; j++) {
			worst = fmax(worst, fabs(got[(size_t)i * n + j] - want[(size_t)i * n + j]));
			if (got[(size_t)i * n + j] != got[(size_t)j * n + i] || (i == j && got[(size_t)i * n + i] != 1.0))
				*symmetric = 0;
		}
	return worst;
}

static float *random_floats(size_t count, unsigned long long seed)
{
	float *x = malloc(count * sizeof *x);
	unsigned long long s = seed;
	for (size_t k = 0; k < count; k++)
		x[k] = test_rand_f(&s);
	return x;
}

static void check_rows(const float *a, int n, int64_t m, const char *what)
{
	double *got = malloc((size_t)n * n * sizeof *got), *want = malloc((size_t)n * n * sizeof *want);
	CHECK(sim_cosine_rows(a, n, m, got) == MS_OK, "%s", what);
	brute_cos(a, n, m, m, 1, want);
	int sym;
	const double diff = max_diff(got, want, n, &sym);
	CHECK(diff <= 1e-5, "%s: max difference %.3g", what, diff);
	CHECK(sym, "%s: not symmetric with unit diagonal", what);
	free(got);
	free(want);
}

/* ---- the table ---- */

static void test_base_table(void)
{
	static const char *const names[] = { "router-logits", "router-weight", "weight", "expert-output" };
	for (int b = 0; b < SIM_BASE_COUNT; b++) {
		CHECK(strcmp(sim_base_name((sim_base)b), names[b]) == 0, "base %d is %s", b, sim_base_name((sim_base)b));
		CHECK(sim_base_parse(names[b]) == b, "%s", names[b]);
		CHECK(sim_base_euclidean((sim_base)b) == (b == SIM_EXPERT_OUTPUT), "%s", names[b]);
	}
	EXPECT(sim_base_parse("router") == -1);
	EXPECT(sim_base_parse("") == -1);
	EXPECT(sim_base_parse(NULL) == -1);
	EXPECT(strcmp(sim_base_name(SIM_BASE_COUNT), "?") == 0);
	EXPECT(strcmp(sim_base_name((sim_base)-1), "?") == 0);
}

/* ---- rows and columns against brute force ---- */

static void test_rows_random(void)
{
	float *a = random_floats(7 * 300, 11);
	check_rows(a, 7, 300, "7 x 300");
	free(a);
	/* 64 rows of 40000: three Gram blocks of SIM_BLOCK_FLOATS / 64 coordinates. */
	a = random_floats((size_t)64 * 40000, 12);
	EXPECT(40000 > 2 * (SIM_BLOCK_FLOATS / 64));
	check_rows(a, 64, 40000, "64 x 40000");
	free(a);
}

/* Magnitudes whose squares overflow float, and rows small enough to meet the 1e-7 floor. */
static void test_rows_extreme_scales(void)
{
	const int n = 8, m = 50;
	float *a = random_floats((size_t)n * m, 13);
	for (int k = 0; k < m; k++) {
		a[1 * m + k] *= 1e30f;
		a[2 * m + k] *= 1e25f;
		a[3 * m + k] *= 1e-6f;
		a[4 * m + k] = a[3 * m + k] * 0.5f + 1e-7f * a[k];
		a[6 * m + k] = a[1 * m + k] / 1e30f * 3e38f; /* near the float maximum, parallel to row 1 */
		a[7 * m + k] = a[k] * 1e-39f;                /* subnormal */
	}
	check_rows(a, n, m, "extreme scales");
	double got[64];
	EXPECT(sim_cosine_rows(a, n, m, got) == MS_OK);
	for (int i = 0; i < n * n; i++)
		CHECK(isfinite(got[i]) && got[i] >= 0.0 && got[i] <= 1.0, "entry %d = %g", i, got[i]);
	CHECK(got[1 * n + 6] > 1.0 - 1e-6, "parallel rows at 1e30 and 3e38: %.9f", got[1 * n + 6]);
	free(a);
}

static void test_columns_random(void)
{
	const int64_t T = 1000;
	float *z = random_floats((size_t)T * 8, 21);
	double got[64], want[64];
	EXPECT(sim_cosine_columns(z, T, 8, got) == MS_OK);
	brute_cos(z, 8, T, 1, 8, want);
	int sym;
	CHECK(max_diff(got, want, 8, &sym) <= 1e-5, "difference %.3g", max_diff(got, want, 8, &sym));
	EXPECT(sym);
	free(z);
	/* Two row blocks of SIM_BLOCK_FLOATS / 16 tokens. */
	const int64_t T2 = SIM_BLOCK_FLOATS / 16 + 4000;
	z = random_floats((size_t)T2 * 16, 22);
	double got2[256], want2[256];
	EXPECT(sim_cosine_columns(z, T2, 16, got2) == MS_OK);
	brute_cos(z, 16, T2, 1, 16, want2);
	CHECK(max_diff(got2, want2, 16, &sym) <= 1e-5, "difference %.3g", max_diff(got2, want2, 16, &sym));
	EXPECT(sym);
	free(z);
}

/* ---- the weight basis ---- */

typedef struct {
	int E, d, f;
	mdl_act act;
	float *mem;            /* every matrix, one allocation */
	expert_weights *w;     /* [E] */
} expert_set;

static expert_set make_experts(int E, int d, int f, mdl_act act, unsigned long long seed)
{
	expert_set s = { E, d, f, act, NULL, NULL };
	const size_t per = (size_t)3 * d * f;
	s.mem = random_floats(per * E, seed);
	s.w = calloc((size_t)E, sizeof *s.w);
	for (int e = 0; e < E; e++) {
		float *base = s.mem + per * e;
		s.w[e] = (expert_weights){.gate = act == MDL_ACT_SILU_GLU ? base : NULL, .up = base + (size_t)d * f,
					  .down = base + (size_t)2 * d * f, .d = d, .f = f, .act = act};
	}
	return s;
}

static void free_experts(expert_set *s)
{
	free(s->mem);
	free(s->w);
}

/* The concatenation's dot products, in double, matrix by matrix. */
static void brute_weight(const expert_set *s, double *out)
{
	const int E = s->E;
	const size_t len = (size_t)s->d * s->f;
	double *dot = calloc((size_t)E * E, sizeof *dot);
	for (int i = 0; i < E; i++)
		for (int j = 0; j < E; j++)
			for (int mat = 0; mat < 3; mat++) {
				const float *a = mat == 0 ? s->w[i].gate : mat == 1 ? s->w[i].up : s->w[i].down;
				const float *b = mat == 0 ? s->w[j].gate : mat == 1 ? s->w[j].up : s->w[j].down;
				if (!a)
					continue;
				for (size_t k = 0; k < len; k++)
					dot[(size_t)i * E + j] += (double)a[k] * b[k];
			}
	for (int i = 0; i < E; i++)
		for (int j = 0; j < E; j++)
			out[(size_t)i * E + j] = i == j ? 1.0 : mapped_cos(dot[(size_t)i * E + j], dot[(size_t)i * E + i],
									  dot[(size_t)j * E + j]);
	free(dot);
}

static void check_weight(expert_set *s, const char *what)
{
	const int E = s->E;
	double *got = malloc((size_t)E * E * sizeof *got), *want = malloc((size_t)E * E * sizeof *want);
	CHECK(sim_weight(s->w, E, got) == MS_OK, "%s", what);
	brute_weight(s, want);
	int sym;
	const double diff = max_diff(got, want, E, &sym);
	CHECK(diff <= 1e-5, "%s: max difference %.3g", what, diff);
	CHECK(sym, "%s", what);
	free(got);
	free(want);
}

static void test_weight_random(void)
{
	expert_set s = make_experts(5, 20, 30, MDL_ACT_SILU_GLU, 31);
	/* Make expert 3 close to expert 1, so that not every similarity is near 1/2. */
	for (size_t k = 0; k < (size_t)3 * 20 * 30; k++)
		s.mem[3 * 1800 + k] = s.mem[1800 + k] + 0.2f * s.mem[3 * 1800 + k];
	check_weight(&s, "gated");
	free_experts(&s);
	s = make_experts(5, 20, 30, MDL_ACT_RELU, 32);
	check_weight(&s, "no gate");
	free_experts(&s);
	/* d f = 20000 > SIM_BLOCK_FLOATS / 64: each matrix spans two blocks. */
	s = make_experts(64, 100, 200, MDL_ACT_SILU_GLU, 33);
	EXPECT(100 * 200 > SIM_BLOCK_FLOATS / 64);
	check_weight(&s, "64 experts, several blocks");
	free_experts(&s);
}

/* Experts with biases (gpt-oss): the weight base appends gate, up and down biases to the flattened matrices; two
 * experts with equal matrices but other biases are no longer identical. Brute force over the concatenation. */
static void test_weight_biases(void)
{
	enum { E = 3, d = 4, f = 6 };
	const int64_t per = 3 * f * d + 2 * f + d;
	float *w = random_floats((size_t)(E * per), 101);
	memcpy(w + per, w, (size_t)(3 * f * d) * sizeof *w);   /* expert 1's matrices = expert 0's, biases differ */
	expert_weights ex[E];
	for (int e = 0; e < E; e++) {
		float *p = w + e * per;
		ex[e] = (expert_weights){.gate = p, .up = p + f * d, .down = p + 2 * f * d, .gate_bias = p + 3 * f * d,
					 .up_bias = p + 3 * f * d + f, .down_bias = p + 3 * f * d + 2 * f, .d = d, .f = f,
					 .act = MDL_ACT_CLAMPED_SWIGLU};
	}
	double got[E * E];
	EXPECT(sim_weight(ex, E, got) == MS_OK);
	for (int i = 0; i < E; i++)
		for (int j = 0; j < E; j++) {
			double ab = 0, aa = 0, bb = 0;
			for (int64_t k = 0; k < per; k++) {   /* the whole span: matrices then biases */
				ab += (double)w[i * per + k] * w[j * per + k];
				aa += (double)w[i * per + k] * w[i * per + k];
				bb += (double)w[j * per + k] * w[j * per + k];
			}
			CHECK_CLOSE(got[i * E + j], i == j ? 1.0 : (ab / sqrt(aa * bb) + 1.0) / 2.0, 1e-6);
		}
	CHECK(got[1] < 0.99, "equal matrices, other biases: %g", got[1]);
	ex[2].up_bias = NULL;   /* experts must agree on their biases */
	EXPECT(sim_weight(ex, E, got) == MS_ERR_ARG);
	free(w);
}

/* ---- expert-output ---- */

/* o [E, d]: the mean of expert_forward over every token, accumulated in double. */
static void brute_mean_outputs(const expert_set *s, const float *x, int64_t T, double *o)
{
	float *y = malloc((size_t)T * s->d * sizeof *y);
	float *work = malloc((size_t)expert_work_floats(&s->w[0], T) * sizeof *work);
	for (int e = 0; e < s->E; e++) {
		EXPECT(expert_forward(&s->w[e], x, T, 1.0f, 0, y, work) == MS_OK);
		for (int r = 0; r < s->d; r++) {
			double acc = 0.0;
			for (int64_t t = 0; t < T; t++)
				acc += y[(size_t)t * s->d + r];
			o[(size_t)e * s->d + r] = acc / (double)T;
		}
	}
	free(y);
	free(work);
}

static void test_expert_output(void)
{
	const int E = 4, d = 16, f = 24;
	const int64_t T = 100;
	for (int act = 0; act < 2; act++) {
		expert_set s = make_experts(E, d, f, act ? MDL_ACT_RELU : MDL_ACT_SILU_GLU, 41 + act);
		float *x = random_floats((size_t)T * d, 43);
		double want[64];
		brute_mean_outputs(&s, x, T, want);
		static const int64_t chunks[] = { 7, 0, 1000, 1, 100 };
		for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
			float o[64];
			CHECK(sim_expert_mean_outputs(s.w, E, x, T, chunks[c], o) == MS_OK, "chunk %lld",
			      (long long)chunks[c]);
			double worst = 0.0, scale = 0.0;
			for (int k = 0; k < E * d; k++) {
				worst = fmax(worst, fabs(o[k] - want[k]));
				scale = fmax(scale, fabs(want[k]));
			}
			CHECK(worst <= 1e-5 * scale, "act %d chunk %lld: off by %.3g of %.3g", act, (long long)chunks[c],
			      worst, scale);
		}
		/* The base through sim_compute: cosine of the means, and their Euclidean distance. */
		sim_inputs in = { .E = E, .d = d, .T = T, .x = x, .experts = s.w, .chunk = 9 };
		double sim[16], dist[16];
		EXPECT(sim_compute(SIM_EXPERT_OUTPUT, &in, sim, dist) == MS_OK);
		for (int i = 0; i < E; i++)
			for (int j = 0; j < E; j++) {
				double dot = 0.0, ni = 0.0, nj = 0.0, d2 = 0.0;
				for (int k = 0; k < d; k++) {
					const double a = want[i * d + k], b = want[j * d + k];
					dot += a * b, ni += a * a, nj += b * b, d2 += (a - b) * (a - b);
				}
				CHECK_CLOSE(sim[i * E + j], i == j ? 1.0 : mapped_cos(dot, ni, nj), 1e-5);
				CHECK(fabs(dist[i * E + j] - sqrt(d2)) <= 1e-5 * sqrt(ni + nj), "dist %d %d: %g vs %g", i, j,
				      dist[i * E + j], sqrt(d2));
			}
		free(x);
		free_experts(&s);
	}
}

static void test_euclidean(void)
{
	const int n = 5, m = 300;
	float *o = random_floats((size_t)n * m, 51);
	/* A large common part, and rows 1 and 2 nearly equal: the case where |a|^2 + |b|^2 - 2 a.b cancels. */
	for (int k = 0; k < m; k++) {
		for (int i = 0; i < n; i++)
			o[i * m + k] += 100.0f;
		o[2 * m + k] = o[1 * m + k] + (k % 2 ? 1e-3f : -1e-3f);
	}
	double got[25];
	EXPECT(sim_euclidean_rows(o, n, m, got) == MS_OK);
	for (int i = 0; i < n; i++)
		for (int j = 0; j < n; j++) {
			double d2 = 0.0;
			for (int k = 0; k < m; k++) {
				const double t = (double)o[i * m + k] - o[j * m + k];
				d2 += t * t;
			}
			CHECK(fabs(got[i * n + j] - sqrt(d2)) <= 1e-6 * sqrt(d2) + 1e-12, "%d %d: %.10g vs %.10g", i, j,
			      got[i * n + j], sqrt(d2));
			EXPECT(got[i * n + j] == got[j * n + i]);
		}
	for (int i = 0; i < n; i++)
		EXPECT(got[i * n + i] == 0.0);
	free(o);
}

/* ---- planted structure, zeros and the floor ---- */

/* Rows 0..n/2-1 around one centre, the rest around another: within-cluster similarity beats across. */
static void check_clusters(const double *sim, int n, const char *what)
{
	double within = 1.0, across = 0.0;
	for (int i = 0; i < n; i++)
		for (int j = 0; j < n; j++) {
			if (i == j)
				continue;
			if ((i < n / 2) == (j < n / 2))
				within = fmin(within, sim[i * n + j]);
			else
				across = fmax(across, sim[i * n + j]);
		}
	CHECK(within > across + 0.1, "%s: least within %.4f, most across %.4f", what, within, across);
}

static void test_planted_clusters(void)
{
	const int n = 8, m = 200;
	float *centre = random_floats(2 * m, 61), *noise = random_floats((size_t)n * m, 62);
	float *a = malloc((size_t)n * m * sizeof *a), *z = malloc((size_t)m * n * sizeof *z);
	for (int i = 0; i < n; i++)
		for (int k = 0; k < m; k++) {
			a[i * m + k] = centre[(i < n / 2) * m + k] + 0.3f * noise[i * m + k];
			z[k * n + i] = a[i * m + k]; /* the same vectors as columns */
		}
	double sim[64], simz[64];
	EXPECT(sim_cosine_rows(a, n, m, sim) == MS_OK);
	check_clusters(sim, n, "rows");
	EXPECT(sim_cosine_columns(z, m, n, simz) == MS_OK);
	check_clusters(simz, n, "columns");
	for (int k = 0; k < n * n; k++)
		CHECK(fabs(sim[k] - simz[k]) <= 1e-6, "rows and columns disagree at %d", k);

	/* Experts built from two prototypes. */
	expert_set s = make_experts(n, 10, 20, MDL_ACT_SILU_GLU, 63);
	const size_t per = 600;
	for (int e = 0; e < n; e++)
		for (size_t k = 0; k < per; k++)
			s.mem[e * per + k] = centre[(e < n / 2) * m + k % m] * (k < 300 ? 1.0f : -1.0f) +
					     0.3f * s.mem[e * per + k];
	EXPECT(sim_weight(s.w, n, sim) == MS_OK);
	check_clusters(sim, n, "weights");
	free_experts(&s);
	free(centre);
	free(noise);
	free(a);
	free(z);
}

static void test_zero_and_floor(void)
{
	const int n = 4, m = 3;
	float a[12] = { 0, 0, 0, 1, 2, 3, 0, 0, 0, -1, 0.5f, 2 };
	double sim[16];
	EXPECT(sim_cosine_rows(a, n, m, sim) == MS_OK);
	for (int i = 0; i < n; i++) {
		CHECK(sim[i * n + i] == 1.0, "diagonal %d = %.17g", i, sim[i * n + i]);
		for (int j = 0; j < n; j++)
			if (i != j && (i % 2 == 0 || j % 2 == 0))
				CHECK(sim[i * n + j] == 0.5, "zero row pair %d %d = %.17g", i, j, sim[i * n + j]);
	}
	/* Lengths so small that |a| |b| < 1e-7: the floor, not |a| |b|, divides. */
	float t[6] = { 1e-5f, 2e-5f, 0, 2e-5f, 1e-5f, 1e-5f };
	EXPECT(sim_cosine_rows(t, 2, 3, sim) == MS_OK);
	const double dot = (double)t[0] * t[3] + (double)t[1] * t[4];
	CHECK_CLOSE(sim[1], (dot / 1e-7 + 1.0) / 2.0, 1e-9);
	EXPECT(sim[1] < 0.51);

	/* No tokens: every column is a zero vector. */
	float dummy = 0.0f;
	EXPECT(sim_cosine_columns(&dummy, 0, 2, sim) == MS_OK);
	EXPECT(sim[0] == 1.0 && sim[1] == 0.5 && sim[2] == 0.5 && sim[3] == 1.0);
}

/* ---- bad input ---- */

static void test_bad_input(void)
{
	float a[6] = { 1, 2, 3, 4, 5, 6 };
	double out[4];
	EXPECT(sim_cosine_rows(NULL, 2, 3, out) == MS_ERR_ARG);
	EXPECT(sim_cosine_rows(a, 0, 3, out) == MS_ERR_ARG);
	EXPECT(sim_cosine_rows(a, 2, -1, out) == MS_ERR_ARG);
	EXPECT(sim_cosine_columns(a, -1, 2, out) == MS_ERR_ARG);
	EXPECT(sim_euclidean_rows(a, 2, 3, NULL) == MS_ERR_ARG);
	a[4] = NAN;
	EXPECT(sim_cosine_rows(a, 2, 3, out) == MS_ERR_NONFINITE);
	EXPECT(sim_cosine_columns(a, 3, 2, out) == MS_ERR_NONFINITE);
	EXPECT(sim_euclidean_rows(a, 2, 3, out) == MS_ERR_NONFINITE);
	a[4] = INFINITY;
	EXPECT(sim_cosine_rows(a, 2, 3, out) == MS_ERR_NONFINITE);

	expert_set s = make_experts(2, 4, 3, MDL_ACT_SILU_GLU, 71);
	float x[8] = { 0 };
	float o[8];
	EXPECT(sim_expert_mean_outputs(s.w, 2, x, 0, 0, o) == MS_ERR_CALIB_EMPTY);
	s.mem[5] = NAN;
	EXPECT(sim_weight(s.w, 2, out) == MS_ERR_NONFINITE);
	s.w[1].f = 5; /* experts that disagree */
	EXPECT(sim_weight(s.w, 2, out) == MS_ERR_ARG);
	EXPECT(sim_expert_mean_outputs(s.w, 2, x, 2, 0, o) == MS_ERR_ARG);
	s.w[1].f = 3;
	s.w[1].gate = NULL;
	EXPECT(sim_weight(s.w, 2, out) == MS_ERR_ARG);
	free_experts(&s);

	sim_inputs in = { .E = 2, .d = 3, .T = 2 };
	EXPECT(sim_compute(SIM_ROUTER_WEIGHT, &in, out, NULL) == MS_ERR_ARG);
	EXPECT(sim_compute(SIM_ROUTER_LOGITS, &in, out, NULL) == MS_ERR_ARG);
	EXPECT(sim_compute(SIM_WEIGHT, &in, out, NULL) == MS_ERR_ARG);
	EXPECT(sim_compute(SIM_EXPERT_OUTPUT, &in, NULL, out) == MS_ERR_ARG);
	EXPECT(sim_compute(SIM_BASE_COUNT, &in, out, NULL) == MS_ERR_ARG);
	EXPECT(sim_compute(SIM_WEIGHT, NULL, out, NULL) == MS_ERR_ARG);
}

/* A router with a logit bias (gpt-oss): router-weight compares the rows [r_e | b_e], the cosine computed here in
 * double; two equal rows with opposite biases are then told apart. router-logits without z adds the bias to the
 * logits it computes, as the z the pipeline passes already has it. */
static void test_router_bias(void)
{
	enum { E = 4, d = 5, T = 30 };
	float *router = random_floats((size_t)E * d, 91), *x = random_floats((size_t)T * d, 92);
	float bias[E] = {0.8f, -0.8f, 0.3f, -1.5f};
	memcpy(router + d, router, d * sizeof *router);   /* rows 0 and 1 equal */
	double got[E * E], want[E * E];
	sim_inputs in = {.E = E, .d = d, .T = T, .x = x, .router = router};
	EXPECT(sim_compute(SIM_ROUTER_WEIGHT, &in, got, NULL) == MS_OK);
	CHECK(got[1] == 1.0 && got[E] == 1.0, "equal rows without bias: %g", got[1]);
	in.router_bias = bias;
	EXPECT(sim_compute(SIM_ROUTER_WEIGHT, &in, got, NULL) == MS_OK);
	for (int i = 0; i < E; i++)
		for (int j = 0; j < E; j++) {
			double ab = (double)bias[i] * bias[j], aa = (double)bias[i] * bias[i], bb = (double)bias[j] * bias[j];
			for (int c = 0; c < d; c++) {
				ab += (double)router[i * d + c] * router[j * d + c];
				aa += (double)router[i * d + c] * router[i * d + c];
				bb += (double)router[j * d + c] * router[j * d + c];
			}
			want[i * E + j] = i == j ? 1.0 : (ab / sqrt(aa * bb) + 1.0) / 2.0;
			CHECK_CLOSE(got[i * E + j], want[i * E + j], 1e-6);
		}
	CHECK(got[1] < 0.99, "equal rows, opposite biases: %g", got[1]);
	float z[T * E];
	for (int t = 0; t < T; t++)
		for (int e = 0; e < E; e++) {
			double v = bias[e];
			for (int c = 0; c < d; c++)
				v += (double)x[t * d + c] * router[e * d + c];
			z[t * E + e] = (float)v;
		}
	EXPECT(sim_cosine_columns(z, T, E, want) == MS_OK);
	EXPECT(sim_compute(SIM_ROUTER_LOGITS, &in, got, NULL) == MS_OK);
	for (int k = 0; k < E * E; k++)
		CHECK_CLOSE(got[k], want[k], 1e-5);
	free(router);
	free(x);
}

/* ---- dispatch ---- */

static void test_compute_dispatch(void)
{
	const int E = 6, d = 12, f = 10;
	const int64_t T = 40;
	float *x = random_floats((size_t)T * d, 81), *router = random_floats((size_t)E * d, 82);
	float *z = malloc((size_t)T * E * sizeof *z);
	EXPECT(route_logits(x, T, d, router, E, z) == MS_OK);
	expert_set s = make_experts(E, d, f, MDL_ACT_SILU_GLU, 83);
	double want[36], got[36], dist[36];

	sim_inputs in = { .E = E, .d = d, .T = T, .x = x, .router = router, .experts = s.w };
	EXPECT(sim_cosine_columns(z, T, E, want) == MS_OK);
	EXPECT(sim_compute(SIM_ROUTER_LOGITS, &in, got, dist) == MS_OK); /* computes Z itself */
	for (int k = 0; k < E * E; k++) {
		CHECK_CLOSE(got[k], want[k], 1e-6);
		CHECK(dist[k] == 1.0 - got[k], "distance %d", k);
	}
	in.z = z;
	EXPECT(sim_compute(SIM_ROUTER_LOGITS, &in, got, NULL) == MS_OK);
	for (int k = 0; k < E * E; k++)
		EXPECT(got[k] == want[k]);

	EXPECT(sim_cosine_rows(router, E, d, want) == MS_OK);
	EXPECT(sim_compute(SIM_ROUTER_WEIGHT, &in, NULL, dist) == MS_OK); /* distance alone */
	for (int k = 0; k < E * E; k++)
		EXPECT(dist[k] == 1.0 - want[k]);

	EXPECT(sim_weight(s.w, E, want) == MS_OK);
	EXPECT(sim_compute(SIM_WEIGHT, &in, got, NULL) == MS_OK);
	for (int k = 0; k < E * E; k++)
		EXPECT(got[k] == want[k]);
	free(x);
	free(router);
	free(z);
	free_experts(&s);
}

/* ---- golden ---- */


/* expected/similarity_router_logits_layer{L}.csv: 8 lines of 8 numbers. */
static int golden_similarity(int layer, double *sim)
{
	char path[256];
	snprintf(path, sizeof path, GOLDEN "expected/similarity_router_logits_layer%d.csv", layer);
	FILE *fp = fopen(path, "r");
	if (!fp)
		return -1;
	int n = 0;
	while (n < 64 && fscanf(fp, " %lf ,", &sim[n]) == 1)
		n++;
	fclose(fp);
	return n == 64 ? 0 : -1;
}

static void test_golden_router_logits(void)
{
	for (int layer = 0; layer < 3; layer++) {
		char name[128];
		int T = 0, d = 0, E = 0, dr = 0;
		snprintf(name, sizeof name, "model.layers.%d.block_sparse_moe.input", layer);
		float *x = golden_tensor(GOLDEN "calib.safetensors", name, &T, &d);
		snprintf(name, sizeof name, "model.layers.%d.block_sparse_moe.gate.weight", layer);
		float *router = golden_tensor(GOLDEN "model/model.safetensors", name, &E, &dr);
		double want[64], got[64], via[64];
		CHECK(golden_similarity(layer, want) == 0, "cannot read the golden similarity of layer %d", layer);
		CHECK(x && router && E == 8 && d == dr && T == 256, "cannot read the golden inputs of layer %d", layer);
		if (!x || !router || E != 8 || d != dr) {
			free(x);
			free(router);
			return;
		}
		float *z = malloc((size_t)T * E * sizeof *z);
		EXPECT(route_logits(x, T, d, router, E, z) == MS_OK);
		EXPECT(sim_cosine_columns(z, T, E, got) == MS_OK);
		sim_inputs in = { .E = E, .d = d, .T = T, .x = x, .router = router };
		EXPECT(sim_compute(SIM_ROUTER_LOGITS, &in, via, NULL) == MS_OK);
		for (int k = 0; k < 64; k++) {
			CHECK(fabs(got[k] - want[k]) <= 1e-5, "layer %d (%d, %d): %.10f, golden %.10f", layer, k / 8,
			      k % 8, got[k], want[k]);
			CHECK(fabs(via[k] - want[k]) <= 1e-5, "sim_compute, layer %d entry %d", layer, k);
		}
		free(z);
		free(x);
		free(router);
	}
}

int main(void)
{
	RUN(test_base_table);
	RUN(test_rows_random);
	RUN(test_rows_extreme_scales);
	RUN(test_columns_random);
	RUN(test_weight_random);
	RUN(test_expert_output);
	RUN(test_euclidean);
	RUN(test_planted_clusters);
	RUN(test_zero_and_floor);
	RUN(test_bad_input);
	RUN(test_compute_dispatch);
	RUN(test_router_bias);
	RUN(test_weight_biases);
	RUN(test_golden_router_logits);
	return test_summary();
}
