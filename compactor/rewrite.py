"""Writing the block a compaction makes: sources merged, or a downsampled copy.

Sources are read with range reads a batch of series at a time and the new block is
written page by page into the work directory, so memory holds one batch, not a block.
The caller uploads the result. Merge rules (docs/compactor.md#merging): each timestamp
once; where sources disagree, the newest block (highest id) wins, the rule the querier
applies too, so a query answers the same before and after compaction. Native histograms
are merged by the same rule and copied bit for bit; downsampling keeps the ones
`rate`/`increase` need (blocks/histogram_downsample.py, docs/compactor.md). Start-timestamp
events of float samples (blocks/start_store.py) merge by the same rule too, and a
downsampled block keeps all of them, on the series' own label set: they tell the resets.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from blocks.aggregates import (
    Aggregate,
    Aggregates,
    Samples,
    downsample_aggregate,
    downsample_raw,
    join_counter,
    split_aggregate,
    with_aggregate,
)
from blocks.histogram_downsample import downsample_histograms
from blocks.index import BlockIndex
from blocks.meta import BlockMeta, Resolution
from blocks.objstore.base import ObjectStore
from blocks.reader import BlockReader
from blocks.start_store import StartPart, empty_part, merge_start_parts
from blocks.ulid import new_ulid
from blocks.writer import BlockWriter
from compactor.planner import Downsample, Merge
from gateway.validate import METRIC_NAME
from querier.merge import HistogramPart, merge_histogram_parts, merge_parts

log = logging.getLogger(__name__)

LabelKey = tuple[tuple[str, str], ...]
# Decoded samples held per batch, across sources: 2 Mi samples are 32 MiB of columns.
BATCH_SAMPLES = 1 << 21
# A batch never holds more series than this, however short they are.
BATCH_SERIES = 4096
# Downsampled series kept for the next aggregates of the same series (bytes of columns).
AGGREGATE_CACHE_BYTES = 64 << 20
# Progress is logged at most this often.
PROGRESS_EVERY_S = 10.0

Progress = Callable[[int, int], None]  # (series done, series in all)


@dataclass(frozen=True, slots=True)
class Written:
    """A block written into the work directory, ready to upload."""

    meta: BlockMeta
    path: Path
    seconds: float
    samples_read: int
    start_events: int = 0


class SourceBlock:
    """One input block: its reader and where each of its series is."""

    def __init__(self, store: ObjectStore, meta: BlockMeta) -> None:
        self.meta = meta
        self.reader = BlockReader(store, f"{meta.tenant}/{meta.block_id}", meta=meta)
        index = self.reader.index
        self.ids: dict[LabelKey, int] = {
            tuple(index.labels(i)): i for i in range(index.series_count)
        }
        refs = index.histogram_refs()
        self.histogram_counts = refs.samples_in_range(
            np.arange(index.series_count), np.iinfo(np.int64).min, np.iinfo(np.int64).max
        )
        # Samples and histograms: what a batch holds of this series.
        self.sample_counts = series_sample_counts(index) + self.histogram_counts
        self.has_histograms = index.histograms is not None

    def read(self, ids: Sequence[int]) -> dict[int, Samples]:
        """Every sample of these series."""
        if not ids:
            return {}
        return self.reader.read_series(ids, np.iinfo(np.int64).min, np.iinfo(np.int64).max)

    def read_starts(self, series: int) -> StartPart:
        """A series' start-timestamp events within the block's range (none from a block
        without them)."""
        events = self.reader.index.starts
        if events is None:
            return empty_part()
        return events.part(series, self.meta.mint, self.meta.maxt - 1)

    def read_histograms(self, ids: Sequence[int]) -> dict[int, HistogramPart]:
        """Every histogram of these series (none from a block without histograms)."""
        if not ids or not self.has_histograms:
            return {}
        lowest, highest = np.iinfo(np.int64).min, np.iinfo(np.int64).max
        return self.reader.read_histograms(ids, lowest, highest)


def series_sample_counts(index: BlockIndex) -> np.ndarray:
    """Samples per series, from the chunk table alone."""
    total = np.zeros(len(index.chunks.samples) + 1, dtype=np.int64)
    np.cumsum(index.chunks.samples, out=total[1:])
    offsets = index.chunk_offsets.astype(np.int64)
    counts: np.ndarray = total[offsets[1:]] - total[offsets[:-1]]
    return counts


def write_merge(
    store: ObjectStore, action: Merge, work_dir: Path, progress: Progress | None = None
) -> Written:
    """The merged block of `action.sources`, in `work_dir`."""
    started = time.monotonic()
    sources = [SourceBlock(store, meta) for meta in action.sources]
    # Newest last: merge_parts lets the last part win a timestamp (ids sort by creation).
    by_age = sorted(sources, key=lambda s: s.meta.block_id)
    every = sorted(set().union(*(s.ids for s in sources)))
    downsampled = action.resolution != Resolution.RAW
    writer = BlockWriter(work_dir, new_ulid())
    read = 0
    try:
        for batch in _batches(every, lambda key: sum(_count(s, key) for s in sources), progress):
            wanted = {id(s): _wanted_ids(s, batch, downsampled) for s in sources}
            parts = {id(s): s.read(wanted[id(s)]) for s in sources}
            histograms = {id(s): s.read_histograms(wanted[id(s)]) for s in sources}
            read += sum(len(ts) for p in parts.values() for ts, _ in p.values())
            read += sum(len(ts) for p in histograms.values() for ts, _ in p.values())
            for key in batch:
                if downsampled and split_aggregate(key)[1] == Aggregate.COUNTER:
                    ts, values = _joined_counter(key, sources, parts)
                else:
                    found = [parts[id(s)][s.ids[key]] for s in by_age if key in s.ids]
                    ts, values = merge_parts(found, action.mint, action.maxt - 1)
                found_histograms = [
                    histograms[id(s)][s.ids[key]]
                    for s in by_age
                    if key in s.ids and s.ids[key] in histograms[id(s)]
                ]
                kept = merge_histogram_parts(found_histograms, action.mint, action.maxt - 1)
                starts = merge_start_parts(
                    (s.read_starts(s.ids[key]) for s in by_age if key in s.ids),
                    action.mint,
                    action.maxt - 1,
                )
                writer.add_series(list(key), ts, values, kept, starts)
        meta = writer.finish(
            tenant=action.tenant,
            resolution=action.resolution,
            level=action.level,
            sources=action.output_sources,
            external_labels=action.sources[0].external_labels,
            mint=action.mint,
            maxt=action.maxt,
        )
    except BaseException:
        writer.abort()
        raise
    return Written(meta, writer.final_dir, time.monotonic() - started, read, writer.start_events)


def _count(source: SourceBlock, key: LabelKey) -> int:
    series = source.ids.get(key)
    return 0 if series is None else int(source.sample_counts[series])


def _wanted_ids(source: SourceBlock, batch: Sequence[LabelKey], downsampled: bool) -> list[int]:
    """The source's series a batch needs: its own, and for counters the `last` beside them."""
    ids = {source.ids[key] for key in batch if key in source.ids}
    if downsampled:
        for key in batch:
            base, aggregate = split_aggregate(key)
            if aggregate == Aggregate.COUNTER:
                partner = source.ids.get(tuple(with_aggregate(base, Aggregate.LAST)))
                if partner is not None:
                    ids.add(partner)
    return sorted(ids)


