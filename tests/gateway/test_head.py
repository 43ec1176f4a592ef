"""The head's append decisions (new, resent, conflict) and what it gives back, to the bit."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocks.errors import Unavailable
from gateway.head import Head, TenantHead
from gateway.head_append import AppendPlan
from gateway.head_columns import SampleColumns
from tests.gateway.writes import SPECIAL_BITS, STALE_NAN, canonical

QNAN = 0x7FF8000000000000
NEG_ZERO = 0x8000000000000000
ONE = 0x3FF0000000000000
TWO = 0x4000000000000000

Sample = tuple[int, int, int]  # (ref, timestamp, value bits)


def new_head(freeze_samples: int = 1 << 20, series: int = 3) -> TenantHead:
    head = TenantHead("t", freeze_samples)
    for i in range(series):
        assert head.series_ref(canonical([("__name__", "m"), ("i", str(i))])) == i
    return head


def plan(head: TenantHead, samples: Sequence[Sample]) -> AppendPlan:
    return head.plan(
        np.array([s[0] for s in samples], dtype=np.uint32),
        np.array([s[1] for s in samples], dtype=np.int64),
        np.array([s[2] for s in samples], dtype=np.uint64).view(np.float64),
    )


def append(head: TenantHead, samples: Sequence[Sample]) -> AppendPlan:
    decided = plan(head, samples)
    head.commit(decided)
    return decided


def counts(decided: AppendPlan) -> tuple[int, int, int]:
    return int(decided.new.sum()), int(decided.resent.sum()), int(decided.conflict.sum())


def stored(head: TenantHead) -> dict[int, list[tuple[int, int]]]:
    """ref -> [(timestamp, value bits)] as series_samples gives them."""
    out: dict[int, list[tuple[int, int]]] = {}
    refs = {head.canonical(ref): ref for ref in range(head.series_count)}
    for labels, ts, values in head.series_samples():
        assert values.dtype == np.float64
        out[refs[labels]] = list(zip(ts.tolist(), values.view(np.uint64).tolist(), strict=True))
    return out


def test_new_samples_are_stored() -> None:
    head = new_head()
    decided = append(head, [(0, 1000, ONE), (0, 2000, STALE_NAN), (1, 1000, TWO)])
    assert counts(decided) == (3, 0, 0)
    assert stored(head) == {0: [(1000, ONE), (2000, STALE_NAN)], 1: [(1000, TWO)]}
    assert head.sample_count == 3


def test_plan_changes_nothing_until_commit() -> None:
    head = new_head()
    decided = plan(head, [(0, 1000, ONE)])
    assert counts(decided) == (1, 0, 0)
    assert head.sample_count == 0
    assert stored(head) == {}
    assert head.last_ts.view[0] == np.iinfo(np.int64).min


@pytest.mark.parametrize("bits", SPECIAL_BITS)
def test_same_timestamp_and_identical_bits_is_a_resend(bits: int) -> None:
    head = new_head()
    append(head, [(0, 1000, bits)])
    decided = append(head, [(0, 1000, bits)])
    assert counts(decided) == (0, 1, 0)
    assert stored(head) == {0: [(1000, bits)]}
    assert head.sample_count == 1


@pytest.mark.parametrize(
    ("first", "second"),
    [(ONE, TWO), (STALE_NAN, QNAN), (QNAN, STALE_NAN), (0, NEG_ZERO), (NEG_ZERO, 0)],
)
def test_same_timestamp_and_different_bits_is_a_conflict_and_the_first_stays(
    first: int, second: int
) -> None:
    head = new_head()
    append(head, [(0, 1000, first)])
    decided = append(head, [(0, 1000, second)])
    assert counts(decided) == (0, 0, 1)
    assert stored(head) == {0: [(1000, first)]}
    assert head.last_bits.view[0] == first


def test_older_samples_are_accepted_and_kept_in_time_order() -> None:
    head = new_head()
    append(head, [(0, 1000, ONE), (0, 3000, ONE)])
    decided = append(head, [(0, 2000, TWO), (0, -5, STALE_NAN)])
    assert counts(decided) == (2, 0, 0)
    assert stored(head) == {0: [(-5, STALE_NAN), (1000, ONE), (2000, TWO), (3000, ONE)]}
    assert head.last_ts.view[0] == 3000


@pytest.mark.parametrize("frozen", [False, True], ids=["uncompressed", "compressed"])
def test_older_resend_is_checked_against_stored_samples(frozen: bool) -> None:
    head = new_head()
    append(head, [(0, 1000, STALE_NAN), (0, 2000, NEG_ZERO), (1, 1000, ONE), (0, 3000, ONE)])
    if frozen:
        head.freeze()
        assert head.frozen
        assert not len(head.recent)
    decided = append(head, [(0, 1000, STALE_NAN), (0, 2000, NEG_ZERO), (1, 1000, ONE)])
    assert counts(decided) == (0, 3, 0)
    assert head.sample_count == 4


@pytest.mark.parametrize("frozen", [False, True], ids=["uncompressed", "compressed"])
def test_older_conflict_is_checked_against_stored_samples(frozen: bool) -> None:
    head = new_head()
    append(head, [(0, 1000, STALE_NAN), (0, 2000, NEG_ZERO), (0, 3000, ONE)])
    if frozen:
        head.freeze()
    decided = append(head, [(0, 1000, QNAN), (0, 2000, 0), (0, 1500, TWO)])
    assert counts(decided) == (1, 0, 2)
    assert stored(head) == {0: [(1000, STALE_NAN), (1500, TWO), (2000, NEG_ZERO), (3000, ONE)]}


def test_older_samples_are_checked_across_several_compressed_batches_and_the_buffer() -> None:
    head = new_head()
    append(head, [(0, 100, ONE), (1, 100, ONE)])
    head.freeze()
    append(head, [(0, 200, TWO), (1, 200, TWO)])
    head.freeze()
    append(head, [(0, 300, STALE_NAN), (1, 400, ONE)])
    assert len(head.frozen) == 2
    decided = append(
        head, [(0, 100, ONE), (1, 200, ONE), (0, 300, STALE_NAN), (1, 150, TWO), (0, 250, 0)]
    )
    # (0,100) resent from batch 1; (1,200) conflicts with batch 2; (0,300) is the last
    # sample; (1,150) and (0,250) fall between stored ones.
    assert counts(decided) == (2, 2, 1)
    assert stored(head) == {
        0: [(100, ONE), (200, TWO), (250, 0), (300, STALE_NAN)],
        1: [(100, ONE), (150, TWO), (200, TWO), (400, ONE)],
    }


def test_identical_duplicates_inside_one_batch_store_one_sample() -> None:
    head = new_head()
    decided = append(head, [(0, 1000, STALE_NAN), (0, 1000, STALE_NAN), (0, 1000, STALE_NAN)])
    assert counts(decided) == (1, 2, 0)
    assert stored(head) == {0: [(1000, STALE_NAN)]}


def test_different_duplicates_inside_one_batch_keep_the_first_sent() -> None:
    head = new_head()
    decided = append(head, [(0, 1000, TWO), (1, 5, ONE), (0, 1000, ONE), (0, 1000, TWO)])
    assert counts(decided) == (2, 1, 1)
    assert stored(head) == {0: [(1000, TWO)], 1: [(5, ONE)]}


def test_duplicates_inside_one_batch_of_an_older_stored_sample() -> None:
    head = new_head()
    append(head, [(0, 1000, ONE), (0, 2000, ONE)])
    decided = append(head, [(0, 1000, TWO), (0, 1000, ONE), (0, 1000, ONE)])
    assert counts(decided) == (0, 2, 1)
    assert stored(head) == {0: [(1000, ONE), (2000, ONE)]}


def test_freezing_keeps_every_sample_bit_exact() -> None:
    head = new_head(freeze_samples=4, series=2)
    samples = [(i % 2, 1000 * (i // 2), SPECIAL_BITS[i % len(SPECIAL_BITS)]) for i in range(23)]
    for sample in samples:
        append(head, [sample])
    # Five freezes: the first four merged into one run (gateway/head_merge.py), the fifth.
    assert [b.level for b in head.frozen] == [1, 0]
    assert head.frozen_samples == 20
    assert len(head.recent) == 3
    assert head.sample_count == 23
    want: dict[int, list[tuple[int, int]]] = {0: [], 1: []}
    for ref, ts, bits in samples:
        want[ref].append((ts, bits))
    assert stored(head) == want


def test_series_samples_of_an_empty_head_is_empty() -> None:
    assert list(new_head().series_samples()) == []


def test_time_range_covers_buffer_and_batches() -> None:
    head = new_head()
    assert head.time_range() is None
    append(head, [(0, 500, ONE), (1, -20, ONE)])
    head.freeze()
    append(head, [(0, 900, ONE)])
    assert head.time_range() == (-20, 900)


def test_head_is_one_per_tenant_and_refuses_writes_over_its_budget() -> None:
    head = Head(max_bytes=1 << 20, freeze_samples=1 << 20)
    assert head.tenant("a") is head.tenant("a")
    assert head.tenant("a") is not head.tenant("b")
    head.check_budget()
    small = Head(max_bytes=1, freeze_samples=16)
    small.tenant("a").series_ref(canonical([("__name__", "m")]))
    with pytest.raises(Unavailable, match="budget"):
        small.check_budget()


batch_samples = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=2),
        st.integers(min_value=0, max_value=40),
        st.sampled_from([ONE, TWO, STALE_NAN, QNAN, 0, NEG_ZERO]),
    ),
    min_size=1,
    max_size=25,
)


@given(
    st.lists(st.tuples(batch_samples, st.booleans()), min_size=1, max_size=8),
    st.integers(min_value=1, max_value=12),
)
@settings(max_examples=300, deadline=None)
def test_head_agrees_with_a_first_value_wins_model(
    batches: list[tuple[list[Sample], bool]], freeze_samples: int
) -> None:
    head = new_head(freeze_samples=freeze_samples)
    model: dict[tuple[int, int], int] = {}
    for samples, freeze_after in batches:
        expected = [0, 0, 0]
        for ref, ts, bits in samples:  # in the order sent: the first one sent wins
            if (ref, ts) not in model:
                model[ref, ts] = bits
                expected[0] += 1
            elif model[ref, ts] == bits:
                expected[1] += 1
            else:
                expected[2] += 1
        assert counts(append(head, samples)) == tuple(expected)
        if freeze_after:
            head.freeze()
    want: dict[int, list[tuple[int, int]]] = {}
    for (ref, ts), bits in sorted(model.items()):
        want.setdefault(ref, []).append((ts, bits))
    assert stored(head) == want
    assert head.sample_count == len(model)


def test_uncompressed_buffer_never_reserves_far_past_the_freeze_point() -> None:
    # Just past a power of two: plain doubling would reserve room for 2048 samples at
    # the append that reaches the freeze point (1025), only to be emptied at once.
    freeze, batch = 1025, 10
    columns = SampleColumns(soft_cap=freeze)
    ones = np.ones(batch)
    peak = 0
    for step in range(freeze // batch + 1):
        columns.extend(np.zeros(batch, dtype=np.uint32), np.arange(batch) + step * batch, ones)
        peak = max(peak, columns.nbytes)
    bytes_per_sample = 4 + 8 + 8  # ref, timestamp, value
    assert len(columns) >= freeze
    assert peak <= (freeze + batch) * bytes_per_sample
