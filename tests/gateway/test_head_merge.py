"""Merging the head's runs of compressed batches: same samples, longer runs, fewer bytes."""

from __future__ import annotations

import contextlib
import itertools
import weakref
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gateway.head_merge
from blocks.sample_codec import decode_samples
from gateway.head import TenantHead
from gateway.head_batch import (
    BLOCK_DURATION_MS,
    MAX_LEVEL,
    FrozenBatch,
    compress_batch,
    merge_sorted,
    new_run_id,
)
from gateway.head_merge import MERGE_FAN_IN, RunMerge, tail_to_merge
from tests.gateway.writes import canonical

START_MS = 1_795_564_800_000  # aligned to 2 h


def run_of(
    refs: np.ndarray, ts: np.ndarray, values: np.ndarray, cuts: list[int], level: int = 0
) -> list[FrozenBatch]:
    """Samples sorted by (ref, timestamp) as one run, split into batches at `cuts`."""
    run = new_run_id()
    bounds = [0, *sorted(set(cuts) - {0, len(refs)}), len(refs)]
    return [
        compress_batch(refs[a:b], ts[a:b], values[a:b], run=run, level=level)
        for a, b in itertools.pairwise(bounds)
        if b > a
    ]


def merge_runs(batches: list[FrozenBatch]) -> list[FrozenBatch]:
    """The run a whole merge of `batches` writes."""
    merge = RunMerge(batches)
    merge.merge()
    return merge.held()


def samples_of(batches: list[FrozenBatch]) -> list[tuple[int, int, int]]:
    out: list[tuple[int, int, int]] = []
    for batch in batches:
        refs, ts, values = decode_samples(batch.data)
        out += zip(refs.tolist(), ts.tolist(), values.view(np.uint64).tolist(), strict=True)
    return out


@st.composite
def runs(draw: st.DrawFn) -> list[list[FrozenBatch]]:
    """Runs of random samples; pairs of (ref, timestamp) repeat within and across runs
    with other values, and series go on from one batch of a run into the next."""
    out = []
    for _ in range(draw(st.integers(1, 5))):
        n = draw(st.integers(1, 60))
        refs = np.array(draw(st.lists(st.integers(0, 12), min_size=n, max_size=n)), np.uint32)
        ts = START_MS + np.array(draw(st.lists(st.integers(0, 40), min_size=n, max_size=n)))
        values = np.array(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), np.float64)
        order = np.lexsort((ts, refs))
        cuts = draw(st.lists(st.integers(0, n), max_size=6))
        out.append(run_of(refs[order], ts[order], values[order], cuts))
    return out


@settings(max_examples=300, deadline=None)
@given(runs(), st.integers(1, 20), st.integers(1, 30))
def test_a_merged_run_holds_the_runs_samples_in_order_the_first_of_a_pair_kept(
    given_runs: list[list[FrozenBatch]], batch_samples: int, piece_samples: int
) -> None:
    batches = [b for run in given_runs for b in run]
    # Of samples at one (ref, timestamp) the first in the runs' order stays, as readers
    # and cuts keep it.
    first: dict[tuple[int, int], int] = {}
    for ref, ts, bits in samples_of(batches):
        first.setdefault((ref, ts), bits)
    expected = [(ref, ts, bits) for (ref, ts), bits in sorted(first.items())]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gateway.head_merge, "FROZEN_BATCH_SAMPLES", batch_samples)
        patch.setattr(gateway.head_merge, "PIECE_SAMPLES", piece_samples)  # pieces capped
        merged = merge_runs(batches)
    assert samples_of(merged) == expected
    assert len({b.run for b in merged}) == 1
    assert {b.level for b in merged} == {1}
    assert all(b.samples <= batch_samples for b in merged)
    for batch in merged:
        _, times, _ = decode_samples(batch.data)
        assert (batch.mint, batch.maxt, batch.samples) == (times.min(), times.max(), len(times))


def first_kept(batches: list[FrozenBatch]) -> list[tuple[int, int, int]]:
    """The samples readers keep of `batches` in this order: the first at each pair."""
    first: dict[tuple[int, int], int] = {}
    for ref, ts, bits in samples_of(batches):
        first.setdefault((ref, ts), bits)
    return [(ref, ts, bits) for (ref, ts), bits in sorted(first.items())]


