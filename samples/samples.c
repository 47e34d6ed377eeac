/* The sample generator (samples/samples.h).
 *
 * Each sample is a table row (sample_spec): its sizes, its prototype group sizes and two functions, one that lists
 * the family's tensors (the non-expert ones are the family's own; the MoE blocks go through add_moe_block) and one
 * that builds config.json. Everything else is shared: the planted structure of a MoE block (block_build), the
 * expert and router tensors derived from it, the calibration tokens, the writers.
 *
 * Planted structure of a block: P prototypes, each a gate/up/down triple and a unit router direction (the P
 * directions orthonormal). Expert e of prototype p is p's matrices plus EXPERT_NOISE relative noise, with its f
 * intermediate neurons permuted; its router row is ROUTER_SCALE / sqrt(d) (dir_p + ROUTER_NOISE u_e), u_e a unit
 * vector orthogonal to every direction, times LEAD_SCALE for p's lead expert. A calibration token mixes the directions of
 * a few "active" prototypes (drawn from an imbalanced popularity) so that its top-k holds their leads; the
 * top-k slots left over go to non-lead experts the token leans toward (TARGET_BOOST along u_e), mostly of its
 * primary prototype. Hence the P most used experts are the leads, one per prototype, and the usage of prototypes
 * is imbalanced.
 *
 * Every random number comes from splitmix64 streams seeded from the sample's seed and a tag (the tensor name, the
 * block, the expert), so the bytes do not depend on the order of the work. */
#include "samples/samples.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "io/durable.h"
#include "io/outdir.h"
#include "io/quant.h"
#include "io/safetensors.h"

#define MAX_PROTO 8
#define LEAD_SCALE 1.2      /* router row scale of a prototype's lead: it wins within its prototype */
#define ROUTER_SCALE 3.0    /* router rows are ROUTER_SCALE / sqrt(d) long: logits of a few units */
#define ROUTER_NOISE 0.1    /* router row noise relative to the prototype direction */
#define EXPERT_NOISE 0.05   /* expert weight noise relative to the prototype's weight scale */
#define TARGET_BOOST 0.3    /* how far a token leans toward a non-lead expert it should select */
#define TOKEN_NOISE 0.15    /* norm of a token's isotropic noise, before normalisation */
#define NORM_NOISE 0.02     /* norm weights are 1 + NORM_NOISE N(0,1) */
#define SMALL_STD 0.02      /* attention, embedding and dense weights */
#define BIAS_LEAD 0.15      /* deepseek_v3 selection bias: how much the lead experts are held back */
#define BIAS_NOISE 0.03     /* and the spread of every expert's bias */
#define EXPERT_BIAS_STD 0.1 /* gpt_oss expert biases: a prototype's bias vectors, permuted like its rows */

enum { MAT_GATE, MAT_UP, MAT_DOWN, N_MAT };

/* ---- random numbers ---------------------------------------------------------------------------------------- */

typedef struct {
	uint64_t state;
	int has_spare;
	double spare;
} rng;

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

/* A stream seed for (seed, tag): distinct tags give unrelated streams. */
static uint64_t derive_seed(uint64_t seed, uint64_t tag)
{
	uint64_t x = seed ^ (tag * 0xD1B54A32D192ED03ULL);
	return splitmix64(&x);
}

static uint64_t hash_name(const char *s)
{
	uint64_t h = 1469598103934665603ULL;  /* FNV-1a */
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

static void rng_init(rng *r, uint64_t seed)
{
	r->state = seed;
	r->has_spare = 0;
	r->spare = 0.0;
}

static double rng_uniform(rng *r)  /* [0, 1) */
{
	return (double)(splitmix64(&r->state) >> 11) * (1.0 / 9007199254740992.0);
}

static int rng_below(rng *r, int n)  /* [0, n); the modulo bias is irrelevant for n this small */
{
	return (int)(splitmix64(&r->state) % (uint64_t)n);
}

static double rng_gauss(rng *r)  /* N(0, 1) by Box-Muller, keeping the second value */
{
	if (r->has_spare) {
		r->has_spare = 0;
		return r->spare;
	}
	double u1 = 1.0 - rng_uniform(r), u2 = rng_uniform(r);
	double rad = sqrt(-2.0 * log(u1)), ang = 6.283185307179586 * u2;
	r->spare = rad * sin(ang);
	r->has_spare = 1;
	return rad * cos(ang);
}

static void shuffle(rng *r, int *v, int n)
{
	for (int i = n - 1; i > 0; i--) {
		int j = rng_below(r, i + 1), t = v[i];
		v[i] = v[j];
		v[j] = t;
	}
}

/* ---- the tensor list of a model ---------------------------------------------------------------------------- */

/* FILL_FUSED: a 3-D fused expert tensor (mat MAT_GATE: gate_up_proj, MAT_DOWN: down_proj) holding every expert's
 * planted matrices; FILL_BIAS: a block's e_score_correction_bias (or gpt_oss's router bias, planted alike);
 * FILL_INTERLEAVED: gpt_oss's [in, out] gate_up_proj [E, d, 2f] (gate and up columns alternating) or down_proj
 * [E, f, d]; FILL_EXPERT_BIAS: gpt_oss's gate_up_proj_bias [E, 2f] (interleaved) or down_proj_bias [E, d]. */
typedef enum { FILL_NORM, FILL_SMALL, FILL_ROUTER, FILL_EXPERT, FILL_FUSED, FILL_BIAS, FILL_INTERLEAVED,
	       FILL_EXPERT_BIAS } fill_kind;

typedef struct {
	char name[160];
	int ndim;
	int64_t shape[3];
	fill_kind kind;
	int block, expert, mat;  /* FILL_ROUTER and FILL_EXPERT */
} tensor_spec;

typedef struct {
	tensor_spec *v;
	size_t n, cap;
	int failed;              /* out of memory or a name too long: reported once the list is complete */
} tensor_list;

static tensor_spec *tl_push(tensor_list *l, fill_kind kind, int64_t d0, int64_t d1)
{
	if (l->failed)
		return NULL;
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 256;
		tensor_spec *v = realloc(l->v, cap * sizeof *v);
		if (!v) {
			l->failed = 1;
			return NULL;
		}
		l->v = v;
		l->cap = cap;
	}
	tensor_spec *t = &l->v[l->n++];
	memset(t, 0, sizeof *t);
	t->kind = kind;
	t->ndim = d1 ? 2 : 1;
	t->shape[0] = d0;
	t->shape[1] = d1;
	return t;
}

