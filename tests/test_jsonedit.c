/* io/jsonedit: edits keep every byte they do not address (expected outputs written out by hand), numbers keep
 * their spelling, keys match by decoded text, nested members are addressed by path, duplicate keys and every
 * departure from RFC 8259 are refused with a line and column; cJSON (an independent parser) reads the edited
 * documents as the originals with only the edited values changed. Also io/factors: marking a config as factored
 * and unmarking it gives the original bytes back. */
#include "io/factors.h"
#include "io/jsonedit.h"
#include "io/model.h"
#include "tests/test.h"

#include <cjson/cJSON.h>

static jedit *parse_ok(const char *text)
{
	jedit *d = NULL;
	ms_error err = {0};
	ms_status st = jedit_parse("t.json", text, strlen(text), &d, &err);
	CHECK(st == MS_OK, "%s", err.msg);
	return d;
}

static int same_text(const jedit *d, const char *want)
{
	size_t len;
	const char *t = jedit_text(d, &len);
	if (len == strlen(want) && memcmp(t, want, len) == 0)
		return 1;
	fprintf(stderr, "  got:  [%.*s]\n  want: [%s]\n", (int)len, t, want);
	return 0;
}

static void set1(jedit *d, const char *key, const char *value)
{
	const char *path[] = {key};
	ms_error err = {0};
	CHECK(jedit_set(d, path, 1, value, &err) == MS_OK, "%s", err.msg);
}

static void test_numbers_keep_their_spelling(void)
{
	const char *in = "{\"rope_theta\": 10000.0, \"a\": 1e4, \"b\": -0.0, \"rms_norm_eps\": 1E-06, \"c\": 1.5e+3,\n"
			 " \"num_local_experts\": 8, \"d\": [0, -12.50, 3E+0], \"num_experts_per_tok\": 2}\n";
	const char *want = "{\"rope_theta\": 10000.0, \"a\": 1e4, \"b\": -0.0, \"rms_norm_eps\": 1E-06, \"c\": 1.5e+3,\n"
			   " \"num_local_experts\": 5, \"d\": [0, -12.50, 3E+0], \"num_experts_per_tok\": 2}\n";
	jedit *d = parse_ok(in);
	if (!d)
		return;
	set1(d, "num_local_experts", "5");
	EXPECT(same_text(d, want));
	jedit_free(d);
}

static void test_whitespace_and_line_ends_kept(void)
{
	const char *in = "{\r\n\t\"x\" :\t1 ,\r\n\t\"num_experts\"  :  64\r\n}\r\n";
	const char *want = "{\r\n\t\"x\" :\t1 ,\r\n\t\"num_experts\"  :  60\r\n}\r\n";
	jedit *d = parse_ok(in);
	if (!d)
		return;
	set1(d, "num_experts", "60");
	EXPECT(same_text(d, want));
	jedit_free(d);
}

static void test_keys_match_decoded(void)
{
	/* the key spelled with an escape is the same key; string values with escapes stay as written */
	const char *in = "{\"name\": \"caf\\u00e9 \\ud83d\\ude00 \\\"q\\\"\", \"n_routed\\u005fexperts\": 64, "
			 "\"\\u00e9\": 1}";
	const char *want = "{\"name\": \"caf\\u00e9 \\ud83d\\ude00 \\\"q\\\"\", \"n_routed\\u005fexperts\": 16, "
			   "\"\\u00e9\": 1}";
	jedit *d = parse_ok(in);
	if (!d)
		return;
	set1(d, "n_routed_experts", "16");
	EXPECT(same_text(d, want));
	const char *utf8_key[] = {"\xc3\xa9"};   /* U+00E9 as UTF-8 finds the member written "\u00e9" */
	size_t a, b;
	EXPECT(jedit_find(d, utf8_key, 1, &a, &b) && b - a == 1);
	jedit_free(d);
}

