/* The factored checkpoint format (`moescope merge --compress-format factors`, docs/design.md §4.3): what sets its
 * config.json apart from a stock one, and the names of its tensors.
 *
 * A compressed matrix NAME is stored as NAME_u [m, r] (U_r S_r) and NAME_v [r, n] (V_r^T), plus NAME_sparse_idx
 * (I32 flat row-major indices) and NAME_sparse_val [nnz] for a residual: W = NAME_u @ NAME_v, then W[idx] += val.
 * A stock loader would find none of the NAME tensors and fill them at random, silently. So the config's
 * model_type becomes MDL_FACTORS_MODEL_TYPE, which transformers' AutoConfig and AutoModel* refuse with "model type
 * ... not recognized", and auto_map (which would let trust_remote_code bypass that) moves into the
 * moescope_compression entry with the family's model_type; `moescope densify` puts both back. */
#ifndef FAC_FACTORS_H
#define FAC_FACTORS_H

#include "io/error.h"
#include "io/jsonedit.h"

#define FAC_ENTRY "moescope_compression"
/* config.json is a few KiB; a larger file than this is not read (io/model.c has the same limit). */
#define FAC_CONFIG_LIMIT (16u << 20)

/* The suffixes of a factored matrix's tensors, in the order they are written. */
enum { FAC_U, FAC_V, FAC_SPARSE_IDX, FAC_SPARSE_VAL, FAC_NPARTS };
extern const char *const fac_suffix[FAC_NPARTS];

/* Marks d (a stock config.json) as factored: model_type replaced, auto_map moved, the FAC_ENTRY member added with
 * the family's model_type and the compression settings given (rank_mode: cmp_rank_mode_name; layout text).
 * MS_ERR_CFG_FIELD when a key the marks need (moescope_auto_map, the FAC_ENTRY member) is taken already. */
ms_status fac_mark_config(jedit *d, const char *rank_mode, double sparse_ratio, ms_error *err);

/* The inverse: model_type and auto_map as they were, FAC_ENTRY removed. MS_ERR_CFG_FIELD when d is not a
 * factored config (messages name d's file). */
ms_status fac_unmark_config(jedit *d, ms_error *err);

/* What `moescope info` says about a factored checkpoint. */
typedef struct {
	char model_type[64];   /* the family's */
	char rank_mode[32];
	double sparse_ratio;
} fac_info;

/* Reads DIR/config.json: 1 with *info filled when it is a factored checkpoint, 0 when it is not (or cannot be
 * read: mdl_open reports that), -1 with err set when it claims to be one but its FAC_ENTRY is damaged. */
int fac_probe(const char *dir, fac_info *info, ms_error *err);

#endif
