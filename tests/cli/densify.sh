# config.json of a merged checkpoint keeps every byte moescope does not change; a --compress-format factors
# checkpoint is refused by stock loaders (model_type), described by `info`, and `densify` rebuilds the dense
# checkpoint that the dense-format merge writes (config byte for byte, weights within float rounding).
. "$(dirname "$0")/lib.sh"
M=$GOLDEN/model
C=$GOLDEN/calib.safetensors
P=$GOLDEN/expected/plan_global_avg4.csv

# A config spelled as people and tools write it: 1E-05, 10000.0, an escaped key, tabs, CRLF line ends.
cp -r "$M" "$TMP/odd"
python3 - "$M/config.json" "$TMP/odd/config.json" <<'PY'
import sys
t = open(sys.argv[1]).read()
t = t.replace('"rms_norm_eps": 1e-05', '"rms_norm_eps": 1E-05').replace('"router_aux_loss_coef": 0.02',
    '"router_aux_loss_coef": 2.0e-2,\n  "n\\u00e4me": "caf\\u00e9 \\ud83d\\ude00",\n\t"extra": {"num_local_experts": 8}')
t = t.replace("\n", "\r\n")
open(sys.argv[2], "w", newline="").write(t)
PY
for src in "$M" "$TMP/odd"; do
	name=$(basename "$src")
	expect_status "compact merge of $name" 0 "$MOESCOPE" merge "$src" --plan "$P" --calib "$C" --out "$TMP/m_$name"
	if python3 - "$src/config.json" "$TMP/m_$name/config.json" >"$TMP/py" 2>&1 <<'PY'
import sys
a, b = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
key = b'"num_local_experts": '
i = a.index(key) + len(key)           # the top-level field comes first in these files
assert a[i:i + 1] == b"8", a[i:i + 10]
want = a[:i] + b"5" + a[i + 1:]       # E' = 5, top-k 2 unchanged; nothing else may differ
assert b == want, [(k, a[k:k + 20], b[k:k + 20]) for k in range(min(len(a), len(b))) if a[k] != b[k]][:3]
PY
	then pass "...config.json differs from $name's only in num_local_experts (byte diff)"
	else fail "config.json of $name" "$(tail -3 "$TMP/py")"; fi
done

# DeepSeek's group-limited routing (accepted when every group is eligible, i.e. plain top-k) becomes "greedy":
# E' need not split into n_group groups, and transformers' grouped routing would not run then.
DS=$TMP/ds-grouped
cp -r tests/data/forward/models/deepseek-tiny "$DS"
sed -i 's/"topk_method": "greedy"/"topk_method": "group_limited_greedy", "n_group": 2, "topk_group": 2/' "$DS/config.json"
"$MOESCOPE" capture "$DS" --tokens tests/data/forward/tokens64.txt --out "$TMP/ds_cal.safetensors" >/dev/null 2>&1
"$MOESCOPE" plan "$DS" --calib "$TMP/ds_cal.safetensors" --groups 3 --out "$TMP/ds_plan.csv" >/dev/null 2>&1
expect_status "compact merge of a group-routed DeepSeek" 0 "$MOESCOPE" merge "$DS" --calib "$TMP/ds_cal.safetensors" \
	--plan "$TMP/ds_plan.csv" --out "$TMP/ds_merged"
if python3 - "$DS/config.json" "$TMP/ds_merged/config.json" >"$TMP/py" 2>&1 <<'PY'
import sys
a, b = open(sys.argv[1]).read(), open(sys.argv[2]).read()
want = a.replace('"n_routed_experts": 4', '"n_routed_experts": 3').replace('"group_limited_greedy"', '"greedy"')
assert want != a and b == want, b
PY
then pass "...config differs only in n_routed_experts 3 and topk_method greedy"; else fail "grouped config" "$(tail -3 "$TMP/py")"; fi

cp -r "$M" "$TMP/dup"
sed 's/"num_local_experts": 8,/"num_local_experts": 8, "num_local_experts": 6,/' "$M/config.json" >"$TMP/dup/config.json"
expect_status "a config with a duplicate key is refused before merging" 1 "$MOESCOPE" merge "$TMP/dup" --plan "$P" \
	--calib "$C" --out "$TMP/m_dup"
expect_grep "...naming the key and both places" "config.json: line 18 column 27: key 'num_local_experts' appears twice in one object .first at line 18 column 3." "$TMP/err"
if [ ! -e "$TMP/m_dup" ]; then pass "...and writing nothing"; else fail "output written"; fi

for fmt in dense factors; do
	expect_status "compressed merge, $fmt" 0 "$MOESCOPE" merge "$M" --plan "$P" --calib "$C" --out "$TMP/c_$fmt" \
		--rank-energy 0.9 --sparse-ratio 0.02 --compress-format $fmt
