/* Text to token ids and back, as Hugging Face `tokenizers` does it for a model's tokenizer.json.
 *
 * Supported: the BPE model (byte-level, as Qwen, OLMoE, DeepSeek and gpt-oss use it, and SentencePiece-style
 * with byte fallback, as Llama 2, Mistral and Mixtral use it), the normalizers NFC, NFD, NFKC, NFKD, Lowercase,
 * Replace, Prepend, Strip and Sequence, the pre-tokenizers Split, ByteLevel, Metaspace, Digits and Sequence,
 * added tokens, the post-processors TemplateProcessing, ByteLevel, RobertaProcessing, BertProcessing and
 * Sequence, and the decoders ByteLevel, Metaspace, ByteFallback, Fuse, Strip, Replace and Sequence. A file that
 * uses anything else is refused with one line naming the component and where it is.
 *
 * Regexes run as written with PCRE2 (UTF and Unicode properties); normalisation forms come from utf8proc.
 * Input text that is not valid UTF-8 is read as Python's bytes.decode('utf-8', 'replace') reads it: every
 * maximal ill-formed subsequence becomes U+FFFD.
 *
 * Nothing here prints or exits. A tokenizer is used by one thread at a time (encode keeps a word cache). */
#ifndef TEXT_TOKENIZER_H
#define TEXT_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "io/error.h"

typedef struct tok_tokenizer tok_tokenizer;

/* path is a tokenizer.json file or a directory holding one. Messages name the file and the place
 * ("tokenizer.json: model.merges[12]: ..."). */
ms_status tok_open(const char *path, tok_tokenizer **out, ms_error *err);

/* The same from text already in memory; name is what messages call the file. */
ms_status tok_load(const char *json, size_t len, const char *name, tok_tokenizer **out, ms_error *err);

void tok_free(tok_tokenizer *t);

/* Encodes text[0..len) into *ids (malloc'd, *n_ids of them; the caller frees). add_special adds the
 * post-processor's special tokens, as add_special_tokens=True does. */
ms_status tok_encode(tok_tokenizer *t, const char *text, size_t len, int add_special, int32_t **ids, size_t *n_ids,
                     ms_error *err);

/* Decodes ids into *text (malloc'd, NUL-terminated, *len bytes before the NUL; the caller frees).
 * skip_special drops the special added tokens. An id outside the vocabulary is MS_ERR_TOK_ID. */
ms_status tok_decode(const tok_tokenizer *t, const int32_t *ids, size_t n_ids, int skip_special, char **text,
                     size_t *len, ms_error *err);

/* The number of ids (one past the largest id of the model's vocabulary and the added tokens). */
int32_t tok_vocab_size(const tok_tokenizer *t);

/* The token text of an id (NULL when there is none), and the id of a token text (-1 when absent). */
const char *tok_id_to_token(const tok_tokenizer *t, int32_t id);
int32_t tok_token_to_id(const tok_tokenizer *t, const char *token);

#endif
