"""Downsampling native histograms: which raw histograms a downsampled block keeps.

A histogram cannot be averaged into aggregates as a float can, and `rate`/`increase` of a
counter histogram only need, over any range, its histograms at the range's ends and the
counter resets in between. So a downsampled block keeps, of each series' histograms
(docs/compactor.md#native-histograms):

- the last histogram of every window (the window's end value), and
- around every possible counter reset, both histograms: the one before and the one after.

A pair is a possible reset unless both are counter histograms with the same layout
(schema, zero threshold, custom bounds) and no count, zero count or bucket going down or
vanishing, and the later one does not say "reset" (a stale marker in the pair counts as
a possible reset too). Keeping both sides of a reset means the next coarser level sees
the same pair again, so 5 m -> 1 h keeps what raw -> 1 h would. Gauge histograms keep
the last of each window only. Histograms are copied bit for bit; nothing is computed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from proto.write_v2_pb2 import Histogram


def downsample_histograms(
    timestamps: np.ndarray, payloads: Sequence[bytes], resolution_ms: int
) -> tuple[np.ndarray, list[bytes]]:
    """The histograms (time-sorted, one series) a block of `resolution_ms` keeps."""
    n = len(timestamps)
    if not n:
        return np.zeros(0, dtype=np.int64), []
    ts = np.asarray(timestamps, dtype=np.int64)
    windows = ts // resolution_ms
    keep = np.zeros(n, dtype=bool)
    keep[-1] = True
    keep[:-1] = windows[1:] != windows[:-1]
    messages = [Histogram.FromString(p) for p in payloads]
    for i in range(1, n):
        if possible_reset(messages[i - 1], messages[i]):
            keep[i - 1] = keep[i] = True
    picked = np.flatnonzero(keep)
    return ts[picked], [payloads[i] for i in picked.tolist()]


def possible_reset(prev: Histogram, cur: Histogram) -> bool:
    """Whether a counter may have restarted between two consecutive histograms."""
    gauge = Histogram.RESET_HINT_GAUGE
    if prev.reset_hint == gauge and cur.reset_hint == gauge:
        return False
    if prev.reset_hint == gauge or cur.reset_hint == gauge:
        return True  # a switch between gauge and counter: keep both sides
    if _stale(prev) or _stale(cur) or cur.reset_hint == Histogram.RESET_HINT_YES:
        return True
    if (
        prev.schema != cur.schema
        or _bits(prev.zero_threshold) != _bits(cur.zero_threshold)
        or list(prev.custom_values) != list(cur.custom_values)
    ):
        return True
    if prev.WhichOneof("count") != cur.WhichOneof("count"):
        return True  # integer <-> float: compared as Prometheus would not, keep both
    if _count(cur) < _count(prev) or _zero_count(cur) < _zero_count(prev):
        return True
    return _buckets_went_down(prev, cur)


def _buckets_went_down(prev: Histogram, cur: Histogram) -> bool:
    for side in ("positive", "negative"):
        before = _absolute(prev, side)
        after = _absolute(cur, side)
        for index, count in before.items():
            if count > 0 and after.get(index, 0.0) < count:
                return True
    return False


def _absolute(message: Histogram, side: str) -> dict[int, float]:
    """Bucket index -> absolute count of one side of a histogram."""
    spans = getattr(message, f"{side}_spans")
    deltas = list(getattr(message, f"{side}_deltas"))
    counts = list(getattr(message, f"{side}_counts"))
    values: list[float]
    if deltas:
        running = 0
        values = []
        for delta in deltas:
            running += delta
            values.append(float(running))
    else:
        values = [float(c) for c in counts]
    out: dict[int, float] = {}
    index = 0
    at = 0
    for span in spans:
        index += span.offset
        for _ in range(span.length):
            if at < len(values):
                out[index] = values[at]
            at += 1
            index += 1
    return out


def _count(message: Histogram) -> float:
    kind = message.WhichOneof("count")
    return float(message.count_float) if kind == "count_float" else float(message.count_int)


def _zero_count(message: Histogram) -> float:
    kind = message.WhichOneof("zero_count")
    if kind == "zero_count_float":
        return float(message.zero_count_float)
    return float(message.zero_count_int)


def _stale(message: Histogram) -> bool:
    # Any NaN sum: the staleness marker, or a histogram that cannot be compared.
    return math.isnan(message.sum)


def _bits(value: float) -> int:
    return int(np.float64(value).view(np.uint64))
