/* `make bench`: times every stage of the moescope pipeline on one synthetic BF16 block of each real shape that
 * docs/design.md §7 names (OLMoE: E=64, top-8, d=2048, f=1024; Mixtral: E=8, top-2, d=4096, f=14336; 4096
 * calibration tokens) and prints each time beside a limit measured in the same run on this machine:
 *   sgemm   the stage's floating-point work at the GFLOP/s of cblas_sgemm on a large square problem
 *   memcpy  the bytes it moves at memcpy's bandwidth (bytes read plus bytes written)
 *   disk    a plain write(2) of the same bytes plus fsync
 *   svd     a full LAPACKE singular value decomposition of the same matrices
 *   hungarian  a textbook O(n^3) Hungarian method on the same cost matrix
 * A roofline stage's ratio is limit time / measured time (100% = at the limit); a reference algorithm's is
 * reference time / measured time (how many times faster). No test asserts a time: this is for people. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <fcntl.h>
#include <getopt.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cblas.h>
#include <lapacke.h>
#include <cjson/cJSON.h>

#include "analysis/lap.h"
#include "analysis/par.h"
#include "analysis/layer.h"
#include "pipeline/pipeline.h"
#include "analysis/routing.h"
#include "analysis/wtw.h"
#include "bench/hungarian.h"
#include "bench/synth.h"
#include "cli/blas.h"
#include "io/jsonfile.h"

/* ---- clocks and machine limits ---- */

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

typedef struct {
	double memcpy_bps;   /* bytes moved (read + written) per second */
	double sgemm_flops;  /* FLOP/s of a large square sgemm */
	int sgemm_n;
	double load_start, load_end; /* 1-minute load average around the run: other work on the machine */
} bench_limits;

static double loadavg(void)
{
	double l = NAN;
	FILE *f = fopen("/proc/loadavg", "r");
	if (f) {
		if (fscanf(f, "%lf", &l) != 1)
			l = NAN;
		fclose(f);
	}
	return l;
}

/* Best of a few copies of a 256 MiB buffer, both buffers touched first so no page fault is timed. */
static double measure_memcpy(void)
{
	const size_t n = (size_t)256 << 20;
	char *a = malloc(n), *b = malloc(n);
	double best = INFINITY;
	if (!a || !b) {
		free(a);
		free(b);
		return NAN;
	}
	memset(a, 1, n);
	memset(b, 2, n);
	for (int r = 0; r < 5; r++) {
		double t = now();
		memcpy(b, a, n);
		t = now() - t;
		best = t < best ? t : best;
		a[r] = b[n - 1 - (size_t)r]; /* keeps the copies observable */
	}
	free(a);
	free(b);
	return 2.0 * (double)n / best;
}

/* Best of three sgemm calls C = A B^T on n x n matrices, after one warm-up call. */
static double measure_sgemm(int n)
{
	const size_t nn = (size_t)n * n;
	float *a = malloc(nn * sizeof *a), *b = malloc(nn * sizeof *b), *c = malloc(nn * sizeof *c);
	double best = INFINITY;
	if (!a || !b || !c) {
		free(a), free(b), free(c);
		return NAN;
	}
	for (size_t i = 0; i < nn; i++) {
		a[i] = (float)(i % 7) * 0.1f;
		b[i] = (float)(i % 5) * 0.1f;
	}
	/* The limit is the machine's: OpenBLAS on every thread moescope uses, for this measurement only (moescope's
	 * own calls run single-threaded inside its tasks, analysis/par.h). */
	openblas_set_num_threads(par_threads());
	for (int r = 0; r < 4; r++) {
		double t = now();
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
		t = now() - t;
		if (r > 0)
			best = t < best ? t : best;
	}
	openblas_set_num_threads(1);
	free(a), free(b), free(c);
	return 2.0 * (double)n * n * n / best;
}

/* ---- result rows ---- */

typedef enum { LIM_NONE, LIM_SGEMM, LIM_MEMCPY, LIM_DISK, LIM_SVD, LIM_HUNGARIAN } limit_kind;
static const char *const limit_names[] = {"none", "sgemm", "memcpy", "disk", "svd", "hungarian"};

typedef struct {
	char shape[16];
	char stage[48];
	double seconds;
	double flops;         /* floating-point work counted (multiply-add = 2) */
	double bytes;         /* bytes moved counted */
	limit_kind limit;
	double limit_seconds; /* the limit's time for the same work, or the reference algorithm's time */
	double cpu;           /* CPU seconds per second of the timed run: under 2 on 2 cores means it waited or was
			       * crowded out by other work */
	int runs;             /* runs made; the time is the fastest */
	char note[200];
} bench_row;

typedef struct {
	bench_row *rows;
	int n, cap;
	const bench_limits *lim;
} bench_table;

static bench_row *add_row(bench_table *tb, const char *shape, const char *stage, double seconds)
{
	if (tb->n == tb->cap) {
		int cap = tb->cap ? 2 * tb->cap : 32;
		bench_row *p = realloc(tb->rows, (size_t)cap * sizeof *p);
		if (!p) {
			fprintf(stderr, "bench: out of memory\n");
			exit(1);
		}
		tb->rows = p;
		tb->cap = cap;
	}
	bench_row *r = &tb->rows[tb->n++];
	memset(r, 0, sizeof *r);
	snprintf(r->shape, sizeof r->shape, "%s", shape);
	snprintf(r->stage, sizeof r->stage, "%s", stage);
	r->seconds = seconds;
	r->cpu = NAN; /* for the rows that time their own parts */
	return r;
}

/* The limit of a roofline stage: the slower of its flops at sgemm speed and its bytes at memcpy speed. */
static void roofline(const bench_table *tb, bench_row *r, double flops, double bytes)
{
	r->flops = flops;
	r->bytes = bytes;
	const double tf = flops / tb->lim->sgemm_flops, tm = bytes / tb->lim->memcpy_bps;
	r->limit = tf >= tm ? LIM_SGEMM : LIM_MEMCPY;
	r->limit_seconds = tf >= tm ? tf : tm;
}

static int is_speedup(limit_kind k)
{
	return k == LIM_SVD || k == LIM_HUNGARIAN;
}

static double ratio(const bench_row *r)
{
	return r->limit == LIM_NONE || !(r->seconds > 0) ? NAN : r->limit_seconds / r->seconds;
}

static void format_rate(const bench_row *r, char *buf, size_t len)
{
	if (r->limit == LIM_SGEMM)
		snprintf(buf, len, "%.1f GFLOP/s", r->flops / r->seconds * 1e-9);
	else if (r->limit == LIM_MEMCPY || r->limit == LIM_DISK)
		snprintf(buf, len, "%.2f GB/s", r->bytes / r->seconds * 1e-9);
	else if (r->flops > 0)
		snprintf(buf, len, "%.1f GFLOP/s", r->flops / r->seconds * 1e-9);
	else
		snprintf(buf, len, "-");
}

static void format_limit(const bench_table *tb, const bench_row *r, char *buf, size_t len)
{
	switch (r->limit) {
	case LIM_SGEMM: snprintf(buf, len, "sgemm %.1f GFLOP/s", tb->lim->sgemm_flops * 1e-9); break;
	case LIM_MEMCPY: snprintf(buf, len, "memcpy %.2f GB/s", tb->lim->memcpy_bps * 1e-9); break;
	case LIM_DISK: snprintf(buf, len, "disk %.2f GB/s", r->bytes / r->limit_seconds * 1e-9); break;
	case LIM_SVD: snprintf(buf, len, "svd %.2f s", r->limit_seconds); break;
	case LIM_HUNGARIAN: snprintf(buf, len, "hungarian %.3f s", r->limit_seconds); break;
	default: snprintf(buf, len, "-"); break;
	}
}

