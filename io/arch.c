/* The non-MoE architecture of a decoder-only checkpoint (io/arch.h): one table row per family. */
#include "io/arch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "io/pages.h"

struct arch_family {
	const char *model_type;
	arch_attn attn;
	arch_norm norm;
	double eps_default;                /* rms_norm_eps (phimoe's LayerNorm reads the same field) */
	double theta_default;              /* rope_theta */
	int max_position_default;
	const char *head_dim_field;        /* NULL: hidden_size / num_attention_heads whatever the config says */
	int qkv_bias;                      /* 1 or 0 fixed, -1: config field attention_bias */
	int o_bias;                        /* same */
	int attention_bias_default;        /* attention_bias when config.json has none */
	arch_qk qk_norm;
	const char *clip_field;            /* clip_qkv, or NULL */
	const char *window_field;          /* sliding_window, or NULL */
	const char *window_switch_field;   /* use_sliding_window (qwen): the window needs it true, or NULL */
	int window_default;                /* the config class's sliding_window when the field is absent (0: none) */
	const char *layer_types_field;     /* layer_types (qwen2_moe, gpt_oss): which layers have the window, or NULL
					    * for all */
	const char *qkv_bias_field;        /* qkv_bias (qwen2_moe in transformers 5), or NULL */
	const char *layer_freq_field;      /* moe_layer_freq (deepseek_v2): only 1 is computed alike everywhere */
	const char *dense_inter_field;     /* intermediate_size of dense layers, or NULL */
	const char *shared_inter_field;    /* the shared expert's width field, or NULL */
	const char *shared_count_field;    /* multiplies it (deepseek n_shared_experts), or NULL */
	int shared_gated;
	const char *sparsemixer_field;     /* router_jitter_noise (phimoe), or NULL for softmax top-k */
	double sparsemixer_default;
	const char *lm_head_bias_field;    /* lm_head_bias (phimoe), or NULL */
	int rope_interleaved;
	const char *rope_interleave_field; /* config bool overriding rope_interleaved (deepseek_v3), or NULL */
	int mla_mscale;                    /* the softmax scale takes yarn's mscale(factor, mscale_all_dim)^2 */
	const char *qk_norm_field;         /* config bool switching qk_norm on (glm4_moe use_qk_norm), or NULL */
	double partial_rotary_default;     /* partial_rotary_factor when config.json has none (0: the field is not
					    * read, every head dimension rotates) */
	int even_layers_slide;             /* without layer_types, the even layers take the window (gpt_oss) */
	int sinks;                         /* self_attn.sinks */
	const char *names[ARCH_T_COUNT];   /* NULL where the family has no such weight */
};

#define LAYER "model.layers.%d."
#define ENDS_AND_NORMS \
	[ARCH_T_EMBED] = "model.embed_tokens.weight", [ARCH_T_FINAL_NORM] = "model.norm.weight", \
	[ARCH_T_FINAL_NORM_BIAS] = "model.norm.bias", [ARCH_T_LM_HEAD] = "lm_head.weight", \
	[ARCH_T_LM_HEAD_BIAS] = "lm_head.bias", [ARCH_T_IN_NORM] = LAYER "input_layernorm.weight", \
	[ARCH_T_IN_NORM_BIAS] = LAYER "input_layernorm.bias", \
	[ARCH_T_POST_NORM] = LAYER "post_attention_layernorm.weight", \
	[ARCH_T_POST_NORM_BIAS] = LAYER "post_attention_layernorm.bias"
#define GQA_NAMES \
	[ARCH_T_Q] = LAYER "self_attn.q_proj.weight", [ARCH_T_Q_BIAS] = LAYER "self_attn.q_proj.bias", \
	[ARCH_T_K] = LAYER "self_attn.k_proj.weight", [ARCH_T_K_BIAS] = LAYER "self_attn.k_proj.bias", \
	[ARCH_T_V] = LAYER "self_attn.v_proj.weight", [ARCH_T_V_BIAS] = LAYER "self_attn.v_proj.bias", \
	[ARCH_T_O] = LAYER "self_attn.o_proj.weight", [ARCH_T_O_BIAS] = LAYER "self_attn.o_proj.bias", \
	[ARCH_T_Q_NORM] = LAYER "self_attn.q_norm.weight", [ARCH_T_K_NORM] = LAYER "self_attn.k_norm.weight"
#define DENSE_NAMES \
	[ARCH_T_MLP_GATE] = LAYER "mlp.gate_proj.weight", [ARCH_T_MLP_UP] = LAYER "mlp.up_proj.weight", \
	[ARCH_T_MLP_DOWN] = LAYER "mlp.down_proj.weight"

