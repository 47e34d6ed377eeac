/* io/quant: every code point of E4M3, E2M1 and E8M0 against the formulas of the OCP specifications (OFP8 rev 1.0,
 * Microscaling Formats v1.0) written out here independently; encoders against brute-force nearest search; block
 * quantizers round-tripped within half a quantization step; the readers on synthetic tensors (row ranges, the
 * nibble order, block scales of non-square blocks and partial edge blocks); binding errors; quantization_config. */
#include "io/quant.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/test.h"

/* ---- references from the specifications ---- */

/* OFP8 E4M3: bias 7; E = 0 is subnormal (M / 8) 2^(1 - 7); E = 15, M = 7 is NaN; no infinity. */
static double ref_e4m3(int c)
{
	int s = c >> 7, e = (c >> 3) & 15, m = c & 7;
	if (e == 15 && m == 7)
		return NAN;
	double v = e == 0 ? (m / 8.0) * pow(2.0, 1 - 7) : (1.0 + m / 8.0) * pow(2.0, e - 7);
	return s ? -v : v;
}

/* MX E2M1: bias 1; E = 0 is subnormal (M / 2) 2^(1 - 1); no NaN or infinity. */
static double ref_e2m1(int c)
{
	int s = c >> 3, e = (c >> 1) & 3, m = c & 1;
	double v = e == 0 ? (m / 2.0) : (1.0 + m / 2.0) * pow(2.0, e - 1);
	return s ? -v : v;
}

/* MX E8M0: 2^(E - 127), E = 255 NaN. */
static double ref_e8m0(int c)
{
	return c == 255 ? NAN : pow(2.0, c - 127);
}

static void test_e4m3_every_code(void)
{
	int nan = 0;
	for (int c = 0; c < 256; c++) {
		double want = ref_e4m3(c);
		float got = qt_e4m3_to_f32((uint8_t)c);
		if (isnan(want)) {
			nan++;
			CHECK(isnan(got), "code 0x%02x: %g, expected NaN", c, got);
			continue;
		}
		CHECK((double)got == want && !isinf(got), "code 0x%02x: %.9g, expected %.9g", c, got, want);
		/* every finite code is its own encoding (sign of zero included) */
		CHECK(qt_f32_to_e4m3(got) == c, "0x%02x -> %g -> 0x%02x", c, got, qt_f32_to_e4m3(got));
	}
	EXPECT(nan == 2);   /* 0x7F and 0xFF only */
	EXPECT(qt_e4m3_to_f32(0x7E) == 448.0f && qt_e4m3_to_f32(0xFE) == -448.0f);
	EXPECT(qt_e4m3_to_f32(0x01) == 0x1p-9f && qt_e4m3_to_f32(0x08) == 0x1p-6f && qt_e4m3_to_f32(0x38) == 1.0f);
}

/* The nearest of the finite codes, ties to the code with an even mantissa; saturating. */
static uint8_t brute_e4m3(float x)
{
	int best = -1;
	double bd = INFINITY;
	for (int c = 0; c < 256; c++) {
		double v = ref_e4m3(c);
		if (isnan(v) || (signbit(v) != 0) != (signbit(x) != 0))
			continue;
		double d = fabs(v - (double)x);
		if (d < bd || (d == bd && (c & 1) == 0)) {
			bd = d;
			best = c;
		}
	}
	return (uint8_t)best;
}

static void test_e4m3_encoder(void)
{
	/* every midpoint between neighbours, a little on each side, and random values over the whole range */
	int bad = 0;
	for (int c = 0; c < 0x7E; c++) {
		double lo = ref_e4m3(c), hi = ref_e4m3(c + 1), mid = (lo + hi) / 2;
		const float xs[3] = {(float)mid, nextafterf((float)mid, -1.0f), nextafterf((float)mid, 1000.0f)};
		for (int k = 0; k < 3; k++) {
			for (int sgn = 0; sgn < 2; sgn++) {
				float x = sgn ? -xs[k] : xs[k];
				if (qt_f32_to_e4m3(x) != brute_e4m3(x) && bad++ < 5)
					CHECK(0, "x = %.9g: 0x%02x, brute force 0x%02x", x, qt_f32_to_e4m3(x), brute_e4m3(x));
			}
		}
	}
	unsigned long long s = 7;
	for (int i = 0; i < 20000; i++) {
		float x = test_rand_f(&s) * ldexpf(1.0f, (int)(test_rand_u64(&s) % 20) - 11);
		if (qt_f32_to_e4m3(x) != brute_e4m3(x) && bad++ < 5)
			CHECK(0, "x = %.9g: 0x%02x, brute force 0x%02x", x, qt_f32_to_e4m3(x), brute_e4m3(x));
	}
	EXPECT(bad == 0);
	/* ties to even: 1 + 1/16 lies between 1 (0x38, even) and 1.125 (0x39) */
	EXPECT(qt_f32_to_e4m3(1.0625f) == 0x38 && qt_f32_to_e4m3(1.1875f) == 0x3A);
	/* saturation, never NaN, for finite values; NaN stays NaN */
	EXPECT(qt_f32_to_e4m3(464.0f) == 0x7E && qt_f32_to_e4m3(1e30f) == 0x7E && qt_f32_to_e4m3(-1e30f) == 0xFE);
	EXPECT(qt_f32_to_e4m3(INFINITY) == 0x7E);
	EXPECT((qt_f32_to_e4m3(NAN) & 0x7F) == 0x7F);
	/* the smallest subnormal and the underflow to zero (2^-10 is a tie between 0 and 2^-9: even is 0) */
	EXPECT(qt_f32_to_e4m3(0x1p-9f) == 0x01 && qt_f32_to_e4m3(0x1p-10f) == 0x00 && qt_f32_to_e4m3(0x1.8p-10f) == 0x01);
}

