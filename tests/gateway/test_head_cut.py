"""The head cut goes window by window and group by group of series (issue 10), and its
blocks are byte for byte those of the cut that decoded, sorted and split everything at
once, whose code is kept below as the reference."""

from __future__ import annotations

import random
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import gateway.head_cut
from blocks.columns import run_bounds
from blocks.meta import CHUNKS_DIRNAME, INDEX_FILENAME, BlockMeta
from blocks.sample_codec import decode_samples
from blocks.start_store import StartPart
from blocks.ulid import new_ulid
from blocks.writer import BlockWriter
from gateway.head import (
    FrozenBatch,
    HeadSnapshot,
    SampleTriple,
    compress_batch,
    key_label_pairs,
    series_key_of,
)
from gateway.head_columns import SampleColumns
from gateway.head_cut import (
    BLOCK_DURATION_MS,
    HistogramColumns,
    cut_snapshot,
    label_sort_key,
    passes,
)
from gateway.head_histograms import HistogramPart
from gateway.head_starts import StartColumns
from gateway.validate import encode_labels
from gateway.write import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP
from tests.gateway.writes import SPECIAL_BITS
from tests.querier.histogram_reads import canonical, int_counter

T0 = 1_795_564_800_000  # aligned to 2 h
TENANT = "t"
# Strings whose order a byte-wise comparison of their encodings could get wrong.
TRICKY = ["", "a", "a\x00", "a\x00b", "a\x01", "ab", "b", "é", "\uffff", "\U0001f600", "z" * 3]


# --- the reference: the cut as it was before it went group by group -------------------


def reference_cut(
    parent: Path,
    labels: list[bytes],
    snapshot: HeadSnapshot,
    boundary: int,
    histograms: HistogramColumns,
    starts: StartColumns,
) -> tuple[list[BlockMeta], SampleTriple]:
    """Every sample decoded, sorted by (ref, timestamp) with exact duplicates dropped
    (the first stays), split at the boundary, one block written per window."""
    parts = [decode_samples(b.data) for b in snapshot.frozen]
    parts.append(snapshot.recent.sorted_view())
    refs, ts, values = (np.concatenate([p[i] for p in parts]) for i in range(3))
    order = np.lexsort((ts, refs))
    refs, ts, values = refs[order], ts[order], values[order]
    repeat = np.zeros(len(refs), dtype=bool)
    repeat[1:] = (refs[1:] == refs[:-1]) & (ts[1:] == ts[:-1])
    refs, ts, values = refs[~repeat], ts[~repeat], values[~repeat]
    old = ts < boundary
    keep = refs[~old], ts[~old], values[~old]
    refs, ts, values = refs[old], ts[old], values[old]
    h_refs, h_ts, h_payloads = histograms
    windows = ts - ts % BLOCK_DURATION_MS
    h_windows = h_ts - h_ts % BLOCK_DURATION_MS
    s_windows = starts.ts - starts.ts % BLOCK_DURATION_MS
    metas = []
    for start in np.unique(np.concatenate((windows, h_windows, s_windows))).tolist():
        inside = windows == start
        w_refs, w_ts, w_values = refs[inside], ts[inside], values[inside]
        floats = {int(w_refs[a]): (a, b) for a, b in run_bounds(w_refs)}
        at = np.flatnonzero(h_windows == start)
        w_hist: dict[int, HistogramPart] = {
            int(h_refs[at][a]): (h_ts[at][a:b], [h_payloads[i] for i in at[a:b].tolist()])
            for a, b in run_bounds(h_refs[at])
        }
        events = starts.select(s_windows == start)
        w_starts: dict[int, StartPart] = {
            int(events.refs[a]): (events.ts[a:b], events.starts[a:b])
            for a, b in run_bounds(events.refs)
        }
        for ref in w_starts:
            floats.setdefault(ref, (0, 0))
        runs = sorted((key_label_pairs(labels[ref]), ref) for ref in floats.keys() | w_hist.keys())
        writer = BlockWriter(parent, new_ulid())
        for series_labels, ref in runs:
            a, b = floats.get(ref, (0, 0))
            writer.add_series(
                series_labels, w_ts[a:b], w_values[a:b], w_hist.get(ref), w_starts.get(ref)
            )
        metas.append(
            writer.finish(tenant=TENANT, mint=int(start), maxt=int(start) + BLOCK_DURATION_MS)
        )
    return metas, keep