static const arch_family families[] = {
	{.model_type = "mixtral", .attn = ARCH_ATTN_GQA, .norm = ARCH_NORM_RMS, .eps_default = 1e-5,
	 .theta_default = 1e6, .max_position_default = 4096 * 32, .head_dim_field = "head_dim", .qkv_bias = 0,
	 .o_bias = 0, .qk_norm = ARCH_QK_NONE, .window_field = "sliding_window",
	 .names = {ENDS_AND_NORMS, GQA_NAMES}},
	{.model_type = "qwen2_moe", .attn = ARCH_ATTN_GQA, .norm = ARCH_NORM_RMS, .eps_default = 1e-6,
	 .theta_default = 10000.0, .max_position_default = 32768, .head_dim_field = "head_dim", .qkv_bias = 1,
	 .o_bias = 0, .qk_norm = ARCH_QK_NONE, .window_field = "sliding_window",
	 .window_switch_field = "use_sliding_window", .window_default = 4096, .layer_types_field = "layer_types",
	 .qkv_bias_field = "qkv_bias", .dense_inter_field = "intermediate_size",
	 .shared_inter_field = "shared_expert_intermediate_size", .shared_gated = 1,
	 .names = {ENDS_AND_NORMS, GQA_NAMES, DENSE_NAMES,
		   [ARCH_T_SHARED_GATE] = LAYER "mlp.shared_expert.gate_proj.weight",
		   [ARCH_T_SHARED_UP] = LAYER "mlp.shared_expert.up_proj.weight",
		   [ARCH_T_SHARED_DOWN] = LAYER "mlp.shared_expert.down_proj.weight",
		   [ARCH_T_SHARED_EXPERT_GATE] = LAYER "mlp.shared_expert_gate.weight"}},
	{.model_type = "qwen3_moe", .attn = ARCH_ATTN_GQA, .norm = ARCH_NORM_RMS, .eps_default = 1e-6,
	 .theta_default = 10000.0, .max_position_default = 32768, .head_dim_field = "head_dim", .qkv_bias = -1,
	 .o_bias = -1, .qk_norm = ARCH_QK_HEAD, .window_field = "sliding_window",
	 /* Qwen3MoeConfig keeps sliding_window only with use_sliding_window, and then every layer uses it */
	 .window_switch_field = "use_sliding_window", .window_default = 4096, .dense_inter_field = "intermediate_size",
	 .names = {ENDS_AND_NORMS, GQA_NAMES, DENSE_NAMES}},
	{.model_type = "olmoe", .attn = ARCH_ATTN_GQA, .norm = ARCH_NORM_RMS, .eps_default = 1e-5,
	 .theta_default = 10000.0, .max_position_default = 4096, .head_dim_field = NULL, .qkv_bias = -1,
	 .o_bias = -1, .qk_norm = ARCH_QK_FULL, .clip_field = "clip_qkv", .names = {ENDS_AND_NORMS, GQA_NAMES}},
	{.model_type = "phimoe", .attn = ARCH_ATTN_GQA, .norm = ARCH_NORM_LAYER, .eps_default = 1e-5,
	 .theta_default = 1e6, .max_position_default = 4096 * 32, .head_dim_field = "head_dim", .qkv_bias = -1,
	 .o_bias = -1, .qk_norm = ARCH_QK_NONE, .window_field = "sliding_window",
	 .sparsemixer_field = "router_jitter_noise", .sparsemixer_default = 0.01,
	 .lm_head_bias_field = "lm_head_bias", .names = {ENDS_AND_NORMS, GQA_NAMES}},
	{.model_type = "deepseek_v2", .attn = ARCH_ATTN_MLA, .norm = ARCH_NORM_RMS, .eps_default = 1e-6,
	 .theta_default = 10000.0, .max_position_default = 2048, .qkv_bias = -1, .o_bias = -1,
	 .qk_norm = ARCH_QK_NONE, .dense_inter_field = "intermediate_size",
	 .shared_inter_field = "moe_intermediate_size", .shared_count_field = "n_shared_experts",
	 .rope_interleaved = 1, .layer_freq_field = "moe_layer_freq",
	 .names = {ENDS_AND_NORMS, DENSE_NAMES,
		   [ARCH_T_Q] = LAYER "self_attn.q_proj.weight", [ARCH_T_Q_A] = LAYER "self_attn.q_a_proj.weight",
		   [ARCH_T_Q_A_BIAS] = LAYER "self_attn.q_a_proj.bias",
		   [ARCH_T_KV_A_BIAS] = LAYER "self_attn.kv_a_proj_with_mqa.bias",
		   [ARCH_T_Q_A_NORM] = LAYER "self_attn.q_a_layernorm.weight",
		   [ARCH_T_Q_B] = LAYER "self_attn.q_b_proj.weight",
		   [ARCH_T_KV_A] = LAYER "self_attn.kv_a_proj_with_mqa.weight",
		   [ARCH_T_KV_A_NORM] = LAYER "self_attn.kv_a_layernorm.weight",
		   [ARCH_T_KV_B] = LAYER "self_attn.kv_b_proj.weight", [ARCH_T_O] = LAYER "self_attn.o_proj.weight",
		   [ARCH_T_O_BIAS] = LAYER "self_attn.o_proj.bias",
		   [ARCH_T_SHARED_GATE] = LAYER "mlp.shared_experts.gate_proj.weight",
		   [ARCH_T_SHARED_UP] = LAYER "mlp.shared_experts.up_proj.weight",
		   [ARCH_T_SHARED_DOWN] = LAYER "mlp.shared_experts.down_proj.weight"}},
	/* Glm4MoeAttention: q/k/v biases by attention_bias (o_proj never), per-head q/k RMSNorm with use_qk_norm, RoPE
	 * (rotate_half) on the first partial_rotary_factor of each head; DeepSeek-V3's MoE block. */
	{.model_type = "glm4_moe", .attn = ARCH_ATTN_GQA, .norm = ARCH_NORM_RMS, .eps_default = 1e-5,
	 .theta_default = 10000.0, .max_position_default = 131072, .head_dim_field = "head_dim", .qkv_bias = -1,
	 .o_bias = 0, .qk_norm = ARCH_QK_HEAD, .qk_norm_field = "use_qk_norm", .partial_rotary_default = 0.5,
	 .dense_inter_field = "intermediate_size", .shared_inter_field = "moe_intermediate_size",
	 .shared_count_field = "n_shared_experts",
	 .names = {ENDS_AND_NORMS, GQA_NAMES, DENSE_NAMES,
		   [ARCH_T_SHARED_GATE] = LAYER "mlp.shared_experts.gate_proj.weight",
		   [ARCH_T_SHARED_UP] = LAYER "mlp.shared_experts.up_proj.weight",
		   [ARCH_T_SHARED_DOWN] = LAYER "mlp.shared_experts.down_proj.weight"}},
	/* GptOssAttention: q/k/v/o biases (attention_bias, default true), a learned sink logit per head, sliding and
	 * full attention layers by layer_types, yarn RoPE (rotate_half) by default; RMSNorm; every layer MoE. */
	{.model_type = "gpt_oss", .attn = ARCH_ATTN_GQA, .norm = ARCH_NORM_RMS, .eps_default = 1e-5,
	 .theta_default = 150000.0, .max_position_default = 131072, .head_dim_field = "head_dim", .qkv_bias = -1,
	 .o_bias = -1, .attention_bias_default = 1, .qk_norm = ARCH_QK_NONE, .window_field = "sliding_window", .window_default = 128,
	 .layer_types_field = "layer_types", .even_layers_slide = 1, .sinks = 1,
	 .names = {ENDS_AND_NORMS, GQA_NAMES, [ARCH_T_SINKS] = LAYER "self_attn.sinks"}},
	/* DeepseekV3Attention is DeepSeek-V2's latent attention; rope_interleave (default true) picks the rotation */
	{.model_type = "deepseek_v3", .attn = ARCH_ATTN_MLA, .norm = ARCH_NORM_RMS, .eps_default = 1e-6,
	 .theta_default = 10000.0, .max_position_default = 2048, .qkv_bias = -1, .o_bias = -1,
	 .qk_norm = ARCH_QK_NONE, .dense_inter_field = "intermediate_size",
	 .shared_inter_field = "moe_intermediate_size", .shared_count_field = "n_shared_experts",
	 .rope_interleaved = 1, .rope_interleave_field = "rope_interleave", .mla_mscale = 1,
	 .names = {ENDS_AND_NORMS, DENSE_NAMES,
		   [ARCH_T_Q] = LAYER "self_attn.q_proj.weight", [ARCH_T_Q_A] = LAYER "self_attn.q_a_proj.weight",
		   [ARCH_T_Q_A_NORM] = LAYER "self_attn.q_a_layernorm.weight",
		   [ARCH_T_Q_B] = LAYER "self_attn.q_b_proj.weight",
		   [ARCH_T_KV_A] = LAYER "self_attn.kv_a_proj_with_mqa.weight",
		   [ARCH_T_KV_A_NORM] = LAYER "self_attn.kv_a_layernorm.weight",
		   [ARCH_T_KV_B] = LAYER "self_attn.kv_b_proj.weight", [ARCH_T_O] = LAYER "self_attn.o_proj.weight",
		   [ARCH_T_O_BIAS] = LAYER "self_attn.o_proj.bias",
		   [ARCH_T_SHARED_GATE] = LAYER "mlp.shared_experts.gate_proj.weight",
		   [ARCH_T_SHARED_UP] = LAYER "mlp.shared_experts.up_proj.weight",
		   [ARCH_T_SHARED_DOWN] = LAYER "mlp.shared_experts.down_proj.weight"}},
};
#define FAMILY_COUNT ((int)(sizeof families / sizeof families[0]))

