#include "analysis/par.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <cblas.h>

/* One par_for call: its tasks are claimed in increasing order from `next`, so once a task fails every task
 * before it has been claimed; `failed` lets the others stop claiming past it. */
typedef struct {
	par_task_fn fn;
	void *ctx;
	int64_t n;
	atomic_llong next;      /* the next task to claim */
	atomic_llong failed;    /* the lowest failing task so far, or n */
	pthread_mutex_t lock;   /* guards st and err */
	ms_status st;
	ms_error err;
} par_job;

/* The pool. `lock` guards every field but `owner`, which the thread whose par_for drives the pool holds from the
 * posting of its job to the end (so one job runs at a time and par_set_threads waits for it). */
static struct {
	pthread_mutex_t lock;
	pthread_cond_t wake;         /* a new job or quit */
	pthread_cond_t done;         /* a worker finished the job */
	pthread_mutex_t owner;
	int threads;                 /* configured count, the caller included; 0 before par_set_threads */
	int started;                 /* worker threads running */
	pthread_t tid[PAR_MAX_THREADS];
	unsigned long generation;    /* bumped for every job */
	unsigned long base;          /* the generation new workers start from */
	par_job *job;
	int busy;                    /* workers that have not finished the current job */
	int quit;
} pool = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.wake = PTHREAD_COND_INITIALIZER,
	.done = PTHREAD_COND_INITIALIZER,
	.owner = PTHREAD_MUTEX_INITIALIZER,
};

/* How many tasks this thread is inside (nonzero: a par_for runs inline). */
static _Thread_local int in_task;

/* ---- per-thread scratch ----
 * Each thread's buffers hang off a pthread key, whose destructor frees them when the thread ends (pool workers,
 * or any other thread that ran tasks inline); par_shutdown frees the calling thread's, which never ends that way. */
typedef struct {
	void *buf[PAR_SCRATCH_DEPTH][PAR_SCRATCH_SLOTS];
	size_t bytes[PAR_SCRATCH_DEPTH][PAR_SCRATCH_SLOTS];
} scratch_set;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static int scratch_ok;

static void scratch_free(void *p)
{
	scratch_set *s = p;
	if (!s)
		return;
	for (int d = 0; d < PAR_SCRATCH_DEPTH; d++)
		for (int k = 0; k < PAR_SCRATCH_SLOTS; k++)
			free(s->buf[d][k]);
	free(s);
}

static void scratch_init(void)
{
	scratch_ok = pthread_key_create(&scratch_key, scratch_free) == 0;
}

void *par_scratch(int slot, size_t bytes)
{
	const int depth = in_task;
	pthread_once(&scratch_once, scratch_init);
	if (!scratch_ok || slot < 0 || slot >= PAR_SCRATCH_SLOTS || depth >= PAR_SCRATCH_DEPTH)
		return NULL;
	scratch_set *s = pthread_getspecific(scratch_key);
	if (!s) {
		if (!(s = calloc(1, sizeof *s)))
			return NULL;
		if (pthread_setspecific(scratch_key, s) != 0) {
			free(s);
			return NULL;
		}
	}
	if (bytes == 0)
		bytes = 1;
	if (s->bytes[depth][slot] < bytes) {
		free(s->buf[depth][slot]); /* the old contents need not survive: a plain malloc, no copy */
		s->buf[depth][slot] = malloc(bytes);
		s->bytes[depth][slot] = s->buf[depth][slot] ? bytes : 0;
	}
	return s->buf[depth][slot];
}

/* Frees the calling thread's scratch. */
static void scratch_release(void)
{
	pthread_once(&scratch_once, scratch_init);
	if (!scratch_ok)
		return;
	scratch_free(pthread_getspecific(scratch_key));
	(void)pthread_setspecific(scratch_key, NULL);
}

static pthread_once_t blas_once = PTHREAD_ONCE_INIT;

static void pin_blas(void)
{
	openblas_set_num_threads(1);
}

int par_cores(void)
{
	/* The cores this process may run on (taskset, cgroup cpusets), not every core the machine has. */
	cpu_set_t set;
	const int n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
	return n < 1 ? 1 : n > PAR_MAX_THREADS ? PAR_MAX_THREADS : n;
}

static void run_tasks(par_job *j)
{
	const int outer = in_task;
	in_task = outer + 1;
	for (;;) {
		const int64_t t = atomic_fetch_add(&j->next, 1);
		if (t >= j->n || t > atomic_load(&j->failed))
			break;
		ms_error e;
		e.code = MS_OK;
		e.msg[0] = '\0';
		const ms_status st = j->fn(j->ctx, t, &e);
		if (st == MS_OK)
			continue;
		pthread_mutex_lock(&j->lock);
		if (t < atomic_load(&j->failed)) {
			atomic_store(&j->failed, t);
			j->st = st;
			j->err = e;
		}
		pthread_mutex_unlock(&j->lock);
	}
	in_task = outer;
}

