"""The series that matchers select, by set algebra on postings; docs/remote-read.md#matchers.

Matchers that need the label to have a value narrow the result by intersection; those
that also accept series lacking the label can only remove series, so they are applied
last, by subtracting the series whose value they reject. Each distinct value is tested
once, never each series.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from typing import Protocol

import numpy as np

from blocks.index import LabelValues
from querier.matchers import Matcher, MatchType

NO_SERIES = np.zeros(0, dtype=np.uint32)
# Values tested between two checkpoint calls: well under a second even for the nastiest
# regexes on 2 KiB values (about 6 ms each), a few microseconds for ordinary ones.
CHECKPOINT_VALUES = 64
# A regex of at most this many literal alternatives (`a|b|c`, what Grafana sends for a
# multi-value variable) is answered by looking each up rather than testing every value.
LOOKUP_LITERALS = 256


class PostingsSource(Protocol):
    """What matching needs from an index: a block's `BlockIndex` or the head's postings."""

    @property
    def series_count(self) -> int:
        """Series ids run from 0 to series_count - 1."""
        ...

    def label_values(self, name: str) -> LabelValues:
        """Every value of a label, sorted, and the series of each."""
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
        self._values: dict[str, LabelValues] = {}

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
        # Wanted: the values the pattern matches (accepted by =~, rejected by !~) or the
        # others. Values the pattern matches are a known few (`a|b|c`: looked up, as
        # Prometheus does) or share its literal prefix (a run of the sorted values).
        matched = accepted is not matcher.negative
        literals = matcher.pattern_values
        if matched and literals is not None and len(literals) <= LOOKUP_LITERALS:
            return _union([self.source.postings(matcher.name, v) for v in sorted(literals)])
        if matcher.name not in self._values:
            self._values[matcher.name] = self.source.label_values(matcher.name)
        found = self._values[matcher.name]
        values = found.values
        lo, hi = 0, len(values)
        prefix = matcher.pattern_prefix
        if matched and prefix:
            lo = bisect.bisect_left(values, prefix)
            hi = lo
            while hi < len(values) and values[hi].startswith(prefix):
                hi += 1
        positions = []
        for i in range(lo, hi):
            if (i - lo) % CHECKPOINT_VALUES == 0:
                self.checkpoint()
            if matcher.matches_value(values[i]) is accepted:
                positions.append(i)
        return _union(found.series_of(positions))


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
        selected = _sorted_intersection(selected, ids)
        if not len(selected):
            break
    return selected


def _sorted_intersection(small: np.ndarray, large: np.ndarray) -> np.ndarray:
    """The ids in both sorted, duplicate-free arrays, `small` no longer than `large`.

    Each of the few looked up in the many by binary search: intersect1d would sort
    both together, 10 ms for a metric name's 200,000 series against one host's 100.
    """
    if len(small) * 8 > len(large):
        return np.intersect1d(small, large, assume_unique=True)
    at = np.searchsorted(large, small)
    found = at < len(large)
    found[found] = large[at[found]] == small[found]
    return small[found]
