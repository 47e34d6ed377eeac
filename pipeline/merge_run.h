/* Committing a plan: writes the merged checkpoint (docs/design.md §4.3). `moescope merge` and the interactive
 * application's commit dialog both call mrun_run, so what the dialog writes is what the command writes. */
#ifndef MRUN_MERGE_RUN_H
#define MRUN_MERGE_RUN_H

#include <stdatomic.h>
#include <stdint.h>

#include "pipeline/pipeline.h"
#include "io/calib.h"
#include "io/model.h"
#include "io/names.h"
#include "io/plan.h"

/* How a compressed matrix is stored (--compress-format): X(value, name, help) rows (io/names.h). */
#define MRUN_FORMAT_TABLE(X) \
	X(MRUN_FORMAT_DENSE,   "dense",   "the reconstruction as an ordinary weight (the default; loads anywhere)") \
	X(MRUN_FORMAT_FACTORS, "factors", "the factors _u, _v and the sparse residual (smaller; needs a loader)")

typedef enum {
	MRUN_FORMAT_TABLE(NAMES_X_ENUM)
	MRUN_FORMAT_COUNT
} mrun_format;
extern const char *const mrun_format_names[MRUN_FORMAT_COUNT];
extern const char *const mrun_format_help[MRUN_FORMAT_COUNT];

typedef struct {
	const char *out_dir;
	const plan *plan;
	pipe_merge_options opts;       /* opts.slots is set by mrun_run for the compact layout */
	mrun_format format;           /* --compress-format */
	uint64_t max_shard_bytes;      /* --max-shard-size (default 5 GB) */
	int force;                     /* replace an existing out_dir */
	int64_t eval_tokens;           /* tokens per block for the report's evaluation (default 2048) */
} mrun_request;

/* What was written, for the caller to show. */
typedef struct {
	int blocks;
	int experts_before, experts_after;   /* per block, E and E' (E for aliased) */
	uint64_t bytes_before, bytes_after;  /* all tensors */
	double mean_rel_error;               /* mean over blocks of the output error on the calibration tokens */
} mrun_summary;

/* Progress: stage ("merge", "write", "validate"), done of total. May be NULL. */
typedef void (*mrun_progress_fn)(void *ctx, const char *stage, int done, int total);

/* The cancel flag is set by another thread (the application's UI) or by a signal handler (`moescope merge`, where
 * the signal may land on any thread): a C11 atomic is the one type both may store to and the merge may read
 * without a data race, and in a signal handler only when it is lock-free. */
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "a signal handler may store to atomic_int only when it is lock-free");

/* Writes the merged checkpoint of m under req->plan into req->out_dir via a temporary sibling directory that is
 * validated and renamed into place. cal may be NULL unless the router is lse-fit (it is also used for the
 * report's evaluation). When *cancel (may be NULL) becomes nonzero the work stops, the temporary directory is
 * removed and MS_ERR_INTERRUPTED returned. On any failure nothing is left behind and the input is untouched, with
 * one exception (io/outdir.h): when syncing the parent directory fails after the rename, the complete output
 * stays in place and the error names the directory. */
ms_status mrun_run(const mdl_model *m, const calib *cal, const mrun_request *req, mrun_progress_fn progress,
		    void *ctx, const atomic_int *cancel, mrun_summary *summary, ms_error *err);

/* The defaults of `moescope merge`. */
mrun_request mrun_request_defaults(void);

#endif
