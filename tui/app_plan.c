/* The plan side of the application: remaking groupings from statistics through the shared pipeline, hand edits,
 * undo and redo, and asking the worker for what the plan needs (statistics) and what it implies (evaluations). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "io/quant.h"
#include "tui/app.h"

int app_plan_state_copy(app_plan_state *dst, const app_plan_state *src, int n_blocks)
{
	memset(dst, 0, sizeof *dst);
	dst->groups = malloc((size_t)n_blocks * sizeof *dst->groups);
	dst->edited = malloc((size_t)n_blocks);
	if (!dst->groups || !dst->edited || plan_copy(&dst->p, &src->p) != 0) {
		app_plan_state_free(dst);
		return -1;
	}
	memcpy(dst->groups, src->groups, (size_t)n_blocks * sizeof *dst->groups);
	memcpy(dst->edited, src->edited, (size_t)n_blocks);
	dst->method = src->method;
	dst->base = src->base;
	dst->layout = src->layout;
	dst->router = src->router;
	dst->format = src->format;
	return 0;
}

void app_plan_state_free(app_plan_state *s)
{
	plan_free(&s->p);
	free(s->groups);
	free(s->edited);
	memset(s, 0, sizeof *s);
}

int app_plan_is_identity(const plan *p, int b)
{
	return plan_groups(p, b) == p->n_experts;
}

/* Whether block b groups the same experts together with the same dominants in both plans, whatever the
 * group labels (a plan made with G = E by msmoe labels its groups in usage order, yet merges nothing). */
static int same_grouping(const plan *x, const plan *y, int b)
{
	const int E = x->n_experts;
	const int *gx = x->group + (size_t)b * E, *gy = y->group + (size_t)b * E;
	const unsigned char *dx = x->dominant + (size_t)b * E, *dy = y->dominant + (size_t)b * E;
	for (int i = 0; i < E; i++) {
		if (!dx[i] != !dy[i] || (gx[i] < 0) != (gy[i] < 0))
			return 0;
		for (int j = i + 1; j < E; j++)
			if ((gx[i] >= 0 && gx[i] == gx[j]) != (gy[i] >= 0 && gy[i] == gy[j]))
				return 0;
	}
	return 1;
}

int app_dirty(const app *a)
{
	for (int b = 0; b < a->n_blocks; b++)
		if (!same_grouping(&a->cur.p, &a->saved, b))
			return 1;
	return 0;
}

/* Undo entries, oldest first; a full stack forgets its oldest. */
static void stack_push(app_plan_state *stack, int *n, app_plan_state *s)
{
	if (*n == APP_UNDO_DEPTH) {
		app_plan_state_free(&stack[0]);
		memmove(stack, stack + 1, (APP_UNDO_DEPTH - 1) * sizeof *stack);
		(*n)--;
	}
	stack[(*n)++] = *s;
	memset(s, 0, sizeof *s);
}

static void stack_clear(app_plan_state *stack, int *n)
{
	while (*n > 0)
		app_plan_state_free(&stack[--(*n)]);
}

/* The live commit settings into s, for the stacks. */
static void record_settings(const app *a, app_plan_state *s)
{
	s->layout = a->mo.layout;
	s->router = a->mo.router;
	s->format = a->format;
	s->weighting = a->mo.weighting;
	s->align = a->mo.align;
	s->rank_mode = a->mo.compress.mode;
	s->rank_step = a->rank_step;
}

void app_push_undo(app *a)
{
	app_plan_state s;
	if (app_plan_state_copy(&s, &a->cur, a->n_blocks) != 0)
		return;  /* out of memory: the change still happens, only without an undo step */
	record_settings(a, &s);
	stack_push(a->undo, &a->n_undo, &s);
	stack_clear(a->redo, &a->n_redo);
}

