#include "tui/worker.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A job and its result, allocated together by worker_post: once a job is queued, nothing on its way to the
 * result queue needs memory, so every posted job answers. The same node carries the result back. */
typedef struct job_node {
	work_job job;
	work_result *r;
	struct job_node *next;
} job_node;

void *(*worker_calloc)(size_t n, size_t size) = calloc;

struct worker {
	const mdl_model *m;
	const calib *cal;
	worker_commit_fn commit;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t has_job;   /* signalled when a job is queued or stop is set */
	pthread_cond_t idle;      /* signalled when the queue empties and no job runs */
	/* under mu */
	job_node *jobs;
	job_node *results, *results_tail;  /* finished jobs, oldest first, each holding its result */
	int running, stop;
	work_kind running_kind;
	int running_block;
	int running_side;
	int done, total;
	int step, steps;          /* the running job's own progress, when it reports one */
	char label[128];
	worker_stage_fn stage_hook;
	void *stage_ctx;
	/* The running job should stop. Stored by the UI thread (worker_cancel, a newer evaluation of the same block,
	 * worker_stop) while the job reads it without taking mu, so it is atomic; cleared as each job starts. */
	atomic_int cancel;
	/* touched by the worker thread only */
	pipe_block cached;
	int cached_block;         /* block in `cached`, -1 for none */
};

void work_job_free(work_job *j)
{
	if (!j)
		return;
	plan_free(&j->p);
	memset(j, 0, sizeof *j);
}

void work_result_free(work_result *r)
{
	if (!r)
		return;
	pipe_free_stats(&r->stats);
	free(r->merged_srank);
	free(r->compression);
	fwd_result_free(&r->forward);
	if (r->kind == WORK_SEARCH)
		srch_result_free(&r->search);
	free(r);
}

/* The job's place in the queue: commits first, then evaluations, then statistics, then the model-level forward
 * (the slowest, and the least urgent: it waits until the figures the user is looking at are in). */
static int priority(work_kind k)
{
	switch (k) {
	case WORK_COMMIT: return 0;
	case WORK_EVAL: return 1;
	case WORK_STATS: return 2;  /* and side evaluations */
	default: return 3;
	}
}

/* The running job enters a stage: the progress line shows text, and the stage hook hears of it. */
static void set_label(worker *w, const char *text)
{
	pthread_mutex_lock(&w->mu);
	snprintf(w->label, sizeof w->label, "%s", text);
	worker_stage_fn hook = w->stage_hook;
	void *ctx = w->stage_ctx;
	pthread_mutex_unlock(&w->mu);
	if (hook)
		hook(ctx, text);
}

/* An evaluation or statistics job enters stage `what` of block b; MS_ERR_INTERRUPTED when it was cancelled. */
static ms_status enter_stage(worker *w, const char *job, int b, const char *what, ms_error *err)
{
	char text[128];
	snprintf(text, sizeof text, "%s %s: %s", job, w->m->blocks[b].label, what);
	set_label(w, text);
	if (atomic_load(&w->cancel))
		return ms_fail(err, MS_ERR_INTERRUPTED, "%s %s: cancelled", job, w->m->blocks[b].label);
	return MS_OK;
}

/* The block for a job: the cached one when it matches, else loaded in its place (one block in memory). */
static const pipe_block *get_block(worker *w, int b, ms_error *err)
{
	if (w->cached_block == b)
		return &w->cached;
	pipe_free_block(&w->cached);
	w->cached_block = -1;
	if (pipe_load_block(w->m, w->cal, b, &w->cached, err) != MS_OK)
		return NULL;
	w->cached_block = b;
	return &w->cached;
}

static void run_stats(worker *w, const work_job *j, work_result *r)
{
	r->ao = j->ao;
	r->status = enter_stage(w, "statistics", j->block, "load", &r->err);
	if (r->status != MS_OK)
		return;
	const pipe_block *blk = get_block(w, j->block, &r->err);
	if (!blk) {
		r->status = r->err.code;
		return;
	}
	r->status = enter_stage(w, "statistics", j->block, "analyze", &r->err);
	if (r->status == MS_OK)
		r->status = pipe_analyze_block(blk, &j->ao, &r->stats, &r->err);
	r->routing = w->cal && r->status == MS_OK;
}

