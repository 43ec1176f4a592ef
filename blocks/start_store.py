"""Start (created) timestamps of float samples, kept as change events; layout in
docs/block-format.md#start-timestamps.

A counter's start timestamp changes once per reset, so a series keeps only the samples
whose start differs from the one before: for each, the pair (sample timestamp, start
timestamp), an **event**. A block's events are one optional index section
(blocks/index.py: SECTION_STARTS) of the columns here; this module picks one series'
events and merges events from several places. No bytes: the index packs the columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

# One series' events: sample timestamps (i64, sorted, each once) and start timestamps (i64).
StartPart = tuple[np.ndarray, np.ndarray]


def empty_part() -> StartPart:
    """No event."""
    return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class StartEvents:
    """A block's events: offsets by series, then one row per event in series order."""

    offsets: np.ndarray  # u64, series + 1: series i's events are [off[i], off[i+1])
    ts: np.ndarray  # i64: the sample's timestamp, ascending within a series
    start: np.ndarray  # i64: its start timestamp (never 0: 0 means none and is no event)

    @classmethod
    def from_parts(cls, parts: Sequence[StartPart]) -> StartEvents:
        """The columns of one part per series, in series order."""
        offsets = np.zeros(len(parts) + 1, dtype=np.uint64)
        offsets[1:] = np.cumsum([len(ts) for ts, _ in parts], dtype=np.uint64)
        if not parts:
            return cls(offsets, *empty_part())
        ts = np.concatenate([p[0] for p in parts]).astype(np.int64, copy=False)
        start = np.concatenate([p[1] for p in parts]).astype(np.int64, copy=False)
        return cls(offsets, ts, start)

    @property
    def total(self) -> int:
        """Events in the block."""
        return len(self.ts)

    def count(self, series: int) -> int:
        """Events of one series."""
        return int(self.offsets[series + 1]) - int(self.offsets[series])

    def part(self, series: int, mint: int, maxt: int) -> StartPart:
        """The events of one series with mint <= sample timestamp <= maxt."""
        lo, hi = int(self.offsets[series]), int(self.offsets[series + 1])
        ts, start = self.ts[lo:hi], self.start[lo:hi]
        keep = (ts >= mint) & (ts <= maxt)
        return ts[keep], start[keep]

    def series_with_events(self) -> np.ndarray:
        """Sorted ids of the series that have at least one event."""
        return np.flatnonzero(np.diff(self.offsets.astype(np.int64)) > 0)

    def problems(self, series_count: int) -> list[str]:
        """What does not fit together (checked before any lookup can go out of bounds)."""
        found = []
        rows = len(self.ts)
        if len(self.offsets) != series_count + 1 or int(self.offsets[-1]) != rows:
            found.append("start event offsets do not match start events")
        elif np.any(np.diff(self.offsets.astype(np.int64)) < 0):
            found.append("start event offsets go backwards")
        if len(self.start) != rows:
            found.append("start event columns differ in length")
        return found


def merge_start_parts(parts: Iterable[StartPart], mint: int, maxt: int) -> StartPart:
    """Time-sorted events with mint <= t <= maxt, one per sample timestamp, later parts
    winning a timestamp: the rule samples merge by (querier/merge.py)."""
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return empty_part()
    ts = np.concatenate([p[0] for p in parts])
    start = np.concatenate([p[1] for p in parts])
    # A stable sort keeps equal timestamps in part order; the last of each run wins.
    order = np.argsort(ts, kind="stable")
    ts, start = ts[order], start[order]
    last = np.ones(len(ts), dtype=bool)
    last[:-1] = ts[1:] != ts[:-1]
    last &= (ts >= mint) & (ts <= maxt)
    return ts[last], start[last]
