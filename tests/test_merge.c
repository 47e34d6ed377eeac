/* Merging: each weighting against a hand computation, the zero-frequency fallback, exact copies for the dominant
 * weighting and for a group of one, a merge written over one of its members, and the golden M-SMoE case (the
 * global plan merged with frequency weighting and no alignment, against an independent implementation, read with
 * io/safetensors). */
#include "analysis/merge.h"

#include <stdint.h>
#include <stdlib.h>

#include "io/safetensors.h"
#include "tests/test.h"

/* ---- by hand ---- */

static const float A[5] = { 1, -2, 3, 0.5f, 8 };
static const float B[5] = { 3, 2, -1, 0.25f, -4 };
static const float C[5] = { -6, 0, 1, 2, 10 };

static void test_names(void)
{
	for (int w = 0; w < MERGE_WEIGHTING_COUNT; w++)
		CHECK(merge_weighting_parse(merge_weighting_name((merge_weighting)w)) == w, "weighting %d", w);
	EXPECT(merge_weighting_parse("frequency") == MERGE_FREQUENCY);
	EXPECT(merge_weighting_parse("uniform") == MERGE_UNIFORM);
	EXPECT(merge_weighting_parse("dominant") == MERGE_DOMINANT);
	EXPECT(merge_weighting_parse("Frequency") == -1);
	EXPECT(merge_weighting_parse(NULL) == -1);
	EXPECT(strcmp(merge_weighting_name(MERGE_WEIGHTING_COUNT), "?") == 0);
}

static void test_frequency_by_hand(void)
{
	const float *mats[3] = { A, B, C };
	const double f[3] = { 0.1, 0.3, 0.0 };
	float out[5];
	CHECK(merge_matrices(3, mats, f, 0, MERGE_FREQUENCY, 5, out) == MS_OK, "merge");
	for (int i = 0; i < 5; i++) {
		/* C has frequency 0 and takes no part; the epsilon shrinks the sum by 1e-7 / 0.4 */
		const double want = (0.1 * A[i] + 0.3 * B[i]) / (0.4 + 1e-7);
		CHECK_CLOSE(out[i], want, 1e-6);
	}
	double coef[3];
	CHECK(merge_coefficients(3, f, 0, MERGE_FREQUENCY, coef) == MS_OK, "coefficients");
	CHECK_CLOSE(coef[0], 0.25, 1e-6);
	CHECK_CLOSE(coef[1], 0.75, 1e-6);
	CHECK(coef[2] == 0, "coef[2] = %g", coef[2]);
}

static void test_uniform_by_hand(void)
{
	const float *mats[3] = { A, B, C };
	const double f[3] = { 0.9, 0.05, 0.05 };  /* ignored */
	float out[5];
	CHECK(merge_matrices(3, mats, f, 0, MERGE_UNIFORM, 5, out) == MS_OK, "merge");
	for (int i = 0; i < 5; i++)
		CHECK_CLOSE(out[i], (A[i] + B[i] + C[i]) / 3.0, 1e-6);
	/* frequency may be NULL when not used */
	CHECK(merge_matrices(3, mats, NULL, 0, MERGE_UNIFORM, 5, out) == MS_OK, "uniform without frequencies");
}

static void test_zero_frequency_falls_back_to_uniform(void)
{
	const float *mats[3] = { A, B, C };
	const double f[3] = { 0, 0, 0 };
	float out[5], uni[5];
	CHECK(merge_matrices(3, mats, f, 1, MERGE_FREQUENCY, 5, out) == MS_OK, "merge");
	CHECK(merge_matrices(3, mats, NULL, 1, MERGE_UNIFORM, 5, uni) == MS_OK, "uniform");
	CHECK(memcmp(out, uni, sizeof out) == 0, "zero frequencies should merge as uniform");
	/* not the zero expert MC-SMoE would write */
	for (int i = 0; i < 5; i++)
		CHECK_CLOSE(out[i], (A[i] + B[i] + C[i]) / 3.0, 1e-6);
}

static void test_dominant_is_exact(void)
{
	const float *mats[3] = { A, B, C };
	const double f[3] = { 0.1, 0.3, 0.6 };
	float out[5];
	CHECK(merge_matrices(3, mats, f, 1, MERGE_DOMINANT, 5, out) == MS_OK, "merge");
	CHECK(memcmp(out, B, sizeof out) == 0, "dominant should copy member 1 bit for bit");
	EXPECT(merge_matrices(3, mats, f, 3, MERGE_DOMINANT, 5, out) == MS_ERR_ARG);
	EXPECT(merge_matrices(3, mats, f, -1, MERGE_DOMINANT, 5, out) == MS_ERR_ARG);
}