/* ---- config.json fields -------------------------------------------------------------------------------------- */

#define MAX_DIM (1 << 24)

typedef struct {
	const cJSON *cfg;
	char where[4200];   /* "DIR/config.json" */
	ms_error *err;
} reader;

static const cJSON *field(const reader *r, const char *name)
{
	const cJSON *v = name ? cJSON_GetObjectItemCaseSensitive(r->cfg, name) : NULL;
	return cJSON_IsNull(v) ? NULL : v;   /* null means the class default, as in transformers */
}

static ms_status get_int(const reader *r, const char *name, long long lo, long long hi, int required, int dflt,
			 int *out)
{
	const cJSON *v = field(r, name);
	if (!v) {
		*out = dflt;
		return required ? ms_fail(r->err, MS_ERR_CFG_FIELD, "%s: field '%s' missing", r->where, name) : MS_OK;
	}
	double x = cJSON_IsNumber(v) ? v->valuedouble : NAN;
	if (!isfinite(x) || x != floor(x) || x < (double)lo || x > (double)hi)
		return ms_fail(r->err, MS_ERR_CFG_FIELD, "%s: field '%s' must be an integer in [%lld, %lld]", r->where,
			       name, lo, hi);
	*out = (int)x;
	return MS_OK;
}

static ms_status get_real(const reader *r, const char *name, double lo, double hi, double dflt, double *out)
{
	const cJSON *v = field(r, name);
	*out = dflt;
	if (!v)
		return MS_OK;
	if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < lo || v->valuedouble > hi)
		return ms_fail(r->err, MS_ERR_CFG_FIELD, "%s: field '%s' must be a number in [%g, %g]", r->where, name,
			       lo, hi);
	*out = v->valuedouble;
	return MS_OK;
}

static ms_status get_bool(const reader *r, const char *name, int dflt, int *out)
{
	const cJSON *v = field(r, name);
	*out = dflt;
	if (!v)
		return MS_OK;
	if (!cJSON_IsBool(v))
		return ms_fail(r->err, MS_ERR_CFG_FIELD, "%s: field '%s' must be true or false", r->where, name);
	*out = cJSON_IsTrue(v);
	return MS_OK;
}

/* A number inside the RoPE object `obj` (named `where` in messages: rope_scaling or rope_parameters). */
static ms_status rope_real(const reader *r, const cJSON *obj, const char *where, const char *name, double dflt,
			   double *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
	*out = dflt;
	if (!v || cJSON_IsNull(v))
		return MS_OK;
	if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < 0)
		return ms_fail(r->err, MS_ERR_CFG_FIELD, "%s: field '%s.%s' must be a number >= 0", r->where, where,
			       name);
	*out = v->valuedouble;
	return MS_OK;
}

/* rope_parameters keyed by layer type ({"full_attention": {...}, "sliding_attention": {...}}): every member an
 * object. */
static int per_layer_type(const cJSON *obj)
{
	const cJSON *v;
	int n = 0;
	cJSON_ArrayForEach(v, obj) {
		if (!cJSON_IsObject(v))
			return 0;
		n++;
	}
	return n > 0;
}

