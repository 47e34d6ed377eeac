/* A Hugging Face MoE checkpoint: config.json, the family table and the tensor checks (docs/design.md §2.2).
 *
 * Every family is one row of `families` below. A row says where each number lives in config.json, how the MoE
 * blocks are named (a block prefix such as "model.layers.3.mlp", the router suffix, the expert matrices), how
 * tokens are routed and which layers are MoE blocks. Nothing else in the program looks at model_type. */
#include "io/model.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#define CONFIG_LIMIT (16u << 20)   /* config.json is a few KiB; anything this large is not a config */
#define MAX_EXPERTS 4096
#define MAX_WIDTH (1 << 20)        /* d and f */
#define MAX_LAYERS 65536

/* One stack of layers: the decoder of a decoder-only model, or switch's encoder and decoder. The block prefix
 * of layer i is head + i + tail. */
typedef struct {
	const char *name;            /* label prefix ("encoder"), or NULL when the label is just the index */
	const char *layers_field;    /* config.json field holding the number of layers of this stack */
	const char *layers_fallback; /* field to use when layers_field is absent (switch decoder), or NULL */
	const char *head, *tail;
} mdl_stack;

/* Marks which of the n layers of stack s are MoE blocks (is_moe [n]). Reads the family's own config fields. */
typedef ms_status (*mdl_moe_layers_fn)(const cJSON *cfg, const char *where, int s, int n, unsigned char *is_moe,
				       ms_error *err);
/* Extra checks of config fields the routing rule depends on (NULL when none). */
typedef ms_status (*mdl_check_fn)(const cJSON *cfg, const char *where, mdl_model *m, ms_error *err);

struct mdl_family {
	const char *model_type;
	const char *experts_field;   /* E */
	const char *experts_alias;   /* where transformers 5 may save E instead (its attribute_map), or NULL */
	const char *topk_field;      /* top-k, or NULL for top-1 */
	const char *hidden_field;    /* d */
	const char *inter_field;     /* f */
	mdl_stack stacks[2];
	int n_stacks;
	const char *router_suffix;   /* block prefix + this = the router */
	const char *expert_infix;    /* block prefix + this + e + "." + matrix + ".weight" = an expert matrix */
	const char *mats[MDL_NMAT];  /* gate, up, down; NULL when the family lacks one */
	mdl_act act;
	int renormalize;             /* default of the routing rule */
	const char *renorm_field;    /* config field overriding `renormalize`, or NULL when fixed */
	const char *scale_field;     /* config field multiplying the routing weights, or NULL */
	mdl_score score;             /* how logits become routing scores */
	const char *bias_suffix;     /* block prefix + this = the block's e_score_correction_bias [E], or NULL */
	const char *router_bias_suffix; /* block prefix + this = the router's logit bias [E], or NULL */
	int interleaved;             /* experts in the interleaved layout (io/model.h), with biases */
	int n_group_default;         /* group-limited routing: defaults of n_group and topk_group when config.json */
	int topk_group_default;      /* leaves them out (0: the family has no group-limited routing) */
	const char *fused_tail;      /* the stack tail of the block prefix in the fused layout when it differs
				      * (transformers v5 renames mixtral's block_sparse_moe to mlp), or NULL */
	int no_fused;                /* the family has no fused layout (switch) */
	mdl_moe_layers_fn moe_layers;
	mdl_check_fn check;
	const char *group_method_field;   /* topk_method (deepseek_v2): group-limited routing, or NULL */
	const char *capacity_field;  /* tokens per expert (switch expert_capacity), scaled by E / E' when E changes */
};

/* ---- config.json fields -------------------------------------------------------------------------------------- */

static const cJSON *field(const cJSON *cfg, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, name);
	return cJSON_IsNull(v) ? NULL : v;   /* transformers treats null as "use the default" */
}

static int is_integer(const cJSON *v, long long lo, long long hi)
{
	if (!cJSON_IsNumber(v))
		return 0;
	double x = v->valuedouble;
	return isfinite(x) && x == floor(x) && x >= (double)lo && x <= (double)hi;
}

/* An integer field in [lo, hi]. With required == 0 an absent field yields dflt. */
static ms_status get_int(const cJSON *cfg, const char *where, const char *name, long long lo, long long hi,
			 int required, int dflt, int *out, ms_error *err)
{
	const cJSON *v = field(cfg, name);
	if (!v && !required) {
		*out = dflt;
		return MS_OK;
	}
	if (!v)
		return ms_fail(err, MS_ERR_CFG_FIELD, "%s: field '%s' missing", where, name);
	if (!is_integer(v, lo, hi))
		return ms_fail(err, MS_ERR_CFG_FIELD, "%s: field '%s' must be an integer in [%lld, %lld]", where, name,
			       lo, hi);
	*out = (int)v->valuedouble;
	return MS_OK;
}

static ms_status get_bool(const cJSON *cfg, const char *where, const char *name, int dflt, int *out, ms_error *err)
{
	const cJSON *v = field(cfg, name);
	if (!v) {
		*out = dflt;
		return MS_OK;
	}
	if (!cJSON_IsBool(v))
		return ms_fail(err, MS_ERR_CFG_FIELD, "%s: field '%s' must be true or false", where, name);
	*out = cJSON_IsTrue(v) ? 1 : 0;
	return MS_OK;
}

static ms_status get_positive_real(const cJSON *cfg, const char *where, const char *name, double dflt, double *out,
				   ms_error *err)
{
	const cJSON *v = field(cfg, name);
	if (!v) {
		*out = dflt;
		return MS_OK;
	}
	if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble <= 0 || v->valuedouble > 1e6)
		return ms_fail(err, MS_ERR_CFG_FIELD, "%s: field '%s' must be a positive number", where, name);
	*out = v->valuedouble;
	return MS_OK;
}

/* ---- which layers are MoE blocks ----------------------------------------------------------------------------- */

static ms_status every_layer(const cJSON *cfg, const char *where, int s, int n, unsigned char *is_moe, ms_error *err)
{
	(void)cfg, (void)where, (void)s, (void)err;
	memset(is_moe, 1, (size_t)n);
	return MS_OK;
}

/* Qwen2MoeDecoderLayer / Qwen3MoeDecoderLayer: sparse when the layer is not listed in mlp_only_layers and
 * (i + 1) % decoder_sparse_step == 0. */
static ms_status qwen_layers(const cJSON *cfg, const char *where, int s, int n, unsigned char *is_moe, ms_error *err)
{
	(void)s;
	int step;
	ms_status st = get_int(cfg, where, "decoder_sparse_step", 1, MAX_LAYERS, 0, 1, &step, err);
	if (st != MS_OK)
		return st;
	for (int i = 0; i < n; i++)
		is_moe[i] = (i + 1) % step == 0;
	const cJSON *dense = field(cfg, "mlp_only_layers");
	if (dense && !cJSON_IsArray(dense))
		return ms_fail(err, MS_ERR_CFG_FIELD, "%s: field 'mlp_only_layers' must be a list of layer indices",
			       where);
	const cJSON *v;
	cJSON_ArrayForEach(v, dense) {
		if (!is_integer(v, 0, MAX_LAYERS))
			return ms_fail(err, MS_ERR_CFG_FIELD,
				       "%s: field 'mlp_only_layers' must hold layer indices in [0, %d]", where,
				       MAX_LAYERS);
		int i = (int)v->valuedouble;
		if (i < n)   /* transformers ignores indices past the last layer, and so do we */
			is_moe[i] = 0;
	}
	return MS_OK;
}

/* DeepseekV2DecoderLayer: sparse when i >= first_k_dense_replace and i % moe_layer_freq == 0. */
static ms_status deepseek_layers(const cJSON *cfg, const char *where, int s, int n, unsigned char *is_moe,
				 ms_error *err)
{
	(void)s;
	int first, freq;
	ms_status st = get_int(cfg, where, "first_k_dense_replace", 0, MAX_LAYERS, 0, 0, &first, err);
	if (st == MS_OK)
		st = get_int(cfg, where, "moe_layer_freq", 1, MAX_LAYERS, 0, 1, &freq, err);
	if (st != MS_OK)
		return st;
	for (int i = 0; i < n; i++)
		is_moe[i] = i >= first && i % freq == 0;
	return MS_OK;
}

/* DeepseekV3DecoderLayer / Glm4MoeDecoderLayer: sparse when i >= first_k_dense_replace (no moe_layer_freq). */
static ms_status first_dense_layers(const cJSON *cfg, const char *where, int s, int n, unsigned char *is_moe,
				    ms_error *err)
{
	(void)s;
	int first;
	ms_status st = get_int(cfg, where, "first_k_dense_replace", 0, MAX_LAYERS, 0, 0, &first, err);
	for (int i = 0; st == MS_OK && i < n; i++)
		is_moe[i] = i >= first;
	return st;
}

/* SwitchTransformersStack: with step = layers // num_sparse_<stack>_layers (SwitchTransformersConfig; no sparse
 * layer when that count is 0; default 3), block i is sparse when step > 0 and (i % step == 1 or step == 1).
 * Configs saved without the count but with <stack>_sparse_step use that step directly (older transformers
 * let the saved step win). */
