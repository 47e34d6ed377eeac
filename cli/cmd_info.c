/* `moescope info MODEL [--json]`: what a checkpoint is, as moescope sees it: family, MoE blocks, E, top-k,
 * shapes, routing, dtypes, parameters and bytes. */
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "io/factors.h"
#include "io/model.h"
#include "cli/cli.h"
#include "cli/commands.h"
#include "pipeline/report.h"

static const char *const act_text[] = {
	[MDL_ACT_SILU_GLU] = "SiLU GLU: down(silu(gate x) * up x)",
	[MDL_ACT_RELU] = "ReLU: down relu(up x), no gate",
	[MDL_ACT_CLAMPED_SWIGLU] = "clamped SwiGLU with biases: down((clamp(up x) + 1) * swish_1.702(min(gate x, 7)))",
};

/* "1.50 GiB" / "12.3 M": a size people can read beside the exact count. */
static void human(char *buf, size_t len, double v, double base, const char *const *units, int n_units)
{
	int u = 0;
	while (v >= base && u < n_units - 1) {
		v /= base;
		u++;
	}
	snprintf(buf, len, u ? "%.2f %s" : "%.0f%s", v, units[u]);
}

static void human_bytes(char *buf, size_t len, uint64_t n)
{
	static const char *const units[] = {" B", "KiB", "MiB", "GiB", "TiB"};
	human(buf, len, (double)n, 1024.0, units, 5);
}

static void human_count(char *buf, size_t len, uint64_t n)
{
	static const char *const units[] = {"", "K", "M", "B", "T"};
	human(buf, len, (double)n, 1000.0, units, 5);
}

static void routing_text(const mdl_model *m, char *buf, size_t len)
{
	const mdl_routing *r = &m->routing;
	int n = r->score == MDL_SCORE_SIGMOID
			? snprintf(buf, len, "sigmoid scores of %d experts, top-%d by score + bias", m->n_experts, r->top_k)
			: snprintf(buf, len, "softmax over %d experts%s, top-%d", m->n_experts,
				   m->n_blocks > 0 && m->blocks[0].router_bias ? " (logits + router bias)" : "", r->top_k);
	if (n >= 0 && (size_t)n < len && r->n_group > 1 && r->topk_group < r->n_group)
		n += snprintf(buf + n, len - (size_t)n, " within the best %d of %d groups", r->topk_group, r->n_group);
	if (n < 0 || (size_t)n >= len)
		return;
	if (m->routing.renormalize)
		n += snprintf(buf + n, len - (size_t)n, ", renormalised");
	if (m->routing.scale != 1.0f && n >= 0 && (size_t)n < len)
		snprintf(buf + n, len - (size_t)n, ", times %g", (double)m->routing.scale);
}

/* Block labels, wrapped under the value column. */
static void print_labels(const mdl_model *m)
{
	printf("%-14s%d:", "MoE blocks", m->n_blocks);
	int col = 18;
	for (int b = 0; b < m->n_blocks; b++) {
		int w = (int)strlen(m->blocks[b].label) + 1;
		if (col + w > 100) {
			printf("\n%-14s", "");
			col = 14;
		}
		printf(" %s", m->blocks[b].label);
		col += w;
	}
	putchar('\n');
}

static void print_amount(const char *what, uint64_t params, uint64_t bytes)
{
	char p[32], b[32];
	human_count(p, sizeof p, params);
	human_bytes(b, sizeof b, bytes);
	printf("%-14s%llu params (%s), %llu bytes (%s)\n", what, (unsigned long long)params, p,
	       (unsigned long long)bytes, b);
}

