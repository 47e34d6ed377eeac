/* Pre-tokenizers: split each piece of text into smaller pieces (Split, Digits, Metaspace) or rewrite it into
 * GPT-2's byte alphabet (ByteLevel). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "text/tok_internal.h"

char tk_byte_char[256][3];
static int char_byte[324]; /* code point -> byte, -1 where no byte maps there */

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves; the other 68 bytes take the code
 * points from U+0100 upwards, in byte order. */
static void byte_map_build(void)
{
	int next = 256;
	for (int c = 0; c < 324; c++)
		char_byte[c] = -1;
	for (int b = 0; b < 256; b++) {
		int keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
		int c = keep ? b : next++;
		char enc[4];
		size_t l = tk_utf8_encode(c, enc);
		memcpy(tk_byte_char[b], enc, l);
		tk_byte_char[b][l] = 0;
		char_byte[c] = b;
	}
}

void tk_byte_map_init(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, byte_map_build);
}

int tk_char_to_byte(int32_t c)
{
	return c >= 0 && c < 324 ? char_byte[c] : -1;
}

static ms_status nomem(ms_error *err)
{
	return ms_fail(err, MS_ERR_NOMEM, "tokenizer: out of memory splitting text");
}

/* One stretch of a piece: [a, b) and whether the pattern matched it. */
typedef struct {
	size_t a, b;
	int match;
} stretch;

typedef struct {
	stretch *v;
	size_t n, cap;
} stretches;

static int stretch_add(stretches *s, size_t a, size_t b, int match)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 32;
		stretch *v = realloc(s->v, cap * sizeof *v);
		if (!v)
			return -1;
		s->v = v;
		s->cap = cap;
	}
	s->v[s->n++] = (stretch){a, b, match};
	return 0;
}

/* Cuts s[0..n) into matched and unmatched stretches (empty matches are not stretches). */
static ms_status find_stretches(tok_tokenizer *t, const tk_pattern *p, int invert, const char *s, size_t n,
                                stretches *out, ms_error *err)
{
	size_t from = 0, prev = 0, ms, me;
	out->n = 0;
	while (from < n) {
		int rc = tk_pattern_find(p, s, n, from, &ms, &me, t->md, t->mc, err);
		if (rc < 0)
			return MS_ERR_TOK_REGEX;
		if (rc == 0)
			break;
		if (me == ms) {
			from = ms + (ms < n ? tk_utf8_len((const unsigned char *)s + ms, n - ms) : 1);
			continue;
		}
		if (ms > prev && stretch_add(out, prev, ms, invert))
			return nomem(err);
		if (stretch_add(out, ms, me, !invert))
			return nomem(err);
		prev = from = me;
	}
	if (prev < n && stretch_add(out, prev, n, invert))
		return nomem(err);
	return MS_OK;
}

/* Applies a split behaviour to the stretches in place: afterwards each stretch is one piece (match = 0 marks a
 * stretch to drop, for Removed). */
static void apply_behavior(stretches *s, tk_split_behavior how)
{
	size_t k = 0;
	int prev_match = 0;
	switch (how) {
	case SB_ISOLATED: return;
	case SB_REMOVED:
		for (size_t i = 0; i < s->n; i++)
			if (!s->v[i].match)
				s->v[k++] = s->v[i];
		s->n = k;
		return;
	case SB_MERGED_PREV:
		for (size_t i = 0; i < s->n; i++) {
			stretch x = s->v[i];
			if (x.match && !prev_match && k)
				s->v[k - 1].b = x.b;
			else
				s->v[k++] = x;
			prev_match = x.match;
		}
		break;
	case SB_MERGED_NEXT: /* the same from the end: a match joins the stretch after it */
		k = s->n;
		for (size_t i = s->n; i-- > 0;) {
			stretch x = s->v[i];
			if (x.match && !prev_match && k < s->n)
				s->v[k].a = x.a;
			else
				s->v[--k] = x;
			prev_match = x.match;
		}
		memmove(s->v, s->v + k, (s->n - k) * sizeof *s->v);
		k = s->n - k;
		break;
	case SB_CONTIGUOUS:
		for (size_t i = 0; i < s->n; i++) {
			stretch x = s->v[i];
			if (k && x.match == prev_match)
				s->v[k - 1].b = x.b;
			else
				s->v[k++] = x;
			prev_match = x.match;
		}
		break;
	}
	s->n = k;
}

static ms_status split_pieces(tok_tokenizer *t, const tk_pattern *p, int invert, tk_split_behavior how,
                              const tk_pieces *in, tk_pieces *out, ms_error *err)
{
	stretches st = {0};
	ms_status rc = MS_OK;
	for (size_t i = 0; i < in->n && rc == MS_OK; i++) {
		const char *s = in->text.s + in->p[i].off;
		rc = find_stretches(t, p, invert, s, in->p[i].len, &st, err);
		if (rc)
			break;
		apply_behavior(&st, how);
		for (size_t j = 0; j < st.n; j++)
			if (st.v[j].b > st.v[j].a &&
			    tk_pieces_add(out, s + st.v[j].a, st.v[j].b - st.v[j].a, in->p[i].at_start && st.v[j].a == 0)) {
				rc = nomem(err);
				break;
			}
	}
	free(st.v);
	return rc;
}

