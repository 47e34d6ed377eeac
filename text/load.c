/* Reading tokenizer.json into the tokenizer's parts. Every refusal names the file and the place in it
 * ("tokenizer.json: pre_tokenizer.pretokenizers[1]: type "Whitespace" is not supported"). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "text/tok_internal.h"

/* Ids from this on are refused: the id table is allocated to the largest id (4M ids; real vocabularies hold
 * up to about 260K). */
#define MAX_ID (1 << 22)

typedef struct {
	tok_tokenizer *t;
	ms_error *err;
} loader;

/* A place in the file: "pre_tokenizer.pretokenizers[1]" */
typedef struct {
	char s[256];
} place;

static place at(const place *parent, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static place at(const place *parent, const char *fmt, ...)
{
	place p;
	int n = snprintf(p.s, sizeof p.s, "%s", parent ? parent->s : "");
	if (n < 0 || (size_t)n >= sizeof p.s)
		return p;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(p.s + n, sizeof p.s - (size_t)n, fmt, ap);
	va_end(ap);
	return p;
}

static ms_status fail(loader *L, ms_status code, const place *p, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static ms_status fail(loader *L, ms_status code, const place *p, const char *fmt, ...)
{
	char msg[600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return ms_fail(L->err, code, "%s: %s%s%s", L->t->name, p ? p->s : "", p && p->s[0] ? ": " : "", msg);
}

static ms_status nomem(loader *L)
{
	return ms_fail(L->err, MS_ERR_NOMEM, "%s: out of memory", L->t->name);
}

/* A short, one-line, printable rendering of a string from the file, for messages. */
static const char *shown(const char *s, char buf[96])
{
	size_t o = 0;
	for (const unsigned char *u = (const unsigned char *)s; *u && o < 80; u++) {
		if (*u < 0x20 || *u == 0x7F || *u == '"' || *u == '\\')
			o += (size_t)snprintf(buf + o, 96 - o, "\\x%02x", *u);
		else
			buf[o++] = (char)*u;
	}
	buf[o] = 0;
	if (o >= 80)
		strcpy(buf + 80, "...");
	return buf;
}

static const cJSON *member(const cJSON *obj, const char *key)
{
	return cJSON_GetObjectItemCaseSensitive(obj, key);
}

/* A boolean member; absent or null gives def. */
static ms_status get_bool(loader *L, const cJSON *obj, const char *key, int def, int *out, const place *p)
{
	const cJSON *v = member(obj, key);
	if (!v || cJSON_IsNull(v)) {
		*out = def;
		return MS_OK;
	}
	if (!cJSON_IsBool(v))
		return fail(L, MS_ERR_TOK_FIELD, p, "\"%s\" is not true or false", key);
	*out = cJSON_IsTrue(v);
	return MS_OK;
}

/* A string member: required (NULL when absent is an error) or optional (*out = NULL). */
static ms_status get_str(loader *L, const cJSON *obj, const char *key, int required, const char **out,
                         const place *p)
{
	const cJSON *v = member(obj, key);
	*out = NULL;
	if (!v || cJSON_IsNull(v))
		return required ? fail(L, MS_ERR_TOK_FIELD, p, "\"%s\" is missing", key) : MS_OK;
	if (!cJSON_IsString(v))
		return fail(L, MS_ERR_TOK_FIELD, p, "\"%s\" is not a string", key);
	*out = v->valuestring;
	return MS_OK;
}

static ms_status get_int(loader *L, const cJSON *v, long lo, long hi, long *out, const place *p, const char *what)
{
	/* the range first: converting a double outside long's range is undefined */
	if (!cJSON_IsNumber(v) || !(v->valuedouble >= (double)lo && v->valuedouble <= (double)hi) ||
	    v->valuedouble != (double)(long)v->valuedouble)
		return fail(L, MS_ERR_TOK_FIELD, p, "%s is not an integer in %ld..%ld", what, lo, hi);
	*out = (long)v->valuedouble;
	return MS_OK;
}

static char *dup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *d = malloc(n);
	if (d)
		memcpy(d, s, n);
	return d;
}

static const char *type_of(loader *L, const cJSON *obj, const place *p, ms_status *rc)
{
	const char *type;
	*rc = MS_OK;
	if (!cJSON_IsObject(obj)) {
		*rc = fail(L, MS_ERR_TOK_FIELD, p, "not an object");
		return NULL;
	}
	if ((*rc = get_str(L, obj, "type", 1, &type, p)))
		return NULL;
	return type;
}

static ms_status unsupported(loader *L, const place *p, const char *type)
{
	char b[96];
	return fail(L, MS_ERR_TOK_UNSUPPORTED, p, "type \"%s\" is not supported", shown(type, b));
}

/* The "type" of a part of the pipeline (normalizer, pre-tokenizer, post-processor, decoder) at nesting depth
 * `depth`: NULL with *rc set when it has none or Sequences nest too deeply. */
static const char *part_type(loader *L, const cJSON *obj, const place *p, int depth, ms_status *rc)
{
	const char *type = type_of(L, obj, p, rc);
	if (type && depth > 16) {
		*rc = fail(L, MS_ERR_TOK_FIELD, p, "nested too deeply");
		return NULL;
	}
	return type;
}

/* Loads one part of the pipeline from j into *item (a tk_normalizer, tk_pretok or tk_decoder; NULL for a
 * post-processor, which adds to the tokenizer itself). */
typedef ms_status (*part_fn)(loader *L, const cJSON *j, void *item, const place *p, int depth);

/* A Sequence's member `key`: an array of parts, each loaded by fn, into a new array *items of `size`-byte items
 * when items is not NULL (the caller stores it, failed or not). *n_items counts the items begun, so that a failure
 * part way frees what was loaded. */
static ms_status load_sequence(loader *L, const cJSON *j, const char *key, part_fn fn, void **items, size_t size,
                               int *n_items, const place *p, int depth)
{
	const cJSON *arr = member(j, key);
	if (!cJSON_IsArray(arr))
		return fail(L, MS_ERR_TOK_FIELD, p, "\"%s\" is missing or not an array", key);
	int n = cJSON_GetArraySize(arr), i = 0;
	if (items && n && !(*items = calloc((size_t)n, size)))
		return nomem(L);
	for (const cJSON *e = arr->child; e; e = e->next, i++) {
		if (n_items)
			*n_items = i + 1;
		place pi = at(p, ".%s[%d]", key, i);
		ms_status rc = fn(L, e, items ? (char *)*items + (size_t)i * size : NULL, &pi, depth + 1);
		if (rc)
			return rc;
	}
	return MS_OK;
}

/* The top-level part `key` of tokenizer.json, when present and not null: loaded by fn into a new *item of `size`
 * bytes when item is not NULL (the caller stores it, failed or not). */
static ms_status load_part(loader *L, const cJSON *root, const char *key, part_fn fn, void **item, size_t size)
{
	const cJSON *j = member(root, key);
	if (!j || cJSON_IsNull(j))
		return MS_OK;
	place p = at(NULL, "%s", key);
	if (item && !(*item = calloc(1, size)))
		return nomem(L);
	return fn(L, j, item ? *item : NULL, &p, 0);
}

/* ---- patterns ---- */

static ms_status compile_regex(loader *L, const char *src, size_t len, pcre2_code **out, const place *p)
{
	int code;
	PCRE2_SIZE off;
	*out = pcre2_compile((PCRE2_SPTR)src, len, PCRE2_UTF | PCRE2_UCP, &code, &off, NULL);
	if (!*out) {
		PCRE2_UCHAR msg[256];
		pcre2_get_error_message(code, msg, sizeof msg);
		return fail(L, MS_ERR_TOK_REGEX, p, "PCRE2 rejects the regex at offset %zu: %s", (size_t)off,
		            (const char *)msg);
	}
	pcre2_jit_compile(*out, PCRE2_JIT_COMPLETE); /* without JIT the interpreter runs it */
	return MS_OK;
}

/* {"String": s} or {"Regex": r} */
static ms_status get_pattern(loader *L, const cJSON *obj, const char *key, int allow_regex, tk_pattern *pat,
                             const place *parent)
{
	place p = at(parent, ".%s", key);
	const cJSON *v = member(obj, key);
	if (!cJSON_IsObject(v))
		return fail(L, MS_ERR_TOK_FIELD, parent, "\"%s\" is missing or not an object", key);
	const cJSON *s = member(v, "String"), *r = member(v, "Regex");
	if (cJSON_IsString(s)) {
		if (!(pat->lit = dup(s->valuestring)))
			return nomem(L);
		pat->lit_len = strlen(s->valuestring);
		return MS_OK;
	}
	if (cJSON_IsString(r)) {
		if (!allow_regex)
			return fail(L, MS_ERR_TOK_UNSUPPORTED, &p, "a Regex pattern is not supported here");
		place pr = at(&p, ".Regex");
		return compile_regex(L, r->valuestring, strlen(r->valuestring), &pat->re, &pr);
	}
	return fail(L, MS_ERR_TOK_FIELD, &p, "neither a \"String\" nor a \"Regex\"");
}

/* A Metaspace replacement: one character. */
static ms_status get_replacement(loader *L, const cJSON *obj, char out[8], const place *p)
{
	const char *r;
	ms_status rc = get_str(L, obj, "replacement", 0, &r, p);
	if (rc)
		return rc;
	if (!r)
		r = "\xE2\x96\x81"; /* U+2581 */
	size_t n = strlen(r);
	if (n == 0 || n > 4 || tk_utf8_len((const unsigned char *)r, n) != n)
		return fail(L, MS_ERR_TOK_FIELD, p, "\"replacement\" is not one character");
	memcpy(out, r, n + 1);
	return MS_OK;
}

static ms_status get_prepend_scheme(loader *L, const cJSON *obj, tk_prepend_scheme *out, const place *p)
{
	const char *s;
	ms_status rc = get_str(L, obj, "prepend_scheme", 0, &s, p);
	if (rc)
		return rc;
	if (!s) { /* files written before prepend_scheme existed say add_prefix_space */
		int add;
		if ((rc = get_bool(L, obj, "add_prefix_space", 1, &add, p)))
			return rc;
		*out = add ? PS_ALWAYS : PS_NEVER;
	} else if (strcmp(s, "always") == 0) {
		*out = PS_ALWAYS;
	} else if (strcmp(s, "first") == 0) {
		*out = PS_FIRST;
	} else if (strcmp(s, "never") == 0) {
		*out = PS_NEVER;
	} else {
		char b[96];
		return fail(L, MS_ERR_TOK_FIELD, p, "prepend_scheme \"%s\" is not first, always or never", shown(s, b));
	}
	return MS_OK;
}

/* ---- normalizers ---- */

static ms_status load_normalizer(loader *L, const cJSON *j, void *item, const place *p, int depth)
{
	tk_normalizer *nz = item;
	ms_status rc;
	const char *type = part_type(L, j, p, depth, &rc);
	if (!type)
		return rc;
	static const struct {
		const char *name;
		tk_nz_kind kind;
	} forms[] = {{"NFC", NZ_NFC}, {"NFD", NZ_NFD}, {"NFKC", NZ_NFKC}, {"NFKD", NZ_NFKD}, {"Lowercase", NZ_LOWERCASE}};
	for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++)
		if (strcmp(type, forms[i].name) == 0) {
			nz->kind = forms[i].kind;
			return MS_OK;
		}
	const char *s;
	if (strcmp(type, "Sequence") == 0) {
		nz->kind = NZ_SEQUENCE;
		void *items = NULL;
		rc = load_sequence(L, j, "normalizers", load_normalizer, &items, sizeof *nz->items, &nz->n_items, p, depth);
		nz->items = items;
		return rc;
	}
	if (strcmp(type, "Replace") == 0) {
		nz->kind = NZ_REPLACE;
		if ((rc = get_pattern(L, j, "pattern", 1, &nz->pattern, p)) || (rc = get_str(L, j, "content", 1, &s, p)))
			return rc;
		return (nz->content = dup(s)) ? MS_OK : nomem(L);
	}
	if (strcmp(type, "Prepend") == 0) {
		nz->kind = NZ_PREPEND;
		if ((rc = get_str(L, j, "prepend", 1, &s, p)))
			return rc;
		return (nz->content = dup(s)) ? MS_OK : nomem(L);
	}
	if (strcmp(type, "Strip") == 0) {
		nz->kind = NZ_STRIP;
		if ((rc = get_bool(L, j, "strip_left", 1, &nz->left, p)) || (rc = get_bool(L, j, "strip_right", 1, &nz->right, p)))
			return rc;
		return MS_OK;
	}
	return unsupported(L, p, type);
}

/* ---- pre-tokenizers ---- */

/* GPT-2's pre-tokenization regex, which ByteLevel applies when use_regex is true. */
static const char gpt2_regex[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static ms_status load_pretok(loader *L, const cJSON *j, void *item, const place *p, int depth)
{
	tk_pretok *pt = item;
	ms_status rc;
	const char *type = part_type(L, j, p, depth, &rc), *s;
	if (!type)
		return rc;
	if (strcmp(type, "Sequence") == 0) {
		pt->kind = PT_SEQUENCE;
		void *items = NULL;
		rc = load_sequence(L, j, "pretokenizers", load_pretok, &items, sizeof *pt->items, &pt->n_items, p, depth);
		pt->items = items;
		return rc;
	}
	if (strcmp(type, "Split") == 0) {
		static const struct {
			const char *name;
			tk_split_behavior b;
		} behaviors[] = {{"Removed", SB_REMOVED},
		                 {"Isolated", SB_ISOLATED},
		                 {"MergedWithPrevious", SB_MERGED_PREV},
		                 {"MergedWithNext", SB_MERGED_NEXT},
		                 {"Contiguous", SB_CONTIGUOUS}};
		pt->kind = PT_SPLIT;
		if ((rc = get_pattern(L, j, "pattern", 1, &pt->pattern, p)) || (rc = get_str(L, j, "behavior", 1, &s, p)) ||
		    (rc = get_bool(L, j, "invert", 0, &pt->invert, p)))
			return rc;
		for (size_t i = 0; i < sizeof behaviors / sizeof behaviors[0]; i++)
			if (strcmp(s, behaviors[i].name) == 0) {
				pt->behavior = behaviors[i].b;
				return MS_OK;
			}
		char b[96];
		return fail(L, MS_ERR_TOK_UNSUPPORTED, p, "behavior \"%s\" is not supported", shown(s, b));
	}
	if (strcmp(type, "ByteLevel") == 0) {
		pt->kind = PT_BYTELEVEL;
		if ((rc = get_bool(L, j, "add_prefix_space", 1, &pt->add_prefix_space, p)) ||
		    (rc = get_bool(L, j, "use_regex", 1, &pt->use_regex, p)))
			return rc;
		L->t->bpe.byte_level = 1;
		return pt->use_regex ? compile_regex(L, gpt2_regex, sizeof gpt2_regex - 1, &pt->pattern.re, p) : MS_OK;
	}
	if (strcmp(type, "Metaspace") == 0) {
		pt->kind = PT_METASPACE;
		if ((rc = get_replacement(L, j, pt->replacement, p)) || (rc = get_prepend_scheme(L, j, &pt->prepend_scheme, p)) ||
		    (rc = get_bool(L, j, "split", 1, &pt->split, p)))
			return rc;
		return MS_OK;
	}
	if (strcmp(type, "Digits") == 0) {
		int individual;
		pt->kind = PT_DIGITS;
		if ((rc = get_bool(L, j, "individual_digits", 0, &individual, p)))
			return rc;
		/* char::is_numeric: the general categories Nd, Nl and No */
		const char *re = individual ? "\\p{N}" : "\\p{N}+";
		return compile_regex(L, re, strlen(re), &pt->pattern.re, p);
	}
	return unsupported(L, p, type);
}

/* ---- the model ---- */

static ms_status load_vocab(loader *L, const cJSON *vocab, const place *pm)
{
	tk_bpe *m = &L->t->bpe;
	place pv = at(pm, ".vocab");
	if (!cJSON_IsObject(vocab))
		return fail(L, MS_ERR_TOK_FIELD, pm, "\"vocab\" is missing or not an object");
	for (const cJSON *e = vocab->child; e; e = e->next) {
		long id = 0;
		char b[96];
		place pe = at(&pv, "[\"%s\"]", shown(e->string, b));
		ms_status rc = get_int(L, e, 0, MAX_ID - 1, &id, &pe, "the id");
		if (rc)
			return rc;
		if (tk_strmap_put(&m->vocab, e->string, strlen(e->string), (int32_t)id) < 0)
			return nomem(L);
		if (id >= L->t->n_ids)
			L->t->n_ids = (int32_t)id + 1;
	}
	return MS_OK;
}

static ms_status merge_part(loader *L, const char *s, size_t n, int32_t *id, const place *p)
{
	*id = tk_strmap_get(&L->t->bpe.vocab, s, n);
	if (*id >= 0)
		return MS_OK;
	char tmp[96], b[96];
	size_t k = n < sizeof tmp - 1 ? n : sizeof tmp - 1;
	memcpy(tmp, s, k);
	tmp[k] = 0;
	return fail(L, MS_ERR_TOK_FIELD, p, "\"%s\" is not in the vocabulary", shown(tmp, b));
}

static ms_status load_merges(loader *L, const cJSON *merges, const place *pm)
{
	place pl = at(pm, ".merges");
	if (!merges || cJSON_IsNull(merges))
		return MS_OK;
	if (!cJSON_IsArray(merges))
		return fail(L, MS_ERR_TOK_FIELD, pm, "\"merges\" is not an array");
	tk_buf both = {0};
	ms_status rc = MS_OK;
	int rank = 0;
	for (const cJSON *e = merges->child; e && !rc; e = e->next, rank++) {
		place p = at(&pl, "[%d]", rank);
		const char *a, *b;
		size_t na, nb;
		if (cJSON_IsString(e)) { /* "a b" */
			a = e->valuestring;
			const char *sp = strchr(a, ' ');
			if (!sp || sp == a || !sp[1]) {
				rc = fail(L, MS_ERR_TOK_FIELD, &p, "not two tokens separated by a space");
				break;
			}
			na = (size_t)(sp - a);
			b = sp + 1;
			nb = strlen(b);
		} else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) &&
		           cJSON_IsString(e->child->next)) { /* ["a", "b"] */
			a = e->child->valuestring;
			b = e->child->next->valuestring;
			na = strlen(a);
			nb = strlen(b);
		} else {
			rc = fail(L, MS_ERR_TOK_FIELD, &p, "neither \"a b\" nor [\"a\", \"b\"]");
			break;
		}
		int32_t ia, ib, ic;
		both.n = 0;
		if (tk_buf_add(&both, a, na) || tk_buf_add(&both, b, nb)) {
			rc = nomem(L);
			break;
		}
		if ((rc = merge_part(L, a, na, &ia, &p)) || (rc = merge_part(L, b, nb, &ib, &p)) ||
		    (rc = merge_part(L, both.s, both.n, &ic, &p)))
			break;
		if (tk_pairmap_put(&L->t->bpe.merges, ia, ib, rank, ic) < 0)
			rc = nomem(L);
	}
	tk_buf_free(&both);
	return rc;
}

