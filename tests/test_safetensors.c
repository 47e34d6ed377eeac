/* safetensors: scalar conversions against hand values and brute force, the row converters against the scalar ones, writer/reader round trips (one file and
 * shard sets), a table of malformed files each with its own status, and the golden model. */
#include "io/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/test.h"

#define GOLDEN_DIR "tests/data/golden/msmoe-mixtral/model"

static char tmp_root[64];

/* tmp_root/name, in a static ring so a test can hold a few at once. */
static const char *tpath(const char *name)
{
	static char ring[8][512];
	static int k;
	char *p = ring[k++ & 7];
	snprintf(p, sizeof ring[0], "%s/%s", tmp_root, name);
	return p;
}

static const char *tdir(const char *name)
{
	const char *p = tpath(name);
	mkdir(p, 0700);
	return p;
}

static void put_file(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(p, 1, n, f) != n || fclose(f)) {
		fprintf(stderr, "cannot write %s\n", path);
		exit(2);
	}
}

/* A safetensors file from a header text and data_len bytes of data (value 1.0f repeated, then zeros). */
static void put_st(const char *path, const char *hdr, size_t data_len)
{
	size_t n = strlen(hdr);
	unsigned char *b = calloc(8 + n + data_len + 1, 1);
	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)((uint64_t)n >> (8 * i));
	memcpy(b + 8, hdr, n);
	for (size_t i = 0; i + 4 <= data_len; i += 4)
		memcpy(b + 8 + n + i, &(float){1.0f}, 4);
	put_file(path, b, 8 + n + data_len);
	free(b);
}

static char *slurp(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long len = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *b = malloc((size_t)len + 1);
	*n = fread(b, 1, (size_t)len, f);
	b[*n] = '\0';
	fclose(f);
	return b;
}

static uint32_t bits(float x)
{
	uint32_t u;
	memcpy(&u, &x, 4);
	return u;
}

static float from_bits(uint32_t u)
{
	float x;
	memcpy(&x, &u, 4);
	return x;
}

/* ---- scalar conversions ---- */

static void test_dtype_table(void)
{
	for (int i = 0; i < ST_DTYPE_COUNT; i++) {
		st_dtype d;
		CHECK(st_dtype_parse(st_dtype_name((st_dtype)i), &d) && d == (st_dtype)i, "dtype %d", i);
		CHECK(st_dtype_size((st_dtype)i) >= 1 && st_dtype_size((st_dtype)i) <= 8);
	}
	st_dtype d;
	CHECK(!st_dtype_parse("F33", &d));
	CHECK(!st_dtype_parse("f32", &d)); /* names are case-sensitive in the format */
	CHECK(st_dtype_size(ST_BF16) == 2 && st_dtype_size(ST_F64) == 8 && st_dtype_size(ST_BOOL) == 1);
	CHECK(st_dtype_is_float(ST_F16) && st_dtype_is_float(ST_BF16) && st_dtype_is_float(ST_F32));
	CHECK(!st_dtype_is_float(ST_F64) && !st_dtype_is_float(ST_I32));
}

/* Worked out by hand: BF16 keeps the top 16 bits of the float32 pattern; the dropped low half decides the
 * rounding: below 0x8000 down, above up, exactly 0x8000 to the even kept value. */
static void test_bf16_hand_values(void)
{
	static const struct { uint32_t f; uint16_t h; } rows[] = {
		{0x3F800000u, 0x3F80}, /* 1.0 */
		{0x3F808000u, 0x3F80}, /* tie, 0x3F80 even: stays */
		{0x3F818000u, 0x3F82}, /* tie, 0x3F81 odd: up to even */
		{0x3F80C000u, 0x3F81}, /* above half */
		{0x3F807FFFu, 0x3F80}, /* just below half */
		{0x3F808001u, 0x3F81}, /* just above half */
		{0xC0490FDBu, 0xC049}, /* -pi: low half 0x0FDB, down */
		{0x80000000u, 0x8000}, /* -0 */
		{0x00000001u, 0x0000}, /* smallest float32 subnormal rounds to +0 */
		{0x7F800000u, 0x7F80}, /* +inf */
		{0xFF800000u, 0xFF80}, /* -inf */
		{0x7F7FFFFFu, 0x7F80}, /* FLT_MAX: low half 0xFFFF rounds up into infinity */
		{0x7F7F7FFFu, 0x7F7F}, /* largest value that stays finite */
	};
	for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		uint16_t h = st_f32_to_bf16(from_bits(rows[i].f));
		CHECK(h == rows[i].h, "0x%08X -> 0x%04X, want 0x%04X", rows[i].f, h, rows[i].h);
		CHECK(bits(st_bf16_to_f32(rows[i].h)) == (uint32_t)rows[i].h << 16);
	}
	/* NaN stays NaN, also a signalling NaN whose payload lies only in the dropped bits. */
	CHECK(isnan(st_bf16_to_f32(st_f32_to_bf16(from_bits(0x7FC00000u)))));
	CHECK(isnan(st_bf16_to_f32(st_f32_to_bf16(from_bits(0x7F800001u)))));
	CHECK(isnan(st_bf16_to_f32(st_f32_to_bf16(from_bits(0xFF800001u)))));
}

/* Worked out by hand from the half format (1 sign, 5 exponent bits biased by 15, 10 mantissa bits). */
static void test_f16_hand_values(void)
{
	static const struct { float f; uint16_t h; } rows[] = {
		{1.0f, 0x3C00},
		{-2.0f, 0xC000},
		{0.1f, 0x2E66},                 /* 1.6 * 2^-4: exponent 11, mantissa 0.6 * 1024 = 614.4 -> 614 */
		{65504.0f, 0x7BFF},             /* largest half */
		{65519.0f, 0x7BFF},             /* below the halfway point 65520 */
		{65520.0f, 0x7C00},             /* halfway to 65536, ties to the even 65536: infinity */
		{1e6f, 0x7C00},
		{-1e6f, 0xFC00},
		{0x1p-14f, 0x0400},             /* smallest normal */
		{0x1p-24f, 0x0001},             /* smallest subnormal */
		{0x1p-25f, 0x0000},             /* tie between 0 and 2^-24: to even 0 */
		{0x1.8p-25f, 0x0001},           /* above that tie */
		{0x1.8p-24f, 0x0002},           /* 1.5 units: tie between 1 and 2, to even 2 */
		{0x1.4p-23f, 0x0002},           /* 2.5 units: tie between 2 and 3, to even 2 */
		{1023.0f * 0x1p-24f, 0x03FF},   /* largest subnormal */
		{1.0f + 0x1p-11f, 0x3C00},      /* tie between mantissa 0 and 1: to 0 */
		{1.0f + 0x1.8p-10f, 0x3C02},    /* tie between mantissa 1 and 2: to 2 */
		{0x1p-26f, 0x0000},
		{-0.0f, 0x8000},
	};
	for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		uint16_t h = st_f32_to_f16(rows[i].f);
		CHECK(h == rows[i].h, "%a -> 0x%04X, want 0x%04X", (double)rows[i].f, h, rows[i].h);
	}
	CHECK(st_f32_to_f16(INFINITY) == 0x7C00 && st_f32_to_f16(-INFINITY) == 0xFC00);
	CHECK(isnan(st_f16_to_f32(st_f32_to_f16(NAN))));
	CHECK(isnan(st_f16_to_f32(st_f32_to_f16(from_bits(0x7F800001u))))); /* payload only in dropped bits */
	CHECK(st_f16_to_f32(0x0001) == 0x1p-24f && st_f16_to_f32(0x8001) == -0x1p-24f);
}

/* The value of a half by its definition, computed in double. */
static double half_value(uint16_t h)
{
	int e = (h >> 10) & 31, m = h & 1023;
	double v = e ? ldexp(1024 + m, e - 25) : ldexp(m, -24);
	return (h & 0x8000) ? -v : v;
}

/* Every half decodes to its defined value, and re-encodes to itself. */
static void test_f16_all_halves(void)
{
	int bad = 0;
	for (uint32_t h = 0; h < 65536; h++) {
		float f = st_f16_to_f32((uint16_t)h);
		int e = (h >> 10) & 31;
		if (e == 31) {
			bad += (h & 1023) ? !isnan(f) : !(isinf(f) && (f < 0) == !!(h & 0x8000));
			bad += (h & 1023) ? !isnan(st_f16_to_f32(st_f32_to_f16(f))) : st_f32_to_f16(f) != h;
			continue;
		}
		bad += (double)f != half_value((uint16_t)h) || !!signbit(f) != !!(h & 0x8000);
		bad += st_f32_to_f16(f) != h;
	}
	CHECK(bad == 0, "%d halves wrong", bad);
}

