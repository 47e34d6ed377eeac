/* Compression of one (merged) expert matrix (docs/design.md §3.7; the "compress" half of MC-SMoE, arXiv
 * 2310.01334): a truncated SVD W ~ U_r S_r V_r^T, optionally plus a sparse residual holding the largest entries of
 * |W - U_r S_r V_r^T| (a training-free form of LoSparse, arXiv 2306.11222).
 *
 * The SVD is LAPACKE_dgesdd on a double copy of W: the energy threshold and the error report look at the small
 * trailing singular values, which a float SVD (backward error ~1e-7 |W|) cannot resolve. The cost is 8 bytes per
 * element for each of W's copy, U and V^T: about 3 m n doubles at the peak, freed before returning. */
#ifndef CMP_COMPRESS_H
#define CMP_COMPRESS_H

#include <stdint.h>

#include "io/error.h"
#include "io/names.h"

/* How the rank r is chosen: X(value, name, help) rows (io/names.h). */
#define CMP_RANK_MODE_TABLE(X) \
	X(CMP_RANK_NONE,   "none",   "no compression: approx = W") \
	X(CMP_RANK_FIXED,  "rank",   "r = rank (--rank R)") \
	X(CMP_RANK_ENERGY, "energy", "the smallest r keeping a fraction `energy` of sum s^2 (--rank-energy e)") \
	X(CMP_RANK_STABLE, "stable", "r = ceil(stable_k x stable rank) (--rank-stable k)")

typedef enum {
	CMP_RANK_MODE_TABLE(NAMES_X_ENUM)
	CMP_RANK_MODE_COUNT
} cmp_rank_mode;

/* The table's names and help lines, indexed by cmp_rank_mode. */
extern const char *const cmp_rank_mode_names[CMP_RANK_MODE_COUNT];
extern const char *const cmp_rank_mode_help[CMP_RANK_MODE_COUNT];
const char *cmp_rank_mode_name(cmp_rank_mode m);  /* "?" when out of range */
int cmp_rank_mode_parse(const char *name);        /* the cmp_rank_mode called name, or -1 */

typedef struct {
	cmp_rank_mode mode;
	int rank;            /* CMP_RANK_FIXED: >= 1 */
	double energy;       /* CMP_RANK_ENERGY: in (0, 1] */
	double stable_k;     /* CMP_RANK_STABLE: > 0 */
	/* CMP_RANK_STABLE: the matrix's stable rank when the caller already has it (srank_stable_rank of
	 * analysis/stable_rank.h, so that the rank follows the figure the user was shown); <= 0 means take it from
	 * the SVD's own singular values, sum s^2 / (s_max^2 + SRANK_FLOOR): the same definition, exact rather than
	 * to srank's 1e-4, at no extra cost since the SVD is computed anyway. */
	double stable_rank;
	double sparse_ratio; /* in [0, 1]: the fraction of the m n entries kept as a sparse residual; 0 for none */
} cmp_options;

/* Options meaning "no compression". */
cmp_options cmp_options_none(void);

typedef struct {
	int compressed;        /* 0 when the matrix is kept as is (mode none, or r >= min(m, n)) */
	int rank;              /* r; min(m, n) when not compressed; 0 for an all-zero matrix */
	double stable_rank;    /* measured from the SVD, sum s^2 / (s_max^2 + SRANK_FLOOR) (whatever opts.stable_rank
	                        * said); 0 when no SVD was needed (mode none, or a fixed rank >= min(m, n)) */
	double energy_kept;    /* sum of the kept s^2 / sum of all s^2 (1 when not compressed or W is zero) */
	int64_t nnz;           /* entries in the sparse residual */
	/* Parameters, counting every stored number once: before = m n; after = r (m + n) + 2 nnz (each residual
	 * entry stores an I32 index and an F32 value, both 4 bytes, so bytes = 4 x params), or m n when not
	 * compressed. A low rank may cost more than the dense matrix (r > m n / (m + n)): reported, not hidden. */
	int64_t params_before;
	int64_t params_after;
	double rel_error;      /* |W - approx|_F / |W|_F on the float approx returned; 0 when W is zero */
} cmp_result;

/* Optional outputs for the factored storage (docs/design.md §4.3, --compress-format factors), in buffers the
 * caller owns. Written only when the result is compressed. approx equals u v plus the sparse entries, up to float
 * rounding. */
typedef struct {
	float *u;            /* [m, max_rank] floats of room; receives [m, r] (row stride r): U_r S_r, S folded in */
	float *v;            /* [max_rank, n] floats of room; receives [r, n]: V_r^T */
	int max_rank;        /* room in u and v, in ranks: r > max_rank fails with MS_ERR_ARG */
	int32_t *sparse_idx; /* [max_nnz]: flat row-major indices i n + j, ascending (NULL when no residual wanted) */
	float *sparse_val;   /* [max_nnz]: W - U_r S_r V_r^T at those indices */
	int64_t max_nnz;     /* room in sparse_idx and sparse_val: cmp_sparse_count(m, n, ratio) is enough */
	/* Flat indices are I32 as docs/design.md §4.3 stores them: a residual for a matrix of more than INT32_MAX
	 * entries fails with MS_ERR_ARG. */
} cmp_factors;

/* The number of residual entries a ratio keeps: ratio x m n rounded to the nearest integer, capped at m n. */
int64_t cmp_sparse_count(int m, int n, double sparse_ratio);

/* The singular values s [min(m, n)] of w [m, n], descending (dgesdd without vectors): for a view that scrubs a
 * rank threshold without recomputing anything. MS_ERR_NONFINITE for NaN or infinite entries, MS_ERR_NUMERIC
 * when LAPACK fails, MS_ERR_NOMEM. */
ms_status cmp_singular_values(const float *w, int m, int n, double *s);

/* The rank opts choose given the singular values s [k] (descending, k = min(m, n)): k means "not compressed";
 * 0 when every s is 0 and a compressing mode is chosen. -1 when opts are invalid (see cmp_compress). */
int cmp_select_rank(const double *s, int k, const cmp_options *opts);

/* Compresses w [m, n] as opts say: approx [m, n] (out, may not overlap w) receives the dense reconstruction
 * U_r S_r V_r^T plus the sparse residual; res (may be NULL) the figures above; factors (may be NULL) the factors.
 * The residual holds exactly the cmp_sparse_count largest |W - U_r S_r V_r^T| entries, ties to the lower flat
 * index, so its entries of approx equal W's. MS_ERR_ARG (with a message in err, which may be NULL) for m or n
 * < 1, invalid options or factor room too small; MS_ERR_NONFINITE for NaN or infinite entries; MS_ERR_NUMERIC
 * when the SVD does not converge; MS_ERR_NOMEM. */
ms_status cmp_compress(const float *w, int m, int n, const cmp_options *opts, float *approx, cmp_result *res,
		       cmp_factors *factors, ms_error *err);

/* The inverse of the factored storage: w [m, n] = u [m, r] v [r, n], then w[sparse_idx[k]] += sparse_val[k] for
 * the nnz residual entries (r = 0: the residual alone). MS_ERR_ARG (with a message naming the entry) for an
 * index outside [0, m n): the factors come from a file. */
ms_status cmp_expand(const float *u, const float *v, int m, int r, int n, const int32_t *sparse_idx,
		     const float *sparse_val, int64_t nnz, float *w, ms_error *err);

#endif
