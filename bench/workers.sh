#!/usr/bin/env bash
# The coordination tax of proxy workers, by instruction count: fulcrum at
# `[global] threads = 1` and at 2 (or --threads LIST) under valgrind's
# callgrind, instructions per request over every thread of the process.
#
#   bench/workers.sh [--seconds 5] [--threads 1,2]
#
# Two cases: keep-alive (wrk, 10 connections) and a new connection per
# request (wrk with `Connection: close`, 10 connections). After a warm-up
# the counters are zeroed, wrk runs for --seconds, the counters are dumped
# and divided by the requests wrk completed. User-space instructions only
# (callgrind runs the threads one at a time, so lock contention and cache
# traffic between cores are not in the figure — what is: the extra wake-ups,
# the per-worker accept loops, cross-thread wakes). Also prints the
# connections each worker accepted (fulcrum_worker_connections_total).
# FULCRUM=path uses that binary instead of building one.
# Everything it starts is stopped by PID on exit.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SECONDS_EACH=5
THREADS="1,2"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --seconds) SECONDS_EACH=$2; shift 2 ;;
        --threads) THREADS=$2; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1" ;;
    esac
done
[[ $SECONDS_EACH =~ ^[1-9][0-9]*$ ]] || die "--seconds wants a positive integer"
ensure_packages nginx:nginx valgrind:valgrind wrk:wrk python3:python3 curl:curl
build_fulcrum

WORK="$(mktemp -d /tmp/fulcrum-workers.XXXXXX)"
chmod 755 "$WORK"
trap 'stop_all; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

read -r B1 P ADMIN <<<"$(free_ports 3)"
start_backend b1 "$B1"
wait_port() {
    local port=$1 i
    for i in $(seq 1 600); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    die "nothing on port $port"
}
wait_port "$B1"

# Instructions per request of callgrind process $1; wrk extra args in $2.
measure() {
    local pid=$1 extra=$2 out n dump ir
    # shellcheck disable=SC2086
    wrk -t1 -c10 -d1s $extra "http://127.0.0.1:$P/" >/dev/null
    callgrind_control -z "$pid" >/dev/null 2>&1
    # shellcheck disable=SC2086
    out=$(wrk -t1 -c10 -d"${SECONDS_EACH}s" $extra "http://127.0.0.1:$P/")
    callgrind_control -d "$pid" >/dev/null 2>&1
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    grep -q "Non-2xx\|Socket errors" <<<"$out" && log "wrk: $(grep 'Non-2xx\|Socket errors' <<<"$out")"
    sleep 0.5
    dump=$(ls -t "$WORK"/callgrind.out.* | head -1)
    ir=$(grep -m1 '^summary:' "$dump" | awk '{print $2}')
    rm -f "$WORK"/callgrind.out.*
    echo $((ir / n))
}

run_fulcrum() {
    local t=$1 dir="$WORK/fulcrum-$1" ka close spread
    mkdir -p "$dir"
    cat >"$dir/fulcrum.toml" <<EOF
[global]
threads = $t

[log]
access = "off"

[admin]
listen = "127.0.0.1:$ADMIN"

[frontends.http]
listen = ["127.0.0.1:$P"]
backend = "web"

[backends.web]
servers = [{ name = "b1", address = "127.0.0.1:$B1" }]
EOF
    "$FULCRUM" check --config "$dir/fulcrum.toml" >/dev/null || die "config check failed"
    (cd "$WORK" && exec valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out.%p" \
        "$FULCRUM" run --config "$dir/fulcrum.toml" >"$dir/log" 2>&1) &
    local pid=$!
    track "$pid"
    wait_port "$P"
    ka=$(measure "$pid" "")
    close=$(measure "$pid" "-H Connection:close")
    spread=$(curl -s "http://127.0.0.1:$ADMIN/metrics" \
        | sed -n 's/^fulcrum_worker_connections_total{worker="\([0-9]*\)"} \([0-9]*\)$/w\1=\2/p' | paste -sd ' ' -)
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    printf '| %s | %s | %s | %s |\n' "$t" "$ka" "$close" "$spread"
}

IFS=, read -r -a TS <<<"$THREADS"
printf '| threads | instr/request keep-alive | instr/request new connection | connections per worker |\n'
printf '| ---: | ---: | ---: | --- |\n'
for t in "${TS[@]}"; do run_fulcrum "$t"; done
