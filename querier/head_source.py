"""Selecting a query's series in the head of a running gateway.

`capture` runs on the event loop, where the head is changed, and takes only references
(compressed batches are immutable) and a copy of the small uncompressed buffer; the
matching and decoding run in a worker thread on that consistent view. Samples a cut has
taken out of the head but not yet queued as blocks are part of the view too.

Matching uses postings kept beside the head (label name -> value -> series refs),
extended as series are added, so a query does not decode every series' labels.
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from blocks.columns import run_bounds
from blocks.sample_codec import decode_samples
from gateway.head import FrozenBatch, HeadSnapshot, TenantHead
from gateway.validate import decode_labels
from querier.matchers import Matcher
from querier.postings import select_series
from querier.selection import Part, Selection

# The head ranks above every block: it holds the latest word on a sample.
HEAD_RANK = 1


@dataclass(frozen=True, slots=True)
class HeadView:
    """A consistent view of one tenant's head at one moment."""

    labels: list[bytes]  # append-only in the head; only the first `series` count
    series: int
    frozen: list[FrozenBatch]
    recent: tuple[np.ndarray, np.ndarray, np.ndarray]


def capture(head: TenantHead, in_flight: HeadSnapshot | None) -> HeadView:
    """The view of `head` (plus a cut's detached samples); call where the head changes."""
    frozen = list(head.frozen)
    parts = [(head.recent.refs.view, head.recent.timestamps.view, head.recent.values.view)]
    if in_flight is not None:
        frozen += in_flight.frozen
        recent = in_flight.recent
        parts.append((recent.refs.view, recent.timestamps.view, recent.values.view))
    refs, ts, values = (np.concatenate([p[i] for p in parts]) for i in range(3))
    return HeadView(head.labels, head.series_count, frozen, (refs, ts, values))


class HeadPostings:
    """Label postings of a head's series, extended on demand; safe across threads."""

    def __init__(self) -> None:
        self._postings: dict[str, dict[str, array[int]]] = {}
        self._indexed = 0
        self._lock = threading.Lock()

    @property
    def series_count(self) -> int:
        """Series indexed so far."""
        return self._indexed

    def update(self, labels: list[bytes], count: int) -> None:
        """Index the series with refs below `count` not indexed yet."""
        with self._lock:
            for ref in range(self._indexed, count):
                for name, value in decode_labels(labels[ref]):
                    self._postings.setdefault(name, {}).setdefault(value, array("I")).append(ref)
            self._indexed = max(self._indexed, count)

    def label_values(self, name: str) -> list[tuple[str, np.ndarray]]:
        """Every value of a label name with the refs of the series that have it."""
        with self._lock:
            values = self._postings.get(name, {})
            return [(v, np.array(values[v], dtype=np.uint32)) for v in sorted(values)]

    def postings(self, name: str, value: str) -> np.ndarray:
        """Refs of the series with label name=value."""
        with self._lock:
            refs = self._postings.get(name, {}).get(value)
            return np.array(refs if refs is not None else [], dtype=np.uint32)


def select_head(
    view: HeadView,
    postings: HeadPostings,
    matchers: Sequence[Matcher],
    mint: int,
    maxt: int,
    *,
    checkpoint: Callable[[], None],
) -> Selection:
    """The head's series matching `matchers` with samples in [mint, maxt]."""
    postings.update(view.labels, view.series)
    wanted = select_series(postings, matchers, checkpoint=checkpoint)
    wanted = wanted[wanted < view.series]
    refs_parts, ts_parts, value_parts = [], [], []
    sources = [decode_samples(b.data) for b in view.frozen if b.mint <= maxt and b.maxt >= mint]
    for refs, ts, values in [*sources, view.recent]:
        keep = (ts >= mint) & (ts <= maxt) & np.isin(refs, wanted)
        refs_parts.append(refs[keep])
        ts_parts.append(ts[keep])
        value_parts.append(values[keep])
    refs = np.concatenate(refs_parts) if refs_parts else np.zeros(0, dtype=np.uint32)
    ts = np.concatenate(ts_parts) if ts_parts else np.zeros(0, dtype=np.int64)
    values = np.concatenate(value_parts) if value_parts else np.zeros(0)
    order = np.lexsort((ts, refs))
    refs, ts, values = refs[order], ts[order], values[order]
    runs = run_bounds(refs)
    series_parts = [(ts[start:end], values[start:end]) for start, end in runs]

    def read(positions: Sequence[int]) -> list[Part]:
        return [series_parts[p] for p in positions]

    return Selection(
        labels=[tuple(decode_labels(view.labels[int(refs[start])])) for start, _ in runs],
        samples=len(ts),
        rank=(HEAD_RANK, ""),
        read=read,
    )
