"""Answering one remote-read query: select in every place, check limits, read in batches.

Places are the tenant's blocks in the bucket that overlap the query's range and, inside
`strata serve`, the gateway's upload queue and head. Series are identified by their
label sets across places, merged (querier/merge.py) and returned sorted by labels, as
Prometheus expects; a batch of series at a time, so a streamed answer holds one batch.

When downsampled blocks overlap the query, its range is first split into spans each
answered by one resolution (querier/resolution.py), and each series is put together
from its spans (querier/downsampled.py). Otherwise raw places are merged as they are.
Native histograms of a series are merged from every place that has them, by the same
rules, beside its float samples (`series_batches`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise

import numpy as np

from blocks.chunk_cache import ChunkCache
from blocks.errors import NotFound
from blocks.index import BlockIndex
from blocks.meta import BlockMeta, Resolution
from blocks.objstore.base import ObjectStore
from gateway.head_cut import BLOCK_DURATION_MS
from querier.block_source import select_block
from querier.counter_join import COUNTER_LEAD_IN_MS
from querier.downsampled import assemble, select_downsampled
from querier.head_source import HeadPostings, HeadView, select_head
from querier.index_cache import BlockIndexCache, BucketIndexCache
from querier.index_files import IndexFiles
from querier.limits import Deadline, QueryLimits, check_counts
from querier.matchers import Matcher
from querier.merge import merge_histogram_parts, merge_series
from querier.resolution import (
    Place,
    QueryHints,
    Range,
    Reading,
    Span,
    cover,
    place_spans,
    reading_for,
    union,
    wanted_resolution,
)
from querier.selection import (
    AggregateParts,
    AggregateSelection,
    HistogramPart,
    LabelSet,
    Part,
    Piece,
    Selection,
    empty_histograms,
)
from querier.stream_chunks import EncodedChunkCache

log = logging.getLogger(__name__)

# Series read and merged at a time: enough to make range reads worth their round trip,
# few enough that a batch of long series stays small in memory.
SERIES_PER_BATCH = 64
# The head's place key; blocks are numbered from 0.
HEAD_KEY = -1


@dataclass(frozen=True, slots=True)
class LocalView:
    """What a running gateway holds for a tenant besides the bucket, captured at once."""

    head: HeadView | None
    head_postings: HeadPostings | None
    queued: list[BlockMeta]  # blocks in the upload queue (queue_store)
    queue_store: ObjectStore | None


@dataclass(frozen=True, slots=True)
class QueryPlan:
    """A selected query: its series in label order and where each one is.

    `spans` empty: every place is raw and a series is its places merged over [mint,
    maxt]. Otherwise each span is answered by its places only, read as `reading` says.
    """

    index: int
    mint: int
    maxt: int
    series: list[LabelSet]
    places: list[list[tuple[int, int]]]  # per series: (selection number, position there)
    selections: list[Selection | AggregateSelection]  # raw ones first, oldest first
    samples: int
    spans: tuple[Span, ...] = ()
    reading: Reading = Reading.AVERAGE
    resolution: Resolution = Resolution.RAW  # wanted: what finer spans are turned into
    blocks: Mapping[Resolution, int] = field(default_factory=dict)  # blocks read


@dataclass(frozen=True, slots=True)
class _RawBlock:
    store: ObjectStore
    meta: BlockMeta
    queued: bool


@dataclass(frozen=True, slots=True)
class _Query:
    """One query of a request, as planning needs it."""

    tenant: str
    index: int
    matchers: Sequence[Matcher]
    mint: int
    maxt: int
    deadline: Deadline
    limits: QueryLimits


@dataclass(frozen=True, slots=True)
class _Candidates:
    """Every place that may answer a query, before the spans say which do."""

    head: Selection | None
    raw_blocks: list[_RawBlock]
    downsampled: list[BlockMeta]
    deletion_marks: Mapping[str, int]

    def places(self) -> list[Place]:
        """Each candidate with where it holds samples: raw blocks numbered from 0, then
        downsampled blocks, the head as HEAD_KEY. Blocks hold their metas' ranges, the
        head the 2 h windows its selected samples fall in (the blocks it will be cut
        into, so that a late sample for an old window claims that window only)."""
        places = [
            Place(key, Resolution.RAW, ((b.meta.mint, b.meta.maxt),))
            for key, b in enumerate(self.raw_blocks)
        ]
        for key, meta in self.downsampled_keys():
            # Of overlapping downsampled blocks the one not marked for deletion, then the
            # highest level, then the newest answers: merges and re-downsamplings replace.
            kept = 0 if meta.block_id in self.deletion_marks else 1
            preference = (kept, meta.level, meta.block_id)
            places.append(Place(key, meta.resolution, ((meta.mint, meta.maxt),), preference))
        if self.head is not None and self.head.labels:
            places.append(Place(HEAD_KEY, Resolution.RAW, _head_windows(self.head)))
        return places

    def downsampled_keys(self) -> Iterator[tuple[int, BlockMeta]]:
        """The downsampled blocks with their place keys."""
        return enumerate(self.downsampled, start=len(self.raw_blocks))


class Engine:
    """Selects and reads series for queries; one per process, shared by requests."""

    def __init__(
        self,
        store: ObjectStore,
        limits: QueryLimits,
        *,
        index_cache_bytes: int,
        index_refresh_s: float,
        index_max_age_ms: int,
        downsampled: bool = True,
        chunk_cache_bytes: int = 0,
        stream_cache_bytes: int = 0,
        index_files: IndexFiles | None = None,
    ) -> None:
        self.store = store
        self.limits = limits
        self.downsampled = downsampled
        self.block_indexes = BlockIndexCache(store, index_cache_bytes, index_files)
        self.chunks = ChunkCache(chunk_cache_bytes) if chunk_cache_bytes > 0 else None
        self.encoded_chunks = (
            EncodedChunkCache(stream_cache_bytes) if stream_cache_bytes > 0 else None
        )
        self.bucket_indexes = BucketIndexCache(
            store, refresh_s=index_refresh_s, max_age_ms=index_max_age_ms
        )

    def plan(
        self,
        tenant: str,
        query_index: int,
        matchers: Sequence[Matcher],
        mint: int,
        maxt: int,
        local: LocalView | None,
        deadline: Deadline,
        hints: QueryHints | None = None,
        limits: QueryLimits | None = None,
    ) -> QueryPlan:
        """Select the query's series everywhere and check the series and sample limits
        (`limits`: the tenant's, else the engine's)."""
        query = _Query(tenant, query_index, matchers, mint, maxt, deadline, limits or self.limits)
        candidates = self._candidates(query, local)
        wanted = wanted_resolution(hints)
        spans: list[Span] = []
        if candidates.downsampled:
            spans = cover(mint, maxt, candidates.places(), wanted)
            if all(s.resolution == Resolution.RAW for s in spans):
                spans = []  # raw answers everything: read as if no block were downsampled
        if not spans:
            return self._raw_plan(query, candidates)
        reading = reading_for(hints.func if hints is not None else "")
        return self._spans_plan(query, candidates, spans, reading, wanted)

    def _candidates(self, query: _Query, local: LocalView | None) -> _Candidates:
        head: Selection | None = None
        raw_blocks: list[_RawBlock] = []
        queued_ids: set[str] = set()
        mint, maxt = query.mint, query.maxt
        if local is not None:
            if local.head is not None and local.head_postings is not None:
                head = select_head(
                    local.head,
                    local.head_postings,
                    query.matchers,
                    mint,
                    maxt,
                    checkpoint=query.deadline.check,
                )
            for meta in local.queued:
                if local.queue_store is None or meta.mint > maxt or meta.maxt <= mint:
                    continue
                queued_ids.add(meta.block_id)
                raw_blocks.append(_RawBlock(local.queue_store, meta, queued=True))
        bucket = self.bucket_indexes.get(query.tenant)
        downsampled: list[BlockMeta] = []
        for meta in bucket.overlapping(mint, maxt):
            if meta.resolution == Resolution.RAW:
                if meta.block_id not in queued_ids:
                    raw_blocks.append(_RawBlock(self.store, meta, queued=False))
            elif self.downsampled:
                downsampled.append(meta)
        return _Candidates(head, raw_blocks, downsampled, bucket.deletion_marks)

    def _raw_plan(self, query: _Query, candidates: _Candidates) -> QueryPlan:
        """Every raw place over the whole range, merged as they are."""
        selections = [] if candidates.head is None else [candidates.head]
        for block in candidates.raw_blocks:
            selections.append(self._select_raw(query, block, query.mint, query.maxt))
        selections.sort(key=lambda s: s.rank)
        return self._checked_plan(
            query, list(selections), {Resolution.RAW: len(candidates.raw_blocks)}
        )

    def _spans_plan(
        self,
        query: _Query,
        candidates: _Candidates,
        spans: list[Span],
        reading: Reading,
        wanted: Resolution,
    ) -> QueryPlan:
        """Only the places answering a span, each over the spans it answers."""
        answering = {key: _hull(s) for key, s in place_spans(spans).items()}
        if reading is Reading.COUNTER:
            # Counters are read from a little before a span, to join exactly onto the
            # span before it (querier/counter_join.py).
            answering = {
                key: (lo - COUNTER_LEAD_IN_MS if lo > query.mint else lo, hi)
                for key, (lo, hi) in answering.items()
            }
        raw: dict[int, Selection] = {}
        if candidates.head is not None and HEAD_KEY in answering:
            raw[HEAD_KEY] = candidates.head
        for key, block in enumerate(candidates.raw_blocks):
            if key in answering:
                raw[key] = self._select_raw(query, block, *answering[key])
        aggregated: dict[int, AggregateSelection] = {}
        for key, meta in candidates.downsampled_keys():
            if key in answering:
                lo, hi = answering[key]
                index = self.block_indexes.get(query.tenant, meta.block_id)
                aggregated[key] = select_downsampled(
                    self.store,
                    meta,
                    index,
                    query.matchers,
                    lo,
                    hi,
                    reading,
                    checkpoint=query.deadline.check,
                    cache=self.chunks,
                )
                query.deadline.check()
        # Raw places oldest first, as merging wants them; spans name them by number.
        order = [*sorted(raw, key=lambda k: raw[k].rank), *aggregated]
        numbers = {key: number for number, key in enumerate(order)}
        selections: list[Selection | AggregateSelection] = [
            *(raw[k] for k in order[: len(raw)]),
            *aggregated.values(),
        ]
        blocks = Counter(selection.resolution for selection in aggregated.values())
        blocks[Resolution.RAW] = len(raw) - (HEAD_KEY in raw)
        plan = self._checked_plan(query, selections, blocks)
        return replace(
            plan,
            spans=tuple(
                Span(s.start, s.end, s.resolution, tuple(numbers[k] for k in s.places))
                for s in spans
            ),
            reading=reading,
            resolution=wanted,
        )

    def _select_raw(self, query: _Query, block: _RawBlock, mint: int, maxt: int) -> Selection:
        # A queued block that was uploaded and left the queue meanwhile is read from
        # the bucket (docs/architecture.md: a sample is never in no place).
        fallback = self.store if block.queued else None
        index = self._block_index(query.tenant, block, fallback)
        selection = select_block(
            block.store,
            block.meta,
            index,
            query.matchers,
            mint,
            maxt,
            checkpoint=query.deadline.check,
            fallback=fallback,
            cache=self.chunks,
            encoded_cache=self.encoded_chunks,
        )
        query.deadline.check()
        return selection

    def _block_index(
        self, tenant: str, block: _RawBlock, fallback: ObjectStore | None
    ) -> BlockIndex:
        try:
            return self.block_indexes.get(tenant, block.meta.block_id, block.store)
        except NotFound:
            if fallback is None:
                raise
            return self.block_indexes.get(tenant, block.meta.block_id, fallback)

    def _checked_plan(
        self,
        query: _Query,
        selections: list[Selection | AggregateSelection],
        blocks: Mapping[Resolution, int],
    ) -> QueryPlan:
        """The plan of these selections, once the series and sample limits pass."""
        where: dict[LabelSet, list[tuple[int, int]]] = {}
        for number, selection in enumerate(selections):
            for position, labels in enumerate(selection.labels):
                where.setdefault(labels, []).append((number, position))
        series = sorted(where)
        # A histogram counts as a sample against the limits.
        samples = sum(s.samples + s.histograms for s in selections)
        check_counts(query.limits, query.index, len(series), samples)
        return QueryPlan(
            query.index,
            query.mint,
            query.maxt,
            series,
            [where[s] for s in series],
            selections,
            samples,
            blocks=dict(blocks),
        )

    def batches(self, plan: QueryPlan, deadline: Deadline) -> Iterator[list[tuple[LabelSet, Part]]]:
        """The plan's series with their merged float samples, a batch at a time, in label
        order (series without float samples left out)."""
        for batch in self.series_batches(plan, deadline):
            yield [(labels, part) for labels, part, _ in batch if len(part[0])]

    def series_batches(
        self, plan: QueryPlan, deadline: Deadline
    ) -> Iterator[list[tuple[LabelSet, Part, HistogramPart]]]:
        """The plan's series with their merged samples and histograms, a batch at a time,
        in label order (series with neither left out)."""
        for start in range(0, len(plan.series), SERIES_PER_BATCH):
            deadline.check()
            numbers = range(start, min(start + SERIES_PER_BATCH, len(plan.series)))
            merged = self._merged(plan, numbers)
            histograms = self._merged_histograms(plan, numbers)
            yield [
                (plan.series[i], merged[i], histograms[i])
                for i in numbers
                if len(merged[i][0]) or len(histograms[i][0])
            ]

    def piece_batches(
        self, plan: QueryPlan, deadline: Deadline
    ) -> Iterator[list[tuple[LabelSet, list[Piece], HistogramPart]]]:
        """`series_batches` for a streamed answer: a series without histograms whose places
        are blocks holding disjoint time ranges is their pieces in time order, encoded
        chunks reused (querier/stream_chunks.py); any other is its merged samples as one
        piece (so that floats and histograms can be cut into chunks by time)."""
        for start in range(0, len(plan.series), SERIES_PER_BATCH):
            deadline.check()
            numbers = range(start, min(start + SERIES_PER_BATCH, len(plan.series)))
            histograms = self._merged_histograms(plan, numbers)
            joinable = [
                i for i in numbers if not len(histograms[i][0]) and _joinable(plan, plan.places[i])
            ]
            pieces = self._joined_pieces(plan, joinable)
            merged = self._merged(plan, [i for i in numbers if i not in pieces])
            batch: list[tuple[LabelSet, list[Piece], HistogramPart]] = []
            for i in numbers:
                # A joined series may have no piece: its chunks overlap the range, their
                # samples all fall outside it.
                own: list[Piece] = (
                    pieces[i] if i in pieces else [merged[i]] if len(merged[i][0]) else []
                )
                if own or len(histograms[i][0]):
                    batch.append((plan.series[i], own, histograms[i]))
            yield batch

    def _merged_histograms(
        self, plan: QueryPlan, numbers: Sequence[int]
    ) -> dict[int, HistogramPart]:
        """The merged histograms of each series numbered (possibly none), places in
        selection order (raw ones oldest first, so later ones win a timestamp)."""
        if not any(s.read_histograms is not None for s in plan.selections):
            none = empty_histograms()  # the common case: a query without histograms
            return dict.fromkeys(numbers, none)
        wanted = _positions(plan, numbers, lambda s: s.read_histograms is not None)
        found: dict[tuple[int, int], HistogramPart] = {}
        for number, positions in wanted.items():
            read = plan.selections[number].read_histograms
            assert read is not None
            for position, part in zip(positions, read(positions), strict=True):
                found[(number, position)] = part
        return {
            i: merge_histogram_parts(
                [found[p] for p in plan.places[i] if p in found], plan.mint, plan.maxt
            )
            for i in numbers
        }

    def _joined_pieces(self, plan: QueryPlan, numbers: Sequence[int]) -> dict[int, list[Piece]]:
        """The pieces of each series numbered, its places' pieces one after another."""
        wanted = _positions(plan, numbers)
        read: dict[tuple[int, int], list[Piece]] = {}
        for number, positions in wanted.items():
            selection = plan.selections[number]
            assert isinstance(selection, Selection)
            assert selection.read_pieces is not None
            for position, found in zip(positions, selection.read_pieces(positions), strict=True):
                read[(number, position)] = found
        out = {}
        for i in numbers:
            places = sorted(plan.places[i], key=lambda p: _span_of(plan, p[0])[0])
            out[i] = [piece for place in places for piece in read[place]]
        return out

    def _merged(self, plan: QueryPlan, numbers: Sequence[int]) -> dict[int, Part]:
        """The merged samples of each series numbered (possibly empty)."""
        wanted = _positions(plan, numbers)
        raw: dict[tuple[int, int], Part] = {}
        aggregated: dict[tuple[int, int], AggregateParts] = {}
        for number, positions in wanted.items():
            selection = plan.selections[number]
            if isinstance(selection, Selection):
                for position, part in zip(positions, selection.read(positions), strict=True):
                    raw[(number, position)] = part
            else:
                found = selection.read(positions)
                for position, parts in zip(positions, found, strict=True):
                    aggregated[(number, position)] = parts
        if not plan.spans:
            own = [[raw[place] for place in plan.places[i]] for i in numbers]
            return dict(zip(numbers, merge_series(own, plan.mint, plan.maxt), strict=True))
        return {i: _spans_samples(plan, plan.places[i], raw, aggregated) for i in numbers}


