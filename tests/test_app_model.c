/* The application's model-level verdict (tui/app_model.c) on the mixtral-tiny sample with
 * tests/data/forward/tokens.txt: the header's figures are exactly those `moescope perplexity --plan --json`
 * reports for the plan the application holds (exported, then read back by the command), with the default merge
 * options and with others; the figures go stale on a change and come back for the new plan; a plan that merges
 * nothing shows the original alone without a new job; a bad token file is reported once, with the file and the
 * place, and nothing is retried.
 *
 * The command is the one `make test` built (MOESCOPE, else build/san/moescope), run from the repository root. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "io/calib.h"
#include "io/model.h"
#include "samples/samples.h"
#include "tests/test.h"
#include "tui/app.h"
#include "tui/views.h"

#define TOKENS "tests/data/forward/tokens.txt"

static char dir[256];
static char model_dir[300];

typedef struct {
	mdl_model *m;
	calib *cal;
	app a;
	int open;
} sample_app;

static int sample_open(sample_app *s, const char *tokens)
{
	ms_error err = {0};
	char cal_path[400];
	memset(s, 0, sizeof *s);
	snprintf(cal_path, sizeof cal_path, "%s/calib.safetensors", model_dir);
	if (mdl_open(model_dir, &s->m, &err) != MS_OK || calib_open(cal_path, s->m, &s->cal, &err) != MS_OK) {
		fprintf(stderr, "  sample: %s\n", err.msg);
		return -1;
	}
	app_config cfg = {.width = 100, .height = 30, .eval_tokens = 256, .tokens = tokens};
	if (app_init(&s->a, s->m, s->cal, &cfg, &err) != 0) {
		fprintf(stderr, "  app_init: %s\n", err.msg);
		return -1;
	}
	s->open = 1;
	return 0;
}

static void sample_close(sample_app *s)
{
	if (s->open)
		app_free(&s->a);
	if (s->cal)
		calib_close(s->cal);
	if (s->m)
		mdl_close(s->m);
}

/* Row y of the drawn screen. */
static const char *screen_row(app *a, int y, char *buf, size_t len)
{
	app_draw(a);
	if (grid_row_text(&a->g, y, buf, len) < 0)
		buf[0] = '\0';
	return buf;
}

static cJSON *read_json(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	char buf[8192];
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	return cJSON_Parse(buf);
}

static const cJSON *json_item(const cJSON *j, const char *object, const char *key)
{
	const cJSON *o = object ? cJSON_GetObjectItemCaseSensitive(j, object) : j;
	return cJSON_GetObjectItemCaseSensitive(o, key);
}

