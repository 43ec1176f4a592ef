"""Downsampling arithmetic: one series' samples to per-window aggregates, and back together.

Spec in docs/block-format.md#downsampled-blocks. Pure numpy over whole series (a block may
hold tens of millions of samples): windows are found once, every aggregate is one
`reduceat` over the window starts, and no Python code runs per sample.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

# The label naming a downsampled series' aggregate; reserved, the gateway refuses it.
AGGREGATE_LABEL = "__strata_aggr__"

# Infinities follow float64 arithmetic (inf + -inf is NaN, a huge sum overflows to inf):
# that is the answer, not an error to warn about. As a decorator it nests and is thread-safe.
_IEEE = np.errstate(over="ignore", invalid="ignore")

Samples = tuple[np.ndarray, np.ndarray]  # (int64 timestamps strictly increasing, float64 values)
Labels = list[tuple[str, str]]  # sorted by name


class Aggregate(StrEnum):
    """The value of the aggregate label; these strings are on disk."""

    COUNT = "count"
    SUM = "sum"
    MIN = "min"
    MAX = "max"
    LAST = "last"
    COUNTER = "counter"


@dataclass(frozen=True, slots=True)
class Aggregates:
    """One series' six aggregates at one resolution (each possibly empty)."""

    series: dict[Aggregate, Samples]  # always all six keys

    def __post_init__(self) -> None:
        missing = set(Aggregate) - self.series.keys()
        if missing:
            raise ValueError(f"aggregates missing: {sorted(missing)}")

    def __getitem__(self, aggregate: Aggregate) -> Samples:
        return self.series[aggregate]

    @property
    def empty(self) -> bool:
        """No samples in any aggregate."""
        return all(len(ts) == 0 for ts, _ in self.series.values())


def with_aggregate(labels: Labels, aggregate: Aggregate) -> Labels:
    """The label set of one aggregate of a series: the aggregate label at its sorted place."""
    names = [name for name, _ in labels]
    at = bisect.bisect_left(names, AGGREGATE_LABEL)
    if at < len(names) and names[at] == AGGREGATE_LABEL:
        raise ValueError(f"labels already name an aggregate: {labels!r}")
    return [*labels[:at], (AGGREGATE_LABEL, aggregate.value), *labels[at:]]


def split_aggregate(labels: Sequence[tuple[str, str]]) -> tuple[Labels, Aggregate | None]:
    """Inverse of with_aggregate: the series' own labels, and its aggregate (None if absent).

    ValueError when the aggregate label has a value that names no aggregate.
    """
    rest: Labels = []
    aggregate: Aggregate | None = None
    for name, value in labels:
        if name == AGGREGATE_LABEL:
            aggregate = Aggregate(value)
        else:
            rest.append((name, value))
    return rest, aggregate


@_IEEE
def downsample_raw(timestamps: np.ndarray, values: np.ndarray, resolution_ms: int) -> Aggregates:
    """Raw samples of one series (time-sorted, unique timestamps) to aggregates per window.

    Sums are float64 sums (rounded, in no fixed order); every other value is exact.
    """
    ts, v = _present(timestamps, values)
    starts = _window_starts(ts, resolution_ms)
    ends = _window_ends(starts, len(ts))
    counter_ts, counter_values = raw_counter(ts, v)
    window_ts = ts[ends]  # shared by the first five: one sample per window
    return Aggregates(
        {
            Aggregate.COUNT: (window_ts, (ends - starts + 1).astype(np.float64)),
            Aggregate.SUM: (window_ts, _window_sum(v, starts)),
            Aggregate.MIN: (window_ts, _window_min(v, starts)),
            Aggregate.MAX: (window_ts, _window_max(v, starts)),
            Aggregate.LAST: (window_ts, v[ends]),
            Aggregate.COUNTER: _counter_windows(counter_ts, counter_values, starts, ends),
        }
    )


def downsample_aggregates(source: Aggregates, resolution_ms: int) -> Aggregates:
    """Coarser windows from finer aggregates (5 m to 1 h): equal to downsample_raw at once.

    `resolution_ms` must be a multiple of the source's resolution, so that every source
    window lies inside one coarser window. Each aggregate is made from its own kind only
    (downsample_aggregate), so sums are float64 sums of the finer sums and may differ
    from summing the raw values in their last bits.
    """
    return Aggregates({a: downsample_aggregate(a, source[a], resolution_ms) for a in Aggregate})


