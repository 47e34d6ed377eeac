/* View 1: how often each expert of the selected block is routed to, as bars coloured by group, the dominant
 * of each group marked; sorted by usage or by index. */
#include <stdio.h>

#include "tui/views.h"

/* One expert: pointer, name, bar, "42.58% g10" right-aligned before the dominant's column, which nothing else
 * writes into (at 40 columns a bar has no room and the text must not run under the mark). */
static void usage_row(const app *a, grid *g, grid_rect r, int e, int y, double top)
{
	const int b = a->block, E = a->E;
	const double f = a->stats[b].frequency[e];
	const int grp = a->cur.p.group[(size_t)b * E + e];
	const int dom = a->cur.p.dominant[(size_t)b * E + e];
	const int sel = e == a->expert;
	int gw = 1;
	for (int v = E - 1; v >= 10 && gw < 4; v /= 10)
		gw++;
	const int star = r.x + r.w - 1, room = star - 1 - (r.x + 6);
	/* aligned columns when they fit, else the same figures without padding, else fewer decimals */
	char tail[64];
	for (int form = 0; form < 3; form++) {
		const double pct = 100.0 * f;
		if (grp < 0)
			snprintf(tail, sizeof tail, form == 0 ? "%6.2f%% dropped" : form == 1 ? "%.2f%% dropped" : "%.0f%% drop",
				 pct);
		else if (form == 0) {
			int n = snprintf(tail, sizeof tail, "%6.2f%% g%d", pct, grp % 10000);
			for (int v = grp, d = 1; n > 0 && n < (int)sizeof tail - 1; d++, v /= 10)
				if (v < 10 && d >= gw)
					break;
				else if (v < 10)
					tail[n++] = ' ', tail[n] = '\0';  /* pads "g3" to the width of "g63" */
		} else
			snprintf(tail, sizeof tail, form == 1 ? "%.2f%% g%d" : "%.0f%% g%d", pct, grp % 10000);
		if (grid_text_width(tail) <= room)
			break;
	}
	const int tw = grid_text_width(tail);
	int tx = star - 1 - tw;
	if (tx < r.x + 6)
		tx = r.x + 6;
	const int bar_w = tx - 1 - (r.x + 6);
	grid_put(g, r.x, y, sel ? g->gl->pointer : ' ', GRID_EL_DEFAULT, 0);
	grid_printf(g, r.x + 1, y, 4, sel ? GRID_EL_SELECTED : GRID_EL_LABEL, 0, "e%-3d", e);
	if (bar_w > 0)
		grid_hbar(g, r.x + 6, y, bar_w, top > 0 ? f / top : 0, grid_group_element(grp));
	grid_text(g, tx, y, star - 1 - tx, tail, grp < 0 ? GRID_EL_DIM : GRID_EL_DEFAULT, 0);
	if (dom)
		grid_put(g, star, y, g->gl->dominant, grid_group_element(grp), GRID_BOLD);
}

void views_usage(const app *a, grid *g, grid_rect r)
{
	const int b = a->block, E = a->E;
	const pipe_stats *s = &a->stats[b];
	char title[160];
	snprintf(title, sizeof title, "Usage of block %s, by %s", a->m->blocks[b].label,
		 a->usage_by_index ? "index" : "usage");
	grid_rect body = views_title(g, r, title);
	const char *wait = views_waiting(a, b, APP_HAVE_ROUTING);
	if (wait) {
		grid_text(g, body.x, body.y, body.w, wait, GRID_EL_DIM, 0);
		return;
	}
	int x = body.x + grid_printf(g, body.x, body.y, body.w, GRID_EL_DIM, 0,
				     "entropy %.3f bits  cv %.3f  %lld tokens  ", s->usage_entropy, s->cv, (long long)s->T);
	grid_put(g, x, body.y, g->gl->dominant, GRID_EL_DIM, 0);
	grid_text(g, x + 1, body.y, body.x + body.w - x - 1, " dominant", GRID_EL_DIM, 0);
	int order[E];
	app_expert_order(a, b, a->usage_by_index ? APP_ORDER_INDEX : APP_ORDER_USAGE, order);
	int pos = 0;
	while (pos < E - 1 && order[pos] != a->expert)
		pos++;
	double top = 0;
	for (int e = 0; e < E; e++)
		top = s->frequency[e] > top ? s->frequency[e] : top;
	const int rows = body.h - 1;
	const int first = views_scroll(E, rows, pos);
	for (int i = 0; i < rows && first + i < E; i++)
		usage_row(a, g, body, order[first + i], body.y + 1 + i, top);
	views_scroll_marks(g, r, first, rows, E);
}
