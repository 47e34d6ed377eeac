/* `moescope search MODEL (--text FILE | --tokens FILE | --calib C) (--budget B | --experts N) --out PLAN.csv [--method M]
 * [--linkage L] [--similarity B] [--confirm K] [--samples S] [--candidates N] [--seed S] [--time-limit S]
 * [--seq-len N] [--max-tokens N] [--json OUT] [--svg OUT] [merge options]`: the per-block group counts of least KL within a
 * budget (pipeline/search.h), beside uniform G and MC-SMoE's global allocation at the same budget. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "io/jsonfile.h"
#include "pipeline/search.h"
#include "cli/cli.h"
#include "cli/commands.h"
#include "cli/options.h"

typedef struct {
	const char *model, *text, *tokens, *calib, *out, *json, *svg;
	long long seq_len, max_tokens, experts;
	double budget;          /* 0: not given */
	int base_given;
	srch_options so;
} search_args;

static int choice(const char *opt, const char *value, int parsed, int *dst)
{
	if (parsed < 0)
		return cli_usage_error("search", "--%s: '%s' is not a valid choice", opt, value);
	*dst = parsed;
	return 0;
}

static int whole(const char *opt, const char *value, long long lo, long long hi, long long *dst)
{
	if (cli_parse_int(value, lo, hi, dst) != 0)
		return cli_usage_error("search", "--%s: '%s' is not a whole number in %lld..%lld", opt, value, lo, hi);
	return 0;
}

static int parse_args(int argc, char **argv, search_args *a)
{
	static const struct option longopts[] = {
		{"text", required_argument, NULL, 'x'},       {"tokens", required_argument, NULL, 'k'},
		{"calib", required_argument, NULL, 'c'},
		{"budget", required_argument, NULL, 'b'},     {"experts", required_argument, NULL, 'e'},
		{"out", required_argument, NULL, 'o'},        {"json", required_argument, NULL, 'j'},
		{"method", required_argument, NULL, 'm'},     {"linkage", required_argument, NULL, 'l'},
		{"similarity", required_argument, NULL, 's'}, {"confirm", required_argument, NULL, 'C'},
		{"samples", required_argument, NULL, 'S'},    {"candidates", required_argument, NULL, 'N'},
		{"seed", required_argument, NULL, 'r'},       {"time-limit", required_argument, NULL, 't'},
		{"seq-len", required_argument, NULL, 'q'},    {"max-tokens", required_argument, NULL, 'M'},
		{"svg", required_argument, NULL, 'v'},        {"help", no_argument, NULL, 'h'},
		OPT_MERGE_LONGOPTS,
		{NULL, 0, NULL, 0},
	};
	a->so = srch_defaults();
	char msg[256];
	long long v = 0;
	int c, rc = 0, iv = 0;
	optind = 0;
	opterr = 0;
	while (rc == 0 && (c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'x': a->text = optarg; break;
		case 'k': a->tokens = optarg; break;
		case 'c': a->calib = optarg; break;
		case 'o': a->out = optarg; break;
		case 'j': a->json = optarg; break;
		case 'v': a->svg = optarg; break;
		case 'b':
			if (cli_parse_double(optarg, 1e-9, 1.0, &a->budget) != 0)
				return cli_usage_error("search", "--budget: '%s' is not a fraction in (0, 1]", optarg);
			break;
		case 'e': rc = whole("experts", optarg, 1, 1LL << 30, &a->experts); break;
		case 'm': rc = choice("method", optarg, grp_method_parse(optarg), &iv); a->so.po.method = iv; break;
		case 'l': rc = choice("linkage", optarg, grp_linkage_parse(optarg), &iv); a->so.po.linkage = iv; break;
		case 's':
			rc = choice("similarity", optarg, sim_base_parse(optarg), &iv);
			a->so.po.base = iv;
			a->base_given = 1;
			break;
		case 'C': rc = whole("confirm", optarg, 1, 64, &v); a->so.confirm = (int)v; break;
		case 'S': rc = whole("samples", optarg, 0, 64, &v); a->so.samples = (int)v; break;
		case 'N': rc = whole("candidates", optarg, 2, 4096, &v); a->so.max_candidates = (int)v; break;
		case 'r': rc = whole("seed", optarg, 0, 1LL << 62, &v); a->so.seed = (uint64_t)v; break;
		case 'q': rc = whole("seq-len", optarg, 1, 1 << 30, &a->seq_len); break;
		case 'M': rc = whole("max-tokens", optarg, 1, 1LL << 40, &a->max_tokens); break;
		case 't':
			if (cli_parse_double(optarg, 1e-3, 1e9, &a->so.time_limit) != 0)
				return cli_usage_error("search", "--time-limit: '%s' is not a number of seconds > 0", optarg);
			break;
		default: rc = opt_other("search", c, argv, &a->so.mo);
		}
	}
	if (rc != 0 || (rc = opt_model("search", argc, argv, &a->model)) != 0)
		return rc;
	if (!!a->text + !!a->tokens + !!a->calib != 1)
		return cli_usage_error("search", "give exactly one of --text FILE, --tokens FILE and --calib C");
	if ((a->budget > 0) == (a->experts > 0))
		return cli_usage_error("search", "give exactly one of --budget B and --experts N");
	if (!a->out)
		return cli_usage_error("search", "--out is required");
	if (opt_merge_check(&a->so.mo, msg, sizeof msg) != 0)
		return cli_usage_error("search", "%s", msg);
	/* HC-SMoE clusters on expert outputs unless told otherwise, as `moescope plan` does. */
	if (a->so.po.method == GRP_HC && !a->base_given)
		a->so.po.base = SIM_EXPERT_OUTPUT;
	return 0;
}

