#!/usr/bin/env bash
# Scripted runs of the interactive application without a terminal (`moescope tui --script`): each script in
# tests/tui/scripts/NAME.keys runs on a sample and its --dump must equal tests/tui/expected/NAME.txt.
# UPDATE=1 tests/cli/tui_screens.sh BUILD rewrites the expected screens (look at the diff before committing).
. "$(dirname "$0")/lib.sh"
SAMPLES=${SAMPLES:-$BUILD/samples}
ROOT=$(pwd)
MT=$ROOT/$SAMPLES/mixtral-tiny
case $SAMPLES in /*) MT=$SAMPLES/mixtral-tiny ;; esac
OM=${MT%/mixtral-tiny}/olmoe-mini
BIN=$MOESCOPE
case $BIN in /*) ;; *) BIN=$ROOT/$BIN ;; esac
SCRIPTS=$ROOT/tests/tui/scripts
EXPECTED=$ROOT/tests/tui/expected
export LC_ALL=C.UTF-8
unset NO_COLOR

# screen NAME [ARGS...]: runs NAME.keys on mixtral-tiny with its calibration (from $TMP, so paths typed in the
# script land there) and compares the dump.
screen() {
	local name=$1
	shift
	(cd "$TMP" && "$BIN" tui "$MT" "$MT/calib.safetensors" --script "$SCRIPTS/$name.keys" \
		--dump "$TMP/$name.txt" "$@") >"$TMP/out" 2>"$TMP/err"
	local rc=$?
	if [ "$rc" -ne 0 ]; then
		fail "$name" "exit $rc: $(head -c 400 "$TMP/err")"
		return
	fi
	if [ "${UPDATE:-0}" = 1 ]; then
		cp "$TMP/$name.txt" "$EXPECTED/$name.txt"
		pass "$name (updated)"
	elif diff -u "$EXPECTED/$name.txt" "$TMP/$name.txt" >"$TMP/diff"; then
		pass "$name"
	else
		fail "$name" "screen differs:
$(head -n 40 "$TMP/diff")"
	fi
}

screen opening
screen heatmap_by_group
screen help --size 100x60
screen commit_dialog
"$BIN" info "$TMP/merged" >"$TMP/info.txt" 2>&1
expect_grep "commit wrote an aliased checkpoint that opens" "experts +8 per block" "$TMP/info.txt"

printf 'layer,expert,group,dominant,frequency\n0,0,0,1,0.5\n7,0,0,1,0.5\n' >"$TMP/bad_plan.csv"
screen import_error
screen small_screen --size 80x24
NO_COLOR=1 screen ascii_mono --ascii
if LC_ALL=C grep -q '[^ -~]' "$TMP/ascii_mono.txt"; then
	fail "ascii run writes ASCII only" "$(LC_ALL=C grep -n '[^ -~]' "$TMP/ascii_mono.txt" | head -3)"
else
	pass "ascii run writes ASCII only"
fi

# With a token file the header has the model line: exact screens before and after a change, and in between the
# old figures marked stale (the rest of that screen depends on the worker's timing, so only its model line is
# compared, with the line of the screen before).
(cd "$TMP" && "$BIN" tui "$MT" "$MT/calib.safetensors" --tokens "$ROOT/tests/data/forward/tokens.txt" \
	--script "$SCRIPTS/model_ppl.keys" --dump "$TMP/model_ppl_all.txt" --size 80x24) >"$TMP/out" 2>"$TMP/err" ||
	fail "model_ppl run" "$(head -c 400 "$TMP/err")"
awk '/^----- screen 3 -----$/{skip=1; next} /^----- screen/{skip=0} !skip' "$TMP/model_ppl_all.txt" >"$TMP/model_ppl.txt"
if [ "${UPDATE:-0}" = 1 ]; then
	cp "$TMP/model_ppl.txt" "$EXPECTED/model_ppl.txt"
	pass "model_ppl (updated)"
elif diff -u "$EXPECTED/model_ppl.txt" "$TMP/model_ppl.txt" >"$TMP/diff"; then
	pass "model_ppl"
else
	fail "model_ppl" "screen differs:
$(head -n 40 "$TMP/diff")"
fi
model_line() { awk -v n="$2" '/^----- screen/{s++; r=0; next} s==n && ++r==3' "$1"; }
fresh=$(model_line "$TMP/model_ppl_all.txt" 2)
stale=$(model_line "$TMP/model_ppl_all.txt" 3)
want=$(printf '%s' "$fresh" | sed 's/^ model  ppl/ model ~ppl/; s/ *$/  stale/')
if [ -n "$fresh" ] && [ "$stale" = "$want" ]; then
	pass "model_ppl: the old figures marked stale after a change"
else
	fail "model_ppl: the old figures marked stale after a change" "'$stale' is not '$want'"
fi
expect_grep "model_ppl: merged figures after wait" '^ model  ppl [0-9.]+ -> [0-9.]+  KL .* top-1 [0-9.]+%' \
	"$TMP/model_ppl.txt"

# The help lists every key of the table that --list-keys prints.
"$BIN" tui --list-keys >"$TMP/keys.txt" 2>"$TMP/err"
missing=""
while IFS=$'\t' read -r key name where desc; do
	grep -qF -- "$key" "$TMP/help.txt" || missing="$missing $key($name)"
	grep -qF -- "$desc" "$TMP/help.txt" || missing="$missing '$desc'"
done <"$TMP/keys.txt"
if [ -s "$TMP/keys.txt" ] && [ -z "$missing" ]; then pass "help lists every key"; else fail "help lists every key" "missing:$missing"; fi

# While the worker computes the larger sample, keys still redraw: the view and block change at once and the
# progress bar shows; after `wait` the bar is gone.
(cd "$TMP" && "$BIN" tui "$OM" "$OM/calib.safetensors" --script "$SCRIPTS/busy.keys" --dump "$TMP/busy.txt") \
	>"$TMP/out" 2>"$TMP/err" || fail "busy run" "$(head -c 400 "$TMP/err")"
awk '/^----- screen/{n++} {print > ("'"$TMP"'/busy" n ".txt")}' "$TMP/busy.txt"
expect_grep "busy: the key switched the view" "Similarity \(router-logits\) of block 0" "$TMP/busy1.txt"
expect_grep "busy: progress bar while computing" '\[[█░]+\] .*[0-9]+/[0-9]+' "$TMP/busy1.txt"
expect_grep "busy: the next key selected block 1" "Similarity \(router-logits\) of block 1" "$TMP/busy2.txt"
expect_grep "busy: progress bar still there" '\[[█░]+\] .*[0-9]+/[0-9]+' "$TMP/busy2.txt"
if grep -qE '\[[█░]+\]' "$TMP/busy3.txt"; then fail "busy: idle after wait" "progress bar left"; else pass "busy: idle after wait"; fi
expect_grep "busy: the heatmap after wait" "expert 0 vs 0: 1.0000" "$TMP/busy3.txt"

# `moescope MODEL CALIB` is the same application.
printf 'wait\n' >"$TMP/wait.keys"
expect_status "moescope MODEL CALIB runs the application" 0 "$BIN" "$MT" "$MT/calib.safetensors" \
	--script "$TMP/wait.keys" --dump "$TMP/plain.txt"
expect_grep "moescope MODEL CALIB screen" "mixtral-tiny  mixtral  4 blocks" "$TMP/plain.txt"
expect_status "moescope MODEL CALIB --tokens" 0 "$BIN" "$MT" "$MT/calib.safetensors" \
	--tokens "$ROOT/tests/data/forward/tokens.txt" --script "$TMP/wait.keys" --dump "$TMP/plain_tokens.txt"
expect_grep "moescope MODEL CALIB --tokens: the model line" "^ model  ppl [0-9.]+  \(nothing merged\)" \
	"$TMP/plain_tokens.txt"
# --text goes through the model's tokenizer.json: mixtral-tiny has none, and the model line says so (once, with
# the file) while the rest of the application works.
expect_status "tui --text without a tokenizer.json" 0 "$BIN" tui "$MT" "$MT/calib.safetensors" \
	--text "$ROOT/README.md" --script "$TMP/wait.keys" --dump "$TMP/text_notok.txt"
expect_grep "tui --text names the missing tokenizer on the model line" \
	"^ model  ppl failed: .*mixtral-tiny/tokenizer.json: No such file" "$TMP/text_notok.txt"

# Without calibration: weight-only views, usage unknown, planning refused with a message.
printf 'wait\ndump\n-\ndump\n2\nwait\ndump\n' >"$TMP/nocal.keys"
expect_status "no calibration set" 0 "$BIN" tui "$MT" --script "$TMP/nocal.keys" --dump "$TMP/nocal.txt"
expect_grep "no calibration: usage unknown" "usage unknown: no calibration set" "$TMP/nocal.txt"
expect_grep "no calibration: planning refused" "planning needs a calibration set" "$TMP/nocal.txt"
expect_grep "no calibration: router-weight heatmap" "Similarity \(router-weight\) of block 0" "$TMP/nocal.txt"

# Bad scripts and no terminal are errors, with the line named.
printf 'wait\n<Nope>\n' >"$TMP/bad.keys"
expect_status "unknown script key" 2 "$BIN" tui "$MT" --script "$TMP/bad.keys"
expect_grep "unknown script key names the line" "bad.keys: line 2: unknown key or command '<Nope>'" "$TMP/err"
expect_status "no terminal without --script" 1 "$BIN" tui "$MT" </dev/null
expect_grep "no terminal message" "not a terminal" "$TMP/err"
expect_status "bad --size" 2 "$BIN" tui "$MT" --size 10x2 --script "$TMP/wait.keys"
finish