/* Replaces the current state by the top of `from`, saving the current one on `to`. */
static int swap_state(app *a, app_plan_state *from, int *n_from, app_plan_state *to, int *n_to)
{
	if (*n_from == 0)
		return -1;
	plan before;
	if (plan_copy(&before, &a->cur.p) != 0)
		return -1;
	app_plan_state cur = a->cur;
	record_settings(a, &cur);
	stack_push(to, n_to, &cur);
	a->cur = from[--(*n_from)];
	memset(&from[*n_from], 0, sizeof from[*n_from]);
	/* a merge setting coming back changes every merged block's evaluation, as its key does */
	const int rank_back = a->cur.rank_mode != a->mo.compress.mode || a->cur.rank_step != a->rank_step;
	const int remerge = a->cur.layout != a->mo.layout || a->cur.router != a->mo.router ||
			    a->cur.weighting != a->mo.weighting || a->cur.align != a->mo.align || rank_back;
	a->mo.layout = a->cur.layout;
	a->mo.router = a->cur.router;
	a->format = a->cur.format;
	a->mo.weighting = a->cur.weighting;
	a->mo.align = a->cur.align;
	if (rank_back) {   /* mode and step fix the thresholds, as r, [ and ] set them */
		a->mo.compress = cmp_options_none();
		a->mo.compress.mode = a->cur.rank_mode;
		a->rank_step = a->cur.rank_step;
		app_apply_rank_step(a);
	}
	app_request_stats(a, -1);
	app_replan(a, -1);
	app_schedule_evals(a, &before, remerge);
	plan_free(&before);
	return 0;
}

int app_undo(app *a)
{
	return swap_state(a, a->undo, &a->n_undo, a->redo, &a->n_redo);
}

int app_redo(app *a)
{
	return swap_state(a, a->redo, &a->n_redo, a->undo, &a->n_undo);
}

int app_can_plan(const app *a, int b)
{
	const unsigned have = a->have[b];
	if (!(have & APP_HAVE_ROUTING))
		return 0;
	switch (a->cur.method) {
	case GRP_MSMOE:
	case GRP_HC: return (have & APP_HAVE_BASE(a->cur.base)) != 0;
	case GRP_PRUNE_REAP: return (have & APP_HAVE_REAP) != 0;
	default: return 1;
	}
}

/* The statistics the current settings need for block b. */
static unsigned wanted_stats(const app *a)
{
	const sim_base base = a->cur.base;
	if (!a->cal) /* only what the weights alone give */
		return APP_HAVE_SRANK | (sim_base_needs_calibration(base) ? 0 : APP_HAVE_BASE(base));
	unsigned want = APP_HAVE_ROUTING | APP_HAVE_SRANK | APP_HAVE_BASE(base);
	if (a->cur.method == GRP_PRUNE_REAP)
		want |= APP_HAVE_REAP;
	return want;
}

static void request_block(app *a, int b)
{
	const unsigned missing = wanted_stats(a) & ~a->have[b] & ~a->asked[b];
	if (!missing || a->stats_error[b][0])
		return;
	work_job j = {.kind = WORK_STATS, .block = b};
	for (int base = 0; base < SIM_BASE_COUNT; base++)
		if (missing & APP_HAVE_BASE(base))
			j.ao.bases |= 1u << base;
	j.ao.stable_ranks = (missing & APP_HAVE_SRANK) != 0;
	j.ao.reap = (missing & APP_HAVE_REAP) != 0;
	j.ao.srank_tol = SRANK_DEFAULT_TOL;
	if (worker_post(a->w, &j) == 0) {
		a->asked[b] |= missing | (a->cal ? APP_HAVE_ROUTING : 0);
		return;
	}
	/* Not asked, so the next request tries again; meanwhile the user sees why nothing comes. */
	snprintf(a->message, sizeof a->message, "block %s: statistics: out of memory", a->m->blocks[b].label);
	a->message_error = 1;
}

void app_request_stats(app *a, int b)
{
	/* The selected block first, so that what the user looks at fills in first. */
	if (b < 0) {
		request_block(a, a->block);
		for (int i = 0; i < a->n_blocks; i++)
			request_block(a, i);
	} else {
		request_block(a, b);
	}
}

