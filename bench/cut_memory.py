"""What a head cut costs in memory: the fleet in a head, cut into blocks as the shipper does.

    python -m bench.cut_memory --series 10000 --scrapes 530            # one 2 h window
    python -m bench.cut_memory --series 10000 --scrapes 2880 --force   # 12 h at once

Fills one tenant's head with bench.fleet's series, one scrape every 15 s from an aligned
window start (straight into the head: the write path is not what is measured), then runs
one `Shipper.cut` in process (WAL without fsync, local upload queue): every window before
`cut_grace_ms` behind the newest sample, or everything with `--force` (the cut of a head
over half its budget). Two fresh processes measure it: one the traced Python and numpy
allocations (tracemalloc: the peak over what was held before the cut), one the RSS high
water mark over the RSS before the cut (VmHWM, reset through /proc/self/clear_refs).
Prints both per sample cut, the seconds the cut took, and a digest of the blocks' index
and chunk files, which must not change when the cut's code does.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry

from bench.common import proc_status_kib
from bench.fleet import Fleet, iter_scrapes
from blocks.meta import CHUNKS_DIRNAME, INDEX_FILENAME, META_FILENAME, BlockMeta
from blocks.objstore.local import LocalStore
from gateway.config import GatewayConfig
from gateway.head import Head
from gateway.metrics import GatewayMetrics
from gateway.shipper import Shipper, cut_boundaries, queued_blocks
from gateway.validate import encode_labels
from gateway.wal import WAL
from gateway.write import Ingester

TENANT = "bench"
# An aligned window start (2026-11-21 00:00 UTC): 480 scrapes fill one window exactly.
START_MS = 1_795_564_800_000 - 4 * 24 * 3600 * 1000
MIB = 1 << 20


@dataclasses.dataclass(frozen=True, slots=True)
class Measured:
    """One cut, measured in one process."""

    samples_in_head: int
    samples_cut: int
    blocks: int
    seconds: float
    peak_bytes: int
    digest: str


def fill(head: Head, series: int, scrapes: int) -> None:
    """The fleet's scrapes into the tenant's head, as the write path commits them."""
    fleet = Fleet(series)
    tenant_head = head.tenant(TENANT)
    refs = np.array(
        [tenant_head.series_ref(encode_labels(list(labels))) for labels in fleet.labels],
        dtype=np.uint32,
    )
    for ts, values in iter_scrapes(fleet, START_MS, scrapes):
        tenant_head.commit(tenant_head.plan(refs, ts.astype(np.int64), values))


def blocks_digest(upload_dir: Path) -> str:
    """sha256 over every queued block's index and chunk files, in window order."""
    digest = hashlib.sha256()
    blocks = [d for _, d in queued_blocks(upload_dir)]
    for block_dir in sorted(
        blocks, key=lambda d: BlockMeta.from_json((d / META_FILENAME).read_bytes()).mint
    ):
        for path in [block_dir / INDEX_FILENAME, *sorted((block_dir / CHUNKS_DIRNAME).iterdir())]:
            digest.update(path.read_bytes())
    return digest.hexdigest()


def measure(data_dir: Path, series: int, scrapes: int, *, force: bool, traced: bool) -> Measured:
    """Fill a head, cut it once; traced peak or RSS high water mark over the cut."""
    config = GatewayConfig(data_dir=data_dir, wal_fsync=False)
    metrics = GatewayMetrics(CollectorRegistry())
    head = Head(max_bytes=config.head_max_bytes, freeze_samples=config.head_freeze_samples)
    wal = WAL(config.wal_dir, segment_bytes=config.wal_segment_bytes, fsync=False, metrics=metrics)
    ingester = Ingester(config, head, wal, metrics)
    store = LocalStore(data_dir / "bucket")
    wal.start()
    try:
        fill(head, series, scrapes)
        samples = head.tenant(TENANT).sample_count
        shipper = Shipper(config, head, wal, ingester, store, metrics)
        boundaries = cut_boundaries(head, config.cut_grace_ms, force=force)
        gc.collect()
        if traced:
            tracemalloc.start(1)
            before = tracemalloc.get_traced_memory()[0]
        else:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
            before = proc_status_kib(os.getpid(), "VmRSS") * 1024
        started = time.perf_counter()
        asyncio.run(shipper.cut(boundaries))
        seconds = time.perf_counter() - started
        if traced:
            peak = tracemalloc.get_traced_memory()[1] - before
            tracemalloc.stop()
        else:
            peak = proc_status_kib(os.getpid(), "VmHWM") * 1024 - before
    finally:
        wal.close()
        store.close()
    kept = head.tenant(TENANT).sample_count
    blocks = len(queued_blocks(config.upload_dir))
    return Measured(
        samples, samples - kept, blocks, seconds, peak, blocks_digest(config.upload_dir)
    )


def run_child(args: argparse.Namespace, mode: str) -> Measured:
    """`measure` in a fresh interpreter, so one measurement leaves nothing to the other."""
    command = [sys.executable, "-m", "bench.cut_memory", "--series", str(args.series)]
    command += ["--scrapes", str(args.scrapes), "--mode", mode] + (
        ["--force"] if args.force else []
    )
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return Measured(**json.loads(out.splitlines()[-1]))


def main() -> int:
    """Measure the cut traced and by RSS; print both per sample cut."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--scrapes", type=int, default=530)
    parser.add_argument("--force", action="store_true", help="cut everything, as over budget")
    parser.add_argument("--mode", choices=("both", "traced", "rss"), default="both")
    args = parser.parse_args()
    if args.mode != "both":
        with tempfile.TemporaryDirectory(prefix="strata-cut-") as tmp:
            result = measure(
                Path(tmp), args.series, args.scrapes, force=args.force, traced=args.mode == "traced"
            )
        print(json.dumps(dataclasses.asdict(result)))
        return 0
    traced, rss = run_child(args, "traced"), run_child(args, "rss")
    cut = max(1, traced.samples_cut)
    print(f"{args.series:,} series x {args.scrapes} scrapes, force={args.force}")
    print(f"head {traced.samples_in_head:,} samples; cut {traced.samples_cut:,}", end="")
    print(f" into {traced.blocks} blocks")
    for what, run in (("traced peak", traced), ("RSS growth ", rss)):
        per_sample = run.peak_bytes / cut
        print(
            f"{what} over the cut: {run.peak_bytes / MIB:,.1f} MiB, {per_sample:.1f} B / sample cut"
        )
    print(f"cut seconds: {traced.seconds:.2f} traced, {rss.seconds:.2f} untraced")
    print(f"blocks digest: {traced.digest}")
    if rss.digest != traced.digest:
        raise SystemExit("the two runs built different blocks")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
