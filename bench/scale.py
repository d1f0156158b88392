#!/usr/bin/env python3
"""Control-plane measurements for bench/scale.sh (not a test): one state change,
100 x drain+ready through the CLI, the status call, RSS after 1 000 API calls,
for fulcrum (admin API, `fulcrum ctl`) and HAProxy (runtime API on its stats
socket, here on a loopback TCP port). Prints one JSON object."""

import http.client
import json
import socket
import statistics
import subprocess
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Fulcrum:
    def __init__(self, admin):
        host, port = admin.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=60)

    def call(self, method, path, body=None):
        headers = {"Content-Type": "application/json"} if body else {}
        self.conn.request(method, path, body=body, headers=headers)
        r = self.conn.getresponse()
        data = r.read()
        if r.status >= 300:
            raise RuntimeError(f"{method} {path}: {r.status} {data[:200]!r}")
        return data

    def state(self, b, s, st):
        self.call("PUT", f"/api/v1/backends/{b}/servers/{s}/state", json.dumps({"state": st}))


class Haproxy:
    def __init__(self, stats):
        host, port = stats.rsplit(":", 1)
        self.addr = (host, int(port))

    def call(self, cmd):
        with socket.create_connection(self.addr, timeout=60) as s:
            s.sendall(cmd.encode() + b"\n")
            out = bytearray()
            while True:
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                out += chunk
        return bytes(out)

    def state(self, b, s, st):
        self.call(f"set server {b}/{s} state {st}")


def timed(f, n):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        times.append((time.perf_counter() - t) * 1000)
    return times


def summary(ms):
    return {"median_ms": round(statistics.median(ms), 3), "min_ms": round(min(ms), 3), "max_ms": round(max(ms), 3)}


def main():
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    # `stats=` empty: fulcrum only (bench/scale.sh --targets fulcrum).
    fu = Fulcrum(args["admin"])
    ha = Haproxy(args["stats"]) if args.get("stats") else None
    b, s = "b0", "s0"
    out = {"servers": int(args["servers"])}

    # One state change, 20 times each way, interleaved.
    f_ms, h_ms = [], []
    for i in range(20):
        st = "drain" if i % 2 == 0 else "ready"
        f_ms += timed(lambda: fu.state(b, s, st), 1)
        if ha:
            h_ms += timed(lambda: ha.state(b, s, st), 1)
    out["state_change"] = {"fulcrum": summary(f_ms), "haproxy": summary(h_ms) if ha else None}

    # 100 x drain + ready through the command-line tools.
    fbin = args["fulcrum_bin"]
    t = time.perf_counter()
    for _ in range(100):
        for st in ("drain", "ready"):
            subprocess.run([fbin, "ctl", "--admin", f"http://{args['admin']}", st, f"{b}/{s}"],
                           check=True, stdout=subprocess.DEVNULL)
    f100 = time.perf_counter() - t
    h100 = None
    if ha:
        h100 = haproxy_100(args["stats"], b, s)
    out["ctl_100_drain_ready_s"] = {"fulcrum": round(f100, 3), "haproxy": h100 and round(h100, 3)}

    # The status call: time and size, 5 times each.
    def sized(f):
        ms, size = [], 0
        for _ in range(5):
            t = time.perf_counter()
            size = len(f())
            ms.append((time.perf_counter() - t) * 1000)
        return {"median_ms": round(statistics.median(ms), 2), "bytes": size}

    out["status"] = {
        "fulcrum_full": sized(lambda: fu.call("GET", "/api/v1/status")),
        "fulcrum_compact": sized(lambda: fu.call("GET", "/api/v1/status?compact=true")),
        "fulcrum_down_only": sized(lambda: fu.call("GET", "/api/v1/status?compact=true&state=down")),
        "haproxy_show_stat": sized(lambda: ha.call("show stat")) if ha else None,
        "haproxy_show_servers_state": sized(lambda: ha.call("show servers state")) if ha else None,
    }
    t = time.perf_counter()
    subprocess.run([fbin, "ctl", "--admin", f"http://{args['admin']}", "servers"], check=True,
                   stdout=subprocess.DEVNULL)
    out["ctl_servers_s"] = round(time.perf_counter() - t, 3)

    # RSS before and after 1 000 API calls (state changes over many servers).
    fpid = int(args["fulcrum_pid"])
    hpid = int(args["haproxy_pid"]) if ha else None
    before = {"fulcrum": rss_kib(fpid), "haproxy": rss_kib(hpid) if ha else None}
    n = int(args["servers"])
    for i in range(500):
        name = f"s{i % 10}"
        bk = f"b{(i // 10) % max(1, n // 10)}"
        for st in ("drain", "ready"):
            fu.state(bk, name, st)
            if ha:
                ha.state(bk, name, st)
    after = {"fulcrum": rss_kib(fpid), "haproxy": rss_kib(hpid) if ha else None}
    out["rss_kib"] = {"before": before, "after_1000_calls": after}
    print(json.dumps(out))


def haproxy_100(stats, b, s):
    host, port = stats.rsplit(":", 1)
    script = (f"for i in $(seq 100); do for st in drain ready; do exec 3<>/dev/tcp/{host}/{port}; "
              f"echo \"set server {b}/{s} state $st\" >&3; cat <&3 >/dev/null; exec 3<&-; done; done")
    t = time.perf_counter()
    subprocess.run(["bash", "-c", script], check=True)
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
