/* The per-block budget search in the application: `S` posts a search (pipeline/search.h) on the worker for the
 * current plan's number of experts, with the application's grouping method, base and merge options, on the
 * token file of the model-level verdict. It runs behind the other jobs' queue like the forward and keeps one
 * cache for the session, so a second search (another budget) re-merges only what its reference changed. Its
 * answer is a suggested plan: `p` copies the suggestion's grouping of the selected block into the plan, `P` of
 * every block, each an undoable change like a move (the block counts as edited, as an imported one does: the
 * suggestion's grouping was made from the tokens' statistics, not the calibration set's). The panel
 * (tui/views_search.c) shows the suggestion beside uniform G and the global allocation, and a chart of KL by
 * experts kept for the budgets searched so far. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/jsonfile.h"
#include "tui/app.h"

static void say(app *a, int is_error, const char *text)
{
	snprintf(a->message, sizeof a->message, "%s", text);
	a->message_error = is_error;
}

void app_search_free(app *a)
{
	app_search *s = &a->search;
	srch_cache_free(s->cache);
	plan_free(&s->p);
	free(s->groups);
	free(s->chart.cand);
	memset(s, 0, sizeof *s);
}

static int plan_kept(const plan *p)
{
	int kept = 0;
	for (int b = 0; b < p->n_blocks; b++)
		kept += plan_groups(p, b);
	return kept;
}

unsigned app_act_search(app *a)
{
	app_search *s = &a->search;
	if (s->in_flight) {
		worker_drop(a->w, WORK_SEARCH, -1);
		s->in_flight = 0;
		s->gen++;
		say(a, 0, "search cancelled");
		return KEYS_REDRAW;
	}
	if (!a->model.arch) {
		say(a, 1, a->model.enabled ? "search: the token file could not be used (see the model line)"
					   : "search: needs a token file (--tokens or --text)");
		return KEYS_REDRAW;
	}
	const int keep = plan_kept(&a->cur.p);
	if (keep >= a->n_blocks * a->E) {
		say(a, 1, "search: the plan merges nothing; lower G first, the search spends the plan's number of experts");
		return KEYS_REDRAW;
	}
	ms_error err = {0};
	if (!s->cache && srch_cache_new(a->model.arch, &a->model.tok, &s->cache, &err) != MS_OK) {
		say(a, 1, err.msg);
		return KEYS_REDRAW;
	}
	work_job j = {.kind = WORK_SEARCH, .block = -1, .gen = ++s->gen, .arch = a->model.arch, .tok = &a->model.tok,
		      .search_cache = s->cache, .search = srch_defaults()};
	j.search.po.method = a->cur.method;
	j.search.po.base = a->cur.base;
	j.search.po.linkage = a->linkage;
	j.search.mo = a->mo;
	j.search.keep = keep;
	if (worker_post(a->w, &j) != 0) {
		work_job_free(&j);
		say(a, 1, "search: out of memory");
		return KEYS_REDRAW;
	}
	s->in_flight = 1;
	s->shown = 1;
	s->keep = keep;
	s->error[0] = '\0';
	say(a, 0, "search started (S again cancels)");
	return KEYS_REDRAW;
}

/* Keeps what the figure of res needs: the scalars and the candidates without their groups (srch_chart_svg does not
 * read them). 0, or -1 when out of memory (the previous figure stays). */
static int keep_chart(app_search *s, const srch_result *res)
{
	srch_candidate *cand = malloc((size_t)(res->n_cand > 0 ? res->n_cand : 1) * sizeof *cand);
	if (!cand)
		return -1;
	for (int i = 0; i < res->n_cand; i++) {
		cand[i] = res->cand[i];
		cand[i].groups = NULL;
	}
	free(s->chart.cand);
	s->chart = (srch_result){.n_blocks = res->n_blocks, .n_experts = res->n_experts, .keep = res->keep,
				 .n_cand = res->n_cand, .cand = cand, .best = res->best, .uniform = res->uniform,
				 .global = res->global};
	return 0;
}

/* Records the search's figures at its budget in the chart (replacing an earlier point of the same budget). */
static void add_point(app_search *s, app_search_point pt)
{
	int i = 0;
	while (i < s->n_points && s->points[i].keep < pt.keep)
		i++;
	if (i < s->n_points && s->points[i].keep == pt.keep) {
		s->points[i] = pt;
		return;
	}
	if (s->n_points == APP_SEARCH_POINTS) {   /* full: the point farthest from the new one goes */
		const int drop = pt.keep - s->points[0].keep > s->points[s->n_points - 1].keep - pt.keep ? 0
													   : s->n_points - 1;
		memmove(s->points + drop, s->points + drop + 1, (size_t)(s->n_points - drop - 1) * sizeof *s->points);
		s->n_points--;
		if (drop < i)
			i--;
	}
	memmove(s->points + i + 1, s->points + i, (size_t)(s->n_points - i) * sizeof *s->points);
	s->points[i] = pt;
	s->n_points++;
}

