# FP8 checkpoints from the command line, on the mixtral-fp8 sample (mixtral-tiny's weights stored F8_E4M3 in
# 64 x 32 blocks): info names the scheme; plan finds the same groups as on mixtral-tiny (one planted structure,
# FP8 noise on top); the merged checkpoint is FP8 again, keeps quantization_config, reports its re-quantization
# error, evaluates in memory as it does once written, and its bytes do not depend on the thread count; the
# application opens it and commits a merge. Then gpt-oss's MXFP4 form, on the gptoss-mxfp4 sample.
. "$(dirname "$0")/lib.sh"
TOK=tests/data/forward/tokens.txt
S=${SAMPLES:-}
if [ -z "$S" ] || [ ! -f "$S/mixtral-fp8/config.json" ] || [ ! -f "$S/gptoss-mxfp4/config.json" ]; then
	S=$TMP/samples
	"$MOESCOPE" samples "$S" >/dev/null
fi
Q=$S/mixtral-fp8
B=$S/mixtral-tiny

json_num() {
	tr -d ' \n\t' <"$1" | sed -n "s/.*\"$2\":\([-0-9.eE+]*\).*/\1/p"
}
json_sub() { # json_sub FILE OBJECT KEY
	tr -d ' \n\t' <"$1" | sed -n "s/.*\"$2\":{[^}]*\"$3\":\([-0-9.eE+]*\).*/\1/p"
}
close() {
	if awk -v a="$2" -v b="$3" -v t="$4" 'BEGIN { d = a - b; if (d < 0) d = -d; m = b < 0 ? -b : b; if (m < 1) m = 1;
		exit !(a != "" && b != "" && d <= t * m) }'; then pass "$1"; else fail "$1" "$2 vs $3 (tol $4)"; fi
}
# between NAME X LO HI: LO < X < HI
between() {
	if awk -v x="$2" -v lo="$3" -v hi="$4" 'BEGIN { exit !(x != "" && x > lo && x < hi) }'; then pass "$1"
	else fail "$1" "$2 not in ($3, $4)"; fi
}

expect_status "info" 0 "$MOESCOPE" info "$Q"
expect_grep "info names the storage" "quantization +fp8: F8_E4M3 times weight_scale_inv per 64 x 32 block" "$TMP/out"
expect_grep "info: expert dtype" "expert dtype +F8_E4M3" "$TMP/out"

for s in mixtral-tiny mixtral-fp8; do
	expect_status "$s: plan" 0 "$MOESCOPE" plan "$S/$s" --calib "$S/$s/calib.safetensors" --groups 3 \
		--out "$TMP/$s.plan.csv"
done
if diff <(cut -d, -f1-4 "$TMP/mixtral-tiny.plan.csv") <(cut -d, -f1-4 "$TMP/mixtral-fp8.plan.csv") >/dev/null; then
	pass "the FP8 sample groups its experts as its BF16 twin"
else
	fail "the FP8 sample groups its experts as its BF16 twin"
fi

P=$TMP/mixtral-fp8.plan.csv
expect_status "merge, 1 thread" 0 "$MOESCOPE" merge "$Q" --calib "$Q/calib.safetensors" --plan "$P" \
	--out "$TMP/m1" --threads 1
expect_status "merge, 3 threads" 0 "$MOESCOPE" merge "$Q" --calib "$Q/calib.safetensors" --plan "$P" \
	--out "$TMP/m3" --threads 3
if cmp -s "$TMP/m1/model.safetensors" "$TMP/m3/model.safetensors"; then pass "merged bytes for 1 and 3 threads"
else fail "merged bytes for 1 and 3 threads"; fi
expect_status "the merge opens" 0 "$MOESCOPE" info "$TMP/m1"
expect_grep "the merge is FP8" "expert dtype +F8_E4M3" "$TMP/out"
expect_grep "the merge keeps quantization_config" "quantization +fp8: F8_E4M3 times weight_scale_inv per 64 x 32" \
	"$TMP/out"
tr -d ' \n\t' <"$TMP/m1/config.json" >"$TMP/cfg.txt"
expect_grep "config.json: quantization_config as it was" \
	'"quantization_config":\{"activation_scheme":"dynamic","fmt":"e4m3","quant_method":"fp8","weight_block_size":\[64,32\]\}' \
	"$TMP/cfg.txt"
expect_grep "the report says the scheme" '"scheme":[[:space:]]*"fp8"' "$TMP/m1/moescope_report.json"
between "re-quantization error of a block, relative" "$(json_sub "$TMP/m1/moescope_report.json" requantization rel_error)" \
	0.001 0.0625
between "worst block's re-quantization error" \
	"$(json_sub "$TMP/m1/moescope_report.json" requantization max_block_rel_error)" 0.001 0.0625

# in memory = written, through the forward pass (attention and experts in FP8), with the calibration set captured
# from the same tokens as perplexity --plan uses
expect_status "capture" 0 "$MOESCOPE" capture "$Q" --tokens "$TOK" --out "$TMP/cap.safetensors"
expect_status "merge with the captured set" 0 "$MOESCOPE" merge "$Q" --calib "$TMP/cap.safetensors" --plan "$P" \
	--out "$TMP/mt"
expect_status "perplexity --plan" 0 "$MOESCOPE" perplexity "$Q" --tokens "$TOK" --plan "$P" --json "$TMP/inmem.json"
expect_status "perplexity of the written merge" 0 "$MOESCOPE" perplexity "$TMP/mt" --tokens "$TOK" \
	--json "$TMP/written.json"
close "merged NLL in memory = written" "$(json_sub "$TMP/inmem.json" merged nll)" "$(json_num "$TMP/written.json" nll)" \
	1e-6
