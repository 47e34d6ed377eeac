/* The actions of the key table (tui/keys.c). Each changes the state and returns what follows from the change
 * (KEYS_REPLAN, KEYS_REEVAL, KEYS_QUIT); app_key does the rest and redraws. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "tui/app.h"
#include "tui/views.h"

static void note(app *a, const char *text)
{
	snprintf(a->message, sizeof a->message, "%s", text);
	a->message_error = 0;
}

static unsigned select_block(app *a, int b)
{
	if (b < 0)
		b = 0;
	if (b >= a->n_blocks)
		b = a->n_blocks - 1;
	a->block = b;
	return KEYS_REDRAW;
}

unsigned app_act_block_next(app *a) { return select_block(a, a->block + 1); }
unsigned app_act_block_prev(app *a) { return select_block(a, a->block - 1); }
unsigned app_act_block_first(app *a) { return select_block(a, 0); }
unsigned app_act_block_last(app *a) { return select_block(a, a->n_blocks - 1); }

static unsigned select_view(app *a, int v)
{
	a->view = (app_view)((v + APP_VIEW_COUNT) % APP_VIEW_COUNT);
	return KEYS_REDRAW;
}

unsigned app_act_view_next(app *a) { return select_view(a, (int)a->view + 1); }
unsigned app_act_view_prev(app *a) { return select_view(a, (int)a->view - 1); }
#define VIEW_ACTION(id, title, draw, key, name, help) \
	unsigned app_act_##draw(app *a) { return select_view(a, id); }
APP_VIEW_TABLE(VIEW_ACTION)
#undef VIEW_ACTION

/* The expert `delta` rows from e in the order the current view lists them (the neighbour on screen). */
static int step_expert(const app *a, int e, int delta)
{
	int order[a->E], pos = 0;
	app_expert_order(a, a->block, app_view_order(a), order);
	while (pos < a->E - 1 && order[pos] != e)
		pos++;
	pos += delta;
	return order[pos < 0 ? 0 : pos >= a->E ? a->E - 1 : pos];
}

unsigned app_act_expert_next(app *a) { a->expert = step_expert(a, a->expert, +1); return KEYS_REDRAW; }
unsigned app_act_expert_prev(app *a) { a->expert = step_expert(a, a->expert, -1); return KEYS_REDRAW; }
unsigned app_act_heat_down(app *a) { a->heat_row = step_expert(a, a->heat_row, +1); return KEYS_REDRAW; }
unsigned app_act_heat_up(app *a) { a->heat_row = step_expert(a, a->heat_row, -1); return KEYS_REDRAW; }

unsigned app_act_order(app *a)
{
	if (a->view == APP_VIEW_HEATMAP)
		a->heat_by_group = !a->heat_by_group;
	else
		a->usage_by_index = !a->usage_by_index;
	return KEYS_REDRAW;
}

/* Planning needs usage frequencies, which only a calibration set gives. */
static int can_plan_at_all(app *a)
{
	if (a->cal)
		return 1;
	note(a, "planning needs a calibration set (usage unknown); a plan can still be imported");
	a->message_error = 1;
	return 0;
}

static unsigned set_groups(app *a, int G)
{
	if (!can_plan_at_all(a))
		return 0;
	const int b = a->block;
	if (G < 1 || G > a->E || (G == a->cur.groups[b] && !a->cur.edited[b]))
		return 0;
	app_push_undo(a);
	a->cur.groups[b] = G;
	a->cur.edited[b] = 0;
	if (!app_can_plan(a, b))
		note(a, "the block's plan follows when its statistics are in");
	return KEYS_REPLAN;
}

unsigned app_act_groups_up(app *a) { return set_groups(a, a->cur.groups[a->block] + 1); }
unsigned app_act_groups_down(app *a) { return set_groups(a, a->cur.groups[a->block] - 1); }

