/* Permutation alignment of experts before merging (docs/design.md §3.4; weight matching of Git Re-Basin, Ainsworth et
 * al., arXiv 2209.04836). The f intermediate neurons of an expert can be reordered without changing its function, so
 * before averaging two experts we reorder the neurons of one to best match the other: the maximum-weight assignment
 * on C = G_r G_t^T + U_r U_t^T + D_r^T D_t, solved exactly by analysis/lap. Experts with gate and up biases (gpt-oss)
 * add bg_r bg_t^T + bu_r bu_t^T: a bias is its matrix's column for a constant input 1. */
#ifndef ALIGN_ALIGN_H
#define ALIGN_ALIGN_H

#include "analysis/expert.h"
#include "io/error.h"
#include "io/names.h"

/* Which expert each member of a group is aligned to: X(value, name, help) rows (io/names.h). */
#define ALIGN_REF_TABLE(X) \
	X(ALIGN_NONE,     "none",     "no alignment") \
	X(ALIGN_DOMINANT, "dominant", "every member to its group's dominant expert (the default)") \
	X(ALIGN_FIRST,    "first",    "every expert to expert 0, as the MC-SMoE Switch scripts do")

typedef enum {
	ALIGN_REF_TABLE(NAMES_X_ENUM)
	ALIGN_COUNT
} align_ref;

/* The table's names and help lines, indexed by align_ref. */
extern const char *const align_ref_names[ALIGN_COUNT];
extern const char *const align_ref_help[ALIGN_COUNT];

/* The name of r, or "?" when out of range. */
const char *align_ref_name(align_ref r);

/* The align_ref called `name`, or -1 when there is none. */
int align_ref_parse(const char *name);

/* Rows of C computed per SGEMM call: bounds the float scratch to this many rows of f. */
#define ALIGN_ROW_CHUNK 256

/* The permutation that aligns expert t to reference ref: perm [f], neuron i of the aligned expert is neuron
 * perm[i] of t; it maximises sum_i C[i, perm[i]] (C above, without the gate term when the family has no gate, a
 * bias term only when both experts have that bias).
 * ref and t must agree on d, f and activation. Needs f * f doubles of work (allocated and freed here).
 * MS_ERR_ARG on mismatched or missing matrices, MS_ERR_NONFINITE when C holds NaN or infinity, MS_ERR_NOMEM. */
ms_status align_permutation(const expert_weights *ref, const expert_weights *t, int *perm);

/* Applies perm (as from align_permutation) in place: row i of gate [f, d] and up [f, d] becomes old row perm[i],
 * column i of down [d, f] becomes old column perm[i]. gate may be NULL (no gate). MS_ERR_ARG when perm is not a
 * permutation of 0..f-1. */
ms_status align_apply(const int *perm, float *gate, float *up, float *down, int d, int f);

/* The same, out of place: src's matrices permuted into the caller's buffers gate [f, d] (ignored when src has
 * no gate), up [f, d], down [d, f], which must not overlap src's. */
ms_status align_apply_into(const int *perm, const expert_weights *src, float *gate, float *up, float *down);

/* Permutes the intermediate-axis biases gate_bias [f] and up_bias [f] (either may be NULL) in place as align_apply
 * permutes the rows of gate and up: afterwards bias[i] is the old bias[perm[i]]. A down bias lies on the d axis and
 * is not permuted. MS_ERR_ARG when perm is not a permutation. */
ms_status align_apply_biases(const int *perm, int f, float *gate_bias, float *up_bias);

#endif
