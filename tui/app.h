/* The interactive application's model (docs/design.md §6.1), apart from drawing: the model and calibration set, every
 * block's statistics as the worker delivers them, the current plan with the choices that made it, its undo and
 * redo stacks, the evaluation of each merged block, and where the user is (block, view, cursors, dialog).
 *
 * Keys go in through app_key (which looks them up in tui/keys.h's table), worker results through app_poll, and
 * app_draw renders the state into the grid (tui/views.h); tui/app_curses.c copies the grid to the terminal and
 * tui/app_script.c runs the same state from a script without one. */
#ifndef APP_APP_H
#define APP_APP_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include "pipeline/pipeline.h"
#include "io/calib.h"
#include "io/model.h"
#include "io/plan.h"
#include "tui/autosave.h"
#include "tui/grid.h"
#include "tui/keys.h"
#include "pipeline/merge_run.h"
#include "tui/worker.h"

/* The views, one row each: value, tab title, drawing function (tui/views_NAME.c, declared from this table in
 * tui/views.h), key, key name and help line. The enum, the tab titles, the drawing dispatch, the selecting actions
 * and their key bindings all come from these rows, so a new view is a row here and its drawing file. */
#define APP_VIEW_TABLE(X) \
	X(APP_VIEW_USAGE, "Usage", views_usage, '1', "view-usage", "view 1: usage bars") \
	X(APP_VIEW_HEATMAP, "Similarity", views_heatmap, '2', "view-similarity", "view 2: similarity heatmap") \
	X(APP_VIEW_RANKS, "Stable rank", views_ranks, '3', "view-ranks", \
	  "view 3: stable ranks before and after the merge") \
	X(APP_VIEW_GROUPS, "Groups", views_groups, '4', "view-groups", "view 4: groups, merge weights, moving experts") \
	X(APP_VIEW_COMPRESS, "Compression", views_compress, '5', "view-compression", \
	  "view 5: compression of the merged experts") \
	X(APP_VIEW_COMPARE, "Compare", views_compare, '6', "view-compare", \
	  "view 6: this block's error under each layout and router, and pruning, at its G")

typedef enum {
#define APP_VIEW_ENUM(id, title, draw, key, name, help) id,
	APP_VIEW_TABLE(APP_VIEW_ENUM)
#undef APP_VIEW_ENUM
	APP_VIEW_COUNT
} app_view;
/* Tab titles, indexed by app_view. */
extern const char *const app_view_names[APP_VIEW_COUNT];

typedef enum {
	APP_MODE_NORMAL,
	APP_MODE_HELP,      /* the key table, scrollable */
	APP_MODE_PROMPT,    /* one line of text: a path to export to or import from */
	APP_MODE_COMMIT,    /* the commit dialog: directory, layout, router */
	APP_MODE_PROGRESS,  /* a commit running; Esc cancels it */
	APP_MODE_MESSAGE,   /* a result or an error; any key closes it */
	APP_MODE_CONFIRM,   /* "plan not saved: quit anyway? y/n" */
	APP_MODE_RESTORE,   /* "an unsaved plan ... was found: restore it? (y/n)" (tui/app_restore.c) */
} app_mode;

/* APP_PROMPT_COMMAND is the `:` line (vim's, htop's numeric entry): `:16` sets this block's G, `:g 16` the
 * average G over all blocks, `:b 3` selects block 3. */
typedef enum { APP_PROMPT_EXPORT, APP_PROMPT_IMPORT, APP_PROMPT_COMMAND, APP_PROMPT_SEARCH_SVG } app_prompt;

/* Commit dialog fields, in focus order. */
enum { APP_COMMIT_DIR, APP_COMMIT_LAYOUT, APP_COMMIT_ROUTER, APP_COMMIT_FORCE, APP_COMMIT_FIELDS };

/* What the modal dialogs hold. */
typedef struct {
	app_prompt prompt;
	char input[1024];        /* the text being typed (UTF-8) */
	int field;               /* commit dialog: focused field */
	pipe_layout layout;
	rfit_method router;
	int force;
	int is_error;            /* message: an error (drawn as such) */
	char title[64];
	char text[1536];         /* message: lines separated by '\n' */
	app_mode back;           /* message: the dialog a failure returns to (APP_MODE_NORMAL: none), its text kept */
} app_dialog;