static int average_groups(const app *a)
{
	double sum = 0;
	for (int b = 0; b < a->n_blocks; b++)
		sum += a->cur.groups[b];
	return (int)lround(sum / a->n_blocks);
}

static unsigned global_groups(app *a, int avg)
{
	if (!can_plan_at_all(a) || avg < 1 || avg > a->E)
		return 0;
	return app_plan_global(a, avg) == 0 ? KEYS_REDRAW : 0;
}

unsigned app_act_global_up(app *a) { return global_groups(a, average_groups(a) + 1); }
unsigned app_act_global_down(app *a) { return global_groups(a, average_groups(a) - 1); }

/* A settings change that remakes every grouping not set by hand, undoable like a G change. */
static unsigned replan_setting(app *a, void (*change)(app *))
{
	app_push_undo(a);
	change(a);
	for (int b = 0; b < a->n_blocks; b++)
		a->cur.edited[b] = 0;
	return KEYS_REPLAN;
}

static void next_method(app *a)
{
	a->cur.method = (grp_method)((a->cur.method + 1) % GRP_METHOD_COUNT);
}

/* Without calibration only the bases the weights give can be computed. */
static void next_base(app *a)
{
	do
		a->cur.base = (sim_base)((a->cur.base + 1) % SIM_BASE_COUNT);
	while (!a->cal && sim_base_needs_calibration(a->cur.base));
}

unsigned app_act_method(app *a)
{
	if (!can_plan_at_all(a))
		return 0;
	return replan_setting(a, next_method);
}

unsigned app_act_base(app *a)
{
	/* The heatmap shows the base too, so it cycles even when nothing can be planned. */
	if (!a->cal) {
		next_base(a);
		app_request_stats(a, -1);
		return KEYS_REDRAW;
	}
	return replan_setting(a, next_base);
}

unsigned app_act_weighting(app *a)
{
	a->mo.weighting = (merge_weighting)((a->mo.weighting + 1) % MERGE_WEIGHTING_COUNT);
	return KEYS_REEVAL;
}

unsigned app_act_align(app *a)
{
	/* dominant (the default), first, none: the order the help names them */
	static const align_ref next[ALIGN_COUNT] = {[ALIGN_DOMINANT] = ALIGN_FIRST, [ALIGN_FIRST] = ALIGN_NONE,
						    [ALIGN_NONE] = ALIGN_DOMINANT};
	a->mo.align = next[a->mo.align];
	return KEYS_REEVAL;
}

