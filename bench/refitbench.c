/* `build/bench/refitbench S TOPK D F N [THREADS [SWEEPS]]` (built by `make build/bench/refitbench`): the
 * down-projection refit (analysis/refit.h) alone on a random block held in memory, for measuring rft_down's CPU
 * time on a shared machine (CLOCK_PROCESS_CPUTIME_ID: other processes' load counts only through shared caches) and
 * its fit and held-out errors. Not part of `make bench`.
 *
 * The original block has 2 S random experts (expert 2s+1 a noisy copy of 2s; silu-GLU, gate and up scaled
 * 1 / sqrt(D), down 1 / sqrt(F)) and a router whose rows add a bias falling with the expert index on a constant
 * feature, so usage is skewed as in trained blocks. The merged block averages experts 2s and 2s+1 (matrices and
 * router rows) into slot s, keeping top-k. The target is the original block's routed output on N fit tokens; the
 * held-out error is measured on N / 3 further tokens. The OLMoE shape of docs/design.md §7 merged to 16 groups is
 * `refitbench 16 8 2048 1024 3072`. It prints the tokens per slot, the CPU seconds of rft_down, the errors and a
 * checksum of the refitted down matrices (equal for any THREADS). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "analysis/par.h"
#include "analysis/refit.h"

static uint64_t mix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static float uni(uint64_t *s)
{
	return (float)((mix(s) >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0);
}

static double cpu_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p) {
		fprintf(stderr, "refitbench: out of memory\n");
		exit(1);
	}
	return p;
}

typedef struct {
	float *w;               /* [E, 3, F, D] gate, up, down */
	float *router;          /* [E, D] */
	int *slot;
	expert_weights *ex;
	blk_config cfg;
} rb_block;

static void block_init(rb_block *b, int E, int topk, int d, int f)
{
	const size_t per = (size_t)3 * f * d;
	b->w = xmalloc(E * per * sizeof(float));
	b->router = xmalloc((size_t)E * d * sizeof(float));
	b->slot = xmalloc((size_t)E * sizeof(int));
	b->ex = xmalloc((size_t)E * sizeof(expert_weights));
	for (int e = 0; e < E; e++) {
		float *w = b->w + e * per;
		b->ex[e] = (expert_weights){.gate = w, .up = w + (size_t)f * d, .down = w + (size_t)2 * f * d, .d = d,
					    .f = f, .act = MDL_ACT_SILU_GLU};
		b->slot[e] = e;
	}
	b->cfg = (blk_config){.n_router = E, .router = b->router, .slot = b->slot, .n_slots = E, .experts = b->ex,
			      .routing = {.top_k = topk, .renormalize = 0, .scale = 1.0f}, .d = d};
}

static void block_free(rb_block *b)
{
	free(b->w);
	free(b->router);
	free(b->slot);
	free(b->ex);
}

