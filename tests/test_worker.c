/* The worker thread against the UI thread (tui/worker.h): a commit cancelled while it writes (the real mrun_run,
 * on the golden model), a queued commit cancelled before it starts, a running evaluation cancelled by a newer one
 * of its block, a running model-level forward cancelled by a change of the plan (on the mixtral-tiny sample, which
 * has every weight), and a job whose memory cannot be allocated reported rather than left pending. `make test` runs
 * this binary under ThreadSanitizer as well as ASan: the UI thread's cancel and the job's reads of it must not
 * race.
 *
 * A stage hook holds the job at a known point until the test has cancelled it, so the cancel always lands while
 * the job runs, however fast the machine. The hold and the test meet through relaxed atomics only, which give
 * ThreadSanitizer no happens-before edge: were the cancel flag a plain variable, the job's read of it after the
 * hold would still be reported as racing with the UI thread's store. */
#include <dirent.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io/outdir.h"
#include "samples/samples.h"
#include "tests/app_fixture.h"
#include "tests/test.h"
#include "tui/app.h"
#include "pipeline/merge_run.h"
#include "tui/worker.h"

static char tmp_root[256];

/* The golden model, its calibration set and its 3-groups-per-block plan. */
typedef struct {
	mdl_model *m;
	calib *cal;
	plan p;
} golden;

static int golden_open(golden *g)
{
	const char *labels[] = {"0", "1", "2"};
	ms_error err = {0};
	memset(g, 0, sizeof *g);
	if (mdl_open(GOLDEN "/model", &g->m, &err) != MS_OK ||
	    calib_open(GOLDEN "/calib.safetensors", g->m, &g->cal, &err) != MS_OK ||
	    plan_read_csv(GOLDEN "/expected/plan_per_layer_3.csv", g->m->n_blocks, g->m->n_experts, labels, &g->p,
			  &err) != MS_OK) {
		fprintf(stderr, "  golden case: %s\n", err.msg);
		return -1;
	}
	return 0;
}

static void golden_close(golden *g)
{
	plan_free(&g->p);
	if (g->cal)
		calib_close(g->cal);
	if (g->m)
		mdl_close(g->m);
}

/* Holds the running job at the first stage whose label starts with `at`, until the test releases it. */
typedef struct {
	const char *at;
	int held;              /* worker thread only: the hold happened (once per test) */
	atomic_int reached;    /* the job waits at the stage */
	atomic_int release;    /* the test has acted: the job goes on */
} hold;

static void sleep_ms(long ms)
{
	nanosleep(&(struct timespec){ms / 1000, (ms % 1000) * 1000000L}, NULL);
}

/* Waits up to 60 s (ThreadSanitizer is slow) for *flag; 1 when it was set. */
static int wait_flag(atomic_int *flag)
{
	for (int i = 0; i < 60000; i++) {
		if (atomic_load_explicit(flag, memory_order_relaxed))
			return 1;
		sleep_ms(1);
	}
	return 0;
}

static void hold_at(void *ctx, const char *label)
{
	hold *h = ctx;
	if (h->held || strncmp(label, h->at, strlen(h->at)) != 0)
		return;
	h->held = 1;
	atomic_store_explicit(&h->reached, 1, memory_order_relaxed);
	wait_flag(&h->release);
}

static void release(hold *h)
{
	atomic_store_explicit(&h->release, 1, memory_order_relaxed);
}

/* Entries of directory path besides . and .., or -1 when it cannot be read. */
static int entries(const char *path)
{
	DIR *d = opendir(path);
	if (!d)
		return -1;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL)
		n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
	closedir(d);
	return n;
}

static int exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

/* A fresh empty directory under the test's temporary root, for one commit's output and its temporary sibling. */
static void fresh_dir(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", tmp_root, name);
	outdir_remove_tree(buf);
	mkdir(buf, 0700);
}

static int post_commit(worker *w, const golden *g, const char *out_dir, unsigned gen)
{
	work_job j = {.kind = WORK_COMMIT, .block = -1, .gen = gen};
	j.req = mrun_request_defaults();
	j.req.eval_tokens = 256;
	snprintf(j.out_dir, sizeof j.out_dir, "%s", out_dir);
	if (plan_copy(&j.p, &g->p) != 0)
		return -1;
	return worker_post(w, &j);
}

