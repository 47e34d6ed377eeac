/* The interactive application's worker thread: everything slow (loading a block, its statistics, evaluating a
 * merge, committing a plan) runs here while the screen stays live. The UI posts jobs into a mutex-protected
 * queue and collects results from another; it polls (tui/app_curses.c waits at most 100 ms for a key), so no
 * wake-up channel is needed. A job owns copies of what it reads (the plan), so the UI can go on changing its
 * own. One block at a time is in memory: the last one loaded is kept for the next job on the same block (a
 * forward loads its own, one layer at a time). */
#ifndef WORKER_WORKER_H
#define WORKER_WORKER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "pipeline/forward.h"
#include "pipeline/pipeline.h"
#include "pipeline/search.h"
#include "io/calib.h"
#include "io/model.h"
#include "io/plan.h"
#include "pipeline/merge_run.h"

/* FORWARD: the model-level verdict, the whole model run forward on a token file (pipeline/forward.h), with the
 * plan's merged model beside the original when the job has a plan. SEARCH: the per-block budget search
 * (pipeline/search.h) on the same tokens. */
typedef enum { WORK_STATS, WORK_EVAL, WORK_COMMIT, WORK_FORWARD, WORK_SEARCH } work_kind;

/* mrun_run's signature: the commit job calls it (tests pass a stand-in). */
typedef ms_status (*worker_commit_fn)(const mdl_model *m, const calib *cal, const mrun_request *req,
				      mrun_progress_fn progress, void *ctx, const atomic_int *cancel,
				      mrun_summary *summary, ms_error *err);

typedef struct {
	work_kind kind;
	int block;                /* STATS, EVAL; -1 for COMMIT and FORWARD */
	unsigned gen;             /* returned with the result, to tell current answers from stale ones */
	pipe_analyze_options ao;  /* STATS; without a calibration set only the router-weight and weight bases and
				   * the stable ranks can be computed */
	plan p;                   /* EVAL, COMMIT, FORWARD with_plan: a copy the job owns */
	pipe_merge_options mo;    /* EVAL, FORWARD */
	int64_t eval_tokens;      /* EVAL */
	mrun_request req;         /* COMMIT: its plan and out_dir are pointed at the job's own when it runs */
	char out_dir[4096];       /* COMMIT */
	const arch_model *arch;   /* FORWARD: the model's architecture and the tokens, owned by the caller and */
	const tok_set *tok;       /* kept until the worker stops */
	int with_plan;            /* FORWARD: run the merged model of p beside the original (else the original only) */
	srch_cache *search_cache; /* SEARCH (with arch and tok): the caller's cache, touched only by the worker while
				   * the job runs and kept until the worker stops */
	srch_options search;      /* SEARCH: progress and cancel are the worker's */
	int side;                 /* EVAL: a side evaluation (the comparison view's variants): it neither replaces the
				   * block's own evaluation nor is replaced by it, and waits behind the statistics */
} work_job;

typedef struct {
	work_kind kind;
	int block;
	unsigned gen;
	ms_status status;
	ms_error err;
	/* STATS */
	pipe_analyze_options ao;  /* what was asked */
	int routing;              /* frequency and co-activation were computed (only with calibration) */
	pipe_stats stats;
	/* EVAL */
	blk_eval_result eval;
	int groups;
	double *merged_srank;     /* [groups, MDL_NMAT] */
	cmp_result *compression;  /* [groups, MDL_NMAT], or NULL without compression */
	/* COMMIT */
	mrun_summary summary;
	/* FORWARD */
	int with_plan;
	fwd_result forward;
	/* SEARCH */
	srch_result search;
} work_result;

typedef struct {
	int busy;                 /* a job runs or waits */
	int done, total;          /* jobs finished / posted since the worker was last idle */
	int step, steps;          /* how far the running job is, for a job that says (a forward's layers), else 0 / 0 */
	char label[128];          /* the running job: "statistics 3", "evaluate 5", "commit: write 2/7" */
} worker_progress;

typedef struct worker worker;

/* Called on the worker thread each time the running job enters a stage, with the label the progress line shows
 * for it ("evaluate 3: merge", "commit: write 2/7"), before the job looks whether it was cancelled. Tests hold a
 * job at a known point with it. */
typedef void (*worker_stage_fn)(void *ctx, const char *label);

/* How worker_post allocates a job's queue entry and its result (calloc by default). Tests point it at an
 * allocator that fails; set it only while no worker_post runs. */
extern void *(*worker_calloc)(size_t n, size_t size);

/* Starts the thread; NULL when out of resources. */
worker *worker_start(const mdl_model *m, const calib *cal, worker_commit_fn commit);
/* Drops the queued jobs, cancels the running job, waits for it and frees everything. */
void worker_stop(worker *w);
/* Queues *job (taking what it owns; *job is cleared). A commit goes first, evaluations before statistics, a
 * forward last, and a new evaluation of a block replaces one of the same block still queued and cancels one that is running (its
 * answer would be stale). The job's result is allocated here, so once posted a job always answers. 0, or -1
 * when out of memory (the job is freed; the caller reports it). */
int worker_post(worker *w, work_job *job);
/* The oldest result not yet taken, or NULL; free it with work_result_free. */
work_result *worker_poll(worker *w);
/* Blocks until no job runs or waits. */
void worker_wait_idle(worker *w);
void worker_get_progress(worker *w, worker_progress *p);
/* Drops the jobs of a kind whose answer would be stale (of block b for STATS and EVAL; any block for COMMIT and
 * FORWARD): queued ones are removed without answering, a running one is cancelled and answers
 * MS_ERR_INTERRUPTED. */
void worker_drop(worker *w, work_kind kind, int b);
/* Cancels the commit: a running one stops and removes what it wrote, a queued one never starts. Either answers
 * with MS_ERR_INTERRUPTED. Other jobs are left alone. */
void worker_cancel(worker *w);
/* Installs fn (NULL for none) as the stage hook; call it while the worker is idle. */
void worker_set_stage_hook(worker *w, worker_stage_fn fn, void *ctx);

void work_job_free(work_job *j);
void work_result_free(work_result *r);

#endif
