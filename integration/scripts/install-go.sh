#!/usr/bin/env bash
# install-go.sh: make sure a Go toolchain new enough for go.mod is on this machine (Debian 12 ships
# Go 1.19; the project needs the release go.mod names). When `go` (in PATH or /usr/local/go/bin)
# is new enough it does nothing. Otherwise it installs Go $GO_VERSION into /usr/local/go (or
# $GO_INSTALL_DIR) from the Go module proxy: golang.org/toolchain is the module `go` itself
# downloads when GOTOOLCHAIN asks for a release (the same files as go.dev/dl), checked against a
# pinned SHA-256 as docker/Dockerfile does. Run as root; prints the go binary to use on stdout.
set -euo pipefail
cd "$(dirname "$0")/../.."

GO_VERSION=${GO_VERSION:-1.26.8}
dir=${GO_INSTALL_DIR:-/usr/local/go}
GO_SHA256_amd64=30c2b1bf7dcc88d3eb0a1364e47ddd9128edb3110a30e8a0ef61cd5856b31de7
want=$(awk '$1 == "go" {print $2; exit}' go.mod) # 1.26.0

# new_enough GO: its version is at least go.mod's (major.minor.patch compared as numbers).
new_enough() {
	local have
	have=$(GOTOOLCHAIN=local "$1" env GOVERSION 2>/dev/null) || return 1
	have=${have#go}
	[ "$(printf '%s\n%s\n' "$want" "${have%%[a-z]*}" | sort -V | head -1)" = "$want" ]
}

for g in "$(command -v go || true)" "$dir/bin/go"; do
	if [ -n "$g" ] && [ -x "$g" ] && new_enough "$g"; then
		echo "$g"
		exit 0
	fi
done

[ "$(id -u)" = 0 ] || { echo "install-go.sh: Go >= $want is missing; run as root to install it" >&2; exit 1; }
arch=$(dpkg --print-architecture)
sum_var=GO_SHA256_$arch
sum=${GO_SHA256:-${!sum_var:-}}
[ -n "$sum" ] || { echo "install-go.sh: no pinned checksum for $arch: set GO_SHA256 to the SHA-256 of the $arch toolchain zip" >&2; exit 1; }
if ! command -v unzip >/dev/null || ! command -v curl >/dev/null; then
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends unzip curl ca-certificates >&2
fi
echo "install-go.sh: installing Go $GO_VERSION into $dir (from the Go module proxy)" >&2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mod="golang.org/toolchain@v0.0.1-go$GO_VERSION.linux-$arch"
curl -fsSL -o "$tmp/go.zip" "https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-go$GO_VERSION.linux-$arch.zip"
echo "$sum  $tmp/go.zip" | sha256sum -c - >&2
unzip -q "$tmp/go.zip" -d "$tmp/x"
if [ -e "$dir" ]; then mv "$dir" "$dir.old.$(date +%s)"; fi
mkdir -p "$(dirname "$dir")"
mv "$tmp/x/$mod" "$dir"
new_enough "$dir/bin/go" || { echo "install-go.sh: $dir/bin/go does not run" >&2; exit 1; }
echo "$dir/bin/go"