static ms_status switch_layers(const cJSON *cfg, const char *where, int s, int n, unsigned char *is_moe,
			       ms_error *err)
{
	static const char *const count_fields[] = {"num_sparse_encoder_layers", "num_sparse_decoder_layers"};
	static const char *const step_fields[] = {"encoder_sparse_step", "decoder_sparse_step"};
	int count, step;
	ms_status st;
	if (field(cfg, count_fields[s]) || !field(cfg, step_fields[s])) {
		st = get_int(cfg, where, count_fields[s], 0, MAX_LAYERS, 0, 3, &count, err);
		step = count > 0 ? n / count : n;
	} else {
		st = get_int(cfg, where, step_fields[s], 0, MAX_LAYERS, 1, 0, &step, err);
	}
	if (st != MS_OK)
		return st;
	for (int i = 0; i < n; i++)
		is_moe[i] = step > 0 && (i % step == 1 || step == 1);
	return MS_OK;
}

/* DeepSeek-V2's topk_method: "greedy" (plain top-k), or "group_limited_greedy": the E experts form n_group
 * contiguous groups, only the topk_group groups whose best expert scores highest are eligible, and the top-k is
 * taken among their experts (transformers' modeling_deepseek_v2.py). topk_group >= n_group makes every group
 * eligible: plain top-k. The top-k must fit in the eligible groups (transformers would otherwise pick experts of
 * other groups at weight 0). */
static ms_status deepseek_check(const cJSON *cfg, const char *where, mdl_model *m, ms_error *err)
{
	const cJSON *method = field(cfg, "topk_method");
	if (!method || (cJSON_IsString(method) && strcmp(method->valuestring, "greedy") == 0))
		return MS_OK;
	if (!cJSON_IsString(method) || strcmp(method->valuestring, "group_limited_greedy") != 0)
		return ms_fail(err, MS_ERR_CFG_FIELD, "%s: field 'topk_method' must be \"greedy\" or "
			       "\"group_limited_greedy\"", where);
	int groups, eligible;
	ms_status st = get_int(cfg, where, "n_group", 1, MAX_EXPERTS, 1, 1, &groups, err);
	if (st == MS_OK)
		st = get_int(cfg, where, "topk_group", 1, MAX_EXPERTS, 1, 1, &eligible, err);
	if (st != MS_OK)
		return st;
	if (m->n_experts % groups != 0)
		return ms_fail(err, MS_ERR_CFG_FIELD, "%s: n_group %d does not divide the %d experts", where, groups,
			       m->n_experts);
	if (eligible >= groups)
		return MS_OK;
	if (m->top_k > eligible * (m->n_experts / groups))
		return ms_fail(err, MS_ERR_CFG_FIELD, "%s: top-%d is more than the %d experts of topk_group %d groups",
			       where, m->top_k, eligible * (m->n_experts / groups), eligible);
	m->routing.n_group = groups;
	m->routing.topk_group = eligible;
	m->routing.group_score = MDL_GROUP_MAX;
	return MS_OK;
}

/* ---- the family table ---------------------------------------------------------------------------------------- */

/* The decoder stack of a decoder-only model: layer i's block prefix is "model.layers." i suffix. */
#define DECODER(suffix) .stacks = {{.layers_field = "num_hidden_layers", .head = "model.layers.", .tail = suffix}}, \
			.n_stacks = 1
#define MIXTRAL_MATS {"w1", "w3", "w2"}
#define MLP_MATS {"gate_proj", "up_proj", "down_proj"}
/* What every family but switch shares: the router is block.gate, experts are block.experts.<e>, SiLU-GLU. */
#define GATE_ROUTER .router_suffix = ".gate.weight", .expert_infix = ".experts.", .act = MDL_ACT_SILU_GLU

static const mdl_family families[] = {
	{.model_type = "mixtral", .experts_field = "num_local_experts", .topk_field = "num_experts_per_tok",
	 .hidden_field = "hidden_size", .inter_field = "intermediate_size", DECODER(".block_sparse_moe"),
	 GATE_ROUTER, .mats = MIXTRAL_MATS, .renormalize = 1, .fused_tail = ".mlp", .moe_layers = every_layer},
	{.model_type = "phimoe", .experts_field = "num_local_experts", .topk_field = "num_experts_per_tok",
	 .hidden_field = "hidden_size", .inter_field = "intermediate_size", DECODER(".block_sparse_moe"),
	 GATE_ROUTER, .mats = MIXTRAL_MATS, .renormalize = 1, .moe_layers = every_layer},
	{.model_type = "qwen2_moe", .experts_field = "num_experts", .topk_field = "num_experts_per_tok",
	 .hidden_field = "hidden_size", .inter_field = "moe_intermediate_size", DECODER(".mlp"),
	 GATE_ROUTER, .mats = MLP_MATS, .renorm_field = "norm_topk_prob", .moe_layers = qwen_layers},
	/* Qwen3MoeConfig's norm_topk_prob defaults to False too; the released Qwen3 checkpoints set it to true. */
	/* Qwen3MoeConfig in transformers 5 maps num_experts to num_local_experts, the name it saves */
	{.model_type = "qwen3_moe", .experts_field = "num_experts", .experts_alias = "num_local_experts",
	 .topk_field = "num_experts_per_tok",
	 .hidden_field = "hidden_size", .inter_field = "moe_intermediate_size", DECODER(".mlp"),
	 GATE_ROUTER, .mats = MLP_MATS, .renorm_field = "norm_topk_prob", .moe_layers = qwen_layers},
	{.model_type = "olmoe", .experts_field = "num_experts", .topk_field = "num_experts_per_tok",
	 .hidden_field = "hidden_size", .inter_field = "intermediate_size", DECODER(".mlp"),
	 GATE_ROUTER, .mats = MLP_MATS, .renorm_field = "norm_topk_prob", .moe_layers = every_layer},
	{.model_type = "deepseek_v2", .experts_field = "n_routed_experts", .topk_field = "num_experts_per_tok",
	 .hidden_field = "hidden_size", .inter_field = "moe_intermediate_size", DECODER(".mlp"),
	 GATE_ROUTER, .mats = MLP_MATS, .scale_field = "routed_scaling_factor", .moe_layers = deepseek_layers,
	 .check = deepseek_check, .group_method_field = "topk_method"},
	/* DeepseekV3TopkRouter (Kimi-K2 uses the same model_type): sigmoid scores, a per-expert selection bias and
	 * group-limited top-k; DeepseekV3Config defaults to 8 groups of which 4 are eligible, norm_topk_prob true. */
	{.model_type = "deepseek_v3", .experts_field = "n_routed_experts", .topk_field = "num_experts_per_tok",
	 .hidden_field = "hidden_size", .inter_field = "moe_intermediate_size", DECODER(".mlp"),
	 GATE_ROUTER, .mats = MLP_MATS, .renormalize = 1, .renorm_field = "norm_topk_prob",
	 .scale_field = "routed_scaling_factor", .score = MDL_SCORE_SIGMOID,
	 .bias_suffix = ".gate.e_score_correction_bias", .n_group_default = 8, .topk_group_default = 4,
	 .moe_layers = first_dense_layers},
	/* Glm4MoeTopkRouter: DeepSeek-V3's routing; Glm4MoeConfig defaults to one group. */
	{.model_type = "glm4_moe", .experts_field = "n_routed_experts", .topk_field = "num_experts_per_tok",
	 .hidden_field = "hidden_size", .inter_field = "moe_intermediate_size", DECODER(".mlp"),
	 GATE_ROUTER, .mats = MLP_MATS, .renormalize = 1, .renorm_field = "norm_topk_prob",
	 .scale_field = "routed_scaling_factor", .score = MDL_SCORE_SIGMOID,
	 .bias_suffix = ".gate.e_score_correction_bias", .n_group_default = 1, .topk_group_default = 1,
	 .moe_layers = first_dense_layers},
	/* GptOssTopKRouter: logits x W^T + b, top-k of the logits, softmax over the k selected (the same weights as
	 * the softmax over all E renormalised over the selected); GptOssExperts: interleaved, biases, clamped SwiGLU.
	 * Every layer is an MoE block. */
	{.model_type = "gpt_oss", .experts_field = "num_local_experts", .topk_field = "num_experts_per_tok",
	 .hidden_field = "hidden_size", .inter_field = "intermediate_size", DECODER(".mlp"),
	 .router_suffix = ".router.weight", .router_bias_suffix = ".router.bias", .expert_infix = ".experts.",
	 .mats = MLP_MATS, .act = MDL_ACT_CLAMPED_SWIGLU, .renormalize = 1, .interleaved = 1,
	 .moe_layers = every_layer},
	/* Top-1 (no top-k field), an encoder and a decoder stack, no gate matrix, ReLU. */
	{.model_type = "switch_transformers", .experts_field = "num_experts",
	 .hidden_field = "d_model", .inter_field = "d_ff",
	 .stacks = {{.name = "encoder", .layers_field = "num_layers", .head = "encoder.block.", .tail = ".layer.1.mlp"},
		    {.name = "decoder", .layers_field = "num_decoder_layers", .layers_fallback = "num_layers",
		     .head = "decoder.block.", .tail = ".layer.2.mlp"}},
	 .n_stacks = 2, .router_suffix = ".router.classifier.weight", .expert_infix = ".experts.expert_",
	 .mats = {NULL, "wi", "wo"}, .act = MDL_ACT_RELU, .no_fused = 1, .moe_layers = switch_layers,
	 .capacity_field = "expert_capacity"},
};
#define FAMILY_COUNT ((int)(sizeof families / sizeof families[0]))

