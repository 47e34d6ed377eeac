# The application's unit tests (the ones linking the worker thread) built again under ThreadSanitizer, in their
# own directory: ASan and TSan instrument differently and their objects cannot be linked together. `make test`
# builds and runs them (tests/run.sh: suites tsan/test_*); `make tsan-tests` only builds them.
TSAN_CFLAGS := -O1 -g -fsanitize=thread -fno-omit-frame-pointer -Werror
TSAN_CORE   := $(patsubst %.c,$(BUILD)/tsan/%.o,$(CORE_SRC))
TSAN_TUI    := $(patsubst %.c,$(BUILD)/tsan/%.o,$(TUI_UNIT_SRC))
TSAN_TESTS  := $(patsubst $(BUILD)/tests/%,$(BUILD)/tsan/tests/%,$(UI_TESTS))

.PHONY: tsan-tests

$(BUILD)/tsan/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(TSAN_CFLAGS) -c $< -o $@

$(TSAN_TESTS): $(BUILD)/tsan/tests/%: tests/%.c $(TSAN_CORE) $(TSAN_TUI)
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(TSAN_CFLAGS) -o $@ $< $(TSAN_CORE) $(TSAN_TUI) $(PKG_LIBS)

tsan-tests: $(TSAN_TESTS)
check-build: $(TSAN_TESTS)

-include $(TSAN_CORE:.o=.d) $(TSAN_TUI:.o=.d) $(TSAN_TESTS:=.d)
