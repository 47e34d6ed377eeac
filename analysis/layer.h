/* The per-layer arithmetic of a decoder forward pass, outside the MoE block (analysis/block.h): norms, linear
 * maps, rotary positions, causal attention over sequences, the dense gated MLP. Pure computation on float32
 * buffers the caller owns; every parallel loop cuts its work into tasks fixed by the problem's sizes (a chunk of
 * tokens, a head and a chunk of queries), so results do not depend on the thread count (analysis/par.h). */
#ifndef LYR_LAYER_H
#define LYR_LAYER_H

#include <stdint.h>

#include "analysis/expert.h"
#include "io/error.h"

/* Tokens per task of the token-parallel loops: a fixed size, so that each row's GEMM and the bits it gives depend
 * on the token count alone. */
#define LYR_TOKEN_CHUNK 256

/* y [T, d] = RMSNorm(x) * w (w [d]); y may be x. */
void lyr_rmsnorm(const float *x, int64_t T, int d, const float *w, float eps, float *y);
/* y [T, d] = LayerNorm(x) * w + b (biased variance, as torch); y may be x. */
void lyr_layernorm(const float *x, int64_t T, int d, const float *w, const float *b, float eps, float *y);
/* Every element of x [n] clamped to [-c, c]. */
void lyr_clamp(float *x, int64_t n, float c);

/* y [T, out] = x [T, in] W^T + b, W [out, in], b [out] or NULL. Rows of x are ldx apart, rows of y ldy apart
 * (ldx >= in, ldy >= out), so a slice of a wider buffer can be read or written. */
ms_status lyr_linear(const float *x, int64_t ldx, int64_t T, int in, const float *W, const float *b, int out,
		     float *y, int64_t ldy, ms_error *err);

/* Rotary position embedding tables for `dim` rotated dimensions: inv_freq [dim / 2] and the factor cos and sin
 * are scaled by (transformers' attention_scaling: 1 but for yarn). */
typedef struct {
	int kind;                        /* 0 default, 1 linear, 2 yarn */
	double theta, factor;
	double original_max_position, beta_fast, beta_slow, mscale, mscale_all_dim, attention_factor;
	int truncate;
} lyr_rope_params;

void lyr_rope_init(const lyr_rope_params *p, int dim, float *inv_freq, float *attention_scaling);

/* Rotates, for every token t and each of n_heads heads, the dim dimensions starting at column `offset` of the
 * head: x [T, n_heads * head_stride]; pos [T] the token's position in its sequence. interleaved: pairs (2i, 2i+1)
 * rotate together (DeepSeek's complex form); else (i, i + dim / 2) (Llama's rotate_half). */
void lyr_rope_apply(float *x, int64_t T, int n_heads, int head_stride, int offset, int dim, const int32_t *pos,
		    const float *inv_freq, float scaling, int interleaved);

/* Causal attention of H query heads over Hkv key/value heads (H a multiple of Hkv; head h reads kv head
 * h / (H / Hkv)). q [T, H * dqk], k [T, Hkv * dqk], v [T, Hkv * dv] (rows ldq, ldk, ldv floats apart), out
 * [T, H * dv]. Sequences are seq_start [n_seq + 1] token ranges; a token attends to the tokens of its sequence at
 * or before it, and within `window` positions of it when window > 0 (i - j < window). Scores are scaled by
 * `scale`; softmax in float32 with its running maximum, sums in double; with sinks, head h's sink logit takes
 * part in the maximum and the sum (GptOssAttention's eager_attention_forward). */
typedef struct {
	int H, Hkv, dqk, dv;
	int64_t ldq, ldk, ldv;
	float scale;
	int window;
	const float *sinks;   /* [H] or NULL: gpt-oss's attention sinks, one logit per head that joins every softmax's
			       * denominator (and its maximum) without a value: probabilities sum to less than 1 */
} lyr_attn_shape;

ms_status lyr_attention(const lyr_attn_shape *s, const float *q, const float *k, const float *v,
			const int64_t *seq_start, int n_seq, float *out, ms_error *err);

/* y [T, d] = a gated MLP (w: gate, up, down; analysis/expert.h) on x [T, d], LYR_TOKEN_CHUNK tokens a task. */
ms_status lyr_mlp(const expert_weights *w, const float *x, int64_t T, float *y, ms_error *err);

#endif
