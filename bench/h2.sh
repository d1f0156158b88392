#!/usr/bin/env bash
# HTTP/2 side-by-side: HAProxy vs nginx vs fulcrum with h2load, interleaved.
#
#   bench/h2.sh [--requests 20000] [--rounds 3] [--cases h2c,tls,h2c-m100]
#
# Cases: h2c (prior knowledge, -c 10 -m 10), tls (h2 over TLS by ALPN,
# -c 10 -m 10), h2c-m100 (-c 2 -m 100). Two nginx backends over HTTP/1.1
# behind each proxy (one worker/thread each, like bench/run.sh). Each round
# runs every case against every proxy in turn; prints per target the median
# req/s with min–max, CPU ms per 1000 requests (utime+stime of the proxy)
# and peak RSS. Everything started is stopped by PID on exit.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REQUESTS=20000
ROUNDS=3
CASES="h2c,tls,h2c-m100"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --requests) REQUESTS=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --cases) CASES=$2; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1" ;;
    esac
done
[[ $REQUESTS =~ ^[1-9][0-9]*$ ]] || die "--requests wants a positive integer"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "--rounds wants a positive integer"
IFS=, read -r -a CASE_LIST <<<"$CASES"
for c in "${CASE_LIST[@]}"; do
    [[ $c =~ ^(h2c|tls|h2c-m100)$ ]] || die "unknown case $c (h2c,tls,h2c-m100)"
done

ensure_packages haproxy:haproxy nginx:nginx h2load:nghttp2-client openssl:openssl python3:python3
build_fulcrum

