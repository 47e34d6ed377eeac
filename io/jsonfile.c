#include "io/jsonfile.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "io/durable.h"

static ms_status write_text(FILE *f, const char *text, const char *path, ms_error *err)
{
	size_t n = strlen(text);
	if (fwrite(text, 1, n, f) != n || fputc('\n', f) == EOF || fflush(f) != 0)
		return ms_fail(err, MS_ERR_IO, "%s: write failed: %s", path, strerror(errno));
	return MS_OK;
}

/* text [n] into PATH.tmp, synced, renamed over PATH. */
static ms_status write_durably(const char *path, const char *text, size_t n, int newline, ms_error *err)
{
	size_t len = strlen(path) + 5;
	char *tmp = malloc(len);
	if (!tmp)
		return ms_fail(err, MS_ERR_NOMEM, "%s: out of memory", path);
	snprintf(tmp, len, "%s.tmp", path);
	ms_status st = MS_OK;
	FILE *f = fopen(tmp, "w");
	if (!f)
		st = ms_fail(err, MS_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
	if (st == MS_OK && (fwrite(text, 1, n, f) != n || (newline && fputc('\n', f) == EOF) || fflush(f) != 0))
		st = ms_fail(err, MS_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
	if (f && st != MS_OK)
		fclose(f);
	else if (f)
		st = dur_fclose(f, tmp, err);
	if (st == MS_OK)
		st = dur_rename(tmp, path, NULL, err);
	if (st != MS_OK)
		remove(tmp);
	free(tmp);
	return st;
}

ms_status jsonf_write(const char *path, const void *json, ms_error *err)
{
	char *text = cJSON_Print((const cJSON *)json);
	if (!text)
		return ms_fail(err, MS_ERR_NOMEM, "%s: out of memory formatting JSON", path);
	ms_status st = strcmp(path, "-") == 0 ? write_text(stdout, text, "standard output", err)
					      : write_durably(path, text, strlen(text), 1, err);
	free(text);
	return st;
}

ms_status jsonf_write_bytes(const char *path, const char *text, size_t len, ms_error *err)
{
	return write_durably(path, text, len, 0, err);
}

ms_status jsonf_write_text(const char *path, const char *text, ms_error *err)
{
	return strcmp(path, "-") == 0 ? write_text(stdout, text, "standard output", err)
				      : write_durably(path, text, strlen(text), 1, err);
}