/* The plan and what produced it: an undo step restores all of it. */
typedef struct {
	plan p;
	int *groups;             /* [n_blocks]: G the user chose for each block */
	unsigned char *edited;   /* [n_blocks]: 1 when the grouping was set by hand or imported, so new
				  * statistics do not remake it */
	grp_method method;
	sim_base base;
	/* The main screen's merge and commit settings (keys L, R, F, w, a, r, [ and ]) when the step was taken.
	 * Meaningful in the undo and redo stacks only: the live values are app.mo's layout, router, weighting and
	 * align, app.mo.compress.mode with app.rank_step (which fix the rest of app.mo.compress), and app.format. */
	pipe_layout layout;
	rfit_method router;
	mrun_format format;
	merge_weighting weighting;
	align_ref align;
	cmp_rank_mode rank_mode;
	int rank_step;
} app_plan_state;

/* Statistics a block has (bits of app.have). */
enum { APP_HAVE_ROUTING = 1, APP_HAVE_SRANK = 2, APP_HAVE_REAP = 4 };
#define APP_HAVE_BASE(b) (8u << (b))

typedef enum { APP_EVAL_NONE, APP_EVAL_PENDING, APP_EVAL_DONE, APP_EVAL_FAILED } app_eval_state;

/* One block's merge under the current plan, as the worker evaluated it. */
typedef struct {
	app_eval_state state;    /* NONE: the block is not merged */
	unsigned gen;            /* the request it answers; later requests make earlier answers stale */
	blk_eval_result r;
	int groups;
	double *merged_srank;    /* [groups, MDL_NMAT]: stable rank of each group's merged expert (NAN: no gate) */
	cmp_result *compression; /* [groups, MDL_NMAT] when compressing, else NULL */
	char error[1024];
} app_eval;

/* The comparison view's variants (tui/app_compare.c): block b's current grouping merged under each layout and
 * router, and pruning by usage at the same G; X(value, label, layout, router (-1: the current one), prune). */
#define APP_CMP_TABLE(X) \
	X(APP_CMP_COMPACT_LSE, "compact, lse-fit", PIPE_LAYOUT_COMPACT, RFIT_LSE_FIT, 0) \
	X(APP_CMP_COMPACT_MEAN, "compact, mean", PIPE_LAYOUT_COMPACT, RFIT_MEAN, 0) \
	X(APP_CMP_COMPACT_DOM, "compact, dominant", PIPE_LAYOUT_COMPACT, RFIT_DOMINANT, 0) \
	X(APP_CMP_COMPACT_AUTO, "compact, auto", PIPE_LAYOUT_COMPACT, RFIT_AUTO, 0) \
	X(APP_CMP_ALIASED, "aliased (router kept)", PIPE_LAYOUT_ALIASED, -1, 0) \
	X(APP_CMP_PRUNE, "prune-frequency, same G", -1, -1, 1)

typedef enum {
#define APP_CMP_ENUM(id, label, layout, router, prune) id,
	APP_CMP_TABLE(APP_CMP_ENUM)
#undef APP_CMP_ENUM
	APP_CMP_COUNT
} app_cmp_variant;
extern const char *const app_cmp_labels[APP_CMP_COUNT];

typedef struct {
	app_eval_state state;
	unsigned gen;
	blk_eval_result r;
	char error[256];
} app_cmp_cell;

typedef struct {
	int block;               /* the block compared; -1 when nothing is (asked again when the view shows) */
	app_cmp_cell cell[APP_CMP_COUNT];
} app_compare;

/* What the model-level line of the header shows (tui/app_model.c). */
typedef enum {
	APP_MODEL_NOTHING,       /* no result yet: "-" */
	APP_MODEL_ORIGINAL,      /* the plan merges nothing: the original model's perplexity alone */
	APP_MODEL_MERGED,        /* the plan's merged model beside the original */
} app_model_shown;

/* The model-level verdict: with a token file, the whole model is run forward (pipeline/forward.h) on the worker
 * once the plan has settled, the plan's merged model beside the original, for perplexity, KL and top-1. */
