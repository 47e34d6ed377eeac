/* The application's state: setting it up and tearing it down, taking in the worker's results, dispatching keys
 * through the key table. */
#include <stdlib.h>
#include <string.h>

#include "tui/app.h"
#include "tui/views.h"

const char *const app_view_names[APP_VIEW_COUNT] = {
#define VIEW_TITLE(id, title, draw, key, name, help) [id] = title,
	APP_VIEW_TABLE(VIEW_TITLE)
#undef VIEW_TITLE
};

const grid_scheme *app_choose_scheme(int mono_flag, int colours)
{
	const char *no_color = getenv("NO_COLOR");
	if (mono_flag || (no_color && no_color[0]) || colours < 8)
		return &grid_scheme_mono;
	return colours >= 256 ? &grid_scheme_color256 : &grid_scheme_color8;
}

static int alloc_state(app *a)
{
	const int n = a->n_blocks;
	const char **labels = mdl_block_labels(a->m);
	int rc = labels ? plan_init(&a->cur.p, n, a->E, labels) : -1;
	if (rc == 0)
		rc = plan_init(&a->saved, n, a->E, labels);
	free(labels);
	a->stats = calloc((size_t)n, sizeof *a->stats);
	a->have = calloc((size_t)n, sizeof *a->have);
	a->asked = calloc((size_t)n, sizeof *a->asked);
	a->stats_error = calloc((size_t)n, sizeof *a->stats_error);
	a->eval = calloc((size_t)n, sizeof *a->eval);
	a->cur.groups = malloc((size_t)n * sizeof *a->cur.groups);
	a->cur.edited = calloc((size_t)n, 1);
	if (rc != 0 || !a->stats || !a->have || !a->asked || !a->stats_error || !a->eval || !a->cur.groups ||
	    !a->cur.edited)
		return -1;
	for (int b = 0; b < n; b++)
		a->cur.groups[b] = a->E;
	return 0;
}

int app_init(app *a, const mdl_model *m, const calib *cal, const app_config *cfg, ms_error *err)
{
	memset(a, 0, sizeof *a);
	a->m = m;
	a->cal = cal;
	a->cfg = *cfg;
	a->lock_fd = -1;
	a->cmp.block = -1;
	if (a->cfg.eval_tokens <= 0)
		a->cfg.eval_tokens = 2048;
	a->n_blocks = m->n_blocks;
	a->E = m->n_experts;
	a->cur.method = GRP_MSMOE;
	a->cur.base = cal ? SIM_ROUTER_LOGITS : SIM_ROUTER_WEIGHT;
	a->linkage = GRP_LINK_AVERAGE;
	a->mo = pipe_merge_defaults();
	if (!cal)
		a->mo.router = RFIT_MEAN;  /* lse-fit fits on calibration tokens there are none of */
	a->scheme = &grid_scheme_mono;
	if (a->n_blocks <= 0 || a->E <= 0) {
		ms_fail(err, MS_ERR_ARG, "%s: the model has no MoE block", m->dir);
		return -1;
	}
	if (alloc_state(a) != 0 ||
	    grid_init(&a->g, cfg->width, cfg->height, cfg->ascii ? &grid_glyphs_ascii : &grid_glyphs_utf8) != 0) {
		app_free(a);
		ms_fail(err, MS_ERR_NOMEM, "out of memory setting up the screen");
		return -1;
	}
	a->w = worker_start(m, cal, cfg->commit);
	if (!a->w) {
		app_free(a);
		ms_fail(err, MS_ERR_NOMEM, "cannot start the worker thread");
		return -1;
	}
	app_request_stats(a, -1);
	if (cfg->autosave)
		app_autosave_open(a);
	app_model_open(a);
	return 0;
}

void app_free(app *a)
{
	worker_stop(a->w);
	a->w = NULL;
	app_search_free(a);   /* its cache was the worker's */
	app_model_free(a);
	for (int b = 0; a->stats && b < a->n_blocks; b++)
		pipe_free_stats(&a->stats[b]);
	for (int b = 0; a->eval && b < a->n_blocks; b++) {
		free(a->eval[b].merged_srank);
		free(a->eval[b].compression);
	}
	free(a->stats);
	free(a->have);
	free(a->asked);
	free(a->stats_error);
	free(a->eval);
	app_plan_state_free(&a->cur);
	for (int i = 0; i < a->n_undo; i++)
		app_plan_state_free(&a->undo[i]);
	for (int i = 0; i < a->n_redo; i++)
		app_plan_state_free(&a->redo[i]);
	plan_free(&a->saved);
	autosave_unlock(a->autosave_path, a->lock_fd);
	if (a->restore)
		autosave_record_free(a->restore);
	free(a->restore);
	grid_free(&a->g);
	memset(a, 0, sizeof *a);
}

#define TAKE(dst, src) \
	do { \
		if (!(dst) && (src)) { \
			(dst) = (src); \
			(src) = NULL; \
		} \
	} while (0)

