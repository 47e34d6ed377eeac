# The forward pass from the command line: capture writes a calibration set that analyze reads; perplexity of a
# plan evaluated in memory equals perplexity of the checkpoint `merge` writes with the calibration set captured
# from the same tokens; results are byte-identical for 1 and 3 threads; bad inputs give one line on stderr,
# exit 1 and nothing written.
. "$(dirname "$0")/lib.sh"
TOK=tests/data/forward/tokens.txt
S=${SAMPLES:-}
if [ -z "$S" ] || [ ! -f "$S/mixtral-tiny/config.json" ]; then
	S=$TMP/samples
	"$MOESCOPE" samples "$S" >/dev/null
fi
M=$S/mixtral-tiny

# json_num FILE KEY...: the number at a path of keys (no JSON tool needed: the reports are flat enough for sed)
json_num() {
	local file=$1 key=$2
	tr -d ' \n\t' <"$file" | sed -n "s/.*\"$key\":\([-0-9.eE+]*\).*/\1/p"
}
json_sub() { # json_sub FILE OBJECT KEY
	tr -d ' \n\t' <"$1" | sed -n "s/.*\"$2\":{[^}]*\"$3\":\([-0-9.eE+]*\).*/\1/p"
}
# close NAME A B TOL: |A - B| <= TOL * max(1, |B|)
close() {
	if awk -v a="$2" -v b="$3" -v t="$4" 'BEGIN { d = a - b; if (d < 0) d = -d; m = b < 0 ? -b : b; if (m < 1) m = 1;
		exit !(a != "" && b != "" && d <= t * m) }'; then pass "$1"; else fail "$1" "$2 vs $3 (tol $4)"; fi
}

for s in mixtral-tiny olmoe-mini qwen2moe-tiny mixtral-fp8; do
	expect_status "$s: capture" 0 "$MOESCOPE" capture "$S/$s" --tokens "$TOK" --out "$TMP/$s.calib.safetensors"
	expect_status "$s: analyze reads the captured set" 0 "$MOESCOPE" analyze "$S/$s" \
		--calib "$TMP/$s.calib.safetensors" --json "$TMP/$s.analyze.json"
	expect_grep "$s: analyze saw every token" '"tokens":[[:space:]]*119' "$TMP/$s.analyze.json"
	expect_status "$s: perplexity" 0 "$MOESCOPE" perplexity "$S/$s" --tokens "$TOK" --json "$TMP/$s.ppl.json"
	want=$(sed -n 's/.*"mean_nll":[[:space:]]*\([-0-9.eE+]*\).*/\1/p' tests/data/forward/$s.json)
	close "$s: mean NLL equals the numpy reference's" "$(json_num "$TMP/$s.ppl.json" nll)" "$want" 1e-4
done
expect_grep "perplexity counts predicted tokens" '"tokens":[[:space:]]*116' "$TMP/mixtral-tiny.ppl.json"

# --max-tokens and --seq-len: 50 tokens in pieces of at most 16
expect_status "capture --max-tokens 50 --seq-len 16" 0 "$MOESCOPE" capture "$M" --tokens "$TOK" --max-tokens 50 \
	--seq-len 16 --out "$TMP/short.safetensors"
expect_status "info of the short set" 0 "$MOESCOPE" analyze "$M" --calib "$TMP/short.safetensors" --json "$TMP/short.json"
expect_grep "the short set holds 50 tokens" '"tokens":[[:space:]]*50' "$TMP/short.json"
expect_status "perplexity of 50 tokens in 4 sequences" 0 "$MOESCOPE" perplexity "$M" --tokens "$TOK" \
	--max-tokens 50 --seq-len 16 --json "$TMP/short_ppl.json"
expect_grep "46 tokens predicted" '"tokens":[[:space:]]*46' "$TMP/short_ppl.json"