typedef struct {
	int enabled;             /* a token file was given: the header has the model line */
	arch_model *arch;        /* NULL when the token file or the architecture could not be used (error says why;
				  * never retried) */
	tok_set tok;
	/* The original model's figures do not depend on the plan: the first job computes them and they are
	 * reused (the plan jobs recompute them on the way, see tui/worker.c's run_forward). */
	int have_original;
	double nll, ppl;
	app_model_shown shown;
	fwd_result fig;          /* APP_MODEL_MERGED: the summary (no per-token arrays) */
	int stale;               /* the plan changed since the figures shown were computed */
	int failed;              /* the job of the current plan failed, or the inputs could not be used */
	char error[1024];
	/* What the last job was asked for: its figures are shown, it is in flight, or it failed. A plan that
	 * equals it needs no new job. */
	int asked;
	int asked_identity;      /* the plan merged nothing: only the original was asked for */
	plan asked_plan;
	pipe_merge_options asked_mo;
	int in_flight;
	unsigned gen;            /* of the job in flight: an answer with another is for a plan since changed */
} app_model;

/* One point of the search panel's chart: the best KL found for a budget, beside uniform G's and the global
 * allocation's at the same budget (NAN where not confirmed). */
typedef struct {
	int keep;
	double kl, kl_uniform, kl_global;
} app_search_point;

#define APP_SEARCH_POINTS 8

/* The per-block budget search (tui/app_search.c): a key starts it on the worker for the current plan's number of
 * experts, and its result is a suggested group count for every block, applied block by block (undoable). */
typedef struct {
	srch_cache *cache;       /* statistics, proxies and confirmed figures kept between searches; created on the
				  * first, used only on the worker (freed after it stops) */
	int in_flight;
	unsigned gen;            /* of the job in flight */
	int shown;               /* the panel is drawn */
	int keep;                /* budget of the search in flight or of the suggestion */
	int have;                /* a suggestion is there */
	plan p;                  /* the suggested plan (every block its own count) */
	int *groups;             /* [n_blocks] its counts */
	double kl, ppl, top1;    /* held-out figures of the suggestion */
	double kl_uniform, kl_global, spearman;
	int kept_uniform, kept_global;
	app_search_point points[APP_SEARCH_POINTS];  /* by budget, ascending */
	int n_points;
	srch_result chart;       /* the last result's figure for the SVG export (pipeline/search.h's srch_chart_svg):
				  * its scalars and cand [n_cand] without their groups; cand NULL before the first */
	char error[1024];
} app_search;

/* What the command line chose. */
typedef struct {
	int ascii;               /* ASCII glyphs */
	int mono;                /* the monochrome scheme */
	int width, height;       /* grid size without a terminal */
	int64_t eval_tokens;     /* tokens per block evaluation */
	worker_commit_fn commit; /* mrun_run, or a stand-in in tests */
	mrun_request commit_defaults;
	const char *tokens;      /* token ids for the model-level verdict (--tokens), NULL for none */
	const char *text;        /* or a text for the model's tokenizer (--text), NULL for none */
	int autosave;            /* keep the plan in the XDG state directory after every change and offer it back
				  * on opening (tui/autosave.h); 0 in unit tests that do not test it */
} app_config;

#define APP_UNDO_DEPTH 64

typedef struct app {
	const mdl_model *m;
	const calib *cal;
	app_config cfg;
	int n_blocks, E;

	/* statistics as they land */
	pipe_stats *stats;       /* [n_blocks] */
	unsigned *have;          /* [n_blocks]: APP_HAVE_* bits */
	unsigned *asked;         /* [n_blocks]: bits requested from the worker and not yet delivered */
	char (*stats_error)[1024]; /* [n_blocks]: why the statistics failed, "" when they did not */

	/* the plan */
	app_plan_state cur;
	app_plan_state undo[APP_UNDO_DEPTH], redo[APP_UNDO_DEPTH];
	int n_undo, n_redo;
	plan saved;              /* the plan as last exported, imported or committed: dirty when they differ */
	grp_linkage linkage;
	pipe_merge_options mo;   /* layout, router, weighting, alignment, compression of the evaluation and the commit */
	mrun_format format;      /* how the commit stores a compressed matrix: dense or factors */
	int rank_step;           /* index into the threshold steps of mo.compress.mode */

	/* evaluations */
	app_eval *eval;          /* [n_blocks] */
	unsigned eval_gen;
	int eval_slots;          /* compact E' the evaluations used */

	/* where the user is */
	int block;               /* selected block */
	app_view view;
	int expert;              /* expert cursor (usage, ranks, groups, compression; heatmap column) */
	int heat_row;            /* heatmap cursor row */
	int usage_by_index;      /* usage bars in index order instead of usage order */
	int heat_by_group;       /* heatmap ordered by group instead of by index */
	int help_top;            /* first help line shown */
	char export_path[1024];  /* the last path typed into the export or import prompt, offered again */
	char commit_dir[1024];   /* the last output directory typed into the commit dialog ("" before the first) */
	int lock_fd;             /* the autosave's lock, held while the application runs (-1: none) */
	app_mode mode;
	app_dialog dlg;
	char message[1280];       /* one line in the status bar until the next key */
	int message_error;
	int quit;

	grid g;
	const grid_scheme *scheme;
	worker *w;
	unsigned commit_gen;     /* the commit job in flight */
	app_model model;         /* perplexity and KL of the plan's merged model (with --tokens) */
	app_search search;       /* the per-block budget search (with --tokens) */
	app_compare cmp;         /* the comparison view's side evaluations */

	/* the autosave (tui/app_restore.c) */
	char autosave_path[AUTOSAVE_PATH_MAX]; /* "" when off */
	autosave_identity autosave_id;
	autosave_record *restore;  /* the autosave the restore dialog offers, NULL when none */
	uint64_t autosave_print;   /* fingerprint of what the file holds (tui/app_restore.c); 0: no file */
	uint64_t clean_print;      /* fingerprint of what the user chose at the last clean point: opening, export,
				    * commit */
} app;