static void print_row(const bench_table *tb, const bench_row *r)
{
	char rate[32], lim[40], rat[16];
	format_rate(r, rate, sizeof rate);
	format_limit(tb, r, lim, sizeof lim);
	const double q = ratio(r);
	if (isnan(q))
		snprintf(rat, sizeof rat, "-");
	else if (is_speedup(r->limit))
		snprintf(rat, sizeof rat, "%.1fx", q);
	else
		snprintf(rat, sizeof rat, "%.0f%%", 100.0 * q);
	char cpu[16];
	if (isnan(r->cpu))
		snprintf(cpu, sizeof cpu, "-");
	else
		snprintf(cpu, sizeof cpu, "%.2f", r->cpu);
	printf("%-8s %-31s %9.3f %4s %16s %21s %7s  %s\n", r->shape, r->stage, r->seconds, cpu, rate, lim, rat,
	       r->note);
	fflush(stdout);
}

static void print_header(void)
{
	printf("%-8s %-31s %9s %4s %16s %21s %7s  %s\n", "shape", "stage", "time s", "cpu", "achieved", "limit", "ratio",
	       "note");
}

static void finish_row(bench_table *tb, bench_row *r)
{
	print_row(tb, r); /* as it lands: the run is long */
}

static cJSON *row_json(const bench_row *r)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "shape", r->shape);
	cJSON_AddStringToObject(o, "stage", r->stage);
	cJSON_AddNumberToObject(o, "seconds", r->seconds);
	if (isnan(r->cpu))
		cJSON_AddNullToObject(o, "cpu_per_second");
	else
		cJSON_AddNumberToObject(o, "cpu_per_second", r->cpu);
	cJSON_AddNumberToObject(o, "runs", r->runs);
	cJSON_AddNumberToObject(o, "flops", r->flops);
	cJSON_AddNumberToObject(o, "bytes", r->bytes);
	cJSON_AddStringToObject(o, "limit", limit_names[r->limit]);
	cJSON_AddNumberToObject(o, "limit_seconds", r->limit_seconds);
	const double q = ratio(r);
	if (isnan(q))
		cJSON_AddNullToObject(o, is_speedup(r->limit) ? "speedup" : "fraction_of_limit");
	else
		cJSON_AddNumberToObject(o, is_speedup(r->limit) ? "speedup" : "fraction_of_limit", q);
	cJSON_AddStringToObject(o, "note", r->note);
	return o;
}

/* The roofline rows again with the final limits (the best measured in the whole run), then the whole table. */
static void final_table(bench_table *tb)
{
	for (int i = 0; i < tb->n; i++)
		if (tb->rows[i].limit == LIM_SGEMM || tb->rows[i].limit == LIM_MEMCPY)
			roofline(tb, &tb->rows[i], tb->rows[i].flops, tb->rows[i].bytes);
	printf("\nfinal table: limits memcpy %.2f GB/s (read+write), sgemm %.1f GFLOP/s (n=%d), the best of the run\n",
	       tb->lim->memcpy_bps * 1e-9, tb->lim->sgemm_flops * 1e-9, tb->lim->sgemm_n);
	print_header();
	for (int i = 0; i < tb->n; i++)
		print_row(tb, &tb->rows[i]);
}

/* ---- one shape ---- */

typedef struct bench_ctx bench_ctx;
typedef void (*stage_fn)(bench_ctx *c);

struct bench_ctx {
	const syn_shape *s;
	const char *dir;      /* holds the model and calibration files */
	bench_table *tb;
	mdl_model *m;
	calib *cal;
	pipe_block blk;
	pipe_stats stats;     /* routing and router-logits similarity, for the plan */
	plan p;
	pipe_merged mg;
	int64_t refit_tokens; /* fit tokens of the refit row */
	int groups;
	int align_sub;        /* Hungarian and LAP compared on the leading align_sub x align_sub block (0: whole) */
	int svd_samples;      /* matrices given a full SVD */
	/* what the stage bodies below leave for their rows */
	sim_base base;
	double cv;
	blk_eval_result eval;
};

static void die(const char *what, const ms_error *err)
{
	fprintf(stderr, "bench: %s: %s\n", what, err && err->msg[0] ? err->msg : "failed");
	exit(1);
}

static double cpu_seconds(void)
{
	struct rusage u;
	getrusage(RUSAGE_SELF, &u);
	return (double)u.ru_utime.tv_sec + (double)u.ru_stime.tv_sec +
	       1e-6 * ((double)u.ru_utime.tv_usec + (double)u.ru_stime.tv_usec);
}

/* Runs a stage body at least min_runs times and then again while the runs so far took under REPEAT_SECONDS (at
 * most MAX_RUNS), and keeps the fastest: on a shared machine the fastest run is the least disturbed one. */
#define REPEAT_SECONDS 3.0
#define MAX_RUNS 3

static bench_row *timed_row(bench_ctx *c, const char *stage, stage_fn fn, int min_runs)
{
	double best = INFINITY, best_cpu = 0.0, spent = 0.0;
	int runs = 0;
	while (runs < min_runs || (runs < MAX_RUNS && spent < REPEAT_SECONDS)) {
		const double c0 = cpu_seconds(), t0 = now();
		fn(c);
		const double t = now() - t0, cpu = cpu_seconds() - c0;
		if (t < best)
			best = t, best_cpu = cpu;
		spent += t;
		runs++;
	}
	bench_row *r = add_row(c->tb, c->s->name, stage, best);
	r->cpu = best > 0 ? best_cpu / best : 0.0;
	r->runs = runs;
	return r;
}

static void stage_generate(bench_ctx *c)
{
	ms_error err = {0};
	double t = now();
	if (syn_write_model(c->dir, c->s, 0, &err) != MS_OK)
		die("writing the model", &err);
	if (syn_write_calib(c->dir, c->s, &err) != MS_OK)
		die("writing the calibration set", &err);
	sync(); /* so that writeback of the new files does not run during the load below */
	bench_row *r = add_row(c->tb, c->s->name, "setup: generate+write BF16", now() - t);
	r->bytes = (double)syn_model_bytes(c->s) + (double)c->s->T * c->s->d * 2.0 * c->s->layers;
	snprintf(r->note, sizeof r->note, "%.2f GB of safetensors, deterministic, synced (not a pipeline stage)",
		 r->bytes * 1e-9);
	finish_row(c->tb, r);
}

static void body_load(bench_ctx *c)
{
	ms_error err = {0};
	pipe_free_block(&c->blk);
	if (pipe_load_block(c->m, c->cal, 0, &c->blk, &err) != MS_OK)
		die("loading the block", &err);
}