/* Row b of dst = row sb of src (groups, dominants and the people-facing columns). */
static void copy_block_rows(plan *dst, int b, const plan *src, int sb)
{
	const int E = dst->n_experts;
	const size_t d = (size_t)b * E, s = (size_t)sb * E;
	memcpy(dst->group + d, src->group + s, (size_t)E * sizeof *dst->group);
	memcpy(dst->dominant + d, src->dominant + s, (size_t)E);
	memcpy(dst->frequency + d, src->frequency + s, (size_t)E * sizeof *dst->frequency);
	memcpy(dst->similarity + d, src->similarity + s, (size_t)E * sizeof *dst->similarity);
	memcpy(dst->stable_rank + 3 * d, src->stable_rank + 3 * s, (size_t)E * 3 * sizeof *dst->stable_rank);
}

static pipe_plan_options plan_options(const app *a)
{
	pipe_plan_options o = {
		.method = a->cur.method, .linkage = a->linkage, .base = a->cur.base,
	};
	return o;
}

/* Block b's grouping with G groups, made by pipe_make_plan on a one-block plan. */
static ms_status plan_block(app *a, int b, ms_error *err)
{
	plan one;
	const char *label = a->m->blocks[b].label;
	if (plan_init(&one, 1, a->E, &label) != 0)
		return ms_fail(err, MS_ERR_NOMEM, "out of memory");
	pipe_plan_options o = plan_options(a);
	o.groups = a->cur.groups[b];
	o.block_groups = &a->cur.groups[b];
	ms_status st = pipe_make_plan(&a->stats[b], 1, &o, &one, err);
	if (st == MS_OK)
		copy_block_rows(&a->cur.p, b, &one, 0);
	plan_free(&one);
	return st;
}

int app_plan_block_as(const app *a, int b, grp_method method, plan *out)
{
	plan one;
	const char *label = a->m->blocks[b].label;
	if (plan_copy(out, &a->cur.p) != 0)
		return -1;
	if (plan_init(&one, 1, a->E, &label) != 0) {
		plan_free(out);
		return -1;
	}
	pipe_plan_options o = plan_options(a);
	o.method = method;
	o.groups = plan_groups(&a->cur.p, b);
	o.block_groups = &o.groups;
	ms_error err = {0};
	const ms_status st = pipe_make_plan(&a->stats[b], 1, &o, &one, &err);
	if (st == MS_OK)
		copy_block_rows(out, b, &one, 0);
	plan_free(&one);
	if (st != MS_OK)
		plan_free(out);
	return st == MS_OK ? 0 : -1;
}

void app_replan(app *a, int b)
{
	for (int i = b < 0 ? 0 : b; i < (b < 0 ? a->n_blocks : b + 1); i++) {
		if (a->cur.edited[i] || !app_can_plan(a, i))
			continue;
		ms_error err = {0};
		if (plan_block(a, i, &err) != MS_OK) {
			snprintf(a->message, sizeof a->message, "block %s: %s", a->m->blocks[i].label, err.msg);
			a->message_error = 1;
		}
	}
}

int app_plan_global(app *a, int avg)
{
	for (int b = 0; b < a->n_blocks; b++)
		if (!app_can_plan(a, b)) {
			snprintf(a->message, sizeof a->message, "global allocation waits for every block's statistics");
			return -1;
		}
	plan full;
	if (plan_copy(&full, &a->cur.p) != 0)
		return -1;
	pipe_plan_options o = plan_options(a);
	o.groups = avg;
	o.global = 1;
	ms_error err = {0};
	ms_status st = pipe_make_plan(a->stats, a->n_blocks, &o, &full, &err);
	if (st != MS_OK) {
		snprintf(a->message, sizeof a->message, "average G %d: %s", avg, err.msg);
		a->message_error = 1;
		plan_free(&full);
		return -1;
	}
	app_push_undo(a);
	plan before = a->cur.p;
	a->cur.p = full;
	for (int b = 0; b < a->n_blocks; b++) {
		a->cur.groups[b] = plan_groups(&full, b);
		a->cur.edited[b] = 0;
	}
	app_schedule_evals(a, &before, 0);
	plan_free(&before);
	return 0;
}