/* Nearest by brute force: the neighbours lo < x < hi among all positive halves, by value in double, ties to the
 * even pattern; 65520 and above is infinity (IEEE overflow under round to nearest). */
static uint16_t f16_reference(float x)
{
	double a = fabs((double)x);
	uint16_t s = signbit(x) ? 0x8000 : 0;
	if (a >= 65520.0)
		return s | 0x7C00;
	uint16_t lo = 0, hi = 0x7BFF;
	while (lo < hi) { /* largest pattern with value <= a */
		uint16_t mid = (uint16_t)((lo + hi + 1) / 2);
		if (half_value(mid) <= a)
			lo = mid;
		else
			hi = (uint16_t)(mid - 1);
	}
	if (half_value(lo) == a || lo == 0x7BFF)
		return s | lo;
	double dlo = a - half_value(lo), dhi = half_value((uint16_t)(lo + 1)) - a;
	uint16_t r = dlo < dhi ? lo : dhi < dlo ? (uint16_t)(lo + 1) : (lo & 1) ? (uint16_t)(lo + 1) : lo;
	return s | r;
}

static uint16_t bf16_reference(float x)
{
	uint32_t u = bits(x);
	uint16_t lo = (uint16_t)(u >> 16), hi = (uint16_t)(lo + 1);
	double a = fabs((double)x), vlo = fabs((double)from_bits((uint32_t)lo << 16));
	double vhi = (hi & 0x7F80) == 0x7F80 ? ldexp(1.0, 128) : fabs((double)from_bits((uint32_t)hi << 16));
	if (a == vlo)
		return lo;
	double dlo = a - vlo, dhi = vhi - a;
	return dlo < dhi ? lo : dhi < dlo ? hi : (lo & 1) ? hi : lo;
}

static void test_rounding_brute_force(void)
{
	unsigned long long s = 12345;
	int bad16 = 0, badbf = 0;
	for (int i = 0; i < 200000; i++) {
		uint32_t u = (uint32_t)test_rand_u64(&s);
		/* Half the draws near the half range (exponents 2^-30 .. 2^17) where subnormals and overflow live. */
		if (i & 1)
			u = (u & 0x807FFFFFu) | ((uint32_t)(97 + (test_rand_u64(&s) % 48)) << 23);
		if (i % 5 == 0)
			u = (u & 0xFFFF0000u) | 0x8000u; /* exact ties for BF16 */
		if (i % 7 == 0)
			u = (u & 0xFFFFE000u) | 0x1000u; /* exact ties for normal halves */
		float x = from_bits(u);
		if (isnan(x))
			continue;
		bad16 += st_f32_to_f16(x) != f16_reference(x);
		badbf += st_f32_to_bf16(x) != bf16_reference(x);
	}
	CHECK(bad16 == 0, "%d F16 roundings differ from brute force", bad16);
	CHECK(badbf == 0, "%d BF16 roundings differ from brute force", badbf);
}

/* ---- row conversions against the scalar ones ---- */

/* Row lengths cycled through below: tails alone, exact blocks, blocks plus tails, long rows. */
static const size_t row_lengths[] = {1, 2, 7, 31, 32, 33, 63, 64, 65, 100, 255, 1000, 4099};
#define N_ROW_LENGTHS (sizeof row_lengths / sizeof row_lengths[0])

static int code_nonfinite(st_dtype dt, uint32_t code)
{
	return dt == ST_BF16 ? (code & 0x7F80u) == 0x7F80u : dt == ST_F16 ? (code & 0x7C00u) == 0x7C00u
									  : (code & 0x7F800000u) == 0x7F800000u;
}

static uint32_t scalar_to_f32_bits(st_dtype dt, uint32_t code)
{
	return dt == ST_BF16 ? bits(st_bf16_to_f32((uint16_t)code)) : dt == ST_F16 ? bits(st_f16_to_f32((uint16_t)code))
										    : code;
}

/* codes [n] as stored in a file (little-endian) at p, es bytes each. */
static void put_codes(unsigned char *p, const uint32_t *codes, size_t n, size_t es)
{
	for (size_t i = 0; i < n; i++)
		for (size_t b = 0; b < es; b++)
			p[i * es + b] = (unsigned char)(codes[i] >> (8 * b));
}

/* Converts codes [n] with st_row_to_f32 in rows of every length above, from an odd address, and compares each
 * value's bits and each row's non-finite flag with the scalar conversion. Returns the number of mismatches. */
static int check_rows_to_f32(st_dtype dt, const uint32_t *codes, size_t n)
{
	const size_t es = st_dtype_size(dt);
	unsigned char *raw = malloc(n * es + 1);
	float *out = malloc(n * sizeof *out);
	int bad = 0;
	if (!raw || !out) {
		free(raw), free(out);
		return 1;
	}
	put_codes(raw + 1, codes, n, es);
	for (size_t at = 0, r = 0; at < n; r++) {
		size_t len = row_lengths[r % N_ROW_LENGTHS];
		len = len < n - at ? len : n - at;
		int any = 0;
		for (size_t i = at; i < at + len; i++)
			any |= code_nonfinite(dt, codes[i]);
		bad += st_row_to_f32(dt, raw + 1 + at * es, out + at, len) != any;
		at += len;
	}
	for (size_t i = 0; i < n; i++)
		bad += bits(out[i]) != scalar_to_f32_bits(dt, codes[i]);
	free(raw);
	free(out);
	return bad;
}

/* Every BF16 and F16 code, and random float32 patterns (with infinities and NaNs planted), through the row
 * converter; then a single infinity or NaN at each position of a row, which the flag must catch. */
static void test_rows_to_f32_all_codes(void)
{
	static uint32_t codes[65536];
	for (uint32_t h = 0; h < 65536; h++)
		codes[h] = h;
	CHECK(check_rows_to_f32(ST_BF16, codes, 65536) == 0, "BF16");
	CHECK(check_rows_to_f32(ST_F16, codes, 65536) == 0, "F16");
	unsigned long long s = 99;
	for (size_t i = 0; i < 65536; i++) {
		codes[i] = (uint32_t)test_rand_u64(&s);
		if (i % 97 == 0)
			codes[i] |= 0x7F800000u; /* infinity or NaN */
	}
	CHECK(check_rows_to_f32(ST_F32, codes, 65536) == 0, "F32");
	static const st_dtype dts[3] = {ST_F32, ST_F16, ST_BF16};
	static const uint32_t specials[3][2] = {{0x7F800000u, 0xFFC00001u}, {0x7C00u, 0xFE01u}, {0x7F80u, 0xFF81u}};
	int missed = 0;
	for (int d = 0; d < 3; d++) {
		const size_t es = st_dtype_size(dts[d]);
		for (size_t len = 1; len <= 70; len++) {
			for (size_t pos = 0; pos < len; pos++) {
				uint32_t row[70];
				unsigned char raw[70 * 4];
				float out[70];
				for (size_t i = 0; i < len; i++)
					row[i] = dts[d] == ST_F32 ? 0x3F800000u : dts[d] == ST_F16 ? 0x3C00u : 0x3F80u; /* 1.0 */
				row[pos] = specials[d][pos & 1];
				put_codes(raw, row, len, es);
				missed += st_row_to_f32(dts[d], raw, out, len) != 1;
				row[pos] = dts[d] == ST_F32 ? 0xC2F6E979u : dts[d] == ST_F16 ? 0x7BFFu : 0xFF7Fu; /* finite */
				put_codes(raw, row, len, es);
				missed += st_row_to_f32(dts[d], raw, out, len) != 0;
			}
		}
	}
	CHECK(missed == 0, "%d rows flagged wrongly", missed);
	float out[1];
	CHECK(st_row_to_f32(ST_I32, codes, out, 1) == -1);
	CHECK(st_row_to_f32(ST_BF16, codes, out, 0) == 0);
}

/* Every BF16 and F16 code as a tensor [256, 256] in a file, read row by row with st_read_rows_f32: finite rows
 * equal the scalar conversion, and exactly the rows holding infinity or NaN codes fail, naming their row. */
