#!/usr/bin/env bash
# Runs one ThreadSanitizer test binary: tests/tsan/run.sh BINARY [ARGS]. Its exit status is the binary's (66 when
# TSan reported a race, after the test's own summary line).
#
# TSan maps its shadow memory at fixed addresses. With more address randomisation than a runtime was built for
# (vm.mmap_rnd_bits above 28 on x86-64, the default of recent kernels) an older runtime aborts before main with
# "FATAL: ThreadSanitizer: unexpected memory mapping", which says nothing about the code under test. Then the
# binary runs again with randomisation off for it alone (setarch -R, a personality flag: no root, no sysctl).
set -u
export TSAN_OPTIONS="second_deadlock_stack=1:history_size=4${TSAN_OPTIONS:+:$TSAN_OPTIONS}"
export OPENBLAS_NUM_THREADS=1
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$@" >"$out" 2>&1
rc=$?
if [ "$rc" -ne 0 ] && grep -q 'FATAL: ThreadSanitizer: unexpected memory mapping' "$out"; then
	echo "tsan: the runtime cannot map its shadow with this address randomisation; running under setarch -R"
	setarch "$(uname -m)" -R "$@"
	exit $?
fi
cat "$out"
exit "$rc"
