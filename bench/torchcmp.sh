#!/bin/bash
# `make bench`'s last row: `moescope analyze` (usage, router-logits and weight similarity, stable ranks) against the
# same analysis done the MC-SMoE way (bench/mcsmoe_analyze.py: PyTorch on the CPU, svdvals per expert), side by
# side on one generated OLMoE-shaped block (bench/genmodel), each the best of RUNS runs, run one after the other.
# The numbers of both are compared too (frequencies, similarities, stable ranks), so that the two did the same
# analysis. Without an importable torch it says so in one line and exits 0.
# usage: bench/torchcmp.sh BUILD_DIR [RUNS]
set -u
BUILD=${1:-build}
RUNS=${2:-2}
if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
	echo "torch comparison: skipped (python3 cannot import torch; on Debian: apt-get install python3-torch)"
	exit 0
fi
DIR=$BUILD/bench-data/torchcmp
mkdir -p "$DIR"
trap 'rm -rf "$DIR"' EXIT
"$BUILD/bench/genmodel" "$DIR" --shape olmoe --layers 1 >/dev/null || exit 1
sync
now() { date +%s.%N; }
best_ms= best_torch=
for ((r = 0; r < RUNS; r++)); do
	t0=$(now)
	"$BUILD/moescope" analyze "$DIR" --calib "$DIR/calib.safetensors" --similarity router-logits,weight \
		--json "$DIR/moescope.json" >/dev/null || exit 1
	t=$(echo "$(now) - $t0" | bc)
	if [ -z "$best_ms" ] || [ "$(echo "$t < $best_ms" | bc)" = 1 ]; then best_ms=$t; fi
	t0=$(now)
	/usr/bin/python3 bench/mcsmoe_analyze.py "$DIR" "$DIR/calib.safetensors" --json "$DIR/torch.json" >/dev/null ||
		exit 1
	t=$(echo "$(now) - $t0" | bc)
	if [ -z "$best_torch" ] || [ "$(echo "$t < $best_torch" | bc)" = 1 ]; then best_torch=$t; fi
done
/usr/bin/python3 - "$DIR/moescope.json" "$DIR/torch.json" "$best_ms" "$best_torch" <<'PY'
import json, sys
ms, pt = (json.load(open(p)) for p in sys.argv[1:3])
t_ms, t_pt = float(sys.argv[3]), float(sys.argv[4])
a, b = ms["blocks"][0], pt["blocks"][0]
def worst(x, y, rel=False):
    pairs = []
    def walk(u, v):
        if isinstance(u, list):
            for p, q in zip(u, v):
                walk(p, q)
        else:
            pairs.append((u, v))
    walk(x, y)
    return max(abs(u - v) / (abs(v) if rel else 1.0) for u, v in pairs)
freq = worst(a["frequency"], b["frequency"])
sr = max(worst(a["stable_rank"][m], b["stable_rank"][m], rel=True) for m in ("gate", "up", "down"))
sim = max(worst(a["similarity"][s], b["similarity"][s]) for s in ("router-logits", "weight"))
ok = freq <= 1e-3 and sr <= 1e-3 and sim <= 1e-5
print(f"analyze, OLMoE block (E=64, d=2048, f=1024, 4096 tokens): moescope {t_ms:.2f} s, PyTorch {pt['threads']} "
      f"threads (MC-SMoE way, svdvals) {t_pt:.2f} s: {t_pt / t_ms:.1f}x; agreement: frequency {freq:.1e}, "
      f"stable rank {sr:.1e} rel, similarity {sim:.1e} ({'ok' if ok else 'DIFFERENT'})")
sys.exit(0 if ok else 1)
PY
