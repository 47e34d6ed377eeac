/* Grouping the experts of one MoE block (docs/design.md §3.5): which experts merge together and which member of each
 * group is its dominant; or, for the pruning baselines, which experts survive. Also MC-SMoE's global allocation of
 * group counts across blocks.
 *
 * Every method fills group [E] (labels 0..G-1, or -1 for an expert dropped by pruning) and dominant [E] (1 for
 * the one dominant member of each group, 0 otherwise), the layout of io/plan.h's per-block arrays, so that
 * plan.group + b * E and plan.dominant + b * E can be passed directly. "Usage order" means descending frequency,
 * ties to the lower expert index. G must be 1..E (MS_ERR_ARG otherwise); NaN or infinite inputs give
 * MS_ERR_NONFINITE. */
#ifndef GRP_GROUPING_H
#define GRP_GROUPING_H

#include <stdint.h>

#include "analysis/expert.h"
#include "io/error.h"
#include "io/names.h"

/* The grouping methods: X(value, name, help) rows (io/names.h). */
#define GRP_METHOD_TABLE(X) \
	X(GRP_MSMOE,           "msmoe",           "M-SMoE: the most-used lead, the others join the most similar (default)") \
	X(GRP_HC,              "hc",              "HC-SMoE: agglomerative clustering on a distance") \
	X(GRP_PRUNE_FREQUENCY, "prune-frequency", "keep the G most-used experts, drop the rest") \
	X(GRP_PRUNE_REAP,      "prune-reap",      "keep the G experts of highest REAP saliency, drop the rest")

typedef enum {
	GRP_METHOD_TABLE(NAMES_X_ENUM)
	GRP_METHOD_COUNT
} grp_method;

/* The table's names and help lines, indexed by grp_method. */
extern const char *const grp_method_names[GRP_METHOD_COUNT];
extern const char *const grp_method_help[GRP_METHOD_COUNT];
const char *grp_method_name(grp_method m);  /* "?" when out of range */
int grp_method_parse(const char *name);     /* the grp_method called name, or -1 */

/* The linkages of HC-SMoE's clustering: X(value, name, help) rows (io/names.h). */
#define GRP_LINKAGE_TABLE(X) \
	X(GRP_LINK_AVERAGE,  "average",  "mean distance over all member pairs (the default)") \
	X(GRP_LINK_SINGLE,   "single",   "distance of the closest pair") \
	X(GRP_LINK_COMPLETE, "complete", "distance of the farthest pair")

typedef enum {
	GRP_LINKAGE_TABLE(NAMES_X_ENUM)
	GRP_LINK_COUNT
} grp_linkage;

/* The table's names and help lines, indexed by grp_linkage. */
extern const char *const grp_linkage_names[GRP_LINK_COUNT];
extern const char *const grp_linkage_help[GRP_LINK_COUNT];
const char *grp_linkage_name(grp_linkage l);
int grp_linkage_parse(const char *name);

/* M-SMoE: the G most-used experts are dominant, labelled 0..G-1 in usage order; every other expert joins the
 * dominant it is most similar to, the first (lowest label) on ties. frequency [E], similarity [E, E]. */
ms_status grp_msmoe(int E, int G, const double *frequency, const double *similarity, int *group,
		    unsigned char *dominant);

/* HC-SMoE: agglomerative clustering of E experts into G clusters on distance [E, E] (symmetrised as the mean of
 * d[i, j] and d[j, i]) with the given linkage. A cluster is named by its lowest member; of equal merge distances
 * the pair with the lowest first name, then the lowest second, merges. Each cluster's most-used member (by
 * frequency [E]) is its dominant; groups are labelled 0..G-1 in their dominants' usage order. */
ms_status grp_hc(int E, int G, const double *distance, grp_linkage linkage, const double *frequency, int *group,
		 unsigned char *dominant);

/* Pruning: the G experts of highest score [E] (ties to the lower index) each form their own group, labelled in
 * score order, and are dominant; the others get group -1 and dominant 0. prune-frequency passes the frequency,
 * prune-reap the saliency below. */
ms_status grp_prune(int E, int G, const double *score, int *group, unsigned char *dominant);

/* Tokens per expert_forward call in grp_reap_saliency: bounds its work memory. */
#define GRP_REAP_CHUNK 512

/* REAP saliency (router-weighted expert activation pruning, Lasby et al. 2025): saliency [E], for each expert e the mean over the tokens routed
 * to it of g_e(x) |E_e(x)|_2, where the routing of x [T, d] is idx [T, k] with routing weights weight [T, k] (as
 * from route_topk), and E_e the output of experts[e] (all with the same d). 0 for an expert no token reaches.
 * MS_ERR_ARG for an index outside 0..E-1 or experts of differing width. */
ms_status grp_reap_saliency(const expert_weights *experts, int E, const float *x, int64_t T, const int *idx,
			    const float *weight, int k, double *saliency);

/* MC-SMoE global allocation: given frequency [n_blocks, E] and merged [n_blocks] (1 when the block is merged), an
 * average of G groups over the merged blocks becomes counts [n_blocks]: in each block not merged every frequency
 * counts as 1; in every block the most-used expert's counts as 1; of all these values sorted in descending
 * order, the N-th (0-based), N = G * (blocks merged) + E * (blocks not merged), minus 1 when G == E, is the
 * threshold, and a block's count is the number of its values above it. MS_ERR_ARG with a message in err (may be
 * NULL) when G is out of 1..E, a frequency is outside 0..1 (NaN included), the index N does not exist, or the
 * threshold is 1 (too many groups asked for). */
ms_status grp_global_counts(int n_blocks, int E, const double *frequency, const unsigned char *merged, int G,
			    int *counts, ms_error *err);

#endif
