/* Fuzz target: st_open on arbitrary bytes written as a .safetensors file, then every float tensor of at most
 * FZ_MAX_FLOATS elements converted whole and by its last row, and every quantized pair (an F8_E4M3 X.weight with
 * X.weight_scale_inv, in blocks of 1 x 1, 2 x 3 and 128 x 128; U8 X_blocks with X_scales as MXFP4) bound and
 * converted (io/quant.h). Properties: what st_open accepts keeps the reader's promises (each tensor's bytes match
 * shape and dtype and lie inside the file; st_find finds it by name); a pair either fails to bind with a message
 * or converts, NaN and infinity being the only errors left. */
#include "io/quant.h"
#include "io/safetensors.h"

#include "tests/fuzz/fuzz_common.h"

static void check_tensor(const st_file *f, const st_tensor *t, size_t file_size)
{
	if (!t || !t->name)
		fz_fail("st_get returned no tensor", NULL);
	const st_tensor *found = st_find(f, t->name);
	if (!found || strcmp(found->name, t->name))
		fz_fail("st_find misses a listed tensor", t->name);
	if ((unsigned)t->dtype >= ST_DTYPE_COUNT || t->ndim < 0 || t->ndim > ST_MAX_DIMS)
		fz_fail("dtype or rank out of range", t->name);
	uint64_t numel = 1;
	for (int k = 0; k < t->ndim; k++)
		numel *= (uint64_t)t->shape[k];
	if (numel != t->numel || t->nbytes != t->numel * st_dtype_size(t->dtype))
		fz_fail("numel or nbytes disagree with shape and dtype", t->name);
	if (t->file_offset > file_size || t->nbytes > file_size - t->file_offset)
		fz_fail("tensor data outside the file", t->name);
}

static void convert(const st_tensor *t)
{
	if (!st_dtype_is_float(t->dtype) || t->numel > FZ_MAX_FLOATS)
		return;
	float *x = malloc((size_t)(t->numel ? t->numel : 1) * sizeof *x); /* [numel] */
	if (!x)
		fz_fail("out of memory", t->name);
	ms_error err;
	ms_status st = st_read_f32(t, x, &err);
	if (st && st != MS_ERR_NONFINITE)
		fz_fail("a float tensor of a valid file does not convert", err.msg);
	if (t->ndim >= 1 && t->shape[0] > 0) {
		st = st_read_rows_f32(t, t->shape[0] - 1, 1, x, &err);
		if (st && st != MS_ERR_NONFINITE)
			fz_fail("the last row of a float tensor does not convert", err.msg);
	}
	free(x);
}

static void read_quantized(const qt_matrix *q)
{
	if (q->rows <= 0 || (uint64_t)q->rows * (uint64_t)q->cols > FZ_MAX_FLOATS)
		return;
	float *x = malloc((size_t)(q->rows * q->cols) * sizeof *x); /* [rows, cols] */
	if (!x)
		fz_fail("out of memory", q->codes->name);
	ms_error err;
	ms_status st = qt_read_f32(q, x, &err);
	if (st && st != MS_ERR_NONFINITE)
		fz_fail("a bound quantized matrix does not convert", err.msg);
	st = qt_read_rows_f32(q, q->rows - 1, 1, x, &err);
	if (st && st != MS_ERR_NONFINITE)
		fz_fail("the last row of a quantized matrix does not convert", err.msg);
	free(x);
}

static void quantized(const st_file *f, const st_tensor *t)
{
	static const int blocks[][2] = {{1, 1}, {2, 3}, {128, 128}};
	char name[600];
	qt_matrix q;
	ms_error err;
	size_t n = strlen(t->name);
	if (t->dtype == ST_F8_E4M3 && qt_fp8_scale_name(t->name, name, sizeof name) == 0) {
		for (size_t i = 0; i < sizeof blocks / sizeof blocks[0]; i++) {
			ms_status st = qt_bind_fp8(t, st_find(f, name), blocks[i][0], blocks[i][1], &q, &err);
			if (st)
				fz_check_error(st, &err, t->path);
			else
				read_quantized(&q);
		}
	}
	if (n > 7 && n < 500 && strcmp(t->name + n - 7, "_blocks") == 0) {
		snprintf(name, sizeof name, "%.*s_scales", (int)(n - 7), t->name);
		ms_status st = qt_bind_mxfp4(t, st_find(f, name), &q, &err);
		if (st)
			fz_check_error(st, &err, t->path);
		else
			read_quantized(&q);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fz_init();
	const char *in = fz_path("input.safetensors");
	fz_write(in, data, size);
	st_file *f = NULL;
	ms_error err;
	ms_status st = st_open(in, &f, &err);
	if (st) {
		fz_check_error(st, &err, in);
		return 0;
	}
	fz_note(st, &err);
	for (size_t i = 0; i < st_count(f); i++) {
		check_tensor(f, st_get(f, i), size);
		convert(st_get(f, i));
		quantized(f, st_get(f, i));
	}
	(void)st_metadata(f, "format");
	st_close(f);
	return 0;
}