static int post_eval(worker *w, const golden *g, int block, unsigned gen)
{
	work_job j = {.kind = WORK_EVAL, .block = block, .gen = gen, .eval_tokens = 256};
	j.mo = pipe_merge_defaults();
	j.mo.slots = plan_groups(&g->p, block);
	if (plan_copy(&j.p, &g->p) != 0)
		return -1;
	return worker_post(w, &j);
}

/* The next result once the worker is idle, or NULL. */
static work_result *next_result(worker *w)
{
	worker_wait_idle(w);
	return worker_poll(w);
}

/* Cancelled while it merges its first block, the commit stops, removes its temporary directory and says so; the
 * worker then writes the same commit in full. */
static void test_cancel_running_commit(void)
{
	golden g;
	worker *w = NULL;
	if (golden_open(&g) != 0 || !(w = worker_start(g.m, g.cal, mrun_run))) {
		CHECK(0, "golden case or worker unavailable");
		golden_close(&g);
		return;
	}
	char parent[512], out[600];
	fresh_dir(parent, sizeof parent, "commit");
	snprintf(out, sizeof out, "%s/merged", parent);
	hold h = {.at = "commit: merge"};
	worker_set_stage_hook(w, hold_at, &h);
	CHECK(post_commit(w, &g, out, 1) == 0);
	CHECK(wait_flag(&h.reached), "the commit reached its merge stage");
	/* the commit is writing: its temporary directory is there, the output is not */
	CHECK(entries(parent) == 1 && !exists(out), "%d entries", entries(parent));
	worker_cancel(w);
	release(&h);
	work_result *r = next_result(w);
	CHECK(r && r->kind == WORK_COMMIT && r->gen == 1 && r->status == MS_ERR_INTERRUPTED, "status %d",
	      r ? (int)r->status : -1);
	CHECK(r && strstr(r->err.msg, "interrupted"), "'%s'", r ? r->err.msg : "");
	CHECK(entries(parent) == 0, "no output and no temporary directory: %d entries", entries(parent));
	work_result_free(r);
	CHECK(worker_poll(w) == NULL, "one answer per job");

	/* the worker goes on: the same commit, not held, is written and validated */
	worker_set_stage_hook(w, NULL, NULL);
	CHECK(post_commit(w, &g, out, 2) == 0);
	r = next_result(w);
	CHECK(r && r->gen == 2 && r->status == MS_OK, "'%s'", r ? r->err.msg : "no result");
	CHECK(r && r->summary.blocks == 3 && r->summary.experts_after == 3);
	char cfg[700];
	snprintf(cfg, sizeof cfg, "%s/config.json", out);
	CHECK(exists(cfg) && entries(parent) == 1);
	work_result_free(r);
	worker_stop(w);
	golden_close(&g);
}

/* A commit still queued behind a running evaluation answers "cancelled" at once and never writes; the
 * evaluation it waited for is left to finish. */
static void test_cancel_queued_commit(void)
{
	golden g;
	worker *w = NULL;
	if (golden_open(&g) != 0 || !(w = worker_start(g.m, g.cal, mrun_run))) {
		CHECK(0, "golden case or worker unavailable");
		golden_close(&g);
		return;
	}
	char parent[512], out[600];
	fresh_dir(parent, sizeof parent, "queued");
	snprintf(out, sizeof out, "%s/merged", parent);
	hold h = {.at = "evaluate 1: merge"};
	worker_set_stage_hook(w, hold_at, &h);
	CHECK(post_eval(w, &g, 1, 7) == 0);
	CHECK(wait_flag(&h.reached), "the evaluation reached its merge stage");
	CHECK(post_commit(w, &g, out, 8) == 0);
	worker_cancel(w);
	work_result *c = worker_poll(w);  /* before the evaluation goes on: the cancelled commit has answered */
	CHECK(c && c->kind == WORK_COMMIT && c->gen == 8 && c->status == MS_ERR_INTERRUPTED, "status %d",
	      c ? (int)c->status : -1);
	CHECK(c && strstr(c->err.msg, "nothing was written"), "'%s'", c ? c->err.msg : "");
	release(&h);
	work_result *e = next_result(w);
	CHECK(e && e->kind == WORK_EVAL && e->gen == 7 && e->status == MS_OK, "'%s'", e ? e->err.msg : "no result");
	CHECK(worker_poll(w) == NULL && entries(parent) == 0, "%d entries", entries(parent));
	work_result_free(c);
	work_result_free(e);
	worker_stop(w);
	golden_close(&g);
}

