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

void route_add_bias(float *z, int64_t T, int E, const float *bias)
{
	if (!bias)
		return;
	for (int64_t t = 0; t < T; t++)
		for (int e = 0; e < E; e++)
			z[t * E + e] += bias[e];
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

/* Softmax top-k: the plain rule of every family but deepseek_v3 / glm4_moe. */
static void softmax_topk(const float *row, int E, const mdl_routing *r, int *top, float *weight)
{
	const int k = r->top_k;
	int n = 0;
	for (int e = 0; e < E; e++)
		topk_insert(top, row, k, &n, e);
	if (!weight)
		return;
	/* softmax over all E, in double for a stable denominator */
	double mx = row[top[0]], sum = 0.0;
	for (int e = 0; e < E; e++)
		sum += exp((double)row[e] - mx);
	double sel = 0.0;
	for (int j = 0; j < k; j++)
		sel += exp((double)row[top[j]] - mx);
	double denom = r->renormalize ? sel : sum;
	for (int j = 0; j < k; j++)
		weight[j] = (float)(exp((double)row[top[j]] - mx) / denom * r->scale);
}

static double score_of(const mdl_routing *r, float z)
{
	return r->score == MDL_SCORE_SIGMOID ? 1.0 / (1.0 + exp(-(double)z)) : (double)z;
}

/* DeepseekV3TopkRouter.get_topk_indices and forward for one token (mdl_routing in io/model.h): choice [E] and
 * group [n_group] and keep [n_group] are work space. Softmax scoring with a bias or groups goes through here too, with the softmax
 * taken first. */
static void biased_topk(const float *row, int E, const mdl_routing *r, int *top, float *weight, float *choice,
			float *group, int *keep)
{
	const int k = r->top_k;
	double mx = row[0], sum = 0.0;
	if (r->score == MDL_SCORE_SOFTMAX) {
		for (int e = 1; e < E; e++)
			mx = row[e] > mx ? row[e] : mx;
		for (int e = 0; e < E; e++)
			sum += exp((double)row[e] - mx);
	}
	for (int e = 0; e < E; e++) {
		double s = r->score == MDL_SCORE_SIGMOID ? score_of(r, row[e]) : exp((double)row[e] - mx) / sum;
		choice[e] = (float)s + (r->score_bias ? r->score_bias[e] : 0.0f);
	}
	const int G = r->n_group, per = E / G;
	if (G > 1 && r->topk_group < G) {
		const int top2 = r->group_score == MDL_GROUP_TOP2;
		for (int g = 0; g < G; g++) {   /* the sum of the group's two largest choices, or its largest */
			int best[2], n = 0;
			for (int e = 0; e < per; e++)
				topk_insert(best, choice + g * per, top2 ? 2 : 1, &n, e);
			group[g] = choice[g * per + best[0]] + (top2 ? choice[g * per + best[1]] : 0.0f);
		}
		int n = 0;
		for (int g = 0; g < G; g++)
			topk_insert(keep, group, r->topk_group, &n, g);
		for (int g = 0; g < G; g++) {
			int kept = 0;
			for (int j = 0; j < r->topk_group; j++)
				kept |= keep[j] == g;
			for (int e = 0; !kept && e < per; e++)
				choice[g * per + e] = 0.0f;   /* transformers masks with 0.0, not -inf */
		}
	}
	int n = 0;
	for (int e = 0; e < E; e++)
		topk_insert(top, choice, k, &n, e);
	if (!weight)
		return;
	double sel = 0.0;
	for (int j = 0; j < k; j++)
		sel += r->score == MDL_SCORE_SIGMOID ? score_of(r, row[top[j]]) : exp((double)row[top[j]] - mx) / sum;
	double denom = !r->renormalize ? 1.0 : r->score == MDL_SCORE_SIGMOID ? sel + 1e-20 : sel;
	for (int j = 0; j < k; j++) {
		double s = r->score == MDL_SCORE_SIGMOID ? score_of(r, row[top[j]]) : exp((double)row[top[j]] - mx) / sum;
		weight[j] = (float)(s / denom * r->scale);
	}
}

/* Whether r needs more than softmax top-k on the logits. */
static int plain_rule(const mdl_routing *r)
{
	return r->score == MDL_SCORE_SOFTMAX && !r->score_bias && (r->n_group <= 1 || r->topk_group >= r->n_group);
}

ms_status route_topk(const float *z, int64_t T, int E, const mdl_routing *r, int *idx, float *weight)
{
	if (!z || !r || !idx || T < 0 || E <= 0 || r->top_k <= 0 || r->top_k > E)
		return MS_ERR_ARG;
	const int k = r->top_k, plain = plain_rule(r);
	if (!plain && r->n_group > 1 && r->topk_group < r->n_group &&
	    (E % r->n_group != 0 || (r->group_score == MDL_GROUP_TOP2 && E / r->n_group < 2) || r->topk_group < 1))
		return MS_ERR_ARG;
	const size_t G = (size_t)(r->n_group > 0 ? r->n_group : 1);
	float *work = plain ? NULL : malloc(((size_t)E + G) * sizeof *work);
	int *keep = plain ? NULL : malloc(G * sizeof *keep);
	if (!plain && (!work || !keep)) {
		free(work);
		free(keep);
		return MS_ERR_NOMEM;
	}
	for (int64_t t = 0; t < T; t++) {
		if (plain)
			softmax_topk(z + t * E, E, r, idx + t * k, weight ? weight + t * k : NULL);
		else
			biased_topk(z + t * E, E, r, idx + t * k, weight ? weight + t * k : NULL, work, work + E, keep);
	}
	free(work);
	free(keep);
	return MS_OK;
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
