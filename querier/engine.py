"""Answering one remote-read query: select in every place, check limits, read in batches.

Places are the tenant's blocks in the bucket that overlap the query's range and, inside
`strata serve`, the gateway's upload queue and head. Series are identified by their
label sets across places, merged (querier/merge.py) and returned sorted by labels, as
Prometheus expects; a batch of series at a time, so a streamed answer holds one batch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from blocks.errors import NotFound
from blocks.meta import BlockMeta, Resolution
from blocks.objstore.base import ObjectStore
from querier.block_source import select_block
from querier.head_source import HeadPostings, HeadView, select_head
from querier.index_cache import BlockIndexCache, BucketIndexCache
from querier.limits import Deadline, QueryLimits, check_counts
from querier.matchers import Matcher
from querier.merge import merge_parts
from querier.selection import LabelSet, Part, Selection

log = logging.getLogger(__name__)

# Series read and merged at a time: enough to make range reads worth their round trip,
# few enough that a batch of long series stays small in memory.
SERIES_PER_BATCH = 64


@dataclass(frozen=True, slots=True)
class LocalView:
    """What a running gateway holds for a tenant besides the bucket, captured at once."""

    head: HeadView | None
    head_postings: HeadPostings | None
    queued: list[BlockMeta]  # blocks in the upload queue (queue_store)
    queue_store: ObjectStore | None


@dataclass(frozen=True, slots=True)
class QueryPlan:
    """A selected query: its series in label order and where each one is."""

    index: int
    mint: int
    maxt: int
    series: list[LabelSet]
    places: list[list[tuple[Selection, int]]]  # per series: (place, position there)
    samples: int


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
    ) -> None:
        self.store = store
        self.limits = limits
        self.block_indexes = BlockIndexCache(store, index_cache_bytes)
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
    ) -> QueryPlan:
        """Select the query's series everywhere and check the series and sample limits."""
        selections: list[Selection] = []
        queued_ids: set[str] = set()
        places: list[tuple[ObjectStore, BlockMeta]] = []  # blocks: where, what
        if local is not None:
            if local.head is not None and local.head_postings is not None:
                head = select_head(
                    local.head, local.head_postings, matchers, mint, maxt, checkpoint=deadline.check
                )
                selections.append(head)
            for meta in local.queued:
                if local.queue_store is None or meta.mint > maxt or meta.maxt <= mint:
                    continue
                queued_ids.add(meta.block_id)
                places.append((local.queue_store, meta))
        for meta in self.bucket_indexes.get(tenant).overlapping(mint, maxt):
            if meta.resolution == Resolution.RAW and meta.block_id not in queued_ids:
                places.append((self.store, meta))
        for store, meta in places:
            # A queued block that was uploaded and left the queue meanwhile is read from
            # the bucket (docs/architecture.md: a sample is never in no place).
            fallback = self.store if store is not self.store else None
            try:
                index = self.block_indexes.get(tenant, meta.block_id, store)
            except NotFound:
                if fallback is None:
                    raise
                index = self.block_indexes.get(tenant, meta.block_id, fallback)
            selections.append(
                select_block(
                    store,
                    meta,
                    index,
                    matchers,
                    mint,
                    maxt,
                    checkpoint=deadline.check,
                    fallback=fallback,
                )
            )
            deadline.check()
        selections.sort(key=lambda s: s.rank)
        where: dict[LabelSet, list[tuple[Selection, int]]] = {}
        for selection in selections:
            for position, labels in enumerate(selection.labels):
                where.setdefault(labels, []).append((selection, position))
        series = sorted(where)
        samples = sum(s.samples for s in selections)
        check_counts(self.limits, query_index, len(series), samples)
        return QueryPlan(query_index, mint, maxt, series, [where[s] for s in series], samples)

    def batches(self, plan: QueryPlan, deadline: Deadline) -> Iterator[list[tuple[LabelSet, Part]]]:
        """The plan's series with their merged samples, a batch at a time, in label order."""
        for start in range(0, len(plan.series), SERIES_PER_BATCH):
            deadline.check()
            stop = start + SERIES_PER_BATCH
            wanted: dict[int, tuple[Selection, list[int]]] = {}
            for places in plan.places[start:stop]:
                for selection, position in places:
                    wanted.setdefault(id(selection), (selection, []))[1].append(position)
            read: dict[tuple[int, int], Part] = {}
            for key, (selection, positions) in wanted.items():
                for position, part in zip(positions, selection.read(positions), strict=True):
                    read[(key, position)] = part
            batch = []
            for labels, places in zip(
                plan.series[start:stop], plan.places[start:stop], strict=True
            ):
                parts = [read[(id(s), p)] for s, p in places]
                merged = merge_parts(parts, plan.mint, plan.maxt)
                if len(merged[0]):
                    batch.append((labels, merged))
            yield batch
