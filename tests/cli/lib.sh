# Shared helpers for the shell tests in tests/cli/. Source it, call `check NAME CMD...` or the expect_* helpers,
# end with `finish`. BUILD is the build directory given as $1; MOESCOPE the binary under test.
set -u
BUILD=${1:-build}
MOESCOPE=${MOESCOPE:-$BUILD/moescope}
GOLDEN=tests/data/golden/msmoe-mixtral
_pass=0
_fail=0
TMP=$(mktemp -d "${TMPDIR:-/tmp}/moescope-test.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
# The application autosaves plans under XDG_STATE_HOME: tests keep theirs apart from the user's.
export XDG_STATE_HOME="$TMP/state"

pass() { _pass=$((_pass + 1)); echo "ok   $1"; }
fail() { _fail=$((_fail + 1)); echo "FAIL $1${2:+: $2}"; }

# expect_status NAME WANT CMD... : runs CMD, keeps stdout in $TMP/out and stderr in $TMP/err.
expect_status() {
	local name=$1 want=$2
	shift 2
	"$@" >"$TMP/out" 2>"$TMP/err"
	local rc=$?
	if [ "$rc" -eq "$want" ]; then pass "$name"; else fail "$name" "exit $rc, wanted $want; stderr: $(head -c 400 "$TMP/err")"; fi
}

# expect_grep NAME PATTERN FILE
expect_grep() {
	if grep -qE -- "$2" "$3"; then pass "$1"; else fail "$1" "no /$2/ in $3: $(head -c 400 "$3")"; fi
}

finish() {
	echo "$_pass passed, $_fail failed"
	[ "$_fail" -eq 0 ]
}
