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

/* The cursor at the top of the current view's list: another block's list starts from its first row (its most
 * used expert in the usage order), as a file manager entering a directory does. */
void app_cursor_top(app *a)
{
	int order[a->E];
	app_expert_order(a, a->block, app_view_order(a), order);
	a->expert = order[0];
	a->heat_row = order[0];
}

static unsigned select_block(app *a, int b)
{
	if (b < 0)
		b = 0;
	if (b >= a->n_blocks)
		b = a->n_blocks - 1;
	if (b != a->block) {
		a->block = b;
		app_cursor_top(a);
	}
	return KEYS_REDRAW;
}

unsigned app_act_block_next(app *a) { return select_block(a, a->block + 1); }
unsigned app_act_block_prev(app *a) { return select_block(a, a->block - 1); }
unsigned app_act_block_first(app *a) { return select_block(a, 0); }
unsigned app_act_block_last(app *a) { return select_block(a, a->n_blocks - 1); }

/* A view opens at the top of its list (the groups view at group 0, not inside whichever group holds the expert
 * the last view's cursor was on). */
static unsigned select_view(app *a, int v)
{
	v = (v + APP_VIEW_COUNT) % APP_VIEW_COUNT;
	if (v != (int)a->view) {
		a->view = (app_view)v;
		app_cursor_top(a);
	}
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

/* Rows a page of the view's list moves: the body's height less its title lines. */
static int page_rows(const app *a)
{
	const int rows = a->g.h - views_header_rows(a, a->g.w) - 5;
	return rows > 1 ? rows : 1;
}

/* Moves the list cursor of the current view (the heatmap's row cursor there) by delta rows. */
static unsigned move_cursor(app *a, int delta)
{
	int *cur = a->view == APP_VIEW_HEATMAP ? &a->heat_row : &a->expert;
	*cur = step_expert(a, *cur, delta);
	return KEYS_REDRAW;
}

unsigned app_act_page_down(app *a) { return move_cursor(a, page_rows(a)); }
unsigned app_act_page_up(app *a) { return move_cursor(a, -page_rows(a)); }
unsigned app_act_list_first(app *a) { return move_cursor(a, -a->E); }
unsigned app_act_list_last(app *a) { return move_cursor(a, a->E); }
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

/* The global allocation gives each block its own G around the average (MC-SMoE): the message says what each got,
 * so that a jump in the selected block's G is explained. */
static unsigned global_groups(app *a, int avg)
{
	if (!can_plan_at_all(a))
		return 0;
	if (avg < 1 || avg > a->E) {
		snprintf(a->message, sizeof a->message, "average G must be 1..%d", a->E);
		a->message_error = 1;
		return 0;
	}
	if (app_plan_global(a, avg) != 0)
		return 0;
	int n = snprintf(a->message, sizeof a->message, "average G %d (MC-SMoE allocation by usage and similarity): G =",
			 avg);
	for (int b = 0; b < a->n_blocks && n > 0 && (size_t)n < sizeof a->message - 8; b++)
		n += snprintf(a->message + n, sizeof a->message - (size_t)n, " %d", a->cur.groups[b]);
	a->message_error = 0;
	return KEYS_REDRAW;
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

/* Weighting, alignment and compression (w, a, r, [ and ]) are undoable too: they change what the commit writes. */
unsigned app_act_weighting(app *a)
{
	app_push_undo(a);
	a->mo.weighting = (merge_weighting)((a->mo.weighting + 1) % MERGE_WEIGHTING_COUNT);
	return KEYS_REEVAL;
}

/* Layout, router and format are undoable like a plan change: they decide what the commit writes and what the
 * header's totals say. */
unsigned app_act_layout(app *a)
{
	app_push_undo(a);
	a->mo.layout = (pipe_layout)((a->mo.layout + 1) % PIPE_LAYOUT_COUNT);
	note(a, a->mo.layout == PIPE_LAYOUT_COMPACT ? "layout compact: E' experts per block, router rows rewritten"
						    : "layout aliased: members store their group's merge; size unchanged");
	return KEYS_REEVAL;
}

/* Without calibration lse-fit has no tokens to fit on. */
unsigned app_act_router(app *a)
{
	app_push_undo(a);
	do
		a->mo.router = (rfit_method)((a->mo.router + 1) % RFIT_METHOD_COUNT);
	while (!a->cal && a->mo.router == RFIT_LSE_FIT);
	char text[160];
	snprintf(text, sizeof text, "router %s: %s", rfit_method_name(a->mo.router), rfit_method_help[a->mo.router]);
	note(a, text);
	return KEYS_REEVAL;
}

unsigned app_act_format(app *a)
{
	app_push_undo(a);
	a->format = (mrun_format)((a->format + 1) % MRUN_FORMAT_COUNT);
	note(a, a->format == MRUN_FORMAT_DENSE ? "format dense: compressed matrices written full size (loads anywhere)"
					       : "format factors: U, V and a sparse residual (smaller; needs a loader)");
	return KEYS_REDRAW;
}

unsigned app_act_command(app *a)
{
	app_open_prompt(a, APP_PROMPT_COMMAND, "");
	return KEYS_REDRAW;
}

/* Reads a whole decimal number 1..max from s; -1 for anything else. */
static int whole_number(const char *s, int max)
{
	while (*s == ' ')
		s++;
	long v = 0;
	int digits = 0;
	for (; *s >= '0' && *s <= '9' && v <= max; s++, digits++)
		v = v * 10 + (*s - '0');
	while (*s == ' ')
		s++;
	return digits && !*s && v >= 1 && v <= max ? (int)v : -1;
}

unsigned app_command(app *a, const char *text)
{
	while (*text == ' ')
		text++;
	const char cmd = *text >= '0' && *text <= '9' ? 0 : *text;
	const char *arg = cmd ? text + 1 : text;
	unsigned flags = 0;
	int v;
	if (cmd == 0 && (v = whole_number(arg, a->E)) > 0) {
		flags = set_groups(a, v);
		if (flags)
			snprintf(a->message, sizeof a->message, "block %s: G %d", a->m->blocks[a->block].label, v);
	} else if (cmd == 'g' && (v = whole_number(arg, a->E)) > 0) {
		flags = global_groups(a, v);
	} else if (cmd == 'b' && (v = whole_number(arg, a->n_blocks)) > 0) {
		flags = select_block(a, v - 1);
	} else {
		snprintf(a->message, sizeof a->message,
			 "':%s': want N (this block's G, 1..%d), g N (average G) or b N (block N, 1..%d)", text, a->E,
			 a->n_blocks);
		a->message_error = 1;
	}
	return flags | KEYS_REDRAW;
}

unsigned app_act_align(app *a)
{
	/* dominant (the default), first, none: the order the help names them */
	static const align_ref next[ALIGN_COUNT] = {[ALIGN_DOMINANT] = ALIGN_FIRST, [ALIGN_FIRST] = ALIGN_NONE,
						    [ALIGN_NONE] = ALIGN_DOMINANT};
	app_push_undo(a);
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
	app_push_undo(a);
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
	app_push_undo(a);
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
	if (!can_plan_at_all(a))
		return 0;
	const int g = a->cur.p.group[(size_t)a->block * a->E + a->expert];
	char text[96];
	if (g < 0) {
		note(a, "this expert is dropped by pruning");
		return 0;
	}
	if (a->cur.p.dominant[(size_t)a->block * a->E + a->expert]) {
		snprintf(text, sizeof text, "e%d is already the dominant of group %d", a->expert, g);
		note(a, text);
		return 0;
	}
	if (app_make_dominant(a, a->block, a->expert) != 0)
		return 0;
	snprintf(text, sizeof text, "e%d is now the dominant of group %d", a->expert, g);
	note(a, text);
	return KEYS_REDRAW;
}

unsigned app_act_undo(app *a)
{
	if (app_undo(a) != 0) {
		note(a, "nothing to undo");
		return 0;
	}
	char text[96];
	snprintf(text, sizeof text, "undone (%d more to undo, %d to redo)", a->n_undo, a->n_redo);
	note(a, text);
	return KEYS_REDRAW;
}

unsigned app_act_redo(app *a)
{
	if (app_redo(a) != 0) {
		note(a, "nothing to redo");
		return 0;
	}
	char text[96];
	snprintf(text, sizeof text, "redone (%d more to redo)", a->n_redo);
	note(a, text);
	return KEYS_REDRAW;
}

unsigned app_act_export(app *a)
{
	app_open_prompt(a, APP_PROMPT_EXPORT, a->export_path[0] ? a->export_path : "moescope_plan.csv");
	return KEYS_REDRAW;
}

unsigned app_act_import(app *a)
{
	app_open_prompt(a, APP_PROMPT_IMPORT, a->export_path[0] ? a->export_path : "moescope_plan.csv");
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