static void stage_load(bench_ctx *c)
{
	ms_error err = {0};
	char path[4096];
	snprintf(path, sizeof path, "%s/calib.safetensors", c->dir);
	if (mdl_open(c->dir, &c->m, &err) != MS_OK)
		die("opening the model", &err);
	if (calib_open(path, c->m, &c->cal, &err) != MS_OK)
		die("opening the calibration set", &err);
	bench_row *r = timed_row(c, "load+convert BF16->F32", body_load, 2);
	const double floats = (double)c->blk.E * (double)c->blk.per_expert + (double)c->blk.E * c->blk.d +
			      (double)c->blk.T * c->blk.d;
	r->bytes = floats * 2.0 + floats * 4.0; /* BF16 read, float32 written */
	r->limit = LIM_MEMCPY;
	r->limit_seconds = r->bytes / c->tb->lim->memcpy_bps;
	snprintf(r->note, sizeof r->note, "pipe_load_block: %.2f GB BF16 read (page cache warm) -> %.2f GB float32",
		 floats * 2e-9, floats * 4e-9);
	finish_row(c->tb, r);
}

static void body_routing(bench_ctx *c)
{
	ms_error err = {0};
	pipe_analyze_options o = {.bases = 0, .stable_ranks = 0};
	pipe_stats s;
	if (pipe_analyze_block(&c->blk, &o, &s, &err) != MS_OK)
		die("routing statistics", &err);
	c->cv = s.cv;
	pipe_free_stats(&s);
}

static void stage_routing(bench_ctx *c)
{
	bench_row *r = timed_row(c, "routing statistics", body_routing, 1);
	const double T = (double)c->blk.T, d = c->blk.d, E = c->blk.E;
	roofline(c->tb, r, 2.0 * T * d * E, 4.0 * (T * d + E * d + T * E));
	snprintf(r->note, sizeof r->note, "logits GEMM [%lld x %d] x [%d x %d], top-%d, usage cv %.2f",
		 (long long)c->blk.T, c->blk.d, c->blk.d, c->blk.E, c->blk.routing.top_k, c->cv);
	finish_row(c->tb, r);
}

/* Work of one similarity base: flops and bytes. */
static void base_work(const pipe_block *b, sim_base base, double *flops, double *bytes)
{
	const double T = (double)b->T, d = b->d, E = b->E, f = b->f, per = (double)b->per_expert;
	switch (base) {
	case SIM_ROUTER_LOGITS:
		*flops = 2.0 * T * d * E + T * E * E;
		*bytes = 4.0 * (T * d + E * d + 2.0 * T * E);
		break;
	case SIM_ROUTER_WEIGHT:
		*flops = E * E * d;
		*bytes = 4.0 * E * d * 2.0;
		break;
	case SIM_WEIGHT:
		*flops = E * E * per;              /* SYRK: E (E + 1) / 2 dot products, 2 flops per term */
		*bytes = 4.0 * E * per * 2.0;      /* each block read, scaled into a buffer, read by SYRK */
		break;
	default:                                   /* expert-output: gate and up GEMMs, then one GEMV per expert */
		*flops = 2.0 * 2.0 * T * d * f * E + 2.0 * d * f * E;
		*bytes = 4.0 * E * per * ceil(T / SIM_TOKEN_CHUNK);
		break;
	}
}

static void body_similarity(bench_ctx *c)
{
	const size_t EE = (size_t)c->blk.E * c->blk.E;
	double *sim = malloc(EE * sizeof *sim), *dist = malloc(EE * sizeof *dist);
	if (!sim || !dist)
		die("similarity", NULL);
	sim_inputs in = {.E = c->blk.E, .d = c->blk.d, .T = c->blk.T, .z = NULL, .x = c->blk.x,
			 .router = c->blk.router, .experts = c->blk.experts, .chunk = 0};
	if (sim_compute(c->base, &in, sim, dist) != MS_OK)
		die(sim_base_name(c->base), NULL);
	free(sim);
	free(dist);
}

static void stage_similarity(bench_ctx *c)
{
	for (int base = 0; base < SIM_BASE_COUNT; base++) {
		char name[48];
		snprintf(name, sizeof name, "similarity %s", sim_base_name((sim_base)base));
		c->base = (sim_base)base;
		bench_row *r = timed_row(c, name, body_similarity, 1);
		double flops, bytes;
		base_work(&c->blk, (sim_base)base, &flops, &bytes);
		roofline(c->tb, r, flops, bytes);
		if (base == SIM_EXPERT_OUTPUT)
			snprintf(r->note, sizeof r->note, "gate+up GEMMs of %lld tokens x %d experts in chunks of %d",
				 (long long)c->blk.T, c->blk.E, SIM_TOKEN_CHUNK);
		else if (base == SIM_WEIGHT)
			snprintf(r->note, sizeof r->note, "blockwise scaled SYRK over %.2f GB of weights",
				 4e-9 * c->blk.E * (double)c->blk.per_expert);
		else if (base == SIM_ROUTER_LOGITS)
			snprintf(r->note, sizeof r->note, "computes X R^T itself here (the pipeline reuses routing's)");
		finish_row(c->tb, r);
	}
}

/* ---- stable ranks against the SVD ---- */

static int matrix_rows(const pipe_block *b, int mat)
{
	return mat == MDL_DOWN ? b->d : b->f;
}

static int matrix_cols(const pipe_block *b, int mat)
{
	return mat == MDL_DOWN ? b->f : b->d;
}

static const float *matrix_of(const pipe_block *b, int e, int mat)
{
	const expert_weights *w = &b->experts[e];
	return mat == MDL_GATE ? w->gate : mat == MDL_UP ? w->up : w->down;
}

/* Every matrix's sigma_max to 1e-4 and |W|_F^2 (what pipe_analyze_block's stable ranks do), with the step
 * counts; returns the seconds taken. */
static double time_stable_ranks(const pipe_block *b, double *sigma, int *steps_total)
{
	*steps_total = 0;
	double t = now();
	for (int e = 0; e < b->E; e++) {
		for (int mat = 0; mat < MDL_NMAT; mat++) {
			int steps;
			const float *w = matrix_of(b, e, mat);
			if (srank_sigma_max(w, matrix_rows(b, mat), matrix_cols(b, mat), SRANK_DEFAULT_TOL,
					    &sigma[e * MDL_NMAT + mat], &steps) != MS_OK)
				die("stable rank", NULL);
			volatile double fro = srank_frobenius2(w, matrix_rows(b, mat), matrix_cols(b, mat));
			(void)fro;
			*steps_total += steps;
		}
	}
	return now() - t;
}

/* Singular values of a copy of w [m, n] by LAPACKE_sgesdd without vectors (the fastest full SVD LAPACK has);
 * returns the seconds taken and the largest value in *smax. */
static double time_svd(const float *w, int m, int n, double *smax)
{
	float *a = malloc((size_t)m * n * sizeof *a), *s = malloc((size_t)(m < n ? m : n) * sizeof *s);
	if (!a || !s)
		die("svd: out of memory", NULL);
	memcpy(a, w, (size_t)m * n * sizeof *a);
	double t = now();
	lapack_int info = LAPACKE_sgesdd(LAPACK_ROW_MAJOR, 'N', m, n, a, n, s, NULL, m, NULL, n);
	t = now() - t;
	if (info != 0)
		die("LAPACKE_sgesdd failed", NULL);
	*smax = s[0];
	free(a);
	free(s);
	return t;
}

