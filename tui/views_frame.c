/* The frame around the views: header, tabs, layer list, status line, and the helpers the views share.
 * Arrays of E entries live on the stack: mdl_open caps E at 4096. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "tui/views.h"

void views_format_bytes(double bytes, char *buf, size_t len)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	int u = 0;
	double v = fabs(bytes);
	while (v >= 1024.0 && u < 4) {
		v /= 1024.0;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%s%.0f B", bytes < 0 ? "-" : "", v);
	else
		snprintf(buf, len, "%s%.2f %s", bytes < 0 ? "-" : "", v, units[u]);
}

void views_format_count(double n, char *buf, size_t len)
{
	static const char *const units[] = {"", "K", "M", "G", "T"};
	int u = 0;
	double v = fabs(n);
	while (v >= 1000.0 && u < 4) {
		v /= 1000.0;
		u++;
	}
	const char *sign = n < 0 ? "-" : "";
	if (u == 0)
		snprintf(buf, len, "%s%.0f", sign, v);
	else
		snprintf(buf, len, "%s%.*f%s", sign, v < 10 ? 2 : v < 100 ? 1 : 0, v, units[u]);
}

void views_format_number(double v, int decimals, char *buf, size_t len)
{
	if (isnan(v))
		snprintf(buf, len, "-");
	else
		snprintf(buf, len, "%.*f", decimals, v);
}

const char *views_waiting(const app *a, int b, unsigned need)
{
	if (a->stats_error[b][0])
		return a->stats_error[b];
	if (!a->cal && (need & APP_HAVE_ROUTING))
		return "usage unknown: no calibration set (moescope MODEL CALIB)";
	if (!a->cal && (need & ~a->have[b] & ~(unsigned)APP_HAVE_SRANK) != 0)
		return "this similarity base needs a calibration set (b: router-weight or weight)";
	if ((a->have[b] & need) != need)
		return "computing statistics...";
	return NULL;
}

grid_rect views_title(grid *g, grid_rect r, const char *text)
{
	grid_text(g, r.x, r.y, r.w, text, GRID_EL_TITLE, 0);
	return (grid_rect){r.x, r.y + 1, r.w, r.h - 1};
}

int views_scroll(int n, int rows, int cursor)
{
	if (rows <= 0 || n <= rows)
		return 0;
	int top = cursor - rows / 2;
	return top < 0 ? 0 : top > n - rows ? n - rows : top;
}

/* The last path component of a directory name, for the header. */
static const char *base_name(const char *dir, char *buf, size_t len)
{
	size_t n = strlen(dir);
	while (n > 1 && dir[n - 1] == '/')
		n--;
	size_t s = n;
	while (s > 0 && dir[s - 1] != '/')
		s--;
	snprintf(buf, len, "%.*s", (int)(n - s), dir + s);
	return buf;
}

static void header_model(const app *a, grid *g, grid_rect r)
{
	const mdl_model *m = a->m;
	char name[256], tokens[64] = "no calibration set";
	if (a->cal) {
		int64_t lo = calib_tokens(a->cal, 0), hi = lo;
		for (int b = 1; b < a->n_blocks; b++) {
			int64_t t = calib_tokens(a->cal, b);
			lo = t < lo ? t : lo;
			hi = t > hi ? t : hi;
		}
		if (lo == hi)
			snprintf(tokens, sizeof tokens, "calib %lld tok", (long long)lo);
		else
			snprintf(tokens, sizeof tokens, "calib %lld-%lld tok", (long long)lo, (long long)hi);
	}
	grid_printf(g, r.x, r.y, r.w, GRID_EL_HEADER, 0, " %s  %s  %d blocks  E %d top-%d  d %d f %d  %s",
		    base_name(m->dir, name, sizeof name), m->model_type, m->n_blocks, m->n_experts, m->top_k, m->hidden,
		    m->inter, tokens);
}

/* " plan  28/32 experts  saves 393K params (768 KiB)  error 0.0238 (mean of 1 merged)": the sizes as the commit
 * writes them, the error over the evaluated merged blocks; "partial" until every block is planned and evaluated. */