# A plan evaluated in memory equals the written merge.
C=$TMP/mixtral-tiny.calib.safetensors
expect_status "plan on the captured set" 0 "$MOESCOPE" plan "$M" --calib "$C" --groups 4 --out "$TMP/plan.csv"
for layout in compact aliased; do
	expect_status "$layout: perplexity --plan" 0 "$MOESCOPE" perplexity "$M" --tokens "$TOK" --plan "$TMP/plan.csv" \
		--layout "$layout" --json "$TMP/inmem_$layout.json"
	expect_status "$layout: merge with the captured set" 0 "$MOESCOPE" merge "$M" --calib "$C" --plan "$TMP/plan.csv" \
		--layout "$layout" --out "$TMP/merged_$layout"
	expect_status "$layout: perplexity of the written merge" 0 "$MOESCOPE" perplexity "$TMP/merged_$layout" \
		--tokens "$TOK" --json "$TMP/written_$layout.json"
	close "$layout: merged NLL in memory = written" "$(json_sub "$TMP/inmem_$layout.json" merged nll)" \
		"$(json_num "$TMP/written_$layout.json" nll)" 1e-6
	close "$layout: original NLL beside the merge = plain run" "$(json_sub "$TMP/inmem_$layout.json" original nll)" \
		"$(json_num "$TMP/mixtral-tiny.ppl.json" nll)" 1e-12
	for k in mean p50 p90 p99; do
		v=$(json_sub "$TMP/inmem_$layout.json" kl $k)
		if awk -v v="$v" 'BEGIN { exit !(v != "" && v >= 0) }'; then pass "$layout: KL $k reported"; else fail "$layout: KL $k" "'$v'"; fi
	done
	expect_grep "$layout: top-1 agreement reported" '"top1_agreement":[[:space:]]*[01]' "$TMP/inmem_$layout.json"
done

# Threads: byte-identical files and reports.
for t in 1 3; do
	"$MOESCOPE" capture "$M" --tokens "$TOK" --out "$TMP/cap_$t.safetensors" --threads $t >/dev/null 2>&1
	"$MOESCOPE" perplexity "$M" --tokens "$TOK" --plan "$TMP/plan.csv" --json "$TMP/ppl_$t.json" --threads $t \
		>/dev/null 2>&1
done
if cmp -s "$TMP/cap_1.safetensors" "$TMP/cap_3.safetensors"; then pass "capture: 1 and 3 threads identical"; else fail "capture threads"; fi
if cmp -s "$TMP/ppl_1.json" "$TMP/ppl_3.json"; then pass "perplexity: 1 and 3 threads identical"; else fail "perplexity threads"; fi

# Bad inputs: exit 1, one line naming the file and the place, nothing written.
mkdir -p "$TMP/bad"
printf '1 2 3\n4 256 5\n' >"$TMP/bad/vocab.txt"
printf '\n\n' >"$TMP/bad/empty.txt"
printf '1 2 x3\n' >"$TMP/bad/word.txt"
cp -r "$M" "$TMP/kvheads"
sed -i 's/"num_key_value_heads":[[:space:]]*2/"num_key_value_heads": 4/' "$TMP/kvheads/config.json"
cp -r "$S/olmoe-mini" "$TMP/nobias"
sed -i 's/"attention_bias":[[:space:]]*false/"attention_bias": true/' "$TMP/nobias/config.json"
cp -r "$M" "$TMP/longrope"
sed -i 's/"rope_scaling":[[:space:]]*null/"rope_scaling": {"rope_type": "longrope", "factor": 2}/' "$TMP/longrope/config.json"
# config variants the forward pass does not compute, each refused with the field named (io/arch.c)
TINY=tests/data/forward/models
cfg_variant() { # cfg_variant NAME SOURCE PYTHON-EXPRESSION-ON-c
	cp -r "$2" "$TMP/$1"
	python3 - "$TMP/$1/config.json" "$3" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
exec(sys.argv[2])
json.dump(c, open(sys.argv[1], "w"), indent=1)
PY
}
cfg_variant longrope5 "$M" 'c["rope_parameters"] = {"rope_type": "longrope", "short_factor": [1], "long_factor": [1]}'
cfg_variant perlayer "$M" 'c["rope_parameters"] = {"full_attention": {"rope_type": "default"}, "sliding_attention": {"rope_type": "default"}}'
cfg_variant partial "$M" 'c["partial_rotary_factor"] = 0.5'
cfg_variant qwnotypes "$TINY/qwen2moe-window" 'del c["layer_types"]'
cfg_variant qwbadtype "$TINY/qwen2moe-window" 'c["layer_types"] = ["sliding_attention", "chunked_attention"]'
cfg_variant qwshort "$TINY/qwen2moe-window" 'c["layer_types"] = ["full_attention"]'
cfg_variant dsfreq "$TINY/deepseek-bias" 'c["moe_layer_freq"] = 2'
cp -r "$S/gptoss-tiny" "$TMP/osstypes"
sed -i 's/"full_attention"/"chunked_attention"/' "$TMP/osstypes/config.json"
cp -r "$S/gptoss-tiny" "$TMP/osssinks"
python3 - "$TMP/osssinks/model.safetensors" <<'PY'
import sys
p = sys.argv[1]
b = open(p, "rb").read()
open(p, "wb").write(b.replace(b"model.layers.2.self_attn.sinks", b"model.layers.2.self_attn.sonks"))
PY
# bad NAME REGEX ARGS...: capture and perplexity both refuse
bad() {
	local name=$1 regex=$2
	shift 2
	local out=$TMP/out_$RANDOM
	mkdir -p "$out"
	for cmd in capture perplexity; do
		local extra=()
		[ $cmd = capture ] && extra=(--out "$out/c.safetensors")
		[ $cmd = perplexity ] && extra=(--json "$out/p.json")
		"$MOESCOPE" $cmd "$@" "${extra[@]}" >"$TMP/bad.out" 2>"$TMP/bad.err"
		local rc=$? lines
		lines=$(wc -l <"$TMP/bad.err")
		if [ $rc -eq 1 ] && [ "$lines" -eq 1 ] && grep -qE -- "$regex" "$TMP/bad.err" && [ -z "$(ls -A "$out")" ]; then
			pass "$cmd: $name"
		else
			fail "$cmd: $name" "exit $rc, $lines lines, left: $(ls -A "$out"); stderr: $(head -c 300 "$TMP/bad.err")"
		fi
	done
}
bad "id out of vocabulary" "vocab.txt: line 2, column 3: token id 256 is outside the vocabulary \(0..255\)" \
	"$M" --tokens "$TMP/bad/vocab.txt"
