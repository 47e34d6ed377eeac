/* Y = c W^T (post W X^T), the product block Lanczos spends its time in (analysis/stable_rank.c), as one pass over
 * W: four rows at a time, the dot products of the rows with every vector of the block, then, while those rows are
 * still in cache, their contributions to every vector of the result.
 *
 * Why a kernel of our own: the pass is bound by arithmetic while W fits in the last-level cache, and two sgemv
 * per vector per tile of rows read every element of W twice per vector, with one multiply-add per load. Here each
 * load of W serves every vector of the block (up to WTW_MAX_Q), and the second read of four rows comes from L1/L2.
 *
 * The same bits everywhere: the order of every sum is fixed by the definition below, not by the instruction set.
 * The AVX2+FMA path and the portable path (plain C, fmaf) perform the same fused multiply-adds on the same operands
 * in the same order, so they agree bit for bit (tests/test_wtw.c checks it); the portable one is only slower.
 *
 * Definition, for row i of W and vector x of the block (n columns, n8 = n rounded down to a multiple of 8), all in
 * float:
 *   lane l (0..7) = fma over k = l, l + 8, ..., < n8 of w[i][k] * x[k], in increasing k, starting from 0;
 *   s = lane 0 + lane 1 + ... + lane 7, added left to right; then s = fma(w[i][k], x[k], s) for the tail
 *   k = n8..n-1 in order; ct_i = c * (post * s).
 * Row y of Y starts at 0 and then y[k] = fma(ct_i, w[i][k], y[k]) for i = 0..m-1 in order. How the kernel groups
 * rows (four at a time) changes neither sum, and neither does where the arrays sit in memory, though W and X on
 * 64-byte boundaries with n a multiple of 16 run fastest. */
#ifndef WTW_WTW_H
#define WTW_WTW_H

#include <stddef.h>

/* Most vectors a block may hold. */
#define WTW_MAX_Q 2

typedef enum { WTW_AUTO, WTW_PORTABLE, WTW_BLAS } wtw_path;

/* Y [q, n] = c W^T (post W X^T) for w [m, n] row-major and the q rows of X [q, n], 1 <= q <= WTW_MAX_Q. WTW_AUTO
 * takes the AVX2+FMA path, by the definition above, where the processor has it. Elsewhere it takes WTW_BLAS:
 * OpenBLAS's sgemv on tiles of 32 rows, the product the kernel replaced, whose sums follow OpenBLAS's kernels.
 * Such a processor runs OpenBLAS unpinned anyway, so its last bits differ from an AVX2 machine's already (README),
 * and the portable path there would call a library fmaf per multiply-add, 60-80 times slower (0.6 against 36-50
 * GFLOP/s for the vector path, measured here). WTW_PORTABLE, the definition in plain C, is for tests. */
void wtw_apply(const float *w, int m, int n, const float *X, int q, float post, float c, float *Y, wtw_path path);

/* "avx2+fma" or "sgemv": the path WTW_AUTO takes on this processor. */
const char *wtw_auto_path(void);

/* Memory for the kernel's operands (free() releases it): on a 64-byte boundary, so that its 32-byte loads never
 * straddle two cache lines when rows are a multiple of 16 floats. A W 16 bytes off the boundary made the pass
 * about a quarter slower (0.41 against 0.32 ms on 1024 x 2048, measured). NULL when out of memory. */
void *wtw_alloc(size_t bytes);

#endif
