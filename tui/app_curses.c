/* The terminal: the only file that calls curses. It copies the grid to the screen, reads keys (waiting at most
 * 100 ms, so the worker's results and progress show without a wake-up channel), translates them into tui/keys.h
 * codes, and handles a resize in one place. endwin runs on every way out. */
#include <curses.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <wchar.h>

#include "tui/app.h"

/* The signal that asks the application to quit. The handler may run on the worker thread (a process-directed
 * signal goes to any thread that does not block it) while this loop reads the flag, so it is a lock-free atomic
 * (pipeline/merge_run.h asserts atomic_int is), whose store is async-signal-safe. */
static atomic_int stop_signal;

static void on_signal(int sig)
{
	atomic_store(&stop_signal, sig);
}

static attr_t curses_attr(unsigned a)
{
	return (a & GRID_BOLD ? A_BOLD : 0) | (a & GRID_REVERSE ? A_REVERSE : 0) | (a & GRID_UNDERLINE ? A_UNDERLINE : 0);
}

/* Colour pair i + 1 draws element i. */
static void init_colours(const grid_scheme *s)
{
	if (s == &grid_scheme_mono)
		return;
	for (int i = 0; i < GRID_ELEMENT_COUNT; i++)
		init_pair((short)(i + 1), s->style[i].fg, s->style[i].bg);
}

static void copy_grid(const app *a)
{
	const grid *g = &a->g;
	const int colour = a->scheme != &grid_scheme_mono;
	for (int y = 0; y < g->h && y < LINES; y++)
		for (int x = 0; x < g->w && x < COLS; x++) {
			const grid_cell *c = grid_at(g, x, y);
			wchar_t wc[2] = {(wchar_t)c->ch, 0};
			cchar_t cc;
			attr_t attr = curses_attr(c->attr | a->scheme->style[c->el].attr);
			setcchar(&cc, wc, attr, colour ? (short)(c->el + 1) : 0, NULL);
			mvadd_wch(y, x, &cc);  /* the bottom-right cell reports ERR after drawing: nothing to do */
		}
	wnoutrefresh(stdscr);
	doupdate();
}

static int translate(int r, wint_t ch)
{
	if (r == OK)
		return ch == '\r' ? KEYS_ENTER : ch == 8 ? KEYS_BACKSPACE : (int)ch;
	static const struct { int curses, key; } map[] = {
		{KEY_UP, KEYS_UP},       {KEY_DOWN, KEYS_DOWN},   {KEY_LEFT, KEYS_LEFT},   {KEY_RIGHT, KEYS_RIGHT},
		{KEY_HOME, KEYS_HOME},   {KEY_END, KEYS_END},     {KEY_PPAGE, KEYS_PGUP},  {KEY_NPAGE, KEYS_PGDN},
		{KEY_BTAB, KEYS_BTAB},   {KEY_DC, KEYS_DELETE},   {KEY_BACKSPACE, KEYS_BACKSPACE},
		{KEY_ENTER, KEYS_ENTER}, {KEY_RESIZE, KEYS_RESIZE},
	};
	for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
		if (map[i].curses == (int)ch)
			return map[i].key;
	if ((int)ch >= KEY_F(1) && (int)ch <= KEY_F(12))
		return KEYS_F1 + (int)ch - KEY_F(1);
	return -1;
}

/* After an Esc: the bytes that arrived with it belong to an escape sequence curses did not know (keypad mode
 * turns the known ones into KEY_ codes). They are read up to the sequence's end (CSI and SS3: a final byte in
 * 0x40..0x7E) and dropped, so that "ESC [ 1 ; 5 P" does not act as the keys '[', '1', ';', '5', 'P'. Returns 1
 * when a sequence was dropped, 0 for a lone Esc. */
static int swallow_escape_sequence(void)
{
	wint_t c;
	timeout(0);
	int r = get_wch(&c);
	const int sequence = r != ERR;
	if (r == OK && (c == '[' || c == 'O'))
		for (int i = 0; i < 64 && (r = get_wch(&c)) != ERR; i++)
			if (r == OK && c >= 0x40 && c <= 0x7E)
				break;
	timeout(100);
	return sequence;
}

static int start_curses(app *a, int mono_flag, char *msg, size_t len)
{
	if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO)) {
		snprintf(msg, len, "not a terminal: the interactive application needs one (or --script FILE)");
		return -1;
	}
	if (!initscr()) {
		snprintf(msg, len, "cannot initialise the terminal (TERM=%s)", getenv("TERM") ? getenv("TERM") : "");
		return -1;
	}
	cbreak();
	noecho();
	keypad(stdscr, TRUE);
	set_escdelay(25);
	curs_set(0);
	timeout(100);
	int colours = 0;
	if (has_colors() && start_color() == OK) {
		use_default_colors();
		colours = COLORS;
	}
	a->scheme = app_choose_scheme(mono_flag, colours);
	init_colours(a->scheme);
	mousemask(BUTTON1_CLICKED | BUTTON1_PRESSED, NULL);  /* optional: keys do everything a click does */
	mouseinterval(0);
	return 0;
}

static int resize_to_terminal(app *a)
{
	int h, w;
	getmaxyx(stdscr, h, w);
	return app_resize(a, w > 0 ? w : 1, h > 0 ? h : 1);
}

int app_run_terminal(app *a, int mono_flag, FILE *dump, char *msg, size_t len)
{
	if (start_curses(a, mono_flag, msg, len) != 0)
		return 1;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	int rc = resize_to_terminal(a) == 0 ? 0 : 1, redraw = 1;
	while (rc == 0 && !a->quit && !atomic_load(&stop_signal)) {
		worker_progress p;
		worker_get_progress(a->w, &p);
		if (app_poll(a) || redraw || p.busy) {
			app_draw(a);
			copy_grid(a);
			redraw = 0;
		}
		wint_t ch;
		int r = get_wch(&ch);
		if (r == ERR)
			continue;
		MEVENT ev;
		if (r == KEY_CODE_YES && ch == KEY_MOUSE) {
			if (getmouse(&ev) == OK && (ev.bstate & (BUTTON1_CLICKED | BUTTON1_PRESSED)))
				redraw |= app_click(a, ev.x, ev.y) != 0;
			continue;
		}
		int key = translate(r, ch);
		if (key == KEYS_ESC && swallow_escape_sequence()) {
			snprintf(a->message, sizeof a->message, "unknown key sequence ignored");
			a->message_error = 0;
			redraw = 1;
			continue;
		}
		if (key == KEYS_RESIZE && resize_to_terminal(a) != 0)
			rc = 1;
		if (key >= 0) {
			app_key(a, key);
			redraw = 1;
		}
	}
	endwin();
	if (rc != 0)
		snprintf(msg, len, "out of memory resizing the screen");
	if (dump) {
		app_draw(a);
		grid_write_text(&a->g, dump);
	}
	return rc;
}