/* Adds a tensor of shape [d0] (d1 == 0) or [d0, d1]. */
static tensor_spec *tl_add(tensor_list *l, fill_kind kind, int64_t d0, int64_t d1, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
static tensor_spec *tl_add(tensor_list *l, fill_kind kind, int64_t d0, int64_t d1, const char *fmt, ...)
{
	tensor_spec *t = tl_push(l, kind, d0, d1);
	if (!t)
		return NULL;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(t->name, sizeof t->name, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof t->name)
		l->failed = 1;
	return t;
}

static int64_t tensor_numel(const tensor_spec *t)
{
	int64_t n = 1;
	for (int i = 0; i < t->ndim; i++)
		n *= t->shape[i];
	return n;
}

static int tensor_cmp(const void *a, const void *b)
{
	return strcmp(((const tensor_spec *)a)->name, ((const tensor_spec *)b)->name);
}

/* ---- samples ----------------------------------------------------------------------------------------------- */

/* Tensor names of a family's MoE block (docs/design.md §2.2), after the block prefix. */
typedef struct {
	const char *router;          /* ".gate.weight" */
	const char *expert_stem;     /* ".experts." then the expert number */
	const char *mat[N_MAT];      /* gate, up, down; NULL for a matrix the family lacks */
} moe_naming;

static const moe_naming naming_mixtral = {".gate.weight", ".experts.", {"w1", "w3", "w2"}};
static const moe_naming naming_mlp = {".gate.weight", ".experts.", {"gate_proj", "up_proj", "down_proj"}};
static const moe_naming naming_switch = {".router.classifier.weight", ".experts.expert_", {NULL, "wi", "wo"}};
static const moe_naming naming_gptoss = {".router.weight", ".experts.", {"gate_proj", "up_proj", "down_proj"}};

typedef struct sample_spec sample_spec;
typedef struct sample_ctx sample_ctx;

struct sample_spec {
	const char *model_type;
	const char *architecture;
	int layers;          /* decoder layers (switch: encoder layers, and as many decoder layers) */
	int n_experts, top_k, n_proto;
	int hidden, inter;   /* d, and f of the routed experts */
	int dense_inter;     /* dense MLP width: qwen2_moe intermediate_size, switch d_ff */
	int shared_inter;    /* qwen2_moe shared expert width */
	int dense_layers;    /* qwen2_moe: the first dense_layers layers are mlp_only_layers */
	int sparse_step;     /* switch: block i is sparse when i % sparse_step == 1 */
	int fused;           /* experts stored as transformers v5's 3-D gate_up_proj and down_proj */
	int interleaved;     /* gpt_oss: experts stored [in, out] with gate/up interleaved, with biases; router bias */
	int n_group, topk_group; /* deepseek_v3: group-limited routing */
	int kv_lora, q_lora, qk_nope, qk_rope, v_head; /* deepseek_v3 latent attention (q_lora 0: a plain q_proj) */
	int heads, kv_heads, head_dim;
	int vocab;
	int tokens;          /* calibration tokens per block */
	int shards;          /* model files to write: 1, or 2 with an index */
	int group_size[MAX_PROTO];  /* experts per prototype, most popular prototype first; sums to n_experts */
	double popularity;   /* prototype p is drawn with weight popularity^p: prototype 0 is the most used */
	int min_active;      /* a calibration token activates min(top_k, n_proto) prototypes with probability */
	double full_share;   /* full_share, else min_active to one less, uniformly */
	uint64_t seed;
	int fp8_block[2];    /* nonzero: projection weights stored F8_E4M3 with an F32 weight_scale_inv per block of
			      * this size, as DeepSeek-V3 stores them (io/quant.h); embeddings, routers and norms stay */
	int mxfp4;           /* gpt_oss: experts stored as the released MXFP4 checkpoints store them (io/quant.h):
			      * NAME_blocks U8 [E, out, in / 32, 16] and NAME_scales U8 [E, out, in / 32] */
	void (*layout)(sample_ctx *c);          /* lists every tensor, calling add_moe_block for MoE blocks */
	cJSON *(*config)(const sample_spec *s); /* config.json */
};

/* One MoE block and its planted structure. */
typedef struct {
	char label[32];          /* as in io/model.h: "3", "encoder.1" */
	char prefix[160];        /* router name minus the family's router suffix */
	const moe_naming *naming;
	uint64_t seed;
	int E, P, k, d, f;
	int min_active;
	double full_share;
	int *prototype;          /* [E] prototype of each expert */
	int *lead;               /* [P] the expert that wins within each prototype */
	int *perm;               /* [E, f] row i of expert e's gate/up (column i of down) is row (column)
				  * perm[e f + i] of its prototype's */
	double popularity[MAX_PROTO]; /* [P] draw weights of the prototypes, summing to 1 */
	float *dir;              /* [P, d] orthonormal router directions */
	float *unit;             /* [E, d] unit router noise, orthogonal to every direction */
	float *router;           /* [E, d] the router as stored (BF16 values) */
	float *proto;            /* [P, N_MAT, f * d] prototype gate [f, d], up [f, d], down [d, f] */
} moe_block;

struct sample_ctx {
	const sample_spec *spec;
	tensor_list tensors;
	moe_block *blocks;       /* [n_blocks] */
	int n_blocks, cap_blocks;
};

/* Lists a MoE block's router and expert tensors; its structure is built once the layout is complete. */
static void add_moe_block(sample_ctx *c, const moe_naming *nm, const char *label, const char *prefix)
{
	const sample_spec *s = c->spec;
	if (c->n_blocks == c->cap_blocks) {
		c->tensors.failed = 1;
		return;
	}
	int b = c->n_blocks++;
	moe_block *blk = &c->blocks[b];
	snprintf(blk->label, sizeof blk->label, "%s", label);
	snprintf(blk->prefix, sizeof blk->prefix, "%s", prefix);
	blk->naming = nm;
	tensor_spec *t = tl_add(&c->tensors, FILL_ROUTER, s->n_experts, s->hidden, "%s%s", prefix, nm->router);
	if (t)
		t->block = b;
	if (s->n_group && (t = tl_add(&c->tensors, FILL_BIAS, s->n_experts, 0, "%s.gate.e_score_correction_bias",
				      prefix)))
		t->block = b;
	if (s->interleaved) {   /* router.bias [E]; gate_up_proj [E, d, 2f], down_proj [E, f, d] and their biases */
		if ((t = tl_add(&c->tensors, FILL_BIAS, s->n_experts, 0, "%s.router.bias", prefix)))
			t->block = b;
		const int64_t shape[4][3] = {{s->n_experts, s->hidden, 2 * s->inter}, {s->n_experts, s->inter, s->hidden},
					     {s->n_experts, 2 * s->inter, 0}, {s->n_experts, s->hidden, 0}};
		static const char *const names[4] = {"gate_up_proj", "down_proj", "gate_up_proj_bias", "down_proj_bias"};
		for (int i = 0; i < 4; i++) {
			t = tl_add(&c->tensors, i < 2 ? FILL_INTERLEAVED : FILL_EXPERT_BIAS, shape[i][0], shape[i][1],
				   "%s.experts.%s", prefix, names[i]);
			if (t) {
				t->ndim = i < 2 ? 3 : 2;
				t->shape[2] = shape[i][2];
				t->block = b;
				t->mat = i % 2 ? MAT_DOWN : MAT_GATE;
			}
		}
		return;
	}
	if (s->fused) {   /* gate_up_proj [E, 2f, d] (gate rows, then up rows), down_proj [E, d, f] */
		t = tl_add(&c->tensors, FILL_FUSED, s->n_experts, 2 * s->inter, "%s.experts.gate_up_proj", prefix);
		if (t) {
			t->ndim = 3;
			t->shape[2] = s->hidden;
			t->block = b;
			t->mat = MAT_GATE;
		}
		t = tl_add(&c->tensors, FILL_FUSED, s->n_experts, s->hidden, "%s.experts.down_proj", prefix);
		if (t) {
			t->ndim = 3;
			t->shape[2] = s->inter;
			t->block = b;
			t->mat = MAT_DOWN;
		}
		return;
	}
	for (int e = 0; e < s->n_experts; e++)
		for (int m = 0; m < N_MAT; m++) {
			if (!nm->mat[m])
				continue;
			int64_t rows = m == MAT_DOWN ? s->hidden : s->inter, cols = m == MAT_DOWN ? s->inter : s->hidden;
			t = tl_add(&c->tensors, FILL_EXPERT, rows, cols, "%s%s%d.%s.weight", prefix, nm->expert_stem, e,
				   nm->mat[m]);
			if (t) {
				t->block = b;
				t->expert = e;
				t->mat = m;
			}
		}
}

/* ---- family layouts: every parameter the transformers class expects ---------------------------------------- */

/* Llama-style attention and the two norms of decoder layer i. */
static void decoder_attention(sample_ctx *c, int i, int qkv_bias, int qk_norm)
{
	const sample_spec *s = c->spec;
	tensor_list *l = &c->tensors;
	int64_t d = s->hidden, q = (int64_t)s->heads * s->head_dim, kv = (int64_t)s->kv_heads * s->head_dim;
	tl_add(l, FILL_SMALL, q, d, "model.layers.%d.self_attn.q_proj.weight", i);
	tl_add(l, FILL_SMALL, kv, d, "model.layers.%d.self_attn.k_proj.weight", i);
	tl_add(l, FILL_SMALL, kv, d, "model.layers.%d.self_attn.v_proj.weight", i);
	tl_add(l, FILL_SMALL, d, q, "model.layers.%d.self_attn.o_proj.weight", i);
	if (qkv_bias) {
		tl_add(l, FILL_SMALL, q, 0, "model.layers.%d.self_attn.q_proj.bias", i);
		tl_add(l, FILL_SMALL, kv, 0, "model.layers.%d.self_attn.k_proj.bias", i);
		tl_add(l, FILL_SMALL, kv, 0, "model.layers.%d.self_attn.v_proj.bias", i);
	}
	if (qk_norm) {
		tl_add(l, FILL_NORM, q, 0, "model.layers.%d.self_attn.q_norm.weight", i);
		tl_add(l, FILL_NORM, kv, 0, "model.layers.%d.self_attn.k_norm.weight", i);
	}
	tl_add(l, FILL_NORM, d, 0, "model.layers.%d.input_layernorm.weight", i);
	tl_add(l, FILL_NORM, d, 0, "model.layers.%d.post_attention_layernorm.weight", i);
}

/* Embeddings, final norm and an untied lm_head of a decoder-only model. */
static void decoder_ends(sample_ctx *c)
{
	const sample_spec *s = c->spec;
	tl_add(&c->tensors, FILL_SMALL, s->vocab, s->hidden, "model.embed_tokens.weight");
	tl_add(&c->tensors, FILL_NORM, s->hidden, 0, "model.norm.weight");
	tl_add(&c->tensors, FILL_SMALL, s->vocab, s->hidden, "lm_head.weight");
}

/* A gate/up/down MLP of width f under prefix (qwen2_moe's dense layers and shared expert). */
static void glu_mlp(sample_ctx *c, const char *prefix, int64_t f)
{
	int64_t d = c->spec->hidden;
	tl_add(&c->tensors, FILL_SMALL, f, d, "%s.gate_proj.weight", prefix);
	tl_add(&c->tensors, FILL_SMALL, f, d, "%s.up_proj.weight", prefix);
	tl_add(&c->tensors, FILL_SMALL, d, f, "%s.down_proj.weight", prefix);
}

static void moe_decoder_layer(sample_ctx *c, int i, const moe_naming *nm, const char *moe_name)
{
	char label[32], prefix[160];
	snprintf(label, sizeof label, "%d", i);
	snprintf(prefix, sizeof prefix, "model.layers.%d.%s", i, moe_name);
	add_moe_block(c, nm, label, prefix);
}

static void mixtral_layout(sample_ctx *c)
{
	decoder_ends(c);
	for (int i = 0; i < c->spec->layers; i++) {
		decoder_attention(c, i, 0, 0);
		moe_decoder_layer(c, i, &naming_mixtral, "block_sparse_moe");
	}
}

static void olmoe_layout(sample_ctx *c)
{
	decoder_ends(c);
	for (int i = 0; i < c->spec->layers; i++) {
		decoder_attention(c, i, 0, 1);
		moe_decoder_layer(c, i, &naming_mlp, "mlp");
	}
}

static void qwen2moe_layout(sample_ctx *c)
{
	const sample_spec *s = c->spec;
	char prefix[160];
	decoder_ends(c);
	for (int i = 0; i < s->layers; i++) {
		decoder_attention(c, i, 1, 0);
		if (i < s->dense_layers) {
			snprintf(prefix, sizeof prefix, "model.layers.%d.mlp", i);
			glu_mlp(c, prefix, s->dense_inter);
			continue;
		}
		moe_decoder_layer(c, i, &naming_mlp, "mlp");
		snprintf(prefix, sizeof prefix, "model.layers.%d.mlp.shared_expert", i);
		glu_mlp(c, prefix, s->shared_inter);
		tl_add(&c->tensors, FILL_SMALL, 1, s->hidden, "model.layers.%d.mlp.shared_expert_gate.weight", i);
	}
}

/* T5-style attention module `name` (SelfAttention, EncDecAttention) of layer `sub` of a switch block. */
static void switch_attention(sample_ctx *c, const char *blk, int sub, const char *name, int rel_bias)
{
	const sample_spec *s = c->spec;
	tensor_list *l = &c->tensors;
	int64_t d = s->hidden, inner = (int64_t)s->heads * s->head_dim;
	tl_add(l, FILL_SMALL, inner, d, "%s.layer.%d.%s.q.weight", blk, sub, name);
	tl_add(l, FILL_SMALL, inner, d, "%s.layer.%d.%s.k.weight", blk, sub, name);
	tl_add(l, FILL_SMALL, inner, d, "%s.layer.%d.%s.v.weight", blk, sub, name);
	tl_add(l, FILL_SMALL, d, inner, "%s.layer.%d.%s.o.weight", blk, sub, name);
	if (rel_bias)  /* only the first block of each stack owns the relative position buckets */
		tl_add(l, FILL_SMALL, 32, s->heads, "%s.layer.%d.%s.relative_attention_bias.weight", blk, sub, name);
	tl_add(l, FILL_NORM, d, 0, "%s.layer.%d.layer_norm.weight", blk, sub);
}

/* The feed-forward layer `sub` of switch block i of `stack`: a MoE block or a dense ReLU MLP. */
static void switch_ff(sample_ctx *c, const char *stack, int i, int sub)
{
	const sample_spec *s = c->spec;
	char prefix[160], label[32];
	snprintf(prefix, sizeof prefix, "%s.block.%d.layer.%d.mlp", stack, i, sub);
	tl_add(&c->tensors, FILL_NORM, s->hidden, 0, "%s.block.%d.layer.%d.layer_norm.weight", stack, i, sub);
	if (i % s->sparse_step == 1) {
		snprintf(label, sizeof label, "%s.%d", stack, i);
		add_moe_block(c, &naming_switch, label, prefix);
		return;
	}
	tl_add(&c->tensors, FILL_SMALL, s->dense_inter, s->hidden, "%s.wi.weight", prefix);
	tl_add(&c->tensors, FILL_SMALL, s->hidden, s->dense_inter, "%s.wo.weight", prefix);
}

static void switch_stack(sample_ctx *c, const char *stack, int decoder)
{
	char blk[64];
	for (int i = 0; i < c->spec->layers; i++) {
		snprintf(blk, sizeof blk, "%s.block.%d", stack, i);
		switch_attention(c, blk, 0, "SelfAttention", i == 0);
		if (decoder)
			switch_attention(c, blk, 1, "EncDecAttention", 0);
		switch_ff(c, stack, i, decoder ? 2 : 1);
	}
	tl_add(&c->tensors, FILL_NORM, c->spec->hidden, 0, "%s.final_layer_norm.weight", stack);
}

/* The embedding is shared by both stacks and the (tied) lm_head, so it is stored once, as transformers does. */
static void switch_layout(sample_ctx *c)
{
	tl_add(&c->tensors, FILL_SMALL, c->spec->vocab, c->spec->hidden, "shared.weight");
	switch_stack(c, "encoder", 0);
	switch_stack(c, "decoder", 1);
}

/* DeepseekV3DecoderLayer: latent attention (q through a low-rank q_a/q_b pair, keys and values through the
 * compressed kv_a/kv_b), dense MLPs in the first dense_layers layers, then MoE blocks with shared experts. */
/* GptOssDecoderLayer: attention with q/k/v/o biases and one sink logit per head, every layer an MoE block. */
static void gptoss_layout(sample_ctx *c)
{
	const sample_spec *s = c->spec;
	decoder_ends(c);
	for (int i = 0; i < s->layers; i++) {
		decoder_attention(c, i, 1, 0);
		tl_add(&c->tensors, FILL_SMALL, s->hidden, 0, "model.layers.%d.self_attn.o_proj.bias", i);
		tl_add(&c->tensors, FILL_SMALL, s->heads, 0, "model.layers.%d.self_attn.sinks", i);
		moe_decoder_layer(c, i, &naming_gptoss, "mlp");
	}
}

static void deepseek3_attention(sample_ctx *c, int i)
{
	const sample_spec *s = c->spec;
	tensor_list *l = &c->tensors;
	const int64_t d = s->hidden, h = s->heads, qk = s->qk_nope + s->qk_rope;
	tl_add(l, FILL_SMALL, s->q_lora, d, "model.layers.%d.self_attn.q_a_proj.weight", i);
	tl_add(l, FILL_NORM, s->q_lora, 0, "model.layers.%d.self_attn.q_a_layernorm.weight", i);
	tl_add(l, FILL_SMALL, h * qk, s->q_lora, "model.layers.%d.self_attn.q_b_proj.weight", i);
	tl_add(l, FILL_SMALL, s->kv_lora + s->qk_rope, d, "model.layers.%d.self_attn.kv_a_proj_with_mqa.weight", i);
	tl_add(l, FILL_NORM, s->kv_lora, 0, "model.layers.%d.self_attn.kv_a_layernorm.weight", i);
	tl_add(l, FILL_SMALL, h * (s->qk_nope + s->v_head), s->kv_lora, "model.layers.%d.self_attn.kv_b_proj.weight", i);
	tl_add(l, FILL_SMALL, d, h * s->v_head, "model.layers.%d.self_attn.o_proj.weight", i);
	tl_add(l, FILL_NORM, d, 0, "model.layers.%d.input_layernorm.weight", i);
	tl_add(l, FILL_NORM, d, 0, "model.layers.%d.post_attention_layernorm.weight", i);
}

static void deepseek3_layout(sample_ctx *c)
{
	const sample_spec *s = c->spec;
	char prefix[160];
	decoder_ends(c);
	for (int i = 0; i < s->layers; i++) {
		deepseek3_attention(c, i);
		if (i < s->dense_layers) {
			snprintf(prefix, sizeof prefix, "model.layers.%d.mlp", i);
			glu_mlp(c, prefix, s->dense_inter);
			continue;
		}
		moe_decoder_layer(c, i, &naming_mlp, "mlp");
		snprintf(prefix, sizeof prefix, "model.layers.%d.mlp.shared_experts", i);
		glu_mlp(c, prefix, s->shared_inter);
	}
}

/* ---- config.json ------------------------------------------------------------------------------------------- */

static cJSON *config_common(const sample_spec *s)
{
	cJSON *j = cJSON_CreateObject();
	if (!j)
		return NULL;
	cJSON *arch = cJSON_AddArrayToObject(j, "architectures");
	if (arch)
		cJSON_AddItemToArray(arch, cJSON_CreateString(s->architecture));
	cJSON_AddStringToObject(j, "model_type", s->model_type);
	cJSON_AddStringToObject(j, "torch_dtype", "bfloat16");
	cJSON_AddNumberToObject(j, "vocab_size", s->vocab);
	cJSON_AddBoolToObject(j, "use_cache", 1);
	cJSON_AddNumberToObject(j, "initializer_range", SMALL_STD);
	return j;
}

/* Fields shared by the decoder-only families (Llama-style attention, RMSNorm, RoPE). */
static cJSON *config_decoder(const sample_spec *s)
{
	cJSON *j = config_common(s);
	if (!j)
		return NULL;
	cJSON_AddNumberToObject(j, "hidden_size", s->hidden);
	cJSON_AddNumberToObject(j, "num_hidden_layers", s->layers);
	cJSON_AddNumberToObject(j, "num_attention_heads", s->heads);
	cJSON_AddNumberToObject(j, "num_key_value_heads", s->kv_heads);
	cJSON_AddNumberToObject(j, "head_dim", s->head_dim);
	cJSON_AddStringToObject(j, "hidden_act", "silu");
	cJSON_AddNumberToObject(j, "max_position_embeddings", 4096);
	cJSON_AddNumberToObject(j, "rope_theta", 10000.0);
	cJSON_AddNullToObject(j, "rope_scaling");
	cJSON_AddNumberToObject(j, "attention_dropout", 0.0);
	cJSON_AddBoolToObject(j, "tie_word_embeddings", 0);
	cJSON_AddNumberToObject(j, "bos_token_id", 1);
	cJSON_AddNumberToObject(j, "eos_token_id", 2);
	cJSON_AddNumberToObject(j, "num_experts_per_tok", s->top_k);
	cJSON_AddBoolToObject(j, "output_router_logits", 0);
	return j;
}

static cJSON *mixtral_config(const sample_spec *s)
{
	cJSON *j = config_decoder(s);
	if (!j)
		return NULL;
	cJSON_AddNumberToObject(j, "intermediate_size", s->inter);
	cJSON_AddNumberToObject(j, "num_local_experts", s->n_experts);
	cJSON_AddNumberToObject(j, "rms_norm_eps", 1e-5);
	cJSON_AddNullToObject(j, "sliding_window");
	cJSON_AddNumberToObject(j, "router_aux_loss_coef", 0.02);
	cJSON_AddNumberToObject(j, "router_jitter_noise", 0.0);
	return j;
}

static cJSON *olmoe_config(const sample_spec *s)
{
	cJSON *j = config_decoder(s);
	if (!j)
		return NULL;
	cJSON_AddNumberToObject(j, "intermediate_size", s->inter);
	cJSON_AddNumberToObject(j, "num_experts", s->n_experts);
	cJSON_AddBoolToObject(j, "norm_topk_prob", 0);
	cJSON_AddNumberToObject(j, "rms_norm_eps", 1e-5);
	cJSON_AddBoolToObject(j, "attention_bias", 0);
	cJSON_AddNullToObject(j, "clip_qkv");
	cJSON_AddNumberToObject(j, "pad_token_id", 0);
	cJSON_AddNumberToObject(j, "router_aux_loss_coef", 0.01);
	return j;
}

static cJSON *qwen2moe_config(const sample_spec *s)
{
	cJSON *j = config_decoder(s);
	if (!j)
		return NULL;
	cJSON_AddNumberToObject(j, "intermediate_size", s->dense_inter);
	cJSON_AddNumberToObject(j, "moe_intermediate_size", s->inter);
	cJSON_AddNumberToObject(j, "shared_expert_intermediate_size", s->shared_inter);
	cJSON_AddNumberToObject(j, "num_experts", s->n_experts);
	cJSON_AddNumberToObject(j, "decoder_sparse_step", 1);
	cJSON *dense = cJSON_AddArrayToObject(j, "mlp_only_layers");
	for (int i = 0; dense && i < s->dense_layers; i++)
		cJSON_AddItemToArray(dense, cJSON_CreateNumber(i));
	cJSON_AddBoolToObject(j, "norm_topk_prob", 0);
	cJSON_AddNumberToObject(j, "rms_norm_eps", 1e-6);
	cJSON_AddBoolToObject(j, "use_sliding_window", 0);
	cJSON_AddNumberToObject(j, "sliding_window", 4096);
	cJSON_AddNumberToObject(j, "max_window_layers", s->layers);
	cJSON_AddNumberToObject(j, "router_aux_loss_coef", 0.001);
	return j;
}

static cJSON *deepseek3_config(const sample_spec *s)
{
	cJSON *j = config_decoder(s);
	if (!j)
		return NULL;
	cJSON_DeleteItemFromObjectCaseSensitive(j, "head_dim");   /* DeepseekV3Config derives it */
	cJSON_AddNumberToObject(j, "intermediate_size", s->dense_inter);
	cJSON_AddNumberToObject(j, "moe_intermediate_size", s->inter);
	cJSON_AddNumberToObject(j, "n_routed_experts", s->n_experts);
	cJSON_AddNumberToObject(j, "n_shared_experts", s->shared_inter / s->inter);
	cJSON_AddNumberToObject(j, "routed_scaling_factor", 2.5);
	cJSON_AddStringToObject(j, "topk_method", "noaux_tc");
	cJSON_AddNumberToObject(j, "n_group", s->n_group);
	cJSON_AddNumberToObject(j, "topk_group", s->topk_group);
	cJSON_AddBoolToObject(j, "norm_topk_prob", 1);
	cJSON_AddNumberToObject(j, "first_k_dense_replace", s->dense_layers);
	cJSON_AddNumberToObject(j, "kv_lora_rank", s->kv_lora);
	cJSON_AddNumberToObject(j, "q_lora_rank", s->q_lora);
	cJSON_AddNumberToObject(j, "qk_nope_head_dim", s->qk_nope);
	cJSON_AddNumberToObject(j, "qk_rope_head_dim", s->qk_rope);
	cJSON_AddNumberToObject(j, "v_head_dim", s->v_head);
	cJSON_AddBoolToObject(j, "rope_interleave", 1);
	cJSON_AddBoolToObject(j, "attention_bias", 0);
	cJSON_AddNumberToObject(j, "rms_norm_eps", 1e-6);
	return j;
}

/* GptOssConfig as the released checkpoints write it: yarn RoPE, sliding and full attention layers alternating. */
static cJSON *gptoss_config(const sample_spec *s)
{
	cJSON *j = config_decoder(s);
	if (!j)
		return NULL;
	cJSON_AddNumberToObject(j, "intermediate_size", s->inter);
	cJSON_AddNumberToObject(j, "num_local_experts", s->n_experts);
	cJSON_AddNumberToObject(j, "rms_norm_eps", 1e-5);
	cJSON_AddBoolToObject(j, "attention_bias", 1);
	cJSON_AddNumberToObject(j, "sliding_window", 16);
	cJSON_AddNumberToObject(j, "swiglu_limit", 7.0);
	cJSON_AddNumberToObject(j, "router_aux_loss_coef", 0.9);
	cJSON_ReplaceItemInObjectCaseSensitive(j, "rope_theta", cJSON_CreateNumber(150000.0));
	cJSON *rope = cJSON_CreateObject();
	if (rope) {
		cJSON_AddStringToObject(rope, "rope_type", "yarn");
		cJSON_AddNumberToObject(rope, "factor", 32.0);
		cJSON_AddNumberToObject(rope, "beta_fast", 32.0);
		cJSON_AddNumberToObject(rope, "beta_slow", 1.0);
		cJSON_AddBoolToObject(rope, "truncate", 0);
		cJSON_AddNumberToObject(rope, "original_max_position_embeddings", 128);
		cJSON_ReplaceItemInObjectCaseSensitive(j, "rope_scaling", rope);
	}
	cJSON *types = cJSON_AddArrayToObject(j, "layer_types");
	for (int i = 0; types && i < s->layers; i++)
		cJSON_AddItemToArray(types, cJSON_CreateString(i % 2 ? "full_attention" : "sliding_attention"));
	return j;
}

static cJSON *switch_config(const sample_spec *s)
{
	cJSON *j = config_common(s);
	if (!j)
		return NULL;
	int sparse = s->layers / s->sparse_step;
	cJSON_AddNumberToObject(j, "d_model", s->hidden);
	cJSON_AddNumberToObject(j, "d_kv", s->head_dim);
	cJSON_AddNumberToObject(j, "d_ff", s->inter);
	cJSON_AddNumberToObject(j, "num_heads", s->heads);
	cJSON_AddNumberToObject(j, "num_layers", s->layers);
	cJSON_AddNumberToObject(j, "num_decoder_layers", s->layers);
	cJSON_AddNumberToObject(j, "num_sparse_encoder_layers", sparse);
	cJSON_AddNumberToObject(j, "num_sparse_decoder_layers", sparse);
	cJSON_AddNumberToObject(j, "encoder_sparse_step", s->sparse_step);
	cJSON_AddNumberToObject(j, "decoder_sparse_step", s->sparse_step);
	cJSON_AddNumberToObject(j, "num_experts", s->n_experts);
	cJSON_AddNumberToObject(j, "expert_capacity", 64);
	cJSON_AddBoolToObject(j, "router_bias", 0);
	cJSON_AddNumberToObject(j, "router_jitter_noise", 0.0);
	cJSON_AddStringToObject(j, "router_dtype", "float32");
	cJSON_AddBoolToObject(j, "router_ignore_padding_tokens", 0);
	cJSON_AddNumberToObject(j, "relative_attention_num_buckets", 32);
	cJSON_AddNumberToObject(j, "relative_attention_max_distance", 128);
	cJSON_AddNumberToObject(j, "dropout_rate", 0.1);
	cJSON_AddNumberToObject(j, "layer_norm_epsilon", 1e-6);
	cJSON_AddNumberToObject(j, "router_z_loss_coef", 0.001);
	cJSON_AddNumberToObject(j, "router_aux_loss_coef", 0.001);
	cJSON_AddNumberToObject(j, "initializer_factor", 1.0);
	cJSON_AddStringToObject(j, "dense_act_fn", "relu");
	cJSON_AddBoolToObject(j, "is_encoder_decoder", 1);
	cJSON_AddBoolToObject(j, "add_router_probs", 0);
	cJSON_AddBoolToObject(j, "tie_word_embeddings", 1);
	cJSON_AddNumberToObject(j, "pad_token_id", 0);
	cJSON_AddNumberToObject(j, "eos_token_id", 1);
	cJSON_AddNumberToObject(j, "decoder_start_token_id", 0);
	return j;
}

/* ---- the table --------------------------------------------------------------------------------------------- */

const samples_entry samples_table[] = {
	{"mixtral-tiny", "MixtralForCausalLM, 4 MoE layers, 8 experts top-2, d=128, f=256, BF16"},
	{"olmoe-mini", "OlmoeForCausalLM, 4 MoE layers, 64 experts top-8, d=256, f=128, BF16, 2 shards"},
	{"qwen2moe-tiny", "Qwen2MoeForCausalLM, 1 dense + 3 MoE layers with a shared expert, 16 experts top-4, d=128"},
	{"switch-tiny", "SwitchTransformersForConditionalGeneration, 2+2 MoE blocks, 8 experts top-1, d=64"},
	{"qwen2moe-fused", "qwen2moe-tiny's weights with the experts fused into 3-D tensors (transformers v5 layout)"},
	{"deepseek3-tiny", "DeepseekV3ForCausalLM, 1 dense + 3 MoE layers, 16 experts top-4 in 4 groups (2 eligible), "
			   "selection bias, d=128"},
	{"mixtral-fp8", "mixtral-tiny's weights stored FP8 E4M3 in 64 x 32 blocks with weight_scale_inv (as DeepSeek-V3)"},
	{"gptoss-tiny", "GptOssForCausalLM, 4 MoE layers, 16 experts top-4, interleaved [in, out] experts with biases, "
			"router bias, clamped SwiGLU, d=128, f=64"},
	{"gptoss-mxfp4", "gptoss-tiny's weights with the experts stored MXFP4 ([out, in] _blocks and _scales, as "
			 "openai/gpt-oss-20b)"},
};
const int samples_count = (int)(sizeof samples_table / sizeof samples_table[0]);

/* The rows that twins share: a twin is its source's row with one option more, so with the same seed it has the
 * same planted structure and the same values before its own storage (fusing, FP8, MXFP4). */
#define MIXTRAL_TINY                                                                                              \
	.model_type = "mixtral", .architecture = "MixtralForCausalLM", .layers = 4, .n_experts = 8, .top_k = 2,      \
	.n_proto = 3, .hidden = 128, .inter = 256, .heads = 4, .kv_heads = 2, .head_dim = 32, .vocab = 256,          \
	.tokens = 512, .shards = 1, .group_size = {4, 2, 2},                                                          \
	.popularity = 0.4, .min_active = 1, .full_share = 0.65,                                                       \
	.seed = 0x6d69787472616cULL, .layout = mixtral_layout, .config = mixtral_config
#define QWEN2MOE_TINY                                                                                             \
	.model_type = "qwen2_moe", .architecture = "Qwen2MoeForCausalLM", .layers = 4, .n_experts = 16,              \
	.top_k = 4, .n_proto = 4, .hidden = 128, .inter = 64, .dense_inter = 256, .shared_inter = 128,               \
	.dense_layers = 1, .heads = 4, .kv_heads = 2, .head_dim = 32, .vocab = 256, .tokens = 512, .shards = 1,      \
	.group_size = {6, 4, 3, 3},                                                                                   \
	.popularity = 0.3, .min_active = 2, .full_share = 0.2,                                                        \
	.seed = 0x7177656e326d6fULL, .layout = qwen2moe_layout, .config = qwen2moe_config
#define GPTOSS_TINY                                                                                               \
	.model_type = "gpt_oss", .architecture = "GptOssForCausalLM", .layers = 4, .n_experts = 16, .top_k = 4,      \
	.n_proto = 4, .hidden = 128, .inter = 64, .heads = 4, .kv_heads = 2, .head_dim = 32, .vocab = 256,           \
	.tokens = 512, .shards = 1, .group_size = {6, 4, 3, 3}, .interleaved = 1,                                     \
	.popularity = 0.3, .min_active = 2, .full_share = 0.2,                                                        \
	.seed = 0x6770742d6f7373ULL, .layout = gptoss_layout, .config = gptoss_config

/* Same order as samples_table. */
static const sample_spec sample_specs[] = {
	{MIXTRAL_TINY},
	{.model_type = "olmoe", .architecture = "OlmoeForCausalLM", .layers = 4, .n_experts = 64, .top_k = 8,
	 .n_proto = 8, .hidden = 256, .inter = 128, .heads = 4, .kv_heads = 4, .head_dim = 64, .vocab = 256,
	 .tokens = 1024, .shards = 2, .group_size = {14, 11, 9, 8, 7, 6, 5, 4},
	 .popularity = 0.6, .min_active = 2, .full_share = 0.15,
	 .seed = 0x6f6c6d6f65ULL, .layout = olmoe_layout, .config = olmoe_config},
	{QWEN2MOE_TINY},
	{.model_type = "switch_transformers", .architecture = "SwitchTransformersForConditionalGeneration",
	 .layers = 4, .n_experts = 8, .top_k = 1, .n_proto = 3, .hidden = 64, .inter = 128, .dense_inter = 128,
	 .sparse_step = 2, .heads = 4, .head_dim = 16, .vocab = 256, .tokens = 512, .shards = 1,
	 .group_size = {3, 3, 2},
	 .popularity = 0.45, .min_active = 1, .full_share = 1.0,
	 .seed = 0x737769746368ULL, .layout = switch_layout, .config = switch_config},
	{QWEN2MOE_TINY, .fused = 1},
	{.model_type = "deepseek_v3", .architecture = "DeepseekV3ForCausalLM", .layers = 4, .n_experts = 16,
	 .top_k = 4, .n_proto = 4, .hidden = 128, .inter = 64, .dense_inter = 256, .shared_inter = 64,
	 .dense_layers = 1, .heads = 4, .kv_heads = 4, .head_dim = 32, .vocab = 256, .tokens = 512, .shards = 1,
	 .group_size = {6, 4, 3, 3}, .n_group = 4, .topk_group = 2,
	 .kv_lora = 32, .q_lora = 48, .qk_nope = 16, .qk_rope = 16, .v_head = 32,
	 .popularity = 0.35, .min_active = 2, .full_share = 0.25,
	 .seed = 0x64656570736b33ULL, .layout = deepseek3_layout, .config = deepseek3_config},
	{MIXTRAL_TINY, .fp8_block = {64, 32}},
	{GPTOSS_TINY},
	{GPTOSS_TINY, .mxfp4 = 1},
};

_Static_assert(sizeof sample_specs / sizeof sample_specs[0] == sizeof samples_table / sizeof samples_table[0],
	       "one spec per sample");

/* ---- planted structure of a block -------------------------------------------------------------------------- */

static void block_free(moe_block *b)
{
	free(b->prototype);
	free(b->lead);
	free(b->perm);
	free(b->dir);
	free(b->unit);
	free(b->router);
	free(b->proto);
}

/* Experts in a shuffled order take the prototypes in turn, group_size[p] each; each prototype's lead is one of
 * its members at random. */
static void block_assign(moe_block *b, const sample_spec *s, rng *r)
{
	int order[256];
	for (int e = 0; e < b->E; e++)
		order[e] = e;
	shuffle(r, order, b->E);
	int at = 0;
	for (int p = 0; p < b->P; p++) {
		for (int i = 0; i < s->group_size[p]; i++)
			b->prototype[order[at + i]] = p;
		b->lead[p] = order[at + rng_below(r, s->group_size[p])];
		at += s->group_size[p];
	}
	double sum = 0.0;
	for (int p = 0; p < b->P; p++)
		sum += b->popularity[p] = pow(s->popularity, p);
	for (int p = 0; p < b->P; p++)
		b->popularity[p] /= sum;
	for (int e = 0; e < b->E; e++) {
		int *pe = b->perm + (size_t)e * b->f;
		for (int i = 0; i < b->f; i++)
			pe[i] = i;
		shuffle(r, pe, b->f);
	}
}

/* Removes from v [d] its components along the first n rows of basis [n, d] (orthonormal) and normalises it. */
static void orthonormalise(float *v, const float *basis, int n, int d)
{
	for (int i = 0; i < n; i++) {
		const float *q = basis + (size_t)i * d;
		double dot = 0.0;
		for (int j = 0; j < d; j++)
			dot += (double)v[j] * q[j];
		for (int j = 0; j < d; j++)
			v[j] -= (float)(dot * q[j]);
	}
	double norm = 0.0;
	for (int j = 0; j < d; j++)
		norm += (double)v[j] * v[j];
	norm = sqrt(norm);
	for (int j = 0; j < d; j++)
		v[j] = (float)(v[j] / norm);
}

static void gauss_fill(rng *r, float *v, size_t n, double std)
{
	for (size_t i = 0; i < n; i++)
		v[i] = (float)(std * rng_gauss(r));
}

/* Router directions (Gram-Schmidt), noise directions orthogonal to them, and the router rows as stored. */
static void block_router(moe_block *b, rng *r)
{
	int d = b->d;
	for (int p = 0; p < b->P; p++) {
		gauss_fill(r, b->dir + (size_t)p * d, (size_t)d, 1.0);
		orthonormalise(b->dir + (size_t)p * d, b->dir, p, d);
	}
	double len = ROUTER_SCALE / sqrt((double)d);
	for (int e = 0; e < b->E; e++) {
		float *u = b->unit + (size_t)e * d, *row = b->router + (size_t)e * d;
		gauss_fill(r, u, (size_t)d, 1.0);
		orthonormalise(u, b->dir, b->P, d);
		int p = b->prototype[e];
		double scale = len * (b->lead[p] == e ? LEAD_SCALE : 1.0);
		for (int j = 0; j < d; j++) {
			float v = (float)(scale * (b->dir[(size_t)p * d + j] + ROUTER_NOISE * u[j]));
			row[j] = st_bf16_to_f32(st_f32_to_bf16(v));
		}
	}
}

static size_t mat_floats(const moe_block *b)
{
	return (size_t)b->f * (size_t)b->d;
}

/* Prototype matrices with unit-variance activations on unit-RMS inputs: std 1/sqrt(fan-in). */
static void block_prototypes(moe_block *b, rng *r)
{
	for (int p = 0; p < b->P; p++)
		for (int m = 0; m < N_MAT; m++) {
			if (!b->naming->mat[m])
				continue;
			double std = 1.0 / sqrt((double)(m == MAT_DOWN ? b->f : b->d));
			gauss_fill(r, b->proto + ((size_t)p * N_MAT + (size_t)m) * mat_floats(b), mat_floats(b), std);
		}
}

static ms_status block_build(moe_block *b, const sample_spec *s, int index, ms_error *err)
{
	b->E = s->n_experts;
	b->P = s->n_proto;
	b->k = s->top_k;
	b->d = s->hidden;
	b->f = s->inter;
	b->min_active = s->min_active;
	b->full_share = s->full_share;
	b->seed = derive_seed(s->seed, hash_name(b->prefix));
	b->prototype = calloc((size_t)b->E, sizeof *b->prototype);
	b->lead = calloc((size_t)b->P, sizeof *b->lead);
	b->perm = calloc((size_t)b->E * b->f, sizeof *b->perm);
	b->dir = calloc((size_t)b->P * b->d, sizeof *b->dir);
	b->unit = calloc((size_t)b->E * b->d, sizeof *b->unit);
	b->router = calloc((size_t)b->E * b->d, sizeof *b->router);
	b->proto = calloc((size_t)b->P * N_MAT * mat_floats(b), sizeof *b->proto);
	if (!b->prototype || !b->lead || !b->perm || !b->dir || !b->unit || !b->router || !b->proto)
		return ms_fail(err, MS_ERR_NOMEM, "samples: out of memory for MoE block %d", index);
	rng r;
	rng_init(&r, b->seed);
	block_assign(b, s, &r);
	block_router(b, &r);
	block_prototypes(b, &r);
	return MS_OK;
}

/* Matrix m of expert e into out: the prototype's rows (down: columns) in the expert's neuron order, plus noise
 * from the expert's own stream. */
static void expert_matrix(const moe_block *b, int e, int m, float *out)
{
	rng r;
	rng_init(&r, derive_seed(b->seed, (uint64_t)e * N_MAT + (uint64_t)m + 1));
	const float *src = b->proto + ((size_t)b->prototype[e] * N_MAT + (size_t)m) * mat_floats(b);
	const int *perm = b->perm + (size_t)e * b->f;
	int d = b->d, f = b->f;
	double noise = EXPERT_NOISE / sqrt((double)(m == MAT_DOWN ? f : d));
	if (m != MAT_DOWN) {
		for (int i = 0; i < f; i++)
			for (int j = 0; j < d; j++)
				out[(size_t)i * d + j] = src[(size_t)perm[i] * d + j] + (float)(noise * rng_gauss(&r));
		return;
	}
	for (int i = 0; i < d; i++)
		for (int j = 0; j < f; j++)
			out[(size_t)i * f + j] = src[(size_t)i * f + perm[j]] + (float)(noise * rng_gauss(&r));
}

/* ---- calibration tokens ------------------------------------------------------------------------------------ */

/* Draws a prototype by popularity among those not yet in used[0..n). */
static int draw_prototype(const moe_block *b, rng *r, const int *used, int n)
{
	double w[MAX_PROTO], total = 0.0;
	for (int p = 0; p < b->P; p++) {
		w[p] = b->popularity[p];
		for (int i = 0; i < n; i++)
			if (used[i] == p)
				w[p] = 0.0;
		total += w[p];
	}
	double u = rng_uniform(r) * total;
	int last = 0;
	for (int p = 0; p < b->P; p++) {
		if (w[p] <= 0.0)
			continue;
		last = p;
		if (u < w[p])
			return p;
		u -= w[p];
	}
	return last;
}

/* Non-lead experts of the active prototypes, the primary's (active[0]) first, each part shuffled. */
static int nonlead_pool(const moe_block *b, rng *r, const int *active, int m, int *pool)
{
	int n = 0;
	for (int a = 0; a < m; a++) {
		int start = n;
		for (int e = 0; e < b->E; e++)
			if (b->prototype[e] == active[a] && b->lead[active[a]] != e)
				pool[n++] = e;
		shuffle(r, pool + start, n - start);
	}
	return n;
}

/* One token x [d] with RMS 1 (what a block sees after the layer's RMSNorm). Its m active prototypes put their
 * leads first in its top-k; the k - m remaining slots go to non-leads it leans toward. */
static void calib_token(const moe_block *b, rng *r, float *x)
{
	int active[MAX_PROTO], pool[256];
	int hi = b->k < b->P ? b->k : b->P, lo = b->min_active < hi ? b->min_active : hi, d = b->d;
	int m = lo == hi || rng_uniform(r) < b->full_share ? hi : lo + rng_below(r, hi - lo);
	for (int i = 0; i < m; i++)
		active[i] = draw_prototype(b, r, active, i);
	int n = nonlead_pool(b, r, active, m, pool);
	double noise = TOKEN_NOISE / sqrt((double)d);
	for (int j = 0; j < d; j++)
		x[j] = (float)(noise * rng_gauss(r));
	for (int i = 0; i < m; i++)
		for (int j = 0; j < d; j++)
			x[j] += b->dir[(size_t)active[i] * d + j];
	for (int i = 0; i < b->k - m && i < n; i++)
		for (int j = 0; j < d; j++)
			x[j] += (float)TARGET_BOOST * b->unit[(size_t)pool[i] * d + j];
	double ss = 0.0;
	for (int j = 0; j < d; j++)
		ss += (double)x[j] * x[j];
	double scale = sqrt((double)d / ss);
	for (int j = 0; j < d; j++)
		x[j] = (float)(x[j] * scale);
}

/* ---- files ------------------------------------------------------------------------------------------------- */

static ms_status write_text(const char *dir, const char *name, const char *text, ms_error *err)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	if (!f)
		return ms_fail(err, MS_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
	errno = 0;
	if (fputs(text, f) < 0 || fputc('\n', f) == EOF) {
		int e = errno;
		fclose(f);
		return ms_fail(err, MS_ERR_IO, "%s: write failed: %s", path, e ? strerror(e) : "unknown error");
	}
	return dur_fclose(f, path, err);
}

/* Prints and writes a cJSON document (and frees it); NULL means a failed allocation while building it. */
static ms_status write_json(const char *dir, const char *name, cJSON *doc, ms_error *err)
{
	char *text = doc ? cJSON_Print(doc) : NULL;
	cJSON_Delete(doc);
	if (!text)
		return ms_fail(err, MS_ERR_NOMEM, "%s/%s: out of memory", dir, name);
	ms_status st = write_text(dir, name, text, err);
	cJSON_free(text);
	return st;
}

/* Values of a non-expert tensor, from a stream seeded by its name. */
static void fill_plain(const sample_spec *s, const tensor_spec *t, float *out)
{
	rng r;
	rng_init(&r, derive_seed(s->seed, hash_name(t->name)));
	size_t n = (size_t)tensor_numel(t);
	gauss_fill(&r, out, n, t->kind == FILL_NORM ? NORM_NOISE : SMALL_STD);
	if (t->kind == FILL_NORM)
		for (size_t i = 0; i < n; i++)
			out[i] += 1.0f;
}

/* The selection bias of a block: it lowers the lead experts (the most used ones, as DeepSeek-V3's load balancing
 * does) by BIAS_LEAD and spreads the rest by BIAS_NOISE, so that biased selection differs from plain top-k. */
static void fill_bias(const moe_block *b, float *out)
{
	rng r;
	rng_init(&r, derive_seed(b->seed, 0xb1a5));
	for (int e = 0; e < b->E; e++)
		out[e] = (float)(BIAS_NOISE * rng_gauss(&r));
	for (int p = 0; p < b->P; p++)
		out[b->lead[p]] -= (float)BIAS_LEAD;
}

/* Bias `m` (MAT_GATE, MAT_UP: [f]; MAT_DOWN: [d]) of expert e: its prototype's bias vector from a stream of the
 * block, gate and up in the expert's neuron order like its rows, plus noise from the expert's own stream. */
static void expert_bias(const moe_block *b, int e, int m, float *out)
{
	rng pr, er;
	rng_init(&pr, derive_seed(b->seed, 0xb1a5000 + (uint64_t)b->prototype[e] * N_MAT + (uint64_t)m));
	rng_init(&er, derive_seed(b->seed, 0xe0b1a5000 + (uint64_t)e * N_MAT + (uint64_t)m));
	const int n = m == MAT_DOWN ? b->d : b->f;
	float proto[1024];
	gauss_fill(&pr, proto, (size_t)n, EXPERT_BIAS_STD);
	for (int i = 0; i < n; i++)
		out[i] = proto[m == MAT_DOWN ? i : b->perm[(size_t)e * b->f + i]] +
			 (float)(EXPERT_NOISE * EXPERT_BIAS_STD * rng_gauss(&er));
}

/* gpt_oss's expert tensors, expert by expert: the planted [out, in] matrices transposed (gate_up_proj's column 2i
 * is gate row i, column 2i + 1 up row i), the biases interleaved alike. scratch holds 2 f d floats. */
static void fill_interleaved(const moe_block *b, const tensor_spec *t, float *out, float *scratch)
{
	const size_t d = (size_t)b->d, f = (size_t)b->f, fd = mat_floats(b);
	for (int e = 0; e < b->E; e++) {
		if (t->kind == FILL_EXPERT_BIAS && t->mat == MAT_DOWN) {
			expert_bias(b, e, MAT_DOWN, out + e * d);
			continue;
		}
		if (t->kind == FILL_EXPERT_BIAS) {
			expert_bias(b, e, MAT_GATE, scratch);
			expert_bias(b, e, MAT_UP, scratch + f);
			for (size_t i = 0; i < f; i++) {
				out[e * 2 * f + 2 * i] = scratch[i];
				out[e * 2 * f + 2 * i + 1] = scratch[f + i];
			}
			continue;
		}
		if (t->mat == MAT_DOWN) {   /* [d, f] -> [f, d] */
			expert_matrix(b, e, MAT_DOWN, scratch);
			for (size_t i = 0; i < f; i++)
				for (size_t r = 0; r < d; r++)
					out[e * fd + i * d + r] = scratch[r * f + i];
			continue;
		}
		expert_matrix(b, e, MAT_GATE, scratch);
		expert_matrix(b, e, MAT_UP, scratch + fd);
		for (size_t j = 0; j < d; j++)
			for (size_t i = 0; i < f; i++) {
				out[e * 2 * fd + j * 2 * f + 2 * i] = scratch[i * d + j];
				out[e * 2 * fd + j * 2 * f + 2 * i + 1] = scratch[fd + i * d + j];
			}
	}
}

static void fill_tensor(const sample_ctx *c, const tensor_spec *t, float *out, float *scratch)
{
	const moe_block *b = t->kind == FILL_ROUTER || t->kind == FILL_EXPERT || t->kind == FILL_FUSED ||
			     t->kind == FILL_BIAS || t->kind == FILL_INTERLEAVED || t->kind == FILL_EXPERT_BIAS
			     ? &c->blocks[t->block] : NULL;
	const size_t fd = b ? mat_floats(b) : 0;
	if (t->kind == FILL_INTERLEAVED || t->kind == FILL_EXPERT_BIAS)
		fill_interleaved(b, t, out, scratch);
	else if (t->kind == FILL_ROUTER)
		memcpy(out, b->router, (size_t)b->E * b->d * sizeof *out);
	else if (t->kind == FILL_EXPERT)
		expert_matrix(b, t->expert, t->mat, out);
	else if (t->kind == FILL_BIAS)
		fill_bias(b, out);
	else if (t->kind == FILL_FUSED && t->mat == MAT_DOWN)
		for (int e = 0; e < b->E; e++)
			expert_matrix(b, e, MAT_DOWN, out + (size_t)e * fd);
	else if (t->kind == FILL_FUSED)
		for (int e = 0; e < b->E; e++) {
			expert_matrix(b, e, MAT_GATE, out + (size_t)e * 2 * fd);
			expert_matrix(b, e, MAT_UP, out + (size_t)e * 2 * fd + fd);
		}
	else
		fill_plain(c->spec, t, out);
}

/* The writer's shard limit: above 1/2 and at most 3/5 of the bytes, so that it makes exactly two shards when every
 * tensor is small next to the whole; effectively no limit for one shard. */
static uint64_t shard_limit(const sample_ctx *c)
{
	uint64_t total = 0;
	for (size_t i = 0; i < c->tensors.n; i++)
		total += (uint64_t)tensor_numel(&c->tensors.v[i]) * st_dtype_size(ST_BF16);
	return c->spec->shards > 1 ? total / 5 * 3 : UINT64_MAX / 4;
}

/* In an FP8 sample, the projection matrices (attention, dense and expert) are stored FP8; the embeddings, the
 * output head, the routers and the norms are not (DeepSeek-V3's choice). */
static int stored_fp8(const sample_spec *s, const tensor_spec *t)
{
	return s->fp8_block[0] > 0 && t->ndim == 2 && t->kind != FILL_ROUTER && !strstr(t->name, "embed_tokens") &&
	       !strstr(t->name, "lm_head");
}

/* The scale grid of t, as the writers of merged checkpoints size it (io/quant.h). */
static void fp8_scale_shape(const sample_spec *s, const tensor_spec *t, int64_t *shape)
{
	qt_fp8_scale_shape(t->shape[0], t->shape[1], s->fp8_block[0], s->fp8_block[1], shape);
}

/* In an MXFP4 sample, the interleaved expert matrices [E, in, out] are stored transposed, [E, out, in], in blocks
 * of 32 values along `in`; *e, *out, *in get the three sizes. */
static int stored_mxfp4(const sample_spec *s, const tensor_spec *t, int64_t *e, int64_t *out, int64_t *in)
{
	if (!s->mxfp4 || t->kind != FILL_INTERLEAVED)
		return 0;
	*e = t->shape[0];
	*in = t->shape[1];
	*out = t->shape[2];
	return 1;
}

static ms_status declare_mxfp4(const tensor_spec *t, int64_t e, int64_t out, int64_t in, st_writer *w,
			       ms_error *err)
{
	char name[200];
	const int64_t shape[4] = {e, out, in / QT_MX_BLOCK, 16};
	snprintf(name, sizeof name, "%s_blocks", t->name);
	ms_status st = st_writer_declare(w, name, ST_U8, 4, shape, err);
	snprintf(name, sizeof name, "%s_scales", t->name);
	return st ? st : st_writer_declare(w, name, ST_U8, 3, shape, err);
}

/* x [E, in, out] transposed to [E, out, in], then quantized as E out rows of `in` values. */
static ms_status write_mxfp4(const float *x, int64_t e, int64_t out, int64_t in, st_writer *w, ms_error *err)
{
	const int64_t rows = e * out, n = rows * in;
	float *xt = malloc((size_t)n * sizeof *xt);
	uint8_t *blocks = malloc((size_t)(n / 2)), *scales = malloc((size_t)(n / QT_MX_BLOCK));
	ms_status st = xt && blocks && scales ? MS_OK : ms_fail(err, MS_ERR_NOMEM, "samples: out of memory");
	for (int64_t k = 0; !st && k < e; k++)
		for (int64_t i = 0; i < in; i++)
			for (int64_t o = 0; o < out; o++)
				xt[(k * out + o) * in + i] = x[(k * in + i) * out + o];
	if (!st && qt_mxfp4_quantize(xt, rows, in, blocks, scales, NULL, NULL) != 0)
		st = ms_fail(err, MS_ERR_ARG, "samples: a non-finite expert weight");
	if (!st)
		st = st_writer_write(w, blocks, (uint64_t)(n / 2), err);
	if (!st)
		st = st_writer_write(w, scales, (uint64_t)(n / QT_MX_BLOCK), err);
	free(xt);
	free(blocks);
	free(scales);
	return st;
}

static ms_status declare_tensor(const sample_spec *s, const tensor_spec *t, st_writer *w, ms_error *err)
{
	int64_t e, out, in;
	if (stored_mxfp4(s, t, &e, &out, &in))
		return declare_mxfp4(t, e, out, in, w, err);
	if (!stored_fp8(s, t))
		return st_writer_declare(w, t->name, ST_BF16, t->ndim, t->shape, err);
	char scale[200];
	int64_t shape[2];
	fp8_scale_shape(s, t, shape);
	if (qt_fp8_scale_name(t->name, scale, sizeof scale) != 0)
		return ms_fail(err, MS_ERR_ARG, "samples: %s: not a weight", t->name);
	ms_status st = st_writer_declare(w, t->name, ST_F8_E4M3, 2, t->shape, err);
	return st ? st : st_writer_declare(w, scale, ST_F32, 2, shape, err);
}

/* The values x [numel] of t as stored: BF16, or FP8 codes then their scales. */
static ms_status write_tensor(const sample_spec *s, const tensor_spec *t, const float *x, st_writer *w,
			      ms_error *err)
{
	int64_t e, out, in;
	if (stored_mxfp4(s, t, &e, &out, &in))
		return write_mxfp4(x, e, out, in, w, err);
	if (!stored_fp8(s, t))
		return st_writer_write_f32(w, x, (uint64_t)tensor_numel(t), err);
	int64_t shape[2];
	fp8_scale_shape(s, t, shape);
	uint8_t *codes = malloc((size_t)tensor_numel(t));
	float *inv = malloc((size_t)(shape[0] * shape[1]) * sizeof *inv);
	ms_status st = codes && inv ? MS_OK : ms_fail(err, MS_ERR_NOMEM, "samples: out of memory");
	if (!st) {
		qt_fp8_quantize(x, t->shape[0], t->shape[1], s->fp8_block[0], s->fp8_block[1], ST_F32, codes, inv, NULL,
				NULL);
		st = st_writer_write(w, codes, (uint64_t)tensor_numel(t), err);
	}
	if (!st)
		st = st_writer_write_f32(w, inv, (uint64_t)(shape[0] * shape[1]), err);
	free(codes);
	free(inv);
	return st;
}

static ms_status model_tensors(const sample_ctx *c, st_writer *w, ms_error *err)
{
	int64_t most = 0;
	for (size_t i = 0; i < c->tensors.n; i++) {
		const tensor_spec *t = &c->tensors.v[i];
		ms_status st = declare_tensor(c->spec, t, w, err);
		if (st)
			return st;
		if (tensor_numel(t) > most)
			most = tensor_numel(t);
	}
	float *buf = malloc(2 * (size_t)most * sizeof *buf);   /* a tensor, then scratch for fill_interleaved */
	if (!buf)
		return ms_fail(err, MS_ERR_NOMEM, "samples: out of memory");
	ms_status st = MS_OK;
	for (size_t i = 0; i < c->tensors.n && !st; i++) {
		fill_tensor(c, &c->tensors.v[i], buf, buf + most);
		st = write_tensor(c->spec, &c->tensors.v[i], buf, w, err);
	}
	free(buf);
	return st;
}

static ms_status write_model(const sample_ctx *c, const char *dir, ms_error *err)
{
	st_writer *w = NULL;
	ms_status st = st_writer_create(dir, "model", shard_limit(c), &w, err);
	if (!st)
		st = model_tensors(c, w, err);
	if (!st)
		st = st_writer_finish(w, err);
	st_writer_free(w);
	return st;
}

/* ---- calibration file -------------------------------------------------------------------------------------- */

static void put_i32_le(unsigned char *p, int32_t v)
{
	uint32_t u = (uint32_t)v;
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(u >> (8 * i));
}

/* token_ids (uniform over the vocabulary) or segment_ids (8 equal runs), as little-endian I32. */
static ms_status calib_ids(const sample_spec *s, int segments, st_writer *w, ms_error *err)
{
	int T = s->tokens;
	unsigned char *bytes = malloc((size_t)T * 4);
	if (!bytes)
		return ms_fail(err, MS_ERR_NOMEM, "samples: out of memory");
	rng r;
	rng_init(&r, derive_seed(s->seed, hash_name("token_ids")));
	for (int t = 0; t < T; t++)
		put_i32_le(bytes + 4 * (size_t)t, segments ? (int32_t)((int64_t)t * 8 / T) : rng_below(&r, s->vocab));
	ms_status st = st_writer_write(w, bytes, (uint64_t)T * 4, err);
	free(bytes);
	return st;
}

static ms_status calib_input(const moe_block *b, int T, st_writer *w, ms_error *err)
{
	float *x = malloc((size_t)T * b->d * sizeof *x);  /* [T, d] */
	if (!x)
		return ms_fail(err, MS_ERR_NOMEM, "samples: out of memory");
	rng r;
	rng_init(&r, derive_seed(b->seed, 0xCA11B));
	for (int t = 0; t < T; t++)
		calib_token(b, &r, x + (size_t)t * b->d);
	ms_status st = st_writer_write_f32(w, x, (uint64_t)T * b->d, err);
	free(x);
	return st;
}

/* Calibration tensors in name order: the block inputs sort before "segment_ids" and "token_ids" for every family
 * ("encoder", "decoder" and "model" all do), but sorting keeps that true by construction. */
typedef struct {
	char name[192];
	int block;               /* -1: segment_ids, -2: token_ids */
} calib_entry;

static int calib_cmp(const void *a, const void *b)
{
	return strcmp(((const calib_entry *)a)->name, ((const calib_entry *)b)->name);
}

static ms_status calib_declare(const sample_ctx *c, st_writer *w, calib_entry *ent, int n, ms_error *err)
{
	ms_status st = st_writer_metadata(w, "format", "moescope-calib", err);
	for (int i = 0; i < n && !st; i++) {
		int64_t shape[2] = {c->spec->tokens, c->spec->hidden};
		if (ent[i].block >= 0)
			st = st_writer_declare(w, ent[i].name, ST_F32, 2, shape, err);
		else
			st = st_writer_declare(w, ent[i].name, ST_I32, 1, shape, err);
	}
	return st;
}

static ms_status write_calib(const sample_ctx *c, const char *dir, ms_error *err)
{
	int n = c->n_blocks + 2;
	calib_entry *ent = calloc((size_t)n, sizeof *ent);
	if (!ent)
		return ms_fail(err, MS_ERR_NOMEM, "samples: out of memory");
	for (int b = 0; b < c->n_blocks; b++) {
		snprintf(ent[b].name, sizeof ent[b].name, "%s.input", c->blocks[b].prefix);
		ent[b].block = b;
	}
	snprintf(ent[n - 2].name, sizeof ent[0].name, "segment_ids");
	ent[n - 2].block = -1;
	snprintf(ent[n - 1].name, sizeof ent[0].name, "token_ids");
	ent[n - 1].block = -2;
	qsort(ent, (size_t)n, sizeof *ent, calib_cmp);
	st_writer *w = NULL;
	ms_status st = st_writer_create(dir, "calib", UINT64_MAX / 4, &w, err);
	if (!st)
		st = calib_declare(c, w, ent, n, err);
	for (int i = 0; i < n && !st; i++)
		st = ent[i].block >= 0 ? calib_input(&c->blocks[ent[i].block], c->spec->tokens, w, err)
				       : calib_ids(c->spec, ent[i].block == -1, w, err);
	if (!st)
		st = st_writer_finish(w, err);
	st_writer_free(w);
	free(ent);
	return st;
}

/* ---- truth.json -------------------------------------------------------------------------------------------- */

/* One block's planted structure: prototype[e] is expert e's prototype, lead[p] prototype p's lead expert, and
 * permutation[e][i] = j says row i of expert e's gate and up (column i of its down) is row j (column j) of its
 * prototype's matrices, noise aside. Un-permuting, expert row permutation[e][i] goes back to row i. */
static cJSON *truth_block(const moe_block *b)
{
	cJSON *j = cJSON_CreateObject();
	if (!j)
		return NULL;
	cJSON_AddStringToObject(j, "label", b->label);
	cJSON_AddStringToObject(j, "prefix", b->prefix);
	cJSON_AddItemToObject(j, "prototype", cJSON_CreateIntArray(b->prototype, b->E));
	cJSON_AddItemToObject(j, "lead", cJSON_CreateIntArray(b->lead, b->P));
	cJSON *perm = cJSON_AddArrayToObject(j, "permutation");
	for (int e = 0; perm && e < b->E; e++)
		cJSON_AddItemToArray(perm, cJSON_CreateIntArray(b->perm + (size_t)e * b->f, b->f));
	return j;
}

static cJSON *truth_json(const sample_ctx *c)
{
	cJSON *j = cJSON_CreateObject();
	if (!j)
		return NULL;
	cJSON_AddStringToObject(j, "family", c->spec->model_type);
	cJSON *blocks = cJSON_AddArrayToObject(j, "blocks");
	for (int b = 0; blocks && b < c->n_blocks; b++)
		cJSON_AddItemToArray(blocks, truth_block(&c->blocks[b]));
	return j;
}

/* ---- one sample, into a fresh directory that replaces the old one only when complete ----------------------- */

static void ctx_free(sample_ctx *c)
{
	for (int b = 0; b < c->n_blocks; b++)
		block_free(&c->blocks[b]);
	free(c->blocks);
	free(c->tensors.v);
}

/* The table's promises that the fixed-size arrays of this file rely on. */
static int spec_valid(const sample_spec *s)
{
	int sum = 0;
	for (int p = 0; p < s->n_proto && p < MAX_PROTO; p++)
		sum += s->group_size[p];
	return s->n_proto >= 1 && s->n_proto <= MAX_PROTO && s->n_experts <= 256 && sum == s->n_experts &&
	       s->hidden <= 1024 && s->inter <= 1024 &&   /* expert_bias's prototype vector */
	       s->top_k >= 1 && s->top_k <= s->n_experts && s->min_active >= 1;
}

static ms_status ctx_build(sample_ctx *c, const sample_spec *s, ms_error *err)
{
	memset(c, 0, sizeof *c);
	c->spec = s;
	if (!spec_valid(s))
		return ms_fail(err, MS_ERR_ARG, "samples: the table row of %s is inconsistent", s->model_type);
	c->cap_blocks = 2 * s->layers;
	c->blocks = calloc((size_t)c->cap_blocks, sizeof *c->blocks);
	if (!c->blocks)
		return ms_fail(err, MS_ERR_NOMEM, "samples: out of memory");
	s->layout(c);
	if (c->tensors.failed)
		return ms_fail(err, MS_ERR_NOMEM, "samples: cannot list the tensors of %s", s->model_type);
	qsort(c->tensors.v, c->tensors.n, sizeof *c->tensors.v, tensor_cmp);
	for (int b = 0; b < c->n_blocks; b++) {
		ms_status st = block_build(&c->blocks[b], s, b, err);
		if (st)
			return st;
	}
	return MS_OK;
}

/* config.json of an FP8 sample carries DeepSeek-V3's quantization_config. */
static cJSON *with_quant(const sample_spec *s, cJSON *j)
{
	if (j && s->mxfp4) {   /* openai/gpt-oss-20b's quantization_config */
		cJSON *q = cJSON_AddObjectToObject(j, "quantization_config");
		static const char *const keep[] = {"model.layers.*.self_attn", "model.layers.*.mlp.router",
						   "model.embed_tokens", "lm_head"};
		cJSON_AddItemToObject(q, "modules_to_not_convert", cJSON_CreateStringArray(keep, 4));
		cJSON_AddStringToObject(q, "quant_method", "mxfp4");
		return j;
	}
	if (!j || !s->fp8_block[0])
		return j;
	cJSON *q = cJSON_AddObjectToObject(j, "quantization_config");
	cJSON_AddStringToObject(q, "activation_scheme", "dynamic");
	cJSON_AddStringToObject(q, "fmt", "e4m3");
	cJSON_AddStringToObject(q, "quant_method", "fp8");
	cJSON *bs = cJSON_AddArrayToObject(q, "weight_block_size");
	cJSON_AddItemToArray(bs, cJSON_CreateNumber(s->fp8_block[0]));
	cJSON_AddItemToArray(bs, cJSON_CreateNumber(s->fp8_block[1]));
	return j;
}

static ms_status write_files(const sample_spec *s, const char *dir, ms_error *err)
{
	sample_ctx c;
	ms_status st = ctx_build(&c, s, err);
	if (!st)
		st = write_model(&c, dir, err);
	if (!st)
		st = write_calib(&c, dir, err);
	if (!st)
		st = write_json(dir, "config.json", with_quant(s, s->config(s)), err);
	if (!st)
		st = write_json(dir, "truth.json", truth_json(&c), err);
	ctx_free(&c);
	return st;
}

/* The files a sample directory holds; only these are removed when a sample is replaced. */
static int is_sample_file(const char *name)
{
	static const char *const fixed[] = {"config.json", "truth.json", "calib.safetensors", "model.safetensors",
					    "model.safetensors.index.json", "calib.safetensors.index.json"};
	for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
		if (strcmp(name, fixed[i]) == 0)
			return 1;
	size_t n = strlen(name);
	return (strncmp(name, "model-", 6) == 0 || strncmp(name, "calib-", 6) == 0) && n > 12 &&
	       strcmp(name + n - 12, ".safetensors") == 0;
}

/* Removes the files of dir (all of them, or only sample files) and then dir; fails if anything else remains. */
static int remove_dir(const char *dir, int only_sample_files)
{
	DIR *d = opendir(dir);
	if (!d)
		return -1;
	char path[4096];
	for (struct dirent *de; (de = readdir(d));) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (only_sample_files && !is_sample_file(de->d_name))
			continue;
		snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
		unlink(path);
	}
	closedir(d);
	return rmdir(dir);
}

