/* The BPE model: one pre-tokenized word to ids. Symbols start as the word's characters (unknown ones become
 * byte-fallback tokens or the unknown token), sit in a linked list, and the candidate pairs wait in a binary
 * heap ordered by merge rank, then position; merging takes O(n log n) for a word of n characters. Results are
 * cached per word. */
#include <stdlib.h>
#include <string.h>

#include "text/tok_internal.h"

/* The cache is dropped whole when it holds this many words (a bound on memory, not a tuning knob). */
#define CACHE_WORDS 65536
/* Words longer than this are not cached. */
#define CACHE_MAX_LEN 256

static ms_status nomem(ms_error *err)
{
	return ms_fail(err, MS_ERR_NOMEM, "tokenizer: out of memory merging a word");
}

static int cand_less(const struct tk_cand *a, const struct tk_cand *b)
{
	return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(struct tk_cand *h, size_t *n, struct tk_cand c)
{
	size_t i = (*n)++;
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (!cand_less(&c, &h[p]))
			break;
		h[i] = h[p];
		i = p;
	}
	h[i] = c;
}

static struct tk_cand heap_pop(struct tk_cand *h, size_t *n)
{
	struct tk_cand top = h[0], last = h[--*n];
	size_t i = 0;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= *n)
			break;
		if (c + 1 < *n && cand_less(&h[c + 1], &h[c]))
			c++;
		if (!cand_less(&h[c], &last))
			break;
		h[i] = h[c];
		i = c;
	}
	h[i] = last;
	return top;
}

/* Adds the candidate merge of symbol i with its successor, when the pair has a merge. */
static void try_pair(tk_bpe *m, size_t *nh, int32_t i)
{
	int32_t j = m->sym[i].next;
	if (j < 0)
		return;
	const struct tk_pslot *ps = tk_pairmap_get(&m->merges, m->sym[i].id, m->sym[j].id);
	if (ps)
		heap_push(m->heap, nh, (struct tk_cand){.rank = ps->rank, .pos = i, .id = ps->id});
}

static int push_sym(tk_bpe *m, size_t *ns, int32_t id, uint32_t len)
{
	if (*ns == m->sym_cap) {
		size_t cap = m->sym_cap ? 2 * m->sym_cap : 64;
		struct tk_sym *s = realloc(m->sym, cap * sizeof *s);
		if (!s)
			return -1;
		m->sym = s;
		m->sym_cap = cap;
	}
	int32_t i = (int32_t)*ns;
	m->sym[i] = (struct tk_sym){.id = id, .prev = i - 1, .next = -1, .len = len};
	if (i > 0)
		m->sym[i - 1].next = i;
	(*ns)++;
	return 0;
}

/* The word's characters as initial symbols; returns the count, or -1 out of memory. */
static long initial_symbols(tk_bpe *m, const char *w, size_t n)
{
	size_t ns = 0;
	int prev_unk = 0;
	for (size_t i = 0; i < n;) {
		size_t l = tk_utf8_len((const unsigned char *)w + i, n - i);
		if (!l)
			l = 1; /* cannot happen for cleaned text; keeps the loop finite */
		int32_t id = tk_strmap_get(&m->vocab, w + i, l);
		if (id >= 0) {
			if (push_sym(m, &ns, id, (uint32_t)l))
				return -1;
			prev_unk = 0;
		} else {
			int all_bytes = m->byte_fallback;
			for (size_t k = 0; k < l && all_bytes; k++)
				all_bytes = m->byte_id[(unsigned char)w[i + k]] >= 0;
			if (all_bytes) {
				for (size_t k = 0; k < l; k++)
					if (push_sym(m, &ns, m->byte_id[(unsigned char)w[i + k]], 1))
						return -1;
				prev_unk = 0;
			} else if (m->unk_id >= 0) {
				if (m->fuse_unk && prev_unk)
					m->sym[ns - 1].len += (uint32_t)l;
				else if (push_sym(m, &ns, m->unk_id, (uint32_t)l))
					return -1;
				prev_unk = 1;
			}
			/* without an unknown token the character is dropped, as tokenizers does */
		}
		i += l;
	}
	return (long)ns;
}

