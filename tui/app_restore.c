/* The autosave in the application (tui/autosave.h is the file): written after every change of what the user
 * chose, removed at every clean point, offered back on opening.
 *
 * What the user chose is the settings, each block's G and whether its grouping was set by hand, and the
 * grouping of the blocks set by hand; the other blocks' groupings follow from those and the statistics. While
 * that differs from the last clean point (opening, export, commit) the file exists and holds the whole current
 * plan: it is rewritten when the plan changes, also when statistics landing remake a block the user gave a new
 * G before they were in. The cursor moving writes nothing, and a session in which nothing was changed, or
 * everything undone, leaves no file. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "tui/app.h"

autosave_settings app_settings(const app *a)
{
	autosave_settings s = {
		.method = a->cur.method, .base = a->cur.base, .weighting = a->mo.weighting, .align = a->mo.align,
		.rank_mode = a->mo.compress.mode, .rank_step = a->rank_step, .layout = a->mo.layout,
		.router = a->mo.router, .format = a->format,
	};
	return s;
}

void app_settings_apply(app *a, const autosave_settings *s)
{
	a->cur.method = s->method;
	a->cur.base = s->base;
	a->mo.weighting = s->weighting;
	a->mo.align = s->align;
	a->mo.compress = cmp_options_none();
	a->mo.compress.mode = s->rank_mode;
	a->rank_step = s->rank_step;
	app_apply_rank_step(a);
	a->mo.layout = s->layout;
	/* lse-fit fits on calibration tokens: without them the router falls back as on opening */
	a->mo.router = !a->cal && s->router == RFIT_LSE_FIT ? RFIT_MEAN : s->router;
	a->format = s->format;
}

/* A fingerprint of what the user chose. */
static uint64_t user_print(const app *a)
{
	const autosave_settings s = app_settings(a);
	const int fields[] = {(int)s.method, (int)s.base, (int)s.weighting, (int)s.align, (int)s.rank_mode,
			      s.rank_step, (int)s.layout, (int)s.router, (int)s.format};
	const int n = a->n_blocks, E = a->E;
	uint64_t h = autosave_fnv1a(AUTOSAVE_FNV_BASIS, fields, sizeof fields);
	h = autosave_fnv1a(h, a->cur.groups, (size_t)n * sizeof *a->cur.groups);
	h = autosave_fnv1a(h, a->cur.edited, (size_t)n);
	for (int b = 0; b < n; b++) {
		if (!a->cur.edited[b])
			continue;
		h = autosave_fnv1a(h, a->cur.p.group + (size_t)b * E, (size_t)E * sizeof *a->cur.p.group);
		h = autosave_fnv1a(h, a->cur.p.dominant + (size_t)b * E, (size_t)E);
	}
	return h;
}

/* A fingerprint of what the file holds: what the user chose and every block's grouping. Never 0, which stands
 * for "no file". */
static uint64_t file_print(const app *a, uint64_t user)
{
	const size_t n = (size_t)a->n_blocks * (size_t)a->E;
	uint64_t h = autosave_fnv1a(user, a->cur.p.group, n * sizeof *a->cur.p.group);
	h = autosave_fnv1a(h, a->cur.p.dominant, n);
	return h ? h : 1;
}

/* The calibration set's canonical path, "" without one. */
static void calib_real(const app *a, char *buf, size_t len)
{
	buf[0] = '\0';
	if (!a->cal)
		return;
	char *real = realpath(calib_path(a->cal), NULL);
	snprintf(buf, len, "%s", real ? real : calib_path(a->cal));
	free(real);
}

static void write_now(app *a)
{
	/* the record lends the application's arrays: never freed here */
	autosave_record r = {
		.id = a->autosave_id, .saved = (long long)time(NULL), .s = app_settings(a),
		.groups = a->cur.groups, .edited = a->cur.edited, .p = a->cur.p,
	};
	calib_real(a, r.calib, sizeof r.calib);
	ms_error err = {0};
	if (autosave_write(a->autosave_path, &r, &err) != MS_OK) {
		snprintf(a->message, sizeof a->message, "autosave failed: %s", err.msg);
		a->message_error = 1;
	}
}

void app_autosave_update(app *a)
{
	if (!a->autosave_path[0] || a->restore)
		return;  /* off, or the file is still the one the dialog offers */
	const uint64_t user = user_print(a);
	if (user == a->clean_print) {
		if (a->autosave_print)
			autosave_remove(a->autosave_path);  /* undone back to what was saved: nothing to keep */
		a->autosave_print = 0;
		return;
	}
	const uint64_t print = file_print(a, user);
	if (print == a->autosave_print)
		return;
	a->autosave_print = print;  /* also when writing fails: the next change tries again, not every poll */
	write_now(a);
}

void app_autosave_clean(app *a)
{
	if (!a->autosave_path[0] || a->restore)
		return;
	if (autosave_remove(a->autosave_path) != 0) {
		snprintf(a->message, sizeof a->message, "autosave %.1000s: cannot remove: %s", a->autosave_path,
			 strerror(errno));
		a->message_error = 1;
	}
	a->clean_print = user_print(a);
	a->autosave_print = 0;
}

/* ---- offering the autosave back ---- */

