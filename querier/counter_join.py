"""One counter series from spans of different resolutions, its resets undone across them.

Each span gives the counter with resets undone inside its place (a downsampled block's
`counter` aggregate, or raw samples through raw_counter), read from a little before the
span (COUNTER_LEAD_IN_MS) so that a join can continue from a sample both sides hold: the
span before a 1 h span ends on an hour's last scrape, which a 5 m or raw span holds too,
so the increase across the join is the raw one even when a restart hides between the
samples either side shows. Only where no such sample is found are two spans joined on
their edge samples (blocks/aggregates.join_counter: a restart when the value drops).
Rules in docs/remote-read.md#downsampled-data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from blocks.aggregates import join_counter, raw_counter
from blocks.meta import Resolution
from querier.selection import Part

# How far before its span a counter is read: two of the coarsest windows, so the last
# window end before the span is in reach wherever the span starts.
COUNTER_LEAD_IN_MS = 2 * int(Resolution.ONE_HOUR)


@dataclass(frozen=True, slots=True)
class CounterSpan:
    """A counter's samples in one span and just before it (the lead-in), each with its
    value with resets undone inside its place and its raw value; `start` indexes the
    first sample in the span (there is at least one)."""

    ts: np.ndarray
    corrected: np.ndarray
    raw: np.ndarray
    start: int


def raw_counter_span(samples: Part, span_start: int) -> CounterSpan | None:
    """The span of raw samples (lead-in included), NaN samples left out; None when the
    span itself holds none."""
    ts, values = samples
    present = ~np.isnan(values)
    ts, values = ts[present], values[present]
    start = int(np.searchsorted(ts, span_start))
    if start == len(ts):
        return None
    _, corrected = raw_counter(ts, values)
    return CounterSpan(ts, corrected, values, start)


def block_counter_span(counter: Part, last: Part, span_start: int) -> CounterSpan | None:
    """The span of a downsampled block's `counter` and `last` (lead-in included); None
    when the span holds no counter sample. `last` gives the raw value at each window end;
    the one counter sample without a `last` beside it is the block's first, stored raw."""
    ts, corrected = counter
    start = int(np.searchsorted(ts, span_start))
    if start == len(ts):
        return None
    last_ts, last_values = last
    raw = corrected.copy()
    if len(last_ts):
        at = np.minimum(np.searchsorted(last_ts, ts), len(last_ts) - 1)
        beside = last_ts[at] == ts
        raw[beside] = last_values[at[beside]]
    return CounterSpan(ts, corrected, raw, start)


def join_counter_spans(spans: Sequence[CounterSpan]) -> Part:
    """The counter over consecutive spans (time-ordered, not overlapping), from the raw
    value at its first sample on, resets undone across every join."""
    out_ts: list[np.ndarray] = []
    out_values: list[np.ndarray] = []
    end_raw = 0.0
    for span in spans:
        if not out_ts:
            s = span.start
            ts, values = span.ts[s:], _shifted(span.corrected[s:], span.corrected[s] - span.raw[s])
        else:
            ts, values = _continued(out_ts, out_values, end_raw, span)
        out_ts.append(ts)
        out_values.append(values)
        end_raw = float(span.raw[-1])
    if not out_ts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    return np.concatenate(out_ts), np.concatenate(out_values)


def _continued(
    out_ts: list[np.ndarray], out_values: list[np.ndarray], end_raw: float, span: CounterSpan
) -> Part:
    """The span's samples carrying on from the output so far."""
    s = span.start
    reached = int(out_ts[-1][-1])
    shared = _latest_shared(out_ts, out_values, span.ts[:s][span.ts[:s] <= reached])
    if shared is not None:
        # Both hold this scrape: the span's own increase from it on is exact.
        at, value = int(np.searchsorted(span.ts, shared[0])), shared[1]
        return span.ts[s:], span.corrected[s:] + (value - float(span.corrected[at]))
    # Join on the edges: the first sample after the output's last, with its raw value.
    j = int(np.searchsorted(span.ts, reached, side="right"))
    values = _shifted(span.corrected[j:], span.corrected[j] - span.raw[j])
    tail = (out_ts[-1][-1:], out_values[-1][-1:])
    joined_ts, joined = join_counter(
        [
            (tail, (tail[0], np.array([end_raw]))),
            ((span.ts[j:], values), (span.ts[-1:], span.raw[-1:])),
        ]
    )
    skip = 1 + (s - j)  # the output's last sample and lead-in samples after it
    return joined_ts[skip:], joined[skip:]


def _latest_shared(
    out_ts: list[np.ndarray], out_values: list[np.ndarray], candidates: np.ndarray
) -> tuple[int, float] | None:
    """The latest of `candidates` (sorted) the output holds, with the output's value."""
    if not len(candidates):
        return None
    for ts, values in zip(reversed(out_ts), reversed(out_values), strict=True):
        common, at, _ = np.intersect1d(ts, candidates, assume_unique=True, return_indices=True)
        if len(common):
            return int(common[-1]), float(values[at[-1]])
        if ts[0] <= candidates[0]:
            return None
    return None


def _shifted(values: np.ndarray, by: float) -> np.ndarray:
    """values - by, untouched when by is 0 (so -0.0 and raw bits stay as they are)."""
    return values - by if by != 0.0 else values
