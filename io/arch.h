/* The architecture of a decoder-only MoE checkpoint beyond its MoE blocks: attention, norms, positions,
 * embeddings, dense layers and the head, as each family's transformers modeling file builds them.
 *
 * Each family is one row of the table in arch.c (designated initialisers): which config.json fields hold what,
 * the defaults of the family's config class, and the tensor names of every non-expert weight. io/model.c keeps
 * the MoE blocks; this file reads the same config.json (through mdl_config_json) for the rest. Nothing here does
 * arithmetic on weights: it resolves the description and reads tensors as float32. */
#ifndef ARCH_ARCH_H
#define ARCH_ARCH_H

#include <stdint.h>

#include "io/error.h"
#include "io/model.h"

typedef enum { ARCH_NORM_RMS, ARCH_NORM_LAYER } arch_norm;          /* RMSNorm, or LayerNorm with bias */
typedef enum { ARCH_QK_NONE, ARCH_QK_HEAD, ARCH_QK_FULL } arch_qk;  /* q/k norm: none, per head, whole proj. */
typedef enum { ARCH_ATTN_GQA, ARCH_ATTN_MLA } arch_attn;            /* grouped-query, DeepSeek latent */
typedef enum { ARCH_ROPE_DEFAULT, ARCH_ROPE_LINEAR, ARCH_ROPE_YARN } arch_rope_kind;

/* A RoPE as config.json describes it, in transformers 4's form (rope_theta, rope_scaling) or 5's
 * (rope_parameters), as transformers' ROPE_INIT_FUNCTIONS compute it. */
typedef struct {
	arch_rope_kind kind;
	double theta;
	double factor;                    /* linear and yarn */
	double original_max_position;     /* yarn */
	double beta_fast, beta_slow;      /* yarn */
	double mscale, mscale_all_dim;    /* yarn (0 when absent) */
	double attention_factor;          /* yarn: 0 when absent (then derived from mscale) */
	int truncate;                     /* yarn: round the correction range to whole dimensions */
	int interleaved;                  /* rotate pairs (2i, 2i+1) (deepseek_v2), else halves (rotate_half) */
} arch_rope;

/* Every weight a decoder layer, the embeddings or the head may have. A name pattern holds %d for the layer. */
typedef enum {
	ARCH_T_EMBED, ARCH_T_FINAL_NORM, ARCH_T_FINAL_NORM_BIAS, ARCH_T_LM_HEAD, ARCH_T_LM_HEAD_BIAS,
	ARCH_T_IN_NORM, ARCH_T_IN_NORM_BIAS, ARCH_T_POST_NORM, ARCH_T_POST_NORM_BIAS,
	ARCH_T_Q, ARCH_T_Q_BIAS, ARCH_T_K, ARCH_T_K_BIAS, ARCH_T_V, ARCH_T_V_BIAS, ARCH_T_O, ARCH_T_O_BIAS,
	ARCH_T_Q_NORM, ARCH_T_K_NORM,
	ARCH_T_Q_A, ARCH_T_Q_A_BIAS, ARCH_T_Q_A_NORM, ARCH_T_Q_B, ARCH_T_KV_A, ARCH_T_KV_A_BIAS, ARCH_T_KV_A_NORM,
	ARCH_T_KV_B,
	ARCH_T_MLP_GATE, ARCH_T_MLP_UP, ARCH_T_MLP_DOWN,
	ARCH_T_SHARED_GATE, ARCH_T_SHARED_UP, ARCH_T_SHARED_DOWN, ARCH_T_SHARED_EXPERT_GATE,
	ARCH_T_SINKS,
	ARCH_T_COUNT
} arch_tensor;

typedef struct arch_family arch_family;   /* a row of arch.c's table */