static void test_e2m1_every_code(void)
{
	static const double mags[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
	for (int c = 0; c < 16; c++) {
		double want = ref_e2m1(c);
		EXPECT(fabs(want) == mags[c & 7]);   /* the spec formula gives the table of the brief */
		CHECK((double)qt_e2m1_to_f32((uint8_t)c) == want, "code %d: %g, expected %g", c,
		      qt_e2m1_to_f32((uint8_t)c), want);
		EXPECT(qt_f32_to_e2m1((float)want) == (c == 8 ? 8 : c));
	}
	/* every midpoint, ties to the even code: 0.25 -> 0, 0.75 -> 1, 1.25 -> 1, 1.75 -> 2, 2.5 -> 2, 3.5 -> 4, 5 -> 4 */
	static const struct { float x; uint8_t code; } ties[] = {
		{0.25f, 0}, {0.75f, 2}, {1.25f, 2}, {1.75f, 4}, {2.5f, 4}, {3.5f, 6}, {5.0f, 6},
		{-0.75f, 0xA}, {-5.0f, 0xE}, {7.0f, 7}, {100.0f, 7}, {-100.0f, 0xF}, {0.26f, 1}, {5.01f, 7},
	};
	for (size_t i = 0; i < sizeof ties / sizeof ties[0]; i++)
		CHECK(qt_f32_to_e2m1(ties[i].x) == ties[i].code, "%g: %d, expected %d", ties[i].x,
		      qt_f32_to_e2m1(ties[i].x), ties[i].code);
	/* random values against the nearest grid point by brute force */
	unsigned long long s = 11;
	for (int i = 0; i < 20000; i++) {
		float x = test_rand_f(&s) * 7.0f;
		double best = INFINITY;
		for (int c = 0; c < 16; c++)
			if ((signbit(ref_e2m1(c)) != 0) == (signbit(x) != 0))
				best = fmin(best, fabs(ref_e2m1(c) - x));
		float got = qt_e2m1_to_f32(qt_f32_to_e2m1(x));
		if (fabs(got - x) != best) {
			CHECK(0, "%g -> %g, nearest is %g away", x, got, best);
			break;
		}
	}
}

static void test_e8m0_every_code(void)
{
	for (int c = 0; c < 256; c++) {
		double want = ref_e8m0(c);
		float got = qt_e8m0_to_f32((uint8_t)c);
		if (isnan(want))
			CHECK(isnan(got), "0xFF: %g", got);
		else
			CHECK((double)got == want, "code %d: %g, expected %g", c, got, want);
	}
	EXPECT(qt_e8m0_to_f32(127) == 1.0f && qt_e8m0_to_f32(0) == 0x1p-127f && qt_e8m0_to_f32(254) == 0x1p127f);
}

/* ---- synthetic tensors ---- */

static st_tensor tensor(const char *name, st_dtype dt, int ndim, const int64_t *shape, const void *data)
{
	st_tensor t = {.name = name, .dtype = dt, .ndim = ndim, .data = data, .path = "synthetic.safetensors"};
	t.numel = 1;
	for (int i = 0; i < ndim; i++) {
		t.shape[i] = shape[i];
		t.numel *= (uint64_t)shape[i];
	}
	t.nbytes = t.numel * st_dtype_size(dt);
	return t;
}

/* Random weights with rows of very different magnitude, so that blocks get different scales. */
static float *weights(int64_t rows, int64_t cols, unsigned long long seed)
{
	float *x = malloc((size_t)(rows * cols) * sizeof *x);
	for (int64_t r = 0; r < rows; r++) {
		float mag = ldexpf(1.0f, (int)(r % 9) - 6);
		for (int64_t c = 0; c < cols; c++)
			x[r * cols + c] = test_rand_f(&seed) * mag;
	}
	return x;
}

/* The spacing of E4M3 values at magnitude y (in units of the scaled block). */
static double e4m3_step(double y)
{
	if (y < 0x1p-6)
		return 0x1p-9;
	return ldexp(1.0, (int)floor(log2(y)) - 3);
}

/* Quantizes, then reads back through a scale tensor of dtype sdt (F32, or BF16 as Qwen's FP8 checkpoints). */
static void check_fp8_roundtrip(int64_t rows, int64_t cols, int br, int bc, st_dtype sdt)
{
	float *x = weights(rows, cols, (unsigned long long)(rows * 31 + cols));
	const int64_t sr = (rows + br - 1) / br, sc = (cols + bc - 1) / bc;
	uint8_t *codes = malloc((size_t)(rows * cols));
	float *inv = malloc((size_t)(sr * sc) * sizeof *inv), *deq = malloc((size_t)(rows * cols) * sizeof *deq);
	float *back = malloc((size_t)(rows * cols) * sizeof *back);
	qt_error e;
	qt_fp8_quantize(x, rows, cols, br, bc, sdt, codes, inv, deq, &e);
	st_tensor tc = tensor("w.weight", ST_F8_E4M3, 2, (int64_t[]){rows, cols}, codes);
	uint16_t *inv16 = malloc((size_t)(sr * sc) * sizeof *inv16);
	for (int64_t i = 0; i < sr * sc; i++) {
		inv16[i] = st_f32_to_bf16(inv[i]);
		if (sdt == ST_BF16)   /* the quantizer rounded the scale to what BF16 stores */
			EXPECT(st_bf16_to_f32(inv16[i]) == inv[i]);
	}
	st_tensor ts = tensor("w.weight_scale_inv", sdt, 2, (int64_t[]){sr, sc}, sdt == ST_BF16 ? (void *)inv16 : inv);
	qt_matrix q;
	ms_error err = {0};
	CHECK(qt_bind_fp8(&tc, &ts, br, bc, &q, &err) == MS_OK, "%s", err.msg);
	/* read in two row ranges that cut a block row, to exercise the scale row cache */
	int64_t cut = rows / 2 + 1;
	CHECK(qt_read_rows_f32(&q, 0, cut, back, &err) == MS_OK, "%s", err.msg);
	CHECK(qt_read_rows_f32(&q, cut, rows - cut, back + cut * cols, &err) == MS_OK, "%s", err.msg);
	double err2 = 0, norm2 = 0;
	int bad = 0;
	for (int64_t r = 0; r < rows; r++) {
		for (int64_t c = 0; c < cols; c++) {
			const int64_t i = r * cols + c;
			const double s = inv[(r / br) * sc + c / bc];
			/* the reader and the quantizer's own dequantized copy agree bit for bit */
			if (back[i] != deq[i] && bad++ < 3)
				CHECK(0, "[%lld, %lld]: read %g, quantizer %g", (long long)r, (long long)c, back[i], deq[i]);
			/* half a step of the scaled value, plus rounding of the scale itself */
			const double tol = 0.5 * e4m3_step(fabs(x[i]) / s) * s * (1 + 1e-6) + 1e-30;
			if (fabs(back[i] - (double)x[i]) > tol && bad++ < 3)
				CHECK(0, "[%lld, %lld]: %g -> %g, more than half a step %g", (long long)r, (long long)c, x[i],
				      back[i], tol);
			err2 += (back[i] - (double)x[i]) * (back[i] - (double)x[i]);
			norm2 += (double)x[i] * x[i];
		}
	}
	EXPECT(bad == 0);
	/* each block's largest magnitude maps to 448 exactly */
	for (int64_t i = 0; i < sr * sc; i++)
		EXPECT(inv[i] > 0);
	CHECK_CLOSE(qt_error_rel(&e), sqrt(err2 / norm2), 1e-9);
	/* relative error of E4M3 with 3 mantissa bits: at most 2^-4 per value */
	CHECK(e.max_block_rel > 0 && e.max_block_rel < 0.0625, "max block rel %g", e.max_block_rel);
	/* quantizing the dequantized values again gives the same codes: the grid is a fixed point */
	uint8_t *codes2 = malloc((size_t)(rows * cols));
	float *inv2 = malloc((size_t)(sr * sc) * sizeof *inv2);
	qt_error e2;
	qt_fp8_quantize(deq, rows, cols, br, bc, sdt, codes2, inv2, NULL, &e2);
	EXPECT(memcmp(codes, codes2, (size_t)(rows * cols)) == 0);
	CHECK(e2.max_block_rel < 1e-6, "second quantization moved a block by %g", e2.max_block_rel);
	free(codes2);
	free(inv2);
	free(inv16);
	free(x);
	free(codes);
	free(inv);
	free(deq);
	free(back);
}

static void test_fp8_roundtrip(void)
{
	check_fp8_roundtrip(256, 128, 128, 128, ST_F32);   /* DeepSeek-V3's block */
	check_fp8_roundtrip(96, 160, 32, 64, ST_F32);      /* non-square blocks: rows and columns must not be swapped */
	check_fp8_roundtrip(70, 45, 32, 16, ST_F32);       /* partial edge blocks (DeepSeek-V3's kv_a_proj_with_mqa) */
	check_fp8_roundtrip(96, 160, 32, 64, ST_BF16);     /* BF16 scales, as Qwen's FP8 checkpoints store them */
}

static void test_fp8_scale_layout(void)
{
	/* codes all 1.0 (0x38); scale_inv[i][j] = 10 i + j + 1: each value is its block's scale */
	const int64_t rows = 6, cols = 8;
	uint8_t codes[48];
	memset(codes, 0x38, sizeof codes);
	uint16_t inv_bf16[3 * 2];   /* 2 x 4 blocks: 3 block rows, 2 block columns; BF16 scales */
	for (int i = 0; i < 3; i++)
		for (int j = 0; j < 2; j++)
			inv_bf16[i * 2 + j] = st_f32_to_bf16((float)(10 * i + j + 1));
	st_tensor tc = tensor("m.weight", ST_F8_E4M3, 2, (int64_t[]){rows, cols}, codes);
	st_tensor ts = tensor("m.weight_scale_inv", ST_BF16, 2, (int64_t[]){3, 2}, inv_bf16);
	qt_matrix q;
	ms_error err = {0};
	CHECK(qt_bind_fp8(&tc, &ts, 2, 4, &q, &err) == MS_OK, "%s", err.msg);
	float out[48];
	CHECK(qt_read_f32(&q, out, &err) == MS_OK, "%s", err.msg);
	for (int r = 0; r < rows; r++)
		for (int c = 0; c < cols; c++)
			CHECK(out[r * cols + c] == (float)(10 * (r / 2) + c / 4 + 1), "[%d, %d] = %g", r, c, out[r * cols + c]);
	/* the same scales read as 4 x 2 blocks have the wrong shape */
	CHECK(qt_bind_fp8(&tc, &ts, 4, 2, &q, &err) == MS_ERR_MODEL_SHAPE, "%s", err.msg);
	EXPECT(strstr(err.msg, "synthetic.safetensors") && strstr(err.msg, "m.weight_scale_inv") &&
	       strstr(err.msg, "[2, 4]"));
	/* a NaN code in row 3 */
	codes[3 * cols + 5] = 0xFF;
	CHECK(qt_bind_fp8(&tc, &ts, 2, 4, &q, &err) == MS_OK, "%s", err.msg);
	CHECK(qt_read_f32(&q, out, &err) == MS_ERR_NONFINITE && strstr(err.msg, "row 3") &&
	      strstr(err.msg, "m.weight"), "%s", err.msg);
	codes[3 * cols + 5] = 0x38;
	/* a NaN scale */
	inv_bf16[5] = 0x7FC0;
	CHECK(qt_bind_fp8(&tc, &ts, 2, 4, &q, &err) == MS_ERR_NONFINITE && strstr(err.msg, "block [2, 1]") &&
	      strstr(err.msg, "m.weight_scale_inv"), "%s", err.msg);
	inv_bf16[5] = st_f32_to_bf16(1.0f);
	/* an infinite product: 448 * 2^127 */
	codes[0] = 0x7E;
	inv_bf16[0] = st_f32_to_bf16(0x1p127f);
	CHECK(qt_bind_fp8(&tc, &ts, 2, 4, &q, &err) == MS_OK, "%s", err.msg);
	CHECK(qt_read_rows_f32(&q, 0, 1, out, &err) == MS_ERR_NONFINITE && strstr(err.msg, "row 0"), "%s", err.msg);
	/* wrong dtypes and a missing scale */
	st_tensor tb = tensor("m.weight", ST_BF16, 2, (int64_t[]){rows, cols}, codes);
	CHECK(qt_bind_fp8(&tb, &ts, 2, 4, &q, &err) == MS_ERR_ST_DTYPE && strstr(err.msg, "BF16"), "%s", err.msg);
	CHECK(qt_bind_fp8(&tc, NULL, 2, 4, &q, &err) == MS_ERR_MODEL_TENSOR && strstr(err.msg, "missing"), "%s",
	      err.msg);
	st_tensor ti = tensor("m.weight_scale_inv", ST_I16, 2, (int64_t[]){3, 2}, inv_bf16);
	CHECK(qt_bind_fp8(&tc, &ti, 2, 4, &q, &err) == MS_ERR_ST_DTYPE, "%s", err.msg);
	char name[64];
	EXPECT(qt_fp8_scale_name("a.b.weight", name, sizeof name) == 0 && strcmp(name, "a.b.weight_scale_inv") == 0);
	EXPECT(qt_fp8_scale_name("a.b.bias", name, sizeof name) == -1);
}

static void test_mxfp4_layout(void)
{
	/* [2 experts, 3 rows, 2 groups, 16 bytes]: byte i of every group is (code 2i) | (code 2i+1) << 4 */
	uint8_t blocks[2 * 3 * 2 * 16], scales[2 * 3 * 2];
	for (int rg = 0; rg < 12; rg++) {
		for (int i = 0; i < 16; i++)
			blocks[rg * 16 + i] = (uint8_t)(((2 * i) & 15) | (((2 * i + 1) & 15) << 4));
		scales[rg] = (uint8_t)(120 + rg);
	}
	st_tensor tb = tensor("mlp.experts.down_proj_blocks", ST_U8, 4, (int64_t[]){2, 3, 2, 16}, blocks);
	st_tensor ts = tensor("mlp.experts.down_proj_scales", ST_U8, 3, (int64_t[]){2, 3, 2}, scales);
	qt_matrix q;
	ms_error err = {0};
	CHECK(qt_bind_mxfp4(&tb, &ts, &q, &err) == MS_OK, "%s", err.msg);
	EXPECT(q.rows == 6 && q.cols == 64);
	float out[6 * 64];
	/* expert 1's rows alone */
	CHECK(qt_read_rows_f32(&q, 3, 3, out, &err) == MS_OK, "%s", err.msg);
	for (int r = 0; r < 3; r++)
		for (int c = 0; c < 64; c++) {
			int rg = (3 + r) * 2 + c / 32, k = c % 32;
			double want = ref_e2m1(k & 15) * ref_e8m0(120 + rg);   /* value k of the group has code k mod 16 */
			CHECK(out[r * 64 + c] == (float)want, "row %d col %d: %g, expected %g", 3 + r, c, out[r * 64 + c],
			      want);
		}
	/* a NaN scale names the scales tensor and the row */
	scales[9] = 0xFF;
	CHECK(qt_read_f32(&q, out, &err) == MS_ERR_NONFINITE && strstr(err.msg, "down_proj_scales") &&
	      strstr(err.msg, "row 4, block 1"), "%s", err.msg);
	scales[9] = 127;
	/* scales of the wrong shape, blocks not of 16 bytes, wrong dtypes, missing scales */
	st_tensor bad = tensor("mlp.experts.down_proj_scales", ST_U8, 3, (int64_t[]){2, 2, 3}, scales);
	CHECK(qt_bind_mxfp4(&tb, &bad, &q, &err) == MS_ERR_MODEL_SHAPE && strstr(err.msg, "[2, 3, 2]"), "%s",
	      err.msg);
	st_tensor b8 = tensor("x_blocks", ST_U8, 3, (int64_t[]){3, 4, 8}, blocks);
	CHECK(qt_bind_mxfp4(&b8, &ts, &q, &err) == MS_ERR_MODEL_SHAPE, "%s", err.msg);
	st_tensor bf = tensor("x_blocks", ST_BF16, 4, (int64_t[]){2, 3, 2, 8}, blocks);
	CHECK(qt_bind_mxfp4(&bf, &ts, &q, &err) == MS_ERR_ST_DTYPE, "%s", err.msg);
	CHECK(qt_bind_mxfp4(&tb, NULL, &q, &err) == MS_ERR_MODEL_TENSOR, "%s", err.msg);
	CHECK(qt_read_rows_f32(&q, 5, 2, out, &err) == MS_ERR_ARG, "%s", err.msg);
}

static void test_mxfp4_roundtrip(void)
{
	const int64_t rows = 40, cols = 96, G = cols / 32;
	float *x = weights(rows, cols, 5);
	x[0] = 0;   /* a block with an exact zero, and one all zeros */
	for (int c = 32; c < 64; c++)
		x[cols + c] = 0;
	uint8_t *blocks = malloc((size_t)(rows * G * 16)), *scales = malloc((size_t)(rows * G));
	float *deq = malloc((size_t)(rows * cols) * sizeof *deq), *back = malloc((size_t)(rows * cols) * sizeof *back);
	qt_error e;
	EXPECT(qt_mxfp4_quantize(x, rows, cols, blocks, scales, deq, &e) == 0);
	st_tensor tb = tensor("w_blocks", ST_U8, 3, (int64_t[]){rows, G, 16}, blocks);
	st_tensor ts = tensor("w_scales", ST_U8, 2, (int64_t[]){rows, G}, scales);
	qt_matrix q;
	ms_error err = {0};
	CHECK(qt_bind_mxfp4(&tb, &ts, &q, &err) == MS_OK, "%s", err.msg);
	CHECK(qt_read_f32(&q, back, &err) == MS_OK, "%s", err.msg);
	EXPECT(memcmp(back, deq, (size_t)(rows * cols) * sizeof *back) == 0);
	int bad = 0;
	for (int64_t r = 0; r < rows; r++) {
		for (int64_t g = 0; g < G; g++) {
			double amax = 0;
			for (int k = 0; k < 32; k++)
				amax = fmax(amax, fabs(x[r * cols + g * 32 + k]));
			const double s = ref_e8m0(scales[r * G + g]);
			/* the scale is the smallest power of two at least amax / 6 */
			if (amax > 0 && !(s >= amax / 6 && s / 2 < amax / 6) && bad++ < 3)
				CHECK(0, "row %lld group %lld: scale %g for amax %g", (long long)r, (long long)g, s, amax);
			for (int k = 0; k < 32; k++) {
				const int64_t i = r * cols + g * 32 + k;
				const double y = fabs(x[i]) / s, step = y < 2 ? 0.5 : y < 4 ? 1 : 2;
				if (fabs(back[i] - (double)x[i]) > 0.5 * step * s && bad++ < 3)
					CHECK(0, "[%lld, %lld]: %g -> %g, more than half a step", (long long)r,
					      (long long)(g * 32 + k), x[i], back[i]);
			}
		}
	}
	EXPECT(bad == 0);
	EXPECT(scales[1 * G + 1] == 0 && back[cols + 40] == 0);   /* a zero block: scale code 0, zeros */
	CHECK(e.max_block_rel > 0.01 && e.max_block_rel < 0.5, "max block rel %g", e.max_block_rel);
	/* the largest float needs scale 2^126, within E8M0; only a non-finite value has no scale */
	x[5] = 3.4e38f;
	EXPECT(qt_mxfp4_quantize(x, rows, cols, blocks, scales, NULL, NULL) == 0 && scales[0] == 253);
	x[5] = INFINITY;
	EXPECT(qt_mxfp4_quantize(x, rows, cols, blocks, scales, NULL, NULL) == -1);
	free(x);
	free(blocks);
	free(scales);
	free(deq);
	free(back);
}

static ms_status config(const char *text, qt_config *q, ms_error *err)
{
	cJSON *j = cJSON_Parse(text);
	ms_status st = qt_config_read(j, "cfg.json", q, err);
	cJSON_Delete(j);
	return st;
}

static void test_config(void)
{
	qt_config q;
	ms_error err = {0};
	EXPECT(config("{\"model_type\": \"mixtral\"}", &q, &err) == MS_OK && q.scheme == QT_NONE);
	CHECK(config("{\"quantization_config\": {\"activation_scheme\": \"dynamic\", \"fmt\": \"e4m3\", \"quant_method\": "
		     "\"fp8\", \"weight_block_size\": [128, 64]}}", &q, &err) == MS_OK, "%s", err.msg);
	EXPECT(q.scheme == QT_FP8 && q.block[0] == 128 && q.block[1] == 64);
	CHECK(config("{\"quantization_config\": {\"quant_method\": \"mxfp4\", \"modules_to_not_convert\": "
		     "[\"model.layers.*.self_attn\", \"model.layers.*.mlp.router\", \"lm_head\"]}}", &q, &err) == MS_OK,
	      "%s", err.msg);
	EXPECT(q.scheme == QT_MXFP4 && q.n_not_convert == 3);
	EXPECT(qt_not_converted(&q, "model.layers.12.self_attn.q_proj.weight"));
	EXPECT(qt_not_converted(&q, "lm_head.weight"));
	EXPECT(!qt_not_converted(&q, "model.layers.12.mlp.experts.down_proj_blocks"));
	static const struct { const char *text, *needle; } bad[] = {
		{"{\"quantization_config\": {\"quant_method\": \"gptq\"}}", "'gptq' is not supported"},
		{"{\"quantization_config\": {}}", "quant_method missing"},
		{"{\"quantization_config\": 3}", "must be an object"},
		{"{\"quantization_config\": {\"quant_method\": \"fp8\", \"weight_block_size\": [128]}}", "weight_block_size"},
		{"{\"quantization_config\": {\"quant_method\": \"fp8\", \"weight_block_size\": [0, 128]}}", "weight_block_size"},
		{"{\"quantization_config\": {\"quant_method\": \"fp8\", \"weight_block_size\": [1.5, 128]}}", "weight_block_size"},
		{"{\"quantization_config\": {\"quant_method\": \"fp8\", \"fmt\": \"e5m2\"}}", "fmt"},
		{"{\"quantization_config\": {\"quant_method\": \"fp8\", \"modules_to_not_convert\": \"lm_head\"}}",
		 "modules_to_not_convert"},
		{"{\"quantization_config\": {\"quant_method\": \"fp8\", \"modules_to_not_convert\": [1]}}",
		 "modules_to_not_convert"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		CHECK(config(bad[i].text, &q, &err) == MS_ERR_CFG_FIELD && strstr(err.msg, "cfg.json") &&
		      strstr(err.msg, bad[i].needle), "%s: %s", bad[i].text, err.msg);
}

/* Stored sizes from the formats' definitions, worked by hand: FP8 a byte a value plus one scale per block, the
 * edge blocks partial; MXFP4 16 bytes of codes and one scale byte per 32 values. */
static void test_stored_bytes(void)
{
	int64_t shape[2];
	qt_fp8_scale_shape(130, 256, 128, 128, shape);
	CHECK(shape[0] == 2 && shape[1] == 2, "%lld x %lld", (long long)shape[0], (long long)shape[1]);
	qt_fp8_scale_shape(64, 96, 64, 32, shape);
	CHECK(shape[0] == 1 && shape[1] == 3);
	CHECK(qt_stored_bytes(QT_FP8, 130, 256, ST_F32, 128, 128) == 130 * 256 + 4 * 4);
	CHECK(qt_stored_bytes(QT_FP8, 130, 256, ST_BF16, 128, 128) == 130 * 256 + 4 * 2);
	CHECK(qt_stored_bytes(QT_MXFP4, 3, 64, ST_U8, 0, 0) == 3 * 2 * (16 + 1));
	CHECK(qt_stored_bytes(QT_NONE, 3, 5, ST_BF16, 0, 0) == 30);
}

/* FP8 and MXFP4 matrices in a real file: read from it by pread a chunk of rows at a time (io/quant.c), they give
 * the same floats as the quantizer's own dequantized copy over several chunks and ranges that cut them; a file cut
 * short after it was opened gives one error naming the file, the tensor and the byte (through the mapping this
 * was a SIGBUS), while rows wholly before the cut still read. */
static void test_quantized_from_file(void)
{
	enum { ROWS = 700, COLS = 1024, BR = 128, BC = 128 };   /* 700 KiB of FP8 codes: three chunks */
	const int64_t sr = (ROWS + BR - 1) / BR, sc = COLS / BC, G = COLS / QT_MX_BLOCK;
	char dir[256];
	snprintf(dir, sizeof dir, "/tmp/moescope-test-quant-file-%d", (int)getpid());
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0 || mkdir(dir, 0700) != 0)
		CHECK(0, "cannot make %s", dir);
	float *x = weights(ROWS, COLS, 99), *deq8 = malloc((size_t)ROWS * COLS * sizeof *deq8);
	float *deq4 = malloc((size_t)ROWS * COLS * sizeof *deq4), *back = malloc((size_t)ROWS * COLS * sizeof *back);
	uint8_t *codes = malloc((size_t)ROWS * COLS), *blocks = malloc((size_t)ROWS * G * 16), *scales = malloc((size_t)ROWS * G);
	float *inv = malloc((size_t)(sr * sc) * sizeof *inv);
	qt_error e;
	qt_fp8_quantize(x, ROWS, COLS, BR, BC, ST_F32, codes, inv, deq8, &e);
	EXPECT(qt_mxfp4_quantize(x, ROWS, COLS, blocks, scales, deq4, &e) == 0);
	ms_error err = {0};
	st_writer *w = NULL;
	CHECK(st_writer_create(dir, "model", 0, &w, &err) == MS_OK, "%s", err.msg);
	/* in file order: the FP8 scales before their codes, so that a cut in the codes leaves the scales whole */
	CHECK(st_writer_declare(w, "a.weight_scale_inv", ST_F32, 2, (int64_t[]){sr, sc}, &err) == MS_OK);
	CHECK(st_writer_declare(w, "a.weight", ST_F8_E4M3, 2, (int64_t[]){ROWS, COLS}, &err) == MS_OK);
	CHECK(st_writer_declare(w, "b_blocks", ST_U8, 3, (int64_t[]){ROWS, G, 16}, &err) == MS_OK);
	CHECK(st_writer_declare(w, "b_scales", ST_U8, 2, (int64_t[]){ROWS, G}, &err) == MS_OK);
	CHECK(st_writer_write(w, inv, (size_t)(sr * sc) * sizeof *inv, &err) == MS_OK);
	CHECK(st_writer_write(w, codes, (size_t)ROWS * COLS, &err) == MS_OK);
	CHECK(st_writer_write(w, blocks, (size_t)ROWS * G * 16, &err) == MS_OK);
	CHECK(st_writer_write(w, scales, (size_t)ROWS * G, &err) == MS_OK);
	CHECK(st_writer_finish(w, &err) == MS_OK, "%s", err.msg);
	st_writer_free(w);
	st_file *f = NULL;
	CHECK(st_open(dir, &f, &err) == MS_OK, "%s", err.msg);
	if (!f)
		goto out;
	const st_tensor *tc = st_find(f, "a.weight"), *ts = st_find(f, "a.weight_scale_inv");
	const st_tensor *tb = st_find(f, "b_blocks"), *tx = st_find(f, "b_scales");
	CHECK(tc && tc->fd > 0, "the codes are read from the file");
	qt_matrix q8, q4;
	CHECK(qt_bind_fp8(tc, ts, BR, BC, &q8, &err) == MS_OK, "%s", err.msg);
	CHECK(qt_bind_mxfp4(tb, tx, &q4, &err) == MS_OK, "%s", err.msg);
	const int64_t cuts[][2] = {{0, ROWS}, {0, 1}, {255, 300}, {599, 101}};
	for (int k = 0; k < 4; k++) {
		const int64_t r0 = cuts[k][0], n = cuts[k][1];
		CHECK(qt_read_rows_f32(&q8, r0, n, back, &err) == MS_OK, "%s", err.msg);
		CHECK(!memcmp(back, deq8 + r0 * COLS, (size_t)(n * COLS) * sizeof *back), "FP8 rows [%lld, +%lld)",
		      (long long)r0, (long long)n);
		CHECK(qt_read_rows_f32(&q4, r0, n, back, &err) == MS_OK, "%s", err.msg);
		CHECK(!memcmp(back, deq4 + r0 * COLS, (size_t)(n * COLS) * sizeof *back), "MXFP4 rows [%lld, +%lld)",
		      (long long)r0, (long long)n);
	}
	CHECK(qt_read_rows_f32(&q8, 5, 0, back, &err) == MS_OK && qt_read_rows_f32(&q4, ROWS, 0, back, &err) == MS_OK,
	      "no rows: %s", err.msg);
	/* cut inside the FP8 codes, two thirds of the way */
	const uint64_t cut = tc->file_offset + (uint64_t)(2 * ROWS / 3) * COLS + 100;
	char path[300], want[64];
	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	CHECK(truncate(path, (off_t)cut) == 0, "%s", strerror(errno));
	snprintf(want, sizeof want, "byte %llu:", (unsigned long long)cut);
	CHECK(qt_read_f32(&q8, back, &err) == MS_ERR_ST_TRUNCATED && strstr(err.msg, path) &&
	      strstr(err.msg, "'a.weight'") && strstr(err.msg, want) && !strchr(err.msg, '\n'), "%s", err.msg);
	CHECK(qt_read_rows_f32(&q8, 0, ROWS / 2, back, &err) == MS_OK, "rows before the cut: %s", err.msg);
	CHECK(!memcmp(back, deq8, (size_t)(ROWS / 2 * COLS) * sizeof *back), "rows before the cut differ");
	CHECK(qt_read_rows_f32(&q4, 0, 1, back, &err) == MS_ERR_ST_TRUNCATED && strstr(err.msg, "'b_blocks'"),
	      "MXFP4 wholly past the cut: %s", err.msg);
	st_close(f);
out:
	if (system(cmd) != 0)
		CHECK(0, "cannot remove %s", dir);
	free(x);
	free(deq8);
	free(deq4);
	free(back);
	free(codes);
	free(blocks);
	free(scales);
	free(inv);
}

int main(void)
{
	RUN(test_e4m3_every_code);
	RUN(test_stored_bytes);
	RUN(test_e4m3_encoder);
	RUN(test_e2m1_every_code);
	RUN(test_e8m0_every_code);
	RUN(test_fp8_roundtrip);
	RUN(test_fp8_scale_layout);
	RUN(test_mxfp4_layout);
	RUN(test_mxfp4_roundtrip);
	RUN(test_config);
	RUN(test_quantized_from_file);
	return test_summary();
}
