/* safetensors reading (mmap, one file or a shard set) and streaming writing.
 *
 * Reading follows the rules of the reference implementation (huggingface/safetensors; docs/design.md §2.1) but
 * reports each broken rule with its own status. A file is mapped once, read-only; its header is copied out and parsed
 * with cJSON, every entry is checked on its own (dtype, shape, offsets, size), then the entries are sorted by name to
 * find duplicates and by offset to check that the data buffer is tiled exactly. Tensors of every shard end up in one
 * array sorted by name, so st_get is name order and st_find is a binary search.
 *
 * Byte offsets in messages are absolute file offsets: a tensor's data is at 8 + N + begin; a problem inside the
 * header points at the entry's key in the header text where it can be found. */
#include "io/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "io/durable.h"

/* Numbers in a header are read through cJSON's double; above 2^53 a double no longer holds every integer, so a
 * larger shape or offset could be silently changed. No real file gets near (2^53 bytes is 8 PiB). */
#define ST_EXACT_MAX 9007199254740992.0
#define ST_INDEX_NAME "model.safetensors.index.json"
#define ST_SINGLE_NAME "model.safetensors"

/* ms_fail, then control characters in the message (from names in a header, which JSON escapes can fill with line
 * breaks) become '?', so that the message stays one line. */
static ms_status st_fail(ms_error *err, ms_status code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static ms_status st_fail(ms_error *err, ms_status code, const char *fmt, ...)
{
	if (!err)
		return code;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof err->msg, fmt, ap);
	va_end(ap);
	err->code = code;
	for (char *p = err->msg; *p; p++) {
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	}
	return code;
}

/* ---- dtypes: one row each ---- */

static const struct {
	const char *name;
	size_t size;
	int is_float; /* converts to float32 */
} dtype_table[ST_DTYPE_COUNT] = {
	[ST_F32] = {"F32", 4, 1},     [ST_F16] = {"F16", 2, 1},   [ST_BF16] = {"BF16", 2, 1},
	[ST_F64] = {"F64", 8, 0},     [ST_I8] = {"I8", 1, 0},     [ST_I16] = {"I16", 2, 0},
	[ST_I32] = {"I32", 4, 0},     [ST_I64] = {"I64", 8, 0},   [ST_U8] = {"U8", 1, 0},
	[ST_U16] = {"U16", 2, 0},     [ST_U32] = {"U32", 4, 0},   [ST_U64] = {"U64", 8, 0},
	[ST_BOOL] = {"BOOL", 1, 0},   [ST_F8_E4M3] = {"F8_E4M3", 1, 0}, [ST_F8_E5M2] = {"F8_E5M2", 1, 0},
};

const char *st_dtype_name(st_dtype t)
{
	return (unsigned)t < ST_DTYPE_COUNT ? dtype_table[t].name : "?";
}

size_t st_dtype_size(st_dtype t)
{
	return (unsigned)t < ST_DTYPE_COUNT ? dtype_table[t].size : 0;
}

int st_dtype_is_float(st_dtype t)
{
	return (unsigned)t < ST_DTYPE_COUNT && dtype_table[t].is_float;
}

int st_dtype_parse(const char *name, st_dtype *out)
{
	for (int i = 0; name && i < ST_DTYPE_COUNT; i++) {
		if (!strcmp(name, dtype_table[i].name)) {
			*out = (st_dtype)i;
			return 1;
		}
	}
	return 0;
}

void st_shape_text(char *buf, size_t len, const int64_t *shape, int ndim)
{
	size_t used = (size_t)snprintf(buf, len, "[");
	for (int i = 0; i < ndim && used < len; i++)
		used += (size_t)snprintf(buf + used, len - used, "%s%lld", i ? ", " : "", (long long)shape[i]);
	if (used < len)
		snprintf(buf + used, len - used, "]");
}

/* ---- finiteness ---- */

int64_t st_first_nonfinite_raw(st_dtype dtype, const void *bytes, uint64_t n)
{
	const unsigned char *p = bytes;
	for (uint64_t i = 0; i < n; i++) {
		if (dtype == ST_F32 && (p[4 * i + 3] & 0x7f) == 0x7f && (p[4 * i + 2] & 0x80))
			return (int64_t)i;
		if (dtype == ST_F16 && (p[2 * i + 1] & 0x7c) == 0x7c)
			return (int64_t)i;
		if (dtype == ST_BF16 && (p[2 * i + 1] & 0x7f) == 0x7f && (p[2 * i] & 0x80))
			return (int64_t)i;
		if (dtype == ST_F8_E4M3 && (p[i] & 0x7f) == 0x7f)   /* E4M3 has one NaN pattern and no infinity */
			return (int64_t)i;
	}
	return -1;
}

/* ---- scalar conversions ---- */

static uint32_t f32_bits(float x)
{
	uint32_t u;
	memcpy(&u, &x, sizeof u);
	return u;
}

static float bits_f32(uint32_t u)
{
	float x;
	memcpy(&x, &u, sizeof x);
	return x;
}

float st_bf16_to_f32(uint16_t h)
{
	return bits_f32((uint32_t)h << 16);
}

uint16_t st_f32_to_bf16(float x)
{
	uint32_t u = f32_bits(x);
	if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: truncating could clear the mantissa, so force the quiet bit */
		return (uint16_t)((u >> 16) | 0x0040u);
	/* Adding 0x7fff plus the lowest kept bit rounds half to even; a carry out of the mantissa bumps the exponent,
	 * which is right (and turns the largest finite values into infinity, also right). */
	u += 0x7fffu + ((u >> 16) & 1u);
	return (uint16_t)(u >> 16);
}

float st_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
	uint32_t exp = (h >> 10) & 0x1fu;
	uint32_t mant = h & 0x3ffu;
	if (exp == 0x1f) /* infinity or NaN: the payload moves up with the mantissa, NaN stays NaN */
		return bits_f32(sign | 0x7f800000u | (mant << 13));
	if (exp != 0)
		return bits_f32(sign | ((exp + 112u) << 23) | (mant << 13));
	/* Zero or subnormal: mant * 2^-24 is exact in float32. */
	float v = (float)mant * 0x1p-24f;
	return sign ? -v : v;
}

/* Rounds m / 2^shift to the nearest integer, ties to even (shift >= 1). */
static uint32_t shift_rne(uint32_t m, unsigned shift)
{
	uint32_t q = m >> shift;
	uint32_t rem = m & ((1u << shift) - 1u);
	uint32_t half = 1u << (shift - 1u);
	if (rem > half || (rem == half && (q & 1u)))
		q++;
	return q;
}

uint16_t st_f32_to_f16(float x)
{
	uint32_t u = f32_bits(x);
	uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
	uint32_t a = u & 0x7fffffffu;
	uint32_t mant = a & 0x7fffffu;
	if (a > 0x7f800000u) /* NaN: keep the top of the payload, set the quiet bit so it cannot become infinity */
		return (uint16_t)(sign | 0x7e00u | (mant >> 13));
	/* 65520 is halfway between 65504 (largest half) and 65536; the tie goes to the even 65536, i.e. infinity. */
	if (a >= 0x477ff000u)
		return (uint16_t)(sign | 0x7c00u);
	if (a >= 0x38800000u) { /* normal half (>= 2^-14): rebias, round 13 dropped bits; a carry is correct */
		uint32_t h = ((a >> 23) - 112u) << 10 | (mant >> 13);
		uint32_t rem = mant & 0x1fffu;
		if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
			h++;
		return (uint16_t)(sign | h);
	}
	/* Subnormal half: the value in units of 2^-24 is (mant | 2^23) * 2^(e - 126); below 2^-25 it is zero. */
	uint32_t e = a >> 23;
	if (e < 102u)
		return sign;
	return (uint16_t)(sign | shift_rne(mant | 0x800000u, 126u - e));
}

/* ---- the open file ---- */

typedef struct {
	char *path;
	void *map;     /* the whole file, PROT_READ */
	size_t size;
	int fd;        /* the file, open for bulk reads (st_tensor.fd) while the shard is, or -1 */
	char **meta;   /* [2 * nmeta]: key, value, key, value ... of __metadata__ */
	size_t nmeta;
} st_shard;

struct st_file {
	char *path;
	st_shard *shards;
	size_t nshards;
	st_tensor *tensors; /* [ntensors], sorted by name; names owned */
	size_t ntensors;
	size_t cap;
};

static char *dup_str(const char *s)
{
	size_t n = strlen(s) + 1;
	char *d = malloc(n);
	if (d)
		memcpy(d, s, n);
	return d;
}

static char *join_path(const char *dir, const char *name)
{
	size_t a = strlen(dir), b = strlen(name);
	char *p = malloc(a + b + 2);
	if (!p)
		return NULL;
	memcpy(p, dir, a);
	size_t k = a;
	if (a && dir[a - 1] != '/')
		p[k++] = '/';
	memcpy(p + k, name, b + 1);
	return p;
}

static void shard_free(st_shard *s)
{
	if (s->map)
		munmap(s->map, s->size);
	if (s->fd >= 0)
		close(s->fd);
	for (size_t i = 0; i < 2 * s->nmeta; i++)
		free(s->meta[i]);
	free(s->meta);
	free(s->path);
}

void st_close(st_file *f)
{
	if (!f)
		return;
	for (size_t i = 0; i < f->nshards; i++)
		shard_free(&f->shards[i]);
	for (size_t i = 0; i < f->ntensors; i++)
		free((char *)f->tensors[i].name);
	free(f->shards);
	free(f->tensors);
	free(f->path);
	free(f);
}

static ms_status push_tensor(st_file *f, const st_tensor *t, ms_error *err)
{
	if (f->ntensors == f->cap) {
		size_t cap = f->cap ? 2 * f->cap : 64;
		st_tensor *n = realloc(f->tensors, cap * sizeof *n);
		if (!n)
			return st_fail(err, MS_ERR_NOMEM, "%s: out of memory", f->path);
		f->tensors = n;
		f->cap = cap;
	}
	f->tensors[f->ntensors++] = *t;
	return MS_OK;
}

/* ---- one header entry ---- */