/* The merged block's figures: its evaluation, each group's merged expert's stable ranks, the compression. */
static ms_status eval_figures(worker *w, const pipe_block *blk, const pipe_merged *mg, const work_job *j,
			      work_result *r)
{
	ms_status st = enter_stage(w, "evaluate", j->block, "measure", &r->err);
	if (st == MS_OK)
		st = pipe_eval_block(blk, mg, &j->p, j->block, j->eval_tokens, &r->eval, &r->err);
	if (st != MS_OK)
		return st;
	const int G = mg->groups;
	r->groups = G;
	r->merged_srank = malloc((size_t)G * MDL_NMAT * sizeof *r->merged_srank);
	if (!r->merged_srank)
		return ms_fail(&r->err, MS_ERR_NOMEM, "out of memory");
	st = enter_stage(w, "evaluate", j->block, "ranks", &r->err);
	if (st == MS_OK)
		st = pipe_stable_ranks(mg->experts, G, SRANK_DEFAULT_TOL, r->merged_srank, &r->err);
	if (st == MS_OK && mg->compression) {
		r->compression = malloc((size_t)G * MDL_NMAT * sizeof *r->compression);
		if (!r->compression)
			return ms_fail(&r->err, MS_ERR_NOMEM, "out of memory");
		memcpy(r->compression, mg->compression, (size_t)G * MDL_NMAT * sizeof *r->compression);
	}
	return st;
}

/* A superseded evaluation is cancelled between its stages (load, merge, measure, ranks): its answer would be
 * stale, and the newer one waits behind it. */
static void run_eval(worker *w, const work_job *j, work_result *r)
{
	r->status = enter_stage(w, "evaluate", j->block, "load", &r->err);
	if (r->status != MS_OK)
		return;
	const pipe_block *blk = get_block(w, j->block, &r->err);
	if (!blk) {
		r->status = r->err.code;
		return;
	}
	r->status = enter_stage(w, "evaluate", j->block, "merge", &r->err);
	if (r->status != MS_OK)
		return;
	pipe_merged mg;
	r->status = pipe_merge_block(blk, &j->p, j->block, &j->mo, &mg, &r->err);
	if (r->status != MS_OK)
		return;
	r->status = eval_figures(w, blk, &mg, j, r);
	pipe_free_merged(&mg);
}

static void commit_progress(void *ctx, const char *stage, int done, int total)
{
	char text[128];
	snprintf(text, sizeof text, "commit: %s %d/%d", stage ? stage : "", done, total);
	set_label(ctx, text);
}

static void run_commit(worker *w, work_job *j, work_result *r)
{
	/* The merge loads blocks itself: make room for them. */
	pipe_free_block(&w->cached);
	w->cached_block = -1;
	if (!w->commit) {
		r->status = ms_fail(&r->err, MS_ERR_ARG, "merge not available");
		return;
	}
	j->req.plan = &j->p;
	j->req.out_dir = j->out_dir;
	r->status = w->commit(w->m, w->cal, &j->req, commit_progress, w, &w->cancel, &r->summary, &r->err);
}

static void forward_progress(void *ctx, int layer, int n_layers)
{
	worker *w = ctx;
	char text[128];
	snprintf(text, sizeof text, "perplexity: %d/%d layers", layer, n_layers);
	pthread_mutex_lock(&w->mu);
	w->step = layer;
	w->steps = n_layers;
	pthread_mutex_unlock(&w->mu);
	set_label(w, text);
}

/* The whole model forward on the tokens, the plan's merged model beside it when asked. Both streams run every
 * layer and the head even though the original's figures never change with the plan: KL and top-1 need the
 * original's next-token distribution token by token, and keeping it between jobs would take [T, vocab] floats;
 * a job with a plan so costs about twice one without (the caller reuses the original's figures and runs
 * without a plan while nothing is merged). Cancelled between layers. */
static void run_forward(worker *w, const work_job *j, work_result *r)
{
	r->with_plan = j->with_plan;
	if (!j->arch || !j->tok) {
		r->status = ms_fail(&r->err, MS_ERR_ARG, "perplexity: no model architecture or no tokens");
		return;
	}
	set_label(w, "perplexity");
	fwd_options o = {.plan = j->with_plan ? &j->p : NULL, .merge = &j->mo, .head = 1,
			 .progress = forward_progress, .progress_ctx = w, .cancel = &w->cancel};
	r->status = fwd_run(j->arch, j->tok, &o, &r->forward, &r->err);
}

static void search_progress(void *ctx, const char *stage, int done, int total)
{
	worker *w = ctx;
	char text[128];
	snprintf(text, sizeof text, "search: %s %d/%d", stage, done, total);
	pthread_mutex_lock(&w->mu);
	w->step = done;
	w->steps = total;
	pthread_mutex_unlock(&w->mu);
	set_label(w, text);
}

