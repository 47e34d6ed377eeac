/* Overlays: the help screen (generated from the key table) and the dialogs (path prompt, commit, progress,
 * messages, the quit question, the offer to restore an autosave), each a framed box over the body. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tui/views.h"

/* A framed, cleared box of w x h centred in r (shrunk to fit); returns its inside. */
static grid_rect box(grid *g, grid_rect r, int w, int h, const char *title, grid_element el)
{
	w = w > r.w ? r.w : w;
	h = h > r.h ? r.h : h;
	grid_rect b = {r.x + (r.w - w) / 2, r.y + (r.h - h) / 2, w, h};
	grid_fill(g, b, ' ', GRID_EL_DIALOG, 0);
	grid_box(g, b, el);
	char t[96];
	snprintf(t, sizeof t, " %s ", title);
	grid_text(g, b.x + 2, b.y, b.w - 4, t, el == GRID_EL_ERROR ? GRID_EL_ERROR : GRID_EL_TITLE, 0);
	return (grid_rect){b.x + 2, b.y + 1, b.w - 4, b.h - 2};
}

/* Bytes of the first `cols` characters of s (at most n bytes). */
static size_t prefix_bytes(const char *s, size_t n, int cols)
{
	size_t i = 0;
	for (int c = 0; i < n && c < cols; c++) {
		int len;
		grid_utf8_decode(s + i, &len);
		i += (size_t)len;
	}
	return i > n ? n : i;
}

/* Writes text split at '\n' and wrapped at spaces to r.w columns, from line y on, skipping the first `first`
 * lines; with g NULL only counts. Returns the lines the text takes. */
static int text_lines(grid *g, grid_rect r, int y, const char *text, int first, grid_element el)
{
	int line = 0;
	for (const char *s = text; *s;) {
		const char *nl = strchr(s, '\n');
		size_t n = nl ? (size_t)(nl - s) : strlen(s);
		size_t cut = prefix_bytes(s, n, r.w > 0 ? r.w : 1);
		if (cut < n) { /* wrap at the last space that fits, if any */
			size_t sp = cut;
			while (sp > 0 && s[sp] != ' ')
				sp--;
			cut = sp > 0 ? sp : cut;
			nl = NULL;
			n = cut;
		}
		if (g && line >= first && y + line - first < r.y + r.h) {
			char buf[512];
			snprintf(buf, sizeof buf, "%.*s", (int)(n < sizeof buf ? n : sizeof buf - 1), s);
			grid_text(g, r.x, y + line - first, r.w, buf, el, 0);
		}
		line++;
		s += n;
		if (nl || *s == ' ')
			s++;
	}
	return line;
}

void views_help(const app *a, grid *g, grid_rect r)
{
	char *help = keys_help_text();
	grid_rect in = box(g, r, r.w, r.h, "Help: keys  (j/k scroll, Esc closes)", GRID_EL_FRAME);
	if (!help) {
		grid_text(g, in.x, in.y, in.w, "out of memory", GRID_EL_ERROR, 0);
		return;
	}
	const int n = text_lines(NULL, in, in.y, help, 0, GRID_EL_DIALOG);
	int top = a->help_top > n - in.h ? n - in.h : a->help_top;
	text_lines(g, in, in.y, help, top < 0 ? 0 : top, GRID_EL_DIALOG);
	free(help);
}

/* A one-line text field: the end of the text stays visible, with a cursor block after it when focused. */
static void text_field(grid *g, int x, int y, int w, const char *text, int focused)
{
	grid_fill(g, (grid_rect){x, y, w, 1}, ' ', GRID_EL_INPUT, 0);
	const int n = grid_text_width(text);
	const char *s = text;
	for (int skip = n - (w - 1); skip > 0; skip--) {
		int len;
		grid_utf8_decode(s, &len);
		s += len;
	}
	int used = grid_text(g, x, y, w, s, GRID_EL_INPUT, 0);
	if (focused)
		grid_put(g, x + used, y, ' ', GRID_EL_CURSOR, 0);
}

static void prompt_dialog(const app *a, grid *g, grid_rect r)
{
	grid_rect in = box(g, r, 64, 6, a->dlg.title, GRID_EL_FRAME);
	const int command = a->dlg.prompt == APP_PROMPT_COMMAND;
	grid_text(g, in.x, in.y, in.w, command ? ":" : "Path:", GRID_EL_DIALOG, 0);
	const int x = command ? 2 : 6;
	text_field(g, in.x + x, in.y, in.w - x, a->dlg.input, 1);
	grid_text(g, in.x, in.y + 2, in.w,
		  command ? "N: this block's G   g N: average G   b N: block N" : "Enter confirms, Esc cancels", GRID_EL_DIM,
		  0);
}

static void choice_field(grid *g, grid_rect in, int y, const char *label, const char *value, int focused)
{
	grid_text(g, in.x, y, 18, label, GRID_EL_DIALOG, 0);
	grid_printf(g, in.x + 18, y, in.w - 18, focused ? GRID_EL_SELECTED : GRID_EL_DIALOG, 0, "< %s >", value);
}

