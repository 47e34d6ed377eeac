/* Page policy for the big buffers of a block: how the float32 copy of a block is faulted in, and how the
 * checkpoint pages it was converted from are let go. Both are hints to the kernel: where one is refused the
 * program works as without it. Only page tables change; no byte of data is touched. */
#ifndef IO_PAGES_H
#define IO_PAGES_H

#include <stddef.h>

#include "io/safetensors.h"

/* Maps the pages under a buffer about to be written in one system call (MADV_POPULATE_WRITE, Linux 5.14) rather
 * than one page fault per 4 KiB: for gigabytes of fresh float32 the faults cost more than the conversion. */
void pages_populate(void *p, size_t bytes);

/* Drops a tensor's pages from this process's view of the memory-mapped checkpoint after it was converted. The
 * mapping is read-only, so nothing is lost: the pages stay in the page cache and a later read maps them again.
 * Without this every block read stays mapped and counts in the resident set until the kernel reclaims it (see
 * bench/bigmodel.sh). Pages shared with a neighbouring tensor are left alone. t may be NULL. */
void pages_release_tensor(const st_tensor *t);

#endif
