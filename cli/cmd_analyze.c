/* `moescope analyze MODEL --calib C [--similarity B[,B...]|all] [--json OUT]`: routing statistics, similarity and stable
 * ranks of every MoE block, one block in memory at a time. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/jsonfile.h"
#include "cli/cli.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "pipeline/report.h"

/* The expert most similar to e (other than e) under sim [E, E]. */
static int most_similar(const double *sim, int E, int e)
{
	int best = -1;
	for (int j = 0; j < E; j++)
		if (j != e && (best < 0 || sim[(size_t)e * E + j] > sim[(size_t)e * E + best]))
			best = j;
	return best;
}

static void print_block(const mdl_model *m, int b, const pipe_stats *s, sim_base base)
{
	const int E = s->E;
	printf("block %s: %lld tokens, usage entropy %.3f of %.3f bits, usage cv %.3f\n", m->blocks[b].label,
	       (long long)s->T, s->usage_entropy, log2((double)E), s->cv);
	printf("  %6s %10s %9s %9s %9s  %s\n", "expert", "frequency", "sr_gate", "sr_up", "sr_down",
	       s->similarity[base] ? "most similar" : "");
	for (int e = 0; e < E; e++) {
		const double *sr = s->stable_rank + (size_t)e * MDL_NMAT;
		printf("  %6d %10.6f %9.3f %9.3f %9.3f", e, s->frequency[e], sr[MDL_GATE], sr[MDL_UP], sr[MDL_DOWN]);
		int j = s->similarity[base] ? most_similar(s->similarity[base], E, e) : -1;
		if (j >= 0)
			printf("  %d (%.4f %s)", j, s->similarity[base][(size_t)e * E + j], sim_base_name(base));
		putchar('\n');
	}
}

typedef struct {
	const char *model, *calib, *json;
	unsigned bases;
	sim_base shown;
} analyze_args;

static int parse_args(int argc, char **argv, analyze_args *a)
{
	static const struct option longopts[] = {
		{"calib", required_argument, NULL, 'c'}, {"similarity", required_argument, NULL, 's'},
		{"json", required_argument, NULL, 'j'},  {"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	a->bases = 1u << SIM_ROUTER_LOGITS;
	a->shown = SIM_ROUTER_LOGITS;
	optind = 0;
	opterr = 0;
	int c, base, rc = 0;
	while (rc == 0 && (c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'c': a->calib = optarg; break;
		case 'j': a->json = optarg; break;
		case 's':
			if (strcmp(optarg, "all") == 0) {
				a->bases = (1u << SIM_BASE_COUNT) - 1;
				break;
			}
			/* a comma-separated list: every base is computed, the first is the one printed */
			a->bases = 0;
			for (const char *p = optarg;; p++) {
				const char *end = strchr(p, ',');
				const size_t len = end ? (size_t)(end - p) : strlen(p);
				char name[64];
				base = len < sizeof name ? (memcpy(name, p, len), name[len] = '\0', sim_base_parse(name)) : -1;
				if (base < 0)
					return cli_usage_error("analyze", "--similarity: '%.*s' is not a similarity base",
							       (int)(len < 64 ? len : 64), p);
				if (!a->bases)
					a->shown = (sim_base)base;
				a->bases |= 1u << base;
				if (!end)
					break;
				p = end;
			}
			break;
		default: rc = opt_other("analyze", c, argv, NULL);
		}
	}
	if (rc != 0 || (rc = opt_model("analyze", argc, argv, &a->model)) != 0)
		return rc;
	if (!a->calib)
		return cli_usage_error("analyze", "--calib is required");
	return 0;
}

int cmd_analyze(int argc, char **argv)
{
	analyze_args a = {0};
	int rc = parse_args(argc, argv, &a);
	if (rc != 0)
		return rc < 0 ? CLI_OK : rc;
	mdl_model *m;
	calib *cal;
	if (opt_open(a.model, a.calib, &m, &cal))
		return CLI_USER_ERROR;
	cJSON *report = report_new(m, cal);
	cJSON_AddStringToObject(report_options(report), "similarity", sim_base_name(a.shown));
	pipe_analyze_options ao = {.bases = a.bases, .stable_ranks = 1, .reap = 0, .srank_tol = 1e-4};
	ms_error err = {0};
	ms_status st = MS_OK;
	for (int b = 0; st == MS_OK && b < m->n_blocks; b++) {
		cli_progress("analyze", b, m->n_blocks);
		pipe_block blk;
		pipe_stats s;
		st = pipe_load_block(m, cal, b, &blk, &err);
		if (st == MS_OK) {
			st = pipe_analyze_block(&blk, &ao, &s, &err);
			if (st != MS_OK)
				opt_name_block(&err, m->blocks[b].label);
			pipe_free_block(&blk);
		}
		if (st != MS_OK)
			break;
		print_block(m, b, &s, a.shown);
		report_add_stats(report_block(report, m, b), &s);
		pipe_free_stats(&s);
	}
	cli_progress("analyze", m->n_blocks, m->n_blocks);
	if (st == MS_OK && a.json)
		st = jsonf_write(a.json, report, &err);
	cJSON_Delete(report);
	opt_close(m, cal);
	return st == MS_OK ? CLI_OK : cli_report(&err);
}
