#include "cli/options.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

int opt_open(const char *model_dir, const char *calib_path, mdl_model **m, calib **cal)
{
	ms_error err = {0};
	*m = NULL;
	if (cal)
		*cal = NULL;
	if (mdl_open(model_dir, m, &err) != MS_OK)
		return cli_report(&err);
	if (calib_path && calib_open(calib_path, *m, cal, &err) != MS_OK) {
		mdl_close(*m);
		*m = NULL;
		return cli_report(&err);
	}
	return 0;
}

void opt_close(mdl_model *m, calib *cal)
{
	if (cal)
		calib_close(cal);
	if (m)
		mdl_close(m);
}

int opt_plan_init(const mdl_model *m, plan *p)
{
	const char **labels = mdl_block_labels(m);
	int rc = labels ? plan_init(p, m->n_blocks, m->n_experts, labels) : -1;
	free(labels);
	if (rc != 0) {
		fprintf(stderr, "moescope: out of memory\n");
		return 1;
	}
	return 0;
}

int opt_plan_read(const mdl_model *m, const char *path, plan *p)
{
	ms_error err = {0};
	const char **labels = mdl_block_labels(m);
	if (!labels) {
		fprintf(stderr, "moescope: out of memory\n");
		return 1;
	}
	ms_status st = plan_read_csv(path, m->n_blocks, m->n_experts, labels, p, &err);
	free(labels);
	return st == MS_OK ? 0 : cli_report(&err);
}

/* Marks the blocks one item of --layers names: a label, or a range A-B of layer numbers. */
static int mark_layers(const mdl_model *m, const char *item, unsigned char *merge)
{
	int found = 0;
	long long lo, hi;
	const char *dash = strchr(item, '-');
	int is_range = 0;
	if (dash && dash != item) {
		char a[32] = {0};
		size_t n = (size_t)(dash - item);
		if (n < sizeof a) {
			memcpy(a, item, n);
			is_range = cli_parse_int(a, 0, 1 << 30, &lo) == 0 && cli_parse_int(dash + 1, 0, 1 << 30, &hi) == 0;
		}
	}
	for (int b = 0; b < m->n_blocks; b++) {
		const mdl_block *blk = &m->blocks[b];
		int hit = is_range ? (blk->layer >= lo && blk->layer <= hi && strchr(blk->label, '.') == NULL)
				   : strcmp(blk->label, item) == 0;
		if (hit) {
			merge[b] = 1;
			found = 1;
		}
	}
	return found;
}

int opt_parse_layers(const mdl_model *m, const char *list, unsigned char *merge, char *msg, size_t len)
{
	memset(merge, 0, (size_t)m->n_blocks);
	char *copy = strdup(list);
	if (!copy) {
		snprintf(msg, len, "out of memory");
		return -1;
	}
	int rc = 0;
	char *save = NULL;
	for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
		if (!mark_layers(m, item, merge)) {
			snprintf(msg, len, "--layers: the model has no MoE block '%s'", item);
			rc = -1;
			break;
		}
	}
	free(copy);
	return rc;
}

const char *const opt_merge_option_names[] = {
	"layout", "router", "align", "weighting", "rank", "rank-energy", "rank-stable", "sparse-ratio", "refit", NULL,
};

/* Parses `value` against a name table; -1 with a message listing the choices when it is none of them. */
static int parse_choice(const char *opt, const char *value, const char *const *names, int n, char *msg, size_t len)
{
	int i = names_index(names, n, value);
	if (i >= 0)
		return i;
	int off = snprintf(msg, len, "--%s: '%s' is not one of", opt, value);
	for (i = 0; i < n && off > 0 && (size_t)off < len; i++)
		off += snprintf(msg + off, len - (size_t)off, " %s", names[i]);
	return -1;
}

