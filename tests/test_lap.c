/* lap_solve against brute force over every permutation (n <= 8), against a textbook Hungarian method written here
 * (n = 300), and on planted answers. */
#include "analysis/lap.h"

#include <float.h>
#include <stdlib.h>

#include "tests/test.h"

/* CHECK with no message trips -Wformat-zero-length under -Werror; EXPECT passes an empty one. */
/* ---- independent references ---- */

/* Best total over all n! permutations by Heap's algorithm. */
static double brute_force(int n, const double *c, int maximize)
{
	int perm[8], cnt[8] = { 0 };
	for (int i = 0; i < n; i++)
		perm[i] = i;
	double best = maximize ? -INFINITY : INFINITY;
	for (int i = 0;;) {
		double s = 0.0;
		for (int r = 0; r < n; r++)
			s += c[r * n + perm[r]];
		if (maximize ? s > best : s < best)
			best = s;
		while (i < n && cnt[i] >= i) {
			cnt[i] = 0;
			i++;
		}
		if (i >= n)
			break;
		int a = i % 2 ? cnt[i] : 0;
		int t = perm[a];
		perm[a] = perm[i];
		perm[i] = t;
		cnt[i]++;
		i = 0;
	}
	return best;
}

/* The classical O(n^3) Hungarian method with row and column potentials (Kuhn 1955, Munkres 1957; in the
 * 1-based formulation of e.g. Burkard, Dell'Amico and Martello, "Assignment Problems", ch. 4): rows enter one at a
 * time and each grows an alternating tree until it reaches a free column. Minimises; returns the optimum. */
static double hungarian(int n, const double *c, int *col_of_row)
{
	double *u = calloc((size_t)n + 1, sizeof *u), *v = calloc((size_t)n + 1, sizeof *v);
	double *minv = malloc(((size_t)n + 1) * sizeof *minv);
	int *p = calloc((size_t)n + 1, sizeof *p), *way = calloc((size_t)n + 1, sizeof *way);
	char *used = malloc((size_t)n + 1);
	for (int i = 1; i <= n; i++) {
		p[0] = i;
		int j0 = 0;
		for (int j = 0; j <= n; j++) {
			minv[j] = INFINITY;
			used[j] = 0;
		}
		do {
			used[j0] = 1;
			int i0 = p[j0], j1 = 0;
			double delta = INFINITY;
			for (int j = 1; j <= n; j++) {
				if (used[j])
					continue;
				double cur = c[(i0 - 1) * n + (j - 1)] - u[i0] - v[j];
				if (cur < minv[j]) {
					minv[j] = cur;
					way[j] = j0;
				}
				if (minv[j] < delta) {
					delta = minv[j];
					j1 = j;
				}
			}
			for (int j = 0; j <= n; j++) {
				if (used[j]) {
					u[p[j]] += delta;
					v[j] -= delta;
				} else {
					minv[j] -= delta;
				}
			}
			j0 = j1;
		} while (p[j0] != 0);
		do {
			int j1 = way[j0];
			p[j0] = p[j1];
			j0 = j1;
		} while (j0);
	}
	double total = 0.0;
	for (int j = 1; j <= n; j++) {
		col_of_row[p[j] - 1] = j - 1;
		total += c[(p[j] - 1) * n + (j - 1)];
	}
	free(u);
	free(v);
	free(minv);
	free(p);
	free(way);
	free(used);
	return total;
}

static int is_permutation(int n, const int *col)
{
	char seen[512] = { 0 };
	if (n > 512)
		return 0;
	for (int i = 0; i < n; i++) {
		if (col[i] < 0 || col[i] >= n || seen[col[i]])
			return 0;
		seen[col[i]] = 1;
	}
	return 1;
}

static double assignment_total(int n, const double *c, const int *col)
{
	double s = 0.0;
	for (int i = 0; i < n; i++)
		s += c[i * n + col[i]];
	return s;
}

/* kind 0: reals in [-1, 1); 1: integers in [-5, 5] (many ties); 2: integers in [0, 2] (mostly ties);
 * 3: large reals with a sign mix */
static void fill(int n, double *c, int kind, unsigned long long *s)
{
	for (int k = 0; k < n * n; k++) {
		double r = test_rand_f(s);
		switch (kind) {
		case 0: c[k] = r; break;
		case 1: c[k] = (double)(int)(test_rand_u64(s) % 11) - 5.0; break;
		case 2: c[k] = (double)(int)(test_rand_u64(s) % 3); break;
		default: c[k] = r * 1e6; break;
		}
	}
}

/* ---- tests ---- */