static void stage_stable_rank(bench_ctx *c)
{
	const pipe_block *b = &c->blk;
	const int n_mats = b->E * MDL_NMAT;
	double *sigma = malloc((size_t)n_mats * sizeof *sigma);
	if (!sigma)
		die("stable rank: out of memory", NULL);
	int steps;
	const double c0 = cpu_seconds();
	const double t = time_stable_ranks(b, sigma, &steps);
	const double cpu = cpu_seconds() - c0;
	/* The SVD of a few matrices, the same number of each kind, extrapolated to all of them. */
	double svd_time[MDL_NMAT] = {0}, worst = 0.0;
	int sampled[MDL_NMAT] = {0};
	for (int i = 0; i < c->svd_samples; i++) {
		const int mat = i % MDL_NMAT, e = (i / MDL_NMAT * 7) % b->E;
		double smax;
		svd_time[mat] += time_svd(matrix_of(b, e, mat), matrix_rows(b, mat), matrix_cols(b, mat), &smax);
		sampled[mat]++;
		const double rel = fabs(sigma[e * MDL_NMAT + mat] - smax) / smax;
		worst = rel > worst ? rel : worst;
	}
	double svd_all = 0.0, svd_one = 0.0;
	for (int mat = 0, kinds = 0; mat < MDL_NMAT; mat++) {
		if (!sampled[mat])
			continue;
		svd_one = (svd_one * kinds + svd_time[mat] / sampled[mat]) / (kinds + 1);
		kinds++;
	}
	svd_all = svd_one * n_mats; /* every matrix of a block costs the same, m n min(m, n) */
	bench_row *r = add_row(c->tb, c->s->name, "stable rank, all experts", t);
	r->cpu = cpu / t;
	r->runs = 1;
	r->limit = LIM_SVD;
	r->limit_seconds = svd_all;
	snprintf(r->note, sizeof r->note, "%d matrices, %.1f Lanczos steps each; SVD timed on %d, extrapolated; "
		 "max |sigma - sigma_svd|/sigma_svd %.1e (tol 1e-4)", n_mats, (double)steps / n_mats, c->svd_samples,
		 worst);
	finish_row(c->tb, r);
	free(sigma);
}

/* The hard case for Lanczos: a matrix of pure noise, whose top singular values crowd together (Marchenko-Pastur
 * edge) so the largest converges slowly. Real and synthetic experts have a dominant direction; this bounds the
 * other end. One matrix of the shape of up [f, d] (or of down [d, f] with down set), against its own SVD. */
#define NOISE_RUNS 3

static void noise_matrix(bench_ctx *c, int down)
{
	const int m = down ? c->blk.d : c->blk.f, n = down ? c->blk.f : c->blk.d;
	/* On a 64-byte boundary, as every expert matrix of a loaded block is (pipeline.c's take_weights). */
	float *w = wtw_alloc((size_t)m * n * sizeof *w);
	if (!w)
		die("stable rank: out of memory", NULL);
	unsigned long long s = 0x2545F4914F6CDD1DULL;
	for (size_t i = 0; i < (size_t)m * n; i++) {
		s ^= s >> 12, s ^= s << 25, s ^= s >> 27;
		w[i] = (float)((double)((s * 2685821657736338717ULL) >> 11) / 9007199254740992.0 - 0.5) * 0.04f;
	}
	/* The best of NOISE_RUNS for both sides: one run of a few milliseconds is at the mercy of whatever else the
	 * machine does in that moment. */
	double sigma, smax, t = INFINITY, cpu = 0.0, svd = INFINITY;
	int steps;
	for (int run = 0; run < NOISE_RUNS; run++) {
		const double c0 = cpu_seconds(), t0 = now();
		if (srank_sigma_max(w, m, n, SRANK_DEFAULT_TOL, &sigma, &steps) != MS_OK)
			die("stable rank (noise)", NULL);
		volatile double fro = srank_frobenius2(w, m, n);
		(void)fro;
		const double dt = now() - t0;
		if (dt < t)
			t = dt, cpu = cpu_seconds() - c0;
		const double ts = time_svd(w, m, n, &smax);
		svd = ts < svd ? ts : svd;
	}
	bench_row *r = add_row(c->tb, c->s->name, down ? "stable rank, noise d x f" : "stable rank, noise f x d", t);
	r->cpu = cpu / t;
	r->runs = NOISE_RUNS;
	r->limit = LIM_SVD;
	r->limit_seconds = svd;
	snprintf(r->note, sizeof r->note, "one %dx%d uniform-noise matrix (worst case): %d Lanczos steps; "
		 "|sigma - sigma_svd|/sigma_svd %.1e (tol 1e-4)", m, n, steps, fabs(sigma - smax) / smax);
	finish_row(c->tb, r);
	free(w);
}

static void stage_stable_rank_noise(bench_ctx *c)
{
	noise_matrix(c, 0);
	if (c->s->f <= 4096) /* Mixtral's d x f SVD alone would add minutes */
		noise_matrix(c, 1);
}

/* ---- plan, alignment, merge, evaluation, write ---- */

static void stage_plan(bench_ctx *c)
{
	ms_error err = {0};
	pipe_analyze_options o = {.bases = 1u << SIM_ROUTER_LOGITS, .stable_ranks = 0};
	if (pipe_analyze_block(&c->blk, &o, &c->stats, &err) != MS_OK)
		die("statistics for the plan", &err);
	const char *labels[1] = {c->m->blocks[0].label};
	if (plan_init(&c->p, 1, c->blk.E, labels) != 0)
		die("plan_init", NULL);
	pipe_plan_options po = {.method = GRP_MSMOE, .base = SIM_ROUTER_LOGITS, .groups = c->groups};
	double t = now();
	if (pipe_make_plan(&c->stats, 1, &po, &c->p, &err) != MS_OK)
		die("plan", &err);
	bench_row *r = add_row(c->tb, c->s->name, "grouping (msmoe)", now() - t);
	snprintf(r->note, sizeof r->note, "%d experts into %d groups by router-logits similarity", c->blk.E, c->groups);
	finish_row(c->tb, r);
}

/* C [f, f] in double, the alignment cost of expert t against ref, computed as analysis/align.c does it (the same
 * sgemm calls on ALIGN_ROW_CHUNK rows at a time, then widened to double), so the same bits reach the solver and
 * the time of this part can be read on its own. */
static double *cost_matrix(const expert_weights *ref, const expert_weights *t)
{
	const int f = ref->f, d = ref->d, chunk = f < ALIGN_ROW_CHUNK ? f : ALIGN_ROW_CHUNK;
	float *part = malloc((size_t)chunk * f * sizeof *part); /* [chunk, f] */
	double *c = malloc((size_t)f * f * sizeof *c);          /* [f, f] */
	if (!part || !c)
		die("alignment: out of memory", NULL);
	for (int r0 = 0; r0 < f; r0 += chunk) {
		const int m = f - r0 < chunk ? f - r0 : chunk;
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, f, d, 1.0f, ref->gate + (size_t)r0 * d, d,
			    t->gate, d, 0.0f, part, f);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, f, d, 1.0f, ref->up + (size_t)r0 * d, d, t->up,
			    d, 1.0f, part, f);
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, f, d, 1.0f, ref->down + r0, f, t->down, f, 1.0f,
			    part, f);
		for (size_t k = 0; k < (size_t)m * f; k++)
			c[(size_t)r0 * f + k] = part[k];
	}
	free(part);
	return c;
}