void app_search_landed(app *a, const work_result *r)
{
	app_search *s = &a->search;
	if (!s->in_flight || r->gen != s->gen)
		return;   /* cancelled since */
	s->in_flight = 0;
	if (r->status != MS_OK) {
		snprintf(s->error, sizeof s->error, "%s", r->err.msg);
		say(a, 1, r->err.msg);
		return;
	}
	const srch_result *res = &r->search;
	int *groups = malloc((size_t)a->n_blocks * sizeof *groups);
	plan p;
	if (!groups || plan_copy(&p, &res->plan) != 0) {
		free(groups);
		say(a, 1, "search: out of memory");
		return;
	}
	memcpy(groups, res->cand[res->best].groups, (size_t)a->n_blocks * sizeof *groups);
	plan_free(&s->p);
	free(s->groups);
	s->p = p;
	s->groups = groups;
	s->have = 1;
	const srch_candidate *best = &res->cand[res->best];
	s->kl = best->kl;
	s->ppl = best->ppl;
	s->top1 = best->top1;
	s->spearman = res->spearman;
	const srch_candidate *u = res->uniform >= 0 ? &res->cand[res->uniform] : NULL;
	const srch_candidate *g = res->global >= 0 ? &res->cand[res->global] : NULL;
	s->kl_uniform = u && u->confirmed ? u->kl : NAN;
	s->kl_global = g && g->confirmed ? g->kl : NAN;
	s->kept_uniform = u ? u->kept : 0;
	s->kept_global = g ? g->kept : 0;
	add_point(s, (app_search_point){.keep = res->keep, .kl = s->kl, .kl_uniform = s->kl_uniform,
					.kl_global = s->kl_global});
	s->shown = 1;
	if (keep_chart(s, res) != 0) {
		say(a, 1, "search done, but out of memory keeping its figure");
		return;
	}
	say(a, 0, "search done: p applies the suggestion to this block, P to every block, v writes the figure");
}

unsigned app_act_search_svg(app *a)
{
	if (!a->search.chart.cand) {
		say(a, 1, a->search.in_flight ? "search: still running, no figure yet"
					      : "search: no figure yet (S starts a search)");
		return KEYS_REDRAW;
	}
	app_open_prompt(a, APP_PROMPT_SEARCH_SVG, "moescope_search.svg");
	return KEYS_REDRAW;
}

int app_search_write_svg(const app *a, const char *path, ms_error *err)
{
	if (!a->search.chart.cand) {
		ms_fail(err, MS_ERR_ARG, "no search figure yet");
		return -1;
	}
	char *svg = srch_chart_svg(&a->search.chart);
	ms_status st = svg ? jsonf_write_text(path, svg, err) : ms_fail(err, MS_ERR_NOMEM, "out of memory");
	free(svg);
	return st == MS_OK ? 0 : -1;
}

/* Whether block b of the plan already has the suggestion's grouping. */
static int block_matches(const app *a, int b)
{
	const size_t E = (size_t)a->E, at = (size_t)b * E;
	return memcmp(a->cur.p.group + at, a->search.p.group + at, E * sizeof *a->cur.p.group) == 0 &&
	       memcmp(a->cur.p.dominant + at, a->search.p.dominant + at, E) == 0;
}

/* Copies the suggestion's rows of block b into the plan. */
static void copy_block(app *a, int b)
{
	const size_t E = (size_t)a->E, at = (size_t)b * E;
	const plan *src = &a->search.p;
	plan *dst = &a->cur.p;
	memcpy(dst->group + at, src->group + at, E * sizeof *dst->group);
	memcpy(dst->dominant + at, src->dominant + at, E);
	memcpy(dst->frequency + at, src->frequency + at, E * sizeof *dst->frequency);
	memcpy(dst->similarity + at, src->similarity + at, E * sizeof *dst->similarity);
	memcpy(dst->stable_rank + at * 3, src->stable_rank + at * 3, E * 3 * sizeof *dst->stable_rank);
	a->cur.groups[b] = plan_groups(dst, b);
	a->cur.edited[b] = 1;
}

/* Applies the suggestion to block b, or to every block when b < 0, as one undoable change. */
static unsigned apply(app *a, int b)
{
	if (!a->search.have) {
		say(a, 1, a->search.in_flight ? "search: still running" : "search: no suggestion yet (S starts one)");
		return KEYS_REDRAW;
	}
	int changes = 0;
	for (int x = 0; x < a->n_blocks; x++)
		changes += (b < 0 || x == b) && !block_matches(a, x);
	if (!changes) {
		say(a, 0, b < 0 ? "the plan already has the suggestion" : "this block already has the suggestion");
		return KEYS_REDRAW;
	}
	plan before;
	if (plan_copy(&before, &a->cur.p) != 0) {
		say(a, 1, "out of memory");
		return KEYS_REDRAW;
	}
	app_push_undo(a);
	for (int x = 0; x < a->n_blocks; x++)
		if ((b < 0 || x == b) && !block_matches(a, x))
			copy_block(a, x);
	app_schedule_evals(a, &before, 0);
	plan_free(&before);
	char text[96];
	if (b < 0)
		snprintf(text, sizeof text, "suggestion applied to %d blocks (u undoes)", changes);
	else
		snprintf(text, sizeof text, "suggestion applied to block %s: G %d (u undoes)", a->m->blocks[b].label,
			 a->cur.groups[b]);
	say(a, 0, text);
	return KEYS_REDRAW;
}

unsigned app_act_search_apply(app *a)
{
	return apply(a, a->block);
}

unsigned app_act_search_apply_all(app *a)
{
	return apply(a, -1);
}

unsigned app_act_search_panel(app *a)
{
	a->search.shown = !a->search.shown;
	return KEYS_REDRAW;
}
