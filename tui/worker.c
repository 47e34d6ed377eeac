#include "tui/worker.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct job_node {
	work_job job;
	struct job_node *next;
} job_node;

typedef struct result_node {
	work_result *r;
	struct result_node *next;
} result_node;

struct worker {
	const mdl_model *m;
	const calib *cal;
	worker_commit_fn commit;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t has_job;   /* signalled when a job is queued or stop is set */
	pthread_cond_t idle;      /* signalled when the queue empties and no job runs */
	job_node *jobs;
	result_node *results, *results_tail;
	int running, stop;
	int done, total;
	char label[128];
	volatile sig_atomic_t cancel;
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
	free(r);
}

/* The job's place in the queue: commits first, then evaluations, then statistics. */
static int priority(work_kind k)
{
	return k == WORK_COMMIT ? 0 : k == WORK_EVAL ? 1 : 2;
}

static void set_label(worker *w, const char *text)
{
	pthread_mutex_lock(&w->mu);
	snprintf(w->label, sizeof w->label, "%s", text);
	pthread_mutex_unlock(&w->mu);
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
	const pipe_block *blk = get_block(w, j->block, &r->err);
	if (!blk) {
		r->status = r->err.code;
		return;
	}
	r->status = pipe_analyze_block(blk, &j->ao, &r->stats, &r->err);
	r->routing = w->cal && r->status == MS_OK;
}

/* The merged block's figures: its evaluation, each group's merged expert's stable ranks, the compression. */
static ms_status eval_figures(const pipe_block *blk, const pipe_merged *mg, const work_job *j, work_result *r)
{
	ms_status st = pipe_eval_block(blk, mg, &j->p, j->block, j->eval_tokens, &r->eval, &r->err);
	if (st != MS_OK)
		return st;
	const int G = mg->groups;
	r->groups = G;
	r->merged_srank = malloc((size_t)G * MDL_NMAT * sizeof *r->merged_srank);
	if (!r->merged_srank)
		return ms_fail(&r->err, MS_ERR_NOMEM, "out of memory");
	st = pipe_stable_ranks(mg->experts, G, SRANK_DEFAULT_TOL, r->merged_srank, &r->err);
	if (st == MS_OK && mg->compression) {
		r->compression = malloc((size_t)G * MDL_NMAT * sizeof *r->compression);
		if (!r->compression)
			return ms_fail(&r->err, MS_ERR_NOMEM, "out of memory");
		memcpy(r->compression, mg->compression, (size_t)G * MDL_NMAT * sizeof *r->compression);
	}
	return st;
}

static void run_eval(worker *w, const work_job *j, work_result *r)
{
	const pipe_block *blk = get_block(w, j->block, &r->err);
	if (!blk) {
		r->status = r->err.code;
		return;
	}
	pipe_merged mg;
	r->status = pipe_merge_block(blk, &j->p, j->block, &j->mo, &mg, &r->err);
	if (r->status != MS_OK)
		return;
	r->status = eval_figures(blk, &mg, j, r);
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

static void run_job(worker *w, work_job *j, work_result *r)
{
	r->kind = j->kind;
	r->block = j->block;
	r->gen = j->gen;
	const char *label = w->m && j->block >= 0 && j->block < w->m->n_blocks ? w->m->blocks[j->block].label : "";
	char text[128];
	snprintf(text, sizeof text, "%s %s", j->kind == WORK_STATS ? "statistics" : j->kind == WORK_EVAL ? "evaluate" : "commit",
		 j->kind == WORK_COMMIT ? "" : label);
	set_label(w, text);
	switch (j->kind) {
	case WORK_STATS: run_stats(w, j, r); break;
	case WORK_EVAL: run_eval(w, j, r); break;
	case WORK_COMMIT: run_commit(w, j, r); break;
	}
	if (r->status != MS_OK && r->err.code == MS_OK)
		ms_fail(&r->err, r->status, NULL);
}

static void push_result(worker *w, work_result *r)
{
	result_node *n = malloc(sizeof *n);
	if (!n) {
		work_result_free(r);  /* nothing to report it with; the UI shows the block as pending */
		return;
	}
	n->r = r;
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
		pthread_mutex_unlock(&w->mu);
		work_result *r = calloc(1, sizeof *r);
		if (r)
			run_job(w, &n->job, r);
		work_job_free(&n->job);
		free(n);
		pthread_mutex_lock(&w->mu);
		if (r)
			push_result(w, r);
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

static void drop_jobs(worker *w)
{
	while (w->jobs) {
		job_node *n = w->jobs;
		w->jobs = n->next;
		work_job_free(&n->job);
		free(n);
	}
}

void worker_stop(worker *w)
{
	if (!w)
		return;
	pthread_mutex_lock(&w->mu);
	drop_jobs(w);
	w->stop = 1;
	w->cancel = 1;
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

/* Removes a queued evaluation of block b (a newer one replaces it). */
static void drop_queued_eval(worker *w, int b)
{
	for (job_node **pp = &w->jobs; *pp;) {
		job_node *n = *pp;
		if (n->job.kind == WORK_EVAL && n->job.block == b) {
			*pp = n->next;
			work_job_free(&n->job);
			free(n);
			w->total--;
		} else {
			pp = &n->next;
		}
	}
}

int worker_post(worker *w, work_job *job)
{
	job_node *n = malloc(sizeof *n);
	if (!n) {
		work_job_free(job);
		return -1;
	}
	n->job = *job;
	memset(job, 0, sizeof *job);
	pthread_mutex_lock(&w->mu);
	if (!w->jobs && !w->running)
		w->done = w->total = 0;  /* a new burst of work: the progress bar starts over */
	if (n->job.kind == WORK_EVAL)
		drop_queued_eval(w, n->job.block);
	if (n->job.kind == WORK_COMMIT)
		w->cancel = 0;
	job_node **pp = &w->jobs;
	while (*pp && priority((*pp)->job.kind) <= priority(n->job.kind))
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
	result_node *n = w->results;
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
	snprintf(p->label, sizeof p->label, "%s", w->running ? w->label : "");
	pthread_mutex_unlock(&w->mu);
}

void worker_cancel(worker *w)
{
	w->cancel = 1;
}
