/* moescope's entry point: the command table and dispatch. */
#include <locale.h>
#include <stdio.h>
#include <string.h>

#include "analysis/par.h"
#include "cli/blas.h"
#include "cli/cli.h"
#include "cli/commands.h"

const cli_command cli_commands[] = {
	{"info", cmd_info, "info MODEL [--json]",
	 "Describe a checkpoint: family, MoE blocks, experts, top-k, shapes, dtypes, bytes."},
	{"analyze", cmd_analyze, "analyze MODEL --calib C [--similarity B[,B...]|all] [--json OUT]",
	 "Routing statistics, similarity (router-logits by default) and stable ranks of every MoE block."},
	{"plan", cmd_plan,
	 "plan MODEL --calib C --groups G [--global] [--method M] [--linkage L] [--similarity B] [--layers LIST] "
	 "--out PLAN.csv",
	 "Group the experts of every block (M-SMoE, HC-SMoE or a pruning baseline) and write the plan CSV."},
	{"eval", cmd_eval,
	 "eval MODEL --calib C [--plan PLAN.csv] [--layout L] [--router R] [--refit F] [--align A] [--weighting W] "
	 "[--rank R | --rank-energy E | --rank-stable K] [--sparse-ratio S] [--eval-tokens N] [--json OUT]",
	 "Output error, routing agreement, parameters and FLOPs of a plan per block; without a plan, MEO."},
	{"merge", cmd_merge,
	 "merge MODEL --plan PLAN.csv --out DIR [--calib C] [--layout L] [--router R] [--refit F] [--align A] [--weighting W] "
	 "[--rank R | --rank-energy E | --rank-stable K] [--sparse-ratio S] [--compress-format F] [--max-shard-size S] "
	 "[--force] [--eval-tokens N]",
	 "Write the merged checkpoint (a new directory that Hugging Face transformers loads)."},
	{"densify", cmd_densify, "densify IN --out DIR [--max-shard-size S] [--force]",
	 "Rebuild a --compress-format factors checkpoint as a stock dense one (W = W_u @ W_v + residual)."},
	{"capture", cmd_capture,
	 "capture MODEL (--text FILE | --tokens FILE) --out CALIB.safetensors [--seq-len N] [--max-tokens N]",
	 "Run the model forward on the CPU and write the calibration set (every MoE block's input)."},
	{"perplexity", cmd_perplexity,
	 "perplexity MODEL (--text FILE | --tokens FILE) [--seq-len N] [--max-tokens N] [--plan PLAN.csv] "
	 "[--layout L] [--router R] [--refit F] [--align A] [--weighting W] [--rank R | --rank-energy E | --rank-stable K] "
	 "[--sparse-ratio S] [--json OUT]",
	 "Next-token NLL and perplexity; with a plan, the merged model beside the original (KL, top-1 agreement)."},
	{"search", cmd_search,
	 "search MODEL (--text FILE | --tokens FILE | --calib C) (--budget B | --experts N) --out PLAN.csv [--method M] "
	 "[--linkage L] [--similarity B] [--confirm K] [--samples S] [--candidates N] [--seed S] [--time-limit S] "
	 "[--seq-len N] [--max-tokens N] [--layout L] [--router R] [--refit F] [--align A] [--weighting W] "
	 "[--rank R | --rank-energy E | --rank-stable K] [--sparse-ratio S] [--json OUT] [--svg OUT]",
	 "The group count of every block that keeps the merged model closest to the original (least KL on held-out "
	 "tokens) within a budget of experts, beside uniform G and MC-SMoE's global allocation."},
	{"tokenize", cmd_tokenize, "tokenize TOKENIZER --text FILE [--special] [--decode [--skip-special]]",
	 "Token ids of a text file for a model's tokenizer.json (or a model directory), as Hugging Face tokenizers "
	 "gives them; --special adds the post-processor's special tokens; --decode turns a file of ids back into text."},
	{"tui", cmd_tui, "tui MODEL [CALIB] [--text FILE | --tokens FILE] [--script FILE] [--dump FILE] [--size WxH] [--no-color] [--ascii] [--list-keys]",
	 "The interactive application (also `moescope MODEL [CALIB]`); --script runs keys from a file without a terminal."},
	{"samples", cmd_samples, "samples DIR [--only NAME]",
	 "Write the sample models and calibration sets (mixtral-tiny, olmoe-mini, qwen2moe-tiny, switch-tiny)."},
};
const int cli_command_count = (int)(sizeof cli_commands / sizeof cli_commands[0]);

static void print_usage(FILE *out)
{
	fprintf(out, "usage: moescope COMMAND [ARGS]\n       moescope MODEL [CALIB]\n\ncommands:\n");
	for (int i = 0; i < cli_command_count; i++)
		fprintf(out, "  %-60s\n      %s\n", cli_commands[i].synopsis, cli_commands[i].summary);
	fprintf(out, "\n%s\n\n`moescope COMMAND --help` describes one command; `moescope --version` gives the version "
		"and the BLAS kernels in use.\n", cli_threads_help);
}

/* --threads N (or --threads=N) works with every command and the application, so it is taken out of argv here,
 * before a command parses the rest. Returns 0, or -1 for a missing or bad count (*bad names it). */
static int take_threads(int *argc, char **argv, int *threads, const char **bad)
{
	int out = 1;
	for (int i = 1; i < *argc; i++) {
		const char *value = NULL;
		if (strcmp(argv[i], "--threads") == 0) {
			value = i + 1 < *argc ? argv[++i] : "";
		} else if (strncmp(argv[i], "--threads=", 10) == 0) {
			value = argv[i] + 10;
		} else {
			argv[out++] = argv[i];
			continue;
		}
		long long n;
		if (cli_parse_int(value, 1, PAR_MAX_THREADS, &n) != 0) {
			*bad = value;
			return -1;
		}
		*threads = (int)n;
	}
	*argc = out;
	argv[out] = NULL;
	return 0;
}

int main(int argc, char **argv)
{
	cli_pin_blas(argv); /* first: it may start the program again */
	/* Character classification and wide output from the locale, but numbers always with a decimal point. */
	setlocale(LC_CTYPE, "");
	int threads = 0;
	const char *bad = NULL;
	if (take_threads(&argc, argv, &threads, &bad) != 0) {
		fprintf(stderr, "moescope: --threads: '%s' is not a thread count (1..%d)\n", bad, PAR_MAX_THREADS);
		return CLI_USAGE;
	}
	par_set_threads(threads);
	if (argc < 2) {
		print_usage(stderr);
		return CLI_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
		print_usage(stdout);
		return CLI_OK;
	}
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
		cli_print_version(stdout);
		return CLI_OK;
	}
	for (int i = 0; i < cli_command_count; i++)
		if (strcmp(argv[1], cli_commands[i].name) == 0)
			return cli_commands[i].run(argc - 1, argv + 1);
	/* `moescope MODEL [CALIB]` is the interactive application. */
	return cmd_tui(argc, argv);
}
