/* The modal parts of the application: help, the path prompt (export, import), the commit dialog and its
 * progress, messages and the quit question. Each mode takes the keys while it is open. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tui/app.h"
#include "tui/views.h"

void app_show_message(app *a, const char *title, int is_error, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(a->dlg.text, sizeof a->dlg.text, fmt, ap);
	va_end(ap);
	snprintf(a->dlg.title, sizeof a->dlg.title, "%s", title);
	a->dlg.is_error = is_error;
	a->dlg.back = APP_MODE_NORMAL;
	a->mode = APP_MODE_MESSAGE;
}

/* A failure in a dialog: the message, and closing it goes back to the dialog with what was typed. */
static void show_failure(app *a, const char *title, const char *text)
{
	const app_mode back = a->mode;
	app_show_message(a, title, 1, "%s", text);
	a->dlg.back = back;
}

void app_open_prompt(app *a, app_prompt which, const char *initial)
{
	a->dlg.prompt = which;
	snprintf(a->dlg.input, sizeof a->dlg.input, "%s", initial);
	static const char *const titles[] = {[APP_PROMPT_EXPORT] = "Export plan", [APP_PROMPT_IMPORT] = "Import plan",
					     [APP_PROMPT_COMMAND] = "Command", [APP_PROMPT_SEARCH_SVG] = "Search figure (SVG)"};
	snprintf(a->dlg.title, sizeof a->dlg.title, "%s", titles[which]);
	a->mode = APP_MODE_PROMPT;
}

void app_open_commit(app *a)
{
	/* beside the model: "DIR-merged", from the absolute path so that "." gives a sensible name */
	char *abs = realpath(a->m->dir, NULL);
	const char *dir = abs ? abs : a->m->dir;
	size_t n = strlen(dir);
	while (n > 1 && dir[n - 1] == '/')
		n--;
	snprintf(a->dlg.input, sizeof a->dlg.input, "%.*s-merged", (int)n, dir);
	free(abs);
	if (a->commit_dir[0])  /* what was typed last time, also after a failure */
		snprintf(a->dlg.input, sizeof a->dlg.input, "%s", a->commit_dir);
	snprintf(a->dlg.title, sizeof a->dlg.title, "Commit plan");
	a->dlg.field = APP_COMMIT_DIR;
	a->dlg.layout = a->mo.layout;
	a->dlg.router = a->mo.router;
	a->dlg.force = 0;
	a->mode = APP_MODE_COMMIT;
}

/* Typing into a text field: printable characters append, Backspace removes the last character, C-u clears. */
static int edit_text(char *buf, size_t len, int key)
{
	size_t n = strlen(buf);
	if (key == KEYS_BACKSPACE || key == 8) {
		while (n > 0 && ((unsigned char)buf[n - 1] & 0xC0) == 0x80)
			n--;  /* continuation bytes of the last character */
		if (n > 0)
			n--;
		buf[n] = '\0';
		return 1;
	}
	if (key == KEYS_CTRL('u')) {
		buf[0] = '\0';
		return 1;
	}
	if (key < 0x20 || key == 0x7F || key >= 0x110000)
		return 0;
	char enc[4];
	int k = grid_utf8_encode((uint32_t)key, enc);
	if (n + (size_t)k + 1 > len)
		return 1;
	memcpy(buf + n, enc, (size_t)k);
	buf[n + (size_t)k] = '\0';
	return 1;
}

static void remember_saved(app *a)
{
	plan copy;
	if (plan_copy(&copy, &a->cur.p) != 0)
		return;
	plan_free(&a->saved);
	a->saved = copy;
}

static void do_export(app *a, const char *path)
{
	ms_error err = {0};
	if (plan_write_csv(path, &a->cur.p, &err) != MS_OK) {
		show_failure(a, "Export failed", err.msg);
		return;
	}
	const autosave_settings set = app_settings(a);
	if (autosave_settings_write(path, &set, &err) != MS_OK) {
		show_failure(a, "Export failed", err.msg);
		return;
	}
	remember_saved(a);
	a->mode = APP_MODE_NORMAL;
	snprintf(a->message, sizeof a->message, "plan written to %s", path);
	app_autosave_clean(a);
}