static ms_status byte_level(tok_tokenizer *t, const tk_pretok *pt, const tk_pieces *in, tk_pieces *out,
                            ms_error *err)
{
	tk_pieces pre = {0}, split = {0};
	const tk_pieces *src = in;
	ms_status rc = MS_OK;
	if (pt->add_prefix_space) {
		tk_buf tmp = {0};
		for (size_t i = 0; i < in->n && !rc; i++) {
			const char *s = in->text.s + in->p[i].off;
			tmp.n = 0;
			if ((in->p[i].len == 0 || s[0] != ' ') && tk_buf_addc(&tmp, ' '))
				rc = nomem(err);
			if (!rc && (tk_buf_add(&tmp, s, in->p[i].len) || tk_pieces_add(&pre, tmp.s, tmp.n, in->p[i].at_start)))
				rc = nomem(err);
		}
		tk_buf_free(&tmp);
		src = &pre;
	}
	if (!rc && pt->use_regex) {
		rc = split_pieces(t, &pt->pattern, 0, SB_ISOLATED, src, &split, err);
		src = &split;
	}
	tk_buf tmp = {0};
	for (size_t i = 0; i < src->n && !rc; i++) {
		const unsigned char *s = (const unsigned char *)src->text.s + src->p[i].off;
		tmp.n = 0;
		for (size_t j = 0; j < src->p[i].len && !rc; j++)
			if (tk_buf_add(&tmp, tk_byte_char[s[j]], strlen(tk_byte_char[s[j]])))
				rc = nomem(err);
		if (!rc && tk_pieces_add(out, tmp.s, tmp.n, src->p[i].at_start))
			rc = nomem(err);
	}
	tk_buf_free(&tmp);
	tk_pieces_free(&pre);
	tk_pieces_free(&split);
	return rc;
}

static ms_status metaspace(tok_tokenizer *t, const tk_pretok *pt, const tk_pieces *in, tk_pieces *out,
                           ms_error *err)
{
	const size_t rl = strlen(pt->replacement);
	tk_buf tmp = {0};
	tk_pieces whole = {0};
	ms_status rc = MS_OK;
	for (size_t i = 0; i < in->n && !rc; i++) {
		const char *s = in->text.s + in->p[i].off;
		size_t n = in->p[i].len;
		tmp.n = 0;
		int starts = n >= 1 && (s[0] == ' ' || (n >= rl && memcmp(s, pt->replacement, rl) == 0));
		int prepend = !starts && (pt->prepend_scheme == PS_ALWAYS ||
		                          (pt->prepend_scheme == PS_FIRST && in->p[i].at_start));
		if (prepend && tk_buf_add(&tmp, pt->replacement, rl))
			rc = nomem(err);
		for (size_t j = 0; j < n && !rc; j++)
			if (s[j] == ' ' ? tk_buf_add(&tmp, pt->replacement, rl) : tk_buf_addc(&tmp, s[j]))
				rc = nomem(err);
		if (!rc && tk_pieces_add(&whole, tmp.s, tmp.n, in->p[i].at_start))
			rc = nomem(err);
	}
	tk_buf_free(&tmp);
	if (!rc && pt->split) {
		tk_pattern lit = {.lit = (char *)pt->replacement, .lit_len = rl};
		rc = split_pieces(t, &lit, 0, SB_MERGED_NEXT, &whole, out, err);
	} else if (!rc) {
		for (size_t i = 0; i < whole.n && !rc; i++)
			if (tk_pieces_add(out, whole.text.s + whole.p[i].off, whole.p[i].len, whole.p[i].at_start))
				rc = nomem(err);
	}
	tk_pieces_free(&whole);
	return rc;
}

ms_status tk_pretokenize(tok_tokenizer *t, const tk_pretok *pt, tk_pieces *ps, ms_error *err)
{
	if (pt->kind == PT_SEQUENCE) {
		for (int i = 0; i < pt->n_items; i++) {
			ms_status rc = tk_pretokenize(t, &pt->items[i], ps, err);
			if (rc)
				return rc;
		}
		return MS_OK;
	}
	tk_pieces out = {0};
	ms_status rc;
	switch (pt->kind) {
	case PT_SPLIT: rc = split_pieces(t, &pt->pattern, pt->invert, pt->behavior, ps, &out, err); break;
	case PT_DIGITS: rc = split_pieces(t, &pt->pattern, 0, SB_ISOLATED, ps, &out, err); break;
	case PT_BYTELEVEL: rc = byte_level(t, pt, ps, &out, err); break;
	default: rc = metaspace(t, pt, ps, &out, err); break;
	}
	tk_pieces_free(ps);
	*ps = out;
	return rc;
}

void tk_pretok_free(tk_pretok *pt)
{
	if (!pt)
		return;
	tk_pattern_free(&pt->pattern);
	for (int i = 0; i < pt->n_items; i++)
		tk_pretok_free(&pt->items[i]);
	free(pt->items);
}