static const mdl_family *find_family(const char *model_type)
{
	for (int i = 0; i < FAMILY_COUNT; i++)
		if (strcmp(families[i].model_type, model_type) == 0)
			return &families[i];
	return NULL;
}

/* model_type as it may be shown in a one-line message: at most 64 bytes, control characters as '?'. */
static void printable(char *dst, size_t len, const char *src)
{
	size_t i = 0;
	for (; src[i] && i + 1 < len; i++)
		dst[i] = (unsigned char)src[i] < 0x20 || src[i] == 0x7f ? '?' : src[i];
	dst[i] = '\0';
}

static ms_status unknown_family(const char *where, const char *model_type, ms_error *err)
{
	char shown[65];
	printable(shown, sizeof shown, model_type);
	char list[256] = "";
	size_t used = 0;
	for (int i = 0; i < FAMILY_COUNT && used < sizeof list; i++)
		used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", families[i].model_type);
	return ms_fail(err, MS_ERR_CFG_FAMILY, "%s: model_type '%s' is not a supported MoE family (%s)", where,
		       shown, list);
}

/* ---- reading config.json ------------------------------------------------------------------------------------- */

/* Line and column (1-based) of byte `at` in buf. */
static void text_position(const char *buf, size_t at, int *line, int *col)
{
	*line = 1;
	*col = 1;
	for (size_t i = 0; i < at; i++) {
		if (buf[i] == '\n') {
			(*line)++;
			*col = 1;
		} else {
			(*col)++;
		}
	}
}

static ms_status read_small_file(const char *path, size_t limit, char **out, size_t *len, ms_error *err)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return ms_fail(err, errno == ENOENT ? MS_ERR_CFG_JSON : MS_ERR_IO, "%s: cannot open: %s", path,
			       strerror(errno));
	struct stat sb;
	if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
		fclose(f);
		return ms_fail(err, MS_ERR_CFG_JSON, "%s: not a regular file", path);
	}
	if ((uint64_t)sb.st_size > limit) {
		fclose(f);
		return ms_fail(err, MS_ERR_CFG_JSON, "%s: %lld bytes, over the %zu MiB limit for a config", path,
			       (long long)sb.st_size, limit >> 20);
	}
	char *buf = malloc((size_t)sb.st_size + 1);
	if (!buf) {
		fclose(f);
		return ms_fail(err, MS_ERR_NOMEM, "%s: out of memory", path);
	}
	size_t n = fread(buf, 1, (size_t)sb.st_size, f);
	int bad = ferror(f);
	fclose(f);
	if (bad) {
		free(buf);
		return ms_fail(err, MS_ERR_IO, "%s: read error", path);
	}
	buf[n] = '\0';
	*out = buf;
	*len = n;
	return MS_OK;
}

static ms_status json_error(const char *path, const char *buf, size_t at, const char *what, ms_error *err)
{
	int line, col;
	text_position(buf, at, &line, &col);
	return ms_fail(err, MS_ERR_CFG_JSON, "%s: %s at line %d column %d", path, what, line, col);
}

/* The whole file must be one JSON object, with nothing but white space after it. *text gets the file's bytes
 * (NUL-terminated, *len of them). */
static ms_status parse_config(const char *path, cJSON **out, char **text, size_t *text_len, ms_error *err)
{
	char *buf = NULL;
	size_t len = 0;
	ms_status st = read_small_file(path, CONFIG_LIMIT, &buf, &len, err);
	if (st != MS_OK)
		return st;
	const char *end = buf;
	cJSON *root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
	size_t at = end && end >= buf && end <= buf + len ? (size_t)(end - buf) : 0;
	while (root && at < len && buf[at] && strchr(" \t\r\n", buf[at]))
		at++;
	if (!root)
		st = json_error(path, buf, at, "not valid JSON", err);
	else if (!cJSON_IsObject(root))
		st = json_error(path, buf, 0, "not a JSON object", err);
	else if (at < len)
		st = json_error(path, buf, at, "text after the JSON object", err);
	if (st != MS_OK) {
		free(buf);
		cJSON_Delete(root);
		return st;
	}
	*out = root;
	*text = buf;
	*text_len = len;
	return MS_OK;
}

/* n_group and topk_group of group-limited routing. transformers views the E scores as [n_group, E / n_group]
 * and takes the top 2 of each group, so E must split evenly into groups of at least two when some group can be
 * left out. */
static ms_status read_groups(mdl_model *m, const cJSON *cfg, const char *where, ms_error *err)
{
	const mdl_family *fam = m->family;
	mdl_routing *r = &m->routing;
	ms_status st = get_int(cfg, where, "n_group", 1, MAX_EXPERTS, 0, fam->n_group_default, &r->n_group, err);
	if (st == MS_OK)
		st = get_int(cfg, where, "topk_group", 1, MAX_EXPERTS, 0, fam->topk_group_default, &r->topk_group, err);
	if (st != MS_OK)
		return st;
	m->n_group_field = "n_group";
	m->topk_group_field = "topk_group";
	if (m->n_experts % r->n_group != 0)
		return ms_fail(err, MS_ERR_CFG_FIELD, "%s: field 'n_group' is %d, which does not divide the %d experts of "
			       "'%s'", where, r->n_group, m->n_experts, fam->experts_field);
	if (r->topk_group > r->n_group)
		return ms_fail(err, MS_ERR_CFG_FIELD, "%s: field 'topk_group' is %d, more than the %d groups of 'n_group'",
			       where, r->topk_group, r->n_group);
	if (r->topk_group < r->n_group && m->n_experts / r->n_group < 2)
		return ms_fail(err, MS_ERR_CFG_FIELD, "%s: groups of %d expert(s): group-limited routing scores each group "
			       "by its two best experts", where, m->n_experts / r->n_group);
	if (r->topk_group < r->n_group && m->top_k > r->topk_group * (m->n_experts / r->n_group))
		return ms_fail(err, MS_ERR_CFG_FIELD, "%s: field '%s' is %d, more than the %d experts of %d eligible groups",
			       where, fam->topk_field, m->top_k, r->topk_group * (m->n_experts / r->n_group), r->topk_group);
	return MS_OK;
}

/* E, top-k, d, f, the layer count and the routing rule. */
static ms_status read_dims(mdl_model *m, const cJSON *cfg, const char *where, ms_error *err)
{
	const mdl_family *fam = m->family;
	m->experts_field = fam->experts_field;
	if (fam->experts_alias && !field(cfg, fam->experts_field) && field(cfg, fam->experts_alias))
		m->experts_field = fam->experts_alias;
	ms_status st = get_int(cfg, where, m->experts_field, 1, MAX_EXPERTS, 1, 0, &m->n_experts, err);
	m->top_k = 1;   /* switch routes each token to one expert and has no field for it */
	if (st == MS_OK && fam->topk_field)
		st = get_int(cfg, where, fam->topk_field, 1, MAX_EXPERTS, 1, 0, &m->top_k, err);
	if (st == MS_OK && m->top_k > m->n_experts)
		st = ms_fail(err, MS_ERR_CFG_FIELD, "%s: field '%s' is %d, more than the %d experts of '%s'", where,
			     fam->topk_field, m->top_k, m->n_experts, m->experts_field);
	if (st == MS_OK)
		st = get_int(cfg, where, fam->hidden_field, 1, MAX_WIDTH, 1, 0, &m->hidden, err);
	if (st == MS_OK)
		st = get_int(cfg, where, fam->inter_field, 1, MAX_WIDTH, 1, 0, &m->inter, err);
	if (st != MS_OK)
		return st;
	m->act = fam->act;
	m->routing.top_k = m->top_k;
	m->routing.renormalize = fam->renormalize;
	m->routing.scale = 1.0f;
	if (fam->renorm_field)
		st = get_bool(cfg, where, fam->renorm_field, fam->renormalize, &m->routing.renormalize, err);
	double scale = 1.0;
	if (st == MS_OK && fam->scale_field)
		st = get_positive_real(cfg, where, fam->scale_field, 1.0, &scale, err);
	m->routing.scale = (float)scale;
	m->routing.score = fam->score;
	m->routing.n_group = m->routing.topk_group = 1;
	if (st == MS_OK && fam->n_group_default)
		st = read_groups(m, cfg, where, err);
	if (st == MS_OK && fam->check)
		st = fam->check(cfg, where, m, err);
	if (st == MS_OK && fam->capacity_field)   /* SwitchTransformersConfig's default is 64 */
		st = get_int(cfg, where, fam->capacity_field, 1, INT32_MAX, 0, 64, &m->routing.capacity, err);
	m->topk_field = fam->topk_field;
	const cJSON *method = fam->group_method_field ? field(cfg, fam->group_method_field) : NULL;
	if (cJSON_IsString(method) && strcmp(method->valuestring, "group_limited_greedy") == 0)
		m->group_method_field = fam->group_method_field;
	return st;
}