static void do_import(app *a, const char *path)
{
	ms_error err = {0};
	plan p;
	const char **labels = mdl_block_labels(a->m);
	ms_status st = labels ? plan_read_csv(path, a->n_blocks, a->E, labels, &p, &err)
			      : ms_fail(&err, MS_ERR_NOMEM, "out of memory");
	free(labels);
	if (st != MS_OK) {
		show_failure(a, "Import failed", err.msg);
		return;
	}
	/* the settings sidecar, when the plan has one: read before anything changes, so a bad one changes nothing */
	autosave_settings set;
	int found = 0;
	if (autosave_settings_read(path, &set, &found, &err) != MS_OK) {
		plan_free(&p);
		show_failure(a, "Import failed", err.msg);
		return;
	}
	app_push_undo(a);
	if (found)
		app_settings_apply(a, &set);
	plan before = a->cur.p;
	a->cur.p = p;
	for (int b = 0; b < a->n_blocks; b++) {
		a->cur.edited[b] = 1;  /* the file's grouping stands until the user changes it */
		a->cur.groups[b] = plan_groups(&p, b);
	}
	remember_saved(a);
	app_schedule_evals(a, &before, 0);
	plan_free(&before);
	a->mode = APP_MODE_NORMAL;
	snprintf(a->message, sizeof a->message, "plan imported from %s%s", path, found ? " with its settings" : "");
}

static void do_search_svg(app *a, const char *path)
{
	ms_error err = {0};
	if (app_search_write_svg(a, path, &err) != 0) {
		show_failure(a, "Export failed", err.msg);
		return;
	}
	a->mode = APP_MODE_NORMAL;
	snprintf(a->message, sizeof a->message, "search figure written to %s", path);
}

static unsigned prompt_key(app *a, int key)
{
	if (key == KEYS_ESC) {
		a->mode = APP_MODE_NORMAL;
	} else if (key == KEYS_ENTER || key == '\r') {
		char path[sizeof a->dlg.input];
		snprintf(path, sizeof path, "%s", a->dlg.input);
		if (a->dlg.prompt == APP_PROMPT_COMMAND) {
			a->mode = APP_MODE_NORMAL;
			return app_command(a, path);
		}
		if (!path[0])
			return KEYS_REDRAW;
		if (a->dlg.prompt == APP_PROMPT_SEARCH_SVG) {
			do_search_svg(a, path);
			return KEYS_REDRAW;
		}
		snprintf(a->export_path, sizeof a->export_path, "%s", path);
		if (a->dlg.prompt == APP_PROMPT_EXPORT)
			do_export(a, path);
		else
			do_import(a, path);
		return KEYS_REEVAL * (a->dlg.prompt == APP_PROMPT_IMPORT && a->mode == APP_MODE_NORMAL) | KEYS_REDRAW;
	} else {
		edit_text(a->dlg.input, sizeof a->dlg.input, key);
	}
	return KEYS_REDRAW;
}

/* Posts the commit job; returns KEYS_REEVAL when the dialog changed the layout or router the evaluations use. */
static unsigned start_commit(app *a)
{
	if (!a->dlg.input[0])
		return KEYS_REDRAW;
	snprintf(a->commit_dir, sizeof a->commit_dir, "%s", a->dlg.input);
	if (a->dlg.router == RFIT_LSE_FIT && !a->cal) {
		show_failure(a, "Commit", "the lse-fit router needs a calibration set: choose mean or dominant");
		return KEYS_REDRAW;
	}
	unsigned flags = KEYS_REDRAW;
	if (a->mo.layout != a->dlg.layout || a->mo.router != a->dlg.router)
		flags |= KEYS_REEVAL;
	a->mo.layout = a->dlg.layout;
	a->mo.router = a->dlg.router;
	work_job j = {.kind = WORK_COMMIT, .block = -1, .gen = ++a->commit_gen};
	j.req = a->cfg.commit_defaults;
	j.req.opts = a->mo;
	j.req.force = a->dlg.force;
	j.req.format = a->format;
	j.req.eval_tokens = a->cfg.eval_tokens;
	snprintf(j.out_dir, sizeof j.out_dir, "%s", a->dlg.input);
	if (plan_copy(&j.p, &a->cur.p) != 0 || worker_post(a->w, &j) != 0) {
		work_job_free(&j);
		app_show_message(a, "Commit failed", 1, "out of memory");
		return flags;
	}
	app_model_yield(a);
	a->mode = APP_MODE_PROGRESS;
	return flags;
}

