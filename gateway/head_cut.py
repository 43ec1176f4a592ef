"""Cutting head samples into blocks: one block per aligned time window.

Pure of HTTP and of the WAL. `cut_snapshot` cuts a tenant's detached head (compressed
batches, each sorted by (ref, timestamp)) at a boundary time without ever holding its
samples decoded all at once, a few windows (a pass) at a time: the batches reaching into
the pass are decoded a few at a time and what they hold in it compressed again in pieces
by window and group of series (consecutive in label order); then window by window, group
after group, the pieces are merged and their series written in label order into the
window's block. What lies after the boundary is merged the same way, by groups of refs,
into the batches the head gets back. Blocks go to the upload queue directory
(docs/shipping.md); docs/head.md#cutting-into-blocks says what a cut holds.
`build_blocks` writes blocks of columns already merged.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from blocks.columns import run_bounds
from blocks.meta import BlockMeta
from blocks.sample_codec import decode_samples, encode_samples
from blocks.start_store import StartPart
from blocks.ulid import new_ulid
from blocks.writer import BlockWriter
from gateway.head import (
    FROZEN_BATCH_SAMPLES,
    LAST_TIME,
    FrozenBatch,
    HeadSnapshot,
    SampleTriple,
    compress_batch,
    key_label_pairs,
    merge_sorted,
)
from gateway.head_batch import BLOCK_DURATION_MS as BLOCK_DURATION_MS
from gateway.head_batch import MAX_LEVEL, concatenate_triples, new_run_id
from gateway.head_batch import window_start as window_start
from gateway.head_histograms import HistogramPart
from gateway.head_starts import StartColumns

# Histogram samples as columns sorted by (ref, timestamp): refs, timestamps, messages.
HistogramColumns = tuple[np.ndarray, np.ndarray, list[bytes]]

# A cut merges and writes one group of series of a window at a time, about this many
# samples: 2.5 MiB of columns, a few times that while they are merged.
GROUP_TARGET_SAMPLES = 1 << 17
# ... in at most this many groups a window: each group gets a piece of every batch, and
# with many series pieces of a few samples would spend the time in Python, not numpy.
MAX_GROUPS = 256
# A pass of the cut takes windows together while they hold at most this many samples
# (about 25 MB of pieces): a batch reaching into several of them is decoded once a pass,
# not once a window, and the pieces held stay bounded whatever the head holds.
PASS_SAMPLES = 1 << 23
# Batches are split this many samples at a time (small ones taken together), so that a
# piece holds enough samples for its compression to pay.
SPLIT_SAMPLES = 1 << 17


@dataclass(frozen=True, slots=True)
class CutResult:
    """The blocks a cut wrote, and the samples from its boundary on, to go back."""

    metas: list[BlockMeta]
    kept: list[FrozenBatch]


@dataclass(frozen=True, slots=True)
class SeriesGroups:
    """Series cut together: consecutive in label order for blocks, in ref order for
    what the head keeps; `size` series a group."""

    size: int
    # Per ref, the series' place in label order (None when nothing goes to blocks).
    rank: np.ndarray | None

    def by_label(self, refs: np.ndarray) -> np.ndarray:
        """The block group of each ref."""
        assert self.rank is not None
        out: np.ndarray = self.rank[refs] // self.size
        return out

    @property
    def count(self) -> int:
        """Block groups there are: one more than the highest."""
        return 1 if self.rank is None else max(1, -(-len(self.rank) // self.size))

    def by_ref(self, refs: np.ndarray) -> np.ndarray:
        """The kept group of each ref."""
        out: np.ndarray = refs // self.size
        return out


def label_sort_key(key: bytes) -> bytes:
    """Bytes that sort as the series' (name, value) pairs do (key_label_pairs): each
    string's UTF-8 (which sorts as its code points), its 0 bytes escaped, ends in two 0
    bytes, so that a string sorts before its extensions, as Python's str does."""
    return b"".join(
        text.encode().replace(b"\0", b"\0\1") + b"\0\0"
        for pair in key_label_pairs(key)
        for text in pair
    )


def label_ranks(labels: Sequence[bytes]) -> np.ndarray:
    """Per ref, its series' place in label order: the order a block lists series in."""
    order = sorted(range(len(labels)), key=lambda ref: label_sort_key(labels[ref]))
    ranks = np.empty(len(labels), dtype=np.int32)  # refs are u32, series fewer than 2**31
    ranks[np.array(order, dtype=np.int64)] = np.arange(len(labels), dtype=np.int32)
    return ranks