/* ---- blocks -------------------------------------------------------------------------------------------------- */

static ms_status stack_layers(const mdl_stack *s, const cJSON *cfg, const char *where, int *n, ms_error *err)
{
	const char *name = s->layers_field;
	if (!field(cfg, name) && s->layers_fallback)
		name = s->layers_fallback;
	return get_int(cfg, where, name, 1, MAX_LAYERS, 1, 0, n, err);
}

static void add_block(mdl_model *m, const mdl_stack *s, int i)
{
	mdl_block *b = &m->blocks[m->n_blocks];
	b->layer = i;
	if (s->name)
		snprintf(b->label, sizeof b->label, "%s.%d", s->name, i);
	else
		snprintf(b->label, sizeof b->label, "%d", i);
	snprintf(b->prefix, sizeof b->prefix, "%s%d%s", s->head, i, s->tail);
	m->n_blocks++;   /* its expert table waits for check_block: a config may claim far more than the file holds */
}

/* Lists the MoE blocks of every stack, in layer order. */
static ms_status list_blocks(mdl_model *m, const cJSON *cfg, const char *where, ms_error *err)
{
	const mdl_family *fam = m->family;
	int counts[2] = {0, 0};
	m->n_layers = 0;
	for (int s = 0; s < fam->n_stacks; s++) {
		ms_status st = stack_layers(&fam->stacks[s], cfg, where, &counts[s], err);
		if (st != MS_OK)
			return st;
		m->n_layers += counts[s];
	}
	m->blocks = calloc((size_t)m->n_layers, sizeof *m->blocks);
	unsigned char *is_moe = malloc((size_t)m->n_layers);
	if (!m->blocks || !is_moe) {
		free(is_moe);
		return ms_fail(err, MS_ERR_NOMEM, "%s: out of memory for %d layers", where, m->n_layers);
	}
	ms_status st = MS_OK;
	for (int s = 0; st == MS_OK && s < fam->n_stacks; s++) {
		st = fam->moe_layers(cfg, where, s, counts[s], is_moe, err);
		for (int i = 0; st == MS_OK && i < counts[s]; i++)
			if (is_moe[i])
				add_block(m, &fam->stacks[s], i);
	}
	free(is_moe);
	if (st == MS_OK && m->n_blocks == 0)
		st = ms_fail(err, MS_ERR_CFG_FIELD, "%s: the %s config has no MoE layer", where, m->model_type);
	return st;
}

/* ---- tensor checks ------------------------------------------------------------------------------------------- */

/* A dimension config.json implies, with the field it comes from (for messages). */
typedef struct {
	int64_t n;
	const char *field;
} dim;

/* The tensor `name` must exist, hold floats and have shape [rows, cols]. `what` says which part of which block
 * it is, for the messages. */
static ms_status expect_matrix(const mdl_model *m, const char *name, dim rows, dim cols, const char *what,
			       const st_tensor **out, ms_error *err)
{
	const st_tensor *t = st_find(m->st, name);
	if (!t)
		return ms_fail(err, MS_ERR_MODEL_TENSOR, "%s: tensor '%s' missing (%s)", m->dir, name, what);
	const int64_t want[2] = {rows.n, cols.n};
	if (t->ndim != 2 || t->shape[0] != rows.n || t->shape[1] != cols.n) {
		char found[128], expected[64];
		st_shape_text(found, sizeof found, t->shape, t->ndim);
		st_shape_text(expected, sizeof expected, want, 2);
		return ms_fail(err, MS_ERR_MODEL_SHAPE,
			       "%s: tensor '%s' (%s): shape %s, expected %s (%s x %s in config.json)", m->dir, name, what,
			       found, expected, rows.field, cols.field);
	}
	/* an F8_E4M3 matrix is checked with its scales by check_quant */
	if (!st_dtype_is_float(t->dtype) && t->dtype != ST_F8_E4M3)
		return ms_fail(err, MS_ERR_ST_DTYPE, "%s: tensor '%s' (%s): dtype %s, expected F32, F16 or BF16", m->dir,
			       name, what, st_dtype_name(t->dtype));
	*out = t;
	return MS_OK;
}

/* Adds a checked expert matrix to the expert totals; the first block's first up matrix names the dtype. */
static void count_expert(mdl_model *m, const st_tensor *t, int first)
{
	if (first)
		m->expert_dtype = t->dtype;
	m->params_experts += t->numel;
	m->bytes_experts += t->nbytes;
}

/* The tensor `name` must exist, have shape `want` (ndim <= 4 dimensions, each from a config field) and hold floats
 * (u8 0) or bytes (u8 1: MXFP4 blocks and scales). */
static ms_status expect_typed(const mdl_model *m, const char *name, int ndim, const dim *want, const char *what,
			      int u8, const st_tensor **out, ms_error *err)
{
	const st_tensor *t = st_find(m->st, name);
	if (!t)
		return ms_fail(err, MS_ERR_MODEL_TENSOR, "%s: tensor '%s' missing (%s)", m->dir, name, what);
	int64_t shape[4];
	char fields[160];
	size_t used = 0;
	int same = t->ndim == ndim;
	for (int i = 0; i < ndim; i++) {
		shape[i] = want[i].n;
		same = same && t->shape[i] == want[i].n;
		used += (size_t)snprintf(fields + used, used < sizeof fields ? sizeof fields - used : 0, "%s%s",
					 i ? " x " : "", want[i].field);
	}
	if (!same) {
		char found[128], expected[96];
		st_shape_text(found, sizeof found, t->shape, t->ndim);
		st_shape_text(expected, sizeof expected, shape, ndim);
		return ms_fail(err, MS_ERR_MODEL_SHAPE, "%s: tensor '%s' (%s): shape %s, expected %s (%s in config.json)",
			       m->dir, name, what, found, expected, fields);
	}
	if (u8 && t->dtype != ST_U8)
		return ms_fail(err, MS_ERR_ST_DTYPE, "%s: tensor '%s' (%s): dtype %s, expected U8 (MXFP4)", m->dir, name,
			       what, st_dtype_name(t->dtype));
	if (!u8 && !st_dtype_is_float(t->dtype))
		return ms_fail(err, MS_ERR_ST_DTYPE, "%s: tensor '%s' (%s): dtype %s, expected F32, F16 or BF16", m->dir,
			       name, what, st_dtype_name(t->dtype));
	*out = t;
	return MS_OK;
}

static ms_status expect_tensor(const mdl_model *m, const char *name, int ndim, const dim *want, const char *what,
			       const st_tensor **out, ms_error *err)
{
	return expect_typed(m, name, ndim, want, what, 0, out, err);
}

#define VIEW_NAME 192   /* bytes of each view's name */

/* A view of `count` elements of the 3-D tensor t from element `at`, shaped [rows, cols]: the bytes stay the
 * file's, so reading, page release and byte counts work on it as on any tensor. */
static void make_view(st_tensor *v, char *name, const st_tensor *t, uint64_t at, int64_t rows, int64_t cols,
		      const char *slice)
{
	const size_t es = st_dtype_size(t->dtype);
	snprintf(name, VIEW_NAME, "%s%s", t->name, slice);
	*v = *t;
	v->name = name;
	v->ndim = 2;
	v->shape[0] = rows;
	v->shape[1] = cols;
	v->numel = (uint64_t)rows * (uint64_t)cols;
	v->nbytes = v->numel * es;
	v->data = (const unsigned char *)t->data + at * es;
	v->file_offset = t->file_offset + at * es;
}

/* Where expert e's matrix `slot` lies in the fused tensor blk->fused[src]: rows x cols elements from element
 * e * stride + offset. Its name is the tensor's with the slice: "[e]" for a whole slab, "[e, :rows]" and
 * "[e, rows:]" for the first and second halves of a slab's rows. */
typedef enum { SLICE_SLAB, SLICE_HEAD, SLICE_TAIL } slice_kind;
typedef struct {
	int slot, src;
	uint64_t stride, offset;
	int64_t rows, cols;
	slice_kind slice;
} view_layout;

/* Makes the E x MDL_NMAT expert views of block b (and their names, VIEW_NAME bytes each, stored after the views)
 * from its fused tensors, as lay [n] places them. `count` adds the views to the expert totals, the first of block
 * 0's expert 0 naming the dtype. */
static ms_status make_expert_views(mdl_model *m, int b, const view_layout *lay, int n, int count, ms_error *err)
{
	mdl_block *blk = &m->blocks[b];
	const size_t nv = (size_t)m->n_experts * MDL_NMAT;
	blk->views = calloc(nv, sizeof *blk->views + VIEW_NAME);
	if (!blk->views)
		return ms_fail(err, MS_ERR_NOMEM, "%s: out of memory for the %d experts of layer %s", m->dir, m->n_experts,
			       blk->label);
	char *names = (char *)(blk->views + nv);
	for (int64_t e = 0; e < m->n_experts; e++)
		for (int i = 0; i < n; i++) {
			const view_layout *l = &lay[i];
			const int64_t at = e * MDL_NMAT + l->slot;
			char slice[64];
			if (l->slice == SLICE_HEAD)
				snprintf(slice, sizeof slice, "[%lld, :%lld]", (long long)e, (long long)l->rows);
			else if (l->slice == SLICE_TAIL)
				snprintf(slice, sizeof slice, "[%lld, %lld:]", (long long)e, (long long)l->rows);
			else
				snprintf(slice, sizeof slice, "[%lld]", (long long)e);
			make_view(&blk->views[at], names + (size_t)at * VIEW_NAME, blk->fused[l->src],
				  l->stride * (uint64_t)e + l->offset, l->rows, l->cols, slice);
			blk->experts[at] = &blk->views[at];
			if (count)
				count_expert(m, &blk->views[at], b == 0 && e == 0 && i == 0);
		}
	return MS_OK;
}

