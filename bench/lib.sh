# Shared helpers for bench/run.sh and bench/memory.sh (sourced, not run).
#
# Everything started here is recorded in STARTED_PIDS and stopped by PID in
# `stop_all`, which the scripts call from their EXIT trap. Every address is on
# 127.0.0.1. Configs are written under $WORK (a temp dir made by the caller).

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$BENCH_DIR/.." && pwd)"
STARTED_PIDS=()

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Install Debian packages only when their command is missing (idempotent).
# Usage: ensure_packages cmd:package ...
ensure_packages() {
    local missing=() pair
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    log "installing ${missing[*]}"
    local sudo=()
    [[ $(id -u) -ne 0 ]] && sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Build fulcrum in release mode and set FULCRUM to the binary; a FULCRUM
# already set in the environment (e.g. an older build to compare) is used as is.
build_fulcrum() {
    if [[ -n ${FULCRUM:-} ]]; then
        [[ -x "$FULCRUM" ]] || die "FULCRUM=$FULCRUM is not executable"
        log "using FULCRUM=$FULCRUM (no build)"
        return 0
    fi
    log "cargo build --release"
    (cd "$REPO_DIR" && cargo build --release --quiet)
    # Where cargo put it (CARGO_TARGET_DIR, a .cargo/config.toml target-dir, or ./target).
    local target
    target=$(cd "$REPO_DIR" && cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    FULCRUM="$target/release/fulcrum"
    [[ -x "$FULCRUM" ]] || die "no binary at $FULCRUM"
}

# Print N free TCP ports on 127.0.0.1 (held together while choosing, so distinct).
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# Remember a PID so stop_all stops it.
track() { STARTED_PIDS+=("$1"); }

# Stop every tracked PID: TERM, up to 5 s grace, then KILL. Only our own PIDs.
stop_all() {
    local pid i
    for pid in "${STARTED_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for i in $(seq 1 50); do
        local alive=0
        for pid in "${STARTED_PIDS[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive=1
        done
        [[ $alive -eq 0 ]] && break
        sleep 0.1
    done
    for pid in "${STARTED_PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    STARTED_PIDS=()
}

# Stop one tracked PID (TERM, 5 s grace, KILL), reap it and forget it.
stop_one() {
    local pid=$1 p rest=()
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${STARTED_PIDS[@]}"; do [[ $p == "$pid" ]] || rest+=("$p"); done
    STARTED_PIDS=("${rest[@]}")
}

# PIDs of a process and its direct children (nginx master + workers).
proc_tree() {
    local pid=$1
    echo "$pid"
    ps -o pid= --ppid "$pid" 2>/dev/null | tr -d ' ' || true
}

# Wait until URL answers 200 and (optionally) each expected body appeared once.
# Usage: wait_http URL TIMEOUT_S [BODY...]
wait_http() {
    python3 - "$@" <<'EOF'
import ssl, sys, time, urllib.request
url, timeout, want = sys.argv[1], float(sys.argv[2]), set(sys.argv[3:])
# The bench's TLS listeners have self-signed certificates (make_bench_certs).
unverified = ssl._create_unverified_context()
deadline = time.monotonic() + timeout
seen = set()
ok = False
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=1, context=unverified) as r:
            if r.status == 200:
                seen.add(r.read().decode(errors="replace").strip())
                ok = True
                if want <= seen:
                    sys.exit(0)
    except Exception:
        pass
    time.sleep(0.05)
print(f"not ready: {url} ok={ok} seen={sorted(seen)} want={sorted(want)}", file=sys.stderr)
sys.exit(1)
EOF
}

# Start one nginx backend answering its name at / and a 4 KiB file at /4k.
# Usage: start_backend NAME PORT   (sets LAST_PID)
start_backend() {
    local name=$1 port=$2 dir="$WORK/$1"
    mkdir -p "$dir/logs" "$dir/www"
    head -c 4096 /dev/zero | tr '\0' 'x' >"$dir/www/4k"
    cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
worker_rlimit_nofile $(ulimit -n);
events { worker_connections $(ulimit -n); }
http {
    access_log off;
    default_type text/plain;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_body_temp_path $dir/tmp_body;
    proxy_temp_path $dir/tmp_proxy;
    fastcgi_temp_path $dir/tmp_fcgi;
    uwsgi_temp_path $dir/tmp_uwsgi;
    scgi_temp_path $dir/tmp_scgi;
    server {
        listen 127.0.0.1:$port backlog=4096;
        location = / { return 200 "$name\n"; }
        location = /4k { root $dir/www; }
    }
}
EOF
    chmod -R a+rX "$dir"
    nginx -p "$dir" -c "$dir/nginx.conf" >"$dir/logs/stdout.log" 2>&1 &
    LAST_PID=$!
    track "$LAST_PID"
}

# Self-signed certificates for the TLS cases, in DIR: rsa.{crt,key,pem} (RSA
# 2048) and ec.{crt,key,pem} (ECDSA P-256); *.pem = certificate + key (HAProxy).
# Usage: make_bench_certs DIR
make_bench_certs() {
    local dir=$1
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
        -keyout "$dir/rsa.key" -out "$dir/rsa.crt" 2>/dev/null || die "openssl: RSA certificate"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=localhost -keyout "$dir/ec.key" -out "$dir/ec.crt" 2>/dev/null \
        || die "openssl: ECDSA certificate"
    cat "$dir/rsa.crt" "$dir/rsa.key" >"$dir/rsa.pem"
    cat "$dir/ec.crt" "$dir/ec.key" >"$dir/ec.pem"
    chmod a+r "$dir"/rsa.* "$dir"/ec.*
}

# HAProxy refuses to start unless 2 * maxconn (+ a few) fds fit the open-file
# limit, so maxconn follows the limit this shell has (9950 under 20000).
haproxy_maxconn() {
    local n
    n=$(( ($(ulimit -n) - 100) / 2 ))
    ((n > 20000)) && n=20000
    echo "$n"
}

# HAProxy: one thread (PROXY_THREADS=default: HAProxy's default, one per
# core), roundrobin, HTTP checks, keep-alive, http-reuse always, no logging —
# or, with SYSLOG_PORT, `option httplog` sent to that local UDP syslog sink.
# An HTTP listener and a TCP listener in one process; with TLS_PORTS="RSA EC"
# (and TLS_DIR from make_bench_certs) also two HTTPS listeners, one with the
# RSA-2048 and one with the ECDSA P-256 certificate (TLS 1.2/1.3, HAProxy's
# defaults: session cache and tickets on).
# Usage: start_haproxy HTTP_PORT TCP_PORT B1_PORT B2_PORT [NAME SYSLOG_PORT]  (sets LAST_PID)
start_haproxy() {
    local http=$1 tcp=$2 b1=$3 b2=$4 name=${5:-haproxy} syslog=${6:-} dir
    dir="$WORK/$name"
    mkdir -p "$dir"
    local nbthread="    nbthread 1" logs=""
    [[ ${PROXY_THREADS:-1} == default ]] && nbthread=""
    if [[ -n $syslog ]]; then
        nbthread="$nbthread
    log 127.0.0.1:$syslog local0 info"
        logs="    log global
    option httplog"
    fi
    local servers="    server b1 127.0.0.1:$b1 check inter 2s rise 2 fall 3
    server b2 127.0.0.1:$b2 check inter 2s rise 2 fall 3"
    local tls="" kind port
    if [[ -n ${TLS_PORTS:-} ]]; then
        read -r -a port <<<"$TLS_PORTS"
        for kind in rsa ec; do
            tls="$tls
frontend fe_tls_$kind
    mode http
    bind 127.0.0.1:${port[0]} ssl crt $TLS_DIR/$kind.pem
    option http-keep-alive
    default_backend be_http
"
            port=("${port[@]:1}")
        done
    fi
    cat >"$dir/haproxy.cfg" <<EOF
global
$nbthread
    maxconn $(haproxy_maxconn)

defaults
$logs
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    timeout http-keep-alive 120s
    timeout http-request 60s

frontend fe_http
    mode http
    bind 127.0.0.1:$http
    option http-keep-alive
    default_backend be_http

backend be_http
    mode http
    balance roundrobin
    option http-keep-alive
    http-reuse always
    option httpchk GET /
$servers

frontend fe_tcp
    mode tcp
    bind 127.0.0.1:$tcp
    default_backend be_tcp

backend be_tcp
    mode tcp
    balance roundrobin
    option httpchk GET /
$servers
$tls
EOF
    haproxy -c -q -f "$dir/haproxy.cfg" || die "haproxy config check failed"
    haproxy -db -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 &
    LAST_PID=$!
    track "$LAST_PID"
}

# nginx as the proxy: one worker, upstream keepalive 512, roundrobin (nginx's
# default). nginx OSS has no active health checks: only passive max_fails.
# With ACCESS=file: nginx's default combined access log to a file (buffered
# by nginx per write, no `buffer=`: its default). PROXY_THREADS=default: one
# worker per core. TLS_PORTS="RSA EC" (and TLS_DIR): two HTTPS servers as for
# HAProxy (TLS 1.2/1.3 — nginx 1.22's default list lacks 1.3 — a shared
# session cache, tickets on by default).
# Usage: start_nginx_proxy HTTP_PORT B1_PORT B2_PORT [NAME ACCESS]  (sets LAST_PID)
start_nginx_proxy() {
    local http=$1 b1=$2 b2=$3 name=${4:-nginx-proxy} access="access_log off;" dir
    dir="$WORK/$name"
    [[ ${5:-} == file ]] && access="access_log $dir/logs/access.log;"
    local workers=1
    [[ ${PROXY_THREADS:-1} == default ]] && workers=auto
    mkdir -p "$dir/logs"
    local tls="" kind port proxy='location / {
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }'
    if [[ -n ${TLS_PORTS:-} ]]; then
        read -r -a port <<<"$TLS_PORTS"
        tls="ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:TLS:10m;"
        for kind in rsa ec; do
            tls="$tls
    server {
        listen 127.0.0.1:${port[0]} ssl backlog=4096;
        ssl_certificate $TLS_DIR/$kind.crt;
        ssl_certificate_key $TLS_DIR/$kind.key;
        $proxy
    }"
            port=("${port[@]:1}")
        done
    fi
    cat >"$dir/nginx.conf" <<EOF
worker_processes $workers;
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
worker_rlimit_nofile $(ulimit -n);
events { worker_connections $(ulimit -n); }
http {
    $access
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    client_body_temp_path $dir/tmp_body;
    proxy_temp_path $dir/tmp_proxy;
    fastcgi_temp_path $dir/tmp_fcgi;
    uwsgi_temp_path $dir/tmp_uwsgi;
    scgi_temp_path $dir/tmp_scgi;
    upstream be {
        server 127.0.0.1:$b1 max_fails=3 fail_timeout=10s;
        server 127.0.0.1:$b2 max_fails=3 fail_timeout=10s;
        keepalive 512;
        keepalive_requests 10000000;
    }
    server {
        listen 127.0.0.1:$http backlog=4096;
        $proxy
    }
    $tls
}
EOF
    chmod -R a+rX "$dir"
    nginx -p "$dir" -c "$dir/nginx.conf" >"$dir/logs/stdout.log" 2>&1 &
    LAST_PID=$!
    track "$LAST_PID"
}

