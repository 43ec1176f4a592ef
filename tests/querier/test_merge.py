"""Merging one series from several places: each timestamp once, the newest place wins."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from querier.merge import merge_parts, merge_series

part = st.dictionaries(st.integers(-50, 50), st.integers(0, 2**64 - 1), max_size=30)


def as_part(samples: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    ts = np.array(sorted(samples), dtype=np.int64)
    bits = np.array([samples[t] for t in sorted(samples)], dtype=np.uint64)
    return ts, bits.view(np.float64)


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(part, max_size=5), bounds=st.tuples(st.integers(-60, 60), st.integers(-60, 60))
)
def test_merge_equals_a_dictionary_update_in_part_order(
    parts: list[dict[int, int]], bounds: list[int]
) -> None:
    mint, maxt = min(bounds), max(bounds)
    expected: dict[int, int] = {}
    for samples in parts:
        expected.update(samples)
    expected = {t: b for t, b in expected.items() if mint <= t <= maxt}
    ts, values = merge_parts([as_part(p) for p in parts], mint, maxt)
    assert ts.tolist() == sorted(expected)
    assert values.view(np.uint64).tolist() == [expected[t] for t in sorted(expected)]


def test_nothing_merges_to_empty_columns() -> None:
    ts, values = merge_parts([], 0, 10)
    assert ts.dtype == np.int64
    assert values.dtype == np.float64
    assert len(ts) == len(values) == 0


# A part as a place may hand it over: usually sorted and within the range, but the batch
# check must also catch one that is not (out of order, a repeated timestamp, past a bound).
raw_part = st.lists(st.tuples(st.integers(-50, 50), st.integers(0, 2**64 - 1)), max_size=12)


def as_raw_part(samples: list[tuple[int, int]], in_order: bool) -> tuple[np.ndarray, np.ndarray]:
    samples = sorted(samples) if in_order else samples
    ts = np.array([t for t, _ in samples], dtype=np.int64)
    return ts, np.array([b for _, b in samples], dtype=np.uint64).view(np.float64)


@settings(max_examples=300, deadline=None)
@given(
    series=st.lists(st.lists(st.tuples(raw_part, st.booleans()), max_size=3), max_size=8),
    bounds=st.tuples(st.integers(-60, 60), st.integers(-60, 60)),
)
def test_merging_a_batch_equals_merging_each_series(
    series: list[list[tuple[list[tuple[int, int]], bool]]], bounds: list[int]
) -> None:
    mint, maxt = min(bounds), max(bounds)
    parts = [[as_raw_part(samples, in_order) for samples, in_order in own] for own in series]
    merged = merge_series(parts, mint, maxt)
    assert len(merged) == len(parts)
    for own, (ts, values) in zip(parts, merged, strict=True):
        want_ts, want_values = merge_parts(own, mint, maxt)
        assert ts.tolist() == want_ts.tolist()
        assert values.view(np.uint64).tolist() == want_values.view(np.uint64).tolist()