/* The RoPE object transformers 5 uses (RotaryEmbeddingConfigMixin.convert_rope_params_to_dict): a non-empty
 * rope_scaling wins over rope_parameters. NULL when there is neither; *legacy says which. */
static ms_status rope_object(const reader *r, const cJSON **obj, const char **where, int *legacy)
{
	static const char *const names[] = {"rope_scaling", "rope_parameters"};
	*obj = NULL;
	*where = NULL;
	for (int i = 0; i < 2; i++) {
		const cJSON *o = field(r, names[i]);
		if (o && !cJSON_IsObject(o))
			return ms_fail(r->err, MS_ERR_CFG_FIELD, "%s: field '%s' must be an object or null", r->where,
				       names[i]);
		if (!*obj && o && o->child) {
			*obj = o;
			*where = names[i];
			*legacy = i == 0;
		}
	}
	if (*obj && per_layer_type(*obj))
		return ms_fail(r->err, MS_ERR_CFG_FIELD, "%s: field '%s': one RoPE per layer type is not supported by the "
			       "forward pass", r->where, *where);
	return MS_OK;
}

/* yarn's lengths and corrections. transformers 4 (rope_scaling) takes the factor as max_position_embeddings /
 * original_max_position_embeddings when the original length is given; transformers 5 (rope_parameters) keeps
 * the explicit factor and takes the ratio only without one, and lets a top-level original_max_position_embeddings
 * override the object's. */
static ms_status read_yarn(const reader *r, const cJSON *s, const char *where, int legacy, arch_model *a)
{
	a->rope.kind = ARCH_ROPE_YARN;
	const cJSON *tr = cJSON_GetObjectItemCaseSensitive(s, "truncate");
	a->rope.truncate = cJSON_IsBool(tr) ? cJSON_IsTrue(tr) : 1;
	const cJSON *orig_top = field(r, "original_max_position_embeddings");
	const int has_orig = cJSON_GetObjectItemCaseSensitive(s, "original_max_position_embeddings") != NULL;
	ms_status st = rope_real(r, s, where, "original_max_position_embeddings", a->max_position,
				 &a->rope.original_max_position);
	if (st == MS_OK && !legacy && orig_top)
		st = get_real(r, "original_max_position_embeddings", 1, 1e12, a->max_position,
			      &a->rope.original_max_position);
	if (st == MS_OK)
		st = rope_real(r, s, where, "beta_fast", 32.0, &a->rope.beta_fast);
	if (st == MS_OK)
		st = rope_real(r, s, where, "beta_slow", 1.0, &a->rope.beta_slow);
	if (st == MS_OK)
		st = rope_real(r, s, where, "mscale", 0.0, &a->rope.mscale);
	if (st == MS_OK)
		st = rope_real(r, s, where, "mscale_all_dim", 0.0, &a->rope.mscale_all_dim);
	if (st == MS_OK)
		st = rope_real(r, s, where, "attention_factor", 0.0, &a->rope.attention_factor);
	if (st != MS_OK)
		return st;
	const cJSON *factor = cJSON_GetObjectItemCaseSensitive(s, "factor");
	if (a->rope.original_max_position > 0 && ((legacy && has_orig) || (!legacy && (!factor || cJSON_IsNull(factor)))))
		a->rope.factor = a->max_position / a->rope.original_max_position;
	if (a->rope.factor <= 0 || a->rope.original_max_position <= 0)
		return ms_fail(r->err, MS_ERR_CFG_FIELD, "%s: field '%s': yarn needs a positive factor and "
			       "original_max_position_embeddings", r->where, where);
	return MS_OK;
}

/* rope_theta and the scaling: transformers 4's rope_theta and rope_scaling, or 5's rope_parameters (whose own
 * rope_theta wins over a top-level one). default, linear and yarn are computed; any other rope_type, a
 * partial_rotary_factor other than 1, or one RoPE per layer type is refused with the field named. */
static ms_status read_rope(const reader *r, arch_model *a)
{
	const arch_family *f = a->family;
	const cJSON *s;
	const char *where;
	int legacy = 0;
	a->rope.kind = ARCH_ROPE_DEFAULT;
	a->rope.factor = 1.0;
	a->rope.interleaved = f->rope_interleaved;
	ms_status st = rope_object(r, &s, &where, &legacy);
	if (st == MS_OK)
		st = get_real(r, "rope_theta", 1e-6, 1e30, f->theta_default, &a->rope.theta);
	const cJSON *theta = s ? cJSON_GetObjectItemCaseSensitive(s, "rope_theta") : NULL;
	if (st == MS_OK && theta && !cJSON_IsNull(theta)) {
		if (!cJSON_IsNumber(theta) || !isfinite(theta->valuedouble) || theta->valuedouble <= 0)
			return ms_fail(r->err, MS_ERR_CFG_FIELD, "%s: field '%s.rope_theta' must be a positive number",
				       r->where, where);
		a->rope.theta = theta->valuedouble;
	}
	double partial = 1.0;
	if (st == MS_OK)
		st = get_real(r, "partial_rotary_factor", 0.0, 1.0, 1.0, &partial);
	if (st == MS_OK && s)
		st = rope_real(r, s, where, "partial_rotary_factor", partial, &partial);
	/* families with partial rotary (glm4_moe) read it with the attention; elsewhere it must be 1 */
	if (st == MS_OK && partial != 1.0 && f->partial_rotary_default <= 0)
		st = ms_fail(r->err, MS_ERR_CFG_FIELD, "%s: field 'partial_rotary_factor' %g: RoPE over part of the head "
			     "is not supported by the forward pass for this family", r->where, partial);
	if (st != MS_OK || !s)
		return st;
	const cJSON *type = cJSON_GetObjectItemCaseSensitive(s, "rope_type");
	if (!cJSON_IsString(type))
		type = cJSON_GetObjectItemCaseSensitive(s, "type");
	if (type && !cJSON_IsString(type))
		return ms_fail(r->err, MS_ERR_CFG_FIELD, "%s: field '%s.rope_type' must be a string", r->where, where);
	if (!type && legacy)
		return ms_fail(r->err, MS_ERR_CFG_FIELD, "%s: field 'rope_scaling' has no 'rope_type'", r->where);
	const char *t = type ? type->valuestring : "default";   /* transformers 5: no type is the default RoPE */
	st = rope_real(r, s, where, "factor", 1.0, &a->rope.factor);
	if (st != MS_OK || strcmp(t, "default") == 0)
		return st;
	if (strcmp(t, "linear") == 0) {
		a->rope.kind = ARCH_ROPE_LINEAR;
		return a->rope.factor > 0 ? MS_OK : ms_fail(r->err, MS_ERR_CFG_FIELD, "%s: field '%s.factor' must be "
							       "positive", r->where, where);
	}
	if (strcmp(t, "yarn") == 0)
		return read_yarn(r, s, where, legacy, a);
	char shown[48];
	snprintf(shown, sizeof shown, "%s", t);
	for (char *p = shown; *p; p++)
		*p = (unsigned char)*p < 0x20 ? '?' : *p;
	return ms_fail(r->err, MS_ERR_CFG_FIELD, "%s: field '%s': type '%s' is not supported by the forward pass "
		       "(default, linear, yarn)", r->where, where, shown);
}

