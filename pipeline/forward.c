/* The streaming forward pass (pipeline/forward.h). */
#include "pipeline/forward.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/block.h"
#include "analysis/layer.h"
#include "analysis/par.h"
#include "io/file.h"
#include "text/tokenizer.h"

/* Vocabulary rows of the head resident at once. */
#define VOCAB_CHUNK 4096
/* Tokens per task of the head. */
#define HEAD_TOKENS 128

/* ---- weights ------------------------------------------------------------------------------------------------ */

/* The shape config.json implies for weight t ([rows] when *cols is 0). */
static void weight_shape(const arch_model *a, arch_tensor t, int64_t *rows, int64_t *cols)
{
	const int64_t d = a->d, H = a->heads, Hkv = a->kv_heads, hd = a->head_dim;
	const int64_t qk = a->qk_nope_dim + a->qk_rope_dim, gqa = a->attn == ARCH_ATTN_GQA;
	*cols = 0;
	*rows = d;
	switch (t) {
	case ARCH_T_EMBED: case ARCH_T_LM_HEAD: *rows = a->vocab; *cols = d; break;
	case ARCH_T_LM_HEAD_BIAS: *rows = a->vocab; break;
	case ARCH_T_Q: *rows = gqa ? H * hd : H * qk; *cols = d; break;
	case ARCH_T_Q_BIAS: *rows = H * hd; break;
	case ARCH_T_K: case ARCH_T_V: *rows = Hkv * hd; *cols = d; break;
	case ARCH_T_K_BIAS: case ARCH_T_V_BIAS: *rows = Hkv * hd; break;
	case ARCH_T_O: *cols = H * (gqa ? hd : a->v_head_dim); break;
	case ARCH_T_Q_NORM: *rows = a->qk_norm == ARCH_QK_FULL ? H * hd : hd; break;
	case ARCH_T_K_NORM: *rows = a->qk_norm == ARCH_QK_FULL ? Hkv * hd : hd; break;
	case ARCH_T_Q_A: *rows = a->q_lora_rank; *cols = d; break;
	case ARCH_T_Q_A_BIAS: *rows = a->q_lora_rank; break;
	case ARCH_T_KV_A_BIAS: *rows = a->kv_lora_rank + a->qk_rope_dim; break;
	case ARCH_T_Q_A_NORM: *rows = a->q_lora_rank; break;
	case ARCH_T_Q_B: *rows = H * qk; *cols = a->q_lora_rank; break;
	case ARCH_T_KV_A: *rows = a->kv_lora_rank + a->qk_rope_dim; *cols = d; break;
	case ARCH_T_KV_A_NORM: *rows = a->kv_lora_rank; break;
	case ARCH_T_KV_B: *rows = H * (a->qk_nope_dim + a->v_head_dim); *cols = a->kv_lora_rank; break;
	case ARCH_T_MLP_GATE: case ARCH_T_MLP_UP: *rows = a->dense_inter; *cols = d; break;
	case ARCH_T_MLP_DOWN: *cols = a->dense_inter; break;
	case ARCH_T_SHARED_GATE: case ARCH_T_SHARED_UP: *rows = a->shared_inter; *cols = d; break;
	case ARCH_T_SHARED_DOWN: *cols = a->shared_inter; break;
	case ARCH_T_SHARED_EXPERT_GATE: *rows = 1; *cols = d; break;
	case ARCH_T_SINKS: *rows = H; break;
	default: break;   /* the norms and o_proj's bias: [d] */
	}
}

/* Weights of one decoder layer (every other role), as opposed to the embedding, final norm and head. */
static int per_layer(arch_tensor t)
{
	return t >= ARCH_T_IN_NORM;
}

ms_status fwd_check(const arch_model *a, const tok_set *tok, ms_error *err)
{
	for (int i = 0; i < tok->n_seq; i++) {
		const int64_t len = tok->seq_start[i + 1] - tok->seq_start[i];
		if (len > a->max_position)
			return ms_fail(err, MS_ERR_ARG, "sequence %d: %lld tokens, more than the model's "
				       "max_position_embeddings %d", i + 1, (long long)len, a->max_position);
	}
	for (int64_t t = 0; t < tok->T; t++)
		if (tok->ids[t] < 0 || tok->ids[t] >= a->vocab)
			return ms_fail(err, MS_ERR_ARG, "token %lld: id %d is outside the vocabulary (0..%d)", (long long)t,
				       tok->ids[t], a->vocab - 1);
	for (int t = 0; t < ARCH_T_COUNT; t++) {
		for (int L = 0; L < (per_layer((arch_tensor)t) ? a->n_layers : 1); L++) {
			if (!arch_has(a, (arch_tensor)t, L))
				continue;
			int64_t rows, cols;
			weight_shape(a, (arch_tensor)t, &rows, &cols);
			ms_status st = arch_check(a, (arch_tensor)t, L, rows, cols, err);
			if (st != MS_OK)
				return st;
		}
	}
	return MS_OK;
}