static int parse_rank_option(const char *name, const char *value, cmp_options *c, char *msg, size_t len)
{
	long long r;
	double v;
	if (strcmp(name, "rank") == 0) {
		if (cli_parse_int(value, 1, 1 << 30, &r) != 0)
			return snprintf(msg, len, "--rank: '%s' is not a whole number >= 1", value), -1;
		if (c->mode != CMP_RANK_NONE)
			return snprintf(msg, len, "--rank, --rank-energy and --rank-stable exclude each other"), -1;
		c->mode = CMP_RANK_FIXED;
		c->rank = (int)r;
	} else if (strcmp(name, "rank-energy") == 0) {
		if (cli_parse_double(value, 1e-9, 1.0, &v) != 0)
			return snprintf(msg, len, "--rank-energy: '%s' is not a number in (0, 1]", value), -1;
		if (c->mode != CMP_RANK_NONE)
			return snprintf(msg, len, "--rank, --rank-energy and --rank-stable exclude each other"), -1;
		c->mode = CMP_RANK_ENERGY;
		c->energy = v;
	} else if (strcmp(name, "rank-stable") == 0) {
		if (cli_parse_double(value, 1e-9, 1e9, &v) != 0)
			return snprintf(msg, len, "--rank-stable: '%s' is not a positive number", value), -1;
		if (c->mode != CMP_RANK_NONE)
			return snprintf(msg, len, "--rank, --rank-energy and --rank-stable exclude each other"), -1;
		c->mode = CMP_RANK_STABLE;
		c->stable_k = v;
	} else {
		if (cli_parse_double(value, 0.0, 1.0, &v) != 0)
			return snprintf(msg, len, "--sparse-ratio: '%s' is not a number in [0, 1]", value), -1;
		c->sparse_ratio = v;
	}
	return 1;
}

int opt_merge_option(const char *name, const char *value, pipe_merge_options *o, char *msg, size_t len)
{
	int v;
	if (strcmp(name, "layout") == 0) {
		if ((v = parse_choice(name, value, pipe_layout_names, PIPE_LAYOUT_COUNT, msg, len)) < 0)
			return -1;
		o->layout = (pipe_layout)v;
	} else if (strcmp(name, "router") == 0) {
		if ((v = parse_choice(name, value, rfit_method_names, RFIT_METHOD_COUNT, msg, len)) < 0)
			return -1;
		o->router = (rfit_method)v;
	} else if (strcmp(name, "align") == 0) {
		if ((v = parse_choice(name, value, align_ref_names, ALIGN_COUNT, msg, len)) < 0)
			return -1;
		o->align = (align_ref)v;
	} else if (strcmp(name, "weighting") == 0) {
		if ((v = parse_choice(name, value, merge_weighting_names, MERGE_WEIGHTING_COUNT, msg, len)) < 0)
			return -1;
		o->weighting = (merge_weighting)v;
	} else if (strcmp(name, "refit") == 0) {
		if ((v = parse_choice(name, value, pipe_refit_names, PIPE_REFIT_COUNT, msg, len)) < 0)
			return -1;
		o->refit = (pipe_refit)v;
	} else if (strncmp(name, "rank", 4) == 0 || strcmp(name, "sparse-ratio") == 0) {
		return parse_rank_option(name, value, &o->compress, msg, len);
	} else {
		return 0;
	}
	return 1;
}

int opt_merge_check(const pipe_merge_options *o, char *msg, size_t len)
{
	if (o->compress.sparse_ratio > 0 && o->compress.mode == CMP_RANK_NONE) {
		snprintf(msg, len, "--sparse-ratio needs a rank (--rank, --rank-energy or --rank-stable)");
		return -1;
	}
	return 0;
}

int opt_other(const char *cmd, int c, char **argv, pipe_merge_options *mo)
{
	char msg[256];
	if (mo && c >= OPT_MERGE_BASE) {
		if (opt_merge_option(opt_merge_option_names[c - OPT_MERGE_BASE], optarg, mo, msg, sizeof msg) < 0)
			return cli_usage_error(cmd, "%s", msg);
		return 0;
	}
	if (c == 'h')
		return cli_help(cmd) - 1;
	return cli_usage_error(cmd, "unknown or incomplete option '%s'", argv[optind - 1]);
}

int opt_model(const char *cmd, int argc, char **argv, const char **model)
{
	if (optind != argc - 1)
		return cli_usage_error(cmd, "one MODEL expected");
	*model = argv[optind];
	return 0;
}

int opt_eval_tokens(const char *cmd, const char *value, long long *out)
{
	if (cli_parse_int(value, 1, 1LL << 31, out) != 0)
		return cli_usage_error(cmd, "--eval-tokens: '%s' is not a whole number >= 1", value);
	return 0;
}

void opt_name_block(ms_error *err, const char *label)
{
	char prefix[48];
	int n = snprintf(prefix, sizeof prefix, "block %s", label);
	if (n > 0 && (size_t)n < sizeof prefix && (strncmp(err->msg, prefix, (size_t)n) != 0 || err->msg[n] != ':'))
		ms_error_prefix(err, prefix);
}
