/* View 6: the selected block's output error under each layout and router, and with pruning by usage at the same
 * G, side by side (tui/app_compare.c evaluates them), so the choice the commit dialog used to hide is made here
 * with numbers. The row of the current settings is marked. */
#include <stdio.h>

#include "tui/views.h"

/* Whether variant v is what the current settings evaluate (its row gets the pointer). */
static int is_current(const app *a, int v)
{
	switch ((app_cmp_variant)v) {
	case APP_CMP_COMPACT_LSE: return a->mo.layout == PIPE_LAYOUT_COMPACT && a->mo.router == RFIT_LSE_FIT;
	case APP_CMP_COMPACT_MEAN: return a->mo.layout == PIPE_LAYOUT_COMPACT && a->mo.router == RFIT_MEAN;
	case APP_CMP_COMPACT_DOM: return a->mo.layout == PIPE_LAYOUT_COMPACT && a->mo.router == RFIT_DOMINANT;
	case APP_CMP_COMPACT_AUTO: return a->mo.layout == PIPE_LAYOUT_COMPACT && a->mo.router == RFIT_AUTO;
	case APP_CMP_ALIASED: return a->mo.layout == PIPE_LAYOUT_ALIASED;
	default: return 0;
	}
}

static void variant_row(const app *a, grid *g, grid_rect r, int v, int y)
{
	const app_cmp_cell *c = &a->cmp.cell[v];
	char cells[96];
	grid_element el = GRID_EL_DEFAULT;
	switch (c->state) {
	case APP_EVAL_DONE:
		snprintf(cells, sizeof cells, "%7.4f  %9.4f", c->r.rel_error, c->r.routing_agreement);
		break;
	case APP_EVAL_FAILED:
		snprintf(cells, sizeof cells, "%s", c->error);
		el = GRID_EL_ERROR;
		break;
	default:
		snprintf(cells, sizeof cells, "%7s  %9s", "...", "...");
		el = GRID_EL_DIM;
		break;
	}
	const int cur = is_current(a, v);
	grid_put(g, r.x, y, cur ? g->gl->pointer : ' ', GRID_EL_DEFAULT, 0);
	grid_printf(g, r.x + 1, y, 24, cur ? GRID_EL_SELECTED : GRID_EL_LABEL, 0, "%-24s", app_cmp_labels[v]);
	grid_text(g, r.x + 26, y, r.w - 26, cells, el, 0);
}

void views_compare(const app *a, grid *g, grid_rect r)
{
	const int b = a->block;
	char title[160];
	snprintf(title, sizeof title, "Compare block %s at G %d", a->m->blocks[b].label, plan_groups(&a->cur.p, b));
	grid_rect body = views_title(g, r, title);
	const char *why = !a->cal ? "no calibration set: nothing can be evaluated"
			  : app_plan_is_identity(&a->cur.p, b) ? "block not merged (G = E): lower G to compare"
			  : a->cmp.block != b ? "waiting for the block's evaluation..." : NULL;
	if (why) {
		grid_text(g, body.x, body.y, body.w, why, GRID_EL_DIM, 0);
		return;
	}
	grid_printf(g, body.x + 1, body.y, body.w - 1, GRID_EL_LABEL, GRID_UNDERLINE, "%-24s %7s  %9s", "layout, router",
		    "error", "agreement");
	for (int v = 0; v < APP_CMP_COUNT; v++)
		variant_row(a, g, body, v, body.y + 1 + v);
	int y = body.y + 2 + APP_CMP_COUNT;
	grid_text(g, body.x, y++, body.w, "error: |y - y'| / |y| on the calibration tokens; agreement: tokens whose",
		  GRID_EL_DIM, 0);
	grid_text(g, body.x, y++, body.w, "groups are unchanged. Marked: the current settings (L, R change them)", GRID_EL_DIM, 0);
}
