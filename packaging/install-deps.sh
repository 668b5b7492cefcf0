#!/bin/bash
# Install what ecnet needs on a Debian machine (root): system packages with apt-get and the
# Python package with its test extras into ./.venv. Safe to run again.
#   packaging/install-deps.sh            # runtime + test dependencies
#   ECNET_SKIP_APT=1 packaging/install-deps.sh   # only the Python side
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
PKGS=(openvswitch-switch iproute2 iputils-ping ethtool podman runc busybox-static
      containernetworking-plugins containerd python3 python3-venv python3-pip procps gcc
      libc6-dev util-linux)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${ECNET_SKIP_APT:-}" != 1 ] && [ ${#missing[@]} -gt 0 ]; then
  echo "==> apt-get install ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The Debian package starts a system OVS on the kernel datapath; ecnet's lab and tests run
# their own private userspace instances and leave the system one alone.
PY=${ECNET_PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
echo "==> pip install -e .[test]"
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e '.[test]'
bash packaging/build-shim.sh .venv  # the static CNI binary the agent installs
echo "==> dependencies ready"