static ms_status load_model(loader *L, const cJSON *j)
{
	tk_bpe *m = &L->t->bpe;
	place pm = at(NULL, "model");
	ms_status rc;
	if (!cJSON_IsObject(j))
		return fail(L, MS_ERR_TOK_FIELD, NULL, "\"model\" is missing or not an object");
	const char *type, *s;
	if ((rc = get_str(L, j, "type", 0, &type, &pm)))
		return rc;
	if (type && strcmp(type, "BPE") != 0)
		return unsupported(L, &pm, type);
	const cJSON *d = member(j, "dropout");
	if (d && !cJSON_IsNull(d) && !(cJSON_IsNumber(d) && d->valuedouble == 0.0))
		return fail(L, MS_ERR_TOK_UNSUPPORTED, &pm, "dropout is not supported (encoding would be random)");
	const char *affix[] = {"continuing_subword_prefix", "end_of_word_suffix"};
	for (int i = 0; i < 2; i++) {
		if ((rc = get_str(L, j, affix[i], 0, &s, &pm)))
			return rc;
		if (s && *s)
			return fail(L, MS_ERR_TOK_UNSUPPORTED, &pm, "a non-empty %s is not supported", affix[i]);
	}
	if ((rc = get_bool(L, j, "fuse_unk", 0, &m->fuse_unk, &pm)) ||
	    (rc = get_bool(L, j, "byte_fallback", 0, &m->byte_fallback, &pm)) ||
	    (rc = get_bool(L, j, "ignore_merges", 0, &m->ignore_merges, &pm)))
		return rc;
	if ((rc = load_vocab(L, member(j, "vocab"), &pm)) || (rc = load_merges(L, member(j, "merges"), &pm)))
		return rc;
	if ((rc = get_str(L, j, "unk_token", 0, &s, &pm)))
		return rc;
	m->unk_id = s ? tk_strmap_get(&m->vocab, s, strlen(s)) : -1;
	if (s && m->unk_id < 0) {
		char b[96];
		return fail(L, MS_ERR_TOK_FIELD, &pm, "unk_token \"%s\" is not in the vocabulary", shown(s, b));
	}
	for (int b = 0; b < 256; b++) {
		char name[8];
		snprintf(name, sizeof name, "<0x%02X>", b);
		m->byte_id[b] = tk_strmap_get(&m->vocab, name, 6);
	}
	return MS_OK;
}

