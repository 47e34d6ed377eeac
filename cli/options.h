/* Options shared by the analysis commands (analyze, plan, eval, merge): opening the model and calibration set,
 * choosing blocks, and the merge options, each parsed from a table so every command spells them the same. */
#ifndef OPT_OPTIONS_H
#define OPT_OPTIONS_H

#include <stdint.h>

#include "pipeline/pipeline.h"
#include "io/calib.h"
#include "io/model.h"
#include "io/plan.h"

/* Opens MODEL and, when calib_path is not NULL, the calibration set; prints the error and returns 1 on failure. */
int opt_open(const char *model_dir, const char *calib_path, mdl_model **m, calib **cal);
void opt_close(mdl_model *m, calib *cal);

/* A plan for the model with every expert its own group. */
int opt_plan_init(const mdl_model *m, plan *p);
/* Reads PLAN.csv for the model; prints the error and returns 1 on failure. */
int opt_plan_read(const mdl_model *m, const char *path, plan *p);

/* --layers LIST: comma-separated block labels or ranges of layer numbers ("1,3,5-7", "encoder.1"); fills
 * merge [n_blocks]. Returns 0, or -1 with a message in msg for an unknown block. */
int opt_parse_layers(const mdl_model *m, const char *list, unsigned char *merge, char *msg, size_t len);

/* Merge options: --layout --router --align --weighting --rank --rank-energy --rank-stable --sparse-ratio.
 * opt_merge_option returns 1 when `name` is one of them (and stores it), 0 when it is not, -1 with a message in
 * msg for a bad value. */
int opt_merge_option(const char *name, const char *value, pipe_merge_options *o, char *msg, size_t len);
/* The long option names opt_merge_option knows, NULL-terminated. */
extern const char *const opt_merge_option_names[];
/* getopt_long entries for the merge options: their val is OPT_MERGE_BASE + index into opt_merge_option_names. */
#define OPT_MERGE_BASE 1000
#define OPT_MERGE_LONGOPTS \
	{"layout", required_argument, NULL, OPT_MERGE_BASE + 0}, \
	{"router", required_argument, NULL, OPT_MERGE_BASE + 1}, \
	{"align", required_argument, NULL, OPT_MERGE_BASE + 2}, \
	{"weighting", required_argument, NULL, OPT_MERGE_BASE + 3}, \
	{"rank", required_argument, NULL, OPT_MERGE_BASE + 4}, \
	{"rank-energy", required_argument, NULL, OPT_MERGE_BASE + 5}, \
	{"rank-stable", required_argument, NULL, OPT_MERGE_BASE + 6}, \
	{"sparse-ratio", required_argument, NULL, OPT_MERGE_BASE + 7}, \
	{"refit", required_argument, NULL, OPT_MERGE_BASE + 8}

/* Checks the combination (one rank mode; sparse ratio in [0,1]). 0, or -1 with a message. */
int opt_merge_check(const pipe_merge_options *o, char *msg, size_t len);

/* What every command's getopt_long loop does with a value its own cases do not take: a merge option is stored in
 * mo (when mo is not NULL), 'h' (--help) prints the command's usage, anything else is an unknown option. Returns 0
 * to go on, -1 after --help, or CLI_USAGE after printing the error. */
int opt_other(const char *cmd, int c, char **argv, pipe_merge_options *mo);
/* After the options: exactly one MODEL operand, stored in *model; 0, or CLI_USAGE after printing the error. */
int opt_model(const char *cmd, int argc, char **argv, const char **model);
/* --eval-tokens N (a whole number >= 1); 0, or CLI_USAGE after printing the error. */
int opt_eval_tokens(const char *cmd, const char *value, long long *out);

/* "block L: " in front of an analysis error that does not already say which block it is about. */
void opt_name_block(ms_error *err, const char *label);


#endif
