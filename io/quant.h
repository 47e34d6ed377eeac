/* Quantized weight storage: FP8 E4M3 with a scale per 2-D block (DeepSeek-V3, transformers' fine-grained FP8,
 * quant_method "fp8") and MXFP4 (gpt-oss, quant_method "mxfp4"). docs/design.md §2.4.
 *
 * A quantized matrix is two tensors read together: the codes and their scales. Reading converts a range of rows
 * to float32, as st_read_rows_f32 does for float tensors, so nothing above io/ knows how a weight is stored.
 *
 * FP8: codes F8_E4M3 [rows, cols]; NAME.weight_scale_inv (F32, BF16 or F16) [ceil(rows/br), ceil(cols/bc)] with
 *   (br, bc) = quantization_config.weight_block_size; value = e4m3(code) * scale_inv[r / br][c / bc].
 * MXFP4: NAME_blocks U8 [..., G, 16], two E2M1 codes a byte, the low nibble first; NAME_scales U8 [..., G], one
 *   E8M0 exponent per 32 values; value = e2m1(code) * 2^(scale - 127). The leading dimensions are rows, so the
 *   fused gpt-oss tensor [E, R, G, 16] is E*R rows of 32 G values, expert e's matrix rows [e R, (e + 1) R). */
#ifndef QT_QUANT_H
#define QT_QUANT_H

#include <stdint.h>

#include "io/error.h"
#include "io/names.h"
#include "io/safetensors.h"

#define QT_SCHEME_TABLE(X) \
	X(QT_NONE, "none", "float weights (F32, F16, BF16)") \
	X(QT_FP8, "fp8", "F8_E4M3 codes times a float weight_scale_inv per 2-D block") \
	X(QT_MXFP4, "mxfp4", "E2M1 codes in NAME_blocks times an E8M0 NAME_scales per 32 values")
typedef enum { QT_SCHEME_TABLE(NAMES_X_ENUM) QT_SCHEME_COUNT } qt_scheme;
extern const char *const qt_scheme_names[QT_SCHEME_COUNT];

#define QT_MX_BLOCK 32          /* values per E8M0 scale (OCP Microscaling v1.0) */
#define QT_FP8_MAX 448.0f       /* the largest finite E4M3 value */
#define QT_FP4_MAX 6.0f         /* the largest E2M1 value */
#define QT_MAX_NOT_CONVERT 64

/* ---- scalar codecs (OCP 8-bit Floating Point Specification (OFP8) rev 1.0, Microscaling Formats v1.0) ---- */

/* E4M3: sign, 4 exponent bits (bias 7), 3 mantissa bits; no infinities; S.1111.111 is NaN; largest 448;
 * exponent 0 holds the subnormals m/8 * 2^-6. */
float qt_e4m3_to_f32(uint8_t code);
/* Nearest E4M3 value, ties to even, saturating at +-448 (finite inputs never become NaN); NaN gives 0x7F. */
uint8_t qt_f32_to_e4m3(float x);
/* E2M1 (low 4 bits): 0, 0.5, 1, 1.5, 2, 3, 4, 6 and their negatives; no NaN or infinity. */
float qt_e2m1_to_f32(uint8_t code);
/* Nearest E2M1 value, ties to even, saturating at +-6; the sign of x is kept (-0 is 0x8). x must not be NaN. */
uint8_t qt_f32_to_e2m1(float x);
/* E8M0: 2^(code - 127); 0xFF is NaN. */
float qt_e8m0_to_f32(uint8_t code);

/* ---- quantization_config ---- */

typedef struct {
	qt_scheme scheme;
	int block[2];                /* fp8 weight_block_size [rows, cols] (default 128 x 128) */
	int n_not_convert;
	char not_convert[QT_MAX_NOT_CONVERT][128]; /* modules_to_not_convert */
} qt_config;

/* config.json's quantization_config (cfg is the config's cJSON root; `where` names the file for messages). No
 * such field: scheme QT_NONE. An unknown quant_method, a weight_block_size that is not two positive integers or
 * an fmt other than e4m3 is an error naming the field. */
ms_status qt_config_read(const void *cfg, const char *where, qt_config *out, ms_error *err);
/* 1 when the tensor `name` is kept in float by modules_to_not_convert: as transformers does, each run of digits
 * in the name becomes '*' and a pattern that occurs in the result matches. */
int qt_not_converted(const qt_config *q, const char *name);

/* ---- matrices ---- */

typedef struct {
	qt_scheme scheme;
	const st_tensor *codes;      /* float [rows, cols], F8_E4M3 [rows, cols], or U8 blocks [..., G, 16] */
	const st_tensor *scales;     /* NULL, weight_scale_inv [ceil(rows/br), ceil(cols/bc)], or U8 [..., G] */
	int64_t rows, cols;          /* the float matrix */
	int br, bc;                  /* fp8 block */
} qt_matrix;

