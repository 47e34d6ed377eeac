#include "tui/grid.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

const char *const grid_element_names[GRID_ELEMENT_COUNT] = {
#define GRID_X_NAME(name, text) text,
	GRID_ELEMENT_TABLE(GRID_X_NAME)
#undef GRID_X_NAME
};

grid_element grid_group_element(int g)
{
	return g < 0 ? GRID_EL_DIM : (grid_element)(GRID_EL_GROUP0 + g % GRID_GROUP_COLOURS);
}

#define S(f, b, a) {(short)(f), (short)(b), (unsigned char)(a)}

/* Heat runs from dark blue through teal and yellow to red, readable on dark and light backgrounds; the group
 * colours are eight hues far apart so neighbouring groups never look alike. */
const grid_scheme grid_scheme_color256 = {"color256", {
	[GRID_EL_DEFAULT] = S(-1, -1, 0),       [GRID_EL_HEADER] = S(253, 24, 0),
	[GRID_EL_HEADER_VALUE] = S(229, 24, GRID_BOLD), [GRID_EL_TAB] = S(250, 236, 0),
	[GRID_EL_TAB_ACTIVE] = S(16, 214, GRID_BOLD),   [GRID_EL_TITLE] = S(117, -1, GRID_BOLD),
	[GRID_EL_LABEL] = S(250, -1, 0),        [GRID_EL_DIM] = S(243, -1, 0),
	[GRID_EL_SELECTED] = S(231, 238, GRID_BOLD),    [GRID_EL_CURSOR] = S(16, 220, GRID_BOLD),
	[GRID_EL_SPARK] = S(79, -1, 0),         [GRID_EL_FRAME] = S(240, -1, 0),
	[GRID_EL_STATUS] = S(252, 236, 0),      [GRID_EL_STATUS_KEY] = S(214, 236, GRID_BOLD),
	[GRID_EL_PROGRESS] = S(76, 236, 0),     [GRID_EL_MESSAGE] = S(117, 236, 0),
	[GRID_EL_ERROR] = S(231, 124, GRID_BOLD), [GRID_EL_GOOD] = S(76, -1, 0),
	[GRID_EL_WARN] = S(214, -1, 0),         [GRID_EL_DIALOG] = S(252, 237, 0),
	[GRID_EL_INPUT] = S(231, 18, GRID_UNDERLINE),
	[GRID_EL_HEAT0] = S(18, -1, 0),  [GRID_EL_HEAT1] = S(26, -1, 0),  [GRID_EL_HEAT2] = S(37, -1, 0),
	[GRID_EL_HEAT3] = S(184, -1, 0), [GRID_EL_HEAT4] = S(202, -1, 0),
	[GRID_EL_GROUP0] = S(39, -1, 0),  [GRID_EL_GROUP1] = S(208, -1, 0), [GRID_EL_GROUP2] = S(77, -1, 0),
	[GRID_EL_GROUP3] = S(170, -1, 0), [GRID_EL_GROUP4] = S(220, -1, 0), [GRID_EL_GROUP5] = S(44, -1, 0),
	[GRID_EL_GROUP6] = S(203, -1, 0), [GRID_EL_GROUP7] = S(141, -1, 0),
}};

/* The same roles with the eight ANSI colours (0 black, 1 red, 2 green, 3 yellow, 4 blue, 5 magenta, 6 cyan,
 * 7 white). */
const grid_scheme grid_scheme_color8 = {"color8", {
	[GRID_EL_DEFAULT] = S(-1, -1, 0),       [GRID_EL_HEADER] = S(7, 4, 0),
	[GRID_EL_HEADER_VALUE] = S(3, 4, GRID_BOLD),    [GRID_EL_TAB] = S(7, 0, 0),
	[GRID_EL_TAB_ACTIVE] = S(0, 3, GRID_BOLD),      [GRID_EL_TITLE] = S(6, -1, GRID_BOLD),
	[GRID_EL_LABEL] = S(-1, -1, 0),         [GRID_EL_DIM] = S(-1, -1, 0),
	[GRID_EL_SELECTED] = S(-1, -1, GRID_REVERSE),   [GRID_EL_CURSOR] = S(0, 3, GRID_BOLD),
	[GRID_EL_SPARK] = S(6, -1, 0),          [GRID_EL_FRAME] = S(-1, -1, 0),
	[GRID_EL_STATUS] = S(7, 4, 0),          [GRID_EL_STATUS_KEY] = S(3, 4, GRID_BOLD),
	[GRID_EL_PROGRESS] = S(2, 4, 0),        [GRID_EL_MESSAGE] = S(6, 4, 0),
	[GRID_EL_ERROR] = S(7, 1, GRID_BOLD),   [GRID_EL_GOOD] = S(2, -1, 0),
	[GRID_EL_WARN] = S(3, -1, 0),           [GRID_EL_DIALOG] = S(7, 0, 0),
	[GRID_EL_INPUT] = S(7, 4, GRID_UNDERLINE),
	[GRID_EL_HEAT0] = S(4, -1, 0), [GRID_EL_HEAT1] = S(6, -1, 0), [GRID_EL_HEAT2] = S(2, -1, 0),
	[GRID_EL_HEAT3] = S(3, -1, 0), [GRID_EL_HEAT4] = S(1, -1, GRID_BOLD),
	[GRID_EL_GROUP0] = S(4, -1, 0), [GRID_EL_GROUP1] = S(3, -1, 0), [GRID_EL_GROUP2] = S(2, -1, 0),
	[GRID_EL_GROUP3] = S(5, -1, 0), [GRID_EL_GROUP4] = S(6, -1, 0), [GRID_EL_GROUP5] = S(1, -1, 0),
	[GRID_EL_GROUP6] = S(4, -1, GRID_BOLD), [GRID_EL_GROUP7] = S(3, -1, GRID_BOLD),
}};

