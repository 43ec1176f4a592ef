"""The compaction planner: block metadata in, a list of actions out; no bucket, no I/O.

Given a tenant's block metas and deletion marks it says which blocks to merge
(overlaps first, then whole aligned level ranges), which to downsample, which to mark
for deletion (retention, replaced) and which marked ones to delete. The executor
(compactor/run.py) carries the actions out; planning again after any step converges.
Rules and defaults: docs/compactor.md.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from blocks.bucket_index import BucketIndex
from blocks.meta import BlockMeta, Resolution
from compactor.levels import (
    DAY_MS,
    FIRST_LEVEL,
    HOUR_MS,
    LEVEL_RANGES_MS,
    TOP_LEVEL,
    aligned_range,
    fits_level,
    level_for_length,
    smallest_level,
)

REASON_RETENTION = "retention"
REASON_REPLACED = "replaced"
REASON_DELETE_DELAY = "deletion mark older than the delete delay"

# Each resolution and the one it is downsampled to.
DOWNSAMPLE_TARGET = {
    Resolution.RAW: Resolution.FIVE_MINUTES,
    Resolution.FIVE_MINUTES: Resolution.ONE_HOUR,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannerConfig:
    """Every setting of the planner; all durations in milliseconds, defaults in
    docs/compactor.md#defaults."""

    # A level range is complete once the tenant's newest block ends this far past it:
    # gateways cut and upload at slightly different times, late blocks still arrive.
    consistency_delay_ms: int = 30 * 60 * 1000
    downsampling: bool = True
    # A raw block this long (or of the level whose range is this long) gets a 5 m copy.
    raw_to_5m_min_range_ms: int = 40 * HOUR_MS
    # A 5 m block this long (or of the level whose range is this long) gets a 1 h copy.
    five_m_to_1h_min_range_ms: int = 10 * DAY_MS
    # Per resolution, how long a block is kept after its maxt; 0 keeps it forever.
    retention_raw_ms: int = 30 * DAY_MS
    retention_5m_ms: int = 180 * DAY_MS
    retention_1h_ms: int = 0
    # A marked block is deleted this long after its mark, so that queriers that
    # loaded the index before the mark finish reading it.
    delete_delay_ms: int = 48 * HOUR_MS

    def retention_ms(self, resolution: Resolution) -> int:
        """How long blocks of `resolution` are kept; 0 for ever."""
        return {
            Resolution.RAW: self.retention_raw_ms,
            Resolution.FIVE_MINUTES: self.retention_5m_ms,
            Resolution.ONE_HOUR: self.retention_1h_ms,
        }[resolution]

    def downsample_min_range_ms(self, resolution: Resolution) -> int:
        """How long a block of `resolution` must span before it is downsampled."""
        if resolution == Resolution.RAW:
            return self.raw_to_5m_min_range_ms
        return self.five_m_to_1h_min_range_ms


@dataclass(frozen=True, slots=True)
class Merge:
    """Write one block of `level` covering [mint, maxt) from `sources` (sorted by mint,
    id), samples merged and exact duplicates dropped; then mark the sources.

    `overlapping` says the sources share time, so series may repeat across them.
    """

    tenant: str
    resolution: Resolution
    sources: tuple[BlockMeta, ...]
    mint: int
    maxt: int
    level: int
    overlapping: bool = False

    @property
    def output_sources(self) -> tuple[str, ...]:
        """What the new block's meta.json lists as its sources."""
        return merged_leaves(self.sources)


@dataclass(frozen=True, slots=True)
class Downsample:
    """Write a copy of `source` at resolution `to`, same range and level, listing the
    source's leaves (`output_sources`) as its sources."""

    tenant: str
    source: BlockMeta
    to: Resolution

    @property
    def output_sources(self) -> tuple[str, ...]:
        """What the new block's meta.json lists as its sources."""
        return merged_leaves((self.source,))


@dataclass(frozen=True, slots=True)
class MarkForDeletion:
    """Write the block's deletion mark; it is deleted a delete delay later."""

    tenant: str
    block: BlockMeta
    reason: str


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete the block's objects (meta.json first) and drop it from the index."""

    tenant: str
    block: BlockMeta
    reason: str


Action = Merge | Downsample | MarkForDeletion | Delete


def leaves(meta: BlockMeta) -> frozenset[str]:
    """The gateway-cut blocks whose data `meta` holds: its sources, or itself."""
    return frozenset(meta.sources or (meta.block_id,))


