#!/usr/bin/env bash
# Measures the README's table of held-out per-block output errors: an msmoe plan at G merged with the default
# options (compact layout, auto router, refit), the same plan in the aliased layout, and pruning at the same G
# (--method prune-frequency) plain (aliased: the kept experts' own router rows) and with the default compact
# recovery. Bundled samples (`moescope samples`) use their own calibration sets; the tiny DeepSeek-V2 and PhiMoE
# checkpoints of tests/data/forward/models get one captured from 16 sequences of 96 pseudo-random token ids.
#
#     scripts/compact_table.sh [MOESCOPE] [SAMPLES_DIR]      (defaults: build/moescope, build/samples)
#
# Prints one markdown row per case: the errors of every block, in block order.
set -eu
moescope=${1:-build/moescope}
samples=${2:-build/samples}
work=$(mktemp -d "${TMPDIR:-/tmp}/moescope-table-XXXXXX")
trap 'rm -rf "$work"' EXIT

# 16 lines of 96 ids in 0..63 from a fixed linear congruential sequence (the tiny models' vocabulary is 64).
awk 'BEGIN { s = 14; for (i = 0; i < 16; i++) { line = ""; for (j = 0; j < 96; j++) {
	s = (s * 1103515245 + 12345) % 2147483648; line = line (j ? " " : "") int(s / 65536) % 64 }
	print line } }' > "$work/tokens.txt"

errors() {   # MODEL CALIB PLAN [eval options]: the blocks' output errors as eval prints them, space separated
	local m=$1 c=$2 p=$3
	shift 3
	"$moescope" eval "$m" --calib "$c" --plan "$p" "$@" | awk '$1 == "block" { for (i = 1; i < NF; i++)
		if ($i == "error") printf "%s%s", (n++ ? " " : ""), $(i + 1) } END { print "" }'
}

round3() {   # a list of numbers to 3 decimals
	awk -v a="$1" 'BEGIN { n = split(a, x, " "); for (i = 1; i <= n; i++) printf "%s%.3f", (i > 1 ? " " : ""), x[i];
		print "" }'
}

ratio() {    # two lists of numbers: their element-wise ratio
	awk -v a="$1" -v b="$2" 'BEGIN { n = split(a, x, " "); split(b, y, " ");
		for (i = 1; i <= n; i++) printf "%s%s", (i > 1 ? " " : ""), (y[i] > 0 ? sprintf("%.2f", x[i] / y[i]) : "-");
		print "" }'
}

row() {      # NAME MODEL CALIB G
	local name=$1 m=$2 c=$3 g=$4
	"$moescope" plan "$m" --calib "$c" --groups "$g" --out "$work/msmoe.csv" > /dev/null
	"$moescope" plan "$m" --calib "$c" --groups "$g" --method prune-frequency --out "$work/prune.csv" > /dev/null
	local compact aliased prune prune_refit
	compact=$(errors "$m" "$c" "$work/msmoe.csv")
	aliased=$(errors "$m" "$c" "$work/msmoe.csv" --layout aliased)
	prune=$(errors "$m" "$c" "$work/prune.csv" --layout aliased)
	prune_refit=$(errors "$m" "$c" "$work/prune.csv")
	echo "| $name, $g | $(round3 "$compact") | $(round3 "$aliased") | $(ratio "$compact" "$aliased") |" \
	     "$(round3 "$prune") | $(round3 "$prune_refit") |"
}

echo "| sample, G | compact (default) | aliased | compact / aliased | prune-frequency | prune-frequency + refit |"
echo "|---|---|---|---|---|---|"
for case in "mixtral-tiny 3" "mixtral-tiny 6" "olmoe-mini 6" "qwen2moe-tiny 6" "switch-tiny 4"; do
	set -- $case
	row "$1" "$samples/$1" "$samples/$1/calib.safetensors" "$2"
done
for name in deepseek-tiny phimoe-tiny; do
	m=tests/data/forward/models/$name
	"$moescope" capture "$m" --tokens "$work/tokens.txt" --out "$work/$name.safetensors" > /dev/null
	row "$name" "$m" "$work/$name.safetensors" 2
done
