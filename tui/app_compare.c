/* The comparison view's side evaluations: the selected block's current grouping merged under each layout and
 * router, and pruned by usage at the same G, each evaluated on the worker exactly as the block's own evaluation
 * is (the same tokens and slots), so that the table answers "what would this block's error be if ..." with
 * measured numbers only. They are asked for when the view shows a block it has not compared at this plan, and
 * forgotten when the block's plan or the merge options change. */
#include <stdio.h>
#include <string.h>

#include "tui/app.h"

const char *const app_cmp_labels[APP_CMP_COUNT] = {
#define APP_CMP_LABEL(id, label, layout, router, prune) [id] = label,
	APP_CMP_TABLE(APP_CMP_LABEL)
#undef APP_CMP_LABEL
};

/* The merge options of variant v: the current ones with the row's layout and router where it names them. */
static pipe_merge_options variant_options(const app *a, int v)
{
	static const int layouts[APP_CMP_COUNT] = {
#define APP_CMP_LAYOUT(id, label, layout, router, prune) [id] = layout,
		APP_CMP_TABLE(APP_CMP_LAYOUT)
#undef APP_CMP_LAYOUT
	};
	static const int routers[APP_CMP_COUNT] = {
#define APP_CMP_ROUTER(id, label, layout, router, prune) [id] = router,
		APP_CMP_TABLE(APP_CMP_ROUTER)
#undef APP_CMP_ROUTER
	};
	pipe_merge_options mo = a->mo;
	if (layouts[v] >= 0)
		mo.layout = (pipe_layout)layouts[v];
	if (routers[v] >= 0)
		mo.router = (rfit_method)routers[v];
	return mo;
}

static int variant_prunes(int v)
{
	static const int prunes[APP_CMP_COUNT] = {
#define APP_CMP_PRUNE(id, label, layout, router, prune) [id] = prune,
		APP_CMP_TABLE(APP_CMP_PRUNE)
#undef APP_CMP_PRUNE
	};
	return prunes[v];
}

void app_compare_forget(app *a, int b)
{
	if (b < 0 || b == a->cmp.block)
		a->cmp.block = -1;
}

/* Why variant v cannot be evaluated, or NULL. */
static const char *variant_refused(const app *a, int v)
{
	const pipe_merge_options mo = variant_options(a, v);
	if (mo.router == RFIT_LSE_FIT && !a->cal)
		return "needs a calibration set";
	return NULL;
}

void app_compare_update(app *a)
{
	const int b = a->block;
	if (a->view != APP_VIEW_COMPARE || a->cmp.block == b || !a->cal || !app_can_plan(a, b) ||
	    app_plan_is_identity(&a->cur.p, b) || a->eval[b].state == APP_EVAL_NONE)
		return;
	memset(&a->cmp, 0, sizeof a->cmp);
	a->cmp.block = b;
	for (int v = 0; v < APP_CMP_COUNT; v++) {
		app_cmp_cell *c = &a->cmp.cell[v];
		const char *why = variant_refused(a, v);
		if (why) {
			c->state = APP_EVAL_FAILED;
			snprintf(c->error, sizeof c->error, "%s", why);
			continue;
		}
		const pipe_merge_options mo = variant_options(a, v);
		plan p;
		if (variant_prunes(v) ? app_plan_block_as(a, b, GRP_PRUNE_FREQUENCY, &p) : plan_copy(&p, &a->cur.p)) {
			c->state = APP_EVAL_FAILED;
			snprintf(c->error, sizeof c->error, "cannot make the plan");
			continue;
		}
		c->gen = app_post_side_eval(a, b, &p, &mo);
		c->state = c->gen ? APP_EVAL_PENDING : APP_EVAL_FAILED;
		if (!c->gen)
			snprintf(c->error, sizeof c->error, "out of memory");
		plan_free(&p);
	}
}

int app_compare_landed(app *a, const work_result *r)
{
	if (r->block != a->cmp.block)
		return 0;
	for (int v = 0; v < APP_CMP_COUNT; v++) {
		app_cmp_cell *c = &a->cmp.cell[v];
		if (c->state != APP_EVAL_PENDING || c->gen != r->gen)
			continue;
		if (r->status != MS_OK) {
			c->state = APP_EVAL_FAILED;
			snprintf(c->error, sizeof c->error, "%.250s", r->err.msg);
		} else {
			c->state = APP_EVAL_DONE;
			c->r = r->eval;
		}
		return 1;
	}
	return 0;
}
