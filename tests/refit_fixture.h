/* What the refit tests share: an expert's hidden activations computed apart from analysis/expert.c, and a
 * random fill. */
#ifndef TESTS_REFIT_FIXTURE_H
#define TESTS_REFIT_FIXTURE_H

#include <math.h>
#include <stddef.h>

#include "analysis/expert.h"
#include "tests/test.h"

static inline double ref_silu(double v)
{
	return v / (1.0 + exp(-v));
}

/* h [f] = silu(gate x) * (up x), in double. */
static inline void ref_hidden(const expert_weights *w, const float *x, double *h)
{
	for (int i = 0; i < w->f; i++) {
		double g = 0.0, u = 0.0;
		for (int c = 0; c < w->d; c++) {
			g += (double)w->gate[i * w->d + c] * x[c];
			u += (double)w->up[i * w->d + c] * x[c];
		}
		h[i] = ref_silu(g) * u;
	}
}

/* v [n] = scale times uniform numbers in [-1, 1) from the tests' generator. */
static inline void ref_fill(float *v, size_t n, float scale, unsigned long long *s)
{
	for (size_t i = 0; i < n; i++)
		v[i] = scale * test_rand_f(s);
}

#endif