/* The per-block budget search, cancelled like a forward (it runs forwards); the cache is the caller's. */
static void run_search(worker *w, const work_job *j, work_result *r)
{
	if (!j->search_cache) {
		r->status = ms_fail(&r->err, MS_ERR_ARG, "search: no model architecture or no tokens");
		return;
	}
	set_label(w, "search");
	srch_options o = j->search;
	o.progress = search_progress;
	o.progress_ctx = w;
	o.cancel = &w->cancel;
	r->status = srch_run(j->search_cache, &o, &r->search, &r->err);
}

static void run_job(worker *w, work_job *j, work_result *r)
{
	if (j->kind != WORK_COMMIT && j->kind != WORK_FORWARD && j->kind != WORK_SEARCH &&
	    (!w->m || j->block < 0 || j->block >= w->m->n_blocks)) {
		r->status = ms_fail(&r->err, MS_ERR_ARG, "no block %d", j->block);
		return;
	}
	if (j->kind == WORK_COMMIT)
		set_label(w, "commit");
	switch (j->kind) {
	case WORK_STATS: run_stats(w, j, r); break;
	case WORK_EVAL: run_eval(w, j, r); break;
	case WORK_COMMIT: run_commit(w, j, r); break;
	case WORK_FORWARD: run_forward(w, j, r); break;
	case WORK_SEARCH: run_search(w, j, r); break;
	}
	if (r->status != MS_OK && r->err.code == MS_OK)
		ms_fail(&r->err, r->status, NULL);
}

/* The result of n's job is ready: n moves to the result queue, its job freed. Called with mu held. */
static void push_result(worker *w, job_node *n)
{
	work_job_free(&n->job);
	n->next = NULL;
	if (w->results_tail)
		w->results_tail->next = n;
	else
		w->results = n;
	w->results_tail = n;
}

static void *worker_main(void *arg)
{
	worker *w = arg;
	pthread_mutex_lock(&w->mu);
	for (;;) {
		while (!w->jobs && !w->stop)
			pthread_cond_wait(&w->has_job, &w->mu);
		if (w->stop)
			break;
		job_node *n = w->jobs;
		w->jobs = n->next;
		w->running = 1;
		w->running_kind = n->job.kind;
		w->running_block = n->job.block;
		w->running_side = n->job.side;
		w->step = w->steps = 0;
		atomic_store(&w->cancel, 0);  /* a cancel was meant for the job before */
		pthread_mutex_unlock(&w->mu);
		run_job(w, &n->job, n->r);
		work_job_free(&n->job);
		pthread_mutex_lock(&w->mu);
		push_result(w, n);
		w->running = 0;
		w->done++;
		if (!w->jobs)
			pthread_cond_broadcast(&w->idle);
	}
	pthread_mutex_unlock(&w->mu);
	pipe_free_block(&w->cached);
	return NULL;
}

worker *worker_start(const mdl_model *m, const calib *cal, worker_commit_fn commit)
{
	worker *w = calloc(1, sizeof *w);
	if (!w)
		return NULL;
	w->m = m;
	w->cal = cal;
	w->commit = commit;
	w->cached_block = -1;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->has_job, NULL);
	pthread_cond_init(&w->idle, NULL);
	if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
		pthread_mutex_destroy(&w->mu);
		pthread_cond_destroy(&w->has_job);
		pthread_cond_destroy(&w->idle);
		free(w);
		return NULL;
	}
	return w;
}

static void free_node(job_node *n)
{
	work_job_free(&n->job);
	work_result_free(n->r);
	free(n);
}

static void drop_jobs(worker *w)
{
	while (w->jobs) {
		job_node *n = w->jobs;
		w->jobs = n->next;
		free_node(n);
	}
}

void worker_stop(worker *w)
{
	if (!w)
		return;
	pthread_mutex_lock(&w->mu);
	drop_jobs(w);
	w->stop = 1;
	atomic_store(&w->cancel, 1);
	pthread_cond_signal(&w->has_job);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->thread, NULL);
	work_result *r;
	while ((r = worker_poll(w)) != NULL)
		work_result_free(r);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->has_job);
	pthread_cond_destroy(&w->idle);
	free(w);
}

/* Whether a job of kind k for block b is one that worker_drop(kind, block) drops. */
static int superseded(work_kind k, int b, work_kind kind, int block)
{
	return k == kind && (b == block || (kind != WORK_STATS && kind != WORK_EVAL));
}

