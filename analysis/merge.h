/* Merging the experts of one group into one expert, matrix by matrix (docs/design.md §3.6; M-SMoE, arXiv
 * 2310.01334, which weights each member by its usage frequency). Alignment, when wanted, has already been done by
 * analysis/align.h: this module only forms the weighted average of matrices that correspond element by element.
 *
 * The sum runs in float, the dominant member first (member 0 when dominant_member is out of range and unused) and
 * the others in order, for every element, so the same inputs give the same bits
 * whatever the thread count or the compiler's vectorisation. */
#ifndef MERGE_MERGE_H
#define MERGE_MERGE_H

#include <stdint.h>

#include "io/error.h"
#include "io/names.h"

/* How the members are averaged: X(value, name, help) rows (io/names.h). */
#define MERGE_WEIGHTING_TABLE(X) \
	X(MERGE_FREQUENCY, "frequency", "W = sum f_e W_e / (sum f_e + 1e-7), uniform when the sum is 0 (the default)") \
	X(MERGE_UNIFORM,   "uniform",   "W = the mean of the members") \
	X(MERGE_DOMINANT,  "dominant",  "W = the dominant member's matrix")

typedef enum {
	MERGE_WEIGHTING_TABLE(NAMES_X_ENUM)
	MERGE_WEIGHTING_COUNT
} merge_weighting;

/* The table's names and help lines, indexed by merge_weighting. */
extern const char *const merge_weighting_names[MERGE_WEIGHTING_COUNT];
extern const char *const merge_weighting_help[MERGE_WEIGHTING_COUNT];
const char *merge_weighting_name(merge_weighting w);  /* "?" when out of range */
int merge_weighting_parse(const char *name);          /* the merge_weighting called name, or -1 */

/* The epsilon of the frequency weighting's denominator, as in the MC-SMoE code: it keeps a group of rarely used
 * experts from dividing by a tiny sum. */
#define MERGE_FREQUENCY_EPS 1e-7

/* The weight coef [n_members] each member gets (what merge_matrices multiplies by; what a view shows as the
 * group's "weights"). frequency [n_members] is each member's usage frequency (any non-negative scale; needed only
 * for MERGE_FREQUENCY, may be NULL otherwise); dominant_member (0..n_members-1) is needed only for
 * MERGE_DOMINANT. A group of one always gets coefficient 1 (see merge_matrices). MS_ERR_ARG for n_members < 1,
 * an unknown weighting, a missing array, a dominant out of range, a negative frequency; MS_ERR_NONFINITE for a
 * NaN or infinite frequency. */
ms_status merge_coefficients(int n_members, const double *frequency, int dominant_member, merge_weighting w,
			     double *coef);

/* The two pieces every merge is made of, shared by merge_matrices and the block merge of pipeline/pipeline.c (which
 * adds aligned members one at a time so only one aligned copy is in memory):
 * merge_copy_member: the member whose matrix is the merge, copied bit for bit (a group of one, or the dominant
 * weighting), or -1 when the merge is a weighted sum;
 * merge_term: out [n] = c x [n] when first, else out += c x, element by element. Summing the members with a nonzero
 * coefficient with it, the dominant member first and the others in order, is the whole weighted sum. out and x
 * must not overlap. */
int merge_copy_member(int n_members, merge_weighting w, int dominant_member);
/* x [n] *= c: merge_term's first term when the merge is built in the first member's own storage (same bits). */
void merge_scale(float *x, float c, int64_t n);
void merge_term(float *restrict out, const float *restrict x, float c, int64_t n, int first);

/* out [numel] = the merge of mats [n_members] (each [numel], the same matrix of each member, already aligned).
 * Arguments as merge_coefficients. A group of one is copied exactly (bit for bit), not scaled by f / (f + eps):
 * an expert that merges with nobody must stay the expert it was. out may be one of the members (the merge reads
 * each element of every member before writing it); it must not partly overlap one. numel 0 does nothing. */
ms_status merge_matrices(int n_members, const float *const *mats, const double *frequency, int dominant_member,
			 merge_weighting w, int64_t numel, float *out);

#endif
