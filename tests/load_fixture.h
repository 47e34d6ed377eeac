/* A block as pipe_load_block loads it (its tasks split an expert's matrices among them, and the interleaved layout
 * decodes gate and up from one slab in one task) against each matrix and bias read on its own with
 * mdl_load_expert / mdl_load_expert_bias, which decode the slab once per matrix: every float the same, with 1 and
 * with 3 threads. */
#ifndef TEST_LOAD_FIXTURE_H
#define TEST_LOAD_FIXTURE_H

#include <stdlib.h>
#include <string.h>

#include "analysis/par.h"
#include "io/model.h"
#include "pipeline/pipeline.h"
#include "tests/test.h"

static inline void check_block_load(const mdl_model *m, int b)
{
	const int64_t d = m->hidden, f = m->inter;
	float *one = malloc((size_t)(f * d + 2 * f + d) * sizeof *one);   /* a matrix, or the three biases */
	ms_error err = {0};
	const int was = par_threads();
	for (int threads = 1; one && threads <= 3; threads += 2) {
		par_set_threads(threads);
		pipe_block blk;
		CHECK(pipe_load_block(m, NULL, b, &blk, &err) == MS_OK, "%s", err.msg);
		if (err.code)
			break;
		int64_t bad = 0;
		for (int e = 0; e < m->n_experts; e++) {
			const expert_weights *w = &blk.experts[e];
			const float *mat[MDL_NMAT] = {w->gate, w->up, w->down};
			for (int k = 0; k < MDL_NMAT; k++) {
				if (!mat[k])
					continue;
				float *only[MDL_NMAT] = {NULL};
				only[k] = one;
				CHECK(mdl_load_expert(m, b, e, only[MDL_GATE], only[MDL_UP], only[MDL_DOWN], &err) == MS_OK, "%s",
				      err.msg);
				bad += memcmp(mat[k], one, (size_t)(f * d) * sizeof *one) != 0;
			}
			if (w->gate_bias) {
				CHECK(mdl_load_expert_bias(m, b, e, one, one + f, one + 2 * f, &err) == MS_OK, "%s", err.msg);
				bad += memcmp(w->gate_bias, one, (size_t)f * sizeof *one) != 0;
				bad += memcmp(w->up_bias, one + f, (size_t)f * sizeof *one) != 0;
				bad += memcmp(w->down_bias, one + 2 * f, (size_t)d * sizeof *one) != 0;
			}
		}
		CHECK(bad == 0, "%lld matrices or biases of block %d differ from their own reads with %d threads",
		      (long long)bad, b, threads);
		pipe_free_block(&blk);
	}
	par_set_threads(was);
	free(one);
}

#endif
