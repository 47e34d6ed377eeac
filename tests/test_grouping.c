/* Grouping: the golden M-SMoE plans (per layer and global), hierarchical clustering against hand-worked answers
 * and a direct re-implementation, pruning, REAP saliency against a per-token loop, global counts by hand. */
#include "analysis/grouping.h"

#include <stdlib.h>

#include "tests/test.h"

/* CHECK with no message trips -Wformat-zero-length under -Werror; EXPECT passes an empty one. */
#define GOLDEN "tests/data/golden/msmoe-mixtral/expected/"
enum { GL_BLOCKS = 3, GL_E = 8 };

/* ---- reading the golden CSVs: numbers separated by commas, an optional header line ---- */

/* Reads up to max numbers from each line of path into rows of `width`; skips a first line starting with a letter.
 * Returns the number of data lines, or -1 when the file is missing or a line does not hold `width` numbers. */
static int read_numbers(const char *path, int width, double *out, int max_rows)
{
	FILE *fp = fopen(path, "r");
	if (!fp)
		return -1;
	char line[1024];
	int rows = 0;
	while (fgets(line, sizeof line, fp)) {
		if ((line[0] >= 'a' && line[0] <= 'z') || line[0] == '\n')
			continue;
		if (rows >= max_rows)
			break;
		char *p = line;
		for (int c = 0; c < width; c++) {
			char *end;
			out[rows * width + c] = strtod(p, &end);
			if (end == p || (*end != ',' && *end != '\n' && *end != '\r' && *end != '\0')) {
				fclose(fp);
				return -1;
			}
			p = *end == ',' ? end + 1 : end;
		}
		rows++;
	}
	fclose(fp);
	return rows;
}

/* frequency [GL_BLOCKS, GL_E] from stats.csv (layer, expert, frequency, three stable ranks) */
static int golden_frequency(double *frequency)
{
	double rows[GL_BLOCKS * GL_E * 6];
	if (read_numbers(GOLDEN "stats.csv", 6, rows, GL_BLOCKS * GL_E) != GL_BLOCKS * GL_E)
		return -1;
	for (int r = 0; r < GL_BLOCKS * GL_E; r++)
		frequency[(int)rows[r * 6] * GL_E + (int)rows[r * 6 + 1]] = rows[r * 6 + 2];
	return 0;
}

static int golden_similarity(int layer, double *sim)
{
	char path[256];
	snprintf(path, sizeof path, GOLDEN "similarity_router_logits_layer%d.csv", layer);
	return read_numbers(path, GL_E, sim, GL_E) == GL_E ? 0 : -1;
}

/* group and dominant [GL_BLOCKS, GL_E] from a plan CSV (layer, expert, group, dominant, frequency) */
static int golden_plan(const char *path, int *group, unsigned char *dominant)
{
	double rows[GL_BLOCKS * GL_E * 5];
	if (read_numbers(path, 5, rows, GL_BLOCKS * GL_E) != GL_BLOCKS * GL_E)
		return -1;
	for (int r = 0; r < GL_BLOCKS * GL_E; r++) {
		const int at = (int)rows[r * 5] * GL_E + (int)rows[r * 5 + 1];
		group[at] = (int)rows[r * 5 + 2];
		dominant[at] = (unsigned char)rows[r * 5 + 3];
	}
	return 0;
}

/* Same partition (labels may differ), same dominants. */
static int same_grouping(int E, const int *ga, const unsigned char *da, const int *gb, const unsigned char *db)
{
	for (int i = 0; i < E; i++) {
		if (da[i] != db[i] || (ga[i] < 0) != (gb[i] < 0))
			return 0;
		for (int j = 0; j < E; j++)
			if ((ga[i] == ga[j]) != (gb[i] == gb[j]))
				return 0;
	}
	return 1;
}

/* ---- golden M-SMoE ---- */

