#!/usr/bin/env bash
# The model-level check of the compact merge (README, "How a compact block is fitted"): perplexity --plan on the
# bundled samples for the compact merge (default options), its aliased layout and pruning at the same G, on the
# token file of the forward tests. Usage: scripts/ppl_table.sh [MOESCOPE] [SAMPLES]
set -euo pipefail
M=${1:-build/moescope}
S=${2:-build/samples}
TOK=tests/data/forward/tokens.txt
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
row() { # row SAMPLE G
	local s=$1 g=$2
	"$M" plan "$S/$s" --calib "$S/$s/calib.safetensors" --groups "$g" --out "$TMP/m.csv" >/dev/null
	"$M" plan "$S/$s" --calib "$S/$s/calib.safetensors" --groups "$g" --method prune-frequency \
		--out "$TMP/p.csv" >/dev/null
	local out=""
	for v in "m.csv" "m.csv --layout aliased" "p.csv --layout aliased" "p.csv"; do
		set -- $v
		"$M" perplexity "$S/$s" --tokens "$TOK" --plan "$TMP/$1" "${@:2}" --json "$TMP/r.json" >/dev/null
		out+=$(/usr/bin/python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(" | %.4f / %.3f / %.3f" % (r["kl"]["mean"], r["merged"]["ppl"], r["top1_agreement"]), end="")' "$TMP/r.json")
	done
	local base
	base=$(/usr/bin/python3 -c 'import json,sys; print("%.3f" % json.load(open(sys.argv[1]))["original"]["ppl"])' "$TMP/r.json")
	echo "| $s, $g | $base$out |"
}
echo "| sample, G | original ppl | compact (default) | aliased | prune-frequency (router rows kept) | prune-frequency + recovery |"
echo "|---|---|---|---|---|---|"
row mixtral-tiny 3
row mixtral-tiny 6
row olmoe-mini 6
row qwen2moe-tiny 6
