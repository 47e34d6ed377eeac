/* Unit tests of the interactive application without a terminal: the cell grid (clipping, UTF-8, glyph sets,
 * text read back), the key table (names, lookup, the help screen lists every key), the colour schemes, and the
 * application state driven by keys on the golden M-SMoE case, whose plans were computed independently
 * (tests/data/golden/msmoe-mixtral/README.md): the plans the keys make must be the golden partitions. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/app_fixture.h"
#include "tests/test.h"
#include "tui/app.h"
#include "tui/grid.h"
#include "tui/keys.h"
#include "tui/views.h"


/* The text of row y, trailing spaces dropped. */
static const char *row(const grid *g, int y)
{
	static char buf[4096 * 4 + 1];
	if (grid_row_text(g, y, buf, sizeof buf) < 0)
		buf[0] = '\0';
	return buf;
}

/* Whether any row of the grid contains s. */
static int screen_has(const grid *g, const char *s)
{
	for (int y = 0; y < g->h; y++)
		if (strstr(row(g, y), s))
			return 1;
	return 0;
}

static void test_grid_text_and_clip(void)
{
	grid g;
	CHECK(grid_init(&g, 10, 3, &grid_glyphs_ascii) == 0);
	CHECK(grid_text(&g, 0, 0, -1, "hello", GRID_EL_DEFAULT, 0) == 5);
	CHECK(strcmp(row(&g, 0), "hello") == 0, "row 0 '%s'", row(&g, 0));
	/* text longer than its width ends in the ellipsis glyph */
	CHECK(grid_text(&g, 0, 1, 4, "abcdefgh", GRID_EL_DEFAULT, 0) == 4);
	CHECK(strcmp(row(&g, 1), "abc~") == 0, "row 1 '%s'", row(&g, 1));
	/* nothing lands outside the clip rectangle or the grid */
	grid_clip(&g, (grid_rect){2, 2, 3, 1});
	grid_text(&g, 0, 2, -1, "0123456789", GRID_EL_DEFAULT, 0);
	grid_put(&g, 50, 50, 'x', GRID_EL_DEFAULT, 0);
	grid_put(&g, -1, 0, 'x', GRID_EL_DEFAULT, 0);
	CHECK(strcmp(row(&g, 2), "  234") == 0, "row 2 '%s'", row(&g, 2));
	grid_unclip(&g);
	CHECK(grid_at(&g, 10, 0) == NULL && grid_at(&g, 0, 3) == NULL && grid_at(&g, 9, 2) != NULL);
	/* a larger grid after a resize starts blank */
	CHECK(grid_resize(&g, 20, 4) == 0 && g.w == 20 && g.h == 4 && row(&g, 0)[0] == '\0');
	CHECK(grid_resize(&g, 0, 4) == -1 && g.w == 20);
	grid_free(&g);
}

static void test_utf8(void)
{
	/* every codepoint class round-trips */
	const uint32_t cps[] = {'A', 0xB7, 0x2581, 0x2588, 0x1F600, 0x10FFFF};
	for (size_t i = 0; i < sizeof cps / sizeof cps[0]; i++) {
		char buf[5] = {0};
		int n = grid_utf8_encode(cps[i], buf), len;
		CHECK(grid_utf8_decode(buf, &len) == cps[i] && len == n, "U+%X", (unsigned)cps[i]);
	}
	int len;
	CHECK(grid_utf8_decode("\xC0\xAF", &len) == 0xFFFD && len == 1);  /* overlong '/' */
	CHECK(grid_utf8_decode("\xED\xA0\x80", &len) == 0xFFFD);          /* a surrogate */
	CHECK(grid_utf8_decode("\xE2\x96", &len) == 0xFFFD && len == 1);  /* cut short by the NUL */
	CHECK(grid_text_width("\xE2\x96\x81x") == 2);
	/* bad bytes show as '?', control characters as '.', so nothing reaches the terminal raw */
	grid g;
	CHECK(grid_init(&g, 8, 1, &grid_glyphs_utf8) == 0);
	grid_text(&g, 0, 0, -1, "a\x1b[2J\xff", GRID_EL_DEFAULT, 0);
	CHECK(strcmp(row(&g, 0), "a.[2J?") == 0, "'%s'", row(&g, 0));
	grid_free(&g);
}

/* Whether every glyph of a set is plain ASCII. */
static int glyphs_ascii(const grid_glyphs *gl)
{
	uint32_t all[8 + GRID_HEAT_LEVELS + 8 + 11];
	int n = 0;
	for (int i = 0; i < 8; i++)
		all[n++] = gl->spark[i];
	for (int i = 0; i < GRID_HEAT_LEVELS; i++)
		all[n++] = gl->shade[i];
	for (int i = 0; i < 8; i++)
		all[n++] = gl->eighth[i];
	const uint32_t rest[] = {gl->hline, gl->vline, gl->tl, gl->tr, gl->bl, gl->br,
				 gl->dominant, gl->pointer, gl->fill, gl->empty, gl->ellipsis};
	for (size_t i = 0; i < sizeof rest / sizeof rest[0]; i++)
		all[n++] = rest[i];
	for (int i = 0; i < n; i++)
		if (all[i] >= 0x80 || all[i] < 0x20)
			return 0;
	return 1;
}