static void header_totals(const app *a, grid *g, grid_rect r)
{
	app_totals t = app_plan_totals(a);
	char text[320], params[32], bytes[32];
	int n = snprintf(text, sizeof text, " plan %d/%d experts", t.kept, t.experts);
	const double saved = t.size.params_before - t.size.params_after;
	views_format_count(fabs(saved), params, sizeof params);
	views_format_bytes(fabs(t.size.bytes_before - t.size.bytes_after), bytes, sizeof bytes);
	const int grows = saved < 0;
	if (t.sized < t.blocks)
		n += snprintf(text + n, sizeof text - (size_t)n, "  saves ? (factors: %d/%d measured)", t.sized, t.blocks);
	else
		n += snprintf(text + n, sizeof text - (size_t)n, "  %s %s params (%s)", grows ? "GROWS" : "saves", params,
			      bytes);
	if (t.planned < t.blocks)
		n += snprintf(text + n, sizeof text - (size_t)n, " partial: %d/%d planned", t.planned, t.blocks);
	if (t.merged == 0)
		snprintf(text + n, sizeof text - (size_t)n, "  error -");
	else if (t.evaluated == 0)
		snprintf(text + n, sizeof text - (size_t)n, "  error ... (0/%d merged)", t.merged);
	else if (t.evaluated < t.merged)
		snprintf(text + n, sizeof text - (size_t)n, "  error %.4f partial %d/%d", t.mean_error, t.evaluated,
			 t.merged);
	else
		snprintf(text + n, sizeof text - (size_t)n, "  error %.4f (%d merged)", t.mean_error, t.merged);
	grid_text(g, r.x, r.y, r.w, text, grows ? GRID_EL_WARN : GRID_EL_HEADER, 0);
}

/* The settings line's items: the key that changes each, then its value, the layout and router first (they weigh
 * most on the error). Returns the count; each item is "K value". */
static int settings_items(const app *a, char items[][48])
{
	const cmp_options *c = &a->mo.compress;
	int n = 0;
	snprintf(items[n++], 48, "L %s", pipe_layout_name(a->mo.layout));
	snprintf(items[n++], 48, "R %s", rfit_method_name(a->mo.router));
	snprintf(items[n++], 48, "m %s", grp_method_name(a->cur.method));
	snprintf(items[n++], 48, "b %s", sim_base_name(a->cur.base));
	snprintf(items[n++], 48, "w %s", merge_weighting_name(a->mo.weighting));
	snprintf(items[n++], 48, "a %s", align_ref_name(a->mo.align));
	switch (c->mode) {
	case CMP_RANK_ENERGY: snprintf(items[n++], 48, "r energy %.3g", c->energy); break;
	case CMP_RANK_STABLE: snprintf(items[n++], 48, "r stable x%.3g", c->stable_k); break;
	case CMP_RANK_FIXED: snprintf(items[n++], 48, "r rank %d", c->rank); break;
	default: snprintf(items[n++], 48, "r none"); break;
	}
	if (c->mode != CMP_RANK_NONE)
		snprintf(items[n++], 48, "F %s", mrun_format_names[a->format]);
	return n;
}

/* The items that fit on the first settings line of width w (the rest go on a second). */
static int settings_split(const app *a, int w, char items[][48], int *n)
{
	*n = settings_items(a, items);
	int x = 1, k = 0;
	while (k < *n && x + grid_text_width(items[k]) <= w) {
		x += grid_text_width(items[k]) + 2;
		k++;
	}
	return k;
}

static int settings_rows(const app *a, int w)
{
	char items[10][48];
	int n;
	return settings_split(a, w, items, &n) < n ? 2 : 1;
}

/* One item: its key letter bold, its value plain. */
static int settings_item(grid *g, int x, int y, int w, const char *item)
{
	grid_text(g, x, y, w, (char[2]){item[0], 0}, GRID_EL_HEADER, GRID_BOLD);
	return grid_text(g, x + 1, y, w - 1, item + 1, GRID_EL_HEADER, 0) + 1;
}