def _joined_counter(
    key: LabelKey, sources: Sequence[SourceBlock], parts: dict[int, dict[int, Samples]]
) -> Samples:
    """A counter across consecutive downsampled blocks, resets carried over the joins.

    Blocks that overlap in time (rare for downsampled ones) are cut so that each
    timestamp comes from the earliest-starting block holding it.
    """
    base, _ = split_aggregate(key)
    last_key = tuple(with_aggregate(base, Aggregate.LAST))
    pieces: list[tuple[Samples, Samples]] = []
    covered = np.iinfo(np.int64).min
    for source in sources:  # in (mint, id) order
        if key not in source.ids:
            continue
        ts, values = parts[id(source)][source.ids[key]]
        last_id = source.ids.get(last_key)
        last = parts[id(source)][last_id] if last_id is not None else _empty()
        keep = ts > covered
        if not keep.any():
            continue
        pieces.append(((ts[keep], values[keep]), last))
        covered = int(ts[-1])
    if not pieces:
        return _empty()
    return join_counter(pieces)


def write_downsample(
    store: ObjectStore,
    action: Downsample,
    work_dir: Path,
    progress: Progress | None = None,
    gauges: Container[str] = frozenset(),
) -> Written:
    """The copy of `action.source` at resolution `action.to`, in `work_dir`.

    `gauges`: metric names the tenant's senders described as gauges (their metadata);
    their series get no `counter` aggregate, which only rate and increase read and which
    would undo the "resets" of every gauge that goes down.
    """
    started = time.monotonic()
    source = SourceBlock(store, action.source)
    resolution = int(action.to)
    from_raw = action.source.resolution == Resolution.RAW
    # Output series in label order, each with the input series and aggregate it comes from.
    outputs: list[tuple[LabelKey, int, Aggregate]] = []
    for key, series in source.ids.items():
        if from_raw:
            gauge = dict(key).get(METRIC_NAME, "") in gauges
            outputs += [
                (tuple(with_aggregate(list(key), aggregate)), series, aggregate)
                for aggregate in Aggregate
                if not (gauge and aggregate == Aggregate.COUNTER)
            ]
        else:
            aggregate = split_aggregate(key)[1]
            if aggregate is not None:
                outputs.append((key, series, aggregate))
    outputs.sort()
    # Histograms stay on their series' own label set (no aggregate label), thinned out.
    histogram_series = {
        key: series
        for key, series in source.ids.items()
        if split_aggregate(key)[1] is None and source.histogram_counts[series]
    }
    # Start-timestamp events stay there too, all of them.
    events = source.reader.index.starts
    start_series = {
        key: series
        for key, series in source.ids.items()
        if split_aggregate(key)[1] is None and events is not None and events.count(series)
    }
    cache = _AggregateCache(AGGREGATE_CACHE_BYTES)
    writer = BlockWriter(work_dir, new_ulid())
    read = 0
    position = {key: i for i, (key, _, _) in enumerate(outputs)}
    keys = sorted(position.keys() | histogram_series.keys() | start_series.keys())

    def samples_of(key: LabelKey) -> int:
        if key in position:
            return int(source.sample_counts[outputs[position[key]][1]])
        if key in histogram_series:
            return int(source.histogram_counts[histogram_series[key]])
        return 0

    try:
        for batch in _batches(keys, samples_of, progress):
            histograms = source.read_histograms(
                sorted(histogram_series[key] for key in batch if key in histogram_series)
            )
            read += sum(len(ts) for ts, _ in histograms.values())
            rows = [outputs[position[key]] for key in batch if key in position]
            missing = sorted({series for _, series, _ in rows if series not in cache})
            for series, (ts, values) in source.read(missing).items():
                read += len(ts)
                if from_raw:
                    cache.put(series, downsample_raw(ts, values, resolution))
                else:
                    aggregate = split_aggregate(source.reader.index.labels(series))[1]
                    assert aggregate is not None  # only aggregate series are outputs
                    coarse = downsample_aggregate(aggregate, (ts, values), resolution)
                    cache.put(series, _only(aggregate, coarse))
            for key in batch:
                if key in histogram_series or key in start_series:
                    thinned = None
                    if key in histogram_series:
                        found = histograms[histogram_series[key]]
                        thinned = downsample_histograms(*found, resolution)
                    starts = source.read_starts(start_series[key]) if key in start_series else None
                    writer.add_series(list(key), *_empty(), thinned, starts)
                    continue
                _, series, aggregate = outputs[position[key]]
                ts, values = cache.get(series)[aggregate]
                writer.add_series(list(key), ts, values)
        meta = writer.finish(
            tenant=action.tenant,
            resolution=action.to,
            level=action.source.level,
            sources=action.output_sources,
            external_labels=action.source.external_labels,
            mint=action.source.mint,
            maxt=action.source.maxt,
        )
    except BaseException:
        writer.abort()
        raise
    return Written(meta, writer.final_dir, time.monotonic() - started, read, writer.start_events)