/* The similarity-to-dominant column of block b after a hand edit, from the current base when known. */
static void refresh_similarity(app *a, int b)
{
	const int E = a->E;
	const int *grp = a->cur.p.group + (size_t)b * E;
	const unsigned char *dom = a->cur.p.dominant + (size_t)b * E;
	const double *sim = a->stats[b].similarity[a->cur.base];
	for (int x = 0; x < E; x++) {
		double *dst = &a->cur.p.similarity[(size_t)b * E + x];
		*dst = NAN;
		for (int j = 0; sim && grp[x] >= 0 && j < E; j++)
			if (grp[j] == grp[x] && dom[j])
				*dst = sim[(size_t)x * E + j];
	}
}

/* After expert e left group g: a new dominant (its most-used remaining member) or, when g is empty, the
 * groups above it move down one label so the numbering stays 0..G-1. */
static void repair_group(int *grp, unsigned char *dom, const double *freq, int E, int g)
{
	int best = -1;
	for (int x = 0; x < E; x++)
		if (grp[x] == g && (best < 0 || freq[x] > freq[best]))
			best = x;
	if (best >= 0) {
		int has = 0;
		for (int x = 0; x < E; x++)
			has |= grp[x] == g && dom[x];
		if (!has)
			dom[best] = 1;
		return;
	}
	for (int x = 0; x < E; x++)
		if (grp[x] > g)
			grp[x]--;
}

static void after_edit(app *a, int b, const plan *before)
{
	a->cur.edited[b] = 1;
	a->cur.groups[b] = plan_groups(&a->cur.p, b);
	refresh_similarity(a, b);
	app_schedule_evals(a, before, 0);
}

int app_move_expert(app *a, int b, int e, int g)
{
	const int E = a->E;
	int *grp = a->cur.p.group + (size_t)b * E;
	unsigned char *dom = a->cur.p.dominant + (size_t)b * E;
	const int G = plan_groups(&a->cur.p, b), old = grp[e];
	int alone = 1;
	for (int x = 0; x < E; x++)
		alone &= x == e || grp[x] != old;
	if (old < 0 || g < 0 || g > G || g == old || (g == G && alone))
		return -1;
	plan before;
	if (plan_copy(&before, &a->cur.p) != 0)
		return -1;
	app_push_undo(a);
	grp[e] = g;
	dom[e] = g == G;
	repair_group(grp, dom, a->cur.p.frequency + (size_t)b * E, E, old);
	after_edit(a, b, &before);
	plan_free(&before);
	return 0;
}

int app_make_dominant(app *a, int b, int e)
{
	const int E = a->E;
	int *grp = a->cur.p.group + (size_t)b * E;
	unsigned char *dom = a->cur.p.dominant + (size_t)b * E;
	if (grp[e] < 0 || dom[e])
		return -1;
	plan before;
	if (plan_copy(&before, &a->cur.p) != 0)
		return -1;
	app_push_undo(a);
	for (int x = 0; x < E; x++)
		if (grp[x] == grp[e])
			dom[x] = x == e;
	after_edit(a, b, &before);
	plan_free(&before);
	return 0;
}

/* Whether block b's merge differs between two plans: groups, dominants, or the frequencies that weight it. */
static int block_differs(const plan *x, const plan *y, int b)
{
	const int E = x->n_experts;
	const size_t o = (size_t)b * E;
	return memcmp(x->group + o, y->group + o, (size_t)E * sizeof *x->group) != 0 ||
	       memcmp(x->dominant + o, y->dominant + o, (size_t)E) != 0 ||
	       memcmp(x->frequency + o, y->frequency + o, (size_t)E * sizeof *x->frequency) != 0;
}

