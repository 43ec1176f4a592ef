"""A bucket of raw and downsampled blocks made from the same samples, as the compactor
would leave it, for read tests; and the samples those tests start from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from blocks.aggregates import Aggregate, downsample_raw, with_aggregate
from blocks.bucket_index import add_blocks
from blocks.meta import BlockMeta, Resolution
from blocks.objstore.local import LocalStore
from blocks.ulid import new_ulid
from blocks.upload import upload_block
from blocks.writer import BlockWriter

LabelSet = tuple[tuple[str, str], ...]
Part = tuple[np.ndarray, np.ndarray]

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
# Aligned to 2 days, so to every 5 m and 1 h window; long past, as downsampled data is.
T0 = (1_700_000_000_000 // (2 * DAY_MS)) * 2 * DAY_MS
STALE_BITS = 0x7FF0000000000002


def in_range(part: Part, mint: int, maxt: int) -> Part:
    """The samples with mint <= t <= maxt."""
    ts, values = part
    keep = (ts >= mint) & (ts <= maxt)
    return ts[keep], values[keep]


def counter(start: int, count: int, interval_ms: int, resets: Sequence[int], seed: int = 0) -> Part:
    """A counter scraped every interval_ms from start, restarting at the given sample
    numbers (to a value below the one before)."""
    rng = np.random.default_rng(seed)
    ts = start + 7_000 + np.arange(count, dtype=np.int64) * interval_ms
    steps = np.round(rng.uniform(0, 10, count), 1)
    values = np.empty(count)
    total = 1_000.0
    for i in range(count):
        total = float(steps[i]) if i in resets else total + float(steps[i])
        values[i] = total
    return ts, values


def gauge(start: int, count: int, interval_ms: int, seed: int = 0) -> Part:
    """A gauge with two decimals, scraped every interval_ms from start."""
    rng = np.random.default_rng(seed)
    ts = start + 3_000 + np.arange(count, dtype=np.int64) * interval_ms
    return ts, np.round(rng.normal(50, 20, count), 2)


def with_stale_marker(part: Part, at: int) -> Part:
    """A copy with sample `at` turned into Prometheus's staleness marker."""
    ts, values = part
    marked = values.copy()
    marked.view(np.uint64)[at] = STALE_BITS
    return ts, marked


class BlockMaker:
    """Writes blocks of one tenant into a local bucket and records them in its index."""

    def __init__(self, bucket: Path, work: Path, tenant: str = "default") -> None:
        self.bucket = bucket
        self.work = work
        self.tenant = tenant

    def raw(self, series: Mapping[LabelSet, Part], mint: int, maxt: int) -> BlockMeta:
        """A raw block of the series' samples in [mint, maxt)."""
        rows = [(list(labels), in_range(part, mint, maxt - 1)) for labels, part in series.items()]
        return self._write(rows, Resolution.RAW, mint, maxt, level=1)

    def downsampled(
        self,
        series: Mapping[LabelSet, Part],
        resolution: Resolution,
        mint: int,
        maxt: int,
        level: int = 3,
    ) -> BlockMeta:
        """The block the compactor makes at `resolution` from the samples in [mint, maxt)."""
        rows = []
        for labels, part in series.items():
            aggregates = downsample_raw(*in_range(part, mint, maxt - 1), int(resolution))
            for aggregate in Aggregate:
                rows.append((with_aggregate(list(labels), aggregate), aggregates[aggregate]))
        return self._write(rows, resolution, mint, maxt, level)

    def _write(
        self,
        rows: list[tuple[list[tuple[str, str]], Part]],
        resolution: Resolution,
        mint: int,
        maxt: int,
        level: int,
    ) -> BlockMeta:
        block_id = new_ulid()
        writer = BlockWriter(self.work, block_id)
        for labels, (ts, values) in sorted(rows, key=lambda row: row[0]):
            writer.add_series(labels, ts, values)
        writer.finish(tenant=self.tenant, resolution=resolution, level=level, mint=mint, maxt=maxt)
        with LocalStore(self.bucket) as store:
            meta = upload_block(store, self.work / block_id, self.tenant)
            add_blocks(store, self.tenant, [meta])
        return meta
