#include "io/file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

ms_status file_read_all(const char *path, char **data, size_t *len, ms_error *err)
{
	*data = NULL;
	*len = 0;
	struct stat sb;
	if (stat(path, &sb) != 0)
		return ms_fail(err, MS_ERR_IO, "%s: %s", path, strerror(errno));
	if (S_ISDIR(sb.st_mode))
		return ms_fail(err, MS_ERR_IO, "%s: is a directory, not a file", path);
	FILE *f = fopen(path, "rb");
	if (!f)
		return ms_fail(err, MS_ERR_IO, "%s: %s", path, strerror(errno));
	size_t cap = 1 << 16, n = 0, got;
	char *buf = malloc(cap + 1);
	while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
		n += got;
		if (n == cap) {
			char *bigger = cap <= ((size_t)-1 - 1) / 2 ? realloc(buf, 2 * cap + 1) : NULL;
			if (!bigger) {
				free(buf);
				buf = NULL;
				break;
			}
			buf = bigger;
			cap *= 2;
		}
	}
	const int bad = ferror(f);
	fclose(f);
	if (!buf)
		return ms_fail(err, MS_ERR_NOMEM, "%s: out of memory reading it", path);
	if (bad) {
		free(buf);
		return ms_fail(err, MS_ERR_IO, "%s: read error", path);
	}
	buf[n] = '\0';
	*data = buf;
	*len = n;
	return MS_OK;
}
