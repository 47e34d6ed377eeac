/* The tokenizer's pipeline: added tokens, normalizer, pre-tokenizer, BPE, post-processor; and back. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <utf8proc.h>

#include "io/file.h"
#include "text/tok_internal.h"

/* ---- opening ---- */

ms_status tok_open(const char *path, tok_tokenizer **out, ms_error *err)
{
	struct stat sb;
	char file[4096];
	*out = NULL;
	if (stat(path, &sb) != 0)
		return ms_fail(err, MS_ERR_IO, "%s: %s", path, strerror(errno));
	if (S_ISDIR(sb.st_mode)) {
		size_t n = strlen(path);
		if (snprintf(file, sizeof file, "%s%stokenizer.json", path, n && path[n - 1] == '/' ? "" : "/") >= (int)sizeof file)
			return ms_fail(err, MS_ERR_ARG, "%s: path too long", path);
	} else if (snprintf(file, sizeof file, "%s", path) >= (int)sizeof file) {
		return ms_fail(err, MS_ERR_ARG, "%s: path too long", path);
	}
	char *data = NULL;
	size_t len = 0;
	ms_status rc = file_read_all(file, &data, &len, err);
	if (rc)
		return rc;
	rc = tok_load(data, len, file, out, err);
	free(data);
	return rc;
}

ms_status tok_load(const char *json, size_t len, const char *name, tok_tokenizer **out, ms_error *err)
{
	*out = NULL;
	tok_tokenizer *t = calloc(1, sizeof *t);
	size_t nl = strlen(name) + 1;
	if (!t || !(t->name = malloc(nl))) {
		free(t);
		return ms_fail(err, MS_ERR_NOMEM, "%s: out of memory", name);
	}
	memcpy(t->name, name, nl);
	t->bpe.unk_id = -1;
	t->md = pcre2_match_data_create(1, NULL);
	t->mc = pcre2_match_context_create(NULL);
	t->jit = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
	if (!t->md || !t->mc || !t->jit) {
		tok_free(t);
		return ms_fail(err, MS_ERR_NOMEM, "%s: out of memory", name);
	}
	pcre2_jit_stack_assign(t->mc, NULL, t->jit);
	ms_status rc = tk_load_json(t, json, len, err);
	if (rc) {
		tok_free(t);
		return rc;
	}
	*out = t;
	return MS_OK;
}

void tok_free(tok_tokenizer *t)
{
	if (!t)
		return;
	tk_normalizer_free(t->normalizer);
	free(t->normalizer);
	tk_pretok_free(t->pretok);
	free(t->pretok);
	tk_decoder_free(t->decoder);
	free(t->decoder);
	tk_bpe_free(&t->bpe);
	for (int i = 0; i < t->n_added; i++)
		free(t->added[i].content);
	free(t->added);
	free(t->post_prefix);
	free(t->post_suffix);
	free(t->id_text);
	free(t->id_len);
	free(t->id_special);
	if (t->md)
		pcre2_match_data_free(t->md);
	if (t->mc)
		pcre2_match_context_free(t->mc);
	if (t->jit)
		pcre2_jit_stack_free(t->jit);
	free(t->name);
	free(t);
}

int32_t tok_vocab_size(const tok_tokenizer *t)
{
	return t->n_ids;
}

const char *tok_id_to_token(const tok_tokenizer *t, int32_t id)
{
	return id >= 0 && id < t->n_ids ? t->id_text[id] : NULL;
}

int32_t tok_token_to_id(const tok_tokenizer *t, const char *token)
{
	size_t n = strlen(token);
	for (int i = 0; i < t->n_added; i++)
		if (t->added[i].len == n && memcmp(t->added[i].content, token, n) == 0)
			return t->added[i].id;
	return tk_strmap_get(&t->bpe.vocab, token, n);
}

/* ---- added tokens ---- */

/* A stretch of text between added tokens, or an added token (id >= 0). */
typedef struct {
	size_t off, len;
	int32_t id;
} segment;

typedef struct {
	segment *v;
	size_t n, cap;
} segments;

static int seg_add(segments *s, size_t off, size_t len, int32_t id)
{
	if (id < 0 && len == 0)
		return 0;
	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 16;
		segment *v = realloc(s->v, cap * sizeof *v);
		if (!v)
			return -1;
		s->v = v;
		s->cap = cap;
	}
	s->v[s->n++] = (segment){off, len, id};
	return 0;
}

static int32_t char_before(const char *s, size_t i, size_t *start)
{
	size_t k = i - 1;
	while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80)
		k--;
	*start = k;
	return tk_utf8_decode((const unsigned char *)s + k, i - k);
}

static int is_word_char(int32_t c)
{
	utf8proc_category_t cat = utf8proc_category(c);
	return c == '_' || (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) ||
	       (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO);
}