# --- a head with everything a cut must get right ---------------------------------------


def random_labels(rng: random.Random, count: int) -> list[bytes]:
    """Series keys in an order unrelated to label order; names and values from TRICKY."""
    pairs: set[tuple[tuple[str, str], ...]] = set()
    while len(pairs) < count:
        extra = {f"l{rng.randint(0, 3)}": rng.choice(TRICKY) for _ in range(rng.randint(0, 3))}
        name = rng.choice(["up", "up_total", "a" + rng.choice(TRICKY)])
        pairs.add(tuple(sorted({"__name__": name, **extra}.items())))
    keys = [series_key_of(encode_labels(list(p))) for p in pairs]
    rng.shuffle(keys)
    return keys


def random_batch(rng: random.Random, series: int, count: int, mint: int, maxt: int) -> SampleTriple:
    """Samples sorted by (ref, timestamp), one per pair, on a 15 s grid (so that batches
    over the same time share pairs), values with special bits too."""
    steps = (maxt - mint) // 15_000
    found = {(rng.randrange(series), mint + 15_000 * rng.randint(0, steps)) for _ in range(count)}
    refs, ts = zip(*sorted(found), strict=True)
    bits = [rng.choice(SPECIAL_BITS) if rng.random() < 0.1 else rng.getrandbits(64) for _ in ts]
    return (
        np.array(refs, dtype=np.uint32),
        np.array(ts, dtype=np.int64),
        np.array(bits, dtype=np.uint64).view(np.float64),
    )


