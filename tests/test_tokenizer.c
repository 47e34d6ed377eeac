/* The tokenizer (text/) against ids from Hugging Face's JavaScript tokenizers (tests/tokenizer/, written by
 * make_expected.mjs), plus what that reference does not cover: split behaviours, numeric characters beyond
 * ASCII, normalizer corner cases, refused files, and merge time on one very long word. TOKENIZERS names the
 * directory of the decompressed tokenizer.json files (make test sets it; build/tokenizers otherwise). */
#include <stdint.h>
#include <time.h>

#include <utf8proc.h>

#include "io/file.h"
#include "tests/test.h"
#include "text/tok_internal.h"
#include "text/tokenizer.h"

static const char *const texts[] = {"01-prose", "02-code", "03-numbers", "04-whitespace", "05-accents",
                                    "06-cjk", "07-emoji", "08-rtl", "09-invalid", "10-special",
                                    "11-mixed", "12-short", "13-long"};
enum { N_TEXTS = sizeof texts / sizeof texts[0] };

/* The whole file, NUL-terminated (io/file.h), or NULL. */
static char *slurp(const char *path, size_t *len)
{
	char *data;
	return file_read_all(path, &data, len, NULL) == MS_OK ? data : NULL;
}

static int32_t *parse_ids(const char *s, size_t *n)
{
	size_t cap = 16;
	int32_t *v = malloc(cap * sizeof *v);
	*n = 0;
	char *end;
	for (long x; (x = strtol(s, &end, 10)), end != s; s = end) {
		if (*n == cap)
			v = realloc(v, (cap *= 2) * sizeof *v);
		v[(*n)++] = (int32_t)x;
	}
	return v;
}

static const char *tok_dir(void)
{
	const char *d = getenv("TOKENIZERS");
	return d && *d ? d : "build/tokenizers";
}

static long ids_matched;

static void check_ids(tok_tokenizer *t, const char *tname, const char *text, const char *buf, size_t len, int special)
{
	char path[512];
	size_t elen, n_want, n_got;
	snprintf(path, sizeof path, "tests/tokenizer/expected/%s/%s%s.ids", tname, text, special ? ".special" : "");
	char *exp = slurp(path, &elen);
	CHECK(exp, "cannot read %s", path);
	if (!exp)
		return;
	int32_t *want = parse_ids(exp, &n_want), *got = NULL;
	ms_error err = {0};
	ms_status st = tok_encode(t, buf, len, special, &got, &n_got, &err);
	CHECK(st == MS_OK, "%s %s: %s", tname, text, err.msg);
	size_t first = 0;
	while (first < n_want && first < n_got && want[first] == got[first])
		first++;
	CHECK(n_got == n_want && first == n_want, "%s %s%s: %zu ids, reference %zu; first difference at %zu (%d vs %d)",
	      tname, text, special ? " (special)" : "", n_got, n_want, first, first < n_got ? got[first] : -1,
	      first < n_want ? want[first] : -1);
	if (n_got == n_want && first == n_want)
		ids_matched += (long)n_want;
	if (!special && st == MS_OK) {
		char *dec = NULL, *ref;
		size_t dl = 0, rl;
		snprintf(path, sizeof path, "tests/tokenizer/expected/%s/%s.decoded", tname, text);
		ref = slurp(path, &rl);
		st = tok_decode(t, got, n_got, 0, &dec, &dl, &err);
		CHECK(st == MS_OK && ref && dl == rl && memcmp(dec, ref, rl) == 0, "%s %s: decode differs from the reference",
		      tname, text);
		free(ref);
		free(dec);
	}
	free(want);
	free(got);
	free(exp);
}

/* Every corpus text, with and without special tokens; for a lossless tokenizer decode(encode(x)) == x, x with
 * U+FFFD for ill-formed bytes (and in NFC for a tokenizer whose normalizer is NFC: lossless = 2). */