def _positions(
    plan: QueryPlan,
    numbers: Sequence[int],
    wanted: Callable[[Selection | AggregateSelection], bool] = lambda _: True,
) -> dict[int, list[int]]:
    """The positions the series numbered have in each selection (by selection number),
    in the series' order: what one read of that selection fetches. Only selections
    `wanted` says yes to."""
    out: dict[int, list[int]] = {}
    for i in numbers:
        for number, position in plan.places[i]:
            if wanted(plan.selections[number]):
                out.setdefault(number, []).append(position)
    return out


def _span_of(plan: QueryPlan, number: int) -> tuple[int, int]:
    selection = plan.selections[number]
    assert isinstance(selection, Selection)
    assert selection.span is not None
    return selection.span


def _joinable(plan: QueryPlan, places: list[tuple[int, int]]) -> bool:
    """Whether a series' samples are its places' samples one after another: raw blocks
    only (no spans, no head), whose time ranges do not overlap, so nothing is merged."""
    if plan.spans:
        return False
    spans = []
    for number, _ in places:
        selection = plan.selections[number]
        if not isinstance(selection, Selection) or selection.read_pieces is None:
            return False
        assert selection.span is not None
        spans.append(selection.span)
    spans.sort()
    return all(prev[1] <= nxt[0] for prev, nxt in pairwise(spans))