bad "empty file" "empty.txt: no token ids" "$M" --tokens "$TMP/bad/empty.txt"
bad "not a number" "word.txt: line 1, column 5: 'x3' is not a token id" "$M" --tokens "$TMP/bad/word.txt"
bad "missing token file" "nope.txt: cannot open" "$M" --tokens "$TMP/bad/nope.txt"
bad "sequence longer than the model allows" "--seq-len 5000 is longer than the model allows \(max_position_embeddings 4096\)" \
	"$M" --tokens "$TOK" --seq-len 5000
bad "text without a tokenizer" "mixtral-tiny/tokenizer.json: No such file" "$M" --text "$TOK"
bad "attention shape disagrees with config.json" "k_proj.weight': shape \[64, 128\], expected \[128, 128\]" \
	"$TMP/kvheads" --tokens "$TOK"
bad "attention bias missing" "tensor 'model.layers.0.self_attn.q_proj.bias' missing" "$TMP/nobias" --tokens "$TOK"
bad "unsupported rope scaling" "config.json: field 'rope_scaling': type 'longrope' is not supported" \
	"$TMP/longrope" --tokens "$TOK"
bad "unsupported rope_parameters type" "config.json: field 'rope_parameters': type 'longrope' is not supported" \
	"$TMP/longrope5" --tokens "$TOK"
bad "one RoPE per layer type" "config.json: field 'rope_parameters': one RoPE per layer type is not supported" \
	"$TMP/perlayer" --tokens "$TOK"
bad "partial rotary factor" "config.json: field 'partial_rotary_factor' 0.5: RoPE over part of the head" \
	"$TMP/partial" --tokens "$TOK"
bad "qwen2_moe window without layer_types" "use_sliding_window without 'layer_types': transformers 4 and 5" \
	"$TMP/qwnotypes" --tokens tests/data/forward/tokens64.txt
bad "unknown layer type" "field 'layer_types\[1\]' must be \"full_attention\" or \"sliding_attention\"" \
	"$TMP/qwbadtype" --tokens tests/data/forward/tokens64.txt
bad "layer_types of the wrong length" "field 'layer_types' must list one type for each of the 2 layers" \
	"$TMP/qwshort" --tokens tests/data/forward/tokens64.txt