/* ---- state -------------------------------------------------------------------------------------------------- */

typedef struct {
	const arch_model *a;
	const tok_set *tok;
	const fwd_options *o;
	ms_error *err;
	int streams;                   /* 1, or 2 with a plan: [0] original, [1] merged */
	int64_t T;
	float *h[2];                   /* [T, d] residual streams */
	float *xn[2];                  /* [T, d] normed inputs of a sublayer */
	float *y;                      /* [T, d] a sublayer's output */
	float *q, *k, *v, *att;        /* [T, H * dqk], [T, Hkv * dqk], [T, Hkv * dv], [T, H * dv] */
	float *qa, *kva, *ckv, *kpe, *kvb;  /* MLA: [T, q_lora], [T, kv_lora + rope], [T, kv_lora], [T, rope],
					     * [T, H * (nope + dv)] */
	int32_t *pos;                  /* [T] position of each token in its sequence */
	int rope_dim;
	float *inv_freq;               /* [rope_dim / 2] */
	float rope_scaling;
	float *w[ARCH_T_COUNT];        /* the resident layer's weights (NULL where absent) */
} fwd_state;

static float *alloc_floats(int64_t n)
{
	return n > 0 && (uint64_t)n < SIZE_MAX / sizeof(float) ? malloc((size_t)n * sizeof(float)) : NULL;
}

static void free_weights(fwd_state *s)
{
	for (int t = 0; t < ARCH_T_COUNT; t++) {
		free(s->w[t]);
		s->w[t] = NULL;
	}
}

static void state_free(fwd_state *s)
{
	free_weights(s);
	for (int i = 0; i < 2; i++) {
		free(s->h[i]);
		free(s->xn[i]);
	}
	float *bufs[] = {s->y, s->q, s->k, s->v, s->att, s->qa, s->kva, s->ckv, s->kpe, s->kvb, s->inv_freq};
	for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
		free(bufs[i]);
	free(s->pos);
}

static ms_status state_alloc(fwd_state *s)
{
	const arch_model *a = s->a;
	const int64_t T = s->T, d = a->d, H = a->heads;
	const int mla = a->attn == ARCH_ATTN_MLA;
	const int64_t dqk = mla ? a->qk_nope_dim + a->qk_rope_dim : a->head_dim, dv = mla ? a->v_head_dim : a->head_dim;
	const int64_t hkv = mla ? H : a->kv_heads;
	int ok = 1;
	for (int i = 0; i < s->streams; i++) {
		s->h[i] = alloc_floats(T * d);
		s->xn[i] = alloc_floats(T * d);
		ok &= s->h[i] && s->xn[i];
	}
	s->y = alloc_floats(T * d);
	s->q = alloc_floats(T * H * dqk);
	s->k = alloc_floats(T * hkv * dqk);
	s->v = alloc_floats(T * hkv * dv);
	s->att = alloc_floats(T * H * dv);
	ok &= s->y && s->q && s->k && s->v && s->att;
	if (mla) {
		s->qa = a->q_lora_rank ? alloc_floats(T * a->q_lora_rank) : NULL;
		s->kva = alloc_floats(T * (a->kv_lora_rank + a->qk_rope_dim));
		s->ckv = alloc_floats(T * a->kv_lora_rank);
		s->kpe = alloc_floats(T * a->qk_rope_dim);
		s->kvb = alloc_floats(T * H * (a->qk_nope_dim + a->v_head_dim));
		ok &= (s->qa || !a->q_lora_rank) && s->kva && s->ckv && s->kpe && s->kvb;
	}
	s->rope_dim = mla ? a->qk_rope_dim : a->rotary_dim;
	s->inv_freq = alloc_floats(s->rope_dim / 2);
	s->pos = malloc((size_t)T * sizeof *s->pos);
	ok &= s->inv_freq && s->pos;
	if (!ok)
		return ms_fail(s->err, MS_ERR_NOMEM, "forward: out of memory for the activations of %lld tokens",
			       (long long)T);
	for (int i = 0; i < s->tok->n_seq; i++)
		for (int64_t t = s->tok->seq_start[i]; t < s->tok->seq_start[i + 1]; t++)
			s->pos[t] = (int32_t)(t - s->tok->seq_start[i]);
	const arch_rope *r = &a->rope;
	lyr_rope_params p = {.kind = (int)r->kind, .theta = r->theta, .factor = r->factor,
			     .original_max_position = r->original_max_position, .beta_fast = r->beta_fast,
			     .beta_slow = r->beta_slow, .mscale = r->mscale, .mscale_all_dim = r->mscale_all_dim,
			     .attention_factor = r->attention_factor, .truncate = r->truncate};
	lyr_rope_init(&p, s->rope_dim, s->inv_freq, &s->rope_scaling);
	return MS_OK;
}