/* A newer evaluation of a block cancels the one running (its answer would be stale) and gives the same figures
 * as an evaluation nothing disturbed. */
static void test_cancel_running_evaluation(void)
{
	golden g;
	worker *w = NULL;
	if (golden_open(&g) != 0 || !(w = worker_start(g.m, g.cal, mrun_run))) {
		CHECK(0, "golden case or worker unavailable");
		golden_close(&g);
		return;
	}
	CHECK(post_eval(w, &g, 1, 1) == 0);
	work_result *ref = next_result(w);
	CHECK(ref && ref->status == MS_OK && ref->groups == 3 && ref->merged_srank, "'%s'", ref ? ref->err.msg : "");

	hold h = {.at = "evaluate 1: merge"};
	worker_set_stage_hook(w, hold_at, &h);
	CHECK(post_eval(w, &g, 1, 2) == 0);
	CHECK(wait_flag(&h.reached), "the evaluation reached its merge stage");
	CHECK(post_eval(w, &g, 1, 3) == 0);  /* the same block again: the running one is stale */
	release(&h);
	work_result *stale = next_result(w), *fresh = worker_poll(w);
	CHECK(stale && stale->gen == 2 && stale->status == MS_ERR_INTERRUPTED && !stale->merged_srank, "status %d",
	      stale ? (int)stale->status : -1);
	CHECK(fresh && fresh->gen == 3 && fresh->status == MS_OK, "'%s'", fresh ? fresh->err.msg : "no result");
	if (ref && fresh && ref->status == MS_OK && fresh->status == MS_OK) {
		CHECK(fresh->eval.rel_error == ref->eval.rel_error && fresh->groups == ref->groups,
		      "%.9g vs %.9g", fresh->eval.rel_error, ref->eval.rel_error);
		CHECK(memcmp(fresh->merged_srank, ref->merged_srank, (size_t)ref->groups * MDL_NMAT * sizeof(double)) == 0);
	}
	CHECK(worker_poll(w) == NULL);
	work_result_free(ref);
	work_result_free(stale);
	work_result_free(fresh);
	worker_stop(w);
	golden_close(&g);
}

/* The mixtral-tiny sample (written once into the temporary root), its calibration set, architecture and tokens. */
typedef struct {
	mdl_model *m;
	calib *cal;
	arch_model *arch;
	tok_set tok;
	char dir[512];
} sample;

static int sample_open(sample *s)
{
	ms_error err = {0};
	char cal_path[600];
	memset(s, 0, sizeof *s);
	snprintf(s->dir, sizeof s->dir, "%s/mixtral-tiny", tmp_root);
	snprintf(cal_path, sizeof cal_path, "%s/calib.safetensors", s->dir);
	if ((!exists(cal_path) && samples_write(tmp_root, "mixtral-tiny", &err) != MS_OK) ||
	    mdl_open(s->dir, &s->m, &err) != MS_OK || calib_open(cal_path, s->m, &s->cal, &err) != MS_OK ||
	    arch_open(s->m, &s->arch, &err) != MS_OK ||
	    tokset_read_ids("tests/data/forward/tokens.txt", s->arch->vocab, 2048, 0, &s->tok, &err) != MS_OK) {
		fprintf(stderr, "  sample: %s\n", err.msg);
		return -1;
	}
	return 0;
}

static void sample_close(sample *s)
{
	tokset_free(&s->tok);
	if (s->arch)
		arch_close(s->arch);
	if (s->cal)
		calib_close(s->cal);
	if (s->m)
		mdl_close(s->m);
}

/* A forward with a plan beside the original: in every block, the last two experts join expert 0's group. */
static int post_forward(worker *w, const sample *s, unsigned gen)
{
	work_job j = {.kind = WORK_FORWARD, .block = -1, .gen = gen, .arch = s->arch, .tok = &s->tok, .with_plan = 1};
	j.mo = pipe_merge_defaults();
	const char **labels = mdl_block_labels(s->m);
	const int E = s->m->n_experts;
	if (!labels || plan_init(&j.p, s->m->n_blocks, E, labels) != 0) {
		free(labels);
		return -1;
	}
	free(labels);
	for (int b = 0; b < s->m->n_blocks; b++) {
		for (int e = 0; e < E; e++)
			j.p.frequency[b * E + e] = 1.0 / E;
		j.p.group[b * E + E - 1] = j.p.group[b * E + E - 2] = 0;
		j.p.dominant[b * E + E - 1] = j.p.dominant[b * E + E - 2] = 0;
	}
	j.mo.slots = E - 2;
	return worker_post(w, &j);
}

