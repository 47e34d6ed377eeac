/* Text-preserving JSON edits (io/jsonedit.h): a strict tokenizer over the original bytes finds the span of the
 * member an edit addresses; the edit splices new text into that span and the result is checked again whole. */
#include "io/jsonedit.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NONE ((size_t)-1)

struct jedit {
	char *name;
	char *text;   /* [len + 1], NUL-terminated */
	size_t len;
};

/* One pass over a text: checks it and, when a path is given, records where the member and the object it
 * addresses lie. */
typedef struct {
	const char *s;
	size_t len, pos;
	const char *name;
	ms_error *err;
	const char *const *path;
	int n;
	/* the member at path */
	int found;
	size_t key_start, key_end, val_start, val_end;
	size_t prev_end;       /* end of the value before it in its object, or NONE */
	size_t next_key;       /* start of the key after it, or NONE */
	/* the object holding the member at path (whether that member exists or not) */
	int obj_found;
	int obj_members;
	size_t obj_open, obj_last_end, first_key, first_key_end, first_val;
} scan;

/* ---- messages ------------------------------------------------------------------------------------------------ */

static void position(const char *s, size_t at, int *line, int *col)
{
	*line = 1;
	*col = 1;
	for (size_t i = 0; i < at; i++) {
		if (s[i] == '\n') {
			(*line)++;
			*col = 1;
		} else {
			(*col)++;
		}
	}
}

static ms_status fail_at(scan *p, size_t at, const char *what)
{
	int line, col;
	position(p->s, at < p->len ? at : p->len, &line, &col);
	return ms_fail(p->err, MS_ERR_CFG_JSON, "%s: line %d column %d: %s", p->name, line, col, what);
}

/* A decoded key as a message may show it: at most 40 bytes, control bytes and quotes as '?'. */
static void printable_key(char *dst, size_t cap, const char *key, size_t n)
{
	size_t i = 0;
	for (; i < n && i + 1 < cap && i < 40; i++)
		dst[i] = (unsigned char)key[i] < 0x20 || key[i] == 0x7f || key[i] == '\'' ? '?' : key[i];
	dst[i] = '\0';
}

/* ---- tokens -------------------------------------------------------------------------------------------------- */

static void skip_ws(scan *p)
{
	while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' || p->s[p->pos] == '\n' ||
				   p->s[p->pos] == '\r'))
		p->pos++;
}

static int hex4(const char *s, unsigned *out)
{
	unsigned v = 0;
	for (int i = 0; i < 4; i++) {
		char c = s[i];
		unsigned d = c >= '0' && c <= '9' ? (unsigned)(c - '0')
			     : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
			     : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10) : 16u;
		if (d == 16)
			return 0;
		v = v * 16 + d;
	}
	*out = v;
	return 1;
}

/* Appends code point cp as UTF-8 (a lone surrogate as its 3-byte pattern, so that it compares equal only to
 * itself, as a Python str does). */
