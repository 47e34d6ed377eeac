/* analysis/par: every task runs exactly once on any thread count, failures report the lowest failing task as
 * one thread would, nested and concurrent calls run inline without deadlock, spans cover [0, n) exactly, and
 * OpenBLAS is pinned to one thread. */
#include <cblas.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

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
	par_shutdown();
	return test_summary();
}