/* Loads every weight layer L has (or, with L < 0, the final norm and the head's bias). */
static int shared_role(arch_tensor t)
{
	return t == ARCH_T_SHARED_GATE || t == ARCH_T_SHARED_UP || t == ARCH_T_SHARED_DOWN ||
	       t == ARCH_T_SHARED_EXPERT_GATE;
}

static ms_status load_weights(fwd_state *s, int L)
{
	for (int t = 0; t < ARCH_T_COUNT; t++) {
		const arch_tensor role = (arch_tensor)t;
		if (per_layer(role) != (L >= 0) || role == ARCH_T_EMBED || role == ARCH_T_LM_HEAD ||
		    !arch_has(s->a, role, L) || shared_role(role))
			continue;   /* the shared expert is loaded with its block (pipe_load_block) */
		int64_t rows, cols;
		weight_shape(s->a, role, &rows, &cols);
		s->w[t] = alloc_floats(rows * (cols ? cols : 1));
		if (!s->w[t])
			return ms_fail(s->err, MS_ERR_NOMEM, "forward: out of memory for the weights of layer %d", L);
		ms_status st = arch_read(s->a, role, L, rows, cols, s->w[t], s->err);
		if (st != MS_OK)
			return st;
		arch_release(s->a, role, L);
	}
	return MS_OK;
}

/* ---- sublayers ---------------------------------------------------------------------------------------------- */

static void norm(const fwd_state *s, const float *x, arch_tensor w, arch_tensor b, float *y)
{
	if (s->a->norm == ARCH_NORM_LAYER)
		lyr_layernorm(x, s->T, s->a->d, s->w[w], s->w[b], (float)s->a->norm_eps, y);
	else
		lyr_rmsnorm(x, s->T, s->a->d, s->w[w], (float)s->a->norm_eps, y);
}

static int layer_window(const fwd_state *s, int L)
{
	return s->a->window[L];
}

/* out [T, d] = grouped-query attention of layer L on xn [T, d]. */
static ms_status attention_gqa(fwd_state *s, int L, const float *xn, float *out)
{
	const arch_model *a = s->a;
	const int64_t T = s->T;
	const int d = a->d, H = a->heads, Hkv = a->kv_heads, hd = a->head_dim, qd = H * hd, kd = Hkv * hd;
	float **w = s->w;
	ms_status st = lyr_linear(xn, d, T, d, w[ARCH_T_Q], w[ARCH_T_Q_BIAS], qd, s->q, qd, s->err);
	if (st == MS_OK)
		st = lyr_linear(xn, d, T, d, w[ARCH_T_K], w[ARCH_T_K_BIAS], kd, s->k, kd, s->err);
	if (st == MS_OK)
		st = lyr_linear(xn, d, T, d, w[ARCH_T_V], w[ARCH_T_V_BIAS], kd, s->v, kd, s->err);
	if (st != MS_OK)
		return st;
	const float eps = (float)a->norm_eps;
	if (a->qk_norm == ARCH_QK_FULL) {   /* olmoe: over the whole projection */
		lyr_rmsnorm(s->q, T, qd, w[ARCH_T_Q_NORM], eps, s->q);
		lyr_rmsnorm(s->k, T, kd, w[ARCH_T_K_NORM], eps, s->k);
	} else if (a->qk_norm == ARCH_QK_HEAD) {   /* qwen3_moe: each head on its own */
		lyr_rmsnorm(s->q, T * H, hd, w[ARCH_T_Q_NORM], eps, s->q);
		lyr_rmsnorm(s->k, T * Hkv, hd, w[ARCH_T_K_NORM], eps, s->k);
	}
	if (a->clip_qkv > 0) {   /* olmoe clamps after the norms */
		lyr_clamp(s->q, T * qd, (float)a->clip_qkv);
		lyr_clamp(s->k, T * kd, (float)a->clip_qkv);
		lyr_clamp(s->v, T * kd, (float)a->clip_qkv);
	}
	lyr_rope_apply(s->q, T, H, hd, 0, s->rope_dim, s->pos, s->inv_freq, s->rope_scaling, a->rope.interleaved);
	lyr_rope_apply(s->k, T, Hkv, hd, 0, s->rope_dim, s->pos, s->inv_freq, s->rope_scaling, a->rope.interleaved);
	lyr_attn_shape sh = {.H = H, .Hkv = Hkv, .dqk = hd, .dv = hd, .ldq = qd, .ldk = kd, .ldv = kd,
			     .scale = (float)(1.0 / sqrt((double)hd)), .window = layer_window(s, L),
			     .sinks = w[ARCH_T_SINKS]};
	st = lyr_attention(&sh, s->q, s->k, s->v, s->tok->seq_start, s->tok->n_seq, s->att, s->err);
	if (st == MS_OK)
		st = lyr_linear(s->att, qd, T, qd, w[ARCH_T_O], w[ARCH_T_O_BIAS], d, out, d, s->err);
	return st;
}

