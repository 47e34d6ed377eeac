/* Normalizers: Unicode forms (utf8proc), Lowercase, Replace, Prepend, Strip and Sequence. Each maps a whole
 * segment of text (between added tokens) to a new one; the tokenizer needs no offsets, so none are kept. */
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "text/tok_internal.h"

static ms_status nomem(ms_error *err)
{
	return ms_fail(err, MS_ERR_NOMEM, "tokenizer: out of memory normalizing text");
}

static ms_status unicode_form(tk_nz_kind kind, const char *s, size_t n, tk_buf *out, ms_error *err)
{
	utf8proc_option_t opt = UTF8PROC_STABLE;
	switch (kind) {
	case NZ_NFC: opt |= UTF8PROC_COMPOSE; break;
	case NZ_NFD: opt |= UTF8PROC_DECOMPOSE; break;
	case NZ_NFKC: opt |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
	default: opt |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
	}
	utf8proc_uint8_t *res = NULL;
	utf8proc_ssize_t len = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &res, opt);
	if (len < 0) {
		free(res);
		return len == UTF8PROC_ERROR_NOMEM ? nomem(err)
		                                   : ms_fail(err, MS_ERR_ARG, "normalizer: %s", utf8proc_errmsg(len));
	}
	out->n = 0;
	int bad = tk_buf_add(out, res, (size_t)len);
	free(res);
	return bad ? nomem(err) : MS_OK;
}

/* Whether a Greek capital sigma at s[i] ends a word: preceded by a cased letter and not followed by one
 * (Unicode's Final_Sigma condition, with case-ignorable characters skipped). */
static int final_sigma(const char *s, size_t n, size_t i, size_t len)
{
	const unsigned char *u = (const unsigned char *)s;
	int before = 0;
	size_t j = i;
	while (j > 0) {
		size_t k = j - 1;
		while (k > 0 && (u[k] & 0xC0) == 0x80)
			k--;
		int32_t c = tk_utf8_decode(u + k, j - k);
		const utf8proc_property_t *pr = utf8proc_get_property(c);
		j = k;
		if (pr->ignorable || pr->category == UTF8PROC_CATEGORY_MN || pr->category == UTF8PROC_CATEGORY_ME ||
		    pr->category == UTF8PROC_CATEGORY_CF || pr->category == UTF8PROC_CATEGORY_LM ||
		    pr->category == UTF8PROC_CATEGORY_SK || c == '\'' || c == 0x2019 || c == '.' || c == ':')
			continue;
		before = utf8proc_islower(c) || utf8proc_isupper(c) || pr->category == UTF8PROC_CATEGORY_LT;
		break;
	}
	if (!before)
		return 0;
	for (j = i + len; j < n;) {
		size_t l = tk_utf8_len(u + j, n - j);
		int32_t c = tk_utf8_decode(u + j, l);
		const utf8proc_property_t *pr = utf8proc_get_property(c);
		j += l;
		if (pr->ignorable || pr->category == UTF8PROC_CATEGORY_MN || pr->category == UTF8PROC_CATEGORY_ME ||
		    pr->category == UTF8PROC_CATEGORY_CF || pr->category == UTF8PROC_CATEGORY_LM ||
		    pr->category == UTF8PROC_CATEGORY_SK || c == '\'' || c == 0x2019 || c == '.' || c == ':')
			continue;
		return !(utf8proc_islower(c) || utf8proc_isupper(c) || pr->category == UTF8PROC_CATEGORY_LT);
	}
	return 1;
}

/* Full lowercase mapping as Rust's str::to_lowercase and JavaScript's toLowerCase give it: utf8proc's simple
 * mapping, plus the two rules that are not one character to one (U+0130 and the final sigma). */