def merged_leaves(metas: Iterable[BlockMeta]) -> tuple[str, ...]:
    """The sorted union of the leaves of `metas`."""
    return tuple(sorted(frozenset().union(*(leaves(m) for m in metas))))


def plan_index(index: BucketIndex, *, now_ms: int, config: PlannerConfig) -> list[Action]:
    """`plan` over one tenant's bucket index."""
    return plan(index.blocks.values(), index.deletion_marks, now_ms=now_ms, config=config)


def plan(
    blocks: Iterable[BlockMeta],
    deletion_marks: Mapping[str, int],
    *,
    now_ms: int,
    config: PlannerConfig,
) -> list[Action]:
    """Everything to do now, ordered by (tenant, resolution, mint, block id).

    `deletion_marks` maps a block id to when it was marked. Marked blocks take part in
    nothing but their own deletion.
    """
    by_tenant: dict[str, list[BlockMeta]] = defaultdict(list)
    for meta in blocks:
        by_tenant[meta.tenant].append(meta)
    actions: list[Action] = []
    for tenant in sorted(by_tenant):
        actions += _plan_tenant(by_tenant[tenant], deletion_marks, now_ms, config)
    return sorted(actions, key=_action_order)


def _plan_tenant(
    blocks: list[BlockMeta], marks: Mapping[str, int], now_ms: int, config: PlannerConfig
) -> list[Action]:
    actions: list[Action] = [
        Delete(b.tenant, b, REASON_DELETE_DELAY)
        for b in blocks
        if b.block_id in marks and now_ms - marks[b.block_id] >= config.delete_delay_ms
    ]
    live = [b for b in blocks if b.block_id not in marks]
    expired = [b for b in live if _expired(b.maxt, b.resolution, now_ms, config)]
    actions += [MarkForDeletion(b.tenant, b, REASON_RETENTION) for b in expired]
    expired_ids = {b.block_id for b in expired}
    kept = [b for b in live if b.block_id not in expired_ids]
    # Marked blocks count here: their data arrived, so ranges before them are complete.
    newest = max((b.maxt for b in blocks), default=0)

    current: dict[Resolution, list[BlockMeta]] = {}
    for resolution in Resolution:
        group = [b for b in kept if b.resolution == resolution]
        replaced = replaced_blocks(group)
        actions += [MarkForDeletion(b.tenant, b, REASON_REPLACED) for b in replaced]
        replaced_ids = {b.block_id for b in replaced}
        current[resolution] = [b for b in group if b.block_id not in replaced_ids]

    for resolution, group in current.items():
        merges, busy = plan_merges(group, newest, config)
        actions += merges
        target = DOWNSAMPLE_TARGET.get(resolution)
        if config.downsampling and target is not None:
            idle = [b for b in group if b.block_id not in busy]
            actions += plan_downsampling(idle, current[target], target, newest, now_ms, config)
    return actions


def _expired(maxt: int, resolution: Resolution, now_ms: int, config: PlannerConfig) -> bool:
    retention = config.retention_ms(resolution)
    return retention > 0 and maxt < now_ms - retention


def replaced_blocks(group: Sequence[BlockMeta]) -> list[BlockMeta]:
    """Blocks of one tenant and resolution whose data another block of the group
    already holds: its leaves include theirs and its range covers theirs.

    Such a block is what a merge leaves behind when the executor stopped between
    writing the new block and marking the sources. Among blocks with equal leaves the
    one of highest (level, id) is kept, so no two blocks replace each other.
    """
    holders: dict[str, list[BlockMeta]] = defaultdict(list)
    for meta in group:
        for leaf in leaves(meta):
            holders[leaf].append(meta)
    replaced = []
    for meta in group:
        own = leaves(meta)
        for other in holders[min(own)]:
            if other is not meta and _holds(other, meta, own):
                replaced.append(meta)
                break
    return replaced


def _holds(other: BlockMeta, meta: BlockMeta, own: frozenset[str]) -> bool:
    theirs = leaves(other)
    if not (own <= theirs and other.mint <= meta.mint and other.maxt >= meta.maxt):
        return False
    return own < theirs or (other.level, other.block_id) > (meta.level, meta.block_id)