/* DeepseekV2Attention's softmax scale in transformers: 1/sqrt(q head dim), with no yarn mscale^2 factor (DeepSeek's
 * own code and vLLM multiply by it; transformers' deepseek_v2 applies yarn's attention factor to cos and sin
 * only, and moescope follows transformers). DeepseekV3Attention does multiply by it: a->attn_scale. */
static float mla_scale(const arch_model *a)
{
	return (float)(a->attn_scale / sqrt((double)(a->qk_nope_dim + a->qk_rope_dim)));
}

/* transformers builds q_a_layernorm and kv_a_layernorm without passing rms_norm_eps: DeepseekV2RMSNorm's default. */
#define MLA_LORA_NORM_EPS 1e-6f

/* out [T, d] = multi-head latent attention (deepseek_v2) of layer L on xn [T, d]. */
static ms_status attention_mla(fwd_state *s, int L, const float *xn, float *out)
{
	(void)L;
	const arch_model *a = s->a;
	const int64_t T = s->T;
	const int d = a->d, H = a->heads, nope = a->qk_nope_dim, rope = a->qk_rope_dim, dv = a->v_head_dim;
	const int qk = nope + rope, qr = a->q_lora_rank, kvr = a->kv_lora_rank, kvb_w = H * (nope + dv);
	float **w = s->w;
	ms_status st;
	if (qr > 0) {
		st = lyr_linear(xn, d, T, d, w[ARCH_T_Q_A], w[ARCH_T_Q_A_BIAS], qr, s->qa, qr, s->err);
		if (st == MS_OK) {
			lyr_rmsnorm(s->qa, T, qr, w[ARCH_T_Q_A_NORM], MLA_LORA_NORM_EPS, s->qa);
			st = lyr_linear(s->qa, qr, T, qr, w[ARCH_T_Q_B], NULL, H * qk, s->q, H * qk, s->err);
		}
	} else {
		st = lyr_linear(xn, d, T, d, w[ARCH_T_Q], NULL, H * qk, s->q, H * qk, s->err);
	}
	if (st == MS_OK)
		st = lyr_linear(xn, d, T, d, w[ARCH_T_KV_A], w[ARCH_T_KV_A_BIAS], kvr + rope, s->kva, kvr + rope,
				s->err);
	if (st != MS_OK)
		return st;
	for (int64_t t = 0; t < T; t++) {   /* split the latent from the shared rotary key */
		lyr_rmsnorm(s->kva + t * (kvr + rope), 1, kvr, w[ARCH_T_KV_A_NORM], MLA_LORA_NORM_EPS, s->ckv + t * kvr);
		memcpy(s->kpe + t * rope, s->kva + t * (kvr + rope) + kvr, (size_t)rope * sizeof(float));
	}
	st = lyr_linear(s->ckv, kvr, T, kvr, w[ARCH_T_KV_B], NULL, kvb_w, s->kvb, kvb_w, s->err);
	if (st != MS_OK)
		return st;
	lyr_rope_apply(s->q, T, H, qk, nope, rope, s->pos, s->inv_freq, s->rope_scaling, a->rope.interleaved);
	lyr_rope_apply(s->kpe, T, 1, rope, 0, rope, s->pos, s->inv_freq, s->rope_scaling, a->rope.interleaved);
	for (int64_t t = 0; t < T; t++)   /* each head's key: its own non-rotary part, then the shared rotary one */
		for (int h = 0; h < H; h++) {
			const float *src = s->kvb + t * kvb_w + (int64_t)h * (nope + dv);
			memcpy(s->k + (t * H + h) * qk, src, (size_t)nope * sizeof(float));
			memcpy(s->k + (t * H + h) * qk + nope, s->kpe + t * rope, (size_t)rope * sizeof(float));
			memcpy(s->v + (t * H + h) * dv, src + nope, (size_t)dv * sizeof(float));
		}
	lyr_attn_shape sh = {.H = H, .Hkv = H, .dqk = qk, .dv = dv, .ldq = (int64_t)H * qk, .ldk = (int64_t)H * qk,
			     .ldv = (int64_t)H * dv, .scale = mla_scale(a), .window = 0};
	st = lyr_attention(&sh, s->q, s->k, s->v, s->tok->seq_start, s->tok->n_seq, s->att, s->err);
	if (st == MS_OK)
		st = lyr_linear(s->att, (int64_t)H * dv, T, H * dv, w[ARCH_T_O], w[ARCH_T_O_BIAS], d, out, d, s->err);
	return st;
}

static void add_into(float *h, const float *y, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		h[i] += y[i];
}