static void test_glyph_sets(void)
{
	CHECK(glyphs_ascii(&grid_glyphs_ascii));
	CHECK(!glyphs_ascii(&grid_glyphs_utf8));
	grid u, a;
	CHECK(grid_init(&u, 16, 2, &grid_glyphs_utf8) == 0 && grid_init(&a, 16, 2, &grid_glyphs_ascii) == 0);
	for (int i = 0; i <= 8; i++) {
		grid_put(&u, i, 0, grid_spark(&u, i / 8.0), GRID_EL_SPARK, 0);
		grid_put(&a, i, 0, grid_spark(&a, i / 8.0), GRID_EL_SPARK, 0);
	}
	CHECK(strcmp(row(&u, 0), "▁▂▃▄▅▆▇██") == 0, "'%s'", row(&u, 0));
	CHECK(strcmp(row(&a, 0), "_.:-=+*##") == 0, "'%s'", row(&a, 0));
	CHECK(grid_spark(&u, NAN) == 0x2581 && grid_spark(&u, -1) == 0x2581 && grid_spark(&u, 7) == 0x2588);
	/* 17/32 of 4 cells is 17 eighths: two full cells and one eighth */
	CHECK(grid_hbar(&u, 0, 1, 4, 17.0 / 32.0, GRID_EL_DEFAULT) == 3);
	CHECK(strcmp(row(&u, 1), "██▏") == 0, "'%s'", row(&u, 1));
	CHECK(grid_hbar(&a, 0, 1, 4, 2.0, GRID_EL_DEFAULT) == 4 && strcmp(row(&a, 1), "####") == 0);
	/* text in the ASCII set never writes a byte over 0x7F */
	grid_text(&a, 0, 1, -1, "\xE2\x96\x88 ok", GRID_EL_DEFAULT, 0);
	CHECK(strcmp(row(&a, 1), "? ok") == 0, "'%s'", row(&a, 1));
	grid_free(&u);
	grid_free(&a);
}

static void test_heat_levels(void)
{
	CHECK(grid_heat_level(0.5, 0.5, 1.0) == 0);
	CHECK(grid_heat_level(0.59, 0.5, 1.0) == 0 && grid_heat_level(0.61, 0.5, 1.0) == 1);
	CHECK(grid_heat_level(1.0, 0.5, 1.0) == GRID_HEAT_LEVELS - 1);
	CHECK(grid_heat_level(2.0, 0.5, 1.0) == GRID_HEAT_LEVELS - 1 && grid_heat_level(-2, 0.5, 1.0) == 0);
	CHECK(grid_heat_level(1.0, 1.0, 1.0) == GRID_HEAT_LEVELS - 1);  /* a flat matrix: all top */
	CHECK(grid_heat_level(NAN, 0, 1) == 0);
}

/* Every element of every scheme is readable: foreground and background differ unless both are the terminal's;
 * the mono scheme sets no colour at all. */
static void test_schemes(void)
{
	const grid_scheme *s[] = {&grid_scheme_color256, &grid_scheme_color8, &grid_scheme_mono};
	for (int k = 0; k < 3; k++)
		for (int e = 0; e < GRID_ELEMENT_COUNT; e++) {
			const grid_style *st = &s[k]->style[e];
			CHECK(st->fg != st->bg || st->fg == -1, "%s: %s", s[k]->name, grid_element_names[e]);
			if (s[k] == &grid_scheme_mono)
				CHECK(st->fg == -1 && st->bg == -1, "mono %s has a colour", grid_element_names[e]);
		}
	unsetenv("NO_COLOR");
	CHECK(app_choose_scheme(0, 256) == &grid_scheme_color256);
	CHECK(app_choose_scheme(0, 8) == &grid_scheme_color8);
	CHECK(app_choose_scheme(0, 0) == &grid_scheme_mono && app_choose_scheme(1, 256) == &grid_scheme_mono);
	setenv("NO_COLOR", "1", 1);
	CHECK(app_choose_scheme(0, 256) == &grid_scheme_mono);
	setenv("NO_COLOR", "", 1);  /* no-color.org: set but empty means colours */
	CHECK(app_choose_scheme(0, 256) == &grid_scheme_color256);
	unsetenv("NO_COLOR");
}

