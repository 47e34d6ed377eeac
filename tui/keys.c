#include "tui/keys.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tui/app.h"
#include "tui/grid.h"

#define HEATMAP KEYS_VIEW(APP_VIEW_HEATMAP)

/* The order here is the order of the help screen. */
const keys_binding keys_table[] = {
	{'j', "block-next", "next block in the layer list", app_act_block_next, 0},
	{KEYS_DOWN, "block-next", "next block in the layer list", app_act_block_next, 0},
	{'k', "block-prev", "previous block in the layer list", app_act_block_prev, 0},
	{KEYS_UP, "block-prev", "previous block in the layer list", app_act_block_prev, 0},
	{'K', "block-first", "first block", app_act_block_first, 0},
	{'J', "block-last", "last block", app_act_block_last, 0},
	{KEYS_TAB, "view-next", "next view", app_act_view_next, 0},
	{KEYS_BTAB, "view-prev", "previous view", app_act_view_prev, 0},
#define VIEW_KEY(id, title, draw, key, name, help) {key, name, help, app_act_##draw, 0},
	APP_VIEW_TABLE(VIEW_KEY)
#undef VIEW_KEY
	{'l', "expert-next", "next expert (heatmap: cursor right)", app_act_expert_next, 0},
	{KEYS_RIGHT, "expert-next", "next expert (heatmap: cursor right)", app_act_expert_next, 0},
	{'h', "expert-prev", "previous expert (heatmap: cursor left)", app_act_expert_prev, 0},
	{KEYS_LEFT, "expert-prev", "previous expert (heatmap: cursor left)", app_act_expert_prev, 0},
	{KEYS_DOWN, "heat-down", "heatmap cursor down", app_act_heat_down, HEATMAP},
	{KEYS_UP, "heat-up", "heatmap cursor up", app_act_heat_up, HEATMAP},
	{KEYS_PGDN, "page-down", "list cursor a page down (heatmap: row cursor)", app_act_page_down, 0},
	{KEYS_PGUP, "page-up", "list cursor a page up (heatmap: row cursor)", app_act_page_up, 0},
	{KEYS_HOME, "list-first", "list cursor to the first row (heatmap: row cursor)", app_act_list_first, 0},
	{KEYS_END, "list-last", "list cursor to the last row (heatmap: row cursor)", app_act_list_last, 0},
	{'o', "order", "order: usage bars by usage/index, heatmap by index/group", app_act_order, 0},
	{'+', "groups-up", "one group more in this block (G + 1)", app_act_groups_up, 0},
	{'=', "groups-up", "one group more in this block (G + 1)", app_act_groups_up, 0},
	{'-', "groups-down", "one group fewer in this block (G - 1)", app_act_groups_down, 0},
	{'G', "global-up", "average G + 1 over all blocks (MC-SMoE global allocation)", app_act_global_up, 0},
	{'g', "global-down", "average G - 1 over all blocks (MC-SMoE global allocation)", app_act_global_down, 0},
	{':', "command", "command line: N sets this block's G, g N the average G, b N selects block N", app_act_command,
	 0},
	{'L', "layout", "layout: compact (E' experts, router rewritten), aliased (size unchanged)", app_act_layout, 0},
	{'R', "router", "router rows: lse-fit, mean, dominant, auto", app_act_router, 0},
	{'m', "method", "grouping method: msmoe, hc, prune-frequency, prune-reap", app_act_method, 0},
	{'b', "base", "similarity base: router-logits, router-weight, weight, expert-output", app_act_base, 0},
	{'w', "weighting", "merge weighting: frequency, uniform, dominant", app_act_weighting, 0},
	{'a', "align", "alignment: dominant, first, none", app_act_align, 0},
	{'r', "rank-mode", "compression: none, energy, stable rank, fixed rank", app_act_rank_mode, 0},
	{']', "rank-up", "compression threshold up (keep more)", app_act_rank_up, 0},
	{'[', "rank-down", "compression threshold down (keep less)", app_act_rank_down, 0},
	{'F', "format", "compressed matrices stored dense (size unchanged) or as factors", app_act_format, 0},
	{'<', "move-prev", "move the expert under the cursor to the previous group", app_act_move_prev, 0},
	{'>', "move-next", "move the expert under the cursor to the next (or a new) group", app_act_move_next, 0},
	{'d', "dominant", "make the expert under the cursor its group's dominant", app_act_dominant, 0},
	{'S', "search", "search each block's G for least KL at this plan's size (needs --tokens)",
	 app_act_search, 0},
	{'p', "search-apply", "apply the search's suggested grouping to this block", app_act_search_apply, 0},
	{'P', "search-apply-all", "apply the search's suggested grouping to every block", app_act_search_apply_all, 0},
	{'x', "search-panel", "show or hide the search panel", app_act_search_panel, 0},
	{'v', "search-svg", "write the search's figure as SVG, as search --svg does (asks for a path)",
	 app_act_search_svg, 0},
	{'u', "undo", "undo the last change to the plan or a merge setting (L R F w a r [ ])", app_act_undo, 0},
	{'U', "redo", "redo", app_act_redo, 0},
	{KEYS_CTRL('r'), "redo", "redo", app_act_redo, 0},
	{'e', "export", "export the plan CSV (asks for a path)", app_act_export, 0},
	{'i', "import", "import a plan CSV (asks for a path)", app_act_import, 0},
	{'c', "commit", "commit: write the merged checkpoint (dialog)", app_act_commit, 0},
	{'?', "help", "this help", app_act_help, 0},
	{KEYS_F1, "help", "this help", app_act_help, 0},
	{'q', "quit", "quit (asks first when the plan is not saved)", app_act_quit, 0},
};
const int keys_count = (int)(sizeof keys_table / sizeof keys_table[0]);