def overlap_groups(group: Sequence[BlockMeta]) -> list[list[BlockMeta]]:
    """Blocks of one tenant and resolution in sets linked by shared time ([mint, maxt)
    intersecting), each sorted by (mint, id); sets of one block included."""
    found: list[list[BlockMeta]] = []
    end = 0
    for meta in sorted(group, key=_block_order):
        if found and meta.mint < end and meta.maxt > meta.mint:
            found[-1].append(meta)
            end = max(end, meta.maxt)
        else:
            found.append([meta])
            end = meta.maxt
    return found


def plan_merges(
    group: Sequence[BlockMeta], newest: int, config: PlannerConfig
) -> tuple[list[Action], set[str]]:
    """Merges for one tenant and resolution (no marked blocks), and the ids of every
    block they use or that must wait (overlaps that cannot be merged)."""
    merges: list[Action] = []
    busy: set[str] = set()
    for linked in overlap_groups(group):
        if len(linked) < 2:
            continue
        busy |= {b.block_id for b in linked}
        mint, maxt = min(b.mint for b in linked), max(b.maxt for b in linked)
        fit = smallest_level(mint, maxt)
        if fit is None:
            continue  # the union crosses a top-level boundary: left for the querier
        level = max(fit, min(TOP_LEVEL, max(b.level for b in linked)))
        merges.append(_merge(linked, level, overlapping=True))
    for level in sorted(LEVEL_RANGES_MS):
        if level == FIRST_LEVEL:
            continue
        for members in _level_ranges(group, level, newest, config):
            if any(b.block_id in busy for b in members):
                continue  # overlaps or lower ranges inside go first
            if len(members) < 2:
                continue  # one block: rewriting it would change nothing
            busy |= {b.block_id for b in members}
            merges.append(_merge(members, level, overlapping=False))
    return merges, busy


def _level_ranges(
    group: Sequence[BlockMeta], level: int, newest: int, config: PlannerConfig
) -> list[list[BlockMeta]]:
    """For each complete aligned range of `level`, the blocks of `level` or lower
    inside it, sorted by (mint, id); ranges in time order."""
    ranges: dict[int, list[BlockMeta]] = defaultdict(list)
    for meta in group:
        if meta.level <= level and fits_level(meta.mint, meta.maxt, level):
            ranges[aligned_range(meta.mint, level)[0]].append(meta)
    length = LEVEL_RANGES_MS[level]
    return [
        sorted(ranges[start], key=_block_order)
        for start in sorted(ranges)
        if newest >= start + length + config.consistency_delay_ms
    ]


def _merge(sources: Sequence[BlockMeta], level: int, *, overlapping: bool) -> Merge:
    first = sources[0]
    return Merge(
        tenant=first.tenant,
        resolution=first.resolution,
        sources=tuple(sorted(sources, key=_block_order)),
        mint=min(b.mint for b in sources),
        maxt=max(b.maxt for b in sources),
        level=level,
        overlapping=overlapping,
    )


def plan_downsampling(
    candidates: Sequence[BlockMeta],
    targets: Sequence[BlockMeta],
    to: Resolution,
    newest: int,
    now_ms: int,
    config: PlannerConfig,
) -> list[Action]:
    """Downsample each candidate long (or high-level) and complete enough whose data no
    block of resolution `to` (in `targets`) holds yet."""
    covered = frozenset().union(*(leaves(t) for t in targets))
    actions: list[Action] = []
    for meta in candidates:
        min_range = config.downsample_min_range_ms(meta.resolution)
        long_enough = meta.maxt - meta.mint >= min_range or meta.level >= level_for_length(
            min_range
        )
        complete = newest >= meta.maxt + config.consistency_delay_ms
        done = meta.block_id in covered or leaves(meta) <= covered
        # A copy retention would drop at once is not worth writing (and would loop).
        if long_enough and complete and not done and not _expired(meta.maxt, to, now_ms, config):
            actions.append(Downsample(meta.tenant, meta, to))
    return actions


def _block_order(meta: BlockMeta) -> tuple[int, str]:
    return meta.mint, meta.block_id


_KIND_ORDER = {Delete: 0, MarkForDeletion: 1, Merge: 2, Downsample: 3}


def _action_order(action: Action) -> tuple[str, int, int, str, int]:
    if isinstance(action, Merge):
        resolution, mint, block_id = action.resolution, action.mint, action.sources[0].block_id
    else:
        meta = action.source if isinstance(action, Downsample) else action.block
        resolution, mint, block_id = meta.resolution, meta.mint, meta.block_id
    return action.tenant, int(resolution), mint, block_id, _KIND_ORDER[type(action)]