/* The leading n x n block of c [f, f], copied. */
static double *leading_block(const double *c, int f, int n)
{
	double *s = malloc((size_t)n * n * sizeof *s);
	if (!s)
		die("alignment: out of memory", NULL);
	for (int i = 0; i < n; i++)
		memcpy(s + (size_t)i * n, c + (size_t)i * f, (size_t)n * sizeof *s);
	return s;
}

/* The members of the largest group (the lowest label among equals) other than its dominant, and the dominant. */
static int group_members(const bench_ctx *c, int *dom, int *members)
{
	int n = 0, best = 0, best_size = 0;
	for (int g = 0; g < plan_groups(&c->p, 0); g++) {
		int size = 0;
		for (int e = 0; e < c->blk.E; e++)
			size += c->p.group[e] == g;
		if (size > best_size)
			best = g, best_size = size;
	}
	*dom = -1;
	for (int e = 0; e < c->blk.E; e++) {
		if (c->p.group[e] != best)
			continue;
		if (c->p.dominant[e])
			*dom = e;
		else
			members[n++] = e;
	}
	return n;
}

typedef struct {
	double align;              /* align_permutation, whole */
	double gemm, gemm_cpu;     /* the cost matrix as align.c builds it */
	double lap, hung, lap_sub;
	double lap_total, hung_total;
	int pairs;
} align_times;

static void align_pair(const bench_ctx *c, int dom, int e, int *perm, align_times *at)
{
	const expert_weights *ref = &c->blk.experts[dom], *t = &c->blk.experts[e];
	const int f = ref->f;
	double t0 = now();
	if (align_permutation(ref, t, perm) != MS_OK)
		die("align_permutation", NULL);
	at->align += now() - t0;
	const double c0 = cpu_seconds();
	t0 = now();
	double *cost = cost_matrix(ref, t);
	at->gemm += now() - t0;
	at->gemm_cpu += cpu_seconds() - c0;
	t0 = now();
	if (lap_solve(f, cost, 1, perm, NULL) != MS_OK)
		die("lap_solve", NULL);
	at->lap += now() - t0;
	const int n = c->align_sub > 0 && c->align_sub < f ? c->align_sub : f;
	double *sub = n < f ? leading_block(cost, f, n) : cost;
	double lt, ht;
	t0 = now();
	lap_solve(n, sub, 1, perm, &lt);
	at->lap_sub += now() - t0;
	t0 = now();
	if (hung_solve(n, sub, 1, perm, &ht) != MS_OK)
		die("hung_solve", NULL);
	at->hung += now() - t0;
	at->lap_total += lt;
	at->hung_total += ht;
	at->pairs++;
	if (sub != cost)
		free(sub);
	free(cost);
}

static void stage_align(bench_ctx *c)
{
	int dom, *members = malloc((size_t)c->blk.E * sizeof *members), *perm = malloc((size_t)c->blk.f * sizeof *perm);
	if (!members || !perm)
		die("alignment: out of memory", NULL);
	const int n = group_members(c, &dom, members);
	align_times at = {0};
	for (int i = 0; i < n; i++)
		align_pair(c, dom, members[i], perm, &at);
	const double f = c->blk.f, d = c->blk.d;
	const int sub = c->align_sub > 0 && c->align_sub < c->blk.f ? c->align_sub : c->blk.f;
	bench_row *r = add_row(c->tb, c->s->name, "align group: align_permutation", at.align);
	snprintf(r->note, sizeof r->note, "%d member(s) to dominant %d, whole: cost GEMMs %.1f s + LAP %.1f s + rest "
		 "%.1f s", at.pairs, dom, at.gemm, at.lap, at.align - at.gemm - at.lap);
	finish_row(c->tb, r);
	r = add_row(c->tb, c->s->name, "align group: cost GEMMs", at.gemm);
	r->cpu = at.gemm > 0 ? at.gemm_cpu / at.gemm : NAN;
	roofline(c->tb, r, at.pairs * 3.0 * 2.0 * f * f * d, at.pairs * 4.0 * (3.0 * f * d * 2.0 + f * f * 3.0));
	snprintf(r->note, sizeof r->note, "C = G_r G_t^T + U_r U_t^T + D_r^T D_t (%dx%d) in %d-row sgemm strips, as "
		 "align.c", c->blk.f, c->blk.f, ALIGN_ROW_CHUNK);
	finish_row(c->tb, r);
	r = add_row(c->tb, c->s->name, "align group: LAP (JV)", at.lap);
	snprintf(r->note, sizeof r->note, "lap_solve on the full %dx%d cost matrix", c->blk.f, c->blk.f);
	finish_row(c->tb, r);
	r = add_row(c->tb, c->s->name, sub < c->blk.f ? "align: LAP vs Hungarian (sub)" : "align: LAP vs Hungarian",
		    at.lap_sub);
	r->limit = LIM_HUNGARIAN;
	r->limit_seconds = at.hung;
	char full[96] = "";
	if (sub < c->blk.f) /* the textbook method is Theta(n^3) whatever the costs; JV was timed at full size above */
		snprintf(full, sizeof full, "; at %d: Hungarian ~%.0f s by n^3 vs JV %.1f s", c->blk.f,
			 at.hung * pow((double)c->blk.f / sub, 3.0) / at.pairs, at.lap / at.pairs);
	snprintf(r->note, sizeof r->note, "same %dx%d matrix%s, %d pair(s); optimum %s (%.9g vs %.9g)%s", sub, sub,
		 sub < c->blk.f ? " (leading block)" : "", at.pairs,
		 fabs(at.lap_total - at.hung_total) <= 1e-9 * fabs(at.hung_total) ? "equal" : "DIFFERS", at.lap_total,
		 at.hung_total, full);
	finish_row(c->tb, r);
	free(members);
	free(perm);
}

/* The lse-fit router rows alone: X^T X in double and a Cholesky solve. */
static void body_router_fit(bench_ctx *c)
{
	const int G = plan_groups(&c->p, 0), d = c->blk.d;
	float *rows = malloc((size_t)G * d * sizeof *rows);
	ms_error err = {0};
	if (!rows)
		die("router fit: out of memory", NULL);
	if (rfit_rows(RFIT_LSE_FIT, c->blk.x, c->blk.T, d, c->blk.router, c->blk.E, c->p.group, c->p.dominant,
		      c->p.frequency, G, RFIT_LAMBDA_DEFAULT, rows, NULL, &err) != MS_OK)
		die("router fit", &err);
	free(rows);
}

static void stage_router_fit(bench_ctx *c)
{
	bench_row *r = timed_row(c, "merge: router lse-fit", body_router_fit, 1);
	const double T = (double)c->blk.T, dd = c->blk.d, E = c->blk.E, G = plan_groups(&c->p, 0);
	roofline(c->tb, r, T * dd * dd + dd * dd * dd / 3.0 + 2.0 * T * dd * (E + G), 8.0 * (T * dd + dd * dd));
	snprintf(r->note, sizeof r->note, "X^T X and Cholesky in double (sgemm limit is float: double peak is half)");
	finish_row(c->tb, r);
}

/* The merge alone: weighted sums of unaligned experts and the dominants' router rows. */
static void body_merge(bench_ctx *c)
{
	ms_error err = {0};
	pipe_merge_options o = pipe_merge_defaults();
	o.align = ALIGN_NONE;
	o.router = RFIT_DOMINANT;
	o.refit = PIPE_REFIT_NONE;
	pipe_free_merged(&c->mg);
	if (pipe_merge_block(&c->blk, &c->p, 0, &o, &c->mg, &err) != MS_OK)
		die("merge", &err);
}