/* Every number the screen shows, defined once: the help lists these under the keys. */
const keys_term keys_legend[] = {
	{"usage", "share of the routing slots an expert gets: its top-k selections / (tokens x k); 0..100%, sums to 100%"},
	{"usage/K", "layer list sparkline: K experts a cell (the most used of them), in the usage view's order; K is "
		    "1 when the terminal is wide enough for every expert"},
	{"entropy", "of the usage, -sum p log2 p in bits; 0 (one expert) .. log2 E (all used alike)"},
	{"cv", "coefficient of variation of the usage, std / mean; 0 (balanced) .. sqrt(E - 1)"},
	{"similarity", "cosine of two experts in the chosen base, mapped (1 + cos) / 2; 0..1, 0.5 = orthogonal"},
	{"scale", "heatmap shades split the off-diagonal min..max into 5 bands; the diagonal has its own glyph"},
	{"stable rnk", "stable rank |W|_F^2 / |W|_2^2 of a matrix; 1 .. min(rows, cols) (its ceiling is shown)"},
	{"G", "groups the block keeps (1..E); dim while the block's plan waits for its statistics"},
	{"out", "experts the commit writes per block: E' (compact: the largest G, smaller blocks' groups split up "
		"to it) or E (aliased); + when more than G"},
	{"error", "output error of the merged block on calibration tokens, |y - y'|_F / |y|_F; 0 = identical, 1 = "
		  "as far as a zero output"},
	{"mean err", "header: mean of the block errors over the evaluated merged blocks (unmerged blocks have 0); "
		     "partial until all are in"},
	{"saves", "parameters and bytes of the expert and router tensors the commit writes, before - after; "
		  "exact for the dense format"},
	{"agreement", "routing agreement: share of tokens whose set of selected groups is unchanged; 0..1"},
	{"weight", "merge weight of a member in its group's average (frequency, uniform or dominant); sums to 1"},
	{"energy", "share of a matrix's squared singular values the kept rank holds; 0..1"},
	{"FLOPs", "multiply-adds x 2 per token: router plus the k selected experts"},
	{"ppl, KL", "model line: perplexity exp(mean NLL); KL(original || merged) per token, mean and p99; top-1 "
		    "agreement of the next-token argmax"},
};
const int keys_legend_count = (int)(sizeof keys_legend / sizeof keys_legend[0]);