static void test_nested_path(void)
{
	const char *in = "{\"num_experts\": 2,\n \"text_config\": {\"num_experts\": 8, \"rope_theta\": 1e6},\n"
			 " \"vision_config\": {\"num_experts\": 8}}";
	const char *want = "{\"num_experts\": 2,\n \"text_config\": {\"num_experts\": 3, \"rope_theta\": 1e6},\n"
			   " \"vision_config\": {\"num_experts\": 8}}";
	jedit *d = parse_ok(in);
	if (!d)
		return;
	const char *path[] = {"text_config", "num_experts"};
	ms_error err = {0};
	CHECK(jedit_set(d, path, 2, "3", &err) == MS_OK, "%s", err.msg);
	EXPECT(same_text(d, want));
	const char *through_number[] = {"num_experts", "x"};
	EXPECT(jedit_set(d, through_number, 2, "1", &err) == MS_ERR_ARG);
	EXPECT(strstr(err.msg, "num_experts.x") != NULL);
	EXPECT(same_text(d, want));
	jedit_free(d);
}

static void test_add_and_remove_are_inverse(void)
{
	const char *in = "{\n  \"model_type\": \"mixtral\",\n  \"inner\": {\"a\":1},\n  \"empty\": {}\n}\n";
	jedit *d = parse_ok(in);
	if (!d)
		return;
	ms_error err = {0};
	CHECK(jedit_add(d, NULL, 0, "extra", "{\"k\": [1, 2]}", &err) == MS_OK, "%s", err.msg);
	EXPECT(same_text(d, "{\n  \"model_type\": \"mixtral\",\n  \"inner\": {\"a\":1},\n  \"empty\": {},\n"
			    "  \"extra\": {\"k\": [1, 2]}\n}\n"));
	const char *inner[] = {"inner"}, *empty[] = {"empty"};
	CHECK(jedit_add(d, inner, 1, "b", "2.0", &err) == MS_OK, "%s", err.msg);
	CHECK(jedit_add(d, empty, 1, "z", "null", &err) == MS_OK, "%s", err.msg);
	EXPECT(same_text(d, "{\n  \"model_type\": \"mixtral\",\n  \"inner\": {\"a\":1,\"b\":2.0},\n"
			    "  \"empty\": {\"z\": null},\n  \"extra\": {\"k\": [1, 2]}\n}\n"));
	EXPECT(jedit_add(d, NULL, 0, "extra", "1", &err) == MS_ERR_ARG);   /* taken */
	const char *extra[] = {"extra"}, *ib[] = {"inner", "b"}, *ez[] = {"empty", "z"}, *mt[] = {"model_type"};
	CHECK(jedit_remove(d, extra, 1, &err) == MS_OK, "%s", err.msg);
	CHECK(jedit_remove(d, ib, 2, &err) == MS_OK, "%s", err.msg);
	CHECK(jedit_remove(d, ez, 2, &err) == MS_OK, "%s", err.msg);
	EXPECT(same_text(d, in));
	/* the first member goes with the space up to the next key; the only member leaves the braces */
	CHECK(jedit_remove(d, mt, 1, &err) == MS_OK, "%s", err.msg);
	EXPECT(same_text(d, "{\n  \"inner\": {\"a\":1},\n  \"empty\": {}\n}\n"));
	const char *ia[] = {"inner", "a"};
	CHECK(jedit_remove(d, ia, 2, &err) == MS_OK, "%s", err.msg);
	EXPECT(same_text(d, "{\n  \"inner\": {},\n  \"empty\": {}\n}\n"));
	EXPECT(jedit_remove(d, mt, 1, &err) == MS_ERR_ARG);
	jedit_free(d);
}

static void test_rename_keeps_place(void)
{
	jedit *d = parse_ok("{\"a\": 1, \"auto_map\": {\"AutoConfig\": \"x.Y\"}, \"b\": 2}");
	if (!d)
		return;
	const char *am[] = {"auto_map"}, *b[] = {"b"};
	ms_error err = {0};
	CHECK(jedit_rename(d, am, 1, "parked", &err) == MS_OK, "%s", err.msg);
	EXPECT(same_text(d, "{\"a\": 1, \"parked\": {\"AutoConfig\": \"x.Y\"}, \"b\": 2}"));
	EXPECT(jedit_rename(d, b, 1, "a", &err) == MS_ERR_ARG);   /* would duplicate */
	jedit_free(d);
}

