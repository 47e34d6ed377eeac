#!/usr/bin/env bash
# Peak memory on a model larger than one would hold in memory (docs/design.md §7: one block's experts in float32 plus
# its calibration inputs, whatever the model's size). Generates, streaming through st_writer, a Mixtral-shaped BF16
# checkpoint of 8 layers x 8 experts x 3 matrices of 4096 x 14336 (22.5 GB) plus attention, embeddings and norms
# (23.7 GB in all, 13 shards of 2 GB: more than the 23 GB of RAM of the machine it was written on) with 512 calibration
# tokens per block under BUILD/bigmodel, runs analyze, plan --groups 4 and merge on it under /usr/bin/time -v, and
# prints each command's peak RSS beside the bound. A sampler of /proc/PID/status also records the peak of RssAnon
# (memory the program allocated) and RssFile (pages of the memory-mapped checkpoint it has touched and not released):
# both count in RSS, but only the first is a demand on memory, since clean file pages are dropped under pressure.
#
# Usage: bench/bigmodel.sh BUILD_DIR [--keep]        (make bigmodel runs it; the model is deleted unless --keep)
# LAYERS=N (default 8) generates fewer layers for a quicker run: the peaks are per block, whatever N.
# After the merge it runs capture and perplexity --plan on 512 generated token ids.
# Needs about 37 GB of disk (model and merged checkpoint) and takes about 25 minutes on 2 cores, most of it the
# merge's alignment (4 exact assignments of 14336 neurons per layer). Extra merge options can be given in
# MERGE_OPTS, e.g. MERGE_OPTS='--align none' for a quicker run.
set -eu
build=${1:-build}
keep=${2:-}
root=$build/bigmodel
model=$root/model
moescope=$build/moescope
genmodel=$build/bench/genmodel
E=8 D=4096 F=14336 T=512 LAYERS=${LAYERS:-8}

if [ ! -x /usr/bin/time ]; then
	echo "bigmodel: /usr/bin/time is missing (Debian: apt-get install time)" >&2
	exit 1
fi
for bin in "$moescope" "$genmodel"; do
	[ -x "$bin" ] || { echo "bigmodel: $bin is missing (make BUILD=$build bigmodel builds it)" >&2; exit 1; }
done

rm -rf "$root"
mkdir -p "$root"
echo "generating a Mixtral-shaped checkpoint in $model ..."
start=$(date +%s)
"$genmodel" "$model" --shape mixtral --layers $LAYERS --tokens $T --full --shard-mb 2000
sync
echo "  $(du -sh "$model" | cut -f1) on disk in $(ls "$model"/model-*.safetensors | wc -l) shards," \
	"$(( $(date +%s) - start )) s"

# Bound: one block's experts in float32 plus its calibration inputs in float32.
bound=$(( E * 3 * D * F * 4 + T * D * 4 ))

# sample PID OUT: the peaks of RssAnon and RssFile (kB) of PID while it runs, written to OUT.
sample() {
	local pid=$1 out=$2 anon=0 file=0 a f
	while kill -0 "$pid" 2>/dev/null; do
		a=$(awk '/^RssAnon:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
		f=$(awk '/^RssFile:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
		[ -n "$a" ] && [ "$a" -gt "$anon" ] && anon=$a
		[ -n "$f" ] && [ "$f" -gt "$file" ] && file=$f
		sleep 0.2
	done
	echo "$anon $file" >"$out"
}

gb() { awk -v b="$1" 'BEGIN { printf "%.2f GB", b / 1e9 }'; }

# measure NAME CMD...: runs CMD under /usr/bin/time -v (its own output to $root/NAME.log) and reports.
measure() {
	local name=$1
	shift
	/usr/bin/time -v -o "$root/$name.time" "$@" >"$root/$name.log" 2>&1 &
	local tpid=$! pid=""
	for _ in $(seq 50); do   # the command is the time process's child
		pid=$(pgrep -P "$tpid" | head -n 1 || true)
		[ -n "$pid" ] && break
		sleep 0.1
	done
	[ -n "$pid" ] && sample "$pid" "$root/$name.sample" &
	local spid=$!
	local rc=0
	wait "$tpid" || rc=$?
	wait "$spid" 2>/dev/null || true
	if [ "$rc" -ne 0 ]; then
		echo "bigmodel: $name failed (exit $rc); see $root/$name.log" >&2
		tail -n 5 "$root/$name.log" >&2
		exit 1
	fi
	local rss_kb wall anon_kb file_kb
	rss_kb=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$root/$name.time")
	wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { print $2 }' "$root/$name.time")
	read -r anon_kb file_kb <"$root/$name.sample" 2>/dev/null || { anon_kb=0; file_kb=0; }
	local rss=$((rss_kb * 1024)) anon=$((anon_kb * 1024)) file=$((file_kb * 1024))
	printf '%-8s wall %9s  peak RSS %9s (%5.2f x bound)  peak RssAnon %9s (%5.2f x)  peak RssFile %9s\n' \
		"$name" "$wall" "$(gb $rss)" "$(awk -v a=$rss -v b=$bound 'BEGIN { print a / b }')" \
		"$(gb $anon)" "$(awk -v a=$anon -v b=$bound 'BEGIN { print a / b }')" "$(gb $file)"
}

echo "bound: one block's experts in float32 ($E x 3 x $D x $F x 4 B) + calibration ($T x $D x 4 B) = $(gb $bound)"
measure analyze "$moescope" analyze "$model" --calib "$model/calib.safetensors" --json "$root/report.json"
measure plan "$moescope" plan "$model" --calib "$model/calib.safetensors" --groups 4 --out "$root/plan.csv"
# shellcheck disable=SC2086
measure merge "$moescope" merge "$model" --plan "$root/plan.csv" --calib "$model/calib.safetensors" \
	--out "$root/merged" ${MERGE_OPTS:-}
echo "  merged checkpoint: $(du -sh "$root/merged" | cut -f1)"
# The forward pass on the same model: two sequences of 256 token ids (deterministic, below the vocabulary), the
# calibration set captured, then the plan's merged model beside the original in one streaming pass.
vocab=$(tr -d ' \n\t' <"$model/config.json" | sed -n 's/.*"vocab_size":\([0-9]*\).*/\1/p')
awk -v v="$vocab" 'BEGIN { s = 12345; for (q = 0; q < 2; q++) { line = ""; for (i = 0; i < 256; i++) {
	s = (s * 1103515245 + 12345) % 2147483648; line = line (i ? " " : "") (s % v) } print line } }' >"$root/tokens.txt"
measure capture "$moescope" capture "$model" --tokens "$root/tokens.txt" --out "$root/captured.safetensors"
# shellcheck disable=SC2086
measure perplexity "$moescope" perplexity "$model" --tokens "$root/tokens.txt" --plan "$root/plan.csv" \
	--json "$root/perplexity.json" ${MERGE_OPTS:-}

if [ "$keep" != "--keep" ]; then
	rm -rf "$model" "$root/merged"
	echo "model and merged checkpoint removed (logs and /usr/bin/time output kept in $root)"
fi
