"""Downsampling arithmetic against brute-force loops: windows, aggregates, counter resets."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocks.aggregates import (
    AGGREGATE_LABEL,
    Aggregate,
    Aggregates,
    Samples,
    concat_aggregates,
    downsample_aggregates,
    downsample_raw,
    join_counter,
    raw_counter,
    split_aggregate,
    with_aggregate,
)
from tests.support.values import STALE_NAN

MINUTE = 60_000
FIVE_MINUTES = 5 * MINUTE
HOUR = 60 * MINUTE
NAN_BITS = (STALE_NAN, 0x7FF8000000000000, 0xFFF8DEADBEEF0001, 0x7FF0000000000001)
# Bounded so that no sum overflows: infinities are tested on their own.
FINITE = 1e9

Window = list[tuple[int, float]]


def as_float(word: int) -> float:
    return float(np.array([word], dtype=np.uint64).view(np.float64)[0])


def bits(values: np.ndarray | list[float]) -> list[int]:
    words: list[int] = np.asarray(values, dtype=np.float64).view(np.uint64).tolist()
    return words


nans = st.sampled_from(NAN_BITS).map(as_float)
whole = st.integers(min_value=0, max_value=500).map(float)
finite = st.one_of(
    whole,
    st.floats(min_value=-FINITE, max_value=FINITE, allow_nan=False),
    st.sampled_from([0.0, -0.0]),
)
finite_or_nan = st.one_of(finite, nans)
anything = st.one_of(finite, nans, st.sampled_from([math.inf, -math.inf]))


@st.composite
def series(draw: st.DrawFn, values: st.SearchStrategy[float] = finite_or_nan) -> Samples:
    """One series: strictly increasing timestamps (some before 1970) and its values."""
    start = draw(st.integers(min_value=-3 * HOUR, max_value=3 * HOUR))
    gaps = draw(
        st.lists(
            st.one_of(
                st.integers(min_value=1, max_value=30_000),
                st.integers(min_value=1, max_value=40 * MINUTE),
            ),
            max_size=80,
        )
    )
    ts = np.cumsum([start, *gaps], dtype=np.int64)
    v = np.array(draw(st.lists(values, min_size=len(ts), max_size=len(ts))), dtype=np.float64)
    return ts, v


# Whole numbers keep every corrected value exact; -0.0 checks that first values keep their bits.
counters = series(values=st.one_of(whole, whole, whole, st.just(-0.0), nans))
resolutions = st.sampled_from([FIVE_MINUTES, HOUR, 7_000])


def windows(ts: np.ndarray, v: np.ndarray, resolution: int) -> list[Window]:
    """Non-NaN samples grouped by window k = floor(t / R), windows in time order."""
    grouped: dict[int, Window] = {}
    for t, value in zip(ts.tolist(), v.tolist(), strict=True):
        if not math.isnan(value):
            grouped.setdefault(t // resolution, []).append((t, value))
    return [grouped[k] for k in sorted(grouped)]


def prometheus_counter(ts: np.ndarray, v: np.ndarray) -> dict[int, float]:
    """A counter's non-NaN samples with resets undone, one sample at a time."""
    out: dict[int, float] = {}
    correction = 0.0
    previous: float | None = None
    for t, value in zip(ts.tolist(), v.tolist(), strict=True):
        if math.isnan(value):
            continue
        if previous is not None and value < previous:
            correction += previous
        out[t] = value + correction
        previous = value
    return out


def ordered_min(window: Window) -> float:
    """The minimum with -0.0 below +0.0."""
    return min((value for _, value in window), key=lambda x: (x, not math.copysign(1, x) < 0))


def ordered_max(window: Window) -> float:
    """The maximum with +0.0 above -0.0."""
    return max((value for _, value in window), key=lambda x: (x, not math.copysign(1, x) < 0))


