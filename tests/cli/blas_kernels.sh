# Same bits on every machine: OpenBLAS picks its kernels by CPU, and kernels of other widths round differently,
# so moescope pins one set (cli/blas.c). Here other machines are stood in for by asking OpenBLAS for other kernels
# (OPENBLAS_CORETYPE, which OpenBLAS obeys on this machine): the pinned program must not care, while with the pin
# switched off (MOESCOPE_BLAS=native) the same request must change the bits, which shows the comparison can fail.
. "$(dirname "$0")/lib.sh"

M=$GOLDEN/model
C=$GOLDEN/calib.safetensors
if [ -n "${SAMPLES:-}" ] && [ -f "$SAMPLES/mixtral-tiny/config.json" ]; then
	M=$SAMPLES/mixtral-tiny
	C=$M/calib.safetensors
fi

same() { if cmp -s "$2" "$3"; then pass "$1"; else fail "$1" "$(cmp "$2" "$3" 2>&1 | head -c 300)"; fi; }

expect_status "--version" 0 "$MOESCOPE" --version
expect_grep "--version names OpenBLAS" '^blas: OpenBLAS ' "$TMP/out"

if grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; then
	for core in "" Sandybridge Nehalem; do
		expect_status "--version with OPENBLAS_CORETYPE='$core'" 0 env OPENBLAS_CORETYPE="$core" "$MOESCOPE" --version
		expect_grep "kernels pinned to Haswell whatever OPENBLAS_CORETYPE='$core' says" '^kernels: Haswell, pinned$' "$TMP/out"
	done
	# The same analysis and merge with the kernels OpenBLAS would choose for other CPUs.
	for core in plain Sandybridge Nehalem; do
		want=$core
		[ "$core" = plain ] && want=
		expect_status "analyze, OPENBLAS_CORETYPE=$core" 0 env OPENBLAS_CORETYPE="$want" \
			"$MOESCOPE" analyze "$M" --calib "$C" --similarity all --json "$TMP/analyze_$core.json"
		expect_status "plan, OPENBLAS_CORETYPE=$core" 0 env OPENBLAS_CORETYPE="$want" \
			"$MOESCOPE" plan "$M" --calib "$C" --groups 4 --method hc --out "$TMP/plan_$core.csv"
		expect_status "merge, OPENBLAS_CORETYPE=$core" 0 env OPENBLAS_CORETYPE="$want" \
			"$MOESCOPE" merge "$M" --calib "$C" --plan "$TMP/plan_plain.csv" --out "$TMP/merged_$core"
		(cd "$TMP/merged_$core" && sha256sum -- * >"$TMP/merged_$core.sha256")
	done
	for core in Sandybridge Nehalem; do
		same "analyze: $core kernels requested, same bits" "$TMP/analyze_plain.json" "$TMP/analyze_$core.json"
		same "plan: $core kernels requested, same plan" "$TMP/plan_plain.csv" "$TMP/plan_$core.csv"
		same "merge: $core kernels requested, same checkpoint bytes" "$TMP/merged_plain.sha256" "$TMP/merged_$core.sha256"
	done
	expect_status "analyze, pin off, Sandybridge kernels" 0 env MOESCOPE_BLAS=native OPENBLAS_CORETYPE=Sandybridge \
		"$MOESCOPE" analyze "$M" --calib "$C" --similarity all --json "$TMP/analyze_native.json"
	if cmp -s "$TMP/analyze_plain.json" "$TMP/analyze_native.json"; then
		fail "without the pin, other kernels change the bits (so the comparisons above can fail)"
	else
		pass "without the pin, other kernels change the bits (so the comparisons above can fail)"
	fi
	expect_status "--version, pin off" 0 env MOESCOPE_BLAS=native OPENBLAS_CORETYPE=Sandybridge "$MOESCOPE" --version
	expect_grep "--version says the pin is off" '^kernels: Sandybridge, chosen by OpenBLAS \(MOESCOPE_BLAS=native' "$TMP/out"
else
	expect_status "--version" 0 "$MOESCOPE" --version
	expect_grep "--version says this CPU cannot be pinned" 'lacks AVX2 or FMA' "$TMP/out"
fi
finish
