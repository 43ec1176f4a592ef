"""Blocks put into a bucket the way gateways put them, and a bucket's contents read back.

`contents` merges every block a query would see (the index's blocks, optionally only
the unmarked ones) series by series, newest block winning a timestamp, and returns each
sample's float64 bits, so a comparison is bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from blocks.bucket_index import add_blocks, read_bucket_index
from blocks.meta import BlockMeta, Resolution
from blocks.objstore.base import ObjectStore
from blocks.reader import BlockReader
from blocks.ulid import new_ulid
from blocks.upload import upload_block
from blocks.writer import BlockWriter
from compactor.levels import DAY_MS, HOUR_MS
from querier.merge import merge_parts
from tests.support.values import STALE_NAN

LabelKey = tuple[tuple[str, str], ...]
Series = dict[LabelKey, tuple[np.ndarray, np.ndarray]]
# A 14-day boundary (the top level's), so every level's ranges start here.
T0 = 1_780_000_000_000 // (14 * DAY_MS) * (14 * DAY_MS)
WINDOW_MS = 2 * HOUR_MS


def labels(name: str, **more: str) -> LabelKey:
    return tuple(sorted({"__name__": name, **more}.items()))


def synthetic(
    mint: int, maxt: int, step_ms: int, names: Iterable[LabelKey], *, specials: bool = True
) -> Series:
    """Series over [mint, maxt): counters with a reset, gauges with awkward bit patterns."""
    out: Series = {}
    ts = np.arange(mint, maxt, step_ms, dtype=np.int64)
    for number, key in enumerate(sorted(names)):
        steps = np.arange(len(ts), dtype=np.float64)
        if number % 2 == 0:
            values = steps * (number + 1) * 0.5
            values[len(ts) // 3 :] -= values[len(ts) // 3]  # a counter reset
        else:
            values = np.sin(steps / 40.0) * 100 + number
        if specials and len(ts) > 40:
            bits = values.view(np.uint64).copy()
            bits[7] = STALE_NAN
            bits[11] = 0x7FF8000000000000
            bits[13] = 0x8000000000000000
            bits[17] = 0x7FF0000000000000
            values = bits.view(np.float64)
        out[key] = (ts, values)
    return out


def clip(series: Series, mint: int, maxt: int) -> Series:
    """The samples with mint <= t < maxt; series left empty are dropped."""
    out: Series = {}
    for key, (ts, values) in series.items():
        keep = (ts >= mint) & (ts < maxt)
        if keep.any():
            out[key] = (ts[keep], values[keep])
    return out


def put_block(
    store: ObjectStore,
    work: Path,
    tenant: str,
    series: Series,
    mint: int,
    maxt: int,
    *,
    level: int = 1,
    resolution: Resolution = Resolution.RAW,
    index: bool = True,
) -> BlockMeta:
    """Write `series` as one block of [mint, maxt), upload it and (by default) index it."""
    writer = BlockWriter(work, new_ulid())
    for key in sorted(series):
        ts, values = series[key]
        writer.add_series(list(key), ts, values)
    writer.finish(tenant=tenant, resolution=resolution, level=level, mint=mint, maxt=maxt)
    meta = upload_block(store, writer.final_dir, tenant)
    if index:
        add_blocks(store, tenant, [meta])
    return meta


def put_windows(store: ObjectStore, work: Path, tenant: str, series: Series) -> list[BlockMeta]:
    """One level-1 block per 2 h window the series reach, as a gateway cuts them."""
    first = min(int(ts[0]) for ts, _ in series.values())
    last = max(int(ts[-1]) for ts, _ in series.values())
    metas = []
    for start in range(first - first % WINDOW_MS, last + 1, WINDOW_MS):
        part = clip(series, start, start + WINDOW_MS)
        if part:
            metas.append(put_block(store, work, tenant, part, start, start + WINDOW_MS))
    return metas


def live_blocks(store: ObjectStore, tenant: str, *, unmarked: bool = False) -> list[BlockMeta]:
    """The index's blocks (optionally only those without a deletion mark), by (mint, id)."""
    index = read_bucket_index(store, tenant)
    assert index is not None, "no bucket index"
    metas = [
        m for m in index.blocks.values() if not (unmarked and m.block_id in index.deletion_marks)
    ]
    return sorted(metas, key=lambda m: (m.mint, m.block_id))


def contents(
    store: ObjectStore,
    tenant: str,
    *,
    unmarked: bool = False,
    resolution: Resolution = Resolution.RAW,
) -> dict[LabelKey, list[tuple[int, int]]]:
    """Labels -> [(timestamp, value bits)] over the index's blocks of one resolution."""
    parts: dict[LabelKey, list[tuple[np.ndarray, np.ndarray]]] = {}
    metas = [m for m in live_blocks(store, tenant, unmarked=unmarked) if m.resolution == resolution]
    for meta in sorted(metas, key=lambda m: m.block_id):  # oldest first: newest wins
        reader = BlockReader(store, f"{tenant}/{meta.block_id}", meta=meta)
        ids = range(reader.index.series_count)
        read = reader.read_series(ids, np.iinfo(np.int64).min, np.iinfo(np.int64).max)
        for series, samples in read.items():
            parts.setdefault(tuple(reader.index.labels(series)), []).append(samples)
    out = {}
    for key, found in parts.items():
        ts, values = merge_parts(found, np.iinfo(np.int64).min, np.iinfo(np.int64).max)
        out[key] = as_bits(ts, values)
    return out


def as_bits(ts: np.ndarray, values: np.ndarray) -> list[tuple[int, int]]:
    return list(zip(ts.tolist(), values.view(np.uint64).tolist(), strict=True))


def expected_bits(series: Series) -> dict[LabelKey, list[tuple[int, int]]]:
    return {key: as_bits(ts, values) for key, (ts, values) in series.items()}