@_IEEE
def downsample_aggregate(aggregate: Aggregate, samples: Samples, resolution_ms: int) -> Samples:
    """Coarser windows of one aggregate's series, made from that series alone."""
    ts, v = _increasing(*samples)
    starts = _window_starts(ts, resolution_ms)
    ends = _window_ends(starts, len(ts))
    if aggregate is Aggregate.COUNTER:
        return _counter_windows(ts, v, starts, ends)
    if aggregate is Aggregate.MIN:
        return ts[ends], _window_min(v, starts)
    if aggregate is Aggregate.MAX:
        return ts[ends], _window_max(v, starts)
    if aggregate is Aggregate.LAST:
        return ts[ends], v[ends]
    return ts[ends], _window_sum(v, starts)  # counts and sums add


@_IEEE
def raw_counter(timestamps: np.ndarray, values: np.ndarray) -> Samples:
    """The non-NaN samples of a counter with its resets undone, Prometheus's way.

    A value below the one before it means the counter restarted: it and every later
    value are raised by the value before the drop (corrections accumulate in time
    order). Values before the first reset come back bit for bit; the arrays may be the
    ones passed in when nothing needs changing.
    """
    ts, v = _present(timestamps, values)
    restarts = np.flatnonzero(v[1:] < v[:-1]) + 1
    if len(restarts) == 0:
        return ts, v
    # Resets are rare: the correction is a step function, one step per restart, each
    # step the running total of the values before the drops (a left fold, as a loop adds).
    corrections = np.cumsum(v[restarts - 1])
    steps = np.diff(np.append(restarts, len(v)))
    out = v.copy()
    out[restarts[0] :] += np.repeat(corrections, steps)
    return ts, out


@_IEEE
def join_counter(pieces: Sequence[tuple[Samples, Samples]]) -> Samples:
    """One counter series from consecutive spans of a series, resets undone across joins.

    Each piece is (counter samples, last samples) of one span: a downsampled block's
    `counter` and `last`, or for raw samples (raw_counter(ts, v), the non-NaN samples).
    The counter restarted between two pieces when the next piece's first counter value
    (its first raw value) is below the previous piece's last `last` value (its last raw
    value). The output starts at the first piece's first counter value; empty pieces are
    skipped.
    """
    out: list[Samples] = []
    offset = 0.0
    previous: tuple[int, float, float] | None = None  # last ts, last counter, last raw value
    for (counter_ts, counter_values), (last_ts, last_values) in pieces:
        counter_ts, counter_values = _checked(counter_ts, counter_values)
        if len(counter_ts) == 0:
            continue
        if len(last_ts) == 0:
            raise ValueError("a counter piece without last samples")
        if previous is not None:
            end_ts, end_counter, end_raw = previous
            if counter_ts[0] <= end_ts:
                raise ValueError("counter pieces overlap or are out of time order")
            if counter_values[0] < end_raw:
                # Restart: raise by the whole corrected value the counter had reached.
                offset += end_counter
            else:
                # No restart: carry on the corrections made inside the previous piece.
                offset += end_counter - end_raw
        previous = (int(counter_ts[-1]), float(counter_values[-1]), float(last_values[-1]))
        # Adding 0.0 would turn -0.0 into 0.0: unraised values stay as they were.
        out.append((counter_ts, counter_values + offset if offset != 0.0 else counter_values))
    if not out:
        return _empty()
    return np.concatenate([ts for ts, _ in out]), np.concatenate([v for _, v in out])


def concat_aggregates(pieces: Sequence[Aggregates]) -> Aggregates:
    """Consecutive spans of one series (blocks being merged) as one Aggregates."""
    out: dict[Aggregate, Samples] = {}
    for aggregate in Aggregate:
        if aggregate is Aggregate.COUNTER:
            joined = [(piece[Aggregate.COUNTER], piece[Aggregate.LAST]) for piece in pieces]
            out[aggregate] = join_counter(joined)
            continue
        parts = [piece[aggregate] for piece in pieces]
        ts = np.concatenate([_empty()[0], *(t for t, _ in parts)])
        values = np.concatenate([_empty()[1], *(v for _, v in parts)])
        out[aggregate] = _increasing(ts, values)
    return Aggregates(out)


