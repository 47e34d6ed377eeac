#include "analysis/grouping.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/par.h"

const char *const grp_method_names[GRP_METHOD_COUNT] = { GRP_METHOD_TABLE(NAMES_X_NAME) };
const char *const grp_method_help[GRP_METHOD_COUNT] = { GRP_METHOD_TABLE(NAMES_X_HELP) };
const char *const grp_linkage_names[GRP_LINK_COUNT] = { GRP_LINKAGE_TABLE(NAMES_X_NAME) };
const char *const grp_linkage_help[GRP_LINK_COUNT] = { GRP_LINKAGE_TABLE(NAMES_X_HELP) };

const char *grp_method_name(grp_method m)
{
	return names_at(grp_method_names, GRP_METHOD_COUNT, (int)m);
}

int grp_method_parse(const char *name)
{
	return names_index(grp_method_names, GRP_METHOD_COUNT, name);
}

const char *grp_linkage_name(grp_linkage l)
{
	return names_at(grp_linkage_names, GRP_LINK_COUNT, (int)l);
}

int grp_linkage_parse(const char *name)
{
	return names_index(grp_linkage_names, GRP_LINK_COUNT, name);
}

/* ---- shared helpers ---- */

static ms_status check_finite(const double *a, size_t n)
{
	for (size_t k = 0; k < n; k++)
		if (!isfinite(a[k]))
			return MS_ERR_NONFINITE;
	return MS_OK;
}

static ms_status check_counts(int E, int G)
{
	return E >= 1 && G >= 1 && G <= E ? MS_OK : MS_ERR_ARG;
}

typedef struct {
	double key;
	int index;
} ranked;

/* Descending key, then ascending index: "usage order". */
static int ranked_cmp(const void *pa, const void *pb)
{
	const ranked *a = pa, *b = pb;
	if (a->key != b->key)
		return a->key > b->key ? -1 : 1;
	return (a->index > b->index) - (a->index < b->index);
}

/* order [n] = the indices 0..n-1 sorted by descending key [n], ties to the lower index. */
static ms_status rank_desc(int n, const double *key, int *order)
{
	ranked *r = malloc((size_t)n * sizeof *r);
	if (!r)
		return MS_ERR_NOMEM;
	for (int i = 0; i < n; i++)
		r[i] = (ranked){ key[i], i };
	qsort(r, (size_t)n, sizeof *r, ranked_cmp);
	for (int i = 0; i < n; i++)
		order[i] = r[i].index;
	free(r);
	return MS_OK;
}

/* ---- M-SMoE ---- */

/* The label (0..G-1) of the dominant most similar to expert e; order[0..G) are the dominants by label. */
static int most_similar_dominant(int E, int G, const double *similarity, const int *order, int e)
{
	const double *row = similarity + (size_t)e * (size_t)E;
	int best = 0;
	for (int l = 1; l < G; l++)
		if (row[order[l]] > row[order[best]])
			best = l;
	return best;
}

ms_status grp_msmoe(int E, int G, const double *frequency, const double *similarity, int *group,
		    unsigned char *dominant)
{
	if (check_counts(E, G) != MS_OK || !frequency || !similarity || !group || !dominant)
		return MS_ERR_ARG;
	if (check_finite(frequency, (size_t)E) != MS_OK || check_finite(similarity, (size_t)E * (size_t)E) != MS_OK)
		return MS_ERR_NONFINITE;
	int *order = malloc((size_t)E * sizeof *order);
	if (!order || rank_desc(E, frequency, order) != MS_OK) {
		free(order);
		return MS_ERR_NOMEM;
	}
	for (int r = 0; r < E; r++) {
		const int e = order[r];
		dominant[e] = r < G;
		group[e] = r < G ? r : most_similar_dominant(E, G, similarity, order, e);
	}
	free(order);
	return MS_OK;
}

/* ---- HC-SMoE ---- */

/* Distance between cluster a ∪ b and another cluster k, from their distances to k and the sizes of a and b
 * (the Lance-Williams update; for average linkage it is exactly the mean over member pairs). */
static double linkage_update(grp_linkage l, double da, double db, int na, int nb)
{
	switch (l) {
	case GRP_LINK_SINGLE: return fmin(da, db);
	case GRP_LINK_COMPLETE: return fmax(da, db);
	default: return ((double)na * da + (double)nb * db) / (double)(na + nb);
	}
}

typedef struct {
	int E;
	grp_linkage linkage;
	double *dist;  /* [E, E] between clusters, each named by its lowest member; rows of merged-away names unused */
	int *size;     /* [E] members of each live cluster, 0 once merged away */
	int *root;     /* [E] the cluster each expert is in */
} hc_state;

