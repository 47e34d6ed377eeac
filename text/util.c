/* Byte strings, UTF-8, hash maps and patterns for the tokenizer (text/). */
#include <stdlib.h>
#include <string.h>

#include "text/tok_internal.h"

int tk_buf_reserve(tk_buf *b, size_t extra)
{
	if (b->n + extra + 1 <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 64;
	while (cap < b->n + extra + 1)
		cap *= 2;
	char *s = realloc(b->s, cap);
	if (!s)
		return -1;
	b->s = s;
	b->cap = cap;
	return 0;
}

int tk_buf_add(tk_buf *b, const void *p, size_t n)
{
	if (tk_buf_reserve(b, n))
		return -1;
	if (n)
		memcpy(b->s + b->n, p, n);
	b->n += n;
	b->s[b->n] = 0;
	return 0;
}

int tk_buf_addc(tk_buf *b, char c)
{
	return tk_buf_add(b, &c, 1);
}

void tk_buf_free(tk_buf *b)
{
	free(b->s);
	b->s = NULL;
	b->n = b->cap = 0;
}

/* ---- UTF-8 (RFC 3629: no surrogates, nothing past U+10FFFF, shortest forms only) ---- */

size_t tk_utf8_len(const unsigned char *s, size_t n)
{
	unsigned c = s[0];
	if (c < 0x80)
		return 1;
	size_t len;
	unsigned lo = 0x80, hi = 0xBF;
	if (c >= 0xC2 && c <= 0xDF)
		len = 2;
	else if (c >= 0xE0 && c <= 0xEF) {
		len = 3;
		if (c == 0xE0)
			lo = 0xA0;
		else if (c == 0xED)
			hi = 0x9F;
	} else if (c >= 0xF0 && c <= 0xF4) {
		len = 4;
		if (c == 0xF0)
			lo = 0x90;
		else if (c == 0xF4)
			hi = 0x8F;
	} else
		return 0;
	if (n < len)
		return 0;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xBF)
			return 0;
	return len;
}

int32_t tk_utf8_decode(const unsigned char *s, size_t len)
{
	switch (len) {
	case 1: return s[0];
	case 2: return (int32_t)((s[0] & 0x1Fu) << 6 | (s[1] & 0x3Fu));
	case 3: return (int32_t)((s[0] & 0x0Fu) << 12 | (s[1] & 0x3Fu) << 6 | (s[2] & 0x3Fu));
	default: return (int32_t)((s[0] & 0x07u) << 18 | (s[1] & 0x3Fu) << 12 | (s[2] & 0x3Fu) << 6 | (s[3] & 0x3Fu));
	}
}

size_t tk_utf8_encode(int32_t c, char out[4])
{
	if (c < 0x80) {
		out[0] = (char)c;
		return 1;
	}
	if (c < 0x800) {
		out[0] = (char)(0xC0 | (c >> 6));
		out[1] = (char)(0x80 | (c & 0x3F));
		return 2;
	}
	if (c < 0x10000) {
		out[0] = (char)(0xE0 | (c >> 12));
		out[1] = (char)(0x80 | ((c >> 6) & 0x3F));
		out[2] = (char)(0x80 | (c & 0x3F));
		return 3;
	}
	out[0] = (char)(0xF0 | (c >> 18));
	out[1] = (char)(0x80 | ((c >> 12) & 0x3F));
	out[2] = (char)(0x80 | ((c >> 6) & 0x3F));
	out[3] = (char)(0x80 | (c & 0x3F));
	return 4;
}

/* How many bytes of an ill-formed sequence at s form its maximal subpart: the longest prefix of a valid
 * sequence's shape (Unicode 15, 3.9 "U+FFFD substitution of maximal subparts"), at least one byte. */
static size_t maximal_subpart(const unsigned char *s, size_t n)
{
	unsigned c = s[0];
	size_t len;
	unsigned lo = 0x80, hi = 0xBF;
	if (c >= 0xC2 && c <= 0xDF)
		len = 2;
	else if (c >= 0xE0 && c <= 0xEF) {
		len = 3;
		lo = c == 0xE0 ? 0xA0 : 0x80;
		hi = c == 0xED ? 0x9F : 0xBF;
	} else if (c >= 0xF0 && c <= 0xF4) {
		len = 4;
		lo = c == 0xF0 ? 0x90 : 0x80;
		hi = c == 0xF4 ? 0x8F : 0xBF;
	} else
		return 1;
	size_t i = 1;
	if (i < n && s[i] >= lo && s[i] <= hi)
		for (i = 2; i < len && i < n && s[i] >= 0x80 && s[i] <= 0xBF; i++)
			;
	return i;
}

