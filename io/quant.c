/* Quantized weight storage (io/quant.h, docs/design.md §2.4). */
#include "io/quant.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

const char *const qt_scheme_names[QT_SCHEME_COUNT] = { QT_SCHEME_TABLE(NAMES_X_NAME) };

/* ---- scalar codecs ---- */

float qt_e4m3_to_f32(uint8_t code)
{
	const int e = (code >> 3) & 15, m = code & 7;
	if (e == 15 && m == 7)
		return NAN;
	float v = e == 0 ? ldexpf((float)m, -9) : ldexpf((float)(8 + m), e - 10);
	return code & 0x80 ? -v : v;
}

uint8_t qt_f32_to_e4m3(float x)
{
	if (isnan(x))
		return 0x7F;
	const uint8_t sign = signbit(x) ? 0x80 : 0;
	const float a = fabsf(x);
	uint8_t mag;
	if (a >= QT_FP8_MAX) {
		mag = 0x7E;
	} else if (a < 0x1p-6f) {
		/* subnormal step 2^-9; rounding up to 8 steps gives code 0x08, the smallest normal */
		mag = (uint8_t)nearbyintf(a * 0x1p9f);
	} else {
		int ex;
		float fr = frexpf(a, &ex);                    /* a = fr 2^ex, fr in [0.5, 1) */
		int m = (int)nearbyintf((2.0f * fr - 1.0f) * 8.0f);   /* exact product: ties go to even */
		int e = ex - 1 + 7;
		if (m == 8) {
			m = 0;
			e++;
		}
		mag = (uint8_t)((e << 3) | m);
		if (mag > 0x7E)   /* cannot happen below 448, kept as a guard */
			mag = 0x7E;
	}
	return sign | mag;
}