static void show_progress(void *ctx, const char *stage, int done, int total)
{
	(void)ctx;
	cli_progress(stage, done, total);
}

static void print_groups(const srch_result *r, const int *g)
{
	for (int b = 0; b < r->n_blocks; b++)
		printf("%s%d", b ? "," : "", g[b]);
}

static void print_result(const srch_result *r, const char *out)
{
	const int total = r->n_blocks * r->n_experts;
	printf("budget %d of %d experts (%.1f%%), %d blocks of %d; %lld held-out tokens, original ppl %.6g\n", r->keep,
	       total, 100.0 * r->keep / total, r->n_blocks, r->n_experts, (long long)r->held_tokens, r->ppl_original);
	printf("%-9s %7s %12s %12s %10s %7s  groups per block\n", "", "experts", "proxy", "KL", "ppl", "top-1");
	for (int i = 0; i < r->n_cand; i++) {
		const srch_candidate *cd = &r->cand[i];
		if (!cd->confirmed)
			continue;
		const char *name = i == r->best ? "searched" : srch_kind_name(cd->kind);
		printf("%-9s %7d %12.6g %12.6g %10.6g %7.4f  ", name, cd->kept, cd->proxy, cd->kl, cd->ppl, cd->top1);
		print_groups(r, cd->groups);
		if (i == r->best && cd->kind != SRCH_PROXY)
			printf("  (the %s allocation)", srch_kind_name(cd->kind));
		putchar('\n');
	}
	printf("proxy vs KL: Spearman %.3f over %d allocations; %d blocks merged for the proxy, %d forward passes%s\n",
	       r->spearman, r->n_ranked, r->merges, r->forwards, r->timed_out ? "; stopped at the time limit" : "");
	printf("plan written to %s\n", out);
}

static cJSON *groups_json(const srch_result *r, const int *g)
{
	cJSON *a = cJSON_CreateArray();
	for (int b = 0; a && b < r->n_blocks; b++)
		cJSON_AddItemToArray(a, cJSON_CreateNumber(g[b]));
	return a;
}

static void add_number(cJSON *o, const char *key, double v)
{
	if (isnan(v))
		cJSON_AddNullToObject(o, key);
	else
		cJSON_AddNumberToObject(o, key, v);
}

static cJSON *report_json(const mdl_model *m, const srch_result *r)
{
	cJSON *j = cJSON_CreateObject();
	cJSON_AddNumberToObject(j, "budget_experts", r->keep);
	cJSON_AddNumberToObject(j, "total_experts", r->n_blocks * r->n_experts);
	cJSON_AddNumberToObject(j, "held_out_tokens", (double)r->held_tokens);
	cJSON_AddNumberToObject(j, "ppl_original", r->ppl_original);
	add_number(j, "spearman", r->spearman);
	cJSON_AddNumberToObject(j, "ranked", r->n_ranked);
	cJSON_AddNumberToObject(j, "merges", r->merges);
	cJSON_AddNumberToObject(j, "forward_passes", r->forwards);
	cJSON_AddBoolToObject(j, "timed_out", r->timed_out);
	cJSON *labels = cJSON_AddArrayToObject(j, "blocks");
	for (int b = 0; b < r->n_blocks; b++)
		cJSON_AddItemToArray(labels, cJSON_CreateString(m->blocks[b].label));
	cJSON *cands = cJSON_AddArrayToObject(j, "allocations");
	for (int i = 0; i < r->n_cand; i++) {
		const srch_candidate *cd = &r->cand[i];
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "kind", srch_kind_name(cd->kind));
		cJSON_AddBoolToObject(o, "best", i == r->best);
		cJSON_AddItemToObject(o, "groups", groups_json(r, cd->groups));
		cJSON_AddNumberToObject(o, "experts", cd->kept);
		add_number(o, "proxy", cd->proxy);
		cJSON_AddBoolToObject(o, "confirmed", cd->confirmed);
		add_number(o, "kl", cd->kl);
		add_number(o, "ppl", cd->ppl);
		add_number(o, "top1_agreement", cd->top1);
		cJSON_AddItemToArray(cands, o);
	}
	cJSON *px = cJSON_AddArrayToObject(j, "proxy");   /* [block][G - 1] */
	for (int b = 0; b < r->n_blocks; b++) {
		cJSON *row = cJSON_CreateArray();
		for (int G = 1; G <= r->n_experts; G++) {
			const double v = r->proxy[(size_t)b * r->n_experts + G - 1];
			cJSON_AddItemToArray(row, isnan(v) ? cJSON_CreateNull() : cJSON_CreateNumber(v));
		}
		cJSON_AddItemToArray(px, row);
	}
	return j;
}

