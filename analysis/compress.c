#include "analysis/compress.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/finite.h"
#include "analysis/stable_rank.h"

const char *const cmp_rank_mode_names[CMP_RANK_MODE_COUNT] = { CMP_RANK_MODE_TABLE(NAMES_X_NAME) };
const char *const cmp_rank_mode_help[CMP_RANK_MODE_COUNT] = { CMP_RANK_MODE_TABLE(NAMES_X_HELP) };

const char *cmp_rank_mode_name(cmp_rank_mode m)
{
	return names_at(cmp_rank_mode_names, CMP_RANK_MODE_COUNT, (int)m);
}

int cmp_rank_mode_parse(const char *name)
{
	return names_index(cmp_rank_mode_names, CMP_RANK_MODE_COUNT, name);
}

cmp_options cmp_options_none(void)
{
	cmp_options o = { .mode = CMP_RANK_NONE };
	return o;
}

int64_t cmp_sparse_count(int m, int n, double sparse_ratio)
{
	const int64_t mn = (int64_t)m * n;
	if (m < 1 || n < 1 || !(sparse_ratio > 0))
		return 0;
	if (sparse_ratio >= 1)
		return mn;
	const int64_t c = llround(sparse_ratio * (double)mn);
	return c < mn ? c : mn;
}

/* ---- options and input checks ---- */

static const char *options_problem(const cmp_options *o)
{
	if (!o || (int)o->mode < 0 || o->mode >= CMP_RANK_MODE_COUNT)
		return "unknown rank mode";
	if (o->mode == CMP_RANK_FIXED && o->rank < 1)
		return "rank must be at least 1";
	if (o->mode == CMP_RANK_ENERGY && !(o->energy > 0 && o->energy <= 1))
		return "energy must be in (0, 1]";
	if (o->mode == CMP_RANK_STABLE && !(o->stable_k > 0 && isfinite(o->stable_k)))
		return "stable-rank factor must be positive";
	if (o->mode == CMP_RANK_STABLE && !isfinite(o->stable_rank))
		return "stable rank must be finite";
	if (!(o->sparse_ratio >= 0 && o->sparse_ratio <= 1))
		return "sparse ratio must be in [0, 1]";
	return NULL;
}

/* ---- SVD ---- */

/* Thin SVD of w [m, n] in double: s [k] descending, and when u and vt are not NULL, u [m, k] and vt [k, n], both
 * row-major (k = min(m, n)). The row-major W is handed to LAPACK as the column-major W^T [n, m] = V S U^T, so
 * LAPACK's "U" is our V^T and its "V^T" our U, already in row-major order: no transposed copies. */
static ms_status svd(const float *w, int m, int n, double *s, double *u, double *vt)
{
	const int k = m < n ? m : n;
	const size_t mn = (size_t)m * (size_t)n;
	double *a = malloc(mn * sizeof *a);
	if (!a)
		return MS_ERR_NOMEM;
	for (size_t i = 0; i < mn; i++)
		a[i] = w[i];
	double dummy = 0;
	lapack_int info = LAPACKE_dgesdd(LAPACK_COL_MAJOR, u ? 'S' : 'N', n, m, a, n, s, u ? vt : &dummy, n,
					 u ? u : &dummy, u ? k : 1);
	free(a);
	if (info < 0)
		return MS_ERR_ARG;
	return info > 0 ? MS_ERR_NUMERIC : MS_OK;
}

ms_status cmp_singular_values(const float *w, int m, int n, double *s)
{
	if (!w || !s || m < 1 || n < 1)
		return MS_ERR_ARG;
	if (fin_first_nonfinite(w, (int64_t)m * n) >= 0)
		return MS_ERR_NONFINITE;
	return svd(w, m, n, s, NULL, NULL);
}

/* ---- rank selection ---- */

static double stable_rank_of(const double *s, int k)
{
	double total = 0;
	for (int i = 0; i < k; i++)
		total += s[i] * s[i];
	return k > 0 ? total / (s[0] * s[0] + SRANK_FLOOR) : 0;
}