# shards that split weights from their scales read the same
expect_status "merge into small shards" 0 "$MOESCOPE" merge "$Q" --calib "$TMP/cap.safetensors" --plan "$P" \
	--out "$TMP/msh" --max-shard-size 400000
[ -f "$TMP/msh/model-00004-of-00004.safetensors" ] && pass "four shards" || fail "four shards" "$(ls "$TMP/msh")"
expect_status "perplexity of the sharded merge" 0 "$MOESCOPE" perplexity "$TMP/msh" --tokens "$TOK" \
	--json "$TMP/sharded.json"
close "sharded NLL = unsharded" "$(json_num "$TMP/sharded.json" nll)" "$(json_num "$TMP/written.json" nll)" 1e-12

# --compress-format factors cannot hold FP8 experts
expect_status "factors refused" 1 "$MOESCOPE" merge "$Q" --plan "$P" --rank 8 --compress-format factors \
	--router mean --out "$TMP/fac"
expect_grep "factors refused: why" "factors cannot store FP8 experts" "$TMP/err"
[ ! -e "$TMP/fac" ] && pass "factors refused: nothing written" || fail "factors refused: nothing written"

# the application on the FP8 sample: G 4 in block 0, then a commit
cat >"$TMP/commit.keys" <<'EOF'
wait
-
-
-
-
wait
c
<C-u>
type:merged_tui
<Enter>
wait
EOF
case $Q in /*) ;; *) Q=$PWD/$Q ;; esac
case $MOESCOPE in /*) BIN=$MOESCOPE ;; *) BIN=$PWD/$MOESCOPE ;; esac
expect_status "tui: commit a merge of the FP8 sample" 0 bash -c 'cd "$1" && LC_ALL=C.UTF-8 "$2" tui "$3" \
	"$3/calib.safetensors" --script commit.keys --dump tui.txt' _ "$TMP" "$BIN" "$Q"
expect_status "tui: the committed merge opens" 0 "$MOESCOPE" info "$TMP/merged_tui"
expect_grep "tui: the committed merge is FP8" "expert dtype +F8_E4M3" "$TMP/out"

# gpt-oss's released MXFP4 form (the gptoss-mxfp4 sample): info says so; a merge writes _blocks and _scales with E'
# experts, keeps quantization_config and every tensor outside the MoE blocks, reports the re-quantization, and the
# written merge evaluates as previewed
py() { # py NAME ARGS... < script : a check written in Python
	local name=$1
	shift
	if python3 - "$@" >"$TMP/py" 2>&1; then pass "$name"; else fail "$name" "$(tail -3 "$TMP/py")"; fi
}
X=$S/gptoss-mxfp4
XC=$X/calib.safetensors
expect_status "mxfp4: info" 0 "$MOESCOPE" info "$X"
expect_grep "mxfp4: scheme" "quantization +mxfp4" "$TMP/out"
expect_grep "mxfp4: layout" "expert layout +interleaved 3-D tensors \\[out, in\\]" "$TMP/out"
expect_status "mxfp4: plan" 0 "$MOESCOPE" plan "$X" --calib "$XC" --groups 6 --out "$TMP/mx.csv"
expect_status "mxfp4: merge" 0 "$MOESCOPE" merge "$X" --calib "$XC" --plan "$TMP/mx.csv" --out "$TMP/mx.6"
expect_status "mxfp4: the merge opens" 0 "$MOESCOPE" info "$TMP/mx.6"
expect_grep "mxfp4: the merge is MXFP4" "expert dtype +U8" "$TMP/out"
"$MOESCOPE" eval "$X" --calib "$XC" --plan "$TMP/mx.csv" --json "$TMP/mx.preview.json" >/dev/null 2>&1
"$MOESCOPE" eval "$TMP/mx.6" --calib "$XC" --json "$TMP/mx.written.json" >/dev/null 2>&1
py "mxfp4: tensors, config, requantization, eval = preview" "$X" "$TMP/mx.6" "$TMP/mx.preview.json" \
	"$TMP/mx.written.json" <<'PY'
import json, struct, sys
src, out, pre, got = sys.argv[1:5]
def tensors(d):
    b = open(d + "/model.safetensors", "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    return {k: (v["dtype"], v["shape"], b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
            for k, v in json.loads(b[8:8 + n]).items() if k != "__metadata__"}
a, b = tensors(src), tensors(out)
assert set(a) == set(b), set(a) ^ set(b)
for k in a:
    if ".mlp." not in k:
        assert a[k] == b[k], k
d, f = 128, 64
for i in range(4):
    p = "model.layers.%d.mlp.experts." % i
    want = {"gate_up_proj_blocks": [6, 2 * f, d // 32, 16], "gate_up_proj_scales": [6, 2 * f, d // 32],
            "down_proj_blocks": [6, d, f // 32, 16], "down_proj_scales": [6, d, f // 32]}
    for k, shape in want.items():
        assert b[p + k][:2] == ("U8", shape), (p + k, b[p + k][:2])
c0, c1 = json.load(open(src + "/config.json")), json.load(open(out + "/config.json"))
assert c1["quantization_config"] == c0["quantization_config"]
rep = json.load(open(out + "/moescope_report.json"))
for blk in rep["blocks"]:
    q = blk["requantization"]
    assert q["scheme"] == "mxfp4" and 0.01 < q["rel_error"] < 0.25, q
p, g = json.load(open(pre)), json.load(open(got))
assert len(p["blocks"]) == len(g["blocks"]) == 4
for x, y in zip(p["blocks"], g["blocks"]):
    assert abs(x["output_norm"] - y["output_norm"]) <= 1e-4 * x["output_norm"], (x["label"], x["output_norm"], y["output_norm"])
PY
finish