static void header_settings(const app *a, grid *g, grid_rect r)
{
	char items[10][48];
	int n;
	const int first = settings_split(a, r.w, items, &n);
	int x = r.x + 1, y = r.y;
	for (int k = 0; k < n; k++) {
		if (k == first && k > 0) {
			x = r.x + 1;
			y++;
		}
		x += settings_item(g, x, y, r.x + r.w - x, items[k]) + 2;
	}
}

/* The model-level verdict, under the plan's totals: the original's perplexity, the merged model's, KL(original ||
 * merged) and the top-1 agreement; "~" and dim while the plan has changed since they were computed. */
static void header_verdict(const app *a, grid *g, grid_rect r)
{
	const app_model *md = &a->model;
	const char mark = md->stale ? '~' : ' ';
	const grid_element el = md->failed ? GRID_EL_ERROR : md->stale ? GRID_EL_DIM : GRID_EL_HEADER;
	char text[256];
	views_format_verdict(a, text, sizeof text);
	grid_printf(g, r.x, r.y, r.w, el, 0, " model %c%s%s", mark, text, md->stale ? "  stale" : "");
}

void views_format_verdict(const app *a, char *buf, size_t len)
{
	const app_model *md = &a->model;
	const fwd_result *f = &md->fig;
	if (md->failed)
		snprintf(buf, len, "ppl failed: %s", md->error);
	else if (md->shown == APP_MODEL_ORIGINAL)
		snprintf(buf, len, "ppl %.2f  (nothing merged)", md->ppl);
	else if (md->shown == APP_MODEL_MERGED)
		snprintf(buf, len, "ppl %.2f -> %.2f  KL %.3g (p99 %.3g)  top-1 %.1f%%", md->ppl, f->ppl_merged,
			 f->kl_mean, f->kl_p99, 100.0 * f->top1_agreement);
	else
		snprintf(buf, len, "ppl -");
}

int views_header_rows(const app *a, int w)
{
	return (a->model.enabled ? 3 : 2) + settings_rows(a, w);
}

void views_header(const app *a, grid *g, grid_rect r)
{
	grid_fill(g, r, ' ', GRID_EL_HEADER, 0);
	header_model(a, g, r);
	header_totals(a, g, (grid_rect){r.x, r.y + 1, r.w, 1});
	int y = r.y + 2;
	if (a->model.enabled)
		header_verdict(a, g, (grid_rect){r.x, y++, r.w, 1});
	header_settings(a, g, (grid_rect){r.x, y, r.w, r.y + r.h - y});
}

/* Where tab v starts on the tab row and how wide it is. */
static int tab_span(int v, int *width)
{
	int x = 1;
	for (int i = 0; i <= v; i++) {
		char text[48];
		*width = snprintf(text, sizeof text, " %d %s ", i + 1, app_view_names[i]);
		if (i < v)
			x += *width + 1;
	}
	return x;
}

void views_tabs(const app *a, grid *g, grid_rect r)
{
	grid_fill(g, r, ' ', GRID_EL_TAB, 0);
	int x = r.x + 1;
	for (int v = 0; v < APP_VIEW_COUNT; v++) {
		char text[48];
		int w;
		x = r.x + tab_span(v, &w);
		snprintf(text, sizeof text, " %d %s ", v + 1, app_view_names[v]);
		x += grid_text(g, x, r.y, r.x + r.w - x, text, v == (int)a->view ? GRID_EL_TAB_ACTIVE : GRID_EL_TAB, 0);
		x++;
	}
	/* like an editor's modified mark: the plan differs from the one last exported, imported or committed */
	if (app_dirty(a) && x + 9 <= r.x + r.w)
		grid_text(g, r.x + r.w - 9, r.y, 8, "modified", GRID_EL_TAB, GRID_BOLD);
}

static int label_width(const app *a)
{
	int w = 1;
	for (int b = 0; b < a->n_blocks; b++) {
		int n = (int)strlen(a->m->blocks[b].label);
		w = n > w ? n : w;
	}
	return w > 12 ? 12 : w;
}

/* Experts per sparkline cell at screen width w: the sparkline gets 8 cells below 100 columns, 16 at 100 and a
 * cell more for every 4 columns beyond, and the experts are split into as few equal buckets as fit (the last may
 * hold fewer). */