static int energy_rank(const double *s, int k, double energy)
{
	double total = 0, kept = 0;
	for (int i = 0; i < k; i++)
		total += s[i] * s[i];
	/* the same summation order as total, so that at r = k kept == total and energy 1 always stops */
	for (int r = 1; r <= k; r++) {
		kept += s[r - 1] * s[r - 1];
		if (kept >= energy * total)
			return r;
	}
	return k;
}

static int select_rank(const double *s, int k, const cmp_options *o, double stable_rank)
{
	if (o->mode == CMP_RANK_NONE)
		return k;
	if (k == 0 || s[0] == 0)
		return 0;  /* a zero matrix: nothing to keep */
	if (o->mode == CMP_RANK_FIXED)
		return o->rank < k ? o->rank : k;
	if (o->mode == CMP_RANK_ENERGY)
		return energy_rank(s, k, o->energy);
	const double want = ceil(o->stable_k * stable_rank);
	return want < 1 ? 1 : want >= k ? k : (int)want;
}

int cmp_select_rank(const double *s, int k, const cmp_options *opts)
{
	if (!s || k < 0 || options_problem(opts))
		return -1;
	const double sr = opts->stable_rank > 0 ? opts->stable_rank : stable_rank_of(s, k);
	return select_rank(s, k, opts, sr);
}

/* ---- the sparse residual: exact top-nnz selection ---- */

/* |w - a| as the bits of a double: for non-negative doubles the bit patterns order as the values do, so the
 * selection can work digit by digit on integers. */
static uint64_t residual_key(const float *w, const double *a, int64_t i)
{
	const double r = fabs((double)w[i] - a[i]);
	uint64_t key;
	memcpy(&key, &r, sizeof key);
	return key;
}

/* The key of the nnz-th largest residual (1 <= nnz <= count) and how many entries with exactly that key belong to
 * the top nnz (the rest of the top are the entries with larger keys). Radix selection, one byte per pass from the
 * top: 8 passes over the data whatever the values, no sort, no scratch copy. */
static uint64_t threshold_key(const float *w, const double *a, int64_t count, int64_t nnz, int64_t *take_equal)
{
	uint64_t prefix = 0, mask = 0;
	int64_t need = nnz;
	for (int shift = 56; shift >= 0; shift -= 8) {
		int64_t hist[256] = { 0 };
		for (int64_t i = 0; i < count; i++) {
			const uint64_t key = residual_key(w, a, i);
			if ((key & mask) == prefix)
				hist[(key >> shift) & 0xff]++;
		}
		int c = 255;
		while (c > 0 && hist[c] < need)
			need -= hist[c--];
		prefix |= (uint64_t)c << shift;
		mask |= (uint64_t)0xff << shift;
	}
	*take_equal = need;
	return prefix;
}

/* approx = the low-rank part a, except at the nnz largest residuals, where it is w itself; those go to the
 * factor outputs too when asked for. Ties at the threshold go to the lower flat index. */
static void add_sparse(const float *w, const double *a, int64_t count, int64_t nnz, float *approx,
		       cmp_factors *factors)
{
	int64_t take_equal = 0, out = 0;
	const uint64_t thr = nnz > 0 ? threshold_key(w, a, count, nnz, &take_equal) : UINT64_MAX;
	const int want_sparse = factors && factors->sparse_idx && factors->sparse_val;
	for (int64_t i = 0; i < count; i++) {
		const uint64_t key = nnz > 0 ? residual_key(w, a, i) : 0;
		int keep = key > thr;
		if (!keep && nnz > 0 && key == thr && take_equal > 0) {
			keep = 1;
			take_equal--;
		}
		approx[i] = keep ? w[i] : (float)a[i];
		if (keep && want_sparse) {
			factors->sparse_idx[out] = (int32_t)i;
			factors->sparse_val[out] = (float)((double)w[i] - a[i]);
		}
		out += keep;
	}
}

/* ---- compression ---- */

