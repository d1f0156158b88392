#!/usr/bin/env bash
# Install what tests/database.rs needs: PostgreSQL (initdb, pg_ctl, pg_basebackup)
# and redis-server. Idempotent: does nothing when both are already there.
# Called from .ci/run; safe to run by hand as root.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

need=()
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need+=(postgresql)
fi
if ! command -v redis-server >/dev/null 2>&1; then
  need+=(redis-server)
fi
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "db-deps: not root, cannot install ${need[*]}; tests/database.rs will skip those tests" >&2
  exit 1
fi
echo "db-deps: installing ${need[*]}"
apt-get update -qq
# policy-rc.d keeps the packages from starting their own services: the tests
# start their own clusters on ephemeral loopback ports.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod +x "$policy"
  created_policy=1
fi
apt-get install -y -qq --no-install-recommends "${need[@]}" || status=$?
if [ "$created_policy" = 1 ]; then
  rm -f "$policy"
fi
exit "${status:-0}"