done
if python3 - "$TMP/c_factors/config.json" >"$TMP/py" 2>&1 <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
assert c["model_type"] == "moescope_factors" and "auto_map" not in c, c["model_type"]
assert c["moescope_compression"]["model_type"] == "mixtral" and c["moescope_compression"]["format"] == "factors"
PY
then pass "factors: model_type unknown to transformers' AutoConfig, the family kept in moescope_compression"
else fail "factors config" "$(tail -3 "$TMP/py")"; fi
expect_status "info describes a factored checkpoint" 0 "$MOESCOPE" info "$TMP/c_factors"
expect_grep "...and says how to load it" "moescope densify .*c_factors --out DIR' writes a dense mixtral" "$TMP/out"
expect_status "info --json too" 0 "$MOESCOPE" info "$TMP/c_factors" --json
expect_grep "...format factors" '"format":[[:space:]]*"factors"' "$TMP/out"
expect_status "other commands refuse it" 1 "$MOESCOPE" eval "$TMP/c_factors" --calib "$C"
expect_grep "...pointing at densify" "factored checkpoint.*moescope densify" "$TMP/err"

expect_status "densify" 0 "$MOESCOPE" densify "$TMP/c_factors" --out "$TMP/dense"
if cmp -s "$TMP/dense/config.json" "$TMP/c_dense/config.json"; then pass "densified config.json = the dense merge's, byte for byte"
else fail "densified config.json differs" "$(diff "$TMP/dense/config.json" "$TMP/c_dense/config.json" | head -5)"; fi
if python3 - "$TMP/c_dense/model.safetensors" "$TMP/dense/model.safetensors" >"$TMP/py" 2>&1 <<'PY'
import array, json, struct, sys
def load(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    return {k: (v["dtype"], v["shape"], array.array("f", b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]]))
            for k, v in json.loads(b[8:8 + n]).items() if k != "__metadata__"}
a, b = load(sys.argv[1]), load(sys.argv[2])
assert sorted(a) == sorted(b), set(a) ^ set(b)
worst = 0.0
for k in a:
    assert a[k][:2] == b[k][:2], (k, a[k][:2], b[k][:2])
    x, y = a[k][2], b[k][2]
    err = sum((p - q) ** 2 for p, q in zip(x, y)) ** 0.5
    norm = sum(p * p for p in x) ** 0.5
    worst = max(worst, err / max(norm, 1e-30))
assert worst <= 1e-5, worst
print("worst relative difference", worst)
PY
then pass "densified weights = the dense merge's within 1e-5 relative ($(tail -1 "$TMP/py"))"
else fail "densified weights" "$(tail -3 "$TMP/py")"; fi
expect_status "the densified checkpoint is a model again" 0 "$MOESCOPE" info "$TMP/dense"
expect_grep "...mixtral with 5 experts" '5 per block' "$TMP/out"

expect_status "densify of a stock checkpoint is refused" 1 "$MOESCOPE" densify "$M" --out "$TMP/d2"
expect_grep "...saying so" 'not a factored checkpoint' "$TMP/err"
expect_status "densify does not overwrite without --force" 1 "$MOESCOPE" densify "$TMP/c_factors" --out "$TMP/dense"

# A residual index outside its matrix: refused, with the tensor named, and nothing written.
cp -r "$TMP/c_factors" "$TMP/bad"
python3 - "$TMP/bad/model.safetensors" <<'PY'
import json, struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
name = sorted(k for k in h if k.endswith("_sparse_idx"))[0]
struct.pack_into("<i", b, 8 + n + h[name]["data_offsets"][0], 1 << 30)
open(sys.argv[1], "wb").write(b)
PY
expect_status "a damaged sparse index is refused" 1 "$MOESCOPE" densify "$TMP/bad" --out "$TMP/d3"
expect_grep "...naming the tensor and the entry" '_sparse_idx: sparse entry 0: index 1073741824 outside' "$TMP/err"
if [ ! -e "$TMP/d3" ] && [ -z "$(ls -A "$TMP" | grep 'd3\.')" ]; then pass "...and nothing left behind"
else fail "left behind: $(ls -A "$TMP")"; fi

expect_status "densify under RLIMIT_FSIZE fails cleanly" 1 bash -c "ulimit -f 16; exec \"\$0\" densify \"\$1\" --out \"\$2\"" \
	"$MOESCOPE" "$TMP/c_factors" "$TMP/d4"
expect_grep "...with a write error" 'write|File too large' "$TMP/err"
if [ -z "$(ls -A "$TMP" | grep 'd4')" ]; then pass "...and no output or temporary directory"; else fail "left: $(ls -A "$TMP")"; fi
finish