@settings(max_examples=300, deadline=None)
@given(runs(), st.integers(1, 20), st.integers(0, 12))
def test_a_merge_failing_part_way_still_holds_every_sample(
    given_runs: list[list[FrozenBatch]], batch_samples: int, fail_at: int
) -> None:
    """What a failed merge holds (its written batches, then the inputs it has not given
    back) keeps, first at each pair, what the runs kept."""
    batches = [b for run in given_runs for b in run]
    merge = RunMerge(batches)
    written = 0

    def compress_or_fail(*args: Any, **kwargs: Any) -> FrozenBatch:
        nonlocal written
        if written == fail_at:
            raise MemoryError("injected")
        written += 1
        return compress_batch(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gateway.head_merge, "FROZEN_BATCH_SAMPLES", batch_samples)
        patch.setattr(gateway.head_merge, "compress_batch", compress_or_fail)
        with contextlib.suppress(MemoryError):
            merge.merge()
    assert first_kept(merge.held()) == first_kept(batches)


def test_a_merge_gives_back_its_inputs_as_it_writes() -> None:
    """The merge holds about its inputs' bytes, not its inputs' and its output's."""
    series, scrapes = 3_000, 4
    given_runs = []
    for scrape in range(scrapes):
        refs = np.arange(series, dtype=np.uint32)
        ts = np.full(series, START_MS + scrape * 15_000, dtype=np.int64)
        values = np.arange(series, dtype=np.float64) + scrape
        given_runs.append(run_of(refs, ts, values, list(range(0, series, 500))))
    batches = [b for run in given_runs for b in run]
    merge = RunMerge(batches)
    held_bytes: list[int] = []

    def compress_and_measure(*args: Any, **kwargs: Any) -> FrozenBatch:
        held_bytes.append(sum(len(b.data) for b in merge.held()))
        return compress_batch(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gateway.head_merge, "FROZEN_BATCH_SAMPLES", 1_000)
        patch.setattr(gateway.head_merge, "compress_batch", compress_and_measure)
        merge.merge()
    inputs = sum(len(b.data) for b in batches)
    output = sum(len(b.data) for b in merge.held())
    assert len(held_bytes) == len(merge.held()) == series * scrapes // 1_000
    # Holding every input until the end would reach inputs + output; giving them back
    # as written batches pass them stays within the inputs and a batch of each run.
    assert max(held_bytes) < inputs + output / 4, (max(held_bytes), inputs, output)
    assert first_kept(merge.held()) == first_kept(batches)