/* A change of the plan drops the model-level forward running for the old one: it stops before its next layer and
 * answers MS_ERR_INTERRUPTED; the same forward undisturbed gives the figures of one never cancelled. */
static void test_plan_change_cancels_forward(void)
{
	sample s;
	worker *w = NULL;
	if (sample_open(&s) != 0 || !(w = worker_start(s.m, s.cal, mrun_run))) {
		CHECK(0, "sample or worker unavailable");
		sample_close(&s);
		return;
	}
	CHECK(post_forward(w, &s, 1) == 0);
	work_result *ref = next_result(w);
	CHECK(ref && ref->kind == WORK_FORWARD && ref->status == MS_OK && ref->with_plan, "'%s'",
	      ref ? ref->err.msg : "no result");

	hold h = {.at = "perplexity: 1/"};
	worker_set_stage_hook(w, hold_at, &h);
	CHECK(post_forward(w, &s, 2) == 0);
	CHECK(wait_flag(&h.reached), "the forward reached its second layer");
	worker_progress p;
	worker_get_progress(w, &p);
	CHECK(p.busy && p.step == 1 && p.steps == s.arch->n_layers, "step %d/%d", p.step, p.steps);
	CHECK(post_forward(w, &s, 3) == 0);       /* queued behind it: the plan changes again */
	worker_drop(w, WORK_FORWARD, -1);         /* what the application does when the plan changes */
	release(&h);
	work_result *stale = next_result(w);
	CHECK(stale && stale->gen == 2 && stale->status == MS_ERR_INTERRUPTED, "status %d",
	      stale ? (int)stale->status : -1);
	CHECK(stale && strstr(stale->err.msg, "cancelled before layer 1"), "'%s'", stale ? stale->err.msg : "");
	CHECK(worker_poll(w) == NULL, "the queued forward was dropped without an answer");
	worker_get_progress(w, &p);
	CHECK(!p.busy, "idle after the drop");

	worker_set_stage_hook(w, NULL, NULL);
	CHECK(post_forward(w, &s, 4) == 0);
	work_result *fresh = next_result(w);
	CHECK(fresh && fresh->gen == 4 && fresh->status == MS_OK, "'%s'", fresh ? fresh->err.msg : "no result");
	if (ref && fresh && ref->status == MS_OK && fresh->status == MS_OK)
		CHECK(fresh->forward.ppl_merged == ref->forward.ppl_merged && fresh->forward.kl_p99 == ref->forward.kl_p99 &&
		      fresh->forward.ppl == ref->forward.ppl, "%.17g vs %.17g", fresh->forward.ppl_merged,
		      ref->forward.ppl_merged);
	work_result_free(ref);
	work_result_free(stale);
	work_result_free(fresh);
	worker_stop(w);
	sample_close(&s);
}

/* Labels the worker entered, in order, for the application-level test below. */
typedef struct {
	hold h;
	char seen[64][64];
	int n;                 /* worker thread only, read by the test once the worker is idle */
} trail;

static void record(void *ctx, const char *label)
{
	trail *t = ctx;
	if (t->n < 64)
		snprintf(t->seen[t->n++], sizeof t->seen[0], "%s", label);
	hold_at(&t->h, label);
}

/* In the application: a key that changes the plan while the model-level forward of the previous plan runs
 * cancels it (no further layer runs), marks the figures stale, and the new plan's figures land. */