/* The float biases of the interleaved layout: gate_up_proj_bias [E, 2f] and down_proj_bias [E, d]. */
static ms_status check_fused_biases(mdl_model *m, int b, const char *what, ms_error *err)
{
	mdl_block *blk = &m->blocks[b];
	const mdl_family *fam = m->family;
	char twice[96], name[256];
	snprintf(twice, sizeof twice, "2 x %s", fam->inter_field);
	const dim ex = {m->n_experts, fam->experts_field};
	const dim gate_up_bias[2] = {ex, {2 * (int64_t)m->inter, twice}}, down_bias[2] = {ex, {m->hidden, fam->hidden_field}};
	ms_status st = MS_OK;
	if (mdl_fused_bias_name(m, b, MDL_FUSED_GATE_UP, name, sizeof name) == 0)
		st = expect_tensor(m, name, 2, gate_up_bias, what, &blk->fused_bias[MDL_FUSED_GATE_UP], err);
	if (st == MS_OK && mdl_fused_bias_name(m, b, MDL_FUSED_DOWN, name, sizeof name) == 0)
		st = expect_tensor(m, name, 2, down_bias, what, &blk->fused_bias[MDL_FUSED_DOWN], err);
	return st;
}

/* The fused layout: gate_up_proj [E, 2f, d] holds expert e's gate in rows [0, f) of slab e and its up in rows
 * [f, 2f) (transformers concatenates gate and up along dim 1); down_proj [E, d, f]. Each expert matrix becomes a
 * view of its slice. */
static ms_status check_fused_block(mdl_model *m, int b, ms_error *err)
{
	mdl_block *blk = &m->blocks[b];
	const mdl_family *fam = m->family;
	const int64_t E = m->n_experts, f = m->inter, d = m->hidden;
	char twice[96];
	snprintf(twice, sizeof twice, "2 x %s", fam->inter_field);
	const dim gate_up[3] = {{E, fam->experts_field}, {2 * f, twice}, {d, fam->hidden_field}};
	const dim down[3] = {{E, fam->experts_field}, {d, fam->hidden_field}, {f, fam->inter_field}};
	char name[256], what[96];
	snprintf(what, sizeof what, "experts of layer %s", blk->label);
	mdl_fused_name(m, b, MDL_FUSED_GATE_UP, name, sizeof name);
	ms_status st = expect_tensor(m, name, 3, gate_up, what, &blk->fused[MDL_FUSED_GATE_UP], err);
	if (st == MS_OK && mdl_fused_name(m, b, MDL_FUSED_DOWN, name, sizeof name) == 0)
		st = expect_tensor(m, name, 3, down, what, &blk->fused[MDL_FUSED_DOWN], err);
	if (st != MS_OK)
		return st;
	const uint64_t mat = (uint64_t)(f * d);
	const view_layout lay[] = {
		{.slot = MDL_GATE, .src = MDL_FUSED_GATE_UP, .stride = 2 * mat, .rows = f, .cols = d, .slice = SLICE_HEAD},
		{.slot = MDL_UP, .src = MDL_FUSED_GATE_UP, .stride = 2 * mat, .offset = mat, .rows = f, .cols = d,
		 .slice = SLICE_TAIL},
		{.slot = MDL_DOWN, .src = MDL_FUSED_DOWN, .stride = mat, .rows = d, .cols = f},
	};
	return make_expert_views(m, b, lay, 3, 1, err);
}

/* The interleaved layout (GptOssExperts): gate_up_proj [E, d, 2f], gate_up_proj_bias [E, 2f], down_proj [E, f, d],
 * down_proj_bias [E, d]. Expert e's matrices are views of its slabs: its whole [d, 2f] slab of gate_up_proj (in
 * the gate slot; gate and up are its even and odd columns, gathered by mdl_load_expert) and its [f, d] slab of
 * down_proj. */
static ms_status check_mxfp4_block(mdl_model *m, int b, ms_error *err);

static ms_status check_interleaved_block(mdl_model *m, int b, ms_error *err)
{
	mdl_block *blk = &m->blocks[b];
	const mdl_family *fam = m->family;
	const int64_t E = m->n_experts, f = m->inter, d = m->hidden;
	char twice[96];
	snprintf(twice, sizeof twice, "2 x %s", fam->inter_field);
	const dim ex = {E, fam->experts_field}, dd = {d, fam->hidden_field}, ff = {f, fam->inter_field};
	const dim f2 = {2 * f, twice};
	const dim gate_up[3] = {ex, dd, f2}, down[3] = {ex, ff, dd};
	char name[256], what[96], packed[300];
	snprintf(what, sizeof what, "experts of layer %s", blk->label);
	mdl_fused_name(m, b, MDL_FUSED_GATE_UP, name, sizeof name);
	snprintf(packed, sizeof packed, "%s_blocks", name);
	if (m->quant.scheme == QT_MXFP4 && !st_find(m->st, name))
		return check_mxfp4_block(m, b, err);
	if (!st_find(m->st, name) && st_find(m->st, packed))
		return ms_fail(err, MS_ERR_MODEL_TENSOR, "%s: tensor '%s' holds MXFP4 experts but config.json has no "
			       "quantization_config with quant_method \"mxfp4\"", st_find(m->st, packed)->path, packed);
	ms_status st = expect_tensor(m, name, 3, gate_up, what, &blk->fused[MDL_FUSED_GATE_UP], err);
	if (st == MS_OK && mdl_fused_name(m, b, MDL_FUSED_DOWN, name, sizeof name) == 0)
		st = expect_tensor(m, name, 3, down, what, &blk->fused[MDL_FUSED_DOWN], err);
	if (st == MS_OK)
		st = check_fused_biases(m, b, what, err);
	if (st != MS_OK)
		return st;
	const uint64_t mat = (uint64_t)(f * d);
	const view_layout lay[] = {
		{.slot = MDL_GATE, .src = MDL_FUSED_GATE_UP, .stride = 2 * mat, .rows = d, .cols = 2 * f},
		{.slot = MDL_DOWN, .src = MDL_FUSED_DOWN, .stride = mat, .rows = f, .cols = d},
	};
	return make_expert_views(m, b, lay, 2, 1, err);
}

/* The interleaved layout in gpt-oss's released MXFP4 form (transformers' integrations/mxfp4.py dequantizes
 * `_blocks` with `_scales` and transposes the last two axes into the BF16 layout): gate_up_proj_blocks U8
 * [E, 2f, d / 32, 16] with gate_up_proj_scales U8 [E, 2f, d / 32], down_proj_blocks [E, d, f / 32, 16] with
 * down_proj_scales [E, d, f / 32]; the biases stay float as in BF16. Each [E, out, in / 32, 16] tensor reads as
 * E * out rows of `in` values, so expert e's [out, in] matrix is rows [e out, (e + 1) out) (mdl_block.mx). */