static void test_golden_per_layer(void)
{
	double frequency[GL_BLOCKS * GL_E], sim[GL_E * GL_E];
	int want_group[GL_BLOCKS * GL_E], group[GL_E];
	unsigned char want_dom[GL_BLOCKS * GL_E], dom[GL_E];
	CHECK(golden_frequency(frequency) == 0, "cannot read " GOLDEN "stats.csv (run from the repository root)");
	CHECK(golden_plan(GOLDEN "plan_per_layer_3.csv", want_group, want_dom) == 0, "cannot read the plan");
	for (int b = 0; b < GL_BLOCKS; b++) {
		CHECK(golden_similarity(b, sim) == 0, "cannot read similarity of layer %d", b);
		CHECK(grp_msmoe(GL_E, 3, frequency + b * GL_E, sim, group, dom) == MS_OK, "layer %d", b);
		CHECK(same_grouping(GL_E, group, dom, want_group + b * GL_E, want_dom + b * GL_E),
		      "layer %d differs from the golden plan", b);
		/* labels follow usage order in both, so they agree exactly too */
		CHECK(memcmp(group, want_group + b * GL_E, sizeof group) == 0, "layer %d labels differ", b);
	}
}

static void test_golden_global(void)
{
	double frequency[GL_BLOCKS * GL_E], sim[GL_E * GL_E];
	int want_group[GL_BLOCKS * GL_E], group[GL_E], counts[GL_BLOCKS];
	unsigned char want_dom[GL_BLOCKS * GL_E], dom[GL_E], merged[GL_BLOCKS] = { 1, 1, 1 };
	ms_error err = { 0 };
	CHECK(golden_frequency(frequency) == 0, "cannot read stats.csv");
	CHECK(golden_plan(GOLDEN "plan_global_avg4.csv", want_group, want_dom) == 0, "cannot read the plan");
	CHECK(grp_global_counts(GL_BLOCKS, GL_E, frequency, merged, 4, counts, &err) == MS_OK, "%s", err.msg);
	CHECK(counts[0] == 5 && counts[1] == 4 && counts[2] == 3, "counts %d %d %d, want 5 4 3", counts[0],
	      counts[1], counts[2]);
	for (int b = 0; b < GL_BLOCKS; b++) {
		CHECK(golden_similarity(b, sim) == 0, "cannot read similarity of layer %d", b);
		CHECK(grp_msmoe(GL_E, counts[b], frequency + b * GL_E, sim, group, dom) == MS_OK, "layer %d", b);
		CHECK(same_grouping(GL_E, group, dom, want_group + b * GL_E, want_dom + b * GL_E),
		      "layer %d differs from the golden global plan", b);
	}
}

/* ---- M-SMoE by hand ---- */

static void test_msmoe_by_hand(void)
{
	/* usage order: 2 (0.3), 0 (0.2, lower index than 3), 3 (0.2), 1, 4 */
	const double f[5] = { 0.2, 0.1, 0.3, 0.2, 0.1 };
	/* expert 1 is as similar to dominant 0 as to dominant 2: the first in label order (2, label 0) wins;
	 * expert 4 is most similar to 0 (label 1) */
	const double s[25] = {
		1.0, 0.5, 0.1, 0.1, 0.9,
		0.5, 1.0, 0.5, 0.2, 0.0,
		0.1, 0.5, 1.0, 0.3, 0.1,
		0.1, 0.2, 0.3, 1.0, 0.2,
		0.9, 0.0, 0.1, 0.2, 1.0,
	};
	int g[5];
	unsigned char d[5];
	EXPECT(grp_msmoe(5, 2, f, s, g, d) == MS_OK);
	const int want_g[5] = { 1, 0, 0, 0, 1 };
	const unsigned char want_d[5] = { 1, 0, 1, 0, 0 };
	CHECK(memcmp(g, want_g, sizeof g) == 0, "groups %d %d %d %d %d", g[0], g[1], g[2], g[3], g[4]);
	EXPECT(memcmp(d, want_d, sizeof d) == 0);
	/* G == E: everyone its own dominant, labels in usage order */
	EXPECT(grp_msmoe(5, 5, f, s, g, d) == MS_OK);
	const int own[5] = { 1, 3, 0, 2, 4 };
	CHECK(memcmp(g, own, sizeof g) == 0, "groups %d %d %d %d %d", g[0], g[1], g[2], g[3], g[4]);
	for (int e = 0; e < 5; e++)
		CHECK(d[e] == 1, "expert %d", e);
	/* G == 1: one group led by the most used */
	EXPECT(grp_msmoe(5, 1, f, s, g, d) == MS_OK);
	for (int e = 0; e < 5; e++)
		CHECK(g[e] == 0 && d[e] == (e == 2), "expert %d", e);
}

