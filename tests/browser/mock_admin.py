#!/usr/bin/env python3
"""A stand-in for fulcrum's admin listener, for working on src/admin/dashboard.html
without the daemon: serves the page at `/`, a changing status document at
`/api/v1/status`, and the server state/weight PUT calls.

    python3 tests/browser/mock_admin.py [--port 9000] [--token SECRET] [--vrrp]

With --token every /api call needs `Authorization: Bearer SECRET` (as on a
non-loopback admin listener). Not used by the test suite.
"""
import argparse
import json
import random
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PAGE = Path(__file__).resolve().parents[2] / "src" / "admin" / "dashboard.html"
START = time.time()
STATE = {"generation": 3}


def server(name, address, weight=1, backup=False, health="up", fail_every=0):
    return {
        "name": name, "address": address, "weight": weight, "backup": backup,
        "admin": "ready", "health": health, "ejected": False, "usable": health == "up",
        "active": 0, "total": 0, "failures": 0,
        "responses": {"1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0},
        "request_rate": 0.0, "bytes_in": 0, "bytes_out": 0,
        "last_check": None, "check_history": [], "_fail_every": fail_every, "_n": 0,
    }


BACKENDS = [
    {"name": "web", "balance": "roundrobin", "health_check": "http GET /health",
     "no_server_total": 0, "retries_total": 2,
     "servers": [server("web1", "10.0.0.11:8080", 3), server("web2", "10.0.0.12:8080", 2, fail_every=7),
                 server("web3", "10.0.0.13:8080", 1, health="down"),
                 server("web-spare", "10.0.0.19:8080", 1, backup=True)]},
    {"name": "api", "balance": "leastconn", "health_check": "tcp",
     "no_server_total": 0, "retries_total": 0,
     "servers": [server("api1", "10.0.1.21:9000"), server("api2", "10.0.1.22:9000")]},
]
FRONTENDS = [
    {"name": "public", "mode": "http", "listen": ["0.0.0.0:80", "[::]:80"], "backend": "web",
     "routes": [{"host": "api.example.com", "path_prefix": None, "backend": "api"},
                {"host": None, "path_prefix": "/v2/", "backend": "api"}],
     "requests_total": 0, "active_connections": 0, "local_errors_total": 0},
    {"name": "mysql", "mode": "tcp", "listen": ["127.0.0.1:3306"], "backend": "api", "routes": [],
     "requests_total": 0, "active_connections": 0, "local_errors_total": 0},
]


def tick():
    """Advance the fake counters by one poll's worth of traffic."""
    for b in BACKENDS:
        usable = 0
        for s in b["servers"]:
            s["_n"] += 1
            up = s["health"] == "up"
            ok = up and not (s["_fail_every"] and s["_n"] % s["_fail_every"] == 0)
            check = {"ok": ok, "detail": "HTTP 200" if ok else ("HTTP 503" if up else "connection refused"),
                     "latency_ms": round(random.uniform(0.3, 4.0), 2), "age_ms": random.randint(10, 900)}
            s["last_check"] = check
            s["check_history"] = (s["check_history"] + [check])[-20:]
            s["usable"] = up and s["admin"] == "ready" and not s["ejected"]
            usable += s["usable"]
            rate = random.uniform(20, 80) * s["weight"] if s["usable"] else 0.0
            if s["admin"] == "drain" and s["active"] > 0:
                s["active"] -= 1
            elif s["usable"]:
                s["active"] = random.randint(0, 12)
            n = int(rate)
            errs = int(n * random.choice([0, 0, 0, 0.02, 0.1])) if s["name"] == "web2" else 0
            s["request_rate"] = rate
            s["total"] += n
            s["responses"]["2xx"] += n - errs
            s["responses"]["5xx"] += errs
            s["bytes_in"] += n * 400
            s["bytes_out"] += n * 5200
        b["servers_total"] = len(b["servers"])
        b["servers_usable"] = usable
    for f in FRONTENDS:
        f["requests_total"] += random.randint(50, 300)
        f["active_connections"] = random.randint(5, 40)


def status(vrrp):
    clean = lambda s: {k: v for k, v in s.items() if not k.startswith("_")}
    return {
        "version": "0.1.0", "uptime_seconds": time.time() - START + 93784,
        "generation": STATE["generation"], "config_file": "/etc/fulcrum/fulcrum.toml",
        "frontends": FRONTENDS,
        "backends": [dict(b, servers=[clean(s) for s in b["servers"]]) for b in BACKENDS],
        "vrrp": [{"name": "vi_1", "state": "master", "vrid": 51, "priority": 150,
                  "interface": "eth0", "virtual_ips": ["10.0.0.100/24"]}] if vrrp else [],
    }


class Handler(BaseHTTPRequestHandler):
    token = None
    vrrp = False

    def send(self, code, body, ctype="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def authed(self):
        if self.token and self.headers.get("Authorization") != "Bearer " + self.token:
            self.send(401, {"error": "missing or wrong token"})
            return False
        return True

    def do_GET(self):
        if self.path == "/":
            self.send(200, PAGE.read_bytes(), "text/html; charset=utf-8")
        elif self.path.split("?")[0] == "/api/v1/status":
            if self.authed():
                tick()
                self.send(200, status(self.vrrp))
        else:
            self.send(404, {"error": "no such path"})

    def do_PUT(self):
        parts = self.path.strip("/").split("/")
        if not self.authed():
            return
        if len(parts) != 7 or parts[:3] != ["api", "v1", "backends"] or parts[4] != "servers":
            return self.send(404, {"error": "no such path"})
        b = next((b for b in BACKENDS if b["name"] == parts[3]), None)
        s = b and next((s for s in b["servers"] if s["name"] == parts[5]), None)
        if not s:
            return self.send(404, {"error": f"no server {parts[3]}/{parts[5]}"})
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        except ValueError:
            return self.send(400, {"error": "body is not JSON"})
        if parts[6] == "state":
            if body.get("state") not in ("ready", "drain", "maint"):
                return self.send(400, {"error": "state must be ready, drain or maint"})
            s["admin"] = body["state"]
        elif parts[6] == "weight":
            w = body.get("weight")
            if not isinstance(w, int) or not 1 <= w <= 256:
                return self.send(400, {"error": "weight must be 1..=256"})
            s["weight"] = w
        else:
            return self.send(404, {"error": "no such path"})
        STATE["generation"] += 1
        self.send(200, {k: v for k, v in s.items() if not k.startswith("_")})

    def log_message(self, *args):
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=9000)
    ap.add_argument("--token")
    ap.add_argument("--vrrp", action="store_true")
    a = ap.parse_args()
    Handler.token, Handler.vrrp = a.token, a.vrrp
    ThreadingHTTPServer(("127.0.0.1", a.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