/* No colour at all: what colour said is carried by attributes, glyphs and the text itself. */
const grid_scheme grid_scheme_mono = {"mono", {
	[GRID_EL_HEADER] = S(-1, -1, GRID_REVERSE),     [GRID_EL_HEADER_VALUE] = S(-1, -1, GRID_REVERSE | GRID_BOLD),
	[GRID_EL_TAB] = S(-1, -1, 0),           [GRID_EL_TAB_ACTIVE] = S(-1, -1, GRID_REVERSE | GRID_BOLD),
	[GRID_EL_TITLE] = S(-1, -1, GRID_BOLD), [GRID_EL_SELECTED] = S(-1, -1, GRID_REVERSE),
	[GRID_EL_CURSOR] = S(-1, -1, GRID_REVERSE | GRID_BOLD), [GRID_EL_STATUS] = S(-1, -1, GRID_REVERSE),
	[GRID_EL_STATUS_KEY] = S(-1, -1, GRID_REVERSE | GRID_BOLD), [GRID_EL_PROGRESS] = S(-1, -1, GRID_REVERSE),
	[GRID_EL_MESSAGE] = S(-1, -1, GRID_REVERSE), [GRID_EL_ERROR] = S(-1, -1, GRID_BOLD | GRID_REVERSE),
	[GRID_EL_WARN] = S(-1, -1, GRID_BOLD),  [GRID_EL_INPUT] = S(-1, -1, GRID_UNDERLINE),
	[GRID_EL_HEAT4] = S(-1, -1, GRID_BOLD),
	[GRID_EL_DEFAULT] = S(-1, -1, 0), [GRID_EL_LABEL] = S(-1, -1, 0), [GRID_EL_DIM] = S(-1, -1, 0),
	[GRID_EL_SPARK] = S(-1, -1, 0), [GRID_EL_FRAME] = S(-1, -1, 0), [GRID_EL_GOOD] = S(-1, -1, 0),
	[GRID_EL_DIALOG] = S(-1, -1, 0), [GRID_EL_HEAT0] = S(-1, -1, 0), [GRID_EL_HEAT1] = S(-1, -1, 0),
	[GRID_EL_HEAT2] = S(-1, -1, 0), [GRID_EL_HEAT3] = S(-1, -1, 0),
	[GRID_EL_GROUP0] = S(-1, -1, 0), [GRID_EL_GROUP1] = S(-1, -1, 0), [GRID_EL_GROUP2] = S(-1, -1, 0),
	[GRID_EL_GROUP3] = S(-1, -1, 0), [GRID_EL_GROUP4] = S(-1, -1, 0), [GRID_EL_GROUP5] = S(-1, -1, 0),
	[GRID_EL_GROUP6] = S(-1, -1, 0), [GRID_EL_GROUP7] = S(-1, -1, 0),
}};

#undef S

const grid_glyphs grid_glyphs_utf8 = {
	"utf8",
	{0x2581, 0x2582, 0x2583, 0x2584, 0x2585, 0x2586, 0x2587, 0x2588},
	{0x00B7, 0x2591, 0x2592, 0x2593, 0x2588},
	{0x258F, 0x258E, 0x258D, 0x258C, 0x258B, 0x258A, 0x2589, 0x2588},
	0x2500, 0x2502, 0x250C, 0x2510, 0x2514, 0x2518,
	0x2605, 0x25B8, 0x2588, 0x2591, 0x2026,
	0x25B2, 0x25BC, 0x2572,
};