int tk_utf8_clean(const char *s, size_t n, tk_buf *out)
{
	const unsigned char *u = (const unsigned char *)s;
	out->n = 0;
	if (tk_buf_reserve(out, n))
		return -1;
	size_t i = 0, run = 0;
	while (i < n) {
		size_t l = tk_utf8_len(u + i, n - i);
		if (l) {
			i += l;
			continue;
		}
		if (tk_buf_add(out, s + run, i - run) || tk_buf_add(out, "\xEF\xBF\xBD", 3))
			return -1;
		i += maximal_subpart(u + i, n - i);
		run = i;
	}
	return tk_buf_add(out, s + run, n - run);
}

int tk_is_space(int32_t c)
{
	return (c >= 9 && c <= 13) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
	       c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* ---- hash maps (open addressing, linear probing, load at most 1/2) ---- */

uint64_t tk_hash(const void *p, size_t n)
{
	const unsigned char *s = p;
	uint64_t h = 0x9E3779B97F4A7C15ULL ^ n;
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t w;
		memcpy(&w, s + i, 8);
		h = (h ^ w) * 0xFF51AFD7ED558CCDULL;
		h ^= h >> 32;
	}
	uint64_t w = 0;
	memcpy(&w, s + i, n - i);
	h = (h ^ w) * 0xC4CEB9FE1A85EC53ULL;
	h ^= h >> 29;
	return h;
}

static int strmap_grow(tk_strmap *m)
{
	size_t cap = m->cap ? m->cap * 2 : 64;
	struct tk_skey *slot = calloc(cap, sizeof *slot);
	if (!slot)
		return -1;
	for (size_t i = 0; i < m->cap; i++) {
		if (!m->slot[i].key)
			continue;
		size_t j = tk_hash(m->slot[i].key, m->slot[i].len) & (cap - 1);
		while (slot[j].key)
			j = (j + 1) & (cap - 1);
		slot[j] = m->slot[i];
	}
	free(m->slot);
	m->slot = slot;
	m->cap = cap;
	return 0;
}

int tk_strmap_put(tk_strmap *m, const char *key, size_t len, int32_t val)
{
	if (len > UINT32_MAX)
		return -1;
	if ((m->count + 1) * 2 > m->cap && strmap_grow(m))
		return -1;
	size_t j = tk_hash(key, len) & (m->cap - 1);
	while (m->slot[j].key) {
		if (m->slot[j].len == len && memcmp(m->slot[j].key, key, len) == 0)
			return 1;
		j = (j + 1) & (m->cap - 1);
	}
	char *k = malloc(len + 1);
	if (!k)
		return -1;
	memcpy(k, key, len);
	k[len] = 0;
	m->slot[j] = (struct tk_skey){.key = k, .len = (uint32_t)len, .val = val};
	m->count++;
	return 0;
}

int32_t tk_strmap_get(const tk_strmap *m, const char *key, size_t len)
{
	if (!m->cap)
		return -1;
	size_t j = tk_hash(key, len) & (m->cap - 1);
	while (m->slot[j].key) {
		if (m->slot[j].len == len && memcmp(m->slot[j].key, key, len) == 0)
			return m->slot[j].val;
		j = (j + 1) & (m->cap - 1);
	}
	return -1;
}

void tk_strmap_free(tk_strmap *m)
{
	for (size_t i = 0; i < m->cap; i++)
		free(m->slot[i].key);
	free(m->slot);
	m->slot = NULL;
	m->cap = m->count = 0;
}

static size_t pair_hash(uint64_t k)
{
	k ^= k >> 33;
	k *= 0xFF51AFD7ED558CCDULL;
	k ^= k >> 33;
	return (size_t)k;
}

