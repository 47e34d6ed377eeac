#!/usr/bin/env bash
# End to end on a real terminal: the interactive application in a detached tmux session (its own server socket),
# driven with send-keys and read with capture-pane. Opens mixtral-tiny with its calibration, lowers G in block 1,
# exports the plan, commits a compact merge, quits; then checks the CSV and that the output opens.
. "$(dirname "$0")/lib.sh"
SAMPLES=${SAMPLES:-$BUILD/samples}
ROOT=$(pwd)
MT=$SAMPLES/mixtral-tiny
case $MT in /*) ;; *) MT=$ROOT/$MT ;; esac
BIN=$MOESCOPE
case $BIN in /*) ;; *) BIN=$ROOT/$BIN ;; esac

if ! command -v tmux >/dev/null 2>&1; then
	echo "tmux is not installed: skipped"
	finish
	exit $?
fi
SOCK="moescope-test-$$"
T="env LC_ALL=C.UTF-8 tmux -L $SOCK"
trap '$T kill-server 2>/dev/null; rm -rf "$TMP"' EXIT

screen_text() { $T capture-pane -p -t app 2>/dev/null; }

# wait_for NAME PATTERN [SECONDS]: polls the pane until PATTERN (grep -E) shows, at most SECONDS (default 60:
# the binary runs under the sanitizers).
wait_for() {
	local name=$1 pattern=$2 limit=${3:-60} i=0
	while [ "$i" -lt $((limit * 10)) ]; do
		if screen_text | grep -qE -- "$pattern"; then
			pass "$name"
			return 0
		fi
		sleep 0.1
		i=$((i + 1))
	done
	fail "$name" "no /$pattern/ after ${limit}s; screen:
$(screen_text)"
	return 1
}

keys() { $T send-keys -t app "$@"; }
text() { $T send-keys -t app -l -- "$1"; }

$T new-session -d -s app -x 100 -y 30 \
	"cd '$TMP' && LC_ALL=C.UTF-8 '$BIN' '$MT' '$MT/calib.safetensors' 2>'$TMP/stderr'; echo \$? >'$TMP/rc'; sleep 30" ||
	{ fail "tmux session" "could not start"; finish; exit 1; }

# every block's statistics in, nothing left running (no progress bar)
wait_for "opening screen" "Usage of block 0, by usage" || { finish; exit 1; }
wait_for "statistics in" "entropy [0-9.]+ bits"
keys j
text -
text -
text -
wait_for "block 1 merged into 5 groups and evaluated" "1 [^ ]+ +5 +8\+ +0\.[0-9]{4}"
# An escape sequence curses does not know (none of tmux-256color's terminfo keys) is dropped whole: before, its bytes
# acted as keys ('[' a compression step, '5' the compression view, '~' nothing).
keys 4
wait_for "groups view" "Groups of block 1"
text $'\e[99;5~'
wait_for "unknown sequence reported" "unknown key sequence ignored"
if screen_text | grep -q "Groups of block 1"; then pass "the sequence's bytes were not keys"; else
	fail "the sequence's bytes were not keys" "$(screen_text)"; fi
keys e
wait_for "export prompt" "Export plan"
keys C-u
text "$TMP/plan.csv"
keys Enter
wait_for "plan exported" "plan written to"
keys c
wait_for "commit dialog" "Commit plan"
keys C-u
text "$TMP/merged"
keys Enter
wait_for "commit done" "Commit done" 120
keys Enter
keys q
i=0
while [ ! -f "$TMP/rc" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
if [ -f "$TMP/rc" ] && [ "$(cat "$TMP/rc")" = 0 ]; then
	pass "quit with status 0"
else
	fail "quit with status 0" "status $(cat "$TMP/rc" 2>/dev/null || echo none); $(head -c 600 "$TMP/stderr")"
fi

# the exported plan: block 1 has 5 groups, the others all 8 experts in their own groups
groups() { awk -F, -v b="$1" 'NR > 1 && $1 == b { if ($3 + 1 > g) g = $3 + 1 } END { print g + 0 }' "$TMP/plan.csv"; }
if [ -f "$TMP/plan.csv" ] && [ "$(groups 1)" = 5 ] && [ "$(groups 0)" = 8 ] && [ "$(groups 3)" = 8 ]; then
	pass "exported plan has G 5 in block 1"
else
	fail "exported plan has G 5 in block 1" "groups: $(groups 0) $(groups 1) $(groups 2) $(groups 3)"
fi
expect_status "merged checkpoint opens" 0 "$BIN" info "$TMP/merged"
expect_grep "compact: E' is the largest G" "experts +8 per block" "$TMP/out"
expect_grep "the plan is kept beside the weights" "." "$TMP/merged/moescope_plan.csv"
finish
