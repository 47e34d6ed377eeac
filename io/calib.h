/* Calibration set (docs/design.md §2.3): a safetensors file holding, for every MoE block, the hidden states
 * entering it, tensor "<block prefix>.input" [T, d] in F32, BF16 or F16; optional token_ids [T] (I32/I64) and
 * segment_ids [T] (I32). T may differ between blocks. Opening checks that every block of the model has its input,
 * with width d and T > 0. */
#ifndef CALIB_CALIB_H
#define CALIB_CALIB_H

#include <stdint.h>

#include "io/error.h"
#include "io/model.h"

typedef struct calib calib;

ms_status calib_open(const char *path, const mdl_model *m, calib **out, ms_error *err);
void calib_close(calib *c);

const char *calib_path(const calib *c);
int64_t calib_tokens(const calib *c, int block);        /* T of block b */
int calib_has_segments(const calib *c);
/* All T rows of block b's input as float32 into x [T, d]. NaN or Inf: MS_ERR_NONFINITE naming tensor and row. */
ms_status calib_load(const calib *c, int block, float *x, ms_error *err);
/* segment_ids into seg [T] (T of the first block); MS_ERR_ARG when the file has none. */
ms_status calib_load_segments(const calib *c, int32_t *seg, int64_t n, ms_error *err);
/* token_ids (I32 or I64 [T]) into *ids [*n], malloc'd; MS_ERR_ARG naming the file when absent or negative. */
ms_status calib_load_token_ids(const calib *c, int32_t **ids, int64_t *n, ms_error *err);

#endif