static void test_key_names(void)
{
	static const struct { const char *name; int key; } cases[] = {
		{"q", 'q'}, {"<", '<'}, {"<Up>", KEYS_UP}, {"<Down>", KEYS_DOWN}, {"<Left>", KEYS_LEFT},
		{"<Right>", KEYS_RIGHT}, {"<Tab>", KEYS_TAB}, {"<S-Tab>", KEYS_BTAB}, {"<Enter>", KEYS_ENTER},
		{"<Esc>", KEYS_ESC}, {"<F1>", KEYS_F1}, {"<F12>", KEYS_F12}, {"<C-r>", KEYS_CTRL('r')}, {"<Space>", ' '},
		{"<BS>", KEYS_BACKSPACE}, {"\xC3\xA9", 0xE9},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		CHECK(keys_parse(cases[i].name) == cases[i].key, "%s", cases[i].name);
		char buf[16];
		CHECK(keys_parse(keys_format(cases[i].key, buf, sizeof buf)) == cases[i].key, "%s -> %s", cases[i].name,
		      buf);
	}
	const char *bad[] = {"", "qq", "<Nope>", "<F13>", "<F0>", "<C-1>", "<>", "\x01", "\xff"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		CHECK(keys_parse(bad[i]) == -1, "'%s' parsed", bad[i]);
}

/* The help screen lists every key of the table with its description, and --list-keys' names read back. */
static void test_help_lists_every_key(void)
{
	char *help = keys_help_text();
	CHECK(help != NULL);
	for (int i = 0; help && i < keys_count; i++) {
		char name[16];
		keys_format(keys_table[i].key, name, sizeof name);
		CHECK(strstr(help, name) != NULL, "key %s (%s) missing from the help", name, keys_table[i].name);
		CHECK(strstr(help, keys_table[i].description) != NULL, "'%s' missing", keys_table[i].description);
		CHECK(keys_parse(name) == keys_table[i].key, "%s does not read back", name);
	}
	free(help);
}

static void test_key_table(void)
{
	/* a key bound twice in the same place would make one binding unreachable */
	for (int i = 0; i < keys_count; i++)
		for (int j = i + 1; j < keys_count; j++)
			CHECK(keys_table[i].key != keys_table[j].key || keys_table[i].flags != keys_table[j].flags,
			      "%s and %s share a key", keys_table[i].name, keys_table[j].name);
	for (int i = 0; i < keys_count; i++)
		CHECK(keys_table[i].action && keys_table[i].name && keys_table[i].description && keys_table[i].description[0]);
	/* a view's own binding wins over the everywhere one */
	CHECK(keys_lookup(KEYS_UP, APP_VIEW_HEATMAP)->action == app_act_heat_up);
	CHECK(keys_lookup(KEYS_UP, APP_VIEW_USAGE)->action == app_act_block_prev);
	CHECK(keys_lookup('q', APP_VIEW_GROUPS)->action == app_act_quit);
	CHECK(keys_lookup('Z', APP_VIEW_USAGE) == NULL);
}

/* A commit that records what it was asked and writes nothing. */
static struct {
	int calls;
	pipe_layout layout;
	rfit_method router;
	int groups0;
	char out_dir[256];
} commit_seen;

static ms_status fake_commit(const mdl_model *m, const calib *cal, const mrun_request *req, mrun_progress_fn progress,
			     void *ctx, const atomic_int *cancel, mrun_summary *summary, ms_error *err)
{
	(void)cal;
	(void)cancel;
	commit_seen.calls++;
	commit_seen.layout = req->opts.layout;
	commit_seen.router = req->opts.router;
	commit_seen.groups0 = plan_groups(req->plan, 0);
	snprintf(commit_seen.out_dir, sizeof commit_seen.out_dir, "%s", req->out_dir);
	if (progress)
		progress(ctx, "write", 1, 1);
	memset(summary, 0, sizeof *summary);
	summary->blocks = m->n_blocks;
	summary->experts_before = m->n_experts;
	summary->experts_after = plan_groups(req->plan, 0);
	if (strstr(req->out_dir, "exists"))
		return ms_fail(err, MS_ERR_EXISTS, "%s: already exists (use --force to replace it)", req->out_dir);
	return strstr(req->out_dir, "fail") ? ms_fail(err, MS_ERR_IO, "%s: disk full", req->out_dir) : MS_OK;
}

static void keys(app *a, const char *seq)
{
	for (const char *s = seq; *s; s++)
		app_key(a, *s);
}

/* Whether block b of x and y put the same experts together (labels may differ). */
static int same_partition(const plan *x, const plan *y, int b)
{
	const int E = x->n_experts;
	for (int i = 0; i < E; i++)
		for (int j = 0; j < E; j++) {
			int sx = x->group[b * E + i] == x->group[b * E + j];
			int sy = y->group[b * E + i] == y->group[b * E + j];
			if (sx != sy)
				return 0;
		}
	return 1;
}

static int read_golden(const char *name, const mdl_model *m, plan *p)
{
	const char *labels[] = {"0", "1", "2"};
	char path[256];
	snprintf(path, sizeof path, GOLDEN "/expected/%s", name);
	ms_error err = {0};
	if (plan_read_csv(path, m->n_blocks, m->n_experts, labels, p, &err) != MS_OK) {
		fprintf(stderr, "  %s\n", err.msg);
		return -1;
	}
	return 0;
}

/* G - 1 five times in every block gives the golden 3-groups-per-block plan. */
static void test_app_per_block_plan(void)
{
	golden_app ga;
	plan want;
	if (golden_app_open(&ga, &(app_config){.width = 100, .height = 30, .eval_tokens = 256, .commit = fake_commit}) != 0 || read_golden("plan_per_layer_3.csv", ga.m, &want) != 0) {
		CHECK(0, "golden case unavailable");
		golden_app_close(&ga);
		return;
	}
	app *a = &ga.a;
	CHECK(!app_dirty(a), "a plan with G = E merges nothing: not modified");
	for (int b = 0; b < a->n_blocks; b++) {
		keys(a, "-----");
		if (b + 1 < a->n_blocks)
			keys(a, "j");
	}
	app_wait_idle(a);
	ms_error err = {0};
	CHECK(plan_validate(&a->cur.p, &err) == MS_OK, "%s", err.msg);
	for (int b = 0; b < a->n_blocks; b++) {
		CHECK(plan_groups(&a->cur.p, b) == 3);
		CHECK(same_partition(&a->cur.p, &want, b), "block %d differs from the golden plan", b);
		CHECK(a->eval[b].state == APP_EVAL_DONE, "block %d evaluated", b);
		CHECK(a->eval[b].r.rel_error > 0 && a->eval[b].r.params_after <= a->eval[b].r.params_before);
	}
	CHECK(app_dirty(a));
	app_totals t = app_plan_totals(a);
	CHECK(t.kept == 9 && t.experts == 24 && t.evaluated == 3 && t.merged == 3);
	CHECK_CLOSE(t.mean_error, (a->eval[0].r.rel_error + a->eval[1].r.rel_error + a->eval[2].r.rel_error) / 3, 1e-12);
	/* the header says what the state holds */
	app_draw(a);
	CHECK(screen_has(&a->g, "9/24 experts"), "header: '%s'", row(&a->g, 1));
	CHECK(screen_has(&a->g, "modified"));
	plan_free(&want);
	golden_app_close(&ga);
}

/* g four times (average G 8 -> 4) gives the golden MC-SMoE global allocation plan. */
static void test_app_global_plan(void)
{
	golden_app ga;
	plan want;
	if (golden_app_open(&ga, &(app_config){.width = 100, .height = 30, .eval_tokens = 256, .commit = fake_commit}) != 0 || read_golden("plan_global_avg4.csv", ga.m, &want) != 0) {
		CHECK(0, "golden case unavailable");
		golden_app_close(&ga);
		return;
	}
	app *a = &ga.a;
	keys(a, "gggg");
	app_wait_idle(a);
	for (int b = 0; b < a->n_blocks; b++) {
		CHECK(plan_groups(&a->cur.p, b) == plan_groups(&want, b), "block %d: G %d, golden %d", b,
		      plan_groups(&a->cur.p, b), plan_groups(&want, b));
		CHECK(same_partition(&a->cur.p, &want, b), "block %d differs from the golden plan", b);
	}
	/* undo walks back one global step at a time, redo forward again */
	int g_before_undo = a->cur.groups[0] + a->cur.groups[1] + a->cur.groups[2];
	app_key(a, 'u');
	CHECK(a->cur.groups[0] + a->cur.groups[1] + a->cur.groups[2] > g_before_undo);
	app_key(a, KEYS_CTRL('r'));
	CHECK(a->cur.groups[0] + a->cur.groups[1] + a->cur.groups[2] == g_before_undo);
	for (int b = 0; b < a->n_blocks; b++)
		CHECK(same_partition(&a->cur.p, &want, b), "block %d after undo and redo", b);
	plan_free(&want);
	golden_app_close(&ga);
}

/* Exporting writes the plan that importing reads back; a bad file opens an error dialog naming the place. */
static void test_app_export_import(void)
{
	golden_app ga;
	if (golden_app_open(&ga, &(app_config){.width = 100, .height = 30, .eval_tokens = 256, .commit = fake_commit}) != 0) {
		CHECK(0, "golden case unavailable");
		golden_app_close(&ga);
		return;
	}
	app *a = &ga.a;
	char dir[] = "/tmp/moescope-tui-XXXXXX", path[128], bad[128];
	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof path, "%s/plan.csv", dir);
	snprintf(bad, sizeof bad, "%s/bad.csv", dir);
	keys(a, "---L");  /* and the aliased layout, which the settings beside the CSV keep */
	app_wait_idle(a);
	plan made;
	CHECK(plan_copy(&made, &a->cur.p) == 0);
	app_key(a, 'e');
	CHECK(a->mode == APP_MODE_PROMPT && strcmp(a->dlg.input, "moescope_plan.csv") == 0);
	app_key(a, KEYS_CTRL('u'));
	keys(a, path);
	app_key(a, KEYS_ENTER);
	CHECK(a->mode == APP_MODE_NORMAL && !app_dirty(a) && strstr(a->message, "plan written"), "%s", a->message);
	char side[160];
	snprintf(side, sizeof side, "%s.settings", path);
	CHECK(access(side, R_OK) == 0, "the settings beside the CSV");
	keys(a, "++uL");  /* change the plan and the layout, then import the file: both come back */
	CHECK(a->mo.layout == PIPE_LAYOUT_COMPACT);
	app_key(a, 'i');
	app_key(a, KEYS_CTRL('u'));
	keys(a, path);
	app_key(a, KEYS_ENTER);
	app_wait_idle(a);
	CHECK(a->mode == APP_MODE_NORMAL && !app_dirty(a));
	CHECK(memcmp(a->cur.p.group, made.group, 24 * sizeof(int)) == 0);
	CHECK(a->mo.layout == PIPE_LAYOUT_ALIASED && strstr(a->message, "with its settings"), "'%s'", a->message);
	FILE *f = fopen(bad, "w");
	CHECK(f != NULL);
	if (f) {
		fputs("layer,expert,group,dominant,frequency\n0,0,0,1,0.5\n9,0,0,1,0.5\n", f);
		fclose(f);
	}
	app_key(a, 'i');
	app_key(a, KEYS_CTRL('u'));
	keys(a, bad);
	app_key(a, KEYS_ENTER);
	CHECK(a->mode == APP_MODE_MESSAGE && a->dlg.is_error);
	CHECK(strstr(a->dlg.text, "line 3") != NULL, "'%s'", a->dlg.text);
	CHECK(memcmp(a->cur.p.group, made.group, 24 * sizeof(int)) == 0, "a failed import leaves the plan");
	app_draw(a);
	CHECK(screen_has(&a->g, "Import failed"));
	app_key(a, 'x');
	CHECK(a->mode == APP_MODE_PROMPT && strcmp(a->dlg.input, bad) == 0, "the prompt again, with the path: '%s'",
	      a->dlg.input);
	app_key(a, KEYS_ESC);
	CHECK(a->mode == APP_MODE_NORMAL);
	app_key(a, 'i');
	CHECK(a->mode == APP_MODE_PROMPT && strcmp(a->dlg.input, bad) == 0, "the last path is offered: '%s'", a->dlg.input);
	app_key(a, KEYS_ESC);
	plan_free(&made);
	unlink(path);
	unlink(side);
	unlink(bad);
	CHECK(rmdir(dir) == 0, "nothing else was written beside the plan");
	golden_app_close(&ga);
}