/* The MLP of a gate/up/down triple of width f stored in w[gate], w[up], w[down]. */
static expert_weights glu_weights(const fwd_state *s, arch_tensor gate, arch_tensor up, arch_tensor down, int f)
{
	expert_weights e = {.gate = s->w[gate], .up = s->w[up], .down = s->w[down], .d = s->a->d, .f = f,
			    .act = MDL_ACT_SILU_GLU};
	return e;
}

static void name_block(ms_error *err, const char *label)
{
	char where[48];
	snprintf(where, sizeof where, "block %s", label);
	ms_error_prefix(err, where);
}

/* The MoE block b of layer L on each stream's xn, added to its h. */
static ms_status moe_layer(fwd_state *s, int b)
{
	const arch_model *a = s->a;
	const int64_t T = s->T, n = T * a->d;
	pipe_block blk;
	ms_status st = pipe_load_block(a->m, NULL, b, &blk, s->err);
	if (st != MS_OK)
		return st;
	/* the block comes with the family's shared expert and routing (pipe_load_block), the merged one too */
	blk_config cfg = pipe_block_config(&blk);
	if (s->o->on_block)
		st = s->o->on_block(s->o->block_ctx, b, s->xn[0], T, s->err);
	if (st == MS_OK)
		st = blk_forward(&cfg, s->xn[0], T, s->y, NULL, NULL, s->err);
	if (st == MS_OK)
		add_into(s->h[0], s->y, n);
	if (st == MS_OK && s->streams > 1) {
		/* the merge sees the block as `moescope merge` does with a calibration set captured from these
		 * tokens: the original model's inputs to the block */
		pipe_merged mg;
		int32_t *seg = malloc((size_t)T * sizeof *seg);   /* [T] the sequence of each token, as capture writes */
		if (!seg)
			st = ms_fail(s->err, MS_ERR_NOMEM, "out of memory");
		for (int i = 0; seg && i < s->tok->n_seq; i++)
			for (int64_t t = s->tok->seq_start[i]; t < s->tok->seq_start[i + 1]; t++)
				seg[t] = i;
		if (st == MS_OK)
			st = pipe_set_tokens(&blk, s->xn[0], T, seg, s->err);
		free(seg);
		if (st == MS_OK && s->o->on_merged_block)
			st = s->o->on_merged_block(s->o->block_ctx, b, &blk, &cfg, s->xn[1], s->h[1], T, s->err);
		/* the original stream is done with the block: merge in its own storage (the same bits as the merge
		 * beside it, pipeline/pipeline.h), so a layer costs one block's memory */
		if (st == MS_OK)
			st = pipe_merge_block_in_place(&blk, s->o->plan, b, s->o->merge, &mg, s->err);
		blk.x = NULL;
		blk.T = 0;
		if (st == MS_OK) {
			st = blk_forward(&mg.cfg, s->xn[1], T, s->y, NULL, NULL, s->err);
			pipe_free_merged(&mg);
		}
		if (st == MS_OK)
			add_into(s->h[1], s->y, n);
	}
	if (st != MS_OK)
		name_block(s->err, a->m->blocks[b].label);
	pipe_free_block(&blk);
	return st;
}

static ms_status run_layer(fwd_state *s, int L)
{
	const arch_model *a = s->a;
	const int64_t n = s->T * a->d;
	ms_status st = load_weights(s, L);
	for (int i = 0; st == MS_OK && i < s->streams; i++) {
		norm(s, s->h[i], ARCH_T_IN_NORM, ARCH_T_IN_NORM_BIAS, s->xn[i]);
		st = a->attn == ARCH_ATTN_MLA ? attention_mla(s, L, s->xn[i], s->y) : attention_gqa(s, L, s->xn[i], s->y);
		if (st == MS_OK) {
			add_into(s->h[i], s->y, n);
			norm(s, s->h[i], ARCH_T_POST_NORM, ARCH_T_POST_NORM_BIAS, s->xn[i]);
		}
	}
	const int b = a->block_of_layer[L];
	if (st == MS_OK && b >= 0) {
		st = moe_layer(s, b);
	} else if (st == MS_OK) {
		const expert_weights mlp = glu_weights(s, ARCH_T_MLP_GATE, ARCH_T_MLP_UP, ARCH_T_MLP_DOWN, a->dense_inter);
		for (int i = 0; st == MS_OK && i < s->streams; i++) {
			st = lyr_mlp(&mlp, s->xn[i], s->T, s->y, s->err);
			if (st == MS_OK)
				add_into(s->h[i], s->y, n);
		}
	}
	free_weights(s);
	return st;
}

static ms_status embed(fwd_state *s)
{
	const int d = s->a->d;
	for (int64_t t = 0; t < s->T; t++) {
		ms_status st = arch_read_rows(s->a, ARCH_T_EMBED, s->tok->ids[t], 1, s->h[0] + t * d, s->err);
		if (st != MS_OK)
			return st;
	}
	if (s->streams > 1)
		memcpy(s->h[1], s->h[0], (size_t)(s->T * d) * sizeof(float));
	return MS_OK;
}