static void test_read_rows_all_codes(void)
{
	char dir[512];
	snprintf(dir, sizeof dir, "%s", tdir("codes"));
	ms_error err;
	st_writer *w = NULL;
	static unsigned char raw[65536 * 2];
	for (uint32_t h = 0; h < 65536; h++)
		raw[2 * h] = (unsigned char)h, raw[2 * h + 1] = (unsigned char)(h >> 8);
	CHECK(st_writer_create(dir, "model", 0, &w, &err) == MS_OK);
	CHECK(st_writer_declare(w, "b", ST_BF16, 2, (int64_t[]){256, 256}, &err) == MS_OK);
	CHECK(st_writer_declare(w, "h", ST_F16, 2, (int64_t[]){256, 256}, &err) == MS_OK);
	CHECK(st_writer_write(w, raw, sizeof raw, &err) == MS_OK && st_writer_write(w, raw, sizeof raw, &err) == MS_OK);
	CHECK(st_writer_finish(w, &err) == MS_OK, "%s", err.msg);
	st_writer_free(w);
	st_file *f = NULL;
	CHECK(st_open(dir, &f, &err) == MS_OK, "%s", err.msg);
	if (!f)
		return;
	int bad = 0;
	for (int d = 0; d < 2; d++) {
		const st_dtype dt = d ? ST_F16 : ST_BF16;
		const st_tensor *t = st_find(f, d ? "h" : "b");
		for (uint32_t r = 0; r < 256; r++) {
			float out[256];
			int any = 0;
			for (uint32_t c = 0; c < 256; c++)
				any |= code_nonfinite(dt, r * 256 + c);
			const ms_status st = st_read_rows_f32(t, r, 1, out, &err);
			char want[64];
			snprintf(want, sizeof want, "row %u: NaN or infinity", r);
			bad += any ? st != MS_ERR_NONFINITE || !strstr(err.msg, want) : st != MS_OK;
			for (uint32_t c = 0; !any && c < 256; c++)
				bad += bits(out[c]) != scalar_to_f32_bits(dt, r * 256 + c);
		}
	}
	CHECK(bad == 0, "%d rows or values wrong", bad);
	st_close(f);
}

/* Reads of 4 MiB of float32 and more take the streaming BF16 path (non-temporal stores on SSE2). A [1100, 1027]
 * tensor cycling through every finite BF16 code, read whole into a buffer one float off 16-byte alignment and
 * as a span of rows, equals the scalar conversion bit for bit, rows of odd length putting each row's start at
 * every alignment; a second tensor with one NaN code fails on its row. */
static void test_read_streamed(void)
{
	enum { ROWS = 1100, COLS = 1027 };
	const size_t n = (size_t)ROWS * COLS;
	char dir[512];
	snprintf(dir, sizeof dir, "%s", tdir("streamed"));
	ms_error err;
	unsigned char *raw = malloc(2 * n);
	float *buf = malloc((n + 4) * sizeof *buf);
	uint32_t *code = malloc(n * sizeof *code);
	CHECK(raw && buf && code);
	if (!raw || !buf || !code)
		goto out;
	for (size_t i = 0, h = 0; i < n; i++, h = (h + 1) & 0xffffu) {
		while (code_nonfinite(ST_BF16, (uint32_t)h))
			h = (h + 1) & 0xffffu;
		code[i] = (uint32_t)h;
		raw[2 * i] = (unsigned char)h, raw[2 * i + 1] = (unsigned char)(h >> 8);
	}
	st_writer *w = NULL;
	CHECK(st_writer_create(dir, "model", 0, &w, &err) == MS_OK);
	CHECK(st_writer_declare(w, "finite", ST_BF16, 2, (int64_t[]){ROWS, COLS}, &err) == MS_OK);
	CHECK(st_writer_declare(w, "nan", ST_BF16, 2, (int64_t[]){ROWS, COLS}, &err) == MS_OK);
	CHECK(st_writer_write(w, raw, 2 * n, &err) == MS_OK);
	const size_t at = (size_t)777 * COLS + 5;
	raw[2 * at] = 0xc1, raw[2 * at + 1] = 0x7f; /* 0x7fc1: a NaN */
	CHECK(st_writer_write(w, raw, 2 * n, &err) == MS_OK);
	CHECK(st_writer_finish(w, &err) == MS_OK, "%s", err.msg);
	st_writer_free(w);
	st_file *f = NULL;
	CHECK(st_open(dir, &f, &err) == MS_OK, "%s", err.msg);
	if (!f)
		goto out;
	float *out = (float *)(((uintptr_t)buf + 15u) & ~(uintptr_t)15u) + 1;   /* off alignment by one float */
	CHECK(st_read_f32(st_find(f, "finite"), out, &err) == MS_OK, "%s", err.msg);
	size_t bad = 0;
	for (size_t i = 0; i < n; i++)
		bad += bits(out[i]) != scalar_to_f32_bits(ST_BF16, code[i]);
	CHECK(bad == 0, "%zu values differ from the scalar conversion", bad);
	/* rows 100..1099 (4.1 MB of float32, still streamed) at the buffer's start */
	CHECK(st_read_rows_f32(st_find(f, "finite"), 100, ROWS - 100, buf, &err) == MS_OK, "%s", err.msg);
	bad = 0;
	for (size_t i = 0; i < (size_t)(ROWS - 100) * COLS; i++)
		bad += bits(buf[i]) != scalar_to_f32_bits(ST_BF16, code[(size_t)100 * COLS + i]);
	CHECK(bad == 0, "%zu values differ from the scalar conversion", bad);
	CHECK(st_read_f32(st_find(f, "nan"), out, &err) == MS_ERR_NONFINITE && strstr(err.msg, "row 777:"), "%s",
	      err.msg);
	st_close(f);
out:
	free(raw);
	free(buf);
	free(code);
}

/* Bulk reads come from the file (pread), not the mapping. A file cut short after it was opened gives one error
 * naming the file, the tensor and the byte where the file now ends (through the mapping this was a SIGBUS), while
 * rows wholly before the cut still read; a read that fails (here: a descriptor that is a directory) names the file
 * and the tensor too. */
static void test_read_cut_short(void)
{
	enum { ROWS = 2048, COLS = 1024 };   /* 8 MiB of float32: a bulk read */
	const size_t n = (size_t)ROWS * COLS;
	char dir[512];
	snprintf(dir, sizeof dir, "%s", tdir("cut"));
	ms_error err;
	unsigned char *raw = malloc(2 * n);
	float *out = malloc(n * sizeof *out);
	CHECK(raw && out);
	if (!raw || !out)
		goto out;
	for (size_t i = 0; i < n; i++)   /* finite BF16 codes: exponent never all ones */
		raw[2 * i] = (unsigned char)i, raw[2 * i + 1] = (unsigned char)(i % 0x7f);
	st_writer *w = NULL;
	CHECK(st_writer_create(dir, "model", 0, &w, &err) == MS_OK);
	CHECK(st_writer_declare(w, "w", ST_BF16, 2, (int64_t[]){ROWS, COLS}, &err) == MS_OK);
	CHECK(st_writer_write(w, raw, 2 * n, &err) == MS_OK);
	CHECK(st_writer_finish(w, &err) == MS_OK, "%s", err.msg);
	st_writer_free(w);
	st_file *f = NULL;
	CHECK(st_open(dir, &f, &err) == MS_OK, "%s", err.msg);
	if (!f)
		goto out;
	const st_tensor *t = st_find(f, "w");
	CHECK(st_read_f32(t, out, &err) == MS_OK, "%s", err.msg);
	size_t bad = 0;
	for (size_t i = 0; i < n; i++)
		bad += bits(out[i]) != scalar_to_f32_bits(ST_BF16, (uint32_t)raw[2 * i] | (uint32_t)raw[2 * i + 1] << 8);
	CHECK(bad == 0, "%zu values differ from the scalar conversion", bad);
	const uint64_t cut = t->file_offset + (uint64_t)(3 * ROWS / 4) * COLS * 2 + 1000;
	char path[600];
	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	CHECK(truncate(path, (off_t)cut) == 0, "%s", strerror(errno));
	char want[64];
	snprintf(want, sizeof want, "byte %llu:", (unsigned long long)cut);
	CHECK(st_read_f32(t, out, &err) == MS_ERR_ST_TRUNCATED && strstr(err.msg, path) && strstr(err.msg, "'w'") &&
	      strstr(err.msg, want) && !strchr(err.msg, '\n'), "%s", err.msg);
	CHECK(st_read_rows_f32(t, 0, ROWS / 2, out, &err) == MS_OK, "rows before the cut: %s", err.msg);
	bad = 0;
	for (size_t i = 0; i < n / 2; i++)
		bad += bits(out[i]) != scalar_to_f32_bits(ST_BF16, (uint32_t)raw[2 * i] | (uint32_t)raw[2 * i + 1] << 8);
	CHECK(bad == 0, "%zu values before the cut differ", bad);
	st_tensor odd = *t;
	odd.fd = open(dir, O_RDONLY | O_DIRECTORY);
	CHECK(odd.fd > 0 && st_read_f32(&odd, out, &err) == MS_ERR_IO && strstr(err.msg, path) &&
	      strstr(err.msg, "'w'") && strstr(err.msg, "cannot read"), "%s", err.msg);
	if (odd.fd > 0)
		close(odd.fd);
	st_close(f);
out:
	free(raw);
	free(out);
}

