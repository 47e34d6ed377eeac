/* View 5: the compression of the selected block's merged experts (the rank mode and threshold, per group and
 * matrix the rank kept, the energy kept, parameters and error, as pipe_merge_block reported them) and the
 * block's evaluation: output error, routing agreement, parameters and FLOPs before and after. */
#include <stdio.h>

#include "tui/views.h"

static const char *const mat_names[MDL_NMAT] = {"gate", "up", "down"};

static void mode_line(const app *a, grid *g, grid_rect r)
{
	const cmp_options *c = &a->mo.compress;
	switch (c->mode) {
	case CMP_RANK_ENERGY:
		grid_printf(g, r.x, r.y, r.w, GRID_EL_DEFAULT, 0, "rank: smallest keeping %.3g of the energy   [ ] change, r mode",
			    c->energy);
		break;
	case CMP_RANK_STABLE:
		grid_printf(g, r.x, r.y, r.w, GRID_EL_DEFAULT, 0, "rank: %.3g x the stable rank   [ ] change, r mode", c->stable_k);
		break;
	case CMP_RANK_FIXED:
		grid_printf(g, r.x, r.y, r.w, GRID_EL_DEFAULT, 0, "rank: %d   [ ] change, r mode", c->rank);
		break;
	default:
		grid_text(g, r.x, r.y, r.w, "no compression (r: energy, stable rank or fixed rank)",
			  GRID_EL_DIM, 0);
		break;
	}
}

static void eval_lines(const app *a, grid *g, grid_rect r, int y)
{
	const app_eval *ev = &a->eval[a->block];
	if (ev->state == APP_EVAL_NONE) {
		grid_text(g, r.x, y, r.w, a->cal ? "block not merged (G = E): nothing to evaluate"
						  : "no calibration set: no evaluation",
			  GRID_EL_DIM, 0);
		return;
	}
	if (ev->state == APP_EVAL_PENDING) {
		grid_text(g, r.x, y, r.w, "evaluating the merge...", GRID_EL_DIM, 0);
		return;
	}
	if (ev->state == APP_EVAL_FAILED) {
		grid_text(g, r.x, y, r.w, ev->error, GRID_EL_ERROR, 0);
		return;
	}
	char pb[16], pa[16] = "?", fb[16], fa[16];
	/* the parameters the commit writes for the block (not the evaluated block's, which may differ in layout) */
	const app_size z = app_block_size(a, a->block);
	views_format_count(z.params_before, pb, sizeof pb);
	if (z.params_after >= 0)
		views_format_count(z.params_after, pa, sizeof pa);
	views_format_count(ev->r.flops_before, fb, sizeof fb);
	views_format_count(ev->r.flops_after, fa, sizeof fa);
	grid_printf(g, r.x, y, r.w, GRID_EL_DEFAULT, 0, "output error %.4f  routing agreement %.4f", ev->r.rel_error,
		    ev->r.routing_agreement);
	grid_printf(g, r.x, y + 1, r.w, GRID_EL_DEFAULT, 0, "written %s -> %s params  FLOPs/token %s -> %s  (%lld tok)", pb,
		    pa, fb, fa, (long long)ev->r.tokens);
}

/* One line per compressed matrix of each group's merged expert (a family without a gate has two), starting so
 * that the group of the expert under the cursor is in view. */
static void matrix_rows(const app *a, grid *g, grid_rect r, int y)
{
	const app_eval *ev = &a->eval[a->block];
	if (ev->state != APP_EVAL_DONE || !ev->compression)
		return;
	grid_text(g, r.x, y++, r.w, "grp mat  rank energy params bef->aft  error", GRID_EL_LABEL, GRID_UNDERLINE);
	const int per = mdl_act_gated(a->m->act) ? MDL_NMAT : MDL_NMAT - 1, skip = MDL_NMAT - per;
	const int n = ev->groups * per, rows = r.y + r.h - y;
	const int cursor_group = a->cur.p.group[(size_t)a->block * a->E + a->expert];
	const int first = views_scroll(n, rows, cursor_group > 0 ? cursor_group * per : 0);
	for (int i = 0; i < rows && first + i < n; i++) {
		const int grp = (first + i) / per, m = (first + i) % per + skip;
		const cmp_result *c = &ev->compression[(size_t)grp * MDL_NMAT + m];
		char pb[16], pa[16];
		views_format_count((double)c->params_before, pb, sizeof pb);
		views_format_count((double)c->params_after, pa, sizeof pa);
		/* a rank above m n / (m + n) stores more than the dense matrix: said, in the warning colour */
		const int larger = c->params_after > c->params_before;
		grid_printf(g, r.x, y + i, r.w, larger ? GRID_EL_WARN : c->compressed ? grid_group_element(grp) : GRID_EL_DIM,
			    0, "%3d %-4s %5d %6.4f %6s->%-6s %6.4f%s", grp, mat_names[m], c->rank, c->energy_kept, pb, pa,
			    c->rel_error, larger ? " LARGER" : "");
	}
	views_scroll_marks(g, (grid_rect){r.x, y - 1, r.w, 1}, first, rows, n);
}

void views_compress(const app *a, grid *g, grid_rect r)
{
	char title[160];
	snprintf(title, sizeof title, "Compression of block %s's merged experts", a->m->blocks[a->block].label);
	grid_rect body = views_title(g, r, title);
	mode_line(a, g, body);
	if (a->mo.compress.mode != CMP_RANK_NONE)
		grid_text(g, body.x, body.y + 1, body.w,
			  a->format == MRUN_FORMAT_DENSE
				  ? "format dense: the commit writes full matrices, size unchanged (F: factors)"
				  : "format factors: the commit writes U, V and the residual (F: dense)",
			  GRID_EL_DIM, 0);
	eval_lines(a, g, body, body.y + 2);
	matrix_rows(a, g, body, body.y + 5);
}