float qt_e2m1_to_f32(uint8_t code)
{
	static const float mag[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
	return code & 8 ? -mag[code & 7] : mag[code & 7];
}

uint8_t qt_f32_to_e2m1(float x)
{
	const float a = fabsf(x);
	int best = 0;
	float best_d = INFINITY;
	for (int c = 0; c < 8; c++) {
		float d = fabsf(a - qt_e2m1_to_f32((uint8_t)c));
		if (d < best_d || (d == best_d && (c & 1) == 0)) {
			best = c;
			best_d = d;
		}
	}
	return (uint8_t)((signbit(x) ? 8 : 0) | best);
}

float qt_e8m0_to_f32(uint8_t code)
{
	return code == 0xFF ? NAN : ldexpf(1.0f, (int)code - 127);
}

/* ---- quantization_config ---- */

static ms_status read_block_size(const cJSON *q, const char *where, qt_config *out, ms_error *err)
{
	const cJSON *bs = cJSON_GetObjectItemCaseSensitive(q, "weight_block_size");
	if (!bs || cJSON_IsNull(bs))
		return MS_OK;
	if (!cJSON_IsArray(bs) || cJSON_GetArraySize(bs) != 2)
		return ms_fail(err, MS_ERR_CFG_FIELD, "%s: quantization_config.weight_block_size must be two integers "
			       "[rows, cols]", where);
	for (int i = 0; i < 2; i++) {
		const cJSON *v = cJSON_GetArrayItem(bs, i);
		double x = cJSON_IsNumber(v) ? v->valuedouble : 0;
		if (!(x >= 1 && x <= 65536 && x == floor(x)))
			return ms_fail(err, MS_ERR_CFG_FIELD, "%s: quantization_config.weight_block_size must be two "
				       "integers in [1, 65536]", where);
		out->block[i] = (int)x;
	}
	return MS_OK;
}

static ms_status read_not_convert(const cJSON *q, const char *where, qt_config *out, ms_error *err)
{
	const cJSON *list = cJSON_GetObjectItemCaseSensitive(q, "modules_to_not_convert");
	if (!list || cJSON_IsNull(list))
		return MS_OK;
	if (!cJSON_IsArray(list))
		return ms_fail(err, MS_ERR_CFG_FIELD, "%s: quantization_config.modules_to_not_convert must be a list of "
			       "strings", where);
	const cJSON *v;
	cJSON_ArrayForEach(v, list) {
		if (!cJSON_IsString(v) || strlen(v->valuestring) >= sizeof out->not_convert[0] || !v->valuestring[0])
			return ms_fail(err, MS_ERR_CFG_FIELD, "%s: quantization_config.modules_to_not_convert must hold "
				       "non-empty strings of at most %zu bytes", where, sizeof out->not_convert[0] - 1);
		if (out->n_not_convert == QT_MAX_NOT_CONVERT)
			return ms_fail(err, MS_ERR_CFG_FIELD, "%s: quantization_config.modules_to_not_convert: more than %d "
				       "entries", where, QT_MAX_NOT_CONVERT);
		snprintf(out->not_convert[out->n_not_convert++], sizeof out->not_convert[0], "%s", v->valuestring);
	}
	return MS_OK;
}

ms_status qt_config_read(const void *cfg_json, const char *where, qt_config *out, ms_error *err)
{
	memset(out, 0, sizeof *out);
	out->block[0] = out->block[1] = 128;
	const cJSON *q = cJSON_GetObjectItemCaseSensitive((const cJSON *)cfg_json, "quantization_config");
	if (!q || cJSON_IsNull(q))
		return MS_OK;
	if (!cJSON_IsObject(q))
		return ms_fail(err, MS_ERR_CFG_FIELD, "%s: field 'quantization_config' must be an object", where);
	const cJSON *method = cJSON_GetObjectItemCaseSensitive(q, "quant_method");
	if (!cJSON_IsString(method))
		return ms_fail(err, MS_ERR_CFG_FIELD, "%s: quantization_config.quant_method missing or not a string",
			       where);
	int s = names_index(qt_scheme_names, QT_SCHEME_COUNT, method->valuestring);
	if (s <= QT_NONE) {
		char shown[40];
		size_t i = 0;
		for (; method->valuestring[i] && i + 1 < sizeof shown; i++)
			shown[i] = (unsigned char)method->valuestring[i] < 0x20 ? '?' : method->valuestring[i];
		shown[i] = '\0';
		return ms_fail(err, MS_ERR_CFG_FIELD, "%s: quantization_config.quant_method '%s' is not supported (fp8, "
			       "mxfp4)", where, shown);
	}
	out->scheme = (qt_scheme)s;
	ms_status st = read_not_convert(q, where, out, err);
	if (st != MS_OK || out->scheme != QT_FP8)
		return st;
	const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(q, "fmt");
	if (fmt && !cJSON_IsNull(fmt) && (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, "e4m3") != 0))
		return ms_fail(err, MS_ERR_CFG_FIELD, "%s: quantization_config.fmt must be \"e4m3\"", where);
	return read_block_size(q, where, out, err);
}

int qt_not_converted(const qt_config *q, const char *name)
{
	char pat[512];
	size_t n = 0;
	for (const char *p = name; *p && n + 1 < sizeof pat; p++) {
		const int digit = *p >= '0' && *p <= '9';
		if (digit && p > name && p[-1] >= '0' && p[-1] <= '9')
			continue;   /* one '*' for the whole run */
		pat[n++] = digit ? '*' : *p;
	}
	pat[n] = '\0';
	for (int i = 0; i < q->n_not_convert; i++)
		if (strstr(pat, q->not_convert[i]))
			return 1;
	return 0;
}

/* ---- matrices ---- */

static ms_status bad_shape(const st_tensor *t, const int64_t *want, int ndim, const char *why, ms_error *err)
{
	char found[128], expected[128];
	st_shape_text(found, sizeof found, t->shape, t->ndim);
	st_shape_text(expected, sizeof expected, want, ndim);
	return ms_fail(err, MS_ERR_MODEL_SHAPE, "%s: tensor '%s': shape %s, expected %s (%s)", t->path, t->name, found,
		       expected, why);
}