def _spans_samples(
    plan: QueryPlan,
    places: list[tuple[int, int]],
    raw: Mapping[tuple[int, int], Part],
    aggregated: Mapping[tuple[int, int], AggregateParts],
) -> Part:
    """One series of a plan with spans, put together from them."""
    # Places come in selection order, raw ones oldest first: the order merging wants.
    own_raw = {number: raw[(number, p)] for number, p in places if (number, p) in raw}
    own_aggregated = {
        number: aggregated[(number, p)] for number, p in places if (number, p) in aggregated
    }
    return assemble(plan.spans, own_raw, own_aggregated, plan.reading, plan.resolution)


def _head_windows(head: Selection) -> tuple[Range, ...]:
    """The 2 h windows the head's selected samples fall in."""
    positions = range(len(head.labels))
    times = [ts for ts, _ in head.read(positions)]
    if head.read_histograms is not None:
        times += [ts for ts, _ in head.read_histograms(positions)]
    windows = np.unique(np.concatenate([ts // BLOCK_DURATION_MS for ts in times]))
    return tuple(
        union((int(w) * BLOCK_DURATION_MS, (int(w) + 1) * BLOCK_DURATION_MS) for w in windows)
    )


def _hull(spans: Sequence[tuple[int, int]]) -> tuple[int, int]:
    return min(s for s, _ in spans), max(e for _, e in spans)
