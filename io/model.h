/* A Hugging Face MoE checkpoint: config.json read with cJSON, tensors through io/safetensors.
 *
 * Each supported family is one row of the table in model.c (docs/design.md §2.2): its config field names, which
 * layers are MoE blocks, the router and expert tensor name patterns, the expert activation and the routing rule.
 * Nothing outside model.c branches on the family name. */
#ifndef MDL_MODEL_H
#define MDL_MODEL_H

#include <stdint.h>

#include "io/error.h"
#include "io/jsonedit.h"
#include "io/quant.h"
#include "io/safetensors.h"

/* How an expert computes its output y from input x (weights are [out, in]; b_* are biases, zero for the families
 * without them):
 * MDL_ACT_SILU_GLU:       y = down (silu(gate x) * (up x))        (mixtral, qwen, olmoe, deepseek)
 * MDL_ACT_RELU:           y = down relu(up x), there is no gate   (switch_transformers: up = wi, down = wo)
 * MDL_ACT_CLAMPED_SWIGLU: with g = min(gate x + b_g, L) and u = clamp(up x + b_u, -L, L),
 *                         y = down ((u + 1) * g * sigmoid(MDL_SWIGLU_ALPHA g)) + b_down, L = MDL_SWIGLU_LIMIT
 *                         (gpt_oss: GptOssExperts, whose alpha and limit are constants of the module) */
typedef enum { MDL_ACT_SILU_GLU, MDL_ACT_RELU, MDL_ACT_CLAMPED_SWIGLU } mdl_act;
#define MDL_ACT_COUNT 3
#define MDL_SWIGLU_ALPHA 1.702f
#define MDL_SWIGLU_LIMIT 7.0f

/* Whether an expert of this activation has a gate matrix. */
static inline int mdl_act_gated(mdl_act act)
{
	return act != MDL_ACT_RELU;
}

/* How a router logit z_e becomes the score s_e that weights expert e: softmax over all E logits (every family
 * but deepseek_v3 / glm4_moe), or sigmoid(z_e) of each logit alone (DeepseekV3TopkRouter). */
typedef enum { MDL_SCORE_SOFTMAX, MDL_SCORE_SIGMOID } mdl_score;

/* How group-limited routing scores a group: the sum of its two largest choice values (DeepseekV3TopkRouter), or
 * its largest (deepseek_v2's topk_method group_limited_greedy, which takes the best softmax probability). */
typedef enum { MDL_GROUP_TOP2, MDL_GROUP_MAX } mdl_group_score;

/* How router logits z (one row of X R^T) select experts and weight them.
 *
 * Selection ranks the choice values c_e = s_e + score_bias[e] (c_e = z_e when there is neither a bias nor a
 * sigmoid: softmax is monotone). With n_group > 1 and topk_group < n_group the E experts form n_group
 * consecutive groups, a group's score is the sum of its two largest c_e (group_score), only the topk_group best groups stay
 * eligible and the others' c_e count as 0 (transformers' masked_fill(.., 0.0)). The weights are the unbiased s_e
 * of the selected experts, divided by their sum (plus 1e-20 for sigmoid) when renormalize, times scale. */
typedef struct {
	int top_k;          /* experts per token (1 for switch) */
	int renormalize;    /* divide the top-k scores by their sum */
	float scale;        /* multiply the routing weights (routed_scaling_factor of deepseek; 1 otherwise) */
	mdl_score score;
	int n_group;        /* expert groups of group-limited routing (1: none) */
	int topk_group;     /* eligible groups per token (n_group: all) */
	mdl_group_score group_score;
	const float *score_bias; /* [E] e_score_correction_bias of one block, or NULL; set per block, never by
				  * mdl_open (a model's routing holds NULL) */
	int capacity;       /* > 0: switch expert_capacity: in each sequence, in token order, a router row takes at
			     * most this many tokens and the later ones are dropped (routed output 0); 0: none */
	const float *logit_bias; /* [E] the router's own bias (gpt_oss router.bias), added to every logit before
				  * anything else (route_add_bias); per block like score_bias, NULL otherwise */
} mdl_routing;

/* How a block stores its experts (docs/design.md §2.2):
 * MDL_LAYOUT_PER_EXPERT: one tensor per expert and matrix ("mlp.experts.3.gate_proj.weight");
 * MDL_LAYOUT_FUSED:      transformers v5's 3-D parameters, "mlp.experts.gate_up_proj" [E, 2f, d] (gate rows
 *                        first, then up) and "mlp.experts.down_proj" [E, d, f];
 * MDL_LAYOUT_INTERLEAVED: gpt_oss's 3-D parameters, stored [in, out]: "mlp.experts.gate_up_proj" [E, d, 2f]
 *                        whose even columns are the gate and odd columns the up projection, "down_proj" [E, f, d],
 *                        with biases "gate_up_proj_bias" [E, 2f] (interleaved the same way) and "down_proj_bias"
 *                        [E, d]. A view cannot express a matrix of it, so mdl_load_expert gathers. */
