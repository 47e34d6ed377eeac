/* moescope's own partition of work over threads.
 *
 * Results must be bit-identical for any thread count on any CPU. OpenBLAS promises no such thing when it splits
 * a call between its own threads (which kernel and which split it picks depends on the processor), so every BLAS
 * and LAPACK call runs single-threaded, and the parallelism lives here: a caller cuts its work into tasks whose
 * number and boundaries depend only on the problem (an expert, a matrix, a strip of rows, a chunk of tokens,
 * never the thread count), each task writes only its own outputs, and whatever must be summed across tasks is
 * summed by the caller afterwards in task order. Which thread runs a task then cannot change a bit.
 *
 * One pool of threads serves the process; the calling thread works too. A par_for issued from inside a task, or
 * while another thread's par_for holds the pool, runs its tasks in order on the calling thread: same results,
 * no deadlock. */
#ifndef PAR_PAR_H
#define PAR_PAR_H

#include <stddef.h>
#include <stdint.h>

#include "io/error.h"

/* Most threads a pool runs. */
#define PAR_MAX_THREADS 256

/* Sets the number of threads (the calling thread included) that par_for uses from now on; n <= 0 means one per
 * core this process may run on. Also pins OpenBLAS to one thread. Call it before the first par_for (the command line's --threads);
 * later calls wait for a running par_for to finish and rebuild the pool. Returns the count in force. */
int par_set_threads(int n);

/* The count par_for uses (par_set_threads' or, before any call, one per core). */
int par_threads(void);

/* Joins the pool's threads (a later par_for starts them again) and frees their scratch and the calling thread's
 * (par_scratch). For a clean exit under thread checkers. */
void par_shutdown(void);

/* The cores this process may run on, at least 1, at most PAR_MAX_THREADS. */
int par_cores(void);

/* One task: work item `task` of the caller's partition. A nonzero status stops the tasks after it from
 * starting; err (never NULL) is the task's own message buffer. */
typedef ms_status (*par_task_fn)(void *ctx, int64_t task, ms_error *err);

/* Runs tasks 0 .. n-1, each exactly once unless one fails, and returns when all are done. On failure it returns
 * the status of the lowest-numbered failing task and copies its message into err (which may be NULL): every task
 * before it has run, so the error is the one a single thread would report. */
ms_status par_for(int64_t n, par_task_fn fn, void *ctx, ms_error *err);

/* Scratch memory of the calling thread that outlives a task, so that the next task on the same thread finds its
 * pages mapped: a task that mallocs tens of megabytes gets fresh pages from the kernel each time, zeroed on first
 * touch, at a cost comparable to the task's arithmetic. Buffer `slot` (0 .. PAR_SCRATCH_SLOTS - 1) of this thread
 * at the current depth of task nesting, at least `bytes` long (contents undefined; every task must write what it
 * reads), valid until this thread asks for the same slot at the same depth again. A par_for run inline from inside
 * a task (one level deeper) gets buffers of its own, so a task may hold its slots while it calls code that uses
 * scratch too. NULL when out of memory or nested deeper than PAR_SCRATCH_DEPTH. The buffers are freed when their
 * thread ends, and the calling thread's by par_shutdown. Which thread runs a task changes nothing in its results,
 * as long as it reads only what it wrote. */
#define PAR_SCRATCH_SLOTS 4
#define PAR_SCRATCH_DEPTH 4
void *par_scratch(int slot, size_t bytes);

/* Splits [0, n) into the spans of par_for tasks of at least `grain` elements each, at most max_tasks of them:
 * the count depends on n, grain and max_tasks only. */
int64_t par_span_count(int64_t n, int64_t grain, int64_t max_tasks);
/* Begin and end of span i of count spans over [0, n). */
void par_span(int64_t n, int64_t count, int64_t i, int64_t *begin, int64_t *end);

#endif
