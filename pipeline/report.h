/* The report JSON (docs/design.md §4.2): what was analysed, with which options, and every block's results, as cJSON
 * objects the commands assemble and io/jsonfile writes. */
#ifndef REPORT_REPORT_H
#define REPORT_REPORT_H

#include <cjson/cJSON.h>

#include "analysis/block.h"
#include "analysis/meo.h"
#include "pipeline/pipeline.h"
#include "io/calib.h"
#include "io/model.h"

/* {"model": {...dir, family, sizes...}, "calibration": {...}, "options": {}, "blocks": []} */
cJSON *report_new(const mdl_model *m, const calib *cal);
cJSON *report_options(cJSON *report);     /* the "options" object */
cJSON *report_block(cJSON *report, const mdl_model *m, int b);  /* appends {"label","layer"} to "blocks" */

void report_add_stats(cJSON *block, const pipe_stats *s);
void report_add_eval(cJSON *block, const blk_eval_result *r);
void report_add_meo(cJSON *block, const meo_result *r);
/* "fit": the token split (which tokens the fits used, which the evaluation), the router rows used with every
 * candidate's routed output error on the fit tokens when auto chose, and the refit's fit error before and after. */
void report_add_fit(cJSON *block, const pipe_block *blk, const pipe_merged *mg);

/* Adds an array of n doubles (NAN as null) / an n x n matrix as nested arrays. */
void report_add_array(cJSON *obj, const char *key, const double *v, int n, int stride);
void report_add_matrix(cJSON *obj, const char *key, const double *v, int n);

/* The model description of `moescope info --json`, also the report's "model" object. */
cJSON *report_model(const mdl_model *m);

#endif
