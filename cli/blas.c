/* Pinning OpenBLAS's kernels, so that the same inputs give the same bits on every x86-64 machine.
 *
 * moescope owns the partition of its work (analysis/par.h) and runs BLAS on one thread inside each task, so the
 * thread count cannot change a result. What still could is the kernel: a DYNAMIC_ARCH OpenBLAS (Debian's)
 * picks its GEMM and GEMV kernels by CPU at load time, and kernels of different widths sum in different orders
 * (an AVX-512 SkylakeX sgemm and an AVX2 Haswell sgemm give different last bits for the same product; on the
 * sample, `analyze --similarity all` differs between the Haswell, Sandybridge, Nehalem and Prescott kernels).
 * So moescope asks for one kernel set everywhere it can run: Haswell's (AVX2 and FMA, which every Intel CPU since
 * 2013 and every AMD CPU since Zen has; OpenBLAS's Zen kernels are Haswell's and give the same bits).
 *
 * OpenBLAS reads OPENBLAS_CORETYPE in its constructor, before main(), so the only way to choose is to set it and
 * start again: main() calls cli_pin_blas first, which re-executes the program once with the variable set. glibc's
 * libm picks its FMA variants on every such CPU too, and moescope's own code is built for baseline x86-64. */
#include "cli/blas.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PIN_CORE "Haswell"

static int cpu_can_pin(void)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
	return 0;
#endif
}

static int native_requested(void)
{
	const char *v = getenv("MOESCOPE_BLAS");
	return v && strcmp(v, "native") == 0;
}

void cli_pin_blas(char **argv)
{
	if (native_requested() || !cpu_can_pin())
		return;
	const char *now = getenv("OPENBLAS_CORETYPE");
	if (now && strcmp(now, PIN_CORE) == 0)
		return; /* already pinned (or this is the second start) */
	if (setenv("OPENBLAS_CORETYPE", PIN_CORE, 1) != 0)
		return;
	execv("/proc/self/exe", argv);
	/* No /proc or no exec: go on with the kernels OpenBLAS chose; --version says so. */
	if (now)
		(void)setenv("OPENBLAS_CORETYPE", now, 1);
	else
		(void)unsetenv("OPENBLAS_CORETYPE");
}

const char *cli_blas_state(void)
{
	if (native_requested())
		return "chosen by OpenBLAS (MOESCOPE_BLAS=native: results may differ in the last bits between CPUs)";
	if (!cpu_can_pin())
		return "chosen by OpenBLAS (this CPU lacks AVX2 or FMA: results may differ in the last bits from "
		       "pinned machines)";
	if (strcmp(openblas_get_corename(), PIN_CORE) == 0)
		return "pinned";
	return "not pinned (OpenBLAS ignored OPENBLAS_CORETYPE: a build for one CPU?)";
}

void cli_print_version(FILE *out)
{
	fprintf(out, "moescope %s\n", MOESCOPE_VERSION);
	fprintf(out, "blas: %s\n", openblas_get_config());
	fprintf(out, "kernels: %s, %s\n", openblas_get_corename(), cli_blas_state());
}
