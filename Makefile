# moescope: `make` builds build/moescope; `make run` opens the sample; `make test` runs every test under
# AddressSanitizer and UndefinedBehaviorSanitizer with -Werror, and the application's unit tests again under
# ThreadSanitizer (mk/tsan.mk). BUILD=dir puts everything in another directory
# (lets several builds run side by side).

BUILD   ?= build
CC      ?= cc
PREFIX  ?= /usr/local
PKGS    := ncursesw openblas lapacke libcjson libpcre2-8 libutf8proc

WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 -Wundef
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lcsv -lpthread -lm
BASE_CFLAGS = -std=c11 -D_GNU_SOURCE -I. $(PKG_CFLAGS) $(WARN) -MMD -MP
CFLAGS  ?= -O2 -g
SAN     := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
SAN_CFLAGS := -O1 -g $(SAN) -Werror

# The rooms, bottom up (README "Layout"): io/ files, analysis/ arithmetic, text/ the tokenizer, pipeline/ the
# work on a model that combines them, samples/ the sample generator, tui/ the interactive application, cli/ main() and the commands.
IO_SRC   := $(wildcard io/*.c)
AN_SRC   := $(wildcard analysis/*.c)
PIPE_SRC := $(wildcard pipeline/*.c)
SMP_SRC  := $(wildcard samples/*.c)
TXT_SRC  := $(wildcard text/*.c)
TUI_SRC  := $(wildcard tui/*.c)
CLI_SRC  := $(wildcard cli/*.c)
TEST_SRC := $(wildcard tests/test_*.c)
# Objects below tui/ and cli/ (no curses, no main): what unit tests link.
CORE_SRC := $(IO_SRC) $(AN_SRC) $(TXT_SRC) $(PIPE_SRC) $(SMP_SRC)

OBJ      := $(patsubst %.c,$(BUILD)/obj/%.o,$(CORE_SRC) $(TUI_SRC) $(CLI_SRC))
SAN_CORE := $(patsubst %.c,$(BUILD)/san/%.o,$(CORE_SRC))
SAN_TUI  := $(patsubst %.c,$(BUILD)/san/%.o,$(TUI_SRC) $(CLI_SRC))
TESTS    := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))

SAMPLE_DIR := $(BUILD)/samples
SAMPLE     := $(SAMPLE_DIR)/mixtral-tiny

.PHONY: all deps run test check-build clean install samples

all: $(BUILD)/moescope

deps:
	@sh scripts/deps.sh

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/san/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(SAN_CFLAGS) -c $< -o $@

$(BUILD)/moescope: $(OBJ)
	$(CC) $(CFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/san/moescope: $(SAN_CORE) $(SAN_TUI)
	$(CC) $(SAN_CFLAGS) -o $@ $^ $(PKG_LIBS)

# The application's files without curses: the unit tests of the application (those including a tui/ header)
# link them; every other unit test links io/, analysis/, pipeline/ and samples/ alone.
TUI_UNIT_SRC := $(filter-out tui/app_curses.c,$(TUI_SRC))
SAN_TUI_UNIT := $(patsubst %.c,$(BUILD)/san/%.o,$(TUI_UNIT_SRC))
UI_TESTS     := $(patsubst tests/%.c,$(BUILD)/tests/%,$(shell grep -l '^\#include "tui/' $(TEST_SRC) 2>/dev/null))
CORE_TESTS   := $(filter-out $(UI_TESTS),$(TESTS))

$(CORE_TESTS): $(BUILD)/tests/%: tests/%.c $(SAN_CORE)
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(SAN_CFLAGS) -o $@ $< $(SAN_CORE) $(PKG_LIBS)

$(UI_TESTS): $(BUILD)/tests/%: tests/%.c $(SAN_CORE) $(SAN_TUI_UNIT)
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(SAN_CFLAGS) -o $@ $< $(SAN_CORE) $(SAN_TUI_UNIT) $(PKG_LIBS)

$(SAMPLE_DIR)/.stamp: $(BUILD)/moescope
	$(BUILD)/moescope samples $(SAMPLE_DIR)
	@touch $@

samples: $(SAMPLE_DIR)/.stamp

run: deps
	@$(MAKE) --no-print-directory $(BUILD)/moescope $(SAMPLE_DIR)/.stamp
	$(BUILD)/moescope $(SAMPLE) $(SAMPLE)/calib.safetensors

# The tokenizer.json files the tokenizer tests compare against, kept compressed in tests/tokenizer/.
TOK_JSON := $(patsubst tests/tokenizer/%.json.xz,$(BUILD)/tokenizers/%.json,$(wildcard tests/tokenizer/*.json.xz))
$(BUILD)/tokenizers/%.json: tests/tokenizer/%.json.xz
	@mkdir -p $(dir $@)
	xz -dc $< >$@.tmp && mv $@.tmp $@

check-build: $(BUILD)/san/moescope $(TESTS) $(SAMPLE_DIR)/.stamp $(TOK_JSON)

test: deps
	@$(MAKE) --no-print-directory check-build
	@MOESCOPE=$(BUILD)/san/moescope SAMPLES=$(SAMPLE_DIR) TOKENIZERS=$(BUILD)/tokenizers ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
		UBSAN_OPTIONS=print_stacktrace=1 OPENBLAS_NUM_THREADS=1 tests/run.sh $(BUILD)

install: $(BUILD)/moescope
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 755 $(BUILD)/moescope $(DESTDIR)$(PREFIX)/bin/moescope

clean:
	rm -rf $(BUILD)

# Areas with their own targets (fuzzing, benchmarks) keep them in mk/*.mk.
include $(wildcard mk/*.mk)

-include $(OBJ:.o=.d) $(SAN_CORE:.o=.d) $(SAN_TUI:.o=.d) $(TESTS:=.d)
