#!/usr/bin/env python3
"""Time from an etcd write to the change on every balancer, with N registered servers.

Starts a 3-member etcd cluster and B fulcrum balancers (etcd discovery) on
loopback, registers N servers (one key each, half of them under one lease),
then, for R rounds, measures on every balancer:

  put     `put` of one server's value with state=drain -> that server shows
          `drain` in the balancer's admin API (the snapshot requests use)
  revoke  lease revoke of a 1-server lease -> the server is gone
  expiry  a 1-second lease left to expire -> the server is gone, measured
          from the moment the last keep-alive said 1 s was left (so it
          includes etcd's own expiry granularity)

Prints medians and min..max per kind. Every process is started here and
killed by PID at the end. Only the Python standard library; talks to etcd
through its JSON gateway (/v3/...) to keep the client out of the timing.
This is a benchmark, not a test: no threshold anywhere.

    bench/etcd_propagation.py [--servers 1000] [--balancers 3] [--rounds 9] [--bin target/release/fulcrum]
"""

import argparse
import base64
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def b64(s):
    return base64.b64encode(s.encode()).decode()


class Etcd:
    def __init__(self, etcd_bin, root):
        self.members = [(f"m{i}", free_port(), free_port()) for i in range(3)]
        initial = ",".join(f"{n}=http://127.0.0.1:{p}" for n, _, p in self.members)
        self.procs = []
        for name, client, peer in self.members:
            log = open(os.path.join(root, f"{name}.log"), "w")
            self.procs.append(subprocess.Popen([
                etcd_bin, f"--name={name}", f"--data-dir={os.path.join(root, name)}",
                f"--listen-client-urls=http://127.0.0.1:{client}",
                f"--advertise-client-urls=http://127.0.0.1:{client}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster={initial}", "--initial-cluster-state=new",
                "--heartbeat-interval=50", "--election-timeout=500",
            ], stdout=subprocess.DEVNULL, stderr=log))
        self.url = f"http://127.0.0.1:{self.members[0][1]}"
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                self.call("/v3/kv/put", {"key": b64("/probe"), "value": b64("1")})
                return
            except Exception:
                time.sleep(0.2)
        raise SystemExit("etcd did not start")

    def endpoints(self):
        return [f"http://127.0.0.1:{c}" for _, c, _ in self.members]

    def call(self, path, body):
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read() or b"{}")

    def put(self, key, value, lease=None):
        body = {"key": b64(key), "value": b64(value)}
        if lease:
            body["lease"] = lease
        return self.call("/v3/kv/put", body)

    def grant(self, ttl):
        return self.call("/v3/lease/grant", {"TTL": ttl})["ID"]

    def revoke(self, lease):
        return self.call("/v3/lease/revoke", {"ID": lease})

    def keepalive(self, lease):
        return self.call("/v3/lease/keepalive", {"ID": lease})

    def stop(self):
        for p in self.procs:
            p.kill()
            p.wait()


def server_of(admin, name):
    try:
        with urllib.request.urlopen(f"http://{admin}/api/v1/backends/web/servers/{name}", timeout=2) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        return None if e.code == 404 else {}
    except Exception:
        return {}


