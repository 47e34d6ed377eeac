/* The tokenizer's parts, shared by the files of text/ and by nothing else. */
#ifndef TEXT_TOK_INTERNAL_H
#define TEXT_TOK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "io/error.h"
#include "text/tokenizer.h"

/* ---- growable byte strings ---- */

typedef struct {
	char *s;
	size_t n, cap;
} tk_buf;

int tk_buf_reserve(tk_buf *b, size_t extra); /* 0, or -1 out of memory */
int tk_buf_add(tk_buf *b, const void *p, size_t n);
int tk_buf_addc(tk_buf *b, char c);
void tk_buf_free(tk_buf *b);

/* ---- UTF-8 ---- */

/* Length of the valid UTF-8 sequence starting at s[0] (s has n > 0 bytes), or 0 when it is ill-formed. */
size_t tk_utf8_len(const unsigned char *s, size_t n);
/* Decodes one valid character (its length from tk_utf8_len). */
int32_t tk_utf8_decode(const unsigned char *s, size_t len);
size_t tk_utf8_encode(int32_t c, char out[4]);
/* Copies s into out with every maximal ill-formed subsequence replaced by U+FFFD (Python's 'replace'). */
int tk_utf8_clean(const char *s, size_t n, tk_buf *out);
/* Unicode White_Space */
int tk_is_space(int32_t c);

/* ---- hash maps ---- */

/* bytes -> int32; keys are copied */
typedef struct {
	struct tk_skey {
		char *key;
		uint32_t len;
		int32_t val;
	} *slot; /* [cap] */
	size_t cap, count;
} tk_strmap;

uint64_t tk_hash(const void *p, size_t n);
int tk_strmap_put(tk_strmap *m, const char *key, size_t len, int32_t val); /* 0 new, 1 existed (kept), -1 nomem */
int32_t tk_strmap_get(const tk_strmap *m, const char *key, size_t len);    /* -1 when absent */
void tk_strmap_free(tk_strmap *m);

/* (left id, right id) -> (rank, merged id) */
typedef struct {
	struct tk_pslot {
		uint64_t key; /* left << 32 | right, UINT64_MAX when empty */
		int32_t rank, id;
	} *slot;
	size_t cap, count;
} tk_pairmap;

int tk_pairmap_put(tk_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t id); /* 0 new, 1 replaced, -1 */
const struct tk_pslot *tk_pairmap_get(const tk_pairmap *m, int32_t a, int32_t b);
void tk_pairmap_free(tk_pairmap *m);

/* ---- patterns: a literal string or a PCRE2 regex ---- */

typedef struct {
	char *lit; /* literal (NULL for a regex) */
	size_t lit_len;
	pcre2_code *re;
} tk_pattern;

/* The first match in s[from..n): 1 and [*ms, *me), 0 for none, -1 for a PCRE2 failure (message in err). */
int tk_pattern_find(const tk_pattern *p, const char *s, size_t n, size_t from, size_t *ms, size_t *me,
                    pcre2_match_data *md, pcre2_match_context *mc, ms_error *err);
void tk_pattern_free(tk_pattern *p);

/* ---- normalizers ---- */

typedef enum { NZ_NFC, NZ_NFD, NZ_NFKC, NZ_NFKD, NZ_LOWERCASE, NZ_REPLACE, NZ_PREPEND, NZ_STRIP, NZ_SEQUENCE } tk_nz_kind;

typedef struct tk_normalizer {
	tk_nz_kind kind;
	tk_pattern pattern; /* Replace */
	char *content;      /* Replace: the replacement; Prepend: the prefix */
	int left, right;    /* Strip */
	struct tk_normalizer *items; /* Sequence: [n_items] */
	int n_items;
} tk_normalizer;

/* ---- pre-tokenizers ---- */

typedef enum { PT_SPLIT, PT_BYTELEVEL, PT_METASPACE, PT_DIGITS, PT_SEQUENCE } tk_pt_kind;
typedef enum { SB_REMOVED, SB_ISOLATED, SB_MERGED_PREV, SB_MERGED_NEXT, SB_CONTIGUOUS } tk_split_behavior;
typedef enum { PS_ALWAYS, PS_FIRST, PS_NEVER } tk_prepend_scheme;

typedef struct tk_pretok {
	tk_pt_kind kind;
	tk_pattern pattern; /* Split; ByteLevel with use_regex (GPT-2's); Digits */
	tk_split_behavior behavior;
	int invert;
	int add_prefix_space, use_regex; /* ByteLevel */
	char replacement[8];             /* Metaspace (UTF-8, NUL-terminated) */
	tk_prepend_scheme prepend_scheme;
	int split;
	struct tk_pretok *items; /* Sequence: [n_items] */
	int n_items;
} tk_pretok;

