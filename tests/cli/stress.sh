# Interrupting a merge (docs/design.md §4.3): SIGINT or SIGTERM part-way through a merge of olmoe-mini must end with
# exit status 1 and one line saying it was interrupted, leave neither the output nor the temporary directory, and
# leave the input's files as they were. The merge runs in the background; the signal goes when the temporary directory
# ".NAME.moescope-*" appears beside the output (or, in the later variants, once the first or the second shard is being
# written into it). Polling is bounded; a merge that finishes before the signal could be sent is retried with more
# work (compression), and reported if it still outruns the poll.
. "$(dirname "$0")/lib.sh"
S=${SAMPLES:-$BUILD/samples}/olmoe-mini
C=$S/calib.safetensors
if [ ! -f "$S/config.json" ]; then
	fail "sample $S missing (make writes it)"
	finish
	exit 1
fi
P=$TMP/plan.csv
expect_status "olmoe-mini: a plan to merge" 0 "$MOESCOPE" plan "$S" --calib "$C" --groups 8 --out "$P"

digest() { (cd "$S" && sha256sum -- * | sha256sum); }
before=$(digest)

# The temporary directory of OUT, if there is one.
tmp_of() {
	local d
	for d in "$(dirname "$1")"/."$(basename "$1")".moescope-*; do
		[ -d "$d" ] && { echo "$d"; return 0; }
	done
	return 1
}

# ready OUT STAGE: 0 when the merge into OUT has reached STAGE: "tmp" (its temporary directory exists), "shard" (a
# weights file is being written in it) or "shard2" (a second shard of a sharded output is being written).
ready() {
	local t
	t=$(tmp_of "$1") || return 1
	case $2 in
	tmp) return 0 ;;
	shard) compgen -G "$t/model*.safetensors" >/dev/null ;;
	shard2) compgen -G "$t/model-00002-of-*.safetensors" >/dev/null ;;
	esac
}

# interrupt NAME SIGNAL STAGE [MERGE OPTIONS...]: one attempt; sets $outcome to "sent" or "too-fast".
interrupt() {
	local name=$1 sig=$2 stage=$3
	shift 3
	local out=$TMP/$name
	"$MOESCOPE" merge "$S" --plan "$P" --calib "$C" --out "$out" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
	local pid=$! i=0
	outcome=too-fast
	while [ $i -lt 3000 ] && kill -0 "$pid" 2>/dev/null; do # at most 30 s
		if ready "$out" "$stage"; then
			kill -s "$sig" "$pid" && outcome=sent
			break
		fi
		sleep 0.01
		i=$((i + 1))
	done
	[ $i -lt 3000 ] || kill -s KILL "$pid" 2>/dev/null
	wait "$pid"
	rc=$?
}

# check NAME SIGNAL STAGE [MERGE OPTIONS...]: interrupts, retrying with more work (compression) when the merge
# outruns the signal, then checks.
check_interrupt() {
	local name=$1 sig=$2 stage=$3
	shift 3
	interrupt "$name" "$sig" "$stage" "$@"
	if [ "$outcome" = too-fast ]; then
		rm -rf "${TMP:?}/$name"
		interrupt "$name" "$sig" "$stage" "$@" --rank-energy 0.9 --sparse-ratio 0.05
	fi
	if [ "$outcome" = too-fast ]; then
		fail "$name: SIG$sig" "the merge ended (exit $rc) before it reached stage '$stage', even with compression: the poll could not catch it"
		return
	fi
	if [ "$rc" -eq 1 ]; then pass "$name: SIG$sig at stage '$stage' exits 1"; else fail "$name: SIG$sig exit $rc, wanted 1" "$(head -c 400 "$TMP/$name.err")"; fi
	local lines
	lines=$(wc -l <"$TMP/$name.err")
	if [ "$lines" -eq 1 ] && grep -qE '^moescope: .*interrupted' "$TMP/$name.err"; then
		pass "$name: one line says interrupted"
	else
		fail "$name: stderr" "$lines lines: $(head -c 400 "$TMP/$name.err")"
	fi
	if [ ! -e "$TMP/$name" ] && ! tmp_of "$TMP/$name" >/dev/null; then
		pass "$name: neither output nor temporary directory left"
	else
		fail "$name: left behind" "$(ls -A "$TMP" | tr '\n' ' ')"
	fi
	if [ "$(digest)" = "$before" ]; then pass "$name: input files unchanged (sha256)"; else fail "$name: input changed"; fi
}

check_interrupt sigint-early INT tmp
check_interrupt sigterm-early TERM tmp
check_interrupt sigint-writing INT shard
check_interrupt sigterm-second-shard TERM shard2 --max-shard-size 1MB

# After all that, the same merge left alone completes, so the interrupted ones were stopped, not broken.
expect_status "an uninterrupted merge completes" 0 "$MOESCOPE" merge "$S" --plan "$P" --calib "$C" --out "$TMP/whole"
expect_status "...and its output opens" 0 "$MOESCOPE" info "$TMP/whole"
finish
