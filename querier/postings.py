"""The series that matchers select, by set algebra on postings; docs/remote-read.md#matchers.

Matchers that need the label to have a value narrow the result by intersection; those
that also accept series lacking the label can only remove series, so they are applied
last, by subtracting the series whose value they reject. Each distinct value is tested
once, never each series.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

import numpy as np

from querier.matchers import Matcher, MatchType

NO_SERIES = np.zeros(0, dtype=np.uint32)
# Values tested between two checkpoint calls: well under a second even for the nastiest
# regexes on 2 KiB values (about 6 ms each), a few microseconds for ordinary ones.
CHECKPOINT_VALUES = 64


class PostingsSource(Protocol):
    """What matching needs from an index: a block's `BlockIndex` or the head's postings."""

    @property
    def series_count(self) -> int:
        """Series ids run from 0 to series_count - 1."""
        ...

    def label_values(self, name: str) -> list[tuple[str, np.ndarray]]:
        """Every value of a label with the sorted ids of the series that have it."""
        ...

    def postings(self, name: str, value: str) -> np.ndarray:
        """Sorted ids of the series with label name=value."""
        ...


def select_series(
    source: PostingsSource,
    matchers: Iterable[Matcher],
    *,
    checkpoint: Callable[[], None] | None = None,
) -> np.ndarray:
    """Sorted uint32 ids of the series that every matcher accepts.

    `checkpoint` (a deadline's check, say) is called every few hundred values tested,
    so a regex over a label with very many values can be stopped. The result may share
    memory with the source's postings: treat it as read-only.
    """
    matchers = list(matchers)
    lookup = _Lookup(source, checkpoint or (lambda: None))
    narrowing = sorted(
        (m for m in matchers if not m.matches_empty),
        # Equality is a lookup; an empty result there spares every regex.
        key=lambda m: m.type is not MatchType.EQ,
    )
    removing = [m for m in matchers if m.matches_empty]
    parts = []
    for matcher in narrowing:
        ids = lookup.accepted(matcher)
        if not len(ids):
            return NO_SERIES
        parts.append(ids)
    selected = _intersect(parts) if parts else np.arange(source.series_count, dtype=np.uint32)
    for matcher in removing:
        if not len(selected):
            break
        rejected = lookup.rejected(matcher)
        if len(rejected):
            selected = np.setdiff1d(selected, rejected, assume_unique=True)
    return selected.astype(np.uint32, copy=False)


class _Lookup:
    """Postings by matcher for one selection; each label's values are fetched once."""

    def __init__(self, source: PostingsSource, checkpoint: Callable[[], None]) -> None:
        self.source = source
        self.checkpoint = checkpoint
        self._values: dict[str, list[tuple[str, np.ndarray]]] = {}

    def accepted(self, matcher: Matcher) -> np.ndarray:
        """Series having the matcher's label with a value the matcher accepts."""
        if matcher.type is MatchType.EQ:
            return self.source.postings(matcher.name, matcher.value)
        return self._where(matcher, True)

    def rejected(self, matcher: Matcher) -> np.ndarray:
        """Series having the matcher's label with a value the matcher rejects."""
        if matcher.type is MatchType.NEQ:
            return self.source.postings(matcher.name, matcher.value)
        return self._where(matcher, False)

    def _where(self, matcher: Matcher, accepted: bool) -> np.ndarray:
        if matcher.name not in self._values:
            self._values[matcher.name] = self.source.label_values(matcher.name)
        parts = []
        for i, (value, ids) in enumerate(self._values[matcher.name]):
            if i % CHECKPOINT_VALUES == 0:
                self.checkpoint()
            if matcher.matches_value(value) is accepted:
                parts.append(ids)
        return _union(parts)


def _union(parts: list[np.ndarray]) -> np.ndarray:
    if not parts:
        return NO_SERIES
    if len(parts) == 1:
        return parts[0]
    # Postings of one label's values are disjoint in a valid index; unique() rather
    # than sort() so a corrupt one cannot produce a series twice.
    return np.unique(np.concatenate(parts))


def _intersect(parts: list[np.ndarray]) -> np.ndarray:
    parts = sorted(parts, key=len)
    selected = parts[0]
    for ids in parts[1:]:
        selected = np.intersect1d(selected, ids, assume_unique=True)
        if not len(selected):
            break
    return selected
