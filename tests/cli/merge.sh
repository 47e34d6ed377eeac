# `moescope merge`: the compact layout re-opens as a model with E' experts, keeps every other tensor byte for
# byte, evaluates as the preview said; outputs are never half-written, never overwrite without --force, never
# replace the input.
. "$(dirname "$0")/lib.sh"
M=$GOLDEN/model
C=$GOLDEN/calib.safetensors
P=$GOLDEN/expected/plan_global_avg4.csv

expect_status "compact merge" 0 "$MOESCOPE" merge "$M" --plan "$P" --calib "$C" --out "$TMP/compact"
expect_status "merged directory re-opens" 0 "$MOESCOPE" info "$TMP/compact"
expect_grep "info shows E' = 5 (largest group count)" '5 per block, top-2' "$TMP/out"
for f in config.json model.safetensors moescope_plan.csv moescope_report.json; do
	if [ -f "$TMP/compact/$f" ]; then pass "output has $f"; else fail "output lacks $f"; fi
done

if python3 - "$M/model.safetensors" "$TMP/compact/model.safetensors" >"$TMP/py" 2>&1 <<'PY'
import hashlib, json, struct, sys
def tensors(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    return {k: hashlib.sha256(b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]]).hexdigest()
            for k, v in h.items() if k != "__metadata__"}
a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
plain = [k for k in a if ".block_sparse_moe." not in k]
assert plain, "no plain tensors"
for k in plain:
    assert a[k] == b[k], k
assert not any(".experts.5." in k for k in b), "experts beyond E' written"
PY
then pass "non-expert tensors byte-identical (sha256)"; else fail "non-expert tensors differ" "$(tail -3 "$TMP/py")"; fi

"$MOESCOPE" eval "$M" --calib "$C" --plan "$P" --json "$TMP/preview.json" >/dev/null 2>&1
"$MOESCOPE" eval "$TMP/compact" --calib "$C" --json "$TMP/merged.json" >/dev/null 2>&1
if python3 - "$TMP/preview.json" "$TMP/merged.json" "$TMP/compact/moescope_report.json" >"$TMP/py" 2>&1 <<'PY'
import json, sys
pre, got, rep = (json.load(open(p)) for p in sys.argv[1:4])
for a, b in zip(pre["blocks"], got["blocks"]):
    assert abs(a["output_norm"] - b["output_norm"]) <= 1e-4 * a["output_norm"], (a["label"], a["output_norm"], b["output_norm"])
for blk in rep["blocks"]:
    fit = blk["router_fit_residual"]
    assert fit["best"] == "lse-fit" and fit["lse-fit"] < fit["mean"] and fit["lse-fit"] < fit["dominant"], fit
    assert 0 < blk["eval"]["routing_agreement"] <= 1 and blk["eval"]["params_after"] < blk["eval"]["params_before"]
PY
then pass "merged model evaluates as eval --plan previewed; lse-fit fits best in every block"
else fail "merged model and preview disagree" "$(tail -3 "$TMP/py")"; fi

expect_status "an existing output is not overwritten" 1 "$MOESCOPE" merge "$M" --plan "$P" --calib "$C" --out "$TMP/compact"
expect_grep "...and the message says --force" 'already exists.*--force' "$TMP/err"
expect_status "--force replaces it" 0 "$MOESCOPE" merge "$M" --plan "$P" --calib "$C" --out "$TMP/compact" --force \
	--layout aliased --align none
expect_status "...with the aliased layout now" 0 "$MOESCOPE" info "$TMP/compact"
expect_grep "...8 experts" '8 per block' "$TMP/out"

cp -r "$M" "$TMP/input"
before=$(cd "$TMP/input" && sha256sum * | sha256sum)
expect_status "the output may not be the input, even with --force" 1 "$MOESCOPE" merge "$TMP/input" --plan "$P" \
	--calib "$C" --out "$TMP/input" --force
