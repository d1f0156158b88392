#!/usr/bin/env bash
# Side-by-side benchmark: direct vs HAProxy vs nginx vs fulcrum, interleaved.
#
#   bench/run.sh [--duration 10s] [--rounds 3] [--smoke] [--logged] [--threads 1|default] [--reuseport]
#                [--cases ka50,ka200,ka4k,close,tcp,tls,tlsnew,tls-ec,tlsnew-ec]
#
# TLS cases (haproxy, nginx, fulcrum; certificates made with openssl in the
# temp dir): tls / tls-ec = keep-alive over TLS with an RSA-2048 / ECDSA
# P-256 certificate; tlsnew / tlsnew-ec = a new connection (and handshake)
# per request, so CPU µs/req there is CPU per handshake + request.
# --reuseport adds the target fulcrum-rp: fulcrum with one SO_REUSEPORT socket
# per worker (FULCRUM_ACCEPT=reuseport) instead of the shared listener, on the
# plain HTTP cases (use with --threads default), with its spread over workers.
# --logged adds the logged targets: haproxy+log (option httplog to a local UDP
# syslog sink the harness drains), nginx+log (access log to a file),
# fulcrum+log (no [log]: its default access log, stdout to a file) and
# fulcrum+syslog (the access log to another such sink). --threads default
# runs every proxy with its default thread/worker count (one per core).
#
# Installs haproxy/nginx/wrk if missing, builds fulcrum (release), starts two
# nginx backends and the three proxies on 127.0.0.1, then for each round runs
# every case against every target in turn (A B C D, A B C D, …), each run
# bounded by wrk -d. Writes bench/results/latest.{json,md} (--smoke: smoke.{json,md})
# and prints the table.
# Everything it starts is stopped by PID on exit. See bench/README.md.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION="${DURATION:-10s}"
ROUNDS="${ROUNDS:-3}"
CASES="ka50,ka200,ka4k,close,tcp,tls,tlsnew,tls-ec,tlsnew-ec"
ALL_CASES="ka50|ka200|ka4k|close|tcp|tls|tlsnew|tls-ec|tlsnew-ec"
SMOKE=0
LOGGED=0
REUSEPORT=0
export PROXY_THREADS="${PROXY_THREADS:-1}"
QUIET_IDLE="${QUIET_IDLE:-90}"     # % idle over 1 s that counts as quiet
QUIET_MAX="${QUIET_MAX:-60}"       # longest wait for quiet before a measurement (s)
WARMUP="${WARMUP:-2s}"             # one warm-up per case and target before round 1
RESULTS_DIR="${RESULTS_DIR:-$BENCH_DIR/results}"
ORIG_ARGS="$*"

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration) DURATION=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --cases) CASES=$2; shift 2 ;;
        --smoke) SMOKE=1; shift ;;
        --logged) LOGGED=1; shift ;;
        --reuseport) REUSEPORT=1; shift ;;
        --threads) PROXY_THREADS=$2; shift 2 ;;
        -h|--help) usage 0 ;;
        *) log "unknown argument: $1"; usage 2 ;;
    esac
done
if [[ $SMOKE -eq 1 ]]; then
    DURATION=2s ROUNDS=1 QUIET_MAX=3 WARMUP=0
fi
[[ $DURATION =~ ^[0-9]+[smh]?$ ]] || die "--duration wants e.g. 10s"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "--rounds wants a positive integer"
[[ $PROXY_THREADS =~ ^(1|default)$ ]] || die "--threads wants 1 or default"
IFS=, read -r -a CASE_LIST <<<"$CASES"
for c in "${CASE_LIST[@]}"; do
    [[ $c =~ ^($ALL_CASES)$ ]] || die "unknown case $c (${ALL_CASES//|/,})"
done