static autosave_record *read_autosave(const app *a, ms_error *err)
{
	const char **labels = mdl_block_labels(a->m);
	autosave_record *r = calloc(1, sizeof *r);
	ms_status st = labels && r ? autosave_read(a->autosave_path, &a->autosave_id, a->n_blocks, a->E, labels, r, err)
				   : ms_fail(err, MS_ERR_NOMEM, "out of memory reading the autosave");
	free(labels);
	if (st != MS_OK) {
		free(r);
		return NULL;
	}
	return r;
}

/* The question, and the calibration set the plan was made with when it is not the one open now. */
static void ask(app *a, const autosave_record *r)
{
	char when[64], cal[AUTOSAVE_PATH_MAX];
	autosave_format_time(r->saved, when, sizeof when);
	calib_real(a, cal, sizeof cal);
	int n = snprintf(a->dlg.text, sizeof a->dlg.text,
			 "An unsaved plan from %s was found for this model. Restore it? (y/n)", when);
	if (strcmp(cal, r->calib) != 0 && n > 0 && (size_t)n < sizeof a->dlg.text)
		snprintf(a->dlg.text + n, sizeof a->dlg.text - (size_t)n, "\nIt was made %s%.1000s.",
			 r->calib[0] ? "with the calibration set " : "without a calibration set", r->calib);
	snprintf(a->dlg.title, sizeof a->dlg.title, "Restore plan");
	a->dlg.is_error = 0;
	a->mode = APP_MODE_RESTORE;
}

static void offer(app *a)
{
	struct stat sb;
	if (stat(a->autosave_path, &sb) != 0 && errno == ENOENT)
		return;
	ms_error err = {0};
	autosave_record *r = read_autosave(a, &err);
	if (r) {
		a->restore = r;
		ask(a, r);
		return;
	}
	if (err.code == MS_ERR_NOMEM) {  /* the file may be fine: keep it for the next opening */
		app_show_message(a, "Autosave", 1, "%s", err.msg);
		return;
	}
	const int gone = autosave_remove(a->autosave_path) == 0;
	app_show_message(a, "Autosave discarded", 1, "An unsaved plan was found for this model but cannot be restored:\n%s\n%s",
			 err.msg, gone ? "It was discarded." : "It could not be removed either.");
}

void app_autosave_open(app *a)
{
	ms_error err = {0};
	if (autosave_locate(a->m->dir, &a->autosave_id, a->autosave_path, sizeof a->autosave_path, &err) != MS_OK) {
		a->autosave_path[0] = '\0';
		snprintf(a->message, sizeof a->message, "autosave off: %s", err.msg);
		a->message_error = 1;
		return;
	}
	long holder = 0;
	a->lock_fd = autosave_lock(a->autosave_path, &holder);
	if (a->lock_fd < 0) {
		if (a->lock_fd == -1 && holder > 0)
			snprintf(a->message, sizeof a->message,
				 "autosave off: another moescope (pid %ld) has this model open and keeps its own", holder);
		else if (a->lock_fd == -1)
			snprintf(a->message, sizeof a->message,
				 "autosave off: another moescope has this model open and keeps its own");
		else
			snprintf(a->message, sizeof a->message, "autosave off: %.200s.lock: %s", a->autosave_path, strerror(errno));
		a->message_error = 1;
		a->autosave_path[0] = '\0';
		a->lock_fd = -1;
		return;
	}
	a->clean_print = user_print(a);
	a->autosave_print = 0;
	offer(a);
}

/* ---- the answer ---- */

/* The autosave's plan and settings become the current ones, as an import does (one undo step back). */
static void restore(app *a, autosave_record *r)
{
	app_push_undo(a);
	plan before = a->cur.p;
	a->cur.p = r->p;
	memset(&r->p, 0, sizeof r->p);
	for (int b = 0; b < a->n_blocks; b++) {
		a->cur.edited[b] = r->edited[b];
		/* a grouping set by hand has the G it has; the others are remade with the G chosen */
		a->cur.groups[b] = r->edited[b] ? plan_groups(&a->cur.p, b) : r->groups[b];
	}
	app_settings_apply(a, &r->s);
	app_request_stats(a, -1);
	app_replan(a, -1);
	app_schedule_evals(a, &before, 1);
	plan_free(&before);
	a->autosave_print = file_print(a, user_print(a));  /* what the file holds, near enough: rewritten when not */
	char when[64];
	autosave_format_time(r->saved, when, sizeof when);
	snprintf(a->message, sizeof a->message, "plan restored from the autosave of %s (u undoes)", when);
	a->message_error = 0;
}

unsigned app_restore_key(app *a, int key)
{
	autosave_record *r = a->restore;
	if (!r) {
		a->mode = APP_MODE_NORMAL;
		return KEYS_REDRAW;
	}
	if (key == 'y' || key == 'Y') {
		a->mode = APP_MODE_NORMAL;
		restore(a, r);
	} else if (key == 'n' || key == 'N' || key == KEYS_ESC) {
		a->mode = APP_MODE_NORMAL;
		autosave_remove(a->autosave_path);
		snprintf(a->message, sizeof a->message, "the autosave was discarded");
	} else {
		return KEYS_REDRAW;
	}
	autosave_record_free(r);
	free(r);
	a->restore = NULL;
	return KEYS_REDRAW;
}
