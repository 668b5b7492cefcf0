#!/bin/bash
# The whole test suite, from a fresh Debian machine (root): installs what the tests need
# (apt + pip), makes sure PostgreSQL answers, checks the generated stubs and the import
# contracts, then runs every test: unit, functional (real netns + userspace OVS), e2e
# (the real ecnet binary, Podman). CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash packaging/install-deps.sh
bash packaging/ensure-postgres.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "==> proto stubs"
bash .ci/gen-proto --check
echo "==> import contracts"
lint-imports pyproject.toml
echo "==> ruff"
ruff check cni datapath ipcontroller ipam ovs_driver onos_emulator tests
echo "==> mypy"
mypy cni datapath ipam ipcontroller ovs_driver onos_emulator
mypy tests/fakes/*.py   # the shared fakes satisfy the Protocols they stand in for
# Nothing may hide behind a skip in CI: a missing PostgreSQL, OVS or root fails the run.
export ECNET_REQUIRE_ALL=${ECNET_REQUIRE_ALL:-1}
echo "==> pytest"
set +e
python -m pytest -ra -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
