/* Keys and the one key table of the interactive application (htop's Action_setBindings, tig's request table):
 * every binding is a row {key, name, description, action, flags}; the help screen, `moescope tui --list-keys`
 * and the README are generated from it. No curses here: tui/app_curses.c translates curses key codes into the
 * codes below, and --script names them in text. */
#ifndef KEYS_KEYS_H
#define KEYS_KEYS_H

#include <stddef.h>

/* Key codes: a character is its Unicode codepoint (control keys their ASCII codes, as terminals send them:
 * Tab 9, Enter 10, Esc 27, Backspace 127, Ctrl-R 18); the keys that are no character get codes above Unicode. */
enum {
	KEYS_TAB = 9,
	KEYS_ENTER = 10,
	KEYS_ESC = 27,
	KEYS_BACKSPACE = 127,
	KEYS_UP = 0x110000,
	KEYS_DOWN,
	KEYS_LEFT,
	KEYS_RIGHT,
	KEYS_HOME,
	KEYS_END,
	KEYS_PGUP,
	KEYS_PGDN,
	KEYS_BTAB,      /* Shift-Tab */
	KEYS_DELETE,
	KEYS_RESIZE,    /* the terminal changed size */
	KEYS_F1,        /* KEYS_F1 + n - 1 is Fn, n = 1..12 */
	KEYS_F12 = KEYS_F1 + 11,
};
#define KEYS_CTRL(c) ((c) & 0x1f)

/* What an action changed, so that the loop does what follows from it once. */
enum {
	KEYS_REDRAW = 1,   /* the screen must be drawn again */
	KEYS_REPLAN = 2,   /* the plan's settings changed: remake the plan from the statistics */
	KEYS_REEVAL = 4,   /* the merge settings changed: evaluate every merged block again */
	KEYS_QUIT = 8,     /* leave the application */
};

/* Where a binding applies: bit v for view v (tui/app.h's app_view); 0 means everywhere. A view's own bindings
 * take precedence over the everywhere ones for the same key. */
#define KEYS_VIEW(v) (1u << (v))

struct app;
typedef unsigned (*keys_action)(struct app *a);

typedef struct {
	int key;
	const char *name;          /* the action's name, as --list-keys prints it */
	const char *description;   /* one line for the help screen */
	keys_action action;
	unsigned flags;            /* KEYS_VIEW bits */
} keys_binding;

extern const keys_binding keys_table[];
extern const int keys_count;

/* The legend: what each number on screen means, its formula and range (one line each in the help). */
typedef struct {
	const char *name;
	const char *meaning;
} keys_term;
extern const keys_term keys_legend[];
extern const int keys_legend_count;

/* The binding of key in view, or NULL. */
const keys_binding *keys_lookup(int key, int view);

/* The key a script or the help names: a single character ("q", "+", "<") or a name in angle brackets:
 * <Up> <Down> <Left> <Right> <Home> <End> <PgUp> <PgDn> <Tab> <S-Tab> <Enter> <Esc> <BS> <Del> <Space>
 * <F1>..<F12> <C-a>..<C-z>. Returns -1 for anything else. */
int keys_parse(const char *text);
/* The name keys_parse reads back: "q", "<Up>", "<C-r>". Returns buf. */
const char *keys_format(int key, char *buf, size_t len);

/* Where bindings with these flags apply, in words: "everywhere", "in the Similarity view". Returns buf. */
const char *keys_where(unsigned flags, char *buf, size_t len);

/* The help text: one line per action, its keys then its description, grouped by where they apply, lines
 * separated by '\n'. Allocated; the caller frees it. NULL when out of memory. */
char *keys_help_text(void);

#endif
