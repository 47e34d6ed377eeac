#!/usr/bin/env bash
# `moescope tokenize` against the reference ids in tests/tokenizer/expected (from Hugging Face's JavaScript
# tokenizers): every corpus text with and without --special, --decode back, a model directory as TOKENIZER, and
# the one-line refusals.
. "$(dirname "$0")/lib.sh"
TOK=${TOKENIZERS:-$BUILD/tokenizers}

while read -r name lossless; do
	json=$TOK/$name.json
	if [ ! -f "$json" ]; then
		fail "$name" "$json missing (make check-build decompresses it)"
		continue
	fi
	bad=""
	for text in tests/tokenizer/corpus/*.txt; do
		t=$(basename "$text" .txt)
		exp=tests/tokenizer/expected/$name/$t
		"$MOESCOPE" tokenize "$json" --text "$text" >"$TMP/ids" 2>"$TMP/err" && cmp -s "$TMP/ids" "$exp.ids" || bad="$bad $t"
		"$MOESCOPE" tokenize "$json" --text "$text" --special >"$TMP/sids" 2>>"$TMP/err" &&
			cmp -s "$TMP/sids" "$exp.special.ids" || bad="$bad $t(special)"
		"$MOESCOPE" tokenize "$json" --text "$TMP/ids" --decode >"$TMP/dec" 2>>"$TMP/err" &&
			cmp -s "$TMP/dec" "$exp.decoded" || bad="$bad $t(decode)"
	done
	if [ -z "$bad" ]; then pass "$name: ids and decoded text as the reference"; else fail "$name" "differs:$bad; $(head -c 300 "$TMP/err")"; fi
done <tests/tokenizer/expected/manifest.txt

# a model directory, ids separated by commas and brackets, --skip-special
mkdir -p "$TMP/model"
cp "$TOK/qwen3.json" "$TMP/model/tokenizer.json"
printf 'Hello<|im_end|>' >"$TMP/hello.txt"
expect_status "model directory" 0 "$MOESCOPE" tokenize "$TMP/model" --text "$TMP/hello.txt"
expect_grep "ids of Hello<|im_end|>" '^9707 151645$' "$TMP/out"
printf '[9707, 151645]\n' >"$TMP/ids.txt"
expect_status "decode commas" 0 "$MOESCOPE" tokenize "$TMP/model" --text "$TMP/ids.txt" --decode
[ "$(cat "$TMP/out")" = "Hello<|im_end|>" ] && pass "decoded with special" || fail "decoded with special" "$(cat "$TMP/out")"
expect_status "decode skip special" 0 "$MOESCOPE" tokenize "$TMP/model" --text "$TMP/ids.txt" --decode --skip-special
[ "$(cat "$TMP/out")" = "Hello" ] && pass "decoded without special" || fail "decoded without special" "$(cat "$TMP/out")"

# refusals: one line, exit 1, naming the file and the place
printf '{"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"pre_tokenizer":{"type":"Sequence","pretokenizers":[{"type":"Digits"},{"type":"Whitespace"}]}}' >"$TMP/ws.json"
expect_status "unsupported component" 1 "$MOESCOPE" tokenize "$TMP/ws.json" --text "$TMP/hello.txt"
expect_grep "names it" 'ws.json: pre_tokenizer.pretokenizers\[1\]: type "Whitespace" is not supported$' "$TMP/err"
[ "$(wc -l <"$TMP/err")" -eq 1 ] && pass "one line" || fail "one line" "$(cat "$TMP/err")"
printf '99999999\n' >"$TMP/bad_ids.txt"
expect_status "id out of range" 1 "$MOESCOPE" tokenize "$TMP/model" --text "$TMP/bad_ids.txt" --decode
expect_grep "names the id" 'id 99999999 \(position 0\) is not in the vocabulary' "$TMP/err"
printf '12 x3\n' >"$TMP/bad_ids.txt"
expect_status "not an id" 1 "$MOESCOPE" tokenize "$TMP/model" --text "$TMP/bad_ids.txt" --decode
expect_status "missing tokenizer.json" 1 "$MOESCOPE" tokenize "$TMP" --text "$TMP/hello.txt"
expect_grep "names the file" 'tokenizer.json: No such file' "$TMP/err"
expect_status "no --text" 2 "$MOESCOPE" tokenize "$TMP/model"
expect_status "help" 0 "$MOESCOPE" tokenize --help
finish
