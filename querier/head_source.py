"""Selecting a query's series in the head of a running gateway.

`capture` runs on the event loop, where the head is changed, and takes only references:
compressed batches are immutable, and the uncompressed buffer's filled part never changes
either (appends write past it, growing or emptying the buffer allocates new arrays), so
views of it stay what they were. The matching and decoding run in a worker thread on
that consistent view. Samples a cut has taken out of the head but not yet queued as
blocks are part of the view too.

Native histograms are captured as each series' length of its append-only lists
(gateway/head_histograms.py), so capturing them copies nothing per sample.

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
from blocks.index import LabelValues
from blocks.sample_codec import decode_samples
from gateway.head import FrozenBatch, HeadSnapshot, TenantHead, key_label_pairs
from gateway.head_histograms import HistogramView
from querier.matchers import Matcher
from querier.merge import merge_histogram_parts
from querier.postings import select_series
from querier.selection import HistogramPart, Part, Selection, empty_histograms

# The head ranks above every block: it holds the latest word on a sample.
HEAD_RANK = 1


@dataclass(frozen=True, slots=True)
class HeadView:
    """A consistent view of one tenant's head at one moment."""

    labels: list[bytes]  # series keys, append-only in the head; only the first `series` count
    series: int
    frozen: list[FrozenBatch]
    recent: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # views of uncompressed buffers
    # The head's histograms, then a cut's detached ones: later ones win a timestamp, as
    # the detached ones will when the cut puts them back (TenantHead.restore_histograms).
    histograms: tuple[HistogramView, ...] = ()


def capture(head: TenantHead, in_flight: HeadSnapshot | None) -> HeadView:
    """The view of `head` (plus a cut's detached samples); call where the head changes."""
    frozen = list(head.frozen)
    # Views, not copies: a read of a head whose buffer holds 262,144 samples copied 5 MB
    # on the event loop, whatever the range it asked for.
    recent = [(head.recent.refs.view, head.recent.timestamps.view, head.recent.values.view)]
    if in_flight is not None:
        frozen += in_flight.frozen
        columns = in_flight.recent
        recent.append((columns.refs.view, columns.timestamps.view, columns.values.view))
    histograms = [head.histograms.view()]
    if in_flight is not None:
        histograms.append(in_flight.histograms.view())
    return HeadView(head.labels, head.series_count, frozen, recent, tuple(histograms))


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
                for name, value in key_label_pairs(labels[ref]):
                    self._postings.setdefault(name, {}).setdefault(value, array("I")).append(ref)
            self._indexed = max(self._indexed, count)

    def label_values(self, name: str) -> LabelValues:
        """Every value of a label name, sorted."""
        with self._lock:
            by_value = self._postings.get(name, {})
            values = sorted(by_value)

        def series_of(positions: Sequence[int]) -> list[np.ndarray]:
            with self._lock:  # refs may be appended meanwhile: copied under the lock
                return [np.array(by_value[values[i]], dtype=np.uint32) for i in positions]

        return LabelValues(values, series_of)

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
    wanted = wanted[wanted < view.series]  # sorted, as select_series gives them
    refs_parts, ts_parts, value_parts = [], [], []
    sources = [
        decode_samples(b.data)
        for b in view.frozen
        if b.mint <= maxt and b.maxt >= mint and b.may_hold(wanted)
    ]
    for refs, ts, values in [*sources, *view.recent]:
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
    float_parts = {int(refs[start]): (ts[start:end], values[start:end]) for start, end in runs}
    histogram_parts = _head_histograms(view, wanted, mint, maxt)
    series = sorted(float_parts.keys() | histogram_parts.keys())
    empty = (np.zeros(0, dtype=np.int64), np.zeros(0))
    series_parts = [float_parts.get(ref, empty) for ref in series]
    series_histograms = [histogram_parts.get(ref) or empty_histograms() for ref in series]

    def read(positions: Sequence[int]) -> list[Part]:
        return [series_parts[p] for p in positions]

    def read_histograms(positions: Sequence[int]) -> list[HistogramPart]:
        return [series_histograms[p] for p in positions]

    histogram_count = sum(len(h[0]) for h in histogram_parts.values())
    return Selection(
        labels=[tuple(key_label_pairs(view.labels[ref])) for ref in series],
        samples=len(ts),
        rank=(HEAD_RANK, ""),
        read=read,
        histograms=histogram_count,
        read_histograms=read_histograms if histogram_count else None,
    )


def _head_histograms(
    view: HeadView, wanted: np.ndarray, mint: int, maxt: int
) -> dict[int, HistogramPart]:
    """The histograms in [mint, maxt] of the wanted series that have any, by ref."""
    wanted_refs = set(wanted.tolist())
    refs: set[int] = set()
    for histograms in view.histograms:
        refs |= wanted_refs & histograms.series.keys()
    out = {}
    for ref in sorted(refs):
        part = merge_histogram_parts([h.part(ref, mint, maxt) for h in view.histograms], mint, maxt)
        if len(part[0]):
            out[ref] = part
    return out
