#!/usr/bin/env bash
# Routing cost by instruction count: fulcrum with 10 and 10 000 exact-host
# routes (the request's Host matching the last one) against HAProxy's
# `use_backend %[req.hdr(host),lower,map(file)]` with the same hosts.
#
#   bench/routes.sh [--requests 2000] [--routes 10,10000]
#
# Each proxy runs under valgrind's callgrind (one thread); after a warm-up the
# counters are zeroed, a fixed number of keep-alive HTTP/1.1 requests is sent
# with h2load (10 connections), and the instructions the proxy executed are
# divided by the requests. User-space instructions only (the kernel's share
# is not counted), so the figure is stable on a loaded machine, unlike
# timings. FULCRUM=path uses that binary instead of building one;
# SKIP_FULCRUM=1 / SKIP_HAPROXY=1 leave one side out; HOST_INDEX=i sends
# Host h<i>.example.com instead of the last route's.
# Everything it starts is stopped by PID on exit.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REQUESTS=2000
ROUTES="10,10000"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --requests) REQUESTS=$2; shift 2 ;;
        --routes) ROUTES=$2; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1" ;;
    esac
done
[[ $REQUESTS =~ ^[1-9][0-9]*$ ]] || die "--requests wants a positive integer"
ensure_packages haproxy:haproxy nginx:nginx valgrind:valgrind h2load:nghttp2-client python3:python3
[[ ${SKIP_FULCRUM:-0} == 1 ]] && FULCRUM=/bin/true
build_fulcrum

WORK="$(mktemp -d /tmp/fulcrum-routes.XXXXXX)"
chmod 755 "$WORK"
trap 'stop_all; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

read -r B1 P <<<"$(free_ports 2)"
start_backend b1 "$B1"
wait_listening_port() {
    local port=$1 i
    for i in $(seq 1 600); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    die "nothing on port $port"
}
wait_listening_port "$B1"

# Instructions per request of the callgrind process $1 for host $2 on port $3.
measure() {
    local pid=$1 host=$2 port=$3 out
    h2load --h1 -n 200 -c 10 -H ":authority: $host" "http://127.0.0.1:$port/" >/dev/null
    callgrind_control -z "$pid" >/dev/null 2>&1
    out=$(h2load --h1 -n "$REQUESTS" -c 10 -H ":authority: $host" "http://127.0.0.1:$port/")
    grep -q "status codes: $REQUESTS 2xx" <<<"$out" || die "not all 2xx: $(grep 'status codes' <<<"$out")"
    callgrind_control -d "$pid" >/dev/null 2>&1
    sleep 0.5
    local dump ir
    dump=$(ls -t "$WORK"/callgrind.out.* | head -1)
    ir=$(grep -m1 '^summary:' "$dump" | awk '{print $2}')
    [[ -n ${KEEP_DUMPS:-} ]] && cp "$dump" "$KEEP_DUMPS/"; rm -f "$WORK"/callgrind.out.*
    echo $((ir / REQUESTS))
}

run_fulcrum() {
    local n=$1 dir="$WORK/fulcrum-$n" i
    mkdir -p "$dir"
    {
        printf '[global]\nthreads = 1\n\n[log]\naccess = "off"\n\n[frontends.http]\nlisten = ["127.0.0.1:%s"]\nroutes = [\n' "$P"
        for ((i = 0; i < n; i++)); do printf '  { host = "h%d.example.com", backend = "web" },\n' "$i"; done
        printf ']\n\n[backends.web]\nservers = [{ name = "b1", address = "127.0.0.1:%s" }]\n' "$B1"
    } >"$dir/fulcrum.toml"
    "$FULCRUM" check --config "$dir/fulcrum.toml" >/dev/null || die "config check failed"
    (cd "$WORK" && exec valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out.%p" \
        "$FULCRUM" run --config "$dir/fulcrum.toml" >"$dir/log" 2>&1) &
    local pid=$!
    track "$pid"
    wait_listening_port "$P"
    measure "$pid" "$(host_for "$n")" "$P"
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
}

# The Host of the requests: the last route's (default), or HOST_INDEX's.
host_for() { echo "h${HOST_INDEX:-$(($1 - 1))}.example.com"; }

run_haproxy() {
    local n=$1 dir="$WORK/haproxy-$n" i
    mkdir -p "$dir"
    for ((i = 0; i < n; i++)); do echo "h$i.example.com web"; done >"$dir/hosts.map"
    cat >"$dir/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 1000

defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    timeout http-keep-alive 120s

frontend fe
    bind 127.0.0.1:$P
    option http-keep-alive
    use_backend %[req.hdr(host),lower,map($dir/hosts.map)]

backend web
    http-reuse always
    server b1 127.0.0.1:$B1
EOF
    (cd "$WORK" && exec valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out.%p" \
        haproxy -db -f "$dir/haproxy.cfg" >"$dir/log" 2>&1) &
    local pid=$!
    track "$pid"
    wait_listening_port "$P"
    measure "$pid" "$(host_for "$n")" "$P"
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
}

IFS=, read -r -a NS <<<"$ROUTES"
printf '| routes | fulcrum instr/request | HAProxy map instr/request |\n| ---: | ---: | ---: |\n'
for n in "${NS[@]}"; do
    f=-; h=-
    [[ ${SKIP_FULCRUM:-0} == 1 ]] || f=$(run_fulcrum "$n")
    [[ ${SKIP_HAPROXY:-0} == 1 ]] || h=$(run_haproxy "$n")
    printf '| %s | %s | %s |\n' "$n" "$f" "$h"
done