def wait_all(admins, cond, t0, limit=30.0):
    """Poll every balancer until cond(admin) holds; seconds from t0 for each."""
    out = [None] * len(admins)

    def one(i, a):
        deadline = time.time() + limit
        while time.time() < deadline:
            if cond(a):
                out[i] = time.time() - t0
                return
            time.sleep(0.002)

    ts = [threading.Thread(target=one, args=(i, a)) for i, a in enumerate(admins)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--servers", type=int, default=1000)
    ap.add_argument("--balancers", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--bin", default="target/release/fulcrum")
    ap.add_argument("--etcd", default=shutil.which("etcd") or "/usr/bin/etcd")
    args = ap.parse_args()
    if not os.path.exists(args.etcd):
        raise SystemExit("etcd is not installed (apt-get install etcd-server)")
    root = tempfile.mkdtemp(prefix="fulcrum-etcd-bench-")
    etcd = Etcd(args.etcd, root)
    lbs = []
    try:
        eps = ", ".join(f'"{e}"' for e in etcd.endpoints())
        admins = []
        for i in range(args.balancers):
            listen, admin = free_port(), free_port()
            cfg = os.path.join(root, f"lb{i}.toml")
            with open(cfg, "w") as f:
                f.write(f'[admin]\nlisten = "127.0.0.1:{admin}"\n\n[frontends.web]\n'
                        f'listen = ["127.0.0.1:{listen}"]\nbackend = "web"\n\n[backends.web]\n'
                        f'discovery = {{ etcd = {{ endpoints = [{eps}] }} }}\n')
            log = open(os.path.join(root, f"lb{i}.log"), "w")
            lbs.append(subprocess.Popen([args.bin, "run", "-c", cfg], stdout=subprocess.DEVNULL,
                                        stderr=log, env={**os.environ, "FULCRUM_LOG": "warn"}))
            admins.append(f"127.0.0.1:{admin}")
        lease = etcd.grant(3600)
        for n in range(args.servers):
            etcd.put(f"/fulcrum/backends/web/s{n}",
                     json.dumps({"address": f"127.0.0.1:{20000 + n}"}),
                     lease if n % 2 else None)
        last = f"s{args.servers - 1}"
        got = wait_all(admins, lambda a: bool(server_of(a, last)), time.time(), 60)
        if None in got:
            raise SystemExit("balancers did not see the servers")
        res = {"put": [], "revoke": [], "expiry": []}
        for r in range(args.rounds):
            # put: drain one server, then put it back.
            name = f"s{(r * 37) % args.servers}"
            addr = f"127.0.0.1:{20000 + (r * 37) % args.servers}"
            t0 = time.time()
            etcd.put(f"/fulcrum/backends/web/{name}", json.dumps({"address": addr, "state": "drain"}))
            res["put"] += wait_all(admins, lambda a: (server_of(a, name) or {}).get("admin") == "drain", t0)
            etcd.put(f"/fulcrum/backends/web/{name}", json.dumps({"address": addr}))
            # revoke: a server on its own lease.
            extra = f"x{r}"
            l1 = etcd.grant(60)
            etcd.put(f"/fulcrum/backends/web/{extra}", json.dumps({"address": "127.0.0.1:1"}), l1)
            wait_all(admins, lambda a: bool(server_of(a, extra)), time.time())
            t0 = time.time()
            etcd.revoke(l1)
            res["revoke"] += wait_all(admins, lambda a: server_of(a, extra) is None, t0)
            # expiry: a 1 s lease, last keep-alive then left alone.
            exp = f"e{r}"
            l2 = etcd.grant(1)
            etcd.put(f"/fulcrum/backends/web/{exp}", json.dumps({"address": "127.0.0.1:2"}), l2)
            wait_all(admins, lambda a: bool(server_of(a, exp)), time.time())
            etcd.keepalive(l2)
            t0 = time.time() + 1.0  # when the TTL runs out
            res["expiry"] += wait_all(admins, lambda a: server_of(a, exp) is None, t0)
        print(f"{args.servers} registered servers, {args.balancers} balancers, {args.rounds} rounds "
              f"(every balancer's time counted; machine shared with other builds: noisy)")
        print("| change | median ms | min..max ms | samples |")
        print("| --- | --- | --- | --- |")
        for k, v in res.items():
            ok = [x * 1000 for x in v if x is not None]
            missing = len(v) - len(ok)
            note = f" ({missing} timed out)" if missing else ""
            if ok:
                print(f"| {k} | {statistics.median(ok):.0f} | {min(ok):.0f}..{max(ok):.0f} | {len(ok)}{note} |")
    finally:
        for p in lbs:
            p.kill()
            p.wait()
        etcd.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