/* The closest pair of live clusters a < b; ties to the lowest a, then the lowest b. */
static void closest_pair(const hc_state *h, int *pa, int *pb)
{
	double best = INFINITY;
	*pa = *pb = -1;
	for (int a = 0; a < h->E; a++) {
		if (!h->size[a])
			continue;
		for (int b = a + 1; b < h->E; b++)
			if (h->size[b] && (*pa < 0 || h->dist[(size_t)a * h->E + b] < best)) {
				best = h->dist[(size_t)a * h->E + b];
				*pa = a;
				*pb = b;
			}
	}
}

/* Cluster b joins cluster a (a < b, so a stays the lowest member's name). */
static void merge_clusters(hc_state *h, int a, int b)
{
	const size_t E = (size_t)h->E;
	for (int k = 0; k < h->E; k++) {
		if (!h->size[k] || k == a || k == b)
			continue;
		const double v = linkage_update(h->linkage, h->dist[a * E + k], h->dist[b * E + k], h->size[a],
						h->size[b]);
		h->dist[a * E + k] = v;
		h->dist[k * E + a] = v;
	}
	h->size[a] += h->size[b];
	h->size[b] = 0;
	for (int e = 0; e < h->E; e++)
		if (h->root[e] == b)
			h->root[e] = a;
}

/* Labels the clusters of h: each one's most-used member is dominant; labels follow the dominants' usage order,
 * so walking all experts in usage order meets the dominants in label order. */
static ms_status label_clusters(const hc_state *h, const double *frequency, int *group, unsigned char *dominant)
{
	const int E = h->E;
	int *order = malloc((size_t)E * sizeof *order);
	int *label = malloc((size_t)E * sizeof *label); /* [E] by cluster name */
	if (!order || !label || rank_desc(E, frequency, order) != MS_OK) {
		free(order);
		free(label);
		return MS_ERR_NOMEM;
	}
	for (int c = 0; c < E; c++)
		label[c] = -1;
	int next = 0;
	for (int r = 0; r < E; r++) {
		const int e = order[r], c = h->root[e];
		dominant[e] = label[c] < 0;
		if (label[c] < 0)
			label[c] = next++;
		group[e] = label[c];
	}
	free(order);
	free(label);
	return MS_OK;
}

ms_status grp_hc(int E, int G, const double *distance, grp_linkage linkage, const double *frequency, int *group,
		 unsigned char *dominant)
{
	if (check_counts(E, G) != MS_OK || !distance || !frequency || !group || !dominant || (int)linkage < 0 ||
	    linkage >= GRP_LINK_COUNT)
		return MS_ERR_ARG;
	const size_t n = (size_t)E;
	if (check_finite(frequency, n) != MS_OK || check_finite(distance, n * n) != MS_OK)
		return MS_ERR_NONFINITE;
	hc_state h = { .E = E, .linkage = linkage };
	h.dist = malloc(n * n * sizeof *h.dist);
	h.size = malloc(n * sizeof *h.size);
	h.root = malloc(n * sizeof *h.root);
	ms_status st = MS_ERR_NOMEM;
	if (h.dist && h.size && h.root) {
		for (size_t i = 0; i < n; i++) {
			for (size_t j = 0; j < n; j++)
				h.dist[i * n + j] = 0.5 * distance[i * n + j] + 0.5 * distance[j * n + i];
			h.size[i] = 1;
			h.root[i] = (int)i;
		}
		for (int clusters = E; clusters > G; clusters--) {
			int a, b;
			closest_pair(&h, &a, &b);
			merge_clusters(&h, a, b);
		}
		st = label_clusters(&h, frequency, group, dominant);
	}
	free(h.dist);
	free(h.size);
	free(h.root);
	return st;
}

/* ---- pruning ---- */

ms_status grp_prune(int E, int G, const double *score, int *group, unsigned char *dominant)
{
	if (check_counts(E, G) != MS_OK || !score || !group || !dominant)
		return MS_ERR_ARG;
	if (check_finite(score, (size_t)E) != MS_OK)
		return MS_ERR_NONFINITE;
	int *order = malloc((size_t)E * sizeof *order);
	if (!order || rank_desc(E, score, order) != MS_OK) {
		free(order);
		return MS_ERR_NOMEM;
	}
	for (int r = 0; r < E; r++) {
		group[order[r]] = r < G ? r : -1;
		dominant[order[r]] = r < G;
	}
	free(order);
	return MS_OK;
}

/* ---- REAP saliency ---- */

/* The (token, routing weight) pairs of all experts, bucketed by expert: expert e's are [start[e], start[e + 1]). */
typedef struct {
	int64_t *start;  /* [E + 1] */
	int64_t *token;  /* [T k] */
	float *gate;     /* [T k] */
} reap_routes;