typedef enum { MDL_LAYOUT_PER_EXPERT, MDL_LAYOUT_FUSED, MDL_LAYOUT_INTERLEAVED } mdl_layout;
enum { MDL_FUSED_GATE_UP, MDL_FUSED_DOWN, MDL_NFUSED };

/* The three matrices of an expert; gate is NULL when the family has none (MDL_ACT_RELU). */
enum { MDL_GATE, MDL_UP, MDL_DOWN, MDL_NMAT };

typedef struct {
	int layer;                   /* layer index as it appears in tensor names */
	char label[32];              /* the plan CSV's layer field: "3", or "encoder.1" / "decoder.1" for switch */
	char prefix[160];            /* router name minus its router suffix: "model.layers.3.block_sparse_moe";
				      * the calibration tensor is prefix + ".input" */
	const st_tensor *router;     /* [E, d] */
	const st_tensor **experts;   /* [E * MDL_NMAT]: experts[e * MDL_NMAT + MDL_GATE] etc.; gate [f,d] (or NULL),
				      * up [f,d], down [d,f]. In the fused layout these are views of slices of the
				      * 3-D tensors (their own names, the file's bytes), owned by the model */
	const st_tensor *fused[MDL_NFUSED]; /* the fused layout's gate_up_proj [E, 2f, d] and down_proj [E, d, f];
					     * NULL per expert */
	const st_tensor *score_bias; /* [E] gate.e_score_correction_bias (deepseek_v3, glm4_moe), or NULL */
	const st_tensor *router_bias; /* [E] router.bias (gpt_oss), or NULL */
	const st_tensor *fused_bias[MDL_NFUSED]; /* the interleaved layout's gate_up_proj_bias [E, 2f] and
						  * down_proj_bias [E, d]; NULL otherwise */
	st_tensor *views;            /* [E * MDL_NMAT] storage of the fused layout's views, or NULL. In the
				      * interleaved layout experts[e * MDL_NMAT + MDL_GATE] views expert e's whole
				      * [d, 2f] slab of gate_up_proj, MDL_UP is NULL and MDL_DOWN views its [f, d] */
	const st_tensor **scales;    /* [E * MDL_NMAT]: the weight_scale_inv of an F8_E4M3 expert matrix, else NULL */
	/* MXFP4 experts (interleaved layout under quant_method "mxfp4"): fused[] are then "<name>_blocks" U8
	 * [E, out, in / 32, 16], fused_scales[] "<name>_scales" U8 [E, out, in / 32] and mx[] the two bound together,
	 * E * out rows of `in` values (gate_up: out = 2f with the gate in even rows; down: out = d). The released
	 * checkpoints store [out, in], the transpose of the BF16 [E, in, out]. The views then are U8 slabs of the
	 * blocks. NULL / zero otherwise. */
	const st_tensor *fused_scales[MDL_NFUSED];
	qt_matrix mx[MDL_NFUSED];
} mdl_block;

typedef struct mdl_family mdl_family;  /* a row of model.c's table */

typedef struct {
	char dir[4096];
	char model_type[64];
	const mdl_family *family;
	st_file *st;
	int n_experts;               /* E */
	int top_k;
	int hidden;                  /* d */
	int inter;                   /* f, the expert intermediate size */
	mdl_act act;
	mdl_routing routing;
	int n_layers;                /* decoder layers (encoder + decoder for switch) */
	int n_blocks;                /* MoE blocks */
	mdl_block *blocks;
	mdl_layout layout;           /* the same for every block */
	st_dtype expert_dtype;       /* F8_E4M3 for FP8 experts (their scales are in blocks[b].scales), U8 for MXFP4
				      * experts (blocks[b].mx) */
	qt_config quant;             /* config.json's quantization_config (scheme QT_NONE without one) */
	int expert_bias;             /* experts carry biases (gate [f], up [f], down [d]): the interleaved layout */
	uint64_t bytes_total;        /* all tensors */
	uint64_t bytes_experts;      /* routed expert matrices */
	uint64_t params_total;
	uint64_t params_experts;
	/* config.json field names the merge rewrites */
	const char *experts_field;   /* "num_local_experts", "num_experts", "n_routed_experts" */
	const char *topk_field;      /* "num_experts_per_tok" or NULL (switch: top-1, no field) */
	const char *n_group_field;   /* "n_group" where routing may be group-limited, else NULL */
	const char *topk_group_field;
	const char *group_method_field; /* "topk_method" when it says group_limited_greedy (deepseek_v2; accepted only
					 * when every group is eligible, i.e. plain top-k), else NULL: a compact merge
					 * writes "greedy" there, since E' need not split into n_group groups */
} mdl_model;

