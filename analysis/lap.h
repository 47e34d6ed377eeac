/* Exact linear assignment on a dense square cost matrix: the shortest augmenting path method of Jonker and
 * Volgenant ("A shortest augmenting path algorithm for dense and sparse linear assignment problems", Computing
 * 38, 1987): column reduction, augmenting row reduction, then one Dijkstra search with dual potentials per row
 * still free. O(n^3) in the worst case, far less on the matrices alignment produces. */
#ifndef LAP_LAP_H
#define LAP_LAP_H

#include "io/error.h"

/* Costs beyond this magnitude are refused: potentials and path lengths are sums of up to n cost differences and
 * must stay finite. */
#define LAP_COST_MAX 1e150

/* Assigns every row of cost [n, n] (row-major, cost[i * n + j]) to a distinct column so that the sum of the chosen
 * costs is minimal (maximize == 0) or maximal (maximize != 0). col_of_row [n] receives the column of each row;
 * *total (may be NULL) the sum of the chosen costs. n == 0 is valid and does nothing (*total = 0).
 * Deterministic: the same matrix always gives the same assignment; among columns at equal distance the search
 * prefers a free one, then the lowest index. Returns MS_ERR_ARG for n < 0, NULL arrays, or a cost that is NaN,
 * infinite or beyond LAP_COST_MAX; MS_ERR_NOMEM when the O(n) work arrays cannot be had. */
ms_status lap_solve(int n, const double *cost, int maximize, int *col_of_row, double *total);

/* The same on a float matrix (half the memory: alignment's f x f costs are float products anyway); every cost is
 * read as the double it equals, so the assignment is the one lap_solve gives on that matrix widened. */
ms_status lap_solve_f32(int n, const float *cost, int maximize, int *col_of_row, double *total);

#endif