static void test_brute_force_small(void)
{
	unsigned long long s = 12345;
	double c[64];
	int col[8];
	int mismatches = 0, runs = 0;
	for (int n = 1; n <= 8; n++) {
		int reps = n <= 6 ? 200 : 25;
		for (int rep = 0; rep < reps; rep++)
			for (int kind = 0; kind < 4; kind++)
				for (int maximize = 0; maximize < 2; maximize++) {
					fill(n, c, kind, &s);
					double total = NAN;
					ms_status st = lap_solve(n, c, maximize, col, &total);
					double best = brute_force(n, c, maximize);
					runs++;
					int ok = st == MS_OK && is_permutation(n, col) &&
						 fabs(total - best) <= 1e-9 * fmax(1.0, fabs(best)) &&
						 fabs(assignment_total(n, c, col) - total) <= 1e-9 * fmax(1.0, fabs(best));
					if (!ok && mismatches++ < 5)
						CHECK(ok, "n=%d kind=%d max=%d: total %.12g, brute force %.12g", n, kind,
						      maximize, total, best);
				}
	}
	CHECK(mismatches == 0, "%d of %d small problems wrong", mismatches, runs);
}

/* The float entry point gives the assignment and total that lap_solve gives on the same matrix widened to
 * double, ties included (kinds 1 and 2), at sizes up to 300. */
static void test_float_matches_double(void)
{
	unsigned long long s = 777;
	enum { NMAX = 300 };
	double *c = malloc(sizeof(double) * NMAX * NMAX);
	float *cf = malloc(sizeof(float) * NMAX * NMAX);
	int *a = malloc(sizeof(int) * NMAX), *b = malloc(sizeof(int) * NMAX);
	CHECK(c && cf && a && b);
	const int sizes[] = {1, 2, 7, 33, 120, NMAX};
	int differ = 0;
	for (size_t k = 0; c && cf && a && b && k < sizeof sizes / sizeof sizes[0]; k++)
		for (int kind = 0; kind < 4; kind++) {
			const int n = sizes[k];
			fill(n, c, kind, &s);
			for (int i = 0; i < n * n; i++) {
				cf[i] = (float)c[i];
				c[i] = cf[i];
			}
			double ta = NAN, tb = NAN;
			CHECK(lap_solve(n, c, 1, a, &ta) == MS_OK && lap_solve_f32(n, cf, 1, b, &tb) == MS_OK);
			differ += memcmp(a, b, (size_t)n * sizeof *a) != 0 || ta != tb;
		}
	CHECK(differ == 0, "%d problems solved differently from float and double", differ);
	float bad[4] = {0.0f, 1.0f, NAN, 2.0f};
	int col[2];
	CHECK(lap_solve_f32(2, bad, 0, col, NULL) == MS_ERR_ARG, "NaN cost refused");
	free(c);
	free(cf);
	free(a);
	free(b);
}

static void test_trivial_sizes(void)
{
	int col[1] = { 7 };
	double total = 5.0;
	EXPECT(lap_solve(0, NULL, 0, NULL, &total) == MS_OK);
	EXPECT(total == 0.0);
	double one = -3.5;
	EXPECT(lap_solve(1, &one, 0, col, &total) == MS_OK);
	EXPECT(col[0] == 0 && total == -3.5);
	EXPECT(lap_solve(1, &one, 1, col, NULL) == MS_OK);
	EXPECT(col[0] == 0);
}

static void test_rejects_bad_input(void)
{
	double c[4] = { 1, 2, 3, 4 };
	int col[2];
	EXPECT(lap_solve(-1, c, 0, col, NULL) == MS_ERR_ARG);
	EXPECT(lap_solve(2, NULL, 0, col, NULL) == MS_ERR_ARG);
	EXPECT(lap_solve(2, c, 0, NULL, NULL) == MS_ERR_ARG);
	c[2] = NAN;
	EXPECT(lap_solve(2, c, 0, col, NULL) == MS_ERR_ARG);
	c[2] = INFINITY;
	EXPECT(lap_solve(2, c, 1, col, NULL) == MS_ERR_ARG);
	c[2] = -INFINITY;
	EXPECT(lap_solve(2, c, 0, col, NULL) == MS_ERR_ARG);
	c[2] = 1e200;
	EXPECT(lap_solve(2, c, 0, col, NULL) == MS_ERR_ARG);
	c[2] = -DBL_MAX;
	EXPECT(lap_solve(2, c, 0, col, NULL) == MS_ERR_ARG);
}