static int spark_bucket(const app *a, int w)
{
	const int cells = w < 100 ? 8 : 16 + (w - 100) / 4;
	return (a->E + cells - 1) / cells;
}

static int spark_width(const app *a, int w)
{
	const int k = spark_bucket(a, w);
	const int n = (a->E + k - 1) / k;
	return k > 1 && n < 8 ? 8 : n;  /* room for the column's title, "usage/k" */
}

int views_layers_width(const app *a, int w)
{
	/* pointer, label, spark, G (3), written (4), error (7), with a space between each */
	return 1 + label_width(a) + 1 + spark_width(a, w) + 1 + 3 + 1 + 4 + 1 + 7;
}

/* The block's usage as a sparkline: experts in the usage view's order, k to a cell (the highest of them shown),
 * heights relative to the most used expert. */
static void sparkline(const app *a, grid *g, int b, int x, int y, int k)
{
	const double *f = a->stats[b].frequency;
	const int n = (a->E + k - 1) / k;
	if (!f) {
		for (int i = 0; i < n; i++)
			grid_put(g, x + i, y, '.', GRID_EL_DIM, 0);
		return;
	}
	int order[a->E];
	app_expert_order(a, b, a->usage_by_index ? APP_ORDER_INDEX : APP_ORDER_USAGE, order);
	double top = 0;
	for (int e = 0; e < a->E; e++)
		top = f[e] > top ? f[e] : top;
	for (int i = 0; i < n; i++) {
		double v = 0;
		for (int j = i * k; j < (i + 1) * k && j < a->E; j++)
			v = f[order[j]] > v ? f[order[j]] : v;
		grid_put(g, x + i, y, grid_spark(g, top > 0 ? v / top : 0), GRID_EL_SPARK, 0);
	}
}

static void eval_cell(const app *a, int b, char *buf, size_t len)
{
	const app_eval *ev = &a->eval[b];
	switch (ev->state) {
	case APP_EVAL_PENDING: snprintf(buf, len, "..."); break;
	case APP_EVAL_DONE: snprintf(buf, len, "%.4f", ev->r.rel_error); break;
	case APP_EVAL_FAILED: snprintf(buf, len, "failed"); break;
	default: snprintf(buf, len, "-"); break;
	}
}

static void layer_row(const app *a, grid *g, grid_rect r, int b, int y)
{
	const int lw = label_width(a), sw = spark_width(a, g->w);
	const int sel = b == a->block;
	int x = r.x;
	grid_put(g, x, y, sel ? g->gl->pointer : ' ', GRID_EL_DEFAULT, 0);
	grid_text(g, x + 1, y, lw, a->m->blocks[b].label, GRID_EL_LABEL, 0);
	x += 2 + lw;
	sparkline(a, g, b, x, y, spark_bucket(a, g->w));
	x += sw + 1;
	char err[16];
	eval_cell(a, b, err, sizeof err);
	const int pending = !a->cur.edited[b] && plan_groups(&a->cur.p, b) != a->cur.groups[b];
	grid_printf(g, x, y, 3, pending ? GRID_EL_DIM : GRID_EL_DEFAULT, 0, "%3d", a->cur.groups[b]);
	/* what the commit writes; '+' when more than the block's G (split up to E', or aliased copies) */
	const int out = app_written_experts(a, b), G = plan_groups(&a->cur.p, b);
	grid_printf(g, x + 4, y, 4, out > G ? GRID_EL_WARN : GRID_EL_DIM, 0, "%3d%s", out, out > G ? "+" : " ");
	x += 5;
	grid_printf(g, x + 4, y, 7, a->eval[b].state == APP_EVAL_FAILED ? GRID_EL_ERROR : GRID_EL_DEFAULT, 0, "%7s",
		    err);
	if (sel)
		grid_paint(g, (grid_rect){r.x + 1, y, lw, 1}, GRID_EL_SELECTED, 0);
}