static void test_invalid_g(void)
{
	const double f[3] = { 0.5, 0.3, 0.2 }, s[9] = { 1, 0, 0, 0, 1, 0, 0, 0, 1 };
	int g[3];
	unsigned char d[3];
	for (int G = -1; G <= 4; G += 1) {
		if (G >= 1 && G <= 3)
			continue;
		CHECK(grp_msmoe(3, G, f, s, g, d) == MS_ERR_ARG, "G=%d", G);
		CHECK(grp_hc(3, G, s, GRP_LINK_AVERAGE, f, g, d) == MS_ERR_ARG, "G=%d", G);
		CHECK(grp_prune(3, G, f, g, d) == MS_ERR_ARG, "G=%d", G);
	}
	EXPECT(grp_msmoe(0, 1, f, s, g, d) == MS_ERR_ARG);
	EXPECT(grp_hc(3, 2, s, (grp_linkage)7, f, g, d) == MS_ERR_ARG);
	const double bad_f[3] = { 0.5, NAN, 0.2 };
	EXPECT(grp_msmoe(3, 2, bad_f, s, g, d) == MS_ERR_NONFINITE);
	EXPECT(grp_prune(3, 2, bad_f, g, d) == MS_ERR_NONFINITE);
	const double bad_s[9] = { 1, 0, 0, 0, 1, INFINITY, 0, 0, 1 };
	EXPECT(grp_msmoe(3, 2, f, bad_s, g, d) == MS_ERR_NONFINITE);
	EXPECT(grp_hc(3, 2, bad_s, GRP_LINK_SINGLE, f, g, d) == MS_ERR_NONFINITE);
}

/* ---- HC ---- */

static void line_distances(int n, const double *x, double *dist)
{
	for (int i = 0; i < n; i++)
		for (int j = 0; j < n; j++)
			dist[i * n + j] = fabs(x[i] - x[j]);
}

/* Points 0, 5, 9, 13, 19, 28 into two clusters; worked by hand (ties to the lowest pair):
 * single chains the first five (gaps 4, 4, 5, 6 < 9): {0..4} {5};
 * complete: {1,2} at 4, {3,4} at 6, {0,1,2} at 9, then {3,4,5}: {0,1,2} {3,4,5};
 * average: {1,2} at 4, {1,2,3} at 6 (tied with {3,4}; lower pair), {0,1,2,3} at 9 (tied with {4,5}), {4,5}. */
static void test_hc_line(void)
{
	const double x[6] = { 0, 5, 9, 13, 19, 28 };
	const double f[6] = { 0.1, 0.3, 0.05, 0.2, 0.15, 0.2 };
	double dist[36];
	line_distances(6, x, dist);
	int g[6];
	unsigned char d[6];
	struct {
		grp_linkage l;
		int group[6];
		unsigned char dom[6];
	} cases[] = {
		{ GRP_LINK_SINGLE, { 0, 0, 0, 0, 0, 1 }, { 0, 1, 0, 0, 0, 1 } },
		/* dominants 1 (0.3) and 3 (0.2, ties 5 and wins by index) */
		{ GRP_LINK_COMPLETE, { 0, 0, 0, 1, 1, 1 }, { 0, 1, 0, 1, 0, 0 } },
		{ GRP_LINK_AVERAGE, { 0, 0, 0, 0, 1, 1 }, { 0, 1, 0, 0, 0, 1 } },
	};
	for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
		CHECK(grp_hc(6, 2, dist, cases[c].l, f, g, d) == MS_OK, "%s", grp_linkage_name(cases[c].l));
		CHECK(memcmp(g, cases[c].group, sizeof g) == 0, "%s: groups %d %d %d %d %d %d",
		      grp_linkage_name(cases[c].l), g[0], g[1], g[2], g[3], g[4], g[5]);
		CHECK(memcmp(d, cases[c].dom, sizeof d) == 0, "%s: dominants", grp_linkage_name(cases[c].l));
	}
	/* G = E leaves everyone alone, labelled in usage order */
	EXPECT(grp_hc(6, 6, dist, GRP_LINK_AVERAGE, f, g, d) == MS_OK);
	const int own[6] = { 4, 0, 5, 1, 3, 2 };
	CHECK(memcmp(g, own, sizeof g) == 0, "groups %d %d %d %d %d %d", g[0], g[1], g[2], g[3], g[4], g[5]);
}