const keys_binding *keys_lookup(int key, int view)
{
	const unsigned bit = view >= 0 && view < 31 ? KEYS_VIEW(view) : 0;
	for (int i = 0; i < keys_count; i++)
		if (keys_table[i].key == key && (keys_table[i].flags & bit))
			return &keys_table[i];
	for (int i = 0; i < keys_count; i++)
		if (keys_table[i].key == key && keys_table[i].flags == 0)
			return &keys_table[i];
	return NULL;
}

static const struct {
	int key;
	const char *name;
} key_names[] = {
	{KEYS_UP, "Up"},       {KEYS_DOWN, "Down"},   {KEYS_LEFT, "Left"},     {KEYS_RIGHT, "Right"},
	{KEYS_HOME, "Home"},   {KEYS_END, "End"},     {KEYS_PGUP, "PgUp"},     {KEYS_PGDN, "PgDn"},
	{KEYS_TAB, "Tab"},     {KEYS_BTAB, "S-Tab"},  {KEYS_ENTER, "Enter"},   {KEYS_ESC, "Esc"},
	{KEYS_BACKSPACE, "BS"}, {KEYS_DELETE, "Del"}, {' ', "Space"},          {KEYS_RESIZE, "Resize"},
};
#define N_KEY_NAMES ((int)(sizeof key_names / sizeof key_names[0]))

/* A name between angle brackets: the table's, Fn, or C-x. */
static int parse_name(const char *name, size_t n)
{
	for (int i = 0; i < N_KEY_NAMES; i++)
		if (strlen(key_names[i].name) == n && strncmp(key_names[i].name, name, n) == 0)
			return key_names[i].key;
	if (n == 3 && name[0] == 'C' && name[1] == '-' && name[2] >= 'a' && name[2] <= 'z')
		return KEYS_CTRL(name[2]);
	if ((n == 2 || n == 3) && name[0] == 'F' && name[1] >= '1' && name[1] <= '9') {
		int f = name[1] - '0';
		if (n == 3) {
			if (name[2] < '0' || name[2] > '9')
				return -1;
			f = f * 10 + (name[2] - '0');
		}
		return f >= 1 && f <= 12 ? KEYS_F1 + f - 1 : -1;
	}
	return -1;
}

int keys_parse(const char *text)
{
	if (!text || !*text)
		return -1;
	size_t n = strlen(text);
	if (text[0] == '<' && n > 2 && text[n - 1] == '>')
		return parse_name(text + 1, n - 2);
	int len;
	uint32_t cp = grid_utf8_decode(text, &len);
	if (cp == 0xFFFD || (size_t)len != n || cp < 0x20 || cp == 0x7F)
		return -1;
	return (int)cp;
}

const char *keys_format(int key, char *buf, size_t len)
{
	for (int i = 0; i < N_KEY_NAMES; i++)
		if (key_names[i].key == key) {
			snprintf(buf, len, "<%s>", key_names[i].name);
			return buf;
		}
	if (key >= KEYS_F1 && key <= KEYS_F12)
		snprintf(buf, len, "<F%d>", key - KEYS_F1 + 1);
	else if (key >= 1 && key <= 26)
		snprintf(buf, len, "<C-%c>", 'a' + key - 1);
	else if (key > 0x20 && key < 0x110000 && key != 0x7F) {
		char enc[5] = {0};
		grid_utf8_encode((uint32_t)key, enc);
		snprintf(buf, len, "%s", enc);
	} else {
		snprintf(buf, len, "<0x%x>", (unsigned)key);
	}
	return buf;
}

