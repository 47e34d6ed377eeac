/* Routing: router logits, family-correct top-k selection and routing weights, usage statistics. */
#ifndef ROUTE_ROUTING_H
#define ROUTE_ROUTING_H

#include <stdint.h>

#include "io/error.h"
#include "io/model.h"

/* z [T, E] = x [T, d] router^T, router [E, d]; one GEMM. */
ms_status route_logits(const float *x, int64_t T, int d, const float *router, int E, float *z);

/* z [T, E] += bias [E] on every row (the router's logit bias, mdl_routing.logit_bias); nothing when bias is NULL.
 * route_topk takes logits with the bias already added. */
void route_add_bias(float *z, int64_t T, int E, const float *bias);

/* For every row of z [T, E]: the top-k experts (k = r->top_k) in descending logit order (descending choice value
 * when r has a score bias, sigmoid scores or groups: io/model.h mdl_routing), ties to the lower index,
 * into idx [T, k]; their routing weights into weight [T, k] (may be NULL): softmax over all E logits (each logit's
 * sigmoid under MDL_SCORE_SIGMOID), taken at the selected experts, renormalised over them when r->renormalize,
 * times r->scale. Group-limited routing (DeepSeek-V3's, or deepseek_v2's group_limited_greedy) keeps only the
 * experts of the topk_group best groups, a group scored as r->group_score says. */
ms_status route_topk(const float *z, int64_t T, int E, const mdl_routing *r, int *idx, float *weight);


/* Usage statistics from a selection idx [T, k]:
 * frequency [E]: how often e is selected, divided by k T;
 * coact [E, E] (may be NULL): coact[i E + j] = tokens selecting both i and j (i != j); diagonal = tokens
 *   selecting i;
 * *usage_entropy: entropy in bits of the frequency distribution (log2 E when balanced);
 * *cv: coefficient of variation (population standard deviation / mean) of frequency. */
ms_status route_stats(const int *idx, int64_t T, int E, int k, double *frequency, double *coact,
		      double *usage_entropy, double *cv);

#endif