static void check_tokenizer(const char *tname, int lossless)
{
	char path[512];
	snprintf(path, sizeof path, "%s/%s.json", tok_dir(), tname);
	tok_tokenizer *t;
	ms_error err = {0};
	ms_status st = tok_open(path, &t, &err);
	CHECK(st == MS_OK, "%s", err.msg);
	if (st)
		return;
	for (int i = 0; i < N_TEXTS; i++) {
		size_t len;
		snprintf(path, sizeof path, "tests/tokenizer/corpus/%s.txt", texts[i]);
		char *buf = slurp(path, &len);
		CHECK(buf, "cannot read %s", path);
		if (!buf)
			continue;
		check_ids(t, tname, texts[i], buf, len, 0);
		check_ids(t, tname, texts[i], buf, len, 1);
		if (lossless) {
			int32_t *ids;
			size_t n, dl;
			char *dec;
			tk_buf clean = {0};
			tk_utf8_clean(buf, len, &clean);
			if (lossless == 2) {
				utf8proc_uint8_t *nfc = utf8proc_NFC((const utf8proc_uint8_t *)clean.s);
				clean.n = 0;
				tk_buf_add(&clean, nfc, strlen((const char *)nfc));
				free(nfc);
			}
			CHECK(tok_encode(t, buf, len, 0, &ids, &n, &err) == MS_OK, "%s", err.msg);
			CHECK(tok_decode(t, ids, n, 0, &dec, &dl, &err) == MS_OK, "%s", err.msg);
			CHECK(dl == clean.n && memcmp(dec, clean.s, dl) == 0, "%s %s: decode(encode(x)) != x", tname, texts[i]);
			free(ids);
			free(dec);
			tk_buf_free(&clean);
		}
		free(buf);
	}
	tok_free(t);
}

static void test_qwen3(void) { check_tokenizer("qwen3", 2); }
static void test_mistral(void) { check_tokenizer("mistral", 0); }
static void test_deepseek_v3(void) { check_tokenizer("deepseek_v3", 1); }
static void test_tiny_bytelevel(void) { check_tokenizer("tiny_bytelevel", 0); }
static void test_tiny_metaspace(void) { check_tokenizer("tiny_metaspace", 0); }

/* ---- pieces the reference cannot check: tokenizers' semantics written out by hand ---- */

#define VOCAB "\"vocab\":{\"a\":0,\"b\":1,\"c\":2,\"-\":3,\"x\":4,\"3\":5}"

static tok_tokenizer *load(const char *json)
{
	tok_tokenizer *t = NULL;
	ms_error err = {0};
	ms_status st = tok_load(json, strlen(json), "t.json", &t, &err);
	CHECK(st == MS_OK, "%s", err.msg);
	return t;
}

/* Pre-tokenizes text with the file's pre-tokenizer; want is the pieces joined by '|'. */
static void check_pieces(const char *pretok, const char *text, const char *want)
{
	char json[1024];
	snprintf(json, sizeof json, "{\"model\":{\"type\":\"BPE\"," VOCAB ",\"merges\":[]},\"pre_tokenizer\":%s}", pretok);
	tok_tokenizer *t = load(json);
	if (!t)
		return;
	tk_pieces ps = {0};
	ms_error err = {0};
	tk_pieces_add(&ps, text, strlen(text), 1);
	CHECK(tk_pretokenize(t, t->pretok, &ps, &err) == MS_OK, "%s", err.msg);
	tk_buf got = {0};
	for (size_t i = 0; i < ps.n; i++) {
		if (i)
			tk_buf_addc(&got, '|');
		tk_buf_add(&got, ps.text.s + ps.p[i].off, ps.p[i].len);
	}
	CHECK(got.s && strcmp(got.s, want) == 0, "%s on '%s': got '%s', want '%s'", pretok, text, got.s, want);
	tk_buf_free(&got);
	tk_pieces_free(&ps);
	tok_free(t);
}

