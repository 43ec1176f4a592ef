"""Cutting head samples into blocks: one block per aligned time window.

Pure of HTTP and of the WAL: given a tenant's samples sorted by (ref, timestamp) and
its series labels (and its histogram samples, the same way), split off what is older
than a boundary and build blocks of it in the upload queue directory (docs/shipping.md).
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
from gateway.head_histograms import HistogramPart
from gateway.validate import decode_labels

# Histogram samples as columns sorted by (ref, timestamp): refs, timestamps, messages.
HistogramColumns = tuple[np.ndarray, np.ndarray, list[bytes]]

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
    histograms: HistogramColumns | None = None,
) -> list[BlockMeta]:
    """Write one block per window the samples (and histograms) touch, under `parent`;
    their metas."""
    metas: list[BlockMeta] = []
    h_refs, h_ts, h_payloads = histograms if histograms is not None else _no_histograms()
    if not len(ts) and not len(h_ts):
        return metas
    windows = ts - ts % duration_ms
    h_windows = h_ts - h_ts % duration_ms
    for start in np.unique(np.concatenate((windows, h_windows))).tolist():
        inside = windows == start
        w_refs, w_ts, w_values = refs[inside], ts[inside], values[inside]
        floats = {int(w_refs[a]): (a, b) for a, b in run_bounds(w_refs)}
        w_hist = _histograms_by_ref(h_refs, h_ts, h_payloads, h_windows == start)
        runs = sorted((decode_labels(labels[ref]), ref) for ref in floats.keys() | w_hist.keys())
        writer = BlockWriter(parent, new_ulid())
        try:
            for series_labels, ref in runs:
                a, b = floats.get(ref, (0, 0))
                writer.add_series(series_labels, w_ts[a:b], w_values[a:b], w_hist.get(ref))
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


def _no_histograms() -> HistogramColumns:
    return np.zeros(0, dtype=np.uint32), np.zeros(0, dtype=np.int64), []


def split_histograms_at(
    columns: HistogramColumns, boundary: int
) -> tuple[HistogramColumns, HistogramColumns]:
    """Histograms before `boundary` (to blocks) and the rest (stay in the head)."""
    refs, ts, payloads = columns
    old = ts < boundary
    flags = old.tolist()
    return (
        (refs[old], ts[old], [p for p, o in zip(payloads, flags, strict=True) if o]),
        (refs[~old], ts[~old], [p for p, o in zip(payloads, flags, strict=True) if not o]),
    )


def _histograms_by_ref(
    refs: np.ndarray, ts: np.ndarray, payloads: list[bytes], inside: np.ndarray
) -> dict[int, HistogramPart]:
    """The histograms selected by `inside`, per series ref (columns sorted by ref, time)."""
    at = np.flatnonzero(inside)
    w_refs, w_ts = refs[at], ts[at]
    out = {}
    for a, b in run_bounds(w_refs):
        out[int(w_refs[a])] = (w_ts[a:b], [payloads[i] for i in at[a:b].tolist()])
    return out