/* The same merge with the refit of the down projections (analysis/refit.h) on the fit tokens. */
static void body_merge_refit(bench_ctx *c)
{
	ms_error err = {0};
	pipe_merge_options o = pipe_merge_defaults();
	o.align = ALIGN_NONE;
	o.router = RFIT_DOMINANT;
	o.refit = PIPE_REFIT_DOWN;
	pipe_merged mg;
	if (pipe_merge_block(&c->blk, &c->p, 0, &o, &mg, &err) != MS_OK)
		die("merge with refit", &err);
	c->refit_tokens = mg.fit_tokens;
	pipe_free_merged(&mg);
}

static void stage_merge_refit(bench_ctx *c)
{
	bench_row *r = timed_row(c, "merge: + refit down (all)", body_merge_refit, 1);
	/* counted as if every slot were solved in feature space: per sweep, for every slot and output strip, its
	 * contribution and the right-hand side, two [ns, f] x [f, w] products in double, i.e. 4 routes f d
	 * multiply-adds; the initial contribution once more. Slots solved in token space (analysis/refit.h) do
	 * 2 ns^2 per output dimension and sweep instead, in float, so the rate shown is an equivalent one. */
	const int k = c->blk.routing.top_k;
	const double routes = (double)c->refit_tokens * k, f = c->blk.f, d = c->blk.d;
	roofline(c->tb, r, 2.0 * routes * f * d * (2.0 * RFT_SWEEPS_DEFAULT + 1.0), 0.0);
	snprintf(r->note, sizeof r->note, "the row above plus the ridge refit on %lld fit tokens (%d sweeps; flops of the "
		 "feature-space form in double)", (long long)c->refit_tokens, RFT_SWEEPS_DEFAULT);
	finish_row(c->tb, r);
}

static void stage_merge(bench_ctx *c)
{
	bench_row *r = timed_row(c, "merge: expert weighted sums", body_merge, 2);
	const double per = (double)c->blk.per_expert, E = c->blk.E, G = c->mg.n_slots;
	roofline(c->tb, r, 2.0 * E * per, 4.0 * (E * per + 2.0 * G * per));
	snprintf(r->note, sizeof r->note, "weighted sums of %d experts into %d (no alignment, dominant router rows)",
		 c->blk.E, c->mg.n_slots);
	finish_row(c->tb, r);
}

/* Everything `moescope merge` computes for a block with its defaults: alignment to the dominant, frequency
 * weighting, the router rows chosen by output error, the refit. */
static void stage_merge_defaults(bench_ctx *c)
{
	ms_error err = {0};
	pipe_merge_options o = pipe_merge_defaults();
	pipe_merged mg;
	const double c0 = cpu_seconds(), t0 = now();
	if (pipe_merge_block(&c->blk, &c->p, 0, &o, &mg, &err) != MS_OK)
		die("merge", &err);
	const double t = now() - t0;
	bench_row *r = add_row(c->tb, c->s->name, "merge: pipe defaults (all)", t);
	r->cpu = (cpu_seconds() - c0) / t;
	r->runs = 1;
	snprintf(r->note, sizeof r->note, "align dominant + frequency + router chosen by output error + refit: every group");
	finish_row(c->tb, r);
	pipe_free_merged(&mg);
}

static void body_eval(bench_ctx *c)
{
	ms_error err = {0};
	if (pipe_eval_block(&c->blk, &c->mg, &c->p, 0, 2048, &c->eval, &err) != MS_OK)
		die("evaluation", &err);
}

static void stage_eval(bench_ctx *c)
{
	bench_row *r = timed_row(c, "layer evaluation (blk_eval)", body_eval, 1);
	roofline(c->tb, r, (c->eval.flops_before + c->eval.flops_after) * (double)c->eval.tokens,
		 4.0 * (double)c->blk.per_expert * (c->blk.E + c->mg.n_slots));
	snprintf(r->note, sizeof r->note, "%lld tokens through original and merged block; rel. error %.3f",
		 (long long)c->eval.tokens, c->eval.rel_error);
	finish_row(c->tb, r);
}

/* One decoder layer of the forward pass (pipeline/forward.c's sequence of analysis calls): RMSNorm, q/k/v
 * projections, RoPE, causal attention over two sequences of T / 2 tokens, o_proj, RMSNorm, the MoE block. The
 * attention shape is the family's (OLMoE: 16 heads of 128; Mixtral: 32 query and 8 key/value heads of 128). */
typedef struct {
	int H, Hkv, hd;
	float *w;                 /* [2 qd + 2 kd, d]: q [qd, d], k [kd, d], v [kd, d], o [d, qd] */
	float *norm, *inv_freq;   /* [d], [hd / 2] */
	float *h, *xn, *y, *q, *k, *v, *att;
	int32_t *pos;
	int64_t seq[3];
} fwd_bench;

static fwd_bench fb;

static void body_forward(bench_ctx *c)
{
	ms_error err = {0};
	const pipe_block *b = &c->blk;
	const int64_t T = b->T;
	const int d = b->d, qd = fb.H * fb.hd, kd = fb.Hkv * fb.hd;
	const float *wq = fb.w, *wk = wq + (int64_t)qd * d, *wv = wk + (int64_t)kd * d, *wo = wv + (int64_t)kd * d;
	lyr_rmsnorm(fb.h, T, d, fb.norm, 1e-5f, fb.xn);
	if (lyr_linear(fb.xn, d, T, d, wq, NULL, qd, fb.q, qd, &err) || lyr_linear(fb.xn, d, T, d, wk, NULL, kd, fb.k, kd, &err) ||
	    lyr_linear(fb.xn, d, T, d, wv, NULL, kd, fb.v, kd, &err))
		die("forward projections", &err);
	lyr_rope_apply(fb.q, T, fb.H, fb.hd, 0, fb.hd, fb.pos, fb.inv_freq, 1.0f, 0);
	lyr_rope_apply(fb.k, T, fb.Hkv, fb.hd, 0, fb.hd, fb.pos, fb.inv_freq, 1.0f, 0);
	lyr_attn_shape sh = {.H = fb.H, .Hkv = fb.Hkv, .dqk = fb.hd, .dv = fb.hd, .ldq = qd, .ldk = kd, .ldv = kd,
			     .scale = 1.0f / sqrtf((float)fb.hd)};
	if (lyr_attention(&sh, fb.q, fb.k, fb.v, fb.seq, 2, fb.att, &err) ||
	    lyr_linear(fb.att, qd, T, qd, wo, NULL, d, fb.y, d, &err))
		die("forward attention", &err);
	for (int64_t i = 0; i < T * d; i++)
		fb.y[i] += fb.h[i];
	lyr_rmsnorm(fb.y, T, d, fb.norm, 1e-5f, fb.xn);
	blk_config cfg = pipe_block_config(b);
	if (blk_forward(&cfg, fb.xn, T, fb.y, NULL, NULL, &err) != MS_OK)
		die("forward MoE block", &err);
}

