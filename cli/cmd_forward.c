/* The commands on top of the forward pass (pipeline/forward.h):
 *   capture MODEL (--text FILE | --tokens FILE) --out CALIB.safetensors [--seq-len N] [--max-tokens N]
 *   perplexity MODEL (--text FILE | --tokens FILE) [--seq-len N] [--max-tokens N] [--plan PLAN.csv and the
 *              merge options] [--json OUT] */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "io/jsonfile.h"
#include "pipeline/capture.h"
#include "pipeline/forward.h"
#include "cli/cli.h"
#include "cli/commands.h"
#include "cli/options.h"


typedef struct {
	const char *cmd;
	const char *model, *text, *tokens, *out, *plan_path, *json;
	long long seq_len, max_tokens;   /* 0: not given */
	pipe_merge_options mo;
} fwd_args;

static int parse_args(int argc, char **argv, fwd_args *a)
{
	static const struct option longopts[] = {
		{"text", required_argument, NULL, 'x'},     {"tokens", required_argument, NULL, 'k'},
		{"out", required_argument, NULL, 'o'},      {"seq-len", required_argument, NULL, 's'},
		{"max-tokens", required_argument, NULL, 'm'}, {"plan", required_argument, NULL, 'p'},
		{"json", required_argument, NULL, 'j'},     {"help", no_argument, NULL, 'h'},
		OPT_MERGE_LONGOPTS,                         {NULL, 0, NULL, 0},
	};
	const int capture = strcmp(a->cmd, "capture") == 0;
	a->mo = pipe_merge_defaults();
	char msg[256];
	int c, rc = 0;
	optind = 0;
	opterr = 0;
	while (rc == 0 && (c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'x': a->text = optarg; break;
		case 'k': a->tokens = optarg; break;
		case 'o': if (capture) { a->out = optarg; break; } goto other;
		case 'p': if (!capture) { a->plan_path = optarg; break; } goto other;
		case 'j': if (!capture) { a->json = optarg; break; } goto other;
		case 's':
			if (cli_parse_int(optarg, 1, 1 << 30, &a->seq_len) != 0)
				return cli_usage_error(a->cmd, "--seq-len: '%s' is not a whole number >= 1", optarg);
			break;
		case 'm':
			if (cli_parse_int(optarg, 1, 1LL << 40, &a->max_tokens) != 0)
				return cli_usage_error(a->cmd, "--max-tokens: '%s' is not a whole number >= 1", optarg);
			break;
		default:
		other:
			rc = opt_other(a->cmd, c, argv, capture ? NULL : &a->mo);
		}
	}
	if (rc != 0 || (rc = opt_model(a->cmd, argc, argv, &a->model)) != 0)
		return rc;
	if (!a->text == !a->tokens)
		return cli_usage_error(a->cmd, "give exactly one of --text FILE and --tokens FILE");
	if (capture && !a->out)
		return cli_usage_error(a->cmd, "--out is required");
	if (!capture && opt_merge_check(&a->mo, msg, sizeof msg) != 0)
		return cli_usage_error(a->cmd, "%s", msg);
	return 0;
}

static void show_progress(void *ctx, int layer, int n_layers)
{
	cli_progress(ctx, layer, n_layers);
}

/* Opens the model and its architecture and reads the tokens; prints the error and returns 1 on failure. */
static int open_inputs(const fwd_args *a, mdl_model **m, arch_model **arch, tok_set *tok)
{
	ms_error err = {0};
	*arch = NULL;
	memset(tok, 0, sizeof *tok);
	if (opt_open(a->model, NULL, m, NULL))
		return 1;
	ms_status st = arch_open(*m, arch, &err);
	if (st == MS_OK)
		st = fwd_read_input(*arch, a->text, a->tokens, (int)a->seq_len, a->max_tokens, tok, &err);
	if (st != MS_OK) {
		arch_close(*arch);
		mdl_close(*m);
		return cli_report(&err);
	}
	return 0;
}

int cmd_capture(int argc, char **argv)
{
	fwd_args a = {.cmd = "capture"};
	int rc = parse_args(argc, argv, &a);
	if (rc != 0)
		return rc < 0 ? CLI_OK : rc;
	mdl_model *m;
	arch_model *arch;
	tok_set tok;
	if (open_inputs(&a, &m, &arch, &tok))
		return CLI_USER_ERROR;
	ms_error err = {0};
	ms_status st = cap_write(arch, &tok, a.out, show_progress, "capture", &err);
	if (st == MS_OK)
		printf("wrote %s: %d blocks, %lld tokens in %d sequences\n", a.out, m->n_blocks, (long long)tok.T,
		       tok.n_seq);
	tokset_free(&tok);
	arch_close(arch);
	mdl_close(m);
	return st == MS_OK ? CLI_OK : cli_report(&err);
}

