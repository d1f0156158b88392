#!/usr/bin/env bash
# Memory per idle keep-alive connection: fulcrum vs HAProxy vs nginx.
#
#   bench/memory.sh [--conns 10000] [--timeout 120]
#
# Starts the same two nginx backends and proxies as bench/run.sh, then for each
# proxy opens N client connections (one request each, then idle), reads the
# proxy's RSS before and after, and prints KiB per connection as a Markdown
# table (also written to bench/results/memory.md). Everything it starts is
# stopped by PID on exit; every address is 127.0.0.1.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONNS=10000
TIMEOUT=120
RESULTS_DIR="${RESULTS_DIR:-$BENCH_DIR/results}"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --conns) CONNS=$2; shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1" ;;
    esac
done
[[ $CONNS =~ ^[1-9][0-9]*$ ]] || die "--conns wants a positive integer"

ensure_packages haproxy:haproxy nginx:nginx python3:python3
build_fulcrum

# The client holds CONNS sockets and each proxy CONNS + a few: raise the limit.
want=$((CONNS * 2 + 1024))
ulimit -n "$want" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# HAProxy will not accept more than its maxconn (half the fd limit): measure every
# proxy with the same number of connections.
if ((CONNS > $(haproxy_maxconn) - 10)); then
    log "open-file limit $(ulimit -n) lets HAProxy take $(haproxy_maxconn) connections: using $(( $(haproxy_maxconn) - 10 ))"
    CONNS=$(( $(haproxy_maxconn) - 10 ))
fi

WORK="$(mktemp -d /tmp/fulcrum-mem.XXXXXX)"
chmod 755 "$WORK"
trap 'stop_all; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

read -r B1 B2 P_HAPROXY P_HAPROXY_TCP P_NGINX P_FULCRUM P_FULCRUM_TCP <<<"$(free_ports 7)"
start_backend b1 "$B1"
start_backend b2 "$B2"
wait_http "http://127.0.0.1:$B1/" 10 b1 || die "backend b1 did not start"
wait_http "http://127.0.0.1:$B2/" 10 b2 || die "backend b2 did not start"

# One proxy at a time, so they do not share the machine while being measured.
rows=()
for target in haproxy nginx fulcrum; do
    case $target in
        haproxy) start_haproxy "$P_HAPROXY" "$P_HAPROXY_TCP" "$B1" "$B2"; port=$P_HAPROXY ;;
        nginx) start_nginx_proxy "$P_NGINX" "$B1" "$B2"; port=$P_NGINX ;;
        fulcrum) start_fulcrum "$P_FULCRUM" "$P_FULCRUM_TCP" "$B1" "$B2"; port=$P_FULCRUM ;;
    esac
    pid=$LAST_PID
    wait_http "http://127.0.0.1:$port/" 15 b1 b2 || die "$target not ready"
    pids=$(proc_tree "$pid" | tr '\n' ' ')
    log "$target: opening $CONNS idle connections (pids $pids)"
    json=$(timeout "$((TIMEOUT + 10))" python3 "$BENCH_DIR/idle_conns.py" --port "$port" \
        --pids "$pids" --conns "$CONNS" --timeout "$TIMEOUT") || json='{"error": "client failed"}'
    rows+=("$target $json")
    stop_one "$pid"
done

mkdir -p "$RESULTS_DIR"
printf '%s\n' "${rows[@]}" >"$WORK/memory.rows"
python3 "$BENCH_DIR/report.py" memory --rows "$WORK/memory.rows" --conns "$CONNS" | tee "$RESULTS_DIR/memory.md"