/* Agglomerative clustering the slow way: cluster distances recomputed from member pairs at every step. */
static void hc_reference(int E, int G, const double *dist, grp_linkage l, int *root)
{
	for (int e = 0; e < E; e++)
		root[e] = e;
	for (int clusters = E; clusters > G; clusters--) {
		int ba = -1, bb = -1;
		double best = INFINITY;
		for (int a = 0; a < E; a++)
			for (int b = a + 1; b < E; b++) {
				if (root[a] != a || root[b] != b)
					continue;
				double acc = l == GRP_LINK_SINGLE ? INFINITY : l == GRP_LINK_COMPLETE ? -INFINITY : 0;
				int pairs = 0;
				for (int i = 0; i < E; i++)
					for (int j = 0; j < E; j++) {
						if (root[i] != a || root[j] != b)
							continue;
						double v = dist[i * E + j];
						acc = l == GRP_LINK_SINGLE ? fmin(acc, v) :
						      l == GRP_LINK_COMPLETE ? fmax(acc, v) : acc + v;
						pairs++;
					}
				if (l == GRP_LINK_AVERAGE)
					acc /= pairs;
				if (ba < 0 || acc < best) {
					best = acc;
					ba = a;
					bb = b;
				}
			}
		for (int e = 0; e < E; e++)
			if (root[e] == bb)
				root[e] = ba;
	}
}

static void test_hc_against_reference(void)
{
	enum { E = 10 };
	unsigned long long s = 2024;
	double dist[E * E], f[E];
	int g[E], root[E], bad = 0, runs = 0;
	unsigned char d[E];
	for (int rep = 0; rep < 30; rep++) {
		for (int i = 0; i < E; i++) {
			f[i] = (test_rand_f(&s) + 1.0) / 2.0;
			dist[i * E + i] = 0;
			for (int j = i + 1; j < E; j++)
				dist[i * E + j] = dist[j * E + i] = (test_rand_f(&s) + 1.0) / 2.0;
		}
		for (int l = 0; l < GRP_LINK_COUNT; l++)
			for (int G = 1; G <= E; G++) {
				runs++;
				hc_reference(E, G, dist, (grp_linkage)l, root);
				int ok = grp_hc(E, G, dist, (grp_linkage)l, f, g, d) == MS_OK;
				int n_dom = 0;
				for (int i = 0; i < E && ok; i++) {
					n_dom += d[i];
					if (g[i] < 0 || g[i] >= G)
						ok = 0;
					for (int j = 0; j < E; j++) {
						if ((g[i] == g[j]) != (root[i] == root[j]))
							ok = 0;
						/* the dominant is the most used of its group */
						if (d[i] && g[i] == g[j] && (f[j] > f[i] || (f[j] == f[i] && j < i)))
							ok = 0;
					}
				}
				if (!ok || n_dom != G)
					bad++;
			}
	}
	CHECK(bad == 0, "%d of %d clusterings differ from the direct computation", bad, runs);
}

/* ---- pruning ---- */

static void test_prune(void)
{
	const double score[6] = { 0.1, 0.4, 0.2, 0.4, 0.05, 0.2 };
	int g[6];
	unsigned char d[6];
	EXPECT(grp_prune(6, 3, score, g, d) == MS_OK);
	/* order: 1, 3 (tie, lower first), 2, 5 (tie), 0, 4 */
	const int want_g[6] = { -1, 0, 2, 1, -1, -1 };
	const unsigned char want_d[6] = { 0, 1, 1, 1, 0, 0 };
	CHECK(memcmp(g, want_g, sizeof g) == 0, "groups %d %d %d %d %d %d", g[0], g[1], g[2], g[3], g[4], g[5]);
	EXPECT(memcmp(d, want_d, sizeof d) == 0);
	EXPECT(grp_prune(6, 6, score, g, d) == MS_OK);
	for (int e = 0; e < 6; e++)
		CHECK(g[e] >= 0 && d[e] == 1, "expert %d", e);
}

/* ---- REAP ---- */

