"""The head's start (created) timestamps of float samples, kept as change events.

A start timestamp changes once per counter reset, so the head keeps, per series, only
the samples whose start differs from the last one the series kept: the pair (sample
timestamp, start timestamp), an event (blocks/start_store.py). A sample without a start
(0) records nothing. Columns, never a Python object per event; docs/head.md#start-timestamps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gateway.head_columns import GrowableArray

NO_START = 0
# The sample timestamp of a WAL entry that is no event but a series' last start alone
# (checkpoints write them, gateway/shipper.py): no sample is ever stored at this time.
LAST_START_ONLY = int(np.iinfo(np.int64).min)


@dataclass(frozen=True, slots=True)
class StartColumns:
    """Events as columns: series ref (u32), sample timestamp (i64), start timestamp (i64)."""

    refs: np.ndarray
    ts: np.ndarray
    starts: np.ndarray

    @classmethod
    def empty(cls) -> StartColumns:
        """No event."""
        return cls(
            np.zeros(0, dtype=np.uint32), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        )

    def __len__(self) -> int:
        return len(self.refs)

    def select(self, mask: np.ndarray) -> StartColumns:
        """The events where `mask` is set."""
        return StartColumns(self.refs[mask], self.ts[mask], self.starts[mask])

    def __add__(self, other: StartColumns) -> StartColumns:
        return StartColumns(
            np.concatenate((self.refs, other.refs)),
            np.concatenate((self.ts, other.ts)),
            np.concatenate((self.starts, other.starts)),
        )

    def sorted(self) -> StartColumns:
        """Sorted by (ref, timestamp), one per (ref, timestamp): the first to arrive stays,
        as the first sample stored at a timestamp does."""
        order = np.lexsort((self.ts, self.refs))  # stable: arrival order within a pair
        refs, ts = self.refs[order], self.ts[order]
        first = np.ones(len(refs), dtype=bool)
        first[1:] = (refs[1:] != refs[:-1]) | (ts[1:] != ts[:-1])
        return StartColumns(refs[first], ts[first], self.starts[order][first])


def change_events(
    refs: np.ndarray, ts: np.ndarray, starts: np.ndarray, last_start: np.ndarray
) -> np.ndarray:
    """Which samples start an event: those with a start other than the one before it of
    their series (the series' `last_start` for its first). Samples sorted by (ref, time)."""
    has = starts != NO_START
    r, s = refs[has], starts[has]
    previous = np.empty(len(s), dtype=np.int64)
    if len(s):
        previous[1:] = s[:-1]
        first = np.ones(len(r), dtype=bool)
        first[1:] = r[1:] != r[:-1]
        previous[first] = last_start[r[first]]
    changed = np.zeros(len(refs), dtype=bool)
    changed[has] = s != previous
    return changed


class HeadStarts:
    """A tenant's start-timestamp events, and each series' last start kept."""

    def __init__(self) -> None:
        self.last_start = GrowableArray(np.int64, NO_START)
        self.refs = GrowableArray(np.uint32)
        self.ts = GrowableArray(np.int64)
        self.starts = GrowableArray(np.int64)

    def __len__(self) -> int:
        return self.refs.size

    @property
    def nbytes(self) -> int:
        """Bytes held, including spare capacity."""
        return self.last_start.nbytes + self.refs.nbytes + self.ts.nbytes + self.starts.nbytes

    def record(self, refs: np.ndarray, ts: np.ndarray, starts: np.ndarray) -> StartColumns:
        """Keep the events that new samples (sorted by ref, time) make; returns them."""
        if not len(refs):
            return StartColumns.empty()
        self.last_start.grow_to(int(refs.max()) + 1)
        changed = change_events(refs, ts, starts, self.last_start.view)
        events = StartColumns(refs[changed], ts[changed], starts[changed])
        self._append(events)
        self._set_last(events)
        return events

    def at(self, refs: np.ndarray, ts: np.ndarray) -> StartColumns:
        """The events held at these (ref, sample timestamp) pairs: a resent sample's."""
        if not len(refs) or not len(self):
            return StartColumns.empty()
        held = self.columns()
        wanted = set(zip(refs.tolist(), ts.tolist(), strict=True))
        pairs = zip(held.refs.tolist(), held.ts.tolist(), strict=True)
        return held.select(np.array([p in wanted for p in pairs], dtype=bool))

    def columns(self) -> StartColumns:
        """Every event held, sorted by (ref, timestamp), one per pair (copies)."""
        n = min(self.refs.size, self.ts.size, self.starts.size)  # a reader in another thread
        return StartColumns(self.refs.view[:n], self.ts.view[:n], self.starts.view[:n]).sorted()

    def take(self) -> StartColumns:
        """Take every event out (a cut), sorted; each series' last start stays."""
        events = self.columns()
        for column in (self.refs, self.ts, self.starts):
            column.clear()
        return events

    def restore(self, events: StartColumns) -> None:
        """Put back events a cut took out and did not cut; last starts stay as they are
        (they already account for these events and anything newer)."""
        self._append(events)

    def replay(self, events: StartColumns) -> None:
        """Apply a WAL record's entries in order: events are kept, and each series' last
        start becomes its last entry's (LAST_START_ONLY entries set only that)."""
        if not len(events):
            return
        self._set_last(events)
        self._append(events.select(events.ts != LAST_START_ONLY))

    def last_starts(self) -> StartColumns:
        """Every series' last start as LAST_START_ONLY entries (for a checkpoint)."""
        refs = np.flatnonzero(self.last_start.view != NO_START).astype(np.uint32)
        return StartColumns(
            refs, np.full(len(refs), LAST_START_ONLY, dtype=np.int64), self.last_start.view[refs]
        )

    def _set_last(self, entries: StartColumns) -> None:
        """Each series' last start becomes that of its last entry here."""
        if not len(entries):
            return
        self.last_start.grow_to(int(entries.refs.max()) + 1)
        # numpy leaves the winner of a repeated index in a fancy assignment unspecified.
        refs, first_from_end = np.unique(entries.refs[::-1], return_index=True)
        self.last_start.view[refs] = entries.starts[len(entries) - 1 - first_from_end]

    def _append(self, events: StartColumns) -> None:
        self.refs.extend(events.refs)
        self.ts.extend(events.ts)
        self.starts.extend(events.starts)