/* ---- added tokens ---- */

static ms_status load_added(loader *L, const cJSON *arr)
{
	tok_tokenizer *t = L->t;
	place pa = at(NULL, "added_tokens");
	if (!arr || cJSON_IsNull(arr))
		return MS_OK;
	if (!cJSON_IsArray(arr))
		return fail(L, MS_ERR_TOK_FIELD, NULL, "\"added_tokens\" is not an array");
	int n = cJSON_GetArraySize(arr), i = 0;
	if (n && !(t->added = calloc((size_t)n, sizeof *t->added)))
		return nomem(L);
	for (const cJSON *e = arr->child; e; e = e->next, i++) {
		place p = at(&pa, "[%d]", i);
		tk_added *a = &t->added[i];
		const char *content;
		long id = 0;
		ms_status rc;
		if (!cJSON_IsObject(e))
			return fail(L, MS_ERR_TOK_FIELD, &p, "not an object");
		if ((rc = get_str(L, e, "content", 1, &content, &p)) ||
		    (rc = get_int(L, member(e, "id"), 0, MAX_ID - 1, &id, &p, "\"id\"")) ||
		    (rc = get_bool(L, e, "special", 0, &a->special, &p)) || (rc = get_bool(L, e, "lstrip", 0, &a->lstrip, &p)) ||
		    (rc = get_bool(L, e, "rstrip", 0, &a->rstrip, &p)) ||
		    (rc = get_bool(L, e, "single_word", 0, &a->single_word, &p)) ||
		    (rc = get_bool(L, e, "normalized", !a->special, &a->normalized, &p)))
			return rc;
		if (!*content)
			return fail(L, MS_ERR_TOK_FIELD, &p, "\"content\" is empty");
		if (!(a->content = dup(content)))
			return nomem(L);
		a->len = strlen(content);
		a->id = (int32_t)id;
		t->n_added = i + 1;
		if (id >= t->n_ids)
			t->n_ids = (int32_t)id + 1;
	}
	return MS_OK;
}