static size_t put_utf8(char *out, unsigned cp)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xc0 | (cp >> 6));
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xe0 | (cp >> 12));
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		out[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | (cp >> 18));
	out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	out[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* The string at pos ('"'): checked, and decoded into out when out is not NULL (the decoded text is never longer
 * than the raw one, so out needs the raw length). *n gets the decoded length. */
static ms_status string_token(scan *p, char *out, size_t *n)
{
	const size_t start = p->pos;
	size_t k = 0;
	p->pos++;
	for (;;) {
		if (p->pos >= p->len)
			return fail_at(p, start, "string not closed");
		unsigned char c = (unsigned char)p->s[p->pos];
		if (c == '"') {
			p->pos++;
			break;
		}
		if (c < 0x20)
			return fail_at(p, p->pos, "control character inside a string (write it as an escape)");
		if (c != '\\') {
			if (out)
				out[k] = (char)c;
			k++;
			p->pos++;
			continue;
		}
		if (p->pos + 1 >= p->len)
			return fail_at(p, p->pos, "string not closed");
		const char e = p->s[p->pos + 1];
		const char *simple = strchr("\"\\/bfnrt", e);
		if (e && simple) {
			static const char decoded[] = "\"\\/\b\f\n\r\t";
			if (out)
				out[k] = decoded[simple - "\"\\/bfnrt"];
			k++;
			p->pos += 2;
			continue;
		}
		unsigned cp;
		if (e != 'u' || p->pos + 6 > p->len || !hex4(p->s + p->pos + 2, &cp))
			return fail_at(p, p->pos, "invalid escape in a string");
		p->pos += 6;
		unsigned lo;
		if (cp >= 0xd800 && cp < 0xdc00 && p->pos + 6 <= p->len && p->s[p->pos] == '\\' &&
		    p->s[p->pos + 1] == 'u' && hex4(p->s + p->pos + 2, &lo) && lo >= 0xdc00 && lo < 0xe000) {
			cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
			p->pos += 6;
		}
		char buf[4];
		size_t m = put_utf8(out ? out + k : buf, cp);
		k += m;
	}
	*n = k;
	return MS_OK;
}

static int digit(const scan *p)
{
	return p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9';
}

/* -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)? */
static ms_status number_token(scan *p)
{
	const size_t start = p->pos;
	if (p->s[p->pos] == '-')
		p->pos++;
	if (!digit(p))
		return fail_at(p, start, "invalid number");
	if (p->s[p->pos] == '0') {
		p->pos++;
		if (digit(p))
			return fail_at(p, start, "invalid number (leading zero)");
	} else {
		while (digit(p))
			p->pos++;
	}
	if (p->pos < p->len && p->s[p->pos] == '.') {
		p->pos++;
		if (!digit(p))
			return fail_at(p, start, "invalid number (no digit after the point)");
		while (digit(p))
			p->pos++;
	}
	if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
		p->pos++;
		if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-'))
			p->pos++;
		if (!digit(p))
			return fail_at(p, start, "invalid number (no digit in the exponent)");
		while (digit(p))
			p->pos++;
	}
	return MS_OK;
}

static ms_status literal_token(scan *p)
{
	static const char *const words[] = {"true", "false", "null"};
	for (int i = 0; i < 3; i++) {
		size_t n = strlen(words[i]);
		if (p->len - p->pos >= n && memcmp(p->s + p->pos, words[i], n) == 0) {
			p->pos += n;
			return MS_OK;
		}
	}
	return fail_at(p, p->pos, "unexpected character (expected a JSON value)");
}

/* ---- duplicate keys ------------------------------------------------------------------------------------------ */

typedef struct {
	uint64_t hash;
	size_t off, n;     /* the decoded key: offset in the object's arena, length */
	const char *key;   /* arena + off, set once the arena stops growing */
	size_t pos;        /* where the key starts in the text */
} key_entry;

typedef struct {
	key_entry *v;
	size_t count, cap;
	char *arena;       /* decoded keys back to back */
	size_t used, arena_cap;
} key_set;

static uint64_t fnv1a(const char *s, size_t n)
{
	uint64_t h = 1469598103934665603ULL;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
	return h;
}

