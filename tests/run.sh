#!/usr/bin/env bash
# Runs every unit test binary and every shell test, adds up their "N passed, M failed" lines and prints the
# total as the last line. Usage: tests/run.sh BUILD_DIR
set -u
build=${1:-build}
total_pass=0
total_fail=0
failed_suites=()
log_dir="$build/test-logs"
mkdir -p "$log_dir"
# The unit tests link OpenBLAS without moescope's main(), which pins its kernels (cli/blas.c): give them the same
# kernels, read from the binary itself so the choice is made in one place.
if [ -n "${MOESCOPE:-}" ] && [ -x "$MOESCOPE" ]; then
	core=$("$MOESCOPE" --version | sed -n 's/^kernels: \([A-Za-z0-9]*\), pinned$/\1/p')
	[ -n "$core" ] && export OPENBLAS_CORETYPE=$core
fi

run_suite() {
	local name=$1
	shift
	local log="$log_dir/${name//\//-}.log"
	"$@" >"$log" 2>&1
	local rc=$?
	local line
	line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
	local p=0 f=0
	if [ -n "$line" ]; then
		p=${line%% passed*}
		f=${line#*, }
		f=${f%% failed*}
	fi
	# A suite that crashed or exited non-zero without counting a failure still fails once.
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		f=1
	fi
	if [ -z "$line" ] && [ "$rc" -eq 0 ]; then
		echo "$name: printed no summary line" >>"$log"
		f=1
	fi
	total_pass=$((total_pass + p))
	total_fail=$((total_fail + f))
	if [ "$f" -ne 0 ]; then
		failed_suites+=("$name")
		printf '%-28s %4d passed, %d failed  (log: %s)\n' "$name" "$p" "$f" "$log"
		grep -E 'FAIL|check failed|ERROR|Sanitizer|runtime error' "$log" | head -n 20 | sed 's/^/    /'
	else
		printf '%-28s %4d passed\n' "$name" "$p"
	fi
}

for t in "$build"/tests/test_*; do
	[ -x "$t" ] || continue
	case "$t" in *.d|*.o) continue ;; esac
	run_suite "$(basename "$t")" "$t"
done
# The application's unit tests again under ThreadSanitizer: the worker thread against the UI thread.
for t in "$build"/tsan/tests/test_*; do
	[ -x "$t" ] || continue
	case "$t" in *.d|*.o) continue ;; esac
	run_suite "tsan/$(basename "$t")" tests/tsan/run.sh "$t"
done
for s in tests/cli/*.sh; do
	[ -f "$s" ] || continue
	[ "$(basename "$s")" = lib.sh ] && continue
	run_suite "cli/$(basename "$s" .sh)" bash "$s" "$build"
done

# The kept fuzz corpus replayed through every parser target (no clang needed: a standalone driver), then each
# libFuzzer target fuzzed from that corpus for a few seconds when clang is installed (FUZZ_SMOKE_SECONDS, 20 by
# default; 0 skips it).
run_suite fuzz-replay env BUILD="$build" tests/fuzz/run.sh replay
if [ "${FUZZ_SMOKE_SECONDS:-20}" -gt 0 ]; then
	run_suite fuzz-smoke env BUILD="$build" tests/fuzz/run.sh smoke "${FUZZ_SMOKE_SECONDS:-20}"
fi

echo
if [ ${#failed_suites[@]} -ne 0 ]; then
	echo "failed suites: ${failed_suites[*]}"
fi
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