static void stage_forward(bench_ctx *c)
{
	const pipe_block *b = &c->blk;
	const int64_t T = b->T, d = b->d;
	const int mixtral = strcmp(c->s->name, "mixtral") == 0;
	fb.hd = 128;
	fb.H = (int)(d / 128);
	fb.Hkv = mixtral ? fb.H / 4 : fb.H;
	const int64_t qd = (int64_t)fb.H * fb.hd, kd = (int64_t)fb.Hkv * fb.hd, n = T / 2;
	fb.w = malloc((size_t)((2 * qd + 2 * kd) * d) * sizeof(float));
	fb.norm = malloc((size_t)d * sizeof(float));
	fb.inv_freq = malloc((size_t)fb.hd / 2 * sizeof(float));
	float *bufs[] = {fb.h = malloc((size_t)(T * d) * sizeof(float)), fb.xn = malloc((size_t)(T * d) * sizeof(float)),
			 fb.y = malloc((size_t)(T * d) * sizeof(float)), fb.q = malloc((size_t)(T * qd) * sizeof(float)),
			 fb.k = malloc((size_t)(T * kd) * sizeof(float)), fb.v = malloc((size_t)(T * kd) * sizeof(float)),
			 fb.att = malloc((size_t)(T * qd) * sizeof(float))};
	fb.pos = malloc((size_t)T * sizeof *fb.pos);
	unsigned long long seed = 7;
	for (int64_t i = 0; i < (2 * qd + 2 * kd) * d; i++)
		fb.w[i] = (float)((double)(seed = seed * 6364136223846793005ULL + 1442695040888963407ULL) / 1.8e19 - 0.5) *
			  0.05f;
	for (int64_t i = 0; i < d; i++)
		fb.norm[i] = 1.0f;
	memcpy(fb.h, b->x, (size_t)(T * d) * sizeof(float));
	for (int64_t t = 0; t < T; t++)
		fb.pos[t] = (int32_t)(t % n);
	fb.seq[0] = 0, fb.seq[1] = n, fb.seq[2] = T;
	lyr_rope_params rp = {.theta = 10000.0, .factor = 1.0};
	float scaling;
	lyr_rope_init(&rp, fb.hd, fb.inv_freq, &scaling);
	bench_row *r = timed_row(c, "forward: one layer (prefill)", body_forward, 1);
	/* multiply-adds as 2 FLOPs: projections, causal attention (scores and values), router, the k experts */
	const double proj = 2.0 * (double)T * d * (double)(2 * qd + 2 * kd);
	const double attn = 2.0 * 2.0 * fb.H * fb.hd * 2.0 * ((double)n * (n + 1) / 2.0);
	const double moe = 2.0 * (double)T * b->E * d + (double)T * b->routing.top_k * 2.0 * (double)b->per_expert;
	roofline(c->tb, r, proj + attn + moe, 4.0 * ((2 * qd + 2 * kd) * d + (double)b->E * b->per_expert));
	snprintf(r->note, sizeof r->note, "%lld tokens (2 sequences), %d heads of %d (%d kv), E %d top-%d", (long long)T,
		 fb.H, fb.hd, fb.Hkv, b->E, b->routing.top_k);
	finish_row(c->tb, r);
	for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
		free(bufs[i]);
	free(fb.w);
	free(fb.norm);
	free(fb.inv_freq);
	free(fb.pos);
}

/* The merged block's tensors (router, then every slot's gate, up, down) in BF16 through st_writer. */
static ms_status write_merged(bench_ctx *c, const char *dir, uint64_t *bytes, ms_error *err)
{
	st_writer *w;
	ms_status st = st_writer_create(dir, "model", 0, &w, err);
	if (st != MS_OK)
		return st;
	char name[256];
	const int64_t rshape[2] = {c->mg.n_router, c->blk.d};
	*bytes = (uint64_t)c->mg.n_router * c->blk.d * 2;
	st = st_writer_declare(w, "router", ST_BF16, 2, rshape, err);
	for (int s = 0; st == MS_OK && s < c->mg.n_slots; s++)
		for (int mat = 0; st == MS_OK && mat < MDL_NMAT; mat++) {
			const int64_t shape[2] = {matrix_rows(&c->blk, mat), matrix_cols(&c->blk, mat)};
			syn_expert_name(c->s, 0, s, mat, name, sizeof name);
			st = st_writer_declare(w, name, ST_BF16, 2, shape, err);
			*bytes += (uint64_t)shape[0] * shape[1] * 2;
		}
	if (st == MS_OK)
		st = st_writer_write_f32(w, c->mg.router, (uint64_t)rshape[0] * rshape[1], err);
	for (int s = 0; st == MS_OK && s < c->mg.n_slots; s++) {
		const expert_weights *e = &c->mg.experts[s];
		const float *mats[MDL_NMAT] = {e->gate, e->up, e->down};
		for (int mat = 0; st == MS_OK && mat < MDL_NMAT; mat++)
			st = st_writer_write_f32(w, mats[mat], (uint64_t)c->blk.f * c->blk.d, err);
	}
	if (st == MS_OK)
		st = st_writer_finish(w, err); /* syncs every file it wrote, as a merge does */
	st_writer_free(w);
	return st;
}

/* A plain write(2) of n bytes in 8 MiB pieces, then fsync: the disk's limit for the same amount. */
static double time_plain_write(const char *path, uint64_t n)
{
	const size_t piece = (size_t)8 << 20;
	char *buf = malloc(piece);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (!buf || fd < 0)
		die("plain write: cannot open", NULL);
	memset(buf, 0x3c, piece);
	double t = now();
	for (uint64_t done = 0; done < n;) {
		size_t k = n - done < piece ? (size_t)(n - done) : piece;
		ssize_t w = write(fd, buf, k);
		if (w <= 0)
			die("plain write failed", NULL);
		done += (uint64_t)w;
	}
	if (fsync(fd) != 0)
		die("plain write: fsync failed", NULL);
	t = now() - t;
	close(fd);
	unlink(path);
	free(buf);
	return t;
}

static void remove_tree(const char *dir)
{
	char cmd[8300];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "bench: could not remove %s\n", dir);
}

static void stage_write(bench_ctx *c)
{
	char out[4096], plain[4096];
	snprintf(out, sizeof out, "%s/merged", c->dir);
	snprintf(plain, sizeof plain, "%s/plain.bin", c->dir);
	if (mkdir(out, 0755) != 0 && errno != EEXIST)
		die("cannot create the merged directory", NULL);
	ms_error err = {0};
	uint64_t bytes = 0;
	const double c0 = cpu_seconds(), t0 = now();
	if (write_merged(c, out, &bytes, &err) != MS_OK)
		die("writing the merged block", &err);
	const double t = now() - t0;
	bench_row *r = add_row(c->tb, c->s->name, "write merged block (st_writer)", t);
	r->cpu = (cpu_seconds() - c0) / t;
	r->runs = 1;
	r->bytes = (double)bytes;
	r->limit = LIM_DISK;
	const double p1 = time_plain_write(plain, bytes), p2 = time_plain_write(plain, bytes);
	r->limit_seconds = p1 < p2 ? p1 : p2;
	snprintf(r->note, sizeof r->note, "%.2f GB BF16 incl. float->BF16 and fsync; limit: plain write+fsync, best of 2",
		 bytes * 1e-9);
	finish_row(c->tb, r);
	remove_tree(out);
}

/* Measures the limits again before each shape and keeps the best seen: other work on a shared machine can only
 * make a measurement slower. */
static void refresh_limits(bench_limits *lim)
{
	const double bw = measure_memcpy(), fl = measure_sgemm(lim->sgemm_n);
	lim->memcpy_bps = bw > lim->memcpy_bps ? bw : lim->memcpy_bps;
	lim->sgemm_flops = fl > lim->sgemm_flops ? fl : lim->sgemm_flops;
}

