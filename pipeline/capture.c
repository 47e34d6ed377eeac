#include "pipeline/capture.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/outdir.h"
#include "io/safetensors.h"

typedef struct {
	st_writer *w;
	int d;
} capture_ctx;

/* Each block's input goes to the file as the forward reaches it: the tensors are declared in block order. */
static ms_status write_block(void *ctx, int b, const float *x, int64_t T, ms_error *err)
{
	(void)b;
	const capture_ctx *c = ctx;
	return st_writer_write_f32(c->w, x, (uint64_t)T * (uint64_t)c->d, err);
}

static ms_status declare(const arch_model *a, const tok_set *tok, st_writer *w, ms_error *err)
{
	const mdl_model *m = a->m;
	ms_status st = st_writer_metadata(w, "format", "moescope-calib", err);
	const int64_t shape[2] = {tok->T, a->d};
	char name[sizeof m->blocks[0].prefix + 16];
	for (int b = 0; st == MS_OK && b < m->n_blocks; b++) {
		snprintf(name, sizeof name, "%s.input", m->blocks[b].prefix);
		st = st_writer_declare(w, name, ST_F32, 2, shape, err);
	}
	if (st == MS_OK)
		st = st_writer_declare(w, "token_ids", ST_I32, 1, shape, err);
	if (st == MS_OK)
		st = st_writer_declare(w, "segment_ids", ST_I32, 1, shape, err);
	return st;
}

/* token_ids, then segment_ids, as little-endian I32. */
static ms_status write_ids(const tok_set *tok, st_writer *w, ms_error *err)
{
	unsigned char *bytes = malloc((size_t)tok->T * 4);
	if (!bytes)
		return ms_fail(err, MS_ERR_NOMEM, "capture: out of memory");
	ms_status st = MS_OK;
	for (int pass = 0; st == MS_OK && pass < 2; pass++) {
		for (int i = 0; i < tok->n_seq; i++)
			for (int64_t t = tok->seq_start[i]; t < tok->seq_start[i + 1]; t++) {
				const uint32_t v = (uint32_t)(pass == 0 ? tok->ids[t] : i);
				for (int k = 0; k < 4; k++)
					bytes[4 * t + k] = (unsigned char)(v >> (8 * k));
			}
		st = st_writer_write(w, bytes, (uint64_t)tok->T * 4, err);
	}
	free(bytes);
	return st;
}

/* A private directory beside path for the file being written. */
static ms_status temp_dir(const char *path, char *dir, size_t len, ms_error *err)
{
	const char *slash = strrchr(path, '/');
	const int n = slash ? (int)(slash - path) : 1;
	if (snprintf(dir, len, "%.*s/.moescope-capture-XXXXXX", n ? n : 1, slash ? (n ? path : "/") : ".") >=
	    (int)len)
		return ms_fail(err, MS_ERR_ARG, "%s: path too long", path);
	if (!mkdtemp(dir))
		return ms_fail(err, MS_ERR_IO, "%s: cannot create a temporary directory beside it: %s", path,
			       strerror(errno));
	return MS_OK;
}

ms_status cap_write(const arch_model *a, const tok_set *tok, const char *out_path, fwd_progress_fn progress,
		    void *progress_ctx, ms_error *err)
{
	struct stat sb;
	if (stat(out_path, &sb) == 0 && S_ISDIR(sb.st_mode))
		return ms_fail(err, MS_ERR_ARG, "%s: is a directory; --out names the calibration file", out_path);
	ms_status st = fwd_check(a, tok, err);
	if (st != MS_OK)
		return st;
	char dir[4096], file[4200];
	st = temp_dir(out_path, dir, sizeof dir, err);
	if (st != MS_OK)
		return st;
	snprintf(file, sizeof file, "%s/calib.safetensors", dir);
	capture_ctx c = {.d = a->d};
	st = st_writer_create(dir, "calib", UINT64_MAX / 4, &c.w, err);
	if (st == MS_OK)
		st = declare(a, tok, c.w, err);
	fwd_options o = {.on_block = write_block, .block_ctx = &c, .progress = progress,
			 .progress_ctx = progress_ctx};
	if (st == MS_OK)
		st = fwd_run(a, tok, &o, NULL, err);
	if (st == MS_OK)
		st = write_ids(tok, c.w, err);
	if (st == MS_OK)
		st = st_writer_finish(c.w, err);
	st_writer_free(c.w);
	if (st == MS_OK && rename(file, out_path) != 0)
		st = ms_fail(err, MS_ERR_IO, "%s: cannot rename the finished file into place: %s", out_path,
			     strerror(errno));
	outdir_remove_tree(dir);
	return st;
}