/* Threshold steps per compression mode: energy kept, multiples of the stable rank, fixed ranks. */
static const double energy_steps[] = {0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.999};
static const double stable_steps[] = {0.5, 1, 1.5, 2, 3, 4, 6, 8};
static const int rank_steps[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
#define N_OF(x) ((int)(sizeof(x) / sizeof(x)[0]))

int app_rank_steps(cmp_rank_mode mode)
{
	switch (mode) {
	case CMP_RANK_ENERGY: return N_OF(energy_steps);
	case CMP_RANK_STABLE: return N_OF(stable_steps);
	case CMP_RANK_FIXED: return N_OF(rank_steps);
	default: return 0;
	}
}

void app_apply_rank_step(app *a)
{
	cmp_options *c = &a->mo.compress;
	const int n = app_rank_steps(c->mode);
	if (a->rank_step >= n)
		a->rank_step = n - 1;
	if (a->rank_step < 0)
		a->rank_step = 0;
	if (c->mode == CMP_RANK_ENERGY)
		c->energy = energy_steps[a->rank_step];
	else if (c->mode == CMP_RANK_STABLE)
		c->stable_k = stable_steps[a->rank_step];
	else if (c->mode == CMP_RANK_FIXED)
		c->rank = rank_steps[a->rank_step];
}

unsigned app_act_rank_mode(app *a)
{
	static const cmp_rank_mode next[CMP_RANK_MODE_COUNT] = {
		[CMP_RANK_NONE] = CMP_RANK_ENERGY, [CMP_RANK_ENERGY] = CMP_RANK_STABLE,
		[CMP_RANK_STABLE] = CMP_RANK_FIXED, [CMP_RANK_FIXED] = CMP_RANK_NONE,
	};
	const cmp_rank_mode old = a->mo.compress.mode;
	a->mo.compress = cmp_options_none();
	a->mo.compress.mode = next[old];
	a->rank_step = app_rank_steps(a->mo.compress.mode) / 2;
	app_apply_rank_step(a);
	return KEYS_REEVAL;
}

static unsigned rank_step(app *a, int delta)
{
	const int n = app_rank_steps(a->mo.compress.mode);
	if (n == 0) {
		note(a, "no compression: press r to choose a rank mode");
		return 0;
	}
	const int s = a->rank_step + delta;
	if (s < 0 || s >= n)
		return 0;
	a->rank_step = s;
	app_apply_rank_step(a);
	return KEYS_REEVAL;
}

unsigned app_act_rank_up(app *a) { return rank_step(a, +1); }
unsigned app_act_rank_down(app *a) { return rank_step(a, -1); }

static unsigned move_expert(app *a, int delta)
{
	if (!can_plan_at_all(a))
		return 0;
	const int b = a->block, e = a->expert;
	const int g = a->cur.p.group[(size_t)b * a->E + e];
	if (g < 0) {
		note(a, "this expert is dropped by pruning");
		return 0;
	}
	if (app_move_expert(a, b, e, g + delta) != 0)
		return 0;
	char text[96];
	snprintf(text, sizeof text, "expert %d moved to group %d", e, a->cur.p.group[(size_t)b * a->E + e]);
	note(a, text);
	return KEYS_REDRAW;
}

unsigned app_act_move_prev(app *a) { return move_expert(a, -1); }
unsigned app_act_move_next(app *a) { return move_expert(a, +1); }

unsigned app_act_dominant(app *a)
{
	if (!can_plan_at_all(a) || app_make_dominant(a, a->block, a->expert) != 0)
		return 0;
	return KEYS_REDRAW;
}

unsigned app_act_undo(app *a)
{
	if (app_undo(a) != 0) {
		note(a, "nothing to undo");
		return 0;
	}
	return KEYS_REDRAW;
}

unsigned app_act_redo(app *a)
{
	if (app_redo(a) != 0) {
		note(a, "nothing to redo");
		return 0;
	}
	return KEYS_REDRAW;
}

unsigned app_act_export(app *a)
{
	app_open_prompt(a, APP_PROMPT_EXPORT, "moescope_plan.csv");
	return KEYS_REDRAW;
}

unsigned app_act_import(app *a)
{
	app_open_prompt(a, APP_PROMPT_IMPORT, "moescope_plan.csv");
	return KEYS_REDRAW;
}

unsigned app_act_commit(app *a)
{
	app_open_commit(a);
	return KEYS_REDRAW;
}

unsigned app_act_help(app *a)
{
	a->mode = APP_MODE_HELP;
	a->help_top = 0;
	return KEYS_REDRAW;
}

unsigned app_act_quit(app *a)
{
	if (!app_dirty(a))
		return KEYS_QUIT;
	a->mode = APP_MODE_CONFIRM;
	return KEYS_REDRAW;
}

unsigned app_click(app *a, int x, int y)
{
	if (a->mode != APP_MODE_NORMAL)
		return 0;
	views_hit hit = views_hit_test(a, a->g.w, a->g.h, x, y);
	switch (hit.kind) {
	case VIEWS_HIT_TAB: return select_view(a, hit.index);
	case VIEWS_HIT_BLOCK: return select_block(a, hit.index);
	case VIEWS_HIT_CELL:
		a->heat_row = hit.row;
		a->expert = hit.col;
		return KEYS_REDRAW;
	default: return 0;
	}
}
