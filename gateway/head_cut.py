"""Cutting head samples into blocks: one block per aligned time window.

Pure of HTTP and of the WAL: given a tenant's samples sorted by (ref, timestamp) and
its series labels, split off what is older than a boundary and build blocks of it in
the upload queue directory (docs/shipping.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from blocks.columns import run_bounds
from blocks.meta import BlockMeta
from blocks.ulid import new_ulid
from blocks.writer import BlockWriter
from gateway.validate import decode_labels

# Blocks cut from the head cover aligned windows of this length, as Prometheus's do.
BLOCK_DURATION_MS = 2 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class Split:
    """Samples sorted by (ref, timestamp), split at a boundary time."""

    old: tuple[np.ndarray, np.ndarray, np.ndarray]
    keep: tuple[np.ndarray, np.ndarray, np.ndarray]


def split_at(refs: np.ndarray, ts: np.ndarray, values: np.ndarray, boundary: int) -> Split:
    """Samples before `boundary` go to blocks; the rest stay in the head."""
    old = ts < boundary
    return Split((refs[old], ts[old], values[old]), (refs[~old], ts[~old], values[~old]))


def window_start(ts: int, duration_ms: int = BLOCK_DURATION_MS) -> int:
    """Start of the aligned window holding `ts` (floor, also for negative times)."""
    return ts - ts % duration_ms


def build_blocks(
    parent: Path,
    tenant: str,
    labels: Sequence[bytes],
    refs: np.ndarray,
    ts: np.ndarray,
    values: np.ndarray,
    *,
    duration_ms: int = BLOCK_DURATION_MS,
    external_labels: dict[str, str] | None = None,
) -> list[BlockMeta]:
    """Write one block per window the samples touch, under `parent`; their metas."""
    metas: list[BlockMeta] = []
    if not len(ts):
        return metas
    windows = ts - ts % duration_ms
    for start in np.unique(windows).tolist():
        inside = windows == start
        w_refs, w_ts, w_values = refs[inside], ts[inside], values[inside]
        runs = sorted((decode_labels(labels[int(w_refs[a])]), a, b) for a, b in run_bounds(w_refs))
        writer = BlockWriter(parent, new_ulid())
        try:
            for series_labels, a, b in runs:
                writer.add_series(series_labels, w_ts[a:b], w_values[a:b])
            metas.append(
                writer.finish(
                    tenant=tenant,
                    mint=int(start),
                    maxt=int(start) + duration_ms,
                    external_labels=external_labels,
                )
            )
        except BaseException:
            writer.abort()
            raise
    return metas
