/* `moescope eval MODEL --calib C [--plan PLAN.csv and the merge options] [--eval-tokens N] [--json OUT]`:
 * per block, the output error, routing agreement, parameters and FLOPs of a plan; without a plan, the block's
 * output norm and the MEO analysis. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/jsonfile.h"
#include "cli/cli.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "pipeline/report.h"

typedef struct {
	const char *model, *calib, *plan_path, *json;
	int64_t eval_tokens;
	pipe_merge_options mo;
} eval_args;

static int parse_args(int argc, char **argv, eval_args *a)
{
	static const struct option longopts[] = {
		{"calib", required_argument, NULL, 'c'}, {"plan", required_argument, NULL, 'p'},
		{"json", required_argument, NULL, 'j'},  {"eval-tokens", required_argument, NULL, 't'},
		{"help", no_argument, NULL, 'h'},        OPT_MERGE_LONGOPTS,
		{NULL, 0, NULL, 0},
	};
	a->mo = pipe_merge_defaults();
	a->eval_tokens = 2048;
	long long n;
	char msg[256];
	int c, rc = 0;
	optind = 0;
	opterr = 0;
	while (rc == 0 && (c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'c': a->calib = optarg; break;
		case 'p': a->plan_path = optarg; break;
		case 'j': a->json = optarg; break;
		case 't': if ((rc = opt_eval_tokens("eval", optarg, &n)) == 0) a->eval_tokens = n; break;
		default: rc = opt_other("eval", c, argv, &a->mo);
		}
	}
	if (rc != 0 || (rc = opt_model("eval", argc, argv, &a->model)) != 0)
		return rc;
	if (!a->calib)
		return cli_usage_error("eval", "--calib is required");
	if (opt_merge_check(&a->mo, msg, sizeof msg) != 0)
		return cli_usage_error("eval", "%s", msg);
	return 0;
}

/* The block with no plan: its output norm and MEO. */
static ms_status eval_plain(const pipe_block *blk, const calib *cal, int64_t max_tokens, cJSON *jb,
			    const char *label, ms_error *err)
{
	blk_config cfg = pipe_block_config(blk);
	cfg.seq = blk->routing.capacity > 0 ? blk->seg : NULL;   /* the norm and MEO drop the tokens the block drops */
	double norm;
	meo_result meo;
	int32_t *seg = NULL;
	ms_status st = pipe_output_norm(&cfg, blk->x, blk->T, max_tokens, &norm, err);
	if (st == MS_OK && calib_has_segments(cal)) {
		seg = malloc((size_t)blk->T * sizeof *seg);
		st = seg ? calib_load_segments(cal, seg, blk->T, err) : ms_fail(err, MS_ERR_NOMEM, "out of memory");
		if (st != MS_OK) { /* segment ids of another length: MEO per token only */
			free(seg);
			seg = NULL;
			st = MS_OK;
		}
	}
	if (st == MS_OK)
		st = meo_analyze(&cfg, blk->x, blk->T, seg, max_tokens, &meo, err);
	free(seg);
	if (st != MS_OK)
		return st;
	printf("block %-12s output norm %.6g  MEO token error %.4f (max %.4f)", label, norm, meo.token_error_mean,
	       meo.token_error_max);
	if (meo.segments)
		printf("  segment error %.4f over %lld segments", meo.segment_error_mean, (long long)meo.segments);
	printf("  FLOPs/token %.4g -> %.4g\n", meo.flops_experts, meo.flops_token_meo);
	cJSON_AddNumberToObject(jb, "output_norm", norm);
	report_add_meo(jb, &meo);
	return MS_OK;
}

/* How the error above was reached: the split, the router candidates and the refit. */
static void print_fit(const pipe_block *blk, const pipe_merged *mg)
{
	printf("%-18s held out: %lld tokens (split %s)", "", (long long)(blk->held_idx ? blk->n_held : blk->T),
	       pipe_split_name(blk->split));
	if (mg->layout == PIPE_LAYOUT_COMPACT) {
		printf("  router %s", rfit_method_name(mg->router_used));
		const char *sep = " (fit error";
		for (int m = 0; m < RFIT_ROW_METHODS; m++)
			if (mg->router_error[m] == mg->router_error[m]) {
				printf("%s %s %.4f", sep, rfit_method_name((rfit_method)m), mg->router_error[m]);
				sep = ",";
			}
		if (sep[0] == ',')
			printf(")");
		if (mg->refitted)
			printf("  refit down: fit error %.4f -> %.4f", mg->fit_error_merged, mg->fit_error_refit);
		else if (mg->refit_skipped)
			printf("  refit skipped (memory)");
	}
	printf("  on %lld fit tokens\n", (long long)mg->fit_tokens);
}

/* The block under the plan: the merged block against the original. The original's outputs are taken first, so the
 * block is merged in its own storage (the block is freed right after). */
