"""Downsampled blocks in remote read: selecting the aggregates a query needs, and turning
one series' spans, raw and downsampled, into plain samples Prometheus can evaluate.

Rules in docs/remote-read.md#downsampled-data; the aggregates' meaning in
docs/block-format.md#downsampled-blocks. Native histograms a downsampled block keeps
(docs/compactor.md#native-histograms) are on series without the aggregate label, and
are read as they are, like raw ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from blocks.aggregates import (
    AGGREGATE_LABEL,
    Aggregate,
    Aggregates,
    downsample_aggregates,
    downsample_raw,
    split_aggregate,
)
from blocks.chunk_cache import ChunkCache
from blocks.index import BlockIndex
from blocks.meta import BlockMeta, Resolution
from blocks.objstore.base import ObjectStore
from querier.block_source import read_block_histograms, read_block_series, samples_in_range
from querier.counter_join import (
    COUNTER_LEAD_IN_MS,
    CounterSpan,
    block_counter_span,
    join_counter_spans,
    raw_counter_span,
)
from querier.matchers import Matcher, MatchType
from querier.merge import merge_parts
from querier.postings import select_series
from querier.resolution import Reading, Span
from querier.selection import (
    AggregateParts,
    AggregateSelection,
    HistogramPart,
    LabelSet,
    Part,
    empty_histograms,
)


def select_downsampled(
    store: ObjectStore,
    meta: BlockMeta,
    index: BlockIndex,
    matchers: Sequence[Matcher],
    mint: int,
    maxt: int,
    reading: Reading,
    *,
    checkpoint: Callable[[], None],
    cache: ChunkCache | None = None,
) -> AggregateSelection:
    """The block's series matching `matchers` with samples in [mint, maxt], by their own
    label sets, with only the aggregate series `reading` needs."""
    series: dict[LabelSet, dict[Aggregate, int]] = {}
    samples = 0
    for aggregate in reading.aggregates:
        only = Matcher(MatchType.EQ, AGGREGATE_LABEL, aggregate.value)
        ids = select_series(index, [*matchers, only], checkpoint=checkpoint)
        counts = samples_in_range(index, ids, mint, maxt)
        held = counts > 0
        kept = ids[held]
        for series_id, label_set, count in zip(
            kept.tolist(), index.label_sets(kept), counts[held].tolist(), strict=True
        ):
            own, _ = split_aggregate(label_set)
            series.setdefault(tuple(own), {})[aggregate] = series_id
            samples += count
    histogram_ids: dict[LabelSet, int] = {}
    histograms = 0
    refs = index.histograms
    if refs is not None:
        plain = Matcher(MatchType.EQ, AGGREGATE_LABEL, "")
        ids = select_series(index, [*matchers, plain], checkpoint=checkpoint)
        counts = refs.samples_in_range(ids, mint, maxt)
        held = counts > 0
        kept = ids[held]
        for series_id, plain_labels in zip(kept.tolist(), index.label_sets(kept), strict=True):
            histogram_ids[plain_labels] = series_id
            series.setdefault(plain_labels, {})
        histograms = int(counts[held].sum())
    labels = sorted(series)

    def read(positions: Sequence[int]) -> list[AggregateParts]:
        wanted = [series[labels[p]] for p in positions]
        ids = sorted({i for by_aggregate in wanted for i in by_aggregate.values()})
        found = read_block_series(store, meta, index, ids, mint, maxt, cache=cache)
        return [{a: found[i] for a, i in by_aggregate.items()} for by_aggregate in wanted]

    def read_histograms(positions: Sequence[int]) -> list[HistogramPart]:
        wanted = [histogram_ids.get(labels[p]) for p in positions]
        ids = sorted({i for i in wanted if i is not None})
        found = read_block_histograms(store, meta, index, ids, mint, maxt, cache=cache)
        return [empty_histograms() if i is None else found[i] for i in wanted]

    return AggregateSelection(
        labels,
        samples,
        meta.resolution,
        read,
        histograms=histograms,
        read_histograms=read_histograms if histograms else None,
    )


def assemble(
    spans: Sequence[Span],
    raw: Mapping[int, Part],
    downsampled: Mapping[int, AggregateParts],
    reading: Reading,
    wanted: Resolution,
) -> Part:
    """One series' plain samples over `spans` (time-ordered, disjoint): from the raw
    places of its raw spans (`raw`, oldest place first) and the one downsampled place of
    each other span. Time-sorted, unique timestamps, each inside its span.

    Spans finer than `wanted` are downsampled to it here, so that one PromQL range
    window never mixes five-minute samples with hourly ones (or raw with either), which
    would skew `avg_over_time` and rate's extrapolation; spans coarser than `wanted`
    (what retention left) come as stored, raw spans of a raw query as raw. Counters are
    joined across spans (querier/counter_join.py), so rate and increase over the result
    see the raw counter's increase.
    """
    if reading is Reading.COUNTER:
        # Joined at each span's own resolution, then thinned to `wanted`: a join finds
        # the sample both sides hold (a downsampled block's first sample, a window end)
        # among all of a finer span's samples; windows made first would have dropped it,
        # and a restart between the two edges would go unseen.
        pieces = [_counter_span(span, raw, downsampled) for span in spans]
        joined = join_counter_spans([p for p in pieces if p is not None])
        return _thinned(joined, spans, wanted)
    parts = [_plain_part(span, raw, downsampled, reading, wanted) for span in spans]
    return (
        np.concatenate([np.zeros(0, dtype=np.int64), *(ts for ts, _ in parts)]),
        np.concatenate([np.zeros(0, dtype=np.float64), *(v for _, v in parts)]),
    )


def _raw_samples(span: Span, raw: Mapping[int, Part], start: int) -> Part:
    parts = [part for key, part in raw.items() if key in span.places]
    return merge_parts(parts, start, span.end)


def span_aggregates(
    span: Span,
    raw: Mapping[int, Part],
    downsampled: Mapping[int, AggregateParts],
    wanted: Resolution,
    aggregates: Sequence[Aggregate],
    start: int,
) -> AggregateParts:
    """The series' `aggregates` in [start, span.end] at the coarser of the span's
    resolution and `wanted`: raw samples and finer blocks downsampled here, by the same
    arithmetic as the compactor's (blocks/aggregates.py). Not for raw spans of raw
    queries."""
    if span.resolution == Resolution.RAW:
        ts, values = _raw_samples(span, raw, start)
        made = downsample_raw(ts, values, int(wanted))
        return {a: made[a] for a in aggregates}
    found = downsampled.get(span.places[0]) if span.places else None
    if found is None:
        return {}
    clipped = {a: clip(part, start, span.end) for a, part in found.items()}
    if span.resolution >= wanted:
        return clipped
    finer = Aggregates({a: clipped.get(a, _empty()) for a in Aggregate})
    made = downsample_aggregates(finer, int(wanted))
    return {a: made[a] for a in aggregates if a in clipped}


def _plain_part(
    span: Span,
    raw: Mapping[int, Part],
    downsampled: Mapping[int, AggregateParts],
    reading: Reading,
    wanted: Resolution,
) -> Part:
    if span.resolution == wanted == Resolution.RAW:
        return _raw_samples(span, raw, span.start)
    windows = span_aggregates(span, raw, downsampled, wanted, reading.aggregates, span.start)
    if reading is Reading.AVERAGE:
        return average(windows.get(Aggregate.SUM), windows.get(Aggregate.COUNT))
    found = windows.get(reading.aggregates[0])
    return found if found is not None else _empty()


def average(sums: Part | None, counts: Part | None) -> Part:
    """Each window's mean: its sum over its count, where both have the window."""
    if sums is None or counts is None:
        return _empty()
    common, in_sums, in_counts = np.intersect1d(
        sums[0], counts[0], assume_unique=True, return_indices=True
    )
    return common.astype(np.int64), sums[1][in_sums] / counts[1][in_counts]