static ms_status merge_word(tk_bpe *m, const char *w, size_t n, tk_buf *ids, ms_error *err)
{
	long ns = initial_symbols(m, w, n);
	if (ns < 0)
		return nomem(err);
	/* at most one live candidate per symbol is pushed per merge (two new pairs replace one), so the heap never
	 * holds more than the initial pairs plus twice the merges: under 3 n */
	if ((size_t)ns * 3 > m->heap_cap) {
		struct tk_cand *h = realloc(m->heap, (size_t)ns * 3 * sizeof *h);
		if (!h)
			return nomem(err);
		m->heap = h;
		m->heap_cap = (size_t)ns * 3;
	}
	size_t nh = 0;
	for (int32_t i = 0; i + 1 < ns; i++)
		try_pair(m, &nh, i);
	while (nh) {
		struct tk_cand c = heap_pop(m->heap, &nh);
		struct tk_sym *a = &m->sym[c.pos];
		if (!a->len || a->next < 0)
			continue;
		struct tk_sym *b = &m->sym[a->next];
		const struct tk_pslot *ps = tk_pairmap_get(&m->merges, a->id, b->id);
		if (!ps || ps->id != c.id || ps->rank != c.rank)
			continue; /* stale: one side merged since this candidate was queued */
		a->id = c.id;
		a->len += b->len;
		b->len = 0;
		a->next = b->next;
		if (b->next >= 0)
			m->sym[b->next].prev = c.pos;
		if (a->prev >= 0)
			try_pair(m, &nh, a->prev);
		try_pair(m, &nh, c.pos);
	}
	for (int32_t i = 0; i >= 0 && i < ns; i = m->sym[i].next)
		if (tk_buf_add(ids, &m->sym[i].id, sizeof(int32_t)))
			return nomem(err);
	return MS_OK;
}

static void cache_clear(tk_bpe *m)
{
	tk_strmap_free(&m->cache);
	m->cache_n = 0;
}

/* Remembers the ids from ids->s + start (bytes) for word w. Failure to cache is not an error. */
static void cache_put(tk_bpe *m, const char *w, size_t n, const tk_buf *ids, size_t start)
{
	size_t k = (ids->n - start) / sizeof(int32_t);
	if (n > CACHE_MAX_LEN)
		return;
	if (m->cache.count >= CACHE_WORDS)
		cache_clear(m);
	if (m->cache_n + k + 1 > m->cache_cap) {
		size_t cap = m->cache_cap ? 2 * m->cache_cap : 4096;
		while (cap < m->cache_n + k + 1)
			cap *= 2;
		int32_t *c = realloc(m->cache_ids, cap * sizeof *c);
		if (!c)
			return;
		m->cache_ids = c;
		m->cache_cap = cap;
	}
	if (tk_strmap_put(&m->cache, w, n, (int32_t)m->cache_n) != 0)
		return;
	m->cache_ids[m->cache_n] = (int32_t)k;
	if (k)
		memcpy(m->cache_ids + m->cache_n + 1, ids->s + start, k * sizeof(int32_t));
	m->cache_n += k + 1;
}

ms_status tk_bpe_word(tok_tokenizer *t, const char *w, size_t n, tk_buf *ids, ms_error *err)
{
	tk_bpe *m = &t->bpe;
	if (!n)
		return MS_OK;
	if (m->ignore_merges) {
		int32_t id = tk_strmap_get(&m->vocab, w, n);
		if (id >= 0)
			return tk_buf_add(ids, &id, sizeof id) ? nomem(err) : MS_OK;
	}
	if (n <= CACHE_MAX_LEN) {
		int32_t at = tk_strmap_get(&m->cache, w, n);
		if (at >= 0)
			return tk_buf_add(ids, m->cache_ids + at + 1, (size_t)m->cache_ids[at] * sizeof(int32_t)) ? nomem(err)
			                                                                                         : MS_OK;
	}
	size_t start = ids->n;
	ms_status rc = merge_word(m, w, n, ids, err);
	if (rc == MS_OK)
		cache_put(m, w, n, ids, start);
	return rc;
}

void tk_bpe_free(tk_bpe *m)
{
	tk_strmap_free(&m->vocab);
	tk_pairmap_free(&m->merges);
	tk_strmap_free(&m->cache);
	free(m->cache_ids);
	free(m->sym);
	free(m->heap);
}
