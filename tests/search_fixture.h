/* A model whose best per-block allocation is known by construction, for the search tests: the bundled
 * mixtral-tiny (4 MoE blocks of 8 experts top-2) with every expert and router row replaced by independent
 * Gaussian weights of the sample's own scale, so that no block has redundant experts; then, in the "twin" blocks,
 * expert 1 becomes a copy of expert 0 plus noise of 1e-3 of that scale, and router rows 0 and 1 both become 0.3
 * times row 0: the twins always win or lose together, are the two least used experts, and their router-logits
 * similarity is 1, so msmoe at 7 groups merges exactly them. In the aliased layout (router unchanged, both rows
 * pointing at the merge) that merge changes almost nothing, while any other merge replaces an independent expert
 * by another. (The compact layout would not do: one router row for the pair frees a top-2 slot for a third
 * expert, which changes the output even for exact copies.) So with a budget of 2 experts less than the model
 * has, the best allocation drops one group in each twin block and none elsewhere. Also random token sequences. */
#ifndef TEST_SEARCH_FIXTURE_H
#define TEST_SEARCH_FIXTURE_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/safetensors.h"
#include "io/tokens.h"
#include "samples/samples.h"
#include "tests/test.h"

/* Blocks 0 and 2 have the twins. */
static inline int planted_is_twin(int layer)
{
	return layer == 0 || layer == 2;
}

static inline double planted_gauss(unsigned long long *s)
{
	double u = 0.0;
	for (int i = 0; i < 12; i++)   /* Irwin-Hall: close enough to normal, and reproducible */
		u += 0.5 * (test_rand_f(s) + 1.0);
	return u - 6.0;
}

static inline double planted_std(const float *v, uint64_t n)
{
	double s = 0.0;
	for (uint64_t i = 0; i < n; i++)
		s += (double)v[i] * v[i];
	return sqrt(s / (double)(n ? n : 1));
}

/* Rewrites tensor `name` (values v [n], rows of width `width`) of the planted model; prev_expert0 keeps each
 * twin block's expert 0 matrices for its copy (indexed by matrix 1..3). */
static inline void planted_tensor(const char *name, float *v, uint64_t n, int64_t width, float **expert0)
{
	int L, e, w, end = 0;
	unsigned long long seed = 0x5eed;
	for (const char *c = name; *c; c++)
		seed = seed * 131 + (unsigned char)*c;
	if (sscanf(name, "model.layers.%d.block_sparse_moe.experts.%d.w%d.weight%n", &L, &e, &w, &end) == 3 &&
	    name[end] == '\0' && w >= 1 && w <= 3) {
		const double sd = planted_std(v, n);
		if (planted_is_twin(L) && e == 1 && expert0[w - 1]) {
			for (uint64_t i = 0; i < n; i++)
				v[i] = expert0[w - 1][i] + (float)(1e-3 * sd * planted_gauss(&seed));
			return;
		}
		for (uint64_t i = 0; i < n; i++)
			v[i] = (float)(sd * planted_gauss(&seed));
		if (planted_is_twin(L) && e == 0) {
			free(expert0[w - 1]);
			expert0[w - 1] = malloc(n * sizeof(float));
			if (expert0[w - 1])
				memcpy(expert0[w - 1], v, n * sizeof(float));
		}
		return;
	}
	if (sscanf(name, "model.layers.%d.block_sparse_moe.gate.weight%n", &L, &end) == 1 && name[end] == '\0') {
		const double sd = planted_std(v, n);
		for (uint64_t i = 0; i < n; i++)
			v[i] = (float)(sd * planted_gauss(&seed));
		if (planted_is_twin(L))
			for (int64_t j = 0; j < width; j++) {
				v[j] *= 0.3f;
				v[width + j] = v[j];
			}
	}
}

/* Writes the planted model into dir/planted (the sample first into dir/mixtral-tiny); 0 on success. */
static inline int planted_write(const char *dir, char *path, size_t len)
{
	ms_error err = {0};
	char src[512], cmd[2048];
	if (samples_write(dir, "mixtral-tiny", &err) != MS_OK) {
		fprintf(stderr, "samples: %s\n", err.msg);
		return -1;
	}
	snprintf(path, len, "%s/planted", dir);
	snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp '%s/mixtral-tiny/config.json' '%s/'", path, dir, path);
	if (system(cmd) != 0)
		return -1;
	snprintf(src, sizeof src, "%s/mixtral-tiny/model.safetensors", dir);
	st_file *f = NULL;
	st_writer *w = NULL;
	ms_status st = st_open(src, &f, &err);
	if (st == MS_OK)
		st = st_writer_create(path, "model", 1ULL << 40, &w, &err);
	size_t n_t = f ? st_count(f) : 0;
	for (size_t i = 0; st == MS_OK && i < n_t; i++) {
		const st_tensor *t = st_get(f, i);
		st = st_writer_declare(w, t->name, ST_F32, t->ndim, t->shape, &err);
	}
	float *expert0[3] = {NULL, NULL, NULL};
	for (size_t i = 0; st == MS_OK && i < n_t; i++) {
		const st_tensor *t = st_get(f, i);
		float *v = malloc(t->numel * sizeof *v);
		st = v ? st_read_f32(t, v, &err) : MS_ERR_NOMEM;
		if (st == MS_OK) {
			planted_tensor(t->name, v, t->numel, t->ndim == 2 ? t->shape[1] : 1, expert0);
			st = st_writer_write_f32(w, v, t->numel, &err);
		}
		free(v);
	}
	for (int k = 0; k < 3; k++)
		free(expert0[k]);
	if (st == MS_OK)
		st = st_writer_finish(w, &err);
	st_writer_free(w);
	st_close(f);
	if (st != MS_OK)
		fprintf(stderr, "planted: %s\n", err.msg);
	return st == MS_OK ? 0 : -1;
}

/* n_seq random sequences of len tokens below vocab (ids [n_seq * len], starts [n_seq + 1] owned by the caller). */
static inline tok_set planted_tokens(int n_seq, int len, int vocab, int32_t *ids, int64_t *starts)
{
	unsigned long long seed = 4242;
	for (int i = 0; i < n_seq * len; i++)
		ids[i] = (int32_t)(test_rand_u64(&seed) % (unsigned)vocab);
	for (int i = 0; i <= n_seq; i++)
		starts[i] = (int64_t)i * len;
	tok_set t = {.T = (int64_t)n_seq * len, .ids = ids, .n_seq = n_seq, .seq_start = starts};
	return t;
}

#endif