# fulcrum configured like the HAProxy above: roundrobin, HTTP checks every 2 s
# (rise 2, fall 3), keep-alive upstream pool of 64, access log off — or LOG:
# "default" (no [log] at all: the access log on stdout, redirected to a file)
# or "syslog:PORT" (the access log to a local UDP syslog sink). TLS_PORTS="RSA
# EC" (and TLS_DIR): two TLS frontends as for HAProxy (rustls defaults: TLS
# 1.2/1.3, resumption by ticket always on).
# Usage: start_fulcrum HTTP_PORT TCP_PORT B1_PORT B2_PORT [NAME LOG]  (sets LAST_PID)
start_fulcrum() {
    local http=$1 tcp=$2 b1=$3 b2=$4 name=${5:-fulcrum} logcfg=${6:-off} dir
    dir="$WORK/$name"
    mkdir -p "$dir"
    local log_toml='[log]
access = "off"'
    case $logcfg in
        default) log_toml="" ;;
        syslog:*) log_toml='[log]
target = "syslog"
syslog = { address = "127.0.0.1:'${logcfg#syslog:}'" }' ;;
    esac
    # PROXY_THREADS=default: no [global] (one worker per core, the default).
    local global="[global]
threads = ${FULCRUM_THREADS:-1}"
    [[ ${PROXY_THREADS:-1} == default ]] && global=""
    # FULCRUM_ADMIN=port: an admin API on the measured instance, to read the
    # connections each worker accepted (fulcrum_worker_connections_total).
    local admin_toml=""
    [[ -n ${FULCRUM_ADMIN:-} && ( $name == fulcrum || $name == fulcrum-rp ) ]] && admin_toml="[admin]