static ms_status check_mxfp4_block(mdl_model *m, int b, ms_error *err)
{
	mdl_block *blk = &m->blocks[b];
	const mdl_family *fam = m->family;
	const int64_t E = m->n_experts, f = m->inter, d = m->hidden;
	char twice[96], gd[96], gf[96], name[256], part[300], what[96];
	snprintf(what, sizeof what, "MXFP4 experts of layer %s", blk->label);
	if (d % QT_MX_BLOCK || f % QT_MX_BLOCK)
		return ms_fail(err, MS_ERR_CFG_FIELD, "%s/config.json: %s %lld and %s %lld must be multiples of %d for "
			       "MXFP4 experts (one scale per %d values)", m->dir, fam->hidden_field, (long long)d,
			       fam->inter_field, (long long)f, QT_MX_BLOCK, QT_MX_BLOCK);
	snprintf(twice, sizeof twice, "2 x %s", fam->inter_field);
	snprintf(gd, sizeof gd, "%s / 32", fam->hidden_field);
	snprintf(gf, sizeof gf, "%s / 32", fam->inter_field);
	const dim ex = {E, fam->experts_field}, dd = {d, fam->hidden_field}, f2 = {2 * f, twice};
	const dim nd = {d / QT_MX_BLOCK, gd}, nf = {f / QT_MX_BLOCK, gf}, sixteen = {16, "16 bytes a block"};
	const dim want[MDL_NFUSED][4] = {{ex, f2, nd, sixteen}, {ex, dd, nf, sixteen}};
	ms_status st = MS_OK;
	for (int w = 0; st == MS_OK && w < MDL_NFUSED; w++) {
		mdl_fused_name(m, b, w, name, sizeof name);
		if (st_find(m->st, name) && !qt_not_converted(&m->quant, name))
			return ms_fail(err, MS_ERR_ST_DTYPE, "%s: tensor '%s' is %s but config.json's quantization_config says "
				       "mxfp4 (and modules_to_not_convert does not list it)", st_find(m->st, name)->path, name,
				       st_dtype_name(st_find(m->st, name)->dtype));
		snprintf(part, sizeof part, "%s_blocks", name);
		st = expect_typed(m, part, 4, want[w], what, 1, &blk->fused[w], err);
		snprintf(part, sizeof part, "%s_scales", name);
		if (st == MS_OK)
			st = expect_typed(m, part, 3, want[w], what, 1, &blk->fused_scales[w], err);
		if (st == MS_OK)
			st = qt_bind_mxfp4(blk->fused[w], blk->fused_scales[w], &blk->mx[w], err);
	}
	if (st == MS_OK)
		st = check_fused_biases(m, b, what, err);
	/* the slabs' bytes: two E2M1 codes a byte */
	const view_layout lay[] = {
		{.slot = MDL_GATE, .src = MDL_FUSED_GATE_UP, .stride = (uint64_t)(f * d), .rows = 2 * f, .cols = d / 2},
		{.slot = MDL_DOWN, .src = MDL_FUSED_DOWN, .stride = (uint64_t)(f * d / 2), .rows = d, .cols = f / 2},
	};
	if (st == MS_OK)
		st = make_expert_views(m, b, lay, 2, 0, err);
	if (st != MS_OK)
		return st;
	const st_tensor *tgu = blk->fused[MDL_FUSED_GATE_UP], *tdn = blk->fused[MDL_FUSED_DOWN];
	if (b == 0)
		m->expert_dtype = ST_U8;
	/* two values a byte, and the scales */
	m->params_experts += 2 * (tgu->numel + tdn->numel);
	m->bytes_experts += tgu->nbytes + tdn->nbytes + blk->fused_scales[0]->nbytes + blk->fused_scales[1]->nbytes;
	return MS_OK;
}

/* e_score_correction_bias [E]: transformers registers it as a persistent buffer, so a checkpoint of the family
 * always has one; without it the selection cannot be reproduced. */
static ms_status check_score_bias(mdl_model *m, int b, ms_error *err)
{
	mdl_block *blk = &m->blocks[b];
	char name[256], what[96];
	snprintf(what, sizeof what, "routing bias of layer %s", blk->label);
	mdl_score_bias_name(m, b, name, sizeof name);
	const dim E = {m->n_experts, m->family->experts_field};
	return expect_tensor(m, name, 1, &E, what, &blk->score_bias, err);
}

static ms_status check_block(mdl_model *m, int b, ms_error *err)
{
	mdl_block *blk = &m->blocks[b];
	const mdl_family *fam = m->family;
	const dim E = {m->n_experts, m->experts_field}, d = {m->hidden, fam->hidden_field};
	const dim f = {m->inter, fam->inter_field};
	const dim rows[MDL_NMAT] = {f, f, d}, cols[MDL_NMAT] = {d, d, f};
	char name[256], what[96];
	blk->experts = calloc((size_t)m->n_experts * MDL_NMAT, sizeof *blk->experts);
	blk->scales = calloc((size_t)m->n_experts * MDL_NMAT, sizeof *blk->scales);
	if (!blk->experts || !blk->scales)
		return ms_fail(err, MS_ERR_NOMEM, "%s: out of memory for the %d experts of layer %s", m->dir, m->n_experts,
			       blk->label);
	snprintf(what, sizeof what, "router of layer %s", blk->label);
	mdl_router_name(m, b, name, sizeof name);
	ms_status st = expect_matrix(m, name, E, d, what, &blk->router, err);
	if (st == MS_OK && fam->bias_suffix)
		st = check_score_bias(m, b, err);
	if (st == MS_OK && fam->router_bias_suffix && mdl_router_bias_name(m, b, name, sizeof name) == 0)
		st = expect_tensor(m, name, 1, &E, what, &blk->router_bias, err);
	if (st == MS_OK && m->layout == MDL_LAYOUT_FUSED)
		return check_fused_block(m, b, err);
	if (st == MS_OK && m->layout == MDL_LAYOUT_INTERLEAVED)
		return check_interleaved_block(m, b, err);
	for (int e = 0; st == MS_OK && e < m->n_experts; e++) {
		snprintf(what, sizeof what, "expert %d of layer %s", e, blk->label);
		for (int k = 0; st == MS_OK && k < MDL_NMAT; k++) {
			if (!fam->mats[k])
				continue;
			mdl_expert_name(m, b, e, k, name, sizeof name);
			const st_tensor **slot = &blk->experts[e * MDL_NMAT + k];
			st = expect_matrix(m, name, rows[k], cols[k], what, slot, err);
			if (st == MS_OK)
				count_expert(m, *slot, b == 0 && e == 0 && k == MDL_UP);
		}
	}
	return st;
}

/* Per expert or fused, decided on the first block: expert 0's up matrix by name, else the fused gate_up_proj
 * (under the fused layout's block prefix, which every block then takes). When neither exists the per-expert
 * layout stays, and check_block names the missing tensor. */
static void detect_layout(mdl_model *m)
{
	const mdl_family *fam = m->family;
	char name[256];
	m->layout = MDL_LAYOUT_PER_EXPERT;
	m->expert_bias = fam->interleaved;
	if (fam->interleaved) {   /* the family's only form: no per-expert tensors to look for */
		m->layout = MDL_LAYOUT_INTERLEAVED;
		return;
	}
	if (fam->no_fused || fam->n_stacks != 1 || m->n_blocks == 0 ||
	    (mdl_expert_name(m, 0, 0, MDL_UP, name, sizeof name) == 0 && st_find(m->st, name)))
		return;
	const mdl_stack *s = &fam->stacks[0];
	const char *tail = fam->fused_tail ? fam->fused_tail : s->tail;
	snprintf(name, sizeof name, "%s%d%s.experts.gate_up_proj", s->head, m->blocks[0].layer, tail);
	if (!st_find(m->st, name))
		return;
	m->layout = MDL_LAYOUT_FUSED;
	for (int b = 0; b < m->n_blocks; b++)
		snprintf(m->blocks[b].prefix, sizeof m->blocks[b].prefix, "%s%d%s", s->head, m->blocks[b].layer, tail);
}

/* ---- quantized weights (io/quant.h) ------------------------------------------------------------------------ */

/* The scale tensor of an F8_E4M3 weight, bound and checked (NULL scale when it is absent: qt_bind_fp8 says so). */
static ms_status bind_fp8(const mdl_model *m, const st_tensor *t, qt_matrix *q, ms_error *err)
{
	char name[600];
	if (m->quant.scheme != QT_FP8)
		return ms_fail(err, MS_ERR_ST_DTYPE, "%s: tensor '%s' is F8_E4M3 but config.json has no quantization_config "
			       "with quant_method \"fp8\"", t->path, t->name);
	if (qt_fp8_scale_name(t->name, name, sizeof name) != 0)
		return ms_fail(err, MS_ERR_MODEL_TENSOR, "%s: tensor '%s' is F8_E4M3 but its name does not end in "
			       "'.weight', so it has no weight_scale_inv", t->path, t->name);
	return qt_bind_fp8(t, st_find(m->st, name), m->quant.block[0], m->quant.block[1], q, err);
}

ms_status mdl_matrix(const mdl_model *m, const st_tensor *t, qt_matrix *out, ms_error *err)
{
	if (!m || !t || !out)
		return ms_fail(err, MS_ERR_ARG, "mdl_matrix: no tensor");
	return t->dtype == ST_F8_E4M3 ? bind_fp8(m, t, out, err) : qt_bind_plain(t, out, err);
}

/* Every tensor against quantization_config: each F8_E4M3 weight has a scale tensor of the right shape with finite
 * scales; each weight_scale_inv belongs to an F8_E4M3 weight; under quant_method fp8 every routed expert matrix
 * not listed in modules_to_not_convert is F8_E4M3. The experts' scales are kept in their block. */
