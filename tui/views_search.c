/* The search panel (tui/app_search.c), drawn over the lower part of the view: the search running or its
 * suggestion beside uniform G and the global allocation at the same budget, the selected block's count now and
 * suggested, and a chart of KL (held-out tokens) by experts kept for every budget searched this session, one bar
 * per budget scaled to the largest KL shown. */
#include <math.h>
#include <stdio.h>

#include "tui/views.h"

/* Rows the panel needs for n chart points. */
static int panel_rows(int n_points)
{
	return 6 + (n_points > 0 ? 1 + n_points : 0);
}

static void chart(const app *a, grid *g, int x, int y, int w)
{
	const app_search *s = &a->search;
	double top = 0.0;
	for (int i = 0; i < s->n_points; i++) {
		const app_search_point *pt = &s->points[i];
		const double v[3] = {pt->kl, pt->kl_uniform, pt->kl_global};
		for (int k = 0; k < 3; k++)
			if (!isnan(v[k]) && v[k] > top)
				top = v[k];
	}
	grid_text(g, x, y, w, "KL by experts kept (bar: searched; u: uniform, g: global)", GRID_EL_LABEL, 0);
	const int bar = w - 36 > 8 ? w - 36 : 8;
	for (int i = 0; i < s->n_points; i++) {
		const app_search_point *pt = &s->points[i];
		const int row = y + 1 + i;
		grid_printf(g, x, row, 6, GRID_EL_DEFAULT, 0, "%5d", pt->keep);
		grid_fill(g, (grid_rect){x + 6, row, bar, 1}, ' ', GRID_EL_DIM, 0);
		if (top > 0)
			grid_hbar(g, x + 6, row, bar, pt->kl / top, GRID_EL_SPARK);
		/* where uniform and global would reach, marked on the same scale */
		const double marks[2] = {pt->kl_uniform, pt->kl_global};
		const char glyph[2] = {'u', 'g'};
		for (int k = 0; k < 2; k++)
			if (top > 0 && !isnan(marks[k])) {
				int at = (int)lround(marks[k] / top * (bar - 1));
				grid_put(g, x + 6 + at, row, (uint32_t)glyph[k], GRID_EL_WARN, 0);
			}
		grid_printf(g, x + 7 + bar, row, w - 7 - bar, GRID_EL_DEFAULT, 0, "%.4g (u %.4g, g %.4g)", pt->kl,
			    pt->kl_uniform, pt->kl_global);
	}
}

void views_search(const app *a, grid *g, grid_rect r)
{
	const app_search *s = &a->search;
	int h = panel_rows(s->n_points) + 2;
	if (h > r.h)
		h = r.h;
	if (h < 4 || r.w < 30)
		return;
	const grid_rect box = {r.x, r.y + r.h - h, r.w, h};
	grid_fill(g, box, ' ', GRID_EL_DIALOG, 0);
	grid_box(g, box, GRID_EL_FRAME);
	grid_text(g, box.x + 2, box.y, box.w - 4, " Budget search ", GRID_EL_TITLE, 0);
	grid_clip(g, (grid_rect){box.x + 1, box.y + 1, box.w - 2, box.h - 2});
	const int x = box.x + 2, w = box.w - 4;
	int y = box.y + 1;
	const int total = a->n_blocks * a->E;
	if (s->in_flight)
		grid_printf(g, x, y++, w, GRID_EL_PROGRESS, 0, "searching %d of %d experts ... (S cancels)", s->keep,
			    total);
	else if (s->error[0])
		grid_printf(g, x, y++, w, GRID_EL_ERROR, 0, "failed: %s", s->error);
	else if (!s->have)
		grid_text(g, x, y++, w, "S searches the group counts for the plan's number of experts", GRID_EL_DIM, 0);
	if (s->have) {
		int kept = 0;
		for (int b = 0; b < a->n_blocks; b++)
			kept += s->groups[b];
		grid_printf(g, x, y++, w, GRID_EL_DEFAULT, 0, "suggested: %d of %d experts, KL %.4g  ppl %.4g  top-1 %.1f%%",
			    kept, total, s->kl, s->ppl, 100.0 * s->top1);
		grid_printf(g, x, y++, w, GRID_EL_DIM, 0, "uniform (%d) KL %.4g   global (%d) KL %.4g   proxy~KL %.2f",
			    s->kept_uniform, s->kl_uniform, s->kept_global, s->kl_global, s->spearman);
		char line[512];
		int n = snprintf(line, sizeof line, "G by block:");
		for (int b = 0; b < a->n_blocks && n > 0 && (size_t)n < sizeof line; b++)
			n += snprintf(line + n, sizeof line - (size_t)n, " %d", s->groups[b]);
		grid_text(g, x, y++, w, line, GRID_EL_DEFAULT, 0);
		const int b = a->block;
		grid_printf(g, x, y++, w, GRID_EL_SELECTED, 0, "block %s: G %d now, %d suggested", a->m->blocks[b].label,
			    a->cur.groups[b], s->groups[b]);
		grid_text(g, x, y++, w, "p: apply to this block  P: every block  u: undo  v: SVG  x: hide", GRID_EL_STATUS_KEY,
			  0);
	}
	if (s->n_points > 0 && y + 1 < box.y + box.h - 1)
		chart(a, g, x, y, w);
	grid_unclip(g);
}
