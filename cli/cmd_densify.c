/* `moescope densify IN --out DIR [--max-shard-size S] [--force]`: a factored checkpoint (merge --compress-format
 * factors) back to a stock dense one that transformers loads. */
#include <getopt.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "pipeline/densify.h"

/* Set by SIGINT or SIGTERM (lock-free, so the store is async-signal-safe); densify then removes its temporary
 * directory. */
static atomic_int densify_cancel;

static void on_signal(int sig)
{
	(void)sig;
	atomic_store(&densify_cancel, 1);
}

int cmd_densify(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"out", required_argument, NULL, 'o'}, {"max-shard-size", required_argument, NULL, 'S'},
		{"force", no_argument, NULL, 'f'},     {"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	dens_request req = {.max_shard_bytes = 5000000000ULL};
	int c;
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'o': req.out_dir = optarg; break;
		case 'f': req.force = 1; break;
		case 'h': return cli_help("densify");
		case 'S':
			if (cli_parse_size(optarg, &req.max_shard_bytes) != 0)
				return cli_usage_error("densify", "--max-shard-size: '%s' is not a size like 5GB", optarg);
			break;
		default: return opt_other("densify", c, argv, NULL);
		}
	}
	if (optind != argc - 1)
		return cli_usage_error("densify", "one factored checkpoint IN expected");
	req.in_dir = argv[optind];
	if (!req.out_dir)
		return cli_usage_error("densify", "--out is required");
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGXFSZ, SIG_IGN);   /* a file-size limit is a failed write, and the temporary directory is removed */
	req.cancel = &densify_cancel;
	dens_summary sum;
	ms_error err = {0};
	if (dens_run(&req, &sum, &err) != MS_OK)
		return cli_report(&err);
	printf("wrote %s: %s, %d matrices rebuilt from their factors, %.1f MB -> %.1f MB\n", req.out_dir, sum.model_type,
	       sum.matrices, sum.bytes_before / 1e6, sum.bytes_after / 1e6);
	return CLI_OK;
}
