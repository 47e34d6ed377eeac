/* One expert's forward pass on a batch of tokens, as two or three GEMMs (OpenBLAS). */
#ifndef EXPERT_EXPERT_H
#define EXPERT_EXPERT_H

#include <stdint.h>

#include "io/error.h"
#include "io/model.h"

typedef struct {
	const float *gate;  /* [f, d], NULL for MDL_ACT_RELU */
	const float *up;    /* [f, d] */
	const float *down;  /* [d, f] */
	const float *gate_bias; /* [f] or NULL (no bias): added to gate x */
	const float *up_bias;   /* [f] or NULL: added to up x */
	const float *down_bias; /* [d] or NULL: added to the output (before alpha scales it) */
	int d, f;
	mdl_act act;
} expert_weights;

/* Floats of work space expert_forward needs for T tokens. */
int64_t expert_work_floats(const expert_weights *w, int64_t T);

/* y [T, d] = the expert's output on x [T, d]. work: expert_work_floats(w, T) floats owned by the caller.
 * When accumulate is nonzero, y += alpha * output; else y = alpha * output. */
ms_status expert_forward(const expert_weights *w, const float *x, int64_t T, float alpha, int accumulate,
			 float *y, float *work);

/* The activation, element-wise over n values: h [n] holds the up projections (biases included) and receives
 * act(g, h): silu(g) h, relu(h) (g unused, may be NULL) or the clamped SwiGLU of io/model.h, with g [n] the gate
 * projections. The one implementation expert_hidden and the MEO analysis share. */
void expert_activate(mdl_act act, const float *g, float *h, int64_t n);

/* Hidden activations h [T, f] = act(gate x) * (up x) (or relu(up x), or the clamped SwiGLU of io/model.h), biases
 * included, the input of down. */
ms_status expert_hidden(const expert_weights *w, const float *x, int64_t T, float *h, float *work);

#endif
