#include "analysis/routing.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>

#include "analysis/par.h"

/* Tokens per task of route_logits: fixed, so each GEMM (and its bits) depends on the tokens alone. */
#define ROUTE_TASK_TOKENS 1024

typedef struct {
	const float *x, *router;
	int64_t T;
	int d, E;
	float *z;
} logits_job;

static ms_status logits_task(void *ctx, int64_t task, ms_error *err)
{
	(void)err;
	const logits_job *j = ctx;
	const int64_t t0 = task * ROUTE_TASK_TOKENS;
	const int n = (int)(j->T - t0 < ROUTE_TASK_TOKENS ? j->T - t0 : ROUTE_TASK_TOKENS);
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, j->E, j->d, 1.0f, j->x + t0 * j->d, j->d, j->router,
		    j->d, 0.0f, j->z + t0 * j->E, j->E);
	return MS_OK;
}

ms_status route_logits(const float *x, int64_t T, int d, const float *router, int E, float *z)
{
	if (!x || !router || !z || T < 0 || d <= 0 || E <= 0)
		return MS_ERR_ARG;
	logits_job j = {.x = x, .router = router, .T = T, .d = d, .E = E, .z = z};
	return par_for((T + ROUTE_TASK_TOKENS - 1) / ROUTE_TASK_TOKENS, logits_task, &j, NULL);
}

/* Inserts expert e with logit v into the descending top list (length k, filled n); ties keep the lower index
 * first because experts arrive in index order and only a strictly larger logit moves ahead. */
static void topk_insert(int *top, const float *row, int k, int *n, int e)
{
	float v = row[e];
	int pos = *n < k ? *n : k;
	if (pos == k && !(v > row[top[k - 1]]))
		return;
	if (pos == k)
		pos = k - 1;
	while (pos > 0 && v > row[top[pos - 1]]) {
		top[pos] = top[pos - 1];
		pos--;
	}
	top[pos] = e;
	if (*n < k)
		(*n)++;
}

/* group-limited routing (r->n_group > 0): marks in key [E] the experts of the eligible groups with their logit and
 * every other expert with -inf, so that the top-k over key takes the eligible experts first (ties to the lower
 * index, as everywhere). A group's score is its best logit, which orders groups as transformers' best softmax
 * probability does; the topk_group best groups are eligible, ties to the lower group. The columns' groups are
 * group_of [E] (NULL: contiguous groups of E / n_group). */
static void group_limit(const float *row, int E, const mdl_routing *r, const int *group_of, float *gbest,
			unsigned char *chosen, float *key)
{
	const int G = r->n_group;
	for (int g = 0; g < G; g++) {
		gbest[g] = -INFINITY;
		chosen[g] = 0;
	}
	for (int e = 0; e < E; e++) {
		const int g = group_of ? group_of[e] : e / (E / G);
		if (row[e] > gbest[g])
			gbest[g] = row[e];
	}
	for (int n = 0; n < r->topk_group && n < G; n++) {
		int best = -1;
		for (int g = 0; g < G; g++)
			if (!chosen[g] && (best < 0 || gbest[g] > gbest[best]))
				best = g;
		chosen[best] = 1;
	}
	for (int e = 0; e < E; e++)
		key[e] = chosen[group_of ? group_of[e] : e / (E / G)] ? row[e] : -INFINITY;
}

ms_status route_topk_groups(const float *z, int64_t T, int E, const mdl_routing *r, const int *group_of, int *idx,
			    float *weight)
{
	if (!z || !r || !idx || T < 0 || E <= 0 || r->top_k <= 0 || r->top_k > E)
		return MS_ERR_ARG;
	const int grouped = r->n_group > 0 && r->topk_group < r->n_group;
	if (grouped && !group_of && E % r->n_group != 0)
		return MS_ERR_ARG;
	for (int e = 0; grouped && group_of && e < E; e++)
		if (group_of[e] < 0 || group_of[e] >= r->n_group)
			return MS_ERR_ARG;
	const int k = r->top_k;
	float *key = grouped ? malloc((size_t)E * sizeof *key + (size_t)r->n_group * (sizeof(float) + 1)) : NULL;
	if (grouped && !key)
		return MS_ERR_NOMEM;
	float *gbest = key ? key + E : NULL;
	unsigned char *chosen = key ? (unsigned char *)(gbest + r->n_group) : NULL;
	for (int64_t t = 0; t < T; t++) {
		const float *row = z + t * E;
		const float *rank = row;
		if (grouped) {
			group_limit(row, E, r, group_of, gbest, chosen, key);
			rank = key;
		}
		int *top = idx + t * k;
		int n = 0;
		for (int e = 0; e < E; e++)
			topk_insert(top, rank, k, &n, e);
		if (!weight)
			continue;
		/* softmax over all E, in double for a stable denominator; an ineligible expert (only when the eligible
		 * groups hold fewer than k) weighs 0, as transformers' masked score does */
		double mx = row[0], sum = 0.0;
		for (int e = 1; e < E; e++)
			mx = row[e] > mx ? row[e] : mx;
		for (int e = 0; e < E; e++)
			sum += exp((double)row[e] - mx);
		double sel = 0.0;
		for (int j = 0; j < k; j++)
			sel += rank[top[j]] == -INFINITY ? 0.0 : exp((double)row[top[j]] - mx);
		double denom = r->renormalize ? sel : sum;
		for (int j = 0; j < k; j++)
			weight[t * k + j] = rank[top[j]] == -INFINITY ? 0.0f
				: (float)(exp((double)row[top[j]] - mx) / denom * r->scale);
	}
	free(key);
	return MS_OK;
}

ms_status route_topk(const float *z, int64_t T, int E, const mdl_routing *r, int *idx, float *weight)
{
	return route_topk_groups(z, T, E, r, NULL, idx, weight);
}

ms_status route_stats(const int *idx, int64_t T, int E, int k, double *frequency, double *coact,
		      double *usage_entropy, double *cv)
{
	if (!idx || !frequency || T < 0 || E <= 0 || k <= 0)
		return MS_ERR_ARG;
	memset(frequency, 0, (size_t)E * sizeof *frequency);
	if (coact)
		memset(coact, 0, (size_t)E * (size_t)E * sizeof *coact);
	for (int64_t t = 0; t < T; t++) {
		const int *sel = idx + t * k;
		for (int j = 0; j < k; j++) {
			if (sel[j] < 0 || sel[j] >= E)
				return MS_ERR_ARG;
			frequency[sel[j]] += 1.0;
			if (!coact)
				continue;
			for (int l = 0; l < k; l++)
				coact[(size_t)sel[j] * E + sel[l]] += 1.0;
		}
	}
	double total = (double)k * (double)T, mean = 0.0, var = 0.0, ent = 0.0;
	for (int e = 0; e < E; e++) {
		frequency[e] = total > 0 ? frequency[e] / total : 0.0;
		mean += frequency[e];
		if (frequency[e] > 0)
			ent -= frequency[e] * log2(frequency[e]);
	}
	mean /= E;
	for (int e = 0; e < E; e++)
		var += (frequency[e] - mean) * (frequency[e] - mean);
	var /= E;
	if (usage_entropy)
		*usage_entropy = ent;
	if (cv)
		*cv = mean > 0 ? sqrt(var) / mean : 0.0;
	return MS_OK;
}
