/* Fuzz target: calib_open on arbitrary bytes written as a calibration file, against the golden model (3 MoE
 * blocks, d = 32), opened once. Properties: an accepted file gives every block T > 0 tokens whose rows convert
 * (or are reported as non-finite), and its segment ids load when it has them. */
#include "io/calib.h"

#include "tests/fuzz/fuzz_common.h"

/* run.sh passes the absolute path; the default works from the repository root. */
#ifndef FZ_GOLDEN_MODEL
#define FZ_GOLDEN_MODEL "tests/data/golden/msmoe-mixtral/model"
#endif

static mdl_model *golden(void)
{
	static mdl_model *m;
	ms_error err;
	if (!m && mdl_open(FZ_GOLDEN_MODEL, &m, &err))
		fz_fail("cannot open the golden model", err.msg);
	return m;
}

static void exercise(const calib *c, const mdl_model *m)
{
	ms_error err;
	for (int b = 0; b < m->n_blocks; b++) {
		const int64_t T = calib_tokens(c, b);
		if (T <= 0)
			fz_fail("an accepted calibration block has no tokens", m->blocks[b].label);
		if ((uint64_t)T > FZ_MAX_FLOATS / (uint64_t)m->hidden)
			continue;
		float *x = malloc((size_t)T * (size_t)m->hidden * sizeof *x); /* [T, d] */
		ms_status st = calib_load(c, b, x, &err);
		if (st && st != MS_ERR_NONFINITE)
			fz_fail("an accepted calibration block does not load", err.msg);
		free(x);
	}
	const int64_t T0 = calib_tokens(c, 0);
	if (calib_has_segments(c) && T0 > 0 && (uint64_t)T0 <= FZ_MAX_FLOATS) {
		int32_t *seg = malloc((size_t)T0 * sizeof *seg); /* [T of block 0] */
		if (calib_load_segments(c, seg, T0, &err))
			fz_fail("segment ids announced but not loaded", err.msg);
		free(seg);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fz_init();
	const mdl_model *m = golden();
	const char *in = fz_path("calib.safetensors");
	fz_write(in, data, size);
	calib *c = NULL;
	ms_error err;
	ms_status st = calib_open(in, m, &c, &err);
	if (st) {
		fz_check_error(st, &err, in);
		return 0;
	}
	fz_note(st, &err);
	exercise(c, m);
	calib_close(c);
	return 0;
}
