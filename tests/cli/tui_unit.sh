#!/usr/bin/env bash
# Builds and runs tests/tui/test_grid.c, the unit tests of the interactive application, under ASan and UBSan.
# They link the curses-free application objects that `make check-build` compiled for $BUILD/san/moescope
# (the Makefile's unit-test rule links io/, analysis/ and samples/ objects only). Usage: tests/cli/tui_unit.sh BUILD
set -u
BUILD=${1:-build}
SAN=$BUILD/san
out=$BUILD/tests/tui
mkdir -p "$out"
objs=()
for f in "$SAN"/io/*.o "$SAN"/analysis/*.o "$SAN"/samples/*.o; do objs+=("$f"); done
for f in grid keys worker app_state app_plan app_actions app_dialog app_script views_frame views_usage \
	views_heatmap views_ranks views_groups views_compress views_dialog; do
	objs+=("$SAN/tui/$f.o")
done
for f in "${objs[@]}"; do
	if [ ! -f "$f" ]; then
		echo "FAIL build: $f missing (run make BUILD=$BUILD check-build first)"
		echo "0 passed, 1 failed"
		exit 1
	fi
done
PKGS="ncursesw openblas lapacke libcjson"
cc -std=c11 -D_GNU_SOURCE -I. $(pkg-config --cflags $PKGS) -Wall -Wextra -Wshadow -Wstrict-prototypes \
	-Wmissing-prototypes -Wformat=2 -Wundef -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer \
	-fno-sanitize-recover=undefined -Werror -o "$out/test_grid" tests/tui/test_grid.c "${objs[@]}" \
	$(pkg-config --libs $PKGS) -lcsv -lpthread -lm || { echo "0 passed, 1 failed"; exit 1; }
exec "$out/test_grid"
