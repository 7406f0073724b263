#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Build the vSphere emulator (tests/emulators/vcsim, on govmomi's simulator)
# offline in GOPATH mode against Debian's golang-github-vmware-govmomi-dev,
# into a cache folder outside the tree, only when its sources changed.
# Prints the binary's path on stdout.
#
#   tests/emulators/build-vcsim.sh            build if needed, print path
#   CFS_VCSIM_CACHE=/some/dir  ...            cache root (default ~/.cache/cloudfs/vcsim)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src="$here/vcsim"
gocode=/usr/share/gocode
cache=${CFS_VCSIM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cloudfs/vcsim}

command -v go >/dev/null || { echo "go is missing (Debian package golang-go)" >&2; exit 2; }
[ -d "$gocode/src/github.com/vmware/govmomi/simulator" ] || {
	echo "govmomi is missing (Debian package golang-github-vmware-govmomi-dev)" >&2; exit 2; }

key=$( { go version; cat "$src"/*.go; } | sha256sum | cut -c1-16)
bin="$cache/$key/vcsim"
if [ -x "$bin" ]; then
	echo "$bin"
	exit 0
fi

mkdir -p "$cache/$key"
work=$(mktemp -d "$cache/$key/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src/cfsvcsim"
cp "$src"/*.go "$work/src/cfsvcsim/"
(
	cd "$work/src/cfsvcsim"
	GO111MODULE=off GOPATH="$work:$gocode" GOPROXY=off GOFLAGS= \
		GOCACHE="${GOCACHE:-$cache/go-build}" \
		go build -o "$work/vcsim" . >&2
)
mv "$work/vcsim" "$bin"
echo "$bin"
