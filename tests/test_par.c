/* analysis/par: every task runs exactly once on any thread count, failures report the lowest failing task as
 * one thread would, nested and concurrent calls run inline without deadlock, spans cover [0, n) exactly, and
 * OpenBLAS is pinned to one thread. */
#include <cblas.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "analysis/par.h"
#include "tests/test.h"

enum { N_TASKS = 5000 };

typedef struct {
	atomic_int runs[N_TASKS];
	int64_t fail_from;   /* tasks >= fail_from whose number is odd fail; -1 for none */
} count_job;

static ms_status count_task(void *ctx, int64_t t, ms_error *err)
{
	count_job *j = ctx;
	atomic_fetch_add(&j->runs[t], 1);
	if (j->fail_from >= 0 && t >= j->fail_from && t % 2 == 1)
		return ms_fail(err, MS_ERR_NUMERIC, "task %lld failed", (long long)t);
	return MS_OK;
}

static void test_each_task_once(void)
{
	static count_job j;
	for (int threads = 1; threads <= 4; threads++) {
		CHECK(par_set_threads(threads) == threads && par_threads() == threads, "threads %d", threads);
		for (int t = 0; t < N_TASKS; t++)
			atomic_init(&j.runs[t], 0);
		j.fail_from = -1;
		ms_error err = {0};
		CHECK(par_for(N_TASKS, count_task, &j, &err) == MS_OK, "%d threads: %s", threads, err.msg);
		int bad = 0;
		for (int t = 0; t < N_TASKS; t++)
			bad += atomic_load(&j.runs[t]) != 1;
		CHECK(bad == 0, "%d threads: %d tasks did not run exactly once", threads, bad);
	}
}

/* The reported failure is the lowest failing task, and every task before it ran. */
static void test_lowest_failure(void)
{
	static count_job j;
	for (int threads = 1; threads <= 3; threads++) {
		par_set_threads(threads);
		for (int t = 0; t < N_TASKS; t++)
			atomic_init(&j.runs[t], 0);
		j.fail_from = 1200;
		ms_error err = {0};
		ms_status st = par_for(N_TASKS, count_task, &j, &err);
		CHECK(st == MS_ERR_NUMERIC && err.code == MS_ERR_NUMERIC, "%d threads: status %d", threads, (int)st);
		CHECK(strcmp(err.msg, "task 1201 failed") == 0, "%d threads: message '%s'", threads, err.msg);
		int missing = 0;
		for (int t = 0; t <= 1201; t++)
			missing += atomic_load(&j.runs[t]) != 1;
		CHECK(missing == 0, "%d threads: %d tasks before the failure did not run once", threads, missing);
	}
}

/* A task that itself calls par_for: the inner loop runs inline on the task's thread. */
typedef struct {
	atomic_int inner_runs;
} nest_job;

static ms_status inner_task(void *ctx, int64_t t, ms_error *err)
{
	(void)t, (void)err;
	atomic_fetch_add(&((nest_job *)ctx)->inner_runs, 1);
	return MS_OK;
}

static ms_status outer_task(void *ctx, int64_t t, ms_error *err)
{
	(void)t;
	return par_for(10, inner_task, ctx, err);
}

static void test_nested(void)
{
	par_set_threads(3);
	nest_job j;
	atomic_init(&j.inner_runs, 0);
	CHECK(par_for(20, outer_task, &j, NULL) == MS_OK);
	CHECK(atomic_load(&j.inner_runs) == 200, "inner tasks ran %d times", atomic_load(&j.inner_runs));
}

/* Two threads issue par_for at once (the application's worker beside a command): both finish, each task once. */
static void *concurrent_caller(void *arg)
{
	count_job *j = arg;
	j->fail_from = -1;
	for (int t = 0; t < N_TASKS; t++)
		atomic_init(&j->runs[t], 0);
	for (int rep = 0; rep < 20; rep++)
		par_for(N_TASKS, count_task, j, NULL);
	return NULL;
}

static void test_concurrent_callers(void)
{
	static count_job a, b;
	par_set_threads(3);
	pthread_t ta, tb;
	CHECK(pthread_create(&ta, NULL, concurrent_caller, &a) == 0);
	CHECK(pthread_create(&tb, NULL, concurrent_caller, &b) == 0);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	int bad = 0;
	for (int t = 0; t < N_TASKS; t++)
		bad += atomic_load(&a.runs[t]) != 20 || atomic_load(&b.runs[t]) != 20;
	CHECK(bad == 0, "%d tasks did not run 20 times in each caller", bad);
}

static void test_spans(void)
{
	const int64_t ns[] = {0, 1, 7, 1000, 1001, 123457};
	for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
		const int64_t n = ns[k];
		const int64_t count = par_span_count(n, 100, 16);
		CHECK(n == 0 ? count == 0 : count >= 1 && count <= 16, "n %lld: %lld spans", (long long)n,
		      (long long)count);
		CHECK(n == 0 || count == (n / 100 + (n % 100 != 0) < 16 ? n / 100 + (n % 100 != 0) : 16));
		int64_t next = 0;
		for (int64_t i = 0; i < count; i++) {
			int64_t b, e;
			par_span(n, count, i, &b, &e);
			CHECK(b == next && e > b, "n %lld span %lld: [%lld, %lld)", (long long)n, (long long)i,
			      (long long)b, (long long)e);
			next = e;
		}
		CHECK(next == n, "n %lld: spans end at %lld", (long long)n, (long long)next);
	}
}