static void print_human(const mdl_model *m)
{
	char routing[160];
	routing_text(m, routing, sizeof routing);
	printf("%-14s%s (%zu safetensors file%s)\n", "model", m->dir, st_shard_count(m->st),
	       st_shard_count(m->st) == 1 ? "" : "s");
	printf("%-14s%s\n", "family", m->model_type);
	printf("%-14s%d\n", "layers", m->n_layers);
	print_labels(m);
	printf("%-14s%d per block, top-%d\n", "experts", m->n_experts, m->top_k);
	printf("%-14s%d (d)\n", "hidden size", m->hidden);
	printf("%-14s%d (f)\n", "expert width", m->inter);
	printf("%-14s%s\n", "activation", act_text[m->act]);
	printf("%-14s%s\n", "routing", routing);
	printf("%-14s%s\n", "expert dtype", st_dtype_name(m->expert_dtype));
	static const char *const layouts[] = {
		[MDL_LAYOUT_PER_EXPERT] = "one tensor per expert and matrix",
		[MDL_LAYOUT_FUSED] = "fused 3-D tensors (gate_up_proj, down_proj)",
		[MDL_LAYOUT_INTERLEAVED] = "interleaved 3-D tensors [in, out] with biases (gate_up_proj, down_proj)",
	};
	if (m->expert_dtype == ST_U8)   /* gpt-oss's MXFP4 release stores its interleaved experts transposed */
		printf("%-14s%s\n", "expert layout", "interleaved 3-D tensors [out, in] with biases (gate_up_proj_blocks, "
		       "down_proj_blocks and their _scales)");
	else
		printf("%-14s%s\n", "expert layout", layouts[m->layout]);
	if (m->quant.scheme == QT_FP8)
		printf("%-14sfp8: F8_E4M3 times weight_scale_inv per %d x %d block\n", "quantization", m->quant.block[0],
		       m->quant.block[1]);
	else if (m->quant.scheme != QT_NONE)
		printf("%-14s%s\n", "quantization", qt_scheme_names[m->quant.scheme]);
	print_amount("experts", m->params_experts, m->bytes_experts);
	print_amount("total", m->params_total, m->bytes_total);
}

/* Prints j (NULL when building it ran out of memory) as JSON on stdout and deletes it. */
static int print_json(cJSON *j)
{
	char *text = j ? cJSON_Print(j) : NULL;
	cJSON_Delete(j);
	if (!text) {
		ms_error err;
		ms_fail(&err, MS_ERR_NOMEM, "info: out of memory writing JSON");
		return cli_report(&err);
	}
	puts(text);
	cJSON_free(text);
	return CLI_OK;
}

/* A factored checkpoint is not a model moescope (or transformers) opens: say what it is and how to load it. */
static int print_factored(const char *dir, const fac_info *f, int json)
{
	char load[600];
	snprintf(load, sizeof load, "stock loaders refuse it (model_type \"%s\"); 'moescope densify %s --out DIR' writes "
		 "a dense %s checkpoint that transformers loads", MDL_FACTORS_MODEL_TYPE, dir, f->model_type);
	if (json) {
		cJSON *j = cJSON_CreateObject();
		cJSON_AddStringToObject(j, "model", dir);
		cJSON_AddStringToObject(j, "format", "factors");
		cJSON_AddStringToObject(j, "model_type", f->model_type);
		cJSON_AddStringToObject(j, "rank_mode", f->rank_mode);
		cJSON_AddNumberToObject(j, "sparse_ratio", f->sparse_ratio);
		cJSON_AddStringToObject(j, "load", load);
		return print_json(j);
	}
	printf("%-14s%s\n", "model", dir);
	printf("%-14s%s\n", "format", "factors (merge --compress-format factors): W = W_u @ W_v plus a sparse residual");
	printf("%-14s%s\n", "family", f->model_type);
	printf("%-14s%s, sparse ratio %g\n", "compression", f->rank_mode, f->sparse_ratio);
	printf("%-14s%s\n", "loading", load);
	return CLI_OK;
}

int cmd_info(int argc, char **argv)
{
	const char *dir = NULL;
	int json = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
			return cli_help("info");
		if (strcmp(argv[i], "--json") == 0)
			json = 1;
		else if (argv[i][0] == '-' && argv[i][1])
			return cli_usage_error("info", "unknown option '%s'", argv[i]);
		else if (dir)
			return cli_usage_error("info", "one MODEL only ('%s' given after '%s')", argv[i], dir);
		else
			dir = argv[i];
	}
	if (!dir)
		return cli_usage_error("info", "MODEL directory missing");
	ms_error err = {0};
	fac_info factored;
	int probe = fac_probe(dir, &factored, &err);
	if (probe < 0)
		return cli_report(&err);
	mdl_model *m = NULL;
	if (!probe && mdl_open(dir, &m, &err) != MS_OK)
		return cli_report(&err);
	int rc = CLI_OK;
	if (probe)
		rc = print_factored(dir, &factored, json);
	else if (json)
		rc = print_json(report_model(m));
	else
		print_human(m);
	mdl_close(m);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		ms_fail(&err, MS_ERR_IO, "info: cannot write to standard output");
		return cli_report(&err);
	}
	return rc;
}