static void reap_routes_free(reap_routes *r)
{
	free(r->start);
	free(r->token);
	free(r->gate);
}

/* Counting sort of idx [T, k] by expert; checks every index and weight first. */
static ms_status reap_routes_build(int E, int64_t T, int k, const int *idx, const float *weight, reap_routes *r)
{
	const size_t n = (size_t)T * (size_t)k;
	for (size_t s = 0; s < n; s++) {
		if (idx[s] < 0 || idx[s] >= E)
			return MS_ERR_ARG;
		if (!isfinite(weight[s]))
			return MS_ERR_NONFINITE;
	}
	r->start = calloc((size_t)E + 1, sizeof *r->start);
	r->token = malloc((n ? n : 1) * sizeof *r->token);
	r->gate = malloc((n ? n : 1) * sizeof *r->gate);
	if (!r->start || !r->token || !r->gate)
		return MS_ERR_NOMEM;
	for (size_t s = 0; s < n; s++)
		r->start[idx[s] + 1]++;
	for (int e = 0; e < E; e++)
		r->start[e + 1] += r->start[e];
	int64_t *fill = calloc((size_t)E, sizeof *fill);
	if (!fill)
		return MS_ERR_NOMEM;
	for (size_t s = 0; s < n; s++) {
		const int e = idx[s];
		const int64_t at = r->start[e] + fill[e]++;
		r->token[at] = (int64_t)(s / (size_t)k);
		r->gate[at] = weight[s];
	}
	free(fill);
	return MS_OK;
}

typedef struct {
	float *xs;    /* [GRP_REAP_CHUNK, d] gathered tokens */
	float *ys;    /* [GRP_REAP_CHUNK, d] their expert outputs */
	float *work;  /* expert_forward's work space */
} reap_buffers;

/* Sum over expert e's routed tokens of gate * |output|_2, GRP_REAP_CHUNK tokens per GEMM. */
static ms_status reap_expert_sum(const expert_weights *w, const float *x, const reap_routes *r, int e,
				 reap_buffers *b, double *sum)
{
	const int d = w->d;
	*sum = 0.0;
	for (int64_t lo = r->start[e]; lo < r->start[e + 1]; lo += GRP_REAP_CHUNK) {
		const int64_t m = r->start[e + 1] - lo < GRP_REAP_CHUNK ? r->start[e + 1] - lo : GRP_REAP_CHUNK;
		for (int64_t t = 0; t < m; t++)
			memcpy(b->xs + t * d, x + r->token[lo + t] * d, (size_t)d * sizeof *x);
		ms_status st = expert_forward(w, b->xs, m, 1.0f, 0, b->ys, b->work);
		if (st != MS_OK)
			return st;
		for (int64_t t = 0; t < m; t++) {
			double norm2 = 0.0;
			for (int c = 0; c < d; c++)
				norm2 += (double)b->ys[t * d + c] * b->ys[t * d + c];
			*sum += (double)r->gate[lo + t] * sqrt(norm2);
		}
	}
	return isfinite(*sum) ? MS_OK : MS_ERR_NONFINITE;
}

static ms_status reap_check_experts(const expert_weights *experts, int E, int64_t *work_floats)
{
	*work_floats = 1;
	for (int e = 0; e < E; e++) {
		const expert_weights *w = &experts[e];
		if (w->d != experts[0].d || w->d <= 0 || w->f <= 0 || !w->up || !w->down ||
		    (mdl_act_gated(w->act) && !w->gate))
			return MS_ERR_ARG;
		const int64_t need = expert_work_floats(w, GRP_REAP_CHUNK);
		if (need > *work_floats)
			*work_floats = need;
	}
	return MS_OK;
}

typedef struct {
	const expert_weights *experts;
	const float *x;
	const reap_routes *r;
	int64_t work_floats;
	double *saliency;
} reap_job;

/* One expert's saliency, with its thread's scratch buffers (par_scratch: kept from one expert to the next, where
 * fresh ones would fault in tens of MB per expert): experts run as parallel tasks. */
static ms_status reap_task(void *ctx, int64_t e, ms_error *err)
{
	(void)err;
	const reap_job *j = ctx;
	const size_t d = (size_t)j->experts[0].d;
	reap_buffers b = {
		.xs = par_scratch(0, GRP_REAP_CHUNK * d * sizeof *b.xs),
		.ys = par_scratch(1, GRP_REAP_CHUNK * d * sizeof *b.ys),
		.work = par_scratch(2, (size_t)j->work_floats * sizeof *b.work),
	};
	ms_status st = b.xs && b.ys && b.work ? MS_OK : MS_ERR_NOMEM;
	double sum = 0.0;
	if (st == MS_OK)
		st = reap_expert_sum(&j->experts[e], j->x, j->r, (int)e, &b, &sum);
	const int64_t routed = j->r->start[e + 1] - j->r->start[e];
	j->saliency[e] = routed ? sum / (double)routed : 0.0;
	return st;
}

