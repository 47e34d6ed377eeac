# The planted samples end to end: plans recover the planted prototypes, errors grow as groups shrink, and a
# compact merge of every family re-opens, keeps its other tensors and evaluates as previewed.
. "$(dirname "$0")/lib.sh"
S=${SAMPLES:-$BUILD/samples}
if [ ! -f "$S/mixtral-tiny/config.json" ]; then
	fail "samples missing in $S (make writes them)"
	finish
	exit 1
fi

py() { # py NAME ARGS... < script : a check written in Python
	local name=$1
	shift
	if python3 - "$@" >"$TMP/py" 2>&1; then pass "$name"; else fail "$name" "$(tail -3 "$TMP/py")"; fi
}

recovers() { # recovers SAMPLE PLAN: every block's groups are the planted prototypes, leads dominant
	py "$1: $3 recovers the planted prototypes in every block" "$S/$1/truth.json" "$2" <<'PY'
import csv, json, sys
truth = {b["label"]: b for b in json.load(open(sys.argv[1]))["blocks"]}
groups = {}
for r in csv.DictReader(open(sys.argv[2])):
    groups.setdefault(r["layer"], {})[int(r["expert"])] = (int(r["group"]), int(r["dominant"]))
for label, t in truth.items():
    g = groups[label]
    proto = t["prototype"]
    part = lambda key: sorted(sorted(e for e in range(len(proto)) if key(e) == k) for k in set(map(key, range(len(proto)))))
    assert part(lambda e: g[e][0]) == part(lambda e: proto[e]), (label, g, proto)
    assert sorted(e for e in g if g[e][1]) == sorted(t["lead"]), (label, "dominants", t["lead"])
PY
}

for s in mixtral-tiny olmoe-mini qwen2moe-tiny switch-tiny; do
	P=$(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['blocks'][0]['lead']))" "$S/$s/truth.json")
	C=$S/$s/calib.safetensors
	expect_status "$s: plan msmoe router-logits G=$P" 0 "$MOESCOPE" plan "$S/$s" --calib "$C" --groups "$P" \
		--out "$TMP/$s.msmoe.csv"
	recovers "$s" "$TMP/$s.msmoe.csv" "msmoe/router-logits"
	expect_status "$s: plan hc on expert-output G=$P" 0 "$MOESCOPE" plan "$S/$s" --calib "$C" --groups "$P" \
		--method hc --similarity expert-output --out "$TMP/$s.hc.csv"
	recovers "$s" "$TMP/$s.hc.csv" "hc/expert-output"

	expect_status "$s: compact merge" 0 "$MOESCOPE" merge "$S/$s" --plan "$TMP/$s.msmoe.csv" --calib "$C" \
		--out "$TMP/$s.merged"
	expect_status "$s: merged model opens" 0 "$MOESCOPE" info "$TMP/$s.merged"
	expect_grep "$s: info shows E' = $P" "experts +$P per block" "$TMP/out"
	"$MOESCOPE" eval "$S/$s" --calib "$C" --plan "$TMP/$s.msmoe.csv" --json "$TMP/$s.preview.json" >/dev/null 2>&1
	"$MOESCOPE" eval "$TMP/$s.merged" --calib "$C" --json "$TMP/$s.merged.json" >/dev/null 2>&1
	py "$s: non-expert tensors byte-identical, merged eval = preview, lse-fit best router" "$S/$s" \
		"$TMP/$s.merged" "$TMP/$s.preview.json" "$TMP/$s.merged.json" <<'PY'
import glob, hashlib, json, struct, sys
src, dst, pre, got = sys.argv[1:5]
def tensors(d):
    out = {}
    for f in glob.glob(d + "/*.safetensors"):
        if f.endswith("calib.safetensors"):
            continue
        b = open(f, "rb").read()
        n = struct.unpack("<Q", b[:8])[0]
        for k, v in json.loads(b[8:8 + n]).items():
            if k != "__metadata__":
                out[k] = hashlib.sha256(b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]]).hexdigest()
    return out
a, b = tensors(src), tensors(dst)
moe = (".experts.", ".gate.weight", ".router.classifier.")
plain = [k for k in a if not any(m in k for m in moe) or "shared_expert" in k]
assert len(plain) > 5
for k in plain:
    assert a[k] == b.get(k), k
p, g = json.load(open(pre)), json.load(open(got))
for x, y in zip(p["blocks"], g["blocks"]):
    assert abs(x["output_norm"] - y["output_norm"]) <= 1e-4 * x["output_norm"], (x["label"], x["output_norm"], y["output_norm"])
for blk in json.load(open(dst + "/moescope_report.json"))["blocks"]:
    fit = blk["router_fit_residual"]
    assert fit["lse-fit"] <= fit["mean"] and fit["lse-fit"] <= fit["dominant"], (blk["label"], fit)
PY
done

# Fewer groups, larger errors: mixtral-tiny at G = 6, 3, 1 in every block.
M=$S/mixtral-tiny
for g in 6 3 1; do
	"$MOESCOPE" plan "$M" --calib "$M/calib.safetensors" --groups $g --out "$TMP/g$g.csv" >/dev/null 2>&1
	"$MOESCOPE" eval "$M" --calib "$M/calib.safetensors" --plan "$TMP/g$g.csv" --json "$TMP/g$g.json" >/dev/null 2>&1
done
py "mixtral-tiny: output error grows as groups shrink (6 > 3 > 1) in every block" "$TMP/g6.json" "$TMP/g3.json" \
	"$TMP/g1.json" <<'PY'
import json, sys
runs = [json.load(open(p))["blocks"] for p in sys.argv[1:4]]
for b6, b3, b1 in zip(*runs):
    e = [b["eval"]["output_rel_error"] for b in (b6, b3, b1)]
    assert e[0] < e[1] < e[2], (b6["label"], e)
PY
finish
