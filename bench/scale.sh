#!/usr/bin/env bash
# The control plane at scale, fulcrum and HAProxy side by side (not a timed test).
#
#   bench/scale.sh [--sizes 10,1000,10000] [--settle 20] [--targets fulcrum,haproxy]
#   (sizes: commas or spaces; --targets fulcrum skips HAProxy, for quick runs)
#
# For each size N: N servers in N/10 backends (10 servers each), HTTP checks every
# second, one frontend with a host route per backend. The servers are 10 nginx
# ports reused under many names (server sK of every backend is port K), so the
# file descriptors stay far below the limit. fulcrum (`[global] threads = 1`)
# and HAProxy (`nbthread 1`, runtime API on a loopback stats socket) run the same
# layout at the same time; bench/scale.py measures both: one state change, 100 x
# drain + ready through the CLI, the status call (time, size), `ctl servers`,
# RSS before and after 1 000 API calls. Results: bench/results/scale.md.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

SIZES="10 1000 10000"
SETTLE=20
TARGETS="fulcrum haproxy"
while [[ $# -gt 0 ]]; do
    case $1 in
        --sizes) SIZES=${2//,/ }; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        --settle) SETTLE=$2; shift 2 ;;
        --targets) TARGETS=${2//,/ }; shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done

WORK=$(mktemp -d /tmp/fulcrum-scale.XXXXXX)
trap 'stop_all; rm -rf "$WORK"' EXIT
build_fulcrum
HAPROXY=0
case " $TARGETS " in *" haproxy "*) HAPROXY=1 ;; esac
[[ $HAPROXY == 0 ]] || command -v haproxy >/dev/null || die "haproxy is needed (apt-get install haproxy)"
command -v nginx >/dev/null || die "nginx is needed (apt-get install nginx)"

# Ten nginx ports answering 200 at /.
read -r -a PORTS <<<"$(free_ports 10)"
dir="$WORK/nginx"
mkdir -p "$dir/logs"
{
    echo "worker_processes 1; daemon off; pid $dir/nginx.pid; error_log $dir/logs/error.log warn;"
    echo "events { worker_connections 4096; }"
    echo "http { access_log off; client_body_temp_path $dir/b; proxy_temp_path $dir/p;"
    echo "  fastcgi_temp_path $dir/f; uwsgi_temp_path $dir/u; scgi_temp_path $dir/s;"
    echo "  server {"
    for p in "${PORTS[@]}"; do echo "    listen 127.0.0.1:$p backlog=4096;"; done
    echo "    location / { return 200 \"ok\\n\"; } } }"
} >"$dir/nginx.conf"
nginx -p "$dir" -c "$dir/nginx.conf" >"$dir/logs/stdout.log" 2>&1 &
track $!
wait_http "http://127.0.0.1:${PORTS[0]}/" 10

RESULTS=()
for N in $SIZES; do
    B=$(( N < 10 ? 1 : N / 10 ))
    PER=$(( N < 10 ? N : 10 ))
    read -r LISTEN ADMIN HLISTEN STATS <<<"$(free_ports 4)"
    log "N=$N: $B backends x $PER servers"
    f="$WORK/fulcrum-$N.toml"
    h="$WORK/haproxy-$N.cfg"
    {
        echo "[global]"; echo "threads = 1"; echo 'state_file = "off"'
        echo "[admin]"; echo "listen = \"127.0.0.1:$ADMIN\""
        echo "[log]"; echo 'access = "off"'
        echo "[frontends.www]"; echo "listen = [\"127.0.0.1:$LISTEN\"]"; echo 'backend = "b0"'
        echo "routes = ["
        for ((b = 0; b < B; b++)); do echo "  { host = \"b$b.example\", backend = \"b$b\" },"; done
        echo "]"
        for ((b = 0; b < B; b++)); do
            echo "[backends.b$b]"
            echo 'health = { kind = "http", path = "/", interval = "1s", rise = 1, fall = 2 }'
            echo -n "servers = ["
            for ((s = 0; s < PER; s++)); do echo -n "{ name = \"s$s\", address = \"127.0.0.1:${PORTS[$s]}\" },"; done
            echo "]"
        done
    } >"$f"
    {
        echo "global"; echo "    nbthread 1"; echo "    maxconn 2000"  # few client connections here; HAProxy reserves fds for maxconn and every server check
        echo "    stats socket ipv4@127.0.0.1:$STATS level admin"
        echo "defaults"; echo "    mode http"; echo "    timeout connect 5s"; echo "    timeout client 60s"; echo "    timeout server 60s"
        echo "frontend www"; echo "    bind 127.0.0.1:$HLISTEN"
        for ((b = 0; b < B; b++)); do echo "    use_backend b$b if { hdr(host) -i b$b.example }"; done
        echo "    default_backend b0"
        for ((b = 0; b < B; b++)); do
            echo "backend b$b"; echo "    option httpchk GET /"
            for ((s = 0; s < PER; s++)); do echo "    server s$s 127.0.0.1:${PORTS[$s]} check inter 1s rise 1 fall 2"; done
        done
    } >"$h"
    "$FULCRUM" run --config "$f" >"$WORK/fulcrum-$N.log" 2>&1 &
    FPID=$!; track $FPID
    HPID=""
    if [[ $HAPROXY == 1 ]]; then
        haproxy -f "$h" >"$WORK/haproxy-$N.log" 2>&1 &
        HPID=$!; track $HPID
    fi
    wait_http "http://127.0.0.1:$ADMIN/api/v1/status?compact=true&limit=1" 60
    [[ $HAPROXY == 0 ]] || python3 -c 'import socket, sys, time
end = time.monotonic() + 60
while time.monotonic() < end:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close(); sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit("haproxy stats socket not ready")' "$STATS" || [[ $HAPROXY == 0 ]] || { tail -5 "$WORK/haproxy-$N.log"; die "haproxy did not start"; }
    log "N=$N: letting checks settle for ${SETTLE}s"
    sleep "$SETTLE"
    out=$(python3 "$BENCH_DIR/scale.py" admin="127.0.0.1:$ADMIN" stats="${HPID:+127.0.0.1:$STATS}" \
        servers="$N" fulcrum_bin="$FULCRUM" fulcrum_pid="$FPID" haproxy_pid="$HPID")
    echo "$out"
    RESULTS+=("$out")
    stop_one "$FPID"
    [[ -z $HPID ]] || stop_one "$HPID"
done

mkdir -p "$BENCH_DIR/results"
# A fulcrum-only run does not replace the side-by-side table.
report=scale.md
[[ $HAPROXY == 1 ]] || report=scale-fulcrum.md
printf '%s\n' "${RESULTS[@]}" | python3 "$BENCH_DIR/scale_report.py" | tee "$BENCH_DIR/results/$report"