/* What parsing a file needs to say where things are. */
typedef struct {
	const char *path;
	const char *hdr;   /* NUL-terminated copy of the header, [hlen] */
	uint64_t hlen;
	uint64_t bufsize; /* file size - 8 - N */
	ms_error *err;
} st_ctx;

/* Absolute offset of the entry "name": in the header (8 + position of the quoted key), or 8 if the key is
 * written with escapes and cannot be found as is. Only used for messages. */
static uint64_t key_offset(const st_ctx *c, const char *name)
{
	size_t n = strlen(name);
	const char *p = c->hdr;
	while ((p = strchr(p, '"')) != NULL) {
		if (!strncmp(p + 1, name, n) && p[n + 1] == '"') {
			const char *q = p + n + 2;
			while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r')
				q++;
			if (*q == ':')
				return 8 + (uint64_t)(p - c->hdr);
		}
		p++;
	}
	return 8;
}

/* A JSON number that is an integer in [0, 2^53]; -1 when negative, 0 when not such an integer. */
static int json_uint(const cJSON *v, uint64_t *out)
{
	if (!cJSON_IsNumber(v))
		return 0;
	double d = v->valuedouble;
	if (!isfinite(d) || d != floor(d) || d > ST_EXACT_MAX)
		return 0;
	if (d < 0)
		return -1;
	*out = (uint64_t)d;
	return 1;
}

static ms_status entry_fail(const st_ctx *c, const char *name, const char *what, const char *detail)
{
	return st_fail(c->err, MS_ERR_ST_ENTRY, "%s: tensor '%s': byte %llu: %s%s", c->path, name,
		       (unsigned long long)key_offset(c, name), what, detail ? detail : "");
}

static ms_status parse_shape(const st_ctx *c, const char *name, const cJSON *shape, st_tensor *t)
{
	if (!cJSON_IsArray(shape))
		return entry_fail(c, name, "\"shape\" is missing or not an array", NULL);
	int n = cJSON_GetArraySize(shape);
	if (n > ST_MAX_DIMS) {
		char d[64];
		snprintf(d, sizeof d, " (%d dimensions, at most %d)", n, ST_MAX_DIMS);
		return entry_fail(c, name, "\"shape\" has too many dimensions", d);
	}
	t->ndim = 0;
	const cJSON *v;
	cJSON_ArrayForEach(v, shape) {
		uint64_t dim;
		int ok = json_uint(v, &dim);
		if (ok <= 0)
			return entry_fail(c, name, "\"shape\" holds ",
					  ok < 0 ? "a negative number" : "something other than an integer in [0, 2^53]");
		t->shape[t->ndim++] = (int64_t)dim;
	}
	return MS_OK;
}

static ms_status parse_offsets(const st_ctx *c, const char *name, const cJSON *offs, uint64_t *begin,
			       uint64_t *end)
{
	if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2)
		return entry_fail(c, name, "\"data_offsets\" is missing or not an array of two numbers", NULL);
	int ok_b = json_uint(cJSON_GetArrayItem(offs, 0), begin);
	int ok_e = json_uint(cJSON_GetArrayItem(offs, 1), end);
	if (ok_b <= 0 || ok_e <= 0)
		return entry_fail(c, name, "\"data_offsets\" holds ",
				  ok_b < 0 || ok_e < 0 ? "a negative number" : "something other than an integer");
	if (*end < *begin)
		return entry_fail(c, name, "\"data_offsets\" ends before it begins", NULL);
	return MS_OK;
}

/* numel and nbytes from shape and dtype, then the byte count against the offsets. */
static ms_status check_size(const st_ctx *c, const char *name, st_tensor *t, uint64_t begin, uint64_t end)
{
	uint64_t numel = 1;
	for (int k = 0; k < t->ndim; k++) {
		if (__builtin_mul_overflow(numel, (uint64_t)t->shape[k], &numel))
			goto overflow;
	}
	uint64_t nbytes;
	if (__builtin_mul_overflow(numel, (uint64_t)st_dtype_size(t->dtype), &nbytes))
		goto overflow;
	t->numel = numel;
	t->nbytes = nbytes;
	if (end - begin != nbytes)
		return st_fail(c->err, MS_ERR_ST_SIZE_MISMATCH,
			       "%s: tensor '%s': byte %llu: data_offsets span %llu bytes but shape and %s need %llu", c->path,
			       name, (unsigned long long)(8 + c->hlen + begin), (unsigned long long)(end - begin),
			       st_dtype_name(t->dtype), (unsigned long long)nbytes);
	return MS_OK;
overflow:
	return st_fail(c->err, MS_ERR_ST_SHAPE_OVERFLOW, "%s: tensor '%s': byte %llu: shape times %s size overflows 64 bits",
		       c->path, name, (unsigned long long)key_offset(c, name), st_dtype_name(t->dtype));
}

/* One tensor entry into t (name left to the caller); begin and end relative to the data buffer. */
static ms_status parse_entry(const st_ctx *c, const cJSON *e, st_tensor *t, uint64_t *begin, uint64_t *end)
{
	const char *name = e->string;
	if (!cJSON_IsObject(e))
		return entry_fail(c, name, "entry is not a JSON object", NULL);
	const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
	if (!cJSON_IsString(dt))
		return entry_fail(c, name, "\"dtype\" is missing or not a string", NULL);
	if (!st_dtype_parse(dt->valuestring, &t->dtype))
		return st_fail(c->err, MS_ERR_ST_DTYPE, "%s: tensor '%s': byte %llu: unknown dtype \"%s\"", c->path, name,
			       (unsigned long long)key_offset(c, name), dt->valuestring);
	ms_status st = parse_shape(c, name, cJSON_GetObjectItemCaseSensitive(e, "shape"), t);
	if (!st)
		st = parse_offsets(c, name, cJSON_GetObjectItemCaseSensitive(e, "data_offsets"), begin, end);
	if (!st)
		st = check_size(c, name, t, *begin, *end);
	return st;
}

/* ---- checks across entries ---- */

typedef struct {
	st_tensor t;
	uint64_t begin, end;
} st_entry;

static int cmp_entry_name(const void *a, const void *b)
{
	return strcmp(((const st_entry *)a)->t.name, ((const st_entry *)b)->t.name);
}

static int cmp_entry_offset(const void *a, const void *b)
{
	const st_entry *x = a, *y = b;
	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	if (x->end != y->end)
		return x->end < y->end ? -1 : 1;
	return strcmp(x->t.name, y->t.name);
}

static ms_status check_duplicates(const st_ctx *c, st_entry *e, size_t n)
{
	qsort(e, n, sizeof *e, cmp_entry_name);
	for (size_t i = 1; i < n; i++) {
		if (!strcmp(e[i - 1].t.name, e[i].t.name))
			return st_fail(c->err, MS_ERR_ST_DUPLICATE, "%s: tensor '%s': byte %llu: name appears twice in the header",
				       c->path, e[i].t.name, (unsigned long long)key_offset(c, e[i].t.name));
	}
	return MS_OK;
}

/* Sorted by begin, the tensors must tile [0, bufsize) exactly, as in the reference reader. */
static ms_status check_tiling(const st_ctx *c, st_entry *e, size_t n)
{
	qsort(e, n, sizeof *e, cmp_entry_offset);
	uint64_t at = 0, base = 8 + c->hlen;
	for (size_t i = 0; i < n; i++) {
		if (e[i].begin < at)
			return st_fail(c->err, MS_ERR_ST_OVERLAP, "%s: tensor '%s': byte %llu: data overlaps the tensor before, which ends at byte %llu",
				       c->path, e[i].t.name, (unsigned long long)(base + e[i].begin),
				       (unsigned long long)(base + at));
		if (e[i].begin > at)
			return st_fail(c->err, MS_ERR_ST_GAP, "%s: tensor '%s': byte %llu: data begins after a gap of %llu bytes (%s)",
				       c->path, e[i].t.name, (unsigned long long)(base + e[i].begin),
				       (unsigned long long)(e[i].begin - at), i ? "after the tensor before" : "the first tensor must begin at offset 0");
		at = e[i].end;
	}
	if (at != c->bufsize)
		return st_fail(c->err, MS_ERR_ST_UNCOVERED, "%s: %s%s%sbyte %llu: tensor data ends here but the file %s at byte %llu",
			       c->path, n ? "tensor '" : "", n ? e[n - 1].t.name : "", n ? "': " : "",
			       (unsigned long long)(base + at), at < c->bufsize ? "goes on to its end" : "ends",
			       (unsigned long long)(base + c->bufsize));
	return MS_OK;
}

/* ---- one file ---- */

static ms_status parse_metadata(const st_ctx *c, const cJSON *m, st_shard *sh)
{
	if (!cJSON_IsObject(m))
		return entry_fail(c, "__metadata__", "entry is not a JSON object of strings", NULL);
	size_t n = (size_t)cJSON_GetArraySize(m);
	sh->meta = calloc(2 * n + 1, sizeof *sh->meta);
	if (!sh->meta)
		return st_fail(c->err, MS_ERR_NOMEM, "%s: out of memory", c->path);
	const cJSON *v;
	cJSON_ArrayForEach(v, m) {
		if (!cJSON_IsString(v))
			return st_fail(c->err, MS_ERR_ST_ENTRY, "%s: tensor '__metadata__': byte %llu: value of '%s' is not a string",
				       c->path, (unsigned long long)key_offset(c, "__metadata__"), v->string);
		char *k = dup_str(v->string), *s = dup_str(v->valuestring);
		sh->meta[2 * sh->nmeta] = k;
		sh->meta[2 * sh->nmeta + 1] = s;
		sh->nmeta++;
		if (!k || !s)
			return st_fail(c->err, MS_ERR_NOMEM, "%s: out of memory", c->path);
	}
	return MS_OK;
}

static void free_entries(st_entry *e, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free((char *)e[i].t.name);
	free(e);
}