ensure_packages haproxy:haproxy nginx:nginx wrk:wrk python3:python3 openssl:openssl curl:curl
build_fulcrum

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
WORK="$(mktemp -d /tmp/fulcrum-bench.XXXXXX)"
chmod 755 "$WORK"
cleanup() {
    stop_all
    if [[ ${BENCH_KEEP_TMP:-0} == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
TLS_DIR="$WORK/certs"
mkdir -p "$TLS_DIR"
make_bench_certs "$TLS_DIR"
export TLS_DIR

read -r B1 B2 P_HAPROXY P_HAPROXY_TCP P_NGINX P_FULCRUM P_FULCRUM_TCP <<<"$(free_ports 7)"
read -r P_HAPROXY_L P_HAPROXY_LT P_NGINX_L P_FULCRUM_L P_FULCRUM_LT P_FULCRUM_S P_FULCRUM_ST \
    SINK_H SINK_F <<<"$(free_ports 9)"
PID_HAPROXY_L="" PID_NGINX_L="" PID_FULCRUM_L="" PID_FULCRUM_S="" PID_FULCRUM_RP=""
# HTTPS ports: RSA and ECDSA certificate, per proxy.
read -r T_HAPROXY_R T_HAPROXY_E T_NGINX_R T_NGINX_E T_FULCRUM_R T_FULCRUM_E <<<"$(free_ports 6)"

start_backend b1 "$B1"; PID_B1=$LAST_PID
start_backend b2 "$B2"; PID_B2=$LAST_PID
wait_http "http://127.0.0.1:$B1/" 10 b1 || die "backend b1 did not start (see $WORK/b1/logs)"
wait_http "http://127.0.0.1:$B2/" 10 b2 || die "backend b2 did not start"
TLS_PORTS="$T_HAPROXY_R $T_HAPROXY_E" start_haproxy "$P_HAPROXY" "$P_HAPROXY_TCP" "$B1" "$B2"; PID_HAPROXY=$LAST_PID
TLS_PORTS="$T_NGINX_R $T_NGINX_E" start_nginx_proxy "$P_NGINX" "$B1" "$B2"; PID_NGINX=$LAST_PID
read -r FULCRUM_ADMIN <<<"$(free_ports 1)"
export FULCRUM_ADMIN
TLS_PORTS="$T_FULCRUM_R $T_FULCRUM_E" start_fulcrum "$P_FULCRUM" "$P_FULCRUM_TCP" "$B1" "$B2"; PID_FULCRUM=$LAST_PID
FULCRUM_ADMIN_PORT=$FULCRUM_ADMIN; unset FULCRUM_ADMIN
# Ready = both backends seen through the proxy (so balancing really spreads).
wait_http "http://127.0.0.1:$P_HAPROXY/" 15 b1 b2 || die "haproxy not ready: $(cat "$WORK/haproxy/haproxy.log")"
wait_http "http://127.0.0.1:$P_HAPROXY_TCP/" 15 b1 b2 || die "haproxy tcp not ready"
wait_http "http://127.0.0.1:$P_NGINX/" 15 b1 b2 || die "nginx proxy not ready"
wait_http "http://127.0.0.1:$P_FULCRUM/" 15 b1 b2 || die "fulcrum not ready: $(cat "$WORK/fulcrum/fulcrum.log")"
wait_http "http://127.0.0.1:$P_FULCRUM_TCP/" 15 b1 b2 || die "fulcrum tcp not ready"
if [[ $REUSEPORT -eq 1 ]]; then
    read -r P_FULCRUM_RP P_FULCRUM_RPT FULCRUM_RP_ADMIN <<<"$(free_ports 3)"
    FULCRUM_ACCEPT=reuseport FULCRUM_ADMIN=$FULCRUM_RP_ADMIN \
        start_fulcrum "$P_FULCRUM_RP" "$P_FULCRUM_RPT" "$B1" "$B2" fulcrum-rp; PID_FULCRUM_RP=$LAST_PID
    wait_http "http://127.0.0.1:$P_FULCRUM_RP/" 15 b1 b2 || die "fulcrum-rp not ready: $(cat "$WORK/fulcrum-rp/fulcrum.log")"
    grep -q "SO_REUSEPORT socket per worker" "$WORK/fulcrum-rp/fulcrum.log" \
        || log "fulcrum-rp: no SO_REUSEPORT sockets (one thread?): it shares one listener like fulcrum"
fi
for p in "$T_HAPROXY_R" "$T_HAPROXY_E" "$T_NGINX_R" "$T_NGINX_E" "$T_FULCRUM_R" "$T_FULCRUM_E"; do
    wait_http "https://127.0.0.1:$p/" 15 b1 b2 || die "TLS listener $p not ready (see $WORK)"
done
log "backends $B1 $B2; haproxy $P_HAPROXY/$P_HAPROXY_TCP; nginx $P_NGINX; fulcrum $P_FULCRUM/$P_FULCRUM_TCP"
if [[ $LOGGED -eq 1 ]]; then
    start_syslog_sink "$SINK_H" sink-haproxy; PID_SINK_H=$LAST_PID
    start_syslog_sink "$SINK_F" sink-fulcrum; PID_SINK_F=$LAST_PID
    start_haproxy "$P_HAPROXY_L" "$P_HAPROXY_LT" "$B1" "$B2" haproxy-log "$SINK_H"; PID_HAPROXY_L=$LAST_PID
    start_nginx_proxy "$P_NGINX_L" "$B1" "$B2" nginx-log file; PID_NGINX_L=$LAST_PID
    start_fulcrum "$P_FULCRUM_L" "$P_FULCRUM_LT" "$B1" "$B2" fulcrum-log default; PID_FULCRUM_L=$LAST_PID
    start_fulcrum "$P_FULCRUM_S" "$P_FULCRUM_ST" "$B1" "$B2" fulcrum-syslog "syslog:$SINK_F"; PID_FULCRUM_S=$LAST_PID
    for p in "$P_HAPROXY_L" "$P_NGINX_L" "$P_FULCRUM_L" "$P_FULCRUM_S"; do
        wait_http "http://127.0.0.1:$p/" 15 b1 b2 || die "logged proxy on $p not ready (see $WORK)"
    done
    log "logged: haproxy+log $P_HAPROXY_L (sink $SINK_H); nginx+log $P_NGINX_L; fulcrum+log $P_FULCRUM_L; fulcrum+syslog $P_FULCRUM_S (sink $SINK_F)"
fi

CLK_TCK=$(getconf CLK_TCK)
RAW="$WORK/raw.jsonl"
: >"$RAW"

# utime+stime (clock ticks) summed over PIDs; fields after the ")" of comm.
cpu_ticks() {
    local total=0 pid stat rest f
    for pid in "$@"; do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        rest=${stat##*) }
        read -r -a f <<<"$rest"
        # rest starts at field 3 (state): utime = field 14 -> index 11, stime -> 12
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}

# Percent idle over one second, from /proc/stat (all CPUs).
idle_pct_1s() {
    local a b
    a=$(head -1 /proc/stat); sleep 1; b=$(head -1 /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN {
        na = split(a, x, " "); split(b, y, " "); tot = 0
        for (i = 2; i <= na; i++) tot += y[i] - x[i]
        idle = (y[5] - x[5]) + (y[6] - x[6])
        printf "%.1f", (tot > 0 ? 100 * idle / tot : 100) }'
}

# Wait (bounded by QUIET_MAX) until the machine is QUIET_IDLE % idle.
# Sets IDLE and WAITED.
wait_quiet() {
    local start=$SECONDS
    while :; do
        IDLE=$(idle_pct_1s)
        WAITED=$((SECONDS - start))
        awk -v i="$IDLE" -v t="$QUIET_IDLE" 'BEGIN { exit !(i >= t) }' && return 0
        if ((WAITED >= QUIET_MAX)); then
            log "machine not quiet after ${WAITED}s (idle ${IDLE}%); measuring anyway, marked noisy"
            return 0
        fi
    done
}

# URL, wrk flags and proxy PIDs for a case and target.
target_url() { # CASE TARGET
    local path=/ port
    [[ $1 == ka4k ]] && path=/4k
    case "$2:$1" in
        haproxy:tls-ec|haproxy:tlsnew-ec) port=$T_HAPROXY_E ;;
        haproxy:tls*) port=$T_HAPROXY_R ;;
        nginx:tls-ec|nginx:tlsnew-ec) port=$T_NGINX_E ;;
        nginx:tls*) port=$T_NGINX_R ;;
        fulcrum:tls-ec|fulcrum:tlsnew-ec) port=$T_FULCRUM_E ;;
        fulcrum:tls*) port=$T_FULCRUM_R ;;
        direct:*) port=$B1 ;;
        haproxy:tcp) port=$P_HAPROXY_TCP ;;
        haproxy:*) port=$P_HAPROXY ;;
        nginx:*) port=$P_NGINX ;;
        fulcrum:tcp) port=$P_FULCRUM_TCP ;;
        fulcrum-rp:*) port=$P_FULCRUM_RP ;;
        fulcrum:*) port=$P_FULCRUM ;;
        haproxy+log:tcp) port=$P_HAPROXY_LT ;;
        haproxy+log:*) port=$P_HAPROXY_L ;;
        nginx+log:*) port=$P_NGINX_L ;;
        fulcrum+log:tcp) port=$P_FULCRUM_LT ;;
        fulcrum+log:*) port=$P_FULCRUM_L ;;
        fulcrum+syslog:tcp) port=$P_FULCRUM_ST ;;
        fulcrum+syslog:*) port=$P_FULCRUM_S ;;
    esac
    local scheme=http
    [[ $1 == tls* ]] && scheme=https
    echo "$scheme://127.0.0.1:$port$path"
}
case_conns() { [[ $1 == ka200 ]] && echo 200 || echo 50; }
case_targets() {
    local t="direct haproxy nginx fulcrum" l="haproxy+log nginx+log fulcrum+log fulcrum+syslog"
    [[ $1 == tcp ]] && t="direct haproxy fulcrum" l="haproxy+log fulcrum+log fulcrum+syslog"
    # The backends speak plain HTTP (no direct), and only the measured proxies have TLS listeners.
    [[ $1 == tls* ]] && t="haproxy nginx fulcrum" l=""
    [[ $REUSEPORT -eq 1 && $1 != tcp && $1 != tls* ]] && t="$t fulcrum-rp"
    [[ $LOGGED -eq 1 ]] && t="$t $l"
    echo "$t"
}
target_pids() {
    case "$1" in
        direct) ;;
        haproxy) echo "$PID_HAPROXY" ;;
        nginx) proc_tree "$PID_NGINX" ;;
        fulcrum) echo "$PID_FULCRUM" ;;
        fulcrum-rp) echo "$PID_FULCRUM_RP" ;;
        haproxy+log) echo "$PID_HAPROXY_L" ;;
        nginx+log) proc_tree "$PID_NGINX_L" ;;
        fulcrum+log) echo "$PID_FULCRUM_L" ;;
        fulcrum+syslog) echo "$PID_FULCRUM_S" ;;
    esac
}

