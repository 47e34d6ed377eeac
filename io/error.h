/* Status codes and error messages shared by every module below tui/.
 *
 * Deep code never prints or exits: it returns an ms_status and, where the caller passed an ms_error, a one-line
 * message naming the file and the place ("model.safetensors: tensor 'x': byte 1234: ..."). Only tui/ decides to
 * print it and with which exit status. The codes live in one X-macro table so that names, messages and tests
 * stay in step. */
#ifndef MS_ERROR_H
#define MS_ERROR_H

#include <stddef.h>

#define MS_STATUS_TABLE(X) \
	X(MS_OK,                    "ok") \
	X(MS_ERR_ARG,               "invalid argument") \
	X(MS_ERR_NOMEM,             "out of memory") \
	X(MS_ERR_IO,                "input/output error") \
	X(MS_ERR_EXISTS,            "output already exists") \
	X(MS_ERR_INTERRUPTED,       "interrupted") \
	X(MS_ERR_NUMERIC,           "numerical routine failed") \
	X(MS_ERR_NONFINITE,         "NaN or infinity in the data") \
	/* safetensors container (docs/design.md §2.1) */ \
	X(MS_ERR_ST_TRUNCATED,      "file shorter than its 8-byte header length") \
	X(MS_ERR_ST_HEADER_LIMIT,   "header length over 100,000,000 bytes") \
	X(MS_ERR_ST_HEADER_PAST_END,"header runs past the end of the file") \
	X(MS_ERR_ST_HEADER_JSON,    "header is not a JSON object") \
	X(MS_ERR_ST_ENTRY,          "malformed tensor entry") \
	X(MS_ERR_ST_DTYPE,          "unknown or unsupported dtype") \
	X(MS_ERR_ST_SHAPE_OVERFLOW, "shape product overflows") \
	X(MS_ERR_ST_SIZE_MISMATCH,  "byte count does not match shape and dtype") \
	X(MS_ERR_ST_OVERLAP,        "tensor data overlaps another tensor") \
	X(MS_ERR_ST_GAP,            "gap between tensor data") \
	X(MS_ERR_ST_UNCOVERED,      "data buffer not fully covered by tensors") \
	X(MS_ERR_ST_DUPLICATE,      "duplicate tensor name") \
	X(MS_ERR_ST_INDEX,          "malformed shard index") \
	X(MS_ERR_ST_NOT_FOUND,      "tensor not found") \
	/* config.json and model description */ \
	X(MS_ERR_CFG_JSON,          "config.json is not valid JSON") \
	X(MS_ERR_CFG_FIELD,         "config.json field missing or invalid") \
	X(MS_ERR_CFG_FAMILY,        "unsupported model_type") \
	X(MS_ERR_MODEL_TENSOR,      "expected tensor missing") \
	X(MS_ERR_MODEL_SHAPE,       "tensor shape disagrees with config.json") \
	/* calibration set */ \
	X(MS_ERR_CALIB_MISSING,     "calibration input missing for a block") \
	X(MS_ERR_CALIB_WIDTH,       "calibration width differs from the model's hidden size") \
	X(MS_ERR_CALIB_EMPTY,       "calibration input has no tokens") \
	/* grouping plan CSV */ \
	X(MS_ERR_PLAN_SYNTAX,       "plan is not valid CSV") \
	X(MS_ERR_PLAN_HEADER,       "plan header row is wrong") \
	X(MS_ERR_PLAN_NUMBER,       "plan field is not a number") \
	X(MS_ERR_PLAN_LAYER,        "plan names a layer the model does not have") \
	X(MS_ERR_PLAN_EXPERT,       "plan expert out of range") \
	X(MS_ERR_PLAN_DUPLICATE,    "plan lists an expert twice") \
	X(MS_ERR_PLAN_MISSING,      "plan misses an expert") \
	X(MS_ERR_PLAN_GROUP,        "plan group numbering is wrong") \
	X(MS_ERR_PLAN_DOMINANT,     "plan group without exactly one dominant expert") \
	/* tokenizer.json and the text it encodes (text/) */ \
	X(MS_ERR_TOK_JSON,          "tokenizer.json is not valid JSON") \
	X(MS_ERR_TOK_FIELD,         "tokenizer.json field missing or invalid") \
	X(MS_ERR_TOK_UNSUPPORTED,   "tokenizer component not supported") \
	X(MS_ERR_TOK_REGEX,         "tokenizer regex rejected or failed") \
	X(MS_ERR_TOK_ID,            "token id out of range")

typedef enum {
#define MS_X_ENUM(name, text) name,
	MS_STATUS_TABLE(MS_X_ENUM)
#undef MS_X_ENUM
	MS_STATUS_COUNT
} ms_status;

/* A status with its message. msg holds the whole line the user sees, without a trailing newline. */
typedef struct {
	ms_status code;
	char msg[1024];
} ms_error;

/* The enum name ("MS_ERR_ST_GAP") and the default text of a status. */
const char *ms_status_name(ms_status code);
const char *ms_status_text(ms_status code);

/* Records code and a printf-style message in err (which may be NULL) and returns code, so that callers write
 * `return ms_fail(err, MS_ERR_ST_GAP, "%s: tensor '%s': byte %llu: ...", ...)`. A NULL or empty fmt uses the
 * table's text. */
ms_status ms_fail(ms_error *err, ms_status code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Prepends "prefix: " to an error already recorded (e.g. the file name known only to the caller). */
void ms_error_prefix(ms_error *err, const char *prefix);

void ms_error_clear(ms_error *err);

#endif