/* The layer list's marks: in the pointer column of its first and last rows when blocks are above or below. */
static void layer_marks(const app *a, grid *g, grid_rect r, int top, int rows)
{
	if (top > 0 && top != a->block)
		grid_put(g, r.x, r.y + 1, g->gl->more_up, GRID_EL_WARN, GRID_BOLD);
	if (top + rows < a->n_blocks && top + rows - 1 != a->block)
		grid_put(g, r.x, r.y + rows, g->gl->more_down, GRID_EL_WARN, GRID_BOLD);
}

void views_layers(const app *a, grid *g, grid_rect r)
{
	const int lw = label_width(a), sw = spark_width(a, g->w), k = spark_bucket(a, g->w);
	/* "usage/4": four experts to a sparkline cell */
	char usage[24] = "usage";
	if (k > 1)
		snprintf(usage, sizeof usage, "usage/%d", k);
	grid_printf(g, r.x + 1, r.y, r.w - 1, GRID_EL_TITLE, 0, "%-*s %-*s %3s %4s %7s", lw, "L", sw, usage, "G", "out",
		    "error");
	const int rows = r.h - 1;
	const int top = views_scroll(a->n_blocks, rows, a->block);
	for (int i = 0; i < rows && top + i < a->n_blocks; i++)
		layer_row(a, g, r, top + i, r.y + 1 + i);
	layer_marks(a, g, r, top, rows);
}

void views_scroll_marks(grid *g, grid_rect title, int first, int shown, int n)
{
	if (shown >= n || title.w <= 0)
		return;
	char text[64];
	const int last = first + shown < n ? first + shown : n;
	const int w = snprintf(text, sizeof text, " %d-%d of %d ", first + 1, last, n);
	const int x = title.x + title.w - w - 2;
	grid_text(g, x, title.y, w, text, GRID_EL_WARN, 0);
	grid_put(g, x + w, title.y, first > 0 ? g->gl->more_up : ' ', GRID_EL_WARN, GRID_BOLD);
	grid_put(g, x + w + 1, title.y, last < n ? g->gl->more_down : ' ', GRID_EL_WARN, GRID_BOLD);
}

/* The worker's progress bar at the right end of the status line; returns the column it starts at (r.x + r.w
 * when the worker is idle). */
static int status_progress(const app *a, grid *g, grid_rect r)
{
	worker_progress p;
	worker_get_progress(a->w, &p);
	if (!p.busy)
		return r.x + r.w;
	char text[160];
	const int bar = 10;
	snprintf(text, sizeof text, " %s %d/%d ", p.label[0] ? p.label : "waiting", p.done, p.total);
	int x = r.x + r.w - (grid_text_width(text) + bar + 2);
	if (x < r.x + r.w / 2)
		x = r.x + r.w / 2;
	/* a job that says how far it is (a forward, by layers) moves the bar within its share */
	const double part = p.steps > 0 ? (double)p.step / p.steps : 0;
	double frac = p.total > 0 ? (p.done + part) / p.total : 0;
	grid_put(g, x, r.y, '[', GRID_EL_STATUS, 0);
	grid_fill(g, (grid_rect){x + 1, r.y, bar, 1}, g->gl->empty, GRID_EL_PROGRESS, 0);
	grid_fill(g, (grid_rect){x + 1, r.y, (int)(frac * bar), 1}, g->gl->fill, GRID_EL_PROGRESS, 0);
	grid_put(g, x + 1 + bar, r.y, ']', GRID_EL_STATUS, 0);
	grid_text(g, x + 2 + bar, r.y, r.x + r.w - x - 2 - bar, text, GRID_EL_STATUS, 0);
	return x;
}

/* Key hints for the status line: the keys a newcomer needs first. */
static const char *const hints[][2] = {
	{"?", "help"}, {"+/-", "G"}, {":", "G="}, {"Tab", "view"}, {"L", "layout"}, {"R", "router"},
	{"e", "export"}, {"c", "commit"}, {"q", "quit"},
};