static ms_status read_attention(const reader *r, arch_model *a)
{
	const arch_family *f = a->family;
	ms_status st = get_int(r, "num_attention_heads", 1, 65536, 1, 0, &a->heads);
	if (st == MS_OK)
		st = get_int(r, "num_key_value_heads", 1, 65536, 0, a->heads, &a->kv_heads);
	if (st == MS_OK && a->heads % a->kv_heads != 0)
		st = ms_fail(r->err, MS_ERR_CFG_FIELD, "%s: num_attention_heads %d is not a multiple of "
			     "num_key_value_heads %d", r->where, a->heads, a->kv_heads);
	if (st == MS_OK && f->attn == ARCH_ATTN_GQA) {
		a->head_dim = a->d / a->heads;
		if (f->head_dim_field)
			st = get_int(r, f->head_dim_field, 1, MAX_DIM, 0, a->head_dim, &a->head_dim);
		if (st == MS_OK && !f->head_dim_field && a->head_dim * a->heads != a->d)
			st = ms_fail(r->err, MS_ERR_CFG_FIELD, "%s: hidden_size %d is not a multiple of "
				     "num_attention_heads %d", r->where, a->d, a->heads);
	}
	if (st == MS_OK && f->attn == ARCH_ATTN_MLA) {
		a->kv_heads = a->heads;
		st = get_int(r, "q_lora_rank", 0, MAX_DIM, 0, 1536, &a->q_lora_rank);
		if (st == MS_OK && !field(r, "q_lora_rank") && cJSON_GetObjectItemCaseSensitive(r->cfg, "q_lora_rank"))
			a->q_lora_rank = 0;   /* an explicit null: a plain q_proj (DeepSeek-V2-Lite) */
		if (st == MS_OK)
			st = get_int(r, "kv_lora_rank", 1, MAX_DIM, 0, 512, &a->kv_lora_rank);
		if (st == MS_OK)
			st = get_int(r, "qk_nope_head_dim", 0, MAX_DIM, 0, 128, &a->qk_nope_dim);
		if (st == MS_OK)
			st = get_int(r, "qk_rope_head_dim", 2, MAX_DIM, 0, 64, &a->qk_rope_dim);
		if (st == MS_OK)
			st = get_int(r, "v_head_dim", 1, MAX_DIM, 0, 128, &a->v_head_dim);
		if (st == MS_OK && a->qk_rope_dim % 2)
			st = ms_fail(r->err, MS_ERR_CFG_FIELD, "%s: field 'qk_rope_head_dim' must be even", r->where);
		a->head_dim = a->qk_nope_dim + a->qk_rope_dim;
	}
	if (st == MS_OK && f->attn == ARCH_ATTN_GQA && a->head_dim % 2)
		st = ms_fail(r->err, MS_ERR_CFG_FIELD, "%s: the head dimension %d must be even for RoPE", r->where,
			     a->head_dim);
	int bias = 0;
	if (st == MS_OK && (f->qkv_bias < 0 || f->o_bias < 0))
		st = get_bool(r, "attention_bias", f->attention_bias_default, &bias);
	a->qkv_bias = f->qkv_bias < 0 ? bias : f->qkv_bias;
	if (st == MS_OK && f->qkv_bias_field)
		st = get_bool(r, f->qkv_bias_field, a->qkv_bias, &a->qkv_bias);
	a->o_bias = f->o_bias < 0 ? bias : f->o_bias;
	a->qk_norm = f->qk_norm;
	int qk_norm_on = 1;
	if (st == MS_OK && f->qk_norm_field)
		st = get_bool(r, f->qk_norm_field, 0, &qk_norm_on);
	if (!qk_norm_on)
		a->qk_norm = ARCH_QK_NONE;
	a->rotary_dim = a->head_dim;
	double partial = 1.0;
	if (st == MS_OK && f->partial_rotary_default > 0)
		st = get_real(r, "partial_rotary_factor", 0.0, 1.0, f->partial_rotary_default, &partial);
	if (st == MS_OK && f->attn == ARCH_ATTN_GQA)   /* transformers: int(head_dim * partial_rotary_factor) */
		a->rotary_dim = (int)((double)a->head_dim * partial);
	if (st == MS_OK && f->attn == ARCH_ATTN_GQA && (a->rotary_dim < 2 || a->rotary_dim % 2))
		st = ms_fail(r->err, MS_ERR_CFG_FIELD, "%s: field 'partial_rotary_factor' %g leaves %d of the %d head "
			     "dimensions to rotate: need an even number >= 2", r->where, partial, a->rotary_dim, a->head_dim);
	if (st == MS_OK && f->clip_field)
		st = get_real(r, f->clip_field, 0.0, 1e30, 0.0, &a->clip_qkv);
	return st;
}

