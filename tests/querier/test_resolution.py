"""Which resolution and aggregate a query reads, and which place answers each span."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocks.aggregates import Aggregate
from blocks.meta import Resolution
from querier.resolution import (
    Place,
    QueryHints,
    Reading,
    Span,
    cover,
    intersect,
    place_spans,
    reading_for,
    resolution_order,
    subtract,
    union,
    wanted_resolution,
)

RAW, FIVE, HOUR = Resolution.RAW, Resolution.FIVE_MINUTES, Resolution.ONE_HOUR
M = 60_000  # a minute
H = 60 * M
D = 24 * H


@pytest.mark.parametrize(
    ("hints", "wanted"),
    [
        (None, RAW),
        (QueryHints(), RAW),  # a plain instant selector
        (QueryHints(step_ms=15_000), RAW),
        (QueryHints(step_ms=25 * M - 1), RAW),  # five samples a step need 25 m for 5 m
        (QueryHints(step_ms=25 * M), FIVE),
        (QueryHints(step_ms=5 * H - 1), FIVE),
        (QueryHints(step_ms=5 * H), HOUR),
        (QueryHints(step_ms=30 * D), HOUR),
        (QueryHints(range_ms=30 * D, func="rate"), HOUR),  # an instant query over a month
        (QueryHints(range_ms=2 * H, func="rate"), FIVE),
        # The shorter of step and range decides: five samples in every window of
        # rate(x[5m]) even at a one-day step...
        (QueryHints(step_ms=D, range_ms=5 * M, func="rate"), RAW),
        # ...and in every step of rate(x[1d]) graphed at one-minute steps.
        (QueryHints(step_ms=M, range_ms=D, func="rate"), RAW),
        (QueryHints(step_ms=H, range_ms=H + 15_000, func="rate"), FIVE),  # $__rate_interval
        (QueryHints(step_ms=6 * H, range_ms=6 * H, func="max_over_time"), HOUR),
        # Functions that count samples read raw where raw is kept, whatever the step.
        (QueryHints(step_ms=D, range_ms=D, func="count_over_time"), RAW),
        (QueryHints(step_ms=D, range_ms=D, func="resets"), RAW),
        (QueryHints(step_ms=D, range_ms=D, func="changes"), RAW),
    ],
)
def test_wanted_resolution_gives_five_samples_a_step_and_a_window(
    hints: QueryHints | None, wanted: Resolution
) -> None:
    assert wanted_resolution(hints) == wanted


@pytest.mark.parametrize(
    ("func", "reading", "aggregates"),
    [
        ("rate", Reading.COUNTER, (Aggregate.COUNTER, Aggregate.LAST)),
        ("increase", Reading.COUNTER, (Aggregate.COUNTER, Aggregate.LAST)),
        ("irate", Reading.COUNTER, (Aggregate.COUNTER, Aggregate.LAST)),
        ("max_over_time", Reading.MAX, (Aggregate.MAX,)),
        ("min_over_time", Reading.MIN, (Aggregate.MIN,)),
        ("count_over_time", Reading.COUNT, (Aggregate.COUNT,)),
        ("sum_over_time", Reading.SUM, (Aggregate.SUM,)),
        ("last_over_time", Reading.LAST, (Aggregate.LAST,)),
        ("resets", Reading.LAST, (Aggregate.LAST,)),
        ("changes", Reading.LAST, (Aggregate.LAST,)),
        ("", Reading.AVERAGE, (Aggregate.SUM, Aggregate.COUNT)),
        ("avg_over_time", Reading.AVERAGE, (Aggregate.SUM, Aggregate.COUNT)),
        ("delta", Reading.AVERAGE, (Aggregate.SUM, Aggregate.COUNT)),  # gauges
        ("deriv", Reading.AVERAGE, (Aggregate.SUM, Aggregate.COUNT)),
        ("sum", Reading.AVERAGE, (Aggregate.SUM, Aggregate.COUNT)),  # across series
        ("max", Reading.AVERAGE, (Aggregate.SUM, Aggregate.COUNT)),
        ("quantile_over_time", Reading.AVERAGE, (Aggregate.SUM, Aggregate.COUNT)),
    ],
)
def test_the_function_picks_the_aggregates(
    func: str, reading: Reading, aggregates: tuple[Aggregate, ...]
) -> None:
    assert reading_for(func) is reading
    assert reading.aggregates == aggregates


@pytest.mark.parametrize(
    ("wanted", "order"),
    [
        (RAW, [RAW, FIVE, HOUR]),
        (FIVE, [FIVE, RAW, HOUR]),
        (HOUR, [HOUR, FIVE, RAW]),
    ],
)
def test_finer_resolutions_fill_gaps_before_coarser_ones(
    wanted: Resolution, order: list[Resolution]
) -> None:
    assert resolution_order(wanted, [RAW, FIVE, HOUR]) == order
    assert resolution_order(wanted, [HOUR]) == [HOUR]


def raw(key: int, start: int, end: int) -> Place:
    return Place(key, RAW, ((start, end),))


def down(key: int, resolution: Resolution, start: int, end: int, level: int = 3) -> Place:
    return Place(key, resolution, ((start, end),), (1, level, f"{key:026d}"))


def spans_of(spans: list[Span]) -> list[tuple[int, int, Resolution, tuple[int, ...]]]:
    return [(s.start, s.end, s.resolution, s.places) for s in spans]


def test_raw_answers_everything_it_holds_for_a_raw_query() -> None:
    places = [raw(0, 0, 2 * H), raw(1, 2 * H, 4 * H), raw(2, H, 3 * H), down(3, FIVE, 0, 4 * H)]
    assert spans_of(cover(0, 4 * H - 1, places, RAW)) == [(0, 4 * H - 1, RAW, (0, 1, 2))]


def test_the_wanted_resolution_answers_where_it_has_blocks_and_raw_fills_the_gap() -> None:
    places = [raw(0, 0, 2 * D), raw(1, 2 * D, 4 * D), down(2, FIVE, 0, 2 * D)]
    assert spans_of(cover(0, 4 * D - 1, places, FIVE)) == [
        (0, 2 * D - 1, FIVE, (2,)),
        (2 * D, 4 * D - 1, RAW, (1,)),
    ]


def test_an_hour_query_takes_hours_then_five_minutes_then_raw() -> None:
    places = [
        raw(0, 0, 6 * D),
        down(1, FIVE, 0, 4 * D),
        down(2, HOUR, 0, 2 * D, level=4),
    ]
    assert spans_of(cover(H, 6 * D, places, HOUR)) == [
        (H, 2 * D - 1, HOUR, (2,)),
        (2 * D, 4 * D - 1, FIVE, (1,)),
        (4 * D, 6 * D - 1, RAW, (0,)),  # 6 d itself is in no block
    ]


def test_coarser_data_answers_where_retention_deleted_the_raw_blocks() -> None:
    # Raw kept for the last two days only; 5 m for a month; 1 h for ever.
    places = [raw(0, 28 * D, 30 * D), down(1, FIVE, 2 * D, 28 * D), down(2, HOUR, 0, 28 * D)]
    assert spans_of(cover(0, 30 * D - 1, places, RAW)) == [
        (0, 2 * D - 1, HOUR, (2,)),
        (2 * D, 28 * D - 1, FIVE, (1,)),
        (28 * D, 30 * D - 1, RAW, (0,)),
    ]


def test_the_head_is_raw_and_answers_for_its_windows() -> None:
    head = Place(-1, RAW, ((4 * D, 4 * D + 2 * H), (4 * D + 4 * H, 4 * D + 6 * H)))
    places = [down(0, FIVE, 0, 4 * D), raw(1, 4 * D + 2 * H, 4 * D + 4 * H), head]
    assert spans_of(cover(D, 5 * D, places, FIVE)) == [
        (D, 4 * D - 1, FIVE, (0,)),
        (4 * D, 4 * D + 6 * H - 1, RAW, (1, -1)),
    ]
    # A late sample for an old window claims that window only, not all time since.
    late = Place(-1, RAW, ((D, D + 2 * H), (4 * D, 4 * D + 2 * H)))
    assert spans_of(cover(0, 4 * D + H, [down(0, FIVE, 0, 4 * D), late], RAW)) == [
        (0, D - 1, FIVE, (0,)),
        (D, D + 2 * H - 1, RAW, (-1,)),
        (D + 2 * H, 4 * D - 1, FIVE, (0,)),
        (4 * D, 4 * D + H, RAW, (-1,)),
    ]


def test_overlapping_downsampled_blocks_answer_one_at_a_time() -> None:
    # A 2 d merge of 5 m blocks and the two 12 h sources it replaced (still marked).
    merged = Place(0, FIVE, ((0, 2 * D),), (1, 3, "B"))
    source_a = Place(1, FIVE, ((0, 12 * H),), (0, 2, "A"))
    source_c = Place(2, FIVE, ((2 * D, 2 * D + 12 * H),), (0, 2, "C"))
    assert spans_of(cover(0, 3 * D, [source_a, merged, source_c], FIVE)) == [
        (0, 2 * D - 1, FIVE, (0,)),
        (2 * D, 2 * D + 12 * H - 1, FIVE, (2,)),
    ]
    assert place_spans(cover(0, 3 * D, [source_a, merged, source_c], FIVE)) == {
        0: [(0, 2 * D - 1)],
        2: [(2 * D, 2 * D + 12 * H - 1)],
    }


def test_nothing_anywhere_gives_no_spans() -> None:
    assert cover(0, D, [], FIVE) == []
    assert cover(0, D, [raw(0, 2 * D, 3 * D)], RAW) == []


ranges = st.lists(
    st.tuples(st.integers(0, 40), st.integers(1, 12)).map(lambda t: (t[0], t[0] + t[1])),
    max_size=5,
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([RAW, FIVE, HOUR]), ranges), max_size=6),
    st.sampled_from([RAW, FIVE, HOUR]),
    st.integers(0, 30),
    st.integers(0, 30),
)
def test_every_held_millisecond_is_answered_once_by_the_preferred_resolution(
    held: list[tuple[Resolution, list[tuple[int, int]]]],
    wanted: Resolution,
    mint: int,
    length: int,
) -> None:
    places = [Place(key, r, tuple(rs), (0, 0, str(key))) for key, (r, rs) in enumerate(held)]
    maxt = mint + length
    spans = cover(mint, maxt, places, wanted)
    answered: dict[int, Resolution] = {}
    for span in spans:
        assert mint <= span.start <= span.end <= maxt
        assert span.places
        for t in range(span.start, span.end + 1):
            assert t not in answered, "spans overlap"
            answered[t] = span.resolution
            holding = {k for k in span.places if any(a <= t < b for a, b in places[k].ranges)}
            if span.resolution == RAW:  # every raw place holding t, merged
                assert holding == {
                    p.key
                    for p in places
                    if p.resolution == RAW and any(a <= t < b for a, b in p.ranges)
                }
            else:  # one downsampled place
                assert holding == set(span.places)
                assert len(span.places) == 1
    order = resolution_order(wanted, [RAW, FIVE, HOUR])
    for t in range(mint, maxt + 1):
        holders = [p.resolution for p in places if any(a <= t < b for a, b in p.ranges)]
        if not holders:
            assert t not in answered
        else:
            assert answered[t] == min(holders, key=order.index)
    assert [s.start for s in spans] == sorted(s.start for s in spans)


@given(ranges, ranges)
def test_range_algebra_agrees_with_sets(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> None:
    def points(rs: list[tuple[int, int]]) -> set[int]:
        return {t for s, e in rs for t in range(s, e)}

    ua, ub = union(a), union(b)
    assert points(ua) == points(a)
    assert all(x[1] < y[0] for x, y in pairwise(ua))
    assert points(intersect(ua, ub)) == points(a) & points(b)
    assert points(subtract(ua, ub)) == points(a) - points(b)