ms_status qt_bind_plain(const st_tensor *t, qt_matrix *out, ms_error *err)
{
	memset(out, 0, sizeof *out);
	if (!st_dtype_is_float(t->dtype))
		return ms_fail(err, MS_ERR_ST_DTYPE, "%s: tensor '%s': dtype %s, expected F32, F16 or BF16", t->path,
			       t->name, st_dtype_name(t->dtype));
	out->scheme = QT_NONE;
	out->codes = t;
	out->rows = t->ndim ? t->shape[0] : 1;
	out->cols = out->rows ? (int64_t)(t->numel / (uint64_t)out->rows) : 0;
	return MS_OK;
}

static int64_t ceil_div(int64_t a, int64_t b)
{
	return (a + b - 1) / b;
}

ms_status qt_bind_fp8(const st_tensor *codes, const st_tensor *scale, int br, int bc, qt_matrix *out, ms_error *err)
{
	memset(out, 0, sizeof *out);
	if (codes->dtype != ST_F8_E4M3)
		return ms_fail(err, MS_ERR_ST_DTYPE, "%s: tensor '%s': dtype %s, expected F8_E4M3 (quant_method fp8)",
			       codes->path, codes->name, st_dtype_name(codes->dtype));
	if (codes->ndim != 2)
		return ms_fail(err, MS_ERR_MODEL_SHAPE, "%s: tensor '%s': an FP8 weight must be a matrix, it has %d "
			       "dimensions", codes->path, codes->name, codes->ndim);
	if (!scale)
		return ms_fail(err, MS_ERR_MODEL_TENSOR, "%s: tensor '%s' is F8_E4M3 but its weight_scale_inv is missing",
			       codes->path, codes->name);
	if (!st_dtype_is_float(scale->dtype))
		return ms_fail(err, MS_ERR_ST_DTYPE, "%s: tensor '%s': dtype %s, expected F32, BF16 or F16 scales",
			       scale->path, scale->name, st_dtype_name(scale->dtype));
	if (br < 1 || bc < 1)
		return ms_fail(err, MS_ERR_ARG, "qt_bind_fp8: block %d x %d", br, bc);
	const int64_t want[2] = {ceil_div(codes->shape[0], br), ceil_div(codes->shape[1], bc)};
	if (scale->ndim != 2 || scale->shape[0] != want[0] || scale->shape[1] != want[1]) {
		char why[160];
		snprintf(why, sizeof why, "one scale per %d x %d block of '%s' %lld x %lld: weight_block_size", br, bc,
			 codes->name, (long long)codes->shape[0], (long long)codes->shape[1]);
		return bad_shape(scale, want, 2, why, err);
	}
	float s[64];
	for (uint64_t i = 0; i < scale->numel; i += 64) {
		size_t n = scale->numel - i < 64 ? (size_t)(scale->numel - i) : 64;
		if (st_row_to_f32(scale->dtype, (const unsigned char *)scale->data + i * st_dtype_size(scale->dtype), s,
				  n) != 0) {
			size_t k = 0;
			while (k < n && isfinite(s[k]))
				k++;
			uint64_t at = i + k;
			return ms_fail(err, MS_ERR_NONFINITE, "%s: tensor '%s': scale of block [%llu, %llu] is NaN or "
				       "infinite", scale->path, scale->name, (unsigned long long)(at / (uint64_t)want[1]),
				       (unsigned long long)(at % (uint64_t)want[1]));
		}
	}
	*out = (qt_matrix){.scheme = QT_FP8, .codes = codes, .scales = scale, .rows = codes->shape[0],
			   .cols = codes->shape[1], .br = br, .bc = bc};
	return MS_OK;
}