/* ---- the head ----------------------------------------------------------------------------------------------- */

/* A token's running log-sum-exp over the vocabulary chunks seen so far, for one stream. */
typedef struct {
	double max, sum;        /* sum = sum over seen logits of exp(z - max) */
	double target;          /* the next token's logit */
	float best;             /* the largest logit and its token (the lowest on ties) */
	int64_t arg;
} token_acc;

typedef struct {
	fwd_state *s;
	const float *xf[2];     /* [T, d] after the final norm */
	const float *wv;        /* [vc, d] this chunk's head rows */
	const float *bias;      /* [vocab] or NULL */
	int64_t v0;
	int vc;
	const int64_t *target;  /* [T] next token or -1 */
	const int64_t *row_of;  /* [T] index into o->logits or -1 */
	token_acc *acc[2];      /* [T] */
	double *kl_acc;         /* [T] sum over seen logits of exp(z - max) (z - z') of the original's z */
} head_job;

/* Adds a chunk row z [vc] to a token's accumulator; returns exp(old max - new max), by which earlier sums shrink. */
static double acc_update(token_acc *a, const float *z, int vc, int64_t v0, int64_t target)
{
	float mx = z[0];
	int64_t arg = 0;
	for (int j = 1; j < vc; j++)
		if (z[j] > mx) {
			mx = z[j];
			arg = j;
		}
	if (a->arg < 0 || mx > a->best) {
		a->best = mx;
		a->arg = v0 + arg;
	}
	const double m = a->max > mx ? a->max : mx;
	const double shrink = exp(a->max - m);   /* 0 on the first chunk, where max is -inf */
	double sum = 0.0;
	for (int j = 0; j < vc; j++)
		sum += exp((double)z[j] - m);
	a->sum = a->sum * shrink + sum;
	a->max = m;
	if (target >= v0 && target < v0 + vc)
		a->target = z[target - v0];
	return shrink;
}

static ms_status head_task(void *ctx, int64_t task, ms_error *err)
{
	const head_job *j = ctx;
	const fwd_state *s = j->s;
	const int64_t t0 = task * HEAD_TOKENS, n = s->T - t0 < HEAD_TOKENS ? s->T - t0 : HEAD_TOKENS;
	const int d = s->a->d, vc = j->vc;
	float *z = alloc_floats(2 * n * vc);   /* [2, n, vc] logits of each stream */
	if (!z)
		return ms_fail(err, MS_ERR_NOMEM, "head: out of memory");
	for (int i = 0; i < s->streams; i++) {
		float *zi = z + i * n * vc;
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, vc, d, 1.0f, j->xf[i] + t0 * d, d, j->wv, d,
			    0.0f, zi, vc);
		if (j->bias)
			for (int64_t r = 0; r < n; r++)
				for (int c = 0; c < vc; c++)
					zi[r * vc + c] += j->bias[j->v0 + c];
	}
	for (int64_t r = 0; r < n; r++) {
		const int64_t t = t0 + r;
		const float *zo = z + r * vc;
		const double shrink = acc_update(&j->acc[0][t], zo, vc, j->v0, j->target[t]);
		if (j->row_of[t] >= 0)
			memcpy(s->o->logits + j->row_of[t] * s->a->vocab + j->v0, zo, (size_t)vc * sizeof(float));
		if (s->streams < 2)
			continue;
		const float *zm = z + n * vc + r * vc;
		acc_update(&j->acc[1][t], zm, vc, j->v0, j->target[t]);
		double kl = 0.0;
		const double m = j->acc[0][t].max;
		for (int c = 0; c < vc; c++)
			kl += exp((double)zo[c] - m) * ((double)zo[c] - (double)zm[c]);
		j->kl_acc[t] = j->kl_acc[t] * shrink + kl;
	}
	free(z);
	return MS_OK;
}


static ms_status head_chunk(head_job *j, int64_t v0, int vc, float *wv)
{
	fwd_state *s = j->s;
	const arch_tensor t = s->a->tied ? ARCH_T_EMBED : ARCH_T_LM_HEAD;
	ms_status st = arch_read_rows(s->a, t, v0, vc, wv, s->err);
	if (st != MS_OK)
		return st;
	j->wv = wv;
	j->v0 = v0;
	j->vc = vc;
	return par_for((s->T + HEAD_TOKENS - 1) / HEAD_TOKENS, head_task, j, s->err);
}

static double percentile(const double *sorted, int64_t n, double p)
{
	int64_t i = (int64_t)ceil(p * (double)n) - 1;
	return sorted[i < 0 ? 0 : i >= n ? n - 1 : i];
}