/* A float tensor viewed as [shape[0], numel / shape[0]]. */
ms_status qt_bind_plain(const st_tensor *t, qt_matrix *out, ms_error *err);
/* codes F8_E4M3 [rows, cols] and its scale_inv. Checks the dtypes, that the scale shape is [ceil(rows/br),
 * ceil(cols/bc)] and that every scale is finite; messages name the file and the tensor. */
ms_status qt_bind_fp8(const st_tensor *codes, const st_tensor *scale_inv, int br, int bc, qt_matrix *out,
		      ms_error *err);
/* blocks U8 [..., G, 16] and scales U8 [..., G] with the same leading dimensions. NaN scales (0xFF) are found
 * when the rows holding them are read. */
ms_status qt_bind_mxfp4(const st_tensor *blocks, const st_tensor *scales, qt_matrix *out, ms_error *err);

/* Rows [row0, row0 + nrows) as float32 into out [nrows, cols]. A NaN code, a NaN scale or an infinity is an
 * error naming the file, the tensor and the row. */
ms_status qt_read_rows_f32(const qt_matrix *q, int64_t row0, int64_t nrows, float *out, ms_error *err);
ms_status qt_read_f32(const qt_matrix *q, float *out, ms_error *err);
/* The tensor of the scales of an FP8 weight "X.weight": "X.weight_scale_inv". 0, or -1 when buf is too small
 * or the name does not end in ".weight". */
int qt_fp8_scale_name(const char *weight, char *buf, size_t len);
/* Bytes the stored matrix takes, codes and scales. */
uint64_t qt_matrix_bytes(const qt_matrix *q);
/* The shape of the weight_scale_inv of an FP8 [rows, cols] matrix in br x bc blocks: [ceil(rows/br),
 * ceil(cols/bc)] (a partial block at an edge has a scale of its own). */
void qt_fp8_scale_shape(int64_t rows, int64_t cols, int br, int bc, int64_t shape[2]);
/* Bytes a [rows, cols] matrix takes stored under scheme, codes and scales, as the writers write it: QT_NONE rows *
 * cols values of dtype; QT_FP8 a byte a value and a scale of dtype (the scales' dtype) per br x bc block; QT_MXFP4
 * (cols a multiple of 32) half a byte a value and an E8M0 byte per 32 values. */
uint64_t qt_stored_bytes(qt_scheme scheme, int64_t rows, int64_t cols, st_dtype dtype, int br, int bc);

/* ---- quantizing (the writers) ---- */

/* How far a quantized matrix is from the floats it came from: the relative Frobenius error of the whole matrix
 * and the largest relative error of one scale block (a block of zeros has error 0). */
typedef struct {
	double err2, norm2;          /* sum (x - q)^2 and sum x^2 */
	double max_block_rel;
} qt_error;

/* x [rows, cols] to E4M3 codes [rows, cols] and scale_inv [ceil(rows/br), ceil(cols/bc)] as transformers'
 * Fp8Quantize does: per block scale = 448 / amax (1 for a block of zeros), code = e4m3(clamp(x * scale)),
 * scale_inv = 1 / scale. With scale_dtype BF16 or F16 (the Qwen FP8 checkpoints store BF16 scales), scale_inv is
 * rounded to that dtype first and scale = 1 / scale_inv, so the codes fit the scale as stored. deq [rows, cols]
 * (may be x itself, or NULL) gets the values the codes stand for. x must be finite. */
void qt_fp8_quantize(const float *x, int64_t rows, int64_t cols, int br, int bc, st_dtype scale_dtype,
		     uint8_t *codes, float *scale_inv, float *deq, qt_error *e);
/* x [rows, cols] (cols a multiple of 32) to MXFP4 blocks [rows, cols / 32, 16] and scales [rows, cols / 32]: the
 * scale is amax / 6 rounded up to a power of two (as triton_kernels' downcast_to_mxfp_torch, which gpt-oss's
 * weights came from), each value divided by it and rounded to the nearest E2M1, ties to even. deq as above.
 * Returns -1 when a block holds an infinity or NaN (no E8M0 scale fits), 0 otherwise. */
int qt_mxfp4_quantize(const float *x, int64_t rows, int64_t cols, uint8_t *blocks, uint8_t *scales, float *deq,
		      qt_error *e);
/* relative error sqrt(err2 / norm2), 0 when norm2 is 0 */
double qt_error_rel(const qt_error *e);
void qt_error_add(qt_error *into, const qt_error *e);

#endif