static void commit_dialog(const app *a, grid *g, grid_rect r)
{
	const app_dialog *d = &a->dlg;
	grid_rect in = box(g, r, 70, 10, d->title, GRID_EL_FRAME);
	grid_text(g, in.x, in.y, 18, "Output directory", d->field == APP_COMMIT_DIR ? GRID_EL_SELECTED : GRID_EL_DIALOG, 0);
	text_field(g, in.x + 18, in.y, in.w - 18, d->input, d->field == APP_COMMIT_DIR);
	choice_field(g, in, in.y + 1, "Layout", pipe_layout_names[d->layout], d->field == APP_COMMIT_LAYOUT);
	choice_field(g, in, in.y + 2, "Router", rfit_method_name(d->router), d->field == APP_COMMIT_ROUTER);
	choice_field(g, in, in.y + 3, "Replace existing", d->force ? "yes" : "no", d->field == APP_COMMIT_FORCE);
	grid_printf(g, in.x, in.y + 5, in.w, GRID_EL_DIM, 0, "%d of %d experts kept; weighting %s, align %s",
		    app_plan_totals(a).kept, a->n_blocks * a->E, merge_weighting_name(a->mo.weighting),
		    align_ref_name(a->mo.align));
	const cmp_options *c = &a->mo.compress;
	if (c->mode == CMP_RANK_NONE)
		grid_text(g, in.x, in.y + 6, in.w, "no compression (r on the main screen)", GRID_EL_DIM, 0);
	else
		grid_printf(g, in.x, in.y + 6, in.w, GRID_EL_DIM, 0, "compression %s, stored %s (F on the main screen)",
			    cmp_rank_mode_name(c->mode), mrun_format_names[a->format]);
	grid_text(g, in.x, in.y + 7, in.w, "Enter commits, Tab next field, Left/Right change, Esc cancels", GRID_EL_DIM, 0);
}

static void progress_dialog(const app *a, grid *g, grid_rect r)
{
	grid_rect in = box(g, r, 64, 6, "Committing", GRID_EL_FRAME);
	worker_progress p;
	worker_get_progress(a->w, &p);
	grid_printf(g, in.x, in.y, in.w, GRID_EL_DIALOG, 0, "writing %s", a->dlg.input);
	grid_text(g, in.x, in.y + 1, in.w, p.label[0] ? p.label : "waiting for the worker", GRID_EL_DIALOG, 0);
	grid_text(g, in.x, in.y + 3, in.w, "Esc cancels (nothing is left behind)", GRID_EL_DIM, 0);
}

/* The dialog's text in a box as tall as it needs, with a hint on its last line. */
static void text_dialog(const app *a, grid *g, grid_rect r, const char *hint)
{
	const int w = r.w < 72 ? r.w : 72;
	const int h = text_lines(NULL, (grid_rect){0, 0, w - 4, 1}, 0, a->dlg.text, 0, GRID_EL_DIALOG) + 4;
	if (h > r.h)  /* a small screen: over the header too, rather than cut */
		r = (grid_rect){r.x, 0, r.w, r.y + r.h};
	grid_rect in = box(g, r, w, h, a->dlg.title, a->dlg.is_error ? GRID_EL_ERROR : GRID_EL_FRAME);
	/* the text above the hint's line: on a small screen it is cut there, never written over the hint or frame */
	grid_rect text = {in.x, in.y, in.w, in.h - 1 > 0 ? in.h - 1 : 1};
	text_lines(g, text, in.y, a->dlg.text, 0, GRID_EL_DIALOG);
	if (text_lines(NULL, text, in.y, a->dlg.text, 0, GRID_EL_DIALOG) > text.h && in.w > 0)
		grid_put(g, in.x + in.w - 1, text.y + text.h - 1, g->gl->ellipsis, GRID_EL_DIM, 0);
	grid_fill(g, (grid_rect){in.x, in.y + in.h - 1, in.w, 1}, ' ', GRID_EL_DIALOG, 0);
	grid_text(g, in.x, in.y + in.h - 1, in.w, hint, GRID_EL_DIM, 0);
}

void views_dialog(const app *a, grid *g, grid_rect r)
{
	switch (a->mode) {
	case APP_MODE_PROMPT: prompt_dialog(a, g, r); break;
	case APP_MODE_COMMIT: commit_dialog(a, g, r); break;
	case APP_MODE_PROGRESS: progress_dialog(a, g, r); break;
	case APP_MODE_MESSAGE: text_dialog(a, g, r, "press any key"); break;
	case APP_MODE_RESTORE: text_dialog(a, g, r, "y restores it, n discards it"); break;
	case APP_MODE_CONFIRM: {
		grid_rect in = box(g, r, 44, 3, "Quit", GRID_EL_FRAME);
		grid_text(g, in.x, in.y, in.w, "plan not saved: quit anyway? y/n", GRID_EL_DIALOG, GRID_BOLD);
		break;
	}
	default: break;
	}
}