def _only(aggregate: Aggregate, samples: Samples) -> Aggregates:
    """Aggregates holding one kind: what a 5 m series gives for its 1 h copy."""
    empty = _empty()
    return Aggregates({a: samples if a == aggregate else empty for a in Aggregate})


class _AggregateCache:
    """Downsampled series by input series id, least recently used dropped past a size."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[int, Aggregates] = OrderedDict()

    def __contains__(self, series: int) -> bool:
        return series in self._entries

    def get(self, series: int) -> Aggregates:
        self._entries.move_to_end(series)
        return self._entries[series]

    def put(self, series: int, aggregates: Aggregates) -> None:
        self._entries[series] = aggregates
        self.bytes += _size(aggregates)
        while self.bytes > self.max_bytes and len(self._entries) > 1:
            _, dropped = self._entries.popitem(last=False)
            self.bytes -= _size(dropped)


def _size(aggregates: Aggregates) -> int:
    return sum(ts.nbytes + values.nbytes for ts, values in aggregates.series.values())


def _batches(
    keys: Sequence[LabelKey], samples_of: Callable[[LabelKey], int], progress: Progress | None
) -> Iterator[list[LabelKey]]:
    """`keys` in runs holding about BATCH_SAMPLES samples, progress reported on the way."""
    batch: list[LabelKey] = []
    held = 0
    reported = time.monotonic()
    for done, key in enumerate(keys):
        batch.append(key)
        held += samples_of(key)
        if held >= BATCH_SAMPLES or len(batch) >= BATCH_SERIES:
            yield batch
            batch, held = [], 0
            if progress is not None and time.monotonic() - reported >= PROGRESS_EVERY_S:
                progress(done + 1, len(keys))
                reported = time.monotonic()
    if batch:
        yield batch


def _empty() -> Samples:
    return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