static void test_group_of_one_is_exact(void)
{
	const float *mats[1] = { C };
	const double f[1] = { 0.3 };
	for (int w = 0; w < MERGE_WEIGHTING_COUNT; w++) {
		float out[5];
		CHECK(merge_matrices(1, mats, f, 0, (merge_weighting)w, 5, out) == MS_OK, "weighting %d", w);
		CHECK(memcmp(out, C, sizeof out) == 0, "weighting %s changed a lone expert", merge_weighting_name(w));
	}
}

static void test_bad_input(void)
{
	const float *mats[2] = { A, B };
	const float *holes[2] = { A, NULL };
	float out[5];
	const double neg[2] = { 0.5, -0.1 }, nan2[2] = { 0.5, NAN }, ok[2] = { 0.5, 0.5 };
	EXPECT(merge_matrices(2, mats, neg, 0, MERGE_FREQUENCY, 5, out) == MS_ERR_ARG);
	EXPECT(merge_matrices(2, mats, nan2, 0, MERGE_FREQUENCY, 5, out) == MS_ERR_NONFINITE);
	EXPECT(merge_matrices(2, mats, NULL, 0, MERGE_FREQUENCY, 5, out) == MS_ERR_ARG);
	EXPECT(merge_matrices(0, mats, ok, 0, MERGE_FREQUENCY, 5, out) == MS_ERR_ARG);
	EXPECT(merge_matrices(2, holes, ok, 0, MERGE_FREQUENCY, 5, out) == MS_ERR_ARG);
	EXPECT(merge_matrices(2, mats, ok, 0, MERGE_WEIGHTING_COUNT, 5, out) == MS_ERR_ARG);
	EXPECT(merge_matrices(2, mats, ok, 0, MERGE_FREQUENCY, -1, out) == MS_ERR_ARG);
	EXPECT(merge_matrices(2, mats, ok, 0, MERGE_FREQUENCY, 0, out) == MS_OK);
}

/* Several chunks, written over the second member: each element is the double-precision sum to float accuracy. */
static void test_long_in_place(void)
{
	enum { N = 2500, M = 4 };
	float *buf = malloc(sizeof(float) * N * M);
	double *want = malloc(sizeof(double) * N);
	unsigned long long seed = 42;
	for (int i = 0; i < N * M; i++)
		buf[i] = test_rand_f(&seed);
	const float *mats[M];
	for (int e = 0; e < M; e++)
		mats[e] = buf + (size_t)e * N;
	const double f[M] = { 0.05, 0.2, 0.125, 0.0625 };
	const double sum = 0.05 + 0.2 + 0.125 + 0.0625 + 1e-7;
	for (int i = 0; i < N; i++) {
		want[i] = 0;
		for (int e = 0; e < M; e++)
			want[i] += f[e] * mats[e][i] / sum;
	}
	CHECK(merge_matrices(M, mats, f, 0, MERGE_FREQUENCY, N, buf + N) == MS_OK, "merge");
	double worst = 0;
	for (int i = 0; i < N; i++)
		worst = fmax(worst, fabs(buf[N + i] - want[i]));
	CHECK(worst < 1e-6, "largest difference %g", worst);
	free(buf);
	free(want);
}

/* ---- the golden case ---- */

#define GOLDEN_DIR "tests/data/golden/msmoe-mixtral/"
enum { GL_BLOCKS = 3, GL_E = 8, GL_D = 32, GL_F = 48 };

/* Copies tensor `name` of f, which must hold numel values, into out as float32. */
static int read_tensor(const st_file *f, const char *name, float *out, uint64_t numel)
{
	const st_tensor *t = st_find(f, name);
	return t && t->numel == numel && st_read_f32(t, out, NULL) == MS_OK ? 0 : -1;
}

/* group, dominant and frequency [GL_BLOCKS * GL_E] from a plan CSV (layer,expert,group,dominant,frequency). */
static int read_plan(const char *path, int *group, unsigned char *dominant, double *frequency)
{
	FILE *fp = fopen(path, "r");
	if (!fp)
		return -1;
	char line[256];
	int rows = 0;
	if (!fgets(line, sizeof line, fp) || strncmp(line, "layer,expert,group,dominant,frequency", 37) != 0)
		rows = -1;
	while (rows >= 0 && fgets(line, sizeof line, fp)) {
		int layer, expert, g, dom;
		double freq;
		if (sscanf(line, "%d,%d,%d,%d,%lf", &layer, &expert, &g, &dom, &freq) != 5 || layer < 0 ||
		    layer >= GL_BLOCKS || expert < 0 || expert >= GL_E) {
			rows = -1;
			break;
		}
		group[layer * GL_E + expert] = g;
		dominant[layer * GL_E + expert] = (unsigned char)dom;
		frequency[layer * GL_E + expert] = freq;
		rows++;
	}
	fclose(fp);
	return rows == GL_BLOCKS * GL_E ? 0 : -1;
}

