#include "pipeline/report.h"

#include <math.h>

/* The --json names of mdl_act. */
static const char *const act_names[] = {[MDL_ACT_SILU_GLU] = "silu_glu", [MDL_ACT_RELU] = "relu",
						      [MDL_ACT_CLAMPED_SWIGLU] = "clamped_swiglu"};

void report_add_array(cJSON *obj, const char *key, const double *v, int n, int stride)
{
	cJSON *arr = cJSON_AddArrayToObject(obj, key);
	for (int i = 0; arr && i < n; i++) {
		double x = v[(size_t)i * stride];
		cJSON_AddItemToArray(arr, isfinite(x) ? cJSON_CreateNumber(x) : cJSON_CreateNull());
	}
}

void report_add_matrix(cJSON *obj, const char *key, const double *v, int n)
{
	cJSON *rows = cJSON_AddArrayToObject(obj, key);
	for (int i = 0; rows && i < n; i++) {
		cJSON *row = cJSON_CreateArray();
		for (int j = 0; row && j < n; j++) {
			double x = v[(size_t)i * n + j];
			cJSON_AddItemToArray(row, isfinite(x) ? cJSON_CreateNumber(x) : cJSON_CreateNull());
		}
		cJSON_AddItemToArray(rows, row);
	}
}

static cJSON *pair(uint64_t experts, uint64_t total)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddNumberToObject(o, "experts", (double)experts);
	cJSON_AddNumberToObject(o, "total", (double)total);
	return o;
}

cJSON *report_model(const mdl_model *m)
{
	cJSON *j = cJSON_CreateObject();
	cJSON_AddStringToObject(j, "model", m->dir);
	cJSON_AddStringToObject(j, "family", m->model_type);
	cJSON_AddNumberToObject(j, "layers", m->n_layers);
	cJSON *blocks = cJSON_AddArrayToObject(j, "moe_blocks");
	for (int b = 0; blocks && b < m->n_blocks; b++) {
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "label", m->blocks[b].label);
		cJSON_AddNumberToObject(o, "layer", m->blocks[b].layer);
		cJSON_AddStringToObject(o, "prefix", m->blocks[b].prefix);
		cJSON_AddItemToArray(blocks, o);
	}
	cJSON_AddNumberToObject(j, "n_experts", m->n_experts);
	cJSON_AddNumberToObject(j, "top_k", m->top_k);
	cJSON_AddNumberToObject(j, "hidden_size", m->hidden);
	cJSON_AddNumberToObject(j, "expert_intermediate_size", m->inter);
	cJSON_AddStringToObject(j, "activation", act_names[m->act]);
	cJSON *routing = cJSON_AddObjectToObject(j, "routing");
	cJSON_AddNumberToObject(routing, "top_k", m->routing.top_k);
	cJSON_AddBoolToObject(routing, "renormalize", m->routing.renormalize);
	cJSON_AddNumberToObject(routing, "scale", m->routing.scale);
	cJSON_AddStringToObject(routing, "score", m->routing.score == MDL_SCORE_SIGMOID ? "sigmoid" : "softmax");
	cJSON_AddNumberToObject(routing, "n_group", m->routing.n_group);
	cJSON_AddNumberToObject(routing, "topk_group", m->routing.topk_group);
	static const char *const layouts[] = {[MDL_LAYOUT_PER_EXPERT] = "per_expert", [MDL_LAYOUT_FUSED] = "fused",
					      [MDL_LAYOUT_INTERLEAVED] = "interleaved"};
	cJSON_AddStringToObject(j, "expert_layout", layouts[m->layout]);
	cJSON_AddStringToObject(j, "expert_dtype", st_dtype_name(m->expert_dtype));
	if (m->quant.scheme != QT_NONE)
		cJSON_AddStringToObject(j, "quantization", qt_scheme_names[m->quant.scheme]);
	cJSON_AddItemToObject(j, "params", pair(m->params_experts, m->params_total));
	cJSON_AddItemToObject(j, "bytes", pair(m->bytes_experts, m->bytes_total));
	cJSON_AddNumberToObject(j, "shards", (double)st_shard_count(m->st));
	return j;
}

cJSON *report_new(const mdl_model *m, const calib *cal)
{
	cJSON *r = cJSON_CreateObject();
	cJSON_AddStringToObject(r, "format", "moescope-report");
	cJSON_AddItemToObject(r, "model", report_model(m));
	if (cal) {
		cJSON *c = cJSON_AddObjectToObject(r, "calibration");
		cJSON_AddStringToObject(c, "path", calib_path(cal));
		cJSON *tokens = cJSON_AddArrayToObject(c, "tokens");
		for (int b = 0; tokens && b < m->n_blocks; b++)
			cJSON_AddItemToArray(tokens, cJSON_CreateNumber((double)calib_tokens(cal, b)));
	}
	cJSON_AddObjectToObject(r, "options");
	cJSON_AddArrayToObject(r, "blocks");
	return r;
}

