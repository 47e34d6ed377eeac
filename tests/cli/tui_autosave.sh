#!/usr/bin/env bash
# The autosave end to end (tui/autosave.h): the real binary on a terminal (a detached tmux session with its own
# server socket) with XDG_STATE_HOME in the test's directory. Lowers G in block 1, waits for the autosave, kills
# the process with SIGKILL, opens the model again: the restore dialog; y brings G 6 back, checked on the screen
# and in the exported CSV; export removes the file; a change then a confirmed quit leaves none. Then scripted
# runs: broken, damaged and foreign autosaves are reported and discarded, y and n answer the dialog, an
# unanswered dialog keeps the file, a copy of the model elsewhere does not see it.
. "$(dirname "$0")/lib.sh"
SAMPLES=${SAMPLES:-$BUILD/samples}
ROOT=$(pwd)
MT=$SAMPLES/mixtral-tiny
case $MT in /*) ;; *) MT=$ROOT/$MT ;; esac
BIN=$MOESCOPE
case $BIN in /*) ;; *) BIN=$ROOT/$BIN ;; esac
STATE=$TMP/state
DIR=$STATE/moescope
export LC_ALL=C.UTF-8
unset NO_COLOR

if ! command -v tmux >/dev/null 2>&1; then
	echo "tmux is not installed: skipped"
	finish
	exit $?
fi
SOCK="moescope-autosave-$$"
T="tmux -L $SOCK"
trap '$T kill-server 2>/dev/null; rm -rf "$TMP"' EXIT

# run N: the application on mixtral-tiny; its pid in $TMP/pid.N (exec keeps the shell's), stderr in
# $TMP/stderr.N, its exit status in $TMP/rc.N.
cat >"$TMP/run.sh" <<EOF
#!/bin/sh
echo \$\$ >"$TMP/pid.\$1"
cd "$TMP" || exit 1
exec env XDG_STATE_HOME="$STATE" "$BIN" tui "$MT" "$MT/calib.safetensors" 2>"$TMP/stderr.\$1"
EOF
start() {
	$T new-session -d -s "app$1" -x 100 -y 30 "sh '$TMP/run.sh' $1; echo \$? >'$TMP/rc.$1'; sleep 60"
}
screen_text() { $T capture-pane -p -t "app$1" 2>/dev/null; }
keys() { local n=$1; shift; $T send-keys -t "app$n" "$@"; }
text() { $T send-keys -t "app$1" -l -- "$2"; }

# poll NAME SECONDS CMD...: passes when CMD succeeds within SECONDS (the binary may run under the sanitizers).
poll() {
	local name=$1 limit=$2 i=0
	shift 2
	while [ "$i" -lt $((limit * 10)) ]; do
		if "$@"; then
			pass "$name"
			return 0
		fi
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}
on_screen() { screen_text "$1" | grep -qE -- "$2"; }
# wait_for N NAME PATTERN [SECONDS]
wait_for() {
	poll "$2" "${4:-60}" on_screen "$1" "$3" || fail "$2" "no /$3/ after ${4:-60}s; screen:
$(screen_text "$1")"
}
autosave() { ls "$DIR"/mixtral-tiny-*.autosave 2>/dev/null | head -n 1; }
autosave_has() { local f; f=$(autosave) && [ -n "$f" ] && grep -qE -- "$1" "$f"; }
# A running instance holds NAME.autosave.lock (tui/autosave.h); it goes when the instance ends.
no_autosave() { [ -z "$(ls "$DIR" 2>/dev/null | grep -v '\.autosave\.lock$')" ]; }
exited() { [ -f "$TMP/rc.$1" ]; }

# ---- a kill loses nothing ----
start 1 || { fail "tmux session" "could not start"; finish; exit 1; }
wait_for 1 "statistics in" "entropy [0-9.]+ bits"
if no_autosave; then pass "opening writes no autosave"; else fail "opening writes no autosave" "$(ls "$DIR")"; fi
keys 1 j
text 1 -
text 1 -
poll "G 6 in block 1 autosaved" 60 autosave_has "^groups 8 6 8 8$" ||
	fail "G 6 in block 1 autosaved" "$(ls -la "$DIR" 2>&1; cat "$(autosave)" 2>/dev/null | head -n 14)"
# the layout and router decide the error as much as G: they are kept too
keys 1 L
keys 1 R
poll "layout and router autosaved" 60 autosave_has "^layout aliased$" ||
	fail "layout and router autosaved" "$(cat "$(autosave)" 2>/dev/null | head -n 16)"
poll "the router autosaved" 60 autosave_has "^router lse-fit$" || fail "the router autosaved" "$(grep router "$(autosave)")"
kill -9 "$(cat "$TMP/pid.1")"
poll "killed" 20 exited 1 || fail "killed" "no exit status"
if [ "$(cat "$TMP/rc.1" 2>/dev/null)" = 137 ]; then pass "SIGKILL ended it"; else fail "SIGKILL ended it" "status $(cat "$TMP/rc.1" 2>/dev/null)"; fi
f=$(autosave)
if [ -n "$f" ] && cp "$f" "$TMP/saved.autosave"; then pass "the autosave outlives the kill"; else fail "the autosave outlives the kill" "$(ls -la "$DIR" 2>&1)"; fi
expect_grep "its header names the model" "^model $MT$" "$TMP/saved.autosave"
expect_grep "and the calibration set" "^calib $MT/calib.safetensors$" "$TMP/saved.autosave"
if [ -z "$(ls "$DIR" | grep -v '\.autosave$' | grep -v '\.autosave\.lock$')" ]; then pass "no scratch file left"; else fail "no scratch file left" "$(ls "$DIR")"; fi

# ---- opened again: the dialog, y ----
start 2
wait_for 2 "restore dialog" "An unsaved plan from [0-9-]+ [0-9:]+ was found"
wait_for 2 "restore question" "Restore it\? \(y/n\)"
keys 2 y
wait_for 2 "restored" "plan restored from the autosave"
wait_for 2 "layout and router restored" "L aliased  R lse-fit"
wait_for 2 "block 1 back at G 6 and evaluated" "1 [^ ]+ +6 +8\+ +0\.[0-9]{4}"
keys 2 e
wait_for 2 "export prompt" "Export plan"
keys 2 C-u
text 2 "$TMP/restored.csv"
keys 2 Enter
wait_for 2 "exported" "plan written to"
groups() { awk -F, -v b="$1" 'NR > 1 && $1 == b { if ($3 + 1 > g) g = $3 + 1 } END { print g + 0 }' "$2"; }
if [ -f "$TMP/restored.csv" ] && [ "$(groups 1 "$TMP/restored.csv")" = 6 ] && [ "$(groups 0 "$TMP/restored.csv")" = 8 ]; then
	pass "the restored plan has G 6 in block 1"
else
	fail "the restored plan has G 6 in block 1" "$(head -c 300 "$TMP/restored.csv" 2>&1)"
fi
if no_autosave; then pass "export removes the autosave"; else fail "export removes the autosave" "$(ls "$DIR")"; fi

# ---- a change (block 0, selected on opening), then a confirmed quit: nothing left ----
text 2 -
poll "a change after export autosaved again" 30 autosave_has "^groups 7 6 8 8$" ||
	fail "a change after export autosaved again" "$(ls -la "$DIR" 2>&1)"
keys 2 q
wait_for 2 "quit asks" "quit anyway\? y/n"
keys 2 y
poll "quit" 30 exited 2 || fail "quit" "no exit status"
if [ "$(cat "$TMP/rc.2" 2>/dev/null)" = 0 ]; then pass "quit with status 0"; else fail "quit with status 0" "$(cat "$TMP/rc.2" 2>/dev/null); $(head -c 400 "$TMP/stderr.2")"; fi
if no_autosave; then pass "a confirmed quit leaves no autosave"; else fail "a confirmed quit leaves no autosave" "$(ls "$DIR")"; fi
$T kill-server 2>/dev/null

# ---- scripted runs on a planted autosave ----
NAME=$(basename "$f")
# script NAME KEYS...: runs the keys (one a line) with the state directory, the dump in $TMP/NAME.txt.
script() {
	local name=$1
	shift
	printf '%s\n' "$@" >"$TMP/$name.keys"
	(cd "$TMP" && XDG_STATE_HOME="$STATE" "$BIN" tui "$MT" "$MT/calib.safetensors" --script "$TMP/$name.keys" \
		--dump "$TMP/$name.txt") >"$TMP/out" 2>"$TMP/err"
	local rc=$?
	if [ "$rc" -eq 0 ] && ! grep -qE "Sanitizer|runtime error" "$TMP/err"; then
		pass "$name: exit 0"
	else
		fail "$name: exit 0" "exit $rc: $(head -c 400 "$TMP/err")"
	fi
}
plant() { mkdir -p "$DIR" && cp "$1" "$DIR/$NAME"; }
gone() { if no_autosave; then pass "$1: discarded"; else fail "$1: discarded" "$(ls "$DIR")"; fi; }

plant "$TMP/saved.autosave"
script restore_y wait y wait dump
expect_grep "restore_y: block 1 at G 6" "^.1 [^ ]+ +6 +8\+ +0\.[0-9]{4}" "$TMP/restore_y.txt"
gone "restore_y: the script's end is a clean exit, and the file"

plant "$TMP/saved.autosave"
script restore_n wait n wait
expect_grep "restore_n: the plan stays as opened" "^.1 [^ ]+ +8 " "$TMP/restore_n.txt"
expect_grep "restore_n: says so" "the autosave was discarded" "$TMP/restore_n.txt"
gone "restore_n"

plant "$TMP/saved.autosave"
script unanswered wait dump
expect_grep "unanswered: the dialog shows" "Restore it\? \(y/n\)" "$TMP/unanswered.txt"
if [ -f "$DIR/$NAME" ]; then pass "unanswered: the autosave is kept"; else fail "unanswered: the autosave is kept"; fi
rm -f "$DIR/$NAME"

# broken KIND PATTERN: the planted file is reported with PATTERN in an error dialog, then removed.
broken() {
	script "$1" wait dump "<Enter>"
	expect_grep "$1: reported" "Autosave discarded" "$TMP/$1.txt"
	# The dialog wraps its message at its width: join the lines (dropping the frame) before looking for words.
	tr -d '\n│' <"$TMP/$1.txt" | tr -s ' ' >"$TMP/$1.flat"
	expect_grep "$1: says why" "$2" "$TMP/$1.flat"
	gone "$1"
}
head -c 200 "$TMP/saved.autosave" >"$TMP/truncated"
plant "$TMP/truncated"
broken truncated "truncated"
printf 'PK\003\004\000\377 not text at all' >"$TMP/garbage"
plant "$TMP/garbage"
broken garbage "not a moescope autosave"
sed 's/^config [0-9]* /config 1 /' "$TMP/saved.autosave" >"$TMP/foreign"
plant "$TMP/foreign"
broken foreign "config.json changed"
sed '$ s/,/;/' "$TMP/saved.autosave" >"$TMP/damaged"
plant "$TMP/damaged"
broken damaged "checksum does not match"
: >"$TMP/empty"
plant "$TMP/empty"
broken empty "empty file"
plant "$TMP/saved.autosave"
chmod 000 "$DIR/$NAME"
if [ -r "$DIR/$NAME" ]; then
	rm -f "$DIR/$NAME"  # root reads anything
else
	broken unreadable "cannot open"
fi

# A copy of the model at another path has its own autosave: the planted one is not offered.
cp -r "$MT" "$TMP/copy"
plant "$TMP/saved.autosave"
printf 'wait\n' >"$TMP/copy.keys"
(cd "$TMP" && XDG_STATE_HOME="$STATE" "$BIN" tui "$TMP/copy" "$TMP/copy/calib.safetensors" --script "$TMP/copy.keys" \
	--dump "$TMP/copy.txt") >"$TMP/out" 2>"$TMP/err"
if grep -q "Restore it" "$TMP/copy.txt"; then fail "another path: no dialog"; else pass "another path: no dialog"; fi
if [ -f "$DIR/$NAME" ]; then pass "another path: the original's autosave is untouched"; else fail "another path: the original's autosave is untouched"; fi
finish