/* Which layers attend through a sliding window, and how wide. Mixtral and PhiMoE: every layer, when
 * sliding_window is set. Qwen3-MoE: every layer, with use_sliding_window. Qwen2-MoE: the layers layer_types marks
 * "sliding_attention", with use_sliding_window; without layer_types the transformers versions disagree (4.x puts
 * the window on the layers from max_window_layers on, 5.x on the even layers below it), so that is refused.
 * gpt_oss: the layers layer_types marks "sliding_attention", or without it the even layers (GptOssConfig). */
static ms_status read_window(const reader *r, arch_model *a)
{
	const arch_family *f = a->family;
	int on = 1, width = 0;
	ms_status st = MS_OK;
	if (f->window_switch_field)
		st = get_bool(r, f->window_switch_field, 0, &on);
	if (st == MS_OK && on && f->window_field)
		st = get_int(r, f->window_field, 0, 1 << 30, 0, f->window_default, &width);
	if (st == MS_OK && on && f->window_field && !field(r, f->window_field) &&
	    cJSON_GetObjectItemCaseSensitive(r->cfg, f->window_field))
		width = 0;   /* an explicit null: no window */
	if (st != MS_OK)
		return st;
	if (!on)
		width = 0;
	const cJSON *types = f->layer_types_field ? field(r, f->layer_types_field) : NULL;
	for (int L = 0; L < a->n_layers; L++)
		a->window[L] = types || (f->even_layers_slide && L % 2) ? 0 : width;
	if (!types) {
		if (f->layer_types_field && !f->even_layers_slide && width > 0)
			return ms_fail(r->err, MS_ERR_CFG_FIELD, "%s: use_sliding_window without 'layer_types': transformers "
				       "4 and 5 put the window on different layers; add layer_types to config.json",
				       r->where);
		return MS_OK;
	}
	if (!cJSON_IsArray(types) || cJSON_GetArraySize(types) != a->n_layers)
		return ms_fail(r->err, MS_ERR_CFG_FIELD, "%s: field '%s' must list one type for each of the %d layers",
			       r->where, f->layer_types_field, a->n_layers);
	int L = 0;
	const cJSON *v;
	cJSON_ArrayForEach(v, types) {
		const int sliding = cJSON_IsString(v) && strcmp(v->valuestring, "sliding_attention") == 0;
		if (!sliding && !(cJSON_IsString(v) && strcmp(v->valuestring, "full_attention") == 0))
			return ms_fail(r->err, MS_ERR_CFG_FIELD, "%s: field '%s[%d]' must be \"full_attention\" or "
				       "\"sliding_attention\"", r->where, f->layer_types_field, L);
		a->window[L++] = sliding ? width : 0;
	}
	return MS_OK;
}

/* The family's additions to its MoE blocks: the shared expert's width (times deepseek's n_shared_experts) and
 * gate, and sparsemixer routing. */
static ms_status read_moe_extras(const reader *r, const arch_family *f, int top_k, arch_moe_extras *x)
{
	int count = 1;
	ms_status st = MS_OK;
	memset(x, 0, sizeof *x);
	if (f->shared_count_field)
		st = get_int(r, f->shared_count_field, 0, 4096, 0, 0, &count);
	if (st == MS_OK && f->shared_inter_field && count > 0)
		st = get_int(r, f->shared_inter_field, 0, MAX_DIM, 1, 0, &x->shared_inter);
	if ((int64_t)x->shared_inter * count > MAX_DIM)
		return ms_fail(r->err, MS_ERR_CFG_FIELD, "%s: field '%s' times '%s' is over %d", r->where,
			       f->shared_inter_field, f->shared_count_field, MAX_DIM);
	x->shared_inter *= count;
	x->shared_gated = f->shared_gated && x->shared_inter > 0;
	double eps = 0.0;
	if (st == MS_OK && f->sparsemixer_field)
		st = get_real(r, f->sparsemixer_field, 0.0, 1e6, f->sparsemixer_default, &eps);
	x->sparsemixer_eps = (float)eps;
	if (st == MS_OK && f->sparsemixer_field && (eps <= 0 || top_k != 2))
		st = ms_fail(r->err, MS_ERR_CFG_FIELD, "%s: sparsemixer routing needs num_experts_per_tok 2 and a "
			     "positive router_jitter_noise (got %d and %g)", r->where, top_k, eps);
	return st;
}

static ms_status read_mlp(const reader *r, arch_model *a)
{
	const arch_family *f = a->family;
	ms_status st = MS_OK;
	int dense_layers = 0;
	for (int i = 0; i < a->n_layers; i++)
		dense_layers += a->block_of_layer[i] < 0;
	if (dense_layers && !f->dense_inter_field)
		return ms_fail(r->err, MS_ERR_CFG_FIELD, "%s: %d layers are not MoE blocks, and %s has no dense layers",
			       r->where, dense_layers, f->model_type);
	if (dense_layers)
		st = get_int(r, f->dense_inter_field, 1, MAX_DIM, 1, 0, &a->dense_inter);
	arch_moe_extras x = {0};
	if (st == MS_OK)
		st = read_moe_extras(r, f, a->m->top_k, &x);
	a->shared_inter = x.shared_inter;
	a->shared_gated = x.shared_gated;
	a->sparsemixer_eps = x.sparsemixer_eps;
	if (st == MS_OK && f->lm_head_bias_field)
		st = get_bool(r, f->lm_head_bias_field, 0, &a->lm_head_bias);
	return st;
}

