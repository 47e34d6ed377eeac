# `moescope search` from the command line: on mixtral-tiny with the forward test's tokens (or the set `capture`
# writes from them) it writes a plan of the
# searched allocation within the budget, whose KL is no worse than uniform G's and the global allocation's (each
# confirmed by the forward pass), with the same report for 1 and 3 threads; the written plan has the searched
# counts and runs in `perplexity --plan` (aliased layout: every block keeps its own count); bad inputs give one
# line on stderr, exit 1 or 2, and write nothing.
. "$(dirname "$0")/lib.sh"
TOK=tests/data/forward/tokens.txt
S=${SAMPLES:-}
if [ -z "$S" ] || [ ! -f "$S/mixtral-tiny/config.json" ]; then
	S=$TMP/samples
	"$MOESCOPE" samples "$S" --only mixtral-tiny >/dev/null
fi
M=$S/mixtral-tiny
FAST="--confirm 2 --samples 1 --candidates 4"

# json_alloc FILE KIND FIELD: FIELD of the first allocation of that kind ("best" for the returned one)
json_alloc() {
	python3 - "$1" "$2" "$3" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
for a in j["allocations"]:
    if (sys.argv[2] == "best" and a["best"]) or a["kind"] == sys.argv[2]:
        v = a[sys.argv[3]]
        print(",".join(map(str, v)) if isinstance(v, list) else repr(v))
        break
PY
}

for t in 1 3; do
	expect_status "search on $t threads" 0 "$MOESCOPE" search "$M" --tokens "$TOK" --budget 0.75 $FAST \
		--layout aliased --out "$TMP/plan$t.csv" --json "$TMP/search$t.json" --svg "$TMP/chart$t.svg" --threads $t
done
expect_grep "the report names the searched allocation" '^searched ' "$TMP/out"
expect_grep "and uniform beside it" '^uniform +24 ' "$TMP/out"
expect_grep "and the global allocation" '^global ' "$TMP/out"
if cmp -s "$TMP/search1.json" "$TMP/search3.json" && cmp -s "$TMP/plan1.csv" "$TMP/plan3.csv" &&
	cmp -s "$TMP/chart1.svg" "$TMP/chart3.svg"; then
	pass "1 and 3 threads: the same report, plan and figure, byte for byte"
else
	fail "1 and 3 threads: the same report, plan and figure, byte for byte"
fi
confirmed=$(grep -c '"confirmed":[[:space:]]*true' "$TMP/search1.json")
markers=$(grep -c '<circle cx="[0-9.]*" cy="[0-9.]*" r="4" fill="#[0-9a-f]*"><title>' "$TMP/chart1.svg")
[ "$confirmed" -ge 3 ] && [ "$markers" = "$confirmed" ] && pass "the figure has one marker per confirmed allocation" ||
	fail "figure markers" "$markers markers, $confirmed confirmed"
python3 -c "import sys, xml.dom.minidom as m; m.parse(sys.argv[1])" "$TMP/chart1.svg" && pass "the figure is well-formed XML" ||
	fail "the figure is well-formed XML"
best=$(json_alloc "$TMP/search1.json" best kl)
uni=$(json_alloc "$TMP/search1.json" uniform kl)
glo=$(json_alloc "$TMP/search1.json" global kl)
kept=$(json_alloc "$TMP/search1.json" best experts)
if awk -v b="$best" -v u="$uni" -v g="$glo" -v k="$kept" 'BEGIN { exit !(b != "" && b <= u && b <= g && k <= 24) }'
then pass "searched KL $best <= uniform $uni and global $glo, $kept experts kept"
else fail "searched KL no worse than uniform and global" "best $best uniform $uni global $glo kept $kept"; fi
groups=$(json_alloc "$TMP/search1.json" best groups)
got=$(for b in 0 1 2 3; do awk -F, -v b=$b 'NR > 1 && $1 == b && $3 > m { m = $3 } END { printf "%d\n", m + 1 }' \
	"$TMP/plan1.csv"; done | paste -sd, -)
