# `make bench`: stage timings beside limits measured in the same run (bench/bench.c, docs/design.md §7), built -O2
# from the core objects. `make bigmodel`: peak memory of analyze, plan and merge on a generated >= 12 GB
# Mixtral-shaped checkpoint (bench/bigmodel.sh). Neither is part of `make test`: no test asserts a time.

BENCH_LIB  := $(patsubst %.c,$(BUILD)/obj/%.o,bench/synth.c bench/hungarian.c cli/blas.c)
BENCH_CORE := $(patsubst %.c,$(BUILD)/obj/%.o,$(IO_SRC) $(AN_SRC) $(TXT_SRC) $(PIPE_SRC))
BENCH_BINS := $(BUILD)/bench/bench $(BUILD)/bench/genmodel $(BUILD)/bench/tokbench

.PHONY: bench bench-tokenizer bench-torch bigmodel

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(BENCH_LIB) $(BENCH_CORE)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BENCH_LIB) $(BENCH_CORE) $(PKG_LIBS)

bench: $(BUILD)/bench/bench $(BUILD)/bench/tokbench $(BUILD)/bench/genmodel $(BUILD)/moescope $(TOK_JSON)
	$(BUILD)/bench/bench --json $(BUILD)/bench.json --dir $(BUILD)/bench-data
	@mkdir -p $(BUILD)/bench-data
	$(BUILD)/bench/tokbench $(BUILD)/bench-data $(BUILD)/tokenizers/qwen3.json $(BUILD)/tokenizers/mistral.json \
		$(BUILD)/tokenizers/deepseek_v3.json
	bench/torchcmp.sh $(BUILD) 1

# analyze against the MC-SMoE way in PyTorch alone (bench/torchcmp.sh; skipped in one line without torch).
bench-torch: $(BUILD)/bench/genmodel $(BUILD)/moescope
	bench/torchcmp.sh $(BUILD) 1

# The tokenizer's row alone: `make bench-tokenizer`.
bench-tokenizer: $(BUILD)/bench/tokbench $(TOK_JSON)
	@mkdir -p $(BUILD)/bench-data
	$(BUILD)/bench/tokbench $(BUILD)/bench-data $(BUILD)/tokenizers/qwen3.json $(BUILD)/tokenizers/mistral.json \
		$(BUILD)/tokenizers/deepseek_v3.json

bigmodel: $(BUILD)/bench/genmodel $(BUILD)/moescope
	bench/bigmodel.sh $(BUILD)

-include $(BENCH_LIB:.o=.d) $(BUILD)/obj/bench/bench.d $(BUILD)/obj/bench/genmodel.d $(BUILD)/obj/bench/tokbench.d

# Keep the bench objects, which make would otherwise delete as intermediates of the pattern rule above.
.SECONDARY: $(BENCH_LIB) $(BUILD)/obj/bench/bench.o $(BUILD)/obj/bench/genmodel.o $(BUILD)/obj/bench/tokbench.o