static ms_status read_arch(const reader *r, arch_model *a)
{
	const arch_family *f = a->family;
	ms_status st = get_int(r, "vocab_size", 1, 1 << 30, 1, 0, &a->vocab);
	if (st == MS_OK)
		st = get_int(r, "max_position_embeddings", 1, 1 << 30, 0, f->max_position_default, &a->max_position);
	double eps = 0;
	if (st == MS_OK)
		st = get_real(r, "rms_norm_eps", 0.0, 1.0, f->eps_default, &eps);
	a->norm = f->norm;
	a->attn = f->attn;
	a->norm_eps = eps;
	if (st == MS_OK)
		st = read_rope(r, a);
	a->sinks = f->sinks;
	if (st == MS_OK && f->rope_interleave_field)
		st = get_bool(r, f->rope_interleave_field, f->rope_interleaved, &a->rope.interleaved);
	/* DeepseekV3Attention: with a scaled RoPE and mscale_all_dim, scaling *= yarn_get_mscale(factor,
	 * mscale_all_dim)^2, where yarn_get_mscale(s, m) = 0.1 m ln(s) + 1 for s > 1, else 1 */
	a->attn_scale = 1.0;
	if (st == MS_OK && f->mla_mscale && a->rope.kind != ARCH_ROPE_DEFAULT && a->rope.mscale_all_dim != 0 &&
	    a->rope.factor > 1) {
		const double ms = 0.1 * a->rope.mscale_all_dim * log(a->rope.factor) + 1.0;
		a->attn_scale = ms * ms;
	}
	if (st == MS_OK)
		st = get_bool(r, "tie_word_embeddings", 0, &a->tied);
	if (st == MS_OK)
		st = read_attention(r, a);
	if (st == MS_OK)
		st = read_window(r, a);
	if (st == MS_OK)
		st = read_mlp(r, a);
	/* io/model.c finds DeepSeek's MoE layers by DeepSeek's rule (from first_k_dense_replace, every
	 * moe_layer_freq-th), which transformers 4 follows; transformers 5's DeepseekV2DecoderLayer makes every layer
	 * from first_k_dense_replace a MoE layer. They agree only for a frequency of 1. */
	int freq = 1;
	if (st == MS_OK && f->layer_freq_field)
		st = get_int(r, f->layer_freq_field, 1, 1 << 30, 0, 1, &freq);
	if (st == MS_OK && freq != 1)
		st = ms_fail(r->err, MS_ERR_CFG_FIELD, "%s: field '%s' %d: transformers 5 makes every layer from "
			     "first_k_dense_replace a MoE layer, DeepSeek's code every %d-th; the forward pass computes "
			     "only a frequency of 1", r->where, f->layer_freq_field, freq, freq);
	return st;
}

ms_status arch_open(const mdl_model *m, arch_model **out, ms_error *err)
{
	*out = NULL;
	const arch_family *f = NULL;
	for (int i = 0; i < FAMILY_COUNT; i++)
		if (strcmp(families[i].model_type, m->model_type) == 0)
			f = &families[i];
	if (!f)
		return ms_fail(err, MS_ERR_CFG_FAMILY, "%s/config.json: model_type '%s': the forward pass covers the "
			       "decoder-only families (mixtral, qwen2_moe, qwen3_moe, olmoe, phimoe, deepseek_v2, deepseek_v3, "
			       "glm4_moe, gpt_oss)",
			       m->dir, m->model_type);
	arch_model *a = calloc(1, sizeof *a);
	int *layers = a ? malloc((size_t)m->n_layers * sizeof *layers) : NULL;
	int *window = layers ? calloc((size_t)m->n_layers, sizeof *window) : NULL;
	if (!a || !layers || !window) {
		free(a);
		free(layers);
		return ms_fail(err, MS_ERR_NOMEM, "%s: out of memory", m->dir);
	}
	a->window = window;
	a->m = m;
	a->family = f;
	a->d = m->hidden;
	a->n_layers = m->n_layers;
	a->block_of_layer = layers;
	for (int i = 0; i < m->n_layers; i++)
		layers[i] = -1;
	for (int b = 0; b < m->n_blocks; b++)
		layers[m->blocks[b].layer] = b;
	reader r = {.cfg = mdl_config_json(m), .err = err};
	snprintf(r.where, sizeof r.where, "%s/config.json", m->dir);
	ms_status st = read_arch(&r, a);
	if (st != MS_OK) {
		arch_close(a);
		return st;
	}
	*out = a;
	return MS_OK;
}

void arch_close(arch_model *a)
{
	if (!a)
		return;
	free(a->block_of_layer);
	free(a->window);
	free(a);
}

int arch_has(const arch_model *a, arch_tensor t, int layer)
{
	const int gqa = a->attn == ARCH_ATTN_GQA, mla = a->attn == ARCH_ATTN_MLA;
	const int moe = layer >= 0 && layer < a->n_layers && a->block_of_layer[layer] >= 0;
	switch (t) {
	case ARCH_T_EMBED: case ARCH_T_FINAL_NORM: case ARCH_T_IN_NORM: case ARCH_T_POST_NORM: case ARCH_T_O:
		return 1;
	case ARCH_T_FINAL_NORM_BIAS: case ARCH_T_IN_NORM_BIAS: case ARCH_T_POST_NORM_BIAS:
		return a->norm == ARCH_NORM_LAYER;
	case ARCH_T_LM_HEAD: return !a->tied;
	case ARCH_T_LM_HEAD_BIAS: return a->lm_head_bias;
	case ARCH_T_Q: return gqa || (mla && a->q_lora_rank == 0);
	case ARCH_T_K: case ARCH_T_V: return gqa;
	case ARCH_T_Q_BIAS: case ARCH_T_K_BIAS: case ARCH_T_V_BIAS: return gqa && a->qkv_bias;
	case ARCH_T_O_BIAS: return a->o_bias;
	case ARCH_T_Q_NORM: case ARCH_T_K_NORM: return gqa && a->qk_norm != ARCH_QK_NONE;
	case ARCH_T_Q_A: case ARCH_T_Q_A_NORM: case ARCH_T_Q_B: return mla && a->q_lora_rank > 0;
	case ARCH_T_Q_A_BIAS: return mla && a->q_lora_rank > 0 && a->qkv_bias;
	case ARCH_T_KV_A: case ARCH_T_KV_A_NORM: case ARCH_T_KV_B: return mla;
	case ARCH_T_KV_A_BIAS: return mla && a->qkv_bias;
	case ARCH_T_MLP_GATE: case ARCH_T_MLP_UP: case ARCH_T_MLP_DOWN: return !moe;
	case ARCH_T_SHARED_GATE: case ARCH_T_SHARED_UP: case ARCH_T_SHARED_DOWN: return moe && a->shared_inter > 0;
	case ARCH_T_SHARED_EXPERT_GATE: return moe && a->shared_gated;
	case ARCH_T_SINKS: return a->sinks;
	default: return 0;
	}
}