static cJSON *nll_json(double nll, double ppl)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddNumberToObject(o, "nll", nll);
	cJSON_AddNumberToObject(o, "ppl", ppl);
	return o;
}

static cJSON *report_json(const fwd_result *r, const tok_set *tok, int merged)
{
	cJSON *j = cJSON_CreateObject();
	cJSON_AddNumberToObject(j, "tokens", (double)r->predicted);
	cJSON_AddNumberToObject(j, "input_tokens", (double)tok->T);
	cJSON_AddNumberToObject(j, "sequences", tok->n_seq);
	cJSON_AddNumberToObject(j, "nll", r->mean_nll);
	cJSON_AddNumberToObject(j, "ppl", r->ppl);
	if (!merged)
		return j;
	cJSON_AddItemToObject(j, "original", nll_json(r->mean_nll, r->ppl));
	cJSON_AddItemToObject(j, "merged", nll_json(r->mean_nll_merged, r->ppl_merged));
	cJSON *kl = cJSON_AddObjectToObject(j, "kl");
	cJSON_AddNumberToObject(kl, "mean", r->kl_mean);
	cJSON_AddNumberToObject(kl, "p50", r->kl_p50);
	cJSON_AddNumberToObject(kl, "p90", r->kl_p90);
	cJSON_AddNumberToObject(kl, "p99", r->kl_p99);
	cJSON_AddNumberToObject(j, "top1_agreement", r->top1_agreement);
	return j;
}

static void print_result(const fwd_result *r, int merged)
{
	if (!merged) {
		printf("tokens %lld  nll %.6f  ppl %.6f\n", (long long)r->predicted, r->mean_nll, r->ppl);
		return;
	}
	printf("tokens %lld\noriginal  nll %.6f  ppl %.6f\nmerged    nll %.6f  ppl %.6f\n", (long long)r->predicted,
	       r->mean_nll, r->ppl, r->mean_nll_merged, r->ppl_merged);
	printf("KL(original || merged)  mean %.6g  p50 %.6g  p90 %.6g  p99 %.6g\ntop-1 agreement %.4f\n", r->kl_mean,
	       r->kl_p50, r->kl_p90, r->kl_p99, r->top1_agreement);
}

int cmd_perplexity(int argc, char **argv)
{
	fwd_args a = {.cmd = "perplexity"};
	int rc = parse_args(argc, argv, &a);
	if (rc != 0)
		return rc < 0 ? CLI_OK : rc;
	mdl_model *m;
	arch_model *arch;
	tok_set tok;
	if (open_inputs(&a, &m, &arch, &tok))
		return CLI_USER_ERROR;
	plan p = {0};
	if (a.plan_path && opt_plan_read(m, a.plan_path, &p)) {
		tokset_free(&tok);
		arch_close(arch);
		mdl_close(m);
		return CLI_USER_ERROR;
	}
	ms_error err = {0};
	if (a.plan_path && a.mo.layout == PIPE_LAYOUT_COMPACT && pipe_fill_plan(&p, &a.mo.slots, &err) != MS_OK) {
		plan_free(&p);
		tokset_free(&tok);
		arch_close(arch);
		mdl_close(m);
		return cli_report(&err);
	}
	fwd_options o = {.plan = a.plan_path ? &p : NULL, .merge = &a.mo, .head = 1, .progress = show_progress,
			 .progress_ctx = "perplexity"};
	fwd_result r;
	ms_status st = fwd_run(arch, &tok, &o, &r, &err);
	if (st == MS_OK) {
		print_result(&r, a.plan_path != NULL);
		cJSON *j = a.json ? report_json(&r, &tok, a.plan_path != NULL) : NULL;
		if (j)
			st = jsonf_write(a.json, j, &err);
		cJSON_Delete(j);
		fwd_result_free(&r);
	}
	if (a.plan_path)
		plan_free(&p);
	tokset_free(&tok);
	arch_close(arch);
	mdl_close(m);
	return st == MS_OK ? CLI_OK : cli_report(&err);
}