const grid_glyphs grid_glyphs_ascii = {
	"ascii",
	{'_', '.', ':', '-', '=', '+', '*', '#'},
	{'.', ':', '+', '#', '@'},
	{'-', '-', '-', '-', '=', '=', '#', '#'},
	'-', '|', '+', '+', '+', '+',
	'*', '>', '#', '.', '~',
	'^', 'v', '\\',
};

#define GRID_MAX_SIDE 4096

int grid_init(grid *g, int w, int h, const grid_glyphs *gl)
{
	memset(g, 0, sizeof *g);
	g->gl = gl ? gl : &grid_glyphs_ascii;
	return grid_resize(g, w, h);
}

int grid_resize(grid *g, int w, int h)
{
	if (w <= 0 || h <= 0 || w > GRID_MAX_SIDE || h > GRID_MAX_SIDE)
		return -1;
	grid_cell *c = malloc((size_t)w * (size_t)h * sizeof *c);
	if (!c)
		return -1;
	free(g->cells);
	g->cells = c;
	g->w = w;
	g->h = h;
	grid_clear(g);
	return 0;
}

void grid_free(grid *g)
{
	free(g->cells);
	g->cells = NULL;
	g->w = g->h = 0;
}

void grid_unclip(grid *g)
{
	g->clip = (grid_rect){0, 0, g->w, g->h};
}

void grid_clear(grid *g)
{
	grid_unclip(g);
	for (int i = 0; i < g->w * g->h; i++)
		g->cells[i] = (grid_cell){' ', GRID_EL_DEFAULT, 0};
}

void grid_clip(grid *g, grid_rect r)
{
	int x0 = r.x > 0 ? r.x : 0, y0 = r.y > 0 ? r.y : 0;
	int x1 = r.x + r.w < g->w ? r.x + r.w : g->w, y1 = r.y + r.h < g->h ? r.y + r.h : g->h;
	g->clip = (grid_rect){x0, y0, x1 > x0 ? x1 - x0 : 0, y1 > y0 ? y1 - y0 : 0};
}

static int inside(const grid *g, int x, int y)
{
	return x >= g->clip.x && y >= g->clip.y && x < g->clip.x + g->clip.w && y < g->clip.y + g->clip.h;
}

const grid_cell *grid_at(const grid *g, int x, int y)
{
	if (x < 0 || y < 0 || x >= g->w || y >= g->h)
		return NULL;
	return &g->cells[(size_t)y * g->w + x];
}

void grid_put(grid *g, int x, int y, uint32_t ch, grid_element el, unsigned attr)
{
	if (!inside(g, x, y))
		return;
	g->cells[(size_t)y * g->w + x] = (grid_cell){ch, (unsigned char)el, (unsigned char)attr};
}

void grid_fill(grid *g, grid_rect r, uint32_t ch, grid_element el, unsigned attr)
{
	for (int y = r.y; y < r.y + r.h; y++)
		for (int x = r.x; x < r.x + r.w; x++)
			grid_put(g, x, y, ch, el, attr);
}

void grid_paint(grid *g, grid_rect r, grid_element el, unsigned attr)
{
	for (int y = r.y; y < r.y + r.h; y++)
		for (int x = r.x; x < r.x + r.w; x++)
			if (inside(g, x, y)) {
				grid_cell *c = &g->cells[(size_t)y * g->w + x];
				c->el = (unsigned char)el;
				c->attr = (unsigned char)attr;
			}
}

uint32_t grid_utf8_decode(const char *s, int *len)
{
	const unsigned char *u = (const unsigned char *)s;
	int n = u[0] < 0x80 ? 1 : (u[0] & 0xE0) == 0xC0 ? 2 : (u[0] & 0xF0) == 0xE0 ? 3 : (u[0] & 0xF8) == 0xF0 ? 4 : 0;
	*len = 1;
	if (n == 0)
		return 0xFFFD;
	uint32_t cp = n == 1 ? u[0] : (uint32_t)(u[0] & (0x7F >> n));
	for (int i = 1; i < n; i++) {
		if ((u[i] & 0xC0) != 0x80)
			return 0xFFFD;  /* also stops at the terminating NUL */
		cp = (cp << 6) | (u[i] & 0x3F);
	}
	static const uint32_t min_for_len[5] = {0, 0, 0x80, 0x800, 0x10000};
	if (cp < min_for_len[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		return 0xFFFD;  /* overlong forms and surrogates are not text */
	*len = n;
	return cp;
}

int grid_utf8_encode(uint32_t cp, char *out)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xC0 | (cp >> 6));
		out[1] = (char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xE0 | (cp >> 12));
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		out[2] = (char)(0x80 | (cp & 0x3F));
		return 3;
	}
	out[0] = (char)(0xF0 | (cp >> 18));
	out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
	out[3] = (char)(0x80 | (cp & 0x3F));
	return 4;
}

