/* The finiteness screen every kernel that refuses NaN or infinity uses (merged weights, compressed matrices,
 * fitted router rows). */
#ifndef FIN_FINITE_H
#define FIN_FINITE_H

#include <stdint.h>

/* Index of the first NaN or infinity in x [n], or -1. It tests blocks of floats by their exponent bits without a
 * branch per element, which the compiler vectorises: an isfinite loop compiles to two scalar compares per float
 * and is slow on a whole block of experts. */
int64_t fin_first_nonfinite(const float *x, int64_t n);

#endif