/* ---- post-processors: reduced to the ids before and after one sequence ---- */

static int add_ids(int32_t **v, int *n, const int32_t *ids, int k, int front)
{
	if (k == 0)
		return 0;
	int32_t *w = realloc(*v, (size_t)(*n + k + 1) * sizeof *w);
	if (!w)
		return -1;
	if (front) {
		memmove(w + k, w, (size_t)*n * sizeof *w);
		memcpy(w, ids, (size_t)k * sizeof *w);
	} else {
		memcpy(w + *n, ids, (size_t)k * sizeof *w);
	}
	*v = w;
	*n += k;
	return 0;
}

/* [token, id] as RobertaProcessing and BertProcessing write cls and sep */
static ms_status pair_id(loader *L, const cJSON *j, const char *key, int32_t *id, const place *p)
{
	const cJSON *v = member(j, key);
	long x = 0;
	if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2)
		return fail(L, MS_ERR_TOK_FIELD, p, "\"%s\" is not [token, id]", key);
	ms_status rc = get_int(L, v->child->next, 0, MAX_ID - 1, &x, p, key);
	*id = (int32_t)x;
	return rc;
}

static ms_status template_single(loader *L, const cJSON *j, int32_t **pre, int *npre, int32_t **post, int *npost,
                                 const place *p)
{
	const cJSON *single = member(j, "single"), *special = member(j, "special_tokens");
	if (!cJSON_IsArray(single))
		return fail(L, MS_ERR_TOK_FIELD, p, "\"single\" is missing or not an array");
	int seen_a = 0, i = 0;
	for (const cJSON *e = single->child; e; e = e->next, i++) {
		place pi = at(p, ".single[%d]", i);
		const cJSON *sp = member(e, "SpecialToken"), *sq = member(e, "Sequence");
		if (sq) {
			const char *which;
			ms_status rc = get_str(L, sq, "id", 1, &which, &pi);
			if (rc)
				return rc;
			if (strcmp(which, "A") != 0 || seen_a)
				return fail(L, MS_ERR_TOK_FIELD, &pi, "a single sequence template holds one sequence A");
			seen_a = 1;
			continue;
		}
		const char *name;
		ms_status rc = cJSON_IsObject(sp) ? get_str(L, sp, "id", 1, &name, &pi)
		                                  : fail(L, MS_ERR_TOK_FIELD, &pi, "neither SpecialToken nor Sequence");
		if (rc)
			return rc;
		const cJSON *def = cJSON_IsObject(special) ? member(special, name) : NULL, *ids = def ? member(def, "ids") : NULL;
		char b[96];
		if (!cJSON_IsArray(ids))
			return fail(L, MS_ERR_TOK_FIELD, &pi, "special token \"%s\" has no ids in special_tokens", shown(name, b));
		for (const cJSON *x = ids->child; x; x = x->next) {
			long id = 0;
			if ((rc = get_int(L, x, 0, MAX_ID - 1, &id, &pi, "a special token id")))
				return rc;
			int32_t v = (int32_t)id;
			if (seen_a ? add_ids(post, npost, &v, 1, 0) : add_ids(pre, npre, &v, 1, 0))
				return nomem(L);
		}
	}
	return seen_a ? MS_OK : fail(L, MS_ERR_TOK_FIELD, p, "\"single\" has no sequence A");
}