cJSON *report_options(cJSON *report)
{
	return cJSON_GetObjectItemCaseSensitive(report, "options");
}

cJSON *report_block(cJSON *report, const mdl_model *m, int b)
{
	cJSON *blocks = cJSON_GetObjectItemCaseSensitive(report, "blocks");
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "label", m->blocks[b].label);
	cJSON_AddNumberToObject(o, "layer", m->blocks[b].layer);
	cJSON_AddItemToArray(blocks, o);
	return o;
}

void report_add_stats(cJSON *block, const pipe_stats *s)
{
	cJSON_AddNumberToObject(block, "tokens", (double)s->T);
	report_add_array(block, "frequency", s->frequency, s->E, 1);
	cJSON_AddNumberToObject(block, "usage_entropy_bits", s->usage_entropy);
	cJSON_AddNumberToObject(block, "usage_cv", s->cv);
	if (s->coact)
		report_add_matrix(block, "coactivation", s->coact, s->E);
	if (s->stable_rank) {
		static const char *const names[MDL_NMAT] = {"gate", "up", "down"};
		cJSON *sr = cJSON_AddObjectToObject(block, "stable_rank");
		for (int mat = 0; mat < MDL_NMAT; mat++)
			report_add_array(sr, names[mat], s->stable_rank + mat, s->E, MDL_NMAT);
	}
	if (s->reap)
		report_add_array(block, "reap_saliency", s->reap, s->E, 1);
	cJSON *sim = NULL;
	for (int base = 0; base < SIM_BASE_COUNT; base++) {
		if (!s->similarity[base])
			continue;
		if (!sim)
			sim = cJSON_AddObjectToObject(block, "similarity");
		report_add_matrix(sim, sim_base_name((sim_base)base), s->similarity[base], s->E);
	}
}

void report_add_eval(cJSON *block, const blk_eval_result *r)
{
	cJSON *o = cJSON_AddObjectToObject(block, "eval");
	cJSON_AddNumberToObject(o, "tokens", (double)r->tokens);
	cJSON_AddNumberToObject(o, "output_rel_error", r->rel_error);
	cJSON_AddNumberToObject(o, "routing_agreement", r->routing_agreement);
	cJSON_AddNumberToObject(o, "params_before", (double)r->params_before);
	cJSON_AddNumberToObject(o, "params_after", (double)r->params_after);
	cJSON_AddNumberToObject(o, "flops_per_token_before", r->flops_before);
	cJSON_AddNumberToObject(o, "flops_per_token_after", r->flops_after);
}

static void add_number_or_null(cJSON *o, const char *key, double v)
{
	if (isfinite(v))
		cJSON_AddNumberToObject(o, key, v);
	else
		cJSON_AddNullToObject(o, key);
}

void report_add_fit(cJSON *block, const pipe_block *blk, const pipe_merged *mg)
{
	cJSON *o = cJSON_AddObjectToObject(block, "fit");
	cJSON_AddStringToObject(o, "split", pipe_split_name(blk->split));
	cJSON_AddStringToObject(o, "split_rule", pipe_split_help[blk->split]);
	cJSON_AddNumberToObject(o, "fit_tokens", (double)mg->fit_tokens);
	cJSON_AddNumberToObject(o, "held_out_tokens", (double)(blk->held_idx ? blk->n_held : blk->T));
	if (mg->layout == PIPE_LAYOUT_ALIASED)
		return;   /* the original router, nothing fitted */
	cJSON_AddStringToObject(o, "router", rfit_method_name(mg->router_used));
	cJSON *c = cJSON_AddObjectToObject(o, "router_fit_output_error");
	for (int m = 0; m < RFIT_ROW_METHODS; m++)
		add_number_or_null(c, rfit_method_name((rfit_method)m), mg->router_error[m]);
	cJSON_AddBoolToObject(o, "refitted", mg->refitted);
	if (mg->refit_skipped)
		cJSON_AddStringToObject(o, "refit_skipped", "the normal matrices (one f x f per merged expert) would "
					"exceed a quarter of the block's memory");
	add_number_or_null(o, "fit_error_merged", mg->fit_error_merged);
	add_number_or_null(o, "fit_error_refit", mg->fit_error_refit);
}

void report_add_meo(cJSON *block, const meo_result *r)
{
	cJSON *o = cJSON_AddObjectToObject(block, "meo");
	cJSON_AddNumberToObject(o, "tokens", (double)r->tokens);
	cJSON_AddNumberToObject(o, "token_error_mean", r->token_error_mean);
	cJSON_AddNumberToObject(o, "token_error_max", r->token_error_max);
	cJSON_AddNumberToObject(o, "segments", (double)r->segments);
	cJSON_AddNumberToObject(o, "segment_error_mean", r->segment_error_mean);
	cJSON_AddNumberToObject(o, "flops_per_token_experts", r->flops_experts);
	cJSON_AddNumberToObject(o, "flops_per_token_meo", r->flops_token_meo);
	cJSON_AddNumberToObject(o, "flops_per_token_meo_segment", r->flops_segment_meo);
}