static ms_status check_quant(mdl_model *m, ms_error *err)
{
	static const char suffix[] = ".weight_scale_inv";
	const size_t k = sizeof suffix - 1;
	ms_status st = MS_OK;
	for (size_t i = 0; st == MS_OK && i < st_count(m->st); i++) {
		const st_tensor *t = st_get(m->st, i);
		size_t n = strlen(t->name);
		qt_matrix q;
		if (t->dtype == ST_F8_E4M3) {
			st = bind_fp8(m, t, &q, err);
		} else if (n > k && strcmp(t->name + n - k, suffix) == 0) {
			char weight[600];
			snprintf(weight, sizeof weight, "%.*s.weight", (int)(n - k), t->name);
			const st_tensor *w = st_find(m->st, weight);
			if (!w || w->dtype != ST_F8_E4M3)
				st = ms_fail(err, MS_ERR_MODEL_TENSOR, "%s: tensor '%s' scales '%s', which is %s", t->path,
					     t->name, weight, w ? st_dtype_name(w->dtype) : "missing");
		}
	}
	for (int b = 0; st == MS_OK && b < m->n_blocks; b++) {
		mdl_block *blk = &m->blocks[b];
		for (int i = 0; st == MS_OK && !blk->mx[0].codes && i < m->n_experts * MDL_NMAT; i++) {
			const st_tensor *t = blk->experts[i];
			qt_matrix q;
			if (!t)
				continue;
			if (t->dtype == ST_F8_E4M3) {
				st = bind_fp8(m, t, &q, err);
				blk->scales[i] = q.scales;
				m->bytes_experts += q.scales ? q.scales->nbytes : 0;
			} else if (m->quant.scheme != QT_NONE && !qt_not_converted(&m->quant, t->name)) {
				st = ms_fail(err, MS_ERR_ST_DTYPE, "%s: tensor '%s' is %s but config.json's quantization_config "
					     "says %s (and modules_to_not_convert does not list it)", t->path, t->name,
					     st_dtype_name(t->dtype), qt_scheme_names[m->quant.scheme]);
			}
		}
		if (st == MS_OK && !st_dtype_is_float(blk->router->dtype))
			st = ms_fail(err, MS_ERR_ST_DTYPE, "%s: tensor '%s' (router of layer %s): dtype %s, expected F32, F16 "
				     "or BF16", blk->router->path, blk->router->name, blk->label,
				     st_dtype_name(blk->router->dtype));
	}
	return st;
}

static void count_totals(mdl_model *m)
{
	size_t n = st_count(m->st);
	for (size_t i = 0; i < n; i++) {
		const st_tensor *t = st_get(m->st, i);
		m->params_total += t->numel;
		m->bytes_total += t->nbytes;
	}
	/* MXFP4 experts: a byte of _blocks holds two weights, and _scales hold none */
	for (int b = 0; b < m->n_blocks; b++)
		for (int w = 0; w < MDL_NFUSED; w++)
			if (m->blocks[b].fused_scales[w])
				m->params_total += m->blocks[b].fused[w]->numel - m->blocks[b].fused_scales[w]->numel;
}

/* ---- public -------------------------------------------------------------------------------------------------- */

/* mdl_model plus the parsed config, which callers reach only through mdl_config_json. */
typedef struct {
	mdl_model pub;   /* first member: a mdl_model * from mdl_open is also a model_priv * */
	cJSON *config;
	char *config_text;   /* config.json's bytes as read, for writers that keep them (io/jsonedit.h) */
	size_t config_len;
} model_priv;

static ms_status open_config(mdl_model *m, const char *where, ms_error *err)
{
	cJSON *cfg;
	model_priv *p = (model_priv *)m;
	ms_status st = parse_config(where, &cfg, &p->config_text, &p->config_len, err);
	if (st != MS_OK)
		return st;
	p->config = cfg;
	const cJSON *type = field(cfg, "model_type");
	if (!type)
		return ms_fail(err, MS_ERR_CFG_FIELD, "%s: field 'model_type' missing", where);
	if (!cJSON_IsString(type))
		return ms_fail(err, MS_ERR_CFG_FIELD, "%s: field 'model_type' must be a string", where);
	m->family = find_family(type->valuestring);
	if (!m->family && strcmp(type->valuestring, MDL_FACTORS_MODEL_TYPE) == 0)
		return ms_fail(err, MS_ERR_CFG_FAMILY, "%s: a factored checkpoint (moescope merge --compress-format "
			       "factors): expand it first with 'moescope densify %s --out DIR'", where, m->dir);
	if (!m->family)
		return unknown_family(where, type->valuestring, err);
	snprintf(m->model_type, sizeof m->model_type, "%s", m->family->model_type);
	st = read_dims(m, cfg, where, err);
	if (st == MS_OK)
		st = qt_config_read(cfg, where, &m->quant, err);
	if (st == MS_OK)
		st = list_blocks(m, cfg, where, err);
	return st;
}

ms_status mdl_open(const char *dir, mdl_model **out, ms_error *err)
{
	if (!dir || !out)
		return ms_fail(err, MS_ERR_ARG, "mdl_open: no directory");
	*out = NULL;
	char where[4200];
	if (strlen(dir) >= sizeof ((mdl_model *)0)->dir)
		return ms_fail(err, MS_ERR_ARG, "%.200s...: path too long", dir);
	model_priv *p = calloc(1, sizeof *p);
	mdl_model *m = p ? &p->pub : NULL;
	if (!m)
		return ms_fail(err, MS_ERR_NOMEM, "%s: out of memory", dir);
	snprintf(m->dir, sizeof m->dir, "%s", dir);
	snprintf(where, sizeof where, "%s/config.json", dir);
	ms_status st = open_config(m, where, err);
	if (st == MS_OK)
		st = st_open(dir, &m->st, err);
	if (st == MS_OK)
		detect_layout(m);
	for (int b = 0; st == MS_OK && b < m->n_blocks; b++)
		st = check_block(m, b, err);
	if (st == MS_OK)
		st = check_quant(m, err);
	if (st != MS_OK) {
		mdl_close(m);
		return st;
	}
	count_totals(m);
	*out = m;
	return MS_OK;
}

void mdl_close(mdl_model *m)
{
	if (!m)
		return;
	for (int b = 0; b < m->n_blocks; b++) {
		free(m->blocks[b].experts);
		free(m->blocks[b].views);
		free(m->blocks[b].scales);
	}
	free(m->blocks);
	st_close(m->st);
	cJSON_Delete(((model_priv *)m)->config);
	free(((model_priv *)m)->config_text);
	free(m);
}

int mdl_find_block(const mdl_model *m, const char *label)
{
	if (!m || !label)
		return -1;
	for (int b = 0; b < m->n_blocks; b++)
		if (strcmp(m->blocks[b].label, label) == 0)
			return b;
	return -1;
}

const char **mdl_block_labels(const mdl_model *m)
{
	const char **labels = malloc((size_t)(m->n_blocks > 0 ? m->n_blocks : 1) * sizeof *labels);
	for (int b = 0; labels && b < m->n_blocks; b++)
		labels[b] = m->blocks[b].label;
	return labels;
}

static int fits(int n, size_t len)
{
	return n >= 0 && (size_t)n < len;
}

int mdl_router_name(const mdl_model *m, int b, char *buf, size_t len)
{
	if (!m || !buf || len == 0 || b < 0 || b >= m->n_blocks)
		return -1;
	return fits(snprintf(buf, len, "%s%s", m->blocks[b].prefix, m->family->router_suffix), len) ? 0 : -1;
}

int mdl_expert_name(const mdl_model *m, int b, int e, int mat, char *buf, size_t len)
{
	if (!m || !buf || len == 0 || b < 0 || b >= m->n_blocks || e < 0 || e >= m->n_experts || mat < 0 ||
	    mat >= MDL_NMAT)
		return -1;
	const char *name = m->family->mats[mat];
	if (!name) {
		buf[0] = '\0';
		return 0;
	}
	int n = snprintf(buf, len, "%s%s%d.%s.weight", m->blocks[b].prefix, m->family->expert_infix, e, name);
	return fits(n, len) ? 0 : -1;
}

int mdl_fused_name(const mdl_model *m, int b, int which, char *buf, size_t len)
{
	if (!m || !buf || len == 0 || b < 0 || b >= m->n_blocks || m->layout == MDL_LAYOUT_PER_EXPERT || which < 0 ||
	    which >= MDL_NFUSED)
		return -1;
	static const char *const names[MDL_NFUSED] = {"gate_up_proj", "down_proj"};
	return fits(snprintf(buf, len, "%s.experts.%s", m->blocks[b].prefix, names[which]), len) ? 0 : -1;
}

int mdl_fused_bias_name(const mdl_model *m, int b, int which, char *buf, size_t len)
{
	if (!m || m->layout != MDL_LAYOUT_INTERLEAVED || mdl_fused_name(m, b, which, buf, len) != 0)
		return -1;
	size_t used = strlen(buf);
	return fits(snprintf(buf + used, len - used, "_bias"), len - used) ? 0 : -1;
}

/* Block b's prefix followed by suffix (a family's bias tensor): 0, or -1 when there is none or buf is too small. */
static int block_tensor_name(const mdl_model *m, int b, const char *suffix, char *buf, size_t len)
{
	if (!m || !buf || len == 0 || b < 0 || b >= m->n_blocks || !suffix)
		return -1;
	return fits(snprintf(buf, len, "%s%s", m->blocks[b].prefix, suffix), len) ? 0 : -1;
}

/* A per-expert vector [E] of block b as float32: the tensor t, or zeros when the block has none. */
static ms_status load_expert_vector(const mdl_model *m, int b, const st_tensor *t, float *out, ms_error *err)
{
	if (!m || !out || b < 0 || b >= m->n_blocks)
		return ms_fail(err, MS_ERR_ARG, "loading a router vector: block %d out of range", b);
	if (!t) {
		memset(out, 0, (size_t)m->n_experts * sizeof *out);
		return MS_OK;
	}
	return st_read_f32(t, out, err);
}

int mdl_router_bias_name(const mdl_model *m, int b, char *buf, size_t len)
{
	return m ? block_tensor_name(m, b, m->family->router_bias_suffix, buf, len) : -1;
}