bad "deepseek moe_layer_freq 2" "field 'moe_layer_freq' 2: transformers 5 makes every layer from first_k_dense_replace" \
	"$TMP/dsfreq" --tokens tests/data/forward/tokens64.txt
bad "gpt_oss layer type unknown" "config.json: field 'layer_types\[1\]' must be \"full_attention\" or" \
	"$TMP/osstypes" --tokens "$TOK"
bad "gpt_oss attention sinks missing" "tensor 'model.layers.2.self_attn.sinks' missing" "$TMP/osssinks" --tokens "$TOK"
bad "switch has no forward here" "switch_transformers.*decoder-only families" "$S/switch-tiny" --tokens "$TOK"

# --text: the model's tokenizer.json gives the ids, with its special tokens, then the same path as --tokens. A
# byte-level tokenizer of the 256 byte tokens alone (GPT-2's byte-to-character map, no merges) fits mixtral-tiny's
# 256-token vocabulary; the tokenizer itself is checked against Hugging Face's in tests/test_tokenizer.c.
MT=$TMP/mt-text
cp -r "$M" "$MT"
python3 - "$MT/tokenizer.json" <<'PY'
import json, sys
bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
cs, n = bs[:], 0
for b in range(256):
    if b not in bs:
        bs.append(b); cs.append(256 + n); n += 1
vocab = {chr(c): i for i, c in enumerate(cs)}
tok = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
       "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
       "post_processor": None, "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
       "use_regex": True}, "model": {"type": "BPE", "dropout": None, "unk_token": None,
       "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
       "ignore_merges": False, "vocab": vocab, "merges": []}}
json.dump(tok, open(sys.argv[1], "w"))
PY
printf 'Experts that route alike can be merged.\nThe merged model keeps its perplexity, or it does not.\n' >"$TMP/text.txt"
expect_status "tokenize the text" 0 sh -c "'$MOESCOPE' tokenize '$MT' --text '$TMP/text.txt' --special >'$TMP/text_ids.txt'"
expect_status "capture --text" 0 "$MOESCOPE" capture "$MT" --text "$TMP/text.txt" --out "$TMP/text.calib.safetensors"
expect_status "capture --tokens of the same ids" 0 "$MOESCOPE" capture "$MT" --tokens "$TMP/text_ids.txt" \
	--out "$TMP/ids.calib.safetensors"
if cmp -s "$TMP/text.calib.safetensors" "$TMP/ids.calib.safetensors"; then
	pass "capture --text equals capture --tokens of moescope tokenize's ids"
else
	fail "capture --text equals capture --tokens of moescope tokenize's ids" "the files differ"
fi
expect_status "perplexity --text" 0 "$MOESCOPE" perplexity "$MT" --text "$TMP/text.txt" --json "$TMP/text.ppl.json"
expect_status "perplexity --tokens of the same ids" 0 "$MOESCOPE" perplexity "$MT" --tokens "$TMP/text_ids.txt" \
	--json "$TMP/ids.ppl.json"
expect_grep "perplexity --text: one token per byte of the 95, all but the last predicted" '"tokens":[[:space:]]*94' \
	"$TMP/text.ppl.json"
if cmp -s "$TMP/text.ppl.json" "$TMP/ids.ppl.json"; then pass "perplexity --text equals --tokens"
else fail "perplexity --text equals --tokens" "$(diff "$TMP/text.ppl.json" "$TMP/ids.ppl.json" | head -c 300)"; fi
: >"$TMP/bad/empty_text.txt"
bad "empty text" "empty_text.txt: no tokens" "$MT" --text "$TMP/bad/empty_text.txt"
cp build/tokenizers/tiny_bytelevel.json "$TMP/big_vocab.json" 2>/dev/null || xz -dc tests/tokenizer/tiny_bytelevel.json.xz >"$TMP/big_vocab.json"
MB=$TMP/mt-bigvocab
cp -r "$M" "$MB"
cp "$TMP/big_vocab.json" "$MB/tokenizer.json"
bad "text whose ids the model's vocabulary lacks" "text.txt: token [0-9]+: id [0-9]+ is outside the model's vocabulary \(0..255\)" \
	"$MB" --text "$TMP/text.txt"
finish
