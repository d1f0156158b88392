#!/usr/bin/env python3
"""Open N idle keep-alive HTTP connections to 127.0.0.1:PORT and report RSS growth.

Each connection sends one `GET /` and reads the whole response, then stays open
and idle. RSS (VmRSS, summed over --pids) is read before the first connection
and again once all connections are open and the process has settled; the
difference divided by the connections still open is the memory per idle
keep-alive connection. Prints one JSON object. Bounded by --timeout.

  idle_conns.py --port P --pids "PID [PID…]" [--conns 10000] [--timeout 120]
"""

import argparse
import asyncio
import json
import sys
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: bench.local\r\nUser-Agent: fulcrum-bench\r\n\r\n"


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


async def read_response(reader):
    """Read one response with a Content-Length body (what the backends send)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if length:
        await reader.readexactly(length)
    return head.split(b" ", 2)[1]


async def open_one(port, sem, conns, errors):
    async with sem:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
            writer.write(REQUEST)
            status = await asyncio.wait_for(read_response(reader), 10)
            if status != b"200":
                errors.append(f"status {status!r}")
            conns.append((reader, writer))
        except Exception as e:  # count, keep going: the report says how many opened
            errors.append(type(e).__name__)


async def main_async(a):
    pids = [int(p) for p in a.pids.split()]
    before = rss_kib(pids)
    sem = asyncio.Semaphore(a.parallel)
    conns, errors = [], []
    t0 = time.monotonic()
    await asyncio.gather(*(open_one(a.port, sem, conns, errors) for _ in range(a.conns)))
    open_s = time.monotonic() - t0
    await asyncio.sleep(a.settle)
    # Connections the proxy closed while we waited do not count.
    alive = [c for c in conns if not c[0].at_eof()]
    after = rss_kib(pids)
    for _, w in conns:
        w.close()
    result = {
        "port": a.port, "pids": pids, "wanted": a.conns, "opened": len(conns),
        "alive": len(alive), "errors": len(errors), "error_kinds": sorted(set(errors))[:5],
        "rss_before_kib": before, "rss_after_kib": after,
        "kib_per_conn": (after - before) / len(alive) if alive else None,
        "open_seconds": round(open_s, 2),
    }
    print(json.dumps(result))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pids", required=True, help="space-separated PIDs whose RSS is summed")
    p.add_argument("--conns", type=int, default=10000)
    p.add_argument("--parallel", type=int, default=200, help="connections being opened at once")
    p.add_argument("--settle", type=float, default=2.0, help="seconds to wait before reading RSS")
    p.add_argument("--timeout", type=float, default=120.0)
    a = p.parse_args()
    try:
        asyncio.run(asyncio.wait_for(main_async(a), a.timeout))
    except asyncio.TimeoutError:
        print(json.dumps({"port": a.port, "error": f"timed out after {a.timeout}s"}))
        sys.exit(1)


if __name__ == "__main__":
    main()