ms_status qt_bind_mxfp4(const st_tensor *blocks, const st_tensor *scales, qt_matrix *out, ms_error *err)
{
	memset(out, 0, sizeof *out);
	if (blocks->dtype != ST_U8)
		return ms_fail(err, MS_ERR_ST_DTYPE, "%s: tensor '%s': dtype %s, expected U8 (MXFP4 blocks)", blocks->path,
			       blocks->name, st_dtype_name(blocks->dtype));
	if (blocks->ndim < 2 || blocks->shape[blocks->ndim - 1] != 16) {
		char found[128];
		st_shape_text(found, sizeof found, blocks->shape, blocks->ndim);
		return ms_fail(err, MS_ERR_MODEL_SHAPE, "%s: tensor '%s': shape %s, expected [..., G, 16] (MXFP4 blocks "
			       "of 32 values)", blocks->path, blocks->name, found);
	}
	if (!scales)
		return ms_fail(err, MS_ERR_MODEL_TENSOR, "%s: tensor '%s' holds MXFP4 blocks but its _scales tensor is "
			       "missing", blocks->path, blocks->name);
	if (scales->dtype != ST_U8)
		return ms_fail(err, MS_ERR_ST_DTYPE, "%s: tensor '%s': dtype %s, expected U8 (E8M0 scales)", scales->path,
			       scales->name, st_dtype_name(scales->dtype));
	int same = scales->ndim == blocks->ndim - 1;
	for (int i = 0; same && i < scales->ndim; i++)
		same = scales->shape[i] == blocks->shape[i];
	if (!same) {
		char why[160];
		snprintf(why, sizeof why, "one E8M0 scale per 32 values of '%s'", blocks->name);
		return bad_shape(scales, blocks->shape, blocks->ndim - 1, why, err);
	}
	const int64_t G = blocks->shape[blocks->ndim - 2];
	*out = (qt_matrix){.scheme = QT_MXFP4, .codes = blocks, .scales = scales,
			   .rows = G ? (int64_t)(scales->numel / (uint64_t)G) : 0, .cols = G * QT_MX_BLOCK};
	return MS_OK;
}

/* Codes and scales are read from the file a chunk of rows at a time (st_read_bytes: pread into a buffer of about
 * QT_CHUNK bytes that stays in cache while it is decoded), as st_read_rows_f32 reads BF16: no page faults on the
 * mapping, and a file cut short after it was opened is an error naming the byte rather than a SIGBUS. */
#define QT_CHUNK ((size_t)256 << 10)

/* Rows per chunk when a row holds `bytes` bytes: at least one. */
static int64_t chunk_rows(uint64_t bytes)
{
	return bytes >= QT_CHUNK ? 1 : (int64_t)(QT_CHUNK / bytes);
}