static void cycle_field(app *a, int delta)
{
	app_dialog *d = &a->dlg;
	switch (d->field) {
	case APP_COMMIT_LAYOUT: d->layout = (pipe_layout)((d->layout + PIPE_LAYOUT_COUNT + delta) % PIPE_LAYOUT_COUNT); break;
	case APP_COMMIT_ROUTER: d->router = (rfit_method)((d->router + RFIT_METHOD_COUNT + delta) % RFIT_METHOD_COUNT); break;
	case APP_COMMIT_FORCE: d->force = !d->force; break;
	default: break;
	}
}

static unsigned commit_key(app *a, int key)
{
	app_dialog *d = &a->dlg;
	if (key == KEYS_ESC) {
		a->mode = APP_MODE_NORMAL;
		return KEYS_REDRAW;
	}
	if (key == KEYS_ENTER || key == '\r')
		return start_commit(a);
	if (key == KEYS_TAB || key == KEYS_DOWN)
		d->field = (d->field + 1) % APP_COMMIT_FIELDS;
	else if (key == KEYS_BTAB || key == KEYS_UP)
		d->field = (d->field + APP_COMMIT_FIELDS - 1) % APP_COMMIT_FIELDS;
	else if (d->field == APP_COMMIT_DIR)
		edit_text(d->input, sizeof d->input, key);
	else if (key == KEYS_RIGHT || key == ' ')
		cycle_field(a, +1);
	else if (key == KEYS_LEFT)
		cycle_field(a, -1);
	return KEYS_REDRAW;
}

void app_commit_done(app *a, const work_result *r)
{
	if (r->status != MS_OK) {
		/* the command line's advice names its flag; here the dialog's field does the same */
		char text[sizeof r->err.msg + 64];
		snprintf(text, sizeof text, "%s", r->err.msg);
		char *flag = strstr(text, "use --force to replace it");
		if (flag)
			snprintf(flag, sizeof text - (size_t)(flag - text), "set Replace existing to yes to replace it)");
		a->mode = APP_MODE_COMMIT;
		show_failure(a, r->status == MS_ERR_INTERRUPTED ? "Commit cancelled" : "Commit failed", text);
		return;
	}
	remember_saved(a);
	app_autosave_clean(a);  /* the commit keeps the plan beside the weights */
	const mrun_summary *s = &r->summary;
	char before[32], after[32];
	views_format_bytes((double)s->bytes_before, before, sizeof before);
	views_format_bytes((double)s->bytes_after, after, sizeof after);
	char err[96] = "not measured (no calibration set)";
	if (a->cal)
		snprintf(err, sizeof err, "%.4f (over all %d blocks, unmerged ones 0)", s->mean_rel_error, s->blocks);
	app_show_message(a, "Commit done", 0, "wrote %s\n%d blocks, experts per block %d -> %d\ncheckpoint %s -> %s\n"
			 "mean output error %s",
			 a->dlg.input, s->blocks, s->experts_before, s->experts_after, before, after, err);
}

static unsigned help_key(app *a, int key)
{
	if (key == KEYS_ESC || key == 'q' || key == '?' || key == KEYS_F1 || key == KEYS_ENTER)
		a->mode = APP_MODE_NORMAL;
	else if (key == 'j' || key == KEYS_DOWN)
		a->help_top++;
	else if (key == 'k' || key == KEYS_UP)
		a->help_top--;
	else if (key == KEYS_PGDN || key == ' ')
		a->help_top += 10;
	else if (key == KEYS_PGUP)
		a->help_top -= 10;
	if (a->help_top < 0)
		a->help_top = 0;
	return KEYS_REDRAW;  /* the view clamps help_top to the text's length */
}

unsigned app_dialog_key(app *a, int key)
{
	switch (a->mode) {
	case APP_MODE_HELP: return help_key(a, key);
	case APP_MODE_PROMPT: return prompt_key(a, key);
	case APP_MODE_COMMIT: return commit_key(a, key);
	case APP_MODE_PROGRESS:
		if (key == KEYS_ESC)
			worker_cancel(a->w);
		return KEYS_REDRAW;
	case APP_MODE_MESSAGE:
		a->mode = a->dlg.back;  /* a failed dialog opens again with what was typed */
		a->dlg.back = APP_MODE_NORMAL;
		return KEYS_REDRAW;
	case APP_MODE_RESTORE: return app_restore_key(a, key);
	case APP_MODE_CONFIRM:
		if (key == 'y' || key == 'Y')
			return KEYS_QUIT;
		if (key == 'n' || key == 'N' || key == KEYS_ESC)
			a->mode = APP_MODE_NORMAL;
		return KEYS_REDRAW;
	default: return 0;
	}
}