int main(int argc, char **argv)
{
	if (argc < 6) {
		fprintf(stderr, "usage: refitbench S TOPK D F N [THREADS [SWEEPS]]\n");
		return 1;
	}
	const int S = atoi(argv[1]), k = atoi(argv[2]), d = atoi(argv[3]), f = atoi(argv[4]);
	const int64_t n = atoll(argv[5]), nh = n / 3;
	par_set_threads(argc > 6 ? atoi(argv[6]) : 1);
	uint64_t seed = 12345;
	rb_block orig, mg;
	block_init(&orig, 2 * S, k, d, f);
	const size_t per = (size_t)3 * f * d;
	const float gs = 1.0f / sqrtf((float)d), ds = 1.0f / sqrtf((float)f);
	for (int e = 0; e < 2 * S; e++) {
		float *w = orig.w + e * per;
		for (size_t i = 0; i < (size_t)2 * f * d; i++)
			w[i] = 1.7f * gs * uni(&seed);
		for (size_t i = (size_t)2 * f * d; i < per; i++)
			w[i] = 1.7f * ds * uni(&seed);
		for (int c = 0; c < d; c++)   /* the constant feature's bias falls with the expert index */
			orig.router[(size_t)e * d + c] = c == d - 1 ? 3.0f * (1.0f - (float)e / (2 * S))
								    : 3.0f * gs * uni(&seed);
		if (e % 2 == 1)   /* expert 2s+1 is a noisy copy of 2s (0.8 copy + 0.6 noise), as merged experts are */
			for (size_t i = 0; i < per; i++)
				w[i] = 0.8f * w[i - per] + 0.6f * w[i];
	}
	float *x = xmalloc((size_t)(n + nh) * d * sizeof(float));
	for (int64_t t = 0; t < n + nh; t++)
		for (int c = 0; c < d; c++)
			x[t * d + c] = c == d - 1 ? 1.0f : uni(&seed);
	float *y = xmalloc((size_t)(n + nh) * d * sizeof(float));
	ms_error err = {0};
	if (blk_forward(&orig.cfg, x, n + nh, y, NULL, NULL, &err) != MS_OK) {
		fprintf(stderr, "refitbench: %s\n", err.msg);
		return 1;
	}
	block_init(&mg, S, k, d, f);
	for (int s = 0; s < S; s++) {
		for (size_t i = 0; i < per; i++)
			mg.w[s * per + i] = 0.5f * (orig.w[2 * s * per + i] + orig.w[(2 * s + 1) * per + i]);
		for (int c = 0; c < d; c++)
			mg.router[(size_t)s * d + c] = 0.5f * (orig.router[(size_t)2 * s * d + c] +
							       orig.router[(size_t)(2 * s + 1) * d + c]);
	}
	block_free(&orig);
	float **down = xmalloc((size_t)S * sizeof *down);
	for (int s = 0; s < S; s++)
		down[s] = (float *)mg.ex[s].down;

	double before = 0, after = 0, held0 = 0, held1 = 0;
	rft_routed_error(&mg.cfg, x, n, y, &before, &err);
	rft_routed_error(&mg.cfg, x + n * d, nh, y + n * d, &held0, &err);
	int *sel = xmalloc((size_t)n * k * sizeof(int));
	float *gw = xmalloc((size_t)n * k * sizeof(float));
	int64_t *ns = calloc((size_t)S, sizeof *ns);
	if (!ns || blk_route(&mg.cfg, x, n, sel, gw, &err) != MS_OK) {
		fprintf(stderr, "refitbench: routing failed\n");
		return 1;
	}
	for (int64_t i = 0; i < n * k; i++)
		ns[sel[i]]++;
	printf("tokens per slot:");
	for (int s = 0; s < S; s++)
		printf(" %lld", (long long)ns[s]);
	printf("\n");
	free(sel);
	free(gw);
	free(ns);
	rft_options o = rft_defaults();
	if (argc > 7)
		o.sweeps = atoi(argv[7]);
	const double c0 = cpu_now();
	if (rft_down(&mg.cfg, down, x, n, y, &o, &err) != MS_OK) {
		fprintf(stderr, "refitbench: %s\n", err.msg);
		return 1;
	}
	const double cpu = cpu_now() - c0;
	rft_routed_error(&mg.cfg, x, n, y, &after, &err);
	rft_routed_error(&mg.cfg, x + n * d, nh, y + n * d, &held1, &err);
	uint64_t sum = 0;
	for (int s = 0; s < S; s++)
		for (size_t i = 0; i < (size_t)d * f; i++) {
			uint32_t u;
			memcpy(&u, &down[s][i], sizeof u);
			sum = sum * 1000003u + u;
		}
	printf("sweeps %d: ", o.sweeps);
	printf("S=%d top%d d=%d f=%d n=%lld threads=%d: rft_down %.2f cpu-s; fit error %.6f -> %.9f, held-out %.6f -> "
	       "%.9f, checksum %016llx\n", S, k, d, f, (long long)n, par_threads(), cpu, before, after, held0, held1,
	       (unsigned long long)sum);
	free(down);
	free(x);
	free(y);
	block_free(&mg);
	return 0;
}