/* The commit dialog hands the current plan and the chosen layout and router to the commit function; quitting
 * with an unsaved plan asks first. */
static void test_app_commit_and_quit(void)
{
	golden_app ga;
	if (golden_app_open(&ga, &(app_config){.width = 80, .height = 24, .eval_tokens = 256, .commit = fake_commit}) != 0) {
		CHECK(0, "golden case unavailable");
		golden_app_close(&ga);
		return;
	}
	app *a = &ga.a;
	keys(a, "----");
	app_key(a, 'q');
	CHECK(a->mode == APP_MODE_CONFIRM && !a->quit);
	app_key(a, 'n');
	CHECK(a->mode == APP_MODE_NORMAL && !a->quit);
	app_key(a, 'c');
	CHECK(a->mode == APP_MODE_COMMIT && strstr(a->dlg.input, "-merged"));
	app_key(a, KEYS_CTRL('u'));
	keys(a, "/nowhere/out");
	app_key(a, KEYS_TAB);
	app_key(a, KEYS_RIGHT);  /* layout: aliased */
	app_key(a, KEYS_TAB);
	app_key(a, KEYS_LEFT);   /* router: lse-fit -> dominant */
	app_key(a, KEYS_ENTER);
	app_wait_idle(a);
	CHECK(commit_seen.calls == 1 && commit_seen.layout == PIPE_LAYOUT_ALIASED && commit_seen.router == RFIT_DOMINANT);
	CHECK(commit_seen.groups0 == 4 && strcmp(commit_seen.out_dir, "/nowhere/out") == 0);
	CHECK(a->mode == APP_MODE_MESSAGE && !a->dlg.is_error && !app_dirty(a));
	app_key(a, KEYS_ENTER);
	/* a failing commit reports and keeps the plan unsaved */
	keys(a, "+");
	app_key(a, 'c');
	app_key(a, KEYS_CTRL('u'));
	keys(a, "/fail");
	app_key(a, KEYS_ENTER);
	app_wait_idle(a);
	CHECK(a->mode == APP_MODE_MESSAGE && a->dlg.is_error && strstr(a->dlg.text, "disk full"));
	CHECK(app_dirty(a));
	app_key(a, KEYS_ENTER);
	CHECK(a->mode == APP_MODE_COMMIT && strcmp(a->dlg.input, "/fail") == 0, "the dialog again, with the directory");
	app_key(a, KEYS_ESC);
	app_key(a, 'c');
	CHECK(strcmp(a->dlg.input, "/fail") == 0, "the last directory is offered: '%s'", a->dlg.input);
	app_key(a, KEYS_CTRL('u'));
	keys(a, "/exists");
	app_key(a, KEYS_ENTER);
	app_wait_idle(a);
	CHECK(a->mode == APP_MODE_MESSAGE && strstr(a->dlg.text, "Replace existing") && !strstr(a->dlg.text, "--force"),
	      "the dialog's field, not the command line's flag: '%s'", a->dlg.text);
	app_key(a, KEYS_ENTER);
	app_key(a, KEYS_ESC);
	app_key(a, 'q');
	app_key(a, 'y');
	CHECK(a->quit);
	golden_app_close(&ga);
}

