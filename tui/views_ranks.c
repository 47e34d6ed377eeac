/* View 3: the stable rank of every expert's gate, up and down matrices before the merge, and after it: the
 * stable rank of the merged expert the member maps to (computed by the worker on the merged block). MC-SMoE
 * observes that merging lowers stable rank, which is what makes merged experts compress further. */
#include <math.h>
#include <stdio.h>

#include "tui/views.h"

/* The "after" stable rank of matrix mat for expert e: its group's merged expert, the same as before when the
 * block is not merged, NAN while the evaluation is pending or when the expert is dropped. */
static double after_rank(const app *a, int e, int mat, const double *before)
{
	const int b = a->block;
	const int grp = a->cur.p.group[(size_t)b * a->E + e];
	if (grp < 0)
		return NAN;
	if (app_plan_is_identity(&a->cur.p, b))
		return before[(size_t)e * MDL_NMAT + mat];
	const app_eval *ev = &a->eval[b];
	if (ev->state != APP_EVAL_DONE || !ev->merged_srank || grp >= ev->groups)
		return NAN;
	return ev->merged_srank[(size_t)grp * MDL_NMAT + mat];
}

static void rank_row(const app *a, grid *g, grid_rect r, int e, int y, const double *before)
{
	const int grp = a->cur.p.group[(size_t)a->block * a->E + e];
	const int sel = e == a->expert;
	char line[160], cell[16], gcell[16] = "-";
	if (grp >= 0)
		snprintf(gcell, sizeof gcell, "%d", grp);
	int n = snprintf(line, sizeof line, "e%-5d %3s", e, gcell);
	for (int m = 0; m < MDL_NMAT; m++) {
		views_format_number(before[(size_t)e * MDL_NMAT + m], 1, cell, sizeof cell);
		n += snprintf(line + n, sizeof line - (size_t)n, " %6s", cell);
	}
	n += snprintf(line + n, sizeof line - (size_t)n, "  ");
	for (int m = 0; m < MDL_NMAT; m++) {
		views_format_number(after_rank(a, e, m, before), 1, cell, sizeof cell);
		n += snprintf(line + n, sizeof line - (size_t)n, " %6s", cell);
	}
	grid_put(g, r.x, y, sel ? g->gl->pointer : ' ', GRID_EL_DEFAULT, 0);
	grid_text(g, r.x + 1, y, r.w - 1, line, grp < 0 ? GRID_EL_DIM : GRID_EL_DEFAULT, 0);
	if (sel)
		grid_paint(g, (grid_rect){r.x + 1, y, 4, 1}, GRID_EL_SELECTED, 0);
}

/* The means over the kept experts, before and after, and the pending state. */
static void rank_summary(const app *a, grid *g, grid_rect r, int y, const double *before)
{
	double sb[MDL_NMAT] = {0}, sa[MDL_NMAT] = {0};
	int n = 0;
	for (int e = 0; e < a->E; e++) {
		if (a->cur.p.group[(size_t)a->block * a->E + e] < 0)
			continue;
		for (int m = 0; m < MDL_NMAT; m++) {
			sb[m] += before[(size_t)e * MDL_NMAT + m];
			sa[m] += after_rank(a, e, m, before);
		}
		n++;
	}
	char line[160], cell[16];
	int len = snprintf(line, sizeof line, "%-10s", "mean");
	for (int m = 0; m < MDL_NMAT; m++) {
		views_format_number(n ? sb[m] / n : NAN, 1, cell, sizeof cell);
		len += snprintf(line + len, sizeof line - (size_t)len, " %6s", cell);
	}
	len += snprintf(line + len, sizeof line - (size_t)len, "  ");
	for (int m = 0; m < MDL_NMAT; m++) {
		views_format_number(n ? sa[m] / n : NAN, 1, cell, sizeof cell);
		len += snprintf(line + len, sizeof line - (size_t)len, " %6s", cell);
	}
	grid_text(g, r.x + 1, y, r.w - 1, line, GRID_EL_TITLE, 0);
	/* a stable rank lies in 1..min(rows, cols): its ceiling says how far from full rank a value is */
	len = snprintf(line, sizeof line, "%-10s", "ceiling");
	for (int m = 0; m < MDL_NMAT; m++) {
		const st_tensor *t = a->m->blocks[a->block].experts[m];
		if (t && t->ndim == 2)
			len += snprintf(line + len, sizeof line - (size_t)len, " %6lld",
					(long long)(t->shape[0] < t->shape[1] ? t->shape[0] : t->shape[1]));
		else
			len += snprintf(line + len, sizeof line - (size_t)len, " %6s", "-");
	}
	snprintf(line + len, sizeof line - (size_t)len, "   = min(rows, cols)");
	grid_text(g, r.x + 1, y + 1, r.w - 1, line, GRID_EL_DIM, 0);
	if (a->eval[a->block].state == APP_EVAL_PENDING)
		grid_text(g, r.x + 1, y + 2, r.w - 1, "after: evaluating the merge...", GRID_EL_DIM, 0);
}

void views_ranks(const app *a, grid *g, grid_rect r)
{
	const int b = a->block, E = a->E;
	char title[160];
	snprintf(title, sizeof title, "Stable ranks of block %s, before and after the merge", a->m->blocks[b].label);
	grid_rect body = views_title(g, r, title);
	const char *wait = views_waiting(a, b, APP_HAVE_SRANK);
	if (wait) {
		grid_text(g, body.x, body.y, body.w, wait, GRID_EL_DIM, 0);
		return;
	}
	const double *before = a->stats[b].stable_rank;
	/* primed names: the merged expert's matrices */
	char head[160];
	snprintf(head, sizeof head, "expert grp %6s %6s %6s   %6s %6s %6s", "gate", "up", "down", "gate'", "up'",
		 "down'");
	grid_text(g, body.x + 1, body.y, body.w - 1, head, GRID_EL_LABEL, GRID_UNDERLINE);
	const int rows = body.h - 4;
	const int first = views_scroll(E, rows, a->expert);
	for (int i = 0; i < rows && first + i < E; i++)
		rank_row(a, g, body, first + i, body.y + 1 + i, before);
	views_scroll_marks(g, r, first, rows, E);
	const int shown = rows < E ? rows : E;
	rank_summary(a, g, body, body.y + 1 + (shown > 0 ? shown : 0), before);
}
