#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Install Azurite (the Azure Storage emulator, from npm) into
# tests/emulators/.node/ unless it is already there, and print the path of
# its azurite-blob program.  Idempotent: a second run only checks the
# installed version and prints the path.
#
#   bash tests/emulators/install-azurite.sh        -> /.../azurite-blob
#
# Environment: AZURITE_VERSION (default 3.37.0), AZURITE_PREFIX (default
# tests/emulators/.node).
set -euo pipefail

VERSION=${AZURITE_VERSION:-3.37.0}
HERE=$(cd "$(dirname "$0")" && pwd)
PREFIX=${AZURITE_PREFIX:-$HERE/.node}
BIN=$PREFIX/node_modules/.bin/azurite-blob
PKG=$PREFIX/node_modules/azurite/package.json

installed_version() {
	[ -f "$PKG" ] || return 1
	sed -n 's/^[[:space:]]*"version":[[:space:]]*"\([^"]*\)".*/\1/p' "$PKG" |
		head -n 1
}

if [ -x "$BIN" ] && [ "$(installed_version)" = "$VERSION" ]; then
	echo "$BIN"
	exit 0
fi

for tool in node npm; do
	if ! command -v "$tool" >/dev/null; then
		echo "install-azurite: $tool is missing (Debian packages nodejs npm)" >&2
		exit 1
	fi
done

mkdir -p "$PREFIX"
# A package.json of its own keeps npm from walking up into the repository.
[ -f "$PREFIX/package.json" ] ||
	printf '{"name":"cloudfs-test-emulators","private":true}\n' >"$PREFIX/package.json"
(
	cd "$PREFIX"
	npm install --no-audit --no-fund --no-save --loglevel=error \
		"azurite@$VERSION" >&2
)
if [ ! -x "$BIN" ] || [ "$(installed_version)" != "$VERSION" ]; then
	echo "install-azurite: azurite $VERSION did not install into $PREFIX" >&2
	exit 1
fi
echo "$BIN"