/* max |got - want| / max |want| over one matrix */
static double scaled_difference(const float *got, const float *want, size_t n)
{
	double diff = 0, scale = 0;
	for (size_t i = 0; i < n; i++) {
		diff = fmax(diff, fabs((double)got[i] - want[i]));
		scale = fmax(scale, fabs((double)want[i]));
	}
	return scale > 0 ? diff / scale : diff;
}

/* Merges every group of block b's matrix `mat` (w1, w2 or w3) with weighting w and returns the largest scaled
 * difference to the golden merged file over all experts (-1 when a tensor could not be read). */
static double golden_block_difference(const st_file *model, const st_file *merged, int b, const char *mat,
				      const int *group, const unsigned char *dominant, const double *frequency,
				      merge_weighting w)
{
	enum { NUMEL = GL_D * GL_F };
	static float weights[GL_E][NUMEL], want[NUMEL], out[NUMEL];
	char name[128];
	for (int e = 0; e < GL_E; e++) {
		snprintf(name, sizeof name, "model.layers.%d.block_sparse_moe.experts.%d.%s.weight", b, e, mat);
		if (read_tensor(model, name, weights[e], NUMEL) != 0)
			return -1;
	}
	double worst = 0;
	for (int e = 0; e < GL_E; e++) {
		const float *mats[GL_E];
		double f[GL_E];
		int n = 0, dom = -1;
		for (int o = 0; o < GL_E; o++) {
			if (group[b * GL_E + o] != group[b * GL_E + e])
				continue;
			if (dominant[b * GL_E + o])
				dom = n;
			f[n] = frequency[b * GL_E + o];
			mats[n++] = weights[o];
		}
		if (merge_matrices(n, mats, f, dom, w, NUMEL, out) != MS_OK)
			return -1;
		snprintf(name, sizeof name, "model.layers.%d.block_sparse_moe.experts.%d.%s.weight", b, e, mat);
		if (read_tensor(merged, name, want, NUMEL) != 0)
			return -1;
		worst = fmax(worst, scaled_difference(out, want, NUMEL));
	}
	return worst;
}

static void test_golden_frequency_merge(void)
{
	int group[GL_BLOCKS * GL_E];
	unsigned char dominant[GL_BLOCKS * GL_E];
	double frequency[GL_BLOCKS * GL_E];
	st_file *model = NULL, *merged = NULL;
	ms_error err = { 0 };
	CHECK(read_plan(GOLDEN_DIR "expected/plan_global_avg4.csv", group, dominant, frequency) == 0,
	      "cannot read the golden plan (run from the repository root)");
	CHECK(st_open(GOLDEN_DIR "model/model.safetensors", &model, &err) == MS_OK, "%s", err.msg);
	CHECK(st_open(GOLDEN_DIR "expected/merged_global_avg4_aliased.safetensors", &merged, &err) == MS_OK, "%s",
	      err.msg);
	if (test_failures_in_case) {
		st_close(model);
		st_close(merged);
		return;
	}
	static const char *const mats[3] = { "w1", "w2", "w3" };
	for (int b = 0; b < GL_BLOCKS; b++) {
		for (int k = 0; k < 3; k++) {
			double diff = golden_block_difference(model, merged, b, mats[k], group, dominant, frequency,
							      MERGE_FREQUENCY);
			CHECK(diff >= 0 && diff <= 1e-5, "layer %d %s: scaled difference %g", b, mats[k], diff);
			/* the comparison can tell weightings apart: uniform merging must miss the golden weights */
			double uni = golden_block_difference(model, merged, b, mats[k], group, dominant, frequency,
							     MERGE_UNIFORM);
			CHECK(uni > 1e-3, "layer %d %s: uniform merge matches too (%g)", b, mats[k], uni);
		}
	}
	st_close(model);
	st_close(merged);
}

int main(void)
{
	RUN(test_names);
	RUN(test_frequency_by_hand);
	RUN(test_uniform_by_hand);
	RUN(test_zero_frequency_falls_back_to_uniform);
	RUN(test_dominant_is_exact);
	RUN(test_group_of_one_is_exact);
	RUN(test_bad_input);
	RUN(test_long_in_place);
	RUN(test_golden_frequency_merge);
	return test_summary();
}
