/* Fuzz target: tok_open on arbitrary bytes as a tokenizer.json. Properties: a refused file gets a tokenizer
 * status and one line naming the file; an accepted one encodes fixed texts and its own bytes (as text) into ids
 * inside its vocabulary, and decodes those ids without error. */
#include "text/tokenizer.h"

#include "tests/fuzz/fuzz_common.h"

/* Encodes text[0..n) and decodes the result; any failure but a regex limit breaks a property. */
static void round_trip(tok_tokenizer *t, const char *text, size_t n)
{
	int32_t *ids = NULL;
	size_t k = 0;
	ms_error err;
	for (int special = 0; special < 2; special++) {
		ms_status st = tok_encode(t, text, n, special, &ids, &k, &err);
		if (st == MS_ERR_TOK_REGEX) /* PCRE2's match or depth limit on a hostile regex: refused, not a crash */
			return;
		if (st)
			fz_fail("encoding failed", err.msg);
		for (size_t i = 0; i < k; i++)
			if (ids[i] < 0 || ids[i] >= tok_vocab_size(t) || !tok_id_to_token(t, ids[i]))
				fz_fail("an id outside the vocabulary", NULL);
		char *back = NULL;
		size_t bl;
		if (tok_decode(t, ids, k, 0, &back, &bl, &err))
			fz_fail("decoding encoded ids failed", err.msg);
		if (strlen(back) > bl)
			fz_fail("decoded length is wrong", NULL);
		free(back);
		free(ids);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fz_init();
	const char *in = fz_path("tokenizer.json");
	fz_write(in, data, size);
	tok_tokenizer *t = NULL;
	ms_error err;
	ms_status st = tok_open(in, &t, &err);
	if (st) {
		fz_check_error(st, &err, in);
		if (t)
			fz_fail("a refused file gave a tokenizer", err.msg);
		if (st != MS_ERR_IO && st != MS_ERR_NOMEM && (st < MS_ERR_TOK_JSON || st > MS_ERR_TOK_ID))
			fz_fail("a tokenizer.json error outside the tokenizer codes", err.msg);
		return 0;
	}
	fz_note(st, &err);
	static const char *const texts[] = {"", "Hello world, it's 2024!", "  a\n\n\tb  ", "caf\xC3\xA9 \xE4\xB8\xAD \xF0\x9F\xA4\x97",
	                                    "bad \xFF\xC0 utf8", "<s>x</s><|im_end|>"};
	for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
		round_trip(t, texts[i], strlen(texts[i]));
	round_trip(t, (const char *)data, size < 4096 ? size : 4096);
	tok_free(t);
	return 0;
}