ms_status mdl_load_router_bias(const mdl_model *m, int b, float *bias, ms_error *err)
{
	return load_expert_vector(m, b, m && b >= 0 && b < m->n_blocks ? m->blocks[b].router_bias : NULL, bias, err);
}

int mdl_score_bias_name(const mdl_model *m, int b, char *buf, size_t len)
{
	return m ? block_tensor_name(m, b, m->family->bias_suffix, buf, len) : -1;
}

ms_status mdl_load_score_bias(const mdl_model *m, int b, float *bias, ms_error *err)
{
	return load_expert_vector(m, b, m && b >= 0 && b < m->n_blocks ? m->blocks[b].score_bias : NULL, bias, err);
}

ms_status mdl_load_router(const mdl_model *m, int b, float *router, ms_error *err)
{
	if (!m || !router || b < 0 || b >= m->n_blocks)
		return ms_fail(err, MS_ERR_ARG, "mdl_load_router: block %d out of range", b);
	return st_read_f32(m->blocks[b].router, router, err);
}

/* Expert e's matrices from the interleaved layout. Each slab is decoded whole to float32 (st_read_f32, or its
 * rows of the MXFP4 matrices through qt_read_rows_f32), then gathered: gate[i, j] = slab[j, 2i], up[i, j] =
 * slab[j, 2i + 1], down[r, i] = down slab[i, r]. */
static ms_status load_interleaved(const mdl_model *m, int b, int e, float *gate, float *up, float *down,
				  ms_error *err)
{
	const int64_t d = m->hidden, f = m->inter;
	const st_tensor *const *t = &m->blocks[b].experts[e * MDL_NMAT];
	const qt_matrix *mx = m->blocks[b].mx;
	float *slab = malloc((size_t)((gate || up ? 2 * f : f) * d) * sizeof *slab);   /* [2f, d] or down's [f, d] */
	if (!slab)
		return ms_fail(err, MS_ERR_NOMEM, "%s: out of memory loading expert %d of layer %s", m->dir, e,
			       m->blocks[b].label);
	if (mx[0].codes) {   /* MXFP4: already [out, in]; gate and up are the even and odd rows */
		ms_status st = gate || up ? qt_read_rows_f32(&mx[MDL_FUSED_GATE_UP], 2 * f * e, 2 * f, slab, err) : MS_OK;
		for (int64_t i = 0; st == MS_OK && (gate || up) && i < f; i++) {
			if (gate)
				memcpy(gate + i * d, slab + 2 * i * d, (size_t)d * sizeof *gate);
			if (up)
				memcpy(up + i * d, slab + (2 * i + 1) * d, (size_t)d * sizeof *up);
		}
		if (st == MS_OK && down)
			st = qt_read_rows_f32(&mx[MDL_FUSED_DOWN], d * e, d, down, err);
		free(slab);
		return st;
	}
	ms_status st = gate || up ? st_read_f32(t[MDL_GATE], slab, err) : MS_OK;
	for (int64_t j = 0; st == MS_OK && (gate || up) && j < d; j++) {
		const float *row = slab + j * 2 * f;
		for (int64_t i = 0; i < f; i++) {
			if (gate)
				gate[i * d + j] = row[2 * i];
			if (up)
				up[i * d + j] = row[2 * i + 1];
		}
	}
	if (st == MS_OK && down)
		st = st_read_f32(t[MDL_DOWN], slab, err);
	for (int64_t i = 0; st == MS_OK && down && i < f; i++)
		for (int64_t r = 0; r < d; r++)
			down[r * f + i] = slab[i * d + r];
	free(slab);
	return st;
}

ms_status mdl_load_expert_bias(const mdl_model *m, int b, int e, float *gate, float *up, float *down,
			       ms_error *err)
{
	if (!m || b < 0 || b >= m->n_blocks || e < 0 || e >= m->n_experts)
		return ms_fail(err, MS_ERR_ARG, "mdl_load_expert_bias: block %d expert %d out of range", b, e);
	const int64_t d = m->hidden, f = m->inter;
	const mdl_block *blk = &m->blocks[b];
	if (!m->expert_bias) {
		if (gate)
			memset(gate, 0, (size_t)f * sizeof *gate);
		if (up)
			memset(up, 0, (size_t)f * sizeof *up);
		if (down)
			memset(down, 0, (size_t)d * sizeof *down);
		return MS_OK;
	}
	float *pair = malloc((size_t)(2 * f) * sizeof *pair);
	if (!pair)
		return ms_fail(err, MS_ERR_NOMEM, "%s: out of memory loading expert %d of layer %s", m->dir, e,
			       blk->label);
	st_tensor row;
	char name[VIEW_NAME], slice[32];
	snprintf(slice, sizeof slice, "[%d]", e);
	const st_tensor *tgu = blk->fused_bias[MDL_FUSED_GATE_UP], *tdn = blk->fused_bias[MDL_FUSED_DOWN];
	make_view(&row, name, tgu, (uint64_t)(2 * f) * (uint64_t)e, 1, 2 * f, slice);
	ms_status st = st_read_f32(&row, pair, err);
	for (int64_t i = 0; st == MS_OK && i < f; i++) {
		if (gate)
			gate[i] = pair[2 * i];
		if (up)
			up[i] = pair[2 * i + 1];
	}
	free(pair);
	if (st == MS_OK && down) {
		make_view(&row, name, tdn, (uint64_t)d * (uint64_t)e, 1, d, slice);
		st = st_read_f32(&row, down, err);
	}
	return st;
}

ms_status mdl_load_expert(const mdl_model *m, int b, int e, float *gate, float *up, float *down, ms_error *err)
{
	if (!m || b < 0 || b >= m->n_blocks || e < 0 || e >= m->n_experts)
		return ms_fail(err, MS_ERR_ARG, "mdl_load_expert: block %d expert %d out of range", b, e);
	if (m->layout == MDL_LAYOUT_INTERLEAVED)
		return load_interleaved(m, b, e, gate, up, down, err);
	float *dst[MDL_NMAT] = {gate, up, down};
	const st_tensor **t = &m->blocks[b].experts[e * MDL_NMAT];
	for (int k = 0; k < MDL_NMAT; k++) {
		if (!dst[k] || !t[k])   /* a matrix the family lacks, or one the caller does not want */
			continue;
		qt_matrix q;
		ms_status st = mdl_matrix(m, t[k], &q, err);
		if (st == MS_OK)
			st = qt_read_f32(&q, dst[k], err);
		if (st != MS_OK)
			return st;
	}
	return MS_OK;
}

const void *mdl_config_json(const mdl_model *m)
{
	return m ? ((const model_priv *)m)->config : NULL;
}

const char *mdl_config_text(const mdl_model *m, size_t *len)
{
	*len = m ? ((const model_priv *)m)->config_len : 0;
	return m ? ((const model_priv *)m)->config_text : NULL;
}

/* Sets top-level member key to value, adding it when config.json leaves it to the family's default. */
static ms_status set_or_add(jedit *d, const char *key, const char *value, ms_error *err)
{
	const char *path[] = {key};
	size_t start, end;
	return jedit_find(d, path, 1, &start, &end) ? jedit_set(d, path, 1, value, err)
						    : jedit_add(d, NULL, 0, key, value, err);
}

ms_status mdl_config_set_experts(const mdl_model *m, jedit *d, int n_out, ms_error *err)
{
	const mdl_family *fam = m->family;
	if (n_out < 1)
		return ms_fail(err, MS_ERR_ARG, "%s: a checkpoint needs at least one expert per block", m->dir);
	char count[16];
	snprintf(count, sizeof count, "%d", n_out);
	const char *experts[] = {m->experts_field}, *topk[] = {m->topk_field}, *method[] = {m->group_method_field};
	ms_status st = jedit_set(d, experts, 1, count, err);
	if (st == MS_OK && m->topk_field && m->top_k > n_out)
		st = jedit_set(d, topk, 1, count, err);
	if (st == MS_OK && method[0])   /* deepseek_v2: plain top-k in place of group_limited_greedy */
		st = jedit_set(d, method, 1, "\"greedy\"", err);
	/* DeepSeek-V3: plain top-k over the biased scores (pipeline.c merged_config routes the same way); config.json
	 * may leave the groups to the family's defaults */
	if (st == MS_OK && m->n_group_field)
		st = set_or_add(d, m->n_group_field, "1", err);
	if (st == MS_OK && m->n_group_field)
		st = set_or_add(d, m->topk_group_field, "1", err);
	if (st == MS_OK && fam->capacity_field && m->routing.capacity > 0) {
		/* the capacity is per expert: keep the block's total, E x capacity, over n_out experts */
		const double scaled = ceil((double)m->routing.capacity * m->n_experts / n_out);
		if (scaled > 2147483647.0)
			return ms_fail(err, MS_ERR_CFG_FIELD, "%s/config.json: %s %d scaled by %d / %d is too large", m->dir,
				       fam->capacity_field, m->routing.capacity, m->n_experts, n_out);
		char cap[32];
		snprintf(cap, sizeof cap, "%.0f", scaled);
		st = set_or_add(d, fam->capacity_field, cap, err);
	}
	return st;
}