static double frobenius_ratio(const float *w, const float *approx, int64_t count)
{
	double diff = 0, norm = 0;
	for (int64_t i = 0; i < count; i++) {
		const double d = (double)w[i] - approx[i];
		diff += d * d;
		norm += (double)w[i] * w[i];
	}
	return norm > 0 ? sqrt(diff / norm) : 0;
}

static void result_uncompressed(int m, int n, double stable_rank, cmp_result *res)
{
	const cmp_result r = {
		.compressed = 0,
		.rank = m < n ? m : n,
		.stable_rank = stable_rank,
		.energy_kept = 1,
		.nnz = 0,
		.params_before = (int64_t)m * n,
		.params_after = (int64_t)m * n,
		.rel_error = 0,
	};
	*res = r;
}

/* Copies U_r S_r (s folded into u, which must already be scaled) and V_r^T into the caller's float factors. */
static void write_factors(const double *us, const double *vt, int m, int n, int k, int r, cmp_factors *f)
{
	if (!f || !f->u || !f->v)
		return;
	for (int64_t i = 0; i < m; i++)
		for (int j = 0; j < r; j++)
			f->u[i * r + j] = (float)us[i * k + j];
	for (int64_t i = 0; i < (int64_t)r * n; i++)
		f->v[i] = (float)vt[i];
}

static ms_status check_factor_room(const cmp_factors *f, int m, int n, int64_t nnz, ms_error *err)
{
	if (!f)
		return MS_OK;
	if (f->sparse_idx && f->sparse_val && nnz > 0) {
		if ((int64_t)m * n > INT32_MAX)
			return ms_fail(err, MS_ERR_ARG, "%d x %d matrix: sparse indices do not fit in I32", m, n);
		if (nnz > f->max_nnz)
			return ms_fail(err, MS_ERR_ARG, "sparse residual of %lld entries, room for %lld",
				       (long long)nnz, (long long)f->max_nnz);
	}
	return MS_OK;
}

typedef struct {
	double *s;   /* [k] */
	double *u;   /* [m, k], then U S */
	double *vt;  /* [k, n] */
	double *a;   /* [m, n]: the low-rank reconstruction */
} svd_work;

static void work_free(svd_work *wk)
{
	free(wk->s);
	free(wk->u);
	free(wk->vt);
	free(wk->a);
}

static ms_status work_alloc(svd_work *wk, int m, int n)
{
	const size_t k = (size_t)(m < n ? m : n);
	wk->s = malloc(k * sizeof(double));
	wk->u = malloc((size_t)m * k * sizeof(double));
	wk->vt = malloc(k * (size_t)n * sizeof(double));
	wk->a = NULL;
	return wk->s && wk->u && wk->vt ? MS_OK : MS_ERR_NOMEM;
}

/* The rank-r reconstruction into wk->a [m, n]; folds S into U's first r columns on the way. */
static ms_status reconstruct(svd_work *wk, int m, int n, int r)
{
	const int k = m < n ? m : n;
	wk->a = calloc((size_t)m * (size_t)n, sizeof(double));
	if (!wk->a)
		return MS_ERR_NOMEM;
	for (int64_t i = 0; i < m; i++)
		for (int j = 0; j < r; j++)
			wk->u[i * k + j] *= wk->s[j];
	if (r > 0)
		cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, r, 1.0, wk->u, k, wk->vt, n, 0.0, wk->a,
			    n);
	return MS_OK;
}

static double energy_of(const double *s, int k, int r)
{
	double total = 0, kept = 0;
	for (int i = 0; i < k; i++) {
		total += s[i] * s[i];
		if (i < r)
			kept += s[i] * s[i];
	}
	return total > 0 ? kept / total : 1;
}