void views_status(const app *a, grid *g, grid_rect r)
{
	grid_fill(g, r, ' ', GRID_EL_STATUS, 0);
	const int end = status_progress(a, g, r) - 1;
	if (a->message[0]) {
		grid_text(g, r.x + 1, r.y, end - r.x - 1, a->message, a->message_error ? GRID_EL_ERROR : GRID_EL_MESSAGE, 0);
		return;
	}
	int x = r.x + 1;
	for (size_t i = 0; i < sizeof hints / sizeof hints[0]; i++) {
		const int w = grid_text_width(hints[i][0]) + 1 + grid_text_width(hints[i][1]);
		if (x + w > end)
			break;  /* whole hints only */
		x += grid_text(g, x, r.y, w, hints[i][0], GRID_EL_STATUS_KEY, 0);
		x += grid_text(g, x + 1, r.y, w, hints[i][1], GRID_EL_STATUS, 0) + 3;
	}
}

static void draw_view(const app *a, grid *g, grid_rect r)
{
	static void (*const draw[APP_VIEW_COUNT])(const app *, grid *, grid_rect) = {
#define VIEW_DRAW(id, title, draw, key, name, help) [id] = draw,
		APP_VIEW_TABLE(VIEW_DRAW)
#undef VIEW_DRAW
	};
	grid_clip(g, r);
	draw[a->view](a, g, r);
	grid_unclip(g);
}

/* The screen's parts: three header lines (four with the model line), the tabs, the body (the layer list, a rule, the view), the status
 * line. */
typedef struct {
	grid_rect body, layers, view;
} screen_layout;

static int layout(const app *a, int W, int H, screen_layout *l)
{
	if (W < 20 || H < 8)
		return -1;
	const int top = views_header_rows(a, W) + 1;
	l->body = (grid_rect){0, top, W, H - top - 1};
	int lw = views_layers_width(a, W);
	if (lw > W / 2)
		lw = W / 2;
	l->layers = (grid_rect){0, l->body.y, lw, l->body.h};
	l->view = (grid_rect){lw + 2, l->body.y, W - lw - 2, l->body.h};
	return 0;
}

views_hit views_hit_test(const app *a, int w, int h, int x, int y)
{
	views_hit hit = {VIEWS_HIT_NONE, -1, -1, -1};
	screen_layout l;
	if (layout(a, w, h, &l) != 0 || x < 0 || y < 0 || x >= w || y >= h)
		return hit;
	for (int v = 0; y == views_header_rows(a, w) && v < APP_VIEW_COUNT; v++) {
		int tw, tx = tab_span(v, &tw);
		if (x >= tx && x < tx + tw)
			return (views_hit){VIEWS_HIT_TAB, v, -1, -1};
	}
	const int rows = l.layers.h - 1;
	if (x < l.layers.w && y > l.layers.y && y < l.layers.y + l.layers.h) {
		int b = views_scroll(a->n_blocks, rows, a->block) + y - l.layers.y - 1;
		if (b < a->n_blocks)
			hit = (views_hit){VIEWS_HIT_BLOCK, b, -1, -1};
	} else if (a->view == APP_VIEW_HEATMAP && views_heatmap_hit(a, l.view, x, y, &hit.row, &hit.col)) {
		hit.kind = VIEWS_HIT_CELL;
	}
	return hit;
}

void views_draw(const app *a, grid *g)
{
	grid_clear(g);
	const int W = g->w, H = g->h;
	screen_layout l;
	if (layout(a, W, H, &l) != 0) {
		grid_text(g, 0, 0, W, "screen too small", GRID_EL_ERROR, 0);
		return;
	}
	const grid_rect body = l.body;
	const int rows = views_header_rows(a, W);
	views_header(a, g, (grid_rect){0, 0, W, rows});
	views_tabs(a, g, (grid_rect){0, rows, W, 1});
	grid_clip(g, l.layers);
	views_layers(a, g, l.layers);
	grid_unclip(g);
	grid_fill(g, (grid_rect){l.layers.w, body.y, 1, body.h}, g->gl->vline, GRID_EL_FRAME, 0);
	draw_view(a, g, l.view);
	if (a->search.shown && a->mode == APP_MODE_NORMAL)
		views_search(a, g, l.view);
	if (a->mode == APP_MODE_HELP)
		views_help(a, g, body);
	else if (a->mode != APP_MODE_NORMAL)
		views_dialog(a, g, body);
	views_status(a, g, (grid_rect){0, H - 1, W, 1});
}