static ms_status lowercase(const char *s, size_t n, tk_buf *out, ms_error *err)
{
	const unsigned char *u = (const unsigned char *)s;
	out->n = 0;
	if (tk_buf_reserve(out, n))
		return nomem(err);
	for (size_t i = 0; i < n;) {
		size_t l = tk_utf8_len(u + i, n - i);
		int32_t c = tk_utf8_decode(u + i, l);
		char enc[4];
		int bad;
		if (c == 0x130)
			bad = tk_buf_add(out, "i\xCC\x87", 3);
		else if (c == 0x3A3)
			bad = tk_buf_add(out, final_sigma(s, n, i, l) ? "\xCF\x82" : "\xCF\x83", 2);
		else
			bad = tk_buf_add(out, enc, tk_utf8_encode(utf8proc_tolower(c), enc));
		if (bad)
			return nomem(err);
		i += l;
	}
	return MS_OK;
}

static ms_status replace_all(tok_tokenizer *t, const tk_pattern *p, const char *content, const char *s, size_t n,
                             tk_buf *out, ms_error *err)
{
	size_t from = 0, ms, me, clen = strlen(content);
	out->n = 0;
	if (tk_buf_reserve(out, n))
		return nomem(err);
	for (;;) {
		int rc = tk_pattern_find(p, s, n, from, &ms, &me, t->md, t->mc, err);
		if (rc < 0)
			return MS_ERR_TOK_REGEX;
		if (rc == 0 || ms >= n)
			break;
		if (me == ms) { /* an empty match replaces nothing; step over one character */
			size_t l = tk_utf8_len((const unsigned char *)s + ms, n - ms);
			if (tk_buf_add(out, s + from, ms + l - from))
				return nomem(err);
			from = ms + l;
			continue;
		}
		if (tk_buf_add(out, s + from, ms - from) || tk_buf_add(out, content, clen))
			return nomem(err);
		from = me;
	}
	return tk_buf_add(out, s + from, n - from) ? nomem(err) : MS_OK;
}

static ms_status strip(const char *s, size_t n, int left, int right, tk_buf *out, ms_error *err)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t a = 0, b = n;
	while (left && a < b) {
		size_t l = tk_utf8_len(u + a, b - a);
		if (!tk_is_space(tk_utf8_decode(u + a, l)))
			break;
		a += l;
	}
	while (right && b > a) {
		size_t k = b - 1;
		while (k > a && (u[k] & 0xC0) == 0x80)
			k--;
		if (!tk_is_space(tk_utf8_decode(u + k, b - k)))
			break;
		b = k;
	}
	out->n = 0;
	return tk_buf_add(out, s + a, b - a) ? nomem(err) : MS_OK;
}

ms_status tk_normalize(tok_tokenizer *t, const tk_normalizer *nz, const char *s, size_t n, tk_buf *out,
                       ms_error *err)
{
	switch (nz->kind) {
	case NZ_NFC:
	case NZ_NFD:
	case NZ_NFKC:
	case NZ_NFKD: return unicode_form(nz->kind, s, n, out, err);
	case NZ_LOWERCASE: return lowercase(s, n, out, err);
	case NZ_REPLACE: return replace_all(t, &nz->pattern, nz->content, s, n, out, err);
	case NZ_STRIP: return strip(s, n, nz->left, nz->right, out, err);
	case NZ_PREPEND:
		out->n = 0;
		/* nothing is prepended to an empty text */
		if ((n && tk_buf_add(out, nz->content, strlen(nz->content))) || tk_buf_add(out, s, n))
			return nomem(err);
		return MS_OK;
	case NZ_SEQUENCE: break;
	}
	tk_buf cur = {0};
	ms_status st = MS_OK;
	if (tk_buf_add(&cur, s, n))
		return nomem(err);
	for (int i = 0; i < nz->n_items && st == MS_OK; i++) {
		st = tk_normalize(t, &nz->items[i], cur.s, cur.n, out, err);
		tk_buf tmp = cur;
		cur = *out;
		*out = tmp;
	}
	if (st == MS_OK) {
		tk_buf tmp = cur;
		cur = *out;
		*out = tmp;
	}
	tk_buf_free(&cur);
	return st;
}

void tk_normalizer_free(tk_normalizer *nz)
{
	if (!nz)
		return;
	tk_pattern_free(&nz->pattern);
	free(nz->content);
	for (int i = 0; i < nz->n_items; i++)
		tk_normalizer_free(&nz->items[i]);
	free(nz->items);
}