/* What a decoded codepoint shows as: replacement for bad bytes, a dot for control characters, and an ASCII
 * stand-in for anything else when the glyph set is ASCII (the terminal could not show it). */
static uint32_t printable(const grid *g, uint32_t cp)
{
	if (cp == 0xFFFD)
		return '?';
	if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp < 0xA0))
		return '.';
	if (cp >= 0x80 && g->gl == &grid_glyphs_ascii)
		return '?';
	return cp;
}

int grid_text_width(const char *utf8)
{
	int n = 0, len;
	for (const char *s = utf8; *s; s += len) {
		grid_utf8_decode(s, &len);
		n++;
	}
	return n;
}

int grid_text(grid *g, int x, int y, int maxw, const char *utf8, grid_element el, unsigned attr)
{
	if (maxw < 0)
		maxw = g->w - x;
	if (maxw <= 0 || !utf8)
		return 0;
	const int total = grid_text_width(utf8);
	int col = 0, len;
	for (const char *s = utf8; *s && col < maxw; s += len, col++) {
		uint32_t cp = grid_utf8_decode(s, &len);
		if (total > maxw && col == maxw - 1)
			cp = g->gl->ellipsis;
		grid_put(g, x + col, y, printable(g, cp), el, attr);
	}
	return col;
}

int grid_printf(grid *g, int x, int y, int maxw, grid_element el, unsigned attr, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	return grid_text(g, x, y, maxw, buf, el, attr);
}

void grid_box(grid *g, grid_rect r, grid_element el)
{
	if (r.w < 2 || r.h < 2)
		return;
	const grid_glyphs *gl = g->gl;
	grid_fill(g, (grid_rect){r.x + 1, r.y, r.w - 2, 1}, gl->hline, el, 0);
	grid_fill(g, (grid_rect){r.x + 1, r.y + r.h - 1, r.w - 2, 1}, gl->hline, el, 0);
	grid_fill(g, (grid_rect){r.x, r.y + 1, 1, r.h - 2}, gl->vline, el, 0);
	grid_fill(g, (grid_rect){r.x + r.w - 1, r.y + 1, 1, r.h - 2}, gl->vline, el, 0);
	grid_put(g, r.x, r.y, gl->tl, el, 0);
	grid_put(g, r.x + r.w - 1, r.y, gl->tr, el, 0);
	grid_put(g, r.x, r.y + r.h - 1, gl->bl, el, 0);
	grid_put(g, r.x + r.w - 1, r.y + r.h - 1, gl->br, el, 0);
}

uint32_t grid_spark(const grid *g, double v)
{
	if (!(v > 0))
		return g->gl->spark[0];
	int i = (int)(v * 8.0);
	return g->gl->spark[i > 7 ? 7 : i];
}

int grid_heat_level(double v, double lo, double hi)
{
	if (!(hi > lo) || !isfinite(v))
		return v >= hi ? GRID_HEAT_LEVELS - 1 : 0;
	int i = (int)((v - lo) / (hi - lo) * GRID_HEAT_LEVELS);
	return i < 0 ? 0 : i >= GRID_HEAT_LEVELS ? GRID_HEAT_LEVELS - 1 : i;
}

int grid_hbar(grid *g, int x, int y, int w, double frac, grid_element el)
{
	if (w <= 0 || !(frac > 0))
		return 0;
	if (frac > 1)
		frac = 1;
	const long eighths = lround(frac * w * 8.0);
	const int full = (int)(eighths / 8), part = (int)(eighths % 8);
	for (int i = 0; i < full; i++)
		grid_put(g, x + i, y, g->gl->eighth[7], el, 0);
	if (part > 0)
		grid_put(g, x + full, y, g->gl->eighth[part - 1], el, 0);
	return full + (part > 0);
}

int grid_row_text(const grid *g, int y, char *buf, size_t len)
{
	if (y < 0 || y >= g->h || len == 0)
		return -1;
	size_t n = 0, keep = 0;
	for (int x = 0; x < g->w; x++) {
		char enc[4];
		int k = grid_utf8_encode(g->cells[(size_t)y * g->w + x].ch, enc);
		if (n + (size_t)k + 1 > len)
			return -1;
		memcpy(buf + n, enc, (size_t)k);
		n += (size_t)k;
		if (!(k == 1 && enc[0] == ' '))
			keep = n;
	}
	buf[keep] = '\0';
	return (int)keep;
}

int grid_write_text(const grid *g, FILE *f)
{
	char *buf = malloc((size_t)g->w * 4 + 1);
	if (!buf)
		return -1;
	int rc = 0;
	for (int y = 0; y < g->h && rc == 0; y++)
		if (grid_row_text(g, y, buf, (size_t)g->w * 4 + 1) < 0 || fprintf(f, "%s\n", buf) < 0)
			rc = -1;
	free(buf);
	return rc;
}
