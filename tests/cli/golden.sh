# The golden case (tests/data/golden/msmoe-mixtral, results of an independent M-SMoE implementation): plans,
# analyze's statistics and the aliased merge must agree within the tolerances its README states.
. "$(dirname "$0")/lib.sh"
M=$GOLDEN/model
C=$GOLDEN/calib.safetensors
E=$GOLDEN/expected

expect_status "info describes the golden model" 0 "$MOESCOPE" info "$M"
expect_grep "info: mixtral, 3 blocks" 'MoE blocks +3' "$TMP/out"
expect_grep "info: 8 experts, top-2" '8 per block, top-2' "$TMP/out"
expect_status "info --json" 0 "$MOESCOPE" info "$M" --json
if python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); assert (j["n_experts"], j["top_k"], j["hidden_size"], j["expert_intermediate_size"], len(j["moe_blocks"])) == (8, 2, 32, 48, 3), j' "$TMP/out" 2>"$TMP/py"
then pass "info --json: E, top-k, d, f, blocks"; else fail "info --json" "$(tail -2 "$TMP/py")"; fi
expect_status "info on a missing directory" 1 "$MOESCOPE" info "$TMP/nothing"
expect_status "info with an unknown option" 2 "$MOESCOPE" info "$M" --bogus

# Groups are compared as partitions with dominants: relabel each block's groups by their first member.
partition() {
	tr -d '\r' <"$1" | awk -F, 'NR > 1 { key = $1 FS $3; if (!(key in name)) name[key] = $2;
		print $1, $2, name[key], $4, $5 }'
}
for case in "global_avg4:--groups 4 --global" "per_layer_3:--groups 3"; do
	name=${case%%:*}
	expect_status "plan $name" 0 "$MOESCOPE" plan "$M" --calib "$C" ${case#*:} --method msmoe \
		--similarity router-logits --out "$TMP/plan_$name.csv"
	if diff <(partition "$TMP/plan_$name.csv") <(partition "$E/plan_$name.csv") >"$TMP/diff"; then
		pass "plan $name: partitions, dominants and frequencies agree"
	else
		fail "plan $name differs" "$(head -5 "$TMP/diff")"
	fi
done

expect_status "analyze --json" 0 "$MOESCOPE" analyze "$M" --calib "$C" --json "$TMP/report.json"
python_check() {
	if python3 - "$@" >"$TMP/py" 2>&1; then pass "$1"; else fail "$1" "$(tail -3 "$TMP/py")"; fi
}
python_check "analyze: frequencies 1e-6, stable ranks 1e-3 rel, similarities 1e-5" "$TMP/report.json" "$E" <<'PY'
import csv, json, sys
name, report, exp = sys.argv[1:4]
r = json.load(open(report))
blocks = {b["label"]: b for b in r["blocks"]}
for row in csv.DictReader(open(exp + "/stats.csv")):
    b, e = blocks[row["layer"]], int(row["expert"])
    assert abs(b["frequency"][e] - float(row["frequency"])) <= 1e-6, (row, b["frequency"][e])
    for mat in ("gate", "up", "down"):
        want = float(row["stable_rank_" + mat])
        got = b["stable_rank"][mat][e]
        assert abs(got - want) <= 1e-3 * want, (row, mat, got)
for label, b in blocks.items():
    sim = b["similarity"]["router-logits"]
    rows = [[float(x) for x in line.split(",")] for line in open(f"{exp}/similarity_router_logits_layer{label}.csv")
            if line.strip()]
    for i, row in enumerate(rows):
        for j, want in enumerate(row):
            assert abs(sim[i][j] - want) <= 1e-5, (label, i, j, sim[i][j], want)
PY

expect_status "merge aliased (frequency, no alignment)" 0 "$MOESCOPE" merge "$M" --plan "$E/plan_global_avg4.csv" \
	--calib "$C" --out "$TMP/aliased" --layout aliased --align none --weighting frequency
python_check "merged experts match the golden merge to 1e-5 relative" "$TMP/aliased/model.safetensors" \
	"$E/merged_global_avg4_aliased.safetensors" <<'PY'
import array, json, struct, sys
def load(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    return {k: array.array("f", b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
            for k, v in h.items() if k != "__metadata__"}
got, want = load(sys.argv[2]), load(sys.argv[3])
assert len(want) == 72
for k, w in want.items():
    g = got[k]
    err = sum((a - b) ** 2 for a, b in zip(g, w)) ** 0.5
    norm = sum(b * b for b in w) ** 0.5
    assert err <= 1e-5 * norm, (k, err / norm)
PY
finish
