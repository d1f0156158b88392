#!/usr/bin/env python3
"""Soak under chaos: steady mixed load through one fulcrum while a scheduler breaks things.

Driven by bench/soak.sh (which builds the binary and checks the tools). Standard library only.

Load (each kind its own thread(s), all to 127.0.0.1):
  h1-ka    HTTP/1.1 keep-alive GET and POST (1 KiB body)      frontend www
  h1-new   HTTP/1.1, a new connection per request               frontend www
  tls      HTTPS (self-signed, openssl), keep-alive and new    frontend tls
  h2       h2c bursts with h2load (per-request --log-file)      frontend www (h2c = true)
  ws       WebSocket: handshake, 10 echoed messages, close      frontend www → /ws
  tcp      a TCP-mode frontend, one HTTP exchange per session   frontend tcp
  inv      keep-alive GETs to a backend fed by discovery file   frontend inv
Chaos (seeded random, bounded loop): SIGKILL + restart a backend process, drain → ready,
drain --wait → remove → add, config edit + reload (ctl reload or SIGHUP), inventory file edit,
`fulcrum upgrade` to the other copy of the binary.

Failure classification: a failure is *explained* only when it is one a correct proxy cannot
avoid: the request (or WebSocket/TCP session) was in flight on a backend process between the
moment it was SIGKILLed and the moment it was reaped (+ a small slack for the RST to travel).
Everything else is *unexplained* and fails the run (exit 1). Resource checks: RSS and open fds
of the serving fulcrum process, sampled every 5 s; the end must stay within a generous bound of
the start. No timing thresholds anywhere.
"""