/* --forward: only the stages the forward row needs (generate, load, forward). --load: only the load row. */
static int forward_only, load_only;

static void run_shape(bench_table *tb, const syn_shape *s, const char *root, int groups, int align_sub,
		      int svd_samples, int keep)
{
	char dir[4096];
	snprintf(dir, sizeof dir, "%s/%s", root, s->name);
	struct stat st;
	if (stat(dir, &st) == 0) { /* left by an interrupted run or --keep: generated data, made again below */
		fprintf(stderr, "bench: removing %s from an earlier run\n", dir);
		remove_tree(dir);
	}
	if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
		fprintf(stderr, "bench: %s: %s\n", dir, strerror(errno));
		exit(1);
	}
	bench_ctx c = {.s = s, .dir = dir, .tb = tb, .groups = groups, .align_sub = align_sub,
		       .svd_samples = svd_samples};
	stage_generate(&c);
	stage_load(&c);
	if (!load_only)
		stage_forward(&c);
	if (forward_only || load_only) {
		pipe_free_block(&c.blk);
		calib_close(c.cal);
		mdl_close(c.m);
		if (!keep)
			remove_tree(dir);
		return;
	}
	stage_routing(&c);
	stage_similarity(&c);
	stage_stable_rank(&c);
	stage_stable_rank_noise(&c);
	stage_plan(&c);
	stage_align(&c);
	stage_router_fit(&c);
	stage_merge(&c);
	if (s->f <= 4096) {   /* Mixtral's refit would exceed its memory rule and be skipped (pipeline/pipeline.c) */
		stage_merge_refit(&c);
		stage_merge_defaults(&c);
	}
	stage_eval(&c);
	stage_write(&c);
	pipe_free_merged(&c.mg);
	plan_free(&c.p);
	pipe_free_stats(&c.stats);
	pipe_free_block(&c.blk);
	calib_close(c.cal);
	mdl_close(c.m);
	if (!keep)
		remove_tree(dir);
}

/* ---- main ---- */

typedef struct {
	const char *json, *dir, *only;
	int keep, small;
} bench_args;

static void usage(void)
{
	fprintf(stderr, "usage: bench [--json FILE] [--dir DIR] [--shape olmoe|mixtral] [--keep] [--small] [--forward] [--load]\n"
			"  --dir DIR   where the synthetic checkpoints are written (removed afterwards unless --keep)\n"
			"  --small     shapes divided by 8 (a quick check of the bench itself, not a measurement)\n"
			"  --forward   only the forward-per-layer row (after generating and loading the block)\n"
			"  --load      only the load+convert row (after generating the block)\n");
}

static int parse_args(int argc, char **argv, bench_args *a)
{
	static const struct option opts[] = {
		{"json", required_argument, NULL, 'j'}, {"dir", required_argument, NULL, 'd'},
		{"shape", required_argument, NULL, 's'}, {"keep", no_argument, NULL, 'k'},
		{"small", no_argument, NULL, 'm'},       {"help", no_argument, NULL, 'h'},
		{"forward", no_argument, NULL, 'f'},     {"load", no_argument, NULL, 'l'},
		{NULL, 0, NULL, 0},
	};
	a->json = "bench.json";
	a->dir = "bench-data";
	int ch;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'j': a->json = optarg; break;
		case 'd': a->dir = optarg; break;
		case 's': a->only = optarg; break;
		case 'k': a->keep = 1; break;
		case 'm': a->small = 1; break;
		case 'f': forward_only = 1; break;
		case 'l': load_only = 1; break;
		default: usage(); return ch == 'h' ? 1 : 2;
		}
	}
	if (optind != argc) {
		usage();
		return 2;
	}
	return 0;
}

static void shrink(syn_shape *s)
{
	s->d /= 8;
	s->f /= 8;
	s->T /= 8;
}

static cJSON *machine_json(const bench_limits *lim)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddNumberToObject(o, "cores", (double)sysconf(_SC_NPROCESSORS_ONLN));
	cJSON_AddNumberToObject(o, "threads", (double)par_threads());
	cJSON_AddNumberToObject(o, "memcpy_GBps", lim->memcpy_bps * 1e-9);
	cJSON_AddNumberToObject(o, "sgemm_GFLOPs", lim->sgemm_flops * 1e-9);
	cJSON_AddNumberToObject(o, "sgemm_n", lim->sgemm_n);
	cJSON_AddNumberToObject(o, "loadavg_start", lim->load_start);
	cJSON_AddNumberToObject(o, "loadavg_end", lim->load_end);
	return o;
}

int main(int argc, char **argv)
{
	cli_pin_blas(argv); /* the kernels moescope itself runs with (cli/blas.c) */
	bench_args a = {0};
	int rc = parse_args(argc, argv, &a);
	if (rc)
		return rc == 1 ? 0 : rc;
	if (mkdir(a.dir, 0755) != 0 && errno != EEXIST) {
		fprintf(stderr, "bench: %s: %s\n", a.dir, strerror(errno));
		return 1;
	}
	bench_limits lim = {.load_start = loadavg(), .sgemm_n = a.small ? 1024 : 4096};
	printf("moescope bench: %ld cores, %d threads (OpenBLAS on 1 inside each task; on all for the sgemm limit), "
	       "load average %.2f\n", sysconf(_SC_NPROCESSORS_ONLN), par_threads(), lim.load_start);
	printf("cpu = CPU seconds per second of the timed run (2 cores: 2.00 is both busy); time = fastest of the runs\n");
	bench_table tb = {.lim = &lim};
	const double t0 = now();
	syn_shape shapes[2] = {syn_olmoe(), syn_mixtral()};
	const int groups[2] = {16, 4}, align_sub[2] = {0, 2048}, svd_samples[2] = {3, 2};
	for (int i = 0; i < 2; i++) {
		if (a.only && strcmp(a.only, shapes[i].name) != 0)
			continue;
		if (a.small)
			shrink(&shapes[i]);
		refresh_limits(&lim);
		printf("\nlimits so far: memcpy %.2f GB/s (read+write), sgemm %.1f GFLOP/s (n=%d)\n",
		       lim.memcpy_bps * 1e-9, lim.sgemm_flops * 1e-9, lim.sgemm_n);
		print_header();
		run_shape(&tb, &shapes[i], a.dir, groups[i], a.small ? 0 : align_sub[i], svd_samples[i], a.keep);
	}
	refresh_limits(&lim);
	lim.load_end = loadavg();
	final_table(&tb);
	printf("\ntotal %.1f s; load average %.2f at the start, %.2f at the end\n", now() - t0, lim.load_start,
	       lim.load_end);
	cJSON *root = cJSON_CreateObject(), *rows = cJSON_CreateArray();
	cJSON_AddItemToObject(root, "machine", machine_json(&lim));
	for (int i = 0; i < tb.n; i++)
		cJSON_AddItemToArray(rows, row_json(&tb.rows[i]));
	cJSON_AddItemToObject(root, "rows", rows);
	ms_error err = {0};
	if (jsonf_write(a.json, root, &err) != MS_OK)
		fprintf(stderr, "bench: %s\n", err.msg);
	cJSON_Delete(root);
	free(tb.rows);
	return 0;
}