static void test_reap_against_loop(void)
{
	enum { E = 5, D = 8, F = 12, T = 2000, K = 2 };
	unsigned long long s = 31337;
	static float gate[E][F * D], up[E][F * D], down[E][D * F], x[T * D], weight[T * K];
	static int idx[T * K];
	expert_weights w[E];
	for (int e = 0; e < E; e++) {
		for (int k = 0; k < F * D; k++) {
			gate[e][k] = test_rand_f(&s);
			up[e][k] = test_rand_f(&s);
			down[e][k] = test_rand_f(&s);
		}
		/* experts 3 and 4 are switch-style, to cover both activations */
		w[e] = (expert_weights){ .gate = e < 3 ? gate[e] : NULL, .up = up[e], .down = down[e], .d = D, .f = F,
					 .act = e < 3 ? MDL_ACT_SILU_GLU : MDL_ACT_RELU };
	}
	for (int k = 0; k < T * D; k++)
		x[k] = test_rand_f(&s);
	/* experts 0 and 1 get most tokens (more than one chunk of GRP_REAP_CHUNK); 4 none */
	for (int t = 0; t < T; t++) {
		int a = (int)(test_rand_u64(&s) % 8), b = (int)(test_rand_u64(&s) % 4);
		idx[t * K] = a < 6 ? a % 2 : 2;
		idx[t * K + 1] = b == idx[t * K] ? 3 : b;
		weight[t * K] = 0.5f + 0.5f * test_rand_f(&s) * 0.5f;
		weight[t * K + 1] = 1.0f - weight[t * K];
	}
	double sal[E], want[E] = { 0 }, n[E] = { 0 };
	EXPECT(grp_reap_saliency(w, E, x, T, idx, weight, K, sal) == MS_OK);
	float y[D], work[2 * F];
	for (int t = 0; t < T; t++)
		for (int j = 0; j < K; j++) {
			int e = idx[t * K + j];
			EXPECT(expert_forward(&w[e], x + t * D, 1, 1.0f, 0, y, work) == MS_OK);
			double norm = 0;
			for (int c = 0; c < D; c++)
				norm += (double)y[c] * y[c];
			want[e] += weight[t * K + j] * sqrt(norm);
			n[e]++;
		}
	CHECK(n[0] > GRP_REAP_CHUNK && n[4] == 0, "test routing: %g tokens to expert 0, %g to 4", n[0], n[4]);
	for (int e = 0; e < E; e++) {
		double ref = n[e] ? want[e] / n[e] : 0.0;
		CHECK(fabs(sal[e] - ref) <= 1e-5 * fmax(fabs(ref), 1e-12) || (ref == 0 && sal[e] == 0),
		      "expert %d: %.9g vs per-token %.9g", e, sal[e], ref);
	}
	/* prune-reap keeps the most salient */
	int g[E];
	unsigned char d[E];
	EXPECT(grp_prune(E, 2, sal, g, d) == MS_OK);
	EXPECT(g[4] == -1 && d[4] == 0);
	/* bad routing is refused */
	idx[7] = E;
	EXPECT(grp_reap_saliency(w, E, x, T, idx, weight, K, sal) == MS_ERR_ARG);
	idx[7] = -1;
	EXPECT(grp_reap_saliency(w, E, x, T, idx, weight, K, sal) == MS_ERR_ARG);
	idx[7] = 1;
	weight[3] = NAN;
	EXPECT(grp_reap_saliency(w, E, x, T, idx, weight, K, sal) == MS_ERR_NONFINITE);
	weight[3] = 0.5f;
	w[2].d = D + 1;
	EXPECT(grp_reap_saliency(w, E, x, T, idx, weight, K, sal) == MS_ERR_ARG);
	w[2].d = D;
	/* no tokens: all zero */
	EXPECT(grp_reap_saliency(w, E, NULL, 0, NULL, NULL, K, sal) == MS_OK);
	for (int e = 0; e < E; e++)
		CHECK(sal[e] == 0.0, "expert %d", e);
}

/* ---- global counts ---- */