static void *worker_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&pool.lock);
	unsigned long seen = pool.base;
	for (;;) {
		while (!pool.quit && pool.generation == seen)
			pthread_cond_wait(&pool.wake, &pool.lock);
		if (pool.quit)
			break;
		seen = pool.generation;
		par_job *j = pool.job;
		pthread_mutex_unlock(&pool.lock);
		run_tasks(j);
		pthread_mutex_lock(&pool.lock);
		if (--pool.busy == 0)
			pthread_cond_signal(&pool.done);
	}
	pthread_mutex_unlock(&pool.lock);
	return NULL;
}

/* Joins every worker. The caller holds `owner`. */
static void stop_workers(void)
{
	pthread_mutex_lock(&pool.lock);
	pool.quit = 1;
	pthread_cond_broadcast(&pool.wake);
	const int n = pool.started;
	pthread_mutex_unlock(&pool.lock);
	for (int i = 0; i < n; i++)
		pthread_join(pool.tid[i], NULL);
	pthread_mutex_lock(&pool.lock);
	pool.started = 0;
	pool.quit = 0;
	pthread_mutex_unlock(&pool.lock);
}

/* Makes the pool run threads - 1 workers (fewer if the system refuses threads: tasks then run on fewer threads,
 * with the same results). The caller holds `owner`. */
static void ensure_workers(int threads)
{
	if (pool.started == threads - 1)
		return;
	if (pool.started > 0)
		stop_workers();
	pthread_mutex_lock(&pool.lock);
	pool.base = pool.generation;
	pthread_mutex_unlock(&pool.lock);
	int n = 0;
	while (n < threads - 1 && pthread_create(&pool.tid[n], NULL, worker_main, NULL) == 0)
		n++;
	pthread_mutex_lock(&pool.lock);
	pool.started = n;
	pthread_mutex_unlock(&pool.lock);
}

int par_set_threads(int n)
{
	pin_blas(); /* every call, in case something changed OpenBLAS's count since */
	const int count = n <= 0 ? par_cores() : n > PAR_MAX_THREADS ? PAR_MAX_THREADS : n;
	pthread_mutex_lock(&pool.owner);
	pthread_mutex_lock(&pool.lock);
	pool.threads = count;
	pthread_mutex_unlock(&pool.lock);
	pthread_mutex_unlock(&pool.owner);
	return count;
}

int par_threads(void)
{
	pthread_mutex_lock(&pool.lock);
	const int n = pool.threads;
	pthread_mutex_unlock(&pool.lock);
	return n > 0 ? n : par_cores();
}

void par_shutdown(void)
{
	pthread_mutex_lock(&pool.owner);
	if (pool.started > 0)
		stop_workers();
	pthread_mutex_unlock(&pool.owner);
	scratch_release();
}

/* Hands the job to the workers, works on it too and waits for them. The caller holds `owner`. */
static void run_on_pool(par_job *j)
{
	pthread_mutex_lock(&pool.lock);
	pool.job = j;
	pool.busy = pool.started;
	pool.generation++;
	pthread_cond_broadcast(&pool.wake);
	pthread_mutex_unlock(&pool.lock);
	run_tasks(j);
	pthread_mutex_lock(&pool.lock);
	while (pool.busy > 0)
		pthread_cond_wait(&pool.done, &pool.lock);
	pool.job = NULL;
	pthread_mutex_unlock(&pool.lock);
}

ms_status par_for(int64_t n, par_task_fn fn, void *ctx, ms_error *err)
{
	if (n <= 0)
		return MS_OK;
	if (!fn)
		return ms_fail(err, MS_ERR_ARG, "parallel work without a task function");
	pthread_once(&blas_once, pin_blas);
	par_job j = {.fn = fn, .ctx = ctx, .n = n, .st = MS_OK};
	atomic_init(&j.next, 0);
	atomic_init(&j.failed, n);
	pthread_mutex_init(&j.lock, NULL);
	const int threads = par_threads();
	if (n > 1 && threads > 1 && !in_task && pthread_mutex_trylock(&pool.owner) == 0) {
		ensure_workers(threads);
		if (pool.started > 0)
			run_on_pool(&j);
		else
			run_tasks(&j);
		pthread_mutex_unlock(&pool.owner);
	} else {
		run_tasks(&j);
	}
	pthread_mutex_destroy(&j.lock);
	if (j.st == MS_OK)
		return MS_OK;
	if (err && j.err.code != MS_OK)
		*err = j.err;
	else
		ms_fail(err, j.st, NULL);
	return j.st;
}

int64_t par_span_count(int64_t n, int64_t grain, int64_t max_tasks)
{
	if (n <= 0)
		return 0;
	if (grain < 1)
		grain = 1;
	const int64_t count = n / grain + (n % grain != 0);
	return max_tasks > 0 && count > max_tasks ? max_tasks : count;
}

void par_span(int64_t n, int64_t count, int64_t i, int64_t *begin, int64_t *end)
{
	/* n * i / count without overflow: n = q count + r */
	const int64_t q = n / count, r = n % count;
	*begin = i * q + (i < r ? i : r);
	*end = *begin + q + (i < r);
}
