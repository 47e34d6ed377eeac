# transformers v5's fused experts and DeepSeek-V3 checkpoints from the command line: qwen2moe-fused (qwen2moe-tiny's
# weights, fused) plans and merges exactly like qwen2moe-tiny and writes its merge fused, slice for slice equal to
# the per-expert merge; the aliased layout keeps all E experts fused; deepseek3-tiny's compact merge rewrites the
# selection bias and the group fields and evaluates as previewed; a factors merge of fused experts is refused.
. "$(dirname "$0")/lib.sh"
S=${SAMPLES:-$BUILD/samples}
if [ ! -f "$S/qwen2moe-fused/config.json" ]; then
	fail "samples missing in $S (make writes them)"
	finish
	exit 1
fi
TOK=tests/data/forward/tokens.txt

py() { # py NAME ARGS... < script : a check written in Python
	local name=$1
	shift
	if python3 - "$@" >"$TMP/py" 2>&1; then pass "$name"; else fail "$name" "$(tail -3 "$TMP/py")"; fi
}

for s in qwen2moe-tiny qwen2moe-fused; do
	C=$S/$s/calib.safetensors
	expect_status "$s: plan" 0 "$MOESCOPE" plan "$S/$s" --calib "$C" --groups 6 --out "$TMP/$s.csv"
	expect_status "$s: compact merge" 0 "$MOESCOPE" merge "$S/$s" --calib "$C" --plan "$TMP/$s.csv" \
		--out "$TMP/$s.compact"
	expect_status "$s: aliased merge" 0 "$MOESCOPE" merge "$S/$s" --calib "$C" --plan "$TMP/$s.csv" \
		--layout aliased --out "$TMP/$s.aliased"
	expect_status "$s: perplexity of the compact merge" 0 "$MOESCOPE" perplexity "$TMP/$s.compact" --tokens "$TOK" \
		--json "$TMP/$s.ppl.json"
done
if cmp -s "$TMP/qwen2moe-tiny.csv" "$TMP/qwen2moe-fused.csv"; then pass "the same plan"; else fail "the same plan"; fi
if cmp -s "$TMP/qwen2moe-tiny.ppl.json" "$TMP/qwen2moe-fused.ppl.json" ||
	[ "$(grep -v '"model"' "$TMP/qwen2moe-tiny.ppl.json")" = "$(grep -v '"model"' "$TMP/qwen2moe-fused.ppl.json")" ]; then
	pass "merged perplexity identical"
else
	fail "merged perplexity identical" "$(diff "$TMP/qwen2moe-tiny.ppl.json" "$TMP/qwen2moe-fused.ppl.json" | head -5)"
fi
expect_status "fused merge reports its layout" 0 "$MOESCOPE" info "$TMP/qwen2moe-fused.compact"
expect_grep "info: fused layout" "expert layout +fused" "$TMP/out"

for layout in compact aliased; do
	py "$layout: fused merge = per-expert merge, slice by slice; other tensors and config identical" \
		"$TMP/qwen2moe-tiny.$layout" "$TMP/qwen2moe-fused.$layout" "$layout" <<'PY'
