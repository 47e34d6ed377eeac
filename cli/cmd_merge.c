/* `moescope merge MODEL --plan PLAN.csv --out DIR [--calib C] [merge options] [--compress-format F]
 * [--max-shard-size S] [--force]`: write the merged checkpoint. */
#include <getopt.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "pipeline/merge_run.h"
#include "cli/options.h"

/* Set by the handler, on whichever thread the signal lands (OpenBLAS may run threads of its own), and read by
 * the merge: lock-free (pipeline/merge_run.h asserts it), so the store is async-signal-safe. */
static atomic_int merge_cancel;

static void on_signal(int sig)
{
	(void)sig;
	atomic_store(&merge_cancel, 1);
}

/* SIGINT and SIGTERM ask the merge to stop (it then removes its temporary directory); SIGXFSZ is ignored so that
 * a file-size limit shows up as a failed write rather than killing the process with the directory left. */
static void install_signals(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGXFSZ, SIG_IGN);
}

typedef struct {
	const char *model, *calib, *plan_path;
	mrun_request req;
} merge_args;

static int parse_args(int argc, char **argv, merge_args *a)
{
	static const struct option longopts[] = {
		{"calib", required_argument, NULL, 'c'},   {"plan", required_argument, NULL, 'p'},
		{"out", required_argument, NULL, 'o'},     {"compress-format", required_argument, NULL, 'F'},
		{"max-shard-size", required_argument, NULL, 'S'}, {"force", no_argument, NULL, 'f'},
		{"eval-tokens", required_argument, NULL, 't'}, {"help", no_argument, NULL, 'h'},
		OPT_MERGE_LONGOPTS,                        {NULL, 0, NULL, 0},
	};
	a->req = mrun_request_defaults();
	char msg[256];
	long long n;
	int c, found, rc = 0;
	optind = 0;
	opterr = 0;
	while (rc == 0 && (c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'c': a->calib = optarg; break;
		case 'p': a->plan_path = optarg; break;
		case 'o': a->req.out_dir = optarg; break;
		case 'f': a->req.force = 1; break;
		case 'F':
			if ((found = names_index(mrun_format_names, MRUN_FORMAT_COUNT, optarg)) < 0)
				return cli_usage_error("merge", "--compress-format: '%s' is not dense or factors", optarg);
			a->req.format = (mrun_format)found;
			break;
		case 'S':
			if (cli_parse_size(optarg, &a->req.max_shard_bytes) != 0)
				return cli_usage_error("merge", "--max-shard-size: '%s' is not a size like 5GB", optarg);
			break;
		case 't': if ((rc = opt_eval_tokens("merge", optarg, &n)) == 0) a->req.eval_tokens = n; break;
		default: rc = opt_other("merge", c, argv, &a->req.opts);
		}
	}
	if (rc != 0 || (rc = opt_model("merge", argc, argv, &a->model)) != 0)
		return rc;
	if (!a->plan_path || !a->req.out_dir)
		return cli_usage_error("merge", "--plan and --out are required");
	if (opt_merge_check(&a->req.opts, msg, sizeof msg) != 0)
		return cli_usage_error("merge", "%s", msg);
	return 0;
}

static void show_progress(void *ctx, const char *stage, int done, int total)
{
	(void)ctx;
	cli_progress(stage, done, total);
}

int cmd_merge(int argc, char **argv)
{
	merge_args a = {0};
	int rc = parse_args(argc, argv, &a);
	if (rc != 0)
		return rc < 0 ? CLI_OK : rc;
	mdl_model *m;
	calib *cal;
	if (opt_open(a.model, a.calib, &m, &cal))
		return CLI_USER_ERROR;
	plan p = {0};
	if (opt_plan_read(m, a.plan_path, &p)) {
		opt_close(m, cal);
		return CLI_USER_ERROR;
	}
	a.req.plan = &p;
	install_signals();
	mrun_summary sum;
	ms_error err = {0};
	ms_status st = mrun_run(m, cal, &a.req, show_progress, NULL, &merge_cancel, &sum, &err);
	if (st == MS_OK) {
		printf("wrote %s: %d blocks, %d -> %d experts per block, %.1f MB -> %.1f MB", a.req.out_dir, sum.blocks,
		       sum.experts_before, sum.experts_after, sum.bytes_before / 1e6, sum.bytes_after / 1e6);
		if (cal)
			printf(", mean output error %.6f", sum.mean_rel_error);
		putchar('\n');
	}
	plan_free(&p);
	opt_close(m, cal);
	return st == MS_OK ? CLI_OK : cli_report(&err);
}
