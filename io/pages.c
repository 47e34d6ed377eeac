#include "io/pages.h"

#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

/* The whole pages inside [p, p + bytes): *start and *end, or 0 when there is none. */
static int inner_pages(const void *p, size_t bytes, uintptr_t *start, uintptr_t *end)
{
	const long page = sysconf(_SC_PAGESIZE);
	if (!p || page <= 0)
		return 0;
	const uintptr_t mask = (uintptr_t)page - 1;
	*start = ((uintptr_t)p + mask) & ~mask;
	*end = ((uintptr_t)p + bytes) & ~mask;
	return *end > *start;
}

void pages_populate(void *p, size_t bytes)
{
#ifdef MADV_POPULATE_WRITE
	uintptr_t start, end;
	if (inner_pages(p, bytes, &start, &end))
		(void)madvise((void *)start, end - start, MADV_POPULATE_WRITE);
#else
	(void)p, (void)bytes;
	(void)inner_pages;
#endif
}

void pages_release_tensor(const st_tensor *t)
{
	uintptr_t start, end;
	if (t && inner_pages(t->data, (size_t)t->nbytes, &start, &end))
		(void)madvise((void *)start, end - start, MADV_DONTNEED);
}