import json, struct, sys
per, fused, layout = sys.argv[1:4]
def tensors(d):  # name -> (shape, raw bytes)
    b = open(d + "/model.safetensors", "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    out = {}
    for k, v in json.loads(b[8:8 + n]).items():
        if k == "__metadata__":
            continue
        assert v["dtype"] == "BF16", (k, v["dtype"])
        out[k] = (v["shape"], b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
    return out
a, b = tensors(per), tensors(fused)
E = 6 if layout == "compact" else 16
f, d = 64, 128
mat = 2 * f * d   # bytes of one [f, d] matrix in BF16
blocks = 0
for k in b:
    if k.endswith("experts.gate_up_proj"):
        p = k[:-len(".gate_up_proj")]
        (sgu, gu), (sdn, dn) = b[k], b[p + ".down_proj"]
        assert sgu == [E, 2 * f, d] and sdn == [E, d, f], (k, sgu, sdn)
        for e in range(E):
            assert gu[2 * e * mat:(2 * e + 1) * mat] == a["%s.%d.gate_proj.weight" % (p, e)][1], (k, e, "gate")
            assert gu[(2 * e + 1) * mat:(2 * e + 2) * mat] == a["%s.%d.up_proj.weight" % (p, e)][1], (k, e, "up")
            assert dn[e * mat:(e + 1) * mat] == a["%s.%d.down_proj.weight" % (p, e)][1], (k, e, "down")
        blocks += 1
    elif not k.endswith("experts.down_proj"):
        assert a[k] == b[k], k
assert blocks == 3, blocks
assert not any(".experts.0." in k for k in b)
ca, cb = json.load(open(per + "/config.json")), json.load(open(fused + "/config.json"))
assert ca == cb and ca["num_experts"] == E, (ca.get("num_experts"), cb.get("num_experts"))
PY
done

# DeepSeek-V3: the compact merge gives each slot its dominant's bias and drops the group limit; eval of the written
# checkpoint equals the preview, and perplexity of the plan in memory equals the written merge's.
D=$S/deepseek3-tiny
C=$D/calib.safetensors
expect_status "deepseek3: plan" 0 "$MOESCOPE" plan "$D" --calib "$C" --groups 8 --out "$TMP/d3.csv"
expect_status "deepseek3: merge" 0 "$MOESCOPE" merge "$D" --calib "$C" --plan "$TMP/d3.csv" --out "$TMP/d3.merged"
expect_status "deepseek3: info of the merge" 0 "$MOESCOPE" info "$TMP/d3.merged"
expect_grep "deepseek3: merged routing without groups" "sigmoid scores of 8 experts, top-4 by score \+ bias, renormalised, times 2.5$" "$TMP/out"
"$MOESCOPE" eval "$D" --calib "$C" --plan "$TMP/d3.csv" --json "$TMP/d3.preview.json" >/dev/null 2>&1
"$MOESCOPE" eval "$TMP/d3.merged" --calib "$C" --json "$TMP/d3.written.json" >/dev/null 2>&1
py "deepseek3: merged bias = dominant's, groups dropped, eval = preview" "$D" "$TMP/d3.merged" "$TMP/d3.csv" \
	"$TMP/d3.preview.json" "$TMP/d3.written.json" <<'PY'
import array, csv, json, struct, sys
src, dst, plan, pre, got = sys.argv[1:6]
def tensors(d):  # name -> BF16 values as 16-bit integers
    b = open(d + "/model.safetensors", "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    out = {}
    for k, v in json.loads(b[8:8 + n]).items():
        if k != "__metadata__":
            out[k] = array.array("H", b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
    return out
a, b = tensors(src), tensors(dst)
rows = list(csv.DictReader(open(dst + "/moescope_plan.csv")))
for layer in ("1", "2", "3"):
    name = "model.layers.%s.mlp.gate.e_score_correction_bias" % layer
    dom = {int(r["group"]): int(r["expert"]) for r in rows if r["layer"] == layer and r["dominant"] == "1"}
    assert len(b[name]) == 8 == len(dom), (name, len(b[name]), dom)
    for g in range(8):
        assert b[name][g] == a[name][dom[g]], (layer, g, dom[g])
cfg = json.load(open(dst + "/config.json"))
assert cfg["n_routed_experts"] == 8 and cfg["n_group"] == 1 and cfg["topk_group"] == 1, cfg
p, g = json.load(open(pre)), json.load(open(got))
for x, y in zip(p["blocks"], g["blocks"]):
    assert abs(x["output_norm"] - y["output_norm"]) <= 1e-4 * x["output_norm"], (x["label"], x["output_norm"], y["output_norm"])
PY
# (the merge fits its router and down projections on the tokens perplexity captures, as forward.sh does)
expect_status "deepseek3: capture" 0 "$MOESCOPE" capture "$D" --tokens "$TOK" --out "$TMP/d3.cap.safetensors"
expect_status "deepseek3: merge on the captured set" 0 "$MOESCOPE" merge "$D" --calib "$TMP/d3.cap.safetensors" \
	--plan "$TMP/d3.merged/moescope_plan.csv" --out "$TMP/d3.cap.merged"
expect_status "deepseek3: perplexity --plan" 0 "$MOESCOPE" perplexity "$D" --tokens "$TOK" \
	--plan "$TMP/d3.merged/moescope_plan.csv" --json "$TMP/d3.inmem.json"
expect_status "deepseek3: perplexity of the merge" 0 "$MOESCOPE" perplexity "$TMP/d3.cap.merged" --tokens "$TOK" \
	--json "$TMP/d3.written.ppl.json"
py "deepseek3: merged NLL in memory = written" "$TMP/d3.inmem.json" "$TMP/d3.written.ppl.json" <<'PY'
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
x, y = a["merged"]["nll"], b["nll"]
assert abs(x - y) <= 1e-6 * max(1, abs(y)), (x, y)
PY

# gpt_oss: the merge keeps the interleaved [in, out] tensors and their biases with E' experts along the first axis and
# rewrites num_local_experts; a plan of 16 singleton groups (no refit) writes every expert's slabs, biases, router
# row and router bias back bit for bit at its group's index; the written merge evaluates as previewed.
G=$S/gptoss-tiny
C=$G/calib.safetensors
expect_status "gpt_oss: plan" 0 "$MOESCOPE" plan "$G" --calib "$C" --groups 6 --out "$TMP/oss.csv"
expect_status "gpt_oss: compact merge" 0 "$MOESCOPE" merge "$G" --calib "$C" --plan "$TMP/oss.csv" --out "$TMP/oss.6"
expect_status "gpt_oss: aliased merge" 0 "$MOESCOPE" merge "$G" --calib "$C" --plan "$TMP/oss.csv" --layout aliased \
	--out "$TMP/oss.al"
expect_status "gpt_oss: singleton plan" 0 "$MOESCOPE" plan "$G" --calib "$C" --groups 16 --out "$TMP/oss16.csv"
expect_status "gpt_oss: singleton merge" 0 "$MOESCOPE" merge "$G" --calib "$C" --plan "$TMP/oss16.csv" --refit none \
	--out "$TMP/oss.16"
expect_status "gpt_oss: info of the merge" 0 "$MOESCOPE" info "$TMP/oss.6"
expect_grep "gpt_oss: merged layout" "expert layout +interleaved" "$TMP/out"
"$MOESCOPE" eval "$G" --calib "$C" --plan "$TMP/oss.csv" --json "$TMP/oss.preview.json" >/dev/null 2>&1
"$MOESCOPE" eval "$TMP/oss.6" --calib "$C" --json "$TMP/oss.written.json" >/dev/null 2>&1
py "gpt_oss: interleaved layout with E' experts, config, singletons bit for bit, eval = preview" "$G" "$TMP/oss.6" \
	"$TMP/oss.al" "$TMP/oss.16" "$TMP/oss16.csv" "$TMP/oss.preview.json" "$TMP/oss.written.json" <<'PY'
import csv, json, struct, sys
src, m6, al, m16, plan16, pre, got = sys.argv[1:8]
def tensors(d):  # name -> (shape, raw BF16 bytes)
    b = open(d + "/model.safetensors", "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    return {k: (v["shape"], b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
            for k, v in json.loads(b[8:8 + n]).items() if k != "__metadata__"}
a = tensors(src)
d, f = 128, 64
for out, E in ((m6, 6), (al, 16), (m16, 16)):
    b = tensors(out)
    assert set(a) == set(b), (out, set(a) ^ set(b))
    for i in range(4):
        p = "model.layers.%d.mlp" % i
        want = {".experts.gate_up_proj": [E, d, 2 * f], ".experts.down_proj": [E, f, d],
                ".experts.gate_up_proj_bias": [E, 2 * f], ".experts.down_proj_bias": [E, d],
                ".router.weight": [E, d], ".router.bias": [E]}
        for k, shape in want.items():
            assert b[p + k][0] == shape, (out, p + k, b[p + k][0], shape)
    for k in a:
        if ".mlp." not in k:
            assert a[k] == b[k], (out, k)
    cfg, cfg0 = json.load(open(out + "/config.json")), json.load(open(src + "/config.json"))
    assert cfg["num_local_experts"] == E, (out, cfg["num_local_experts"])
    cfg0["num_local_experts"] = E
    assert cfg == cfg0, out
b = tensors(m16)
slot = {}
for r in csv.DictReader(open(plan16)):
    slot[(r["layer"], int(r["expert"]))] = int(r["group"])
for (layer, e), g in slot.items():
    p = "model.layers.%s.mlp" % layer
    for k, n in ((".experts.gate_up_proj", d * 2 * f), (".experts.down_proj", f * d), (".experts.gate_up_proj_bias", 2 * f),
                 (".experts.down_proj_bias", d), (".router.weight", d), (".router.bias", 1)):
        x, y = a[p + k][1][2 * n * e:2 * n * (e + 1)], b[p + k][1][2 * n * g:2 * n * (g + 1)]
        assert x == y, (layer, e, g, k)
assert len(slot) == 64, len(slot)
p, g = json.load(open(pre)), json.load(open(got))
assert len(p["blocks"]) == len(g["blocks"]) == 4
for x, y in zip(p["blocks"], g["blocks"]):
    assert abs(x["output_norm"] - y["output_norm"]) <= 1e-4 * x["output_norm"], (x["label"], x["output_norm"], y["output_norm"])
PY
out=$TMP/oss.factors
"$MOESCOPE" merge "$G" --plan "$TMP/oss.csv" --rank 8 --compress-format factors --router mean --out "$out" \
	>"$TMP/bad.out" 2>"$TMP/bad.err"
rc=$?
if [ $rc -eq 1 ] && [ "$(wc -l <"$TMP/bad.err")" -eq 1 ] && grep -q "fused 3-D tensors; --compress-format factors" "$TMP/bad.err" &&
	[ ! -e "$out" ]; then
	pass "gpt_oss: factors of interleaved experts refused"
else
	fail "gpt_oss: factors of interleaved experts refused" "exit $rc: $(head -c 300 "$TMP/bad.err")"
fi
# the forward pass: a merge fitted on the captured block inputs gives, written, the NLL perplexity --plan computes in
# memory
expect_status "gpt_oss: capture" 0 "$MOESCOPE" capture "$G" --tokens "$TOK" --out "$TMP/oss.cap.safetensors"
expect_status "gpt_oss: merge on the captured set" 0 "$MOESCOPE" merge "$G" --calib "$TMP/oss.cap.safetensors" \
	--plan "$TMP/oss.6/moescope_plan.csv" --out "$TMP/oss.cap.merged"
expect_status "gpt_oss: perplexity --plan" 0 "$MOESCOPE" perplexity "$G" --tokens "$TOK" \
	--plan "$TMP/oss.6/moescope_plan.csv" --json "$TMP/oss.inmem.json"
expect_status "gpt_oss: perplexity of the merge" 0 "$MOESCOPE" perplexity "$TMP/oss.cap.merged" --tokens "$TOK" \
	--json "$TMP/oss.written.ppl.json"
py "gpt_oss: merged NLL in memory = written" "$TMP/oss.inmem.json" "$TMP/oss.written.ppl.json" <<'PY'
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
x, y = a["merged"]["nll"], b["nll"]
assert abs(x - y) <= 1e-6 * max(1, abs(y)), (x, y)
assert abs(a["original"]["nll"] - x) > 1e-6, "the merge changes the model"
PY

# Refusals: one line, exit 1, nothing written.
out=$TMP/factors
"$MOESCOPE" merge "$S/qwen2moe-fused" --plan "$TMP/qwen2moe-fused.csv" --rank 8 --compress-format factors \
	--router mean --out "$out" >"$TMP/bad.out" 2>"$TMP/bad.err"
rc=$?
if [ $rc -eq 1 ] && [ "$(wc -l <"$TMP/bad.err")" -eq 1 ] && grep -q "fused 3-D tensors; --compress-format factors" "$TMP/bad.err" &&
	[ ! -e "$out" ]; then
	pass "factors of fused experts refused"
else
	fail "factors of fused experts refused" "exit $rc: $(head -c 300 "$TMP/bad.err")"
fi
finish