WORK="$(mktemp -d /tmp/fulcrum-bench-h2.XXXXXX)"
chmod 755 "$WORK"
cleanup() { stop_all; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
cat "$WORK/cert.pem" "$WORK/key.pem" >"$WORK/combined.pem"
chmod a+r "$WORK"/*.pem

read -r B1 B2 H_C H_T N_C N_T F_C F_T <<<"$(free_ports 8)"
start_backend b1 "$B1"
start_backend b2 "$B2"
wait_http "http://127.0.0.1:$B1/" 10 b1 || die "backend b1 did not start"
wait_http "http://127.0.0.1:$B2/" 10 b2 || die "backend b2 did not start"

mkdir -p "$WORK/haproxy"
cat >"$WORK/haproxy/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4000
defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 120s
frontend h2c
    bind 127.0.0.1:$H_C proto h2
    default_backend be
frontend tls
    bind 127.0.0.1:$H_T ssl crt $WORK/combined.pem alpn h2,http/1.1
    default_backend be
backend be
    balance roundrobin
    http-reuse always
    server b1 127.0.0.1:$B1
    server b2 127.0.0.1:$B2
EOF
haproxy -db -f "$WORK/haproxy/haproxy.cfg" >"$WORK/haproxy/log" 2>&1 &
PID_HAPROXY=$!; track $PID_HAPROXY

mkdir -p "$WORK/nginx/logs"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/tmp_body;
    proxy_temp_path $WORK/nginx/tmp_proxy;
    fastcgi_temp_path $WORK/nginx/tmp_fcgi;
    uwsgi_temp_path $WORK/nginx/tmp_uwsgi;
    scgi_temp_path $WORK/nginx/tmp_scgi;
    http2_max_requests 10000000;
    upstream be { server 127.0.0.1:$B1; server 127.0.0.1:$B2; keepalive 512; }
    server {
        listen 127.0.0.1:$N_C http2;
        listen 127.0.0.1:$N_T ssl http2;
        ssl_certificate $WORK/cert.pem;
        ssl_certificate_key $WORK/key.pem;
        location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
EOF
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" >"$WORK/nginx/logs/stdout.log" 2>&1 &
PID_NGINX=$!; track $PID_NGINX

mkdir -p "$WORK/fulcrum"
cat >"$WORK/fulcrum/fulcrum.toml" <<EOF
[global]
threads = ${FULCRUM_THREADS:-1}
[log]
access = "off"
[frontends.h2c]
listen = ["127.0.0.1:$F_C"]
backend = "web"
h2c = true
[frontends.tls]
listen = ["127.0.0.1:$F_T"]
backend = "web"
tls = { certificates = [ { cert = "$WORK/cert.pem", key = "$WORK/key.pem" } ], http2 = true }
[backends.web]
servers = [ { name = "b1", address = "127.0.0.1:$B1" }, { name = "b2", address = "127.0.0.1:$B2" } ]
EOF
"$FULCRUM" check --config "$WORK/fulcrum/fulcrum.toml" >/dev/null || die "fulcrum config check failed"
"$FULCRUM" run --config "$WORK/fulcrum/fulcrum.toml" >"$WORK/fulcrum/log" 2>&1 &
PID_FULCRUM=$!; track $PID_FULCRUM

url() { # CASE TARGET
    local port
    case "$2:$1" in
        haproxy:tls) port=$H_T ;; haproxy:*) port=$H_C ;;
        nginx:tls) port=$N_T ;; nginx:*) port=$N_C ;;
        fulcrum:tls) port=$F_T ;; fulcrum:*) port=$F_C ;;
    esac
    if [[ $1 == tls ]]; then echo "https://127.0.0.1:$port/"; else echo "http://127.0.0.1:$port/"; fi
}
flags() { [[ $1 == h2c-m100 ]] && echo "-c 2 -m 100" || echo "-c 10 -m 10"; }
pids() { case "$1" in haproxy) echo $PID_HAPROXY ;; nginx) proc_tree $PID_NGINX | tr '\n' ' ' ;; fulcrum) echo $PID_FULCRUM ;; esac; }
ticks() {
    local total=0 pid stat rest f
    for pid in "$@"; do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        rest=${stat##*) }; read -r -a f <<<"$rest"
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}

# Ready: each proxy answers an h2 request.
for t in haproxy nginx fulcrum; do
    for c in h2c tls; do
        ok=0
        for _ in $(seq 1 100); do
            out=$(timeout 10 h2load -n 1 -c 1 "$(url $c $t)" 2>&1 || true)
            if grep -q "status codes: 1 2xx" <<<"$out"; then ok=1; break; fi
            sleep 0.2
        done
        [[ $ok == 1 ]] || die "$t $c not ready: $out $(cat "$WORK"/$t/log* "$WORK"/$t/logs/* 2>/dev/null | tail -5)"
    done
done

CLK=$(getconf CLK_TCK)
RAW="$WORK/raw.tsv"
: >"$RAW"
for round in $(seq 1 "$ROUNDS"); do
    for c in "${CASE_LIST[@]}"; do
        for t in haproxy nginx fulcrum; do
            read -r -a p <<<"$(pids $t)"
            for pid in "${p[@]}"; do echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || true; done
            c0=$(ticks "${p[@]}")
            # shellcheck disable=SC2046
            out=$(timeout 300 h2load -n "$REQUESTS" $(flags "$c") "$(url "$c" "$t")" 2>&1 || true)
            c1=$(ticks "${p[@]}")
            rps=$(awk '/^finished in/ { gsub(",", "", $4); print $4 }' <<<"$out")
            ok=$(awk '/^requests:/ { print $8 }' <<<"$out")
            hwm=$(mem_kib VmHWM "${p[@]}")
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$c" "$t" "$round" "${rps:-0}" "$((c1 - c0))" "$hwm" "${ok:-0}" >>"$RAW"
            log "round $round $c $t: ${rps:-?} req/s, ${ok:-?} succeeded"
        done
    done
done

python3 - "$RAW" "$CLK" "$REQUESTS" <<'EOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
clk, n = int(sys.argv[2]), int(sys.argv[3])
cases = list(dict.fromkeys(r[0] for r in rows))
print("| case | target | req/s median (min–max) | × HAProxy | CPU ms / 1000 req | peak RSS MiB |")
print("|---|---|---|---|---|---|")
for c in cases:
    med = {}
    for t in ("haproxy", "nginx", "fulcrum"):
        rs = [r for r in rows if r[0] == c and r[1] == t]
        rps = [float(r[3]) for r in rs]
        cpu = [int(r[4]) * 1000 / clk / (n / 1000) for r in rs]
        hwm = max(int(r[5]) for r in rs) / 1024
        med[t] = statistics.median(rps)
        ratio = med[t] / med["haproxy"] if med.get("haproxy") else 0
        print(f"| {c} | {t} | {med[t]:.0f} ({min(rps):.0f}–{max(rps):.0f}) | {ratio:.2f} | "
              f"{statistics.median(cpu):.1f} | {hwm:.1f} |")
EOF
