#include "bench/hungarian.h"

#include <math.h>
#include <stdlib.h>

/* Work arrays, indexed 0..n where column 0 is a virtual column holding the row being inserted. */
typedef struct {
	double *row_pot;   /* [n + 1] u: potential of row i (1-based) */
	double *col_pot;   /* [n + 1] v: potential of column j */
	double *slack;     /* [n + 1] least reduced cost reaching column j in this search */
	int *row_of_col;   /* [n + 1] row matched to column j, 0 when free */
	int *came_from;    /* [n + 1] previous column on the path to column j */
	unsigned char *in_tree; /* [n + 1] column j is in the search tree */
} hung_work;

static void work_free(hung_work *w)
{
	free(w->row_pot);
	free(w->col_pot);
	free(w->slack);
	free(w->row_of_col);
	free(w->came_from);
	free(w->in_tree);
}

static int work_alloc(hung_work *w, int n)
{
	const size_t m = (size_t)n + 1;
	w->row_pot = calloc(m, sizeof *w->row_pot);
	w->col_pot = calloc(m, sizeof *w->col_pot);
	w->slack = malloc(m * sizeof *w->slack);
	w->row_of_col = calloc(m, sizeof *w->row_of_col);
	w->came_from = calloc(m, sizeof *w->came_from);
	w->in_tree = malloc(m);
	return w->row_pot && w->col_pot && w->slack && w->row_of_col && w->came_from && w->in_tree;
}

/* Grows the tree from the free row `row` until it reaches a free column, then flips the path. Every step scans
 * all columns once (O(n)) and adds one column, so a row costs O(n^2) and the whole method O(n^3). */
static void insert_row(hung_work *w, const double *cost, int n, double sign, int row)
{
	w->row_of_col[0] = row;
	int col = 0;
	for (int j = 0; j <= n; j++) {
		w->slack[j] = INFINITY;
		w->in_tree[j] = 0;
	}
	do {
		w->in_tree[col] = 1;
		const int i = w->row_of_col[col];
		double best = INFINITY;
		int next = 0;
		for (int j = 1; j <= n; j++) {
			if (w->in_tree[j])
				continue;
			const double reduced = sign * cost[(size_t)(i - 1) * n + (j - 1)] - w->row_pot[i] - w->col_pot[j];
			if (reduced < w->slack[j]) {
				w->slack[j] = reduced;
				w->came_from[j] = col;
			}
			if (w->slack[j] < best) {
				best = w->slack[j];
				next = j;
			}
		}
		/* Shift the potentials so the cheapest edge leaving the tree becomes tight. */
		for (int j = 0; j <= n; j++) {
			if (w->in_tree[j]) {
				w->row_pot[w->row_of_col[j]] += best;
				w->col_pot[j] -= best;
			} else {
				w->slack[j] -= best;
			}
		}
		col = next;
	} while (w->row_of_col[col] != 0);
	while (col != 0) {
		const int prev = w->came_from[col];
		w->row_of_col[col] = w->row_of_col[prev];
		col = prev;
	}
}

ms_status hung_solve(int n, const double *cost, int maximize, int *col_of_row, double *total)
{
	if (n < 0 || (n > 0 && (!cost || !col_of_row)))
		return MS_ERR_ARG;
	for (size_t k = 0; k < (size_t)n * (size_t)n; k++)
		if (!isfinite(cost[k]))
			return MS_ERR_ARG;
	hung_work w = {0};
	if (!work_alloc(&w, n)) {
		work_free(&w);
		return MS_ERR_NOMEM;
	}
	const double sign = maximize ? -1.0 : 1.0;
	for (int i = 1; i <= n; i++)
		insert_row(&w, cost, n, sign, i);
	double sum = 0.0;
	for (int j = 1; j <= n; j++) {
		const int i = w.row_of_col[j] - 1;
		col_of_row[i] = j - 1;
		sum += cost[(size_t)i * n + (j - 1)];
	}
	if (total)
		*total = sum;
	work_free(&w);
	return MS_OK;
}