static double json_at(const cJSON *j, const char *object, const char *key)
{
	const cJSON *v = json_item(j, object, key);
	return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

/* Whether the command's JSON holds exactly x at object.key: cJSON writes a double with 15 significant digits
 * when they read back within an ulp, so the check is on the text: x written by cJSON as the command writes it. */
static int json_is(const cJSON *j, const char *object, const char *key, double x)
{
	const cJSON *v = json_item(j, object, key);
	cJSON *mine = cJSON_CreateNumber(x);
	char *a = v ? cJSON_PrintUnformatted(v) : NULL, *b = mine ? cJSON_PrintUnformatted(mine) : NULL;
	const int same = a && b && strcmp(a, b) == 0;
	if (!same)
		fprintf(stderr, "  %s.%s: the command wrote %s, the application has %s\n", object ? object : "", key,
			a ? a : "nothing", b ? b : "?");
	cJSON_free(a);
	cJSON_free(b);
	cJSON_Delete(mine);
	return same;
}

/* Exports the application's plan, runs `moescope perplexity --plan` on it with the application's merge options,
 * and compares the header's figures with the command's JSON: the numbers exactly, and the model line's text with
 * the command's numbers formatted as the header formats them. */
static void check_against_command(app *a, const char *name)
{
	char plan_path[400], json_path[400], cmd[2048], row[512];
	snprintf(plan_path, sizeof plan_path, "%s/%s.csv", dir, name);
	snprintf(json_path, sizeof json_path, "%s/%s.json", dir, name);
	ms_error err = {0};
	CHECK(plan_write_csv(plan_path, &a->cur.p, &err) == MS_OK, "%s", err.msg);
	const char *bin = getenv("MOESCOPE") ? getenv("MOESCOPE") : "build/san/moescope";
	const cmp_options *c = &a->mo.compress;
	char rank[64] = "";
	if (c->mode == CMP_RANK_ENERGY)
		snprintf(rank, sizeof rank, "--rank-energy %.17g", c->energy);
	snprintf(cmd, sizeof cmd, "'%s' perplexity '%s' --tokens %s --plan '%s' --layout %s --router %s --align %s "
		 "--weighting %s %s --json '%s' >/dev/null 2>&1", bin, model_dir, TOKENS, plan_path,
		 pipe_layout_name(a->mo.layout), rfit_method_name(a->mo.router), align_ref_name(a->mo.align),
		 merge_weighting_name(a->mo.weighting), rank, json_path);
	CHECK(system(cmd) == 0, "%s", cmd);
	cJSON *j = read_json(json_path);
	CHECK(j != NULL, "no JSON from %s", cmd);
	if (!j)
		return;
	const app_model *md = &a->model;
	const fwd_result *f = &md->fig;
	CHECK(md->shown == APP_MODEL_MERGED && !md->stale && !md->failed, "shown %d stale %d failed %d '%s'",
	      (int)md->shown, md->stale, md->failed, md->error);
	const double ppl = json_at(j, "original", "ppl"), ppl_m = json_at(j, "merged", "ppl");
	const double kl = json_at(j, "kl", "mean"), p99 = json_at(j, "kl", "p99");
	const double top1 = json_at(j, NULL, "top1_agreement");
	EXPECT(json_is(j, "original", "nll", md->nll) && json_is(j, "original", "ppl", md->ppl));
	EXPECT(json_is(j, "merged", "nll", f->mean_nll_merged) && json_is(j, "merged", "ppl", f->ppl_merged));
	EXPECT(json_is(j, "kl", "mean", f->kl_mean) && json_is(j, "kl", "p50", f->kl_p50) &&
	       json_is(j, "kl", "p90", f->kl_p90) && json_is(j, "kl", "p99", f->kl_p99));
	EXPECT(json_is(j, NULL, "top1_agreement", f->top1_agreement) && json_is(j, NULL, "tokens", (double)f->predicted));
	char want[512];
	snprintf(want, sizeof want, " model  ppl %.2f -> %.2f  KL %.3g (p99 %.3g)  top-1 %.1f%%", ppl, ppl_m, kl, p99,
		 100.0 * top1);
	screen_row(a, 2, row, sizeof row);
	CHECK(strncmp(row, want, strlen(want)) == 0, "\n    header '%s'\n    command '%s'", row, want);
	cJSON_Delete(j);
}

/* The header against the command, for the default options and for uniform weighting, first-expert alignment and
 * energy compression; on the way, each change marks the figures stale until they are recomputed. */
static void test_header_equals_command(void)
{
	sample_app s;
	if (sample_open(&s, TOKENS) != 0) {
		CHECK(0, "sample unavailable");
		sample_close(&s);
		return;
	}
	app *a = &s.a;
	char row[512];
	app_wait_idle(a);
	CHECK(a->model.shown == APP_MODEL_ORIGINAL && a->model.have_original, "shown %d '%s'", (int)a->model.shown,
	      a->model.error);
	char want[128];
	snprintf(want, sizeof want, " model  ppl %.2f  (nothing merged)", a->model.ppl);
	CHECK(strncmp(screen_row(a, 2, row, sizeof row), want, strlen(want)) == 0, "'%s'", row);
	CHECK(strncmp(screen_row(a, 4, row, sizeof row), "  1 Usage", 9) == 0, "tabs under the model line: '%s'", row);

	app_key(a, '-');
	app_key(a, 'j');
	app_key(a, '-');
	app_key(a, '-');
	app_wait_idle(a);
	check_against_command(a, "default");
	const double before = a->model.fig.ppl_merged;

	app_key(a, 'w');
	CHECK(a->model.stale, "a new weighting makes the figures stale");
	screen_row(a, 2, row, sizeof row);
	CHECK(strncmp(row, " model ~ppl ", 12) == 0 && strstr(row, "stale"), "'%s'", row);
	app_key(a, 'a');
	app_key(a, 'r');
	app_wait_idle(a);
	CHECK(a->model.fig.ppl_merged != before, "the figures are the new plan's");
	check_against_command(a, "options");
	sample_close(&s);
}

/* The per-block error column agrees with the model line and the commit: with blocks planned at different group
 * counts, each block is evaluated as the filled plan (pipe_fill_plan) writes it, exactly as `eval --plan` builds
 * it through the pipeline, and not padded with copies (which gives other figures). */
static void test_block_errors_use_filled_plan(void)
{
	sample_app s;
	if (sample_open(&s, NULL) != 0) {
		CHECK(0, "sample unavailable");
		sample_close(&s);
		return;
	}
	app *a = &s.a;
	app_wait_idle(a);
	app_key(a, '-');
	app_key(a, 'j');
	app_key(a, '-');
	app_key(a, '-');
	app_wait_idle(a);
	plan filled;
	ms_error err = {0};
	int slots = 0;
	CHECK(plan_copy(&filled, &a->cur.p) == 0);
	CHECK(pipe_fill_plan(&filled, &slots, &err) == MS_OK, "%s", err.msg);
	CHECK(plan_groups(&a->cur.p, 1) < slots, "block 1 is planned below E' = %d", slots);
	int padded_differs = 0;
	for (int b = 0; b < 2; b++) {
		const app_eval *ev = &a->eval[b];
		CHECK(ev->state == APP_EVAL_DONE, "block %d: state %d '%s'", b, (int)ev->state, ev->error);
		pipe_block blk;
		CHECK(pipe_load_block(s.m, s.cal, b, &blk, &err) == MS_OK, "%s", err.msg);
		pipe_merge_options mo = a->mo;
		mo.slots = slots;
		pipe_merged mg;
		blk_eval_result r = {0}, pad = {0};
		CHECK(pipe_merge_block(&blk, &filled, b, &mo, &mg, &err) == MS_OK, "%s", err.msg);
		CHECK(pipe_eval_block(&blk, &mg, &filled, b, a->cfg.eval_tokens, &r, &err) == MS_OK, "%s", err.msg);
		pipe_free_merged(&mg);
		CHECK(ev->r.rel_error == r.rel_error && ev->r.params_after == r.params_after && ev->groups == slots,
		      "block %d: column %.9g (%d groups), pipeline on the filled plan %.9g", b, ev->r.rel_error,
		      ev->groups, r.rel_error);
		/* the padded layout the column showed before */
		CHECK(pipe_merge_block(&blk, &a->cur.p, b, &mo, &mg, &err) == MS_OK, "%s", err.msg);
		CHECK(pipe_eval_block(&blk, &mg, &a->cur.p, b, a->cfg.eval_tokens, &pad, &err) == MS_OK, "%s", err.msg);
		pipe_free_merged(&mg);
		padded_differs += pad.rel_error != r.rel_error;
		pipe_free_block(&blk);
	}
	CHECK(padded_differs > 0, "the filled and padded layouts give the same figures: the check proves nothing");
	plan_free(&filled);
	sample_close(&s);
}

/* Undoing back to a plan that merges nothing shows the original's figures, computed once, at once. */
static void test_nothing_merged_reuses_original(void)
{
	sample_app s;
	if (sample_open(&s, TOKENS) != 0) {
		CHECK(0, "sample unavailable");
		sample_close(&s);
		return;
	}
	app *a = &s.a;
	app_wait_idle(a);
	const double ppl = a->model.ppl;
	app_key(a, '-');
	app_wait_idle(a);
	CHECK(a->model.shown == APP_MODEL_MERGED);
	const unsigned gen = a->model.gen;
	app_key(a, 'u');
	CHECK(a->model.shown == APP_MODEL_ORIGINAL && !a->model.stale && !a->model.in_flight,
	      "shown %d stale %d in flight %d", (int)a->model.shown, a->model.stale, a->model.in_flight);
	app_wait_idle(a);
	CHECK(a->model.gen == gen && a->model.ppl == ppl, "no job was posted");
	sample_close(&s);
}

/* A token id outside the vocabulary: one message naming the file and the place, the model line says why, and
 * nothing is computed or reported again after later changes. */
static void test_bad_tokens_reported_once(void)
{
	char path[400];
	snprintf(path, sizeof path, "%s/bad_tokens.txt", dir);
	FILE *f = fopen(path, "w");
	CHECK(f != NULL);
	if (!f)
		return;
	fputs("1 2 3\n4 256 5\n", f);
	fclose(f);
	sample_app s;
	if (sample_open(&s, path) != 0) {
		CHECK(0, "sample unavailable");
		sample_close(&s);
		return;
	}
	app *a = &s.a;
	char row[512];
	CHECK(a->message_error && strstr(a->message, "bad_tokens.txt") && strstr(a->message, "line 2"), "'%s'",
	      a->message);
	app_wait_idle(a);
	screen_row(a, 2, row, sizeof row);
	CHECK(strncmp(row, " model  ppl failed: ", 20) == 0 && strstr(row, "bad_tokens.txt"), "'%s'", row);
	app_key(a, '-');
	app_wait_idle(a);
	CHECK(!a->message[0] && !a->model.in_flight && a->model.gen == 0, "'%s' gen %u", a->message, a->model.gen);
	sample_close(&s);
}

int main(void)
{
	snprintf(dir, sizeof dir, "%s/moescope-appmodel-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	ms_error err = {0};
	snprintf(model_dir, sizeof model_dir, "%s/mixtral-tiny", dir);
	if (samples_write(dir, "mixtral-tiny", &err) != MS_OK) {
		fprintf(stderr, "samples: %s\n", err.msg);
		return 1;
	}
	RUN(test_header_equals_command);
	RUN(test_nothing_merged_reuses_original);
	RUN(test_bad_tokens_reported_once);
	RUN(test_block_errors_use_filled_plan);
	char cmd[400];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	return test_summary();
}
