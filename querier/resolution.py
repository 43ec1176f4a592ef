"""Which resolution and which aggregate a query reads, and which place answers each span.

Pure: hints and time ranges in, choices out; no bucket, no I/O. The rules are in
docs/remote-read.md#downsampled-data: the wanted resolution comes from the query's step
and range hints, the aggregate from its function, and the query's range is then covered
by the wanted resolution first, finer ones next, coarser ones last, so that every
millisecond is answered by one resolution only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from itertools import pairwise

from blocks.aggregates import Aggregate
from blocks.meta import Resolution

# Thanos's rule of thumb: a resolution serves a query when at least five of its samples
# fall in each step (the graph keeps its shape) and in each range window (rate and the
# *_over_time functions have enough samples to work on).
SAMPLES_PER_STEP = 5

# Time ranges are half-open [start, end) in milliseconds, as block metas are.
Range = tuple[int, int]


@dataclass(frozen=True, slots=True)
class QueryHints:
    """What a remote-read query says about its use (Prometheus's ReadHints).

    `step_ms` is the evaluation step (0 for an instant query), `range_ms` the range of
    the range selector (0 for a plain selector), `func` the innermost function or
    aggregation around the selector ("" when there is none or a binary operator is).
    """

    step_ms: int = 0
    range_ms: int = 0
    func: str = ""


class Reading(Enum):
    """What a query reads from a downsampled block, by the aggregates it needs."""

    _value_: tuple[Aggregate, ...]
    COUNTER = (Aggregate.COUNTER, Aggregate.LAST)  # LAST: the raw value where a span ends
    MAX = (Aggregate.MAX,)
    MIN = (Aggregate.MIN,)
    SUM = (Aggregate.SUM,)
    COUNT = (Aggregate.COUNT,)
    LAST = (Aggregate.LAST,)
    AVERAGE = (Aggregate.SUM, Aggregate.COUNT)

    @property
    def aggregates(self) -> tuple[Aggregate, ...]:
        """The aggregate series it reads, in the order it needs them."""
        return self._value_


# Counter functions: the reset-corrected counter keeps their answers.
COUNTER_FUNCTIONS = frozenset({"rate", "increase", "irate"})
FUNCTION_READINGS = {
    "max_over_time": Reading.MAX,
    "min_over_time": Reading.MIN,
    "sum_over_time": Reading.SUM,
    "count_over_time": Reading.COUNT,
    "last_over_time": Reading.LAST,
    # Both count events between neighbouring samples: resets, which the counter
    # aggregate has undone, and changes. Window ends keep the events between windows.
    "resets": Reading.LAST,
    "changes": Reading.LAST,
}
# Functions whose answer depends on how many samples there are: no aggregate returned as
# plain samples can give the raw answer, so they read raw data where it is kept.
SAMPLE_COUNTING_FUNCTIONS = frozenset({"count_over_time", "resets", "changes"})


def reading_for(func: str) -> Reading:
    """The aggregate(s) a query's function reads from downsampled blocks."""
    if func in COUNTER_FUNCTIONS:
        return Reading.COUNTER
    return FUNCTION_READINGS.get(func, Reading.AVERAGE)


def wanted_resolution(hints: QueryHints | None) -> Resolution:
    """The coarsest resolution that still gives SAMPLES_PER_STEP samples in the shorter
    of the query's step and range (whichever is given); raw without hints, for a plain
    instant selector, and for functions that count samples."""
    if hints is None or hints.func in SAMPLE_COUNTING_FUNCTIONS:
        return Resolution.RAW
    given = [length for length in (hints.step_ms, hints.range_ms) if length > 0]
    if not given:
        return Resolution.RAW
    limit = min(given) // SAMPLES_PER_STEP
    return max(r for r in Resolution if r <= limit)


def resolution_order(wanted: Resolution, available: Iterable[Resolution]) -> list[Resolution]:
    """The order resolutions answer in: the wanted one, then finer ones down to raw, then
    coarser ones up (only where retention has deleted everything finer)."""
    present = set(available)
    finer = sorted((r for r in present if r <= wanted), reverse=True)
    coarser = sorted(r for r in present if r > wanted)
    return finer + coarser


@dataclass(frozen=True, slots=True)
class Place:
    """Somewhere samples of one resolution are: a block, the head.

    `ranges` are where it may hold samples (half-open). `preference` ranks overlapping
    downsampled places of one resolution: only the highest answers a given span.
    """

    key: int
    resolution: Resolution
    ranges: tuple[Range, ...]
    preference: tuple[int, int, str] = (0, 0, "")


@dataclass(frozen=True, slots=True)
class Span:
    """Part of a query's range, [start, end] inclusive as a query's, answered by one
    resolution: by every raw place overlapping it (merged), or by one downsampled place."""

    start: int
    end: int
    resolution: Resolution
    places: tuple[int, ...]


def cover(mint: int, maxt: int, places: Sequence[Place], wanted: Resolution) -> list[Span]:
    """Spans answering [mint, maxt] (inclusive), in time order, never overlapping.

    Times no place holds are in no span.
    """
    remaining: list[Range] = [(mint, maxt + 1)]
    spans: list[Span] = []
    for resolution in resolution_order(wanted, (p.resolution for p in places)):
        own = [p for p in places if p.resolution == resolution]
        held = union([r for p in own for r in p.ranges])
        for start, end in intersect(remaining, held):
            if resolution == Resolution.RAW:
                spans.append(_raw_span(start, end, own))
            else:
                spans.extend(_downsampled_spans(start, end, resolution, own))
        remaining = subtract(remaining, held)
    return sorted(spans, key=lambda s: s.start)


def place_spans(spans: Iterable[Span]) -> dict[int, list[tuple[int, int]]]:
    """Per place key, the [start, end] (inclusive) spans it answers for."""
    out: dict[int, list[tuple[int, int]]] = {}
    for span in spans:
        for key in span.places:
            out.setdefault(key, []).append((span.start, span.end))
    return out


def _raw_span(start: int, end: int, places: Sequence[Place]) -> Span:
    keys = tuple(p.key for p in places if any(_overlap(r, (start, end)) for r in p.ranges))
    return Span(start, end - 1, Resolution.RAW, keys)


def _downsampled_spans(
    start: int, end: int, resolution: Resolution, places: Sequence[Place]
) -> list[Span]:
    """[start, end) split where places begin or end, each piece answered by its most
    preferred place: overlapping downsampled blocks cannot be merged sample by sample
    (their counters were corrected from different starts), so one answers."""
    cuts = {start, end}
    for place in places:
        for r in place.ranges:
            cuts.update(t for t in r if start < t < end)
    bounds = sorted(cuts)
    spans: list[Span] = []
    for lo, hi in pairwise(bounds):
        holders = [p for p in places if any(r[0] <= lo and hi <= r[1] for r in p.ranges)]
        if not holders:
            continue
        key = max(holders, key=lambda p: p.preference).key
        if spans and spans[-1].places == (key,) and spans[-1].end == lo - 1:
            spans[-1] = Span(spans[-1].start, hi - 1, resolution, (key,))
        else:
            spans.append(Span(lo, hi - 1, resolution, (key,)))
    return spans


def union(ranges: Iterable[Range]) -> list[Range]:
    """Sorted, disjoint, non-adjacent ranges holding the same milliseconds."""
    out: list[Range] = []
    for start, end in sorted(r for r in ranges if r[0] < r[1]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def intersect(a: Sequence[Range], b: Sequence[Range]) -> list[Range]:
    """Milliseconds in both (each argument sorted and disjoint)."""
    out: list[Range] = []
    i = j = 0
    while i < len(a) and j < len(b):
        start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if start < end:
            out.append((start, end))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def subtract(a: Sequence[Range], b: Sequence[Range]) -> list[Range]:
    """Milliseconds of `a` not in `b` (each sorted and disjoint)."""
    out: list[Range] = []
    for start, end in a:
        for cut_start, cut_end in b:
            if cut_end <= start or cut_start >= end:
                continue
            if cut_start > start:
                out.append((start, cut_start))
            start = max(start, cut_end)
            if start >= end:
                break
        if start < end:
            out.append((start, end))
    return out


def _overlap(a: Range, b: Range) -> bool:
    return a[0] < b[1] and b[0] < a[1]
