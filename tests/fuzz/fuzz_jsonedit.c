/* Fuzz target: io/jsonedit on config.json text, and io/factors' marks on what it accepts. Properties: an accepted
 * document's text is the input; setting an expert count changes only the bytes of its value; adding a member and
 * removing it again gives the text back; marking a config as factored and unmarking it gives the text back. */
#include "io/factors.h"
#include "io/file.h"
#include "io/jsonedit.h"

#include "tests/fuzz/fuzz_common.h"

static char *snapshot(const jedit *d, size_t *len)
{
	const char *t = jedit_text(d, len);
	char *copy = malloc(*len + 1);
	if (!copy)
		fz_fail("out of memory", NULL);
	memcpy(copy, t, *len + 1);
	return copy;
}

static void expect_text(const jedit *d, const char *want, size_t want_len, const char *what)
{
	size_t len;
	const char *t = jedit_text(d, &len);
	if (len != want_len || memcmp(t, want, len) != 0)
		fz_fail("the text is not what it should be", what);
}

/* Sets the member at path (when present) to 7: everything before and after its value must stay. */
static void set_keeps_the_rest(jedit *d, const char *const *path, int n)
{
	size_t a, b, len, len2;
	if (!jedit_find(d, path, n, &a, &b))
		return;
	char *before = snapshot(d, &len);
	ms_error err;
	if (jedit_set(d, path, n, "7", &err) != MS_OK)
		fz_fail("setting a member that exists failed", err.msg);
	const char *t = jedit_text(d, &len2);
	if (len2 != len - (b - a) + 1 || memcmp(t, before, a) != 0 || t[a] != '7' ||
	    memcmp(t + a + 1, before + b, len - b) != 0)
		fz_fail("a set changed bytes outside the value", path[n - 1]);
	size_t a2, b2;
	if (!jedit_find(d, path, n, &a2, &b2) || a2 != a || b2 != a + 1)
		fz_fail("the member set is not found where it was written", path[n - 1]);
	free(before);
}

static void add_remove_round_trip(jedit *d)
{
	size_t len;
	char *before = snapshot(d, &len);
	const char *key[] = {"moescope_fuzz_added"};
	ms_error err;
	ms_status st = jedit_add(d, NULL, 0, key[0], "[1, {\"a\": \"\\u00e9\"}]", &err);
	if (st == MS_OK) {
		size_t a, b;
		if (!jedit_find(d, key, 1, &a, &b))
			fz_fail("an added member is not found", NULL);
		if (jedit_remove(d, key, 1, &err) != MS_OK)
			fz_fail("an added member cannot be removed", err.msg);
		expect_text(d, before, len, "add then remove");
	} else if (st != MS_ERR_ARG) {   /* the key may exist already */
		fz_fail("adding a member failed", err.msg);
	}
	free(before);
}

static void factors_round_trip(jedit *d)
{
	size_t len, a, b;
	const char *type[] = {"model_type"};
	if (!jedit_find(d, type, 1, &a, &b) || jedit_text(d, &len)[a] != '"')
		return;
	char *before = snapshot(d, &len);
	ms_error err;
	if (fac_mark_config(d, "energy", 0.5, &err) == MS_OK) {
		if (fac_unmark_config(d, &err) != MS_OK)
			fz_fail("a marked config cannot be unmarked", err.msg);
		expect_text(d, before, len, "mark then unmark");
	}
	free(before);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fz_init();
	const char *path = fz_path("config.json");
	fz_write(path, data, size);
	char *text;
	size_t len;
	ms_error err;
	if (file_read_all(path, &text, &len, &err) != MS_OK || len != size)
		fz_fail("cannot read the input back", path);
	jedit *d = NULL;
	ms_status st = jedit_parse(path, text, len, &d, &err);
	free(text);
	if (st != MS_OK) {
		fz_check_error(st, &err, path);
		if (d)
			fz_fail("a refused document was returned", NULL);
		return 0;
	}
	fz_note(st, &err);
	expect_text(d, (const char *)data, size, "parse");
	static const char *const experts[] = {"num_local_experts"}, *nested[] = {"text_config", "num_experts"};
	add_remove_round_trip(d);
	factors_round_trip(d);
	set_keeps_the_rest(d, experts, 1);
	set_keeps_the_rest(d, nested, 2);
	jedit_free(d);
	return 0;
}
