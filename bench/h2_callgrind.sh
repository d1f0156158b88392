#!/usr/bin/env bash
# Instructions per HTTP/2 request, fulcrum vs HAProxy, under callgrind: stable
# on a noisy machine where wall-clock req/s is not.
#
#   bench/h2_callgrind.sh [--requests 5000] [--case h2c|tls|h2c-m100]
#                         [--targets fulcrum,haproxy] [--top 25]
#
# Each target runs alone (one thread) under `valgrind --tool=callgrind`
# with instrumentation off until it has served a warm-up h2load run; then
# counting is switched on, h2load sends --requests requests, and the counts
# are dumped. Prints instructions per request (Ir / requests) for each, and
# fulcrum's top functions by exclusive cost (callgrind_annotate) into
# $OUT (default /tmp/fulcrum-h2-callgrind). Backends: two nginx (HTTP/1.1),
# as bench/h2.sh. Everything started is stopped by PID on exit.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REQUESTS=5000
CASE=h2c
TARGETS=fulcrum,haproxy
TOP=25
OUT=${OUT:-/tmp/fulcrum-h2-callgrind}
while [[ $# -gt 0 ]]; do
    case "$1" in
        --requests) REQUESTS=$2; shift 2 ;;
        --case) CASE=$2; shift 2 ;;
        --targets) TARGETS=$2; shift 2 ;;
        --top) TOP=$2; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1" ;;
    esac
done
[[ $REQUESTS =~ ^[1-9][0-9]*$ ]] || die "--requests wants a positive integer"
[[ $CASE =~ ^(h2c|tls|h2c-m100)$ ]] || die "unknown case $CASE (h2c,tls,h2c-m100)"

ensure_packages haproxy:haproxy nginx:nginx h2load:nghttp2-client openssl:openssl \
    python3:python3 valgrind:valgrind
[[ $TARGETS == *fulcrum* ]] && build_fulcrum

WORK="$(mktemp -d /tmp/fulcrum-bench-h2cg.XXXXXX)"
chmod 755 "$WORK"
mkdir -p "$OUT"
cleanup() { stop_all; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
cat "$WORK/cert.pem" "$WORK/key.pem" >"$WORK/combined.pem"
chmod a+r "$WORK"/*.pem

read -r B1 B2 PORT <<<"$(free_ports 3)"
start_backend b1 "$B1"
start_backend b2 "$B2"
wait_http "http://127.0.0.1:$B1/" 10 b1 || die "backend b1 did not start"
wait_http "http://127.0.0.1:$B2/" 10 b2 || die "backend b2 did not start"

if [[ $CASE == tls ]]; then URL="https://127.0.0.1:$PORT/"; else URL="http://127.0.0.1:$PORT/"; fi
if [[ $CASE == h2c-m100 ]]; then FLAGS=(-c 2 -m 100); else FLAGS=(-c 10 -m 10); fi

run_target() { # NAME CMD...
    local name=$1; shift
    local cg="$OUT/callgrind.$name.out"
    rm -f "$cg" "$cg".*
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$cg" \
        "$@" >"$WORK/$name.log" 2>&1 &
    local pid=$!
    track "$pid"
    local ok=0 out=""
    for _ in $(seq 1 300); do
        out=$(timeout 20 h2load -n 1 -c 1 "$URL" 2>&1 || true)
        if grep -q "status codes: 1 2xx" <<<"$out"; then ok=1; break; fi
        sleep 0.2
    done
    [[ $ok == 1 ]] || die "$name not ready: $out $(tail -5 "$WORK/$name.log")"
    # Warm-up (connections to the servers opened, allocator warmed), uncounted.
    timeout 300 h2load -n 500 "${FLAGS[@]}" "$URL" >/dev/null 2>&1 || true
    callgrind_control -i on "$pid" >/dev/null
    out=$(timeout 600 h2load -n "$REQUESTS" "${FLAGS[@]}" "$URL" 2>&1 || true)
    callgrind_control -d "$pid" >/dev/null
    callgrind_control -i off "$pid" >/dev/null
    local done_ok
    done_ok=$(awk '/^requests:/ { print $8 }' <<<"$out")
    stop_one "$pid"
    local file ir
    file=$(ls -t "$cg".* 2>/dev/null | head -1)
    [[ -n $file ]] || die "$name: no callgrind dump"
    ir=$(awk '/^summary:/ { print $2 }' "$file")
    printf '%s\t%s\t%s\t%s\n' "$name" "$CASE" "${done_ok:-0}" "$ir" >>"$OUT/summary.tsv"
    log "$name $CASE: ${done_ok:-?}/$REQUESTS succeeded, $ir Ir, $((ir / REQUESTS)) Ir/request ($file)"
    callgrind_annotate --inclusive=no "$file" 2>/dev/null | head -$((TOP + 25)) >"$OUT/$name.$CASE.top.txt" || true
    callgrind_annotate --inclusive=yes "$file" 2>/dev/null | head -$((TOP + 25)) >"$OUT/$name.$CASE.incl.txt" || true
}

: >"$OUT/summary.tsv"
IFS=, read -r -a T <<<"$TARGETS"
for t in "${T[@]}"; do
    case "$t" in
        fulcrum)
            mkdir -p "$WORK/fulcrum"
            if [[ $CASE == tls ]]; then
                fe="tls = { certificates = [ { cert = \"$WORK/cert.pem\", key = \"$WORK/key.pem\" } ], http2 = true }"
            else
                fe="h2c = true"
            fi
            cat >"$WORK/fulcrum/fulcrum.toml" <<EOF
[global]
threads = 1
[log]
access = "off"
[frontends.fe]
listen = ["127.0.0.1:$PORT"]
backend = "web"
$fe
[backends.web]
servers = [ { name = "b1", address = "127.0.0.1:$B1" }, { name = "b2", address = "127.0.0.1:$B2" } ]
EOF
            "$FULCRUM" check --config "$WORK/fulcrum/fulcrum.toml" >/dev/null || die "fulcrum config check failed"
            run_target fulcrum "$FULCRUM" run --config "$WORK/fulcrum/fulcrum.toml"
            ;;
        haproxy)
            if [[ $CASE == tls ]]; then
                bind="bind 127.0.0.1:$PORT ssl crt $WORK/combined.pem alpn h2,http/1.1"
            else
                bind="bind 127.0.0.1:$PORT proto h2"
            fi
            cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4000
defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 120s
frontend fe
    $bind
    default_backend be
backend be
    balance roundrobin
    http-reuse always
    server b1 127.0.0.1:$B1
    server b2 127.0.0.1:$B2
EOF
            run_target haproxy haproxy -db -f "$WORK/haproxy.cfg"
            ;;
        *) die "unknown target $t" ;;
    esac
done
column -t "$OUT/summary.tsv" >&2