/* Moves the arrays a statistics result brings into the block's statistics; returns the APP_HAVE bits added. */
static unsigned merge_stats(pipe_stats *dst, work_result *r)
{
	pipe_stats *src = &r->stats;
	unsigned got = 0;
	dst->E = src->E;
	if (r->routing && !dst->frequency) {
		TAKE(dst->frequency, src->frequency);
		TAKE(dst->coact, src->coact);
		dst->T = src->T;
		dst->usage_entropy = src->usage_entropy;
		dst->cv = src->cv;
		got |= APP_HAVE_ROUTING;
	}
	for (int base = 0; base < SIM_BASE_COUNT; base++)
		if (src->similarity[base] && !dst->similarity[base]) {
			TAKE(dst->similarity[base], src->similarity[base]);
			TAKE(dst->distance[base], src->distance[base]);
			got |= APP_HAVE_BASE(base);
		}
	if (src->stable_rank && !dst->stable_rank)
		got |= APP_HAVE_SRANK;
	TAKE(dst->stable_rank, src->stable_rank);
	if (src->reap && !dst->reap)
		got |= APP_HAVE_REAP;
	TAKE(dst->reap, src->reap);
	return got;
}

/* What a statistics job was asked for, as APP_HAVE bits. */
static unsigned asked_bits(const work_result *r, int with_calib)
{
	unsigned bits = with_calib ? APP_HAVE_ROUTING : 0;
	for (int base = 0; base < SIM_BASE_COUNT; base++)
		if (r->ao.bases & (1u << base))
			bits |= APP_HAVE_BASE(base);
	if (r->ao.stable_ranks)
		bits |= APP_HAVE_SRANK;
	if (r->ao.reap)
		bits |= APP_HAVE_REAP;
	return bits;
}

static void stats_landed(app *a, work_result *r)
{
	const int b = r->block;
	a->asked[b] &= ~asked_bits(r, a->cal != NULL);
	if (r->status != MS_OK) {
		snprintf(a->stats_error[b], sizeof a->stats_error[b], "%s", r->err.msg);
		return;
	}
	const unsigned got = merge_stats(&a->stats[b], r);
	a->have[b] |= got;
	if ((got & APP_HAVE_ROUTING) && b == a->block)
		app_cursor_top(a);  /* the list is in usage order now: its first row is the most used expert */
	if (a->cur.edited[b] || !app_can_plan(a, b))
		return;
	plan before;
	if (plan_copy(&before, &a->cur.p) != 0)
		return;
	app_replan(a, b);
	app_schedule_evals(a, &before, 0);
	plan_free(&before);
}

static void eval_landed(app *a, work_result *r)
{
	if (app_compare_landed(a, r))
		return;
	app_eval *ev = &a->eval[r->block];
	if (r->gen != ev->gen)
		return;  /* an answer for a plan that has changed since */
	if (r->status != MS_OK) {
		ev->state = APP_EVAL_FAILED;
		snprintf(ev->error, sizeof ev->error, "%s", r->err.msg);
		return;
	}
	ev->state = APP_EVAL_DONE;
	ev->r = r->eval;
	ev->groups = r->groups;
	TAKE(ev->merged_srank, r->merged_srank);
	TAKE(ev->compression, r->compression);
}

int app_poll(app *a)
{
	int changed = 0;
	work_result *r;
	while ((r = worker_poll(a->w)) != NULL) {
		if (r->block >= 0 && r->block < a->n_blocks && r->kind == WORK_STATS)
			stats_landed(a, r);
		else if (r->block >= 0 && r->block < a->n_blocks && r->kind == WORK_EVAL)
			eval_landed(a, r);
		else if (r->kind == WORK_COMMIT && r->gen == a->commit_gen)
			app_commit_done(a, r);
		else if (r->kind == WORK_FORWARD)
			app_model_landed(a, r);
		else if (r->kind == WORK_SEARCH)
			app_search_landed(a, r);
		work_result_free(r);
		changed = 1;
	}
	if (changed) {
		app_compare_update(a);   /* the block's own evaluation landed: the variants beside it */
		app_autosave_update(a);  /* statistics landing may remake a block whose G the user changed */
		app_model_update(a);     /* the plan may have settled */
	}
	return changed;
}

void app_wait_idle(app *a)
{
	/* A result can queue more work (statistics landing make a plan that needs evaluating): repeat until the
	 * worker stays idle. */
	do {
		worker_wait_idle(a->w);
	} while (app_poll(a));
}

int app_resize(app *a, int w, int h)
{
	return grid_resize(&a->g, w, h);
}

void app_draw(app *a)
{
	views_draw(a, &a->g);
}

/* What follows from an action's reaction flags: new statistics to ask for, plans to remake, evaluations. */
static void react(app *a, unsigned flags)
{
	if (flags & KEYS_REPLAN) {
		plan before;
		if (plan_copy(&before, &a->cur.p) != 0)
			return;
		app_request_stats(a, -1);
		app_replan(a, -1);
		app_schedule_evals(a, &before, (flags & KEYS_REEVAL) != 0);
		plan_free(&before);
	} else if (flags & KEYS_REEVAL) {
		app_schedule_evals(a, NULL, 1);
	}
	if (flags & KEYS_QUIT)
		a->quit = 1;
}

unsigned app_key(app *a, int key)
{
	if (key == KEYS_RESIZE)
		return KEYS_REDRAW;
	a->message[0] = '\0';
	a->message_error = 0;
	unsigned flags;
	if (a->mode != APP_MODE_NORMAL) {
		flags = app_dialog_key(a, key);
	} else {
		const keys_binding *kb = keys_lookup(key, (int)a->view);
		flags = kb ? kb->action(a) : 0;
	}
	react(a, flags);
	app_compare_update(a);
	app_model_update(a);
	if (a->quit)
		app_autosave_clean(a);  /* quitting by a key is a clean exit; a signal or a crash keeps the file */
	else
		app_autosave_update(a);
	return flags | KEYS_REDRAW;
}
