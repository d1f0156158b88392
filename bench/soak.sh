#!/usr/bin/env bash
# Soak under chaos (issue 18): N minutes (default 30) of mixed load through one fulcrum while
# backends are SIGKILLed and restarted, servers drained/removed/re-added, the config reloaded,
# the inventory file edited and the binary upgraded. Not a timed test: no time thresholds.
#
#   bench/soak.sh [--minutes 30] [--seed 18] [--release] [--ci] [--keep] [--json F] [-v]
#   (--ci: on failure, also print the end of fulcrum's log; the checks are the same)
#
# Exit 1 on an unexplained failure or RSS/fd growth past a generous bound. The driver is
# bench/soak.py (Python standard library); every process it starts is killed by PID at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

profile=debug
args=()
for a in "$@"; do
    case "$a" in
        --release) profile=release ;;
        *) args+=("$a") ;;
    esac
done

command -v python3 >/dev/null 2>&1 || { echo "soak: skipped: python3 not installed" >&2; exit 0; }
command -v openssl >/dev/null 2>&1 || echo "soak: openssl not installed: the TLS load is skipped" >&2
command -v h2load >/dev/null 2>&1 || echo "soak: h2load (nghttp2-client) not installed: the HTTP/2 load is skipped" >&2

if [ "$profile" = release ]; then
    cargo build --release --quiet --bin fulcrum
else
    cargo build --quiet --bin fulcrum
fi
bin="${CARGO_TARGET_DIR:-target}/$profile/fulcrum"

# The driver owns its processes; this trap only covers the driver itself (e.g. Ctrl-C of the script).
driver=""
stop_driver() {
    if [ -n "$driver" ]; then
        kill -TERM "$driver" 2>/dev/null || true
        wait "$driver" 2>/dev/null || true
        driver=""
    fi
}
trap stop_driver EXIT
trap 'stop_driver; exit 130' INT TERM
PYTHONDONTWRITEBYTECODE=1 python3 bench/soak.py --binary "$bin" ${args[@]+"${args[@]}"} &
driver=$!
set +e
wait "$driver"
rc=$?
driver=""
exit "$rc"
