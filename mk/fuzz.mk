# libFuzzer targets for the parsers of untrusted input (tests/fuzz/): `make fuzz FUZZ_SECONDS=60` fuzzes each
# target on a copy of its kept corpus; `make fuzz-replay` runs the kept corpus once (also part of `make test`).
FUZZ_SECONDS ?= 60
.PHONY: fuzz fuzz-replay
fuzz: deps
	BUILD=$(BUILD) tests/fuzz/run.sh $(FUZZ_SECONDS)
fuzz-replay:
	BUILD=$(BUILD) CC=$(CC) tests/fuzz/run.sh replay
