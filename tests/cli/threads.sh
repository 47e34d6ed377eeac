# Thread determinism of the commands: analyze, plan and eval (with a plan, and the MEO analysis without one) give
# byte-identical JSON and CSV with --threads 1, 2 and 3, whatever OPENBLAS_NUM_THREADS says (moescope splits the
# work itself and runs OpenBLAS on one thread). The olmoe-mini sample (64 experts, d 256) has many tasks in every
# parallel path, so it is used when make test has generated the samples. tests/test_threads.c checks the same in
# process. Every comparison is exact.
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
	for t in 1 2 3; do
		# An outside OpenBLAS setting that would split its calls must not matter.
		export OPENBLAS_NUM_THREADS=$((t + 1))
		expect_status "$name: analyze --similarity all, $t thread(s)" 0 \
			"$MOESCOPE" analyze "$M" --calib "$C" --similarity all --json "$TMP/analyze_$t.json" --threads $t
		expect_status "$name: plan --groups 4, $t thread(s)" 0 \
			"$MOESCOPE" plan "$M" --calib "$C" --groups 4 --out "$TMP/plan_$t.csv" --threads=$t
		expect_status "$name: plan --method hc (expert-output), $t thread(s)" 0 \
			"$MOESCOPE" --threads $t plan "$M" --calib "$C" --groups 3 --method hc --out "$TMP/hc_$t.csv"
		expect_status "$name: eval --plan, $t thread(s)" 0 \
			"$MOESCOPE" eval "$M" --calib "$C" --plan "$TMP/plan_1.csv" --json "$TMP/eval_$t.json" --threads $t
		expect_status "$name: eval without a plan (MEO), $t thread(s)" 0 \
			"$MOESCOPE" eval "$M" --calib "$C" --json "$TMP/meo_$t.json" --threads $t
		expect_status "$name: merge (aligned, lse-fit), $t thread(s)" 0 \
			"$MOESCOPE" merge "$M" --calib "$C" --plan "$TMP/plan_1.csv" --out "$TMP/merged_$t" --threads $t
		(cd "$TMP/merged_$t" && sha256sum -- * >"$TMP/merged_$t.sha256")
	done
	unset OPENBLAS_NUM_THREADS
	for t in 2 3; do
		same "$name: analyze JSON identical with 1 and $t threads" "$TMP/analyze_1.json" "$TMP/analyze_$t.json"
		same "$name: msmoe plan identical with 1 and $t threads" "$TMP/plan_1.csv" "$TMP/plan_$t.csv"
		same "$name: hc plan identical with 1 and $t threads" "$TMP/hc_1.csv" "$TMP/hc_$t.csv"
		same "$name: eval --plan JSON identical with 1 and $t threads" "$TMP/eval_1.json" "$TMP/eval_$t.json"
		same "$name: MEO JSON identical with 1 and $t threads" "$TMP/meo_1.json" "$TMP/meo_$t.json"
		same "$name: merged checkpoint byte-identical with 1 and $t threads" "$TMP/merged_1.sha256" \
			"$TMP/merged_$t.sha256"
	done
	rm -rf "$TMP"/merged_*
	# The reports are about the model: they must hold per-block results, not be empty shells that trivially agree.
	expect_grep "$name: analyze JSON holds stable ranks" '"stable_rank' "$TMP/analyze_1.json"
	expect_grep "$name: eval JSON holds the output error" '"output_rel_error"' "$TMP/eval_1.json"
done
finish