/* par_scratch: a thread's buffer survives from task to task (what a task wrote, the next task on that thread finds
 * at the same address while it asks for no more bytes), slots are distinct, a par_for nested inside a task gets
 * buffers of its own, which leave the outer task's contents alone, and out-of-range slots give NULL. */
enum { SCR_TASKS = 64, SCR_BYTES = 4096 };

typedef struct {
	pthread_t thread[SCR_TASKS];
	unsigned char *buf[SCR_TASKS][2];
	int seen_mark[SCR_TASKS];   /* the mark an earlier task on the same thread left, or -1 */
	int clobbered;              /* a nested task's buffer was an outer one, or wrote into it */
} scratch_job;

static ms_status inner_scratch_task(void *ctx, int64_t t, ms_error *err)
{
	(void)err;
	unsigned char **outer = ctx;
	unsigned char *p = par_scratch(0, SCR_BYTES);
	if (!p || p == outer[0] || p == outer[1])
		return MS_ERR_NUMERIC;
	memset(p, 0xee, SCR_BYTES);
	(void)t;
	return MS_OK;
}

static ms_status scratch_task(void *ctx, int64_t t, ms_error *err)
{
	scratch_job *j = ctx;
	unsigned char *a = par_scratch(0, SCR_BYTES), *b = par_scratch(1, SCR_BYTES / 2);
	j->thread[t] = pthread_self();
	j->buf[t][0] = a;
	j->buf[t][1] = b;
	if (!a || !b || a == b)
		return ms_fail(err, MS_ERR_NOMEM, "task %lld: no scratch", (long long)t);
	j->seen_mark[t] = a[0] == 0xa5 ? a[1] : -1;
	memset(a, 0x5a, SCR_BYTES);
	unsigned char *outer[2] = {a, b};
	if (par_for(3, inner_scratch_task, outer, NULL) != MS_OK)
		j->clobbered++;
	for (int k = 0; k < SCR_BYTES; k++)
		j->clobbered += a[k] != 0x5a;
	a[0] = 0xa5;
	a[1] = (unsigned char)t;
	return MS_OK;
}

static void test_scratch(void)
{
	for (int threads = 1; threads <= 3; threads++) {
		par_set_threads(threads);
		static scratch_job j;
		memset(&j, 0, sizeof j);
		ms_error err = {0};
		CHECK(par_for(SCR_TASKS, scratch_task, &j, &err) == MS_OK, "%d threads: %s", threads, err.msg);
		CHECK(j.clobbered == 0, "%d threads: nested scratch touched the outer task's (%d)", threads, j.clobbered);
		int same_thread_pairs = 0, bad = 0;
		for (int t = 1; t < SCR_TASKS; t++) {
			/* the latest earlier task on this thread */
			int prev = -1;
			for (int u = t - 1; u >= 0 && prev < 0; u--)
				if (pthread_equal(j.thread[u], j.thread[t]))
					prev = u;
			if (prev < 0)
				continue;
			same_thread_pairs++;
			bad += j.buf[t][0] != j.buf[prev][0] || j.buf[t][1] != j.buf[prev][1];
		}
		CHECK(same_thread_pairs > 0 && bad == 0, "%d threads: %d of %d reuses got another buffer", threads, bad,
		      same_thread_pairs);
		/* on one thread every task follows the one before it and must find its mark */
		if (threads == 1)
			for (int t = 1; t < SCR_TASKS; t++)
				CHECK(j.seen_mark[t] == t - 1, "task %d found mark %d", t, j.seen_mark[t]);
	}
	CHECK(par_scratch(-1, 16) == NULL && par_scratch(PAR_SCRATCH_SLOTS, 16) == NULL);
	unsigned char *p = par_scratch(0, 16);
	CHECK(p != NULL);
	if (p)
		memset(p, 1, 16);
	CHECK(par_scratch(3, (size_t)1 << 20) != NULL); /* grows; freed by par_shutdown (LeakSanitizer checks) */
}

/* Whatever OpenBLAS was told before (OPENBLAS_NUM_THREADS, a library), moescope runs it on one thread. */
static void test_blas_pinned(void)
{
	openblas_set_num_threads(2);
	par_set_threads(2);
	CHECK(openblas_get_num_threads() == 1, "OpenBLAS runs %d threads", openblas_get_num_threads());
}

int main(void)
{
	RUN(test_each_task_once);
	RUN(test_lowest_failure);
	RUN(test_nested);
	RUN(test_concurrent_callers);
	RUN(test_spans);
	RUN(test_blas_pinned);
	RUN(test_scratch);
	par_shutdown();
	return test_summary();
}