/* An evaluation answered after the plan changed again is dropped: G - 1 then G + 1 at once leaves the block
 * unmerged, whatever the worker finished in between. A last G - 1 is evaluated as a compact commit writes it: the
 * other blocks keep their 8 experts, so E' is 8 and block 0's 7 groups are split back to 8. */
static void test_app_stale_evaluation(void)
{
	golden_app ga;
	if (golden_app_open(&ga, &(app_config){.width = 100, .height = 30, .eval_tokens = 256, .commit = fake_commit}) != 0) {
		CHECK(0, "golden case unavailable");
		golden_app_close(&ga);
		return;
	}
	app *a = &ga.a;
	for (int i = 0; i < 5; i++) {
		keys(a, "-+");
		app_wait_idle(a);
		CHECK(a->eval[0].state == APP_EVAL_NONE && app_plan_is_identity(&a->cur.p, 0));
	}
	keys(a, "-");
	app_wait_idle(a);
	CHECK(a->eval[0].state == APP_EVAL_DONE && a->eval[0].groups == 8 && plan_groups(&a->cur.p, 0) == 7,
	      "state %d, %d groups evaluated, %d planned", (int)a->eval[0].state, a->eval[0].groups,
	      plan_groups(&a->cur.p, 0));
	golden_app_close(&ga);
}