static ms_status read_fp8(const qt_matrix *q, int64_t row0, int64_t nrows, float *out, ms_error *err)
{
	float lut[256];
	for (int c = 0; c < 256; c++)
		lut[c] = qt_e4m3_to_f32((uint8_t)c);
	const int64_t cols = q->cols, sc = q->scales->shape[1];
	const size_t ses = st_dtype_size(q->scales->dtype);
	const int64_t per = chunk_rows((uint64_t)cols);
	float *srow = malloc((size_t)sc * sizeof *srow);   /* [sc] the scales of the current block row */
	unsigned char *sraw = malloc((size_t)sc * ses);    /* the same, as stored */
	unsigned char *codes = malloc((size_t)((nrows < per ? nrows : per) * cols)); /* a chunk of rows' codes */
	ms_status st = srow && sraw && codes ? MS_OK
					   : ms_fail(err, MS_ERR_NOMEM, "%s: tensor '%s': out of memory", q->codes->path,
						     q->codes->name);
	int64_t have = -1;
	for (int64_t c0 = row0; st == MS_OK && c0 < row0 + nrows; c0 += per) {
		const int64_t n = row0 + nrows - c0 < per ? row0 + nrows - c0 : per;
		st = st_read_bytes(q->codes, (uint64_t)(c0 * cols), (size_t)(n * cols), codes, err);
		for (int64_t r = c0; st == MS_OK && r < c0 + n; r++) {
			const int64_t b = r / q->br;
			if (b != have) {
				st = st_read_bytes(q->scales, (uint64_t)(b * sc) * ses, (size_t)sc * ses, sraw, err);
				if (st != MS_OK)
					break;
				st_row_to_f32(q->scales->dtype, sraw, srow, (size_t)sc);   /* finite: checked by qt_bind_fp8 */
				have = b;
			}
			const unsigned char *src = codes + (uint64_t)((r - c0) * cols);
			float *dst = out + (uint64_t)((r - row0) * cols);
			unsigned nan = 0;
			for (int64_t j = 0; j < sc; j++) {   /* one block column at a time: one scale, a loop that vectorises */
				const int64_t b0 = j * q->bc, b1 = b0 + q->bc < cols ? b0 + q->bc : cols;
				const float s = srow[j];
				for (int64_t c = b0; c < b1; c++) {
					nan |= (src[c] & 0x7F) == 0x7F;
					dst[c] = lut[src[c]] * s;
				}
			}
			if (nan)
				st = ms_fail(err, MS_ERR_NONFINITE, "%s: tensor '%s': row %lld: NaN code", q->codes->path,
					     q->codes->name, (long long)r);
			for (int64_t c = 0; st == MS_OK && c < cols; c++)
				if (!isfinite(dst[c]))
					st = ms_fail(err, MS_ERR_NONFINITE, "%s: tensor '%s': row %lld: infinite after scaling",
						     q->codes->path, q->codes->name, (long long)r);
		}
	}
	free(srow);
	free(sraw);
	free(codes);
	return st;
}

static ms_status read_mxfp4(const qt_matrix *q, int64_t row0, int64_t nrows, float *out, ms_error *err)
{
	float lut[16];
	for (int c = 0; c < 16; c++)
		lut[c] = qt_e2m1_to_f32((uint8_t)c);
	const int64_t G = q->cols / QT_MX_BLOCK, per = chunk_rows((uint64_t)G * 16);
	const int64_t most = nrows < per ? nrows : per;
	unsigned char *blocks = malloc((size_t)(most * G * 16)), *scales = malloc((size_t)(most * G));
	ms_status st = blocks && scales ? MS_OK
					: ms_fail(err, MS_ERR_NOMEM, "%s: tensor '%s': out of memory", q->codes->path,
						  q->codes->name);
	for (int64_t c0 = row0; st == MS_OK && c0 < row0 + nrows; c0 += per) {
		const int64_t n = row0 + nrows - c0 < per ? row0 + nrows - c0 : per;
		st = st_read_bytes(q->codes, (uint64_t)(c0 * G * 16), (size_t)(n * G * 16), blocks, err);
		if (st == MS_OK)
			st = st_read_bytes(q->scales, (uint64_t)(c0 * G), (size_t)(n * G), scales, err);
		for (int64_t r = c0; st == MS_OK && r < c0 + n; r++)
			for (int64_t g = 0; g < G; g++) {
				const uint8_t e = scales[(r - c0) * G + g];
				if (e == 0xFF) {
					st = ms_fail(err, MS_ERR_NONFINITE, "%s: tensor '%s': row %lld, block %lld: NaN scale "
						     "(0xFF)", q->scales->path, q->scales->name, (long long)r, (long long)g);
					break;
				}
				const float s = qt_e8m0_to_f32(e);
				const unsigned char *src = blocks + (uint64_t)(((r - c0) * G + g) * 16);
				float *dst = out + (uint64_t)((r - row0) * q->cols + g * QT_MX_BLOCK);
				for (int i = 0; i < 16; i++) {
					dst[2 * i] = lut[src[i] & 15] * s;
					dst[2 * i + 1] = lut[src[i] >> 4] * s;
				}
			}
	}
	free(blocks);
	free(scales);
	return st;
}