import argparse
import base64
import hashlib
import http.client
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
KILL_SLACK = 0.3  # seconds after a killed backend was reaped during which its RSTs may still land
RSS_BOUND_KB = 64 * 1024  # end RSS may exceed start RSS by at most this (generous: allocator noise)
FD_BOUND = 64  # end fds may exceed start fds by at most this (pooled upstream connections)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Soak:
    def __init__(self, args):
        self.a = args
        self.rng = random.Random(args.seed)
        self.dir = tempfile.mkdtemp(prefix="fulcrum-soak.")
        self.lock = threading.Lock()
        self.results = []  # (kind, t0, t1, ok, error, server)
        self.events = []  # (t, what, detail)
        self.kills = []  # dict(name, t_kill, t_dead)
        self.samples = []  # (t, pid, rss_kb, fds)
        self.stop = threading.Event()
        self.pids = set()  # every process started, killed at the end
        self.backends = {}  # name -> dict(port, group, proc)
        self.fulcrum_pid = None
        self.fulcrum_proc = None
        self.binaries = []
        self.upgrades = 0
        self.up = set()
        self.present = set()
        self.t_start = time.time()
        self.skipped = {}

    # ---------------------------------------------------------------- processes
    def log_event(self, what, detail=""):
        with self.lock:
            self.events.append((time.time(), what, detail))
        if self.a.verbose:
            print(f"[{time.time() - self.t_start:7.1f}s] {what} {detail}", flush=True)

    def spawn(self, argv, log):
        f = open(os.path.join(self.dir, log), "ab")
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        f.close()
        self.pids.add(p.pid)
        return p

    def start_backend(self, name):
        b = self.backends[name]
        b["proc"] = self.spawn(
            [self.binaries[0], "backend", "--listen", f"127.0.0.1:{b['port']}", "--name", name],
            f"backend-{name}.log",
        )

    def ctl(self, *args):
        r = subprocess.run(
            [self.binaries[0], "ctl", "--admin", f"http://127.0.0.1:{self.admin}", *args],
            capture_output=True, text=True, timeout=60,
        )
        out = (r.stdout + r.stderr).strip().replace("\n", " | ")
        self.log_event("ctl " + " ".join(args), f"rc={r.returncode} {out[:160]}")
        return r.returncode

    def status(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/api/v1/status", timeout=5) as r:
            return json.load(r)

    def sample(self):
        pid = self.fulcrum_pid
        try:
            with open(f"/proc/{pid}/status") as f:
                rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
            fds = len(os.listdir(f"/proc/{pid}/fd"))
        except (OSError, StopIteration):
            return
        with self.lock:
            self.samples.append((time.time(), pid, rss, fds))

    # ---------------------------------------------------------------- setup
    def setup(self):
        src = self.a.binary
        for tag in ("a", "b"):  # two copies: an upgrade installs "the other" binary
            dst = os.path.join(self.dir, f"fulcrum-{tag}")
            shutil.copy2(src, dst)
            self.binaries.append(dst)
        self.www, self.tlsp, self.tcp, self.inv_port, self.admin = (free_port() for _ in range(5))
        for i in range(3):
            self.backends[f"b{i}"] = dict(port=free_port(), group="web")
        self.backends["x0"] = dict(port=free_port(), group="web")  # added at run time through the API
        for i in range(3):
            self.backends[f"i{i}"] = dict(port=free_port(), group="inv")
        self.cert = os.path.join(self.dir, "cert.pem")
        self.key = os.path.join(self.dir, "key.pem")
        self.tls_ok = shutil.which("openssl") is not None
        if self.tls_ok:
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                 "-subj", "/CN=localhost", "-keyout", self.key, "-out", self.cert],
                check=True, capture_output=True,
            )
        else:
            self.skipped["tls"] = "openssl not installed"
        if not shutil.which("h2load"):
            self.skipped["h2"] = "h2load (nghttp2-client) not installed"
        self.inventory = {f"i{i}": {} for i in range(3)}
        self.write_inventory()
        self.gen = 0
        self.write_config()
        for name in self.backends:
            self.start_backend(name)
        self.fulcrum_proc = self.spawn(
            [self.binaries[0], "run", "--config", self.config_path], "fulcrum.log")
        self.fulcrum_pid = self.fulcrum_proc.pid
        deadline = time.time() + 60
        while True:
            try:
                st = self.status()
                if self.all_up(st, {"b0", "b1", "b2", "i0", "i1", "i2"}):
                    break
            except OSError:
                pass
            if time.time() > deadline or self.fulcrum_proc.poll() is not None:
                raise RuntimeError("fulcrum did not come up; see " + self.dir + "/fulcrum.log")
            time.sleep(0.1)
        self.ctl("add", "web", "x0", f"127.0.0.1:{self.backends['x0']['port']}")
        self.sample()

    @staticmethod
    def all_up(st, names):
        seen = set()
        for b in st.get("backends", []):
            for s in b.get("servers", []):
                if s.get("health") in ("up", "UP", True) or str(s.get("health", "")).lower() == "up":
                    seen.add(s.get("name"))
        return names <= seen

    def write_config(self):
        balance = self.rng.choice(["roundrobin", "leastconn", "random"])
        weights = [self.rng.randint(1, 5) for _ in range(3)]
        servers = ", ".join(
            f'{{ name = "b{i}", address = "127.0.0.1:{self.backends[f"b{i}"]["port"]}", weight = {w} }}'
            for i, w in enumerate(weights))
        tls = ""
        if self.tls_ok:
            tls = f"""
[frontends.tls]
listen = ["127.0.0.1:{self.tlsp}"]
backend = "web"
tls = {{ certificates = [ {{ cert = "{self.cert}", key = "{self.key}" }} ] }}
"""
        text = f"""# fulcrum soak, generation {self.gen}
[global]
hard_stop_after = "20s"

[admin]
listen = "127.0.0.1:{self.admin}"

[log]
access = "{'text' if self.a.access_log else 'off'}"

[frontends.www]
listen = ["127.0.0.1:{self.www}"]
backend = "web"
h2c = true
{tls}
[frontends.tcp]
mode = "tcp"
listen = ["127.0.0.1:{self.tcp}"]
backend = "web"

[frontends.inv]
listen = ["127.0.0.1:{self.inv_port}"]
backend = "inv"

[backends.web]
balance = "{balance}"
health = {{ kind = "http", path = "/health", interval = "250ms", rise = 2, fall = 2 }}
servers = [{servers}]

[backends.inv]
health = {{ kind = "http", path = "/health", interval = "250ms", rise = 2, fall = 2 }}
discovery = {{ file = "{os.path.join(self.dir, 'inv.json')}", poll_interval = "200ms" }}
"""
        self.config_path = os.path.join(self.dir, "fulcrum.toml")
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.config_path)
        self.gen += 1
        return f"balance={balance} weights={weights}"

    def write_inventory(self):
        entries = []
        for name, flags in self.inventory.items():
            e = {"name": name, "address": f"127.0.0.1:{self.backends[name]['port']}",
                 "weight": flags.get("weight", 1)}
            if flags.get("exclude"):
                e["exclude"] = True
            if flags.get("drain"):
                e["drain"] = True
            entries.append(e)
        path = os.path.join(self.dir, "inv.json")
        with open(path + ".tmp", "w") as f:
            json.dump(entries, f)
        os.replace(path + ".tmp", path)
        return json.dumps(entries)

    # ---------------------------------------------------------------- load
    def record(self, kind, t0, ok, err="", server=""):
        with self.lock:
            self.results.append((kind, t0, time.time(), ok, err, server))

    def pace(self):
        # Module-level random, not self.rng: the chaos schedule stays a function of the seed.
        time.sleep(self.a.interval * (0.5 + random.random()))

    def http_loop(self, kind, make_conn, keepalive):
        conn = None
        n = 0
        body = b"x" * 1024
        while not self.stop.is_set():
            n += 1
            post = keepalive and n % 4 == 0
            t0 = time.time()
            try:
                if conn is None:
                    conn = make_conn()
                hdrs = {} if keepalive else {"Connection": "close"}
                if post:
                    conn.request("POST", f"/{kind}/{n}", body=body, headers=hdrs)
                else:
                    conn.request("GET", f"/{kind}/{n}", headers=hdrs)
                r = conn.getresponse()
                data = r.read()
                server = r.getheader("x-served-by", "")
                if r.status == 200 and (not post or b'"server"' in data):
                    self.record(kind, t0, True, server=server)
                else:
                    self.record(kind, t0, False, f"status {r.status}", server)
                if not keepalive or r.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                self.record(kind, t0, False, f"{type(e).__name__}: {e}")
                if conn is not None:
                    conn.close()
                conn = None
            self.pace()
        if conn is not None:
            conn.close()

    def tls_ctx(self):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def ws_loop(self):
        n = 0
        while not self.stop.is_set():
            n += 1
            t0 = time.time()
            server = ""
            try:
                with socket.create_connection(("127.0.0.1", self.www), timeout=10) as s:
                    key = base64.b64encode(os.urandom(16)).decode()
                    s.sendall((f"GET /ws HTTP/1.1\r\nHost: soak\r\nUpgrade: websocket\r\n"
                               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                               f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
                    head = b""
                    while b"\r\n\r\n" not in head:
                        chunk = s.recv(4096)
                        if not chunk:
                            raise ConnectionError("closed before the 101")
                        head += chunk
                    head, rest = head.split(b"\r\n\r\n", 1)
                    lines = head.decode("latin-1").split("\r\n")
                    hdr = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip()
                           for l in lines[1:] if ":" in l}
                    server = hdr.get("x-served-by", "")
                    want = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
                    if " 101 " not in lines[0] + " " or hdr.get("sec-websocket-accept") != want:
                        raise ConnectionError(f"bad handshake: {lines[0]}")
                    for i in range(10):  # raw echo (the demo backend echoes bytes, not frames)
                        msg = f"soak-{n}-{i};".encode()
                        s.sendall(msg)
                        got = rest
                        while len(got) < len(msg):
                            chunk = s.recv(4096)
                            if not chunk:
                                raise ConnectionError(f"closed after {i} echoes")
                            got += chunk
                        if got[:len(msg)] != msg:
                            raise ConnectionError("echo mismatch")
                        rest = got[len(msg):]
                        time.sleep(0.05)
                self.record("ws", t0, True, server=server)
            except (OSError, ValueError) as e:
                self.record("ws", t0, False, f"{type(e).__name__}: {e}", server)
            self.pace()

    def tcp_loop(self):
        n = 0
        while not self.stop.is_set():
            n += 1
            t0 = time.time()
            try:
                with socket.create_connection(("127.0.0.1", self.tcp), timeout=10) as s:
                    s.sendall(f"GET /tcp/{n} HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n".encode())
                    data = b""
                    while True:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                server = ""
                for l in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
                    if l.lower().startswith(b"x-served-by:"):
                        server = l.split(b":", 1)[1].strip().decode()
                if data.startswith(b"HTTP/1.1 200"):
                    self.record("tcp", t0, True, server=server)
                else:
                    self.record("tcp", t0, False, f"answer {data[:40]!r}", server)
            except OSError as e:
                self.record("tcp", t0, False, f"{type(e).__name__}: {e}")
            self.pace()

    def h2_loop(self):
        logf = os.path.join(self.dir, "h2load.tsv")
        while not self.stop.is_set():
            t0 = time.time()
            if os.path.exists(logf):
                os.unlink(logf)
            p = self.spawn(["h2load", "-n", "40", "-c", "2", "-m", "4", "--log-file", logf,
                            f"http://127.0.0.1:{self.www}/h2"], "h2load.out")
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            self.pids.discard(p.pid)
            t1 = time.time()
            lines = []
            if os.path.exists(logf):
                with open(logf) as f:
                    lines = [l.split("\t") for l in f if l.strip()]
            ok = 0
            with self.lock:
                for cols in lines:
                    try:
                        start = int(cols[0]) / 1e6
                        code = int(cols[1])
                        dur = int(cols[2]) / 1e6
                    except (ValueError, IndexError):
                        continue
                    good = 200 <= code < 300
                    ok += good
                    self.results.append(("h2", start, start + dur, good,
                                         "" if good else f"status {code}", ""))
                # Requests h2load never logged (stream or connection errors): failures over the burst.
                for _ in range(max(0, 40 - len(lines))):
                    self.results.append(("h2", t0, t1, False, "not completed (h2load)", ""))
            self.pace()

    # ---------------------------------------------------------------- chaos
    def refresh_up(self):
        """Servers fulcrum itself reports up: a restarted backend counts only once its checks rose."""
        try:
            st = self.status()
        except (OSError, ValueError):
            return  # keep the previous view
        servers = [s for b in st.get("backends", []) for s in b.get("servers", [])]
        self.up = {s.get("name") for s in servers if s.get("health") == "up"}
        self.present = {s.get("name") for s in servers}

    def usable(self, group, excluding=()):
        """Servers of GROUP that are up, alive and in rotation: chaos never takes away the last one
        (no server at all is a 503 no proxy can avoid, so the scheduler does not cause it)."""
        out = []
        for name, b in self.backends.items():
            if b["group"] != group or name in excluding or b.get("dead") or b.get("out"):
                continue
            if name not in self.up:
                continue
            if group == "inv" and (self.inventory[name].get("exclude") or self.inventory[name].get("drain")):
                continue
            out.append(name)
        return out

    def chaos(self, end):
        pending = []  # (due, fn)
        deck = []
        upgrade_every = max(30.0, min(120.0, self.a.minutes * 60 / 8))
        next_upgrade = time.time() + upgrade_every / 2
        # The last quarter runs without upgrades, so one process lives long under the rest.
        last_upgrade = self.t_start + self.a.minutes * 60 * 0.75
        steps = 0
        while time.time() < end and steps < 100000:
            steps += 1
            now = time.time()
            for item in [p for p in pending if p[0] <= now]:
                pending.remove(item)
                item[1]()
            if now >= next_upgrade and now < last_upgrade:
                self.upgrade()
                next_upgrade = now + upgrade_every
            self.refresh_up()
            if not deck:  # every kind once per round, in a seeded order: a short run sees them all
                deck = ["kill", "kill", "drain", "remove", "reload", "inventory"]
                self.rng.shuffle(deck)
            kind = deck.pop()
            if kind == "kill":
                group = self.rng.choice(["web", "inv"])
                cands = [n for n in self.usable(group) if len(self.usable(group, (n,))) >= 1]
                if cands and not any(b.get("dead") for b in self.backends.values() if b["group"] == group):
                    name = self.rng.choice(cands)
                    pending.append((now + self.rng.uniform(0.5, 3), self.killer(name)))
            elif kind == "drain":
                cands = [n for n in self.usable("web") if n != "x0" and len(self.usable("web", (n,))) >= 2]
                if cands:
                    name = self.rng.choice(cands)
                    self.backends[name]["out"] = True
                    self.ctl("drain", f"web/{name}")
                    pending.append((now + self.rng.uniform(1, 4), self.readier(name)))
            elif kind == "remove" and "x0" in self.usable("web") and len(self.usable("web", ("x0",))) >= 2:
                self.backends["x0"]["out"] = True
                self.ctl("drain", "web/x0", "--wait", "--timeout", "20s")
                rc = self.ctl("remove", "web/x0")
                pending.append((time.time() + self.rng.uniform(1, 4), self.adder(rc)))
            elif kind == "remove" and "x0" not in self.present and not self.backends["x0"].get("out"):
                # A reload re-reads the file, where x0 is not: put it back through the API.
                self.log_event("x0 absent after a reload", "")
                self.ctl("add", "web", "x0", f"127.0.0.1:{self.backends['x0']['port']}")
            elif kind == "reload":
                detail = self.write_config()
                if self.rng.random() < 0.5:
                    self.log_event("config edit + SIGHUP", detail)
                    os.kill(self.fulcrum_pid, signal.SIGHUP)
                else:
                    self.log_event("config edit", detail)
                    self.ctl("reload")
            elif kind == "inventory":
                for name in self.inventory:
                    r = self.rng.random()
                    self.inventory[name] = ({"exclude": True} if r < 0.2 else {"drain": True} if r < 0.35
                                            else {"weight": self.rng.randint(1, 5)})
                if not self.usable("inv"):
                    # Keep one server that is up now in rotation (a server coming back into the
                    # inventory starts down until its checks rise).
                    up = [n for n in self.inventory if not self.backends[n].get("dead") and n in self.up]
                    if up:
                        self.inventory[self.rng.choice(up)] = {}
                    else:
                        self.inventory = {n: {} for n in self.inventory}
                self.log_event("inventory edit", self.write_inventory())
            self.sample()
            self.stop.wait(self.rng.uniform(0.5, 2.0) * self.a.chaos_scale)
        for _, fn in sorted(pending, key=lambda p: p[0]):
            fn()

    def killer(self, name):
        b = self.backends[name]
        b["dead"] = True  # no other chaos picks it from now on

        def run():
            p = b["proc"]
            t_kill = time.time()
            p.send_signal(signal.SIGKILL)
            p.wait()
            t_dead = time.time()
            self.pids.discard(p.pid)
            with self.lock:
                self.kills.append(dict(name=name, t_kill=t_kill, t_dead=t_dead))
            self.log_event("SIGKILL", f"{name} pid {p.pid}")
            time.sleep(self.rng.uniform(0.5, 3))
            self.start_backend(name)
            self.log_event("restart", f"{name} pid {b['proc'].pid}")
            b["dead"] = False
        return run

    def readier(self, name):
        def run():
            self.ctl("ready", f"web/{name}")
            self.backends[name]["out"] = False
        return run

    def adder(self, removed_rc):
        def run():
            self.ctl("add", "web", "x0", f"127.0.0.1:{self.backends['x0']['port']}")
            self.backends["x0"]["out"] = False
        return run

    def upgrade(self):
        self.upgrades += 1
        binary = self.binaries[self.upgrades % 2]
        r = subprocess.run([binary, "upgrade", "--pid", str(self.fulcrum_pid), "--binary", binary,
                            "--timeout", "60s"], capture_output=True, text=True, timeout=120)
        out = (r.stdout + r.stderr).strip().replace("\n", " | ")
        self.log_event("upgrade", f"rc={r.returncode} {out[:200]}")
        if r.returncode == 0 and "PID " in out:
            try:
                new = int(out.split("PID ", 1)[1].split()[0].strip(".,;:)"))
            except ValueError:
                return
            self.pids.add(new)
            old = self.fulcrum_pid
            self.fulcrum_pid = new
            if self.fulcrum_proc is not None and self.fulcrum_proc.pid == old:
                # Reap the first process in the background (the others are not our children).
                proc = self.fulcrum_proc
                threading.Thread(target=proc.wait, daemon=True).start()

    # ---------------------------------------------------------------- run
    def run(self):
        self.setup()
        end = self.t_start + self.a.minutes * 60
        mk = lambda: http.client.HTTPConnection("127.0.0.1", self.www, timeout=10)  # noqa: E731
        mk_inv = lambda: http.client.HTTPConnection("127.0.0.1", self.inv_port, timeout=10)  # noqa: E731
        workers = [
            ("h1-ka", lambda: self.http_loop("h1-ka", mk, True)),
            ("h1-ka", lambda: self.http_loop("h1-ka", mk, True)),
            ("h1-new", lambda: self.http_loop("h1-new", mk, False)),
            ("ws", self.ws_loop),
            ("tcp", self.tcp_loop),
            ("inv", lambda: self.http_loop("inv", mk_inv, True)),
        ]
        if self.tls_ok:
            mk_tls = lambda: http.client.HTTPSConnection(  # noqa: E731
                "127.0.0.1", self.tlsp, timeout=10, context=self.tls_ctx())
            workers.append(("tls", lambda: self.http_loop("tls", mk_tls, True)))
            workers.append(("tls-new", lambda: self.http_loop("tls-new", mk_tls, False)))
        if "h2" not in self.skipped:
            workers.append(("h2", self.h2_loop))
        threads = [threading.Thread(target=fn, name=k, daemon=True) for k, fn in workers]
        for t in threads:
            t.start()
        self.chaos(end)
        self.stop.set()
        for t in threads:
            t.join(timeout=60)
        self.sample()

    def cleanup(self):
        for pid in list(self.pids):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for b in self.backends.values():
            if b.get("proc") is not None:
                try:
                    b["proc"].wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass

    # ---------------------------------------------------------------- report
    def classify(self, kind, t0, t1, server):
        for k in self.kills:
            if t0 <= k["t_dead"] + KILL_SLACK and t1 >= k["t_kill"] and (not server or server == k["name"]):
                return (f"in flight while {k['name']} was SIGKILLed "
                        f"(+{k['t_kill'] - self.t_start:.1f}s): the request had reached a server that died")
        return None

    def report(self):
        from soak_report import render  # same directory (sys.path set in main)
        return render(self)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", required=True)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--interval", type=float, default=0.02, help="mean pause between requests per client (s)")
    ap.add_argument("--chaos-scale", type=float, default=1.0, help="stretch the pause between chaos steps")
    ap.add_argument("--access-log", action="store_true", help="fulcrum's access log on (to the temp dir)")
    ap.add_argument("--ci", action="store_true", help="on failure also print the end of fulcrum's log")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs) at the end")
    ap.add_argument("--json", help="write the raw summary here")
    ap.add_argument("--verbose", "-v", action="store_true")
    a = ap.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    s = Soak(a)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    rc = 1
    try:
        s.run()
        text, rc, summary = s.report()
        print(text, flush=True)
        for path in filter(None, (a.json, os.path.join(s.dir, "summary.json"))):
            with open(path, "w") as f:
                json.dump(summary, f, indent=1)
    except KeyboardInterrupt:
        print("soak: interrupted", file=sys.stderr)
    except Exception as e:  # noqa: BLE001 — report why, then the finally kills everything
        print(f"soak: error: {e}", file=sys.stderr)
    finally:
        s.stop.set()
        s.cleanup()
        if rc != 0 and a.ci:
            # A CI log is all there is: show the end of fulcrum's own log.
            try:
                with open(os.path.join(s.dir, "fulcrum.log"), errors="replace") as f:
                    tail = f.readlines()[-40:]
                print("soak: last lines of fulcrum.log:\n" + "".join(tail), file=sys.stderr)
            except OSError:
                pass
        if a.keep or rc != 0:
            print(f"soak: logs kept in {s.dir}", file=sys.stderr)
        else:
            shutil.rmtree(s.dir, ignore_errors=True)
    sys.exit(rc)


if __name__ == "__main__":
    main()
