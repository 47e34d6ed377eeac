/* View 2: the selected block's E x E similarity in the chosen base as a heatmap, by index or by group, with a
 * legend and the cell under the cursor explained. The shades stretch over the block's off-diagonal range: the
 * mapped cosines of a block often all lie above 0.5, and a fixed 0..1 scale would show one colour. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "tui/views.h"

typedef struct {
	const double *sim;   /* [E, E] */
	double lo, hi;       /* off-diagonal range */
	int cw;              /* columns per cell */
	int rows, cols;      /* cells shown */
	int row0, col0;      /* first row and column shown, as positions in the order */
} heat_layout;

static void off_diagonal_range(const double *sim, int E, double *lo, double *hi)
{
	*lo = INFINITY;
	*hi = -INFINITY;
	for (int i = 0; i < E; i++)
		for (int j = 0; j < E; j++)
			if (i != j && isfinite(sim[(size_t)i * E + j])) {
				*lo = fmin(*lo, sim[(size_t)i * E + j]);
				*hi = fmax(*hi, sim[(size_t)i * E + j]);
			}
	if (!(*hi >= *lo))
		*lo = *hi = 1.0;  /* a single expert: only the diagonal */
}

static int position(const int *order, int E, int e)
{
	for (int i = 0; i < E; i++)
		if (order[i] == e)
			return i;
	return 0;
}

/* Digits of the largest expert index. */
static int label_digits(int E)
{
	int d = 1;
	for (int v = E - 1; v >= 10; v /= 10)
		d++;
	return d;
}

/* Column labels: whole expert numbers on every k-th column, k such that a label and a space fit (so 64 experts
 * in one-cell columns read "0  3  6" rather than a run of last digits); the cursor's column always has its label. */
static void axis_labels(const app *a, grid *g, grid_rect r, const heat_layout *h, const int *order)
{
	const int digits = label_digits(a->E);
	const int k = (digits + 1 + h->cw - 1) / h->cw;
	int cx = -1, clen = 0;  /* the cursor's label: where it starts and how wide it is */
	for (int j = 0; j < h->cols; j++)
		if (order[h->col0 + j] == a->expert) {
			char t[16];
			cx = r.x + 4 + j * h->cw;
			clen = snprintf(t, sizeof t, "%d", a->expert);
		}
	for (int j = 0; j < h->cols; j += k) {
		const int x = r.x + 4 + j * h->cw, e = order[h->col0 + j];
		char t[16];
		const int len = snprintf(t, sizeof t, "%d", e);
		if (cx >= 0 && x <= cx + clen && x + len >= cx)
			continue;  /* it would run into the cursor's label */
		grid_text(g, x, r.y, r.x + r.w - x, t, GRID_EL_DIM, 0);
	}
	if (cx >= 0)
		grid_printf(g, cx, r.y, r.x + r.w - cx, GRID_EL_CURSOR, 0, "%d", a->expert);
	for (int i = 0; i < h->rows; i++) {
		int e = order[h->row0 + i];
		grid_printf(g, r.x, r.y + 1 + i, 3, e == a->heat_row ? GRID_EL_CURSOR : GRID_EL_DIM, 0, "%3d", e);
	}
}

static void cells(const app *a, grid *g, grid_rect r, const heat_layout *h, const int *order)
{
	const int E = a->E;
	const int *grp = a->cur.p.group + (size_t)a->block * E;
	for (int i = 0; i < h->rows; i++) {
		const int ei = order[h->row0 + i];
		for (int j = 0; j < h->cols; j++) {
			const int ej = order[h->col0 + j];
			const double v = h->sim[(size_t)ei * E + ej];
			const int level = grid_heat_level(v, h->lo, h->hi);
			const int diag = ei == ej;  /* always 1: its own glyph, so the scale is the data's alone */
			const int cursor = ei == a->heat_row && ej == a->expert;
			/* same-group cells of the by-group order carry a mark so groups read as blocks in mono too */
			unsigned attr = cursor ? GRID_REVERSE : grp[ei] >= 0 && grp[ei] == grp[ej] && a->heat_by_group ? GRID_BOLD : 0;
			for (int c = 0; c < h->cw; c++)
				grid_put(g, r.x + 4 + j * h->cw + c, r.y + 1 + i, diag ? g->gl->diagonal : g->gl->shade[level],
					 diag ? GRID_EL_DIM : (grid_element)(GRID_EL_HEAT0 + level), attr);
		}
	}
}

/* "scale 0.545 ·░▒▓█ 1.000 (off-diagonal min..max, 5 bands)  ╲ self": the shades split the range the block's
 * off-diagonal values span into equal bands; the diagonal has its own glyph. */