def _counter_span(
    span: Span, raw: Mapping[int, Part], downsampled: Mapping[int, AggregateParts]
) -> CounterSpan | None:
    """The span's counter at its own resolution, from a lead-in before it on."""
    lead_in = span.start - COUNTER_LEAD_IN_MS
    if span.resolution == Resolution.RAW:
        return raw_counter_span(_raw_samples(span, raw, lead_in), span.start)
    own = span_aggregates(
        span, raw, downsampled, span.resolution, Reading.COUNTER.aggregates, lead_in
    )
    counter = own.get(Aggregate.COUNTER)
    if counter is None:
        return None
    return block_counter_span(counter, own.get(Aggregate.LAST, _empty()), span.start)


def _thinned(counter: Part, spans: Sequence[Span], wanted: Resolution) -> Part:
    """A joined counter with, inside each span finer than `wanted`, only the last sample
    of each `wanted` window: what that span's windows' `counter` aggregate holds, since
    the values already have every restart undone."""
    ts, values = counter
    if wanted == Resolution.RAW or not len(ts):
        return counter
    keep = np.ones(len(ts), dtype=bool)
    for span in spans:
        if span.resolution >= wanted:
            continue
        lo = int(np.searchsorted(ts, span.start, side="left"))
        hi = int(np.searchsorted(ts, span.end, side="right"))
        window = ts[lo:hi] // int(wanted)
        keep[lo:hi] = np.append(window[1:] != window[:-1], True) if hi > lo else keep[lo:hi]
    return ts[keep], values[keep]


def clip(part: Part, start: int, end: int) -> Part:
    """The samples of a time-sorted part with start <= t <= end."""
    ts, values = part
    lo = int(np.searchsorted(ts, start, side="left"))
    hi = int(np.searchsorted(ts, end, side="right"))
    if lo == 0 and hi == len(ts):
        return part
    return ts[lo:hi], values[lo:hi]


def _empty() -> Part:
    return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