/* Sets up the state for m and cal (may be NULL) and starts the worker on every block's statistics. 0, or -1
 * with a message in err. */
int app_init(app *a, const mdl_model *m, const calib *cal, const app_config *cfg, ms_error *err);
/* Stops the worker (after its current job) and frees everything. */
void app_free(app *a);

/* Handles one key in the current mode; returns KEYS_* reaction flags (already acted on). */
unsigned app_key(app *a, int key);
/* A mouse click at (x, y) of the screen: a tab selects its view, a layer list row its block, a heatmap cell
 * moves the cursor there (tui/app_actions.c). Ignored while a dialog is open. Returns KEYS_REDRAW or 0. */
unsigned app_click(app *a, int x, int y);
/* Applies the worker's results; returns 1 when the state changed. */
int app_poll(app *a);
/* Waits until the worker has nothing left to do, then applies its results. */
void app_wait_idle(app *a);
/* Renders the state into a->g. */
void app_draw(app *a);
/* The grid takes a new size; 0 or -1. */
int app_resize(app *a, int w, int h);
/* The scheme for the flags and the environment (NO_COLOR set and not empty: mono) given the colours the
 * terminal has (0 when it has none). */
const grid_scheme *app_choose_scheme(int mono_flag, int colours);

/* Runs the keys of a script without a terminal (tui/app_script.c), one per line: a character, a key name
 * (tui/keys.h: <Up>, <Enter>, <C-r>, ...), `type:TEXT` (types TEXT), `wait` (until the worker is idle),
 * `dump` (appends the screen to dump), `resize:WxH`, `click:X,Y` (a mouse click); empty lines and lines starting "# " are skipped. The screen
 * is also dumped at the end. The script's end is a clean exit, like quitting: it removes the autosave (unless the
 * restore dialog is still unanswered). Returns 0, or 2 with a message naming the line of an entry it does not
 * know. */
int app_run_script(app *a, const char *script_path, FILE *dump, char *msg, size_t len);
/* Runs the application on the terminal (tui/app_curses.c) until the user quits; dump (may be NULL) receives the
 * last screen. Returns 0, or 1 with a message when the terminal cannot be used. */
int app_run_terminal(app *a, int mono_flag, FILE *dump, char *msg, size_t len);

/* The comparison view (tui/app_compare.c): when it shows, posts the selected block's variants as side evaluations
 * (once per block and plan); app_compare_landed takes an answer (1) or leaves it to the block's own (0);
 * app_compare_forget drops what was compared for block b (its plan or the merge options changed). */
void app_compare_update(app *a);
int app_compare_landed(app *a, const work_result *r);
void app_compare_forget(app *a, int b);
/* Posts a side evaluation of block b under plan p and options mo (tui/app_plan.c: the same slots as the block's
 * own evaluation); returns its generation, 0 when it could not be posted. */
unsigned app_post_side_eval(app *a, int b, const plan *p, const pipe_merge_options *mo);
/* A copy of the current plan with block b regrouped by method at its G; 0 or -1. */
int app_plan_block_as(const app *a, int b, grp_method method, plan *out);