ms_status qt_read_rows_f32(const qt_matrix *q, int64_t row0, int64_t nrows, float *out, ms_error *err)
{
	if (!q || !q->codes)
		return ms_fail(err, MS_ERR_ARG, "qt_read_rows_f32: no matrix");
	if (row0 < 0 || nrows < 0 || row0 > q->rows || nrows > q->rows - row0 || (!out && nrows > 0))
		return ms_fail(err, MS_ERR_ARG, "%s: tensor '%s': rows [%lld, +%lld) outside its %lld rows",
			       q->codes->path, q->codes->name, (long long)row0, (long long)nrows, (long long)q->rows);
	if (nrows == 0 || q->cols == 0)
		return MS_OK;   /* nothing to read (and no zero-byte buffers to ask for) */
	switch (q->scheme) {
	case QT_FP8: return read_fp8(q, row0, nrows, out, err);
	case QT_MXFP4: return read_mxfp4(q, row0, nrows, out, err);
	default: return st_read_rows_f32(q->codes, row0, nrows, out, err);
	}
}

ms_status qt_read_f32(const qt_matrix *q, float *out, ms_error *err)
{
	return qt_read_rows_f32(q, 0, q ? q->rows : 0, out, err);
}

int qt_fp8_scale_name(const char *weight, char *buf, size_t len)
{
	static const char suffix[] = ".weight";
	size_t n = strlen(weight), k = sizeof suffix - 1;
	if (n < k || strcmp(weight + n - k, suffix) != 0)
		return -1;
	int w = snprintf(buf, len, "%s_scale_inv", weight);
	return w >= 0 && (size_t)w < len ? 0 : -1;
}

uint64_t qt_matrix_bytes(const qt_matrix *q)
{
	return (q->codes ? q->codes->nbytes : 0) + (q->scales ? q->scales->nbytes : 0);
}

void qt_fp8_scale_shape(int64_t rows, int64_t cols, int br, int bc, int64_t shape[2])
{
	shape[0] = (rows + br - 1) / br;
	shape[1] = (cols + bc - 1) / bc;
}

uint64_t qt_stored_bytes(qt_scheme scheme, int64_t rows, int64_t cols, st_dtype dtype, int br, int bc)
{
	const uint64_t values = (uint64_t)rows * (uint64_t)cols;
	switch (scheme) {
	case QT_FP8: {
		int64_t shape[2];
		qt_fp8_scale_shape(rows, cols, br, bc, shape);
		return values + (uint64_t)shape[0] * (uint64_t)shape[1] * st_dtype_size(dtype);
	}
	case QT_MXFP4: return values / 2 + values / QT_MX_BLOCK;
	default: return values * st_dtype_size(dtype);
	}
}

/* ---- quantizing ---- */

static void block_error(qt_error *e, double err2, double norm2)
{
	e->err2 += err2;
	e->norm2 += norm2;
	double rel = norm2 > 0 ? sqrt(err2 / norm2) : 0.0;
	if (rel > e->max_block_rel)
		e->max_block_rel = rel;
}

