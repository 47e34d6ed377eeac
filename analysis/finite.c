#include "analysis/finite.h"

#include <math.h>
#include <string.h>

/* Elements per block of the screening pass: a constant trip count lets -O2 vectorise it. */
#define FINITE_BLOCK 4096

/* 1 when a block of FINITE_BLOCK floats holds a NaN or an infinity (all exponent bits set). */
static int block_has_nonfinite(const float *x)
{
	uint32_t bad = 0;
	for (int i = 0; i < FINITE_BLOCK; i++) {
		uint32_t u;
		memcpy(&u, &x[i], sizeof u);
		bad |= (u & 0x7f800000u) == 0x7f800000u;
	}
	return bad != 0;
}

int64_t fin_first_nonfinite(const float *x, int64_t n)
{
	int64_t i0 = 0;
	while (i0 + FINITE_BLOCK <= n && !block_has_nonfinite(x + i0))
		i0 += FINITE_BLOCK;
	for (int64_t i = i0; i < n; i++)
		if (!isfinite(x[i]))
			return i;
	return -1;
}