/* Float32 values that exercise every rounding path: random patterns, half subnormals and overflow, exact ties of
 * both dtypes, NaNs with payloads in kept and dropped bits, infinities, zeros, the largest floats. */
static void fill_rounding_cases(uint32_t *u, size_t n, unsigned long long seed)
{
	static const uint32_t fixed[] = {0x00000000u, 0x80000000u, 0x7F800000u, 0xFF800000u, 0x7FC00000u, 0x7F800001u,
					 0xFF800001u, 0x7FBFFFFFu, 0x7F7FFFFFu, 0xFF7FFFFFu, 0x477FF000u, 0x477FEFFFu,
					 0x477FE000u, 0x38800000u, 0x387FFFFFu, 0x33000000u, 0x33000001u, 0x32FFFFFFu,
					 0x00000001u, 0x7F7F8000u, 0x3F808000u, 0x3F818000u, 0xB3800000u, 0x33C00000u};
	const size_t nf = sizeof fixed / sizeof fixed[0];
	for (size_t i = 0; i < n; i++) {
		uint32_t v = (uint32_t)test_rand_u64(&seed);
		if (i % 3 == 1)
			v = (v & 0x807FFFFFu) | ((uint32_t)(97 + (test_rand_u64(&seed) % 48)) << 23);
		if (i % 5 == 0)
			v = (v & 0xFFFF0000u) | 0x8000u;
		if (i % 7 == 0)
			v = (v & 0xFFFFE000u) | 0x1000u;
		if (i % 11 == 0)
			v |= 0x7F800000u;
		u[i] = i < nf ? fixed[i] : v;
	}
}

/* Random floats (NaN included) through st_row_from_f32 to an odd address, compared bit for bit with the scalar
 * st_f32_to_bf16 and st_f32_to_f16 (themselves checked against brute force above); F32 copies the bits. */
static void test_rows_from_f32(void)
{
	enum { N = 200000 };
	uint32_t *u = malloc(N * sizeof *u);
	float *x = malloc(N * sizeof *x);
	unsigned char *raw = malloc(N * 4 + 1);
	if (!u || !x || !raw) {
		free(u), free(x), free(raw);
		CHECK(0, "out of memory");
		return;
	}
	fill_rounding_cases(u, N, 4242);
	memcpy(x, u, N * sizeof *x);
	static const st_dtype dts[3] = {ST_F32, ST_F16, ST_BF16};
	for (int d = 0; d < 3; d++) {
		const size_t es = st_dtype_size(dts[d]);
		int bad = 0;
		for (size_t at = 0, r = 0; at < N; r++) {
			size_t len = row_lengths[r % N_ROW_LENGTHS];
			len = len < N - at ? len : N - at;
			bad += st_row_from_f32(dts[d], x + at, raw + 1 + at * es, len) != 0;
			at += len;
		}
		for (size_t i = 0; i < N; i++) {
			uint32_t got = 0;
			for (size_t b = 0; b < es; b++)
				got |= (uint32_t)raw[1 + i * es + b] << (8 * b);
			const uint32_t want = dts[d] == ST_F32 ? u[i] : dts[d] == ST_F16 ? st_f32_to_f16(x[i])
										  : st_f32_to_bf16(x[i]);
			bad += got != want;
		}
		CHECK(bad == 0, "%s: %d values differ from the scalar conversion", st_dtype_name(dts[d]), bad);
	}
	CHECK(st_row_from_f32(ST_I8, x, raw, 1) == -1);
	free(u);
	free(x);
	free(raw);
}

/* ---- writer and reader round trips ---- */

/* Values that exercise every conversion path: ordinary, tiny (half subnormals), ties, large. */
static void fill_values(float *x, size_t n, unsigned long long seed) /* x [n] */
{
	static const float edge[] = {0.0f, -0.0f, 1.0f, 0x1p-24f, 0x1p-25f, 0x1.8p-24f, 65504.0f, -65519.0f,
				     0x1.01p0f /* 0x3F808000 */, 0x1.03p0f /* 0x3F818000 */, 1.0f + 0x1p-11f, 3e-6f};
	for (size_t i = 0; i < n; i++)
		x[i] = i < sizeof edge / sizeof edge[0] ? edge[i] : test_rand_f(&seed) * 8.0f;
}

static float through(st_dtype dt, float x)
{
	return dt == ST_F32 ? x : dt == ST_F16 ? st_f16_to_f32(st_f32_to_f16(x)) : st_bf16_to_f32(st_f32_to_bf16(x));
}