/* Every view draws at 80 x 24 without a cell outside the screen, the heatmap explains its cursor, the help
 * screen lists the keys, and a resize keeps the layout. */
static void test_app_views_fit(void)
{
	golden_app ga;
	if (golden_app_open(&ga, &(app_config){.width = 80, .height = 24, .eval_tokens = 256, .commit = fake_commit}) != 0) {
		CHECK(0, "golden case unavailable");
		golden_app_close(&ga);
		return;
	}
	app *a = &ga.a;
	keys(a, "---");
	app_wait_idle(a);
	for (int v = 0; v < APP_VIEW_COUNT; v++) {
		app_key(a, '1' + v);
		app_draw(a);
		CHECK(screen_has(&a->g, app_view_names[v]), "tab %s", app_view_names[v]);
		CHECK(strstr(row(&a->g, a->g.h - 1), "help") != NULL, "status line '%s'", row(&a->g, a->g.h - 1));
	}
	app_key(a, '2');
	app_key(a, 'l');
	app_key(a, 'l');
	app_key(a, KEYS_DOWN);
	app_draw(a);
	char want[64];
	snprintf(want, sizeof want, "expert 1 vs 2: %.4f (router-logits)", a->stats[0].similarity[SIM_ROUTER_LOGITS][1 * 8 + 2]);
	CHECK(screen_has(&a->g, want), "no '%s'", want);
	app_key(a, '?');
	app_draw(a);
	CHECK(screen_has(&a->g, "Help") && screen_has(&a->g, "next block") && !screen_has(&a->g, "<C-r>"));
	int seen_redo = 0, seen_clear = 0;
	for (int i = 0; i < 30; i++) {
		app_key(a, KEYS_PGDN);  /* scrolls to the end, not past it */
		app_draw(a);
		seen_redo |= screen_has(&a->g, "<C-r>");
		seen_clear |= screen_has(&a->g, "<C-u> clears");
	}
	CHECK(seen_redo && seen_clear, "the keys, C-r and the dialog's C-u among them");
	CHECK(screen_has(&a->g, "ppl, KL") && screen_has(&a->g, "top-1"), "the legend ends the help");
	app_key(a, KEYS_ESC);
	CHECK(app_resize(a, 120, 40) == 0);
	app_key(a, KEYS_RESIZE);
	app_draw(a);
	CHECK(a->g.w == 120 && screen_has(&a->g, "Similarity (router-logits) of block 0"));
	golden_app_close(&ga);
}

/* Clicks hit what is drawn there: every tab, every block row, every heatmap cell exactly once. */
static void test_app_mouse(void)
{
	golden_app ga;
	if (golden_app_open(&ga, &(app_config){.width = 80, .height = 24, .eval_tokens = 256, .commit = fake_commit}) != 0) {
		CHECK(0, "golden case unavailable");
		golden_app_close(&ga);
		return;
	}
	app *a = &ga.a;
	app_key(a, '2');
	app_draw(a);
	int tabs[APP_VIEW_COUNT] = {0}, blocks[3] = {0}, cells[64] = {0};
	for (int y = 0; y < a->g.h; y++)
		for (int x = 0; x < a->g.w; x++) {
			views_hit h = views_hit_test(a, a->g.w, a->g.h, x, y);
			if (h.kind == VIEWS_HIT_TAB)
				tabs[h.index]++;
			if (h.kind == VIEWS_HIT_BLOCK)
				blocks[h.index]++;
			if (h.kind == VIEWS_HIT_CELL) {
				cells[h.row * 8 + h.col]++;
				/* the glyph under the click is a heat shade, drawn in a heat colour, or the diagonal's own */
				const grid_cell *c = grid_at(&a->g, x, y);
				if (h.row == h.col)
					CHECK(c->ch == a->g.gl->diagonal, "(%d, %d) is not the diagonal", x, y);
				else
					CHECK(c->el >= GRID_EL_HEAT0 && c->el <= GRID_EL_HEAT4, "(%d, %d) is not a cell", x, y);
			}
		}
	for (int v = 0; v < APP_VIEW_COUNT; v++)
		CHECK(tabs[v] == grid_text_width(app_view_names[v]) + 4, "tab %d: %d columns", v, tabs[v]);
	for (int b = 0; b < 3; b++)
		CHECK(blocks[b] > 0, "block %d not clickable", b);
	for (int i = 0; i < 64; i++)
		CHECK(cells[i] == 2, "cell %d vs %d: %d columns", i / 8, i % 8, cells[i]);  /* two columns a cell */
	for (int y = 0; y < a->g.h; y++)
		for (int x = 0; x < a->g.w; x++) {
			views_hit h = views_hit_test(a, a->g.w, a->g.h, x, y);
			if (h.kind == VIEWS_HIT_CELL && h.row == 5 && h.col == 3) {
				CHECK(app_click(a, x, y) == KEYS_REDRAW && a->heat_row == 5 && a->expert == 3);
				y = a->g.h;
				break;
			}
		}
	for (int y = 0; y < a->g.h; y++)
		for (int x = 0; x < a->g.w; x++) {
			views_hit h = views_hit_test(a, a->g.w, a->g.h, x, y);
			if (h.kind == VIEWS_HIT_BLOCK && h.index == 2) {
				app_click(a, x, y);
				y = a->g.h;
				break;
			}
		}
	CHECK(a->block == 2);
	app_key(a, '?');
	CHECK(app_click(a, 1, 5) == 0 && a->block == 2, "clicks do nothing under a dialog");
	golden_app_close(&ga);
}