static void test_app_plan_change_cancels_forward(void)
{
	sample s;
	app a;
	ms_error err = {0};
	if (sample_open(&s) != 0 ||
	    app_init(&a, s.m, s.cal, &(app_config){.width = 100, .height = 30, .eval_tokens = 256,
						    .tokens = "tests/data/forward/tokens.txt"}, &err) != 0) {
		CHECK(0, "sample unavailable: %s", err.msg);
		sample_close(&s);
		return;
	}
	app_wait_idle(&a);
	CHECK(a.model.shown == APP_MODEL_ORIGINAL, "shown %d '%s'", (int)a.model.shown, a.model.error);
	trail t = {.h = {.at = "perplexity: 1/"}};
	worker_set_stage_hook(a.w, record, &t);
	app_key(&a, '-');
	/* the block's evaluation lands, the plan settles, its forward starts and is held at its second layer */
	for (int i = 0; i < 60000 && !atomic_load_explicit(&t.h.reached, memory_order_relaxed); i++) {
		app_poll(&a);
		sleep_ms(1);
	}
	CHECK(atomic_load_explicit(&t.h.reached, memory_order_relaxed) && a.model.in_flight, "the forward is running");
	const unsigned gen = a.model.gen;
	app_key(&a, '-');
	CHECK(!a.model.in_flight && a.model.gen != gen, "the running forward is dropped");
	release(&t.h);
	app_wait_idle(&a);
	worker_set_stage_hook(a.w, NULL, NULL);
	int held = -1;
	for (int i = 0; i < t.n && held < 0; i++)
		if (strncmp(t.seen[i], "perplexity: 1/", 14) == 0)
			held = i;
	CHECK(held >= 0 && held + 1 < t.n && strncmp(t.seen[held + 1], "perplexity: 2/", 14) != 0,
	      "after the hold the cancelled forward ran on: '%s'", held >= 0 && held + 1 < t.n ? t.seen[held + 1] : "");
	CHECK(a.model.shown == APP_MODEL_MERGED && !a.model.stale && !a.model.failed && !a.model.in_flight,
	      "shown %d stale %d '%s'", (int)a.model.shown, a.model.stale, a.model.error);
	CHECK(!a.message[0], "the cancel is no error: '%s'", a.message);
	app_free(&a);
	sample_close(&s);
}

/* A commit posted while the model-level forward runs does not wait for it: the forward stops before its next
 * layer, the commit runs, and the forward of the same plan runs again after it. */
static void test_app_commit_overtakes_forward(void)
{
	sample s;
	app a;
	ms_error err = {0};
	if (sample_open(&s) != 0 ||
	    app_init(&a, s.m, s.cal, &(app_config){.width = 100, .height = 30, .eval_tokens = 256, .commit = mrun_run,
						    .commit_defaults = mrun_request_defaults(),
						    .tokens = "tests/data/forward/tokens.txt"}, &err) != 0) {
		CHECK(0, "sample unavailable: %s", err.msg);
		sample_close(&s);
		return;
	}
	char parent[512], out[600];
	fresh_dir(parent, sizeof parent, "overtake");
	snprintf(out, sizeof out, "%s/merged", parent);
	app_wait_idle(&a);
	trail t = {.h = {.at = "perplexity: 1/"}};
	worker_set_stage_hook(a.w, record, &t);
	app_key(&a, '-');
	for (int i = 0; i < 60000 && !atomic_load_explicit(&t.h.reached, memory_order_relaxed); i++) {
		app_poll(&a);
		sleep_ms(1);
	}
	CHECK(atomic_load_explicit(&t.h.reached, memory_order_relaxed) && a.model.in_flight, "the forward is running");
	app_key(&a, 'c');
	app_key(&a, KEYS_CTRL('u'));
	for (const char *c = out; *c; c++)
		app_key(&a, *c);
	app_key(&a, KEYS_ENTER);
	CHECK(a.mode == APP_MODE_PROGRESS, "mode %d", (int)a.mode);
	release(&t.h);
	app_wait_idle(&a);
	worker_set_stage_hook(a.w, NULL, NULL);
	int held = -1, commit = -1, again = -1;
	for (int i = 0; i < t.n; i++) {
		if (held < 0 && strncmp(t.seen[i], "perplexity: 1/", 14) == 0)
			held = i;
		else if (held >= 0 && commit < 0 && strncmp(t.seen[i], "commit", 6) == 0)
			commit = i;
		else if (commit >= 0 && again < 0 && strncmp(t.seen[i], "perplexity", 10) == 0)
			again = i;
	}
	CHECK(held >= 0 && commit == held + 1 && again > commit, "held at %d, commit at %d, forward again at %d", held,
	      commit, again);
	CHECK(a.mode == APP_MODE_MESSAGE && !a.dlg.is_error, "'%s'", a.dlg.text);
	CHECK(a.model.shown == APP_MODEL_MERGED && !a.model.stale && !a.model.in_flight, "shown %d stale %d",
	      (int)a.model.shown, a.model.stale);
	app_free(&a);
	sample_close(&s);
}