static void eval_reset(app_eval *ev)
{
	free(ev->merged_srank);
	free(ev->compression);
	unsigned gen = ev->gen;
	memset(ev, 0, sizeof *ev);
	ev->gen = gen;
}

/* A WORK_EVAL job for block b of plan p under mo, the block as a commit writes it: a compact block split up to E'
 * (pipe_fill_groups), as the model line and `moescope eval --plan` see it, rather than padded with copies. */
static ms_status eval_job(app *a, int b, const plan *p, const pipe_merge_options *mo, work_job *j, ms_error *err)
{
	*j = (work_job){.kind = WORK_EVAL, .block = b, .gen = ++a->eval_gen, .eval_tokens = a->cfg.eval_tokens};
	j->mo = *mo;
	j->mo.slots = mo->layout == PIPE_LAYOUT_COMPACT ? a->eval_slots : 0;
	if (plan_copy(&j->p, p) != 0)
		return ms_fail(err, MS_ERR_NOMEM, "out of memory");
	ms_status st = MS_OK;
	if (mo->layout == PIPE_LAYOUT_COMPACT && plan_groups(&j->p, b) > 0)
		st = pipe_fill_groups(&j->p, b, a->eval_slots, err);
	if (st != MS_OK)
		work_job_free(j);
	return st;
}

static void post_eval(app *a, int b)
{
	work_job j;
	ms_error err = {0};
	const ms_status st = eval_job(a, b, &a->cur.p, &a->mo, &j, &err);
	a->eval[b].gen = j.gen;
	if (st != MS_OK) {
		a->eval[b].state = APP_EVAL_FAILED;
		snprintf(a->eval[b].error, sizeof a->eval[b].error, "%s", err.msg);
		return;
	}
	if (worker_post(a->w, &j) != 0) {
		work_job_free(&j);
		a->eval[b].state = APP_EVAL_FAILED;
		snprintf(a->eval[b].error, sizeof a->eval[b].error, "out of memory");
		return;
	}
	a->eval[b].state = APP_EVAL_PENDING;
}

unsigned app_post_side_eval(app *a, int b, const plan *p, const pipe_merge_options *mo)
{
	work_job j;
	if (eval_job(a, b, p, mo, &j, NULL) != MS_OK)
		return 0;
	j.side = 1;
	const unsigned gen = j.gen;  /* worker_post clears the job */
	if (worker_post(a->w, &j) != 0) {
		work_job_free(&j);
		return 0;
	}
	return gen;
}

void app_schedule_evals(app *a, const plan *before, int all)
{
	const int slots = pipe_plan_slots(&a->cur.p);
	if (a->mo.layout == PIPE_LAYOUT_COMPACT && slots != a->eval_slots)
		all = 1;  /* every compact block is padded to the largest group count */
	a->eval_slots = slots;
	for (int b = 0; b < a->n_blocks; b++) {
		if (!all && before && !block_differs(before, &a->cur.p, b))
			continue;
		eval_reset(&a->eval[b]);
		a->eval[b].gen = ++a->eval_gen;  /* whatever is in flight for b is stale now */
		app_compare_forget(a, b);
		if (a->cal && !app_plan_is_identity(&a->cur.p, b))
			post_eval(a, b);
	}
}

int app_written_experts(const app *a, int b)
{
	(void)b;  /* every block of a checkpoint has the same count */
	return a->mo.layout == PIPE_LAYOUT_COMPACT ? pipe_plan_slots(&a->cur.p) : a->E;
}

/* Bytes one merged expert's matrix takes in the factors format, from its measured compression: the factors and
 * the residual's values in the matrix's dtype, each residual index an I32 (pipeline/merge_run.c). */