/* Ties: the same input must give the same answer, and an all-equal matrix a valid permutation. */
static void test_ties_deterministic(void)
{
	enum { N = 40 };
	static double c[N * N];
	int a[N], b[N];
	for (int k = 0; k < N * N; k++)
		c[k] = 1.0;
	double total = 0;
	EXPECT(lap_solve(N, c, 0, a, &total) == MS_OK);
	EXPECT(is_permutation(N, a) && total == N);
	unsigned long long s = 99;
	fill(N, c, 2, &s);
	EXPECT(lap_solve(N, c, 1, a, NULL) == MS_OK);
	EXPECT(lap_solve(N, c, 1, b, NULL) == MS_OK);
	EXPECT(memcmp(a, b, sizeof a) == 0);
}

static void test_against_hungarian_300(void)
{
	enum { N = 300 };
	double *c = malloc(sizeof(double) * N * N), *neg = malloc(sizeof(double) * N * N);
	int col[N], ref[N];
	unsigned long long s = 777;
	for (int kind = 0; kind < 4; kind++) {
		fill(N, c, kind, &s);
		double total, best = hungarian(N, c, ref);
		EXPECT(lap_solve(N, c, 0, col, &total) == MS_OK);
		EXPECT(is_permutation(N, col));
		CHECK(fabs(total - best) <= 1e-9 * fmax(1.0, fabs(best)), "kind %d min: %.15g vs %.15g", kind, total,
		      best);
		CHECK_CLOSE(assignment_total(N, c, col), total, 1e-12);
		/* maximising c is minimising -c */
		for (int k = 0; k < N * N; k++)
			neg[k] = -c[k];
		best = -hungarian(N, neg, ref);
		EXPECT(lap_solve(N, c, 1, col, &total) == MS_OK);
		EXPECT(is_permutation(N, col));
		CHECK(fabs(total - best) <= 1e-9 * fmax(1.0, fabs(best)), "kind %d max: %.15g vs %.15g", kind, total,
		      best);
	}
	free(c);
	free(neg);
}

/* A permutation matrix plus small noise: the maximum is the planted permutation (1 beats any noise sum), and so
 * is the minimum of its negation. */
static void test_planted_permutation(void)
{
	enum { N = 200 };
	double *c = malloc(sizeof(double) * N * N);
	int planted[N], col[N];
	unsigned long long s = 4242;
	for (int i = 0; i < N; i++)
		planted[i] = i;
	for (int i = N - 1; i > 0; i--) {
		int j = (int)(test_rand_u64(&s) % (unsigned long long)(i + 1));
		int t = planted[i];
		planted[i] = planted[j];
		planted[j] = t;
	}
	for (int k = 0; k < N * N; k++)
		c[k] = 1e-3 * test_rand_f(&s);
	for (int i = 0; i < N; i++)
		c[i * N + planted[i]] += 1.0;
	EXPECT(lap_solve(N, c, 1, col, NULL) == MS_OK);
	CHECK(memcmp(col, planted, sizeof col) == 0, "planted permutation not recovered (maximise)");
	for (int k = 0; k < N * N; k++)
		c[k] = -c[k];
	EXPECT(lap_solve(N, c, 0, col, NULL) == MS_OK);
	CHECK(memcmp(col, planted, sizeof col) == 0, "planted permutation not recovered (minimise)");
	free(c);
}

/* A structured worst case for greedy starts: c[i, j] = i * j. The minimum pairs rows with columns in reverse
 * order (rearrangement inequality), the maximum in the same order. */
static void test_rearrangement(void)
{
	enum { N = 60 };
	static double c[N * N];
	int col[N];
	for (int i = 0; i < N; i++)
		for (int j = 0; j < N; j++)
			c[i * N + j] = (double)i * j;
	double want_min = 0, want_max = 0, total;
	for (int i = 0; i < N; i++) {
		want_min += (double)i * (N - 1 - i);
		want_max += (double)i * i;
	}
	EXPECT(lap_solve(N, c, 0, col, &total) == MS_OK);
	CHECK(total == want_min, "%.17g vs %.17g", total, want_min);
	EXPECT(lap_solve(N, c, 1, col, &total) == MS_OK);
	CHECK(total == want_max, "%.17g vs %.17g", total, want_max);
	for (int i = 1; i < N; i++)
		CHECK(col[i] == i, "row %d -> %d", i, col[i]);
}

int main(void)
{
	RUN(test_trivial_sizes);
	RUN(test_rejects_bad_input);
	RUN(test_brute_force_small);
	RUN(test_ties_deterministic);
	RUN(test_against_hungarian_300);
	RUN(test_planted_permutation);
	RUN(test_rearrangement);
	RUN(test_float_matches_double);
	return test_summary();
}