/* Opens DIR (config.json plus model.safetensors or an index). Checks every MoE block's router and expert tensors
 * exist with the shapes config.json implies; messages name the tensor and the expected shape. */
ms_status mdl_open(const char *dir, mdl_model **out, ms_error *err);
void mdl_close(mdl_model *m);

/* Index of the block whose label is `label` (as in the plan CSV), or -1. */
int mdl_find_block(const mdl_model *m, const char *label);

/* labels [n_blocks] pointing at each block's label, as plan_init and the plan readers take them: malloc'd (the
 * caller frees the array, not the strings, which the model owns), NULL when out of memory. */
const char **mdl_block_labels(const mdl_model *m);

/* The family's tensor names, for writers: the router of layer block b, and matrix `mat` of expert e. A matrix
 * the family lacks (switch's gate) yields an empty string. Returns 0, or -1 when buf is too small. */
int mdl_router_name(const mdl_model *m, int b, char *buf, size_t len);
int mdl_expert_name(const mdl_model *m, int b, int e, int mat, char *buf, size_t len);
/* The fused layout's tensor `which` (MDL_FUSED_GATE_UP, MDL_FUSED_DOWN) of block b: "<prefix>.experts.down_proj".
 * Returns 0, or -1 when buf is too small or the model is not fused. */
int mdl_fused_name(const mdl_model *m, int b, int which, char *buf, size_t len);
/* The name of block b's e_score_correction_bias, whether or not the model has one. 0 or -1 as above. */
int mdl_score_bias_name(const mdl_model *m, int b, char *buf, size_t len);

/* Loads block b's e_score_correction_bias [E] as float32 (zeros when the block has none). */
ms_status mdl_load_score_bias(const mdl_model *m, int b, float *bias, ms_error *err);

/* Loads the router [E, d] of block b as float32. */
ms_status mdl_load_router(const mdl_model *m, int b, float *router, ms_error *err);
/* Loads block b's router bias [E] as float32 (zeros when the block has none). */
ms_status mdl_load_router_bias(const mdl_model *m, int b, float *bias, ms_error *err);
/* The name of block b's router bias; -1 when the family has none or buf is too small. */
int mdl_router_bias_name(const mdl_model *m, int b, char *buf, size_t len);

/* Loads the matrices of expert e of block b as float32: gate [f, d] (skipped when the family has no gate or
 * gate is NULL), up [f, d], down [d, f]. The interleaved layout's [in, out] storage is transposed and split here,
 * so every caller sees [out, in] matrices. */
ms_status mdl_load_expert(const mdl_model *m, int b, int e, float *gate, float *up, float *down, ms_error *err);
/* Loads the biases of expert e of block b as float32: gate [f], up [f], down [d] (any may be NULL: skipped).
 * Zeros when the model's experts have no biases. */
ms_status mdl_load_expert_bias(const mdl_model *m, int b, int e, float *gate, float *up, float *down,
			       ms_error *err);
/* The interleaved layout's bias tensor `which` (MDL_FUSED_GATE_UP, MDL_FUSED_DOWN) of block b:
 * "<prefix>.experts.gate_up_proj_bias". Returns 0, or -1 when buf is too small or the model has none. */
int mdl_fused_bias_name(const mdl_model *m, int b, int which, char *buf, size_t len);

/* Any 2-D weight of the checkpoint as a matrix to read as float32: a float tensor as it is, an F8_E4M3 one with
 * its weight_scale_inv (checked when the model was opened). */
ms_status mdl_matrix(const mdl_model *m, const st_tensor *t, qt_matrix *out, ms_error *err);

/* The parsed config.json (a cJSON *), for writers that rewrite it. */
const void *mdl_config_json(const mdl_model *m);
/* config.json's bytes as read (NUL-terminated, *len of them), for writers that keep its spelling
 * (io/jsonedit.h). */
const char *mdl_config_text(const mdl_model *m, size_t *len);

/* The model_type of a checkpoint written with --compress-format factors (pipeline/merge_run.h): no stock loader
 * knows it, so transformers refuses the checkpoint instead of filling the missing dense weights at random; the
 * family's own model_type is kept in the config's moescope_compression entry. */
#define MDL_FACTORS_MODEL_TYPE "moescope_factors"

/* Edits config.json's text (io/jsonedit.h; every other byte kept) for blocks of n_out experts (a compact merge): the
 * expert count, top-k capped at n_out, group-limited routing replaced by plain top-k (merged experts belong to no
 * group: deepseek_v2's topk_method becomes "greedy", DeepSeek-V3's n_group and topk_group become 1), and a
 * per-expert capacity (switch expert_capacity) scaled to keep each block's total: ceil(capacity E / n_out). */
ms_status mdl_config_set_experts(const mdl_model *m, jedit *d, int n_out, ms_error *err);

#endif