def assert_same(got: Aggregates, want: Aggregates, *, sum_exact: bool = True) -> None:
    """Equal timestamps, and equal values to the bit (sums close unless sum_exact)."""
    for aggregate in Aggregate:
        (got_ts, got_v), (want_ts, want_v) = got[aggregate], want[aggregate]
        assert got_ts.tolist() == want_ts.tolist(), aggregate
        if aggregate is Aggregate.SUM and not sum_exact:
            np.testing.assert_allclose(got_v, want_v, rtol=1e-9, atol=1e-3)
        else:
            assert bits(got_v) == bits(want_v), aggregate


def split_points(data: st.DataObject, n: int) -> list[int]:
    return sorted(data.draw(st.lists(st.integers(min_value=0, max_value=n), max_size=4)))


def pieces_of(ts: np.ndarray, v: np.ndarray, cuts: list[int]) -> list[Samples]:
    bounds = [0, *cuts, len(ts)]
    return [(ts[a:b], v[a:b]) for a, b in itertools.pairwise(bounds)]


# --- windows and the first five aggregates ------------------------------------------------


@given(series(values=anything), resolutions)
@settings(max_examples=300, deadline=None)
def test_each_window_gives_count_min_max_last_at_its_last_sample(
    data: Samples, resolution: int
) -> None:
    found = downsample_raw(*data, resolution)
    expected = windows(*data, resolution)
    last_times = [window[-1][0] for window in expected]
    for aggregate in (Aggregate.COUNT, Aggregate.SUM, Aggregate.MIN, Aggregate.MAX):
        assert found[aggregate][0].tolist() == last_times, aggregate
    assert found[Aggregate.LAST][0].tolist() == last_times
    assert found[Aggregate.COUNT][1].tolist() == [len(w) for w in expected]
    assert bits(found[Aggregate.MIN][1]) == bits([ordered_min(w) for w in expected])
    assert bits(found[Aggregate.MAX][1]) == bits([ordered_max(w) for w in expected])
    assert bits(found[Aggregate.LAST][1]) == bits([w[-1][1] for w in expected])


@given(series(), resolutions)
@settings(max_examples=200, deadline=None)
def test_counts_add_up_to_the_non_nan_samples(data: Samples, resolution: int) -> None:
    counts = downsample_raw(*data, resolution)[Aggregate.COUNT][1]
    assert counts.sum() == np.count_nonzero(~np.isnan(data[1]))


@given(series(), resolutions)
@settings(max_examples=200, deadline=None)
def test_sums_are_the_window_sums(data: Samples, resolution: int) -> None:
    sums = downsample_raw(*data, resolution)[Aggregate.SUM][1]
    expected = [math.fsum(value for _, value in w) for w in windows(*data, resolution)]
    np.testing.assert_allclose(sums, expected, rtol=1e-12, atol=1e-3)


@given(series(), st.data())
@settings(max_examples=200, deadline=None)
def test_nan_and_staleness_markers_are_left_out_of_every_aggregate(
    data: Samples, more: st.DataObject
) -> None:
    ts, v = data  # a series has at least one sample
    marked = v.copy()
    marked[more.draw(st.lists(st.integers(0, len(v) - 1), max_size=10))] = as_float(STALE_NAN)
    kept = ~np.isnan(marked)
    for resolution in (FIVE_MINUTES, HOUR):
        found = downsample_raw(ts, marked, resolution)
        for aggregate in Aggregate:
            assert not np.isnan(found[aggregate][1]).any(), aggregate
        assert_same(found, downsample_raw(ts[kept], marked[kept], resolution))


def test_windows_are_aligned_to_the_epoch_also_before_1970() -> None:
    ts = np.array([-300_001, -300_000, -1, 0, 299_999, 300_000], dtype=np.int64)
    found = downsample_raw(ts, np.arange(6, dtype=np.float64), FIVE_MINUTES)
    assert found[Aggregate.COUNT][0].tolist() == [-300_001, -1, 299_999, 300_000]
    assert found[Aggregate.COUNT][1].tolist() == [1, 2, 2, 1]
    assert found[Aggregate.SUM][1].tolist() == [0, 3, 7, 5]


