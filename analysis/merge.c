#include "analysis/merge.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *const merge_weighting_names[MERGE_WEIGHTING_COUNT] = { MERGE_WEIGHTING_TABLE(NAMES_X_NAME) };
const char *const merge_weighting_help[MERGE_WEIGHTING_COUNT] = { MERGE_WEIGHTING_TABLE(NAMES_X_HELP) };

const char *merge_weighting_name(merge_weighting w)
{
	return names_at(merge_weighting_names, MERGE_WEIGHTING_COUNT, (int)w);
}

int merge_weighting_parse(const char *name)
{
	return names_index(merge_weighting_names, MERGE_WEIGHTING_COUNT, name);
}

/* Elements merged per pass: the partial sums stay in L1 while each member's slice streams past once. */
#define MERGE_CHUNK 1024

static ms_status check_frequency(int n, const double *frequency)
{
	if (!frequency)
		return MS_ERR_ARG;
	for (int e = 0; e < n; e++) {
		if (!isfinite(frequency[e]))
			return MS_ERR_NONFINITE;
		if (frequency[e] < 0)
			return MS_ERR_ARG;
	}
	return MS_OK;
}

static void uniform_coefficients(int n, double *coef)
{
	for (int e = 0; e < n; e++)
		coef[e] = 1.0 / n;
}

ms_status merge_coefficients(int n_members, const double *frequency, int dominant_member, merge_weighting w,
			     double *coef)
{
	if (n_members < 1 || !coef || (int)w < 0 || w >= MERGE_WEIGHTING_COUNT)
		return MS_ERR_ARG;
	if (w == MERGE_DOMINANT && (dominant_member < 0 || dominant_member >= n_members))
		return MS_ERR_ARG;
	if (w == MERGE_FREQUENCY) {
		ms_status st = check_frequency(n_members, frequency);
		if (st != MS_OK)
			return st;
	}
	if (n_members == 1) {
		coef[0] = 1.0;
		return MS_OK;
	}
	if (w == MERGE_UNIFORM) {
		uniform_coefficients(n_members, coef);
	} else if (w == MERGE_DOMINANT) {
		for (int e = 0; e < n_members; e++)
			coef[e] = e == dominant_member ? 1.0 : 0.0;
	} else {
		double sum = 0;
		for (int e = 0; e < n_members; e++)
			sum += frequency[e];
		/* MC-SMoE would write a zero expert for a group nobody uses; an average is the useful answer. */
		if (sum == 0) {
			uniform_coefficients(n_members, coef);
		} else {
			for (int e = 0; e < n_members; e++)
				coef[e] = frequency[e] / (sum + MERGE_FREQUENCY_EPS);
		}
	}
	return MS_OK;
}

/* out [numel] = sum_e coef[e] mats[e], member 0 first for every element. The chunk's sums are finished before
 * any of its elements is stored, which is what lets out be one of the members. */
static void weighted_sum(int n, const float *const *mats, const float *coef, int64_t numel, float *out)
{
	float acc[MERGE_CHUNK];
	for (int64_t at = 0; at < numel; at += MERGE_CHUNK) {
		const int64_t len = numel - at < MERGE_CHUNK ? numel - at : MERGE_CHUNK;
		const float *m0 = mats[0] + at;
		for (int64_t i = 0; i < len; i++)
			acc[i] = coef[0] * m0[i];
		for (int e = 1; e < n; e++) {
			const float *me = mats[e] + at;
			for (int64_t i = 0; i < len; i++)
				acc[i] += coef[e] * me[i];
		}
		memcpy(out + at, acc, (size_t)len * sizeof *acc);
	}
}

ms_status merge_matrices(int n_members, const float *const *mats, const double *frequency, int dominant_member,
			 merge_weighting w, int64_t numel, float *out)
{
	if (!mats || !out || numel < 0 || n_members < 1)
		return MS_ERR_ARG;
	for (int e = 0; e < n_members; e++)
		if (!mats[e])
			return MS_ERR_ARG;
	double *coef = malloc((size_t)n_members * (sizeof(double) + sizeof(float)));
	if (!coef)
		return MS_ERR_NOMEM;
	ms_status st = merge_coefficients(n_members, frequency, dominant_member, w, coef);
	if (st == MS_OK && numel > 0) {
		/* Copies are exact: a group of one, or the dominant's matrix, keeps its bits. */
		const int copy_from = n_members == 1 ? 0 : w == MERGE_DOMINANT ? dominant_member : -1;
		if (copy_from >= 0) {
			if (out != mats[copy_from])
				memmove(out, mats[copy_from], (size_t)numel * sizeof *out);
		} else {
			float *coef_f = (float *)(coef + n_members);
			for (int e = 0; e < n_members; e++)
				coef_f[e] = (float)coef[e];
			weighted_sum(n_members, mats, coef_f, numel, out);
		}
	}
	free(coef);
	return st;
}
