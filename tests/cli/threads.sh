# Thread determinism of the commands: analyze, plan and eval (with a plan, and the MEO analysis without one) give
# byte-identical JSON and CSV with one and with two OpenBLAS threads. The golden model is too small for OpenBLAS to
# split its work (it stays on one thread below about 64^3 multiply-adds per GEMM); the olmoe-mini sample (d=256)
# is not, so it is used when make test has generated the samples. tests/test_threads.c checks the same in process
# on a block built for the purpose. Every comparison is exact: nothing in these paths depends on the thread count
# (OpenBLAS splits GEMM and GEMV by output rows or columns, never a sum, and our own sums run in a fixed order).
. "$(dirname "$0")/lib.sh"

models=("$GOLDEN/model|$GOLDEN/calib.safetensors")
if [ -n "${SAMPLES:-}" ] && [ -f "$SAMPLES/olmoe-mini/config.json" ]; then
	models+=("$SAMPLES/olmoe-mini|$SAMPLES/olmoe-mini/calib.safetensors")
else
	echo "note: \$SAMPLES/olmoe-mini not found; only the golden model is checked"
fi

# same NAME FILE1 FILE2: the two outputs are byte-identical.
same() {
	if cmp -s "$2" "$3"; then pass "$1"; else fail "$1" "$(diff "$2" "$3" | head -c 400)"; fi
}

for pair in "${models[@]}"; do
	M=${pair%%|*}
	C=${pair#*|}
	name=$(basename "$M")
	[ "$name" = model ] && name=golden
	for t in 1 2; do
		export OPENBLAS_NUM_THREADS=$t
		expect_status "$name: analyze --similarity all, $t thread(s)" 0 \
			"$MOESCOPE" analyze "$M" --calib "$C" --similarity all --json "$TMP/analyze_$t.json"
		expect_status "$name: plan --groups 4, $t thread(s)" 0 \
			"$MOESCOPE" plan "$M" --calib "$C" --groups 4 --out "$TMP/plan_$t.csv"
		expect_status "$name: plan --method hc (expert-output), $t thread(s)" 0 \
			"$MOESCOPE" plan "$M" --calib "$C" --groups 3 --method hc --out "$TMP/hc_$t.csv"
		expect_status "$name: eval --plan, $t thread(s)" 0 \
			"$MOESCOPE" eval "$M" --calib "$C" --plan "$TMP/plan_1.csv" --json "$TMP/eval_$t.json"
		expect_status "$name: eval without a plan (MEO), $t thread(s)" 0 \
			"$MOESCOPE" eval "$M" --calib "$C" --json "$TMP/meo_$t.json"
	done
	unset OPENBLAS_NUM_THREADS
	same "$name: analyze JSON identical with 1 and 2 threads" "$TMP/analyze_1.json" "$TMP/analyze_2.json"
	same "$name: msmoe plan identical" "$TMP/plan_1.csv" "$TMP/plan_2.csv"
	same "$name: hc plan identical" "$TMP/hc_1.csv" "$TMP/hc_2.csv"
	same "$name: eval --plan JSON identical" "$TMP/eval_1.json" "$TMP/eval_2.json"
	same "$name: MEO JSON identical" "$TMP/meo_1.json" "$TMP/meo_2.json"
	# The reports are about the model: they must hold per-block results, not be empty shells that trivially agree.
	expect_grep "$name: analyze JSON holds stable ranks" '"stable_rank' "$TMP/analyze_1.json"
	expect_grep "$name: eval JSON holds the output error" '"output_rel_error"' "$TMP/eval_1.json"
done
finish