static void test_roundtrip_dtypes(void)
{
	char dir[512];
	snprintf(dir, sizeof dir, "%s", tdir("rt"));
	ms_error err;
	st_writer *w = NULL;
	CHECK(st_writer_create(dir, "model", 0, &w, &err) == MS_OK);
	CHECK(st_writer_metadata(w, "note", "a \"quoted\"\nline", &err) == MS_OK);
	/* Declaration order differs from name order on purpose. */
	static const struct { const char *name; st_dtype dt; int ndim; int64_t shape[2]; } decl[] = {
		{"z.f32", ST_F32, 2, {3, 5}},
		{"b.f16", ST_F16, 2, {4, 7}},
		{"m.empty", ST_BF16, 2, {0, 4}},
		{"a.bf16", ST_BF16, 2, {3, 6}},
		{"c.vec", ST_F16, 1, {5, 0}},
	};
	enum { ND = sizeof decl / sizeof decl[0] };
	float *vals[ND];
	for (int i = 0; i < ND; i++) {
		CHECK(st_writer_declare(w, decl[i].name, decl[i].dt, decl[i].ndim, decl[i].shape, &err) == MS_OK, "%s", err.msg);
		size_t n = (size_t)decl[i].shape[0] * (size_t)(decl[i].ndim == 2 ? decl[i].shape[1] : 1);
		vals[i] = calloc(n + 1, sizeof(float));
		fill_values(vals[i], n, 7 + (unsigned)i);
	}
	int32_t ints[3] = {-1, 2, 300000};
	CHECK(st_writer_declare(w, "i.raw", ST_I32, 1, (int64_t[]){3}, &err) == MS_OK);
	/* Uneven chunks: one value, then the rest of z.f32, then b.f16 in two parts. */
	CHECK(st_writer_write_f32(w, vals[0], 1, &err) == MS_OK, "%s", err.msg);
	CHECK(st_writer_write_f32(w, vals[0] + 1, 14, &err) == MS_OK);
	CHECK(st_writer_write_f32(w, vals[1], 20, &err) == MS_OK);
	CHECK(st_writer_write_f32(w, vals[1] + 20, 8, &err) == MS_OK);
	/* m.empty has no bytes; the next values go to a.bf16 and, in the same call, on into c.vec. */
	float both[18 + 5];
	memcpy(both, vals[3], 18 * sizeof(float));
	memcpy(both + 18, vals[4], 5 * sizeof(float));
	CHECK(st_writer_write_f32(w, both, 23, &err) == MS_OK, "%s", err.msg);
	CHECK(st_writer_declare(w, "late", ST_F32, 0, NULL, &err) == MS_ERR_ARG); /* declarations are closed */
	CHECK(st_writer_write(w, ints, sizeof ints, &err) == MS_OK);
	CHECK(st_writer_finish(w, &err) == MS_OK, "%s", err.msg);
	CHECK(st_writer_file_count(w) == 1 && strstr(st_writer_file_path(w, 0), "rt/model.safetensors"));
	st_writer_free(w);

	/* The header as bytes: padded to 8, metadata first, tensors in declaration order. */
	size_t len = 0;
	char *raw = slurp(tpath("rt/model.safetensors"), &len);
	uint64_t n = 0;
	for (int i = 7; i >= 0; i--)
		n = n << 8 | (unsigned char)raw[i];
	CHECK(n % 8 == 0 && 8 + n <= len);
	const char *head = "{\"__metadata__\":{\"format\":\"pt\",\"note\":\"a \\\"quoted\\\"\\nline\"},";
	CHECK(!strncmp(raw + 8, head, strlen(head)), "%.80s", raw + 8);
	const char *prev = raw + 8;
	for (int i = 0; i < ND; i++) {
		char key[64];
		snprintf(key, sizeof key, "\"%s\":", decl[i].name);
		const char *at = strstr(raw + 8, key);
		CHECK(at && at > prev, "%s out of declaration order", decl[i].name);
		prev = at ? at : prev;
	}

	st_file *f = NULL;
	CHECK(st_open(tpath("rt/model.safetensors"), &f, &err) == MS_OK, "%s", err.msg);
	if (!f) {
		free(raw);
		return;
	}
	CHECK(st_count(f) == ND + 1);
	CHECK(!strcmp(st_metadata(f, "note"), "a \"quoted\"\nline") && !strcmp(st_metadata(f, "format"), "pt"));
	for (size_t i = 1; i < st_count(f); i++)
		CHECK(strcmp(st_get(f, i - 1)->name, st_get(f, i)->name) < 0, "st_get not in name order");
	for (int i = 0; i < ND; i++) {
		const st_tensor *t = st_find(f, decl[i].name);
		CHECK(t && t->dtype == decl[i].dt && t->ndim == decl[i].ndim && t->shape[0] == decl[i].shape[0]);
		if (!t)
			continue;
		size_t cnt = t->numel;
		float *got = calloc(cnt + 1, sizeof *got);
		CHECK(st_read_f32(t, got, &err) == MS_OK, "%s", err.msg);
		int bad = 0;
		for (size_t j = 0; j < cnt; j++)
			bad += bits(got[j]) != bits(through(t->dtype, vals[i][j]));
		CHECK(bad == 0, "%s: %d values differ", t->name, bad);
		/* The file's bytes, read without the reader, hold the scalar conversion in little-endian order. */
		size_t es = st_dtype_size(t->dtype);
		for (size_t j = 0; j < cnt; j++) {
			const unsigned char *p = (const unsigned char *)raw + t->file_offset + j * es;
			uint32_t u = 0;
			for (size_t k = 0; k < es; k++)
				u |= (uint32_t)p[k] << (8 * k);
			uint32_t want = es == 4 ? bits(vals[i][j]) : t->dtype == ST_F16 ? st_f32_to_f16(vals[i][j])
											: st_f32_to_bf16(vals[i][j]);
			bad += u != want;
		}
		CHECK(bad == 0, "%s: %d stored values differ", t->name, bad);
		/* Rows 1..2 alone match the same part of the whole. */
		if (t->ndim == 2 && t->shape[0] >= 3) {
			size_t rl = (size_t)t->shape[1];
			float *rows = calloc(2 * rl, sizeof *rows);
			CHECK(st_read_rows_f32(t, 1, 2, rows, &err) == MS_OK);
			CHECK(!memcmp(rows, got + rl, 2 * rl * sizeof *rows));
			free(rows);
		}
		free(got);
	}
	const st_tensor *ti = st_find(f, "i.raw");
	CHECK(ti && ti->nbytes == sizeof ints && !memcmp(ti->data, ints, sizeof ints));
	CHECK(st_find(f, "m.empty") && st_find(f, "m.empty")->numel == 0);
	CHECK(!st_find(f, "nope") && !st_find(f, ""));
	st_close(f);
	free(raw);
	for (int i = 0; i < ND; i++)
		free(vals[i]);
}

/* Row bounds, dtype and NaN/Inf are refused with the tensor, row and file named. */
static void test_read_rows_errors(void)
{
	char dir[512];
	snprintf(dir, sizeof dir, "%s", tdir("rows"));
	ms_error err;
	st_writer *w = NULL;
	CHECK(st_writer_create(dir, "model", 0, &w, &err) == MS_OK);
	CHECK(st_writer_declare(w, "f", ST_F32, 2, (int64_t[]){4, 2}, &err) == MS_OK);
	CHECK(st_writer_declare(w, "h", ST_BF16, 2, (int64_t[]){3, 2}, &err) == MS_OK);
	CHECK(st_writer_declare(w, "i", ST_I8, 1, (int64_t[]){2}, &err) == MS_OK);
	float fv[8] = {1, 2, 3, 4, 5, NAN, 7, 8};
	float hv[6] = {1, 2, 3, 4, 5, -INFINITY};
	CHECK(st_writer_write_f32(w, fv, 8, &err) == MS_OK && st_writer_write_f32(w, hv, 6, &err) == MS_OK);
	CHECK(st_writer_write_f32(w, fv, 2, &err) == MS_ERR_ST_DTYPE); /* I8 does not take floats */
	CHECK(st_writer_write(w, "\x01\x02", 2, &err) == MS_OK);
	CHECK(st_writer_finish(w, &err) == MS_OK, "%s", err.msg);
	st_writer_free(w);

	st_file *f = NULL;
	CHECK(st_open(dir, &f, &err) == MS_OK, "%s", err.msg);
	if (!f)
		return;
	const st_tensor *t = st_find(f, "f");
	float out[8];
	CHECK(st_read_rows_f32(t, 0, 2, out, &err) == MS_OK && out[3] == 4.0f);
	CHECK(st_read_rows_f32(t, 2, 1, out, &err) == MS_ERR_NONFINITE);
	CHECK(strstr(err.msg, "tensor 'f': row 2: NaN or infinity") && strstr(err.msg, "rows/model.safetensors"), "%s",
	      err.msg);
	CHECK(st_read_f32(st_find(f, "h"), out, &err) == MS_ERR_NONFINITE && strstr(err.msg, "row 2"), "%s", err.msg);
	CHECK(st_read_rows_f32(t, 3, 1, out, &err) == MS_OK && out[1] == 8.0f);
	CHECK(st_read_rows_f32(t, 4, 0, out, &err) == MS_OK);
	CHECK(st_read_rows_f32(t, 3, 2, out, &err) == MS_ERR_ARG);
	CHECK(st_read_rows_f32(t, -1, 1, out, &err) == MS_ERR_ARG);
	CHECK(st_read_rows_f32(t, 0, -1, out, &err) == MS_ERR_ARG);
	CHECK(st_read_rows_f32(t, INT64_MAX, 1, out, &err) == MS_ERR_ARG);
	CHECK(st_read_rows_f32(t, 1, INT64_MAX, out, &err) == MS_ERR_ARG);
	CHECK(st_read_f32(st_find(f, "i"), out, &err) == MS_ERR_ST_DTYPE && strstr(err.msg, "'i'"));
	st_close(f);
}

/* Which shard each tensor lands in, worked out the way the header describes it. */
static size_t expected_shards(const uint64_t *bytes, size_t n, uint64_t max, size_t *shard) /* shard [n] */
{
	size_t s = 0;
	uint64_t used = 0, count = 0;
	for (size_t i = 0; i < n; i++) {
		if (count && used + bytes[i] > max) {
			s++;
			used = count = 0;
		}
		shard[i] = s;
		used += bytes[i];
		count++;
	}
	return s + 1;
}

static void check_same_tensors(const st_file *a, const st_file *b)
{
	CHECK(st_count(a) == st_count(b));
	for (size_t i = 0; i < st_count(a) && i < st_count(b); i++) {
		const st_tensor *x = st_get(a, i), *y = st_get(b, i);
		CHECK(!strcmp(x->name, y->name) && x->nbytes == y->nbytes && !strcmp(x->path, y->path));
		CHECK(x->nbytes == 0 || !memcmp(x->data, y->data, x->nbytes));
	}
}