/* Plan state (tui/app_plan.c). */
int app_plan_state_copy(app_plan_state *dst, const app_plan_state *src, int n_blocks);
void app_plan_state_free(app_plan_state *s);
/* Pushes the current plan on the undo stack (clearing redo) before a change. */
void app_push_undo(app *a);
int app_undo(app *a);
int app_redo(app *a);
/* Remakes the grouping of block b (or of every block when b < 0) from its statistics, unless edited. */
void app_replan(app *a, int b);
/* Sets every block's G from MC-SMoE's global allocation of an average G; 0, or -1 with a message. */
int app_plan_global(app *a, int avg);
/* Moves expert e of block b to group g (g == G makes a new group); keeps the plan valid. 0 or -1. */
int app_move_expert(app *a, int b, int e, int g);
/* Makes expert e the dominant of its group. */
int app_make_dominant(app *a, int b, int e);
/* Posts evaluations for the blocks whose grouping differs from before (every merged block when all). */
void app_schedule_evals(app *a, const plan *before, int all);
/* Asks the worker for the statistics the current settings need and block b lacks (every block when b < 0). */
void app_request_stats(app *a, int b);
/* 1 when the plan differs from the one last saved. */
int app_dirty(const app *a);
/* Whether block b can be planned with the current method and base, i.e. has the statistics it needs. */
int app_can_plan(const app *a, int b);
/* 1 when block b of p keeps every expert as its own group. */
int app_plan_is_identity(const plan *p, int b);

/* Orders the views list experts in. */
typedef enum { APP_ORDER_INDEX, APP_ORDER_USAGE, APP_ORDER_GROUP } app_order;
/* The experts of block b in that order into order [E]: usage is descending frequency (index order until the
 * statistics are in), group is by group label with each group's dominant first, dropped experts last; ties go
 * to the lower index. */
void app_expert_order(const app *a, int b, app_order how, int *order);
/* The order the current view shows its experts (and moves its cursor) in. */
app_order app_view_order(const app *a);

/* The model-level verdict (tui/app_model.c). On opening: reads the token file (cfg.tokens) for the model's
 * architecture; a failure is reported in the status line and on the model line, and nothing is computed. */
void app_model_open(app *a);
void app_model_free(app *a);
/* After a key or results from the worker: a changed plan makes the figures stale and cancels a job for an older
 * plan; once no block evaluation or statistics are pending, the current plan's job is posted. */
void app_model_update(app *a);
/* A commit was posted: a running forward would hold it up, so it is cancelled and asked for again behind it. */
void app_model_yield(app *a);
/* Applies the answer of a forward job; one for a plan since changed is dropped. */
void app_model_landed(app *a, const work_result *r);

/* The per-block budget search (tui/app_search.c). */
void app_search_free(app *a);
/* Applies the answer of a search job; one for a search since cancelled is dropped. */
void app_search_landed(app *a, const work_result *r);

/* Expert and router tensors of a block as they are and as the commit writes them; after < 0 when not known. */
typedef struct {
	double bytes_before, bytes_after;
	double params_before, params_after;  /* a residual entry counts as an index and a value (analysis/compress.h) */
} app_size;

/* Plan totals for the header: the sizes are what a commit writes for the expert and router tensors (the
 * other tensors are copied unchanged), computed from the plan, the layout and the format, so they are exact
 * without an evaluation, except the factors format's, which needs each block's measured ranks. */
typedef struct {
	int kept, experts;       /* groups kept over all blocks / all experts */
	int planned, blocks;     /* blocks whose plan is made (the others wait for their statistics) / all */
	int evaluated, merged;   /* merged blocks evaluated / merged blocks */
	int sized;               /* blocks whose written size is known (all but factors blocks not yet evaluated) */
	app_size size;           /* over the sized blocks */
	double mean_error;       /* mean output error over the evaluated merged blocks; NAN when none is */
} app_totals;
app_totals app_plan_totals(const app *a);
/* Experts the commit writes for block b: E' (the largest G; compact splits smaller blocks' groups up to it), E
 * (aliased: every member stores its group's merge). */
int app_written_experts(const app *a, int b);
/* Block b's size as the commit writes it: after is -1 when the factors format's size is not measured yet. */
app_size app_block_size(const app *a, int b);

