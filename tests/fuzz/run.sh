#!/usr/bin/env bash
# Fuzzing of the parsers of untrusted input (docs/design.md §8), and replay of the kept corpus.
#
#   tests/fuzz/run.sh SECONDS [TARGET...]  build with clang's libFuzzer (ASan + UBSan) and fuzz each target for
#                                          SECONDS; new inputs go to $BUILD/fuzz/work/TARGET, the kept corpus in
#                                          tests/fuzz/corpus/TARGET is only read. A crash, leak, timeout or
#                                          out-of-memory input is copied to tests/fuzz/crash-TARGET/ (ignored by
#                                          git) and the script fails: fix the bug, then move the input into the
#                                          corpus so that replay keeps checking it.
#   tests/fuzz/run.sh replay [TARGET...]   build each target with $CC (ASan + UBSan, no libFuzzer needed) and run
#                                          every kept input once (part of `make test`).
#   tests/fuzz/run.sh smoke SECONDS [TARGET...]
#                                          fuzz each target for SECONDS starting from the kept corpus alone (a
#                                          fresh work directory each run), as `make test` does for 20 s when
#                                          clang is installed; without clang it says so and counts nothing.
#
# TARGET is plan, safetensors, config, calib, tokenizer or jsonedit (default: all). A target whose module is not written yet is
# skipped with a note. Environment: BUILD (default build), CC (default cc), FUZZ_CC (default clang);
# FUZZ_VERBOSE=1 prints how each input ended; FUZZ_LAX_MESSAGES=1 accepts error messages that span lines (an
# echoed name holding a line break), to look past that finding for crashes.
# The last line is "N passed, M failed", counting targets, as tests/run.sh expects.
set -u
cd "$(dirname "$0")/../.." || exit 2

BUILD=${BUILD:-build}
CC=${CC:-cc}
FUZZ_CC=${FUZZ_CC:-clang}
ALL_TARGETS="plan safetensors config calib tokenizer jsonedit"

# The io/ sources each target needs (it links all of io/, but skips while one of these is missing).
needs() {
	case $1 in
	plan) echo io/error.c io/plan.c ;;
	safetensors) echo io/error.c io/safetensors.c ;;
	config) echo io/error.c io/safetensors.c io/model.c ;;
	calib) echo io/error.c io/safetensors.c io/model.c io/calib.c ;;
	tokenizer) echo io/error.c text/tokenizer.c ;;
	jsonedit) echo io/error.c io/jsonedit.c io/factors.c ;;
	*) return 1 ;;
	esac
}

usage() {
	awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
	exit 2
}

[ $# -ge 1 ] || usage
mode=$1
shift
seconds=$mode
case $mode in
replay) ;;
smoke)
	[ $# -ge 1 ] || usage
	seconds=$1
	shift
	;;
esac
case $seconds in
replay) ;;
*[!0-9]* | '') usage ;;
esac
targets=${*:-$ALL_TARGETS}
for t in $targets; do needs "$t" >/dev/null || usage; done

WARN="-Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 -Wundef"
PKG_CFLAGS=$(pkg-config --cflags openblas lapacke libcjson libpcre2-8 libutf8proc 2>/dev/null)
PKG_LIBS="$(pkg-config --libs openblas lapacke libcjson libpcre2-8 libutf8proc 2>/dev/null) -lcsv -lpthread -lm"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
BASE="-std=c11 -D_GNU_SOURCE -I. $PKG_CFLAGS $WARN -O1 -g"
GOLDEN="-DFZ_GOLDEN_MODEL=\"$PWD/tests/data/golden/msmoe-mixtral/model\""

if [ "$mode" = replay ]; then
	out=$BUILD/fuzz/replay
	cc=$CC
	lib_flags="$SAN"
	link_flags="$SAN"
	driver=tests/fuzz/standalone.c
else
	out=$BUILD/fuzz/libfuzzer
	cc=$FUZZ_CC
	# the library is instrumented for coverage too, so libFuzzer sees inside the parsers
	lib_flags="$SAN -fsanitize=fuzzer-no-link"
	link_flags="$SAN -fsanitize=fuzzer"
	driver=
	if ! command -v "$cc" >/dev/null; then
		if [ "$mode" = smoke ]; then # make test on a machine without clang: nothing to count, nothing failed
			echo "fuzz smoke: skipped, $cc not found (scripts/deps.sh installs clang)"
			echo "0 passed, 0 failed"
			exit 0
		fi
		echo "fuzz: $cc not found; install clang (libFuzzer ships with it), or run '$0 replay'" >&2
		exit 2
	fi
fi
mkdir -p "$out/obj"

