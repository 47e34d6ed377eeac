#!/usr/bin/env bash
# The budget search in the interactive application (tests/tui/scripts/search.keys, mixtral-tiny with its
# calibration and the forward test's tokens): S runs the search on the worker and the panel shows it running,
# then its suggestion (28 of 32 experts, beside uniform and global) and a chart row; p sets the selected block's
# G to the suggested count, u puts it back. Without a token file S says what it needs.
. "$(dirname "$0")/lib.sh"
SAMPLES=${SAMPLES:-$BUILD/samples}
ROOT=$(pwd)
MT=$ROOT/$SAMPLES/mixtral-tiny
case $SAMPLES in /*) MT=$SAMPLES/mixtral-tiny ;; esac
BIN=$MOESCOPE
case $BIN in /*) ;; *) BIN=$ROOT/$BIN ;; esac
export LC_ALL=C.UTF-8

(cd "$TMP" && "$BIN" tui "$MT" "$MT/calib.safetensors" --tokens "$ROOT/tests/data/forward/tokens.txt" \
	--script "$ROOT/tests/tui/scripts/search.keys" --dump "$TMP/all.txt" --size 100x30) >"$TMP/out" 2>"$TMP/err"
rc=$?
[ "$rc" -eq 0 ] && pass "search script runs" || fail "search script runs" "exit $rc: $(head -c 400 "$TMP/err")"
# screen N of the dump into $TMP/sN.txt
for n in 1 2 3 4 5; do
	awk -v n=$n '/^----- screen /{s = $3 + 0; next} s == n' "$TMP/all.txt" >"$TMP/s$n.txt"
done
expect_grep "S starts the search" 'searching 28 of 32 experts|search started' "$TMP/s1.txt"
expect_grep "the suggestion spends the budget" 'suggested: 28 of 32 experts, KL [0-9]' "$TMP/s2.txt"
expect_grep "uniform and global beside it" 'uniform \(28\) KL [0-9.e-]+ +global \(2[0-9]\) KL' "$TMP/s2.txt"
expect_grep "a chart row for the budget" '^ .* 28 .*\(u [0-9.e-]+, g ' "$TMP/s2.txt"
sugg=$(sed -n 's/.*block 3: G [0-9]* now, \([0-9]*\) suggested.*/\1/p' "$TMP/s2.txt")
before=$(sed -n 's/.*block 3: G \([0-9]*\) now.*/\1/p' "$TMP/s2.txt")
after=$(sed -n 's/.*block 3: G \([0-9]*\) now.*/\1/p' "$TMP/s3.txt")
undone=$(sed -n 's/.*block 3: G \([0-9]*\) now.*/\1/p' "$TMP/s4.txt")
[ "$before" = 7 ] && [ -n "$sugg" ] && [ "$after" = "$sugg" ] && [ "$undone" = 7 ] &&
	pass "p applies the suggested G $sugg to block 3, u undoes it" ||
	fail "p applies, u undoes" "before $before suggested $sugg after $after undone $undone"
expect_grep "the layer list shows the applied G" "^.3 .* $sugg  " "$TMP/s3.txt"

# v writes the search's figure: the same SVG, byte for byte, as `moescope search --svg` at the same budget on the
# same tokens (one writer, pipeline/search_svg.c); before a search it says there is none, and a path that cannot be
# written is one error line naming it.
printf 'wait\nv\ndump\n-\nj\n-\nj\n-\nj\n-\nwait\nS\nwait\nv\n<C-u>\ntype:%s\n<Enter>\ndump\nv\n<C-u>\ntype:%s\n<Enter>\ndump\n' \
	app.svg no/such/dir/x.svg >"$TMP/svg.keys"
(cd "$TMP" && "$BIN" tui "$MT" "$MT/calib.safetensors" --tokens "$ROOT/tests/data/forward/tokens.txt" \
	--script "$TMP/svg.keys" --dump "$TMP/svg.txt" --size 100x30) >"$TMP/out" 2>"$TMP/err" ||
	fail "svg script runs" "$(head -c 400 "$TMP/err")"
expect_grep "v before a search says there is no figure" "search: no figure yet" "$TMP/svg.txt"
expect_grep "v says where the figure went" "search figure written to app.svg" "$TMP/svg.txt"
expect_grep "an unwritable path is one error naming it" "no/such/dir/x.svg.*(No such file|directory)" "$TMP/svg.txt"
"$BIN" search "$MT" --tokens "$ROOT/tests/data/forward/tokens.txt" --experts 28 --out "$TMP/cli.csv" \
	--svg "$TMP/cli.svg" >"$TMP/out" 2>"$TMP/err" || fail "search --svg runs" "$(head -c 400 "$TMP/err")"
if [ -s "$TMP/app.svg" ] && cmp -s "$TMP/app.svg" "$TMP/cli.svg"; then
	pass "the application's SVG equals search --svg's"
else
	fail "the application's SVG equals search --svg's" "$(diff "$TMP/app.svg" "$TMP/cli.svg" 2>&1 | head -n 6)"
fi

printf 'wait\n-\nS\n' >"$TMP/notok.keys"
(cd "$TMP" && "$BIN" tui "$MT" "$MT/calib.safetensors" --script "$TMP/notok.keys" --dump "$TMP/notok.txt") \
	>"$TMP/out" 2>"$TMP/err"
expect_grep "without tokens S says what it needs" 'search: needs a token file' "$TMP/notok.txt"
finish