def _empty() -> Samples:
    return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)


def _checked(timestamps: np.ndarray, values: np.ndarray) -> Samples:
    """Timestamps as int64 and values as float64 (no copy when they are already)."""
    ts = np.asarray(timestamps, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    if ts.shape != v.shape or ts.ndim != 1:
        raise ValueError(f"timestamps {ts.shape} and values {v.shape} differ in shape")
    return ts, v


def _increasing(timestamps: np.ndarray, values: np.ndarray) -> Samples:
    """_checked, and ValueError unless the timestamps strictly increase (windows are runs)."""
    ts, v = _checked(timestamps, values)
    if len(ts) > 1 and not np.all(ts[1:] > ts[:-1]):
        raise ValueError("timestamps are not strictly increasing (overlapping pieces?)")
    return ts, v


def _present(timestamps: np.ndarray, values: np.ndarray) -> Samples:
    """The samples that count: NaN values (staleness markers included) left out."""
    ts, v = _increasing(timestamps, values)
    keep = ~np.isnan(v)
    if keep.all():
        return ts, v
    return ts[keep], v[keep]


def _window_starts(ts: np.ndarray, resolution_ms: int) -> np.ndarray:
    """Index of each window's first sample; windows [k·R, (k+1)·R), floored before 1970."""
    if resolution_ms <= 0:
        raise ValueError(f"resolution must be positive, not {resolution_ms}")
    if len(ts) == 0:
        return np.empty(0, dtype=np.int64)
    window = np.floor_divide(ts, resolution_ms)
    return np.concatenate(([0], np.flatnonzero(window[1:] != window[:-1]) + 1)).astype(np.int64)


def _window_ends(starts: np.ndarray, n: int) -> np.ndarray:
    """Index of each window's last sample."""
    if len(starts) == 0:
        return np.empty(0, dtype=np.int64)
    return np.append(starts[1:], n).astype(np.int64) - 1


def _window_sum(v: np.ndarray, starts: np.ndarray) -> np.ndarray:
    if len(starts) == 0:
        return np.empty(0, dtype=np.float64)
    return np.add.reduceat(v, starts)


def _window_min(v: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Minimum per window, -0.0 counted below +0.0 so that the result is one sample's bits
    whatever order the values are compared in (5 m then 1 h gives what 1 h gives)."""
    if len(starts) == 0:
        return np.empty(0, dtype=np.float64)
    low = np.minimum.reduceat(v, starts)
    _settle_zeros(low, v, starts, prefer_negative=True)
    return low


def _window_max(v: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Maximum per window, +0.0 counted above -0.0 (see _window_min)."""
    if len(starts) == 0:
        return np.empty(0, dtype=np.float64)
    high = np.maximum.reduceat(v, starts)
    _settle_zeros(high, v, starts, prefer_negative=False)
    return high


def _settle_zeros(
    extremes: np.ndarray, v: np.ndarray, starts: np.ndarray, *, prefer_negative: bool
) -> None:
    """Give zero extremes the sign the total order picks: numpy's choice between ±0 is not
    specified."""
    zero = extremes == 0.0
    if not zero.any():
        return
    is_zero = v == 0.0
    wanted = is_zero & (np.signbit(v) if prefer_negative else ~np.signbit(v))
    has_wanted = np.logical_or.reduceat(wanted, starts)
    sign = -1.0 if prefer_negative else 1.0
    extremes[zero] = np.where(has_wanted[zero], sign * 0.0, -sign * 0.0)


def _counter_windows(
    ts: np.ndarray, counter: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> Samples:
    """The counter at each window's last sample, after the series' first sample unless
    that one is its window's last already (so the first window's increase is kept)."""
    if len(ends) == 0:
        return _empty()
    if ends[0] == 0:
        return ts[ends], counter[ends]
    chosen = np.concatenate(([0], ends))
    return ts[chosen], counter[chosen]