ms_status grp_reap_saliency(const expert_weights *experts, int E, const float *x, int64_t T, const int *idx,
			    const float *weight, int k, double *saliency)
{
	if (!experts || E < 1 || T < 0 || k < 1 || !saliency || (T > 0 && (!x || !idx || !weight)))
		return MS_ERR_ARG;
	if ((uint64_t)T > SIZE_MAX / sizeof(int64_t) / (uint64_t)k) /* the routes below hold T k entries */
		return MS_ERR_NOMEM;
	int64_t work_floats;
	if (reap_check_experts(experts, E, &work_floats) != MS_OK)
		return MS_ERR_ARG;
	reap_routes r = { 0 };
	ms_status st = reap_routes_build(E, T, k, idx, weight, &r);
	reap_job j = {.experts = experts, .x = x, .r = &r, .work_floats = work_floats, .saliency = saliency};
	if (st == MS_OK)
		st = par_for(E, reap_task, &j, NULL);
	reap_routes_free(&r);
	return st;
}

/* ---- MC-SMoE global allocation ---- */

static int cmp_desc(const void *pa, const void *pb)
{
	const double a = *(const double *)pa, b = *(const double *)pb;
	return (a < b) - (a > b);
}

/* values [n_blocks, E]: the frequencies with each block's most-used expert (first maximum) set to 1, and every
 * value of a block not merged set to 1. */
static void global_values(int n_blocks, int E, const double *frequency, const unsigned char *merged, double *values)
{
	for (int b = 0; b < n_blocks; b++) {
		const double *f = frequency + (size_t)b * E;
		double *v = values + (size_t)b * E;
		int top = 0;
		for (int e = 0; e < E; e++) {
			v[e] = merged[b] ? f[e] : 1.0;
			if (f[e] > f[top])
				top = e;
		}
		v[top] = 1.0;
	}
}

ms_status grp_global_counts(int n_blocks, int E, const double *frequency, const unsigned char *merged, int G,
			    int *counts, ms_error *err)
{
	if (n_blocks < 1 || E < 1 || !frequency || !merged || !counts)
		return ms_fail(err, MS_ERR_ARG, "global grouping: no blocks or experts");
	if (G < 1 || G > E)
		return ms_fail(err, MS_ERR_ARG, "global grouping: %d groups on average is outside 1..%d", G, E);
	const size_t total = (size_t)n_blocks * (size_t)E;
	for (size_t k = 0; k < total; k++)
		if (!(frequency[k] >= 0.0 && frequency[k] <= 1.0))
			return ms_fail(err, MS_ERR_ARG, "global grouping: block %zu expert %zu: frequency %g outside 0..1",
				       k / (size_t)E, k % (size_t)E, frequency[k]);
	size_t n_merged = 0;
	for (int b = 0; b < n_blocks; b++)
		n_merged += merged[b] != 0;
	size_t N = (size_t)G * n_merged + (size_t)E * ((size_t)n_blocks - n_merged) - (G == E);
	if (N >= total)
		return ms_fail(err, MS_ERR_ARG, "global grouping: %d groups per merged block need more experts than "
				  "the %zu merged blocks have", G, n_merged);
	double *values = malloc(total * sizeof *values);  /* [n_blocks, E] */
	double *sorted = malloc(total * sizeof *sorted);  /* [n_blocks * E] */
	if (!values || !sorted) {
		free(values);
		free(sorted);
		return ms_fail(err, MS_ERR_NOMEM, "global grouping: out of memory");
	}
	global_values(n_blocks, E, frequency, merged, values);
	memcpy(sorted, values, total * sizeof *sorted);
	qsort(sorted, total, sizeof *sorted, cmp_desc);
	const double threshold = sorted[N];
	ms_status st = MS_OK;
	if (threshold >= 1.0)
		st = ms_fail(err, MS_ERR_ARG, "global grouping: %d groups on average leaves a frequency threshold of 1 "
			     "(too many groups for these blocks); ask for fewer", G);
	for (int b = 0; b < n_blocks && st == MS_OK; b++) {
		counts[b] = 0;
		for (int e = 0; e < E; e++)
			counts[b] += values[(size_t)b * E + e] > threshold;
	}
	free(values);
	free(sorted);
	return st;
}