/* Every entry of the parsed header; on success the entries (sorted by name, names owned) go to *out. */
static ms_status parse_entries(const st_ctx *c, const cJSON *root, const char *data, st_shard *sh, st_entry **out,
			       size_t *nout)
{
	size_t cap = (size_t)cJSON_GetArraySize(root) + 1, n = 0;
	st_entry *e = calloc(cap, sizeof *e);
	if (!e)
		return st_fail(c->err, MS_ERR_NOMEM, "%s: out of memory", c->path);
	ms_status st = MS_OK;
	int seen_meta = 0;
	const cJSON *it;
	cJSON_ArrayForEach(it, root) {
		if (!strcmp(it->string, "__metadata__")) {
			st = seen_meta++ ? st_fail(c->err, MS_ERR_ST_DUPLICATE, "%s: tensor '__metadata__': byte %llu: appears twice in the header",
						  c->path, (unsigned long long)key_offset(c, "__metadata__"))
					 : parse_metadata(c, it, sh);
		} else {
			st_entry *x = &e[n];
			st = parse_entry(c, it, &x->t, &x->begin, &x->end);
			if (!st) {
				x->t.name = dup_str(it->string);
				st = x->t.name ? MS_OK : st_fail(c->err, MS_ERR_NOMEM, "%s: out of memory", c->path);
				n += x->t.name != NULL;
			}
		}
		if (st)
			break;
	}
	if (!st)
		st = check_duplicates(c, e, n);
	if (!st)
		st = check_tiling(c, e, n);
	if (st) {
		free_entries(e, n);
		return st;
	}
	for (size_t i = 0; i < n; i++) { /* only now are the offsets known to lie inside the file */
		e[i].t.data = data + e[i].begin;
		e[i].t.path = sh->path;
		e[i].t.file_offset = 8 + c->hlen + e[i].begin;
		e[i].t.fd = sh->fd;
	}
	qsort(e, n, sizeof *e, cmp_entry_name);
	*out = e;
	*nout = n;
	return MS_OK;
}

/* Offset of the first byte of text [len] that is not part of well-formed UTF-8 (no overlong forms, no surrogates,
 * nothing past U+10FFFF), or len. The reference reader refuses a header that is not UTF-8, and a name that is not
 * would make a checkpoint that no other tool reads. */
static size_t utf8_prefix(const unsigned char *text, size_t len)
{
	size_t i = 0;
	while (i < len) {
		unsigned char b = text[i];
		size_t n = b < 0x80 ? 0 : b >= 0xc2 && b <= 0xdf ? 1 : b >= 0xe0 && b <= 0xef ? 2 : b >= 0xf0 && b <= 0xf4 ? 3 : 4;
		if (n == 4 || len - i <= n)
			return i;
		/* the second byte's range excludes overlong forms, surrogates and code points past U+10FFFF */
		unsigned char lo = b == 0xe0 ? 0xa0 : b == 0xf0 ? 0x90 : 0x80;
		unsigned char hi = b == 0xed ? 0x9f : b == 0xf4 ? 0x8f : 0xbf;
		if (n && (text[i + 1] < lo || text[i + 1] > hi))
			return i;
		for (size_t k = 2; k <= n; k++)
			if ((text[i + k] & 0xc0) != 0x80)
				return i;
		i += n + 1;
	}
	return len;
}

/* text[len] (NUL-terminated) as one JSON object. cJSON stops at the end of the first value, so only whitespace may
 * follow it (the writer pads with spaces). *at is where parsing stopped, for messages. */
static cJSON *parse_object(const char *text, size_t len, size_t *at, const char **what)
{
	*at = utf8_prefix((const unsigned char *)text, len);
	if (*at < len) {
		*what = "not valid UTF-8";
		return NULL;
	}
	const char *end = NULL;
	cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
	*at = end ? (size_t)(end - text) : 0;
	*what = "not valid JSON";
	if (!root)
		return NULL;
	while (*at < len && text[*at] && strchr(" \t\r\n", text[*at]))
		(*at)++;
	if (*at != len || !cJSON_IsObject(root)) {
		if (!cJSON_IsObject(root))
			*at = 0; /* point at the value itself, not past it */
		*what = cJSON_IsObject(root) ? "a JSON object followed by something other than spaces" : "JSON but not an object";
		cJSON_Delete(root);
		return NULL;
	}
	return root;
}

static ms_status parse_header(const st_ctx *c, cJSON **out)
{
	size_t at;
	const char *what;
	*out = parse_object(c->hdr, (size_t)c->hlen, &at, &what);
	if (!*out)
		return st_fail(c->err, MS_ERR_ST_HEADER_JSON, "%s: byte %llu: header is %s", c->path,
			       (unsigned long long)(8 + at), what);
	return MS_OK;
}

/* Size rules on the raw file: 8 bytes of length, a header within the limit and within the file. */
static ms_status check_frame(const char *path, const unsigned char *map, uint64_t size, uint64_t *hlen, ms_error *err)
{
	if (size < 8)
		return st_fail(err, MS_ERR_ST_TRUNCATED, "%s: byte 0: file is %llu bytes, shorter than the 8-byte header length",
			       path, (unsigned long long)size);
	uint64_t n = 0;
	for (int i = 7; i >= 0; i--)
		n = n << 8 | map[i];
	if (n > ST_HEADER_LIMIT)
		return st_fail(err, MS_ERR_ST_HEADER_LIMIT, "%s: byte 0: header length %llu is over the limit of %llu bytes",
			       path, (unsigned long long)n, (unsigned long long)ST_HEADER_LIMIT);
	if (8 + n > size)
		return st_fail(err, MS_ERR_ST_HEADER_PAST_END, "%s: byte 8: header of %llu bytes runs past the end of the %llu-byte file",
			       path, (unsigned long long)n, (unsigned long long)size);
	*hlen = n;
	return MS_OK;
}