# Rebuilds what is older than its source or than any io/ or text/ header; io/ and text/ are compiled once into an
# archive so that each target links only the objects it uses.
build_lib() {
	local changed=0 src obj
	for src in io/*.c text/*.c; do
		obj=$out/obj/$(basename "$src" .c).o
		if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || [ -n "$(find io text -name '*.h' -newer "$obj" 2>/dev/null)" ]; then
			echo "  CC $src"
			$cc $BASE $lib_flags -c "$src" -o "$obj" || return 1
			changed=1
		fi
	done
	if [ $changed = 1 ] || [ ! -f "$out/libio.a" ]; then
		rm -f "$out/libio.a"
		ar rcs "$out/libio.a" "$out"/obj/*.o || return 1
	fi
}

build_target() {
	local t=$1 bin=$out/fuzz_$1
	if [ -f "$bin" ] && [ -z "$(find tests/fuzz "$out/libio.a" -newer "$bin" \( -name '*.[ch]' -o -name libio.a \) 2>/dev/null)" ]; then
		return 0
	fi
	echo "  LD $bin"
	$cc $BASE -Werror $link_flags $GOLDEN -o "$bin" "tests/fuzz/fuzz_$t.c" $driver "$out/libio.a" $PKG_LIBS
}

missing_module() {
	local f
	for f in $(needs "$1"); do
		[ -f "$f" ] || { echo "$f"; return 0; }
	done
	return 1
}

# libFuzzer: kept corpus read-only, new inputs in the work directory, artifacts checked afterwards. A smoke run
# starts from an empty work directory, so that each `make test` fuzzes from the same place.
fuzz_one() {
	local t=$1 work=$BUILD/fuzz/work/$1 art=$BUILD/fuzz/artifacts/$1 log=$BUILD/fuzz/logs/$1.log
	local dict=tests/fuzz/dict/$1.dict dict_arg=
	if [ "$mode" = smoke ]; then
		work=$BUILD/fuzz/smoke/$1
		log=$BUILD/fuzz/logs/smoke-$1.log
		rm -rf "$work"
	fi
	mkdir -p "$work" "$art" "$BUILD/fuzz/logs"
	rm -f "$art"/*
	[ -f "$dict" ] && dict_arg=-dict=$dict
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
		"$out/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix="$art/" $dict_arg "$work" "tests/fuzz/corpus/$t" >"$log" 2>&1
	local rc=$?
	if [ -n "$(ls -A "$art")" ]; then
		mkdir -p "tests/fuzz/crash-$t"
		cp "$art"/* "tests/fuzz/crash-$t/"
		echo "fuzz $t: FAILED (exit $rc); inputs kept in tests/fuzz/crash-$t/, log $log:"
		grep -E 'ERROR|SUMMARY|fuzz property failed|runtime error' "$log" | head -n 8 | sed 's/^/    /'
		return 1
	fi
	if [ $rc -ne 0 ]; then
		echo "fuzz $t: FAILED (exit $rc, no input kept); log $log:"
		tail -n 8 "$log" | sed 's/^/    /'
		return 1
	fi
	echo "fuzz $t: ok, $(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}') runs in ${seconds}s," \
		"$(ls "$work" | wc -l) new inputs in $work"
}

replay_one() {
	local t=$1 log=$BUILD/fuzz/logs/replay-$1.log
	mkdir -p "$BUILD/fuzz/logs"
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
		"$out/fuzz_$t" "tests/fuzz/corpus/$t" >"$log" 2>&1
	local rc=$?
	if [ $rc -ne 0 ]; then
		echo "replay $t: FAILED (exit $rc), log $log:"
		grep -E '^input |ERROR|SUMMARY|fuzz property failed|runtime error' "$log" | tail -n 8 | sed 's/^/    /'
		return 1
	fi
	echo "replay $t: ok, $(tail -n 1 "$log")"
}

passed=0
failed=0
mkdir -p "$BUILD/fuzz/tmp"
case $BUILD in
/*) TMPDIR=$BUILD/fuzz/tmp ;;
*) TMPDIR=$PWD/$BUILD/fuzz/tmp ;;
esac
export TMPDIR # the targets' scratch files, removed below even when a crash skipped their own cleanup
build_lib || { echo "fuzz: building io/ failed"; echo "0 passed, 1 failed"; exit 1; }
for t in $targets; do
	if m=$(missing_module "$t"); then
		echo "$mode $t: skipped, $m is not written yet"
		continue
	fi
	if ! build_target "$t"; then
		echo "$mode $t: FAILED to build"
		failed=$((failed + 1))
		continue
	fi
	if [ "$mode" = replay ]; then replay_one "$t"; else fuzz_one "$t"; fi
	if [ $? -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done
rm -rf "$BUILD/fuzz/tmp"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
