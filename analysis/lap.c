#include "analysis/lap.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>

/* The solver minimises sign * cost with column potentials v: the reduced cost of (i, j) is
 * sign c[i, j] - v[j] - u[i], where u[i] is never stored: it is the reduced cost of row i's own column, and the
 * invariant kept throughout is that every assigned row sits on a column minimising sign c[i, j] - v[j]. */
typedef struct {
	int n;
	const double *c;  /* [n, n], or NULL when the costs are cf */
	const float *cf;  /* [n, n] float costs (alignment's), read as doubles */
	double sign;      /* +1 to minimise, -1 to maximise */
	double *v;        /* [n] column potentials */
	double *d;        /* [n] path lengths of the current search */
	int *x;           /* [n] column of each row, -1 while free */
	int *y;           /* [n] row of each column, -1 while free */
	int *pred;        /* [n] row from which each column was reached */
	int *cols;        /* [n] columns: finished | at the current minimum | not yet reached */
	int *free_rows;   /* [n] */
} lap_work;

/* Cost k of the matrix, whichever precision it is stored in: a float cost is exactly the same double. */
static inline double cost_at(const lap_work *w, size_t k)
{
	return w->c ? w->c[k] : (double)w->cf[k];
}

static double reduced(const lap_work *w, int i, int j)
{
	return w->sign * cost_at(w, (size_t)i * (size_t)w->n + (size_t)j) - w->v[j];
}

static ms_status check_costs(const lap_work *w)
{
	const size_t nn = (size_t)w->n * (size_t)w->n;
	for (size_t k = 0; k < nn; k++) {
		const double c = cost_at(w, k);
		if (!isfinite(c) || fabs(c) > LAP_COST_MAX)
			return MS_ERR_ARG;
	}
	return MS_OK;
}

/* v[j] = the column's minimum; each column's cheapest row takes it if that row is still free (lowest row on ties,
 * lowest column first). Rows read in order so the matrix streams through the cache. */
static void column_reduction(lap_work *w)
{
	const int n = w->n;
	int *best = w->pred; /* cheapest row of each column; pred is free until the searches start */
	for (int j = 0; j < n; j++) {
		w->v[j] = w->sign * cost_at(w, (size_t)j);
		best[j] = 0;
	}
	for (int i = 1; i < n; i++) {
		const size_t row = (size_t)i * (size_t)n;
		for (int j = 0; j < n; j++)
			if (w->sign * cost_at(w, row + (size_t)j) < w->v[j]) {
				w->v[j] = w->sign * cost_at(w, row + (size_t)j);
				best[j] = i;
			}
	}
	for (int i = 0; i < n; i++)
		w->x[i] = -1;
	for (int j = 0; j < n; j++) {
		w->y[j] = -1;
		if (w->x[best[j]] < 0) {
			w->x[best[j]] = j;
			w->y[j] = best[j];
		}
	}
}

/* The two smallest reduced costs of row i: *u1 at *j1 (lowest index on ties) and *u2 at *j2 != *j1. */
static void two_smallest(const lap_work *w, int i, double *u1, int *j1, double *u2, int *j2)
{
	*u1 = reduced(w, i, 0);
	*j1 = 0;
	*u2 = INFINITY;
	*j2 = -1;
	for (int j = 1; j < w->n; j++) {
		const double h = reduced(w, i, j);
		if (h >= *u2)
			continue;
		if (h >= *u1) {
			*u2 = h;
			*j2 = j;
		} else {
			*u2 = *u1;
			*j2 = *j1;
			*u1 = h;
			*j1 = j;
		}
	}
}

/* Augmenting row reduction: a free row takes its cheapest column, raising that column's price to the row's second
 * best so the row stays on a minimum; the row it evicts retries at once (strict gain) or in the next pass (tie).
 * Cheap, and on typical matrices it leaves few rows for the Dijkstra searches. A step budget keeps long runs of
 * tiny price rises from dragging on: stopping early is safe since the invariant holds after every step. */
static void row_reduction(lap_work *w)
{
	const int n = w->n;
	int n_free = 0;
	for (int i = 0; i < n; i++)
		if (w->x[i] < 0)
			w->free_rows[n_free++] = i;
	long budget = 8L * n;
	for (int pass = 0; pass < 2 && n_free > 0 && n > 1; pass++) {
		int k = 0, n_prev = n_free;
		n_free = 0;
		while (k < n_prev && budget-- > 0) {
			const int i = w->free_rows[k++];
			double u1, u2;
			int j1, j2;
			two_smallest(w, i, &u1, &j1, &u2, &j2);
			int evicted = w->y[j1];
			if (u1 < u2)
				w->v[j1] -= u2 - u1;
			else if (evicted >= 0) {
				j1 = j2;
				evicted = w->y[j2];
			}
			w->x[i] = j1;
			w->y[j1] = i;
			if (evicted < 0)
				continue;
			w->x[evicted] = -1;
			if (u1 < u2)
				w->free_rows[--k] = evicted;
			else
				w->free_rows[n_free++] = evicted;
		}
	}
}