static void test_global_by_hand(void)
{
	/* block 0 top is expert 0, block 1 top is expert 2 */
	const double f[8] = { 0.4, 0.3, 0.2, 0.1, 0.25, 0.25, 0.3, 0.2 };
	int counts[2];
	ms_error err = { 0 };
	/* both merged, G=2: values 1 .3 .2 .1 | .25 .25 1 .2; sorted 1 1 .3 .25 .25 .2 .2 .1; N = 4: .25;
	 * above it: block 0 {1, .3}, block 1 {1} (the tie at .25 costs block 1 a group, as in MC-SMoE) */
	const unsigned char both[2] = { 1, 1 };
	EXPECT(grp_global_counts(2, 4, f, both, 2, counts, &err) == MS_OK);
	CHECK(counts[0] == 2 && counts[1] == 1, "counts %d %d", counts[0], counts[1]);
	/* only block 0 merged: block 1 all 1; N = 2 + 4 = 6; sorted 1 1 1 1 1 .3 .2 .1: .2 */
	const unsigned char first[2] = { 1, 0 };
	EXPECT(grp_global_counts(2, 4, f, first, 2, counts, &err) == MS_OK);
	CHECK(counts[0] == 2 && counts[1] == 4, "counts %d %d", counts[0], counts[1]);
	/* G == E: N = 8 - 1 = 7, the smallest value .1 */
	EXPECT(grp_global_counts(2, 4, f, both, 4, counts, &err) == MS_OK);
	CHECK(counts[0] == 3 && counts[1] == 4, "counts %d %d", counts[0], counts[1]);
	/* G == 1: N = 2, .3: only the tops survive */
	EXPECT(grp_global_counts(2, 4, f, both, 1, counts, &err) == MS_OK);
	CHECK(counts[0] == 1 && counts[1] == 1, "counts %d %d", counts[0], counts[1]);
}

static void test_global_errors(void)
{
	const double f[8] = { 0.4, 0.3, 0.2, 0.1, 0.25, 0.25, 0.3, 0.2 };
	const unsigned char both[2] = { 1, 1 }, none[2] = { 0, 0 };
	int counts[2];
	ms_error err = { 0 };
	CHECK(grp_global_counts(2, 4, f, both, 5, counts, &err) == MS_ERR_ARG && strstr(err.msg, "1..4"), "%s",
	      err.msg);
	EXPECT(grp_global_counts(2, 4, f, both, 0, counts, NULL) == MS_ERR_ARG);
	/* nothing merged: N = 8 does not exist */
	EXPECT(grp_global_counts(2, 4, f, none, 2, counts, &err) == MS_ERR_ARG);
	/* nothing merged and G == E: the threshold is 1 */
	ms_error_clear(&err);
	CHECK(grp_global_counts(2, 4, f, none, 4, counts, &err) == MS_ERR_ARG && strstr(err.msg, "threshold"), "%s",
	      err.msg);
	/* one expert per block: always 1 */
	const double one[2] = { 1.0, 1.0 };
	EXPECT(grp_global_counts(2, 1, one, both, 1, counts, &err) == MS_ERR_ARG);
	const double bad[8] = { 0.4, 0.3, NAN, 0.1, 0.25, 0.25, 0.3, 0.2 };
	EXPECT(grp_global_counts(2, 4, bad, both, 2, counts, &err) == MS_ERR_ARG);
	const double big[8] = { 0.4, 0.3, 1.5, 0.1, 0.25, 0.25, 0.3, 0.2 };
	EXPECT(grp_global_counts(2, 4, big, both, 2, counts, &err) == MS_ERR_ARG);
}

static void test_names(void)
{
	for (int m = 0; m < GRP_METHOD_COUNT; m++)
		CHECK(grp_method_parse(grp_method_name((grp_method)m)) == m, "method %d", m);
	for (int l = 0; l < GRP_LINK_COUNT; l++)
		CHECK(grp_linkage_parse(grp_linkage_name((grp_linkage)l)) == l, "linkage %d", l);
	EXPECT(grp_method_parse("prune-reap") == GRP_PRUNE_REAP);
	EXPECT(grp_method_parse("msmoe") == GRP_MSMOE);
	EXPECT(grp_method_parse("MSMOE") == -1);
	EXPECT(grp_method_parse(NULL) == -1);
	EXPECT(grp_linkage_parse("complete") == GRP_LINK_COMPLETE);
	EXPECT(grp_linkage_parse("ward") == -1);
	EXPECT(strcmp(grp_method_name((grp_method)-1), "?") == 0);
}

int main(void)
{
	RUN(test_names);
	RUN(test_golden_per_layer);
	RUN(test_golden_global);
	RUN(test_msmoe_by_hand);
	RUN(test_invalid_g);
	RUN(test_hc_line);
	RUN(test_hc_against_reference);
	RUN(test_prune);
	RUN(test_reap_against_loop);
	RUN(test_global_by_hand);
	RUN(test_global_errors);
	return test_summary();
}
