/* The screen as data: an in-memory grid of cells (a codepoint, a named colour element, attributes) that the
 * views draw into and that one function in tui/app_curses.c copies to the terminal. Tests and --script runs draw
 * into the same grid without a terminal and compare its text. No curses here.
 *
 * Every cell holds one codepoint that occupies one column (the block, shade and box glyphs used here all do).
 * Drawing clips to the grid and to an optional clip rectangle, so a view cannot write outside its pane. */
#ifndef GRID_GRID_H
#define GRID_GRID_H

#include <stdint.h>
#include <stdio.h>

/* Colour elements: what a cell shows, named; a scheme says how each looks. */
#define GRID_ELEMENT_TABLE(X) \
	X(GRID_EL_DEFAULT,        "default") \
	X(GRID_EL_HEADER,         "header") \
	X(GRID_EL_HEADER_VALUE,   "header-value") \
	X(GRID_EL_TAB,            "tab") \
	X(GRID_EL_TAB_ACTIVE,     "tab-active") \
	X(GRID_EL_TITLE,          "title") \
	X(GRID_EL_LABEL,          "label") \
	X(GRID_EL_DIM,            "dim") \
	X(GRID_EL_SELECTED,       "selected") \
	X(GRID_EL_CURSOR,         "cursor") \
	X(GRID_EL_SPARK,          "spark") \
	X(GRID_EL_FRAME,          "frame") \
	X(GRID_EL_STATUS,         "status") \
	X(GRID_EL_STATUS_KEY,     "status-key") \
	X(GRID_EL_PROGRESS,       "progress") \
	X(GRID_EL_MESSAGE,        "message") \
	X(GRID_EL_ERROR,          "error") \
	X(GRID_EL_GOOD,           "good") \
	X(GRID_EL_WARN,           "warn") \
	X(GRID_EL_DIALOG,         "dialog") \
	X(GRID_EL_INPUT,          "input") \
	X(GRID_EL_HEAT0,          "heat0") \
	X(GRID_EL_HEAT1,          "heat1") \
	X(GRID_EL_HEAT2,          "heat2") \
	X(GRID_EL_HEAT3,          "heat3") \
	X(GRID_EL_HEAT4,          "heat4") \
	X(GRID_EL_GROUP0,         "group0") \
	X(GRID_EL_GROUP1,         "group1") \
	X(GRID_EL_GROUP2,         "group2") \
	X(GRID_EL_GROUP3,         "group3") \
	X(GRID_EL_GROUP4,         "group4") \
	X(GRID_EL_GROUP5,         "group5") \
	X(GRID_EL_GROUP6,         "group6") \
	X(GRID_EL_GROUP7,         "group7")

typedef enum {
#define GRID_X_ENUM(name, text) name,
	GRID_ELEMENT_TABLE(GRID_X_ENUM)
#undef GRID_X_ENUM
	GRID_ELEMENT_COUNT
} grid_element;

#define GRID_HEAT_LEVELS 5
#define GRID_GROUP_COLOURS 8

extern const char *const grid_element_names[GRID_ELEMENT_COUNT];

/* The colour element of group g (cycling through GRID_GROUP_COLOURS), GRID_EL_DIM for a dropped expert (g < 0). */
grid_element grid_group_element(int g);

/* Cell attributes. */
enum { GRID_BOLD = 1, GRID_REVERSE = 2, GRID_UNDERLINE = 4 };

/* How an element looks: 256-colour indices (-1 for the terminal's default) and attributes. */
typedef struct {
	short fg, bg;
	unsigned char attr;
} grid_style;

typedef struct {
	const char *name;
	grid_style style[GRID_ELEMENT_COUNT];
} grid_scheme;

/* "color256" (the default), "color8" (terminals with 8 colours), "mono" (NO_COLOR, --no-color). */
extern const grid_scheme grid_scheme_color256, grid_scheme_color8, grid_scheme_mono;