static void test_split_behaviors(void)
{
#define SPLIT(b, inv) "{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},\"behavior\":\"" b "\",\"invert\":" inv "}"
	check_pieces(SPLIT("Removed", "false"), "a-b--c", "a|b|c");
	check_pieces(SPLIT("Isolated", "false"), "a-b--c", "a|-|b|-|-|c");
	check_pieces(SPLIT("MergedWithPrevious", "false"), "a-b--c", "a-|b-|-|c");
	check_pieces(SPLIT("MergedWithNext", "false"), "a-b--c", "a|-b|-|-c");
	check_pieces(SPLIT("Contiguous", "false"), "a-b--c", "a|-|b|--|c");
	check_pieces(SPLIT("Removed", "true"), "a-b--c", "-|-|-");
	check_pieces(SPLIT("MergedWithPrevious", "true"), "ab-c", "ab|-c");
	check_pieces("{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\s+(?!\\\\S)|\\\\s+\"},\"behavior\":\"Isolated\",\"invert\":false}",
	             "a   b", "a|  | |b");
	check_pieces("{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(?i:'S|'t)\"},\"behavior\":\"Isolated\",\"invert\":false}",
	             "IT'S it't", "IT|'S| it|'t");
#undef SPLIT
}

static void test_digits_and_metaspace(void)
{
	/* char::is_numeric: Arabic-Indic digits and fractions count, as in tokenizers (the JS reference's \d does
	 * not) */
	check_pieces("{\"type\":\"Digits\",\"individual_digits\":true}", "x\xD9\xA1\xD9\xA2" "3\xC2\xBD", "x|\xD9\xA1|\xD9\xA2|3|\xC2\xBD");
	check_pieces("{\"type\":\"Digits\",\"individual_digits\":false}", "x12y3", "x|12|y|3");
	check_pieces("{\"type\":\"Metaspace\",\"replacement\":\"_\",\"prepend_scheme\":\"always\",\"split\":true}", "a  b",
	             "_a|_|_b");
	check_pieces("{\"type\":\"Metaspace\",\"replacement\":\"_\",\"prepend_scheme\":\"never\",\"split\":false}", "a b",
	             "a_b");
	check_pieces("{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true}", "it's 12\n",
	             "it|'s|\xC4\xA0" "12|\xC4\x8A");
}

static void check_norm(const char *nz, const char *text, const char *want)
{
	char json[1024];
	snprintf(json, sizeof json, "{\"model\":{\"type\":\"BPE\"," VOCAB ",\"merges\":[]},\"normalizer\":%s}", nz);
	tok_tokenizer *t = load(json);
	if (!t)
		return;
	tk_buf out = {0};
	ms_error err = {0};
	CHECK(tk_normalize(t, t->normalizer, text, strlen(text), &out, &err) == MS_OK, "%s", err.msg);
	CHECK(out.s && strcmp(out.s, want) == 0, "%s on '%s': got '%s', want '%s'", nz, text, out.s, want);
	tk_buf_free(&out);
	tok_free(t);
}

static void test_normalizers(void)
{
	check_norm("{\"type\":\"Lowercase\"}", "\xC4\xB0stanbul", "i\xCC\x87stanbul");      /* U+0130 -> i + U+0307 */
	check_norm("{\"type\":\"Lowercase\"}", "\xCE\xA3\xCE\x99\xCE\xA3 \xCE\xA3", "\xCF\x83\xCE\xB9\xCF\x82 \xCF\x83"); /* ΣΙΣ Σ */
	check_norm("{\"type\":\"NFKC\"}", "\xEF\xAC\x81x\xE2\x91\xA0", "fix1");                 /* ﬁ, ① */
	check_norm("{\"type\":\"NFD\"}", "\xC3\xA9", "e\xCC\x81");
	check_norm("{\"type\":\"NFC\"}", "e\xCC\x81", "\xC3\xA9");
	check_norm("{\"type\":\"Strip\",\"strip_left\":true,\"strip_right\":false}", " \xE3\x80\x80 a ", "a ");
	check_norm("{\"type\":\"Prepend\",\"prepend\":\"_\"}", "", "");
	check_norm("{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"_\"},"
	           "{\"type\":\"Replace\",\"pattern\":{\"Regex\":\"a+\"},\"content\":\"A\"}]}",
	           "baab a", "_bAb A");
}

/* ---- files that must be refused with one line naming the place ---- */

