/* Router rows for the compact merged layout (docs/design.md §4.3): when the E experts of a block become G merged
 * experts, the router's E rows [E, d] must become G rows [G, d].
 *
 * lse-fit (the default) asks the new row of group g to reproduce, on the calibration tokens, the log of the summed
 * exponentiated logits of its members: x . r_g ~ t_g(x) = logsumexp_{e in S_g} (x . r_e). Then exp(x . r_g) is
 * the sum of the members' exp-logits, so under softmax the merged expert takes the probability mass its members
 * had together. All groups share one ridge least squares system,
 *     (X^T X + lambda I) [r_0 .. r_{G-1}] = X^T [t_0 .. t_{G-1}],
 * solved in double with one Cholesky factorisation (LAPACKE_dposv with G right-hand sides).
 * mean takes the members' frequency-weighted mean row (merge_matrices with MERGE_FREQUENCY); dominant keeps the
 * dominant member's row. */
#ifndef RFIT_ROUTER_FIT_H
#define RFIT_ROUTER_FIT_H

#include <stdint.h>

#include "io/error.h"
#include "io/names.h"

/* How a merged expert's router row is made: X(value, name, help) rows (io/names.h). */
#define RFIT_METHOD_TABLE(X) \
	X(RFIT_LSE_FIT,  "lse-fit",  "least squares fit of the members' logsumexp (the default; needs calibration)") \
	X(RFIT_MEAN,     "mean",     "frequency-weighted mean of the members' rows") \
	X(RFIT_DOMINANT, "dominant", "the dominant member's row") \
	X(RFIT_AUTO,     "auto",     "per block, the row method whose merged output is closest to the original's on " \
				     "the fit tokens (the default; mean without calibration)")

typedef enum {
	RFIT_METHOD_TABLE(NAMES_X_ENUM)
	RFIT_METHOD_COUNT
} rfit_method;

/* The methods that make rows are the ones before RFIT_AUTO (which chooses among them). */
#define RFIT_ROW_METHODS RFIT_AUTO

/* The table's names and help lines, indexed by rfit_method. */
extern const char *const rfit_method_names[RFIT_METHOD_COUNT];
extern const char *const rfit_method_help[RFIT_METHOD_COUNT];
const char *rfit_method_name(rfit_method m);  /* "?" when out of range */
int rfit_method_parse(const char *name);      /* the rfit_method called name, or -1 */

/* Pass as lambda to get the default ridge, 1e-3 x trace(X^T X) / d: scaled to the data so that the same value
 * works for any hidden-state magnitude, small enough to leave a well-conditioned fit nearly untouched. */
#define RFIT_LAMBDA_DEFAULT (-1.0)

/* Calibration tokens per chunk: the double copies of X and of the logits are at most this many rows, so the work
 * memory is d x d doubles (the normal matrix) plus a chunk. */
#define RFIT_CHUNK 512

/* out [G, d] = one router row per group.
 *   x [T, d]            calibration inputs of the block (may be NULL with T == 0 for mean and dominant)
 *   router [E, d]       the original router rows
 *   group [E]           each expert's group 0..G-1, or -1 for a dropped expert (ignored)
 *   dominant [E]        1 for each group's dominant member (needed by dominant, may be NULL otherwise)
 *   frequency [E]       usage frequencies (needed by mean, may be NULL otherwise)
 *   lambda              ridge for lse-fit (>= 0, or RFIT_LAMBDA_DEFAULT); ignored by the other methods
 *   residual [G]        (may be NULL; needs x) rfit_residual of the rows written
 * method is one of the RFIT_ROW_METHODS (RFIT_AUTO is the pipeline's choice among them, not a row method).
 * Every group needs at least one member; dominant needs exactly one dominant member per group. When X is all
 * zero, lse-fit has nothing to fit and the default lambda (0) is replaced by 1, giving zero rows.
 * MS_ERR_ARG (with a message in err, which may be NULL) for bad sizes, groups or arrays; MS_ERR_NONFINITE for a
 * NaN or infinite input; MS_ERR_NUMERIC when X^T X + lambda I is not positive definite (lambda 0 with
 * too few or dependent tokens); MS_ERR_NOMEM. */
ms_status rfit_rows(rfit_method method, const float *x, int64_t T, int d, const float *router, int E,
		    const int *group, const unsigned char *dominant, const double *frequency, int G, double lambda,
		    float *out, double *residual, ms_error *err);

/* residual [G]: for each group g, |X r_g - t_g|_2 / |t_g|_2 over the T tokens of x [T, d] (t_g as above, from
 * router [E, d] and group [E]), for rows [G, d] made by any method, so that methods can be compared; 0 when
 * |t_g| is 0 and the fit is exact, and the absolute error when |t_g| is 0 otherwise. Needs T >= 1. */
ms_status rfit_residual(const float *x, int64_t T, int d, const float *router, int E, const int *group, int G,
			const float *rows, double *residual, ms_error *err);

#endif
