/* Expert similarity (docs/design.md §3.2): four bases, each an E x E matrix in [0, 1].
 *
 * Every basis compares one vector per expert by cosine, mapped to [0, 1] as (cos + 1) / 2 with
 * cos = a.b / max(|a| |b|, SIM_NORM_FLOOR) (so a zero vector is 1/2 from everything), the diagonal exactly 1:
 *   router-logits   column e of Z = X R^T [T, E]   (the M-SMoE default)
 *   router-weight   row e of the router R [E, d], with its logit bias b_e appended when the router has one
 *                   ([R | b] acting on [x; 1]: the bias is a router column whose input is always 1)
 *   weight          expert e's gate | up | down, each flattened row-major, concatenated (3 f d numbers), then
 *                   its gate, up and down biases when it has them (gpt-oss)
 *   expert-output   o_e [d], the mean over all T tokens of expert e's output on X (HC-SMoE), whose clustering
 *                   distance is the Euclidean |o_i - o_j| rather than 1 - similarity.
 *
 * All Gram matrices come from SYRK on blocks of the vectors, each block scaled to unit length before the float
 * product and rescaled while accumulating in double: no loop over pairs of experts touches d or T, no block can
 * overflow whatever the magnitudes, and the scratch is bounded by SIM_BLOCK_FLOATS however long the vectors. */
#ifndef SIM_SIMILARITY_H
#define SIM_SIMILARITY_H

#include <stdint.h>

#include "analysis/expert.h"
#include "io/error.h"

#define SIM_NORM_FLOOR 1e-7

/* Scratch floats per Gram block (vectors x block length): 1 MiB, which stays in cache between the scaled copy
 * and the SYRK. */
#define SIM_BLOCK_FLOATS (1 << 18)

/* Tokens per chunk in sim_expert_mean_outputs when the caller passes chunk <= 0. */
#define SIM_TOKEN_CHUNK 512

/* The similarity bases, one row each: X(value, name, needs calibration tokens, help). A base that needs tokens
 * cannot be computed from the checkpoint alone (the application without a calibration set, analyze without
 * --calib); this column is the one place that says which. */
#define SIM_BASE_TABLE(X) \
	X(SIM_ROUTER_LOGITS, "router-logits", 1, "columns of the router logits X R^T on calibration tokens (M-SMoE, default)") \
	X(SIM_ROUTER_WEIGHT, "router-weight", 0, "rows of the router weight R") \
	X(SIM_WEIGHT,        "weight",        0, "each expert's gate, up and down weights, concatenated") \
	X(SIM_EXPERT_OUTPUT, "expert-output", 1, "each expert's mean output on the calibration tokens (HC-SMoE)")

#define SIM_X_ENUM(value, name, calib, help) value,
typedef enum {
	SIM_BASE_TABLE(SIM_X_ENUM)
	SIM_BASE_COUNT
} sim_base;
#undef SIM_X_ENUM

/* The names and help lines of the table, indexed by sim_base. */
extern const char *const sim_base_names[SIM_BASE_COUNT];
extern const char *const sim_base_help[SIM_BASE_COUNT];
const char *sim_base_name(sim_base b);     /* "?" when out of range */
int sim_base_parse(const char *name);      /* the sim_base called name, or -1 */
/* Nonzero when the base needs calibration tokens (the table's column); nonzero for an out-of-range b too. */
int sim_base_needs_calibration(sim_base b);
/* The bases computable from the weights alone, as a mask of 1u << sim_base. */
unsigned sim_bases_without_calibration(void);
/* Nonzero when the base's clustering distance is Euclidean on the compared vectors (expert-output), zero when it
 * is 1 - similarity. */
int sim_base_euclidean(sim_base b);

/* out [n, n] = mapped cosine similarity of the rows of a [n, m]. MS_ERR_ARG on bad sizes, MS_ERR_NONFINITE when a
 * holds NaN or infinity, MS_ERR_NOMEM. */
ms_status sim_cosine_rows(const float *a, int n, int64_t m, double *out);

/* out [E, E] = mapped cosine similarity of the columns of z [T, E] (router-logits when z = X R^T). T may be 0
 * (every column is then a zero vector). */
ms_status sim_cosine_columns(const float *z, int64_t T, int E, double *out);

/* out [E, E] = mapped cosine similarity of the experts' concatenated, flattened gate | up | down, then the biases
 * they have; experts [E] must agree on d, f, activation and which biases they have (a family without gate
 * concatenates up | down). Pass aligned copies to compare
 * experts after permutation alignment. Nothing is concatenated: the Gram matrix is the sum of the gate, up and
 * down Gram matrices, and each matrix streams through a SIM_BLOCK_FLOATS buffer once (one pass over the
 * weights, E^2 3 f d SYRK flops). */
ms_status sim_weight(const expert_weights *experts, int E, double *out);

/* out [E, d] = o_e, the mean over the T tokens of x [T, d] of expert e's output. Tokens go through in chunks of
 * `chunk` (SIM_TOKEN_CHUNK when <= 0), which bounds the scratch to about 2 chunk f floats. Because down is linear,
 * o_e = down_e (mean of the hidden activations), so only the gate and up GEMMs run per token. MS_ERR_CALIB_EMPTY
 * when T is 0. */
ms_status sim_expert_mean_outputs(const expert_weights *experts, int E, const float *x, int64_t T, int64_t chunk,
				  float *out);

/* out [n, n] = Euclidean distance between the rows of o [n, m] (HC-SMoE's expert-output distance); the diagonal is
 * exactly 0. Computed from a Gram matrix of the rows after subtracting their mean, which changes no distance but
 * keeps the cancellation small when the rows share a large common part. */
ms_status sim_euclidean_rows(const float *o, int n, int64_t m, double *out);

/* What a base may need; each base reads only its own fields. */
typedef struct {
	int E;                          /* experts */
	int d;                          /* hidden size */
	int64_t T;                      /* calibration tokens */
	const float *z;                 /* [T, E] router logits; when NULL, router-logits computes X R^T itself */
	const float *x;                 /* [T, d] calibration inputs (router-logits without z, expert-output) */
	const float *router;            /* [E, d] (router-weight; router-logits without z) */
	const float *router_bias;       /* [E] the router's logit bias (gpt-oss), or NULL: one more column of the
					 * router for router-weight; added to X R^T by router-logits without z */
	const expert_weights *experts;  /* [E] (weight, expert-output) */
	int64_t chunk;                  /* expert-output tokens per chunk; <= 0 for SIM_TOKEN_CHUNK */
} sim_inputs;

/* The base's similarity [E, E] into similarity (may be NULL) and its clustering distance [E, E] into distance
 * (may be NULL): 1 - similarity, or for expert-output the Euclidean distance of the mean outputs (computed once
 * for both). MS_ERR_ARG when a needed input is missing. */
ms_status sim_compute(sim_base base, const sim_inputs *in, double *similarity, double *distance);

#endif
