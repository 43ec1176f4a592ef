"""The head's native histogram samples: per series, timestamps and canonical messages.

Histograms are kept as the serialized `io.prometheus.write.v2.Histogram` bytes the
gateway decoded (gateway/decode.py: canonical, deterministic), per series ref in
append-only lists, so that a reader can capture a consistent view by remembering each
series' length instead of copying (docs/head.md#native-histograms). They are a minority
of samples and already 30-200 bytes each, so the head does not compress them; blocks do.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

# Per histogram besides its bytes: a list slot and an int in each of two lists, a dict
# entry of the timestamp index and the bytes object's header (measured ~150 B).
HISTOGRAM_OVERHEAD_BYTES = 160
# Per series holding histograms: the object, its two lists and its dict.
HISTOGRAM_SERIES_OVERHEAD_BYTES = 400

# One series' histograms: time-sorted timestamps and their messages.
HistogramPart = tuple[np.ndarray, list[bytes]]


def empty_part() -> HistogramPart:
    """No histogram."""
    return np.zeros(0, dtype=np.int64), []


class SeriesHistograms:
    """One series' histograms in arrival order, found by timestamp."""

    __slots__ = ("at", "payloads", "timestamps")

    def __init__(self) -> None:
        self.timestamps: list[int] = []
        self.payloads: list[bytes] = []
        self.at: dict[int, int] = {}

    def get(self, ts: int) -> bytes | None:
        """The message stored at `ts`, if any."""
        i = self.at.get(ts)
        return None if i is None else self.payloads[i]

    def add(self, ts: int, payload: bytes) -> None:
        """Store a histogram at a timestamp this series has none at."""
        self.at[ts] = len(self.timestamps)
        self.timestamps.append(ts)
        self.payloads.append(payload)

    def sorted_part(
        self, count: int | None = None, mint: int | None = None, maxt: int | None = None
    ) -> HistogramPart:
        """The first `count` histograms (all by default) time-sorted, within [mint, maxt]."""
        n = len(self.timestamps) if count is None else count
        ts = np.array(self.timestamps[:n], dtype=np.int64)
        keep = np.ones(n, dtype=bool)
        if mint is not None:
            keep &= ts >= mint
        if maxt is not None:
            keep &= ts <= maxt
        order = np.flatnonzero(keep)[np.argsort(ts[keep], kind="stable")]
        payloads = self.payloads
        return ts[order], [payloads[i] for i in order.tolist()]


@dataclass(frozen=True, slots=True)
class HistogramView:
    """A consistent view of a head's histograms: per ref, the series and its length then."""

    series: dict[int, tuple[SeriesHistograms, int]]

    def part(self, ref: int, mint: int, maxt: int) -> HistogramPart:
        """One series' histograms within [mint, maxt], time-sorted."""
        found = self.series.get(ref)
        if found is None:
            return empty_part()
        return found[0].sorted_part(found[1], mint, maxt)


class HeadHistograms:
    """A tenant's histogram samples by series ref."""

    def __init__(self) -> None:
        self.by_ref: dict[int, SeriesHistograms] = {}
        self.count = 0
        self.payload_bytes = 0
        self.mint: int | None = None
        self.maxt: int | None = None

    def __len__(self) -> int:
        return self.count

    @property
    def nbytes(self) -> int:
        """Estimated memory held."""
        return (
            self.payload_bytes
            + self.count * HISTOGRAM_OVERHEAD_BYTES
            + len(self.by_ref) * HISTOGRAM_SERIES_OVERHEAD_BYTES
        )

    def get(self, ref: int, ts: int) -> bytes | None:
        """The message stored for series `ref` at `ts`, if any."""
        series = self.by_ref.get(ref)
        return None if series is None else series.get(ts)

    def add(self, ref: int, ts: int, payload: bytes) -> None:
        """Store a histogram at a (ref, timestamp) that holds none."""
        series = self.by_ref.get(ref)
        if series is None:
            series = self.by_ref[ref] = SeriesHistograms()
        series.add(ts, payload)
        self.count += 1
        self.payload_bytes += len(payload)
        self.mint = ts if self.mint is None else min(self.mint, ts)
        self.maxt = ts if self.maxt is None else max(self.maxt, ts)

    def add_many(self, refs: np.ndarray, timestamps: np.ndarray, payloads: list[bytes]) -> None:
        """Store histograms; one already stored at its (ref, timestamp) is left as it is."""
        for ref, ts, payload in zip(refs.tolist(), timestamps.tolist(), payloads, strict=True):
            if self.get(ref, ts) is None:
                self.add(ref, ts, payload)

    def view(self) -> HistogramView:
        """What is held now, for a reader in another thread (the lists only grow)."""
        return HistogramView({r: (s, len(s.timestamps)) for r, s in self.by_ref.items()})

    def series(self) -> Iterator[tuple[int, HistogramPart]]:
        """Every series with histograms, by ref order: (ref, its time-sorted histograms)."""
        for ref in sorted(self.by_ref):
            yield ref, self.by_ref[ref].sorted_part()

    def columns(self) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
        """Everything as columns sorted by (ref, timestamp)."""
        refs: list[np.ndarray] = []
        ts: list[np.ndarray] = []
        payloads: list[bytes] = []
        for ref, (times, messages) in self.series():
            refs.append(np.full(len(times), ref, dtype=np.uint32))
            ts.append(times)
            payloads += messages
        if not refs:
            return np.zeros(0, dtype=np.uint32), np.zeros(0, dtype=np.int64), []
        return np.concatenate(refs), np.concatenate(ts), payloads
