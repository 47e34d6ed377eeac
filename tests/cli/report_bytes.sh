# The merge report's per-block bytes add up to what the checkpoint lost: the tensors' data in the input's weight
# files less the output's (counted from the safetensors headers, independently of moescope). Covers the tensors
# beside the expert matrices: gpt-oss's expert and router biases, MXFP4's and FP8's scales, DeepSeek-V3's
# selection bias.
. "$(dirname "$0")/lib.sh"

if [ -z "${SAMPLES:-}" ] || [ ! -f "$SAMPLES/gptoss-tiny/config.json" ]; then
	fail "the samples are needed (SAMPLES=build/samples, as make test sets)"
	finish
	exit 1
fi

for s in gptoss-tiny gptoss-mxfp4 mixtral-fp8 deepseek3-tiny mixtral-tiny; do
	M=$SAMPLES/$s
	C=$M/calib.safetensors
	expect_status "$s: plan --groups 2" 0 "$MOESCOPE" plan "$M" --calib "$C" --groups 2 --out "$TMP/$s.csv"
	expect_status "$s: merge" 0 "$MOESCOPE" merge "$M" --calib "$C" --plan "$TMP/$s.csv" --out "$TMP/$s"
	if python3 - "$M" "$TMP/$s" >"$TMP/py" 2>&1 <<'PY'
import glob, json, os, struct, sys
def data_bytes(d):
    total = 0
    for f in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
        if f.endswith("calib.safetensors"):
            continue
        with open(f, "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            head = json.loads(fh.read(n))
        total += sum(v["data_offsets"][1] - v["data_offsets"][0] for k, v in head.items() if k != "__metadata__")
    return total
src, out = sys.argv[1], sys.argv[2]
rep = json.load(open(os.path.join(out, "moescope_report.json")))
saved = sum(b["bytes_before"] - b["bytes_after"] for b in rep["blocks"])
files = data_bytes(src) - data_bytes(out)
assert saved == files, (saved, files)
PY
	then pass "$s: the report's per-block bytes add up to the files' difference"
	else fail "$s: report and files disagree" "$(tail -2 "$TMP/py")"; fi
done
finish