static void test_sharded_roundtrip(void)
{
	char dir[512];
	snprintf(dir, sizeof dir, "%s", tdir("sh"));
	enum { NT = 9 };
	static const int64_t rows[NT] = {10, 3, 30, 1, 8, 0, 12, 5, 9};
	const uint64_t max = 256; /* row of 4 F32 = 16 bytes; tensor 2 (480 bytes) is alone and over the limit */
	uint64_t bytes[NT];
	size_t shard[NT];
	for (int i = 0; i < NT; i++)
		bytes[i] = (uint64_t)rows[i] * 16;
	size_t nshards = expected_shards(bytes, NT, max, shard);
	CHECK(nshards >= 3);

	ms_error err;
	st_writer *w = NULL;
	CHECK(st_writer_create(dir, "model", max, &w, &err) == MS_OK);
	char names[NT][32];
	for (int i = 0; i < NT; i++) {
		snprintf(names[i], sizeof names[i], "layer.%d.w", (NT - i) * 7 % 10); /* not in name order */
		CHECK(st_writer_declare(w, names[i], ST_F32, 2, (int64_t[]){rows[i], 4}, &err) == MS_OK, "%s", err.msg);
	}
	unsigned long long seed = 99;
	float *all = calloc(1024, sizeof *all);
	size_t total = 0;
	for (int i = 0; i < NT; i++)
		total += (size_t)rows[i] * 4;
	for (size_t i = 0; i < total; i++)
		all[i] = test_rand_f(&seed);
	CHECK(st_writer_write_f32(w, all, total, &err) == MS_OK, "%s", err.msg);
	CHECK(st_writer_finish(w, &err) == MS_OK, "%s", err.msg);
	CHECK(st_writer_file_count(w) == nshards + 1);
	char want[128];
	snprintf(want, sizeof want, "sh/model-00001-of-%05zu.safetensors", nshards);
	CHECK(strstr(st_writer_file_path(w, 0), want), "%s", st_writer_file_path(w, 0));
	CHECK(strstr(st_writer_file_path(w, nshards), "sh/model.safetensors.index.json"));
	st_writer_free(w);

	st_file *fd = NULL, *fi = NULL;
	CHECK(st_open(dir, &fd, &err) == MS_OK, "%s", err.msg);
	CHECK(st_open(tpath("sh/model.safetensors.index.json"), &fi, &err) == MS_OK, "%s", err.msg);
	if (!fd || !fi) {
		st_close(fd);
		st_close(fi);
		free(all);
		return;
	}
	CHECK(st_shard_count(fd) == nshards && st_count(fd) == NT);
	check_same_tensors(fd, fi);
	/* Each tensor is in the planned shard and holds its values. */
	size_t off = 0;
	for (int i = 0; i < NT; i++) {
		const st_tensor *t = st_find(fd, names[i]);
		char sname[64];
		snprintf(sname, sizeof sname, "model-%05zu-of-%05zu.safetensors", shard[i] + 1, nshards);
		CHECK(t && strstr(t->path, sname), "%s in %s, want %s", names[i], t ? t->path : "-", sname);
		CHECK(t && t->nbytes == bytes[i] && (!t->nbytes || !memcmp(t->data, all + off, t->nbytes)));
		off += (size_t)rows[i] * 4;
	}
	/* The index, read with cJSON: total_size and a weight_map sorted by name naming each tensor's shard. */
	size_t len;
	char *text = slurp(tpath("sh/model.safetensors.index.json"), &len);
	cJSON *root = cJSON_Parse(text);
	const cJSON *ts = cJSON_GetObjectItem(cJSON_GetObjectItem(root, "metadata"), "total_size");
	uint64_t sum = 0;
	for (int i = 0; i < NT; i++)
		sum += bytes[i];
	CHECK(cJSON_IsNumber(ts) && ts->valuedouble == (double)sum);
	const cJSON *wm = cJSON_GetObjectItem(root, "weight_map"), *e;
	CHECK(cJSON_GetArraySize(wm) == NT);
	const char *last = "";
	cJSON_ArrayForEach(e, wm) {
		const st_tensor *t = st_find(fd, e->string);
		CHECK(t && strcmp(last, e->string) < 0 && strstr(t->path, e->valuestring));
		last = e->string;
	}
	cJSON_Delete(root);
	free(text);
	st_close(fd);
	st_close(fi);
	free(all);
}

/* ---- writer failures ---- */

static void test_writer_refusals(void)
{
	char dir[512];
	snprintf(dir, sizeof dir, "%s", tdir("wref"));
	ms_error err;
	st_writer *w = NULL;
	CHECK(st_writer_create(dir, "a/b", 0, &w, &err) == MS_ERR_ARG && !w);
	/* An existing file is never replaced. */
	put_file(tpath("wref/model.safetensors"), "keep", 4);
	CHECK(st_writer_create(dir, "model", 0, &w, &err) == MS_OK);
	CHECK(st_writer_declare(w, "x", ST_F32, 1, (int64_t[]){2}, &err) == MS_OK);
	CHECK(st_writer_declare(w, "y", ST_F32, 1, (int64_t[]){-2}, &err) == MS_ERR_ARG);
	CHECK(st_writer_declare(w, "__metadata__", ST_F32, 1, (int64_t[]){2}, &err) == MS_ERR_ARG);
	CHECK(st_writer_declare(w, "z", ST_F32, 2, (int64_t[]){INT64_MAX, 4}, &err) == MS_ERR_ARG);
	CHECK(st_writer_write_f32(w, (float[]){1, 2}, 2, &err) == MS_ERR_EXISTS && strstr(err.msg, "wref/model.safetensors"),
	      "%s", err.msg);
	CHECK(st_writer_file_count(w) == 0);
	st_writer_free(w);
	size_t len;
	char *kept = slurp(tpath("wref/model.safetensors"), &len);
	CHECK(len == 4 && !memcmp(kept, "keep", 4));
	free(kept);

	/* Duplicate names, short and long data. */
	CHECK(st_writer_create(dir, "dup", 0, &w, &err) == MS_OK);
	CHECK(st_writer_declare(w, "x", ST_F32, 1, (int64_t[]){1}, &err) == MS_OK);
	CHECK(st_writer_declare(w, "x", ST_F16, 1, (int64_t[]){1}, &err) == MS_OK);
	CHECK(st_writer_finish(w, &err) == MS_ERR_ARG && strstr(err.msg, "'x'"), "%s", err.msg);
	st_writer_free(w);
	CHECK(st_writer_create(dir, "short", 0, &w, &err) == MS_OK);
	CHECK(st_writer_declare(w, "x", ST_F32, 1, (int64_t[]){3}, &err) == MS_OK);
	CHECK(st_writer_write_f32(w, (float[]){1, 2}, 2, &err) == MS_OK);
	CHECK(st_writer_metadata(w, "k", "v", &err) == MS_ERR_ARG);
	CHECK(st_writer_finish(w, &err) == MS_ERR_ARG && strstr(err.msg, "8 of 12 bytes"), "%s", err.msg);
	CHECK(st_writer_write_f32(w, (float[]){1, 2}, 2, &err) == MS_ERR_ARG); /* one too many */
	st_writer_free(w);
	/* A writer with no tensors writes a valid file holding only metadata. */
	CHECK(st_writer_create(dir, "empty", 0, &w, &err) == MS_OK);
	CHECK(st_writer_metadata(w, "format", "np", &err) == MS_OK);
	CHECK(st_writer_finish(w, &err) == MS_OK, "%s", err.msg);
	st_writer_free(w);
	st_file *f = NULL;
	CHECK(st_open(tpath("wref/empty.safetensors"), &f, &err) == MS_OK, "%s", err.msg);
	CHECK(f && st_count(f) == 0 && !strcmp(st_metadata(f, "format"), "np"));
	st_close(f);
}

/* A file size limit makes write(2) fail with EFBIG (SIGXFSZ ignored): the failure must surface as MS_ERR_IO with
 * the path, whether it shows at fwrite (large data) or only at fflush/fclose (data still buffered). */
static void write_past_limit(const char *base, int64_t nfloat, rlim_t limit)
{
	ms_error err;
	st_writer *w = NULL;
	CHECK(st_writer_create(tpath("efbig"), base, 0, &w, &err) == MS_OK);
	CHECK(st_writer_declare(w, "x", ST_F32, 1, &nfloat, &err) == MS_OK);
	float *x = calloc((size_t)nfloat, sizeof *x);
	struct rlimit old, lim;
	getrlimit(RLIMIT_FSIZE, &old);
	lim = old;
	lim.rlim_cur = limit;
	void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
	setrlimit(RLIMIT_FSIZE, &lim);
	ms_status st = st_writer_write_f32(w, x, (uint64_t)nfloat, &err);
	if (!st)
		st = st_writer_finish(w, &err);
	setrlimit(RLIMIT_FSIZE, &old);
	signal(SIGXFSZ, prev);
	CHECK(st == MS_ERR_IO && strstr(err.msg, "efbig/") && strstr(err.msg, base), "%d %s", st, err.msg);
	CHECK(st_writer_finish(w, &err) == MS_ERR_IO); /* stays failed */
	CHECK(st_writer_file_count(w) == 1);
	st_writer_free(w);
	free(x);
}