typedef struct {
	const mdl_model *m;
	const arch_family *family;
	int vocab, d, n_layers, max_position;
	int heads, kv_heads, head_dim;     /* GQA; head_dim is also the value width */
	int rotary_dim;                    /* GQA: RoPE turns the first rotary_dim dimensions of each head (glm4_moe's
					    * partial_rotary_factor; head_dim otherwise) */
	arch_attn attn;
	int q_lora_rank, kv_lora_rank;     /* MLA (q_lora_rank 0: a plain q_proj) */
	int qk_nope_dim, qk_rope_dim, v_head_dim;
	double attn_scale;                 /* MLA: multiplies 1/sqrt(q head dim) (deepseek_v3's yarn mscale^2; else 1) */
	arch_norm norm;
	double norm_eps;
	int qkv_bias, o_bias, lm_head_bias;   /* qkv_bias also gives DeepSeek's q_a_proj and kv_a_proj_with_mqa theirs */
	arch_qk qk_norm;
	double clip_qkv;                   /* 0: none */
	int *window;                       /* [n_layers]: layer L attends to the last window[L] positions (0: all) */
	int sinks;                         /* attention sinks: self_attn.sinks [heads] per layer (gpt_oss) */
	arch_rope rope;
	int tied;                          /* lm_head is the embedding */
	int dense_inter;                   /* intermediate size of dense layers (0: the family has none) */
	int shared_inter;                  /* width of the shared expert (0: none) */
	int shared_gated;                  /* the shared expert's output is scaled by sigmoid(shared_expert_gate x) */
	float sparsemixer_eps;             /* > 0: PhiMoE sparsemixer routing with this jitter eps */
	int *block_of_layer;               /* [n_layers]: index into m->blocks, -1 for a dense layer */
} arch_model;

/* Reads the architecture of an open model. MS_ERR_CFG_FAMILY for a family without a forward pass here
 * (switch_transformers), MS_ERR_CFG_FIELD for a field that is missing, invalid or describes a variant this
 * forward does not implement (a rope_scaling type, for instance); the message names config.json and the field. */
ms_status arch_open(const mdl_model *m, arch_model **out, ms_error *err);
void arch_close(arch_model *a);

/* Whether the model has weight t (of layer `layer` for per-layer weights), given its configuration. */
int arch_has(const arch_model *a, arch_tensor t, int layer);

/* Reads weight t of layer `layer` as float32 into out (rows * cols floats; cols 0 for a vector of rows
 * elements). Its shape must be [rows, cols] (or [rows]); messages name the model, the tensor and the shape. */
ms_status arch_read(const arch_model *a, arch_tensor t, int layer, int64_t rows, int64_t cols, float *out,
		    ms_error *err);

/* Checks that weight t of layer `layer` exists with shape [rows, cols] (or [rows] when cols is 0) and a float
 * dtype, without reading it. */
ms_status arch_check(const arch_model *a, arch_tensor t, int layer, int64_t rows, int64_t cols, ms_error *err);

/* Rows [row0, row0 + n) of the embedding or the head ([vocab, d]) as float32 into out [n, d]. */
ms_status arch_read_rows(const arch_model *a, arch_tensor t, int64_t row0, int64_t n, float *out, ms_error *err);

/* What a family adds to its MoE blocks, from config.json alone (the MoE pipeline needs it without the rest of the
 * architecture, and for families this file has no row: then everything is 0). */
typedef struct {
	int shared_inter;       /* width of the shared expert (deepseek: moe_intermediate_size x n_shared_experts), 0:
				 * none */
	int shared_gated;       /* its output is scaled by sigmoid(shared_expert_gate x) (qwen2_moe) */
	float sparsemixer_eps;  /* > 0: PhiMoE sparsemixer routing with this jitter eps */
} arch_moe_extras;

ms_status arch_moe_extras_read(const mdl_model *m, arch_moe_extras *out, ms_error *err);

/* Reads weight t of layer `layer` (a shared expert's matrix or its gate) as arch_read does, with the family's names
 * but without an arch_model, and lets its pages go. */
ms_status arch_read_block(const mdl_model *m, arch_tensor t, int layer, int64_t rows, int64_t cols, float *out,
			  ms_error *err);

/* Lets the pages of weight t of a layer go once it has been read (the next layer's weights take their place). */
void arch_release(const arch_model *a, arch_tensor t, int layer);

#endif
