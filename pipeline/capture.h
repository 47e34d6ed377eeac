/* `moescope capture`: a calibration file (io/calib.h) recorded by the forward pass. */
#ifndef CAP_CAPTURE_H
#define CAP_CAPTURE_H

#include "io/arch.h"
#include "io/error.h"
#include "io/tokens.h"
#include "pipeline/forward.h"

/* Runs the tokens through the model and writes out_path: "<block prefix>.input" [T, d] F32 for every MoE block
 * (the router's input), token_ids [T] I32, segment_ids [T] I32 (the sequence of each token, after splitting) and
 * __metadata__ format moescope-calib. The file is written beside out_path in a temporary directory and renamed
 * into place when complete: on failure nothing is left. */
ms_status cap_write(const arch_model *a, const tok_set *tok, const char *out_path, fwd_progress_fn progress,
		    void *progress_ctx, ms_error *err);

#endif