static void test_writer_io_errors(void)
{
	tdir("efbig");
	write_past_limit("big", 1 << 18, 64 << 10);  /* 1 MiB of data, 64 KiB allowed: fwrite fails */
	write_past_limit("small", 64, 200);           /* 256 bytes + header, 200 allowed: only the flush fails */
}

/* ---- malformed files ---- */

typedef struct {
	const char *what;
	const char *hdr;       /* header text; NULL: raw bytes below */
	size_t data_len;
	ms_status want;
	const char *in_msg;    /* a piece the message must hold besides the path */
} bad_case;

static const bad_case bad_cases[] = {
	{"not json", "{\"a\":", 0, MS_ERR_ST_HEADER_JSON, "byte "},
	{"json array", "[1, 2]", 0, MS_ERR_ST_HEADER_JSON, "byte 8: header is JSON but not an object"},
	{"empty header", "", 0, MS_ERR_ST_HEADER_JSON, NULL},
	{"trailing garbage", "{} x", 0, MS_ERR_ST_HEADER_JSON, "byte 11"},
	{"unknown dtype", "{\"a\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, MS_ERR_ST_DTYPE, "F33"},
	{"shape overflow", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}", 4,
	 MS_ERR_ST_SHAPE_OVERFLOW, "tensor 'a'"},
	{"byte count", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, MS_ERR_ST_SIZE_MISMATCH,
	 "tensor 'a'"},
	{"overlap",
	 "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
	 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
	 12, MS_ERR_ST_OVERLAP, "tensor 'b'"},
	{"gap",
	 "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
	 "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
	 12, MS_ERR_ST_GAP, "tensor 'b'"},
	{"first not 0", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, MS_ERR_ST_GAP, "tensor 'a'"},
	{"trailing bytes", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, MS_ERR_ST_UNCOVERED,
	 "tensor 'a'"},
	{"data past end", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, MS_ERR_ST_UNCOVERED,
	 "tensor 'a'"},
	{"no tensors, bytes left", "{}", 4, MS_ERR_ST_UNCOVERED, NULL},
	{"duplicate",
	 "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
	 "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
	 8, MS_ERR_ST_DUPLICATE, "tensor 'a'"},
	{"no data_offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, MS_ERR_ST_ENTRY, "data_offsets"},
	{"negative shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, MS_ERR_ST_ENTRY,
	 "negative"},
	{"fractional shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, MS_ERR_ST_ENTRY,
	 "shape"},
	{"shape not array", "{\"a\":{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}}", 4, MS_ERR_ST_ENTRY, "shape"},
	{"too many dims", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
	 MS_ERR_ST_ENTRY, "dimensions"},
	{"dtype not string", "{\"a\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, MS_ERR_ST_ENTRY, "dtype"},
	{"entry not object", "{\"a\":3}", 0, MS_ERR_ST_ENTRY, "tensor 'a'"},
	{"offsets reversed", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, MS_ERR_ST_ENTRY,
	 "data_offsets"},
	{"offsets three", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4, MS_ERR_ST_ENTRY,
	 "data_offsets"},
	{"metadata not string", "{\"__metadata__\":{\"k\":1}}", 0, MS_ERR_ST_ENTRY, "'k'"},
	{"metadata not object", "{\"__metadata__\":[\"k\"]}", 0, MS_ERR_ST_ENTRY, "__metadata__"},
	{"line break in name", "{\"a\\nb\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, MS_ERR_ST_DTYPE,
	 "tensor 'a?b'"}, /* messages stay one line */
	{"metadata twice", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, MS_ERR_ST_DUPLICATE, "__metadata__"},
};

static void check_bad(const char *path, ms_status want, const char *in_msg, const char *what)
{
	st_file *f = NULL;
	ms_error err = {0};
	ms_status st = st_open(path, &f, &err);
	CHECK(st == want, "%s: got %s, want %s (%s)", what, ms_status_name(st), ms_status_name(want), err.msg);
	CHECK(!f);
	CHECK(strstr(err.msg, path) == err.msg, "%s: message does not begin with the file: %s", what, err.msg);
	CHECK(!in_msg || strstr(err.msg, in_msg), "%s: message lacks \"%s\": %s", what, in_msg, err.msg);
	st_close(f);
}

static void test_malformed_table(void)
{
	tdir("bad");
	char name[64];
	for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
		snprintf(name, sizeof name, "bad/%02zu.safetensors", i);
		const char *p = tpath(name);
		put_st(p, bad_cases[i].hdr, bad_cases[i].data_len);
		check_bad(p, bad_cases[i].want, bad_cases[i].in_msg, bad_cases[i].what);
	}
	/* The frame: too short, header length over the limit, header past the end. */
	const char *p = tpath("bad/short.safetensors");
	put_file(p, "\x02\0\0\0\0", 5);
	check_bad(p, MS_ERR_ST_TRUNCATED, "byte 0", "truncated");
	put_file(p = tpath("bad/empty.safetensors"), "", 0);
	check_bad(p, MS_ERR_ST_TRUNCATED, NULL, "empty file");
	unsigned char lim[16] = {0x01, 0xE1, 0xF5, 0x05}; /* 100,000,001 little-endian */
	put_file(p = tpath("bad/limit.safetensors"), lim, sizeof lim);
	check_bad(p, MS_ERR_ST_HEADER_LIMIT, "100000001", "header limit");
	unsigned char huge[8] = {0, 0, 0, 0, 0, 0, 0, 0x80};
	put_file(p = tpath("bad/huge.safetensors"), huge, sizeof huge);
	check_bad(p, MS_ERR_ST_HEADER_LIMIT, NULL, "header length 2^63");
	unsigned char past[12] = {100, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' '};
	put_file(p = tpath("bad/past.safetensors"), past, sizeof past);
	check_bad(p, MS_ERR_ST_HEADER_PAST_END, NULL, "header past end");
	check_bad(tpath("bad/missing.safetensors"), MS_ERR_IO, "missing.safetensors", "missing file");
}

/* The byte offsets in messages are absolute: the data of tensor b of the gap case is at 8 + N + 8. */
static void test_error_offsets(void)
{
	const char *hdr = bad_cases[8].hdr;
	const char *p = tpath("bad/gap-offset.safetensors");
	put_st(p, hdr, 12);
	char want[64];
	snprintf(want, sizeof want, "tensor 'b': byte %zu:", 8 + strlen(hdr) + 8);
	check_bad(p, MS_ERR_ST_GAP, want, "gap offset");
	/* A header problem points at the entry's key: "a" is at header byte 1, file byte 9. */
	put_st(p = tpath("bad/key-offset.safetensors"), "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4);
	check_bad(p, MS_ERR_ST_ENTRY, "tensor 'a': byte 9:", "entry offset");
}

/* Valid edge cases: an empty header object, spaces after the JSON, zero-size tensors, a 0-d tensor. */
static void test_valid_edges(void)
{
	ms_error err;
	st_file *f = NULL;
	const char *p = tpath("bad/ok-empty.safetensors");
	put_st(p, "{}      ", 0);
	CHECK(st_open(p, &f, &err) == MS_OK && st_count(f) == 0, "%s", err.msg);
	st_close(f);
	f = NULL;
	put_st(p = tpath("bad/ok-zero.safetensors"),
	       "{\"z\":{\"dtype\":\"F16\",\"shape\":[0,3],\"data_offsets\":[0,0]},"
	       "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
	       "\"e\":{\"dtype\":\"I64\",\"shape\":[2,0],\"data_offsets\":[4,4]}}  ",
	       4);
	CHECK(st_open(p, &f, &err) == MS_OK, "%s", err.msg);
	if (!f)
		return;
	CHECK(st_count(f) == 3 && !strcmp(st_get(f, 0)->name, "e") && !strcmp(st_get(f, 2)->name, "z"));
	const st_tensor *s = st_find(f, "s");
	float v = 0;
	CHECK(s && s->ndim == 0 && s->numel == 1 && st_read_f32(s, &v, &err) == MS_OK && v == 1.0f);
	CHECK(st_read_f32(st_find(f, "z"), NULL, &err) == MS_OK); /* nothing to read */
	CHECK(!st_metadata(f, "format"));
	st_close(f);
}

/* ---- shard sets gone wrong ---- */

static void put_shard(const char *dir, const char *file, const char *names)
{
	char hdr[512] = "{", path[512];
	size_t off = 0;
	char buf[256];
	snprintf(buf, sizeof buf, "%s", names);
	for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
		size_t n = strlen(hdr);
		snprintf(hdr + n, sizeof hdr - n, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[%zu,%zu]}",
			 off ? "," : "", tok, off, off + 4);
		off += 4;
	}
	strcat(hdr, "}");
	snprintf(path, sizeof path, "%s/%s", dir, file);
	put_st(path, hdr, off);
}

