#!/usr/bin/env python3
"""Parse wrk runs into JSON lines and aggregate them into the benchmark table.

Used by bench/run.sh (stdlib only):

  report.py record --out RAW.jsonl --case C --target T --round N --wrk FILE \
      --cpu-ticks-before N --cpu-ticks-after N --clk-tck 100 --hwm-kib N \
      --idle-pct F --quiet-waited-s F [--conns N]
  report.py report --raw RAW.jsonl --meta META.json --json OUT.json --md OUT.md
  report.py memory --rows ROWS --conns N      (bench/memory.sh: one "NAME JSON" per line)

The table shows, per case and target, the median over rounds with min–max for
req/s, the median p50/p99, the median proxy CPU µs per request, the largest
peak RSS, and ratios to HAProxy's medians in the same run.
"""

import argparse
import json
import re
import statistics
import sys
import time

TARGET_ORDER = ["direct", "haproxy", "nginx", "fulcrum", "fulcrum-rp",
                "haproxy+log", "nginx+log", "fulcrum+log", "fulcrum+syslog"]


def base_of(target):
    """Logged targets compare with HAProxy logging too (option httplog to syslog)."""
    return "haproxy+log" if "+" in target else "haproxy"
CASE_TEXT = {
    "ka50": "keep-alive, small body, 50 conns",
    "ka200": "keep-alive, small body, 200 conns",
    "ka4k": "keep-alive, 4 KiB body, 50 conns",
    "close": "new connection per request, 50 conns",
    "tcp": "TCP mode, keep-alive small body, 50 conns",
    "tls": "TLS keep-alive (RSA-2048), small body, 50 conns",
    "tlsnew": "TLS, new connection and handshake per request (RSA-2048), 50 conns",
    "tls-ec": "TLS keep-alive (ECDSA P-256), small body, 50 conns",
    "tlsnew-ec": "TLS, new connection and handshake per request (ECDSA P-256), 50 conns",
}
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def to_ms(text):
    """wrk latency like '1.23ms', '950.00us', '2.01s' -> milliseconds."""
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        return None
    return float(m.group(1)) * UNITS[m.group(2)]