/* Removes the queued jobs worker_drop names and cancels the running one. Called with mu held. */
static void drop_jobs_of(worker *w, work_kind kind, int block)
{
	for (job_node **pp = &w->jobs; *pp;) {
		job_node *n = *pp;
		if (!n->job.side && superseded(n->job.kind, n->job.block, kind, block)) {
			*pp = n->next;
			free_node(n);
			w->total--;
		} else {
			pp = &n->next;
		}
	}
	if (w->running && !w->running_side && superseded(w->running_kind, w->running_block, kind, block))
		atomic_store(&w->cancel, 1);
	if (!w->jobs && !w->running)
		pthread_cond_broadcast(&w->idle);
}

void worker_drop(worker *w, work_kind kind, int b)
{
	pthread_mutex_lock(&w->mu);
	drop_jobs_of(w, kind, b);
	pthread_mutex_unlock(&w->mu);
}

int worker_post(worker *w, work_job *job)
{
	job_node *n = worker_calloc(1, sizeof *n);
	work_result *r = n ? worker_calloc(1, sizeof *r) : NULL;
	if (!r) {
		free(n);
		work_job_free(job);
		return -1;
	}
	n->job = *job;
	n->r = r;
	r->kind = job->kind;
	r->block = job->block;
	r->gen = job->gen;
	memset(job, 0, sizeof *job);
	pthread_mutex_lock(&w->mu);
	if (!w->jobs && !w->running)
		w->done = w->total = 0;  /* a new burst of work: the progress bar starts over */
	if (n->job.kind == WORK_EVAL && !n->job.side)  /* a new evaluation of a block replaces the older one */
		drop_jobs_of(w, WORK_EVAL, n->job.block);
	job_node **pp = &w->jobs;
	const int prio = n->job.side ? priority(WORK_STATS) : priority(n->job.kind);
	while (*pp && ((*pp)->job.side ? priority(WORK_STATS) : priority((*pp)->job.kind)) <= prio)
		pp = &(*pp)->next;
	n->next = *pp;
	*pp = n;
	w->total++;
	pthread_cond_signal(&w->has_job);
	pthread_mutex_unlock(&w->mu);
	return 0;
}

work_result *worker_poll(worker *w)
{
	pthread_mutex_lock(&w->mu);
	job_node *n = w->results;
	if (n) {
		w->results = n->next;
		if (!w->results)
			w->results_tail = NULL;
	}
	pthread_mutex_unlock(&w->mu);
	if (!n)
		return NULL;
	work_result *r = n->r;
	free(n);
	return r;
}

void worker_wait_idle(worker *w)
{
	pthread_mutex_lock(&w->mu);
	while (w->jobs || w->running)
		pthread_cond_wait(&w->idle, &w->mu);
	pthread_mutex_unlock(&w->mu);
}

void worker_get_progress(worker *w, worker_progress *p)
{
	pthread_mutex_lock(&w->mu);
	p->busy = w->jobs != NULL || w->running;
	p->done = w->done;
	p->total = w->total;
	p->step = w->running ? w->step : 0;
	p->steps = w->running ? w->steps : 0;
	snprintf(p->label, sizeof p->label, "%s", w->running ? w->label : "");
	pthread_mutex_unlock(&w->mu);
}

void worker_cancel(worker *w)
{
	pthread_mutex_lock(&w->mu);
	if (w->running && w->running_kind == WORK_COMMIT)
		atomic_store(&w->cancel, 1);
	for (job_node **pp = &w->jobs; *pp;) {
		job_node *n = *pp;
		if (n->job.kind != WORK_COMMIT) {
			pp = &n->next;
			continue;
		}
		/* still queued: it answers now, having written nothing */
		*pp = n->next;
		n->r->status = ms_fail(&n->r->err, MS_ERR_INTERRUPTED, "%s: commit cancelled before it started; nothing "
				       "was written", n->job.out_dir);
		push_result(w, n);
		w->done++;
	}
	if (!w->jobs && !w->running)
		pthread_cond_broadcast(&w->idle);
	pthread_mutex_unlock(&w->mu);
}

void worker_set_stage_hook(worker *w, worker_stage_fn fn, void *ctx)
{
	pthread_mutex_lock(&w->mu);
	w->stage_hook = fn;
	w->stage_ctx = ctx;
	pthread_mutex_unlock(&w->mu);
}
