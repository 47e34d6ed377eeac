/* Scripted runs (tig's TIG_SCRIPT): keys from a file, the screen as text into a dump, no terminal. The state,
 * the worker and the drawing are the same as on a terminal; only the input and the output differ. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tui/app.h"

static int dump_screen(app *a, FILE *dump, int *screens)
{
	if (!dump)
		return 0;
	app_draw(a);
	if (fprintf(dump, "----- screen %d -----\n", ++*screens) < 0 || grid_write_text(&a->g, dump) != 0 ||
	    fflush(dump) != 0)
		return -1;
	return 0;
}

static void press(app *a, int key)
{
	app_key(a, key);
	app_poll(a);
}

/* "WxH" with both in 20..4096. */
static int parse_size(const char *s, int *w, int *h)
{
	char *end;
	long x = strtol(s, &end, 10);
	if (*end != 'x' || x < 20 || x > 4096)
		return -1;
	long y = strtol(end + 1, &end, 10);
	if (*end || y < 8 || y > 4096)
		return -1;
	*w = (int)x;
	*h = (int)y;
	return 0;
}

static void type_text(app *a, const char *text)
{
	for (const char *s = text; *s;) {
		int len;
		uint32_t cp = grid_utf8_decode(s, &len);
		press(a, (int)cp);
		s += len;
	}
}

/* One script line; 0, 1 to stop (the application quit), -1 for a line it does not know. */
static int run_line(app *a, const char *line, FILE *dump, int *screens)
{
	int w, h, key;
	if (strcmp(line, "wait") == 0) {
		app_wait_idle(a);
	} else if (strcmp(line, "dump") == 0) {
		app_poll(a);
		if (dump_screen(a, dump, screens) != 0)
			return -2;
	} else if (strncmp(line, "type:", 5) == 0) {
		type_text(a, line + 5);
	} else if (strncmp(line, "click:", 6) == 0) {
		if (sscanf(line + 6, "%d,%d", &w, &h) != 2)
			return -1;
		app_click(a, w, h);
		app_poll(a);
	} else if (strncmp(line, "resize:", 7) == 0) {
		if (parse_size(line + 7, &w, &h) != 0 || app_resize(a, w, h) != 0)
			return -1;
		press(a, KEYS_RESIZE);
	} else if ((key = keys_parse(line)) >= 0) {
		press(a, key);
	} else {
		return -1;
	}
	return a->quit ? 1 : 0;
}

int app_run_script(app *a, const char *script_path, FILE *dump, char *msg, size_t len)
{
	FILE *f = fopen(script_path, "r");
	if (!f) {
		snprintf(msg, len, "%s: %s", script_path, strerror(errno));
		return 2;
	}
	char line[2048];
	int lineno = 0, rc = 0, screens = 0;
	while (rc == 0 && fgets(line, sizeof line, f)) {
		lineno++;
		line[strcspn(line, "\r\n")] = '\0';
		if (!line[0] || strncmp(line, "# ", 2) == 0)
			continue;
		int r = run_line(a, line, dump, &screens);
		if (r == -1) {
			snprintf(msg, len, "%s: line %d: unknown key or command '%.64s'", script_path, lineno, line);
			rc = 2;
		} else if (r == -2) {
			snprintf(msg, len, "writing the dump failed: %s", strerror(errno));
			rc = 1;
		} else if (r == 1) {
			break;
		}
	}
	fclose(f);
	/* The script ran to its end (or to a quit): a clean exit, which leaves no autosave to restore. */
	app_autosave_clean(a);
	if (rc == 0) {
		app_poll(a);
		if (dump_screen(a, dump, &screens) != 0) {
			snprintf(msg, len, "writing the dump failed: %s", strerror(errno));
			rc = 1;
		}
	}
	return rc;
}