/* A bad value is refused and the document stays as it was. */
static void test_set_checks_the_value(void)
{
	const char *in = "{\"num_experts\": 8}";
	jedit *d = parse_ok(in);
	if (!d)
		return;
	const char *path[] = {"num_experts"}, *missing[] = {"nope"};
	ms_error err = {0};
	EXPECT(jedit_set(d, path, 1, "08", &err) == MS_ERR_CFG_JSON);
	EXPECT(jedit_set(d, path, 1, "1, \"x\": 2", &err) == MS_ERR_CFG_JSON);
	EXPECT(jedit_set(d, missing, 1, "1", &err) == MS_ERR_ARG);
	EXPECT(strstr(err.msg, "t.json") && strstr(err.msg, "nope"));
	EXPECT(same_text(d, in));
	jedit_free(d);
}

static void test_duplicate_keys_refused(void)
{
	static const struct {
		const char *text, *where;
	} cases[] = {
		{"{\"a\": 1,\n \"a\": 2}", "line 2 column 2: key 'a' appears twice in one object (first at line 1 column 2)"},
		{"{\"num_experts\": 1, \"x\": {}, \"num\\u005fexperts\": 2}", "key 'num_experts' appears twice"},
		{"{\"o\": {\"k\": 1, \"k\": 1}}", "key 'k' appears twice"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		jedit *d = NULL;
		ms_error err = {0};
		ms_status st = jedit_parse("dup.json", cases[i].text, strlen(cases[i].text), &d, &err);
		CHECK(st == MS_ERR_CFG_JSON && !d, "case %zu: %s", i, err.msg);
		CHECK(strstr(err.msg, cases[i].where) && strncmp(err.msg, "dup.json: ", 10) == 0, "case %zu: %s", i,
		      err.msg);
	}
	/* the same key in different objects is fine */
	jedit *d = parse_ok("{\"k\": {\"k\": 1}, \"o\": {\"k\": 2}}");
	jedit_free(d);
}

static void test_invalid_documents(void)
{
	static const struct {
		const char *text, *what;
	} cases[] = {
		{"", "line 1 column 1: empty document"},
		{"[1]", "not a JSON object"},
		{"{\"a\": 1,}", "line 1 column 9: expected a key"},
		{"{\"a\": NaN}", "expected a JSON value"},
		{"{\"a\": Infinity}", "expected a JSON value"},
		{"{\"a\": 01}", "leading zero"},
		{"{\"a\": 1.}", "no digit after the point"},
		{"{\"a\": .5}", "expected a JSON value"},
		{"{\"a\": +1}", "expected a JSON value"},
		{"{\"a\": 1e}", "no digit in the exponent"},
		{"{\"a\": -}", "invalid number"},
		{"{\"a\": \"x\ty\"}", "control character"},
		{"{\"a\": \"\\x\"}", "invalid escape"},
		{"{\"a\": \"\\u12\"}", "invalid escape"},
		{"{\"a\": \"open}", "string not closed"},
		{"{\"a\": 1} x", "line 1 column 10: text after the JSON value"},
		{"{\"a\" 1}", "expected ':'"},
		{"{\"a\": [1 2]}", "expected ',' or ']'"},
		{"{\"a\": 1\n \"b\": 2}", "line 2 column 2: expected ',' or '}'"},
		{"\xef\xbb\xbf{}", "not a JSON object"},
		{"{\"a\": tru}", "expected a JSON value"},
		{"{a: 1}", "expected a key"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		jedit *d = NULL;
		ms_error err = {0};
		ms_status st = jedit_parse("bad.json", cases[i].text, strlen(cases[i].text), &d, &err);
		CHECK(st == MS_ERR_CFG_JSON && !d, "case %zu accepted", i);
		CHECK(strstr(err.msg, cases[i].what) && strncmp(err.msg, "bad.json: line ", 15) == 0, "case %zu: %s", i,
		      err.msg);
	}
}

static void test_depth_is_bounded(void)
{
	char buf[2 * 400 + 8];
	for (int depth = 200; depth <= 400; depth += 200) {
		size_t k = 0;
		buf[k++] = '{';
		buf[k++] = '"';
		buf[k++] = 'a';
		buf[k++] = '"';
		buf[k++] = ':';
		for (int i = 0; i < depth; i++)
			buf[k++] = '[';
		for (int i = 0; i < depth; i++)
			buf[k++] = ']';
		buf[k++] = '}';
		jedit *d = NULL;
		ms_error err = {0};
		ms_status st = jedit_parse("deep.json", buf, k, &d, &err);
		if (depth == 200)
			CHECK(st == MS_OK, "%s", err.msg);
		else
			CHECK(st == MS_ERR_CFG_JSON && strstr(err.msg, "nested deeper"), "%s", err.msg);
		jedit_free(d);
	}
}

/* cJSON reads the edited document as the original with the edited values changed, and nothing else. */
static void test_cjson_agrees(void)
{
	const char *in = "{\"model_type\": \"qwen2_moe\", \"num_experts\": 60, \"num_experts_per_tok\": 4,\n"
			 "  \"rope_scaling\": null, \"rope_theta\": 1000000.0, \"layer_types\": [\"full_attention\"],\n"
			 "  \"text\": \"\\u00e9\\n\", \"nested\": {\"num_experts\": 60, \"deep\": [{\"x\": -1.25e-3}]}}";
	jedit *d = parse_ok(in);
	if (!d)
		return;
	set1(d, "num_experts", "12");
	const char *nested[] = {"nested", "num_experts"};
	ms_error err = {0};
	CHECK(jedit_set(d, nested, 2, "{\"v\": true}", &err) == MS_OK, "%s", err.msg);
	size_t len;
	const char *t = jedit_text(d, &len);
	cJSON *a = cJSON_Parse(in), *b = cJSON_ParseWithLength(t, len);
	EXPECT(a && b);
	if (a && b) {
		cJSON_ReplaceItemInObjectCaseSensitive(a, "num_experts", cJSON_CreateNumber(12));
		cJSON *v = cJSON_CreateObject();
		cJSON_AddTrueToObject(v, "v");
		cJSON_ReplaceItemInObjectCaseSensitive(cJSON_GetObjectItemCaseSensitive(a, "nested"), "num_experts", v);
		EXPECT(cJSON_Compare(a, b, 1));
	}
	cJSON_Delete(a);
	cJSON_Delete(b);
	jedit_free(d);
}

/* io/factors: marked configs carry the family elsewhere and an unknown model_type; unmarking restores every byte. */
static void test_factors_mark_round_trip(void)
{
	const char *in = "{\n  \"architectures\": [\"DeepseekV2ForCausalLM\"],\n  \"auto_map\": {\"AutoConfig\": "
			 "\"configuration_deepseek.DeepseekV2Config\"},\n  \"model_type\": \"deepseek_v2\",\n"
			 "  \"rope_theta\": 10000.0\n}\n";
	jedit *d = parse_ok(in);
	if (!d)
		return;
	ms_error err = {0};
	CHECK(fac_mark_config(d, "energy", 0.02, &err) == MS_OK, "%s", err.msg);
	size_t len;
	const char *t = jedit_text(d, &len);
	cJSON *j = cJSON_ParseWithLength(t, len);
	const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, FAC_ENTRY);
	EXPECT(strcmp(cJSON_GetObjectItemCaseSensitive(j, "model_type")->valuestring, MDL_FACTORS_MODEL_TYPE) == 0);
	EXPECT(!cJSON_GetObjectItemCaseSensitive(j, "auto_map"));
	EXPECT(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "model_type")) &&
	       strcmp(cJSON_GetObjectItemCaseSensitive(e, "model_type")->valuestring, "deepseek_v2") == 0);
	EXPECT(strstr(t, "\"rope_theta\": 10000.0") != NULL);
	cJSON_Delete(j);
	CHECK(fac_unmark_config(d, &err) == MS_OK, "%s", err.msg);
	EXPECT(same_text(d, in));
	EXPECT(fac_unmark_config(d, &err) == MS_ERR_CFG_FIELD);   /* not factored any more */
	jedit_free(d);
}

int main(void)
{
	RUN(test_numbers_keep_their_spelling);
	RUN(test_whitespace_and_line_ends_kept);
	RUN(test_keys_match_decoded);
	RUN(test_nested_path);
	RUN(test_add_and_remove_are_inverse);
	RUN(test_rename_keeps_place);
	RUN(test_set_checks_the_value);
	RUN(test_duplicate_keys_refused);
	RUN(test_invalid_documents);
	RUN(test_depth_is_bounded);
	RUN(test_cjson_agrees);
	RUN(test_factors_mark_round_trip);
	return test_summary();
}
