/* A Hugging Face MoE checkpoint: config.json read with cJSON, tensors through io/safetensors.
 *
 * Each supported family is one row of the table in model.c (docs/design.md §2.2): its config field names, which
 * layers are MoE blocks, the router and expert tensor name patterns, the expert activation and the routing rule.
 * Nothing outside model.c branches on the family name. */
#ifndef MDL_MODEL_H
#define MDL_MODEL_H

#include <stdint.h>

#include "io/error.h"
#include "io/safetensors.h"

/* How an expert computes its output y from input x (weights are [out, in]):
 * MDL_ACT_SILU_GLU: y = down (silu(gate x) * (up x))        (mixtral, qwen, olmoe, deepseek)
 * MDL_ACT_RELU:     y = down relu(up x), there is no gate   (switch_transformers: up = wi, down = wo) */
typedef enum { MDL_ACT_SILU_GLU, MDL_ACT_RELU } mdl_act;

/* How router logits z (one row of X R^T) select experts and weight them. */
typedef struct {
	int top_k;          /* experts per token (1 for switch) */
	int renormalize;    /* divide the top-k softmax probabilities by their sum */
	float scale;        /* multiply the routing weights (deepseek_v2 routed_scaling_factor; 1 otherwise) */
	int n_group;        /* > 0: deepseek_v2's group_limited_greedy: the experts form n_group contiguous groups and */
	int topk_group;     /* only the topk_group groups with the highest best logit are eligible; 0: plain top-k */
	int capacity;       /* > 0: switch expert_capacity: in each sequence, in token order, a router row takes at
			     * most this many tokens and the later ones are dropped (routed output 0); 0: none */
} mdl_routing;

/* The three matrices of an expert; gate is NULL when the family has none (MDL_ACT_RELU). */
enum { MDL_GATE, MDL_UP, MDL_DOWN, MDL_NMAT };

typedef struct {
	int layer;                   /* layer index as it appears in tensor names */
	char label[32];              /* the plan CSV's layer field: "3", or "encoder.1" / "decoder.1" for switch */
	char prefix[160];            /* router name minus its router suffix: "model.layers.3.block_sparse_moe";
				      * the calibration tensor is prefix + ".input" */
	const st_tensor *router;     /* [E, d] */
	const st_tensor **experts;   /* [E * MDL_NMAT]: experts[e * MDL_NMAT + MDL_GATE] etc.; gate [f,d] (or NULL),
				      * up [f,d], down [d,f] */
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
	st_dtype expert_dtype;
	uint64_t bytes_total;        /* all tensors */
	uint64_t bytes_experts;      /* routed expert matrices */
	uint64_t params_total;
	uint64_t params_experts;
	/* config.json field names the merge rewrites */
	const char *experts_field;   /* "num_local_experts", "num_experts", "n_routed_experts" */
	const char *topk_field;      /* "num_experts_per_tok" or NULL (switch: top-1, no field) */
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

/* Loads the router [E, d] of block b as float32. */
ms_status mdl_load_router(const mdl_model *m, int b, float *router, ms_error *err);
/* Loads the matrices of expert e of block b as float32: gate [f, d] (skipped when the family has no gate or
 * gate is NULL), up [f, d], down [d, f]. */
ms_status mdl_load_expert(const mdl_model *m, int b, int e, float *gate, float *up, float *down, ms_error *err);

/* The parsed config.json (a cJSON *), for writers that rewrite it. */
const void *mdl_config_json(const mdl_model *m);

/* Rewrites a copy of config.json (a cJSON *) for blocks of n_out experts (a compact merge): the expert count, top-k
 * capped at n_out, group-limited routing replaced by plain top-k (merged experts belong to no group), and a
 * per-expert capacity (switch expert_capacity) scaled to keep each block's total: ceil(capacity E / n_out). */
ms_status mdl_config_set_experts(const mdl_model *m, void *config, int n_out, ms_error *err);

#endif