/* The glyphs drawing uses, in a UTF-8 set and an ASCII fallback. */
typedef struct {
	const char *name;
	uint32_t spark[8];              /* a sparkline's eight heights, lowest first */
	uint32_t shade[GRID_HEAT_LEVELS]; /* heatmap levels, lowest first */
	uint32_t eighth[8];             /* horizontal bar ends: 1/8 .. 8/8 of a cell */
	uint32_t hline, vline, tl, tr, bl, br;
	uint32_t dominant;              /* marks a group's dominant expert */
	uint32_t pointer;               /* marks the selected row */
	uint32_t fill, empty;           /* progress bar */
	uint32_t ellipsis;              /* text cut short */
	uint32_t more_up, more_down;    /* a list has rows above / below the ones shown */
	uint32_t diagonal;              /* a heatmap's diagonal (an expert with itself), apart from the data's shades */
} grid_glyphs;

extern const grid_glyphs grid_glyphs_utf8, grid_glyphs_ascii;

typedef struct {
	uint32_t ch;
	unsigned char el;    /* grid_element */
	unsigned char attr;
} grid_cell;

typedef struct {
	int x, y, w, h;
} grid_rect;

typedef struct {
	int w, h;
	grid_cell *cells;     /* [h, w] */
	const grid_glyphs *gl;
	grid_rect clip;       /* drawing outside it is dropped */
} grid;

/* 0, or -1 when out of memory or the size is not positive (at most 4096 x 4096). */
int grid_init(grid *g, int w, int h, const grid_glyphs *gl);
int grid_resize(grid *g, int w, int h);
void grid_free(grid *g);

void grid_clear(grid *g);
/* Limits drawing to r (intersected with the grid); grid_unclip restores the whole grid. */
void grid_clip(grid *g, grid_rect r);
void grid_unclip(grid *g);

const grid_cell *grid_at(const grid *g, int x, int y);   /* NULL outside */
void grid_put(grid *g, int x, int y, uint32_t ch, grid_element el, unsigned attr);
void grid_fill(grid *g, grid_rect r, uint32_t ch, grid_element el, unsigned attr);
/* Changes the element and attributes of the cells of r, keeping their characters (highlights a row). */
void grid_paint(grid *g, grid_rect r, grid_element el, unsigned attr);

/* Writes UTF-8 text from (x, y), at most maxw columns (the rest of the row when maxw < 0); text longer than
 * maxw ends in an ellipsis. Invalid UTF-8 bytes show as '?', control characters as '.'. Returns the columns
 * written. */
int grid_text(grid *g, int x, int y, int maxw, const char *utf8, grid_element el, unsigned attr);
int grid_printf(grid *g, int x, int y, int maxw, grid_element el, unsigned attr, const char *fmt, ...)
	__attribute__((format(printf, 7, 8)));
/* The number of columns text takes (codepoints). */
int grid_text_width(const char *utf8);
/* A frame of lines around r. */
void grid_box(grid *g, grid_rect r, grid_element el);

/* Glyph of a sparkline for v in [0, 1] (clamped; NaN gives the lowest). */
uint32_t grid_spark(const grid *g, double v);
/* Heat level 0..GRID_HEAT_LEVELS-1 of v in [lo, hi]. */
int grid_heat_level(double v, double lo, double hi);
/* A horizontal bar of frac * w columns (frac in [0, 1]) in eighths of a cell; returns the columns drawn. */
int grid_hbar(grid *g, int x, int y, int w, double frac, grid_element el);

/* Encodes cp as UTF-8 into out (at least 4 bytes); returns the bytes written. */
int grid_utf8_encode(uint32_t cp, char *out);
/* Decodes one codepoint from s (NUL-terminated); *len gets its bytes. Invalid input gives 0xFFFD and 1 byte. */
uint32_t grid_utf8_decode(const char *s, int *len);

/* Row y as UTF-8 text without trailing spaces into buf; returns the length, or -1 when buf is too small. */
int grid_row_text(const grid *g, int y, char *buf, size_t len);
/* Every row, one line each; returns 0 or -1 on a write error. */
int grid_write_text(const grid *g, FILE *f);

#endif