/* 1 when dir holds nothing but sample files (so replacing it loses nothing of the user's). */
static int only_sample_files(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return 0;
	int ok = 1;
	for (struct dirent *de; ok && (de = readdir(d));)
		ok = strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 || is_sample_file(de->d_name);
	closedir(d);
	return ok;
}

/* Moves the finished tmp directory (its files synced as written) to final, durably (io/durable.h), replacing an
 * earlier sample there. */
static ms_status install_dir(const char *tmp, const char *final, ms_error *err)
{
	struct stat sb;
	if (lstat(final, &sb) == 0) {
		if (!S_ISDIR(sb.st_mode) || !only_sample_files(final) || remove_dir(final, 1) != 0)
			return ms_fail(err, MS_ERR_EXISTS, "%s: exists and holds files the generator did not write; "
				       "not replacing it", final);
	}
	ms_status st = dur_sync_dir(tmp, err);
	return st ? st : dur_rename(tmp, final, NULL, err);
}

static ms_status write_sample(const char *dir, int i, ms_error *err)
{
	char tmp[4096], final[4096];
	int n1 = snprintf(tmp, sizeof tmp, "%s/.%s.tmp-XXXXXX", dir, samples_table[i].name);
	int n2 = snprintf(final, sizeof final, "%s/%s", dir, samples_table[i].name);
	if (n1 >= (int)sizeof tmp || n2 >= (int)sizeof final)
		return ms_fail(err, MS_ERR_ARG, "%.64s...: path too long", dir);
	/* mkdtemp makes the directory private; the sample is for everyone to read, like a plain mkdir */
	if (!mkdtemp(tmp) || chmod(tmp, 0755) != 0)
		return ms_fail(err, MS_ERR_IO, "%s: cannot create a temporary directory: %s", dir, strerror(errno));
	ms_status st = write_files(&sample_specs[i], tmp, err);
	if (!st)
		st = install_dir(tmp, final, err);
	if (st)
		remove_dir(tmp, 0);
	return st;
}

ms_status samples_write(const char *dir, const char *only, ms_error *err)
{
	if (!dir || !*dir)
		return ms_fail(err, MS_ERR_ARG, "samples: no output directory");
	int found = 0;
	char known[256] = "";
	for (int i = 0; i < samples_count && only; i++) {
		found |= strcmp(samples_table[i].name, only) == 0;
		size_t n = strlen(known);
		snprintf(known + n, sizeof known - n, "%s%s", i ? ", " : "", samples_table[i].name);
	}
	if (only && !found)
		return ms_fail(err, MS_ERR_ARG, "samples: unknown sample '%s' (known: %s)", only, known);
	ms_status st = outdir_make_dirs(dir, 0777, err);
	for (int i = 0; i < samples_count && !st; i++)
		if (!only || strcmp(samples_table[i].name, only) == 0)
			st = write_sample(dir, i, err);
	return st;
}