def parse_wrk(text):
    """Pull requests, req/s, percentiles and errors out of `wrk --latency` output."""
    out = {"requests": None, "rps": None, "p50_ms": None, "p75_ms": None,
           "p90_ms": None, "p99_ms": None, "socket_errors": 0, "non_2xx": 0}
    m = re.search(r"^\s*(\d+) requests in ([0-9.]+\w+)", text, re.M)
    if m:
        out["requests"] = int(m.group(1))
    m = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
    if m:
        out["rps"] = float(m.group(1))
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}(?:\.0+)?%\s+(\S+)", text, re.M)
        if m:
            out[f"p{pct}_ms"] = to_ms(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        out["socket_errors"] = sum(int(x) for x in m.groups())
        out["socket_errors_detail"] = dict(zip(["connect", "read", "write", "timeout"],
                                               (int(x) for x in m.groups())))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if m:
        out["non_2xx"] = int(m.group(1))
    return out


def cmd_record(a):
    with open(a.wrk, encoding="utf-8", errors="replace") as f:
        text = f.read()
    rec = {"case": a.case, "target": a.target, "round": a.round, "conns": a.conns}
    rec.update(parse_wrk(text))
    rec["idle_pct_before"] = a.idle_pct
    rec["quiet_waited_s"] = a.quiet_waited_s
    rec["quiet"] = a.idle_pct >= a.quiet_threshold
    rec["proxy_pids"] = a.pids
    if a.target != "direct" and rec["requests"]:
        ticks = a.cpu_ticks_after - a.cpu_ticks_before
        rec["proxy_cpu_s"] = ticks / a.clk_tck
        rec["cpu_us_per_req"] = ticks / a.clk_tck * 1e6 / rec["requests"]
        rec["peak_rss_kib"] = a.hwm_kib
    else:
        rec["proxy_cpu_s"] = rec["cpu_us_per_req"] = rec["peak_rss_kib"] = None
    if rec["rps"] is None:
        rec["wrk_output"] = text[-2000:]
    with open(a.out, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")


def med(values):
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def aggregate(rows):
    """Group raw rows by (case, target) and summarise."""
    groups = {}
    for r in rows:
        groups.setdefault((r["case"], r["target"]), []).append(r)
    summary = {}
    for (case, target), rs in groups.items():
        rps = [r["rps"] for r in rs if r["rps"] is not None]
        summary.setdefault(case, {})[target] = {
            "rounds": len(rs),
            "rps_median": med(rps),
            "rps_min": min(rps) if rps else None,
            "rps_max": max(rps) if rps else None,
            "p50_ms": med(r["p50_ms"] for r in rs),
            "p99_ms": med(r["p99_ms"] for r in rs),
            "cpu_us_per_req": med(r["cpu_us_per_req"] for r in rs),
            "peak_rss_kib": max((r["peak_rss_kib"] for r in rs if r["peak_rss_kib"]), default=None),
            "errors": sum(r["socket_errors"] + r["non_2xx"] for r in rs),
            "noisy_rounds": sum(1 for r in rs if not r["quiet"]),
        }
    for case, targets in summary.items():
        # Rounds are interleaved, so a round's targets ran within seconds of
        # each other: the median of the per-round ratios cancels the machine's
        # drift between rounds, which the ratio of medians does not.
        for name, t in targets.items():
            base = targets.get(base_of(name))
            base_rps = {r["round"]: r["rps"] for r in groups.get((case, base_of(name)), [])}
            t["rps_vs_haproxy"] = ratio(t["rps_median"], base and base["rps_median"])
            t["rps_vs_haproxy_paired"] = med(
                ratio(r["rps"], base_rps.get(r["round"])) for r in groups[(case, name)])
            t["cpu_vs_haproxy"] = ratio(t["cpu_us_per_req"], base and base["cpu_us_per_req"])
            t["p99_vs_haproxy"] = ratio(t["p99_ms"], base and base["p99_ms"])
    return summary


def ratio(a, b):
    if a is None or not b:
        return None
    return a / b


def fmt(v, spec, dash="—"):
    return dash if v is None else format(v, spec)


def markdown(meta, summary):
    lines = []
    lines.append(f"### fulcrum vs HAProxy vs nginx — {meta.get('date', '?')}")
    lines.append("")
    if meta.get("smoke"):
        lines.append("**SMOKE RUN: 2 s, 1 round — the numbers are noise, not results.**")
        lines.append("")
    lines.append(f"- machine: {meta.get('cpu', '?')}, {meta.get('nproc', '?')} cores, "
                 f"kernel {meta.get('kernel', '?')}")
    lines.append(f"- versions: {meta.get('fulcrum', '?')}; {meta.get('haproxy', '?')}; "
                 f"{meta.get('nginx', '?')}; {meta.get('wrk', '?')}")
    lines.append(f"- load: wrk -t1, {meta.get('duration', '?')} per measurement, "
                 f"{meta.get('rounds', '?')} interleaved rounds; backends: 2 × nginx (1 worker); "
                 f"all on 127.0.0.1, sharing the cores")
    default = meta.get("proxy_threads") == "default"
    lines.append(f"- fulcrum worker threads: {meta.get('fulcrum_threads', '?')}; "
                 + ("HAProxy nbthread default; nginx worker_processes auto" if default
                    else "HAProxy nbthread 1; nginx 1 worker"))
    if meta.get("worker_connections"):
        lines.append(f"- fulcrum connections accepted per worker over the run: "
                     f"{meta['worker_connections']}")
    if meta.get("worker_cpu"):
        lines.append(f"- fulcrum CPU per worker thread over its life (warm-up included): {meta['worker_cpu']}")
    if meta.get("worker_connections_rp"):
        lines.append(f"- fulcrum-rp (one SO_REUSEPORT socket per worker, FULCRUM_ACCEPT=reuseport): "
                     f"connections accepted per worker: {meta['worker_connections_rp']}; "
                     f"CPU per worker thread: {meta.get('worker_cpu_rp') or '?'}")
    if meta.get("tls_handshakes"):
        lines.append(f"- fulcrum TLS handshakes over the run (resumed = wrk offered the last session): "
                     f"{meta['tls_handshakes']}")
    lines.append(f"- command: `{meta.get('command', 'bench/run.sh')}`")
    lines.append("- req/s: median (min–max) over rounds; × HAProxy per round: median over rounds of the "
                 "ratio within the round (steadier: rounds are interleaved); p50/p99: median over rounds; "
                 "CPU: proxy utime+stime per request (nginx: master+worker); RSS: peak (VmHWM) of the proxy")
    lines.append("")
    lines.append("| case | target | req/s median (min–max) | × HAProxy req/s | × HAProxy per round "
                 "| p50 ms | p99 ms | CPU µs/req | × HAProxy CPU | peak RSS MiB | errors |")
    lines.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for case in CASE_TEXT:
        if case not in summary:
            continue
        for target in TARGET_ORDER:
            t = summary[case].get(target)
            if t is None:
                continue
            rps = (f"{fmt(t['rps_median'], ',.0f')} "
                   f"({fmt(t['rps_min'], ',.0f')}–{fmt(t['rps_max'], ',.0f')})")
            rss = None if t["peak_rss_kib"] is None else t["peak_rss_kib"] / 1024
            noisy = " ⚠" if t["noisy_rounds"] else ""
            lines.append(
                f"| {case} | {target}{noisy} | {rps} | {fmt(t['rps_vs_haproxy'], '.2f')} "
                f"| {fmt(t['rps_vs_haproxy_paired'], '.2f')} "
                f"| {fmt(t['p50_ms'], '.2f')} | {fmt(t['p99_ms'], '.2f')} "
                f"| {fmt(t['cpu_us_per_req'], '.1f')} | {fmt(t['cpu_vs_haproxy'], '.2f')} "
                f"| {fmt(rss, '.1f')} | {t['errors']} |")
    lines.append("")
    lines.append("Cases: " + "; ".join(f"`{k}` = {v}" for k, v in CASE_TEXT.items() if k in summary)
                 + ". `direct` = wrk straight to backend 1 (the ceiling; no proxy CPU). "
                 "`+log` rows log every request (HAProxy: `option httplog` to a local UDP syslog sink; "
                 "nginx: access log to a file; fulcrum: its default access log, stdout to a file; "
                 "`fulcrum+syslog`: to a UDP syslog sink) and are compared with `haproxy+log`. "
                 "⚠ = at least one round started before the machine was quiet.")
    return "\n".join(lines) + "\n"


def cmd_report(a):
    rows = []
    with open(a.raw, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    with open(a.meta, encoding="utf-8") as f:
        meta = json.load(f)
    summary = aggregate(rows)
    with open(a.json, "w", encoding="utf-8") as f:
        json.dump({"meta": meta, "summary": summary, "raw": rows}, f, indent=2)
        f.write("\n")
    md = markdown(meta, summary)
    with open(a.md, "w", encoding="utf-8") as f:
        f.write(md)
    sys.stdout.write(md)


def cmd_memory(a):
    """Rows of 'NAME JSON' from idle_conns.py -> Markdown table on stdout."""
    out = [f"### Memory per idle keep-alive connection — "
           f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
           f"{a.conns} client connections, one `GET /` each, then idle; "
           "RSS = VmRSS of the proxy (nginx: master + worker).", "",
           "| proxy | connections alive | RSS before MiB | RSS after MiB | KiB per connection | errors |",
           "| --- | --- | --- | --- | --- | --- |"]
    with open(a.rows, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            name, js = line.rstrip("\n").split(" ", 1)
            r = json.loads(js)
            if "error" in r:
                out.append(f"| {name} | — | — | — | — | {r['error']} |")
                continue
            kinds = " ".join(r["error_kinds"])
            out.append(f"| {name} | {r['alive']} / {r['wanted']} | {r['rss_before_kib'] / 1024:.1f} "
                       f"| {r['rss_after_kib'] / 1024:.1f} | {fmt(r['kib_per_conn'], '.2f')} "
                       f"| {(str(r['errors']) + ' ' + kinds).rstrip()} |")
    sys.stdout.write("\n".join(out) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--out", required=True)
    r.add_argument("--case", required=True)
    r.add_argument("--target", required=True)
    r.add_argument("--round", type=int, required=True)
    r.add_argument("--conns", type=int, default=None)
    r.add_argument("--wrk", required=True)
    r.add_argument("--cpu-ticks-before", type=int, default=0)
    r.add_argument("--cpu-ticks-after", type=int, default=0)
    r.add_argument("--clk-tck", type=int, default=100)
    r.add_argument("--hwm-kib", type=int, default=0)
    r.add_argument("--idle-pct", type=float, default=100.0)
    r.add_argument("--quiet-threshold", type=float, default=90.0)
    r.add_argument("--quiet-waited-s", type=float, default=0.0)
    r.add_argument("--pids", default="")
    r.set_defaults(fn=cmd_record)
    s = sub.add_parser("report")
    s.add_argument("--raw", required=True)
    s.add_argument("--meta", required=True)
    s.add_argument("--json", required=True)
    s.add_argument("--md", required=True)
    s.set_defaults(fn=cmd_report)
    m = sub.add_parser("memory")
    m.add_argument("--rows", required=True)
    m.add_argument("--conns", type=int, required=True)
    m.set_defaults(fn=cmd_memory)
    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
