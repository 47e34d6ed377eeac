/* Fuzz target: plan_read_csv on arbitrary bytes, for a model of three blocks "0", "1", "2" of 8 experts (the
 * golden case's shape, so its plans are valid seeds). Properties: a refused file gets a plan status and a message
 * naming it with a line; an accepted plan is valid, and writing then reading it gives the same plan. */
#include "io/plan.h"

#include <math.h>

#include "tests/fuzz/fuzz_common.h"

static const char *const labels[] = { "0", "1", "2" };

static int same(double a, double b)
{
	return (isnan(a) && isnan(b)) || fabs(a - b) <= 1e-10 * fmax(1.0, fabs(b));
}

/* Groups and dominants exactly; numbers as written (10 decimals, 8 for stable ranks). */
static int plans_equal(const plan *a, const plan *b)
{
	const int n = a->n_blocks * a->n_experts;
	if (a->n_blocks != b->n_blocks || a->n_experts != b->n_experts)
		return 0;
	for (int i = 0; i < n; i++) {
		if (a->group[i] != b->group[i] || a->dominant[i] != b->dominant[i] || !same(a->frequency[i], b->frequency[i]) ||
		    !same(a->similarity[i], b->similarity[i]))
			return 0;
		for (int m = 0; m < 3; m++)
			if (!(isnan(a->stable_rank[3 * i + m]) && isnan(b->stable_rank[3 * i + m])) &&
			    !(fabs(a->stable_rank[3 * i + m] - b->stable_rank[3 * i + m]) <=
			      1e-8 * fmax(1.0, fabs(b->stable_rank[3 * i + m]))))
				return 0;
	}
	return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fz_init();
	const char *in = fz_path("plan.csv");
	fz_write(in, data, size);
	plan p, q;
	ms_error err;
	ms_status st = plan_read_csv(in, 3, 8, labels, &p, &err);
	if (st) {
		fz_check_error(st, &err, in);
		if (p.group || p.n_blocks)
			fz_fail("a refused plan is not left empty", err.msg);
		if (st != MS_ERR_IO && st != MS_ERR_PLAN_SYNTAX && !strstr(err.msg, ": line "))
			fz_fail("a plan error without a line", err.msg);
		return 0;
	}
	fz_note(st, &err);
	if (plan_validate(&p, &err))
		fz_fail("an imported plan is invalid", err.msg);
	const char *out = fz_path("written.csv");
	if (plan_write_csv(out, &p, &err))
		fz_fail("an imported plan cannot be written", err.msg);
	if (plan_read_csv(out, 3, 8, labels, &q, &err))
		fz_fail("a written plan does not read back", err.msg);
	if (!plans_equal(&p, &q))
		fz_fail("export then import is not the identity", NULL);
	plan_free(&p);
	plan_free(&q);
	return 0;
}
