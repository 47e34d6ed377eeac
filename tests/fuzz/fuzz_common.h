/* Shared by the fuzz targets (tests/fuzz/fuzz_*.c). Every parser under test opens a path, so each input is written
 * to a file in a private scratch directory under $TMPDIR, made on the first input and removed at exit. Setup
 * failures (no scratch directory, a disk error) abort: a target that cannot run must not look like a pass.
 *
 * A target also checks properties, not only the absence of crashes: what a parser accepts must satisfy the
 * promises of its header; a property that fails calls fz_fail, which aborts so that libFuzzer keeps the input. */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Tensors and calibration inputs larger than this many floats are not converted (the file still is parsed). */
#define FZ_MAX_FLOATS (1u << 22)

static char fz_dir[4096];

static void fz_fail(const char *what, const char *detail)
{
	fprintf(stderr, "fuzz property failed: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
	abort();
}

static void fz_remove_dir(void)
{
	DIR *d = opendir(fz_dir);
	struct dirent *de;
	char path[4096 + 256];
	while (d && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "%s/%s", fz_dir, de->d_name);
		unlink(path);
	}
	if (d)
		closedir(d);
	rmdir(fz_dir);
}

static void fz_init(void)
{
	if (fz_dir[0])
		return;
	const char *tmp = getenv("TMPDIR");
	snprintf(fz_dir, sizeof fz_dir, "%s/moescope-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(fz_dir))
		fz_fail("cannot make a scratch directory", fz_dir);
	atexit(fz_remove_dir);
}

/* fz_dir/name; the result lives until the next call with the same slot (up to 4 live at once). */
static const char *fz_path(const char *name)
{
	static char buf[4][4096 + 256];
	static int k;
	k = (k + 1) % 4;
	snprintf(buf[k], sizeof buf[k], "%s/%s", fz_dir, name);
	return buf[k];
}

static void fz_write(const char *path, const void *data, size_t size)
{
	FILE *f = fopen(path, "wb");
	if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0)
		fz_fail("cannot write the input file", path);
}

/* With FUZZ_VERBOSE set, says how each input ended: to check that the seeds reach the parsers' success paths. */
static void fz_note(ms_status st, const ms_error *err)
{
	if (getenv("FUZZ_VERBOSE"))
		fprintf(stderr, "  -> %s%s%s\n", ms_status_name(st), st ? ": " : "", st ? err->msg : "");
}

/* A failed call must leave a one-line message (docs/design.md §8) that names the file it was given. */
static void fz_check_error(ms_status st, const ms_error *err, const char *path)
{
	fz_note(st, err);
	if (st == MS_OK || st >= MS_STATUS_COUNT)
		fz_fail("status out of range", ms_status_name(st));
	if (err->code != st)
		fz_fail("err.code differs from the status returned", err->msg);
	if (!strstr(err->msg, path))
		fz_fail("message does not name the file", err->msg);
	/* FUZZ_LAX_MESSAGES=1 looks past this class of finding, to search for crashes beyond it */
	if (strpbrk(err->msg, "\n\r") && !getenv("FUZZ_LAX_MESSAGES"))
		fz_fail("message is not one line", err->msg);
}

#endif