static ms_status eval_planned(pipe_block *blk, const plan *p, int b, const pipe_merge_options *mo,
			      int64_t max_tokens, cJSON *jb, ms_error *err)
{
	pipe_merged mg;
	blk_eval_result r;
	blk_eval_ref ref;
	double norm = 0.0;
	ms_status st = pipe_eval_reference(blk, p, b, max_tokens, &ref, err);
	if (st == MS_OK)
		st = pipe_merge_block_in_place(blk, p, b, mo, &mg, err);
	if (st != MS_OK) {
		blk_eval_ref_free(&ref);
		return st;
	}
	int64_t cmp_before, cmp_after;
	pipe_compressed_params(&mg, &cmp_before, &cmp_after);
	st = pipe_eval_against(&ref, blk, &mg, p, b, &r, err);
	blk_eval_ref_free(&ref);
	blk_config merged = mg.cfg;
	merged.seq = blk->routing.capacity > 0 ? blk->seg : NULL;   /* the merged block's own (scaled) capacity */
	if (st == MS_OK)
		st = pipe_output_norm(&merged, blk->x, blk->T, max_tokens, &norm, err);
	if (st != MS_OK) {
		pipe_free_merged(&mg);
		return st;
	}
	printf("block %-12s groups %3d  output error %.6f  routing agreement %.4f  params %lld -> %lld (%.1f%% "
	       "saved)  output norm %.6g\n",
	       p->labels[b], plan_groups(p, b), r.rel_error, r.routing_agreement, (long long)r.params_before,
	       (long long)r.params_after, 100.0 * (1.0 - (double)r.params_after / (double)r.params_before), norm);
	print_fit(blk, &mg);
	report_add_eval(jb, &r);
	report_add_fit(jb, blk, &mg);
	pipe_free_merged(&mg);
	cJSON_AddNumberToObject(jb, "output_norm", norm);
	if (cmp_before > 0) {
		printf("%-18s compressed merged experts: %lld -> %lld params\n", "", (long long)cmp_before,
		       (long long)cmp_after);
		cJSON_AddNumberToObject(jb, "compressed_params_before", (double)cmp_before);
		cJSON_AddNumberToObject(jb, "compressed_params_after", (double)cmp_after);
	}
	return MS_OK;
}

static void add_options(cJSON *o, const eval_args *a)
{
	cJSON_AddNumberToObject(o, "eval_tokens", (double)a->eval_tokens);
	if (!a->plan_path)
		return;
	cJSON_AddStringToObject(o, "plan", a->plan_path);
	cJSON_AddStringToObject(o, "layout", pipe_layout_names[a->mo.layout]);
	cJSON_AddStringToObject(o, "router", rfit_method_name(a->mo.router));
	cJSON_AddStringToObject(o, "refit", pipe_refit_name(a->mo.refit));
	cJSON_AddStringToObject(o, "align", align_ref_name(a->mo.align));
	cJSON_AddStringToObject(o, "weighting", merge_weighting_name(a->mo.weighting));
}

int cmd_eval(int argc, char **argv)
{
	eval_args a = {0};
	int rc = parse_args(argc, argv, &a);
	if (rc != 0)
		return rc < 0 ? CLI_OK : rc;
	mdl_model *m;
	calib *cal;
	if (opt_open(a.model, a.calib, &m, &cal))
		return CLI_USER_ERROR;
	plan p = {0};
	if (a.plan_path && opt_plan_read(m, a.plan_path, &p)) {
		opt_close(m, cal);
		return CLI_USER_ERROR;
	}
	ms_error err = {0};
	if (a.plan_path && a.mo.layout == PIPE_LAYOUT_COMPACT) {
		/* every block gets the count the checkpoint would have, by splitting groups rather than padding */
		if (pipe_fill_plan(&p, &a.mo.slots, &err) != MS_OK) {
			plan_free(&p);
			opt_close(m, cal);
			return cli_report(&err);
		}
	}
	cJSON *report = report_new(m, cal);
	add_options(report_options(report), &a);
	ms_status st = MS_OK;
	for (int b = 0; st == MS_OK && b < m->n_blocks; b++) {
		cli_progress("eval", b, m->n_blocks);
		pipe_block blk;
		st = pipe_load_block(m, cal, b, &blk, &err);
		if (st != MS_OK)
			break;
		cJSON *jb = report_block(report, m, b);
		st = a.plan_path ? eval_planned(&blk, &p, b, &a.mo, a.eval_tokens, jb, &err)
				 : eval_plain(&blk, cal, a.eval_tokens, jb, m->blocks[b].label, &err);
		if (st != MS_OK)
			opt_name_block(&err, m->blocks[b].label);
		pipe_free_block(&blk);
	}
	cli_progress("eval", m->n_blocks, m->n_blocks);
	if (st == MS_OK && a.json)
		st = jsonf_write(a.json, report, &err);
	cJSON_Delete(report);
	if (a.plan_path)
		plan_free(&p);
	opt_close(m, cal);
	return st == MS_OK ? CLI_OK : cli_report(&err);
}