static ms_status load_post(loader *L, const cJSON *j, void *item, const place *p, int depth)
{
	(void)item;
	tok_tokenizer *t = L->t;
	ms_status rc;
	const char *type = part_type(L, j, p, depth, &rc);
	if (!type)
		return rc;
	if (strcmp(type, "ByteLevel") == 0)
		return MS_OK; /* it only trims offsets */
	if (strcmp(type, "Sequence") == 0)
		return load_sequence(L, j, "processors", load_post, NULL, 0, NULL, p, depth);
	int32_t *pre = NULL, *post = NULL;
	int npre = 0, npost = 0;
	if (strcmp(type, "TemplateProcessing") == 0) {
		rc = template_single(L, j, &pre, &npre, &post, &npost, p);
	} else if (strcmp(type, "RobertaProcessing") == 0 || strcmp(type, "BertProcessing") == 0) {
		int32_t cls, sep;
		rc = pair_id(L, j, "cls", &cls, p);
		if (!rc)
			rc = pair_id(L, j, "sep", &sep, p);
		if (!rc && (add_ids(&pre, &npre, &cls, 1, 0) || add_ids(&post, &npost, &sep, 1, 0)))
			rc = nomem(L);
	} else {
		return unsupported(L, p, type);
	}
	/* a later processor wraps what the earlier ones made */
	if (!rc && (add_ids(&t->post_prefix, &t->n_prefix, pre, npre, 1) ||
	            add_ids(&t->post_suffix, &t->n_suffix, post, npost, 0)))
		rc = nomem(L);
	free(pre);
	free(post);
	return rc;
}