dur_secs() { # 10s | 2m | 1h | 30 -> seconds
    local n=${1%[smh]}
    case "$1" in *m) echo $((n * 60)) ;; *h) echo $((n * 3600)) ;; *) echo "$n" ;; esac
}

run_wrk() { # CASE TARGET DURATION OUTFILE
    local conns hdr=()
    conns=$(case_conns "$1")
    [[ $1 == close || $1 == tlsnew* ]] && hdr=(-H "Connection: close")
    timeout "$(( $(dur_secs "$3") + 30 ))" \
        wrk -t1 -c"$conns" -d"$3" --latency "${hdr[@]}" "$(target_url "$1" "$2")" >"$4" 2>&1 || true
}

measure() { # CASE TARGET ROUND
    local case=$1 target=$2 round=$3 out="$WORK/wrk-$1-$2-$3.txt" pids=() pid c0 c1 hwm
    read -r -a pids <<<"$(target_pids "$target" | tr '\n' ' ')"
    for pid in "${pids[@]}"; do
        echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || true   # reset VmHWM to current RSS
    done
    wait_quiet
    c0=$(cpu_ticks "${pids[@]}")
    run_wrk "$case" "$target" "$DURATION" "$out"
    c1=$(cpu_ticks "${pids[@]}")
    hwm=$(mem_kib VmHWM "${pids[@]}")
    python3 "$BENCH_DIR/report.py" record --out "$RAW" --case "$case" --target "$target" \
        --round "$round" --conns "$(case_conns "$case")" --wrk "$out" \
        --cpu-ticks-before "$c0" --cpu-ticks-after "$c1" --clk-tck "$CLK_TCK" --hwm-kib "$hwm" \
        --idle-pct "$IDLE" --quiet-threshold "$QUIET_IDLE" --quiet-waited-s "$WAITED" \
        --pids "${pids[*]}"
    log "round $round $case $target: $(grep -E '^Requests/sec' "$out" || echo 'no result') (idle before ${IDLE}%)"
    for pid in "$PID_B1" "$PID_B2" "$PID_HAPROXY" "$PID_NGINX" "$PID_FULCRUM" $PID_HAPROXY_L $PID_NGINX_L $PID_FULCRUM_L $PID_FULCRUM_S $PID_FULCRUM_RP; do
        kill -0 "$pid" 2>/dev/null || die "process $pid died during $case/$target (logs in $WORK)"
    done
}