listen = \"127.0.0.1:$FULCRUM_ADMIN\""
    local backend_body='balance = "roundrobin"
health = { kind = "http", method = "GET", path = "/", interval = "2s", rise = 2, fall = 3 }
servers = [
  { name = "b1", address = "127.0.0.1:'$b1'" },
  { name = "b2", address = "127.0.0.1:'$b2'" },
]'
    # One worker thread, like HAProxy's nbthread 1 and nginx's one worker
    # (FULCRUM_THREADS overrides, e.g. 2 for one per core).
    local tls_toml="" kind port
    if [[ -n ${TLS_PORTS:-} ]]; then
        read -r -a port <<<"$TLS_PORTS"
        for kind in rsa ec; do
            tls_toml="$tls_toml
[frontends.tls_$kind]
listen = [\"127.0.0.1:${port[0]}\"]
backend = \"web\"
client_header_timeout = \"60s\"
client_idle_timeout = \"120s\"
tls = { certificates = [ { cert = \"$TLS_DIR/$kind.crt\", key = \"$TLS_DIR/$kind.key\" } ] }
"
            port=("${port[@]:1}")
        done
    fi
    cat >"$dir/fulcrum.toml" <<EOF
$global

$log_toml

$admin_toml
$tls_toml

[frontends.http]
listen = ["127.0.0.1:$http"]
backend = "web"
client_header_timeout = "60s"
client_idle_timeout = "120s"

[frontends.tcp]
mode = "tcp"
listen = ["127.0.0.1:$tcp"]
backend = "web_tcp"

[backends.web]
$backend_body

[backends.web_tcp]
$backend_body
EOF
    "$FULCRUM" check --config "$dir/fulcrum.toml" >/dev/null || die "fulcrum config check failed"
    "$FULCRUM" run --config "$dir/fulcrum.toml" >"$dir/access.log" 2>"$dir/fulcrum.log" &
    LAST_PID=$!
    track "$LAST_PID"
}

# A local syslog sink: a UDP receiver that drains and counts datagrams
# (python3; the count is written to DIR/count when it is stopped).
# Usage: start_syslog_sink PORT NAME  (sets LAST_PID)
start_syslog_sink() {
    local port=$1 dir="$WORK/$2"
    mkdir -p "$dir"
    python3 - "$port" "$dir/count" <<'PY' >"$dir/sink.log" 2>&1 &
import signal, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind(("127.0.0.1", int(sys.argv[1])))
n = 0
def stop(*_):
    open(sys.argv[2], "w").write(f"{n}\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
buf = bytearray(65536)
while True:
    s.recv_into(buf)
    n += 1
PY
    LAST_PID=$!
    track "$LAST_PID"
}

# Sum of VmRSS or VmHWM (KiB) over PIDs. Usage: mem_kib VmHWM PID...
mem_kib() {
    local field=$1 total=0 pid v
    shift
    for pid in "$@"; do
        v=$(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}