/* The real commit, recording what it wrote. */
static mrun_summary written;
static ms_status recording_commit(const mdl_model *m, const calib *cal, const mrun_request *req, mrun_progress_fn progress,
				  void *ctx, const atomic_int *cancel, mrun_summary *summary, ms_error *err)
{
	ms_status st = mrun_run(m, cal, req, progress, ctx, cancel, summary, err);
	written = *summary;
	return st;
}

/* Commits the current plan with the main screen's settings; the bytes the checkpoint lost. */
static double commit_saving(app *a, const char *dir)
{
	memset(&written, 0, sizeof written);
	app_key(a, 'c');
	app_key(a, KEYS_CTRL('u'));
	keys(a, dir);
	for (int i = 0; i < 3; i++)
		app_key(a, KEYS_TAB);
	app_key(a, KEYS_RIGHT);  /* replace an existing output */
	app_key(a, KEYS_ENTER);
	app_wait_idle(a);
	CHECK(a->mode == APP_MODE_MESSAGE && !a->dlg.is_error, "%s", a->dlg.text);
	app_key(a, KEYS_ENTER);
	return (double)written.bytes_before - (double)written.bytes_after;
}

/* The header's saving is what the commit writes, for each layout and format: its sizes are computed from the plan
 * (and, for factors, the measured ranks) while the commit's come from the tensors it wrote. */
static void test_totals_equal_commit(void)
{
	golden_app ga;
	if (golden_app_open(&ga, &(app_config){.width = 100, .height = 30, .eval_tokens = 128, .commit = recording_commit,
						.commit_defaults = mrun_request_defaults()}) != 0) {
		CHECK(0, "golden case unavailable");
		golden_app_close(&ga);
		return;
	}
	app *a = &ga.a;
	CHECK(a->n_blocks == 3, "the cases below are written for three blocks");
	char dir[] = "/tmp/moescope-totals-XXXXXX", out[96];
	CHECK(mkdtemp(dir) != NULL);
	snprintf(out, sizeof out, "%s/out", dir);
	struct {
		const char *keys;  /* pressed before the commit, after the previous case's */
		int saves;         /* whether anything is saved (-1: either) */
	} cases[] = {
		{"--", 0},             /* block 0 at G 6, the others 8: split back up to 8 */
		{"Kj--j--", 1},        /* every block (three) at G 6 */
		{"L", 0},              /* aliased: every member stores its group's merge */
		{"Lr[[[F", -1},        /* compact, energy 0.7, factors: the measured ranks decide */
		{"L", 1},              /* aliased, factors: each member's copy in factors */
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		keys(a, cases[i].keys);
		app_wait_idle(a);
		const app_totals t = app_plan_totals(a);
		CHECK(t.sized == t.blocks && t.evaluated == t.merged, "case %zu: every block in (%d/%d sized)", i, t.sized,
		      t.blocks);
		const double header = t.size.bytes_before - t.size.bytes_after;
		const double commit = commit_saving(a, out);
		CHECK(header == commit, "case %zu: header %.0f bytes, commit %.0f", i, header, commit);
		CHECK(cases[i].saves < 0 || (header > 0) == cases[i].saves, "case %zu: %.0f bytes saved", i, header);
	}
	CHECK(a->format == MRUN_FORMAT_FACTORS && a->mo.layout == PIPE_LAYOUT_ALIASED);
	char cmd[160];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	CHECK(system(cmd) == 0);
	golden_app_close(&ga);
}

/* The same on the quantized samples: an FP8 expert is written with a weight_scale_inv per block and an MXFP4 one
 * with an E8M0 byte per 32 values, and the header counts them as the commit writes them (the factors format is
 * refused for quantized experts, so only the dense one is checked). */