/* Whether added token a matches at s[i] as its flags allow. */
static int added_here(const tk_added *a, const char *content, size_t len, const char *s, size_t n, size_t i)
{
	if (len > n - i || memcmp(s + i, content, len) != 0)
		return 0;
	if (!a->single_word)
		return 1;
	size_t k;
	if (i > 0 && is_word_char(char_before(s, i, &k)))
		return 0;
	if (i + len < n) {
		size_t l = tk_utf8_len((const unsigned char *)s + i + len, n - i - len);
		if (is_word_char(tk_utf8_decode((const unsigned char *)s + i + len, l)))
			return 0;
	}
	return 1;
}

/* Splits s[0..n) at the added tokens whose normalized flag is `normalized` (leftmost, then longest), with
 * lstrip/rstrip taking the whitespace beside a token into it. ncontent gives each token's text to look for. */
static int split_added(const tok_tokenizer *t, char *const *ncontent, int normalized, const char *s, size_t n,
                       size_t base, segments *out)
{
	size_t i = 0, text_start = 0;
	uint64_t first[4] = {0}; /* the bytes a token can start with: most positions are skipped on one test */
	for (int k = 0; k < t->n_added; k++) {
		unsigned char c = (unsigned char)(ncontent ? ncontent[k] : t->added[k].content)[0];
		if (t->added[k].normalized == normalized)
			first[c >> 6] |= 1ULL << (c & 63);
	}
	while (i < n) {
		unsigned char c0 = (unsigned char)s[i];
		if (!(first[c0 >> 6] >> (c0 & 63) & 1)) {
			i++;
			continue;
		}
		int best = -1;
		size_t best_len = 0;
		for (int k = 0; k < t->n_added; k++) {
			const tk_added *a = &t->added[k];
			const char *c = ncontent ? ncontent[k] : a->content;
			size_t cl = strlen(c);
			if (a->normalized != normalized || !cl || (unsigned char)c[0] != (unsigned char)s[i] || cl <= best_len)
				continue;
			if (added_here(a, c, cl, s, n, i)) {
				best = k;
				best_len = cl;
			}
		}
		if (best < 0) {
			i++;
			continue;
		}
		const tk_added *a = &t->added[best];
		size_t ms = i, me = i + best_len, k;
		while (a->lstrip && ms > text_start && tk_is_space(char_before(s, ms, &k)))
			ms = k;
		while (a->rstrip && me < n) {
			size_t l = tk_utf8_len((const unsigned char *)s + me, n - me);
			if (!tk_is_space(tk_utf8_decode((const unsigned char *)s + me, l)))
				break;
			me += l;
		}
		if (seg_add(out, base + text_start, ms - text_start, -1) || seg_add(out, base + ms, me - ms, a->id))
			return -1;
		i = text_start = me;
	}
	return seg_add(out, base + text_start, n - text_start, -1);
}

/* ---- encoding ---- */

typedef struct {
	tk_buf clean, norm, ids; /* ids: int32 values */
	tk_pieces pieces;
	segments outer, inner;
	char **ncontent; /* added tokens' normalized text */
} encoder;

static void encoder_free(encoder *e, int n_added)
{
	tk_buf_free(&e->clean);
	tk_buf_free(&e->norm);
	tk_buf_free(&e->ids);
	tk_pieces_free(&e->pieces);
	free(e->outer.v);
	free(e->inner.v);
	if (e->ncontent)
		for (int i = 0; i < n_added; i++)
			free(e->ncontent[i]);
	free(e->ncontent);
}

static ms_status nomem(ms_error *err)
{
	return ms_fail(err, MS_ERR_NOMEM, "tokenizer: out of memory encoding");
}

static ms_status add_id(encoder *e, int32_t id, ms_error *err)
{
	return tk_buf_add(&e->ids, &id, sizeof id) ? nomem(err) : MS_OK;
}

/* The text of a normalized added token as the normalizer makes it. */
static ms_status normalized_contents(tok_tokenizer *t, encoder *e, ms_error *err)
{
	int any = 0;
	for (int i = 0; i < t->n_added; i++)
		any |= t->added[i].normalized;
	if (!any || !t->normalizer)
		return MS_OK;
	if (!(e->ncontent = calloc((size_t)t->n_added, sizeof *e->ncontent)))
		return nomem(err);
	for (int i = 0; i < t->n_added; i++) {
		tk_buf b = {0};
		ms_status rc = t->added[i].normalized ? tk_normalize(t, t->normalizer, t->added[i].content, t->added[i].len, &b, err)
		                                      : (tk_buf_add(&b, "", 0) ? nomem(err) : MS_OK);
		if (rc) {
			tk_buf_free(&b);
			return rc;
		}
		e->ncontent[i] = b.s;
	}
	return MS_OK;
}

/* Pre-tokenizes and merges one stretch of normalized text. */
static ms_status encode_stretch(tok_tokenizer *t, encoder *e, const char *s, size_t n, int at_start, ms_error *err)
{
	tk_pieces_clear(&e->pieces);
	if (tk_pieces_add(&e->pieces, s, n, at_start))
		return nomem(err);
	ms_status rc = t->pretok ? tk_pretokenize(t, t->pretok, &e->pieces, err) : MS_OK;
	for (size_t i = 0; i < e->pieces.n && !rc; i++)
		rc = tk_bpe_word(t, e->pieces.text.s + e->pieces.p[i].off, e->pieces.p[i].len, &e->ids, err);
	return rc;
}

