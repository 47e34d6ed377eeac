/* `moescope densify`: a factored checkpoint (io/factors.h) back to a stock dense one. Every NAME_u / NAME_v pair
 * (with its sparse residual) becomes NAME = NAME_u @ NAME_v + residual in NAME_u's dtype; every other tensor is
 * copied byte for byte; config.json gets its model_type and auto_map back and loses the moescope_compression
 * entry, every other byte kept (io/jsonedit.h). Written like a merge (io/outdir.h): into a temporary sibling,
 * re-opened as a model, renamed into place; on failure nothing is left. One matrix resident at a time. */
#ifndef DENS_DENSIFY_H
#define DENS_DENSIFY_H

#include <stdatomic.h>
#include <stdint.h>

#include "io/error.h"

typedef struct {
	const char *in_dir, *out_dir;
	int force;                    /* replace an existing out_dir */
	uint64_t max_shard_bytes;     /* as merge's --max-shard-size */
	const atomic_int *cancel;     /* NULL, or set (by a signal handler) to stop: the temporary directory goes */
} dens_request;

typedef struct {
	int matrices;                 /* rebuilt from factors */
	uint64_t bytes_before, bytes_after;
	char model_type[64];
} dens_summary;

ms_status dens_run(const dens_request *req, dens_summary *sum, ms_error *err);

#endif
