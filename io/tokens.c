#include "io/tokens.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A growing array of int32 or int64. */
static int grow(void **v, int64_t *cap, int64_t need, size_t size)
{
	if (need <= *cap)
		return 0;
	int64_t n = *cap ? *cap * 2 : 1024;
	while (n < need)
		n *= 2;
	void *p = realloc(*v, (size_t)n * size);
	if (!p)
		return -1;
	*v = p;
	*cap = n;
	return 0;
}

typedef struct {
	const char *path;
	int vocab, seq_len;
	int64_t max_tokens;
	tok_set *s;
	int64_t cap_ids, cap_seq;
	int64_t in_seq;          /* tokens of the current piece so far */
	ms_error *err;
} reader;

static ms_status start_seq(reader *r)
{
	tok_set *s = r->s;
	if (grow((void **)&s->seq_start, &r->cap_seq, (int64_t)s->n_seq + 2, sizeof *s->seq_start) != 0)
		return ms_fail(r->err, MS_ERR_NOMEM, "%s: out of memory", r->path);
	s->n_seq++;
	s->seq_start[s->n_seq] = s->T;
	r->in_seq = 0;
	return MS_OK;
}

static ms_status add_id(reader *r, int32_t id)
{
	tok_set *s = r->s;
	if (r->in_seq == r->seq_len) {
		ms_status st = start_seq(r);
		if (st != MS_OK)
			return st;
	}
	if (grow((void **)&s->ids, &r->cap_ids, s->T + 1, sizeof *s->ids) != 0)
		return ms_fail(r->err, MS_ERR_NOMEM, "%s: out of memory", r->path);
	s->ids[s->T++] = id;
	s->seq_start[s->n_seq] = s->T;
	r->in_seq++;
	return MS_OK;
}

/* Shows at most 24 bytes of a bad field, control bytes as '?'. */
static void shown(char *dst, const char *src, size_t n)
{
	size_t i = 0;
	for (; i < n && i < 24; i++)
		dst[i] = (unsigned char)src[i] < 0x20 || src[i] == 0x7f ? '?' : src[i];
	dst[i] = '\0';
}

static ms_status parse_line(reader *r, const char *line, size_t len, long lineno)
{
	int started = 0;
	for (size_t i = 0; i < len && (r->max_tokens <= 0 || r->s->T < r->max_tokens);) {
		if (strchr(" \t\r,", line[i])) {
			i++;
			continue;
		}
		size_t j = i;
		while (j < len && !strchr(" \t\r,", line[j]))
			j++;
		long long v = 0;
		int ok = j - i <= 12;
		for (size_t k = i; ok && k < j; k++) {
			ok = line[k] >= '0' && line[k] <= '9';
			v = v * 10 + (line[k] - '0');
		}
		char text[32];
		shown(text, line + i, j - i);
		if (!ok)
			return ms_fail(r->err, MS_ERR_ARG, "%s: line %ld, column %zu: '%s' is not a token id (decimal ids "
				       "separated by spaces or commas)", r->path, lineno, i + 1, text);
		if (v >= r->vocab)
			return ms_fail(r->err, MS_ERR_ARG, "%s: line %ld, column %zu: token id %lld is outside the "
				       "vocabulary (0..%d)", r->path, lineno, i + 1, v, r->vocab - 1);
		ms_status st = started ? MS_OK : start_seq(r);
		started = 1;
		if (st == MS_OK)
			st = add_id(r, (int32_t)v);
		if (st != MS_OK)
			return st;
		i = j;
	}
	return MS_OK;
}

ms_status tokset_read_ids(const char *path, int vocab, int seq_len, int64_t max_tokens, tok_set *out, ms_error *err)
{
	memset(out, 0, sizeof *out);
	if (vocab <= 0 || seq_len <= 0)
		return ms_fail(err, MS_ERR_ARG, "%s: no vocabulary or sequence length", path);
	FILE *f = fopen(path, "rb");
	if (!f)
		return ms_fail(err, MS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
	reader r = {.path = path, .vocab = vocab, .seq_len = seq_len, .max_tokens = max_tokens, .s = out,
		    .err = err};
	ms_status st = grow((void **)&out->seq_start, &r.cap_seq, 1, sizeof *out->seq_start) == 0
			       ? MS_OK : ms_fail(err, MS_ERR_NOMEM, "%s: out of memory", path);
	if (st == MS_OK)
		out->seq_start[0] = 0;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	long lineno = 0;
	while (st == MS_OK && (n = getline(&line, &cap, f)) >= 0) {
		lineno++;
		if (memchr(line, '\0', (size_t)n))
			st = ms_fail(err, MS_ERR_ARG, "%s: line %ld: a NUL byte (not a text file of token ids)", path, lineno);
		else
			st = parse_line(&r, line, (size_t)n - (n > 0 && line[n - 1] == '\n'), lineno);
	}
	if (st == MS_OK && ferror(f))
		st = ms_fail(err, MS_ERR_IO, "%s: read error", path);
	free(line);
	fclose(f);
	if (st == MS_OK && out->T == 0)
		st = ms_fail(err, MS_ERR_ARG, "%s: no token ids (decimal ids, one sequence per line)", path);
	if (st != MS_OK)
		tokset_free(out);
	return st;
}

ms_status tokset_from_ids(const char *name, const int32_t *ids, int64_t n, int vocab, int seq_len,
			  int64_t max_tokens, tok_set *out, ms_error *err)
{
	memset(out, 0, sizeof *out);
	if (vocab <= 0 || seq_len <= 0 || n < 0 || (n > 0 && !ids))
		return ms_fail(err, MS_ERR_ARG, "%s: no vocabulary, sequence length or ids", name);
	if (n == 0)
		return ms_fail(err, MS_ERR_ARG, "%s: no tokens (an empty text)", name);
	reader r = {.path = name, .vocab = vocab, .seq_len = seq_len, .max_tokens = max_tokens, .s = out, .err = err};
	ms_status st = grow((void **)&out->seq_start, &r.cap_seq, 1, sizeof *out->seq_start) == 0
			       ? MS_OK : ms_fail(err, MS_ERR_NOMEM, "%s: out of memory", name);
	if (st == MS_OK) {
		out->seq_start[0] = 0;
		st = start_seq(&r);
	}
	for (int64_t i = 0; st == MS_OK && i < n && (max_tokens <= 0 || out->T < max_tokens); i++) {
		if (ids[i] < 0 || ids[i] >= vocab)
			st = ms_fail(err, MS_ERR_ARG, "%s: token %lld: id %d is outside the model's vocabulary (0..%d)", name,
				     (long long)i, (int)ids[i], vocab - 1);
		else
			st = add_id(&r, ids[i]);
	}
	if (st != MS_OK)
		tokset_free(out);
	return st;
}

void tokset_free(tok_set *s)
{
	if (!s)
		return;
	free(s->ids);
	free(s->seq_start);
	memset(s, 0, sizeof *s);
}