/* Compression threshold steps (tui/app_actions.c): the value of step i of a mode, and how many steps it has. */
int app_rank_steps(cmp_rank_mode mode);
void app_apply_rank_step(app *a);

/* The autosave (tui/app_restore.c). On opening: finds the model's autosave file and, when one is there, opens
 * the restore dialog (or reports a broken or foreign one, which is removed). Off, with a note in the status line,
 * when the model's path or the state directory cannot be used. */
void app_autosave_open(app *a);
/* After a key or results from the worker: writes the file when what the user chose differs from the last clean
 * point and the plan or its settings changed, removes it when they went back to the clean point. A failure is
 * reported in the status line. */
void app_autosave_update(app *a);
/* At a clean point (export, commit, quitting, a script's end): removes the file; nothing is unsaved. Keeps it
 * while the restore dialog has not been answered. */
void app_autosave_clean(app *a);
/* The settings the user chose (method, base, merge options, layout, router, format) as the autosave and an
 * exported plan's sidecar keep them, and back. */
autosave_settings app_settings(const app *a);
void app_settings_apply(app *a, const autosave_settings *s);
/* The restore dialog: y restores the autosave (undoable), n or Esc discards it; other keys are ignored. */
unsigned app_restore_key(app *a, int key);

/* Dialogs (tui/app_dialog.c). */
unsigned app_dialog_key(app *a, int key);
void app_open_prompt(app *a, app_prompt which, const char *initial);
void app_open_commit(app *a);
void app_show_message(app *a, const char *title, int is_error, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Applies the result of a commit job. */
void app_commit_done(app *a, const work_result *r);

/* Actions of the key table (tui/app_actions.c). */
unsigned app_act_block_next(app *a);
unsigned app_act_block_prev(app *a);
unsigned app_act_block_first(app *a);
unsigned app_act_block_last(app *a);
unsigned app_act_view_next(app *a);
unsigned app_act_view_prev(app *a);
/* app_act_views_usage and the like: select the view (one per row of APP_VIEW_TABLE). */
#define APP_VIEW_ACTION_DECL(id, title, draw, key, name, help) unsigned app_act_##draw(app *a);
APP_VIEW_TABLE(APP_VIEW_ACTION_DECL)
#undef APP_VIEW_ACTION_DECL
unsigned app_act_expert_next(app *a);
unsigned app_act_expert_prev(app *a);
unsigned app_act_heat_up(app *a);
unsigned app_act_page_down(app *a);
unsigned app_act_page_up(app *a);
unsigned app_act_list_first(app *a);
unsigned app_act_list_last(app *a);
unsigned app_act_layout(app *a);
unsigned app_act_router(app *a);
unsigned app_act_format(app *a);
unsigned app_act_command(app *a);
/* Runs a `:` command line (see APP_PROMPT_COMMAND); a bad one is reported in the status line. */
unsigned app_command(app *a, const char *text);
/* The cursor on the first row of the current view's list (after a block change, or when the usage lands). */
void app_cursor_top(app *a);
unsigned app_act_heat_down(app *a);
unsigned app_act_order(app *a);
unsigned app_act_groups_up(app *a);
unsigned app_act_groups_down(app *a);
unsigned app_act_global_up(app *a);
unsigned app_act_global_down(app *a);
unsigned app_act_method(app *a);
unsigned app_act_base(app *a);
unsigned app_act_weighting(app *a);
unsigned app_act_align(app *a);
unsigned app_act_rank_mode(app *a);
unsigned app_act_rank_up(app *a);
unsigned app_act_rank_down(app *a);
unsigned app_act_move_prev(app *a);
unsigned app_act_move_next(app *a);
unsigned app_act_dominant(app *a);
unsigned app_act_undo(app *a);
unsigned app_act_redo(app *a);
unsigned app_act_export(app *a);
unsigned app_act_import(app *a);
unsigned app_act_commit(app *a);
unsigned app_act_search(app *a);
unsigned app_act_search_apply(app *a);
unsigned app_act_search_apply_all(app *a);
unsigned app_act_search_panel(app *a);
unsigned app_act_search_svg(app *a);
/* Writes the last search's figure to path as `moescope search --svg` does; 0, or -1 with the reason in err. */
int app_search_write_svg(const app *a, const char *path, ms_error *err);
unsigned app_act_help(app *a);
unsigned app_act_quit(app *a);

#endif
