/* `moescope plan MODEL --calib C --groups G [--global] [--method M] [--linkage L] [--similarity B]
 * [--layers LIST] --out PLAN.csv`: group every MoE block's experts and write the plan CSV. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "cli/options.h"

typedef struct {
	const char *model, *calib, *out, *layers;
	pipe_plan_options po;
	int base_given;
} plan_args;

static int parse_choice_arg(const char *opt, const char *value, int parsed)
{
	if (parsed < 0)
		return cli_usage_error("plan", "--%s: '%s' is not a valid choice", opt, value);
	return 0;
}

static int parse_args(int argc, char **argv, plan_args *a)
{
	static const struct option longopts[] = {
		{"calib", required_argument, NULL, 'c'},  {"groups", required_argument, NULL, 'g'},
		{"global", no_argument, NULL, 'G'},       {"method", required_argument, NULL, 'm'},
		{"linkage", required_argument, NULL, 'l'}, {"similarity", required_argument, NULL, 's'},
		{"layers", required_argument, NULL, 'L'}, {"out", required_argument, NULL, 'o'},
		{"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
	};
	a->po = (pipe_plan_options){.method = GRP_MSMOE, .linkage = GRP_LINK_AVERAGE, .base = SIM_ROUTER_LOGITS};
	long long g = 0;
	int c, v, rc = 0;
	optind = 0;
	opterr = 0;
	while (rc == 0 && (c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'c': a->calib = optarg; break;
		case 'o': a->out = optarg; break;
		case 'L': a->layers = optarg; break;
		case 'G': a->po.global = 1; break;
		case 'g':
			if (cli_parse_int(optarg, 1, 1 << 20, &g) != 0)
				return cli_usage_error("plan", "--groups: '%s' is not a whole number >= 1", optarg);
			a->po.groups = (int)g;
			break;
		case 'm': rc = parse_choice_arg("method", optarg, v = grp_method_parse(optarg)); a->po.method = v; break;
		case 'l': rc = parse_choice_arg("linkage", optarg, v = grp_linkage_parse(optarg)); a->po.linkage = v; break;
		case 's':
			rc = parse_choice_arg("similarity", optarg, v = sim_base_parse(optarg));
			a->po.base = v;
			a->base_given = 1;
			break;
		default: rc = opt_other("plan", c, argv, NULL);
		}
	}
	if (rc != 0 || (rc = opt_model("plan", argc, argv, &a->model)) != 0)
		return rc;
	if (!a->calib || !a->out || a->po.groups <= 0)
		return cli_usage_error("plan", "--calib, --groups and --out are required");
	/* HC-SMoE clusters on expert outputs unless told otherwise. */
	if (a->po.method == GRP_HC && !a->base_given)
		a->po.base = SIM_EXPERT_OUTPUT;
	return 0;
}

/* Statistics of every block: what grouping needs (the chosen base, REAP when pruning by it, stable ranks for the
 * plan's columns). */
static ms_status all_stats(const mdl_model *m, const calib *cal, const pipe_plan_options *po, pipe_stats *stats,
			   ms_error *err)
{
	pipe_analyze_options ao = {
		.bases = po->method == GRP_PRUNE_FREQUENCY || po->method == GRP_PRUNE_REAP ? 0u : 1u << po->base,
		.stable_ranks = 1, .reap = po->method == GRP_PRUNE_REAP, .srank_tol = 1e-4,
	};
	ms_status st = MS_OK;
	for (int b = 0; st == MS_OK && b < m->n_blocks; b++) {
		cli_progress("plan", b, m->n_blocks);
		pipe_block blk;
		st = pipe_load_block(m, cal, b, &blk, err);
		if (st != MS_OK)
			break;
		st = pipe_analyze_block(&blk, &ao, &stats[b], err);
		if (st != MS_OK)
			opt_name_block(err, m->blocks[b].label);
		pipe_free_block(&blk);
	}
	cli_progress("plan", m->n_blocks, m->n_blocks);
	return st;
}

static void print_summary(const mdl_model *m, const plan *p, const char *out)
{
	int kept = 0;
	for (int b = 0; b < m->n_blocks; b++) {
		int g = plan_groups(p, b);
		kept += g;
		printf("block %-12s %3d groups of %d experts\n", m->blocks[b].label, g, m->n_experts);
	}
	printf("%d of %d experts kept; plan written to %s\n", kept, m->n_blocks * m->n_experts, out);
}

int cmd_plan(int argc, char **argv)
{
	plan_args a = {0};
	int rc = parse_args(argc, argv, &a);
	if (rc != 0)
		return rc < 0 ? CLI_OK : rc;
	mdl_model *m;
	calib *cal;
	if (opt_open(a.model, a.calib, &m, &cal))
		return CLI_USER_ERROR;
	ms_error err = {0};
	ms_status st = MS_OK;
	unsigned char *merge = malloc((size_t)m->n_blocks);
	pipe_stats *stats = calloc((size_t)m->n_blocks, sizeof *stats);
	plan p = {0};
	if (!merge || !stats || opt_plan_init(m, &p))
		st = ms_fail(&err, MS_ERR_NOMEM, "out of memory");
	if (st == MS_OK && a.po.groups > m->n_experts)
		st = ms_fail(&err, MS_ERR_ARG, "--groups %d: the model has %d experts per block", a.po.groups,
			     m->n_experts);
	if (st == MS_OK && a.layers) {
		if (opt_parse_layers(m, a.layers, merge, err.msg, sizeof err.msg) != 0)
			st = err.code = MS_ERR_ARG;
		a.po.merge = merge;
	}
	if (st == MS_OK)
		st = all_stats(m, cal, &a.po, stats, &err);
	if (st == MS_OK)
		st = pipe_make_plan(stats, m->n_blocks, &a.po, &p, &err);
	if (st == MS_OK)
		st = plan_write_csv(a.out, &p, &err);
	if (st == MS_OK)
		print_summary(m, &p, a.out);
	for (int b = 0; stats && b < m->n_blocks; b++)
		pipe_free_stats(&stats[b]);
	free(stats);
	free(merge);
	plan_free(&p);
	opt_close(m, cal);
	return st == MS_OK ? CLI_OK : cli_report(&err);
}