/* ---- decoders ---- */

static ms_status load_decoder(loader *L, const cJSON *j, void *item, const place *p, int depth)
{
	tk_decoder *d = item;
	ms_status rc;
	const char *type = part_type(L, j, p, depth, &rc), *s;
	if (!type)
		return rc;
	if (strcmp(type, "ByteLevel") == 0) {
		d->kind = DC_BYTELEVEL;
		return MS_OK;
	}
	if (strcmp(type, "ByteFallback") == 0) {
		d->kind = DC_BYTEFALLBACK;
		return MS_OK;
	}
	if (strcmp(type, "Fuse") == 0) {
		d->kind = DC_FUSE;
		return MS_OK;
	}
	if (strcmp(type, "Metaspace") == 0) {
		tk_prepend_scheme ps;
		d->kind = DC_METASPACE;
		if ((rc = get_replacement(L, j, d->replacement, p)) || (rc = get_prepend_scheme(L, j, &ps, p)))
			return rc;
		d->prepend = ps != PS_NEVER;
		return MS_OK;
	}
	if (strcmp(type, "Strip") == 0) {
		long start = 0, stop = 0;
		d->kind = DC_STRIP;
		if ((rc = get_str(L, j, "content", 1, &s, p)))
			return rc;
		if (member(j, "start") && (rc = get_int(L, member(j, "start"), 0, 1 << 20, &start, p, "\"start\"")))
			return rc;
		if (member(j, "stop") && (rc = get_int(L, member(j, "stop"), 0, 1 << 20, &stop, p, "\"stop\"")))
			return rc;
		d->start = (int)start;
		d->stop = (int)stop;
		return (d->content = dup(s)) ? MS_OK : nomem(L);
	}
	if (strcmp(type, "Replace") == 0) {
		d->kind = DC_REPLACE;
		if ((rc = get_pattern(L, j, "pattern", 0, &d->pattern, p)) || (rc = get_str(L, j, "content", 1, &s, p)))
			return rc;
		return (d->content = dup(s)) ? MS_OK : nomem(L);
	}
	if (strcmp(type, "Sequence") == 0) {
		d->kind = DC_SEQUENCE;
		void *items = NULL;
		rc = load_sequence(L, j, "decoders", load_decoder, &items, sizeof *d->items, &d->n_items, p, depth);
		d->items = items;
		return rc;
	}
	return unsupported(L, p, type);
}

