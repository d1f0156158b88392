"""Markdown table of bench/scale.sh's JSON lines (stdin) -> stdout."""
import datetime
import json
import sys

rows = [json.loads(line) for line in sys.stdin if line.strip()]


def ms(d):
    if d is None:
        return "-"
    return f"{d['median_ms']:.2f} ({d['min_ms']:.2f}–{d['max_ms']:.2f})"


def kb(n):
    if n is None:
        return "-"
    return f"{n / 1024:.1f} MiB"


def secs(x):
    return "-" if x is None else f"{x:.2f}"


def sz(d):
    if d is None:
        return "-"
    return f"{d['median_ms']:.1f} ms / {d['bytes'] / 1e6:.2f} MB"


now = datetime.datetime.now(datetime.timezone.utc)
print(f"### Control plane at scale — {now:%Y-%m-%d %H:%M} UTC\n")
print("command: `bench/scale.sh` · one thread each · 10 servers per backend · HTTP checks every 1 s\n")
print("| servers | state change ms, median (min–max): fulcrum | HAProxy | 100 × drain+ready s: fulcrum ctl "
      "| HAProxy (bash /dev/tcp, no spawn) | status full: fulcrum ms / size | compact | `show stat` "
      "| `ctl servers` s | RSS before → after 1 000 calls: fulcrum | HAProxy |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for r in rows:
    st = r["status"]
    rb, ra = r["rss_kib"]["before"], r["rss_kib"]["after_1000_calls"]
    c = r["ctl_100_drain_ready_s"]
    print(f"| {r['servers']} | {ms(r['state_change']['fulcrum'])} | {ms(r['state_change']['haproxy'])} "
          f"| {c['fulcrum']:.2f} | {secs(c['haproxy'])} | {sz(st['fulcrum_full'])} | {sz(st['fulcrum_compact'])} "
          f"| {sz(st['haproxy_show_stat'])} | {r['ctl_servers_s']:.2f} "
          f"| {kb(rb['fulcrum'])} → {kb(ra['fulcrum'])} | {kb(rb['haproxy'])} → {kb(ra['haproxy'])} |")
