/* The model forward pass on the CPU, streaming layer by layer: every token passes through layer L before layer
 * L + 1 is loaded, so one layer's weights are resident at a time (as float32), plus one vocabulary chunk of the
 * head at the end. Each weight of the checkpoint is read once whatever the number of tokens (the embedding only
 * at the rows of the tokens present). Activations are [T, d] float32 per stream.
 *
 * With a plan, a second stream runs the merged model beside the original in the same pass: each MoE block is
 * merged in memory by pipe_merge_block exactly as `moescope merge` writes it, its router fitted on the block's
 * inputs in the original model (what a calibration file captured from the same tokens holds). */
#ifndef FWD_FORWARD_H
#define FWD_FORWARD_H

#include <stdatomic.h>
#include <stdint.h>

#include "pipeline/pipeline.h"
#include "io/arch.h"
#include "io/error.h"
#include "io/plan.h"
#include "io/tokens.h"

/* Called with the input of every MoE block of the original model (its router's input), x [T, d], block order. */
typedef ms_status (*fwd_block_fn)(void *ctx, int b, const float *x, int64_t T, ms_error *err);
typedef void (*fwd_progress_fn)(void *ctx, int layer, int n_layers);
/* With a plan, called at every MoE block b between the original stream's block and the merged stream's: blk is
 * the original block with its tokens set to the original model's block inputs (as the merge will see them), orig
 * its configuration with the family's additions (shared expert, sparsemixer), xm [T, d] the merged stream's input
 * to the block and hm [T, d] the merged stream's residual entering the MoE sublayer. The merged block is built from
 * the plan only after this returns, so a caller that owns the plan may still fill in block b's rows of it here. */
typedef ms_status (*fwd_merged_block_fn)(void *ctx, int b, const pipe_block *blk, const blk_config *orig,
					 const float *xm, const float *hm, int64_t T, ms_error *err);

typedef struct {
	fwd_block_fn on_block;
	void *block_ctx;
	fwd_merged_block_fn on_merged_block;  /* with a plan; called with block_ctx */
	const plan *plan;                    /* NULL: the original model only */
	const pipe_merge_options *merge;     /* with plan */
	int head;                            /* run the final norm and the head: NLL, with a plan KL and top-1 */
	int n_logit_rows;                    /* tokens whose logits of the original are kept: */
	const int64_t *logit_rows;           /* [n_logit_rows] token indices */
	float *logits;                       /* [n_logit_rows, vocab] */
	fwd_progress_fn progress;
	void *progress_ctx;
	const atomic_int *cancel;            /* NULL, or set by another thread to stop the pass: looked at before
					      * each layer and before the head, after the progress call; the pass
					      * then returns MS_ERR_INTERRUPTED */
} fwd_options;

typedef struct {
	int64_t T;
	int64_t predicted;         /* tokens with a next token in their sequence */
	double *nll;               /* [T] -log p(next token) under the original, NAN where there is no next token */
	double *nll_merged;        /* [T] under the merged model (with a plan) */
	double *kl;                /* [T] KL(original || merged) of the next-token distributions (with a plan) */
	unsigned char *top1_same;  /* [T] 1 where both models rank the same token first (with a plan) */
	double mean_nll, ppl;
	double mean_nll_merged, ppl_merged;
	double kl_mean, kl_p50, kl_p90, kl_p99;   /* nearest-rank percentiles over the predicted tokens */
	double top1_agreement;
} fwd_result;

/* A text file through the model's tokenizer (model_dir/tokenizer.json, text/tokenizer.h) with its special tokens,
 * as add_special_tokens=True gives them, split into sequences of seq_len tokens: the tokens `capture --text`,
 * `perplexity --text` and the application's --text use. Messages name the text or tokenizer file. */
ms_status fwd_read_text(const char *model_dir, const char *text_path, int vocab, int seq_len, int64_t max_tokens,
			tok_set *out, ms_error *err);

/* Tokens per sequence when none is asked for (capture, perplexity and the application alike). */
#define FWD_DEFAULT_SEQ_LEN 2048

/* The tokens of a forward: text_path through the model's tokenizer (fwd_read_text) when given, else the token
 * ids of tokens_path (io/tokens.h), in sequences of seq_len tokens (FWD_DEFAULT_SEQ_LEN capped by the model's
 * max_position_embeddings when seq_len <= 0; a longer seq_len than the model allows is refused). */
ms_status fwd_read_input(const arch_model *a, const char *text_path, const char *tokens_path, int seq_len,
			 int64_t max_tokens, tok_set *out, ms_error *err);

/* Checks the tokens against the model (ids in the vocabulary, sequences within max_position_embeddings) and
 * that every weight the forward needs exists with its shape, before any work: messages name the tensor or the
 * token. */
ms_status fwd_check(const arch_model *a, const tok_set *tok, ms_error *err);

/* Runs the forward pass. out may be NULL when o->head is 0. */
ms_status fwd_run(const arch_model *a, const tok_set *tok, const fwd_options *o, fwd_result *out, ms_error *err);
void fwd_result_free(fwd_result *r);

#endif