static const st_tensor *find(const arch_model *a, arch_tensor t, int layer, char *name, size_t len)
{
	const char *pattern = t >= 0 && t < ARCH_T_COUNT ? a->family->names[t] : NULL;
	if (!pattern) {
		snprintf(name, len, "(none)");
		return NULL;
	}
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
	snprintf(name, len, pattern, layer);
#pragma GCC diagnostic pop
	return st_find(a->m->st, name);
}

static ms_status lookup(const arch_model *a, arch_tensor t, int layer, int64_t rows, int64_t cols,
			const st_tensor **out, ms_error *err)
{
	char name[256];
	const st_tensor *ts = find(a, t, layer, name, sizeof name);
	if (!ts)
		return ms_fail(err, MS_ERR_MODEL_TENSOR, "%s: tensor '%s' missing (the forward pass needs it)", a->m->dir,
			       name);
	const int ndim = cols ? 2 : 1;
	const int64_t want[2] = {rows, cols};
	if (ts->ndim != ndim || ts->shape[0] != rows || (ndim == 2 && ts->shape[1] != cols)) {
		char found[128], expected[64];
		st_shape_text(found, sizeof found, ts->shape, ts->ndim);
		st_shape_text(expected, sizeof expected, want, ndim);
		return ms_fail(err, MS_ERR_MODEL_SHAPE, "%s: tensor '%s': shape %s, expected %s from config.json",
			       a->m->dir, name, found, expected);
	}
	if (!st_dtype_is_float(ts->dtype) && !(ts->dtype == ST_F8_E4M3 && ndim == 2))
		return ms_fail(err, MS_ERR_ST_DTYPE, "%s: tensor '%s': dtype %s, expected F32, F16 or BF16", a->m->dir,
			       name, st_dtype_name(ts->dtype));
	*out = ts;
	return MS_OK;
}

/* FP8 weights convert with their block scales (io/quant.h), float ones as they are. */
static ms_status read_rows(const arch_model *a, const st_tensor *ts, int64_t row0, int64_t n, float *out,
			   ms_error *err)
{
	if (ts->dtype != ST_F8_E4M3)
		return st_read_rows_f32(ts, row0, n, out, err);
	qt_matrix q;
	ms_status st = mdl_matrix(a->m, ts, &q, err);
	return st == MS_OK ? qt_read_rows_f32(&q, row0, n, out, err) : st;
}

ms_status arch_read(const arch_model *a, arch_tensor t, int layer, int64_t rows, int64_t cols, float *out,
		    ms_error *err)
{
	const st_tensor *ts;
	ms_status st = lookup(a, t, layer, rows, cols, &ts, err);
	return st == MS_OK ? read_rows(a, ts, 0, ts->ndim ? ts->shape[0] : 1, out, err) : st;
}

ms_status arch_check(const arch_model *a, arch_tensor t, int layer, int64_t rows, int64_t cols, ms_error *err)
{
	const st_tensor *ts;
	return lookup(a, t, layer, rows, cols, &ts, err);
}

ms_status arch_read_rows(const arch_model *a, arch_tensor t, int64_t row0, int64_t n, float *out, ms_error *err)
{
	const st_tensor *ts;
	ms_status st = lookup(a, t, 0, a->vocab, a->d, &ts, err);
	return st == MS_OK ? read_rows(a, ts, row0, n, out, err) : st;
}

void arch_release(const arch_model *a, arch_tensor t, int layer)
{
	char name[256];
	pages_release_tensor(find(a, t, layer, name, sizeof name));
}

static const arch_family *family_of(const mdl_model *m)
{
	for (int i = 0; i < FAMILY_COUNT; i++)
		if (strcmp(families[i].model_type, m->model_type) == 0)
			return &families[i];
	return NULL;
}

ms_status arch_moe_extras_read(const mdl_model *m, arch_moe_extras *out, ms_error *err)
{
	memset(out, 0, sizeof *out);
	const arch_family *f = family_of(m);
	if (!f)
		return MS_OK;
	reader r = {.cfg = mdl_config_json(m), .err = err};
	snprintf(r.where, sizeof r.where, "%s/config.json", m->dir);
	return read_moe_extras(&r, f, m->top_k, out);
}

ms_status arch_read_block(const mdl_model *m, arch_tensor t, int layer, int64_t rows, int64_t cols, float *out,
			  ms_error *err)
{
	const arch_family *f = family_of(m);
	if (!f)
		return ms_fail(err, MS_ERR_CFG_FAMILY, "%s: model_type '%s' has no such tensor", m->dir, m->model_type);
	const arch_model a = {.m = m, .family = f};
	const st_tensor *ts;
	ms_status st = lookup(&a, t, layer, rows, cols, &ts, err);
	if (st == MS_OK)
		st = st_read_f32(ts, out, err);
	if (st == MS_OK)
		pages_release_tensor(ts);
	return st;
}