/* Maps sh->path whole; with keep_fd the descriptor stays open in sh->fd for bulk reads. */
static ms_status map_file(st_shard *sh, int keep_fd, ms_error *err)
{
	sh->fd = -1;
	int fd = open(sh->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO must not block us; it is refused below */
	if (fd < 0)
		return st_fail(err, MS_ERR_IO, "%s: cannot open: %s", sh->path, strerror(errno));
	struct stat sb;
	ms_status st = MS_OK;
	if (fstat(fd, &sb) != 0)
		st = st_fail(err, MS_ERR_IO, "%s: cannot stat: %s", sh->path, strerror(errno));
	else if (!S_ISREG(sb.st_mode))
		st = st_fail(err, MS_ERR_IO, "%s: not a regular file", sh->path);
	else if (sb.st_size > 0) {
		sh->size = (size_t)sb.st_size;
		void *m = mmap(NULL, sh->size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (m == MAP_FAILED)
			st = st_fail(err, MS_ERR_IO, "%s: cannot map: %s", sh->path, strerror(errno));
		else
			sh->map = m;
	}
	if (st == MS_OK && keep_fd)
		sh->fd = fd;
	else
		close(fd);
	return st;
}

/* Maps sh->path, checks it and appends its tensors to f. */
static ms_status open_shard(st_file *f, st_shard *sh, ms_error *err)
{
	ms_status st = map_file(sh, 1, err);
	uint64_t hlen = 0;
	if (!st)
		st = check_frame(sh->path, sh->map, sh->size, &hlen, err);
	if (st)
		return st;
	char *hdr = malloc((size_t)hlen + 1);
	if (!hdr)
		return st_fail(err, MS_ERR_NOMEM, "%s: out of memory for a %llu-byte header", sh->path,
			       (unsigned long long)hlen);
	memcpy(hdr, (const char *)sh->map + 8, (size_t)hlen);
	hdr[hlen] = '\0';
	st_ctx c = {sh->path, hdr, hlen, sh->size - 8 - hlen, err};
	cJSON *root = NULL;
	st_entry *e = NULL;
	size_t n = 0;
	st = parse_header(&c, &root);
	if (!st)
		st = parse_entries(&c, root, (const char *)sh->map + 8 + hlen, sh, &e, &n);
	cJSON_Delete(root);
	free(hdr);
	size_t i = 0;
	for (; !st && i < n; i++) {
		st = push_tensor(f, &e[i].t, err);
		if (!st)
			e[i].t.name = NULL; /* now owned by f */
	}
	free_entries(e, n);
	return st;
}

static int cmp_tensor_name(const void *a, const void *b)
{
	return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

static ms_status add_shard(st_file *f, const char *path, ms_error *err)
{
	st_shard *s = realloc(f->shards, (f->nshards + 1) * sizeof *s);
	if (!s)
		return st_fail(err, MS_ERR_NOMEM, "%s: out of memory", path);
	f->shards = s;
	st_shard *sh = &s[f->nshards];
	memset(sh, 0, sizeof *sh);
	sh->fd = -1;
	sh->path = dup_str(path);
	if (!sh->path)
		return st_fail(err, MS_ERR_NOMEM, "%s: out of memory", path);
	f->nshards++;
	return open_shard(f, sh, err);
}

/* ---- shard sets ---- */

/* The index file, whole (it is small; the limit keeps a wrong path from being read in full). */
static ms_status read_index(const char *path, cJSON **out, ms_error *err)
{
	st_shard tmp = {.path = (char *)path};
	ms_status st = map_file(&tmp, 0, err);
	if (st)
		return st;
	if (tmp.size > ST_HEADER_LIMIT) {
		munmap(tmp.map, tmp.size);
		return st_fail(err, MS_ERR_ST_INDEX, "%s: index of %zu bytes is over the %llu-byte limit", path, tmp.size,
			       (unsigned long long)ST_HEADER_LIMIT);
	}
	char *text = malloc(tmp.size + 1);
	if (text) {
		if (tmp.size)
			memcpy(text, tmp.map, tmp.size);
		text[tmp.size] = '\0';
	}
	if (tmp.map)
		munmap(tmp.map, tmp.size);
	if (!text)
		return st_fail(err, MS_ERR_NOMEM, "%s: out of memory", path);
	size_t at;
	const char *what;
	cJSON *root = parse_object(text, tmp.size, &at, &what);
	free(text);
	if (!root)
		return st_fail(err, MS_ERR_ST_INDEX, "%s: byte %zu: index is %s", path, at, what);
	*out = root;
	return MS_OK;
}

static int shard_name_ok(const char *s)
{
	return s[0] && !strchr(s, '/') && !strstr(s, "..");
}

/* One weight_map entry. Kept as a sorted array: cJSON looks keys up by walking a list, which is quadratic over
 * the tens of thousands of tensors of a large checkpoint. */
typedef struct {
	const char *name;  /* inside the parsed index */
	const char *shard;
} st_map_entry;

static int cmp_map_name(const void *a, const void *b)
{
	return strcmp(((const st_map_entry *)a)->name, ((const st_map_entry *)b)->name);
}

static int cmp_map_shard(const void *a, const void *b)
{
	return strcmp(((const st_map_entry *)a)->shard, ((const st_map_entry *)b)->shard);
}

/* weight_map as entries sorted by name: an object of shard file names inside the index's directory, no name
 * twice (cJSON keeps repeated keys). */
static ms_status load_weight_map(const char *path, const cJSON *wm, st_map_entry **out, size_t *nout, ms_error *err)
{
	if (!cJSON_IsObject(wm))
		return st_fail(err, MS_ERR_ST_INDEX, "%s: \"weight_map\" is missing or not an object", path);
	size_t n = 0;
	st_map_entry *m = malloc(((size_t)cJSON_GetArraySize(wm) + 1) * sizeof *m);
	if (!m)
		return st_fail(err, MS_ERR_NOMEM, "%s: out of memory", path);
	const cJSON *v;
	ms_status st = MS_OK;
	cJSON_ArrayForEach(v, wm) {
		if (!cJSON_IsString(v))
			st = st_fail(err, MS_ERR_ST_INDEX, "%s: tensor '%s': weight_map value is not a string", path, v->string);
		else if (!shard_name_ok(v->valuestring))
			st = st_fail(err, MS_ERR_ST_INDEX, "%s: tensor '%s': shard name \"%s\" is empty or leaves the directory",
				     path, v->string, v->valuestring);
		if (st)
			break;
		m[n++] = (st_map_entry){v->string, v->valuestring};
	}
	qsort(m, n, sizeof *m, cmp_map_name);
	for (size_t i = 1; !st && i < n; i++) {
		if (!strcmp(m[i - 1].name, m[i].name))
			st = st_fail(err, MS_ERR_ST_INDEX, "%s: tensor '%s': listed twice in weight_map", path, m[i].name);
	}
	if (st) {
		free(m);
		return st;
	}
	*out = m;
	*nout = n;
	return MS_OK;
}

static const char *base_name(const char *path)
{
	const char *s = strrchr(path, '/');
	return s ? s + 1 : path;
}

/* Tensors (sorted by name) against the map (sorted by name): the same names, each in the shard the map says. */
static ms_status check_mapping(const st_file *f, const char *path, const st_map_entry *m, size_t nm, ms_error *err)
{
	size_t j = 0;
	for (size_t i = 0; i < f->ntensors; i++) {
		const st_tensor *t = &f->tensors[i];
		if (i && !strcmp(f->tensors[i - 1].name, t->name))
			return st_fail(err, MS_ERR_ST_INDEX, "%s: tensor '%s': found in two shards, %s and %s", path, t->name,
				       f->tensors[i - 1].path, t->path);
		while (j < nm && strcmp(m[j].name, t->name) < 0)
			j++;
		if (j == nm || strcmp(m[j].name, t->name))
			return st_fail(err, MS_ERR_ST_INDEX, "%s: tensor '%s': in shard %s but not in weight_map", path, t->name,
				       t->path);
		if (strcmp(m[j].shard, base_name(t->path)))
			return st_fail(err, MS_ERR_ST_INDEX, "%s: tensor '%s': weight_map says %s but it is in %s", path,
				       t->name, m[j].shard, t->path);
	}
	for (size_t k = 0; k < nm; k++) {
		if (!st_find(f, m[k].name))
			return st_fail(err, MS_ERR_ST_INDEX, "%s: tensor '%s': in weight_map but not in shard %s", path,
				       m[k].name, m[k].shard);
	}
	return MS_OK;
}

static ms_status check_total(const st_file *f, const char *path, const cJSON *root, ms_error *err)
{
	const cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "metadata");
	if (meta && !cJSON_IsObject(meta))
		return st_fail(err, MS_ERR_ST_INDEX, "%s: \"metadata\" is not an object", path);
	const cJSON *tot = meta ? cJSON_GetObjectItemCaseSensitive(meta, "total_size") : NULL;
	if (!tot)
		return MS_OK;
	uint64_t want, sum = 0;
	if (json_uint(tot, &want) <= 0)
		return st_fail(err, MS_ERR_ST_INDEX, "%s: metadata.total_size is not a non-negative integer", path);
	for (size_t i = 0; i < f->ntensors; i++)
		sum += f->tensors[i].nbytes; /* each is below the file size; no overflow */
	if (sum != want)
		return st_fail(err, MS_ERR_ST_INDEX, "%s: metadata.total_size is %llu but the tensors hold %llu bytes", path,
			       (unsigned long long)want, (unsigned long long)sum);
	return MS_OK;
}

/* Opens each distinct shard once, in name order (which is the numbered order). m is re-sorted by shard. */
static ms_status open_shards(st_file *f, const char *path, st_map_entry *m, size_t nm, ms_error *err)
{
	qsort(m, nm, sizeof *m, cmp_map_shard);
	size_t dlen = (size_t)(base_name(path) - path);
	char *dir = strndup(path, dlen);
	ms_status st = dir ? MS_OK : st_fail(err, MS_ERR_NOMEM, "%s: out of memory", path);
	for (size_t i = 0; !st && i < nm; i++) {
		if (i && !strcmp(m[i - 1].shard, m[i].shard))
			continue;
		char *sp = join_path(dir, m[i].shard);
		st = sp ? add_shard(f, sp, err) : st_fail(err, MS_ERR_NOMEM, "%s: out of memory", path);
		if (st == MS_ERR_IO) { /* a shard that is not there is the index's fault; a broken one keeps its code */
			char why[sizeof err->msg];
			snprintf(why, sizeof why, "%s", err ? err->msg : "");
			st = st_fail(err, MS_ERR_ST_INDEX, "%s: tensor '%s': shard does not open (%s)", path, m[i].name, why);
		}
		free(sp);
	}
	free(dir);
	return st;
}

static ms_status open_index(st_file *f, const char *path, ms_error *err)
{
	cJSON *root = NULL;
	st_map_entry *m = NULL;
	size_t nm = 0;
	ms_status st = read_index(path, &root, err);
	if (!st)
		st = load_weight_map(path, cJSON_GetObjectItemCaseSensitive(root, "weight_map"), &m, &nm, err);
	if (!st)
		st = open_shards(f, path, m, nm, err);
	if (!st) {
		qsort(f->tensors, f->ntensors, sizeof *f->tensors, cmp_tensor_name);
		qsort(m, nm, sizeof *m, cmp_map_name);
		st = check_mapping(f, path, m, nm, err);
	}
	if (!st)
		st = check_total(f, path, root, err);
	free(m);
	cJSON_Delete(root);
	return st;
}

static int ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && !strcmp(s + a - b, suffix);
}

/* A directory: its index when there is one, else its single file. */
static ms_status open_dir(st_file *f, const char *dir, ms_error *err)
{
	char *idx = join_path(dir, ST_INDEX_NAME), *one = join_path(dir, ST_SINGLE_NAME);
	ms_status st;
	if (!idx || !one)
		st = st_fail(err, MS_ERR_NOMEM, "%s: out of memory", dir);
	else if (access(idx, F_OK) == 0 || errno != ENOENT) /* there but unusable (a symlink loop): opening says why */
		st = open_index(f, idx, err);
	else if (access(one, F_OK) == 0 || errno != ENOENT)
		st = add_shard(f, one, err);
	else
		st = st_fail(err, MS_ERR_IO, "%s: neither %s nor %s is there", dir, ST_INDEX_NAME, ST_SINGLE_NAME);
	free(idx);
	free(one);
	return st;
}

ms_status st_open(const char *path, st_file **out, ms_error *err)
{
	if (!path || !*path || !out)
		return st_fail(err, MS_ERR_ARG, "st_open: no path");
	*out = NULL;
	st_file *f = calloc(1, sizeof *f);
	if (!f || !(f->path = dup_str(path))) {
		free(f);
		return st_fail(err, MS_ERR_NOMEM, "%s: out of memory", path);
	}
	struct stat sb;
	ms_status st;
	if (stat(path, &sb) != 0)
		st = st_fail(err, MS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
	else if (S_ISDIR(sb.st_mode))
		st = open_dir(f, path, err);
	else if (ends_with(path, ".index.json"))
		st = open_index(f, path, err);
	else
		st = add_shard(f, path, err);
	if (st) {
		st_close(f);
		return st;
	}
	*out = f;
	return MS_OK;
}

/* ---- queries ---- */

size_t st_count(const st_file *f)
{
	return f ? f->ntensors : 0;
}

const st_tensor *st_get(const st_file *f, size_t i)
{
	return f && i < f->ntensors ? &f->tensors[i] : NULL;
}

const st_tensor *st_find(const st_file *f, const char *name)
{
	if (!f || !name)
		return NULL;
	size_t lo = 0, hi = f->ntensors;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(f->tensors[mid].name, name);
		if (!c)
			return &f->tensors[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

const char *st_metadata(const st_file *f, const char *key)
{
	if (!f || !f->nshards || !key)
		return NULL;
	const st_shard *s = &f->shards[0];
	for (size_t i = 0; i < s->nmeta; i++) {
		if (!strcmp(s->meta[2 * i], key))
			return s->meta[2 * i + 1];
	}
	return NULL;
}

const char *st_path(const st_file *f)
{
	return f ? f->path : NULL;
}

size_t st_shard_count(const st_file *f)
{
	return f ? f->nshards : 0;
}

const char *st_shard_path(const st_file *f, size_t i)
{
	return f && i < f->nshards ? f->shards[i].path : NULL;
}

/* ---- row conversions ---- */

/* The row loops below work in blocks of ST_BLOCK values: each block is copied into a local array (a memcpy, as the
 * mapped data need not be aligned), converted lane by lane with no branch and copied out. A loop with a fixed trip
 * count, no aliasing (restrict, local arrays) and only selects is what gcc's -O2 vectoriser accepts; the last
 * partial block goes through the same lane functions one value at a time. Files are little-endian; a big-endian
 * host swaps each value's bytes after loading and before storing. */
#define ST_BLOCK 32

#if defined(__BYTE_ORDER__) && defined(__ORDER_BIG_ENDIAN__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define ST_HOST_BIG_ENDIAN 1
#else
#define ST_HOST_BIG_ENDIAN 0
#endif

static uint16_t le16(uint16_t v)
{
	return ST_HOST_BIG_ENDIAN ? (uint16_t)(v >> 8 | v << 8) : v;
}

static uint32_t le32(uint32_t v)
{
	return ST_HOST_BIG_ENDIAN ? (v >> 24) | (v >> 8 & 0xff00u) | (v << 8 & 0xff0000u) | (v << 24) : v;
}

/* Lane functions, branch-free; each equals the scalar conversion above for every input (tests/test_safetensors.c
 * checks all 65,536 codes and random floats). A lane's "exponent all ones" bit: adding one unit of the
 * exponent field to the masked exponent carries into the sign position exactly when every exponent bit is set,
 * i.e. for infinity and NaN, so OR-ing that bit over a row screens it in the same pass. */
static uint32_t bf16_lane(uint16_t h) /* float32 bits */
{
	return (uint32_t)h << 16;
}

static uint16_t bf16_nonfinite(uint16_t h)
{
	return (uint16_t)(((h & 0x7f80u) + 0x0080u) & 0x8000u);
}

static uint16_t f16_nonfinite(uint16_t h)
{
	return (uint16_t)(((h & 0x7c00u) + 0x0400u) & 0x8000u);
}

static uint32_t f32_nonfinite(uint32_t u)
{
	return ((u & 0x7f800000u) + 0x00800000u) & 0x80000000u;
}

/* F16 to float32 bits. A normal half moves its exponent from bias 15 to bias 127 (+112) and its mantissa up 13
 * bits; infinity and NaN keep an all-ones exponent and the mantissa (the payload) moved up; a zero or subnormal
 * is mant * 2^-24, an exact float32 (an integer below 2^10 times a power of two). All three are computed and the
 * exponent picks one with masks. */
static inline uint32_t f16_lane(uint16_t h)
{
	const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
	const uint32_t em = h & 0x7fffu;      /* exponent and mantissa */
	const uint32_t exp = em >> 10;
	const uint32_t normal = (em << 13) + (112u << 23);
	const uint32_t special = (em << 13) | 0x7f800000u;
	const uint32_t tiny = f32_bits((float)(int32_t)em * 0x1p-24f); /* meaningful when exp == 0 */
	const uint32_t is_tiny = 0u - (uint32_t)(exp == 0), is_special = 0u - (uint32_t)(exp == 0x1f);
	const uint32_t r = (tiny & is_tiny) | (special & is_special) | (normal & ~(is_tiny | is_special));
	return sign | r;
}

/* Float32 bits to BF16, as st_f32_to_bf16: round half to even by adding 0x7fff plus the lowest kept bit; a NaN
 * keeps its top bits and gets the quiet bit, so it cannot round into infinity. */
static uint16_t bf16_round_lane(uint32_t u)
{
	const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
	const uint32_t quiet = (u >> 16) | 0x0040u;
	const uint32_t is_nan = 0u - (uint32_t)((int32_t)(u & 0x7fffffffu) > 0x7f800000);
	return (uint16_t)((quiet & is_nan) | (rounded & ~is_nan));
}

/* Float32 bits to F16, as st_f32_to_f16, without branches. Normal halves: subtracting 112 from the exponent and
 * rounding the 13 dropped bits half to even (adding 0xfff plus the lowest kept bit) in one integer sum, a carry
 * moving correctly into the exponent. Subnormal halves and values that round to zero: |x| + 0.5f puts the
 * value's units of 2^-24 (the spacing of float32 in [0.5, 1)) into the low mantissa bits, rounded to nearest
 * even by the addition itself (the technique of F. Giesen's float_to_half_fast3_rtne); the bits of 0.5f are then
 * subtracted. This relies on float arithmetic rounding to nearest in float precision (FLT_EVAL_METHOD 0, default
 * rounding mode, no flush to zero; moescope changes none of these); without FLT_EVAL_METHOD 0 the scalar
 * function is used. */
static inline uint16_t f16_round_lane(uint32_t u)
{
	const uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
	const int32_t sa = (int32_t)a;      /* a < 2^31: signed compares are exact and vectorise on plain SSE2 */
	const uint32_t quiet_nan = 0x7e00u | ((a >> 13) & 0x3ffu);
	const uint32_t normal = (a - (112u << 23) + 0xfffu + ((a >> 13) & 1u)) >> 13;
	const uint32_t sub = f32_bits(bits_f32(a) + 0.5f) - 0x3f000000u;
	const uint32_t is_nan = 0u - (uint32_t)(sa > 0x7f800000);
	const uint32_t is_inf = (0u - (uint32_t)(sa >= 0x477ff000)) & ~is_nan; /* 65520 and up round to infinity */
	const uint32_t is_normal = (0u - (uint32_t)(sa >= 0x38800000)) & ~(is_inf | is_nan); /* >= 2^-14 */
	const uint32_t is_sub = ~(is_nan | is_inf | is_normal);
	const uint32_t h = (quiet_nan & is_nan) | (0x7c00u & is_inf) | (normal & is_normal) | (sub & is_sub);
	return (uint16_t)(sign | h);
}

/* Loads and stores of one value in file order at any alignment (memcpy compiles to a plain load or store). */
static uint16_t get16(const unsigned char *p)
{
	uint16_t v;
	memcpy(&v, p, sizeof v);
	return le16(v);
}

static uint32_t get32(const unsigned char *p)
{
	uint32_t v;
	memcpy(&v, p, sizeof v);
	return le32(v);
}

static void put16(unsigned char *p, uint16_t v)
{
	v = le16(v);
	memcpy(p, &v, sizeof v);
}

static void put_f32(float *p, uint32_t bits)
{
	memcpy(p, &bits, sizeof bits);
}

/* Each row loop keeps one "non-finite" flag per lane of a block and ORs them together at the end. */
static int bf16_row_to_f32(const unsigned char *restrict src, float *restrict dst, size_t n)
{
	uint16_t bad[ST_BLOCK] = {0};
	size_t i = 0;
	for (; i + ST_BLOCK <= n; i += ST_BLOCK) {
		for (int k = 0; k < ST_BLOCK; k++) {
			const uint16_t h = get16(src + 2 * (i + k));
			put_f32(dst + i + k, bf16_lane(h));
			bad[k] |= bf16_nonfinite(h);
		}
	}
	for (int k = 0; i < n; i++, k++) {
		const uint16_t h = get16(src + 2 * i);
		put_f32(dst + i, bf16_lane(h));
		bad[k] |= bf16_nonfinite(h);
	}
	uint16_t any = 0;
	for (int k = 0; k < ST_BLOCK; k++)
		any |= bad[k];
	return any != 0;
}

static int f16_row_to_f32(const unsigned char *restrict src, float *restrict dst, size_t n)
{
	uint16_t bad[ST_BLOCK] = {0};
	size_t i = 0;
	for (; i + ST_BLOCK <= n; i += ST_BLOCK) {
		for (int k = 0; k < ST_BLOCK; k++) {
			const uint16_t h = get16(src + 2 * (i + k));
			put_f32(dst + i + k, f16_lane(h));
			bad[k] |= f16_nonfinite(h);
		}
	}
	for (int k = 0; i < n; i++, k++) {
		const uint16_t h = get16(src + 2 * i);
		put_f32(dst + i, f16_lane(h));
		bad[k] |= f16_nonfinite(h);
	}
	uint16_t any = 0;
	for (int k = 0; k < ST_BLOCK; k++)
		any |= bad[k];
	return any != 0;
}

static int f32_row_to_f32(const unsigned char *restrict src, float *restrict dst, size_t n)
{
	uint32_t bad[ST_BLOCK] = {0};
	size_t i = 0;
	for (; i + ST_BLOCK <= n; i += ST_BLOCK) {
		for (int k = 0; k < ST_BLOCK; k++) {
			const uint32_t u = get32(src + 4 * (i + k));
			put_f32(dst + i + k, u);
			bad[k] |= f32_nonfinite(u);
		}
	}
	for (int k = 0; i < n; i++, k++) {
		const uint32_t u = get32(src + 4 * i);
		put_f32(dst + i, u);
		bad[k] |= f32_nonfinite(u);
	}
	uint32_t any = 0;
	for (int k = 0; k < ST_BLOCK; k++)
		any |= bad[k];
	return any != 0;
}

int st_row_to_f32(st_dtype dt, const void *src, float *dst, size_t n)
{
	switch (dt) {
	case ST_F32: return f32_row_to_f32(src, dst, n);
	case ST_F16: return f16_row_to_f32(src, dst, n);
	case ST_BF16: return bf16_row_to_f32(src, dst, n);
	default: return -1;
	}
}

static void bf16_row_from_f32(const float *restrict src, unsigned char *restrict dst, size_t n)
{
	size_t i = 0;
	for (; i + ST_BLOCK <= n; i += ST_BLOCK)
		for (int k = 0; k < ST_BLOCK; k++)
			put16(dst + 2 * (i + k), bf16_round_lane(f32_bits(src[i + k])));
	for (; i < n; i++)
		put16(dst + 2 * i, bf16_round_lane(f32_bits(src[i])));
}

static void f16_row_from_f32(const float *restrict src, unsigned char *restrict dst, size_t n)
{
	size_t i = 0;
#if FLT_EVAL_METHOD == 0
	for (; i + ST_BLOCK <= n; i += ST_BLOCK)
		for (int k = 0; k < ST_BLOCK; k++)
			put16(dst + 2 * (i + k), f16_round_lane(f32_bits(src[i + k])));
#endif
	for (; i < n; i++)
		put16(dst + 2 * i, st_f32_to_f16(src[i]));
}

static void f32_row_from_f32(const float *restrict src, unsigned char *restrict dst, size_t n)
{
	if (!ST_HOST_BIG_ENDIAN) {
		memcpy(dst, src, n * sizeof *src);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const uint32_t u = le32(f32_bits(src[i]));
		memcpy(dst + 4 * i, &u, sizeof u);
	}
}

int st_row_from_f32(st_dtype dt, const float *src, void *dst, size_t n)
{
	switch (dt) {
	case ST_F32: f32_row_from_f32(src, dst, n); return 0;
	case ST_F16: f16_row_from_f32(src, dst, n); return 0;
	case ST_BF16: bf16_row_from_f32(src, dst, n); return 0;
	default: return -1;
	}
}

/* ---- reading rows as float32 ---- */

/* Reads of at least ST_STREAM_MIN bytes of float32 (far more than a core's caches hold, so nothing read soon after
 * would still find them there) write BF16 rows with non-temporal stores where SSE2 has them. An ordinary store
 * first reads its cache line from memory, so a conversion moved 2 + 4 + 4 bytes per value; streaming stores skip
 * that read, leaving 2 + 4: the load of a block was bound by that traffic (docs/design.md section 7). The values
 * are the same bits as bf16_lane's, and the non-finite screen is bf16_nonfinite's test done as a compare. */
#define ST_STREAM_MIN ((uint64_t)4 << 20)

#if defined(__SSE2__) && !ST_HOST_BIG_ENDIAN
#define ST_STREAM 1
static int bf16_row_to_f32_stream(const unsigned char *restrict src, float *restrict dst, size_t n)
{
	size_t i = 0;
	int bad = 0;
	for (; i < n && ((uintptr_t)(dst + i) & 15u) != 0; i++) { /* up to the first 16-byte boundary */
		const uint16_t h = get16(src + 2 * i);
		put_f32(dst + i, bf16_lane(h));
		bad |= bf16_nonfinite(h) != 0;
	}
	const __m128i exp = _mm_set1_epi16(0x7f80), zero = _mm_setzero_si128();
	__m128i flags = zero;
	for (; i + 8 <= n; i += 8) {
		const __m128i h = _mm_loadu_si128((const __m128i *)(const void *)(src + 2 * i));
		flags = _mm_or_si128(flags, _mm_cmpeq_epi16(_mm_and_si128(h, exp), exp));
		/* each 16-bit code becomes the high half of a 32-bit lane whose low half is zero: h << 16 */
		_mm_stream_si128((__m128i *)(void *)(dst + i), _mm_unpacklo_epi16(zero, h));
		_mm_stream_si128((__m128i *)(void *)(dst + i + 4), _mm_unpackhi_epi16(zero, h));
	}
	for (; i < n; i++) {
		const uint16_t h = get16(src + 2 * i);
		put_f32(dst + i, bf16_lane(h));
		bad |= bf16_nonfinite(h) != 0;
	}
	return bad || _mm_movemask_epi8(flags) != 0;
}
#else
#define ST_STREAM 0
#endif

/* One row, streamed when stream is set and this build can. */
static int row_to_f32(st_dtype dt, const unsigned char *src, float *dst, size_t n, int stream)
{
#if ST_STREAM
	if (stream && dt == ST_BF16)
		return bf16_row_to_f32_stream(src, dst, n);
#else
	(void)stream;
#endif
	return st_row_to_f32(dt, src, dst, n);
}

static int64_t row_count(const st_tensor *t)
{
	return t->ndim ? t->shape[0] : 1;
}

/* Bulk reads (those that stream, above) go through pread(2) into a small buffer, ST_CHUNK bytes of the file at a
 * time, which stays in the core's L2 cache while it is converted, rather than through the mapping: every 4 KiB page
 * of a mapping read once costs a page fault to map it and its share of the unmapping after, system time that
 * measured more than the kernel's copy into the buffer (docs/design.md section 7). The values are the same bytes
 * through the same conversion, so the floats are the same; memory stays bounded by one buffer per reading thread.
 * A file cut short since it was opened is reported here as an error rather than a SIGBUS. */
#define ST_CHUNK ((size_t)256 << 10)

/* n bytes of t's file at offset into buf, retried over short counts and interrupts. */
static ms_status pread_all(const st_tensor *t, unsigned char *buf, size_t n, uint64_t offset, ms_error *err)
{
	size_t got = 0;
	while (got < n) {
		const ssize_t r = pread(t->fd, buf + got, n - got, (off_t)(offset + got));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return st_fail(err, MS_ERR_IO, "%s: tensor '%s': byte %llu: cannot read: %s", t->path, t->name,
				       (unsigned long long)(offset + got), strerror(errno));
		if (r == 0)
			return st_fail(err, MS_ERR_ST_TRUNCATED,
				       "%s: tensor '%s': byte %llu: the file ends there, inside the tensor's data "
				       "(it was cut short after it was opened)",
				       t->path, t->name, (unsigned long long)(offset + got));
		got += (size_t)r;
	}
	return MS_OK;
}

/* st_read_rows_f32's rows [row0, row0 + nrows) of len values each, read with pread chunk by chunk. */
static ms_status read_rows_pread(const st_tensor *t, int64_t row0, int64_t nrows, uint64_t len, float *out,
				 int stream, ms_error *err)
{
	const size_t es = st_dtype_size(t->dtype);
	const uint64_t total = (uint64_t)nrows * len, per = ST_CHUNK / es; /* values in all, values per chunk */
	unsigned char *buf = malloc((size_t)(total < per ? total : per) * es);
	if (!buf)
		return st_fail(err, MS_ERR_NOMEM, "%s: tensor '%s': out of memory", t->path, t->name);
	const uint64_t at = t->file_offset + (uint64_t)row0 * len * es;
	ms_status st = MS_OK;
	for (uint64_t done = 0; st == MS_OK && done < total; done += per) {
		const uint64_t n = total - done < per ? total - done : per;
		st = pread_all(t, buf, (size_t)(n * es), at + done * es, err);
		if (st == MS_OK && row_to_f32(t->dtype, buf, out + done, (size_t)n, stream)) {
			const int64_t bad = st_first_nonfinite_raw(t->dtype, buf, n);   /* the first, as the row loop finds */
			st = st_fail(err, MS_ERR_NONFINITE, "%s: tensor '%s': row %lld: NaN or infinity", t->path, t->name,
				     (long long)(row0 + (int64_t)((done + (uint64_t)(bad >= 0 ? bad : 0)) / len)));
		}
	}
	free(buf);
	return st;
}

ms_status st_read_rows_f32(const st_tensor *t, int64_t row0, int64_t nrows, float *out, ms_error *err)
{
	if (!t)
		return st_fail(err, MS_ERR_ARG, "st_read_rows_f32: no tensor");
	int64_t rows = row_count(t);
	if (row0 < 0 || nrows < 0 || row0 > rows || nrows > rows - row0 || (!out && nrows > 0))
		return st_fail(err, MS_ERR_ARG, "%s: tensor '%s': rows [%lld, +%lld) outside its %lld rows", t->path,
			       t->name, (long long)row0, (long long)nrows, (long long)rows);
	if (!st_dtype_is_float(t->dtype))
		return st_fail(err, MS_ERR_ST_DTYPE, "%s: tensor '%s': dtype %s does not convert to float32", t->path,
			       t->name, st_dtype_name(t->dtype));
	if (!rows || !nrows)
		return MS_OK;
	uint64_t len = t->numel / (uint64_t)rows; /* elements per row */
	size_t es = st_dtype_size(t->dtype);
	const unsigned char *src = (const unsigned char *)t->data + (uint64_t)row0 * len * es;
	const int stream = (uint64_t)nrows * len * sizeof *out >= ST_STREAM_MIN;
	const int bulk = stream && t->fd > 0;   /* from the file, not the mapping: ST_CHUNK */
	ms_status st = bulk ? read_rows_pread(t, row0, nrows, len, out, stream, err) : MS_OK;
	for (int64_t r = 0; !bulk && r < nrows; r++) {
		float *dst = out + (uint64_t)r * len; /* [len] */
		if (row_to_f32(t->dtype, src + (uint64_t)r * len * es, dst, (size_t)len, stream)) {
			st = st_fail(err, MS_ERR_NONFINITE, "%s: tensor '%s': row %lld: NaN or infinity", t->path, t->name,
				     (long long)(row0 + r));
			break;
		}
	}
#if ST_STREAM
	if (stream)
		_mm_sfence(); /* streamed stores are weakly ordered: make them visible before anyone reads out */
#endif
	return st;
}

ms_status st_read_bytes(const st_tensor *t, uint64_t offset, size_t n, void *buf, ms_error *err)
{
	if (!t || (!buf && n) || offset > t->nbytes || n > t->nbytes - offset)
		return st_fail(err, MS_ERR_ARG, "st_read_bytes: bytes [%llu, +%zu) outside tensor '%s'",
			       (unsigned long long)offset, n, t ? t->name : "?");
	if (!n)
		return MS_OK;
	if (t->fd > 0)
		return pread_all(t, buf, n, t->file_offset + offset, err);
	memcpy(buf, (const unsigned char *)t->data + offset, n);
	return MS_OK;
}

ms_status st_read_f32(const st_tensor *t, float *out, ms_error *err)
{
	if (!t)
		return st_fail(err, MS_ERR_ARG, "st_read_f32: no tensor");
	return st_read_rows_f32(t, 0, row_count(t), out, err);
}

/* ---- writer ---- */

typedef struct {
	char *name;
	st_dtype dtype;
	int ndim;
	int64_t shape[ST_MAX_DIMS];
	uint64_t nbytes;
	size_t shard;
	uint64_t begin; /* within its shard's data buffer */
} st_wtensor;

typedef struct {
	size_t first, count; /* tensors [first, first + count), in declaration order */
	uint64_t bytes;
	char *path;
} st_wshard;

struct st_writer {
	char *dir, *base;
	uint64_t max_shard;    /* 0: no limit */
	st_wtensor *t;         /* [nt] in declaration order */
	size_t nt, cap;
	char **meta;           /* [2 * nmeta]: key, value pairs; "format" first */
	size_t nmeta;
	st_wshard *shards;     /* [nshards], fixed by the first write or by finish */
	size_t nshards;
	size_t cur;            /* tensor receiving data */
	uint64_t done;         /* bytes of it written */
	FILE *fp;              /* shard opened - 1, or NULL */
	size_t opened;         /* shards created so far */
	char **created;        /* [ncreated] files this writer made */
	size_t ncreated;
	ms_status failed;      /* sticky: after an I/O error nothing more is written */
	int finished;
};

/* A growing text buffer for headers and the index; an allocation failure is remembered and reported once. */
typedef struct {
	char *p;
	size_t n, cap;
	int oom;
} st_buf;

static void buf_add(st_buf *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (b->n + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->n + n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p) {
			b->oom = 1;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = '\0';
}

static void buf_str(st_buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

static void buf_u64(st_buf *b, uint64_t v)
{
	char s[24];
	buf_add(b, s, (size_t)snprintf(s, sizeof s, "%llu", (unsigned long long)v));
}

/* A JSON string literal: quotes, backslashes and control characters escaped (the common ones in their short
 * form); other bytes as they are (UTF-8). */
static void buf_json(st_buf *b, const char *s)
{
	static const char ctl[] = "\b\f\n\r\t", ctl_short[] = "bfnrt";
	buf_add(b, "\"", 1);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		const char *k = ch ? strchr(ctl, ch) : NULL;
		char esc[8];
		if (ch == '"' || ch == '\\')
			buf_add(b, esc, (size_t)snprintf(esc, sizeof esc, "\\%c", ch));
		else if (k)
			buf_add(b, esc, (size_t)snprintf(esc, sizeof esc, "\\%c", ctl_short[k - ctl]));
		else if (ch < 0x20)
			buf_add(b, esc, (size_t)snprintf(esc, sizeof esc, "\\u%04x", ch));
		else
			buf_add(b, s, 1);
	}
	buf_add(b, "\"", 1);
}

static ms_status writer_fail(st_writer *w, ms_error *err, ms_status code, const char *path, const char *what)
{
	w->failed = code;
	return st_fail(err, code, "%s: %s: %s", path, what, strerror(errno));
}

ms_status st_writer_create(const char *dir, const char *file_base, uint64_t max_shard_bytes, st_writer **out,
			   ms_error *err)
{
	if (!out || !dir || !*dir || !file_base || !*file_base || strchr(file_base, '/'))
		return st_fail(err, MS_ERR_ARG, "st_writer_create: need a directory and a file base without '/'");
	*out = NULL;
	st_writer *w = calloc(1, sizeof *w);
	if (w) {
		w->dir = dup_str(dir);
		w->base = dup_str(file_base);
		w->meta = calloc(2, sizeof *w->meta);
		if (w->meta) {
			w->meta[0] = dup_str("format");
			w->meta[1] = dup_str("pt");
			w->nmeta = 1;
		}
	}
	if (!w || !w->dir || !w->base || !w->meta || !w->meta[0] || !w->meta[1]) {
		st_writer_free(w);
		return st_fail(err, MS_ERR_NOMEM, "%s: out of memory", dir);
	}
	w->max_shard = max_shard_bytes;
	*out = w;
	return MS_OK;
}

/* Declarations and metadata are closed once the shards are laid out. */
static ms_status check_open_for_declare(const st_writer *w, const char *what, ms_error *err)
{
	if (w->shards || w->finished)
		return st_fail(err, MS_ERR_ARG, "%s/%s: %s after data was written", w->dir, w->base, what);
	return MS_OK;
}

ms_status st_writer_metadata(st_writer *w, const char *key, const char *value, ms_error *err)
{
	if (!w || !key || !value)
		return st_fail(err, MS_ERR_ARG, "st_writer_metadata: missing key or value");
	ms_status st = check_open_for_declare(w, "metadata", err);
	if (st)
		return st;
	char *v = dup_str(value);
	if (!v)
		return st_fail(err, MS_ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < w->nmeta; i++) {
		if (!strcmp(w->meta[2 * i], key)) { /* a key set again keeps its place and takes the new value */
			free(w->meta[2 * i + 1]);
			w->meta[2 * i + 1] = v;
			return MS_OK;
		}
	}
	char **m = realloc(w->meta, 2 * (w->nmeta + 1) * sizeof *m);
	char *k = m ? dup_str(key) : NULL;
	if (m)
		w->meta = m;
	if (!k) {
		free(v);
		return st_fail(err, MS_ERR_NOMEM, "out of memory");
	}
	w->meta[2 * w->nmeta] = k;
	w->meta[2 * w->nmeta + 1] = v;
	w->nmeta++;
	return MS_OK;
}

static ms_status check_decl(const st_writer *w, const char *name, st_dtype dtype, int ndim, const int64_t *shape,
			    uint64_t *nbytes, ms_error *err)
{
	if (!name || !*name || !strcmp(name, "__metadata__"))
		return st_fail(err, MS_ERR_ARG, "%s/%s: tensor '%s': not a usable tensor name", w->dir, w->base,
			       name ? name : "(null)");
	if ((unsigned)dtype >= ST_DTYPE_COUNT || ndim < 0 || ndim > ST_MAX_DIMS || (ndim && !shape))
		return st_fail(err, MS_ERR_ARG, "%s/%s: tensor '%s': bad dtype or rank", w->dir, w->base, name);
	uint64_t n = st_dtype_size(dtype);
	for (int k = 0; k < ndim; k++) {
		if (shape[k] < 0 || __builtin_mul_overflow(n, (uint64_t)shape[k], &n))
			return st_fail(err, MS_ERR_ARG, "%s/%s: tensor '%s': dimension %d is negative or the size overflows",
				       w->dir, w->base, name, k);
	}
	*nbytes = n;
	return MS_OK;
}

ms_status st_writer_declare(st_writer *w, const char *name, st_dtype dtype, int ndim, const int64_t *shape,
			    ms_error *err)
{
	if (!w)
		return st_fail(err, MS_ERR_ARG, "st_writer_declare: no writer");
	uint64_t nbytes = 0;
	ms_status st = check_open_for_declare(w, "declaration", err);
	if (!st)
		st = check_decl(w, name, dtype, ndim, shape, &nbytes, err);
	if (st)
		return st;
	if (w->nt == w->cap) {
		size_t cap = w->cap ? 2 * w->cap : 64;
		st_wtensor *t = realloc(w->t, cap * sizeof *t);
		if (!t)
			return st_fail(err, MS_ERR_NOMEM, "out of memory");
		w->t = t;
		w->cap = cap;
	}
	st_wtensor *t = &w->t[w->nt];
	memset(t, 0, sizeof *t);
	if (!(t->name = dup_str(name)))
		return st_fail(err, MS_ERR_NOMEM, "out of memory");
	t->dtype = dtype;
	t->ndim = ndim;
	for (int k = 0; k < ndim; k++)
		t->shape[k] = shape[k];
	t->nbytes = nbytes;
	w->nt++;
	return MS_OK;
}

static int cmp_wtensor_ptr(const void *a, const void *b)
{
	return strcmp((*(const st_wtensor *const *)a)->name, (*(const st_wtensor *const *)b)->name);
}

/* The declared tensors sorted by name (for duplicates and the index); caller frees. */
static ms_status sorted_tensors(const st_writer *w, st_wtensor ***out, ms_error *err)
{
	st_wtensor **s = malloc((w->nt + 1) * sizeof *s);
	if (!s)
		return st_fail(err, MS_ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < w->nt; i++)
		s[i] = &w->t[i];
	qsort(s, w->nt, sizeof *s, cmp_wtensor_ptr);
	for (size_t i = 1; i < w->nt; i++) {
		if (!strcmp(s[i - 1]->name, s[i]->name)) {
			ms_status st = st_fail(err, MS_ERR_ARG, "%s/%s: tensor '%s': declared twice", w->dir, w->base, s[i]->name);
			free(s);
			return st;
		}
	}
	*out = s;
	return MS_OK;
}

static char *shard_file_path(const st_writer *w, size_t i)
{
	char name[64];
	if (w->nshards == 1)
		snprintf(name, sizeof name, ".safetensors");
	else
		snprintf(name, sizeof name, "-%05zu-of-%05zu.safetensors", i + 1, w->nshards);
	st_buf b = {0};
	buf_str(&b, w->base);
	buf_str(&b, name);
	char *p = b.oom ? NULL : join_path(w->dir, b.p);
	free(b.p);
	return p;
}

/* Lays the tensors out in shards; from here on the headers are fixed. */
static ms_status plan_shards(st_writer *w, ms_error *err)
{
	st_wtensor **sorted = NULL;
	ms_status st = sorted_tensors(w, &sorted, err);
	free(sorted);
	if (st)
		return st;
	w->shards = calloc(w->nt + 1, sizeof *w->shards);
	if (!w->shards)
		return st_fail(err, MS_ERR_NOMEM, "out of memory");
	w->nshards = 1;
	uint64_t total = 0;
	for (size_t i = 0; i < w->nt; i++) {
		if (__builtin_add_overflow(total, w->t[i].nbytes, &total))
			return st_fail(err, MS_ERR_ARG, "%s/%s: tensor '%s': declared sizes add up past 2^64 bytes", w->dir,
				       w->base, w->t[i].name);
		st_wshard *s = &w->shards[w->nshards - 1];
		if (s->count && w->max_shard && s->bytes + w->t[i].nbytes > w->max_shard) {
			s = &w->shards[w->nshards++];
			s->first = i;
		}
		w->t[i].shard = w->nshards - 1;
		w->t[i].begin = s->bytes;
		s->bytes += w->t[i].nbytes; /* at most total: no overflow */
		s->count++;
	}
	for (size_t i = 0; i < w->nshards; i++) {
		if (!(w->shards[i].path = shard_file_path(w, i)))
			return st_fail(err, MS_ERR_NOMEM, "out of memory");
	}
	return MS_OK;
}

/* Header of shard s: __metadata__ first, then its tensors in declaration order, padded to 8 bytes. */
static void shard_header(const st_writer *w, const st_wshard *s, st_buf *b)
{
	buf_str(b, "{\"__metadata__\":{");
	for (size_t i = 0; i < w->nmeta; i++) {
		buf_str(b, i ? "," : "");
		buf_json(b, w->meta[2 * i]);
		buf_str(b, ":");
		buf_json(b, w->meta[2 * i + 1]);
	}
	buf_str(b, "}");
	for (size_t i = s->first; i < s->first + s->count; i++) {
		const st_wtensor *t = &w->t[i];
		buf_str(b, ",");
		buf_json(b, t->name);
		buf_str(b, ":{\"dtype\":\"");
		buf_str(b, st_dtype_name(t->dtype));
		buf_str(b, "\",\"shape\":[");
		for (int k = 0; k < t->ndim; k++) {
			buf_str(b, k ? "," : "");
			buf_u64(b, (uint64_t)t->shape[k]);
		}
		buf_str(b, "],\"data_offsets\":[");
		buf_u64(b, t->begin);
		buf_str(b, ",");
		buf_u64(b, t->begin + t->nbytes);
		buf_str(b, "]}");
	}
	buf_str(b, "}");
	while (!b->oom && b->n % 8)
		buf_str(b, " ");
}

/* fopen "wx": never replaces a file that is already there. */
static ms_status create_file(st_writer *w, const char *path, FILE **out, ms_error *err)
{
	char **c = realloc(w->created, (w->ncreated + 1) * sizeof *c);
	char *keep = dup_str(path);
	if (c)
		w->created = c;
	if (!c || !keep) {
		free(keep);
		w->failed = MS_ERR_NOMEM;
		return st_fail(err, MS_ERR_NOMEM, "%s: out of memory", path);
	}
	FILE *fp = fopen(path, "wx");
	if (!fp) {
		free(keep);
		return writer_fail(w, err, errno == EEXIST ? MS_ERR_EXISTS : MS_ERR_IO, path, "cannot create");
	}
	w->created[w->ncreated++] = keep;
	*out = fp;
	return MS_OK;
}

static ms_status write_bytes(st_writer *w, const char *path, const void *p, size_t n, ms_error *err)
{
	errno = 0;
	if (n && fwrite(p, 1, n, w->fp) != n)
		return writer_fail(w, err, MS_ERR_IO, path, "write failed");
	return MS_OK;
}

/* fflush, fsync and fclose, all checked (io/durable.h): a full disk often shows only here, and a file closed
 * without a sync can come back empty after a power cut. Once per file, not per write. */
static ms_status close_file(st_writer *w, FILE **fp, const char *path, ms_error *err)
{
	FILE *f = *fp;
	*fp = NULL;
	ms_status st = dur_fclose(f, path, err);
	if (st)
		w->failed = st;
	return st;
}

/* Closes the shard being written and creates the next with its header. */
static ms_status open_next_shard(st_writer *w, ms_error *err)
{
	if (w->fp) {
		ms_status st = close_file(w, &w->fp, w->shards[w->opened - 1].path, err);
		if (st)
			return st;
	}
	const st_wshard *s = &w->shards[w->opened];
	st_buf b = {0};
	shard_header(w, s, &b);
	if (b.oom) {
		free(b.p);
		w->failed = MS_ERR_NOMEM;
		return st_fail(err, MS_ERR_NOMEM, "%s: out of memory for the header", s->path);
	}
	unsigned char len[8];
	for (int i = 0; i < 8; i++)
		len[i] = (unsigned char)((uint64_t)b.n >> (8 * i));
	ms_status st = create_file(w, s->path, &w->fp, err);
	w->opened++;
	if (!st)
		st = write_bytes(w, s->path, len, sizeof len, err);
	if (!st)
		st = write_bytes(w, s->path, b.p, b.n, err);
	free(b.p);
	return st;
}

static ms_status ensure_shard(st_writer *w, size_t s, ms_error *err)
{
	ms_status st = MS_OK;
	while (!st && w->opened <= s)
		st = open_next_shard(w, err);
	return st;
}

/* Common entry to the data calls: lays out the shards on first use, refuses after a failure. */
static ms_status writer_ready(st_writer *w, ms_error *err)
{
	if (!w)
		return st_fail(err, MS_ERR_ARG, "st_writer: no writer");
	if (w->failed)
		return st_fail(err, w->failed, "%s/%s: an earlier write failed", w->dir, w->base);
	if (w->finished)
		return st_fail(err, MS_ERR_ARG, "%s/%s: already finished", w->dir, w->base);
	return w->shards ? MS_OK : plan_shards(w, err);
}

/* Moves past tensors whose bytes are all written (zero-size ones included). */
static void advance(st_writer *w)
{
	while (w->cur < w->nt && w->done == w->t[w->cur].nbytes) {
		w->cur++;
		w->done = 0;
	}
}

ms_status st_writer_write(st_writer *w, const void *bytes, uint64_t n, ms_error *err)
{
	if (!bytes && n)
		return st_fail(err, MS_ERR_ARG, "st_writer_write: no data");
	ms_status st = writer_ready(w, err);
	const unsigned char *p = bytes;
	while (!st && n) {
		advance(w);
		if (w->cur == w->nt)
			return st_fail(err, MS_ERR_ARG, "%s/%s: more bytes than the declared tensors hold", w->dir, w->base);
		const st_wtensor *t = &w->t[w->cur];
		uint64_t k = t->nbytes - w->done < n ? t->nbytes - w->done : n;
		st = ensure_shard(w, t->shard, err);
		if (!st)
			st = write_bytes(w, w->shards[t->shard].path, p, (size_t)k, err);
		w->done += k;
		p += k;
		n -= k;
	}
	return st;
}

ms_status st_writer_write_f32(st_writer *w, const float *x, uint64_t count, ms_error *err)
{
	enum { CHUNK = 1024 };
	unsigned char tmp[CHUNK * 4]; /* [CHUNK] elements of at most 4 bytes */
	if (!x && count)
		return st_fail(err, MS_ERR_ARG, "st_writer_write_f32: no data");
	ms_status st = writer_ready(w, err);
	while (!st && count) {
		advance(w);
		if (w->cur == w->nt)
			return st_fail(err, MS_ERR_ARG, "%s/%s: more values than the declared tensors hold", w->dir, w->base);
		const st_wtensor *t = &w->t[w->cur];
		size_t es = st_dtype_size(t->dtype);
		if (!st_dtype_is_float(t->dtype))
			return st_fail(err, MS_ERR_ST_DTYPE, "%s/%s: tensor '%s': dtype %s is not written from float32", w->dir,
				       w->base, t->name, st_dtype_name(t->dtype));
		if ((t->nbytes - w->done) % es)
			return st_fail(err, MS_ERR_ARG, "%s/%s: tensor '%s': raw bytes left a partial element", w->dir,
				       w->base, t->name);
		uint64_t k = (t->nbytes - w->done) / es;
		k = k < count ? k : count;
		k = k < CHUNK ? k : CHUNK;
		st_row_from_f32(t->dtype, x, tmp, (size_t)k);
		st = st_writer_write(w, tmp, k * es, err);
		x += k;
		count -= k;
	}
	return st;
}

/* DIR/BASE.safetensors.index.json: total_size and the weight_map sorted by name, as transformers writes it. */
static ms_status write_index(st_writer *w, ms_error *err)
{
	st_wtensor **sorted = NULL;
	ms_status st = sorted_tensors(w, &sorted, err);
	if (st)
		return st;
	uint64_t total = 0;
	for (size_t i = 0; i < w->nt; i++)
		total += w->t[i].nbytes;
	st_buf b = {0};
	buf_str(&b, "{\n  \"metadata\": {\n    \"total_size\": ");
	buf_u64(&b, total);
	buf_str(&b, "\n  },\n  \"weight_map\": {");
	for (size_t i = 0; i < w->nt; i++) {
		buf_str(&b, i ? ",\n    " : "\n    ");
		buf_json(&b, sorted[i]->name);
		buf_str(&b, ": ");
		buf_json(&b, base_name(w->shards[sorted[i]->shard].path));
	}
	buf_str(&b, "\n  }\n}\n");
	free(sorted);
	st_buf name = {0};
	buf_str(&name, w->base);
	buf_str(&name, ".safetensors.index.json");
	char *path = b.oom || name.oom ? NULL : join_path(w->dir, name.p);
	free(name.p);
	if (!path)
		st = st_fail(err, MS_ERR_NOMEM, "out of memory");
	if (!st)
		st = create_file(w, path, &w->fp, err);
	if (!st)
		st = write_bytes(w, path, b.p, b.n, err);
	if (!st)
		st = close_file(w, &w->fp, path, err);
	free(path);
	free(b.p);
	return st;
}

ms_status st_writer_finish(st_writer *w, ms_error *err)
{
	ms_status st = writer_ready(w, err);
	if (st)
		return st;
	advance(w);
	if (w->cur < w->nt)
		return st_fail(err, MS_ERR_ARG, "%s/%s: tensor '%s': %llu of %llu bytes written", w->dir, w->base,
			       w->t[w->cur].name, (unsigned long long)w->done, (unsigned long long)w->t[w->cur].nbytes);
	st = ensure_shard(w, w->nshards - 1, err); /* trailing shards of zero-size tensors, or an empty file */
	if (!st)
		st = close_file(w, &w->fp, w->shards[w->nshards - 1].path, err);
	if (!st && w->nshards > 1)
		st = write_index(w, err);
	if (!st)
		w->finished = 1;
	return st;
}

void st_writer_free(st_writer *w)
{
	if (!w)
		return;
	if (w->fp)
		fclose(w->fp);
	for (size_t i = 0; i < w->nt; i++)
		free(w->t[i].name);
	for (size_t i = 0; i < 2 * w->nmeta; i++)
		free(w->meta[i]);
	for (size_t i = 0; w->shards && i < w->nshards; i++)
		free(w->shards[i].path);
	for (size_t i = 0; i < w->ncreated; i++)
		free(w->created[i]);
	free(w->created);
	free(w->shards);
	free(w->meta);
	free(w->t);
	free(w->dir);
	free(w->base);
	free(w);
}

size_t st_writer_file_count(const st_writer *w)
{
	return w ? w->ncreated : 0;
}

const char *st_writer_file_path(const st_writer *w, size_t i)
{
	return w && i < w->ncreated ? w->created[i] : NULL;
}
