/* The model-level verdict: with a token file, the whole model runs forward on the worker (pipeline/forward.h) once
 * the plan has settled, the plan's merged model beside the original, and the header's model line shows the
 * perplexity of both, KL(original || merged) and the top-1 agreement, the same figures `moescope perplexity
 * --plan` prints for the plan.
 *
 * "Settled": the job is posted only when no block evaluation and no statistics are pending, so it never delays
 * the per-block errors the user is looking at (it also sits last in the worker's queue). A change of the plan or
 * of the merge options marks the figures stale and cancels the job in flight (the forward looks at the worker's
 * cancel flag before each layer); its answer, should one still come, carries an older generation and is
 * dropped, as a superseded block evaluation's is. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tui/app.h"

void app_model_open(app *a)
{
	app_model *md = &a->model;
	if (!a->cfg.tokens && !a->cfg.text)
		return;
	md->enabled = 1;
	ms_error err = {0};
	arch_model *arch = NULL;
	ms_status st = arch_open(a->m, &arch, &err);
	if (st == MS_OK)
		st = fwd_read_input(arch, a->cfg.text, a->cfg.tokens, 0, 0, &md->tok, &err);
	if (st == MS_OK)
		st = fwd_check(arch, &md->tok, &err);
	if (st != MS_OK) {
		arch_close(arch);
		tokset_free(&md->tok);
		md->failed = 1;
		snprintf(md->error, sizeof md->error, "%s", err.msg);
		snprintf(a->message, sizeof a->message, "perplexity: %s", err.msg);
		a->message_error = 1;
		return;
	}
	md->arch = arch;
}

void app_model_free(app *a)
{
	app_model *md = &a->model;
	if (md->arch)
		arch_close(md->arch);
	tokset_free(&md->tok);
	plan_free(&md->asked_plan);
	memset(md, 0, sizeof *md);
}

/* Whether no block of p merges anything: its merged model is the original. */
static int plan_merges_nothing(const plan *p)
{
	for (int b = 0; b < p->n_blocks; b++)
		if (!app_plan_is_identity(p, b))
			return 0;
	return 1;
}

/* The merge options a forward of the current plan uses: the application's, with the compact E' of the plan, as
 * `moescope perplexity --plan` sets them. */
static pipe_merge_options job_options(const app *a)
{
	pipe_merge_options mo = a->mo;
	mo.slots = a->mo.layout == PIPE_LAYOUT_COMPACT ? pipe_plan_slots(&a->cur.p) : 0;
	return mo;
}

static int same_options(const pipe_merge_options *x, const pipe_merge_options *y)
{
	const cmp_options *c = &x->compress, *d = &y->compress;
	return x->layout == y->layout && x->weighting == y->weighting && x->align == y->align &&
	       x->router == y->router && x->slots == y->slots && x->keep_factors == y->keep_factors &&
	       c->mode == d->mode && c->rank == d->rank && c->energy == d->energy && c->stable_k == d->stable_k &&
	       c->stable_rank == d->stable_rank && c->sparse_ratio == d->sparse_ratio;
}

/* Whether two plans give the same merged model: groups, dominants, and the frequencies and stable ranks the merge
 * and the compression read (the similarity column is only shown). */
static int same_merge(const plan *x, const plan *y)
{
	const size_t n = (size_t)x->n_blocks * (size_t)x->n_experts;
	return x->n_blocks == y->n_blocks && x->n_experts == y->n_experts &&
	       memcmp(x->group, y->group, n * sizeof *x->group) == 0 && memcmp(x->dominant, y->dominant, n) == 0 &&
	       memcmp(x->frequency, y->frequency, n * sizeof *x->frequency) == 0 &&
	       memcmp(x->stable_rank, y->stable_rank, n * 3 * sizeof *x->stable_rank) == 0;
}

/* Whether the current plan is the one last asked for. */
static int asked_current(const app *a)
{
	const app_model *md = &a->model;
	if (!md->asked)
		return 0;
	const int identity = plan_merges_nothing(&a->cur.p);
	if (identity || md->asked_identity)
		return identity && md->asked_identity;
	const pipe_merge_options mo = job_options(a);
	return same_options(&mo, &md->asked_mo) && same_merge(&a->cur.p, &md->asked_plan);
}