static double factor_bytes(const cmp_result *c, size_t elem)
{
	if (!c->compressed)
		return (double)c->params_before * (double)elem;
	return (double)(c->params_after - 2 * c->nnz) * (double)elem + (double)c->nnz * ((double)elem + 4.0);
}

/* One expert of blk as a checkpoint stores it: its matrices, codes and scales (io/quant.h: FP8's weight_scale_inv
 * per block, MXFP4's E8M0 byte per 32 values), into *matrix, and its biases (the interleaved layout) into *bias;
 * the parameters count each value once, whatever its storage. */
static void expert_size(const app *a, const mdl_block *blk, app_size *matrix, app_size *bias)
{
	const mdl_model *m = a->m;
	const int *bs = m->quant.block;
	*matrix = *bias = (app_size){0};
	for (int i = 0; i < MDL_NFUSED; i++) {
		if (blk->mx[i].codes) {  /* MXFP4: E * out rows of `in` values */
			const int64_t rows = blk->mx[i].rows / a->E, cols = blk->mx[i].cols;
			matrix->bytes_before += (double)qt_stored_bytes(QT_MXFP4, rows, cols, ST_U8, 0, 0);
			matrix->params_before += (double)rows * (double)cols;
		}
		if (blk->fused_bias[i]) {
			bias->bytes_before += (double)blk->fused_bias[i]->nbytes / a->E;
			bias->params_before += (double)blk->fused_bias[i]->numel / a->E;
		}
	}
	for (int mat = 0; mat < MDL_NMAT && !blk->mx[0].codes; mat++) {
		const st_tensor *t = blk->experts[mat], *scale = blk->scales[mat];
		if (!t)
			continue;
		const int64_t rows = t->shape[0], cols = (int64_t)(t->numel / (uint64_t)rows);
		matrix->bytes_before += (double)qt_stored_bytes(scale ? QT_FP8 : QT_NONE, rows, cols,
							      scale ? scale->dtype : t->dtype, bs[0], bs[1]);
		matrix->params_before += (double)rows * (double)cols;
	}
}

app_size app_block_size(const app *a, int b)
{
	const mdl_block *blk = &a->m->blocks[b];
	const int E = a->E, n_out = app_written_experts(a, b);
	const int merged = !app_plan_is_identity(&a->cur.p, b);
	app_size mats, bias;
	expert_size(a, blk, &mats, &bias);
	const double expert = mats.bytes_before + bias.bytes_before;
	const double expert_params = mats.params_before + bias.params_before;
	/* a router row with its entry of the selection bias or the router's bias, which compact rewrites with it */
	double row = (double)blk->router->nbytes / E, row_params = a->m->hidden;
	const st_tensor *row_bias[2] = {blk->score_bias, blk->router_bias};
	for (int i = 0; i < 2; i++)
		if (row_bias[i]) {
			row += (double)row_bias[i]->nbytes / E;
			row_params += 1.0;
		}
	const int rows = a->mo.layout == PIPE_LAYOUT_COMPACT ? n_out : E;
	app_size z = {
		.bytes_before = E * (expert + row), .params_before = E * (expert_params + row_params),
		.bytes_after = n_out * expert + rows * row, .params_after = n_out * expert_params + rows * row_params,
	};
	const int factors = a->format == MRUN_FORMAT_FACTORS && a->mo.compress.mode != CMP_RANK_NONE && merged;
	if (!factors)
		return z;  /* the dense format writes every compressed matrix at its full size */
	const app_eval *ev = &a->eval[b];
	const int G = plan_groups(&a->cur.p, b);
	/* the evaluation measured each group's matrices; a compact block whose groups are split up to E' writes
	 * other merges than the ones measured */
	if (ev->state != APP_EVAL_DONE || !ev->compression || ev->groups != G ||
	    (a->mo.layout == PIPE_LAYOUT_COMPACT && n_out != G)) {
		z.bytes_after = z.params_after = -1.0;
		return z;
	}
	z.bytes_after = rows * row + n_out * bias.bytes_before;  /* a merged expert's biases are written whole */
	z.params_after = rows * row_params + n_out * bias.params_before;
	for (int s = 0; s < n_out; s++) {
		int g = s;
		if (a->mo.layout == PIPE_LAYOUT_ALIASED && (g = a->cur.p.group[(size_t)b * E + s]) < 0) {
			z.bytes_after += mats.bytes_before;  /* a dropped expert keeps its slot, written as it was */
			z.params_after += mats.params_before;
			continue;
		}
		for (int mat = 0; mat < MDL_NMAT; mat++)
			if (blk->experts[mat]) {
				const cmp_result *c = &ev->compression[(size_t)g * MDL_NMAT + mat];
				z.bytes_after += factor_bytes(c, st_dtype_size(blk->experts[mat]->dtype));
				z.params_after += (double)c->params_after;
			}
	}
	return z;
}