typedef struct {
	const char *what;
	const char *index;
	const char *in_msg;
} bad_index;

/* Shards s1 = {a, b} and s2 = {c} exist in every case; the index differs. */
static const bad_index bad_indexes[] = {
	{"missing shard", "{\"weight_map\":{\"a\":\"s1\",\"b\":\"s1\",\"c\":\"s2\",\"d\":\"s3\"}}", "tensor 'd'"},
	{"wrong shard", "{\"weight_map\":{\"a\":\"s1\",\"b\":\"s2\",\"c\":\"s2\"}}", "tensor 'b'"},
	{"not in map", "{\"weight_map\":{\"a\":\"s1\",\"c\":\"s2\"}}", "tensor 'b'"},
	{"not in shard", "{\"weight_map\":{\"a\":\"s1\",\"b\":\"s1\",\"c\":\"s2\",\"e\":\"s2\"}}", "tensor 'e'"},
	{"leaves dir", "{\"weight_map\":{\"a\":\"../s1\",\"b\":\"s1\",\"c\":\"s2\"}}", "tensor 'a'"},
	{"slash", "{\"weight_map\":{\"a\":\"x/s1\",\"b\":\"s1\",\"c\":\"s2\"}}", "tensor 'a'"},
	{"not string", "{\"weight_map\":{\"a\":1,\"b\":\"s1\",\"c\":\"s2\"}}", "tensor 'a'"},
	{"map twice", "{\"weight_map\":{\"a\":\"s1\",\"a\":\"s1\",\"b\":\"s1\",\"c\":\"s2\"}}", "tensor 'a'"},
	{"no map", "{\"metadata\":{}}", "weight_map"},
	{"total", "{\"metadata\":{\"total_size\":11},\"weight_map\":{\"a\":\"s1\",\"b\":\"s1\",\"c\":\"s2\"}}", "12"},
	{"metadata array", "{\"metadata\":[],\"weight_map\":{\"a\":\"s1\",\"b\":\"s1\",\"c\":\"s2\"}}", "metadata"},
	{"total not number", "{\"metadata\":{\"total_size\":\"12\"},\"weight_map\":{\"a\":\"s1\",\"b\":\"s1\",\"c\":\"s2\"}}",
	 "total_size"},
	{"not json", "{\"weight_map\":", "byte"},
	{"array", "[]", "not an object"},
};

static void test_bad_index(void)
{
	char dir[512];
	snprintf(dir, sizeof dir, "%s", tdir("idx")); /* tpath's ring is reused below */
	put_shard(dir, "s1", "a,b");
	put_shard(dir, "s2", "c");
	char name[64];
	for (size_t i = 0; i < sizeof bad_indexes / sizeof bad_indexes[0]; i++) {
		snprintf(name, sizeof name, "idx/%02zu.index.json", i);
		const char *p = tpath(name);
		put_file(p, bad_indexes[i].index, strlen(bad_indexes[i].index));
		check_bad(p, MS_ERR_ST_INDEX, bad_indexes[i].in_msg, bad_indexes[i].what);
	}
	/* The same shards with a right index open, total_size included. */
	const char *good = "{\"metadata\":{\"total_size\":12},\"weight_map\":{\"c\":\"s2\",\"a\":\"s1\",\"b\":\"s1\"}}";
	const char *p = tpath("idx/good.index.json");
	put_file(p, good, strlen(good));
	st_file *f = NULL;
	ms_error err;
	CHECK(st_open(p, &f, &err) == MS_OK, "%s", err.msg);
	CHECK(f && st_count(f) == 3 && st_shard_count(f) == 2 && !strcmp(st_path(f), p));
	CHECK(f && strstr(st_find(f, "c")->path, "idx/s2") && !strcmp(st_get(f, 1)->name, "b"));
	st_close(f);
	/* A name in two shards. */
	put_shard(dir, "s3", "a");
	const char *two = "{\"weight_map\":{\"a\":\"s3\",\"b\":\"s1\",\"c\":\"s2\"}}";
	put_file(p = tpath("idx/two.index.json"), two, strlen(two));
	check_bad(p, MS_ERR_ST_INDEX, "tensor 'a'", "name in two shards");
	/* A broken shard keeps its own status. */
	put_st(tpath("idx/s4"), "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8);
	const char *bad = "{\"weight_map\":{\"a\":\"s4\"}}";
	put_file(p = tpath("idx/broken.index.json"), bad, strlen(bad));
	CHECK(st_open(p, &f, &err) == MS_ERR_ST_GAP && strstr(err.msg, "idx/s4"), "%s", err.msg);
	/* A directory with neither file. */
	CHECK(st_open(tdir("idx/none"), &f, &err) == MS_ERR_IO && strstr(err.msg, "model.safetensors"), "%s", err.msg);
}

/* ---- the golden model ---- */

static void test_golden(void)
{
	st_file *f = NULL;
	ms_error err;
	CHECK(st_open(GOLDEN_DIR, &f, &err) == MS_OK, "%s", err.msg);
	if (!f)
		return;
	CHECK(st_count(f) == 96 && st_shard_count(f) == 1 && !strcmp(st_metadata(f, "format"), "pt"));
	CHECK(strstr(st_shard_path(f, 0), "model/model.safetensors"));
	const st_tensor *t = st_find(f, "model.layers.0.block_sparse_moe.experts.0.w1.weight");
	CHECK(t && t->dtype == ST_F32 && t->ndim == 2 && t->shape[0] == 48 && t->shape[1] == 32 && t->numel == 48 * 32);
	t = st_find(f, "lm_head.weight");
	CHECK(t && t->ndim == 2 && t->shape[0] == 128 && t->shape[1] == 32);
	/* The header read independently: 97 entries with the metadata. */
	size_t len;
	char *raw = slurp(GOLDEN_DIR "/model.safetensors", &len);
	uint64_t n = 0;
	for (int i = 7; i >= 0; i--)
		n = n << 8 | (unsigned char)raw[i];
	cJSON *h = cJSON_ParseWithLength(raw + 8, (size_t)n);
	CHECK(cJSON_GetArraySize(h) == 97);
	cJSON_Delete(h);
	/* Every tensor converts, and equals its bytes read from the file without the mapping. */
	int bad = 0;
	for (size_t i = 0; i < st_count(f); i++) {
		const st_tensor *x = st_get(f, i);
		CHECK(st_find(f, x->name) == x);
		float *v = malloc(x->numel * sizeof *v);
		CHECK(st_read_f32(x, v, &err) == MS_OK, "%s", err.msg);
		bad += x->file_offset + x->nbytes > len || memcmp(v, raw + x->file_offset, x->nbytes);
		free(v);
	}
	CHECK(bad == 0, "%d tensors differ from the file bytes", bad);
	free(raw);
	st_close(f);
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(p);
}

int main(void)
{
	snprintf(tmp_root, sizeof tmp_root, "/tmp/test_st_XXXXXX");
	if (!mkdtemp(tmp_root)) {
		perror("mkdtemp");
		return 2;
	}
	RUN(test_dtype_table);
	RUN(test_bf16_hand_values);
	RUN(test_f16_hand_values);
	RUN(test_f16_all_halves);
	RUN(test_rounding_brute_force);
	RUN(test_rows_to_f32_all_codes);
	RUN(test_read_rows_all_codes);
	RUN(test_read_streamed);
	RUN(test_read_cut_short);
	RUN(test_rows_from_f32);
	RUN(test_roundtrip_dtypes);
	RUN(test_read_rows_errors);
	RUN(test_sharded_roundtrip);
	RUN(test_writer_refusals);
	RUN(test_writer_io_errors);
	RUN(test_malformed_table);
	RUN(test_error_offsets);
	RUN(test_valid_edges);
	RUN(test_bad_index);
	RUN(test_golden);
	nftw(tmp_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	return test_summary();
}