/* Moves the columns at the smallest distance among cols[lo..n) to cols[lo..hi); returns hi, sets *mu. */
static int collect_minimum(lap_work *w, int lo, double *mu)
{
	int hi = lo;
	*mu = INFINITY;
	for (int k = lo; k < w->n; k++) {
		const int j = w->cols[k];
		const double h = w->d[j];
		if (h > *mu)
			continue;
		if (h < *mu) {
			hi = lo;
			*mu = h;
		}
		w->cols[k] = w->cols[hi];
		w->cols[hi++] = j;
	}
	return hi;
}

/* The lowest free column in cols[lo..hi), or -1. */
static int free_column_in(const lap_work *w, int lo, int hi)
{
	int best = -1;
	for (int k = lo; k < hi; k++) {
		const int j = w->cols[k];
		if (w->y[j] < 0 && (best < 0 || j < best))
			best = j;
	}
	return best;
}

/* Relaxes the unreached columns through the row assigned to column j (just finished at distance d[j]). Columns that
 * fall to the current minimum mu join cols[..*hi); returns a free column found at mu, or -1. */
static int scan_column(lap_work *w, int j, double mu, int *hi)
{
	const int i = w->y[j];
	const double base = reduced(w, i, j) - w->d[j];
	int found = -1;
	for (int k = *hi; k < w->n; k++) {
		const int j2 = w->cols[k];
		const double h = reduced(w, i, j2) - base;
		if (h >= w->d[j2])
			continue;
		w->d[j2] = h;
		w->pred[j2] = i;
		if (h > mu)
			continue;
		if (w->y[j2] < 0 && (found < 0 || j2 < found))
			found = j2;
		w->cols[k] = w->cols[*hi];
		w->cols[(*hi)++] = j2;
	}
	return found;
}

/* Dijkstra from free row f over columns, on reduced costs (non-negative by the invariant), to the nearest free
 * column; then the finished columns' prices fall by how much nearer than that column they were, which keeps the
 * invariant, and the path is flipped so f is assigned. */
static void augment(lap_work *w, int f)
{
	const int n = w->n;
	for (int j = 0; j < n; j++) {
		w->d[j] = reduced(w, f, j);
		w->pred[j] = f;
		w->cols[j] = j;
	}
	int lo = 0, hi = 0, end = -1;
	double mu = 0.0;
	while (end < 0) {
		if (lo == hi) {
			hi = collect_minimum(w, lo, &mu);
			end = free_column_in(w, lo, hi);
			if (end >= 0)
				break;
		}
		end = scan_column(w, w->cols[lo++], mu, &hi);
	}
	for (int k = 0; k < lo; k++) {
		const int j = w->cols[k];
		w->v[j] += w->d[j] - mu;
	}
	for (int j = end;;) {
		const int i = w->pred[j];
		const int next = w->x[i];
		w->y[j] = i;
		w->x[i] = j;
		if (i == f)
			break;
		j = next;
	}
}

static void free_work(lap_work *w)
{
	free(w->v);
	free(w->d);
	free(w->x);
	free(w->y);
	free(w->pred);
	free(w->cols);
	free(w->free_rows);
}

static ms_status alloc_work(lap_work *w, int n)
{
	const size_t m = (size_t)n;
	w->v = malloc(m * sizeof *w->v);
	w->d = malloc(m * sizeof *w->d);
	w->x = malloc(m * sizeof *w->x);
	w->y = malloc(m * sizeof *w->y);
	w->pred = malloc(m * sizeof *w->pred);
	w->cols = malloc(m * sizeof *w->cols);
	w->free_rows = malloc(m * sizeof *w->free_rows);
	if (!w->v || !w->d || !w->x || !w->y || !w->pred || !w->cols || !w->free_rows) {
		free_work(w);
		return MS_ERR_NOMEM;
	}
	return MS_OK;
}

static ms_status solve(lap_work *w, int *col_of_row, double *total)
{
	const int n = w->n;
	if (total)
		*total = 0.0;
	if (n == 0)
		return MS_OK;
	if (check_costs(w) != MS_OK)
		return MS_ERR_ARG;
	if (alloc_work(w, n) != MS_OK)
		return MS_ERR_NOMEM;
	column_reduction(w);
	row_reduction(w);
	for (int i = 0; i < n; i++)
		if (w->x[i] < 0)
			augment(w, i);
	double sum = 0.0;
	for (int i = 0; i < n; i++) {
		col_of_row[i] = w->x[i];
		sum += cost_at(w, (size_t)i * (size_t)n + (size_t)w->x[i]);
	}
	if (total)
		*total = sum;
	free_work(w);
	return MS_OK;
}

ms_status lap_solve(int n, const double *cost, int maximize, int *col_of_row, double *total)
{
	if (n < 0 || (n > 0 && (!cost || !col_of_row)))
		return MS_ERR_ARG;
	lap_work w = { .n = n, .c = cost, .sign = maximize ? -1.0 : 1.0 };
	return solve(&w, col_of_row, total);
}

ms_status lap_solve_f32(int n, const float *cost, int maximize, int *col_of_row, double *total)
{
	if (n < 0 || (n > 0 && (!cost || !col_of_row)))
		return MS_ERR_ARG;
	lap_work w = { .n = n, .cf = cost, .sign = maximize ? -1.0 : 1.0 };
	return solve(&w, col_of_row, total);
}