/* Appends to a growing string; -1 when out of memory. */
static int append(char **s, size_t *n, size_t *cap, const char *text)
{
	size_t k = strlen(text);
	if (*n + k + 1 > *cap) {
		size_t c = (*cap ? *cap * 2 : 1024) + k;
		char *p = realloc(*s, c);
		if (!p)
			return -1;
		*s = p;
		*cap = c;
	}
	memcpy(*s + *n, text, k + 1);
	*n += k;
	return 0;
}

/* Whether an earlier row has the same action and place (its keys were listed with that row). */
static int listed_before(int i)
{
	for (int j = 0; j < i; j++)
		if (keys_table[j].action == keys_table[i].action && keys_table[j].flags == keys_table[i].flags)
			return 1;
	return 0;
}

/* "k, <Up>": every key of row i's action in that place. */
static void keys_of(int i, char *out, size_t len)
{
	out[0] = '\0';
	for (int j = i; j < keys_count; j++) {
		if (keys_table[j].action != keys_table[i].action || keys_table[j].flags != keys_table[i].flags)
			continue;
		char name[16];
		size_t used = strlen(out);
		snprintf(out + used, len - used, "%s%s", used ? ", " : "", keys_format(keys_table[j].key, name, sizeof name));
	}
}

const char *keys_where(unsigned flags, char *buf, size_t len)
{
	if (!flags) {
		snprintf(buf, len, "everywhere");
		return buf;
	}
	size_t n = 0;
	buf[0] = '\0';
	for (int v = 0; v < APP_VIEW_COUNT && n < len; v++)
		if (flags & KEYS_VIEW(v))
			n += (size_t)snprintf(buf + n, len - n, "%s%s", n ? ", " : "in the ", app_view_names[v]);
	if (n < len)
		snprintf(buf + n, len - n, " view");
	return buf;
}

/* The lines of the bindings that apply where `flags` says, under a heading. */
static int help_section(char **s, size_t *n, size_t *cap, unsigned flags)
{
	char title[128];
	keys_where(flags, title, sizeof title);
	title[0] = (char)(title[0] - 'a' + 'A');
	if (append(s, n, cap, title) || append(s, n, cap, "\n"))
		return -1;
	for (int i = 0; i < keys_count; i++) {
		if (keys_table[i].flags != flags || listed_before(i))
			continue;
		char keys[64], line[256];
		keys_of(i, keys, sizeof keys);
		snprintf(line, sizeof line, "  %-13s %s\n", keys, keys_table[i].description);
		if (append(s, n, cap, line))
			return -1;
	}
	return append(s, n, cap, "\n");
}

/* Whether an earlier row has the same place (its section is written already). */
static int place_seen(int i)
{
	for (int j = 0; j < i; j++)
		if (keys_table[j].flags == keys_table[i].flags)
			return 1;
	return 0;
}

char *keys_help_text(void)
{
	char *s = NULL;
	size_t n = 0, cap = 0;
	int rc = help_section(&s, &n, &cap, 0);
	for (int i = 0; rc == 0 && i < keys_count; i++)
		if (keys_table[i].flags && !place_seen(i))
			rc = help_section(&s, &n, &cap, keys_table[i].flags);
	if (rc == 0)
		rc = append(&s, &n, &cap, "In a dialog: type to edit, <C-u> clears the text, <Tab>/<Up>/<Down> move between "
					  "fields, <Left>/<Right>/<Space> change a choice, <Enter> confirms, <Esc> cancels.\n");
	for (int i = 0; rc == 0 && i < keys_legend_count; i++) {
		char line[512];
		if (i == 0)
			rc = append(&s, &n, &cap, "\nThe numbers on screen\n");
		snprintf(line, sizeof line, "  %-10s %s\n", keys_legend[i].name, keys_legend[i].meaning);
		if (rc == 0)
			rc = append(&s, &n, &cap, line);
	}
	if (rc != 0) {
		free(s);
		return NULL;
	}
	return s;
}
