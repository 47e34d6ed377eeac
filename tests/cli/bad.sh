# Hostile inputs (tests/bad/, written by tests/bad/make.py): every line of tests/bad/cases.tsv runs one command
# against one broken input and must end with the expected exit status, exactly one line on stderr matching the
# case's regex (hence no sanitizer report, which takes many lines), and nothing created where the command was told
# to write (--out / --json point into an empty directory that must stay empty: no output, no temporary
# directory, no .tmp file). The inputs themselves must be unchanged afterwards.
. "$(dirname "$0")/lib.sh"
BAD=tests/bad
BASE=$BAD/base
export MOESCOPE BAD BASE
export LC_ALL=C # messages are compared byte for byte; some echo bytes that are not UTF-8

inputs_digest() {
	find "$BAD" -path "$BAD/make.py" -prune -o \( -type f -o -type l \) -print0 | sort -z |
		xargs -0 sha256sum 2>/dev/null | sha256sum
}
before=$(inputs_digest)

# The good model works with every command: a case fails because of the one thing broken in it.
mkdir -p "$TMP/base"
expect_status "base: info" 0 "$MOESCOPE" info "$BASE"
expect_status "base: analyze" 0 "$MOESCOPE" analyze "$BASE" --calib "$BASE/calib.safetensors" --json "$TMP/base/a.json"
# --similarity takes a list: every base named is in the report, and an unknown name in it is refused by name.
expect_status "base: analyze --similarity list" 0 "$MOESCOPE" analyze "$BASE" --calib "$BASE/calib.safetensors" \
	--similarity weight,router-logits --json "$TMP/base/list.json"
expect_grep "analyze --similarity list: both bases reported" '"weight"' "$TMP/base/list.json"
expect_grep "analyze --similarity list: both bases reported" '"router-logits"' "$TMP/base/list.json"
expect_grep "analyze --similarity list: the first is printed" '\(.* weight\)' "$TMP/out"
expect_status "base: analyze --similarity bad list" 2 "$MOESCOPE" analyze "$BASE" --calib "$BASE/calib.safetensors" \
	--similarity weight,nonsense
expect_grep "analyze --similarity bad list: names the bad base" "'nonsense' is not a similarity base" "$TMP/err"
expect_status "base: plan" 0 "$MOESCOPE" plan "$BASE" --calib "$BASE/calib.safetensors" --groups 2 --out "$TMP/base/p.csv"
expect_status "base: eval with its plan" 0 "$MOESCOPE" eval "$BASE" --calib "$BASE/calib.safetensors" \
	--plan "$BASE/plan.csv" --json "$TMP/base/e.json"
expect_status "base: merge with its plan" 0 "$MOESCOPE" merge "$BASE" --calib "$BASE/calib.safetensors" \
	--plan "$BASE/plan.csv" --out "$TMP/base/merged"
expect_status "base: the merged model opens" 0 "$MOESCOPE" info "$TMP/base/merged"

# run_case NAME COMMAND STATUS REGEX
run_case() {
	local name=$1 cmd=$2 want=$3 regex=$4
	local dir=$TMP/case-$name
	mkdir -p "$dir/outdir"
	CASE=$BAD/cases/$name OUT=$dir/outdir/out bash -c "$cmd" >"$dir/stdout" 2>"$dir/stderr"
	local rc=$?
	local lines problems=()
	lines=$(wc -l <"$dir/stderr")
	[ "$rc" -eq "$want" ] || problems+=("exit $rc, wanted $want")
	if grep -qaE 'Sanitizer|runtime error|LeakSanitizer' "$dir/stderr"; then
		problems+=("sanitizer report")
	fi
	if [ "$lines" -ne 1 ] || [ -n "$(tail -c 1 "$dir/stderr")" ]; then
		problems+=("$lines lines on stderr, wanted exactly one")
	fi
	grep -qaE -- "$regex" "$dir/stderr" || problems+=("stderr does not match /$regex/")
	if [ -n "$(ls -A "$dir/outdir")" ]; then
		problems+=("left in the output place: $(ls -A "$dir/outdir" | tr '\n' ' ')")
	fi
	if [ ${#problems[@]} -eq 0 ]; then
		pass "$name"
	else
		fail "$name" "$(printf '%s; ' "${problems[@]}")stderr: $(head -c 600 "$dir/stderr")"
	fi
}

n=0
while IFS=$'\t' read -r name cmd want regex; do
	case $name in '#'* | '') continue ;; esac
	run_case "$name" "$cmd" "$want" "$regex"
	n=$((n + 1))
done <"$BAD/cases.tsv"
if [ "$n" -ge 30 ]; then pass "$n cases run"; else fail "only $n cases in $BAD/cases.tsv"; fi

after=$(inputs_digest)
if [ "$before" = "$after" ]; then pass "no input changed"; else fail "files under $BAD changed"; fi
finish