static void check_refused(const char *json, ms_status want, const char *msg)
{
	tok_tokenizer *t = NULL;
	ms_error err = {0};
	ms_status st = tok_load(json, strlen(json), "t.json", &t, &err);
	CHECK(st == want, "got %s (%s), want %s", ms_status_name(st), err.msg, ms_status_name(want));
	CHECK(!t, "a refused file gave a tokenizer");
	CHECK(strstr(err.msg, msg) && !strchr(err.msg, '\n'), "message '%s' lacks '%s'", err.msg, msg);
	tok_free(t);
}

static void test_refused(void)
{
	check_refused("{\"model\":", MS_ERR_TOK_JSON, "t.json: not valid JSON");
	check_refused("[]", MS_ERR_TOK_JSON, "t.json: not a JSON object");
	check_refused("{}", MS_ERR_TOK_FIELD, "t.json: \"model\" is missing");
	check_refused("{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}", MS_ERR_TOK_UNSUPPORTED,
	              "t.json: model: type \"Unigram\" is not supported");
	check_refused("{\"model\":{\"type\":\"BPE\"," VOCAB ",\"merges\":[\"a b\",\"a q\"]}}", MS_ERR_TOK_FIELD,
	              "t.json: model.merges[0]: \"ab\" is not in the vocabulary");
	check_refused("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[[\"a\",\"b\"],[\"b\",\"z\"]]}}",
	              MS_ERR_TOK_FIELD, "t.json: model.merges[1]: \"z\" is not in the vocabulary");
	check_refused("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":2000000000},\"merges\":[]}}", MS_ERR_TOK_FIELD,
	              "t.json: model.vocab[\"a\"]: the id is not an integer");
	check_refused("{\"model\":{\"type\":\"BPE\"," VOCAB ",\"merges\":[],\"dropout\":0.1}}", MS_ERR_TOK_UNSUPPORTED,
	              "dropout is not supported");
	check_refused("{\"model\":{\"type\":\"BPE\"," VOCAB ",\"merges\":[]},\"pre_tokenizer\":{\"type\":\"Sequence\","
	              "\"pretokenizers\":[{\"type\":\"Digits\"},{\"type\":\"Whitespace\"}]}}",
	              MS_ERR_TOK_UNSUPPORTED, "t.json: pre_tokenizer.pretokenizers[1]: type \"Whitespace\" is not supported");
	check_refused("{\"model\":{\"type\":\"BPE\"," VOCAB ",\"merges\":[]},\"pre_tokenizer\":{\"type\":\"Split\","
	              "\"pattern\":{\"Regex\":\"(a\"},\"behavior\":\"Isolated\"}}",
	              MS_ERR_TOK_REGEX, "t.json: pre_tokenizer.pattern.Regex: PCRE2 rejects the regex at offset 2");
	check_refused("{\"model\":{\"type\":\"BPE\"," VOCAB ",\"merges\":[]},\"normalizer\":{\"type\":\"Precompiled\"}}",
	              MS_ERR_TOK_UNSUPPORTED, "t.json: normalizer: type \"Precompiled\" is not supported");
	check_refused("{\"model\":{\"type\":\"BPE\"," VOCAB ",\"merges\":[]},\"post_processor\":{\"type\":\"TemplateProcessing\","
	              "\"single\":[{\"SpecialToken\":{\"id\":\"<s>\"}},{\"Sequence\":{\"id\":\"A\"}}],\"special_tokens\":{}}}",
	              MS_ERR_TOK_FIELD, "t.json: post_processor.single[0]: special token \"<s>\" has no ids");
	check_refused("{\"model\":{\"type\":\"BPE\"," VOCAB ",\"merges\":[]},\"decoder\":{\"type\":\"WordPiece\"}}",
	              MS_ERR_TOK_UNSUPPORTED, "t.json: decoder: type \"WordPiece\" is not supported");
	check_refused("{\"model\":{\"type\":\"BPE\"," VOCAB ",\"merges\":[]},\"added_tokens\":[{\"id\":-1,\"content\":\"x\"}]}",
	              MS_ERR_TOK_FIELD, "t.json: added_tokens[0]: \"id\" is not an integer");
}