/* No block evaluation and no statistics are pending: the plan will not change by itself. */
static int settled(const app *a)
{
	for (int b = 0; b < a->n_blocks; b++)
		if (a->eval[b].state == APP_EVAL_PENDING || a->asked[b])
			return 0;
	return 1;
}

/* Records the current plan as asked for. 0 or -1 (out of memory). */
static int remember_plan(app *a, int identity)
{
	app_model *md = &a->model;
	plan_free(&md->asked_plan);
	md->asked = 0;
	md->asked_identity = identity;
	md->asked_mo = job_options(a);
	if (!identity && plan_copy(&md->asked_plan, &a->cur.p) != 0)
		return -1;
	md->asked = 1;
	return 0;
}

static void report_failure(app *a, const char *msg)
{
	app_model *md = &a->model;
	/* once per cause: the same failure for the next plan is on the model line, not again in the status line */
	if (!md->failed || strcmp(md->error, msg) != 0) {
		snprintf(a->message, sizeof a->message, "perplexity: %s", msg);
		a->message_error = 1;
	}
	md->failed = 1;
	snprintf(md->error, sizeof md->error, "%s", msg);
}

/* Posts the forward of the current plan (of the original alone when the plan merges nothing). */
static void post_forward(app *a, int identity)
{
	app_model *md = &a->model;
	if (remember_plan(a, identity) != 0) {
		report_failure(a, "out of memory");
		return;
	}
	work_job j = {.kind = WORK_FORWARD, .block = -1, .gen = ++md->gen, .arch = md->arch, .tok = &md->tok,
		      .with_plan = !identity, .mo = md->asked_mo};
	if ((!identity && plan_copy(&j.p, &a->cur.p) != 0)) {
		work_job_free(&j);
		report_failure(a, "out of memory");
		return;
	}
	/* The merged model is the one a commit writes (pipe_fill_plan), as `perplexity --plan` merges it. */
	ms_error err = {0};
	if (!identity && j.mo.layout == PIPE_LAYOUT_COMPACT && pipe_fill_plan(&j.p, NULL, &err) != MS_OK) {
		work_job_free(&j);
		report_failure(a, err.msg);
		return;
	}
	if (worker_post(a->w, &j) != 0) {
		work_job_free(&j);
		report_failure(a, "out of memory");
		return;
	}
	md->in_flight = 1;
}

void app_model_update(app *a)
{
	app_model *md = &a->model;
	if (!md->arch || asked_current(a))
		return;
	/* the plan changed: what is shown and what is being computed belong to an older one */
	md->stale = md->shown != APP_MODEL_NOTHING;
	md->asked = 0;
	if (md->in_flight) {
		worker_drop(a->w, WORK_FORWARD, -1);
		md->in_flight = 0;
		md->gen++;
	}
	const int identity = plan_merges_nothing(&a->cur.p);
	if (identity && md->have_original) {
		/* nothing merged: the original's figures, computed once, are the answer */
		remember_plan(a, 1);
		md->shown = APP_MODEL_ORIGINAL;
		md->stale = 0;
		md->failed = 0;
		return;
	}
	if (settled(a))
		post_forward(a, identity);
}

void app_model_yield(app *a)
{
	app_model *md = &a->model;
	if (!md->in_flight)
		return;
	worker_drop(a->w, WORK_FORWARD, -1);
	md->in_flight = 0;
	md->gen++;
	md->asked = 0;  /* app_model_update posts it again, and the queue puts it after the commit */
}

void app_model_landed(app *a, const work_result *r)
{
	app_model *md = &a->model;
	if (!md->in_flight || r->gen != md->gen)
		return;  /* for a plan that has changed since */
	md->in_flight = 0;
	if (r->status != MS_OK) {
		report_failure(a, r->err.msg);
		return;
	}
	md->failed = 0;
	md->stale = 0;
	const fwd_result *f = &r->forward;
	if (!md->have_original) {
		md->have_original = 1;
		md->nll = f->mean_nll;
		md->ppl = f->ppl;
	}
	if (!r->with_plan) {
		md->shown = APP_MODEL_ORIGINAL;
		return;
	}
	md->shown = APP_MODEL_MERGED;
	md->fig = *f;
	md->fig.nll = md->fig.nll_merged = md->fig.kl = NULL;
	md->fig.top1_same = NULL;
}