def test_a_merge_of_runs_of_few_series_takes_bounded_pieces() -> None:
    """Batches of a few long series (1 s scrapes): a piece takes part of each batch, not
    four whole batches, so a merge holds a few pieces' working arrays, not runs' worth."""
    series, per_run = 40, 500
    batches: list[FrozenBatch] = []
    for r in range(MERGE_FAN_IN):
        refs = np.repeat(np.arange(series, dtype=np.uint32), per_run)
        times = START_MS + (r * per_run + np.arange(per_run, dtype=np.int64)) * 1000
        ts = np.tile(times, series)
        batches += run_of(refs, ts, np.arange(len(refs), dtype=np.float64), [len(refs) // 2])
    pieces: list[int] = []

    def merge_and_count(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> object:
        pieces.append(sum(len(p[0]) for p in parts))
        return merge_sorted(parts)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gateway.head_merge, "PIECE_SAMPLES", 2_000)
        patch.setattr(gateway.head_merge, "merge_sorted", merge_and_count)
        merged = merge_runs(batches)
    # A piece stops at a whole series: 2,000 samples and at most one series of each run more.
    assert max(pieces) <= 2_000 + MERGE_FAN_IN * per_run, max(pieces)
    assert sum(pieces) == series * per_run * MERGE_FAN_IN
    assert first_kept(merged) == first_kept(batches)


def test_a_merge_holds_about_two_batches_of_each_run_in_working_arrays() -> None:
    """At every batch it writes, the merge's decoded and sorted arrays still alive hold
    at most two batches of each run (its current one and the next, joined where a series
    goes on) and two more: the batch being written and what is left over for the next.
    The pieces' views kept their cut batches alive beside their runs' next ones, and the
    written batch's views the arrays it was cut from: 13 batches' worth, not 10."""
    series, per_run, batch = 40, 100, 1_000
    batches: list[FrozenBatch] = []
    for r in range(MERGE_FAN_IN):
        refs = np.repeat(np.arange(series, dtype=np.uint32), per_run)
        times = START_MS + (r * per_run + np.arange(per_run, dtype=np.int64)) * 1000
        splits = list(range(batch, len(refs), batch))
        batches += run_of(
            refs, np.tile(times, series), np.arange(len(refs), dtype=np.float64), splits
        )
    alive: list[weakref.ref[np.ndarray]] = []

    def tracked(make: Any) -> Any:
        def made(*args: Any) -> Any:
            out = make(*args)
            if out is not None:
                ts = out[1]
                alive.append(weakref.ref(ts if ts.base is None else ts.base))
            return out

        return made

    held: list[int] = []

    def compress_and_count(*args: Any, **kwargs: Any) -> FrozenBatch:
        arrays = {id(a): a for a in (ref() for ref in alive) if a is not None}
        held.append(sum(a.size for a in arrays.values()))
        return compress_batch(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gateway.head_merge, "FROZEN_BATCH_SAMPLES", batch)
        patch.setattr(gateway.head_merge, "PIECE_SAMPLES", batch)
        for name in ("decode_samples", "concatenate_triples", "merge_sorted"):
            patch.setattr(gateway.head_merge, name, tracked(getattr(gateway.head_merge, name)))
        patch.setattr(gateway.head_merge, "compress_batch", compress_and_count)
        merge = RunMerge(batches)
        merge.merge()
    assert len(held) == series * per_run * MERGE_FAN_IN // batch
    assert max(held) <= (2 * MERGE_FAN_IN + 2) * batch, held
    assert first_kept(merge.held()) == first_kept(batches)


def one_run(level: int, minute: int) -> list[FrozenBatch]:
    refs = np.arange(4, dtype=np.uint32)
    ts = np.full(4, START_MS + minute * 60_000, dtype=np.int64)
    return run_of(refs, ts, np.ones(4), [2], level)


def test_the_newest_runs_merge_when_four_have_one_level_in_one_window() -> None:
    frozen = [b for minute in range(MERGE_FAN_IN) for b in one_run(0, minute)]
    assert tail_to_merge(frozen, BLOCK_DURATION_MS) == 0
    older = one_run(1, 0)
    assert tail_to_merge(older + frozen, BLOCK_DURATION_MS) == len(older)
    assert tail_to_merge(frozen[2:], BLOCK_DURATION_MS) is None, "three runs"
    mixed = one_run(1, 0) + frozen[2:]
    assert tail_to_merge(mixed, BLOCK_DURATION_MS) is None, "levels differ"
    top = [b for minute in range(MERGE_FAN_IN) for b in one_run(MAX_LEVEL, minute)]
    assert tail_to_merge(top, BLOCK_DURATION_MS) is None, "at the top level"
    next_window = one_run(0, BLOCK_DURATION_MS // 60_000)
    across = frozen[2:] + next_window
    assert tail_to_merge(across, BLOCK_DURATION_MS) is None, "a window boundary"


def test_the_head_merges_its_freezes_and_gives_back_every_sample() -> None:
    """Many series, a few samples of each a freeze: the head's bytes fall as its runs
    merge, and every sample comes back."""
    series, scrapes = 2_000, 80
    rng = np.random.default_rng(7)
    steps = rng.integers(0, 20, size=(scrapes, series)) / 4  # counters: small increments
    values = np.cumsum(steps, axis=0) + np.arange(series) * 10.0
    refs = np.arange(series, dtype=np.uint32)
    heads = {}
    for merging in (True, False):
        head = TenantHead("t", 5_000)
        for i in range(series):
            head.series_ref(canonical([("__name__", "node_cpu_seconds_total"), ("i", str(i))]))
        with pytest.MonkeyPatch.context() as patch:
            if not merging:
                patch.setattr(TenantHead, "merge_runs", lambda self: None)
            for scrape in range(scrapes):
                ts = np.full(series, START_MS + scrape * 15_000, dtype=np.int64)
                head.commit(head.plan(refs, ts, values[scrape]))
        heads[merging] = head
    head = heads[True]
    assert max(b.level for b in head.frozen) == MAX_LEVEL
    assert head.frozen_bytes == sum(len(b.data) for b in head.frozen)
    assert head.frozen_samples == sum(b.samples for b in head.frozen)
    assert head.frozen_bytes < 0.8 * heads[False].frozen_bytes  # 0.64 when written
    times = (START_MS + np.arange(scrapes) * 15_000).tolist()
    by_labels = {head.canonical(ref): ref for ref in range(series)}
    got = 0
    for labels, ts, stored in head.series_samples():
        ref = by_labels[labels]
        assert ts.tolist() == times
        assert stored.view(np.uint64).tolist() == values[:, ref].view(np.uint64).tolist()
        got += 1
    assert got == series
