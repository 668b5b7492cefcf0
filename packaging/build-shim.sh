#!/bin/bash
# Build the static CNI binary (packaging/shim/ecnet.c, libc only) where the agent's
# --install-cni-dir finds it: $prefix/libexec/ecnet/ecnet (default prefix: ./.venv).
#   packaging/build-shim.sh [PREFIX]
# Without gcc or a static libc it says so and exits 0: the agent then installs the Python
# launcher, which works everywhere Python 3 does, only slower to start (~8 ms against ~0.5).
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${1:-.venv}
out="$prefix/libexec/ecnet/ecnet"
CC=${CC:-gcc}
if ! command -v "$CC" >/dev/null; then
  echo "==> no $CC: the agent will install the Python launcher" >&2; exit 0
fi
mkdir -p "$(dirname "$out")"
tmp=$(mktemp "$(dirname "$out")/.ecnet.XXXXXX")
trap 'rm -f "$tmp"' EXIT
if ! "$CC" -static -O2 -Wall -Wextra -Werror -o "$tmp" packaging/shim/ecnet.c; then
  echo "==> static build failed (libc6-dev?): the agent will install the Python launcher" >&2
  exit 0
fi
strip "$tmp" 2>/dev/null || true
chmod 0755 "$tmp"
mv -f "$tmp" "$out"  # atomic: a runtime may be exec'ing the old one
trap - EXIT
echo "==> static CNI binary: $out"