def plan_groups(labels: Sequence[bytes], fullest: int, *, ranked: bool) -> SeriesGroups:
    """Groups of about GROUP_TARGET_SAMPLES samples of a window of `fullest` samples, were
    they spread evenly over the series; ranked in label order if anything goes to blocks."""
    count = min(MAX_GROUPS, max(1, -(-fullest // GROUP_TARGET_SAMPLES)))
    size = max(1, -(-len(labels) // count))
    return SeriesGroups(size, label_ranks(labels) if ranked else None)


def cut_snapshot(
    parent: Path,
    tenant: str,
    labels: Sequence[bytes],
    snapshot: HeadSnapshot,
    boundary: int,
    *,
    duration_ms: int = BLOCK_DURATION_MS,
    external_labels: dict[str, str] | None = None,
    histograms: HistogramColumns | None = None,
    starts: StartColumns | None = None,
) -> CutResult:
    """Blocks under `parent` of the snapshot's float samples before `boundary` (with
    `histograms` and `starts`: those before it), and the samples from it on as batches.

    Exact duplicates are dropped, the first in the snapshot's order staying, and the
    blocks are byte for byte those `build_blocks` writes of `snapshot.sorted_samples()`.
    A few windows at a time (a pass): the batches reaching into them decoded and their
    samples compressed again in pieces by window and group, then group after group merged
    and written; so a cut holds one pass's pieces at most.
    """
    h_columns = histograms if histograms is not None else _no_histograms()
    events = starts if starts is not None else StartColumns.empty()
    counts = window_samples(snapshot, boundary, duration_ms)
    h_windows = h_columns[1] - h_columns[1] % duration_ms
    s_windows = events.ts - events.ts % duration_ms
    for start in h_windows.tolist() + s_windows.tolist():
        counts.setdefault(start, 0)
    groups = plan_groups(labels, max(counts.values(), default=0), ranked=bool(counts))
    metas: list[BlockMeta] = []
    for windows in passes(counts):
        pieces = _split_pass(snapshot, windows, boundary, groups, duration_ms)
        for index, start in enumerate(windows):
            # Popped: a window's pieces go as soon as its block is written.
            at = index * groups.count
            w_pieces = {k - at: pieces.pop(k) for k in sorted(pieces) if k // groups.count == index}
            w_hist = _histograms_by_ref(*h_columns, h_windows == start)
            w_starts = _starts_by_ref(events.select(s_windows == start))
            if w_pieces or w_hist or w_starts:  # else its batches hold samples around it only
                with _block(parent, tenant, start, duration_ms, external_labels, metas) as writer:
                    _write_groups(writer, labels, groups, w_pieces, w_hist, w_starts)
                del writer  # its per-series columns, before the next window's
    kept = merge_kept(_split(snapshot, boundary, LAST_TIME, lambda refs, _: groups.by_ref(refs)))
    return CutResult(metas, kept)


def window_samples(snapshot: HeadSnapshot, boundary: int, duration_ms: int) -> dict[int, int]:
    """Per start of a window before `boundary`, at least as many samples as the snapshot
    holds in it, and every window it holds any in: a batch within two windows counts all
    its samples in both, one reaching further is decoded to count them."""
    counts: dict[int, int] = {}
    for batch in snapshot.frozen:
        if batch.mint < boundary:
            first = window_start(batch.mint, duration_ms)
            last = window_start(min(batch.maxt, boundary - 1), duration_ms)
            if last - first <= duration_ms:
                for start in {first, last}:
                    counts[start] = counts.get(start, 0) + batch.samples
            else:
                _count_windows(counts, decode_samples(batch.data)[1], boundary, duration_ms)
    _count_windows(counts, snapshot.recent.timestamps.view, boundary, duration_ms)
    return counts


def _count_windows(counts: dict[int, int], ts: np.ndarray, boundary: int, duration_ms: int) -> None:
    windows, found = np.unique(ts[ts < boundary] // duration_ms, return_counts=True)
    for window, count in zip(windows.tolist(), found.tolist(), strict=True):
        start = window * duration_ms
        counts[start] = counts.get(start, 0) + count


def passes(counts: dict[int, int]) -> list[list[int]]:
    """The windows in time order, taken together while they hold PASS_SAMPLES at most."""
    out: list[list[int]] = []
    held = 0
    for start in sorted(counts):
        if not out or held + counts[start] > PASS_SAMPLES:
            out.append([])
            held = 0
        out[-1].append(start)
        held += counts[start]
    return out


def _split_pass(
    snapshot: HeadSnapshot,
    windows: list[int],
    boundary: int,
    groups: SeriesGroups,
    duration_ms: int,
) -> dict[int, list[bytes]]:
    """The pieces of a pass's windows, keyed by window index * groups.count + group."""
    starts = np.array(windows, dtype=np.int64)

    def key_of(refs: np.ndarray, ts: np.ndarray) -> np.ndarray:
        index = np.searchsorted(starts, ts - ts % duration_ms)
        # window_samples names every window holding samples; were one missing, its
        # samples would go to another window's block.
        assert np.array_equal(starts[index], ts - ts % duration_ms), "window not counted"
        out: np.ndarray = index * groups.count + groups.by_label(refs)
        return out

    maxt = min(windows[-1] + duration_ms, boundary) - 1
    return _split(snapshot, windows[0], maxt, key_of)


def _write_groups(
    writer: BlockWriter,
    labels: Sequence[bytes],
    groups: SeriesGroups,
    pieces: dict[int, list[bytes]],
    histograms: dict[int, HistogramPart],
    starts: dict[int, StartPart],
) -> None:
    """Merge a window's pieces group by group and add the series to its block; the
    pieces go as their group is written."""
    assert groups.rank is not None
    others = _refs_by_group(histograms.keys() | starts.keys(), groups)
    for group in sorted(pieces.keys() | others.keys()):
        parts = [decode_samples(p) for p in pieces.pop(group, [])]
        merged = merge_sorted(parts) if parts else _no_samples()
        del parts
        _add_series(writer, labels, groups.rank, merged, histograms, starts, others.get(group, ()))


def _split(
    snapshot: HeadSnapshot,
    mint: int,
    maxt: int,
    key_of: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> dict[int, list[bytes]]:
    """The snapshot's samples in [mint, maxt] compressed again in pieces by key (a piece
    per key and unit of batches, in the batches' order: merging them in that order keeps
    the first of duplicates first), its batches decoded a few at a time."""
    pieces: dict[int, list[bytes]] = {}
    for refs, ts, values in _units(snapshot.sources(mint, maxt)):
        inside = (ts >= mint) & (ts <= maxt)
        if not inside.all():
            refs, ts, values = refs[inside], ts[inside], values[inside]
        for key, at in _runs_by(key_of(refs, ts)):
            pieces.setdefault(key, []).append(encode_samples(refs[at], ts[at], values[at]))
    return pieces


def _units(sources: Iterator[SampleTriple]) -> Iterator[SampleTriple]:
    """Consecutive sources concatenated into units of at least SPLIT_SAMPLES samples."""
    held: list[SampleTriple] = []
    count = 0
    for source in sources:
        held.append(source)
        count += len(source[0])
        if count >= SPLIT_SAMPLES:
            unit = concatenate_triples(held)
            held, count = [], 0
            yield unit
    if count:
        yield concatenate_triples(held)


def _runs_by(key: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(key value, positions holding it in ascending order) for each value, ascending."""
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    for a, b in run_bounds(sorted_key):
        yield int(sorted_key[a]), order[a:b]


def merge_kept(keep: dict[int, list[bytes]]) -> list[FrozenBatch]:
    """The kept pieces merged group by group (in ref order) into batches, as consumed."""
    batches = []
    # One run, already long per series: merging it again would gain little.
    run = new_run_id()
    for group in sorted(keep):
        refs, ts, values = merge_sorted([decode_samples(p) for p in keep.pop(group)])
        for start in range(0, len(refs), FROZEN_BATCH_SAMPLES):
            part = slice(start, start + FROZEN_BATCH_SAMPLES)
            batches.append(
                compress_batch(refs[part], ts[part], values[part], run=run, level=MAX_LEVEL)
            )
    return batches


def build_blocks(
    parent: Path,
    tenant: str,
    labels: Sequence[bytes],
    refs: np.ndarray,
    ts: np.ndarray,
    values: np.ndarray,
    *,
    duration_ms: int = BLOCK_DURATION_MS,
    external_labels: dict[str, str] | None = None,
    histograms: HistogramColumns | None = None,
    starts: StartColumns | None = None,
) -> list[BlockMeta]:
    """Write one block per window the samples (histograms, start events) touch, under `parent`;
    their metas. `labels[ref]`: the series' key as the head keeps it (head.series_key_of);
    samples sorted by (ref, timestamp), one per pair."""
    metas: list[BlockMeta] = []
    h_refs, h_ts, h_payloads = histograms if histograms is not None else _no_histograms()
    events = starts if starts is not None else StartColumns.empty()
    if not len(ts) and not len(h_ts) and not len(events):
        return metas
    rank = label_ranks(labels)
    windows = ts - ts % duration_ms
    h_windows = h_ts - h_ts % duration_ms
    s_windows = events.ts - events.ts % duration_ms
    for start in np.unique(np.concatenate((windows, h_windows, s_windows))).tolist():
        inside = windows == start
        samples = refs[inside], ts[inside], values[inside]
        w_hist = _histograms_by_ref(h_refs, h_ts, h_payloads, h_windows == start)
        w_starts = _starts_by_ref(events.select(s_windows == start))
        others = w_hist.keys() | w_starts.keys()
        with _block(parent, tenant, start, duration_ms, external_labels, metas) as writer:
            _add_series(writer, labels, rank, samples, w_hist, w_starts, others)
    return metas


@contextmanager
def _block(
    parent: Path,
    tenant: str,
    start: int,
    duration_ms: int,
    external_labels: dict[str, str] | None,
    metas: list[BlockMeta],
) -> Iterator[BlockWriter]:
    """A writer of the window at `start`'s block: finished (its meta added to `metas`)
    when the body is done, thrown away if it fails."""
    writer = BlockWriter(parent, new_ulid())
    try:
        yield writer
        metas.append(
            writer.finish(
                tenant=tenant, mint=start, maxt=start + duration_ms, external_labels=external_labels
            )
        )
    except BaseException:
        writer.abort()
        raise


def _add_series(
    writer: BlockWriter,
    labels: Sequence[bytes],
    rank: np.ndarray,
    samples: SampleTriple,
    histograms: dict[int, HistogramPart],
    starts: dict[int, StartPart],
    others: Collection[int],
) -> None:
    """Add series to a block in label order: those with samples (sorted by ref, time) and
    `others` (refs with histograms or start events only, or also)."""
    refs, ts, values = samples
    floats = {int(refs[a]): (a, b) for a, b in run_bounds(refs)}
    # An event comes with its sample; were that ever not so, its series is still written.
    for ref in sorted(floats.keys() | set(others), key=lambda r: int(rank[r])):
        a, b = floats.get(ref, (0, 0))
        writer.add_series(
            key_label_pairs(labels[ref]), ts[a:b], values[a:b], histograms.get(ref), starts.get(ref)
        )


def _refs_by_group(refs: Collection[int], groups: SeriesGroups) -> dict[int, list[int]]:
    """Refs by block group."""
    out: dict[int, list[int]] = {}
    if refs:
        ordered = np.array(sorted(refs), dtype=np.int64)
        for ref, group in zip(ordered.tolist(), groups.by_label(ordered).tolist(), strict=True):
            out.setdefault(group, []).append(ref)
    return out


def _no_samples() -> SampleTriple:
    return np.zeros(0, dtype=np.uint32), np.zeros(0, dtype=np.int64), np.zeros(0, np.float64)


def _no_histograms() -> HistogramColumns:
    return np.zeros(0, dtype=np.uint32), np.zeros(0, dtype=np.int64), []


def split_histograms_at(
    columns: HistogramColumns, boundary: int
) -> tuple[HistogramColumns, HistogramColumns]:
    """Histograms before `boundary` (to blocks) and the rest (stay in the head)."""
    refs, ts, payloads = columns
    old = ts < boundary
    flags = old.tolist()
    return (
        (refs[old], ts[old], [p for p, o in zip(payloads, flags, strict=True) if o]),
        (refs[~old], ts[~old], [p for p, o in zip(payloads, flags, strict=True) if not o]),
    )


def split_starts_at(events: StartColumns, boundary: int) -> tuple[StartColumns, StartColumns]:
    """Start-timestamp events of samples before `boundary` (to blocks) and the rest."""
    old = events.ts < boundary
    return events.select(old), events.select(~old)


def _starts_by_ref(events: StartColumns) -> dict[int, StartPart]:
    """Events sorted by (ref, timestamp) as one (timestamps, starts) part per series ref."""
    return {
        int(events.refs[a]): (events.ts[a:b], events.starts[a:b])
        for a, b in run_bounds(events.refs)
    }


def _histograms_by_ref(
    refs: np.ndarray, ts: np.ndarray, payloads: list[bytes], inside: np.ndarray
) -> dict[int, HistogramPart]:
    """The histograms selected by `inside`, per series ref (columns sorted by ref, time)."""
    at = np.flatnonzero(inside)
    w_refs, w_ts = refs[at], ts[at]
    out = {}
    for a, b in run_bounds(w_refs):
        out[int(w_refs[a])] = (w_ts[a:b], [payloads[i] for i in at[a:b].tolist()])
    return out