def test_a_window_of_only_nan_and_markers_has_no_sample() -> None:
    ts = np.array([0, 1_000, 300_000, 300_001, 600_000], dtype=np.int64)
    v = np.array([1.0, 2.0, as_float(STALE_NAN), math.nan, 3.0])
    found = downsample_raw(ts, v, FIVE_MINUTES)
    assert found[Aggregate.LAST][0].tolist() == [1_000, 600_000]
    assert found[Aggregate.COUNTER][0].tolist() == [0, 1_000, 600_000]


def test_minimum_and_maximum_of_signed_zeros_are_one_samples_bits() -> None:
    ts = np.arange(4, dtype=np.int64)
    for order in ([0.0, -0.0, 0.0, -0.0], [-0.0, 0.0, -0.0, 0.0]):
        found = downsample_raw(ts, np.array(order), FIVE_MINUTES)
        assert bits(found[Aggregate.MIN][1]) == bits([-0.0])
        assert bits(found[Aggregate.MAX][1]) == bits([0.0])
    only_negative = downsample_raw(ts, np.array([-0.0] * 4), FIVE_MINUTES)
    assert bits(only_negative[Aggregate.MAX][1]) == bits([-0.0])


def test_infinities_are_kept_by_min_max_last() -> None:
    ts = np.array([0, 1, 2], dtype=np.int64)
    found = downsample_raw(ts, np.array([math.inf, 1.0, -math.inf]), FIVE_MINUTES)
    assert found[Aggregate.MIN][1].tolist() == [-math.inf]
    assert found[Aggregate.MAX][1].tolist() == [math.inf]
    assert found[Aggregate.LAST][1].tolist() == [-math.inf]


