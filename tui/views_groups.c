/* View 4: the groups of the selected block: each group's members with the weight each gets in the merge
 * (analysis/merge.h's merge_coefficients under the chosen weighting), its usage and its similarity to the
 * dominant. '<' and '>' move the expert under the cursor between groups. */
#include <stdio.h>

#include "tui/views.h"

typedef struct {
	int group;   /* -1: the dropped experts */
	int expert;  /* -1: the group's heading */
} group_line;

/* Members of group g in the group order (dominant first), their frequencies, and the dominant's position. */
static int members_of(const app *a, int g, const int *order, int *members, double *freq, int *dom)
{
	const int b = a->block, E = a->E;
	const double *f = a->cur.p.frequency + (size_t)b * E;
	int n = 0;
	*dom = 0;
	for (int i = 0; i < E; i++) {
		int e = order[i];
		if (a->cur.p.group[(size_t)b * E + e] != g)
			continue;
		if (a->cur.p.dominant[(size_t)b * E + e])
			*dom = n;
		freq[n] = f[e] >= 0 ? f[e] : 0;
		members[n++] = e;
	}
	return n;
}

static void group_heading(const app *a, grid *g, grid_rect r, int y, int grp, const int *order)
{
	int members[a->E], dom;
	double freq[a->E];
	if (grp < 0) {
		grid_text(g, r.x + 1, y, r.w - 1, "dropped", GRID_EL_DIM, GRID_BOLD);
		return;
	}
	int n = members_of(a, grp, order, members, freq, &dom);
	double total = 0;
	for (int i = 0; i < n; i++)
		total += freq[i];
	grid_printf(g, r.x + 1, y, r.w - 1, grid_group_element(grp), GRID_BOLD,
		    "group %d: %d member%s, dominant e%d, usage %.2f%%", grp, n, n == 1 ? "" : "s", n ? members[dom] : -1,
		    100.0 * total);
}

static void member_line(const app *a, grid *g, grid_rect r, int y, int grp, int e, const int *order)
{
	const int b = a->block, E = a->E;
	const size_t i = (size_t)b * E + e;
	const int sel = e == a->expert;
	char weight[16] = "", sim[16];
	if (grp >= 0) {
		int members[E], dom;
		double freq[E], coef[E];
		int n = members_of(a, grp, order, members, freq, &dom);
		if (n > 0 && merge_coefficients(n, freq, dom, a->mo.weighting, coef) == MS_OK)
			for (int k = 0; k < n; k++)
				if (members[k] == e)
					snprintf(weight, sizeof weight, "%.4f", coef[k]);
	}
	views_format_number(a->cur.p.similarity[i], 4, sim, sizeof sim);
	grid_put(g, r.x, y, sel ? g->gl->pointer : ' ', GRID_EL_DEFAULT, 0);
	grid_printf(g, r.x + 3, y, 4, sel ? GRID_EL_SELECTED : GRID_EL_LABEL, 0, "e%-3d", e);
	if (a->cur.p.dominant[i])
		grid_put(g, r.x + 8, y, g->gl->dominant, grid_group_element(grp), GRID_BOLD);
	grid_printf(g, r.x + 10, y, r.w - 10, GRID_EL_DEFAULT, 0, "weight %-7s usage %6.2f%%  sim %s", weight[0] ? weight : "-",
		    100.0 * a->cur.p.frequency[i], sim);
}

/* Every line the view has: a heading per group then its members, the dropped experts last. */
static int build_lines(const app *a, const int *order, group_line *lines)
{
	const int b = a->block, E = a->E;
	const int G = plan_groups(&a->cur.p, b);
	int n = 0, dropped = 0;
	for (int grp = 0; grp < G; grp++) {
		lines[n++] = (group_line){grp, -1};
		for (int i = 0; i < E; i++)
			if (a->cur.p.group[(size_t)b * E + order[i]] == grp)
				lines[n++] = (group_line){grp, order[i]};
	}
	for (int i = 0; i < E; i++)
		if (a->cur.p.group[(size_t)b * E + order[i]] < 0) {
			if (!dropped++)
				lines[n++] = (group_line){-1, -1};
			lines[n++] = (group_line){-1, order[i]};
		}
	return n;
}

void views_groups(const app *a, grid *g, grid_rect r)
{
	const int b = a->block, E = a->E;
	char title[160];
	snprintf(title, sizeof title, "Groups of block %s: G %d, weighting %s", a->m->blocks[b].label,
		 plan_groups(&a->cur.p, b), merge_weighting_name(a->mo.weighting));
	grid_rect body = views_title(g, r, title);
	if (!a->cal && app_plan_is_identity(&a->cur.p, b))
		grid_text(g, body.x, body.y++, body.w, "no calibration set: import a plan (i) to group experts", GRID_EL_DIM,
			  0);
	int order[E];
	app_expert_order(a, b, APP_ORDER_GROUP, order);
	group_line lines[2 * E + 1];
	const int n = build_lines(a, order, lines);
	int cursor = 0;
	for (int i = 0; i < n; i++)
		if (lines[i].expert == a->expert)
			cursor = i;
	const int rows = body.h - 1;
	const int first = views_scroll(n, rows, cursor);
	for (int i = 0; i < rows && first + i < n; i++) {
		const group_line *l = &lines[first + i];
		if (l->expert < 0)
			group_heading(a, g, body, body.y + i, l->group, order);
		else
			member_line(a, g, body, body.y + i, l->group, l->expert, order);
	}
	views_scroll_marks(g, r, first, rows, n);
	grid_text(g, body.x, body.y + body.h - 1, body.w, "< > move to another group, d makes dominant",
		  GRID_EL_DIM, 0);
}
