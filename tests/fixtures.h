/* Test data shared by several unit tests: random experts with their router ("a bank"), and 2-D tensors read from
 * the golden safetensors files. Functions are static inline so that a test using only some of them compiles
 * without unused-function warnings. */
#ifndef TEST_FIXTURES_H
#define TEST_FIXTURES_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "analysis/block.h"
#include "analysis/expert.h"
#include "io/safetensors.h"
#include "tests/test.h"

/* n floats uniform in [-scale, scale), malloc'd. */
static inline float *rand_floats(int64_t n, float scale, unsigned long long *seed)
{
	float *v = malloc((size_t)n * sizeof *v);
	for (int64_t i = 0; v && i < n; i++)
		v[i] = scale * test_rand_f(seed);
	return v;
}

/* E experts with their router rows, bound as expert_weights; slot is the identity. */
typedef struct {
	int E, d, f;
	mdl_act act;
	float *weights;       /* [E, per expert]: gate [f, d] (when gated), up [f, d], down [d, f] */
	float *router;        /* [E, d] */
	expert_weights *ex;   /* [E] */
	int *slot;            /* [E] */
} bank;

static inline int64_t bank_per_expert(const bank *b)
{
	return (int64_t)b->f * b->d * (b->act == MDL_ACT_SILU_GLU ? 3 : 2);
}

/* Points ex[] at the matrices in weights (call again after replacing weights). */
static inline void bank_bind(bank *b)
{
	const int64_t fd = (int64_t)b->f * b->d, per = bank_per_expert(b);
	const int gated = b->act == MDL_ACT_SILU_GLU;
	for (int e = 0; e < b->E; e++) {
		float *base = b->weights + e * per;
		b->ex[e] = (expert_weights){.gate = gated ? base : NULL, .up = base + (gated ? fd : 0),
					    .down = base + (gated ? 2 * fd : fd), .d = b->d, .f = b->f, .act = b->act};
		b->slot[e] = e;
	}
}

/* Weights uniform in +-1/sqrt(d), router rows in +-1. */
static inline void bank_init(bank *b, int E, int d, int f, mdl_act act, unsigned long long *seed)
{
	*b = (bank){.E = E, .d = d, .f = f, .act = act};
	b->weights = rand_floats(E * bank_per_expert(b), 1.0f / sqrtf((float)d), seed);
	b->router = rand_floats((int64_t)E * d, 1.0f, seed);
	b->ex = malloc((size_t)E * sizeof *b->ex);
	b->slot = malloc((size_t)E * sizeof *b->slot);
	bank_bind(b);
}

static inline void bank_free(bank *b)
{
	free(b->weights);
	free(b->router);
	free(b->ex);
	free(b->slot);
}

static inline blk_config bank_config(const bank *b, mdl_routing r)
{
	return (blk_config){.n_router = b->E, .router = b->router, .slot = b->slot, .n_slots = b->E,
			    .experts = b->ex, .routing = r, .d = b->d};
}

/* Tensor `name` of the safetensors file at path as a malloc'd float32 array of rows x cols, through the io
 * reader; NULL (with the reason on stderr) when it cannot be read or is not 2-D. */
static inline float *golden_tensor(const char *path, const char *name, int *rows, int *cols)
{
	st_file *f = NULL;
	ms_error err = {0};
	float *out = NULL;
	if (st_open(path, &f, &err) != MS_OK) {
		fprintf(stderr, "  %s\n", err.msg);
		return NULL;
	}
	const st_tensor *t = st_find(f, name);
	if (t && t->ndim == 2) {
		*rows = (int)t->shape[0];
		*cols = (int)t->shape[1];
		out = malloc((size_t)t->numel * sizeof *out);
		if (out && st_read_f32(t, out, &err) != MS_OK) {
			fprintf(stderr, "  %s\n", err.msg);
			free(out);
			out = NULL;
		}
	}
	st_close(f);
	return out;
}

#endif