/* The tokens of a calibration set written by `moescope capture`: its token_ids, one sequence per run of equal
 * segment_ids (one sequence without them). */
static ms_status calib_token_set(const calib *cal, tok_set *tok, ms_error *err)
{
	memset(tok, 0, sizeof *tok);
	int32_t *ids = NULL, *seg = NULL;
	int64_t T = 0;
	ms_status st = calib_load_token_ids(cal, &ids, &T, err);
	if (st == MS_OK && calib_has_segments(cal)) {
		seg = malloc((size_t)T * sizeof *seg);
		st = seg ? calib_load_segments(cal, seg, T, err) : ms_fail(err, MS_ERR_NOMEM, "out of memory");
	}
	int64_t *start = st == MS_OK ? malloc((size_t)(T + 1) * sizeof *start) : NULL;
	if (st == MS_OK && !start)
		st = ms_fail(err, MS_ERR_NOMEM, "out of memory");
	if (st != MS_OK) {
		free(ids);
		free(seg);
		return st;
	}
	int n = 0;
	for (int64_t t = 0; t < T; t++)
		if (t == 0 || (seg && seg[t] != seg[t - 1]))
			start[n++] = t;
	start[n] = T;
	free(seg);
	*tok = (tok_set){.T = T, .ids = ids, .n_seq = n, .seq_start = start};
	return MS_OK;
}

int cmd_search(int argc, char **argv)
{
	search_args a = {0};
	int rc = parse_args(argc, argv, &a);
	if (rc != 0)
		return rc < 0 ? CLI_OK : rc;
	mdl_model *m;
	calib *cal = NULL;
	if (opt_open(a.model, a.calib, &m, a.calib ? &cal : NULL))
		return CLI_USER_ERROR;
	ms_error err = {0};
	arch_model *arch = NULL;
	tok_set tok = {0};
	srch_cache *cache = NULL;
	srch_result r = {0};
	const int total = m->n_blocks * m->n_experts;
	a.so.keep = a.experts > 0 ? (int)a.experts : (int)floor(a.budget * total + 1e-9);
	a.so.progress = show_progress;
	ms_status st = arch_open(m, &arch, &err);
	if (st == MS_OK && cal)
		st = calib_token_set(cal, &tok, &err);
	else if (st == MS_OK)
		st = fwd_read_input(arch, a.text, a.tokens, (int)a.seq_len, a.max_tokens, &tok, &err);
	if (st == MS_OK)
		st = srch_cache_new(arch, &tok, &cache, &err);
	if (st == MS_OK)
		st = srch_run(cache, &a.so, &r, &err);
	int have_result = st == MS_OK;
	if (st == MS_OK)
		st = plan_write_csv(a.out, &r.plan, &err);
	if (st == MS_OK && a.json) {
		cJSON *j = report_json(m, &r);
		st = j ? jsonf_write(a.json, j, &err) : ms_fail(&err, MS_ERR_NOMEM, "out of memory");
		cJSON_Delete(j);
	}
	if (st == MS_OK && a.svg) {
		char *svg = srch_chart_svg(&r);
		st = svg ? jsonf_write_text(a.svg, svg, &err) : ms_fail(&err, MS_ERR_NOMEM, "out of memory");
		free(svg);
	}
	if (st == MS_OK)
		print_result(&r, a.out);
	if (have_result)
		srch_result_free(&r);
	srch_cache_free(cache);
	tokset_free(&tok);
	arch_close(arch);
	opt_close(m, cal);
	return st == MS_OK ? CLI_OK : cli_report(&err);
}
