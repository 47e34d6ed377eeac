/* safetensors: memory-mapped reading of one file or a sharded set, and a streaming writer.
 *
 * Format (huggingface/safetensors): 8-byte little-endian header length N, N bytes of JSON
 * {"__metadata__": {str: str}, "name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...},
 * then the data buffer. The reader enforces the reference rules (docs/design.md §2.1): N <= 100,000,000; the header
 * is a JSON object; offsets, sorted by begin, start at 0 and are contiguous; end - begin == prod(shape) * dtype size;
 * the buffer is covered exactly; no duplicate names. Every violation has its own status code and a message naming the
 * file, the tensor and the byte offset. Files are mapped read-only and never read whole. */
#ifndef ST_SAFETENSORS_H
#define ST_SAFETENSORS_H

#include <stdint.h>
#include <stddef.h>

#include "io/error.h"

#define ST_HEADER_LIMIT 100000000ULL
#define ST_MAX_DIMS 8

/* One row per dtype in safetensors.c's table. Only F32, F16 and BF16 convert to float32; the others are copied
 * as bytes (non-expert tensors of real checkpoints use them). */
typedef enum {
	ST_F32, ST_F16, ST_BF16, ST_F64,
	ST_I8, ST_I16, ST_I32, ST_I64,
	ST_U8, ST_U16, ST_U32, ST_U64,
	ST_BOOL, ST_F8_E4M3, ST_F8_E5M2,
	ST_DTYPE_COUNT
} st_dtype;

const char *st_dtype_name(st_dtype t);           /* "BF16" */
size_t st_dtype_size(st_dtype t);                /* bytes per element */
int st_dtype_is_float(st_dtype t);               /* F32, F16 or BF16: convertible to float32 */
int st_dtype_parse(const char *name, st_dtype *out); /* 1 when known */
/* A shape as text for messages, "[8, 128, 256]", cut to fit buf [len]. */
void st_shape_text(char *buf, size_t len, const int64_t *shape, int ndim);

/* A tensor of an open file or shard set. Pointers stay valid until st_close. */
typedef struct {
	const char *name;
	st_dtype dtype;
	int ndim;
	int64_t shape[ST_MAX_DIMS];
	uint64_t numel;
	uint64_t nbytes;
	const void *data;       /* inside the read-only mapping */
	const char *path;       /* the file (shard) holding it */
	uint64_t file_offset;   /* byte offset of data within that file */
	int fd;                 /* > 0: that file open for reading, which large reads use (pread) in place of the
				 * mapping; 0 for a tensor made by hand, read from data alone */
} st_tensor;

typedef struct st_file st_file;

/* path: a .safetensors file, a *.safetensors.index.json, or a directory holding model.safetensors or
 * model.safetensors.index.json. A shard set checks that the index's weight_map names exactly the tensors of its
 * shards, each in the shard the index says. */
ms_status st_open(const char *path, st_file **out, ms_error *err);
void st_close(st_file *f);

size_t st_count(const st_file *f);
const st_tensor *st_get(const st_file *f, size_t i);          /* in name order */
const st_tensor *st_find(const st_file *f, const char *name); /* NULL when absent */
const char *st_metadata(const st_file *f, const char *key);   /* __metadata__ value of the first file, or NULL */
const char *st_path(const st_file *f);                        /* the path given to st_open */
size_t st_shard_count(const st_file *f);
const char *st_shard_path(const st_file *f, size_t i);

/* Rows [row0, row0 + nrows) of a tensor viewed as [shape[0], numel / shape[0]] (a 1-D tensor is one row per
 * element), converted to float32 into out (nrows * row_length floats). Fails with MS_ERR_NONFINITE naming the
 * tensor and row when a value is NaN or infinite, with MS_ERR_ST_DTYPE for a non-float dtype. */
ms_status st_read_rows_f32(const st_tensor *t, int64_t row0, int64_t nrows, float *out, ms_error *err);
/* The whole tensor converted to float32 (numel floats). */
ms_status st_read_f32(const st_tensor *t, float *out, ms_error *err);

