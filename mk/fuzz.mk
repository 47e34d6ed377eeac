# libFuzzer targets for the parsers of untrusted input (tests/fuzz/): `make fuzz FUZZ_SECONDS=60` fuzzes each
# target on a copy of its kept corpus; `make fuzz-replay` runs the kept corpus once and `make fuzz-smoke` fuzzes
# each target for FUZZ_SMOKE_SECONDS from the kept corpus alone (both are part of `make test`, which takes
# FUZZ_SMOKE_SECONDS=0 to skip the fuzzing).
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 20
export FUZZ_SMOKE_SECONDS
.PHONY: fuzz fuzz-replay fuzz-smoke
fuzz: deps
	BUILD=$(BUILD) tests/fuzz/run.sh $(FUZZ_SECONDS)
fuzz-replay:
	BUILD=$(BUILD) CC=$(CC) tests/fuzz/run.sh replay
fuzz-smoke:
	BUILD=$(BUILD) tests/fuzz/run.sh smoke $(FUZZ_SMOKE_SECONDS)