after=$(cd "$TMP/input" && sha256sum * | sha256sum)
if [ "$before" = "$after" ]; then pass "input untouched"; else fail "input changed"; fi

expect_status "unwritable output place" 1 "$MOESCOPE" merge "$M" --plan "$P" --calib "$C" --out /proc/moescope-out
expect_grep "...one line naming it" '^moescope: .*/proc/moescope-out' "$TMP/err"

# A file-size limit below the weights' size: the write fails cleanly and nothing is left behind.
expect_status "merge under RLIMIT_FSIZE fails cleanly" 1 bash -c "ulimit -f 200; exec \"\$0\" merge \"\$1\" --plan \"\$2\" \
	--calib \"\$3\" --out \"\$4\"" "$MOESCOPE" "$M" "$P" "$C" "$TMP/limited"
expect_grep "...with a write error" 'write|File too large' "$TMP/err"
left=$(ls -A "$TMP" | grep -c 'limited' || true)
if [ "$left" -eq 0 ]; then pass "...and no output or temporary directory"; else fail "left behind: $(ls -A "$TMP")"; fi

expect_status "aliased layout refuses a pruning plan" 1 bash -c "
	\"\$0\" plan \"\$1\" --calib \"\$2\" --groups 4 --method prune-frequency --out \"\$3/prune.csv\" >/dev/null &&
	exec \"\$0\" merge \"\$1\" --plan \"\$3/prune.csv\" --calib \"\$2\" --out \"\$3/pruned\" --layout aliased" \
	"$MOESCOPE" "$M" "$C" "$TMP"
expect_status "compact layout writes a pruned model" 0 "$MOESCOPE" merge "$M" --plan "$TMP/prune.csv" --calib "$C" \
	--out "$TMP/pruned"
# Factored storage: W_u @ W_v plus the sparse residual rebuilds the dense compressed weights of the same merge.
for fmt in dense factors; do
	expect_status "compressed merge, $fmt" 0 "$MOESCOPE" merge "$M" --plan "$P" --calib "$C" --out "$TMP/c_$fmt" \
		--rank-energy 0.9 --sparse-ratio 0.02 --compress-format $fmt
done
if python3 - "$TMP/c_dense/model.safetensors" "$TMP/c_factors/model.safetensors" "$TMP/c_factors/config.json" \
	>"$TMP/py" 2>&1 <<'PY'
import array, json, struct, sys
def load(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    out = {}
    for k, v in json.loads(b[8:8 + n]).items():
        if k != "__metadata__":
            raw = b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]]
            out[k] = (v["shape"], array.array("i" if v["dtype"] == "I32" else "f", raw))
    return out
dense, fac = load(sys.argv[1]), load(sys.argv[2])
assert json.load(open(sys.argv[3]))["moescope_compression"]["format"] == "factors"
checked = 0
for name, (shape, w) in dense.items():
    if name + "_u" not in fac:
        continue
    (m, r), u = fac[name + "_u"]
    (_, n), v = fac[name + "_v"]
    rebuilt = [sum(u[i * r + k] * v[k * n + j] for k in range(r)) for i in range(m) for j in range(n)]
    if name + "_sparse_idx" in fac:
        for idx, val in zip(fac[name + "_sparse_idx"][1], fac[name + "_sparse_val"][1]):
            rebuilt[idx] += val
    err = sum((a - b) ** 2 for a, b in zip(rebuilt, w)) ** 0.5
    norm = sum(b * b for b in w) ** 0.5
    assert err <= 1e-4 * norm, (name, err / norm)
    assert name not in fac
    checked += 1
assert checked >= 30, checked
PY
then pass "factors rebuild the dense compressed weights (1e-4 relative)"; else fail "factors" "$(tail -3 "$TMP/py")"; fi
expect_status "factors without a rank is refused" 1 "$MOESCOPE" merge "$M" --plan "$P" --calib "$C" \
	--out "$TMP/c_none" --compress-format factors
finish