/* The SVD path of cmp_compress, after the checks. */
static ms_status compress_svd(const float *w, int m, int n, const cmp_options *o, float *approx, cmp_result *res,
			      cmp_factors *factors, ms_error *err)
{
	const int k = m < n ? m : n;
	const int64_t count = (int64_t)m * n;
	svd_work wk = { 0 };
	ms_status st = work_alloc(&wk, m, n);
	if (st == MS_OK)
		st = svd(w, m, n, wk.s, wk.u, wk.vt);
	if (st != MS_OK) {
		work_free(&wk);
		return st == MS_ERR_NUMERIC ? ms_fail(err, st, "%d x %d matrix: SVD did not converge", m, n)
					    : ms_fail(err, st, NULL);
	}
	const double measured = stable_rank_of(wk.s, k);
	const int r = select_rank(wk.s, k, o, o->stable_rank > 0 ? o->stable_rank : measured);
	if (r >= k) {
		memcpy(approx, w, (size_t)count * sizeof *approx);
		result_uncompressed(m, n, measured, res);
		work_free(&wk);
		return MS_OK;
	}
	if (factors && factors->u && factors->v && r > factors->max_rank) {
		work_free(&wk);
		return ms_fail(err, MS_ERR_ARG, "rank %d chosen, factors have room for %d", r, factors->max_rank);
	}
	st = reconstruct(&wk, m, n, r);
	if (st == MS_OK) {
		const int64_t nnz = cmp_sparse_count(m, n, o->sparse_ratio);
		write_factors(wk.u, wk.vt, m, n, k, r, factors);
		add_sparse(w, wk.a, count, nnz, approx, factors);
		res->compressed = 1;
		res->rank = r;
		res->stable_rank = measured;
		res->energy_kept = energy_of(wk.s, k, r);
		res->nnz = nnz;
		res->params_before = count;
		res->params_after = (int64_t)r * (m + n) + 2 * nnz;
		res->rel_error = frobenius_ratio(w, approx, count);
	}
	work_free(&wk);
	return st == MS_OK ? MS_OK : ms_fail(err, st, NULL);
}

ms_status cmp_compress(const float *w, int m, int n, const cmp_options *opts, float *approx, cmp_result *res,
		       cmp_factors *factors, ms_error *err)
{
	cmp_result local;
	if (!res)
		res = &local;
	if (!w || !approx || m < 1 || n < 1)
		return ms_fail(err, MS_ERR_ARG, "compress: empty matrix or missing buffer");
	const char *problem = options_problem(opts);
	if (problem)
		return ms_fail(err, MS_ERR_ARG, "compress: %s", problem);
	const int64_t bad = fin_first_nonfinite(w, (int64_t)m * n);
	if (bad >= 0)
		return ms_fail(err, MS_ERR_NONFINITE, "compress: entry (%lld, %lld) is not finite",
			       (long long)(bad / n), (long long)(bad % n));
	const int k = m < n ? m : n;
	/* no SVD when nothing can be compressed: stable_rank 0 says it was not measured */
	if (opts->mode == CMP_RANK_NONE || (opts->mode == CMP_RANK_FIXED && opts->rank >= k)) {
		memcpy(approx, w, (size_t)m * (size_t)n * sizeof *approx);
		result_uncompressed(m, n, 0, res);
		return MS_OK;
	}
	ms_status st = check_factor_room(factors, m, n, cmp_sparse_count(m, n, opts->sparse_ratio), err);
	if (st != MS_OK)
		return st;
	return compress_svd(w, m, n, opts, approx, res, factors, err);
}

ms_status cmp_expand(const float *u, const float *v, int m, int r, int n, const int32_t *sparse_idx,
		     const float *sparse_val, int64_t nnz, float *w, ms_error *err)
{
	if (m < 1 || n < 1 || r < 0 || nnz < 0)
		return ms_fail(err, MS_ERR_ARG, "factors of shape [%d, %d] x [%d, %d]", m, r, r, n);
	if (r == 0)
		memset(w, 0, (size_t)m * (size_t)n * sizeof *w);
	else
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, r, 1.0f, u, r, v, n, 0.0f, w, n);
	const int64_t size = (int64_t)m * n;
	for (int64_t k = 0; k < nnz; k++) {
		if (sparse_idx[k] < 0 || sparse_idx[k] >= size)
			return ms_fail(err, MS_ERR_ARG, "sparse entry %lld: index %d outside the %lld entries of the matrix",
				       (long long)k, sparse_idx[k], (long long)size);
		w[sparse_idx[k]] += sparse_val[k];
	}
	return MS_OK;
}