app_totals app_plan_totals(const app *a)
{
	app_totals t = {.experts = a->n_blocks * a->E, .blocks = a->n_blocks, .mean_error = NAN};
	double err_sum = 0.0;
	for (int b = 0; b < a->n_blocks; b++) {
		t.kept += plan_groups(&a->cur.p, b);
		t.planned += a->cur.edited[b] || plan_groups(&a->cur.p, b) == a->cur.groups[b];
		const app_size z = app_block_size(a, b);
		if (z.bytes_after >= 0) {
			t.sized++;
			t.size.bytes_before += z.bytes_before;
			t.size.bytes_after += z.bytes_after;
			t.size.params_before += z.params_before;
			t.size.params_after += z.params_after;
		}
		if (app_plan_is_identity(&a->cur.p, b))
			continue;
		t.merged++;
		const app_eval *ev = &a->eval[b];
		if (ev->state != APP_EVAL_DONE)
			continue;
		t.evaluated++;
		err_sum += ev->r.rel_error;
	}
	if (t.evaluated > 0)
		t.mean_error = err_sum / t.evaluated;
	return t;
}

/* qsort has no context argument: the keys are computed first and sorted with the expert index. */
typedef struct {
	double k1, k2;
	int e;
} order_key;

static int cmp_order_key(const void *x, const void *y)
{
	const order_key *a = x, *b = y;
	if (a->k1 != b->k1)
		return a->k1 < b->k1 ? -1 : 1;
	if (a->k2 != b->k2)
		return a->k2 < b->k2 ? -1 : 1;
	return (a->e > b->e) - (a->e < b->e);
}

void app_expert_order(const app *a, int b, app_order how, int *order)
{
	const int E = a->E;
	const double *freq = a->stats[b].frequency;
	const int *grp = a->cur.p.group + (size_t)b * E;
	const unsigned char *dom = a->cur.p.dominant + (size_t)b * E;
	order_key keys[E];
	for (int e = 0; e < E; e++) {
		keys[e].e = e;
		keys[e].k1 = keys[e].k2 = 0.0;
		if (how == APP_ORDER_USAGE && freq)
			keys[e].k1 = -freq[e];
		if (how == APP_ORDER_GROUP) {
			keys[e].k1 = grp[e] < 0 ? (double)E : (double)grp[e];
			keys[e].k2 = dom[e] ? -1.0 : freq ? -freq[e] : 0.0;
		}
	}
	qsort(keys, (size_t)E, sizeof keys[0], cmp_order_key);
	for (int i = 0; i < E; i++)
		order[i] = keys[i].e;
}

app_order app_view_order(const app *a)
{
	switch (a->view) {
	case APP_VIEW_USAGE: return a->usage_by_index ? APP_ORDER_INDEX : APP_ORDER_USAGE;
	case APP_VIEW_HEATMAP: return a->heat_by_group ? APP_ORDER_GROUP : APP_ORDER_INDEX;
	case APP_VIEW_GROUPS: return APP_ORDER_GROUP;
	default: return APP_ORDER_INDEX;
	}
}