/* ---- the id table ---- */

static ms_status build_id_table(loader *L)
{
	tok_tokenizer *t = L->t;
	size_t n = (size_t)t->n_ids;
	t->id_text = calloc(n ? n : 1, sizeof *t->id_text);
	t->id_len = calloc(n ? n : 1, sizeof *t->id_len);
	t->id_special = calloc(n ? n : 1, 1);
	if (!t->id_text || !t->id_len || !t->id_special)
		return nomem(L);
	const tk_strmap *v = &t->bpe.vocab;
	for (size_t i = 0; i < v->cap; i++)
		if (v->slot[i].key && !t->id_text[v->slot[i].val]) {
			t->id_text[v->slot[i].val] = v->slot[i].key;
			t->id_len[v->slot[i].val] = v->slot[i].len;
		}
	for (int i = 0; i < t->n_added; i++) {
		t->id_text[t->added[i].id] = t->added[i].content;
		t->id_len[t->added[i].id] = (uint32_t)t->added[i].len;
		t->id_special[t->added[i].id] = (uint8_t)t->added[i].special;
	}
	return MS_OK;
}

ms_status tk_load_json(tok_tokenizer *t, const char *json, size_t len, ms_error *err)
{
	loader L = {.t = t, .err = err};
	tk_byte_map_init();
	/* JSON is UTF-8 (RFC 8259); text taken from an ill-formed file would reach the normalizers ill-formed */
	for (size_t i = 0; i < len;) {
		size_t l = tk_utf8_len((const unsigned char *)json + i, len - i);
		if (!l)
			return fail(&L, MS_ERR_TOK_JSON, NULL, "byte %zu: not valid UTF-8", i);
		i += l;
	}
	cJSON *root = cJSON_ParseWithLength(json, len);
	if (!root) {
		const char *e = cJSON_GetErrorPtr();
		size_t off = e && e >= json && e <= json + len ? (size_t)(e - json) : 0;
		return fail(&L, MS_ERR_TOK_JSON, NULL, "not valid JSON near byte %zu", off);
	}
	ms_status rc = MS_OK;
	const cJSON *j;
	if (!cJSON_IsObject(root))
		rc = fail(&L, MS_ERR_TOK_JSON, NULL, "not a JSON object");
	if (!rc)
		rc = load_model(&L, member(root, "model"));
	if (!rc)
		rc = load_added(&L, member(root, "added_tokens"));
	void *nz = NULL, *pt = NULL, *dc = NULL;
	if (!rc)
		rc = load_part(&L, root, "normalizer", load_normalizer, &nz, sizeof *t->normalizer);
	if (!rc)
		rc = load_part(&L, root, "pre_tokenizer", load_pretok, &pt, sizeof *t->pretok);
	if (!rc)
		rc = load_part(&L, root, "post_processor", load_post, NULL, 0);
	if (!rc)
		rc = load_part(&L, root, "decoder", load_decoder, &dc, sizeof *t->decoder);
	t->normalizer = nz;
	t->pretok = pt;
	t->decoder = dc;
	if (!rc) {
		const char *opt[] = {"truncation", "padding"};
		for (int i = 0; i < 2 && !rc; i++)
			if ((j = member(root, opt[i])) && !cJSON_IsNull(j)) {
				place p = at(NULL, "%s", opt[i]);
				rc = fail(&L, MS_ERR_TOK_UNSUPPORTED, &p, "%s is not supported (it must be null)", opt[i]);
			}
	}
	if (!rc)
		rc = build_id_table(&L);
	for (int i = 0; !rc && i < t->n_prefix + t->n_suffix; i++) {
		int32_t id = i < t->n_prefix ? t->post_prefix[i] : t->post_suffix[i - t->n_prefix];
		if (id >= t->n_ids || !t->id_text[id]) {
			place p = at(NULL, "post_processor");
			rc = fail(&L, MS_ERR_TOK_FIELD, &p, "special token id %d is not in the vocabulary", (int)id);
		}
	}
	cJSON_Delete(root);
	return rc;
}