static void *fail_calloc(size_t n, size_t size)
{
	(void)n;
	(void)size;
	return NULL;
}

/* Only the second allocation fails: the result, after its queue entry succeeded. */
static int calloc_calls;
static void *fail_second_calloc(size_t n, size_t size)
{
	return ++calloc_calls == 2 ? NULL : calloc(n, size);
}

/* A job the worker cannot allocate is refused at once (freed, -1), never accepted and then dropped; the worker
 * is unharmed. */
static void test_post_out_of_memory(void)
{
	golden g;
	worker *w = NULL;
	if (golden_open(&g) != 0 || !(w = worker_start(g.m, g.cal, mrun_run))) {
		CHECK(0, "golden case or worker unavailable");
		golden_close(&g);
		return;
	}
	void *(*saved)(size_t, size_t) = worker_calloc;
	worker_calloc = fail_calloc;
	CHECK(post_eval(w, &g, 0, 1) == -1);
	calloc_calls = 0;
	worker_calloc = fail_second_calloc;
	CHECK(post_eval(w, &g, 0, 2) == -1 && calloc_calls == 2);
	worker_calloc = saved;
	worker_progress p;
	worker_get_progress(w, &p);
	CHECK(!p.busy && p.total == 0, "a refused job is not counted");
	CHECK(next_result(w) == NULL, "nothing answers for a refused job");
	CHECK(post_eval(w, &g, 0, 3) == 0);
	work_result *r = next_result(w);
	CHECK(r && r->gen == 3 && r->status == MS_OK);
	work_result_free(r);
	worker_stop(w);
	golden_close(&g);
}

/* Whether a row of the application's screen contains s. */
static int screen_has(const app *a, const char *s)
{
	char buf[4096];
	for (int y = 0; y < a->g.h; y++)
		if (grid_row_text(&a->g, y, buf, sizeof buf) >= 0 && strstr(buf, s))
			return 1;
	return 0;
}

/* In the application, an evaluation or a statistics request that cannot be posted shows as an error, not as a
 * block pending for ever. */
static void test_app_shows_refused_jobs(void)
{
	golden_app ga;
	if (golden_app_open(&ga, &(app_config){.width = 100, .height = 30, .eval_tokens = 256}) != 0) {
		CHECK(0, "golden case unavailable");
		golden_app_close(&ga);
		return;
	}
	app *a = &ga.a;
	void *(*saved)(size_t, size_t) = worker_calloc;
	worker_calloc = fail_calloc;
	app_key(a, '-');  /* block 0 merges two experts: its evaluation is asked for */
	CHECK(a->eval[0].state == APP_EVAL_FAILED && strstr(a->eval[0].error, "out of memory"), "state %d '%s'",
	      (int)a->eval[0].state, a->eval[0].error);
	app_key(a, 'b');  /* a new similarity base: every block's statistics are asked for */
	CHECK(a->message_error && strstr(a->message, "statistics: out of memory"), "'%s'", a->message);
	app_draw(a);
	CHECK(screen_has(a, "failed"), "the layer list shows the failed evaluation");
	worker_calloc = saved;
	app_wait_idle(a);
	for (int b = 0; b < a->n_blocks; b++)
		CHECK(a->eval[b].state != APP_EVAL_PENDING, "block %d pending", b);
	/* with memory back, the next change is evaluated */
	app_key(a, '-');
	app_wait_idle(a);
	CHECK(a->eval[0].state == APP_EVAL_DONE, "state %d '%s'", (int)a->eval[0].state, a->eval[0].error);
	golden_app_close(&ga);
}

int main(void)
{
	snprintf(tmp_root, sizeof tmp_root, "/tmp/moescope-worker-XXXXXX");
	if (!mkdtemp(tmp_root)) {
		perror("mkdtemp");
		return 1;
	}
	RUN(test_cancel_running_commit);
	RUN(test_cancel_queued_commit);
	RUN(test_cancel_running_evaluation);
	RUN(test_plan_change_cancels_forward);
	RUN(test_app_plan_change_cancels_forward);
	RUN(test_app_commit_overtakes_forward);
	RUN(test_post_out_of_memory);
	RUN(test_app_shows_refused_jobs);
	outdir_remove_tree(tmp_root);
	return test_summary();
}