static int cmp_keys(const void *a, const void *b)
{
	const key_entry *x = a, *y = b;
	if (x->hash != y->hash)
		return x->hash < y->hash ? -1 : 1;
	if (x->n != y->n)
		return x->n < y->n ? -1 : 1;
	int c = memcmp(x->key, y->key, x->n);
	if (c)
		return c;
	return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/* Bytes of the string at pos up to its closing quote or the end of the text: room enough for its decoding. */
static size_t raw_length(const scan *p)
{
	size_t i = p->pos + 1;
	while (i < p->len && p->s[i] != '"')
		i += p->s[i] == '\\' ? 2 : 1;
	return i - p->pos;
}

/* Room for a key of raw length n in the arena; offsets (not pointers) are kept until the arena stops growing. */
static char *key_room(key_set *ks, size_t n)
{
	if (ks->used + n > ks->arena_cap) {
		size_t cap = ks->arena_cap ? ks->arena_cap : 256;
		while (cap < ks->used + n)
			cap *= 2;
		char *a = realloc(ks->arena, cap);
		if (!a)
			return NULL;
		ks->arena = a;
		ks->arena_cap = cap;
	}
	return ks->arena + ks->used;
}

static ms_status check_duplicates(scan *p, key_set *ks)
{
	if (ks->count < 2)
		return MS_OK;
	for (size_t i = 0; i < ks->count; i++)
		ks->v[i].key = ks->arena + ks->v[i].off;
	qsort(ks->v, ks->count, sizeof *ks->v, cmp_keys);
	for (size_t i = 1; i < ks->count; i++) {
		const key_entry *a = &ks->v[i - 1], *b = &ks->v[i];
		if (a->hash != b->hash || a->n != b->n || memcmp(a->key, b->key, a->n) != 0)
			continue;
		char shown[48], what[160];
		int line, col;
		printable_key(shown, sizeof shown, a->key, a->n);
		position(p->s, a->pos, &line, &col);
		snprintf(what, sizeof what, "key '%s' appears twice in one object (first at line %d column %d)", shown,
			 line, col);
		return fail_at(p, b->pos, what);
	}
	return MS_OK;
}

/* ---- values -------------------------------------------------------------------------------------------------- */

static ms_status value(scan *p, int depth, int level);

static int path_key_is(const scan *p, int level, const char *key, size_t n)
{
	return level >= 0 && level < p->n && strlen(p->path[level]) == n && memcmp(p->path[level], key, n) == 0;
}

/* An object at pos ('{'). level: how many keys of the path lead to it (-1: it is off the path). */
static ms_status object(scan *p, int depth, int level)
{
	const size_t open = p->pos;
	key_set ks = {0};
	ms_status st = MS_OK;
	size_t last_end = NONE;
	int members = 0, want_next = 0;
	p->pos++;
	skip_ws(p);
	if (p->pos < p->len && p->s[p->pos] == '}') {
		p->pos++;
	} else {
		for (;;) {
			skip_ws(p);
			if (p->pos >= p->len || p->s[p->pos] != '"') {
				st = fail_at(p, p->pos, "expected a key (a string)");
				break;
			}
			const size_t key_start = p->pos;
			if (want_next) {
				p->next_key = key_start;
				want_next = 0;
			}
			char *room = key_room(&ks, raw_length(p));
			size_t n = 0;
			if (!room) {
				st = ms_fail(p->err, MS_ERR_NOMEM, "%s: out of memory", p->name);
				break;
			}
			st = string_token(p, room, &n);
			if (st != MS_OK)
				break;
			if (ks.count == ks.cap) {
				size_t cap = ks.cap ? ks.cap * 2 : 16;
				key_entry *v = realloc(ks.v, cap * sizeof *v);
				if (!v) {
					st = ms_fail(p->err, MS_ERR_NOMEM, "%s: out of memory", p->name);
					break;
				}
				ks.v = v;
				ks.cap = cap;
			}
			ks.v[ks.count++] = (key_entry){.hash = fnv1a(room, n), .off = ks.used, .n = n, .pos = key_start};
			const int on_path = path_key_is(p, level, room, n);
			ks.used += n;
			const size_t key_end = p->pos;
			skip_ws(p);
			if (p->pos >= p->len || p->s[p->pos] != ':') {
				st = fail_at(p, p->pos, "expected ':' after a key");
				break;
			}
			p->pos++;
			skip_ws(p);
			const size_t val_start = p->pos;
			st = value(p, depth + 1, on_path ? level + 1 : -1);
			if (st != MS_OK)
				break;
			if (members == 0) {
				if (level >= 0 && level == p->n - 1) {
					p->first_key = key_start;
					p->first_key_end = key_end;
					p->first_val = val_start;
				}
			}
			if (on_path && level + 1 == p->n) {
				p->found = 1;
				p->key_start = key_start;
				p->key_end = key_end;
				p->val_start = val_start;
				p->val_end = p->pos;
				p->prev_end = last_end;
				p->next_key = NONE;
				want_next = 1;
			}
			last_end = p->pos;
			members++;
			skip_ws(p);
			if (p->pos < p->len && p->s[p->pos] == ',') {
				p->pos++;
				continue;
			}
			if (p->pos < p->len && p->s[p->pos] == '}') {
				p->pos++;
				break;
			}
			st = fail_at(p, p->pos, "expected ',' or '}' in an object");
			break;
		}
	}
	if (st == MS_OK)
		st = check_duplicates(p, &ks);
	if (st == MS_OK && level >= 0 && level == p->n - 1) {
		p->obj_found = 1;
		p->obj_open = open;
		p->obj_members = members;
		p->obj_last_end = last_end;
	}
	free(ks.v);
	free(ks.arena);
	return st;
}

static ms_status array(scan *p, int depth)
{
	p->pos++;
	skip_ws(p);
	if (p->pos < p->len && p->s[p->pos] == ']') {
		p->pos++;
		return MS_OK;
	}
	for (;;) {
		skip_ws(p);
		ms_status st = value(p, depth + 1, -1);
		if (st != MS_OK)
			return st;
		skip_ws(p);
		if (p->pos < p->len && p->s[p->pos] == ',') {
			p->pos++;
			continue;
		}
		if (p->pos < p->len && p->s[p->pos] == ']') {
			p->pos++;
			return MS_OK;
		}
		return fail_at(p, p->pos, "expected ',' or ']' in an array");
	}
}

static ms_status value(scan *p, int depth, int level)
{
	if (depth > JEDIT_MAX_DEPTH)
		return fail_at(p, p->pos, "nested deeper than 256 levels");
	if (p->pos >= p->len)
		return fail_at(p, p->pos, "unexpected end (expected a JSON value)");
	const char c = p->s[p->pos];
	size_t n;
	if (c == '{')
		return object(p, depth, level);
	if (c == '[')
		return array(p, depth);
	if (c == '"')
		return string_token(p, NULL, &n);
	if (c == '-' || (c >= '0' && c <= '9'))
		return number_token(p);
	return literal_token(p);
}

/* Checks s [len] as one object (top = 1) or one value, recording what path addresses. */
static ms_status run_scan(scan *p, const char *name, const char *s, size_t len, int top, const char *const *path,
			  int n, ms_error *err)
{
	*p = (scan){.s = s, .len = len, .name = name, .err = err, .path = path, .n = path ? n : -1,
		    .prev_end = NONE, .next_key = NONE};
	skip_ws(p);
	if (p->pos >= len)
		return fail_at(p, p->pos, "empty document");
	if (top && s[p->pos] != '{')
		return fail_at(p, p->pos, "not a JSON object");
	ms_status st = value(p, 0, 0);
	if (st != MS_OK)
		return st;
	skip_ws(p);
	return p->pos < len ? fail_at(p, p->pos, "text after the JSON value") : MS_OK;
}

/* ---- public -------------------------------------------------------------------------------------------------- */

ms_status jedit_parse(const char *name, const char *text, size_t len, jedit **out, ms_error *err)
{
	*out = NULL;
	scan p;
	ms_status st = run_scan(&p, name, text, len, 1, NULL, 0, err);
	if (st != MS_OK)
		return st;
	jedit *d = calloc(1, sizeof *d);
	char *copy = malloc(len + 1), *nm = strdup(name);
	if (!d || !copy || !nm) {
		free(d);
		free(copy);
		free(nm);
		return ms_fail(err, MS_ERR_NOMEM, "%s: out of memory", name);
	}
	memcpy(copy, text, len);
	copy[len] = '\0';
	d->text = copy;
	d->len = len;
	d->name = nm;
	*out = d;
	return MS_OK;
}

void jedit_free(jedit *d)
{
	if (!d)
		return;
	free(d->text);
	free(d->name);
	free(d);
}

const char *jedit_text(const jedit *d, size_t *len)
{
	*len = d->len;
	return d->text;
}

static ms_status locate(const jedit *d, const char *const *path, int n, scan *p, ms_error *err)
{
	if (n < 0 || n > JEDIT_MAX_DEPTH)
		return ms_fail(err, MS_ERR_ARG, "%s: path of %d keys", d->name, n);
	return run_scan(p, d->name, d->text, d->len, 1, path, n, err);
}

int jedit_find(const jedit *d, const char *const *path, int n, size_t *start, size_t *end)
{
	scan p;
	if (n < 1 || locate(d, path, n, &p, NULL) != MS_OK || !p.found)
		return 0;
	*start = p.val_start;
	*end = p.val_end;
	return 1;
}

/* Replaces bytes [from, to) of the text by the pieces given, then checks the result; the document changes only
 * when it is valid. */
static ms_status splice(jedit *d, size_t from, size_t to, const char *const *pieces, int count, ms_error *err)
{
	size_t add = 0;
	for (int i = 0; i < count; i++)
		add += strlen(pieces[i]);
	const size_t len = d->len - (to - from) + add;
	char *t = malloc(len + 1);
	if (!t)
		return ms_fail(err, MS_ERR_NOMEM, "%s: out of memory", d->name);
	memcpy(t, d->text, from);
	size_t k = from;
	for (int i = 0; i < count; i++) {
		size_t m = strlen(pieces[i]);
		memcpy(t + k, pieces[i], m);
		k += m;
	}
	memcpy(t + k, d->text + to, d->len - to);
	t[len] = '\0';
	scan p;
	ms_status st = run_scan(&p, d->name, t, len, 1, NULL, 0, err);
	if (st != MS_OK) {
		free(t);
		return st;
	}
	free(d->text);
	d->text = t;
	d->len = len;
	return MS_OK;
}

/* "a.b.c" for messages. */
static void path_text(char *buf, size_t cap, const char *const *path, int n)
{
	size_t used = 0;
	buf[0] = '\0';
	for (int i = 0; i < n && used < cap; i++)
		used += (size_t)snprintf(buf + used, cap - used, "%s%s", i ? "." : "", path[i]);
}

static ms_status check_value(const jedit *d, const char *what, const char *v, ms_error *err)
{
	char name[600];
	snprintf(name, sizeof name, "%s: new value of '%s'", d->name, what);
	scan p;
	return run_scan(&p, name, v, strlen(v), 0, NULL, 0, err);
}

ms_status jedit_set(jedit *d, const char *const *path, int n, const char *v, ms_error *err)
{
	char where[512];
	path_text(where, sizeof where, path, n);
	scan p;
	ms_status st = n >= 1 ? locate(d, path, n, &p, err) : ms_fail(err, MS_ERR_ARG, "%s: empty path", d->name);
	if (st == MS_OK && !p.found)
		st = ms_fail(err, MS_ERR_ARG, "%s: no member '%s'", d->name, where);
	if (st == MS_OK)
		st = check_value(d, where, v, err);
	return st == MS_OK ? splice(d, p.val_start, p.val_end, &v, 1, err) : st;
}

/* key as a JSON string: quotes, backslashes and control characters escaped. NULL when out of memory. */
static char *quote(const char *key)
{
	size_t n = strlen(key);
	char *q = malloc(6 * n + 3), *o = q;
	if (!q)
		return NULL;
	*o++ = '"';
	for (const unsigned char *s = (const unsigned char *)key; *s; s++) {
		if (*s == '"' || *s == '\\') {
			*o++ = '\\';
			*o++ = (char)*s;
		} else if (*s < 0x20) {
			o += sprintf(o, "\\u%04x", *s);
		} else {
			*o++ = (char)*s;
		}
	}
	*o++ = '"';
	*o = '\0';
	return q;
}

ms_status jedit_add(jedit *d, const char *const *path, int n, const char *key, const char *v, ms_error *err)
{
	const char *full[JEDIT_MAX_DEPTH + 1];
	char where[512];
	if (n < 0 || n >= JEDIT_MAX_DEPTH)
		return ms_fail(err, MS_ERR_ARG, "%s: path of %d keys", d->name, n);
	for (int i = 0; i < n; i++)
		full[i] = path[i];
	full[n] = key;
	path_text(where, sizeof where, full, n + 1);
	scan p;
	ms_status st = locate(d, full, n + 1, &p, err);
	if (st == MS_OK && p.found)
		st = ms_fail(err, MS_ERR_ARG, "%s: member '%s' exists already", d->name, where);
	if (st == MS_OK && !p.obj_found)
		st = ms_fail(err, MS_ERR_ARG, "%s: '%s' is not inside an object", d->name, where);
	if (st == MS_OK)
		st = check_value(d, where, v, err);
	if (st != MS_OK)
		return st;
	char *q = quote(key);
	if (!q)
		return ms_fail(err, MS_ERR_NOMEM, "%s: out of memory", d->name);
	if (p.obj_members == 0) {
		const char *pieces[] = {q, ": ", v};
		st = splice(d, p.obj_open + 1, p.obj_open + 1, pieces, 3, err);
	} else {
		/* after the last member, spaced as the first: its indentation, its key-to-value separator */
		char *lead = strndup(d->text + p.obj_open + 1, p.first_key - p.obj_open - 1);
		char *sep = strndup(d->text + p.first_key_end, p.first_val - p.first_key_end);
		const char *pieces[] = {",", lead, q, sep, v};
		st = lead && sep ? splice(d, p.obj_last_end, p.obj_last_end, pieces, 5, err)
				 : ms_fail(err, MS_ERR_NOMEM, "%s: out of memory", d->name);
		free(lead);
		free(sep);
	}
	free(q);
	return st;
}

ms_status jedit_remove(jedit *d, const char *const *path, int n, ms_error *err)
{
	char where[512];
	path_text(where, sizeof where, path, n);
	scan p;
	ms_status st = n >= 1 ? locate(d, path, n, &p, err) : ms_fail(err, MS_ERR_ARG, "%s: empty path", d->name);
	if (st == MS_OK && !p.found)
		st = ms_fail(err, MS_ERR_ARG, "%s: no member '%s'", d->name, where);
	if (st != MS_OK)
		return st;
	if (p.prev_end != NONE)   /* from the end of the member before: its comma goes with this one */
		return splice(d, p.prev_end, p.val_end, NULL, 0, err);
	if (p.next_key != NONE)   /* the first of several: up to the next key */
		return splice(d, p.key_start, p.next_key, NULL, 0, err);
	return splice(d, p.key_start, p.val_end, NULL, 0, err);
}

ms_status jedit_rename(jedit *d, const char *const *path, int n, const char *key, ms_error *err)
{
	const char *full[JEDIT_MAX_DEPTH];
	char where[512];
	path_text(where, sizeof where, path, n);
	if (n < 1 || n > JEDIT_MAX_DEPTH)
		return ms_fail(err, MS_ERR_ARG, "%s: path of %d keys", d->name, n);
	scan p;
	for (int i = 0; i < n - 1; i++)
		full[i] = path[i];
	full[n - 1] = key;
	ms_status st = locate(d, full, n, &p, err);
	if (st == MS_OK && p.found)
		st = ms_fail(err, MS_ERR_ARG, "%s: renaming '%s': key '%s' exists already", d->name, where, key);
	if (st == MS_OK)
		st = locate(d, path, n, &p, err);
	if (st == MS_OK && !p.found)
		st = ms_fail(err, MS_ERR_ARG, "%s: no member '%s'", d->name, where);
	if (st != MS_OK)
		return st;
	char *q = quote(key);
	if (!q)
		return ms_fail(err, MS_ERR_NOMEM, "%s: out of memory", d->name);
	const char *pieces[] = {q};
	st = splice(d, p.key_start, p.key_end, pieces, 1, err);
	free(q);
	return st;
}
