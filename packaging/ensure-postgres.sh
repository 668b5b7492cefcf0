#!/bin/bash
# Make sure a PostgreSQL answers on 127.0.0.1:5432 with trust auth and a database "test"
# (what the tests use). Uses the running one when there is one; otherwise installs
# Debian's postgresql and starts a cluster configured for local trust.
# The database-crash test (tests/e2e/test_controller_restart.py) runs a private server of its
# own with Debian's initdb and pg_ctl: the server binaries are installed even when the shared
# server answers from elsewhere (a CI service container).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  echo "==> installing PostgreSQL (server binaries for the private test server)"
  apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
fi
ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if command -v pg_isready >/dev/null && ready; then
  echo "==> PostgreSQL already running on 127.0.0.1:5432"; exit 0
fi
if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  echo "==> installing PostgreSQL"
  apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
fi
ver=$(ls /etc/postgresql | sort -V | tail -1)
hba=/etc/postgresql/$ver/main/pg_hba.conf
if ! grep -q "ecnet-tests" "$hba"; then
  # Test machines only: trust loopback so the suite needs no password.
  sed -i '1i host all all 127.0.0.1/32 trust # ecnet-tests\nhost all all ::1/128 trust # ecnet-tests' "$hba"
fi
pg_ctlcluster --skip-systemctl-redirect "$ver" main start 2>/dev/null \
  || pg_ctlcluster --skip-systemctl-redirect "$ver" main reload
for _ in $(seq 30); do ready && break; sleep 0.5; done
ready || { echo "PostgreSQL did not come up" >&2; exit 1; }
psql -h 127.0.0.1 -U postgres -tc "SELECT 1 FROM pg_database WHERE datname='test'" | grep -q 1 \
  || psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE test" >/dev/null
echo "==> PostgreSQL ready on 127.0.0.1:5432"
