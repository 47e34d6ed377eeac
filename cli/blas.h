/* One OpenBLAS kernel set on every machine (cli/blas.c explains why and how). */
#ifndef CLI_BLAS_H
#define CLI_BLAS_H

#include <stdio.h>

#define MOESCOPE_VERSION "0.4.0"

/* Called first in main(): on an x86-64 CPU with AVX2 and FMA, unless MOESCOPE_BLAS=native, re-executes the
 * program with OPENBLAS_CORETYPE=Haswell when it is not set so. Returns only when no restart was needed or the
 * restart failed (then OpenBLAS's own choice stands). */
void cli_pin_blas(char **argv);

/* "pinned", or why not, for --version. */
const char *cli_blas_state(void);

/* `moescope --version`: the version, OpenBLAS's build and the kernels in use. */
void cli_print_version(FILE *out);

#endif