static void test_totals_equal_commit_quantized(void)
{
	const char *samples = getenv("SAMPLES");
	if (!samples) {
		CHECK(0, "SAMPLES is not set (tests/run.sh sets it)");
		return;
	}
	static const char *const names[] = {"mixtral-fp8", "gptoss-mxfp4"};
	for (size_t n = 0; n < sizeof names / sizeof names[0]; n++) {
		char model[512], cal_path[600];
		snprintf(model, sizeof model, "%s/%s", samples, names[n]);
		snprintf(cal_path, sizeof cal_path, "%s/calib.safetensors", model);
		ms_error err = {0};
		golden_app ga;
		memset(&ga, 0, sizeof ga);
		const app_config cfg = {.width = 100, .height = 30, .eval_tokens = 128, .commit = recording_commit,
					.commit_defaults = mrun_request_defaults()};
		if (mdl_open(model, &ga.m, &err) != MS_OK || calib_open(cal_path, ga.m, &ga.cal, &err) != MS_OK ||
		    app_init(&ga.a, ga.m, ga.cal, &cfg, &err) != 0) {
			CHECK(0, "%s: %s", names[n], err.msg);
			golden_app_close(&ga);
			continue;
		}
		app *a = &ga.a;
		app_wait_idle(a);
		CHECK(a->m->quant.scheme != QT_NONE, "%s is quantized", names[n]);
		char dir[] = "/tmp/moescope-qtotals-XXXXXX", out[96];
		CHECK(mkdtemp(dir) != NULL);
		snprintf(out, sizeof out, "%s/out", dir);
		for (int c = 0; c < 3; c++) {
			if (c == 0) {
				keys(a, "--");  /* block 0 two groups fewer: compact splits it back up, nothing saved */
			} else if (c == 1) {
				for (int b = 1; b < a->n_blocks; b++)
					keys(a, "j--");  /* every block two groups fewer */
			} else {
				keys(a, "L");  /* aliased: every member stores its group's merge */
			}
			app_wait_idle(a);
			const app_totals t = app_plan_totals(a);
			CHECK(t.sized == t.blocks, "%s case %d: %d/%d sized", names[n], c, t.sized, t.blocks);
			const double header = t.size.bytes_before - t.size.bytes_after;
			const double commit = commit_saving(a, out);
			CHECK(header == commit, "%s case %d: header %.0f bytes, commit %.0f", names[n], c, header, commit);
			CHECK((header > 0) == (c == 1), "%s case %d: %.0f bytes saved", names[n], c, header);
		}
		char cmd[160];
		snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
		CHECK(system(cmd) == 0);
		golden_app_close(&ga);
	}
}

/* Keys that change something say so; the command line sets G in one step or says what it wants. */
static void test_feedback_and_command(void)
{
	golden_app ga;
	if (golden_app_open(&ga, &(app_config){.width = 100, .height = 30, .eval_tokens = 64}) != 0) {
		CHECK(0, "golden case unavailable");
		golden_app_close(&ga);
		return;
	}
	app *a = &ga.a;
	keys(a, "----");
	app_wait_idle(a);
	app_key(a, '4');
	int e = -1;
	for (int x = 0; x < a->E && e < 0; x++)
		if (a->cur.p.group[x] >= 0 && !a->cur.p.dominant[x])
			e = x;
	a->expert = e;
	app_key(a, 'd');
	char want[64];
	snprintf(want, sizeof want, "e%d is now the dominant of group %d", e, a->cur.p.group[e]);
	CHECK(strstr(a->message, want) && a->cur.p.dominant[e], "'%s'", a->message);
	app_key(a, 'd');
	CHECK(strstr(a->message, "already the dominant"), "'%s'", a->message);
	app_key(a, 'u');
	CHECK(strstr(a->message, "undone") && !a->cur.p.dominant[e], "'%s'", a->message);
	app_key(a, 'U');
	CHECK(strstr(a->message, "redone") && a->cur.p.dominant[e], "'%s'", a->message);
	app_key(a, ':');
	keys(a, "3");
	app_key(a, KEYS_ENTER);
	app_wait_idle(a);
	CHECK(a->mode == APP_MODE_NORMAL && a->cur.groups[0] == 3 && plan_groups(&a->cur.p, 0) == 3, "G %d",
	      a->cur.groups[0]);
	app_key(a, ':');
	keys(a, "g 2");
	app_key(a, KEYS_ENTER);
	app_wait_idle(a);
	int sum = 0;
	for (int b = 0; b < a->n_blocks; b++)
		sum += a->cur.groups[b];
	CHECK(sum == 2 * a->n_blocks && strstr(a->message, "average G 2"), "sum %d: '%s'", sum, a->message);
	app_key(a, ':');
	keys(a, "b 2");
	app_key(a, KEYS_ENTER);
	CHECK(a->block == 1);
	app_key(a, ':');
	keys(a, "g 99");
	app_key(a, KEYS_ENTER);
	CHECK(a->message_error && strstr(a->message, "want N"), "'%s'", a->message);
	golden_app_close(&ga);
}

int main(void)
{
	setenv("OPENBLAS_NUM_THREADS", "1", 0);
	RUN(test_grid_text_and_clip);
	RUN(test_utf8);
	RUN(test_glyph_sets);
	RUN(test_heat_levels);
	RUN(test_schemes);
	RUN(test_key_names);
	RUN(test_help_lists_every_key);
	RUN(test_key_table);
	RUN(test_app_per_block_plan);
	RUN(test_app_global_plan);
	RUN(test_app_export_import);
	RUN(test_app_commit_and_quit);
	RUN(test_app_stale_evaluation);
	RUN(test_app_views_fit);
	RUN(test_app_mouse);
	RUN(test_totals_equal_commit);
	RUN(test_totals_equal_commit_quantized);
	RUN(test_feedback_and_command);
	return test_summary();
}