/* n raw bytes of t's data from byte `offset` of the tensor into buf: by pread from its file (fd > 0; a file cut
 * short since it was opened is MS_ERR_ST_TRUNCATED naming the file, the tensor and the byte, not a SIGBUS), else
 * from the mapping. For readers that decode bytes themselves (io/quant.c's FP8 and MXFP4); MS_ERR_ARG when the
 * range leaves the tensor. */
ms_status st_read_bytes(const st_tensor *t, uint64_t offset, size_t n, void *buf, ms_error *err);

/* Scalar conversions. Rounding to F16/BF16 is round-to-nearest-even; NaN stays NaN. */
/* Index of the first NaN or infinity among n elements of a float dtype's raw bytes (F32, F16, BF16, F8_E4M3; -1 for any
 * other dtype, or when all are finite), by the exponent bits alone, so that a tensor copied byte for byte is
 * checked without converting it. */
int64_t st_first_nonfinite_raw(st_dtype dtype, const void *bytes, uint64_t n);

float st_bf16_to_f32(uint16_t h);
uint16_t st_f32_to_bf16(float x);
float st_f16_to_f32(uint16_t h);
uint16_t st_f32_to_f16(float x);

/* Row conversions, bit-identical to the scalar ones applied value by value and written to vectorise. src holds n
 * values of dtype dt (F32, F16 or BF16) as stored in a file (little-endian, any alignment); dst [n] gets them as
 * float32. Returns 1 when any value is NaN or infinite (dst is still filled), 0 when all are finite, -1 for
 * another dtype. */
int st_row_to_f32(st_dtype dt, const void *src, float *dst, size_t n);
/* src [n] float32 to n values of dtype dt in file order (n * st_dtype_size(dt) bytes, any alignment), rounding
 * to nearest even, NaN kept NaN. 0, or -1 for a dtype other than F32, F16 or BF16. */
int st_row_from_f32(st_dtype dt, const float *src, void *dst, size_t n);

/* Streaming writer. Declare every tensor first (this fixes the order, the shards and every header), then hand
 * over the data tensor by tensor in declaration order, in chunks of any size. One shard is written as
 * DIR/model.safetensors; more as DIR/model-00001-of-0000N.safetensors plus DIR/model.safetensors.index.json with
 * metadata.total_size and weight_map. Each header carries {"format":"pt"} (plus st_writer_metadata entries) and
 * is padded with spaces to a multiple of 8 bytes. A tensor goes to the current shard unless that would push the
 * shard past max_shard_bytes and the shard already holds a tensor. Every fwrite and fclose is checked, and each
 * file is fsynced as it is closed (io/durable.h); syncing DIR itself is the caller's (outdir_commit).
 * file_base "model" gives the names above; another base (e.g. "calib") gives base.safetensors etc. */
typedef struct st_writer st_writer;

ms_status st_writer_create(const char *dir, const char *file_base, uint64_t max_shard_bytes, st_writer **out,
			   ms_error *err);
ms_status st_writer_metadata(st_writer *w, const char *key, const char *value, ms_error *err);
ms_status st_writer_declare(st_writer *w, const char *name, st_dtype dtype, int ndim, const int64_t *shape,
			    ms_error *err);
/* Raw bytes of the next tensor(s), already in their dtype. */
ms_status st_writer_write(st_writer *w, const void *bytes, uint64_t n, ms_error *err);
/* float32 values of the current tensor, converted to its dtype (F32, F16 or BF16). */
ms_status st_writer_write_f32(st_writer *w, const float *x, uint64_t count, ms_error *err);
/* Checks every declared byte was written, syncs and closes every file (checking both) and writes the index. */
ms_status st_writer_finish(st_writer *w, ms_error *err);
/* Frees the writer; if st_writer_finish did not succeed, the files it created stay for the caller to remove. */
void st_writer_free(st_writer *w);
size_t st_writer_file_count(const st_writer *w);          /* shard files (plus the index when sharded) */
const char *st_writer_file_path(const st_writer *w, size_t i);

#endif