static void test_decode_and_api(void)
{
	tok_tokenizer *t = load("{\"model\":{\"type\":\"BPE\"," VOCAB ",\"merges\":[]},"
	                        "\"added_tokens\":[{\"id\":7,\"content\":\"<s>\",\"special\":true}]}");
	if (!t)
		return;
	CHECK(tok_vocab_size(t) == 8);
	CHECK(tok_token_to_id(t, "<s>") == 7 && tok_token_to_id(t, "x") == 4 && tok_token_to_id(t, "q") == -1);
	CHECK(tok_id_to_token(t, 3) && strcmp(tok_id_to_token(t, 3), "-") == 0);
	CHECK(tok_id_to_token(t, 6) == NULL && tok_id_to_token(t, 8) == NULL);
	int32_t bad[] = {0, 6};
	char *s = NULL;
	size_t n;
	ms_error err = {0};
	CHECK(tok_decode(t, bad, 2, 0, &s, &n, &err) == MS_ERR_TOK_ID && strstr(err.msg, "id 6 (position 1)"), "%s", err.msg);
	int32_t ok[] = {7, 0, 1};
	CHECK(tok_decode(t, ok, 3, 0, &s, &n, &err) == MS_OK && strcmp(s, "<s> a b") == 0, "%s", s); /* no decoder: spaces */
	free(s);
	CHECK(tok_decode(t, ok, 3, 1, &s, &n, &err) == MS_OK && strcmp(s, "a b") == 0, "%s", s);
	free(s);
	tok_free(t);
}

/* Python's decode('utf-8', 'replace'): one U+FFFD per maximal ill-formed subsequence. */
static void test_utf8_replace(void)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
		{"a\x80" "b", "a\xEF\xBF\xBD" "b"},
		{"\xE4\xB8", "\xEF\xBF\xBD"},                            /* truncated: one */
		{"\xC0\xAF", "\xEF\xBF\xBD\xEF\xBF\xBD"},                /* overlong: two */
		{"\xED\xA0\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"}, /* surrogate: three */
		{"\xF0\x9F\x98", "\xEF\xBF\xBD"},
		{"\xF4\x90\x80\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"},
		{"\xE2\x82\xAC", "\xE2\x82\xAC"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		tk_buf b = {0};
		tk_utf8_clean(cases[i].in, strlen(cases[i].in), &b);
		CHECK(b.s && strcmp(b.s, cases[i].out) == 0, "case %zu", i);
		tk_buf_free(&b);
	}
}

/* One word of 300,000 characters: merging must not be quadratic (that would take minutes, not milliseconds). */
static void test_long_word(void)
{
	char path[512];
	snprintf(path, sizeof path, "%s/qwen3.json", tok_dir());
	tok_tokenizer *t;
	ms_error err = {0};
	if (tok_open(path, &t, &err) != MS_OK) {
		CHECK(0, "%s", err.msg);
		return;
	}
	size_t n = 300000;
	char *w = malloc(n);
	for (size_t i = 0; i < n; i++)
		w[i] = "abcdefghij"[(i * 7 + i / 3) % 10];
	int32_t *ids;
	size_t k;
	clock_t c0 = clock();
	CHECK(tok_encode(t, w, n, 0, &ids, &k, &err) == MS_OK, "%s", err.msg);
	double secs = (double)(clock() - c0) / CLOCKS_PER_SEC;
	CHECK(secs < 20.0, "%.1f s for one long word", secs);
	char *back;
	size_t bl;
	CHECK(tok_decode(t, ids, k, 0, &back, &bl, &err) == MS_OK && bl == n && memcmp(back, w, n) == 0);
	free(back);
	free(ids);
	free(w);
	tok_free(t);
}

int main(void)
{
	RUN(test_qwen3);
	RUN(test_mistral);
	RUN(test_deepseek_v3);
	RUN(test_tiny_bytelevel);
	RUN(test_tiny_metaspace);
	printf("ids identical to the reference: %ld\n", ids_matched);
	RUN(test_split_behaviors);
	RUN(test_digits_and_metaspace);
	RUN(test_normalizers);
	RUN(test_refused);
	RUN(test_decode_and_api);
	RUN(test_utf8_replace);
	RUN(test_long_word);
	return test_summary();
}
