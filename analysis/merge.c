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

int merge_copy_member(int n_members, merge_weighting w, int dominant_member)
{
	return n_members == 1 ? 0 : w == MERGE_DOMINANT ? dominant_member : -1;
}

void merge_scale(float *x, float c, int64_t n)
{
	for (int64_t j = 0; j < n; j++)
		x[j] = c * x[j];
}

/* Written in blocks of 8 because -O2 leaves the plain loop scalar; each element is still one rounded product and
 * (after the first member) one rounded sum, so the bits are those of the plain loop. */
void merge_term(float *restrict out, const float *restrict x, float c, int64_t n, int first)
{
	int64_t j = 0;
	if (first) {
		for (; j + 8 <= n; j += 8)
			for (int k = 0; k < 8; k++)
				out[j + k] = c * x[j + k];
		for (; j < n; j++)
			out[j] = c * x[j];
		return;
	}
	for (; j + 8 <= n; j += 8)
		for (int k = 0; k < 8; k++)
			out[j + k] += c * x[j + k];
	for (; j < n; j++)
		out[j] += c * x[j];
}

/* out [numel] = sum_e coef[e] mats[e], the dominant member first and the others in order for every element,
 * members with coefficient 0 left out (so none needs aligning: pipeline/pipeline.c merges in the same order). The chunk's sums are finished before
 * any of its elements is stored, which is what lets out be one of the members. */
static void weighted_sum(int n, const float *const *mats, const float *coef, int dominant, int64_t numel,
			 float *out)
{
	float acc[MERGE_CHUNK];
	for (int64_t at = 0; at < numel; at += MERGE_CHUNK) {
		const int64_t len = numel - at < MERGE_CHUNK ? numel - at : MERGE_CHUNK;
		int first = 1;
		for (int k = -1; k < n; k++) {
			const int e = k < 0 ? dominant : k;
			if ((k >= 0 && e == dominant) || coef[e] == 0.0f)
				continue;
			merge_term(acc, mats[e] + at, coef[e], len, first);
			first = 0;
		}
		if (first)
			memset(acc, 0, (size_t)len * sizeof *acc);
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
		const int copy_from = merge_copy_member(n_members, w, dominant_member);
		if (copy_from >= 0) {
			if (out != mats[copy_from])
				memmove(out, mats[copy_from], (size_t)numel * sizeof *out);
		} else {
			float *coef_f = (float *)(coef + n_members);
			for (int e = 0; e < n_members; e++)
				coef_f[e] = (float)coef[e];
			const int lead = dominant_member >= 0 && dominant_member < n_members ? dominant_member : 0;
			weighted_sum(n_members, mats, coef_f, lead, numel, out);
		}
	}
	free(coef);
	return st;
}
