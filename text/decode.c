/* Decoders: turn the list of token texts back into text, one step after another, as tokenizers' decode_chain
 * does. Each step rewrites the list in place. */
#include <stdlib.h>
#include <string.h>

#include "text/tok_internal.h"

static ms_status nomem(ms_error *err)
{
	return ms_fail(err, MS_ERR_NOMEM, "tokenizer: out of memory decoding");
}

/* Joins tokens[0..n) into tokens[0] (freeing the rest) and sets *n = 1. */
static ms_status fuse(tk_buf *tok, size_t *n, ms_error *err)
{
	if (*n == 0)
		return MS_OK;
	for (size_t i = 1; i < *n; i++) {
		if (tk_buf_add(&tok[0], tok[i].s, tok[i].n))
			return nomem(err);
		tk_buf_free(&tok[i]);
	}
	*n = 1;
	return MS_OK;
}

/* GPT-2's alphabet back to bytes; a token holding a character outside it is kept as it is (added tokens). */
static ms_status byte_level(tk_buf *tok, size_t *n, ms_error *err)
{
	tk_buf raw = {0}, clean = {0};
	ms_status rc = MS_OK;
	for (size_t i = 0; i < *n && !rc; i++) {
		const unsigned char *s = (const unsigned char *)tok[i].s;
		size_t mark = raw.n, j = 0;
		while (j < tok[i].n) {
			size_t l = tk_utf8_len(s + j, tok[i].n - j);
			int b = l ? tk_char_to_byte(tk_utf8_decode(s + j, l)) : -1;
			if (b < 0)
				break;
			if (tk_buf_addc(&raw, (char)b)) {
				rc = nomem(err);
				break;
			}
			j += l;
		}
		if (!rc && j < tok[i].n) {
			raw.n = mark;
			if (tk_buf_add(&raw, tok[i].s, tok[i].n))
				rc = nomem(err);
		}
	}
	if (!rc && tk_utf8_clean(raw.s ? raw.s : "", raw.n, &clean))
		rc = nomem(err);
	tk_buf_free(&raw);
	if (rc) {
		tk_buf_free(&clean);
		return rc;
	}
	for (size_t i = 0; i < *n; i++)
		tk_buf_free(&tok[i]);
	tok[0] = clean;
	*n = 1;
	return MS_OK;
}

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* "<0xNN>" -> NN, else -1 */
static int byte_token(const tk_buf *t)
{
	if (t->n != 6 || memcmp(t->s, "<0x", 3) != 0 || t->s[5] != '>')
		return -1;
	int h = hexval(t->s[3]), l = hexval(t->s[4]);
	return h < 0 || l < 0 ? -1 : h * 16 + l;
}

/* Runs of "<0xNN>" tokens become the text of their bytes when those are valid UTF-8, else one U+FFFD per
 * byte (as tokenizers' ByteFallback decoder does). */
static ms_status byte_fallback(tk_buf *tok, size_t *n, ms_error *err)
{
	size_t out = 0, i = 0;
	while (i < *n) {
		if (byte_token(&tok[i]) < 0) {
			tk_buf t = tok[i];
			tok[i++] = (tk_buf){0};
			tok[out++] = t;
			continue;
		}
		tk_buf bytes = {0};
		size_t j = i;
		for (; j < *n && byte_token(&tok[j]) >= 0; j++)
			if (tk_buf_addc(&bytes, (char)byte_token(&tok[j]))) {
				tk_buf_free(&bytes);
				return nomem(err);
			}
		size_t k = 0;
		while (k < bytes.n) {
			size_t l = tk_utf8_len((const unsigned char *)bytes.s + k, bytes.n - k);
			if (!l)
				break;
			k += l;
		}
		for (size_t q = i; q < j; q++)
			tk_buf_free(&tok[q]);
		if (k == bytes.n) {
			tok[out++] = bytes;
		} else {
			size_t nb = bytes.n;
			tk_buf_free(&bytes);
			for (size_t q = 0; q < nb; q++) {
				tk_buf r = {0};
				if (tk_buf_add(&r, "\xEF\xBF\xBD", 3))
					return nomem(err);
				tok[out++] = r;
			}
		}
		i = j;
	}
	*n = out;
	return MS_OK;
}

static ms_status replace_in(const tk_decoder *d, tk_buf *tok, size_t n, const char *pat, size_t plen, const char *rep,
                            ms_error *err)
{
	(void)d;
	for (size_t i = 0; i < n; i++) {
		if (!plen || !tok[i].n || !memmem(tok[i].s, tok[i].n, pat, plen))
			continue;
		tk_buf out = {0};
		size_t from = 0;
		const char *hit;
		while ((hit = memmem(tok[i].s + from, tok[i].n - from, pat, plen))) {
			size_t at = (size_t)(hit - tok[i].s);
			if (tk_buf_add(&out, tok[i].s + from, at - from) || tk_buf_add(&out, rep, strlen(rep))) {
				tk_buf_free(&out);
				return nomem(err);
			}
			from = at + plen;
		}
		if (tk_buf_add(&out, tok[i].s + from, tok[i].n - from)) {
			tk_buf_free(&out);
			return nomem(err);
		}
		tk_buf_free(&tok[i]);
		tok[i] = out;
	}
	return MS_OK;
}

static ms_status metaspace(const tk_decoder *d, tk_buf *tok, size_t n, ms_error *err)
{
	ms_status rc = replace_in(d, tok, n, d->replacement, strlen(d->replacement), " ", err);
	if (rc == MS_OK && n && d->prepend && tok[0].n && tok[0].s[0] == ' ') {
		memmove(tok[0].s, tok[0].s + 1, tok[0].n);
		tok[0].n--;
	}
	return rc;
}

static void strip(const tk_decoder *d, tk_buf *tok, size_t n)
{
	size_t cl = strlen(d->content);
	for (size_t i = 0; i < n && cl; i++) {
		size_t a = 0, b = tok[i].n;
		for (int k = 0; k < d->start && b - a >= cl && memcmp(tok[i].s + a, d->content, cl) == 0; k++)
			a += cl;
		for (int k = 0; k < d->stop && b - a >= cl && memcmp(tok[i].s + b - cl, d->content, cl) == 0; k++)
			b -= cl;
		memmove(tok[i].s, tok[i].s + a, b - a);
		tok[i].n = b - a;
		if (tok[i].s)
			tok[i].s[tok[i].n] = 0;
	}
}

ms_status tk_decode_chain(const tk_decoder *d, tk_buf *tok, size_t *n, ms_error *err)
{
	switch (d->kind) {
	case DC_BYTELEVEL: return byte_level(tok, n, err);
	case DC_METASPACE: return metaspace(d, tok, *n, err);
	case DC_BYTEFALLBACK: return byte_fallback(tok, n, err);
	case DC_FUSE: return fuse(tok, n, err);
	case DC_STRIP: strip(d, tok, *n); return MS_OK;
	case DC_REPLACE: return replace_in(d, tok, *n, d->pattern.lit, d->pattern.lit_len, d->content, err);
	case DC_SEQUENCE: break;
	}
	for (int i = 0; i < d->n_items; i++) {
		ms_status rc = tk_decode_chain(&d->items[i], tok, n, err);
		if (rc)
			return rc;
	}
	return MS_OK;
}

void tk_decoder_free(tk_decoder *d)
{
	if (!d)
		return;
	tk_pattern_free(&d->pattern);
	free(d->content);
	for (int i = 0; i < d->n_items; i++)
		tk_decoder_free(&d->items[i]);
	free(d->items);
}