static ms_status encode_segment(tok_tokenizer *t, encoder *e, size_t off, size_t len, ms_error *err)
{
	const char *s = e->clean.s + off;
	const char *ns = s;
	size_t nn = len;
	ms_status rc;
	if (t->normalizer) {
		if ((rc = tk_normalize(t, t->normalizer, s, len, &e->norm, err)))
			return rc;
		ns = e->norm.s;
		nn = e->norm.n;
	}
	e->inner.n = 0;
	if (e->ncontent) {
		if (split_added(t, e->ncontent, 1, ns, nn, 0, &e->inner))
			return nomem(err);
	} else if (seg_add(&e->inner, 0, nn, -1)) {
		return nomem(err);
	}
	for (size_t i = 0; i < e->inner.n; i++) {
		const segment *g = &e->inner.v[i];
		rc = g->id >= 0 ? add_id(e, g->id, err) : encode_stretch(t, e, ns + g->off, g->len, off == 0 && g->off == 0, err);
		if (rc)
			return rc;
	}
	return MS_OK;
}

ms_status tok_encode(tok_tokenizer *t, const char *text, size_t len, int add_special, int32_t **ids, size_t *n_ids,
                     ms_error *err)
{
	encoder e = {0};
	*ids = NULL;
	*n_ids = 0;
	ms_status rc = tk_utf8_clean(text ? text : "", text ? len : 0, &e.clean) ? nomem(err) : MS_OK;
	if (!rc)
		rc = normalized_contents(t, &e, err);
	if (!rc && add_special)
		for (int i = 0; i < t->n_prefix && !rc; i++)
			rc = add_id(&e, t->post_prefix[i], err);
	if (!rc && split_added(t, NULL, 0, e.clean.s, e.clean.n, 0, &e.outer))
		rc = nomem(err);
	for (size_t i = 0; i < e.outer.n && !rc; i++) {
		const segment *g = &e.outer.v[i];
		rc = g->id >= 0 ? add_id(&e, g->id, err) : encode_segment(t, &e, g->off, g->len, err);
	}
	if (!rc && add_special)
		for (int i = 0; i < t->n_suffix && !rc; i++)
			rc = add_id(&e, t->post_suffix[i], err);
	if (!rc) {
		*n_ids = e.ids.n / sizeof(int32_t);
		*ids = malloc(e.ids.n ? e.ids.n : 1);
		if (!*ids)
			rc = nomem(err);
		else if (e.ids.n)
			memcpy(*ids, e.ids.s, e.ids.n);
	}
	if (rc)
		*n_ids = 0;
	encoder_free(&e, t->n_added);
	return rc;
}

/* ---- decoding ---- */

ms_status tok_decode(const tok_tokenizer *t, const int32_t *ids, size_t n_ids, int skip_special, char **text,
                     size_t *len, ms_error *err)
{
	*text = NULL;
	*len = 0;
	tk_buf *tok = calloc(n_ids ? n_ids : 1, sizeof *tok);
	size_t n = 0;
	ms_status rc = tok ? MS_OK : ms_fail(err, MS_ERR_NOMEM, "tokenizer: out of memory decoding");
	for (size_t i = 0; i < n_ids && !rc; i++) {
		int32_t id = ids[i];
		if (id < 0 || id >= t->n_ids || !t->id_text[id]) {
			rc = ms_fail(err, MS_ERR_TOK_ID, "%s: id %lld (position %zu) is not in the vocabulary", t->name,
			             (long long)id, i);
			break;
		}
		if (skip_special && t->id_special[id])
			continue;
		if (tk_buf_add(&tok[n++], t->id_text[id], t->id_len[id]))
			rc = ms_fail(err, MS_ERR_NOMEM, "tokenizer: out of memory decoding");
	}
	if (!rc && t->decoder)
		rc = tk_decode_chain(t->decoder, tok, &n, err);
	tk_buf out = {0};
	for (size_t i = 0; i < n && !rc; i++)
		if ((!t->decoder && i && tk_buf_addc(&out, ' ')) || tk_buf_add(&out, tok[i].s, tok[i].n))
			rc = ms_fail(err, MS_ERR_NOMEM, "tokenizer: out of memory decoding");
	if (!rc && tk_buf_add(&out, "", 0))
		rc = ms_fail(err, MS_ERR_NOMEM, "tokenizer: out of memory decoding");
	for (size_t i = 0; tok && i < (n_ids ? n_ids : 1); i++) /* a decoder may fill tok[0] of an empty list */
		tk_buf_free(&tok[i]);
	free(tok);
	if (rc) {
		tk_buf_free(&out);
		return rc;
	}
	*text = out.s;
	*len = out.n;
	return MS_OK;
}
