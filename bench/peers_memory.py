"""Where the gateway's memory per active series goes: a tracemalloc profile of the fleet.

    python -m bench.peers_memory --series 100000 --scrapes 8

Runs the gateway's app in process (its lifespan, a temporary data directory, WAL fsync
off: durability does not change what stays in memory), sends it `scrapes` scrapes of
bench.fleet's series through httpx's ASGI transport, as bench.peers sends them over
HTTP, and then takes a tracemalloc snapshot. Prints the Python allocations still held,
by source line, as bytes per series, the most ever held at once while writing (the
transient peaks: a dict's table doubling, a freeze of the uncompressed samples, requests
in flight), and the RSS growth for comparison (numpy arrays are traced too; the
interpreter's own overhead and freed-but-kept heap are not).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import tempfile
import tracemalloc
from pathlib import Path

import httpx
import snappy
from prometheus_client import CollectorRegistry

from bench.common import proc_status_kib
from bench.fleet import Fleet, ScrapeEncoder, iter_scrapes
from bench.peers import FLEET_END_MS
from gateway.app import create_app
from gateway.config import GatewayConfig

WRITE_HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}
TOP = 25


async def send(data_dir: Path, series: int, scrapes: int) -> tuple[tracemalloc.Snapshot, int, int]:
    """Write the fleet into a fresh in-process gateway; the snapshot, the traced peak over
    what was held before the writes (bytes) and the RSS growth (KiB)."""
    fleet = Fleet(series)
    encoder = ScrapeEncoder(fleet.labels)
    start_ms = FLEET_END_MS - scrapes * fleet.interval_ms
    bodies = [
        snappy.compress(body)
        for ts, values in iter_scrapes(fleet, start_ms, scrapes)
        for body in encoder.encode(ts, values)
    ]
    del encoder, fleet
    gc.collect()
    app = create_app(GatewayConfig(data_dir=data_dir, wal_fsync=False), CollectorRegistry())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://strata") as client:
            while (await client.get("/-/ready")).status_code != 200:
                await asyncio.sleep(0.01)
            rss_before = proc_status_kib(os.getpid(), "VmRSS")
            tracemalloc.start(1)
            start = tracemalloc.get_traced_memory()[0]
            for body in bodies:
                answer = await client.post("/api/v1/write", content=body, headers=WRITE_HEADERS)
                if answer.status_code // 100 != 2:
                    raise RuntimeError(f"write answered {answer.status_code}: {answer.text}")
            gc.collect()
            snapshot = tracemalloc.take_snapshot()
            peak = tracemalloc.get_traced_memory()[1] - start
            tracemalloc.stop()
            grown = proc_status_kib(os.getpid(), "VmRSS") - rss_before
    return snapshot, peak, grown


def main() -> int:
    """Profile, print the top allocation sites per series."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=100_000)
    parser.add_argument("--scrapes", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="strata-memory-") as tmp:
        snapshot, peak, grown_kib = asyncio.run(send(Path(tmp), args.series, args.scrapes))
    stats = snapshot.statistics("lineno")
    total = sum(s.size for s in stats)
    print(f"{args.series:,} series x {args.scrapes} scrapes")
    print(f"RSS growth while writing: {grown_kib * 1024 / args.series:,.0f} B / series")
    print(f"traced and still held: {total / args.series:,.0f} B / series")
    print(f"traced peak while writing: {peak / args.series:,.0f} B / series\n")
    print("| B / series | blocks | where |\n|---|---|---|")
    for stat in stats[:TOP]:
        frame = stat.traceback[0]
        where = f"{Path(frame.filename).name}:{frame.lineno}"
        print(f"| {stat.size / args.series:,.1f} | {stat.count:,} | {where} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
