"""The report of bench/soak.py: counts per traffic kind, every failure classified, RSS and fds,
p99 latency per minute. `render(soak)` returns (markdown text, exit code, JSON summary)."""

import collections

from soak import FD_BOUND, RSS_BOUND_KB


def pct(values, q):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def render(s):
    t0 = s.t_start
    kinds = sorted({r[0] for r in s.results})
    per = {k: dict(sent=0, ok=0, explained=0, unexplained=0) for k in kinds}
    causes = collections.Counter()
    unexplained = []
    for kind, a, b, ok, err, server in s.results:
        p = per[kind]
        p["sent"] += 1
        if ok:
            p["ok"] += 1
            continue
        why = s.classify(kind, a, b, server)
        if why:
            p["explained"] += 1
            causes[f"{kind}: {err.split(':')[0]} — {why.split(' (+')[0]}"] += 1
        else:
            p["unexplained"] += 1
            unexplained.append((kind, a, b, err, server))

    ev = collections.Counter(e[1].split(" web")[0].split(" --")[0] for e in s.events)
    ev["SIGKILL"] = len(s.kills)
    lines = [f"## fulcrum soak: {s.a.minutes:g} min, seed {s.a.seed}", ""]
    lines.append("Chaos events: " + ", ".join(f"{k} ×{n}" for k, n in sorted(ev.items())))
    lines.append("")
    if s.skipped:
        for k, why in s.skipped.items():
            lines.append(f"- skipped {k}: {why}")
        lines.append("")
    lines += ["| traffic | sent | ok | failed | explained | unexplained |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    tot = collections.Counter()
    for k in kinds:
        p = per[k]
        failed = p["sent"] - p["ok"]
        lines.append(f"| {k} | {p['sent']} | {p['ok']} | {failed} | {p['explained']} | {p['unexplained']} |")
        tot.update(p)
    lines.append(f"| **all** | {tot['sent']} | {tot['ok']} | {tot['sent'] - tot['ok']} | "
                 f"{tot['explained']} | {tot['unexplained']} |")
    lines.append("")
    if causes:
        lines.append("Explained failures (a correct proxy cannot avoid them):")
        for c, n in causes.most_common():
            lines.append(f"- {n} × {c}")
        lines.append("")
    if unexplained:
        lines.append(f"UNEXPLAINED failures ({len(unexplained)}; first 30, with the chaos events within 2 s):")
        for kind, a, b, err, server in sorted(unexplained, key=lambda u: u[1])[:30]:
            near = [f"{e[1]} {e[2][:40]} @{e[0] - t0:.1f}s" for e in s.events if a - 2 <= e[0] <= b + 2][:4]
            lines.append(f"- +{a - t0:.2f}s..{b - t0:.2f}s {kind} {server or '?'}: {err}"
                         f"  [{'; '.join(near) or 'no chaos nearby'}]")
        lines.append("")

    # Resources.
    rc = 0
    samples = s.samples
    if samples:
        first, mid, last = samples[0], samples[len(samples) // 2], samples[-1]
        lines += ["| fulcrum | pid | RSS (MiB) | open fds |", "| --- | ---: | ---: | ---: |"]
        for label, smp in (("start", first), ("middle", mid), ("end", last)):
            lines.append(f"| {label} (+{smp[0] - t0:.0f}s) | {smp[1]} | {smp[2] / 1024:.1f} | {smp[3]} |")
        lp = [x for x in samples if x[1] == last[1]]
        peak = max(x[2] for x in samples)
        lines.append("")
        lines.append(f"Peak RSS {peak / 1024:.1f} MiB; {s.upgrades} upgrade(s); the last process "
                     f"(pid {last[1]}) served {lp[-1][0] - lp[0][0]:.0f}s: RSS {lp[0][2] / 1024:.1f} → "
                     f"{lp[-1][2] / 1024:.1f} MiB, fds {lp[0][3]} → {lp[-1][3]}.")
        lines.append("")
        growth = []
        if last[2] > first[2] + RSS_BOUND_KB:
            growth.append(f"RSS grew {first[2]} → {last[2]} KiB (bound +{RSS_BOUND_KB})")
        if lp[-1][2] > lp[0][2] + RSS_BOUND_KB:
            growth.append(f"RSS of pid {last[1]} grew {lp[0][2]} → {lp[-1][2]} KiB")
        if last[3] > first[3] + FD_BOUND:
            growth.append(f"fds grew {first[3]} → {last[3]} (bound +{FD_BOUND})")
        for g in growth:
            lines.append(f"RESOURCE GROWTH: {g}")
            rc = 1
    else:
        lines.append("RESOURCES: no sample taken")
        rc = 1

    # p99 per minute.
    minutes = int((max((r[2] for r in s.results), default=t0) - t0) // 60) + 1
    lines += ["", "p99 latency (ms) of successful requests per minute (WebSocket: whole 10-echo session):", "",
              "| minute | " + " | ".join(kinds) + " |", "| ---: |" + " ---: |" * len(kinds)]
    lat = collections.defaultdict(list)
    for kind, a, b, ok, _, _ in s.results:
        if ok:
            lat[(kind, int((a - t0) // 60))].append((b - a) * 1000)
    p99 = {}
    for m in range(minutes):
        row = []
        for k in kinds:
            v = pct(lat.get((k, m), []), 0.99)
            p99[f"{k}/{m}"] = v
            row.append("–" if v is None else f"{v:.0f}")
        lines.append(f"| {m + 1} | " + " | ".join(row) + " |")

    for k in kinds:
        if per[k]["ok"] == 0:
            lines.append(f"NO SUCCESSFUL {k} request: the load did not run")
            rc = 1
    if unexplained:
        rc = 1
    lines.append("")
    lines.append("soak: " + ("ok" if rc == 0 else "FAILED") +
                 f" ({tot['unexplained']} unexplained failure(s) of {tot['sent']})")
    summary = dict(minutes=s.a.minutes, seed=s.a.seed, per_kind=per, causes=dict(causes),
                   unexplained=[dict(kind=u[0], t0=u[1] - t0, t1=u[2] - t0, error=u[3], server=u[4])
                                for u in unexplained],
                   samples=[dict(t=x[0] - t0, pid=x[1], rss_kb=x[2], fds=x[3]) for x in samples],
                   events=[dict(t=e[0] - t0, what=e[1], detail=e[2]) for e in s.events], p99_ms=p99)
    return "\n".join(lines), rc, summary