static void legend(grid *g, int x, int y, int w, const heat_layout *h)
{
	int used = grid_printf(g, x, y, w, GRID_EL_DIM, 0, "scale %.3f ", h->lo);
	for (int l = 0; l < GRID_HEAT_LEVELS && used < w; l++)
		grid_put(g, x + used++, y, g->gl->shade[l], (grid_element)(GRID_EL_HEAT0 + l), 0);
	used += grid_printf(g, x + used, y, w - used, GRID_EL_DIM, 0, " %.3f off-diagonal min..max  ", h->hi);
	if (used < w) {
		grid_put(g, x + used, y, g->gl->diagonal, GRID_EL_DIM, 0);
		grid_text(g, x + used + 1, y, w - used - 1, " self", GRID_EL_DIM, 0);
	}
}

/* What part of the matrix is shown when it does not fit: said, not silently cut. */
static void clipped_note(const app *a, grid *g, int x, int y, int w, const heat_layout *h)
{
	if (h->cols >= a->E && h->rows >= a->E)
		return;
	grid_printf(g, x, y, w, GRID_EL_WARN, 0, "clipped: cols %d-%d, rows %d-%d of %d; h/l, Up/Dn scroll",
		    h->col0 + 1, h->col0 + h->cols, h->row0 + 1, h->row0 + h->rows, a->E);
}

static void explain(const app *a, grid *g, int x, int y, int w, const heat_layout *h)
{
	const int E = a->E, i = a->heat_row, j = a->expert;
	const int *grp = a->cur.p.group + (size_t)a->block * E;
	char gi[16] = "dropped", gj[16] = "dropped";
	if (grp[i] >= 0)
		snprintf(gi, sizeof gi, "%d", grp[i]);
	if (grp[j] >= 0)
		snprintf(gj, sizeof gj, "%d", grp[j]);
	grid_printf(g, x, y, w, GRID_EL_DEFAULT, 0, "expert %d vs %d: %.4f (%s), groups %s / %s", i, j,
		    h->sim[(size_t)i * E + j], sim_base_name(a->cur.base), gi, gj);
}

/* The layout of the cells inside body (below the title) for block b; 0, or -1 when nothing fits. order [E]
 * receives the experts in display order. */
static int heat_geometry(const app *a, grid_rect body, heat_layout *h, int *order)
{
	const int b = a->block, E = a->E;
	memset(h, 0, sizeof *h);
	h->sim = a->stats[b].similarity[a->cur.base];
	const int avail_w = body.w - 4, avail_h = body.h - 4;  /* row labels; column labels, legend, explanation */
	h->cw = avail_w >= 2 * E ? 2 : 1;
	h->cols = avail_w / h->cw < E ? avail_w / h->cw : E;
	h->rows = avail_h < E ? avail_h : E;
	if (h->cols <= 0 || h->rows <= 0)
		return -1;
	app_expert_order(a, b, a->heat_by_group ? APP_ORDER_GROUP : APP_ORDER_INDEX, order);
	h->row0 = views_scroll(E, h->rows, position(order, E, a->heat_row));
	h->col0 = views_scroll(E, h->cols, position(order, E, a->expert));
	return 0;
}

void views_heatmap(const app *a, grid *g, grid_rect r)
{
	const int b = a->block, E = a->E;
	char title[160];
	snprintf(title, sizeof title, "Similarity (%s) of block %s, by %s", sim_base_name(a->cur.base),
		 a->m->blocks[b].label, a->heat_by_group ? "group" : "index");
	grid_rect body = views_title(g, r, title);
	const char *wait = views_waiting(a, b, APP_HAVE_BASE(a->cur.base));
	if (wait) {
		grid_text(g, body.x, body.y, body.w, wait, GRID_EL_DIM, 0);
		return;
	}
	heat_layout h;
	int order[E];
	if (heat_geometry(a, body, &h, order) != 0)
		return;
	off_diagonal_range(h.sim, E, &h.lo, &h.hi);
	axis_labels(a, g, body, &h, order);
	cells(a, g, body, &h, order);
	clipped_note(a, g, body.x, body.y + 1 + h.rows, body.w, &h);
	legend(g, body.x, body.y + 2 + h.rows, body.w, &h);
	explain(a, g, body.x, body.y + 3 + h.rows, body.w, &h);
}

int views_heatmap_hit(const app *a, grid_rect r, int x, int y, int *row, int *col)
{
	const int E = a->E;
	grid_rect body = {r.x, r.y + 1, r.w, r.h - 1};
	heat_layout h;
	int order[E];
	if (views_waiting(a, a->block, APP_HAVE_BASE(a->cur.base)) || heat_geometry(a, body, &h, order) != 0)
		return 0;
	const int i = y - (body.y + 1), j = x - (body.x + 4) >= 0 ? (x - (body.x + 4)) / h.cw : -1;
	if (i < 0 || i >= h.rows || j < 0 || j >= h.cols)
		return 0;
	*row = order[h.row0 + i];
	*col = order[h.col0 + j];
	return 1;
}