static int pairmap_grow(tk_pairmap *m)
{
	size_t cap = m->cap ? m->cap * 2 : 64;
	struct tk_pslot *slot = malloc(cap * sizeof *slot);
	if (!slot)
		return -1;
	for (size_t i = 0; i < cap; i++)
		slot[i].key = UINT64_MAX;
	for (size_t i = 0; i < m->cap; i++) {
		if (m->slot[i].key == UINT64_MAX)
			continue;
		size_t j = pair_hash(m->slot[i].key) & (cap - 1);
		while (slot[j].key != UINT64_MAX)
			j = (j + 1) & (cap - 1);
		slot[j] = m->slot[i];
	}
	free(m->slot);
	m->slot = slot;
	m->cap = cap;
	return 0;
}

int tk_pairmap_put(tk_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t id)
{
	if ((m->count + 1) * 2 > m->cap && pairmap_grow(m))
		return -1;
	uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
	size_t j = pair_hash(key) & (m->cap - 1);
	while (m->slot[j].key != UINT64_MAX) {
		if (m->slot[j].key == key) { /* a repeated merge takes its later rank, as tokenizers' map does */
			m->slot[j].rank = rank;
			m->slot[j].id = id;
			return 1;
		}
		j = (j + 1) & (m->cap - 1);
	}
	m->slot[j] = (struct tk_pslot){.key = key, .rank = rank, .id = id};
	m->count++;
	return 0;
}

const struct tk_pslot *tk_pairmap_get(const tk_pairmap *m, int32_t a, int32_t b)
{
	if (!m->cap)
		return NULL;
	uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
	size_t j = pair_hash(key) & (m->cap - 1);
	while (m->slot[j].key != UINT64_MAX) {
		if (m->slot[j].key == key)
			return &m->slot[j];
		j = (j + 1) & (m->cap - 1);
	}
	return NULL;
}

void tk_pairmap_free(tk_pairmap *m)
{
	free(m->slot);
	m->slot = NULL;
	m->cap = m->count = 0;
}

/* ---- patterns ---- */

int tk_pattern_find(const tk_pattern *p, const char *s, size_t n, size_t from, size_t *ms, size_t *me,
                    pcre2_match_data *md, pcre2_match_context *mc, ms_error *err)
{
	if (p->lit) {
		if (!p->lit_len || from > n)
			return 0;
		const char *hit = memmem(s + from, n - from, p->lit, p->lit_len);
		if (!hit)
			return 0;
		*ms = (size_t)(hit - s);
		*me = *ms + p->lit_len;
		return 1;
	}
	/* the text is valid UTF-8 (cleaned on entry), so PCRE2 need not check it again at every call */
	int rc = pcre2_match(p->re, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, md, mc);
	if (rc == PCRE2_ERROR_NOMATCH)
		return 0;
	if (rc < 0) {
		PCRE2_UCHAR msg[256];
		pcre2_get_error_message(rc, msg, sizeof msg);
		ms_fail(err, MS_ERR_TOK_REGEX, "regex failed at byte %zu: %s", from, (const char *)msg);
		return -1;
	}
	PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
	*ms = ov[0];
	*me = ov[1];
	return 1;
}

void tk_pattern_free(tk_pattern *p)
{
	free(p->lit);
	if (p->re)
		pcre2_code_free(p->re);
	p->lit = NULL;
	p->re = NULL;
}

/* ---- pieces ---- */

int tk_pieces_add(tk_pieces *ps, const char *s, size_t len, int at_start)
{
	if (ps->n == ps->cap) {
		size_t cap = ps->cap ? ps->cap * 2 : 16;
		struct tk_piece *p = realloc(ps->p, cap * sizeof *p);
		if (!p)
			return -1;
		ps->p = p;
		ps->cap = cap;
	}
	size_t off = ps->text.n;
	if (tk_buf_add(&ps->text, s, len))
		return -1;
	ps->p[ps->n++] = (struct tk_piece){.off = off, .len = len, .at_start = at_start};
	return 0;
}

void tk_pieces_clear(tk_pieces *ps)
{
	ps->n = 0;
	ps->text.n = 0;
}

void tk_pieces_free(tk_pieces *ps)
{
	tk_buf_free(&ps->text);
	free(ps->p);
	ps->p = NULL;
	ps->n = ps->cap = 0;
}
