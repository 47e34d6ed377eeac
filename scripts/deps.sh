#!/bin/sh
# Installs the Debian packages moescope needs to build, test and run, when some are missing.
# Uses apt-get as root, sudo otherwise, and says what to install by hand when neither works.
set -eu
pkgs="gcc make pkg-config python3 libncurses-dev libopenblas-dev liblapacke-dev libcjson-dev libcsv-dev libpcre2-dev libutf8proc-dev xz-utils tmux clang"
missing=""
for p in $pkgs; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing="$missing $p"
	fi
done
[ -z "$missing" ] && exit 0
echo "moescope: installing missing packages:$missing" >&2
if [ "$(id -u)" -eq 0 ]; then
	apt-get update -q >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >&2
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
	sudo apt-get update -q >&2
	sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >&2
else
	echo "moescope: cannot install packages (not root, no password-less sudo); run as root:" >&2
	echo "  apt-get install -y$missing" >&2
	exit 1
fi