/* Pieces of text: each a range of text, with whether it begins at the start of the whole input (Metaspace's
 * "first" scheme prepends only there). */
typedef struct {
	tk_buf text;
	struct tk_piece {
		size_t off, len;
		int at_start;
	} *p; /* [n] */
	size_t n, cap;
} tk_pieces;

int tk_pieces_add(tk_pieces *ps, const char *s, size_t len, int at_start);
void tk_pieces_clear(tk_pieces *ps);
void tk_pieces_free(tk_pieces *ps);

/* ---- decoders ---- */

typedef enum { DC_BYTELEVEL, DC_METASPACE, DC_BYTEFALLBACK, DC_FUSE, DC_STRIP, DC_REPLACE, DC_SEQUENCE } tk_dc_kind;

typedef struct tk_decoder {
	tk_dc_kind kind;
	char replacement[8]; /* Metaspace */
	int prepend;         /* Metaspace: prepend_scheme is not "never" */
	tk_pattern pattern;  /* Replace */
	char *content;       /* Replace: the replacement; Strip: the character */
	int start, stop;     /* Strip */
	struct tk_decoder *items;
	int n_items;
} tk_decoder;

/* ---- the BPE model ---- */

typedef struct {
	tk_strmap vocab;   /* token -> id, the model's vocabulary */
	tk_pairmap merges; /* by id pair */
	int32_t unk_id;    /* -1 without unk_token */
	int fuse_unk, byte_fallback, ignore_merges;
	int32_t byte_id[256]; /* "<0xNN>" ids for byte fallback, -1 where absent */
	int byte_level;       /* ByteLevel pre-tokenizer present: every piece is in GPT-2's alphabet already */
	/* word cache: piece -> ids, cleared when it grows past a bound */
	tk_strmap cache;   /* piece -> offset in cache_ids */
	int32_t *cache_ids; /* [cache_n] each entry: count, then the ids */
	size_t cache_n, cache_cap;
	/* scratch for merging one word */
	struct tk_sym {
		int32_t id, prev, next;
		uint32_t len;
	} *sym;
	size_t sym_cap;
	struct tk_cand {
		int32_t rank, pos, id;
	} *heap;
	size_t heap_cap;
} tk_bpe;

/* ---- added tokens and post-processing ---- */

typedef struct {
	char *content;
	size_t len;
	int32_t id;
	int special, lstrip, rstrip, normalized, single_word;
} tk_added;

struct tok_tokenizer {
	char *name; /* what messages call the file */
	tk_normalizer *normalizer;
	tk_pretok *pretok;
	tk_bpe bpe;
	tk_decoder *decoder;
	tk_added *added; /* [n_added] */
	int n_added;
	/* post-processor for one sequence: prefix ids, the sequence, suffix ids */
	int32_t *post_prefix, *post_suffix;
	int n_prefix, n_suffix;
	/* every id's text: model vocabulary and added tokens */
	char **id_text; /* [n_ids], NULL for ids nobody names */
	uint32_t *id_len;
	uint8_t *id_special; /* 1 for a special added token */
	int32_t n_ids;
	/* PCRE2 state for one thread */
	pcre2_match_data *md;
	pcre2_match_context *mc;
	pcre2_jit_stack *jit;
};

/* normalize.c: *out = the normalized text (replacing its content). */
ms_status tk_normalize(tok_tokenizer *t, const tk_normalizer *nz, const char *s, size_t n, tk_buf *out,
                       ms_error *err);
void tk_normalizer_free(tk_normalizer *nz);

/* pretok.c: splits every piece of *ps (rewriting it) */
ms_status tk_pretokenize(tok_tokenizer *t, const tk_pretok *pt, tk_pieces *ps, ms_error *err);
void tk_pretok_free(tk_pretok *pt);
/* GPT-2's byte to character map, as UTF-8 (each at most 2 bytes and a NUL) */
extern char tk_byte_char[256][3];
void tk_byte_map_init(void); /* idempotent, thread-safe */
int tk_char_to_byte(int32_t c); /* -1 for a character outside the map */

/* bpe.c */
ms_status tk_bpe_word(tok_tokenizer *t, const char *w, size_t n, tk_buf *ids_out, ms_error *err);
void tk_bpe_free(tk_bpe *m);

/* decode.c: tokens [n] (each owned by the array) decoded in place; *n may shrink */
ms_status tk_decode_chain(const tk_decoder *d, tk_buf *tokens, size_t *n, ms_error *err);
void tk_decoder_free(tk_decoder *d);

/* load.c */
ms_status tk_load_json(tok_tokenizer *t, const char *json, size_t len, ms_error *err);

#endif
