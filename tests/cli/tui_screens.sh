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

# compare NAME: $TMP/NAME.txt against the expected screen (or, with UPDATE=1, written over it).
compare() {
	local name=$1
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

# screen_on MODEL NAME [ARGS...]: runs NAME.keys on MODEL with its calibration (from $TMP, so paths typed in the
# script land there) and compares the dump.
screen_on() {
	local model=$1 name=$2
	shift 2
	(cd "$TMP" && "$BIN" tui "$model" "$model/calib.safetensors" --script "$SCRIPTS/$name.keys" \
		--dump "$TMP/$name.txt" "$@") >"$TMP/out" 2>"$TMP/err"
	local rc=$?
	if [ "$rc" -ne 0 ]; then
		fail "$name" "exit $rc: $(head -c 400 "$TMP/err")"
	else
		compare "$name"
	fi
}

# screen NAME [ARGS...]: on mixtral-tiny; screen_om: on olmoe-mini (64 experts, top-8).
screen() { screen_on "$MT" "$@"; }
screen_om() { screen_on "$OM" "$@"; }

screen opening
screen heatmap_by_group
screen help --size 100x62
screen commit_dialog
"$BIN" info "$TMP/merged" >"$TMP/info.txt" 2>&1
expect_grep "commit wrote an aliased checkpoint that opens" "experts +8 per block" "$TMP/info.txt"

printf 'layer,expert,group,dominant,frequency\n0,0,0,1,0.5\n7,0,0,1,0.5\n' >"$TMP/bad_plan.csv"
screen import_error
screen small_screen --size 80x24

# The settings that decide the error are on the main screen, and the totals are what the commit writes.
screen layout_router --size 80x24
expect_grep "layout_router: compact splits block 0 up to E' (out 8+), saving nothing" \
	"^ plan 28/32 experts  saves 0 params \(0 B\)  error 0\.[0-9]{4} \(1 merged\)" "$TMP/layout_router.txt"
expect_grep "layout_router: the written count beside G" "^.0 [^ ]+ +4 +8\+ +0\.[0-9]{4}" "$TMP/layout_router.txt"
expect_grep "layout_router: layout and router on the settings line" "^ L aliased  R lse-fit  m msmoe" \
	"$TMP/layout_router.txt"
if grep -q "…$" <(grep "^ L " "$TMP/layout_router.txt"); then
	fail "layout_router: the settings line is not cut at 80 columns" "$(grep '^ L ' "$TMP/layout_router.txt")"
else
	pass "layout_router: the settings line is not cut at 80 columns"
fi
screen compare --size 80x24
for v in "compact, lse-fit" "compact, mean" "compact, dominant" "compact, auto" "aliased \(router kept\)" \
	"prune-frequency, same G"; do
	expect_grep "compare: $v measured" "$v +[01]\.[0-9]{4} +[01]\.[0-9]{4}" "$TMP/compare.txt"
done
# the marked row's error is the block's own in the layer list
own=$(grep -E "^.0 " "$TMP/compare.txt" | head -n 1 | awk -F'│' '{print $1}' | awk '{print $NF}')
marked=$(grep -E "compact, auto" "$TMP/compare.txt" | awk '{print $(NF-1)}')
if [ -n "$own" ] && [ "$own" = "$marked" ]; then pass "compare: the current row equals the block's error"; else
	fail "compare: the current row equals the block's error" "layer list $own, compare $marked"; fi

# 64 experts: navigation, scroll indicators, heatmap labels and clipping, :g N.
screen_om olmoe_nav --size 80x24
awk '/^----- screen/{n++} {print > ("'"$TMP"'/nav" n ".txt")}' "$TMP/olmoe_nav.txt"
top=$(grep -oE "▸e[0-9]+ +[^ ]+ +[0-9.]+%" "$TMP/nav1.txt" | grep -oE "[0-9.]+%$")
max=$(grep -oE "[0-9.]+% g" "$TMP/nav1.txt" | grep -oE "[0-9.]+" | sort -g | tail -n 1)
if [ -n "$top" ] && [ "$top" = "$max%" ]; then pass "olmoe_nav: the cursor opens on the most used expert"; else
	fail "olmoe_nav: the cursor opens on the most used expert" "cursor $top, most $max"; fi
expect_grep "olmoe_nav: a scroll indicator" "1-[0-9]+ of 64 +▼" "$TMP/nav1.txt"
expect_grep "olmoe_nav: PgDn scrolls, both ways marked" "[0-9]+-[0-9]+ of 64 ▲▼" "$TMP/nav2.txt"
expect_grep "olmoe_nav: End reaches the last expert" "[0-9]+-64 of 64 ▲" "$TMP/nav3.txt"
expect_grep "olmoe_nav: heatmap labels every third column" "│     [0-9]+  +[0-9]+  +[0-9]+  " "$TMP/nav4.txt"
expect_grep "olmoe_nav: the heatmap says it is clipped" "clipped: cols 1-[0-9]+, rows [0-9]+-[0-9]+ of 64" "$TMP/nav4.txt"
expect_grep "olmoe_nav: the scale states the data's range" "scale 0\.[0-9]{3} .* [01]\.[0-9]{3} off-diagonal min\.\.max" \
	"$TMP/nav4.txt"
expect_grep "olmoe_nav: the command prompt" "│ : g 16 " "$TMP/nav5.txt"
expect_grep "olmoe_nav: :g 16 in one step, explained" "average G 16 .*: G = [0-9]+ [0-9]+ [0-9]+ [0-9]+" "$TMP/nav6.txt"
# 64 experts in the layer list's sparklines: each screen's column title says how many experts share a cell
# ("usage/K"), every block's sparkline has ceil(64 / K) cells, at least 8 and more as the terminal widens, and the
# list stays within half the screen.
screen_om olmoe_spark --size 80x24
awk '/^----- screen/{n++} {print > ("'"$TMP"'/spark" n ".txt")}' "$TMP/olmoe_spark.txt"
prev=0
n=0
for width in 80 160 320; do
	n=$((n + 1))
	f=$TMP/spark$n.txt
	k=$(grep -oE "^ L usage(/[0-9]+)? " "$f" | grep -oE "[0-9]+" || echo 1)
	cells=$(grep -E "^.0 " "$f" | head -n 1 | grep -oE "[▁▂▃▄▅▆▇█]+" | head -n 1 | tr -d '\n' | wc -m)
	want=$(((64 + k - 1) / k))
	list=$(grep -E "^.0 " "$f" | head -n 1 | sed 's/│.*//' | tr -d '\n' | wc -m)
	if [ -n "$cells" ] && [ "$cells" -eq "$want" ] && [ "$cells" -ge 8 ] && [ "$cells" -gt "$prev" ] &&
		[ "$list" -le $((width / 2)) ]; then
		pass "olmoe_spark: $width columns, $k experts a cell, $cells cells"
	else
		fail "olmoe_spark: $width columns" "K '$k', $cells cells (want $want, more than $prev), list $list wide"
	fi
	prev=${cells:-0}
done
expect_grep "olmoe_spark: 8 experts a cell at 80 columns" "^ L usage/8 " "$TMP/spark1.txt"
expect_grep "olmoe_spark: one expert a cell at 320 columns" "^ L usage  " "$TMP/spark3.txt"
screen_om narrow --size 40x12
expect_grep "narrow: two-digit group labels whole before the dominant mark" "g1[0-9] ★" "$TMP/narrow.txt"
if grep -qE "g1★" "$TMP/narrow.txt"; then fail "narrow: no cut label" "$(grep 'g1★' "$TMP/narrow.txt")"; else pass "narrow: no cut label"; fi
screen help_legend --size 100x60
for term in usage entropy cv similarity "stable rnk" out error saves agreement; do
	expect_grep "help_legend: defines $term" "^│ +$term +[a-z(]" "$TMP/help_legend.txt"
done
expect_grep "help_legend: the dialog's C-u" "<C-u> clears the text" "$TMP/help_legend.txt"

# The header's saving is what the commit writes: committed at an average G of 2, the checkpoint shrinks by
# the header's bytes.
printf 'wait
:
type:g 2
<Enter>
wait
dump
c
<C-u>
type:%s
<Enter>
wait
dump
' "$TMP/saved_g2" >"$TMP/saves.keys"
(cd "$TMP" && "$BIN" tui "$MT" "$MT/calib.safetensors" --script "$TMP/saves.keys" --dump "$TMP/saves.txt") \
	>"$TMP/out" 2>"$TMP/err" || fail "saves run" "$(head -c 400 "$TMP/err")"
mib() { grep -oE "$1" "$TMP/saves.txt" | head -n 1 | grep -oE "[0-9.]+ MiB" | head -n "$2" | tail -n 1 | cut -d' ' -f1; }
header=$(mib "saves [0-9.]+[KMG]? params \([0-9.]+ MiB\)" 1)
before=$(mib "checkpoint [0-9.]+ MiB -> [0-9.]+ MiB" 1)
after=$(mib "checkpoint [0-9.]+ MiB -> [0-9.]+ MiB" 2)
if [ -n "$header" ] && [ -n "$after" ] && awk -v h="$header" -v b="$before" -v a="$after" \
	'BEGIN { d = b - a - h; exit !(d < 0.011 && d > -0.011) }'; then
	pass "the header's saving equals the commit's ($header MiB)"
else
	fail "the header's saving equals the commit's" "header '$header', checkpoint '$before' -> '$after'"
fi
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
compare model_ppl
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
# a commit without calibration does not claim an error it never measured
printf 'wait
c
<C-u>
type:%s
<Enter>
wait
dump
' "$TMP/nocal_out" >"$TMP/nocal_commit.keys"
expect_status "no calibration: commit" 0 "$BIN" tui "$MT" --script "$TMP/nocal_commit.keys" --dump "$TMP/nocal_commit.txt"
tr -d '\n│' <"$TMP/nocal_commit.txt" | tr -s ' ' >"$TMP/nocal_commit.flat"
expect_grep "no calibration: the commit's error is not measured" "mean output error not measured \(no calibration set\)" \
	"$TMP/nocal_commit.flat"

# Bad scripts and no terminal are errors, with the line named.
printf 'wait\n<Nope>\n' >"$TMP/bad.keys"
expect_status "unknown script key" 2 "$BIN" tui "$MT" --script "$TMP/bad.keys"
expect_grep "unknown script key names the line" "bad.keys: line 2: unknown key or command '<Nope>'" "$TMP/err"
expect_status "no terminal without --script" 1 "$BIN" tui "$MT" </dev/null
expect_grep "no terminal message" "not a terminal" "$TMP/err"
expect_status "bad --size" 2 "$BIN" tui "$MT" --size 10x2 --script "$TMP/wait.keys"
finish