def random_snapshot(rng: random.Random, series: int, span_ms: int) -> HeadSnapshot:
    """Batches over overlapping stretches of time, so that many a (ref, timestamp) turns
    up in several, with other values; the uncompressed buffer holds a pair twice."""
    frozen = []
    for _ in range(12):
        mint = T0 + 15_000 * rng.randint(0, span_ms // 15_000 - 1)
        maxt = min(T0 + span_ms - 1, mint + rng.randint(15_000, span_ms // 3))
        frozen.append(compress_batch(*random_batch(rng, series, rng.randint(1, 2000), mint, maxt)))
    recent = SampleColumns()
    refs, ts, values = random_batch(rng, series, 500, T0, T0 + span_ms - 1)
    recent.extend(refs, ts, values)
    recent.extend(refs[:3], ts[:3], values[:3] * 2)  # the same pairs, other values
    return HeadSnapshot(frozen, recent)


def duplicates(snapshot: HeadSnapshot) -> int:
    """How many samples are at a (ref, timestamp) an earlier one holds."""
    pairs = [
        pair
        for refs, ts, _ in snapshot.sources()
        for pair in zip(refs.tolist(), ts.tolist(), strict=True)
    ]
    return len(pairs) - len(set(pairs))


def random_histograms(rng: random.Random, series: int, boundary: int) -> HistogramColumns:
    """Histograms among the float samples, and in a window of its own before them."""
    drawn = {(rng.randrange(series), rng.randint(T0, boundary - 1)) for _ in range(40)}
    found = sorted(drawn | {(0, T0 - BLOCK_DURATION_MS + 5)})
    return (
        np.array([r for r, _ in found], dtype=np.uint32),
        np.array([t for _, t in found], dtype=np.int64),
        [canonical(int_counter(i % 21, t)) for i, (_, t) in enumerate(found)],
    )


def random_starts(rng: random.Random, snapshot: HeadSnapshot, boundary: int) -> StartColumns:
    """Events at samples before the boundary, and at times with no sample."""
    refs, ts, _ = snapshot.sorted_samples()
    picked = [i for i in range(len(refs)) if ts[i] < boundary and rng.random() < 0.01]
    lonely = [(rng.randrange(5), rng.randint(T0, boundary - 1)) for _ in range(3)]
    pairs = sorted({(int(refs[i]), int(ts[i])) for i in picked} | set(lonely))
    return StartColumns(
        np.array([r for r, _ in pairs], dtype=np.uint32),
        np.array([t for _, t in pairs], dtype=np.int64),
        np.array([t - 1000 for _, t in pairs], dtype=np.int64),
    )


def no_histograms() -> HistogramColumns:
    return np.zeros(0, np.uint32), np.zeros(0, np.int64), []


def block_files(parent: Path, metas: list[BlockMeta]) -> list[tuple[object, ...]]:
    """Each block's index and chunk bytes and its meta but for its id, by window."""
    out: list[tuple[object, ...]] = []
    for meta in sorted(metas, key=lambda m: m.mint):
        block = parent / meta.block_id
        chunks = [p.read_bytes() for p in sorted((block / CHUNKS_DIRNAME).iterdir())]
        doc = {k: v for k, v in meta.to_dict().items() if k not in ("ulid", "compaction")}
        out.append(((block / INDEX_FILENAME).read_bytes(), chunks, doc))
    return out


def kept_samples(kept: list[FrozenBatch]) -> SampleTriple:
    parts = [decode_samples(b.data) for b in kept]
    empty = np.zeros(0, np.uint32), np.zeros(0, np.int64), np.zeros(0, np.float64)
    refs, ts, values = (np.concatenate([p[i] for p in [empty, *parts]]) for i in range(3))
    return refs, ts, values


def as_lists(samples: SampleTriple) -> tuple[list[int], list[int], list[int]]:
    refs, ts, values = samples
    return refs.tolist(), ts.tolist(), values.view(np.uint64).tolist()


# --- the tests ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("group_samples", "split_samples", "pass_samples", "batch_samples"),
    [(1 << 17, 1 << 17, 1 << 23, 65_536), (50, 700, 3000, 97), (1, 1, 1, 1)],
    ids=["as-shipped", "small-groups", "one-sample-groups"],
)
@pytest.mark.parametrize("seed", [1, 2])
def test_cut_writes_the_blocks_and_keeps_the_samples_of_the_reference_cut(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    group_samples: int,
    split_samples: int,
    pass_samples: int,
    batch_samples: int,
    seed: int,
) -> None:
    monkeypatch.setattr(gateway.head_cut, "GROUP_TARGET_SAMPLES", group_samples)
    monkeypatch.setattr(gateway.head_cut, "SPLIT_SAMPLES", split_samples)
    monkeypatch.setattr(gateway.head_cut, "PASS_SAMPLES", pass_samples)
    monkeypatch.setattr(gateway.head_cut, "FROZEN_BATCH_SAMPLES", batch_samples)
    rng = random.Random(seed)
    labels = random_labels(rng, 40)
    snapshot = random_snapshot(rng, len(labels), 3 * BLOCK_DURATION_MS)
    # Mid-window: the window holding the boundary is cut up to it, and kept from it on.
    boundary = T0 + 2 * BLOCK_DURATION_MS + BLOCK_DURATION_MS // 3
    histograms = random_histograms(rng, len(labels), boundary)
    starts = random_starts(rng, snapshot, boundary)
    assert duplicates(snapshot) > 100

    ours = cut_snapshot(
        tmp_path / "new", TENANT, labels, snapshot, boundary, histograms=histograms, starts=starts
    )
    (tmp_path / "old").mkdir()
    metas, keep = reference_cut(tmp_path / "old", labels, snapshot, boundary, histograms, starts)

    assert len(ours.metas) == 4
    assert block_files(tmp_path / "new", ours.metas) == block_files(tmp_path / "old", metas)
    assert as_lists(kept_samples(ours.kept)) == as_lists(keep)
    assert all(b.samples <= batch_samples for b in ours.kept)


def test_a_cut_of_everything_keeps_nothing_and_one_of_nothing_keeps_everything(
    tmp_path: Path,
) -> None:
    rng = random.Random(3)
    labels = random_labels(rng, 10)
    snapshot = random_snapshot(rng, len(labels), BLOCK_DURATION_MS)
    everything = cut_snapshot(tmp_path / "a", TENANT, labels, snapshot, T0 + BLOCK_DURATION_MS + 1)
    assert everything.kept == []
    assert sum(m.stats.samples for m in everything.metas) == len(snapshot.sorted_samples()[0])

    nothing = cut_snapshot(tmp_path / "b", TENANT, labels, snapshot, T0)
    assert nothing.metas == []
    assert as_lists(kept_samples(nothing.kept)) == as_lists(snapshot.sorted_samples())


def test_samples_ages_apart_in_one_batch_are_cut_in_their_windows_alone(tmp_path: Path) -> None:
    """Batches reaching from the earliest time the gateway takes to the latest: windows
    between them are neither visited nor written (a cut once tried to list them)."""
    labels = random_labels(random.Random(6), 3)
    far = [EARLIEST_TIMESTAMP, T0 - 1, T0, T0 + 5, LATEST_TIMESTAMP]
    frozen = [
        compress_batch(np.array([r] * 5, np.uint32), np.array(far, np.int64), np.arange(5.0) + r)
        for r in range(3)
    ]
    recent = SampleColumns()
    recent.extend(np.array([1, 1], np.uint32), np.array(far[1:3], np.int64), np.array([7.0, 8.0]))
    snapshot = HeadSnapshot(frozen, recent)
    boundary = LATEST_TIMESTAMP + 1
    none = StartColumns.empty()
    ours = cut_snapshot(tmp_path / "new", TENANT, labels, snapshot, boundary)
    (tmp_path / "old").mkdir()
    metas, keep = reference_cut(tmp_path / "old", labels, snapshot, boundary, no_histograms(), none)
    assert [m.mint for m in sorted(ours.metas, key=lambda m: m.mint)] == [
        EARLIEST_TIMESTAMP,
        T0 - BLOCK_DURATION_MS,
        T0,
        LATEST_TIMESTAMP + 1 - BLOCK_DURATION_MS,
    ]
    assert block_files(tmp_path / "new", ours.metas) == block_files(tmp_path / "old", metas)
    assert ours.kept == []
    assert len(keep[0]) == 0


def test_passes_take_windows_together_up_to_pass_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway.head_cut, "PASS_SAMPLES", 10)
    counts = {40: 0, 0: 0, 10: 4, 20: 6, 30: 11, 50: 1}
    assert passes(counts) == [[0, 10, 20], [30], [40, 50]]
    assert passes({}) == []


def test_a_window_the_batches_only_span_gets_no_block(tmp_path: Path) -> None:
    labels = random_labels(random.Random(4), 2)
    # One batch from the first window to the third: the second holds no sample.
    batch = compress_batch(
        np.array([0, 0], dtype=np.uint32),
        np.array([T0, T0 + 2 * BLOCK_DURATION_MS], dtype=np.int64),
        np.array([1.0, 2.0]),
    )
    cut = cut_snapshot(tmp_path, TENANT, labels, HeadSnapshot([batch], SampleColumns()), T0 + 10**9)
    assert sorted(m.mint for m in cut.metas) == [T0, T0 + 2 * BLOCK_DURATION_MS]


def test_label_sort_key_orders_keys_as_their_label_pairs_do() -> None:
    rng = random.Random(5)
    keys = random_labels(rng, 300)
    by_pairs = sorted(keys, key=key_label_pairs)
    assert sorted(keys, key=label_sort_key) == by_pairs
    assert len({tuple(key_label_pairs(k)) for k in keys}) == len(keys)


def counter_window(series: int) -> tuple[list[bytes], HeadSnapshot]:
    """A 2 h window of counters scraped every 15 s, in batches of 24 scrapes."""
    labels = [
        series_key_of(encode_labels([("__name__", "m"), ("i", f"{i:05d}")])) for i in range(series)
    ]
    rng = np.random.default_rng(6)
    frozen = []
    for first in range(0, 480, 24):
        refs = np.repeat(np.arange(series, dtype=np.uint32), 24)
        ts = T0 + np.tile(np.arange(first, first + 24, dtype=np.int64) * 15_000, series)
        values = np.round(np.cumsum(rng.integers(0, 50, len(refs))) / 10, 1)
        frozen.append(compress_batch(refs, ts, values))
    return labels, HeadSnapshot(frozen, SampleColumns())


def cut_peak_bytes(tmp_path: Path, series: int) -> int:
    """The most the cut of `counter_window(series)` holds at once (tracemalloc)."""
    labels, snapshot = counter_window(series)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        cut = cut_snapshot(tmp_path / str(series), TENANT, labels, snapshot, T0 + BLOCK_DURATION_MS)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert cut.metas[0].stats.samples == series * 480
    return peak


def test_a_cut_grows_by_a_few_bytes_a_sample_it_cuts(tmp_path: Path) -> None:
    """Issue 10: a cut held 60 bytes for each sample of the window at once (all decoded,
    sorted and split). Now it holds the window compressed again, about 3 bytes a sample,
    besides what a group and a few batches take whatever the window's size."""
    small, large = cut_peak_bytes(tmp_path, 500), cut_peak_bytes(tmp_path, 2000)
    per_sample = (large - small) / ((2000 - 500) * 480)
    assert per_sample < 12, f"{per_sample:.1f} bytes for each more sample cut"