def test_no_samples_give_six_empty_aggregates() -> None:
    nothing = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    only_markers = np.array([5, 6], dtype=np.int64), np.array([as_float(STALE_NAN)] * 2)
    for ts, v in (nothing, only_markers):
        found = downsample_raw(ts, v, FIVE_MINUTES)
        assert found.empty
        assert set(found.series) == set(Aggregate)
        assert found[Aggregate.SUM][0].dtype == np.int64
        assert found[Aggregate.SUM][1].dtype == np.float64
        assert downsample_aggregates(found, HOUR).empty
    assert not downsample_raw(np.array([1]), np.array([0.0]), FIVE_MINUTES).empty


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: downsample_raw(np.array([2, 1]), np.ones(2), HOUR), "strictly increasing"),
        (lambda: downsample_raw(np.array([1, 1]), np.ones(2), HOUR), "strictly increasing"),
        (lambda: downsample_raw(np.array([1]), np.ones(2), HOUR), "shape"),
        (lambda: downsample_raw(np.array([1]), np.ones(1), 0), "positive"),
        (lambda: Aggregates({Aggregate.SUM: (np.ones(1), np.ones(1))}), "missing"),
    ],
    ids=["unsorted", "duplicate", "lengths", "resolution", "keys"],
)
def test_bad_input_is_refused(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


# --- the counter --------------------------------------------------------------------------


@given(series())
@settings(max_examples=300, deadline=None)
def test_raw_counter_undoes_resets_like_prometheus(data: Samples) -> None:
    ts, corrected = raw_counter(*data)
    expected = prometheus_counter(*data)
    assert ts.tolist() == list(expected)
    assert corrected.tolist() == list(expected.values())


def test_raw_counter_keeps_the_bits_before_the_first_reset() -> None:
    ts = np.arange(4, dtype=np.int64)
    _, corrected = raw_counter(ts, np.array([-0.0, 0.0, 5.0, 1.0]))
    assert bits(corrected) == bits([-0.0, 0.0, 5.0, 6.0])


@given(counters, resolutions)
@settings(max_examples=300, deadline=None)
def test_counter_is_the_corrected_value_at_each_window_end_after_the_first_sample(
    data: Samples, resolution: int
) -> None:
    found = downsample_raw(*data, resolution)
    expected = prometheus_counter(*data)
    counter_ts, counter_values = found[Aggregate.COUNTER]
    groups = windows(*data, resolution)
    if not groups:
        assert len(counter_ts) == 0
        return
    extra = [groups[0][0]] if len(groups[0]) > 1 else []
    first = groups[0][0]
    assert counter_ts.tolist() == [t for t, _ in extra] + [w[-1][0] for w in groups]
    assert counter_values.tolist() == [expected[t] for t in counter_ts.tolist()]
    # The first counter sample is the first raw value as it was, so joins can see restarts.
    assert bits(counter_values[:1]) == bits([first[1]])
    corrected = list(expected.values())
    assert counter_values[-1] - counter_values[0] == corrected[-1] - corrected[0]


def test_counter_table() -> None:
    ts = np.array([0, 60_000, 120_000, 300_000, 360_000, 600_000], dtype=np.int64)
    v = np.array([10.0, 12.0, 3.0, as_float(STALE_NAN), 5.0, 1.0])
    found = downsample_raw(ts, v, FIVE_MINUTES)
    assert found[Aggregate.COUNTER][0].tolist() == [0, 120_000, 360_000, 600_000]
    assert found[Aggregate.COUNTER][1].tolist() == [10.0, 15.0, 17.0, 18.0]
    assert found[Aggregate.LAST][1].tolist() == [3.0, 5.0, 1.0]


@given(counters, st.data())
@settings(max_examples=300, deadline=None)
def test_join_counter_over_any_split_equals_the_whole_series(
    data: Samples, choose: st.DataObject
) -> None:
    ts, v = data
    expected = prometheus_counter(ts, v)
    pieces: list[tuple[Samples, Samples]] = []
    for piece_ts, piece_v in pieces_of(ts, v, split_points(choose, len(ts))):
        kind = choose.draw(st.sampled_from([0, FIVE_MINUTES, HOUR]))  # 0: raw samples
        if kind == 0:
            kept = ~np.isnan(piece_v)
            pieces.append((raw_counter(piece_ts, piece_v), (piece_ts[kept], piece_v[kept])))
        else:
            found = downsample_raw(piece_ts, piece_v, kind)
            pieces.append((found[Aggregate.COUNTER], found[Aggregate.LAST]))
    joined_ts, joined_values = join_counter(pieces)
    assert set(joined_ts.tolist()) <= set(expected)
    assert joined_values.tolist() == [expected[t] for t in joined_ts.tolist()]
    if expected:
        assert joined_ts[0] == next(iter(expected))
        assert joined_ts[-1] == list(expected)[-1]
        assert bits(joined_values[:1]) == bits(v[~np.isnan(v)][:1])


def test_join_counter_sees_a_restart_between_pieces() -> None:
    before = (np.array([0, 10]), np.array([5.0, 9.0])), (np.array([10]), np.array([4.0]))
    restarted = (np.array([20, 30]), np.array([2.0, 3.0])), (np.array([30]), np.array([1.0]))
    carried = (np.array([40]), np.array([7.0])), (np.array([40]), np.array([7.0]))
    ts, values = join_counter([before, restarted, carried])
    # Raw values 5 4 | 2 1 | 7: resets at 4, 2 (across the join) and 1; none at 7.
    assert ts.tolist() == [0, 10, 20, 30, 40]
    assert values.tolist() == [5.0, 9.0, 11.0, 12.0, 18.0]


def test_join_counter_refuses_overlapping_pieces() -> None:
    piece = (np.array([0, 10]), np.array([1.0, 2.0])), (np.array([10]), np.array([2.0]))
    with pytest.raises(ValueError, match="overlap"):
        join_counter([piece, piece])


# --- coarser windows and joined blocks ----------------------------------------------------


@given(series())
@settings(max_examples=300, deadline=None)
def test_five_minutes_then_one_hour_equals_one_hour_directly(data: Samples) -> None:
    five = downsample_raw(*data, FIVE_MINUTES)
    direct = downsample_raw(*data, HOUR)
    assert_same(downsample_aggregates(five, HOUR), direct, sum_exact=False)
    empty = five[Aggregate.SUM][0][:0], five[Aggregate.SUM][1][:0]
    for aggregate in Aggregate:  # each kind alone, as a block holds them
        alone = Aggregates({a: five[a] if a is aggregate else empty for a in Aggregate})
        got_ts, got_values = downsample_aggregates(alone, HOUR)[aggregate]
        assert got_ts.tolist() == direct[aggregate][0].tolist()
        if aggregate is not Aggregate.SUM:
            assert bits(got_values) == bits(direct[aggregate][1])


@given(series(), resolutions)
@settings(max_examples=150, deadline=None)
def test_downsampling_aggregates_to_their_own_resolution_changes_nothing(
    data: Samples, resolution: int
) -> None:
    found = downsample_raw(*data, resolution)
    assert_same(downsample_aggregates(found, resolution), found)


@given(counters, st.data())
@settings(max_examples=200, deadline=None)
def test_concatenated_blocks_join_like_the_whole(data: Samples, choose: st.DataObject) -> None:
    ts, v = data
    # Block boundaries on 5 m windows, as blocks are aligned: per-window aggregates agree.
    bounds = sorted(choose.draw(st.lists(st.integers(-40, 700), max_size=3)))
    cuts = [int(np.searchsorted(ts, b * FIVE_MINUTES)) for b in bounds]
    pieces = [downsample_raw(t, x, FIVE_MINUTES) for t, x in pieces_of(ts, v, cuts)]
    joined = concat_aggregates(pieces)
    whole = downsample_raw(ts, v, FIVE_MINUTES)
    for aggregate in (Aggregate.COUNT, Aggregate.SUM, Aggregate.MIN, Aggregate.MAX):
        assert bits(joined[aggregate][1]) == bits(whole[aggregate][1]), aggregate
        assert joined[aggregate][0].tolist() == whole[aggregate][0].tolist(), aggregate
    expected = prometheus_counter(ts, v)
    joined_ts, joined_values = joined[Aggregate.COUNTER]
    assert set(whole[Aggregate.COUNTER][0].tolist()) <= set(joined_ts.tolist())
    assert joined_values.tolist() == [expected[t] for t in joined_ts.tolist()]
    # Merged 5 m blocks downsampled to 1 h equal the raw data downsampled to 1 h.
    assert_same(downsample_aggregates(joined, HOUR), downsample_raw(ts, v, HOUR), sum_exact=False)


@given(counters, st.data())
@settings(max_examples=150, deadline=None)
def test_pieces_split_inside_windows_regroup_to_the_whole(
    data: Samples, choose: st.DataObject
) -> None:
    ts, v = data
    pieces = [
        downsample_raw(t, x, FIVE_MINUTES)
        for t, x in pieces_of(ts, v, split_points(choose, len(ts)))
    ]
    joined = concat_aggregates(pieces)
    regrouped = downsample_aggregates(joined, FIVE_MINUTES)
    assert_same(regrouped, downsample_raw(ts, v, FIVE_MINUTES), sum_exact=False)


# --- labels -------------------------------------------------------------------------------

label_sets = st.dictionaries(
    st.text(min_size=1, max_size=20).filter(lambda name: name != AGGREGATE_LABEL),
    st.text(min_size=1, max_size=5),
    max_size=8,
).map(lambda labels: sorted(labels.items()))


@given(label_sets, st.sampled_from(list(Aggregate)))
@settings(max_examples=300, deadline=None)
def test_aggregate_label_is_inserted_in_order_and_split_back_off(
    labels: list[tuple[str, str]], aggregate: Aggregate
) -> None:
    tagged = with_aggregate(labels, aggregate)
    assert tagged == sorted([*labels, (AGGREGATE_LABEL, aggregate.value)])
    assert split_aggregate(tagged) == (labels, aggregate)
    assert split_aggregate(labels) == (labels, None)


def test_aggregate_label_table() -> None:
    labels = [("__name__", "up"), ("job", "node")]
    assert with_aggregate(labels, Aggregate.MAX) == [
        ("__name__", "up"),
        ("__strata_aggr__", "max"),
        ("job", "node"),
    ]
    assert [a.value for a in Aggregate] == ["count", "sum", "min", "max", "last", "counter"]
    with pytest.raises(ValueError, match="already"):
        with_aggregate(with_aggregate(labels, Aggregate.MAX), Aggregate.MIN)
    with pytest.raises(ValueError, match="avg"):
        split_aggregate([("__name__", "up"), (AGGREGATE_LABEL, "avg")])
