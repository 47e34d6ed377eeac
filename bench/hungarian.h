/* The textbook Hungarian method, O(n^3), as the yardstick `make bench` holds analysis/lap against: rows enter one
 * at a time and each is matched by one shortest-augmenting-path search over the columns, kept non-negative by
 * row and column potentials (Kuhn 1955, Munkres 1957; the O(n^3) bookkeeping of Lawler, Combinatorial
 * Optimization, 1976, ch. 5). No initial reductions or other speed-ups: that is the point of the comparison. */
#ifndef HUNG_HUNGARIAN_H
#define HUNG_HUNGARIAN_H

#include "io/error.h"

/* Same contract as lap_solve: col_of_row [n] gets each row's column, minimising (maximize == 0) or maximising the
 * sum of cost [n, n] (row-major); *total (may be NULL) that sum. MS_ERR_ARG for bad arguments or non-finite
 * costs, MS_ERR_NOMEM. */
ms_status hung_solve(int n, const double *cost, int maximize, int *col_of_row, double *total);

#endif