if [[ $WARMUP != 0 ]]; then
    log "warm-up ($WARMUP per case and target)"
    for case in "${CASE_LIST[@]}"; do
        for target in $(case_targets "$case"); do
            run_wrk "$case" "$target" "$WARMUP" /dev/null
        done
    done
fi

for round in $(seq 1 "$ROUNDS"); do
    for case in "${CASE_LIST[@]}"; do
        for target in $(case_targets "$case"); do
            measure "$case" "$target" "$round"
        done
    done
done

# How the measured fulcrum spread its connections over its workers.
WORKER_SPREAD="$(curl -s "http://127.0.0.1:$FULCRUM_ADMIN_PORT/metrics" 2>/dev/null \
    | sed -n 's/^fulcrum_worker_connections_total{worker="\([0-9]*\)"} \([0-9]*\)$/w\1=\2/p' | paste -sd ' ' -)"
log "fulcrum connections per worker: ${WORKER_SPREAD:-?}"
export WORKER_SPREAD
# CPU seconds of each worker thread (fulcrum-wN) over the process's life.
worker_cpu() { # PID
    local t comm stat rest f out=()
    for t in /proc/"$1"/task/*; do
        comm=$(cat "$t/comm" 2>/dev/null) || continue
        [[ $comm == fulcrum-w* ]] || continue
        stat=$(cat "$t/stat" 2>/dev/null) || continue
        rest=${stat##*) }
        read -r -a f <<<"$rest"
        out+=("${comm#fulcrum-}=$(awk -v t=$((f[11] + f[12])) -v k="$CLK_TCK" 'BEGIN { printf "%.1fs", t / k }')")
    done
    echo "${out[*]}"
}
WORKER_CPU="$(worker_cpu "$PID_FULCRUM")"
log "fulcrum CPU per worker thread: ${WORKER_CPU:-none (one thread)}"
export WORKER_CPU
WORKER_SPREAD_RP="" WORKER_CPU_RP=""
if [[ $REUSEPORT -eq 1 ]]; then
    WORKER_CPU_RP="$(worker_cpu "$PID_FULCRUM_RP")"
    log "fulcrum-rp CPU per worker thread: ${WORKER_CPU_RP:-none}"
    WORKER_SPREAD_RP="$(curl -s "http://127.0.0.1:$FULCRUM_RP_ADMIN/metrics" 2>/dev/null \
        | sed -n 's/^fulcrum_worker_connections_total{worker="\([0-9]*\)"} \([0-9]*\)$/w\1=\2/p' | paste -sd ' ' -)"
    log "fulcrum-rp connections per worker: ${WORKER_SPREAD_RP:-?}"
fi
export WORKER_SPREAD_RP WORKER_CPU_RP
# How many of fulcrum's TLS handshakes resumed a session (wrk may offer the
# session of the connection it replaces): the tlsnew rows are full handshakes
# only when this is ~0. Warm-up and readiness checks included.
TLS_HANDSHAKES="$(curl -s "http://127.0.0.1:$FULCRUM_ADMIN_PORT/metrics" 2>/dev/null | awk '
    /^fulcrum_frontend_tls_handshakes_total\{frontend="tls_/ { split($1, a, "\""); h[a[2]] = $2 }
    /^fulcrum_frontend_tls_resumptions_total\{frontend="tls_/ { split($1, a, "\""); r[a[2]] = $2 }
    END { for (f in h) printf "%s%s: %d handshakes, %d resumed", (n++ ? "; " : ""), f, h[f], r[f] }')"
log "fulcrum TLS handshakes: ${TLS_HANDSHAKES:-?}"
export TLS_HANDSHAKES

mkdir -p "$RESULTS_DIR"
COMMAND="bench/run.sh $ORIG_ARGS" SMOKE="$SMOKE" DURATION="$DURATION" ROUNDS="$ROUNDS" \
FULCRUM_VERSION="$("$FULCRUM" --version 2>/dev/null | head -1) ($(git -C "$REPO_DIR" describe --always --dirty 2>/dev/null || echo '?'))" \
HAPROXY_VERSION="$(haproxy -v | head -1 | awk '{print "HAProxy " $3}')" \
NGINX_VERSION="$(nginx -v 2>&1 | sed 's/^nginx version: //')" \
WRK_VERSION="$(wrk --version 2>&1 | head -1 | awk '{print "wrk " $2}')" \
python3 - "$WORK/meta.json" <<'EOF'
import json, os, platform, sys, time
cpu = "?"
with open("/proc/cpuinfo") as f:
    for line in f:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
e = os.environ
meta = {
    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    "kernel": platform.release(), "cpu": cpu, "nproc": os.cpu_count(),
    "fulcrum": e["FULCRUM_VERSION"], "haproxy": e["HAPROXY_VERSION"],
    "nginx": e["NGINX_VERSION"], "wrk": e["WRK_VERSION"],
    "fulcrum_threads": ("default (no [global]: one per core)" if e.get("PROXY_THREADS") == "default"
                        else e.get("FULCRUM_THREADS") or "1 ([global] threads = 1)"),
    "proxy_threads": e.get("PROXY_THREADS", "1"),
    "worker_connections": e.get("WORKER_SPREAD", ""),
    "tls_handshakes": e.get("TLS_HANDSHAKES", ""),
    "worker_connections_rp": e.get("WORKER_SPREAD_RP", ""),
    "worker_cpu": e.get("WORKER_CPU", ""),
    "worker_cpu_rp": e.get("WORKER_CPU_RP", ""),
    "duration": e["DURATION"], "rounds": int(e["ROUNDS"]),
    "smoke": e["SMOKE"] == "1", "command": e["COMMAND"].strip(),
}
json.dump(meta, open(sys.argv[1], "w"), indent=2)
EOF
# A smoke run never overwrites the real results.
NAME=latest
[[ $SMOKE -eq 1 ]] && NAME=smoke
python3 "$BENCH_DIR/report.py" report --raw "$RAW" --meta "$WORK/meta.json" \
    --json "$RESULTS_DIR/$NAME.json" --md "$RESULTS_DIR/$NAME.md"
log "wrote $RESULTS_DIR/$NAME.json and $NAME.md"
