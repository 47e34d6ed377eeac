/* Drawing: pure functions from the application's state to the grid (tui/grid.h). Nothing here changes the state
 * or calls curses, so a test can draw any state and read the text back.
 *
 * Layout (at least 80 x 24): three header lines (the model; the plan's totals; the settings), the view tabs, the
 * layer list on the left and the selected view on the right, the status line at the bottom; dialogs and help
 * are drawn over the body. */
#ifndef VIEWS_VIEWS_H
#define VIEWS_VIEWS_H

#include <stddef.h>

#include "tui/app.h"
#include "tui/grid.h"

/* The whole screen. */
void views_draw(const app *a, grid *g);

/* The parts, each inside its rectangle (tui/views_frame.c). */
void views_header(const app *a, grid *g, grid_rect r);
/* Lines the header takes on a screen w wide: the model, the totals, the model line of a token file, and the
 * settings on one line or, when they do not fit, two. */
int views_header_rows(const app *a, int w);
/* The model line's figures as text: "ppl 25.31 -> 26.02  KL 0.0123 (p99 0.21)  top-1 97.3%", "ppl -" before the
 * first result. */
void views_format_verdict(const app *a, char *buf, size_t len);
void views_tabs(const app *a, grid *g, grid_rect r);
void views_layers(const app *a, grid *g, grid_rect r);
void views_status(const app *a, grid *g, grid_rect r);
/* The width the layer list takes on a screen w columns wide. */
int views_layers_width(const app *a, int w);

/* The views, one file each (tui/app.h's APP_VIEW_TABLE). */
#define VIEWS_DECL(id, title, draw, key, name, help) void draw(const app *a, grid *g, grid_rect r);
APP_VIEW_TABLE(VIEWS_DECL)
#undef VIEWS_DECL

/* What a mouse click at (x, y) of a w x h screen points at, found by the same layout the drawing uses. */
typedef enum { VIEWS_HIT_NONE, VIEWS_HIT_TAB, VIEWS_HIT_BLOCK, VIEWS_HIT_CELL } views_hit_kind;
typedef struct {
	views_hit_kind kind;
	int index;        /* TAB: the view; BLOCK: the block */
	int row, col;     /* CELL: the heatmap's row and column experts */
} views_hit;
views_hit views_hit_test(const app *a, int w, int h, int x, int y);
/* The heatmap cell at (x, y) of the view's rectangle r: 1 with its experts, or 0. */
int views_heatmap_hit(const app *a, grid_rect r, int x, int y, int *row, int *col);

/* The budget search panel over the lower part of the view (tui/views_search.c). */
void views_search(const app *a, grid *g, grid_rect r);

/* Overlays (tui/views_dialog.c). */
void views_help(const app *a, grid *g, grid_rect r);
void views_dialog(const app *a, grid *g, grid_rect r);

/* Shared helpers (tui/views_frame.c). */
/* "1.50 MiB", "312 B" */
void views_format_bytes(double bytes, char *buf, size_t len);
/* "12.3K", "4.56M": a count in three significant digits */
void views_format_count(double n, char *buf, size_t len);
/* A number in w columns, or "-" when NaN. */
void views_format_number(double v, int decimals, char *buf, size_t len);
/* Why block b has nothing to show yet ("computing statistics", the error, "no calibration set"), or NULL when
 * the statistics in `need` (APP_HAVE bits) are there. */
const char *views_waiting(const app *a, int b, unsigned need);
/* A title line at the top of r; returns the rectangle below it. */
grid_rect views_title(grid *g, grid_rect r, const char *text);
/* The first row of a list of n rows shown in `rows` lines so that row `cursor` is visible. */
int views_scroll(int n, int rows, int cursor);
/* A list's scroll indicator at the right end of its title line, when it does not fit: " 19-36 of 64 ▲▼", ▲ when
 * rows are above, ▼ when rows are below. */
void views_scroll_marks(grid *g, grid_rect title, int first, int shown, int n);

#endif