[ "$got" = "$groups" ] && pass "the plan has the searched counts $groups" || fail "plan counts" "$got vs $groups"

# The search's figures are over the held-out tokens, perplexity's over all of them: the check here is that the plan
# loads and merges, and changes the model.
expect_status "perplexity --plan of the searched plan" 0 "$MOESCOPE" perplexity "$M" --tokens "$TOK" \
	--plan "$TMP/plan1.csv" --layout aliased --json "$TMP/ppl.json"
expect_grep "the plan changes the model" '"top1_agreement":[[:space:]]*0\.' "$TMP/ppl.json"

# --experts N is the same budget as the fraction
expect_status "search --experts 24" 0 "$MOESCOPE" search "$M" --tokens "$TOK" --experts 24 $FAST --layout aliased \
	--out "$TMP/plan_n.csv"
cmp -s "$TMP/plan_n.csv" "$TMP/plan1.csv" && pass "--experts 24 = --budget 0.75" || fail "--experts 24 = --budget 0.75"

# --calib C of a set captured from the same tokens: its token_ids and segment_ids are the same input
expect_status "capture the tokens" 0 "$MOESCOPE" capture "$M" --tokens "$TOK" --out "$TMP/cap.safetensors"
expect_status "search --calib" 0 "$MOESCOPE" search "$M" --calib "$TMP/cap.safetensors" --experts 24 $FAST \
	--layout aliased --out "$TMP/plan_c.csv"
cmp -s "$TMP/plan_c.csv" "$TMP/plan1.csv" && pass "--calib of the captured set = --tokens" ||
	fail "--calib of the captured set = --tokens"

# Bad inputs: one line, nothing written.
bad() { # bad NAME STATUS ARGS...
	local name=$1 want=$2
	shift 2
	rm -f "$TMP/bad.csv"
	expect_status "$name" "$want" "$MOESCOPE" search "$@"
	[ "$(wc -l <"$TMP/err")" -le 3 ] && [ ! -e "$TMP/bad.csv" ] && pass "$name: short message, nothing written" ||
		fail "$name: short message, nothing written" "$(cat "$TMP/err")"
}
bad "budget below one expert per block" 1 "$M" --tokens "$TOK" --experts 3 --out "$TMP/bad.csv"
expect_grep "the message gives the range" 'outside 4\.\.32' "$TMP/err"
bad "budget above the model" 1 "$M" --tokens "$TOK" --experts 33 --out "$TMP/bad.csv"
bad "no budget" 2 "$M" --tokens "$TOK" --out "$TMP/bad.csv"
bad "both budgets" 2 "$M" --tokens "$TOK" --budget 0.5 --experts 16 --out "$TMP/bad.csv"
bad "budget not a fraction" 2 "$M" --tokens "$TOK" --budget 1.5 --out "$TMP/bad.csv"
bad "no tokens" 2 "$M" --budget 0.5 --out "$TMP/bad.csv"
bad "tokens and calib" 2 "$M" --tokens "$TOK" --calib "$TMP/cap.safetensors" --budget 0.5 --out "$TMP/bad.csv"
bad "no --out" 2 "$M" --tokens "$TOK" --budget 0.5
bad "unknown method" 2 "$M" --tokens "$TOK" --budget 0.5 --method nope --out "$TMP/bad.csv"
printf '1 2 999\n' >"$TMP/badtok.txt"
bad "a token outside the vocabulary" 1 "$M" --tokens "$TMP/badtok.txt" --budget 0.5 --out "$TMP/bad.csv"
expect_grep "the message names the file" 'badtok.txt' "$TMP/err"
bad "missing model" 1 "$TMP/nope" --tokens "$TOK" --budget 0.5 --out "$TMP/bad.csv"
expect_status "--help" 0 "$MOESCOPE" search --help
expect_grep "--help lists the methods" 'prune-reap' "$TMP/out"
finish
