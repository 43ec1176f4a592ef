"""Putting one series together from spans of several resolutions (querier/downsampled.py)."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from blocks.aggregates import Aggregate, downsample_raw, raw_counter
from blocks.meta import Resolution
from querier.counter_join import CounterSpan, block_counter_span, join_counter_spans
from querier.downsampled import assemble
from querier.resolution import Reading, Span
from querier.selection import AggregateParts, Part

HOUR_MS = 3_600_000
T0 = 1_699_833_600_000
BLOCK_MS = 6 * HOUR_MS
BLOCKS = 4
SCRAPE_MS = 60_000
RESOLUTIONS = [Resolution.RAW, Resolution.FIVE_MINUTES, Resolution.ONE_HOUR]
PER_BLOCK = BLOCK_MS // SCRAPE_MS
RESET_AT = sorted({i * 120 + 17 for i in range(12)} | {b * PER_BLOCK for b in range(1, BLOCKS)})


def counter_with_resets(resets: list[int], seed: int) -> Part:
    """A day of a large counter: a restart cannot regrow past the value before it
    within hours, so no restart hides between two window ends."""
    count = BLOCKS * BLOCK_MS // SCRAPE_MS
    ts = T0 + 11_000 + np.arange(count, dtype=np.int64) * SCRAPE_MS
    steps = np.round(np.random.default_rng(seed).uniform(0, 10, count), 1)
    values = 1e6 + np.cumsum(steps)
    for at in sorted(resets):
        values[at:] -= values[at] - steps[at]
    return ts, values


def in_block(part: Part, block: int) -> Part:
    ts, values = part
    keep = (ts >= T0 + block * BLOCK_MS) & (ts < T0 + (block + 1) * BLOCK_MS)
    return ts[keep], values[keep]


@settings(max_examples=150, deadline=None)
@given(
    # Restarts, some at a block's first sample.
    resets=st.lists(st.sampled_from(RESET_AT), max_size=4, unique=True),
    # Anywhere, or just after a scrape (where a span holding little else ends).
    cuts=st.lists(
        st.integers(1, BLOCKS * BLOCK_MS - 1)
        | st.integers(0, BLOCKS * PER_BLOCK - 1).map(lambda i: i * SCRAPE_MS + 11_001),
        max_size=6,
        unique=True,
    ),
    choices=st.lists(st.sampled_from(RESOLUTIONS), min_size=12, max_size=12),
    wanted=st.sampled_from(RESOLUTIONS),
    seed=st.integers(0, 1000),
)
# A raw span ending at the day's first scrape, then the 1 h block from there on: the
# increase up to the restart at sample 17 hides between the two spans' edge samples.
@example(
    resets=[17],
    cuts=[11_001],
    choices=[Resolution.RAW, Resolution.ONE_HOUR, *[Resolution.RAW] * 10],
    wanted=Resolution.RAW,
    seed=0,
)
def test_a_counter_joined_from_any_spans_increases_as_the_raw_counter(
    resets: list[int],
    cuts: list[int],
    choices: list[Resolution],
    wanted: Resolution,
    seed: int,
) -> None:
    raw = counter_with_resets(resets, seed)
    # Downsampled places: one per block and resolution, keyed block * 10 + resolution index.
    downsampled: dict[int, AggregateParts] = {}
    for block in range(BLOCKS):
        for r, resolution in enumerate(RESOLUTIONS[1:], start=1):
            aggregates = downsample_raw(*in_block(raw, block), int(resolution))
            downsampled[block * 10 + r] = {
                a: aggregates[a] for a in (Aggregate.COUNTER, Aggregate.LAST)
            }
    # Spans end at block boundaries (as cover makes them) and anywhere else.
    bounds = sorted({0, BLOCKS * BLOCK_MS, *range(0, BLOCKS * BLOCK_MS, BLOCK_MS), *cuts})
    spans = []
    for (lo, hi), resolution in zip(pairwise(bounds), choices, strict=False):
        r = RESOLUTIONS.index(resolution)
        places = (0,) if r == 0 else ((lo // BLOCK_MS) * 10 + r,)
        spans.append(Span(T0 + lo, T0 + hi - 1, resolution, places))

    ts, values = assemble(spans, {0: raw}, downsampled, Reading.COUNTER, wanted)

    assert np.all(np.diff(ts) > 0)
    corrected_ts, corrected = raw_counter(*raw)
    at = np.searchsorted(corrected_ts, ts)
    assert np.array_equal(corrected_ts[at], ts)
    np.testing.assert_allclose(np.diff(values), np.diff(corrected[at]), rtol=1e-12, atol=1e-6)


def test_a_span_holding_only_a_blocks_first_sample_still_joins() -> None:
    # The block's first sample ends no window, so no `last` sample stands beside it: its
    # counter value is its raw value.
    ts = T0 + 1_000 + np.arange(10, dtype=np.int64) * SCRAPE_MS
    values = np.array([50.0, 60, 70, 5, 15, 25, 35, 45, 55, 65])
    aggregates = downsample_raw(ts, values, int(Resolution.FIVE_MINUTES))
    counter, last = aggregates[Aggregate.COUNTER], aggregates[Aggregate.LAST]
    assert counter[0][0] == ts[0]
    assert last[0][0] != ts[0]
    only_first = block_counter_span((counter[0][:1], counter[1][:1]), last, T0)
    assert only_first is not None
    assert only_first.raw.tolist() == [50.0]
    spans = [
        Span(T0, int(ts[0]), Resolution.FIVE_MINUTES, (1,)),
        Span(int(ts[0]) + 1, T0 + HOUR_MS, Resolution.RAW, (0,)),
    ]
    downsampled = {1: {Aggregate.COUNTER: counter, Aggregate.LAST: last}}
    got_ts, got = assemble(spans, {0: (ts, values)}, downsampled, Reading.COUNTER, Resolution.RAW)
    assert got_ts.tolist() == ts.tolist()
    assert got.tolist() == raw_counter(ts, values)[1].tolist()


def test_without_a_shared_sample_spans_join_on_their_edges() -> None:
    # Two blocks' counters with nothing in common: the second restarted (its first value
    # is below the first's last raw value) or carried on.
    first = CounterSpan(np.array([10, 20]), np.array([100.0, 130.0]), np.array([100.0, 30.0]), 0)
    restarted = CounterSpan(np.array([30, 40]), np.array([5.0, 9.0]), np.array([5.0, 9.0]), 0)
    carried = CounterSpan(np.array([30, 40]), np.array([35.0, 39.0]), np.array([35.0, 39.0]), 0)
    assert join_counter_spans([first, restarted])[1].tolist() == [100.0, 130.0, 135.0, 139.0]
    assert join_counter_spans([first, carried])[1].tolist() == [100.0, 130.0, 135.0, 139.0]


def test_a_series_missing_from_a_span_leaves_that_span_empty() -> None:
    ts = T0 + np.arange(4, dtype=np.int64) * SCRAPE_MS
    values = np.array([1.0, 2.0, 3.0, 4.0])
    spans = [
        Span(T0, T0 + HOUR_MS - 1, Resolution.FIVE_MINUTES, (1,)),
        Span(T0 + HOUR_MS, T0 + 2 * HOUR_MS, Resolution.RAW, (0,)),
    ]
    later = (ts + HOUR_MS, values)
    for reading in Reading:
        got_ts, got = assemble(spans, {0: later}, {}, reading, Resolution.RAW)
        assert got_ts.tolist() == later[0].tolist()
        if reading is not Reading.COUNTER:
            assert got.tolist() == values.tolist()