void qt_fp8_quantize(const float *x, int64_t rows, int64_t cols, int br, int bc, st_dtype scale_dtype,
		     uint8_t *codes, float *scale_inv, float *deq, qt_error *e)
{
	const int64_t sr = ceil_div(rows, br), sc = ceil_div(cols, bc);
	qt_error acc = {0};
	for (int64_t i = 0; i < sr; i++) {
		for (int64_t j = 0; j < sc; j++) {
			const int64_t r1 = (i + 1) * br < rows ? (i + 1) * br : rows;
			const int64_t c1 = (j + 1) * bc < cols ? (j + 1) * bc : cols;
			float amax = 0.0f;
			for (int64_t r = i * br; r < r1; r++)
				for (int64_t c = j * bc; c < c1; c++)
					amax = fmaxf(amax, fabsf(x[r * cols + c]));
			float scale = amax > 0.0f ? QT_FP8_MAX / amax : 1.0f;
			float inv = 1.0f / scale;
			if (scale_dtype == ST_BF16 || scale_dtype == ST_F16) {
				inv = scale_dtype == ST_BF16 ? st_bf16_to_f32(st_f32_to_bf16(inv))
							     : st_f16_to_f32(st_f32_to_f16(inv));
				scale = 1.0f / inv;
			}
			scale_inv[i * sc + j] = inv;
			double err2 = 0.0, norm2 = 0.0;
			for (int64_t r = i * br; r < r1; r++) {
				for (int64_t c = j * bc; c < c1; c++) {
					const float v = x[r * cols + c];
					const float y = fminf(fmaxf(v * scale, -QT_FP8_MAX), QT_FP8_MAX);
					const uint8_t code = qt_f32_to_e4m3(y);
					const float back = qt_e4m3_to_f32(code) * inv;
					codes[r * cols + c] = code;
					err2 += ((double)v - back) * ((double)v - back);
					norm2 += (double)v * v;
					if (deq)
						deq[r * cols + c] = back;
				}
			}
			block_error(&acc, err2, norm2);
		}
	}
	if (e)
		*e = acc;
}

int qt_mxfp4_quantize(const float *x, int64_t rows, int64_t cols, uint8_t *blocks, uint8_t *scales, float *deq,
		      qt_error *e)
{
	const int64_t G = cols / QT_MX_BLOCK;
	qt_error acc = {0};
	for (int64_t r = 0; r < rows; r++) {
		for (int64_t g = 0; g < G; g++) {
			const float *v = x + r * cols + g * QT_MX_BLOCK;
			float amax = 0.0f;
			for (int i = 0; i < QT_MX_BLOCK; i++)
				amax = fmaxf(amax, fabsf(v[i]));
			/* amax / 6 rounded up to a power of two: add all-ones to the mantissa, keep the exponent */
			float ds = amax / QT_FP4_MAX;
			uint32_t bits;
			memcpy(&bits, &ds, sizeof bits);
			bits = (bits + 0x007FFFFFu) & 0x7F800000u;
			const uint32_t code = bits >> 23;
			if (code >= 0xFF || !(amax <= FLT_MAX))   /* finite amax / 6 rounds up to at most 2^126 */
				return -1;
			scales[r * G + g] = (uint8_t)code;
			const float s = qt_e8m0_to_f32((uint8_t)code);
			double err2 = 0.0, norm2 = 0.0;
			uint8_t *dst = blocks + (r * G + g) * 16;
			for (int i = 0; i < QT_MX_BLOCK; i += 2) {
				const uint8_t lo = qt_f32_to_e2m1(ldexpf(v[i], 127 - (int)code));
				const uint8_t hi = qt_f32_to_e2m1(ldexpf(v[i + 1], 127 - (int)code));
				dst[i / 2] = (uint8_t)(lo | hi << 4);
				const float b0 = qt_e2m1_to_f32(lo) * s, b1 = qt_e2m1_to_f32(hi) * s;
				err2 += ((double)v[i] - b0) * ((double)v[i] - b0) + ((double)v[i + 1] - b1) * ((double)v[i + 1] - b1);
				norm2 += (double)v[i] * v[i] + (double)v[i + 1] * v[i + 1];
				if (deq) {
					deq[r * cols + g * QT_MX_BLOCK + i] = b0;
					deq[r * cols + g * QT_MX_BLOCK + i + 1] = b1;
				}
			}
			block_error(&acc, err2, norm2);
		}
	}
	if (e)
		*e = acc;
	return 0;
}

double qt_error_rel(const qt_error *e)
{
	return e->norm2 > 0 ? sqrt(e->err2 / e->norm2) : 0.0;
}

void qt_error_add(qt_error *into, const qt_error *e)
{
	into->err2 += e->err2;
	into->norm2 += e->norm2;
	if (e->max_block_rel > into->max_block_rel)
		into->max_block_rel = e->max_block_rel;
}