static int cmp_double(const void *a, const void *b)
{
	const double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Per-token results and their summaries from the accumulators. */
static ms_status head_results(const head_job *j, fwd_result *out, ms_error *err)
{
	const fwd_state *s = j->s;
	const int two = s->streams > 1;
	double sum = 0.0, sum_m = 0.0, sum_kl = 0.0, agree = 0.0;
	int64_t n = 0;
	double *kls = two ? malloc((size_t)s->T * sizeof *kls) : NULL;
	if (two && !kls)
		return ms_fail(err, MS_ERR_NOMEM, "head: out of memory");
	for (int64_t t = 0; t < s->T; t++) {
		const token_acc *ao = &j->acc[0][t];
		const double lse = ao->max + log(ao->sum);
		out->nll[t] = j->target[t] >= 0 ? lse - ao->target : NAN;
		if (!two) {
			if (j->target[t] >= 0) {
				sum += out->nll[t];
				n++;
			}
			continue;
		}
		const token_acc *am = &j->acc[1][t];
		const double lse_m = am->max + log(am->sum);
		/* KL(p || q) = E_p[z - z'] - lse + lse'; rounding can leave a tiny negative where it is 0 */
		const double kl = j->kl_acc[t] / ao->sum - lse + lse_m;
		out->nll_merged[t] = j->target[t] >= 0 ? lse_m - am->target : NAN;
		out->kl[t] = j->target[t] >= 0 ? (kl > 0 ? kl : 0.0) : NAN;
		out->top1_same[t] = ao->arg == am->arg;
		if (j->target[t] < 0)
			continue;
		sum += out->nll[t];
		sum_m += out->nll_merged[t];
		sum_kl += out->kl[t];
		agree += out->top1_same[t];
		kls[n++] = out->kl[t];
	}
	out->predicted = n;
	if (n == 0) {
		free(kls);
		return ms_fail(err, MS_ERR_ARG, "no token has a next token in its sequence: nothing to predict");
	}
	out->mean_nll = sum / (double)n;
	out->ppl = exp(out->mean_nll);
	if (two) {
		out->mean_nll_merged = sum_m / (double)n;
		out->ppl_merged = exp(out->mean_nll_merged);
		out->kl_mean = sum_kl / (double)n;
		out->top1_agreement = agree / (double)n;
		qsort(kls, (size_t)n, sizeof *kls, cmp_double);
		out->kl_p50 = percentile(kls, n, 0.50);
		out->kl_p90 = percentile(kls, n, 0.90);
		out->kl_p99 = percentile(kls, n, 0.99);
	}
	free(kls);
	return MS_OK;
}

static ms_status run_head(fwd_state *s, fwd_result *out)
{
	const arch_model *a = s->a;
	const int64_t T = s->T;
	ms_status st = load_weights(s, -1);
	for (int i = 0; st == MS_OK && i < s->streams; i++)   /* the final norm, in place */
		norm(s, s->h[i], ARCH_T_FINAL_NORM, ARCH_T_FINAL_NORM_BIAS, s->h[i]);
	head_job j = {.s = s, .xf = {s->h[0], s->h[1]}, .bias = s->w[ARCH_T_LM_HEAD_BIAS]};
	int64_t *target = malloc((size_t)T * sizeof *target), *row_of = malloc((size_t)T * sizeof *row_of);
	j.acc[0] = calloc((size_t)T, sizeof(token_acc));
	j.acc[1] = s->streams > 1 ? calloc((size_t)T, sizeof(token_acc)) : NULL;
	j.kl_acc = s->streams > 1 ? calloc((size_t)T, sizeof(double)) : NULL;
	const int vc_max = a->vocab < VOCAB_CHUNK ? a->vocab : VOCAB_CHUNK;
	float *wv = alloc_floats((int64_t)vc_max * a->d);   /* [vc, d] */
	if (st == MS_OK && (!target || !row_of || !j.acc[0] || !wv || (s->streams > 1 && (!j.acc[1] || !j.kl_acc))))
		st = ms_fail(s->err, MS_ERR_NOMEM, "head: out of memory for %lld tokens", (long long)T);
	if (st == MS_OK) {
		j.target = target;
		j.row_of = row_of;
		for (int64_t t = 0; t < T; t++) {
			target[t] = -1;
			row_of[t] = -1;
			for (int i = 0; i < s->streams; i++)
				j.acc[i][t] = (token_acc){.max = -INFINITY, .arg = -1};
		}
		for (int i = 0; i < s->tok->n_seq; i++)
			for (int64_t t = s->tok->seq_start[i]; t + 1 < s->tok->seq_start[i + 1]; t++)
				target[t] = s->tok->ids[t + 1];
		for (int r = 0; r < s->o->n_logit_rows; r++)
			if (s->o->logit_rows[r] >= 0 && s->o->logit_rows[r] < T)
				row_of[s->o->logit_rows[r]] = r;
	}
	for (int64_t v0 = 0; st == MS_OK && v0 < a->vocab; v0 += VOCAB_CHUNK)
		st = head_chunk(&j, v0, (int)(a->vocab - v0 < VOCAB_CHUNK ? a->vocab - v0 : VOCAB_CHUNK), wv);
	if (st == MS_OK && out)
		st = head_results(&j, out, s->err);
	free(wv);
	free(target);
	free(row_of);
	free(j.acc[0]);
	free(j.acc[1]);
	free(j.kl_acc);
	free_weights(s);
	return st;
}

static ms_status result_alloc(fwd_result *r, int64_t T, int two, ms_error *err)
{
	memset(r, 0, sizeof *r);
	r->T = T;
	r->nll = malloc((size_t)T * sizeof *r->nll);
	if (two) {
		r->nll_merged = malloc((size_t)T * sizeof *r->nll_merged);
		r->kl = malloc((size_t)T * sizeof *r->kl);
		r->top1_same = malloc((size_t)T);
	}
	if (!r->nll || (two && (!r->nll_merged || !r->kl || !r->top1_same))) {
		fwd_result_free(r);
		return ms_fail(err, MS_ERR_NOMEM, "forward: out of memory for the results");
	}
	return MS_OK;
}

ms_status fwd_read_text(const char *model_dir, const char *text_path, int vocab, int seq_len, int64_t max_tokens,
			tok_set *out, ms_error *err)
{
	memset(out, 0, sizeof *out);
	char *text = NULL;
	size_t len = 0;
	tok_tokenizer *t = NULL;
	int32_t *ids = NULL;
	size_t n = 0;
	ms_status st = file_read_all(text_path, &text, &len, err);
	if (st == MS_OK)
		st = tok_open(model_dir, &t, err);
	if (st == MS_OK) {
		st = tok_encode(t, text, len, 1, &ids, &n, err);
		if (st != MS_OK)
			ms_error_prefix(err, text_path);
	}
	if (st == MS_OK)
		st = tokset_from_ids(text_path, ids, (int64_t)n, vocab, seq_len, max_tokens, out, err);
	free(ids);
	tok_free(t);
	free(text);
	return st;
}

ms_status fwd_read_input(const arch_model *a, const char *text_path, const char *tokens_path, int seq_len,
			 int64_t max_tokens, tok_set *out, ms_error *err)
{
	memset(out, 0, sizeof *out);
	const int max = a->max_position;
	if (seq_len <= 0)
		seq_len = FWD_DEFAULT_SEQ_LEN < max ? FWD_DEFAULT_SEQ_LEN : max;
	if (seq_len > max)
		return ms_fail(err, MS_ERR_ARG, "%s/config.json: --seq-len %d is longer than the model allows "
			       "(max_position_embeddings %d)", a->m->dir, seq_len, max);
	return text_path ? fwd_read_text(a->m->dir, text_path, a->vocab, seq_len, max_tokens, out, err)
			 : tokset_read_ids(tokens_path, a->vocab, seq_len, max_tokens, out, err);
}

void fwd_result_free(fwd_result *r)
{
	if (!r)
		return;
	free(r->nll);
	free(r->nll_merged);
	free(r->kl);
	free(r->top1_same);
	memset(r, 0, sizeof *r);
}

/* MS_ERR_INTERRUPTED when the caller asked the pass to stop; L is the layer about to run (n_layers: the head). */
static ms_status cancelled(const fwd_options *o, int L, ms_error *err)
{
	if (!o->cancel || !atomic_load(o->cancel))
		return MS_OK;
	return ms_fail(err, MS_ERR_INTERRUPTED, "forward: cancelled before layer %d", L);
}

ms_status fwd_run(const arch_model *a, const tok_set *tok, const fwd_options *o, fwd_result *out, ms_error *err)
{
	if (!a || !tok || !o || tok->T <= 0 || (o->plan && !o->merge) || (o->head && !out))
		return ms_fail(err, MS_ERR_ARG, "forward: no model, no tokens or no options");
	ms_status st = fwd_check(a, tok, err);
	if (st != MS_OK)
		return st;
	fwd_state s = {.a = a, .tok = tok, .o = o, .err = err, .streams = o->plan ? 2 : 1, .T = tok->T};
	if (o->head)
		st = result_alloc(out, tok->T, o->plan != NULL, err);
	if (st == MS_OK)
		st = state_alloc(&s);
	if (st == MS_OK)
		st = embed(&s);
	for (int L = 0; st == MS_OK && L < a->n_layers; L++) {
		if (o->progress)
			o->progress(o->progress_ctx, L, a->n_layers);
		st = cancelled(o, L, err);
		if (st == MS_OK)
			st = run_layer(&s, L);
	}
	if (st == MS_OK && o->head)
		st = cancelled(o, a->n_layers, err);
	if (st == MS_OK && o->head)
		st = run_head(&s, out);
	if (o->progress && st == MS_OK)
		o->progress(o->progress_ctx, a->n_layers, a->n_layers);
	state_free(&s);
	if (st != MS_OK && o->head)
		fwd_result_free(out);
	return st;
}
