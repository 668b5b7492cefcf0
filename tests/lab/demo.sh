#!/bin/bash
# The main job, from a fresh Debian machine (root): install what is needed, then run a
# whole ecnet lab (controller + agent + userspace OVS + two pods that ping and move data
# over TCP) and tear it down. Prints "RESULT: PASS" and exits 0 when everything worked.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces and OVS need it)" >&2; exit 1; }
bash packaging/install-deps.sh
exec .venv/bin/python -m tests.lab.demo "$@"
